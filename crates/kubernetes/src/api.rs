//! Talking to the API server (or the kubelet) with kube-rs: TLS through `Kube_CA_File` /
//! `Kube_CA_Path`, the bearer token from `Kube_Token_File` or `Kube_Token_Command` (read again
//! every `Kube_Token_TTL` and at once after a 401, so projected tokens that rotate keep working),
//! one GET per pod the cache does not know, and a node-scoped list-then-watch of pods
//! (`fieldSelector=spec.nodeName=<NODE_NAME>`) that keeps the cache current.
//!
//! Watch hygiene, so that an API server restart does not bring every node back at once:
//! - a broken watch resumes from the last resource version it saw (events and bookmarks,
//!   `allowWatchBookmarks=true`); the pods are listed again only when the server says that
//!   version is gone (410), and the list reconciles pods deleted meanwhile;
//! - reconnects wait a full-jitter back-off (a random delay up to 0.5 s, doubling to 30 s), so
//!   agents that lost the server together come back spread out;
//! - restarts and relists are counted (`logferry_kubernetes_watch_restarts_total`,
//!   `logferry_kubernetes_relists_total`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use http::{HeaderName, HeaderValue};
use kube::core::WatchEvent;
use logferry_engine::CancellationToken;
use rand::Rng;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use serde_json::Value as Json;

use crate::cache::Cache;
use crate::meta::{MetaShape, PodMeta};

/// How long one GET (a pod, a namespace, the kubelet's `/pods`) may take, connection
/// included; past it the lookup fails and backs off.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a list, or the start of a watch, may take.
pub const WATCH_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Pods per page of the node's pod list (`limit`): a page's Pod objects are held at once
/// while they are read, so this bounds the list's memory (client-go pages by 500). A page of
/// the bench's pods, 2.8 KB of JSON each with their `managedFields`, is 280 KB.
pub const LIST_PAGE: usize = 100;
/// The server ends a watch after a random time between this many seconds and twice as many
/// (as client-go asks), so agents that started together do not come back together; the watch
/// then resumes from where it was.
pub const WATCH_SECONDS: u64 = 300;
/// A watch silent for this long (no event, no bookmark) is taken as broken and resumed.
pub const WATCH_IDLE: Duration = Duration::from_secs(2 * WATCH_SECONDS + 60);
/// First reconnect back-off of the watch (the delay is random up to it).
pub const WATCH_BACKOFF_MIN: Duration = Duration::from_millis(500);
/// Longest reconnect back-off of the watch.
pub const WATCH_BACKOFF_MAX: Duration = Duration::from_secs(30);

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
    #[error("API server answered {0}: {1}")]
    Status(u16, String),
}

impl ApiError {
    /// The HTTP status the API server answered, if it answered one.
    pub fn code(&self) -> Option<u16> {
        match self {
            ApiError::Unauthorized => Some(401),
            ApiError::Status(c, _) => Some(*c),
            _ => None,
        }
    }
}

fn api_error(e: kube::Error) -> ApiError {
    match e {
        kube::Error::Api(s) if s.code == 401 => ApiError::Unauthorized,
        kube::Error::Api(s) => ApiError::Status(s.code, s.message.clone()),
        e => ApiError::Request(e.to_string()),
    }
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
    /// GETs of single pods: `logferry_kubernetes_pod_gets_total`.
    pub pod_gets: Arc<AtomicU64>,
}

fn read_certs(path: &Path) -> Result<Vec<Vec<u8>>, ApiError> {
    let bytes = std::fs::read(path).map_err(|source| ApiError::Read {
        what: "CA file",
        path: path.to_path_buf(),
        source,
    })?;
    let certs: Vec<Vec<u8>> = <CertificateDer<'_> as PemObject>::pem_slice_iter(&bytes)
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
            pod_gets: Arc::new(AtomicU64::new(0)),
        })
    }

    fn build(&self, token: Option<String>) -> Result<Current, ApiError> {
        let mut cfg = self.base.clone();
        if let Some(t) = &token {
            let mut v = HeaderValue::from_str(&format!("Bearer {t}"))
                .map_err(|e| ApiError::Client(e.to_string()))?;
            // Kept out of any Debug output of the client's settings.
            v.set_sensitive(true);
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
        self.pod_gets.fetch_add(1, Ordering::Relaxed);
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
            match tokio::time::timeout(REQUEST_TIMEOUT, client.request::<Json>(req)).await {
                Err(_) => return Err(ApiError::Timeout(REQUEST_TIMEOUT)),
                Ok(Ok(v)) => return Ok(Some(v)),
                Ok(Err(kube::Error::Api(s))) if s.code == 404 => return Ok(None),
                Ok(Err(kube::Error::Api(s))) if s.code == 401 => {
                    if attempt == 1 {
                        return Err(ApiError::Unauthorized);
                    }
                }
                Ok(Err(e)) => return Err(api_error(e)),
            }
        }
        Err(ApiError::Unauthorized)
    }

    /// Lists the pods on `node`, [`LIST_PAGE`] at a time (following `continue` pages): what
    /// `each` makes of each pod, and the list's resource version, to watch from. Each page's
    /// objects are handed to `each` as they are and freed before the next page is asked for,
    /// so a list never holds more than one page of full Pod objects (with their
    /// `managedFields`) at once.
    pub async fn list_pods<T>(
        &self,
        node: &str,
        mut each: impl FnMut(Json) -> Option<T>,
    ) -> Result<(Vec<T>, String), ApiError> {
        let mut out = Vec::new();
        let mut cont: Option<String> = None;
        loop {
            let mut path = format!(
                "/api/v1/pods?fieldSelector=spec.nodeName%3D{}&limit={LIST_PAGE}",
                encode(node)
            );
            if let Some(c) = &cont {
                path.push_str(&format!("&continue={}", encode(c)));
            }
            let req = http::Request::get(path)
                .body(Vec::new())
                .map_err(|e| ApiError::Request(e.to_string()))?;
            self.count();
            let mut list: Json = self.client()?.request(req).await.map_err(api_error)?;
            let md = list.get("metadata");
            let rv = md
                .and_then(|m| m.get("resourceVersion"))
                .and_then(Json::as_str)
                .unwrap_or("")
                .to_string();
            cont = md
                .and_then(|m| m.get("continue"))
                .and_then(Json::as_str)
                .filter(|c| !c.is_empty())
                .map(str::to_string);
            if let Some(Json::Array(items)) = list.get_mut("items").map(Json::take) {
                out.extend(items.into_iter().filter_map(&mut each));
            }
            if cont.is_none() {
                return Ok((out, rv));
            }
        }
    }

    /// Watches the pods on `node` from resource version `rv`, with bookmarks.
    pub async fn watch_pods(
        &self,
        node: &str,
        rv: &str,
    ) -> Result<impl Stream<Item = Result<WatchEvent<Json>, ApiError>>, ApiError> {
        let timeout = rand::rng().random_range(WATCH_SECONDS..2 * WATCH_SECONDS);
        let path = format!(
            "/api/v1/pods?fieldSelector=spec.nodeName%3D{}&watch=1&resourceVersion={}&allowWatchBookmarks=true&timeoutSeconds={timeout}",
            encode(node),
            encode(rv)
        );
        let req = http::Request::get(path)
            .body(Vec::new())
            .map_err(|e| ApiError::Request(e.to_string()))?;
        self.count();
        let events = self
            .client()?
            .request_events::<Json>(req)
            .await
            .map_err(api_error)?;
        Ok(events.map(|e| e.map_err(api_error)))
    }
}

/// Percent-encodes what a query value may not hold.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A reconnect back-off with full jitter: each delay is drawn at random up to the current
/// step (at least 10 ms), and the step doubles up to its maximum. Clients that failed at the
/// same moment therefore come back at different moments.
#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    step: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max,
            step: min,
        }
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.step;
        self.step = (self.step * 2).min(self.max);
        let ms = step.as_millis().max(10) as u64;
        Duration::from_millis(rand::rng().random_range(10..=ms))
    }

    /// Back to the first step (after a success).
    pub fn reset(&mut self) {
        self.step = self.min;
    }
}

/// What the watch reports, for the filter and the metrics.
#[derive(Clone, Debug, Default)]
pub struct WatchStats {
    /// Watches started again after the first (errors, silences, the server's own timeouts).
    pub restarts: Arc<AtomicU64>,
    /// Lists after the first (a resource version the server no longer has, 410).
    pub relists: Arc<AtomicU64>,
    /// The watch is connected and the cache follows it: a new pod will show up there within
    /// moments, so lookups wait a little for it before asking.
    pub synced: Arc<AtomicBool>,
}

/// Sleeps `d` unless `stop` fires first (then `false`).
async fn pause(stop: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = stop.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

fn key_of(obj: &Json) -> Option<(String, &str)> {
    let md = obj.get("metadata")?;
    let name = md.get("name")?.as_str()?;
    let ns = md
        .get("namespace")
        .and_then(Json::as_str)
        .unwrap_or("default");
    Some((format!("{ns}/{name}"), name))
}

fn version_of(obj: &Json) -> Option<String> {
    obj.get("metadata")?
        .get("resourceVersion")?
        .as_str()
        .map(str::to_string)
}

/// How one watch connection ended.
enum Ended {
    /// The server closed it (its timeout) after it ran a while: resume at once.
    Closed,
    /// The resource version is gone (410): list again.
    Gone,
    /// A failure: resume after the back-off.
    Failed,
}

/// Keeps the cache filled from a list-then-watch of the pods on `node`, until `stop`.
pub async fn watch_node(
    api: Arc<ApiAccess>,
    node: String,
    cache: Arc<Cache>,
    shape: MetaShape,
    stats: WatchStats,
    stop: CancellationToken,
) {
    let mut backoff = Backoff::new(WATCH_BACKOFF_MIN, WATCH_BACKOFF_MAX);
    let mut rv: Option<String> = None;
    let (mut lists, mut watches) = (0u64, 0u64);
    // 410s with no event in between: a server that keeps answering 410 is listed again only
    // after the back-off, never in a loop.
    let mut gone_in_a_row = 0u32;
    loop {
        if stop.is_cancelled() {
            return;
        }
        let version = match rv.clone() {
            Some(v) => v,
            None => {
                if lists > 0 {
                    stats.relists.fetch_add(1, Ordering::Relaxed);
                }
                lists += 1;
                let listed = tokio::select! {
                    _ = stop.cancelled() => return,
                    r = tokio::time::timeout(WATCH_REQUEST_TIMEOUT, api.list_pods(&node, |p| {
                        let (key, name) = key_of(&p)?;
                        let meta = PodMeta::from_json(&p, name, shape);
                        Some((key, meta))
                    })) => r,
                };
                match listed {
                    Ok(Ok((pods, version))) => {
                        let now = Instant::now();
                        let mut keys = HashSet::with_capacity(pods.len());
                        for (key, meta) in pods {
                            cache.put_watched(&key, meta, now);
                            keys.insert(key);
                        }
                        let gone = cache.reconcile(&keys, now);
                        tracing::info!(node = %node, pods = keys.len(), deleted_meanwhile = gone, "kubernetes: listed this node's pods");
                        version
                    }
                    Ok(Err(e)) => {
                        stats.synced.store(false, Ordering::Relaxed);
                        if e.code() == Some(401) {
                            if let Err(e) = api.refresh() {
                                tracing::warn!(error = %e, "kubernetes: cannot read the token");
                            }
                        }
                        let d = backoff.next_delay();
                        tracing::warn!(error = %e, retry_in = ?d, "kubernetes: cannot list this node's pods");
                        if !pause(&stop, d).await {
                            return;
                        }
                        continue;
                    }
                    Err(_) => {
                        stats.synced.store(false, Ordering::Relaxed);
                        let d = backoff.next_delay();
                        tracing::warn!(retry_in = ?d, "kubernetes: listing this node's pods timed out");
                        if !pause(&stop, d).await {
                            return;
                        }
                        continue;
                    }
                }
            }
        };
        rv = Some(version.clone());
        if watches > 0 {
            stats.restarts.fetch_add(1, Ordering::Relaxed);
        }
        watches += 1;
        let started = tokio::select! {
            _ = stop.cancelled() => return,
            r = tokio::time::timeout(WATCH_REQUEST_TIMEOUT, api.watch_pods(&node, &version)) => r,
        };
        let ended = match started {
            Ok(Ok(stream)) => {
                stats.synced.store(true, Ordering::Relaxed);
                let began = Instant::now();
                let mut stream = std::pin::pin!(stream);
                let mut events = 0u64;
                let ended = loop {
                    let next = tokio::select! {
                        _ = stop.cancelled() => return,
                        n = tokio::time::timeout(WATCH_IDLE, stream.next()) => n,
                    };
                    match next {
                        Err(_) => {
                            tracing::warn!("kubernetes: the watch went silent; resuming it");
                            break Ended::Failed;
                        }
                        Ok(None) if events > 0 || began.elapsed() > Duration::from_secs(1) => {
                            break Ended::Closed
                        }
                        Ok(None) => break Ended::Failed,
                        Ok(Some(Err(e))) => {
                            if e.code() == Some(410) {
                                break Ended::Gone;
                            }
                            if e.code() == Some(401) {
                                if let Err(e) = api.refresh() {
                                    tracing::warn!(error = %e, "kubernetes: cannot read the token");
                                }
                            }
                            tracing::warn!(error = %e, "kubernetes: the watch failed");
                            break Ended::Failed;
                        }
                        Ok(Some(Ok(ev))) => {
                            events += 1;
                            backoff.reset();
                            gone_in_a_row = 0;
                            let now = Instant::now();
                            match ev {
                                WatchEvent::Added(p) | WatchEvent::Modified(p) => {
                                    if let Some((key, name)) = key_of(&p) {
                                        cache.put_watched(
                                            &key,
                                            PodMeta::from_json(&p, name, shape),
                                            now,
                                        );
                                    }
                                    if let Some(v) = version_of(&p) {
                                        rv = Some(v);
                                    }
                                }
                                WatchEvent::Deleted(p) => {
                                    if let Some((key, _)) = key_of(&p) {
                                        cache.deleted(&key, now);
                                    }
                                    if let Some(v) = version_of(&p) {
                                        rv = Some(v);
                                    }
                                }
                                WatchEvent::Bookmark(b) => rv = Some(b.metadata.resource_version),
                                WatchEvent::Error(s) if s.code == 410 => break Ended::Gone,
                                WatchEvent::Error(s) => {
                                    tracing::warn!(code = s.code, message = %s.message, "kubernetes: the watch reported an error");
                                    break Ended::Failed;
                                }
                            }
                        }
                    }
                };
                ended
            }
            Ok(Err(e)) if e.code() == Some(410) => Ended::Gone,
            Ok(Err(e)) => {
                if e.code() == Some(401) {
                    if let Err(e) = api.refresh() {
                        tracing::warn!(error = %e, "kubernetes: cannot read the token");
                    }
                }
                tracing::warn!(error = %e, "kubernetes: cannot start the watch");
                Ended::Failed
            }
            Err(_) => {
                tracing::warn!("kubernetes: starting the watch timed out");
                Ended::Failed
            }
        };
        match ended {
            Ended::Closed => {}
            Ended::Gone => {
                tracing::info!(
                    "kubernetes: the watch's resource version is gone (410); listing again"
                );
                rv = None;
                gone_in_a_row += 1;
                if gone_in_a_row > 1 && !pause(&stop, backoff.next_delay()).await {
                    return;
                }
            }
            Ended::Failed => {
                stats.synced.store(false, Ordering::Relaxed);
                let d = backoff.next_delay();
                if !pause(&stop, d).await {
                    return;
                }
            }
        }
    }
}
