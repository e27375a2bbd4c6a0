//! `fluentbit_logs` input: the agent's own log lines as records, so they can be shipped,
//! filtered and stored like any other log.
//!
//! As Fluent Bit 5.1 documents the input: each record is `{"level": ..., "message": ...}`
//! (`level` one of `error`, `warn`, `info`, `debug`, `trace`), records come as the lines are
//! logged (no polling interval), the plugin has no options of its own, and the lines wait in a
//! bounded queue of 1024 entries: lines logged before the input starts, or while its queue is
//! full, are not delivered through it. logferry counts those drops and says so in one line per
//! second at most. Only lines at or above the agent's `Log_Level` are mirrored, as only those
//! are logged. The message is what follows the level on the log line: `[component] text
//! key=value` (`[input:tail:tail.0] following file file=/var/log/a.log`).
//!
//! With a `kubernetes` filter matching its tag, these records get the agent's own pod's
//! metadata (`Kube_Namespace_File` and `HOSTNAME`), as Fluent Bit 5.1.1 enriches them.

use std::time::Duration;

use async_trait::async_trait;
use logferry_core::config::{ConfigError, Entry, Section};
use logferry_core::{options, Map, Record, Value};
use logferry_engine::self_log::{self, LogLine};
use logferry_engine::{
    BuildContext, CancellationToken, Input, InputContext, InputExit, InputPlugin, PluginError,
};

use crate::sink::{EmitterSink, RecordSink};

options! {
    /// Options of the `fluentbit_logs` input (it has none of its own).
    pub struct FluentBitLogsOptions for "fluentbit_logs input" {
    }
}

pub static PLUGIN: InputPlugin = InputPlugin {
    name: "fluentbit_logs",
    aliases: &[],
    description: "The agent's own log lines as records",
    options: FluentBitLogsOptions::OPTIONS,
    default_workers: 1,
    build,
};

fn build(
    _ctx: &BuildContext,
    section: &Section,
    entries: &[&Entry],
) -> Result<Box<dyn Input>, ConfigError> {
    FluentBitLogsOptions::from_entries(&section.span, entries, &[])?;
    Ok(Box::new(FluentBitLogsInput))
}

pub struct FluentBitLogsInput;

/// How often a count of dropped lines may be logged.
const DROP_REPORT_EVERY: Duration = Duration::from_secs(1);

/// The record of one log line.
pub fn record(line: LogLine) -> Record {
    let mut body = Map::with_capacity(2);
    body.push("level", Value::from(line.level));
    body.push("message", Value::from(line.message));
    Record::new(line.time, body)
}

/// Emits mirrored lines until `shutdown` fires.
pub async fn forward<S: RecordSink>(
    sink: &mut S,
    shutdown: &CancellationToken,
) -> Result<InputExit, PluginError> {
    let sub = self_log::subscribe();
    let mut last_report = tokio::time::Instant::now();
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Ok(InputExit::Finished),
            // A line queued between drain and wait leaves a permit: no wake-up is lost.
            _ = sub.0.wait() => {}
        }
        let lines = sub.0.drain();
        if !lines.is_empty() {
            let records: Vec<Record> = lines.into_iter().map(record).collect();
            let bytes = records.iter().map(Record::approx_size).sum();
            sink.emit(records, bytes).await?;
        }
        if last_report.elapsed() >= DROP_REPORT_EVERY {
            let dropped = sub.0.take_dropped();
            if dropped > 0 {
                last_report = tokio::time::Instant::now();
                tracing::warn!(
                    dropped,
                    "fluentbit_logs: its queue of {} lines was full; lines not delivered through it",
                    self_log::QUEUE_LEN
                );
            }
        }
    }
}

#[async_trait]
impl Input for FluentBitLogsInput {
    async fn run(self: Box<Self>, ctx: InputContext) -> Result<InputExit, PluginError> {
        let mut sink = EmitterSink {
            emitter: ctx.emitter,
            tag: ctx.tag,
        };
        forward(&mut sink, &ctx.shutdown).await
    }
}
