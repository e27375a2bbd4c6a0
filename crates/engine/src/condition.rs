//! Fluent Bit's record conditions (`src/flb_conditionals.c`), shared by YAML routes and by the
//! `condition` block of processors:
//!
//! ```yaml
//! condition:
//!   op: and            # or `or`; default `and`
//!   rules:
//!     - field: $level  # a record accessor
//!       op: eq         # eq neq gt lt gte lte regex not_regex in not_in
//!       value: error   # a list for in / not_in
//!       context: body  # optional
//! ```
//!
//! What Fluent Bit does, and so what this does:
//! - The field's value is turned into text before it is compared: strings as they are,
//!   integers in decimal, floats as `%f` (`1.500000`), booleans `true`/`false`, null `null`, maps
//!   as JSON. A missing field reads as the empty text (so `neq x` is true for it); an array
//!   makes the rule false.
//! - `eq`, `neq`, `in` and `not_in` compare that text exactly; `gt`/`lt`/`gte`/`lte` read a
//!   number from its start as `atof` does (no number: 0) and need a numeric `value`; `regex` and
//!   `not_regex` use Fluent Bit's regex dialect.
//! - A field written without `$` is literal text, compared as it is (a note says so).
//! - `context`: `body` (default, also `record`, `message`, `record_body`) reads the record;
//!   `metadata` (`attributes`, `record_metadata`) reads the record's metadata, which logferry's
//!   inputs never set, so it is empty, as it is in Fluent Bit for non-OpenTelemetry inputs;
//!   the group and `otel_*` contexts have nothing to read in logferry (no OpenTelemetry
//!   groups): such a rule is skipped under `or` and false under `and`, as Fluent Bit treats a
//!   context with no data. Both are noted at build time.
//! - `and` is true when every rule is; `or` when any is.

use logferry_core::config::{ConfigError, Span, Tree};
use logferry_core::record_accessor::RecordAccessor;
use logferry_core::{Map, Record, Value};
use regex::Regex;

/// How rules combine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    And,
    Or,
}

/// Where a rule looks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Context {
    Body,
    /// Record metadata: always empty in logferry.
    Metadata,
    /// Group / OpenTelemetry contexts: no data in logferry.
    Absent,
}

#[derive(Debug)]
enum Test {
    Eq(String),
    Neq(String),
    Gt(f64),
    Lt(f64),
    Gte(f64),
    Lte(f64),
    Regex(Regex),
    NotRegex(Regex),
    In(Vec<String>),
    NotIn(Vec<String>),
}

/// Where the field's text comes from.
#[derive(Debug)]
enum Field {
    Accessor(RecordAccessor),
    /// A field written without `$`: Fluent Bit's record accessor yields the text itself.
    Literal(String),
}

#[derive(Debug)]
struct Rule {
    field: Field,
    context: Context,
    test: Test,
}

/// A parsed `condition` block.
#[derive(Debug)]
pub struct Condition {
    op: Op,
    rules: Vec<Rule>,
}

/// The keys of a condition block (routes add `default`).
const CONDITION_KEYS: &[&str] = &["op", "rules"];
/// The keys of one rule.
const RULE_KEYS: &[&str] = &["field", "op", "value", "context"];
const OPS: &str = "eq, neq, gt, lt, gte, lte, regex, not_regex, in, not_in";

fn err(span: &Span, key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::key(span, key, reason)
}

/// A scalar's text, or an error naming `key`.
pub(crate) fn scalar<'a>(span: &Span, key: &str, v: &'a Tree) -> Result<&'a str, ConfigError> {
    v.as_str()
        .ok_or_else(|| err(span, key, format!("expected a value, found {}", v.what())))
}

/// Checks that every key of the map `v` is one of `known`.
pub(crate) fn known_keys(v: &Tree, what: &str, known: &[&str]) -> Result<(), ConfigError> {
    if let Tree::Map { pairs, .. } = v {
        for (k, span, _) in pairs {
            if !known.iter().any(|n| n.eq_ignore_ascii_case(k)) {
                return Err(ConfigError::unknown_key(
                    span,
                    k,
                    what,
                    known.iter().copied(),
                ));
            }
        }
    }
    Ok(())
}

impl Condition {
    /// Parses a condition block; `extra` are keys the caller reads itself (a route's
    /// `default`). Rules that logferry evaluates against no data add a note to `notes`.
    pub fn parse(
        key_span: &Span,
        v: &Tree,
        extra: &[&str],
        notes: &mut Vec<ConfigError>,
    ) -> Result<Condition, ConfigError> {
        if !matches!(v, Tree::Map { .. }) {
            return Err(err(
                key_span,
                "condition",
                format!("expected a map of op and rules, found {}", v.what()),
            ));
        }
        let known: Vec<&str> = CONDITION_KEYS.iter().chain(extra).copied().collect();
        known_keys(v, "a condition", &known)?;
        let op = match v.get("op") {
            None => Op::And,
            Some((s, t)) => match scalar(s, "op", t)?.to_ascii_lowercase().as_str() {
                "and" => Op::And,
                "or" => Op::Or,
                other => {
                    return Err(err(
                        s,
                        "op",
                        format!("expected 'and' or 'or', got '{other}'"),
                    ))
                }
            },
        };
        let Some((rspan, rules_tree)) = v.get("rules") else {
            return Err(err(
                key_span,
                "condition",
                "a condition needs a non-empty 'rules' list",
            ));
        };
        let Tree::Seq { items, .. } = rules_tree else {
            return Err(err(
                rspan,
                "rules",
                format!("expected a list of rules, found {}", rules_tree.what()),
            ));
        };
        if items.is_empty() {
            return Err(err(rspan, "rules", "a condition needs at least one rule"));
        }
        let rules = items
            .iter()
            .map(|i| Rule::parse(i, notes))
            .collect::<Result<_, _>>()?;
        Ok(Condition { op, rules })
    }

    /// Whether `record` meets the condition.
    pub fn matches(&self, record: &Record) -> bool {
        for rule in &self.rules {
            let Some(result) = rule.eval(&record.body) else {
                // No data for the rule's context.
                if self.op == Op::And {
                    return false;
                }
                continue;
            };
            match (self.op, result) {
                (Op::And, false) => return false,
                (Op::Or, true) => return true,
                _ => {}
            }
        }
        self.op == Op::And
    }
}

impl Rule {
    fn parse(item: &Tree, notes: &mut Vec<ConfigError>) -> Result<Rule, ConfigError> {
        let span = item.span();
        if !matches!(item, Tree::Map { .. }) {
            return Err(err(
                span,
                "rules",
                format!(
                    "expected a map of field, op and value, found {}",
                    item.what()
                ),
            ));
        }
        known_keys(item, "a condition rule", RULE_KEYS)?;
        let need = |k: &str| {
            item.get(k)
                .ok_or_else(|| err(span, "rules", format!("a rule needs '{k}'")))
        };
        let (fspan, ftree) = need("field")?;
        let field_text = scalar(fspan, "field", ftree)?;
        let field = if field_text.starts_with('$') {
            Field::Accessor(RecordAccessor::parse(field_text).map_err(|r| err(fspan, "field", r))?)
        } else {
            notes.push(err(
                fspan,
                "field",
                format!("'{field_text}' has no '$', so it is compared as the literal text (as Fluent Bit does); write '${field_text}' to read the record's key"),
            ));
            Field::Literal(field_text.to_string())
        };
        let context = match item.get("context") {
            None => Context::Body,
            Some((cs, ct)) => {
                let c = scalar(cs, "context", ct)?.to_ascii_lowercase();
                match c.as_str() {
                    "body" | "record" | "message" | "record_body" => Context::Body,
                    "metadata" | "record_metadata" | "attributes" => {
                        notes.push(err(cs, "context", format!("accepted but not applied: logferry's records carry no metadata, so '{c}' is always empty")));
                        Context::Metadata
                    }
                    "group_metadata" | "group_attributes" | "group_body"
                    | "otel_resource_attributes" | "otel_scope_attributes"
                    | "otel_scope_name" | "otel_scope_version" | "otel_scope_metadata" => {
                        notes.push(err(cs, "context", format!("accepted but not applied: logferry's records have no OpenTelemetry groups, so a rule on '{c}' never holds")));
                        Context::Absent
                    }
                    other => {
                        return Err(err(
                            cs,
                            "context",
                            format!("unknown context '{other}' (expected body, metadata, group_metadata, group_attributes, otel_resource_attributes, otel_scope_attributes or otel_scope_metadata)"),
                        ))
                    }
                }
            }
        };
        let (ospan, otree) = need("op")?;
        let op = scalar(ospan, "op", otree)?.to_ascii_lowercase();
        let (vspan, vtree) = need("value")?;
        let text = |what: &str| -> Result<String, ConfigError> {
            match vtree {
                Tree::Scalar { text, .. } if !text.is_empty() => Ok(text.clone()),
                _ => Err(err(
                    vspan,
                    "value",
                    format!("'{op}' needs {what}, found {}", vtree.what()),
                )),
            }
        };
        let number = || -> Result<f64, ConfigError> {
            let t = text("a number")?;
            t.trim()
                .parse::<f64>()
                .map_err(|_| err(vspan, "value", format!("'{op}' needs a number, got '{t}'")))
        };
        let list = || -> Result<Vec<String>, ConfigError> {
            match vtree {
                Tree::Seq { items, .. } if !items.is_empty() => items
                    .iter()
                    .map(|i| {
                        i.as_str()
                            .map(str::to_string)
                            .ok_or_else(|| err(i.span(), "value", "list items must be values"))
                    })
                    .collect(),
                _ => Err(err(
                    vspan,
                    "value",
                    format!("'{op}' needs a non-empty list, found {}", vtree.what()),
                )),
            }
        };
        let regex = || -> Result<Regex, ConfigError> {
            logferry_core::fb_regex::compile(&text("a regular expression")?)
                .map_err(|r| err(vspan, "value", r))
        };
        let test = match op.as_str() {
            "eq" => Test::Eq(text("a value")?),
            "neq" => Test::Neq(text("a value")?),
            "gt" => Test::Gt(number()?),
            "lt" => Test::Lt(number()?),
            "gte" => Test::Gte(number()?),
            "lte" => Test::Lte(number()?),
            "regex" => Test::Regex(regex()?),
            "not_regex" => Test::NotRegex(regex()?),
            "in" => Test::In(list()?),
            "not_in" => Test::NotIn(list()?),
            other => {
                return Err(err(
                    ospan,
                    "op",
                    format!("unknown operator '{other}' (expected one of {OPS})"),
                ))
            }
        };
        Ok(Rule {
            field,
            context,
            test,
        })
    }

    /// The rule's outcome, or `None` when its context has no data.
    fn eval(&self, body: &Map) -> Option<bool> {
        let empty = Map::new();
        let map = match self.context {
            Context::Body => body,
            Context::Metadata => &empty,
            Context::Absent => return None,
        };
        let text = match &self.field {
            Field::Literal(t) => std::borrow::Cow::Borrowed(t.as_str()),
            Field::Accessor(ra) => match ra.get(map) {
                None => std::borrow::Cow::Borrowed(""),
                Some(v) => match as_text(v) {
                    Some(t) => t,
                    None => return Some(false),
                },
            },
        };
        let t: &str = &text;
        Some(match &self.test {
            Test::Eq(v) => t == v,
            Test::Neq(v) => t != v,
            Test::Gt(n) => atof(t) > *n,
            Test::Lt(n) => atof(t) < *n,
            Test::Gte(n) => atof(t) >= *n,
            Test::Lte(n) => atof(t) <= *n,
            Test::Regex(r) => r.is_match(t),
            Test::NotRegex(r) => !r.is_match(t),
            Test::In(vs) => vs.iter().any(|v| v == t),
            Test::NotIn(vs) => !vs.iter().any(|v| v == t),
        })
    }
}

/// A value as Fluent Bit's record accessor writes it into text; `None` for arrays, which it
/// cannot translate.
fn as_text(v: &Value) -> Option<std::borrow::Cow<'_, str>> {
    use std::borrow::Cow;
    Some(match v {
        Value::Str(s) => Cow::Borrowed(s.as_str()),
        Value::Int(i) => Cow::Owned(i.to_string()),
        Value::UInt(u) => Cow::Owned(u.to_string()),
        Value::Float(f) => Cow::Owned(format!("{f:.6}")),
        Value::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
        Value::Null => Cow::Borrowed("null"),
        Value::Map(_) | Value::SharedMap(_) => {
            Cow::Owned(serde_json::to_string(v).unwrap_or_default())
        }
        Value::Array(_) => return None,
    })
}

/// C's `atof`: the number at the start of the text (after spaces), 0 when there is none.
fn atof(s: &str) -> f64 {
    let s = s.trim_start();
    let b = s.as_bytes();
    let mut end = 0;
    if end < b.len() && (b[end] == b'+' || b[end] == b'-') {
        end += 1;
    }
    let digits_start = end;
    while end < b.len() && b[end].is_ascii_digit() {
        end += 1;
    }
    if end < b.len() && b[end] == b'.' {
        end += 1;
        while end < b.len() && b[end].is_ascii_digit() {
            end += 1;
        }
    }
    if end == digits_start || (end == digits_start + 1 && b[digits_start] == b'.') {
        return 0.0;
    }
    let mut num_end = end;
    if end < b.len() && (b[end] == b'e' || b[end] == b'E') {
        let mut e = end + 1;
        if e < b.len() && (b[e] == b'+' || b[e] == b'-') {
            e += 1;
        }
        if e < b.len() && b[e].is_ascii_digit() {
            while e < b.len() && b[e].is_ascii_digit() {
                e += 1;
            }
            num_end = e;
        }
    }
    s[..num_end].parse().unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use logferry_core::config::{Section, SectionKind, Vars};
    use std::path::Path;

    fn cond(yaml: &str) -> Result<(Condition, Vec<ConfigError>), ConfigError> {
        let text = format!("pipeline:\n  inputs:\n    - name: dummy\n      routes:\n{yaml}");
        let sections: Vec<Section> =
            logferry_core::config::yaml::parse(&text, Path::new("/c.yaml"), &mut Vars::empty())?;
        let s = sections
            .iter()
            .find(|s| s.kind == SectionKind::Input)
            .expect("input");
        let n = s.nested("routes").expect("routes");
        let mut notes = Vec::new();
        let c = Condition::parse(&n.span, &n.value, &[], &mut notes)?;
        Ok((c, notes))
    }

    fn rec(json: &str) -> Record {
        let Value::Map(m) = Value::from_json(serde_json::from_str(json).expect("json")) else {
            panic!("not a map")
        };
        Record::new(logferry_core::EventTime::default(), m)
    }

    #[test]
    fn operators_compare_as_fluent_bit_does() {
        let (c, _) = cond(
            "        op: and\n        rules:\n          - {field: $level, op: eq, value: error}\n          - {field: $ms, op: gt, value: 5000}\n          - {field: $svc, op: in, value: [a, b]}\n",
        )
        .expect("parse");
        assert!(c.matches(&rec(r#"{"level":"error","ms":"5001.5x","svc":"b"}"#)));
        assert!(!c.matches(&rec(r#"{"level":"error","ms":5000,"svc":"b"}"#)));
        assert!(!c.matches(&rec(r#"{"level":"error","ms":9000,"svc":"c"}"#)));
        let (c, _) = cond(
            "        op: or\n        rules:\n          - {field: $a, op: neq, value: x}\n          - {field: \"$m['k']\", op: regex, value: '^v\\d$'}\n",
        )
        .expect("parse");
        // A missing field reads as empty text, so `neq x` holds.
        assert!(c.matches(&rec(r#"{"z":1}"#)));
        assert!(c.matches(&rec(r#"{"a":"x","m":{"k":"v1"}}"#)));
        assert!(!c.matches(&rec(r#"{"a":"x","m":{"k":"w"}}"#)));
        let (c, _) = cond("        rules:\n          - {field: $f, op: eq, value: '1.500000'}\n          - {field: $b, op: eq, value: 'true'}\n").expect("parse");
        assert!(c.matches(&rec(r#"{"f":1.5,"b":true}"#)));
    }

    #[test]
    fn contexts_without_data_are_noted_and_skipped_under_or() {
        let (c, notes) = cond("        op: or\n        rules:\n          - {field: $a, op: eq, value: x, context: otel_resource_attributes}\n          - {field: $b, op: eq, value: y}\n").expect("parse");
        assert_eq!(notes.len(), 1);
        assert!(notes[0]
            .to_string()
            .starts_with("/c.yaml:7: context: accepted but not applied"));
        assert!(c.matches(&rec(r#"{"a":"x","b":"y"}"#)));
        assert!(!c.matches(&rec(r#"{"a":"x","b":"n"}"#)));
    }

    #[test]
    fn mistakes_name_file_line_and_key() {
        let e = |y: &str| cond(y).err().map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(
            e("        rules:\n          - {field: $a, op: like, value: x}\n"),
            "/c.yaml:6: op: unknown operator 'like' (expected one of eq, neq, gt, lt, gte, lte, regex, not_regex, in, not_in)"
        );
        assert!(
            e("        rules:\n          - {field: $a, op: gt, value: big}\n")
                .starts_with("/c.yaml:6: value: 'gt' needs a number")
        );
        assert!(
            e("        rules:\n          - {field: $a, op: in, value: x}\n")
                .starts_with("/c.yaml:6: value: 'in' needs a non-empty list")
        );
        assert!(
            e("        rules:\n          - {field: $a, opp: eq, value: x}\n").starts_with(
                "/c.yaml:6: opp: unknown key for a condition rule (did you mean 'op'?)"
            )
        );
        assert!(e("        op: xor\n        rules: []\n")
            .starts_with("/c.yaml:5: op: expected 'and' or 'or'"));
    }

    #[test]
    fn atof_reads_a_leading_number() {
        assert_eq!(atof("12.5ms"), 12.5);
        assert_eq!(atof(""), 0.0);
        assert_eq!(atof("x1"), 0.0);
        assert_eq!(atof(" -3e2z"), -300.0);
        assert_eq!(atof("7e"), 7.0);
    }
}
