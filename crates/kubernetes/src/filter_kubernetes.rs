//! The `kubernetes` filter (Fluent Bit's `filter_kubernetes`).
//!
//! Per chunk (all records of a chunk share a tag: one container's file): read pod identity
//! from the tag, find the pod's metadata, then per record apply `K8S-Logging.Exclude`,
//! `Merge_Log` ([`crate::merge`]) and add `kubernetes` (and `kubernetes_namespace`) last.
//!
//! **Lookups never stall the node.** The filter runs in the router task, shared by every pod's
//! logs, so it never waits for the API server there:
//! - records of a pod whose metadata is known are enriched at once, whatever the API server
//!   does (a refresh after `Kube_Meta_Cache_TTL` runs in the background);
//! - records of a pod being looked up wait in a queue per container (the chunk's delivery held
//!   open, so their input commits nothing yet), and go on once the answer is in, each as the
//!   chunk it came in ([`Filter::take_ready`]: a pod's whole backlog as one chunk was what one
//!   flush then held as records), checked every
//!   [`logferry_engine::plugin::FILTER_TICK`] — or after [`QUEUE_WAIT`] without metadata, which
//!   is what Fluent Bit does when the API server fails; later chunks of the container queue
//!   behind them, so order is kept;
//! - a queue holds at most half its input's `Mem_Buf_Limit` (at least [`QUEUE_MIN_BYTES`]); past
//!   that its oldest chunks go on at once without metadata (counted in
//!   `logferry_kubernetes_records_without_metadata_total`). Waiting records stay charged to their
//!   input's `Mem_Buf_Limit`, which bounds them all;
//! - lookups run in the background, at most [`MAX_LOOKUPS`] at a time, each bounded by
//!   [`crate::api::REQUEST_TIMEOUT`]; a failed one backs off per pod, and meanwhile that pod's
//!   records go on without metadata at once.
//!
//! The API server sees one watch of this node's pods (when `NODE_NAME` is set, as the downward
//! API provides it in a DaemonSet) and at most one GET per pod the watch has not shown, never one
//! per record. With the watch connected, a lookup first gives it [`WATCH_GRACE`] to show a new
//! pod. `Kube_Meta_Preload_Cache_Dir` files are read before the API (a local file read).

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use logferry_core::config::{ConfigError, Entry, Section};
use logferry_core::{Map, Record, Str, Tag, Value};
use logferry_engine::{
    BuildContext, CancellationToken, Carrier, Filter, FilterPlugin, HeldCharge, Hold, Released,
};
use logferry_parsers::{Parser, Parsers};
use serde_json::Value as Json;
use tokio::sync::Semaphore;

use crate::api::{ApiAccess, ApiSettings, TokenSource, WatchStats};
use crate::aws::{self, PodServiceMap};
use crate::cache::{Cache, Lookup, SWEEP_EVERY};
use crate::config::KubeOptions;
use crate::local::LocalPod;
use crate::merge::{merge_log, put_last, MergeOptions, KUBERNETES, KUBERNETES_NAMESPACE};
use crate::meta::{
    kubernetes_map, local_map, namespace_map, tag_only_map, MetaShape, PodMeta, Properties, Stream,
};
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

/// Longest a record waits for its pod's metadata before going on without it.
pub const QUEUE_WAIT: Duration = Duration::from_secs(3);
/// Most bytes (memory held) waiting per container: half its input's `Mem_Buf_Limit`, and at
/// least this much. A fixed bound of 10,000 records and 8 MiB sent the oldest records of a
/// pod's backlog on without metadata whenever its first lookup took more than ~20 ms, since
/// tail reads up to ~500,000 lines/s (P5 lost it in 3 of 8 runs; 2,125 of its first records in
/// the one checked).
/// Half the limit leaves the input's other files room to flow while one pod is looked up.
pub const QUEUE_MIN_BYTES: usize = 8 * 1024 * 1024;
/// Most lookups in flight at once.
pub const MAX_LOOKUPS: usize = 8;
/// How long a lookup gives a connected watch to show a new pod before a GET.
pub const WATCH_GRACE: Duration = Duration::from_millis(750);
/// A tag's state is dropped once no record came under it for this long (its file is gone).
pub const TAG_IDLE: Duration = Duration::from_secs(600);
/// Most tags remembered (the least recently used go first).
pub const MAX_TAGS: usize = 8192;

/// Counters of the filter, registered with the engine's metrics so the HTTP server exports
/// them as `logferry_kubernetes_*_total{name=<instance>}` (and the cache size as a gauge).
#[derive(Debug)]
pub struct KubeStats {
    /// Records that went on without metadata because it could not be had in time.
    pub records_without_metadata: Arc<AtomicU64>,
    /// Records dropped by a `fluentbit.io/exclude` annotation.
    pub records_excluded: Arc<AtomicU64>,
    /// Records that waited for their pod's metadata.
    pub records_waited: Arc<AtomicU64>,
    /// Tags (log files) with state in `by_tag`.
    pub tags: Arc<AtomicU64>,
}

/// Options Fluent Bit has that logferry accepts and does not apply, and why (said at start and
/// by `--dry-run`).
const NOT_APPLIED: &[(&str, &str)] = &[
    ("Buffer_Size", "accepted but not applied: API responses are always read whole, so a large pod spec never loses its metadata"),
    ("tls.debug", "accepted but not applied: TLS has no debug levels here; use the log level"),
    ("tls.vhost", "accepted but not applied: the host name of Kube_URL is sent as SNI"),
    ("tls.verify_hostname", "accepted but not applied: with tls.verify On the host name is always verified"),
    ("Use_Journal", "accepted but not applied: logferry has no systemd input; records come from tail"),
    ("DNS_Retries", "accepted but not applied: a failed lookup backs off per pod (1 s doubling to 60 s) instead"),
    ("DNS_Wait_Time", "accepted but not applied: a failed lookup backs off per pod (1 s doubling to 60 s) instead"),
    ("AWS_Pod_Association_Host_TLS_Debug", "accepted but not applied: TLS has no debug levels here; use the log level"),
];

fn build(
    ctx: &BuildContext,
    section: &Section,
    entries: &[&Entry],
) -> Result<Box<dyn Filter>, ConfigError> {
    let o = KubeOptions::from_entries(&section.span, entries, &[])?;
    for (key, why) in NOT_APPLIED {
        if let Some(e) = entries
            .iter()
            .rev()
            .find(|e| e.key.eq_ignore_ascii_case(key))
        {
            ctx.note(e, *why);
        }
    }
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
    // Verification is on unless turned off; turning it off is said at start and in --dry-run.
    for (key, on) in [
        ("tls.verify", o.tls_verify),
        (
            "AWS_Pod_Association_Host_TLS_Verify",
            o.aws_pod_association_host_tls_verify,
        ),
    ] {
        if let Some(e) = (!on)
            .then(|| {
                entries
                    .iter()
                    .rev()
                    .find(|e| e.key.eq_ignore_ascii_case(key))
            })
            .flatten()
        {
            ctx.note(
                e,
                "TLS certificate verification is off: anyone on the path can read the token and feed false metadata",
            );
        }
    }
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
    let tag_meta = o.dummy_meta || o.use_tag_for_meta;
    let api = if tag_meta {
        None
    } else {
        let requests = ctx.metrics.register(
            "kubernetes_api_requests",
            "Requests sent to the Kubernetes API server or kubelet.",
        );
        let mut access = ApiAccess::new(&settings, requests).map_err(|e| {
            let key = if o.use_kubelet {
                "Kubelet_Host"
            } else {
                "Kube_URL"
            };
            ConfigError::key(&span_of(key), key, e.to_string())
        })?;
        access.pod_gets = ctx.metrics.register(
            "kubernetes_pod_gets",
            "GETs of single pods sent to the Kubernetes API server.",
        );
        Some(Arc::new(access))
    };
    let shape = MetaShape {
        labels: o.labels,
        annotations: o.annotations,
        owner_references: o.owner_references,
        properties: o.k8s_logging_parser || o.k8s_logging_exclude,
        workload: o.aws_use_pod_association,
    };
    let stats = Arc::new(KubeStats {
        records_without_metadata: ctx.metrics.register(
            "kubernetes_records_without_metadata",
            "Records that went on without pod metadata because it could not be had in time.",
        ),
        records_excluded: ctx.metrics.register(
            "kubernetes_records_excluded",
            "Records dropped by a fluentbit.io/exclude annotation.",
        ),
        records_waited: ctx.metrics.register(
            "kubernetes_records_waited",
            "Records that waited for their pod's metadata to be looked up.",
        ),
        tags: ctx.metrics.register_gauge(
            "kubernetes_tags",
            "Log files (tags) the kubernetes filter keeps a container's state for.",
        ),
    });
    let watch = WatchStats {
        restarts: ctx.metrics.register(
            "kubernetes_watch_restarts",
            "Times the watch of this node's pods was started again.",
        ),
        relists: ctx.metrics.register(
            "kubernetes_relists",
            "Times this node's pods were listed again (the watch's resource version was gone).",
        ),
        synced: Arc::new(AtomicBool::new(false)),
    };
    let cache = Cache::build(
        o.kube_meta_cache_ttl,
        crate::cache::MAX_PODS,
        ctx.metrics.register_gauge(
            "kubernetes_cache_pods",
            "Pods in the kubernetes filter's metadata cache.",
        ),
    );
    let namespaces = Cache::build(
        o.kube_meta_namespace_cache_ttl,
        crate::cache::MAX_PODS,
        Arc::new(AtomicU64::new(0)),
    );
    let local = LocalPod::discover(
        std::path::Path::new(&o.kube_namespace_file),
        std::env::var("HOSTNAME").ok(),
    );
    let aws = if o.aws_use_pod_association {
        let platform = match o.set_platform.as_deref().map(str::trim) {
            Some(p) if !p.is_empty() => Some(p.to_string()),
            // Known only in a pod, from the service account token's issuer.
            _ => local.as_ref().and_then(|_| {
                std::fs::read_to_string(&o.kube_token_file)
                    .ok()
                    .map(|t| aws::platform_of_token(&t).to_string())
            }),
        };
        let source = match o
            .aws_pod_service_preload_cache_dir
            .as_deref()
            .filter(|d| !d.is_empty())
        {
            Some(prefix) => aws::Source::File(PathBuf::from(format!("{prefix}.map"))),
            None => aws::Source::Https {
                url: format!(
                    "https://{}:{}{}",
                    o.aws_pod_association_host,
                    o.aws_pod_association_port,
                    o.aws_pod_association_endpoint
                ),
                ca_file: PathBuf::from(&o.aws_pod_association_host_server_ca_file),
                cert_file: PathBuf::from(&o.aws_pod_association_host_client_cert_file),
                key_file: PathBuf::from(&o.aws_pod_association_host_client_key_file),
                verify: o.aws_pod_association_host_tls_verify,
            },
        };
        let map = PodServiceMap::new(o.aws_pod_service_map_ttl);
        map.load_file(&source);
        Some(AwsState {
            map,
            source,
            every: Duration::from_secs(o.aws_pod_service_map_refresh_interval),
            platform,
            cluster: std::env::var("CLUSTER_NAME").ok().filter(|c| !c.is_empty()),
        })
    } else {
        None
    };
    let shared = Arc::new(Shared {
        cache,
        namespaces,
        api,
        kubelet: o.use_kubelet,
        shape,
        sem: Arc::new(Semaphore::new(MAX_LOOKUPS)),
        watch,
        kubelet_busy: AtomicBool::new(false),
        ns_labels: o.namespace_labels,
        ns_annotations: o.namespace_annotations,
        background: AtomicBool::new(false),
        stop: CancellationToken::new(),
        instances: std::sync::atomic::AtomicUsize::new(1),
        open_keys: std::sync::Mutex::new(Vec::new()),
    });
    Ok(Box::new(Kubernetes {
        tags,
        merge_parser,
        parsers: Arc::clone(&ctx.parsers),
        merge: MergeOptions {
            key: o
                .merge_log_key
                .as_deref()
                .filter(|k| !k.is_empty())
                .map(Str::from),
            trim: o.merge_log_trim,
            keep_log: o.keep_log,
        },
        preload: o
            .kube_meta_preload_cache_dir
            .as_deref()
            .filter(|d| !d.is_empty())
            .map(PathBuf::from),
        tag_meta,
        shared,
        started: false,
        by_tag: HashMap::new(),
        waiting: HashMap::new(),
        ready: Vec::new(),
        merge_scratch: Vec::new(),
        swept: Instant::now(),
        local,
        local_built: None,
        retired: logferry_engine::retired_tags::Cursor::new(),
        aws,
        stats,
        instance: 0,
        tags_counted: 0,
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

/// What the filter shares with its background lookups.
struct Shared {
    cache: Arc<Cache<PodMeta>>,
    /// `kubernetes_namespace` by namespace name.
    namespaces: Arc<Cache<Map>>,
    api: Option<Arc<ApiAccess>>,
    kubelet: bool,
    shape: MetaShape,
    sem: Arc<Semaphore>,
    watch: WatchStats,
    /// A kubelet `/pods` list is under way: pods pending now wait for it.
    kubelet_busy: AtomicBool,
    ns_labels: bool,
    ns_annotations: bool,
    /// The watch and the pod-to-service refresh run (once for all of the filter's instances).
    background: AtomicBool,
    /// Stops them when the last instance and lookup are gone.
    stop: CancellationToken,
    /// Instances of the filter ([`Filter::fork`]).
    instances: std::sync::atomic::AtomicUsize,
    /// The pod keys each instance has tags of, as of its last sweep that published them.
    open_keys: std::sync::Mutex<Vec<std::collections::HashSet<String>>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// EKS pod association.
#[derive(Clone)]
struct AwsState {
    map: Arc<PodServiceMap>,
    source: aws::Source,
    every: Duration,
    platform: Option<String>,
    cluster: Option<String>,
}

/// The `kubernetes` map and annotation properties built for a container, and what they were
/// built from.
struct Built {
    meta: Option<Arc<PodMeta>>,
    tag_only: bool,
    aws_generation: u64,
    map: Arc<Map>,
    props: Properties,
}

/// What the filter remembers of one tag.
struct TagState {
    pod: Option<PodRef>,
    key: String,
    used: Instant,
    built: Option<Built>,
}

/// Records of one chunk waiting for their pod's metadata, with a share of that chunk's
/// delivery.
struct Segment {
    records: Vec<Record>,
    bytes: usize,
    hold: Option<Hold>,
    /// The chunk's `Mem_Buf_Limit` charge: what the records grow by here is charged to it.
    charge: Option<HeldCharge>,
    arrived: Instant,
}

/// A container's waiting records, oldest first.
#[derive(Default)]
struct Waiting {
    segments: VecDeque<Segment>,
    bytes: usize,
}

impl Waiting {
    fn pop(&mut self) -> Option<Segment> {
        let s = self.segments.pop_front()?;
        self.bytes -= s.bytes;
        Some(s)
    }
}

/// The pod part of an answer.
enum PodAnswer {
    Meta(Arc<PodMeta>),
    /// The kubelet does not list the pod: the tag's names only (Fluent Bit).
    TagOnly,
    None,
}

/// Whether a container's records can go now, and with what.
enum Resolved {
    Ready { pod: PodAnswer, ns: Option<Value> },
    Wait,
}

struct Kubernetes {
    o: KubeOptions,
    tags: TagReader,
    merge_parser: Option<Arc<Parser>>,
    parsers: Arc<Parsers>,
    merge: MergeOptions,
    preload: Option<PathBuf>,
    /// `Dummy_Meta` / `Use_Tag_For_Meta`: metadata from the tag only.
    tag_meta: bool,
    shared: Arc<Shared>,
    started: bool,
    by_tag: HashMap<Tag, TagState>,
    waiting: HashMap<Tag, Waiting>,
    /// Waiting chunks whose metadata came in with a later chunk, processed, for the router to
    /// send on before that chunk ([`Filter::take_ready`]).
    ready: Vec<Released>,
    /// `Merge_Log`'s pairs on their way into each record, one buffer for all of them.
    merge_scratch: Vec<(Str, Value)>,
    swept: Instant,
    local: Option<LocalPod>,
    /// The agent's own pod's map, with the metadata and pod-to-service map generation it was
    /// built from.
    local_built: Option<(Arc<PodMeta>, u64, Arc<Map>)>,
    /// Tags whose files tail closed: their state goes at the next sweep.
    retired: logferry_engine::retired_tags::Cursor,
    aws: Option<AwsState>,
    stats: Arc<KubeStats>,
    /// This instance's number among the filter's instances (0: the one built from the config).
    instance: usize,
    /// Its share of the `tags` gauge.
    tags_counted: u64,
}

/// Reads a preload file; `None` when absent or not JSON (then the API is asked).
fn read_json(path: &std::path::Path) -> Option<Json> {
    let text = std::fs::read_to_string(path).ok()?;
    match serde_json::from_str::<Json>(&text) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "kubernetes: preload file is not JSON");
            None
        }
    }
}

impl Shared {
    /// Looks a pod up in the background: the watch first (when connected), then a GET.
    fn spawn_pod_lookup(
        self: &Arc<Self>,
        key: String,
        namespace: String,
        pod: String,
        grace: bool,
    ) {
        if self.kubelet {
            self.spawn_kubelet_list();
            return;
        }
        let Some(api) = self.api.clone() else {
            self.cache.fail(&key, false, Instant::now());
            return;
        };
        let me = Arc::clone(self);
        tokio::spawn(async move {
            if grace && me.watch.synced.load(Ordering::Relaxed) {
                let until = Instant::now() + WATCH_GRACE;
                while Instant::now() < until {
                    tokio::time::sleep(Duration::from_millis(25)).await;
                    if !me.cache.is_pending(&key) {
                        return;
                    }
                }
            }
            let permit = tokio::time::timeout(crate::api::REQUEST_TIMEOUT, me.sem.acquire()).await;
            let Ok(Ok(_permit)) = permit else {
                me.cache.fail(&key, false, Instant::now());
                return;
            };
            match api.get_pod(&namespace, &pod).await {
                Ok(Some(v)) => {
                    me.cache
                        .put(&key, PodMeta::from_json(&v, &pod, me.shape), Instant::now());
                }
                Ok(None) => {
                    tracing::debug!(namespace = %namespace, pod = %pod, "kubernetes: pod not found");
                    me.cache.fail(&key, false, Instant::now());
                }
                Err(e) => {
                    tracing::warn!(namespace = %namespace, pod = %pod, error = %e, "kubernetes: cannot get pod metadata");
                    me.cache.fail(&key, false, Instant::now());
                }
            }
        });
    }

    /// `Use_Kubelet`: one GET of the kubelet's `/pods` answers every pending pod; one at a time.
    fn spawn_kubelet_list(self: &Arc<Self>) {
        let Some(api) = self.api.clone() else { return };
        if self.kubelet_busy.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let got = api.get_json("/pods").await;
            let now = Instant::now();
            let tag_only = match got {
                Ok(Some(list)) => {
                    for item in list
                        .get("items")
                        .and_then(Json::as_array)
                        .into_iter()
                        .flatten()
                    {
                        let md = item.get("metadata");
                        let name = md.and_then(|m| m.get("name")).and_then(Json::as_str);
                        let ns = md.and_then(|m| m.get("namespace")).and_then(Json::as_str);
                        if let (Some(name), Some(ns)) = (name, ns) {
                            let meta = PodMeta::from_json(item, name, me.shape);
                            me.cache.put(&format!("{ns}/{name}"), meta, now);
                        }
                    }
                    true
                }
                Ok(None) => false,
                Err(e) => {
                    tracing::warn!(error = %e, "kubernetes: cannot list the kubelet's pods");
                    false
                }
            };
            // Pods the list does not hold get the tag's names, as in Fluent Bit.
            for key in me.cache.pending_keys() {
                me.cache.fail(&key, tag_only, now);
            }
            me.kubelet_busy.store(false, Ordering::Release);
        });
    }

    /// Looks a namespace up in the background (always the API server, as in Fluent Bit).
    fn spawn_namespace_lookup(self: &Arc<Self>, namespace: String) {
        let Some(api) = self.api.clone() else {
            self.namespaces.fail(&namespace, false, Instant::now());
            return;
        };
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let permit = tokio::time::timeout(crate::api::REQUEST_TIMEOUT, me.sem.acquire()).await;
            let Ok(Ok(_permit)) = permit else {
                me.namespaces.fail(&namespace, false, Instant::now());
                return;
            };
            match api.get_namespace(&namespace).await {
                Ok(Some(j)) => {
                    let m = namespace_map(&namespace, &j, me.ns_labels, me.ns_annotations);
                    me.namespaces.put(&namespace, m, Instant::now());
                }
                Ok(None) => me.namespaces.fail(&namespace, false, Instant::now()),
                Err(e) => {
                    tracing::warn!(namespace = %namespace, error = %e, "kubernetes: cannot get namespace metadata");
                    me.namespaces.fail(&namespace, false, Instant::now());
                }
            }
        });
    }
}

impl Kubernetes {
    /// Starts, once and inside the runtime: the node's watch, the pod-to-service map's
    /// refresh, and the lookup of the agent's own pod.
    fn start_background(&mut self) {
        if self.started {
            return;
        }
        self.started = true;
        let first = !self.shared.background.swap(true, Ordering::AcqRel);
        if let (true, Some(a)) = (first, &self.aws) {
            tokio::spawn(Arc::clone(&a.map).refresh_loop(
                a.source.clone(),
                a.every,
                self.shared.stop.clone(),
            ));
        }
        if let Some(local) = self.local.clone() {
            tracing::info!(namespace = %local.namespace, pod = %local.pod, "kubernetes: the agent runs in a pod");
            if !self.tag_meta {
                let r = PodRef {
                    namespace: local.namespace.clone(),
                    pod: local.pod.clone(),
                    ..PodRef::default()
                };
                let _ = self.pod_answer(&r, &local.key(), Instant::now());
            }
        }
        let Some(api) = &self.shared.api else { return };
        if self.o.use_kubelet || !first {
            return;
        }
        match std::env::var("NODE_NAME") {
            Ok(node) if !node.is_empty() => {
                tracing::info!(node = %node, "kubernetes: watching this node's pods");
                tokio::spawn(crate::api::watch_node(
                    Arc::clone(api),
                    node,
                    Arc::clone(&self.shared.cache),
                    self.shared.shape,
                    self.shared.watch.clone(),
                    self.shared.stop.clone(),
                ));
            }
            _ => tracing::info!(
                "kubernetes: NODE_NAME is not set; metadata comes from one GET per pod"
            ),
        }
    }

    /// A preload file for the pod, read as Fluent Bit reads `<namespace>_<pod>.meta`: any JSON
    /// object; with `Use_Kubelet` a `/pods` list the pod is looked for in.
    fn preload_pod(&self, r: &PodRef) -> Option<PodMeta> {
        let dir = self.preload.as_ref()?;
        let v = read_json(&dir.join(format!("{}_{}.meta", r.namespace, r.pod)))?;
        let item = if self.o.use_kubelet {
            PodMeta::find_in_list(&v, &r.namespace, &r.pod).unwrap_or(&v)
        } else {
            &v
        };
        Some(PodMeta::from_json(item, &r.pod, self.shared.shape))
    }

    /// The pod's metadata for a chunk: `None` while a lookup it should wait for runs.
    fn pod_answer(&mut self, r: &PodRef, key: &str, now: Instant) -> Option<PodAnswer> {
        let cache = &self.shared.cache;
        match cache.lookup(key, now) {
            Lookup::Hit(m) => {
                if self.o.cache_use_docker_id
                    && !r.docker_id.is_empty()
                    && !m.has_container_id(&r.docker_id)
                    && cache.start_refresh(key)
                {
                    self.refresh(r, key);
                }
                Some(PodAnswer::Meta(m))
            }
            Lookup::Stale(m) => {
                self.refresh(r, key);
                Some(PodAnswer::Meta(m))
            }
            Lookup::Pending(since) => {
                (now.saturating_duration_since(since) >= QUEUE_WAIT).then_some(PodAnswer::None)
            }
            Lookup::Absent { tag_only: true } => Some(PodAnswer::TagOnly),
            Lookup::Absent { tag_only: false } => Some(PodAnswer::None),
            Lookup::Miss => {
                if let Some(m) = self.preload_pod(r) {
                    return Some(PodAnswer::Meta(cache.put(key, m, now)));
                }
                if self.shared.api.is_none() {
                    cache.fail(key, false, now);
                    return Some(PodAnswer::None);
                }
                self.shared.spawn_pod_lookup(
                    key.to_string(),
                    r.namespace.clone(),
                    r.pod.clone(),
                    true,
                );
                None
            }
        }
    }

    /// Refreshes a known pod in the background (its records do not wait).
    fn refresh(&self, r: &PodRef, key: &str) {
        if let Some(m) = self.preload_pod(r) {
            self.shared.cache.put(key, m, Instant::now());
        } else {
            self.shared.spawn_pod_lookup(
                key.to_string(),
                r.namespace.clone(),
                r.pod.clone(),
                false,
            );
        }
    }

    /// `kubernetes_namespace` for a chunk: `Some(None)` when there is none to add, `None`
    /// while a lookup it should wait for runs.
    fn namespace_answer(&mut self, ns: &str, now: Instant) -> Option<Option<Value>> {
        let cache = &self.shared.namespaces;
        let preload = |dir: &PathBuf| {
            read_json(&dir.join(format!("{ns}.namespace_meta"))).map(|j| {
                namespace_map(
                    ns,
                    &j,
                    self.o.namespace_labels,
                    self.o.namespace_annotations,
                )
            })
        };
        match cache.lookup(ns, now) {
            Lookup::Hit(m) => Some(Some(Value::SharedMap(m))),
            Lookup::Stale(m) => {
                match self.preload.as_ref().and_then(preload) {
                    Some(fresh) => {
                        cache.put(ns, fresh, now);
                    }
                    None => self.shared.spawn_namespace_lookup(ns.to_string()),
                }
                Some(Some(Value::SharedMap(m)))
            }
            Lookup::Pending(since) => {
                (now.saturating_duration_since(since) >= QUEUE_WAIT).then_some(None)
            }
            Lookup::Absent { .. } => Some(None),
            Lookup::Miss => {
                if let Some(m) = self.preload.as_ref().and_then(preload) {
                    return Some(Some(Value::SharedMap(cache.put(ns, m, now))));
                }
                self.shared.spawn_namespace_lookup(ns.to_string());
                None
            }
        }
    }

    /// The tag's state, created on first sight; `None` when the tag names no pod.
    fn tag_state(&mut self, tag: &str, now: Instant) -> Option<PodRef> {
        if let Some(st) = self.by_tag.get_mut(tag) {
            st.used = now;
            return st.pod.clone();
        }
        let pod = self.tags.read(tag);
        let key = pod.as_ref().map(PodRef::key).unwrap_or_default();
        self.by_tag.insert(
            Tag::from(tag),
            TagState {
                pod: pod.clone(),
                key,
                used: now,
                built: None,
            },
        );
        self.count_tags();
        pod
    }

    /// Whether a chunk of `tag` (a pod's container) can go now, and with what.
    fn resolve(&mut self, tag: &str, r: &PodRef, now: Instant) -> Resolved {
        let key = self
            .by_tag
            .get(tag)
            .map(|s| s.key.clone())
            .unwrap_or_else(|| r.key());
        let pod = if self.o.namespace_metadata_only {
            Some(PodAnswer::None)
        } else {
            self.pod_answer(r, &key, now)
        };
        let ns = if self.o.namespace_labels || self.o.namespace_annotations {
            self.namespace_answer(&r.namespace, now)
        } else {
            Some(None)
        };
        match (pod, ns) {
            (Some(pod), Some(ns)) => Resolved::Ready { pod, ns },
            _ => Resolved::Wait,
        }
    }

    /// The pod-to-service map's generation (0 without `AWS_Use_Pod_Association`): a built map
    /// is stale once it changes.
    fn aws_generation(&self) -> u64 {
        self.aws
            .as_ref()
            .map_or(0, |a| a.map.generation.load(Ordering::Relaxed))
    }

    /// The `aws_entity_*` pairs of `pod` (none without `AWS_Use_Pod_Association`). Takes the
    /// field, not `self`, so callers may hold a tag's state meanwhile.
    fn aws_pairs(aws: Option<&AwsState>, pod: &str, workload: Option<&str>) -> Vec<(Str, Value)> {
        match aws {
            Some(a) => aws::entity_pairs(
                a.map.get(pod).as_ref(),
                a.platform.as_deref(),
                a.cluster.as_deref(),
                workload,
            ),
            None => Vec::new(),
        }
    }

    /// The map and properties for a container, rebuilt only when what they come from changed.
    fn built(&mut self, tag: &str, r: &PodRef, pod: &PodAnswer) -> Option<(Arc<Map>, Properties)> {
        let (meta, tag_only) = match pod {
            PodAnswer::Meta(m) => (Some(m), false),
            PodAnswer::TagOnly => (None, true),
            PodAnswer::None => return None,
        };
        let generation = self.aws_generation();
        let st = self.by_tag.get_mut(tag)?;
        let same = st.built.as_ref().is_some_and(|b| {
            b.tag_only == tag_only
                && b.aws_generation == generation
                && match (&b.meta, meta) {
                    (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                    (None, None) => true,
                    _ => false,
                }
        });
        if !same {
            let aws_pairs = Self::aws_pairs(
                self.aws.as_ref(),
                &r.pod,
                meta.and_then(|m| m.workload.as_deref()),
            );
            let map = Arc::new(kubernetes_map(r, meta.map(|m| m.as_ref()), &aws_pairs));
            let props = match meta {
                Some(m) if !m.properties.is_empty() => Properties::read(
                    m,
                    &r.container,
                    self.o.k8s_logging_parser,
                    self.o.k8s_logging_exclude,
                    &self.parsers,
                ),
                _ => Properties::default(),
            };
            st.built = Some(Built {
                meta: meta.cloned(),
                tag_only,
                aws_generation: generation,
                map,
                props,
            });
        }
        st.built
            .as_ref()
            .map(|b| (Arc::clone(&b.map), b.props.clone()))
    }

    /// Enriches records as `resolved` says (`Wait`: without metadata, the bound passed).
    fn process(&mut self, tag: &str, r: &PodRef, resolved: &Resolved, records: &mut Vec<Record>) {
        let (built, ns) = match resolved {
            Resolved::Ready { pod, ns } => (self.built(tag, r, pod), ns.clone()),
            Resolved::Wait => (None, None),
        };
        let (map, props) = match built {
            Some((m, p)) => (Some(m), p),
            None => (None, Properties::default()),
        };
        if map.is_none() && !self.o.namespace_metadata_only {
            self.stats
                .records_without_metadata
                .fetch_add(records.len() as u64, Ordering::Relaxed);
            tracing::debug!(namespace = %r.namespace, pod = %r.pod, records = records.len(), "kubernetes: records go on without metadata");
        }
        self.apply(map, &props, ns, records);
    }

    /// Exclusion, `Merge_Log`, then `kubernetes` and `kubernetes_namespace` last.
    fn apply(
        &mut self,
        map: Option<Arc<Map>>,
        props: &Properties,
        ns: Option<Value>,
        records: &mut Vec<Record>,
    ) {
        let stream_of = |r: &Record| Stream::of(r.body.get("stream").and_then(Value::as_str));
        if props.stdout_exclude.is_some() || props.stderr_exclude.is_some() {
            let before = records.len();
            records.retain(|r| !props.excludes(stream_of(r)));
            self.stats
                .records_excluded
                .fetch_add((before - records.len()) as u64, Ordering::Relaxed);
        }
        // The pairs this adds, reserved exactly (with the merged ones, by `merge_log`): a
        // Docker record has room for two (`kubernetes` and a `Merge_Log_Key` map), and letting
        // `push` double a full map keeps up to seven unused pairs (56 bytes each) per record
        // held in memory.
        let extra = usize::from(map.is_some()) + usize::from(ns.is_some());
        for rec in records.iter_mut() {
            if self.o.merge_log {
                let parser = props.parser(stream_of(rec)).cloned();
                merge_log(
                    rec,
                    parser.as_deref(),
                    self.merge_parser.as_deref(),
                    &self.merge,
                    "kubernetes",
                    &mut self.merge_scratch,
                    extra,
                );
            }
            rec.body.0.reserve_exact(extra);
            if let Some(m) = &map {
                put_last(&mut rec.body, KUBERNETES, Value::SharedMap(Arc::clone(m)));
            }
            if let Some(ns) = &ns {
                put_last(&mut rec.body, KUBERNETES_NAMESPACE, ns.clone());
            }
        }
    }

    /// The agent's own log records (`fluentbit_logs`): the agent's pod's map, as Fluent Bit
    /// 5.1.1 adds it whatever their tag. They never wait: while the pod's metadata is not
    /// known (or the agent runs outside a pod) they go on without it.
    fn local_records(&mut self, records: &mut [Record], now: Instant) {
        let Some(local) = &self.local else {
            return;
        };
        let key = local.key();
        let meta = match self.shared.cache.lookup(&key, now) {
            Lookup::Hit(m) | Lookup::Stale(m) => m,
            _ => {
                self.stats
                    .records_without_metadata
                    .fetch_add(records.len() as u64, Ordering::Relaxed);
                return;
            }
        };
        let generation = self.aws_generation();
        let fresh = self
            .local_built
            .as_ref()
            .is_some_and(|(m, g, _)| Arc::ptr_eq(m, &meta) && *g == generation);
        if !fresh {
            let aws_pairs =
                Self::aws_pairs(self.aws.as_ref(), &local.pod, meta.workload.as_deref());
            let map = local_map(&local.namespace, &local.pod, Some(&meta), &aws_pairs);
            self.local_built = Some((Arc::clone(&meta), generation, Arc::new(map)));
        }
        if let Some((_, _, map)) = &self.local_built {
            for rec in records.iter_mut() {
                put_last(&mut rec.body, KUBERNETES, Value::SharedMap(Arc::clone(map)));
            }
        }
    }

    /// Sweeps the caches and forgets idle tags, every [`SWEEP_EVERY`].
    fn housekeeping(&mut self, now: Instant) {
        if now.saturating_duration_since(self.swept) < SWEEP_EVERY {
            return;
        }
        self.swept = now;
        self.shared.cache.sweep(now);
        self.shared.namespaces.sweep(now);
        // Pods whose last file tail closed: their metadata cannot be used again.
        let mut released: Vec<String> = Vec::new();
        for t in self.retired.take() {
            if !self.waiting.contains_key(&t) {
                if let Some(st) = self.by_tag.remove(&t) {
                    if st.pod.is_some() {
                        released.push(st.key);
                    }
                }
            }
        }
        // A pod goes only when no instance has a file of it open. Each instance publishes its
        // open pods here at its sweep when there are others (they may read another file of the
        // same pod); alone, it does so only when it has pods to release.
        if !released.is_empty() || self.shared.instances.load(Ordering::Relaxed) > 1 {
            let open: std::collections::HashSet<String> =
                self.by_tag.values().map(|s| s.key.clone()).collect();
            if let Ok(mut all) = self.shared.open_keys.lock() {
                if all.len() <= self.instance {
                    all.resize_with(self.instance + 1, Default::default);
                }
                all[self.instance] = open;
                for key in &released {
                    if !all.iter().any(|o| o.contains(key)) {
                        self.shared.cache.release(key);
                    }
                }
            }
        }
        let waiting = &self.waiting;
        self.by_tag.retain(|t, s| {
            waiting.contains_key(t) || now.saturating_duration_since(s.used) < TAG_IDLE
        });
        if self.by_tag.len() > MAX_TAGS {
            let mut by_use: Vec<(Instant, Tag)> = self
                .by_tag
                .iter()
                .filter(|(t, _)| !self.waiting.contains_key(*t))
                .map(|(t, s)| (s.used, Arc::clone(t)))
                .collect();
            by_use.sort();
            let excess = self.by_tag.len() - MAX_TAGS;
            for (_, t) in by_use.into_iter().take(excess) {
                self.by_tag.remove(&t);
            }
        }
        self.count_tags();
    }

    /// Brings the `tags` gauge up to date with this instance's share (every instance of the
    /// filter adds its own).
    fn count_tags(&mut self) {
        let now = self.by_tag.len() as u64;
        // The change may be negative: atomic addition wraps, so its two's complement subtracts.
        self.stats
            .tags
            .fetch_add(now.wrapping_sub(self.tags_counted), Ordering::Relaxed);
        self.tags_counted = now;
    }

    /// At shutdown, gives lookups that records wait for the rest of their bound (blocking this
    /// task: the filter has no other way to wait there; only on a multi-threaded runtime, where
    /// the lookups run meanwhile).
    fn await_lookups(&self) {
        let Some(oldest) = self
            .waiting
            .values()
            .filter_map(|w| w.segments.front().map(|s| s.arrived))
            .min()
        else {
            return;
        };
        let deadline = oldest + QUEUE_WAIT;
        let keys: Vec<(String, String)> = self
            .waiting
            .keys()
            .filter_map(|t| self.by_tag.get(t))
            .filter_map(|s| s.pod.as_ref().map(|p| (s.key.clone(), p.namespace.clone())))
            .collect();
        let pending = || {
            keys.iter().any(|(k, ns)| {
                self.shared.cache.is_pending(k) || self.shared.namespaces.is_pending(ns)
            })
        };
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
            return;
        }
        tokio::task::block_in_place(|| {
            while pending() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        });
    }
}

#[async_trait]
impl Filter for Kubernetes {
    async fn filter(&mut self, tag: &str, records: &mut Vec<Record>) {
        let mut carrier = Carrier::new(None, 0);
        self.filter_carried(tag, records, &mut carrier).await;
        // Without a carrier nothing may stay behind: what waits goes on now, and what was
        // ready goes first.
        let mut out: Vec<Record> = std::mem::take(&mut self.ready)
            .into_iter()
            .flat_map(|r| r.records)
            .collect();
        if let Some(w) = self.waiting.remove(tag) {
            let mut waited: Vec<Record> = w.segments.into_iter().flat_map(|s| s.records).collect();
            if let Some(r) = self.by_tag.get(tag).and_then(|s| s.pod.clone()) {
                self.process(tag, &r, &Resolved::Wait, &mut waited);
            }
            out.append(&mut waited);
        }
        if !out.is_empty() {
            out.append(records);
            *records = out;
        }
    }

    async fn filter_carried(
        &mut self,
        tag: &str,
        records: &mut Vec<Record>,
        carrier: &mut Carrier<'_>,
    ) {
        if records.is_empty() {
            return;
        }
        let now = Instant::now();
        self.start_background();
        self.housekeeping(now);
        if carrier.origin() == Some("fluentbit_logs") {
            self.local_records(records, now);
            return;
        }
        let Some(r) = self.tag_state(tag, now) else {
            return;
        };
        if self.tag_meta {
            let map = Arc::new(tag_only_map(&r));
            self.apply(Some(map), &Properties::default(), None, records);
            return;
        }
        let resolved = self.resolve(tag, &r, now);
        match resolved {
            Resolved::Ready { .. } => {
                // Earlier chunks of this container that waited go first, each as the chunk it
                // came in: merged, a pod's first lookup made one chunk of all that the input
                // read meanwhile (11.6 MB in P5), and a flush that large held it all as
                // records while the output started.
                if let Some(w) = self.waiting.remove(tag) {
                    let t = Tag::from(tag);
                    for mut s in w.segments {
                        self.process(tag, &r, &resolved, &mut s.records);
                        self.ready.push(Released {
                            tag: Arc::clone(&t),
                            records: s.records,
                            held: s.hold.into_iter().collect(),
                            restart: false,
                            charge: s.charge,
                        });
                    }
                }
                self.process(tag, &r, &resolved, records);
            }
            Resolved::Wait => {
                let taken = std::mem::take(records);
                let bytes = taken.iter().map(Record::mem_size).sum();
                self.stats
                    .records_waited
                    .fetch_add(taken.len() as u64, Ordering::Relaxed);
                let w = self.waiting.entry(Tag::from(tag)).or_default();
                w.bytes += bytes;
                w.segments.push_back(Segment {
                    records: taken,
                    bytes,
                    hold: carrier.hold(),
                    charge: carrier.charge(bytes),
                    arrived: now,
                });
                // Past the bound, the oldest chunks go on now, without metadata.
                let max = carrier
                    .input_limit()
                    .map_or(QUEUE_MIN_BYTES, |l| (l / 2).max(QUEUE_MIN_BYTES));
                let mut overflow = Vec::new();
                let mut held = Vec::new();
                while w.bytes > max {
                    let Some(s) = w.pop() else { break };
                    overflow.extend(s.records);
                    held.extend(s.hold);
                }
                if w.segments.is_empty() {
                    self.waiting.remove(tag);
                }
                if !overflow.is_empty() {
                    tracing::warn!(namespace = %r.namespace, pod = %r.pod, records = overflow.len(), "kubernetes: too many records wait for this pod's metadata; the oldest go on without it");
                    self.process(tag, &r, &Resolved::Wait, &mut overflow);
                    *records = overflow;
                    carrier.carry(held);
                }
            }
        }
    }

    /// Another instance with the same pod caches, API access, watch and metrics, and no tags
    /// of its own: the router gives each instance the chunks of its own tags. A pod whose
    /// files are read by several instances leaves the cache only when none of them has one
    /// open (each publishes its open pods at its sweep, every [`SWEEP_EVERY`]).
    fn fork(&self) -> Option<Box<dyn Filter>> {
        Some(Box::new(Kubernetes {
            o: self.o.clone(),
            tags: self.tags.clone(),
            merge_parser: self.merge_parser.clone(),
            parsers: Arc::clone(&self.parsers),
            merge: self.merge.clone(),
            preload: self.preload.clone(),
            tag_meta: self.tag_meta,
            shared: Arc::clone(&self.shared),
            started: false,
            by_tag: HashMap::new(),
            waiting: HashMap::new(),
            ready: Vec::new(),
            merge_scratch: Vec::new(),
            swept: Instant::now(),
            local: self.local.clone(),
            local_built: None,
            retired: logferry_engine::retired_tags::Cursor::new(),
            aws: self.aws.clone(),
            stats: Arc::clone(&self.stats),
            instance: self.shared.instances.fetch_add(1, Ordering::Relaxed),
            tags_counted: 0,
        }))
    }

    fn take_ready(&mut self) -> Vec<Released> {
        std::mem::take(&mut self.ready)
    }

    fn flush_due(&mut self, all: bool) -> Vec<Released> {
        let now = Instant::now();
        self.housekeeping(now);
        // Ready ones the router did not take after their chunk (this filter as a processor).
        let mut out = std::mem::take(&mut self.ready);
        if self.waiting.is_empty() {
            return out;
        }
        if all {
            self.await_lookups();
        }
        let now = Instant::now();
        let tags: Vec<Tag> = self.waiting.keys().cloned().collect();
        for tag in tags {
            let Some(r) = self.by_tag.get(&tag).and_then(|s| s.pod.clone()) else {
                continue;
            };
            let resolved = self.resolve(&tag, &r, now);
            let ready = matches!(resolved, Resolved::Ready { .. });
            let Some(w) = self.waiting.get_mut(&tag) else {
                continue;
            };
            let mut segments = Vec::new();
            while w.segments.front().is_some_and(|s| {
                all || ready || now.saturating_duration_since(s.arrived) >= QUEUE_WAIT
            }) {
                if let Some(s) = w.pop() {
                    segments.push(s);
                }
            }
            if w.segments.is_empty() {
                self.waiting.remove(&tag);
            }
            // Each as the chunk it came in (see `filter_carried`).
            for mut s in segments {
                self.process(&tag, &r, &resolved, &mut s.records);
                out.push(Released {
                    tag: Arc::clone(&tag),
                    records: s.records,
                    held: s.hold.into_iter().collect(),
                    restart: false,
                    charge: s.charge,
                });
            }
        }
        out
    }
}
