//! Shared helpers: a tail → kubernetes → collect pipeline over real files and the HTTPS test
//! API server, and the seed's fixtures.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use logferry_core::config::SectionKind;
use logferry_core::Record;
use logferry_engine::testing::{config, section, sink, COLLECT};
use logferry_engine::{CancellationToken, Pipeline, Registry, StopReason};
use logferry_kubernetes::testing::KubeApiServer;
use serde_json::Value as Json;

pub const SEED_POD: &str = "nginx-5468c5d4d7-n2swr";
pub const SEED_ID: &str = "b90a89309ac90fff2972822c66f11736933000c5aa6376dff0c11a441fa427ee";

pub fn shared() -> PathBuf {
    Path::new(&std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
        .join("../../../shared/conformance/seed-nginx")
}

/// The seed's Pod JSON (a copy under tests/fixtures, so tests that only need a realistic pod do
/// not depend on ../shared).
pub fn seed_pod() -> Json {
    let p =
        Path::new(&std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/pod.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

pub fn seed_line() -> String {
    std::fs::read_to_string(shared().join(format!(
        "var/log/containers/{SEED_POD}_default_nginx-{SEED_ID}.log"
    )))
    .unwrap()
}

pub fn expected_record() -> Json {
    serde_json::from_str(&std::fs::read_to_string(shared().join("expected-record.json")).unwrap())
        .unwrap()
}

/// A pod like the seed's, with another name, container id and annotations.
pub fn pod(name: &str, ns: &str, node: &str, annotations: Json) -> Json {
    let mut p = seed_pod();
    p["metadata"]["name"] = name.into();
    p["metadata"]["namespace"] = ns.into();
    p["metadata"]["uid"] = format!("uid-{name}").into();
    p["metadata"]["annotations"] = annotations;
    p["spec"]["nodeName"] = node.into();
    p
}

/// The file name tail sees for a container of a pod.
pub fn log_name(pod: &str, ns: &str, id_seed: usize) -> String {
    format!("{pod}_{ns}_nginx-{id_seed:064x}.log")
}

pub fn registry() -> Registry {
    Registry {
        inputs: vec![&logferry_tail::PLUGIN],
        filters: vec![&logferry_kubernetes::PLUGIN],
        outputs: vec![&COLLECT],
        planned: &[],
    }
}

/// tail (docker framing, from head) on `dir` → kubernetes (with `kube`) → collect `sink_name`.
pub fn pipeline(
    dir: &Path,
    server: &KubeApiServer,
    kube: &[(&str, &str)],
    sink_name: &str,
    exit_on_eof: bool,
) -> Pipeline {
    pipeline_with(dir, server, kube, sink_name, exit_on_eof, &[])
}

/// [`pipeline`] with more `[SERVICE]` keys.
pub fn pipeline_with(
    dir: &Path,
    server: &KubeApiServer,
    kube: &[(&str, &str)],
    sink_name: &str,
    exit_on_eof: bool,
    service: &[(&str, &str)],
) -> Pipeline {
    let path = format!("{}/*.log", dir.display());
    let prefix = format!(
        "kube.{}.",
        dir.display()
            .to_string()
            .trim_start_matches('/')
            .replace('/', ".")
    );
    let url = server.url();
    let ca = server.ca_file.display().to_string();
    let token = server.token_file.display().to_string();
    let mut input = vec![
        ("Name", "tail"),
        ("Tag", "kube.*"),
        ("Path", path.as_str()),
        ("Parser", "docker"),
        ("Docker_Mode", "On"),
        ("Read_from_Head", "On"),
        ("Refresh_Interval", "1"),
    ];
    if exit_on_eof {
        input.push(("Exit_On_Eof", "On"));
    }
    let mut filter = vec![
        ("Name", "kubernetes"),
        ("Match", "kube.*"),
        ("Kube_URL", url.as_str()),
        ("Kube_CA_File", ca.as_str()),
        ("Kube_Token_File", token.as_str()),
        ("Kube_Tag_Prefix", prefix.as_str()),
    ];
    filter.extend_from_slice(kube);
    let c = config(vec![
        section(SectionKind::Service, &{
            let mut keys = vec![("Flush", "0.05"), ("Grace", "2")];
            keys.extend_from_slice(service);
            keys
        }),
        section(SectionKind::Input, &input),
        section(SectionKind::Filter, &filter),
        section(
            SectionKind::Output,
            &[("Name", "collect"), ("Match", "*"), ("sink", sink_name)],
        ),
    ]);
    Pipeline::build(c, &registry()).unwrap()
}

pub async fn run_to_end(p: Pipeline) {
    let r = tokio::time::timeout(Duration::from_secs(30), p.run(CancellationToken::new()))
        .await
        .unwrap();
    assert_eq!(r, StopReason::InputExit);
}

/// Whether the `collect` sink `name` holds `n` records within 10 s.
pub async fn until_collected(name: &str, n: usize) -> bool {
    logferry_engine::testing::wait_until(Duration::from_secs(10), || {
        sink(name).lock().unwrap().len() == n
    })
    .await
}

/// Stops a running pipeline and waits (at most 10 s) for it to end.
pub async fn stop_and_join(stop: CancellationToken, run: tokio::task::JoinHandle<StopReason>) {
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .unwrap()
        .unwrap();
}

pub fn collected(name: &str) -> Vec<Record> {
    sink(name)
        .lock()
        .unwrap()
        .iter()
        .map(|(_, r)| r.clone())
        .collect()
}

pub fn as_json(r: &Record) -> Json {
    serde_json::to_value(&r.body).unwrap()
}

/// A Docker json-file line whose `log` is `log`.
pub fn docker_line(log: &str, stream: &str, time: &str) -> String {
    format!(
        "{}\n",
        serde_json::json!({"log": log, "stream": stream, "time": time})
    )
}

/// A kubernetes filter counter or gauge (`ctx.metrics.register` name) of the pipeline whose
/// metrics these are (its only filter).
pub fn filter_metric(m: &logferry_engine::metrics::Metrics, name: &str) -> u64 {
    logferry_engine::metrics::Metrics::list(&m.filters)
        .iter()
        .flat_map(|f| f.extras())
        .find(|e| e.name == name)
        .map(|e| e.value.load(std::sync::atomic::Ordering::Relaxed))
        .unwrap_or_else(|| panic!("no metric {name}"))
}

/// Appends `text` to `path`.
pub fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .unwrap();
    std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
}
