//! PutRecordBatch, and the Firehose record encoding.

use async_trait::async_trait;
use aws_sdk_firehose::types::Record as FirehoseRecord;
use aws_sdk_firehose::Client;
use aws_smithy_types::Blob;
use logferry_core::Record;

use super::config::FirehoseSettings;
use crate::client::LazyClient;
use crate::error::AwsError;
use crate::kinesis_core::batch::Limits;
use crate::kinesis_core::record::RecordFormat;
use crate::kinesis_core::sink::{Encoded, Encoder, Item, ItemResult, RecordService};
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
    fn encode(&self, _tag: &str, records: &mut dyn Iterator<Item = &Record>) -> Encoded {
        let mut enc = Encoded::default();
        let mut buf = Vec::new();
        for (i, r) in records.enumerate() {
            match self.format.encode(r, &mut buf) {
                Ok(data) => enc.push(
                    Item {
                        data,
                        partition_key: None,
                    },
                    &[i],
                ),
                Err(why) => enc.skip(why, i),
            }
        }
        enc
    }
}

/// Talks to Firehose.
pub struct FirehoseService {
    client: LazyClient<Client>,
    stream: String,
    auto_retry: bool,
}

impl FirehoseService {
    /// A service for `settings` (the client is built on first use).
    pub fn new(settings: FirehoseSettings) -> Self {
        FirehoseService {
            auto_retry: settings.aws.auto_retry_requests,
            client: LazyClient::new(settings.aws),
            stream: settings.delivery_stream,
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

    async fn put(&self, items: &[&Item]) -> Result<Vec<ItemResult>, AwsError> {
        let mut records = Vec::with_capacity(items.len());
        for it in items {
            records.push(
                FirehoseRecord::builder()
                    .data(Blob::new(it.data.clone()))
                    .build()
                    .map_err(|e| AwsError::Permanent(format!("building a record: {e}")))?,
            );
        }
        let client = self.client.get().await;
        let out = with_auto_retry(self.auto_retry, || {
            client
                .put_record_batch()
                .delivery_stream_name(&self.stream)
                .set_records(Some(records.clone()))
                .send()
        })
        .await
        // A delivery stream that does not exist (yet) is an operator fix: retried.
        .map_err(|e| to_aws_error_with("PutRecordBatch", &e, MissingResource::Transient))?;
        Ok(out
            .request_responses()
            .iter()
            .map(|r| ItemResult::from_answer(r.error_code(), r.error_message()))
            .collect())
    }
}
