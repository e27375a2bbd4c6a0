//! Test helpers shared by the filter modules: build a filter through its registry entry from
//! `key value` pairs (as if written in `test.conf`, one per line from line 2), run it over JSON
//! records and compare the output as JSON text, so that key order counts.

use std::path::Path;
use std::sync::Arc;

use logferry_core::config::{Config, ConfigError, Entry, Section, SectionKind, Span};
use logferry_core::{EventTime, Record, Value};
use logferry_engine::{BuildContext, Filter, FilterPlugin};

/// The span of line `line` of `test.conf`.
pub fn span(line: u32) -> Span {
    Span::new(&Arc::from(Path::new("test.conf")), line)
}

/// Builds `plugin` from entries written on lines 2, 3, ... of `test.conf`.
pub fn build(
    plugin: &FilterPlugin,
    entries: &[(&str, &str)],
) -> Result<Box<dyn Filter>, ConfigError> {
    let mut section = Section::new(SectionKind::Filter, span(1));
    for (i, (k, v)) in entries.iter().enumerate() {
        section.push(*k, *v, span(i as u32 + 2));
    }
    let ctx = BuildContext::standalone(&format!("{}.0", plugin.name), Config::default())
        .expect("built-in parsers build");
    let refs: Vec<&Entry> = section.entries.iter().collect();
    (plugin.build)(&ctx, &section, &refs)
}

/// The error building `plugin` from `entries` gives (panics if it builds).
pub fn build_err(plugin: &FilterPlugin, entries: &[(&str, &str)]) -> String {
    match build(plugin, entries) {
        Ok(_) => panic!("expected a config error for {entries:?}"),
        Err(e) => e.to_string(),
    }
}

/// Records from a JSON array of objects (a single object is one record).
pub fn records(json: &str) -> Vec<Record> {
    let v: serde_json::Value =
        serde_json::from_str(json).unwrap_or_else(|e| panic!("bad test JSON {json}: {e}"));
    let items = match v {
        serde_json::Value::Array(a) => a,
        other => vec![other],
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| match Value::from_json(item) {
            Value::Map(m) => Record::new(EventTime::from_parts(1_700_000_000 + i as i64, 0), m),
            other => panic!("a test record must be an object, got {other:?}"),
        })
        .collect()
}

/// Runs `filter` over `input` and returns the output as compact JSON text (an array of the
/// record bodies; duplicate keys are written twice).
pub fn run(filter: &mut dyn Filter, input: &str) -> String {
    let mut recs = records(input);
    let times: Vec<EventTime> = recs.iter().map(|r| r.time).collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    rt.block_on(filter.filter("test.tag", &mut recs));
    // Filters never touch timestamps: every output time must be one of the input times.
    assert!(
        recs.iter().all(|r| times.contains(&r.time)),
        "a filter changed a timestamp"
    );
    let bodies: Vec<Value> = recs.into_iter().map(|r| Value::Map(r.body)).collect();
    serde_json::to_string(&bodies).unwrap_or_else(|e| panic!("serialize: {e}"))
}

/// Normalizes expected JSON text (an array, or one object) to the compact form `run` returns.
pub fn normalize(expected: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(expected)
        .unwrap_or_else(|e| panic!("bad expected JSON {expected}: {e}"));
    let v = match v {
        serde_json::Value::Array(a) => serde_json::Value::Array(a),
        other => serde_json::Value::Array(vec![other]),
    };
    serde_json::to_string(&v).unwrap_or_else(|e| panic!("serialize: {e}"))
}

/// Builds `plugin` from `entries`, runs it over `input` and checks the output is `expected`.
pub fn check(plugin: &FilterPlugin, entries: &[(&str, &str)], input: &str, expected: &str) {
    let mut f = build(plugin, entries).unwrap_or_else(|e| panic!("build {entries:?}: {e}"));
    let got = run(f.as_mut(), input);
    assert_eq!(
        got,
        normalize(expected),
        "config {entries:?}\ninput {input}"
    );
}

/// Asserts that building fails with a message that starts with `test.conf:LINE: KEY:` and
/// contains `needle`.
pub fn check_err(
    plugin: &FilterPlugin,
    entries: &[(&str, &str)],
    line: u32,
    key: &str,
    needle: &str,
) {
    let e = build_err(plugin, entries);
    let prefix = format!("test.conf:{line}: {key}:");
    assert!(
        e.starts_with(&prefix),
        "error '{e}' should start with '{prefix}'"
    );
    assert!(e.contains(needle), "error '{e}' should contain '{needle}'");
}
