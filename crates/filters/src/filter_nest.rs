//! `nest` filter: moves top-level keys into a map (`nest`) or a map's keys up to the top level
//! (`lift`), optionally adding or removing a key prefix (Fluent Bit's `filter_nest`).
//!
//! As documented: `Operation` is `nest` or `lift`; `Wildcard` (repeatable) selects the keys to
//! nest, exactly or, with a trailing `*`, by prefix; `Nest_under` names the new map;
//! `Nested_under` names the map to lift; `Add_prefix` / `Remove_prefix` change the affected
//! keys (the nested ones, or the lifted ones).
//!
//! Where the docs are silent this follows Fluent Bit's `nest.c`:
//! - `nest` keeps the other keys in order and appends the new map last; the nested keys keep
//!   their order. A record with no matching key is left alone (no empty map is added). When the
//!   record already has a key named like `Nest_under` that no wildcard selects, the new map is
//!   appended anyway and the record has that key twice, as Fluent Bit writes it.
//! - `lift` removes every top-level pair named `Nested_under` whose value is a map and appends
//!   that map's pairs last (so the docs' "Example usage for lift", which shows them first, is
//!   only illustrative). A pair of that name holding anything else stays. Lifted keys are not
//!   merged with existing top-level keys of the same name.
//! - `Remove_prefix` only changes keys that start with the prefix; `Add_prefix` and
//!   `Remove_prefix` together are an error.
//! - Errors found at start-up: a missing or unknown `Operation` (read case-insensitively here;
//!   Fluent Bit wants lower case), and `Add_prefix` with `Remove_prefix`. Fluent Bit does not
//!   check that `nest` has `Nest_under` or that `lift` has `Nested_under` (it then writes or
//!   matches an empty key); both are errors here. A `nest` without `Wildcard` changes nothing
//!   and is logged as a warning.

use async_trait::async_trait;
use logferry_core::config::{ConfigError, Entry, Section};
use logferry_core::{options, Map, Record, Str, Value};
use logferry_engine::{BuildContext, Filter, FilterPlugin};

options! {
    /// Options of the `nest` filter.
    pub struct NestOptions for "nest filter" {
        /// `nest` (move keys into a map) or `lift` (move a map's keys up).
        pub operation: String = ["Operation"] None,
        /// Keys to nest: exact, or a prefix ending in `*` (repeatable).
        pub wildcard: Vec<String> = ["Wildcard"] None,
        /// The key of the new map (`nest`).
        pub nest_under: Option<String> = ["Nest_under"] None,
        /// The key of the map to lift (`lift`).
        pub nested_under: Option<String> = ["Nested_under"] None,
        /// Prefix added to the affected keys.
        pub add_prefix: Option<String> = ["Add_prefix"] None,
        /// Prefix removed from the affected keys that start with it.
        pub remove_prefix: Option<String> = ["Remove_prefix"] None,
    }
}

/// The registry entry.
pub static PLUGIN: FilterPlugin = FilterPlugin {
    name: "nest",
    aliases: &[],
    description: "nest events by specified field values",
    options: NestOptions::OPTIONS,
    default_workers: 0,
    build,
};

/// One `Wildcard`.
#[derive(Clone, Debug)]
struct Wildcard {
    text: Str,
    prefix: bool,
}

impl Wildcard {
    fn matches(&self, key: &str) -> bool {
        if self.prefix {
            key.starts_with(self.text.as_str())
        } else {
            key == self.text
        }
    }
}

/// How affected keys are renamed.
#[derive(Clone, Debug)]
enum Prefix {
    None,
    Add(Str),
    Remove(Str),
}

impl Prefix {
    fn apply(&self, key: Str) -> Str {
        match self {
            Prefix::None => key,
            Prefix::Add(p) => {
                let mut s = Str::with_capacity(p.len() + key.len());
                s.push_str(p);
                s.push_str(&key);
                s
            }
            Prefix::Remove(p) => match key.strip_prefix(p.as_str()) {
                Some(rest) => Str::from(rest),
                None => key,
            },
        }
    }
}

#[derive(Clone, Debug)]
enum Operation {
    Nest {
        wildcards: Vec<Wildcard>,
        under: Str,
    },
    Lift {
        under: Str,
    },
}

/// The last entry for `key`, for error spans.
fn span_of<'a>(
    section: &'a Section,
    entries: &'a [&Entry],
    key: &str,
) -> &'a logferry_core::config::Span {
    entries
        .iter()
        .rev()
        .find(|e| e.key.eq_ignore_ascii_case(key))
        .map_or(&section.span, |e| &e.span)
}

fn build(
    ctx: &BuildContext,
    section: &Section,
    entries: &[&Entry],
) -> Result<Box<dyn Filter>, ConfigError> {
    let opts = NestOptions::from_entries(&section.span, entries, &[])?;
    let prefix = match (opts.add_prefix, opts.remove_prefix) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::key(
                span_of(section, entries, "Remove_prefix"),
                "Remove_prefix",
                "Add_prefix and Remove_prefix are exclusive",
            ))
        }
        (Some(p), None) => Prefix::Add(Str::from(p)),
        (None, Some(p)) => Prefix::Remove(Str::from(p)),
        (None, None) => Prefix::None,
    };
    let op_span = span_of(section, entries, "Operation");
    let operation = match opts.operation.trim().to_ascii_lowercase().as_str() {
        "nest" => {
            let Some(under) = opts.nest_under.filter(|s| !s.is_empty()) else {
                return Err(ConfigError::key(
                    op_span,
                    "Nest_under",
                    "operation 'nest' needs Nest_under",
                ));
            };
            if opts.wildcard.is_empty() {
                ctx.note_at(
                    &section.span,
                    "nest filter without Wildcard changes nothing",
                );
            }
            let wildcards = opts
                .wildcard
                .iter()
                .map(|w| match w.strip_suffix('*') {
                    Some(p) => Wildcard {
                        text: Str::from(p),
                        prefix: true,
                    },
                    None => Wildcard {
                        text: Str::from(w.as_str()),
                        prefix: false,
                    },
                })
                .collect();
            Operation::Nest {
                wildcards,
                under: Str::from(under),
            }
        }
        "lift" => {
            let Some(under) = opts.nested_under.filter(|s| !s.is_empty()) else {
                return Err(ConfigError::key(
                    op_span,
                    "Nested_under",
                    "operation 'lift' needs Nested_under",
                ));
            };
            Operation::Lift {
                under: Str::from(under),
            }
        }
        other => {
            return Err(ConfigError::key(
                op_span,
                "Operation",
                format!("expected 'nest' or 'lift', got '{other}'"),
            ))
        }
    };
    Ok(Box::new(NestFilter { operation, prefix }))
}

/// The running filter.
#[derive(Clone, Debug)]
pub struct NestFilter {
    operation: Operation,
    prefix: Prefix,
}

impl NestFilter {
    fn nest(&self, body: &mut Map, wildcards: &[Wildcard], under: &Str) {
        let selected = |k: &str| wildcards.iter().any(|w| w.matches(k));
        if !body.0.iter().any(|(k, _)| selected(k)) {
            return;
        }
        let pairs = std::mem::take(&mut body.0);
        let mut nested = Map::new();
        body.0.reserve(pairs.len());
        for (k, v) in pairs {
            if selected(&k) {
                nested.0.push((self.prefix.apply(k), v));
            } else {
                body.0.push((k, v));
            }
        }
        body.0.push((under.clone(), Value::Map(nested)));
    }

    fn lift(&self, body: &mut Map, under: &Str) {
        let lifted = |k: &Str, v: &Value| k == under && v.is_map();
        if !body.0.iter().any(|(k, v)| lifted(k, v)) {
            return;
        }
        let pairs = std::mem::take(&mut body.0);
        let mut tail = Vec::new();
        for (k, v) in pairs {
            if k != *under {
                body.0.push((k, v));
                continue;
            }
            match v.into_map() {
                Ok(m) => tail.extend(m.0.into_iter().map(|(k, v)| (self.prefix.apply(k), v))),
                Err(v) => body.0.push((k, v)),
            }
        }
        body.0.extend(tail);
    }
}

#[async_trait]
impl Filter for NestFilter {
    /// Its state is its configuration: any number of copies filter alike.
    fn fork(&self) -> Option<Box<dyn Filter>> {
        Some(Box::new(self.clone()))
    }
    async fn filter(&mut self, _tag: &str, records: &mut Vec<Record>) {
        for r in records.iter_mut() {
            match &self.operation {
                Operation::Nest { wildcards, under } => self.nest(&mut r.body, wildcards, under),
                Operation::Lift { under } => self.lift(&mut r.body, under),
            }
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

    /// The `mem` record the docs' examples start from.
    const MEM: &str = r#"{"Mem.total": 4050908, "Mem.used": 714984, "Mem.free": 3335924,
        "Swap.total": 1046524, "Swap.used": 0, "Swap.free": 1046524}"#;

    /// Runs several filter configurations one after the other.
    fn chain(configs: &[&[(&str, &str)]], input: &str) -> String {
        let mut out = testing::normalize(input);
        for cfg in configs {
            let mut f = testing::build(&PLUGIN, cfg).unwrap();
            out = testing::run(f.as_mut(), &out);
        }
        out
    }

    #[test]
    fn doc_example_usage_nest() {
        // Docs, "Example usage for nest".
        check(
            &[
                ("Operation", "nest"),
                ("Wildcard", "Key*"),
                ("Nest_under", "NestKey"),
            ],
            r#"{"Key1": "Value1", "Key2": "Value2", "OtherKey": "Value3"}"#,
            r#"{"OtherKey": "Value3", "NestKey": {"Key1": "Value1", "Key2": "Value2"}}"#,
        );
    }

    #[test]
    fn doc_example_usage_lift() {
        // Docs, "Example usage for lift" (lifted keys are appended last, as Fluent Bit does).
        check(
            &[("Operation", "lift"), ("Nested_under", "NestKey")],
            r#"{"OtherKey": "Value3", "NestKey": {"Key1": "Value1", "Key2": "Value2"}}"#,
            r#"{"OtherKey": "Value3", "Key1": "Value1", "Key2": "Value2"}"#,
        );
    }

    #[test]
    fn doc_example_1_nest_with_remove_prefix() {
        // Docs, "Example 1 - nest".
        check(
            &[
                ("Operation", "nest"),
                ("Wildcard", "Mem.*"),
                ("Nest_under", "Memstats"),
                ("Remove_prefix", "Mem."),
            ],
            MEM,
            r#"{"Swap.total": 1046524, "Swap.used": 0, "Swap.free": 1046524,
                "Memstats": {"total": 4050908, "used": 714984, "free": 3335924}}"#,
        );
    }

    #[test]
    fn doc_example_2_nest_and_lift_undo() {
        // Docs, "Example 2 - nest and lift undo".
        let out = chain(
            &[
                &[
                    ("Operation", "nest"),
                    ("Wildcard", "Mem.*"),
                    ("Wildcard", "Swap.*"),
                    ("Nest_under", "Stats"),
                    ("Add_prefix", "NESTED"),
                ],
                &[
                    ("Operation", "lift"),
                    ("Nested_under", "Stats"),
                    ("Remove_prefix", "NESTED"),
                ],
            ],
            MEM,
        );
        assert_eq!(out, testing::normalize(MEM));
    }

    #[test]
    fn doc_example_3_nest_three_levels() {
        // Docs, "Example 3 - nest 3 levels deep".
        let out = chain(
            &[
                &[
                    ("Operation", "nest"),
                    ("Wildcard", "Mem.*"),
                    ("Nest_under", "LAYER1"),
                ],
                &[
                    ("Operation", "nest"),
                    ("Wildcard", "LAYER1*"),
                    ("Nest_under", "LAYER2"),
                ],
                &[
                    ("Operation", "nest"),
                    ("Wildcard", "LAYER2*"),
                    ("Nest_under", "LAYER3"),
                ],
            ],
            MEM,
        );
        assert_eq!(
            out,
            testing::normalize(
                r#"{"Swap.total": 1046524, "Swap.used": 0, "Swap.free": 1046524,
                    "LAYER3": {"LAYER2": {"LAYER1": {"Mem.total": 4050908, "Mem.used": 714984, "Mem.free": 3335924}}}}"#
            )
        );
    }

    #[test]
    fn doc_example_4_lift_with_prefixes() {
        // Docs, "Example 4 - multiple nest and lift filters with prefix".
        let out = chain(
            &[
                &[
                    ("Operation", "nest"),
                    ("Wildcard", "Mem.*"),
                    ("Nest_under", "LAYER1"),
                ],
                &[
                    ("Operation", "nest"),
                    ("Wildcard", "LAYER1*"),
                    ("Nest_under", "LAYER2"),
                ],
                &[
                    ("Operation", "nest"),
                    ("Wildcard", "LAYER2*"),
                    ("Nest_under", "LAYER3"),
                ],
                &[
                    ("Operation", "lift"),
                    ("Nested_under", "LAYER3"),
                    ("Add_prefix", "Lifted3_"),
                ],
                &[
                    ("Operation", "lift"),
                    ("Nested_under", "Lifted3_LAYER2"),
                    ("Add_prefix", "Lifted3_Lifted2_"),
                ],
                &[
                    ("Operation", "lift"),
                    ("Nested_under", "Lifted3_Lifted2_LAYER1"),
                    ("Add_prefix", "Lifted3_Lifted2_Lifted1_"),
                ],
            ],
            MEM,
        );
        assert_eq!(
            out,
            testing::normalize(
                r#"{"Swap.total": 1046524, "Swap.used": 0, "Swap.free": 1046524,
                    "Lifted3_Lifted2_Lifted1_Mem.total": 4050908, "Lifted3_Lifted2_Lifted1_Mem.used": 714984,
                    "Lifted3_Lifted2_Lifted1_Mem.free": 3335924}"#
            )
        );
    }

    #[test]
    fn exact_wildcards_and_several_of_them() {
        let input = r#"{"a": 1, "ab": 2, "b": 3, "c": 4}"#;
        check(
            &[
                ("Operation", "nest"),
                ("Wildcard", "a"),
                ("Wildcard", "c"),
                ("Nest_under", "n"),
            ],
            input,
            r#"{"ab": 2, "b": 3, "n": {"a": 1, "c": 4}}"#,
        );
        check(
            &[
                ("Operation", "nest"),
                ("Wildcard", "*"),
                ("Nest_under", "all"),
            ],
            input,
            r#"{"all": {"a": 1, "ab": 2, "b": 3, "c": 4}}"#,
        );
        check(
            &[
                ("Operation", "nest"),
                ("Wildcard", "zz*"),
                ("Nest_under", "n"),
            ],
            input,
            input,
        );
    }

    #[test]
    fn nest_under_an_existing_key_duplicates_it() {
        let mut f = testing::build(
            &PLUGIN,
            &[
                ("Operation", "nest"),
                ("Wildcard", "a"),
                ("Nest_under", "n"),
            ],
        )
        .unwrap();
        assert_eq!(
            testing::run(f.as_mut(), r#"{"n": 0, "a": 1}"#),
            r#"[{"n":0,"n":{"a":1}}]"#
        );
    }

    #[test]
    fn lift_details() {
        // Remove_prefix only touches keys that start with it; non-map values stay.
        check(
            &[
                ("Operation", "LIFT"),
                ("Nested_under", "n"),
                ("Remove_prefix", "p_"),
            ],
            r#"[{"x": 1, "n": {"p_a": 1, "b": 2}}, {"n": "not a map"}, {"other": 1}]"#,
            r#"[{"x": 1, "a": 1, "b": 2}, {"n": "not a map"}, {"other": 1}]"#,
        );
        // Lifted keys are appended even when the name exists already.
        let mut f =
            testing::build(&PLUGIN, &[("Operation", "lift"), ("Nested_under", "n")]).unwrap();
        assert_eq!(
            testing::run(f.as_mut(), r#"{"a": 0, "n": {"a": 1}}"#),
            r#"[{"a":0,"a":1}]"#
        );
    }

    /// The kubernetes filter's map is shared between records (`Value::SharedMap`); the usual
    /// `lift kubernetes` with `Add_prefix kubernetes_` must lift it like an owned map and leave
    /// the shared original as it was.
    #[test]
    fn lifts_a_shared_map() {
        use logferry_core::{EventTime, Map, Record, Value};
        use std::sync::Arc;
        let mut meta = Map::new();
        meta.push("pod_name", "p");
        meta.push("namespace_name", "ns");
        let meta = Arc::new(meta);
        let mut body = Map::new();
        body.push("log", "x");
        body.push("kubernetes", Value::SharedMap(Arc::clone(&meta)));
        let mut recs = vec![
            Record::new(EventTime(1), body.clone()),
            Record::new(EventTime(2), body),
        ];
        let mut f = testing::build(
            &PLUGIN,
            &[
                ("Operation", "lift"),
                ("Nested_under", "kubernetes"),
                ("Add_prefix", "kubernetes_"),
            ],
        )
        .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(f.filter("t", &mut recs));
        for r in &recs {
            assert_eq!(
                serde_json::to_string(&r.body).unwrap(),
                r#"{"log":"x","kubernetes_pod_name":"p","kubernetes_namespace_name":"ns"}"#
            );
        }
        assert_eq!(meta.len(), 2);
    }

    #[test]
    fn config_errors_name_file_line_and_key() {
        testing::check_err(
            &PLUGIN,
            &[("Operation", "nest"), ("Wildcard", "a*")],
            2,
            "Nest_under",
            "needs Nest_under",
        );
        testing::check_err(
            &PLUGIN,
            &[("Wildcard", "a*"), ("Operation", "lift")],
            3,
            "Nested_under",
            "needs Nested_under",
        );
        testing::check_err(
            &PLUGIN,
            &[("Operation", "flatten")],
            2,
            "Operation",
            "expected 'nest' or 'lift'",
        );
        testing::check_err(
            &PLUGIN,
            &[
                ("Operation", "nest"),
                ("Nest_under", "n"),
                ("Add_prefix", "a"),
                ("Remove_prefix", "b"),
            ],
            5,
            "Remove_prefix",
            "exclusive",
        );
        testing::check_err(
            &PLUGIN,
            &[("Operation", "nest"), ("Nest_undr", "n")],
            3,
            "Nest_undr",
            "did you mean 'Nest_under'?",
        );
        let e = testing::build_err(&PLUGIN, &[("Wildcard", "a")]);
        assert_eq!(
            e,
            "test.conf:1: Operation: missing required key for nest filter"
        );
    }
}
