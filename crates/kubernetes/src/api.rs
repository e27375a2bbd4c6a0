//! Talking to the API server (or the kubelet) with kube-rs: TLS through `Kube_CA_File` /
//! `Kube_CA_Path`, the bearer token from `Kube_Token_File` or `Kube_Token_Command` (read again
//! every `Kube_Token_TTL` and at once after a 401, so projected tokens that rotate keep working),
//! one GET per pod the cache does not know, and a node-scoped watch of pods
//! (`fieldSelector=spec.nodeName=<NODE_NAME>`) that keeps the cache current.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use http::{HeaderName, HeaderValue};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher;
use kube::Api;
use logferry_engine::CancellationToken;
use serde_json::Value as Json;

use crate::cache::Cache;
use crate::meta::PodMeta;

/// How long a record waits for a GET of its pod's metadata before going on without it.
pub const LOOKUP_WAIT: Duration = Duration::from_secs(2);

/// An API failure, phrased for the log.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid Kube_URL '{0}': {1}")]
    Url(String, String),
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Kube_Token_Command failed: {0}")]
    TokenCommand(String),
    #[error("no certificate in {0}")]
    NoCert(PathBuf),
    #[error("kubernetes client: {0}")]
    Client(String),
    #[error("API request: {0}")]
    Request(String),
    #[error("API request timed out after {0:?}")]
    Timeout(Duration),
    #[error("API server refused the token (401)")]
    Unauthorized,
}

/// Where the token comes from.
#[derive(Clone, Debug)]
pub enum TokenSource {
    File(PathBuf),
    Command(String),
    None,
}

impl TokenSource {
    fn read(&self) -> Result<Option<String>, ApiError> {
        match self {
            TokenSource::None => Ok(None),
            TokenSource::File(p) => match std::fs::read_to_string(p) {
                Ok(t) => Ok(Some(t.trim().to_string())),
                // Outside a cluster there may be no token: requests go without one.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(source) => Err(ApiError::Read {
                    what: "token file",
                    path: p.clone(),
                    source,
                }),
            },
            TokenSource::Command(cmd) => {
                let out = std::process::Command::new("sh")
                    .arg("-c")
                    .arg(cmd)
                    .output()
                    .map_err(|e| ApiError::TokenCommand(e.to_string()))?;
                if !out.status.success() {
                    return Err(ApiError::TokenCommand(
                        String::from_utf8_lossy(&out.stderr).trim().to_string(),
                    ));
                }
                Ok(Some(
                    String::from_utf8_lossy(&out.stdout).trim().to_string(),
                ))
            }
        }
    }
}

/// What to connect to and how.
#[derive(Clone, Debug)]
pub struct ApiSettings {
    pub url: String,
    pub ca_file: Option<PathBuf>,
    pub ca_path: Option<PathBuf>,
    pub verify: bool,
    pub token: TokenSource,
    pub token_ttl: Duration,
}

struct Current {
    client: kube::Client,
    token: Option<String>,
    read_at: Instant,
}

/// A client whose token is kept fresh. Requests made are counted.
pub struct ApiAccess {
    base: kube::Config,
    token: TokenSource,
    ttl: Duration,
    current: RwLock<Option<Current>>,
    /// Requests sent (GETs, lists and watch starts): `logferry_kubernetes_api_requests_total`.
    pub requests: Arc<AtomicU64>,
}

fn read_certs(path: &Path) -> Result<Vec<Vec<u8>>, ApiError> {
    let bytes = std::fs::read(path).map_err(|source| ApiError::Read {
        what: "CA file",
        path: path.to_path_buf(),
        source,
    })?;
    let certs: Vec<Vec<u8>> = rustls_pemfile::certs(&mut bytes.as_slice())
        .filter_map(Result::ok)
        .map(|c| c.as_ref().to_vec())
        .collect();
    if certs.is_empty() {
        return Err(ApiError::NoCert(path.to_path_buf()));
    }
    Ok(certs)
}

impl ApiAccess {
    /// Prepares access; nothing is sent yet. `requests` counts what is sent.
    pub fn new(s: &ApiSettings, requests: Arc<AtomicU64>) -> Result<ApiAccess, ApiError> {
        let uri: http::Uri = s
            .url
            .parse()
            .map_err(|e: http::uri::InvalidUri| ApiError::Url(s.url.clone(), e.to_string()))?;
        let mut base = kube::Config::new(uri);
        base.connect_timeout = Some(Duration::from_secs(5));
        base.accept_invalid_certs = !s.verify;
        // The engine and this module own retries; kube's own retry layer would hide 429s.
        base.default_retry = false;
        let mut roots = Vec::new();
        if let Some(f) = &s.ca_file {
            match read_certs(f) {
                Ok(c) => roots.extend(c),
                // The in-cluster default may be absent when running elsewhere.
                Err(ApiError::Read { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        if let Some(dir) = &s.ca_path {
            if let Ok(rd) = std::fs::read_dir(dir) {
                for e in rd.flatten() {
                    if let Ok(c) = read_certs(&e.path()) {
                        roots.extend(c);
                    }
                }
            }
        }
        if !roots.is_empty() {
            base.root_cert = Some(roots);
        }
        Ok(ApiAccess {
            base,
            token: s.token.clone(),
            ttl: s.token_ttl,
            current: RwLock::new(None),
            requests,
        })
    }

    fn build(&self, token: Option<String>) -> Result<Current, ApiError> {
        let mut cfg = self.base.clone();
        if let Some(t) = &token {
            let v = HeaderValue::from_str(&format!("Bearer {t}"))
                .map_err(|e| ApiError::Client(e.to_string()))?;
            cfg.headers
                .push((HeaderName::from_static("authorization"), v));
        }
        let client = kube::Client::try_from(cfg).map_err(|e| ApiError::Client(e.to_string()))?;
        Ok(Current {
            client,
            token,
            read_at: Instant::now(),
        })
    }

    /// The client to use now (token read again once its TTL has passed).
    pub fn client(&self) -> Result<kube::Client, ApiError> {
        if let Ok(g) = self.current.read() {
            if let Some(c) = g.as_ref() {
                if c.read_at.elapsed() < self.ttl {
                    return Ok(c.client.clone());
                }
            }
        }
        self.refresh()
    }

    /// Reads the token again and rebuilds the client if it changed.
    pub fn refresh(&self) -> Result<kube::Client, ApiError> {
        let token = self.token.read()?;
        let mut g = match self.current.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        match g.as_mut() {
            Some(c) if c.token == token => {
                c.read_at = Instant::now();
                Ok(c.client.clone())
            }
            _ => {
                let c = self.build(token)?;
                let client = c.client.clone();
                *g = Some(c);
                Ok(client)
            }
        }
    }

    fn count(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// GETs a pod as JSON; `None` if it does not exist. A 401 re-reads the token and tries once
    /// more.
    pub async fn get_pod(&self, namespace: &str, name: &str) -> Result<Option<Json>, ApiError> {
        self.get_json(&format!("/api/v1/namespaces/{namespace}/pods/{name}"))
            .await
    }

    /// GETs a namespace as JSON; `None` if it does not exist.
    pub async fn get_namespace(&self, name: &str) -> Result<Option<Json>, ApiError> {
        self.get_json(&format!("/api/v1/namespaces/{name}")).await
    }

    /// GETs any path as JSON (the kubelet's `/pods` too).
    pub async fn get_json(&self, path: &str) -> Result<Option<Json>, ApiError> {
        for attempt in 0..2 {
            let client = if attempt == 0 {
                self.client()?
            } else {
                self.refresh()?
            };
            let req = http::Request::get(path)
                .body(Vec::new())
                .map_err(|e| ApiError::Request(e.to_string()))?;
            self.count();
            match tokio::time::timeout(LOOKUP_WAIT, client.request::<Json>(req)).await {
                Err(_) => return Err(ApiError::Timeout(LOOKUP_WAIT)),
                Ok(Ok(v)) => return Ok(Some(v)),
                Ok(Err(kube::Error::Api(s))) if s.code == 404 => return Ok(None),
                Ok(Err(kube::Error::Api(s))) if s.code == 401 => {
                    if attempt == 1 {
                        return Err(ApiError::Unauthorized);
                    }
                }
                Ok(Err(e)) => return Err(ApiError::Request(e.to_string())),
            }
        }
        Err(ApiError::Unauthorized)
    }
}

fn is_unauthorized(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => s.code == 401,
        watcher::Error::WatchError(s) => s.code == 401,
        _ => false,
    }
}

/// Keeps the cache filled from a watch of the pods on `node`, until `stop`. Reconnects with
/// back-off when the API server is away, and with a fresh token after a 401.
pub async fn watch_node(
    api: Arc<ApiAccess>,
    node: String,
    cache: Arc<Cache>,
    stop: CancellationToken,
) {
    let mut backoff = Duration::from_millis(500);
    loop {
        let client = match api.client() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "kubernetes watch: no client; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        let pods: Api<Pod> = Api::all(client);
        let cfg = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
        api.count();
        let mut stream = watcher(pods, cfg).boxed();
        let mut restart_with_new_token = false;
        loop {
            let next = tokio::select! {
                _ = stop.cancelled() => return,
                n = stream.next() => n,
            };
            match next {
                None => break,
                Some(Ok(ev)) => {
                    backoff = Duration::from_millis(500);
                    apply(&cache, ev);
                }
                Some(Err(e)) => {
                    if is_unauthorized(&e) {
                        tracing::info!("kubernetes watch: token refused; reading it again");
                        restart_with_new_token = true;
                        break;
                    }
                    tracing::warn!(error = %e, retry_in = ?backoff, "kubernetes watch failed; retrying");
                    break;
                }
            }
        }
        if restart_with_new_token {
            if let Err(e) = api.refresh() {
                tracing::warn!(error = %e, "cannot read the token");
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
        cache.sweep();
    }
}

fn apply(cache: &Cache, ev: watcher::Event<Pod>) {
    let to_meta = |p: &Pod| {
        serde_json::to_value(p)
            .ok()
            .and_then(|v| PodMeta::from_json(&v))
    };
    match ev {
        watcher::Event::Apply(p) | watcher::Event::InitApply(p) => {
            if let Some(m) = to_meta(&p) {
                cache.put(m);
            }
        }
        watcher::Event::Delete(p) => {
            if let Some(m) = to_meta(&p) {
                cache.deleted(&m.namespace, &m.name);
            }
        }
        watcher::Event::Init | watcher::Event::InitDone => {}
    }
}
