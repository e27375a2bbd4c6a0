//! What the network outputs (`forward`, `http`) share: connecting over TCP, a Unix socket or
//! TLS (rustls), with Fluent Bit's `tls*` keys.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

/// A byte stream: TCP, Unix or TLS over TCP.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// A boxed [`Stream`].
pub type Conn = Box<dyn Stream>;

/// Where and how to connect.
#[derive(Clone)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    /// Connect to this Unix socket instead of host and port.
    pub unix_path: Option<PathBuf>,
    pub tls: Option<ClientTls>,
    pub connect_timeout: Duration,
}

/// The client side of TLS, when `tls On`.
#[derive(Clone)]
pub struct ClientTls {
    connector: tokio_rustls::TlsConnector,
    /// The name checked against the certificate (`tls.vhost`, else `Host`).
    server_name: rustls::pki_types::ServerName<'static>,
}

/// Fluent Bit's `tls*` keys of an output.
#[derive(Clone, Debug, Default)]
pub struct TlsKeys {
    pub verify: bool,
    pub ca_file: Option<String>,
    pub crt_file: Option<String>,
    pub key_file: Option<String>,
    pub vhost: Option<String>,
}

fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn pem_certs(path: &Path) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate", path.display()));
    }
    Ok(certs)
}

impl ClientTls {
    /// Trusts `tls.ca_file` when set, else the system's roots; `tls.verify Off` trusts any
    /// certificate (as Fluent Bit's does). `tls.crt_file`/`tls.key_file` give a client
    /// certificate.
    pub fn new(
        host: &str,
        keys: &TlsKeys,
        base: &Path,
    ) -> Result<ClientTls, (&'static str, String)> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| ("tls", e.to_string()))?;
        let builder = if keys.verify {
            let mut roots = rustls::RootCertStore::empty();
            match &keys.ca_file {
                Some(ca) => {
                    for c in pem_certs(&resolve(base, ca)).map_err(|e| ("tls.ca_file", e))? {
                        roots.add(c).map_err(|e| ("tls.ca_file", e.to_string()))?;
                    }
                }
                None => {
                    for c in rustls_native_certs::load_native_certs().certs {
                        let _ = roots.add(c);
                    }
                }
            }
            builder.with_root_certificates(roots)
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
        };
        let cfg = match (&keys.crt_file, &keys.key_file) {
            (Some(crt), Some(key)) => {
                let certs = pem_certs(&resolve(base, crt)).map_err(|e| ("tls.crt_file", e))?;
                let path = resolve(base, key);
                let key = {
                    use rustls::pki_types::pem::PemObject;
                    rustls::pki_types::PrivateKeyDer::from_pem_file(&path)
                        .map_err(|e| ("tls.key_file", format!("{}: {e}", path.display())))?
                };
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|e| ("tls.key_file", e.to_string()))?
            }
            _ => builder.with_no_client_auth(),
        };
        let name = keys.vhost.as_deref().unwrap_or(host).to_string();
        let server_name = rustls::pki_types::ServerName::try_from(name.clone()).map_err(|_| {
            (
                "tls.vhost",
                format!("'{name}' is not a valid TLS server name"),
            )
        })?;
        Ok(ClientTls {
            connector: tokio_rustls::TlsConnector::from(Arc::new(cfg)),
            server_name,
        })
    }
}

impl Endpoint {
    /// Connects (and does the TLS handshake), within `connect_timeout`.
    pub async fn connect(&self) -> io::Result<Conn> {
        let fut = async {
            if let Some(p) = &self.unix_path {
                return Ok(Box::new(tokio::net::UnixStream::connect(p).await?) as Conn);
            }
            let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port)).await?;
            let _ = tcp.set_nodelay(true);
            match &self.tls {
                Some(t) => {
                    Ok(Box::new(t.connector.connect(t.server_name.clone(), tcp).await?) as Conn)
                }
                None => Ok(Box::new(tcp) as Conn),
            }
        };
        match tokio::time::timeout(self.connect_timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connect timed out after {:?}", self.connect_timeout),
            )),
        }
    }

    /// `host:port` or `unix://path`, for logs.
    pub fn describe(&self) -> String {
        match &self.unix_path {
            Some(p) => format!("unix://{}", p.display()),
            None => format!("{}:{}", self.host, self.port),
        }
    }
}

/// `tls.verify Off`: any certificate is taken (signatures are still checked).
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Whether a pooled connection was closed (or sent something unasked) while idle: it is then
/// dropped rather than written to.
pub async fn is_stale(conn: &mut Conn) -> bool {
    use tokio::io::AsyncReadExt;
    let mut b = [0u8; 1];
    // One poll: a timeout of zero still polls the read once.
    tokio::time::timeout(Duration::ZERO, conn.read(&mut b))
        .await
        .is_ok()
}
