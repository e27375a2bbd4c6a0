//! The tail input on real files: rename and copytruncate rotation under a fast writer, Docker
//! 16 KiB splits, CRI partials, long lines, a Fluent Bit DB, offsets committed only after
//! delivery, 1,000 files, Exit_On_Eof.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{build, captured_log, logs, records, registry, start, stop};
use logferry_core::config::SectionKind;
use logferry_core::Value;
use logferry_engine::testing::{config, gate, section, sink, wait_until};
use logferry_engine::{CancellationToken, Pipeline, StopReason};

fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// Checks every writer line arrived exactly once and in order.
fn assert_exactly_once(got: &[String], n: usize) {
    let mut seen = vec![0u32; n];
    let mut last: Option<usize> = None;
    for l in got {
        let i: usize = l
            .trim_start_matches("line-")
            .parse()
            .unwrap_or_else(|_| panic!("unexpected line {l:?}"));
        seen[i] += 1;
        if let Some(p) = last {
            assert!(i > p, "line {i} after {p}: out of order");
        }
        last = Some(i);
    }
    let missing: Vec<usize> = (0..n).filter(|&i| seen[i] == 0).collect();
    let dup: Vec<usize> = (0..n).filter(|&i| seen[i] > 1).collect();
    assert!(
        missing.is_empty(),
        "{} lines missing, first {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert!(
        dup.is_empty(),
        "{} lines duplicated, first {:?}",
        dup.len(),
        &dup[..dup.len().min(10)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rename_rotation_under_a_fast_writer_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    std::fs::write(&log, "").unwrap();
    let pattern = format!("{}/*.log", dir.path().display());
    let p = build(
        &[
            ("Path", &pattern),
            ("Read_from_Head", "On"),
            ("Refresh_Interval", "1"),
            ("Rotate_Wait", "2"),
        ],
        "rename",
        &[],
    );
    let (tok, h) = start(p);
    const N: usize = 200_000;
    const EVERY: usize = 25_000;
    let writer_log = log.clone();
    let writer = std::thread::spawn(move || {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&writer_log)
            .unwrap();
        let mut rotation = 0;
        for i in 0..N {
            if i > 0 && i % EVERY == 0 {
                // kubelet-style: rename away, keep writing to the old handle a little, then
                // reopen a fresh file under the watched name.
                rotation += 1;
                let rotated = writer_log.with_extension(format!("log.{rotation}"));
                std::fs::rename(&writer_log, &rotated).unwrap();
                writeln!(f, "line-{i}").unwrap();
                f.flush().unwrap();
                f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&writer_log)
                    .unwrap();
                continue;
            }
            writeln!(f, "line-{i}").unwrap();
        }
        f.flush().unwrap();
    });
    writer.join().unwrap();
    let done = wait_until(Duration::from_secs(60), || {
        sink("rename").lock().unwrap().len() >= N
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop(tok, h).await;
    assert!(
        done,
        "only {} of {N} lines arrived",
        sink("rename").lock().unwrap().len()
    );
    assert_exactly_once(&logs("rename"), N);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copytruncate_rotation_reads_the_new_content_from_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("ct.log");
    std::fs::write(&log, "").unwrap();
    let pattern = format!("{}/*.log", dir.path().display());
    let p = build(
        &[
            ("Path", &pattern),
            ("Read_from_Head", "On"),
            ("Refresh_Interval", "1"),
        ],
        "ct",
        &[],
    );
    let (tok, h) = start(p);
    const N: usize = 60_000;
    const EVERY: usize = 15_000;
    let written = Arc::new(Mutex::new(0usize));
    let mut i = 0;
    while i < N {
        // Write a burst, then copytruncate once the agent has read it (copytruncate loses
        // whatever a reader has not read before the truncate; that is inherent to it).
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        let mut burst = String::new();
        for j in i..(i + EVERY).min(N) {
            burst.push_str(&format!("line-{j}\n"));
        }
        f.write_all(burst.as_bytes()).unwrap();
        i = (i + EVERY).min(N);
        *written.lock().unwrap() = i;
        let target = i;
        assert!(
            wait_until(Duration::from_secs(30), || sink("ct").lock().unwrap().len()
                >= target)
            .await,
            "agent did not catch up before the truncate"
        );
        if i < N {
            std::fs::copy(&log, dir.path().join(format!("ct.log.{i}"))).unwrap();
            std::fs::OpenOptions::new()
                .write(true)
                .open(&log)
                .unwrap()
                .set_len(0)
                .unwrap();
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop(tok, h).await;
    assert_exactly_once(&logs("ct"), N);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_mode_joins_16k_splits_and_parser_docker_sets_time() {
    let dir = tempfile::tempdir().unwrap();
    let big = "x".repeat(16 * 1024);
    let mut text = String::new();
    text.push_str(&format!(
        "{{\"log\":\"{big}\",\"stream\":\"stdout\",\"time\":\"2024-05-01T10:00:00.000000001Z\"}}\n"
    ));
    text.push_str(&format!(
        "{{\"log\":\"{big}\",\"stream\":\"stdout\",\"time\":\"2024-05-01T10:00:00.000000002Z\"}}\n"
    ));
    text.push_str(
        "{\"log\":\"end\\n\",\"stream\":\"stdout\",\"time\":\"2024-05-01T10:00:00.000000003Z\"}\n",
    );
    text.push_str(
        "{\"log\":\"next\\n\",\"stream\":\"stderr\",\"time\":\"2024-05-01T10:00:01Z\"}\n",
    );
    text.push_str("this is not json\n");
    std::fs::write(dir.path().join("d.log"), &text).unwrap();
    let pattern = format!("{}/*.log", dir.path().display());
    let p = build(
        &[
            ("Path", &pattern),
            ("Read_from_Head", "On"),
            ("Parser", "docker"),
            ("Docker_Mode", "On"),
            ("Buffer_Max_Size", "64k"),
            ("Exit_On_Eof", "On"),
        ],
        "docker",
        &[],
    );
    let reason = tokio::time::timeout(Duration::from_secs(20), p.run(CancellationToken::new()))
        .await
        .unwrap();
    assert_eq!(reason, StopReason::InputExit);
    let got = records("docker");
    assert_eq!(
        got.len(),
        3,
        "{:?}",
        logs("docker").iter().map(|l| l.len()).collect::<Vec<_>>()
    );
    let first = got[0].1.body.get("log").and_then(Value::as_str).unwrap();
    assert_eq!(first.len(), 2 * 16 * 1024 + 4);
    assert!(first.ends_with("xend\n"));
    assert_eq!(
        got[0].1.time,
        logferry_tail::format::parse_rfc3339("2024-05-01T10:00:00.000000001Z").unwrap()
    );
    assert_eq!(
        got[0].1.body.get("time"),
        Some(&Value::from("2024-05-01T10:00:00.000000001Z")),
        "Time_Keep"
    );
    assert_eq!(got[1].1.body.get("log"), Some(&Value::from("next\n")));
    assert_eq!(
        got[2].1.body.get("log"),
        Some(&Value::from("this is not json")),
        "malformed line passed on"
    );
    let tag = &got[0].0;
    assert!(tag.starts_with("t.") && tag.ends_with(".d.log"), "{tag}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cri_partials_are_joined_per_stream() {
    let dir = tempfile::tempdir().unwrap();
    let text = "\
2024-05-01T10:00:00.000000001Z stdout P Exception in thread \"main\" java.lang.RuntimeException: \n\
2024-05-01T10:00:00.000000002Z stderr F an error line\n\
2024-05-01T10:00:00.000000003Z stdout P Something has gone wrong\n\
2024-05-01T10:00:00.000000004Z stdout F , aborting!\n\
2024-05-01T10:00:01Z stdout F plain\n";
    std::fs::write(dir.path().join("c.log"), text).unwrap();
    let pattern = format!("{}/*.log", dir.path().display());
    let p = build(
        &[
            ("Path", &pattern),
            ("Read_from_Head", "On"),
            ("multiline.parser", "docker, cri"),
            ("Exit_On_Eof", "On"),
        ],
        "cri",
        &[],
    );
    tokio::time::timeout(Duration::from_secs(20), p.run(CancellationToken::new()))
        .await
        .unwrap();
    assert_eq!(
        logs("cri"),
        [
            "an error line",
            "Exception in thread \"main\" java.lang.RuntimeException: Something has gone wrong, aborting!",
            "plain"
        ]
    );
    let joined = &records("cri")[1].1;
    assert_eq!(joined.body.get("stream"), Some(&Value::from("stdout")));
    assert_eq!(joined.body.get("_p"), Some(&Value::from("F")));
    assert_eq!(
        joined.time,
        logferry_tail::format::parse_rfc3339("2024-05-01T10:00:00.000000001Z").unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_lines_are_skipped_or_cut_never_the_file() {
    captured_log();
    let dir = tempfile::tempdir().unwrap();
    let long = "L".repeat(100_000);
    std::fs::write(dir.path().join("a.log"), format!("before\n{long}\nafter\n")).unwrap();
    let pattern = format!("{}/a.log", dir.path().display());
    let p = build(
        &[
            ("Path", &pattern),
            ("Read_from_Head", "On"),
            ("Skip_Long_Lines", "On"),
            ("Exit_On_Eof", "On"),
        ],
        "skip",
        &[],
    );
    tokio::time::timeout(Duration::from_secs(20), p.run(CancellationToken::new()))
        .await
        .unwrap();
    assert_eq!(logs("skip"), ["before", "after"]);

    let p = build(
        &[
            ("Path", &pattern),
            ("Read_from_Head", "On"),
            ("Buffer_Max_Size", "1k"),
            ("Exit_On_Eof", "On"),
        ],
        "cut",
        &[],
    );
    tokio::time::timeout(Duration::from_secs(20), p.run(CancellationToken::new()))
        .await
        .unwrap();
    let got = logs("cut");
    assert_eq!(got.len(), 3);
    assert_eq!(got[1], "L".repeat(1024));
    assert_eq!(got[2], "after");

    // Truncate_Long_Lines wins over Skip_Long_Lines, as in Fluent Bit 5.1; each is counted
    // under Fluent Bit's metric.
    let p = build(
        &[
            ("Path", &pattern),
            ("Read_from_Head", "On"),
            ("Buffer_Max_Size", "1k"),
            ("Skip_Long_Lines", "On"),
            ("Truncate_Long_Lines", "On"),
            ("Exit_On_Eof", "On"),
        ],
        "cut_both",
        &[],
    );
    let m = logferry_engine::metrics::Metrics::list(&p.metrics.inputs)[0].clone();
    tokio::time::timeout(Duration::from_secs(20), p.run(CancellationToken::new()))
        .await
        .unwrap();
    assert_eq!(logs("cut_both")[1], "L".repeat(1024));
    let counter = |name: &str| {
        m.extras()
            .into_iter()
            .find(|e| e.name == name)
            .map(|e| e.value.load(std::sync::atomic::Ordering::Relaxed))
    };
    assert_eq!(counter("fluentbit_input_long_line_truncated"), Some(1));
    assert_eq!(counter("fluentbit_input_long_line_skipped"), Some(0));
}

/// Docker pieces and CRI `P` lines that never end, on real files: each joined message stops
/// at `[SERVICE] multiline_buffer_limit` (its first bytes, emitted at once; the rest of its
/// pieces dropped), counted in `fluentbit_input_multiline_truncated_total` and logged, while
/// the ordinary line after it in another stream arrives whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joined_messages_stop_at_multiline_buffer_limit() {
    captured_log();
    let dir = tempfile::tempdir().unwrap();
    let piece = "p".repeat(16 * 1024);
    let mut docker = String::new();
    let mut cri = String::new();
    for _ in 0..640 {
        docker.push_str(&format!(
            "{{\"log\":\"{piece}\",\"stream\":\"stdout\",\"time\":\"2024-01-02T03:04:05Z\"}}\n"
        ));
        cri.push_str(&format!("2024-01-02T03:04:05Z stdout P {piece}\n"));
    }
    docker.push_str(
        "{\"log\":\"other\\n\",\"stream\":\"stderr\",\"time\":\"2024-01-02T03:04:05Z\"}\n",
    );
    cri.push_str("2024-01-02T03:04:05Z stderr F other\n");
    std::fs::write(dir.path().join("docker.log"), docker).unwrap();
    std::fs::write(dir.path().join("cri.log"), cri).unwrap();
    let pattern = format!("{}/*.log", dir.path().display());
    let mut sections = vec![
        section(
            SectionKind::Service,
            &[
                ("Flush", "0.05"),
                ("Grace", "2"),
                ("multiline_buffer_limit", "256k"),
            ],
        ),
        section(
            SectionKind::Input,
            &[
                ("Name", "tail"),
                ("Tag", "t.*"),
                ("Path", &pattern),
                ("Read_from_Head", "On"),
                ("multiline.parser", "docker, cri"),
                ("Exit_On_Eof", "On"),
            ],
        ),
        section(
            SectionKind::Output,
            &[("Name", "collect"), ("Match", "*"), ("sink", "capped")],
        ),
    ];
    let p = Pipeline::build(config(std::mem::take(&mut sections)), &registry()).unwrap();
    let m = logferry_engine::metrics::Metrics::list(&p.metrics.inputs)[0].clone();
    common::run_to_end(p).await;
    let mut got = logs("capped");
    got.sort_by_key(String::len);
    assert_eq!(got.len(), 4, "two cut messages and two ordinary lines");
    assert_eq!(&got[..2], ["other", "other\n"]);
    for cut in &got[2..] {
        assert_eq!(cut.len(), 256 * 1024);
        assert!(cut.bytes().all(|b| b == b'p'));
    }
    let truncated = m
        .extras()
        .into_iter()
        .find(|e| e.name == "fluentbit_input_multiline_truncated")
        .map(|e| e.value.load(std::sync::atomic::Ordering::Relaxed));
    assert_eq!(truncated, Some(2));
    assert_eq!(
        captured_log()
            .matches("multiline message truncated due to buffer limit")
            .count(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_from_a_db_written_with_fluent_bits_schema() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("fb.log");
    let mut text = String::new();
    for i in 0..100 {
        text.push_str(&format!("line-{i}\n"));
    }
    std::fs::write(&log, &text).unwrap();
    // Fluent Bit stopped after line-59: its offset points at the start of line-60.
    let offset = text.find("line-60\n").unwrap();
    let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&log).unwrap());
    let db_path = dir.path().join("flb_kube.db");
    {
        let c = rusqlite::Connection::open(&db_path).unwrap();
        c.execute_batch(
            "CREATE TABLE in_tail_files (id INTEGER PRIMARY KEY, name TEXT NOT NULL, offset INTEGER, inode INTEGER, created INTEGER, rotated INTEGER DEFAULT 0, offset_marker INTEGER DEFAULT 0, offset_marker_size INTEGER DEFAULT 0);",
        )
        .unwrap();
        c.execute(
            "INSERT INTO in_tail_files (name, offset, inode, created) VALUES (?1, ?2, ?3, 1700000000)",
            rusqlite::params![log.to_string_lossy(), offset as i64, inode as i64],
        )
        .unwrap();
    }
    let pattern = format!("{}/*.log", dir.path().display());
    let db = db_path.to_string_lossy().to_string();
    let p = build(
        &[("Path", &pattern), ("DB", &db), ("Exit_On_Eof", "On")],
        "fbdb",
        &[],
    );
    tokio::time::timeout(Duration::from_secs(20), p.run(CancellationToken::new()))
        .await
        .unwrap();
    let got = logs("fbdb");
    assert_eq!(got.first().map(String::as_str), Some("line-60"));
    assert_eq!(got.len(), 40, "no line read twice, none skipped");
    let c = rusqlite::Connection::open(&db_path).unwrap();
    let (n, off): (i64, i64) = c
        .query_row("SELECT COUNT(*), MAX(offset) FROM in_tail_files", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(
        (n, off),
        (1, text.len() as i64),
        "offset saved after delivery, same row reused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_moves_only_after_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("ack.log");
    std::fs::write(&log, "one\ntwo\n").unwrap();
    let db_path = dir.path().join("ack.db");
    let pattern = format!("{}/*.log", dir.path().display());
    let db = db_path.to_string_lossy().to_string();
    let p = build(
        &[("Path", &pattern), ("DB", &db), ("Read_from_Head", "On")],
        "ack",
        &[("gate", "ack")],
    );
    let (tok, h) = start(p);
    let saved = |p: &Path| -> Option<i64> {
        let c = rusqlite::Connection::open(p).ok()?;
        c.query_row("SELECT offset FROM in_tail_files", [], |r| r.get(0))
            .ok()
    };
    // Read but not delivered: the offset stays at 0.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(saved(&db_path), Some(0));
    gate("ack").add_permits(100);
    assert!(
        wait_until(Duration::from_secs(10), || saved(&db_path) == Some(8)).await,
        "offset after delivery"
    );
    stop(tok, h).await;
    assert_eq!(logs("ack"), ["one", "two"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_files_each_get_their_own_tag() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..1000 {
        std::fs::write(
            dir.path().join(format!("pod{i}_ns_c-{i:064}.log")),
            format!("a{i}\nb{i}\n"),
        )
        .unwrap();
    }
    let pattern = format!("{}/*.log", dir.path().display());
    let p = build(
        &[
            ("Path", &pattern),
            ("Read_from_Head", "On"),
            ("Exit_On_Eof", "On"),
            ("Path_Key", "file"),
        ],
        "many",
        &[],
    );
    tokio::time::timeout(Duration::from_secs(60), p.run(CancellationToken::new()))
        .await
        .unwrap();
    let got = records("many");
    assert_eq!(got.len(), 2000);
    let tags: std::collections::HashSet<_> = got.iter().map(|(t, _)| t.clone()).collect();
    assert_eq!(tags.len(), 1000);
    for (tag, r) in &got {
        let file = r.body.get("file").and_then(Value::as_str).unwrap();
        assert!(
            tag.ends_with(&file.replace('/', ".")[1..]),
            "{tag} vs {file}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_files_are_found_and_read_from_the_start() {
    let dir = tempfile::tempdir().unwrap();
    append(&dir.path().join("old.log"), "existing\n");
    let pattern = format!("{}/*.log", dir.path().display());
    // Refresh_Interval is long: discovery must come from inotify.
    let p = build(
        &[("Path", &pattern), ("Refresh_Interval", "60")],
        "newfiles",
        &[],
    );
    let (tok, h) = start(p);
    tokio::time::sleep(Duration::from_millis(300)).await;
    append(&dir.path().join("old.log"), "appended\n");
    append(&dir.path().join("new.log"), "first\nsecond\n");
    let ok = wait_until(Duration::from_secs(10), || {
        sink("newfiles").lock().unwrap().len() >= 3
    })
    .await;
    stop(tok, h).await;
    assert!(ok, "{:?}", logs("newfiles"));
    let mut got = logs("newfiles");
    got.sort();
    assert_eq!(
        got,
        ["appended", "first", "second"],
        "existing content is skipped without Read_from_Head"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_parser_structures_lines_and_passes_others_on() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("n.log"),
        "10.1.128.166 - - [19/Dec/2019:17:41:12 +0000] \"GET / HTTP/1.1\" 200 612 \"-\" \"hey/0.0.1\" \"52.95.4.2\"\nnot an access line\n",
    )
    .unwrap();
    let pattern = format!("{}/*.log", dir.path().display());
    let p = build(
        &[
            ("Path", &pattern),
            ("Read_from_Head", "On"),
            ("Parser", "nginx"),
            ("Exit_On_Eof", "On"),
        ],
        "named",
        &[],
    );
    tokio::time::timeout(Duration::from_secs(20), p.run(CancellationToken::new()))
        .await
        .unwrap();
    let got = records("named");
    assert_eq!(got.len(), 2);
    let r = &got[0].1;
    assert_eq!(r.body.get("remote"), Some(&Value::from("10.1.128.166")));
    assert_eq!(r.body.get("code"), Some(&Value::from("200")));
    assert_eq!(r.body.get("agent"), Some(&Value::from("hey/0.0.1")));
    assert_eq!(
        r.time.as_millis(),
        1_576_777_272_000,
        "time from the parsed line"
    );
    assert_eq!(
        got[1].1.body.get("log"),
        Some(&Value::from("not an access line"))
    );
}

/// A Java stack trace written as CRI partial lines becomes one record (`multiline.parser cri,
/// java`): CRI partials are joined first, then the java rules join the lines of the trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_stack_trace_split_across_cri_partials_becomes_one_record() {
    let dir = tempfile::tempdir().unwrap();
    let text = "\
2024-05-01T10:00:00.000000001Z stdout P Exception in thread \"main\" java.lang.RuntimeException: \n\
2024-05-01T10:00:00.000000002Z stdout F Something has gone wrong, aborting!\n\
2024-05-01T10:00:00.000000003Z stdout F     at com.myproject.module.MyProject.badMethod(MyProject.java:22)\n\
2024-05-01T10:00:00.000000004Z stdout P     at com.myproject.module.MyProject.oneMoreMethod(\n\
2024-05-01T10:00:00.000000005Z stdout F MyProject.java:18)\n\
2024-05-01T10:00:00.000000006Z stdout F     at com.myproject.module.MyProject.main(MyProject.java:6)\n\
2024-05-01T10:00:01Z stdout F another line\n";
    std::fs::write(dir.path().join("j.log"), text).unwrap();
    let pattern = format!("{}/*.log", dir.path().display());
    let p = build(
        &[
            ("Path", &pattern),
            ("Read_from_Head", "On"),
            ("multiline.parser", "cri, java"),
            ("Exit_On_Eof", "On"),
        ],
        "java",
        &[],
    );
    tokio::time::timeout(Duration::from_secs(20), p.run(CancellationToken::new()))
        .await
        .unwrap();
    let got = logs("java");
    assert_eq!(got.len(), 2, "{got:#?}");
    assert_eq!(
        got[0],
        "Exception in thread \"main\" java.lang.RuntimeException: Something has gone wrong, aborting!\n    at com.myproject.module.MyProject.badMethod(MyProject.java:22)\n    at com.myproject.module.MyProject.oneMoreMethod(MyProject.java:18)\n    at com.myproject.module.MyProject.main(MyProject.java:6)"
    );
    assert_eq!(got[1], "another line");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclude_ignore_older_tag_regex_offset_key_key_and_empty_lines() {
    let dir = tempfile::tempdir().unwrap();
    let id = "b90a89309ac90fff2972822c66f11736933000c5aa6376dff0c11a441fa427ee";
    std::fs::write(
        dir.path().join(format!("web-1_prod_nginx-{id}.log")),
        "first\n\nsecond\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("skip.gz.log"), "excluded\n").unwrap();
    let old = dir.path().join("old.log");
    std::fs::write(&old, "too old\n").unwrap();
    // Two hours ago: older than Ignore_Older 1h.
    let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(7200);
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(two_hours_ago)
        .unwrap();
    let pattern = format!("{}/*.log", dir.path().display());
    let p_in = vec![
        ("Name", "tail"),
        ("Tag", "k8s.<namespace_name>.<pod_name>.<container_name>"),
        (
            "Tag_Regex",
            r"(?<pod_name>[a-z0-9-]+)_(?<namespace_name>[^_]+)_(?<container_name>.+)-(?<docker_id>[a-z0-9]{64})\.log$",
        ),
        ("Path", pattern.as_str()),
        ("Exclude_Path", "*.gz.log, *.zip"),
        ("Ignore_Older", "1h"),
        ("Read_from_Head", "On"),
        ("Exit_On_Eof", "On"),
        ("Offset_Key", "offset"),
        ("Key", "message"),
        ("Skip_Empty_Lines", "On"),
    ];
    let c = config(vec![
        section(SectionKind::Service, &[("Flush", "0.05")]),
        section(SectionKind::Input, &p_in),
        section(
            SectionKind::Output,
            &[("Name", "collect"), ("Match", "*"), ("sink", "opts")],
        ),
    ]);
    let p = Pipeline::build(c, &registry()).unwrap();
    let metrics = std::sync::Arc::clone(&p.metrics);
    tokio::time::timeout(Duration::from_secs(20), p.run(CancellationToken::new()))
        .await
        .unwrap();
    let got = records("opts");
    assert_eq!(
        got.len(),
        2,
        "only the matching, recent file; its empty line skipped"
    );
    assert!(
        got.iter().all(|(t, _)| t == "k8s.prod.web-1.nginx"),
        "{:?}",
        got.iter().map(|(t, _)| t).collect::<Vec<_>>()
    );
    assert_eq!(
        got[0].1.body.get("message"),
        Some(&Value::from("first")),
        "Key names the raw line's key"
    );
    assert_eq!(got[0].1.body.get("offset"), Some(&Value::Int(0)));
    assert_eq!(
        got[1].1.body.get("offset"),
        Some(&Value::Int(7)),
        "offset of the line's start"
    );
    let input = logferry_engine::metrics::Metrics::list(&metrics.inputs)[0].clone();
    let opened = input
        .extras()
        .into_iter()
        .find(|e| e.name == "fluentbit_input_files_opened")
        .unwrap();
    assert_eq!(
        opened.value.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "files opened"
    );
}
