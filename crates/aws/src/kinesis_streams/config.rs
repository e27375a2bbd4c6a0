//! Options of the `kinesis_streams` output (Fluent Bit's and the Go plugin's names).

use logferry_core::config::{ConfigError, Entry, Section};
use logferry_core::options;
use logferry_engine::common::NotApplied;
use logferry_filters::record_accessor::RecordAccessor;

use crate::client::AwsSettings;
use crate::error::AwsError;
use crate::kinesis_core::record::{Compression, RecordFormat};
use crate::options::{key_error, names, split_entries, AwsOptions};

options! {
    /// Options of the `kinesis_streams` output besides the shared AWS ones.
    pub struct KinesisOptions for "kinesis_streams output" {
        /// The Kinesis data stream to send to.
        pub stream: String = ["stream"] None,
        /// Partition key: a record accessor ($kubernetes['pod_name']) or key; random when unset or missing.
        pub partition_key: Option<String> = ["partition_key"] None,
        /// Add the record time under this key (not added by default).
        pub time_key: Option<String> = ["time_key"] None,
        /// strftime format of time_key; %3N milliseconds, %9N or %L nanoseconds.
        pub time_key_format: String = ["time_key_format"] Some("%Y-%m-%dT%H:%M:%S"),
        /// Send only this key's value (strings raw, other values as JSON), not the whole record.
        pub log_key: Option<String> = ["log_key"] None,
        /// Pack records into KPL aggregated records (up to 1 MiB each).
        pub aggregation: bool = ["aggregation"] Some("false"),
        /// Compress each record: gzip or zlib.
        pub compression: Option<String> = ["compression"] None,
        /// Add a newline after each record (Go plugin).
        pub append_newline: bool = ["append_newline"] Some("false"),
         /// Combine several records into one (accepted; each record is sent as one).
        pub simple_aggregation: bool = ["simple_aggregation"] Some("false"),
        /// logferry only: partition_key may read only $kubernetes[...] (the kubernetes filter's metadata), never keys a pod's log can set.
        pub trusted_templates: bool = ["trusted_templates"] Some("false"),
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
pub struct KinesisSettings {
    pub aws: AwsSettings,
    pub stream: String,
    pub partition_key: Option<RecordAccessor>,
    pub aggregation: bool,
    pub format: RecordFormat,
}

/// The Go plugin's nested key syntax `a->b` as an accessor.
fn partition_accessor(raw: &str) -> Result<RecordAccessor, String> {
    if raw.starts_with('$') || !raw.contains("->") {
        return RecordAccessor::parse_key(raw);
    }
    let mut parts = raw.split("->").map(str::trim);
    let first = parts.next().unwrap_or_default();
    let mut pattern = format!("${first}");
    for p in parts {
        pattern.push_str(&format!("['{}']", p.replace('\'', "''")));
    }
    RecordAccessor::parse(&pattern)
}

impl KinesisSettings {
    /// Checks the plugin's options with shared settings already resolved.
    pub fn with_aws(aws: AwsSettings, o: &KinesisOptions) -> Result<Self, AwsError> {
        let stream = o.stream.trim().to_string();
        if stream.is_empty() {
            return Err(AwsError::setting("stream", "empty"));
        }
        let compression = Compression::parse(o.compression.as_deref(), &["gzip", "zlib"])?;
        let partition_key = o
            .partition_key
            .as_deref()
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(partition_accessor)
            .transpose()
            .map_err(|r| AwsError::setting("partition_key", r))?;
        if let Some(k) = partition_key
            .as_ref()
            .filter(|k| o.trusted_templates && k.key() != crate::template::TRUSTED_KEY)
        {
            return Err(AwsError::setting(
                "trusted_templates",
                format!("partition_key reads the record key '{}', which a pod's log can set; with trusted_templates On it may read only ${}[...]", k.key(), crate::template::TRUSTED_KEY),
            ));
        }
        Ok(KinesisSettings {
            aws,
            stream,
            partition_key,
            aggregation: o.aggregation,
            format: RecordFormat::new(
                o.time_key.as_deref(),
                &o.time_key_format,
                o.log_key.as_deref(),
                o.append_newline,
                compression,
            )?,
        })
    }
}

/// Reads and checks the section's entries; errors name file:line and the key.
pub fn settings_from_entries(
    section: &Section,
    entries: &[&Entry],
) -> Result<KinesisSettings, ConfigError> {
    let (aws_entries, own) = split_entries(entries);
    let aws = AwsOptions::from_entries(&section.span, &aws_entries, &[])?;
    let opts = KinesisOptions::from_entries(&section.span, &own, &names(AwsOptions::OPTIONS))?;
    AwsSettings::from_options(&aws)
        .and_then(|aws| KinesisSettings::with_aws(aws, &opts))
        .map_err(|e| match e {
            AwsError::Setting { key, reason } => key_error(section, entries, key, reason),
            other => ConfigError::at(&section.span, other.to_string()),
        })
}
