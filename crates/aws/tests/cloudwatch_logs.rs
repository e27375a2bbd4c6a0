//! `cloudwatch_logs` against moto's server: delivery read back with a second client, group
//! auto-creation (and a missing group retried until it exists), batch splitting at every
//! PutLogEvents limit with exact counts, truncation, rejected (too old) events handed back as
//! their records, throttling and 5xx faults injected by a proxy, credential, permission and
//! clock-skew outages through the fault proxy retried without loss, and `role_arn` through
//! moto's STS.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::sync::Arc;
use std::time::Duration;

use logferry_aws::cloudwatch_logs::{batch, config, CloudWatchLogsOutput};
use logferry_aws::testing::{FaultProxy, Mode};
use logferry_core::{EventTime, Map, Record, Value};
use logferry_engine::metrics::PluginMetrics;
use logferry_engine::{FlushResult, Output};
use util::*;

fn output(kv: &[(&str, &str)]) -> (CloudWatchLogsOutput, Arc<PluginMetrics>) {
    hermetic_env();
    let s = section(kv);
    let settings = config::settings_from_entries(&s, &entries(&s)).unwrap();
    let m = metrics();
    (
        CloudWatchLogsOutput::new(settings, Arc::clone(&m), "cloudwatch_logs.0".into()),
        m,
    )
}

fn now_minus(d: Duration) -> EventTime {
    EventTime(EventTime::now().0 - d.as_nanos() as i64)
}

/// `n` records `prefix-i`, one millisecond apart, ending now.
fn numbered(prefix: &str, n: usize) -> Vec<Record> {
    let base = now_minus(Duration::from_secs(60)).0;
    (0..n)
        .map(|i| record(EventTime(base + i as i64 * 1_000), &format!("{prefix}-{i}")))
        .collect()
}

/// Event counts of each PutLogEvents request that moto accepted.
fn put_sizes(p: &Proxy) -> Vec<usize> {
    p.calls("PutLogEvents")
        .iter()
        .filter(|s| s.status == 200)
        .map(|s| s.json()["logEvents"].as_array().map_or(0, Vec::len))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_records_as_json_and_auto_creates_the_group_once() {
    let moto = Moto::start();
    let proxy = Proxy::start(moto.port, None).await;
    let group = unique("/seed/group");
    let (out, m) = output(&[
        ("region", REGION),
        ("log_group_name", &group),
        ("log_stream_prefix", "from-logferry-"),
        ("auto_create_group", "On"),
        ("log_retention_days", "7"),
        ("endpoint", &proxy.endpoint()),
    ]);
    let t = now_minus(Duration::from_secs(5));
    let mut body = Map::new();
    body.insert("log", "hello");
    body.insert("n", 1i64);
    let b = batch("app.x", vec![Record::new(t, body), record(t, "second")]);
    assert_eq!(out.flush(&b).await, FlushResult::Ok);
    // A second flush to the same stream creates nothing.
    let b2 = batch("app.x", vec![record(t, "third")]);
    assert_eq!(out.flush(&b2).await, FlushResult::Ok);

    let reader = logs_client(&moto.endpoint());
    let events = read_events(&reader, &group, "from-logferry-app.x").await;
    let messages: Vec<&str> = events.iter().map(|(_, m)| m.as_str()).collect();
    assert_eq!(
        messages,
        [
            r#"{"log":"hello","n":1}"#,
            r#"{"log":"second"}"#,
            r#"{"log":"third"}"#
        ]
    );
    assert!(events.iter().all(|(ts, _)| *ts == t.as_millis()));

    let groups = reader
        .describe_log_groups()
        .log_group_name_prefix(&group)
        .send()
        .await
        .unwrap();
    let g = &groups.log_groups()[0];
    assert_eq!(g.log_group_name(), Some(group.as_str()));
    assert_eq!(g.retention_in_days(), Some(7));
    assert_eq!(proxy.calls("CreateLogGroup").len(), 1);
    assert_eq!(
        proxy.calls("CreateLogStream").len(),
        2,
        "once before, once after the group"
    );
    assert_eq!(
        proxy.calls("PutLogEvents").len(),
        3,
        "not found, then two puts"
    );
    assert_eq!(PluginMetrics::get(&m.dropped_records), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_group_without_auto_create_is_retried_until_an_operator_creates_it() {
    let moto = Moto::start();
    let group = unique("later");
    let (out, m) = output(&[
        ("region", REGION),
        ("log_group_name", &group),
        ("log_stream_name", "s"),
        ("log_key", "log"),
        ("endpoint", &moto.endpoint()),
    ]);
    let b = batch("t", vec![record(now_minus(Duration::from_secs(1)), "x")]);
    match out.flush(&b).await {
        FlushResult::Retry(reason) => assert!(reason.contains("auto_create_group"), "{reason}"),
        other => panic!("{other:?}"),
    }
    let reader = logs_client(&moto.endpoint());
    reader
        .create_log_group()
        .log_group_name(&group)
        .send()
        .await
        .unwrap();
    assert_eq!(out.flush(&b).await, FlushResult::Ok);
    let events = read_events(&reader, &group, "s").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].1, "x");
    assert_eq!(PluginMetrics::get(&m.dropped_records), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_permission_and_clock_outages_are_retried_until_delivered() {
    let moto = Moto::start();
    let proxy = FaultProxy::start(moto.addr());
    let group = unique("outage");
    let (out, m) = output(&[
        ("region", REGION),
        ("log_group_name", &group),
        ("log_stream_name", "s"),
        ("auto_create_group", "on"),
        ("log_key", "log"),
        ("auto_retry_requests", "off"),
        ("endpoint", &proxy.endpoint()),
    ]);
    let b = batch("t", numbered("o", 50));
    let outages = [
        Mode::access_denied(),
        Mode::unrecognized_client(),
        Mode::expired_token(),
        Mode::signature_expired(),
        Mode::Throttle,
        Mode::Unavailable,
        Mode::Reset,
    ];
    for mode in &outages {
        proxy.set_mode(mode.clone());
        match out.flush(&b).await {
            FlushResult::Retry(_) => {}
            other => panic!("{mode:?}: {other:?}"),
        }
        assert_eq!(proxy.requests(mode), 1, "{mode:?}");
    }
    proxy.set_mode(Mode::Pass);
    assert_eq!(out.flush(&b).await, FlushResult::Ok);
    let events = read_events(&logs_client(&moto.endpoint()), &group, "s").await;
    let want: Vec<String> = (0..50).map(|i| format!("o-{i}")).collect();
    assert_eq!(events.into_iter().map(|(_, m)| m).collect::<Vec<_>>(), want);
    assert_eq!(PluginMetrics::get(&m.dropped_records), 0);
    // A request the service refuses for good is still an error.
    proxy.set_mode(Mode::error(400, "InvalidParameterException", "bad"));
    let b2 = batch("t", numbered("p", 1));
    assert!(
        matches!(out.flush(&b2).await, FlushResult::Error(r) if r.contains("InvalidParameterException"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splits_at_10000_events_per_call() {
    let moto = Moto::start();
    let proxy = Proxy::start(moto.port, None).await;
    let group = unique("count");
    let (out, _) = output(&[
        ("region", REGION),
        ("log_group_name", &group),
        ("log_stream_name", "s"),
        ("auto_create_group", "true"),
        ("log_key", "log"),
        ("endpoint", &proxy.endpoint()),
    ]);
    let b = batch("t", numbered("e", 20_001));
    assert_eq!(out.flush(&b).await, FlushResult::Ok);
    assert_eq!(put_sizes(&proxy), [10_000, 10_000, 1]);
    let events = read_events(&logs_client(&moto.endpoint()), &group, "s").await;
    assert_eq!(events.len(), 20_001);
    assert_eq!(events[0].1, "e-0");
    assert_eq!(events[20_000].1, "e-20000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splits_at_1_mib_counting_26_bytes_per_event() {
    let moto = Moto::start();
    let proxy = Proxy::start(moto.port, None).await;
    let group = unique("bytes");
    let (out, _) = output(&[
        ("region", REGION),
        ("log_group_name", &group),
        ("log_stream_name", "s"),
        ("auto_create_group", "true"),
        ("log_key", "log"),
        ("endpoint", &proxy.endpoint()),
    ]);
    // 16 × (65,510 + 26) = 1,048,576 exactly: 16 events fill one call; the 17th starts another.
    let len = batch::MAX_BATCH_BYTES / 16 - batch::EVENT_OVERHEAD;
    assert_eq!(len, 65_510);
    let t = now_minus(Duration::from_secs(10));
    let records: Vec<Record> = (0..17)
        .map(|i| {
            let mut msg = format!("{i:02}-");
            msg.push_str(&"x".repeat(len - 3));
            record(t, &msg)
        })
        .collect();
    assert_eq!(out.flush(&batch("t", records)).await, FlushResult::Ok);
    assert_eq!(put_sizes(&proxy), [16, 1]);
    let first = &proxy
        .calls("PutLogEvents")
        .into_iter()
        .find(|s| s.status == 200)
        .unwrap();
    let bytes: usize = first.json()["logEvents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap().len() + batch::EVENT_OVERHEAD)
        .sum();
    assert_eq!(bytes, 1_048_576);
    let events = read_events(&logs_client(&moto.endpoint()), &group, "s").await;
    assert_eq!(events.len(), 17);
    assert!(events.iter().all(|(_, m)| m.len() == len));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splits_calls_spanning_24_hours_and_sorts_events() {
    let moto = Moto::start();
    let proxy = Proxy::start(moto.port, None).await;
    let group = unique("span");
    let (out, _) = output(&[
        ("region", REGION),
        ("log_group_name", &group),
        ("log_stream_name", "s"),
        ("auto_create_group", "true"),
        ("log_key", "log"),
        ("endpoint", &proxy.endpoint()),
    ]);
    let h = Duration::from_secs(3600);
    // One clock reading for all three: c must be exactly 24 h after a. With a reading per
    // record, a millisecond passing between them made the span 24 h minus 1 ms, one call.
    let now = EventTime::now().0;
    let at = |d: Duration| EventTime(now - d.as_nanos() as i64);
    // Out of order on purpose: moto refuses unsorted calls.
    let records = vec![
        record(at(h), "c"),
        record(at(25 * h), "a"),
        record(at(2 * h), "b"),
    ];
    assert_eq!(out.flush(&batch("t", records)).await, FlushResult::Ok);
    assert_eq!(
        put_sizes(&proxy),
        [2, 1],
        "a..b span 23 h; c is 24 h after a"
    );
    let events = read_events(&logs_client(&moto.endpoint()), &group, "s").await;
    let messages: Vec<&str> = events.iter().map(|(_, m)| m.as_str()).collect();
    assert_eq!(messages, ["a", "b", "c"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_event_is_truncated_counted_and_delivered() {
    let moto = Moto::start();
    let group = unique("big");
    let (out, m) = output(&[
        ("region", REGION),
        ("log_group_name", &group),
        ("log_stream_name", "s"),
        ("auto_create_group", "true"),
        ("log_key", "log"),
        ("endpoint", &moto.endpoint()),
    ]);
    let t = now_minus(Duration::from_secs(1));
    let big = "y".repeat(batch::MAX_BATCH_BYTES + 100);
    let b = batch("t", vec![record(t, &big), record(t, "small")]);
    assert_eq!(out.flush(&b).await, FlushResult::Ok);
    assert_eq!(out.truncated(), 1);
    assert_eq!(PluginMetrics::get(&m.dropped_records), 0);
    let events = read_events(&logs_client(&moto.endpoint()), &group, "s").await;
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].1.len(), batch::MAX_MESSAGE_BYTES);
    assert_eq!(events[1].1, "small");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_old_event_is_counted_and_not_retried_while_the_rest_is_accepted() {
    let moto = Moto::start();
    let proxy = Proxy::start(moto.port, None).await;
    let group = unique("old");
    let (out, m) = output(&[
        ("region", REGION),
        ("log_group_name", &group),
        ("log_stream_name", "s"),
        ("auto_create_group", "true"),
        ("log_key", "log"),
        ("endpoint", &proxy.endpoint()),
    ]);
    // One call (the span is 2 h): the first event is just past the 14-day limit.
    let fourteen_days = Duration::from_secs(14 * 86_400);
    let h = Duration::from_secs(3600);
    // Out of time order, so that the refused event's index in the sorted call (0) is not its
    // record's index in the batch (1).
    let b = batch(
        "t",
        vec![
            record(now_minus(fourteen_days - h), "fine 1"),
            record(now_minus(fourteen_days + h), "too old"),
            record(
                now_minus(fourteen_days - h - Duration::from_secs(1)),
                "fine 2",
            ),
        ],
    )
    .keeping_rejected();
    assert_eq!(out.flush(&b).await, FlushResult::Ok);
    assert_eq!(PluginMetrics::get(&m.dropped_records), 1);
    let rejected = b.take_rejected();
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].body.get("log"), Some(&Value::from("too old")));
    assert_eq!(b.counted().0, 1);
    assert_eq!(put_sizes(&proxy), [3], "one accepted call, nothing resent");
    let events = read_events(&logs_client(&moto.endpoint()), &group, "s").await;
    let mut messages: Vec<&str> = events.iter().map(|(_, m)| m.as_str()).collect();
    messages.sort();
    assert_eq!(messages, ["fine 1", "fine 2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_after_a_partial_commit_is_retried_without_loss_or_duplicates() {
    let moto = Moto::start();
    let group = unique("throttle");
    // Create the group and stream first so that every PutLogEvents is a data call.
    let reader = logs_client(&moto.endpoint());
    reader
        .create_log_group()
        .log_group_name(&group)
        .send()
        .await
        .unwrap();
    reader
        .create_log_stream()
        .log_group_name(&group)
        .log_stream_name("s")
        .send()
        .await
        .unwrap();
    // The 2nd and 3rd PutLogEvents are throttled: the first call of the batch is committed,
    // then its second call fails twice.
    let proxy = Proxy::start(
        moto.port,
        Some(FaultPlan {
            operation: "PutLogEvents".into(),
            nth: vec![1, 2],
            fault: Fault::Throttle,
        }),
    )
    .await;
    let (out, m) = output(&[
        ("region", REGION),
        ("log_group_name", &group),
        ("log_stream_name", "s"),
        ("log_key", "log"),
        ("endpoint", &proxy.endpoint()),
    ]);
    let b = batch("t", numbered("r", 15_000));
    let results = flush_until_done(&out, &b, 5).await;
    assert_eq!(results.len(), 3, "{results:?}");
    assert!(
        matches!(&results[0], FlushResult::Retry(r) if r.contains("ThrottlingException")),
        "{results:?}"
    );
    assert_eq!(results[2], FlushResult::Ok);
    assert_eq!(put_sizes(&proxy), [10_000, 5_000]);
    assert_eq!(out.pending_retries(), 0);
    let events = read_events(&reader, &group, "s").await;
    assert_eq!(events.len(), 15_000);
    let distinct: std::collections::HashSet<&str> =
        events.iter().map(|(_, m)| m.as_str()).collect();
    assert_eq!(distinct.len(), 15_000, "no duplicates");
    assert_eq!(PluginMetrics::get(&m.dropped_records), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_error_before_anything_is_committed_is_a_retry() {
    let moto = Moto::start();
    let group = unique("five-hundred");
    let proxy = Proxy::start(
        moto.port,
        Some(FaultPlan {
            operation: "PutLogEvents".into(),
            nth: vec![0],
            fault: Fault::ServerError,
        }),
    )
    .await;
    let (out, _) = output(&[
        ("region", REGION),
        ("log_group_name", &group),
        ("log_stream_name", "s"),
        ("auto_create_group", "true"),
        ("log_key", "log"),
        ("auto_retry_requests", "off"),
        ("endpoint", &proxy.endpoint()),
    ]);
    let b = batch("t", numbered("r", 10));
    let results = flush_until_done(&out, &b, 5).await;
    assert!(
        matches!(&results[0], FlushResult::Retry(r) if r.contains("HTTP 500")),
        "{results:?}"
    );
    assert_eq!(results.last(), Some(&FlushResult::Ok));
    let events = read_events(&logs_client(&moto.endpoint()), &group, "s").await;
    assert_eq!(events.len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_template_routes_records_and_falls_back_to_prefix_and_tag() {
    let moto = Moto::start();
    let group = unique("tmpl");
    let (out, _) = output(&[
        ("region", REGION),
        ("log_group_name", &group),
        ("log_stream_prefix", "p-"),
        ("log_stream_template", "$kubernetes['pod_name'].$TAG[1]"),
        ("auto_create_group", "true"),
        ("log_key", "log"),
        ("endpoint", &moto.endpoint()),
    ]);
    let t = now_minus(Duration::from_secs(1));
    let with_pod = |pod: &str, msg: &str| {
        let mut k = Map::new();
        k.insert("pod_name", pod);
        let mut m = Map::new();
        m.insert("log", msg);
        m.insert("kubernetes", Value::Map(k));
        Record::new(t, m)
    };
    let b = batch(
        "kube.web",
        vec![
            with_pod("a", "1"),
            with_pod("b", "2"),
            record(t, "3"),
            with_pod("a", "4"),
        ],
    );
    assert_eq!(out.flush(&b).await, FlushResult::Ok);
    let reader = logs_client(&moto.endpoint());
    let msgs = |events: Vec<(i64, String)>| events.into_iter().map(|(_, m)| m).collect::<Vec<_>>();
    assert_eq!(
        msgs(read_events(&reader, &group, "a.web").await),
        ["1", "4"]
    );
    assert_eq!(msgs(read_events(&reader, &group, "b.web").await), ["2"]);
    assert_eq!(
        msgs(read_events(&reader, &group, "p-kube.web").await),
        ["3"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emf_sets_the_logs_format_header_and_metadata() {
    let moto = Moto::start();
    let proxy = Proxy::start(moto.port, None).await;
    let group = unique("emf");
    let (out, _) = output(&[
        ("region", REGION),
        ("log_group_name", &group),
        ("log_stream_name", "s"),
        ("auto_create_group", "true"),
        ("log_format", "json/emf"),
        ("metric_namespace", "ns"),
        ("metric_dimensions", "host"),
        ("endpoint", &proxy.endpoint()),
    ]);
    let mut body = Map::new();
    body.insert("host", "h1");
    body.insert("cpu", 0.5f64);
    let b = batch(
        "t",
        vec![Record::new(now_minus(Duration::from_secs(1)), body)],
    );
    assert_eq!(out.flush(&b).await, FlushResult::Ok);
    let puts: Vec<Seen> = proxy
        .calls("PutLogEvents")
        .into_iter()
        .filter(|s| s.json()["logEvents"].is_array())
        .collect();
    let last = puts.last().unwrap();
    assert_eq!(
        last.headers.get("x-amzn-logs-format").map(String::as_str),
        Some("json/emf")
    );
    let msg: serde_json::Value =
        serde_json::from_str(last.json()["logEvents"][0]["message"].as_str().unwrap()).unwrap();
    let directive = &msg["_aws"]["CloudWatchMetrics"][0];
    assert_eq!(directive["Namespace"], "ns");
    assert_eq!(directive["Dimensions"], serde_json::json!([["host"]]));
    assert_eq!(directive["Metrics"], serde_json::json!([{"Name": "cpu"}]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_arn_is_assumed_through_sts_endpoint() {
    let moto = Moto::start();
    let proxy = Proxy::start(moto.port, None).await;
    let group = unique("assume");
    let (out, _) = output(&[
        ("region", REGION),
        ("log_group_name", &group),
        ("log_stream_name", "s"),
        ("auto_create_group", "true"),
        ("role_arn", "arn:aws:iam::123456789012:role/logferry"),
        ("external_id", "ext-1"),
        ("sts_endpoint", &proxy.endpoint()),
        ("endpoint", &proxy.endpoint()),
    ]);
    let b = batch("t", vec![record(now_minus(Duration::from_secs(1)), "x")]);
    assert_eq!(out.flush(&b).await, FlushResult::Ok);
    let assume = proxy.calls("AssumeRole");
    assert_eq!(assume.len(), 1);
    let form = String::from_utf8_lossy(&assume[0].body).to_string();
    assert!(form.contains("ExternalId=ext-1"), "{form}");
    assert_eq!(assume[0].access_key().as_deref(), Some("testing"));
    let put = proxy.calls("PutLogEvents").pop().unwrap();
    let key = put.access_key().unwrap();
    assert!(
        key.starts_with("ASIA"),
        "signed with the assumed role's key, got {key}"
    );
}

/// Chunks packed while they waited are sent straight from their packed bytes: moto stores the
/// same messages as for records never packed, and an event the service refuses (too old) is
/// handed back as its record, read back from the packed chunk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packed_chunks_are_delivered_as_their_records_and_refusals_handed_back() {
    let moto = Moto::start();
    let group = unique("packed");
    let (out, m) = output(&[
        ("region", REGION),
        ("log_group_name", &group),
        ("log_stream_name", "s"),
        ("auto_create_group", "true"),
        ("endpoint", &moto.endpoint()),
    ]);
    assert!(out.reads_packed());
    let base = now_minus(Duration::from_secs(60)).0;
    let records: Vec<Record> = (0..300)
        .map(|i| {
            let mut body = Map::new();
            body.insert("log", format!("line {i} \"quoted\" é"));
            body.insert("n", i as i64);
            body.insert(
                "k8s",
                Value::Map(Map(vec![("pod".into(), Value::from("web-1"))])),
            );
            // Record 150 is past CloudWatch's 14 days: refused by the service.
            let t = if i == 150 {
                now_minus(Duration::from_secs(15 * 86_400)).0
            } else {
                base + i as i64 * 1_000_000
            };
            Record::new(EventTime(t), body)
        })
        .collect();
    let b = packed_batch("app", &records, 100, 2).keeping_rejected();
    assert_eq!(out.flush(&b).await, FlushResult::Ok);
    assert_eq!(PluginMetrics::get(&m.dropped_records), 1);
    let rejected = b.take_rejected();
    assert_eq!(rejected.len(), 1);
    assert_eq!(
        rejected[0].body.get("log"),
        Some(&Value::from("line 150 \"quoted\" é"))
    );
    let events = read_events(&logs_client(&moto.endpoint()), &group, "s").await;
    let want: Vec<String> = records
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 150)
        .map(|(_, r)| serde_json::to_string(&r.body).unwrap())
        .collect();
    let got: Vec<&str> = events.iter().map(|(_, m)| m.as_str()).collect();
    assert_eq!(got, want);
}
