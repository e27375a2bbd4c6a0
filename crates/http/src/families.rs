//! The metrics of one scrape as a list of families, and the three ways Fluent Bit 5.1 writes
//! them: Prometheus text 0.0.4 (`/api/v2/metrics/prometheus`), cmetrics' text
//! (`/api/v2/metrics`) and OpenMetrics (asked for with `Accept`). `/api/v1/metrics/prometheus`
//! is built separately ([`v1_prometheus`]): Fluent Bit derives it from its v1 JSON, with
//! another shape.
//!
//! Every value is read from the engine's atomics when the scrape asks; nothing is copied on
//! the hot path.

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use logferry_engine::metrics::{LogCounts, Metrics, PluginMetrics, LATENCY_BUCKETS, LOG_COUNTS};

use crate::json::VERSION;
use crate::prom::Source;

/// A family's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One sample's value.
#[derive(Clone, Debug)]
pub(crate) enum Val {
    Int(u64),
    /// Cumulative bucket counts (per [`LATENCY_BUCKETS`], then `+Inf`), sum, count.
    Hist(Vec<u64>, f64, u64),
}

#[derive(Clone, Debug)]
pub(crate) struct Sample {
    pub labels: Vec<(&'static str, String)>,
    pub value: Val,
}

/// A metric family: Fluent Bit's full name (counters end in `_total`, except
/// `fluentbit_uptime` and `fluentbit_hot_reloaded_times`, named as Fluent Bit names them).
#[derive(Clone, Debug)]
pub(crate) struct Family {
    pub name: String,
    pub help: String,
    pub kind: Kind,
    pub samples: Vec<Sample>,
}

impl Family {
    fn new(name: impl Into<String>, help: impl Into<String>, kind: Kind) -> Self {
        Family {
            name: name.into(),
            help: help.into(),
            kind,
            samples: Vec::new(),
        }
    }

    fn push(&mut self, labels: Vec<(&'static str, String)>, v: u64) {
        self.samples.push(Sample {
            labels,
            value: Val::Int(v),
        });
    }
}

type Field = fn(&PluginMetrics) -> u64;

fn per_instance(
    out: &mut Vec<Family>,
    list: &[Arc<PluginMetrics>],
    kind: Kind,
    families: &[(&str, &str, Field)],
) {
    if list.is_empty() {
        return;
    }
    for (name, help, field) in families {
        let mut f = Family::new(*name, *help, kind);
        for p in list {
            f.push(vec![("name", p.name.clone())], field(p));
        }
        out.push(f);
    }
}

const INPUT_COUNTERS: &[(&str, &str, Field)] = &[
    (
        "fluentbit_input_bytes_total",
        "Number of input bytes.",
        |p| PluginMetrics::get(&p.bytes),
    ),
    (
        "fluentbit_input_records_total",
        "Number of input records.",
        |p| PluginMetrics::get(&p.records),
    ),
    // Fluent Bit's ring buffer carries records of threaded inputs to the engine; logferry's
    // inputs send over a bounded channel and wait instead of retrying, so these stay 0.
    (
        "fluentbit_input_ring_buffer_writes_total",
        "Number of ring buffer writes.",
        |_| 0,
    ),
    (
        "fluentbit_input_ring_buffer_retries_total",
        "Number of ring buffer retries.",
        |_| 0,
    ),
    (
        "fluentbit_input_ring_buffer_retry_failures_total",
        "Number of ring buffer retry failures.",
        |_| 0,
    ),
];

const FILTER_COUNTERS: &[(&str, &str, Field)] = &[
    (
        "fluentbit_filter_records_total",
        "Total number of new records processed.",
        |p| PluginMetrics::get(&p.records),
    ),
    (
        "fluentbit_filter_bytes_total",
        "Total number of new bytes processed.",
        |p| PluginMetrics::get(&p.bytes),
    ),
    (
        "fluentbit_filter_add_records_total",
        "Total number of new added records.",
        |p| PluginMetrics::get(&p.retried_records),
    ),
    (
        "fluentbit_filter_drop_records_total",
        "Total number of dropped records.",
        |p| PluginMetrics::get(&p.dropped_records),
    ),
    (
        "fluentbit_filter_drop_bytes_total",
        "Total number of dropped bytes.",
        |p| PluginMetrics::get(&p.dropped_bytes),
    ),
];

const OUTPUT_COUNTERS: &[(&str, &str, Field)] = &[
    (
        "fluentbit_output_proc_records_total",
        "Number of processed output records.",
        |p| PluginMetrics::get(&p.records),
    ),
    (
        "fluentbit_output_proc_bytes_total",
        "Number of processed output bytes.",
        |p| PluginMetrics::get(&p.bytes),
    ),
    (
        "fluentbit_output_errors_total",
        "Number of output errors.",
        |p| PluginMetrics::get(&p.errors),
    ),
    (
        "fluentbit_output_retries_total",
        "Number of output retries.",
        |p| PluginMetrics::get(&p.retries),
    ),
    (
        "fluentbit_output_retries_failed_total",
        "Number of abandoned batches because the maximum number of re-tries was reached.",
        |p| PluginMetrics::get(&p.retries_failed),
    ),
    (
        "fluentbit_output_dropped_records_total",
        "Number of dropped records.",
        |p| PluginMetrics::get(&p.dropped_records),
    ),
    (
        "fluentbit_output_retried_records_total",
        "Number of retried records.",
        |p| PluginMetrics::get(&p.retried_records),
    ),
];

const OUTPUT_GAUGES: &[(&str, &str, Field)] = &[
    // logferry's outputs keep no connection pool the engine sees (the AWS SDK pools its
    // own), as Fluent Bit's stdout/null/file have none: 0.
    (
        "fluentbit_output_upstream_total_connections",
        "Total Connection count.",
        |_| 0,
    ),
    (
        "fluentbit_output_upstream_busy_connections",
        "Busy Connection count.",
        |_| 0,
    ),
    (
        "fluentbit_output_chunk_available_capacity_percent",
        "Available chunk capacity (percent)",
        |p| PluginMetrics::get(&p.capacity_percent),
    ),
];

/// Whether the input is over its `Mem_Buf_Limit`.
fn over_limit(p: &PluginMetrics) -> u64 {
    u64::from(PluginMetrics::get(&p.buffer_bytes) >= PluginMetrics::get(&p.buffer_limit).max(1))
}

const INPUT_GAUGES: &[(&str, &str, Field)] = &[
    (
        "fluentbit_input_ingestion_paused",
        "Is the input paused or not?",
        over_limit,
    ),
    (
        "fluentbit_input_storage_overlimit",
        "Is the input memory usage overlimit ?.",
        over_limit,
    ),
    (
        "fluentbit_input_storage_memory_bytes",
        "Memory bytes used by the chunks.",
        |p| PluginMetrics::get(&p.buffer_bytes),
    ),
];

const LOGFERRY_INPUT_COUNTERS: &[(&str, &str, Field)] = &[
    (
        "logferry_input_paused_total",
        "Number of times the input was paused because its Mem_Buf_Limit was reached.",
        |p| PluginMetrics::get(&p.paused),
    ),
    (
        "logferry_input_read_bytes_total",
        "Bytes the input read from its source (raw bytes, where fluentbit_input_bytes_total counts records in Fluent Bit's event encoding).",
        |p| PluginMetrics::get(&p.read_bytes),
    ),
];

/// The families of `/api/v2/metrics*`, in Fluent Bit 5.1's order, then logferry's own.
pub(crate) fn v2(source: &Source) -> Vec<Family> {
    let m = source.metrics();
    let (inputs, filters, outputs) = (
        Metrics::list(&m.inputs),
        Metrics::list(&m.filters),
        Metrics::list(&m.outputs),
    );
    let host = || vec![("hostname", source.hostname.clone())];
    let mut out = Vec::new();

    let mut f = Family::new(
        "fluentbit_uptime",
        "Number of seconds that Fluent Bit has been running.",
        Kind::Counter,
    );
    f.push(host(), source.uptime_secs());
    out.push(f);
    let mut f = Family::new(
        "fluentbit_hot_reloaded_times",
        "Collect the count of hot reloaded times.",
        Kind::Counter,
    );
    f.push(host(), source.reloads.load(Relaxed));
    out.push(f);

    let mut f = Family::new(
        "logferry_regex_limit_errors_total",
        "Regular expression searches a backtracking engine gave up on (its limit); each text was passed on as not matched, and logged.",
        Kind::Counter,
    );
    f.push(
        Vec::new(),
        logferry_core::fb_regex::LIMIT_ERRORS.load(Relaxed),
    );
    out.push(f);
    let mut f = Family::new(
        "logferry_packed_records_total",
        "Records packed while they waited for an output whose destination was slower than the inputs.",
        Kind::Counter,
    );
    f.push(
        Vec::new(),
        logferry_core::packed::PACKED_RECORDS.load(Relaxed),
    );
    out.push(f);
    let mut f = Family::new(
        "fluentbit_logger_logs_total",
        "Total number of logs",
        Kind::Counter,
    );
    let mut logged = 0;
    for (level, n) in LogCounts::LEVELS.iter().zip(&LOG_COUNTS.by_level) {
        let n = n.load(Relaxed);
        logged += n;
        f.push(vec![("message_type", (*level).to_string())], n);
    }
    out.push(f);
    // logferry writes each message as it is logged: all are enqueued and drained, none dropped.
    for (name, help, v) in [
        (
            "fluentbit_logger_queue_enqueued_total",
            "Total number of logger queue enqueues",
            logged,
        ),
        (
            "fluentbit_logger_queue_dropped_total",
            "Total number of logger queue drops",
            0,
        ),
        (
            "fluentbit_logger_queue_drained_total",
            "Total number of logger queue records drained",
            logged,
        ),
    ] {
        let mut f = Family::new(name, help, Kind::Counter);
        f.push(Vec::new(), v);
        out.push(f);
    }

    // Routes appear once used, as Fluent Bit's series do; drop series once something dropped.
    let routes = m.routes();
    let route_labels = |r: &logferry_engine::metrics::RouteMetrics| {
        vec![("input", r.input.to_string()), ("output", r.output.clone())]
    };
    type RouteField = fn(&logferry_engine::metrics::RouteMetrics) -> u64;
    let route_families: [(&str, &str, RouteField, bool); 4] = [
        (
            "fluentbit_routing_logs_records_total",
            "Total log records routed from input to output",
            |r| PluginMetrics::get(&r.records),
            false,
        ),
        (
            "fluentbit_routing_logs_bytes_total",
            "Total bytes routed from input to output (logs)",
            |r| PluginMetrics::get(&r.bytes),
            false,
        ),
        (
            "fluentbit_routing_logs_drop_records_total",
            "Total log records dropped during routing",
            |r| PluginMetrics::get(&r.drop_records),
            true,
        ),
        (
            "fluentbit_routing_logs_drop_bytes_total",
            "Total bytes dropped during routing (logs)",
            |r| PluginMetrics::get(&r.drop_bytes),
            true,
        ),
    ];
    for (name, help, field, drops) in route_families {
        let mut f = Family::new(name, help, Kind::Counter);
        for r in &routes {
            let used = if drops {
                PluginMetrics::get(&r.drop_records) > 0
            } else {
                PluginMetrics::get(&r.records) > 0
            };
            if used {
                f.push(route_labels(r), field(r));
            }
        }
        out.push(f);
    }

    per_instance(&mut out, &inputs, Kind::Counter, INPUT_COUNTERS);
    plugin_extras(&mut out, &m, true, false);
    per_instance(&mut out, &filters, Kind::Counter, FILTER_COUNTERS);
    per_instance(&mut out, &outputs, Kind::Counter, OUTPUT_COUNTERS);

    let start = source.started_unix;
    let mut f = Family::new(
        "fluentbit_process_start_time_seconds",
        "Start time of the process since unix epoch in seconds.",
        Kind::Gauge,
    );
    f.push(host(), start);
    out.push(f);
    let mut f = Family::new(
        "fluentbit_build_info",
        "Build version information.",
        Kind::Gauge,
    );
    let mut labels = host();
    labels.push(("version", VERSION.to_string()));
    labels.push(("os", os_name().to_string()));
    f.push(labels, start);
    out.push(f);

    if let Some(g) = &m.storage {
        let fs = g.fs_chunks.load(Relaxed);
        let up = g.fs_chunks_up.load(Relaxed).min(fs);
        let mem = g.mem_chunks.load(Relaxed);
        for (name, help, v) in [
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
        ] {
            let mut f = Family::new(name, help, Kind::Gauge);
            f.push(Vec::new(), v);
            out.push(f);
        }
    }

    per_instance(&mut out, &inputs, Kind::Gauge, INPUT_GAUGES);
    plugin_extras(&mut out, &m, true, true);
    per_instance(&mut out, &outputs, Kind::Gauge, OUTPUT_GAUGES);

    let mut f = Family::new(
        "fluentbit_output_latency_seconds",
        "End-to-end latency in seconds",
        Kind::Histogram,
    );
    for r in &routes {
        let (buckets, sum, count) = r.latency.snapshot();
        if count > 0 {
            f.samples.push(Sample {
                labels: route_labels(r),
                value: Val::Hist(buckets, sum, count),
            });
        }
    }
    out.push(f);

    // logferry's own series.
    per_instance(&mut out, &inputs, Kind::Counter, LOGFERRY_INPUT_COUNTERS);
    plugin_extras(&mut out, &m, false, false);
    plugin_extras(&mut out, &m, false, true);
    out.retain(|f| !f.samples.is_empty());
    out
}

/// Plugin-specific metrics ([`PluginMetrics::register`]): Fluent Bit's own names (`fluentbit_`
/// ones) or, when `fluent` is false, logferry's (`logferry_<name>`), counters or gauges. A
/// Fluent Bit plugin counter appears once it moved, as Fluent Bit's do (`files_closed_total`
/// is not served before a file was closed); logferry's and gauges always.
fn plugin_extras(out: &mut Vec<Family>, m: &Metrics, fluent: bool, gauges: bool) {
    let all: Vec<Arc<PluginMetrics>> = Metrics::list(&m.inputs)
        .into_iter()
        .chain(Metrics::list(&m.filters))
        .chain(Metrics::list(&m.outputs))
        .collect();
    let mut families: Vec<Family> = Vec::new();
    for p in &all {
        for e in p.extras() {
            if e.gauge != gauges || e.name.starts_with("fluentbit_") != fluent {
                continue;
            }
            let v = e.value.load(Relaxed);
            if fluent && !gauges && v == 0 {
                continue;
            }
            let name = match (fluent, gauges) {
                (true, false) => format!("{}_total", e.name),
                (true, true) => e.name.to_string(),
                (false, false) => format!("logferry_{}_total", e.name),
                (false, true) => format!("logferry_{}", e.name),
            };
            let i = match families.iter().position(|f| f.name == name) {
                Some(i) => i,
                None => {
                    let kind = if gauges { Kind::Gauge } else { Kind::Counter };
                    families.push(Family::new(name, e.help, kind));
                    families.len() - 1
                }
            };
            families[i].push(vec![("name", p.name.clone())], v);
        }
    }
    out.extend(families);
}

/// Fluent Bit's name for the operating system in `fluentbit_build_info`.
pub(crate) fn os_name() -> &'static str {
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

/// A label value escaped as the text formats want.
fn escape(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn labels(out: &mut String, first: Option<(&str, &str)>, labels: &[(&'static str, String)]) {
    if first.is_none() && labels.is_empty() {
        return;
    }
    out.push('{');
    let mut sep = "";
    for (k, v) in first
        .into_iter()
        .chain(labels.iter().map(|(k, v)| (*k, v.as_str())))
    {
        out.push_str(sep);
        out.push_str(k);
        out.push_str("=\"");
        escape(v, out);
        out.push('"');
        sep = ",";
    }
    out.push('}');
}

/// A bucket bound as Fluent Bit's Prometheus encoder writes it (`0.5`, `1.0`, `30.0`).
fn bound(b: f64) -> String {
    if b.fract() == 0.0 {
        format!("{b:.1}")
    } else {
        format!("{b}")
    }
}

/// Prometheus text format 0.0.4, as Fluent Bit's `/api/v2/metrics/prometheus` writes it
/// (OpenMetrics when `openmetrics`: counter families named without `_total`, `# EOF`).
pub(crate) fn prometheus(families: &[Family], openmetrics: bool) -> String {
    let mut out = String::new();
    for f in families {
        let kind = match f.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let (family, sample) = if openmetrics && f.kind == Kind::Counter {
            let base = f.name.strip_suffix("_total").unwrap_or(&f.name);
            (base.to_string(), format!("{base}_total"))
        } else {
            (f.name.clone(), f.name.clone())
        };
        let _ = writeln!(out, "# HELP {family} {}", f.help);
        let _ = writeln!(out, "# TYPE {family} {kind}");
        for s in &f.samples {
            match &s.value {
                Val::Int(v) => {
                    out.push_str(&sample);
                    labels(&mut out, None, &s.labels);
                    let _ = writeln!(out, " {v}");
                }
                Val::Hist(buckets, sum, count) => {
                    for (i, n) in buckets.iter().enumerate() {
                        let le = LATENCY_BUCKETS
                            .get(i)
                            .map_or_else(|| "+Inf".to_string(), |b| bound(*b));
                        let _ = write!(out, "{sample}_bucket");
                        labels(&mut out, Some(("le", &le)), &s.labels);
                        let _ = writeln!(out, " {n}");
                    }
                    let _ = write!(out, "{sample}_sum");
                    labels(&mut out, None, &s.labels);
                    let _ = writeln!(out, " {sum}");
                    let _ = write!(out, "{sample}_count");
                    labels(&mut out, None, &s.labels);
                    let _ = writeln!(out, " {count}");
                }
            }
        }
    }
    out
}

/// cmetrics' text format, which Fluent Bit 5.1 serves at `/api/v2/metrics`:
/// `2026-11-29T14:33:23.084122644Z fluentbit_uptime{hostname="vm"} = 6`. logferry stamps every
/// sample with the time of the scrape.
pub(crate) fn cmetrics_text(families: &[Family], now: &str) -> String {
    let mut out = String::new();
    for f in families {
        for s in &f.samples {
            let _ = write!(out, "{now} {}", f.name);
            labels(&mut out, None, &s.labels);
            match &s.value {
                Val::Int(v) => {
                    let _ = writeln!(out, " = {v}");
                }
                Val::Hist(buckets, sum, count) => {
                    out.push_str(" = { buckets = { ");
                    for (i, n) in buckets.iter().enumerate() {
                        if i > 0 {
                            out.push_str(", ");
                        }
                        match LATENCY_BUCKETS.get(i) {
                            Some(b) => {
                                let _ = write!(out, "{b}={n}");
                            }
                            None => {
                                let _ = write!(out, "+Inf={n}");
                            }
                        }
                    }
                    let _ = writeln!(out, " }}, sum={sum}, count={count} }}");
                }
            }
        }
    }
    out
}

/// The help Fluent Bit's v1 Prometheus endpoint gives a `fluentbit_<kind>_<metric>_total`.
fn v1_help(name: &str) -> &'static str {
    const HELP: &[(&str, &str)] = &[
        ("input_bytes", "Number of input bytes."),
        ("input_records", "Number of input records."),
        ("output_bytes", "Number of output bytes."),
        ("output_records", "Number of output records."),
        ("output_errors", "Number of output errors."),
        (
            "output_retries_failed",
            "Number of abandoned batches because the maximum number of re-tries was reached.",
        ),
        ("output_retries", "Number of output retries."),
        ("output_proc_records", "Number of processed output records."),
        ("output_proc_bytes", "Number of processed output bytes."),
        ("output_dropped_records", "Number of dropped records."),
        ("output_retried_records", "Number of retried records."),
    ];
    HELP.iter()
        .find(|(k, _)| name.contains(k))
        .map_or("Fluentbit metrics.", |(_, h)| h)
}

/// `/api/v1/metrics/prometheus` as Fluent Bit 5.1 writes it: each field of the v1 JSON as a
/// counter `fluentbit_<kind>_<field>_total{name}` with the time of the scrape in milliseconds,
/// families sorted by name, then `fluentbit_uptime`, `process_start_time_seconds` and
/// `fluentbit_build_info{version,edition}`.
pub(crate) fn v1_prometheus(source: &Source, now_ms: u128) -> String {
    let v1 = crate::json::metrics(&source.metrics());
    let mut fams: std::collections::BTreeMap<String, Vec<(String, u64)>> = Default::default();
    for kind in ["input", "filter", "output"] {
        let Some(instances) = v1[kind].as_object() else {
            continue;
        };
        for (instance, fields) in instances {
            let Some(fields) = fields.as_object() else {
                continue;
            };
            for (field, v) in fields {
                fams.entry(format!("fluentbit_{kind}_{field}_total"))
                    .or_default()
                    .push((instance.clone(), v.as_u64().unwrap_or(0)));
            }
        }
    }
    let mut out = String::new();
    for (name, mut samples) in fams {
        samples.sort();
        let _ = writeln!(out, "# HELP {name} {}", v1_help(&name));
        let _ = writeln!(out, "# TYPE {name} counter");
        for (instance, v) in samples {
            let mut l = String::new();
            escape(&instance, &mut l);
            let _ = writeln!(out, "{name}{{name=\"{l}\"}} {v} {now_ms}");
        }
    }
    let _ = writeln!(
        out,
        "# HELP fluentbit_uptime Number of seconds that Fluent Bit has been running.\n\
         # TYPE fluentbit_uptime counter\nfluentbit_uptime {}",
        source.uptime_secs()
    );
    let _ = writeln!(
        out,
        "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.\n\
         # TYPE process_start_time_seconds gauge\nprocess_start_time_seconds {}",
        source.started_unix
    );
    let _ = writeln!(
        out,
        "# HELP fluentbit_build_info Build version information.\n\
         # TYPE fluentbit_build_info gauge\nfluentbit_build_info{{version=\"{VERSION}\",edition=\"logferry\"}} 1"
    );
    out
}
