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

use chrono::{DateTime, Utc};
use logferry_core::{EventTime, Map, Record, Value};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use sha2::{Digest, Sha256};

use super::config::{IdSource, IndexName, SearchSettings, WriteOperation};

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
pub fn document(s: &SearchSettings, tag: &str, r: &Record) -> Result<Vec<u8>, serde_json::Error> {
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
pub fn item(s: &SearchSettings, tag: &str, r: &Record, now: EventTime) -> Result<Item, Unsendable> {
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
    let action = serde_json::to_vec(&action).map_err(|e| Unsendable::Encoding(e.to_string()))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::opensearch::config::{settings_from_entries, SearchSettings};
    use logferry_core::config::{Section, SectionKind, Span};

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
        let it = item(&s, "t", &rec(&[("log", "x".into())]), EventTime(0)).unwrap();
        assert_eq!(
            json(&it.action),
            serde_json::json!({"create": {"_index": "fluent-bit", "_type": "_doc"}})
        );
        assert_eq!(
            json(&it.source),
            serde_json::json!({"@timestamp": "2026-11-29T00:00:01.500Z", "log": "x"})
        );
    }

    #[test]
    fn tag_key_defaults_differ_between_opensearch_and_es() {
        let r = rec(&[]);
        let os = settings(&[("include_tag_key", "on")], false);
        let es = settings(&[("include_tag_key", "on")], true);
        assert_eq!(json(&document(&os, "a.b", &r).unwrap())["_flb-key"], "a.b");
        assert_eq!(json(&document(&es, "a.b", &r).unwrap())["flb-key"], "a.b");
    }

    #[test]
    fn a_record_keeps_its_own_time_key_and_last_duplicate() {
        let s = settings(&[], false);
        let mut r = rec(&[("@timestamp", "mine".into())]);
        r.body.push("k", 1i64);
        r.body.push("k", 2i64);
        let d = json(&document(&s, "t", &r).unwrap());
        assert_eq!(d, serde_json::json!({"@timestamp": "mine", "k": 2}));
    }

    #[test]
    fn replace_dots_reaches_nested_maps() {
        let s = settings(&[("replace_dots", "on")], false);
        let mut inner = Map::new();
        inner.insert("c.d", 1i64);
        let r = rec(&[("a.b", Value::Map(inner))]);
        let d = json(&document(&s, "t", &r).unwrap());
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
            json(&item(&s, tag, r, EventTime(0)).unwrap().action)["create"]["_id"]
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
        let it = item(&s, "t", &rec(&[("uid", 42i64.into())]), EventTime(0)).unwrap();
        assert_eq!(json(&it.action)["update"]["_id"], "42");
        let src = json(&it.source);
        assert_eq!(src["doc_as_upsert"], true);
        assert_eq!(src["doc"]["uid"], 42);
        // A record without the key is sent without an _id, as Fluent Bit does.
        let s = settings(&[("id_key", "uid"), ("suppress_type_name", "on")], true);
        let it = item(&s, "t", &rec(&[]), EventTime(0)).unwrap();
        assert_eq!(
            json(&it.action),
            serde_json::json!({"create": {"_index": "fluent-bit"}})
        );
    }
}
