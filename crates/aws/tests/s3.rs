//! `s3` against moto's server: PutObject and multipart uploads read back from the bucket, key
//! format, compression, `upload_timeout` by the timer task, buffered files uploaded after a
//! restart, and a failed upload kept and retried.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use logferry_aws::s3::{config, S3Output};
use logferry_core::{EventTime, Map, Record};
use logferry_engine::metrics::PluginMetrics;
use logferry_engine::{FlushResult, Output};
use util::*;

fn output(kv: &[(&str, &str)]) -> (S3Output, Arc<PluginMetrics>) {
    hermetic_env();
    let s = section(kv);
    let settings =
        config::settings_from_entries(&s, &entries(&s), std::path::Path::new("/")).unwrap();
    let m = metrics();
    (
        S3Output::new(settings, Arc::clone(&m), "s3.0".into()).unwrap(),
        m,
    )
}

fn lines(data: &[u8]) -> Vec<String> {
    String::from_utf8(data.to_vec())
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_object_with_key_format_date_key_and_index() {
    let moto = Moto::start();
    let bucket = unique("s3-put");
    create_bucket(moto.port, &bucket);
    let dir = tempfile::tempdir().unwrap();
    let (out, _) = output(&[
        ("region", REGION),
        ("bucket", &bucket),
        ("use_put_object", "on"),
        ("s3_key_format", "/logs/$TAG[1]/%Y/%m/%d/$INDEX.json"),
        ("static_file_path", "on"),
        ("content_type", "application/json"),
        ("store_dir", dir.path().to_str().unwrap()),
        ("endpoint", &moto.endpoint()),
    ]);
    let mut body = Map::new();
    body.insert("log", "hello");
    let t = EventTime::from_parts(1_576_777_272, 706_307_780);
    let b = batch("kube.web", vec![Record::new(t, body), record(t, "two")]);
    assert_eq!(out.flush(&b).await, FlushResult::Ok);
    assert!(
        bucket_objects(moto.port, &bucket).is_empty(),
        "buffered until due"
    );
    assert_eq!(out.buffered_files(), 1);
    out.shutdown().await.unwrap();
    let objects = bucket_objects(moto.port, &bucket);
    assert_eq!(objects.len(), 1);
    let year = chrono::Utc::now().format("%Y/%m/%d").to_string();
    assert_eq!(objects[0].0, format!("logs/web/{year}/0.json"));
    assert_eq!(
        lines(&objects[0].1),
        [
            r#"{"date":"2019-12-19T17:41:12.706307Z","log":"hello"}"#,
            r#"{"date":"2019-12-19T17:41:12.706307Z","log":"two"}"#
        ]
    );
    assert_eq!(out.buffered_files(), 0);
    assert_eq!(
        std::fs::read_dir(dir.path().join(&bucket))
            .unwrap()
            .filter(|e| e
                .as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "buf"))
            .count(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_file_goes_up_in_5_mib_parts() {
    let moto = Moto::start();
    let proxy = Proxy::start(moto.port, None).await;
    let bucket = unique("s3-multi");
    create_bucket(moto.port, &bucket);
    let dir = tempfile::tempdir().unwrap();
    let (out, _) = output(&[
        ("region", REGION),
        ("bucket", &bucket),
        ("total_file_size", "12M"),
        ("upload_chunk_size", "5M"),
        ("log_key", "log"),
        ("s3_key_format", "/big/$TAG-$UUID"),
        ("store_dir", dir.path().to_str().unwrap()),
        ("endpoint", &proxy.endpoint()),
    ]);
    // 13 records of 1 MiB (1,048,575 bytes + newline): 13 MiB ≥ 12M, so the flush uploads.
    let t = EventTime::now();
    let records: Vec<Record> = (0..13)
        .map(|i| record(t, &format!("{i:02}{}", "x".repeat(1_048_573))))
        .collect();
    assert_eq!(out.flush(&batch("t", records)).await, FlushResult::Ok);
    assert_eq!(out.uploaded(), 1);
    let seen = proxy.seen();
    let parts: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.method == "PUT" && s.path.contains("partNumber="))
        .collect();
    assert_eq!(parts.len(), 3, "5 MiB + 5 MiB + 3 MiB");
    assert_eq!(
        parts.iter().map(|p| p.body.len()).collect::<Vec<_>>(),
        [5 << 20, 5 << 20, 3 << 20]
    );
    assert!(seen
        .iter()
        .any(|s| s.method == "POST" && s.path.contains("uploads")));
    assert!(seen
        .iter()
        .any(|s| s.method == "POST" && s.path.contains("uploadId=")));
    let objects = bucket_objects(moto.port, &bucket);
    assert_eq!(objects.len(), 1);
    assert!(objects[0].0.starts_with("big/t-") && objects[0].0.len() == "big/t-".len() + 8);
    let got = lines(&objects[0].1);
    assert_eq!(got.len(), 13);
    assert!(got[12].starts_with("12x"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_and_zstd_objects() {
    let moto = Moto::start();
    let bucket = unique("s3-gz");
    create_bucket(moto.port, &bucket);
    for (compression, prefix) in [("gzip", "gz"), ("zstd", "zst")] {
        let dir = tempfile::tempdir().unwrap();
        let fmt = format!("/{prefix}/$TAG");
        let (out, _) = output(&[
            ("region", REGION),
            ("bucket", &bucket),
            ("compression", compression),
            ("log_key", "log"),
            ("s3_key_format", &fmt),
            ("static_file_path", "on"),
            ("store_dir", dir.path().to_str().unwrap()),
            ("endpoint", &moto.endpoint()),
        ]);
        let b = batch("t", vec![record(EventTime::now(), "compressed"); 3]);
        assert_eq!(out.flush(&b).await, FlushResult::Ok);
        out.shutdown().await.unwrap();
    }
    let objects = bucket_objects(moto.port, &bucket);
    assert_eq!(objects.len(), 2);
    let mut text = String::new();
    flate2::read::GzDecoder::new(&objects[0].1[..])
        .read_to_string(&mut text)
        .unwrap();
    assert_eq!(text, "compressed\n".repeat(3));
    let text = String::from_utf8(zstd::decode_all(&objects[1].1[..]).unwrap()).unwrap();
    assert_eq!(text, "compressed\n".repeat(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_timeout_is_kept_by_the_timer_task() {
    let moto = Moto::start();
    let bucket = unique("s3-timer");
    create_bucket(moto.port, &bucket);
    let dir = tempfile::tempdir().unwrap();
    let (out, _) = output(&[
        ("region", REGION),
        ("bucket", &bucket),
        ("upload_timeout", "1s"),
        ("store_dir", dir.path().to_str().unwrap()),
        ("endpoint", &moto.endpoint()),
    ]);
    assert_eq!(
        out.flush(&batch("t", vec![record(EventTime::now(), "x")]))
            .await,
        FlushResult::Ok
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while out.uploaded() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(out.uploaded(), 1);
    assert_eq!(bucket_objects(moto.port, &bucket).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_records_survive_a_restart_and_are_uploaded_after_it() {
    let moto = Moto::start();
    let bucket = unique("s3-restart");
    create_bucket(moto.port, &bucket);
    let dir = tempfile::tempdir().unwrap();
    let kv = [
        ("region", REGION),
        ("bucket", bucket.as_str()),
        ("log_key", "log"),
        ("s3_key_format", "/r/$TAG/$INDEX"),
        ("static_file_path", "on"),
        ("store_dir", dir.path().to_str().unwrap()),
        ("endpoint", &moto.endpoint()),
    ];
    {
        let (first, _) = output(&kv);
        let b = batch("app.one", vec![record(EventTime::now(), "before restart")]);
        assert_eq!(first.flush(&b).await, FlushResult::Ok);
        // Dropped without shutdown: a crash or kill.
    }
    assert!(bucket_objects(moto.port, &bucket).is_empty());
    let (second, _) = output(&kv);
    assert_eq!(second.buffered_files(), 1);
    let deadline = Instant::now() + Duration::from_secs(20);
    while second.uploaded() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let objects = bucket_objects(moto.port, &bucket);
    assert_eq!(objects.len(), 1);
    assert_eq!(objects[0].0, "r/app.one/0");
    assert_eq!(lines(&objects[0].1), ["before restart"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_upload_keeps_the_file_and_succeeds_later() {
    let moto = Moto::start();
    let bucket = unique("s3-fail");
    create_bucket(moto.port, &bucket);
    let dir = tempfile::tempdir().unwrap();
    let (out, _) = output(&[
        ("region", REGION),
        ("bucket", &bucket),
        ("store_dir", dir.path().to_str().unwrap()),
        ("auto_retry_requests", "off"),
        // Nothing listens on port 9 here: every attempt fails on the network.
        ("endpoint", "http://127.0.0.1:9"),
    ]);
    assert_eq!(
        out.flush(&batch("t", vec![record(EventTime::now(), "kept")]))
            .await,
        FlushResult::Ok
    );
    let err = out.upload_due(true).await.unwrap_err();
    assert!(err.contains("PutObject"), "{err}");
    assert_eq!(out.buffered_files(), 1, "the file is kept");
    assert!(out.shutdown().await.is_err());
    drop(out);
    // After a restart with a working endpoint, it goes up.
    let (again, _) = output(&[
        ("region", REGION),
        ("bucket", &bucket),
        ("store_dir", dir.path().to_str().unwrap()),
        ("endpoint", &moto.endpoint()),
    ]);
    again.shutdown().await.unwrap();
    let objects = bucket_objects(moto.port, &bucket);
    assert_eq!(objects.len(), 1);
    assert!(String::from_utf8_lossy(&objects[0].1).contains("kept"));
}
