//! `rewrite_tag` in a real `Pipeline`: matching records re-enter under their new tags, counted
//! as the emitter input's records, and reach the outputs that match those; the rest go on under the old tag; and
//! the input that made the chunk is told it was delivered only once the re-emitted records
//! were (here: after their output's outage ends).
#![allow(clippy::unwrap_used)]

use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use logferry_core::config::{ConfigError, Entry, Section, SectionKind};
use logferry_core::{DeliveryStatus, EventTime, Map, Record};
use logferry_engine::testing::{config, outage, section, sink, wait_until, COLLECT};
use logferry_engine::{
    BuildContext, CancellationToken, Input, InputContext, InputExit, InputPlugin, Pipeline,
    PluginError, Registry,
};

/// The outcome the `levels` input was told for its one chunk.
static ACKED: Mutex<Vec<DeliveryStatus>> = Mutex::new(Vec::new());

/// Emits one chunk of four records with `level` error, info, error, warn, then waits.
struct Levels;

#[async_trait]
impl Input for Levels {
    async fn run(self: Box<Self>, ctx: InputContext) -> Result<InputExit, PluginError> {
        let records = ["error", "info", "error", "warn"]
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let mut m = Map::new();
                m.push("level", *l);
                m.push("n", i as i64);
                Record::new(EventTime::now(), m)
            })
            .collect();
        let ack = Box::new(|s: DeliveryStatus| ACKED.lock().unwrap().push(s));
        ctx.emitter
            .emit(ctx.tag.clone(), records, 0, Some(ack))
            .await?;
        ctx.shutdown.cancelled().await;
        Ok(InputExit::Finished)
    }
}

fn build_levels(
    _: &BuildContext,
    _: &Section,
    _: &[&Entry],
) -> Result<Box<dyn Input>, ConfigError> {
    Ok(Box::new(Levels))
}

static LEVELS: InputPlugin = InputPlugin {
    name: "levels",
    aliases: &[],
    description: "test input",
    options: &[],
    default_workers: 1,
    build: build_levels,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_re_emitted_under_new_tags_and_hold_their_chunk() {
    let registry = Registry {
        inputs: vec![&LEVELS],
        filters: logferry_filters::PLUGINS.to_vec(),
        outputs: vec![&COLLECT],
        planned: &[],
    };
    let c = config(vec![
        section(SectionKind::Service, &[("Flush", "0.05"), ("Grace", "5")]),
        section(SectionKind::Input, &[("Name", "levels"), ("Tag", "app")]),
        section(
            SectionKind::Filter,
            &[
                ("Name", "rewrite_tag"),
                ("Match", "app"),
                ("Rule", "$level ^(error|warn)$ alerts.$1.$TAG false"),
                ("Emitter_Name", "re_emitted"),
            ],
        ),
        section(
            SectionKind::Output,
            &[("Name", "collect"), ("Match", "app"), ("sink", "rt_app")],
        ),
        section(
            SectionKind::Output,
            &[
                ("Name", "collect"),
                ("Match", "alerts.*"),
                ("sink", "rt_alerts"),
                ("outage", "rt_alerts_down"),
            ],
        ),
    ]);
    let p = Pipeline::build(c, &registry).unwrap();
    let metrics = std::sync::Arc::clone(&p.metrics);
    let down = outage("rt_alerts_down");
    down.on.store(true, Ordering::SeqCst);
    let stop = CancellationToken::new();
    let run = tokio::spawn(p.run(stop.clone()));

    assert!(
        wait_until(Duration::from_secs(10), || sink("rt_app")
            .lock()
            .unwrap()
            .len()
            == 1)
        .await
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        ACKED.lock().unwrap().is_empty(),
        "the chunk waits for its re-emitted records"
    );
    down.on.store(false, Ordering::SeqCst);
    assert!(
        wait_until(Duration::from_secs(10), || sink("rt_alerts")
            .lock()
            .unwrap()
            .len()
            == 3)
        .await
    );
    assert!(
        wait_until(Duration::from_secs(10), || !ACKED
            .lock()
            .unwrap()
            .is_empty())
        .await
    );
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .unwrap()
        .unwrap();

    assert_eq!(*ACKED.lock().unwrap(), [DeliveryStatus::Delivered]);
    let app: Vec<(String, String)> = sink("rt_app")
        .lock()
        .unwrap()
        .iter()
        .map(|(t, r)| {
            (
                t.clone(),
                r.body.get("level").unwrap().as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(app, [("app".to_string(), "info".to_string())]);
    let mut alerts: Vec<String> = sink("rt_alerts")
        .lock()
        .unwrap()
        .iter()
        .map(|(t, _)| t.clone())
        .collect();
    alerts.sort();
    assert_eq!(
        alerts,
        ["alerts.error.app", "alerts.error.app", "alerts.warn.app"]
    );
    let emitter = logferry_engine::metrics::Metrics::list(&metrics.inputs)
        .into_iter()
        .find(|m| m.name == "re_emitted")
        .unwrap();
    assert_eq!(emitter.records.load(Ordering::Relaxed), 3);
}
