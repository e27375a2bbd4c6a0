//! Running a pipeline: input tasks, the router task (filters, then storage and fan-out by
//! `Match`, see [`crate::router`]), and one task per output that batches by tag and flushes on
//! its workers with retries (see [`crate::output`]).
//!
//! At start, chunk files a previous run left under `storage.path` (the backlog) are queued to
//! the outputs that match their tags before any input starts, so they go out first.
//!
//! Shutdown (a signal, an input asking to exit, or every input finished): inputs are cancelled,
//! the router drains what they emitted, outputs flush everything they hold at once, retrying
//! within `Grace` seconds; whatever is still undelivered when `Grace` runs out is dropped as
//! `Abandoned`, so inputs that track delivery (tail) read it again after a restart, and chunk
//! files stay for the next start.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::budget::MemBudget;
use crate::emitter::Emitter;
use crate::output::{output_task, Backoff, Routed, Shared};
use crate::pipeline::Pipeline;
use crate::plugin::{InputContext, InputExit};
use crate::router::{InputStage, InputStore, Route};
use crate::storage::InputGauges;

pub use crate::output::{FLUSH_AT_BYTES, MAX_RETRYING, PROBE_EVERY};

/// Capacity of the channel from inputs to the router (to each shard), in chunks. Small on purpose: an input
/// that is faster than the filters waits here instead of reading ahead, because a chunk's
/// growth in the filters (metadata, merged logs) is only charged to `Mem_Buf_Limit` once the
/// router has filtered it.
const ROUTER_QUEUE: usize = 2;

/// Shards of the filter stage by default: one per core the agent may use (its CPU affinity and
/// cgroup quota count) but one, which reading the files and sending need, at most
/// [`MAX_DEFAULT_FILTER_WORKERS`]. So one on two cores, where a second shard only competes with
/// tail and the outputs: P6 (500 files) on two cores took 4.99–5.20 CPU s per million lines
/// with two shards against 4.58–5.06 with one, and a p99 lag of 1.71–1.91 s against
/// 1.49–1.62 s (docs/performance.md, "Scaling with cores").
fn default_filter_workers() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .saturating_sub(1)
        .clamp(1, MAX_DEFAULT_FILTER_WORKERS)
}

/// Beyond this, more shards by default would mostly add idle tasks: set
/// `logferry.filter_workers` for more.
const MAX_DEFAULT_FILTER_WORKERS: usize = 8;

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

impl std::fmt::Display for StopReason {
    /// Words for the log (never Rust's `Debug` form).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StopReason::Stopped => "stop signal",
            StopReason::InputExit => "an input asked to exit",
            StopReason::InputsDone => "every input finished",
        })
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
            storage,
            dead_letters,
            metrics,
            ..
        } = self;
        let gauges = metrics.storage.clone();
        let grace = Duration::from_secs(service.grace);
        let draining = CancellationToken::new();
        let hard_stop = CancellationToken::new();
        let shared = Shared {
            flush_every: service.flush_interval(),
            backoff: Backoff {
                base: service.scheduler_base,
                cap: service.scheduler_cap,
            },
            draining: draining.clone(),
            hard_stop: hard_stop.clone(),
            dead_letters,
            load_budget: Arc::new(MemBudget::new(service.storage_backlog_mem_limit.0 as usize)),
            storage_gauges: storage.as_ref().map(|s| Arc::clone(&s.gauges)),
            max_chunks_up: service.storage_max_chunks_up,
            flush_on_shutdown: service.storage_backlog_flush_on_shutdown,
            pipeline: Arc::clone(&metrics),
        };

        // Outputs.
        let mut output_tasks = JoinSet::new();
        let mut routes: Vec<Route> = Vec::with_capacity(outputs.len());
        for (id, out) in outputs.into_iter().enumerate() {
            let (tx, rx) = crate::output::output_channel();
            routes.push((out.matcher.clone(), tx));
            output_tasks.spawn(output_task(out, id, rx, shared.clone()));
        }

        // What a previous run left on disk goes first.
        if let Some(storage) = &storage {
            replay_backlog(storage, &routes);
        }

        // Router.
        let mut inputs = inputs;
        let stages = inputs
            .iter_mut()
            .map(|i| InputStage {
                processors: std::mem::take(&mut i.processors),
                routes: i.routes.take(),
            })
            .collect();
        let shards = service
            .filter_workers
            .map_or_else(default_filter_workers, |n| n as usize);
        let (router_tx, router) =
            crate::router::start(stages, filters, routes, shards, ROUTER_QUEUE);

        // Inputs.
        let input_stop = CancellationToken::new();
        let mut input_tasks = JoinSet::new();
        for (index, inp) in inputs.into_iter().enumerate() {
            let budget = Arc::new(MemBudget::new(inp.mem_buf_limit));
            let store = match (&storage, inp.filesystem) {
                (Some(storage), true) => {
                    let gauges = if service.storage_metrics {
                        InputGauges::register(&inp.metrics)
                    } else {
                        InputGauges::unregistered()
                    };
                    match storage.stream(&inp.name, gauges) {
                        Ok(stream) => Some(Arc::new(InputStore {
                            stream,
                            pause: inp.pause_on_overlimit.then(|| Arc::clone(&budget)),
                        })),
                        Err(e) => {
                            tracing::error!(input = %inp.name, error = %e,
                                "cannot create the input's directory under storage.path; it buffers in memory");
                            None
                        }
                    }
                }
                _ => None,
            };
            let mem_chunks = match store {
                None => gauges.clone(),
                Some(_) => None,
            };
            // A memory input's chunks are served too, as Fluent Bit serves them.
            let mem_gauges = (store.is_none() && service.storage_metrics)
                .then(|| InputGauges::register(&inp.metrics));
            let mut emitter = Emitter::new(
                router_tx.clone(),
                budget,
                inp.metrics,
                store,
                mem_chunks,
                index,
            )
            .with_origin(inp.plugin_name);
            if let Some(g) = mem_gauges {
                emitter = emitter.with_mem_gauges(g);
            }
            let ctx = InputContext {
                name: inp.name.clone(),
                tag: inp.tag,
                emitter,
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
            %reason,
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

/// Queues the chunk files a previous run left to every output whose `Match` accepts their tag
/// (records are read back when their batch goes out). A file no output matches is removed, as
/// Fluent Bit drops data no output matches.
fn replay_backlog(storage: &Arc<crate::storage::Storage>, routes: &[Route]) {
    let backlog = storage.backlog();
    if backlog.is_empty() {
        return;
    }
    let (mut files, mut unmatched) = (0usize, 0usize);
    for (_, stored) in backlog {
        let targets: Vec<_> = routes
            .iter()
            .filter(|(m, _)| m.as_ref().is_some_and(|m| m.matches(&stored.tag)))
            .map(|(_, tx)| tx)
            .collect();
        if targets.is_empty() {
            unmatched += 1;
            tracing::warn!(file = %stored.path.display(), tag = %stored.tag, "a stored chunk matches no output; removed");
        }
        let routed = Routed::stored(None, stored, None);
        routed.expect(targets.len());
        for tx in targets {
            tx.send(routed.clone());
        }
        routed.settle_router();
        files += 1;
    }
    tracing::info!(
        files,
        unmatched,
        path = %storage.settings().path.display(),
        "chunks left by a previous run are queued before new data"
    );
}
