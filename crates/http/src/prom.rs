//! Prometheus exposition under Fluent Bit's metric names, read from the engine's atomics at
//! scrape time by a `prometheus-client` [`Collector`].
//!
//! `prometheus-client` writes OpenMetrics text; Fluent Bit serves the Prometheus text format
//! 0.0.4. [`to_text_004`] turns the first into the second (the counter family named with its
//! `_total` suffix in `# HELP`/`# TYPE`, no `# EOF`), so the same sample lines come out either
//! way: `fluentbit_input_records_total{name="tail.0"} 42`.

use std::fmt::Write as _;
use std::sync::{Arc, RwLock};
use std::time::{Instant, SystemTime};

use logferry_engine::metrics::{Metrics, PluginMetrics};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use crate::json::VERSION;

/// What the collectors read: the current pipeline's counters (swapped by a reload) and the
/// process-wide facts.
#[derive(Debug)]
pub(crate) struct Source {
    metrics: RwLock<Arc<Metrics>>,
    pub reloads: std::sync::atomic::AtomicU64,
    pub started: Instant,
    pub started_unix: u64,
    pub hostname: String,
}

impl Source {
    pub fn new(metrics: Arc<Metrics>, started_at: SystemTime, hostname: String) -> Self {
        let since = SystemTime::now()
            .duration_since(started_at)
            .unwrap_or_default();
        Source {
            metrics: RwLock::new(metrics),
            reloads: Default::default(),
            started: Instant::now()
                .checked_sub(since)
                .unwrap_or_else(Instant::now),
            started_unix: started_at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default(),
            hostname,
        }
    }

    /// The counters of the pipeline running now.
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics.read().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn set_metrics(&self, metrics: Arc<Metrics>) {
        *self.metrics.write().unwrap_or_else(|e| e.into_inner()) = metrics;
    }

    pub fn uptime_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }
}

/// A label value escaped as the text formats want (`prometheus-client` writes them verbatim).
struct Escaped<'a>(&'a str);

impl EncodeLabelValue for Escaped<'_> {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        for c in self.0.chars() {
            match c {
                '\\' => encoder.write_str("\\\\")?,
                '"' => encoder.write_str("\\\"")?,
                '\n' => encoder.write_str("\\n")?,
                c => encoder.write_char(c)?,
            }
        }
        Ok(())
    }
}

type Field = fn(&PluginMetrics) -> u64;

/// Per-instance counter families: (name without `_total`, help, field).
const INPUT_COUNTERS: &[(&str, &str, Field)] = &[
    ("fluentbit_input_records", "Number of input records.", |p| {
        PluginMetrics::get(&p.records)
    }),
    ("fluentbit_input_bytes", "Number of input bytes.", |p| {
        PluginMetrics::get(&p.bytes)
    }),
    (
        "logferry_input_paused",
        "Number of times the input was paused because its Mem_Buf_Limit was reached.",
        |p| PluginMetrics::get(&p.paused),
    ),
];

const FILTER_COUNTERS: &[(&str, &str, Field)] = &[
    (
        "fluentbit_filter_records",
        "Total number of new records processed.",
        |p| PluginMetrics::get(&p.records),
    ),
    (
        "fluentbit_filter_add_records",
        "Total number of new added records.",
        |p| PluginMetrics::get(&p.retried_records),
    ),
    (
        "fluentbit_filter_drop_records",
        "Total number of dropped records.",
        |p| PluginMetrics::get(&p.dropped_records),
    ),
];

const OUTPUT_COUNTERS: &[(&str, &str, Field)] = &[
    (
        "fluentbit_output_proc_records",
        "Number of processed output records.",
        |p| PluginMetrics::get(&p.records),
    ),
    (
        "fluentbit_output_proc_bytes",
        "Number of processed output bytes.",
        |p| PluginMetrics::get(&p.bytes),
    ),
    ("fluentbit_output_errors", "Number of output errors.", |p| {
        PluginMetrics::get(&p.errors)
    }),
    (
        "fluentbit_output_retries",
        "Number of output retries.",
        |p| PluginMetrics::get(&p.retries),
    ),
    (
        "fluentbit_output_retries_failed",
        "Number of abandoned batches because the maximum number of re-tries was reached.",
        |p| PluginMetrics::get(&p.retries_failed),
    ),
    (
        "fluentbit_output_dropped_records",
        "Number of dropped records.",
        |p| PluginMetrics::get(&p.dropped_records),
    ),
    (
        "fluentbit_output_retried_records",
        "Number of retried records.",
        |p| PluginMetrics::get(&p.retried_records),
    ),
];

fn counters(
    enc: &mut DescriptorEncoder,
    list: &[Arc<PluginMetrics>],
    families: &[(&str, &str, Field)],
) -> Result<(), std::fmt::Error> {
    if list.is_empty() {
        return Ok(());
    }
    for (name, help, field) in families {
        let mut family = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
        for p in list {
            let labels = [("name", Escaped(&p.name))];
            ConstCounter::new(field(p)).encode(family.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

/// Per-input buffer state, under Fluent Bit's storage metric names.
fn input_buffers(
    enc: &mut DescriptorEncoder,
    inputs: &[Arc<PluginMetrics>],
) -> Result<(), std::fmt::Error> {
    if inputs.is_empty() {
        return Ok(());
    }
    type Gauge = fn(&PluginMetrics) -> u64;
    let families: [(&str, &str, Gauge); 3] = [
        (
            "fluentbit_input_storage_memory_bytes",
            "Memory bytes used by the input's chunks.",
            |p| PluginMetrics::get(&p.buffer_bytes),
        ),
        (
            "fluentbit_input_storage_overlimit",
            "Whether the input is over its Mem_Buf_Limit.",
            |p| {
                u64::from(
                    PluginMetrics::get(&p.buffer_bytes)
                        >= PluginMetrics::get(&p.buffer_limit).max(1),
                )
            },
        ),
        (
            "fluentbit_input_ingestion_paused",
            "Whether the input is paused.",
            |p| {
                u64::from(
                    PluginMetrics::get(&p.buffer_bytes)
                        >= PluginMetrics::get(&p.buffer_limit).max(1),
                )
            },
        ),
    ];
    for (name, help, field) in families {
        let mut family = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for p in inputs {
            let labels = [("name", Escaped(&p.name))];
            ConstGauge::new(field(p)).encode(family.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

/// Plugin-specific counters (`PluginMetrics::register`), as `logferry_<name>_total{name}`, or
/// under their own name when it is one of Fluent Bit's (`fluentbit_…`).
fn extras(enc: &mut DescriptorEncoder, m: &Metrics) -> Result<(), std::fmt::Error> {
    let all: Vec<Arc<PluginMetrics>> = Metrics::list(&m.inputs)
        .into_iter()
        .chain(Metrics::list(&m.filters))
        .chain(Metrics::list(&m.outputs))
        .collect();
    let mut names: Vec<(&'static str, &'static str, bool)> = Vec::new();
    for p in &all {
        for e in p.extras() {
            if !names.iter().any(|(n, _, _)| *n == e.name) {
                names.push((e.name, e.help, e.gauge));
            }
        }
    }
    for (name, help, is_gauge) in names {
        // Fluent Bit's own plugin metrics (tail's file counters) keep their name.
        let full = if name.starts_with("fluentbit_") {
            name.to_string()
        } else {
            format!("logferry_{name}")
        };
        let kind = if is_gauge {
            MetricType::Gauge
        } else {
            MetricType::Counter
        };
        let mut family = enc.encode_descriptor(&full, help, None, kind)?;
        for p in &all {
            for e in p.extras().into_iter().filter(|e| e.name == name) {
                let labels = [("name", Escaped(&p.name))];
                let v = e.value.load(std::sync::atomic::Ordering::Relaxed);
                if is_gauge {
                    ConstGauge::new(v).encode(family.encode_family(&labels)?)?;
                } else {
                    ConstCounter::new(v).encode(family.encode_family(&labels)?)?;
                }
            }
        }
    }
    Ok(())
}

/// The storage layer's chunk counts (`storage.metrics On`), under Fluent Bit's names.
fn storage_layer(
    enc: &mut DescriptorEncoder,
    g: &logferry_engine::storage::StorageGauges,
) -> Result<(), std::fmt::Error> {
    use std::sync::atomic::Ordering::Relaxed;
    let fs = g.fs_chunks.load(Relaxed);
    let up = g.fs_chunks_up.load(Relaxed).min(fs);
    let mem = g.mem_chunks.load(Relaxed);
    let families: [(&str, &str, u64); 5] = [
        (
            "fluentbit_storage_chunks",
            "Total number of chunks in the storage layer.",
            fs + mem,
        ),
        (
            "fluentbit_storage_mem_chunks",
            "Total number of memory chunks.",
            mem,
        ),
        (
            "fluentbit_storage_fs_chunks",
            "Total number of filesystem chunks.",
            fs,
        ),
        (
            "fluentbit_storage_fs_chunks_up",
            "Total number of filesystem chunks up in memory.",
            up,
        ),
        (
            "fluentbit_storage_fs_chunks_down",
            "Total number of filesystem chunks down.",
            fs - up,
        ),
    ];
    for (name, help, value) in families {
        gauge(enc, name, help, [], value)?;
    }
    Ok(())
}

fn gauge<const N: usize>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    labels: [(&str, Escaped); N],
    value: u64,
) -> Result<(), std::fmt::Error> {
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    if N == 0 {
        // Without labels: `name 1`, not `name{} 1`.
        return ConstGauge::new(value).encode(family);
    }
    ConstGauge::new(value).encode(family.encode_family(&labels)?)
}

/// Fluent Bit's name for the operating system in `fluentbit_build_info`.
fn os_name() -> &'static str {
    match std::env::consts::OS {
        "windows" if cfg!(target_pointer_width = "64") => "win64",
        "windows" => "win32",
        "linux" => "linux",
        "macos" => "macos",
        "freebsd" => "freebsd",
        _ if cfg!(unix) => "unix",
        _ => "other",
    }
}

/// Every metric of `/api/v{1,2}/metrics/prometheus`.
#[derive(Debug)]
pub(crate) struct PipelineCollector {
    pub source: Arc<Source>,
    /// `/api/v1/metrics/prometheus` also carries the unprefixed `process_start_time_seconds`.
    pub v1: bool,
}

impl Collector for PipelineCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let m = self.source.metrics();
        counters(&mut enc, &Metrics::list(&m.inputs), INPUT_COUNTERS)?;
        counters(&mut enc, &Metrics::list(&m.filters), FILTER_COUNTERS)?;
        counters(&mut enc, &Metrics::list(&m.outputs), OUTPUT_COUNTERS)?;
        input_buffers(&mut enc, &Metrics::list(&m.inputs))?;
        extras(&mut enc, &m)?;
        if let Some(g) = &m.storage {
            storage_layer(&mut enc, g)?;
        }

        let host = || ("hostname", Escaped(&self.source.hostname));
        let start = self.source.started_unix;
        // A gauge here: Fluent Bit types it a counter, but a counter must end in `_total`
        // (OpenMetrics), and the name is what dashboards query.
        gauge(
            &mut enc,
            "fluentbit_uptime",
            "Number of seconds that Fluent Bit has been running.",
            [host()],
            self.source.uptime_secs(),
        )?;
        gauge(
            &mut enc,
            "fluentbit_process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            [host()],
            start,
        )?;
        gauge(
            &mut enc,
            "fluentbit_build_info",
            "Build version information.",
            [
                host(),
                ("version", Escaped(VERSION)),
                ("os", Escaped(os_name())),
            ],
            start,
        )?;
        gauge(
            &mut enc,
            "fluentbit_hot_reloaded_times",
            "Collect the count of hot reloaded times.",
            [host()],
            self.source
                .reloads
                .load(std::sync::atomic::Ordering::Relaxed),
        )?;
        if self.v1 {
            gauge(
                &mut enc,
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                [],
                start,
            )?;
        }
        Ok(())
    }
}

/// Lets one collector be registered with both registries.
#[derive(Debug)]
pub(crate) struct Shared(pub Arc<dyn Collector>);

impl Collector for Shared {
    fn encode(&self, enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(enc)
    }
}

/// OpenMetrics text (as `prometheus-client` writes it) to Prometheus text format 0.0.4, which
/// Fluent Bit serves: a counter family is named with its `_total` suffix, `unknown` is `untyped`,
/// an `info` family is a gauge named `<name>_info`, and there are no `# UNIT`/`# EOF` lines.
pub(crate) fn to_text_004(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<&str> = None;
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = Some(rest);
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.rsplit_once(' ').unwrap_or((rest, "untyped"));
            let (suffix, kind) = match kind {
                "counter" => ("_total", "counter"),
                "info" => ("_info", "gauge"),
                "unknown" => ("", "untyped"),
                k => ("", k),
            };
            if let Some(h) = help.take() {
                let text = h.strip_prefix(name).unwrap_or(h);
                let _ = writeln!(out, "# HELP {name}{suffix}{text}");
            }
            let _ = writeln!(out, "# TYPE {name}{suffix} {kind}");
            continue;
        }
        if let Some(h) = help.take() {
            let _ = writeln!(out, "# HELP {h}");
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    #[test]
    fn openmetrics_becomes_text_004() {
        let om = "# HELP a_b Some help.\n# TYPE a_b counter\na_b_total{name=\"x\"} 1\n\
                  # HELP up Up.\n# TYPE up gauge\nup 3\n# HELP u U.\n# TYPE u unknown\nu 1\n# EOF\n";
        assert_eq!(
            to_text_004(om),
            "# HELP a_b_total Some help.\n# TYPE a_b_total counter\na_b_total{name=\"x\"} 1\n\
             # HELP up Up.\n# TYPE up gauge\nup 3\n# HELP u U.\n# TYPE u untyped\nu 1\n"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Arc::new(Metrics::default());
        m.inputs
            .lock()
            .expect("lock")
            .push(PluginMetrics::new("a\"b\\c"));
        let source = Arc::new(Source::new(m, SystemTime::now(), "h".into()));
        let mut reg = Registry::default();
        reg.register_collector(Box::new(PipelineCollector { source, v1: false }));
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &reg).expect("encode");
        assert!(
            s.contains(r#"fluentbit_input_records_total{name="a\"b\\c"} 0"#),
            "{s}"
        );
    }
}
