//! A small Kubernetes API server for tests and the benchmark (feature `testing`): HTTPS on
//! 127.0.0.1 with a CA it generates (written to `ca.crt` for `Kube_CA_File`), a bearer token it
//! checks (written to `token` for `Kube_Token_File`), and real Pod and Namespace JSON for GET,
//! list and watch (`/api/v1/pods?fieldSelector=spec.nodeName=…&watch=true`), plus the kubelet's
//! `/pods`. It counts requests by kind, and can be stopped and started again on the same port.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use logferry_engine::CancellationToken;
use serde_json::{json, Value as Json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

type Body = BoxBody<Bytes, Infallible>;

#[derive(Default)]
struct State {
    pods: Mutex<Vec<Json>>,
    namespaces: Mutex<HashMap<String, Json>>,
    token: Mutex<String>,
    counts: Mutex<HashMap<&'static str, u64>>,
    version: AtomicU64,
    watchers: Mutex<Vec<(Option<String>, mpsc::UnboundedSender<String>)>>,
}

impl State {
    fn count(&self, kind: &'static str) {
        *self.counts.lock().unwrap().entry(kind).or_insert(0) += 1;
    }
    fn next_version(&self) -> String {
        (self.version.fetch_add(1, Ordering::SeqCst) + 1).to_string()
    }
    fn broadcast(&self, kind: &str, pod: &Json) {
        let node = pod["spec"]["nodeName"].as_str().map(str::to_string);
        let line = format!("{}\n", json!({"type": kind, "object": pod}));
        self.watchers.lock().unwrap().retain(|(want, tx)| {
            if want.is_some() && want != &node {
                return true;
            }
            tx.send(line.clone()).is_ok()
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
                let (state, tls, stop) = (Arc::clone(&state), tls.clone(), stop.clone());
                tokio::spawn(async move {
                    let Ok(stream) = tls.accept(tcp).await else {
                        return;
                    };
                    let stop2 = stop.clone();
                    let svc = hyper::service::service_fn(move |req| {
                        let state = Arc::clone(&state);
                        let stop = stop2.clone();
                        async move { Ok::<_, Infallible>(handle(&state, req, stop)) }
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
    pub fn add_pod(&self, mut pod: Json) {
        pod["metadata"]["resourceVersion"] = json!(self.state.next_version());
        let (ns, name) = ns_name(&pod);
        let existed = {
            let mut pods = self.state.pods.lock().unwrap();
            let before = pods.len();
            pods.retain(|p| ns_name(p) != (ns.clone(), name.clone()));
            let existed = pods.len() != before;
            pods.push(pod.clone());
            existed
        };
        self.state
            .broadcast(if existed { "MODIFIED" } else { "ADDED" }, &pod);
    }

    /// Deletes a pod and tells watchers.
    pub fn delete_pod(&self, namespace: &str, name: &str) {
        let gone: Vec<Json> = {
            let mut pods = self.state.pods.lock().unwrap();
            let (gone, keep): (Vec<Json>, Vec<Json>) = pods
                .drain(..)
                .partition(|p| ns_name(p) == (namespace.to_string(), name.to_string()));
            *pods = keep;
            gone
        };
        for mut p in gone {
            p["metadata"]["resourceVersion"] = json!(self.state.next_version());
            self.state.broadcast("DELETED", &p);
        }
    }

    /// Adds a namespace.
    pub fn add_namespace(&self, ns: Json) {
        let name = ns["metadata"]["name"].as_str().unwrap_or("").to_string();
        self.state.namespaces.lock().unwrap().insert(name, ns);
    }

    /// Accepts only `token` from now on (and writes it to the token file when `write`).
    pub fn set_token(&self, token: &str, write: bool) {
        *self.state.token.lock().unwrap() = token.to_string();
        if write {
            std::fs::write(&self.token_file, token).unwrap();
        }
    }

    /// Requests seen of one kind: `get_pod`, `get_namespace`, `list`, `watch`, `kubelet_pods`,
    /// `unauthorized`.
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

    /// Stops listening and closes every connection (watches end).
    pub fn stop(&self) {
        self.stop.cancel();
        self.state.watchers.lock().unwrap().clear();
    }

    /// Listens again on the same port.
    pub async fn restart(&mut self) {
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if tries < 50 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
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

fn status(code: u16, reason: &str, message: &str) -> Response<Body> {
    full(
        StatusCode::from_u16(code).unwrap(),
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason, "code": code}),
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

fn handle(state: &Arc<State>, req: Request<Incoming>, stop: CancellationToken) -> Response<Body> {
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if auth != format!("Bearer {}", state.token.lock().unwrap()) {
        state.count("unauthorized");
        return status(401, "Unauthorized", "Unauthorized");
    }
    let path = req.uri().path().to_string();
    let q = query(&req);
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["api", "v1", "namespaces", ns, "pods", name] => {
            state.count("get_pod");
            let pods = state.pods.lock().unwrap();
            match pods
                .iter()
                .find(|p| ns_name(p) == (ns.to_string(), name.to_string()))
            {
                Some(p) => full(StatusCode::OK, p.clone()),
                None => status(404, "NotFound", &format!("pods \"{name}\" not found")),
            }
        }
        ["api", "v1", "namespaces", ns] => {
            state.count("get_namespace");
            match state.namespaces.lock().unwrap().get(*ns) {
                Some(n) => full(StatusCode::OK, n.clone()),
                None => status(404, "NotFound", &format!("namespaces \"{ns}\" not found")),
            }
        }
        ["pods"] => {
            state.count("kubelet_pods");
            let items = state.pods.lock().unwrap().clone();
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
            let on_node = |p: &Json| {
                node.as_deref()
                    .is_none_or(|n| p["spec"]["nodeName"].as_str() == Some(n))
            };
            if q.get("watch").is_some_and(|w| w == "true" || w == "1") {
                state.count("watch");
                let (tx, rx) = mpsc::unbounded_channel::<String>();
                state.watchers.lock().unwrap().push((node, tx));
                let stream = futures::stream::unfold((rx, stop), |(mut rx, stop)| async move {
                    tokio::select! {
                        _ = stop.cancelled() => None,
                        got = rx.recv() => got.map(|line| (Ok::<_, Infallible>(Frame::data(Bytes::from(line))), (rx, stop))),
                    }
                });
                Response::builder()
                    .status(StatusCode::OK)
                    .header("content-type", "application/json")
                    .body(BodyExt::boxed(StreamBody::new(stream)))
                    .unwrap()
            } else {
                state.count("list");
                let items: Vec<Json> = state
                    .pods
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|p| on_node(p))
                    .cloned()
                    .collect();
                let rv = state.version.load(Ordering::SeqCst).to_string();
                full(
                    StatusCode::OK,
                    json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": rv}, "items": items}),
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
