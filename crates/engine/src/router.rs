//! The router task: every chunk an input emits goes through that input's YAML processors, is
//! split by its YAML routes if it has any (see [`crate::routes`]), then goes through the
//! filters whose `Match` accepts its tag, in config order, then to every output whose `Match`
//! accepts it (or to its routes' outputs).
//!
//! A chunk of a `storage.type filesystem` input is written to its input's stream once filtered
//! (Fluent Bit's chunks hold filtered records too); what one input emits under one tag is
//! gathered for up to [`crate::plugin::FILTER_TICK`] (or [`STORE_AT_BYTES`], or at once while
//! the input is paused) into one file, as Fluent Bit fills a chunk before it closes it. Its
//! input is told it is delivered as soon as the file is in place: tail may then commit its offset, and its `Mem_Buf_Limit`
//! budget is free again. The outputs get the records with the file's own delivery tracker,
//! which removes the file when every output is done with it (delivered or given up) and keeps
//! it for the next start otherwise. If the file cannot be written, the chunk goes on as a
//! memory chunk: its input waits for the outputs, as without storage.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use logferry_core::chunk::mem_and_wire_size;
use logferry_core::{Chunk, DeliveryStatus, Held, MemCharge, Record, Tag};
use tokio::sync::mpsc;

use crate::budget::MemBudget;
use crate::metrics::PluginMetrics;
use crate::output::{OutputTx, Routed};
use crate::pipeline::FilterInstance;
use crate::plugin::Carrier;
use crate::routes::InputRoutes;
use crate::storage::{InputGauges, StorageGauges, Stream};

/// A chunk on its way to the router.
pub(crate) struct Inbound {
    pub chunk: Chunk,
    /// Where it is written, when its input buffers on disk.
    pub store: Option<Arc<InputStore>>,
    /// The input that emitted it (its index in [`start`]'s `inputs`).
    pub input: usize,
}

/// What the router runs for one input before the filters: its processors, and its routes.
pub(crate) struct InputStage {
    pub processors: Vec<FilterInstance>,
    pub routes: Option<InputRoutes>,
}

/// Where a chunk goes once filtered.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Targets {
    /// Every output whose `Match` accepts its tag.
    Tag,
    /// These outputs (a route's).
    Fixed(Vec<usize>),
    /// These outputs, those whose `Match` accepts its tag (direct routes only).
    TagAnd(Vec<usize>),
}

/// Where a chunk enters the router's stages.
#[derive(Clone, Copy, Debug)]
enum Start {
    /// Its input's processors from this one on, then routing and every filter.
    Processors(usize),
    /// The filters from this one on.
    Filters(usize),
}

/// A filesystem input's stream, and its budget when outputs over their
/// `storage.total_limit_size` pause it instead of dropping (`storage.pause_on_chunks_overlimit`).
#[derive(Debug)]
pub(crate) struct InputStore {
    pub stream: Arc<Stream>,
    pub pause: Option<Arc<MemBudget>>,
}

/// An output's queue, and its `Match` (`None`: only routes reach it).
pub(crate) type Route = (Option<logferry_core::Matcher>, OutputTx);

/// A filesystem input's records under one tag are written once they reach this many bytes
/// (memory held), else at the next tick.
pub const STORE_AT_BYTES: usize = 1024 * 1024;

/// Records of one filesystem input and tag waiting to be written as one chunk file, with the
/// delivery shares of the chunks they came from (settled once the file is in place).
struct Gathered {
    store: Arc<InputStore>,
    records: Vec<Record>,
    size: usize,
    held: Vec<Held>,
    /// The outputs it goes to.
    targets: Vec<usize>,
    /// What the chunks gathered count for the byte and route metrics.
    wire_size: usize,
    source: Option<Arc<str>>,
    born: Option<std::time::Instant>,
}

/// Where inputs send their chunks: the router's one queue, or with a sharded filter stage the
/// queue of the shard that owns the chunk's tag. The queues close when every clone is gone.
#[derive(Clone)]
pub(crate) struct RouterTx(Arc<[mpsc::Sender<Inbound>]>);

impl RouterTx {
    /// Queues `inbound` for its tag's shard; waits while that queue is full. `Err` once the
    /// router has stopped.
    pub(crate) async fn send(&self, inbound: Inbound) -> Result<(), ()> {
        let k = match self.0.len() {
            1 => 0,
            n => shard_of(&inbound.chunk.tag, n),
        };
        match self.0.get(k) {
            Some(tx) => tx.send(inbound).await.map_err(|_| ()),
            None => Err(()),
        }
    }
}

/// Starts the filter stage: on one task, or on `shards` tasks when every
/// filter can [`crate::plugin::Filter::fork`] and no input has processors or routes. Each
/// input sends every chunk of one tag to the same shard ([`RouterTx`]), so each tag's records
/// keep their order and each filter's per-tag state lives in one instance; chunks of different
/// tags may pass each other (Fluent Bit keeps no order between tags either: each tag is its own
/// chunk and flush). Returns where inputs send, `queue` chunks deep per shard, and the task
/// that ends once every sender is gone and every shard has drained.
pub(crate) fn start(
    inputs: Vec<InputStage>,
    filters: Vec<FilterInstance>,
    routes: Vec<Route>,
    shards: usize,
    queue: usize,
) -> (RouterTx, tokio::task::JoinHandle<()>) {
    let forks = if shards <= 1 {
        Vec::new()
    } else {
        let procs = inputs
            .iter()
            .any(|i| !i.processors.is_empty() || i.routes.is_some());
        match fork_stage(procs, &filters, shards - 1) {
            Ok(forks) => {
                tracing::info!(
                    "the filters run on {} tasks, each taking the chunks of its own tags",
                    forks.len() + 1
                );
                forks
            }
            Err(why) => {
                // A setting that cannot apply is a note of the pipeline's build (at start and
                // in --dry-run); the default just stays on one task.
                tracing::debug!("the filters run on one task: {why}");
                Vec::new()
            }
        }
    };
    if forks.is_empty() {
        let (tx, rx) = mpsc::channel(queue);
        let task = tokio::spawn(shard_task(rx, inputs, filters, routes));
        return (RouterTx(Arc::from(vec![tx])), task);
    }
    let n = inputs.len();
    let mut txs = Vec::with_capacity(forks.len() + 1);
    let mut tasks = Vec::with_capacity(forks.len() + 1);
    for set in std::iter::once(filters).chain(forks) {
        let (tx, rx) = mpsc::channel(queue);
        // No processors or routes here (see `fork_stage`): only the input count matters.
        let stages = (0..n)
            .map(|_| InputStage {
                processors: Vec::new(),
                routes: None,
            })
            .collect();
        tasks.push(tokio::spawn(shard_task(rx, stages, set, routes.clone())));
        txs.push(tx);
    }
    let task = tokio::spawn(async move {
        for t in tasks {
            if let Err(e) = t.await {
                tracing::error!(error = %e, "a filter shard failed");
            }
        }
    });
    (RouterTx(Arc::from(txs)), task)
}

/// Why the filter stage cannot be sharded, if it cannot: an input has processors or routes
/// (`processors_or_routes`), or a filter has a condition or does not fork (found by asking it
/// for a fork, dropped again).
pub(crate) fn unshardable(
    processors_or_routes: bool,
    filters: &[FilterInstance],
) -> Option<String> {
    blocker(processors_or_routes, filters).or_else(|| {
        filters
            .iter()
            .find(|f| f.plugin.fork().is_none())
            .map(|f| format!("filter {} keeps state across tags", f.name))
    })
}

/// [`unshardable`]'s reasons that need no fork.
fn blocker(processors_or_routes: bool, filters: &[FilterInstance]) -> Option<String> {
    if processors_or_routes {
        return Some("an input has processors or routes".into());
    }
    filters
        .iter()
        .find(|f| f.condition.is_some())
        .map(|f| format!("filter {} has a condition", f.name))
}

/// `n` more instances of the filters, or why the stage cannot be sharded.
fn fork_stage(
    processors_or_routes: bool,
    filters: &[FilterInstance],
    n: usize,
) -> Result<Vec<Vec<FilterInstance>>, String> {
    // Whether each filter forks shows in the first round of forks.
    if let Some(why) = blocker(processors_or_routes, filters) {
        return Err(why);
    }
    let mut sets = Vec::with_capacity(n);
    for _ in 0..n {
        let mut set = Vec::with_capacity(filters.len());
        for f in filters {
            let Some(plugin) = f.plugin.fork() else {
                return Err(format!("filter {} keeps state across tags", f.name));
            };
            set.push(FilterInstance {
                name: f.name.clone(),
                matcher: f.matcher.clone(),
                condition: None,
                plugin,
                metrics: Arc::clone(&f.metrics),
            });
        }
        sets.push(set);
    }
    Ok(sets)
}

/// Which shard a tag's chunks go to: SipHash with fixed keys (std's `DefaultHasher`), once per
/// chunk. A plain FNV-1a modulo the shard count was tried first: its low bits depend only on
/// the low bits of each byte, so container tags whose pod name and container id repeat the same
/// digits all landed on one shard of two.
fn shard_of(tag: &str, n: usize) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    tag.hash(&mut h);
    (h.finish() % n as u64) as usize
}

/// One task of the filter stage: every chunk it is given goes through the processors, routes
/// and filters, then to the outputs.
async fn shard_task(
    mut rx: mpsc::Receiver<Inbound>,
    mut inputs: Vec<InputStage>,
    mut filters: Vec<FilterInstance>,
    routes: Vec<Route>,
) {
    let mut tick = tokio::time::interval(crate::plugin::FILTER_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut router = Router {
        inputs: &mut inputs,
        filters: &mut filters,
        routes: &routes,
        seq: 0,
        gathered: Vec::new(),
    };
    loop {
        tokio::select! {
            got = rx.recv() => match got {
                Some(inbound) => {
                    router
                        .route(inbound.chunk, inbound.store, inbound.input, Start::Processors(0))
                        .await
                }
                None => break,
            },
            _ = tick.tick() => {
                router.flush_filters(false).await;
                router.store_all().await;
            }
        }
    }
    router.flush_filters(true).await;
    router.store_all().await;
}

/// The router's state: filters in order, the outputs' queues, and the chunk counter that
/// numbers chunks for filters that hold records ([`Carrier::seq`]).
struct Router<'a> {
    inputs: &'a mut [InputStage],
    filters: &'a mut [FilterInstance],
    routes: &'a [Route],
    seq: u64,
    /// Filesystem chunks being gathered, by input (stream), tag and outputs, in arrival
    /// order.
    gathered: Vec<(Tag, Gathered)>,
}

/// Runs one filter or processor on a chunk (with the delivery machinery for filters that hold
/// records) and counts what it did. Returns the records' `Mem_Buf_Limit` size after it,
/// measured in the same walk as the byte metrics' size, for [`Chunk::recharge_measured`].
async fn run_unit(
    f: &mut FilterInstance,
    chunk: &mut Chunk,
    store: Option<&Arc<InputStore>>,
    seq: u64,
) -> usize {
    let before = chunk.records.len() as u64;
    let before_bytes = chunk.wire_size;
    let carried = {
        let mut carrier = Carrier::new(chunk.delivery.as_ref(), seq)
            .with_store(store)
            .with_origin(chunk.origin)
            .with_charge(chunk.charge.as_ref());
        crate::processors::apply(f, &chunk.tag, &mut chunk.records, &mut carrier).await;
        carrier.into_carried()
    };
    chunk.carry(carried.into_iter().map(|h| h.held).collect());
    let after = chunk.records.len() as u64;
    let (mem_now, after_bytes) = mem_and_wire_size(&chunk.records, chunk.headers);
    chunk.wire_size = after_bytes;
    // As Fluent Bit counts: a filter that changed nothing (FLB_FILTER_NOTOUCH) adds no bytes;
    // one that did adds the size of what it put out, and what it dropped.
    if after != before || after_bytes != before_bytes {
        PluginMetrics::add(&f.metrics.bytes, after_bytes as u64);
        if after != before {
            PluginMetrics::add(
                &f.metrics.dropped_bytes,
                before_bytes.saturating_sub(after_bytes) as u64,
            );
        }
    }
    crate::processors::count(&f.metrics, before, after);
    mem_now
}

/// What `f` held from before the chunk it just filtered and lets go now
/// ([`crate::plugin::Filter::take_ready`]), counted as added, as those records were when they
/// went on inside that chunk.
fn take_ready(f: &mut FilterInstance) -> Vec<crate::plugin::Released> {
    let ready = f.plugin.take_ready();
    let added: usize = ready.iter().map(|r| r.records.len()).sum();
    PluginMetrics::add(&f.metrics.retried_records, added as u64);
    ready
}

impl Router<'_> {
    /// Sends records filters held back through the filters after them, then to the outputs.
    /// They carry the delivery shares of the chunks they came from, so those chunks settle
    /// only when these records do (or, from a filesystem input, once they are on disk).
    async fn flush_filters(&mut self, all: bool) {
        for k in 0..self.inputs.len() {
            for j in 0..self.inputs[k].processors.len() {
                let due = self.inputs[k].processors[j].plugin.flush_due(all);
                for released in due {
                    let start = if released.restart {
                        Start::Filters(0)
                    } else {
                        Start::Processors(j + 1)
                    };
                    self.release(released, k, start).await;
                }
            }
        }
        for i in 0..self.filters.len() {
            let due = self.filters[i].plugin.flush_due(all);
            for released in due {
                let start = Start::Filters(if released.restart { 0 } else { i + 1 });
                self.release(released, usize::MAX, start).await;
            }
        }
    }

    /// Sends records a filter or processor let go of through the stages after it.
    async fn release(&mut self, released: crate::plugin::Released, input: usize, start: Start) {
        let store = released.held.iter().find_map(|h| h.store.clone());
        let mut chunk = Chunk::new(released.tag, released.records);
        chunk.carry(released.held.into_iter().map(|h| h.held).collect());
        if let Some(c) = released.charge {
            // What the records grew by while held (a filter enriched them) counts as it would
            // have in their own chunk.
            if chunk.size > c.bytes {
                c.charge.grow(chunk.size - c.bytes);
            }
            chunk.charge = Some(c.charge);
        }
        if chunk.records.is_empty() {
            // Nothing to send: the shares settle as the router's own does.
            chunk.mark(DeliveryStatus::Delivered);
            return;
        }
        self.route(chunk, store, input, start).await;
    }

    /// Runs the stages from `start` on: `input`'s processors and routes (see the module
    /// docs), then the filters, then stores the chunk (filesystem inputs) and fans it out.
    async fn route(
        &mut self,
        mut chunk: Chunk,
        store: Option<Arc<InputStore>>,
        input: usize,
        start: Start,
    ) {
        let first = match start {
            Start::Filters(i) => i,
            Start::Processors(j) => {
                let Some(stage) = self.inputs.get_mut(input) else {
                    return self.filter_and_send(chunk, store, 0, Targets::Tag).await;
                };
                let n = stage.processors.len();
                if j < n {
                    self.seq += 1;
                    let seq = self.seq;
                    let mut measured = None;
                    for k in j..n {
                        if chunk.records.is_empty() {
                            break;
                        }
                        let p = &mut self.inputs[input].processors[k];
                        measured = Some(run_unit(p, &mut chunk, store.as_ref(), seq).await);
                        // As after a filter (see `filter_and_send`).
                        for released in take_ready(p) {
                            Box::pin(self.release(released, input, Start::Processors(k + 1))).await;
                        }
                    }
                    match measured {
                        Some(now) => chunk.recharge_measured(now),
                        None => chunk.recharge(),
                    }
                }
                let Some(stage) = self.inputs.get(input) else {
                    return self.filter_and_send(chunk, store, 0, Targets::Tag).await;
                };
                let Some(routes) = &stage.routes else {
                    return self.filter_and_send(chunk, store, 0, Targets::Tag).await;
                };
                if !routes.splits() {
                    let direct = routes.direct.clone();
                    return self
                        .filter_and_send(chunk, store, 0, Targets::TagAnd(direct))
                        .await;
                }
                // Each route's records go on as a chunk of their own, tagged with the route's
                // name, holding a share of this chunk's delivery.
                let records = if routes.direct.is_empty() {
                    std::mem::take(&mut chunk.records)
                } else {
                    chunk.records.clone()
                };
                let mut payloads = Vec::new();
                for (i, recs) in routes.split(records) {
                    let Some(route) = routes.route(i) else {
                        continue;
                    };
                    let mut c = Chunk::new(Arc::clone(&route.tag), recs);
                    c.charge = chunk.charge.clone();
                    c.origin = chunk.origin;
                    if let Some(d) = &chunk.delivery {
                        c.carry(vec![d.hold()]);
                    }
                    payloads.push((c, route.outputs.clone()));
                }
                let direct = routes.direct.clone();
                for (c, outputs) in payloads {
                    self.filter_and_send(c, store.clone(), 0, Targets::Fixed(outputs))
                        .await;
                }
                if direct.is_empty() {
                    // The records left with the routes; this chunk only settles its share.
                    chunk.records.clear();
                    return send(chunk, &[]);
                }
                return self
                    .filter_and_send(chunk, store, 0, Targets::Fixed(direct))
                    .await;
            }
        };
        self.filter_and_send(chunk, store, first, Targets::Tag)
            .await;
    }

    /// The outputs a chunk under `tag` goes to.
    fn targets(&self, tag: &str, targets: &Targets) -> Vec<usize> {
        let matches = |i: &usize| {
            self.routes
                .get(*i)
                .is_some_and(|(m, _)| m.as_ref().is_some_and(|m| m.matches(tag)))
        };
        match targets {
            Targets::Tag => (0..self.routes.len()).filter(matches).collect(),
            Targets::Fixed(v) => v.clone(),
            Targets::TagAnd(v) => v.iter().copied().filter(matches).collect(),
        }
    }

    /// Applies the filters from `first` on, then stores the chunk (filesystem inputs) and fans
    /// it out to `targets`.
    async fn filter_and_send(
        &mut self,
        mut chunk: Chunk,
        store: Option<Arc<InputStore>>,
        first: usize,
        targets: Targets,
    ) {
        self.seq += 1;
        let seq = self.seq;
        // The size the last filter's run measured: nothing changes the records after it.
        let mut measured = None;
        for i in first..self.filters.len() {
            if chunk.records.is_empty() {
                break;
            }
            let f = &mut self.filters[i];
            if !f.matcher.as_ref().is_some_and(|m| m.matches(&chunk.tag)) {
                continue;
            }
            measured = Some(run_unit(f, &mut chunk, store.as_ref(), seq).await);
            // Records the filter held from before this chunk go on first, in their own chunks.
            for released in take_ready(f) {
                Box::pin(self.release(released, usize::MAX, Start::Filters(i + 1))).await;
            }
        }
        if let Some(now) = measured {
            chunk.recharge_measured(now);
        }
        let targets = if chunk.records.is_empty() {
            Vec::new()
        } else {
            self.targets(&chunk.tag, &targets)
        };
        if let (Some(store), false) = (store, targets.is_empty()) {
            self.gather(chunk, store, targets).await;
            return;
        }
        let senders: Vec<&OutputTx> = targets
            .iter()
            .filter_map(|i| self.routes.get(*i).map(|(_, tx)| tx))
            .collect();
        send(chunk, &senders);
    }

    /// Adds a filtered chunk of a filesystem input to what is gathered for its input and tag;
    /// writes that at once when it is large or the input is paused.
    async fn gather(&mut self, mut chunk: Chunk, store: Arc<InputStore>, targets: Vec<usize>) {
        let pressing = chunk.pressing();
        // The chunk's delivery waits for the file (a share), not for the outputs.
        let held = chunk.delivery.as_ref().map(|d| d.hold());
        chunk.mark(DeliveryStatus::Delivered);
        let records = std::mem::take(&mut chunk.records);
        let i = match self.gathered.iter().position(|(t, g)| {
            *t == chunk.tag && Arc::ptr_eq(&g.store, &store) && g.targets == targets
        }) {
            Some(i) => i,
            None => {
                self.gathered.push((
                    Arc::clone(&chunk.tag),
                    Gathered {
                        store,
                        records: Vec::new(),
                        size: 0,
                        held: Vec::new(),
                        targets,
                        wire_size: 0,
                        source: chunk.source.clone(),
                        born: None,
                    },
                ));
                self.gathered.len() - 1
            }
        };
        let g = &mut self.gathered[i].1;
        if g.records.is_empty() {
            g.records = records;
        } else {
            g.records.extend(records);
        }
        g.size += chunk.size;
        g.wire_size += chunk.wire_size;
        g.born.get_or_insert(chunk.born);
        g.held.extend(held);
        if pressing || g.size >= STORE_AT_BYTES {
            let (tag, g) = self.gathered.remove(i);
            self.store(tag, g).await;
        }
    }

    /// Writes everything gathered.
    async fn store_all(&mut self) {
        for (tag, g) in std::mem::take(&mut self.gathered) {
            self.store(tag, g).await;
        }
    }

    /// Writes gathered records as one chunk file and hands it to the outputs; their inputs'
    /// chunks are then delivered (stored). If it cannot be written, the records go on in
    /// memory and their inputs wait for the outputs.
    async fn store(&mut self, tag: Tag, g: Gathered) {
        let meta = Meta {
            wire_size: g.wire_size,
            source: g.source.clone(),
            born: g.born.unwrap_or_else(std::time::Instant::now),
        };
        let Gathered {
            store,
            records,
            size,
            held,
            targets,
            ..
        } = g;
        let targets: Vec<&OutputTx> = targets
            .iter()
            .filter_map(|i| self.routes.get(*i).map(|(_, tx)| tx))
            .collect();
        match persist(&tag, records, size, meta, &store).await {
            Ok(stored) => {
                stored.expect(targets.len());
                for tx in &targets {
                    tx.send(stored.clone());
                }
                // The outputs' shares are on the file's tracker; the router's share of it is
                // done, and the inputs may move on.
                stored.settle_router();
                for h in held {
                    h.settle(DeliveryStatus::Delivered);
                }
            }
            Err((e, records)) => {
                tracing::error!(input = %store.stream.name(), %tag, records = records.len(), error = %e,
                    "cannot write a chunk to storage.path; it is kept in memory and its input waits for its delivery");
                let mut chunk = Chunk::new(tag, records);
                chunk.carry(held);
                send(chunk, &targets);
            }
        }
    }
}

/// Chunks are packed on their way to the outputs ([`Chunk::pack`]) when one of those outputs
/// has this much sent to it that it has not taken in: four full batches (`FLUSH_AT_BYTES`), or
/// one while its workers are all busy ([`crate::output::Backlog::falls_behind`]). An output
/// whose destination is down takes chunks in while its retries wait, and packs what it queues
/// past this much itself. An output that keeps up takes each chunk at once and flushes it
/// within a batch, and packing would only cost CPU.
pub const PACK_AT_BYTES: usize = 4 * crate::output::FLUSH_AT_BYTES;

/// Hands a chunk in memory to the outputs: each owes its outcome on the chunk's delivery, and
/// the router's own share is settled (no route, or all records filtered out, is delivered:
/// Fluent Bit deletes data no output matches).
fn send(mut chunk: Chunk, targets: &[&OutputTx]) {
    if let Some(d) = &chunk.delivery {
        d.expect(targets.len());
    }
    chunk.mark(DeliveryStatus::Delivered);
    if targets.is_empty() {
        return;
    }
    if targets.iter().any(|t| t.backlog().falls_behind()) {
        chunk.pack();
    }
    let routed = Routed::memory(Arc::new(chunk));
    for tx in targets {
        tx.send(routed.clone());
    }
}

/// What a gathered chunk counts for the metrics.
struct Meta {
    wire_size: usize,
    source: Option<Arc<str>>,
    born: std::time::Instant,
}

/// Writes records as a chunk file of their input's stream; the chunk the outputs get holds
/// them, with the file's delivery. On failure the records come back.
async fn persist(
    tag: &Tag,
    records: Vec<Record>,
    size: usize,
    meta: Meta,
    store: &Arc<InputStore>,
) -> Result<Routed, (std::io::Error, Vec<Record>)> {
    let stream = Arc::clone(&store.stream);
    let bytes = stream.encode(tag, &records);
    let t = Arc::clone(tag);
    let written = match tokio::task::spawn_blocking(move || stream.write_bytes(&t, bytes)).await {
        Ok(Ok(w)) => w,
        Ok(Err(e)) => return Err((e, records)),
        Err(e) => return Err((std::io::Error::other(e), records)),
    };
    written.set_records(records.len() as u64);
    let up = UpGuard::new(
        Arc::clone(&written.storage().gauges),
        written.gauges().cloned(),
    );
    let out = Chunk {
        tag: Arc::clone(tag),
        records,
        packed: None,
        size,
        wire_size: meta.wire_size,
        headers: logferry_core::msgpack::MapHeaders::Compact,
        source: meta.source,
        origin: None,
        born: meta.born,
        delivery: Some(Arc::clone(&written.delivery)),
        charge: Some(Arc::new(up)),
    };
    Ok(Routed::stored(
        Some(Arc::new(out)),
        written,
        store.pause.clone(),
    ))
}

/// Counts a filesystem chunk as "up" (its records in memory) while the chunk lives: it is the
/// chunk's [`MemCharge`], dropped with it. Filesystem chunks are not charged to
/// `Mem_Buf_Limit`: their inputs were released when they were written.
#[derive(Debug)]
pub(crate) struct UpGuard {
    storage: Arc<StorageGauges>,
    input: Option<InputGauges>,
}

impl UpGuard {
    pub(crate) fn new(storage: Arc<StorageGauges>, input: Option<InputGauges>) -> Self {
        storage.fs_chunks_up.fetch_add(1, Ordering::Relaxed);
        if let Some(g) = &input {
            g.up.fetch_add(1, Ordering::Relaxed);
            crate::storage::dec(&g.down, 1);
        }
        UpGuard { storage, input }
    }
}

impl Drop for UpGuard {
    fn drop(&mut self) {
        crate::storage::dec(&self.storage.fs_chunks_up, 1);
        if let Some(g) = &self.input {
            crate::storage::dec(&g.up, 1);
            g.down.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl MemCharge for UpGuard {
    fn grow(&self, _n: usize) {}

    fn pressing(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::Filter;
    use async_trait::async_trait;
    use logferry_core::Value;

    struct Keeps;
    #[async_trait]
    impl Filter for Keeps {
        async fn filter(&mut self, _: &str, _: &mut Vec<Record>) {}
    }

    struct Forks;
    #[async_trait]
    impl Filter for Forks {
        async fn filter(&mut self, _: &str, _: &mut Vec<Record>) {}
        fn fork(&self) -> Option<Box<dyn Filter>> {
            Some(Box::new(Forks))
        }
    }

    fn instance(name: &str, plugin: Box<dyn Filter>) -> FilterInstance {
        FilterInstance {
            name: name.into(),
            matcher: None,
            condition: None,
            plugin,
            metrics: PluginMetrics::new(name),
        }
    }

    /// Records wait for the outputs packed (one buffer, shared maps kept shared) once an
    /// output has `PACK_AT_BYTES` it has not taken in, with the charge they had unpacked, and
    /// each output's flush gets them back as they were.
    #[tokio::test]
    async fn chunks_for_an_output_that_falls_behind_go_packed_and_keep_their_charge() {
        let pod = Arc::new(logferry_core::Map::from_iter([(
            logferry_core::Str::from("pod_name"),
            Value::from("web-1"),
        )]));
        let records: Vec<Record> = (0..50)
            .map(|i| {
                let mut body = logferry_core::Map::with_capacity(3);
                body.push("log", format!("line {i} {}", "x".repeat(i)));
                body.push("n", Value::Int(i as i64 - 10));
                body.push("kubernetes", Value::SharedMap(Arc::clone(&pod)));
                Record::new(logferry_core::EventTime(i as i64), body)
            })
            .collect();
        let (a_tx, mut a_rx) = crate::output::output_channel();
        let (b_tx, mut b_rx) = crate::output::output_channel();
        // An output that has taken in everything sent to it: not packed. It says it holds
        // a full batch now (the chunk's charge stands for its size).
        let mut chunk = Chunk::new(Arc::from("t"), records.clone());
        chunk.size = PACK_AT_BYTES;
        send(chunk, &[&a_tx]);
        assert_eq!(a_tx.backlog().bytes(), PACK_AT_BYTES);

        let (status_tx, status_rx) = std::sync::mpsc::channel();
        let delivery = logferry_core::Delivery::new();
        delivery.on_done(Box::new(move |s| {
            let _ = status_tx.send(s);
        }));
        let mut chunk = Chunk::new(Arc::from("t"), records.clone());
        chunk.delivery = Some(delivery);
        let size = chunk.size;
        send(chunk, &[&a_tx, &b_tx]);
        let first = a_rx.recv().await.unwrap().chunk.unwrap();
        assert!(first.packed.is_none() && first.records == records);
        let (a, b) = (a_rx.recv().await.unwrap(), b_rx.recv().await.unwrap());
        assert_eq!((a_tx.backlog().bytes(), b_tx.backlog().bytes()), (0, 0));
        let queued = a.chunk.clone().unwrap();
        assert!(
            Arc::ptr_eq(&queued, b.chunk.as_ref().unwrap()),
            "one packed copy for both"
        );
        assert!(queued.records.is_empty());
        assert_eq!(queued.packed.as_ref().map(|p| p.len()), Some(50));
        assert!(queued.packed.as_ref().unwrap().mem_size() * 2 < size);
        assert_eq!((queued.len(), queued.size, a.bytes), (50, size, size));
        drop(queued);
        for routed in [a, b] {
            let view = routed.chunk.as_ref().unwrap().unpacked().unwrap();
            assert_eq!(view.records, records);
            assert!(view
                .records
                .iter()
                .all(|r| matches!(r.body.get("kubernetes"),
                Some(Value::SharedMap(m)) if Arc::ptr_eq(m, &pod))));
            assert!(
                status_rx.try_recv().is_err(),
                "settled before both outputs were done"
            );
            view.mark(DeliveryStatus::Delivered);
            drop(view);
            drop(routed);
        }
        assert_eq!(status_rx.try_recv(), Ok(DeliveryStatus::Delivered));

        // Taken in again: the next chunk goes unpacked.
        send(Chunk::new(Arc::from("t"), records.clone()), &[&a_tx]);
        assert!(a_rx.recv().await.unwrap().chunk.unwrap().packed.is_none());
    }

    #[test]
    fn the_stage_forks_only_when_every_filter_does_and_no_input_has_processors() {
        let filters = vec![
            instance("a.0", Box::new(Forks)),
            instance("b.0", Box::new(Forks)),
        ];
        let sets = fork_stage(false, &filters, 3).unwrap();
        assert_eq!(sets.len(), 3);
        assert!(sets.iter().all(|s| s.len() == 2 && s[1].name == "b.0"));
        // The forks count into the same metrics.
        assert!(Arc::ptr_eq(&sets[2][0].metrics, &filters[0].metrics));

        let filters = vec![
            instance("a.0", Box::new(Forks)),
            instance("throttle.0", Box::new(Keeps)),
        ];
        let why = fork_stage(false, &filters, 1).err().unwrap();
        assert!(why.contains("throttle.0"), "{why}");

        let filters = vec![instance("a.0", Box::new(Forks))];
        assert_eq!(unshardable(false, &filters), None);
        assert!(unshardable(true, &filters).is_some_and(|w| w.contains("processors")));
        assert!(fork_stage(true, &filters, 1).is_err());
    }

    /// The container log files of a node spread over the shards: each gets between half and
    /// one and a half times its share, also when the pod name and the container id repeat the
    /// same digits (which put all of them on one shard of two with FNV-1a modulo 2).
    #[test]
    fn container_tags_spread_over_the_shards() {
        let node: Vec<String> = (0..500)
            .map(|i| format!("kube.var.log.containers.pod-{i}_default_app-{i:064x}.log"))
            .collect();
        let small: Vec<String> = (0..20)
            .map(|i| format!("kube.tmp.x.c.churn-{i}_default_nginx-{i:064x}.log"))
            .collect();
        for (tags, counts) in [(&node, &[2, 3, 4, 8, 16][..]), (&small, &[2][..])] {
            for &n in counts {
                let mut count = vec![0usize; n];
                for t in tags.iter() {
                    count[shard_of(t, n)] += 1;
                }
                let share = tags.len() / n;
                assert!(
                    count.iter().all(|&c| c * 2 >= share && c * 2 <= share * 3),
                    "{} tags on {n} shards: {count:?}",
                    tags.len()
                );
            }
        }
    }
}
