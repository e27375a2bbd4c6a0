//! One output for record-stream APIs (Firehose PutRecordBatch, Kinesis PutRecords).
//!
//! A flush encodes the batch into items, drops (and counts) what cannot be sent (no `log_key`,
//! a record over the per-record limit: dropped, not truncated, since a cut JSON or compressed
//! blob is useless downstream), then sends the pending items in calls cut by the limits.
//!
//! Partial failures:
//! - a call can accept part of its records (`FailedPutCount`/`FailedRecordCount`). Failed
//!   records with a retryable code (throttling, internal failure) are sent again **alone**,
//!   inside the flush, up to [`PARTIAL_RETRIES`] times with full-jitter waits (bounded by
//!   [`PARTIAL_RETRY_CAP`] each); records with another code (KMS access, …) are dropped,
//!   counted and logged;
//! - a whole call failing with a retryable error, or records still failing after the in-flush
//!   attempts, make the flush return `Retry`; what was accepted is kept in a [`ProgressMemo`]
//!   so the engine's retry sends only what is left;
//! - a whole call refused for good: when nothing of the batch was delivered the flush returns
//!   `Error`; otherwise those records are counted as dropped and logged here.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use logferry_core::Record;
use logferry_engine::metrics::PluginMetrics;
use logferry_engine::{Batch, FlushResult, Output};

use super::batch::{split, Limits};
use crate::encode::Skip;
use crate::error::AwsError;
use crate::progress::ProgressMemo;
use crate::retry::{classify_code, full_jitter};

/// In-flush re-sends of records a call refused individually with a retryable code.
pub const PARTIAL_RETRIES: u32 = 3;
/// First wait before re-sending refused records.
pub const PARTIAL_RETRY_BASE: Duration = Duration::from_millis(100);
/// Longest wait before re-sending refused records.
pub const PARTIAL_RETRY_CAP: Duration = Duration::from_secs(2);

/// One record to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub data: Vec<u8>,
    /// Kinesis only.
    pub partition_key: Option<String>,
}

impl Item {
    /// Bytes it counts for against the limits.
    pub fn size(&self) -> usize {
        self.data.len() + self.partition_key.as_ref().map_or(0, String::len)
    }
}

/// How one record of a call fared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ItemResult {
    Accepted,
    Failed { code: String, message: String },
}

impl ItemResult {
    /// From a per-record answer of PutRecordBatch / PutRecords: no error code means accepted.
    pub fn from_answer(error_code: Option<&str>, error_message: Option<&str>) -> Self {
        match error_code {
            None => ItemResult::Accepted,
            Some(code) => ItemResult::Failed {
                code: code.to_string(),
                message: error_message.unwrap_or("").to_string(),
            },
        }
    }
}

/// A service that takes records in calls.
#[async_trait]
pub trait RecordService: Send + Sync + 'static {
    /// Limits of one call.
    fn limits(&self) -> Limits;
    /// The API operation, for logs.
    fn operation(&self) -> &'static str;
    /// Sends one call; one result per item, in order.
    async fn put(&self, items: &[&Item]) -> Result<Vec<ItemResult>, AwsError>;
}

/// Turns records into items.
pub trait Encoder: Send + Sync + 'static {
    /// The items of `records` under `tag`, and the records that gave none.
    fn encode(&self, tag: &str, records: &mut dyn Iterator<Item = &Record>) -> Encoded;
}

/// Items of one flush.
#[derive(Debug, Default)]
pub struct Encoded {
    pub items: Vec<Item>,
    pub skipped: Vec<(Skip, u64)>,
}

impl Encoded {
    /// Counts one skipped record.
    pub fn skip(&mut self, why: Skip) {
        match self.skipped.iter_mut().find(|(w, _)| *w == why) {
            Some((_, n)) => *n += 1,
            None => self.skipped.push((why, 1)),
        }
    }
}

#[derive(Debug, Default)]
struct Progress {
    /// Items handled: accepted, or dropped and counted.
    done: Vec<bool>,
    encode_counted: bool,
    delivered: usize,
}

/// The output.
pub struct RecordOutput<S, E> {
    service: S,
    encoder: E,
    memo: ProgressMemo<Progress>,
    metrics: Arc<PluginMetrics>,
    name: String,
}

impl<S: RecordService, E: Encoder> RecordOutput<S, E> {
    /// An output sending through `service`.
    pub fn new(service: S, encoder: E, metrics: Arc<PluginMetrics>, name: String) -> Self {
        RecordOutput {
            service,
            encoder,
            memo: ProgressMemo::default(),
            metrics,
            name,
        }
    }

    /// Batches waiting for a retry with part of them delivered.
    pub fn pending_retries(&self) -> usize {
        self.memo.len()
    }

    /// The service.
    pub fn service(&self) -> &S {
        &self.service
    }
}

#[async_trait]
impl<S: RecordService, E: Encoder> Output for RecordOutput<S, E> {
    async fn flush(&self, b: &Batch) -> FlushResult {
        let enc = self.encoder.encode(&b.tag, &mut b.records());
        let items = enc.items;
        let limits = self.service.limits();
        let op = self.service.operation();
        let mut progress = match self.memo.take(b) {
            Some(p) if p.done.len() == items.len() => p,
            _ => Progress {
                done: vec![false; items.len()],
                ..Progress::default()
            },
        };
        if !progress.encode_counted {
            progress.encode_counted = true;
            for (why, n) in &enc.skipped {
                b.count_dropped(&self.metrics, *n);
                tracing::warn!(output = %self.name, tag = %b.tag, records = n, reason = why.reason(), "records dropped");
            }
            let oversize: Vec<usize> = (0..items.len())
                .filter(|&i| items[i].size() > limits.max_record_bytes)
                .collect();
            if !oversize.is_empty() {
                for &i in &oversize {
                    progress.done[i] = true;
                }
                b.count_dropped(&self.metrics, oversize.len() as u64);
                tracing::warn!(output = %self.name, tag = %b.tag, records = oversize.len(),
                    max_bytes = limits.max_record_bytes, "records larger than the service accepts; dropped");
            }
        }
        let mut pending: Vec<usize> = (0..items.len()).filter(|&i| !progress.done[i]).collect();
        let mut lost: Vec<(usize, String)> = Vec::new();
        let mut attempt = 0u32;
        let retry_reason = loop {
            if pending.is_empty() {
                break None;
            }
            let sizes: Vec<usize> = pending.iter().map(|&i| items[i].size()).collect();
            let mut refused: Vec<usize> = Vec::new();
            let mut reason = String::new();
            let mut call_failed: Option<String> = None;
            for range in split(&sizes, limits) {
                let idx = &pending[range];
                if call_failed.is_some() {
                    refused.extend_from_slice(idx);
                    continue;
                }
                let call: Vec<&Item> = idx.iter().map(|&i| &items[i]).collect();
                match self.service.put(&call).await {
                    Ok(results) => {
                        for (k, &i) in idx.iter().enumerate() {
                            match results.get(k) {
                                Some(ItemResult::Accepted) => {
                                    progress.done[i] = true;
                                    progress.delivered += 1;
                                    b.count_delivered(1);
                                }
                                Some(ItemResult::Failed { code, message })
                                    if !classify_code(Some(code), 0).is_retryable() =>
                                {
                                    progress.done[i] = true;
                                    lost.push((1, format!("{op}: {code}: {message}")));
                                }
                                Some(ItemResult::Failed { code, message }) => {
                                    refused.push(i);
                                    reason = format!("{op}: {code}: {message}");
                                }
                                None => {
                                    refused.push(i);
                                    reason = format!("{op}: the answer has no result for a record");
                                }
                            }
                        }
                    }
                    Err(e) if e.is_transient() => {
                        refused.extend_from_slice(idx);
                        call_failed = Some(e.to_string());
                    }
                    Err(e) => {
                        for &i in idx {
                            progress.done[i] = true;
                        }
                        lost.push((idx.len(), e.to_string()));
                    }
                }
            }
            if refused.is_empty() {
                break None;
            }
            if let Some(r) = call_failed {
                break Some(r);
            }
            attempt += 1;
            if attempt > PARTIAL_RETRIES {
                break Some(format!(
                    "{} records still refused after {PARTIAL_RETRIES} re-sends: {reason}",
                    refused.len()
                ));
            }
            self.metrics
                .retried_records
                .fetch_add(refused.len() as u64, std::sync::atomic::Ordering::Relaxed);
            tracing::debug!(output = %self.name, records = refused.len(), attempt, %reason, "re-sending refused records");
            tokio::time::sleep(full_jitter(
                attempt - 1,
                PARTIAL_RETRY_BASE,
                PARTIAL_RETRY_CAP,
            ))
            .await;
            pending = refused;
        };
        if !lost.is_empty() {
            if progress.delivered == 0 && retry_reason.is_none() {
                let reasons: Vec<String> = lost.into_iter().map(|(_, r)| r).collect();
                return FlushResult::Error(reasons.join("; "));
            }
            for (n, reason) in lost {
                b.count_dropped(&self.metrics, n as u64);
                tracing::error!(output = %self.name, tag = %b.tag, records = n, %reason, "the service refused records; dropped");
            }
        }
        match retry_reason {
            Some(reason) => {
                self.memo.keep(b, progress);
                FlushResult::Retry(reason)
            }
            None => FlushResult::Ok,
        }
    }
}
