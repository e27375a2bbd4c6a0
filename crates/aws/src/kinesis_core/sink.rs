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
use logferry_core::packed::{Cursor, UnpackError};
use logferry_core::{EventTime, Record};
use logferry_engine::metrics::PluginMetrics;
use logferry_engine::plugin::{BatchRecords, Part, ReadRecords};
use logferry_engine::{Batch, FlushResult, Output};

use super::batch::{split, Limits};
use super::record::{RecordFormat, Scratch};
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
    /// the records that gave none. Packed chunks may be read straight from their bytes
    /// ([`encode_view`]).
    fn encode(&self, tag: &str, records: &BatchRecords<'_>, out: &mut Encoded);
}

/// Encodes each record of `view` with `format` into `scratch.blob` and hands the outcome to
/// `each`: the record's number in the batch, the record itself when it was read unpacked, and
/// whether it gave a blob. With `packed` (the encoder needs nothing of a record but its blob,
/// and `format` [`RecordFormat::reads_packed`]) packed chunks are encoded straight from their
/// bytes, as CloudWatch Logs' events are, instead of being unpacked into records first.
pub fn encode_view(
    view: &BatchRecords<'_>,
    format: &RecordFormat,
    packed: bool,
    scratch: &mut Scratch,
    each: impl FnMut(usize, Option<&Record>, Result<(), Skip>, &Scratch),
) {
    /// Each record encoded, then handed on.
    struct Encode<'a, F> {
        format: &'a RecordFormat,
        scratch: &'a mut Scratch,
        each: F,
    }
    impl<F: FnMut(usize, Option<&Record>, Result<(), Skip>, &Scratch)> ReadRecords for Encode<'_, F> {
        fn start_packed(&mut self) {
            self.scratch.start_packed();
        }
        fn packed(
            &mut self,
            i: usize,
            time: EventTime,
            keys: usize,
            c: &mut Cursor<'_>,
            _: (&Part<'_>, usize),
        ) -> Result<(), UnpackError> {
            let res = self.format.encode_packed(time, c, keys, self.scratch)?;
            (self.each)(i, None, res, self.scratch);
            Ok(())
        }
        fn record(&mut self, i: usize, r: &Record) {
            let res = self.format.encode(r, self.scratch);
            (self.each)(i, Some(r), res, self.scratch);
        }
        fn lost(&mut self, i: usize) {
            (self.each)(i, None, Err(Skip::Encoding), self.scratch);
        }
    }
    view.read(
        packed && format.reads_packed(),
        &mut Encode {
            format,
            scratch,
            each,
        },
    );
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
        // base64-simd (already in the tree through the AWS SDK's own base64): vector
        // instructions where the CPU has them. The `base64` crate's encoder was 7.9% of
        // P5FH's CPU (docs/performance.md, thirteenth session).
        base64_simd::STANDARD.encode_append(blob, &mut self.data);
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
        base64_simd::STANDARD
            .decode_to_vec(self.data(i))
            .unwrap_or_default()
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
        // Packed chunks stay packed: their records are encoded from the packed bytes, and
        // unpacked only for a record that is refused.
        let records = b.view();
        let mut enc = lock(&self.encoded).pop().unwrap_or_default();
        enc.clear();
        self.encoder.encode(&b.tag, &records, &mut enc);
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

    fn reads_packed(&self) -> bool {
        true
    }
}

impl<S: RecordService, E: Encoder> RecordOutput<S, E> {
    /// Sends what `enc` holds for batch `b` (see the module doc).
    async fn send(&self, b: &Batch, records: &BatchRecords<'_>, enc: &Encoded) -> FlushResult {
        let items = &enc.items;
        let limits = self.service.limits();
        let op = self.service.operation();
        // The records carried by the items at `idx`.
        let records_of = |idx: &[usize]| -> Vec<&Record> {
            idx.iter()
                .flat_map(|&i| enc.records_of(i))
                .filter_map(|&r| records.get(r))
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
                b.reject(&self.metrics, idx.iter().filter_map(|&r| records.get(r)));
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use logferry_core::{Chunk, Record, Tag};
    use logferry_engine::Batch;

    use super::super::record::{Compression, RecordFormat, Scratch, DEFAULT_TIME_FORMAT};
    use super::encode_view;
    use crate::encode::Skip;

    /// What [`encode_view`] gave for each record: its number, and its blob or why none.
    fn outcomes(
        view: &super::BatchRecords<'_>,
        f: &RecordFormat,
        packed: bool,
    ) -> Vec<(usize, Result<Vec<u8>, Skip>)> {
        let mut got = Vec::new();
        let mut scratch = Scratch::default();
        encode_view(view, f, packed, &mut scratch, |i, _, res, s| {
            got.push((i, res.map(|()| s.blob.clone())));
        });
        got
    }

    /// Packed chunks encoded straight from their bytes give every record the same blob, byte
    /// for byte, as the records encoded one by one (`RecordFormat::encode`, the Firehose and
    /// Kinesis encoding): with and without `time_key` (a key the records lack, one they have,
    /// one they have twice, one holding a map), a newline or not, gzip, and `log_key` (which
    /// reads the records unpacked), over a batch of packed and unpacked chunks.
    #[test]
    fn packed_chunks_give_the_blobs_of_their_records() {
        let records = crate::test_records::varied_records(300 * 1024);
        let b = crate::test_records::packed_batch("kube.a", &records, 70, 1);
        let view = b.view();
        // time_key, time_key_format, log_key, newline, compression.
        type Case<'a> = (Option<&'a str>, &'a str, Option<&'a str>, bool, Compression);
        let cases: [Case<'_>; 8] = [
            (None, DEFAULT_TIME_FORMAT, None, true, Compression::None),
            (None, DEFAULT_TIME_FORMAT, None, false, Compression::None),
            (
                Some("time"),
                DEFAULT_TIME_FORMAT,
                None,
                true,
                Compression::None,
            ),
            (
                Some("u"),
                "%Y-%m-%dT%H:%M:%S.%3N",
                None,
                true,
                Compression::None,
            ),
            (
                Some("n"),
                DEFAULT_TIME_FORMAT,
                None,
                false,
                Compression::None,
            ),
            (Some("nested"), "%s.%9N", None, true, Compression::None),
            (
                Some("time"),
                DEFAULT_TIME_FORMAT,
                None,
                true,
                Compression::Gzip,
            ),
            (
                None,
                DEFAULT_TIME_FORMAT,
                Some("log"),
                true,
                Compression::Zlib,
            ),
        ];
        for (time_key, time_format, log_key, newline, compression) in cases {
            let case = format!("{time_key:?} {time_format} {log_key:?} {newline} {compression:?}");
            let f =
                RecordFormat::new(time_key, time_format, log_key, newline, compression).unwrap();
            let mut scratch = Scratch::default();
            let want: Vec<(usize, Result<Vec<u8>, Skip>)> = records
                .iter()
                .enumerate()
                .map(|(i, r)| (i, f.encode(r, &mut scratch).map(|()| scratch.blob.clone())))
                .collect();
            assert!(want.iter().all(|(_, r)| r.is_ok()), "{case}");
            assert_eq!(outcomes(&view, &f, true), want, "{case}");
            assert_eq!(outcomes(&view, &f, false), want, "{case}");
        }
    }

    /// Which records were read as records: none of a packed chunk when the encoder asks for
    /// packed reading, all of them otherwise (a Kinesis `partition_key`, a `log_key`).
    #[test]
    fn packed_chunks_are_read_as_records_only_when_needed() {
        let records = crate::test_records::varied_records(10);
        let mut packed = Chunk::new(Tag::from("t"), records[..100].to_vec());
        packed.pack();
        let plain = Chunk::new(Tag::from("t"), records[100..150].to_vec());
        let b = Batch::new(Tag::from("t"), vec![Arc::new(packed), Arc::new(plain)]);
        let view = b.view();
        for (log_key, packed, want) in [
            (None, true, 50),
            (None, false, 150),
            (Some("log"), true, 150),
        ] {
            let f = RecordFormat::new(None, DEFAULT_TIME_FORMAT, log_key, true, Compression::None)
                .unwrap();
            let mut seen: Vec<Option<Record>> = Vec::new();
            encode_view(
                &view,
                &f,
                packed,
                &mut Scratch::default(),
                |i, r, res, _| {
                    assert_eq!(seen.len(), i);
                    assert!(res.is_ok());
                    seen.push(r.cloned());
                },
            );
            assert_eq!(seen.len(), 150);
            assert_eq!(
                seen.iter().filter(|r| r.is_some()).count(),
                want,
                "{log_key:?} {packed}"
            );
            // A record read as a record is the one at its number.
            for (i, r) in seen.iter().enumerate() {
                if let Some(r) = r {
                    assert_eq!(r.time, records[i].time);
                }
            }
        }
    }
}
