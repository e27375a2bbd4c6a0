//! `s3` against moto's server: PutObject and multipart uploads read back from the bucket, key
//! format, compression, `upload_timeout` by the timer task, buffered files uploaded after a
//! restart (Kubernetes-length tags, files of the previous naming scheme), large buffers
//! uploaded part by part with bounded memory, a store that cannot be written to returning
//! `Retry`, and failed uploads (network, throttling through the fault proxy) kept and retried.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use logferry_aws::s3::{config, S3Output};
use logferry_aws::testing::{FaultProxy, Mode};
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

/// A Kubernetes tail tag (~130 bytes): its hex alone is over the 255-byte file name limit.
const KUBE_TAG: &str = "kube.var.log.containers.nginx-5468c5d4d7-n2swr_default_nginx-b90a89309ac90fff2972822c66f11736933000c5aa6376dff0c11a441fa427ee.log";

/// Names of the buffer files in `dir`.
fn buf_files(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().to_string())
                .filter(|n| n.ends_with(".buf"))
                .collect()
        })
        .unwrap_or_default()
}

/// Random lowercase lines (hardly compressible past ~60%), `n` bytes in all.
fn noise_lines(n: usize, line: usize) -> Vec<String> {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..n / line)
        .map(|i| {
            let mut l = format!("{i:08}-");
            while l.len() < line - 1 {
                l.push(rng.random_range(b'a'..=b'z') as char);
            }
            l
        })
        .collect()
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
    for (compression, prefix, put) in [
        ("gzip", "a-gz", "off"),
        ("zstd", "b-zst", "off"),
        ("gzip", "c-gz-put", "on"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let fmt = format!("/{prefix}/$TAG");
        let (out, _) = output(&[
            ("region", REGION),
            ("bucket", &bucket),
            ("compression", compression),
            ("use_put_object", put),
            ("log_key", "log"),
            ("s3_key_format", &fmt),
            ("static_file_path", "on"),
            ("store_dir", dir.path().to_str().unwrap()),
            ("endpoint", &moto.endpoint()),
        ]);
        let b = batch("t", vec![record(EventTime::now(), "compressed"); 3]);
        assert_eq!(out.flush(&b).await, FlushResult::Ok);
        out.shutdown().await.unwrap();
        let left: Vec<_> = std::fs::read_dir(dir.path().join(&bucket))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n != "index")
            .collect();
        assert!(
            left.is_empty(),
            "no buffer or temporary file left: {left:?}"
        );
    }
    let objects = bucket_objects(moto.port, &bucket);
    assert_eq!(objects.len(), 3);
    for i in [0, 2] {
        let mut text = String::new();
        flate2::read::GzDecoder::new(&objects[i].1[..])
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "compressed\n".repeat(3));
    }
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
        let b = batch(KUBE_TAG, vec![record(EventTime::now(), "before restart")]);
        assert_eq!(first.flush(&b).await, FlushResult::Ok);
        // Dropped without shutdown: a crash or kill.
    }
    // A file a previous version left, named `<ns>-<tag in hex>.buf`.
    let hex: String = "app.one".bytes().map(|b| format!("{b:02x}")).collect();
    std::fs::write(
        dir.path()
            .join(&bucket)
            .join(format!("1700000000000000000-{hex}.buf")),
        "old version\n",
    )
    .unwrap();
    assert!(bucket_objects(moto.port, &bucket).is_empty());
    let (second, _) = output(&kv);
    assert_eq!(second.buffered_files(), 2);
    let deadline = Instant::now() + Duration::from_secs(20);
    while second.uploaded() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let objects = bucket_objects(moto.port, &bucket);
    let got: Vec<(String, Vec<String>)> =
        objects.iter().map(|(k, v)| (k.clone(), lines(v))).collect();
    // The older file goes first ($INDEX 0); $TAG is the full tag, read from the file.
    assert_eq!(
        got,
        [
            ("r/app.one/0".to_string(), vec!["old version".to_string()]),
            (
                format!("r/{KUBE_TAG}/1"),
                vec!["before restart".to_string()]
            ),
        ]
    );
    assert!(buf_files(&dir.path().join(&bucket)).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_of_a_kubernetes_tag_arrives() {
    // Issue 13: with the tag in hex in the file name, 0 of 300 records arrived (ENAMETOOLONG).
    let moto = Moto::start();
    let bucket = unique("s3-kube");
    create_bucket(moto.port, &bucket);
    let dir = tempfile::tempdir().unwrap();
    let (out, m) = output(&[
        ("region", REGION),
        ("bucket", &bucket),
        ("log_key", "log"),
        ("store_dir", dir.path().to_str().unwrap()),
        ("endpoint", &moto.endpoint()),
    ]);
    let t = EventTime::now();
    for chunk in 0..3 {
        let records: Vec<Record> = (0..100)
            .map(|i| record(t, &format!("line {:03}", chunk * 100 + i)))
            .collect();
        assert_eq!(out.flush(&batch(KUBE_TAG, records)).await, FlushResult::Ok);
    }
    let names = buf_files(&dir.path().join(&bucket));
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(names[0].len() < 100, "{names:?}");
    out.shutdown().await.unwrap();
    let objects = bucket_objects(moto.port, &bucket);
    assert_eq!(objects.len(), 1);
    assert!(
        objects[0]
            .0
            .starts_with(&format!("fluent-bit-logs/{KUBE_TAG}/")),
        "{}",
        objects[0].0
    );
    let want: Vec<String> = (0..300).map(|i| format!("line {i:03}")).collect();
    assert_eq!(lines(&objects[0].1), want);
    assert_eq!(PluginMetrics::get(&m.dropped_records), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_buffer_goes_up_part_by_part_with_bounded_memory() {
    let moto = Moto::start();
    let proxy = FaultProxy::start(moto.addr());
    let bucket = unique("s3-large");
    create_bucket(moto.port, &bucket);
    let part = 5 * 1024 * 1024;
    // Plain: 22 MiB of records, 4 full parts and a short one. Gzip: 24 MiB of noise, which
    // compresses to ~15 MiB, so 2 full parts and a short one.
    for (compression, mib) in [("none", 22), ("gzip", 24)] {
        let dir = tempfile::tempdir().unwrap();
        let fmt = format!("/large/{compression}");
        let (out, _) = output(&[
            ("region", REGION),
            ("bucket", &bucket),
            ("log_key", "log"),
            ("compression", compression),
            ("upload_chunk_size", "5M"),
            ("s3_key_format", &fmt),
            ("static_file_path", "on"),
            ("store_dir", dir.path().to_str().unwrap()),
            ("endpoint", &proxy.endpoint()),
        ]);
        let all = noise_lines(mib << 20, 1024);
        let t = EventTime::now();
        for chunk in all.chunks(2048) {
            let records: Vec<Record> = chunk.iter().map(|l| record(t, l)).collect();
            assert_eq!(out.flush(&batch("big", records)).await, FlushResult::Ok);
        }
        let before = proxy.seen().len();
        out.shutdown().await.unwrap();
        let parts: Vec<usize> = proxy.seen()[before..]
            .iter()
            .filter(|s| s.method == "PUT" && s.path.contains("partNumber="))
            .map(|s| s.body_len)
            .collect();
        let (key, data) = bucket_objects(moto.port, &bucket)
            .into_iter()
            .find(|(k, _)| k == &fmt[1..])
            .unwrap();
        let text = if compression == "gzip" {
            let mut t = String::new();
            flate2::read::GzDecoder::new(&data[..])
                .read_to_string(&mut t)
                .unwrap();
            t
        } else {
            String::from_utf8(data).unwrap()
        };
        assert!(
            text.lines().eq(all.iter().map(String::as_str)),
            "{key}: content differs"
        );
        assert!(parts.len() >= 3, "{compression}: parts {parts:?}");
        assert!(
            parts[..parts.len() - 1].iter().all(|&p| p == part),
            "{parts:?}"
        );
        let held = out.largest_upload_buffer();
        let bound = if compression == "gzip" {
            part as u64 + 2 * 1024 * 1024 + 64 * 1024
        } else {
            part as u64
        };
        assert!(
            held > 0 && held <= bound,
            "{compression}: held {held} > {bound}"
        );
        assert!(held * 3 < (mib as u64) << 20, "never the whole file");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_cannot_be_written_is_a_retry_and_nothing_is_lost() {
    let moto = Moto::start();
    let bucket = unique("s3-nowrite");
    create_bucket(moto.port, &bucket);
    let dir = tempfile::tempdir().unwrap();
    let (out, m) = output(&[
        ("region", REGION),
        ("bucket", &bucket),
        ("log_key", "log"),
        ("s3_key_format", "/w/$TAG"),
        ("store_dir", dir.path().to_str().unwrap()),
        ("endpoint", &moto.endpoint()),
    ]);
    let t = EventTime::now();
    assert_eq!(
        out.flush(&batch("a", vec![record(t, "a1")])).await,
        FlushResult::Ok
    );
    // The bucket's directory becomes a file: no new buffer file can be created.
    let store = dir.path().join(&bucket);
    let aside = dir.path().join("aside");
    std::fs::rename(&store, &aside).unwrap();
    std::fs::write(&store, b"in the way").unwrap();
    let mut no_log = Map::new();
    no_log.insert("msg", "no log_key");
    let b = batch("b", vec![record(t, "b1"), Record::new(t, no_log)]).keeping_rejected();
    match out.flush(&b).await {
        FlushResult::Retry(reason) => assert!(reason.contains("store_dir"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        b.counted(),
        (0, 0),
        "nothing rejected by an attempt that stored nothing"
    );
    std::fs::remove_file(&store).unwrap();
    std::fs::rename(&aside, &store).unwrap();
    // The engine's retry of the same batch goes through.
    assert_eq!(out.flush(&b).await, FlushResult::Ok);
    assert_eq!(PluginMetrics::get(&m.dropped_records), 1, "rejected once");
    assert_eq!(b.take_rejected().len(), 1);
    out.shutdown().await.unwrap();
    let mut got: Vec<String> = bucket_objects(moto.port, &bucket)
        .iter()
        .flat_map(|(_, d)| lines(d))
        .collect();
    got.sort();
    assert_eq!(got, ["a1", "b1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_upload_keeps_the_file_until_s3_takes_it() {
    let moto = Moto::start();
    let proxy = FaultProxy::start(moto.addr());
    let bucket = unique("s3-throttle");
    create_bucket(moto.port, &bucket);
    let dir = tempfile::tempdir().unwrap();
    let (out, _) = output(&[
        ("region", REGION),
        ("bucket", &bucket),
        ("log_key", "log"),
        ("store_dir", dir.path().to_str().unwrap()),
        ("endpoint", &proxy.endpoint()),
    ]);
    assert_eq!(
        out.flush(&batch("t", vec![record(EventTime::now(), "kept")]))
            .await,
        FlushResult::Ok
    );
    for mode in [
        Mode::Throttle,
        Mode::error(403, "AccessDenied", "Access Denied"),
    ] {
        proxy.set_mode(mode.clone());
        let err = out.upload_due(true).await.unwrap_err();
        assert!(err.contains("PutObject"), "{err}");
        assert_eq!(out.buffered_files(), 1, "the file is kept");
        assert!(proxy.requests(&mode) >= 1);
    }
    proxy.set_mode(Mode::Pass);
    assert_eq!(out.upload_due(true).await, Ok(1));
    let objects = bucket_objects(moto.port, &bucket);
    assert_eq!(objects.len(), 1);
    assert_eq!(lines(&objects[0].1), ["kept"]);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_without_log_key_are_rejected_as_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let (out, m) = output(&[
        ("region", REGION),
        ("bucket", "no-upload"),
        ("log_key", "log"),
        ("store_dir", dir.path().to_str().unwrap()),
        // Nothing is uploaded in this test.
        ("endpoint", "http://127.0.0.1:9"),
    ]);
    let mut other = Map::new();
    other.insert("msg", "no log key");
    let t = EventTime::now();
    let b = batch(
        "t",
        vec![
            record(t, "kept"),
            Record::new(t, other),
            record(t, "kept too"),
        ],
    )
    .keeping_rejected();
    assert_eq!(out.flush(&b).await, FlushResult::Ok);
    assert_eq!(PluginMetrics::get(&m.dropped_records), 1);
    let rejected = b.take_rejected();
    assert_eq!(rejected.len(), 1);
    assert!(rejected[0].body.get("msg").is_some());
    assert_eq!(out.buffered_files(), 1);
}

/// The binary builds its outputs before its runtime starts: the upload timer then starts with
/// the pipeline ([`Output::start`]), so what a previous run left is uploaded after
/// `upload_timeout` even when no new record is ever flushed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_a_previous_run_left_are_uploaded_without_new_records() {
    use logferry_engine::Output;
    let moto = Moto::start();
    let bucket = unique("s3-start");
    create_bucket(moto.port, &bucket);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().to_str().unwrap().to_string();
    let endpoint = moto.endpoint();
    let kv = move || {
        vec![
            ("region".to_string(), REGION.to_string()),
            ("bucket".to_string(), bucket.clone()),
            ("log_key".to_string(), "log".to_string()),
            ("upload_timeout".to_string(), "1s".to_string()),
            ("store_dir".to_string(), store.clone()),
            ("endpoint".to_string(), endpoint.clone()),
        ]
    };
    let first_kv = kv();
    {
        let pairs: Vec<(&str, &str)> = first_kv
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let (first, _) = output(&pairs);
        let b = batch(KUBE_TAG, vec![record(EventTime::now(), "left behind")]);
        assert_eq!(first.flush(&b).await, FlushResult::Ok);
        // Dropped: a crash.
    }
    // Built outside any runtime, as the binary builds it.
    let second_kv = kv();
    let second = std::thread::spawn(move || {
        let pairs: Vec<(&str, &str)> = second_kv
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        output(&pairs).0
    })
    .join()
    .unwrap();
    assert_eq!(second.buffered_files(), 1);
    second.start().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while second.uploaded() < 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        second.uploaded(),
        1,
        "uploaded by the timer, no flush needed"
    );
}

/// Chunks packed while they waited are written straight from their packed bytes
/// (`Output::reads_packed`): the object holds the same lines as for records never packed,
/// `json_date_key` in front; and with `log_key`, a packed record without it is handed back as
/// itself, read back from its chunk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packed_chunks_are_uploaded_as_their_records_and_refusals_handed_back() {
    use logferry_core::Value;
    let moto = Moto::start();
    let bucket = unique("s3-packed");
    create_bucket(moto.port, &bucket);
    let dir = tempfile::tempdir().unwrap();
    let (out, _) = output(&[
        ("region", REGION),
        ("bucket", &bucket),
        ("use_put_object", "on"),
        ("store_dir", dir.path().to_str().unwrap()),
        ("endpoint", &moto.endpoint()),
    ]);
    assert!(out.reads_packed());
    let t = EventTime::from_parts(1_576_777_272, 706_307_780);
    let records: Vec<Record> = (0..300)
        .map(|i| {
            let mut body = Map::new();
            if i != 150 {
                body.insert("log", format!("line {i} \"quoted\" é"));
            }
            body.insert("n", i as i64);
            body.insert(
                "k8s",
                Value::Map(Map(vec![("pod".into(), Value::from("web-1"))])),
            );
            Record::new(t, body)
        })
        .collect();
    let packed = || packed_batch("app", &records, 100, 2).keeping_rejected();
    assert_eq!(out.flush(&packed()).await, FlushResult::Ok);
    out.shutdown().await.unwrap();
    let objects = bucket_objects(moto.port, &bucket);
    assert_eq!(objects.len(), 1);
    let want: Vec<String> = records
        .iter()
        .map(|r| {
            let body = serde_json::to_string(&r.body).unwrap();
            format!(r#"{{"date":"2019-12-19T17:41:12.706307Z",{}"#, &body[1..])
        })
        .collect();
    assert_eq!(lines(&objects[0].1), want);

    let (out, m) = output(&[
        ("region", REGION),
        ("bucket", "no-upload"),
        ("log_key", "log"),
        ("store_dir", dir.path().to_str().unwrap()),
        // Nothing is uploaded in this part.
        ("endpoint", "http://127.0.0.1:9"),
    ]);
    let b = packed();
    assert_eq!(out.flush(&b).await, FlushResult::Ok);
    assert_eq!(PluginMetrics::get(&m.dropped_records), 1);
    let rejected = b.take_rejected();
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].body.get("n"), Some(&Value::Int(150)));
}
