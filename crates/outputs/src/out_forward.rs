//! `forward` output: sends records over the Fluent forward protocol (Fluent Bit's
//! `out_forward`) to Fluentd, Fluent Bit or logferry's `forward` input.
//!
//! - Connects to `Host:Port` (default `127.0.0.1:24224`) or the Unix socket `Unix_Path`, over
//!   TLS with `tls On` (`tls.verify`, `tls.ca_file`, `tls.vhost`, a client certificate with
//!   `tls.crt_file`/`tls.key_file`). Connections are kept and reused; one closed while idle is
//!   dropped before use.
//! - Each flush is one PackedForward message, `[tag, bin(entries), options]`: entries are
//!   `[EventTime, record]` (`[seconds, record]` with `Time_as_Integer On`, Fluentd v0.12's form;
//!   `[[time, {}], record]` with `Retain_Metadata_In_Forward_Mode On`), gzip-compressed with
//!   `Compress gzip` (CompressedPackedForward). The tag is `Tag` when set, else the records'.
//! - Options are sent with `Send_options On` (`size`), with `Require_ack_response On` (`size`
//!   and a unique `chunk`), with `Compress gzip` (`compressed`), and with every `add_option`.
//! - With `Require_ack_response On` a flush succeeds only when the server answers
//!   `{"ack": chunk}` with the same chunk; no answer within `net.io_timeout` (default 60 s), a
//!   wrong one or a closed connection is a retry, so records are retried until acknowledged
//!   (the engine's retries, `Retry_Limit`). Without it a flush succeeds once written, as in
//!   Fluent Bit.
//! - `Shared_Key` (or `Empty_Shared_Key On`) runs the secure forward handshake on each new
//!   connection: the server's `HELO`, this side's `PING` under `Self_Hostname` with
//!   `Username`/`Password` when the server asks for user authentication, and the server's
//!   `PONG`, whose digest is checked too. A refused handshake is a retry with the server's
//!   reason in the log.
//!
//! Not applied (build notes): `Upstream` (one destination), `fluentd_compat` (logs only).

use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use logferry_core::config::{ConfigError, Entry, Section};
use logferry_core::forward::{self, Helo, Ping, Pong, Scan};
use logferry_core::{msgpack, options};
use logferry_engine::common::NotApplied;
use logferry_engine::{Batch, BuildContext, FlushResult, Output, OutputPlugin};
use sha2::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::net::{self, ClientTls, Conn, Endpoint, TlsKeys};
use crate::out_stdout::key_error;

options! {
    /// Options of the `forward` output.
    pub struct ForwardOptions for "forward output" {
        /// Host of the forward server.
        pub host: String = ["Host"] Some("127.0.0.1"),
        /// Port of the forward server.
        pub port: u16 = ["Port"] Some("24224"),
        /// Connect to this Unix socket instead of Host and Port.
        pub unix_path: Option<String> = ["Unix_Path"] None,
        /// Upstream servers file (accepted; not applied: logferry sends to Host and Port).
        pub upstream: Option<String> = ["Upstream"] None,
        /// Tag sent instead of the records' own.
        pub tag: Option<String> = ["Tag"] None,
        /// Send times as integer seconds (Fluentd v0.12).
        pub time_as_integer: bool = ["Time_as_Integer"] Some("false"),
        /// Send entries as [[time, metadata], record].
        pub retain_metadata: bool = ["Retain_Metadata_In_Forward_Mode"] Some("false"),
        /// Always send the options map (with size).
        pub send_options: bool = ["Send_options"] Some("false"),
        /// Send a chunk id and wait for the server's ack before a flush counts as delivered.
        pub require_ack_response: bool = ["Require_ack_response"] Some("false"),
        /// Compression of the entries: gzip (CompressedPackedForward).
        pub compress: Option<String> = ["Compress"] None,
        /// Shared key of the secure forward handshake.
        pub shared_key: Option<String> = ["Shared_Key"] None,
        /// Hostname given in the handshake.
        pub self_hostname: String = ["Self_Hostname"] Some("localhost"),
        /// Run the handshake with an empty shared key.
        pub empty_shared_key: bool = ["Empty_Shared_Key"] Some("false"),
        /// User of the handshake's user authentication.
        pub username: String = ["Username"] Some(""),
        /// Password of the handshake's user authentication.
        pub password: String = ["Password"] Some(""),
        /// Metrics and traces in Fluentd's format (accepted; logferry sends logs only).
        pub fluentd_compat: bool = ["fluentd_compat"] Some("false"),
        /// `KEY VALUE` added to the options map of every message (repeatable).
        pub add_option: Vec<String> = ["add_option"] None,
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
        /// Name checked against the server's certificate (default: Host).
        pub tls_vhost: Option<String> = ["tls.vhost"] None,
        /// Seconds to wait for a connection.
        pub connect_timeout: Duration = ["net.connect_timeout"] Some("10"),
        /// Seconds to wait for an ack.
        pub io_timeout: Option<Duration> = ["net.io_timeout"] None,
    }
}

/// The registry entry.
pub static PLUGIN: OutputPlugin = OutputPlugin {
    name: "forward",
    aliases: &[],
    description: "Forward (Fluentd protocol)",
    options: ForwardOptions::OPTIONS,
    default_workers: 2,
    build,
};

/// Keys accepted and not applied.
pub const NOT_APPLIED: &[NotApplied] = &[
    NotApplied::new(
        "Upstream",
        None,
        "logferry sends to Host and Port (no upstream balancing)",
    ),
    NotApplied::new(
        "fluentd_compat",
        Some("false"),
        "logferry carries logs only",
    ),
];

/// How long an ack may take when `net.io_timeout` is unset.
const ACK_TIMEOUT: Duration = Duration::from_secs(60);

/// The options, checked.
#[derive(Clone)]
pub struct ForwardSettings {
    pub endpoint: Endpoint,
    pub tag: Option<String>,
    pub time_as_integer: bool,
    pub retain_metadata: bool,
    pub send_options: bool,
    pub require_ack: bool,
    pub gzip: bool,
    pub shared_key: Option<String>,
    pub self_hostname: String,
    pub username: String,
    pub password: String,
    pub extra_options: Vec<(String, String)>,
    pub io_timeout: Duration,
}

impl ForwardSettings {
    /// Checks the options; an error names the Fluent Bit key at fault.
    pub fn from_options(
        o: &ForwardOptions,
        base: &std::path::Path,
    ) -> Result<Self, (&'static str, String)> {
        let gzip = match o.compress.as_deref().map(str::trim) {
            None | Some("") => false,
            Some(c) if c.eq_ignore_ascii_case("gzip") => true,
            Some(c) => {
                return Err((
                    "Compress",
                    format!("unknown compression '{c}': expected gzip"),
                ))
            }
        };
        let mut extra_options = Vec::new();
        for a in &o.add_option {
            match a.trim().split_once(char::is_whitespace) {
                Some((k, v)) => extra_options.push((k.to_string(), v.trim().to_string())),
                None => return Err(("add_option", format!("expected 'KEY VALUE', got '{a}'"))),
            }
        }
        let tls = if o.tls {
            let keys = TlsKeys {
                verify: o.tls_verify,
                ca_file: o.tls_ca_file.clone(),
                crt_file: o.tls_crt_file.clone(),
                key_file: o.tls_key_file.clone(),
                vhost: o.tls_vhost.clone(),
            };
            Some(ClientTls::new(&o.host, &keys, base)?)
        } else {
            None
        };
        let unix_path = o.unix_path.as_deref().filter(|p| !p.is_empty()).map(|p| {
            let p = std::path::Path::new(p);
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        });
        Ok(ForwardSettings {
            endpoint: Endpoint {
                host: o.host.clone(),
                port: o.port,
                unix_path,
                tls,
                connect_timeout: o.connect_timeout.max(Duration::from_millis(1)),
            },
            tag: o.tag.clone().filter(|t| !t.is_empty()),
            time_as_integer: o.time_as_integer,
            retain_metadata: o.retain_metadata,
            send_options: o.send_options,
            require_ack: o.require_ack_response,
            gzip,
            shared_key: match (&o.shared_key, o.empty_shared_key) {
                (Some(k), _) => Some(k.clone()),
                (None, true) => Some(String::new()),
                (None, false) => None,
            },
            self_hostname: o.self_hostname.clone(),
            username: o.username.clone(),
            password: o.password.clone(),
            extra_options,
            io_timeout: o.io_timeout.filter(|d| !d.is_zero()).unwrap_or(ACK_TIMEOUT),
        })
    }
}

fn build(
    ctx: &BuildContext,
    section: &Section,
    entries: &[&Entry],
) -> Result<std::sync::Arc<dyn Output>, ConfigError> {
    let opts = ForwardOptions::from_entries(&section.span, entries, &[])?;
    let settings = ForwardSettings::from_options(&opts, &ctx.base_dir)
        .map_err(|(key, reason)| key_error(section, entries, key, reason))?;
    ctx.not_applied(NOT_APPLIED, entries);
    ctx.note_tls_verify_off(entries, opts.tls, opts.tls_verify);
    Ok(std::sync::Arc::new(ForwardOutput::new(settings)))
}

/// The `forward` output.
pub struct ForwardOutput {
    s: ForwardSettings,
    /// Idle connections, handshake done.
    pool: Mutex<Vec<Conn>>,
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

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads one whole msgpack value from `conn` into `buf`; returns its length.
async fn read_frame(
    conn: &mut Conn,
    buf: &mut Vec<u8>,
    timeout: Duration,
) -> Result<usize, String> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match forward::scan(buf, 0).map_err(|e| format!("invalid msgpack from the server: {e}"))? {
            Scan::Done(end) => return Ok(end),
            Scan::Need(n) if n > 1 << 20 => return Err("oversized answer from the server".into()),
            Scan::Need(_) => {}
        }
        let n = tokio::time::timeout_at(deadline, conn.read_buf(buf))
            .await
            .map_err(|_| format!("no answer from the server within {timeout:?}"))?
            .map_err(|e| format!("read failed: {e}"))?;
        if n == 0 {
            return Err("connection closed by the server".into());
        }
    }
}

impl ForwardOutput {
    /// An output with these settings.
    pub fn new(s: ForwardSettings) -> Self {
        ForwardOutput {
            s,
            pool: Mutex::new(Vec::new()),
        }
    }

    /// The message for one batch, and its chunk id when an ack is required.
    pub fn encode(&self, batch: &Batch) -> Result<(Vec<u8>, Option<String>), String> {
        let mut entries = Vec::with_capacity(batch.wire_size() + 64);
        let mut n = 0usize;
        for r in batch.records() {
            if self.s.retain_metadata && !self.s.time_as_integer {
                msgpack::write_record(&mut entries, r);
            } else {
                msgpack::write_entry(&mut entries, r, self.s.time_as_integer);
            }
            n += 1;
        }
        if self.s.gzip {
            let mut gz = flate2::write::GzEncoder::new(
                Vec::with_capacity(entries.len() / 4),
                flate2::Compression::default(),
            );
            gz.write_all(&entries).map_err(|e| e.to_string())?;
            entries = gz.finish().map_err(|e| e.to_string())?;
        }
        let chunk = self.s.require_ack.then(|| hex(&rand::random::<[u8; 16]>()));
        let size = (self.s.send_options || self.s.require_ack).then_some(n);
        let tag = self.s.tag.as_deref().unwrap_or(&batch.tag);
        let mut msg = forward::packed_forward(tag, &entries, size, chunk.as_deref(), self.s.gzip);
        if !self.s.extra_options.is_empty() {
            msg = with_extra_options(msg, &self.s.extra_options);
        }
        Ok((msg, chunk))
    }

    /// A connection ready to send: an idle one still open, or a new one past the handshake.
    async fn connection(&self) -> Result<Conn, String> {
        loop {
            let idle = self.pool.lock().ok().and_then(|mut p| p.pop());
            match idle {
                Some(mut c) => {
                    if !net::is_stale(&mut c).await {
                        return Ok(c);
                    }
                }
                None => break,
            }
        }
        let mut c = self
            .s
            .endpoint
            .connect()
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", self.s.endpoint.describe()))?;
        if let Some(key) = &self.s.shared_key {
            self.handshake(&mut c, key).await?;
        }
        Ok(c)
    }

    async fn handshake(&self, c: &mut Conn, key: &str) -> Result<(), String> {
        let mut buf = Vec::with_capacity(512);
        let end = read_frame(
            c,
            &mut buf,
            self.s.endpoint.connect_timeout.max(Duration::from_secs(10)),
        )
        .await?;
        let helo = Helo::decode(&buf[..end]).map_err(|e| format!("handshake: {e}"))?;
        buf.drain(..end);
        let salt = hex(&rand::random::<[u8; 16]>()).into_bytes();
        let host = self.s.self_hostname.as_bytes();
        let ping = Ping {
            hostname: host.to_vec(),
            shared_key_salt: salt.clone(),
            shared_key_digest: sha512_hex(&[&salt, host, &helo.nonce, key.as_bytes()]),
            username: if helo.auth.is_empty() {
                Vec::new()
            } else {
                self.s.username.as_bytes().to_vec()
            },
            password_digest: if helo.auth.is_empty() {
                Vec::new()
            } else {
                sha512_hex(&[
                    &helo.auth,
                    self.s.username.as_bytes(),
                    self.s.password.as_bytes(),
                ])
            },
        };
        c.write_all(&ping.encode())
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let end = read_frame(c, &mut buf, self.s.io_timeout).await?;
        let pong = Pong::decode(&buf[..end]).map_err(|e| format!("handshake: {e}"))?;
        if !pong.ok {
            return Err(format!("handshake refused by the server: {}", pong.reason));
        }
        let want = sha512_hex(&[&salt, &pong.hostname, &helo.nonce, key.as_bytes()]);
        if want != pong.shared_key_digest {
            return Err("handshake: the server's shared key digest does not match".into());
        }
        Ok(())
    }

    async fn send(&self, msg: &[u8], chunk: Option<&str>) -> Result<(), String> {
        let mut c = self.connection().await?;
        c.write_all(msg)
            .await
            .map_err(|e| format!("write to {} failed: {e}", self.s.endpoint.describe()))?;
        c.flush().await.map_err(|e| format!("write failed: {e}"))?;
        if let Some(chunk) = chunk {
            let mut buf = Vec::with_capacity(64);
            let end = read_frame(&mut c, &mut buf, self.s.io_timeout).await?;
            match forward::read_ack(&buf[..end]) {
                Some(a) if a == chunk => {}
                Some(a) => return Err(format!("ack for chunk '{a}', expected '{chunk}'")),
                None => return Err("the server's answer is not an ack".into()),
            }
        }
        if let Ok(mut p) = self.pool.lock() {
            p.push(c);
        }
        Ok(())
    }
}

/// Adds `add_option` pairs to a message's option map (the map is rewritten with them last).
fn with_extra_options(msg: Vec<u8>, extra: &[(String, String)]) -> Vec<u8> {
    // The message is [tag, entries] or [tag, entries, {options}]: decode the options, add, and
    // re-encode only that part.
    let Some((tag_end, entries_end)) = (|| {
        let Scan::Done(t) = forward::scan(&msg, 1).ok()? else {
            return None;
        };
        let Scan::Done(e) = forward::scan(&msg, t).ok()? else {
            return None;
        };
        Some((t, e))
    })() else {
        return msg;
    };
    let mut map = match msgpack::read_value(&msg[entries_end..]) {
        Ok((logferry_core::Value::Map(m), _)) => m,
        _ => logferry_core::Map::new(),
    };
    for (k, v) in extra {
        map.insert(k.as_str(), v.as_str());
    }
    let mut out = Vec::with_capacity(msg.len() + 64);
    msgpack::write_array_header(&mut out, 3);
    out.extend_from_slice(&msg[1..tag_end]);
    out.extend_from_slice(&msg[tag_end..entries_end]);
    msgpack::write_value(&mut out, &logferry_core::Value::Map(map));
    out
}

#[async_trait]
impl Output for ForwardOutput {
    async fn flush(&self, batch: &Batch) -> FlushResult {
        let (msg, chunk) = match self.encode(batch) {
            Ok(m) => m,
            Err(e) => return FlushResult::Error(format!("cannot encode the batch: {e}")),
        };
        match self.send(&msg, chunk.as_deref()).await {
            Ok(()) => FlushResult::Ok,
            Err(e) => FlushResult::Retry(e),
        }
    }

    async fn shutdown(&self) -> Result<(), logferry_engine::PluginError> {
        let conns: Vec<Conn> = self
            .pool
            .lock()
            .map(|mut p| std::mem::take(&mut *p))
            .unwrap_or_default();
        for mut c in conns {
            let _ = c.shutdown().await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use logferry_core::{Chunk, EventTime, Map, Record};

    fn settings(extra: &[(&str, &str)]) -> ForwardSettings {
        let span = logferry_core::config::Span::command_line();
        let es: Vec<Entry> = extra
            .iter()
            .map(|(k, v)| Entry {
                key: (*k).into(),
                value: (*v).into(),
                span: span.clone(),
            })
            .collect();
        let refs: Vec<&Entry> = es.iter().collect();
        let o = ForwardOptions::from_entries(&span, &refs, &[]).unwrap();
        ForwardSettings::from_options(&o, std::path::Path::new("/")).unwrap()
    }

    fn batch() -> Batch {
        let mut m = Map::new();
        m.insert("log", "hello");
        let r = Record::new(EventTime::from_parts(1_700_000_000, 123), m);
        Batch::new(
            "app.log".into(),
            vec![std::sync::Arc::new(Chunk::new("app.log".into(), vec![r]))],
        )
    }

    fn decode(msg: &[u8]) -> forward::EventMessage {
        let inflate = |b: &[u8]| {
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(b), &mut out)
                .map_err(|e| e.to_string())?;
            Ok(out)
        };
        match forward::decode_client(msg, &inflate).unwrap() {
            forward::ClientMessage::Events(e) => e,
            forward::ClientMessage::Ping(_) => panic!(),
        }
    }

    #[test]
    fn messages_decode_as_the_input_reads_them() {
        let out = ForwardOutput::new(settings(&[]));
        let (msg, chunk) = out.encode(&batch()).unwrap();
        assert!(chunk.is_none());
        let m = decode(&msg);
        assert_eq!(m.tag, "app.log");
        assert_eq!(m.records[0].time, EventTime::from_parts(1_700_000_000, 123));
        let out = ForwardOutput::new(settings(&[
            ("Require_ack_response", "on"),
            ("Compress", "gzip"),
            ("Time_as_Integer", "on"),
            ("Tag", "new.tag"),
            ("add_option", "source ecs"),
        ]));
        let (msg, chunk) = out.encode(&batch()).unwrap();
        let m = decode(&msg);
        assert_eq!(m.tag, "new.tag");
        assert_eq!(m.chunk, chunk);
        assert!(chunk.is_some_and(|c| c.len() == 32));
        assert_eq!(m.records[0].time, EventTime::from_parts(1_700_000_000, 0));
        let opts = options_of(&msg);
        assert_eq!(opts.get("source").and_then(|v| v.as_str()), Some("ecs"));
        assert_eq!(
            opts.get("compressed").and_then(|v| v.as_str()),
            Some("gzip")
        );
        assert_eq!(opts.get("size"), Some(&logferry_core::Value::Int(1)));
    }

    fn options_of(msg: &[u8]) -> Map {
        let Ok(Scan::Done(t)) = forward::scan(msg, 1) else {
            panic!("no tag")
        };
        let Ok(Scan::Done(e)) = forward::scan(msg, t) else {
            panic!("no entries")
        };
        msgpack::read_value(&msg[e..])
            .unwrap()
            .0
            .into_map()
            .unwrap()
    }

    #[test]
    fn bad_values_name_their_key() {
        let span = logferry_core::config::Span::command_line();
        let e = Entry {
            key: "Compress".into(),
            value: "zstd".into(),
            span: span.clone(),
        };
        let o = ForwardOptions::from_entries(&span, &[&e], &[]).unwrap();
        assert_eq!(
            ForwardSettings::from_options(&o, std::path::Path::new("/"))
                .err()
                .map(|e| e.0),
            Some("Compress")
        );
    }
}
