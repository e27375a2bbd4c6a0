//! Record accessor: `$key`, `$key['sub']['deeper']`, `$key[0]` paths into a record, as Fluent
//! Bit's `flb_ra` reads them (`src/flb_record_accessor.c`, `src/record_accessor/ra.l`, `ra.y`).
//!
//! Public so that filters, outputs, routes and processors share it. Parsing happens once, at build
//! time; lookups walk the map without allocating.
//!
//! What Fluent Bit does, and so what this does:
//! - A pattern starts with `$`, then a key name, then any number of subkeys: `['name']` (single
//!   quotes; `''` inside stands for one quote) or `[N]` (an array index).
//! - The accessor ends at the first `.`, space, `,` or `"` that is not inside a quoted subkey.
//!   Fluent Bit keeps the rest as literal text, which a single-value lookup never uses: so
//!   `$Mem.used` reads the key `Mem`, not `Mem.used`. [`RecordAccessor::ignored_suffix`] returns
//!   that rest so that callers can warn about it. Dotted names can be reached inside a subkey:
//!   `$labels['app.kubernetes.io/name']`.
//! - Looking a key up takes the *last* pair with that name, at every level (`ra_key_val_id`
//!   scans backwards), which only matters for records with duplicate keys.
//! - Every subkey must be found: a missing key, an index out of range, or a step into a value
//!   that is not a map (for `['k']`) or an array (for `[N]`) means "not found".
//! - Text without a leading `$` (which some plugins accept, such as the modify filter's
//!   conditions) is one literal top-level key: see [`RecordAccessor::parse_key`].

use std::fmt;

use crate::{Map, Str, Value};

/// One step below the top-level key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subkey {
    /// `['name']`: a key in a map.
    Key(Str),
    /// `[N]`: an index in an array.
    Index(usize),
}

/// A parsed path into a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordAccessor {
    key: Str,
    subkeys: Vec<Subkey>,
    pattern: String,
    ignored: Option<String>,
}

impl RecordAccessor {
    /// Parses a `$key['sub'][0]` pattern (it must start with `$`).
    pub fn parse(pattern: &str) -> Result<Self, String> {
        let Some(body) = pattern.strip_prefix('$') else {
            return Err(format!("record accessor '{pattern}' must start with '$'"));
        };
        let end = accessor_end(body);
        let (text, rest) = body.split_at(end);
        let name_end = text.find('[').unwrap_or(text.len());
        let name = text[..name_end].trim_end();
        if name.is_empty() {
            return Err(format!(
                "record accessor '{pattern}' has no key name after '$'"
            ));
        }
        if name.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(format!(
                "record accessor '{pattern}': '${}' is a regex capture reference, not a record key",
                &name[..1]
            ));
        }
        if let Some(c) = name.chars().find(|c| matches!(c, ']' | '\'' | '$')) {
            return Err(format!(
                "record accessor '{pattern}': unexpected '{c}' in the key name"
            ));
        }
        let subkeys = parse_subkeys(&text[name_end..])
            .map_err(|e| format!("record accessor '{pattern}': {e}"))?;
        Ok(RecordAccessor {
            key: Str::from(name),
            subkeys,
            pattern: pattern.to_string(),
            ignored: (!rest.is_empty()).then(|| rest.to_string()),
        })
    }

    /// Parses `text` as an accessor when it starts with `$`, else takes it as one literal
    /// top-level key (as `flb_ra_create` does with text that holds no `$`).
    pub fn parse_key(text: &str) -> Result<Self, String> {
        if text.starts_with('$') {
            Self::parse(text)
        } else {
            Ok(Self::literal(text))
        }
    }

    /// An accessor for one top-level key, taken as written.
    pub fn literal(key: &str) -> Self {
        RecordAccessor {
            key: Str::from(key),
            subkeys: Vec::new(),
            pattern: key.to_string(),
            ignored: None,
        }
    }

    /// The top-level key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The steps below the top-level key.
    pub fn subkeys(&self) -> &[Subkey] {
        &self.subkeys
    }

    /// The text after the accessor that Fluent Bit ignores for lookups (`.used` in
    /// `$Mem.used`), if any.
    pub fn ignored_suffix(&self) -> Option<&str> {
        self.ignored.as_deref()
    }

    /// The value this accessor points at, if every step exists.
    pub fn get<'a>(&self, map: &'a Map) -> Option<&'a Value> {
        let mut cur = last_value(map, &self.key)?;
        for sub in &self.subkeys {
            cur = match (sub, cur) {
                (Subkey::Key(k), v) => last_value(v.as_map()?, k)?,
                (Subkey::Index(i), Value::Array(a)) => a.get(*i)?,
                _ => return None,
            };
        }
        Some(cur)
    }

    /// The value this accessor points at, mutably.
    pub fn get_mut<'a>(&self, map: &'a mut Map) -> Option<&'a mut Value> {
        let mut cur = last_value_mut(map, &self.key)?;
        for sub in &self.subkeys {
            cur = match (sub, cur) {
                (Subkey::Key(k), v) => last_value_mut(v.as_map_mut()?, k)?,
                (Subkey::Index(i), Value::Array(a)) => a.get_mut(*i)?,
                _ => return None,
            };
        }
        Some(cur)
    }

    /// The value as a string, if it exists and is one.
    pub fn get_str<'a>(&self, map: &'a Map) -> Option<&'a str> {
        self.get(map).and_then(Value::as_str)
    }

    /// Whether the value exists.
    pub fn exists(&self, map: &Map) -> bool {
        self.get(map).is_some()
    }

    /// Removes the pair (or array element) this accessor points at and returns its value.
    pub fn remove(&self, map: &mut Map) -> Option<Value> {
        let Some((last, parents)) = self.subkeys.split_last() else {
            let i = map.0.iter().rposition(|(k, _)| *k == self.key)?;
            return Some(map.0.remove(i).1);
        };
        let mut cur = last_value_mut(map, &self.key)?;
        for sub in parents {
            cur = match (sub, cur) {
                (Subkey::Key(k), v) => last_value_mut(v.as_map_mut()?, k)?,
                (Subkey::Index(i), Value::Array(a)) => a.get_mut(*i)?,
                _ => return None,
            };
        }
        match (last, cur) {
            (Subkey::Key(k), v) => {
                let m = v.as_map_mut()?;
                let i = m.0.iter().rposition(|(mk, _)| mk == k)?;
                Some(m.0.remove(i).1)
            }
            (Subkey::Index(i), Value::Array(a)) if *i < a.len() => Some(a.remove(*i)),
            _ => None,
        }
    }

    /// Sets the value this accessor points at. Missing map levels are created (as Fluent Bit's
    /// `flb_ra_append_kv_pair` does); it fails, returning `false` and leaving the record as it
    /// was, when a step meets a value of the wrong kind or an array index out of range.
    pub fn set(&self, map: &mut Map, value: Value) -> bool {
        if !self.settable(map) {
            return false;
        }
        let Some((last, parents)) = self.subkeys.split_last() else {
            match map.0.iter().rposition(|(k, _)| *k == self.key) {
                Some(i) => map.0[i].1 = value,
                None => map.0.push((self.key.clone(), value)),
            }
            return true;
        };
        let mut cur = entry_or_map(map, &self.key);
        for sub in parents {
            cur = match (sub, cur) {
                (Subkey::Key(k), v) => match v.as_map_mut() {
                    Some(m) => entry_or_map(m, k),
                    None => return false,
                },
                (Subkey::Index(i), Value::Array(a)) => match a.get_mut(*i) {
                    Some(v) => v,
                    None => return false,
                },
                _ => return false,
            };
        }
        match (last, cur) {
            (Subkey::Key(k), v) => {
                let Some(m) = v.as_map_mut() else {
                    return false;
                };
                match m.0.iter().rposition(|(mk, _)| mk == k) {
                    Some(i) => m.0[i].1 = value,
                    None => m.0.push((k.clone(), value)),
                }
                true
            }
            (Subkey::Index(i), Value::Array(a)) => match a.get_mut(*i) {
                Some(v) => {
                    *v = value;
                    true
                }
                None => false,
            },
            _ => false,
        }
    }
}

impl RecordAccessor {
    /// Whether [`RecordAccessor::set`] would succeed: every existing step has the right kind,
    /// and every step from the first missing one on is a map key (only maps can be created).
    fn settable(&self, map: &Map) -> bool {
        let only_keys = |subs: &[Subkey]| subs.iter().all(|s| matches!(s, Subkey::Key(_)));
        let Some(mut cur) = last_value(map, &self.key) else {
            return only_keys(&self.subkeys);
        };
        for (i, sub) in self.subkeys.iter().enumerate() {
            let next = match (sub, cur) {
                (Subkey::Key(k), v) => match v.as_map() {
                    Some(m) => last_value(m, k),
                    None => return false,
                },
                (Subkey::Index(n), Value::Array(a)) => match a.get(*n) {
                    Some(v) => Some(v),
                    None => return false,
                },
                _ => return false,
            };
            match next {
                Some(v) => cur = v,
                None => return only_keys(&self.subkeys[i + 1..]),
            }
        }
        true
    }
}

impl fmt::Display for RecordAccessor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.pattern)
    }
}

/// The value of the last pair named `key`.
fn last_value<'a>(map: &'a Map, key: &str) -> Option<&'a Value> {
    map.0.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// The value of the last pair named `key`, mutably.
fn last_value_mut<'a>(map: &'a mut Map, key: &str) -> Option<&'a mut Value> {
    map.0
        .iter_mut()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

/// The value of the last pair named `key`, appending an empty map when there is none.
fn entry_or_map<'a>(map: &'a mut Map, key: &str) -> &'a mut Value {
    let i = match map.0.iter().rposition(|(k, _)| k == key) {
        Some(i) => i,
        None => {
            map.0.push((Str::from(key), Value::Map(Map::new())));
            map.0.len() - 1
        }
    };
    &mut map.0[i].1
}

/// Where Fluent Bit's `ra_parse_buffer` ends the accessor: the first `.`, space, `,` or `"`
/// outside single quotes.
fn accessor_end(body: &str) -> usize {
    let mut in_quotes = false;
    for (i, c) in body.char_indices() {
        match c {
            '\'' => in_quotes = !in_quotes,
            '.' | ' ' | ',' | '"' if !in_quotes => return i,
            _ => {}
        }
    }
    body.len()
}

/// Parses `['a'][0]['b''c']` (tabs around the bracket content are ignored, as Fluent Bit's
/// lexer does; a space has already ended the accessor).
fn parse_subkeys(mut s: &str) -> Result<Vec<Subkey>, String> {
    let mut out = Vec::new();
    loop {
        s = s.trim_start_matches([' ', '\t']);
        if s.is_empty() {
            return Ok(out);
        }
        let Some(rest) = s.strip_prefix('[') else {
            return Err(format!("expected '[' at '{s}'"));
        };
        let rest = rest.trim_start_matches([' ', '\t']);
        let (sub, rest) = if let Some(quoted) = rest.strip_prefix('\'') {
            let (text, rest) =
                quoted_string(quoted).ok_or_else(|| "unterminated quoted subkey".to_string())?;
            (Subkey::Key(Str::from(text)), rest)
        } else {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            let n = &rest[..digits];
            if n.is_empty() || (n.len() > 1 && n.starts_with('0')) {
                return Err(format!("expected 'key' or an array index at '{rest}'"));
            }
            let i = n
                .parse::<usize>()
                .map_err(|_| format!("array index '{n}' is too large"))?;
            (Subkey::Index(i), &rest[digits..])
        };
        let rest = rest.trim_start_matches([' ', '\t']);
        let Some(rest) = rest.strip_prefix(']') else {
            return Err(format!("expected ']' at '{rest}'"));
        };
        out.push(sub);
        s = rest;
    }
}

/// Reads a single-quoted string whose opening quote is already consumed (`''` is one quote).
/// Returns the text and what follows the closing quote.
fn quoted_string(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '\'' {
            if let Some(&(_, '\'')) = chars.peek() {
                chars.next();
                out.push('\'');
                continue;
            }
            return Some((out, &s[i + 1..]));
        }
        out.push(c);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(json: &str) -> Map {
        match Value::from_json(serde_json::from_str(json).unwrap()) {
            Value::Map(m) => m,
            other => panic!("not a map: {other:?}"),
        }
    }

    /// The kubernetes filter shares one metadata map between a pod's records
    /// (`Value::SharedMap`): reading goes through it, and changing one record's copy (set,
    /// remove, get_mut) must leave every other record's untouched.
    #[test]
    fn shared_maps_read_through_and_copy_on_write() {
        let meta = match Value::from_json(
            serde_json::from_str(r#"{"pod_name":"p","labels":{"app":"nginx"}}"#).unwrap(),
        ) {
            Value::Map(m) => std::sync::Arc::new(m),
            other => panic!("{other:?}"),
        };
        let mut a = Map::new();
        a.push("kubernetes", Value::SharedMap(std::sync::Arc::clone(&meta)));
        let mut b = a.clone();
        let app = RecordAccessor::parse("$kubernetes['labels']['app']").unwrap();
        assert_eq!(app.get_str(&a), Some("nginx"));
        assert!(app.set(&mut a, Value::from("changed")));
        assert_eq!(app.get_str(&a), Some("changed"));
        assert_eq!(
            app.get_str(&b),
            Some("nginx"),
            "the other record keeps its value"
        );
        let pod = RecordAccessor::parse("$kubernetes['pod_name']").unwrap();
        assert_eq!(pod.remove(&mut b), Some(Value::from("p")));
        assert!(!pod.exists(&b));
        assert_eq!(
            meta.get("pod_name"),
            Some(&Value::from("p")),
            "the shared map is intact"
        );
        let labels = RecordAccessor::parse("$kubernetes['labels']").unwrap();
        assert!(labels.get_mut(&mut b).is_some());
        assert_eq!(
            serde_json::to_string(&Value::SharedMap(meta)).unwrap(),
            r#"{"pod_name":"p","labels":{"app":"nginx"}}"#
        );
    }

    // The table of the Fluent Bit docs' "Record Accessor" page.
    const DOC_RECORD: &str = r#"{"log": "some message", "stream": "stdout",
        "labels": {"color": "blue", "unset": null, "project": {"env": "production"}}}"#;

    #[test]
    fn reads_the_documented_table() {
        let m = record(DOC_RECORD);
        let get = |p: &str| RecordAccessor::parse(p).unwrap().get(&m).cloned();
        assert_eq!(get("$log"), Some(Value::from("some message")));
        assert_eq!(get("$labels['color']"), Some(Value::from("blue")));
        assert_eq!(
            get("$labels['project']['env']"),
            Some(Value::from("production"))
        );
        assert_eq!(get("$labels['unset']"), Some(Value::Null));
        assert_eq!(get("$labels['undefined']"), None);
    }

    #[test]
    fn array_indexes_and_wrong_kinds() {
        let m = record(r#"{"a": [10, {"b": "x"}], "s": "str"}"#);
        let get = |p: &str| RecordAccessor::parse(p).unwrap().get(&m).cloned();
        assert_eq!(get("$a[0]"), Some(Value::Int(10)));
        assert_eq!(get("$a[1]['b']"), Some(Value::from("x")));
        assert_eq!(get("$a[2]"), None);
        assert_eq!(get("$a['b']"), None);
        assert_eq!(get("$s['x']"), None);
        assert_eq!(get("$s[0]"), None);
        assert_eq!(get("$missing"), None);
    }

    #[test]
    fn quoting_blanks_and_dotted_subkeys() {
        let m = record(r#"{"k": {"app.kubernetes.io/name": "web", "it's": 1}}"#);
        let ra = RecordAccessor::parse("$k['app.kubernetes.io/name']").unwrap();
        assert_eq!(ra.get_str(&m), Some("web"));
        assert_eq!(ra.ignored_suffix(), None);
        // A space outside quotes ends the accessor, as in Fluent Bit.
        assert!(RecordAccessor::parse("$k[ 'app' ]").is_err());
        let ra = RecordAccessor::parse("$k['it''s']").unwrap();
        assert_eq!(ra.get(&m), Some(&Value::Int(1)));
    }

    #[test]
    fn dotted_names_stop_the_accessor_as_in_fluent_bit() {
        let ra = RecordAccessor::parse("$Mem.used").unwrap();
        assert_eq!(ra.key(), "Mem");
        assert_eq!(ra.ignored_suffix(), Some(".used"));
        let m = record(r#"{"Mem.used": 5}"#);
        assert_eq!(ra.get(&m), None);
    }

    #[test]
    fn last_duplicate_wins() {
        let mut m = Map::new();
        m.push("a", 1i64);
        m.push("a", 2i64);
        assert_eq!(
            RecordAccessor::parse("$a").unwrap().get(&m),
            Some(&Value::Int(2))
        );
    }

    #[test]
    fn literal_keys_without_dollar() {
        let ra = RecordAccessor::parse_key("Mem.used").unwrap();
        assert_eq!(ra.get(&record(r#"{"Mem.used": 5}"#)), Some(&Value::Int(5)));
        assert_eq!(ra.to_string(), "Mem.used");
    }

    #[test]
    fn rejects_malformed_patterns() {
        for bad in [
            "log", "$", "$['a']", "$a[", "$a['b'", "$a[x]", "$a[01]", "$1", "$a]",
        ] {
            assert!(
                RecordAccessor::parse(bad).is_err(),
                "{bad} should not parse"
            );
        }
    }

    #[test]
    fn set_remove_and_get_mut() {
        let mut m = record(r#"{"a": {"b": 1}, "arr": [1, 2]}"#);
        assert!(RecordAccessor::parse("$a['c']['d']")
            .unwrap()
            .set(&mut m, Value::from("x")));
        assert!(RecordAccessor::parse("$top")
            .unwrap()
            .set(&mut m, Value::Int(3)));
        assert!(RecordAccessor::parse("$arr[1]")
            .unwrap()
            .set(&mut m, Value::Int(9)));
        assert!(!RecordAccessor::parse("$arr[5]")
            .unwrap()
            .set(&mut m, Value::Int(9)));
        assert!(!RecordAccessor::parse("$top['x']")
            .unwrap()
            .set(&mut m, Value::Int(9)));
        assert_eq!(
            serde_json::to_string(&Value::Map(m.clone())).unwrap(),
            r#"{"a":{"b":1,"c":{"d":"x"}},"arr":[1,9],"top":3}"#
        );
        if let Some(Value::Int(i)) = RecordAccessor::parse("$a['b']").unwrap().get_mut(&mut m) {
            *i = 7;
        }
        assert_eq!(
            RecordAccessor::parse("$a['b']").unwrap().remove(&mut m),
            Some(Value::Int(7))
        );
        assert_eq!(
            RecordAccessor::parse("$arr[0]").unwrap().remove(&mut m),
            Some(Value::Int(1))
        );
        assert_eq!(
            RecordAccessor::parse("$top").unwrap().remove(&mut m),
            Some(Value::Int(3))
        );
        assert_eq!(
            RecordAccessor::parse("$nope['x']").unwrap().remove(&mut m),
            None
        );
        assert_eq!(
            serde_json::to_string(&Value::Map(m)).unwrap(),
            r#"{"a":{"c":{"d":"x"}},"arr":[9]}"#
        );
    }
}
