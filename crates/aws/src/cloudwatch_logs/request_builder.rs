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

use logferry_core::{Map, Record, Value};

use super::batch::MAX_MESSAGE_BYTES;
use super::config::{CloudWatchLogsSettings, EmfMetrics, StreamName};
use crate::encode::{truncate_utf8, write_message, Skip};
use crate::template::{sanitize, NameRules, Template};

/// One log event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    pub message: String,
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
    let mut enc = Encoded::default();
    let mut index: HashMap<Destination, usize> = HashMap::new();
    let mut buf = Vec::with_capacity(1024);
    for (record, r) in records.enumerate() {
        let dest = match destination(s, tag, &r.body, &mut enc.template_fallbacks) {
            Ok(d) => d,
            Err(why) => {
                enc.skip(why, record);
                continue;
            }
        };
        let timestamp = r.time.as_millis();
        buf.clear();
        let written = match &s.metrics {
            Some(m) => write_message(
                &mut buf,
                &with_emf(&r.body, timestamp, m),
                s.log_key.as_ref(),
            ),
            None => write_message(&mut buf, &r.body, s.log_key.as_ref()),
        };
        if let Err(skip) = written {
            enc.skip(Dropped::Message(skip), record);
            continue;
        }
        let Ok(text) = std::str::from_utf8(&buf) else {
            enc.skip(Dropped::Message(Skip::Encoding), record);
            continue;
        };
        let message = if text.len() > MAX_MESSAGE_BYTES {
            enc.truncated += 1;
            truncate_utf8(text, MAX_MESSAGE_BYTES).to_string()
        } else {
            text.to_string()
        };
        let i = match index.get(&dest) {
            Some(&i) => i,
            None => {
                enc.streams.push((dest.clone(), Vec::new()));
                index.insert(dest, enc.streams.len() - 1);
                enc.streams.len() - 1
            }
        };
        enc.streams[i].1.push(Event {
            timestamp,
            message,
            record,
        });
    }
    enc
}
