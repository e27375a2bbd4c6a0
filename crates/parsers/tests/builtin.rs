//! Every built-in parser against the sample lines in `fixtures/builtin_parsers.json`, including
//! lines that must not match.

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers of an integration test are test code

mod common;

use std::collections::BTreeMap;

use common::{check, fixture, rfc3339};
use logferry_parsers::Parsers;

#[test]
fn builtin_parsers_on_sample_lines() {
    let text = std::fs::read_to_string(fixture("builtin_parsers.json")).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let parsers = Parsers::builtin();
    let mut per_parser: BTreeMap<String, usize> = BTreeMap::new();
    let mut misses: BTreeMap<String, usize> = BTreeMap::new();
    for case in doc["cases"].as_array().unwrap() {
        let name = case["parser"].as_str().unwrap();
        let parser = parsers
            .get(name)
            .unwrap_or_else(|| panic!("no built-in {name}"));
        let line = case["line"].as_str().unwrap();
        let expected = match &case["record"] {
            serde_json::Value::Null => None,
            v => Some(v.clone()),
        };
        if expected.is_none() {
            *misses.entry(name.to_string()).or_default() += 1;
        }
        let time = case["time"].as_str().map(rfc3339);
        check(&parser, line, expected, time);
        *per_parser.entry(name.to_string()).or_default() += 1;
    }
    for name in parsers.names() {
        let n = per_parser.get(name).copied().unwrap_or(0);
        assert!(n >= 5, "built-in {name} has only {n} sample lines");
        assert!(
            misses.get(name).copied().unwrap_or(0) >= 1,
            "built-in {name} has no non-matching line"
        );
    }
}

#[test]
fn seed_line_matches_the_expected_record() {
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("seed-nginx-expected-data.json")).unwrap(),
    )
    .unwrap();
    let nginx = Parsers::builtin().get("nginx").unwrap();
    let line = r#"10.1.128.166 - - [19/Dec/2019:17:41:12 +0000] "GET / HTTP/1.1" 200 612 "-" "hey/0.0.1" "52.95.4.2""#;
    let parsed = nginx.parse(line).unwrap();
    assert_eq!(common::json(&parsed.body), expected);
    assert_eq!(parsed.time.map(|t| t.as_millis()), Some(1_576_777_272_000));
    // Key order is the regex's group order.
    let keys: Vec<&str> = parsed.body.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        ["remote", "host", "user", "method", "path", "code", "size", "referer", "agent"]
    );
}

#[test]
fn builtin_regexes_use_the_linear_engine() {
    let parsers = Parsers::builtin();
    for name in parsers.names() {
        let p = parsers.get(name).unwrap();
        if let Some(engine) = p.regex_engine() {
            assert_eq!(engine, "regex", "{name} needs backtracking");
        }
    }
}
