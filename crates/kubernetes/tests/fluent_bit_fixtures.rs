//! logferry's own fixtures of the kubernetes filter, run through Fluent Bit 5.1.1 once to record
//! its output (`tests/fixtures/fluent-bit`, see its README), and here through logferry with the
//! same configuration files: tail → kubernetes → file (`out_file` format). Each file's records
//! must come out byte for byte as Fluent Bit wrote them — key order, escaping and time (a record
//! whose parser read no time carries the current time in both).
//! Its own test binary: it sets `CLUSTER_NAME` for the process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use logferry_core::config::{Config, Vars};
use logferry_engine::{CancellationToken, Pipeline, Registry, StopReason};
use logferry_kubernetes::meta::{local_map, MetaShape, PodMeta};
use serde_json::Value as Json;

fn fixtures() -> PathBuf {
    Path::new(&std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/fluent-bit")
}

fn registry() -> Registry {
    Registry {
        inputs: vec![&logferry_tail::PLUGIN],
        filters: vec![&logferry_kubernetes::PLUGIN],
        outputs: vec![&logferry_outputs::out_file::PLUGIN],
        planned: &[],
    }
}

/// Runs one case through logferry; returns what the file output wrote and the tag prefix.
async fn run_case(name: &str) -> (String, String) {
    let case = fixtures().join(name);
    let out = tempfile::tempdir().unwrap();
    let logs = case.join("log");
    let prefix = format!(
        "kube.{}.",
        logs.display()
            .to_string()
            .trim_start_matches('/')
            .replace('/', ".")
    );
    let mut vars = Vars::from_env();
    vars.set("FIXTURES", &fixtures().display().to_string());
    vars.set("CASE", &case.display().to_string());
    vars.set("KUBE_TAG_PREFIX", &prefix);
    vars.set("OUT", &out.path().display().to_string());
    let mut config = Config::load_with(&case.join("fluent-bit.conf"), &mut vars).unwrap();
    config.load_parsers_files(&mut vars).unwrap();
    let p = Pipeline::build(config, &registry()).unwrap();
    let r = tokio::time::timeout(Duration::from_secs(30), p.run(CancellationToken::new()))
        .await
        .unwrap();
    assert_eq!(r, StopReason::InputExit);
    let text = std::fs::read_to_string(out.path().join("out.txt")).unwrap_or_default();
    (text, prefix)
}

/// Lines by tag, in order.
fn by_tag(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines() {
        let tag = line.split(": [").next().unwrap_or("").to_string();
        m.entry(tag).or_default().push(line.to_string());
    }
    m
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Compares logferry's output with Fluent Bit's, record by record per file; `@NOW@` in the
/// expected output matches a time within `[from, to]` seconds.
fn assert_same(case: &str, expected: &str, got: &str, prefix: &str, from: u64, to: u64) {
    let expected = expected.replace("kube.LOGS.", prefix);
    let (want, have) = (by_tag(&expected), by_tag(got));
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        have.keys().collect::<Vec<_>>(),
        "{case}: files\n{got}"
    );
    for (tag, lines) in &want {
        let got_lines = &have[tag];
        assert_eq!(
            lines.len(),
            got_lines.len(),
            "{case}: records of {tag}\n{got}"
        );
        for (w, g) in lines.iter().zip(got_lines) {
            match w.split_once("@NOW@") {
                Some((head, tail)) => {
                    let rest = g
                        .strip_prefix(head)
                        .unwrap_or_else(|| panic!("{case}:\nwant {w}\ngot  {g}"));
                    let (time, after) = rest.split_at(rest.find(',').unwrap());
                    let secs: u64 = time.split('.').next().unwrap().parse().unwrap();
                    assert!(
                        (from..=to).contains(&secs),
                        "{case}: the record should carry the current time: {g}"
                    );
                    assert_eq!(after, tail, "{case}:\nwant {w}\ngot  {g}");
                }
                None => assert_eq!(g, w, "{case}: record of {tag}"),
            }
        }
    }
}

/// Every case of the fixtures, one after the other (they set process variables).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_byte_for_byte_fluent_bits() {
    std::env::set_var("CLUSTER_NAME", "shop-cluster");
    let cases = [
        "core",
        "options",
        "sparse",
        "namespace",
        "namespace_only",
        "kubelet",
        "annotation_order",
        "aws",
    ];
    for case in cases {
        let from = now_secs();
        let (got, prefix) = run_case(case).await;
        let to = now_secs() + 1;
        let expected = std::fs::read_to_string(fixtures().join(case).join("expected.out")).unwrap();
        assert_same(case, &expected, &got, &prefix, from, to);
        println!(
            "{case}: {} records as Fluent Bit 5.1.1",
            got.lines().count()
        );
    }
}

/// The agent's own pod (Fluent Bit's `fluentbit_logs` input): found from `Kube_Namespace_File`
/// and `HOSTNAME`, its preload file read as for any pod, and its map is Fluent Bit's, byte for
/// byte, with and without EKS pod association.
#[test]
fn the_agents_own_pod_gets_fluent_bits_map() {
    let dir = fixtures().join("local");
    let local = logferry_kubernetes::local::LocalPod::discover(
        &dir.join("namespace"),
        Some("checkout-7f9d8c6b5-qx2lp".to_string()),
    )
    .expect("the namespace file names the agent's namespace");
    assert_eq!(local.namespace, "shop");
    let meta_file = fixtures()
        .join("core/meta")
        .join(format!("{}_{}.meta", local.namespace, local.pod));
    let pod: Json = serde_json::from_str(&std::fs::read_to_string(meta_file).unwrap()).unwrap();
    let shape = MetaShape {
        workload: true,
        ..MetaShape::default()
    };
    let meta = PodMeta::from_json(&pod, &local.pod, shape);
    let write = |m: &logferry_core::Map| {
        let mut out = Vec::new();
        logferry_outputs::json::write_value(&mut out, &logferry_core::Value::Map(m.clone()), true)
            .unwrap();
        String::from_utf8(out).unwrap()
    };
    let plain = local_map(&local.namespace, &local.pod, Some(&meta), &[]);
    let want = std::fs::read_to_string(dir.join("expected.json")).unwrap();
    assert_eq!(write(&plain), want.trim_end());

    let services = logferry_kubernetes::aws::parse_map(
        &std::fs::read_to_string(fixtures().join("aws/pod-service.map")).unwrap(),
    )
    .unwrap();
    let service = services
        .iter()
        .find(|(p, _)| *p == local.pod)
        .map(|(_, a)| a.clone());
    let aws = logferry_kubernetes::aws::entity_pairs(
        service.as_ref(),
        Some(logferry_kubernetes::aws::platform_of_token("not-a-jwt")),
        Some("shop-cluster"),
        meta.workload.as_deref(),
    );
    let with_aws = local_map(&local.namespace, &local.pod, Some(&meta), &aws);
    let want = std::fs::read_to_string(dir.join("expected-aws.json")).unwrap();
    assert_eq!(write(&with_aws), want.trim_end());
}
