//! Name templates: `$kubernetes['namespace_name']`, `$TAG`, `$TAG[1]` inside literal text, as
//! Fluent Bit's `log_group_template`/`log_stream_template` read them, and AWS for Fluent Bit's
//! Go syntax `$(kubernetes['namespace_name'])`, `$(tag)`, `$(tag[1])`.
//!
//! A record accessor ends where Fluent Bit's does (at `.`, space, `,` or `"` outside a quoted
//! subkey), so `app-$kubernetes['host'].$kubernetes['namespace_name']` mixes both. Rendering
//! fails (returns `None`) when a key is missing or its value is a map, an array or null: the
//! caller then falls back to the static name, as Fluent Bit does. `$TAG[n]` is the n-th part of
//! the tag split on `.`; a missing part also fails.

use logferry_core::{Map, Value};
use logferry_filters::record_accessor::RecordAccessor;

#[derive(Clone, Debug)]
enum Part {
    Literal(String),
    Accessor(RecordAccessor),
    Tag,
    TagIndex(usize),
}

/// A parsed template.
#[derive(Clone, Debug)]
pub struct Template {
    parts: Vec<Part>,
    text: String,
}

impl Template {
    /// Parses `text`; an error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = text;
        while let Some(i) = rest.find('$') {
            lit.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            let (part, used) = if let Some(inner) = after.strip_prefix('(') {
                let end = inner
                    .find(')')
                    .ok_or_else(|| format!("template '{text}': '$(' without ')'"))?;
                (dynamic(&inner[..end])?, end + 2)
            } else if after.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
                let (part, len) = leading(after)?;
                (part, len)
            } else {
                lit.push('$');
                rest = after;
                continue;
            };
            if !lit.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut lit)));
            }
            parts.push(part);
            rest = &after[used..];
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            parts.push(Part::Literal(lit));
        }
        Ok(Template {
            parts,
            text: text.to_string(),
        })
    }

    /// Whether the template depends on the record or the tag.
    pub fn is_dynamic(&self) -> bool {
        self.parts.iter().any(|p| !matches!(p, Part::Literal(_)))
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The record keys the template reads (the first key of each accessor).
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Accessor(ra) => Some(ra.key()),
            _ => None,
        })
    }

    /// With `trusted_templates On`: refuses a template that reads a record key other than the
    /// kubernetes filter's metadata (`$kubernetes[...]`), which a pod cannot write (the
    /// filter drops an application's own `kubernetes` key and sets its own last).
    pub fn check_trusted(&self, option: &str) -> Result<(), String> {
        match self.keys().find(|k| *k != TRUSTED_KEY) {
            Some(k) => Err(format!(
                "'{}' reads the record key '{k}', which a pod's log can set; with trusted_templates On a template may read only ${TRUSTED_KEY}[...] and the tag ({option})",
                self.text
            )),
            None => Ok(()),
        }
    }

    /// The name for a record under `tag`, or `None` when a part cannot be filled.
    pub fn render(&self, tag: &str, body: &Map) -> Option<String> {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Literal(s) => out.push_str(s),
                Part::Tag => out.push_str(tag),
                Part::TagIndex(n) => out.push_str(tag.split('.').nth(*n)?),
                Part::Accessor(ra) => scalar(ra.get(body)?, &mut out)?,
            }
        }
        Some(out)
    }
}

/// The record key `trusted_templates` lets templates read: the kubernetes filter's metadata.
pub const TRUSTED_KEY: &str = "kubernetes";

/// The destination a rendered name is for, and so the rules it must follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameRules {
    /// CloudWatch Logs group: 1 to 512 of `a-z A-Z 0-9 _ - / . #`.
    LogGroup,
    /// CloudWatch Logs stream: 1 to 512 characters, no `:` or `*`.
    LogStream,
    /// Kinesis partition key: 1 to 256 characters.
    PartitionKey,
}

/// Makes a name rendered from a record or a tag (which a pod or a client may control) valid
/// for its destination: characters the destination refuses become `_` (control characters
/// too), and the name is cut to the destination's length (at a character boundary). `None`
/// when nothing is left: the caller falls back to its static name, as for a missing key.
pub fn sanitize(name: &str, rules: NameRules) -> Option<String> {
    let (max_chars, max_bytes) = match rules {
        NameRules::LogGroup => (512, 512),
        NameRules::LogStream => (512, usize::MAX),
        NameRules::PartitionKey => (256, usize::MAX),
    };
    let mut out = String::with_capacity(name.len().min(max_bytes));
    for (n, c) in name.chars().enumerate() {
        if n >= max_chars {
            break;
        }
        let ok = match rules {
            NameRules::LogGroup => {
                c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '/' | '.' | '#')
            }
            NameRules::LogStream => !matches!(c, ':' | '*') && !c.is_control(),
            NameRules::PartitionKey => !c.is_control(),
        };
        let c = if ok { c } else { '_' };
        if out.len() + c.len_utf8() > max_bytes {
            break;
        }
        out.push(c);
    }
    (!out.is_empty()).then_some(out)
}

/// `$TAG`, `$TAG[n]` or a record accessor at the start of `s` (after the `$`), and its length.
fn leading(s: &str) -> Result<(Part, usize), String> {
    if let Some(r) = s.strip_prefix("TAG") {
        if let Some(idx) = r.strip_prefix('[') {
            if let Some(end) = idx.find(']') {
                if let Ok(n) = idx[..end].trim().parse::<usize>() {
                    return Ok((Part::TagIndex(n), 3 + end + 2));
                }
            }
        }
        if !r.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == '[') {
            return Ok((Part::Tag, 3));
        }
    }
    let ra = RecordAccessor::parse(&format!("${s}"))?;
    let len = s.len() - ra.ignored_suffix().map_or(0, str::len);
    Ok((Part::Accessor(ra), len))
}

/// The inside of Go's `$(...)`: `tag`, `tag[n]`, or an accessor without its `$`.
fn dynamic(inner: &str) -> Result<Part, String> {
    let t = inner.trim();
    if t.eq_ignore_ascii_case("tag") {
        return Ok(Part::Tag);
    }
    if let Some(idx) = t
        .strip_prefix("tag[")
        .or_else(|| t.strip_prefix("TAG["))
        .and_then(|r| r.strip_suffix(']'))
    {
        let n = idx
            .trim()
            .parse::<usize>()
            .map_err(|_| format!("'$({inner})': the tag index must be a number"))?;
        return Ok(Part::TagIndex(n));
    }
    let ra = RecordAccessor::parse(&format!("${t}"))?;
    if let Some(extra) = ra.ignored_suffix() {
        return Err(format!("'$({inner})': unexpected '{extra}'"));
    }
    Ok(Part::Accessor(ra))
}

fn scalar(v: &Value, out: &mut String) -> Option<()> {
    use std::fmt::Write;
    match v {
        Value::Str(s) => out.push_str(s),
        Value::Int(i) => write!(out, "{i}").ok()?,
        Value::UInt(u) => write!(out, "{u}").ok()?,
        Value::Float(f) => write!(out, "{f}").ok()?,
        Value::Bool(b) => write!(out, "{b}").ok()?,
        Value::Null | Value::Array(_) | Value::Map(_) | Value::SharedMap(_) => return None,
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Map {
        let mut k = Map::new();
        k.insert("namespace_name", "prod");
        k.insert("host", "node-1");
        k.insert("labels", Value::Map(Map::new()));
        let mut m = Map::new();
        m.insert("kubernetes", Value::Map(k));
        m.insert("n", 3i64);
        m
    }

    fn render(t: &str) -> Option<String> {
        Template::parse(t)
            .unwrap()
            .render("kube.var.log.x", &record())
    }

    #[test]
    fn fluent_bit_accessors_tags_and_literals() {
        assert_eq!(
            render("app-$kubernetes['host'].$kubernetes['namespace_name']").as_deref(),
            Some("app-node-1.prod")
        );
        assert_eq!(render("$TAG").as_deref(), Some("kube.var.log.x"));
        assert_eq!(render("s-$TAG[1]-$n").as_deref(), Some("s-var-3"));
        assert_eq!(render("plain").as_deref(), Some("plain"));
        assert_eq!(render("cost $ 5").as_deref(), Some("cost $ 5"));
        assert!(!Template::parse("plain").unwrap().is_dynamic());
        assert!(Template::parse("$TAG").unwrap().is_dynamic());
    }

    #[test]
    fn go_syntax() {
        assert_eq!(
            render("/aws/$(kubernetes['namespace_name'])/$(tag[0])").as_deref(),
            Some("/aws/prod/kube")
        );
        assert_eq!(render("$(tag)").as_deref(), Some("kube.var.log.x"));
        assert!(Template::parse("$(kubernetes").is_err());
    }

    #[test]
    fn missing_or_non_scalar_values_fail() {
        assert_eq!(render("$kubernetes['pod_name']"), None);
        assert_eq!(render("$kubernetes['labels']"), None);
        assert_eq!(render("$TAG[9]"), None);
    }
}
