//! The output: a batch becomes bulk requests of at most `logferry.bulk_max_size` bytes each
//! (an item larger than that goes alone), sent in order on this worker.
//!
//! What comes back:
//! - an item stored, or refused as an existing `_id` by `create` (an earlier attempt stored it:
//!   with `Generate_ID` or `Id_Key`, re-sending never duplicates), is delivered;
//! - items refused with 429 or 5xx are sent again **alone**, inside the flush, up to
//!   [`PARTIAL_RETRIES`] times with full-jitter waits; if some still fail, the flush returns
//!   `Retry` and the engine's retry sends only those ([`ProgressMemo`]);
//! - items refused for good (mapping errors such as a field that is an object in one record
//!   and a string in another, other 4xx) are counted as dropped ([`Batch::reject`]: the
//!   dead-letter store keeps them when asked) and logged with the node's reason — never the
//!   whole batch;
//! - a whole request failing with 429, 5xx, 401, 403, 404, 408, a network error or a timeout
//!   makes the flush return `Retry` (credentials and missing paths are operator fixes that
//!   should not lose data); other 4xx refuse its items for good;
//! - an answer cut at `Buffer_Size` that does not start with `"errors":false` cannot say which
//!   items failed: the request is retried whole (safe with `Generate_ID`/`Id_Key`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use logferry_core::{EventTime, Record};
use logferry_engine::metrics::PluginMetrics;
use logferry_engine::{Batch, BatchRecords, FlushResult, Output};
use std::sync::Mutex;

use super::bulk::{outcomes, says_no_errors, Outcome};
use super::config::SearchSettings;
use super::document::{ItemWriter, Items};
use super::transport::{SendError, Transport};
use crate::progress::ProgressMemo;
use crate::retry::full_jitter;

/// In-flush re-sends of items refused with 429/5xx.
pub const PARTIAL_RETRIES: u32 = 3;
/// First wait before re-sending refused items.
pub const PARTIAL_RETRY_BASE: Duration = Duration::from_millis(100);
/// Longest wait before re-sending refused items.
pub const PARTIAL_RETRY_CAP: Duration = Duration::from_secs(2);
/// Characters of a response body quoted in logs.
const QUOTE: usize = 512;

#[derive(Debug, Default)]
struct Progress {
    done: Vec<bool>,
    encode_counted: bool,
    delivered: usize,
    /// The time `Current_Time_Index` named the index after, kept so that a retried record
    /// goes to the same index (and meets its own `_id`).
    now: Option<EventTime>,
}

/// The `opensearch` / `es` output.
pub struct SearchOutput {
    settings: SearchSettings,
    transport: Transport,
    memo: ProgressMemo<Progress>,
    metrics: Arc<PluginMetrics>,
    name: String,
    /// Item buffers of finished flushes, reused by the next ones.
    buffers: Mutex<Vec<Vec<u8>>>,
}

/// Item buffers kept between flushes (one per concurrent flush is enough).
const BUFFERS_KEPT: usize = 4;
/// An item buffer larger than this is let go rather than kept.
const BUFFER_KEPT_MAX: usize = 16 << 20;

impl SearchOutput {
    /// An output for checked settings; fails when TLS files cannot be read.
    pub fn new(
        settings: SearchSettings,
        metrics: Arc<PluginMetrics>,
        name: String,
    ) -> Result<Self, String> {
        let transport = Transport::new(&settings.connection)?;
        Ok(SearchOutput {
            settings,
            transport,
            memo: ProgressMemo::default(),
            metrics,
            name,
            buffers: Mutex::new(Vec::new()),
        })
    }

    /// Batches waiting for a retry with part of them delivered.
    pub fn pending_retries(&self) -> usize {
        self.memo.len()
    }
}

/// Consecutive runs of `pending` whose items fit `max` bytes (an item over it goes alone).
fn requests(pending: &[usize], items: &Items, max: usize) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut cur: Vec<usize> = Vec::new();
    let mut size = 0usize;
    for &i in pending {
        let s = items.size(i);
        if !cur.is_empty() && size + s > max {
            out.push(std::mem::take(&mut cur));
            size = 0;
        }
        cur.push(i);
        size += s;
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn quote(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(body);
    match s.char_indices().nth(QUOTE) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.into_owned(),
    }
}

/// How a whole request ended.
enum Call {
    /// Per-item outcomes.
    Items(Vec<Outcome>),
    /// Try the request again later.
    Transient(String),
    /// Its items are refused for good.
    Permanent(String),
}

impl SearchOutput {
    async fn call(&self, body: &[u8], n: usize) -> Call {
        if self.settings.trace_output {
            println!("{}", String::from_utf8_lossy(body));
        }
        let resp = match self.transport.post(body).await {
            Ok(r) => r,
            Err(SendError::Transient(e)) => return Call::Transient(e),
            Err(SendError::Permanent(e)) => return Call::Permanent(e),
        };
        let trace = |what: &str| {
            if self.settings.trace_error {
                eprintln!(
                    "[{}] {what}: HTTP {}\nrequest:\n{}\nresponse:\n{}",
                    self.name,
                    resp.status,
                    String::from_utf8_lossy(body),
                    String::from_utf8_lossy(&resp.body)
                );
            }
        };
        match resp.status {
            200..=299 if resp.truncated => {
                if says_no_errors(&resp.body) {
                    Call::Items(vec![Outcome::Stored; n])
                } else {
                    trace("answer larger than Buffer_Size");
                    Call::Transient(format!(
                        "the bulk answer is larger than Buffer_Size and reports errors; \
                         raise Buffer_Size (or set it to False) to see which items failed: {}",
                        quote(&resp.body)
                    ))
                }
            }
            200..=299 => match outcomes(&resp.body, n) {
                Ok(o) => {
                    if o.iter()
                        .any(|x| matches!(x, Outcome::Retry(_) | Outcome::Rejected(_)))
                    {
                        trace("bulk items failed");
                    }
                    Call::Items(o)
                }
                Err(e) => {
                    trace("unreadable bulk answer");
                    Call::Transient(format!("{e}: {}", quote(&resp.body)))
                }
            },
            s @ (401 | 403 | 404 | 408 | 429 | 500..=599) => {
                trace("bulk request failed");
                Call::Transient(format!("HTTP {s}: {}", quote(&resp.body)))
            }
            s => {
                trace("bulk request refused");
                Call::Permanent(format!("HTTP {s}: {}", quote(&resp.body)))
            }
        }
    }
}

#[async_trait]
impl Output for SearchOutput {
    fn reads_packed(&self) -> bool {
        true
    }

    async fn flush(&self, b: &Batch) -> FlushResult {
        let view = b.view();
        let n = view.len();
        let mut progress = match self.memo.take(b) {
            Some(p) if p.done.len() == n => p,
            _ => Progress {
                done: vec![false; n],
                ..Progress::default()
            },
        };
        let now = *progress.now.get_or_insert_with(EventTime::now);
        let buffer = self
            .buffers
            .lock()
            .ok()
            .and_then(|mut v| v.pop())
            .unwrap_or_default();
        let mut writer = ItemWriter::new(&self.settings, &b.tag, now, buffer);
        // Packed chunks are written straight from their bytes unless the index or the _id
        // reads the record.
        view.read(writer.reads_packed(), &mut writer);
        let (items, unsendable) = writer.finish();
        if !progress.encode_counted {
            progress.encode_counted = true;
            if !unsendable.is_empty() {
                // Logged where they were found; counted here. A record of a damaged chunk
                // cannot be kept as a dead letter.
                let kept: Vec<&Record> = unsendable.iter().filter_map(|&i| view.get(i)).collect();
                b.count_dropped(&self.metrics, (unsendable.len() - kept.len()) as u64);
                b.reject(&self.metrics, kept);
            }
        }
        for &i in &unsendable {
            progress.done[i] = true;
        }
        let result = self.send(b, &view, &items, progress).await;
        let mut buffer = items.into_buffer();
        if buffer.capacity() <= BUFFER_KEPT_MAX {
            buffer.clear();
            if let Ok(mut v) = self.buffers.lock() {
                if v.len() < BUFFERS_KEPT {
                    v.push(buffer);
                }
            }
        }
        result
    }
}

impl SearchOutput {
    /// Sends the items not done yet, in requests of at most `bulk_max_size` bytes, re-sending
    /// refused ones; what is left for a retry is kept in `progress`.
    async fn send(
        &self,
        b: &Batch,
        view: &BatchRecords<'_>,
        items: &Items,
        mut progress: Progress,
    ) -> FlushResult {
        let n = view.len();
        let mut pending: Vec<usize> = (0..n).filter(|&i| !progress.done[i]).collect();
        // Items refused for good, by reason.
        let mut lost: Vec<(Vec<usize>, String)> = Vec::new();
        let mut attempt = 0u32;
        let retry_reason = loop {
            if pending.is_empty() {
                break None;
            }
            let mut refused: Vec<usize> = Vec::new();
            let mut reason = String::new();
            let mut call_failed: Option<String> = None;
            let mut copy = Vec::new();
            for idx in requests(&pending, items, self.settings.bulk_max_size) {
                if call_failed.is_some() {
                    refused.extend_from_slice(&idx);
                    continue;
                }
                let body = items.body(&idx, &mut copy);
                match self.call(body, idx.len()).await {
                    Call::Items(o) => {
                        let mut exists = 0usize;
                        for (&i, outcome) in idx.iter().zip(&o) {
                            match outcome {
                                Outcome::Stored | Outcome::Exists => {
                                    if *outcome == Outcome::Exists {
                                        exists += 1;
                                    }
                                    progress.done[i] = true;
                                    progress.delivered += 1;
                                    b.count_delivered(1);
                                }
                                Outcome::Retry(r) => {
                                    refused.push(i);
                                    reason.clone_from(r);
                                }
                                Outcome::Rejected(r) => {
                                    progress.done[i] = true;
                                    match lost.iter_mut().find(|(_, why)| why == r) {
                                        Some((v, _)) => v.push(i),
                                        None => lost.push((vec![i], r.clone())),
                                    }
                                }
                            }
                        }
                        if exists > 0 {
                            tracing::debug!(output = %self.name, records = exists,
                                "documents already stored by an earlier attempt");
                        }
                    }
                    Call::Transient(e) => {
                        refused.extend_from_slice(&idx);
                        call_failed = Some(e);
                    }
                    Call::Permanent(e) => {
                        for &i in &idx {
                            progress.done[i] = true;
                        }
                        lost.push((idx, e));
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
                    "{} documents still refused after {PARTIAL_RETRIES} re-sends: {reason}",
                    refused.len()
                ));
            }
            self.metrics
                .retried_records
                .fetch_add(refused.len() as u64, std::sync::atomic::Ordering::Relaxed);
            tracing::debug!(output = %self.name, records = refused.len(), attempt, %reason,
                "re-sending refused documents");
            tokio::time::sleep(full_jitter(
                attempt - 1,
                PARTIAL_RETRY_BASE,
                PARTIAL_RETRY_CAP,
            ))
            .await;
            pending = refused;
        };
        if !lost.is_empty() {
            // Every record refused for good in one go: the batch failed, say so (the engine
            // counts and logs it, and keeps it as a dead letter when asked).
            let refused: usize = lost.iter().map(|(v, _)| v.len()).sum();
            if progress.delivered == 0 && retry_reason.is_none() && refused == n {
                let reasons: Vec<String> = lost.into_iter().map(|(_, r)| r).collect();
                return FlushResult::Error(reasons.join("; "));
            }
            for (idx, reason) in lost {
                let refused: Vec<&Record> = idx.iter().filter_map(|&i| view.get(i)).collect();
                b.reject(&self.metrics, refused.iter().copied());
                tracing::error!(output = %self.name, tag = %b.tag, records = refused.len(), %reason,
                    "the node refused documents; dropped");
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
    use super::*;

    #[test]
    fn requests_are_cut_at_the_size_limit_and_big_items_go_alone() {
        let items = Items::of_sizes(&[12, 12, 12, 102, 12]);
        let all: Vec<usize> = (0..5).collect();
        assert_eq!(
            requests(&all, &items, 24),
            vec![vec![0, 1], vec![2], vec![3], vec![4]]
        );
        assert_eq!(requests(&all, &items, 10_000), vec![all.clone()]);
        assert_eq!(requests(&[1, 4], &items, 24), vec![vec![1, 4]]);
    }
}
