//! Multiline: joining records that belong to one message (Docker's 16 KiB splits, CRI partial
//! lines, stack traces), after Fluent Bit's `src/multiline`.
//!
//! A [`MultilineParser`] is the shared, compiled definition; a [`MultilineGroup`] is the state of
//! one stream of records (the caller keeps one per file and stream, so stdout and stderr never
//! mix). Records go in with [`MultilineGroup::push`]; completed records come out in order. A
//! record that no rule takes flushes what was pending and passes through unchanged. The caller
//! enforces `flush_timeout` with [`MultilineGroup::pending_since`] and
//! [`MultilineGroup::flush`], and flushes at end of file.
//!
//! Modes, as Fluent Bit's:
//! - `regex`: state-machine rules; continuation lines are joined with `\n` (none added when the
//!   previous part already ends with one). A rule whose next state can be a `start_state`
//!   completes the message at once.
//! - `endswith`: parts are concatenated as they are until one ends with `match_string`.
//! - `equal`: parts are concatenated until the `key_pattern` value equals `match_string`.
//!
//! A joined record is the first part's record (its time and keys) with `key_content` replaced by
//! the concatenation.

mod builtin;
mod config;

use std::sync::Arc;
use std::time::{Duration, Instant};

use logferry_core::{EventTime, Map, Record, Str, Value};

use crate::parser::Parser;
use crate::regex::Pattern;

pub(crate) use builtin::builtin_multiline;
pub(crate) use config::from_section;
pub use config::MultilineOptions;

/// Fluent Bit's default `multiline_buffer_limit` (2 MB): a message is cut there.
pub const DEFAULT_BUFFER_LIMIT: usize = 2 * 1024 * 1024;

/// Fluent Bit's default `flush_timeout` (`FLB_ML_FLUSH_TIMEOUT`).
pub const DEFAULT_FLUSH_TIMEOUT: Duration = Duration::from_millis(4000);

/// One `rule "from_states" "/regex/" "to_state"`.
#[derive(Debug)]
pub(crate) struct Rule {
    /// The states this rule applies in (comma-separated in the config).
    pub(crate) from: Vec<String>,
    pub(crate) pattern: Pattern,
    pub(crate) to: String,
    /// Whether `start_state` is among `from`.
    pub(crate) start: bool,
    /// Rules that may follow (their `from` holds our `to`), start rules excluded.
    pub(crate) next: Vec<usize>,
    /// Whether a start rule may follow: the message is complete once this rule matched.
    pub(crate) next_has_start: bool,
}

/// Links each rule to the rules that can follow it.
pub(crate) fn link_rules(rules: &mut [Rule]) {
    let links: Vec<(Vec<usize>, bool)> = rules
        .iter()
        .map(|r| {
            let follows: Vec<usize> = rules
                .iter()
                .enumerate()
                .filter(|(_, n)| n.from.contains(&r.to))
                .map(|(i, _)| i)
                .collect();
            let has_start = follows.iter().any(|&i| rules[i].start);
            (
                follows.into_iter().filter(|&i| !rules[i].start).collect(),
                has_start,
            )
        })
        .collect();
    for (rule, (next, has_start)) in rules.iter_mut().zip(links) {
        rule.next = next;
        rule.next_has_start = has_start;
    }
}

/// How parts are recognised.
#[derive(Debug)]
pub(crate) enum Mode {
    Regex(Vec<Rule>),
    EndsWith(String),
    Equal(String),
}

/// The compiled definition.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) name: String,
    pub(crate) mode: Mode,
    pub(crate) negate: bool,
    pub(crate) flush_timeout: Duration,
    /// The content key; built-ins may accept alternatives (CRI: `log`, else `message`).
    pub(crate) key_content: Vec<Str>,
    pub(crate) key_group: Option<Str>,
    /// The key `equal`/`endswith` compare (CRI: `_p`, else `logtag`); the content when unset.
    pub(crate) key_pattern: Vec<Str>,
    /// `parser`: applied to each part's content before the rules (as Fluent Bit does); a part
    /// it does not parse passes through unchanged.
    pub(crate) parser: Option<Arc<Parser>>,
    /// Built-ins (docker, cri): a parser for raw lines, i.e. records without `key_group`.
    pub(crate) raw_parser: Option<Arc<Parser>>,
}

/// A multiline parser definition (built-in or `[MULTILINE_PARSER]`).
#[derive(Clone, Debug)]
pub struct MultilineParser {
    inner: Arc<Inner>,
}

impl MultilineParser {
    pub(crate) fn from_inner(inner: Inner) -> Self {
        MultilineParser {
            inner: Arc::new(inner),
        }
    }

    /// The parser's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// How long a pending message may wait before the caller flushes it.
    pub fn flush_timeout(&self) -> Duration {
        self.inner.flush_timeout
    }

    /// The key whose text is matched and joined.
    pub fn key_content(&self) -> &str {
        self.inner
            .key_content
            .first()
            .map(Str::as_str)
            .unwrap_or("log")
    }

    /// A fresh state for one stream of records.
    pub fn new_group(&self) -> MultilineGroup {
        MultilineGroup {
            ml: Arc::clone(&self.inner),
            pending: Vec::new(),
            next_serial: 0,
            limit: DEFAULT_BUFFER_LIMIT,
        }
    }
}

/// A message being assembled, per `key_group` value.
#[derive(Debug)]
struct Pending {
    group: Option<Str>,
    /// The first part's record; its content key receives the concatenation.
    context: Option<(Record, Str)>,
    buf: String,
    /// The regex rule that matched last.
    state: Option<usize>,
    since: Option<Instant>,
    /// Which message this is ([`MultilineGroup::pending_serials`]); set with `since`.
    serial: u64,
}

/// The multiline state of one stream (see the module docs).
#[derive(Debug)]
pub struct MultilineGroup {
    ml: Arc<Inner>,
    pending: Vec<Pending>,
    limit: usize,
    /// The serial the next message started gets.
    next_serial: u64,
}

impl MultilineGroup {
    /// Sets the most bytes a joined message may hold (default 2 MiB); a longer one is cut there
    /// and flushed.
    pub fn with_buffer_limit(mut self, bytes: usize) -> Self {
        self.limit = bytes.max(1);
        self
    }

    /// The parser this group follows.
    pub fn flush_timeout(&self) -> Duration {
        self.ml.flush_timeout
    }

    /// When the oldest message still pending started; `None` when nothing is pending.
    pub fn pending_since(&self) -> Option<Instant> {
        self.pending.iter().filter_map(|p| p.since).min()
    }

    /// A number for each message pending now, distinct from every other message this group
    /// started: a caller can tell which pending messages a `push` started, and so where the
    /// lines still held came from.
    pub fn pending_serials(&self) -> impl Iterator<Item = u64> + '_ {
        self.pending
            .iter()
            .filter(|p| p.since.is_some())
            .map(|p| p.serial)
    }

    /// Flushes every pending message (end of file, or `flush_timeout` passed).
    pub fn flush(&mut self, out: &mut Vec<Record>) {
        let mut order: Vec<usize> = (0..self.pending.len())
            .filter(|&i| self.pending[i].since.is_some())
            .collect();
        order.sort_by_key(|&i| self.pending[i].since);
        for i in order {
            self.flush_one(i, out);
        }
    }

    /// Takes one record. Completed records, and records no rule takes, are appended to `out`.
    pub fn push(&mut self, record: Record, out: &mut Vec<Record>) {
        let ml = Arc::clone(&self.ml);
        let mut record = record;

        // Built-in docker/cri: a raw line (no group key yet) is parsed first.
        if let Some(raw) = &ml.raw_parser {
            let has_group = ml
                .key_group
                .as_ref()
                .is_some_and(|k| record.body.contains_key(k));
            if !has_group {
                match reparse(raw, &ml.key_content, &record) {
                    Some(r) => record = r,
                    None => return self.pass_through(None, record, out),
                }
            }
        }
        if let Some(parser) = &ml.parser {
            match reparse(parser, &ml.key_content, &record) {
                Some(r) => record = r,
                None => {
                    let group = group_of(&ml, &record);
                    return self.pass_through(group, record, out);
                }
            }
        }
        let group = group_of(&ml, &record);
        let Some(content_key) = content_key(&ml.key_content, &record.body) else {
            return self.pass_through(group, record, out);
        };
        let idx = self.slot(group);

        match &ml.mode {
            Mode::EndsWith(s) | Mode::Equal(s) => {
                let matched = {
                    let content = str_of(&record.body, &content_key);
                    let subject = pattern_value(&ml.key_pattern, &record.body).unwrap_or(content);
                    let hit = match &ml.mode {
                        Mode::EndsWith(_) => subject.ends_with(s.as_str()),
                        _ => subject == s,
                    };
                    let p = &mut self.pending[idx];
                    p.buf.push_str(content);
                    hit != ml.negate
                };
                let p = &mut self.pending[idx];
                if p.context.is_none() {
                    p.context = Some((record, content_key));
                    p.since = Some(Instant::now());
                    p.serial = self.next_serial;
                    self.next_serial += 1;
                }
                if matched || self.pending[idx].buf.len() >= self.limit {
                    self.flush_one(idx, out);
                }
            }
            Mode::Regex(rules) => {
                let content = str_of(&record.body, &content_key);
                let p = &mut self.pending[idx];
                let mut matched = None;
                let mut starts = false;
                if let Some(state) = p.state {
                    for &n in &rules[state].next {
                        if rules[n].pattern.is_match(content) {
                            matched = Some(n);
                            break;
                        }
                    }
                }
                if matched.is_none() {
                    matched = rules
                        .iter()
                        .position(|r| r.start && r.pattern.is_match(content));
                    starts = matched.is_some();
                }
                let Some(rule) = matched else {
                    self.pending[idx].state = None;
                    return self.pass_through_at(idx, record, out);
                };
                if starts {
                    if self.pending[idx].since.is_some() {
                        self.flush_one(idx, out);
                    }
                } else {
                    let p = &mut self.pending[idx];
                    if !p.buf.is_empty() && !p.buf.ends_with('\n') {
                        p.buf.push('\n');
                    }
                    if content.is_empty() {
                        p.buf.push('\n');
                    }
                }
                let p = &mut self.pending[idx];
                p.buf.push_str(content);
                p.state = Some(rule);
                if p.context.is_none() {
                    p.context = Some((record, content_key));
                    p.since = Some(Instant::now());
                    p.serial = self.next_serial;
                    self.next_serial += 1;
                }
                if p.buf.len() >= self.limit {
                    self.flush_one(idx, out);
                    self.pending[idx].state = None;
                } else if rules[rule].next_has_start {
                    self.flush_one(idx, out);
                }
            }
        }
    }

    /// The pending slot for a group value, created on first use.
    fn slot(&mut self, group: Option<Str>) -> usize {
        match self.pending.iter().position(|p| p.group == group) {
            Some(i) => i,
            None => {
                self.pending.push(Pending {
                    group,
                    context: None,
                    buf: String::new(),
                    state: None,
                    since: None,
                    serial: 0,
                });
                self.pending.len() - 1
            }
        }
    }

    /// A record no rule takes: what its group had pending goes first, then the record as is.
    fn pass_through(&mut self, group: Option<Str>, record: Record, out: &mut Vec<Record>) {
        if let Some(i) = self.pending.iter().position(|p| p.group == group) {
            self.pending[i].state = None;
            self.flush_one(i, out);
        }
        out.push(record);
    }

    fn pass_through_at(&mut self, idx: usize, record: Record, out: &mut Vec<Record>) {
        self.flush_one(idx, out);
        out.push(record);
    }

    /// Emits slot `idx`'s message, if any.
    fn flush_one(&mut self, idx: usize, out: &mut Vec<Record>) {
        let limit = self.limit;
        let p = &mut self.pending[idx];
        p.since = None;
        let mut text = std::mem::take(&mut p.buf);
        let context = p.context.take();
        if text.len() > limit {
            let mut cut = limit;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        match context {
            Some((mut rec, key)) => {
                rec.body.insert(key, Value::Str(text.into()));
                out.push(rec);
            }
            None if !text.is_empty() => {
                let mut body = Map::with_capacity(1);
                body.push(
                    self.ml
                        .key_content
                        .first()
                        .cloned()
                        .unwrap_or_else(|| Str::from("log")),
                    Value::Str(text.into()),
                );
                out.push(Record::new(EventTime::now(), body));
            }
            None => {}
        }
    }
}

/// The `key_group` value of a record, if it has one.
fn group_of(ml: &Inner, record: &Record) -> Option<Str> {
    let key = ml.key_group.as_ref()?;
    record.body.get(key).and_then(Value::as_str).map(Str::from)
}

/// The first content key present in the record with a string value.
fn content_key(keys: &[Str], body: &Map) -> Option<Str> {
    keys.iter()
        .find(|k| body.get(k).is_some_and(|v| v.as_str().is_some()))
        .cloned()
}

/// The string at `key` (present: checked by `content_key`).
fn str_of<'a>(body: &'a Map, key: &str) -> &'a str {
    body.get(key).and_then(Value::as_str).unwrap_or("")
}

/// The first `key_pattern` value present.
fn pattern_value<'a>(keys: &[Str], body: &'a Map) -> Option<&'a str> {
    keys.iter()
        .find_map(|k| body.get(k).and_then(Value::as_str))
}

/// Parses a record's content with `parser`: the parsed fields become the record, with the
/// parsed time or else the record's.
fn reparse(parser: &Parser, keys: &[Str], record: &Record) -> Option<Record> {
    let key = content_key(keys, &record.body)?;
    let parsed = parser.parse(str_of(&record.body, &key))?;
    Some(Record::new(parsed.time.unwrap_or(record.time), parsed.body))
}
