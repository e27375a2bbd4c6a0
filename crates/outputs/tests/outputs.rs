//! The outputs as the engine drives them: `flush` on real batches (stdout into a captured
//! writer, file into a temporary directory), a whole pipeline from a classic config file, and
//! configuration errors with file, line and key.

#![allow(clippy::unwrap_used)] // helpers of an integration test are test code

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use logferry_core::config::{Config, ConfigError, Entry, Section};
use logferry_core::{Chunk, EventTime, Map, Record, Value};
use logferry_engine::{
    Batch, BuildContext, CancellationToken, FlushResult, Input, InputContext, InputExit,
    InputPlugin, Output, Pipeline, PluginError, Registry, StopReason,
};
use logferry_outputs::out_file::{FileOptions, FileOutput, FileSettings};
use logferry_outputs::out_stdout::{SharedWriter, StdoutOptions, StdoutOutput, StdoutSettings};
use logferry_outputs::{out_file, out_null, out_stdout};

fn records() -> Vec<Record> {
    let mut a = Map::new();
    a.insert("message", "hello \"world\"");
    a.insert("level", "info");
    let mut b = Map::new();
    b.insert("n", -3i64);
    b.insert("ratio", 0.25f64);
    b.insert("tags", Value::Array(vec![Value::from("x"), Value::Null]));
    vec![
        Record::new(EventTime::from_parts(1_576_777_272, 706_307_780), a),
        Record::new(EventTime::from_parts(1_576_777_273, 1_000), b),
    ]
}

fn batch(tag: &str, records: Vec<Record>) -> Batch {
    let tag: Arc<str> = Arc::from(tag);
    let chunks = vec![Arc::new(Chunk::new(Arc::clone(&tag), records))];
    Batch::new(tag, chunks)
}

async fn stdout_bytes(format: &str, key: &str, date: &str) -> String {
    let o = StdoutOptions {
        format: format.into(),
        json_date_key: key.into(),
        json_date_format: date.into(),
    };
    let captured = Arc::new(Mutex::new(Vec::<u8>::new()));
    let writer: SharedWriter = captured.clone();
    let out = StdoutOutput::with_writer(StdoutSettings::from_options(&o).unwrap(), writer);
    for _ in 0..2 {
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            out.flush(&batch("app.log", records())),
        )
        .await;
        assert_eq!(r.unwrap(), FlushResult::Ok);
    }
    let bytes = captured.lock().unwrap().clone();
    String::from_utf8(bytes).unwrap()
}

#[tokio::test]
async fn stdout_msgpack_is_fluent_bits_printer() {
    let one = "[0] app.log: [[1576777272.706307780, {}], {\"message\"=>\"hello \\\"world\\\"\", \"level\"=>\"info\"}]\n\
               [1] app.log: [[1576777273.000001000, {}], {\"n\"=>-3, \"ratio\"=>0.250000, \"tags\"=>[\"x\", nil]}]\n";
    // The counter restarts with every flush.
    assert_eq!(
        stdout_bytes("msgpack", "date", "double").await,
        one.repeat(2)
    );
}

#[tokio::test]
async fn stdout_json_formats_and_dates() {
    let body_a = r#""message":"hello \"world\"","level":"info""#;
    let body_b = r#""n":-3,"ratio":0.25,"tags":["x",null]"#;
    let lines = format!(
        "{{\"date\":1576777272.706308,{body_a}}}\n{{\"date\":1576777273.000001,{body_b}}}\n"
    );
    assert_eq!(
        stdout_bytes("json_lines", "date", "double").await,
        lines.repeat(2)
    );
    let array = format!("[{{\"t\":1576777272,{body_a}}},{{\"t\":1576777273,{body_b}}}]\n");
    assert_eq!(stdout_bytes("json", "t", "epoch").await, array.repeat(2));
    let stream = format!("{{{body_a}}}{{{body_b}}}\n");
    assert_eq!(
        stdout_bytes("json_stream", "false", "double").await,
        stream.repeat(2)
    );

    let cases = [
        ("epoch_ms", "1576777272706", "1576777273000"),
        (
            "iso8601",
            "\"2019-12-19T17:41:12.706307Z\"",
            "\"2019-12-19T17:41:13.000001Z\"",
        ),
        (
            "java_sql_timestamp",
            "\"2019-12-19 17:41:12.706307\"",
            "\"2019-12-19 17:41:13.000001\"",
        ),
    ];
    for (format, a, b) in cases {
        let want = format!("{{\"date\":{a},{body_a}}}\n{{\"date\":{b},{body_b}}}\n");
        assert_eq!(
            stdout_bytes("json_lines", "date", format).await,
            want.repeat(2),
            "{format}"
        );
    }
}

fn file_output(dir: &Path, format: &str, f: impl FnOnce(&mut FileOptions)) -> FileOutput {
    let mut o = FileOptions::defaults().unwrap();
    o.format = format.into();
    f(&mut o);
    FileOutput::new(FileSettings::from_options(&o, dir).unwrap())
}

async fn flush(out: &FileOutput, tag: &str, records: Vec<Record>) -> FlushResult {
    tokio::time::timeout(Duration::from_secs(5), out.flush(&batch(tag, records)))
        .await
        .unwrap()
}

#[tokio::test]
async fn file_appends_each_format() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases = [
        (
            "out_file",
            "app.log: [1576777272.706307780, {\"message\":\"hello \\\"world\\\"\",\"level\":\"info\"}]\n\
             app.log: [1576777273.000001000, {\"n\":-3,\"ratio\":0.25,\"tags\":[\"x\",null]}]\n",
        ),
        (
            "plain",
            "{\"message\":\"hello \\\"world\\\"\",\"level\":\"info\"}\n{\"n\":-3,\"ratio\":0.25,\"tags\":[\"x\",null]}\n",
        ),
        (
            "csv",
            "1576777272.706307780,\"hello \\\"world\\\"\",\"info\"\n1576777273.000001000,-3,0.250000,[\"x\", nil]\n",
        ),
        (
            "ltsv",
            "\"time\":1576777272.706308\t\"message\":\"hello \\\"world\\\"\"\t\"level\":\"info\"\n\
             \"time\":1576777273.000001\t\"n\":-3\t\"ratio\":0.250000\t\"tags\":[\"x\", nil]\n",
        ),
        ("template", "1576777272.706308 hello \"world\"\n1576777273.000001 {message}\n"),
    ];
    for (format, want) in cases {
        let out = file_output(d, format, |o| o.file = Some(format!("{format}.txt")));
        assert_eq!(flush(&out, "app.log", records()).await, FlushResult::Ok);
        assert_eq!(flush(&out, "app.log", records()).await, FlushResult::Ok);
        let text = std::fs::read_to_string(d.join(format!("{format}.txt"))).unwrap();
        assert_eq!(text, want.repeat(2), "{format}");
    }
}

#[tokio::test]
async fn file_csv_header_only_in_a_new_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = file_output(dir.path(), "csv", |o| {
        o.csv_column_names = true;
        o.delimiter = Some("tab".into());
    });
    let mut m = Map::new();
    m.insert("a", 1i64);
    m.insert("b", "x");
    let rec = || vec![Record::new(EventTime::from_parts(5, 0), m.clone())];
    assert_eq!(flush(&out, "data", rec()).await, FlushResult::Ok);
    assert_eq!(flush(&out, "data", rec()).await, FlushResult::Ok);
    let text = std::fs::read_to_string(dir.path().join("data")).unwrap();
    assert_eq!(
        text,
        "timestamp\t\"a\"\t\"b\"\n5.000000000\t1\t\"x\"\n5.000000000\t1\t\"x\"\n"
    );
}

#[tokio::test]
async fn file_errors_are_retries_with_the_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = file_output(dir.path(), "plain", |o| o.path = Some("missing/dir".into()));
    match flush(&out, "t", records()).await {
        FlushResult::Retry(reason) => {
            assert!(reason.contains("missing/dir/t"), "{reason}");
            assert!(reason.contains("No such file or directory"), "{reason}");
        }
        other => panic!("expected a retry, got {other:?}"),
    }
    let out = file_output(dir.path(), "plain", |o| {
        o.path = Some("missing/dir".into());
        o.mkdir = true;
    });
    assert_eq!(flush(&out, "a/../b", records()).await, FlushResult::Ok);
    assert!(dir.path().join("missing/dir/a/_/b").is_file());
}

/// An input that emits `records()` under its tag once, then finishes.
struct FixedInput;

#[async_trait]
impl Input for FixedInput {
    async fn run(self: Box<Self>, ctx: InputContext) -> Result<InputExit, PluginError> {
        ctx.emitter
            .emit(Arc::clone(&ctx.tag), records(), 0, None)
            .await?;
        Ok(InputExit::Finished)
    }
}

fn build_fixed(_: &BuildContext, _: &Section, _: &[&Entry]) -> Result<Box<dyn Input>, ConfigError> {
    Ok(Box::new(FixedInput))
}

static FIXED: InputPlugin = InputPlugin {
    name: "fixed",
    aliases: &[],
    description: "emits two fixed records (tests)",
    options: &[],
    default_workers: 1,
    build: build_fixed,
};

fn registry() -> Registry {
    Registry {
        inputs: vec![&FIXED],
        filters: vec![],
        outputs: logferry_outputs::PLUGINS.to_vec(),
        planned: &[],
    }
}

fn load(dir: &Path, text: &str) -> Config {
    let path = dir.join("logferry.conf");
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
    Config::load(&path).unwrap()
}

#[tokio::test]
async fn pipeline_into_two_file_outputs() {
    let dir = tempfile::tempdir().unwrap();
    // Relative paths are relative to the working directory (as in Fluent Bit), so the test
    // gives absolute ones.
    let d = dir.path().display();
    let config = load(
        dir.path(),
        &format!(
            r#"[SERVICE]
    Flush  0.05

[INPUT]
    Name  fixed
    Tag   app.log

[OUTPUT]
    Name      file
    Match     app.*
    Path      {d}
    File      lines.json
    Format    plain

[OUTPUT]
    Name      file
    Match     *
    Path      {d}/ltsv
    Mkdir     on
    Format    ltsv
    Delimiter space

[OUTPUT]
    Name   null
    Match  *
"#
        ),
    );
    let pipeline = Pipeline::build(config, &registry()).unwrap();
    let stop = tokio::time::timeout(
        Duration::from_secs(20),
        pipeline.run(CancellationToken::new()),
    )
    .await
    .unwrap();
    assert_eq!(stop, StopReason::InputsDone);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("lines.json")).unwrap(),
        "{\"message\":\"hello \\\"world\\\"\",\"level\":\"info\"}\n{\"n\":-3,\"ratio\":0.25,\"tags\":[\"x\",null]}\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("ltsv/app.log")).unwrap(),
        "\"time\":1576777272.706308 \"message\":\"hello \\\"world\\\"\" \"level\":\"info\"\n\
         \"time\":1576777273.000001 \"n\":-3 \"ratio\":0.250000 \"tags\":[\"x\", nil]\n"
    );
}

#[test]
fn config_errors_name_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = load(
        dir.path(),
        r#"[INPUT]
    Name  fixed

[OUTPUT]
    Name              stdout
    Match             *
    json_date_format  rfc3339

[OUTPUT]
    Name    file
    Match   *
    Format  xml

[OUTPUT]
    Name    stdout
    Match   *
    Fromat  json
"#,
    );
    let errors = match Pipeline::build(config, &registry()) {
        Ok(_) => panic!("must fail"),
        Err(e) => e.to_string(),
    };
    let f = dir.path().join("logferry.conf");
    let f = f.display();
    let lines: Vec<&str> = errors.lines().collect();
    assert_eq!(
        lines,
        [
            format!(
                "{f}:7: json_date_format: invalid json_date_format 'rfc3339': expected double, epoch, epoch_ms, iso8601 or java_sql_timestamp"
            ),
            format!(
                "{f}:12: Format: unknown format 'xml': expected out_file, plain, csv, ltsv, template or msgpack"
            ),
            format!("{f}:17: Fromat: unknown key for stdout output (did you mean 'Format'?)"),
        ]
    );
    assert!(
        out_null::PLUGIN.is("NULL")
            && out_stdout::PLUGIN.is("stdout")
            && out_file::PLUGIN.is("file")
    );
}
