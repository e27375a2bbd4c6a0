//! One output for record-stream APIs (Firehose PutRecordBatch, Kinesis PutRecords).
//!
//! A flush encodes the batch into items, rejects what cannot be sent (no `log_key`, a record
//! over the per-record limit: dropped, not truncated, since a cut JSON or compressed blob is
//! useless downstream), then sends the pending items in calls cut by the limits. Rejected
//! records go to [`Batch::reject`] (counted as dropped, kept for the dead-letter store when it
//! is on) as the records they came from ([`Encoded::records_of`]), and are logged with why.
//!
//! Partial failures:
//! - a call can accept part of its records (`FailedPutCount`/`FailedRecordCount`). Failed
//!   records with a retryable code (throttling, internal failure, credentials, KMS access or a
//!   disabled key: see [`crate::retry`]) are sent again **alone**, inside the flush, up to
//!   [`PARTIAL_RETRIES`] times with full-jitter waits (bounded by [`PARTIAL_RETRY_CAP`]
//!   each); records refused with another code are rejected and logged;
//! - a whole call failing with a retryable error (including `ResourceNotFoundException`: a
//!   stream that does not exist yet is an operator fix, [`MissingResource::Transient`]), or
//!   records still failing after the in-flush attempts, make the flush return `Retry`; what
//!   was accepted is kept in a [`ProgressMemo`] so the engine's retry sends only what is left;
//! - a whole call refused for good: when nothing of the batch was delivered the flush returns
//!   `Error`; otherwise those records are rejected and logged here.

use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use logferry_core::Record;
use logferry_engine::metrics::PluginMetrics;
use logferry_engine::{Batch, FlushResult, Output};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::batch::{split, Limits};
use super::record::Scratch;
use crate::encode::Skip;
use crate::error::AwsError;
use crate::progress::ProgressMemo;
use crate::retry::{classify_code, full_jitter, MissingResource};

/// In-flush re-sends of records a call refused individually with a retryable code.
pub const PARTIAL_RETRIES: u32 = 3;
/// First wait before re-sending refused records.
pub const PARTIAL_RETRY_BASE: Duration = Duration::from_millis(100);
/// Longest wait before re-sending refused records.
pub const PARTIAL_RETRY_CAP: Duration = Duration::from_secs(2);

/// One record to send: where its blob lies in [`Encoded`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    /// The blob, base64-encoded (the form the request body carries), in [`Encoded::data`].
    data: Range<usize>,
    /// The blob's length before base64.
    len: usize,
    /// The partition key in [`Encoded`]'s keys (Kinesis only; empty for Firehose).
    key: Option<Range<usize>>,
}

impl Item {
    /// Bytes it counts for against the limits (the blob, plus the partition key for Kinesis).
    pub fn size(&self) -> usize {
        self.len + self.key.as_ref().map_or(0, Range::len)
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
    /// Sends one call of the items of `enc` at `items` (indices in [`Encoded::items`]); one
    /// result per item, in order.
    async fn put(&self, enc: &Encoded, items: &[usize]) -> Result<Vec<ItemResult>, AwsError>;
}

/// Turns records into items.
pub trait Encoder: Send + Sync + 'static {
    /// Adds the items of `records` under `tag` to `out` (empty, its buffers reused), and notes
    /// the records that gave none.
    fn encode(&self, tag: &str, records: &mut dyn Iterator<Item = &Record>, out: &mut Encoded);
}

/// Items of one flush. Each record is encoded once, straight into the form the request body
/// carries (base64 text, one item after another in one buffer); a call's body is then these
/// pieces copied between the JSON punctuation, and a re-sent record is copied again, not
/// encoded again. The buffers are kept from flush to flush.
#[derive(Debug, Default)]
pub struct Encoded {
    pub items: Vec<Item>,
    /// Records that gave no item, by reason: their indices in the batch.
    pub skipped: Vec<(Skip, Vec<usize>)>,
    /// Every item's blob, base64-encoded, one after another.
    data: Vec<u8>,
    /// Every item's partition key, one after another.
    keys: String,
    /// Batch indices of the records each item carries: `sources[spans[i]]` for item `i`.
    sources: Vec<usize>,
    spans: Vec<Range<usize>>,
    /// The encoders' per-record buffers.
    pub scratch: Scratch,
}

impl Encoded {
    /// Empties it for another batch, keeping its buffers.
    pub fn clear(&mut self) {
        self.items.clear();
        self.skipped.clear();
        self.data.clear();
        self.keys.clear();
        self.sources.clear();
        self.spans.clear();
        self.scratch.start_batch();
    }

    /// Notes that the record at `record` (its index in the batch) gave no item.
    pub fn skip(&mut self, why: Skip, record: usize) {
        match self.skipped.iter_mut().find(|(w, _)| *w == why) {
            Some((_, v)) => v.push(record),
            None => self.skipped.push((why, vec![record])),
        }
    }

    /// Adds an item with `blob` (base64-encoded here, the one time it is) and `key`, that
    /// carries the records at `records` (indices in the batch; several for an aggregated
    /// Kinesis record).
    pub fn push(&mut self, blob: &[u8], key: Option<&str>, records: &[usize]) {
        let start = self.data.len();
        let n = base64::encoded_len(blob.len(), true).unwrap_or(0);
        self.data.resize(start + n, 0);
        let written = STANDARD
            .encode_slice(blob, &mut self.data[start..])
            .unwrap_or(0);
        self.data.truncate(start + written);
        let key = key.map(|k| {
            let from = self.keys.len();
            self.keys.push_str(k);
            from..self.keys.len()
        });
        self.items.push(Item {
            data: start..self.data.len(),
            len: blob.len(),
            key,
        });
        let from = self.sources.len();
        self.sources.extend_from_slice(records);
        self.spans.push(from..self.sources.len());
    }

    /// Item `i`'s blob, base64-encoded.
    pub fn data(&self, i: usize) -> &[u8] {
        self.items
            .get(i)
            .and_then(|it| self.data.get(it.data.clone()))
            .unwrap_or_default()
    }

    /// Item `i`'s blob (decoded; for tests and logs).
    pub fn blob(&self, i: usize) -> Vec<u8> {
        STANDARD.decode(self.data(i)).unwrap_or_default()
    }

    /// Item `i`'s partition key.
    pub fn key(&self, i: usize) -> Option<&str> {
        self.items
            .get(i)
            .and_then(|it| it.key.clone())
            .and_then(|k| self.keys.get(k))
    }

    /// Batch indices of the records item `i` carries.
    pub fn records_of(&self, i: usize) -> &[usize] {
        self.spans
            .get(i)
            .and_then(|r| self.sources.get(r.clone()))
            .unwrap_or(&[])
    }

    /// Bytes held by its buffers (to decide whether to keep it for the next flush).
    fn capacity(&self) -> usize {
        self.data.capacity() + self.keys.capacity() + self.scratch.capacity()
    }
}

/// Encoded buffers kept between flushes (one per concurrent flush is enough).
const ENCODED_KEPT: usize = 4;
/// Buffers larger than this are let go rather than kept.
const ENCODED_KEPT_MAX: usize = 16 << 20;

#[derive(Debug, Default)]
struct Progress {
    /// Items handled: accepted, or dropped and counted.
    done: Vec<bool>,
    encode_counted: bool,
    delivered: usize,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// The output.
pub struct RecordOutput<S, E> {
    service: S,
    encoder: E,
    memo: ProgressMemo<Progress>,
    metrics: Arc<PluginMetrics>,
    name: String,
    encoded: Mutex<Vec<Encoded>>,
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
            encoded: Mutex::new(Vec::new()),
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
        let records: Vec<&Record> = b.records().collect();
        let mut enc = lock(&self.encoded).pop().unwrap_or_default();
        enc.clear();
        self.encoder
            .encode(&b.tag, &mut records.iter().copied(), &mut enc);
        let result = self.send(b, &records, &enc).await;
        // The buffers serve the next flush at their grown size, unless a large flush made
        // them big.
        let mut pool = lock(&self.encoded);
        if pool.len() < ENCODED_KEPT && enc.capacity() <= ENCODED_KEPT_MAX {
            pool.push(enc);
        }
        drop(pool);
        result
    }
}

impl<S: RecordService, E: Encoder> RecordOutput<S, E> {
    /// Sends what `enc` holds for batch `b` (see the module doc).
    async fn send(&self, b: &Batch, records: &[&Record], enc: &Encoded) -> FlushResult {
        let items = &enc.items;
        let limits = self.service.limits();
        let op = self.service.operation();
        // The records carried by the items at `idx`.
        let records_of = |idx: &[usize]| -> Vec<&Record> {
            idx.iter()
                .flat_map(|&i| enc.records_of(i))
                .filter_map(|&r| records.get(r).copied())
                .collect()
        };
        let mut progress = match self.memo.take(b) {
            Some(p) if p.done.len() == items.len() => p,
            _ => Progress {
                done: vec![false; items.len()],
                ..Progress::default()
            },
        };
        if !progress.encode_counted {
            progress.encode_counted = true;
            for (why, idx) in &enc.skipped {
                b.reject(
                    &self.metrics,
                    idx.iter().filter_map(|&r| records.get(r).copied()),
                );
                tracing::warn!(output = %self.name, tag = %b.tag, records = idx.len(), reason = why.reason(), "records dropped");
            }
            let oversize: Vec<usize> = (0..items.len())
                .filter(|&i| items[i].size() > limits.max_record_bytes)
                .collect();
            if !oversize.is_empty() {
                for &i in &oversize {
                    progress.done[i] = true;
                }
                let refused = records_of(&oversize);
                b.reject(&self.metrics, refused.iter().copied());
                tracing::warn!(output = %self.name, tag = %b.tag, records = refused.len(),
                    max_bytes = limits.max_record_bytes, "records larger than the service accepts; dropped");
            }
        }
        let mut pending: Vec<usize> = (0..items.len()).filter(|&i| !progress.done[i]).collect();
        // Items refused for good, and why.
        let mut lost: Vec<(Vec<usize>, String)> = Vec::new();
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
                match self.service.put(enc, idx).await {
                    Ok(results) => {
                        for (k, &i) in idx.iter().enumerate() {
                            match results.get(k) {
                                Some(ItemResult::Accepted) => {
                                    progress.done[i] = true;
                                    progress.delivered += 1;
                                    b.count_delivered(1);
                                }
                                Some(ItemResult::Failed { code, message })
                                    if !classify_code(Some(code), 0)
                                        .is_retryable_with(MissingResource::Transient) =>
                                {
                                    progress.done[i] = true;
                                    let refused = records_of(&[i]);
                                    b.reject(&self.metrics, refused.iter().copied());
                                    tracing::error!(output = %self.name, tag = %b.tag, records = refused.len(),
                                        reason = %format!("{op}: {code}: {message}"), "the service refused records; dropped");
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
                        lost.push((idx.to_vec(), e.to_string()));
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
            for (idx, reason) in lost {
                let refused = records_of(&idx);
                b.reject(&self.metrics, refused.iter().copied());
                tracing::error!(output = %self.name, tag = %b.tag, records = refused.len(), %reason, "the service refused records; dropped");
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
