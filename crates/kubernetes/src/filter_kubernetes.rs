//! The `kubernetes` filter (Fluent Bit's `filter_kubernetes`).
//!
//! Per chunk (all records of a chunk share a tag): read pod identity from the tag, find the pod's
//! metadata (cache → preload file → one GET, waiting at most [`crate::api::LOOKUP_WAIT`]), then per record
//! apply `K8S-Logging.Exclude`, `Merge_Log` (the pod's suggested parser, else `Merge_Parser`,
//! else JSON — exclusive, as Fluent Bit documents; a parser chosen by annotation or
//! `Merge_Parser` sets the record time from the parsed time) and add the `kubernetes` map.
//! A record whose pod cannot be found goes on without metadata, counted.
//!
//! The API server sees one watch of this node's pods (when `NODE_NAME` is set, as the downward
//! API provides it in a DaemonSet) and at most one GET per pod the watch has not shown, never one
//! per record; failures back off per pod.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use logferry_core::config::{ConfigError, Entry, Section};
use logferry_core::{Map, Record, Str, Value};
use logferry_engine::{BuildContext, CancellationToken, Filter, FilterPlugin};
use logferry_parsers::{Parser, Parsers};

use crate::api::{ApiAccess, ApiSettings, TokenSource};
use crate::cache::{Cache, Lookup};
use crate::config::KubeOptions;
use crate::meta::{tag_only_map, MetaShape, PodMeta};
use crate::tag::{PodRef, TagReader};

/// The registry entry.
pub static PLUGIN: FilterPlugin = FilterPlugin {
    name: "kubernetes",
    aliases: &[],
    description: "Filter to append Kubernetes metadata",
    options: KubeOptions::OPTIONS,
    default_workers: 1,
    build,
};

/// Counters of the filter, registered with the engine's metrics so the HTTP server exports
/// them as `logferry_kubernetes_*_total{name=<instance>}`.
#[derive(Debug)]
pub struct KubeStats {
    /// Records that went on without metadata because it could not be had in time.
    pub records_without_metadata: Arc<AtomicU64>,
    /// Records dropped by a `fluentbit.io/exclude` annotation.
    pub records_excluded: Arc<AtomicU64>,
}

fn build(
    ctx: &BuildContext,
    section: &Section,
    entries: &[&Entry],
) -> Result<Box<dyn Filter>, ConfigError> {
    let o = KubeOptions::from_entries(&section.span, entries, &[])?;
    let span_of = |key: &str| {
        section
            .get(key)
            .map(|e| e.span.clone())
            .unwrap_or_else(|| section.span.clone())
    };
    let tags = match &o.regex_parser {
        Some(name) => TagReader::Parser {
            prefix: o.kube_tag_prefix.clone(),
            parser: ctx.parsers.get(name).ok_or_else(|| {
                ConfigError::key(
                    &span_of("regex_parser"),
                    "Regex_Parser",
                    format!("unknown parser '{name}'"),
                )
            })?,
        },
        None => TagReader::default_for(&o.kube_tag_prefix)
            .map_err(|e| ConfigError::key(&section.span, "Kube_Tag_Prefix", e.to_string()))?,
    };
    let merge_parser = match &o.merge_parser {
        Some(name) => Some(ctx.parsers.get(name).ok_or_else(|| {
            ConfigError::key(
                &span_of("merge_parser"),
                "Merge_Parser",
                format!("unknown parser '{name}'"),
            )
        })?),
        None => None,
    };
    let api_url = if o.use_kubelet {
        format!("https://{}:{}", o.kubelet_host, o.kubelet_port)
    } else {
        in_cluster_url(&o.kube_url)
    };
    let settings = ApiSettings {
        url: api_url,
        ca_file: Some(PathBuf::from(&o.kube_ca_file)),
        ca_path: o.kube_ca_path.as_deref().map(PathBuf::from),
        verify: o.tls_verify,
        token: match &o.kube_token_command {
            Some(c) if !c.trim().is_empty() => TokenSource::Command(c.clone()),
            _ if o.kube_token_file.trim().is_empty() => TokenSource::None,
            _ => TokenSource::File(PathBuf::from(&o.kube_token_file)),
        },
        token_ttl: o.kube_token_ttl.max(Duration::from_secs(1)),
    };
    let api = if o.dummy_meta || o.use_tag_for_meta {
        None
    } else {
        let requests = ctx.metrics.register(
            "kubernetes_api_requests",
            "Requests sent to the Kubernetes API server or kubelet.",
        );
        Some(Arc::new(ApiAccess::new(&settings, requests).map_err(
            |e| {
                let key = if o.use_kubelet {
                    "Kubelet_Host"
                } else {
                    "Kube_URL"
                };
                ConfigError::key(&span_of(key), key, e.to_string())
            },
        )?))
    };
    Ok(Box::new(Kubernetes {
        tags,
        merge_parser,
        parsers: Arc::clone(&ctx.parsers),
        cache: Cache::new(o.kube_meta_cache_ttl),
        api,
        preload: o
            .kube_meta_preload_cache_dir
            .as_deref()
            .filter(|d| !d.is_empty())
            .map(PathBuf::from),
        shape: MetaShape {
            labels: o.labels,
            annotations: o.annotations,
            owner_references: o.owner_references,
        },
        watch_started: false,
        stop: CancellationToken::new(),
        by_tag: HashMap::new(),
        namespaces: HashMap::new(),
        stats: Arc::new(KubeStats {
            records_without_metadata: ctx.metrics.register(
                "kubernetes_records_without_metadata",
                "Records that went on without pod metadata because it could not be had in time.",
            ),
            records_excluded: ctx.metrics.register(
                "kubernetes_records_excluded",
                "Records dropped by a fluentbit.io/exclude annotation.",
            ),
        }),
        o,
    }))
}

/// `KUBERNETES_SERVICE_HOST`/`_PORT` replace the in-cluster default URL, as for any in-cluster
/// client.
fn in_cluster_url(configured: &str) -> String {
    let default = configured.starts_with("https://kubernetes.default.svc");
    match (
        default,
        std::env::var("KUBERNETES_SERVICE_HOST"),
        std::env::var("KUBERNETES_SERVICE_PORT"),
    ) {
        (true, Ok(h), Ok(p)) if !h.is_empty() => {
            if h.contains(':') {
                format!("https://[{h}]:{p}")
            } else {
                format!("https://{h}:{p}")
            }
        }
        _ => configured.to_string(),
    }
}

/// What the filter remembers of one tag.
struct TagState {
    pod: Option<PodRef>,
    /// The metadata the map below was built from.
    meta: Option<Arc<PodMeta>>,
    /// Shared by every record of the tag (a reference count per record, not a copy).
    map: Option<Arc<Map>>,
}

struct Kubernetes {
    o: KubeOptions,
    tags: TagReader,
    merge_parser: Option<Arc<Parser>>,
    parsers: Arc<Parsers>,
    cache: Arc<Cache>,
    api: Option<Arc<ApiAccess>>,
    preload: Option<PathBuf>,
    shape: MetaShape,
    watch_started: bool,
    stop: CancellationToken,
    by_tag: HashMap<String, TagState>,
    namespaces: HashMap<String, (Option<Value>, std::time::Instant)>,
    stats: Arc<KubeStats>,
}

impl Drop for Kubernetes {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Kubernetes {
    /// Starts the node-scoped watch once, on the first chunk (inside the runtime).
    fn start_watch(&mut self) {
        if self.watch_started {
            return;
        }
        self.watch_started = true;
        let Some(api) = &self.api else { return };
        if self.o.use_kubelet {
            return;
        }
        match std::env::var("NODE_NAME") {
            Ok(node) if !node.is_empty() => {
                tracing::info!(node = %node, "kubernetes: watching this node's pods");
                tokio::spawn(crate::api::watch_node(
                    Arc::clone(api),
                    node,
                    Arc::clone(&self.cache),
                    self.stop.clone(),
                ));
            }
            _ => tracing::info!(
                "kubernetes: NODE_NAME is not set; metadata comes from one GET per pod"
            ),
        }
    }

    fn preload(&self, r: &PodRef) -> Option<PodMeta> {
        let dir = self.preload.as_ref()?;
        let path = dir.join(format!("{}-{}.meta", r.namespace, r.pod));
        let text = std::fs::read_to_string(&path).ok()?;
        match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(v) => PodMeta::from_json(&v),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "kubernetes: preload file is not Pod JSON");
                None
            }
        }
    }

    /// Finds metadata for a pod: cache, preload file, then the API (bounded wait).
    async fn lookup(&self, r: &PodRef) -> Option<Arc<PodMeta>> {
        match self.cache.get(&r.namespace, &r.pod) {
            Lookup::Hit(m) => return Some(m),
            Lookup::Backoff => return self.cache.stale(&r.namespace, &r.pod),
            Lookup::Miss => {}
        }
        if let Some(m) = self.preload(r) {
            return Some(self.cache.put(m));
        }
        let api = self.api.as_ref()?;
        let got = if self.o.use_kubelet {
            self.kubelet_pods(api).await;
            return match self.cache.get(&r.namespace, &r.pod) {
                Lookup::Hit(m) => Some(m),
                _ => {
                    self.cache.missing(&r.namespace, &r.pod);
                    None
                }
            };
        } else {
            api.get_pod(&r.namespace, &r.pod).await
        };
        match got {
            Ok(Some(v)) => match PodMeta::from_json(&v) {
                Some(m) => Some(self.cache.put(m)),
                None => {
                    self.cache.missing(&r.namespace, &r.pod);
                    None
                }
            },
            Ok(None) => {
                tracing::debug!(namespace = %r.namespace, pod = %r.pod, "kubernetes: pod not found");
                self.cache.missing(&r.namespace, &r.pod);
                self.cache.stale(&r.namespace, &r.pod)
            }
            Err(e) => {
                tracing::warn!(namespace = %r.namespace, pod = %r.pod, error = %e, "kubernetes: cannot get pod metadata");
                self.cache.missing(&r.namespace, &r.pod);
                self.cache.stale(&r.namespace, &r.pod)
            }
        }
    }

    /// `Use_Kubelet`: one GET of the kubelet's `/pods` fills the cache with every pod on the node.
    async fn kubelet_pods(&self, api: &ApiAccess) {
        match api.get_json("/pods").await {
            Ok(Some(list)) => {
                for p in list
                    .get("items")
                    .and_then(|i| i.as_array())
                    .into_iter()
                    .flatten()
                {
                    if let Some(m) = PodMeta::from_json(p) {
                        self.cache.put(m);
                    }
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "kubernetes: cannot list the kubelet's pods"),
        }
    }

    /// `kubernetes_namespace` for a namespace, cached for `Kube_Meta_Namespace_Cache_TTL`.
    async fn namespace_meta(&mut self, ns: &str) -> Option<Value> {
        if !(self.o.namespace_labels || self.o.namespace_annotations) {
            return None;
        }
        if let Some((v, at)) = self.namespaces.get(ns) {
            if at.elapsed() < self.o.kube_meta_namespace_cache_ttl {
                return v.clone();
            }
        }
        let api = self.api.as_ref()?;
        let v = match api.get_namespace(ns).await {
            Ok(Some(j)) => {
                let md = j.get("metadata");
                let mut m = Map::new();
                m.push("name", ns);
                for (on, key) in [
                    (self.o.namespace_labels, "labels"),
                    (self.o.namespace_annotations, "annotations"),
                ] {
                    if let Some(x) = md.and_then(|md| md.get(key)).filter(|_| on) {
                        m.push(key, Value::from_json(x.clone()));
                    }
                }
                Some(Value::Map(m))
            }
            _ => None,
        };
        self.namespaces
            .insert(ns.to_string(), (v.clone(), std::time::Instant::now()));
        v
    }

    /// Merge_Log for one record; `parser` is the pod's suggestion or `Merge_Parser`.
    fn merge(&self, rec: &mut Record, parser: Option<&Parser>) {
        let Some(Value::Str(log)) = rec.body.get("log") else {
            return;
        };
        let text: &str = if self.o.merge_log_trim {
            log.trim_end_matches(['\n', '\r'])
        } else {
            log.as_str()
        };
        let (fields, time) = match parser {
            Some(p) => match p.parse(text) {
                Some(parsed) => (parsed.body, parsed.time),
                None => return,
            },
            None => {
                let t = text.trim_start();
                if !t.starts_with('{') {
                    return;
                }
                match serde_json::from_str::<Map>(t) {
                    Ok(m) => (m, None),
                    Err(_) => return,
                }
            }
        };
        let mut fields = fields;
        // An application's own `kubernetes` key never overwrites the metadata.
        fields.remove("kubernetes");
        if self.o.merge_log_trim {
            for (_, v) in fields.0.iter_mut() {
                if let Value::Str(s) = v {
                    let trimmed = s.trim_end_matches(['\n', '\r']);
                    if trimmed.len() != s.len() {
                        *s = Str::from(trimmed);
                    }
                }
            }
        }
        if let Some(t) = time {
            rec.time = t;
        }
        match self.o.merge_log_key.as_deref().filter(|k| !k.is_empty()) {
            Some(k) => rec.body.insert(k, Value::Map(fields)),
            None => {
                for (k, v) in fields.0 {
                    rec.body.insert(k, v);
                }
            }
        }
        if !self.o.keep_log {
            rec.body.remove("log");
        }
    }
}

/// Remembers a per-stream answer within one chunk: records carry `stdout`, `stderr` or no
/// stream, so the annotation lookups (several formatted keys each) run at most a few times.
struct StreamMemo<T> {
    seen: Vec<(Option<Str>, T)>,
}

impl<T> Default for StreamMemo<T> {
    fn default() -> Self {
        StreamMemo { seen: Vec::new() }
    }
}

impl<T> StreamMemo<T> {
    fn get(&mut self, stream: Option<&str>, compute: impl FnOnce(Option<&str>) -> T) -> &T {
        let i = match self.seen.iter().position(|(s, _)| s.as_deref() == stream) {
            Some(i) => i,
            None => {
                let v = compute(stream);
                self.seen.push((stream.map(Str::from), v));
                self.seen.len() - 1
            }
        };
        &self.seen[i].1
    }
}

fn is_true(v: &str) -> bool {
    v.trim().eq_ignore_ascii_case("true")
}

#[async_trait]
impl Filter for Kubernetes {
    async fn filter(&mut self, tag: &str, records: &mut Vec<Record>) {
        self.start_watch();
        if !self.by_tag.contains_key(tag) {
            let pod = self.tags.read(tag);
            self.by_tag.insert(
                tag.to_string(),
                TagState {
                    pod,
                    meta: None,
                    map: None,
                },
            );
        }
        let Some(pod) = self.by_tag.get(tag).and_then(|s| s.pod.clone()) else {
            return;
        };
        let meta = if self.o.dummy_meta || self.o.use_tag_for_meta {
            None
        } else {
            self.lookup(&pod).await
        };
        let ns_meta = if self.o.namespace_labels || self.o.namespace_annotations {
            self.namespace_meta(&pod.namespace).await
        } else {
            None
        };
        // Rebuild the map only when the metadata changed.
        let state = self.by_tag.get_mut(tag);
        let map: Option<Arc<Map>> = match (state, &meta) {
            (Some(st), Some(m)) => {
                let same = st.meta.as_ref().is_some_and(|old| Arc::ptr_eq(old, m));
                if !same || st.map.is_none() {
                    st.meta = Some(Arc::clone(m));
                    st.map = Some(Arc::new(m.kubernetes_map(&pod, self.shape)));
                }
                st.map.clone()
            }
            _ if self.o.dummy_meta || self.o.use_tag_for_meta => Some(Arc::new(tag_only_map(&pod))),
            _ => None,
        };
        if map.is_none() && !self.o.namespace_metadata_only {
            self.stats
                .records_without_metadata
                .fetch_add(records.len() as u64, Ordering::Relaxed);
            tracing::debug!(namespace = %pod.namespace, pod = %pod.pod, records = records.len(), "kubernetes: records go on without metadata");
        }
        let annotations = meta.as_deref();
        if self.o.k8s_logging_exclude {
            if let Some(m) = annotations {
                let before = records.len();
                // The answer depends on the stream only: ask the annotations once per stream.
                let mut by_stream = StreamMemo::default();
                records.retain(|r| {
                    let stream = r.body.get("stream").and_then(Value::as_str);
                    !*by_stream.get(stream, |s| {
                        m.suggestion("exclude", &pod.container, s)
                            .is_some_and(is_true)
                    })
                });
                self.stats
                    .records_excluded
                    .fetch_add((before - records.len()) as u64, Ordering::Relaxed);
            }
        }
        // The parser depends on the stream only: look it up once per stream, not per record.
        let mut parsers = StreamMemo::default();
        for rec in records.iter_mut() {
            if self.o.merge_log {
                let stream = rec.body.get("stream").and_then(Value::as_str);
                let parser = parsers.get(stream, |stream| {
                    let suggested = if self.o.k8s_logging_parser {
                        annotations
                            .and_then(|m| m.suggestion("parser", &pod.container, stream))
                            .and_then(|name| {
                                let p = self.parsers.get(name.trim());
                                if p.is_none() {
                                    tracing::debug!(
                                        parser = name,
                                        "kubernetes: the pod suggests an unknown parser"
                                    );
                                }
                                p
                            })
                    } else {
                        None
                    };
                    suggested.or_else(|| self.merge_parser.clone())
                });
                self.merge(rec, parser.as_deref());
            }
            if !self.o.namespace_metadata_only {
                if let Some(m) = &map {
                    rec.body
                        .insert("kubernetes", Value::SharedMap(Arc::clone(m)));
                }
            }
            if let Some(ns) = &ns_meta {
                rec.body.insert("kubernetes_namespace", ns.clone());
            }
        }
    }
}
