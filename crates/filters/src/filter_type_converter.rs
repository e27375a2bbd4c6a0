//! `type_converter` filter: appends a converted copy of a field (Fluent Bit's
//! `filter_type_converter`).
//!
//! Each rule is `<option> SRC_KEY DST_KEY TYPE`: `str_key`, `int_key`, `uint_key` or `float_key`
//! names the type the source must have, `TYPE` (`int`, `uint`, `float`, `string`, and from a
//! string also `hex` and `bool`) the type to convert to. `SRC_KEY` may be a record accessor
//! (`$kubernetes['pod_name']`). As Fluent Bit 5.1 does (its `type_converter.c` and
//! `flb_typecast.c`, observed):
//! - rules run in the order `str_key`, `int_key`, `uint_key`, `float_key`, each in the order
//!   written; the converted value is appended under `DST_KEY` after the record's fields (the
//!   source stays; an existing `DST_KEY` is not removed, so the record then has it twice);
//! - a record without the source key is left alone;
//! - a source of another type than its option says, or a failed conversion, appends the
//!   source value unchanged under `DST_KEY` and logs an error;
//! - strings convert as C's `strtoimax`/`strtoumax` (base 10; `hex`: base 16) and `atof` read
//!   them: leading blanks, a sign, then as many digits as there are (`"42abc"` is 42); a result
//!   of 0 is a failure for `int`, `uint` and `hex` (so `"0"` fails), `float` never fails
//!   (`"abc"` is 0.0), and `bool` takes a string starting with `true` or `false` (any case);
//! - floats print as `%.1f` when whole (`3.0`), else with 16 significant digits; floats convert
//!   to integers by truncation; converting to the source's own type is a failure.

use async_trait::async_trait;
use logferry_core::config::{ConfigError, Entry, Section};
use logferry_core::record_accessor::RecordAccessor;
use logferry_core::{options, Record, Str, Value};
use logferry_engine::{BuildContext, Filter, FilterPlugin};

options! {
    /// Options of the `type_converter` filter.
    pub struct TypeConverterOptions for "type_converter filter" {
        /// `SRC DST TYPE`: convert the string SRC to TYPE under DST (repeatable).
        pub str_key: Vec<String> = ["str_key"] None,
        /// `SRC DST TYPE`: convert the integer SRC to TYPE under DST (repeatable).
        pub int_key: Vec<String> = ["int_key"] None,
        /// `SRC DST TYPE`: convert the unsigned integer SRC to TYPE under DST (repeatable).
        pub uint_key: Vec<String> = ["uint_key"] None,
        /// `SRC DST TYPE`: convert the float SRC to TYPE under DST (repeatable).
        pub float_key: Vec<String> = ["float_key"] None,
    }
}

/// The registry entry.
pub static PLUGIN: FilterPlugin = FilterPlugin {
    name: "type_converter",
    aliases: &[],
    description: "Data type converter",
    options: TypeConverterOptions::OPTIONS,
    default_workers: 0,
    build,
};

/// A type a rule converts from or to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Type {
    Int,
    UInt,
    Float,
    Hex,
    Str,
    Bool,
}

impl Type {
    /// As Fluent Bit reads it: the name or a prefix of it, in any case (`str` is `string`;
    /// `integer` is no type).
    fn parse(s: &str) -> Option<Type> {
        let l = s.to_ascii_lowercase();
        if l.is_empty() {
            return None;
        }
        [
            ("int", Type::Int),
            ("uint", Type::UInt),
            ("float", Type::Float),
            ("hex", Type::Hex),
            ("string", Type::Str),
            ("bool", Type::Bool),
        ]
        .into_iter()
        .find(|(name, _)| name.starts_with(l.as_str()))
        .map(|(_, t)| t)
    }
}

/// One `<option> SRC DST TYPE`.
#[derive(Clone, Debug)]
pub struct Rule {
    from: Type,
    src: RecordAccessor,
    src_text: String,
    dst: Str,
    to: Type,
}

fn build(
    _ctx: &BuildContext,
    section: &Section,
    entries: &[&Entry],
) -> Result<Box<dyn Filter>, ConfigError> {
    TypeConverterOptions::from_entries(&section.span, entries, &[])?;
    let mut rules = Vec::new();
    for (option, from) in [
        ("str_key", Type::Str),
        ("int_key", Type::Int),
        ("uint_key", Type::UInt),
        ("float_key", Type::Float),
    ] {
        for e in entries
            .iter()
            .filter(|e| e.key.eq_ignore_ascii_case(option))
        {
            let err = |reason: String| ConfigError::key(&e.span, &e.key, reason);
            let parts: Vec<&str> = e.value.split_whitespace().collect();
            let [src, dst, ty] = parts[..] else {
                return Err(err(format!(
                    "expected 'SRC_KEY DST_KEY TYPE', got '{}'",
                    e.value
                )));
            };
            let to = Type::parse(ty).ok_or_else(|| {
                err(format!(
                    "unknown type '{ty}': expected int, uint, float, hex, string or bool"
                ))
            })?;
            let src_ra = if src.starts_with('$') {
                RecordAccessor::parse(src).map_err(|r| err(format!("'{src}': {r}")))?
            } else {
                RecordAccessor::literal(src)
            };
            rules.push(Rule {
                from,
                src: src_ra,
                src_text: src.to_string(),
                dst: Str::from(dst),
                to,
            });
        }
    }
    Ok(Box::new(TypeConverter { rules }))
}

/// The filter: its rules in the order they run.
#[derive(Clone)]
pub struct TypeConverter {
    rules: Vec<Rule>,
}

/// C's `strtoimax`/`strtoumax` prefix reading: blanks, a sign, digits in `radix`.
fn c_integer(s: &str, radix: u32) -> (bool, u128) {
    let t = s.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let (neg, t) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let t = if radix == 16 {
        t.strip_prefix("0x")
            .or_else(|| t.strip_prefix("0X"))
            .unwrap_or(t)
    } else {
        t
    };
    let mut n: u128 = 0;
    for c in t.chars() {
        let Some(d) = c.to_digit(radix) else { break };
        n = n.saturating_mul(radix as u128).saturating_add(d as u128);
    }
    (neg, n)
}

/// C's `atof`: the longest prefix that reads as a decimal float, else 0.
fn c_float(s: &str) -> f64 {
    let t = s.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let b = t.as_bytes();
    let mut end = 0;
    let mut best = 0.0;
    // Try each prefix that could end a number; the longest that parses wins.
    while end < b.len() && (b[end].is_ascii_digit() || b"+-.eE".contains(&b[end])) {
        end += 1;
        if let Ok(v) = t[..end].parse::<f64>() {
            best = v;
        }
    }
    best
}

/// A whole float as `%.1f`, else as `%.16g`.
fn float_text(f: f64) -> String {
    if f.is_finite() && f == f.trunc() && f.abs() < 9.2e18 {
        return format!("{f:.1}");
    }
    let s = format!("{f:.15e}");
    // %.16g: 16 significant digits, the shorter of fixed and exponent forms, no trailing zeros.
    let Some((mant, exp)) = s.split_once('e') else {
        return s;
    };
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..16).contains(&exp) {
        let digits = (15 - exp).max(0) as usize;
        let fixed = format!("{f:.digits$}");
        let fixed = if fixed.contains('.') {
            fixed
                .trim_end_matches('0')
                .trim_end_matches('.')
                .to_string()
        } else {
            fixed
        };
        return fixed;
    }
    let mant = if mant.contains('.') {
        mant.trim_end_matches('0').trim_end_matches('.')
    } else {
        mant
    };
    format!("{mant}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
}

/// The converted value, or `None` when Fluent Bit fails the conversion.
pub fn convert(from: Type, to: Type, v: &Value) -> Option<Value> {
    match (from, v) {
        (Type::Str, Value::Str(s)) => {
            let s = s.as_str();
            match to {
                Type::Int => {
                    let (neg, n) = c_integer(s, 10);
                    let i = if neg {
                        (n.min(i64::MAX as u128 + 1) as i128).wrapping_neg() as i64
                    } else {
                        n.min(i64::MAX as u128) as i64
                    };
                    (i != 0).then_some(Value::Int(i))
                }
                Type::UInt | Type::Hex => {
                    let (neg, n) = c_integer(s, if to == Type::Hex { 16 } else { 10 });
                    let u = n.min(u64::MAX as u128) as u64;
                    let u = if neg { u.wrapping_neg() } else { u };
                    (u != 0).then_some(Value::UInt(u))
                }
                Type::Float => Some(Value::Float(c_float(s))),
                Type::Bool => {
                    let l = s.as_bytes();
                    if l.len() >= 4 && l[..4].eq_ignore_ascii_case(b"true") {
                        Some(Value::Bool(true))
                    } else if l.len() >= 5 && l[..5].eq_ignore_ascii_case(b"false") {
                        Some(Value::Bool(false))
                    } else {
                        None
                    }
                }
                Type::Str => None,
            }
        }
        (Type::Int | Type::UInt, Value::Int(_) | Value::UInt(_)) => {
            let (i, u) = match v {
                Value::Int(i) => (*i, *i as u64),
                Value::UInt(u) => (*u as i64, *u),
                _ => return None,
            };
            match (from, to) {
                (Type::Int, Type::Str) => Some(Value::Str(Str::from(i.to_string()))),
                (Type::UInt, Type::Str) => Some(Value::Str(Str::from(u.to_string()))),
                (Type::Int, Type::Float) => Some(Value::Float(i as f64)),
                (Type::UInt, Type::Float) => Some(Value::Float(u as f64)),
                (Type::Int, Type::UInt) => Some(Value::UInt(u)),
                (Type::UInt, Type::Int) => Some(Value::Int(i)),
                _ => None,
            }
        }
        (Type::Float, Value::Float(f)) => match to {
            Type::Str => Some(Value::Str(Str::from(float_text(*f)))),
            Type::Int => Some(Value::Int(*f as i64)),
            Type::UInt => Some(Value::UInt(*f as u64)),
            _ => None,
        },
        _ => None,
    }
}

#[async_trait]
impl Filter for TypeConverter {
    /// Its state is its configuration: any number of copies filter alike.
    fn fork(&self) -> Option<Box<dyn Filter>> {
        Some(Box::new(self.clone()))
    }
    async fn filter(&mut self, _tag: &str, records: &mut Vec<Record>) {
        for rec in records.iter_mut() {
            let mut appended = Vec::new();
            for rule in &self.rules {
                let Some(v) = rule.src.get(&rec.body) else {
                    continue;
                };
                let out = match convert(rule.from, rule.to, v) {
                    Some(c) => c,
                    None => {
                        tracing::error!(key = %rule.src_text, "type_converter: failed to convert; the value is copied unchanged");
                        v.clone()
                    }
                };
                appended.push((rule.dst.clone(), out));
            }
            for (k, v) in appended {
                rec.body.push(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{build, build_err, run};

    /// Fluent Bit's documented example (uint to string, appended), plus a record accessor
    /// source, a source of the wrong type (copied unchanged) and a record without the key.
    #[test]
    fn rules_append_in_fluent_bits_order() {
        let mut f = build(
            &PLUGIN,
            &[
                ("uint_key", "Mem.total Mem.total_str string"),
                ("str_key", "$k['code'] code_int int"),
                ("float_key", "ratio ratio_str string"),
            ],
        )
        .unwrap();
        let out = run(
            f.as_mut(),
            r#"[{"Mem.total":1016024,"k":{"code":"404"},"ratio":"high"},{"other":1}]"#,
        );
        assert_eq!(
            out,
            r#"[{"Mem.total":1016024,"k":{"code":"404"},"ratio":"high","code_int":404,"Mem.total_str":"1016024","ratio_str":"high"},{"other":1}]"#
        );
    }

    #[test]
    fn bad_rules_name_the_line() {
        let e = build_err(&PLUGIN, &[("int_key", "id id_str")]);
        assert!(
            e.contains("test.conf:2") && e.contains("SRC_KEY DST_KEY TYPE"),
            "{e}"
        );
        let e = build_err(&PLUGIN, &[("str_key", "a b integer")]);
        assert!(e.contains("unknown type 'integer'"), "{e}");
    }

    fn s(v: &str) -> Value {
        Value::Str(Str::from(v))
    }

    #[test]
    fn strings_read_as_c_reads_them() {
        assert_eq!(
            convert(Type::Str, Type::Int, &s("42abc")),
            Some(Value::Int(42))
        );
        assert_eq!(
            convert(Type::Str, Type::Int, &s("  -7")),
            Some(Value::Int(-7))
        );
        assert_eq!(
            convert(Type::Str, Type::Int, &s("0")),
            None,
            "0 is a failure"
        );
        assert_eq!(convert(Type::Str, Type::Int, &s("abc")), None);
        assert_eq!(
            convert(Type::Str, Type::UInt, &s("17")),
            Some(Value::UInt(17))
        );
        assert_eq!(
            convert(Type::Str, Type::Hex, &s("0xff")),
            Some(Value::UInt(255))
        );
        assert_eq!(
            convert(Type::Str, Type::Float, &s("2.5ms")),
            Some(Value::Float(2.5))
        );
        assert_eq!(
            convert(Type::Str, Type::Float, &s("abc")),
            Some(Value::Float(0.0))
        );
        assert_eq!(
            convert(Type::Str, Type::Bool, &s("TRUEish")),
            Some(Value::Bool(true))
        );
        assert_eq!(convert(Type::Str, Type::Bool, &s("yes")), None);
        assert_eq!(convert(Type::Str, Type::Str, &s("x")), None);
    }

    #[test]
    fn numbers_and_source_types() {
        assert_eq!(
            convert(Type::Int, Type::Str, &Value::Int(-3)),
            Some(s("-3"))
        );
        assert_eq!(
            convert(Type::UInt, Type::Str, &Value::UInt(1016024)),
            Some(s("1016024"))
        );
        assert_eq!(convert(Type::Int, Type::Int, &Value::Int(1)), None);
        assert_eq!(convert(Type::Int, Type::Str, &s("1")), None, "not an int");
        assert_eq!(
            convert(Type::Float, Type::Str, &Value::Float(3.0)),
            Some(s("3.0"))
        );
        assert_eq!(
            convert(Type::Float, Type::Str, &Value::Float(0.1)),
            Some(s("0.1"))
        );
        assert_eq!(
            convert(Type::Float, Type::Int, &Value::Float(-2.9)),
            Some(Value::Int(-2))
        );
        assert_eq!(convert(Type::Float, Type::Str, &Value::Int(3)), None);
    }

    #[test]
    fn type_names_are_prefixes() {
        assert_eq!(Type::parse("int"), Some(Type::Int));
        assert_eq!(Type::parse("integer"), None);
        assert_eq!(Type::parse("STRING"), Some(Type::Str));
        assert_eq!(Type::parse("str"), Some(Type::Str));
        assert_eq!(Type::parse("u"), Some(Type::UInt));
        assert_eq!(Type::parse("boolean"), None);
        assert_eq!(Type::parse("date"), None);
    }
}
