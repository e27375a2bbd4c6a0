//! `cloudwatch_logs` output (alias `cloudwatch`, AWS for Fluent Bit's name): records as log
//! events through PutLogEvents.
//!
//! - [`config`]: the options (Fluent Bit's and the Go plugin's names) and their checks;
//! - [`request_builder`]: record → destination (group, stream) and event (message, time in ms),
//!   oversize messages truncated;
//! - [`batch`]: the PutLogEvents limits and the split of one stream's sorted events into calls;
//! - [`service`]: the calls, group/stream creation (once, cached), one put at a time per stream;
//! - [`retry`]: what `rejectedLogEventsInfo` means in event counts;
//! - [`sink`]: the [`logferry_engine::Output`] tying them together.

pub mod batch;
pub mod config;
pub mod request_builder;
pub mod retry;
pub mod service;
pub mod sink;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use logferry_core::config::{ConfigError, Entry, OptSpec, Section};
use logferry_engine::{BuildContext, Output, OutputPlugin};

use crate::options::{self, AwsOptions};
pub use config::{CloudWatchLogsOptions, CloudWatchLogsSettings};
pub use sink::CloudWatchLogsOutput;

const N_OPTIONS: usize = CloudWatchLogsOptions::OPTIONS.len() + AwsOptions::OPTIONS.len();
static OPTIONS: [OptSpec; N_OPTIONS] =
    options::concat(CloudWatchLogsOptions::OPTIONS, AwsOptions::OPTIONS);

/// The registry entry.
pub static PLUGIN: OutputPlugin = OutputPlugin {
    name: "cloudwatch_logs",
    aliases: &["cloudwatch"],
    description: "Send logs to Amazon CloudWatch Logs",
    options: &OPTIONS,
    default_workers: 1,
    build,
};

fn build(
    ctx: &BuildContext,
    section: &Section,
    entries: &[&Entry],
) -> Result<Arc<dyn Output>, ConfigError> {
    let settings = config::settings_from_entries(section, entries)?;
    ctx.not_applied(config::NOT_APPLIED, entries);
    Ok(Arc::new(CloudWatchLogsOutput::new(
        settings,
        Arc::clone(&ctx.metrics),
        ctx.instance.clone(),
    )))
}
