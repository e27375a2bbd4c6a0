//! The `tail` input (Fluent Bit's `in_tail`).
//!
//! One task per instance. Each round it reads every file that has new bytes (in large blocks,
//! lines split with `memchr`), turns lines into records (raw, Docker json-file or CRI framing,
//! split lines joined per stream), and emits one chunk per file per round with a delivery
//! callback that commits the offset through [`Tracker`]. Files are followed by their open file
//! descriptor, so a renamed file is read to its end; a path that now names another inode is a
//! rotation (the new file is read from its start), a file that shrank was truncated
//! (copytruncate: read again from 0). inotify wakes the loop at once; a 250ms poll covers file
//! systems where inotify says nothing.
//!
//! While the input is paused at its `Mem_Buf_Limit` (a destination is down and outputs retry),
//! the task never waits inside `emit`: it reads nothing more, but keeps finding new files
//! (opening them, so that their data survives deletion) and following rotations, racing
//! [`logferry_engine::Emitter::ready`] against a housekeeping timer. The log files are the
//! buffer then: a file rotated away or deleted stays open until it is read to its end, however
//! long the outage lasts, within `Rotated_Hold_Limit` bytes of unread data.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use logferry_core::config::{ConfigError, Entry, Section};
use logferry_core::tag::expand_tag_with_path;
use logferry_core::{Record, Tag, Value};
use logferry_engine::{BuildContext, Input, InputContext, InputExit, InputPlugin, PluginError};
use regex::Regex;

use crate::acks::{FileKey, Tracker};
use crate::config::{split_patterns, TailOptions};
use crate::db::Db;
use crate::format::{Framing, Joiner};
use crate::marker::Marker;
use logferry_parsers::{MultilineGroup, MultilineParser, Parser};

/// The registry entry.
pub static PLUGIN: InputPlugin = InputPlugin {
    name: "tail",
    aliases: &[],
    description: "Tail files",
    options: TailOptions::OPTIONS,
    default_workers: 1,
    build,
};

/// Bytes read per `read` call. 128 KiB keeps syscalls rare (one per ~650 Docker lines) while
/// the records made from one read stay small next to a small `Mem_Buf_Limit`.
const READ_BLOCK: usize = 128 * 1024;
/// A chunk is emitted once its lines add up to this many bytes: small chunks keep the records in
/// flight (and peak RSS) low once filters have grown them; per-chunk costs stay negligible.
const EMIT_BYTES: usize = 128 * 1024;
/// Most bytes read from one file before moving to the next (fairness between files).
const ROUND_BYTES: u64 = 4 * 1024 * 1024;
/// How often idle files are polled (covers file systems without inotify events).
const POLL: Duration = Duration::from_millis(250);
/// How often each file's path is checked for rotation and truncation.
const ROTATION_CHECK: Duration = Duration::from_secs(1);
/// How often a paused input looks for new and rotated files (inotify also wakes it).
const HOUSEKEEPING: Duration = Duration::from_millis(250);
/// How long joined pieces wait for the rest with `multiline.parser docker|cri` (Fluent Bit's
/// built-in multiline `flush_timeout`).
const MULTILINE_FLUSH: Duration = Duration::from_secs(4);

fn build(
    ctx: &BuildContext,
    section: &Section,
    entries: &[&Entry],
) -> Result<Box<dyn Input>, ConfigError> {
    // Parser_N belong to the old multiline mode: refused with it below, noted without it (Fluent
    // Bit reads them only when Multiline is On).
    let (old_parsers, entries): (Vec<&Entry>, Vec<&Entry>) = entries
        .iter()
        .partition(|e| crate::config::is_old_multiline_parser(&e.key));
    let entries = &entries[..];
    let o = TailOptions::from_entries(&section.span, entries, &[])?;
    ctx.not_applied(crate::config::NOT_APPLIED, entries);
    if !o.multiline {
        for e in old_parsers {
            ctx.note(
                e,
                "accepted but not applied: it belongs to the old multiline mode (Multiline Off)",
            );
        }
    }
    let span_of = |key: &str| {
        section
            .get(key)
            .map(|e| e.span.clone())
            .unwrap_or_else(|| section.span.clone())
    };
    let patterns = split_patterns(&o.path);
    if patterns.is_empty() {
        return Err(ConfigError::key(
            &span_of("path"),
            "Path",
            "no file pattern given",
        ));
    }
    for p in &patterns {
        glob::Pattern::new(p).map_err(|e| {
            ConfigError::key(
                &span_of("path"),
                "Path",
                format!("invalid pattern '{p}': {e}"),
            )
        })?;
    }
    // A Path that matches nothing is legal (files may come later) but usually a mistake, such
    // as a relative path run from another directory: say so at start and in --dry-run.
    let matches_now = patterns
        .iter()
        .any(|p| glob::glob(p).is_ok_and(|mut paths| paths.any(|m| m.is_ok_and(|m| m.is_file()))));
    if !matches_now {
        if let Some(e) = entries
            .iter()
            .rev()
            .find(|e| e.key.eq_ignore_ascii_case("Path"))
        {
            let relative = patterns.iter().any(|p| !Path::new(p).is_absolute());
            let cwd = std::env::current_dir()
                .map(|d| d.display().to_string())
                .unwrap_or_default();
            ctx.note(
                e,
                if relative {
                    format!("matches no file yet (relative patterns are read from the working directory, {cwd})")
                } else {
                    "matches no file yet".to_string()
                },
            );
        }
    }
    let mut exclude = Vec::new();
    for p in o
        .exclude_path
        .as_deref()
        .map(split_patterns)
        .unwrap_or_default()
    {
        exclude.push(glob::Pattern::new(&p).map_err(|e| {
            ConfigError::key(
                &span_of("exclude_path"),
                "Exclude_Path",
                format!("invalid pattern '{p}': {e}"),
            )
        })?);
    }
    let tag_regex = match &o.tag_regex {
        Some(r) => Some(Regex::new(r).map_err(|e| {
            ConfigError::key(
                &span_of("tag_regex"),
                "Tag_Regex",
                format!("invalid regular expression: {e}"),
            )
        })?),
        None => None,
    };
    let decoding = decoding_for(ctx, &o, &span_of)?;
    let framing = decoding.framing;
    let join = o.docker_mode
        || matches!(framing, Framing::Cri | Framing::DockerOrCri)
        || (framing == Framing::Docker && o.multiline_parser.is_some());
    let join_flush = if o.docker_mode {
        o.docker_mode_flush
    } else {
        MULTILINE_FLUSH
    };
    for (key, v) in [
        ("db.sync", &o.db_sync),
        ("db.journal_mode", &o.db_journal_mode),
    ] {
        let ok = match key {
            "db.sync" => {
                ["extra", "full", "normal", "off"].contains(&v.to_ascii_lowercase().as_str())
            }
            _ => ["delete", "truncate", "persist", "memory", "wal", "off"]
                .contains(&v.to_ascii_lowercase().as_str()),
        };
        if !ok {
            return Err(ConfigError::key(
                &span_of(key),
                key,
                format!("unsupported value '{v}'"),
            ));
        }
    }
    if o.multiline {
        return Err(ConfigError::key(
            &span_of("multiline"),
            "Multiline",
            "the old multiline mode is not yet available in logferry; use multiline.parser",
        ));
    }
    // A relative DB path is relative to the working directory, as in Fluent Bit.
    let db = o.db.as_deref().filter(|d| !d.is_empty()).map(PathBuf::from);
    let files = FileCounters {
        opened: ctx
            .metrics
            .register("fluentbit_input_files_opened", "Total number of opened files"),
        closed: ctx
            .metrics
            .register("fluentbit_input_files_closed", "Total number of closed files"),
        rotated: ctx
            .metrics
            .register("fluentbit_input_files_rotated", "Total number of rotated files"),
        acks_pending: ctx.metrics.register_gauge(
            "tail_acks_pending",
            "Chunks read by tail whose delivery is not settled yet (their offsets are not committed).",
        ),
        rotated_held: ctx.metrics.register_gauge(
            "tail_rotated_held_bytes",
            "Bytes not yet read into records of files rotated away or deleted that tail keeps open (bounded by Rotated_Hold_Limit).",
        ),
        rotated_dropped_bytes: ctx.metrics.register(
            "tail_rotated_dropped_bytes",
            "Unread bytes dropped by closing a rotated or deleted file at Rotated_Hold_Limit.",
        ),
        // Registered in Fluent Bit's order (its v1 JSON lists truncated first).
        multiline_truncated: ctx.metrics.register(
            "fluentbit_input_multiline_truncated",
            "Total number of truncated occurences for multilines",
        ),
        long_line_truncated: ctx.metrics.register(
            "fluentbit_input_long_line_truncated",
            "Total number of truncated occurences for long lines",
        ),
        long_line_skipped: ctx.metrics.register(
            "fluentbit_input_long_line_skipped",
            "Total number of skipped occurences for long lines",
        ),
        rotated_dropped_files: ctx.metrics.register(
            "tail_rotated_dropped_files",
            "Rotated or deleted files closed at Rotated_Hold_Limit before they were read to their end.",
        ),
    };
    Ok(Box::new(Tail {
        files,
        patterns,
        exclude,
        tag_regex,
        framing,
        parser: decoding.parser,
        multiline: decoding.multiline,
        join,
        join_flush,
        join_limit: ctx.multiline_buffer_limit(),
        db,
        o,
    }))
}

/// How lines become records: the container framing (fast decoders for Docker json-file and
/// CRI), a general parser, and a multiline parser applied after framing.
struct Decoding {
    framing: Framing,
    parser: Option<Arc<Parser>>,
    multiline: Option<Arc<MultilineParser>>,
}

/// Picks the decoding from `Parser` / `multiline.parser`. `docker` and `cri` use tail's own
/// decoders when they are the built-in definitions (or, for `docker`, an equivalent JSON one, as
/// in AWS for Fluent Bit's parsers file); any other parser is applied as configured.
fn decoding_for(
    ctx: &BuildContext,
    o: &TailOptions,
    span_of: &dyn Fn(&str) -> logferry_core::config::Span,
) -> Result<Decoding, ConfigError> {
    let overridden = |name: &str| {
        ctx.config
            .sections(logferry_core::config::SectionKind::Parser)
            .any(|s| {
                s.name()
                    .is_some_and(|n| n.trim().eq_ignore_ascii_case(name))
            })
    };
    if let Some(ml) = &o.multiline_parser {
        let mut docker = false;
        let mut cri = false;
        let mut multiline = None;
        for n in split_patterns(ml) {
            match n.to_ascii_lowercase().as_str() {
                "docker" => docker = true,
                "cri" => cri = true,
                other => match ctx.parsers.multiline(other) {
                    Some(m) if multiline.is_none() => multiline = Some(m),
                    Some(_) => {
                        return Err(ConfigError::key(
                            &span_of("multiline.parser"),
                            "multiline.parser",
                            format!("only one multiline parser besides docker and cri is supported by tail ('{other}' is the second); use the multiline filter for more"),
                        ))
                    }
                    None => {
                        return Err(ConfigError::key(
                            &span_of("multiline.parser"),
                            "multiline.parser",
                            format!("unknown multiline parser '{other}'"),
                        ))
                    }
                },
            }
        }
        let framing = match (docker, cri) {
            (true, true) => Framing::DockerOrCri,
            (true, false) => Framing::Docker,
            (false, true) => Framing::Cri,
            (false, false) => Framing::Raw,
        };
        return Ok(Decoding {
            framing,
            parser: None,
            multiline,
        });
    }
    let Some(name) = o.parser.as_deref().map(str::trim).filter(|n| !n.is_empty()) else {
        return Ok(Decoding {
            framing: Framing::Raw,
            parser: None,
            multiline: None,
        });
    };
    let parser = ctx.parsers.get(name).ok_or_else(|| {
        ConfigError::key(
            &span_of("parser"),
            "Parser",
            format!("unknown parser '{name}'"),
        )
    })?;
    let framing = if name.eq_ignore_ascii_case("docker") && parser.is_docker_json() {
        Framing::Docker
    } else if name.eq_ignore_ascii_case("cri") && !overridden("cri") {
        Framing::Cri
    } else {
        Framing::Raw
    };
    Ok(Decoding {
        parser: (framing == Framing::Raw).then_some(parser),
        framing,
        multiline: None,
    })
}

/// Fluent Bit's tail file counters, and logferry's own.
struct FileCounters {
    opened: Arc<std::sync::atomic::AtomicU64>,
    closed: Arc<std::sync::atomic::AtomicU64>,
    rotated: Arc<std::sync::atomic::AtomicU64>,
    acks_pending: Arc<std::sync::atomic::AtomicU64>,
    /// `logferry_tail_rotated_held_bytes`: what `Rotated_Hold_Limit` bounds.
    rotated_held: Arc<std::sync::atomic::AtomicU64>,
    rotated_dropped_bytes: Arc<std::sync::atomic::AtomicU64>,
    rotated_dropped_files: Arc<std::sync::atomic::AtomicU64>,
    long_line_skipped: Arc<std::sync::atomic::AtomicU64>,
    long_line_truncated: Arc<std::sync::atomic::AtomicU64>,
    /// Messages joined from Docker/CRI pieces cut at `multiline_buffer_limit`.
    multiline_truncated: Arc<std::sync::atomic::AtomicU64>,
}

struct Tail {
    files: FileCounters,
    o: TailOptions,
    patterns: Vec<String>,
    exclude: Vec<glob::Pattern>,
    tag_regex: Option<Regex>,
    framing: Framing,
    /// A general parser for each line (when not a fast framing).
    parser: Option<Arc<Parser>>,
    /// A multiline parser applied after framing, one group per stream.
    multiline: Option<Arc<MultilineParser>>,
    join: bool,
    join_flush: Duration,
    /// `[SERVICE] multiline_buffer_limit`: most bytes of a message joined from pieces.
    join_limit: Option<usize>,
    db: Option<PathBuf>,
}

/// One followed file.
struct Followed {
    key: FileKey,
    db_id: Option<i64>,
    /// Where the file was opened (a rotated leftover's rotated name).
    path: PathBuf,
    /// The path the file was followed under (before rotation): `Path_Key` and the tag.
    path_str: Arc<str>,
    tag: Tag,
    /// Shared with the tracker, which computes each committed offset's marker through it.
    file: Arc<File>,
    dev_ino: (u64, u64),
    /// Next byte to read.
    read_offset: u64,
    /// Bytes of the line being read, which starts at `line_start`.
    partial: Vec<u8>,
    line_start: u64,
    /// Discarding the rest of a line longer than Buffer_Max_Size.
    skipping: bool,
    joiner: Joiner,
    rotated_at: Option<Instant>,
    last_check: Instant,
    /// The last read reached the end (it returned nothing, or fewer bytes than asked). Only a
    /// hint: closing re-checks the size (`drained`).
    eof: bool,
    /// The last bytes read (see [`MARK`]).
    mark: Vec<u8>,
    /// One multiline group per stream (stdout, stderr, other) when `multiline.parser` names one.
    ml: Option<Vec<MultilineGroup>>,
    /// Where each stream's pending multiline message starts.
    ml_start: [Option<u64>; 3],
}

/// Bytes remembered from just before the read offset, to notice a file that was truncated and
/// written again past our offset between two looks (copytruncate under a fast writer).
const MARK: usize = 32;

fn stream_index(r: &Record) -> usize {
    match r.body.get("stream").and_then(Value::as_str) {
        Some("stdout") => 0,
        Some("stderr") => 1,
        _ => 2,
    }
}

impl Followed {
    /// Feeds a framed record (whose first piece starts at or after `start`) to its stream's
    /// multiline group; completed messages go to `out`.
    fn multiline_push(
        &mut self,
        record: Record,
        start: u64,
        end: u64,
        out: &mut Vec<(Record, u64)>,
    ) {
        let s = stream_index(&record);
        let Some(groups) = self.ml.as_mut() else {
            out.push((record, end));
            return;
        };
        let mut done = Vec::new();
        groups[s].push(record, &mut done);
        let flushed = !done.is_empty();
        out.extend(done.into_iter().map(|r| (r, end)));
        if groups[s].pending_since().is_some() {
            if flushed || self.ml_start[s].is_none() {
                self.ml_start[s] = Some(start);
            }
        } else {
            self.ml_start[s] = None;
        }
    }

    /// Emits multiline messages whose flush timeout passed (all of them when `all`).
    fn multiline_flush(&mut self, all: bool, out: &mut Vec<(Record, u64)>) {
        let at = self.line_start;
        let Some(groups) = self.ml.as_mut() else {
            return;
        };
        for (s, g) in groups.iter_mut().enumerate() {
            let due = g
                .pending_since()
                .is_some_and(|t| all || t.elapsed() >= g.flush_timeout());
            if due {
                let mut done = Vec::new();
                g.flush(&mut done);
                out.extend(done.into_iter().map(|r| (r, at)));
                self.ml_start[s] = None;
            }
        }
    }

    /// Where the earliest message still being assembled starts: offsets stay before it.
    fn hold_start(&self) -> Option<u64> {
        self.ml_start
            .iter()
            .flatten()
            .copied()
            .chain(self.joiner.earliest_start())
            .min()
    }

    /// Emits everything pending (end of file for good: Exit_On_Eof, or closing a rotated file).
    fn flush_all(&mut self, out: &mut Vec<(Record, u64)>) {
        let mut framed = Vec::new();
        self.joiner.flush(None, &mut framed);
        let at = self.line_start;
        for (r, end) in framed {
            self.multiline_push(r, at, end, out);
        }
        self.multiline_flush(true, out);
    }

    /// Keeps the last bytes read.
    fn remember_tail(&mut self, data: &[u8]) {
        if data.len() >= MARK {
            self.mark.clear();
            self.mark.extend_from_slice(&data[data.len() - MARK..]);
        } else {
            self.mark.extend_from_slice(data);
            let extra = self.mark.len().saturating_sub(MARK);
            self.mark.drain(..extra);
        }
    }

    /// Whether the remembered bytes can be checked: they all lie before the offset (after a
    /// truncation the mark is empty until bytes are read again).
    fn mark_fits(&self) -> bool {
        !self.mark.is_empty() && self.mark.len() as u64 <= self.read_offset
    }

    /// Whether the file is read to its current end, asked of the open descriptor now rather
    /// than taken from `eof` (a writer may have appended since the last read). A descriptor
    /// that cannot be asked cannot be read either: it counts as drained.
    fn drained(&self) -> bool {
        at_end(&self.file, self.read_offset)
    }

    /// Bytes of the file not yet read into records (from the start of the first line not
    /// turned into a record to the end of the file).
    fn unread(&self, size: u64) -> u64 {
        size.saturating_sub(self.line_start.min(self.read_offset))
    }

    /// Starts over after a truncation: what was read before is gone from the file.
    fn truncated(&mut self, tracker: &Tracker) {
        self.mark.clear();
        self.read_offset = 0;
        self.line_start = 0;
        self.partial.clear();
        self.skipping = false;
        // Pieces of a message already read stay pending: they are real lines and are emitted
        // when their message completes or its flush time passes.
        tracker.reset(self.key);
    }
}

struct State {
    files: HashMap<(u64, u64), Followed>,
    next_key: FileKey,
    tracker: Tracker,
    buf: Vec<u8>,
    /// Chunks made while the input was paused, in the order they were made: emitted before
    /// anything more is read, so the task never waits inside `emit`.
    held: VecDeque<Held>,
    /// When an agent last used the DB before this start (see [`appeared_while_down`]).
    last_seen: Option<i64>,
}

/// How often the DB's `last_seen` is brought up to date while running.
const LAST_SEEN_EVERY: Duration = Duration::from_secs(5);

/// Whether a file found at start without a DB row appeared after the agent last ran (it was
/// created no earlier than `LAST_SEEN_EVERY` before the DB's `last_seen`): kubelet rotated a
/// log or a pod started while the agent was down. **Difference:** such a file is read from its
/// start whatever `Read_from_Head` says; Fluent Bit reads it from its end and loses what was
/// written while it was down. A file older than that keeps Fluent Bit's `Read_from_Head`
/// rule, and so does every file on the first run over a DB (no `last_seen` yet).
fn appeared_while_down(meta: &std::fs::Metadata, last_seen: Option<i64>) -> bool {
    let Some(seen) = last_seen else {
        return false;
    };
    // Birth time where the file system keeps it, else the inode's change time.
    let born = meta
        .created()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(meta.ctime(), |d| d.as_secs() as i64);
    born >= seen - LAST_SEEN_EVERY.as_secs() as i64
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A chunk whose offset is reserved in the tracker but not yet emitted.
struct Held {
    key: FileKey,
    seq: u64,
    tag: Tag,
    records: Vec<Record>,
    bytes: usize,
}

#[async_trait]
impl Input for Tail {
    async fn run(self: Box<Self>, mut ctx: InputContext) -> Result<InputExit, PluginError> {
        // Fluent Bit's tail builds each record field by field, so its encoder writes both maps
        // of a record as map32: count bytes the same way.
        ctx.emitter
            .set_map_headers(logferry_core::msgpack::MapHeaders::Dynamic);
        let db = match &self.db {
            Some(p) => Some(
                Db::open(
                    p,
                    &self.o.db_sync,
                    &self.o.db_journal_mode,
                    self.o.db_locking,
                )
                .map_err(|e| PluginError::Other(e.to_string()))?,
            ),
            None => None,
        };
        let last_seen = match db
            .as_ref()
            .map(|d| (d.last_seen(), d.set_last_seen(unix_now())))
        {
            Some((Ok(seen), Ok(()))) => seen,
            Some((Err(e), _)) | Some((_, Err(e))) => {
                tracing::warn!(input = %ctx.name, error = %e, "tail DB: cannot keep last_seen; files found at start follow Read_from_Head");
                None
            }
            None => None,
        };
        let mut st = State {
            files: HashMap::new(),
            next_key: 0,
            tracker: Tracker::with_gauge(db, Arc::clone(&self.files.acks_pending)),
            buf: vec![0u8; READ_BLOCK],
            held: VecDeque::new(),
            last_seen,
        };
        let wake = Arc::new(tokio::sync::Notify::new());
        let rescan = Arc::new(AtomicBool::new(false));
        let _watcher = if self.o.inotify_watcher {
            self.watch(&wake, &rescan)
        } else {
            None
        };

        self.drain_rotated_leftovers(&ctx, &mut st);
        self.scan(&ctx, &mut st, true);
        self.purge_stale(&ctx, &st);
        let mut last_scan = Instant::now();
        let mut last_seen_at = Instant::now();
        loop {
            if ctx.shutdown.is_cancelled() {
                break;
            }
            if last_seen_at.elapsed() >= LAST_SEEN_EVERY {
                last_seen_at = Instant::now();
                if let Some(Err(e)) = st.tracker.db(|db| db.set_last_seen(unix_now())) {
                    tracing::warn!(input = %ctx.name, error = %e, "tail DB: cannot update last_seen");
                }
            }
            // Nothing is read while chunks wait for room: they go first, in order.
            let read = if self.drain_held(&ctx, &mut st).await? {
                self.read_all(&ctx, &mut st).await?
            } else {
                0
            };
            let progressed = read > 0;
            self.check_files(&ctx, &mut st).await?;
            if rescan.swap(false, Ordering::AcqRel)
                || last_scan.elapsed() >= self.o.refresh_interval
            {
                self.scan(&ctx, &mut st, false);
                last_scan = Instant::now();
            }
            let paused = ctx.emitter.is_paused() || !st.held.is_empty();
            if self.o.exit_on_eof
                && !progressed
                && !paused
                && st.files.values().all(|f| f.eof && f.drained())
            {
                self.exit_on_eof(&ctx, &mut st).await?;
                return Ok(InputExit::ExitEngine);
            }
            if paused {
                // Paused: keep finding and following files until there is room again.
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => break,
                    _ = ctx.emitter.ready() => {}
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(HOUSEKEEPING) => {}
                }
            } else if !progressed {
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => break,
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(POLL) => {}
                }
            } else {
                tokio::task::yield_now().await;
            }
        }
        Ok(InputExit::Finished)
    }
}

impl Tail {
    /// Watches the directories the patterns live in; events wake the loop, creations and
    /// renames also ask for a re-scan.
    fn watch(
        &self,
        wake: &Arc<tokio::sync::Notify>,
        rescan: &Arc<AtomicBool>,
    ) -> Option<notify::RecommendedWatcher> {
        use notify::{EventKind, RecursiveMode, Watcher};
        let wake = Arc::clone(wake);
        let rescan = Arc::clone(rescan);
        let mut w = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            if let Ok(ev) = ev {
                if matches!(
                    ev.kind,
                    EventKind::Create(_)
                        | EventKind::Modify(notify::event::ModifyKind::Name(_))
                        | EventKind::Remove(_)
                ) {
                    rescan.store(true, Ordering::Release);
                }
                wake.notify_one();
            }
        })
        .map_err(|e| tracing::warn!(error = %e, "inotify unavailable; polling only"))
        .ok()?;
        let mut dirs: Vec<PathBuf> = self.patterns.iter().map(|p| static_dir(p)).collect();
        dirs.sort();
        dirs.dedup();
        for d in dirs {
            if let Err(e) = w.watch(&d, RecursiveMode::NonRecursive) {
                tracing::debug!(dir = %d.display(), error = %e, "cannot watch directory; polling it");
            }
        }
        Some(w)
    }

    fn tag_for(&self, ctx: &InputContext, path: &str) -> Tag {
        let pattern: &str = &ctx.tag;
        if let Some(re) = &self.tag_regex {
            if let Some(caps) = re.captures(path) {
                let mut out = pattern.to_string();
                for name in re.capture_names().flatten() {
                    if let Some(m) = caps.name(name) {
                        out = out.replace(&format!("<{name}>"), m.as_str());
                    }
                }
                return Arc::from(out);
            }
        }
        Arc::from(expand_tag_with_path(pattern, path))
    }

    /// Opens a file and decides where to start reading it. `resume` is a DB row's id, offset
    /// and marker (a rotated leftover); `origin` the path it was followed under before it was
    /// rotated, which gives its tag and `Path_Key`.
    #[allow(clippy::too_many_arguments)]
    fn follow(
        &self,
        ctx: &InputContext,
        st: &mut State,
        path: &Path,
        first_scan: bool,
        resume: Option<(i64, u64, Marker)>,
        rotated: bool,
        origin: Option<&str>,
    ) {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(input = %ctx.name, file = %path.display(), error = %e, "cannot open file");
                return;
            }
        };
        let Ok(meta) = file.metadata() else { return };
        let dev_ino = (meta.dev(), meta.ino());
        if st.files.contains_key(&dev_ino) {
            return;
        }
        let file = Arc::new(file);
        let path_str: Arc<str> = match origin {
            Some(o) => Arc::from(o),
            None => Arc::from(path.to_string_lossy().as_ref()),
        };
        let size = meta.len();
        let (db_id, mut offset, stored) = match resume {
            Some((id, off, marker)) => (Some(id), off, marker),
            None => {
                let found = st
                    .tracker
                    .db(|db| db.find(dev_ino.1, &path_str, self.o.db_compare_filename))
                    .transpose();
                match found {
                    Ok(Some(Some(row))) => {
                        if row.name != *path_str {
                            let _ = st.tracker.db(|db| db.rename(row.id, dev_ino.1, &path_str));
                        }
                        (Some(row.id), row.offset, row.marker)
                    }
                    Ok(_) => {
                        let new_while_down = first_scan && appeared_while_down(&meta, st.last_seen);
                        if new_while_down && !self.o.read_from_head {
                            tracing::info!(input = %ctx.name, file = %path.display(), "file appeared while the agent was down: reading it from its start");
                        }
                        let start = if (first_scan && !self.o.read_from_head && !new_while_down)
                            || (!first_scan && !self.o.read_newly_discovered_files_from_head)
                        {
                            size
                        } else {
                            0
                        };
                        let marker = Marker::for_db(Some(&file), start);
                        let id = st
                            .tracker
                            .db(|db| db.insert(&path_str, dev_ino.1, start, marker))
                            .transpose()
                            .unwrap_or_else(|e| {
                                tracing::error!(error = %e, "cannot add a file to the tail DB");
                                None
                            });
                        (id, start, marker)
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "tail DB lookup failed; reading the file from the start");
                        (None, 0, Marker::default())
                    }
                }
            }
        };
        let saved = offset;
        if offset > size {
            tracing::info!(input = %ctx.name, file = %path.display(), offset, size, "file is shorter than its saved offset (truncated); reading from the start");
            offset = 0;
        } else if !Marker::trusts(&file, offset, stored) {
            // Fluent Bit 5.1.1's rule (`set_file_position`): the bytes before the saved offset
            // are not the ones it was saved after, so the row belonged to another file (a
            // reused inode) or the file was rewritten while we were stopped. Fluent Bit then
            // starts over too, but at the end when Read_from_Head is off at start; logferry
            // reads such a file from its start, losing nothing.
            tracing::info!(input = %ctx.name, file = %path.display(), offset, "the saved offset's marker does not match the file (inode reused or file rewritten); reading from the start");
            offset = 0;
        }
        if offset != saved {
            // As Fluent Bit does: the row is not trusted again at the next start.
            let reset =
                db_id.and_then(|id| st.tracker.db(|db| db.set_offset(id, 0, Marker::default())));
            if let Some(Err(e)) = reset {
                tracing::error!(error = %e, "cannot save a tail offset");
            }
        }
        let key = st.next_key;
        st.next_key += 1;
        st.tracker
            .register(key, db_id, offset, Some(Arc::clone(&file)));
        tracing::info!(input = %ctx.name, file = %path.display(), inode = dev_ino.1, offset, "following file");
        self.files.opened.fetch_add(1, Ordering::Relaxed);
        st.files.insert(
            dev_ino,
            Followed {
                key,
                db_id,
                tag: self.tag_for(ctx, &path_str),
                path: path.to_path_buf(),
                path_str,
                file,
                dev_ino,
                read_offset: offset,
                partial: Vec::new(),
                line_start: offset,
                skipping: false,
                joiner: Joiner::with_limit(self.join_limit),
                rotated_at: rotated.then(Instant::now),
                last_check: Instant::now(),
                eof: false,
                mark: Vec::with_capacity(MARK),
                ml: self
                    .multiline
                    .as_ref()
                    .map(|m| (0..3).map(|_| m.new_group()).collect()),
                ml_start: [None; 3],
            },
        );
    }

    /// Finds files matching Path (minus Exclude_Path, Ignore_Older) that are not followed yet.
    fn scan(&self, ctx: &InputContext, st: &mut State, first_scan: bool) {
        let now = std::time::SystemTime::now();
        for pattern in &self.patterns {
            let Ok(paths) = glob::glob(pattern) else {
                continue;
            };
            for path in paths.flatten() {
                let s = path.to_string_lossy();
                if self.exclude.iter().any(|e| e.matches(&s)) {
                    continue;
                }
                let Ok(meta) = std::fs::metadata(&path) else {
                    continue;
                };
                if !meta.is_file() || st.files.contains_key(&(meta.dev(), meta.ino())) {
                    continue;
                }
                if let (Some(older), Ok(mtime)) = (self.o.ignore_older, meta.modified()) {
                    if now.duration_since(mtime).unwrap_or_default() > older {
                        continue;
                    }
                }
                self.follow(ctx, st, &path, first_scan, None, false, None);
            }
        }
    }

    /// At start: files the DB knows as rotated away that still exist with the same inode and
    /// are not fully read are drained (Fluent Bit forgets them, losing their tail), under the
    /// tag of the path they had before rotation when logferry recorded it.
    fn drain_rotated_leftovers(&self, ctx: &InputContext, st: &mut State) {
        let rows = match st.tracker.db(Db::all).transpose() {
            Ok(Some(rows)) => rows,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(error = %e, "cannot list the tail DB");
                return;
            }
        };
        for row in rows {
            let path = PathBuf::from(&row.name);
            let now = std::fs::metadata(&path);
            if !row.rotated {
                // Still at its path: the scan follows it. Else it was rotated while the agent
                // was down: find it by inode next to its path (or next to what its symlink
                // points at, as kubelet's /var/log/containers links do) and drain it.
                if now.as_ref().is_ok_and(|m| m.ino() == row.inode) {
                    continue;
                }
                let Some(moved) = find_inode(&path, row.inode) else {
                    continue;
                };
                match std::fs::metadata(&moved) {
                    Ok(m) if m.len() > row.offset => {
                        tracing::info!(input = %ctx.name, file = %row.name, now = %moved.display(), offset = row.offset,
                            "the file was rotated while the agent was down; reading it to its end");
                        if let Some(Err(e)) = st
                            .tracker
                            .db(|db| db.rotate(row.id, &moved.to_string_lossy()))
                        {
                            tracing::error!(error = %e, "cannot record a rotation in the tail DB");
                        }
                        self.follow(
                            ctx,
                            st,
                            &moved,
                            true,
                            Some((row.id, row.offset, row.marker)),
                            true,
                            Some(row.origin.as_deref().unwrap_or(&row.name)),
                        );
                    }
                    _ => {}
                }
                continue;
            }
            match now {
                Ok(m) if m.ino() == row.inode && m.len() > row.offset => {
                    tracing::info!(input = %ctx.name, file = %row.name, origin = row.origin.as_deref().unwrap_or("-"), offset = row.offset, "draining a rotated file left unfinished");
                    self.follow(
                        ctx,
                        st,
                        &path,
                        true,
                        Some((row.id, row.offset, row.marker)),
                        true,
                        row.origin.as_deref(),
                    );
                }
                Ok(m) if m.ino() == row.inode => {}
                _ => {
                    let _ = st.tracker.db(|db| db.delete(row.id));
                }
            }
        }
    }

    /// After the first scan, as Fluent Bit 5.1 does (`flb_tail_db_stale_file_delete`, called
    /// from `in_tail_init` right after `flb_tail_scan`): rows of inodes not followed now are
    /// deleted, so that a file that later gets one of their inodes starts fresh.
    fn purge_stale(&self, ctx: &InputContext, st: &State) {
        let followed: HashSet<u64> = st.files.keys().map(|&(_, ino)| ino).collect();
        match st.tracker.db(|db| db.purge_stale(&followed)) {
            Some(Ok(n)) => {
                tracing::info!(input = %ctx.name, count = n, "tail DB: deleted the rows of files not followed (stale inodes)");
            }
            Some(Err(e)) => tracing::error!(error = %e, "cannot purge stale rows from the tail DB"),
            None => {}
        }
    }

    /// Reads every file that has new bytes; returns how many bytes were read.
    async fn read_all(&self, ctx: &InputContext, st: &mut State) -> Result<u64, PluginError> {
        let mut read = 0;
        // Rotated files first, then in discovery order: a rotated file's last lines were
        // written before anything in the file that replaced it.
        let mut keys: Vec<(bool, FileKey, (u64, u64))> = st
            .files
            .iter()
            .map(|(k, f)| (f.rotated_at.is_none(), f.key, *k))
            .collect();
        keys.sort_unstable();
        for (_, _, k) in keys {
            // Paused: stop here; the order above resumes with the same file.
            if ctx.shutdown.is_cancelled() || ctx.emitter.is_paused() || !st.held.is_empty() {
                break;
            }
            let State {
                files,
                tracker,
                buf,
                held,
                ..
            } = &mut *st;
            let Some(f) = files.get_mut(&k) else { continue };
            read += self.read_file(ctx, tracker, buf, held, f).await?;
        }
        Ok(read)
    }

    /// Reads `f` up to `ROUND_BYTES`, stopping as soon as the input is paused (what was read
    /// then waits in `held`); returns the bytes read.
    async fn read_file(
        &self,
        ctx: &InputContext,
        tracker: &Tracker,
        buf: &mut [u8],
        held: &mut VecDeque<Held>,
        f: &mut Followed,
    ) -> Result<u64, PluginError> {
        let mut out: Vec<(Record, u64)> = Vec::new();
        let mut out_bytes = 0usize;
        let mut read_total = 0u64;
        // A round that starts where the last one found the end first checks that the bytes
        // just before the offset are still the ones read there (`Followed::mark`): a file
        // truncated and written again past the offset between two looks (copytruncate under
        // a fast writer) fails it. The check is part of the round's first read, which starts
        // `MARK` bytes early, so a wake-up costs one read instead of two.
        let mut check_mark = f.eof && f.mark_fits();
        while read_total < ROUND_BYTES {
            if ctx.emitter.is_paused() || !held.is_empty() {
                break;
            }
            let back = if check_mark { f.mark.len() } else { 0 };
            let got = match f.file.read_at(buf, f.read_offset - back as u64) {
                Ok(got) => got,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!(input = %ctx.name, file = %f.path.display(), error = %e, "read failed");
                    break;
                }
            };
            if check_mark {
                check_mark = false;
                if got < back || buf[..back] != f.mark[..] {
                    tracing::info!(input = %ctx.name, file = %f.path.display(), offset = f.read_offset, "file truncated and rewritten; reading from the start");
                    f.truncated(tracker);
                    continue;
                }
            }
            let n = got - back;
            if n == 0 {
                // At the end: a file now shorter than our offset was truncated (copytruncate).
                // Checking here, on every EOF, narrows the window in which a writer could
                // refill it past our offset unnoticed. A read that began `back` bytes early
                // and got them has shown the file reaches the offset: no need to ask its size.
                if back == 0 && f.file.metadata().is_ok_and(|m| m.len() < f.read_offset) {
                    tracing::info!(input = %ctx.name, file = %f.path.display(), offset = f.read_offset, "file truncated; reading from the start");
                    f.truncated(tracker);
                    continue;
                }
                f.eof = true;
                break;
            }
            f.eof = false;
            let data = &buf[back..got];
            f.remember_tail(data);
            let block_start = f.read_offset;
            f.read_offset += n as u64;
            read_total += n as u64;
            out_bytes += n;
            self.split_lines(ctx, f, data, block_start, &mut out);
            if out_bytes >= EMIT_BYTES {
                self.hand_off(ctx, tracker, held, f, std::mem::take(&mut out), out_bytes)
                    .await?;
                out_bytes = 0;
            }
            if got < buf.len() {
                // A regular file reads short only at its end: this is where it ends now. A
                // second read would return nothing and cost two system calls (the read and
                // the size check above) on every round of a file written a line at a time.
                // What a writer appends after this read wakes the loop (inotify, or the next
                // poll) and is read then; a truncation shows in that round's first read.
                f.eof = true;
                break;
            }
        }
        if self.join {
            let mut framed = Vec::new();
            let first = f.joiner.earliest_start().unwrap_or(f.line_start);
            f.joiner.flush(Some(self.join_flush), &mut framed);
            for (r, end) in framed {
                f.multiline_push(r, first, end, &mut out);
            }
        }
        f.multiline_flush(false, &mut out);
        self.hand_off(ctx, tracker, held, f, out, out_bytes).await?;
        Ok(read_total)
    }

    /// Splits a block into lines, carrying an incomplete last line over.
    fn split_lines(
        &self,
        ctx: &InputContext,
        f: &mut Followed,
        data: &[u8],
        block_start: u64,
        out: &mut Vec<(Record, u64)>,
    ) {
        let max = self.o.buffer_max_size.0.max(1) as usize;
        let mut start = 0usize;
        for nl in memchr::memchr_iter(b'\n', data) {
            let end_off = block_start + nl as u64 + 1;
            if f.skipping {
                f.skipping = false;
                f.partial.clear();
            } else if f.partial.is_empty() {
                let line = &data[start..nl];
                if line.len() > max {
                    self.long_line(ctx, f, line, end_off, out);
                } else {
                    self.line(ctx, f, line, f.line_start, end_off, out);
                }
            } else {
                let mut line = std::mem::take(&mut f.partial);
                line.extend_from_slice(&data[start..nl]);
                if line.len() > max {
                    self.long_line(ctx, f, &line, end_off, out);
                } else {
                    self.line(ctx, f, &line, f.line_start, end_off, out);
                }
                line.clear();
                f.partial = line;
            }
            f.line_start = end_off;
            start = nl + 1;
        }
        if !f.skipping {
            f.partial.extend_from_slice(&data[start..]);
            if f.partial.len() > max {
                let line = std::mem::take(&mut f.partial);
                let at = f.line_start;
                self.long_line(ctx, f, &line, at, out);
                f.skipping = true;
            }
        }
    }

    /// A line longer than Buffer_Max_Size: skipped (Skip_Long_Lines On, unless
    /// Truncate_Long_Lines On) or cut to its first Buffer_Max_Size bytes; counted in Fluent
    /// Bit's `fluentbit_input_long_line_skipped_total` / `_truncated_total`. Either way the file
    /// goes on (Fluent Bit stops reading the file when both are Off; logferry never gives up a
    /// file for one line).
    fn long_line(
        &self,
        ctx: &InputContext,
        f: &mut Followed,
        line: &[u8],
        end_off: u64,
        out: &mut Vec<(Record, u64)>,
    ) {
        let max = self.o.buffer_max_size.0.max(1) as usize;
        // As Fluent Bit 5.1: Truncate_Long_Lines wins over Skip_Long_Lines.
        if self.o.skip_long_lines && !self.o.truncate_long_lines {
            self.files.long_line_skipped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(input = %ctx.name, file = %f.path.display(), offset = f.line_start,
                bytes = line.len(), buffer_max_size = max, "skipping a line longer than Buffer_Max_Size");
        } else {
            self.files
                .long_line_truncated
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(input = %ctx.name, file = %f.path.display(), offset = f.line_start,
                bytes = line.len(), buffer_max_size = max, "line longer than Buffer_Max_Size: keeping its first Buffer_Max_Size bytes");
            let mut cut = max.min(line.len());
            while cut > 0 && !is_char_boundary(line, cut) {
                cut -= 1;
            }
            let mut r = crate::format::raw_record(&self.o.key, &line[..cut]);
            self.decorate(f, &mut r, f.line_start);
            out.push((r, end_off));
        }
    }

    /// One complete line (without its `\n`) spanning `[start, end)`.
    fn line(
        &self,
        ctx: &InputContext,
        f: &mut Followed,
        mut line: &[u8],
        start: u64,
        end: u64,
        out: &mut Vec<(Record, u64)>,
    ) {
        if let Some(stripped) = line.strip_suffix(b"\r") {
            line = stripped;
        }
        if line.is_empty() && self.o.skip_empty_lines {
            return;
        }
        let mut d = match &self.parser {
            Some(p) => match std::str::from_utf8(line).ok().and_then(|t| p.parse(t)) {
                Some(parsed) => crate::format::Decoded {
                    record: Record::new(
                        parsed.time.unwrap_or_else(logferry_core::EventTime::now),
                        parsed.body,
                    ),
                    partial: false,
                    stream: 2,
                },
                // A line the parser does not take is passed on as it is.
                None => self.framing.decode(&self.o.key, line),
            },
            None => self.framing.decode(&self.o.key, line),
        };
        self.decorate(f, &mut d.record, start);
        if self.multiline.is_none() {
            if self.join {
                self.join_piece(ctx, f, d, start, end, out);
            } else {
                out.push((d.record, end));
            }
            return;
        }
        // A joined record's first piece may start before this line: take the earliest start the
        // joiner held, which is never later than the true one.
        let first = f.joiner.earliest_start().unwrap_or(start).min(start);
        let mut framed = Vec::new();
        if self.join {
            self.join_piece(ctx, f, d, start, end, &mut framed);
        } else {
            framed.push((d.record, end));
        }
        for (record, end) in framed {
            f.multiline_push(record, first, end, out);
        }
    }

    /// Feeds one piece to the file's joiner; a message cut at `multiline_buffer_limit` is
    /// counted in Fluent Bit's `fluentbit_input_multiline_truncated_total` and logged, as
    /// Fluent Bit's tail does ("multiline message truncated due to buffer limit").
    fn join_piece(
        &self,
        ctx: &InputContext,
        f: &mut Followed,
        d: crate::format::Decoded,
        start: u64,
        end: u64,
        out: &mut Vec<(Record, u64)>,
    ) {
        if let Some(cut) = f.joiner.push(d, start, end, out) {
            self.files
                .multiline_truncated
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(input = %ctx.name, file = %f.path.display(), offset = cut.start,
                kept = cut.kept, "multiline message truncated due to buffer limit (multiline_buffer_limit): keeping its first bytes, dropping the rest of its pieces");
        }
    }

    fn decorate(&self, f: &Followed, r: &mut Record, start: u64) {
        if let Some(k) = &self.o.path_key {
            r.body
                .insert(k.as_str(), Value::Str(f.path_str.as_ref().into()));
        }
        if let Some(k) = &self.o.offset_key {
            r.body.insert(k.as_str(), Value::Int(start as i64));
        }
    }

    /// Hands on records read from `f`: their delivery commits the offset up to the last
    /// complete record, never past a message still being joined. They are emitted at once when
    /// the input has room, else kept in `held` behind what is already there.
    async fn hand_off(
        &self,
        ctx: &InputContext,
        tracker: &Tracker,
        held: &mut VecDeque<Held>,
        f: &Followed,
        out: Vec<(Record, u64)>,
        bytes: usize,
    ) -> Result<(), PluginError> {
        let Some(&(_, last_end)) = out.last() else {
            return Ok(());
        };
        let mut commit = last_end;
        if let Some(s) = f.hold_start() {
            commit = commit.min(s);
        }
        let h = Held {
            key: f.key,
            seq: tracker.reserve(f.key, commit),
            tag: Arc::clone(&f.tag),
            records: out.into_iter().map(|(r, _)| r).collect(),
            bytes,
        };
        if held.is_empty() && !ctx.emitter.is_paused() {
            self.send(ctx, tracker, h).await
        } else {
            held.push_back(h);
            Ok(())
        }
    }

    /// Emits one chunk. Called only when the input was under its limit an instant before, so
    /// `emit` does not wait (it could only if filters grew earlier chunks past the limit in
    /// between, on another thread).
    async fn send(
        &self,
        ctx: &InputContext,
        tracker: &Tracker,
        h: Held,
    ) -> Result<(), PluginError> {
        let t = tracker.clone();
        let (key, seq) = (h.key, h.seq);
        ctx.emitter
            .emit(
                h.tag,
                h.records,
                h.bytes,
                Some(Box::new(move |s| t.settle(key, seq, s))),
            )
            .await
    }

    /// Emits held chunks, in order, while the input has room; returns whether none is left.
    async fn drain_held(&self, ctx: &InputContext, st: &mut State) -> Result<bool, PluginError> {
        while !ctx.emitter.is_paused() {
            let Some(h) = st.held.pop_front() else { break };
            self.send(ctx, &st.tracker, h).await?;
        }
        Ok(st.held.is_empty())
    }

    /// Everything still pending in `f`, for a file read for the last time (closed after
    /// rotation, or Exit_On_Eof): messages being joined, and a last line without a newline,
    /// which becomes a record ending at the end of the file so that the offset covers it.
    /// Fluent Bit 5.1.1 drops such a line (its buffer is freed with the file); logferry keeps it.
    fn finish(&self, ctx: &InputContext, f: &mut Followed, out: &mut Vec<(Record, u64)>) {
        if !f.skipping && !f.partial.is_empty() {
            let line = std::mem::take(&mut f.partial);
            let (start, end) = (f.line_start, f.read_offset);
            self.line(ctx, f, &line, start, end, out);
            f.line_start = end;
        }
        f.flush_all(out);
    }

    /// Exit_On_Eof: every file is read to its end; emit what is pending (waiting for room if
    /// need be) and stop.
    async fn exit_on_eof(&self, ctx: &InputContext, st: &mut State) -> Result<(), PluginError> {
        let State {
            files,
            tracker,
            held,
            ..
        } = &mut *st;
        for f in files.values_mut() {
            let mut out = Vec::new();
            self.finish(ctx, f, &mut out);
            self.hand_off(ctx, tracker, held, f, out, 0).await?;
        }
        while !st.held.is_empty() {
            tokio::select! {
                _ = ctx.shutdown.cancelled() => break,
                _ = ctx.emitter.ready() => {}
            }
            self.drain_held(ctx, st).await?;
        }
        tracing::info!(input = %ctx.name, files = st.files.len(), "every file read to its end (Exit_On_Eof)");
        Ok(())
    }

    /// Rotation, truncation and removal checks; closing files rotated away once read to their
    /// end and `Rotate_Wait` has passed; and `Rotated_Hold_Limit`.
    async fn check_files(&self, ctx: &InputContext, st: &mut State) -> Result<(), PluginError> {
        let mut close = Vec::new();
        let mut rotated_any = false;
        // Files rotated away or deleted and kept open: (rotated at, key, map key, unread bytes).
        let mut holding: Vec<(Instant, FileKey, (u64, u64), u64)> = Vec::new();
        for (k, f) in st.files.iter_mut() {
            if f.last_check.elapsed() < self.o.watcher_interval.unwrap_or(ROTATION_CHECK)
                && f.rotated_at.is_none()
            {
                continue;
            }
            f.last_check = Instant::now();
            let size = f.file.metadata().map(|m| m.len()).ok();
            // copytruncate: the same file got shorter than what we read.
            if let Some(len) = size.filter(|&len| len < f.read_offset) {
                tracing::info!(input = %ctx.name, file = %f.path.display(), size = len, offset = f.read_offset, "file truncated; reading from the start");
                f.truncated(&st.tracker);
            }
            if f.rotated_at.is_none() {
                let same = std::fs::metadata(&f.path)
                    .map(|m| (m.dev(), m.ino()) == f.dev_ino)
                    .unwrap_or(false);
                if !same {
                    f.rotated_at = Some(Instant::now());
                    rotated_any = true;
                    self.files.rotated.fetch_add(1, Ordering::Relaxed);
                    let new_name = current_name(&f.file);
                    tracing::info!(input = %ctx.name, file = %f.path.display(),
                        now = new_name.as_deref().unwrap_or("(removed)"),
                        "file rotated or removed; reading it to its end");
                    if let (Some(n), Some(id)) = (&new_name, f.db_id) {
                        if let Some(Err(e)) = st.tracker.db(|db| db.rotate(id, n)) {
                            tracing::error!(error = %e, "cannot record a rotation in the tail DB");
                        }
                    }
                }
            }
            if let Some(at) = f.rotated_at {
                // Kept open until read to its end, however long the input stays paused;
                // then Rotate_Wait (counted from the rotation) as in Fluent Bit.
                // `size` was just taken through the descriptor: never a stale `eof`.
                let drained = size.is_none_or(|len| len <= f.read_offset);
                if drained && at.elapsed() >= self.o.rotate_wait {
                    close.push(*k);
                } else {
                    holding.push((at, f.key, *k, f.unread(size.unwrap_or(0))));
                }
            }
        }
        for k in close {
            if let Some(mut f) = st.files.remove(&k) {
                let mut out = Vec::new();
                self.finish(ctx, &mut f, &mut out);
                self.hand_off(ctx, &st.tracker, &mut st.held, &f, out, 0)
                    .await?;
                tracing::info!(input = %ctx.name, file = %f.path.display(), "closing rotated file");
                self.files.closed.fetch_add(1, Ordering::Relaxed);
                st.tracker.forget_when_drained(f.key);
                retire_if_unused(st, &f.tag);
            }
        }
        let mut total: u64 = holding.iter().map(|h| h.3).sum();
        let limit = self.o.rotated_hold_limit.0;
        if limit > 0 && total > limit {
            holding.sort_unstable_by_key(|h| (h.0, h.1));
            for (_, _, k, unread) in holding {
                if total <= limit {
                    break;
                }
                let Some(mut f) = st.files.remove(&k) else {
                    continue;
                };
                // What was read is handed on (messages being joined are complete lines);
                // the unread rest, and a line cut by it, are dropped and counted.
                f.partial.clear();
                f.skipping = false;
                let mut out = Vec::new();
                f.flush_all(&mut out);
                self.hand_off(ctx, &st.tracker, &mut st.held, &f, out, 0)
                    .await?;
                tracing::warn!(input = %ctx.name, file = %f.path.display(), origin = %f.path_str,
                    bytes = unread, held = total, limit, reason = "Rotated_Hold_Limit",
                    "closing a rotated file before reading it to its end: rotated and deleted files hold more unread bytes than Rotated_Hold_Limit; its unread bytes are dropped");
                self.files.closed.fetch_add(1, Ordering::Relaxed);
                self.files
                    .rotated_dropped_bytes
                    .fetch_add(unread, Ordering::Relaxed);
                self.files
                    .rotated_dropped_files
                    .fetch_add(1, Ordering::Relaxed);
                st.tracker.forget_when_drained(f.key);
                retire_if_unused(st, &f.tag);
                total -= unread;
            }
        }
        self.files.rotated_held.store(total, Ordering::Relaxed);
        if rotated_any {
            self.scan(ctx, st, false);
        }
        Ok(())
    }
}

/// Tells filters that keep state per tag (kubernetes) that `tag` is gone once no file this
/// input follows has it (a rotated file's successor at the same path keeps it).
fn retire_if_unused(st: &State, tag: &Tag) {
    if !st.files.values().any(|f| f.tag == *tag) {
        logferry_engine::retired_tags::retire(Arc::clone(tag));
    }
}

/// Whether `offset` is at the current end of `file`, asked through the descriptor now. One
/// that cannot be asked cannot be read either: it counts as at its end.
fn at_end(file: &File, offset: u64) -> bool {
    !file.metadata().is_ok_and(|m| m.len() > offset)
}

/// A file with inode `ino` in the directory of `path`, or of the file `path` links to.
fn find_inode(path: &Path, ino: u64) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = path.parent().map(Path::to_path_buf).into_iter().collect();
    if let Some(d) = std::fs::canonicalize(path)
        .ok()
        .and_then(|t| t.parent().map(Path::to_path_buf))
    {
        if !dirs.contains(&d) {
            dirs.push(d);
        }
    }
    dirs.into_iter().find_map(|d| {
        std::fs::read_dir(d).ok()?.flatten().find_map(|e| {
            let m = e.metadata().ok()?;
            (m.is_file() && m.ino() == ino).then(|| e.path())
        })
    })
}

/// Where an open file lives now (after a rename), or `None` if it was deleted.
fn current_name(file: &File) -> Option<String> {
    use std::os::fd::AsRawFd;
    let p = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).ok()?;
    let s = p.to_string_lossy().into_owned();
    (!s.ends_with(" (deleted)")).then_some(s)
}

/// The directory part of a glob before its first wildcard.
fn static_dir(pattern: &str) -> PathBuf {
    let cut = pattern.find(['*', '?', '[']).unwrap_or(pattern.len());
    let prefix = &pattern[..cut];
    match prefix.rfind('/') {
        Some(0) => PathBuf::from("/"),
        Some(i) => PathBuf::from(&prefix[..i]),
        None => PathBuf::from("."),
    }
}

fn is_char_boundary(b: &[u8], i: usize) -> bool {
    i >= b.len() || (b[i] as i8) >= -0x40
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn static_dir_of_patterns() {
        assert_eq!(
            static_dir("/var/log/containers/*.log"),
            PathBuf::from("/var/log/containers")
        );
        assert_eq!(
            static_dir("/var/log/pods/*/*/*.log"),
            PathBuf::from("/var/log/pods")
        );
        assert_eq!(static_dir("/x.log"), PathBuf::from("/"));
        assert_eq!(static_dir("rel/*.log"), PathBuf::from("rel"));
    }

    /// Closing a rotated file asks its size again: a writer may have appended after the read
    /// that set `eof`.
    #[test]
    fn at_end_asks_the_descriptor_each_time() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("e.log");
        std::fs::write(&p, "0123456789").unwrap();
        let f = File::open(&p).unwrap();
        assert!(at_end(&f, 10));
        assert!(!at_end(&f, 9));
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(b"more\n")
            .unwrap();
        assert!(!at_end(&f, 10), "appended after the last read");
        std::fs::remove_file(&p).unwrap();
        assert!(!at_end(&f, 10), "deleted but open: still unread bytes");
        assert!(at_end(&f, 15));
    }

    #[test]
    fn char_boundaries() {
        let s = "aé".as_bytes();
        assert!(is_char_boundary(s, 1));
        assert!(!is_char_boundary(s, 2));
        assert!(is_char_boundary(s, 3));
    }
}
