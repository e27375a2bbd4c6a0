//! Workload pieces shared by the parsers benches (`parse`, `regex`): one generator and one
//! nginx line shape, so both measure the same input.

/// A small deterministic generator (no dependencies).
pub struct Lcg(pub u64);
impl Lcg {
    pub fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

pub const PATHS: &[&str] = &[
    "/",
    "/index.html",
    "/api/v1/items?id=42",
    "/static/app.3f9a1c.js",
    "/healthz",
];
pub const AGENTS: &[&str] = &[
    "hey/0.0.1",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
    "curl/7.68.0",
    "kube-probe/1.27",
];

/// An nginx access line (the built-in `nginx` parser's format), line `i` from random `r`.
pub fn nginx(i: usize, r: u64) -> String {
    format!(
        "10.{}.{}.{} - - [19/Dec/2019:17:{:02}:{:02} +0000] \"GET {} HTTP/1.1\" {} {} \"-\" \"{}\" \"52.95.4.{}\"",
        r % 256,
        (r >> 8) % 256,
        (r >> 16) % 256,
        (i / 60) % 60,
        i % 60,
        PATHS[(r >> 24) as usize % PATHS.len()],
        [200, 304, 404, 500][(r >> 28) as usize % 4],
        r % 100_000,
        AGENTS[(r >> 12) as usize % AGENTS.len()],
        r % 256,
    )
}
