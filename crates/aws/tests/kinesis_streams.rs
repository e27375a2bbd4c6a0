//! `kinesis_streams` against moto's server: delivery read back with GetRecords (partition keys
//! from a record accessor, random otherwise), splitting at 500 records and 5 MiB (partition
//! keys included) with exact counts, KPL aggregation decoded back, partial failures
//! re-sending only the failed records, a stream that does not exist yet retried until it does,
//! and records refused for good handed back as themselves (aggregated ones included).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::sync::Arc;

use logferry_aws::kinesis_streams::{self, aggregation, config, KinesisOutput};
use logferry_core::{EventTime, Map, Record, Value};
use logferry_engine::metrics::PluginMetrics;
use logferry_engine::{FlushResult, Output};
use md5::Digest;
use util::*;

fn output(kv: &[(&str, &str)]) -> (KinesisOutput, Arc<PluginMetrics>) {
    hermetic_env();
    let s = section(kv);
    let settings = config::settings_from_entries(&s, &entries(&s)).unwrap();
    let m = metrics();
    (
        kinesis_streams::output(settings, Arc::clone(&m), "kinesis_streams.0".into()),
        m,
    )
}

async fn create_stream(moto: &Moto) -> String {
    let name = unique("ks");
    kinesis_client(&moto.endpoint())
        .create_stream()
        .stream_name(&name)
        .shard_count(1)
        .send()
        .await
        .unwrap();
    name
}

/// Every record of the stream's only shard: (partition key, data).
async fn read_stream(moto: &Moto, stream: &str) -> Vec<(String, Vec<u8>)> {
    let c = kinesis_client(&moto.endpoint());
    let desc = c
        .describe_stream()
        .stream_name(stream)
        .send()
        .await
        .unwrap();
    let shard = desc.stream_description().unwrap().shards()[0]
        .shard_id()
        .to_string();
    let mut it = c
        .get_shard_iterator()
        .stream_name(stream)
        .shard_id(shard)
        .shard_iterator_type(aws_sdk_kinesis::types::ShardIteratorType::TrimHorizon)
        .send()
        .await
        .unwrap()
        .shard_iterator()
        .map(str::to_string);
    let mut out = Vec::new();
    for _ in 0..100 {
        let Some(i) = it.take() else { break };
        let page = c
            .get_records()
            .shard_iterator(i)
            .limit(10_000)
            .send()
            .await
            .unwrap();
        if page.records().is_empty() {
            break;
        }
        for r in page.records() {
            out.push((
                r.partition_key().unwrap_or_default().to_string(),
                r.data().as_ref().to_vec(),
            ));
        }
        it = page.next_shard_iterator().map(str::to_string);
    }
    out
}

fn with_pod(pod: Option<&str>, msg: &str) -> Record {
    let mut m = Map::new();
    m.insert("log", msg);
    if let Some(p) = pod {
        let mut k = Map::new();
        k.insert("pod_name", p);
        m.insert("kubernetes", Value::Map(k));
    }
    Record::new(EventTime::now(), m)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_with_accessor_partition_keys_or_random_ones() {
    let moto = Moto::start();
    let stream = create_stream(&moto).await;
    let (out, _) = output(&[
        ("region", REGION),
        ("stream", &stream),
        ("partition_key", "$kubernetes['pod_name']"),
        ("log_key", "log"),
        ("endpoint", &moto.endpoint()),
    ]);
    let b = batch("t", vec![with_pod(Some("web-1"), "a"), with_pod(None, "b")]);
    assert_eq!(out.flush(&b).await, FlushResult::Ok);
    let got = read_stream(&moto, &stream).await;
    assert_eq!(got.len(), 2);
    assert_eq!(got[0], ("web-1".to_string(), b"a".to_vec()));
    assert_eq!(got[1].1, b"b");
    assert_eq!(got[1].0.len(), 32, "random key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splits_at_500_records_and_5_mib_counting_partition_keys() {
    let moto = Moto::start();
    let proxy = Proxy::start(moto.port, None).await;
    let stream = create_stream(&moto).await;
    let (out, m) = output(&[
        ("region", REGION),
        ("stream", &stream),
        ("partition_key", "pk"),
        ("log_key", "log"),
        ("endpoint", &proxy.endpoint()),
    ]);
    let rec = |pk: &str, msg: String| {
        let mut m = Map::new();
        m.insert("pk", pk);
        m.insert("log", msg);
        Record::new(EventTime::now(), m)
    };
    let small: Vec<Record> = (0..1_001).map(|i| rec("k", format!("s-{i}"))).collect();
    assert_eq!(out.flush(&batch("t", small)).await, FlushResult::Ok);
    assert_eq!(record_counts(&proxy, "PutRecords"), [500, 500, 1]);
    // 8 × (655,359 data + 1 key byte) = 5 MiB exactly; the 9th starts a call. A record of
    // 1 MiB data plus its key is over the per-record limit: dropped and counted.
    let mut big: Vec<Record> = (0..9)
        .map(|i| rec("k", format!("{i}{}", "x".repeat(655_358))))
        .collect();
    big.push(rec("k", "z".repeat(1024 * 1024)));
    assert_eq!(out.flush(&batch("t", big)).await, FlushResult::Ok);
    assert_eq!(record_counts(&proxy, "PutRecords"), [500, 500, 1, 8, 1]);
    assert_eq!(PluginMetrics::get(&m.dropped_records), 1);
    assert_eq!(read_stream(&moto, &stream).await.len(), 1_010);
}

/// The user records of a KPL aggregate: (partition key, data).
fn deaggregate(blob: &[u8]) -> Vec<(String, Vec<u8>)> {
    assert_eq!(&blob[..4], &aggregation::MAGIC);
    let proto = &blob[4..blob.len() - 16];
    assert_eq!(&blob[blob.len() - 16..], md5::Md5::digest(proto).as_slice());
    fn varint(b: &[u8], i: &mut usize) -> u64 {
        let (mut v, mut shift) = (0u64, 0);
        loop {
            let byte = b[*i];
            *i += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return v;
            }
            shift += 7;
        }
    }
    fn fields(b: &[u8]) -> Vec<(u64, Result<u64, Vec<u8>>)> {
        let mut i = 0;
        let mut out = Vec::new();
        while i < b.len() {
            let key = varint(b, &mut i);
            if key & 7 == 0 {
                out.push((key >> 3, Ok(varint(b, &mut i))));
            } else {
                let len = varint(b, &mut i) as usize;
                out.push((key >> 3, Err(b[i..i + len].to_vec())));
                i += len;
            }
        }
        out
    }
    let top = fields(proto);
    let keys: Vec<String> = top
        .iter()
        .filter(|(f, _)| *f == 1)
        .map(|(_, v)| String::from_utf8(v.clone().unwrap_err()).unwrap())
        .collect();
    top.iter()
        .filter(|(f, _)| *f == 3)
        .map(|(_, v)| {
            let rec = fields(&v.clone().unwrap_err());
            let idx = rec
                .iter()
                .find(|(f, _)| *f == 1)
                .unwrap()
                .1
                .clone()
                .unwrap() as usize;
            let data = rec
                .iter()
                .find(|(f, _)| *f == 3)
                .unwrap()
                .1
                .clone()
                .unwrap_err();
            (keys[idx].clone(), data)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregation_packs_records_into_kpl_records_under_1_mib() {
    let moto = Moto::start();
    let stream = create_stream(&moto).await;
    let (out, _) = output(&[
        ("region", REGION),
        ("stream", &stream),
        ("partition_key", "$kubernetes['pod_name']"),
        ("log_key", "log"),
        ("aggregation", "on"),
        ("endpoint", &moto.endpoint()),
    ]);
    // 3,000 records of ~700 bytes: about 2.1 MB, so three aggregates.
    let records: Vec<Record> = (0..3_000)
        .map(|i| {
            with_pod(
                Some(if i % 2 == 0 { "a" } else { "b" }),
                &format!("{i:04}{}", "m".repeat(696)),
            )
        })
        .collect();
    assert_eq!(out.flush(&batch("t", records)).await, FlushResult::Ok);
    let got = read_stream(&moto, &stream).await;
    assert_eq!(got.len(), 3);
    let mut users = Vec::new();
    for (key, blob) in &got {
        assert!(blob.len() + key.len() <= 1024 * 1024);
        let inner = deaggregate(blob);
        assert_eq!(
            &inner[0].0, key,
            "the aggregate's key is its first record's"
        );
        users.extend(inner);
    }
    assert_eq!(users.len(), 3_000);
    for (i, (key, data)) in users.iter().enumerate() {
        assert_eq!(key, if i % 2 == 0 { "a" } else { "b" });
        assert!(data.starts_with(format!("{i:04}").as_bytes()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_failure_resends_only_the_failed_records() {
    let moto = Moto::start();
    let proxy = Proxy::start(
        moto.port,
        Some(FaultPlan {
            operation: "PutRecords".into(),
            nth: vec![0, 1],
            fault: Fault::PartialOdd,
        }),
    )
    .await;
    let stream = create_stream(&moto).await;
    let (out, m) = output(&[
        ("region", REGION),
        ("stream", &stream),
        ("log_key", "log"),
        ("endpoint", &proxy.endpoint()),
    ]);
    let records: Vec<Record> = (0..8).map(|i| with_pod(None, &format!("r-{i}"))).collect();
    assert_eq!(out.flush(&batch("t", records)).await, FlushResult::Ok);
    assert_eq!(
        record_counts(&proxy, "PutRecords"),
        [8, 4, 2],
        "only the failed ones, twice"
    );
    let mut got: Vec<String> = read_stream(&moto, &stream)
        .await
        .into_iter()
        .map(|(_, d)| String::from_utf8(d).unwrap())
        .collect();
    got.sort();
    let mut want: Vec<String> = (0..8).map(|i| format!("r-{i}")).collect();
    want.sort();
    assert_eq!(got, want, "each record exactly once");
    assert_eq!(PluginMetrics::get(&m.retried_records), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_does_not_exist_yet_is_retried_until_it_does() {
    let moto = Moto::start();
    let name = unique("ks-late");
    let (out, m) = output(&[
        ("region", REGION),
        ("stream", &name),
        ("log_key", "log"),
        ("endpoint", &moto.endpoint()),
    ]);
    let b = batch("t", vec![with_pod(None, "a"), with_pod(None, "b")]);
    match out.flush(&b).await {
        FlushResult::Retry(r) => assert!(r.contains("ResourceNotFoundException"), "{r}"),
        other => panic!("{other:?}"),
    }
    kinesis_client(&moto.endpoint())
        .create_stream()
        .stream_name(&name)
        .shard_count(1)
        .send()
        .await
        .unwrap();
    assert_eq!(out.flush(&b).await, FlushResult::Ok);
    let got: Vec<Vec<u8>> = read_stream(&moto, &name)
        .await
        .into_iter()
        .map(|(_, d)| d)
        .collect();
    assert_eq!(got, [b"a".to_vec(), b"b".to_vec()]);
    assert_eq!(PluginMetrics::get(&m.dropped_records), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_refused_for_good_are_handed_back_as_themselves() {
    let moto = Moto::start();
    let stream = create_stream(&moto).await;
    let (out, m) = output(&[
        ("region", REGION),
        ("stream", &stream),
        ("log_key", "log"),
        ("aggregation", "on"),
        ("endpoint", &moto.endpoint()),
    ]);
    // Without `log`: no message. Over 1 MiB: a KPL record of its own, too large to send.
    let mut no_log = Map::new();
    no_log.insert("other", "x");
    let b = batch(
        "t",
        vec![
            with_pod(None, "kept 1"),
            Record::new(EventTime::now(), no_log),
            with_pod(None, &"y".repeat(1024 * 1024 + 1)),
            with_pod(None, "kept 2"),
        ],
    )
    .keeping_rejected();
    assert_eq!(out.flush(&b).await, FlushResult::Ok);
    assert_eq!(PluginMetrics::get(&m.dropped_records), 2);
    let rejected = b.take_rejected();
    assert_eq!(rejected.len(), 2);
    assert!(rejected[0].body.get("other").is_some());
    assert!(
        matches!(rejected[1].body.get("log"), Some(Value::Str(s)) if s.len() == 1024 * 1024 + 1)
    );
    let got = read_stream(&moto, &stream).await;
    let inner: Vec<Vec<u8>> = got
        .iter()
        .flat_map(|(_, blob)| deaggregate(blob))
        .map(|(_, d)| d)
        .collect();
    assert_eq!(inner, [b"kept 1".to_vec(), b"kept 2".to_vec()]);
}
