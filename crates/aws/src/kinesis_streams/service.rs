//! PutRecords, and the Kinesis record encoding (partition keys, aggregation).

use async_trait::async_trait;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use aws_sdk_kinesis::Client;
use aws_smithy_types::Blob;
use logferry_core::{Record, Value};
use logferry_filters::record_accessor::RecordAccessor;
use rand::distr::{Alphanumeric, SampleString};

use super::aggregation::Aggregator;
use super::config::KinesisSettings;
use crate::client::LazyClient;
use crate::encode::truncate_utf8;
use crate::error::AwsError;
use crate::kinesis_core::batch::Limits;
use crate::kinesis_core::record::RecordFormat;
use crate::kinesis_core::sink::{Encoded, Encoder, Item, ItemResult, RecordService};
use crate::retry::{to_aws_error_with, with_auto_retry, MissingResource};

/// PutRecords limits (Amazon Kinesis Data Streams API reference; shared facts).
pub const LIMITS: Limits = Limits {
    max_records: 500,
    max_bytes: 5 * 1024 * 1024,
    max_record_bytes: 1024 * 1024,
};
/// Longest partition key Kinesis takes (characters; keys here are cut at 256 bytes).
pub const MAX_PARTITION_KEY: usize = 256;
/// Length of random partition keys.
pub const RANDOM_KEY_LEN: usize = 32;

/// Records → Kinesis records.
pub struct KinesisEncoder {
    format: RecordFormat,
    partition_key: Option<RecordAccessor>,
    aggregation: bool,
}

impl KinesisEncoder {
    /// The encoder for `s`.
    pub fn new(s: &KinesisSettings) -> Self {
        KinesisEncoder {
            format: s.format.clone(),
            partition_key: s.partition_key.clone(),
            aggregation: s.aggregation,
        }
    }

    fn key(&self, r: &Record) -> String {
        let found = self
            .partition_key
            .as_ref()
            .and_then(|k| match k.get(&r.body)? {
                Value::Str(s) if !s.is_empty() => {
                    Some(truncate_utf8(s, MAX_PARTITION_KEY).to_string())
                }
                Value::Int(i) => Some(i.to_string()),
                Value::UInt(u) => Some(u.to_string()),
                _ => None,
            });
        found.unwrap_or_else(|| Alphanumeric.sample_string(&mut rand::rng(), RANDOM_KEY_LEN))
    }
}

impl Encoder for KinesisEncoder {
    fn encode(&self, _tag: &str, records: &mut dyn Iterator<Item = &Record>) -> Encoded {
        let mut enc = Encoded::default();
        let mut buf = Vec::new();
        let mut agg = Aggregator::default();
        // Batch indices of the records in `agg`.
        let mut in_agg: Vec<usize> = Vec::new();
        for (i, r) in records.enumerate() {
            let data = match self.format.encode(r, &mut buf) {
                Ok(d) => d,
                Err(why) => {
                    enc.skip(why, i);
                    continue;
                }
            };
            let key = self.key(r);
            if !self.aggregation {
                enc.push(
                    Item {
                        data,
                        partition_key: Some(key),
                    },
                    &[i],
                );
                continue;
            }
            if !agg.is_empty() && agg.size_with(&key, data.len()) > LIMITS.max_record_bytes {
                let (blob, k) = agg.finish();
                enc.push(
                    Item {
                        data: blob,
                        partition_key: Some(k),
                    },
                    &in_agg,
                );
                in_agg.clear();
            }
            agg.add(&key, data);
            in_agg.push(i);
        }
        if !agg.is_empty() {
            let (blob, k) = agg.finish();
            enc.push(
                Item {
                    data: blob,
                    partition_key: Some(k),
                },
                &in_agg,
            );
        }
        enc
    }
}

/// Talks to Kinesis Data Streams.
pub struct KinesisService {
    client: LazyClient<Client>,
    stream: String,
    auto_retry: bool,
}

impl KinesisService {
    /// A service for `settings` (the client is built on first use).
    pub fn new(settings: KinesisSettings) -> Self {
        KinesisService {
            auto_retry: settings.aws.auto_retry_requests,
            client: LazyClient::new(settings.aws),
            stream: settings.stream,
        }
    }
}

#[async_trait]
impl RecordService for KinesisService {
    fn limits(&self) -> Limits {
        LIMITS
    }

    fn operation(&self) -> &'static str {
        "PutRecords"
    }

    async fn put(&self, items: &[&Item]) -> Result<Vec<ItemResult>, AwsError> {
        let mut records = Vec::with_capacity(items.len());
        for it in items {
            records.push(
                PutRecordsRequestEntry::builder()
                    .data(Blob::new(it.data.clone()))
                    .partition_key(it.partition_key.clone().unwrap_or_default())
                    .build()
                    .map_err(|e| AwsError::Permanent(format!("building a record: {e}")))?,
            );
        }
        let client = self.client.get().await;
        let out = with_auto_retry(self.auto_retry, || {
            client
                .put_records()
                .stream_name(&self.stream)
                .set_records(Some(records.clone()))
                .send()
        })
        .await
        // A stream that does not exist (yet) is an operator fix: retried.
        .map_err(|e| to_aws_error_with("PutRecords", &e, MissingResource::Transient))?;
        Ok(out
            .records()
            .iter()
            .map(|r| ItemResult::from_answer(r.error_code(), r.error_message()))
            .collect())
    }
}
