//! What the network inputs (`forward`, `http`, `tcp`, `syslog`) share: listening on TCP or a
//! Unix socket, TLS with `tls.crt_file`/`tls.key_file`, and pausing at `Mem_Buf_Limit`.
//!
//! Backpressure: a paused input stops accepting and stops reading its sockets until its
//! buffer has room again ([`Emitter::ready`] before every accept and read), so senders block in
//! TCP flow control instead of losing data. (Fluent Bit's `forward` input closes its
//! connections when paused; a sender then reconnects and resends what was not acknowledged.)

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use logferry_engine::common::NotApplied;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};

/// A byte stream a connection task owns: TCP, Unix or TLS over TCP.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// A boxed [`Stream`].
pub type Conn = Box<dyn Stream>;

/// A listening socket.
pub enum Listener {
    Tcp(TcpListener),
    /// The socket and its path (removed when the input stops).
    Unix(UnixListener, PathBuf),
}

impl Listener {
    /// Binds `listen:port`, or the Unix socket `path` (an existing socket file is replaced, as
    /// Fluent Bit does; `perm` is its mode, e.g. `0644`).
    pub async fn bind(
        listen: &str,
        port: u16,
        unix: Option<&Path>,
        perm: Option<u32>,
    ) -> io::Result<Listener> {
        if let Some(path) = unix {
            if std::fs::symlink_metadata(path).is_ok() {
                std::fs::remove_file(path)?;
            }
            let l = UnixListener::bind(path)?;
            if let Some(mode) = perm {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
            }
            return Ok(Listener::Unix(l, path.to_path_buf()));
        }
        let host = if listen.contains(':') && !listen.starts_with('[') {
            format!("[{listen}]:{port}")
        } else {
            format!("{listen}:{port}")
        };
        Ok(Listener::Tcp(TcpListener::bind(host).await?))
    }

    /// Where it listens, for the log.
    pub fn describe(&self) -> String {
        match self {
            Listener::Tcp(l) => l
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|_| "?".into()),
            Listener::Unix(_, p) => format!("unix://{}", p.display()),
        }
    }

    /// The next connection, with TLS to be done by the caller's task ([`Tls::accept`]).
    pub async fn accept(&self) -> io::Result<(Accepted, String)> {
        match self {
            Listener::Tcp(l) => {
                let (s, peer) = l.accept().await?;
                let _ = s.set_nodelay(true);
                Ok((Accepted::Tcp(s), peer.to_string()))
            }
            Listener::Unix(l, p) => {
                let (s, _) = l.accept().await?;
                Ok((Accepted::Unix(s), format!("unix://{}", p.display())))
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, p) = self {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// A connection just accepted.
pub enum Accepted {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

/// The server side of TLS, when `tls On`.
#[derive(Clone)]
pub struct Tls(tokio_rustls::TlsAcceptor);

impl Tls {
    /// From `tls.crt_file` (PEM chain) and `tls.key_file` (PEM key, not encrypted).
    pub fn from_files(crt: &Path, key: &Path) -> Result<Tls, String> {
        use rustls::pki_types::pem::PemObject;
        let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_file_iter(crt)
            .map_err(|e| format!("{}: {e}", crt.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{}: {e}", crt.display()))?;
        if certs.is_empty() {
            return Err(format!("{}: no PEM certificate", crt.display()));
        }
        let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key)
            .map_err(|e| format!("{}: {e}", key.display()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| e.to_string())?;
        Ok(Tls(tokio_rustls::TlsAcceptor::from(Arc::new(cfg))))
    }
}

/// Finishes an accepted connection: the TLS handshake when `tls` is set (bounded by
/// `timeout`).
pub async fn finish(
    a: Accepted,
    tls: Option<&Tls>,
    timeout: std::time::Duration,
) -> io::Result<Conn> {
    match (a, tls) {
        (Accepted::Tcp(s), Some(t)) => match tokio::time::timeout(timeout, t.0.accept(s)).await {
            Ok(r) => Ok(Box::new(r?)),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "TLS handshake timed out",
            )),
        },
        (Accepted::Tcp(s), None) => Ok(Box::new(s)),
        (Accepted::Unix(s), _) => Ok(Box::new(s)),
    }
}

/// The TLS keys a network input takes but does not apply (each set one is a build note).
pub const TLS_NOT_APPLIED: &[NotApplied] = &[
    NotApplied::new(
        "tls.verify",
        Some("on"),
        "client certificates are not requested",
    ),
    NotApplied::new("tls.ca_file", None, "client certificates are not requested"),
    NotApplied::new("tls.ca_path", None, "client certificates are not requested"),
    NotApplied::new("tls.debug", None, "TLS has no debug log"),
    NotApplied::new("tls.vhost", None, "one certificate is served"),
    NotApplied::new(
        "tls.key_passwd",
        None,
        "encrypted keys are not read: give tls.key_file unencrypted",
    ),
    NotApplied::new(
        "tls.min_version",
        None,
        "TLS 1.2 and 1.3 are offered (rustls' safe defaults)",
    ),
    NotApplied::new(
        "tls.max_version",
        None,
        "TLS 1.2 and 1.3 are offered (rustls' safe defaults)",
    ),
    NotApplied::new("tls.ciphers", None, "rustls' safe default suites are used"),
    NotApplied::new("net.*", None, "the system's socket defaults apply"),
];

/// The TLS settings of a network input's options: `Some` when `tls` is on.
pub fn tls_of(
    on: bool,
    crt: Option<&str>,
    key: Option<&str>,
    base: &Path,
) -> Result<Option<Tls>, (&'static str, String)> {
    if !on {
        return Ok(None);
    }
    let resolve = |p: &str| {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        }
    };
    let crt = crt.ok_or(("tls.crt_file", "tls On needs tls.crt_file".to_string()))?;
    let key = key.ok_or(("tls.key_file", "tls On needs tls.key_file".to_string()))?;
    Tls::from_files(&resolve(crt), &resolve(key))
        .map(Some)
        .map_err(|e| ("tls", e))
}
