//! YAML `processors`, `routes` and the other Fluent Bit 5.x sections, run through the real
//! binary on the configs in `tests/fixtures/yaml`: records go in through `stdin` (which ends the
//! run at end of input, as Fluent Bit's does) and come out of `file` outputs, compared exactly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/yaml")
        .join(name)
}

/// Runs `logferry -c <fixture>` with `OUT` set to a fresh directory and `input` on stdin;
/// returns that directory once the agent has exited by itself (bounded wait).
fn run_with_stdin(name: &str, input: &str) -> tempfile::TempDir {
    let out = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_logferry"))
        .arg("-c")
        .arg(fixture(name))
        .env("OUT", out.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("logferry starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            assert!(status.success(), "{name}: {status}\n{err}");
            return out;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{name}: logferry did not exit within 30s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The lines of an `out_file`-format file as (tag, time, body JSON text with keys in order),
/// sorted by time.
fn records(dir: &Path, file: &str) -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
    let mut v: Vec<(String, String, String)> = text
        .lines()
        .map(|l| {
            let (tag, rest) = l.split_once(": [").expect("tag: [time, {...}]");
            let (time, body) = rest.split_once(", ").expect("time, body");
            let body = body.strip_suffix(']').expect("closing bracket");
            let value: serde_json::Value = serde_json::from_str(body).expect("JSON body");
            (tag.to_string(), time.to_string(), value.to_string())
        })
        .collect();
    v.sort_by(|a, b| a.1.cmp(&b.1));
    v
}

fn rec(tag: &str, time: &str, body: serde_json::Value) -> (String, String, String) {
    (tag.to_string(), time.to_string(), body.to_string())
}

/// Fluent Bit's order: input processors in the order written (grep drops, content_modifier
/// inserts, renames, hashes, converts, extracts; a conditional modify applies to the records
/// that meet its condition only), then the pipeline's `[FILTER]`s, which see the result.
#[test]
fn input_processors_run_in_order_before_the_filters() {
    let input = concat!(
        r#"[1700000000, {"msg":"a","level":"error","password":"12345","n":"7","url":"https://fluentbit.io/docs"}]"#,
        "\n",
        r#"[1700000001, {"msg":"b","level":"info","drop":"yes"}]"#,
        "\n",
        r#"[1700000002, {"msg":"c","level":"info","n":"x"}]"#,
        "\n",
    );
    let dir = run_with_stdin("input_processors.yaml", input);
    assert_eq!(
        records(dir.path(), "all.out"),
        vec![
            rec(
                "app",
                "1700000000.000000000",
                serde_json::json!({
                    "message": "a",
                    "level": "error",
                    "password": "5994471abb01112afcc18159f6cc74b4f511b99806da59b3caf5a9c173cacfc5",
                    "url": "https://fluentbit.io/docs",
                    "color": "blue",
                    "n": 7,
                    "proto": "https",
                    "host": "fluentbit.io",
                    "stage": "processor",
                    "seen_color": "yes"
                })
            ),
            // "x" is not a number: convert leaves it; the modify processor's condition
            // (level eq error) does not hold.
            rec(
                "app",
                "1700000002.000000000",
                serde_json::json!({
                    "message": "c",
                    "level": "info",
                    "n": "x",
                    "color": "blue",
                    "seen_color": "yes"
                })
            ),
        ]
    );
}

/// Output processors change what their output receives, and nothing else.
#[test]
fn output_processors_affect_only_their_output() {
    let input = concat!(
        r#"[1, {"level":"error","n":1}]"#,
        "\n",
        r#"[2, {"level":"info","n":2}]"#,
        "\n",
        r#"[3, {"level":"error","n":3}]"#,
        "\n",
    );
    let dir = run_with_stdin("output_processors.yaml", input);
    assert_eq!(
        records(dir.path(), "errors.out"),
        vec![
            rec("app", "1.000000000", serde_json::json!({"level": "ERROR"})),
            rec("app", "3.000000000", serde_json::json!({"level": "ERROR"})),
        ]
    );
    assert_eq!(
        records(dir.path(), "untouched.out"),
        vec![
            rec(
                "app",
                "1.000000000",
                serde_json::json!({"level": "error", "n": 1})
            ),
            rec(
                "app",
                "2.000000000",
                serde_json::json!({"level": "info", "n": 2})
            ),
            rec(
                "app",
                "3.000000000",
                serde_json::json!({"level": "error", "n": 3})
            ),
        ]
    );
}

/// Routes deliver each record to the outputs of every route whose condition it meets, else
/// to the default route (here through a `fallback`), under the route's name as tag; an
/// output that matches the input's tag gets nothing from an input with routes.
#[test]
fn routes_deliver_exactly_to_their_outputs() {
    let input = concat!(
        r#"[1, {"level":"error","m":"e1"}]"#,
        "\n",
        r#"[2, {"level":"info","m":"i1"}]"#,
        "\n",
        r#"[3, {"level":"debug","m":"d1","ms":9000}]"#,
        "\n",
        r#"[4, {"level":"debug","m":"d2"}]"#,
        "\n",
        r#"[5, {"level":"fatal","m":"f1"}]"#,
        "\n",
    );
    let dir = run_with_stdin("routes.yaml", input);
    let info = serde_json::json!({"level": "info", "m": "i1", "via": "input"});
    assert_eq!(
        records(dir.path(), "errors.out"),
        vec![
            rec(
                "error_logs",
                "1.000000000",
                serde_json::json!({"level": "error", "m": "e1", "via": "input", "filtered_as": "error_logs"})
            ),
            rec("info_logs", "2.000000000", info.clone()),
            rec(
                "error_logs",
                "3.000000000",
                serde_json::json!({"level": "debug", "m": "d1", "ms": 9000, "via": "input", "filtered_as": "error_logs"})
            ),
            rec(
                "error_logs",
                "5.000000000",
                serde_json::json!({"level": "fatal", "m": "f1", "via": "input", "filtered_as": "error_logs"})
            ),
        ]
    );
    assert_eq!(
        records(dir.path(), "info.out"),
        vec![rec("info_logs", "2.000000000", info)]
    );
    assert_eq!(
        records(dir.path(), "default.out"),
        vec![rec(
            "default_logs",
            "4.000000000",
            serde_json::json!({"level": "debug", "m": "d2", "via": "input"})
        )]
    );
    assert_eq!(records(dir.path(), "tag_matched.out"), vec![]);
}

/// Valid Fluent Bit 5.1 YAML that logferry does not (fully) apply passes `--dry-run` and
/// says what is not applied, with file, line and key.
#[test]
fn other_sections_and_unapplied_parts_are_noted() {
    let f = fixture("notes.yaml");
    let out = Command::new(env!("CARGO_BIN_EXE_logferry"))
        .arg("--dry-run")
        .arg("-c")
        .arg(&f)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let f = f.display();
    for want in [
        format!("{f}:10: enabled: accepted but not applied: logferry does not count records per tag"),
        format!("{f}:25: [PLUGINS] section is accepted but not applied"),
        format!("{f}:28: [CUSTOM] section is accepted but not applied"),
        format!("{f}:31: [UPSTREAM] section is accepted but not applied"),
        format!("{f}:33: [NODE] section is accepted but not applied"),
        format!("{f}:36: extensions: accepted but not applied"),
        format!("{f}:50: context: accepted but not applied: logferry's log records carry no OpenTelemetry"),
        format!("{f}:54: metrics: accepted but not applied: logferry carries logs only"),
        format!("{f}:62: traces: accepted but not applied: logferry carries logs only"),
        format!("{f}:66: rate_window: accepted but not applied"),
        format!("{f}:67: rate_gate: accepted but not applied"),
        format!("{f}:68: rate_gate.max_bytes: accepted but not applied"),
    ] {
        assert!(err.contains(&want), "missing {want:?} in\n{err}");
    }
    assert!(
        !err.contains(&format!("{f}:43:")),
        "telemetry enabled: false on an input changes nothing: {err}"
    );
}

/// A mistake inside processors or routes names the file, the line and the key.
#[test]
fn mistakes_in_processors_and_routes_name_file_line_and_key() {
    const HEAD: &str = "pipeline:\n  inputs:\n    - name: dummy\n";
    const OUT: &str = "  outputs:\n    - name: stdout\n      alias: here\n      match: '*'\n";
    let cases: &[(&str, &str)] = &[
        (
            "      processors:\n        logs:\n          - name: grep\n            regexx: log a\n",
            "{f}:7: regexx: unknown key for grep filter (did you mean 'Regex'?)",
        ),
        (
            "      processors:\n        logs:\n          - name: content_modifer\n",
            "{f}:6: name: unknown processor 'content_modifer' (did you mean 'content_modifier'?)",
        ),
        (
            "      processors:\n        logs:\n          - name: content_modifier\n            action: squash\n            key: a\n",
            "{f}:7: action: unknown action 'squash'",
        ),
        (
            "      processors:\n        logz: []\n",
            "{f}:5: logz: unknown key for processors (did you mean 'logs'?)",
        ),
        (
            "      processors:\n        logs:\n          - name: grep\n            regex: log a\n            condition:\n              rules:\n                - {field: $a, op: like, value: x}\n",
            "{f}:10: op: unknown operator 'like'",
        ),
        (
            "      routes:\n        logs:\n          - name: r\n            condition:\n              rules:\n                - {field: $a, op: eq, value: x}\n            to:\n              outputs: [nope]\n",
            "{f}:11: outputs: route 'r' names output 'nope', which matches no output",
        ),
        (
            "      routes:\n        logs:\n          - name: r\n            to: {outputs: [here]}\n          - name: r\n            to: {outputs: [here]}\n",
            "{f}:8: name: route 'r' is defined twice",
        ),
        (
            "      routes:\n        logs:\n          - name: r\n            condtion: {default: true}\n            to: {outputs: [here]}\n",
            "{f}:7: condtion: unknown key for a route (did you mean 'condition'?)",
        ),
        (
            "      telemetry:\n        metrics:\n          logs:\n            tag_records:\n              max_series: 5\n",
            "{f}:8: max_series: unknown key for telemetry.metrics.logs.tag_records",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (i, (body, want)) in cases.iter().enumerate() {
        let f = dir.path().join(format!("bad{i}.yaml"));
        std::fs::write(&f, format!("{HEAD}{body}{OUT}")).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_logferry"))
            .arg("--dry-run")
            .arg("-c")
            .arg(&f)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        let want = want.replace("{f}", &f.display().to_string());
        assert!(!out.status.success(), "case {i} must fail:\n{body}");
        assert!(
            err.lines()
                .any(|l| l.trim_start_matches("[error] ").starts_with(&want)),
            "case {i}: want a line starting with\n  {want}\ngot:\n{err}"
        );
    }
}
