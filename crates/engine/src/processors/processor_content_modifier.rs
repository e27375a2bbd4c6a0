//! `content_modifier` processor (Fluent Bit's `processor_content_modifier`): one action on one
//! key of every log record, in YAML `processors.logs` of an input or output.
//!
//! Actions, as documented and as `cm_logs.c` does them (keys are top-level names, matched
//! exactly, first pair with that name):
//! - `insert KEY VALUE`: appends `KEY` with the text `VALUE` unless the key exists.
//! - `upsert KEY VALUE`: removes `KEY` if present and appends it with the text `VALUE` (so the
//!   key moves to the end).
//! - `delete KEY`; `rename KEY VALUE` (in place; `VALUE` is the new name).
//! - `hash KEY`: the value's text (see `convert` to `string`) replaced by its SHA-256 in lower
//!   hex; an empty text stays empty.
//! - `extract KEY` with `pattern`: the named groups of the regular expression, matched on the
//!   key's string value, are set as keys (each replaced if present, appended).
//! - `convert KEY` with `converted_type` `string`, `boolean`, `int` or `double`: the value
//!   converted as `cm_utils_variant_convert` does (text to boolean: `true`/`false`, anything
//!   else false; text to int: the whole text must be a 32-bit integer; text to double: the
//!   leading number; double to text: `%.17g`; double to int: rounded), then the key moved to
//!   the end.
//!
//! `VALUE` is always inserted as text (`value: 123` inserts `"123"`), as Fluent Bit does.
//!
//! **Contexts:** `body` (default; also `message`, `record`) is applied. `attributes`/`metadata`
//! (record metadata) and the OpenTelemetry contexts (`otel_resource_attributes`,
//! `otel_scope_attributes`, `otel_scope_name`, `otel_scope_version`, `otel_log_attributes`)
//! target data logferry's records do not carry: the processor is accepted, does nothing, and a
//! note says so. Trace and metric contexts are errors, as Fluent Bit reports them for logs.
//!
//! **Failures:** an action that cannot apply to a record (`extract` with no match or a
//! non-string value, `convert` of a missing key or a bad number, `hash` of a map) leaves that
//! record unchanged. Fluent Bit stops the whole chunk at the first such record, leaving the
//! records after it in that chunk unchanged too, which depends on how records happen to be
//! chunked; logferry goes on with the next record.

use async_trait::async_trait;
use logferry_core::config::{ConfigError, Entry, Section};
use logferry_core::{options, Map, Record, Str, Value};
use regex::Regex;
use sha2::{Digest, Sha256};

use crate::{BuildContext, Filter, FilterPlugin};

options! {
    /// Options of the `content_modifier` processor.
    pub struct ContentModifierOptions for "content_modifier processor" {
        /// Where the action applies: `body` (default), `attributes`, or an `otel_*` context.
        pub context: Option<String> = ["context"] None,
        /// `insert`, `upsert`, `delete`, `rename`, `hash`, `extract` or `convert`.
        pub action: String = ["action"] None,
        /// The key the action applies to.
        pub key: Option<String> = ["key"] None,
        /// The value to insert or upsert, or the new name for `rename`.
        pub value: Option<String> = ["value"] None,
        /// Regular expression with named groups, for `extract`.
        pub pattern: Option<String> = ["pattern"] None,
        /// Type for `convert`: `string`, `boolean`, `int` or `double`.
        pub converted_type: Option<String> = ["converted_type"] None,
    }
}

/// The registry entry (a processor: YAML `processors.logs` only, not a `[FILTER]`).
pub static PLUGIN: FilterPlugin = FilterPlugin {
    name: "content_modifier",
    aliases: &[],
    description:
        "modify the content of log records (insert, upsert, delete, rename, hash, extract, convert)",
    options: ContentModifierOptions::OPTIONS,
    default_workers: 0,
    build,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Type {
    String,
    Boolean,
    Int,
    Double,
}

#[derive(Debug)]
enum Action {
    Insert(Str, Str),
    Upsert(Str, Str),
    Delete(Str),
    Rename(Str, Str),
    Hash(Str),
    Extract(Str, Regex),
    Convert(Str, Type),
}

/// The processor.
#[derive(Debug)]
struct ContentModifier {
    action: Action,
}

/// What a context the records do not carry builds: nothing happens (a note says why).
struct Inert;

#[async_trait]
impl Filter for Inert {
    async fn filter(&mut self, _tag: &str, _records: &mut Vec<Record>) {}
}

fn build(
    ctx: &BuildContext,
    section: &Section,
    entries: &[&Entry],
) -> Result<Box<dyn Filter>, ConfigError> {
    let opts = ContentModifierOptions::from_entries(&section.span, entries, &[])?;
    let at = |key: &str| {
        entries
            .iter()
            .rev()
            .find(|e| e.key.eq_ignore_ascii_case(key))
            .map_or(&section.span, |e| &e.span)
    };
    let action = opts.action.trim().to_ascii_lowercase();
    if !matches!(
        action.as_str(),
        "insert" | "upsert" | "delete" | "rename" | "hash" | "extract" | "convert"
    ) {
        return Err(ConfigError::key(
            at("action"),
            "action",
            format!("unknown action '{}' (expected insert, upsert, delete, rename, hash, extract or convert)", opts.action),
        ));
    }
    let need = |v: &Option<String>, key: &str| -> Result<Str, ConfigError> {
        v.as_deref().map(Str::from).ok_or_else(|| {
            ConfigError::at(
                &section.span,
                format!("content_modifier: '{key}' is required for action '{action}'"),
            )
        })
    };
    let key = need(&opts.key, "key");
    if let Some(c) = &opts.context {
        let c = c.trim().to_ascii_lowercase();
        match c.as_str() {
            "body" | "message" | "record" => {}
            "metadata" | "attributes" | "otel_resource_attributes" | "otel_scope_attributes"
            | "otel_log_attributes" | "otel_scope_name" | "otel_scope_version" => {
                if matches!(c.as_str(), "otel_scope_name" | "otel_scope_version")
                    && matches!(action.as_str(), "rename" | "extract" | "convert")
                {
                    return Err(ConfigError::key(
                        at("action"),
                        "action",
                        format!("action '{action}' is not allowed for context '{c}'"),
                    ));
                }
                let what = if c.starts_with("otel_") {
                    "no OpenTelemetry groups or attributes"
                } else {
                    "no metadata (attributes)"
                };
                if let Some(e) = entries
                    .iter()
                    .rev()
                    .find(|e| e.key.eq_ignore_ascii_case("context"))
                {
                    ctx.note(
                        e,
                        format!("accepted but not applied: logferry's log records carry {what}, so this content_modifier changes nothing"),
                    );
                }
                return Ok(Box::new(Inert));
            }
            other => {
                return Err(ConfigError::key(
                    at("context"),
                    "context",
                    format!("unknown logs context '{other}' (expected body, attributes, otel_resource_attributes, otel_scope_attributes, otel_scope_name, otel_scope_version or otel_log_attributes)"),
                ))
            }
        }
    }
    let key = key?;
    let action = match action.as_str() {
        "insert" => Action::Insert(key, need(&opts.value, "value")?),
        "upsert" => Action::Upsert(key, need(&opts.value, "value")?),
        "rename" => Action::Rename(key, need(&opts.value, "value")?),
        "delete" => Action::Delete(key),
        "hash" => Action::Hash(key),
        "extract" => {
            let p = need(&opts.pattern, "pattern")?;
            let re = logferry_core::fb_regex::compile(&p)
                .map_err(|r| ConfigError::key(at("pattern"), "pattern", r))?;
            Action::Extract(key, re)
        }
        _ => {
            let t = need(&opts.converted_type, "converted_type")?;
            let ty = match t.to_ascii_lowercase().as_str() {
                "string" => Type::String,
                "boolean" => Type::Boolean,
                "int" => Type::Int,
                "double" => Type::Double,
                other => {
                    return Err(ConfigError::key(
                        at("converted_type"),
                        "converted_type",
                        format!("unsupported converted_type '{other}' (expected string, boolean, int or double)"),
                    ))
                }
            };
            Action::Convert(key, ty)
        }
    };
    Ok(Box::new(ContentModifier { action }))
}

#[async_trait]
impl Filter for ContentModifier {
    async fn filter(&mut self, _tag: &str, records: &mut Vec<Record>) {
        for r in records.iter_mut() {
            self.apply(&mut r.body);
        }
    }
}

fn first(m: &Map, key: &str) -> Option<usize> {
    m.0.iter().position(|(k, _)| k == key)
}

impl ContentModifier {
    /// Applies the action to one record body; a record it cannot apply to is left as it was.
    fn apply(&self, m: &mut Map) {
        match &self.action {
            Action::Insert(k, v) => {
                if first(m, k).is_none() {
                    m.push(k.clone(), Value::Str(v.clone()));
                }
            }
            Action::Upsert(k, v) => {
                if let Some(i) = first(m, k) {
                    m.0.remove(i);
                }
                m.push(k.clone(), Value::Str(v.clone()));
            }
            Action::Delete(k) => {
                if let Some(i) = first(m, k) {
                    m.0.remove(i);
                }
            }
            Action::Rename(k, to) => {
                if let Some(i) = first(m, k) {
                    m.0[i].0 = to.clone();
                }
            }
            Action::Hash(k) => {
                let Some(i) = first(m, k) else { return };
                let Some(Value::Str(text)) = convert(&m.0[i].1, Type::String) else {
                    return;
                };
                if text.is_empty() {
                    return;
                }
                let digest = Sha256::digest(text.as_bytes());
                let mut hex = String::with_capacity(64);
                for b in digest {
                    hex.push_str(&format!("{b:02x}"));
                }
                m.0[i].1 = Value::Str(Str::from(hex));
            }
            Action::Extract(k, re) => {
                let Some(i) = first(m, k) else { return };
                let Value::Str(s) = &m.0[i].1 else { return };
                let Some(caps) = re.captures(s) else { return };
                let found: Vec<(Str, Str)> = re
                    .capture_names()
                    .flatten()
                    .filter_map(|n| caps.name(n).map(|c| (Str::from(n), Str::from(c.as_str()))))
                    .collect();
                for (name, value) in found {
                    if let Some(j) = first(m, &name) {
                        m.0.remove(j);
                    }
                    m.push(name, Value::Str(value));
                }
            }
            Action::Convert(k, ty) => {
                let Some(i) = first(m, k) else { return };
                let Some(v) = convert(&m.0[i].1, *ty) else {
                    return;
                };
                let (key, _) = m.0.remove(i);
                m.push(key, v);
            }
        }
    }
}

/// `cm_utils_variant_convert`: `None` when the value cannot be converted.
fn convert(v: &Value, ty: Type) -> Option<Value> {
    let s = |t: String| Some(Value::Str(Str::from(t)));
    match v {
        Value::Str(t) => match ty {
            Type::String => Some(v.clone()),
            Type::Boolean => Some(Value::Bool(t.eq_ignore_ascii_case("true"))),
            Type::Int => text_to_int(t),
            Type::Double => text_to_double(t).map(Value::Float),
        },
        Value::Int(i) => match ty {
            Type::String => s(i.to_string()),
            Type::Boolean => Some(Value::Bool(*i != 0)),
            Type::Int => Some(Value::Int(*i)),
            Type::Double => Some(Value::Float(*i as f64)),
        },
        Value::UInt(u) => match ty {
            Type::String => s(u.to_string()),
            Type::Boolean => Some(Value::Bool(*u != 0)),
            Type::Int => Some(Value::UInt(*u)),
            Type::Double => Some(Value::Float(*u as f64)),
        },
        Value::Float(f) => match ty {
            Type::String => s(format_g17(*f)),
            Type::Boolean => Some(Value::Bool(*f != 0.0)),
            Type::Int => Some(Value::Int(f.round() as i64)),
            Type::Double => Some(Value::Float(*f)),
        },
        Value::Null => match ty {
            Type::String => s("null".to_string()),
            Type::Boolean => Some(Value::Bool(false)),
            Type::Int => Some(Value::Int(0)),
            Type::Double => Some(Value::Float(0.0)),
        },
        Value::Bool(b) => match ty {
            Type::String => s(b.to_string()),
            Type::Boolean => Some(Value::Bool(*b)),
            Type::Int => Some(Value::Int(i64::from(*b))),
            Type::Double => Some(Value::Float(if *b { 1.0 } else { 0.0 })),
        },
        Value::Array(_) | Value::Map(_) | Value::SharedMap(_) => None,
    }
}

/// Text to int as `strtoimax`/`strtoumax` over the whole text: leading spaces and a sign are
/// taken, anything after the digits fails; negative values must fit a C `int`, others an
/// `unsigned int`. An empty text reads as 0, as `strtoumax` leaves it.
fn text_to_int(t: &str) -> Option<Value> {
    let trimmed = t.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    if t.starts_with('-') {
        let n: i64 = t.parse().ok()?;
        return (i64::from(i32::MIN)..=i64::from(i32::MAX))
            .contains(&n)
            .then_some(Value::Int(n));
    }
    if trimmed.is_empty() {
        return Some(Value::Int(0));
    }
    let digits = trimmed.strip_prefix('+').unwrap_or(trimmed);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    (n <= u64::from(u32::MAX)).then_some(Value::Int(n as i64))
}

/// Text to double as `strtod`: the leading number (trailing text ignored); no number fails.
fn text_to_double(t: &str) -> Option<f64> {
    let s = t.trim_start();
    let b = s.as_bytes();
    let mut best = None;
    // The longest prefix that parses (numbers are short; this stays cheap).
    for end in (1..=b.len().min(64)).rev() {
        if !s.is_char_boundary(end) {
            continue;
        }
        let p = &s[..end];
        if p.ends_with(|c: char| c.is_ascii_alphabetic() && !matches!(c, 'e' | 'E'))
            && !p.eq_ignore_ascii_case("inf")
            && !p.eq_ignore_ascii_case("nan")
        {
            continue;
        }
        if let Ok(v) = p.parse::<f64>() {
            best = Some(v);
            break;
        }
    }
    best
}

/// A double as C's `%.17g`.
fn format_g17(f: f64) -> String {
    if f.is_nan() {
        return "nan".to_string();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf" } else { "-inf" }.to_string();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0" } else { "0" }.to_string();
    }
    let sci = format!("{f:.16e}");
    let (mant, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let trim = |s: &str| -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s.to_string()
        }
    };
    if !(-4..17).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", trim(mant), exp.abs())
    } else {
        let decimals = usize::try_from(16 - exp).unwrap_or(0);
        trim(&format!("{f:.decimals$}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use logferry_core::config::{Config, Span};

    fn run(opts: &[(&str, &str)], json: &str) -> Result<String, String> {
        let span = Span::command_line();
        let mut section = Section::new(logferry_core::config::SectionKind::Filter, span.clone());
        for (k, v) in opts {
            section.push(*k, *v, span.clone());
        }
        let entries: Vec<&Entry> = section.entries.iter().collect();
        let ctx = BuildContext::standalone("content_modifier.0", Config::default())
            .map_err(|e| format!("{e:?}"))?;
        let mut f = build(&ctx, &section, &entries).map_err(|e| e.to_string())?;
        let Value::Map(body) =
            Value::from_json(serde_json::from_str(json).map_err(|e| e.to_string())?)
        else {
            return Err("not a map".into());
        };
        let mut recs = vec![Record::new(logferry_core::EventTime::default(), body)];
        futures_lite(f.filter("t", &mut recs));
        serde_json::to_string(&recs[0].body).map_err(|e| e.to_string())
    }

    /// Runs a future that never waits.
    fn futures_lite<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .map(|rt| rt.block_on(f))
            .unwrap_or_else(|e| panic!("runtime: {e}"))
    }

    #[test]
    fn actions_as_documented() {
        let r = |o: &[(&str, &str)], j: &str| run(o, j).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            r(
                &[("action", "insert"), ("key", "color"), ("value", "blue")],
                r#"{"key1":"123.4"}"#
            ),
            r#"{"key1":"123.4","color":"blue"}"#
        );
        assert_eq!(
            r(
                &[("action", "insert"), ("key", "key1"), ("value", "x")],
                r#"{"key1":"123.4"}"#
            ),
            r#"{"key1":"123.4"}"#
        );
        assert_eq!(
            r(
                &[("action", "upsert"), ("key", "a"), ("value", "5678")],
                r#"{"a":"1","b":2}"#
            ),
            r#"{"b":2,"a":"5678"}"#
        );
        assert_eq!(
            r(
                &[("action", "delete"), ("key", "key2")],
                r#"{"key1":"1","key2":"e"}"#
            ),
            r#"{"key1":"1"}"#
        );
        assert_eq!(
            r(
                &[("action", "rename"), ("key", "key2"), ("value", "test")],
                r#"{"key2":"e","z":1}"#
            ),
            r#"{"test":"e","z":1}"#
        );
        assert_eq!(
            r(
                &[("action", "hash"), ("key", "password")],
                r#"{"password":"12345"}"#
            ),
            r#"{"password":"5994471abb01112afcc18159f6cc74b4f511b99806da59b3caf5a9c173cacfc5"}"#
        );
        assert_eq!(
            r(
                &[
                    ("action", "extract"),
                    ("key", "http.url"),
                    (
                        "pattern",
                        r"^(?<http_protocol>https?):\/\/(?<http_domain>[^\/\?]+)(?<http_path>\/[^?]*)?(?:\?(?<http_query_params>.*))?"
                    )
                ],
                r#"{"http.url":"https://fluentbit.io/docs?q=example"}"#
            ),
            r#"{"http.url":"https://fluentbit.io/docs?q=example","http_protocol":"https","http_domain":"fluentbit.io","http_path":"/docs","http_query_params":"q=example"}"#
        );
        assert_eq!(
            r(
                &[
                    ("action", "convert"),
                    ("key", "key2"),
                    ("converted_type", "boolean")
                ],
                r#"{"key2":"true","k":1}"#
            ),
            r#"{"k":1,"key2":true}"#
        );
        // "123.4" is not an integer: the record is left as it was.
        assert_eq!(
            r(
                &[
                    ("action", "convert"),
                    ("key", "key1"),
                    ("converted_type", "int")
                ],
                r#"{"key1":"123.4"}"#
            ),
            r#"{"key1":"123.4"}"#
        );
        assert_eq!(
            r(
                &[
                    ("action", "convert"),
                    ("key", "key1"),
                    ("converted_type", "double")
                ],
                r#"{"key1":"123.4"}"#
            ),
            r#"{"key1":123.4}"#
        );
        assert_eq!(
            r(
                &[
                    ("action", "convert"),
                    ("key", "f"),
                    ("converted_type", "string")
                ],
                r#"{"f":123.4}"#
            ),
            r#"{"f":"123.40000000000001"}"#
        );
    }

    #[test]
    fn bad_settings_are_errors_and_other_contexts_are_inert() {
        let e = |o: &[(&str, &str)]| run(o, "{}").err().unwrap_or_default();
        assert!(e(&[("action", "squash"), ("key", "a")]).contains("unknown action 'squash'"));
        assert!(e(&[("action", "insert"), ("key", "a")])
            .contains("'value' is required for action 'insert'"));
        assert!(e(&[("action", "delete")]).contains("'key' is required"));
        assert!(e(&[
            ("action", "convert"),
            ("key", "a"),
            ("converted_type", "float")
        ])
        .contains("unsupported converted_type"));
        assert!(
            e(&[("action", "delete"), ("key", "a"), ("context", "span_name")])
                .contains("unknown logs context")
        );
        assert_eq!(
            run(
                &[
                    ("action", "insert"),
                    ("key", "a"),
                    ("value", "b"),
                    ("context", "otel_resource_attributes")
                ],
                r#"{"x":1}"#
            ),
            Ok(r#"{"x":1}"#.to_string())
        );
    }

    #[test]
    fn conversions_follow_c() {
        assert_eq!(format_g17(0.1), "0.10000000000000001");
        assert_eq!(format_g17(1e20), "1e+20");
        assert_eq!(format_g17(2.5), "2.5");
        assert_eq!(text_to_int("42"), Some(Value::Int(42)));
        assert_eq!(text_to_int("-5"), Some(Value::Int(-5)));
        assert_eq!(text_to_int("5000000000"), None);
        assert_eq!(text_to_int("12x"), None);
        assert_eq!(text_to_double("12.5ms"), Some(12.5));
        assert_eq!(text_to_double("ms"), None);
    }
}
