//! The agent's own log as a user gets it: `logferry.log_format json` into `Log_File` (one JSON
//! object per line), and a wrong format refused. The default Fluent Bit shape is checked against
//! Fluent Bit 5.1.1's own log in `metrics_parity.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};

fn logferry(conf: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_logferry"))
        .arg("-c")
        .arg(conf)
        .stdin(Stdio::null())
        .output()
        .expect("logferry runs")
}

#[test]
fn json_log_lines_go_to_log_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("agent.log");
    let conf = dir.path().join("a.conf");
    // stdin ends at once (null), and logferry exits as Fluent Bit does at the end of stdin.
    std::fs::write(
        &conf,
        format!(
            "[SERVICE]\n    Log_File {}\n    logferry.log_format json\n\
             [INPUT]\n    Name stdin\n[OUTPUT]\n    Name null\n    Match *\n",
            log.display()
        ),
    )
    .unwrap();
    let out = logferry(&conf);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(!lines.is_empty());
    for l in &lines {
        for key in ["time", "level", "component", "message"] {
            assert!(l[key].is_string(), "{key} in {l}");
        }
    }
    let started = lines
        .iter()
        .find(|l| l["message"] == "logferry started")
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(started["level"], "info");
    let stopped = lines
        .iter()
        .find(|l| l["message"] == "logferry stopped")
        .unwrap_or_else(|| panic!("{text}"));
    // The reason in words, never Rust's Debug form (`Some(InputExit)`).
    assert_eq!(stopped["reason"], "an input asked to exit", "{text}");
    // Per instance, the component names the plugin and the instance, as Fluent Bit's does.
    assert!(
        lines
            .iter()
            .any(|l| l["component"] == "output:null:null.0" && l["output"] == "null.0"),
        "{text}"
    );
}

#[test]
fn an_unknown_log_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("a.conf");
    std::fs::write(
        &conf,
        "[SERVICE]\n    logferry.log_format xml\n[INPUT]\n    Name stdin\n[OUTPUT]\n    Name null\n    Match *\n",
    )
    .unwrap();
    let out = logferry(&conf);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("logferry.log_format") && err.contains("xml"),
        "{err}"
    );
}
