//! Options every section of a kind shares (`Name`, `Tag`, `Match`, `Retry_Limit`, ...), and the
//! `[SERVICE]` options. Keys Fluent Bit accepts but logferry does not act on are declared too and
//! say so in their doc, so that an existing config loads unchanged.

use std::time::Duration;

use logferry_core::config::ByteSize;
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
        pub log_level: Option<String> = ["Log_Level"] None,
        /// Seconds between repeats of the same log message (accepted; no effect).
        pub log_suppress_interval: Option<String> = ["Log_Suppress_Interval"] None,
        /// Run the input in its own thread (accepted: every logferry input is its own task).
        pub threaded: bool = ["Threaded"] Some("off"),
        /// Buffer type: `memory` or `filesystem` (accepted; filesystem buffering is planned).
        pub storage_type: String = ["storage.type"] Some("memory"),
        /// Pause when filesystem chunks are over the limit (accepted; see `storage.type`).
        pub storage_pause: bool = ["storage.pause_on_chunks_overlimit"] Some("off"),
        /// Whether records may be routed (accepted; no effect).
        pub routable: bool = ["Routable"] Some("true"),
        /// YAML processors (accepted; not applied yet).
        pub processors: Option<String> = ["processors"] None,
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
        pub log_level: Option<String> = ["Log_Level"] None,
        /// Seconds between repeats of the same log message (accepted; no effect).
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
        pub retry_limit: String = ["Retry_Limit"] Some("1"),
        /// Flush workers (default: the plugin's own).
        pub workers: Option<usize> = ["Workers"] None,
        /// Log level of this instance.
        pub log_level: Option<String> = ["Log_Level"] None,
        /// Seconds between repeats of the same log message (accepted; no effect).
        pub log_suppress_interval: Option<String> = ["Log_Suppress_Interval"] None,
        /// Cap of this output's filesystem queue (accepted; filesystem buffering is planned).
        pub storage_total_limit_size: Option<ByteSize> = ["storage.total_limit_size"] None,
        /// YAML processors (accepted; not applied yet).
        pub processors: Option<String> = ["processors"] None,
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
        pub flush: f64 = ["Flush"] Some("1"),
        /// Seconds to wait at shutdown for outputs to deliver what they hold.
        pub grace: u64 = ["Grace"] Some("5"),
        /// Run in the background (accepted; run logferry in the foreground under a supervisor).
        pub daemon: bool = ["Daemon"] Some("off"),
        /// Write the agent's log to this file instead of stderr.
        pub log_file: Option<String> = ["Log_File"] None,
        /// Log level: off, error, warn, info, debug, trace.
        pub log_level: String = ["Log_Level"] Some("info"),
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
        /// Directory of filesystem buffers (accepted; filesystem buffering is planned).
        pub storage_path: Option<String> = ["storage.path"] None,
        /// `normal` or `full` fsync of filesystem buffers (accepted).
        pub storage_sync: String = ["storage.sync"] Some("normal"),
        /// CRC32 of filesystem chunks (accepted).
        pub storage_checksum: bool = ["storage.checksum"] Some("off"),
        /// Most chunks kept in memory (accepted).
        pub storage_max_chunks_up: u64 = ["storage.max_chunks_up"] Some("128"),
        /// Memory for backlog chunks at start (accepted).
        pub storage_backlog_mem_limit: ByteSize = ["storage.backlog.mem_limit"] Some("5M"),
        /// Flush the backlog at shutdown (accepted).
        pub storage_backlog_flush_on_shutdown: bool = ["storage.backlog.flush_on_shutdown"] Some("off"),
        /// Expose storage metrics (accepted).
        pub storage_metrics: bool = ["storage.metrics"] Some("off"),
        /// Delete corrupt chunks at start (accepted).
        pub storage_delete_irrecoverable_chunks: bool = ["storage.delete_irrecoverable_chunks"] Some("off"),
        /// Inherit storage settings in inputs (accepted).
        pub storage_inherit: bool = ["storage.inherit"] Some("off"),
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
        /// Memory limit of multiline buffers (accepted).
        pub multiline_buffer_limit: Option<ByteSize> = ["multiline_buffer_limit"] None,
    }
}

impl ServiceOptions {
    /// The flush interval.
    pub fn flush_interval(&self) -> Duration {
        Duration::from_secs_f64(self.flush.max(0.001))
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
        assert!(RetryLimit::Times(1).allows(0));
        assert!(!RetryLimit::Times(1).allows(1));
    }

    #[test]
    fn defaults_are_fluent_bits() {
        let s = ServiceOptions::defaults().unwrap();
        assert_eq!(s.flush, 1.0);
        assert_eq!(s.grace, 5);
        assert_eq!(s.http_port, 2020);
        assert_eq!(s.scheduler_base, 5.0);
        let o = OutputCommon::from_entries(&logferry_core::config::Span::command_line(), &[], &[]);
        assert!(o.is_err(), "Name is required");
    }
}
