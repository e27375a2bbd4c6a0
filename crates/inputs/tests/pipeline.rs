//! End to end: the real inputs run by the engine from a classic config file. Records land in
//! `collect`, a test output that keeps them under its `Id` (plugins depend on core and engine
//! only, so the real outputs are not used here). `stdin_bytes` is `stdin` fed from a file (its
//! `Data_File` key), since a test cannot own the process's standard input.

#![allow(clippy::unwrap_used)] // helpers of an integration test are test code

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use logferry_core::config::{Config, ConfigError, Entry, Section};
use logferry_core::{EventTime, Record, Value};
use logferry_engine::{
    Batch, BuildContext, CancellationToken, FlushResult, Input, InputPlugin, Output, OutputPlugin,
    Pipeline, Registry, StopReason,
};
use logferry_inputs::in_stdin::{StdinInput, StdinOptions, StdinSettings};

fn build_stdin_bytes(
    _: &BuildContext,
    section: &Section,
    entries: &[&Entry],
) -> Result<Box<dyn Input>, ConfigError> {
    let (data, rest): (Vec<&Entry>, Vec<&Entry>) = entries
        .iter()
        .partition(|e| e.key.eq_ignore_ascii_case("Data_File"));
    let opts = StdinOptions::from_entries(&section.span, &rest, &["Data_File"])?;
    let settings = StdinSettings::from_options(&opts)
        .map_err(|(k, r)| ConfigError::key(&section.span, k, r))?;
    let data = data
        .last()
        .ok_or_else(|| ConfigError::key(&section.span, "Data_File", "missing"))?;
    let file = std::fs::File::open(&data.value)
        .map_err(|e| ConfigError::key(&data.span, "Data_File", e.to_string()))?;
    Ok(Box::new(StdinInput::from_reader(
        settings,
        Box::new(tokio::fs::File::from_std(file)),
    )))
}

static STDIN_BYTES: InputPlugin = InputPlugin {
    name: "stdin_bytes",
    aliases: &[],
    description: "stdin fed from a file (tests)",
    options: StdinOptions::OPTIONS,
    default_workers: 1,
    build: build_stdin_bytes,
};

/// Records flushed by `collect` outputs: (output Id, tag, record).
static COLLECTED: Mutex<Vec<(String, String, Record)>> = Mutex::new(Vec::new());

struct Collect {
    id: String,
}

#[async_trait]
impl Output for Collect {
    async fn flush(&self, batch: &Batch) -> FlushResult {
        let mut c = COLLECTED.lock().unwrap();
        c.extend(
            batch
                .records()
                .map(|r| (self.id.clone(), batch.tag.to_string(), r.clone())),
        );
        FlushResult::Ok
    }
}

fn build_collect(
    _: &BuildContext,
    section: &Section,
    _: &[&Entry],
) -> Result<Arc<dyn Output>, ConfigError> {
    let id = section.value("Id").unwrap_or_default().to_string();
    Ok(Arc::new(Collect { id }))
}

static COLLECT: OutputPlugin = OutputPlugin {
    name: "collect",
    aliases: &[],
    description: "keeps records in memory (tests)",
    options: &[],
    default_workers: 1,
    build: build_collect,
};

fn collected(id: &str) -> Vec<(String, Record)> {
    COLLECTED
        .lock()
        .unwrap()
        .iter()
        .filter(|(i, _, _)| i == id)
        .map(|(_, tag, r)| (tag.clone(), r.clone()))
        .collect()
}

fn registry() -> Registry {
    let mut inputs = logferry_inputs::PLUGINS.to_vec();
    inputs.push(&STDIN_BYTES);
    Registry {
        inputs,
        filters: vec![],
        outputs: vec![&COLLECT],
        planned: &[],
    }
}

fn load(dir: &Path, text: &str) -> Config {
    let path = dir.join("fluent-bit.conf");
    std::fs::write(&path, text).unwrap();
    Config::load(&path).unwrap()
}

async fn run(config: Config) -> StopReason {
    let pipeline = Pipeline::build(config, &registry()).unwrap();
    tokio::time::timeout(
        Duration::from_secs(20),
        pipeline.run(CancellationToken::new()),
    )
    .await
    .expect("pipeline did not stop")
}

fn json(r: &Record) -> String {
    serde_json::to_string(&Value::Map(r.body.clone())).unwrap()
}

#[tokio::test]
async fn dummy_samples_produce_exactly_that_many_records() {
    let dir = tempfile::tempdir().unwrap();
    let config = load(
        dir.path(),
        r#"[SERVICE]
    Flush  0.05
    Grace  5

[INPUT]
    Name              dummy
    Tag               app
    Dummy             {"message":"hello","n":42,"nested":{"ok":true}}
    Samples           3
    Interval_nsec     10000000
    Flush_on_startup  on

[OUTPUT]
    Name   collect
    Match  app
    Id     samples
"#,
    );
    let before = EventTime::now();
    assert_eq!(run(config).await, StopReason::InputsDone);
    let got = collected("samples");
    assert_eq!(got.len(), 3);
    for (tag, r) in &got {
        assert_eq!(tag, "app");
        assert_eq!(
            json(r),
            r#"{"message":"hello","n":42,"nested":{"ok":true}}"#
        );
        assert!(r.time >= before && r.time <= EventTime::now());
    }
}

#[tokio::test]
async fn dummy_copies_and_fixed_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let config = load(
        dir.path(),
        r#"[SERVICE]
    Flush  0.05

[INPUT]
    Name             dummy
    Samples          2
    Copies           2
    Interval_nsec    1000000
    Start_time_sec   1576777272
    Start_time_nsec  706307780
    Fixed_timestamp  on

[OUTPUT]
    Name   collect
    Match  *
    Id     fixed
"#,
    );
    assert_eq!(run(config).await, StopReason::InputsDone);
    let got = collected("fixed");
    assert_eq!(got.len(), 4);
    for (tag, r) in &got {
        assert_eq!(tag, "dummy.0");
        assert_eq!(r.time, EventTime::from_parts(1_576_777_272, 706_307_780));
        assert_eq!(json(r), r#"{"message":"dummy"}"#);
    }
}

#[tokio::test]
async fn stdin_keeps_malformed_lines_and_ends_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("input.txt");
    std::fs::write(
        &data,
        "{\"a\":1}\nnot json at all\n[1700000000, {\"b\":2}]\n\n[[1700000001.25, {\"m\":1}], {\"c\":\"é\"}]\n{\n\"d\": 4}\n",
    )
    .unwrap();
    let config = load(
        dir.path(),
        &format!(
            r#"[SERVICE]
    Flush  0.05

[INPUT]
    Name       stdin_bytes
    Tag        t
    Data_File  {}

[OUTPUT]
    Name   collect
    Match  t
    Id     stdin
"#,
            data.display()
        ),
    );
    assert_eq!(run(config).await, StopReason::InputExit);
    let got = collected("stdin");
    let bodies: Vec<String> = got.iter().map(|(_, r)| json(r)).collect();
    assert_eq!(
        bodies,
        [
            r#"{"a":1}"#,
            r#"{"log":"not json at all"}"#,
            r#"{"b":2}"#,
            r#"{"c":"é"}"#,
            r#"{"d":4}"#
        ]
    );
    assert_eq!(got[2].1.time, EventTime::from_parts(1_700_000_000, 0));
    assert_eq!(
        got[3].1.time,
        EventTime::from_parts(1_700_000_001, 250_000_000)
    );
}

#[test]
fn config_errors_name_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = load(
        dir.path(),
        r#"[INPUT]
    Name     dummy
    Dummy    {"message": oops}

[INPUT]
    Name     dummy
    Copies   0

[INPUT]
    Name         stdin
    Buffer_Size  lots

[INPUT]
    Name     dummy
    Sample   3

[OUTPUT]
    Name    collect
    Match   *
"#,
    );
    let errors = match Pipeline::build(config, &registry()) {
        Ok(_) => panic!("must fail"),
        Err(e) => e.to_string(),
    };
    let file = dir.path().join("fluent-bit.conf");
    let f = file.display();
    let lines: Vec<&str> = errors.lines().collect();
    assert_eq!(lines.len(), 4, "{errors}");
    assert!(
        lines[0].starts_with(&format!("{f}:3: Dummy: invalid JSON")),
        "{}",
        lines[0]
    );
    assert_eq!(
        lines[1],
        format!("{f}:7: Copies: must be at least 1, got 0")
    );
    assert!(
        lines[2].starts_with(&format!("{f}:11: Buffer_Size: expected a size")),
        "{}",
        lines[2]
    );
    assert_eq!(
        lines[3],
        format!("{f}:15: Sample: unknown key for dummy input (did you mean 'Samples'?)")
    );
}
