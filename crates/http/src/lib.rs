//! logferry-http: the `[SERVICE]` HTTP server (`HTTP_Server On`), answering Fluent Bit's monitoring
//! API so dashboards, probes and scripts built for Fluent Bit keep working:
//!
//! | path | answer |
//! | --- | --- |
//! | `/` | build information (JSON) |
//! | `/api/v1/uptime` | `{"uptime_sec":N,"uptime_hr":"…"}` |
//! | `/api/v1/metrics` | per-instance counters (JSON) with Fluent Bit's field names |
//! | `/api/v1/metrics/prometheus` | the v1 counters as Prometheus text (Fluent Bit's v1 shape) |
//! | `/api/v2/metrics/prometheus` | Fluent Bit's v2 metrics as Prometheus text 0.0.4 (or OpenMetrics) |
//! | `/api/v2/metrics` | the same in cmetrics' text format (Fluent Bit 5.1 serves text here, not JSON) |
//! | `/api/v1/health` | `ok` / `error` (only with `Health_Check On`) |
//! | `/api/v2/health` | `{"status":"ok","errors":0,"retries_failed":0,"error_limit":5,...}`, 200 or 500 |
//! | `/api/v1/plugins` | `{"plugins":{"inputs":[...],"filters":[...],"outputs":[...]}}` |
//! | `/api/v1/storage` | buffer information (only with `storage.metrics On`) |
//! | `/api/v2/reload` | `POST`/`PUT` ask for a hot reload, `GET` counts them |
//!
//! Counters are never copied on the hot path: every answer reads the engine's atomics
//! ([`logferry_engine::metrics::Metrics`]) when it is asked. A hot reload builds a new pipeline with
//! new counters; [`HttpServer::reloaded`] points the server at them.

mod families;
mod health;
mod json;
mod options;
mod prom;
mod server;

pub use health::HealthReport;
pub use options::{HttpOptions, PluginNames};
pub use prometheus_client::collector::Collector;
pub use server::{HttpServer, ReloadRequest};
