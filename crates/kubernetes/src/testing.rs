//! A small Kubernetes API server for tests and the benchmark (feature `testing`): HTTPS on
//! 127.0.0.1 with a CA it generates (written to `ca.crt` for `Kube_CA_File`), a bearer token it
//! checks (written to `token` for `Kube_Token_File`), and real Pod and Namespace JSON for GET,
//! list (in pages, with `limit` and `continue`) and watch
//! (`/api/v1/pods?fieldSelector=spec.nodeName=…&watch=1`), plus the kubelet's
//! `/pods` and the CloudWatch agent's pod-to-service map.
//!
//! Watches behave as the API server's: every change gets a resource version; a watch from a
//! version replays what came after it, or answers 410 (`Expired`) once [`KubeApiServer::compact`]
//! dropped that history; with `allowWatchBookmarks=true` a bookmark comes every
//! [`BOOKMARK_EVERY`]. Faults: [`KubeApiServer::stop`] / [`KubeApiServer::restart`] (same port,
//! state kept), [`KubeApiServer::disconnect_watches`], and a black hole
//! ([`KubeApiServer::set_black_hole`]: connections are accepted and never answered). Every
//! request is counted by kind and logged with its time and node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use logferry_engine::CancellationToken;
use serde_json::{json, Value as Json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

type Body = BoxBody<Bytes, Infallible>;

/// How often a watch that asked for bookmarks gets one.
pub const BOOKMARK_EVERY: Duration = Duration::from_millis(500);
/// Events kept for watches that resume (older ones are compacted away).
const HISTORY_MAX: usize = 200_000;

/// One request, as the server saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub kind: &'static str,
    /// The node of a list or watch (`fieldSelector=spec.nodeName=…`).
    pub node: Option<String>,
    /// `resourceVersion` of a list or watch.
    pub resource_version: Option<String>,
    pub at: Instant,
}

struct Watcher {
    node: Option<String>,
    tx: mpsc::UnboundedSender<String>,
    /// Ends this watch's response (and its bookmarks).
    end: CancellationToken,
}

#[derive(Default)]
struct Inner {
    pods: HashMap<(String, String), Json>,
    namespaces: HashMap<String, Json>,
    version: u64,
    /// (resource version, event line), oldest first.
    history: VecDeque<(u64, Arc<str>, Option<String>)>,
    /// Watches from a version below this get 410.
    compacted_before: u64,
    watchers: Vec<Watcher>,
    pod_service_map: Option<Json>,
}

#[derive(Default)]
struct State {
    inner: Mutex<Inner>,
    token: Mutex<String>,
    counts: Mutex<HashMap<&'static str, u64>>,
    log: Mutex<Vec<Seen>>,
    black_hole: AtomicBool,
    /// How long every answer takes, in milliseconds ([`KubeApiServer::set_delay`]).
    delay_ms: std::sync::atomic::AtomicU64,
    /// Connections the black hole swallowed.
    parked: Mutex<Vec<TcpStream>>,
}

impl State {
    fn seen(&self, kind: &'static str, node: Option<String>, rv: Option<String>) {
        *self.counts.lock().unwrap().entry(kind).or_insert(0) += 1;
        self.log.lock().unwrap().push(Seen {
            kind,
            node,
            resource_version: rv,
            at: Instant::now(),
        });
    }

    /// Records a change and tells the watchers of its node.
    fn event(&self, inner: &mut Inner, kind: &str, mut pod: Json) {
        inner.version += 1;
        let v = inner.version;
        pod["metadata"]["resourceVersion"] = json!(v.to_string());
        let node = pod["spec"]["nodeName"].as_str().map(str::to_string);
        let line: Arc<str> = Arc::from(format!("{}\n", json!({"type": kind, "object": pod})));
        inner
            .history
            .push_back((v, Arc::clone(&line), node.clone()));
        while inner.history.len() > HISTORY_MAX {
            if let Some((old, _, _)) = inner.history.pop_front() {
                // A watch from `old` needs only what came after it, which is kept.
                inner.compacted_before = old;
            }
        }
        inner.watchers.retain(|w| {
            if w.node.is_some() && w.node != node {
                return true;
            }
            w.tx.send(line.to_string()).is_ok()
        });
    }
}

/// The running test server.
pub struct KubeApiServer {
    pub addr: SocketAddr,
    /// CA certificate (PEM) to pass as `Kube_CA_File`.
    pub ca_file: PathBuf,
    /// File holding the accepted token, for `Kube_Token_File`.
    pub token_file: PathBuf,
    /// The CA that signed the server's certificate, to sign client certificates.
    ca: Arc<rcgen::CertifiedIssuer<'static, rcgen::KeyPair>>,
    state: Arc<State>,
    tls: tokio_rustls::TlsAcceptor,
    stop: CancellationToken,
}

impl KubeApiServer {
    /// Starts a server on a free 127.0.0.1 port, writing `ca.crt` and `token` into `dir`.
    pub async fn start(dir: &Path) -> KubeApiServer {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "logferry test kubernetes CA");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .unwrap();
        let cert = params.signed_by(&key, &ca).unwrap();
        let ca_file = dir.join("ca.crt");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        let token_file = dir.join("token");
        let token = "test-token-1".to_string();
        std::fs::write(&token_file, &token).unwrap();

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
            )
            .unwrap();
        let tls = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let state = Arc::new(State::default());
        *state.token.lock().unwrap() = token;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut s = KubeApiServer {
            addr,
            ca_file,
            token_file,
            ca: Arc::new(ca),
            state,
            tls,
            stop: CancellationToken::new(),
        };
        s.serve(listener);
        s
    }

    fn serve(&mut self, listener: TcpListener) {
        let stop = CancellationToken::new();
        self.stop = stop.clone();
        let state = Arc::clone(&self.state);
        let tls = self.tls.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = tokio::select! {
                    _ = stop.cancelled() => return,
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                };
                if state.black_hole.load(Ordering::SeqCst) {
                    // Accepted, never answered: not even the TLS handshake.
                    state.parked.lock().unwrap().push(tcp);
                    continue;
                }
                let (state, tls, stop) = (Arc::clone(&state), tls.clone(), stop.clone());
                tokio::spawn(async move {
                    let Ok(stream) = tls.accept(tcp).await else {
                        return;
                    };
                    let stop2 = stop.clone();
                    let svc = hyper::service::service_fn(move |req| {
                        let state = Arc::clone(&state);
                        let stop = stop2.clone();
                        async move {
                            if state.black_hole.load(Ordering::SeqCst) {
                                // A connection opened before the hole: it goes silent too.
                                stop.cancelled().await;
                            }
                            let delay = state.delay_ms.load(Ordering::SeqCst);
                            if delay > 0 {
                                tokio::time::sleep(Duration::from_millis(delay)).await;
                            }
                            Ok::<_, Infallible>(handle(&state, req, stop))
                        }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc);
                    let closed = stop.clone();
                    tokio::select! {
                        _ = conn => {}
                        _ = closed.cancelled() => {}
                    }
                });
            }
        });
    }

    /// The `Kube_URL` to use.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Adds (or replaces) a pod and tells watchers.
    pub fn add_pod(&self, pod: Json) {
        let key = ns_name(&pod);
        let mut inner = self.state.inner.lock().unwrap();
        let kind = if inner.pods.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        self.state.event(&mut inner, kind, pod.clone());
        let v = inner.version;
        let mut pod = pod;
        pod["metadata"]["resourceVersion"] = json!(v.to_string());
        inner.pods.insert(key, pod);
    }

    /// Deletes a pod and tells watchers.
    pub fn delete_pod(&self, namespace: &str, name: &str) {
        let mut inner = self.state.inner.lock().unwrap();
        if let Some(p) = inner
            .pods
            .remove(&(namespace.to_string(), name.to_string()))
        {
            self.state.event(&mut inner, "DELETED", p);
        }
    }

    /// Deletes a pod without telling watchers (as if the watch missed it): only a relist shows
    /// it is gone.
    pub fn delete_pod_quietly(&self, namespace: &str, name: &str) {
        let mut inner = self.state.inner.lock().unwrap();
        inner
            .pods
            .remove(&(namespace.to_string(), name.to_string()));
        inner.version += 1;
    }

    /// Pod churn driven through the watch: `n` small pods `<prefix>-<i>` in `namespace` on
    /// `node`, each created and then deleted (as CronJobs and CI runners come and go).
    pub fn churn(&self, namespace: &str, prefix: &str, node: &str, n: usize) {
        for i in 0..n {
            let name = format!("{prefix}-{i}");
            self.add_pod(json!({
                "kind": "Pod", "apiVersion": "v1",
                "metadata": {"name": name, "namespace": namespace, "uid": format!("uid-{name}"),
                             "labels": {"job-name": prefix}},
                "spec": {"nodeName": node},
                "status": {"podIP": "10.0.0.1"}
            }));
            self.delete_pod(namespace, &name);
        }
    }

    /// Adds a namespace.
    pub fn add_namespace(&self, ns: Json) {
        let name = ns["metadata"]["name"].as_str().unwrap_or("").to_string();
        self.state.inner.lock().unwrap().namespaces.insert(name, ns);
    }

    /// Serves `map` at the CloudWatch agent's `/kubernetes/pod-to-service-env-map`.
    pub fn set_pod_service_map(&self, map: Json) {
        self.state.inner.lock().unwrap().pod_service_map = Some(map);
    }

    /// Drops the event history at a new version: watches resuming from an older version get
    /// 410 and must list again (as after an etcd compaction).
    pub fn compact(&self) {
        let mut inner = self.state.inner.lock().unwrap();
        inner.history.clear();
        inner.version += 1;
        inner.compacted_before = inner.version;
    }

    /// Ends every watch (the connections stay up otherwise).
    pub fn disconnect_watches(&self) {
        for w in self.state.inner.lock().unwrap().watchers.drain(..) {
            w.end.cancel();
        }
    }

    /// Accepts only `token` from now on (and writes it to the token file when `write`).
    pub fn set_token(&self, token: &str, write: bool) {
        *self.state.token.lock().unwrap() = token.to_string();
        if write {
            std::fs::write(&self.token_file, token).unwrap();
        }
    }

    /// Black hole: connections are accepted and never answered (an overloaded or cut-off API
    /// server), until turned off.
    pub fn set_black_hole(&self, on: bool) {
        self.state.black_hole.store(on, Ordering::SeqCst);
        if !on {
            self.state.parked.lock().unwrap().clear();
        }
    }

    /// A slow server: every request is answered `delay` late (0: at once).
    pub fn set_delay(&self, delay: Duration) {
        self.state
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Connections the black hole holds.
    pub fn swallowed(&self) -> usize {
        self.state.parked.lock().unwrap().len()
    }

    /// Requests seen of one kind: `get_pod`, `get_namespace`, `list`, `watch`, `kubelet_pods`,
    /// `pod_service_map`, `unauthorized`.
    pub fn requests(&self, kind: &str) -> u64 {
        self.state
            .counts
            .lock()
            .unwrap()
            .get(kind)
            .copied()
            .unwrap_or(0)
    }

    /// Every request counted, of any kind but `unauthorized`.
    pub fn total_requests(&self) -> u64 {
        self.state
            .counts
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| **k != "unauthorized")
            .map(|(_, v)| v)
            .sum()
    }

    /// Every request seen, in order.
    pub fn request_log(&self) -> Vec<Seen> {
        self.state.log.lock().unwrap().clone()
    }

    /// Pods the server holds.
    pub fn pod_count(&self) -> usize {
        self.state.inner.lock().unwrap().pods.len()
    }

    /// A client certificate and key (PEM files in `dir`) signed by the server's CA, for mTLS
    /// settings (the server does not ask for one).
    pub fn client_cert(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["client".to_string()]).unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let (c, k) = (dir.join("client.crt"), dir.join("client.key"));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    /// Stops listening and closes every connection (watches end).
    pub fn stop(&self) {
        self.stop.cancel();
        self.state.inner.lock().unwrap().watchers.clear();
        self.state.parked.lock().unwrap().clear();
    }

    /// Listens again on the same port (pods and history kept).
    pub async fn restart(&mut self) {
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if tries < 50 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot listen again on {}: {e}", self.addr),
            }
        };
        self.serve(listener);
    }
}

impl Drop for KubeApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn ns_name(p: &Json) -> (String, String) {
    (
        p["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string(),
        p["metadata"]["name"].as_str().unwrap_or("").to_string(),
    )
}

fn full(status: StatusCode, body: Json) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())).boxed())
        .unwrap()
}

fn status_json(code: u16, reason: &str, message: &str) -> Json {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

fn status(code: u16, reason: &str, message: &str) -> Response<Body> {
    full(
        StatusCode::from_u16(code).unwrap(),
        status_json(code, reason, message),
    )
}

fn query(req: &Request<Incoming>) -> HashMap<String, String> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), percent_decode(v)))
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn stream_body(rx: mpsc::UnboundedReceiver<String>, stop: CancellationToken) -> Body {
    let stream = futures::stream::unfold((rx, stop), |(mut rx, stop)| async move {
        tokio::select! {
            _ = stop.cancelled() => None,
            got = rx.recv() => got.map(|line| (Ok::<_, Infallible>(Frame::data(Bytes::from(line))), (rx, stop))),
        }
    });
    BodyExt::boxed(StreamBody::new(stream))
}

fn handle(state: &Arc<State>, req: Request<Incoming>, stop: CancellationToken) -> Response<Body> {
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let path = req.uri().path().to_string();
    let q = query(&req);
    if path == "/kubernetes/pod-to-service-env-map" {
        state.seen("pod_service_map", None, None);
        return match state.inner.lock().unwrap().pod_service_map.clone() {
            Some(m) => full(StatusCode::OK, m),
            None => status(404, "NotFound", "no map"),
        };
    }
    if auth != format!("Bearer {}", state.token.lock().unwrap()) {
        state.seen("unauthorized", None, None);
        return status(401, "Unauthorized", "Unauthorized");
    }
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["api", "v1", "namespaces", ns, "pods", name] => {
            state.seen("get_pod", None, None);
            let inner = state.inner.lock().unwrap();
            match inner.pods.get(&(ns.to_string(), name.to_string())) {
                Some(p) => full(StatusCode::OK, p.clone()),
                None => status(404, "NotFound", &format!("pods \"{name}\" not found")),
            }
        }
        ["api", "v1", "namespaces", ns] => {
            state.seen("get_namespace", None, None);
            match state.inner.lock().unwrap().namespaces.get(*ns) {
                Some(n) => full(StatusCode::OK, n.clone()),
                None => status(404, "NotFound", &format!("namespaces \"{ns}\" not found")),
            }
        }
        ["pods"] => {
            state.seen("kubelet_pods", None, None);
            let items: Vec<Json> = state.inner.lock().unwrap().pods.values().cloned().collect();
            full(
                StatusCode::OK,
                json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items}),
            )
        }
        ["api", "v1", "pods"] => {
            let node = q
                .get("fieldSelector")
                .and_then(|f| f.strip_prefix("spec.nodeName="))
                .map(str::to_string);
            let rv = q.get("resourceVersion").cloned();
            if q.get("watch").is_some_and(|w| w == "true" || w == "1") {
                state.seen("watch", node.clone(), rv.clone());
                watch(
                    state,
                    node,
                    rv,
                    q.get("allowWatchBookmarks").is_some_and(|b| b == "true"),
                    stop,
                )
            } else {
                state.seen("list", node.clone(), rv);
                let inner = state.inner.lock().unwrap();
                let mut items: Vec<Json> = inner
                    .pods
                    .values()
                    .filter(|p| {
                        node.as_deref()
                            .is_none_or(|n| p["spec"]["nodeName"].as_str() == Some(n))
                    })
                    .cloned()
                    .collect();
                items.sort_by_key(|p| p["metadata"]["name"].as_str().unwrap_or("").to_string());
                let rv = inner.version.to_string();
                // Pages as the API server gives them: `limit` pods, and a `continue` token
                // for the rest (here the offset of the next page) while some are left.
                let from: usize = q.get("continue").and_then(|c| c.parse().ok()).unwrap_or(0);
                let limit: usize = q
                    .get("limit")
                    .and_then(|l| l.parse().ok())
                    .filter(|&l| l > 0)
                    .unwrap_or(usize::MAX);
                let total = items.len();
                let page: Vec<Json> = items.into_iter().skip(from).take(limit).collect();
                let next = from.saturating_add(page.len());
                let mut md = json!({"resourceVersion": rv});
                if next < total {
                    md["continue"] = json!(next.to_string());
                }
                full(
                    StatusCode::OK,
                    json!({"kind": "PodList", "apiVersion": "v1", "metadata": md, "items": page}),
                )
            }
        }
        _ => status(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ),
    }
}

/// A watch from `rv`: what came after it, then live events (and bookmarks), or 410.
fn watch(
    state: &Arc<State>,
    node: Option<String>,
    rv: Option<String>,
    bookmarks: bool,
    stop: CancellationToken,
) -> Response<Body> {
    let (tx, rx) = mpsc::unbounded_channel::<String>();
    let stop = stop.child_token();
    {
        let mut inner = state.inner.lock().unwrap();
        let from: u64 = rv.as_deref().and_then(|v| v.parse().ok()).unwrap_or(0);
        if from > 0 && from < inner.compacted_before {
            let line = format!(
                "{}\n",
                json!({"type": "ERROR", "object": status_json(410, "Expired", &format!("too old resource version: {from}"))})
            );
            let _ = tx.send(line);
            drop(tx);
            return Response::builder()
                .status(StatusCode::OK)
                .header("content-type", "application/json")
                .body(stream_body(rx, stop))
                .unwrap();
        }
        if from > 0 {
            for (v, line, n) in &inner.history {
                if *v > from && (node.is_none() || *n == node) {
                    let _ = tx.send(line.to_string());
                }
            }
        }
        inner.watchers.push(Watcher {
            node,
            tx: tx.clone(),
            end: stop.clone(),
        });
    }
    // Bookmarks carry the current version: a task sends them through the same channel.
    if bookmarks {
        let (state, stop, tx) = (Arc::clone(state), stop.clone(), tx);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(BOOKMARK_EVERY);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tx.closed() => return,
                    _ = tick.tick() => {}
                }
                let v = state.inner.lock().unwrap().version;
                let line = format!(
                    "{}\n",
                    json!({"type": "BOOKMARK", "object": {"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": v.to_string()}}})
                );
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
    } else {
        drop(tx);
    }
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(stream_body(rx, stop))
        .unwrap()
}

/// Asserts that a delivered record equals the seed's expected record
/// (the seed-nginx conformance fixture's `expected-record.json`) with the allowances its README gives:
/// `kubernetes` may hold more keys, and `container_hash` may carry the image reference before the
/// digest (`nginx@sha256:<hex>`); everything else must be equal, with no other key.
pub fn assert_matches_seed_record(mut got: Json, expected: &Json) {
    let want_hash = expected["kubernetes"]["container_hash"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let hash = got["kubernetes"]["container_hash"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        hash == want_hash || hash.ends_with(&format!("@sha256:{want_hash}")),
        "container_hash {hash:?} is not {want_hash:?}"
    );
    got["kubernetes"]["container_hash"] = json!(want_hash);
    let keys: Vec<&String> = expected["kubernetes"]
        .as_object()
        .map(|o| o.keys().collect())
        .unwrap_or_default();
    if let Some(k) = got["kubernetes"].as_object_mut() {
        k.retain(|key, _| keys.contains(&key));
    }
    assert_eq!(&got, expected);
}
