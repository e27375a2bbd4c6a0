//! `kinesis_firehose` against moto's server: delivery read back from the S3 objects moto's
//! Firehose writes, splitting at 500 records and at 4 MiB with exact counts, oversize records
//! rejected (counted, and handed back as the records themselves), partial failures re-sending
//! only the failed records, a throttled call after a partial commit retried without
//! duplicates, and a delivery stream that does not exist yet retried until it does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::sync::Arc;

use aws_sdk_firehose::types::ExtendedS3DestinationConfiguration;
use logferry_aws::kinesis_firehose::{self, config, FirehoseOutput};
use logferry_core::{EventTime, Map, Record, Value};
use logferry_engine::metrics::PluginMetrics;
use logferry_engine::{FlushResult, Output};
use util::*;

/// A bucket and a delivery stream writing to it.
async fn stream_to_bucket(moto: &Moto) -> (String, String) {
    let bucket = unique("fh-bucket");
    let stream = unique("fh-stream");
    create_bucket(moto.port, &bucket);
    firehose_client(&moto.endpoint())
        .create_delivery_stream()
        .delivery_stream_name(&stream)
        .extended_s3_destination_configuration(
            ExtendedS3DestinationConfiguration::builder()
                .bucket_arn(format!("arn:aws:s3:::{bucket}"))
                .role_arn("arn:aws:iam::123456789012:role/firehose")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    (bucket, stream)
}

fn output(kv: &[(&str, &str)]) -> (FirehoseOutput, Arc<PluginMetrics>) {
    hermetic_env();
    let s = section(kv);
    let settings = config::settings_from_entries(&s, &entries(&s)).unwrap();
    let m = metrics();
    (
        kinesis_firehose::output(settings, Arc::clone(&m), "kinesis_firehose.0".into()),
        m,
    )
}

/// Every line written to the bucket.
fn lines(moto: &Moto, bucket: &str) -> Vec<String> {
    bucket_objects(moto.port, bucket)
        .into_iter()
        .flat_map(|(_, data)| {
            String::from_utf8(data)
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn numbered(n: usize) -> Vec<Record> {
    (0..n)
        .map(|i| record(EventTime::now(), &format!("r-{i}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_json_lines_with_the_time_key() {
    let moto = Moto::start();
    let (bucket, stream) = stream_to_bucket(&moto).await;
    let (out, _) = output(&[
        ("region", REGION),
        ("delivery_stream", &stream),
        ("time_key", "ts"),
        ("time_key_format", "%Y-%m-%dT%H:%M:%S.%3N"),
        ("endpoint", &moto.endpoint()),
    ]);
    let mut body = Map::new();
    body.insert("log", "hello");
    let t = EventTime::from_parts(1_576_777_272, 706_307_780);
    let b = batch("t", vec![Record::new(t, body), record(t, "second")]);
    assert_eq!(out.flush(&b).await, FlushResult::Ok);
    assert_eq!(
        lines(&moto, &bucket),
        [
            r#"{"log":"hello","ts":"2019-12-19T17:41:12.706"}"#,
            r#"{"log":"second","ts":"2019-12-19T17:41:12.706"}"#
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splits_at_500_records_and_4_mib_and_drops_oversize_records() {
    let moto = Moto::start();
    let proxy = Proxy::start(moto.port, None).await;
    let (bucket, stream) = stream_to_bucket(&moto).await;
    let (out, m) = output(&[
        ("region", REGION),
        ("delivery_stream", &stream),
        ("log_key", "log"),
        ("endpoint", &proxy.endpoint()),
    ]);
    assert_eq!(
        out.flush(&batch("t", numbered(1_001))).await,
        FlushResult::Ok
    );
    assert_eq!(record_counts(&proxy, "PutRecordBatch"), [500, 500, 1]);

    // 8 × 524,288 bytes (message + newline) = 4 MiB exactly; the 9th starts a call. One record
    // of 1,000 KiB + 1 byte is over the per-record limit: dropped and counted.
    let t = EventTime::now();
    let mut records: Vec<Record> = (0..9)
        .map(|i| record(t, &format!("{i}{}", "x".repeat(524_286))))
        .collect();
    records.insert(3, record(t, &"z".repeat(1_000 * 1024)));
    let b = batch("t", records).keeping_rejected();
    assert_eq!(out.flush(&b).await, FlushResult::Ok);
    assert_eq!(record_counts(&proxy, "PutRecordBatch"), [500, 500, 1, 8, 1]);
    assert_eq!(PluginMetrics::get(&m.dropped_records), 1);
    let rejected = b.take_rejected();
    assert_eq!(
        rejected.len(),
        1,
        "the oversize record itself is handed back"
    );
    assert!(
        matches!(rejected[0].body.get("log"), Some(Value::Str(s)) if s.starts_with('z') && s.len() == 1_000 * 1024)
    );
    let all = lines(&moto, &bucket);
    assert_eq!(all.len(), 1_001 + 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_failure_resends_only_the_failed_records() {
    let moto = Moto::start();
    let proxy = Proxy::start(
        moto.port,
        Some(FaultPlan {
            operation: "PutRecordBatch".into(),
            nth: vec![0],
            fault: Fault::PartialOdd,
        }),
    )
    .await;
    let (bucket, stream) = stream_to_bucket(&moto).await;
    let (out, m) = output(&[
        ("region", REGION),
        ("delivery_stream", &stream),
        ("log_key", "log"),
        ("endpoint", &proxy.endpoint()),
    ]);
    assert_eq!(out.flush(&batch("t", numbered(10))).await, FlushResult::Ok);
    assert_eq!(
        record_counts(&proxy, "PutRecordBatch"),
        [10, 5],
        "the 5 failed ones alone"
    );
    let mut all = lines(&moto, &bucket);
    all.sort();
    let mut want: Vec<String> = (0..10).map(|i| format!("r-{i}")).collect();
    want.sort();
    assert_eq!(all, want, "each record exactly once");
    assert_eq!(PluginMetrics::get(&m.dropped_records), 0);
    assert_eq!(PluginMetrics::get(&m.retried_records), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_call_after_a_partial_commit_is_retried_without_duplicates() {
    let moto = Moto::start();
    let proxy = Proxy::start(
        moto.port,
        Some(FaultPlan {
            operation: "PutRecordBatch".into(),
            nth: vec![1],
            fault: Fault::Throttle,
        }),
    )
    .await;
    let (bucket, stream) = stream_to_bucket(&moto).await;
    let (out, _) = output(&[
        ("region", REGION),
        ("delivery_stream", &stream),
        ("log_key", "log"),
        ("endpoint", &proxy.endpoint()),
    ]);
    let b = batch("t", numbered(1_001));
    let results = flush_until_done(&out, &b, 4).await;
    assert_eq!(results.len(), 2, "{results:?}");
    assert!(matches!(&results[0], FlushResult::Retry(r) if r.contains("ThrottlingException")));
    assert_eq!(results[1], FlushResult::Ok);
    assert_eq!(record_counts(&proxy, "PutRecordBatch"), [500, 500, 1]);
    let all = lines(&moto, &bucket);
    let distinct: std::collections::HashSet<&String> = all.iter().collect();
    assert_eq!((all.len(), distinct.len()), (1_001, 1_001));
    assert_eq!(out.pending_retries(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_stream_that_does_not_exist_yet_is_retried() {
    let moto = Moto::start();
    let bucket = unique("fh-late-bucket");
    let stream = unique("fh-late");
    create_bucket(moto.port, &bucket);
    let (out, m) = output(&[
        ("region", REGION),
        ("delivery_stream", &stream),
        ("log_key", "log"),
        ("endpoint", &moto.endpoint()),
    ]);
    let b = batch("t", numbered(3));
    match out.flush(&b).await {
        FlushResult::Retry(r) => assert!(r.contains("ResourceNotFoundException"), "{r}"),
        other => panic!("{other:?}"),
    }
    firehose_client(&moto.endpoint())
        .create_delivery_stream()
        .delivery_stream_name(&stream)
        .extended_s3_destination_configuration(
            ExtendedS3DestinationConfiguration::builder()
                .bucket_arn(format!("arn:aws:s3:::{bucket}"))
                .role_arn("arn:aws:iam::123456789012:role/firehose")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(out.flush(&b).await, FlushResult::Ok);
    let mut all = lines(&moto, &bucket);
    all.sort();
    assert_eq!(all, ["r-0", "r-1", "r-2"]);
    assert_eq!(PluginMetrics::get(&m.dropped_records), 0);
}

/// Chunks packed while they waited are sent straight from their packed bytes
/// (`Output::reads_packed`): the bucket gets the same lines as for records never packed, and a
/// record over the per-record limit is refused and handed back as its record, read back from
/// its packed chunk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packed_chunks_are_delivered_as_their_records_and_refusals_handed_back() {
    let moto = Moto::start();
    let (bucket, stream) = stream_to_bucket(&moto).await;
    let (out, m) = output(&[
        ("region", REGION),
        ("delivery_stream", &stream),
        ("time_key", "ts"),
        ("endpoint", &moto.endpoint()),
    ]);
    assert!(out.reads_packed());
    let t = EventTime::from_parts(1_576_777_272, 706_307_780);
    let records: Vec<Record> = (0..300)
        .map(|i| {
            let mut body = Map::new();
            // Record 150 is over Firehose's 1,000 KiB per record: refused.
            let log = match i {
                150 => "z".repeat(1_000 * 1024),
                _ => format!("line {i} \"quoted\" é"),
            };
            body.insert("log", log);
            body.insert("n", i as i64);
            body.insert(
                "k8s",
                Value::Map(Map(vec![("pod".into(), Value::from("web-1"))])),
            );
            Record::new(t, body)
        })
        .collect();
    let b = packed_batch("app", &records, 100, 2).keeping_rejected();
    assert_eq!(out.flush(&b).await, FlushResult::Ok);
    assert_eq!(PluginMetrics::get(&m.dropped_records), 1);
    let rejected = b.take_rejected();
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].body.get("n"), Some(&Value::Int(150)));
    let want: Vec<String> = records
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 150)
        .map(|(_, r)| {
            let mut body = r.body.clone();
            body.insert("ts", "2019-12-19T17:41:12");
            serde_json::to_string(&body).unwrap()
        })
        .collect();
    let mut got = lines(&moto, &bucket);
    // Objects may list in any order; each line is one record, and n is unique.
    let n_of = |l: &String| serde_json::from_str::<serde_json::Value>(l).unwrap()["n"].as_i64();
    got.sort_by_key(n_of);
    assert_eq!(got, want);
}
