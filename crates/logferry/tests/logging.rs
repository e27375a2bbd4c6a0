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

/// Runs stdin → null with `service` added to `[SERVICE]` and the agent's log as JSON lines in
/// `Log_File`; returns those lines, parsed, and the file's text. stdin ends at once (null),
/// and logferry exits as Fluent Bit does at the end of stdin.
fn json_log_of_a_run(service: &str) -> (Vec<serde_json::Value>, String) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("agent.log");
    let conf = dir.path().join("a.conf");
    std::fs::write(
        &conf,
        format!(
            "[SERVICE]\n    Log_File {}\n{service}    logferry.log_format json\n\
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
    let lines = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    (lines, text)
}

#[test]
fn json_log_lines_go_to_log_file() {
    let (lines, text) = json_log_of_a_run("");
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

fn is_flush_failure(r: &serde_json::Value) -> bool {
    r["level"] == "warn"
        && r["message"]
            .as_str()
            .is_some_and(|m| m.contains("failed to flush chunk 'app'"))
}

/// `fluentbit_logs`: the agent's own log lines come back as `{"level","message"}` records (as
/// Fluent Bit 5.1 documents the input), and a kubernetes filter matching them adds the agent's
/// own pod, found from `Kube_Namespace_File` and `HOSTNAME`, with Fluent Bit 5.1.1's map byte
/// for byte (the fixtures under crates/kubernetes/tests/fixtures/fluent-bit/local).
#[test]
fn own_log_lines_become_records_with_the_agents_pod() {
    let k8s = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../kubernetes/tests/fixtures/fluent-bit");
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let conf = dir.path().join("a.conf");
    // The dummy records go to a file output that cannot write, so the agent logs a failed
    // flush every second: log lines that come after the fluentbit_logs input started.
    std::fs::write(
        &conf,
        format!(
            "[SERVICE]\n    Flush 1\n    Log_Level info\n\
             [INPUT]\n    Name fluentbit_logs\n    Tag agent\n\
             [INPUT]\n    Name dummy\n    Tag app\n\
             [FILTER]\n    Name kubernetes\n    Match agent\n\
             \x20   Kube_Namespace_File {ns}\n    Kube_Meta_Preload_Cache_Dir {meta}\n\
             \x20   Kube_URL https://127.0.0.1:9\n    Kube_Token_File {ns}\n\
             [OUTPUT]\n    Name file\n    Match app\n    Path {nowhere}\n    Retry_Limit False\n\
             [OUTPUT]\n    Name file\n    Match agent\n    Path {out}\n    File agent\n    Format plain\n",
            ns = k8s.join("local/namespace").display(),
            meta = k8s.join("core/meta").display(),
            nowhere = dir.path().join("missing/dir").display(),
            out = out_dir.display(),
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_logferry"))
        .arg("-c")
        .arg(&conf)
        .env("HOSTNAME", "checkout-7f9d8c6b5-qx2lp")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("logferry starts");
    let file = out_dir.join("agent");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut records: Vec<serde_json::Value> = Vec::new();
    let mut text = String::new();
    while std::time::Instant::now() < deadline {
        text = std::fs::read_to_string(&file).unwrap_or_default();
        records = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if records.iter().any(is_flush_failure) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let failed = records
        .iter()
        .find(|r| is_flush_failure(r))
        .unwrap_or_else(|| panic!("no failed flush among {records:?}; stderr:\n{stderr}"));
    let message = failed["message"].as_str().unwrap();
    assert!(
        message.starts_with("[engine] failed to flush chunk 'app'"),
        "the message is the line after its level: {message}"
    );
    assert!(
        stderr.contains(&format!("[ warn] {message}")),
        "the same line is logged: {message}\n{stderr}"
    );
    let keys: Vec<&str> = failed
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["level", "message", "kubernetes"]);
    let want = std::fs::read_to_string(k8s.join("local/expected.json")).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains(r#""level":"warn""#) && l.contains("failed to flush chunk"))
        .unwrap();
    assert!(
        line.ends_with(&format!(r#","kubernetes":{}}}"#, want.trim_end())),
        "the agent's pod map, as Fluent Bit 5.1.1 writes it:\n{line}\n{want}"
    );
}

/// The binary's start-up pages are handed back before the pipeline runs (src/memory.rs), so
/// a backlog read right at start does not carry them at its peak: the release is logged, with
/// the bytes advised, before "logferry started". The stdin pipeline ends at once, before the
/// second release (2 s in) would come.
#[test]
fn start_up_pages_are_released_before_the_pipeline_runs() {
    let (lines, text) = json_log_of_a_run("    Log_Level debug\n");
    let at = |message: &str| lines.iter().position(|l| l["message"] == message);
    let released = at("start-up pages of the binary released")
        .unwrap_or_else(|| panic!("no release logged:\n{text}"));
    assert_eq!(
        lines[released]["when"], "before the pipeline runs",
        "{text}"
    );
    assert!(
        lines[released]["bytes"]
            .as_str()
            .and_then(|b| b.parse::<u64>().ok())
            .is_some_and(|b| b > 0),
        "{text}"
    );
    let started = at("logferry started").unwrap_or_else(|| panic!("{text}"));
    assert!(released < started, "{text}");
}
