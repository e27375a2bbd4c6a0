//! The text formats: JSON (straight into a [`Map`], keeping key order and duplicate keys as
//! Fluent Bit's msgpack does), logfmt, LTSV and TSKV. The regex format lives in `parser.rs`
//! because it is mostly the compiled pattern.

use std::fmt;

use logferry_core::{Map, Str, Value};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// Parses a JSON document that must be a single object.
pub fn json_map(text: &str) -> Option<Map> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = ValueSeed.deserialize(&mut de).ok()?;
    de.end().ok()?;
    match value {
        Value::Map(m) => Some(m),
        _ => None,
    }
}

/// Builds a [`Value`] straight from the JSON tokens, without an intermediate `serde_json::Value`.
struct ValueSeed;

impl<'de> DeserializeSeed<'de> for ValueSeed {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(match i64::try_from(v) {
            Ok(i) => Value::Int(i),
            Err(_) => Value::UInt(v),
        })
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(Str::from(v)))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(Str::from(v)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(v) = seq.next_element_seed(ValueSeed)? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::with_capacity(access.size_hint().unwrap_or(8));
        while let Some(key) = access.next_key_seed(KeySeed)? {
            let value = access.next_value_seed(ValueSeed)?;
            map.0.push((key, value));
        }
        Ok(Value::Map(map))
    }
}

/// A map key, built as a [`Str`] directly (inline when short: no allocation).
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Str;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Str, D::Error> {
        d.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl Visitor<'_> for KeyVisitor {
    type Value = Str;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Str, E> {
        Ok(Str::from(v))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Str, E> {
        Ok(Str::from(v))
    }
}

/// One `key value` pair found by a key-value format, borrowed from the input.
pub struct Pair<'a> {
    pub key: &'a str,
    /// `None` for a logfmt bare key (`flag`) or `key=` with nothing after it.
    pub value: Option<&'a str>,
    /// The value was quoted (`key=""` is an empty string, not a bare key).
    pub quoted: bool,
    /// The quoted value holds backslash escapes.
    pub escaped: bool,
}

/// Bytes that may appear in a logfmt key or unquoted value: above space, not `=` or `"`.
fn ident_byte(c: u8) -> bool {
    c > b' ' && c != b'=' && c != b'"' && c != 0x7f
}

/// Splits a logfmt line into pairs (as Fluent Bit's `flb_parser_logfmt.c`: stops at the first
/// line break). `no_bare_keys` makes a key without `=` reject the whole line.
pub fn logfmt_pairs(text: &str, no_bare_keys: bool) -> Option<Vec<Pair<'_>>> {
    let b = text.as_bytes();
    let mut pairs = Vec::new();
    let mut c = 0usize;
    while c < b.len() {
        while c < b.len() && !ident_byte(b[c]) {
            if b[c] == b'\n' || b[c] == b'\r' {
                return Some(pairs);
            }
            c += 1;
        }
        if c == b.len() {
            break;
        }
        let key_start = c;
        while c < b.len() && ident_byte(b[c]) {
            c += 1;
        }
        let key = &text[key_start..c];
        let mut value = None;
        let mut value_set = false;
        let mut quoted = false;
        let mut escaped = false;
        if c < b.len() && b[c] == b'=' {
            value_set = true;
            c += 1;
            if c < b.len() && b[c] == b'"' {
                c += 1;
                quoted = true;
                let start = c;
                while c < b.len() && b[c] != b'"' {
                    if b[c] == b'\\' {
                        escaped = true;
                        c += 1;
                    }
                    c += 1;
                }
                let end = c.min(b.len());
                value = Some(text.get(start..end)?);
                if c < b.len() {
                    c += 1;
                }
            } else {
                let start = c;
                while c < b.len() && ident_byte(b[c]) {
                    c += 1;
                }
                if c > start {
                    value = Some(&text[start..c]);
                }
            }
        }
        if no_bare_keys && !value_set {
            return None;
        }
        pairs.push(Pair {
            key,
            value,
            quoted,
            escaped,
        });
        if c < b.len() && (b[c] == b'\n' || b[c] == b'\r') {
            break;
        }
    }
    Some(pairs)
}

/// Unescapes a quoted logfmt value (`\"`, `\\`, `\n`, `\t`, `\uXXXX` ...).
pub fn logfmt_unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('b') => out.push('\x08'),
            Some('f') => out.push('\x0C'),
            Some('u') => {
                let hex: String = chars.clone().take(4).collect();
                match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                    Some(ch) if hex.len() == 4 => {
                        out.push(ch);
                        for _ in 0..4 {
                            chars.next();
                        }
                    }
                    _ => out.push('u'),
                }
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

/// LTSV label bytes: `[0-9A-Za-z_.-]`.
fn ltsv_label(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-')
}

/// Splits an LTSV (`sep` = `:`) or TSKV (`sep` = `=`) line into label/value pairs, stopping at
/// the first line break or malformed field, as Fluent Bit does.
pub fn ltsv_pairs(text: &str, sep: u8) -> Vec<(&str, &str)> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut c = 0usize;
    while c < b.len() {
        let label_start = c;
        while c < b.len() && ltsv_label(b[c]) {
            c += 1;
        }
        if c == b.len() || b[c] != sep {
            break;
        }
        let label = &text[label_start..c];
        c += 1;
        let field_start = c;
        while c < b.len() && !matches!(b[c], b'\t' | b'\n' | b'\r' | 0) {
            c += 1;
        }
        if !label.is_empty() {
            out.push((label, &text[field_start..c]));
        }
        if c == b.len() {
            break;
        }
        if b[c] == b'\t' {
            c += 1;
        }
        if c < b.len() && (b[c] == b'\n' || b[c] == b'\r') {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_keeps_order_duplicates_and_types() {
        let m = json_map(r#"{"z":1,"a":[true,null,1.5],"z":"dup","big":18446744073709551615}"#)
            .unwrap();
        let keys: Vec<&str> = m.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["z", "a", "z", "big"]);
        assert_eq!(m.0[3].1, Value::UInt(u64::MAX));
        assert!(json_map("[1,2]").is_none());
        assert!(json_map(r#"{"a":1} {"b":2}"#).is_none());
        assert!(json_map(r#"{"a":1}  "#).is_some());
    }

    #[test]
    fn logfmt_pairs_shapes() {
        let p = logfmt_pairs(r#"a=1 b="x y" flag c= d="" e="q\"q""#, false).unwrap();
        let got: Vec<(&str, Option<&str>, bool)> =
            p.iter().map(|p| (p.key, p.value, p.quoted)).collect();
        assert_eq!(
            got,
            [
                ("a", Some("1"), false),
                ("b", Some("x y"), true),
                ("flag", None, false),
                ("c", None, false),
                ("d", Some(""), true),
                ("e", Some(r#"q\"q"#), true),
            ]
        );
        assert!(logfmt_pairs("a=1 flag", true).is_none());
    }

    #[test]
    fn ltsv_stops_at_bad_field() {
        let p = ltsv_pairs("host:127.0.0.1\tident:-\tbad field\tx:y", b':');
        assert_eq!(p, [("host", "127.0.0.1"), ("ident", "-")]);
    }
}
