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
    /// Bytes in Fluent Bit's event encoding ([`logferry_core::msgpack::event_size`]), as Fluent
    /// Bit counts its chunks. Input: bytes emitted. Filter: bytes a filter that changed the
    /// records put out. Output: bytes delivered.
    pub bytes: AtomicU64,
    /// Input: bytes it read from its source (a file's raw bytes for tail), logferry's own.
    pub read_bytes: AtomicU64,
    /// Filter: bytes (event encoding) of the records it dropped.
    pub dropped_bytes: AtomicU64,
    /// Output: how much of `storage.total_limit_size` is free, in percent (100 without a
    /// limit): `fluentbit_output_chunk_available_capacity_percent`.
    pub capacity_percent: AtomicU64,
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
            capacity_percent: AtomicU64::new(100),
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

/// Upper bounds of `fluentbit_output_latency_seconds`' buckets, as Fluent Bit 5.1 has them.
pub const LATENCY_BUCKETS: [f64; 8] = [0.5, 1.0, 1.5, 2.5, 5.0, 10.0, 20.0, 30.0];

/// A histogram of seconds with [`LATENCY_BUCKETS`], written with atomics (no lock per
/// observation).
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative), the last one past the largest bound.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: std::time::Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(
            u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Cumulative counts per bound of [`LATENCY_BUCKETS`] and then `+Inf`, the sum in seconds,
    /// and the count.
    pub fn snapshot(&self) -> (Vec<u64>, f64, u64) {
        let mut acc = 0;
        let cumulative = self
            .buckets
            .iter()
            .map(|b| {
                acc += b.load(Ordering::Relaxed);
                acc
            })
            .collect();
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        (cumulative, sum, self.count.load(Ordering::Relaxed))
    }
}

/// What went from one input to one output: Fluent Bit's `fluentbit_routing_logs_*{input,output}`
/// and `fluentbit_output_latency_seconds{input,output}`. Created when the first chunk of that
/// input reaches the output, as Fluent Bit's series appear on first use.
#[derive(Debug, Default)]
pub struct RouteMetrics {
    pub input: Arc<str>,
    pub output: String,
    /// Records and bytes delivered.
    pub records: AtomicU64,
    pub bytes: AtomicU64,
    /// Records and bytes dropped (given up, refused, or over `storage.total_limit_size`).
    pub drop_records: AtomicU64,
    pub drop_bytes: AtomicU64,
    /// From the chunk's creation to its delivery, one observation per chunk delivered.
    pub latency: Histogram,
}

/// How many messages logferry logged, by level: `fluentbit_logger_logs_total{message_type}`.
/// The binary's logging layer counts them; the HTTP server reads them.
#[derive(Debug, Default)]
pub struct LogCounts {
    /// error, warn, info, debug, trace.
    pub by_level: [AtomicU64; 5],
}

/// The process's log counts (one logger per process, like Fluent Bit's).
pub static LOG_COUNTS: LogCounts = LogCounts {
    by_level: [
        AtomicU64::new(0),
        AtomicU64::new(0),
        AtomicU64::new(0),
        AtomicU64::new(0),
        AtomicU64::new(0),
    ],
};

impl LogCounts {
    /// Fluent Bit's `message_type` label values, in the order of `by_level`.
    pub const LEVELS: [&'static str; 5] = ["error", "warn", "info", "debug", "trace"];
}

/// Every instance's counters, in config order.
#[derive(Debug, Default)]
pub struct Metrics {
    pub inputs: Mutex<Vec<Arc<PluginMetrics>>>,
    pub filters: Mutex<Vec<Arc<PluginMetrics>>>,
    pub outputs: Mutex<Vec<Arc<PluginMetrics>>>,
    /// Per input and output, in the order routes were first used.
    pub routes: Mutex<Vec<Arc<RouteMetrics>>>,
    /// The storage layer's chunk counts, served with `storage.metrics On`.
    pub storage: Option<Arc<crate::storage::StorageGauges>>,
}

impl Metrics {
    /// A snapshot of the list of one kind.
    pub fn list(list: &Mutex<Vec<Arc<PluginMetrics>>>) -> Vec<Arc<PluginMetrics>> {
        list.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// The counters of the route from `input` to `output`, made on first use.
    pub fn route(&self, input: &Arc<str>, output: &str) -> Arc<RouteMetrics> {
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = routes
            .iter()
            .find(|r| *r.input == **input && r.output == output)
        {
            return Arc::clone(r);
        }
        let r = Arc::new(RouteMetrics {
            input: Arc::clone(input),
            output: output.to_string(),
            ..Default::default()
        });
        routes.push(Arc::clone(&r));
        r
    }

    /// A snapshot of the routes.
    pub fn routes(&self) -> Vec<Arc<RouteMetrics>> {
        self.routes.lock().map(|l| l.clone()).unwrap_or_default()
    }
}
