//! Multiline: CRI partials then Java traces, Docker's 16 KiB splits, streams kept apart, the
//! regex built-ins on real traces, custom `[MULTILINE_PARSER]`s, flush_timeout.

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers of an integration test are test code

mod common;

use std::time::{Duration, Instant};

use common::{classic_config, fixture, rfc3339};
use logferry_core::{EventTime, Map, Record, Value};
use logferry_parsers::{MultilineGroup, Parsers};

/// A record as tail emits it for a raw line: `{"log": line}`.
fn raw(line: &str, time: EventTime) -> Record {
    let mut body = Map::new();
    body.insert("log", line);
    Record::new(time, body)
}

fn lines(name: &str) -> Vec<String> {
    std::fs::read_to_string(fixture(name))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn log_of(r: &Record) -> &str {
    r.body
        .get("log")
        .and_then(Value::as_str)
        .unwrap_or("<no log>")
}

fn push_all(group: &mut MultilineGroup, records: Vec<Record>) -> Vec<Record> {
    let mut out = Vec::new();
    for r in records {
        group.push(r, &mut out);
    }
    out
}

/// Feeds raw lines of a text fixture through a regex built-in and returns the `log`s out.
fn run_builtin(name: &str, fixture_name: &str) -> Vec<String> {
    let ml = Parsers::builtin().multiline(name).unwrap();
    let mut g = ml.new_group();
    let input = lines(fixture_name)
        .iter()
        .map(|l| raw(l, EventTime(1)))
        .collect();
    let mut out = push_all(&mut g, input);
    g.flush(&mut out);
    out.iter().map(|r| log_of(r).to_string()).collect()
}

#[test]
fn java_trace_split_across_cri_partials_becomes_one_record() {
    let parsers = Parsers::builtin();
    let mut cri = parsers.multiline("cri").unwrap().new_group();
    let mut java = parsers.multiline("java").unwrap().new_group();
    let mut out = Vec::new();
    for line in lines("cri-java.log") {
        let mut joined = Vec::new();
        cri.push(raw(&line, EventTime(7)), &mut joined);
        for r in joined {
            java.push(r, &mut out);
        }
    }
    java.flush(&mut out);
    let logs: Vec<&str> = out.iter().map(log_of).collect();
    assert_eq!(
        logs,
        [
            "Starting app",
            "Exception in thread \"main\" java.lang.IllegalStateException: something went wrong\n\
             \tat com.example.App.run(App.java:42)\n\
             \tat com.example.App.main(App.java:10)\n\
             Caused by: java.io.IOException: disk full\n\
             \tat com.example.Store.write(Store.java:7)\n\
             \t... 2 more",
            "Next message",
        ]
    );
    // The joined record keeps the first part's time and keys.
    let trace = &out[1];
    assert_eq!(trace.time, rfc3339("2024-05-01T10:00:01.000000001Z"));
    assert_eq!(
        trace.body.get("stream").and_then(Value::as_str),
        Some("stdout")
    );
    assert_eq!(trace.body.get("_p").and_then(Value::as_str), Some("P"));
    assert_eq!(
        trace.body.get("time").and_then(Value::as_str),
        Some("2024-05-01T10:00:01.000000001Z")
    );
    assert!(cri.pending_since().is_none() && java.pending_since().is_none());
}

#[test]
fn cri_records_parsed_by_the_cri_parser_join_too() {
    // Records already parsed by the `cri` [PARSER] carry `logtag` and `message`.
    let parsers = Parsers::builtin();
    let cri_parser = parsers.get("cri").unwrap();
    let mut g = parsers.multiline("cri").unwrap().new_group();
    let mut out = Vec::new();
    for line in [
        "2024-05-01T10:00:00.1Z stdout P hello ",
        "2024-05-01T10:00:00.2Z stdout P big ",
        "2024-05-01T10:00:00.3Z stdout F world",
    ] {
        let p = cri_parser.parse(line).unwrap();
        g.push(Record::new(p.time.unwrap(), p.body), &mut out);
    }
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].body.get("message").and_then(Value::as_str),
        Some("hello big world")
    );
    assert_eq!(out[0].time, rfc3339("2024-05-01T10:00:00.1Z"));
}

#[test]
fn interleaved_stdout_and_stderr_stay_separate() {
    let parsers = Parsers::builtin();
    let java = parsers.multiline("java").unwrap();
    // One CRI group per file: it keeps the streams apart itself (key_group `stream`).
    let mut cri = parsers.multiline("cri").unwrap().new_group();
    let mut joined = Vec::new();
    for line in lines("cri-interleaved.log") {
        cri.push(raw(&line, EventTime(1)), &mut joined);
    }
    let partials: Vec<(&str, &str)> = joined
        .iter()
        .map(|r| {
            (
                r.body.get("stream").and_then(Value::as_str).unwrap_or(""),
                log_of(r),
            )
        })
        .collect();
    assert_eq!(
        partials,
        [
            ("stderr", "WARN unrelated stderr line"),
            (
                "stdout",
                "Exception in thread \"main\" java.lang.RuntimeException: out of cheese"
            ),
            ("stdout", "\tat a.B.c(B.java:1)"),
            (
                "stderr",
                "Exception in thread \"worker\" java.lang.IllegalArgumentException: bad argument"
            ),
            ("stderr", "\tat x.Y.z(Y.java:2)"),
            ("stdout", "\tat a.B.main(B.java:9)"),
            ("stderr", "done on stderr"),
            ("stdout", "done on stdout"),
        ]
    );
    // Then one Java group per stream.
    let mut stdout = java.new_group();
    let mut stderr = java.new_group();
    let (mut out_o, mut out_e) = (Vec::new(), Vec::new());
    for r in joined.clone() {
        match r.body.get("stream").and_then(Value::as_str) {
            Some("stderr") => stderr.push(r, &mut out_e),
            _ => stdout.push(r, &mut out_o),
        }
    }
    stdout.flush(&mut out_o);
    stderr.flush(&mut out_e);
    let o: Vec<&str> = out_o.iter().map(log_of).collect();
    let e: Vec<&str> = out_e.iter().map(log_of).collect();
    assert_eq!(
        o,
        [
            "Exception in thread \"main\" java.lang.RuntimeException: out of cheese\n\tat a.B.c(B.java:1)\n\tat a.B.main(B.java:9)",
            "done on stdout",
        ]
    );
    assert_eq!(
        e,
        [
            "WARN unrelated stderr line",
            "Exception in thread \"worker\" java.lang.IllegalArgumentException: bad argument\n\tat x.Y.z(Y.java:2)",
            "done on stderr",
        ]
    );
    // A single group for both streams would mix them: that is why the caller keeps two.
    let mut mixed = java.new_group();
    let mut out = push_all(&mut mixed, joined);
    mixed.flush(&mut out);
    assert!(out
        .iter()
        .any(|r| log_of(r).contains("Y.java:2)\n\tat a.B.main")));
}

/// A Docker json-file line.
fn docker_line(log: &str, stream: &str, time: &str) -> String {
    serde_json::json!({"log": log, "stream": stream, "time": time}).to_string()
}

#[test]
fn docker_16k_split_is_joined() {
    let message: String = (0..40_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let full = format!("{message}\n");
    let chunks: Vec<&str> = [&full[..16_384], &full[16_384..32_768], &full[32_768..]].to_vec();
    let ml = Parsers::builtin().multiline("docker").unwrap();
    let mut g = ml.new_group();
    let mut out = Vec::new();
    g.push(
        raw(
            &docker_line(chunks[0], "stdout", "2021-02-01T01:40:03.53412Z"),
            EventTime(1),
        ),
        &mut out,
    );
    // A complete stderr line in between does not disturb the stdout message.
    g.push(
        raw(
            &docker_line("err!\n", "stderr", "2021-02-01T01:40:03.6Z"),
            EventTime(1),
        ),
        &mut out,
    );
    g.push(
        raw(
            &docker_line(chunks[1], "stdout", "2021-02-01T01:40:03.7Z"),
            EventTime(1),
        ),
        &mut out,
    );
    assert_eq!(out.len(), 1, "only the stderr line is complete so far");
    assert!(g.pending_since().is_some());
    g.push(
        raw(
            &docker_line(chunks[2], "stdout", "2021-02-01T01:40:03.8Z"),
            EventTime(1),
        ),
        &mut out,
    );
    assert_eq!(out.len(), 2);
    assert_eq!(log_of(&out[0]), "err!\n");
    assert_eq!(log_of(&out[1]), full);
    assert_eq!(out[1].time, rfc3339("2021-02-01T01:40:03.53412Z"));
    assert_eq!(
        out[1].body.get("stream").and_then(Value::as_str),
        Some("stdout")
    );
    assert_eq!(
        out[1].body.get("time").and_then(Value::as_str),
        Some("2021-02-01T01:40:03.53412Z")
    );
    assert!(g.pending_since().is_none());

    // Already-parsed records (tail with `Parser docker`) join the same way.
    let parser = Parsers::builtin().get("docker").unwrap();
    let mut g = ml.new_group();
    let mut out = Vec::new();
    for c in &chunks {
        let p = parser
            .parse(&docker_line(c, "stdout", "2021-02-01T01:40:03.53412Z"))
            .unwrap();
        g.push(Record::new(p.time.unwrap(), p.body), &mut out);
    }
    assert_eq!(out.len(), 1);
    assert_eq!(log_of(&out[0]).len(), full.len());
}

#[test]
fn flush_timeout_is_enforced_through_pending_since() {
    let ml = Parsers::builtin().multiline("docker").unwrap();
    assert_eq!(ml.flush_timeout(), Duration::from_millis(4000));
    let mut g = ml.new_group().with_buffer_limit(1 << 20);
    let mut out = Vec::new();
    assert_eq!(g.pending_since(), None);
    let before = Instant::now();
    g.push(
        raw(
            &docker_line("partial ", "stdout", "2021-01-01T00:00:00.0Z"),
            EventTime(1),
        ),
        &mut out,
    );
    let since = g.pending_since().unwrap();
    assert!(since >= before && since <= Instant::now());
    // More parts do not move the start of the pending message.
    g.push(
        raw(
            &docker_line("still ", "stdout", "2021-01-01T00:00:01.0Z"),
            EventTime(1),
        ),
        &mut out,
    );
    assert_eq!(g.pending_since(), Some(since));
    assert!(out.is_empty());
    // The caller's timer: once flush_timeout has passed since `pending_since`, flush.
    let deadline = since + ml.flush_timeout();
    assert!(deadline > Instant::now());
    g.flush(&mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(log_of(&out[0]), "partial still ");
    assert_eq!(g.pending_since(), None);
    // Flushing with nothing pending emits nothing.
    g.flush(&mut out);
    assert_eq!(out.len(), 1);
}

#[test]
fn buffer_limit_cuts_a_runaway_message() {
    let ml = Parsers::builtin().multiline("docker").unwrap();
    let mut g = ml.new_group().with_buffer_limit(10);
    let mut out = Vec::new();
    g.push(
        raw(
            &docker_line("0123456", "stdout", "2021-01-01T00:00:00.0Z"),
            EventTime(1),
        ),
        &mut out,
    );
    g.push(
        raw(
            &docker_line("789abcdef", "stdout", "2021-01-01T00:00:00.0Z"),
            EventTime(1),
        ),
        &mut out,
    );
    assert_eq!(out.len(), 1);
    assert_eq!(log_of(&out[0]), "0123456789");
}

#[test]
fn java_on_docker_records_joins_without_doubling_newlines() {
    let ml = Parsers::builtin().multiline("java").unwrap();
    let mut g = ml.new_group();
    let input = [
        "java.lang.NullPointerException: oops\n",
        "\tat a.B.c(B.java:1)\n",
        "\n",
        "after\n",
    ];
    let out = push_all(&mut g, input.iter().map(|l| raw(l, EventTime(1))).collect());
    let logs: Vec<&str> = out.iter().map(log_of).collect();
    // The blank line after a frame ends the trace (Fluent Bit's rules accept it only right
    // after the exception line).
    assert_eq!(
        logs,
        [
            "java.lang.NullPointerException: oops\n\tat a.B.c(B.java:1)\n",
            "\n",
            "after\n"
        ]
    );
    let mut g = ml.new_group();
    let input = [
        "java.lang.NullPointerException\n",
        "\n",
        "\tat a.B.c(B.java:1)\n",
        "x\n",
    ];
    let out = push_all(&mut g, input.iter().map(|l| raw(l, EventTime(1))).collect());
    let logs: Vec<&str> = out.iter().map(log_of).collect();
    assert_eq!(
        logs,
        [
            "java.lang.NullPointerException\n\n\tat a.B.c(B.java:1)\n",
            "x\n"
        ]
    );
}

#[test]
fn python_go_ruby_traces() {
    assert_eq!(
        run_builtin("python", "python.log"),
        [
            "Traceback (most recent call last):\n  File \"/app/main.py\", line 10, in <module>\n    main()\n  File \"/app/main.py\", line 6, in main\n    raise ValueError(\"bad value\")\nValueError: bad value",
            "after the trace",
        ]
    );
    assert_eq!(
        run_builtin("go", "go.log"),
        [
            "panic: runtime error: index out of range [3] with length 3\n\ngoroutine 1 [running]:\nmain.main()\n\t/app/main.go:8 +0x1d",
            "exit status 2",
        ]
    );
    assert_eq!(
        run_builtin("ruby", "ruby.log"),
        [
            "/app/lib/foo.rb:12:in `bar': undefined method `baz' for nil:NilClass (NoMethodError)\n\tfrom /app/lib/foo.rb:5:in `run'\n\tfrom app.rb:3:in `<main>'",
            "done",
        ]
    );
}

#[test]
fn records_without_the_content_key_pass_through() {
    let ml = Parsers::builtin().multiline("java").unwrap();
    let mut g = ml.new_group();
    let mut out = Vec::new();
    g.push(raw("java.lang.Error: x", EventTime(1)), &mut out);
    let mut other = Map::new();
    other.insert("message", "no log key");
    g.push(Record::new(EventTime(2), other.clone()), &mut out);
    // What was pending goes first, so the order of the stream holds.
    assert_eq!(out.len(), 2);
    assert_eq!(log_of(&out[0]), "java.lang.Error: x");
    assert_eq!(out[1].body, other);
}

const CUSTOM: &str = r#"
[PARSER]
    Name        app
    Format      regex
    Regex       ^(?<time>\S+) (?<level>[A-Z]+) (?<log>.*)$
    Time_Key    time
    Time_Format %Y-%m-%dT%H:%M:%S%z

[MULTILINE_PARSER]
    Name          multiline-regex-test
    Type          regex
    Flush_Timeout 1000
    Rule      "start_state"   "/([a-zA-Z]+ \d+ \d+\:\d+\:\d+)(.*)/"  "cont"
    Rule      "cont"          "/^\s+at.*/"                     "cont"

[MULTILINE_PARSER]
    Name          with-parser
    Type          regex
    Parser        app
    Key_Content   log
    Rule      "start_state"   "/^Exception/"  "cont"
    Rule      "cont"          "/^\s+at /"     "cont"

[MULTILINE_PARSER]
    Name          backslash
    Type          endswith
    Match_String  \
    Negate        On
"#;

#[test]
fn custom_multiline_parsers() {
    let parsers = Parsers::from_config(&classic_config("ml.conf", CUSTOM)).unwrap();

    // The Fluent Bit documentation's example.
    let ml = parsers.multiline("multiline-regex-test").unwrap();
    assert_eq!(ml.flush_timeout(), Duration::from_millis(1000));
    let mut g = ml.new_group();
    let input = [
        "single line...",
        "Dec 14 06:41:08 Exception in thread \"main\" java.lang.RuntimeException: Something has gone wrong, aborting!",
        "    at com.myproject.module.MyProject.badMethod(MyProject.java:22)",
        "    at com.myproject.module.MyProject.oneMoreMethod(MyProject.java:18)",
        "another line...",
    ];
    let mut out = push_all(&mut g, input.iter().map(|l| raw(l, EventTime(1))).collect());
    g.flush(&mut out);
    let logs: Vec<&str> = out.iter().map(log_of).collect();
    assert_eq!(
        logs,
        [
            "single line...",
            "Dec 14 06:41:08 Exception in thread \"main\" java.lang.RuntimeException: Something has gone wrong, aborting!\n    at com.myproject.module.MyProject.badMethod(MyProject.java:22)\n    at com.myproject.module.MyProject.oneMoreMethod(MyProject.java:18)",
            "another line...",
        ]
    );

    // `parser` runs on each line first; the first line's parsed time and fields stay.
    let ml = parsers.multiline("with-parser").unwrap();
    let mut g = ml.new_group();
    let input = [
        "2024-01-01T00:00:00Z ERROR Exception: boom",
        "2024-01-01T00:00:01Z ERROR   at a.b(C.java:1)",
        "not parseable",
    ];
    let out = push_all(&mut g, input.iter().map(|l| raw(l, EventTime(1))).collect());
    assert_eq!(out.len(), 2);
    assert_eq!(log_of(&out[0]), "Exception: boom\n  at a.b(C.java:1)");
    assert_eq!(
        out[0].body.get("level").and_then(Value::as_str),
        Some("ERROR")
    );
    assert_eq!(out[0].time, rfc3339("2024-01-01T00:00:00Z"));
    assert_eq!(log_of(&out[1]), "not parseable");

    // endswith with negate: a line ending in `\` continues.
    let ml = parsers.multiline("backslash").unwrap();
    let mut g = ml.new_group();
    let out = push_all(
        &mut g,
        ["a \\", "b \\", "c", "d"]
            .iter()
            .map(|l| raw(l, EventTime(1)))
            .collect(),
    );
    let logs: Vec<&str> = out.iter().map(log_of).collect();
    assert_eq!(logs, ["a \\b \\c", "d"]);
}

#[test]
fn a_multiline_section_overrides_a_builtin() {
    let text = "[MULTILINE_PARSER]\n    Name java\n    Type regex\n    Rule \"start_state\" \"/^START/\" \"start_state\"\n";
    let parsers = Parsers::from_config(&classic_config("ml.conf", text)).unwrap();
    let mut g = parsers.multiline("java").unwrap().new_group();
    let out = push_all(&mut g, vec![raw("START here", EventTime(1))]);
    assert_eq!(
        out.len(),
        1,
        "flushed at once: the next state is a start state"
    );
    assert_eq!(
        parsers.multiline_names().filter(|n| *n == "java").count(),
        1
    );
}
