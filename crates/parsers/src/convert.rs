//! `Types` (string fields cast to integer, float, bool or hex) and the field decoders
//! (`Decode_Field` / `Decode_Field_As` with `json`, `escaped`, `escaped_utf8`), with Fluent
//! Bit's exact rules: an integer or float that does not read is 0 (C's `atoll`/`atof`), a bool
//! that is neither `true` nor `false` stays a string.

use logferry_core::{Map, Str, Value};

/// A `Types` target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TypeKind {
    Integer,
    Float,
    Bool,
    Hex,
    String,
}

/// Parses `Types key:type key2:type ...`.
pub fn parse_types(text: &str) -> Result<Vec<(Str, TypeKind)>, String> {
    let mut out = Vec::new();
    for item in text.split_whitespace() {
        let Some((key, ty)) = item.rsplit_once(':') else {
            return Err(format!("expected 'field:type', got '{item}'"));
        };
        if key.is_empty() {
            return Err(format!("expected 'field:type', got '{item}'"));
        }
        let kind = match ty.to_ascii_lowercase().as_str() {
            "integer" | "int" => TypeKind::Integer,
            "float" => TypeKind::Float,
            "bool" => TypeKind::Bool,
            "hex" => TypeKind::Hex,
            "string" => TypeKind::String,
            _ => {
                return Err(format!(
                    "unknown type '{ty}' for '{key}' (expected integer, float, bool, hex or string)"
                ))
            }
        };
        out.push((Str::from(key), kind));
    }
    Ok(out)
}

/// The value a string field becomes under `kind`.
pub fn cast(kind: TypeKind, s: &str) -> Value {
    match kind {
        TypeKind::String => Value::Str(s.into()),
        TypeKind::Integer => match atoll(s) {
            Some(v) => Value::Int(v),
            None => Value::Str(s.into()),
        },
        TypeKind::Hex => Value::UInt(strtoull_hex(s)),
        TypeKind::Float => Value::Float(atof(s)),
        TypeKind::Bool => {
            let b = s.as_bytes();
            if b.len() >= 4 && b[..4].eq_ignore_ascii_case(b"true") {
                Value::Bool(true)
            } else if b.len() >= 5 && b[..5].eq_ignore_ascii_case(b"false") {
                Value::Bool(false)
            } else {
                Value::Str(s.into())
            }
        }
    }
}

/// C's `atoll`: leading blanks, a sign, digits; 0 when none. `None` on overflow (kept as text).
fn atoll(s: &str) -> Option<i64> {
    let t = s.trim_start();
    let (neg, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let end = digits
        .bytes()
        .position(|c| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    if end == 0 {
        return Some(0);
    }
    let v: i128 = digits[..end].parse().ok()?;
    let v = if neg { -v } else { v };
    i64::try_from(v).ok()
}

/// C's `strtoull(s, NULL, 16)`: an optional `0x`, hex digits; 0 when none, saturating.
fn strtoull_hex(s: &str) -> u64 {
    let t = s.trim_start();
    let t = t.strip_prefix('+').unwrap_or(t);
    let t = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .filter(|r| r.bytes().next().is_some_and(|c| c.is_ascii_hexdigit()))
        .unwrap_or(t);
    let mut v: u64 = 0;
    for c in t.bytes() {
        let Some(d) = (c as char).to_digit(16) else {
            break;
        };
        v = v.saturating_mul(16).saturating_add(u64::from(d));
    }
    v
}

/// C's `atof`: the longest prefix that reads as a number; 0.0 when none.
fn atof(s: &str) -> f64 {
    let t = s.trim_start();
    let b = t.as_bytes();
    let mut end = 0;
    let mut best = 0.0;
    // Grow the prefix over characters that can appear in a decimal number.
    while end < b.len() && matches!(b[end], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-') {
        end += 1;
        if let Ok(v) = t[..end].parse::<f64>() {
            best = v;
        }
    }
    best
}

/// A decoder backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Json,
    Escaped,
    EscapedUtf8,
}

/// What to do after a decoder ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Stop after this decoder.
    None,
    /// If it failed, try the next decoder of the field.
    TryNext,
    /// Run the next decoder of the field whatever happened.
    DoNext,
}

/// One `Decode_Field[_As] backend field [action]` line.
#[derive(Clone, Debug)]
pub struct DecodeRule {
    /// `Decode_Field_As` (replace in place) rather than `Decode_Field` (append keys).
    pub replace: bool,
    pub backend: Backend,
    pub action: Action,
}

/// The decoders of one field, in the order written.
#[derive(Clone, Debug)]
pub struct FieldDecoders {
    pub field: Str,
    pub rules: Vec<DecodeRule>,
}

/// Parses one decoder line's value (`json log`, `escaped_utf8 log do_next`) and adds it to
/// `list`, grouped by field as Fluent Bit does.
pub fn add_decoder(list: &mut Vec<FieldDecoders>, replace: bool, text: &str) -> Result<(), String> {
    let parts: Vec<&str> = text.split_whitespace().collect();
    if parts.len() < 2 {
        return Err(format!(
            "expected '<decoder> <field> [try_next|do_next]', got '{text}'"
        ));
    }
    let backend = match parts[0].to_ascii_lowercase().as_str() {
        "json" => Backend::Json,
        "escaped" => Backend::Escaped,
        "escaped_utf8" => Backend::EscapedUtf8,
        other => {
            return Err(format!(
                "unknown decoder '{other}' (expected json, escaped or escaped_utf8)"
            ))
        }
    };
    let action = match parts.get(2).map(|a| a.to_ascii_lowercase()) {
        None => Action::None,
        Some(a) if a == "try_next" => Action::TryNext,
        Some(a) if a == "do_next" => Action::DoNext,
        Some(a) => {
            return Err(format!(
                "unknown decoder action '{a}' (expected try_next or do_next)"
            ))
        }
    };
    let rule = DecodeRule {
        replace,
        backend,
        action,
    };
    match list.iter_mut().find(|d| d.field == parts[1]) {
        Some(d) => d.rules.push(rule),
        None => list.push(FieldDecoders {
            field: Str::from(parts[1]),
            rules: vec![rule],
        }),
    }
    Ok(())
}

/// The result of one decoder.
enum Decoded {
    Text(String),
    Object(Value),
}

/// Applies the decoders to a parsed map, as `flb_parser_decoder_do`.
pub fn apply_decoders(decoders: &[FieldDecoders], map: &mut Map) {
    let mut extra: Vec<(Str, Value)> = Vec::new();
    for (key, value) in map.0.iter_mut() {
        let Some(dec) = decoders.iter().find(|d| d.field == *key) else {
            continue;
        };
        let Value::Str(original) = value else {
            continue;
        };
        let mut data: String = original.as_str().to_owned();
        let mut replaced: Option<Decoded> = None;
        let mut appended: Option<Value> = None;
        for rule in &dec.rules {
            if !rule.replace && rule.action == Action::DoNext && appended.is_some() {
                continue;
            }
            if matches!(replaced, Some(Decoded::Object(_))) {
                continue;
            }
            let result = match rule.backend {
                Backend::Json => decode_json(&data).map(Decoded::Object),
                Backend::Escaped => Some(Decoded::Text(unescape(&data))),
                Backend::EscapedUtf8 => Some(Decoded::Text(unescape_utf8(&data))),
            };
            let Some(result) = result else {
                if matches!(rule.action, Action::TryNext | Action::DoNext) {
                    continue;
                }
                break;
            };
            if rule.replace {
                if let Decoded::Text(t) = &result {
                    data.clone_from(t);
                }
                replaced = Some(result);
            } else if let Decoded::Object(v) = result {
                // Decode_Field adds keys; a decoder that yields text has nothing to add.
                appended = Some(v);
            }
            if rule.action != Action::DoNext {
                break;
            }
        }
        match replaced {
            Some(Decoded::Text(t)) => *value = Value::Str(t.into()),
            Some(Decoded::Object(v)) => *value = v,
            None => {}
        }
        if let Some(Ok(m)) = appended.map(Value::into_map) {
            extra.extend(m.0);
        }
    }
    map.0.extend(extra);
}

/// The `json` decoder: the field unescaped, then parsed; only a JSON object decodes.
fn decode_json(data: &str) -> Option<Value> {
    let text = unescape(data);
    if !text.starts_with('{') {
        return None;
    }
    crate::format::json_map(&text).map(Value::Map)
}

/// The `escaped` decoder (Fluent Bit's `unescape_string`): `\n \t \r \a \b \f \v` become
/// control characters; any other backslash is dropped and the next character kept.
pub fn unescape(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        // Control escapes become the character; any other backslash is dropped and the next
        // character is read normally (so a second backslash starts another escape, as in
        // Fluent Bit).
        let control = match chars.peek() {
            Some('n') => Some('\n'),
            Some('a') => Some('\x07'),
            Some('b') => Some('\x08'),
            Some('t') => Some('\t'),
            Some('v') => Some('\x0B'),
            Some('f') => Some('\x0C'),
            Some('r') => Some('\r'),
            _ => None,
        };
        if let Some(ctl) = control {
            out.push(ctl);
            chars.next();
        }
    }
    out
}

/// The `escaped_utf8` decoder (Fluent Bit's `unescape_string_utf8`): C and `\x`, `\u`, `\U`,
/// octal escapes become characters; a backslash before `"`, `'`, `\` or `/` is kept.
pub fn unescape_utf8(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_owned();
    }
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c != '\\' || next.is_none() || matches!(next, Some('"' | '\'' | '\\' | '/')) {
            out.push(c);
            i += 1;
            continue;
        }
        let (ch, used) = read_escape(&chars[i + 1..]);
        if let Some(ch) = ch {
            out.push(ch);
        }
        i += 1 + used;
    }
    out
}

/// Reads one escape after a backslash: the character and how many input characters it used.
fn read_escape(s: &[char]) -> (Option<char>, usize) {
    let Some(&first) = s.first() else {
        return (None, 0);
    };
    let simple = match first {
        'n' => Some('\n'),
        't' => Some('\t'),
        'r' => Some('\r'),
        'b' => Some('\x08'),
        'f' => Some('\x0C'),
        'v' => Some('\x0B'),
        'a' => Some('\x07'),
        _ => None,
    };
    if simple.is_some() {
        return (simple, 1);
    }
    if ('0'..='7').contains(&first) {
        let mut v = 0u32;
        let mut n = 0;
        while n < 3 && s.get(n).is_some_and(|c| ('0'..='7').contains(c)) {
            v = v * 8 + s[n].to_digit(8).unwrap_or(0);
            n += 1;
        }
        return (char::from_u32(v), n);
    }
    let max = match first {
        'x' => 2,
        'u' => 4,
        'U' => 8,
        _ => return (Some(first), 1),
    };
    let mut v = 0u32;
    let mut n = 0;
    while n < max && s.get(1 + n).is_some_and(|c| c.is_ascii_hexdigit()) {
        v = v * 16 + s[1 + n].to_digit(16).unwrap_or(0);
        n += 1;
    }
    if n == 0 {
        return (Some(first), 1);
    }
    (char::from_u32(v), 1 + n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn casts_as_fluent_bit() {
        assert_eq!(cast(TypeKind::Integer, "42"), Value::Int(42));
        assert_eq!(cast(TypeKind::Integer, " -7xyz"), Value::Int(-7));
        assert_eq!(cast(TypeKind::Integer, "abc"), Value::Int(0));
        assert_eq!(
            cast(TypeKind::Integer, "99999999999999999999"),
            Value::Str("99999999999999999999".into())
        );
        assert_eq!(cast(TypeKind::Float, "1.5e3ms"), Value::Float(1500.0));
        assert_eq!(cast(TypeKind::Float, "x"), Value::Float(0.0));
        assert_eq!(cast(TypeKind::Hex, "0x1f"), Value::UInt(31));
        assert_eq!(cast(TypeKind::Hex, "ff"), Value::UInt(255));
        assert_eq!(cast(TypeKind::Bool, "TRUE"), Value::Bool(true));
        assert_eq!(cast(TypeKind::Bool, "false"), Value::Bool(false));
        assert_eq!(cast(TypeKind::Bool, "yes"), Value::Str("yes".into()));
    }

    #[test]
    fn types_syntax() {
        let t = parse_types("a:integer b:float  c:bool").unwrap();
        assert_eq!(t.len(), 3);
        assert!(parse_types("a:number").is_err());
        assert!(parse_types("a").is_err());
    }

    #[test]
    fn unescapers() {
        assert_eq!(unescape(r#"a\tb\nc\"d"#), "a\tb\nc\"d");
        assert_eq!(unescape_utf8(r"\u0009x\x41\101"), "\txAA");
        assert_eq!(unescape_utf8(r#"keep \" and \/"#), r#"keep \" and \/"#);
    }
}
