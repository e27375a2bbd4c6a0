//! Helpers shared by the integration tests: a data-driven `check`, and config loading.

#![allow(dead_code)]

use std::path::Path;

use chrono::Datelike;
use logferry_core::config::{classic, yaml, Config, Vars};
use logferry_core::{EventTime, Map};
use logferry_parsers::Parser;

/// The path of a fixture file.
pub fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(&std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A map as JSON, for comparisons that ignore key order.
pub fn json(m: &Map) -> serde_json::Value {
    serde_json::to_value(m).expect("a map serializes")
}

/// Reads an RFC 3339 time; `YYYY` stands for the current year (UTC).
pub fn rfc3339(s: &str) -> EventTime {
    let year = chrono::Utc::now().year().to_string();
    let s = s.replace("YYYY", &year);
    let t =
        chrono::DateTime::parse_from_rfc3339(&s).unwrap_or_else(|e| panic!("bad time {s}: {e}"));
    EventTime(t.timestamp_nanos_opt().expect("in range"))
}

/// Parses `line` with `parser` and checks the outcome: `None` for no match, else the record
/// (as JSON; key order aside) and, when given, the time.
pub fn check(
    parser: &Parser,
    line: &str,
    expected: Option<serde_json::Value>,
    time: Option<EventTime>,
) {
    let got = parser.parse(line);
    match (got, expected) {
        (None, None) => {}
        (Some(p), None) => panic!(
            "[{}] expected no match for {line:?}, got {}",
            parser.name(),
            json(&p.body)
        ),
        (None, Some(e)) => panic!(
            "[{}] expected {e} for {line:?}, got no match",
            parser.name()
        ),
        (Some(p), Some(e)) => {
            assert_eq!(json(&p.body), e, "[{}] record for {line:?}", parser.name());
            assert_eq!(p.time, time, "[{}] time for {line:?}", parser.name());
        }
    }
}

/// Reads a classic config text as if from `name` (spans say `name:line`).
pub fn classic_config(name: &str, text: &str) -> Config {
    let mut vars = Vars::empty();
    let sections = classic::parse(text, Path::new(name), &mut vars).expect("classic text reads");
    Config {
        sections,
        path: None,
    }
}

/// Reads a YAML config text as if from `name`.
pub fn yaml_config(name: &str, text: &str) -> Config {
    let mut vars = Vars::empty();
    let sections = yaml::parse(text, Path::new(name), &mut vars).expect("yaml text reads");
    Config {
        sections,
        path: None,
    }
}
