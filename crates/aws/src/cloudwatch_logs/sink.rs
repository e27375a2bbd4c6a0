//! The `cloudwatch_logs` output: one flush = build events, split per stream by the API limits,
//! put call by call.
//!
//! Partial failures, decided here:
//! - events the service refuses individually (`rejectedLogEventsInfo`: too old, too new,
//!   expired) and records that give no event are handed to [`Batch::reject`] (counted as
//!   dropped, kept for the dead-letter store when it is on) as the records they came from, and
//!   logged with the reason; they are never retried;
//! - a retryable failure (throttling, 5xx, network, credentials and permissions, a group or
//!   stream that does not exist and that logferry may not create: see
//!   [`super::service`]) stops that stream's calls; the other streams of the flush still go,
//!   then the flush returns `Retry`. What was accepted is kept in a [`ProgressMemo`], so the
//!   engine's retry of the batch resumes after it and nothing accepted is sent twice;
//! - a permanent failure (other 4xx) gives up that stream's remaining events. When nothing of
//!   the batch was delivered, the flush returns `Error` with the reason (the engine counts and
//!   logs the batch); otherwise those events' records are rejected and logged here, and the
//!   rest of the batch counts as delivered.
//!
//! Oversize events are truncated (see [`super::request_builder`]); [`CloudWatchLogsOutput::truncated`]
//! counts them and each flush that truncated logs how many.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use logferry_core::Record;
use logferry_engine::metrics::PluginMetrics;
use logferry_engine::{Batch, BatchRecords, FlushResult, Output};

use super::batch;
use super::config::CloudWatchLogsSettings;
use super::request_builder::{self, Destination, Encoded};
use super::service::CloudWatchService;
use crate::progress::ProgressMemo;

/// Message buffers kept between flushes (one per concurrent flush is enough).
const TEXTS_KEPT: usize = 4;
/// A buffer larger than this is let go rather than kept.
const TEXT_KEPT_MAX: usize = 16 << 20;

fn lock_pool(m: &Mutex<Vec<Vec<u8>>>) -> std::sync::MutexGuard<'_, Vec<Vec<u8>>> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// What a batch delivered so far.
#[derive(Debug, Default)]
struct Progress {
    /// Per stream, events (in sorted order) handled: accepted, refused or given up.
    done: HashMap<Destination, usize>,
    /// Whether drops found while encoding were already counted.
    encode_counted: bool,
    /// Events accepted by the service.
    delivered: usize,
}

/// Sends records to CloudWatch Logs.
pub struct CloudWatchLogsOutput {
    settings: Arc<CloudWatchLogsSettings>,
    service: CloudWatchService,
    memo: ProgressMemo<Progress>,
    metrics: Arc<PluginMetrics>,
    name: String,
    truncated: Arc<AtomicU64>,
    rejected_too_old: Arc<AtomicU64>,
    rejected_too_new: Arc<AtomicU64>,
    rejected_expired: Arc<AtomicU64>,
    texts: Mutex<Vec<Vec<u8>>>,
}

impl CloudWatchLogsOutput {
    /// An output with `settings`, counting into `metrics`, logging as `name`.
    pub fn new(
        settings: CloudWatchLogsSettings,
        metrics: Arc<PluginMetrics>,
        name: String,
    ) -> Self {
        let settings = Arc::new(settings);
        CloudWatchLogsOutput {
            service: CloudWatchService::new(Arc::clone(&settings)),
            settings,
            memo: ProgressMemo::default(),
            truncated: metrics.register(
                "cloudwatch_events_truncated",
                "Log events cut to CloudWatch Logs' largest event size.",
            ),
            rejected_too_old: metrics.register(
                "cloudwatch_rejected_too_old_events",
                "Log events CloudWatch Logs rejected as older than 14 days or the retention.",
            ),
            rejected_too_new: metrics.register(
                "cloudwatch_rejected_too_new_events",
                "Log events CloudWatch Logs rejected as more than 2 hours ahead.",
            ),
            rejected_expired: metrics.register(
                "cloudwatch_rejected_expired_events",
                "Log events CloudWatch Logs rejected as expired.",
            ),
            metrics,
            name,
            texts: Mutex::new(Vec::new()),
        }
    }

    /// Events truncated to fit since start.
    pub fn truncated(&self) -> u64 {
        self.truncated.load(Ordering::Relaxed)
    }

    /// Batches waiting for a retry with part of them delivered.
    pub fn pending_retries(&self) -> usize {
        self.memo.len()
    }

    fn count_encoding(&self, b: &Batch, records: &BatchRecords<'_>, enc: &Encoded) {
        let tag = &b.tag;
        for (why, idx) in &enc.skipped {
            let found: Vec<&Record> = idx.iter().filter_map(|&i| records.get(i)).collect();
            // Records that cannot be read back (only a bug) are counted all the same.
            b.count_dropped(&self.metrics, (idx.len() - found.len()) as u64);
            b.reject(&self.metrics, found);
            tracing::warn!(output = %self.name, %tag, records = idx.len(), reason = why.reason(), "records dropped");
        }
        if enc.truncated > 0 {
            self.truncated.fetch_add(enc.truncated, Ordering::Relaxed);
            tracing::warn!(output = %self.name, %tag, events = enc.truncated,
                max_bytes = batch::MAX_MESSAGE_BYTES, "log events too large for CloudWatch Logs were truncated");
        }
        if enc.template_fallbacks > 0 {
            tracing::warn!(output = %self.name, %tag, records = enc.template_fallbacks,
                "a log group or stream template could not be filled; the static name was used");
        }
    }
}

#[async_trait]
impl Output for CloudWatchLogsOutput {
    async fn flush(&self, b: &Batch) -> FlushResult {
        let mut progress = self.memo.take(b).unwrap_or_default();
        // Packed chunks stay packed: their records are encoded from the packed bytes.
        let records = b.view();
        let text = lock_pool(&self.texts).pop().unwrap_or_default();
        let mut enc = request_builder::build_view(&self.settings, &b.tag, &records, text);
        if !progress.encode_counted {
            self.count_encoding(b, &records, &enc);
            progress.encode_counted = true;
        }
        let record_of = |i: usize| records.get(i);
        let mut retry: Option<String> = None;
        // Per stream given up: the records of its remaining events, and why.
        let mut failed: Vec<(Destination, Vec<usize>, String)> = Vec::new();
        let text = &enc.text;
        for (dest, events) in &mut enc.streams {
            let dest = &*dest;
            events.sort_by_key(|e| e.timestamp);
            let start = progress
                .done
                .get(dest)
                .copied()
                .unwrap_or(0)
                .min(events.len());
            let remaining = &events[start..];
            if remaining.is_empty() {
                continue;
            }
            let stream_lock = self.service.stream_lock(dest);
            let _serialized = stream_lock.lock().await;
            for range in batch::split(remaining) {
                let call = &remaining[range.clone()];
                match self.service.put(dest, call, text).await {
                    Ok(rejected) => {
                        *progress.done.entry(dest.clone()).or_default() += call.len();
                        progress.delivered += call.len() - rejected.total;
                        b.count_delivered((call.len() - rejected.total) as u64);
                        if rejected.total > 0 {
                            b.reject(
                                &self.metrics,
                                rejected
                                    .indices(call.len())
                                    .filter_map(|k| call.get(k))
                                    .filter_map(|e| record_of(e.record)),
                            );
                            self.rejected_too_old
                                .fetch_add(rejected.too_old as u64, Ordering::Relaxed);
                            self.rejected_too_new
                                .fetch_add(rejected.too_new as u64, Ordering::Relaxed);
                            self.rejected_expired
                                .fetch_add(rejected.expired as u64, Ordering::Relaxed);
                            tracing::warn!(output = %self.name, stream = %dest,
                                events = rejected.total, too_old = rejected.too_old,
                                too_new = rejected.too_new, expired = rejected.expired,
                                "CloudWatch Logs rejected log events (older than 14 days or the retention, or more than 2 hours ahead); dropped");
                        }
                    }
                    Err(e) if e.is_transient() => {
                        retry.get_or_insert_with(|| format!("{dest}: {e}"));
                        break;
                    }
                    Err(e) => {
                        let lost: Vec<usize> =
                            remaining[range.start..].iter().map(|e| e.record).collect();
                        *progress.done.entry(dest.clone()).or_default() += lost.len();
                        failed.push((dest.clone(), lost, e.to_string()));
                        break;
                    }
                }
            }
        }
        if !failed.is_empty() {
            if progress.delivered == 0 && retry.is_none() {
                let reasons: Vec<String> =
                    failed.iter().map(|(d, _, r)| format!("{d}: {r}")).collect();
                return FlushResult::Error(reasons.join("; "));
            }
            for (dest, lost, reason) in &failed {
                b.reject(&self.metrics, lost.iter().filter_map(|&i| record_of(i)));
                tracing::error!(output = %self.name, stream = %dest, events = lost.len(), %reason,
                    "CloudWatch Logs refused the events; dropped");
            }
        }
        // The messages' buffer serves the next flush (at its grown size: no regrowth, no new
        // pages), unless an unusually large flush made it big.
        let mut pool = lock_pool(&self.texts);
        if pool.len() < TEXTS_KEPT && enc.text.capacity() <= TEXT_KEPT_MAX {
            pool.push(enc.text);
        }
        drop(pool);
        match retry {
            Some(reason) => {
                self.memo.keep(b, progress);
                FlushResult::Retry(reason)
            }
            None => FlushResult::Ok,
        }
    }

    /// Packed chunks are encoded straight from their bytes ([`request_builder::build_view`]).
    fn reads_packed(&self) -> bool {
        true
    }
}
