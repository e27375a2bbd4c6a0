//! `systemd` input: reads journald's journal through libsystemd's `sd_journal` API (Fluent Bit's
//! `in_systemd`).
//!
//! Behaviour, as Fluent Bit 5.1 documents it and its plugin does:
//! - `Path` names a journal directory (every `*.journal` file in it); without it the local
//!   machine's journal is read (`SD_JOURNAL_LOCAL_ONLY`: system and user journals). A `Path`
//!   that does not exist or is not a directory is a configuration error.
//! - Each journal entry becomes one record: every field of the entry is a key with its value as
//!   a string, in the journal's field order; a field that occurs more than once in an entry
//!   becomes an array of its values, moved to the end of the record (as Fluent Bit's key list
//!   does). The record's time is the entry's realtime timestamp (`__REALTIME_TIMESTAMP`,
//!   microseconds). Fields beyond `Max_Fields` are left out. Values longer than libsystemd's
//!   data threshold (64 KiB, left at its default as Fluent Bit leaves it) are cut there by
//!   libsystemd.
//! - `Strip_Underscores` removes one leading `_` from each key (`_PID` → `PID`); `Lowercase`
//!   then lowercases it (ASCII).
//! - `Systemd_Filter FIELD=value` (repeatable) adds a journal match; with
//!   `Systemd_Filter_Type Or` (default) an entry is read when any filter matches, with `And`
//!   when all do (each filter is its own term: libsystemd's `sd_journal_add_disjunction` or
//!   `sd_journal_add_conjunction` after each match, as Fluent Bit does). A filter that is not
//!   `FIELD=value` with a valid journal field name is a configuration error (Fluent Bit fails to
//!   start on it too).
//! - A `*` in `Tag` is replaced by the entry's `_SYSTEMD_UNIT`, or `unknown` when it has none
//!   (`host.*` → `host.docker.service`). Consecutive entries with the same tag go in one chunk.
//! - `Read_From_Tail` starts after the last entry present at start; otherwise reading starts at
//!   the oldest entry. A cursor in `DB` takes precedence over both.
//! - At most `Max_Entries` entries (and about 1 MB of records) are read per round; each round is
//!   emitted as one chunk per run of equal tags.
//! - `DB` keeps the journal cursor in Fluent Bit's table, `in_systemd_cursor (cursor TEXT NOT
//!   NULL, updated INTEGER)`, one row, `updated` in Unix seconds; `DB.Sync` sets SQLite's
//!   `synchronous` pragma (`extra`, `full`, `normal`, `off`). Fluent Bit's DB and logferry's are
//!   interchangeable.
//!
//! Differences, where logferry is stricter or safer than Fluent Bit:
//! - The cursor is committed only after the chunk holding that entry, and every chunk before it,
//!   was delivered (or given up by an output), as `tail` commits offsets; a chunk abandoned at
//!   shutdown pins the cursor before it, so the next run reads it again. Fluent Bit saves the
//!   cursor as soon as a round is read, so entries still buffered at a crash are lost.
//! - With `Read_From_Tail` and a `DB` that has no cursor yet, the starting position is committed
//!   at once, so entries written while the agent is down after its first start are not skipped.
//! - On resume, the entry under the saved cursor is skipped only when it is still there (libsystemd's
//!   `sd_journal_test_cursor`); if it was vacuumed away, the next entry is read, not skipped.
//! - Rounds follow each other as fast as the pipeline takes them (`Mem_Buf_Limit` pauses
//!   reading); Fluent Bit, once caught up, reads at most `Max_Entries` per second.
//! - A `DB` that cannot be opened, or a `DB.Sync` value that is not one of the four, is an
//!   error (Fluent Bit logs it and goes on without a DB, or with SQLite's default).
//! - Values that are not UTF-8 are kept with invalid bytes replaced (U+FFFD): records hold text.
//! - Fluent Bit's workaround of skipping up to 350 entries after seeking to the tail (for a
//!   libsystemd bug fixed in systemd 240) is not applied.
//!
//! libsystemd's journal API blocks and its handle must stay on the thread that opened it, so a
//! dedicated thread owns the journal, reads rounds and hands them to the input's task over a
//! channel of one round: the thread waits there while the pipeline is paused.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use logferry_core::config::{ConfigError, Entry, Section};
use logferry_core::{options, DeliveryStatus, EventTime, Map, Record, Tag, Value};
use logferry_engine::{
    BuildContext, CancellationToken, Input, InputContext, InputExit, InputPlugin, PluginError,
};
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::mpsc;

use crate::key_error;

options! {
    /// Options of the `systemd` input.
    pub struct SystemdOptions for "systemd input" {
        /// Journal directory to read; unset: the local machine's journal.
        pub path: Option<String> = ["Path"] None,
        /// Most fields (keys) kept per record.
        pub max_fields: i64 = ["Max_Fields"] Some("8000"),
        /// Most journal entries read per round.
        pub max_entries: i64 = ["Max_Entries"] Some("5000"),
        /// How several Systemd_Filter combine: Or (any matches) or And (all match).
        pub systemd_filter_type: String = ["Systemd_Filter_Type"] Some("Or"),
        /// A journal match FIELD=value (repeatable).
        pub systemd_filter: Vec<String> = ["Systemd_Filter"] None,
        /// Start after the entries present at start instead of at the oldest entry.
        pub read_from_tail: bool = ["Read_From_Tail"] Some("false"),
        /// Lowercase the keys.
        pub lowercase: bool = ["Lowercase"] Some("false"),
        /// Remove one leading underscore from the keys (_PID becomes PID).
        pub strip_underscores: bool = ["Strip_Underscores"] Some("false"),
        /// SQLite synchronous mode of the DB: extra, full, normal or off.
        pub db_sync: String = ["DB.Sync"] Some("full"),
        /// SQLite file that keeps the journal cursor (committed after delivery).
        pub db: Option<String> = ["DB"] None,
    }
}

/// The registry entry.
pub static PLUGIN: InputPlugin = InputPlugin {
    name: "systemd",
    aliases: &[],
    description: "Systemd (Journal) reader",
    options: SystemdOptions::OPTIONS,
    default_workers: 1,
    build,
};

/// A round ends once its records add up to this many bytes (Fluent Bit's 1 MB per round).
const ROUND_BYTES: usize = 1_024_000;
/// How long the reader waits for journal changes before looking again (and at shutdown).
const WAIT: Duration = Duration::from_millis(250);
/// What a `*` in the tag becomes for entries without `_SYSTEMD_UNIT`.
const UNKNOWN_UNIT: &str = "unknown";

/// How the filters combine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterType {
    Or,
    And,
}

/// The options, checked.
#[derive(Clone, Debug)]
pub struct SystemdSettings {
    pub path: Option<PathBuf>,
    pub max_fields: usize,
    pub max_entries: usize,
    pub filter_type: FilterType,
    /// (field, value) of each `Systemd_Filter`, in order.
    pub filters: Vec<(String, String)>,
    pub read_from_tail: bool,
    pub lowercase: bool,
    pub strip_underscores: bool,
    /// SQLite's `synchronous` value.
    pub db_sync: &'static str,
    pub db: Option<PathBuf>,
}

/// Whether `name` is a journal field name libsystemd accepts in a match: 1 to 64 characters of
/// `A-Z`, `0-9` and `_`, not starting with a digit.
fn valid_field(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

impl SystemdSettings {
    /// Checks the options; an error names the Fluent Bit key at fault.
    pub fn from_options(o: &SystemdOptions) -> Result<Self, (&'static str, String)> {
        let path = match &o.path {
            Some(p) => {
                let p = PathBuf::from(p);
                match std::fs::metadata(&p) {
                    Ok(m) if m.is_dir() => Some(p),
                    Ok(_) => {
                        return Err(("Path", format!("not a directory: {}", p.display())));
                    }
                    Err(e) => return Err(("Path", format!("{}: {e}", p.display()))),
                }
            }
            None => None,
        };
        let filter_type = match o.systemd_filter_type.trim().to_ascii_lowercase().as_str() {
            "or" => FilterType::Or,
            "and" => FilterType::And,
            _ => {
                return Err((
                    "Systemd_Filter_Type",
                    format!("must be 'and' or 'or', got '{}'", o.systemd_filter_type),
                ))
            }
        };
        let mut filters = Vec::with_capacity(o.systemd_filter.len());
        for f in &o.systemd_filter {
            match f.split_once('=') {
                Some((field, value)) if valid_field(field) => {
                    filters.push((field.to_string(), value.to_string()));
                }
                _ => {
                    return Err((
                        "Systemd_Filter",
                        format!(
                            "invalid input '{f}': expected FIELD=value with FIELD of A-Z, 0-9 and _"
                        ),
                    ))
                }
            }
        }
        let db_sync = match o.db_sync.trim().to_ascii_lowercase().as_str() {
            "extra" => "EXTRA",
            "full" => "FULL",
            "normal" => "NORMAL",
            "off" => "OFF",
            _ => {
                return Err((
                    "DB.Sync",
                    format!("must be extra, full, normal or off, got '{}'", o.db_sync),
                ))
            }
        };
        let positive = |key: &'static str, v: i64| -> Result<usize, (&'static str, String)> {
            if v < 1 {
                Err((key, format!("must be at least 1, got {v}")))
            } else {
                Ok(usize::try_from(v).unwrap_or(usize::MAX))
            }
        };
        Ok(SystemdSettings {
            path,
            max_fields: positive("Max_Fields", o.max_fields)?,
            max_entries: positive("Max_Entries", o.max_entries)?,
            filter_type,
            filters,
            read_from_tail: o.read_from_tail,
            lowercase: o.lowercase,
            strip_underscores: o.strip_underscores,
            db_sync,
            db: o.db.as_ref().map(PathBuf::from),
        })
    }
}

fn build(
    _ctx: &BuildContext,
    section: &Section,
    entries: &[&Entry],
) -> Result<Box<dyn Input>, ConfigError> {
    let opts = SystemdOptions::from_entries(&section.span, entries, &[])?;
    let settings = SystemdSettings::from_options(&opts)
        .map_err(|(key, reason)| key_error(section, entries, key, reason))?;
    Ok(Box::new(SystemdInput { settings }))
}

// ---------------------------------------------------------------------------------------------
// The cursor DB.

/// A failure of the cursor DB, with what was being done.
#[derive(Debug, thiserror::Error)]
#[error("systemd DB {path}: {what}: {source}")]
pub struct DbError {
    pub path: String,
    pub what: &'static str,
    #[source]
    pub source: rusqlite::Error,
}

/// Fluent Bit's cursor table: one row, the cursor and when it was saved.
const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS in_systemd_cursor (
    cursor  TEXT NOT NULL,
    updated INTEGER
);";

/// The open cursor DB.
pub struct CursorDb {
    conn: Connection,
    path: String,
}

impl CursorDb {
    /// Opens (creating if needed) the DB with `synchronous` set to `sync`, and keeps only the
    /// newest row if there are several (as Fluent Bit repairs such a table).
    pub fn open(path: &Path, sync: &str) -> Result<Self, DbError> {
        let p = path.display().to_string();
        let err = |what: &'static str| {
            let p = p.clone();
            move |source| DbError {
                path: p,
                what,
                source,
            }
        };
        let conn = Connection::open(path).map_err(err("open"))?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(err("busy timeout"))?;
        conn.pragma_update(None, "synchronous", sync)
            .map_err(err("set synchronous"))?;
        conn.execute_batch(SCHEMA).map_err(err("create table"))?;
        let rows: i64 = conn
            .query_row("SELECT COUNT(*) FROM in_systemd_cursor", [], |r| r.get(0))
            .map_err(err("count rows"))?;
        if rows > 1 {
            tracing::warn!(
                db = %p,
                rows,
                "table in_systemd_cursor has more than one row; keeping the newest"
            );
            conn.execute(
                "DELETE FROM in_systemd_cursor WHERE ROWID < (SELECT MAX(ROWID) FROM in_systemd_cursor)",
                [],
            )
            .map_err(err("delete duplicate rows"))?;
        }
        Ok(CursorDb { conn, path: p })
    }

    /// The saved cursor, if any.
    pub fn cursor(&self) -> Result<Option<String>, DbError> {
        self.conn
            .query_row("SELECT cursor FROM in_systemd_cursor LIMIT 1", [], |r| {
                r.get::<_, Option<String>>(0)
            })
            .optional()
            .map(Option::flatten)
            .map_err(|source| DbError {
                path: self.path.clone(),
                what: "read the cursor",
                source,
            })
    }

    /// Saves `cursor` (updating the row, or inserting it when there is none).
    pub fn set_cursor(&self, cursor: &str) -> Result<(), DbError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let err = |source| DbError {
            path: self.path.clone(),
            what: "save the cursor",
            source,
        };
        let n = self
            .conn
            .execute(
                "UPDATE in_systemd_cursor SET cursor = ?1, updated = ?2",
                params![cursor, now],
            )
            .map_err(err)?;
        if n == 0 {
            self.conn
                .execute(
                    "INSERT INTO in_systemd_cursor (cursor, updated) VALUES (?1, ?2)",
                    params![cursor, now],
                )
                .map_err(|source| DbError {
                    path: self.path.clone(),
                    what: "save the cursor",
                    source,
                })?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Ordered commit of the cursor after delivery.

struct Pending {
    seq: u64,
    /// The cursor of the chunk's last entry.
    cursor: String,
    /// `Some(true)`: delivered or given up; `Some(false)`: abandoned.
    settled: Option<bool>,
}

struct TrackerInner {
    db: Option<CursorDb>,
    queue: VecDeque<Pending>,
    next_seq: u64,
    committed: Option<String>,
    /// A chunk was abandoned: nothing after it may be committed in this run.
    stuck: bool,
}

/// Commits the cursor of the newest chunk whose delivery, and every earlier chunk's, is settled.
/// Shared between the input's task and the delivery callbacks (which run on output tasks and
/// write the DB directly, so a cursor is durable as soon as its chunk is delivered).
#[derive(Clone)]
pub struct CursorTracker(Arc<Mutex<TrackerInner>>);

impl CursorTracker {
    /// A tracker writing to `db` when given, starting at `committed`.
    pub fn new(db: Option<CursorDb>, committed: Option<String>) -> Self {
        CursorTracker(Arc::new(Mutex::new(TrackerInner {
            db,
            queue: VecDeque::new(),
            next_seq: 0,
            committed,
            stuck: false,
        })))
    }

    fn with<R>(&self, f: impl FnOnce(&mut TrackerInner) -> R) -> R {
        let mut g = match self.0.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut g)
    }

    /// Notes a chunk ending at `cursor` about to be emitted; returns the number its callback
    /// settles.
    pub fn reserve(&self, cursor: String) -> u64 {
        self.with(|i| {
            let seq = i.next_seq;
            i.next_seq += 1;
            i.queue.push_back(Pending {
                seq,
                cursor,
                settled: None,
            });
            seq
        })
    }

    /// Commits `cursor` at once (the starting position with `Read_From_Tail`).
    pub fn commit_now(&self, cursor: String) {
        self.with(|i| {
            if i.queue.is_empty() && !i.stuck {
                save(i.db.as_ref(), &cursor);
                i.committed = Some(cursor);
            }
        });
    }

    /// Settles chunk `seq` and commits what has become contiguous.
    pub fn settle(&self, seq: u64, status: DeliveryStatus) {
        self.with(|i| {
            if let Some(p) = i
                .queue
                .iter_mut()
                .find(|p| p.seq == seq && p.settled.is_none())
            {
                p.settled = Some(status.is_final());
            }
            if !status.is_final() {
                i.stuck = true;
            }
            let mut newest = None;
            while !i.stuck && i.queue.front().is_some_and(|p| p.settled == Some(true)) {
                newest = i.queue.pop_front().map(|p| p.cursor);
            }
            if let Some(c) = newest {
                save(i.db.as_ref(), &c);
                i.committed = Some(c);
            }
        });
    }

    /// The cursor committed so far.
    pub fn committed(&self) -> Option<String> {
        self.with(|i| i.committed.clone())
    }

    /// Chunks emitted and not yet settled.
    pub fn outstanding(&self) -> usize {
        self.with(|i| i.queue.iter().filter(|p| p.settled.is_none()).count())
    }
}

fn save(db: Option<&CursorDb>, cursor: &str) {
    if let Some(db) = db {
        if let Err(e) = db.set_cursor(cursor) {
            tracing::error!(error = %e, "cannot save the journal cursor");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Records from journal fields.

/// How keys are written.
#[derive(Clone, Copy, Debug, Default)]
pub struct KeyStyle {
    pub lowercase: bool,
    pub strip_underscores: bool,
}

/// Builds one record's body from an entry's `FIELD=value` data, in order. Returns the body and
/// the number of data without `=` (broken, skipped). At most `max_fields` values are kept.
pub fn body_from_fields<'a>(
    fields: impl IntoIterator<Item = &'a [u8]>,
    style: KeyStyle,
    max_fields: usize,
) -> (Map, usize) {
    let mut body = Map::new();
    let mut broken = 0;
    let mut kept = 0;
    for data in fields {
        if kept >= max_fields {
            break;
        }
        if add_field(&mut body, data, style) {
            kept += 1;
        } else {
            broken += 1;
        }
    }
    (body, broken)
}

/// Adds one `FIELD=value` to `body`; false when it has no `=`.
fn add_field(body: &mut Map, data: &[u8], style: KeyStyle) -> bool {
    let data = match data {
        [b'_', rest @ ..] if style.strip_underscores => rest,
        d => d,
    };
    let Some(eq) = memchr::memchr(b'=', data) else {
        return false;
    };
    let mut key = String::from_utf8_lossy(&data[..eq]).into_owned();
    if style.lowercase {
        key.make_ascii_lowercase();
    }
    let value = Value::from(String::from_utf8_lossy(&data[eq + 1..]).as_ref());
    match body.get_mut(&key) {
        None => body.push(key, value),
        Some(Value::Array(values)) => values.push(value),
        Some(_) => {
            // A repeated field: its values become an array, which goes to the end of the record.
            if let Some(first) = body.remove(&key) {
                body.push(key, Value::Array(vec![first, value]));
            }
        }
    }
    true
}

/// The tag of an entry: `*` in `template` replaced by `unit` (or `unknown`).
pub fn expand_tag(template: &str, unit: Option<&str>) -> String {
    match template.split_once('*') {
        Some((before, after)) => {
            format!("{before}{}{after}", unit.unwrap_or(UNKNOWN_UNIT))
        }
        None => template.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// The reader thread.

/// Records of consecutive entries with the same tag: one chunk.
#[derive(Debug)]
pub struct Group {
    /// `None`: the input's tag (it has no `*`).
    pub tag: Option<String>,
    pub records: Vec<Record>,
    /// Bytes of field data read for them.
    pub bytes: usize,
    /// Cursor of the group's last entry.
    pub cursor: String,
}

/// One round of reading.
#[derive(Debug, Default)]
pub struct Round {
    /// Chunks in journal order.
    pub groups: Vec<Group>,
    /// The journal had no more entries when the round ended.
    pub drained: bool,
}

/// What the reader thread hands over.
enum FromReader {
    /// One round's chunks, in journal order.
    Round(Vec<Group>),
    /// The position to commit at once (`Read_From_Tail` without a saved cursor).
    Start(String),
    /// The journal could not be opened or read on; the input stops.
    Failed(String),
}

/// The journal, opened, filtered and positioned: reads rounds of records. libsystemd's handle
/// is neither `Send` nor `Sync`, so a reader stays on the thread that opened it.
pub struct JournalReader {
    j: systemd::Journal,
    settings: SystemdSettings,
    /// The configured tag when it has a `*`.
    tag_template: Option<String>,
    /// The cursor of the last entry read.
    last_cursor: Option<String>,
    /// The instance name, for logs.
    input: String,
}

impl JournalReader {
    /// Opens the journal of `settings`, adds its filters and positions it: after `resume` (a
    /// saved cursor) when given, else at the tail or the head. The second value is the position
    /// to commit at once (`Read_From_Tail` with no saved cursor: the last entry present).
    pub fn open(
        settings: SystemdSettings,
        tag: &str,
        resume: Option<String>,
        input: &str,
    ) -> Result<(Self, Option<String>), String> {
        let mut j = open_journal(&settings)?;
        let start = position(&mut j, &settings, resume.as_deref(), input)?;
        let reader = JournalReader {
            j,
            tag_template: tag.contains('*').then(|| tag.to_string()),
            last_cursor: resume.or_else(|| start.clone()),
            settings,
            input: input.to_string(),
        };
        Ok((reader, start))
    }

    /// Reads one round: at most `Max_Entries` entries and about 1 MB of records.
    pub fn read_round(&mut self) -> Result<Round, String> {
        let s = &self.settings;
        let j = &mut self.j;
        let style = KeyStyle {
            lowercase: s.lowercase,
            strip_underscores: s.strip_underscores,
        };
        let mut round = Round::default();
        let mut round_bytes = 0usize;
        let mut entries = 0usize;
        let mut broken = 0usize;
        while entries < s.max_entries && round_bytes < ROUND_BYTES {
            match j.next() {
                Ok(0) => {
                    round.drained = true;
                    break;
                }
                Ok(_) => {}
                Err(err) => return Err(format!("sd_journal_next: {err}")),
            }
            j.restart_data();
            let tag = match &self.tag_template {
                Some(t) => {
                    let unit =
                        j.get_data("_SYSTEMD_UNIT").ok().flatten().and_then(|f| {
                            f.value().map(|v| String::from_utf8_lossy(v).into_owned())
                        });
                    Some(expand_tag(t, unit.as_deref()))
                }
                None => None,
            };
            let usec = j
                .timestamp_usec()
                .map_err(|err| format!("sd_journal_get_realtime_usec: {err}"))?;
            let cursor = j
                .cursor()
                .map_err(|err| format!("sd_journal_get_cursor: {err}"))?;
            j.restart_data();
            let mut body = Map::new();
            let mut kept = 0usize;
            let mut read = 0usize;
            while kept < s.max_fields {
                match j.enumerate_data() {
                    Ok(Some(f)) => {
                        read += f.data().len();
                        if add_field(&mut body, f.data(), style) {
                            kept += 1;
                        } else {
                            broken += 1;
                        }
                    }
                    Ok(None) => break,
                    Err(err) => {
                        tracing::error!(input = %self.input, error = %err, "cannot read a journal entry's fields");
                        broken += 1;
                        break;
                    }
                }
            }
            let time = EventTime(
                i64::try_from(usec)
                    .unwrap_or(i64::MAX / 1000)
                    .saturating_mul(1000),
            );
            let record = Record::new(time, body);
            round_bytes += record.approx_size();
            entries += 1;
            match round.groups.last_mut() {
                Some(g) if g.tag == tag => {
                    g.records.push(record);
                    g.bytes += read;
                    g.cursor.clone_from(&cursor);
                }
                _ => round.groups.push(Group {
                    tag,
                    records: vec![record],
                    bytes: read,
                    cursor: cursor.clone(),
                }),
            }
            self.last_cursor = Some(cursor);
        }
        if broken > 0 {
            tracing::error!(input = %self.input, "Skip {broken} broken entries");
        }
        Ok(round)
    }

    /// Waits up to `timeout` for the journal to change.
    pub fn wait(&mut self, timeout: Duration) {
        if let Err(e) = self.j.wait(Some(timeout)) {
            tracing::warn!(input = %self.input, error = %e, "sd_journal_wait failed");
            std::thread::sleep(timeout);
        }
    }

    /// After a read error (most likely the file under the read position was rotated away or
    /// deleted): goes back to the last entry read, to go on after it.
    fn recover(&mut self) {
        let j = &mut self.j;
        let again = match &self.last_cursor {
            Some(c) => j.seek_cursor(c.as_str()).and_then(|()| {
                if j.next()? > 0 && !j.test_cursor(c.as_str()).unwrap_or(false) {
                    j.previous()?;
                }
                Ok(())
            }),
            None => j.seek_head(),
        };
        if let Err(e) = again {
            tracing::error!(input = %self.input, error = %e, "cannot seek the journal");
        }
    }
}

fn open_journal(s: &SystemdSettings) -> Result<systemd::Journal, String> {
    let mut j = match &s.path {
        Some(p) => {
            let dir = p.to_str().ok_or("Path is not UTF-8")?;
            systemd::journal::OpenDirectoryOptions::default()
                .open_directory(dir)
                .map_err(|e| format!("could not open the journal at {dir}: {e}"))?
        }
        None => systemd::journal::OpenOptions::default()
            .local_only(true)
            .open()
            .map_err(|e| format!("could not open the journal: {e}"))?,
    };
    for (field, value) in &s.filters {
        j.match_add(field, value.as_bytes().to_vec())
            .map_err(|e| format!("systemd_filter error: input '{field}={value}': {e}"))?;
        match s.filter_type {
            FilterType::And => j.match_and(),
            FilterType::Or => j.match_or(),
        }
        .map_err(|e| format!("systemd_filter error: {e}"))?;
    }
    Ok(j)
}

/// Positions the journal before the first entry to read. Returns the position to commit at once
/// (`Read_From_Tail` with no saved cursor), if any.
fn position(
    j: &mut systemd::Journal,
    s: &SystemdSettings,
    resume: Option<&str>,
    input: &str,
) -> Result<Option<String>, String> {
    let e = |what: &'static str| move |err: systemd::Error| format!("{what}: {err}");
    if let Some(c) = resume {
        match j.seek_cursor(c) {
            Ok(()) => {
                // The saved entry itself was read: step onto it when it is still there, so
                // reading goes on after it; if it is gone, the next entry is the first unread.
                if j.next().map_err(e("sd_journal_next"))? > 0 && !j.test_cursor(c).unwrap_or(false)
                {
                    j.previous().map_err(e("sd_journal_previous"))?;
                }
                tracing::info!(input, "seek_cursor={:.40}... OK", c);
                return Ok(None);
            }
            Err(err) => {
                // Fluent Bit's first row holds "(null)" until its first round is read.
                tracing::warn!(input, error = %err, "seek_cursor failed; reading from the head, or the tail with Read_From_Tail");
            }
        }
    }
    if s.read_from_tail {
        j.seek_tail().map_err(e("sd_journal_seek_tail"))?;
        if j.previous().map_err(e("sd_journal_previous"))? > 0 {
            return Ok(j.cursor().ok());
        }
        Ok(None)
    } else {
        j.seek_head().map_err(e("sd_journal_seek_head"))?;
        Ok(None)
    }
}

/// What the reader thread needs.
struct ReaderPlan {
    settings: SystemdSettings,
    tag: String,
    resume: Option<String>,
    input: String,
}

/// The reader thread: opens the journal, then reads rounds until `stop` is set or the task
/// stops listening.
fn reader(plan: ReaderPlan, tx: mpsc::Sender<FromReader>, stop: Arc<AtomicBool>) {
    let (mut r, start) =
        match JournalReader::open(plan.settings, &plan.tag, plan.resume, &plan.input) {
            Ok(r) => r,
            Err(e) => {
                let _ = tx.blocking_send(FromReader::Failed(e));
                return;
            }
        };
    if let Some(start) = start {
        if tx.blocking_send(FromReader::Start(start)).is_err() {
            return;
        }
    }
    while !stop.load(Ordering::Acquire) {
        match r.read_round() {
            Ok(round) => {
                if !round.groups.is_empty()
                    && tx.blocking_send(FromReader::Round(round.groups)).is_err()
                {
                    return;
                }
                if round.drained {
                    r.wait(WAIT);
                }
            }
            Err(e) => {
                tracing::error!(input = %plan.input, error = %e, "error reading the journal; seeking back to the last entry read");
                std::thread::sleep(Duration::from_secs(1));
                r.recover();
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The input.

/// Reads the journal.
pub struct SystemdInput {
    settings: SystemdSettings,
}

impl SystemdInput {
    /// An input with these settings.
    pub fn new(settings: SystemdSettings) -> Self {
        SystemdInput { settings }
    }
}

/// Stops the reader thread when the task ends, however it ends.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

#[async_trait]
impl Input for SystemdInput {
    async fn run(self: Box<Self>, ctx: InputContext) -> Result<InputExit, PluginError> {
        let mut emitter = ctx.emitter;
        // Fluent Bit's plugin writes each record's fields one by one (map32 headers).
        emitter.set_map_headers(logferry_core::msgpack::MapHeaders::Dynamic);
        let s = self.settings;
        let (db, resume) = match &s.db {
            Some(p) => {
                let db =
                    CursorDb::open(p, s.db_sync).map_err(|e| PluginError::Other(e.to_string()))?;
                let c = db.cursor().map_err(|e| PluginError::Other(e.to_string()))?;
                (Some(db), c)
            }
            None => (None, None),
        };
        let tracker = CursorTracker::new(db, resume.clone());
        let plan = ReaderPlan {
            settings: s,
            tag: ctx.tag.to_string(),
            resume,
            input: ctx.name.clone(),
        };
        let (tx, rx) = mpsc::channel(1);
        let stop = Arc::new(AtomicBool::new(false));
        let _stop_on_drop = StopOnDrop(Arc::clone(&stop));
        let thread_stop = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name(format!("{}-journal", ctx.name))
            .spawn(move || reader(plan, tx, thread_stop))
            .map_err(|e| PluginError::Io {
                context: "start the journal reader thread".into(),
                source: e,
            })?;
        let result = forward(rx, &emitter, &ctx.tag, &tracker, &ctx.shutdown).await;
        stop.store(true, Ordering::Release);
        // The reader notices within one wait; never block the runtime on it.
        let _ = tokio::time::timeout(WAIT * 8, tokio::task::spawn_blocking(move || handle.join()))
            .await;
        result
    }
}

/// Emits every round the reader hands over, each chunk with a callback that commits its cursor
/// once delivered.
async fn forward(
    mut rx: mpsc::Receiver<FromReader>,
    emitter: &logferry_engine::Emitter,
    tag: &Tag,
    tracker: &CursorTracker,
    shutdown: &CancellationToken,
) -> Result<InputExit, PluginError> {
    loop {
        let msg = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Ok(InputExit::Finished),
            m = rx.recv() => m,
        };
        match msg {
            None => return Ok(InputExit::Finished),
            Some(FromReader::Failed(e)) => return Err(PluginError::Other(e)),
            Some(FromReader::Start(c)) => tracker.commit_now(c),
            Some(FromReader::Round(groups)) => {
                for g in groups {
                    let seq = tracker.reserve(g.cursor);
                    let t = tracker.clone();
                    let ack = Box::new(move |status| t.settle(seq, status));
                    let chunk_tag = match g.tag {
                        Some(t) => Tag::from(t),
                        None => Tag::clone(tag),
                    };
                    emitter
                        .emit(chunk_tag, g.records, g.bytes, Some(ack))
                        .await?;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn opts() -> SystemdOptions {
        SystemdOptions::defaults().unwrap()
    }

    #[test]
    fn defaults_are_fluent_bits() {
        let s = SystemdSettings::from_options(&opts()).unwrap();
        assert_eq!(s.max_fields, 8000);
        assert_eq!(s.max_entries, 5000);
        assert_eq!(s.filter_type, FilterType::Or);
        assert!(s.filters.is_empty());
        assert!(!s.read_from_tail && !s.lowercase && !s.strip_underscores);
        assert_eq!(s.db_sync, "FULL");
        assert!(s.path.is_none() && s.db.is_none());
    }

    #[test]
    fn bad_values_name_the_key() {
        let mut o = opts();
        o.systemd_filter_type = "xor".into();
        assert_eq!(
            SystemdSettings::from_options(&o).unwrap_err().0,
            "Systemd_Filter_Type"
        );
        for bad in ["NOEQUALS", "_systemd_unit=x", "1ABC=x", "=x"] {
            let mut o = opts();
            o.systemd_filter = vec![bad.into()];
            assert_eq!(
                SystemdSettings::from_options(&o).unwrap_err().0,
                "Systemd_Filter",
                "{bad}"
            );
        }
        let mut o = opts();
        o.systemd_filter = vec!["_SYSTEMD_UNIT=a=b.service".into(), "PRIORITY=".into()];
        let s = SystemdSettings::from_options(&o).unwrap();
        assert_eq!(
            s.filters,
            vec![
                ("_SYSTEMD_UNIT".to_string(), "a=b.service".to_string()),
                ("PRIORITY".to_string(), String::new())
            ]
        );
        let mut o = opts();
        o.db_sync = "sometimes".into();
        assert_eq!(SystemdSettings::from_options(&o).unwrap_err().0, "DB.Sync");
        let mut o = opts();
        o.max_entries = 0;
        assert_eq!(
            SystemdSettings::from_options(&o).unwrap_err().0,
            "Max_Entries"
        );
        let mut o = opts();
        o.path = Some("/nonexistent/journal/dir".into());
        assert_eq!(SystemdSettings::from_options(&o).unwrap_err().0, "Path");
        let f = tempfile::NamedTempFile::new().unwrap();
        let mut o = opts();
        o.path = Some(f.path().display().to_string());
        let (key, reason) = SystemdSettings::from_options(&o).unwrap_err();
        assert_eq!(key, "Path");
        assert!(reason.contains("not a directory"), "{reason}");
    }

    #[test]
    fn tag_expansion_replaces_the_first_star() {
        assert_eq!(
            expand_tag("host.*", Some("docker.service")),
            "host.docker.service"
        );
        assert_eq!(expand_tag("host.*", None), "host.unknown");
        assert_eq!(expand_tag("a.*.b", Some("u")), "a.u.b");
        assert_eq!(expand_tag("*", Some("u")), "u");
        assert_eq!(expand_tag("plain", Some("u")), "plain");
    }

    #[test]
    fn fields_become_keys_and_repeats_become_arrays_at_the_end() {
        let data: Vec<&[u8]> = vec![
            b"_PID=1",
            b"MESSAGE=hi=there",
            b"TAG=a",
            b"_HOSTNAME=h",
            b"TAG=b",
            b"TAG=c",
            b"BROKEN",
        ];
        let (body, broken) = body_from_fields(data.iter().copied(), KeyStyle::default(), 8000);
        assert_eq!(broken, 1);
        let keys: Vec<&str> = body.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["_PID", "MESSAGE", "_HOSTNAME", "TAG"]);
        assert_eq!(body.get("MESSAGE"), Some(&Value::from("hi=there")));
        assert_eq!(
            body.get("TAG"),
            Some(&Value::Array(vec!["a".into(), "b".into(), "c".into()]))
        );
    }

    #[test]
    fn strip_underscores_then_lowercase() {
        let data: Vec<&[u8]> = vec![
            b"__REALTIME=1",
            b"_PID=1",
            b"MESSAGE=x",
            b"SYSLOG_IDENTIFIER=y",
        ];
        let style = KeyStyle {
            lowercase: true,
            strip_underscores: true,
        };
        let (body, _) = body_from_fields(data.iter().copied(), style, 8000);
        let keys: Vec<&str> = body.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["_realtime", "pid", "message", "syslog_identifier"]);
    }

    #[test]
    fn max_fields_bounds_the_values_kept() {
        let data: Vec<&[u8]> = vec![b"A=1", b"B=2", b"A=3", b"C=4"];
        let (body, _) = body_from_fields(data.iter().copied(), KeyStyle::default(), 3);
        assert_eq!(body.get("C"), None);
        assert_eq!(
            body.get("A"),
            Some(&Value::Array(vec!["1".into(), "3".into()]))
        );
    }

    #[test]
    fn non_utf8_values_are_kept_with_replacement_characters() {
        let data: Vec<&[u8]> = vec![b"MESSAGE=a\xffb"];
        let (body, _) = body_from_fields(data.iter().copied(), KeyStyle::default(), 10);
        assert_eq!(body.get("MESSAGE"), Some(&Value::from("a\u{fffd}b")));
    }

    #[test]
    fn cursor_commits_only_the_contiguous_settled_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let t = CursorTracker::new(Some(CursorDb::open(&path, "FULL").unwrap()), None);
        let a = t.reserve("c1".into());
        let b = t.reserve("c2".into());
        let c = t.reserve("c3".into());
        t.settle(b, DeliveryStatus::Delivered);
        assert_eq!(t.committed(), None, "c2 waits for c1");
        t.settle(a, DeliveryStatus::Rejected);
        assert_eq!(
            t.committed().as_deref(),
            Some("c2"),
            "given up counts as final"
        );
        assert_eq!(t.outstanding(), 1);
        t.settle(c, DeliveryStatus::Delivered);
        assert_eq!(t.committed().as_deref(), Some("c3"));
        let db = CursorDb::open(&path, "FULL").unwrap();
        assert_eq!(db.cursor().unwrap().as_deref(), Some("c3"));
    }

    #[test]
    fn an_abandoned_chunk_pins_the_cursor() {
        let t = CursorTracker::new(None, Some("c0".into()));
        let a = t.reserve("c1".into());
        let b = t.reserve("c2".into());
        let c = t.reserve("c3".into());
        t.settle(a, DeliveryStatus::Delivered);
        t.settle(b, DeliveryStatus::Abandoned);
        t.settle(c, DeliveryStatus::Delivered);
        assert_eq!(t.committed().as_deref(), Some("c1"));
    }

    #[test]
    fn db_keeps_one_row_and_repairs_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(SCHEMA).unwrap();
            conn.execute_batch(
                "INSERT INTO in_systemd_cursor VALUES ('old', 1); \
                 INSERT INTO in_systemd_cursor VALUES ('new', 2);",
            )
            .unwrap();
        }
        let db = CursorDb::open(&path, "NORMAL").unwrap();
        assert_eq!(db.cursor().unwrap().as_deref(), Some("new"));
        db.set_cursor("newer").unwrap();
        db.set_cursor("newest").unwrap();
        let rows: Vec<(String, i64)> = {
            let mut st = db
                .conn
                .prepare("SELECT cursor, updated FROM in_systemd_cursor")
                .unwrap();
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        };
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].0, "newest");
        assert!(rows[0].1 > 1_700_000_000, "updated is Unix seconds");
    }
}
