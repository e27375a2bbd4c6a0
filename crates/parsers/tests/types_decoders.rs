//! `Types` casts and the `Decode_Field` / `Decode_Field_As` decoders.

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers of an integration test are test code

mod common;

use common::{check, classic_config};
use logferry_core::EventTime;
use logferry_parsers::Parsers;
use serde_json::json;

const PARSERS: &str = r#"
[PARSER]
    Name    typed
    Format  regex
    Regex   ^(?<i>\S*) (?<f>\S*) (?<b>\S*) (?<h>\S*) (?<s>\S*) (?<plain>\S*)$
    Types   i:integer f:float b:bool h:hex s:string

[PARSER]
    Name    typed_time_kept
    Format  regex
    Regex   ^(?<t>\S+) (?<n>\S+) (?<t2>\S+)$
    Time_Key t
    Time_Format %s
    Time_Keep On
    Types   t:integer n:integer t2:integer

[PARSER]
    Name    typed_time_dropped
    Format  regex
    Regex   ^(?<t>\S+) (?<n>\S+)$
    Time_Key t
    Time_Format %s
    Types   t:integer n:float

[PARSER]
    Name    typed_logfmt
    Format  logfmt
    Types   n:integer ok:bool ratio:float

[PARSER]
    Name    keep_empty
    Format  regex
    Regex   ^(?<a>[^,]*),(?<b>[^,]*)$
    Skip_Empty_Values Off

[PARSER]
    Name    skip_empty
    Format  regex
    Regex   ^(?<a>[^,]*),(?<b>[^,]*)$

[PARSER]
    Name    gaps
    Format  regex
    Regex   ^(?<t>[^,]*),(?<a>[^,]*),(?<b>[^,]*)(?:,(?<c>[^,]*))?,(?<n>[^,]*)$
    Time_Key t
    Time_Format %s
    Types   n:integer

[PARSER]
    Name    optional
    Format  regex
    Regex   ^(?<a>\w+)(?: (?<b>\w+))?$

[PARSER]
    Name    docker_json_log
    Format  json
    Decode_Field_As escaped log do_next
    Decode_Field    json    log

[PARSER]
    Name    try_next_stops_on_success
    Format  json
    Decode_Field_As escaped log try_next
    Decode_Field    json    log

[PARSER]
    Name    decode_as_json
    Format  json
    Decode_Field_As json log

[PARSER]
    Name    utf8
    Format  json
    Decode_Field_As escaped_utf8 log do_next
    Decode_Field_As escaped      log

[PARSER]
    Name    lookaround
    Format  regex
    Regex   ^(?<user>\w+)(?=@)@(?<domain>\S+)$
"#;

fn parsers() -> Parsers {
    Parsers::from_config(&classic_config("types.conf", PARSERS)).unwrap()
}

#[test]
fn types_cast_fields() {
    let p = parsers().get("typed").unwrap();
    check(
        &p,
        "42 3.5 true ff x 7",
        Some(json!({"i": 42, "f": 3.5, "b": true, "h": 255, "s": "x", "plain": "7"})),
        None,
    );
    // Fluent Bit's C conversions: unreadable numbers are 0, an unknown bool stays text.
    check(
        &p,
        "abc 1e2x maybe 0x10 y z",
        Some(json!({"i": 0, "f": 100.0, "b": "maybe", "h": 16, "s": "y", "plain": "z"})),
        None,
    );
    check(
        &p,
        "-17 -0.25 FALSE zz s t",
        Some(json!({"i": -17, "f": -0.25, "b": false, "h": 0, "s": "s", "plain": "t"})),
        None,
    );
    let l = parsers().get("typed_logfmt").unwrap();
    check(
        &l,
        "n=12 ok=true ratio=0.5 other=1",
        Some(json!({"n": 12, "ok": true, "ratio": 0.5, "other": "1"})),
        None,
    );
}

/// Each regex group's role (the time field, a `Types` cast, plain text) is worked out when the
/// parser is built; the results are what comparing names on every line gave.
#[test]
fn the_time_key_with_types() {
    let p = parsers().get("typed_time_kept").unwrap();
    // Time_Keep On: the time field stays, cast by Types like any other field.
    check(
        &p,
        "1700000000 5 6",
        Some(json!({"t": 1700000000, "n": 5, "t2": 6})),
        Some(EventTime(1_700_000_000_000_000_000)),
    );
    // A time that does not read drops the field and leaves the time unset.
    check(&p, "never 5 6", Some(json!({"n": 5, "t2": 6})), None);
    let p = parsers().get("typed_time_dropped").unwrap();
    check(
        &p,
        "1700000000 2",
        Some(json!({"n": 2.0})),
        Some(EventTime(1_700_000_000_000_000_000)),
    );
}

#[test]
fn empty_and_unmatched_groups() {
    let ps = parsers();
    check(
        &ps.get("keep_empty").unwrap(),
        "x,",
        Some(json!({"a": "x", "b": ""})),
        None,
    );
    check(
        &ps.get("skip_empty").unwrap(),
        "x,",
        Some(json!({"a": "x"})),
        None,
    );
    check(
        &ps.get("optional").unwrap(),
        "one",
        Some(json!({"a": "one"})),
        None,
    );
    check(
        &ps.get("optional").unwrap(),
        "one two",
        Some(json!({"a": "one", "b": "two"})),
        None,
    );
    check(&ps.get("optional").unwrap(), "one two three", None, None);
}

/// Groups left out (an unreadable time, an empty value under `Skip_Empty_Values`, an
/// optional group that did not take part) leave the others in the pattern's order, each under
/// its own name and with its own value and type; the pairs are made in place, and a gap moves
/// the later ones down.
#[test]
fn left_out_groups_keep_the_others_in_order() {
    let p = parsers().get("gaps").unwrap();
    let pairs = |line: &str| -> Vec<(String, serde_json::Value)> {
        let parsed = p.parse(line).expect("matches");
        parsed
            .body
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::to_value(v).expect("serializes")))
            .collect()
    };
    let s = |k: &str, v: &str| (k.to_string(), json!(v));
    assert_eq!(
        pairs("1700000000,x,y,z,7"),
        vec![
            s("a", "x"),
            s("b", "y"),
            s("c", "z"),
            ("n".into(), json!(7))
        ]
    );
    assert_eq!(
        pairs("never,x,,z,7"),
        vec![s("a", "x"), s("c", "z"), ("n".into(), json!(7))]
    );
    assert_eq!(
        pairs("never,,y,8"),
        vec![s("b", "y"), ("n".into(), json!(8))]
    );
    assert_eq!(
        pairs("never,,,,"),
        Vec::<(String, serde_json::Value)>::new()
    );
    assert_eq!(
        pairs(",x,y,9"),
        vec![s("a", "x"), s("b", "y"), ("n".into(), json!(9))]
    );
}

#[test]
fn decoders() {
    let ps = parsers();
    // Decode_Field json appends the decoded keys after the record's own.
    check(
        &ps.get("docker_json_log").unwrap(),
        r#"{"log":"{\"status\": \"up\", \"n\": 1}","stream":"stdout"}"#,
        Some(
            json!({"log": "{\"status\": \"up\", \"n\": 1}", "stream": "stdout", "status": "up", "n": 1}),
        ),
        None,
    );
    // Not JSON: nothing added, the field stays (unescaped by the first decoder).
    check(
        &ps.get("docker_json_log").unwrap(),
        r#"{"log":"plain\\ttext","stream":"stdout"}"#,
        Some(json!({"log": "plain\ttext", "stream": "stdout"})),
        None,
    );
    // try_next only moves on when a decoder fails; `escaped` never does.
    check(
        &ps.get("try_next_stops_on_success").unwrap(),
        r#"{"log":"{\"status\": \"up\"}"}"#,
        Some(json!({"log": "{\"status\": \"up\"}"})),
        None,
    );
    // Decode_Field_As json replaces the field with the structure.
    check(
        &ps.get("decode_as_json").unwrap(),
        r#"{"log":"{\"a\":{\"b\":[1,2]}}","x":1}"#,
        Some(json!({"log": {"a": {"b": [1, 2]}}, "x": 1})),
        None,
    );
    check(
        &ps.get("decode_as_json").unwrap(),
        r#"{"log":"[1,2]","x":1}"#,
        Some(json!({"log": "[1,2]", "x": 1})),
        None,
    );
    // escaped_utf8 then escaped (the old Docker definition).
    check(
        &ps.get("utf8").unwrap(),
        r#"{"log":"\\u0009tab\\x41 done\\n"}"#,
        Some(json!({"log": "\ttabA done\n"})),
        None,
    );
}

#[test]
fn lookaround_falls_back_to_fancy_regex() {
    let p = parsers().get("lookaround").unwrap();
    assert_eq!(p.regex_engine(), Some("fancy-regex"));
    check(
        &p,
        "alice@example.com",
        Some(json!({"user": "alice", "domain": "example.com"})),
        None,
    );
    check(&p, "alice at example.com", None, None);
}
