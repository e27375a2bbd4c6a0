//! Filesystem buffering and the dead-letter store end to end, on real files: chunks of a
//! `storage.type filesystem` input are acknowledged once on disk and replayed after a
//! restart; a dead output waits on disk within its `storage.total_limit_size` while another
//! keeps up; `storage.pause_on_chunks_overlimit` pauses instead of dropping; rejected records
//! are kept; chunk files written by Fluent Bit are read; unreadable ones are set aside.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use logferry_core::config::SectionKind;
use logferry_core::{DeliveryStatus, EventTime, Map, Record, Value};
use logferry_engine::metrics::{Metrics, PluginMetrics};
use logferry_engine::storage::chunk_file;
use logferry_engine::testing::{config, outage, outcomes, section, sink, wait_until, COLLECT, SEQ};
use logferry_engine::{CancellationToken, Pipeline, Registry, StopReason};

fn registry() -> Registry {
    Registry {
        inputs: vec![&SEQ],
        filters: vec![],
        outputs: vec![&COLLECT],
        planned: &[],
    }
}

fn chunk_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "flb"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn ns(sink_name: &str) -> Vec<i64> {
    sink(sink_name)
        .lock()
        .unwrap()
        .iter()
        .filter_map(|(_, r)| match r.body.get("n") {
            Some(Value::Int(n)) => Some(*n),
            _ => None,
        })
        .collect()
}

fn start(p: Pipeline) -> (CancellationToken, tokio::task::JoinHandle<StopReason>) {
    let stop = CancellationToken::new();
    (stop.clone(), tokio::spawn(p.run(stop)))
}

async fn stop(stop: CancellationToken, h: tokio::task::JoinHandle<StopReason>) {
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(20), h)
        .await
        .expect("pipeline stops within its bound")
        .unwrap();
}

fn output(metrics: &Metrics, i: usize) -> Arc<PluginMetrics> {
    Metrics::list(&metrics.outputs)[i].clone()
}

const FAST: (&str, &str) = ("Flush", "0.05");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_chunks_are_acknowledged_once_on_disk_and_delivered_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().display().to_string();
    let down = outage("fs_restart");
    down.on.store(true, Ordering::SeqCst);
    let first = config(vec![
        section(
            SectionKind::Service,
            &[FAST, ("Grace", "1"), ("storage.path", &path)],
        ),
        section(
            SectionKind::Input,
            &[
                ("Name", "seq"),
                ("Tag", "fsr"),
                ("count", "20"),
                ("per_chunk", "5"),
                ("hold", "1"),
                ("storage.type", "filesystem"),
            ],
        ),
        section(
            SectionKind::Output,
            &[
                ("Name", "collect"),
                ("Match", "fsr"),
                ("sink", "fsr_a"),
                ("outage", "fs_restart"),
            ],
        ),
    ]);
    let (s, h) = start(Pipeline::build(first, &registry()).unwrap());
    // The destination is down, yet every chunk is acknowledged: it is on disk.
    assert!(wait_until(Duration::from_secs(10), || outcomes("fsr:").len() == 4).await);
    assert_eq!(outcomes("fsr:"), vec![DeliveryStatus::Delivered; 4]);
    let stream = dir.path().join("seq.0");
    let stored = |stream: &Path| -> usize {
        chunk_files(stream)
            .iter()
            .map(|f| {
                chunk_file::decode(&std::fs::read(f).unwrap(), false)
                    .unwrap()
                    .1
                    .len()
            })
            .sum()
    };
    // What one input emits under one tag within a tick is one file.
    assert!(!chunk_files(&stream).is_empty() && chunk_files(&stream).len() < 4);
    assert_eq!(stored(&stream), 20);
    stop(s, h).await;
    assert!(sink("fsr_a").lock().unwrap().is_empty());
    assert_eq!(stored(&stream), 20, "undelivered chunks stay on disk");

    // The next start (here: another pipeline on the same storage.path) delivers them first,
    // in order, and removes the files.
    let second = config(vec![
        section(SectionKind::Service, &[FAST, ("storage.path", &path)]),
        section(
            SectionKind::Input,
            &[
                ("Name", "seq"),
                ("Tag", "other"),
                ("count", "0"),
                ("hold", "1"),
            ],
        ),
        section(
            SectionKind::Output,
            &[("Name", "collect"), ("Match", "fsr"), ("sink", "fsr_b")],
        ),
    ]);
    let (s, h) = start(Pipeline::build(second, &registry()).unwrap());
    assert!(wait_until(Duration::from_secs(10), || ns("fsr_b").len() == 20).await);
    assert!(wait_until(Duration::from_secs(10), || chunk_files(&stream).is_empty()).await);
    stop(s, h).await;
    assert_eq!(ns("fsr_b"), (0..20).collect::<Vec<_>>());
}

/// Filesystem storage: a dead output's backlog waits on disk, bounded by its
/// `storage.total_limit_size` (oldest dropped and counted), while the healthy output gets
/// every record although the input's `Mem_Buf_Limit` is tiny.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_output_waits_on_disk_within_its_limit_while_the_other_keeps_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().display().to_string();
    let down = outage("fs_dead");
    down.on.store(true, Ordering::SeqCst);
    let c = config(vec![
        section(
            SectionKind::Service,
            &[
                FAST,
                ("storage.path", &path),
                ("scheduler.base", "0.05"),
                ("scheduler.cap", "0.1"),
            ],
        ),
        section(
            SectionKind::Input,
            &[
                ("Name", "seq"),
                ("Tag", "fsd"),
                ("count", "300"),
                ("per_chunk", "10"),
                ("size", "100"),
                ("hold", "1"),
                ("Mem_Buf_Limit", "2k"),
                ("storage.type", "filesystem"),
            ],
        ),
        section(
            SectionKind::Output,
            &[
                ("Name", "collect"),
                ("Match", "fsd"),
                ("sink", "fsd_dead"),
                ("outage", "fs_dead"),
                ("storage.total_limit_size", "12k"),
            ],
        ),
        section(
            SectionKind::Output,
            &[("Name", "collect"), ("Match", "fsd"), ("sink", "fsd_alive")],
        ),
    ]);
    let p = Pipeline::build(c, &registry()).unwrap();
    let metrics = Arc::clone(&p.metrics);
    let (s, h) = start(p);
    assert!(
        wait_until(Duration::from_secs(20), || ns("fsd_alive").len() == 300).await,
        "the healthy output got {} of 300",
        ns("fsd_alive").len()
    );
    let dead = output(&metrics, 0);
    let dropped = PluginMetrics::get(&dead.dropped_records);
    assert!(
        dropped > 0,
        "the limit was reached, so the oldest were dropped"
    );
    // Every chunk the dead output still owes is on disk, within its limit (plus the batches
    // it was already retrying when the limit was reached).
    let on_disk: u64 = chunk_files(&dir.path().join("seq.0"))
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert!(on_disk <= 12 * 1024 + 6 * 2048, "{on_disk} bytes on disk");
    down.on.store(false, Ordering::SeqCst);
    let want = 300 - dropped as usize;
    assert!(
        wait_until(Duration::from_secs(20), || ns("fsd_dead").len() == want).await,
        "after the outage: {} of {want}",
        ns("fsd_dead").len()
    );
    stop(s, h).await;
    // Exact accounting: every record reached the healthy output once; the dead output got
    // each record it did not count as dropped, once.
    let mut alive = ns("fsd_alive");
    alive.sort();
    assert_eq!(alive, (0..300).collect::<Vec<_>>());
    let mut got = ns("fsd_dead");
    got.sort();
    got.dedup();
    assert_eq!(got.len(), want, "no duplicates at the dead output");
    assert_eq!(
        PluginMetrics::get(&dead.records) + dropped,
        300,
        "delivered + dropped = emitted"
    );
}

/// Memory buffering: a per-output `storage.total_limit_size` below the input's
/// `Mem_Buf_Limit` lets the healthy output keep up while the dead one drops its oldest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_buffering_with_a_per_output_limit_keeps_the_others_going() {
    let down = outage("mem_dead");
    down.on.store(true, Ordering::SeqCst);
    let c = config(vec![
        section(
            SectionKind::Service,
            &[FAST, ("scheduler.base", "0.05"), ("scheduler.cap", "0.1")],
        ),
        section(
            SectionKind::Input,
            &[
                ("Name", "seq"),
                ("Tag", "md"),
                ("count", "300"),
                ("per_chunk", "10"),
                ("size", "100"),
                ("hold", "1"),
                ("Mem_Buf_Limit", "128k"),
            ],
        ),
        section(
            SectionKind::Output,
            &[
                ("Name", "collect"),
                ("Match", "md"),
                ("sink", "md_dead"),
                ("outage", "mem_dead"),
                ("storage.total_limit_size", "32k"),
            ],
        ),
        section(
            SectionKind::Output,
            &[("Name", "collect"), ("Match", "md"), ("sink", "md_alive")],
        ),
    ]);
    let p = Pipeline::build(c, &registry()).unwrap();
    let metrics = Arc::clone(&p.metrics);
    let (s, h) = start(p);
    assert!(
        wait_until(Duration::from_secs(20), || ns("md_alive").len() == 300).await,
        "the healthy output got {} of 300",
        ns("md_alive").len()
    );
    let dead = output(&metrics, 0);
    let dropped = PluginMetrics::get(&dead.dropped_records);
    assert!(dropped > 0);
    down.on.store(false, Ordering::SeqCst);
    let want = 300 - dropped as usize;
    assert!(wait_until(Duration::from_secs(20), || ns("md_dead").len() == want).await);
    stop(s, h).await;
    assert_eq!(PluginMetrics::get(&dead.records) + dropped, 300);
}

/// `storage.pause_on_chunks_overlimit On`: instead of dropping, an output over its limit
/// pauses the input; nothing is lost, and both outputs get everything once the dead one is
/// back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_on_chunks_overlimit_pauses_the_input_instead_of_dropping() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().display().to_string();
    let down = outage("fs_pause");
    down.on.store(true, Ordering::SeqCst);
    let c = config(vec![
        section(
            SectionKind::Service,
            &[
                FAST,
                ("storage.path", &path),
                ("scheduler.base", "0.05"),
                ("scheduler.cap", "0.1"),
            ],
        ),
        section(
            SectionKind::Input,
            &[
                ("Name", "seq"),
                ("Tag", "fsp"),
                ("count", "300"),
                ("per_chunk", "10"),
                ("delay_ms", "60"),
                ("size", "100"),
                ("hold", "1"),
                ("storage.type", "filesystem"),
                ("storage.pause_on_chunks_overlimit", "on"),
            ],
        ),
        section(
            SectionKind::Output,
            &[
                ("Name", "collect"),
                ("Match", "fsp"),
                ("sink", "fsp_dead"),
                ("outage", "fs_pause"),
                ("storage.total_limit_size", "12k"),
            ],
        ),
        section(
            SectionKind::Output,
            &[("Name", "collect"), ("Match", "fsp"), ("sink", "fsp_alive")],
        ),
    ]);
    let p = Pipeline::build(c, &registry()).unwrap();
    let metrics = Arc::clone(&p.metrics);
    let (s, h) = start(p);
    let input = Metrics::list(&metrics.inputs)[0].clone();
    assert!(
        wait_until(Duration::from_secs(10), || PluginMetrics::get(
            &input.paused
        ) > 0)
        .await
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        ns("fsp_alive").len() < 300,
        "the input is paused before the end"
    );
    down.on.store(false, Ordering::SeqCst);
    assert!(
        wait_until(Duration::from_secs(30), || ns("fsp_dead").len() == 300
            && ns("fsp_alive").len() == 300)
        .await,
        "dead {} alive {}",
        ns("fsp_dead").len(),
        ns("fsp_alive").len()
    );
    stop(s, h).await;
    assert_eq!(PluginMetrics::get(&output(&metrics, 0).dropped_records), 0);
    for name in ["fsp_dead", "fsp_alive"] {
        let mut v = ns(name);
        v.sort();
        assert_eq!(v, (0..300).collect::<Vec<_>>(), "{name}: each record once");
    }
}

fn dead_letter_records(dir: &Path) -> Vec<(String, Record)> {
    let mut out = Vec::new();
    for f in chunk_files(dir) {
        let (tag, recs) = chunk_file::decode(&std::fs::read(&f).unwrap(), true).unwrap();
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with(&format!("{tag}_0_collect.")), "{name}");
        out.extend(recs.into_iter().map(|r| (name.clone(), r)));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_records_and_given_up_batches_are_kept_as_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().display().to_string();
    let c = config(vec![
        section(
            SectionKind::Service,
            &[
                FAST,
                ("storage.path", &path),
                ("storage.keep.rejected", "on"),
                ("storage.checksum", "on"),
            ],
        ),
        section(
            SectionKind::Input,
            &[("Name", "seq"), ("Tag", "dl.some"), ("count", "10")],
        ),
        section(
            SectionKind::Input,
            &[("Name", "seq"), ("Tag", "dl.all"), ("count", "3")],
        ),
        section(
            SectionKind::Output,
            &[
                ("Name", "collect"),
                ("Match", "dl.some"),
                ("sink", "dl_some"),
                ("reject_every", "3"),
            ],
        ),
        section(
            SectionKind::Output,
            &[
                ("Name", "collect"),
                ("Match", "dl.all"),
                ("sink", "dl_all"),
                ("fail", "100"),
                ("permanent", "1"),
            ],
        ),
    ]);
    let p = Pipeline::build(c, &registry()).unwrap();
    let metrics = Arc::clone(&p.metrics);
    tokio::time::timeout(Duration::from_secs(20), p.run(CancellationToken::new()))
        .await
        .unwrap();
    let kept = dead_letter_records(&dir.path().join("rejected"));
    let mut some: Vec<i64> = kept
        .iter()
        .filter(|(f, _)| f.starts_with("dl.some"))
        .filter_map(|(_, r)| match r.body.get("n") {
            Some(Value::Int(n)) => Some(*n),
            _ => None,
        })
        .collect();
    some.sort();
    assert_eq!(some, [0, 3, 6, 9], "records refused one by one");
    assert_eq!(ns("dl_some").len(), 6);
    assert_eq!(
        kept.iter().filter(|(f, _)| f.starts_with("dl.all")).count(),
        3,
        "a batch given up on (permanent error)"
    );
    assert_eq!(PluginMetrics::get(&output(&metrics, 0).dropped_records), 4);
    assert_eq!(PluginMetrics::get(&output(&metrics, 1).dropped_records), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_fluent_bit_left_are_replayed_and_unreadable_ones_set_aside() {
    let dir = tempfile::tempdir().unwrap();
    let stream = dir.path().join("tail.0");
    std::fs::create_dir_all(&stream).unwrap();
    // As Fluent Bit writes them: named <pid>-<sec>.<nsec>.flb, grown in 4 KiB pages.
    let recs: Vec<Record> = (0..3)
        .map(|i| {
            let mut m = Map::new();
            m.insert("log", format!("from fluent bit {i}"));
            Record::new(EventTime::from_parts(1_700_000_000 + i, 0), m)
        })
        .collect();
    let mut bytes = chunk_file::encode("kube.fb", &recs, true);
    bytes.resize(4096, 0);
    std::fs::write(stream.join("7-1700000000.123456789.flb"), &bytes).unwrap();
    std::fs::write(stream.join("7-1700000001.5.flb"), b"\xc1\x00 not really").unwrap();
    let path = dir.path().display().to_string();
    let c = config(vec![
        section(
            SectionKind::Service,
            &[FAST, ("storage.path", &path), ("storage.checksum", "on")],
        ),
        section(
            SectionKind::Input,
            &[("Name", "seq"), ("Tag", "x"), ("count", "0"), ("hold", "1")],
        ),
        section(
            SectionKind::Output,
            &[("Name", "collect"), ("Match", "kube.*"), ("sink", "fb")],
        ),
    ]);
    let (s, h) = start(Pipeline::build(c, &registry()).unwrap());
    assert!(
        wait_until(Duration::from_secs(10), || sink("fb").lock().unwrap().len()
            == 3)
        .await
    );
    assert!(wait_until(Duration::from_secs(10), || chunk_files(&stream).is_empty()).await);
    stop(s, h).await;
    let got: Vec<Record> = sink("fb")
        .lock()
        .unwrap()
        .iter()
        .map(|(_, r)| r.clone())
        .collect();
    assert_eq!(got, recs);
    assert!(stream.join(".corrupt/7-1700000001.5.flb").exists());
}

#[test]
fn filesystem_storage_without_a_path_is_a_config_error_and_memrb_a_note() {
    let c = config(vec![
        section(
            SectionKind::Input,
            &[("Name", "seq"), ("storage.type", "filesystem")],
        ),
        section(
            SectionKind::Input,
            &[("Name", "seq"), ("storage.type", "floppy")],
        ),
    ]);
    let errs = match Pipeline::build(c, &registry()) {
        Err(e) => e.0.iter().map(ToString::to_string).collect::<Vec<_>>(),
        Ok(_) => panic!("must fail"),
    };
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(errs[0].contains("storage.type: filesystem storage needs [SERVICE] storage.path"));
    assert!(errs[1].contains("expected 'memory', 'filesystem' or 'memrb', got 'floppy'"));
    let c = config(vec![
        section(SectionKind::Service, &[("storage.keep.rejected", "on")]),
        section(
            SectionKind::Input,
            &[("Name", "seq"), ("storage.type", "memrb")],
        ),
    ]);
    let p = Pipeline::build(c, &registry()).unwrap();
    let notes: Vec<String> = p.notes.iter().map(ToString::to_string).collect();
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(notes[0].contains("storage.keep.rejected: accepted but not applied"));
    assert!(notes[1].contains("storage.type: 'memrb' is accepted but not applied"));
}

/// At shutdown, chunks that wait on disk only stay there for the next start, unless
/// `storage.backlog.flush_on_shutdown On`, which tries to deliver them within Grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_flush_on_shutdown_delivers_what_waits_on_disk() {
    for flush in ["off", "on"] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().display().to_string();
        let name = format!("fos_{flush}");
        let down = outage(&name);
        down.on.store(true, Ordering::SeqCst);
        let c = config(vec![
            section(
                SectionKind::Service,
                &[
                    FAST,
                    ("Grace", "3"),
                    ("storage.path", &path),
                    ("scheduler.base", "0.05"),
                    ("scheduler.cap", "0.1"),
                    ("storage.backlog.flush_on_shutdown", flush),
                ],
            ),
            section(
                SectionKind::Input,
                &[
                    ("Name", "seq"),
                    ("Tag", &name),
                    ("count", "100"),
                    ("per_chunk", "1"),
                    ("delay_ms", "20"),
                    ("hold", "1"),
                    ("storage.type", "filesystem"),
                ],
            ),
            section(
                SectionKind::Output,
                &[
                    ("Name", "collect"),
                    ("Match", &name),
                    ("sink", &name),
                    ("outage", &name),
                ],
            ),
        ]);
        let (s, h) = start(Pipeline::build(c, &registry()).unwrap());
        // Everything is stored (each chunk acknowledged); the output is failing, and once it
        // has Workers + 4 batches out, what it queues waits on disk only.
        assert!(
            wait_until(Duration::from_secs(10), || outcomes(&format!("{name}:"))
                .len()
                >= 100)
            .await,
            "{flush}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        // The agent is asked to stop while the destination is still down; it comes back
        // during the Grace period.
        s.cancel();
        tokio::time::sleep(Duration::from_millis(100)).await;
        down.on.store(false, Ordering::SeqCst);
        stop(s, h).await;
        let delivered = ns(&name).len();
        let left: usize = chunk_files(&dir.path().join("seq.0"))
            .iter()
            .map(|f| {
                chunk_file::decode(&std::fs::read(f).unwrap(), false)
                    .unwrap()
                    .1
                    .len()
            })
            .sum();
        assert_eq!(delivered + left, 100, "{flush}: delivered or still on disk");
        if flush == "on" {
            assert_eq!(delivered, 100, "flushed at shutdown");
        } else {
            assert!(left > 0, "off: what waited on disk stays there");
        }
    }
}
