//! What a scrape reads ([`Source`]), and the metrics other parts of logferry add through
//! `prometheus-client` [`Collector`]s, served after the pipeline's ([`crate::families`]).
//!
//! `prometheus-client` writes OpenMetrics text; Fluent Bit serves the Prometheus text format
//! 0.0.4. [`to_text_004`] turns the first into the second (the counter family named with its
//! `_total` suffix in `# HELP`/`# TYPE`, no `# EOF`), so the same sample lines come out either
//! way: `fluentbit_input_records_total{name="tail.0"} 42`.

use std::fmt::Write as _;
use std::sync::{Arc, RwLock};
use std::time::{Instant, SystemTime};

use logferry_engine::metrics::Metrics;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

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
            .push(logferry_engine::metrics::PluginMetrics::new("a\"b\\c"));
        let source = Source::new(m, SystemTime::now(), "h".into());
        let s = crate::families::prometheus(&crate::families::v2(&source), false);
        assert!(
            s.contains(r#"fluentbit_input_records_total{name="a\"b\\c"} 0"#),
            "{s}"
        );
    }
}
