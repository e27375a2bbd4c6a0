//! PutRecords, and the Kinesis record encoding (partition keys, aggregation).

use async_trait::async_trait;
use aws_sdk_kinesis::Client;
use bytes::Bytes;
use logferry_core::{Record, Value};
use logferry_engine::plugin::BatchRecords;
use logferry_filters::record_accessor::RecordAccessor;
use rand::distr::{Alphanumeric, Distribution};

use super::aggregation::Aggregator;
use super::config::KinesisSettings;
use crate::client::LazyClient;
use crate::encode::truncate_utf8;
use crate::error::AwsError;
use crate::kinesis_core::batch::Limits;
use crate::kinesis_core::body::{self, BodyPool};
use crate::kinesis_core::record::RecordFormat;
use crate::kinesis_core::sink::{encode_view, Encoded, Encoder, ItemResult, RecordService};
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

    /// Writes `r`'s partition key into `out`: the `partition_key` value (a string cut at
    /// [`MAX_PARTITION_KEY`] bytes, or an integer), else [`RANDOM_KEY_LEN`] random
    /// alphanumerics.
    fn key(&self, r: Option<&Record>, out: &mut String, rng: &mut impl rand::Rng) {
        out.clear();
        match (self.partition_key.as_ref())
            .zip(r)
            .and_then(|(k, r)| k.get(&r.body))
        {
            Some(Value::Str(s)) if !s.is_empty() => {
                out.push_str(truncate_utf8(s, MAX_PARTITION_KEY))
            }
            Some(Value::Int(i)) => out.push_str(itoa::Buffer::new().format(*i)),
            Some(Value::UInt(u)) => out.push_str(itoa::Buffer::new().format(*u)),
            _ => out.extend(
                Alphanumeric
                    .sample_iter(&mut *rng)
                    .take(RANDOM_KEY_LEN)
                    .map(char::from),
            ),
        }
    }
}

impl Encoder for KinesisEncoder {
    fn encode(&self, _tag: &str, records: &BatchRecords<'_>, enc: &mut Encoded) {
        let mut scratch = std::mem::take(&mut enc.scratch);
        let mut rng = rand::rng();
        let mut key = String::new();
        let mut agg = Aggregator::default();
        let mut blob = Vec::new();
        // Batch indices of the records in `agg`.
        let mut in_agg: Vec<usize> = Vec::new();
        // Straight from packed chunks unless the partition key is read from the record.
        let packed = self.partition_key.is_none();
        encode_view(
            records,
            &self.format,
            packed,
            &mut scratch,
            |i, r, res, s| {
                if let Err(why) = res {
                    enc.skip(why, i);
                    return;
                }
                self.key(r, &mut key, &mut rng);
                if !self.aggregation {
                    enc.push(&s.blob, Some(&key), &[i]);
                    return;
                }
                if !agg.is_empty() && agg.size_with(&key, s.blob.len()) > LIMITS.max_record_bytes {
                    let k = agg.finish_into(&mut blob);
                    enc.push(&blob, Some(&k), &in_agg);
                    in_agg.clear();
                }
                agg.add(&key, &s.blob);
                in_agg.push(i);
            },
        );
        if !agg.is_empty() {
            let k = agg.finish_into(&mut blob);
            enc.push(&blob, Some(&k), &in_agg);
        }
        enc.scratch = scratch;
    }
}

/// Talks to Kinesis Data Streams.
pub struct KinesisService {
    client: LazyClient<Client>,
    stream: String,
    auto_retry: bool,
    bodies: BodyPool,
}

impl KinesisService {
    /// A service for `settings` (the client is built on first use).
    pub fn new(settings: KinesisSettings) -> Self {
        KinesisService {
            auto_retry: settings.aws.auto_retry_requests,
            client: LazyClient::new(settings.aws),
            stream: settings.stream,
            bodies: BodyPool::default(),
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

    async fn put(&self, enc: &Encoded, items: &[usize]) -> Result<Vec<ItemResult>, AwsError> {
        let mut body = self.bodies.take();
        body::kinesis(&mut body, &self.stream, enc, items);
        let body = Bytes::from(body);
        let client = self.client.get().await;
        let out = with_auto_retry(self.auto_retry, || {
            let body = body.clone();
            // The SDK builds the request (its own body of no records is replaced by ours
            // before signing: see `kinesis_core::body`).
            client
                .put_records()
                .stream_name(&self.stream)
                .set_records(Some(Vec::new()))
                .customize()
                .mutate_request(move |req| body::set_body(req, &body))
                .send()
        })
        .await;
        self.bodies.give(body);
        // A stream that does not exist (yet) is an operator fix: retried.
        let out =
            out.map_err(|e| to_aws_error_with("PutRecords", &e, MissingResource::Transient))?;
        Ok(out
            .records()
            .iter()
            .map(|r| ItemResult::from_answer(r.error_code(), r.error_message()))
            .collect())
    }
}
