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
    fn truncation_keeps_characters_whole() {
        assert_eq!(truncate_utf8("abc", 5), "abc");
        assert_eq!(truncate_utf8("aéb", 2), "a");
        assert_eq!(truncate_utf8("aéb", 3), "aé");
    }
}
