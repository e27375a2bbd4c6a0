//! Real-world Fluent Bit configurations (`tests/fixtures/fluent-bit-configs`, in the shapes of
//! Fluent Bit's documentation, the aws-for-fluent-bit examples and the Helm chart): none is
//! falsely rejected. `--dry-run` passes, or fails only with "not yet available" for exactly the
//! plugins logferry lacks; and each config that uses only logferry's plugins runs and stops
//! cleanly (AWS outputs against moto's server on loopback).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn dir() -> PathBuf {
    Path::new(&std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/fluent-bit-configs")
}

/// Copies the fixture files and `include/` into `to`. Each config runs from such a copy, so
/// what it writes under relative paths (`store_dir s3buffer`, `storage.path state/...`) lands in
/// the test's temporary directory, not in the source tree.
fn copy_fixtures(to: &Path) {
    let copy_files = |from: &Path, to: &Path| {
        std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("{}: {e}", to.display()));
        let entries = std::fs::read_dir(from).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
        for p in entries.filter_map(|e| e.ok().map(|e| e.path())) {
            if let (true, Some(name)) = (p.is_file(), p.file_name()) {
                std::fs::copy(&p, to.join(name)).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            }
        }
    };
    copy_files(&dir(), to);
    copy_files(&dir().join("include"), &to.join("include"));
}

/// The plugins each config names that logferry does not have yet.
const UNAVAILABLE: &[(&str, &[&str])] = &[
    ("11-docs-http-server.conf", &["input cpu"]),
    ("26-forward-in-loki-out.conf", &["output loki"]),
    ("33-syslog-and-tcp.conf", &["output datadog"]),
    (
        "34-opentelemetry-kafka-splunk.yaml",
        &["input opentelemetry", "output kafka", "output splunk"],
    ),
    (
        "35-cpu-mem-exec.conf",
        &["input cpu", "input mem", "input exec"],
    ),
];

/// Configs that are only dry-run: their kubernetes filter would reach
/// `kubernetes.default.svc`, which is not on loopback (the seed test runs that pipeline for
/// real against a local API server).
const DRY_ONLY: &[&str] = &[
    "21-aws-for-fluent-bit-container-insights.conf",
    "22-helm-chart-default.conf",
    "23-helm-chart-yaml.yaml",
    "36-upstream-kube-elasticsearch.conf",
];

/// Records some configs print on stdout when they run: (config, lines, a text each line has).
const PRINTS: &[(&str, usize, &str)] = &[
    (
        "01-docs-dummy-stdout.conf",
        3,
        r#"{"message"=>"custom dummy"}"#,
    ),
    ("03-docs-grep-filter.conf", 2, r#""log"=>"aa error bb""#),
    (
        "25-lua-filter.conf",
        1,
        "cb_print: tag=dummy.0 message=dummy",
    ),
    ("04-docs-modify.conf", 2, r#""Service1"=>"SOMEVALUE""#),
    ("05-docs-nest.conf", 1, r#""Memstats"=>{"total"=>1016024"#),
    (
        "06-docs-record-modifier.conf",
        1,
        r#""hostname"=>"node-1", "product"=>"Awesome_Tool"}"#,
    ),
    (
        "07-docs-parser-filter.conf",
        1,
        r#""INT"=>100, "FLOAT"=>0.500000, "BOOL"=>true"#,
    ),
    (
        "12-docs-yaml-basic.yaml",
        2,
        r#""message":"yaml dummy","source":"yaml""#,
    ),
    (
        "14-docs-yaml-env-includes.yaml",
        1,
        r#"{"message"=>"dummy"}"#,
    ),
    ("31-env-vars-and-set.conf", 1, r#"{"message"=>"dummy"}"#),
    ("32-include.conf", 1, r#"[0] included: "#),
];

fn configs() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir())
        .unwrap_or_else(|e| panic!("{}: {e}", dir().display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            n.as_bytes().first().is_some_and(u8::is_ascii_digit)
                && (n.ends_with(".conf") || n.ends_with(".yaml"))
        })
        .collect();
    v.sort();
    v
}

fn logferry(cwd: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_logferry"));
    c.current_dir(cwd)
        .env("HOSTNAME", "node-1")
        .env("FLUSH_SECONDS", "1")
        .env_remove("AWS_PROFILE");
    c
}

#[test]
fn no_real_world_config_is_falsely_rejected() {
    let configs = configs();
    assert!(configs.len() >= 30, "only {} configs", configs.len());
    let expected: BTreeMap<&str, &[&str]> = UNAVAILABLE.iter().copied().collect();
    let cwd = tempfile::tempdir().unwrap();
    // A dry run builds the outputs, and `s3` creates its `store_dir` then.
    copy_fixtures(cwd.path());
    for conf in &configs {
        let name = conf.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let out = logferry(cwd.path())
            .arg("--dry-run")
            .arg("-c")
            .arg(cwd.path().join(name))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        let mut missing: Vec<String> = Vec::new();
        for line in err.lines().filter(|l| l.starts_with("[error]")) {
            // "[error] FILE:LINE: Name: input plugin 'cpu' is not yet available in logferry"
            let Some(rest) = line.split(": Name: ").nth(1) else {
                panic!("{name}: falsely rejected: {line}\n{err}");
            };
            let Some(what) = rest.strip_suffix(" is not yet available in logferry") else {
                panic!("{name}: falsely rejected: {line}\n{err}");
            };
            missing.push(what.replace(" plugin '", " ").replace('\'', ""));
        }
        let want: Vec<String> = expected
            .get(name)
            .map(|v| v.iter().map(ToString::to_string).collect())
            .unwrap_or_default();
        assert_eq!(missing, want, "{name}:\n{err}");
        assert_eq!(out.status.success(), want.is_empty(), "{name}:\n{err}");
    }
}

#[test]
fn real_world_configs_with_logferrys_plugins_run() {
    let moto = logferry_aws::testing::Moto::start();
    let skip: Vec<&str> = UNAVAILABLE
        .iter()
        .map(|(n, _)| *n)
        .chain(DRY_ONLY.iter().copied())
        .collect();
    let mut ran = 0;
    for conf in configs() {
        let name = conf
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_string();
        if skip.contains(&name.as_str()) {
            continue;
        }
        let cwd = tempfile::tempdir().unwrap();
        copy_fixtures(cwd.path());
        let mut child = logferry(cwd.path())
            .arg("-c")
            .arg(cwd.path().join(&name))
            .env("AWS_ENDPOINT_URL", moto.endpoint())
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Configs whose inputs end (dummy Samples) stop by themselves; the others are stopped
        // with SIGTERM after a few seconds, as Kubernetes stops a pod.
        let started = Instant::now();
        let mut termed = false;
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if !termed && started.elapsed() > Duration::from_secs(4) {
                let _ = Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .status();
                termed = true;
            }
            if started.elapsed() > Duration::from_secs(40) {
                let _ = child.kill();
                panic!("{name}: did not stop within 40 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(status.success(), "{name}: {status}\n{err}");
        assert!(!err.contains("panicked"), "{name}:\n{err}");
        if let Some((_, n, has)) = PRINTS.iter().find(|(c, _, _)| *c == name) {
            let stdout = String::from_utf8_lossy(&out.stdout);
            let lines: Vec<&str> = stdout.lines().filter(|l| !l.is_empty()).collect();
            assert_eq!(lines.len(), *n, "{name}:\n{stdout}");
            assert!(
                lines.iter().all(|l| l.contains(has)),
                "{name}: want {has} in\n{stdout}"
            );
        }
        ran += 1;
    }
    assert!(ran >= 20, "only {ran} configs ran");
}
