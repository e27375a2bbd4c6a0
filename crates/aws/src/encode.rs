//! Record → message bytes, shared by the outputs.
//!
//! A record is sent as one JSON object (UTF-8 as is, no `\u` escaping: AWS takes UTF-8; when a
//! key repeats, the last value wins, as Fluent Bit's maps read). With `log_key`, only that
//! key's value is sent: a string raw (no quotes), anything else as JSON — Fluent Bit's rule.

use logferry_core::packed::{Cursor, Item, UnpackError, MAX_DEPTH};
use std::collections::HashMap;

use logferry_core::{Map, Value};
use logferry_filters::record_accessor::RecordAccessor;
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

/// A map serialized with the last duplicate of a key winning.
pub struct JsonMap<'a>(pub &'a Map);

/// A value serialized with [`JsonMap`]'s rule for nested maps.
pub struct JsonValue<'a>(pub &'a Value);

impl Serialize for JsonMap<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut out = s.serialize_map(None)?;
        for (k, v) in self.0.iter_last_wins() {
            out.serialize_entry(k.as_str(), &JsonValue(v))?;
        }
        out.end()
    }
}

impl Serialize for JsonValue<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Map(m) => JsonMap(m).serialize(s),
            Value::SharedMap(m) => JsonMap(m).serialize(s),
            Value::Array(a) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for v in a {
                    seq.serialize_element(&JsonValue(v))?;
                }
                seq.end()
            }
            Value::Float(f) if !f.is_finite() => s.serialize_unit(),
            other => other.serialize(s),
        }
    }
}

/// Appends `body` as one JSON object.
pub fn write_json(out: &mut Vec<u8>, body: &Map) -> Result<(), serde_json::Error> {
    serde_json::to_writer(out, &JsonMap(body))
}

/// Appends a value as JSON.
pub fn write_json_value(out: &mut Vec<u8>, v: &Value) -> Result<(), serde_json::Error> {
    serde_json::to_writer(out, &JsonValue(v))
}

/// Why a record produced no message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Skip {
    /// `log_key` is set and the record does not have it.
    MissingKey,
    /// The message would be empty (AWS refuses empty events).
    Empty,
    /// The record cannot be encoded (never happens with JSON-like values; kept for safety).
    Encoding,
}

impl Skip {
    /// Words for the log.
    pub fn reason(self) -> &'static str {
        match self {
            Skip::MissingKey => "the record has no log_key",
            Skip::Empty => "the message is empty",
            Skip::Encoding => "the record could not be encoded as JSON",
        }
    }
}

/// The high bit of each byte of `w` that is `"`, `\` or a control character (below 0x20): the
/// bytes JSON must escape. The classic "has zero byte" and "has less than" word tricks, so runs
/// of plain text are skipped 8 bytes at a time. Bits above the lowest one may be set by a
/// borrow, but the lowest is exact: `trailing_zeros() / 8` is the first byte to escape.
#[inline]
fn escape_mask(w: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    let below_0x20 = w.wrapping_sub(ONES * 0x20) & !w & HIGHS;
    below_0x20 | zero(w ^ (ONES * b'"' as u64)) | zero(w ^ (ONES * b'\\' as u64))
}

/// Whether any of the 8 bytes of `w` is one JSON must escape (exact as a yes/no).
#[inline]
fn word_needs_escape(w: u64) -> bool {
    escape_mask(w) != 0
}

/// JSON's escape of one byte (serde_json's: `\"`, `\\`, `\b \f \n \r \t`, else `\u00XX` for
/// control characters), or `None` for a byte written as is.
#[inline]
fn json_escape(b: u8) -> Option<([u8; 6], usize)> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let two = |c: u8| Some(([b'\\', c, 0, 0, 0, 0], 2));
    match b {
        b'"' => two(b'"'),
        b'\\' => two(b'\\'),
        b'\n' => two(b'n'),
        b'\r' => two(b'r'),
        b'\t' => two(b't'),
        0x08 => two(b'b'),
        0x0c => two(b'f'),
        0..=0x1f => Some((
            [
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 15) as usize],
            ],
            6,
        )),
        _ => None,
    }
}

/// Calls `each` with every run of bytes JSON writes as is (`Err(run)`) and every other byte
/// (`Ok(byte)`), in order.
#[inline]
fn scan_escapes(raw: &[u8], mut each: impl FnMut(Result<u8, &[u8]>)) {
    let mut start = 0;
    let mut i = 0;
    while i < raw.len() {
        if let Some(chunk) = raw.get(i..i + 8) {
            let mut w = [0u8; 8];
            w.copy_from_slice(chunk);
            if !word_needs_escape(u64::from_le_bytes(w)) {
                i += 8;
                continue;
            }
        }
        let end = (i + 8).min(raw.len());
        while i < end {
            let b = raw[i];
            if b < 0x20 || b == b'"' || b == b'\\' {
                each(Err(&raw[start..i]));
                each(Ok(b));
                start = i + 1;
            }
            i += 1;
        }
    }
    each(Err(&raw[start..]));
}

/// Escapes `raw` as the inside of a JSON string (`"`, `\\` and control characters; UTF-8 is
/// kept as is) onto `out`.
pub fn escape_json_str(out: &mut Vec<u8>, raw: &[u8]) {
    scan_escapes(raw, |piece| match piece {
        Err(run) => out.extend_from_slice(run),
        Ok(b) => {
            // `json_escape` answers every byte `scan_escapes` calls special.
            if let Some((e, n)) = json_escape(b) {
                out.extend_from_slice(&e[..n]);
            }
        }
    });
}

/// Writes values as JSON (serde_json's output for [`JsonValue`], byte for byte) already
/// escaped as the inside of a JSON string: what a request body that carries a record's JSON
/// as a string field (PutLogEvents' `message`) needs, in one pass, without the intermediate
/// JSON text. Each call returns the JSON's length before the second escaping (what AWS counts).
///
/// Shared maps (the kubernetes filter's per-pod metadata, [`Value::SharedMap`]) are encoded
/// once per encoder and copied after that: an encoder must not outlive the records it
/// encodes, since the cache is keyed by the map's address.
///
/// A batch's records mostly have the same keys in the same order (one parser's fields), so
/// the encoder remembers the last few key lists it saw ([`KeyList`]): for a map with one of
/// them, each key is copied already escaped and which duplicates to skip is known, instead of
/// escaping every key and looking for duplicates in every record.
#[derive(Default)]
pub struct EscapedJson {
    shared: std::collections::HashMap<usize, (std::ops::Range<usize>, usize)>,
    cache: Vec<u8>,
    key_lists: Vec<KeyList>,
    /// The next entry of `key_lists` to replace once it is full.
    evict: usize,
    /// Maps found and not found in `key_lists`: when the records' keys vary too much for
    /// the cache to pay (each miss builds an entry), maps are written without it.
    hits: u32,
    misses: u32,
    /// The key lists of the packed chunk being encoded, by its numbers ([`Item::Map`]).
    packed_lists: Vec<Option<KeyList>>,
}

/// Key lists remembered per encoder; maps with more keys than [`KEY_LIST_MAX`] are not
/// remembered (rare, and comparing them would cost what it saves).
const KEY_LISTS: usize = 8;
const KEY_LIST_MAX: usize = 64;

/// One map's keys, in order, with what the encoder writes for each.
#[derive(Default)]
struct KeyList {
    keys: Vec<logferry_core::Str>,
    /// Escaped `\"key\":` text (with the `,` before it for all but the first written pair).
    text: Vec<u8>,
    /// Per pair: its span in `text` and its raw (once-escaped) length, or `None` when a later
    /// pair has the same key (the last duplicate wins).
    pairs: Vec<Option<(std::ops::Range<usize>, usize)>>,
}

impl KeyList {
    fn new(m: &Map) -> Self {
        let keys: Vec<&str> = m.0.iter().map(|(k, _)| k.as_str()).collect();
        let mut list = Self::of_keys(&keys);
        list.keys = m.0.iter().map(|(k, _)| k.clone()).collect();
        list
    }

    /// The escaped keys of `keys` (its `keys` field left empty: for packed key lists, which
    /// are found by number, not compared).
    fn of_keys(keys: &[&str]) -> Self {
        let mut list = KeyList {
            keys: Vec::new(),
            text: Vec::new(),
            pairs: Vec::with_capacity(keys.len()),
        };
        let mut first = true;
        for (k, later) in keys.iter().zip(later_duplicates(keys)) {
            if later {
                list.pairs.push(None);
                continue;
            }
            let from = list.text.len();
            let mut raw = 1;
            if !first {
                list.text.push(b',');
                raw += 1;
            }
            first = false;
            raw += EscapedJson::str(&mut list.text, k.as_bytes());
            list.text.push(b':');
            list.pairs.push(Some((from..list.text.len(), raw)));
        }
        list
    }

    fn matches(&self, m: &Map) -> bool {
        self.keys.len() == m.0.len() && self.keys.iter().zip(&m.0).all(|(a, (b, _))| a == b)
    }
}

/// For each of `keys`, whether a later key is the same (so this pair is not written: the last
/// duplicate wins). By scanning for a small map, by index for a larger one (as
/// `Map::iter_last_wins` does).
pub(crate) fn later_duplicates<'k>(keys: &'k [&'k str]) -> impl Iterator<Item = bool> + 'k {
    let last: Option<HashMap<&str, usize>> = (keys.len() > logferry_core::event::SMALL_MAP)
        .then(|| keys.iter().enumerate().map(|(i, k)| (*k, i)).collect());
    keys.iter().enumerate().map(move |(i, k)| match &last {
        Some(last) => last.get(k) != Some(&i),
        None => keys[i + 1..].contains(k),
    })
}

impl EscapedJson {
    /// Appends `m` as a JSON object (the last duplicate of a key wins).
    pub fn map(&mut self, out: &mut Vec<u8>, m: &Map) -> usize {
        if m.0.len() > KEY_LIST_MAX || (self.misses > 32 && self.misses > 2 * self.hits) {
            return self.map_uncached(out, m);
        }
        let hit = match self.key_lists.iter().position(|l| l.matches(m)) {
            Some(i) => {
                self.hits += 1;
                i
            }
            None => {
                self.misses += 1;
                let list = KeyList::new(m);
                if self.key_lists.len() < KEY_LISTS {
                    self.key_lists.push(list);
                    self.key_lists.len() - 1
                } else {
                    let i = self.evict;
                    self.evict = (i + 1) % KEY_LISTS;
                    self.key_lists[i] = list;
                    i
                }
            }
        };
        // Taken out while its values are written (they may be maps that use the cache too).
        let list = std::mem::take(&mut self.key_lists[hit]);
        let mut raw = 2;
        out.push(b'{');
        for ((_, v), pair) in m.0.iter().zip(&list.pairs) {
            if let Some((span, key_raw)) = pair {
                out.extend_from_slice(list.text.get(span.clone()).unwrap_or_default());
                raw += key_raw + self.value(out, v);
            }
        }
        out.push(b'}');
        self.key_lists[hit] = list;
        raw
    }

    /// [`Self::map`] without the key-list cache.
    fn map_uncached(&mut self, out: &mut Vec<u8>, m: &Map) -> usize {
        let mut raw = 2;
        out.extend_from_slice(b"{");
        for (i, (k, v)) in m.iter_last_wins().enumerate() {
            if i > 0 {
                out.push(b',');
                raw += 1;
            }
            raw += Self::str(out, k.as_bytes());
            out.push(b':');
            raw += 1 + self.value(out, v);
        }
        out.extend_from_slice(b"}");
        raw
    }

    /// Appends `v` as JSON.
    pub fn value(&mut self, out: &mut Vec<u8>, v: &Value) -> usize {
        match v {
            Value::Null => Self::literal(out, b"null"),
            Value::Bool(b) => Self::bool(out, *b),
            Value::Int(i) => Self::literal(out, itoa::Buffer::new().format(*i).as_bytes()),
            Value::UInt(u) => Self::literal(out, itoa::Buffer::new().format(*u).as_bytes()),
            Value::Float(f) => Self::float(out, *f),
            Value::Str(s) => Self::str(out, s.as_bytes()),
            Value::Array(a) => {
                let mut raw = 2;
                out.push(b'[');
                for (i, v) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                        raw += 1;
                    }
                    raw += self.value(out, v);
                }
                out.push(b']');
                raw
            }
            Value::Map(m) => self.map(out, m),
            Value::SharedMap(m) => self.shared(out, m),
        }
    }

    /// Numbers and literals have nothing to escape.
    fn literal(out: &mut Vec<u8>, text: &[u8]) -> usize {
        out.extend_from_slice(text);
        text.len()
    }

    fn bool(out: &mut Vec<u8>, b: bool) -> usize {
        Self::literal(out, if b { b"true" } else { b"false" })
    }

    fn float(out: &mut Vec<u8>, f: f64) -> usize {
        let start = out.len();
        // serde_json's own float format (`1e+20`), so the two encodings agree; JSON has no
        // NaN or infinity, so those are `null`, as serde_json writes them.
        if !f.is_finite() || serde_json::to_writer(&mut *out, &f).is_err() {
            out.truncate(start);
            out.extend_from_slice(b"null");
        }
        out.len() - start
    }

    /// A shared map: encoded once, copied after that.
    fn shared(&mut self, out: &mut Vec<u8>, m: &std::sync::Arc<Map>) -> usize {
        let key = std::sync::Arc::as_ptr(m) as usize;
        let (span, raw) = match self.shared.get(&key) {
            Some(hit) => hit.clone(),
            None => {
                let mut cache = std::mem::take(&mut self.cache);
                let from = cache.len();
                let raw = self.map(&mut cache, m);
                let span = from..cache.len();
                self.cache = cache;
                self.shared.insert(key, (span.clone(), raw));
                (span, raw)
            }
        };
        out.extend_from_slice(self.cache.get(span).unwrap_or_default());
        raw
    }

    /// Starts a packed chunk: its key lists are numbered afresh.
    pub fn start_packed(&mut self) {
        self.packed_lists.clear();
    }

    /// Appends a packed map (key list `keys`, its values next in `c`) as a JSON object, the
    /// same bytes [`Self::map`] writes for the map unpacked. The shared-map cache holds
    /// `Arc`s the chunk keeps alive, so the chunk must outlive the encoder.
    pub fn packed_map(
        &mut self,
        c: &mut Cursor<'_>,
        out: &mut Vec<u8>,
        keys: usize,
        depth: usize,
    ) -> Result<usize, UnpackError> {
        if depth > MAX_DEPTH {
            return Err(UnpackError::TooDeep);
        }
        if self.packed_lists.len() <= keys {
            self.packed_lists.resize_with(keys + 1, || None);
        }
        let list = match self.packed_lists[keys].take() {
            Some(l) => l,
            None => KeyList::of_keys(c.keys(keys)),
        };
        let mut raw = 2;
        out.push(b'{');
        let mut result = Ok(());
        for pair in &list.pairs {
            // The item is read where `item` returned it: moving it out of the `Result` loaded
            // it wider than `item` had stored it (a store-forwarding stall, 57% of this
            // function's cpu-clock samples on P5; docs/performance.md).
            let next = c.item();
            let item = match &next {
                Ok(item) => item,
                Err(e) => {
                    result = Err(e.clone());
                    break;
                }
            };
            match pair {
                Some((span, key_raw)) => {
                    out.extend_from_slice(list.text.get(span.clone()).unwrap_or_default());
                    match self.packed_value(c, out, item, depth + 1) {
                        Ok(n) => raw += key_raw + n,
                        Err(e) => {
                            result = Err(e);
                            break;
                        }
                    }
                }
                // An earlier duplicate of a key: read past, not written.
                None => {
                    if let Err(e) = self.packed_value(c, &mut Vec::new(), item, depth + 1) {
                        result = Err(e);
                        break;
                    }
                }
            }
        }
        out.push(b'}');
        self.packed_lists[keys] = Some(list);
        result.map(|()| raw)
    }

    /// Appends a packed value (its contents, if any, next in `c`) as JSON.
    fn packed_value(
        &mut self,
        c: &mut Cursor<'_>,
        out: &mut Vec<u8>,
        item: &Item<'_>,
        depth: usize,
    ) -> Result<usize, UnpackError> {
        Ok(match *item {
            Item::Null => Self::literal(out, b"null"),
            Item::Bool(b) => Self::bool(out, b),
            Item::Int(i) => Self::literal(out, itoa::Buffer::new().format(i).as_bytes()),
            Item::UInt(u) => Self::literal(out, itoa::Buffer::new().format(u).as_bytes()),
            Item::Float(f) => Self::float(out, f),
            Item::Str(s) => Self::str(out, s.as_bytes()),
            Item::Array(n) => {
                if depth > MAX_DEPTH {
                    return Err(UnpackError::TooDeep);
                }
                let mut raw = 2;
                out.push(b'[');
                for i in 0..n {
                    if i > 0 {
                        out.push(b',');
                        raw += 1;
                    }
                    let next = c.item();
                    let item = next.as_ref().map_err(UnpackError::clone)?;
                    raw += self.packed_value(c, out, item, depth + 1)?;
                }
                out.push(b']');
                raw
            }
            Item::Map(keys) => self.packed_map(c, out, keys, depth)?,
            Item::Shared(m) => self.shared(out, m),
        })
    }

    /// Appends the JSON string of `s`, escaped again; returns its length as JSON. Most values
    /// have nothing to escape: they are checked a word at a time (the last one padded or
    /// overlapping) and copied in one piece; otherwise each byte to escape is found from the
    /// word's mask.
    fn str(out: &mut Vec<u8>, s: &[u8]) -> usize {
        out.reserve(s.len() + 4);
        out.extend_from_slice(b"\\\"");
        let n = s.len();
        let mut i = 0;
        let clean = loop {
            if let Some(word) = s.get(i..i + 8) {
                if word_needs_escape(u64::from_le_bytes(word.try_into().unwrap_or([0; 8]))) {
                    break false;
                }
                i += 8;
            } else if let Some(last) = n.checked_sub(8).and_then(|from| s.get(from..)) {
                // The last word, overlapping what was checked already.
                break !word_needs_escape(u64::from_le_bytes(last.try_into().unwrap_or([0; 8])));
            } else {
                break !word_needs_escape(padded(s));
            }
        };
        if clean {
            out.extend_from_slice(s);
            out.extend_from_slice(b"\\\"");
            return n + 2;
        }
        let mut raw = 2 + n;
        let mut start = 0;
        loop {
            let w = match s.get(i..i + 8) {
                Some(word) => u64::from_le_bytes(word.try_into().unwrap_or([0; 8])),
                None if i >= n => break,
                None => padded(&s[i..]),
            };
            let mask = escape_mask(w);
            if mask == 0 {
                i += 8;
                continue;
            }
            let at = i + (mask.trailing_zeros() / 8) as usize;
            out.extend_from_slice(&s[start..at]);
            raw += double_escape(out, s[at]);
            start = at + 1;
            i = at + 1;
        }
        out.extend_from_slice(&s[start..]);
        out.extend_from_slice(b"\\\"");
        raw
    }
}

/// Up to 8 bytes as a word, padded with a byte that needs no escape.
#[inline]
fn padded(s: &[u8]) -> u64 {
    let mut w = [b'a'; 8];
    for (k, &b) in s.iter().take(8).enumerate() {
        w[k] = b;
    }
    u64::from_le_bytes(w)
}

/// Appends JSON's escape of `b` ([`json_escape`]) escaped again, as the inside of a JSON
/// string (`\"` → `\\\"`, `\n` → `\\n`, `\u001f` → `\\u001f`); returns how many bytes the
/// escape adds to the once-escaped JSON (beyond `b`).
#[inline]
fn double_escape(out: &mut Vec<u8>, b: u8) -> usize {
    let Some((e, n)) = json_escape(b) else {
        out.push(b);
        return 0;
    };
    // The escape's own `\`, escaped; then its letters, of which only a `"` or `\` it names
    // needs escaping again.
    out.extend_from_slice(b"\\\\");
    for &c in &e[1..n] {
        if c == b'"' || c == b'\\' {
            out.push(b'\\');
        }
        out.push(c);
    }
    n - 1
}

/// Appends the message for `body` escaped as the inside of a JSON string ([`write_message`]'s
/// rules); returns its length before escaping, which is what AWS counts.
pub fn write_message_escaped(
    enc: &mut EscapedJson,
    out: &mut Vec<u8>,
    body: &Map,
    log_key: Option<&RecordAccessor>,
) -> Result<usize, Skip> {
    let raw = match log_key {
        None => enc.map(out, body),
        Some(key) => match key.get(body) {
            None => return Err(Skip::MissingKey),
            Some(Value::Str(s)) => {
                escape_json_str(out, s.as_bytes());
                s.len()
            }
            Some(v) => enc.value(out, v),
        },
    };
    if raw == 0 {
        return Err(Skip::Empty);
    }
    Ok(raw)
}

/// Appends the message for `body`: the whole record as JSON, or the `log_key` value.
pub fn write_message(
    out: &mut Vec<u8>,
    body: &Map,
    log_key: Option<&RecordAccessor>,
) -> Result<(), Skip> {
    let start = out.len();
    match log_key {
        None => write_json(out, body).map_err(|_| Skip::Encoding)?,
        Some(key) => match key.get(body) {
            None => return Err(Skip::MissingKey),
            Some(Value::Str(s)) => out.extend_from_slice(s.as_bytes()),
            Some(v) => write_json_value(out, v).map_err(|_| Skip::Encoding)?,
        },
    }
    if out.len() == start {
        return Err(Skip::Empty);
    }
    Ok(())
}

/// The longest prefix of `s` that is at most `max` bytes and ends on a character boundary.
pub fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Whether `items` print nothing finer than a second: no fraction (`%f`, `%3f`, `%.6f`,
/// `%9f`, which Fluent Bit's `%3N`, `%9N` and `%L` become) and no RFC 3339 (`%+`, which may
/// print one).
pub(crate) fn whole_seconds(items: &[chrono::format::Item<'_>]) -> bool {
    use chrono::format::{Fixed, Item, Numeric};
    !items.iter().any(|i| {
        matches!(
            i,
            Item::Numeric(Numeric::Nanosecond, _)
                | Item::Fixed(
                    Fixed::Nanosecond
                        | Fixed::Nanosecond3
                        | Fixed::Nanosecond6
                        | Fixed::Nanosecond9
                        | Fixed::RFC3339
                        | Fixed::Internal(_)
                )
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_with_last_duplicate_winning() {
        let m = Map(vec![
            ("a".into(), Value::Int(1)),
            ("é".into(), Value::from("ü\"")),
            ("a".into(), Value::Float(2.5)),
            ("nan".into(), Value::Float(f64::NAN)),
        ]);
        let mut out = Vec::new();
        write_json(&mut out, &m).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"é":"ü\"","a":2.5,"nan":null}"#
        );
    }

    #[test]
    fn log_key_raw_string_json_otherwise_and_skips() {
        let mut m = Map::new();
        m.insert("log", "hello");
        m.insert("obj", Value::Map(Map(vec![("x".into(), Value::Int(1))])));
        m.insert("empty", "");
        let key = |k: &str| RecordAccessor::parse_key(k).unwrap();
        let msg = |k: Option<&RecordAccessor>| {
            let mut out = Vec::new();
            write_message(&mut out, &m, k).map(|_| String::from_utf8(out).unwrap())
        };
        assert_eq!(msg(Some(&key("log"))).unwrap(), "hello");
        assert_eq!(msg(Some(&key("obj"))).unwrap(), r#"{"x":1}"#);
        assert_eq!(msg(Some(&key("$obj['x']"))).unwrap(), "1");
        assert_eq!(msg(Some(&key("nope"))), Err(Skip::MissingKey));
        assert_eq!(msg(Some(&key("empty"))), Err(Skip::Empty));
        assert!(msg(None).unwrap().starts_with(r#"{"log":"hello""#));
    }

    #[test]
    fn escaped_messages_read_back_as_the_plain_ones() {
        let mut m = Map::new();
        m.insert("log", "a \"quoted\" \\ back\nslash\t\u{1}\u{7f} é ✓");
        m.insert(
            "nested",
            Value::Map(Map(vec![("k".into(), Value::from("v\"w"))])),
        );
        let key = RecordAccessor::parse_key("log").unwrap();
        for log_key in [None, Some(&key)] {
            let mut plain = Vec::new();
            write_message(&mut plain, &m, log_key).unwrap();
            let mut escaped = b"\"".to_vec();
            let raw = write_message_escaped(&mut EscapedJson::default(), &mut escaped, &m, log_key)
                .unwrap();
            escaped.push(b'"');
            assert_eq!(raw, plain.len());
            let back: String = serde_json::from_slice(&escaped).unwrap();
            assert_eq!(back.as_bytes(), plain.as_slice());
        }
        let mut out = Vec::new();
        let mut empty = Map::new();
        empty.insert("log", "");
        assert_eq!(
            write_message_escaped(&mut EscapedJson::default(), &mut out, &empty, Some(&key)),
            Err(Skip::Empty)
        );
    }

    #[test]
    fn escaped_json_is_serde_jsons_output_escaped_once_more() {
        let mut shared = Map::new();
        shared.insert("pod_name", "web-1");
        shared.insert(
            "labels",
            Value::Map(Map(vec![("app".into(), Value::from("a\"b"))])),
        );
        let shared = Value::SharedMap(std::sync::Arc::new(shared));
        let m = Map(vec![
            ("a".into(), Value::Int(-42)),
            ("u".into(), Value::UInt(u64::MAX)),
            ("f".into(), Value::Float(1.0)),
            ("g".into(), Value::Float(1e20)),
            ("h".into(), Value::Float(-0.0)),
            ("i".into(), Value::Float(0.1 + 0.2)),
            ("nan".into(), Value::Float(f64::NAN)),
            ("t".into(), Value::Bool(true)),
            ("n".into(), Value::Null),
            (
                "ctl\u{1f}".into(),
                Value::from("x\u{0}y\u{8}\u{c}\r\n\t\\/é✓ long enough to take the 8-byte path"),
            ),
            (
                "arr".into(),
                Value::Array(vec![Value::Int(1), shared.clone(), Value::Array(vec![])]),
            ),
            ("k8s".into(), shared.clone()),
            ("again".into(), shared),
            ("a".into(), Value::from("last wins")),
        ]);
        let mut enc = EscapedJson::default();
        for _ in 0..2 {
            assert_escapes_serde_jsons_text(&mut enc, &m);
        }
        assert_eq!(enc.shared.len(), 1, "the shared map is encoded once");
    }

    /// `enc` writes `m` escaped so that reading the JSON string back gives serde_json's text
    /// of `m`, and returns that text's length.
    fn assert_escapes_serde_jsons_text(enc: &mut EscapedJson, m: &Map) {
        let mut plain = Vec::new();
        write_json(&mut plain, m).unwrap();
        let mut escaped = b"\"".to_vec();
        let raw = enc.map(&mut escaped, m);
        escaped.push(b'"');
        let back: String = serde_json::from_slice(&escaped).unwrap();
        assert_eq!(back.as_bytes(), plain.as_slice(), "{m:?}");
        assert_eq!(raw, plain.len(), "{m:?}");
    }

    /// The key-list cache against serde_json: random maps whose keys repeat between maps
    /// (more lists than are remembered, so entries are replaced), with duplicate keys, nested
    /// maps, a map too long to remember, and strings with every kind of escape.
    #[test]
    fn remembered_key_lists_give_serde_jsons_output() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(20);
        let keys = [
            "a",
            "b",
            "log",
            "k\"q",
            "é",
            "ctl\u{1}",
            "a long key past eight bytes",
        ];
        let texts = [
            "",
            "x",
            "say \"hi\"\n",
            "tab\tback\\slash",
            "\u{0}\u{1f}\u{7f}",
            "plain text longer than one word",
        ];
        fn random_map(
            rng: &mut rand::rngs::StdRng,
            keys: &[&str],
            texts: &[&str],
            depth: usize,
        ) -> Map {
            let n = rng.random_range(0..6);
            let mut m = Map::new();
            for _ in 0..n {
                let k = keys[rng.random_range(0..keys.len())];
                let v = match rng.random_range(0..5) {
                    0 if depth < 2 => Value::Map(random_map(rng, keys, texts, depth + 1)),
                    1 => Value::Int(rng.random_range(-5..5)),
                    _ => Value::from(texts[rng.random_range(0..texts.len())]),
                };
                m.0.push((k.into(), v));
            }
            m
        }
        let mut enc = EscapedJson::default();
        let mut long = Map::new();
        for i in 0..(KEY_LIST_MAX + 3) {
            long.0.push((
                format!("k{}", i % (KEY_LIST_MAX + 1)).into(),
                Value::Int(i as i64),
            ));
        }
        // Past `SMALL_MAP` keys, duplicates are found by index.
        let mut wide = Map::new();
        for i in 0..45 {
            wide.0.push((format!("w{}", i % 37).into(), Value::Int(i)));
        }
        for round in 0..2000 {
            let m = match round % 97 {
                0 => long.clone(),
                1 => wide.clone(),
                _ => random_map(&mut rng, &keys, &texts, 0),
            };
            assert_escapes_serde_jsons_text(&mut enc, &m);
        }
        assert_eq!(enc.key_lists.len(), KEY_LISTS);
        assert!(enc.hits > 0, "random maps repeat key lists");
    }

    /// Records whose keys vary too much for the cache are written without it, and still as
    /// serde_json writes them.
    #[test]
    fn key_lists_that_never_repeat_turn_the_cache_off() {
        let mut enc = EscapedJson::default();
        for i in 0..200 {
            let m = Map(vec![
                (format!("k{i}").into(), Value::Int(i)),
                ("x".into(), Value::from("y")),
            ]);
            assert_escapes_serde_jsons_text(&mut enc, &m);
        }
        assert_eq!(enc.hits, 0);
        assert_eq!(
            enc.misses, 33,
            "the cache is left alone after 33 misses in a row"
        );
    }

    #[test]
    fn the_word_test_finds_every_byte_to_escape_at_every_position() {
        for pos in 0..8 {
            for b in 0u8..=255 {
                let mut w = [b'a'; 8];
                w[pos] = b;
                let want = b < 0x20 || b == b'"' || b == b'\\';
                assert_eq!(
                    word_needs_escape(u64::from_le_bytes(w)),
                    want,
                    "byte {b:#x} at {pos}"
                );
            }
        }
    }

    /// The mask's lowest bit is the first byte to escape, whatever follows it.
    #[test]
    fn the_mask_finds_the_first_byte_to_escape() {
        for pos in 0..8 {
            for b in [b'"', b'\\', 0u8, 0x1f, b'\n'] {
                for after in [b'a', b'"', 0u8, 0xff, 0x20, b'\\'] {
                    let mut w = [b'a'; 8];
                    w[pos] = b;
                    for x in w.iter_mut().skip(pos + 1) {
                        *x = after;
                    }
                    let mask = escape_mask(u64::from_le_bytes(w));
                    assert_eq!(mask.trailing_zeros() / 8, pos as u32, "{w:?}");
                }
            }
        }
        // Strings of every length around the word size, escapes anywhere: as serde_json.
        for len in 0..20 {
            for at in 0..len {
                for special in ["\"", "\\", "\n", "\u{1}"] {
                    let mut t: String = "x".repeat(len);
                    t.replace_range(at..at + 1, special);
                    let mut out = b"\"".to_vec();
                    let raw = EscapedJson::str(&mut out, t.as_bytes());
                    out.push(b'"');
                    let once: String = serde_json::from_slice(&out).unwrap();
                    assert_eq!(once, serde_json::to_string(&t).unwrap());
                    assert_eq!(raw, once.len());
                }
            }
        }
    }

    #[test]
    fn every_control_byte_is_escaped() {
        let raw: Vec<u8> = (0u8..0x80).collect();
        let mut out = b"\"".to_vec();
        escape_json_str(&mut out, &raw);
        out.push(b'"');
        let back: String = serde_json::from_slice(&out).unwrap();
        assert_eq!(back.as_bytes(), raw.as_slice());
    }

    #[test]
    fn truncation_keeps_characters_whole() {
        assert_eq!(truncate_utf8("abc", 5), "abc");
        assert_eq!(truncate_utf8("aéb", 2), "a");
        assert_eq!(truncate_utf8("aéb", 3), "aé");
    }
}
