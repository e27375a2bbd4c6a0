//! The agent's own log, in Fluent Bit's shape so that alerts grepping it keep working:
//!
//! ```text
//! [2026/11/29 14:25:33.120] [ info] [input:tail:tail.0] following file file=/var/log/a.log
//! [2026/11/29 14:25:34.002] [ warn] [output:cloudwatch_logs:cloudwatch_logs.0] flush failed; will retry ...
//! ```
//!
//! As Fluent Bit 5.1.1 writes it: local time with milliseconds, the level padded to five
//! (`[ info]`, `[ warn]`, `[error]`, `[debug]`, `[trace]`), then the component: the plugin
//! instance (`input:<plugin>:<instance>`) when the event names one, else the part of the agent
//! (`engine`, `storage`, `http_server`, `config`). Fields other than the message follow as
//! `key=value`. `logferry.log_format json` writes one JSON object per line instead. Every
//! message is also counted by level for `fluentbit_logger_logs_total`.

use std::fmt::{self, Write as _};
use std::sync::atomic::Ordering;

use logferry_engine::metrics::LOG_COUNTS;
use logferry_engine::self_log;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// How log lines are written (`logferry.log_format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Fluent Bit's line: `[time] [level] [component] message key=value`.
    FluentBit,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// Reads the `logferry.log_format` value.
    pub fn parse(v: &str) -> Result<Self, String> {
        match v.to_ascii_lowercase().as_str() {
            "fluent-bit" | "fluentbit" | "text" => Ok(LogFormat::FluentBit),
            "json" => Ok(LogFormat::Json),
            other => Err(format!(
                "logferry.log_format: '{other}' is not one of fluent-bit, json"
            )),
        }
    }
}

/// Fluent Bit's level tag, padded as it pads it.
fn level_tag(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "error",
        Level::WARN => " warn",
        Level::INFO => " info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    }
}

fn level_index(level: &Level) -> usize {
    match *level {
        Level::ERROR => 0,
        Level::WARN => 1,
        Level::INFO => 2,
        Level::DEBUG => 3,
        Level::TRACE => 4,
    }
}

/// The fields of one event: its message, the plugin instance it names, and the rest.
#[derive(Default)]
struct Fields {
    message: String,
    /// (`input` | `filter` | `output`, instance name).
    instance: Option<(&'static str, String)>,
    rest: Vec<(&'static str, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field.name(), value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field.name(), format!("{value:?}"));
    }
}

impl Fields {
    fn put(&mut self, name: &'static str, value: String) {
        match name {
            "message" => self.message = value,
            "input" | "filter" | "output" if self.instance.is_none() => {
                self.instance = Some((name, value));
            }
            _ => self.rest.push((name, value)),
        }
    }

    /// What follows the level on a Fluent Bit line: `[component] message key=value`.
    fn text(&self, component: &str) -> String {
        let mut line = String::with_capacity(64 + self.message.len());
        let _ = write!(line, "[{component}] {}", self.message);
        for (k, v) in &self.rest {
            if v.is_empty() || v.contains(char::is_whitespace) || v.contains('"') {
                let _ = write!(line, " {k}={v:?}");
            } else {
                let _ = write!(line, " {k}={v}");
            }
        }
        line
    }

    /// Fluent Bit's component: `input:tail:tail.0` for an instance (the plugin is the name
    /// without its `.N`; an `Alias` shows as `input:<alias>`), else the part of the agent.
    fn component(&self, target: &str) -> String {
        if let Some((kind, name)) = &self.instance {
            return match name.rsplit_once('.') {
                Some((plugin, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
                    format!("{kind}:{plugin}:{name}")
                }
                _ => format!("{kind}:{name}"),
            };
        }
        let mut parts = target.split("::");
        let krate = parts.next().unwrap_or_default();
        let module = parts.next().unwrap_or_default();
        match (krate, module) {
            ("logferry_engine", "storage") => "storage",
            ("logferry_engine", _) => "engine",
            ("logferry_http", _) => "http_server",
            ("logferry_core", "config") => "config",
            ("logferry_tail", _) => "input:tail",
            ("logferry_kubernetes", _) => "filter:kubernetes",
            ("logferry_parsers", _) => "parser",
            ("logferry_aws", _) => "aws",
            ("logferry_inputs", _) => "input",
            ("logferry_filters", _) => "filter",
            ("logferry_outputs", _) => "output",
            ("logferry", _) => "fluent bit",
            (other, _) => other,
        }
        .to_string()
    }
}

/// Writes events in [`LogFormat`].
pub struct Format(pub LogFormat);

impl<S, N> FormatEvent<S, N> for Format
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let meta = event.metadata();
        let component = fields.component(meta.target());
        let now = chrono::Local::now();
        match self.0 {
            LogFormat::FluentBit => {
                writeln!(
                    w,
                    "[{}] [{}] {}",
                    now.format("%Y/%m/%d %H:%M:%S%.3f"),
                    level_tag(meta.level()),
                    fields.text(&component)
                )
            }
            LogFormat::Json => {
                let mut o = serde_json::Map::new();
                o.insert(
                    "time".into(),
                    now.format("%Y-%m-%dT%H:%M:%S%.3f%:z").to_string().into(),
                );
                o.insert("level".into(), level_tag(meta.level()).trim_start().into());
                o.insert("component".into(), component.into());
                o.insert("message".into(), fields.message.into());
                if let Some((kind, name)) = fields.instance {
                    o.insert(kind.into(), name.into());
                }
                for (k, v) in fields.rest {
                    o.insert(k.into(), v.into());
                }
                writeln!(w, "{}", serde_json::Value::Object(o))
            }
        }
    }
}

/// Counts every message logged, by level (`fluentbit_logger_logs_total{message_type}`), and
/// mirrors it to the `fluentbit_logs` inputs while one runs.
pub struct CountLayer;

impl<S: Subscriber> Layer<S> for CountLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        LOG_COUNTS.by_level[level_index(meta.level())].fetch_add(1, Ordering::Relaxed);
        if self_log::active() {
            let mut fields = Fields::default();
            event.record(&mut fields);
            let component = fields.component(meta.target());
            self_log::publish(self_log::LogLine {
                time: logferry_core::EventTime::now(),
                level: level_tag(meta.level()).trim_start(),
                message: fields.text(&component),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_name_the_plugin_and_instance_as_fluent_bit_does() {
        let f = |kind, name: &str| Fields {
            instance: Some((kind, name.to_string())),
            ..Fields::default()
        };
        assert_eq!(f("input", "tail.0").component("x"), "input:tail:tail.0");
        assert_eq!(
            f("output", "cloudwatch_logs.2").component("x"),
            "output:cloudwatch_logs:cloudwatch_logs.2"
        );
        assert_eq!(f("input", "app_logs").component("x"), "input:app_logs");
        let none = Fields::default();
        assert_eq!(none.component("logferry_engine::output"), "engine");
        assert_eq!(none.component("logferry_engine::storage::mod"), "storage");
        assert_eq!(none.component("logferry_http::server"), "http_server");
    }

    #[test]
    fn levels_are_padded_as_fluent_bits() {
        assert_eq!(level_tag(&Level::INFO), " info");
        assert_eq!(level_tag(&Level::WARN), " warn");
        assert_eq!(level_tag(&Level::ERROR), "error");
        assert_eq!(level_tag(&Level::DEBUG), "debug");
        assert_eq!(level_tag(&Level::TRACE), "trace");
        assert!(LogFormat::parse("JSON").is_ok_and(|f| f == LogFormat::Json));
        assert!(LogFormat::parse("xml").is_err());
    }
}
