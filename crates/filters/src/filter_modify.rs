//! `modify` filter: changes records with rules (`Set`, `Add`, `Remove`, `Rename`, `Copy`, ...)
//! applied when every `Condition` holds (Fluent Bit's `filter_modify`).
//!
//! As documented: rules and condition names are case-insensitive, their parameters are not;
//! rules apply in the order written, each to the result of the previous one; conditions apply
//! to the whole instance, and all must hold. A condition's `STRING:KEY` may be a record
//! accessor (`$nest['k1']`); without `$` it is a literal top-level key (`Key_exists Mem.used`).
//! Rules work on top-level keys only.
//!
//! Where the docs are silent this follows Fluent Bit's `modify.c`:
//! - A rule's or condition's value is split on spaces by `flb_utils_split_quoted`: `"..."` and
//!   `'...'` quote a key or value that holds spaces (`Add "key 2" "a b"`, with `\"`, `\'` and
//!   `\\` escapes). An unquoted value with spaces is an error here; Fluent Bit silently turns
//!   such a rule into a `Rename` of the key to the last word.
//! - Every condition is evaluated against the record as it came in, before any rule.
//! - `Set` removes every pair with the key and appends the new pair at the end; `Add` appends
//!   when the key is absent. Values are always strings.
//! - `Rename` renames (in place) when the key exists and the new name does not; `Hard_rename`
//!   drops the pairs with the new name first. `Copy` inserts the copy right after the source
//!   when exactly one source pair exists and the target does not; `Hard_copy` replaces at most
//!   one existing target.
//! - `Remove_wildcard`, `Move_to_start` and `Move_to_end` match keys by prefix (`Mem` matches
//!   `Mem.used`). A trailing `*` is accepted as the same prefix (Fluent Bit would compare the
//!   `*` literally); a `*` anywhere else is an error (Fluent Bit rejects `*s3` at start-up).
//! - Value conditions read strings, and `Key_value_matches` also matches booleans as `true` /
//!   `false` (Fluent Bit issue #7075); other types never equal or match.
//!   `Key_value_does_not_equal` / `_does_not_match` need the key to exist.
//! - `Matching_keys_do_not_have_matching_values` is the negation of
//!   `Matching_keys_have_matching_values` (true when *some* matching key has a value that does
//!   not match, false when no key matches), which is what Fluent Bit computes, although its docs
//!   describe "all keys ... do not match".
//! - Fluent Bit also compiles every rule's key and value as a regex and refuses to start when one
//!   does not compile; here only regex parameters are compiled.

use async_trait::async_trait;
use logferry_core::config::{ConfigError, Entry, Section};
use logferry_core::{options, Map, Record, Str, Value};
use logferry_engine::{BuildContext, Filter, FilterPlugin};
use regex::Regex;

use crate::record_accessor::RecordAccessor;
use crate::syntax;

options! {
    /// Options of the `modify` filter. Every key is repeatable; rules apply in the order written.
    pub struct ModifyOptions for "modify filter" {
        /// `KEY VALUE`: set KEY to VALUE, replacing an existing KEY.
        pub set: Vec<String> = ["Set"] None,
        /// `KEY VALUE`: add KEY with VALUE if KEY does not exist.
        pub add: Vec<String> = ["Add"] None,
        /// `KEY`: remove KEY if it exists.
        pub remove: Vec<String> = ["Remove"] None,
        /// `PREFIX`: remove every key starting with PREFIX.
        pub remove_wildcard: Vec<String> = ["Remove_wildcard"] None,
        /// `REGEX`: remove every key matching REGEX.
        pub remove_regex: Vec<String> = ["Remove_regex"] None,
        /// `KEY NEW`: rename KEY to NEW if KEY exists and NEW does not.
        pub rename: Vec<String> = ["Rename"] None,
        /// `KEY NEW`: rename KEY to NEW if KEY exists, replacing an existing NEW.
        pub hard_rename: Vec<String> = ["Hard_rename"] None,
        /// `KEY NEW`: copy KEY to NEW if KEY exists and NEW does not.
        pub copy: Vec<String> = ["Copy"] None,
        /// `KEY NEW`: copy KEY to NEW if KEY exists, replacing an existing NEW.
        pub hard_copy: Vec<String> = ["Hard_copy"] None,
        /// `PREFIX`: move keys starting with PREFIX to the start of the record.
        pub move_to_start: Vec<String> = ["Move_to_start"] None,
        /// `PREFIX`: move keys starting with PREFIX to the end of the record.
        pub move_to_end: Vec<String> = ["Move_to_end"] None,
        /// `NAME PARAM [PARAM]`: a condition that must hold for the rules to apply.
        pub condition: Vec<String> = ["Condition"] None,
    }
}

/// The registry entry.
pub static PLUGIN: FilterPlugin = FilterPlugin {
    name: "modify",
    aliases: &[],
    description: "modify records by applying rules",
    options: ModifyOptions::OPTIONS,
    default_workers: 0,
    build,
};

/// One rule.
#[derive(Clone, Debug)]
enum Rule {
    Set(Str, Value),
    Add(Str, Value),
    Remove(Str),
    RemoveWildcard(Str),
    RemoveRegex(Regex),
    Rename(Str, Str),
    HardRename(Str, Str),
    Copy(Str, Str),
    HardCopy(Str, Str),
    MoveToStart(Str),
    MoveToEnd(Str),
}

/// One condition.
#[derive(Clone, Debug)]
enum Condition {
    KeyExists(RecordAccessor),
    KeyDoesNotExist(RecordAccessor),
    AKeyMatches(Regex),
    NoKeyMatches(Regex),
    KeyValueEquals(RecordAccessor, String),
    KeyValueDoesNotEqual(RecordAccessor, String),
    KeyValueMatches(RecordAccessor, Regex),
    KeyValueDoesNotMatch(RecordAccessor, Regex),
    MatchingKeysHaveMatchingValues(Regex, Regex),
    MatchingKeysDoNotHaveMatchingValues(Regex, Regex),
}

/// Rule names and how many parameters each takes.
const RULES: &[(&str, usize)] = &[
    ("set", 2),
    ("add", 2),
    ("remove", 1),
    ("remove_wildcard", 1),
    ("remove_regex", 1),
    ("rename", 2),
    ("hard_rename", 2),
    ("copy", 2),
    ("hard_copy", 2),
    ("move_to_start", 1),
    ("move_to_end", 1),
];

/// Condition names and how many parameters each takes.
const CONDITIONS: &[(&str, usize)] = &[
    ("key_exists", 1),
    ("key_does_not_exist", 1),
    ("a_key_matches", 1),
    ("no_key_matches", 1),
    ("key_value_equals", 2),
    ("key_value_does_not_equal", 2),
    ("key_value_matches", 2),
    ("key_value_does_not_match", 2),
    ("matching_keys_have_matching_values", 2),
    ("matching_keys_do_not_have_matching_values", 2),
];

fn build(
    ctx: &BuildContext,
    section: &Section,
    entries: &[&Entry],
) -> Result<Box<dyn Filter>, ConfigError> {
    ModifyOptions::from_entries(&section.span, entries, &[])?;
    let mut rules = Vec::new();
    let mut conditions = Vec::new();
    for e in entries {
        let err = |reason: String| ConfigError::key(&e.span, &e.key, reason);
        let tokens = syntax::split_quoted(&e.value, 3).map_err(err)?;
        if e.key.eq_ignore_ascii_case("condition") {
            conditions.push(parse_condition(ctx, e, &tokens)?);
        } else if let Some((name, n)) = RULES
            .iter()
            .find(|(name, _)| e.key.eq_ignore_ascii_case(name))
        {
            rules.push(parse_rule(e, name, *n, tokens)?);
        }
    }
    Ok(Box::new(ModifyFilter { rules, conditions }))
}

/// The message for a wrong number of parameters.
fn arity(want: usize, got: usize, what: &str) -> String {
    let words = if want == 1 {
        "one parameter"
    } else {
        "two parameters"
    };
    let mut s = format!("{what} takes {words}, got {got}");
    if got > want {
        s.push_str(r#"; quote a key or value that contains spaces, as in "a b""#);
    }
    s
}

fn parse_rule(
    e: &Entry,
    name: &str,
    n: usize,
    mut tokens: Vec<String>,
) -> Result<Rule, ConfigError> {
    let err = |reason: String| ConfigError::key(&e.span, &e.key, reason);
    if tokens.len() != n {
        return Err(err(arity(n, tokens.len(), &e.key)));
    }
    let second = if n == 2 {
        tokens.pop().map(Str::from)
    } else {
        None
    };
    let first = tokens.pop().unwrap_or_default();
    let pair = |f: fn(Str, Str) -> Rule| {
        Ok(f(
            Str::from(first.as_str()),
            second.clone().unwrap_or_default(),
        ))
    };
    match name {
        "set" => pair(|k, v| Rule::Set(k, Value::Str(v))),
        "add" => pair(|k, v| Rule::Add(k, Value::Str(v))),
        "rename" => pair(Rule::Rename),
        "hard_rename" => pair(Rule::HardRename),
        "copy" => pair(Rule::Copy),
        "hard_copy" => pair(Rule::HardCopy),
        "remove" => Ok(Rule::Remove(Str::from(first))),
        "remove_regex" => {
            if first.is_empty() {
                return Err(err("an empty regular expression".into()));
            }
            Ok(Rule::RemoveRegex(syntax::regex(&first).map_err(err)?))
        }
        _ => {
            let prefix = wildcard_prefix(&first).map_err(err)?;
            Ok(if name == "remove_wildcard" {
                Rule::RemoveWildcard(prefix)
            } else if name == "move_to_start" {
                Rule::MoveToStart(prefix)
            } else {
                Rule::MoveToEnd(prefix)
            })
        }
    }
}

/// The prefix a `WILDCARD:KEY` parameter matches: the text itself, or the text before a
/// trailing `*`.
fn wildcard_prefix(w: &str) -> Result<Str, String> {
    let prefix = w.strip_suffix('*').unwrap_or(w);
    if prefix.contains('*') {
        return Err(format!(
            "wildcard '{w}': only a trailing '*' is supported (keys are matched by prefix)"
        ));
    }
    Ok(Str::from(prefix))
}

fn parse_condition(
    ctx: &BuildContext,
    e: &Entry,
    tokens: &[String],
) -> Result<Condition, ConfigError> {
    let err = |reason: String| ConfigError::key(&e.span, &e.key, reason);
    let Some((kind, params)) = tokens.split_first() else {
        return Err(err("expected a condition name and its parameters".into()));
    };
    let Some((name, n)) = CONDITIONS
        .iter()
        .find(|(name, _)| kind.eq_ignore_ascii_case(name))
    else {
        let known = CONDITIONS.iter().map(|(n, _)| *n);
        let hint = logferry_core::config::suggest(kind, known)
            .map(|s| format!(" (did you mean '{s}'?)"))
            .unwrap_or_default();
        return Err(err(format!("unknown condition '{kind}'{hint}")));
    };
    if params.len() != *n {
        return Err(err(arity(*n, params.len(), kind)));
    }
    let accessor = |p: &str| -> Result<RecordAccessor, ConfigError> {
        let ra = RecordAccessor::parse_key(p).map_err(err)?;
        if let Some(rest) = ra.ignored_suffix() {
            ctx.note(
                e,
                format!(
                    "record accessor reads the key '{}' only; Fluent Bit ignores '{rest}' here",
                    ra.key()
                ),
            );
        }
        Ok(ra)
    };
    let regex = |p: &str| -> Result<Regex, ConfigError> {
        if p.is_empty() {
            return Err(err(format!("{kind}: an empty regular expression")));
        }
        syntax::regex(p).map_err(err)
    };
    let a = params[0].as_str();
    let b = params.get(1).map_or("", String::as_str);
    Ok(match *name {
        "key_exists" => Condition::KeyExists(accessor(a)?),
        "key_does_not_exist" => Condition::KeyDoesNotExist(accessor(a)?),
        "a_key_matches" => Condition::AKeyMatches(regex(a)?),
        "no_key_matches" => Condition::NoKeyMatches(regex(a)?),
        "key_value_equals" => Condition::KeyValueEquals(accessor(a)?, b.to_string()),
        "key_value_does_not_equal" => Condition::KeyValueDoesNotEqual(accessor(a)?, b.to_string()),
        "key_value_matches" => Condition::KeyValueMatches(accessor(a)?, regex(b)?),
        "key_value_does_not_match" => Condition::KeyValueDoesNotMatch(accessor(a)?, regex(b)?),
        "matching_keys_have_matching_values" => {
            Condition::MatchingKeysHaveMatchingValues(regex(a)?, regex(b)?)
        }
        _ => Condition::MatchingKeysDoNotHaveMatchingValues(regex(a)?, regex(b)?),
    })
}

/// Whether a value matches a regex as Fluent Bit's modify filter reads it: strings as they are,
/// booleans as `true` / `false`, anything else never.
fn value_matches(v: &Value, re: &Regex) -> bool {
    match v {
        Value::Str(s) => re.is_match(s),
        Value::Bool(true) => re.is_match("true"),
        Value::Bool(false) => re.is_match("false"),
        _ => false,
    }
}

fn all_matching_keys_match(body: &Map, keys: &Regex, values: &Regex) -> bool {
    body.0
        .iter()
        .filter(|(k, _)| keys.is_match(k))
        .all(|(_, v)| value_matches(v, values))
}

impl Condition {
    fn holds(&self, body: &Map) -> bool {
        match self {
            Condition::KeyExists(ra) => ra.exists(body),
            Condition::KeyDoesNotExist(ra) => !ra.exists(body),
            Condition::AKeyMatches(re) => body.0.iter().any(|(k, _)| re.is_match(k)),
            Condition::NoKeyMatches(re) => !body.0.iter().any(|(k, _)| re.is_match(k)),
            Condition::KeyValueEquals(ra, s) => ra.get_str(body) == Some(s.as_str()),
            Condition::KeyValueDoesNotEqual(ra, s) => {
                ra.get(body).is_some_and(|v| v.as_str() != Some(s.as_str()))
            }
            Condition::KeyValueMatches(ra, re) => {
                ra.get(body).is_some_and(|v| value_matches(v, re))
            }
            Condition::KeyValueDoesNotMatch(ra, re) => {
                ra.get(body).is_some_and(|v| !value_matches(v, re))
            }
            Condition::MatchingKeysHaveMatchingValues(k, v) => all_matching_keys_match(body, k, v),
            Condition::MatchingKeysDoNotHaveMatchingValues(k, v) => {
                !all_matching_keys_match(body, k, v)
            }
        }
    }
}

fn count(body: &Map, key: &str) -> usize {
    body.0.iter().filter(|(k, _)| k == key).count()
}

/// Moves the pairs `matches` selects to the front (or back), keeping the order within each group.
fn partition(body: &mut Map, to_front: bool, matches: impl Fn(&str) -> bool) {
    if !body.0.iter().any(|(k, _)| matches(k)) {
        return;
    }
    let (mut yes, no): (Vec<_>, Vec<_>) = std::mem::take(&mut body.0)
        .into_iter()
        .partition(|(k, _)| matches(k));
    if to_front {
        yes.extend(no);
        body.0 = yes;
    } else {
        let mut no = no;
        no.extend(yes);
        body.0 = no;
    }
}

impl Rule {
    fn apply(&self, body: &mut Map) {
        let pairs = &mut body.0;
        match self {
            Rule::Set(k, v) => {
                pairs.retain(|(pk, _)| pk != k);
                pairs.push((k.clone(), v.clone()));
            }
            Rule::Add(k, v) => {
                if !pairs.iter().any(|(pk, _)| pk == k) {
                    pairs.push((k.clone(), v.clone()));
                }
            }
            Rule::Remove(k) => pairs.retain(|(pk, _)| pk != k),
            Rule::RemoveWildcard(p) => pairs.retain(|(pk, _)| !pk.starts_with(p.as_str())),
            Rule::RemoveRegex(re) => pairs.retain(|(pk, _)| !re.is_match(pk)),
            Rule::Rename(from, to) => {
                if pairs.iter().any(|(pk, _)| pk == from) && !pairs.iter().any(|(pk, _)| pk == to) {
                    rename_all(pairs, from, to);
                }
            }
            Rule::HardRename(from, to) => {
                if pairs.iter().any(|(pk, _)| pk == from) {
                    pairs.retain(|(pk, _)| pk != to);
                    rename_all(pairs, from, to);
                }
            }
            Rule::Copy(from, to) => {
                if count(body, from) == 1 && count(body, to) == 0 {
                    copy_after(&mut body.0, from, to);
                }
            }
            Rule::HardCopy(from, to) => {
                if count(body, from) == 1 && count(body, to) <= 1 {
                    body.0.retain(|(pk, _)| pk != to);
                    copy_after(&mut body.0, from, to);
                }
            }
            Rule::MoveToStart(p) => partition(body, true, |k| k.starts_with(p.as_str())),
            Rule::MoveToEnd(p) => partition(body, false, |k| k.starts_with(p.as_str())),
        }
    }
}

fn rename_all(pairs: &mut [(Str, Value)], from: &str, to: &Str) {
    for (k, _) in pairs.iter_mut().filter(|(k, _)| k == from) {
        *k = to.clone();
    }
}

/// Inserts a copy of the (single) pair `from` right after it, under the name `to`.
fn copy_after(pairs: &mut Vec<(Str, Value)>, from: &str, to: &Str) {
    if let Some(i) = pairs.iter().position(|(k, _)| k == from) {
        let v = pairs[i].1.clone();
        pairs.insert(i + 1, (to.clone(), v));
    }
}

/// The running filter.
#[derive(Clone, Debug)]
pub struct ModifyFilter {
    rules: Vec<Rule>,
    conditions: Vec<Condition>,
}

#[async_trait]
impl Filter for ModifyFilter {
    /// Its state is its configuration: any number of copies filter alike.
    fn fork(&self) -> Option<Box<dyn Filter>> {
        Some(Box::new(self.clone()))
    }
    async fn filter(&mut self, _tag: &str, records: &mut Vec<Record>) {
        if self.rules.is_empty() {
            return;
        }
        for r in records.iter_mut() {
            if self.conditions.iter().all(|c| c.holds(&r.body)) {
                for rule in &self.rules {
                    rule.apply(&mut r.body);
                }
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
    const MEM: &str = r#"{"Mem.total": 1016044, "Mem.used": 841388, "Mem.free": 174656,
        "Swap.total": 2064380, "Swap.used": 139888, "Swap.free": 1924492}"#;

    #[test]
    fn doc_example_usage() {
        // Docs, "Example usage": rename Key2 and add OtherKey.
        check(
            &[("Rename", "Key2 RenamedKey"), ("Add", "OtherKey Value3")],
            r#"{"Key1": "Value1", "Key2": "Value2"}"#,
            r#"{"Key1": "Value1", "RenamedKey": "Value2", "OtherKey": "Value3"}"#,
        );
    }

    #[test]
    fn doc_example_1_add_and_rename() {
        // Docs, "Example 1 - add and rename" (the configuration file version).
        check(
            &[
                ("Add", "Service1 SOMEVALUE"),
                ("Add", "Service3 SOMEVALUE3"),
                ("Add", "Mem.total2 TOTALMEM2"),
                ("Rename", "Mem.free MEMFREE"),
                ("Rename", "Mem.used MEMUSED"),
                ("Rename", "Swap.total SWAPTOTAL"),
                ("Add", "Mem.total TOTALMEM"),
            ],
            MEM,
            r#"{"Mem.total": 1016044, "MEMUSED": 841388, "MEMFREE": 174656, "SWAPTOTAL": 2064380,
                "Swap.used": 139888, "Swap.free": 1924492, "Service1": "SOMEVALUE",
                "Service3": "SOMEVALUE3", "Mem.total2": "TOTALMEM2"}"#,
        );
    }

    #[test]
    fn doc_example_2_conditionally_add_and_remove() {
        // Docs, "Example 2 - conditionally add and remove": three modify filters in a row.
        let mut first = testing::build(
            &PLUGIN,
            &[
                ("Condition", "Key_Does_Not_Exist cpustats"),
                ("Condition", "Key_Exists Mem.used"),
                ("Set", "cpustats UNKNOWN"),
            ],
        )
        .unwrap();
        let mut second = testing::build(
            &PLUGIN,
            &[
                ("Condition", "Key_Value_Does_Not_Equal cpustats KNOWN"),
                ("Add", "sourcetype memstats"),
            ],
        )
        .unwrap();
        let mut third = testing::build(
            &PLUGIN,
            &[
                ("Condition", "Key_Value_Equals cpustats UNKNOWN"),
                ("Remove_wildcard", "Mem"),
                ("Remove_wildcard", "Swap"),
                ("Add", "cpustats_more STILL_UNKNOWN"),
            ],
        )
        .unwrap();
        let out = testing::run(first.as_mut(), MEM);
        let out = testing::run(second.as_mut(), &out);
        let out = testing::run(third.as_mut(), &out);
        assert_eq!(
            out,
            testing::normalize(
                r#"{"cpustats": "UNKNOWN", "sourcetype": "memstats", "cpustats_more": "STILL_UNKNOWN"}"#
            )
        );
    }

    #[test]
    fn doc_example_3_emoji() {
        // Docs, "Example 3 - emoji" (the classic configuration, rules in that order).
        check(
            &[
                ("Remove_Wildcard", "Mem"),
                ("Remove_Wildcard", "Swap"),
                ("Set", "This_plugin_is_on 🔥"),
                ("Set", "🔥 is_hot"),
                ("Copy", "🔥 💦"),
                ("Rename", " 💦 ❄️"),
                ("Set", "❄️ is_cold"),
                ("Set", "💦 is_wet"),
            ],
            MEM,
            r#"{"This_plugin_is_on": "🔥", "🔥": "is_hot", "❄️": "is_cold", "💦": "is_wet"}"#,
        );
    }

    #[test]
    fn set_and_add() {
        let input = r#"{"k": "sample", "z": 1}"#;
        // Fluent Bit's runtime tests op_set_append / op_set_replace; Set moves the key last.
        check(
            &[("Set", "test_key test_value")],
            input,
            r#"{"k": "sample", "z": 1, "test_key": "test_value"}"#,
        );
        check(
            &[("set", "k test_value")],
            input,
            r#"{"z": 1, "k": "test_value"}"#,
        );
        check(&[("Add", "k other")], input, input);
        check(
            &[("ADD", "n 5")],
            input,
            r#"{"k": "sample", "z": 1, "n": "5"}"#,
        );
    }

    #[test]
    fn removes() {
        let input = r#"{"k1": "sample1", "k2": "sample2", "A3": "sample3", "kk": "x"}"#;
        check(
            &[("Remove", "k1")],
            input,
            r#"{"k2": "sample2", "A3": "sample3", "kk": "x"}"#,
        );
        check(&[("Remove", "nope")], input, input);
        check(&[("Remove_wildcard", "k")], input, r#"{"A3": "sample3"}"#);
        check(&[("Remove_wildcard", "k*")], input, r#"{"A3": "sample3"}"#);
        check(
            &[("Remove_regex", "^[a-z][0-9]$")],
            input,
            r#"{"A3": "sample3", "kk": "x"}"#,
        );
    }

    #[test]
    fn renames() {
        let input = r#"{"k1": "sample1", "k2": "sample2", "A3": "sample3"}"#;
        // op_rename_exists: the target exists, nothing happens.
        check(&[("Rename", "A3 k2")], input, input);
        check(
            &[("Rename", "A3 a3")],
            input,
            r#"{"k1": "sample1", "k2": "sample2", "a3": "sample3"}"#,
        );
        check(&[("Rename", "zz a3")], input, input);
        // op_hard_rename_exists: the old target goes, the key is renamed in place.
        check(
            &[("Hard_rename", "k2 k1")],
            input,
            r#"{"k1": "sample2", "A3": "sample3"}"#,
        );
        check(
            &[("Hard_rename", "k2 k3")],
            input,
            r#"{"k1": "sample1", "k3": "sample2", "A3": "sample3"}"#,
        );
        check(&[("Hard_rename", "zz k1")], input, input);
    }

    #[test]
    fn copies() {
        let input = r#"{"k1": "sample1", "k2": "sample2"}"#;
        check(&[("Copy", "k1 k2")], input, input);
        check(
            &[("Copy", "k1 k3")],
            input,
            r#"{"k1": "sample1", "k3": "sample1", "k2": "sample2"}"#,
        );
        check(
            &[("Hard_copy", "k1 k2")],
            input,
            r#"{"k1": "sample1", "k2": "sample1"}"#,
        );
        check(
            &[("Hard_copy", "k2 k3")],
            input,
            r#"{"k1": "sample1", "k2": "sample2", "k3": "sample2"}"#,
        );
        check(&[("Copy", "zz k3")], input, input);
        check(&[("Hard_copy", "zz k3")], input, input);
        // Copy needs exactly one source pair.
        let dup = r#"[{"a": 1}]"#;
        let mut f = testing::build(&PLUGIN, &[("Copy", "a b")]).unwrap();
        let mut recs = testing::records(dup);
        recs[0].body.push("a", 2i64);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(f.filter("t", &mut recs));
        assert_eq!(recs[0].body.len(), 2);
    }

    #[test]
    fn moves() {
        let input = r#"{"a": 1, "Mem.x": 2, "b": 3, "Mem.y": 4}"#;
        check(
            &[("Move_to_start", "Mem")],
            input,
            r#"{"Mem.x": 2, "Mem.y": 4, "a": 1, "b": 3}"#,
        );
        check(
            &[("Move_to_end", "Mem.")],
            input,
            r#"{"a": 1, "b": 3, "Mem.x": 2, "Mem.y": 4}"#,
        );
        check(
            &[("Move_to_end", "a*")],
            input,
            r#"{"Mem.x": 2, "b": 3, "Mem.y": 4, "a": 1}"#,
        );
        check(&[("Move_to_start", "zz")], input, input);
    }

    #[test]
    fn rules_apply_in_order() {
        check(
            &[
                ("Set", "a 1"),
                ("Rename", "a b"),
                ("Copy", "b c"),
                ("Remove", "b"),
                ("Add", "a 2"),
            ],
            r#"{"x": "y"}"#,
            r#"{"x": "y", "c": "1", "a": "2"}"#,
        );
    }

    #[test]
    fn quoted_keys_and_values() {
        // Fluent Bit's runtime test for issue 1225 (operation_with_whitespace).
        check(
            &[
                (
                    "Condition",
                    r#"key_value_matches "key 1" ".*with spaces.*""#,
                ),
                ("Add", r#""key 2" "second value with spaces""#),
            ],
            r#"{"key 1": "first value with spaces"}"#,
            r#"{"key 1": "first value with spaces", "key 2": "second value with spaces"}"#,
        );
        check(
            &[("Set", r#"msg 'it\'s "here"'"#)],
            "{}",
            r#"{"msg": "it's \"here\""}"#,
        );
    }

    /// The record of Fluent Bit's condition runtime tests.
    const COND: &str = r#"{"aa": "sample1", "bb": "sample2", "c1": "sample3", "nest": {"k1": "sample2", "k2": "z2"}}"#;

    fn applies(condition: &str, input: &str) -> bool {
        let mut f =
            testing::build(&PLUGIN, &[("Condition", condition), ("Add", "hit yes")]).unwrap();
        testing::run(f.as_mut(), input).contains(r#""hit":"yes""#)
    }

    #[test]
    fn conditions() {
        let t = |c: &str| applies(c, COND);
        assert!(t("key_exists aa") && !t("key_exists zz"));
        assert!(t("key_exists $nest['k1']") && !t("key_exists $nest['zz']"));
        assert!(t("key_does_not_exist zz") && !t("key_does_not_exist $nest['k1']"));
        assert!(t("a_key_matches ^[a-z][0-9]$") && !t("a_key_matches ^[0-9]$"));
        assert!(t("no_key_matches ^[0-9]$") && !t("no_key_matches ^c"));
        assert!(t("key_value_equals bb sample2") && !t("key_value_equals bb sample"));
        assert!(t("key_value_equals $nest['k1'] sample2"));
        assert!(
            t("key_value_does_not_equal bb sample3") && !t("key_value_does_not_equal bb sample2")
        );
        assert!(t("key_value_does_not_equal $nest['k1'] sample3"));
        assert!(
            t("key_value_matches $nest['k2'] ^[a-z][0-9]$")
                && !t("key_value_matches bb ^[a-z][0-9]$")
        );
        assert!(
            t("key_value_does_not_match bb ^[a-z][0-9]$")
                && !t("key_value_does_not_match $nest['k2'] z")
        );
        // Issue 4319: the "does not" value conditions need the key.
        assert!(
            !t("key_value_does_not_equal aaa sample") && !t("key_value_does_not_match aaa sample")
        );
        // Names are case-insensitive.
        assert!(t("KEY_EXISTS aa") && t("Key_Value_Equals bb sample2"));
    }

    #[test]
    fn value_types_in_conditions() {
        // Issue 7075: booleans match as true/false; numbers never equal or match.
        assert!(applies("key_value_matches ok true", r#"{"ok": true}"#));
        assert!(applies("key_value_matches ok ^false$", r#"{"ok": false}"#));
        assert!(!applies("key_value_matches n 1", r#"{"n": 1}"#));
        assert!(!applies("key_value_equals n 1", r#"{"n": 1}"#));
        assert!(applies("key_value_does_not_equal n 1", r#"{"n": 1}"#));
        assert!(applies("key_exists n", r#"{"n": null}"#));
    }

    #[test]
    fn matching_keys_conditions() {
        let have = "matching_keys_have_matching_values ^[a-z][0-9]$ ^[a-z][0-9]$";
        let not = "matching_keys_do_not_have_matching_values ^[a-z][0-9]$ ^[a-z][0-9]$";
        assert!(applies(have, r#"{"k1": "n1", "k2": "n3"}"#));
        assert!(!applies(have, r#"{"k1": "n1", "k2": "bb"}"#));
        assert!(applies(not, r#"{"k1": "aa", "k2": "bb"}"#));
        // As Fluent Bit computes it: true when some matching key's value does not match ...
        assert!(applies(not, r#"{"k1": "n1", "k2": "bb"}"#));
        // ... and false when no key matches at all (while "have" is then true).
        assert!(applies(have, r#"{"other": "x"}"#));
        assert!(!applies(not, r#"{"other": "x"}"#));
    }

    #[test]
    fn all_conditions_must_hold() {
        // Fluent Bit's runtime test cond_chain.
        check(
            &[
                ("condition", "key_exists k1"),
                ("condition", "key_does_not_exist k2"),
                ("add", "k2 sample_2"),
                ("condition", "a_key_matches ^[a-z]1$"),
                ("add", "k3 3"),
                ("condition", "no_key_matches ^[0-9]$"),
                ("condition", "key_value_equals k1 sample"),
                ("add", "k4 4"),
                ("condition", "key_value_does_not_equal k1 sampl"),
                ("condition", "key_value_matches k1 ^[a-z]+$"),
                ("condition", "key_value_does_not_match k1 aa"),
                (
                    "condition",
                    "matching_keys_have_matching_values ^[a-z][0-9]$ ^[a-z]+$",
                ),
                (
                    "condition",
                    "matching_keys_do_not_have_matching_values ^[a-z][0-9]$ ^[a-z][0-9]$",
                ),
                ("add", "k5 5"),
            ],
            r#"[{"k1": "sample"}, {"k1": "other"}]"#,
            r#"[{"k1": "sample", "k2": "sample_2", "k3": "3", "k4": "4", "k5": "5"}, {"k1": "other"}]"#,
        );
    }

    #[test]
    fn conditions_see_the_record_before_the_rules() {
        check(
            &[
                ("Condition", "key_does_not_exist b"),
                ("Add", "b 1"),
                ("Add", "c 2"),
            ],
            r#"{"a": "x"}"#,
            r#"{"a": "x", "b": "1", "c": "2"}"#,
        );
    }

    #[test]
    fn config_errors_name_file_line_and_key() {
        testing::check_err(
            &PLUGIN,
            &[("Remove_regex", "(")],
            2,
            "Remove_regex",
            "invalid regular expression '('",
        );
        testing::check_err(
            &PLUGIN,
            &[("Condition", "key_value_matches k (")],
            2,
            "Condition",
            "invalid regular expression",
        );
        testing::check_err(
            &PLUGIN,
            &[("Set", "a b"), ("Set", "message hello world")],
            3,
            "Set",
            "quote a key or value",
        );
        testing::check_err(
            &PLUGIN,
            &[("Rename", "onlyone")],
            2,
            "Rename",
            "takes two parameters, got 1",
        );
        testing::check_err(
            &PLUGIN,
            &[("Remove", "a b")],
            2,
            "Remove",
            "takes one parameter, got 2",
        );
        testing::check_err(
            &PLUGIN,
            &[("Condition", "key_exist a")],
            2,
            "Condition",
            "did you mean 'key_exists'?",
        );
        testing::check_err(
            &PLUGIN,
            &[("Condition", "key_value_equals log foo bar")],
            2,
            "Condition",
            "takes two parameters, got 3",
        );
        testing::check_err(
            &PLUGIN,
            &[("Condition", "key_exists")],
            2,
            "Condition",
            "takes one parameter, got 0",
        );
        testing::check_err(
            &PLUGIN,
            &[("Condition", "")],
            2,
            "Condition",
            "expected a condition name",
        );
        testing::check_err(
            &PLUGIN,
            &[("Add", r#""open b"#)],
            2,
            "Add",
            "unterminated quote",
        );
        // Fluent Bit's runtime test invalid_wildcard.
        testing::check_err(
            &PLUGIN,
            &[("Remove_wildcard", "*s3")],
            2,
            "Remove_wildcard",
            "only a trailing '*'",
        );
        testing::check_err(
            &PLUGIN,
            &[("Condition", "key_exists $a['x'")],
            2,
            "Condition",
            "record accessor",
        );
        testing::check_err(
            &PLUGIN,
            &[("Hard_Rename", "a b"), ("Hard_renam", "a b")],
            3,
            "Hard_renam",
            "did you mean 'Hard_rename'?",
        );
    }

    #[test]
    fn conditions_without_rules_change_nothing() {
        check(
            &[("Condition", "key_exists a")],
            r#"{"a": 1}"#,
            r#"{"a": 1}"#,
        );
    }
}
