//! Options of the `s3` output (Fluent Bit's names) and their checks.

use std::path::{Path, PathBuf};
use std::time::Duration;

use logferry_core::config::{ByteSize, ConfigError, Entry, Section};
use logferry_core::options;
use logferry_engine::common::NotApplied;
use logferry_filters::record_accessor::RecordAccessor;

use super::key::KeyFormat;
use crate::client::AwsSettings;
use crate::error::AwsError;
use crate::options::{key_error, names, split_entries, AwsOptions};

options! {
    /// Options of the `s3` output besides the shared AWS ones.
    pub struct S3Options for "s3 output" {
        /// The S3 bucket to upload to.
        pub bucket: String = ["bucket"] None,
        /// Upload a buffer file once it reaches this size.
        pub total_file_size: ByteSize = ["total_file_size"] Some("100M"),
        /// Part size of multipart uploads (5M to 50M); files that fit one part use PutObject.
        pub upload_chunk_size: ByteSize = ["upload_chunk_size"] Some("5242880"),
        /// Upload a buffer file this long after it was started, whatever its size.
        pub upload_timeout: Duration = ["upload_timeout"] Some("10m"),
        /// Object key: strftime of the file's start time plus $TAG, $TAG[n], $UUID and $INDEX.
        pub s3_key_format: String = ["s3_key_format"] Some("/fluent-bit-logs/$TAG/%Y/%m/%d/%H/%M/%S"),
        /// Characters that split the tag for $TAG[n].
        pub s3_key_format_tag_delimiters: String = ["s3_key_format_tag_delimiters"] Some("."),
        /// Do not append a random suffix to keys without $UUID.
        pub static_file_path: bool = ["static_file_path"] Some("false"),
        /// Always upload whole files with PutObject, never multipart.
        pub use_put_object: bool = ["use_put_object"] Some("false"),
        /// Compress objects: gzip or zstd (Content-Encoding is set accordingly).
        pub compression: Option<String> = ["compression"] None,
        /// Content-Type of uploaded objects.
        pub content_type: Option<String> = ["content_type"] None,
        /// Send a Content-MD5 header with PutObject and UploadPart.
        pub send_content_md5: bool = ["send_content_md5"] Some("false"),
        /// Directory where records wait for upload; kept across restarts.
        pub store_dir: String = ["store_dir"] Some("/tmp/fluent-bit/s3"),
        /// Most bytes kept in store_dir; past it flushes are retried later (0: no limit).
        pub store_dir_limit_size: ByteSize = ["store_dir_limit_size"] Some("0"),
        /// Key of the record time in each JSON line; false/off leaves it out.
        pub json_date_key: String = ["json_date_key"] Some("date"),
        /// Format of json_date_key: iso8601, double, epoch, epoch_ms or java_sql_timestamp.
        pub json_date_format: String = ["json_date_format"] Some("iso8601"),
        /// Write only this key's value per line (strings raw), not the whole record.
        pub log_key: Option<String> = ["log_key"] None,
        /// Canned ACL of uploaded objects (private, bucket-owner-full-control, …).
        pub canned_acl: Option<String> = ["canned_acl"] None,
        /// Storage class of uploaded objects (STANDARD, STANDARD_IA, …).
        pub storage_class: Option<String> = ["storage_class"] None,
        /// Accepted, no effect: uploads of one output are always sent in order.
        pub preserve_data_ordering: bool = ["preserve_data_ordering"] Some("true"),
        /// Object format: json_lines (otlp_json and parquet are not yet available).
        pub format: String = ["format"] Some("json_lines"),
        /// What to do with chunks past Retry_Limit (accepted; uploads are retried until delivered).
        pub retry_exhausted_action: Option<String> = ["retry_exhausted_action"] None,
        /// Limit of the quarantine directory (accepted; nothing is quarantined).
        pub quarantine_dir_limit_size: Option<ByteSize> = ["quarantine_dir_limit_size"] None,
        /// Blob uploads: these keys apply to blob inputs, which logferry has not (accepted).
        pub blob: Vec<String> = ["blob_database_file", "part_size", "file_delivery_attempt_limit", "part_delivery_attempt_limit", "upload_parts_timeout", "upload_part_freshness_limit", "authorization_endpoint_url", "authorization_endpoint_username", "authorization_endpoint_password", "authorization_endpoint_bearer_token"] None,
    }
}

/// The s3 keys logferry accepts and does not apply (each set one is a build note).
pub const NOT_APPLIED: &[NotApplied] = &[
    NotApplied::new(
        "retry_exhausted_action",
        None,
        "uploads are retried until delivered; records S3 rejects go to storage.keep.rejected",
    ),
    NotApplied::new("quarantine_dir_limit_size", None, "nothing is quarantined"),
    NotApplied::new("blob_database_file", None, "logferry has no blob input"),
    NotApplied::new("part_size", None, "logferry has no blob input"),
    NotApplied::new(
        "file_delivery_attempt_limit",
        None,
        "logferry has no blob input",
    ),
    NotApplied::new(
        "part_delivery_attempt_limit",
        None,
        "logferry has no blob input",
    ),
    NotApplied::new("upload_parts_timeout", None, "logferry has no blob input"),
    NotApplied::new(
        "upload_part_freshness_limit",
        None,
        "logferry has no blob input",
    ),
    NotApplied::new(
        "authorization_endpoint_url",
        None,
        "logferry has no blob input",
    ),
    NotApplied::new(
        "authorization_endpoint_username",
        None,
        "logferry has no blob input",
    ),
    NotApplied::new(
        "authorization_endpoint_password",
        None,
        "logferry has no blob input",
    ),
    NotApplied::new(
        "authorization_endpoint_bearer_token",
        None,
        "logferry has no blob input",
    ),
];

/// Object compression.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectCompression {
    None,
    Gzip,
    Zstd,
}

/// How the record time is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DateFormat {
    Iso8601,
    Double,
    Epoch,
    EpochMs,
    JavaSqlTimestamp,
}

/// Smallest multipart part S3 accepts (but the last).
pub const MIN_PART: u64 = 5 * 1024 * 1024;
/// Largest `upload_chunk_size` (Fluent Bit's).
pub const MAX_PART: u64 = 50 * 1024 * 1024;

/// The options, checked.
#[derive(Clone, Debug)]
pub struct S3Settings {
    pub aws: AwsSettings,
    pub bucket: String,
    pub total_file_size: u64,
    pub upload_chunk_size: u64,
    pub upload_timeout: Duration,
    pub key: KeyFormat,
    pub use_put_object: bool,
    pub compression: ObjectCompression,
    pub content_type: Option<String>,
    pub send_content_md5: bool,
    pub store_dir: PathBuf,
    pub store_dir_limit_size: u64,
    pub date_key: Option<String>,
    pub date_format: DateFormat,
    pub log_key: Option<RecordAccessor>,
    pub canned_acl: Option<String>,
    pub storage_class: Option<String>,
}

fn non_empty(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

impl S3Settings {
    /// Checks the plugin's options with shared settings already resolved; relative `store_dir`
    /// resolves against `base_dir`.
    pub fn with_aws(aws: AwsSettings, o: &S3Options, base_dir: &Path) -> Result<Self, AwsError> {
        let bucket = o.bucket.trim().to_string();
        if bucket.is_empty() || bucket.contains('/') {
            return Err(AwsError::setting(
                "bucket",
                format!("'{}' is not a bucket name", o.bucket),
            ));
        }
        // Fluent Bit 5.1 also writes otlp_json and parquet objects: refuse them rather than
        // write JSON lines where a reader expects Parquet.
        match o.format.trim().to_ascii_lowercase().as_str() {
            "json_lines" => {}
            f @ ("otlp_json" | "parquet") => {
                return Err(AwsError::setting(
                    "format",
                    format!("'{f}' is not yet available in logferry (json_lines is)"),
                ))
            }
            _ => {
                return Err(AwsError::setting(
                    "format",
                    format!(
                        "expected json_lines, otlp_json or parquet, got '{}'",
                        o.format
                    ),
                ))
            }
        }
        let chunk = o.upload_chunk_size.0;
        if !o.use_put_object && !(MIN_PART..=MAX_PART).contains(&chunk) {
            return Err(AwsError::setting(
                "upload_chunk_size",
                format!("{chunk} bytes: must be between 5M and 50M"),
            ));
        }
        if o.total_file_size.0 == 0 {
            return Err(AwsError::setting("total_file_size", "must be more than 0"));
        }
        if o.upload_timeout.is_zero() {
            return Err(AwsError::setting("upload_timeout", "must be more than 0"));
        }
        let compression = match non_empty(&o.compression)
            .map(|c| c.to_ascii_lowercase())
            .as_deref()
        {
            None | Some("none") => ObjectCompression::None,
            Some("gzip") => ObjectCompression::Gzip,
            Some("zstd") => ObjectCompression::Zstd,
            Some(c) => {
                return Err(AwsError::setting(
                    "compression",
                    format!("'{c}': expected gzip or zstd (arrow and parquet are not supported)"),
                ))
            }
        };
        let key = KeyFormat::parse(
            &o.s3_key_format,
            &o.s3_key_format_tag_delimiters,
            o.static_file_path,
        )
        .map_err(|r| AwsError::setting("s3_key_format", r))?;
        let dk = o.json_date_key.trim();
        let date_key = (!["false", "off", "no", ""]
            .iter()
            .any(|d| dk.eq_ignore_ascii_case(d)))
        .then(|| dk.to_string());
        let date_format = match o.json_date_format.trim().to_ascii_lowercase().as_str() {
            "iso8601" => DateFormat::Iso8601,
            "double" => DateFormat::Double,
            "epoch" => DateFormat::Epoch,
            "epoch_ms" | "epoch_millis" => DateFormat::EpochMs,
            "java_sql_timestamp" => DateFormat::JavaSqlTimestamp,
            other => {
                return Err(AwsError::setting(
                    "json_date_format",
                    format!(
                    "'{other}': expected iso8601, double, epoch, epoch_ms or java_sql_timestamp"
                ),
                ))
            }
        };
        let store_dir = base_dir.join(o.store_dir.trim());
        Ok(S3Settings {
            aws,
            bucket,
            total_file_size: o.total_file_size.0,
            upload_chunk_size: chunk,
            upload_timeout: o.upload_timeout,
            key,
            use_put_object: o.use_put_object,
            compression,
            content_type: non_empty(&o.content_type),
            send_content_md5: o.send_content_md5,
            store_dir,
            store_dir_limit_size: o.store_dir_limit_size.0,
            date_key,
            date_format,
            log_key: non_empty(&o.log_key)
                .map(|k| RecordAccessor::parse_key(&k))
                .transpose()
                .map_err(|r| AwsError::setting("log_key", r))?,
            canned_acl: non_empty(&o.canned_acl),
            storage_class: non_empty(&o.storage_class).map(|s| s.to_ascii_uppercase()),
        })
    }
}

/// Reads and checks the section's entries; errors name file:line and the key.
pub fn settings_from_entries(
    section: &Section,
    entries: &[&Entry],
    base_dir: &Path,
) -> Result<S3Settings, ConfigError> {
    let (aws_entries, own) = split_entries(entries);
    let aws = AwsOptions::from_entries(&section.span, &aws_entries, &[])?;
    let opts = S3Options::from_entries(&section.span, &own, &names(AwsOptions::OPTIONS))?;
    AwsSettings::from_options(&aws)
        .and_then(|aws| S3Settings::with_aws(aws, &opts, base_dir))
        .map_err(|e| match e {
            AwsError::Setting { key, reason } => key_error(section, entries, key, reason),
            other => ConfigError::at(&section.span, other.to_string()),
        })
}
