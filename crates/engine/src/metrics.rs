//! Counters per plugin instance, named after Fluent Bit's metrics (`fluentbit_input_records_total`
//! and friends) so the HTTP server can expose them under the names dashboards already use.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Counters of one plugin instance. Which ones move depends on the kind of plugin.
#[derive(Debug, Default)]
pub struct PluginMetrics {
    /// Instance name (`tail.0` or its alias): the `name` label.
    pub name: String,
    /// Input: records emitted. Filter: records seen. Output: records delivered.
    pub records: AtomicU64,
    /// Input: bytes read. Output: bytes (buffer accounting) delivered.
    pub bytes: AtomicU64,
    /// Output: flushes that failed permanently. Filter: records dropped.
    pub errors: AtomicU64,
    /// Output: flushes retried.
    pub retries: AtomicU64,
    /// Output: flushes given up after `Retry_Limit`.
    pub retries_failed: AtomicU64,
    /// Output: records dropped (given up, or refused by the destination). Filter: records dropped.
    pub dropped_records: AtomicU64,
    /// Output: records retried. Filter: records added.
    pub retried_records: AtomicU64,
    /// Input: times it was paused by `Mem_Buf_Limit`.
    pub paused: AtomicU64,
    /// Input: bytes emitted and not yet delivered (gauge).
    pub buffer_bytes: AtomicU64,
    /// Input: its `Mem_Buf_Limit` in bytes (gauge).
    pub buffer_limit: AtomicU64,
    /// Plugin-specific counters, exported as `logferry_<name>{name=<instance>}`.
    pub extra: Mutex<Vec<Extra>>,
}

/// A plugin-specific counter (a plugin registers it at build time and bumps it itself).
#[derive(Clone, Debug)]
pub struct Extra {
    /// Metric name without the `_total` suffix; without the `logferry_` prefix unless it is one of
    /// Fluent Bit's own (`fluentbit_input_files_opened`), which is exported as it is.
    pub name: &'static str,
    pub help: &'static str,
    pub value: Arc<AtomicU64>,
    /// A level that goes up and down (exported as a gauge) rather than a count.
    pub gauge: bool,
}

impl PluginMetrics {
    /// New zeroed counters for `name`.
    pub fn new(name: impl Into<String>) -> Arc<Self> {
        Arc::new(PluginMetrics {
            name: name.into(),
            ..Default::default()
        })
    }

    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Registers a plugin-specific counter and returns it for the plugin to bump.
    pub fn register(&self, name: &'static str, help: &'static str) -> Arc<AtomicU64> {
        self.register_kind(name, help, false)
    }

    /// Registers a plugin-specific gauge (a level the plugin sets).
    pub fn register_gauge(&self, name: &'static str, help: &'static str) -> Arc<AtomicU64> {
        self.register_kind(name, help, true)
    }

    fn register_kind(&self, name: &'static str, help: &'static str, gauge: bool) -> Arc<AtomicU64> {
        let value = Arc::new(AtomicU64::new(0));
        if let Ok(mut e) = self.extra.lock() {
            e.push(Extra {
                name,
                help,
                value: Arc::clone(&value),
                gauge,
            });
        }
        value
    }

    /// The plugin-specific counters.
    pub fn extras(&self) -> Vec<Extra> {
        self.extra.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// Records that `n` records were refused by the destination (counted, never silent).
    pub fn dropped(&self, n: u64) {
        self.dropped_records.fetch_add(n, Ordering::Relaxed);
    }
}

/// Every instance's counters, in config order.
#[derive(Debug, Default)]
pub struct Metrics {
    pub inputs: Mutex<Vec<Arc<PluginMetrics>>>,
    pub filters: Mutex<Vec<Arc<PluginMetrics>>>,
    pub outputs: Mutex<Vec<Arc<PluginMetrics>>>,
    /// The storage layer's chunk counts, served with `storage.metrics On`.
    pub storage: Option<Arc<crate::storage::StorageGauges>>,
}

impl Metrics {
    /// A snapshot of the list of one kind.
    pub fn list(list: &Mutex<Vec<Arc<PluginMetrics>>>) -> Vec<Arc<PluginMetrics>> {
        list.lock().map(|l| l.clone()).unwrap_or_default()
    }
}
