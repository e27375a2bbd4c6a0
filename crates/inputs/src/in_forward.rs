//! `forward` input: receives the Fluent forward protocol (Fluent Bit's `in_forward`), what
//! Fluentd, Fluent Bit's `forward` output, the fluent-logger libraries and ECS FireLens send.
//!
//! - Listens on `Listen:Port` (default `0.0.0.0:24224`), or on the Unix socket `Unix_Path`
//!   (mode `Unix_Perm`), with TLS when `tls On` (`tls.crt_file`, `tls.key_file`).
//! - Takes the four event modes: Message, Forward, PackedForward and CompressedPackedForward
//!   (gzip). Entries may be `[time, record]` or Fluent Bit's `[[time, metadata], record]`; time
//!   an `EventTime`, integer seconds or a float.
//! - A message with the `chunk` option is answered `{"ack": chunk}` once its records are in the
//!   input's buffer (as Fluent Bit acknowledges), so a sender with `Require_ack_response`
//!   resends what was not acknowledged.
//! - `Shared_Key` (or `Empty_Shared_Key On`) turns on the secure forward handshake: the server
//!   sends `HELO` with a nonce (and a user-auth salt with `security.users`), checks the client's
//!   `PING` digests (SHA-512 of salt, hostname, nonce and key; of salt, user and password), and
//!   answers `PONG` with its own digest under `Self_Hostname`; a failed check is answered with
//!   the reason and the connection closed. As in Fluent Bit 5.1, `security.users` without a key
//!   is a configuration error.
//! - The tag is the sender's, prefixed with `Tag_Prefix`, unless `Tag` is set.
//! - A message may be up to `Buffer_Max_Size` bytes (read in `Buffer_Chunk_Size` steps); a
//!   larger one, or bytes that are not msgpack, close the connection with a warning (a stream
//!   cannot be resynchronised). A complete message in a shape the protocol does not allow is
//!   skipped, logged and counted in `logferry_forward_rejected_messages_total`; the connection
//!   goes on.
//! - While the input is paused at `Mem_Buf_Limit` it stops reading and accepting (see
//!   [`crate::net`]); acks wait with it.
//!
//! Metrics and traces sent over forward (`fluent_signal` 1 or 2) are rejected as above:
//! logferry carries logs only.

use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use logferry_core::config::{ByteSize, ConfigError, Entry, Section};
use logferry_core::forward::{self, ClientMessage, Helo, Ping, Pong, Scan};
use logferry_core::{options, Tag};
use logferry_engine::{
    BuildContext, CancellationToken, Emitter, Input, InputContext, InputExit, InputPlugin,
    PluginError,
};
use sha2::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::key_error;
use crate::net::{self, Conn, Listener, Tls};

options! {
    /// Options of the `forward` input.
    pub struct ForwardOptions for "forward input" {
        /// Address to listen on.
        pub listen: String = ["Listen", "Host"] Some("0.0.0.0"),
        /// TCP port to listen on.
        pub port: u16 = ["Port"] Some("24224"),
        /// Listen on this Unix socket instead of Listen and Port.
        pub unix_path: Option<String> = ["Unix_Path"] None,
        /// Mode of the Unix socket file, in octal (e.g. 0644).
        pub unix_perm: Option<String> = ["Unix_Perm"] None,
        /// Step by which a connection's read buffer grows.
        pub buffer_chunk_size: ByteSize = ["Buffer_Chunk_Size"] Some("1024000"),
        /// Largest message taken; a larger one closes the connection.
        pub buffer_max_size: ByteSize = ["Buffer_Max_Size"] Some("6144000"),
        /// Prefix added to the tag each message carries.
        pub tag_prefix: Option<String> = ["Tag_Prefix"] None,
        /// Shared key of the secure forward handshake.
        pub shared_key: Option<String> = ["Shared_Key"] None,
        /// Hostname this side gives in the handshake.
        pub self_hostname: String = ["Self_Hostname"] Some("localhost"),
        /// Run the handshake with an empty shared key.
        pub empty_shared_key: bool = ["Empty_Shared_Key"] Some("false"),
        /// `USER PASSWORD` accepted by the handshake's user authentication (repeatable).
        pub users: Vec<String> = ["security.users"] None,
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
    name: "forward",
    aliases: &[],
    description: "Fluentd in-forward",
    options: ForwardOptions::OPTIONS,
    default_workers: 1,
    build,
};

/// How long a client has for the TLS handshake and the secure forward handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The options, checked.
#[derive(Clone)]
pub struct ForwardSettings {
    pub listen: String,
    pub port: u16,
    pub unix_path: Option<PathBuf>,
    pub unix_perm: Option<u32>,
    pub chunk_size: usize,
    pub max_size: usize,
    pub tag_prefix: String,
    /// `Tag`, when set: replaces the sender's tag.
    pub tag: Option<String>,
    /// The handshake's key, when it is on (empty with `Empty_Shared_Key`).
    pub shared_key: Option<String>,
    pub self_hostname: String,
    /// (user, password) pairs.
    pub users: Vec<(String, String)>,
    pub tls: Option<Tls>,
}

impl ForwardSettings {
    /// Checks the options; an error names the Fluent Bit key at fault.
    pub fn from_options(
        o: &ForwardOptions,
        tag: Option<&str>,
        base: &std::path::Path,
    ) -> Result<Self, (&'static str, String)> {
        let size = |b: ByteSize| usize::try_from(b.0).unwrap_or(usize::MAX);
        let (chunk_size, max_size) = (size(o.buffer_chunk_size), size(o.buffer_max_size));
        if chunk_size == 0 {
            return Err(("Buffer_Chunk_Size", "must be greater than 0".into()));
        }
        if max_size < chunk_size {
            return Err((
                "Buffer_Max_Size",
                "must be at least Buffer_Chunk_Size".into(),
            ));
        }
        let unix_perm = match o.unix_perm.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(p) => Some(
                u32::from_str_radix(p, 8)
                    .ok()
                    .filter(|m| *m <= 0o7777)
                    .ok_or(("Unix_Perm", format!("expected an octal mode, got '{p}'")))?,
            ),
        };
        let mut users = Vec::new();
        for u in &o.users {
            let mut parts = u.split_whitespace();
            match (parts.next(), parts.next(), parts.next()) {
                (Some(user), Some(pass), None) => users.push((user.to_string(), pass.to_string())),
                _ => {
                    return Err((
                        "security.users",
                        format!("expected 'USER PASSWORD', got '{u}'"),
                    ))
                }
            }
        }
        let shared_key = match (&o.shared_key, o.empty_shared_key) {
            (Some(k), _) => Some(k.clone()),
            (None, true) => Some(String::new()),
            (None, false) => None,
        };
        if !users.is_empty() && shared_key.is_none() {
            return Err((
                "security.users",
                "security.users is set but no Shared_Key or Empty_Shared_Key".into(),
            ));
        }
        let tls = net::tls_of(
            o.tls,
            o.tls_crt_file.as_deref(),
            o.tls_key_file.as_deref(),
            base,
        )?;
        let unix_path = o.unix_path.as_deref().filter(|p| !p.is_empty()).map(|p| {
            let p = std::path::Path::new(p);
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        });
        Ok(ForwardSettings {
            listen: o.listen.clone(),
            port: o.port,
            unix_path,
            unix_perm,
            chunk_size,
            max_size,
            tag_prefix: o.tag_prefix.clone().unwrap_or_default(),
            tag: tag.map(str::to_string),
            shared_key,
            self_hostname: o.self_hostname.clone(),
            users,
            tls,
        })
    }
}

fn build(
    ctx: &BuildContext,
    section: &Section,
    entries: &[&Entry],
) -> Result<Box<dyn Input>, ConfigError> {
    let opts = ForwardOptions::from_entries(&section.span, entries, &[])?;
    let tag = section
        .get("tag")
        .map(|e| e.value.trim())
        .filter(|t| !t.is_empty());
    let settings = ForwardSettings::from_options(&opts, tag, &ctx.base_dir)
        .map_err(|(key, reason)| key_error(section, entries, key, reason))?;
    ctx.not_applied(net::TLS_NOT_APPLIED, entries);
    let rejected = ctx.metrics.register(
        "forward_rejected_messages",
        "forward messages skipped: not in a shape the protocol allows, or metrics and traces",
    );
    Ok(Box::new(ForwardInput { settings, rejected }))
}

/// The `forward` input.
pub struct ForwardInput {
    settings: ForwardSettings,
    rejected: Arc<AtomicU64>,
}

impl ForwardInput {
    /// An input with these settings (tests and tools).
    pub fn new(settings: ForwardSettings) -> Self {
        ForwardInput {
            settings,
            rejected: Arc::default(),
        }
    }
}

#[async_trait]
impl Input for ForwardInput {
    async fn run(self: Box<Self>, ctx: InputContext) -> Result<InputExit, PluginError> {
        let s = Arc::new(self.settings);
        let listener = Listener::bind(&s.listen, s.port, s.unix_path.as_deref(), s.unix_perm)
            .await
            .map_err(|e| PluginError::Io {
                context: format!(
                    "could not bind {}",
                    s.unix_path.as_ref().map_or_else(
                        || format!("{}:{}", s.listen, s.port),
                        |p| format!("unix://{}", p.display())
                    )
                ),
                source: e,
            })?;
        tracing::info!(input = %ctx.name, "listening on {}", listener.describe());
        serve(listener, s, self.rejected, ctx).await
    }
}

/// Accepts connections until shutdown, each served by its own task.
async fn serve(
    listener: Listener,
    s: Arc<ForwardSettings>,
    rejected: Arc<AtomicU64>,
    ctx: InputContext,
) -> Result<InputExit, PluginError> {
    let mut tasks = tokio::task::JoinSet::new();
    let name: Arc<str> = Arc::from(ctx.name.as_str());
    loop {
        while tasks.try_join_next().is_some() {}
        // Paused at Mem_Buf_Limit: accept nothing new until there is room.
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
        match accepted {
            Ok((a, peer)) => {
                let conn = Connection {
                    s: Arc::clone(&s),
                    emitter: ctx.emitter.clone(),
                    shutdown: ctx.shutdown.clone(),
                    rejected: Arc::clone(&rejected),
                    name: Arc::clone(&name),
                    peer,
                };
                tasks.spawn(async move {
                    let stream =
                        match net::finish(a, conn.s.tls.as_ref(), HANDSHAKE_TIMEOUT).await {
                            Ok(c) => c,
                            Err(e) => {
                                tracing::warn!(input = %conn.name, peer = %conn.peer, "TLS handshake failed: {e}");
                                return;
                            }
                        };
                    conn.run(stream).await;
                });
            }
            Err(e) => {
                // Out of descriptors and the like: wait a moment rather than spin.
                tracing::warn!(input = %ctx.name, "accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    drop(listener);
    while tasks.join_next().await.is_some() {}
    Ok(InputExit::Finished)
}

/// One client connection.
struct Connection {
    s: Arc<ForwardSettings>,
    emitter: Emitter,
    shutdown: CancellationToken,
    rejected: Arc<AtomicU64>,
    name: Arc<str>,
    peer: String,
}

fn sha512_hex(parts: &[&[u8]]) -> Vec<u8> {
    let mut h = sha2::Sha512::new();
    for p in parts {
        h.update(p);
    }
    let d = h.finalize();
    let mut out = Vec::with_capacity(d.len() * 2);
    for b in d.iter() {
        out.extend_from_slice(format!("{b:02x}").as_bytes());
    }
    out
}

/// Gzip members, one after another (CompressedPackedForward may send several), at most `max`
/// bytes once inflated.
fn inflate(data: &[u8], max: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut d = flate2::read::MultiGzDecoder::new(data).take(max as u64 + 1);
    d.read_to_end(&mut out).map_err(|e| e.to_string())?;
    if out.len() > max {
        return Err(format!("more than {max} bytes once decompressed"));
    }
    Ok(out)
}

/// Reads one whole msgpack value into `buf` (from `start`), at most `max` bytes.
async fn read_frame(
    conn: &mut Conn,
    buf: &mut Vec<u8>,
    max: usize,
    timeout: Duration,
) -> Result<usize, String> {
    loop {
        match forward::scan(buf, 0).map_err(|e| e.to_string())? {
            Scan::Done(end) => return Ok(end),
            Scan::Need(n) if n > max => return Err(format!("message over {max} bytes")),
            Scan::Need(_) => {}
        }
        let n = tokio::time::timeout(timeout, conn.read_buf(buf))
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed".into());
        }
    }
}

impl Connection {
    async fn run(self, mut conn: Conn) {
        if self.s.shared_key.is_some() {
            let ok = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                ok = self.handshake(&mut conn) => ok,
            };
            if let Err(e) = ok {
                tracing::warn!(input = %self.name, peer = %self.peer, "secure forward handshake failed: {e}");
                return;
            }
        }
        if let Err(e) = self.read_loop(&mut conn).await {
            tracing::warn!(input = %self.name, peer = %self.peer, "{e}; connection closed");
        }
        let _ = conn.shutdown().await;
    }

    /// HELO, PING, PONG.
    async fn handshake(&self, conn: &mut Conn) -> Result<(), String> {
        let key = self.s.shared_key.as_deref().unwrap_or_default();
        let nonce: [u8; 16] = rand::random();
        let auth: Vec<u8> = if self.s.users.is_empty() {
            Vec::new()
        } else {
            rand::random::<[u8; 16]>().to_vec()
        };
        let helo = Helo {
            nonce: nonce.to_vec(),
            auth: auth.clone(),
            keepalive: true,
        };
        conn.write_all(&helo.encode())
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = Vec::with_capacity(1024);
        let end = read_frame(conn, &mut buf, 64 * 1024, HANDSHAKE_TIMEOUT).await?;
        let no_inflate = |_: &[u8]| Err("no".to_string());
        let ping: Ping = match forward::decode_client(&buf[..end], &no_inflate) {
            Ok(ClientMessage::Ping(p)) => p,
            Ok(ClientMessage::Events(_)) => return Err("expected PING, got events".into()),
            Err(e) => return Err(format!("expected PING: {e}")),
        };
        let mut reason = None;
        let want = sha512_hex(&[
            &ping.shared_key_salt,
            &ping.hostname,
            &nonce,
            key.as_bytes(),
        ]);
        if want != ping.shared_key_digest {
            reason = Some("shared_key mismatch");
        } else if !auth.is_empty() {
            let user_ok = self.s.users.iter().any(|(u, p)| {
                u.as_bytes() == ping.username.as_slice()
                    && sha512_hex(&[&auth, u.as_bytes(), p.as_bytes()]) == ping.password_digest
            });
            if !user_ok {
                reason = Some("username/password mismatch");
            }
        }
        let pong = match reason {
            None => Pong {
                ok: true,
                reason: String::new(),
                hostname: self.s.self_hostname.as_bytes().to_vec(),
                shared_key_digest: sha512_hex(&[
                    &ping.shared_key_salt,
                    self.s.self_hostname.as_bytes(),
                    &nonce,
                    key.as_bytes(),
                ]),
            },
            Some(r) => Pong {
                ok: false,
                reason: r.to_string(),
                ..Default::default()
            },
        };
        conn.write_all(&pong.encode())
            .await
            .map_err(|e| e.to_string())?;
        match reason {
            None => Ok(()),
            Some(r) => Err(format!(
                "{r} (client '{}')",
                String::from_utf8_lossy(&ping.hostname)
            )),
        }
    }

    async fn read_loop(&self, conn: &mut Conn) -> Result<(), String> {
        let max = self.s.max_size;
        let mut buf: Vec<u8> = Vec::with_capacity(self.s.chunk_size.min(64 * 1024));
        loop {
            let mut start = 0;
            let need;
            loop {
                match forward::scan(&buf, start) {
                    Err(e) => return Err(format!("invalid msgpack: {e}")),
                    Ok(Scan::Need(n)) => {
                        need = n - start;
                        break;
                    }
                    Ok(Scan::Done(end)) => {
                        self.message(conn, &buf[start..end]).await?;
                        start = end;
                    }
                }
            }
            buf.drain(..start);
            if need > max {
                return Err(format!(
                    "a message of at least {need} bytes is over Buffer_Max_Size ({max})"
                ));
            }
            // Paused at Mem_Buf_Limit: read nothing until there is room.
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return Ok(()),
                _ = self.emitter.ready() => {}
            }
            if buf.capacity() - buf.len() < 4096 {
                let grow = self
                    .s
                    .chunk_size
                    .min(max.saturating_sub(buf.len()))
                    .max(4096);
                buf.reserve(grow);
            }
            let n = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return Ok(()),
                n = conn.read_buf(&mut buf) => n.map_err(|e| format!("read failed: {e}"))?,
            };
            if n == 0 {
                if !buf.is_empty() {
                    return Err(format!(
                        "closed by the client in the middle of a message ({} bytes dropped)",
                        buf.len()
                    ));
                }
                return Ok(());
            }
        }
    }

    /// One complete message.
    async fn message(&self, conn: &mut Conn, frame: &[u8]) -> Result<(), String> {
        let max = self.s.max_size.saturating_mul(8);
        let inflate = |b: &[u8]| inflate(b, max);
        let msg = match forward::decode_client(frame, &inflate) {
            Ok(ClientMessage::Events(m)) => m,
            Ok(ClientMessage::Ping(_)) => {
                return Err("unexpected PING outside the handshake".into());
            }
            Err(e) => {
                logferry_engine::metrics::PluginMetrics::add(&self.rejected, 1);
                tracing::warn!(input = %self.name, peer = %self.peer, bytes = frame.len(), "message skipped: {e}");
                return Ok(());
            }
        };
        let tag: Tag = match &self.s.tag {
            Some(t) => Tag::from(t.as_str()),
            None if self.s.tag_prefix.is_empty() => Tag::from(msg.tag.as_str()),
            None => Tag::from(format!("{}{}", self.s.tag_prefix, msg.tag).as_str()),
        };
        match self.emitter.emit(tag, msg.records, frame.len(), None).await {
            Ok(()) => {}
            Err(PluginError::Closed) => return Err("the agent is stopping".into()),
            Err(e) => return Err(e.to_string()),
        }
        if let Some(chunk) = msg.chunk {
            conn.write_all(&forward::ack(&chunk))
                .await
                .map_err(|e| format!("writing the ack failed: {e}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_need_a_key_and_sizes_are_checked() {
        let span = logferry_core::config::Span::command_line();
        let entry = |k: &str, v: &str| Entry {
            key: k.into(),
            value: v.into(),
            span: span.clone(),
        };
        let base = std::path::Path::new("/");
        let opts = |es: &[Entry]| {
            let refs: Vec<&Entry> = es.iter().collect();
            ForwardOptions::from_entries(&span, &refs, &[]).unwrap()
        };
        let o = opts(&[entry("security.users", "alice secret")]);
        assert_eq!(
            ForwardSettings::from_options(&o, None, base)
                .err()
                .map(|e| e.0),
            Some("security.users")
        );
        let o = opts(&[
            entry("security.users", "alice secret"),
            entry("Empty_Shared_Key", "on"),
        ]);
        let s = ForwardSettings::from_options(&o, None, base).unwrap();
        assert_eq!(s.shared_key.as_deref(), Some(""));
        assert_eq!(s.users, vec![("alice".into(), "secret".into())]);
        let o = opts(&[entry("Buffer_Max_Size", "1k")]);
        assert_eq!(
            ForwardSettings::from_options(&o, None, base)
                .err()
                .map(|e| e.0),
            Some("Buffer_Max_Size")
        );
        let o = opts(&[]);
        let s = ForwardSettings::from_options(&o, None, base).unwrap();
        assert_eq!(
            (s.port, s.chunk_size, s.max_size),
            (24224, 1_024_000, 6_144_000)
        );
        assert!(s.shared_key.is_none());
    }

    #[test]
    fn inflate_is_bounded() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&[b'a'; 10_000]).unwrap();
        let z = gz.finish().unwrap();
        assert_eq!(inflate(&z, 10_000).unwrap().len(), 10_000);
        assert!(inflate(&z, 9_999).is_err());
        assert!(inflate(b"not gzip", 100).is_err());
    }
}
