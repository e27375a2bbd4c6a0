//! `Merge_Log`, record by record, as Fluent Bit 5.1.1's `pack_map_content` builds the record
//! (checked byte for byte on this crate's fixtures, `tests/fixtures/fluent-bit`):
//! - exactly one of: the parser the pod suggests, else `Merge_Parser`, else JSON (Fluent Bit's
//!   documented order); a parser that does not match leaves the record as it is;
//! - JSON is read as Fluent Bit's yyjson reader does: raw control characters (a newline, a tab)
//!   inside strings are taken as they are; the `log` must hold one JSON object, and anything
//!   after it that is not a second JSON value is ignored (`{"a":1} trailing` merges,
//!   `{"a":1}{"b":2}` does not);
//! - the merged keys come after the record's own keys, at the root or under `Merge_Log_Key`
//!   (not when there is nothing to merge); a merged key the record already has replaces it at
//!   the end (Fluent Bit appends a duplicate, and its JSON keeps only the last);
//! - `Merge_Log_Trim` removes trailing newlines, and trailing `\n`/`\r` escape pairs, from merged
//!   top-level strings (never a string's first byte, never a lone carriage return);
//! - `Keep_Log Off` removes `log` once merged (and a `log` that is neither a string nor a map);
//! - a parser (suggested or `Merge_Parser`) that reads a time sets the record's time; one that
//!   reads none sets it to the current time, as Fluent Bit does; JSON leaves it.

use logferry_core::{EventTime, Map, Record, Str, Value};
use logferry_parsers::{Parsed, Parser};

/// The `Merge_Log` options.
#[derive(Clone, Debug)]
pub struct MergeOptions {
    pub key: Option<Str>,
    pub trim: bool,
    pub keep_log: bool,
}

/// Appends `k` at the end, dropping an earlier occurrence (what Fluent Bit's JSON shows).
fn append(m: &mut Map, k: Str, v: Value) {
    // Usually absent: a scan, and `retain`'s pass over every pair only when it is there.
    if m.0.iter().any(|(key, _)| *key == k) {
        m.0.retain(|(key, _)| *key != k);
    }
    // Pushed empty from a constant, then filled: the pair made from `k` and `v` on the stack
    // was read back with wider loads than the stores that made it (a store-forwarding stall
    // per call, 43% of this function's cpu-clock samples on P2; docs/performance.md).
    m.0.push(const { (Str::const_new(""), Value::Null) });
    if let Some((key, value)) = m.0.last_mut() {
        *key = k;
        value.fill_null(v);
    }
}

/// Fluent Bit's `value_trim_size`.
pub fn trim_value(s: &str) -> &str {
    let b = s.as_bytes();
    let mut size = b.len();
    let mut i = b.len() as isize - 1;
    while i > 0 {
        let at = i as usize;
        if b[at] == b'\n' {
            size -= 1;
            i -= 1;
            continue;
        }
        if b[at - 1] == b'\\' && (b[at] == b'n' || b[at] == b'r') {
            size -= 2;
            i -= 2;
        } else {
            break;
        }
    }
    &s[..size]
}

/// Escapes raw control characters inside JSON strings (what yyjson accepts and serde_json
/// does not); `None` when there are none.
fn escape_raw_controls(s: &str) -> Option<String> {
    if !s.bytes().any(|b| b < 0x20) {
        return None;
    }
    let mut out = String::with_capacity(s.len() + 16);
    let (mut in_str, mut esc, mut changed) = (false, false, false);
    for c in s.chars() {
        if in_str {
            if esc {
                esc = false;
            } else if c == '\\' {
                esc = true;
            } else if c == '"' {
                in_str = false;
            } else if (c as u32) < 0x20 {
                out.push_str(&format!("\\u{:04x}", c as u32));
                changed = true;
                continue;
            }
        } else if c == '"' {
            in_str = true;
        }
        out.push(c);
    }
    changed.then_some(out)
}

/// The first JSON value of `text` and whether another JSON value follows it.
fn first_value(text: &str) -> Option<(Value, bool)> {
    let mut it = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    let first = it.next()?.ok()?;
    let rest = text[it.byte_offset()..].trim_start_matches([' ', '\t', '\n', '\r']);
    let more = !rest.is_empty()
        && serde_json::Deserializer::from_str(rest)
            .into_iter::<Value>()
            .next()
            .is_some_and(|r| r.is_ok());
    Some((first, more))
}

/// The `log` as one JSON object, read as Fluent Bit's JSON reader reads it.
pub fn json_object(text: &str) -> Option<Map> {
    let mut pairs = Vec::with_capacity(8);
    json_object_into(text, &mut pairs).then_some(Map(pairs))
}

/// [`json_object`], its pairs appended to `out`; `false` (and `out` as it was) when `text` is
/// not one object.
fn json_object_into(text: &str, out: &mut Vec<(Str, Value)>) -> bool {
    let t = text.trim_start_matches([' ', '\t', '\n', '\r']);
    // Only an object merges: any other text is left as it is without a parse (and without
    // the escape-and-retry below, which copied every non-JSON line that ends in Docker's
    // newline: 11-14% of a busy node's CPU with `Merge_Log On` over plain-text logs).
    if !t.starts_with('{') {
        return false;
    }
    // The common shape, read without serde (the same map: see `json_fast`); a text after the
    // object, or anything it does not handle, takes the general path below.
    let base = out.len();
    if let Some(rest) = logferry_core::json_fast::object_into(t, out) {
        if rest.trim_start_matches([' ', '\t', '\n', '\r']).is_empty() {
            return true;
        }
    }
    out.truncate(base);
    let first = first_value(t).or_else(|| first_value(&escape_raw_controls(t)?));
    match first {
        Some((Value::Map(mut m), false)) => {
            out.append(&mut m.0);
            true
        }
        _ => false,
    }
}

/// Applies `Merge_Log` to one record. `parser` is the pod's suggestion, `merge_parser` the
/// option's; `drop_key` removes a merged key of that name first (the filter's own
/// `kubernetes`). `scratch` holds the merged pairs on their way into the record (one buffer
/// for every record, not a map made and freed for each); `room` is how many pairs the caller
/// adds after, reserved with the merged ones so the record's pairs grow once.
pub fn merge_log(
    rec: &mut Record,
    parser: Option<&Parser>,
    merge_parser: Option<&Parser>,
    o: &MergeOptions,
    drop_key: &str,
    scratch: &mut Vec<(Str, Value)>,
    room: usize,
) {
    let Some(at) = rec.body.position("log") else {
        return;
    };
    // Under `Merge_Log_Key` the pairs become the new map's own; else they move into the
    // record through the reused buffer.
    let key = o.key.as_ref().filter(|k| !k.is_empty());
    let mut own = Vec::new();
    let fields = if key.is_some() {
        &mut own
    } else {
        scratch.clear();
        scratch
    };
    let (merged, time, trim) = match &rec.body.0[at].1 {
        Value::Map(m) => {
            fields.extend_from_slice(&m.0);
            (true, None, false)
        }
        Value::SharedMap(m) => {
            fields.extend_from_slice(&m.0);
            (true, None, false)
        }
        Value::Str(s) => match parser.or(merge_parser) {
            Some(p) => match p.parse(s.as_str()) {
                Some(Parsed { time, body }) => {
                    // A new map takes the parser's pairs as they are.
                    if fields.capacity() == 0 {
                        *fields = body.0;
                    } else {
                        fields.extend(body.0);
                    }
                    (true, Some(time.unwrap_or_else(EventTime::now)), o.trim)
                }
                None => (false, None, false),
            },
            None => {
                if fields.capacity() == 0 {
                    // Room for a typical application object without regrowing.
                    *fields = Vec::with_capacity(8);
                }
                (json_object_into(s.as_str(), fields), None, o.trim)
            }
        },
        // Neither a string nor a map: nothing to merge, but Keep_Log Off still drops it.
        _ => {
            if !o.keep_log {
                rec.body.0.remove(at);
            }
            return;
        }
    };
    if !merged {
        return;
    }
    if !o.keep_log {
        rec.body.0.remove(at);
    }
    if fields.iter().any(|(k, _)| k == drop_key) {
        fields.retain(|(k, _)| k != drop_key);
    }
    if trim {
        for (_, v) in fields.iter_mut() {
            // Only a value ending in a newline, `\n` or `\r` can lose anything: one byte
            // tells, for the many that do not.
            if let Value::Str(s) = v {
                if matches!(s.as_bytes().last(), Some(b'\n' | b'n' | b'r')) {
                    let t = trim_value(s);
                    if t.len() != s.len() {
                        *s = Str::from(t);
                    }
                }
            }
        }
    }
    if let Some(t) = time {
        rec.time = t;
    }
    match key {
        Some(k) if !fields.is_empty() => {
            rec.body.0.reserve_exact(1 + room);
            append(&mut rec.body, k.clone(), Value::Map(Map(own)));
        }
        Some(_) => {}
        // One pass with a hash index when the record or the merged object is large: an
        // application's object of 100,000 keys costs linear time, not 10^10 comparisons.
        None => rec.body.append_moving(fields, room),
    }
}

/// The filter's own keys, made once at compile time rather than copied into a new
/// `CompactString` for every record.
pub const KUBERNETES: Str = Str::const_new("kubernetes");
pub const KUBERNETES_NAMESPACE: Str = Str::const_new("kubernetes_namespace");

/// Sets `k` at the end of the record (the filter's [`KUBERNETES`] and
/// [`KUBERNETES_NAMESPACE`]).
pub fn put_last(m: &mut Map, k: Str, v: Value) {
    append(m, k, v);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trim_as_fluent_bit() {
        assert_eq!(trim_value("a\n"), "a");
        assert_eq!(trim_value("a\n\n"), "a");
        assert_eq!(trim_value("a\\n"), "a");
        assert_eq!(trim_value("a\\r\\n\n"), "a");
        assert_eq!(trim_value("\n"), "\n", "the first byte is never trimmed");
        assert_eq!(trim_value("x\r"), "x\r", "a raw carriage return stays");
        assert_eq!(trim_value(""), "");
    }

    #[test]
    fn json_as_fluent_bits_reader() {
        let m = json_object("{\"msg\":\"one\ntwo\"}\n").unwrap();
        assert_eq!(m.get("msg"), Some(&Value::from("one\ntwo")));
        assert!(json_object("{\"a\":1} trailing").is_some());
        assert!(json_object("{\"a\":1}{\"b\":2}").is_none());
        assert!(json_object("[1,2]").is_none());
        assert!(json_object("   ").is_none());
        assert!(json_object("not json").is_none());
        // Plain text with an odd quote and Docker's newline: not an object, left alone.
        assert!(json_object("10.0.0.1 - - \"GET /a\n").is_none());
        assert!(json_object("\"a string\"\n").is_none());
        assert!(
            json_object(" \n {\"a\":1}").is_some(),
            "leading blanks are skipped"
        );
        let dup = json_object(r#"{"a":1,"a":2}"#).unwrap();
        assert_eq!(dup.len(), 2, "duplicates are kept, as msgpack keeps them");
    }

    #[test]
    fn merged_keys_go_last() {
        let mut body = Map::new();
        body.push("log", r#"{"stream":"fake","x":1}"#);
        body.push("stream", "stdout");
        body.push("time", "t");
        let mut rec = Record::new(EventTime(5), body);
        let o = MergeOptions {
            key: None,
            trim: true,
            keep_log: false,
        };
        let mut scratch = Vec::new();
        merge_log(&mut rec, None, None, &o, "kubernetes", &mut scratch, 1);
        let keys: Vec<_> = rec.body.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["time", "stream", "x"]);
        assert_eq!(rec.body.get("stream"), Some(&Value::from("fake")));
        assert_eq!(rec.time, EventTime(5), "JSON sets no time");
        assert!(scratch.is_empty());
    }

    /// Merged pairs move into the record once, reserved with the caller's `room` exactly (a
    /// record held in memory keeps no doubled capacity), and the buffer is reused.
    #[test]
    fn merged_pairs_move_in_with_exactly_the_room_asked_for() {
        let o = MergeOptions {
            key: None,
            trim: false,
            keep_log: true,
        };
        let mut scratch = Vec::new();
        for (log, room) in [(r#"{"a":1,"b":{"c":"d"},"e":"f"}"#, 1), (r#"{"g":2}"#, 2)] {
            let mut body = Map::with_capacity(4);
            body.push("log", log);
            body.push("stream", "stdout");
            body.push("time", "t");
            let mut rec = Record::new(EventTime(5), body);
            merge_log(&mut rec, None, None, &o, "kubernetes", &mut scratch, room);
            let merged = json_object(log).unwrap();
            assert_eq!(&rec.body.0[3..], &merged.0[..], "{log}");
            assert_eq!(rec.body.0.capacity(), rec.body.len() + room, "{log}");
            assert!(scratch.is_empty());
        }
        assert!(scratch.capacity() >= 3, "the buffer is kept");
        // Under a key the pairs are the new map's, and the record grows once.
        let o = MergeOptions {
            key: Some(Str::from("data")),
            ..o
        };
        let mut body = Map::with_capacity(4);
        body.push("log", r#"{"a":1,"b":2}"#);
        body.push("stream", "stdout");
        body.push("time", "t");
        let mut rec = Record::new(EventTime(5), body);
        merge_log(&mut rec, None, None, &o, "kubernetes", &mut scratch, 1);
        assert_eq!(
            rec.body.get("data"),
            Some(&Value::Map(json_object(r#"{"a":1,"b":2}"#).unwrap()))
        );
        assert_eq!(rec.body.0.capacity(), rec.body.len() + 1);
    }
}
