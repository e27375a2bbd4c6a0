//! One bulk request over HTTP(S): hyper 1 with rustls (ring), the workspace's stack.
//!
//! - TLS (`tls On`): the system's roots plus `tls.ca_file` / `tls.ca_path`; `tls.verify Off`
//!   accepts any certificate; as in Fluent Bit, the certificate's name is checked only with
//!   `tls.verify_hostname On` (against `tls.vhost` when set, which is also the SNI name);
//!   `tls.crt_file` + `tls.key_file` present a client certificate.
//! - Authentication: basic (`HTTP_User`/`HTTP_Passwd`, `Cloud_Auth`), `ApiKey`
//!   (`HTTP_API_Key`), or AWS SigV4 (`AWS_Auth On`) over the exact bytes sent (after gzip),
//!   with `x-amz-content-sha256` (which OpenSearch Serverless requires), credentials from the
//!   AWS chain ([`crate::client::load_sdk_config`]: environment, profile, web identity, ECS,
//!   IMDS, and `AWS_Role_ARN` assumed through STS), cached until 5 minutes before they expire.
//! - The response body is read up to `Buffer_Size` bytes; what is past it is not read.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::ProvideCredentials;
use aws_credential_types::Credentials;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use tokio::sync::Mutex;

use super::config::{Auth, Connection, TlsSettings};
use crate::client::{load_sdk_config, AwsSettings, CONNECT_TIMEOUT};

/// Time for one whole request, response included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Credentials closer than this to their expiry are fetched again.
const CREDENTIALS_MARGIN: Duration = Duration::from_secs(300);

/// Why a request got no HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Network, timeout, credentials: may pass later.
    #[error("{0}")]
    Transient(String),
    /// Cannot work as configured.
    #[error("{0}")]
    Permanent(String),
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
    /// The body was longer than `Buffer_Size`; `body` is its start.
    pub truncated: bool,
}

/// The client of one output.
pub struct Transport {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    url: String,
    host_header: String,
    auth: Auth,
    gzip: bool,
    buffer_size: Option<usize>,
    signer: Option<Signer>,
}

impl Transport {
    /// A client for `c`; fails when TLS files cannot be read.
    pub fn new(c: &Connection) -> Result<Self, String> {
        let tls = tls_config(c.tls.as_ref())?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        http.set_nodelay(true);
        let b = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http();
        let b = match c.tls.as_ref().and_then(|t| t.vhost.clone()) {
            Some(v) => {
                let name =
                    ServerName::try_from(v.clone()).map_err(|e| format!("tls.vhost '{v}': {e}"))?;
                b.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name))
            }
            None => b,
        };
        let connector = b.enable_http1().wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .build(connector);
        let default_port = if c.tls.is_some() { 443 } else { 80 };
        let host_header = if c.port == default_port {
            c.host.clone()
        } else {
            format!("{}:{}", c.host, c.port)
        };
        let signer = match &c.auth {
            Auth::SigV4 { aws, service } => Some(Signer::new(aws.clone(), service.clone())),
            _ => None,
        };
        Ok(Transport {
            client,
            url: c.bulk_url(),
            host_header,
            auth: c.auth.clone(),
            gzip: c.gzip,
            buffer_size: c.buffer_size,
            signer,
        })
    }

    /// The bulk URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// POSTs one NDJSON body to `_bulk`.
    pub async fn post(&self, ndjson: &[u8]) -> Result<Response, SendError> {
        let body: Vec<u8> = if self.gzip {
            let mut enc = flate2::write::GzEncoder::new(
                Vec::with_capacity(ndjson.len() / 4),
                flate2::Compression::default(),
            );
            enc.write_all(ndjson)
                .and_then(|()| enc.finish())
                .map_err(|e| SendError::Permanent(format!("gzip: {e}")))?
        } else {
            ndjson.to_vec()
        };
        let mut req = http::Request::builder()
            .method("POST")
            .uri(&self.url)
            .header("host", &self.host_header)
            .header("content-type", "application/x-ndjson")
            .header(
                "user-agent",
                concat!("logferry/", env!("CARGO_PKG_VERSION")),
            );
        if self.gzip {
            req = req.header("content-encoding", "gzip");
        }
        match &self.auth {
            Auth::Basic { user, password } => {
                use base64::Engine;
                let token =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                req = req.header("authorization", format!("Basic {token}"));
            }
            Auth::ApiKey(k) => req = req.header("authorization", format!("ApiKey {k}")),
            Auth::None | Auth::SigV4 { .. } => {}
        }
        let mut req = req
            .body(Bytes::from(body))
            .map_err(|e| SendError::Permanent(format!("request: {e}")))?;
        if let Some(s) = &self.signer {
            s.sign(&mut req).await?;
        }
        let req = req.map(Full::new);
        let attempt = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| SendError::Transient(format!("{}: {}", self.url, chain(&e))))?;
            let status = resp.status().as_u16();
            let mut body = resp.into_body();
            let mut out = Vec::new();
            let mut truncated = false;
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| {
                    SendError::Transient(format!("{}: reading the answer: {e}", self.url))
                })?;
                if let Ok(data) = frame.into_data() {
                    out.extend_from_slice(&data);
                    if let Some(max) = self.buffer_size {
                        if out.len() > max {
                            out.truncate(max);
                            truncated = true;
                            break;
                        }
                    }
                }
            }
            Ok(Response {
                status,
                body: out,
                truncated,
            })
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, attempt).await {
            Ok(r) => r,
            Err(_) => Err(SendError::Transient(format!(
                "{}: no answer within {}s",
                self.url,
                REQUEST_TIMEOUT.as_secs()
            ))),
        }
    }
}

/// An error and its sources, on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// SigV4 signing with cached credentials.
struct Signer {
    aws: AwsSettings,
    service: String,
    cached: Mutex<Option<(Arc<aws_config::SdkConfig>, Option<Credentials>)>>,
}

impl Signer {
    fn new(aws: AwsSettings, service: String) -> Self {
        Signer {
            aws,
            service,
            cached: Mutex::new(None),
        }
    }

    async fn credentials(&self) -> Result<Credentials, SendError> {
        let mut g = self.cached.lock().await;
        if let Some((_, Some(c))) = g.as_ref() {
            let fresh = c
                .expiry()
                .is_none_or(|e| e > SystemTime::now() + CREDENTIALS_MARGIN);
            if fresh {
                return Ok(c.clone());
            }
        }
        let conf = match g.as_ref() {
            Some((conf, _)) => Arc::clone(conf),
            None => Arc::new(load_sdk_config(&self.aws).await),
        };
        let provider = conf.credentials_provider().ok_or_else(|| {
            SendError::Transient("AWS_Auth: no AWS credentials provider".to_string())
        })?;
        let creds = provider
            .provide_credentials()
            .await
            .map_err(|e| SendError::Transient(format!("AWS credentials: {}", chain(&e))))?;
        *g = Some((conf, Some(creds.clone())));
        Ok(creds)
    }

    async fn sign(&self, req: &mut http::Request<Bytes>) -> Result<(), SendError> {
        use aws_sigv4::http_request::{
            sign, PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings,
        };
        let creds = self.credentials().await?;
        let identity = creds.into();
        let mut settings = SigningSettings::default();
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.aws.region)
            .name(&self.service)
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .map_err(|e| SendError::Permanent(format!("SigV4: {e}")))?
            .into();
        let uri = req.uri().to_string();
        let headers: Vec<(&str, &str)> = req
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)))
            .collect();
        let signable = SignableRequest::new(
            req.method().as_str(),
            uri.as_str(),
            headers.into_iter(),
            SignableBody::Bytes(req.body()),
        )
        .map_err(|e| SendError::Permanent(format!("SigV4: {e}")))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| SendError::Permanent(format!("SigV4: {e}")))?
            .into_parts();
        instructions.apply_to_request_http1x(req);
        Ok(())
    }
}

/// The rustls configuration of `tls` (plain HTTP when `None` still needs one for the builder).
fn tls_config(tls: Option<&TlsSettings>) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let Some(t) = tls else {
        return Ok(builder
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth());
    };
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for c in native.certs {
        let _ = roots.add(c);
    }
    let mut extra: Vec<std::path::PathBuf> = t.ca_file.iter().cloned().collect();
    if let Some(dir) = &t.ca_path {
        let entries =
            std::fs::read_dir(dir).map_err(|e| format!("tls.ca_path {}: {e}", dir.display()))?;
        let mut files: Vec<_> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        extra.extend(files);
    }
    for f in &extra {
        for c in read_certs(f)? {
            roots
                .add(c)
                .map_err(|e| format!("{}: not a CA certificate: {e}", f.display()))?;
        }
    }
    let webpki =
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider)).build();
    let verifier: Arc<dyn ServerCertVerifier> = Arc::new(Verifier {
        webpki: match webpki {
            Ok(v) => Some(v),
            Err(e) if !t.verify => {
                tracing::debug!(error = %e, "no trusted roots; tls.verify is off");
                None
            }
            Err(e) => return Err(format!("TLS: no trusted CA certificates: {e}")),
        },
        verify: t.verify,
        verify_hostname: t.verify_hostname,
        provider,
    });
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match (&t.crt_file, &t.key_file) {
        (Some(crt), Some(key)) => {
            let certs = read_certs(crt)?;
            let key = read_key(key)?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("tls.crt_file/tls.key_file: {e}"))
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

fn read_certs(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let data = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    use rustls::pki_types::pem::PemObject;
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&data).collect();
    let certs = certs.map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}

fn read_key(path: &std::path::Path) -> Result<PrivateKeyDer<'static>, String> {
    let data = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    use rustls::pki_types::pem::PemObject;
    PrivateKeyDer::from_pem_slice(&data).map_err(|e| {
        format!(
            "{}: no unencrypted PEM private key in it ({e})",
            path.display()
        )
    })
}

/// Fluent Bit's checks: the chain with `tls.verify`, the name only with `tls.verify_hostname`.
#[derive(Debug)]
struct Verifier {
    webpki: Option<Arc<WebPkiServerVerifier>>,
    verify: bool,
    verify_hostname: bool,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if !self.verify {
            return Ok(ServerCertVerified::assertion());
        }
        let Some(w) = &self.webpki else {
            return Err(rustls::Error::General("no trusted CA certificates".into()));
        };
        match w.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.verify_hostname => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
