//! Record → message bytes, shared by the outputs.
//!
//! A record is sent as one JSON object (UTF-8 as is, no `\u` escaping: AWS takes UTF-8; when a
//! key repeats, the last value wins, as Fluent Bit's maps read). With `log_key`, only that
//! key's value is sent: a string raw (no quotes), anything else as JSON — Fluent Bit's rule.

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

/// Whether any of the 8 bytes of `w` is `"`, `\` or a control character (below 0x20): the
/// bytes JSON must escape. Exact as a yes/no (the classic "has zero byte" and "has less than"
/// word tricks), so runs of plain text are skipped 8 bytes at a time.
#[inline]
fn word_needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS != 0;
    let below_0x20 = w.wrapping_sub(ONES * 0x20) & !w & HIGHS != 0;
    below_0x20 || has_zero(w ^ (ONES * b'"' as u64)) || has_zero(w ^ (ONES * b'\\' as u64))
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
#[derive(Default)]
pub struct EscapedJson {
    shared: std::collections::HashMap<usize, (std::ops::Range<usize>, usize)>,
    cache: Vec<u8>,
}

impl EscapedJson {
    /// Appends `m` as a JSON object (the last duplicate of a key wins).
    pub fn map(&mut self, out: &mut Vec<u8>, m: &Map) -> usize {
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
        let start = out.len();
        match v {
            Value::Null => out.extend_from_slice(b"null"),
            Value::Bool(true) => out.extend_from_slice(b"true"),
            Value::Bool(false) => out.extend_from_slice(b"false"),
            Value::Int(i) => out.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes()),
            Value::UInt(u) => out.extend_from_slice(itoa::Buffer::new().format(*u).as_bytes()),
            Value::Float(f) if f.is_finite() => {
                // serde_json's own float format (`1e+20`), so the two encodings agree.
                if serde_json::to_writer(&mut *out, f).is_err() {
                    out.extend_from_slice(b"null");
                }
            }
            Value::Float(_) => out.extend_from_slice(b"null"),
            Value::Str(s) => return Self::str(out, s.as_bytes()),
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
                return raw;
            }
            Value::Map(m) => return self.map(out, m),
            Value::SharedMap(m) => {
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
                return raw;
            }
        }
        // Numbers and literals have nothing to escape.
        out.len() - start
    }

    /// Appends the JSON string of `s`, escaped again; returns its length as JSON.
    fn str(out: &mut Vec<u8>, s: &[u8]) -> usize {
        let mut raw = 2;
        out.extend_from_slice(b"\\\"");
        scan_escapes(s, |piece| match piece {
            Err(run) => {
                raw += run.len();
                out.extend_from_slice(run);
            }
            Ok(b) => {
                if let Some((e, n)) = json_escape(b) {
                    raw += n;
                    // The escape's own `\` (and a `"` or `\` it names) escaped again.
                    escape_json_str(out, &e[..n]);
                }
            }
        });
        out.extend_from_slice(b"\\\"");
        raw
    }
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
        let mut plain = Vec::new();
        write_json(&mut plain, &m).unwrap();
        let mut enc = EscapedJson::default();
        for _ in 0..2 {
            let mut escaped = b"\"".to_vec();
            let raw = enc.map(&mut escaped, &m);
            escaped.push(b'"');
            let back: String = serde_json::from_slice(&escaped).unwrap();
            assert_eq!(back, String::from_utf8(plain.clone()).unwrap());
            assert_eq!(raw, plain.len());
        }
        assert_eq!(enc.shared.len(), 1, "the shared map is encoded once");
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
