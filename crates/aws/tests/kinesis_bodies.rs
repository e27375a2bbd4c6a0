//! The request bodies `kinesis_firehose` and `kinesis_streams` write themselves are, byte for
//! byte, the ones the SDK writes for the same records encoded the way the outputs did before
//! (serde_json of the record, `time_key` added to a copy of it, a newline, per-record
//! compression, then the SDK's `Blob` and serializer). Both go through a recording proxy to
//! moto, which must accept them; records cover Unicode, control characters, quotes,
//! backslashes, nested and shared maps, floats, `log_key`, and gzip blobs (binary).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::io::Write;
use std::sync::Arc;

use aws_sdk_firehose::types::{ExtendedS3DestinationConfiguration, Record as FirehoseRecord};
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use aws_smithy_types::Blob;
use logferry_aws::encode::{write_json, write_message};
use logferry_aws::{kinesis_firehose, kinesis_streams};
use logferry_core::{EventTime, Map, Record, Value};
use logferry_engine::{FlushResult, Output};
use logferry_filters::record_accessor::RecordAccessor;
use util::*;

/// Records with what JSON escapes, what it keeps, and what the kubernetes filter shares.
fn records() -> Vec<Record> {
    let mut pod = Map::new();
    pod.insert("pod_name", "web-1");
    pod.insert(
        "labels",
        Value::Map(Map(vec![("app".into(), Value::from("a\"b\\c"))])),
    );
    let pod = Value::SharedMap(Arc::new(pod));
    (0..6)
        .map(|i| {
            let t = EventTime::from_parts(1_700_000_000 + i, 123_456_789);
            let m = Map(vec![
                (
                    "log".into(),
                    Value::from(format!(
                        "line {i}: \"q\" \\ tab\t nl\n ctl\u{1}\u{1f}\u{7f} é ✓ 日本語 😀"
                    )),
                ),
                ("stream".into(), Value::from("stdout")),
                ("n".into(), Value::Int(-i)),
                ("u".into(), Value::UInt(u64::MAX - i as u64)),
                ("f".into(), Value::Float(0.1 + i as f64)),
                ("big".into(), Value::Float(1e21)),
                ("nan".into(), Value::Float(f64::NAN)),
                ("ok".into(), Value::Bool(i % 2 == 0)),
                ("none".into(), Value::Null),
                ("kubernetes".into(), pod.clone()),
                (
                    "nested".into(),
                    Value::Map(Map(vec![
                        (
                            "arr".into(),
                            Value::Array(vec![
                                Value::Int(1),
                                Value::from("x\u{0}y"),
                                Value::Array(vec![]),
                            ]),
                        ),
                        ("ключ".into(), Value::from("значение")),
                    ])),
                ),
                // A duplicate key: the last one is what is sent.
                ("stream".into(), Value::from("stderr")),
            ]);
            Record::new(t, m)
        })
        .collect()
}

/// The blob as the outputs encoded it before: serde_json of the record (with `time_key` set on
/// a copy), or the `log_key` value; a newline; gzip.
fn old_blob(
    r: &Record,
    time_key: Option<(&str, &str)>,
    log_key: Option<&str>,
    newline: bool,
    gzip: bool,
) -> Vec<u8> {
    let mut out = Vec::new();
    match (time_key, log_key) {
        (Some((key, fmt)), None) => {
            let mut body = r.body.clone();
            let dt = chrono::DateTime::from_timestamp_nanos(r.time.0);
            body.insert(key, Value::from(dt.format(fmt).to_string()));
            write_json(&mut out, &body).unwrap();
        }
        (_, key) => {
            let acc = key.map(|k| RecordAccessor::parse_key(k).unwrap());
            write_message(&mut out, &r.body, acc.as_ref()).unwrap();
        }
    }
    if newline {
        out.push(b'\n');
    }
    if gzip {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(&out).unwrap();
        out = e.finish().unwrap();
    }
    out
}

/// (time_key and its chrono format, log_key, gzip).
type FirehoseCase = (
    Option<(&'static str, &'static str)>,
    Option<&'static str>,
    bool,
);

async fn delivery_stream(moto: &Moto) -> String {
    let bucket = unique("bodies-bucket");
    let stream = unique("bodies-fh");
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
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firehose_bodies_are_the_sdks() {
    let moto = Moto::start();
    let proxy = Proxy::start(moto.port, None).await;
    let stream = delivery_stream(&moto).await;
    let records = records();
    // (time_key, log_key, compression)
    let cases: [FirehoseCase; 5] = [
        (None, None, false),
        (Some(("time", "%Y-%m-%dT%H:%M:%S")), None, false),
        // An existing key: replaced in place, as the copy's insert did.
        (Some(("n", "%Y-%m-%dT%H:%M:%S%.3f \"%Z\"")), None, false),
        (None, Some("log"), false),
        (Some(("time", "%s")), None, true),
    ];
    for (time_key, log_key, gzip) in cases {
        let before = proxy.calls("PutRecordBatch").len();
        // The old path: SDK model objects, serialized by the SDK.
        let sdk_records: Vec<FirehoseRecord> = records
            .iter()
            .map(|r| {
                FirehoseRecord::builder()
                    .data(Blob::new(old_blob(r, time_key, log_key, true, gzip)))
                    .build()
                    .unwrap()
            })
            .collect();
        firehose_client(&proxy.endpoint())
            .put_record_batch()
            .delivery_stream_name(&stream)
            .set_records(Some(sdk_records))
            .send()
            .await
            .unwrap();
        // The output.
        let endpoint = proxy.endpoint();
        let mut kv = vec![
            ("region", REGION),
            ("delivery_stream", stream.as_str()),
            ("endpoint", endpoint.as_str()),
        ];
        let fmt;
        if let Some((k, f)) = time_key {
            // Fluent Bit's `%3N`, translated to chrono's `%3f`, stands for `%.3f` minus the dot.
            fmt = f.replace("%.3f", ".%3N");
            kv.push(("time_key", k));
            kv.push(("time_key_format", &fmt));
        }
        if let Some(k) = log_key {
            kv.push(("log_key", k));
        }
        if gzip {
            kv.push(("compression", "gzip"));
        }
        hermetic_env();
        let s = section(&kv);
        let settings = kinesis_firehose::config::settings_from_entries(&s, &entries(&s)).unwrap();
        let out = kinesis_firehose::output(settings, metrics(), "kinesis_firehose.0".into());
        assert_eq!(
            out.flush(&batch("t", records.clone())).await,
            FlushResult::Ok
        );
        let calls = proxy.calls("PutRecordBatch");
        assert_eq!(calls.len(), before + 2);
        let (sdk, ours) = (&calls[before], &calls[before + 1]);
        assert_eq!((sdk.status, ours.status), (200, 200));
        assert_eq!(
            String::from_utf8_lossy(&ours.body),
            String::from_utf8_lossy(&sdk.body),
            "{time_key:?} {log_key:?} gzip {gzip}"
        );
        assert_eq!(
            ours.json()["Records"].as_array().unwrap().len(),
            records.len()
        );
        assert_eq!(
            ours.headers.get("content-length").map(String::as_str),
            Some(ours.body.len().to_string().as_str())
        );
        assert!(
            ours.headers.contains_key("authorization"),
            "signed by the SDK"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinesis_bodies_are_the_sdks() {
    let moto = Moto::start();
    let proxy = Proxy::start(moto.port, None).await;
    let stream = unique("bodies-ks");
    kinesis_client(&moto.endpoint())
        .create_stream()
        .stream_name(&stream)
        .shard_count(1)
        .send()
        .await
        .unwrap();
    // Partition keys from the record (random ones could not be compared): a string with
    // characters JSON escapes, and an integer.
    let mut records = records();
    for (i, r) in records.iter_mut().enumerate() {
        let key = if i % 2 == 0 {
            Value::from(format!("pod \"{i}\" \\ é\u{1}"))
        } else {
            Value::Int(i as i64 * 1000)
        };
        r.body.insert("pk", key);
    }
    // (log_key, append_newline, compression); Kinesis adds no newline unless asked.
    for (log_key, newline, gzip) in [
        (None, false, false),
        (Some("log"), true, false),
        (None, false, true),
    ] {
        let before = proxy.calls("PutRecords").len();
        let entries_: Vec<PutRecordsRequestEntry> = records
            .iter()
            .map(|r| {
                let key = match r.body.get("pk") {
                    Some(Value::Str(s)) => s.to_string(),
                    Some(Value::Int(i)) => i.to_string(),
                    _ => unreachable!(),
                };
                PutRecordsRequestEntry::builder()
                    .data(Blob::new(old_blob(r, None, log_key, newline, gzip)))
                    .partition_key(key)
                    .build()
                    .unwrap()
            })
            .collect();
        kinesis_client(&proxy.endpoint())
            .put_records()
            .stream_name(&stream)
            .set_records(Some(entries_))
            .send()
            .await
            .unwrap();
        let endpoint = proxy.endpoint();
        let mut kv = vec![
            ("region", REGION),
            ("stream", stream.as_str()),
            ("endpoint", endpoint.as_str()),
            ("partition_key", "pk"),
        ];
        if let Some(k) = log_key {
            kv.push(("log_key", k));
        }
        if newline {
            kv.push(("append_newline", "on"));
        }
        if gzip {
            kv.push(("compression", "gzip"));
        }
        hermetic_env();
        let s = section(&kv);
        let settings = kinesis_streams::config::settings_from_entries(&s, &entries(&s)).unwrap();
        let out = kinesis_streams::output(settings, metrics(), "kinesis_streams.0".into());
        assert_eq!(
            out.flush(&batch("t", records.clone())).await,
            FlushResult::Ok
        );
        let calls = proxy.calls("PutRecords");
        assert_eq!(calls.len(), before + 2);
        let (sdk, ours) = (&calls[before], &calls[before + 1]);
        assert_eq!((sdk.status, ours.status), (200, 200));
        assert_eq!(
            String::from_utf8_lossy(&ours.body),
            String::from_utf8_lossy(&sdk.body),
            "{log_key:?} newline {newline} gzip {gzip}"
        );
        assert_eq!(
            ours.json()["Records"].as_array().unwrap().len(),
            records.len()
        );
        assert!(
            ours.headers.contains_key("authorization"),
            "signed by the SDK"
        );
    }
}
