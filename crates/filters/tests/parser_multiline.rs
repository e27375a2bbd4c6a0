//! The `multiline` and `parser` filters in a real `Pipeline`: an in-test input emits a Java stack
//! trace split across chunks whose last message is never completed, the multiline filter holds
//! it, and the engine's `flush_due` calls bring it, through the `parser` filter after it, to the
//! output: after `flush_ms` while running, and at shutdown when the input finishes first.
#![allow(clippy::unwrap_used)]

use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use logferry_core::config::{ConfigError, Entry, Section, SectionKind};
use logferry_core::{EventTime, Map, Record, Value};
use logferry_engine::testing::{config, entry_value, section, sink, wait_until, COLLECT};
use logferry_engine::{
    BuildContext, CancellationToken, Input, InputContext, InputExit, InputPlugin, Pipeline,
    PluginError, Registry, StopReason,
};

const TRACE: [&str; 3] = [
    r#"Exception in thread "main" java.lang.RuntimeException: boom"#,
    "\tat com.example.A.run(A.java:10)",
    "\tat com.example.B.call(B.java:20)",
];

/// When each `script` input emitted its last chunk, by tag.
static EMITTED: Mutex<Vec<(String, Instant)>> = Mutex::new(Vec::new());

/// Emits `{"log": line}` records: the first chunk holds a plain line and the trace's first two
/// lines, the second the third line. With `hold`, it then waits for shutdown instead of
/// finishing.
struct ScriptInput {
    hold: bool,
}

#[async_trait]
impl Input for ScriptInput {
    async fn run(self: Box<Self>, ctx: InputContext) -> Result<InputExit, PluginError> {
        let chunks: [&[&str]; 2] = [&["starting", TRACE[0], TRACE[1]], &[TRACE[2]]];
        for lines in chunks {
            let records = lines
                .iter()
                .map(|l| {
                    let mut m = Map::new();
                    m.push("log", *l);
                    Record::new(EventTime::now(), m)
                })
                .collect();
            ctx.emitter.emit(ctx.tag.clone(), records, 0, None).await?;
        }
        EMITTED
            .lock()
            .unwrap()
            .push((ctx.tag.to_string(), Instant::now()));
        if self.hold {
            ctx.shutdown.cancelled().await;
        }
        Ok(InputExit::Finished)
    }
}

fn build_script(
    _: &BuildContext,
    _: &Section,
    e: &[&Entry],
) -> Result<Box<dyn Input>, ConfigError> {
    Ok(Box::new(ScriptInput {
        hold: entry_value(e, "hold").is_some(),
    }))
}

static SCRIPT: InputPlugin = InputPlugin {
    name: "script",
    aliases: &[],
    description: "test script",
    options: &[],
    default_workers: 1,
    build: build_script,
};

fn registry() -> Registry {
    Registry {
        inputs: vec![&SCRIPT],
        filters: logferry_filters::PLUGINS.to_vec(),
        outputs: vec![&COLLECT],
        planned: &[],
    }
}

/// The pipeline: script → multiline (java) → parser (extracts `exception`) → collect into
/// `sink_name`.
fn pipeline(tag: &str, sink_name: &str, hold: bool, flush_ms: &str) -> Pipeline {
    let mut input = vec![("Name", "script"), ("Tag", tag)];
    if hold {
        input.push(("hold", "on"));
    }
    let c = config(vec![
        section(SectionKind::Service, &[("Flush", "0.05"), ("Grace", "5")]),
        section(
            SectionKind::Parser,
            &[
                ("Name", "exception"),
                ("Format", "regex"),
                ("Regex", r"(?<exception>[A-Za-z.]+Exception)"),
            ],
        ),
        section(SectionKind::Input, &input),
        section(
            SectionKind::Filter,
            &[
                ("Name", "multiline"),
                ("Match", "app.*"),
                ("multiline.key_content", "log"),
                ("multiline.parser", "java"),
                ("flush_ms", flush_ms),
            ],
        ),
        section(
            SectionKind::Filter,
            &[
                ("Name", "parser"),
                ("Match", "app.*"),
                ("Key_Name", "log"),
                ("Parser", "exception"),
                ("Reserve_Data", "On"),
                ("Preserve_Key", "On"),
            ],
        ),
        section(
            SectionKind::Output,
            &[("Name", "collect"), ("Match", "*"), ("sink", sink_name)],
        ),
    ]);
    Pipeline::build(c, &registry()).unwrap()
}

/// The (tag, log, exception) of what a sink received.
fn received(name: &str) -> Vec<(String, String, Option<String>)> {
    sink(name)
        .lock()
        .unwrap()
        .iter()
        .map(|(t, r)| {
            let get = |k: &str| r.body.get(k).and_then(Value::as_str).map(str::to_string);
            (t.clone(), get("log").unwrap_or_default(), get("exception"))
        })
        .collect()
}

fn expected(tag: &str) -> Vec<(String, String, Option<String>)> {
    vec![
        (tag.to_string(), "starting".to_string(), None),
        (
            tag.to_string(),
            TRACE.join("\n"),
            Some("java.lang.RuntimeException".to_string()),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_message_reaches_the_output_after_flush_ms_while_running() {
    let p = pipeline("app.running", "ml_running", true, "500");
    let stop = CancellationToken::new();
    let run = tokio::spawn(p.run(stop.clone()));

    let got_all = wait_until(Duration::from_secs(10), || {
        received("ml_running").len() >= 2
    })
    .await;
    let arrived = Instant::now();
    assert!(got_all, "received only {:?}", received("ml_running"));
    assert_eq!(received("ml_running"), expected("app.running"));
    assert!(!run.is_finished(), "the pipeline was still running");
    // Held, not passed on at once: it came out no sooner than flush_ms after the last chunk.
    let emitted = EMITTED
        .lock()
        .unwrap()
        .iter()
        .find(|(t, _)| t == "app.running")
        .map(|(_, at)| *at)
        .unwrap();
    assert!(
        arrived.duration_since(emitted) >= Duration::from_millis(400),
        "released {:?} after the last chunk",
        arrived.duration_since(emitted)
    );

    stop.cancel();
    let reason = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reason, StopReason::Stopped);
    assert_eq!(received("ml_running"), expected("app.running"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_message_reaches_the_output_at_shutdown() {
    // flush_ms is far longer than the test: only the shutdown flush can release the message.
    let p = pipeline("app.shutdown", "ml_shutdown", false, "600000");
    let started = Instant::now();
    let reason = tokio::time::timeout(Duration::from_secs(20), p.run(CancellationToken::new()))
        .await
        .expect("pipeline finished in time");
    assert_eq!(reason, StopReason::InputsDone);
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(received("ml_shutdown"), expected("app.shutdown"));
}
