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

use crate::{Batch, BuildContext, FlushResult, Output, OutputPlugin};

/// The last value given for `key` among a plugin's entries.
pub fn entry_value(entries: &[&Entry], key: &str) -> Option<String> {
    entries
        .iter()
        .rev()
        .find(|e| e.key.eq_ignore_ascii_case(key))
        .map(|e| e.value.clone())
}

/// Collects records into a named sink; can fail the first `fail` flushes and be gated.
struct CollectOutput {
    sink: Arc<Mutex<Vec<(String, Record)>>>,
    fail: AtomicUsize,
    permanent: bool,
    gate: Option<Arc<Semaphore>>,
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
        if let Some(g) = &self.gate {
            let _ = g.acquire().await.unwrap();
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
        let mut s = self.sink.lock().unwrap();
        for r in batch.records() {
            s.push((batch.tag.to_string(), r.clone()));
        }
        FlushResult::Ok
    }
}

fn build_collect(
    _: &BuildContext,
    _: &Section,
    e: &[&Entry],
) -> Result<Arc<dyn Output>, ConfigError> {
    let name = entry_value(e, "sink").unwrap();
    let gate = entry_value(e, "gate").map(|g| {
        let sem = Arc::new(Semaphore::new(0));
        GATES.lock().unwrap().push((g, Arc::clone(&sem)));
        sem
    });
    Ok(Arc::new(CollectOutput {
        sink: sink(&name),
        fail: AtomicUsize::new(entry_value(e, "fail").map_or(0, |v| v.parse().unwrap())),
        permanent: entry_value(e, "permanent").is_some(),
        gate,
    }))
}

/// `collect` output: options `sink` (name), `fail` (first N flushes fail), `permanent`
/// (failures are errors, not retries), `gate` (flushes wait for permits on that gate).
pub static COLLECT: OutputPlugin = OutputPlugin {
    name: "collect",
    aliases: &[],
    description: "test collector",
    options: &[],
    default_workers: 1,
    build: build_collect,
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
