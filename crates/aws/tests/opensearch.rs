//! The `opensearch` and `es` outputs against the project's `_bulk` test server on 127.0.0.1
//! (`tests/fixtures/bulk_server.py`): documents read back, index naming, ids, partial
//! failures, mapping errors, gzip, basic auth, TLS and SigV4 with static keys (verified by
//! botocore's signer). Credentials from a web identity token are in `opensearch_irsa.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::sync::atomic::Ordering;

use logferry_aws::opensearch::{config, SearchOutput};
use logferry_aws::testing::BulkServer;
use logferry_core::{EventTime, Map, Record, Value};
use logferry_engine::metrics::PluginMetrics;
use logferry_engine::{FlushResult, Output};
use util::{batch, entries, flush_until_done, metrics, packed_batch, section};

fn output(kv: &[(&str, &str)], es: bool, m: &std::sync::Arc<PluginMetrics>) -> SearchOutput {
    let s = section(kv);
    let settings = config::settings_from_entries(&s, &entries(&s), es).unwrap();
    SearchOutput::new(settings, m.clone(), "opensearch.0".into()).unwrap()
}

fn at(rfc3339: &str) -> EventTime {
    let t = chrono::DateTime::parse_from_rfc3339(rfc3339).unwrap();
    EventTime(t.timestamp_nanos_opt().unwrap())
}

fn rec(time: EventTime, kv: &[(&str, Value)]) -> Record {
    let mut m = Map::new();
    for (k, v) in kv {
        m.insert(*k, v.clone());
    }
    Record::new(time, m)
}

fn s(v: &str) -> Value {
    Value::Str(v.into())
}

fn port(srv: &BulkServer) -> String {
    srv.port.to_string()
}

/// Fluent Bit 5.1's defaults: index `fluent-bit`, `_type` `_doc`, `create`, `@timestamp` in
/// UTC with milliseconds and `Z`, NDJSON.
#[tokio::test]
async fn defaults_store_each_record_with_its_timestamp() {
    let srv = BulkServer::start(&[]);
    let m = metrics();
    let out = output(&[("host", "127.0.0.1"), ("port", &port(&srv))], false, &m);
    let t = at("2026-11-29T10:20:30.456789+00:00");
    let b = batch(
        "app",
        vec![rec(t, &[("log", s("one"))]), rec(t, &[("log", s("two"))])],
    );
    assert_eq!(out.flush(&b).await, FlushResult::Ok);
    let docs = srv.docs();
    assert_eq!(docs.len(), 2, "{docs:?}");
    for d in &docs {
        assert_eq!(d["_index"], "fluent-bit");
        assert_eq!(d["_source"]["@timestamp"], "2026-11-29T10:20:30.456Z");
    }
    let reqs = srv.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(srv.totals(), (2, 1, reqs[0]["bytes"].as_u64().unwrap()));
    assert!(reqs[0]["bytes"].as_u64().unwrap() > 100);
    assert_eq!(reqs[0]["content_type"], "application/x-ndjson");
    assert_eq!(reqs[0]["path"], "/_bulk");
    assert_eq!(m.dropped_records.load(Ordering::Relaxed), 0);
}

/// `Logstash_Format`: one index per UTC day of the record's own time, so records on both
/// sides of midnight in one batch land in two indices; `Logstash_Prefix_Key` takes the prefix
/// from the record when it has the key; `Path`, `Pipeline`, `Include_Tag_Key`,
/// `Time_Key_Nanos`, `Replace_Dots` and `Suppress_Type_Name` apply.
#[tokio::test]
async fn logstash_indices_follow_the_record_date_across_midnight() {
    let srv = BulkServer::start(&["--prefix", "/search"]);
    let m = metrics();
    let out = output(
        &[
            ("port", &port(&srv)),
            ("path", "/search/"),
            ("pipeline", "logs"),
            ("logstash_format", "on"),
            ("logstash_prefix", "node"),
            ("logstash_prefix_key", "$kubernetes['namespace_name']"),
            ("include_tag_key", "on"),
            ("time_key_nanos", "on"),
            ("replace_dots", "on"),
            ("suppress_type_name", "on"),
        ],
        false,
        &m,
    );
    let mut k = Map::new();
    k.insert("namespace_name", "shop");
    let before = at("2026-11-28T23:59:59.999000001+00:00");
    let after = at("2026-11-29T00:00:00.000000002+00:00");
    let b = batch(
        "kube.x",
        vec![
            rec(before, &[("log", s("late")), ("a.b", Value::Int(1))]),
            rec(after, &[("log", s("early"))]),
            rec(after, &[("log", s("shop")), ("kubernetes", Value::Map(k))]),
        ],
    );
    assert_eq!(out.flush(&b).await, FlushResult::Ok);
    let mut seen: Vec<(String, String, String)> = srv
        .docs()
        .iter()
        .map(|d| {
            (
                d["_index"].as_str().unwrap().to_string(),
                d["_source"]["log"].as_str().unwrap().to_string(),
                d["_source"]["@timestamp"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            (
                "node-2026.11.28".to_string(),
                "late".to_string(),
                "2026-11-28T23:59:59.999000001Z".to_string()
            ),
            (
                "node-2026.11.29".to_string(),
                "early".to_string(),
                "2026-11-29T00:00:00.000000002Z".to_string()
            ),
            (
                "shop-2026.11.29".to_string(),
                "shop".to_string(),
                "2026-11-29T00:00:00.000000002Z".to_string()
            ),
        ]
    );
    let late = srv
        .docs()
        .into_iter()
        .find(|d| d["_source"]["log"] == "late")
        .unwrap();
    assert_eq!(late["_source"]["_flb-key"], "kube.x");
    assert_eq!(late["_source"]["a_b"], 1);
    let reqs = srv.requests();
    assert_eq!(reqs[0]["path"], "/search/_bulk");
    assert_eq!(reqs[0]["query"]["pipeline"][0], "logs");
}

/// `Generate_ID`: the answer to a stored request is lost (503 after storing); the engine's
/// retry sends the same ids, the node refuses them as existing (409 on `create`), and every
/// record is stored once. Without `Generate_ID` the same fault stores each record twice.
#[tokio::test]
async fn generated_ids_make_a_retried_batch_store_each_record_once() {
    let t = at("2026-11-29T08:00:00+00:00");
    let records = || {
        (0..5)
            .map(|i| rec(t, &[("n", Value::Int(i)), ("log", s("same"))]))
            .collect::<Vec<_>>()
    };
    for (generate, want) in [("on", 5), ("off", 10)] {
        let srv = BulkServer::start(&[]);
        srv.faults(r#"{"store_then_status":[503]}"#);
        let m = metrics();
        let out = output(
            &[("port", &port(&srv)), ("generate_id", generate)],
            true,
            &m,
        );
        let b = batch("app", records());
        let results = flush_until_done(&out, &b, 3).await;
        assert!(
            matches!(results.as_slice(), [FlushResult::Retry(r), FlushResult::Ok] if r.contains("503")),
            "{results:?}"
        );
        let docs = srv.docs();
        assert_eq!(docs.len(), want, "Generate_ID {generate}: {docs:?}");
        assert_eq!(m.dropped_records.load(Ordering::Relaxed), 0);
        if generate == "on" {
            let ids: Vec<&str> = docs.iter().map(|d| d["_id"].as_str().unwrap()).collect();
            assert!(ids.iter().all(|i| i.len() == 36), "{ids:?}");
        }
    }
}

/// A bulk answer with some items refused by 429: only those are sent again, alone, inside
/// the same flush; nothing is stored twice and the re-sent records are counted.
#[tokio::test]
async fn items_refused_with_429_are_resent_alone() {
    let srv = BulkServer::start(&[]);
    srv.faults(r#"{"item_status":[null,429,null,503,null]}"#);
    let m = metrics();
    let out = output(&[("port", &port(&srv))], false, &m);
    let t = at("2026-11-29T08:00:00+00:00");
    let b = batch(
        "app",
        (0..5).map(|i| rec(t, &[("n", Value::Int(i))])).collect(),
    );
    assert_eq!(out.flush(&b).await, FlushResult::Ok);
    let mut ns: Vec<i64> = srv
        .docs()
        .iter()
        .map(|d| d["_source"]["n"].as_i64().unwrap())
        .collect();
    ns.sort();
    assert_eq!(ns, vec![0, 1, 2, 3, 4]);
    let items: Vec<u64> = srv
        .requests()
        .iter()
        .map(|r| r["items"].as_u64().unwrap())
        .collect();
    assert_eq!(items, vec![5, 2]);
    assert_eq!(m.retried_records.load(Ordering::Relaxed), 2);
    assert_eq!(out.pending_retries(), 0);
}

/// Items still refused after the in-flush re-sends make the flush return `Retry`; the
/// engine's retry sends only them.
#[tokio::test]
async fn items_still_refused_are_left_to_the_engine_retry() {
    let srv = BulkServer::start(&[]);
    // The item at index 1 is refused in the first call and in each of the 3 re-sends.
    srv.faults(r#"{"item_status":[null,429,null,429,429,429]}"#);
    let m = metrics();
    let out = output(&[("port", &port(&srv))], false, &m);
    let t = at("2026-11-29T08:00:00+00:00");
    let b = batch(
        "app",
        (0..3).map(|i| rec(t, &[("n", Value::Int(i))])).collect(),
    );
    let results = flush_until_done(&out, &b, 3).await;
    assert!(
        matches!(results.as_slice(), [FlushResult::Retry(r), FlushResult::Ok] if r.contains("429")),
        "{results:?}"
    );
    assert_eq!(srv.docs().len(), 3);
    let items: Vec<u64> = srv
        .requests()
        .iter()
        .map(|r| r["items"].as_u64().unwrap())
        .collect();
    assert_eq!(items, vec![3, 1, 1, 1, 1]);
}

/// Records shaped as the kubernetes filter's `Merge_Log` leaves them (the log's JSON keys at
/// the top level): pods disagree on a field's type, the node refuses those documents with
/// `mapper_parsing_exception`; they are counted as dropped (and kept as dead letters when
/// asked), the others are stored, and nothing is retried.
#[tokio::test]
async fn merge_log_type_conflicts_are_counted_mapping_errors() {
    let srv = BulkServer::start(&[]);
    let m = metrics();
    let out = output(&[("port", &port(&srv))], false, &m);
    let t = at("2026-11-29T08:00:00+00:00");
    let mut obj = Map::new();
    obj.insert("code", 3i64);
    let b = batch(
        "kube.a",
        vec![
            rec(t, &[("level", s("info")), ("status", Value::Int(200))]),
            rec(t, &[("level", Value::Map(obj))]),
            rec(t, &[("status", s("OK"))]),
            rec(t, &[("level", s("warn")), ("status", s("404"))]),
        ],
    )
    .keeping_rejected();
    assert_eq!(out.flush(&b).await, FlushResult::Ok);
    assert_eq!(srv.docs().len(), 2);
    assert_eq!(m.dropped_records.load(Ordering::Relaxed), 2);
    assert_eq!(b.counted().0, 2);
    let kept = b.take_rejected();
    assert_eq!(kept.len(), 2);
    assert_eq!(srv.requests().len(), 1, "mapping errors are not retried");
    assert_eq!(m.retried_records.load(Ordering::Relaxed), 0);
}

/// Records that waited packed are written straight from their chunks: the node stores the
/// documents the records give (dots replaced, the tag key, generated ids), and the one it
/// refuses for its mapping is unpacked from its chunk to be kept as a dead letter.
#[tokio::test]
async fn packed_chunks_store_the_documents_of_their_records() {
    let srv = BulkServer::start(&[]);
    let m = metrics();
    let out = output(
        &[
            ("port", &port(&srv)),
            ("replace_dots", "on"),
            ("include_tag_key", "on"),
            ("generate_id", "on"),
        ],
        false,
        &m,
    );
    let t = at("2026-11-29T08:00:00.250+00:00");
    let records: Vec<Record> = (0..30i64)
        .map(|i| {
            let mut inner = Map::new();
            inner.insert("app.kubernetes.io/name", s("web"));
            let level = if i == 12 {
                let mut obj = Map::new();
                obj.insert("code", 3i64);
                Value::Map(obj)
            } else {
                s("info")
            };
            rec(
                EventTime(t.0 + i * 1_000_000),
                &[
                    ("log", s(&format!("line {i} \"q\" é"))),
                    ("level", level),
                    ("labels", Value::Map(inner)),
                    ("n.i", Value::Int(i)),
                ],
            )
        })
        .collect();
    let b = packed_batch("kube.a", &records, 7, 1).keeping_rejected();
    assert!(b.chunks.iter().filter(|c| c.packed.is_some()).count() >= 3);
    assert_eq!(out.flush(&b).await, FlushResult::Ok);
    assert_eq!(m.dropped_records.load(Ordering::Relaxed), 1);
    assert_eq!(b.take_rejected(), vec![records[12].clone()]);
    let mut docs = srv.docs();
    assert_eq!(docs.len(), 29, "{docs:?}");
    docs.sort_by_key(|d| d["_source"]["n_i"].as_i64());
    let mut ids = std::collections::HashSet::new();
    for (d, i) in docs.iter().zip((0..30i64).filter(|&i| i != 12)) {
        assert_eq!(
            d["_source"],
            serde_json::json!({
                "@timestamp": format!("2026-11-29T08:00:00.{:03}Z", 250 + i),
                "_flb-key": "kube.a",
                "log": format!("line {i} \"q\" é"),
                "level": "info",
                "labels": {"app_kubernetes_io/name": "web"},
                "n_i": i,
            })
        );
        assert_eq!(d["_id"].as_str().map(str::len), Some(36));
        assert!(ids.insert(d["_id"].to_string()), "{d}");
    }
}

/// Every item refused for good: the flush fails (`Error`) rather than claiming delivery.
#[tokio::test]
async fn a_batch_refused_whole_is_an_error() {
    let srv = BulkServer::start(&[]);
    let m = metrics();
    // `_type` other than `_doc` is refused by the test server, like a typeless node.
    let out = output(&[("port", &port(&srv)), ("type", "flb_type")], false, &m);
    let t = at("2026-11-29T08:00:00+00:00");
    let b = batch("app", vec![rec(t, &[("n", Value::Int(1))])]);
    assert!(
        matches!(out.flush(&b).await, FlushResult::Error(r) if r.contains("illegal_argument_exception"))
    );
}

/// `Compress gzip` with basic authentication; a wrong password is a `Retry` (an operator fix
/// must not lose data), not a drop.
#[tokio::test]
async fn gzip_bodies_and_basic_auth() {
    let srv = BulkServer::start(&["--basic", "elastic:s3cret"]);
    let m = metrics();
    let t = at("2026-11-29T08:00:00+00:00");
    let b = batch("app", vec![rec(t, &[("log", s("zipped"))])]);
    let bad = output(
        &[
            ("port", &port(&srv)),
            ("http_user", "elastic"),
            ("http_passwd", "wrong"),
        ],
        true,
        &m,
    );
    assert!(matches!(bad.flush(&b).await, FlushResult::Retry(r) if r.contains("401")));
    let out = output(
        &[
            ("port", &port(&srv)),
            ("http_user", "elastic"),
            ("http_passwd", "s3cret"),
            ("compress", "gzip"),
        ],
        true,
        &m,
    );
    assert_eq!(out.flush(&b).await, FlushResult::Ok);
    let reqs = srv.requests();
    let last = reqs.last().unwrap();
    assert_eq!(last["auth"], "basic");
    assert_eq!(last["content_encoding"], "gzip");
    assert_eq!(srv.docs()[0]["_source"]["log"], "zipped");
}

/// HTTPS: trusted through `tls.ca_file`; an untrusted certificate fails (Retry) unless
/// `tls.verify Off`; the name is checked only with `tls.verify_hostname On` (Fluent Bit's
/// defaults), against `tls.vhost` when set.
#[tokio::test]
async fn tls_with_ca_file_verify_and_vhost() {
    let dir = tempfile::tempdir().unwrap();
    let ca = rcgen::generate_simple_self_signed(vec!["search.example".to_string()]).unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, ca.cert.pem()).unwrap();
    std::fs::write(&key, ca.signing_key.serialize_pem()).unwrap();
    let srv = BulkServer::start(&[
        "--cert",
        cert.to_str().unwrap(),
        "--key-file",
        key.to_str().unwrap(),
    ]);
    let t = at("2026-11-29T08:00:00+00:00");
    let b = batch("app", vec![rec(t, &[("log", s("tls"))])]);
    let m = metrics();
    let p = port(&srv);
    let cases: [(&[(&str, &str)], bool); 5] = [
        (&[("tls", "on")], false),
        (&[("tls", "on"), ("tls.verify", "off")], true),
        (
            &[("tls", "on"), ("tls.ca_file", cert.to_str().unwrap())],
            true,
        ),
        (
            &[
                ("tls", "on"),
                ("tls.ca_file", cert.to_str().unwrap()),
                ("tls.verify_hostname", "on"),
            ],
            false,
        ),
        (
            &[
                ("tls", "on"),
                ("tls.ca_file", cert.to_str().unwrap()),
                ("tls.verify_hostname", "on"),
                ("tls.vhost", "search.example"),
            ],
            true,
        ),
    ];
    for (kv, ok) in cases {
        let mut kv = kv.to_vec();
        kv.push(("port", &p));
        let out = output(&kv, false, &m);
        let r = out.flush(&b).await;
        if ok {
            assert_eq!(r, FlushResult::Ok, "{kv:?}");
        } else {
            assert!(matches!(r, FlushResult::Retry(_)), "{kv:?}: {r:?}");
        }
    }
    // One document per accepted connection, none through a refused one.
    assert_eq!(srv.docs().len(), 3);
}

/// SigV4 with the chain's static keys, verified by botocore's signer on the server, over the
/// gzip body, with service `aoss` (OpenSearch Serverless).
#[tokio::test]
async fn sigv4_signed_requests_verify_with_botocore() {
    logferry_aws::testing::hermetic_env();
    let srv = BulkServer::start(&["--sigv4", "eu-west-1/aoss", "--key", "testing:testing"]);
    let m = metrics();
    let t = at("2026-11-29T08:00:00+00:00");
    let b = batch("app", vec![rec(t, &[("log", s("signed"))])]);
    let out = output(
        &[
            ("port", &port(&srv)),
            ("aws_auth", "on"),
            ("aws_region", "eu-west-1"),
            ("aws_service_name", "aoss"),
            ("compress", "gzip"),
            ("pipeline", "p 1"),
        ],
        false,
        &m,
    );
    assert_eq!(out.flush(&b).await, FlushResult::Ok);
    let reqs = srv.requests();
    assert_eq!(reqs[0]["auth"], "sigv4", "{reqs:?}");
    // The wrong service name is refused by the verifier: the test can fail.
    let wrong = output(
        &[
            ("port", &port(&srv)),
            ("aws_auth", "on"),
            ("aws_region", "eu-west-1"),
        ],
        false,
        &m,
    );
    assert!(matches!(wrong.flush(&b).await, FlushResult::Retry(r) if r.contains("403")));
    assert_eq!(srv.docs().len(), 1);
}
