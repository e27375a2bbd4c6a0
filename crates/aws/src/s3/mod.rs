//! `s3` output: records buffered in files under `store_dir`, uploaded as objects.
//!
//! A flush appends the records as JSON lines (with `json_date_key`) to the tag's buffer file
//! and returns `Ok` only once they are fsynced (Fluent Bit's `s3` acknowledges once they are
//! written to its store); a write or fsync error returns `Retry` with the reason. Buffer file
//! names are bounded whatever the tag, the tag being kept in a header inside the file
//! ([`store`]); buffered files survive a restart and are uploaded after it, files of the
//! previous naming scheme included. A file is uploaded when it reaches `total_file_size`, when
//! `upload_timeout` has passed since it was started (checked by a timer task), or at shutdown
//! (Fluent Bit's #6648: nothing is left behind on a graceful stop that can be uploaded).
//! Upload ([`service`]): the file is read and compressed part by part, never whole;
//! PutObject when the (compressed) object fits one `upload_chunk_size` part, else a multipart
//! upload in `upload_chunk_size` parts; with `use_put_object`, PutObject streamed from disk.
//! A failed upload keeps the file and is tried again with a growing wait (up to
//! [`store::MAX_RETRY_WAIT`]); `store_dir_limit_size` bounds the disk used: a flush that would
//! exceed it returns `Retry`, which holds the input back.
//!
//! [`config`] options, [`key`] `s3_key_format`, [`store`] the buffer files, [`service`] the
//! uploads, [`sink`] the output.

pub mod config;
pub mod key;
pub mod service;
pub mod sink;
pub mod store;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use logferry_core::config::{ConfigError, Entry, OptSpec, Section};
use logferry_engine::{BuildContext, Output, OutputPlugin};

use crate::options::{self, AwsOptions};
pub use config::{S3Options, S3Settings};
pub use sink::S3Output;

const N_OPTIONS: usize = S3Options::OPTIONS.len() + AwsOptions::OPTIONS.len();
static OPTIONS: [OptSpec; N_OPTIONS] = options::concat(S3Options::OPTIONS, AwsOptions::OPTIONS);

/// The registry entry.
pub static PLUGIN: OutputPlugin = OutputPlugin {
    name: "s3",
    aliases: &[],
    description: "Send logs to Amazon S3",
    options: &OPTIONS,
    default_workers: 1,
    build,
};

fn build(
    ctx: &BuildContext,
    section: &Section,
    entries: &[&Entry],
) -> Result<Arc<dyn Output>, ConfigError> {
    let settings = config::settings_from_entries(section, entries, &ctx.base_dir)?;
    ctx.not_applied(config::NOT_APPLIED, entries);
    if ctx.check_only() {
        return Ok(Arc::new(S3Output::unopened(
            settings,
            Arc::clone(&ctx.metrics),
            ctx.instance.clone(),
        )));
    }
    let out = S3Output::new(settings, Arc::clone(&ctx.metrics), ctx.instance.clone())
        .map_err(|e| ConfigError::at(&section.span, format!("store_dir: {e}")))?;
    Ok(Arc::new(out))
}
