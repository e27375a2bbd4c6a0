//! Test support shared by the crates' integration tests (feature `testing`): a collecting
//! output whose sinks, failures and gates tests control by name, and small config builders.
//! Real inputs and real files are used around it; only the destination is in-process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use logferry_core::config::{Config, ConfigError, Entry, Section, SectionKind, Span};
use logferry_core::Record;
use tokio::sync::Semaphore;

use crate::{
    Batch, BuildContext, FlushResult, Input, InputContext, InputExit, InputPlugin, Output,
    OutputPlugin, PluginError,
};
use logferry_core::{DeliveryStatus, EventTime, Map};

/// Emits `count` records (fields `n` and `pad`, `size` bytes of padding) in chunks of
/// `per_chunk`, recording each chunk's outcome under `<tag>:<records so far>` (see
/// [`outcomes`]); then finishes, asks the engine to exit (`exit`), or waits for shutdown
/// (`hold`).
struct SeqInput {
    count: usize,
    per_chunk: usize,
    size: usize,
    exit: bool,
    hold: bool,
    /// A pause between chunks.
    delay: Duration,
}

static OUTCOMES: Mutex<Vec<(String, DeliveryStatus)>> = Mutex::new(Vec::new());

/// The outcomes `seq` inputs were told, for chunks whose label starts with `prefix`.
pub fn outcomes(prefix: &str) -> Vec<DeliveryStatus> {
    OUTCOMES
        .lock()
        .unwrap()
        .iter()
        .filter(|(l, _)| l.starts_with(prefix))
        .map(|(_, s)| *s)
        .collect()
}

#[async_trait]
impl Input for SeqInput {
    async fn run(self: Box<Self>, ctx: InputContext) -> Result<InputExit, PluginError> {
        let mut n = 0;
        while n < self.count {
            let mut recs = Vec::new();
            for _ in 0..self.per_chunk.min(self.count - n) {
                let mut m = Map::new();
                m.insert("n", n as i64);
                m.insert("pad", "x".repeat(self.size));
                recs.push(Record::new(
                    EventTime::from_parts(1_700_000_000 + n as i64, 0),
                    m,
                ));
                n += 1;
            }
            let label = format!("{}:{}", ctx.tag, n);
            let ack = Box::new(move |s: DeliveryStatus| OUTCOMES.lock().unwrap().push((label, s)));
            tokio::select! {
                r = ctx.emitter.emit(ctx.tag.clone(), recs, 0, Some(ack)) => r?,
                _ = ctx.shutdown.cancelled() => break,
            }
            if !self.delay.is_zero() {
                tokio::time::sleep(self.delay).await;
            }
        }
        if self.hold {
            ctx.shutdown.cancelled().await;
        }
        if self.exit {
            Ok(InputExit::ExitEngine)
        } else {
            Ok(InputExit::Finished)
        }
    }
}

fn build_seq(_: &BuildContext, _: &Section, e: &[&Entry]) -> Result<Box<dyn Input>, ConfigError> {
    Ok(Box::new(SeqInput {
        count: entry_value(e, "count").map_or(10, |v| v.parse().unwrap()),
        per_chunk: entry_value(e, "per_chunk").map_or(1, |v| v.parse().unwrap()),
        size: entry_value(e, "size").map_or(1, |v| v.parse().unwrap()),
        exit: entry_value(e, "exit").is_some(),
        hold: entry_value(e, "hold").is_some(),
        delay: Duration::from_millis(entry_value(e, "delay_ms").map_or(0, |v| v.parse().unwrap())),
    }))
}

/// `seq` input: options `count`, `per_chunk`, `size`, `exit`, `hold`, `delay_ms` (see
/// [`outcomes`]).
pub static SEQ: InputPlugin = InputPlugin {
    name: "seq",
    aliases: &[],
    description: "test sequence",
    options: &[],
    default_workers: 1,
    build: build_seq,
};

/// The last value given for `key` among a plugin's entries.
pub fn entry_value(entries: &[&Entry], key: &str) -> Option<String> {
    entries
        .iter()
        .rev()
        .find(|e| e.key.eq_ignore_ascii_case(key))
        .map(|e| e.value.clone())
}

/// Collects records into a named sink; can fail the first `fail` flushes, fail while its
/// `outage` switch is on, and be gated.
struct CollectOutput {
    sink: Arc<Mutex<Vec<(String, Record)>>>,
    fail: AtomicUsize,
    permanent: bool,
    gate: Option<Arc<Semaphore>>,
    outage: Option<Arc<Switch>>,
    attempts: Arc<AtomicUsize>,
    /// Chunks in the batches it delivered ([`chunks`]).
    chunks: Arc<AtomicUsize>,
    /// Records whose `n` is a multiple of this are refused one by one ([`Batch::reject`]).
    reject_every: Option<i64>,
    metrics: Arc<crate::metrics::PluginMetrics>,
    /// Whether it reads packed chunks itself, and how many it was handed ([`packed_chunks`]).
    reads_packed: bool,
    packed_chunks: Arc<AtomicUsize>,
}

/// A named on/off switch with a count of the flushes that saw it (see [`outage`]).
#[derive(Debug, Default)]
pub struct Switch {
    pub on: std::sync::atomic::AtomicBool,
}

static SWITCHES: Mutex<Vec<(String, Arc<Switch>)>> = Mutex::new(Vec::new());
static ATTEMPTS: Counters = Mutex::new(Vec::new());
static CHUNKS: Counters = Mutex::new(Vec::new());

/// The outage switch named `name`: while on, a `collect` output built with `outage <name>`
/// fails every flush with `Retry`, as a destination that is down.
pub fn outage(name: &str) -> Arc<Switch> {
    let mut s = SWITCHES.lock().unwrap();
    if let Some((_, k)) = s.iter().find(|(n, _)| n == name) {
        return Arc::clone(k);
    }
    let k: Arc<Switch> = Arc::default();
    s.push((name.to_string(), Arc::clone(&k)));
    k
}

/// Flushes (attempts) the `collect` output with sink `name` was asked to make.
pub fn attempts(name: &str) -> usize {
    count(&ATTEMPTS, name)
}

/// Chunks in the batches the `collect` output with sink `name` delivered: how finely an
/// input cut what it read.
pub fn chunks(name: &str) -> usize {
    count(&CHUNKS, name)
}

/// Packed chunks the `collect` output with sink `name` was handed (only one built with
/// `reads_packed` is handed any).
pub fn packed_chunks(name: &str) -> usize {
    count(&PACKED_CHUNKS, name)
}

static PACKED_CHUNKS: Counters = Mutex::new(Vec::new());

/// Per-sink counters of the `collect` output ([`attempts`], [`chunks`]).
type Counters = Mutex<Vec<(String, Arc<AtomicUsize>)>>;

/// The counter of sink `name` in `table` (0 before its output is built).
fn count(table: &Counters, name: &str) -> usize {
    table
        .lock()
        .unwrap()
        .iter()
        .find(|(n, _)| n == name)
        .map_or(0, |(_, a)| a.load(Ordering::SeqCst))
}

/// A new counter for sink `name` in `table`.
fn counter(table: &Counters, name: &str) -> Arc<AtomicUsize> {
    let c: Arc<AtomicUsize> = Arc::default();
    table
        .lock()
        .unwrap()
        .push((name.to_string(), Arc::clone(&c)));
    c
}

/// Records received by a collect output.
pub type Sink = Arc<Mutex<Vec<(String, Record)>>>;
static SINKS: Mutex<Vec<(String, Sink)>> = Mutex::new(Vec::new());
static GATES: Mutex<Vec<(String, Arc<Semaphore>)>> = Mutex::new(Vec::new());

/// The records a `collect` output named `name` received, with their tags.
pub fn sink(name: &str) -> Sink {
    let mut s = SINKS.lock().unwrap();
    if let Some((_, k)) = s.iter().find(|(n, _)| n == name) {
        return Arc::clone(k);
    }
    let k: Sink = Arc::default();
    s.push((name.to_string(), Arc::clone(&k)));
    k
}

#[async_trait]
impl Output for CollectOutput {
    async fn flush(&self, batch: &Batch) -> FlushResult {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        if let Some(g) = &self.gate {
            let _ = g.acquire().await.unwrap();
        }
        if self
            .outage
            .as_ref()
            .is_some_and(|o| o.on.load(Ordering::SeqCst))
        {
            return FlushResult::Retry("destination down".into());
        }
        if self
            .fail
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |f| f.checked_sub(1))
            .is_ok()
        {
            return if self.permanent {
                FlushResult::Error("refused".into())
            } else {
                FlushResult::Retry("try later".into())
            };
        }
        let refused = |r: &&Record| {
            self.reject_every.is_some_and(|k| {
                r.body
                    .get("n")
                    .and_then(|v| match v {
                        logferry_core::Value::Int(i) => Some(*i),
                        _ => None,
                    })
                    .is_some_and(|n| n % k == 0)
            })
        };
        // Read as an output that reads packed chunks reads them (the engine unpacks them
        // first for one that does not).
        let view = batch.view();
        let mut records: Vec<&Record> = Vec::with_capacity(view.len());
        for (_, part) in view.parts() {
            if matches!(part, crate::Part::Packed(..)) {
                self.packed_chunks.fetch_add(1, Ordering::SeqCst);
            }
            records.extend(part.records().unwrap());
        }
        batch.reject(&self.metrics, records.iter().copied().filter(refused));
        let mut s = self.sink.lock().unwrap();
        for r in records.iter().copied().filter(|r| !refused(r)) {
            s.push((batch.tag.to_string(), r.clone()));
        }
        self.chunks.fetch_add(batch.chunks.len(), Ordering::SeqCst);
        FlushResult::Ok
    }

    fn reads_packed(&self) -> bool {
        self.reads_packed
    }
}

fn build_collect(
    ctx: &BuildContext,
    _: &Section,
    e: &[&Entry],
) -> Result<Arc<dyn Output>, ConfigError> {
    let name = entry_value(e, "sink").unwrap();
    let gate = entry_value(e, "gate").map(|g| {
        let sem = Arc::new(Semaphore::new(0));
        GATES.lock().unwrap().push((g, Arc::clone(&sem)));
        sem
    });
    let attempts = counter(&ATTEMPTS, &name);
    let chunks = counter(&CHUNKS, &name);
    Ok(Arc::new(CollectOutput {
        chunks,
        packed_chunks: counter(&PACKED_CHUNKS, &name),
        reads_packed: entry_value(e, "reads_packed").is_some(),
        reject_every: entry_value(e, "reject_every").map(|v| v.parse().unwrap()),
        metrics: Arc::clone(&ctx.metrics),
        outage: entry_value(e, "outage").map(|o| outage(&o)),
        attempts,
        sink: sink(&name),
        fail: AtomicUsize::new(entry_value(e, "fail").map_or(0, |v| v.parse().unwrap())),
        permanent: entry_value(e, "permanent").is_some(),
        gate,
    }))
}

/// `collect` output: options `sink` (name), `fail` (first N flushes fail), `permanent`
/// (failures are errors, not retries), `gate` (flushes wait for permits on that gate),
/// `outage` (flushes fail with `Retry` while that [`outage`] switch is on), `reject_every`
/// (records whose `n` is a multiple of it are refused one by one), `reads_packed` (it reads
/// packed chunks itself, [`Output::reads_packed`]; see [`packed_chunks`]).
pub static COLLECT: OutputPlugin = OutputPlugin {
    name: "collect",
    aliases: &[],
    description: "test collector",
    options: &[],
    default_workers: 1,
    build: build_collect,
};

/// Appends its `label` to the `path` text of every record (to see which filters ran, in order).
struct MarkFilter(String);

#[async_trait]
impl crate::Filter for MarkFilter {
    async fn filter(&mut self, _tag: &str, records: &mut Vec<Record>) {
        for r in records.iter_mut() {
            let prev = r
                .body
                .get("path")
                .and_then(logferry_core::Value::as_str)
                .unwrap_or("")
                .to_string();
            r.body.insert("path", format!("{prev}{}", self.0));
        }
    }
}

fn build_mark(
    _: &BuildContext,
    _: &Section,
    e: &[&Entry],
) -> Result<Box<dyn crate::Filter>, ConfigError> {
    Ok(Box::new(MarkFilter(entry_value(e, "label").unwrap())))
}

/// `mark` filter: option `label`, appended to each record's `path` text.
pub static MARK: crate::FilterPlugin = crate::FilterPlugin {
    name: "mark",
    aliases: &[],
    description: "test marker",
    options: &[],
    default_workers: 1,
    build: build_mark,
};

/// Bytes each record a `hold` filter held grows by.
pub const GROWN: usize = 10_000;

/// Holds the first `hold` chunks it is given (with a share of each one's delivery), and lets
/// them go through [`crate::Filter::take_ready`] with the next chunk, each as its
/// own: what the kubernetes filter does with records that waited for a pod's first lookup.
pub struct HoldFilter {
    hold: usize,
    held: Vec<crate::Released>,
    ready: Vec<crate::Released>,
}

#[async_trait]
impl crate::Filter for HoldFilter {
    async fn filter(&mut self, _: &str, _: &mut Vec<Record>) {
        unreachable!("the router calls filter_carried");
    }

    async fn filter_carried(
        &mut self,
        tag: &str,
        records: &mut Vec<Record>,
        carrier: &mut crate::Carrier<'_>,
    ) {
        if self.hold > 0 {
            self.hold -= 1;
            let taken = std::mem::take(records);
            let bytes = taken.iter().map(Record::mem_size).sum();
            self.held.push(crate::Released {
                tag: Arc::from(tag),
                records: taken,
                held: carrier.hold().into_iter().collect(),
                restart: false,
                charge: carrier.charge(bytes),
            });
            return;
        }
        // They grow while held (as the kubernetes filter's records get their metadata).
        for r in self.held.iter_mut().flat_map(|h| h.records.iter_mut()) {
            r.body.insert("grown", "g".repeat(GROWN));
        }
        self.ready.append(&mut self.held);
    }

    fn take_ready(&mut self) -> Vec<crate::Released> {
        std::mem::take(&mut self.ready)
    }

    fn flush_due(&mut self, all: bool) -> Vec<crate::Released> {
        // `take_ready` takes what a later chunk let go. Held chunks go only at shutdown: the
        // router calls this every tick, and a tick that came before the chunk that lets them
        // go (a slow machine) sent them on ungrown, so the test's charge never reached the
        // growth it waits for.
        let mut out = std::mem::take(&mut self.ready);
        if all {
            out.append(&mut self.held);
        }
        out
    }
}

fn build_hold(
    _: &BuildContext,
    _: &Section,
    e: &[&Entry],
) -> Result<Box<dyn crate::Filter>, ConfigError> {
    Ok(Box::new(HoldFilter {
        hold: entry_value(e, "hold").unwrap().parse().unwrap(),
        held: Vec::new(),
        ready: Vec::new(),
    }))
}

/// `hold` filter: option `hold`, the number of chunks it holds (see [`HoldFilter`]).
pub static HOLD: crate::FilterPlugin = crate::FilterPlugin {
    name: "hold",
    aliases: &[],
    description: "test filter that holds its first chunks",
    options: &[],
    default_workers: 1,
    build: build_hold,
};

/// The gate a `collect` output was built with (`gate` option); add permits to let flushes go.
pub fn gate(name: &str) -> Arc<Semaphore> {
    GATES
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|(n, _)| n == name)
        .map(|(_, g)| Arc::clone(g))
        .expect("no such gate")
}

/// A section built from key/value pairs.
pub fn section(kind: SectionKind, kv: &[(&str, &str)]) -> Section {
    let mut s = Section::new(kind, Span::command_line());
    for (k, v) in kv {
        s.push(*k, *v, Span::command_line());
    }
    s
}

/// A config from sections.
pub fn config(sections: Vec<Section>) -> Config {
    Config {
        sections,
        path: None,
    }
}

/// Polls `cond` every 20ms until it holds or `timeout` passes; returns whether it held.
pub async fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The notes (accepted but not applied, warnings) `plugin` gives at build for an output
/// section of `keys`, built as instance `name`; the build must succeed.
pub fn output_notes(plugin: &OutputPlugin, name: &str, keys: &[(&str, &str)]) -> Vec<String> {
    let ctx = BuildContext::standalone(name, Config::default()).unwrap();
    let sec = section(SectionKind::Output, keys);
    let entries: Vec<&Entry> = sec.entries.iter().collect();
    assert!((plugin.build)(&ctx, &sec, &entries).is_ok());
    let notes = ctx.notes.lock().unwrap();
    notes.iter().map(|n| n.to_string()).collect()
}
