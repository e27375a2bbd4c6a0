//! The plugin traits and the registry that maps Fluent Bit plugin names to constructors.
//!
//! These live here rather than in core because they are async and hand out the runtime's
//! channels (`Emitter`) and cancellation; core stays runtime-free.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use logferry_core::chunk::DeliveryCallback;
use logferry_core::config::{ConfigError, Entry, OptSpec, Section};
use logferry_core::{Chunk, Held, Record, Tag};
use tokio_util::sync::CancellationToken;

use crate::emitter::Emitter;
use crate::metrics::PluginMetrics;
use crate::router::InputStore;

/// An error a plugin hits while running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PluginError {
    /// I/O failed; `context` says on what.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The engine is shutting down and no longer takes records.
    #[error("the engine is shutting down")]
    Closed,
    /// Anything else, already phrased for the log.
    #[error("{0}")]
    Other(String),
}

/// How an input ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputExit {
    /// It has nothing more to produce; the engine keeps running while other inputs do.
    Finished,
    /// It asks the whole agent to stop, as Fluent Bit's `stdin` at end of input and `tail`
    /// with `Exit_On_Eof` do.
    ExitEngine,
}

/// What an input gets to do its work.
pub struct InputContext {
    /// The instance name (`dummy.0`, or its `Alias`).
    pub name: String,
    /// The `Tag` as configured (tail expands `*` itself); defaults to the instance name.
    pub tag: Tag,
    /// Where records go.
    pub emitter: Emitter,
    /// Fires when the agent is stopping; an input returns soon after.
    pub shutdown: CancellationToken,
}

/// A source of records. `run` owns the input until it returns.
#[async_trait]
pub trait Input: Send + 'static {
    /// Produces records until there is nothing more to read or `ctx.shutdown` fires.
    async fn run(self: Box<Self>, ctx: InputContext) -> Result<InputExit, PluginError>;
}

/// A step that changes, drops or adds records in place. Filters never fail: a record they
/// cannot handle passes through unchanged.
#[async_trait]
pub trait Filter: Send + 'static {
    /// Filters the records of one chunk whose tag matched this filter.
    async fn filter(&mut self, tag: &str, records: &mut Vec<Record>);

    /// [`Filter::filter`] for filters that hold records back past the chunk they came in
    /// (multiline): `carrier` hands out shares of the chunk's delivery to keep with held
    /// records, and takes back the shares of earlier chunks whose held records leave with this
    /// one, so that no input is told its records were delivered while a filter still holds
    /// them.
    async fn filter_carried(
        &mut self,
        tag: &str,
        records: &mut Vec<Record>,
        _carrier: &mut Carrier<'_>,
    ) {
        self.filter(tag, records).await;
    }

    /// Records this filter held back (a multiline message waiting for its next line) that are
    /// due now; `all` at shutdown. The router calls it every [`FILTER_TICK`] and sends what it
    /// returns through the filters after this one, then to the outputs.
    fn flush_due(&mut self, _all: bool) -> Vec<Released> {
        Vec::new()
    }

    /// Records held back before the chunk just filtered that became ready with it (the
    /// kubernetes filter's records that waited for their pod's first lookup). The router takes
    /// them right after each chunk and sends them on, each as its own chunk, before that chunk
    /// goes on: they keep their order, and no flush gets one chunk as large as everything that
    /// waited. What is not taken here must come back from [`Filter::flush_due`].
    fn take_ready(&mut self) -> Vec<Released> {
        Vec::new()
    }

    /// Another instance of this filter for another shard of the filter stage (see
    /// [`crate::router`]): the router sends every chunk of one tag through the same shard, so a
    /// filter may fork when what it keeps between chunks is per tag, or shared between its
    /// instances. `None` (the default) for a filter whose state spans tags (a rate limit, a Lua
    /// script's globals, re-tagged records): then the whole filter stage runs on one task.
    fn fork(&self) -> Option<Box<dyn Filter>> {
        None
    }
}

/// Records a filter held back and lets go of now, with the delivery shares of the chunks they
/// came from (settled with the outcome of the chunk that carries them on).
#[derive(Debug)]
pub struct Released {
    pub tag: Tag,
    pub records: Vec<Record>,
    pub held: Vec<Hold>,
    /// They enter the pipeline again at the first filter (records `rewrite_tag` re-emits under
    /// a new tag), instead of going on after the filter that held them.
    pub restart: bool,
    /// The `Mem_Buf_Limit` charge of the chunk they came from ([`Carrier::charge`]): what they
    /// grew by since is charged to it when they go on, as it would have been had they stayed
    /// in their chunk.
    pub charge: Option<HeldCharge>,
}

/// A chunk's `Mem_Buf_Limit` charge, kept with records of it a filter holds, and their size
/// ([`logferry_core::Record::mem_size`]) when it took them.
#[derive(Clone)]
pub struct HeldCharge {
    pub(crate) charge: Arc<dyn logferry_core::MemCharge>,
    pub(crate) bytes: usize,
}

impl std::fmt::Debug for HeldCharge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldCharge")
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

/// A share of a chunk's delivery kept with records a filter holds ([`Carrier::hold`]), and
/// where that chunk's input buffers (so records released later are stored the same way).
#[derive(Debug)]
pub struct Hold {
    pub(crate) held: Held,
    pub(crate) store: Option<Arc<InputStore>>,
}

impl Hold {
    /// Settles the share with the outcome of the records it stood for.
    pub fn settle(self, status: logferry_core::DeliveryStatus) {
        self.held.settle(status);
    }
}

/// The delivery of the chunk a filter is working on ([`Filter::filter_carried`]).
pub struct Carrier<'a> {
    delivery: Option<&'a Arc<logferry_core::Delivery>>,
    store: Option<&'a Arc<InputStore>>,
    seq: u64,
    carried: Vec<Hold>,
    origin: Option<&'static str>,
    charge: Option<&'a Arc<dyn logferry_core::MemCharge>>,
}

impl<'a> Carrier<'a> {
    /// The carrier of a chunk numbered `seq` (chunks are numbered in the order the router
    /// sees them).
    pub fn new(delivery: Option<&'a Arc<logferry_core::Delivery>>, seq: u64) -> Self {
        Carrier {
            delivery,
            store: None,
            seq,
            carried: Vec::new(),
            origin: None,
            charge: None,
        }
    }

    /// Gives the chunk's `Mem_Buf_Limit` charge ([`Carrier::charge`]).
    pub(crate) fn with_charge(
        mut self,
        charge: Option<&'a Arc<dyn logferry_core::MemCharge>>,
    ) -> Self {
        self.charge = charge;
        self
    }

    /// The `Mem_Buf_Limit` (bytes) of the input this chunk came from, which also bounds what a
    /// filter holds of its records (they stay charged to it); `None` when not known.
    pub fn input_limit(&self) -> Option<usize> {
        self.charge.and_then(|c| c.limit())
    }

    /// The chunk's charge, for records of it of `bytes` ([`logferry_core::Record::mem_size`])
    /// that a filter keeps and hands back later ([`Released::charge`]).
    pub fn charge(&self, bytes: usize) -> Option<HeldCharge> {
        self.charge.map(|c| HeldCharge {
            charge: Arc::clone(c),
            bytes,
        })
    }

    /// Names the plugin of the input the chunk came from ([`Carrier::origin`]).
    pub fn with_origin(mut self, origin: Option<&'static str>) -> Self {
        self.origin = origin;
        self
    }

    /// The plugin of the input this chunk came from (`tail`, `fluentbit_logs`), when an input
    /// made it and no filter before this one re-made it.
    pub fn origin(&self) -> Option<&'static str> {
        self.origin
    }

    pub(crate) fn with_store(mut self, store: Option<&'a Arc<InputStore>>) -> Self {
        self.store = store;
        self
    }

    /// This chunk's number: later chunks have larger ones.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// A share of this chunk's delivery, for records of it the filter keeps; `None` when the
    /// chunk is not tracked.
    pub fn hold(&self) -> Option<Hold> {
        self.delivery.map(|d| Hold {
            held: d.hold(),
            store: self.store.cloned(),
        })
    }

    /// Shares of earlier chunks whose held records leave with this chunk.
    pub fn carry(&mut self, held: impl IntoIterator<Item = Hold>) {
        self.carried.extend(held);
    }

    /// What [`Carrier::carry`] collected.
    pub fn into_carried(self) -> Vec<Hold> {
        self.carried
    }
}

/// How often the router asks filters for held-back records.
pub const FILTER_TICK: std::time::Duration = std::time::Duration::from_millis(250);

/// Records bound for one output under one tag, flushed together.
#[derive(Debug)]
pub struct Batch {
    pub tag: Tag,
    pub chunks: Vec<Arc<Chunk>>,
    /// What the output itself counted of this batch, across all attempts (see
    /// [`Batch::count_dropped`], [`Batch::count_delivered`]); the engine counts the rest.
    counted: BatchCounts,
    /// Copies of records the output rejected one by one ([`Batch::reject`]), kept for the
    /// dead-letter store when `storage.keep.rejected` is on (`None` when it is off).
    rejected: Option<std::sync::Mutex<Vec<Record>>>,
}

/// A batch's records in order, chunk by chunk, with packed chunks left packed ([`Batch::view`]).
/// Numbering runs over the whole batch, as [`Batch::records`] numbers them. A packed chunk is
/// unpacked only when one of its records is asked for by number ([`BatchRecords::get`]: a
/// record the destination refused), once.
pub struct BatchRecords<'a> {
    parts: Vec<Part<'a>>,
    starts: Vec<usize>,
    n: usize,
}

/// One chunk of a [`BatchRecords`].
pub enum Part<'a> {
    Records(&'a [Record]),
    /// Packed records, and their unpacked copy once one was asked for (`None` if they cannot
    /// be unpacked, which only a bug causes).
    Packed(
        &'a logferry_core::packed::PackedRecords,
        std::sync::OnceLock<Option<Vec<Record>>>,
    ),
}

impl<'a> BatchRecords<'a> {
    /// The chunks, each with the number of its first record.
    pub fn parts(&self) -> impl Iterator<Item = (usize, &Part<'a>)> {
        self.starts.iter().copied().zip(&self.parts)
    }

    /// Records in all.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Record `i`, unpacking its chunk if it is packed; `None` past the end or when a packed
    /// chunk cannot be unpacked.
    pub fn get(&self, i: usize) -> Option<&Record> {
        let k = self.starts.partition_point(|&s| s <= i).checked_sub(1)?;
        self.parts.get(k)?.records()?.get(i - self.starts[k])
    }
}

/// What reads a batch's records one by one, each either straight from its chunk's packed
/// bytes or as a record ([`BatchRecords::read`]).
pub trait ReadRecords {
    /// A packed chunk starts: what is numbered per chunk (key lists) starts afresh.
    fn start_packed(&mut self) {}
    /// Record `i`, read from packed bytes: its time, and its body's key list `keys`, whose
    /// values come next in `c` and must all be read. `at` is its chunk and its place there
    /// (to unpack it after all: [`Part::records`]). An error means damaged bytes.
    fn packed(
        &mut self,
        i: usize,
        time: logferry_core::EventTime,
        keys: usize,
        c: &mut logferry_core::packed::Cursor<'_>,
        at: (&Part<'_>, usize),
    ) -> Result<(), logferry_core::packed::UnpackError>;
    /// Record `i`, read as a record.
    fn record(&mut self, i: usize, r: &Record);
    /// Record `i` cannot be read: its chunk's packed bytes are damaged (only a bug gets
    /// here; it is logged already).
    fn lost(&mut self, i: usize);
}

impl BatchRecords<'_> {
    /// Hands every record to `to`, in order: packed chunks read straight from their bytes when
    /// `packed` (the reader needs no more of a record than one pass over it), unpacked into
    /// records otherwise. In a damaged packed chunk, the records before the damage stay read;
    /// the rest are [`ReadRecords::lost`], counted in the error logged.
    pub fn read(&self, packed: bool, to: &mut impl ReadRecords) {
        for (first, part) in self.parts() {
            match part {
                Part::Packed(p, _) if packed => {
                    let mut c = p.cursor();
                    to.start_packed();
                    let mut k = 0;
                    let failed = loop {
                        let (time, keys) = match c.next_record() {
                            Ok(Some(next)) => next,
                            Ok(None) => break c.finish().err(),
                            Err(e) => break Some(e),
                        };
                        if let Err(e) = to.packed(first + k, time, keys, &mut c, (part, k)) {
                            break Some(e);
                        }
                        k += 1;
                    };
                    if let Some(e) = failed {
                        // Only a bug gets here: the packed bytes never leave the process.
                        tracing::error!(records = p.len() - k.min(p.len()), error = %e,
                            "queued records cannot be read back; they are dropped");
                        (k..p.len()).for_each(|k| to.lost(first + k));
                    }
                }
                part => match part.records() {
                    Some(records) => {
                        for (k, r) in records.iter().enumerate() {
                            to.record(first + k, r);
                        }
                    }
                    None => {
                        let n = match part {
                            Part::Packed(p, _) => p.len(),
                            Part::Records(r) => r.len(),
                        };
                        (0..n).for_each(|k| to.lost(first + k));
                    }
                },
            }
        }
    }
}

impl Part<'_> {
    /// The records of this chunk, unpacked if it is packed (see [`BatchRecords::get`]).
    pub fn records(&self) -> Option<&[Record]> {
        match self {
            Part::Records(r) => Some(r),
            Part::Packed(p, once) => once
                .get_or_init(|| match p.unpack() {
                    Ok(r) => Some(r),
                    Err(e) => {
                        tracing::error!(records = p.len(), error = %e,
                            "queued records cannot be unpacked");
                        None
                    }
                })
                .as_deref(),
        }
    }
}

/// Records of one batch an output has already accounted for.
#[derive(Debug, Default)]
struct BatchCounts {
    dropped: AtomicU64,
    delivered: AtomicU64,
}

impl Batch {
    /// A batch of `chunks` under `tag`.
    pub fn new(tag: Tag, chunks: Vec<Arc<Chunk>>) -> Self {
        Batch {
            tag,
            chunks,
            counted: BatchCounts::default(),
            rejected: None,
        }
    }

    /// Keeps copies of the records [`Batch::reject`] is given, for the dead-letter store.
    pub fn keeping_rejected(mut self) -> Self {
        self.rejected = Some(std::sync::Mutex::new(Vec::new()));
        self
    }

    /// The destination refused these records one by one for a reason that retrying cannot
    /// fix (too old, too large, malformed, no `log_key`): they are counted in
    /// `dropped_records` now and not again by the engine, and kept in the dead-letter store
    /// when `storage.keep.rejected` is on. The caller logs the reason.
    pub fn reject<'a>(
        &self,
        metrics: &PluginMetrics,
        records: impl IntoIterator<Item = &'a Record>,
    ) {
        let mut n = 0u64;
        match &self.rejected {
            Some(kept) => {
                let mut copies: Vec<Record> = records.into_iter().cloned().collect();
                n = copies.len() as u64;
                if let Ok(mut k) = kept.lock() {
                    k.append(&mut copies);
                }
            }
            None => records.into_iter().for_each(|_| n += 1),
        }
        self.count_dropped(metrics, n);
    }

    /// The records [`Batch::reject`] kept so far (emptied).
    pub fn take_rejected(&self) -> Vec<Record> {
        self.rejected
            .as_ref()
            .and_then(|k| k.lock().ok().map(|mut v| std::mem::take(&mut *v)))
            .unwrap_or_default()
    }

    /// The output gives up on `n` records of this batch itself (the destination refused them
    /// one by one, or they cannot be encoded): counted in `dropped_records` now, and not again
    /// by the engine, whatever the flush returns.
    pub fn count_dropped(&self, metrics: &PluginMetrics, n: u64) {
        metrics.dropped(n);
        self.counted.dropped.fetch_add(n, Ordering::Relaxed);
    }

    /// `n` records of this batch reached the destination in an attempt that, as a whole,
    /// will be retried or fail: the engine counts them as delivered, not dropped, if it gives
    /// up on the batch later.
    pub fn count_delivered(&self, n: u64) {
        self.counted.delivered.fetch_add(n, Ordering::Relaxed);
    }

    /// (dropped, delivered) the output counted so far.
    pub fn counted(&self) -> (u64, u64) {
        (
            self.counted.dropped.load(Ordering::Relaxed),
            self.counted.delivered.load(Ordering::Relaxed),
        )
    }

    /// Every record, in order. The engine unpacks packed chunks before a flush
    /// ([`Chunk::unpacked`]) unless the output reads them itself ([`Output::reads_packed`]),
    /// so an output that does not finds all its records here.
    pub fn records(&self) -> impl Iterator<Item = &Record> {
        self.chunks.iter().flat_map(|c| {
            debug_assert!(c.packed.is_none(), "a flushed batch holds a packed chunk");
            c.records.iter()
        })
    }

    /// The records by chunk, packed chunks as they are: for an output that reads packed
    /// chunks ([`Output::reads_packed`]).
    pub fn view(&self) -> BatchRecords<'_> {
        let mut parts = Vec::with_capacity(self.chunks.len());
        let mut starts = Vec::with_capacity(self.chunks.len());
        let mut n = 0;
        for c in &self.chunks {
            starts.push(n);
            n += c.len();
            parts.push(match &c.packed {
                Some(p) => Part::Packed(p, std::sync::OnceLock::new()),
                None => Part::Records(&c.records),
            });
        }
        BatchRecords { parts, starts, n }
    }

    /// Copies of every record, in order, packed chunks unpacked: for the dead-letter store.
    /// A packed chunk that cannot be unpacked (only a bug can do that) is left out and logged.
    pub fn cloned_records(&self) -> Vec<Record> {
        let mut out = Vec::with_capacity(self.len());
        for c in &self.chunks {
            match &c.packed {
                Some(p) => match p.unpack() {
                    Ok(records) => out.extend(records),
                    Err(e) => tracing::error!(tag = %self.tag, records = p.len(), error = %e,
                        "queued records cannot be unpacked for the dead-letter store"),
                },
                None => out.extend(c.records.iter().cloned()),
            }
        }
        out
    }

    /// How many records.
    pub fn len(&self) -> usize {
        self.chunks.iter().map(|c| c.len()).sum()
    }

    /// Whether there are no records.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes counted against the inputs' buffers.
    pub fn size(&self) -> usize {
        self.chunks.iter().map(|c| c.size).sum()
    }

    /// Bytes in Fluent Bit's event encoding ([`Chunk::wire_size`]): what
    /// `fluentbit_output_proc_bytes_total` counts.
    pub fn wire_size(&self) -> usize {
        self.chunks.iter().map(|c| c.wire_size).sum()
    }
}

/// The outcome of one flush, as Fluent Bit's `FLB_OK` / `FLB_RETRY` / `FLB_ERROR`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FlushResult {
    /// Delivered (records the destination refused individually are reported through
    /// [`Batch::count_dropped`] by the output and still count as done).
    Ok,
    /// A transient failure: try the same batch again later, up to `Retry_Limit`.
    Retry(String),
    /// A permanent failure: the batch is given up, counted and logged.
    Error(String),
}

/// A destination. Several workers may call `flush` at once, so it takes `&self`.
#[async_trait]
pub trait Output: Send + Sync + 'static {
    /// Sends one batch.
    async fn flush(&self, batch: &Batch) -> FlushResult;
    /// Whether `flush` reads packed chunks ([`Chunk::packed`]) itself, encoding straight from
    /// them; otherwise the engine hands it an unpacked copy of each ([`Batch::records`]).
    fn reads_packed(&self) -> bool {
        false
    }
    /// Called once when the pipeline starts running, inside the runtime, before any flush:
    /// for outputs with work of their own (timers, uploads of what a previous run left).
    async fn start(&self) {}
    /// Called once at shutdown after the last flush, to finish files or uploads.
    async fn shutdown(&self) -> Result<(), PluginError> {
        Ok(())
    }
}

/// Fluent Bit's default `multiline_buffer_limit` (`FLB_ML_BUFFER_LIMIT_DEFAULT`, 2MB).
pub const DEFAULT_MULTILINE_BUFFER_LIMIT: usize = 2 * 1024 * 1024;

/// What a plugin constructor gets besides its own entries.
#[derive(Clone, Debug)]
pub struct BuildContext {
    /// Directory that relative paths in the config resolve against.
    pub base_dir: PathBuf,
    /// The instance name (`stdout.0`, or its `Alias`).
    pub instance: String,
    /// Counters of this instance.
    pub metrics: Arc<PluginMetrics>,
    /// The configuration being built.
    pub config: Arc<logferry_core::config::Config>,
    /// Every parser: the built-ins plus the config's `[PARSER]` / `[MULTILINE_PARSER]`s.
    pub parsers: Arc<logferry_parsers::Parsers>,
    /// Warnings about settings accepted but not applied ([`BuildContext::note`]).
    pub notes: Arc<std::sync::Mutex<Vec<ConfigError>>>,
    /// Metrics of inputs that plugins stand for ([`BuildContext::input_metrics`]).
    pub extra_inputs: Arc<std::sync::Mutex<Vec<Arc<PluginMetrics>>>>,
}

/// Set when the process only checks its configuration (`--dry-run`): plugins then build
/// without touching what they keep on disk (a running agent may be using it), and start
/// nothing.
pub static CHECK_ONLY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl BuildContext {
    /// Whether this build is only a configuration check ([`CHECK_ONLY`]).
    pub fn check_only(&self) -> bool {
        CHECK_ONLY.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Records that `key` (at `entry`) is accepted but not applied, and why: `--dry-run` prints
    /// it and the agent logs it at start (logging starts after the pipeline is built).
    pub fn note(&self, entry: &Entry, reason: impl Into<String>) {
        if let Ok(mut n) = self.notes.lock() {
            n.push(ConfigError::key(&entry.span, &entry.key, reason));
        }
    }

    /// Notes `tls.verify Off` when TLS is on: certificates are then taken unverified, which
    /// every plugin with TLS says at start and in `--dry-run` (the kubernetes filter words its
    /// own note).
    pub fn note_tls_verify_off(&self, entries: &[&Entry], tls: bool, verify: bool) {
        if !tls || verify {
            return;
        }
        if let Some(e) = entries
            .iter()
            .rev()
            .find(|e| e.key.trim().eq_ignore_ascii_case("tls.verify"))
        {
            self.note(
                e,
                "TLS certificate verification is off: anyone on the path can read and change what is sent",
            );
        }
    }

    /// Input metrics under `name` for a plugin that stands for an input, as Fluent Bit's
    /// `rewrite_tag` emitter shows as an input (`fluentbit_input_records_total{name=...}`).
    pub fn input_metrics(&self, name: &str) -> Arc<PluginMetrics> {
        let m = PluginMetrics::new(name);
        if let Ok(mut l) = self.extra_inputs.lock() {
            l.push(Arc::clone(&m));
        }
        m
    }

    /// `[SERVICE] multiline_buffer_limit`: the most bytes a message joined from parts may hold
    /// (`None`: turned off with `false`). Fluent Bit's default, 2MB, when unset; a bad value is
    /// reported where the service section is checked, and the default applies here.
    pub fn multiline_buffer_limit(&self) -> Option<usize> {
        use logferry_core::config::{OptValue, SectionKind, SizeLimit};
        let raw = self
            .config
            .sections(SectionKind::Service)
            .flat_map(|s| s.entries.iter())
            .filter(|e| e.key.eq_ignore_ascii_case("multiline_buffer_limit"))
            .last()
            .map(|e| e.value.as_str());
        let limit = raw
            .and_then(|v| SizeLimit::parse_opt(v).ok())
            .unwrap_or(SizeLimit(DEFAULT_MULTILINE_BUFFER_LIMIT as u64));
        limit
            .bytes()
            .map(|b| usize::try_from(b).unwrap_or(usize::MAX))
    }

    /// A note about a section rather than one key.
    pub fn note_at(&self, span: &logferry_core::config::Span, reason: impl Into<String>) {
        if let Ok(mut n) = self.notes.lock() {
            n.push(ConfigError::at(span, reason));
        }
    }

    /// Notes for the keys of `table` that `entries` set to something that matters: a plugin's
    /// own keys that it accepts and does not apply.
    pub fn not_applied(&self, table: &[crate::common::NotApplied], entries: &[&Entry]) {
        let notes = crate::common::not_applied(table, entries.iter().copied());
        if let Ok(mut n) = self.notes.lock() {
            n.extend(notes);
        }
    }

    /// A context for building one plugin outside a pipeline (tests, tools): parsers are the
    /// built-ins plus those in `config`.
    pub fn standalone(
        instance: &str,
        config: logferry_core::config::Config,
    ) -> Result<Self, Vec<ConfigError>> {
        let parsers = logferry_parsers::Parsers::from_config(&config)?;
        Ok(BuildContext {
            base_dir: config.base_dir(),
            instance: instance.to_string(),
            metrics: PluginMetrics::new(instance),
            config: Arc::new(config),
            parsers: Arc::new(parsers),
            notes: Arc::default(),
            extra_inputs: Arc::default(),
        })
    }
}

/// Builds an input from its section (`entries` are the keys not shared by every input).
pub type BuildInput = fn(&BuildContext, &Section, &[&Entry]) -> Result<Box<dyn Input>, ConfigError>;
/// Builds a filter from its section.
pub type BuildFilter =
    fn(&BuildContext, &Section, &[&Entry]) -> Result<Box<dyn Filter>, ConfigError>;
/// Builds an output from its section.
pub type BuildOutput =
    fn(&BuildContext, &Section, &[&Entry]) -> Result<Arc<dyn Output>, ConfigError>;

/// One registered plugin: its Fluent Bit name, aliases, options and constructor.
pub struct Plugin<B> {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    pub description: &'static str,
    pub options: &'static [OptSpec],
    /// Workers when `Workers` is not set (outputs only; Fluent Bit's per-plugin default).
    pub default_workers: usize,
    pub build: B,
}

impl<B> Plugin<B> {
    /// Whether `name` names this plugin (case-insensitive).
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
            || self.aliases.iter().any(|a| a.eq_ignore_ascii_case(name))
    }
}

/// An input plugin entry.
pub type InputPlugin = Plugin<BuildInput>;
/// A filter plugin entry.
pub type FilterPlugin = Plugin<BuildFilter>;
/// An output plugin entry.
pub type OutputPlugin = Plugin<BuildOutput>;

/// Every plugin the binary was built with, plus Fluent Bit names that logferry does not
/// provide yet (so that `--dry-run` can tell "not yet available" from a typo).
pub struct Registry {
    pub inputs: Vec<&'static InputPlugin>,
    pub filters: Vec<&'static FilterPlugin>,
    pub outputs: Vec<&'static OutputPlugin>,
    /// (kind, Fluent Bit name) pairs that are planned but not built yet.
    pub planned: &'static [(&'static str, &'static str)],
}

impl Registry {
    /// Finds an input by name.
    pub fn input(&self, name: &str) -> Option<&'static InputPlugin> {
        self.inputs.iter().copied().find(|p| p.is(name))
    }
    /// Finds a filter by name.
    pub fn filter(&self, name: &str) -> Option<&'static FilterPlugin> {
        self.filters.iter().copied().find(|p| p.is(name))
    }
    /// Finds an output by name.
    pub fn output(&self, name: &str) -> Option<&'static OutputPlugin> {
        self.outputs.iter().copied().find(|p| p.is(name))
    }
    /// Whether `name` is a Fluent Bit plugin of `kind` that logferry does not have yet.
    pub fn is_planned(&self, kind: &str, name: &str) -> bool {
        self.planned
            .iter()
            .any(|(k, n)| *k == kind && n.eq_ignore_ascii_case(name))
    }
}

/// Helper for inputs: an acknowledgement callback that does nothing (inputs that do not track
/// delivery).
pub fn no_ack() -> Option<DeliveryCallback> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use logferry_core::{EventTime, Map, Value};

    fn records(n: usize) -> Vec<Record> {
        (0..n)
            .map(|i| {
                let mut m = Map::new();
                m.insert("i", Value::Int(i as i64));
                Record::new(EventTime(i as i64), m)
            })
            .collect()
    }

    /// What a reader saw: (number, how, the `i` it read).
    #[derive(Default)]
    struct Seen {
        starts: usize,
        got: Vec<(usize, &'static str, i64)>,
    }

    impl ReadRecords for Seen {
        fn start_packed(&mut self) {
            self.starts += 1;
        }
        fn packed(
            &mut self,
            i: usize,
            time: EventTime,
            keys: usize,
            c: &mut logferry_core::packed::Cursor<'_>,
            _: (&Part<'_>, usize),
        ) -> Result<(), logferry_core::packed::UnpackError> {
            assert_eq!(c.keys(keys), ["i"]);
            match c.item()? {
                logferry_core::packed::Item::Int(v) => {
                    assert_eq!(time, EventTime(v));
                    self.got.push((i, "packed", v));
                }
                other => panic!("{other:?}"),
            }
            Ok(())
        }
        fn record(&mut self, i: usize, r: &Record) {
            let Some(Value::Int(v)) = r.body.get("i") else {
                panic!("{r:?}")
            };
            self.got.push((i, "record", *v));
        }
        fn lost(&mut self, i: usize) {
            self.got.push((i, "lost", -1));
        }
    }

    /// Records are numbered across the batch; packed chunks are read packed only when asked,
    /// and a damaged one keeps what was read before the damage and loses the rest.
    #[test]
    fn read_numbers_records_across_packed_plain_and_damaged_chunks() {
        let all = records(7);
        let mut packed = Chunk::new(Tag::from("t"), all[..3].to_vec());
        packed.pack();
        let plain = Chunk::new(Tag::from("t"), all[3..5].to_vec());
        let mut damaged = Chunk::new(Tag::from("t"), all[5..].to_vec());
        damaged.pack();
        // One byte off the end damages only the second of its two records.
        damaged.packed = damaged.packed.map(|p| p.cut_short(1));
        let batch = Batch::new(
            Tag::from("t"),
            vec![Arc::new(packed), Arc::new(plain), Arc::new(damaged)],
        );
        let view = batch.view();
        let mut seen = Seen::default();
        view.read(true, &mut seen);
        assert_eq!(seen.starts, 2);
        assert_eq!(
            seen.got,
            [
                (0, "packed", 0),
                (1, "packed", 1),
                (2, "packed", 2),
                (3, "record", 3),
                (4, "record", 4),
                (5, "packed", 5),
                (6, "lost", -1),
            ]
        );
        let mut seen = Seen::default();
        view.read(false, &mut seen);
        assert_eq!(seen.starts, 0);
        let how: Vec<_> = seen.got.iter().map(|g| (g.0, g.1)).collect();
        // Unpacked, the damaged chunk is lost as a whole.
        assert_eq!(
            how,
            [
                (0, "record"),
                (1, "record"),
                (2, "record"),
                (3, "record"),
                (4, "record"),
                (5, "lost"),
                (6, "lost"),
            ]
        );
    }
}
