//! logferry-aws: the AWS outputs on the official AWS SDK for Rust, with Fluent Bit's and AWS
//! for Fluent Bit's option names: `cloudwatch_logs` (alias `cloudwatch`), `kinesis_firehose`
//! (alias `firehose`), `kinesis_streams` (alias `kinesis`), `s3`, and `opensearch` / `es` (SigV4-signed
//! with `AWS_Auth On`).
//!
//! Shared pieces: [`client`] (one client factory: region, `endpoint`, credentials chain,
//! `role_arn` via STS, SDK retries off), [`retry`] (the one error classifier every output uses),
//! [`progress`] (what a retried batch already delivered, so nothing accepted is sent twice),
//! [`template`] (record-accessor templates for names), [`encode`] (record → JSON message),
//! [`plain_json`] (record → JSON text by hand, for the Firehose, Kinesis and S3 bodies),
//! [`options`] (the shared AWS options, declared once). Firehose and Kinesis share
//! [`kinesis_core`]. Each output is one folder (`config.rs`, the request building and
//! batching, `service.rs`, the sink, `tests.rs`). This crate depends on core, engine and
//! filters (for the record accessor) only; the binary lists [`PLUGINS`] in its registry.

pub mod client;
pub mod cloudwatch_logs;
pub mod encode;
pub mod error;
pub mod kinesis_core;
pub mod kinesis_firehose;
pub mod kinesis_streams;
pub mod opensearch;
pub mod options;
pub mod plain_json;
pub mod progress;
pub mod retry;
pub mod s3;
pub mod template;
#[cfg(test)]
mod test_records;
#[cfg(feature = "testing")]
pub mod testing;

use logferry_engine::OutputPlugin;

pub use error::AwsError;

/// Every output in this crate, in documentation order.
pub static PLUGINS: &[&OutputPlugin] = &[
    &cloudwatch_logs::PLUGIN,
    &kinesis_firehose::PLUGIN,
    &kinesis_streams::PLUGIN,
    &s3::PLUGIN,
    &opensearch::PLUGIN,
    &opensearch::ES_PLUGIN,
];
