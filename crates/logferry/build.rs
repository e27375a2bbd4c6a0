//! Links the agent with packed relative relocations (DT_RELR): the binary's ~1.3 MB `.rela.dyn`
//! table, read at every start and resident afterwards, shrinks to a few KB. glibc ≥ 2.36 and
//! binutils ≥ 2.38 support it (Debian 12); elsewhere the flag is left out.
fn main() {
    println!("cargo:rerun-if-env-changed=LOGFERRY_NO_RELR");
    let linux_gnu = std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu");
    if linux_gnu && std::env::var_os("LOGFERRY_NO_RELR").is_none() && linker_has_relr() {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// Whether the system linker knows `-z pack-relative-relocs` (binutils ≥ 2.38).
fn linker_has_relr() -> bool {
    let Ok(out) = std::process::Command::new("ld").arg("--version").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(version) = text
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().last())
    else {
        return false;
    };
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (2, 38)
}
