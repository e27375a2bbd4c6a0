//! The `systemd` input on real journal files. Each test writes its entries in the journal export
//! format and has Debian's `systemd-journal-remote` turn them into a journal file (compressed
//! where fields are large, as journald writes them), then runs the input through the engine into
//! the engine's `collect` test output, or reads rounds with [`JournalReader`] directly.
//!
//! Needs `systemd-journal-remote` (`apt-get install systemd-journal-remote`; `.ci/run` installs
//! it): without it these tests fail and say so.

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers of an integration test are test code

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use logferry_core::config::{Section, SectionKind};
use logferry_core::{EventTime, Record, Value};
use logferry_engine::testing::{attempts, config, outage, section, sink, wait_until, COLLECT};
use logferry_engine::{CancellationToken, Pipeline, Registry, StopReason};
use logferry_inputs::in_systemd::{JournalReader, SystemdOptions, SystemdSettings, PLUGIN};

const BOOT_ID: &str = "0123456789abcdef0123456789abcdef";
/// Realtime of the first entry a test writes, in microseconds.
const T0: u64 = 1_700_000_000_000_000;

fn journal_remote() -> PathBuf {
    for p in [
        "/lib/systemd/systemd-journal-remote",
        "/usr/lib/systemd/systemd-journal-remote",
    ] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!(
        "systemd-journal-remote is missing: the systemd input's tests make their journal files \
         with it. Install Debian's package `systemd-journal-remote` (.ci/run does)."
    );
}

/// One journal entry: its realtime timestamp (µs) and its fields in order.
struct Entry {
    usec: u64,
    fields: Vec<(String, Vec<u8>)>,
}

fn entry(n: u64, fields: &[(&str, &str)]) -> Entry {
    Entry {
        usec: T0 + n * 1_000,
        fields: fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect(),
    }
}

/// `n` numbered entries (`MESSAGE=msg <i>`, `N=<i>`) of `unit`, from `first`.
fn numbered(first: u64, n: u64, unit: &str) -> Vec<Entry> {
    (first..first + n)
        .map(|i| {
            entry(
                i,
                &[
                    ("MESSAGE", &format!("msg {i}")),
                    ("N", &i.to_string()),
                    ("_SYSTEMD_UNIT", unit),
                ],
            )
        })
        .collect()
}

/// An entry's monotonic timestamp (µs): distinct per entry, so a cursor names its entry by it.
fn monotonic(usec: u64) -> u64 {
    1_000 + usec - T0
}

/// The `m=` part of the cursor of numbered entry `n`.
fn cursor_mark(n: u64) -> String {
    format!(";m={:x};", monotonic(T0 + n * 1_000))
}

/// The entries in the journal export format (binary form for values with a newline).
fn export(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        write!(
            out,
            "__REALTIME_TIMESTAMP={}\n__MONOTONIC_TIMESTAMP={}\n_BOOT_ID={BOOT_ID}\n",
            e.usec,
            monotonic(e.usec)
        )
        .unwrap();
        for (k, v) in &e.fields {
            if v.contains(&b'\n') {
                out.extend_from_slice(k.as_bytes());
                out.push(b'\n');
                out.extend_from_slice(&(v.len() as u64).to_le_bytes());
                out.extend_from_slice(v);
                out.push(b'\n');
            } else {
                out.extend_from_slice(k.as_bytes());
                out.push(b'=');
                out.extend_from_slice(v);
                out.push(b'\n');
            }
        }
        out.push(b'\n');
    }
    out
}

/// Appends `entries` to the journal file `dir/name.journal` (created when missing) with
/// systemd-journal-remote, within 20 s.
fn write_journal(dir: &Path, name: &str, entries: &[Entry]) {
    let out = dir.join(format!("{name}.journal"));
    let mut child = Command::new(journal_remote())
        .arg("-o")
        .arg(&out)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start systemd-journal-remote");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&export(entries))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            assert!(status.success(), "systemd-journal-remote failed: {err}");
            assert!(
                err.contains(&format!("writing {} entries", entries.len())),
                "systemd-journal-remote wrote something else: {err}"
            );
            return;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("systemd-journal-remote did not finish within 20 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn registry() -> Registry {
    Registry {
        inputs: vec![&PLUGIN],
        filters: vec![],
        outputs: vec![&COLLECT],
        planned: &[],
    }
}

/// systemd (Path `dir`, plus `input`) into a `collect` output named `sink_name` (plus
/// `extra_out`).
fn pipeline(
    dir: &Path,
    input: &[(&str, &str)],
    sink_name: &str,
    extra_out: &[(&str, &str)],
) -> Pipeline {
    let path = dir.display().to_string();
    let mut inp = vec![("Name", "systemd"), ("Path", path.as_str())];
    inp.extend_from_slice(input);
    let mut out = vec![("Name", "collect"), ("Match", "*"), ("sink", sink_name)];
    out.extend_from_slice(extra_out);
    let sections: Vec<Section> = vec![
        section(SectionKind::Service, &[("Flush", "0.05"), ("Grace", "2")]),
        section(SectionKind::Input, &inp),
        section(SectionKind::Output, &out),
    ];
    Pipeline::build(config(sections), &registry()).unwrap()
}

struct Running {
    stop: CancellationToken,
    handle: tokio::task::JoinHandle<StopReason>,
}

fn start(p: Pipeline) -> Running {
    let stop = CancellationToken::new();
    let handle = tokio::spawn(p.run(stop.clone()));
    Running { stop, handle }
}

impl Running {
    /// Stops it, within 15 s.
    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(15), self.handle)
            .await
            .expect("the pipeline stops within 15 s")
            .unwrap();
    }
}

fn records(name: &str) -> Vec<(String, Record)> {
    sink(name).lock().unwrap().clone()
}

fn string(r: &Record, key: &str) -> String {
    r.body
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or("<none>")
        .to_string()
}

/// Waits (at most `secs`) until the sink has `n` records, then a little more to see that no
/// more come; returns them.
async fn collect_exactly(name: &str, n: usize, secs: u64) -> Vec<(String, Record)> {
    let got = wait_until(Duration::from_secs(secs), || {
        sink(name).lock().unwrap().len() >= n
    })
    .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = records(name);
    assert!(got, "expected {n} records within {secs} s, got {}", r.len());
    assert_eq!(r.len(), n, "no more than {n} records");
    r
}

/// The `N` field of every record, in order.
fn numbers(recs: &[(String, Record)]) -> Vec<u64> {
    recs.iter()
        .map(|(_, r)| string(r, "N").parse().unwrap())
        .collect()
}

fn db_cursor(db: &Path) -> Option<String> {
    let conn = rusqlite::Connection::open(db).ok()?;
    conn.query_row("SELECT cursor FROM in_systemd_cursor LIMIT 1", [], |r| {
        r.get(0)
    })
    .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_become_records_with_fields_as_keys_and_the_realtime_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let entries = vec![
        entry(
            0,
            &[
                ("MESSAGE", "first"),
                ("PRIORITY", "6"),
                ("_SYSTEMD_UNIT", "a.service"),
                ("_PID", "42"),
            ],
        ),
        entry(
            1,
            &[
                ("MESSAGE", "line one\nline two"),
                ("TAG", "x"),
                ("TAG", "y"),
            ],
        ),
    ];
    write_journal(dir.path(), "system", &entries);
    let run = start(pipeline(dir.path(), &[], "shape", &[]));
    let got = collect_exactly("shape", 2, 10).await;
    run.stop().await;

    // No Tag: the instance name, as Fluent Bit's default tag.
    assert!(got.iter().all(|(t, _)| t == "systemd.0"), "{got:?}");
    let (_, first) = &got[0];
    assert_eq!(first.time, EventTime((T0 * 1_000) as i64));
    assert_eq!(string(first, "MESSAGE"), "first");
    assert_eq!(string(first, "PRIORITY"), "6");
    assert_eq!(string(first, "_SYSTEMD_UNIT"), "a.service");
    assert_eq!(string(first, "_PID"), "42");
    assert_eq!(string(first, "_BOOT_ID"), BOOT_ID);
    let (_, second) = &got[1];
    assert_eq!(second.time, EventTime(((T0 + 1_000) * 1_000) as i64));
    assert_eq!(string(second, "MESSAGE"), "line one\nline two");
    // A field repeated in an entry is an array of its values.
    assert_eq!(
        second.body.get("TAG"),
        Some(&Value::Array(vec!["x".into(), "y".into()]))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_star_in_the_tag_becomes_the_unit_or_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let entries = vec![
        entry(0, &[("MESSAGE", "a1"), ("_SYSTEMD_UNIT", "a.service")]),
        entry(1, &[("MESSAGE", "a2"), ("_SYSTEMD_UNIT", "a.service")]),
        entry(2, &[("MESSAGE", "b1"), ("_SYSTEMD_UNIT", "b.service")]),
        entry(3, &[("MESSAGE", "none")]),
        entry(4, &[("MESSAGE", "a3"), ("_SYSTEMD_UNIT", "a.service")]),
    ];
    write_journal(dir.path(), "system", &entries);
    let run = start(pipeline(dir.path(), &[("Tag", "host.*.log")], "tags", &[]));
    let got = collect_exactly("tags", 5, 10).await;
    run.stop().await;
    let mut pairs: Vec<(String, String)> = got
        .iter()
        .map(|(t, r)| (string(r, "MESSAGE"), t.clone()))
        .collect();
    pairs.sort();
    assert_eq!(
        pairs,
        vec![
            ("a1".to_string(), "host.a.service.log".to_string()),
            ("a2".into(), "host.a.service.log".into()),
            ("a3".into(), "host.a.service.log".into()),
            ("b1".into(), "host.b.service.log".into()),
            ("none".into(), "host.unknown.log".into()),
        ]
    );
}

fn filter_entries() -> Vec<Entry> {
    vec![
        entry(
            0,
            &[
                ("MESSAGE", "a-err"),
                ("_SYSTEMD_UNIT", "a.service"),
                ("PRIORITY", "3"),
            ],
        ),
        entry(
            1,
            &[
                ("MESSAGE", "a-info"),
                ("_SYSTEMD_UNIT", "a.service"),
                ("PRIORITY", "6"),
            ],
        ),
        entry(
            2,
            &[
                ("MESSAGE", "b-err"),
                ("_SYSTEMD_UNIT", "b.service"),
                ("PRIORITY", "3"),
            ],
        ),
        entry(
            3,
            &[
                ("MESSAGE", "c-info"),
                ("_SYSTEMD_UNIT", "c.service"),
                ("PRIORITY", "6"),
            ],
        ),
    ]
}

/// Runs the input with `filters` (and `kind` as Systemd_Filter_Type when given) over
/// [`filter_entries`]; returns the messages read, sorted.
async fn filtered(name: &str, filters: &[&str], kind: Option<&str>, expect: usize) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    write_journal(dir.path(), "system", &filter_entries());
    let mut input: Vec<(&str, &str)> = filters.iter().map(|f| ("Systemd_Filter", *f)).collect();
    if let Some(k) = kind {
        input.push(("Systemd_Filter_Type", k));
    }
    let run = start(pipeline(dir.path(), &input, name, &[]));
    let got = collect_exactly(name, expect, 10).await;
    run.stop().await;
    let mut m: Vec<String> = got.iter().map(|(_, r)| string(r, "MESSAGE")).collect();
    m.sort();
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_combine_with_or_by_default_and_with_and_when_asked() {
    let or = filtered("f-or", &["_SYSTEMD_UNIT=a.service", "PRIORITY=3"], None, 3).await;
    assert_eq!(or, ["a-err", "a-info", "b-err"]);
    let or_same_field = filtered(
        "f-or-field",
        &["_SYSTEMD_UNIT=a.service", "_SYSTEMD_UNIT=c.service"],
        Some("Or"),
        3,
    )
    .await;
    assert_eq!(or_same_field, ["a-err", "a-info", "c-info"]);
    let and = filtered(
        "f-and",
        &["_SYSTEMD_UNIT=a.service", "PRIORITY=3"],
        Some("And"),
        1,
    )
    .await;
    assert_eq!(and, ["a-err"]);
    let one = filtered("f-one", &["_SYSTEMD_UNIT=b.service"], Some("and"), 1).await;
    assert_eq!(one, ["b-err"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lowercase_and_strip_underscores_rename_the_keys() {
    let dir = tempfile::tempdir().unwrap();
    write_journal(
        dir.path(),
        "system",
        &[entry(
            0,
            &[
                ("MESSAGE", "m"),
                ("_PID", "7"),
                ("SYSLOG_IDENTIFIER", "sshd"),
            ],
        )],
    );
    let run = start(pipeline(
        dir.path(),
        &[("Lowercase", "on"), ("Strip_Underscores", "true")],
        "keys",
        &[],
    ));
    let got = collect_exactly("keys", 1, 10).await;
    run.stop().await;
    let r = &got[0].1;
    // The journal lists an entry's fields in its own order: compare them sorted.
    let mut keys: Vec<&str> = r.body.iter().map(|(k, _)| k.as_str()).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["boot_id", "message", "pid", "syslog_identifier"]);
    assert_eq!(string(r, "pid"), "7");

    let run = start(pipeline(
        dir.path(),
        &[("Strip_Underscores", "on")],
        "keys-strip",
        &[],
    ));
    let got = collect_exactly("keys-strip", 1, 10).await;
    run.stop().await;
    let mut keys: Vec<&str> = got[0].1.body.iter().map(|(k, _)| k.as_str()).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["BOOT_ID", "MESSAGE", "PID", "SYSLOG_IDENTIFIER"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_from_tail_skips_what_is_there_and_reads_what_comes() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cursor.db");
    let journal = dir.path().join("journal");
    std::fs::create_dir(&journal).unwrap();
    write_journal(&journal, "system", &numbered(0, 5, "a.service"));
    let db_s = db.display().to_string();
    let run = start(pipeline(
        &journal,
        &[("Read_From_Tail", "on"), ("DB", &db_s)],
        "tail",
        &[],
    ));
    // With a DB, the starting position is committed at once: once it is there, the input has
    // positioned itself after entry 4.
    assert!(
        wait_until(Duration::from_secs(10), || db_cursor(&db).is_some()).await,
        "the starting cursor is saved"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(records("tail").is_empty(), "old entries are skipped");
    write_journal(&journal, "system", &numbered(5, 3, "a.service"));
    let got = collect_exactly("tail", 3, 10).await;
    run.stop().await;
    assert_eq!(numbers(&got), [5, 6, 7]);
}

#[test]
fn max_entries_bounds_each_round_and_large_rounds_stop_near_1_mb() {
    let dir = tempfile::tempdir().unwrap();
    write_journal(dir.path(), "system", &numbered(0, 12, "a.service"));
    let mut o = SystemdOptions::defaults().unwrap();
    o.path = Some(dir.path().display().to_string());
    o.max_entries = 5;
    let s = SystemdSettings::from_options(&o).unwrap();
    let (mut r, start) = JournalReader::open(s, "t", None, "systemd.0").unwrap();
    assert_eq!(start, None);
    let mut sizes = Vec::new();
    for _ in 0..10 {
        let round = r.read_round().unwrap();
        assert!(round.groups.len() <= 1, "one tag, one chunk per round");
        sizes.push(round.groups.iter().map(|g| g.records.len()).sum::<usize>());
        if round.drained {
            break;
        }
    }
    assert_eq!(sizes, [5, 5, 2]);

    // 100 KB messages: a round ends once it holds about 1 MB (Fluent Bit's limit per round).
    let big = tempfile::tempdir().unwrap();
    let msg = "y".repeat(100_000);
    let entries: Vec<Entry> = (0..15)
        .map(|i| entry(i, &[("MESSAGE", &msg), ("N", &i.to_string())]))
        .collect();
    write_journal(big.path(), "system", &entries);
    let mut o = SystemdOptions::defaults().unwrap();
    o.path = Some(big.path().display().to_string());
    let (mut r, _) =
        JournalReader::open(SystemdSettings::from_options(&o).unwrap(), "t", None, "x").unwrap();
    let first = r.read_round().unwrap();
    let n: usize = first.groups.iter().map(|g| g.records.len()).sum();
    assert!((10..=11).contains(&n), "first round held {n} entries");
    assert!(!first.drained);
    let second = r.read_round().unwrap();
    let m: usize = second.groups.iter().map(|g| g.records.len()).sum();
    assert_eq!(n + m, 15);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_fields_bounds_the_keys_of_a_record() {
    let dir = tempfile::tempdir().unwrap();
    write_journal(
        dir.path(),
        "system",
        &[entry(0, &[("A", "1"), ("B", "2"), ("C", "3"), ("D", "4")])],
    );
    let run = start(pipeline(dir.path(), &[("Max_Fields", "3")], "fields", &[]));
    let got = collect_exactly("fields", 1, 10).await;
    run.stop().await;
    // _BOOT_ID counts as a field too; which three the journal lists first is its own order.
    assert_eq!(got[0].1.body.len(), 3, "{:?}", got[0].1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_fields_stored_compressed_are_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let msg: String = (0..4_000).map(|i| format!("{:05} ", i % 97)).collect();
    write_journal(
        dir.path(),
        "system",
        &[entry(0, &[("MESSAGE", &msg), ("N", "0")])],
    );
    // journal-remote compresses large fields: the file must not hold the text as such.
    let file = std::fs::read(dir.path().join("system.journal")).unwrap();
    let probe = &msg.as_bytes()[..2_000];
    assert!(
        !file.windows(probe.len()).any(|w| w == probe),
        "the test needs the field stored compressed"
    );
    let run = start(pipeline(dir.path(), &[], "compressed", &[]));
    let got = collect_exactly("compressed", 1, 10).await;
    run.stop().await;
    assert_eq!(string(&got[0].1, "MESSAGE"), msg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn db_resumes_after_the_delivered_cursor_without_loss_or_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal");
    std::fs::create_dir(&journal).unwrap();
    let db = dir.path().join("cursor.db");
    let db_s = db.display().to_string();
    write_journal(&journal, "system", &numbered(0, 50, "a.service"));

    // Run 1: reads the 50, commits the last one's cursor once delivered, stops cleanly.
    let run = start(pipeline(
        &journal,
        &[("DB", &db_s), ("Max_Entries", "7")],
        "resume-1",
        &[],
    ));
    let got = collect_exactly("resume-1", 50, 20).await;
    assert_eq!(numbers(&got), (0..50).collect::<Vec<_>>());
    run.stop().await;
    let c1 = db_cursor(&db).expect("a cursor after run 1");
    assert!(
        c1.contains(&cursor_mark(49)),
        "the last entry's cursor: {c1}"
    );

    // While stopped, 30 more entries arrive.
    write_journal(&journal, "system", &numbered(50, 30, "a.service"));

    // Run 2: the destination is down, so nothing is delivered: the cursor must not move, and
    // the records are read again next time.
    let down = outage("resume-down");
    down.on.store(true, std::sync::atomic::Ordering::SeqCst);
    let run = start(pipeline(
        &journal,
        &[("DB", &db_s)],
        "resume-2",
        &[("outage", "resume-down")],
    ));
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    run.stop().await;
    assert!(records("resume-2").is_empty());
    assert!(
        attempts("resume-2") > 0,
        "run 2 read the new entries and tried to deliver them"
    );
    assert_eq!(
        db_cursor(&db).as_deref(),
        Some(c1.as_str()),
        "undelivered: cursor kept"
    );

    // Run 3: exactly the 30 new entries, in order.
    let run = start(pipeline(&journal, &[("DB", &db_s)], "resume-3", &[]));
    let got = collect_exactly("resume-3", 30, 20).await;
    run.stop().await;
    assert_eq!(numbers(&got), (50..80).collect::<Vec<_>>());
    let c3 = db_cursor(&db).unwrap();
    assert!(
        c3.contains(&cursor_mark(79)),
        "the last entry's cursor: {c3}"
    );

    // Run 4: nothing new, nothing read.
    let run = start(pipeline(&journal, &[("DB", &db_s)], "resume-4", &[]));
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    run.stop().await;
    assert!(
        records("resume-4").is_empty(),
        "no duplicates after a clean stop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_directory_and_a_malformed_journal_file_are_survived() {
    // Empty: nothing to read, no error; entries that arrive later are read.
    let dir = tempfile::tempdir().unwrap();
    let run = start(pipeline(dir.path(), &[], "empty", &[]));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(records("empty").is_empty());
    write_journal(dir.path(), "late", &numbered(0, 2, "a.service"));
    let got = collect_exactly("empty", 2, 10).await;
    run.stop().await;
    assert_eq!(numbers(&got), [0, 1]);

    // A file of garbage named like a journal beside a good one: libsystemd skips it.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("broken.journal"),
        b"LPKSHHRH not a journal at all",
    )
    .unwrap();
    std::fs::write(dir.path().join("zeros.journal"), vec![0u8; 4096]).unwrap();
    write_journal(dir.path(), "good", &numbered(0, 3, "a.service"));
    let run = start(pipeline(dir.path(), &[], "malformed", &[]));
    let got = collect_exactly("malformed", 3, 10).await;
    run.stop().await;
    assert_eq!(numbers(&got), [0, 1, 2]);

    // A journal file cut short in the middle: what can be read is read, and no panic.
    let dir = tempfile::tempdir().unwrap();
    write_journal(dir.path(), "cut", &numbered(0, 20, "a.service"));
    let file = dir.path().join("cut.journal");
    let len = std::fs::metadata(&file).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    f.set_len(len.min(8192)).unwrap();
    drop(f);
    let run = start(pipeline(dir.path(), &[], "cut", &[]));
    tokio::time::sleep(Duration::from_millis(800)).await;
    run.stop().await;
    let got = records("cut");
    assert_eq!(
        numbers(&got),
        (0..got.len() as u64).collect::<Vec<_>>(),
        "what is read of a cut file is its first entries, in order"
    );
}

#[test]
fn path_and_filter_errors_name_their_key() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let path = file.path().display().to_string();
    for (kv, key) in [
        (vec![("Path", path.as_str())], "Path"),
        (vec![("Path", "/nonexistent/dir")], "Path"),
        (vec![("Systemd_Filter", "no-equals")], "Systemd_Filter"),
        (vec![("Systemd_Filter_Type", "xor")], "Systemd_Filter_Type"),
        (vec![("DB.Sync", "always")], "DB.Sync"),
    ] {
        let mut inp = vec![("Name", "systemd")];
        inp.extend(kv);
        let sections = vec![
            section(SectionKind::Input, &inp),
            section(
                SectionKind::Output,
                &[("Name", "collect"), ("Match", "*"), ("sink", "err")],
            ),
        ];
        let errs = match Pipeline::build(config(sections), &registry()) {
            Ok(_) => panic!("{key}: expected an error"),
            Err(e) => e,
        };
        let text = format!("{errs:?}");
        assert!(text.contains(key), "{key}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fluent_bit_db_before_its_first_round_reads_from_the_head() {
    // Fluent Bit creates its table and inserts the row with the cursor "(null)" at start; it
    // saves a real cursor only after its first round.
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal");
    std::fs::create_dir(&journal).unwrap();
    write_journal(&journal, "system", &numbered(0, 4, "a.service"));
    let db = dir.path().join("fb.db");
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS in_systemd_cursor (  cursor  TEXT NOT NULL,  updated INTEGER);\
             INSERT INTO in_systemd_cursor (cursor, updated)  VALUES ('(null)', 1700000000);",
        )
        .unwrap();
    }
    let db_s = db.display().to_string();
    let run = start(pipeline(&journal, &[("DB", &db_s)], "fb-db", &[]));
    let got = collect_exactly("fb-db", 4, 10).await;
    run.stop().await;
    assert_eq!(numbers(&got), [0, 1, 2, 3]);
    let conn = rusqlite::Connection::open(&db).unwrap();
    let rows: i64 = conn
        .query_row("SELECT COUNT(*) FROM in_systemd_cursor", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 1, "one row, updated in place");
    assert!(db_cursor(&db).unwrap().contains(&cursor_mark(3)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_at_mem_buf_limit_it_stops_promptly_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal");
    std::fs::create_dir(&journal).unwrap();
    let db = dir.path().join("cursor.db");
    let db_s = db.display().to_string();
    write_journal(&journal, "system", &numbered(0, 200, "a.service"));

    // The destination is down and the buffer holds about one small chunk: the input pauses
    // (the reader thread waits on its channel) until the agent stops.
    let down = outage("paused-down");
    down.on.store(true, std::sync::atomic::Ordering::SeqCst);
    let run = start(pipeline(
        &journal,
        &[
            ("DB", &db_s),
            ("Max_Entries", "10"),
            ("Mem_Buf_Limit", "2k"),
        ],
        "paused-1",
        &[("outage", "paused-down")],
    ));
    assert!(
        wait_until(Duration::from_secs(10), || attempts("paused-1") > 0).await,
        "the first chunk reaches the output"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = Instant::now();
    run.stop().await;
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "stopped in {:?}",
        t.elapsed()
    );
    assert!(records("paused-1").is_empty());
    assert_eq!(db_cursor(&db), None, "nothing delivered, no cursor");

    // Back up: every entry exactly once.
    let run = start(pipeline(&journal, &[("DB", &db_s)], "paused-2", &[]));
    let got = collect_exactly("paused-2", 200, 20).await;
    run.stop().await;
    assert_eq!(numbers(&got), (0..200).collect::<Vec<_>>());
}
