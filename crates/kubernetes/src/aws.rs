//! EKS pod association (`AWS_Use_Pod_Association`), as Fluent Bit 5.1.1 adds it:
//! `aws_entity_service_name`, `aws_entity_environment` and `aws_entity_name_source` from the
//! pod-to-service map the CloudWatch agent serves (`https://<host>:<port><endpoint>`, mTLS), or
//! from `<AWS_Pod_Service_Preload_Cache_Dir>.map`; `aws_entity_platform` (`eks` when the
//! service account token's issuer is an EKS OIDC URL, else `k8s`, known only when the agent
//! runs in a pod; `Set_Platform` overrides it, as documented); `aws_entity_cluster` from
//! `CLUSTER_NAME`; `aws_entity_workload` (see [`crate::meta`]).
//!
//! The map is a JSON object `{"<pod name>": {"ServiceName": …, "Environment": …,
//! "ServiceNameSource": …}}`; an entry with neither a service name nor an environment is
//! skipped; values over 1,024 bytes (64 for the source) are ignored. It is fetched again every
//! `AWS_Pod_Service_Map_Refresh_Interval` seconds in the background; an entry older than
//! `AWS_Pod_Service_Map_TTL` (when set) is dropped. At most [`MAX_ENTRIES`] are kept.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use logferry_core::{Str, Value};
use logferry_engine::CancellationToken;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use serde_json::Value as Json;

/// Most pods the map keeps.
pub const MAX_ENTRIES: usize = 4096;
const MAX_ATTR: usize = 1024;
const MAX_SOURCE: usize = 64;

/// A pod's service entry.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServiceAttrs {
    pub name: Option<Str>,
    pub environment: Option<Str>,
    pub name_source: Option<Str>,
}

/// Where the map comes from.
#[derive(Clone, Debug)]
pub enum Source {
    /// `<prefix>.map`.
    File(PathBuf),
    /// The CloudWatch agent's endpoint.
    Https {
        url: String,
        ca_file: PathBuf,
        cert_file: PathBuf,
        key_file: PathBuf,
        verify: bool,
    },
}

/// The pod-to-service map, shared with its refresh task.
#[derive(Debug, Default)]
pub struct PodServiceMap {
    entries: Mutex<HashMap<String, (ServiceAttrs, Instant)>>,
    ttl: Option<Duration>,
    /// Bumped on every change, so per-tag maps are rebuilt.
    pub generation: AtomicU64,
}

fn attr(v: &Json, key: &str, max: usize) -> Option<Str> {
    v.get(key)
        .and_then(Json::as_str)
        .filter(|s| s.len() < max && !s.is_empty())
        .map(Str::from)
}

/// Reads the map's JSON; entries with neither a service name nor an environment are skipped.
pub fn parse_map(text: &str) -> Result<Vec<(String, ServiceAttrs)>, serde_json::Error> {
    let v: Json = serde_json::from_str(text)?;
    let mut out = Vec::new();
    for (pod, v) in v.as_object().into_iter().flatten() {
        if !v.is_object() {
            continue;
        }
        let a = ServiceAttrs {
            name: attr(v, "ServiceName", MAX_ATTR),
            environment: attr(v, "Environment", MAX_ATTR),
            name_source: attr(v, "ServiceNameSource", MAX_SOURCE),
        };
        if a.name.is_some() || a.environment.is_some() {
            out.push((pod.clone(), a));
        }
    }
    Ok(out)
}

impl PodServiceMap {
    pub fn new(ttl_secs: u64) -> Arc<Self> {
        Arc::new(PodServiceMap {
            ttl: (ttl_secs > 0).then(|| Duration::from_secs(ttl_secs)),
            ..Default::default()
        })
    }

    fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, (ServiceAttrs, Instant)>) -> R) -> R {
        match self.entries.lock() {
            Ok(mut g) => f(&mut g),
            Err(p) => f(&mut p.into_inner()),
        }
    }

    /// Adds or replaces entries (entries not in `got` stay until their TTL).
    pub fn update(&self, got: Vec<(String, ServiceAttrs)>, now: Instant) {
        let ttl = self.ttl;
        let changed = self.with(|m| {
            let mut changed = false;
            for (pod, a) in got {
                let same = m.get(&pod).is_some_and(|(old, _)| *old == a);
                m.insert(pod, (a, now));
                changed |= !same;
            }
            if let Some(t) = ttl {
                let before = m.len();
                m.retain(|_, (_, at)| now.saturating_duration_since(*at) < t);
                changed |= m.len() != before;
            }
            if m.len() > MAX_ENTRIES {
                let mut by_age: Vec<(Instant, String)> =
                    m.iter().map(|(k, (_, at))| (*at, k.clone())).collect();
                by_age.sort();
                let excess = m.len() - MAX_ENTRIES;
                for (_, k) in by_age.into_iter().take(excess) {
                    m.remove(&k);
                }
                changed = true;
            }
            changed
        });
        if changed {
            self.generation.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A pod's entry.
    pub fn get(&self, pod: &str) -> Option<ServiceAttrs> {
        let ttl = self.ttl;
        self.with(|m| {
            m.get(pod)
                .filter(|(_, at)| ttl.is_none_or(|t| at.elapsed() < t))
                .map(|(a, _)| a.clone())
        })
    }

    /// Reads a local map now (a file, read before the first record as preload files are).
    pub fn load_file(&self, source: &Source) {
        if let Source::File(p) = source {
            match std::fs::read_to_string(p)
                .map_err(|e| e.to_string())
                .and_then(|t| {
                    parse_map(&t).map_err(|e| format!("the pod-to-service map is not JSON: {e}"))
                }) {
                Ok(got) => self.update(got, Instant::now()),
                Err(e) => {
                    tracing::warn!(file = %p.display(), error = %e, "kubernetes: cannot read the pod-to-service map")
                }
            }
        }
    }

    /// Fetches the map once.
    pub async fn fetch(&self, source: &Source) -> Result<usize, String> {
        let text = match source {
            Source::File(p) => tokio::fs::read_to_string(p)
                .await
                .map_err(|e| format!("{}: {e}", p.display()))?,
            Source::Https {
                url,
                ca_file,
                cert_file,
                key_file,
                verify,
            } => fetch_https(url, ca_file, cert_file, key_file, *verify).await?,
        };
        let got =
            parse_map(&text).map_err(|e| format!("the pod-to-service map is not JSON: {e}"))?;
        let n = got.len();
        self.update(got, Instant::now());
        Ok(n)
    }

    /// Fetches the map now and then every `every`, until `stop`.
    pub async fn refresh_loop(
        self: Arc<Self>,
        source: Source,
        every: Duration,
        stop: CancellationToken,
    ) {
        loop {
            match self.fetch(&source).await {
                Ok(n) => tracing::debug!(pods = n, "kubernetes: pod-to-service map updated"),
                Err(e) => {
                    tracing::warn!(error = %e, "kubernetes: cannot fetch the pod-to-service map")
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every.max(Duration::from_secs(1))) => {}
            }
        }
    }
}

async fn fetch_https(
    url: &str,
    ca_file: &std::path::Path,
    cert_file: &std::path::Path,
    key_file: &std::path::Path,
    verify: bool,
) -> Result<String, String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("invalid URL '{url}': {e}"))?;
    let base = format!(
        "{}://{}",
        uri.scheme_str().unwrap_or("https"),
        uri.authority().map(|a| a.as_str()).unwrap_or("")
    );
    let mut cfg = kube::Config::new(
        base.parse()
            .map_err(|e| format!("invalid URL '{url}': {e}"))?,
    );
    cfg.connect_timeout = Some(Duration::from_secs(5));
    cfg.accept_invalid_certs = !verify;
    cfg.default_retry = false;
    if let Ok(pem) = std::fs::read(ca_file) {
        let roots: Vec<Vec<u8>> = <CertificateDer<'_> as PemObject>::pem_slice_iter(&pem)
            .filter_map(Result::ok)
            .map(|c| c.as_ref().to_vec())
            .collect();
        if !roots.is_empty() {
            cfg.root_cert = Some(roots);
        }
    }
    // mTLS when the client certificate and key are there (the agent's default paths).
    if cert_file.is_file() && key_file.is_file() {
        cfg.auth_info.client_certificate = Some(cert_file.display().to_string());
        cfg.auth_info.client_key = Some(key_file.display().to_string());
    }
    let client = kube::Client::try_from(cfg).map_err(|e| e.to_string())?;
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let req = http::Request::get(path)
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(Duration::from_secs(10), client.request_text(req)).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err("timed out".to_string()),
    }
}

#[cfg(test)]
fn base64(b: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(b.len().div_ceil(3) * 4);
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for ch in s.bytes() {
        let v = match ch {
            b'A'..=b'Z' => ch - b'A',
            b'a'..=b'z' => ch - b'a' + 26,
            b'0'..=b'9' => ch - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// `eks` when the token is a JWT whose issuer (`iss`) holds `oidc.eks.`, else `k8s`.
pub fn platform_of_token(token: &str) -> &'static str {
    let payload = token.trim().split('.').nth(1).and_then(base64_decode);
    let iss = payload
        .and_then(|p| serde_json::from_slice::<Json>(&p).ok())
        .and_then(|j| j.get("iss").and_then(Json::as_str).map(str::to_string));
    match iss {
        Some(i) if i.contains("oidc.eks.") => "eks",
        _ => "k8s",
    }
}

/// The `aws_entity_*` pairs for a pod, in Fluent Bit's order.
pub fn entity_pairs(
    service: Option<&ServiceAttrs>,
    platform: Option<&str>,
    cluster: Option<&str>,
    workload: Option<&str>,
) -> Vec<(Str, Value)> {
    let mut out = Vec::new();
    if let Some(s) = service {
        for (k, v) in [
            ("aws_entity_service_name", &s.name),
            ("aws_entity_environment", &s.environment),
            ("aws_entity_name_source", &s.name_source),
        ] {
            if let Some(v) = v {
                out.push((Str::from(k), Value::Str(v.clone())));
            }
        }
    }
    for (k, v) in [
        ("aws_entity_platform", platform),
        ("aws_entity_cluster", cluster),
        ("aws_entity_workload", workload),
    ] {
        if let Some(v) = v {
            out.push((Str::from(k), Value::from(v)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_entries_as_fluent_bit_reads_them() {
        let got = parse_map(
            r#"{"a": {"ServiceName": "svc", "Environment": "env", "ServiceNameSource": "Instrumentation"},
                "b": {"Environment": "only-env"}, "c": {"Other": 1}, "d": "not a map"}"#,
        )
        .unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].1.environment.as_deref(), Some("only-env"));
        assert!(parse_map("[").is_err());
    }

    #[test]
    fn platform_from_the_token_issuer() {
        let payload = base64(br#"{"iss":"https://oidc.eks.eu-west-1.amazonaws.com/id/ABC"}"#);
        assert_eq!(platform_of_token(&format!("h.{payload}.s")), "eks");
        let payload = base64(br#"{"iss":"https://kubernetes.default.svc"}"#);
        assert_eq!(platform_of_token(&format!("h.{payload}.s")), "k8s");
        assert_eq!(platform_of_token("not a jwt"), "k8s");
    }

    #[test]
    fn ttl_and_generation() {
        let m = PodServiceMap::new(10);
        let t = Instant::now();
        let g0 = m.generation.load(Ordering::Relaxed);
        m.update(
            vec![(
                "p".into(),
                ServiceAttrs {
                    name: Some("s".into()),
                    ..Default::default()
                },
            )],
            t,
        );
        assert!(m.generation.load(Ordering::Relaxed) > g0);
        assert!(m.get("p").is_some());
        m.update(Vec::new(), t + Duration::from_secs(11));
        assert!(m.get("p").is_none(), "dropped after the TTL");
    }
}
