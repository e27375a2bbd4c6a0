//! `kinesis_streams` output (alias `kinesis`, AWS for Fluent Bit's name): records through
//! PutRecords. Partition key from a record accessor (`partition_key`), random when unset or
//! missing; optional KPL-compatible aggregation ([`aggregation`]) and per-record compression.
//! Limits: 500 records and 5 MiB per call, 1 MiB per record, partition keys included (larger
//! records are dropped and counted). Partial failures (`FailedRecordCount`) re-send only the
//! failed records; see [`crate::kinesis_core::sink`].

pub mod aggregation;
pub mod config;
pub mod service;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use logferry_core::config::{ConfigError, Entry, OptSpec, Section};
use logferry_engine::{BuildContext, Output, OutputPlugin};

use crate::kinesis_core::sink::RecordOutput;
use crate::options::{self, AwsOptions};
pub use config::{KinesisOptions, KinesisSettings};
pub use service::{KinesisEncoder, KinesisService};

/// The `kinesis_streams` output.
pub type KinesisOutput = RecordOutput<KinesisService, KinesisEncoder>;

const N_OPTIONS: usize = KinesisOptions::OPTIONS.len() + AwsOptions::OPTIONS.len();
static OPTIONS: [OptSpec; N_OPTIONS] =
    options::concat(KinesisOptions::OPTIONS, AwsOptions::OPTIONS);

/// The registry entry.
pub static PLUGIN: OutputPlugin = OutputPlugin {
    name: "kinesis_streams",
    aliases: &["kinesis"],
    description: "Send logs to Amazon Kinesis Data Streams",
    options: &OPTIONS,
    default_workers: 1,
    build,
};

/// The output for checked settings.
pub fn output(
    settings: KinesisSettings,
    metrics: Arc<logferry_engine::metrics::PluginMetrics>,
    name: String,
) -> KinesisOutput {
    let encoder = KinesisEncoder::new(&settings);
    RecordOutput::new(KinesisService::new(settings), encoder, metrics, name)
}

fn build(
    ctx: &BuildContext,
    section: &Section,
    entries: &[&Entry],
) -> Result<Arc<dyn Output>, ConfigError> {
    let settings = config::settings_from_entries(section, entries)?;
    ctx.not_applied(config::NOT_APPLIED, entries);
    Ok(Arc::new(output(
        settings,
        Arc::clone(&ctx.metrics),
        ctx.instance.clone(),
    )))
}
