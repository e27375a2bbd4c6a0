//! Record → one bulk item: the action line (`{"create":{"_index":…,"_id":…}}`) and the
//! document, as Fluent Bit 5.1's `es`/`opensearch` outputs shape them:
//! - `Time_Key` (default `@timestamp`) with the record time in UTC, `Time_Key_Format` then
//!   `.mmmZ` (or `.nnnnnnnnnZ` with `Time_Key_Nanos`); a record that already has that key keeps
//!   its own value (a document with the key twice is refused by the node);
//! - the tag under `Tag_Key` with `Include_Tag_Key`;
//! - `Replace_Dots` renames `a.b` keys to `a_b`, in nested maps too;
//! - the index: `Index` (record accessors filled per record, the text as written when one is
//!   missing), or with `Logstash_Format` the prefix (`Logstash_Prefix_Key`'s value when the
//!   record has it), `Logstash_Prefix_Separator` and the record's UTC date in
//!   `Logstash_DateFormat` (`Current_Time_Index`: today's);
//! - `_id` from `Id_Key`, or with `Generate_ID` a hash of the tag, the time in nanoseconds and
//!   the document: the same record gives the same id in every attempt and after a restart, so a
//!   re-sent item is refused as a conflict (`create`) or overwrites itself (`index`) instead of
//!   being stored twice. Two records equal in all three get one id, as with Fluent Bit's hash.

use std::fmt::Write as _;
use std::ops::Range;

use chrono::format::{Item as TimeItem, StrftimeItems};
use chrono::{DateTime, Utc};
use logferry_core::packed::{Cursor, UnpackError};
use logferry_core::{EventTime, Map, Record, Value};
use logferry_engine::{Part, ReadRecords};
use sha2::{Digest, Sha256};

use super::config::{IdSource, IndexName, SearchSettings, WriteOperation};
use crate::encode::whole_seconds;
use crate::plain_json::{str, PlainJson, RawPair};

/// A flush's bulk items, one after another in one buffer: item `i` is its action line and
/// its document line, each with its newline. Items written one after another are one slice
/// of the buffer, so a request of consecutive items is sent without copying them.
#[derive(Debug, Default)]
pub struct Items {
    text: Vec<u8>,
    /// Per record: its item's span in `text`, `None` when it gave none.
    spans: Vec<Option<Range<usize>>>,
}

impl Items {
    /// Records in all (with an item or not).
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Record `i`'s item, if it gave one.
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        let span = self.spans.get(i)?.clone()?;
        self.text.get(span)
    }

    /// Bytes record `i`'s item adds to a request body (0 when it gave none).
    pub fn size(&self, i: usize) -> usize {
        self.spans
            .get(i)
            .and_then(|s| s.as_ref())
            .map_or(0, |s| s.len())
    }

    /// The body of a request with the items of `idx`, in order: borrowed from the buffer
    /// when they lie one after another there (a first attempt), copied into `body` otherwise.
    pub fn body<'a>(&'a self, idx: &[usize], body: &'a mut Vec<u8>) -> &'a [u8] {
        let spans: Vec<&Range<usize>> = idx
            .iter()
            .filter_map(|&i| self.spans.get(i)?.as_ref())
            .collect();
        let joined = spans.windows(2).all(|w| w[0].end == w[1].start);
        match (spans.first(), spans.last()) {
            (Some(first), Some(last)) if joined => {
                self.text.get(first.start..last.end).unwrap_or_default()
            }
            _ => {
                body.clear();
                for span in spans {
                    body.extend_from_slice(self.text.get(span.clone()).unwrap_or_default());
                }
                body
            }
        }
    }

    /// Items of these sizes, for tests of request sizing.
    #[cfg(test)]
    pub fn of_sizes(sizes: &[usize]) -> Items {
        let mut items = Items::default();
        for &n in sizes {
            let start = items.text.len();
            items.text.resize(start + n, b'a');
            items.spans.push(Some(start..items.text.len()));
        }
        items
    }

    /// The buffer, to be reused by a later flush.
    pub fn into_buffer(self) -> Vec<u8> {
        self.text
    }
}

/// A strftime format parsed once, and the text of the last second it printed: records of
/// one second reuse it when the format prints nothing finer than a second.
struct SecondText {
    items: Vec<TimeItem<'static>>,
    whole_seconds: bool,
    second: Option<i64>,
    text: String,
}

impl SecondText {
    fn new(format: &str) -> Self {
        // The settings checked the format; one chrono cannot parse prints nothing.
        let items = StrftimeItems::new(format)
            .parse_to_owned()
            .unwrap_or_default();
        SecondText {
            whole_seconds: whole_seconds(&items),
            items,
            second: None,
            text: String::new(),
        }
    }

    /// `t` formatted in UTC.
    fn get(&mut self, t: EventTime) -> &str {
        let second = t.0.div_euclid(1_000_000_000);
        if !(self.whole_seconds && self.second == Some(second)) {
            self.text.clear();
            let dt: DateTime<Utc> = DateTime::from_timestamp_nanos(t.0);
            // Writing into a String fails only if a format item cannot print: then nothing.
            let _ = write!(self.text, "{}", dt.format_with_items(self.items.iter()));
            self.second = self.whole_seconds.then_some(second);
        }
        &self.text
    }
}

/// Where a document comes from.
enum Source<'r, 'c, 'p> {
    Record(&'r Map),
    /// A packed record: its body's key list, its values next in the cursor.
    Packed(&'c mut Cursor<'p>, usize),
}

/// Writes the bulk items of one flush into [`Items`], with no allocation of its own per
/// record: the document with [`PlainJson`] (serde_json's bytes), the time key's and the
/// index's date text formatted once per second, records in packed chunks written straight
/// from their bytes when nothing but the document needs them ([`Self::reads_packed`]).
pub struct ItemWriter<'a> {
    s: &'a SearchSettings,
    tag: &'a str,
    /// `Current_Time_Index`'s time.
    now: EventTime,
    json: PlainJson,
    time: SecondText,
    date: Option<SecondText>,
    tag_json: Vec<u8>,
    time_json: Vec<u8>,
    index: String,
    id: String,
    doc: Vec<u8>,
    items: Items,
    /// The records that could not be read (a damaged packed chunk), by number.
    lost: Vec<usize>,
}

impl<'a> ItemWriter<'a> {
    /// A writer for a batch under `tag`; `buffer` is a former [`Items::into_buffer`].
    pub fn new(s: &'a SearchSettings, tag: &'a str, now: EventTime, mut buffer: Vec<u8>) -> Self {
        buffer.clear();
        let mut tag_json = Vec::new();
        str(&mut tag_json, tag);
        ItemWriter {
            s,
            tag,
            now,
            json: if s.replace_dots {
                PlainJson::replacing_dots()
            } else {
                PlainJson::default()
            },
            time: SecondText::new(&s.time_key_format),
            date: match &s.index {
                IndexName::Logstash { date_format, .. } => Some(SecondText::new(date_format)),
                IndexName::Fixed { .. } => None,
            },
            tag_json,
            time_json: Vec::new(),
            index: String::new(),
            id: String::new(),
            doc: Vec::new(),
            items: Items {
                text: buffer,
                spans: Vec::new(),
            },
            lost: Vec::new(),
        }
    }

    /// Whether records can be written straight from packed chunks: unless the index or the
    /// `_id` reads the record (`Index` with record accessors, `Logstash_Prefix_Key`,
    /// `Id_Key`).
    pub fn reads_packed(&self) -> bool {
        let index_reads = match &self.s.index {
            IndexName::Fixed { template, .. } => template.is_dynamic(),
            IndexName::Logstash { prefix_key, .. } => prefix_key.is_some(),
        };
        !index_reads && !matches!(self.s.id, IdSource::Key(_))
    }

    /// The items written, and the records that could not be read.
    pub fn finish(self) -> (Items, Vec<usize>) {
        (self.items, self.lost)
    }

    /// Record `body`'s index (only the fixed parts when there is no body), in `self.index`.
    fn index(&mut self, time: EventTime, body: Option<&Map>) {
        self.index.clear();
        match &self.s.index {
            IndexName::Fixed { template, fallback } => {
                if template.is_dynamic() {
                    match body.and_then(|b| template.render(self.tag, b)) {
                        Some(name) => self.index.push_str(&name),
                        None => self.index.push_str(fallback),
                    }
                } else {
                    self.index.push_str(template.as_str());
                }
            }
            IndexName::Logstash {
                prefix,
                prefix_key,
                separator,
                current_time,
                ..
            } => {
                match prefix_key
                    .as_ref()
                    .and_then(|k| k.get(body?))
                    .filter(|v| scalar(v, &mut self.index))
                {
                    Some(_) => {}
                    None => self.index.push_str(prefix),
                }
                self.index.push_str(separator);
                let t = if *current_time { self.now } else { time };
                if let Some(date) = &mut self.date {
                    self.index.push_str(date.get(t));
                }
            }
        }
    }

    /// `Time_Key`'s value for `t`, as a JSON string, in `self.time_json`.
    fn time_json(&mut self, t: EventTime) {
        let nanos = t.0.rem_euclid(1_000_000_000);
        self.time_json.clear();
        let mut text = std::mem::take(&mut self.time_json);
        text.push(b'"');
        crate::encode::escape_json_str(&mut text, self.time.get(t).as_bytes());
        let mut frac = [0u8; 16];
        let n = if self.s.time_key_nanos {
            digits(&mut frac, nanos as u64, 9)
        } else {
            digits(&mut frac, nanos as u64 / 1_000_000, 3)
        };
        text.push(b'.');
        text.extend_from_slice(&frac[..n]);
        text.extend_from_slice(b"Z\"");
        self.time_json = text;
    }

    /// Writes one record's item; on damaged packed bytes, nothing.
    fn write(&mut self, time: EventTime, src: Source<'_, '_, '_>) -> Result<(), UnpackError> {
        let s = self.s;
        let body = match &src {
            Source::Record(m) => Some(*m),
            Source::Packed(..) => None,
        };
        self.index(time, body);
        self.id.clear();
        let mut has_id = false;
        if let (IdSource::Key(k), Some(b)) = (&s.id, body) {
            // Fluent Bit sends the record without an _id when the key is missing.
            has_id = k.get(b).is_some_and(|v| scalar(v, &mut self.id));
        }
        let has = |k: &str| match &src {
            Source::Record(m) => m.contains_key(k),
            Source::Packed(c, keys) => c.keys(*keys).contains(&k),
        };
        let with_time = !has(&s.time_key);
        let tag_key = s.tag_key.as_deref().filter(|k| !has(k));
        if with_time {
            self.time_json(time);
        }
        let mut front: [RawPair<'_>; 2] = [("", &[]), ("", &[])];
        let mut n = 0;
        if with_time {
            front[n] = (&s.time_key, &self.time_json);
            n += 1;
        }
        if let Some(k) = tag_key {
            front[n] = (k, &self.tag_json);
            n += 1;
        }
        let front = &front[..n];
        let out = &mut self.items.text;
        let start = out.len();
        let generated = matches!(s.id, IdSource::Generated);
        let doc = |json: &mut PlainJson, dst: &mut Vec<u8>| match src {
            Source::Record(m) => {
                json.map_edited(dst, m, front, None);
                Ok(())
            }
            Source::Packed(c, keys) => json.packed_map_edited(c, dst, keys, front, None, 0),
        };
        let mut doc = Some(doc);
        if generated {
            self.doc.clear();
            if let Some(write) = doc.take() {
                write(&mut self.json, &mut self.doc)?;
            }
            generated_id_into(&mut self.id, self.tag, time, &self.doc);
            has_id = true;
        }
        out.extend_from_slice(b"{\"");
        out.extend_from_slice(s.write_operation.action().as_bytes());
        out.extend_from_slice(b"\":{\"_index\":");
        str(out, &self.index);
        if let Some(t) = &s.type_name {
            out.extend_from_slice(b",\"_type\":");
            str(out, t);
        }
        if has_id {
            out.extend_from_slice(b",\"_id\":");
            str(out, &self.id);
        }
        out.extend_from_slice(b"}}\n");
        let wrapped = matches!(
            s.write_operation,
            WriteOperation::Update | WriteOperation::Upsert
        );
        if wrapped {
            out.extend_from_slice(b"{\"doc\":");
        }
        match doc.take() {
            Some(write) => {
                if let Err(e) = write(&mut self.json, out) {
                    out.truncate(start);
                    return Err(e);
                }
            }
            None => out.extend_from_slice(&self.doc),
        }
        if wrapped {
            if s.write_operation == WriteOperation::Upsert {
                out.extend_from_slice(b",\"doc_as_upsert\":true");
            }
            out.push(b'}');
        }
        out.push(b'\n');
        self.items.spans.push(Some(start..out.len()));
        Ok(())
    }
}

impl ReadRecords for ItemWriter<'_> {
    fn start_packed(&mut self) {
        self.json.start_packed();
    }

    fn packed(
        &mut self,
        _: usize,
        time: EventTime,
        keys: usize,
        c: &mut Cursor<'_>,
        _: (&Part<'_>, usize),
    ) -> Result<(), UnpackError> {
        self.write(time, Source::Packed(c, keys))
    }

    fn record(&mut self, i: usize, r: &Record) {
        if self.write(r.time, Source::Record(&r.body)).is_err() {
            // Only packed bytes can be damaged; kept for completeness.
            self.lost(i);
        }
    }

    fn lost(&mut self, i: usize) {
        self.items.spans.push(None);
        self.lost.push(i);
    }
}

/// Appends a string or an integer as text (what an index prefix or an `_id` may be made of);
/// false for anything else.
fn scalar(v: &Value, out: &mut String) -> bool {
    match v {
        Value::Str(s) => out.push_str(s),
        Value::Int(i) => out.push_str(itoa::Buffer::new().format(*i)),
        Value::UInt(u) => out.push_str(itoa::Buffer::new().format(*u)),
        _ => return false,
    }
    true
}

/// `v` as `width` decimal digits (zero-padded) at the start of `out`; how many.
fn digits(out: &mut [u8; 16], mut v: u64, width: usize) -> usize {
    for i in (0..width).rev() {
        out[i] = b'0' + (v % 10) as u8;
        v /= 10;
    }
    width
}

/// A deterministic id for a document (see the module docs): 128 bits of SHA-256 as a UUID,
/// into `out` (cleared first).
pub fn generated_id_into(out: &mut String, tag: &str, time: EventTime, doc: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut h = Sha256::new();
    h.update(tag.as_bytes());
    h.update([0u8]);
    h.update(time.0.to_le_bytes());
    h.update(doc);
    let d = h.finalize();
    out.clear();
    for (i, b) in d.iter().take(16).enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 15)] as char);
    }
}

/// Fluent Bit's documents as the serde_json implementation this module had before
/// [`ItemWriter`] wrote them by hand: the reference its bytes are tested against.
#[cfg(test)]
#[allow(dead_code)]
mod reference {
    use super::super::config::{IdSource, IndexName, SearchSettings, WriteOperation};
    use chrono::{DateTime, Utc};
    use logferry_core::{EventTime, Map, Record, Value};
    use serde::ser::{SerializeMap, SerializeSeq};
    use serde::{Serialize, Serializer};
    use sha2::{Digest, Sha256};

    /// One item of a bulk request.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Item {
        /// The action line, without its newline.
        pub action: Vec<u8>,
        /// The document line (for update/upsert, the `{"doc":…}` wrapper), without its newline.
        pub source: Vec<u8>,
    }

    impl Item {
        /// Bytes it adds to a request body.
        pub fn size(&self) -> usize {
            self.action.len() + self.source.len() + 2
        }

        /// Appends it to a request body.
        pub fn write(&self, body: &mut Vec<u8>) {
            body.extend_from_slice(&self.action);
            body.push(b'\n');
            body.extend_from_slice(&self.source);
            body.push(b'\n');
        }
    }

    fn utc(t: EventTime) -> DateTime<Utc> {
        DateTime::from_timestamp_nanos(t.0)
    }

    /// `Time_Key`'s value.
    pub fn format_time(s: &SearchSettings, t: EventTime) -> String {
        let d = utc(t);
        let nanos = t.0.rem_euclid(1_000_000_000);
        if s.time_key_nanos {
            format!("{}.{nanos:09}Z", d.format(&s.time_key_format))
        } else {
            format!("{}.{:03}Z", d.format(&s.time_key_format), nanos / 1_000_000)
        }
    }

    /// The index of a record.
    pub fn index_of(s: &SearchSettings, tag: &str, r: &Record, now: EventTime) -> String {
        match &s.index {
            IndexName::Fixed { template, fallback } => {
                if template.is_dynamic() {
                    template
                        .render(tag, &r.body)
                        .unwrap_or_else(|| fallback.clone())
                } else {
                    template.as_str().to_string()
                }
            }
            IndexName::Logstash {
                prefix,
                prefix_key,
                separator,
                date_format,
                current_time,
            } => {
                let prefix = prefix_key
                    .as_ref()
                    .and_then(|k| match k.get(&r.body)? {
                        Value::Str(s) => Some(s.to_string()),
                        Value::Int(i) => Some(i.to_string()),
                        Value::UInt(u) => Some(u.to_string()),
                        _ => None,
                    })
                    .unwrap_or_else(|| prefix.clone());
                let t = if *current_time { now } else { r.time };
                format!("{prefix}{separator}{}", utc(t).format(date_format))
            }
        }
    }

    /// The document of a record (without an update wrapper).
    pub fn document(
        s: &SearchSettings,
        tag: &str,
        r: &Record,
    ) -> Result<Vec<u8>, serde_json::Error> {
        let time = format_time(s, r.time);
        let mut extra: Vec<(&str, &str)> = Vec::with_capacity(2);
        if !r.body.contains_key(&s.time_key) {
            extra.push((&s.time_key, &time));
        }
        if let Some(k) = &s.tag_key {
            if !r.body.contains_key(k) {
                extra.push((k, tag));
            }
        }
        serde_json::to_vec(&Doc {
            extra: &extra,
            body: &r.body,
            dots: s.replace_dots,
        })
    }

    /// A deterministic id for a document (see the module docs): 128 bits of SHA-256 as a UUID.
    pub fn generated_id(tag: &str, time: EventTime, doc: &[u8]) -> String {
        let mut h = Sha256::new();
        h.update(tag.as_bytes());
        h.update([0u8]);
        h.update(time.0.to_le_bytes());
        h.update(doc);
        let d = h.finalize();
        let x: String = d.iter().take(16).map(|b| format!("{b:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &x[0..8],
            &x[8..12],
            &x[12..16],
            &x[16..20],
            &x[20..32]
        )
    }

    /// Why a record gave no item.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum Unsendable {
        /// It could not be serialized (not expected with JSON-like values).
        Encoding(String),
    }

    /// The bulk item of a record.
    pub fn item(
        s: &SearchSettings,
        tag: &str,
        r: &Record,
        now: EventTime,
    ) -> Result<Item, Unsendable> {
        let doc = document(s, tag, r).map_err(|e| Unsendable::Encoding(e.to_string()))?;
        let id = match &s.id {
            IdSource::None => None,
            IdSource::Generated => Some(generated_id(tag, r.time, &doc)),
            IdSource::Key(k) => match k.get(&r.body) {
                Some(Value::Str(v)) => Some(v.to_string()),
                Some(Value::Int(i)) => Some(i.to_string()),
                Some(Value::UInt(u)) => Some(u.to_string()),
                // Fluent Bit sends the record without an _id when the key is missing.
                _ => None,
            },
        };
        let index = index_of(s, tag, r, now);
        let mut meta = serde_json::Map::new();
        meta.insert("_index".into(), index.into());
        if let Some(t) = &s.type_name {
            meta.insert("_type".into(), t.clone().into());
        }
        if let Some(id) = id {
            meta.insert("_id".into(), id.into());
        }
        let mut action = serde_json::Map::new();
        action.insert(
            s.write_operation.action().into(),
            serde_json::Value::Object(meta),
        );
        let action =
            serde_json::to_vec(&action).map_err(|e| Unsendable::Encoding(e.to_string()))?;
        let source = match s.write_operation {
            WriteOperation::Create | WriteOperation::Index => doc,
            WriteOperation::Update | WriteOperation::Upsert => {
                let mut v = Vec::with_capacity(doc.len() + 32);
                v.extend_from_slice(b"{\"doc\":");
                v.extend_from_slice(&doc);
                if s.write_operation == WriteOperation::Upsert {
                    v.extend_from_slice(b",\"doc_as_upsert\":true");
                }
                v.push(b'}');
                v
            }
        };
        Ok(Item { action, source })
    }

    /// A document: `extra` keys first, then the record's (the last of a repeated key wins, as
    /// Fluent Bit reads maps), keys' dots replaced when `dots`.
    struct Doc<'a> {
        extra: &'a [(&'a str, &'a str)],
        body: &'a Map,
        dots: bool,
    }

    fn key(k: &str, dots: bool) -> std::borrow::Cow<'_, str> {
        if dots && k.contains('.') {
            std::borrow::Cow::Owned(k.replace('.', "_"))
        } else {
            std::borrow::Cow::Borrowed(k)
        }
    }

    impl Serialize for Doc<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut out = s.serialize_map(None)?;
            for (k, v) in self.extra {
                out.serialize_entry(k, v)?;
            }
            write_pairs(&mut out, self.body, self.dots)?;
            out.end()
        }
    }

    fn write_pairs<M: SerializeMap>(out: &mut M, m: &Map, dots: bool) -> Result<(), M::Error> {
        let pairs = &m.0;
        for (i, (k, v)) in pairs.iter().enumerate() {
            if pairs[i + 1..].iter().any(|(other, _)| other == k) {
                continue;
            }
            out.serialize_entry(&key(k, dots), &Val(v, dots))?;
        }
        Ok(())
    }

    struct Val<'a>(&'a Value, bool);

    struct Nested<'a>(&'a Map, bool);

    impl Serialize for Nested<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut out = s.serialize_map(None)?;
            write_pairs(&mut out, self.0, self.1)?;
            out.end()
        }
    }

    impl Serialize for Val<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            match self.0 {
                Value::Map(m) => Nested(m, self.1).serialize(s),
                Value::SharedMap(m) => Nested(m, self.1).serialize(s),
                Value::Array(a) => {
                    let mut seq = s.serialize_seq(Some(a.len()))?;
                    for v in a {
                        seq.serialize_element(&Val(v, self.1))?;
                    }
                    seq.end()
                }
                Value::Float(f) if !f.is_finite() => s.serialize_unit(),
                other => other.serialize(s),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::opensearch::config::{settings_from_entries, SearchSettings};
    use logferry_core::config::{Section, SectionKind, Span};
    use logferry_core::{Chunk, Tag};
    use logferry_engine::Batch;
    use std::sync::Arc;

    fn settings(kv: &[(&str, &str)], es: bool) -> SearchSettings {
        let mut s = Section::new(SectionKind::Output, Span::command_line());
        for (k, v) in kv {
            s.push(*k, *v, Span::command_line());
        }
        let entries: Vec<_> = s.entries.iter().collect();
        settings_from_entries(&s, &entries, es).unwrap()
    }

    fn at(ns: i64) -> EventTime {
        EventTime(ns)
    }

    fn json(b: &[u8]) -> serde_json::Value {
        serde_json::from_slice(b).unwrap()
    }

    /// The items of `b`'s records, written as a flush writes them.
    fn items_of(s: &SearchSettings, b: &Batch, now: EventTime) -> (Items, Vec<usize>) {
        let view = b.view();
        let mut w = ItemWriter::new(s, &b.tag, now, Vec::new());
        let packed = w.reads_packed();
        view.read(packed, &mut w);
        w.finish()
    }

    /// One record's (action, source) lines.
    fn item(s: &SearchSettings, tag: &str, r: &Record, now: EventTime) -> (Vec<u8>, Vec<u8>) {
        let chunk = Chunk::new(Tag::from(tag), vec![r.clone()]);
        let (items, lost) = items_of(s, &Batch::new(Tag::from(tag), vec![Arc::new(chunk)]), now);
        assert!(lost.is_empty());
        let text = items.get(0).unwrap().strip_suffix(b"\n").unwrap();
        let nl = text.iter().position(|&c| c == b'\n').unwrap();
        (text[..nl].to_vec(), text[nl + 1..].to_vec())
    }

    fn document(s: &SearchSettings, tag: &str, r: &Record) -> Vec<u8> {
        item(s, tag, r, EventTime(0)).1
    }

    fn index_of(s: &SearchSettings, tag: &str, r: &Record, now: EventTime) -> String {
        let action = json(&item(s, tag, r, now).0);
        let (_, meta) = action.as_object().unwrap().iter().next().unwrap();
        meta["_index"].as_str().unwrap().to_string()
    }

    fn rec(kv: &[(&str, Value)]) -> Record {
        let mut m = Map::new();
        for (k, v) in kv {
            m.insert(*k, v.clone());
        }
        // 2026-11-29T00:00:01.5Z
        Record::new(at(1_795_910_401_500_000_000), m)
    }

    #[test]
    fn fluent_bit_defaults_create_with_type_and_timestamp() {
        let s = settings(&[], false);
        let it = item(&s, "t", &rec(&[("log", "x".into())]), EventTime(0));
        assert_eq!(
            json(&it.0),
            serde_json::json!({"create": {"_index": "fluent-bit", "_type": "_doc"}})
        );
        assert_eq!(
            json(&it.1),
            serde_json::json!({"@timestamp": "2026-11-29T00:00:01.500Z", "log": "x"})
        );
    }

    #[test]
    fn tag_key_defaults_differ_between_opensearch_and_es() {
        let r = rec(&[]);
        let os = settings(&[("include_tag_key", "on")], false);
        let es = settings(&[("include_tag_key", "on")], true);
        assert_eq!(json(&document(&os, "a.b", &r))["_flb-key"], "a.b");
        assert_eq!(json(&document(&es, "a.b", &r))["flb-key"], "a.b");
    }

    #[test]
    fn a_record_keeps_its_own_time_key_and_last_duplicate() {
        let s = settings(&[], false);
        let mut r = rec(&[("@timestamp", "mine".into())]);
        r.body.push("k", 1i64);
        r.body.push("k", 2i64);
        let d = json(&document(&s, "t", &r));
        assert_eq!(d, serde_json::json!({"@timestamp": "mine", "k": 2}));
    }

    #[test]
    fn replace_dots_reaches_nested_maps() {
        let s = settings(&[("replace_dots", "on")], false);
        let mut inner = Map::new();
        inner.insert("c.d", 1i64);
        let r = rec(&[("a.b", Value::Map(inner))]);
        let d = json(&document(&s, "t", &r));
        assert_eq!(d["a_b"]["c_d"], 1);
    }

    #[test]
    fn index_templates_and_logstash_names() {
        let mut k = Map::new();
        k.insert("namespace_name", "shop");
        let r = rec(&[("kubernetes", Value::Map(k))]);
        let plain = rec(&[]);
        let s = settings(&[("index", "logs-$kubernetes['namespace_name']")], false);
        assert_eq!(index_of(&s, "t", &r, EventTime(0)), "logs-shop");
        assert_eq!(
            index_of(&s, "t", &plain, EventTime(0)),
            "logs-$kubernetes['namespace_name']"
        );
        let s = settings(
            &[
                ("logstash_format", "on"),
                ("logstash_prefix_key", "$kubernetes['namespace_name']"),
                ("logstash_prefix_separator", "_"),
                ("logstash_dateformat", "%Y%m%d"),
            ],
            false,
        );
        assert_eq!(index_of(&s, "t", &r, EventTime(0)), "shop_20261129");
        assert_eq!(index_of(&s, "t", &plain, EventTime(0)), "logstash_20261129");
        let s = settings(
            &[("logstash_format", "on"), ("current_time_index", "on")],
            false,
        );
        assert_eq!(
            index_of(&s, "t", &plain, EventTime(0)),
            "logstash-1970.01.01"
        );
        // The es plugin's Target_Index, falling back to Index.
        let s = settings(
            &[
                ("target_index", "t-$kubernetes['namespace_name']"),
                ("index", "fb"),
            ],
            true,
        );
        assert_eq!(index_of(&s, "t", &r, EventTime(0)), "t-shop");
        assert_eq!(index_of(&s, "t", &plain, EventTime(0)), "fb");
    }

    #[test]
    fn generated_ids_are_stable_and_distinct() {
        let s = settings(&[("generate_id", "on")], false);
        let a = rec(&[("log", "x".into())]);
        let b = rec(&[("log", "y".into())]);
        let id = |r: &Record, tag: &str| {
            json(&item(&s, tag, r, EventTime(0)).0)["create"]["_id"]
                .as_str()
                .unwrap()
                .to_string()
        };
        assert_eq!(id(&a, "t"), id(&a.clone(), "t"));
        assert_ne!(id(&a, "t"), id(&b, "t"));
        assert_ne!(id(&a, "t"), id(&a, "u"));
        assert_eq!(id(&a, "t").len(), 36);
    }

    #[test]
    fn id_key_update_and_upsert() {
        let s = settings(&[("id_key", "uid"), ("write_operation", "upsert")], true);
        let it = item(&s, "t", &rec(&[("uid", 42i64.into())]), EventTime(0));
        assert_eq!(json(&it.0)["update"]["_id"], "42");
        let src = json(&it.1);
        assert_eq!(src["doc_as_upsert"], true);
        assert_eq!(src["doc"]["uid"], 42);
        // A record without the key is sent without an _id, as Fluent Bit does.
        let s = settings(&[("id_key", "uid"), ("suppress_type_name", "on")], true);
        let it = item(&s, "t", &rec(&[]), EventTime(0));
        assert_eq!(
            json(&it.0),
            serde_json::json!({"create": {"_index": "fluent-bit"}})
        );
    }

    /// Records for the byte-for-byte tests: the outputs' varied records, plus dotted keys (at
    /// the top and nested), a record with its own time key and tag key, times before 1970
    /// and across second boundaries.
    fn corpus() -> Vec<Record> {
        let mut v = crate::test_records::varied_records(70_000);
        for (i, ns) in [
            -1_500_000_001i64,
            -1,
            0,
            999_999_999,
            1_000_000_000,
            1_795_910_401_500_000_000,
            1_795_910_402_000_000_001,
        ]
        .into_iter()
        .enumerate()
        {
            let mut m = Map::new();
            m.insert("a.b", Value::from("dotted"));
            let mut inner = Map::new();
            inner.insert("c.d.e", Value::Int(i as i64));
            m.insert("x.y", Value::Map(inner));
            m.insert("n", Value::Int(7));
            if i % 2 == 0 {
                m.insert("@timestamp", Value::from("mine"));
                m.insert("_flb-key", Value::from("my tag"));
            }
            v.push(Record::new(EventTime(ns), m));
        }
        v
    }

    /// Every option that shapes an item gives the bytes the serde_json implementation gave,
    /// record by record, whether the records are read packed (when the settings allow it)
    /// or as records.
    #[test]
    fn items_are_the_reference_bytes_for_every_option() {
        let records = corpus();
        let now = EventTime(1_795_910_401_000_000_000);
        let cases: &[(&[(&str, &str)], bool)] = &[
            (&[], false),
            (&[("include_tag_key", "on"), ("replace_dots", "on")], false),
            (&[("include_tag_key", "on"), ("tag_key", "n")], true),
            (
                &[
                    ("generate_id", "on"),
                    ("time_key_nanos", "on"),
                    ("write_operation", "upsert"),
                ],
                false,
            ),
            (
                &[
                    ("logstash_format", "on"),
                    ("logstash_prefix_key", "$kubernetes['pod_name']"),
                    ("write_operation", "index"),
                    ("suppress_type_name", "on"),
                ],
                true,
            ),
            (
                &[
                    ("id_key", "n"),
                    ("write_operation", "update"),
                    ("time_key", "time"),
                    ("time_key_format", "%Y%m%dT%H%M%S"),
                ],
                false,
            ),
            (&[("index", "logs-$kubernetes['pod_name']")], false),
            (
                &[
                    ("logstash_format", "on"),
                    ("current_time_index", "on"),
                    ("logstash_dateformat", "%Y.%m.%d.%H"),
                    ("time_key_format", "%Y-%m-%dT%H:%M:%S%.3f"),
                ],
                false,
            ),
        ];
        for (kv, es) in cases {
            let s = settings(kv, *es);
            let want: Vec<Vec<u8>> = records
                .iter()
                .map(|r| {
                    let it = reference::item(&s, "kube.a", r, now).unwrap();
                    [&it.action[..], b"\n", &it.source, b"\n"].concat()
                })
                .collect();
            let plain = crate::test_records::packed_batch("kube.a", &records, 40, 0);
            let plain = Batch::new(
                plain.tag.clone(),
                plain
                    .chunks
                    .iter()
                    .map(|c| Arc::new(c.unpacked().unwrap()))
                    .collect(),
            );
            let packed = crate::test_records::packed_batch("kube.a", &records, 40, 1);
            for (how, b) in [("records", &plain), ("packed", &packed)] {
                let (items, lost) = items_of(&s, b, now);
                assert!(lost.is_empty(), "{kv:?} {how}");
                assert_eq!(items.len(), records.len(), "{kv:?} {how}");
                for (i, w) in want.iter().enumerate() {
                    assert_eq!(
                        String::from_utf8_lossy(items.get(i).unwrap()),
                        String::from_utf8_lossy(w),
                        "{kv:?} {how} record {i}"
                    );
                }
            }
        }
    }

    /// A request of items that lie one after another borrows them; others are copied.
    #[test]
    fn request_bodies_borrow_consecutive_items() {
        let records = corpus();
        let b = crate::test_records::packed_batch("t", &records, 50, 0);
        let (items, _) = items_of(&settings(&[], false), &b, EventTime(0));
        let mut copy = Vec::new();
        let all: Vec<usize> = (0..items.len()).collect();
        let whole = items.body(&all, &mut copy);
        let joined: Vec<u8> = all
            .iter()
            .flat_map(|&i| items.get(i).unwrap().to_vec())
            .collect();
        assert_eq!(whole, joined.as_slice());
        assert!(copy.is_empty(), "consecutive items are not copied");
        let some = [3usize, 7, 8];
        let body = items.body(&some, &mut copy).to_vec();
        let joined: Vec<u8> = some
            .iter()
            .flat_map(|&i| items.get(i).unwrap().to_vec())
            .collect();
        assert_eq!(body, joined);
        assert_eq!(copy, joined);
        assert_eq!(items.size(3), items.get(3).unwrap().len());
    }

    /// Records of a damaged packed chunk past the damage give no item and are reported lost;
    /// the others are written as usual.
    #[test]
    fn a_damaged_chunk_loses_only_what_follows_the_damage() {
        let records = corpus();
        let mut first = Chunk::new(Tag::from("t"), records[..10].to_vec());
        first.pack();
        first.packed = first.packed.map(|p| p.cut_short(1));
        let second = Chunk::new(Tag::from("t"), records[10..12].to_vec());
        let b = Batch::new(Tag::from("t"), vec![Arc::new(first), Arc::new(second)]);
        let s = settings(&[], false);
        let (items, lost) = items_of(&s, &b, EventTime(0));
        assert_eq!(lost, [9]);
        assert_eq!(items.len(), 12);
        assert!(items.get(9).is_none());
        assert_eq!(items.size(9), 0);
        for i in (0..9).chain(10..12) {
            let it = reference::item(&s, "t", &records[i], EventTime(0)).unwrap();
            let want = [&it.action[..], b"\n", &it.source, b"\n"].concat();
            assert_eq!(items.get(i).unwrap(), want.as_slice(), "record {i}");
        }
    }
}
