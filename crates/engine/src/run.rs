//! Running a pipeline: input tasks, the router task (filters, then fan-out by `Match`), and one
//! task per output that batches by tag and flushes on its workers with retries.
//!
//! Shutdown (a signal, an input asking to exit, or every input finished): inputs are cancelled,
//! the router drains what they emitted, outputs flush everything they hold at once, retrying
//! within `Grace` seconds; whatever is still undelivered when `Grace` runs out is dropped as
//! `Abandoned`, so inputs that track delivery (tail) read it again after a restart.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use logferry_core::{Chunk, DeliveryStatus, Tag};
use rand::Rng;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::budget::MemBudget;
use crate::common::RetryLimit;
use crate::emitter::Emitter;
use crate::metrics::PluginMetrics;
use crate::pipeline::{FilterInstance, OutputInstance, Pipeline};
use crate::plugin::{Batch, FlushResult, InputContext, InputExit, Output};

/// A tag's pending records are flushed at once, without waiting for the `Flush` tick, when they
/// reach this many bytes: Fluent Bit's chunk size. Keeps a small `Mem_Buf_Limit` flowing.
pub const FLUSH_AT_BYTES: usize = 2 * 1024 * 1024;

/// Capacity of the channel from inputs to the router, in chunks. Small on purpose: an input
/// that is faster than the filters waits here instead of reading ahead, because a chunk's
/// growth in the filters (metadata, merged logs) is only charged to `Mem_Buf_Limit` once the
/// router has filtered it.
const ROUTER_QUEUE: usize = 2;

/// Why the pipeline stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The caller's stop token fired (a signal).
    Stopped,
    /// An input asked the agent to exit (stdin EOF, tail `Exit_On_Eof`).
    InputExit,
    /// Every input finished.
    InputsDone,
}

/// Retry waits, Fluent Bit's full jitter: a random time between `base` and
/// `min(cap, base * 2^retry)` seconds.
#[derive(Clone, Copy, Debug)]
struct Backoff {
    base: f64,
    cap: f64,
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

impl Pipeline {
    /// Runs until `stop` fires, an input asks to exit, or every input is done; then drains as
    /// described in the module docs.
    pub async fn run(self, stop: CancellationToken) -> StopReason {
        let Pipeline {
            service,
            inputs,
            filters,
            outputs,
            ..
        } = self;
        let grace = Duration::from_secs(service.grace);
        let backoff = Backoff {
            base: service.scheduler_base,
            cap: service.scheduler_cap,
        };
        let flush_every = service.flush_interval();
        let draining = CancellationToken::new();
        let hard_stop = CancellationToken::new();

        // Outputs.
        let mut output_tasks = JoinSet::new();
        let mut routes = Vec::with_capacity(outputs.len());
        for out in outputs {
            let (tx, rx) = mpsc::unbounded_channel();
            routes.push((out.matcher.clone(), tx));
            output_tasks.spawn(output_task(
                out,
                rx,
                flush_every,
                backoff,
                draining.clone(),
                hard_stop.clone(),
            ));
        }

        // Router.
        let (router_tx, router_rx) = mpsc::channel::<Chunk>(ROUTER_QUEUE);
        let router = tokio::spawn(router_task(router_rx, filters, routes));

        // Inputs.
        let input_stop = CancellationToken::new();
        let mut input_tasks = JoinSet::new();
        for inp in inputs {
            let budget = Arc::new(MemBudget::new(inp.mem_buf_limit));
            let ctx = InputContext {
                name: inp.name.clone(),
                tag: inp.tag,
                emitter: Emitter::new(router_tx.clone(), budget, inp.metrics),
                shutdown: input_stop.clone(),
            };
            let name = inp.name;
            let plugin = inp.plugin;
            input_tasks.spawn(async move {
                let r = plugin.run(ctx).await;
                (name, r)
            });
        }
        drop(router_tx);

        // Wait for a reason to stop.
        let reason = loop {
            tokio::select! {
                _ = stop.cancelled() => break StopReason::Stopped,
                joined = input_tasks.join_next() => match joined {
                    None => break StopReason::InputsDone,
                    Some(Ok((name, Ok(InputExit::ExitEngine)))) => {
                        tracing::info!(input = %name, "input asked the agent to exit");
                        break StopReason::InputExit;
                    }
                    Some(Ok((name, Ok(InputExit::Finished)))) => {
                        tracing::debug!(input = %name, "input finished");
                    }
                    Some(Ok((name, Err(e)))) => {
                        tracing::error!(input = %name, error = %e, "input stopped with an error");
                    }
                    Some(Err(e)) => {
                        tracing::error!(error = %e, "input task failed");
                    }
                },
            }
        };
        tracing::info!(
            ?reason,
            grace_secs = grace.as_secs(),
            "shutting down: draining inputs and outputs"
        );
        let deadline = Instant::now() + grace;

        // Stop inputs; give them the grace period to return, then abort them.
        input_stop.cancel();
        while !input_tasks.is_empty() {
            match tokio::time::timeout_at(deadline, input_tasks.join_next()).await {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => {
                    tracing::warn!("inputs did not stop within Grace; aborting them");
                    input_tasks.abort_all();
                    break;
                }
            }
        }
        // Outputs flush what they hold right away and shorten retry waits.
        draining.cancel();
        let drained = tokio::time::timeout_at(deadline, async {
            let _ = router.await;
            while output_tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                "outputs did not finish within Grace; undelivered records are abandoned"
            );
            hard_stop.cancel();
            let settled = tokio::time::timeout(Duration::from_secs(2), async {
                while output_tasks.join_next().await.is_some() {}
            })
            .await;
            if settled.is_err() {
                output_tasks.abort_all();
            }
        }
        reason
    }
}

async fn router_task(
    mut rx: mpsc::Receiver<Chunk>,
    mut filters: Vec<FilterInstance>,
    routes: Vec<(logferry_core::Matcher, mpsc::UnboundedSender<Arc<Chunk>>)>,
) {
    let mut tick = tokio::time::interval(crate::plugin::FILTER_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            got = rx.recv() => match got {
                Some(chunk) => route(chunk, &mut filters, 0, &routes).await,
                None => break,
            },
            _ = tick.tick() => flush_filters(&mut filters, false, &routes).await,
        }
    }
    flush_filters(&mut filters, true, &routes).await;
}

/// Sends records filters held back through the filters after them, then to the outputs. They
/// travel without delivery tracking: their own chunks were settled when they were held.
async fn flush_filters(
    filters: &mut [FilterInstance],
    all: bool,
    routes: &[(logferry_core::Matcher, mpsc::UnboundedSender<Arc<Chunk>>)],
) {
    for i in 0..filters.len() {
        let due = filters[i].plugin.flush_due(all);
        for (tag, records) in due {
            if records.is_empty() {
                continue;
            }
            let chunk = Chunk::new(tag, records);
            route(chunk, filters, i + 1, routes).await;
        }
    }
}

/// Applies the filters from `first` on, then fans the chunk out to matching outputs.
async fn route(
    mut chunk: Chunk,
    filters: &mut [FilterInstance],
    first: usize,
    routes: &[(logferry_core::Matcher, mpsc::UnboundedSender<Arc<Chunk>>)],
) {
    let mut filtered = false;
    for f in filters.iter_mut().skip(first) {
        if chunk.records.is_empty() {
            break;
        }
        if !f.matcher.matches(&chunk.tag) {
            continue;
        }
        filtered = true;
        let before = chunk.records.len() as u64;
        f.plugin.filter(&chunk.tag, &mut chunk.records).await;
        let after = chunk.records.len() as u64;
        PluginMetrics::add(&f.metrics.records, before);
        if after < before {
            PluginMetrics::add(&f.metrics.dropped_records, before - after);
        } else if after > before {
            PluginMetrics::add(&f.metrics.retried_records, after - before);
        }
    }
    if filtered {
        chunk.recharge();
    }
    let targets: Vec<&mpsc::UnboundedSender<Arc<Chunk>>> = if chunk.records.is_empty() {
        Vec::new()
    } else {
        routes
            .iter()
            .filter(|(m, _)| m.matches(&chunk.tag))
            .map(|(_, tx)| tx)
            .collect()
    };
    if let Some(d) = &chunk.delivery {
        d.expect(targets.len());
    }
    // The router's own share: done routing (no route, or all records filtered out, is
    // delivered: Fluent Bit deletes data no output matches).
    chunk.mark(DeliveryStatus::Delivered);
    if targets.is_empty() {
        return;
    }
    let chunk = Arc::new(chunk);
    for tx in targets {
        let _ = tx.send(Arc::clone(&chunk));
    }
}

struct Pending {
    chunks: Vec<Arc<Chunk>>,
    bytes: usize,
}

async fn output_task(
    out: OutputInstance,
    mut rx: mpsc::UnboundedReceiver<Arc<Chunk>>,
    flush_every: Duration,
    backoff: Backoff,
    draining: CancellationToken,
    hard_stop: CancellationToken,
) {
    let sem = Arc::new(Semaphore::new(out.workers));
    let mut pending: HashMap<Tag, Pending> = HashMap::new();
    // Tags in the order their first pending chunk arrived, so flushes go out in arrival order.
    let mut order: Vec<Tag> = Vec::new();
    let mut flights = JoinSet::new();
    let mut tick = tokio::time::interval(flush_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let work = async {
        let mut draining_now = false;
        loop {
            tokio::select! {
                got = rx.recv() => match got {
                    Some(chunk) => {
                        let tag = Arc::clone(&chunk.tag);
                        let p = pending.entry(Arc::clone(&tag)).or_insert_with(|| {
                            order.push(Arc::clone(&tag));
                            Pending { chunks: Vec::new(), bytes: 0 }
                        });
                        p.bytes += chunk.size;
                        let pressing = chunk.pressing();
                        p.chunks.push(chunk);
                        if p.bytes >= FLUSH_AT_BYTES || draining_now {
                            if let Some((tag, p)) = pending.remove_entry(&tag) {
                                order.retain(|t| *t != tag);
                                spawn_flush(&mut flights, &out, &sem, backoff, &draining, Batch::new(tag, p.chunks)).await;
                            }
                        } else if pressing {
                            // The input is paused at its Mem_Buf_Limit and what is batched here
                            // (any tag) may be what holds it: send it now rather than at the
                            // Flush tick, or a limit below FLUSH_AT_BYTES would let the input
                            // read one limit's worth per Flush interval. Only while the input
                            // is paused, so batches stay full-sized when it is not.
                            flush_all(&mut pending, &mut order, &mut flights, &out, &sem, backoff, &draining).await;
                        }
                    }
                    None => break,
                },
                _ = tick.tick() => {
                    flush_all(&mut pending, &mut order, &mut flights, &out, &sem, backoff, &draining).await;
                }
                _ = draining.cancelled(), if !draining_now => {
                    draining_now = true;
                    flush_all(&mut pending, &mut order, &mut flights, &out, &sem, backoff, &draining).await;
                }
                Some(_) = flights.join_next(), if !flights.is_empty() => {}
            }
        }
        flush_all(
            &mut pending,
            &mut order,
            &mut flights,
            &out,
            &sem,
            backoff,
            &draining,
        )
        .await;
        while flights.join_next().await.is_some() {}
    };
    // Grace ran out: give up what is in flight now, so every chunk is settled (as abandoned)
    // before the engine returns.
    let gave_up = tokio::select! {
        _ = work => false,
        _ = hard_stop.cancelled() => true,
    };
    if gave_up {
        flights.abort_all();
        while flights.join_next().await.is_some() {}
        return;
    }
    if let Err(e) = out.plugin.shutdown().await {
        tracing::error!(output = %out.name, error = %e, "output shutdown failed");
    }
}

/// Flushes every pending batch, in the order its tag first arrived (the Flush tick, draining,
/// a paused input, the end of the stream).
async fn flush_all(
    pending: &mut HashMap<Tag, Pending>,
    order: &mut Vec<Tag>,
    flights: &mut JoinSet<()>,
    out: &OutputInstance,
    sem: &Arc<Semaphore>,
    backoff: Backoff,
    draining: &CancellationToken,
) {
    for (tag, p) in drain_in_order(pending, order) {
        spawn_flush(
            flights,
            out,
            sem,
            backoff,
            draining,
            Batch::new(tag, p.chunks),
        )
        .await;
    }
}

/// Every pending batch, in the order its tag first arrived.
fn drain_in_order(
    pending: &mut HashMap<Tag, Pending>,
    order: &mut Vec<Tag>,
) -> Vec<(Tag, Pending)> {
    order
        .drain(..)
        .filter_map(|t| pending.remove_entry(&t))
        .collect()
}

/// Takes a worker slot in FIFO order, then flushes in the background: with one worker, batches
/// go out in the order they were formed (only a retry can overtake).
async fn spawn_flush(
    flights: &mut JoinSet<()>,
    out: &OutputInstance,
    sem: &Arc<Semaphore>,
    backoff: Backoff,
    draining: &CancellationToken,
    batch: Batch,
) {
    let Ok(permit) = Arc::clone(sem).acquire_owned().await else {
        return;
    };
    flights.spawn(deliver(
        Arc::clone(&out.plugin),
        out.name.clone(),
        Arc::clone(&out.metrics),
        out.retry_limit,
        Arc::clone(sem),
        Some(permit),
        backoff,
        draining.clone(),
        batch,
    ));
}

/// Flushes one batch until it is delivered or given up, and settles its chunks' delivery.
#[allow(clippy::too_many_arguments)]
async fn deliver(
    plugin: Arc<dyn Output>,
    name: String,
    metrics: Arc<PluginMetrics>,
    limit: RetryLimit,
    sem: Arc<Semaphore>,
    mut first_permit: Option<tokio::sync::OwnedSemaphorePermit>,
    backoff: Backoff,
    draining: CancellationToken,
    batch: Batch,
) {
    let n = batch.len() as u64;
    let mut retries = 0u32;
    loop {
        let result = {
            let _permit = match first_permit.take() {
                Some(p) => p,
                None => match Arc::clone(&sem).acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => return,
                },
            };
            plugin.flush(&batch).await
        };
        // What the output counted itself (records it dropped one by one, or delivered in an
        // attempt that is retried) is not counted again here.
        let (out_dropped, out_delivered) = batch.counted();
        let rest = n.saturating_sub(out_dropped + out_delivered);
        match result {
            FlushResult::Ok => {
                PluginMetrics::add(&metrics.records, n.saturating_sub(out_dropped));
                PluginMetrics::add(&metrics.bytes, batch.size() as u64);
                settle(&batch, DeliveryStatus::Delivered);
                return;
            }
            FlushResult::Error(reason) => {
                tracing::error!(output = %name, tag = %batch.tag, records = rest, %reason, "flush failed; records dropped");
                PluginMetrics::add(&metrics.errors, 1);
                PluginMetrics::add(&metrics.records, out_delivered);
                metrics.dropped(rest);
                settle(&batch, DeliveryStatus::Rejected);
                return;
            }
            FlushResult::Retry(reason) => {
                if !limit.allows(retries) {
                    tracing::error!(output = %name, tag = %batch.tag, records = rest, retries, %reason,
                        "flush failed and Retry_Limit is reached; records dropped");
                    PluginMetrics::add(&metrics.retries_failed, 1);
                    PluginMetrics::add(&metrics.records, out_delivered);
                    metrics.dropped(rest);
                    settle(&batch, DeliveryStatus::Rejected);
                    return;
                }
                retries += 1;
                PluginMetrics::add(&metrics.retries, 1);
                PluginMetrics::add(&metrics.retried_records, n);
                let wait = backoff.wait(retries - 1);
                tracing::warn!(output = %name, tag = %batch.tag, records = n, retry = retries,
                    wait_secs = wait.as_secs_f64(), %reason, "flush failed; will retry");
                if draining.is_cancelled() {
                    tokio::time::sleep(wait.min(Duration::from_millis(200))).await;
                } else {
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = draining.cancelled() => {}
                    }
                }
            }
        }
    }
}

fn settle(batch: &Batch, status: DeliveryStatus) {
    for c in &batch.chunks {
        c.mark(status);
    }
}
