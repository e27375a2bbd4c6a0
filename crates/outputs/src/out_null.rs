//! `null` output: accepts and discards every record (Fluent Bit's `out_null`). Useful to measure
//! the rest of a pipeline and to drop a tag on purpose.

use std::sync::Arc;

use async_trait::async_trait;
use logferry_core::config::{ConfigError, Entry, Section};
use logferry_core::options;
use logferry_engine::{Batch, BuildContext, FlushResult, Output, OutputPlugin};

options! {
    /// Options of the `null` output: Fluent Bit formats records before discarding them (to
    /// measure formatting); logferry discards them as they are, so these change nothing.
    pub struct NullOptions for "null output" {
        /// Format records are rendered in before being discarded (no effect).
        pub format: Option<String> = ["format"] None,
        /// Date format of the json formats (no effect).
        pub json_date_format: Option<String> = ["json_date_format"] None,
        /// Date key of the json formats (no effect).
        pub json_date_key: Option<String> = ["json_date_key"] None,
    }
}

/// The registry entry.
pub static PLUGIN: OutputPlugin = OutputPlugin {
    name: "null",
    aliases: &[],
    description: "Throws away events",
    options: NullOptions::OPTIONS,
    default_workers: 1,
    build,
};

fn build(
    _ctx: &BuildContext,
    section: &Section,
    entries: &[&Entry],
) -> Result<Arc<dyn Output>, ConfigError> {
    NullOptions::from_entries(&section.span, entries, &[])?;
    Ok(Arc::new(NullOutput))
}

/// Discards records.
pub struct NullOutput;

#[async_trait]
impl Output for NullOutput {
    async fn flush(&self, _batch: &Batch) -> FlushResult {
        FlushResult::Ok
    }

    /// Nothing is read, so packed chunks need no unpacking.
    fn reads_packed(&self) -> bool {
        true
    }
}
