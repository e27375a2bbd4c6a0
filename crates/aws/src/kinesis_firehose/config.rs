//! Options of the `kinesis_firehose` output (Fluent Bit's names) and their checks.

use logferry_core::config::{ConfigError, Entry, Section};
use logferry_core::options;
use logferry_engine::common::NotApplied;

use crate::client::AwsSettings;
use crate::error::AwsError;
use crate::kinesis_core::record::{Compression, RecordFormat};
use crate::options::{key_error, names, split_entries, AwsOptions};

options! {
    /// Options of the `kinesis_firehose` output besides the shared AWS ones.
    pub struct FirehoseOptions for "kinesis_firehose output" {
        /// The Firehose delivery stream to send to.
        pub delivery_stream: String = ["delivery_stream"] None,
        /// Add the record time under this key (not added by default).
        pub time_key: Option<String> = ["time_key"] None,
        /// strftime format of time_key; %3N milliseconds, %9N or %L nanoseconds.
        pub time_key_format: String = ["time_key_format"] Some("%Y-%m-%dT%H:%M:%S"),
        /// Send only this key's value (strings raw, other values as JSON), not the whole record.
        pub log_key: Option<String> = ["log_key"] None,
        /// Compress each record: gzip.
        pub compression: Option<String> = ["compression"] None,
         /// Combine several records into one (accepted; each record is sent as one).
        pub simple_aggregation: bool = ["simple_aggregation"] Some("false"),
    }
}

/// Keys accepted and not applied (each set one is a build note).
pub const NOT_APPLIED: &[NotApplied] = &[NotApplied::new(
    "simple_aggregation",
    Some("false"),
    "each record is sent as a record of its own",
)];

/// The options, checked.
#[derive(Clone, Debug)]
pub struct FirehoseSettings {
    pub aws: AwsSettings,
    pub delivery_stream: String,
    pub format: RecordFormat,
}

impl FirehoseSettings {
    /// Checks the plugin's options with shared settings already resolved.
    pub fn with_aws(aws: AwsSettings, o: &FirehoseOptions) -> Result<Self, AwsError> {
        let delivery_stream = o.delivery_stream.trim().to_string();
        if delivery_stream.is_empty() {
            return Err(AwsError::setting("delivery_stream", "empty"));
        }
        let compression = Compression::parse(o.compression.as_deref(), &["gzip"])?;
        Ok(FirehoseSettings {
            aws,
            delivery_stream,
            format: RecordFormat::new(
                o.time_key.as_deref(),
                &o.time_key_format,
                o.log_key.as_deref(),
                true,
                compression,
            )?,
        })
    }
}

/// Reads and checks the section's entries; errors name file:line and the key.
pub fn settings_from_entries(
    section: &Section,
    entries: &[&Entry],
) -> Result<FirehoseSettings, ConfigError> {
    let (aws_entries, own) = split_entries(entries);
    let aws = AwsOptions::from_entries(&section.span, &aws_entries, &[])?;
    let opts = FirehoseOptions::from_entries(&section.span, &own, &names(AwsOptions::OPTIONS))?;
    AwsSettings::from_options(&aws)
        .and_then(|aws| FirehoseSettings::with_aws(aws, &opts))
        .map_err(|e| match e {
            AwsError::Setting { key, reason } => key_error(section, entries, key, reason),
            other => ConfigError::at(&section.span, other.to_string()),
        })
}
