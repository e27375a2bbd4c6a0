//! What the server is started with: the `[SERVICE]` keys it reads, plus the few settings logferry
//! adds (no-progress detection, the sampling step of the health window) that have no Fluent Bit
//! key.

use std::time::{Duration, SystemTime};

use logferry_engine::common::ServiceOptions;

/// The server's settings. [`HttpOptions::from_service`] takes them from `[SERVICE]`.
#[derive(Clone, Debug)]
pub struct HttpOptions {
    /// `HTTP_Listen`: address to listen on.
    pub listen: String,
    /// `HTTP_Port`: port to listen on (0: any free port; [`crate::HttpServer::local_addr`] tells
    /// which).
    pub port: u16,
    /// `Health_Check`: serve `/api/v1/health` (404 otherwise, like Fluent Bit).
    pub health_check: bool,
    /// `HC_Errors_Count`: unhealthy when more output errors than this happened within `hc_period`.
    pub hc_errors_count: u64,
    /// `HC_Retry_Failure_Count`: unhealthy when more retries than this were given up within
    /// `hc_period`.
    pub hc_retry_failure_count: u64,
    /// `HC_Period`: the window errors and retry failures are counted over.
    pub hc_period: Duration,
    /// logferry only (off by default, no Fluent Bit key): unhealthy when records came in (or an
    /// input was paused by `Mem_Buf_Limit`) after the outputs last made progress, and no output
    /// delivered or dropped anything for this long. Catches an output that hangs without
    /// reporting errors. Records no output matches also count as waiting, so set it well above
    /// `Flush` plus the retry waits, and only where every record has an output.
    pub hc_no_progress: Option<Duration>,
    /// How often the health window takes a sample of the counters (1s in production; tests use
    /// less).
    pub health_sample_interval: Duration,
    /// `Hot_Reload`: accept `POST`/`PUT /api/v2/reload`.
    pub hot_reload: bool,
    /// `storage.metrics`: serve `/api/v1/storage`.
    pub storage_metrics: bool,
    /// The `hostname` label of the process-wide metrics (`fluentbit_uptime`, ...).
    pub hostname: String,
    /// When the agent started (`fluentbit_process_start_time_seconds`, uptime). Set it from the
    /// start of `main` so uptime survives restarts of the server.
    pub started_at: SystemTime,
    /// How long in-flight requests may take to finish once the stop token is cancelled.
    pub shutdown_timeout: Duration,
    /// What `/api/v1/plugins` lists.
    pub plugins: PluginNames,
}

/// The plugins of this binary, by kind, for `/api/v1/plugins`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PluginNames {
    pub inputs: Vec<String>,
    pub filters: Vec<String>,
    pub outputs: Vec<String>,
}

impl PluginNames {
    /// The names in `registry`.
    pub fn of(registry: &logferry_engine::Registry) -> Self {
        PluginNames {
            inputs: registry.inputs.iter().map(|p| p.name.to_string()).collect(),
            filters: registry
                .filters
                .iter()
                .map(|p| p.name.to_string())
                .collect(),
            outputs: registry
                .outputs
                .iter()
                .map(|p| p.name.to_string())
                .collect(),
        }
    }
}

impl Default for HttpOptions {
    /// Fluent Bit's defaults: `0.0.0.0:2020`, health check off (5 errors, 5 retry failures,
    /// 60s), hot reload off, storage metrics off.
    fn default() -> Self {
        HttpOptions {
            listen: "0.0.0.0".into(),
            port: 2020,
            health_check: false,
            hc_errors_count: 5,
            hc_retry_failure_count: 5,
            hc_period: Duration::from_secs(60),
            hc_no_progress: None,
            health_sample_interval: Duration::from_secs(1),
            hot_reload: false,
            storage_metrics: false,
            hostname: hostname(),
            started_at: SystemTime::now(),
            shutdown_timeout: Duration::from_secs(1),
            plugins: PluginNames::default(),
        }
    }
}

impl HttpOptions {
    /// The settings `[SERVICE]` gives (`HTTP_Listen`, `HTTP_Port`, `Health_Check`,
    /// `HC_Errors_Count`, `HC_Retry_Failure_Count`, `HC_Period`, `Hot_Reload`,
    /// `storage.metrics`); the rest keep their defaults.
    pub fn from_service(service: &ServiceOptions) -> Self {
        HttpOptions {
            listen: service.http_listen.clone(),
            port: service.http_port,
            health_check: service.health_check,
            hc_errors_count: service.hc_errors_count,
            hc_retry_failure_count: service.hc_retry_failure_count,
            hc_period: Duration::from_secs(service.hc_period),
            hot_reload: service.hot_reload,
            storage_metrics: service.storage_metrics,
            ..HttpOptions::default()
        }
    }
}

/// The machine's host name, as Fluent Bit puts it in the `hostname` label.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_service_reads_the_service_keys() {
        let mut s = ServiceOptions::defaults().expect("defaults");
        s.http_port = 2021;
        s.health_check = true;
        s.hc_period = 5;
        s.hot_reload = true;
        let o = HttpOptions::from_service(&s);
        assert_eq!(o.listen, "0.0.0.0");
        assert_eq!(o.port, 2021);
        assert!(o.health_check && o.hot_reload && !o.storage_metrics);
        assert_eq!((o.hc_errors_count, o.hc_retry_failure_count), (5, 5));
        assert_eq!(o.hc_period, Duration::from_secs(5));
        assert!(o.hc_no_progress.is_none());
        assert!(!o.hostname.is_empty());
    }
}
