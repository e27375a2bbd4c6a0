//! logferry's monitoring API against Fluent Bit 5.1.1's, on the same config: the scrape Fluent
//! Bit gave is recorded in `tests/fixtures/fluent-bit-5.1.1-metrics/` (its README says how),
//! and this test runs logferry with that config and compares series by series: names, types,
//! label sets, and the values that do not depend on timing (records, bytes, routes).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use common::{wait, Agent};

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fluent-bit-5.1.1-metrics")
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(fixture_dir().join(name))
        .unwrap_or_else(|e| panic!("fixture {name} must be there: {e}"))
}

/// `GET path` over loopback; (status, body).
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        unchunk(body)
    } else {
        body.to_string()
    };
    Some((status, body))
}

fn unchunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

type Labels = BTreeMap<String, String>;

/// A family of a Prometheus text scrape: its type and its samples (sample name, labels, value).
#[derive(Debug, Default)]
struct Fam {
    kind: String,
    samples: Vec<(String, Labels, String)>,
}

/// Parses Prometheus text 0.0.4 (the subset both agents write).
fn parse(text: &str) -> BTreeMap<String, Fam> {
    let mut fams: BTreeMap<String, Fam> = BTreeMap::new();
    let mut current = String::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            current = name.to_string();
            fams.entry(current.clone()).or_default().kind = kind.to_string();
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (name, labels, rest) = match line.split_once('{') {
            Some((name, rest)) => {
                let (labels, rest) = rest.split_once('}').unwrap();
                let labels = labels
                    .split("\",")
                    .filter(|p| !p.is_empty())
                    .map(|p| {
                        let (k, v) = p.split_once("=\"").unwrap();
                        (k.to_string(), v.trim_end_matches('"').to_string())
                    })
                    .collect();
                (name.to_string(), labels, rest)
            }
            None => {
                let (name, rest) = line.split_once(' ').unwrap();
                (name.to_string(), Labels::new(), rest)
            }
        };
        let value = rest.split_whitespace().next().unwrap().to_string();
        assert!(
            name.starts_with(&current),
            "sample {name} outside its family {current}"
        );
        fams.entry(current.clone())
            .or_default()
            .samples
            .push((name, labels, value));
    }
    fams
}

/// Label sets with the machine- and build-specific values blanked.
fn label_sets(f: &Fam) -> BTreeSet<(String, Labels)> {
    f.samples
        .iter()
        .map(|(n, l, _)| {
            let mut l = l.clone();
            for k in ["hostname", "version", "os", "edition"] {
                if let Some(v) = l.get_mut(k) {
                    v.clear();
                }
            }
            (n.clone(), l)
        })
        .collect()
}

/// Series whose values do not depend on timing once every record is delivered.
const DETERMINISTIC: &[&str] = &[
    "fluentbit_input_records_total",
    "fluentbit_input_bytes_total",
    "fluentbit_input_files_opened_total",
    "fluentbit_input_files_closed_total",
    "fluentbit_input_files_rotated_total",
    "fluentbit_input_ring_buffer_writes_total",
    "fluentbit_input_ring_buffer_retries_total",
    "fluentbit_input_ring_buffer_retry_failures_total",
    "fluentbit_input_ingestion_paused",
    "fluentbit_input_storage_overlimit",
    "fluentbit_output_proc_records_total",
    "fluentbit_output_proc_bytes_total",
    "fluentbit_output_errors_total",
    "fluentbit_output_retries_total",
    "fluentbit_output_retries_failed_total",
    "fluentbit_output_dropped_records_total",
    "fluentbit_output_retried_records_total",
    "fluentbit_output_upstream_total_connections",
    "fluentbit_output_upstream_busy_connections",
    "fluentbit_output_chunk_available_capacity_percent",
    "fluentbit_routing_logs_records_total",
    "fluentbit_routing_logs_bytes_total",
    "fluentbit_hot_reloaded_times",
    "fluentbit_logger_queue_dropped_total",
];

/// Fluent Bit 5.1 families logferry does not serve yet, and why.
const NOT_YET: &[(&str, &str)] = &[
    (
        "fluentbit_input_rate_bytes",
        "input rate gauges: no per-second rate is kept",
    ),
    ("fluentbit_input_rate_records", "as above"),
    (
        "fluentbit_input_rate_gate_limited",
        "logferry has no rate gate",
    ),
    ("fluentbit_input_rate_gate_busy_chunks", "as above"),
    ("fluentbit_input_rate_gate_retry_attempts", "as above"),
];

/// Fluent Bit families that this config does not make Fluent Bit serve, but other configs do
/// (filters, drops, plugin counters once they move): logferry may serve them here.
const FLUENT_BIT_ELSEWHERE: &[&str] = &[
    "fluentbit_routing_logs_drop_records_total",
    "fluentbit_routing_logs_drop_bytes_total",
    "fluentbit_filter_records_total",
    "fluentbit_filter_bytes_total",
    "fluentbit_filter_add_records_total",
    "fluentbit_filter_drop_records_total",
    "fluentbit_filter_drop_bytes_total",
];

struct Running {
    agent: Option<Agent>,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(a) = self.agent.take() {
            a.stop();
        }
    }
}

/// logferry on the fixture's config, once every record went out.
fn run_logferry() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.log");
    std::fs::copy(fixture_dir().join("input.log"), &input).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let agent = Agent::start(
        &fixture_dir().join("fluent-bit.conf"),
        &[
            ("PARITY_PORT", port.to_string()),
            ("PARITY_INPUT", input.display().to_string()),
        ],
    )
    .started();
    let r = Running {
        agent: Some(agent),
        port,
        _dir: dir,
    };
    let done = wait(30, || {
        let Some((200, text)) = get(port, "/api/v2/metrics/prometheus") else {
            return false;
        };
        text.contains("fluentbit_output_proc_records_total{name=\"stdout.0\"} 9\n")
            && text.contains("fluentbit_output_proc_records_total{name=\"null.1\"} 4\n")
    });
    assert!(
        done,
        "logferry did not deliver the 9 records within 30s:\n{}",
        r.agent.as_ref().unwrap().log.lock().unwrap().join("\n")
    );
    r
}

#[test]
fn v2_prometheus_matches_fluent_bit_series_by_series() {
    let r = run_logferry();
    let (status, text) = get(r.port, "/api/v2/metrics/prometheus").unwrap();
    assert_eq!(status, 200);
    let ours = parse(&text);
    let theirs = parse(&fixture("v2-prometheus.txt"));
    let mut problems = Vec::new();
    for (name, fb) in &theirs {
        if NOT_YET.iter().any(|(n, _)| n == name) {
            continue;
        }
        let Some(lf) = ours.get(name) else {
            problems.push(format!("missing family {name}"));
            continue;
        };
        if lf.kind != fb.kind {
            problems.push(format!(
                "{name}: type {} where Fluent Bit has {}",
                lf.kind, fb.kind
            ));
        }
        if name == "fluentbit_output_latency_seconds" {
            // Timing decides the buckets; the series (and label sets) must match.
            let series = |f: &Fam| -> BTreeSet<Labels> {
                f.samples
                    .iter()
                    .filter(|(n, _, _)| n.ends_with("_count"))
                    .map(|(_, l, _)| l.clone())
                    .collect()
            };
            if series(lf) != series(fb) {
                problems.push(format!(
                    "{name}: series {:?}, Fluent Bit {:?}",
                    series(lf),
                    series(fb)
                ));
            }
            continue;
        }
        if label_sets(lf) != label_sets(fb) {
            problems.push(format!(
                "{name}: label sets {:?}, Fluent Bit {:?}",
                label_sets(lf),
                label_sets(fb)
            ));
        }
        if DETERMINISTIC.contains(&name.as_str()) {
            let values = |f: &Fam| -> BTreeSet<(String, Labels, String)> {
                f.samples.iter().cloned().collect()
            };
            if values(lf) != values(fb) {
                problems.push(format!(
                    "{name}: values {:?}, Fluent Bit {:?}",
                    values(lf),
                    values(fb)
                ));
            }
        }
    }
    for name in ours.keys() {
        if !theirs.contains_key(name)
            && !name.starts_with("logferry_")
            && !FLUENT_BIT_ELSEWHERE.contains(&name.as_str())
        {
            problems.push(format!(
                "{name}: not a Fluent Bit family here, and not under logferry_"
            ));
        }
    }
    assert!(problems.is_empty(), "{}\n\n{text}", problems.join("\n"));
}

#[test]
fn v1_endpoints_match_fluent_bit() {
    let r = run_logferry();
    // /api/v1/metrics: every field and every value (all counters, all settled by now).
    let (status, body) = get(r.port, "/api/v1/metrics").unwrap();
    assert_eq!(status, 200);
    let ours: serde_json::Value = serde_json::from_str(&body).unwrap();
    let theirs: serde_json::Value = serde_json::from_str(&fixture("v1-metrics.json")).unwrap();
    assert_eq!(ours, theirs);

    // /api/v1/metrics/prometheus: same families, types, label sets and values.
    let (status, text) = get(r.port, "/api/v1/metrics/prometheus").unwrap();
    assert_eq!(status, 200);
    let ours = parse(&text);
    let theirs = parse(&fixture("v1-prometheus.txt"));
    for (name, fb) in &theirs {
        let lf = ours
            .get(name)
            .unwrap_or_else(|| panic!("missing v1 family {name}:\n{text}"));
        assert_eq!(lf.kind, fb.kind, "{name}");
        assert_eq!(label_sets(lf), label_sets(fb), "{name}");
        if name.starts_with("fluentbit_input_") || name.starts_with("fluentbit_output_") {
            let v = |f: &Fam| -> Vec<(Labels, String)> {
                f.samples
                    .iter()
                    .map(|(_, l, v)| (l.clone(), v.clone()))
                    .collect()
            };
            assert_eq!(v(lf), v(fb), "{name}");
        }
    }
    assert_eq!(ours.len(), theirs.len(), "no extra v1 families:\n{text}");

    // /api/v2/health: the same JSON.
    let (status, body) = get(r.port, "/api/v2/health").unwrap();
    assert_eq!(status, 200);
    let ours: serde_json::Value = serde_json::from_str(&body).unwrap();
    let theirs: serde_json::Value = serde_json::from_str(&fixture("v2-health.json")).unwrap();
    assert_eq!(ours, theirs);

    // /api/v1/plugins: Fluent Bit's shape, listing logferry's plugins.
    let (status, body) = get(r.port, "/api/v1/plugins").unwrap();
    assert_eq!(status, 200);
    let ours: serde_json::Value = serde_json::from_str(&body).unwrap();
    for kind in ["inputs", "filters", "outputs"] {
        let list = ours["plugins"][kind].as_array().unwrap();
        assert!(!list.is_empty(), "{kind}: {body}");
    }
    for (kind, name) in [("inputs", "tail"), ("filters", "grep"), ("outputs", "null")] {
        assert!(
            ours["plugins"][kind]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p == name),
            "{kind} lists {name}: {body}"
        );
    }

    // /api/v2/metrics: cmetrics' text, one line per sample as Fluent Bit writes them.
    let (status, text) = get(r.port, "/api/v2/metrics").unwrap();
    assert_eq!(status, 200);
    for want in [
        "fluentbit_input_records_total{name=\"tail.0\"} = 4",
        "fluentbit_routing_logs_bytes_total{input=\"dummy.1\",output=\"stdout.0\"} = 140",
    ] {
        assert!(
            fixture("v2-metrics.txt").contains(want),
            "fixture has {want}"
        );
        assert!(text.contains(want), "{want}:\n{text}");
    }
    assert!(text.lines().any(|l| l.contains(
        "fluentbit_output_latency_seconds{input=\"tail.0\",output=\"null.1\"} = { buckets = { 0.5="
    )));
}

/// Log lines have Fluent Bit's shape: `[2026/11/29 14:25:33.120] [ info] [component] message`,
/// the same pattern Fluent Bit 5.1.1's own log (recorded in the fixture) matches.
#[test]
fn log_lines_have_fluent_bits_shape() {
    fn shaped(line: &str) -> bool {
        let b = line.as_bytes();
        let stamp = b.len() > 26
            && b[0] == b'['
            && b[5] == b'/'
            && b[8] == b'/'
            && b[11] == b' '
            && b[14] == b':'
            && b[17] == b':'
            && b[20] == b'.'
            && b[24] == b']';
        let rest = line.get(26..).unwrap_or_default();
        let level = [
            "[error] [",
            "[ warn] [",
            "[ info] [",
            "[debug] [",
            "[trace] [",
        ]
        .iter()
        .any(|l| rest.starts_with(l));
        stamp && level && rest[8..].contains("] ")
    }
    let fb = fixture("fluent-bit.log");
    assert!(
        fb.lines()
            .any(|l| l.contains("[input:tail:tail.0]") && shaped(l)),
        "the fixture shows Fluent Bit's shape"
    );
    let mut r = run_logferry();
    let log = r.agent.take().unwrap().stop();
    let lines: Vec<&String> = log.iter().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for l in &lines {
        assert!(shaped(l), "not in Fluent Bit's shape: {l}");
        assert!(!l.contains("Some("), "Rust debug output in the log: {l}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains("[ info] [input:tail:tail.0] ")),
        "{lines:#?}"
    );
}
