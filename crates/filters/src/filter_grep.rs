//! `grep` filter: keeps or drops records whose values match regular expressions (Fluent Bit's
//! `filter_grep` with `src/flb_grep.c`).
//!
//! Options, as documented: `Regex KEY REGEX` keeps records whose `KEY` matches, `Exclude KEY
//! REGEX` drops them (both repeatable), and `Logical_Op` (`legacy`, `AND`, `OR`; default
//! `legacy`) says how several rules combine. `KEY` is a record accessor
//! (`$kubernetes['labels']['app']`); a key written without `$` gets one prepended.
//!
//! Where the docs are silent this follows Fluent Bit's code:
//! - The value splits at the first space after the key; everything after that single space is
//!   the regex, spaces included (`Exclude log foo bar` matches `foo bar`). There is no quoting.
//! - `legacy` walks the rules in the order written: an `Exclude` that matches drops the record;
//!   a `Regex` that does not match drops it, and a `Regex` that matches *keeps it at once*,
//!   without looking at later rules (the docs: "the Exclude must be first and you can have
//!   only one Regex"). A record no rule decided is kept.
//! - `AND` / `OR` need all rules to be of one kind (mixing `Regex` and `Exclude` is an error, as
//!   in Fluent Bit); `AND` matches when every rule matches, `OR` when any does; the record is
//!   then kept (`Regex`) or dropped (`Exclude`).
//! - Only string values match. A number, boolean, map, array or null never matches, nor does a
//!   missing key (`flb_ra_key_regex_match` returns no-match for non-strings; see Fluent Bit
//!   issues #4004 and #6284). So `Regex status ^200$` drops a record whose `status` is the
//!   number 200.
//! - Patterns use Fluent Bit's dialect (see [`crate::syntax::regex()`]); `Logical_Op` is read
//!   case-insensitively. Fluent Bit silently treats an unknown `Logical_Op` as `legacy`; here it
//!   is a config error.

use async_trait::async_trait;
use logferry_core::config::{ConfigError, Entry, Section};
use logferry_core::{options, Map, Record};
use logferry_engine::{BuildContext, Filter, FilterPlugin};
use regex::Regex;

use crate::record_accessor::RecordAccessor;
use crate::syntax;

options! {
    /// Options of the `grep` filter.
    pub struct GrepOptions for "grep filter" {
        /// `KEY REGEX`: keep records whose KEY matches the regular expression (repeatable).
        pub regex: Vec<String> = ["Regex"] None,
        /// `KEY REGEX`: drop records whose KEY matches the regular expression (repeatable).
        pub exclude: Vec<String> = ["Exclude"] None,
        /// How several rules combine: `legacy`, `AND` or `OR`.
        pub logical_op: String = ["Logical_Op"] Some("legacy"),
    }
}

/// The registry entry.
pub static PLUGIN: FilterPlugin = FilterPlugin {
    name: "grep",
    aliases: &[],
    description: "grep events by specified field values",
    options: GrepOptions::OPTIONS,
    default_workers: 0,
    build,
};

/// How the rules combine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LogicalOp {
    Legacy,
    And,
    Or,
}

/// Whether a rule keeps or drops what it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Regex,
    Exclude,
}

#[derive(Clone, Debug)]
struct Rule {
    kind: Kind,
    key: RecordAccessor,
    regex: Regex,
}

impl Rule {
    /// Whether the value at the key is a string that matches.
    fn matches(&self, body: &Map) -> bool {
        self.key
            .get_str(body)
            .is_some_and(|s| self.regex.is_match(s))
    }
}

fn build(
    ctx: &BuildContext,
    section: &Section,
    entries: &[&Entry],
) -> Result<Box<dyn Filter>, ConfigError> {
    let opts = GrepOptions::from_entries(&section.span, entries, &[])?;
    let op_span = entries
        .iter()
        .rev()
        .find(|e| e.key.eq_ignore_ascii_case("Logical_Op"))
        .map_or(&section.span, |e| &e.span);
    let op = match opts.logical_op.trim().to_ascii_lowercase().as_str() {
        "legacy" => LogicalOp::Legacy,
        "and" => LogicalOp::And,
        "or" => LogicalOp::Or,
        other => {
            return Err(ConfigError::key(
                op_span,
                "Logical_Op",
                format!("expected 'legacy', 'AND' or 'OR', got '{other}'"),
            ))
        }
    };

    let mut rules = Vec::with_capacity(opts.regex.len() + opts.exclude.len());
    for e in entries {
        let kind = if e.key.eq_ignore_ascii_case("Regex") {
            Kind::Regex
        } else if e.key.eq_ignore_ascii_case("Exclude") {
            Kind::Exclude
        } else {
            continue;
        };
        if op != LogicalOp::Legacy && rules.first().is_some_and(|r: &Rule| r.kind != kind) {
            return Err(ConfigError::key(
                &e.span,
                &e.key,
                "Regex and Exclude cannot be mixed when Logical_Op is AND or OR",
            ));
        }
        let Some((key, pattern)) = syntax::split_key_rest(&e.value) else {
            return Err(ConfigError::key(
                &e.span,
                &e.key,
                format!(
                    "expected 'KEY REGEX' separated by a space, got '{}'",
                    e.value
                ),
            ));
        };
        let key = if key.starts_with('$') {
            RecordAccessor::parse(key)
        } else {
            RecordAccessor::parse(&format!("${key}"))
        }
        .map_err(|r| ConfigError::key(&e.span, &e.key, r))?;
        if let Some(rest) = key.ignored_suffix() {
            ctx.note(
                e,
                format!(
                    "record accessor reads the key '{}' only; Fluent Bit ignores '{rest}' here",
                    key.key()
                ),
            );
        }
        let regex = syntax::regex(pattern).map_err(|r| ConfigError::key(&e.span, &e.key, r))?;
        rules.push(Rule { kind, key, regex });
    }
    Ok(Box::new(GrepFilter { op, rules }))
}

/// The running filter.
#[derive(Clone, Debug)]
pub struct GrepFilter {
    op: LogicalOp,
    rules: Vec<Rule>,
}

impl GrepFilter {
    /// Whether `body` passes.
    fn keep(&self, body: &Map) -> bool {
        let Some(first) = self.rules.first() else {
            return true;
        };
        match self.op {
            LogicalOp::Legacy => {
                for rule in &self.rules {
                    match (rule.kind, rule.matches(body)) {
                        (Kind::Regex, false) | (Kind::Exclude, true) => return false,
                        (Kind::Regex, true) => return true,
                        (Kind::Exclude, false) => {}
                    }
                }
                true
            }
            LogicalOp::And | LogicalOp::Or => {
                let found = if self.op == LogicalOp::And {
                    self.rules.iter().all(|r| r.matches(body))
                } else {
                    self.rules.iter().any(|r| r.matches(body))
                };
                (first.kind == Kind::Regex) == found
            }
        }
    }
}

#[async_trait]
impl Filter for GrepFilter {
    /// Its state is its configuration: any number of copies filter alike.
    fn fork(&self) -> Option<Box<dyn Filter>> {
        Some(Box::new(self.clone()))
    }
    async fn filter(&mut self, _tag: &str, records: &mut Vec<Record>) {
        if !self.rules.is_empty() {
            records.retain(|r| self.keep(&r.body));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::PLUGIN;
    use crate::testing;

    fn check(entries: &[(&str, &str)], input: &str, expected: &str) {
        testing::check(&PLUGIN, entries, input, expected);
    }

    /// The `lines.txt` of the docs' "Filter records" example.
    const LINES: &str = r#"[{"log": "aaa"}, {"log": "aab"}, {"log": "bbb"}, {"log": "ccc"},
        {"log": "ddd"}, {"log": "eee"}, {"log": "fff"}, {"log": "ggg"}]"#;

    /// The record of the docs' "Nested fields example".
    const K8S: &str = r#"{"log": "something", "kubernetes": {"pod_name": "myapp-0",
        "namespace_name": "default", "pod_id": "216cd7ae-1c7e-11e8-bb40-000c298df552",
        "labels": {"app": "myapp"}, "host": "minikube", "container_name": "myapp",
        "docker_id": "370face382c7603fdd309d8c6aaaf434fd98b92421ce"}}"#;

    #[test]
    fn doc_example_regex_log_aa() {
        // Docs, "Filter records": `regex log aa` passes only values starting with "aa".
        check(
            &[("Regex", "log aa")],
            LINES,
            r#"[{"log": "aaa"}, {"log": "aab"}]"#,
        );
    }

    #[test]
    fn doc_example_nested_exclude() {
        // Docs, "Nested fields example": `Exclude $kubernetes['labels']['app'] myapp`.
        check(
            &[("Exclude", "$kubernetes['labels']['app'] myapp")],
            K8S,
            "[]",
        );
        let other = K8S.replace(r#""app": "myapp""#, r#""app": "other""#);
        check(
            &[("Exclude", "$kubernetes['labels']['app'] myapp")],
            &other,
            &other,
        );
    }

    #[test]
    fn doc_example_missing_or_invalid_fields() {
        // Docs, "Excluding records with missing or invalid fields".
        check(
            &[("Regex", r"iot_timestamp ^\d{4}-\d{2}-\d{2}")],
            r#"[{"iot_timestamp": "2024-01-02T00:00:00"}, {"iot_timestamp": "bad"},
                {"iot_timestamp": ""}, {"other": 1}]"#,
            r#"[{"iot_timestamp": "2024-01-02T00:00:00"}]"#,
        );
    }

    #[test]
    fn doc_example_logical_op_or() {
        // Docs, "Multiple conditions": `Logical_Op or` with two Regex on `value`.
        let cfg = [
            ("Logical_Op", "or"),
            ("Regex", "value something"),
            ("Regex", "value error"),
        ];
        check(
            &cfg,
            r#"[{"endpoint":"localhost", "value":"something"}, {"endpoint":"localhost", "value":"error"},
                {"endpoint":"localhost", "value":"other"}]"#,
            r#"[{"endpoint":"localhost", "value":"something"}, {"endpoint":"localhost", "value":"error"}]"#,
        );
    }

    #[test]
    fn logical_op_and_with_regex_and_exclude() {
        let input = r#"[{"a": "x", "b": "y"}, {"a": "x", "b": "n"}, {"a": "n", "b": "n"}]"#;
        check(
            &[("Logical_Op", "AND"), ("Regex", "a x"), ("Regex", "b y")],
            input,
            r#"[{"a": "x", "b": "y"}]"#,
        );
        // AND with Exclude drops only records where every rule matches.
        check(
            &[
                ("Logical_Op", "and"),
                ("Exclude", "a x"),
                ("Exclude", "b y"),
            ],
            input,
            r#"[{"a": "x", "b": "n"}, {"a": "n", "b": "n"}]"#,
        );
        // OR with Exclude drops records where any rule matches.
        check(
            &[("Logical_Op", "Or"), ("Exclude", "a x"), ("Exclude", "b y")],
            input,
            r#"[{"a": "n", "b": "n"}]"#,
        );
    }

    #[test]
    fn legacy_walks_rules_in_order() {
        let input = r#"[{"log": "aa", "lvl": "debug"}, {"log": "aa", "lvl": "info"}, {"log": "bb", "lvl": "info"}]"#;
        // Excludes first (any match drops), then the one Regex decides.
        check(
            &[("Exclude", "lvl debug"), ("Regex", "log aa")],
            input,
            r#"[{"log": "aa", "lvl": "info"}]"#,
        );
        // A matching Regex keeps the record at once: the later Exclude is never looked at.
        check(
            &[("Regex", "log aa"), ("Exclude", "lvl debug")],
            input,
            r#"[{"log": "aa", "lvl": "debug"}, {"log": "aa", "lvl": "info"}]"#,
        );
        // Several Excludes: any match drops (OR).
        check(
            &[("Exclude", "lvl debug"), ("Exclude", "log bb")],
            input,
            r#"[{"log": "aa", "lvl": "info"}]"#,
        );
        // `legacy` is the default and may be written in any case.
        let expected = r#"[{"log": "aa", "lvl": "info"}, {"log": "bb", "lvl": "info"}]"#;
        check(&[("Exclude", "lvl debug")], input, expected);
        check(
            &[("Logical_Op", "LEGACY"), ("Exclude", "lvl debug")],
            input,
            expected,
        );
    }

    #[test]
    fn only_strings_match_and_missing_keys_do_not() {
        let input = r#"[{"status": 200}, {"status": "200"}, {"status": true}, {"status": null},
            {"status": {"code": "200"}}, {"status": ["200"]}, {"other": "200"}]"#;
        check(&[("Regex", "status 200")], input, r#"[{"status": "200"}]"#);
        check(
            &[("Exclude", "status 200")],
            input,
            r#"[{"status": 200}, {"status": true}, {"status": null}, {"status": {"code": "200"}},
                {"status": ["200"]}, {"other": "200"}]"#,
        );
    }

    #[test]
    fn regex_takes_everything_after_the_first_space() {
        let input = r#"[{"log": "foo bar"}, {"log": "foo"}, {"log": " x"}, {"log": "x"}]"#;
        check(
            &[("Exclude", "log foo bar")],
            input,
            r#"[{"log": "foo"}, {"log": " x"}, {"log": "x"}]"#,
        );
        // Two spaces: the regex is " x" (with its space), as Fluent Bit splits.
        check(&[("Regex", "log  x")], input, r#"[{"log": " x"}]"#);
    }

    #[test]
    fn array_index_and_slash_delimited_regex() {
        check(
            &[("Regex", "$items[1] /^b$/")],
            r#"[{"items": ["a", "b"]}, {"items": ["b", "a"]}, {"items": ["b"]}]"#,
            r#"[{"items": ["a", "b"]}]"#,
        );
    }

    #[test]
    fn no_rules_keeps_everything() {
        check(&[], r#"[{"a": 1}, {"b": 2}]"#, r#"[{"a": 1}, {"b": 2}]"#);
    }

    #[test]
    fn config_errors_name_file_line_and_key() {
        testing::check_err(
            &PLUGIN,
            &[("Regex", "log (")],
            2,
            "Regex",
            "invalid regular expression '('",
        );
        testing::check_err(
            &PLUGIN,
            &[("Regex", "log a"), ("Exclude", "onlykey")],
            3,
            "Exclude",
            "expected 'KEY REGEX'",
        );
        testing::check_err(
            &PLUGIN,
            &[
                ("Logical_Op", "AND"),
                ("Regex", "log a"),
                ("Exclude", "log b"),
            ],
            4,
            "Exclude",
            "cannot be mixed",
        );
        testing::check_err(
            &PLUGIN,
            &[("Logical_Op", "XOR")],
            2,
            "Logical_Op",
            "expected 'legacy', 'AND' or 'OR'",
        );
        testing::check_err(
            &PLUGIN,
            &[("Regex", "$a['b' x")],
            2,
            "Regex",
            "record accessor",
        );
        testing::check_err(
            &PLUGIN,
            &[("Regexx", "log a")],
            2,
            "Regexx",
            "unknown key for grep filter (did you mean 'Regex'?)",
        );
    }

    #[test]
    fn mixing_is_fine_in_legacy() {
        check(
            &[("Regex", "a x"), ("Exclude", "b y")],
            r#"[{"a": "x"}]"#,
            r#"[{"a": "x"}]"#,
        );
    }
}
