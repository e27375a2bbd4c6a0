//! Records as JSON text written by hand: serde_json's bytes for [`JsonMap`] (the last duplicate
//! of a key wins, non-finite floats are `null`, UTF-8 kept as is), without serde's per-value
//! dispatch, and with shared maps (the kubernetes filter's per-pod metadata) encoded once per
//! batch and copied after that. Also writes a record with one key set or put in front without
//! copying the record: what `time_key` (Firehose, Kinesis) and `json_date_key` (S3) need.
//! Records in packed chunks are written straight from the packed bytes
//! ([`PlainJson::packed_map_edited`]), the same bytes as for the records unpacked.
//!
//! [`JsonMap`]: crate::encode::JsonMap

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use logferry_core::packed::{Cursor, Item, UnpackError, MAX_DEPTH};
use logferry_core::{Map, Value};
use logferry_filters::record_accessor::RecordAccessor;

use crate::encode::{escape_json_str, later_duplicates, Skip};

/// Writes JSON; see the module doc. Shared maps are cached by address, so call
/// [`PlainJson::clear`] before the records of another batch.
#[derive(Default)]
pub struct PlainJson {
    shared: HashMap<usize, Range<usize>>,
    cache: Vec<u8>,
    /// The key lists of the packed chunk being written, by their numbers ([`Item::Map`]).
    packed_lists: Vec<Option<KeyList>>,
    /// Record keys written with `.` as `_` (the `opensearch` output's `Replace_Dots`).
    dots: bool,
}

/// One packed key list as written: what is worked out once per chunk instead of per record.
#[derive(Default)]
struct KeyList {
    /// Each written pair's `"key":`, one after another.
    text: Vec<u8>,
    /// Per pair: its span in `text`, or `None` when a later pair has the same key (the last
    /// duplicate wins, as [`Map::iter_last_wins`]).
    pairs: Vec<Option<Range<usize>>>,
    /// The key a `set` was last asked for, and the first pair with it (the one
    /// [`Map::insert`] would give the value), if any.
    set: Option<(String, Option<usize>)>,
}

impl KeyList {
    fn of_keys(keys: &[&str], dots: bool) -> Self {
        let mut list = KeyList {
            pairs: Vec::with_capacity(keys.len()),
            ..KeyList::default()
        };
        for (k, later) in keys.iter().zip(later_duplicates(keys)) {
            if later {
                list.pairs.push(None);
                continue;
            }
            let from = list.text.len();
            key(&mut list.text, k, dots);
            list.text.push(b':');
            list.pairs.push(Some(from..list.text.len()));
        }
        list
    }

    /// The first pair with `key` among `keys` (this list's keys).
    fn set_at(&mut self, key: &str, keys: &[&str]) -> Option<usize> {
        match &self.set {
            Some((k, at)) if k == key => *at,
            _ => {
                let at = keys.iter().position(|k| *k == key);
                self.set = Some((key.to_string(), at));
                at
            }
        }
    }
}

/// A pair written as given: the key, and its value already as JSON text.
pub type RawPair<'a> = (&'a str, &'a [u8]);

impl PlainJson {
    /// A writer that writes every key of a record with its dots as underscores (`a.b` as
    /// `a_b`, in nested maps too), as the `opensearch` output's `Replace_Dots` asks. Keys
    /// given as pairs (`front`, `set`) are written as they are.
    pub fn replacing_dots() -> Self {
        PlainJson {
            dots: true,
            ..PlainJson::default()
        }
    }

    /// Forgets the shared maps seen so far (their addresses may be reused by the next batch).
    pub fn clear(&mut self) {
        self.shared.clear();
        self.cache.clear();
    }

    /// Starts a packed chunk: its key lists are numbered afresh.
    pub fn start_packed(&mut self) {
        self.packed_lists.clear();
    }

    /// Appends `m` as a JSON object.
    pub fn map(&mut self, out: &mut Vec<u8>, m: &Map) {
        self.map_edited(out, m, &[], None);
    }

    /// Appends `m` as a JSON object, with the `front` pairs written first (their keys must not
    /// be in `m`)
    /// and `set` applied as [`Map::insert`] would: the first pair with that key gets the value
    /// in place, else the pair goes last. The map itself is not touched.
    pub fn map_edited(
        &mut self,
        out: &mut Vec<u8>,
        m: &Map,
        front: &[RawPair<'_>],
        set: Option<RawPair<'_>>,
    ) {
        out.push(b'{');
        let mut first = true;
        let mut sep = |out: &mut Vec<u8>| {
            if !std::mem::take(&mut first) {
                out.push(b',');
            }
        };
        for (k, v) in front {
            sep(out);
            str(out, k);
            out.push(b':');
            out.extend_from_slice(v);
        }
        // The value `set` replaces, by address: `iter_last_wins` hands out references into
        // the pairs, so the replaced pair is found exactly, duplicates included.
        let replaced = set.and_then(|(key, _)| {
            m.0.iter()
                .find(|(k, _)| k.as_str() == key)
                .map(|(_, v)| v as *const Value)
        });
        for (k, v) in m.iter_last_wins() {
            sep(out);
            key(out, k.as_str(), self.dots);
            out.push(b':');
            match set {
                Some((_, raw)) if replaced == Some(v as *const Value) => out.extend_from_slice(raw),
                _ => self.value(out, v),
            }
        }
        if let (Some((k, v)), None) = (set, replaced) {
            sep(out);
            str(out, k);
            out.push(b':');
            out.extend_from_slice(v);
        }
        out.push(b'}');
    }

    /// Appends `v` as JSON.
    pub fn value(&mut self, out: &mut Vec<u8>, v: &Value) {
        match v {
            Value::Null => out.extend_from_slice(b"null"),
            Value::Bool(true) => out.extend_from_slice(b"true"),
            Value::Bool(false) => out.extend_from_slice(b"false"),
            Value::Int(i) => out.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes()),
            Value::UInt(u) => out.extend_from_slice(itoa::Buffer::new().format(*u).as_bytes()),
            Value::Float(f) => float(out, *f),
            Value::Str(s) => str(out, s),
            Value::Array(a) => {
                out.push(b'[');
                for (i, v) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    self.value(out, v);
                }
                out.push(b']');
            }
            Value::Map(m) => self.map(out, m),
            Value::SharedMap(m) => self.shared(out, m),
        }
    }

    /// A shared map: written once per batch, copied after that.
    fn shared(&mut self, out: &mut Vec<u8>, m: &Arc<Map>) {
        let key = Arc::as_ptr(m) as usize;
        let span = match self.shared.get(&key) {
            Some(span) => span.clone(),
            None => {
                let mut cache = std::mem::take(&mut self.cache);
                let from = cache.len();
                self.map(&mut cache, m);
                let span = from..cache.len();
                self.cache = cache;
                self.shared.insert(key, span.clone());
                span
            }
        };
        out.extend_from_slice(self.cache.get(span).unwrap_or_default());
    }

    /// [`Self::map_edited`] for a packed map (key list `keys`, its values next in `c`): the
    /// same bytes as for the map unpacked. The shared-map cache holds `Arc`s the chunk keeps
    /// alive, so the chunk must outlive the batch ([`Self::clear`]).
    pub fn packed_map_edited(
        &mut self,
        c: &mut Cursor<'_>,
        out: &mut Vec<u8>,
        keys: usize,
        front: &[RawPair<'_>],
        set: Option<RawPair<'_>>,
        depth: usize,
    ) -> Result<(), UnpackError> {
        if depth > MAX_DEPTH {
            return Err(UnpackError::TooDeep);
        }
        if self.packed_lists.len() <= keys {
            self.packed_lists.resize_with(keys + 1, || None);
        }
        let mut list = match self.packed_lists[keys].take() {
            Some(l) => l,
            None => KeyList::of_keys(c.keys(keys), self.dots),
        };
        let set_at = set.and_then(|(key, _)| list.set_at(key, c.keys(keys)));
        out.push(b'{');
        let mut first = true;
        for (k, v) in front {
            if !std::mem::take(&mut first) {
                out.push(b',');
            }
            str(out, k);
            out.push(b':');
            out.extend_from_slice(v);
        }
        let mut result = Ok(());
        for (i, pair) in list.pairs.iter().enumerate() {
            // Read where `item` returned it, as `EscapedJson::packed_map` does (moving it out
            // of the `Result` stalled on a wider load).
            let next = c.item();
            let item = match &next {
                Ok(item) => item,
                Err(e) => {
                    result = Err(e.clone());
                    break;
                }
            };
            let written = match pair {
                Some(span) => {
                    if !std::mem::take(&mut first) {
                        out.push(b',');
                    }
                    out.extend_from_slice(list.text.get(span.clone()).unwrap_or_default());
                    match set {
                        Some((_, raw)) if set_at == Some(i) => {
                            out.extend_from_slice(raw);
                            skip(c, item, depth + 1)
                        }
                        _ => self.packed_value(c, out, item, depth + 1),
                    }
                }
                // An earlier duplicate of a key: read past, not written.
                None => skip(c, item, depth + 1),
            };
            if let Err(e) = written {
                result = Err(e);
                break;
            }
        }
        if let (Some((k, v)), None, Ok(())) = (set, set_at, &result) {
            if !first {
                out.push(b',');
            }
            str(out, k);
            out.push(b':');
            out.extend_from_slice(v);
        }
        out.push(b'}');
        self.packed_lists[keys] = Some(list);
        result
    }

    /// Appends a packed value (its contents, if any, next in `c`) as JSON.
    fn packed_value(
        &mut self,
        c: &mut Cursor<'_>,
        out: &mut Vec<u8>,
        item: &Item<'_>,
        depth: usize,
    ) -> Result<(), UnpackError> {
        match *item {
            Item::Null => out.extend_from_slice(b"null"),
            Item::Bool(true) => out.extend_from_slice(b"true"),
            Item::Bool(false) => out.extend_from_slice(b"false"),
            Item::Int(i) => out.extend_from_slice(itoa::Buffer::new().format(i).as_bytes()),
            Item::UInt(u) => out.extend_from_slice(itoa::Buffer::new().format(u).as_bytes()),
            Item::Float(f) => float(out, f),
            Item::Str(s) => str(out, s),
            Item::Array(n) => {
                if depth > MAX_DEPTH {
                    return Err(UnpackError::TooDeep);
                }
                out.push(b'[');
                for i in 0..n {
                    if i > 0 {
                        out.push(b',');
                    }
                    let next = c.item();
                    let item = next.as_ref().map_err(UnpackError::clone)?;
                    self.packed_value(c, out, item, depth + 1)?;
                }
                out.push(b']');
            }
            Item::Map(keys) => self.packed_map_edited(c, out, keys, &[], None, depth)?,
            Item::Shared(m) => self.shared(out, m),
        }
        Ok(())
    }

    /// Appends the message for `body` ([`crate::encode::write_message`]'s bytes): the record
    /// as JSON, or the `log_key` value (a string raw, anything else as JSON).
    pub fn message(
        &mut self,
        out: &mut Vec<u8>,
        body: &Map,
        log_key: Option<&RecordAccessor>,
    ) -> Result<(), Skip> {
        let start = out.len();
        match log_key {
            None => self.map(out, body),
            Some(key) => match key.get(body) {
                None => return Err(Skip::MissingKey),
                Some(Value::Str(s)) => out.extend_from_slice(s.as_bytes()),
                Some(v) => self.value(out, v),
            },
        }
        if out.len() == start {
            return Err(Skip::Empty);
        }
        Ok(())
    }
}

/// Reads past a packed value's contents (an array's values, a map's), writing nothing.
fn skip(c: &mut Cursor<'_>, item: &Item<'_>, depth: usize) -> Result<(), UnpackError> {
    let n = match *item {
        Item::Array(n) => n,
        Item::Map(keys) => c.keys(keys).len(),
        _ => return Ok(()),
    };
    if depth > MAX_DEPTH {
        return Err(UnpackError::TooDeep);
    }
    for _ in 0..n {
        let next = c.item();
        skip(c, next.as_ref().map_err(UnpackError::clone)?, depth + 1)?;
    }
    Ok(())
}

/// Appends record key `k` as a JSON string, its dots as underscores with `dots`.
fn key(out: &mut Vec<u8>, k: &str, dots: bool) {
    if !dots {
        return str(out, k);
    }
    out.push(b'"');
    for (i, part) in k.split('.').enumerate() {
        if i > 0 {
            out.push(b'_');
        }
        escape_json_str(out, part.as_bytes());
    }
    out.push(b'"');
}

/// Appends `s` as a JSON string.
pub fn str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    escape_json_str(out, s.as_bytes());
    out.push(b'"');
}

/// Appends `f` as serde_json does (`null` when not finite).
pub fn float(out: &mut Vec<u8>, f: f64) {
    if !f.is_finite() || serde_json::to_writer(&mut *out, &f).is_err() {
        out.extend_from_slice(b"null");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::{write_json, write_message};
    use std::sync::Arc;

    fn sample() -> Map {
        let mut shared = Map::new();
        shared.insert("pod_name", "web-1");
        shared.insert(
            "labels",
            Value::Map(Map(vec![("app".into(), Value::from("a\"b"))])),
        );
        let shared = Value::SharedMap(Arc::new(shared));
        Map(vec![
            ("a".into(), Value::Int(-42)),
            ("u".into(), Value::UInt(u64::MAX)),
            ("f".into(), Value::Float(1.0)),
            ("g".into(), Value::Float(1e20)),
            ("h".into(), Value::Float(-0.0)),
            ("i".into(), Value::Float(0.1 + 0.2)),
            ("nan".into(), Value::Float(f64::NAN)),
            ("inf".into(), Value::Float(f64::NEG_INFINITY)),
            ("t".into(), Value::Bool(true)),
            ("n".into(), Value::Null),
            (
                "ctl\u{1f}".into(),
                Value::from("x\u{0}y\u{8}\u{c}\r\n\t\\/é✓\u{7f} long enough for the 8-byte path"),
            ),
            ("日本".into(), Value::from("語 😀 \"q\"")),
            (
                "arr".into(),
                Value::Array(vec![Value::Int(1), shared.clone(), Value::Array(vec![])]),
            ),
            ("k8s".into(), shared.clone()),
            ("again".into(), shared),
            ("empty".into(), Value::Map(Map::new())),
            ("a".into(), Value::from("last wins")),
        ])
    }

    #[test]
    fn the_bytes_of_serde_json() {
        let m = sample();
        let mut want = Vec::new();
        write_json(&mut want, &m).unwrap();
        let mut enc = PlainJson::default();
        for _ in 0..2 {
            let mut out = Vec::new();
            enc.map(&mut out, &m);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                String::from_utf8(want.clone()).unwrap()
            );
        }
        assert_eq!(enc.shared.len(), 1, "the shared map is encoded once");
        enc.clear();
        assert!(enc.shared.is_empty() && enc.cache.is_empty());
    }

    #[test]
    fn set_and_front_match_a_modified_copy() {
        let raw = br#""2026-01-01T00:00:00""#;
        let value = Value::from("2026-01-01T00:00:00");
        let mut enc = PlainJson::default();
        // Key absent, present once, present twice (the first gets the value, the last is
        // what is printed), present twice with the first being... also the only printed one.
        for key in ["time", "a", "f", "日本"] {
            let m = sample();
            let mut copy = m.clone();
            copy.insert(key, value.clone());
            let mut want = Vec::new();
            write_json(&mut want, &copy).unwrap();
            let mut out = Vec::new();
            enc.map_edited(&mut out, &m, &[], Some((key, raw)));
            assert_eq!(
                String::from_utf8(out).unwrap(),
                String::from_utf8(want).unwrap(),
                "{key}"
            );
        }
        let m = sample();
        let mut front = Map::with_capacity(m.len() + 1);
        front.0.push(("date".into(), Value::Float(1.5)));
        front.0.extend(m.0.iter().cloned());
        let mut want = Vec::new();
        write_json(&mut want, &front).unwrap();
        let mut out = Vec::new();
        enc.map_edited(&mut out, &m, &[("date", b"1.5")], None);
        assert_eq!(out, want);
    }

    #[test]
    fn messages_match_write_message() {
        let mut m = sample();
        m.insert("log", "plain \"text\"\n");
        m.insert("blank", "");
        let mut enc = PlainJson::default();
        for key in [
            None,
            Some("log"),
            Some("k8s"),
            Some("$k8s['pod_name']"),
            Some("nan"),
            Some("nope"),
            Some("blank"),
        ] {
            let acc = key.map(|k| RecordAccessor::parse_key(k).unwrap());
            let (mut a, mut b) = (Vec::new(), Vec::new());
            let ra = write_message(&mut a, &m, acc.as_ref());
            let rb = enc.message(&mut b, &m, acc.as_ref());
            assert_eq!(ra, rb, "{key:?}");
            assert_eq!(a, b, "{key:?}");
        }
    }
}
