//! PutRecordBatch, and the Firehose record encoding.

use async_trait::async_trait;
use aws_sdk_firehose::Client;
use bytes::Bytes;
use logferry_engine::plugin::BatchRecords;

use super::config::FirehoseSettings;
use crate::client::LazyClient;
use crate::error::AwsError;
use crate::kinesis_core::batch::Limits;
use crate::kinesis_core::body::{self, BodyPool};
use crate::kinesis_core::record::RecordFormat;
use crate::kinesis_core::sink::{encode_view, Encoded, Encoder, ItemResult, RecordService};
use crate::retry::{to_aws_error_with, with_auto_retry, MissingResource};

/// PutRecordBatch limits (Amazon Data Firehose API reference; shared facts).
pub const LIMITS: Limits = Limits {
    max_records: 500,
    max_bytes: 4 * 1024 * 1024,
    max_record_bytes: 1_000 * 1024,
};

/// Records → Firehose blobs.
pub struct FirehoseEncoder {
    pub format: RecordFormat,
}

impl Encoder for FirehoseEncoder {
    fn encode(&self, _tag: &str, records: &BatchRecords<'_>, enc: &mut Encoded) {
        let mut scratch = std::mem::take(&mut enc.scratch);
        encode_view(
            records,
            &self.format,
            true,
            &mut scratch,
            |i, _, res, s| match res {
                Ok(()) => enc.push(&s.blob, None, &[i]),
                Err(why) => enc.skip(why, i),
            },
        );
        enc.scratch = scratch;
    }
}

/// Talks to Firehose.
pub struct FirehoseService {
    client: LazyClient<Client>,
    stream: String,
    auto_retry: bool,
    bodies: BodyPool,
}

impl FirehoseService {
    /// A service for `settings` (the client is built on first use).
    pub fn new(settings: FirehoseSettings) -> Self {
        FirehoseService {
            auto_retry: settings.aws.auto_retry_requests,
            client: LazyClient::new(settings.aws),
            stream: settings.delivery_stream,
            bodies: BodyPool::default(),
        }
    }
}

#[async_trait]
impl RecordService for FirehoseService {
    fn limits(&self) -> Limits {
        LIMITS
    }

    fn operation(&self) -> &'static str {
        "PutRecordBatch"
    }

    async fn put(&self, enc: &Encoded, items: &[usize]) -> Result<Vec<ItemResult>, AwsError> {
        let mut body = self.bodies.take();
        body::firehose(&mut body, &self.stream, enc, items);
        let body = Bytes::from(body);
        let client = self.client.get().await;
        let out = with_auto_retry(self.auto_retry, || {
            let body = body.clone();
            // The SDK builds the request (its own body of no records is replaced by ours
            // before signing: see `kinesis_core::body`).
            client
                .put_record_batch()
                .delivery_stream_name(&self.stream)
                .set_records(Some(Vec::new()))
                .customize()
                .mutate_request(move |req| body::set_body(req, &body))
                .send()
        })
        .await;
        self.bodies.give(body);
        // A delivery stream that does not exist (yet) is an operator fix: retried.
        let out =
            out.map_err(|e| to_aws_error_with("PutRecordBatch", &e, MissingResource::Transient))?;
        Ok(out
            .request_responses()
            .iter()
            .map(|r| ItemResult::from_answer(r.error_code(), r.error_message()))
            .collect())
    }
}
