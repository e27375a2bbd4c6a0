//! Issue 13, "lose nothing under real faults", for the tail input: a destination that is down
//! (a `collect` output held by a gate) pauses tail at a small `Mem_Buf_Limit` while files are
//! rotated and deleted; `Rotated_Hold_Limit`; stale DB rows; rotated leftovers keep their tag; a
//! last line without a newline; Fluent Bit 5.x's offset marker; joined messages across a
//! `kill`-like stop. Every test counts lines lost and duplicated exactly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::{build, build_with, captured_log, logs, records, run_to_end, start, stop};
use logferry_core::config::SectionKind;
use logferry_core::Value;
use logferry_engine::metrics::{Metrics, PluginMetrics};
use logferry_engine::testing::{gate, section, sink, wait_until};
use logferry_engine::{CancellationToken, Pipeline};

fn count(name: &str) -> usize {
    sink(name).lock().unwrap().len()
}

/// Line `i` as the writers here write it (about 130 bytes, so a few hundred fill 32k).
fn line(i: usize) -> String {
    format!("line-{i:07} {}", "x".repeat(116))
}

/// Writes lines `range` to a new file at `path`; returns its size.
fn write_lines(path: &Path, range: std::ops::Range<usize>) -> u64 {
    let mut text = String::new();
    for i in range {
        text.push_str(&line(i));
        text.push('\n');
    }
    let mut f = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
    text.len() as u64
}

fn index_of(l: &str) -> usize {
    l.strip_prefix("line-")
        .and_then(|r| r.get(..7))
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| panic!("unexpected line {l:?}"))
}

/// Exact accounting of lines `0..n`: which were lost and how many copies were extra; also
/// checks that lines of each of `files` (index ranges) came in order.
fn account(got: &[String], n: usize, files: &[std::ops::Range<usize>]) -> (Vec<usize>, usize) {
    let mut seen = vec![0u32; n];
    let mut last: Vec<Option<usize>> = vec![None; files.len()];
    for l in got {
        let i = index_of(l);
        assert!(i < n, "line {i} was never written");
        seen[i] += 1;
        if seen[i] > 1 {
            continue;
        }
        if let Some(f) = files.iter().position(|r| r.contains(&i)) {
            if let Some(p) = last[f] {
                assert!(i > p, "line {i} after {p}: out of order within its file");
            }
            last[f] = Some(i);
        }
    }
    let lost = (0..n).filter(|&i| seen[i] == 0).collect();
    let dup = seen.iter().map(|&c| c.saturating_sub(1) as usize).sum();
    (lost, dup)
}

fn input_metrics(p: &Pipeline) -> Arc<PluginMetrics> {
    Arc::clone(&Metrics::list(&p.metrics.inputs)[0])
}

fn extra(m: &PluginMetrics, name: &str) -> u64 {
    m.extras()
        .into_iter()
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("no metric {name}"))
        .value
        .load(Ordering::Relaxed)
}

fn inode(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().ino()
}

/// `(name, offset, rotated)` of the `in_tail_files` row for `ino`, read as another process would.
fn db_row(db: &Path, ino: u64) -> Option<(String, i64, bool)> {
    let c = rusqlite::Connection::open(db).ok()?;
    c.query_row(
        "SELECT name, offset, rotated FROM in_tail_files WHERE inode=?1 ORDER BY id DESC LIMIT 1",
        [ino as i64],
        |r| Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? != 0)),
    )
    .ok()
}

/// The measured loss of issue 13: during an outage, a file created, rotated away and deleted
/// while tail was paused was never opened, and a rotated file was closed after Rotate_Wait
/// before it was read. Now tail keeps discovering and following files while paused, keeps
/// rotated and deleted files open until they are read, and every line arrives exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_tail_follows_two_rotations_and_deletions_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    let db = dir.path().join("t.db");
    const N1: usize = 5000;
    const N2: usize = 3000;
    const N3: usize = 2000;
    let size1 = write_lines(&log, 0..N1);
    let pattern = format!("{}/*.log", dir.path().display());
    let dbs = db.to_string_lossy().to_string();
    let p = build(
        &[
            ("Path", &pattern),
            ("DB", &dbs),
            ("Read_from_Head", "On"),
            ("Refresh_Interval", "1"),
            ("Rotate_Wait", "1"),
            ("Mem_Buf_Limit", "32k"),
        ],
        "paused",
        &[("gate", "paused")],
    );
    let m = input_metrics(&p);
    let (tok, h) = start(p);
    assert!(
        wait_until(Duration::from_secs(10), || m.paused.load(Ordering::Relaxed)
            >= 1)
        .await,
        "the input pauses at its Mem_Buf_Limit while the destination is down"
    );
    let ino1 = inode(&log);

    // Rotation 1, while paused: the new file is discovered (a DB row) and the old one is
    // recorded as rotated.
    std::fs::rename(&log, dir.path().join("app.log.1")).unwrap();
    let size2 = write_lines(&log, N1..N1 + N2);
    let ino2 = inode(&log);
    assert!(
        wait_until(Duration::from_secs(10), || {
            db_row(&db, ino2).is_some()
                && db_row(&db, ino1).is_some_and(|(n, _, r)| r && n.ends_with("app.log.1"))
        })
        .await,
        "while paused: new file opened and rotation recorded ({:?}, {:?})",
        db_row(&db, ino1),
        db_row(&db, ino2)
    );
    // Rotation 2, then kubelet deletes both rotated files.
    std::fs::rename(&log, dir.path().join("app.log.2")).unwrap();
    write_lines(&log, N1 + N2..N1 + N2 + N3);
    let ino3 = inode(&log);
    assert!(
        wait_until(Duration::from_secs(10), || {
            db_row(&db, ino3).is_some()
                && db_row(&db, ino2).is_some_and(|(n, _, r)| r && n.ends_with("app.log.2"))
        })
        .await,
        "second rotation followed while paused"
    );
    std::fs::remove_file(dir.path().join("app.log.1")).unwrap();
    std::fs::remove_file(dir.path().join("app.log.2")).unwrap();

    // Well past Rotate_Wait (1 s): still paused, nothing delivered, nothing closed, and the
    // unread bytes of the two rotated files are what the gauge shows.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(count("paused"), 0, "the destination is still down");
    assert!(m.paused.load(Ordering::Relaxed) >= 1);
    assert_eq!(
        extra(&m, "fluentbit_input_files_closed"),
        0,
        "rotated files not read to their end stay open past Rotate_Wait"
    );
    assert_eq!(extra(&m, "fluentbit_input_files_rotated"), 2);
    let held = extra(&m, "tail_rotated_held_bytes");
    assert!(
        held > size2 && held <= size1 + size2,
        "held {held}: all of file 2 ({size2}) and the unread part of file 1 ({size1})"
    );

    // The destination is back.
    gate("paused").add_permits(1);
    let total = N1 + N2 + N3;
    let all = wait_until(Duration::from_secs(60), || count("paused") >= total).await;
    let closed = wait_until(Duration::from_secs(10), || {
        extra(&m, "fluentbit_input_files_closed") == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop(tok, h).await;
    assert!(all, "only {} of {total} lines arrived", count("paused"));
    let (lost, dup) = account(
        &logs("paused"),
        total,
        &[0..N1, N1..N1 + N2, N1 + N2..total],
    );
    assert_eq!((lost.len(), dup), (0, 0), "lost {lost:?}, duplicated {dup}");
    assert!(closed, "both rotated files closed once read");
    assert_eq!(extra(&m, "tail_rotated_held_bytes"), 0);
    assert_eq!(extra(&m, "tail_rotated_dropped_bytes"), 0);
}

/// Rotated and deleted files pin disk space while they wait to be read: past
/// `Rotated_Hold_Limit` the oldest is closed, and exactly its unread bytes are dropped, counted
/// and logged; the rest loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_hold_limit_closes_the_oldest_and_counts_exactly_what_it_drops() {
    captured_log();
    let dir = tempfile::tempdir().unwrap();
    const NA: usize = 5000;
    const NB: usize = 1000;
    const NC: usize = 300;
    write_lines(&dir.path().join("a.log"), 0..NA);
    let pattern = format!("{}/*.log", dir.path().display());
    let db = dir.path().join("h.db");
    let dbs = db.to_string_lossy().to_string();
    let p = build(
        &[
            ("Path", &pattern),
            ("DB", &dbs),
            ("Read_from_Head", "On"),
            ("Refresh_Interval", "1"),
            ("Rotate_Wait", "1"),
            ("Mem_Buf_Limit", "32k"),
            ("Rotated_Hold_Limit", "100k"),
        ],
        "hold",
        &[("gate", "hold")],
    );
    let m = input_metrics(&p);
    let (tok, h) = start(p);
    assert!(
        wait_until(Duration::from_secs(10), || m.paused.load(Ordering::Relaxed)
            >= 1)
        .await
    );
    // Two files appear during the outage: b (about 130 KB, over the limit on its own) and
    // c (about 39 KB).
    let b = dir.path().join("b.log");
    let c = dir.path().join("c.log");
    let size_b = write_lines(&b, NA..NA + NB);
    let size_c = write_lines(&c, NA + NB..NA + NB + NC);
    let (ino_b, ino_c) = (inode(&b), inode(&c));
    assert!(
        wait_until(Duration::from_secs(10), || db_row(&db, ino_b).is_some()
            && db_row(&db, ino_c).is_some())
        .await,
        "both opened while paused"
    );
    // b is rotated away and deleted: more than the limit, so it is closed at once.
    std::fs::rename(&b, dir.path().join("b.log.1")).unwrap();
    std::fs::remove_file(dir.path().join("b.log.1")).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || extra(
            &m,
            "tail_rotated_dropped_files"
        ) == 1)
        .await,
        "b closed at the limit"
    );
    assert_eq!(
        extra(&m, "tail_rotated_dropped_bytes"),
        size_b,
        "exactly b's unread bytes (all of it: it was never read)"
    );
    let logged = captured_log();
    assert!(
        logged.lines().any(|l| l.contains("Rotated_Hold_Limit")
            && l.contains(&b.display().to_string())
            && l.contains(&format!("bytes={size_b}"))),
        "the drop is logged with file, bytes and reason"
    );
    // c is rotated too: under the limit, it is held, and the gauge says how much.
    std::fs::rename(&c, dir.path().join("c.log.1")).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || extra(
            &m,
            "tail_rotated_held_bytes"
        ) == size_c)
        .await,
        "gauge {} != c's {size_c} unread bytes",
        extra(&m, "tail_rotated_held_bytes")
    );
    assert_eq!(extra(&m, "tail_rotated_dropped_files"), 1);

    gate("hold").add_permits(1);
    let want = NA + NC;
    let all = wait_until(Duration::from_secs(60), || count("hold") >= want).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop(tok, h).await;
    assert!(all, "only {} of {want} lines arrived", count("hold"));
    let total = NA + NB + NC;
    let (lost, dup) = account(&logs("hold"), total, &[0..NA, NA..NA + NB, NA + NB..total]);
    assert_eq!(dup, 0, "duplicated");
    assert_eq!(
        lost,
        (NA..NA + NB).collect::<Vec<_>>(),
        "exactly b's {NB} lines are lost, nothing else"
    );
}

/// Fluent Bit's purge after the first scan; the offset marker guarding a reused inode; a
/// rotated leftover still drained.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_rows_are_purged_after_the_first_scan_and_a_reused_inode_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let write = |name: &str, prefix: &str, n: usize| -> (PathBuf, String) {
        let p = d.join(name);
        let text: String = (0..n).map(|i| format!("{prefix}-{i}\n")).collect();
        std::fs::write(&p, &text).unwrap();
        (p, text)
    };
    let (a, a_text) = write("a.log", "a", 10);
    let (b, _) = write("b.log", "b", 5);
    let (c1, c_text) = write("c.log.1", "c", 6);
    let (d1, d_text) = write("d.log.1", "d", 3);
    let a_off = a_text.find("a-3\n").unwrap() as u64;
    let c_off = c_text.find("c-2\n").unwrap() as u64;
    let marker = |p: &Path, off: u64| {
        logferry_tail::marker::Marker::at(&std::fs::File::open(p).unwrap(), off).unwrap()
    };
    let db = d.join("p.db");
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch(
            "CREATE TABLE in_tail_files (id INTEGER PRIMARY KEY, name TEXT NOT NULL, offset INTEGER, inode INTEGER, created INTEGER, rotated INTEGER DEFAULT 0, offset_marker INTEGER DEFAULT 0, offset_marker_size INTEGER DEFAULT 0);
             CREATE TABLE logferry_tail_files (id INTEGER PRIMARY KEY, inode INTEGER NOT NULL, path TEXT NOT NULL);",
        )
        .unwrap();
        let ins = |name: &str, off: u64, ino: u64, rotated: i64, m: (u64, u64)| {
            c.execute(
                "INSERT INTO in_tail_files (name, offset, inode, created, rotated, offset_marker, offset_marker_size) VALUES (?1, ?2, ?3, 1700000000, ?4, ?5, ?6)",
                rusqlite::params![name, off as i64, ino as i64, rotated, m.0 as i64, m.1 as i64],
            )
            .unwrap();
            c.last_insert_rowid()
        };
        let ma = marker(&a, a_off);
        ins(
            &a.to_string_lossy(),
            a_off,
            inode(&a),
            0,
            (ma.hash, ma.size),
        );
        // A file that is gone.
        ins("/gone.log", 5, 4_000_000_017, 0, (0, 0));
        // b's inode belonged to another file: the stored marker does not match b's bytes.
        ins("/nowhere/old.log", 4, inode(&b), 0, (0x1234, 32));
        // A rotated file left unfinished, with the path it had (logferry's table).
        let mc = marker(&c1, c_off);
        let id = ins(
            &c1.to_string_lossy(),
            c_off,
            inode(&c1),
            1,
            (mc.hash, mc.size),
        );
        c.execute(
            "INSERT INTO logferry_tail_files (id, inode, path) VALUES (?1, ?2, ?3)",
            rusqlite::params![id, inode(&c1) as i64, d.join("c.log").to_string_lossy()],
        )
        .unwrap();
        // A rotated file read to its end.
        let md = marker(&d1, d_text.len() as u64);
        ins(
            &d1.to_string_lossy(),
            d_text.len() as u64,
            inode(&d1),
            1,
            (md.hash, md.size),
        );
    }
    let pattern = format!("{}/*.log", d.display());
    let dbs = db.to_string_lossy().to_string();
    run_to_end(build(
        &[
            ("Path", &pattern),
            ("DB", &dbs),
            ("Exit_On_Eof", "On"),
            ("Path_Key", "file"),
        ],
        "purge",
        &[],
    ))
    .await;
    let mut got = logs("purge");
    got.sort();
    let mut want: Vec<String> = (3..10).map(|i| format!("a-{i}")).collect();
    want.extend((0..5).map(|i| format!("b-{i}")));
    want.extend((2..6).map(|i| format!("c-{i}")));
    want.sort();
    assert_eq!(
        got, want,
        "a resumes at its offset, b (reused inode) starts over, c's leftover is drained"
    );
    let c_tag = format!("t{}", d.join("c.log").to_string_lossy().replace('/', "."));
    for (tag, r) in records("purge") {
        let l = r.body.get("log").and_then(Value::as_str).unwrap();
        if l.starts_with("c-") {
            assert_eq!(
                tag, c_tag,
                "the leftover keeps the tag of its original path"
            );
            assert_eq!(
                r.body.get("file").and_then(Value::as_str),
                Some(d.join("c.log").to_string_lossy().as_ref())
            );
        }
    }
    let c = rusqlite::Connection::open(&db).unwrap();
    let inodes: Vec<i64> = c
        .prepare("SELECT inode FROM in_tail_files ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        inodes,
        [inode(&a) as i64, inode(&b) as i64, inode(&c1) as i64],
        "the gone file's and the finished rotated file's rows are purged"
    );
    assert_eq!(
        db_row(&db, inode(&b)).map(|r| r.1),
        Some(20),
        "b was read from 0 to its end"
    );
}

/// A file rotated while logferry was down before delivering it is drained at the next start
/// under the tag and Path_Key of the path it had, not its rotated name, and the DB keeps
/// Fluent Bit's table as Fluent Bit knows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_leftover_keeps_the_tag_of_its_original_path() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    write_lines(&log, 0..100);
    let pattern = format!("{}/*.log", dir.path().display());
    let db = dir.path().join("o.db");
    let dbs = db.to_string_lossy().to_string();
    let input = [
        ("Path", pattern.as_str()),
        ("DB", dbs.as_str()),
        ("Read_from_Head", "On"),
        ("Rotate_Wait", "30"),
        ("Path_Key", "file"),
    ];
    let p = build(&input, "orig1", &[("gate", "orig1")]);
    let m = input_metrics(&p);
    let (tok, h) = start(p);
    let ino = inode(&log);
    assert!(
        wait_until(Duration::from_secs(10), || m
            .records
            .load(Ordering::Relaxed)
            == 100)
        .await,
        "read (not delivered)"
    );
    std::fs::rename(&log, dir.path().join("app.log.1")).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || {
            db_row(&db, ino).is_some_and(|(n, _, r)| r && n.ends_with("app.log.1"))
        })
        .await
    );
    stop(tok, h).await;
    assert_eq!(count("orig1"), 0, "nothing was delivered before the stop");

    let mut input2 = input.to_vec();
    input2.push(("Exit_On_Eof", "On"));
    run_to_end(build(&input2, "orig2", &[])).await;
    let got = records("orig2");
    let (lost, dup) = account(&logs("orig2"), 100, std::slice::from_ref(&(0..100)));
    assert_eq!((lost.len(), dup), (0, 0), "lost {lost:?}, duplicated {dup}");
    let want_tag = format!("t{}", log.to_string_lossy().replace('/', "."));
    for (tag, r) in &got {
        assert_eq!(tag, &want_tag);
        assert_eq!(
            r.body.get("file").and_then(Value::as_str),
            Some(log.to_string_lossy().as_ref())
        );
    }
    // Fluent Bit's table has exactly its own columns.
    let c = rusqlite::Connection::open(&db).unwrap();
    let cols: Vec<String> = c
        .prepare("PRAGMA table_info(in_tail_files)")
        .unwrap()
        .query_map([], |r| r.get(1))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        cols,
        [
            "id",
            "name",
            "offset",
            "inode",
            "created",
            "rotated",
            "offset_marker",
            "offset_marker_size"
        ]
    );
}

/// A last line without a newline is emitted at Exit_On_Eof and when a rotated or deleted file is
/// closed, and the offset covers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_last_line_without_a_newline_is_emitted_at_exit_and_at_close() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("eof.log");
    std::fs::write(&f, "one\ntwo\nthree").unwrap();
    let db = dir.path().join("e.db");
    let dbs = db.to_string_lossy().to_string();
    let pattern = f.to_string_lossy().to_string();
    run_to_end(build(
        &[
            ("Path", &pattern),
            ("DB", &dbs),
            ("Read_from_Head", "On"),
            ("Exit_On_Eof", "On"),
        ],
        "noeol",
        &[],
    ))
    .await;
    assert_eq!(logs("noeol"), ["one", "two", "three"]);
    assert_eq!(
        db_row(&db, inode(&f)).map(|r| r.1),
        Some(13),
        "offset past the last line"
    );

    // A file rotated away (and one deleted), each ending without a newline.
    let d2 = dir.path().join("live");
    std::fs::create_dir(&d2).unwrap();
    let pattern = format!("{}/*.log", d2.display());
    let p = build(
        &[
            ("Path", &pattern),
            ("Read_from_Head", "On"),
            ("Rotate_Wait", "1"),
            ("Refresh_Interval", "1"),
        ],
        "noeol2",
        &[],
    );
    let m = input_metrics(&p);
    let (tok, h) = start(p);
    std::fs::write(d2.join("r.log"), "r-a\nr-b\nr-last").unwrap();
    std::fs::write(d2.join("x.log"), "x-a\nx-last").unwrap();
    assert!(wait_until(Duration::from_secs(10), || count("noeol2") == 3).await);
    std::fs::rename(d2.join("r.log"), d2.join("r.log.1")).unwrap();
    std::fs::remove_file(d2.join("x.log")).unwrap();
    let closed = wait_until(Duration::from_secs(10), || {
        extra(&m, "fluentbit_input_files_closed") == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop(tok, h).await;
    assert!(closed);
    let mut got = logs("noeol2");
    got.sort();
    assert_eq!(got, ["r-a", "r-b", "r-last", "x-a", "x-last"], "each once");
}

/// Fluent Bit 5.1.1's rule for trusting a saved offset (`flb_tail_file_offset_marker_matches`),
/// written out here from its semantics: a stored marker size of 0 or an offset of 0 is
/// trusted; otherwise the XXH3-64 of the `min(offset, 32)` bytes before the offset must equal
/// the stored marker (bound as a signed integer) and the size must equal that window.
fn fluent_bit_trusts(file: &Path, offset: i64, marker: i64, marker_size: i64) -> bool {
    if offset <= 0 || marker_size == 0 {
        return true;
    }
    let bytes = std::fs::read(file).unwrap();
    let window = offset.min(32);
    if offset as usize > bytes.len() || marker_size != window {
        return false;
    }
    let hashed = &bytes[(offset - window) as usize..offset as usize];
    logferry_tail::marker::xxh3_64(hashed) == Some(marker as u64)
}

fn db_marker(db: &Path, ino: u64) -> (i64, i64, i64) {
    let c = rusqlite::Connection::open(db).unwrap();
    c.query_row(
        "SELECT offset, offset_marker, offset_marker_size FROM in_tail_files WHERE inode=?1",
        [ino as i64],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .unwrap()
}

/// A DB logferry used is taken over by Fluent Bit 5.1.1 without re-reading: every offset
/// logferry writes carries the marker Fluent Bit checks. Before, logferry moved `offset` but
/// left the marker Fluent Bit had written for an older offset, so Fluent Bit distrusted the
/// row and read the file again from the start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_logferry_writes_pass_fluent_bits_marker_check() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("fb.log");
    let text: String = (0..100).map(|i| format!("line-{i:07} fb\n")).collect();
    std::fs::write(&a, &text).unwrap();
    let old = text.find("line-0000010").unwrap() as u64;
    let ma = logferry_tail::marker::Marker::at(&std::fs::File::open(&a).unwrap(), old).unwrap();
    let db = dir.path().join("m.db");
    {
        // The row as Fluent Bit 5.1.1 left it after line 9.
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch(
            "CREATE TABLE in_tail_files (id INTEGER PRIMARY KEY, name TEXT NOT NULL, offset INTEGER, inode INTEGER, created INTEGER, rotated INTEGER DEFAULT 0, offset_marker INTEGER DEFAULT 0, offset_marker_size INTEGER DEFAULT 0);",
        )
        .unwrap();
        c.execute(
            "INSERT INTO in_tail_files (name, offset, inode, created, offset_marker, offset_marker_size) VALUES (?1, ?2, ?3, 1700000000, ?4, 32)",
            rusqlite::params![a.to_string_lossy(), old as i64, inode(&a) as i64, ma.hash as i64],
        )
        .unwrap();
    }
    assert!(fluent_bit_trusts(&a, old as i64, ma.hash as i64, 32));
    // A file logferry finds first, read from its end (Read_from_Head off), then appended to.
    let b = dir.path().join("new.log");
    std::fs::write(&b, "before-1\nbefore-2\n").unwrap();
    let pattern = format!("{}/*.log", dir.path().display());
    let dbs = db.to_string_lossy().to_string();
    let p = build(&[("Path", &pattern), ("DB", &dbs)], "marker", &[]);
    let (tok, h) = start(p);
    assert!(wait_until(Duration::from_secs(10), || count("marker") == 90).await);
    let (off_b, mb, sb) = db_marker(&db, inode(&b));
    assert_eq!(off_b, 18, "inserted at its end");
    assert!(
        fluent_bit_trusts(&b, off_b, mb, sb) && sb == 18,
        "an inserted row carries its marker"
    );
    std::fs::OpenOptions::new()
        .append(true)
        .open(&b)
        .unwrap()
        .write_all(b"after-1\n")
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || db_marker(&db, inode(&b)).0
            == 26)
        .await
    );
    stop(tok, h).await;
    assert_eq!(logs("marker").len(), 91, "90 of fb.log, 1 of new.log");
    for (f, size) in [(&a, text.len() as i64), (&b, 26)] {
        let (off, mk, ms) = db_marker(&db, inode(f));
        assert_eq!(off, size, "{}: offset at the end", f.display());
        assert_eq!(ms, off.min(32), "{}: the marker window", f.display());
        assert_ne!(mk, 0, "{}: a marker was written", f.display());
        assert!(
            fluent_bit_trusts(f, off, mk, ms),
            "{}: Fluent Bit 5.1.1 would trust offset {off} (marker {mk:#x})",
            f.display()
        );
    }
}

/// What a destination is sent per message, and how often.
fn tally(got: &[String]) -> std::collections::BTreeMap<String, usize> {
    let mut t = std::collections::BTreeMap::new();
    for l in got {
        *t.entry(l.clone()).or_insert(0) += 1;
    }
    t
}

/// Pipeline 1 reads a file ending in the middle of a joined message and delivers what is
/// complete; it is then killed (its task aborted, nothing flushed); the rest of the message is
/// written and pipeline 2 resumes on the same DB. The offset never passed the message being
/// assembled: it arrives once, whole. Lines of another stream after its start are read again
/// (at-least-once): exactly those are duplicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cri_partials_and_multiline_survive_a_kill_mid_message() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("k.log");
    let part1 = "\
2024-05-01T10:00:00.000000001Z stdout F msg-0\n\
2024-05-01T10:00:00.000000002Z stdout P Exception in thread \"main\" \n\
2024-05-01T10:00:00.000000003Z stdout F java.lang.RuntimeException: boom\n\
2024-05-01T10:00:00.000000004Z stdout F     at a.b.C.one(C.java:1)\n\
2024-05-01T10:00:00.000000005Z stderr F err-1\n\
2024-05-01T10:00:00.000000006Z stdout P     at a.b.C.tw\n";
    let part2 = "\
2024-05-01T10:00:00.000000007Z stdout F o(C.java:2)\n\
2024-05-01T10:00:00.000000008Z stdout F     at a.b.C.three(C.java:3)\n\
2024-05-01T10:00:00.000000009Z stdout F msg-1\n\
2024-05-01T10:00:00.000000010Z stderr F err-2\n";
    std::fs::write(&f, part1).unwrap();
    let message_start = part1.find("2024-05-01T10:00:00.000000002Z").unwrap() as i64;
    let pattern = f.to_string_lossy().to_string();
    let db = dir.path().join("k.db");
    let dbs = db.to_string_lossy().to_string();
    // A java-like multiline parser whose flush timeout outlasts the test: the message is still
    // being assembled when pipeline 1 is killed, however slow the machine.
    let trace = || {
        section(
            SectionKind::MultilineParser,
            &[
                ("name", "trace"),
                ("type", "regex"),
                ("flush_timeout", "600000"),
                ("rule", r#""start_state" "/^Exception/" "cont""#),
                ("rule", r#""cont" "/^\s+at /" "cont""#),
            ],
        )
    };
    let input = [
        ("Path", pattern.as_str()),
        ("DB", dbs.as_str()),
        ("Read_from_Head", "On"),
        ("multiline.parser", "cri, trace"),
    ];
    let p = build_with(&input, "kill1", &[], vec![trace()]);
    let h = tokio::spawn(p.run(CancellationToken::new()));
    let offset = || db_row(&db, inode(&f)).map(|r| r.1);
    let settled = wait_until(Duration::from_secs(10), || {
        count("kill1") == 2 && offset() == Some(message_start)
    })
    .await;
    h.abort();
    let _ = h.await;
    assert!(
        settled,
        "delivered {:?}, offset {:?}",
        logs("kill1"),
        offset()
    );
    assert_eq!(logs("kill1"), ["msg-0", "err-1"]);
    assert_eq!(
        offset(),
        Some(message_start),
        "the offset stays at the start of the message being assembled"
    );

    std::fs::OpenOptions::new()
        .append(true)
        .open(&f)
        .unwrap()
        .write_all(part2.as_bytes())
        .unwrap();
    let mut input2 = input.to_vec();
    input2.push(("Exit_On_Eof", "On"));
    run_to_end(build_with(&input2, "kill2", &[], vec![trace()])).await;
    let mut all = logs("kill1");
    all.extend(logs("kill2"));
    let t = tally(&all);
    let whole = "Exception in thread \"main\" java.lang.RuntimeException: boom\n    at a.b.C.one(C.java:1)\n    at a.b.C.two(C.java:2)\n    at a.b.C.three(C.java:3)";
    let want: std::collections::BTreeMap<String, usize> = [
        ("msg-0", 1),
        ("err-1", 2),
        (whole, 1),
        ("msg-1", 1),
        ("err-2", 1),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(
        t, want,
        "0 lost; 1 duplicated (err-1, a stderr line after the stdout message's start)"
    );
}

/// The same with Docker's 16 KiB splits (`Docker_Mode`): a message split across the kill is
/// read again from its first piece and arrives once, whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_splits_survive_a_kill_mid_message() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("d.log");
    let piece = |log: &str, stream: &str, n: u32| {
        format!(
            "{{\"log\":\"{log}\",\"stream\":\"{stream}\",\"time\":\"2024-05-01T10:00:00.{n:09}Z\"}}\n"
        )
    };
    let x = "x".repeat(16 * 1024);
    let y = "y".repeat(16 * 1024);
    let part1 = format!(
        "{}{}{}",
        piece("first\\n", "stdout", 1),
        piece(&x, "stdout", 2),
        piece("err-a\\n", "stderr", 3)
    );
    let part2 = format!("{}{}", piece(&y, "stdout", 4), piece("end\\n", "stdout", 5));
    std::fs::write(&f, &part1).unwrap();
    let message_start = piece("first\\n", "stdout", 1).len() as i64;
    let pattern = f.to_string_lossy().to_string();
    let db = dir.path().join("d.db");
    let dbs = db.to_string_lossy().to_string();
    let input = [
        ("Path", pattern.as_str()),
        ("DB", dbs.as_str()),
        ("Read_from_Head", "On"),
        ("Parser", "docker"),
        ("Docker_Mode", "On"),
        ("Docker_Mode_Flush", "600"),
        ("Buffer_Max_Size", "64k"),
    ];
    let p = build(&input, "dkill1", &[]);
    let h = tokio::spawn(p.run(CancellationToken::new()));
    let offset = || db_row(&db, inode(&f)).map(|r| r.1);
    let settled = wait_until(Duration::from_secs(10), || {
        count("dkill1") == 2 && offset() == Some(message_start)
    })
    .await;
    h.abort();
    let _ = h.await;
    assert!(
        settled,
        "delivered {:?}, offset {:?}",
        logs("dkill1"),
        offset()
    );
    std::fs::OpenOptions::new()
        .append(true)
        .open(&f)
        .unwrap()
        .write_all(part2.as_bytes())
        .unwrap();
    let mut input2 = input.to_vec();
    input2.push(("Exit_On_Eof", "On"));
    run_to_end(build(&input2, "dkill2", &[])).await;
    let mut all = logs("dkill1");
    all.extend(logs("dkill2"));
    let t = tally(&all);
    let whole = format!("{x}{y}end\n");
    let want: std::collections::BTreeMap<String, usize> = [
        ("first\n".to_string(), 1),
        ("err-a\n".to_string(), 2),
        (whole, 1),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        t.iter().map(|(k, v)| (k.len(), *v)).collect::<Vec<_>>(),
        want.iter().map(|(k, v)| (k.len(), *v)).collect::<Vec<_>>(),
        "0 lost; 1 duplicated (err-a, after the split message's start)"
    );
    assert_eq!(t, want);
}

/// Sets the DB's `last_seen` (when an agent last used it) as a stopped agent would have left
/// it, `ago` seconds before now (negative: in the future).
fn set_last_seen(db: &Path, ago: i64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let c = rusqlite::Connection::open(db).unwrap();
    c.execute(
        "INSERT INTO logferry_tail_state (key, value) VALUES ('last_seen', ?1) \
         ON CONFLICT(key) DO UPDATE SET value=excluded.value",
        [now - ago],
    )
    .unwrap();
}

/// kubelet rotated a log (or a pod started) while the agent was down: the new file has no
/// DB row and `Read_from_Head` is off, yet it is read from its start, because it was created
/// after the agent last used the DB. A file older than that is read from its end, as Fluent
/// Bit does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_appeared_while_the_agent_was_down_is_read_from_its_start() {
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("logs");
    std::fs::create_dir_all(&files).unwrap();
    let db = dir.path().join("offsets.db");
    let path = format!("{}/*.log", files.display());
    let db_s = db.display().to_string();
    let input = [
        ("Path", path.as_str()),
        ("DB", db_s.as_str()),
        ("Refresh_Interval", "1"),
    ];
    // A first run creates the DB (and its last_seen), then stops.
    let (s, h) = start(build(&input, "down_first", &[]));
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop(s, h).await;
    // The agent "was down" since 30 s ago; then a file appears.
    set_last_seen(&db, 30);
    write_lines(&files.join("new.log"), 0..50);
    let (s, h) = start(build(&input, "down_new", &[]));
    assert!(wait_until(Duration::from_secs(10), || count("down_new") == 50).await);
    stop(s, h).await;
    let (lost, dup) = account(&logs("down_new"), 50, std::slice::from_ref(&(0..50)));
    assert!(
        lost.is_empty() && dup == 0,
        "lost {lost:?}, duplicated {dup}"
    );

    // A file older than the agent's last run, not in the DB (it was excluded, say): from its
    // end, Fluent Bit's rule.
    write_lines(&files.join("old.log"), 50..60);
    set_last_seen(&db, -120);
    let (s, h) = start(build(&input, "down_old", &[]));
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(files.join("old.log"))
        .unwrap();
    writeln!(f, "{}", line(60)).unwrap();
    assert!(wait_until(Duration::from_secs(10), || count("down_old") >= 1).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop(s, h).await;
    let got: Vec<usize> = logs("down_old").iter().map(|l| index_of(l)).collect();
    assert_eq!(got, [60], "only what was written after the start");
}

/// kubelet rotated a log while the agent was down, with /var/log/containers' layout (a
/// symlink to the pod's `0.log`): the rotated file's unread lines are read at the next start,
/// then the new file from its start. Exactly once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_rotated_while_the_agent_was_down_is_read_to_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let containers = dir.path().join("containers");
    let pod = dir.path().join("pods/default_app_0/app");
    std::fs::create_dir_all(&containers).unwrap();
    std::fs::create_dir_all(&pod).unwrap();
    let current = pod.join("0.log");
    write_lines(&current, 0..100);
    std::os::unix::fs::symlink(&current, containers.join("app.log")).unwrap();
    let db = dir.path().join("offsets.db");
    let path = format!("{}/*.log", containers.display());
    let db_s = db.display().to_string();
    let input = [
        ("Path", path.as_str()),
        ("DB", db_s.as_str()),
        ("Read_from_Head", "On"),
    ];
    let (s, h) = start(build(&input, "rwd_first", &[]));
    assert!(wait_until(Duration::from_secs(10), || count("rwd_first") == 100).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop(s, h).await;
    // While the agent is down: more lines, kubelet's rotation, lines in the new file.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&current)
        .unwrap();
    for i in 100..150 {
        writeln!(f, "{}", line(i)).unwrap();
    }
    drop(f);
    std::fs::rename(&current, pod.join("0.log.20261129-120000")).unwrap();
    write_lines(&current, 150..200);
    let (s, h) = start(build(&input, "rwd_second", &[]));
    assert!(wait_until(Duration::from_secs(10), || count("rwd_second") >= 100).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop(s, h).await;
    let got = logs("rwd_second");
    let idx: Vec<usize> = got.iter().map(|l| index_of(l)).collect();
    assert_eq!(idx, (100..200).collect::<Vec<_>>(), "each once, in order");
}
