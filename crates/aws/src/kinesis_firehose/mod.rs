//! `kinesis_firehose` output (alias `firehose`, AWS for Fluent Bit's name): records through
//! PutRecordBatch, each the record as JSON plus a newline (Fluent Bit's format), optionally
//! gzip-compressed. Limits: 500 records, 4 MiB per call, 1,000 KiB per record (larger records
//! are dropped and counted). Partial failures (`FailedPutCount`) re-send only the failed
//! records; see [`crate::kinesis_core::sink`].
//!
//! [`config`] holds the options, [`service`] the call; the rest is the shared core.

pub mod config;
pub mod service;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use logferry_core::config::{ConfigError, Entry, OptSpec, Section};
use logferry_engine::{BuildContext, Output, OutputPlugin};

use crate::kinesis_core::sink::RecordOutput;
use crate::options::{self, AwsOptions};
pub use config::{FirehoseOptions, FirehoseSettings};
pub use service::{FirehoseEncoder, FirehoseService};

/// The `kinesis_firehose` output.
pub type FirehoseOutput = RecordOutput<FirehoseService, FirehoseEncoder>;

const N_OPTIONS: usize = FirehoseOptions::OPTIONS.len() + AwsOptions::OPTIONS.len();
static OPTIONS: [OptSpec; N_OPTIONS] =
    options::concat(FirehoseOptions::OPTIONS, AwsOptions::OPTIONS);

/// The registry entry.
pub static PLUGIN: OutputPlugin = OutputPlugin {
    name: "kinesis_firehose",
    aliases: &["firehose"],
    description: "Send logs to Amazon Kinesis Data Firehose",
    options: &OPTIONS,
    default_workers: 1,
    build,
};

/// The output for checked settings.
pub fn output(
    settings: FirehoseSettings,
    metrics: Arc<logferry_engine::metrics::PluginMetrics>,
    name: String,
) -> FirehoseOutput {
    let encoder = FirehoseEncoder {
        format: settings.format.clone(),
    };
    RecordOutput::new(FirehoseService::new(settings), encoder, metrics, name)
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
