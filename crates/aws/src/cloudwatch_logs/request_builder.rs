//! Records → log events, grouped by destination.
//!
//! Each record becomes one event: its time in milliseconds and its message (the record as JSON,
//! or the `log_key` value; with EMF metrics, the record plus an `_aws` metadata block). The
//! destination is the rendered templates, else the static names (`log_stream_prefix` + tag).
//!
//! Oversize events are **truncated**, not dropped: a message longer than
//! [`MAX_MESSAGE_BYTES`] (1,048,576 − 26 bytes, the most one
//! PutLogEvents call can carry) is cut at a UTF-8 character boundary, counted in
//! [`Encoded::truncated`] and logged by the sink. Records that give no event (no `log_key`, an
//! empty message, no destination) are listed in [`Encoded::skipped`]; the sink rejects them.

use std::collections::HashMap;
use std::ops::Range;

use logferry_core::packed::{Cursor, UnpackError};
use logferry_core::{EventTime, Map, Record, Value};
use logferry_engine::{BatchRecords, Part, ReadRecords};

use super::batch::MAX_MESSAGE_BYTES;
use super::config::{CloudWatchLogsSettings, EmfMetrics, StreamName};
use crate::encode::{
    escape_json_str, truncate_utf8, write_message, write_message_escaped, EscapedJson, Skip,
};
use crate::template::{sanitize, NameRules, Template};

/// One log event. Its message is kept already escaped for the request body (in
/// [`Encoded::text`]), so each record is encoded once, straight into the form PutLogEvents
/// sends, with no intermediate JSON string and no second escaping pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    /// The message's length in UTF-8 bytes before escaping: what CloudWatch Logs counts.
    pub size: usize,
    /// Where the escaped message lies in [`Encoded::text`].
    pub span: Range<usize>,
    /// Index of the record it came from in the batch ([`logferry_engine::Batch::records`]
    /// order), so that an event the service refuses can be handed back as its record.
    pub record: usize,
}

/// Where events go.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Destination {
    pub group: String,
    pub stream: String,
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.group, self.stream)
    }
}

/// Why a record was dropped before sending.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dropped {
    Message(Skip),
    /// The group template could not be filled and there is no static group.
    NoGroup,
    /// The stream template could not be filled and there is no static stream.
    NoStream,
}

impl Dropped {
    /// Words for the log.
    pub fn reason(self) -> &'static str {
        match self {
            Dropped::Message(s) => s.reason(),
            Dropped::NoGroup => {
                "the log group template could not be filled and no log_group_name is set"
            }
            Dropped::NoStream => {
                "the log stream template could not be filled and no static stream name is set"
            }
        }
    }
}

/// The events of one flush, per destination in order of first appearance (not yet sorted).
#[derive(Debug, Default)]
pub struct Encoded {
    pub streams: Vec<(Destination, Vec<Event>)>,
    /// Every event's message, escaped as the inside of a JSON string, one after another.
    pub text: Vec<u8>,
    /// Records dropped, by reason: their indices in the batch.
    pub skipped: Vec<(Dropped, Vec<usize>)>,
    /// Events whose message was truncated.
    pub truncated: u64,
    /// Records whose template fell back to the static name.
    pub template_fallbacks: u64,
}

impl Encoded {
    fn skip(&mut self, why: Dropped, record: usize) {
        match self.skipped.iter_mut().find(|(w, _)| *w == why) {
            Some((_, v)) => v.push(record),
            None => self.skipped.push((why, vec![record])),
        }
    }

    /// Events in all streams.
    pub fn events(&self) -> usize {
        self.streams.iter().map(|(_, e)| e.len()).sum()
    }

    /// `e`'s message, escaped.
    pub fn escaped(&self, e: &Event) -> &[u8] {
        self.text.get(e.span.clone()).unwrap_or_default()
    }

    /// `e`'s message as sent (unescaped; for tests and logs).
    pub fn message(&self, e: &Event) -> String {
        let mut quoted = Vec::with_capacity(e.span.len() + 2);
        quoted.push(b'"');
        quoted.extend_from_slice(self.escaped(e));
        quoted.push(b'"');
        serde_json::from_slice(&quoted).unwrap_or_default()
    }
}

/// The PutLogEvents body for `events` (sorted, one call's worth) of `dest`: the JSON the SDK
/// would write, with the messages copied from `text` as they are.
pub fn put_body(out: &mut Vec<u8>, dest: &Destination, events: &[Event], text: &[u8]) {
    out.extend_from_slice(b"{\"logGroupName\":\"");
    escape_json_str(out, dest.group.as_bytes());
    out.extend_from_slice(b"\",\"logStreamName\":\"");
    escape_json_str(out, dest.stream.as_bytes());
    out.extend_from_slice(b"\",\"logEvents\":[");
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // itoa rather than `write!`: one event per record, and core::fmt's machinery cost
        // more than the digits.
        out.extend_from_slice(b"{\"timestamp\":");
        out.extend_from_slice(itoa::Buffer::new().format(e.timestamp).as_bytes());
        out.extend_from_slice(b",\"message\":\"");
        out.extend_from_slice(text.get(e.span.clone()).unwrap_or_default());
        out.extend_from_slice(b"\"}");
    }
    out.extend_from_slice(b"]}");
}

fn destination(
    s: &CloudWatchLogsSettings,
    tag: &str,
    body: &Map,
    fallbacks: &mut u64,
) -> Result<Destination, Dropped> {
    // Rendered names may hold what a pod wrote: made valid for CloudWatch Logs (see
    // `template::sanitize`), else the static name.
    let rendered = |t: &Template, rules| t.render(tag, body).and_then(|n| sanitize(&n, rules));
    let group = match s
        .group
        .template
        .as_ref()
        .and_then(|t| rendered(t, NameRules::LogGroup))
    {
        Some(g) => g,
        _ => {
            if s.group.template.is_some() {
                *fallbacks += 1;
            }
            s.group.fallback.clone().ok_or(Dropped::NoGroup)?
        }
    };
    let stream = match s
        .stream
        .template
        .as_ref()
        .and_then(|t| rendered(t, NameRules::LogStream))
    {
        Some(st) => st,
        _ => {
            if s.stream.template.is_some() {
                *fallbacks += 1;
            }
            match &s.stream.fallback {
                StreamName::Fixed(n) => n.clone(),
                StreamName::Prefix(p) => {
                    sanitize(&format!("{p}{tag}"), NameRules::LogStream).ok_or(Dropped::NoStream)?
                }
                StreamName::None => return Err(Dropped::NoStream),
            }
        }
    };
    Ok(Destination { group, stream })
}

/// The record with EMF metadata (`_aws`) added, unless it has one already.
fn with_emf(body: &Map, time_ms: i64, m: &EmfMetrics) -> Map {
    let mut out = body.clone();
    if body.contains_key("_aws") {
        return out;
    }
    let dims: Vec<&String> = m.dimensions.iter().flatten().collect();
    let metrics: Vec<Value> = body
        .iter()
        .filter(|(k, v)| {
            matches!(v, Value::Int(_) | Value::UInt(_) | Value::Float(_))
                && !dims.iter().any(|d| d.as_str() == k.as_str())
        })
        .map(|(k, _)| {
            let mut metric = Map::new();
            metric.insert("Name", Value::Str(k.clone()));
            Value::Map(metric)
        })
        .collect();
    let dimension_sets: Vec<Value> = m
        .dimensions
        .iter()
        .map(|set| Value::Array(set.iter().map(|d| Value::from(d.as_str())).collect()))
        .collect();
    let mut directive = Map::new();
    directive.insert("Namespace", m.namespace.as_str());
    directive.insert("Dimensions", Value::Array(dimension_sets));
    directive.insert("Metrics", Value::Array(metrics));
    let mut aws = Map::new();
    aws.insert("Timestamp", time_ms);
    aws.insert(
        "CloudWatchMetrics",
        Value::Array(vec![Value::Map(directive)]),
    );
    out.insert("_aws", Value::Map(aws));
    out
}

/// Builds the events of `records` under `tag`.
pub fn build<'a>(
    s: &CloudWatchLogsSettings,
    tag: &str,
    records: impl Iterator<Item = &'a Record>,
) -> Encoded {
    build_into(s, tag, records, Vec::new())
}

/// [`build`], writing the messages into `text` (cleared first; a buffer kept from an earlier
/// flush saves growing a new one).
pub fn build_into<'a>(
    s: &CloudWatchLogsSettings,
    tag: &str,
    records: impl Iterator<Item = &'a Record>,
    text: Vec<u8>,
) -> Encoded {
    let mut b = Builder::new(s, tag, text);
    for (i, r) in records.enumerate() {
        b.record(i, r);
    }
    b.enc
}

/// [`build_into`] for a batch whose chunks may be packed ([`BatchRecords`]). A packed chunk is
/// encoded straight from its packed bytes when the message is the whole record under a fixed
/// group and stream (no templates, `log_key` or EMF metrics: the seed's configuration), and
/// from its unpacked records otherwise. Both give the same bytes.
pub fn build_view(
    s: &CloudWatchLogsSettings,
    tag: &str,
    view: &BatchRecords<'_>,
    text: Vec<u8>,
) -> Encoded {
    let mut b = Builder::new(s, tag, text);
    let straight = s.log_key.is_none()
        && s.metrics.is_none()
        && s.group.template.is_none()
        && s.stream.template.is_none();
    view.read(straight, &mut b);
    b.enc
}

/// Events being built for one flush.
struct Builder<'s> {
    s: &'s CloudWatchLogsSettings,
    tag: &'s str,
    enc: Encoded,
    index: HashMap<Destination, usize>,
    raw: Vec<u8>,
    json: EscapedJson,
    /// Without templates the destination depends on the tag only: worked out once.
    fixed: Option<Result<Destination, Dropped>>,
}

impl<'s> Builder<'s> {
    fn new(s: &'s CloudWatchLogsSettings, tag: &'s str, mut text: Vec<u8>) -> Self {
        text.clear();
        Builder {
            s,
            tag,
            enc: Encoded {
                text,
                ..Encoded::default()
            },
            index: HashMap::new(),
            raw: Vec::new(),
            json: EscapedJson::default(),
            fixed: (s.group.template.is_none() && s.stream.template.is_none())
                .then(|| destination(s, tag, &Map::new(), &mut 0)),
        }
    }

    /// Where record `record` goes: `Ok(None)` for the fixed destination once it is the first
    /// (and only) stream.
    fn destination(&mut self, body: &Map) -> Result<Option<Destination>, Dropped> {
        match &self.fixed {
            Some(Ok(_)) if !self.enc.streams.is_empty() => Ok(None),
            Some(d) => d.clone().map(Some),
            None => destination(self.s, self.tag, body, &mut self.enc.template_fallbacks).map(Some),
        }
    }

    /// Adds the event whose message was just written from `start` on.
    fn push(
        &mut self,
        dest: Option<Destination>,
        record: usize,
        timestamp: i64,
        start: usize,
        size: usize,
    ) {
        let span = start..self.enc.text.len();
        let i = match dest {
            None => 0,
            Some(dest) => match self.index.get(&dest) {
                Some(&i) => i,
                None => {
                    self.enc.streams.push((dest.clone(), Vec::new()));
                    self.index.insert(dest, self.enc.streams.len() - 1);
                    self.enc.streams.len() - 1
                }
            },
        };
        self.enc.streams[i].1.push(Event {
            timestamp,
            size,
            span,
            record,
        });
    }

    fn record(&mut self, record: usize, r: &Record) {
        let s = self.s;
        let dest = match self.destination(&r.body) {
            Ok(d) => d,
            Err(why) => {
                self.enc.skip(why, record);
                return;
            }
        };
        let timestamp = r.time.as_millis();
        let start = self.enc.text.len();
        let emf;
        let body = match &s.metrics {
            Some(m) => {
                emf = with_emf(&r.body, timestamp, m);
                &emf
            }
            None => &r.body,
        };
        let mut size = match write_message_escaped(
            &mut self.json,
            &mut self.enc.text,
            body,
            s.log_key.as_ref(),
        ) {
            Ok(n) => n,
            Err(skip) => {
                self.enc.text.truncate(start);
                self.enc.skip(Dropped::Message(skip), record);
                return;
            }
        };
        if size > MAX_MESSAGE_BYTES {
            // Rare: encode it plain, cut it at a character boundary, escape the rest.
            self.enc.truncated += 1;
            self.enc.text.truncate(start);
            self.raw.clear();
            let cut = match write_message(&mut self.raw, body, s.log_key.as_ref()) {
                Ok(()) => {
                    std::str::from_utf8(&self.raw).map(|t| truncate_utf8(t, MAX_MESSAGE_BYTES))
                }
                Err(_) => Ok(""),
            };
            let Ok(cut) = cut else {
                self.enc.skip(Dropped::Message(Skip::Encoding), record);
                return;
            };
            escape_json_str(&mut self.enc.text, cut.as_bytes());
            size = cut.len();
        }
        self.push(dest, record, timestamp, start, size);
    }
}

impl ReadRecords for Builder<'_> {
    fn start_packed(&mut self) {
        self.json.start_packed();
    }

    /// Only with a fixed destination and the whole record as the message. A message too large
    /// is built again from the unpacked record ([`Builder::record`] truncates it).
    fn packed(
        &mut self,
        i: usize,
        time: EventTime,
        keys: usize,
        c: &mut Cursor<'_>,
        (part, k): (&Part<'_>, usize),
    ) -> Result<(), UnpackError> {
        let dest = match self.destination(&Map::new()) {
            Ok(d) => d,
            Err(why) => {
                // Read past its values all the same, to reach the next record.
                let mut scratch = Vec::new();
                self.json.packed_map(c, &mut scratch, keys, 0)?;
                self.enc.skip(why, i);
                return Ok(());
            }
        };
        let start = self.enc.text.len();
        let size = match self.json.packed_map(c, &mut self.enc.text, keys, 0) {
            Ok(n) => n,
            Err(e) => {
                self.enc.text.truncate(start);
                return Err(e);
            }
        };
        if size > MAX_MESSAGE_BYTES {
            self.enc.text.truncate(start);
            match part.records().and_then(|r| r.get(k)) {
                Some(r) => Builder::record(self, i, r),
                None => self.enc.skip(Dropped::Message(Skip::Encoding), i),
            }
        } else {
            self.push(dest, i, time.as_millis(), start, size);
        }
        Ok(())
    }

    fn record(&mut self, i: usize, r: &Record) {
        Builder::record(self, i, r);
    }

    fn lost(&mut self, i: usize) {
        self.enc.skip(Dropped::Message(Skip::Encoding), i);
    }
}
