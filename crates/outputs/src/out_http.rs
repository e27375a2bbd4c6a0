//! `http` output: POSTs records to an HTTP server (Fluent Bit's `out_http`).
//!
//! - `Host:Port` (default `127.0.0.1:80`), `URI` (default `/`), HTTP/1.1 over TLS with `tls On`
//!   (`tls.verify`, `tls.ca_file`, `tls.vhost`, client certificate). Connections are kept and
//!   reused.
//! - `Format`: `msgpack` (the default, as in Fluent Bit: records in Fluent Bit's event
//!   encoding, `application/msgpack`), `json` (one array), `json_lines` (one object a line,
//!   `application/x-ndjson`), `json_stream` (objects back to back) and `gelf` (one request per
//!   record, GELF 1.1: `short_message` from `gelf_short_message_key`, `host`, `level` and
//!   `full_message` from their keys, `timestamp` from `gelf_timestamp_key` or the record's
//!   time, every other key as `_key` with nested maps flattened as `_a_b`; a record without a
//!   short message is rejected and counted). JSON objects start with `json_date_key` (`date`;
//!   `false` leaves it out) in `json_date_format` (`double`, `epoch`, `epoch_ms`, `iso8601`,
//!   `java_sql_timestamp`), as the `stdout` output writes them.
//! - `Header KEY VALUE` (repeatable), `header_tag` (the tag in that header), basic auth with
//!   `HTTP_User`/`HTTP_Passwd`, `Compress gzip` (`Content-Encoding: gzip`).
//! - A 2xx answer is delivered. 5xx, 429, 408 and network failures are retried (the engine's
//!   retries). Any other answer (4xx) is a permanent failure: the batch is given up, counted
//!   as dropped and logged with the status and the start of the answer (and kept as a dead
//!   letter with `storage.keep.rejected`).
//!
//! Not applied (build notes): `proxy`, the `aws_*` SigV4 keys, `body_key`/`headers_key`,
//! `allow_duplicated_headers Off`, and compressions other than gzip are errors.

use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use logferry_core::config::{ConfigError, Entry, Section};
use logferry_core::{msgpack, options, Map, Record, Value};
use logferry_engine::common::NotApplied;
use logferry_engine::{Batch, BuildContext, FlushResult, Output, OutputPlugin};

use crate::json::{self, DateFormat, DateKey};
use crate::net::{ClientTls, Endpoint, TlsKeys};
use crate::out_stdout::key_error;

options! {
    /// Options of the `http` output.
    pub struct HttpOptions for "http output" {
        /// Host of the HTTP server.
        pub host: String = ["Host"] Some("127.0.0.1"),
        /// Port of the HTTP server.
        pub port: u16 = ["Port"] Some("80"),
        /// Path (and query) requested.
        pub uri: String = ["URI"] Some("/"),
        /// Body format: msgpack, json, json_lines, json_stream or gelf.
        pub format: String = ["Format"] Some("msgpack"),
        /// Key of the record time in JSON formats (false/off/no: none).
        pub json_date_key: String = ["json_date_key"] Some("date"),
        /// Format of the date key: double, epoch, epoch_ms, iso8601 or java_sql_timestamp.
        pub json_date_format: String = ["json_date_format"] Some("double"),
        /// `KEY VALUE` request header (repeatable).
        pub header: Vec<String> = ["Header"] None,
        /// Header that carries the records' tag.
        pub header_tag: Option<String> = ["header_tag"] None,
        /// User of HTTP basic authentication.
        pub http_user: Option<String> = ["HTTP_User"] None,
        /// Password of HTTP basic authentication.
        pub http_passwd: String = ["HTTP_Passwd"] Some(""),
        /// Body compression: gzip.
        pub compress: Option<String> = ["compress"] None,
        /// GELF: key of the timestamp (default: the record's time).
        pub gelf_timestamp_key: Option<String> = ["gelf_timestamp_key"] None,
        /// GELF: key of the host.
        pub gelf_host_key: Option<String> = ["gelf_host_key"] None,
        /// GELF: key of the short message.
        pub gelf_short_message_key: String = ["gelf_short_message_key"] Some("short_message"),
        /// GELF: key of the full message.
        pub gelf_full_message_key: Option<String> = ["gelf_full_message_key"] None,
        /// GELF: key of the level.
        pub gelf_level_key: Option<String> = ["gelf_level_key"] None,
        /// Log the answer of each request (at debug level).
        pub log_response_payload: bool = ["log_response_payload"] Some("true"),
        /// Allow a header set more than once (accepted; headers are sent as configured).
        pub allow_duplicated_headers: bool = ["allow_duplicated_headers"] Some("true"),
        /// HTTP proxy (accepted; not applied).
        pub proxy: Option<String> = ["proxy"] None,
        /// Record key holding the raw body (accepted; not applied).
        pub body_key: Option<String> = ["body_key"] None,
        /// Record key holding request headers (accepted; not applied).
        pub headers_key: Option<String> = ["headers_key"] None,
        /// AWS SigV4 signing and its settings (accepted; not applied).
        pub aws: Vec<String> = ["aws_auth", "aws_region", "aws_service", "aws_sts_endpoint", "aws_role_arn", "aws_external_id", "aws_profile"] None,
        /// Connect over TLS.
        pub tls: bool = ["tls"] Some("off"),
        /// Check the server's certificate.
        pub tls_verify: bool = ["tls.verify"] Some("on"),
        /// CA certificates (PEM) to trust instead of the system's.
        pub tls_ca_file: Option<String> = ["tls.ca_file"] None,
        /// Client certificate (PEM).
        pub tls_crt_file: Option<String> = ["tls.crt_file"] None,
        /// Key of the client certificate (PEM, unencrypted).
        pub tls_key_file: Option<String> = ["tls.key_file"] None,
        /// Name checked against the server's certificate and sent as Host (default: Host).
        pub tls_vhost: Option<String> = ["tls.vhost"] None,
        /// Seconds to wait for a connection.
        pub connect_timeout: Duration = ["net.connect_timeout"] Some("10"),
        /// Seconds to wait for an answer (default 60).
        pub io_timeout: Option<Duration> = ["net.io_timeout"] None,
    }
}

/// The registry entry.
pub static PLUGIN: OutputPlugin = OutputPlugin {
    name: "http",
    aliases: &[],
    description: "HTTP Output",
    options: HttpOptions::OPTIONS,
    default_workers: 2,
    build,
};

/// Keys accepted and not applied.
pub const NOT_APPLIED: &[NotApplied] = &[
    NotApplied::new("proxy", None, "requests go straight to Host"),
    NotApplied::new("body_key", None, "the body is the formatted records"),
    NotApplied::new("headers_key", None, "headers come from Header only"),
    NotApplied::new("aws_auth", Some("false"), "requests are not SigV4-signed"),
    NotApplied::new("aws_*", None, "requests are not SigV4-signed"),
    NotApplied::new(
        "allow_duplicated_headers",
        Some("true"),
        "headers are sent as configured",
    ),
];

/// The body format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpFormat {
    Msgpack,
    Json,
    JsonLines,
    JsonStream,
    Gelf,
}

/// GELF keys.
#[derive(Clone, Debug, Default)]
pub struct Gelf {
    pub timestamp_key: Option<String>,
    pub host_key: Option<String>,
    pub short_message_key: String,
    pub full_message_key: Option<String>,
    pub level_key: Option<String>,
}

/// The options, checked.
#[derive(Clone)]
pub struct HttpSettings {
    pub endpoint: Endpoint,
    /// `Host` header value.
    pub host_header: String,
    pub uri: String,
    pub format: HttpFormat,
    pub date_key: Option<String>,
    pub date_format: DateFormat,
    pub headers: Vec<(String, String)>,
    pub header_tag: Option<String>,
    /// `Basic ...`.
    pub authorization: Option<String>,
    pub gzip: bool,
    pub gelf: Gelf,
    pub log_response: bool,
    pub io_timeout: Duration,
    pub escape_unicode: bool,
}

/// Standard base64 (basic auth).
fn base64(b: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(b.len().div_ceil(3) * 4);
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl HttpSettings {
    /// Checks the options; an error names the Fluent Bit key at fault.
    pub fn from_options(
        o: &HttpOptions,
        base: &std::path::Path,
    ) -> Result<Self, (&'static str, String)> {
        let format = match o.format.trim().to_ascii_lowercase().as_str() {
            "msgpack" => HttpFormat::Msgpack,
            "json" => HttpFormat::Json,
            "json_lines" => HttpFormat::JsonLines,
            "json_stream" => HttpFormat::JsonStream,
            "gelf" => HttpFormat::Gelf,
            f => {
                return Err((
                    "Format",
                    format!(
                    "unknown format '{f}': expected msgpack, json, json_lines, json_stream or gelf"
                ),
                ))
            }
        };
        let date_format =
            DateFormat::parse(&o.json_date_format).map_err(|r| ("json_date_format", r))?;
        let key = o.json_date_key.trim();
        let no_date = ["false", "off", "no"]
            .iter()
            .any(|d| key.eq_ignore_ascii_case(d));
        let gzip = match o.compress.as_deref().map(str::trim) {
            None | Some("") => false,
            Some(c) if c.eq_ignore_ascii_case("gzip") => true,
            Some(c) => {
                return Err((
                    "compress",
                    format!(
                        "compression '{c}' is not available in logferry's http output: use gzip"
                    ),
                ))
            }
        };
        let mut headers = Vec::new();
        for h in &o.header {
            match h.trim().split_once(char::is_whitespace) {
                Some((k, v)) => {
                    hyper::header::HeaderName::from_bytes(k.as_bytes())
                        .map_err(|_| ("Header", format!("'{k}' is not a header name")))?;
                    // The value is not shown: it is often a token.
                    hyper::header::HeaderValue::from_str(v.trim()).map_err(|_| {
                        (
                            "Header",
                            format!("the value of header '{k}' holds a character a header value cannot (a control character)"),
                        )
                    })?;
                    headers.push((k.to_string(), v.trim().to_string()));
                }
                // Not shown either: a lone word may be a token given without its header name.
                None => return Err(("Header", "expected 'KEY VALUE', got one word".to_string())),
            }
        }
        let tls = if o.tls {
            Some(ClientTls::new(
                &o.host,
                &TlsKeys {
                    verify: o.tls_verify,
                    ca_file: o.tls_ca_file.clone(),
                    crt_file: o.tls_crt_file.clone(),
                    key_file: o.tls_key_file.clone(),
                    vhost: o.tls_vhost.clone(),
                },
                base,
            )?)
        } else {
            None
        };
        let host = o.tls_vhost.clone().unwrap_or_else(|| o.host.clone());
        let default_port = if o.tls { 443 } else { 80 };
        let host_header = if o.port == default_port {
            host
        } else {
            format!("{host}:{}", o.port)
        };
        let uri = if o.uri.starts_with('/') {
            o.uri.clone()
        } else {
            format!("/{}", o.uri)
        };
        hyper::Uri::try_from(uri.as_str()).map_err(|e| ("URI", format!("'{uri}': {e}")))?;
        Ok(HttpSettings {
            endpoint: Endpoint {
                host: o.host.clone(),
                port: o.port,
                unix_path: None,
                tls,
                connect_timeout: o.connect_timeout.max(Duration::from_millis(1)),
            },
            host_header,
            uri,
            format,
            date_key: (!no_date).then(|| key.to_string()),
            date_format,
            headers,
            header_tag: o.header_tag.clone().filter(|h| !h.is_empty()),
            authorization: o.http_user.as_ref().map(|u| {
                format!(
                    "Basic {}",
                    base64(format!("{u}:{}", o.http_passwd).as_bytes())
                )
            }),
            gzip,
            gelf: Gelf {
                timestamp_key: o.gelf_timestamp_key.clone(),
                host_key: o.gelf_host_key.clone(),
                short_message_key: o.gelf_short_message_key.clone(),
                full_message_key: o.gelf_full_message_key.clone(),
                level_key: o.gelf_level_key.clone(),
            },
            log_response: o.log_response_payload,
            io_timeout: o
                .io_timeout
                .filter(|d| !d.is_zero())
                .unwrap_or(Duration::from_secs(60)),
            escape_unicode: true,
        })
    }
}

fn build(
    ctx: &BuildContext,
    section: &Section,
    entries: &[&Entry],
) -> Result<std::sync::Arc<dyn Output>, ConfigError> {
    let opts = HttpOptions::from_entries(&section.span, entries, &[])?;
    let mut settings = HttpSettings::from_options(&opts, &ctx.base_dir)
        .map_err(|(key, reason)| key_error(section, entries, key, reason))?;
    settings.escape_unicode = json::escape_unicode_setting(&ctx.config);
    ctx.not_applied(NOT_APPLIED, entries);
    ctx.note_tls_verify_off(entries, opts.tls, opts.tls_verify);
    Ok(std::sync::Arc::new(HttpOutput::new(
        settings,
        ctx.metrics.clone(),
    )))
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// The `http` output.
pub struct HttpOutput {
    s: HttpSettings,
    metrics: std::sync::Arc<logferry_engine::metrics::PluginMetrics>,
    pool: Mutex<Vec<Sender>>,
}

/// What one request's answer means.
enum Answer {
    Ok,
    Retry(String),
    Refused(String),
}

impl HttpOutput {
    pub fn new(
        s: HttpSettings,
        metrics: std::sync::Arc<logferry_engine::metrics::PluginMetrics>,
    ) -> Self {
        HttpOutput {
            s,
            metrics,
            pool: Mutex::new(Vec::new()),
        }
    }

    fn date<'a>(&'a self, r: &Record) -> Option<DateKey<'a>> {
        self.s.date_key.as_deref().map(|key| DateKey {
            key,
            format: self.s.date_format,
            time: r.time,
        })
    }

    /// The body of one request for `records` (every format but gelf).
    pub fn body<'a>(&self, records: impl Iterator<Item = &'a Record>) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        let esc = self.s.escape_unicode;
        let err = |e: serde_json::Error| format!("encoding JSON: {e}");
        match self.s.format {
            HttpFormat::Msgpack => records.for_each(|r| msgpack::write_record(&mut out, r)),
            HttpFormat::Json => {
                out.push(b'[');
                for (i, r) in records.enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    json::write_record(&mut out, &r.body, self.date(r), esc).map_err(err)?;
                }
                out.push(b']');
            }
            HttpFormat::JsonLines => {
                for r in records {
                    json::write_record(&mut out, &r.body, self.date(r), esc).map_err(err)?;
                    out.push(b'\n');
                }
            }
            HttpFormat::JsonStream | HttpFormat::Gelf => {
                for r in records {
                    json::write_record(&mut out, &r.body, self.date(r), esc).map_err(err)?;
                }
            }
        }
        Ok(out)
    }

    /// A GELF 1.1 message of one record; `None` without a short message.
    pub fn gelf(&self, r: &Record) -> Option<Vec<u8>> {
        let g = &self.s.gelf;
        let mut m = Map::new();
        m.insert("version", "1.1");
        let str_of = |k: &Option<String>| k.as_deref().and_then(|k| r.body.get(k)).cloned();
        let short = r.body.get(&g.short_message_key)?.clone();
        if let Some(h) = str_of(&g.host_key) {
            m.insert("host", h);
        }
        m.insert("short_message", short);
        if let Some(f) = str_of(&g.full_message_key) {
            m.insert("full_message", f);
        }
        match str_of(&g.timestamp_key) {
            Some(t) => m.insert("timestamp", t),
            None => m.insert(
                "timestamp",
                Value::Float(r.time.secs() as f64 + f64::from(r.time.subsec_nanos()) / 1e9),
            ),
        }
        if let Some(l) = str_of(&g.level_key) {
            m.insert("level", l);
        }
        let used: Vec<&str> = [
            Some(&g.short_message_key),
            g.host_key.as_ref(),
            g.full_message_key.as_ref(),
            g.timestamp_key.as_ref(),
            g.level_key.as_ref(),
        ]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect();
        fn flatten(m: &mut Map, prefix: &str, v: &Value) {
            match v {
                Value::Map(inner) => inner
                    .iter()
                    .for_each(|(k, v)| flatten(m, &format!("{prefix}_{k}"), v)),
                Value::SharedMap(inner) => inner
                    .iter()
                    .for_each(|(k, v)| flatten(m, &format!("{prefix}_{k}"), v)),
                v => m.insert(prefix, v.clone()),
            }
        }
        for (k, v) in r.body.iter() {
            if !used.contains(&k.as_str()) && k.as_str() != "id" {
                flatten(&mut m, &format!("_{k}"), v);
            }
        }
        let mut out = Vec::new();
        json::write_record(&mut out, &m, None, self.s.escape_unicode).ok()?;
        Some(out)
    }

    async fn sender(&self) -> Result<Sender, String> {
        loop {
            let idle = self.pool.lock().ok().and_then(|mut p| p.pop());
            match idle {
                Some(mut s) if !s.is_closed() => {
                    if s.ready().await.is_ok() {
                        return Ok(s);
                    }
                }
                Some(_) => {}
                None => break,
            }
        }
        let conn = self
            .s
            .endpoint
            .connect()
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", self.s.endpoint.describe()))?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(conn))
                .await
                .map_err(|e| format!("HTTP handshake with {}: {e}", self.s.endpoint.describe()))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }

    async fn post(&self, tag: &str, body: Vec<u8>, content_type: &str) -> Answer {
        let body = if self.s.gzip {
            let mut gz = flate2::write::GzEncoder::new(
                Vec::with_capacity(body.len() / 4),
                flate2::Compression::default(),
            );
            match gz.write_all(&body).and_then(|_| gz.finish()) {
                Ok(b) => b,
                Err(e) => return Answer::Retry(format!("gzip: {e}")),
            }
        } else {
            body
        };
        let mut req = hyper::Request::post(self.s.uri.as_str())
            .header(hyper::header::HOST, self.s.host_header.as_str())
            .header(hyper::header::CONTENT_TYPE, content_type)
            .header(hyper::header::USER_AGENT, "Fluent-Bit");
        if self.s.gzip {
            req = req.header(hyper::header::CONTENT_ENCODING, "gzip");
        }
        if let Some(a) = &self.s.authorization {
            req = req.header(hyper::header::AUTHORIZATION, a.as_str());
        }
        if let Some(h) = &self.s.header_tag {
            req = req.header(h.as_str(), tag);
        }
        for (k, v) in &self.s.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let req = match req.body(Full::new(Bytes::from(body))) {
            Ok(r) => r,
            Err(e) => return Answer::Refused(format!("cannot build the request: {e}")),
        };
        let mut sender = match self.sender().await {
            Ok(s) => s,
            Err(e) => return Answer::Retry(e),
        };
        let timeout = self.s.io_timeout;
        let resp = match tokio::time::timeout(timeout, async {
            let resp = sender.send_request(req).await?;
            let status = resp.status();
            let body = resp.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, body))
        })
        .await
        {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Answer::Retry(format!("HTTP request failed: {e}")),
            Err(_) => return Answer::Retry(format!("no answer within {timeout:?}")),
        };
        if let Ok(mut p) = self.pool.lock() {
            p.push(sender);
        }
        let (status, body) = resp;
        let text = String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned();
        let what = format!(
            "{}:{}{}, HTTP status={}",
            self.s.endpoint.host,
            self.s.endpoint.port,
            self.s.uri,
            status.as_u16()
        );
        if status.is_success() {
            if self.s.log_response {
                tracing::debug!("{what}\n{text}");
            }
            Answer::Ok
        } else if status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408 {
            Answer::Retry(format!("{what} {text}"))
        } else {
            Answer::Refused(format!("{what} {text}"))
        }
    }
}

#[async_trait]
impl Output for HttpOutput {
    async fn flush(&self, batch: &Batch) -> FlushResult {
        if self.s.format == HttpFormat::Gelf {
            let mut bad = Vec::new();
            for r in batch.records() {
                let Some(body) = self.gelf(r) else {
                    bad.push(r);
                    continue;
                };
                match self.post(&batch.tag, body, "application/json").await {
                    Answer::Ok => batch.count_delivered(1),
                    Answer::Retry(e) => return FlushResult::Retry(e),
                    Answer::Refused(e) => {
                        tracing::warn!(output = %self.metrics.name, "record refused: {e}");
                        batch.reject(&self.metrics, [r]);
                    }
                }
            }
            if !bad.is_empty() {
                tracing::warn!(output = %self.metrics.name, records = bad.len(), key = %self.s.gelf.short_message_key,
                    "records without the GELF short message key rejected");
                batch.reject(&self.metrics, bad);
            }
            return FlushResult::Ok;
        }
        let body = match self.body(batch.records()) {
            Ok(b) => b,
            Err(e) => return FlushResult::Error(e),
        };
        let ct = match self.s.format {
            HttpFormat::Msgpack => "application/msgpack",
            HttpFormat::JsonLines => "application/x-ndjson",
            _ => "application/json",
        };
        match self.post(&batch.tag, body, ct).await {
            Answer::Ok => FlushResult::Ok,
            Answer::Retry(e) => FlushResult::Retry(e),
            Answer::Refused(e) => FlushResult::Error(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use logferry_core::EventTime;

    #[test]
    fn base64_of_credentials() {
        assert_eq!(base64(b"user:pass"), "dXNlcjpwYXNz");
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b""), "");
    }

    fn output(keys: &[(&str, &str)]) -> HttpOutput {
        let span = logferry_core::config::Span::command_line();
        let es: Vec<Entry> = keys
            .iter()
            .map(|(k, v)| Entry {
                key: (*k).into(),
                value: (*v).into(),
                span: span.clone(),
            })
            .collect();
        let refs: Vec<&Entry> = es.iter().collect();
        let o = HttpOptions::from_entries(&span, &refs, &[]).unwrap();
        let s = HttpSettings::from_options(&o, std::path::Path::new("/")).unwrap();
        HttpOutput::new(s, logferry_engine::metrics::PluginMetrics::new("http.0"))
    }

    #[test]
    fn gelf_messages() {
        let out = output(&[
            ("Format", "gelf"),
            ("gelf_short_message_key", "log"),
            ("gelf_level_key", "lvl"),
        ]);
        let mut m = Map::new();
        m.insert("log", "hello");
        m.insert("lvl", 3i64);
        let mut k = Map::new();
        k.insert("pod", "p1");
        m.insert("kubernetes", Value::Map(k));
        let r = Record::new(EventTime::from_parts(1_700_000_000, 500_000_000), m);
        let g: serde_json::Value = serde_json::from_slice(&out.gelf(&r).unwrap()).unwrap();
        assert_eq!(g["version"], "1.1");
        assert_eq!(g["short_message"], "hello");
        assert_eq!(g["level"], 3);
        assert_eq!(g["_kubernetes_pod"], "p1");
        assert_eq!(g["timestamp"], 1_700_000_000.5);
        assert!(g.get("_log").is_none());
        let r = Record::new(EventTime(0), Map::new());
        assert!(out.gelf(&r).is_none());
    }

    /// `tls.verify Off` with TLS on is said at start and in `--dry-run`, by the http and
    /// forward outputs alike; without TLS there is nothing to verify and nothing to say.
    #[test]
    fn turning_tls_verification_off_is_noted() {
        let notes = |plugin: &OutputPlugin, keys: &[(&str, &str)]| -> Vec<String> {
            logferry_engine::testing::output_notes(plugin, "out.0", keys)
                .into_iter()
                .filter(|n| n.contains("verification is off"))
                .collect()
        };
        for plugin in [&PLUGIN, &crate::out_forward::PLUGIN] {
            let host = ("Host", "127.0.0.1");
            assert!(notes(plugin, &[host, ("tls", "on")]).is_empty());
            let off = notes(plugin, &[host, ("tls", "on"), ("tls.verify", "off")]);
            assert_eq!(off.len(), 1, "{}: {off:?}", plugin.name);
            assert!(off[0].contains("tls.verify"), "{off:?}");
            assert!(notes(plugin, &[host, ("tls.verify", "off")]).is_empty());
        }
    }

    /// Header values (tokens, keys) never appear in a config error, nor does a lone word.
    #[test]
    fn header_errors_do_not_show_the_value() {
        for v in ["X-Api-Key sec\u{1}ret-token", "secret-token"] {
            let span = logferry_core::config::Span::command_line();
            let e = Entry {
                key: "Header".into(),
                value: v.into(),
                span: span.clone(),
            };
            let o = HttpOptions::from_entries(&span, &[&e], &[]).unwrap();
            let err = HttpSettings::from_options(&o, std::path::Path::new("/"))
                .err()
                .expect("refused");
            assert_eq!(err.0, "Header");
            assert!(!err.1.contains("ret-token"), "{}", err.1);
        }
    }

    #[test]
    fn bad_values_name_their_key() {
        for (k, v) in [
            ("Format", "xml"),
            ("compress", "snappy"),
            ("Header", "novalue"),
            ("json_date_format", "nope"),
        ] {
            let span = logferry_core::config::Span::command_line();
            let e = Entry {
                key: k.into(),
                value: v.into(),
                span: span.clone(),
            };
            let o = HttpOptions::from_entries(&span, &[&e], &[]).unwrap();
            assert_eq!(
                HttpSettings::from_options(&o, std::path::Path::new("/"))
                    .err()
                    .map(|e| e.0),
                Some(k)
            );
        }
    }
}
