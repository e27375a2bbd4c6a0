//! One task per output: it queues what the router sends it by tag, forms batches (every
//! `Flush`, at [`FLUSH_AT_BYTES`] of one tag or of all tags together, at once while an input
//! is paused, and when draining), and
//! flushes them on `Workers` workers, retrying with back-off.
//!
//! - **Retries.** A transient failure (`FlushResult::Retry`) is retried up to `Retry_Limit`
//!   times, for ever when it is not set ([`RetryLimit::of`]). A retry waits a full-jitter
//!   back-off, but never stays asleep once the destination is back: while retries wait, one of
//!   them goes as a probe whenever nothing was tried for [`PROBE_EVERY`], and the first success
//!   wakes all of them ([`Recovery`]). While the destination fails, at most
//!   `Workers + MAX_RETRYING` batches are out: the rest wait in the queue (on disk only, for
//!   filesystem inputs), so an outage costs neither memory nor a storm of requests.
//! - **Filesystem chunks** are kept in memory only while the output keeps up; otherwise only
//!   their file is remembered, and they are read back when their batch goes out, at most
//!   `storage.backlog.mem_limit` bytes at a time.
//! - **`storage.total_limit_size`** bounds the bytes this output holds (queued and in flight):
//!   past it its oldest queued chunks are dropped, counted and logged, or, for a filesystem
//!   input with `storage.pause_on_chunks_overlimit On`, the input is paused until the output
//!   is back under its limit.
//! - **Dead letters.** With `storage.keep.rejected On`, what the output gives up on (a batch
//!   after a permanent error or `Retry_Limit`, or records the destination refused one by
//!   one) is kept in the dead-letter store.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use logferry_core::msgpack::MapHeaders;
use logferry_core::{Chunk, DeliveryStatus, Tag};
use rand::Rng;
use tokio::sync::{mpsc, Semaphore, TryAcquireError};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::budget::MemBudget;
use crate::common::RetryLimit;
use crate::metrics::PluginMetrics;
use crate::pipeline::OutputInstance;
use crate::plugin::{Batch, FlushResult, Output};
use crate::processors::OutputProcessors;
use crate::router::UpGuard;
use crate::storage::dead_letters::DeadLetters;
use crate::storage::{StorageGauges, StoredChunk};

/// A tag's pending records are flushed at once, without waiting for the `Flush` tick, when they
/// reach this many bytes: Fluent Bit's chunk size. Keeps a small `Mem_Buf_Limit` flowing.
pub const FLUSH_AT_BYTES: usize = 2 * 1024 * 1024;

/// While any retry of an output waits, one of them goes early if no flush of that output has
/// started for this long: a probe of whether the destination is back, so that after an outage
/// the backlog starts moving within this time (plus one request) whatever the retry count and
/// `scheduler.cap`. A success then wakes every waiting retry ([`Recovery`]).
pub const PROBE_EVERY: Duration = Duration::from_secs(10);

/// While an output's destination fails, batches out (in flight or waiting to retry) beyond
/// its workers; more wait in the queue.
pub const MAX_RETRYING: usize = 4;

/// Bytes of filesystem chunks an output keeps in memory while it keeps up; past it (or while
/// its destination fails) they wait on disk only.
const UP_WINDOW: usize = 2 * FLUSH_AT_BYTES;

/// A batch must have waited this long for a worker before it says that the output falls
/// behind ([`Backlog::falls_behind`]): a worker of an output that keeps up is busy for a
/// moment too (it frees the batch it sent), and counting any wait packed 2.4–2.8% of P2's and
/// P3's records into `null` for nothing; 10 ms packed 0.04–1.1%.
const BLOCKED_FOR: Duration = Duration::from_millis(10);

/// What an output has not taken in: the bytes sent to it that it has not received yet, plus
/// those of a batch it holds while it waits for a worker, and since when it waits (the output
/// takes nothing in meanwhile, so there is at most one such batch). Shared by both ends of its
/// queue and its flushes.
pub(crate) struct Backlog {
    bytes: AtomicU64,
    /// Microseconds from `epoch` to when the held batch began to wait, plus one; 0: none waits.
    blocked_since: AtomicU64,
    epoch: std::time::Instant,
    /// Whether a flush of this output has ended (whatever its outcome).
    flushed: AtomicBool,
}

impl Backlog {
    fn new() -> Self {
        Backlog {
            bytes: AtomicU64::new(0),
            blocked_since: AtomicU64::new(0),
            epoch: std::time::Instant::now(),
            flushed: AtomicBool::new(false),
        }
    }

    fn micros(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64 + 1
    }

    /// Whether chunks sent to this output now should wait packed ([`Chunk::pack`]): it has
    /// [`crate::router::PACK_AT_BYTES`] not taken in, or one batch while a batch waits for a
    /// worker, before the output's first flush has ended or for [`BLOCKED_FOR`].
    ///
    /// An output takes chunks in while it has a worker free, so bytes here mean its destination
    /// is slower than its inputs, and the records will wait. One batch while it still takes
    /// chunks in does not say so: a pipeline running at 500,000 lines/s into `null` leaves that
    /// much here in a scheduling hiccup (10% of P2's and P3's records were packed for nothing
    /// at one batch, 2.5% at one batch while another waited for a worker however briefly). A
    /// batch held for a worker that is slow to come says it, and so does one held behind the
    /// first flush: P5's first PutLogEvents takes ~0.5 s (credentials, connection, the log
    /// stream), while tail reads its whole `Mem_Buf_Limit` in 0.1 s.
    pub(crate) fn falls_behind(&self) -> bool {
        let bytes = self.bytes.load(Ordering::Relaxed) as usize;
        if bytes >= crate::router::PACK_AT_BYTES {
            return true;
        }
        if bytes < FLUSH_AT_BYTES {
            return false;
        }
        let since = self.blocked_since.load(Ordering::Relaxed);
        since != 0
            && (!self.flushed.load(Ordering::Relaxed)
                || self.micros().saturating_sub(since) >= BLOCKED_FOR.as_micros() as u64)
    }

    /// Bytes not taken in.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed) as usize
    }
}

/// The sending end of an output's queue; it counts what it sends in the output's [`Backlog`].
#[derive(Clone)]
pub(crate) struct OutputTx {
    tx: mpsc::UnboundedSender<Routed>,
    backlog: Arc<Backlog>,
}

/// The receiving end of an output's queue ([`OutputTx`]).
pub(crate) struct OutputRx {
    rx: mpsc::UnboundedReceiver<Routed>,
    backlog: Arc<Backlog>,
}

/// A new output queue.
pub(crate) fn output_channel() -> (OutputTx, OutputRx) {
    let (tx, rx) = mpsc::unbounded_channel();
    let backlog = Arc::new(Backlog::new());
    (
        OutputTx {
            tx,
            backlog: Arc::clone(&backlog),
        },
        OutputRx { rx, backlog },
    )
}

impl OutputTx {
    /// Queues `item` for the output (dropped when the output is gone).
    pub(crate) fn send(&self, item: Routed) {
        let bytes = item.bytes as u64;
        self.backlog.bytes.fetch_add(bytes, Ordering::Relaxed);
        if self.tx.send(item).is_err() {
            crate::storage::dec(&self.backlog.bytes, bytes);
        }
    }

    /// What the output has not taken in.
    pub(crate) fn backlog(&self) -> &Backlog {
        &self.backlog
    }
}

impl OutputRx {
    /// The next item, once the output takes it in.
    pub(crate) async fn recv(&mut self) -> Option<Routed> {
        let item = self.rx.recv().await?;
        crate::storage::dec(&self.backlog.bytes, item.bytes as u64);
        Some(item)
    }
}

/// What reaches an output: a chunk in memory, a chunk file, or both (a filesystem chunk whose
/// records are still in memory).
#[derive(Clone)]
pub(crate) struct Routed {
    pub(crate) chunk: Option<Arc<Chunk>>,
    stored: Option<Arc<StoredChunk>>,
    /// The input's budget, when an output over its limit pauses it instead of dropping.
    pause: Option<Arc<MemBudget>>,
    tag: Tag,
    pub(crate) bytes: usize,
}

impl Routed {
    pub(crate) fn memory(chunk: Arc<Chunk>) -> Self {
        Routed {
            tag: Arc::clone(&chunk.tag),
            bytes: chunk.size,
            chunk: Some(chunk),
            stored: None,
            pause: None,
        }
    }

    pub(crate) fn stored(
        chunk: Option<Arc<Chunk>>,
        stored: Arc<StoredChunk>,
        pause: Option<Arc<MemBudget>>,
    ) -> Self {
        Routed {
            tag: Arc::clone(&stored.tag),
            bytes: stored.bytes as usize,
            chunk,
            stored: Some(stored),
            pause,
        }
    }

    /// Registers `n` outputs' shares on a chunk file.
    pub(crate) fn expect(&self, n: usize) {
        if let Some(s) = &self.stored {
            s.delivery.expect(n);
        }
    }

    /// Settles the share of whoever routed a chunk file, once every output's share is
    /// registered on it.
    pub(crate) fn settle_router(&self) {
        if let Some(s) = &self.stored {
            s.delivery.mark(DeliveryStatus::Delivered);
        }
    }

    /// Packs its chunk's records ([`Chunk::pack`]) when this output is the chunk's only
    /// holder (another output may be reading them).
    fn pack_if_alone(&mut self) {
        if let Some(c) = self.chunk.as_mut().and_then(Arc::get_mut) {
            c.pack();
        }
    }

    /// Records in it (for a file never read, what is known of it: 0).
    fn records(&self) -> u64 {
        match (&self.chunk, &self.stored) {
            (Some(c), _) => c.len() as u64,
            (None, Some(s)) => s.records(),
            (None, None) => 0,
        }
    }

    /// Settles this output's share.
    fn settle(&self, status: DeliveryStatus) {
        match (&self.chunk, &self.stored) {
            (Some(c), _) => c.mark(status),
            (None, Some(s)) => s.delivery.mark(status),
            (None, None) => {}
        }
    }
}

/// What an output's flushes know of its destination's health: when the last attempt started,
/// whether the last outcome was a failure, and a counter of recoveries that waiting retries
/// watch. One per output.
#[derive(Debug)]
struct Recovery {
    last_attempt: std::sync::Mutex<Instant>,
    failing: AtomicBool,
    recovered: tokio::sync::watch::Sender<u64>,
}

impl Recovery {
    fn new() -> Arc<Self> {
        Arc::new(Recovery {
            last_attempt: std::sync::Mutex::new(Instant::now()),
            failing: AtomicBool::new(false),
            recovered: tokio::sync::watch::Sender::new(0),
        })
    }

    /// Notes an attempt; the receiver returned sees recoveries from now on.
    fn attempt(&self) -> tokio::sync::watch::Receiver<u64> {
        if let Ok(mut t) = self.last_attempt.lock() {
            *t = Instant::now();
        }
        self.recovered.subscribe()
    }

    fn failed(&self) {
        self.failing.store(true, Ordering::Release);
    }

    /// A flush went through: if the output was failing, every waiting retry goes now.
    fn succeeded(&self) {
        if self.failing.swap(false, Ordering::AcqRel) {
            self.recovered.send_modify(|n| *n += 1);
        }
    }

    fn is_failing(&self) -> bool {
        self.failing.load(Ordering::Acquire)
    }

    fn next_probe(&self) -> Instant {
        self.last_attempt
            .lock()
            .map(|t| *t + PROBE_EVERY)
            .unwrap_or_else(|_| Instant::now() + PROBE_EVERY)
    }

    /// Takes the probe if nothing was attempted for [`PROBE_EVERY`] (only one waiter gets it).
    fn claim_probe(&self) -> bool {
        match self.last_attempt.lock() {
            Ok(mut t) if t.elapsed() >= PROBE_EVERY => {
                *t = Instant::now();
                true
            }
            _ => false,
        }
    }

    /// Waits `wait` before a retry, or less: until a flush of this output succeeds after the
    /// attempt `seen` was taken at, until this retry is picked as the probe, or until the
    /// engine drains.
    async fn wait(
        &self,
        wait: Duration,
        mut seen: tokio::sync::watch::Receiver<u64>,
        draining: &CancellationToken,
    ) {
        let deadline = Instant::now() + wait;
        loop {
            let probe = self.next_probe();
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return,
                _ = seen.changed() => return,
                _ = draining.cancelled() => return,
                _ = tokio::time::sleep_until(probe), if probe < deadline => {
                    if self.claim_probe() {
                        return;
                    }
                }
            }
        }
    }
}

/// Retry waits, Fluent Bit's full jitter: a random time between `base` and
/// `min(cap, base * 2^retry)` seconds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Backoff {
    pub base: f64,
    pub cap: f64,
}

impl Backoff {
    fn wait(&self, retry: u32) -> Duration {
        let hi = (self.base * 2f64.powi(retry.min(30) as i32))
            .min(self.cap)
            .max(self.base);
        let secs = if hi > self.base {
            rand::rng().random_range(self.base..=hi)
        } else {
            self.base
        };
        Duration::from_secs_f64(secs.max(0.0))
    }
}

/// What every output of a pipeline shares.
#[derive(Clone)]
pub(crate) struct Shared {
    pub flush_every: Duration,
    pub backoff: Backoff,
    pub draining: CancellationToken,
    pub hard_stop: CancellationToken,
    pub dead_letters: Option<Arc<DeadLetters>>,
    /// Bytes of chunk files read back at once (`storage.backlog.mem_limit`).
    pub load_budget: Arc<MemBudget>,
    pub storage_gauges: Option<Arc<StorageGauges>>,
    pub max_chunks_up: u64,
    pub flush_on_shutdown: bool,
    /// The pipeline's metrics, for the per-route counters.
    pub pipeline: Arc<crate::metrics::Metrics>,
}

/// The chunks of one tag waiting for a batch.
#[derive(Default)]
struct Pending {
    items: VecDeque<(u64, Routed)>,
    bytes: usize,
}

/// An output's queue: chunks by tag, in arrival order.
struct Queue {
    pending: HashMap<Tag, Pending>,
    /// Tags in the order their first pending chunk arrived, so batches go out in that order.
    order: VecDeque<Tag>,
    /// Arrival number of the next chunk.
    seq: u64,
    /// Bytes queued or in flight (what `storage.total_limit_size` bounds).
    held: usize,
    /// Bytes pending, by whether their records are in memory.
    pending_up: usize,
    /// Inputs this output holds paused (`storage.pause_on_chunks_overlimit`).
    paused: Vec<Arc<MemBudget>>,
}

impl Queue {
    fn new() -> Self {
        Queue {
            pending: HashMap::new(),
            order: VecDeque::new(),
            seq: 0,
            held: 0,
            pending_up: 0,
            paused: Vec::new(),
        }
    }

    /// Queues a chunk that just arrived; returns the bytes its tag now has queued.
    fn push(&mut self, item: Routed) -> usize {
        self.held += item.bytes;
        self.requeue(item)
    }

    /// Queues a chunk already counted in `held`.
    fn requeue(&mut self, item: Routed) -> usize {
        let tag = Arc::clone(&item.tag);
        let bytes = item.bytes;
        if item.chunk.is_some() {
            self.pending_up += bytes;
        }
        self.seq += 1;
        let seq = self.seq;
        let p = match self.pending.get_mut(&tag) {
            Some(p) => p,
            None => {
                self.order.push_back(Arc::clone(&tag));
                self.pending.entry(tag).or_default()
            }
        };
        p.bytes += bytes;
        p.items.push_back((seq, item));
        p.bytes
    }

    /// Takes the tag whose chunks arrived first, with all of them.
    fn pop(&mut self) -> Option<(Tag, Vec<Routed>)> {
        while let Some(tag) = self.order.pop_front() {
            if let Some(p) = self.pending.remove(&tag) {
                return Some((tag, self.take(p)));
            }
        }
        None
    }

    /// Takes one tag's chunks.
    fn pop_tag(&mut self, tag: &Tag) -> Option<(Tag, Vec<Routed>)> {
        let p = self.pending.remove(tag)?;
        self.order.retain(|t| t != tag);
        Some((Arc::clone(tag), self.take(p)))
    }

    fn take(&mut self, p: Pending) -> Vec<Routed> {
        let items: Vec<Routed> = p.items.into_iter().map(|(_, r)| r).collect();
        let up: usize = items
            .iter()
            .filter(|r| r.chunk.is_some())
            .map(|r| r.bytes)
            .sum();
        self.pending_up = self.pending_up.saturating_sub(up);
        items
    }

    /// The oldest chunk still queued (not in flight), taken out.
    fn pop_oldest(&mut self) -> Option<Routed> {
        let tag = self
            .pending
            .iter()
            .filter_map(|(t, p)| p.items.front().map(|(seq, _)| (*seq, t)))
            .min_by_key(|(seq, _)| *seq)
            .map(|(_, t)| Arc::clone(t))?;
        let p = self.pending.get_mut(&tag)?;
        let (_, item) = p.items.pop_front()?;
        p.bytes = p.bytes.saturating_sub(item.bytes);
        if p.items.is_empty() {
            self.pending.remove(&tag);
            self.order.retain(|t| *t != tag);
        }
        if item.chunk.is_some() {
            self.pending_up = self.pending_up.saturating_sub(item.bytes);
        }
        self.held = self.held.saturating_sub(item.bytes);
        Some(item)
    }

    fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

/// The output task (see the module docs).
pub(crate) async fn output_task(out: OutputInstance, id: usize, mut rx: OutputRx, shared: Shared) {
    let sem = Arc::new(Semaphore::new(out.workers));
    let recovery = Recovery::new();
    let flusher = Flusher {
        processors: out.processors.clone(),
        plugin: Arc::clone(&out.plugin),
        name: out.name.clone(),
        metrics: Arc::clone(&out.metrics),
        limit: out.retry_limit,
        sem: Arc::clone(&sem),
        recovery: Arc::clone(&recovery),
        shared: shared.clone(),
        backlog: Arc::clone(&rx.backlog),
    };
    out.plugin.start().await;
    let mut queue = Queue::new();
    let mut flights: JoinSet<usize> = JoinSet::new();
    let mut tick = tokio::time::interval(shared.flush_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let cap = out.workers + MAX_RETRYING;
    let work = async {
        let mut draining_now = false;
        loop {
            tokio::select! {
                got = rx.recv() => match got {
                    Some(mut item) => {
                        // A filesystem chunk stays in memory only while this output keeps up.
                        if item.stored.is_some() && item.chunk.is_some() && !keep_up(&queue, &recovery, &shared) {
                            item.chunk = None;
                        }
                        let pressing = item.chunk.as_ref().is_some_and(|c| c.pressing());
                        // Batches this output cannot send yet (its destination is down or
                        // slow, and its retries fill its slots) pile up here: pack them.
                        if queue.pending_up >= crate::router::PACK_AT_BYTES {
                            item.pack_if_alone();
                        }
                        let tag = Arc::clone(&item.tag);
                        let pause = item.pause.clone();
                        let tag_bytes = queue.push(item);
                        if let Some(limit) = out.total_limit_size {
                            enforce_limit(&mut queue, limit as usize, pause, id, &out, &shared.pipeline);
                        }
                        report_capacity(&queue, &out);
                        let room = !recovery.is_failing() || flights.len() < cap;
                        if (tag_bytes >= FLUSH_AT_BYTES || draining_now) && room {
                            if let Some((tag, items)) = queue.pop_tag(&tag) {
                                spawn_flush(&mut flights, &flusher, tag, items).await;
                            }
                        } else if pressing {
                            // The input is paused at its Mem_Buf_Limit and what is batched here
                            // (any tag) may be what holds it: send it now rather than at the
                            // Flush tick, or a limit below FLUSH_AT_BYTES would let the input
                            // read one limit's worth per Flush interval. Only while the input
                            // is paused, so batches stay full-sized when it is not.
                            flush_all(&mut queue, &mut flights, &flusher, &recovery, cap, false).await;
                        } else if queue.pending_up >= FLUSH_AT_BYTES && room {
                            // Many tags, each below FLUSH_AT_BYTES (a node with hundreds of
                            // containers): together they are a full batch's worth, so the
                            // oldest tags go now instead of the whole set waiting for the
                            // Flush tick in memory, up to the input's Mem_Buf_Limit.
                            flush_oldest(&mut queue, &mut flights, &flusher, &recovery, cap, FLUSH_AT_BYTES / 2).await;
                        }
                    }
                    None => break,
                },
                _ = tick.tick() => {
                    flush_all(&mut queue, &mut flights, &flusher, &recovery, cap, draining_now).await;
                }
                _ = shared.draining.cancelled(), if !draining_now => {
                    draining_now = true;
                    flush_all(&mut queue, &mut flights, &flusher, &recovery, cap, true).await;
                }
                Some(done) = flights.join_next(), if !flights.is_empty() => {
                    queue.held = queue.held.saturating_sub(done.unwrap_or(0));
                    unpause_under_limit(&mut queue, out.total_limit_size, id);
                    report_capacity(&queue, &out);
                }
            }
        }
        // The router is done: send what is left, then wait for every batch to settle.
        loop {
            flush_all(&mut queue, &mut flights, &flusher, &recovery, cap, true).await;
            match flights.join_next().await {
                Some(done) => {
                    queue.held = queue.held.saturating_sub(done.unwrap_or(0));
                    unpause_under_limit(&mut queue, out.total_limit_size, id);
                    report_capacity(&queue, &out);
                }
                None if queue.is_empty() || !can_flush_any(&queue, &shared) => break,
                None => {}
            }
        }
    };
    // Grace ran out: give up what is in flight now, so every chunk is settled (as abandoned)
    // before the engine returns.
    let gave_up = tokio::select! {
        _ = work => false,
        _ = shared.hard_stop.cancelled() => true,
    };
    for b in std::mem::take(&mut queue.paused) {
        b.unblock(id);
    }
    if gave_up {
        flights.abort_all();
        while flights.join_next().await.is_some() {}
        return;
    }
    if let Err(e) = out.plugin.shutdown().await {
        tracing::error!(output = %out.name, error = %e, "output shutdown failed");
    }
}

/// Whether a filesystem chunk arriving now stays in memory: the output keeps up, holds little
/// in memory already, and the store is under `storage.max_chunks_up`.
fn keep_up(queue: &Queue, recovery: &Recovery, shared: &Shared) -> bool {
    !recovery.is_failing()
        && queue.pending_up < UP_WINDOW
        && shared
            .storage_gauges
            .as_ref()
            .is_none_or(|g| g.fs_chunks_up.load(Ordering::Relaxed) < shared.max_chunks_up)
}

/// At shutdown, whether anything queued may still go out: chunks on disk only wait for the
/// next start unless `storage.backlog.flush_on_shutdown` is on.
fn can_flush_any(queue: &Queue, shared: &Shared) -> bool {
    shared.flush_on_shutdown
        || queue
            .pending
            .values()
            .any(|p| p.items.iter().any(|(_, r)| r.chunk.is_some()))
}

/// Over `storage.total_limit_size`: pause the input that asked for it, or drop the oldest
/// queued chunks, counted and logged.
fn enforce_limit(
    queue: &mut Queue,
    limit: usize,
    pause: Option<Arc<MemBudget>>,
    id: usize,
    out: &OutputInstance,
    pipeline: &crate::metrics::Metrics,
) {
    if queue.held <= limit {
        return;
    }
    if let Some(budget) = pause {
        if !queue.paused.iter().any(|b| Arc::ptr_eq(b, &budget)) {
            tracing::warn!(output = %out.name, held = queue.held, limit,
                "storage.total_limit_size reached: pausing the input (storage.pause_on_chunks_overlimit)");
            budget.block(id);
            queue.paused.push(budget);
        }
        return;
    }
    while queue.held > limit {
        let Some(item) = queue.pop_oldest() else {
            break;
        };
        let n = item.records();
        out.metrics.dropped(n);
        if let Some(c) = &item.chunk {
            let batch = Batch::new(Arc::clone(&item.tag), vec![Arc::clone(c)]);
            count_routes(pipeline, &out.name, &batch, false);
        }
        tracing::warn!(output = %out.name, tag = %item.tag, records = n, bytes = item.bytes, limit,
            "storage.total_limit_size reached: the oldest chunk is dropped");
        item.settle(DeliveryStatus::Rejected);
    }
}

/// Lets paused inputs go once the output is back under its limit.
fn unpause_under_limit(queue: &mut Queue, limit: Option<u64>, id: usize) {
    if queue.paused.is_empty() || limit.is_some_and(|l| queue.held > l as usize) {
        return;
    }
    for b in std::mem::take(&mut queue.paused) {
        b.unblock(id);
    }
}

/// Forms batches of every queued tag, oldest first, while the output may have more out. When
/// draining without `storage.backlog.flush_on_shutdown`, chunks on disk only stay queued (they
/// are sent after the next start).
async fn flush_all(
    queue: &mut Queue,
    flights: &mut JoinSet<usize>,
    flusher: &Flusher,
    recovery: &Recovery,
    cap: usize,
    draining: bool,
) {
    let mut kept = Vec::new();
    while !(recovery.is_failing() && flights.len() >= cap) {
        let Some((tag, items)) = queue.pop() else {
            break;
        };
        let (go, wait): (Vec<Routed>, Vec<Routed>) =
            if draining && !flusher.shared.flush_on_shutdown {
                items.into_iter().partition(|r| r.chunk.is_some())
            } else {
                (items, Vec::new())
            };
        kept.extend(wait);
        if !go.is_empty() {
            spawn_flush(flights, flusher, tag, go).await;
        }
    }
    for r in kept {
        queue.requeue(r);
    }
}

/// Sends the oldest tags' batches until the records pending in memory are below `keep`, while
/// the output may have more out (as [`flush_all`]).
async fn flush_oldest(
    queue: &mut Queue,
    flights: &mut JoinSet<usize>,
    flusher: &Flusher,
    recovery: &Recovery,
    cap: usize,
    keep: usize,
) {
    while queue.pending_up >= keep && !(recovery.is_failing() && flights.len() >= cap) {
        let Some((tag, items)) = queue.pop() else {
            break;
        };
        spawn_flush(flights, flusher, tag, items).await;
    }
}

/// What one output's flushes share.
struct Flusher {
    /// YAML processors of this output, run on each batch before it is flushed.
    processors: Option<Arc<OutputProcessors>>,
    plugin: Arc<dyn Output>,
    name: String,
    metrics: Arc<PluginMetrics>,
    limit: RetryLimit,
    sem: Arc<Semaphore>,
    recovery: Arc<Recovery>,
    shared: Shared,
    /// What the output has not taken in: a batch waiting for a worker counts in it.
    backlog: Arc<Backlog>,
}

/// Takes a worker slot in FIFO order, then flushes in the background: with one worker, batches
/// go out in the order they were formed (only a retry can overtake). The task returns the
/// bytes it held, for `storage.total_limit_size`.
async fn spawn_flush(flights: &mut JoinSet<usize>, f: &Flusher, tag: Tag, items: Vec<Routed>) {
    // While this waits for a worker, the output takes nothing in: what it holds here waits
    // like what is queued for it, and the router packs what comes next once enough does.
    let bytes: u64 = items.iter().map(|r| r.bytes as u64).sum();
    let permit = match Arc::clone(&f.sem).try_acquire_owned() {
        Ok(permit) => Ok(permit),
        Err(TryAcquireError::Closed) => return,
        Err(TryAcquireError::NoPermits) => {
            let b = &f.backlog;
            b.bytes.fetch_add(bytes, Ordering::Relaxed);
            b.blocked_since.store(b.micros(), Ordering::Relaxed);
            let permit = Arc::clone(&f.sem).acquire_owned().await;
            b.blocked_since.store(0, Ordering::Relaxed);
            crate::storage::dec(&b.bytes, bytes);
            permit
        }
    };
    let Ok(permit) = permit else {
        return;
    };
    let d = Flusher {
        processors: f.processors.clone(),
        plugin: Arc::clone(&f.plugin),
        name: f.name.clone(),
        metrics: Arc::clone(&f.metrics),
        limit: f.limit,
        sem: Arc::clone(&f.sem),
        recovery: Arc::clone(&f.recovery),
        shared: f.shared.clone(),
        backlog: Arc::clone(&f.backlog),
    };
    flights.spawn(deliver(d, permit, tag, items));
}

/// Reads the records of queued chunk files back; a file that cannot be read is set aside,
/// counted and logged, and this output's share of it given up.
async fn load(f: &Flusher, tag: &Tag, items: Vec<Routed>) -> (Vec<Arc<Chunk>>, usize) {
    let mut chunks = Vec::with_capacity(items.len());
    let mut loaded = 0;
    for item in items {
        match (item.chunk, item.stored) {
            // An output that reads packed chunks gets them as they are, unless YAML
            // processors, which work on records, run first.
            (Some(c), _)
                if c.packed.is_some() && (f.processors.is_some() || !f.plugin.reads_packed()) =>
            {
                match c.unpacked() {
                    Ok(view) => chunks.push(Arc::new(view)),
                    Err(e) => {
                        // Only a bug gets here: the packed bytes never leave the process.
                        let n = c.len() as u64;
                        f.metrics.dropped(n);
                        tracing::error!(output = %f.name, %tag, records = n, error = %e,
                        "queued records cannot be unpacked; they are counted as dropped");
                        c.mark(DeliveryStatus::Rejected);
                    }
                }
            }
            (Some(c), _) => chunks.push(c),
            (None, Some(stored)) => {
                f.shared.load_budget.acquire(item.bytes).await;
                loaded += item.bytes;
                let s = Arc::clone(&stored);
                let read = tokio::task::spawn_blocking(move || s.load()).await;
                match read {
                    Ok(Ok(records)) => {
                        let up = f.shared.storage_gauges.as_ref().map(|g| {
                            Arc::new(UpGuard::new(Arc::clone(g), stored.gauges().cloned()))
                                as Arc<dyn logferry_core::MemCharge>
                        });
                        let wire_size =
                            logferry_core::chunk::wire_size(&records, MapHeaders::Compact);
                        chunks.push(Arc::new(Chunk {
                            tag: Arc::clone(tag),
                            records,
                            packed: None,
                            size: item.bytes,
                            wire_size,
                            headers: MapHeaders::Compact,
                            // Chunk files live in `storage.path/<input instance>/`.
                            source: stored
                                .path
                                .parent()
                                .and_then(|d| d.file_name())
                                .and_then(|n| n.to_str())
                                .map(Arc::from),
                            origin: None,
                            born: std::time::Instant::now(),
                            delivery: Some(Arc::clone(&stored.delivery)),
                            charge: up,
                        }));
                    }
                    Ok(Err(e)) => {
                        let n = stored.records();
                        f.metrics.dropped(n);
                        tracing::error!(output = %f.name, %tag, file = %stored.path.display(), error = %e,
                            "a chunk file cannot be read back; it is set aside and its records counted as dropped");
                        stored.delivery.mark(DeliveryStatus::Rejected);
                    }
                    Err(e) => {
                        tracing::error!(output = %f.name, %tag, error = %e, "reading a chunk file failed");
                    }
                }
            }
            (None, None) => {}
        }
    }
    (chunks, loaded)
}

/// Flushes one batch until it is delivered or given up, and settles its chunks' delivery.
/// Returns the bytes the batch held.
async fn deliver(
    f: Flusher,
    permit: tokio::sync::OwnedSemaphorePermit,
    tag: Tag,
    items: Vec<Routed>,
) -> usize {
    let held: usize = items.iter().map(|r| r.bytes).sum();
    let busy: Vec<(crate::storage::InputGauges, u64)> = items
        .iter()
        .filter_map(|r| r.stored.as_ref())
        .filter_map(|s| s.gauges().map(|g| (g.clone(), s.bytes)))
        .collect();
    for (g, bytes) in &busy {
        g.busy.fetch_add(1, Ordering::Relaxed);
        g.busy_bytes.fetch_add(*bytes, Ordering::Relaxed);
    }
    let (mut chunks, loaded) = load(&f, &tag, items).await;
    if let Some(p) = &f.processors {
        chunks = p.run(&tag, chunks).await;
    }
    if !chunks.is_empty() {
        let mut batch = Batch::new(tag, chunks);
        if f.shared.dead_letters.is_some() {
            batch = batch.keeping_rejected();
        }
        retry_until_settled(&f, Some(permit), batch).await;
    }
    f.backlog.flushed.store(true, Ordering::Relaxed);
    f.shared.load_budget.release(loaded);
    for (g, bytes) in &busy {
        crate::storage::dec(&g.busy, 1);
        crate::storage::dec(&g.busy_bytes, *bytes);
    }
    held
}

async fn retry_until_settled(
    f: &Flusher,
    mut first_permit: Option<tokio::sync::OwnedSemaphorePermit>,
    batch: Batch,
) {
    let Flusher {
        processors: _,
        plugin,
        name,
        metrics,
        limit,
        sem,
        recovery,
        shared,
        backlog: _,
    } = f;
    let n = batch.len() as u64;
    let mut retries = 0u32;
    loop {
        let (result, seen) = {
            let _permit = match first_permit.take() {
                Some(p) => p,
                None => match Arc::clone(sem).acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => return,
                },
            };
            let seen = recovery.attempt();
            (plugin.flush(&batch).await, seen)
        };
        match &result {
            FlushResult::Ok => recovery.succeeded(),
            FlushResult::Retry(_) => recovery.failed(),
            FlushResult::Error(_) => {}
        }
        keep_dead_letters(
            f,
            &batch,
            batch.take_rejected(),
            "refused by the destination",
        )
        .await;
        // What the output counted itself (records it dropped one by one, or delivered in an
        // attempt that is retried) is not counted again here.
        let (out_dropped, out_delivered) = batch.counted();
        let rest = n.saturating_sub(out_dropped + out_delivered);
        match result {
            FlushResult::Ok => {
                if retries > 0 {
                    tracing::info!(
                        "flush chunk '{}' succeeded at retry {retries}: input={} > output={name}",
                        batch.tag,
                        inputs_of(&batch)
                    );
                }
                PluginMetrics::add(&metrics.records, n.saturating_sub(out_dropped));
                PluginMetrics::add(&metrics.bytes, batch.wire_size() as u64);
                count_routes(&shared.pipeline, name, &batch, true);
                settle(&batch, DeliveryStatus::Delivered);
                return;
            }
            FlushResult::Error(reason) => {
                tracing::error!(output = %name, tag = %batch.tag, records = rest, %reason, "flush failed; records dropped");
                PluginMetrics::add(&metrics.errors, 1);
                PluginMetrics::add(&metrics.records, out_delivered);
                metrics.dropped(rest);
                count_routes(&shared.pipeline, name, &batch, false);
                give_up(f, &batch, &reason).await;
                return;
            }
            FlushResult::Retry(reason) => {
                if !limit.allows(retries) {
                    // Fluent Bit's words, which alerts grep for.
                    tracing::error!(records = rest, retries, %reason,
                        "chunk '{}' cannot be retried: input={} > output={name}", batch.tag, inputs_of(&batch));
                    PluginMetrics::add(&metrics.retries_failed, 1);
                    PluginMetrics::add(&metrics.records, out_delivered);
                    metrics.dropped(rest);
                    count_routes(&shared.pipeline, name, &batch, false);
                    give_up(f, &batch, &reason).await;
                    return;
                }
                retries += 1;
                PluginMetrics::add(&metrics.retries, 1);
                PluginMetrics::add(&metrics.retried_records, n);
                let wait = shared.backoff.wait(retries - 1);
                tracing::warn!(records = n, retry = retries, %reason,
                    "failed to flush chunk '{}', retry in {} seconds: input={} > output={name}",
                    batch.tag, wait.as_secs_f64().ceil(), inputs_of(&batch));
                if shared.draining.is_cancelled() {
                    tokio::time::sleep(wait.min(Duration::from_millis(200))).await;
                } else {
                    recovery.wait(wait, seen, &shared.draining).await;
                }
            }
        }
    }
}

/// The output gives the batch up: its records go to the dead-letter store (all of them, as
/// Fluent Bit copies the whole chunk), and its chunks are settled as rejected.
async fn give_up(f: &Flusher, batch: &Batch, reason: &str) {
    if f.shared.dead_letters.is_some() {
        let records = batch.cloned_records();
        keep_dead_letters(f, batch, records, reason).await;
    }
    settle(batch, DeliveryStatus::Rejected);
}

async fn keep_dead_letters(
    f: &Flusher,
    batch: &Batch,
    records: Vec<logferry_core::Record>,
    reason: &str,
) {
    let Some(dl) = &f.shared.dead_letters else {
        return;
    };
    if records.is_empty() {
        return;
    }
    let dl = Arc::clone(dl);
    let tag = batch.tag.to_string();
    let name = f.name.clone();
    let reason = reason.to_string();
    let _ = tokio::task::spawn_blocking(move || dl.keep(&tag, &name, &records, &reason)).await;
}

/// The inputs a batch's records came from, for the log (`tail.0`, or `tail.0,dummy.1`).
fn inputs_of(batch: &Batch) -> String {
    let mut names: Vec<&str> = Vec::new();
    for c in &batch.chunks {
        if let Some(s) = c.source.as_deref() {
            if !names.contains(&s) {
                names.push(s);
            }
        }
    }
    if names.is_empty() {
        "?".to_string()
    } else {
        names.join(",")
    }
}

/// Counts a batch on the routes its chunks came by, as Fluent Bit counts a task when its flush
/// ends: delivered (records, bytes and the latency since the chunk was made) or dropped.
fn count_routes(pipeline: &crate::metrics::Metrics, output: &str, batch: &Batch, delivered: bool) {
    let now = std::time::Instant::now();
    for c in &batch.chunks {
        let Some(source) = &c.source else {
            continue;
        };
        let r = pipeline.route(source, output);
        let (records, bytes) = (c.len() as u64, c.wire_size as u64);
        if delivered {
            PluginMetrics::add(&r.records, records);
            PluginMetrics::add(&r.bytes, bytes);
            r.latency.observe(now.saturating_duration_since(c.born));
        } else {
            PluginMetrics::add(&r.drop_records, records);
            PluginMetrics::add(&r.drop_bytes, bytes);
        }
    }
}

/// `fluentbit_output_chunk_available_capacity_percent`: what is left of
/// `storage.total_limit_size` (100 without a limit).
fn report_capacity(queue: &Queue, out: &OutputInstance) {
    if let Some(limit) = out.total_limit_size.filter(|l| *l > 0) {
        let free = limit.saturating_sub(queue.held as u64);
        let pct = free.saturating_mul(100) / limit;
        out.metrics.capacity_percent.store(pct, Ordering::Relaxed);
    }
}

fn settle(batch: &Batch, status: DeliveryStatus) {
    for c in &batch.chunks {
        c.mark(status);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// When the router packs for an output ([`Backlog::falls_behind`]): four batches not taken
    /// in; one while a batch waits for a worker before the first flush has ended, or for
    /// `BLOCKED_FOR` after it; never for a batch held a moment by an output that keeps up.
    #[test]
    fn an_output_falls_behind_at_four_batches_or_one_while_its_workers_are_busy() {
        let b = Backlog::new();
        let set = |bytes: usize, since: u64| {
            b.bytes.store(bytes as u64, Ordering::Relaxed);
            b.blocked_since.store(since, Ordering::Relaxed);
        };
        set(FLUSH_AT_BYTES, 0);
        assert!(!b.falls_behind(), "one batch, a worker free");
        set(crate::router::PACK_AT_BYTES, 0);
        assert!(b.falls_behind(), "four batches");
        set(FLUSH_AT_BYTES - 1, b.micros());
        assert!(!b.falls_behind(), "less than a batch");
        set(FLUSH_AT_BYTES, b.micros());
        assert!(
            b.falls_behind(),
            "held for a worker before the first flush ended"
        );
        b.flushed.store(true, Ordering::Relaxed);
        // (Held from a moment still to come, so that a slow test machine cannot make it long.)
        set(FLUSH_AT_BYTES, b.micros() + 1_000_000);
        assert!(!b.falls_behind(), "held a moment after it");
        set(FLUSH_AT_BYTES, b.micros());
        std::thread::sleep(BLOCKED_FOR + Duration::from_millis(1));
        assert!(b.falls_behind(), "held for BLOCKED_FOR");
        set(FLUSH_AT_BYTES, 0);
        assert!(!b.falls_behind(), "no longer held");
    }
}
