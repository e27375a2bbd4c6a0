//! What the tail input's integration tests share: a registry with tail and the `collect`
//! output, pipelines built from key/value pairs, start/stop with bounded waits, the records a
//! sink got, and the agent's log captured for assertions.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use logferry_core::config::{Section, SectionKind};
use logferry_core::{Record, Value};
use logferry_engine::testing::{config, section, sink, COLLECT};
use logferry_engine::{CancellationToken, Pipeline, Registry, StopReason};

pub fn registry() -> Registry {
    Registry {
        inputs: vec![&logferry_tail::PLUGIN],
        filters: vec![],
        outputs: vec![&COLLECT],
        planned: &[],
    }
}

/// tail (tag `t.*`, plus `input`) into a `collect` output named `sink_name` (plus
/// `extra_out`), with more sections after.
pub fn build_with(
    input: &[(&str, &str)],
    sink_name: &str,
    extra_out: &[(&str, &str)],
    extra: Vec<Section>,
) -> Pipeline {
    let mut inp = vec![("Name", "tail"), ("Tag", "t.*")];
    inp.extend_from_slice(input);
    let mut out = vec![("Name", "collect"), ("Match", "*"), ("sink", sink_name)];
    out.extend_from_slice(extra_out);
    let mut sections = vec![
        section(SectionKind::Service, &[("Flush", "0.05"), ("Grace", "2")]),
        section(SectionKind::Input, &inp),
        section(SectionKind::Output, &out),
    ];
    sections.extend(extra);
    Pipeline::build(config(sections), &registry()).unwrap()
}

pub fn build(input: &[(&str, &str)], sink_name: &str, extra_out: &[(&str, &str)]) -> Pipeline {
    build_with(input, sink_name, extra_out, Vec::new())
}

/// Starts the pipeline; returns the stop token and the join handle.
pub fn start(p: Pipeline) -> (CancellationToken, tokio::task::JoinHandle<StopReason>) {
    let stop = CancellationToken::new();
    let h = tokio::spawn(p.run(stop.clone()));
    (stop, h)
}

/// Stops it, within 15 s.
pub async fn stop(stop: CancellationToken, h: tokio::task::JoinHandle<StopReason>) {
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(15), h)
        .await
        .unwrap()
        .unwrap();
}

pub fn records(name: &str) -> Vec<(String, Record)> {
    sink(name).lock().unwrap().clone()
}

/// The `log` of every record a sink got, in order.
pub fn logs(name: &str) -> Vec<String> {
    sink(name)
        .lock()
        .unwrap()
        .iter()
        .map(|(_, r)| {
            r.body
                .get("log")
                .and_then(Value::as_str)
                .unwrap_or("<none>")
                .to_string()
        })
        .collect()
}

/// The agent's log, captured for the whole test binary.
pub fn captured_log() -> String {
    static LOG: std::sync::OnceLock<Arc<Mutex<Vec<u8>>>> = std::sync::OnceLock::new();
    let buf = LOG.get_or_init(|| {
        let buf: Arc<Mutex<Vec<u8>>> = Arc::default();
        let w = Arc::clone(&buf);
        let _ = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || Capture(Arc::clone(&w)))
            .try_init();
        buf
    });
    String::from_utf8_lossy(&buf.lock().unwrap()).into_owned()
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs a pipeline that ends by itself (Exit_On_Eof) within 30 s.
pub async fn run_to_end(p: Pipeline) {
    let r = tokio::time::timeout(Duration::from_secs(30), p.run(CancellationToken::new()))
        .await
        .expect("Exit_On_Eof within 30 s");
    assert_eq!(r, StopReason::InputExit);
}
