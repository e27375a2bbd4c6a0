//! Options every section of a kind shares (`Name`, `Tag`, `Match`, `Retry_Limit`, ...), and the
//! `[SERVICE]` options. Keys Fluent Bit accepts but logferry does not act on are declared too and
//! say so in their doc, so that an existing config loads unchanged.

use std::time::Duration;

use logferry_core::config::{ByteSize, SizeLimit};
use logferry_core::options;

options! {
    /// Keys every `[INPUT]` takes.
    pub struct InputCommon for "input" {
        /// Plugin name.
        pub name: String = ["Name"] None,
        /// Tag of the records this input produces (default: the instance name).
        pub tag: Option<String> = ["Tag"] None,
        /// Instance name used in logs and metrics instead of `<plugin>.<n>`.
        pub alias: Option<String> = ["Alias"] None,
        /// Pause the input while its buffered, undelivered records exceed this size (logferry
        /// default when unset: 256MB, Fluent Bit's `storage.max_chunks_up` x 2MB).
        pub mem_buf_limit: Option<ByteSize> = ["Mem_Buf_Limit"] None,
        /// Log level of this instance.
        pub log_level: Option<logferry_core::config::LogLevel> = ["Log_Level"] None,
        /// Seconds between repeats of the same log message (accepted; not applied).
        pub log_suppress_interval: Option<String> = ["Log_Suppress_Interval"] None,
        /// Run the input in its own thread (every logferry input is its own task).
        pub threaded: bool = ["Threaded"] Some("off"),
        /// Buffer type: `memory` (paused at Mem_Buf_Limit) or `filesystem` (chunks written to
        /// `storage.path` and acknowledged once on disk); unset: `[SERVICE] storage.type` with
        /// `storage.inherit On`, else memory.
        pub storage_type: Option<String> = ["storage.type"] None,
        /// Filesystem inputs: pause instead of letting an output drop its oldest chunks when it
        /// is over its `storage.total_limit_size`.
        pub storage_pause: bool = ["storage.pause_on_chunks_overlimit"] Some("off"),
        /// Whether records may be routed (accepted; only `true` is applied).
        pub routable: bool = ["Routable"] Some("true"),
        /// Ring buffer between a threaded input and the engine (accepted; not applied).
        pub thread_ring_buffer: Vec<String> = ["thread.ring_buffer.capacity", "thread.ring_buffer.window"] None,
        /// Window over which the ingestion rate is measured (accepted; not measured).
        pub rate_window: Option<String> = ["rate_window"] None,
        /// Pause the input while its ingestion rate is over the limits (accepted; not applied).
        pub rate_gate: bool = ["rate_gate"] Some("false"),
        /// Rate gate: most bytes per second (accepted; not applied).
        pub rate_gate_max_bytes: Option<ByteSize> = ["rate_gate.max_bytes"] None,
        /// Rate gate: most records per second (accepted; not applied).
        pub rate_gate_max_records: Option<u64> = ["rate_gate.max_records"] None,
        /// Rate gate: lower the limits under backpressure (accepted; not applied).
        pub rate_gate_backpressure: bool = ["rate_gate.backpressure"] Some("true"),
        /// Rate gate: fraction of the limit to resume at (accepted; not applied).
        pub rate_gate_resume_ratio: Option<f64> = ["rate_gate.resume_ratio"] None,
    }
}

options! {
    /// Keys every `[FILTER]` takes.
    pub struct FilterCommon for "filter" {
        /// Plugin name.
        pub name: String = ["Name"] None,
        /// Tag pattern (`*` wildcard) of the records this filter applies to.
        pub match_: Option<String> = ["Match"] None,
        /// Regular expression, anchored at the start, of the tags this filter applies to.
        pub match_regex: Option<String> = ["Match_Regex"] None,
        /// Instance name used in logs and metrics.
        pub alias: Option<String> = ["Alias"] None,
        /// Log level of this instance.
        pub log_level: Option<logferry_core::config::LogLevel> = ["Log_Level"] None,
        /// Seconds between repeats of the same log message (accepted; not applied).
        pub log_suppress_interval: Option<String> = ["Log_Suppress_Interval"] None,
    }
}

options! {
    /// Keys every `[OUTPUT]` takes.
    pub struct OutputCommon for "output" {
        /// Plugin name.
        pub name: String = ["Name"] None,
        /// Tag pattern (`*` wildcard) of the records this output receives.
        pub match_: Option<String> = ["Match"] None,
        /// Regular expression, anchored at the start, of the tags this output receives.
        pub match_regex: Option<String> = ["Match_Regex"] None,
        /// Instance name used in logs and metrics.
        pub alias: Option<String> = ["Alias"] None,
        /// Retries of a failed flush: a number, `no_limits`/`False` (forever) or `no_retries`.
        /// Unset: transient failures are retried until delivered (Fluent Bit's default is 1).
        pub retry_limit: Option<String> = ["Retry_Limit"] None,
        /// Flush workers (default: the plugin's own).
        pub workers: Option<usize> = ["Workers"] None,
        /// Log level of this instance.
        pub log_level: Option<logferry_core::config::LogLevel> = ["Log_Level"] None,
        /// Seconds between repeats of the same log message (accepted; not applied).
        pub log_suppress_interval: Option<String> = ["Log_Suppress_Interval"] None,
        /// Most bytes of chunks this output holds (on disk for filesystem inputs, in memory
        /// otherwise); past it its oldest chunks are dropped, counted and logged.
        pub storage_total_limit_size: Option<ByteSize> = ["storage.total_limit_size"] None,
        /// Fluent Bit's network and TLS keys of outputs (accepted; an output that connects
        /// declares the ones it applies, and the rest are noted).
        pub network: Vec<String> = ["host", "port", "ipv6", "tls", "tls.verify", "tls.verify_hostname", "tls.debug", "tls.vhost", "tls.ca_path", "tls.ca_file", "tls.crt_file", "tls.key_file", "tls.key_passwd", "tls.min_version", "tls.max_version", "tls.ciphers", "tls.proxy.verify", "tls.proxy.verify_hostname", "tls.proxy.ca_path", "tls.proxy.ca_file", "net.connect_timeout", "net.connect_timeout_log_error", "net.dns.mode", "net.dns.prefer_ipv4", "net.dns.prefer_ipv6", "net.dns.resolver", "net.io_timeout", "net.keepalive", "net.keepalive_idle_timeout", "net.keepalive_max_recycle", "net.max_worker_connections", "net.proxy_env_ignore", "net.source_address", "net.tcp_keepalive", "net.tcp_keepalive_interval", "net.tcp_keepalive_probes", "net.tcp_keepalive_time"] None,
    }
}

/// `Retry_Limit` as the engine uses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryLimit {
    /// Retry at most this many times (0: never).
    Times(u32),
    /// Retry until delivered.
    Unlimited,
}

impl RetryLimit {
    /// The limit of an output: as written, or, when `Retry_Limit` is not set, retry transient
    /// failures until delivered. **Deliberate difference:** Fluent Bit's default is 1, which
    /// drops a chunk after one retry (and commits its tail offset) during any outage longer
    /// than a few seconds; logferry's default keeps retrying while the input pauses at its
    /// `Mem_Buf_Limit`, so the log files are the buffer. Permanent failures are never retried.
    pub fn of(written: Option<&str>) -> Result<Self, String> {
        match written.map(str::trim).filter(|s| !s.is_empty()) {
            Some(s) => Self::parse(s),
            None => Ok(RetryLimit::Unlimited),
        }
    }

    /// Parses Fluent Bit's spellings.
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        match t.to_ascii_lowercase().as_str() {
            "no_limits" | "false" | "off" => Ok(RetryLimit::Unlimited),
            "no_retries" => Ok(RetryLimit::Times(0)),
            _ => t.parse::<u32>().map(RetryLimit::Times).map_err(|_| {
                format!("expected a number, no_limits, False or no_retries, got '{s}'")
            }),
        }
    }

    /// Whether attempt number `retries_done + 1` may run.
    pub fn allows(self, retries_done: u32) -> bool {
        match self {
            RetryLimit::Unlimited => true,
            RetryLimit::Times(n) => retries_done < n,
        }
    }
}

options! {
    /// The `[SERVICE]` section.
    pub struct ServiceOptions for "service" {
        /// Seconds between flushes of every output.
        pub flush: logferry_core::config::PositiveSeconds = ["Flush"] Some("1"),
        /// Seconds to wait at shutdown for outputs to deliver what they hold.
        pub grace: u64 = ["Grace"] Some("5"),
        /// Run in the background (accepted; run logferry in the foreground under a supervisor).
        pub daemon: bool = ["Daemon"] Some("off"),
        /// Write the agent's log to this file instead of stderr.
        pub log_file: Option<String> = ["Log_File"] None,
        /// Log level: off, error, warn, info, debug, trace.
        pub log_level: logferry_core::config::LogLevel = ["Log_Level"] Some("info"),
        /// logferry only (Fluent Bit has no such key): `fluent-bit` writes log lines as Fluent
        /// Bit does (`[2026/11/29 14:25:33.120] [ info] [input:tail:tail.0] message`), `json`
        /// one JSON object per line (time, level, component, message, fields).
        pub log_format: String = ["logferry.log_format"] Some("fluent-bit"),
        /// logferry only: how many tasks the filter stage runs on, each taking the chunks of
        /// its own tags (default: one per core but one, at least 1 and at most 8; `1`: one task). Applies when every
        /// filter keeps per-tag state only (not `throttle`, `lua`, `rewrite_tag`, `aws`) and no
        /// input has processors or routes; a warning says when it cannot.
        pub filter_workers: Option<u64> = ["logferry.filter_workers"] None,
        /// Parsers file(s) to load; relative to the main config file.
        pub parsers_file: Vec<String> = ["Parsers_File"] None,
        /// External plugins file (accepted; logferry has no external plugins).
        pub plugins_file: Option<String> = ["Plugins_File"] None,
        /// Stream processor file (accepted; no stream processor yet).
        pub streams_file: Option<String> = ["Streams_File"] None,
        /// Start the HTTP monitoring server.
        pub http_server: bool = ["HTTP_Server"] Some("off"),
        /// Address the HTTP server listens on.
        pub http_listen: String = ["HTTP_Listen"] Some("0.0.0.0"),
        /// Port the HTTP server listens on.
        pub http_port: u16 = ["HTTP_Port"] Some("2020"),
        /// Report health from error and retry-failure counts.
        pub health_check: bool = ["Health_Check"] Some("off"),
        /// Errors within `HC_Period` that make the agent unhealthy.
        pub hc_errors_count: u64 = ["HC_Errors_Count"] Some("5"),
        /// Retry failures within `HC_Period` that make the agent unhealthy.
        pub hc_retry_failure_count: u64 = ["HC_Retry_Failure_Count"] Some("5"),
        /// Seconds over which health counts are taken.
        pub hc_period: u64 = ["HC_Period"] Some("60"),
        /// Allow reloading the config through SIGHUP and the HTTP API.
        pub hot_reload: bool = ["Hot_Reload"] Some("off"),
        /// Wait for plugins to stop before a reload (accepted).
        pub hot_reload_ensure_thread_safety: bool = ["Hot_Reload.Ensure_Thread_Safety"] Some("on"),
        /// Seconds of the first retry wait (fractions allowed); later waits grow exponentially.
        pub scheduler_base: f64 = ["scheduler.base"] Some("5"),
        /// Most seconds any retry waits.
        pub scheduler_cap: f64 = ["scheduler.cap"] Some("2000"),
        /// Directory of filesystem buffers (one directory per input) and the dead-letter store.
        pub storage_path: Option<String> = ["storage.path"] None,
        /// `normal` (written: survives a crash of the agent) or `full` (fsynced: survives a
        /// power loss) before a filesystem chunk counts as stored.
        pub storage_sync: String = ["storage.sync"] Some("normal"),
        /// CRC32 of chunk files, checked when they are read back.
        pub storage_checksum: bool = ["storage.checksum"] Some("off"),
        /// Most filesystem chunks kept in memory; the others wait on disk only.
        pub storage_max_chunks_up: u64 = ["storage.max_chunks_up"] Some("128"),
        /// Most bytes of chunks read back from disk (the backlog) in memory at once.
        pub storage_backlog_mem_limit: ByteSize = ["storage.backlog.mem_limit"] Some("5M"),
        /// At shutdown, also try to deliver chunks that wait on disk only (within Grace).
        pub storage_backlog_flush_on_shutdown: bool = ["storage.backlog.flush_on_shutdown"] Some("off"),
        /// Serve the storage layer's metrics (`fluentbit_storage_*`, `fluentbit_input_storage_*`).
        pub storage_metrics: bool = ["storage.metrics"] Some("off"),
        /// Delete chunk files that cannot be read instead of moving them to `.corrupt/`.
        pub storage_delete_irrecoverable_chunks: bool = ["storage.delete_irrecoverable_chunks"] Some("off"),
        /// Inputs without `storage.type` take `[SERVICE] storage.type`.
        pub storage_inherit: bool = ["storage.inherit"] Some("off"),
        /// The `storage.type` inputs inherit with `storage.inherit On`.
        pub storage_type: Option<String> = ["storage.type"] None,
        /// Trim chunk files to their content (logferry's files are always exactly their content).
        pub storage_trim_files: bool = ["storage.trim_files"] Some("off"),
        /// Keep what outputs give up on in the dead-letter store under `storage.path`.
        pub storage_keep_rejected: bool = ["storage.keep.rejected"] Some("off"),
        /// Directory of the dead-letter store, under `storage.path`.
        pub storage_rejected_path: String = ["storage.rejected.path"] Some("rejected"),
        /// Most bytes the dead-letter store holds; past it copies are skipped with a warning.
        pub storage_rejected_limit: Option<ByteSize> = ["storage.rejected.limit"] None,
        /// Coroutine stack size (accepted; logferry has no coroutines).
        pub coro_stack_size: Option<ByteSize> = ["Coro_Stack_Size"] None,
        /// DNS mode, UDP or TCP (accepted).
        pub dns_mode: Option<String> = ["dns.mode"] None,
        /// DNS resolver (accepted).
        pub dns_resolver: Option<String> = ["dns.resolver"] None,
        /// Prefer IPv4 in DNS answers (accepted).
        pub dns_prefer_ipv4: bool = ["dns.prefer_ipv4"] Some("off"),
        /// Write NaN as null in JSON (accepted).
        pub json_convert_nan_to_null: bool = ["json.convert_nan_to_null"] Some("off"),
        /// Stream processor string-to-number conversion (accepted).
        pub sp_convert_from_str_to_num: bool = ["sp.convert_from_str_to_num"] Some("on"),
        /// Chunk tracing (accepted).
        pub enable_chunk_trace: bool = ["Enable_Chunk_Trace"] Some("off"),
        /// Escape non-ASCII characters as `\uXXXX` in JSON output.
        pub json_escape_unicode: bool = ["json.escape_unicode"] Some("on"),
        /// Most bytes of a message tail joins from Docker/CRI pieces; longer ones are truncated and counted (`false`: no limit).
        pub multiline_buffer_limit: SizeLimit = ["multiline_buffer_limit"] Some("2MB"),
        /// Seconds a reload may take before Fluent Bit's watchdog aborts it (accepted).
        pub hot_reload_timeout: Option<u64> = ["Hot_Reload.Timeout"] None,
        /// Adapt the flush interval to the load (accepted; `Flush` is fixed).
        pub flush_adaptive: bool = ["flush.adaptive"] Some("off"),
        /// Adaptive flush: shortest interval (accepted).
        pub flush_adaptive_min: Option<f64> = ["flush.adaptive.min_interval"] None,
        /// Adaptive flush: longest interval (accepted).
        pub flush_adaptive_max: Option<f64> = ["flush.adaptive.max_interval"] None,
        /// Adaptive flush: low pressure threshold (accepted).
        pub flush_adaptive_low: Option<f64> = ["flush.adaptive.low_pressure"] None,
        /// Adaptive flush: medium pressure threshold (accepted).
        pub flush_adaptive_medium: Option<f64> = ["flush.adaptive.medium_pressure"] None,
        /// Adaptive flush: high pressure threshold (accepted).
        pub flush_adaptive_high: Option<f64> = ["flush.adaptive.high_pressure"] None,
        /// Adaptive flush: steps up (accepted).
        pub flush_adaptive_up_steps: Option<u64> = ["flush.adaptive.up_steps"] None,
        /// Adaptive flush: steps down (accepted).
        pub flush_adaptive_down_steps: Option<u64> = ["flush.adaptive.down_steps"] None,
        /// Prefer IPv6 in DNS answers (accepted).
        pub dns_prefer_ipv6: bool = ["dns.prefer_ipv6"] Some("off"),
        /// FIPS mode of the crypto library (accepted).
        pub security_fips_mode: bool = ["security.fips_mode"] Some("off"),
        /// Most open files on Windows (accepted; Windows only).
        pub windows_maxstdio: Option<u64> = ["windows.maxstdio"] None,
        /// Seen in Fluent Bit configs; Fluent Bit 5.1 ignores it (accepted; not applied).
        pub http_monitor: Option<String> = ["HTTP_Monitor"] None,
        /// Seen in Fluent Bit configs; Fluent Bit 5.1 ignores it (accepted; not applied: reload
        /// with SIGHUP or POST /api/v2/reload).
        pub hot_reload_watch: Option<String> = ["Hot_Reload.Watch"] None,
    }
}

/// A key a section accepts and does not apply: setting it to anything but `harmless` (any
/// value, when `None`) is a build note ([`crate::Pipeline::notes`]) saying `why`.
#[derive(Clone, Copy, Debug)]
pub struct NotApplied {
    pub key: &'static str,
    pub harmless: Option<&'static str>,
    pub why: &'static str,
}

impl NotApplied {
    /// `key`, harmless at `harmless` (any value matters when `None`), not applied because `why`.
    pub const fn new(key: &'static str, harmless: Option<&'static str>, why: &'static str) -> Self {
        NotApplied { key, harmless, why }
    }
}

const fn na(key: &'static str, harmless: Option<&'static str>, why: &'static str) -> NotApplied {
    NotApplied::new(key, harmless, why)
}

/// `[SERVICE]` keys accepted and not applied.
pub const SERVICE_NOT_APPLIED: &[NotApplied] = &[
    na(
        "Daemon",
        Some("off"),
        "run logferry in the foreground under a supervisor (systemd, Kubernetes)",
    ),
    na("Plugins_File", None, "logferry has no external plugins"),
    na("Streams_File", None, "logferry has no stream processor"),
    na(
        "sp.convert_from_str_to_num",
        None,
        "logferry has no stream processor",
    ),
    na("Coro_Stack_Size", None, "logferry has no coroutines"),
    na("dns.mode", None, "the system resolver is used"),
    na("dns.resolver", None, "the system resolver is used"),
    na(
        "dns.prefer_ipv4",
        Some("off"),
        "the system resolver's order is used",
    ),
    na(
        "dns.prefer_ipv6",
        Some("off"),
        "the system resolver's order is used",
    ),
    na(
        "Enable_Chunk_Trace",
        Some("off"),
        "logferry has no chunk tracing",
    ),
    na(
        "Hot_Reload.Timeout",
        None,
        "a reload builds the new pipeline first and drains the old one within Grace",
    ),
    na(
        "flush.adaptive",
        Some("off"),
        "outputs flush every Flush seconds, and at once at 2MB or while an input is paused",
    ),
    na(
        "flush.adaptive.min_interval",
        None,
        "flush.adaptive is not applied",
    ),
    na(
        "flush.adaptive.max_interval",
        None,
        "flush.adaptive is not applied",
    ),
    na(
        "flush.adaptive.low_pressure",
        None,
        "flush.adaptive is not applied",
    ),
    na(
        "flush.adaptive.medium_pressure",
        None,
        "flush.adaptive is not applied",
    ),
    na(
        "flush.adaptive.high_pressure",
        None,
        "flush.adaptive is not applied",
    ),
    na(
        "flush.adaptive.up_steps",
        None,
        "flush.adaptive is not applied",
    ),
    na(
        "flush.adaptive.down_steps",
        None,
        "flush.adaptive is not applied",
    ),
    na(
        "security.fips_mode",
        Some("off"),
        "logferry's TLS (rustls) has no FIPS mode",
    ),
    na("windows.maxstdio", None, "Windows only"),
    na(
        "HTTP_Monitor",
        None,
        "Fluent Bit 5.1 ignores it too; HTTP_Server enables the monitoring endpoints",
    ),
    na(
        "Hot_Reload.Watch",
        None,
        "Fluent Bit 5.1 ignores it too; the configuration is reloaded on SIGHUP or POST /api/v2/reload",
    ),
];

/// `[INPUT]` keys every input takes, accepted and not applied.
pub const INPUT_NOT_APPLIED: &[NotApplied] = &[
    na(
        "Log_Suppress_Interval",
        None,
        "repeated log lines are not suppressed",
    ),
    na("Routable", Some("true"), "every input's records are routed"),
    na(
        "Log_Level",
        None,
        "one log level applies to the whole agent ([SERVICE] Log_Level)",
    ),
    na(
        "thread.ring_buffer.*",
        None,
        "every input is a task of its own, with no ring buffer",
    ),
    na(
        "rate_window",
        None,
        "logferry does not measure input rates (no fluentbit_input_rate_* series)",
    ),
    na(
        "rate_gate",
        Some("false"),
        "inputs pause at Mem_Buf_Limit only, not at a rate limit",
    ),
    na("rate_gate.max_bytes", None, "rate_gate is not applied"),
    na("rate_gate.max_records", None, "rate_gate is not applied"),
    na(
        "rate_gate.backpressure",
        Some("true"),
        "rate_gate is not applied",
    ),
    na("rate_gate.resume_ratio", None, "rate_gate is not applied"),
];

/// `[FILTER]` keys every filter takes, accepted and not applied.
pub const FILTER_NOT_APPLIED: &[NotApplied] = &[
    na(
        "Log_Suppress_Interval",
        None,
        "repeated log lines are not suppressed",
    ),
    na(
        "Log_Level",
        None,
        "one log level applies to the whole agent ([SERVICE] Log_Level)",
    ),
];

/// `[OUTPUT]` keys every output takes, accepted and not applied.
pub const OUTPUT_NOT_APPLIED: &[NotApplied] = &[
    na(
        "Log_Suppress_Interval",
        None,
        "repeated log lines are not suppressed",
    ),
    na(
        "Log_Level",
        None,
        "one log level applies to the whole agent ([SERVICE] Log_Level)",
    ),
    // AWS outputs always speak HTTPS through the SDK, so `tls On` is what they do anyway.
    na("tls", Some("on"), NETWORK),
    // Verification cannot be turned off, nor a CA file given, where the SDK connects.
    na("tls.verify", Some("on"), TLS_ALWAYS_VERIFIED),
    na("tls.ca_file", None, TLS_SYSTEM_ROOTS),
    na("tls.ca_path", None, TLS_SYSTEM_ROOTS),
    na("tls*", None, NETWORK),
    na("net.*", None, NETWORK),
    na("host", None, NETWORK),
    na("port", None, NETWORK),
    na("ipv6", Some("off"), NETWORK),
];

const TLS_ALWAYS_VERIFIED: &str = "certificates are always verified: the AWS outputs reach AWS through the SDK's HTTPS client, which verifies them against the system's roots (the local outputs open no connection)";

const TLS_SYSTEM_ROOTS: &str = "the AWS outputs trust the system's roots (the SDK's HTTPS client), not a CA file or directory (the local outputs open no connection)";

const NETWORK: &str = "this output does not use it: the local outputs open no connection, the AWS outputs reach AWS through the SDK's HTTPS client (endpoint, sts_endpoint and the proxy environment apply), and forward, http, opensearch and es take only the network keys plugins.md lists for them";

/// Whether `key` is the table's `pattern` (a trailing `*` matches any rest).
fn key_is(pattern: &str, key: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => key
            .get(..prefix.len())
            .is_some_and(|k| k.eq_ignore_ascii_case(prefix)),
        None => pattern.eq_ignore_ascii_case(key),
    }
}

/// The notes for `entries` of a section: each key of `table` set to something that matters.
pub fn not_applied<'a>(
    table: &[NotApplied],
    entries: impl IntoIterator<Item = &'a logferry_core::config::Entry>,
) -> Vec<logferry_core::config::ConfigError> {
    use logferry_core::config::units::parse_bool;
    let mut out = Vec::new();
    for e in entries {
        let Some(n) = table.iter().find(|n| key_is(n.key, e.key.trim())) else {
            continue;
        };
        let v = e.value.trim();
        let harmless = n
            .harmless
            .is_some_and(|h| match (parse_bool(h), parse_bool(v)) {
                (Ok(a), Ok(b)) => a == b,
                _ => h.eq_ignore_ascii_case(v),
            });
        if !harmless && !v.is_empty() {
            out.push(logferry_core::config::ConfigError::key(
                &e.span,
                &e.key,
                format!("accepted but not applied: {}", n.why),
            ));
        }
    }
    out
}

impl ServiceOptions {
    /// The flush interval.
    pub fn flush_interval(&self) -> Duration {
        Duration::from_secs_f64(self.flush.0.max(0.001))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_limit_spellings() {
        assert_eq!(RetryLimit::parse("1"), Ok(RetryLimit::Times(1)));
        assert_eq!(RetryLimit::parse("no_limits"), Ok(RetryLimit::Unlimited));
        assert_eq!(RetryLimit::parse("False"), Ok(RetryLimit::Unlimited));
        assert_eq!(RetryLimit::parse("no_retries"), Ok(RetryLimit::Times(0)));
        assert!(RetryLimit::parse("lots").is_err());
        assert_eq!(RetryLimit::of(None), Ok(RetryLimit::Unlimited));
        assert_eq!(RetryLimit::of(Some("1")), Ok(RetryLimit::Times(1)));
        assert!(RetryLimit::Times(1).allows(0));
        assert!(!RetryLimit::Times(1).allows(1));
    }

    #[test]
    fn defaults_are_fluent_bits() {
        let s = ServiceOptions::defaults().unwrap();
        assert_eq!(s.flush.0, 1.0);
        assert_eq!(s.grace, 5);
        assert_eq!(s.http_port, 2020);
        assert_eq!(s.scheduler_base, 5.0);
        let o = OutputCommon::from_entries(&logferry_core::config::Span::command_line(), &[], &[]);
        assert!(o.is_err(), "Name is required");
    }
}
