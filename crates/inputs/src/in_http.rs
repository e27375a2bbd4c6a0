//! `http` input: records posted over HTTP (Fluent Bit's `in_http`).
//!
//! - Listens on `Listen:Port` (default `0.0.0.0:9880`), HTTP/1.1, over TLS with `tls On`.
//! - `POST` with a JSON body: an object is one record, an array of objects several; several
//!   JSON values one after another (NDJSON, `application/x-ndjson`) are read in turn.
//!   `application/x-www-form-urlencoded` bodies become one record of their fields. A body with
//!   `Content-Encoding: gzip` is decompressed first. Records are stamped with the time they
//!   arrive.
//! - The tag is the URI path without its leading `/`, with `/` turned into `.` (`POST
//!   /app/web` tags `app.web`); `POST /` uses the input's `Tag`. With `tag_key`, a record whose
//!   key holds a string is tagged with it instead.
//! - Success is `successful_response_code` (201; 200 and 204 allowed, as Fluent Bit allows)
//!   with every `success_header`, sent once the records are in the input's buffer. A body
//!   over `buffer_max_size` is refused with 413, a body that is not JSON of that shape (or an
//!   unknown content type) with 400, a method other than POST with 400; refusals are counted in
//!   `logferry_http_rejected_requests_total` and logged at debug level (the client is told).
//! - `add_remote_addr On` adds the client's address under `remote_addr_key` (`REMOTE_ADDR`):
//!   the first `X-Forwarded-For` address when the request has one, else the peer's.
//! - `enable_health_endpoint On` answers `GET /health` with 200.
//! - While the input is paused at `Mem_Buf_Limit` it accepts no connection and answers no
//!   request (see [`crate::net`]): clients wait rather than lose records.

use std::convert::Infallible;
use std::io::Read;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Request, Response, StatusCode};
use logferry_core::config::{ByteSize, ConfigError, Entry, Section};
use logferry_core::{options, EventTime, Map, Record, Tag, Value};
use logferry_engine::common::NotApplied;
use logferry_engine::metrics::PluginMetrics;
use logferry_engine::{
    BuildContext, Emitter, Input, InputContext, InputExit, InputPlugin, PluginError,
};

use crate::key_error;
use crate::net::{self, Listener, Tls};

options! {
    /// Options of the `http` input.
    pub struct HttpOptions for "http input" {
        /// Address to listen on.
        pub listen: String = ["Listen", "Host"] Some("0.0.0.0"),
        /// TCP port to listen on.
        pub port: u16 = ["Port"] Some("9880"),
        /// Largest request body taken; larger ones are refused with 413.
        pub buffer_max_size: ByteSize = ["buffer_max_size"] Some("4M"),
        /// Read step of request bodies (accepted; bodies are read as they come).
        pub buffer_chunk_size: ByteSize = ["buffer_chunk_size"] Some("512K"),
        /// HTTP status of a successful request: 200, 201 or 204.
        pub successful_response_code: u16 = ["successful_response_code"] Some("201"),
        /// `KEY VALUE` header added to successful responses (repeatable).
        pub success_header: Vec<String> = ["success_header"] None,
        /// Record key whose string value becomes the record's tag.
        pub tag_key: Option<String> = ["tag_key"] None,
        /// Add the client's address to each record.
        pub add_remote_addr: bool = ["add_remote_addr"] Some("false"),
        /// Key of the client's address.
        pub remote_addr_key: String = ["remote_addr_key"] Some("REMOTE_ADDR"),
        /// Answer GET /health with 200.
        pub enable_health_endpoint: bool = ["enable_health_endpoint"] Some("false"),
        /// HTTP/2 (accepted; logferry's http input speaks HTTP/1.1).
        pub http2: bool = ["http2"] Some("true"),
        /// Serve TLS (with tls.crt_file and tls.key_file).
        pub tls: bool = ["tls"] Some("off"),
        /// Certificate chain (PEM) served with tls On.
        pub tls_crt_file: Option<String> = ["tls.crt_file"] None,
        /// Private key (PEM, unencrypted) of tls.crt_file.
        pub tls_key_file: Option<String> = ["tls.key_file"] None,
        /// Other TLS and network keys (accepted; each set one is noted as not applied).
        pub tls_other: Vec<String> = ["tls.verify", "tls.debug", "tls.vhost", "tls.ca_path", "tls.ca_file", "tls.key_passwd", "tls.min_version", "tls.max_version", "tls.ciphers", "net.backlog", "net.io_timeout", "net.accept_timeout", "net.accept_timeout_log_error", "net.keepalive", "net.keepalive_idle_timeout", "net.keepalive_max_recycle", "net.share_port"] None,
    }
}

/// The registry entry.
pub static PLUGIN: InputPlugin = InputPlugin {
    name: "http",
    aliases: &[],
    description: "HTTP",
    options: HttpOptions::OPTIONS,
    default_workers: 1,
    build,
};

const NOT_APPLIED: &[NotApplied] = &[
    NotApplied::new(
        "http2",
        Some("true"),
        "logferry's http input speaks HTTP/1.1",
    ),
    NotApplied::new(
        "buffer_chunk_size",
        None,
        "bodies are read as they arrive, up to buffer_max_size",
    ),
];

/// The options, checked.
#[derive(Clone)]
pub struct HttpSettings {
    pub listen: String,
    pub port: u16,
    pub max_size: usize,
    pub status: u16,
    pub success_headers: Vec<(String, String)>,
    pub tag_key: Option<String>,
    pub remote_addr_key: Option<String>,
    pub health: bool,
    pub tls: Option<Tls>,
}

impl HttpSettings {
    /// Checks the options; an error names the Fluent Bit key at fault.
    pub fn from_options(
        o: &HttpOptions,
        base: &std::path::Path,
    ) -> Result<Self, (&'static str, String)> {
        if ![200, 201, 204].contains(&o.successful_response_code) {
            return Err((
                "successful_response_code",
                format!(
                    "{} is not supported: use 200, 201 or 204",
                    o.successful_response_code
                ),
            ));
        }
        let mut success_headers = Vec::new();
        for h in &o.success_header {
            match h.trim().split_once(char::is_whitespace) {
                Some((k, v)) => success_headers.push((k.to_string(), v.trim().to_string())),
                None => return Err(("success_header", format!("expected 'KEY VALUE', got '{h}'"))),
            }
        }
        Ok(HttpSettings {
            listen: o.listen.clone(),
            port: o.port,
            max_size: usize::try_from(o.buffer_max_size.0).unwrap_or(usize::MAX),
            status: o.successful_response_code,
            success_headers,
            tag_key: o.tag_key.clone().filter(|k| !k.is_empty()),
            remote_addr_key: o.add_remote_addr.then(|| o.remote_addr_key.clone()),
            health: o.enable_health_endpoint,
            tls: net::tls_of(
                o.tls,
                o.tls_crt_file.as_deref(),
                o.tls_key_file.as_deref(),
                base,
            )?,
        })
    }
}

fn build(
    ctx: &BuildContext,
    section: &Section,
    entries: &[&Entry],
) -> Result<Box<dyn Input>, ConfigError> {
    let opts = HttpOptions::from_entries(&section.span, entries, &[])?;
    let settings = HttpSettings::from_options(&opts, &ctx.base_dir)
        .map_err(|(key, reason)| key_error(section, entries, key, reason))?;
    ctx.not_applied(net::TLS_NOT_APPLIED, entries);
    ctx.not_applied(NOT_APPLIED, entries);
    let rejected = ctx.metrics.register(
        "http_rejected_requests",
        "requests the http input refused (bad body, too large, wrong method)",
    );
    Ok(Box::new(HttpInput { settings, rejected }))
}

/// The `http` input.
pub struct HttpInput {
    settings: HttpSettings,
    rejected: Arc<AtomicU64>,
}

impl HttpInput {
    /// An input with these settings (tests and tools).
    pub fn new(settings: HttpSettings) -> Self {
        HttpInput {
            settings,
            rejected: Arc::default(),
        }
    }
}

/// What every connection's requests share.
struct Shared {
    s: HttpSettings,
    emitter: Emitter,
    tag: Tag,
    rejected: Arc<AtomicU64>,
    name: String,
}

#[async_trait]
impl Input for HttpInput {
    async fn run(self: Box<Self>, ctx: InputContext) -> Result<InputExit, PluginError> {
        let s = self.settings;
        let listener = Listener::bind(&s.listen, s.port, None, None)
            .await
            .map_err(|e| PluginError::Io {
                context: format!("could not bind {}:{}", s.listen, s.port),
                source: e,
            })?;
        tracing::info!(input = %ctx.name, "listening on {}", listener.describe());
        let shared = Arc::new(Shared {
            s,
            emitter: ctx.emitter.clone(),
            tag: ctx.tag.clone(),
            rejected: self.rejected,
            name: ctx.name.clone(),
        });
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            while tasks.try_join_next().is_some() {}
            tokio::select! {
                biased;
                _ = ctx.shutdown.cancelled() => break,
                _ = ctx.emitter.ready() => {}
            }
            let accepted = tokio::select! {
                biased;
                _ = ctx.shutdown.cancelled() => break,
                a = listener.accept() => a,
            };
            let (a, peer) = match accepted {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(input = %ctx.name, "accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let shared = Arc::clone(&shared);
            let stop = ctx.shutdown.clone();
            tasks.spawn(async move {
                let conn = match net::finish(a, shared.s.tls.as_ref(), Duration::from_secs(10))
                    .await
                {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(input = %shared.name, %peer, "TLS handshake failed: {e}");
                        return;
                    }
                };
                let peer_ip = peer.rsplit_once(':').map_or(peer.clone(), |(h, _)| {
                    h.trim_matches(['[', ']']).to_string()
                });
                let svc = hyper::service::service_fn(move |req| {
                    let shared = Arc::clone(&shared);
                    let peer_ip = peer_ip.clone();
                    async move { Ok::<_, Infallible>(handle(&shared, req, &peer_ip).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(conn), svc);
                tokio::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => {}
                    _ = stop.cancelled() => {
                        conn.as_mut().graceful_shutdown();
                        let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
                    }
                }
            });
        }
        drop(listener);
        while tasks.join_next().await.is_some() {}
        Ok(InputExit::Finished)
    }
}

fn reply(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r
}

async fn handle(
    sh: &Shared,
    req: Request<hyper::body::Incoming>,
    peer: &str,
) -> Response<Full<Bytes>> {
    let refuse = |status: StatusCode, why: String| {
        PluginMetrics::add(&sh.rejected, 1);
        tracing::debug!(input = %sh.name, %peer, "request refused ({status}): {why}");
        reply(status, &format!("error: {why}\n"))
    };
    let path = req.uri().path().to_string();
    if req.method() == hyper::Method::GET && sh.s.health && path == "/health" {
        return reply(StatusCode::OK, "{\"status\":\"ok\"}\n");
    }
    if req.method() != hyper::Method::POST {
        return refuse(
            StatusCode::BAD_REQUEST,
            format!("invalid HTTP method {}", req.method()),
        );
    }
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.trim().to_ascii_lowercase())
    };
    let content_type = header("content-type").unwrap_or_default();
    let gzip = header("content-encoding").is_some_and(|e| e == "gzip");
    let remote = req
        .headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| peer.to_string());
    let body = match Limited::new(req.into_body(), sh.s.max_size).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return if e.is::<http_body_util::LengthLimitError>() {
                refuse(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("body over buffer_max_size ({})", sh.s.max_size),
                )
            } else {
                refuse(StatusCode::BAD_REQUEST, format!("reading the body: {e}"))
            };
        }
    };
    let read = body.len();
    let body: Vec<u8> = if gzip {
        let mut out = Vec::new();
        let limit = sh.s.max_size.saturating_mul(8) as u64;
        match flate2::read::MultiGzDecoder::new(&body[..])
            .take(limit + 1)
            .read_to_end(&mut out)
        {
            Ok(_) if out.len() as u64 <= limit => out,
            Ok(_) => {
                return refuse(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body too large once decompressed".into(),
                )
            }
            Err(e) => return refuse(StatusCode::BAD_REQUEST, format!("invalid gzip body: {e}")),
        }
    } else {
        body.to_vec()
    };
    let now = EventTime::now();
    let media = content_type.split(';').next().unwrap_or("").trim();
    let mut records = match media {
        ""
        | "application/json"
        | "application/x-ndjson"
        | "application/jsonlines"
        | "application/json-seq" => match json_records(&body, now) {
            Ok(r) => r,
            Err(why) => return refuse(StatusCode::BAD_REQUEST, why),
        },
        "application/x-www-form-urlencoded" => vec![Record::new(now, form_record(&body))],
        other => {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!("invalid content type '{other}'"),
            )
        }
    };
    if let Some(key) = &sh.s.remote_addr_key {
        for r in &mut records {
            r.body.insert(key.as_str(), remote.as_str());
        }
    }
    let uri_tag: Tag = match path.trim_start_matches('/') {
        "" => sh.tag.clone(),
        p => Tag::from(p.replace('/', ".").as_str()),
    };
    // Consecutive records of one tag go out together.
    let mut groups: Vec<(Tag, Vec<Record>)> = Vec::new();
    for r in records {
        let tag =
            sh.s.tag_key
                .as_deref()
                .and_then(|k| r.body.get(k))
                .and_then(Value::as_str)
                .map(Tag::from)
                .unwrap_or_else(|| uri_tag.clone());
        match groups.last_mut() {
            Some((t, v)) if *t == tag => v.push(r),
            _ => groups.push((tag, vec![r])),
        }
    }
    for (i, (tag, recs)) in groups.into_iter().enumerate() {
        let bytes = if i == 0 { read } else { 0 };
        if let Err(e) = sh.emitter.emit(tag, recs, bytes, None).await {
            return reply(StatusCode::SERVICE_UNAVAILABLE, &format!("error: {e}\n"));
        }
    }
    let mut r = reply(
        StatusCode::from_u16(sh.s.status).unwrap_or(StatusCode::CREATED),
        "",
    );
    for (k, v) in &sh.s.success_headers {
        if let (Ok(k), Ok(v)) = (
            hyper::header::HeaderName::from_bytes(k.as_bytes()),
            hyper::header::HeaderValue::from_str(v),
        ) {
            r.headers_mut().append(k, v);
        }
    }
    r
}

fn into_map(o: serde_json::Map<String, serde_json::Value>) -> Map {
    match Value::from_json(serde_json::Value::Object(o)) {
        Value::Map(m) => m,
        _ => Map::new(),
    }
}

/// JSON values one after another (one value, or NDJSON): objects, or arrays of objects.
fn json_records(body: &[u8], now: EventTime) -> Result<Vec<Record>, String> {
    let mut out = Vec::new();
    for v in serde_json::Deserializer::from_slice(body).into_iter::<serde_json::Value>() {
        match v.map_err(|e| format!("invalid JSON: {e}"))? {
            serde_json::Value::Object(o) => out.push(Record::new(now, into_map(o))),
            serde_json::Value::Array(a) => {
                for el in a {
                    match el {
                        serde_json::Value::Object(o) => out.push(Record::new(now, into_map(o))),
                        _ => return Err("an array element is not a JSON object".into()),
                    }
                }
            }
            _ => return Err("expected JSON objects or arrays of objects".into()),
        }
    }
    if out.is_empty() {
        return Err("no records in the body".into());
    }
    Ok(out)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `a=1&b=two` as `{"a": "1", "b": "two"}`.
fn form_record(body: &[u8]) -> Map {
    let text = String::from_utf8_lossy(body);
    let mut m = Map::new();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        m.insert(percent_decode(k).as_str(), percent_decode(v).as_str());
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_ndjson_and_forms() {
        let now = EventTime(1);
        assert_eq!(json_records(br#"{"a":1}"#, now).unwrap().len(), 1);
        assert_eq!(json_records(br#"[{"a":1},{"b":2}]"#, now).unwrap().len(), 2);
        assert_eq!(
            json_records(b"{\"a\":1}\n{\"b\":2}\n\n{\"c\":3}\n", now)
                .unwrap()
                .len(),
            3
        );
        assert!(json_records(b"[1,2]", now).is_err());
        assert!(json_records(b"{\"a\":", now).is_err());
        assert!(json_records(b"  ", now).is_err());
        let m = form_record(b"a=1&msg=hello+w%C3%B6rld&bad=%zz&empty");
        assert_eq!(m.get("msg").and_then(Value::as_str), Some("hello wörld"));
        assert_eq!(m.get("bad").and_then(Value::as_str), Some("%zz"));
        assert_eq!(m.get("empty").and_then(Value::as_str), Some(""));
    }
}
