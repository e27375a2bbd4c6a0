//! `[PARSER]` / `[MULTILINE_PARSER]` sections: errors with file:line and key, overriding a
//! built-in, and YAML files.

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers of an integration test are test code

mod common;

use common::{check, classic_config, rfc3339, yaml_config};
use logferry_parsers::Parsers;
use serde_json::json;

/// (section text, expected error message)
const ERRORS: &[(&str, &str)] = &[
    (
        "[PARSER]\n    Name bad\n    Format regex\n    Regex ^(?<a>[a-z]+$\n",
        "p.conf:4: Regex: parser 'bad': invalid regular expression",
    ),
    (
        "[PARSER]\n    Name bad\n    Format xml\n",
        "p.conf:3: Format: parser 'bad': unknown format 'xml'",
    ),
    (
        "[PARSER]\n    Name bad\n    Format regex\n",
        "p.conf:1: Regex: parser 'bad' has Format regex but no Regex",
    ),
    (
        "[PARSER]\n    Name bad\n    Format json\n    Types a:integer b:number\n",
        "p.conf:4: Types: parser 'bad': unknown type 'number' for 'b'",
    ),
    (
        "[PARSER]\n    Name bad\n    Format json\n    Types justakey\n",
        "p.conf:4: Types: parser 'bad': expected 'field:type', got 'justakey'",
    ),
    (
        "[PARSER]\n    Name bad\n    Format json\n    Time_Format %Y-%Q\n",
        "p.conf:4: Time_Format: Time_Format: unsupported conversion '%Q'",
    ),
    (
        "[PARSER]\n    Name bad\n    Format json\n    Time_Offset +2h\n",
        "p.conf:4: Time_Offset: expected an offset",
    ),
    (
        "[PARSER]\n    Name bad\n    Format json\n    Time_Keep maybe\n",
        "p.conf:4: Time_Keep: expected On/Off",
    ),
    (
        "[PARSER]\n    Name bad\n    Format json\n    Decode_Field_As base64 log\n",
        "p.conf:4: Decode_Field_As: parser 'bad': unknown decoder 'base64'",
    ),
    (
        "[PARSER]\n    Name bad\n    Format json\n    Time_Fromat %s\n",
        "p.conf:4: Time_Fromat: unknown key for parser (did you mean 'Time_Format'?)",
    ),
    (
        "[PARSER]\n    Format json\n",
        "p.conf:1: Name: missing required key for parser",
    ),
    (
        "[MULTILINE_PARSER]\n    Name ml\n    Type regex\n    Rule \"start_state\" \"/(unclosed/\" \"cont\"\n    Rule \"cont\" \"/^x/\" \"cont\"\n",
        "p.conf:4: Rule: multiline parser 'ml': invalid regular expression",
    ),
    (
        "[MULTILINE_PARSER]\n    Name ml\n    Type regex\n    Rule \"start_state\" \"/^a/\" \"nowhere\"\n",
        "p.conf:4: Rule: multiline parser 'ml': next state 'nowhere' is not the state of any rule",
    ),
    (
        "[MULTILINE_PARSER]\n    Name ml\n    Type regex\n    Rule \"cont\" \"/^a/\" \"cont\"\n",
        "p.conf:4: Rule: multiline parser 'ml' of type regex needs a rule for \"start_state\"",
    ),
    (
        "[MULTILINE_PARSER]\n    Name ml\n    Type regex\n    Rule \"start_state\" \"/^a/\"\n",
        "p.conf:4: Rule: multiline parser 'ml': a rule is \"state\" \"/regex/\" \"next_state\" (3 parts)",
    ),
    (
        "[MULTILINE_PARSER]\n    Name ml\n    Type lines\n",
        "p.conf:3: Type: multiline parser 'ml': unknown type 'lines'",
    ),
    (
        "[MULTILINE_PARSER]\n    Name ml\n    Type endswith\n",
        "p.conf:1: Match_String: multiline parser 'ml' of type endswith needs Match_String",
    ),
    (
        "[MULTILINE_PARSER]\n    Name ml\n    Type regex\n    Parser nope\n    Rule \"start_state\" \"/^a/\" \"start_state\"\n",
        "p.conf:4: Parser: multiline parser 'ml' names an undefined parser 'nope'",
    ),
    (
        "[MULTILINE_PARSER]\n    Name ml\n    Type regex\n    Flush_Timeout soon\n    Rule \"start_state\" \"/^a/\" \"start_state\"\n",
        "p.conf:4: Flush_Timeout: expected milliseconds",
    ),
];

#[test]
fn parser_error_table() {
    for (text, expected) in ERRORS {
        let errors = Parsers::from_config(&classic_config("p.conf", text))
            .err()
            .unwrap_or_else(|| panic!("no error for:\n{text}"));
        assert_eq!(errors.len(), 1, "{errors:?}");
        let msg = errors[0].to_string();
        assert!(
            msg.starts_with(expected),
            "for:\n{text}\ngot:      {msg}\nexpected: {expected}…"
        );
    }
}

#[test]
fn every_error_is_reported() {
    let text = "[PARSER]\n    Name a\n    Format xml\n\n[PARSER]\n    Name b\n    Format regex\n    Regex (\n    Types x:y\n";
    let errors = Parsers::from_config(&classic_config("p.conf", text)).unwrap_err();
    let msgs: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(msgs.len(), 3, "{msgs:?}");
    assert!(msgs[0].starts_with("p.conf:3: Format:"), "{msgs:?}");
    assert!(msgs[1].starts_with("p.conf:8: Regex:"), "{msgs:?}");
    assert!(msgs[2].starts_with("p.conf:9: Types:"), "{msgs:?}");
}

#[test]
fn a_parser_section_overrides_a_builtin() {
    let text = r#"
[PARSER]
    Name   nginx
    Format regex
    Regex  ^(?<remote>\S+) \S+ \S+ \[(?<time>[^\]]+)\] "(?<request>[^"]*)" (?<code>\d+)
    Time_Key time
    Time_Format %d/%b/%Y:%H:%M:%S %z
    Types code:integer

[PARSER]
    Name   nginx
    Format json
"#;
    let parsers = Parsers::from_config(&classic_config("p.conf", text)).unwrap();
    let nginx = parsers.get("nginx").unwrap();
    check(
        &nginx,
        r#"10.1.128.166 - - [19/Dec/2019:17:41:12 +0000] "GET / HTTP/1.1" 200 612 "-" "hey/0.0.1" "52.95.4.2""#,
        Some(json!({"remote": "10.1.128.166", "request": "GET / HTTP/1.1", "code": 200})),
        Some(rfc3339("2019-12-19T17:41:12Z")),
    );
    // Still one `nginx`; the other built-ins are there.
    assert_eq!(parsers.names().filter(|n| *n == "nginx").count(), 1);
    assert!(parsers.get("apache").is_some());
    // The built-in itself is unchanged for others.
    assert_eq!(
        Parsers::builtin()
            .get("nginx")
            .unwrap()
            .parse("x")
            .map(|_| ()),
        None
    );
    assert!(Parsers::builtin()
        .get("nginx")
        .unwrap()
        .parse(r#"1.2.3.4 - - [19/Dec/2019:17:41:12 +0000] "GET / HTTP/1.1" 200 1 "-" "a""#)
        .unwrap()
        .body
        .contains_key("agent"));
}

#[test]
fn custom_parsers_are_listed_after_builtins() {
    let text = "[PARSER]\n    Name zz_custom\n    Format logfmt\n";
    let parsers = Parsers::from_config(&classic_config("p.conf", text)).unwrap();
    assert_eq!(parsers.names().last(), Some("zz_custom"));
    assert_eq!(parsers.get("zz_custom").unwrap().format(), "logfmt");
}

#[test]
fn yaml_parsers_and_multiline_rules() {
    let text = r#"
parsers:
  - name: yjson
    format: json
    time_key: t
    time_format: "%s"
multiline_parsers:
  - name: ystack
    type: regex
    flush_timeout: 1000
    rules:
      - state: start_state
        regex: '/^\d{4}-\d\d-\d\d "start" (.*)/'
        next_state: cont
      - state: cont
        regex: '/^\s+at .*/'
        next_state: cont
"#;
    let parsers = Parsers::from_config(&yaml_config("p.yaml", text)).unwrap();
    check(
        &parsers.get("yjson").unwrap(),
        r#"{"t":"10","a":1}"#,
        Some(json!({"a": 1})),
        Some(rfc3339("1970-01-01T00:00:10Z")),
    );
    let ml = parsers.multiline("ystack").unwrap();
    assert_eq!(ml.flush_timeout(), std::time::Duration::from_millis(1000));
    let mut g = ml.new_group();
    let mut out = Vec::new();
    for line in ["2024-01-01 \"start\" boom", "    at a.b(C.java:1)", "next"] {
        let mut body = logferry_core::Map::new();
        body.insert("log", line);
        g.push(
            logferry_core::Record::new(logferry_core::EventTime(1), body),
            &mut out,
        );
    }
    let logs: Vec<&str> = out
        .iter()
        .map(|r| r.body.get("log").unwrap().as_str().unwrap())
        .collect();
    assert_eq!(
        logs,
        ["2024-01-01 \"start\" boom\n    at a.b(C.java:1)", "next"]
    );
}
