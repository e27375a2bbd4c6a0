//! `multiline` filter: joins records that belong to one message (stack traces, lines a
//! container runtime split) into one record (Fluent Bit's `filter_multiline`).
//!
//! As documented (Fluent Bit 5.x, "Multiline" filter):
//! - `multiline.parser`: multiline parsers to apply, comma-separated and/or repeated: the
//!   built-in `docker`, `cri`, `go`, `python`, `java`, `ruby`, or a `[MULTILINE_PARSER]`.
//! - `multiline.key_content`: the key holding the text, overriding each parser's own.
//! - `mode`: `parser` (default) joins with the parsers; `partial_message` joins the records
//!   Docker's Fluentd log driver splits, which carry `partial_message`, `partial_id`,
//!   `partial_ordinal` and `partial_last` fields in the record body (so no record metadata is
//!   needed). The two modes are exclusive.
//! - `buffer` (default On): a message still incomplete at the end of a chunk is held and comes
//!   out when a later chunk completes it, or once it has waited `flush_ms` (default 2000), or
//!   at shutdown. With `buffer` Off every chunk is joined on its own and what is pending is
//!   flushed at its end. Held records come back through [`Filter::flush_due`]: the engine sends
//!   them through the filters after this one and on to the outputs, so, unlike Fluent Bit's
//!   re-emission through an `in_emitter` input, filters before this one do not see them twice
//!   and several multiline filters may match the same tags.
//! - There is no emitter input. `emitter_storage.type` (`memory` or `filesystem`, checked as
//!   Fluent Bit does) needs none: held records keep their chunk unacknowledged, so they are
//!   read again after a crash whatever the storage, and with a filesystem input they are
//!   stored with the chunk that carries them on. `emitter_name`, `emitter_mem_buf_limit` and
//!   `debug_flush` are accepted and not applied, with a warning (`--dry-run`, and at start):
//!   held records count against their 2 MiB message limit and their input's `Mem_Buf_Limit`
//!   (their chunk stays charged while they are held).
//! - **Held records keep their chunk's delivery open** (see [`MultilineFilter`]): an input
//!   that commits after delivery (tail's offsets) does not move past a line this filter still
//!   holds, so a crash while a stack trace is being joined reads it again instead of losing it.
//!
//! Where the docs are silent this follows Fluent Bit's `ml.c` / `ml_concat.c`, except:
//! - **Several parsers form a chain.** Fluent Bit hands each record to the first parser that
//!   takes it; logferry's `MultilineGroup` does not report whether it took a record, so each
//!   record goes through every listed parser in order, each seeing what the one before emitted
//!   (a record a parser does not take passes it unchanged). For parsers of different formats
//!   (`go, java, python`) the result is the same, except that a message one parser joined is
//!   offered to the next ones, which pass it on unless it starts one of their own messages. It
//!   also makes `cri, java` join CRI partial lines and then Java stack traces in one filter.
//!   `docker` and `cri` expect raw or freshly parsed container lines: list one of them, first
//!   (not both: what `docker` emits has a `stream` field, so `cri` would take it as its own).
//! - Each parser keeps one group per tag and per value of the record's `stream` field, so
//!   stdout and stderr never mix, whatever the parser (Fluent Bit keeps one per tag and relies
//!   on the parser's `key_group`).
//! - A held message waits `flush_ms` from its first line at each parser (Fluent Bit flushes
//!   everything pending every `flush_ms`; the parser's own `flush_timeout` is overridden in
//!   both). The engine asks every 250 ms, so a message comes out up to 250 ms late.
//! - `partial_message` mode: parts are joined per tag and `partial_id`, in arrival order, with
//!   nothing between them; the joined record is the first part's time and fields, without the
//!   `partial_*` fields, with `multiline.key_content` last holding the text. It comes out with
//!   the part whose `partial_last` is true, or once no part arrived for `flush_ms`. A part
//!   without `partial_id` or a string content passes through unchanged. `partial_message` needs
//!   `multiline.key_content` and `buffer` On (Fluent Bit logs both as errors); a
//!   `multiline.parser` given with it is ignored with a warning (the docs say it is not
//!   allowed; Fluent Bit ignores it).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use logferry_core::config::{ByteSize, ConfigError, Entry, Section};
use logferry_core::{options, Record, Str, Tag, Value};
use logferry_engine::{BuildContext, Carrier, Filter, FilterPlugin, Hold, Released};
use logferry_parsers::{MultilineGroup, MultilineParser};

options! {
    /// Options of the `multiline` filter.
    pub struct MultilineFilterOptions for "multiline filter" {
        /// Multiline parsers to apply, comma-separated (repeatable).
        pub parser: Vec<String> = ["multiline.parser"] None,
        /// The key holding the text to join; overrides the parsers' own key_content.
        pub key_content: Option<String> = ["multiline.key_content"] None,
        /// `parser` (join with multiline parsers) or `partial_message` (Docker split records).
        pub mode: String = ["mode"] Some("parser"),
        /// Hold incomplete messages across chunks until completed or flush_ms passes.
        pub buffer: bool = ["buffer"] Some("on"),
        /// Milliseconds a held message waits before it is flushed as it is.
        pub flush_ms: u64 = ["flush_ms"] Some("2000"),
        /// Name of Fluent Bit's emitter input (accepted; logferry needs no emitter).
        pub emitter_name: Option<String> = ["emitter_name"] None,
        /// Storage of Fluent Bit's emitter (memory or filesystem): logferry has no emitter; held
        /// records keep their input's storage and acknowledgement.
        pub emitter_storage_type: String = ["emitter_storage.type"] Some("memory"),
        /// Memory limit of Fluent Bit's emitter (accepted, not applied: held records stay
        /// charged to their input's Mem_Buf_Limit).
        pub emitter_mem_buf_limit: ByteSize = ["emitter_mem_buf_limit"] Some("10M"),
        /// Log every flushed message (accepted, not applied).
        pub debug_flush: bool = ["debug_flush"] Some("off"),
    }
}

/// The registry entry.
pub static PLUGIN: FilterPlugin = FilterPlugin {
    name: "multiline",
    aliases: &[],
    description: "Concatenate multiline messages",
    options: MultilineFilterOptions::OPTIONS,
    default_workers: 0,
    build,
};

/// Where the parser's content key is parked while a `multiline.key_content` override takes its
/// name (short enough to stay inline in a `Str`).
const PARKED: &str = "\u{1}logferry.ml.parked";

/// A slot unused this long with nothing pending is dropped (tags come and go with files).
const IDLE: Duration = Duration::from_secs(60);

/// The field whose value separates the groups of one tag.
const STREAM: &str = "stream";

/// The last value given for `key`, with its entry.
fn last<'a>(entries: &[&'a Entry], key: &str) -> Option<&'a Entry> {
    entries
        .iter()
        .rev()
        .find(|e| e.key.eq_ignore_ascii_case(key))
        .copied()
}

fn build(
    ctx: &BuildContext,
    section: &Section,
    entries: &[&Entry],
) -> Result<Box<dyn Filter>, ConfigError> {
    let opts = MultilineFilterOptions::from_entries(&section.span, entries, &[])?;
    let span_of = |key: &str| last(entries, key).map_or(&section.span, |e| &e.span);
    let key_content = opts
        .key_content
        .as_deref()
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(Str::from);

    let partial = match opts.mode.trim().to_ascii_lowercase().as_str() {
        "parser" => false,
        "partial_message" => true,
        other => {
            return Err(ConfigError::key(
                span_of("mode"),
                "mode",
                format!("'mode' must be 'partial_message' or 'parser', got '{other}'"),
            ))
        }
    };
    for (key, why) in [
        ("emitter_mem_buf_limit", "accepted but not applied: logferry has no emitter; held records stay charged to their input's Mem_Buf_Limit"),
        ("debug_flush", "accepted but not applied"),
        ("emitter_name", "accepted but not applied: logferry has no emitter input; held records are counted under this filter"),
    ] {
        if let Some(e) = last(entries, key) {
            ctx.note(e, why);
        }
    }
    if opts.buffer {
        let t = opts.emitter_storage_type.trim();
        if !t.eq_ignore_ascii_case("memory") && !t.eq_ignore_ascii_case("filesystem") {
            return Err(ConfigError::key(
                span_of("emitter_storage.type"),
                "emitter_storage.type",
                format!("expected 'memory' or 'filesystem', got '{t}'"),
            ));
        }
    }

    let kind = if partial {
        if !opts.buffer {
            return Err(ConfigError::key(
                span_of("buffer"),
                "buffer",
                "'partial_message' mode requires 'buffer' to be On",
            ));
        }
        let Some(key) = key_content else {
            return Err(ConfigError::key(
                span_of("mode"),
                "mode",
                "'partial_message' mode requires 'multiline.key_content'",
            ));
        };
        if let Some(e) = last(entries, "multiline.parser") {
            ctx.note(
                e,
                "accepted but not applied: 'multiline.parser' is not used in 'partial_message' mode",
            );
        }
        Kind::Partial { key }
    } else {
        let mut stages = Vec::new();
        for e in entries
            .iter()
            .filter(|e| e.key.eq_ignore_ascii_case("multiline.parser"))
        {
            for name in e.value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                let Some(parser) = ctx.parsers.multiline(name) else {
                    return Err(ConfigError::key(
                        &e.span,
                        &e.key,
                        format!("multiline parser '{name}' is not defined (built-in: docker, cri, go, python, java, ruby; or a [MULTILINE_PARSER])"),
                    ));
                };
                let rename = key_content
                    .as_ref()
                    .filter(|k| k.as_str() != parser.key_content())
                    .map(|k| (k.clone(), Str::from(parser.key_content())));
                stages.push(Stage { parser, rename });
            }
        }
        if stages.is_empty() {
            return Err(ConfigError::key(
                span_of("multiline.parser"),
                "multiline.parser",
                "the default 'mode' 'parser' requires at least one 'multiline.parser'",
            ));
        }
        Kind::Parser(stages)
    };
    Ok(Box::new(MultilineFilter {
        kind,
        buffer: opts.buffer,
        flush_after: Duration::from_millis(opts.flush_ms),
        tags: HashMap::new(),
    }))
}

/// How records are joined.
#[derive(Clone, Debug)]
enum Kind {
    /// Multiline parsers, applied in order.
    Parser(Vec<Stage>),
    /// Docker `partial_message` records, joined on `key`.
    Partial { key: Str },
}

/// One multiline parser of the chain.
#[derive(Clone, Debug)]
struct Stage {
    parser: Arc<MultilineParser>,
    /// `(filter key, parser key)` when `multiline.key_content` differs from the parser's.
    rename: Option<(Str, Str)>,
}

impl Stage {
    /// Gives the record the parser's view: its own content key parked, the configured one
    /// named like the parser's.
    fn enter(&self, record: &mut Record) {
        if let Some((filter_key, parser_key)) = &self.rename {
            record.body.rename(parser_key, PARKED);
            record.body.rename(filter_key, parser_key);
        }
    }

    /// Undoes [`Stage::enter`] on records the parser emitted.
    fn leave(&self, records: &mut [Record]) {
        if let Some((filter_key, parser_key)) = &self.rename {
            for r in records {
                r.body.rename(parser_key, filter_key);
                r.body.rename(PARKED, parser_key);
            }
        }
    }
}

/// The state of one parser for one tag and `stream` value.
#[derive(Debug)]
struct Slot {
    stream: Option<Str>,
    group: MultilineGroup,
    used: Instant,
    /// For each message pending in `group` (by its serial), the number of the oldest chunk
    /// whose lines it holds.
    origins: Vec<(u64, u64)>,
}

impl Slot {
    /// The oldest chunk any pending message of this slot holds lines of.
    fn oldest(&self) -> Option<u64> {
        self.origins.iter().map(|&(_, o)| o).min()
    }

    /// After a push of lines from chunk `origin` (or a flush): messages that appeared were
    /// started by those lines; messages that completed are forgotten.
    fn track(&mut self, origin: u64) {
        let pending: Vec<u64> = self.group.pending_serials().collect();
        self.origins.retain(|(s, _)| pending.contains(s));
        for s in pending {
            if !self.origins.iter().any(|(k, _)| *k == s) {
                self.origins.push((s, origin));
            }
        }
    }
}

/// A Docker partial message being joined.
#[derive(Debug)]
struct Packer {
    id: Str,
    /// The first part without its content and `partial_*` fields.
    record: Record,
    text: String,
    last_write: Instant,
    /// The number of the chunk its first part came in.
    origin: u64,
}

impl Packer {
    fn complete(self, key: &Str) -> Record {
        let mut record = self.record;
        record
            .body
            .push(key.clone(), Value::Str(Str::from(self.text)));
        record
    }
}

/// Everything held for one tag.
#[derive(Debug, Default)]
struct TagState {
    /// Per stage, one slot per `stream` value.
    slots: Vec<Vec<Slot>>,
    packers: Vec<Packer>,
    /// Delivery shares of the chunks whose lines are held, by chunk number, oldest first.
    holds: VecDeque<(u64, Hold)>,
}

impl TagState {
    /// The oldest chunk whose lines are still held, if any are.
    fn oldest(&self) -> Option<u64> {
        self.slots
            .iter()
            .flatten()
            .filter_map(Slot::oldest)
            .chain(self.packers.iter().map(|p| p.origin))
            .min()
    }

    /// Lets go of the shares of chunks none of whose lines are held any more: they leave with
    /// the records released now.
    fn release(&mut self) -> Vec<Hold> {
        let keep_from = self.oldest().unwrap_or(u64::MAX);
        let mut out = Vec::new();
        while self.holds.front().is_some_and(|(seq, _)| *seq < keep_from) {
            if let Some((_, h)) = self.holds.pop_front() {
                out.push(h);
            }
        }
        out
    }

    /// Drops idle slots; whether nothing is left.
    fn prune(&mut self, now: Instant) -> bool {
        for slots in &mut self.slots {
            slots.retain(|s| {
                s.group.pending_since().is_some() || now.saturating_duration_since(s.used) < IDLE
            });
        }
        self.packers.is_empty() && self.holds.is_empty() && self.slots.iter().all(Vec::is_empty)
    }
}

/// The running filter.
///
/// Records it holds keep their chunks' deliveries open (Fluent Bit's multiline filter has
/// its emitter re-ingest held records, acknowledging the original chunk at once): a chunk's
/// share is kept until none of its lines are held, and then leaves with the records released,
/// so an input that commits after delivery (tail) never commits past a line still held here.
#[derive(Debug)]
pub struct MultilineFilter {
    kind: Kind,
    buffer: bool,
    flush_after: Duration,
    tags: HashMap<Tag, TagState>,
}

/// Sends `records` (each with the number of the oldest chunk its lines came from) through the
/// stages from `from` on; returns what comes out of the last.
fn run_stages(
    stages: &[Stage],
    slots: &mut [Vec<Slot>],
    from: usize,
    mut records: Vec<(Record, u64)>,
    now: Instant,
) -> Vec<(Record, u64)> {
    for (stage, slots) in stages.iter().zip(slots.iter_mut()).skip(from) {
        if records.is_empty() {
            break;
        }
        let mut out: Vec<(Record, u64)> = Vec::with_capacity(records.len());
        let mut emitted = Vec::new();
        for (mut record, origin) in records {
            let stream = record.body.get(STREAM).and_then(Value::as_str);
            let i = match slots.iter().position(|s| s.stream.as_deref() == stream) {
                Some(i) => i,
                None => {
                    slots.push(Slot {
                        stream: stream.map(Str::from),
                        group: stage.parser.new_group(),
                        used: now,
                        origins: Vec::new(),
                    });
                    slots.len() - 1
                }
            };
            let slot = &mut slots[i];
            slot.used = now;
            // What comes out now holds lines of this record or of messages pending before it.
            let from_origin = slot.oldest().map_or(origin, |o| o.min(origin));
            stage.enter(&mut record);
            slot.group.push(record, &mut emitted);
            stage.leave(&mut emitted);
            slot.track(origin);
            out.extend(emitted.drain(..).map(|r| (r, from_origin)));
        }
        records = out;
    }
    records
}

/// Flushes, stage by stage, the groups `due` selects, sending what each releases through the
/// stages after it.
fn flush_stages(
    stages: &[Stage],
    slots: &mut [Vec<Slot>],
    now: Instant,
    due: impl Fn(&MultilineGroup) -> bool,
) -> Vec<(Record, u64)> {
    let mut out = Vec::new();
    for i in 0..stages.len().min(slots.len()) {
        let mut released = Vec::new();
        for slot in slots[i].iter_mut() {
            if slot.group.pending_since().is_some() && due(&slot.group) {
                let origin = slot.oldest().unwrap_or(0);
                let mut flushed = Vec::new();
                slot.group.flush(&mut flushed);
                stages[i].leave(&mut flushed);
                slot.track(origin);
                released.extend(flushed.into_iter().map(|r| (r, origin)));
            }
        }
        if !released.is_empty() {
            out.extend(run_stages(stages, slots, i + 1, released, now));
        }
    }
    out
}

/// Fluent Bit's test for `partial_message` / `partial_last`: the value starts with `true`,
/// in any case.
fn is_true(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Str(s)) => s
            .as_bytes()
            .get(..4)
            .is_some_and(|b| b.eq_ignore_ascii_case(b"true")),
        Some(Value::Bool(b)) => *b,
        _ => false,
    }
}

/// Joins Docker partial messages of chunk `origin`; returns the records to pass on now.
fn join_partials(
    key: &Str,
    packers: &mut Vec<Packer>,
    records: Vec<Record>,
    now: Instant,
    origin: u64,
) -> Vec<Record> {
    let mut out = Vec::with_capacity(records.len());
    for mut record in records {
        if !is_true(record.body.get("partial_message")) {
            out.push(record);
            continue;
        }
        let Some(id) = record.body.get("partial_id").and_then(Value::as_str) else {
            tracing::debug!(
                "multiline filter: partial_message record without partial_id; passed on"
            );
            out.push(record);
            continue;
        };
        let Some(content) = record.body.get(key).and_then(Value::as_str) else {
            out.push(record);
            continue;
        };
        let last = is_true(record.body.get("partial_last"));
        let at = match packers.iter().position(|p| p.id == id) {
            Some(i) => {
                let p = &mut packers[i];
                p.text.push_str(content);
                p.last_write = now;
                i
            }
            None => {
                let id = Str::from(id);
                let text = match record.body.remove(key) {
                    Some(Value::Str(s)) => s.into_string(),
                    _ => String::new(),
                };
                record.body.0.retain(|(k, _)| !k.starts_with("partial_"));
                packers.push(Packer {
                    id,
                    record,
                    text,
                    last_write: now,
                    origin,
                });
                packers.len() - 1
            }
        };
        if last {
            out.push(packers.remove(at).complete(key));
        }
    }
    out
}

#[async_trait]
impl Filter for MultilineFilter {
    /// What it holds is per tag, and the router sends each tag through one instance.
    fn fork(&self) -> Option<Box<dyn Filter>> {
        Some(Box::new(MultilineFilter {
            kind: self.kind.clone(),
            buffer: self.buffer,
            flush_after: self.flush_after,
            tags: HashMap::new(),
        }))
    }
    async fn filter(&mut self, tag: &str, records: &mut Vec<Record>) {
        let mut carrier = Carrier::new(None, 0);
        self.filter_carried(tag, records, &mut carrier).await;
    }

    async fn filter_carried(
        &mut self,
        tag: &str,
        records: &mut Vec<Record>,
        carrier: &mut Carrier<'_>,
    ) {
        if records.is_empty() {
            return;
        }
        let now = Instant::now();
        let seq = carrier.seq();
        if !self.tags.contains_key(tag) {
            let stages = match &self.kind {
                Kind::Parser(s) => s.len(),
                Kind::Partial { .. } => 0,
            };
            let state = TagState {
                slots: (0..stages).map(|_| Vec::new()).collect(),
                ..TagState::default()
            };
            self.tags.insert(Tag::from(tag), state);
        }
        let Some(state) = self.tags.get_mut(tag) else {
            return;
        };
        let input = std::mem::take(records);
        *records = match &self.kind {
            Kind::Parser(stages) => {
                let input = input.into_iter().map(|r| (r, seq)).collect();
                let mut out = run_stages(stages, &mut state.slots, 0, input, now);
                if !self.buffer {
                    out.extend(flush_stages(stages, &mut state.slots, now, |_| true));
                }
                out.into_iter().map(|(r, _)| r).collect()
            }
            Kind::Partial { key } => join_partials(key, &mut state.packers, input, now, seq),
        };
        // Lines of this chunk may be among those held: keep a share of it until they go.
        if state.oldest().is_some() {
            if let Some(h) = carrier.hold() {
                state.holds.push_back((seq, h));
            }
        }
        carrier.carry(state.release());
    }

    fn flush_due(&mut self, all: bool) -> Vec<Released> {
        let now = Instant::now();
        let after = self.flush_after;
        let mut due = Vec::new();
        for (tag, state) in self.tags.iter_mut() {
            let records = match &self.kind {
                Kind::Parser(stages) => flush_stages(stages, &mut state.slots, now, |g| {
                    all || g
                        .pending_since()
                        .is_some_and(|t| now.saturating_duration_since(t) >= after)
                })
                .into_iter()
                .map(|(r, _)| r)
                .collect(),
                Kind::Partial { key } => {
                    let mut out = Vec::new();
                    let mut i = 0;
                    while i < state.packers.len() {
                        let p = &state.packers[i];
                        if all || now.saturating_duration_since(p.last_write) > after {
                            out.push(state.packers.remove(i).complete(key));
                        } else {
                            i += 1;
                        }
                    }
                    out
                }
            };
            let held = state.release();
            if !records.is_empty() || !held.is_empty() {
                due.push(Released {
                    tag: Arc::clone(tag),
                    records,
                    held,
                    restart: false,
                    charge: None,
                });
            }
        }
        self.tags.retain(|_, s| !s.prune(now));
        due
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use logferry_core::config::{Config, Entry, Section, SectionKind, Span};
    use logferry_core::{EventTime, Map, Record, Tag, Value};
    use logferry_engine::{BuildContext, Filter};

    use super::PLUGIN;
    use crate::testing;

    /// The docs' `parsers_multiline.conf`:
    ///
    /// ```text
    /// [MULTILINE_PARSER]
    ///   Name          multiline-regex-test
    ///   Type          regex
    ///   Flush_Timeout 1000
    ///   Rule      "start_state"   "/([A-Za-z]+ \d+ \d+\:\d+\:\d+)(.*)/"  "cont"
    ///   Rule      "cont"          "/^\s+at.*/"                     "cont"
    /// ```
    fn doc_parser() -> Section {
        let span = Span::new(&Arc::from(Path::new("parsers_multiline.conf")), 1);
        let mut s = Section::new(SectionKind::MultilineParser, span.clone());
        s.push("Name", "multiline-regex-test", span.clone());
        s.push("Type", "regex", span.clone());
        s.push("Flush_Timeout", "1000", span.clone());
        s.push(
            "Rule",
            r#""start_state"   "/([A-Za-z]+ \d+ \d+\:\d+\:\d+)(.*)/"  "cont""#,
            span.clone(),
        );
        s.push(
            "Rule",
            r#""cont"          "/^\s+at.*/"                     "cont""#,
            span,
        );
        s
    }

    /// Builds the filter from entries on lines 2, 3, … of `test.conf`.
    fn build(entries: &[(&str, &str)]) -> Result<Box<dyn Filter>, String> {
        let mut section = Section::new(SectionKind::Filter, testing::span(1));
        for (i, (k, v)) in entries.iter().enumerate() {
            section.push(*k, *v, testing::span(i as u32 + 2));
        }
        let config = Config {
            sections: vec![doc_parser()],
            path: None,
        };
        let ctx = BuildContext::standalone("multiline.0", config).map_err(|e| format!("{e:?}"))?;
        let refs: Vec<&Entry> = section.entries.iter().collect();
        (PLUGIN.build)(&ctx, &section, &refs).map_err(|e| e.to_string())
    }

    fn filter(entries: &[(&str, &str)]) -> Box<dyn Filter> {
        build(entries).unwrap_or_else(|e| panic!("build {entries:?}: {e}"))
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }

    /// One record per `(stream, log)`; `stream` omitted when empty.
    fn recs(lines: &[(&str, &str)]) -> Vec<Record> {
        lines
            .iter()
            .enumerate()
            .map(|(i, (stream, log))| {
                let mut m = Map::new();
                m.push("log", *log);
                if !stream.is_empty() {
                    m.push("stream", *stream);
                }
                Record::new(EventTime::from_parts(1_700_000_000 + i as i64, 0), m)
            })
            .collect()
    }

    fn logs(lines: &[&str]) -> Vec<Record> {
        recs(&lines.iter().map(|l| ("", *l)).collect::<Vec<_>>())
    }

    /// Runs one chunk through the filter under `tag`.
    fn run(
        rt: &tokio::runtime::Runtime,
        f: &mut dyn Filter,
        tag: &str,
        input: Vec<Record>,
    ) -> Vec<Record> {
        let mut v = input;
        rt.block_on(f.filter(tag, &mut v));
        v
    }

    fn field<'a>(r: &'a Record, key: &str) -> &'a str {
        r.body.get(key).and_then(Value::as_str).unwrap_or("<none>")
    }

    fn contents(rs: &[Record]) -> Vec<&str> {
        rs.iter().map(|r| field(r, "log")).collect()
    }

    /// The docs' `test.log`.
    const TEST_LOG: &str = r#"single line...
Dec 14 06:41:08 Exception in thread "main" java.lang.RuntimeException: Something has gone wrong, aborting!
    at com.myproject.module.MyProject.badMethod(MyProject.java:22)
    at com.myproject.module.MyProject.oneMoreMethod(MyProject.java:18)
    at com.myproject.module.MyProject.anotherMethod(MyProject.java:14)
    at com.myproject.module.MyProject.someMethod(MyProject.java:10)
    at com.myproject.module.MyProject.main(MyProject.java:6)
another line...
panic: my panic

goroutine 4 [running]:
panic(0x45cb40, 0x47ad70)
  /usr/local/go/src/runtime/panic.go:542 +0x46c fp=0xc42003f7b8 sp=0xc42003f710 pc=0x422f7c
main.main.func1(0xc420024120)
  foo.go:6 +0x39 fp=0xc42003f7d8 sp=0xc42003f7b8 pc=0x451339
runtime.goexit()
  /usr/local/go/src/runtime/asm_amd64.s:2337 +0x1 fp=0xc42003f7e0 sp=0xc42003f7d8 pc=0x44b4d1
created by main.main
  foo.go:5 +0x58

goroutine 1 [chan receive]:
runtime.gopark(0x4739b8, 0xc420024178, 0x46fcd7, 0xc, 0xc420028e17, 0x3)
  /usr/local/go/src/runtime/proc.go:280 +0x12c fp=0xc420053e30 sp=0xc420053e00 pc=0x42503c
runtime.goparkunlock(0xc420024178, 0x46fcd7, 0xc, 0x1000f010040c217, 0x3)
  /usr/local/go/src/runtime/proc.go:286 +0x5e fp=0xc420053e70 sp=0xc420053e30 pc=0x42512e
runtime.chanrecv(0xc420024120, 0x0, 0xc420053f01, 0x4512d8)
  /usr/local/go/src/runtime/chan.go:506 +0x304 fp=0xc420053f20 sp=0xc420053e70 pc=0x4046b4
runtime.chanrecv1(0xc420024120, 0x0)
  /usr/local/go/src/runtime/chan.go:388 +0x2b fp=0xc420053f50 sp=0xc420053f20 pc=0x40439b
main.main()
  foo.go:9 +0x6f fp=0xc420053f80 sp=0xc420053f50 pc=0x4512ef
runtime.main()
  /usr/local/go/src/runtime/proc.go:185 +0x20d fp=0xc420053fe0 sp=0xc420053f80 pc=0x424bad
runtime.goexit()
  /usr/local/go/src/runtime/asm_amd64.s:2337 +0x1 fp=0xc420053fe8 sp=0xc420053fe0 pc=0x44b4d1

goroutine 2 [force gc (idle)]:
runtime.gopark(0x4739b8, 0x4ad720, 0x47001e, 0xf, 0x14, 0x1)
  /usr/local/go/src/runtime/proc.go:280 +0x12c fp=0xc42003e768 sp=0xc42003e738 pc=0x42503c
runtime.goparkunlock(0x4ad720, 0x47001e, 0xf, 0xc420000114, 0x1)
  /usr/local/go/src/runtime/proc.go:286 +0x5e fp=0xc42003e7a8 sp=0xc42003e768 pc=0x42512e
runtime.forcegchelper()
  /usr/local/go/src/runtime/proc.go:238 +0xcc fp=0xc42003e7e0 sp=0xc42003e7a8 pc=0x424e5c
runtime.goexit()
  /usr/local/go/src/runtime/asm_amd64.s:2337 +0x1 fp=0xc42003e7e8 sp=0xc42003e7e0 pc=0x44b4d1
created by runtime.init.4
  /usr/local/go/src/runtime/proc.go:227 +0x35

goroutine 3 [GC sweep wait]:
runtime.gopark(0x4739b8, 0x4ad7e0, 0x46fdd2, 0xd, 0x419914, 0x1)
  /usr/local/go/src/runtime/proc.go:280 +0x12c fp=0xc42003ef60 sp=0xc42003ef30 pc=0x42503c
runtime.goparkunlock(0x4ad7e0, 0x46fdd2, 0xd, 0x14, 0x1)
  /usr/local/go/src/runtime/proc.go:286 +0x5e fp=0xc42003efa0 sp=0xc42003ef60 pc=0x42512e
runtime.bgsweep(0xc42001e150)
  /usr/local/go/src/runtime/mgcsweep.go:52 +0xa3 fp=0xc42003efd8 sp=0xc42003efa0 pc=0x419973
runtime.goexit()
  /usr/local/go/src/runtime/asm_amd64.s:2337 +0x1 fp=0xc42003efe0 sp=0xc42003efd8 pc=0x44b4d1
created by runtime.gcenable
  /usr/local/go/src/runtime/mgc.go:216 +0x58
one more line, no multiline"#;

    #[test]
    fn doc_example_go_and_custom_regex() {
        // Docs, "Configuration example": `multiline.key_content log`,
        // `multiline.parser go, multiline-regex-test` over test.log gives five records: the
        // single lines as they are, the Java trace joined, the Go panic joined.
        let lines: Vec<&str> = TEST_LOG.lines().collect();
        let java = lines[1..7].join("\n");
        let go_end = lines.len() - 1;
        let go = lines[8..go_end].join("\n");
        let expected = vec![
            "single line...",
            java.as_str(),
            "another line...",
            go.as_str(),
            "one more line, no multiline",
        ];
        assert!(go.starts_with("panic: my panic\n\ngoroutine 4 [running]:\n"));
        assert!(go.ends_with("runtime/mgc.go:216 +0x58"));
        let rt = rt();
        for buffer in ["off", "on"] {
            let mut f = filter(&[
                ("multiline.key_content", "log"),
                ("multiline.parser", "go, multiline-regex-test"),
                ("buffer", buffer),
            ]);
            let out = run(&rt, f.as_mut(), "tail.0", logs(&lines));
            assert_eq!(contents(&out), expected, "buffer {buffer}");
            // A joined record keeps its first line's time.
            assert_eq!(out[1].time, EventTime::from_parts(1_700_000_001, 0));
            assert!(f.flush_due(true).is_empty());
        }
    }

    const TRACE: [&str; 5] = [
        r#"Exception in thread "main" java.lang.RuntimeException: boom"#,
        "\tat com.example.A.run(A.java:10)",
        "\tat com.example.B.call(B.java:20)",
        "Caused by: java.lang.IllegalStateException: bad state",
        "\tat com.example.C.init(C.java:30)",
    ];

    /// A tracked chunk through the filter as the router passes it: returns what comes out, the
    /// chunk's settled outcome (`None` while open) and the shares it now carries.
    fn run_tracked(
        rt: &tokio::runtime::Runtime,
        f: &mut dyn Filter,
        seq: u64,
        input: Vec<Record>,
    ) -> (
        Vec<Record>,
        std::sync::mpsc::Receiver<logferry_core::DeliveryStatus>,
        Vec<logferry_engine::Hold>,
    ) {
        let d = logferry_core::Delivery::new();
        let (tx, rx) = std::sync::mpsc::channel();
        d.on_done(Box::new(move |s| {
            let _ = tx.send(s);
        }));
        let mut v = input;
        let mut carrier = logferry_engine::Carrier::new(Some(&d), seq);
        rt.block_on(f.filter_carried("app", &mut v, &mut carrier));
        let carried = carrier.into_carried();
        d.mark(logferry_core::DeliveryStatus::Delivered); // the router's share
        drop(d);
        (v, rx, carried)
    }

    #[test]
    fn held_lines_keep_their_chunk_open_until_they_leave_with_a_later_one() {
        use logferry_core::DeliveryStatus::Delivered;
        let rt = rt();
        let mut f = filter(&[("multiline.parser", "java")]);
        // Chunk 1: a trace's first two lines, held.
        let (out1, rx1, carried1) = run_tracked(&rt, f.as_mut(), 1, logs(&TRACE[..2]));
        assert!(out1.is_empty() && carried1.is_empty());
        assert!(rx1.try_recv().is_err(), "chunk 1 is held, not settled");
        // Chunk 2: the rest of the trace, then a new message that stays held.
        let (out2, rx2, carried2) = run_tracked(
            &rt,
            f.as_mut(),
            2,
            logs(&[TRACE[2], "plain line", TRACE[0]]),
        );
        assert_eq!(
            contents(&out2),
            [TRACE[..3].join("\n").as_str(), "plain line"]
        );
        assert_eq!(carried2.len(), 1, "chunk 1's share leaves with the trace");
        assert!(
            rx1.try_recv().is_err(),
            "chunk 1 waits for chunk 2's outcome"
        );
        assert!(rx2.try_recv().is_err(), "chunk 2's last line is held");
        for h in carried2 {
            h.settle(Delivered);
        }
        assert_eq!(rx1.try_recv(), Ok(Delivered));
        // Chunk 3 adds to the held message: both 2 and 3 stay open until the flush.
        let (out3, rx3, carried3) = run_tracked(&rt, f.as_mut(), 3, logs(&[TRACE[1]]));
        assert!(out3.is_empty() && carried3.is_empty());
        assert!(rx2.try_recv().is_err() && rx3.try_recv().is_err());
        let due = f.flush_due(true);
        assert_eq!(due.len(), 1);
        assert_eq!(contents(&due[0].records), [TRACE[..2].join("\n").as_str()]);
        assert_eq!(due[0].held.len(), 2, "shares of chunks 2 and 3");
        for d in due {
            for h in d.held {
                h.settle(Delivered);
            }
        }
        assert_eq!(rx2.try_recv(), Ok(Delivered));
        assert_eq!(rx3.try_recv(), Ok(Delivered));
    }

    #[test]
    fn java_trace_split_across_chunks_becomes_one_record() {
        let rt = rt();
        let mut f = filter(&[("multiline.parser", "java")]);
        let a = run(
            &rt,
            f.as_mut(),
            "app",
            logs(&["before", TRACE[0], TRACE[1]]),
        );
        assert_eq!(contents(&a), ["before"]);
        let b = run(&rt, f.as_mut(), "app", logs(&[TRACE[2]]));
        assert!(b.is_empty(), "{b:?}");
        let c = run(&rt, f.as_mut(), "app", logs(&[TRACE[3], TRACE[4], "after"]));
        assert_eq!(contents(&c), [TRACE.join("\n").as_str(), "after"]);
        assert!(f.flush_due(true).is_empty());
    }

    #[test]
    fn buffer_off_joins_each_chunk_on_its_own() {
        let rt = rt();
        let mut f = filter(&[("multiline.parser", "java"), ("buffer", "off")]);
        let a = run(
            &rt,
            f.as_mut(),
            "app",
            logs(&["before", TRACE[0], TRACE[1]]),
        );
        assert_eq!(contents(&a), ["before", TRACE[..2].join("\n").as_str()]);
        let b = run(&rt, f.as_mut(), "app", logs(&[TRACE[2]]));
        assert_eq!(contents(&b), [TRACE[2]]);
        assert!(f.flush_due(true).is_empty());
    }

    #[test]
    fn stdout_and_stderr_interleaved_stay_separate() {
        let rt = rt();
        let mut f = filter(&[("multiline.parser", "java")]);
        let input = recs(&[
            ("stdout", "java.lang.RuntimeException: out"),
            ("stderr", "java.lang.IllegalStateException: err"),
            ("stdout", "\tat out.A.a(A.java:1)"),
            ("stderr", "\tat err.B.b(B.java:2)"),
            ("stdout", "\tat out.A.c(A.java:3)"),
            ("stdout", "end out"),
            ("stderr", "end err"),
        ]);
        let out = run(&rt, f.as_mut(), "kube.pod", input);
        let got: Vec<(&str, &str)> = out
            .iter()
            .map(|r| (field(r, "stream"), field(r, "log")))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "stdout",
                    "java.lang.RuntimeException: out\n\tat out.A.a(A.java:1)\n\tat out.A.c(A.java:3)"
                ),
                ("stdout", "end out"),
                (
                    "stderr",
                    "java.lang.IllegalStateException: err\n\tat err.B.b(B.java:2)"
                ),
                ("stderr", "end err"),
            ]
        );
        // Tags are separate too: the same stream under another tag does not continue it.
        let a = run(&rt, f.as_mut(), "t1", recs(&[("stdout", TRACE[0])]));
        let b = run(&rt, f.as_mut(), "t2", recs(&[("stdout", TRACE[1])]));
        assert!(a.is_empty());
        assert_eq!(contents(&b), [TRACE[1]]);
    }

    #[test]
    fn held_record_is_released_after_flush_ms_and_at_shutdown() {
        let rt = rt();
        let flush = Duration::from_millis(600);
        let mut f = filter(&[("multiline.parser", "java"), ("flush_ms", "600")]);
        let pushed = Instant::now();
        let out = run(&rt, f.as_mut(), "app", logs(&[TRACE[0], TRACE[1]]));
        assert!(out.is_empty());
        for wait in [0, 200] {
            std::thread::sleep(Duration::from_millis(wait));
            let due = f.flush_due(false);
            // Only meaningful while flush_ms has not passed (a stalled machine may overshoot).
            if pushed.elapsed() < flush {
                assert!(due.is_empty(), "released before flush_ms: {due:?}");
            }
        }
        std::thread::sleep(flush.saturating_sub(pushed.elapsed()) + Duration::from_millis(50));
        let due = f.flush_due(false);
        assert_eq!(due.len(), 1);
        assert_eq!(&*due[0].tag, "app");
        assert_eq!(contents(&due[0].records), [TRACE[..2].join("\n").as_str()]);
        assert!(f.flush_due(false).is_empty());
        assert!(f.flush_due(true).is_empty());

        // At shutdown everything held comes out at once, per tag.
        let _ = run(&rt, f.as_mut(), "a", logs(&[TRACE[0]]));
        let _ = run(&rt, f.as_mut(), "b", logs(&[TRACE[0], TRACE[1]]));
        assert!(f.flush_due(false).is_empty());
        let mut due = f.flush_due(true);
        due.sort_by(|x, y| x.tag.cmp(&y.tag));
        let got: Vec<(Tag, Vec<&str>)> = due
            .iter()
            .map(|d| (Arc::clone(&d.tag), contents(&d.records)))
            .collect();
        assert_eq!(
            got,
            [
                (Tag::from("a"), vec![TRACE[0]]),
                (Tag::from("b"), vec![TRACE[..2].join("\n").as_str()]),
            ]
        );
        assert!(f.flush_due(true).is_empty());
    }

    #[test]
    fn cri_partial_lines_then_java_in_one_filter() {
        // Raw CRI lines (as tail reads them without a parser), stdout and stderr interleaved;
        // the trace's lines are split into CRI partial (`P`) parts, some across chunks.
        let lines = [
            r#"2024-05-01T10:00:00.000000001Z stdout P Exception in thread "main" java.lang.Runt"#,
            "2024-05-01T10:00:00.000000002Z stderr F an error line",
            "2024-05-01T10:00:00.000000003Z stdout F imeException: boom",
            "2024-05-01T10:00:00.000000004Z stdout F \tat com.example.A.run(A.java:10)",
            "2024-05-01T10:00:00.000000005Z stdout P \tat com.example.B.ca",
            "2024-05-01T10:00:00.000000006Z stdout P ll(B.ja",
            "2024-05-01T10:00:00.000000007Z stdout F va:20)",
            "2024-05-01T10:00:00.000000008Z stdout F done",
        ];
        let rt = rt();
        let mut f = filter(&[("multiline.parser", "cri, java")]);
        let mut out = Vec::new();
        for chunk in [&lines[..2], &lines[2..5], &lines[5..6], &lines[6..]] {
            out.extend(run(&rt, f.as_mut(), "kube.app", logs(chunk)));
        }
        let got: Vec<(&str, &str)> = out
            .iter()
            .map(|r| (field(r, "stream"), field(r, "log")))
            .collect();
        assert_eq!(
            got,
            [
                ("stderr", "an error line"),
                (
                    "stdout",
                    "Exception in thread \"main\" java.lang.RuntimeException: boom\n\tat com.example.A.run(A.java:10)\n\tat com.example.B.call(B.java:20)"
                ),
                ("stdout", "done"),
            ]
        );
        // The joined record carries the first part's time, read from the CRI line.
        assert_eq!(out[1].time.secs(), 1_714_557_600);
        assert!(f.flush_due(true).is_empty());
    }

    #[test]
    fn key_content_overrides_the_parsers_key() {
        let rt = rt();
        let mut f = filter(&[
            ("multiline.parser", "java"),
            ("multiline.key_content", "message"),
        ]);
        let mk = |msg: &str, log: &str| {
            let mut m = Map::new();
            m.push("log", log);
            m.push("message", msg);
            Record::new(EventTime::from_parts(1, 0), m)
        };
        let out = run(
            &rt,
            f.as_mut(),
            "app",
            vec![mk(TRACE[0], "x"), mk(TRACE[1], "y"), mk("end", "z")],
        );
        let got: Vec<(&str, &str)> = out
            .iter()
            .map(|r| (field(r, "message"), field(r, "log")))
            .collect();
        assert_eq!(got, [(TRACE[..2].join("\n").as_str(), "x"), ("end", "z")]);
        // Keys keep their names and order.
        let keys: Vec<&str> = out[0].body.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["log", "message"]);
        // A record with only `log` is not read: it passes through.
        let out = run(&rt, f.as_mut(), "app", logs(&[TRACE[0], TRACE[1]]));
        assert_eq!(contents(&out), [TRACE[0], TRACE[1]]);
    }

    /// A record as Docker's Fluentd log driver sends a part, as in the docs' "Docker partial
    /// message use case".
    fn part(log: &str, id: &str, ordinal: u32, last: bool) -> Record {
        let mut m = Map::new();
        m.push("source", "stdout");
        m.push("log", log);
        m.push("partial_message", "true");
        m.push("partial_id", id);
        m.push("partial_ordinal", ordinal.to_string());
        m.push("partial_last", if last { "true" } else { "false" });
        m.push(
            "container_id",
            "a96998303938eab6087a7f8487ca40350f2c252559bc6047569a0b11b936f0f2",
        );
        m.push("container_name", "/hopeful_taussig");
        Record::new(EventTime::from_parts(100 + ordinal as i64, 0), m)
    }

    #[test]
    fn partial_message_mode_joins_docker_split_records() {
        // Docs: `multiline.key_content log`, `Mode partial_message`.
        let rt = rt();
        let mut f = filter(&[
            ("multiline.key_content", "log"),
            ("mode", "partial_message"),
            ("flush_ms", "300"),
        ]);
        let id = "dc37eb08b4242c41757d4cd995d983d1cdda4589193755a22fcf47a638317da0";
        let mut plain = Map::new();
        plain.push("log", "plain");
        let a = run(
            &rt,
            f.as_mut(),
            "docker",
            vec![
                part("aaa", id, 1, false),
                Record::new(EventTime::default(), plain),
                part("bbb", id, 2, false),
            ],
        );
        assert_eq!(contents(&a), ["plain"]);
        let b = run(
            &rt,
            f.as_mut(),
            "docker",
            vec![part("ccc", id, 3, true), part("x", "other", 1, false)],
        );
        assert_eq!(b.len(), 1);
        let keys: Vec<&str> = b[0].body.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["source", "container_id", "container_name", "log"]);
        assert_eq!(field(&b[0], "log"), "aaabbbccc");
        assert_eq!(b[0].time, EventTime::from_parts(101, 0));
        // The unfinished one comes out once no part arrived for flush_ms.
        let written = Instant::now();
        let due = f.flush_due(false);
        if written.elapsed() < Duration::from_millis(300) {
            assert!(due.is_empty(), "released before flush_ms: {due:?}");
        }
        std::thread::sleep(Duration::from_millis(350));
        let due = f.flush_due(false);
        assert_eq!(due.len(), 1);
        assert_eq!(contents(&due[0].records), ["x"]);
        // Parts without partial_id, or not partial, pass through unchanged.
        let mut no_id = part("y", "z", 1, false);
        no_id.body.remove("partial_id");
        let mut not_partial = part("w", "z", 1, false);
        not_partial.body.insert("partial_message", "false");
        let input = vec![no_id, not_partial];
        let out = run(&rt, f.as_mut(), "docker", input.clone());
        assert_eq!(out, input);
        // At shutdown, everything held.
        let _ = run(&rt, f.as_mut(), "docker", vec![part("s", "held", 1, false)]);
        let due = f.flush_due(true);
        assert_eq!(contents(&due[0].records), ["s"]);
    }

    #[test]
    fn config_errors_name_file_line_and_key() {
        let err = |entries: &[(&str, &str)]| {
            build(entries)
                .err()
                .unwrap_or_else(|| panic!("{entries:?} built"))
        };
        let e = err(&[("multiline.parser", "java, nope")]);
        assert!(
            e.starts_with("test.conf:2: multiline.parser:") && e.contains("'nope'"),
            "{e}"
        );
        let e = err(&[("multiline.parser", "java"), ("multiline.parser", "gone")]);
        assert!(e.starts_with("test.conf:3: multiline.parser:"), "{e}");
        let e = err(&[("multiline.key_content", "log")]);
        assert!(e.starts_with("test.conf:1: multiline.parser:"), "{e}");
        let e = err(&[("multiline.parser", "java"), ("mode", "lines")]);
        assert!(e.starts_with("test.conf:3: mode:"), "{e}");
        let e = err(&[("mode", "partial_message")]);
        assert!(
            e.starts_with("test.conf:2: mode:") && e.contains("multiline.key_content"),
            "{e}"
        );
        let e = err(&[
            ("mode", "partial_message"),
            ("multiline.key_content", "log"),
            ("buffer", "off"),
        ]);
        assert!(e.starts_with("test.conf:4: buffer:"), "{e}");
        let e = err(&[
            ("multiline.parser", "java"),
            ("emitter_storage.type", "disk"),
        ]);
        assert!(e.starts_with("test.conf:3: emitter_storage.type:"), "{e}");
        let e = err(&[("multiline.parser", "java"), ("flush_ms", "soon")]);
        assert!(e.starts_with("test.conf:3: flush_ms:"), "{e}");
        let e = err(&[("multiline.parser", "java"), ("multiline.key", "log")]);
        assert!(e.starts_with("test.conf:3: multiline.key:"), "{e}");
        // Accepted keys.
        assert!(build(&[
            ("multiline.parser", "java"),
            ("multiline.parser", "python,go"),
            ("emitter_name", "ml_emitter"),
            ("emitter_storage.type", "filesystem"),
            ("emitter_mem_buf_limit", "20M"),
            ("debug_flush", "off"),
            ("Mode", "Parser"),
        ])
        .is_ok());
        assert!(build(&[
            ("mode", "partial_message"),
            ("multiline.key_content", "log"),
            ("multiline.parser", "java"),
        ])
        .is_ok());
    }
}
