//! The handle an input emits records through: it charges the input's `Mem_Buf_Limit`, wires the
//! chunk's delivery tracking back to the input, and hands the chunk to the router.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use logferry_core::chunk::{DeliveryCallback, DeliveryStatus};
use logferry_core::msgpack::MapHeaders;
use logferry_core::{Chunk, Delivery, MemCharge, Record, Tag};

use crate::budget::MemBudget;
use crate::metrics::PluginMetrics;
use crate::plugin::PluginError;
use crate::router::{Inbound, InputStore, RouterTx};
use crate::storage::StorageGauges;

/// Emits chunks for one input instance. Cheap to clone.
#[derive(Clone)]
pub struct Emitter {
    tx: RouterTx,
    /// Where its chunks are written, for a `storage.type filesystem` input.
    store: Option<Arc<InputStore>>,
    /// `fluentbit_storage_mem_chunks`, for memory inputs when there is a store.
    mem_chunks: Option<Arc<StorageGauges>>,
    budget: Arc<MemBudget>,
    metrics: Arc<PluginMetrics>,
    /// Whether "paused" was logged and not yet "resume" (one line each way per pause).
    paused: Arc<std::sync::atomic::AtomicBool>,
    /// The input's index, so the router runs its processors and routes.
    input: usize,
    /// The instance name its chunks carry, for the per-route metrics.
    source: Arc<str>,
    /// The input's plugin name, which its chunks carry ([`Chunk::origin`]).
    origin: Option<&'static str>,
    /// How the Fluent Bit plugin of the same name writes a record's maps (byte metrics).
    headers: MapHeaders,
    /// `fluentbit_input_storage_chunks{,_up}` of a memory input (`storage.metrics On`): its
    /// chunks not yet delivered, all of them up.
    mem_gauges: Option<crate::storage::InputGauges>,
}

impl Emitter {
    pub(crate) fn new(
        tx: RouterTx,
        budget: Arc<MemBudget>,
        metrics: Arc<PluginMetrics>,
        store: Option<Arc<InputStore>>,
        mem_chunks: Option<Arc<StorageGauges>>,
        input: usize,
    ) -> Self {
        metrics
            .buffer_limit
            .store(budget.limit() as u64, Ordering::Relaxed);
        Emitter {
            tx,
            store,
            mem_chunks,
            budget,
            source: Arc::from(metrics.name.as_str()),
            origin: None,
            metrics,
            paused: Arc::default(),
            input,
            headers: MapHeaders::Compact,
            mem_gauges: None,
        }
    }

    /// Marks this input's chunks as made by `plugin` ([`Chunk::origin`]).
    pub(crate) fn with_origin(mut self, plugin: &'static str) -> Self {
        self.origin = Some(plugin);
        self
    }

    /// Counts this memory input's chunks in its `fluentbit_input_storage_chunks` gauges.
    pub(crate) fn with_mem_gauges(mut self, gauges: crate::storage::InputGauges) -> Self {
        self.mem_gauges = Some(gauges);
        self
    }

    /// Counts this input's bytes as Fluent Bit's plugin of the same name encodes its records
    /// (`tail` builds them field by field: [`MapHeaders::Dynamic`]), so that
    /// `fluentbit_input_bytes_total` reads the same on both agents.
    pub fn set_map_headers(&mut self, headers: MapHeaders) {
        self.headers = headers;
    }

    /// Logs and counts a pause, once per pause (Fluent Bit's "paused (mem buf overlimit)").
    fn note_paused(&self) {
        if !self.paused.swap(true, Ordering::AcqRel) {
            tracing::warn!(input = %self.metrics.name, "paused (mem buf overlimit)");
            PluginMetrics::add(&self.metrics.paused, 1);
        }
    }

    fn note_resumed(&self) {
        if self.paused.swap(false, Ordering::AcqRel) {
            tracing::info!(input = %self.metrics.name, "resume (mem buf overlimit)");
        }
    }

    /// Sends `records` under `tag`. Waits first while the input is over its `Mem_Buf_Limit`
    /// (the input is paused). `read_bytes` is what the input read to make them
    /// (`logferry_input_read_bytes_total`; `fluentbit_input_bytes_total` counts the records'
    /// size in Fluent Bit's event encoding, as Fluent Bit does). `ack`, if given, runs once with the chunk's final
    /// [`DeliveryStatus`] after every output is done with it.
    ///
    /// # Cancel safety
    /// Not cancel-safe once the budget is taken: do not race it in `select!`.
    pub async fn emit(
        &self,
        tag: Tag,
        records: Vec<Record>,
        read_bytes: usize,
        ack: Option<DeliveryCallback>,
    ) -> Result<(), PluginError> {
        if records.is_empty() {
            if let Some(ack) = ack {
                ack(DeliveryStatus::Delivered);
            }
            return Ok(());
        }
        // Both sizes in one walk: the budget's, and the byte metrics' (further down).
        let (size, wire) = logferry_core::chunk::mem_and_wire_size(&records, self.headers);
        if self.budget.is_full() {
            self.note_paused();
        }
        self.budget.acquire(size).await;
        self.note_resumed();
        let charge = Arc::new(Charge {
            budget: Arc::clone(&self.budget),
            metrics: Arc::clone(&self.metrics),
            charged: AtomicUsize::new(size),
        });
        charge.store_gauge();
        let delivery = Delivery::new();
        let held = Arc::clone(&charge);
        delivery.on_done(Box::new(move |_| held.release()));
        if let Some(g) = &self.mem_chunks {
            g.mem_chunks.fetch_add(1, Ordering::Relaxed);
            let g = Arc::clone(g);
            delivery.on_done(Box::new(move |_| crate::storage::dec(&g.mem_chunks, 1)));
        }
        if let Some(g) = &self.mem_gauges {
            g.chunks.fetch_add(1, Ordering::Relaxed);
            g.up.fetch_add(1, Ordering::Relaxed);
            let g = g.clone();
            delivery.on_done(Box::new(move |_| {
                crate::storage::dec(&g.chunks, 1);
                crate::storage::dec(&g.up, 1);
            }));
        }
        if let Some(ack) = ack {
            delivery.on_done(ack);
        }
        PluginMetrics::add(&self.metrics.records, records.len() as u64);
        PluginMetrics::add(&self.metrics.bytes, wire as u64);
        PluginMetrics::add(&self.metrics.read_bytes, read_bytes as u64);
        let chunk = Chunk {
            tag,
            records,
            packed: None,
            size,
            wire_size: wire,
            headers: self.headers,
            source: Some(Arc::clone(&self.source)),
            origin: self.origin,
            born: std::time::Instant::now(),
            delivery: Some(delivery),
            charge: Some(charge),
        };
        let inbound = Inbound {
            chunk,
            store: self.store.clone(),
            input: self.input,
        };
        self.tx.send(inbound).await.map_err(|_| PluginError::Closed)
    }

    /// Waits until the input is under its `Mem_Buf_Limit`, so that the next [`Emitter::emit`]
    /// does not pause. An input that has other work to do while paused (tail: finding new
    /// files, following rotations) races this against its timers instead of blocking in `emit`.
    ///
    /// # Cancel safety
    /// Cancel-safe: it takes nothing.
    pub async fn ready(&self) {
        if self.budget.is_full() {
            self.note_paused();
            self.budget.wait_room().await;
        }
    }

    /// Whether the input is over its `Mem_Buf_Limit` right now.
    pub fn is_paused(&self) -> bool {
        self.budget.is_full()
    }

    /// Bytes this input holds that are not yet delivered.
    pub fn buffered(&self) -> usize {
        self.budget.used()
    }
}

/// One chunk's share of its input's budget: what it was charged at emit plus any growth after
/// filters, all given back when its delivery settles.
struct Charge {
    budget: Arc<MemBudget>,
    metrics: Arc<PluginMetrics>,
    charged: AtomicUsize,
}

impl Charge {
    fn release(&self) {
        self.budget.release(self.charged.swap(0, Ordering::AcqRel));
        self.store_gauge();
    }

    fn store_gauge(&self) {
        self.metrics
            .buffer_bytes
            .store(self.budget.used() as u64, Ordering::Relaxed);
    }
}

impl MemCharge for Charge {
    fn grow(&self, n: usize) {
        self.charged.fetch_add(n, Ordering::AcqRel);
        self.budget.force(n);
        self.store_gauge();
    }

    fn pressing(&self) -> bool {
        self.budget.is_full()
    }

    fn limit(&self) -> Option<usize> {
        Some(self.budget.limit())
    }
}
