//! `opensearch` and `es` outputs: records as documents through the `_bulk` API of OpenSearch
//! or Elasticsearch, with Fluent Bit 5.1's options and defaults, and AWS SigV4 signing for
//! Amazon OpenSearch Service and Serverless (`AWS_Auth On`).
//!
//! They live in this crate because SigV4 needs the AWS credentials chain ([`crate::client`]);
//! the two plugins share everything but `Tag_Key`'s default and `es`'s Elastic Cloud keys.
//! - [`config`]: options and checks;
//! - [`document`]: record → bulk item (index naming, time key, ids);
//! - [`bulk`]: what each item of a bulk answer means;
//! - [`transport`]: HTTP(S), authentication, gzip, SigV4;
//! - [`sink`]: the [`logferry_engine::Output`]: request sizing, partial failures, retries.

pub mod bulk;
pub mod config;
pub mod document;
pub mod sink;
pub mod transport;

use std::sync::Arc;

use logferry_core::config::{ConfigError, Entry, OptSpec, Section};
use logferry_engine::{BuildContext, Output, OutputPlugin};

use crate::options;
pub use config::{EsOptions, OpenSearchTagKey, SearchOptions, SearchSettings};
pub use sink::SearchOutput;

const N_OS: usize = SearchOptions::OPTIONS.len() + OpenSearchTagKey::OPTIONS.len();
static OS_OPTIONS: [OptSpec; N_OS] =
    options::concat(SearchOptions::OPTIONS, OpenSearchTagKey::OPTIONS);
const N_ES: usize = SearchOptions::OPTIONS.len() + EsOptions::OPTIONS.len();
static ES_OPTIONS: [OptSpec; N_ES] = options::concat(SearchOptions::OPTIONS, EsOptions::OPTIONS);

/// Fluent Bit 5.1's default workers of both plugins.
const WORKERS: usize = 2;

/// The `opensearch` registry entry.
pub static PLUGIN: OutputPlugin = OutputPlugin {
    name: "opensearch",
    aliases: &[],
    description: "Send logs to OpenSearch (Amazon OpenSearch Service with AWS_Auth)",
    options: &OS_OPTIONS,
    default_workers: WORKERS,
    build: build_opensearch,
};

/// The `es` registry entry.
pub static ES_PLUGIN: OutputPlugin = OutputPlugin {
    name: "es",
    aliases: &[],
    description: "Send logs to Elasticsearch (Amazon OpenSearch Service with AWS_Auth)",
    options: &ES_OPTIONS,
    default_workers: WORKERS,
    build: build_es,
};

fn build_opensearch(
    ctx: &BuildContext,
    section: &Section,
    entries: &[&Entry],
) -> Result<Arc<dyn Output>, ConfigError> {
    build(ctx, section, entries, false)
}

fn build_es(
    ctx: &BuildContext,
    section: &Section,
    entries: &[&Entry],
) -> Result<Arc<dyn Output>, ConfigError> {
    build(ctx, section, entries, true)
}

fn build(
    ctx: &BuildContext,
    section: &Section,
    entries: &[&Entry],
    es: bool,
) -> Result<Arc<dyn Output>, ConfigError> {
    let mut settings = config::settings_from_entries(section, entries, es)?;
    if let Some(t) = settings.connection.tls.as_mut() {
        for p in [
            &mut t.ca_file,
            &mut t.ca_path,
            &mut t.crt_file,
            &mut t.key_file,
        ]
        .into_iter()
        .flatten()
        {
            if p.is_relative() {
                *p = ctx.base_dir.join(&*p);
            }
        }
    }
    ctx.not_applied(config::NOT_APPLIED, entries);
    ctx.note_tls_verify_off(
        entries,
        settings.connection.tls.is_some(),
        settings.connection.tls.as_ref().is_none_or(|t| t.verify),
    );
    let out = SearchOutput::new(settings, Arc::clone(&ctx.metrics), ctx.instance.clone())
        .map_err(|e| ConfigError::at(&section.span, e))?;
    Ok(Arc::new(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `tls.verify Off` with `tls On` is said at start and in `--dry-run`, as in every plugin
    /// with TLS; verification on, or no TLS, says nothing.
    #[test]
    fn turning_tls_verification_off_is_noted() {
        let notes = |plugin: &OutputPlugin, keys: &[(&str, &str)]| -> Vec<String> {
            logferry_engine::testing::output_notes(plugin, "es.0", keys)
                .into_iter()
                .filter(|n| n.contains("verification is off"))
                .collect()
        };
        for plugin in [&PLUGIN, &ES_PLUGIN] {
            let host = ("Host", "127.0.0.1");
            assert!(notes(plugin, &[host, ("tls", "on")]).is_empty());
            let off = notes(plugin, &[host, ("tls", "on"), ("tls.verify", "off")]);
            assert_eq!(off.len(), 1, "{}: {off:?}", plugin.name);
            assert!(off[0].contains("tls.verify"), "{off:?}");
            assert!(notes(plugin, &[host, ("tls.verify", "off")]).is_empty());
        }
    }
}
