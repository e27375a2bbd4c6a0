//! `syslog` input: syslog messages over UDP, TCP or a Unix socket (Fluent Bit's `in_syslog`).
//!
//! - `Mode`: `unix_udp` (the default, as in Fluent Bit), `unix_tcp`, `udp` or `tcp`; `Listen`
//!   and `Port` (default `0.0.0.0:5140`) for the network modes, `Path` (and `Unix_Perm`, default
//!   `0644`) for the Unix ones; TLS with `tls On` in `tcp` mode.
//! - Each message goes through `Parser`: by default `syslog-rfc5424` in the network modes and
//!   `syslog-rfc3164-local` in the Unix ones, as Fluent Bit 5.1 picks them. The parser's time
//!   becomes the record's (the arrival time when it has none). A message the parser does not
//!   match is kept as `{"log": "<message>"}` and counted in
//!   `logferry_syslog_unparsed_messages_total` (Fluent Bit drops it with a warning).
//! - Datagram modes: one message per datagram, at most `Buffer_Chunk_Size` bytes (trailing
//!   newline and NUL removed). Stream modes: messages end at `\n` or NUL (Python's
//!   `SysLogHandler` ends each with NUL), at most `Buffer_Max_Size` bytes; a longer one closes
//!   the connection with a warning.
//! - `Source_Address_Key` adds the sender's address; `Raw_Message_Key` keeps the message as
//!   received under that key.
//! - Paused at `Mem_Buf_Limit`, it stops reading (datagrams then wait in the socket's buffer,
//!   and are dropped by the kernel when it fills, as with any UDP receiver).

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use logferry_core::config::{ByteSize, ConfigError, Entry, Section};
use logferry_core::{options, EventTime, Map, Record, Tag};
use logferry_engine::common::NotApplied;
use logferry_engine::metrics::PluginMetrics;
use logferry_engine::{
    BuildContext, CancellationToken, Emitter, Input, InputContext, InputExit, InputPlugin,
    PluginError,
};
use logferry_parsers::Parser;
use tokio::io::AsyncReadExt;

use crate::key_error;
use crate::net::{self, Conn, Listener, Tls};

options! {
    /// Options of the `syslog` input.
    pub struct SyslogOptions for "syslog input" {
        /// Transport: unix_udp, unix_tcp, udp or tcp.
        pub mode: String = ["Mode"] Some("unix_udp"),
        /// Address to listen on (udp and tcp).
        pub listen: String = ["Listen", "Host"] Some("0.0.0.0"),
        /// Port to listen on (udp and tcp).
        pub port: u16 = ["Port"] Some("5140"),
        /// Unix socket path (unix_udp and unix_tcp).
        pub path: Option<String> = ["Path"] None,
        /// Mode of the Unix socket file, in octal.
        pub unix_perm: String = ["Unix_Perm"] Some("0644"),
        /// Parser of the messages (default: syslog-rfc5424 for udp/tcp, syslog-rfc3164-local for unix).
        pub parser: Option<String> = ["Parser"] None,
        /// Read step, and the largest datagram.
        pub buffer_chunk_size: ByteSize = ["Buffer_Chunk_Size"] Some("32K"),
        /// Largest message of the stream modes (default: Buffer_Chunk_Size).
        pub buffer_max_size: Option<ByteSize> = ["Buffer_Max_Size"] None,
        /// Socket receive buffer of the datagram modes (accepted; the system's default applies).
        pub receive_buffer_size: Option<ByteSize> = ["Receive_Buffer_Size"] None,
        /// Key to add the sender's address under.
        pub source_address_key: Option<String> = ["Source_Address_Key"] None,
        /// Key to keep the message as received under.
        pub raw_message_key: Option<String> = ["Raw_Message_Key"] None,
        /// Serve TLS in tcp mode (with tls.crt_file and tls.key_file).
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
    name: "syslog",
    aliases: &[],
    description: "Syslog",
    options: SyslogOptions::OPTIONS,
    default_workers: 1,
    build,
};

const NOT_APPLIED: &[NotApplied] = &[NotApplied::new(
    "Receive_Buffer_Size",
    None,
    "the system's default socket buffer applies",
)];

/// `Mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyslogMode {
    Udp,
    Tcp,
    UnixUdp,
    UnixTcp,
}

/// The options, checked.
#[derive(Clone)]
pub struct SyslogSettings {
    pub mode: SyslogMode,
    pub listen: String,
    pub port: u16,
    pub path: Option<PathBuf>,
    pub perm: u32,
    pub parser: Arc<Parser>,
    pub chunk_size: usize,
    pub max_size: usize,
    pub source_address_key: Option<String>,
    pub raw_message_key: Option<String>,
    pub tls: Option<Tls>,
}

fn build(
    ctx: &BuildContext,
    section: &Section,
    entries: &[&Entry],
) -> Result<Box<dyn Input>, ConfigError> {
    let o = SyslogOptions::from_entries(&section.span, entries, &[])?;
    let err = |key: &str, reason: String| key_error(section, entries, key, reason);
    let mode = match o.mode.trim().to_ascii_lowercase().as_str() {
        "udp" => SyslogMode::Udp,
        "tcp" => SyslogMode::Tcp,
        "unix_udp" => SyslogMode::UnixUdp,
        "unix_tcp" => SyslogMode::UnixTcp,
        m => {
            return Err(err(
                "Mode",
                format!("unknown mode '{m}': expected unix_udp, unix_tcp, udp or tcp"),
            ))
        }
    };
    let unix = matches!(mode, SyslogMode::UnixUdp | SyslogMode::UnixTcp);
    let path = match (&o.path, unix) {
        (Some(p), true) if !p.trim().is_empty() => {
            let p = std::path::Path::new(p.trim());
            Some(if p.is_absolute() {
                p.to_path_buf()
            } else {
                ctx.base_dir.join(p)
            })
        }
        (_, true) => return Err(err("Path", "unix modes need Path".into())),
        _ => None,
    };
    let perm = u32::from_str_radix(o.unix_perm.trim(), 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| {
            err(
                "Unix_Perm",
                format!("expected an octal mode, got '{}'", o.unix_perm),
            )
        })?;
    let parser_name = o.parser.clone().unwrap_or_else(|| {
        if unix {
            "syslog-rfc3164-local".into()
        } else {
            "syslog-rfc5424".into()
        }
    });
    let parser = ctx.parsers.get(parser_name.trim()).ok_or_else(|| {
        err(
            "Parser",
            format!("requested parser '{parser_name}' not found"),
        )
    })?;
    let size = |b: ByteSize| usize::try_from(b.0).unwrap_or(usize::MAX);
    let chunk_size = size(o.buffer_chunk_size);
    if chunk_size == 0 {
        return Err(err("Buffer_Chunk_Size", "must be greater than 0".into()));
    }
    let tls = if mode == SyslogMode::Tcp {
        net::tls_of(
            o.tls,
            o.tls_crt_file.as_deref(),
            o.tls_key_file.as_deref(),
            &ctx.base_dir,
        )
        .map_err(|(k, r)| err(k, r))?
    } else {
        if o.tls {
            return Err(err("tls", "TLS is only available in tcp mode".into()));
        }
        None
    };
    ctx.not_applied(net::TLS_NOT_APPLIED, entries);
    ctx.not_applied(NOT_APPLIED, entries);
    let settings = SyslogSettings {
        mode,
        listen: o.listen.clone(),
        port: o.port,
        path,
        perm,
        parser,
        chunk_size,
        max_size: o.buffer_max_size.map_or(chunk_size, size).max(chunk_size),
        source_address_key: o.source_address_key.clone().filter(|k| !k.is_empty()),
        raw_message_key: o.raw_message_key.clone().filter(|k| !k.is_empty()),
        tls,
    };
    let unparsed = ctx.metrics.register(
        "syslog_unparsed_messages",
        "syslog messages the parser did not match, kept as {\"log\": message}",
    );
    Ok(Box::new(SyslogInput {
        s: settings,
        unparsed,
    }))
}

/// The `syslog` input.
pub struct SyslogInput {
    s: SyslogSettings,
    unparsed: Arc<AtomicU64>,
}

/// Turns messages into records.
struct Messages {
    s: Arc<SyslogSettings>,
    unparsed: Arc<AtomicU64>,
    name: Arc<str>,
}

impl Messages {
    fn record(&self, raw: &[u8], source: &str) -> Option<Record> {
        let mut raw = raw;
        while let Some((last, rest)) = raw.split_last() {
            if matches!(last, b'\n' | b'\r' | b'\0') {
                raw = rest;
            } else {
                break;
            }
        }
        if raw.is_empty() {
            return None;
        }
        let text = String::from_utf8_lossy(raw);
        let (time, mut body) = match self.s.parser.parse(&text) {
            Some(p) => (p.time.unwrap_or_else(EventTime::now), p.body),
            None => {
                PluginMetrics::add(&self.unparsed, 1);
                tracing::debug!(input = %self.name, parser = %self.s.parser.name(), "message not matched by the parser; kept as {{\"log\": ...}}");
                let mut m = Map::with_capacity(1);
                m.insert("log", text.as_ref());
                (EventTime::now(), m)
            }
        };
        if let Some(k) = &self.s.source_address_key {
            body.insert(k.as_str(), source);
        }
        if let Some(k) = &self.s.raw_message_key {
            body.insert(k.as_str(), text.as_ref());
        }
        Some(Record::new(time, body))
    }
}

#[async_trait]
impl Input for SyslogInput {
    async fn run(self: Box<Self>, ctx: InputContext) -> Result<InputExit, PluginError> {
        let s = Arc::new(self.s);
        let msgs = Arc::new(Messages {
            s: Arc::clone(&s),
            unparsed: self.unparsed,
            name: Arc::from(ctx.name.as_str()),
        });
        let bind_err = |e: std::io::Error| PluginError::Io {
            context: match &s.path {
                Some(p) => format!("could not bind unix://{}", p.display()),
                None => format!("could not bind {}:{}", s.listen, s.port),
            },
            source: e,
        };
        match s.mode {
            SyslogMode::Udp | SyslogMode::UnixUdp => {
                let sock = Datagrams::bind(&s).await.map_err(bind_err)?;
                tracing::info!(input = %ctx.name, "listening on {}", sock.describe());
                datagrams(sock, msgs, &ctx).await
            }
            SyslogMode::Tcp | SyslogMode::UnixTcp => {
                let listener = Listener::bind(&s.listen, s.port, s.path.as_deref(), Some(s.perm))
                    .await
                    .map_err(bind_err)?;
                tracing::info!(input = %ctx.name, "listening on {}", listener.describe());
                let scheme = if s.mode == SyslogMode::Tcp {
                    "tcp"
                } else {
                    "unix_tcp"
                };
                crate::in_tcp::accept_loop(
                    listener,
                    s.tls.clone(),
                    &ctx,
                    move |conn, peer, emitter, stop, names| {
                        let msgs = Arc::clone(&msgs);
                        let source = if scheme == "tcp" {
                            format!("tcp://{peer}")
                        } else {
                            peer.clone()
                        };
                        async move {
                            if let Err(e) = stream(conn, &msgs, &emitter, names.tag, &source, &stop).await {
                                tracing::warn!(input = %msgs.name, peer = %source, "{e}; connection closed");
                            }
                        }
                    },
                )
                .await
            }
        }
    }
}

/// A UDP or Unix datagram socket.
enum Datagrams {
    Udp(tokio::net::UdpSocket),
    Unix(tokio::net::UnixDatagram, PathBuf),
}

impl Datagrams {
    async fn bind(s: &SyslogSettings) -> std::io::Result<Datagrams> {
        if let Some(p) = &s.path {
            if std::fs::symlink_metadata(p).is_ok() {
                std::fs::remove_file(p)?;
            }
            let sock = tokio::net::UnixDatagram::bind(p)?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(s.perm))?;
            return Ok(Datagrams::Unix(sock, p.clone()));
        }
        let host = if s.listen.contains(':') {
            format!("[{}]:{}", s.listen, s.port)
        } else {
            format!("{}:{}", s.listen, s.port)
        };
        Ok(Datagrams::Udp(tokio::net::UdpSocket::bind(host).await?))
    }

    fn describe(&self) -> String {
        match self {
            Datagrams::Udp(u) => u
                .local_addr()
                .map(|a| format!("udp://{a}"))
                .unwrap_or_default(),
            Datagrams::Unix(_, p) => format!("unix://{}", p.display()),
        }
    }

    async fn recv(&self, buf: &mut [u8]) -> std::io::Result<(usize, String)> {
        match self {
            Datagrams::Udp(u) => {
                let (n, from) = u.recv_from(buf).await?;
                Ok((n, format!("udp://{from}")))
            }
            Datagrams::Unix(u, p) => {
                let (n, _) = u.recv_from(buf).await?;
                Ok((n, format!("unix://{}", p.display())))
            }
        }
    }
}

impl Drop for Datagrams {
    fn drop(&mut self) {
        if let Datagrams::Unix(_, p) = self {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Reads datagrams until shutdown; what arrived together is emitted together.
async fn datagrams(
    sock: Datagrams,
    msgs: Arc<Messages>,
    ctx: &InputContext,
) -> Result<InputExit, PluginError> {
    let mut buf = vec![0u8; msgs.s.chunk_size];
    let mut batch: Vec<Record> = Vec::new();
    let mut read = 0usize;
    loop {
        tokio::select! {
            biased;
            _ = ctx.shutdown.cancelled() => break,
            _ = ctx.emitter.ready() => {}
        }
        // Wait for one datagram, then take what else is already there (up to 1000).
        let got = if batch.is_empty() {
            tokio::select! {
                biased;
                _ = ctx.shutdown.cancelled() => break,
                r = sock.recv(&mut buf) => Some(r),
            }
        } else {
            tokio::time::timeout(Duration::ZERO, sock.recv(&mut buf))
                .await
                .ok()
        };
        match got {
            Some(Ok((n, from))) => {
                read += n;
                if let Some(r) = msgs.record(&buf[..n], &from) {
                    batch.push(r);
                }
                if batch.len() < 1000 {
                    continue;
                }
            }
            Some(Err(e)) => {
                tracing::warn!(input = %msgs.name, "receive failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            None => {}
        }
        if !batch.is_empty() {
            ctx.emitter
                .emit(
                    ctx.tag.clone(),
                    std::mem::take(&mut batch),
                    std::mem::take(&mut read),
                    None,
                )
                .await?;
        }
    }
    if !batch.is_empty() {
        ctx.emitter.emit(ctx.tag.clone(), batch, read, None).await?;
    }
    Ok(InputExit::Finished)
}

/// Reads one stream connection: messages end at `\n` or NUL.
async fn stream(
    mut conn: Conn,
    msgs: &Messages,
    emitter: &Emitter,
    tag: Tag,
    source: &str,
    stop: &CancellationToken,
) -> Result<(), String> {
    let mut buf: Vec<u8> = Vec::with_capacity(msgs.s.chunk_size);
    loop {
        let mut records = Vec::new();
        let mut start = 0;
        while let Some(i) = buf[start..].iter().position(|b| *b == b'\n' || *b == 0) {
            if let Some(r) = msgs.record(&buf[start..start + i], source) {
                records.push(r);
            }
            start += i + 1;
        }
        buf.drain(..start);
        if !records.is_empty() {
            emitter
                .emit(tag.clone(), records, start, None)
                .await
                .map_err(|e| e.to_string())?;
        }
        if buf.len() >= msgs.s.max_size {
            return Err(format!(
                "a message is longer than Buffer_Max_Size ({} bytes)",
                msgs.s.max_size
            ));
        }
        tokio::select! {
            biased;
            _ = stop.cancelled() => return Ok(()),
            _ = emitter.ready() => {}
        }
        buf.reserve(msgs.s.chunk_size.min(msgs.s.max_size - buf.len()).max(1));
        let n = tokio::select! {
            biased;
            _ = stop.cancelled() => return Ok(()),
            n = conn.read_buf(&mut buf) => n.map_err(|e| format!("read failed: {e}"))?,
        };
        if n == 0 {
            if let Some(r) = msgs.record(&buf, source) {
                let len = buf.len();
                emitter
                    .emit(tag, vec![r], len, None)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            return Ok(());
        }
    }
}
