//! `tcp` input: records from plain TCP connections (Fluent Bit's `in_tcp`).
//!
//! - Listens on `Listen:Port` (default `0.0.0.0:5170`), TLS with `tls On`.
//! - `Format json` (default): the stream is JSON objects one after another (newlines or not
//!   between them); each object is a record stamped with the time it arrives. A value that is
//!   not an object, or bytes that are not JSON, are skipped up to the next `Separator`, logged
//!   and counted in `logferry_tcp_rejected_messages_total`.
//! - `Format none`: the stream is cut at `Separator` (default `\n`; `\r\n` line ends lose their
//!   `\r`... only when the separator is `\n`), each piece a record `{"log": "<text>"}`.
//! - `Chunk_Size` and `Buffer_Size` are in KB, as Fluent Bit reads them (32 and `Chunk_Size`):
//!   a message longer than `Buffer_Size` closes the connection with a warning, as Fluent Bit
//!   does.
//! - `Source_Address_Key` adds the client's address (`tcp://IP:PORT`) to each record.
//! - Paused at `Mem_Buf_Limit`, it stops reading and accepting (see [`crate::net`]).

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use logferry_core::config::{ConfigError, Entry, Section};
use logferry_core::{options, EventTime, Map, Record, Tag, Value};
use logferry_engine::metrics::PluginMetrics;
use logferry_engine::{
    BuildContext, CancellationToken, Emitter, Input, InputContext, InputExit, InputPlugin,
    PluginError,
};
use tokio::io::AsyncReadExt;

use crate::key_error;
use crate::net::{self, Conn, Listener, Tls};

options! {
    /// Options of the `tcp` input.
    pub struct TcpOptions for "tcp input" {
        /// Address to listen on.
        pub listen: String = ["Listen", "Host"] Some("0.0.0.0"),
        /// TCP port to listen on.
        pub port: u16 = ["Port"] Some("5170"),
        /// Format of the stream: json or none.
        pub format: String = ["Format"] Some("json"),
        /// Separator of messages with Format none (escapes \n, \r, \t allowed).
        pub separator: String = ["Separator"] Some("\\n"),
        /// Read step in KB.
        pub chunk_size: String = ["Chunk_Size"] Some("32"),
        /// Largest message in KB (default: Chunk_Size).
        pub buffer_size: Option<String> = ["Buffer_Size"] None,
        /// Key to add the client's address under.
        pub source_address_key: Option<String> = ["Source_Address_Key"] None,
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
    name: "tcp",
    aliases: &[],
    description: "TCP",
    options: TcpOptions::OPTIONS,
    default_workers: 1,
    build,
};

/// `Format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpFormat {
    Json,
    None,
}

/// The options, checked.
#[derive(Clone)]
pub struct TcpSettings {
    pub listen: String,
    pub port: u16,
    pub format: TcpFormat,
    pub separator: Vec<u8>,
    pub chunk_size: usize,
    pub max_size: usize,
    pub source_address_key: Option<String>,
    pub tls: Option<Tls>,
}

/// `\n`, `\r`, `\t` and `\\` in a written separator.
pub fn unescape(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push(b'\n'),
                Some('r') => out.push(b'\r'),
                Some('t') => out.push(b'\t'),
                Some('\\') => out.push(b'\\'),
                Some(o) => {
                    out.push(b'\\');
                    let mut b = [0; 4];
                    out.extend_from_slice(o.encode_utf8(&mut b).as_bytes());
                }
                None => out.push(b'\\'),
            }
        } else {
            let mut b = [0; 4];
            out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
        }
    }
    out
}

/// A size in KB as Fluent Bit's `tcp` input reads `Chunk_Size`/`Buffer_Size` (a number is KB;
/// a size with a unit is taken as written).
pub fn kb(raw: &str) -> Result<usize, String> {
    let t = raw.trim();
    let bytes = match t.parse::<u64>() {
        Ok(n) => n.saturating_mul(1024),
        Err(_) => logferry_core::config::units::parse_size(t)?,
    };
    if bytes == 0 {
        return Err("must be greater than 0".into());
    }
    Ok(usize::try_from(bytes).unwrap_or(usize::MAX))
}

impl TcpSettings {
    /// Checks the options; an error names the Fluent Bit key at fault.
    pub fn from_options(
        o: &TcpOptions,
        base: &std::path::Path,
    ) -> Result<Self, (&'static str, String)> {
        let format = match o.format.trim().to_ascii_lowercase().as_str() {
            "json" => TcpFormat::Json,
            "none" => TcpFormat::None,
            f => {
                return Err((
                    "Format",
                    format!("unknown format '{f}': expected json or none"),
                ))
            }
        };
        let separator = unescape(&o.separator);
        if separator.is_empty() {
            return Err(("Separator", "must not be empty".into()));
        }
        let chunk_size = kb(&o.chunk_size).map_err(|e| ("Chunk_Size", e))?;
        let max_size = match &o.buffer_size {
            Some(b) => kb(b).map_err(|e| ("Buffer_Size", e))?,
            None => chunk_size,
        };
        Ok(TcpSettings {
            listen: o.listen.clone(),
            port: o.port,
            format,
            separator,
            chunk_size,
            max_size: max_size.max(chunk_size),
            source_address_key: o.source_address_key.clone().filter(|k| !k.is_empty()),
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
    let opts = TcpOptions::from_entries(&section.span, entries, &[])?;
    let settings = TcpSettings::from_options(&opts, &ctx.base_dir)
        .map_err(|(key, reason)| key_error(section, entries, key, reason))?;
    ctx.not_applied(net::TLS_NOT_APPLIED, entries);
    let rejected = ctx.metrics.register(
        "tcp_rejected_messages",
        "messages the tcp input skipped: not a JSON object",
    );
    Ok(Box::new(TcpInput { settings, rejected }))
}

/// The `tcp` input.
pub struct TcpInput {
    settings: TcpSettings,
    rejected: Arc<AtomicU64>,
}

#[async_trait]
impl Input for TcpInput {
    async fn run(self: Box<Self>, ctx: InputContext) -> Result<InputExit, PluginError> {
        let s = Arc::new(self.settings);
        let listener = Listener::bind(&s.listen, s.port, None, None)
            .await
            .map_err(|e| PluginError::Io {
                context: format!("could not bind {}:{}", s.listen, s.port),
                source: e,
            })?;
        tracing::info!(input = %ctx.name, "listening on {}", listener.describe());
        let rejected = self.rejected;
        let tls = s.tls.clone();
        accept_loop(
            listener,
            tls,
            &ctx,
            move |conn, peer, emitter, stop, names| {
                let mut r = StreamReader {
                    s: Arc::clone(&s),
                    emitter,
                    tag: names.tag,
                    rejected: Arc::clone(&rejected),
                    name: names.name,
                    source: format!("tcp://{peer}"),
                };
                async move {
                    if let Err(e) = r.read(conn, &stop).await {
                        tracing::warn!(input = %r.name, %peer, "{e}; connection closed");
                    }
                }
            },
        )
        .await
    }
}

/// The input's name and tag, for connection tasks.
#[derive(Clone)]
pub(crate) struct Names {
    pub name: Arc<str>,
    pub tag: Tag,
}

/// Accepts connections until shutdown; each one gets a task that finishes TLS and runs
/// `serve` on it.
pub(crate) async fn accept_loop<F, Fut>(
    listener: Listener,
    tls: Option<Tls>,
    ctx: &InputContext,
    serve: F,
) -> Result<InputExit, PluginError>
where
    F: Fn(Conn, String, Emitter, CancellationToken, Names) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let names = Names {
        name: Arc::from(ctx.name.as_str()),
        tag: ctx.tag.clone(),
    };
    let serve = Arc::new(serve);
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
        let tls = tls.clone();
        let serve = Arc::clone(&serve);
        let (emitter, stop, names) = (ctx.emitter.clone(), ctx.shutdown.clone(), names.clone());
        tasks.spawn(async move {
            match net::finish(a, tls.as_ref(), Duration::from_secs(10)).await {
                Ok(conn) => serve(conn, peer, emitter, stop, names).await,
                Err(e) => {
                    tracing::warn!(input = %names.name, %peer, "TLS handshake failed: {e}")
                }
            }
        });
    }
    drop(listener);
    while tasks.join_next().await.is_some() {}
    Ok(InputExit::Finished)
}

/// Reads one connection's stream of messages.
pub(crate) struct StreamReader {
    pub s: Arc<TcpSettings>,
    pub emitter: Emitter,
    pub tag: Tag,
    pub rejected: Arc<AtomicU64>,
    pub name: Arc<str>,
    pub source: String,
}

impl StreamReader {
    async fn read(&mut self, mut conn: Conn, stop: &CancellationToken) -> Result<(), String> {
        let mut buf: Vec<u8> = Vec::with_capacity(self.s.chunk_size);
        loop {
            let (records, used) = self.parse(&buf, false);
            buf.drain(..used);
            self.emit(records, used).await?;
            if buf.len() >= self.s.max_size {
                return Err(format!(
                    "a message is longer than Buffer_Size ({} bytes)",
                    self.s.max_size
                ));
            }
            tokio::select! {
                biased;
                _ = stop.cancelled() => return Ok(()),
                _ = self.emitter.ready() => {}
            }
            buf.reserve(self.s.chunk_size.min(self.s.max_size - buf.len()).max(1));
            let n = tokio::select! {
                biased;
                _ = stop.cancelled() => return Ok(()),
                n = conn.read_buf(&mut buf) => n.map_err(|e| format!("read failed: {e}"))?,
            };
            if n == 0 {
                // The last message need not end with a separator.
                let (records, used) = self.parse(&buf, true);
                self.emit(records, used).await?;
                return Ok(());
            }
        }
    }

    async fn emit(&self, mut records: Vec<Record>, read: usize) -> Result<(), String> {
        if records.is_empty() {
            return Ok(());
        }
        if let Some(k) = &self.s.source_address_key {
            for r in &mut records {
                r.body.insert(k.as_str(), self.source.as_str());
            }
        }
        self.emitter
            .emit(self.tag.clone(), records, read, None)
            .await
            .map_err(|e| e.to_string())
    }

    fn reject(&self, what: &[u8], why: &str) {
        PluginMetrics::add(&self.rejected, 1);
        tracing::warn!(input = %self.name, source = %self.source, bytes = what.len(), "message skipped: {why}");
    }

    /// Records from the complete messages at the start of `buf`, and the bytes they took.
    /// At `eof` whatever is left is a message too.
    fn parse(&self, buf: &[u8], eof: bool) -> (Vec<Record>, usize) {
        let now = EventTime::now();
        let mut out = Vec::new();
        match self.s.format {
            TcpFormat::None => {
                let sep = &self.s.separator;
                let mut start = 0;
                while let Some(i) = find(&buf[start..], sep) {
                    let piece = &buf[start..start + i];
                    let piece = if sep == b"\n" {
                        piece.strip_suffix(b"\r").unwrap_or(piece)
                    } else {
                        piece
                    };
                    if !piece.is_empty() {
                        out.push(log_record(piece, now));
                    }
                    start += i + sep.len();
                }
                if eof && start < buf.len() {
                    out.push(log_record(&buf[start..], now));
                    start = buf.len();
                }
                (out, start)
            }
            TcpFormat::Json => {
                let mut used = 0;
                let mut it =
                    serde_json::Deserializer::from_slice(buf).into_iter::<serde_json::Value>();
                loop {
                    match it.next() {
                        None => {
                            used = buf.len();
                            break;
                        }
                        Some(Ok(serde_json::Value::Object(o))) => {
                            out.push(Record::new(now, into_map(o)));
                            used = it.byte_offset();
                        }
                        Some(Ok(_)) => {
                            let end = it.byte_offset();
                            self.reject(&buf[used..end], "not a JSON object");
                            used = end;
                        }
                        Some(Err(e)) if e.is_eof() && !eof => break,
                        Some(Err(e)) => {
                            // Skip to the next separator and go on from there.
                            let from = used;
                            let skip = find(&buf[from..], &self.s.separator)
                                .map(|i| from + i + self.s.separator.len());
                            match skip {
                                Some(end) => {
                                    self.reject(&buf[from..end], &format!("invalid JSON: {e}"));
                                    used = end;
                                    let (recs, more) = self.parse(&buf[used..], eof);
                                    out.extend(recs);
                                    return (out, used + more);
                                }
                                None if eof => {
                                    self.reject(&buf[from..], &format!("invalid JSON: {e}"));
                                    used = buf.len();
                                    break;
                                }
                                None => break,
                            }
                        }
                    }
                }
                (out, used)
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.len() == 1 {
        return memchr::memchr(needle[0], hay);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

fn into_map(o: serde_json::Map<String, serde_json::Value>) -> Map {
    match Value::from_json(serde_json::Value::Object(o)) {
        Value::Map(m) => m,
        _ => Map::new(),
    }
}

fn log_record(text: &[u8], now: EventTime) -> Record {
    let mut m = Map::with_capacity(1);
    m.insert("log", String::from_utf8_lossy(text).as_ref());
    Record::new(now, m)
}
