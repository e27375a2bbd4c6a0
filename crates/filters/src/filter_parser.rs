//! `parser` filter: parses one string field of each record with named parsers and replaces the
//! record with what they read (Fluent Bit's `filter_parser`).
//!
//! As documented (Fluent Bit 5.x, "Parser" filter): `Key_Name` names the field to parse;
//! `Parser` (repeatable, one name per line) names the parsers, tried in the order written, the
//! first that parses winning; `Reserve_Data` keeps the record's other fields; `Preserve_Key`
//! keeps the parsed field itself; `Unescape_Key` is deprecated and has no effect.
//!
//! Where the docs are silent this follows Fluent Bit's `filter_parser.c`:
//! - The result is the parsed fields first, then (`Reserve_Data`) the original fields in their
//!   original order, `Key_Name` among them when `Preserve_Key` is on (the docs' output:
//!   `{"INT"=>…, "STRING"=>…, "data"=>…, "key1"=>…, "key2"=>…}`). With `Preserve_Key` alone
//!   the original field follows the parsed ones, as the docs describe it ("Keep the original
//!   key_name field in the parsed result"). Fluent Bit's own code ignores `Preserve_Key`
//!   without `Reserve_Data` (issue #1168; PR #9675 proposes this behaviour).
//! - Original fields are appended as they are, without looking for parsed keys of the same name
//!   (`flb_msgpack_expand_map`): a record can then hold a key twice, as Fluent Bit writes it.
//! - The record time becomes the parsed time when the parser read one (a `Time_Key` with
//!   `Time_Format`); otherwise it is kept.
//! - `Key_Name` is matched exactly against top-level keys; the first pair with that key and a
//!   string value is parsed. A record without it, with a non-string value, or that no parser
//!   parses passes through unchanged.
//! - A `Parser` that names no parser is an error here (Fluent Bit logs it and carries on with
//!   the others, failing only when none is left); a missing `Key_Name` or `Parser` is an error in
//!   both.

use std::sync::Arc;

use async_trait::async_trait;
use logferry_core::config::{ConfigError, Entry, Section};
use logferry_core::{options, Record, Str, Value};
use logferry_engine::{BuildContext, Filter, FilterPlugin};
use logferry_parsers::Parser;

options! {
    /// Options of the `parser` filter.
    pub struct ParserFilterOptions for "parser filter" {
        /// The field of the record to parse.
        pub key_name: String = ["Key_Name"] None,
        /// A parser to try on the field, in the order written (repeatable).
        pub parser: Vec<String> = ["Parser"] None,
        /// Keep the original Key_Name field in the parsed result.
        pub preserve_key: bool = ["Preserve_Key"] Some("off"),
        /// Keep all other original fields in the parsed result.
        pub reserve_data: bool = ["Reserve_Data"] Some("off"),
        /// Deprecated in Fluent Bit; accepted and ignored.
        pub unescape_key: Option<String> = ["Unescape_Key"] None,
    }
}

/// The registry entry.
pub static PLUGIN: FilterPlugin = FilterPlugin {
    name: "parser",
    aliases: &[],
    description: "Parse events",
    options: ParserFilterOptions::OPTIONS,
    default_workers: 0,
    build,
};

fn build(
    ctx: &BuildContext,
    section: &Section,
    entries: &[&Entry],
) -> Result<Box<dyn Filter>, ConfigError> {
    let opts = ParserFilterOptions::from_entries(&section.span, entries, &[])?;
    let key_name = opts.key_name.trim();
    if key_name.is_empty() {
        let span = entries
            .iter()
            .find(|e| e.key.eq_ignore_ascii_case("Key_Name"))
            .map_or(&section.span, |e| &e.span);
        return Err(ConfigError::key(span, "Key_Name", "must not be empty"));
    }
    let mut parsers = Vec::with_capacity(opts.parser.len());
    for e in entries
        .iter()
        .filter(|e| e.key.eq_ignore_ascii_case("Parser"))
    {
        let name = e.value.trim();
        match ctx.parsers.get(name) {
            Some(p) => parsers.push(p),
            None => {
                return Err(ConfigError::key(
                    &e.span,
                    &e.key,
                    format!("requested parser '{name}' not found"),
                ))
            }
        }
    }
    if parsers.is_empty() {
        return Err(ConfigError::key(
            &section.span,
            "Parser",
            "missing required key for parser filter (at least one Parser)",
        ));
    }
    if let Some(e) = entries
        .iter()
        .find(|e| e.key.eq_ignore_ascii_case("Unescape_Key"))
    {
        ctx.note(
            e,
            "accepted but not applied: 'Unescape_Key' is deprecated and has no effect",
        );
    }
    Ok(Box::new(ParserFilter {
        key_name: Str::from(key_name),
        parsers,
        preserve_key: opts.preserve_key,
        reserve_data: opts.reserve_data,
    }))
}

/// The running filter.
#[derive(Clone, Debug)]
pub struct ParserFilter {
    key_name: Str,
    parsers: Vec<Arc<Parser>>,
    preserve_key: bool,
    reserve_data: bool,
}

impl ParserFilter {
    /// Parses one record in place; leaves it untouched when nothing parses.
    fn apply(&self, record: &mut Record) {
        let Some(at) = record
            .body
            .0
            .iter()
            .position(|(k, v)| *k == self.key_name && matches!(v, Value::Str(_)))
        else {
            return;
        };
        let parsed = {
            let Value::Str(text) = &record.body.0[at].1 else {
                return;
            };
            let Some(parsed) = self.parsers.iter().find_map(|p| p.parse(text)) else {
                return;
            };
            parsed
        };
        if let Some(t) = parsed.time {
            record.time = t;
        }
        let mut body = parsed.body;
        let old = std::mem::take(&mut record.body);
        if self.reserve_data {
            body.0.reserve(old.len());
            for (i, pair) in old.0.into_iter().enumerate() {
                if i != at || self.preserve_key {
                    body.0.push(pair);
                }
            }
        } else if self.preserve_key {
            if let Some(pair) = old.0.into_iter().nth(at) {
                body.0.push(pair);
            }
        }
        record.body = body;
    }
}

#[async_trait]
impl Filter for ParserFilter {
    /// Its state is its configuration: any number of copies filter alike.
    fn fork(&self) -> Option<Box<dyn Filter>> {
        Some(Box::new(self.clone()))
    }
    async fn filter(&mut self, _tag: &str, records: &mut Vec<Record>) {
        for r in records.iter_mut() {
            self.apply(r);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use logferry_core::config::{Config, Entry, Section, SectionKind, Span};
    use logferry_core::{EventTime, Record, Value};
    use logferry_engine::{BuildContext, Filter};

    use super::PLUGIN;
    use crate::testing;

    /// The parser of the docs' examples, as written in their `parsers.conf`:
    ///
    /// ```text
    /// [PARSER]
    ///   Name dummy_test
    ///   Format regex
    ///   Regex ^(?<INT>[^ ]+) (?<FLOAT>[^ ]+) (?<BOOL>[^ ]+) (?<STRING>.+)$
    /// ```
    fn dummy_test() -> Section {
        let span = Span::new(&Arc::from(Path::new("parsers.conf")), 1);
        let mut s = Section::new(SectionKind::Parser, span.clone());
        s.push("Name", "dummy_test", span.clone());
        s.push("Format", "regex", span.clone());
        s.push(
            "Regex",
            "^(?<INT>[^ ]+) (?<FLOAT>[^ ]+) (?<BOOL>[^ ]+) (?<STRING>.+)$",
            span,
        );
        s
    }

    /// Builds the filter from `entries` (lines 2, 3, … of `test.conf`) with `dummy_test`
    /// defined besides the built-in parsers.
    fn build(entries: &[(&str, &str)]) -> Result<Box<dyn Filter>, String> {
        let mut section = Section::new(SectionKind::Filter, testing::span(1));
        for (i, (k, v)) in entries.iter().enumerate() {
            section.push(*k, *v, testing::span(i as u32 + 2));
        }
        let config = Config {
            sections: vec![dummy_test()],
            path: None,
        };
        let ctx = BuildContext::standalone("parser.0", config).map_err(|e| format!("{e:?}"))?;
        let refs: Vec<&Entry> = section.entries.iter().collect();
        (PLUGIN.build)(&ctx, &section, &refs).map_err(|e| e.to_string())
    }

    /// Runs the filter over `input` (JSON records) and returns the records.
    fn run(entries: &[(&str, &str)], input: &str) -> Vec<Record> {
        let mut f = build(entries).unwrap_or_else(|e| panic!("build {entries:?}: {e}"));
        let mut recs = testing::records(input);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(f.filter("dummy.data", &mut recs));
        recs
    }

    /// The bodies as compact JSON (key order and duplicate keys visible).
    fn bodies(recs: Vec<Record>) -> String {
        let v: Vec<Value> = recs.into_iter().map(|r| Value::Map(r.body)).collect();
        serde_json::to_string(&v).unwrap()
    }

    fn check(entries: &[(&str, &str)], input: &str, expected: &str) {
        let got = bodies(run(entries, input));
        assert_eq!(
            got,
            testing::normalize(expected),
            "config {entries:?}\ninput {input}"
        );
    }

    const DOC_RECORD: &str =
        r#"{"data":"100 0.5 true This is example", "key1":"value1", "key2":"value2"}"#;

    #[test]
    fn doc_example_getting_started() {
        // Docs, "Get started": Dummy {"data":"100 0.5 true This is example"} gives
        // `{"INT"=>"100", "FLOAT"=>"0.5", "BOOL"=>"true", "STRING"=>"This is example"}`.
        check(
            &[("Key_Name", "data"), ("Parser", "dummy_test")],
            r#"{"data":"100 0.5 true This is example"}"#,
            r#"{"INT":"100","FLOAT":"0.5","BOOL":"true","STRING":"This is example"}"#,
        );
        // Without Reserve_Data the other fields go.
        check(
            &[("Key_Name", "data"), ("Parser", "dummy_test")],
            DOC_RECORD,
            r#"{"INT":"100","FLOAT":"0.5","BOOL":"true","STRING":"This is example"}"#,
        );
    }

    #[test]
    fn doc_example_reserve_data() {
        // Docs, "Preserve original fields", Reserve_Data On:
        // `{"INT"=>"100", "FLOAT"=>"0.5", "BOOL"=>"true", "STRING"=>"This is example",
        //   "key1"=>"value1", "key2"=>"value2"}`.
        check(
            &[
                ("Key_Name", "data"),
                ("Parser", "dummy_test"),
                ("Reserve_Data", "On"),
            ],
            DOC_RECORD,
            r#"{"INT":"100","FLOAT":"0.5","BOOL":"true","STRING":"This is example",
                "key1":"value1","key2":"value2"}"#,
        );
    }

    #[test]
    fn doc_example_reserve_data_and_preserve_key() {
        // Docs, Reserve_Data On and Preserve_Key On:
        // `{"INT"=>"100", "FLOAT"=>"0.5", "BOOL"=>"true", "STRING"=>"This is example",
        //   "data"=>"100 0.5 true This is example", "key1"=>"value1", "key2"=>"value2"}`.
        check(
            &[
                ("Key_Name", "data"),
                ("Parser", "dummy_test"),
                ("Reserve_Data", "On"),
                ("Preserve_Key", "On"),
            ],
            DOC_RECORD,
            r#"{"INT":"100","FLOAT":"0.5","BOOL":"true","STRING":"This is example",
                "data":"100 0.5 true This is example","key1":"value1","key2":"value2"}"#,
        );
        // The original fields keep their order, the parsed key among them.
        check(
            &[
                ("Key_Name", "data"),
                ("Parser", "dummy_test"),
                ("Reserve_Data", "On"),
                ("Preserve_Key", "On"),
            ],
            r#"{"key1":"value1", "data":"1 2 3 four", "key2":"value2"}"#,
            r#"{"INT":"1","FLOAT":"2","BOOL":"3","STRING":"four",
                "key1":"value1","data":"1 2 3 four","key2":"value2"}"#,
        );
    }

    #[test]
    fn preserve_key_alone_keeps_the_field_after_the_parsed_ones() {
        // Docs: "Keep the original key_name field in the parsed result."
        check(
            &[
                ("Key_Name", "data"),
                ("Parser", "dummy_test"),
                ("Preserve_Key", "On"),
            ],
            DOC_RECORD,
            r#"{"INT":"100","FLOAT":"0.5","BOOL":"true","STRING":"This is example",
                "data":"100 0.5 true This is example"}"#,
        );
    }

    #[test]
    fn records_that_do_not_parse_pass_through_unchanged() {
        let input = r#"[{"data":"only-one-word", "k":"v"}, {"other":"100 0.5 true x"},
            {"data": 100}, {"data": {"INT": "1"}}, {"data": null}, {}]"#;
        for extra in [
            &[][..],
            &[("Reserve_Data", "On"), ("Preserve_Key", "On")][..],
        ] {
            let mut cfg = vec![("Key_Name", "data"), ("Parser", "dummy_test")];
            cfg.extend_from_slice(extra);
            let got = run(&cfg, input);
            let want = testing::records(input);
            assert_eq!(got, want, "{cfg:?}");
        }
    }

    #[test]
    fn parsers_are_tried_in_order_and_the_first_that_parses_wins() {
        let input = r#"[{"log":"{\"a\":\"1\"}"}, {"log":"1 2 3 four"}, {"log":"nothing"}]"#;
        // json first: the JSON line is read as JSON, the other by dummy_test.
        check(
            &[
                ("Key_Name", "log"),
                ("Parser", "json"),
                ("Parser", "dummy_test"),
            ],
            input,
            r#"[{"a":"1"}, {"INT":"1","FLOAT":"2","BOOL":"3","STRING":"four"}, {"log":"nothing"}]"#,
        );
        // A JSON text that dummy_test can also read: the order decides.
        let both = r#"{"log":"{\"a\": 1}"}"#;
        check(
            &[
                ("Key_Name", "log"),
                ("Parser", "json"),
                ("Parser", "dummy_test"),
            ],
            both,
            r#"{"a":1}"#,
        );
        check(
            &[
                ("Key_Name", "log"),
                ("Parser", "dummy_test"),
                ("Parser", "json"),
            ],
            r#"{"log":"{\"a\": 1} x y"}"#,
            r#"{"INT":"{\"a\":","FLOAT":"1}","BOOL":"x","STRING":"y"}"#,
        );
    }

    #[test]
    fn record_time_becomes_the_parsed_time() {
        // The built-in nginx parser reads `time` with Time_Format %d/%b/%Y:%H:%M:%S %z.
        let line = r#"10.1.128.166 - - [19/Dec/2019:17:41:12 +0000] "GET / HTTP/1.1" 200 612 "-" "hey/0.0.1" "52.95.4.2""#;
        let input =
            serde_json::json!([{ "log": line, "n": 1 }, { "log": "1 2 3 four" }]).to_string();
        let cfg = [
            ("Key_Name", "log"),
            ("Parser", "nginx"),
            ("Parser", "dummy_test"),
        ];
        let out = run(&cfg, &input);
        assert_eq!(out[0].time, EventTime::from_parts(1_576_777_272, 0));
        assert_eq!(out[0].body.get("code").and_then(Value::as_str), Some("200"));
        assert!(out[0].body.get("n").is_none());
        // dummy_test reads no time: the record keeps its own.
        assert_eq!(out[1].time, EventTime::from_parts(1_700_000_001, 0));
        assert_eq!(
            out[1].body.get("STRING").and_then(Value::as_str),
            Some("four")
        );
    }

    #[test]
    fn reserve_data_appends_original_fields_even_when_a_key_repeats() {
        // flb_msgpack_expand_map appends without merging: `a` appears twice.
        let cfg = [
            ("Key_Name", "log"),
            ("Parser", "json"),
            ("Reserve_Data", "On"),
        ];
        let got = bodies(run(&cfg, r#"{"a":"old", "log":"{\"a\":\"new\"}"}"#));
        assert_eq!(got, r#"[{"a":"new","a":"old"}]"#);
    }

    #[test]
    fn unescape_key_is_accepted() {
        check(
            &[
                ("Key_Name", "data"),
                ("Parser", "dummy_test"),
                ("Unescape_Key", "On"),
            ],
            r#"{"data":"1 2 3 four"}"#,
            r#"{"INT":"1","FLOAT":"2","BOOL":"3","STRING":"four"}"#,
        );
    }

    #[test]
    fn config_errors_name_file_line_and_key() {
        let e = build(&[
            ("Key_Name", "data"),
            ("Parser", "dummy_test"),
            ("Parser", "no_such_parser"),
        ])
        .err()
        .unwrap();
        assert!(
            e.starts_with("test.conf:4: Parser:") && e.contains("'no_such_parser' not found"),
            "{e}"
        );
        let e = build(&[("Parser", "dummy_test")]).err().unwrap();
        assert!(e.starts_with("test.conf:1: Key_Name:"), "{e}");
        let e = build(&[("Key_Name", "data")]).err().unwrap();
        assert!(e.starts_with("test.conf:1: Parser:"), "{e}");
        let e = build(&[
            ("Key_Name", "data"),
            ("Parser", "dummy_test"),
            ("Reserve_Data", "maybe"),
        ])
        .err()
        .unwrap();
        assert!(e.starts_with("test.conf:4: Reserve_Data:"), "{e}");
        let e = build(&[("Key_Name", "data"), ("Parsr", "dummy_test")])
            .err()
            .unwrap();
        assert!(
            e.starts_with("test.conf:3: Parsr:") && e.contains("did you mean 'Parser'"),
            "{e}"
        );
    }
}
