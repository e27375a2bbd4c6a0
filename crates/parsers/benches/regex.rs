//! Regex parser throughput, per parser: built-in `nginx`, `apache2`, `syslog-rfc5424`, `cri`
//! and `apache_error` on matching lines, `nginx` on lines it does not match, and `nginx-re`
//! (the nginx regex without Time_Format, so mostly the regex and the fields). Prints lines/s
//! and ns/line.
//!
//! Run: `cargo bench -p logferry-parsers --bench regex` (release profile).

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use logferry_core::config::{classic, Config, Vars};
use logferry_parsers::{Parser, Parsers};

mod common;
use common::{nginx, Lcg, AGENTS, PATHS};

const LINES: usize = 200_000;
const ROUNDS: usize = 3;

fn lines(f: impl Fn(usize, u64) -> String) -> Vec<String> {
    let mut rng = Lcg(7);
    (0..LINES).map(|i| f(i, rng.next())).collect()
}

fn apache2(i: usize, r: u64) -> String {
    format!(
        "192.168.{}.{} - frank [10/Oct/2000:13:{:02}:{:02} -0700] \"GET {} HTTP/1.0\" 200 {} \"http://www.example.com/start.html\" \"{}\"",
        r % 256,
        (r >> 8) % 256,
        (i / 60) % 60,
        i % 60,
        PATHS[(r >> 24) as usize % PATHS.len()],
        r % 100_000,
        AGENTS[(r >> 12) as usize % AGENTS.len()],
    )
}

fn syslog(i: usize, r: u64) -> String {
    format!(
        "<165>1 2003-10-11T22:14:{:02}.003Z mymachine.example.com evntslog {} ID47 [exampleSDID@32473 iut=\"3\" eventSource=\"Application\"] An application event log entry {}",
        i % 60,
        r % 65536,
        r,
    )
}

fn cri(i: usize, r: u64) -> String {
    format!(
        "2019-12-19T17:41:{:02}.{:09}Z {} F INFO worker-{} handled request id={} in {}ms path={}",
        i % 60,
        r % 1_000_000_000,
        if r.is_multiple_of(10) {
            "stderr"
        } else {
            "stdout"
        },
        r % 16,
        r,
        r % 500,
        PATHS[(r >> 24) as usize % PATHS.len()],
    )
}

fn apache_error(_: usize, r: u64) -> String {
    format!(
        "[Wed Oct 11 14:32:52 2000] [error] [client 127.0.0.{}] client denied by server configuration: /export/home/live/ap/htdocs/test{}",
        r % 256,
        r % 1000,
    )
}

fn miss(i: usize, r: u64) -> String {
    format!(
        "2019-12-19 17:41:{:02} INFO  [worker-{}] handled request id={} in {}ms path={} and something else",
        i % 60,
        r % 16,
        r,
        r % 500,
        PATHS[(r >> 24) as usize % PATHS.len()],
    )
}

fn run(name: &str, parser: &Parser, lines: &[String], want_match: bool) {
    let mut best = f64::INFINITY;
    for _ in 0..ROUNDS {
        let t0 = Instant::now();
        let mut matched = 0usize;
        for line in lines {
            if let Some(p) = parser.parse(black_box(line)) {
                matched += 1;
                black_box(p);
            }
        }
        best = best.min(t0.elapsed().as_secs_f64());
        let want = if want_match { lines.len() } else { 0 };
        assert_eq!(matched, want, "{name}: matches");
    }
    println!(
        "{name:<16} {:>10.0} lines/s  {:>7.1} ns/line",
        lines.len() as f64 / best,
        best * 1e9 / lines.len() as f64,
    );
}

fn custom(name: &str, text: &str) -> Arc<Parser> {
    let mut vars = Vars::empty();
    let sections = classic::parse(text, Path::new("bench.conf"), &mut vars).expect("config reads");
    let config = Config {
        sections,
        path: None,
    };
    let parsers = Parsers::from_config(&config).expect("parser compiles");
    parsers.get(name).expect("parser defined")
}

fn main() {
    let parsers = Parsers::builtin();
    let get = |n: &str| parsers.get(n).expect("built-in parser");
    let nginx_re = custom(
        "nginx-re",
        r#"[PARSER]
    Name nginx-re
    Format regex
    Regex ^(?<remote>[^ ]*) (?<host>[^ ]*) (?<user>[^ ]*) \[(?<time>[^\]]*)\] "(?<method>\S+)(?: +(?<path>[^\"]*?)(?: +\S*)?)?" (?<code>[^ ]*) (?<size>[^ ]*)(?: "(?<referer>[^\"]*)" "(?<agent>[^\"]*)")
"#,
    );
    let n = lines(nginx);
    run("nginx", &get("nginx"), &n, true);
    run("nginx-re", &nginx_re, &n, true);
    run("nginx-miss", &get("nginx"), &lines(miss), false);
    run("apache2", &get("apache2"), &lines(apache2), true);
    run(
        "syslog-rfc5424",
        &get("syslog-rfc5424"),
        &lines(syslog),
        true,
    );
    run("cri", &get("cri"), &lines(cri), true);
    run(
        "apache_error",
        &get("apache_error"),
        &lines(apache_error),
        true,
    );
}
