//! YAML processors and routes in the engine: what reaches each output, and when the input is
//! told its records are delivered (never while an output a route sends to still holds them).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use logferry_core::config::Config;
use logferry_core::{DeliveryStatus, Value};
use logferry_engine::testing::{gate, sink, wait_until, COLLECT, MARK, SEQ};
use logferry_engine::{CancellationToken, Pipeline, Registry, StopReason};

fn registry() -> Registry {
    Registry {
        inputs: vec![&SEQ],
        filters: vec![&MARK, &logferry_engine::testing::HOLD],
        outputs: vec![&COLLECT],
        planned: &[],
    }
}

fn load(yaml: &str) -> (tempfile::TempDir, Config) {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("fluent-bit.yaml");
    std::fs::write(&f, yaml).unwrap();
    let c = Config::load(&f).unwrap();
    (dir, c)
}

/// What sink `name` got, by `n`: (tag, `n`, `path`).
fn got(name: &str) -> Vec<(String, i64, String)> {
    let mut v = got_in_order(name);
    v.sort_by_key(|x| x.1);
    v
}

/// What sink `name` got, in the order it got it: (tag, `n`, `path`).
fn got_in_order(name: &str) -> Vec<(String, i64, String)> {
    sink(name)
        .lock()
        .unwrap()
        .iter()
        .map(|(tag, r)| {
            let n = match r.body.get("n") {
                Some(Value::Int(i)) => *i,
                other => panic!("n: {other:?}"),
            };
            let path = r.body.get("path").and_then(Value::as_str).unwrap_or("");
            (tag.clone(), n, path.to_string())
        })
        .collect()
}

/// One chunk of four records is split by routes: the routed records reach only their route's
/// outputs (with the input processor and that output's processor applied), and the input hears
/// "delivered" only once both outputs are done, not while the gated one holds its part.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routed_records_are_acknowledged_only_when_every_route_output_is_done() {
    let (_dir, config) = load(
        "\
service:
  flush: 0.05
  grace: 5
pipeline:
  inputs:
    - name: seq
      tag: acct
      count: 4
      per_chunk: 4
      hold: on
      processors:
        logs:
          - name: mark
            label: P
      routes:
        logs:
          - name: even
            condition:
              rules:
                - {field: $n, op: in, value: ['0', '2']}
            to:
              outputs: [gated]
          - name: rest
            condition: {default: true}
            to:
              outputs: [open]
  outputs:
    - name: collect
      alias: gated
      sink: acct_gated
      gate: acct_gate
    - name: collect
      alias: open
      sink: acct_open
      processors:
        logs:
          - name: mark
            label: O
    - name: collect
      match: '*'
      sink: acct_by_tag
",
    );
    let p = Pipeline::build(config, &registry()).unwrap();
    let stop = CancellationToken::new();
    let run = tokio::spawn(p.run(stop.clone()));
    assert!(
        wait_until(Duration::from_secs(10), || got("acct_open").len() == 2).await,
        "the default route's output got its records"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        logferry_engine::testing::outcomes("acct:").is_empty(),
        "the chunk is not acknowledged while the gated output holds its routed records"
    );
    gate("acct_gate").add_permits(10);
    assert!(
        wait_until(Duration::from_secs(10), || {
            logferry_engine::testing::outcomes("acct:") == vec![DeliveryStatus::Delivered]
        })
        .await,
        "acknowledged once every route's output delivered: {:?}",
        logferry_engine::testing::outcomes("acct:")
    );
    stop.cancel();
    let reason = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("stopped in time")
        .unwrap();
    assert_eq!(reason, StopReason::Stopped);
    assert_eq!(
        got("acct_gated"),
        vec![
            ("even".to_string(), 0, "P".to_string()),
            ("even".to_string(), 2, "P".to_string()),
        ]
    );
    assert_eq!(
        got("acct_open"),
        vec![
            ("rest".to_string(), 1, "PO".to_string()),
            ("rest".to_string(), 3, "PO".to_string()),
        ]
    );
    assert!(
        got("acct_by_tag").is_empty(),
        "an input with routes sends nothing by tag"
    );
}

/// A content_modifier condition picks the records it changes; the others pass unchanged and in
/// order. An output's processors change only what that output gets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditions_pick_records_and_output_processors_stay_with_their_output() {
    let (_dir, config) = load(
        "\
service:
  flush: 0.05
pipeline:
  inputs:
    - name: seq
      tag: cond
      count: 3
      per_chunk: 3
      hold: on
      processors:
        logs:
          - name: content_modifier
            action: insert
            key: path
            value: big
            condition:
              rules:
                - {field: $n, op: gte, value: 1}
  outputs:
    - name: collect
      match: cond
      sink: cond_all
    - name: collect
      match: cond
      sink: cond_none
      processors:
        logs:
          - name: content_modifier
            action: delete
            key: n
          - name: mark
            label: never
            condition:
              rules:
                - {field: $n, op: eq, value: '0'}
",
    );
    let p = Pipeline::build(config, &registry()).unwrap();
    let stop = CancellationToken::new();
    let run = tokio::spawn(p.run(stop.clone()));
    assert!(
        wait_until(Duration::from_secs(10), || {
            logferry_engine::testing::outcomes("cond:") == vec![DeliveryStatus::Delivered]
        })
        .await,
        "delivered: {:?}",
        logferry_engine::testing::outcomes("cond:")
    );
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("stopped in time")
        .unwrap();
    assert_eq!(
        got("cond_all"),
        vec![
            ("cond".to_string(), 0, String::new()),
            ("cond".to_string(), 1, "big".to_string()),
            ("cond".to_string(), 2, "big".to_string()),
        ]
    );
    // `n` was deleted, so the mark processor's condition never held; the records still
    // arrived, without `n` and without the mark.
    let none: Vec<Option<String>> = sink("cond_none")
        .lock()
        .unwrap()
        .iter()
        .map(|(_, r)| {
            assert!(r.body.get("n").is_none());
            r.body
                .get("path")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .collect();
    assert_eq!(none, vec![None, Some("big".into()), Some("big".into())]);
}

/// An input processor that holds chunks and lets them go with a later one
/// ([`logferry_engine::Filter::take_ready`]): they go on first, through the processors after
/// it, each on its own; every record arrives once, in order, and every chunk is acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_an_input_processor_held_go_on_first_and_in_order() {
    let (_dir, config) = load(
        "\
service:
  flush: 0.05
  grace: 30
pipeline:
  inputs:
    - name: seq
      tag: proc.held
      count: 20
      per_chunk: 2
      processors:
        logs:
          - name: hold
            hold: 4
          - name: mark
            label: P
  outputs:
    - name: collect
      match: '*'
      sink: proc_held
",
    );
    let p = Pipeline::build(config, &registry()).unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(30), p.run(CancellationToken::new()))
        .await
        .expect("finished in time");
    assert_eq!(reason, StopReason::InputsDone);
    let want: Vec<(String, i64, String)> = (0..20)
        .map(|n| ("proc.held".to_string(), n, "P".to_string()))
        .collect();
    assert_eq!(
        got_in_order("proc_held"),
        want,
        "each once, in order, through the processor after"
    );
    assert_eq!(logferry_engine::testing::chunks("proc_held"), 10);
    assert_eq!(
        logferry_engine::testing::outcomes("proc.held:"),
        vec![DeliveryStatus::Delivered; 10]
    );
}
