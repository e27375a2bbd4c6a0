//! The JSON answers, shaped as Fluent Bit's: `/`, `/api/v1/uptime`, `/api/v1/metrics`,
//! `/api/v1/storage`.

use std::time::Duration;

use logferry_engine::metrics::{Metrics, PluginMetrics};
use serde_json::{json, Map, Value};

/// The version every answer reports.
pub(crate) const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `/`: Fluent Bit's build information, with `edition` and a `logferry` key saying what answers.
pub(crate) fn build_info() -> Value {
    json!({
        "fluent-bit": {
            "version": VERSION,
            "edition": "logferry",
            "flags": ["FLB_HAVE_METRICS", "FLB_HAVE_HTTP_SERVER", "FLB_HAVE_REGEX"],
        },
        "logferry": {
            "version": VERSION,
        },
    })
}

/// `/api/v1/uptime`.
pub(crate) fn uptime(up: Duration) -> Value {
    let secs = up.as_secs();
    json!({ "uptime_sec": secs, "uptime_hr": uptime_hr(secs) })
}

/// Fluent Bit's human-readable uptime, word for word (scripts match it): note the double space
/// after the colon and the plural only above one.
fn uptime_hr(secs: u64) -> String {
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (hours, rest) = (rest / 3_600, rest % 3_600);
    let (minutes, seconds) = (rest / 60, rest % 60);
    let s = |n: u64| if n > 1 { "s" } else { "" };
    format!(
        "Fluent Bit has been running:  {days} day{}, {hours} hour{}, {minutes} minute{} and {seconds} second{}",
        s(days),
        s(hours),
        s(minutes),
        s(seconds)
    )
}

/// `/api/v1/metrics`: `{"input":{name:{...}},"filter":{...},"output":{...}}` with the field
/// names of Fluent Bit's v1 metrics.
pub(crate) fn metrics(m: &Metrics) -> Value {
    let get = PluginMetrics::get;
    let section = |list: &[std::sync::Arc<PluginMetrics>], f: &dyn Fn(&PluginMetrics) -> Value| {
        let mut map = Map::new();
        for p in list {
            map.insert(p.name.clone(), f(p));
        }
        Value::Object(map)
    };
    json!({
        "input": section(&Metrics::list(&m.inputs), &|p| {
            let mut o = Map::new();
            o.insert("records".into(), get(&p.records).into());
            o.insert("bytes".into(), get(&p.bytes).into());
            // Plugin counters Fluent Bit also has (tail's files_opened, ...), under its field
            // names.
            for e in p.extras() {
                if let (Some(field), false) = (e.name.strip_prefix("fluentbit_input_"), e.gauge) {
                    o.insert(
                        field.to_string(),
                        e.value.load(std::sync::atomic::Ordering::Relaxed).into(),
                    );
                }
            }
            Value::Object(o)
        }),
        "filter": section(&Metrics::list(&m.filters), &|p| json!({
            "drop_records": get(&p.dropped_records),
            "add_records": get(&p.retried_records),
            "records": get(&p.records),
            "bytes": get(&p.bytes),
            "drop_bytes": get(&p.dropped_bytes),
        })),
        "output": section(&Metrics::list(&m.outputs), &|p| json!({
            "proc_records": get(&p.records),
            "proc_bytes": get(&p.bytes),
            "errors": get(&p.errors),
            "retries": get(&p.retries),
            "retries_failed": get(&p.retries_failed),
            "dropped_records": get(&p.dropped_records),
            "retried_records": get(&p.retried_records),
        })),
    })
}

/// `/api/v1/storage`, shaped as Fluent Bit's: the storage layer's chunk counts, and per input
/// its buffer (`Mem_Buf_Limit`) and its chunks (filesystem inputs: files not yet delivered
/// everywhere, those in memory, those being flushed).
pub(crate) fn storage(m: &Metrics) -> Value {
    use std::sync::atomic::Ordering::Relaxed;
    let extra = |p: &PluginMetrics, name: &str| {
        p.extras()
            .into_iter()
            .find(|e| e.name == name)
            .map_or(0, |e| e.value.load(Relaxed))
    };
    let mut inputs = Map::new();
    for i in Metrics::list(&m.inputs) {
        let used = PluginMetrics::get(&i.buffer_bytes);
        let limit = PluginMetrics::get(&i.buffer_limit);
        inputs.insert(
            i.name.clone(),
            json!({
                "status": {
                    "overlimit": limit > 0 && used >= limit,
                    "mem_size": human_size(used),
                    "mem_limit": human_size(limit),
                },
                "chunks": {
                    "total": extra(&i, "fluentbit_input_storage_chunks"),
                    "up": extra(&i, "fluentbit_input_storage_chunks_up"),
                    "down": extra(&i, "fluentbit_input_storage_chunks_down"),
                    "busy": extra(&i, "fluentbit_input_storage_chunks_busy"),
                    "busy_size": human_size(extra(&i, "fluentbit_input_storage_chunks_busy_bytes")),
                },
            }),
        );
    }
    let (fs, up, mem) = m.storage.as_ref().map_or((0, 0, 0), |g| {
        let fs = g.fs_chunks.load(Relaxed);
        (
            fs,
            g.fs_chunks_up.load(Relaxed).min(fs),
            g.mem_chunks.load(Relaxed),
        )
    });
    json!({
        "storage_layer": {
            "chunks": {
                "total_chunks": fs + mem,
                "mem_chunks": mem,
                "fs_chunks": fs,
                "fs_chunks_up": up,
                "fs_chunks_down": fs - up,
            },
        },
        "input_chunks": inputs,
    })
}

/// Fluent Bit's `flb_utils_bytes_to_human_readable_size`: `512b`, `1.5K`, `256.0M`.
pub(crate) fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["b", "K", "M", "G", "T", "P", "E"];
    let mut unit = 0;
    let mut scale: u128 = 1;
    while unit + 1 < UNITS.len() && u128::from(bytes) / (scale * 1024) > 0 {
        unit += 1;
        scale *= 1024;
    }
    if unit == 0 {
        format!("{bytes}b")
    } else {
        format!("{:.1}{}", bytes as f64 / scale as f64, UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_reads_like_fluent_bits() {
        assert_eq!(
            uptime_hr(8_950_000),
            "Fluent Bit has been running:  103 days, 14 hours, 6 minutes and 40 seconds"
        );
        assert_eq!(
            uptime_hr(3_661),
            "Fluent Bit has been running:  0 day, 1 hour, 1 minute and 1 second"
        );
        assert_eq!(uptime(Duration::from_secs(5))["uptime_sec"], 5);
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_size(0), "0b");
        assert_eq!(human_size(1023), "1023b");
        assert_eq!(human_size(1536), "1.5K");
        assert_eq!(human_size(256 * 1024 * 1024), "256.0M");
    }

    #[test]
    fn metrics_use_fluent_bits_field_names_in_config_order() {
        let m = Metrics::default();
        for name in ["tail.0", "dummy.1"] {
            m.inputs
                .lock()
                .expect("lock")
                .push(PluginMetrics::new(name));
        }
        m.outputs
            .lock()
            .expect("lock")
            .push(PluginMetrics::new("stdout.0"));
        let v = metrics(&m);
        let keys: Vec<_> = v["input"].as_object().expect("input").keys().collect();
        assert_eq!(keys, ["tail.0", "dummy.1"]);
        let out: Vec<_> = v["output"]["stdout.0"]
            .as_object()
            .expect("output")
            .keys()
            .collect();
        assert_eq!(
            out,
            [
                "proc_records",
                "proc_bytes",
                "errors",
                "retries",
                "retries_failed",
                "dropped_records",
                "retried_records"
            ]
        );
        assert_eq!(v["filter"], json!({}));
    }
}
