//! Pod metadata as Fluent Bit adds it under `kubernetes`, read from any JSON object: the API
//! server's Pod, an item of the kubelet's `/pods` list, or a preload file (which may hold `{}`).
//!
//! As in Fluent Bit 5.1.1 (checked on this crate's fixtures, `tests/fixtures/fluent-bit`):
//! - `pod_name`, `namespace_name`, `container_name` and `docker_id` come from the tag, never from
//!   the object; the object only adds what it has;
//! - key order: `pod_name`, `namespace_name`, the `aws_entity_*` keys, `pod_id`, `labels`,
//!   `annotations`, `ownerReferences`, `host`, `pod_ip`, `container_name`, `docker_id`,
//!   `container_hash`, `container_image`;
//! - `pod_id`, `labels`, `annotations`, `ownerReferences`, `host` and `pod_ip` are copied as the
//!   object holds them (an empty `labels: {}` included, a numeric uid stays a number);
//! - `docker_id` (when the tag has none), `container_hash` and `container_image` come from the
//!   container's entry in `status.containerStatuses` or `status.initContainerStatuses`; ids drop
//!   their `scheme://` part (`docker-pullable://nginx@sha256:…` → `nginx@sha256:…`).
//!
//! The cache keeps only what records use: labels, annotations and owner references only when
//! their option is on, the `fluentbit.io/` annotations only when `K8S-Logging.Parser` or
//! `K8S-Logging.Exclude` is on (they apply even with `Annotations Off`, as in Fluent Bit).

use std::sync::Arc;

use logferry_core::{Map, Str, Value};
use logferry_parsers::{Parser, Parsers};
use regex::Regex;
use serde_json::Value as Json;

use crate::tag::PodRef;

/// What the records use of a Pod, from the options: the rest is not kept.
#[derive(Clone, Copy, Debug)]
pub struct MetaShape {
    pub labels: bool,
    pub annotations: bool,
    pub owner_references: bool,
    /// `K8S-Logging.Parser` or `K8S-Logging.Exclude`: keep the `fluentbit.io/` annotations.
    pub properties: bool,
    /// EKS pod association: keep the workload name.
    pub workload: bool,
}

impl Default for MetaShape {
    fn default() -> Self {
        MetaShape {
            labels: true,
            annotations: true,
            owner_references: false,
            properties: false,
            workload: false,
        }
    }
}

/// One container's status, as records use it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ContainerMeta {
    pub name: Str,
    pub docker_id: Option<Str>,
    pub hash: Option<Str>,
    pub image: Option<Str>,
}

/// What the filter keeps of a Pod object.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodMeta {
    /// `pod_id`, `labels`, `annotations`, `ownerReferences`, `host`, `pod_ip`: those the object
    /// has and the options keep, in this order, values as the object holds them.
    pub fields: Vec<(Str, Value)>,
    pub containers: Vec<ContainerMeta>,
    /// The `fluentbit.io/<property>` annotations (property, value), in the Pod's order.
    pub properties: Vec<(Str, Str)>,
    /// The workload (`aws_entity_workload`), with EKS pod association on.
    pub workload: Option<Str>,
}

/// `id` without a `scheme://` prefix, as Fluent Bit's `extract_hash`: the part after the first
/// `:` and the slashes that follow it; the whole id when no slash follows the colon; nothing
/// when there is no colon or nothing after it.
pub fn extract_hash(id: &str) -> Option<&str> {
    if id.len() <= 1 {
        return None;
    }
    let colon = id.find(':')?;
    let rest = &id[colon + 1..];
    let after = rest.trim_start_matches('/');
    let out = if after.len() == rest.len() { id } else { after };
    (!out.is_empty()).then_some(out)
}

/// Fluent Bit's deployment regex: a ReplicaSet named `<deployment>-<pod-template-hash>`.
fn deployment_of(replica_set: &str) -> Option<&str> {
    static RE: std::sync::OnceLock<Option<Regex>> = std::sync::OnceLock::new();
    let re = RE
        .get_or_init(|| {
            Regex::new(r"^(?P<deployment>.+)-(?:[bcdfghjklmnpqrstvwxz2456789]{6,10})$").ok()
        })
        .as_ref()?;
    re.captures(replica_set)
        .and_then(|c| c.name("deployment"))
        .map(|m| m.as_str())
}

/// The workload Fluent Bit reports for EKS pod association: the Deployment of a ReplicaSet
/// owner, else the first owner's name, else the pod's name; none when the object's
/// `metadata.name` is not `pod_name` (a preload file for another pod).
fn workload(md: &Json, pod_name: &str) -> Option<Str> {
    if md.get("name").and_then(Json::as_str) != Some(pod_name) {
        return None;
    }
    let owner = md
        .get("ownerReferences")
        .and_then(|o| o.get(0))
        .filter(|o| o.is_object());
    let Some(owner) = owner else {
        return Some(Str::from(pod_name));
    };
    let kind = owner.get("kind").and_then(Json::as_str);
    let name = owner.get("name").and_then(Json::as_str);
    match (kind, name) {
        (Some("ReplicaSet"), Some(n)) => Some(Str::from(deployment_of(n).unwrap_or(n))),
        (Some(_), Some(n)) => Some(Str::from(n)),
        _ => None,
    }
}

impl PodMeta {
    /// Reads what records use from any JSON object (anything else reads as `{}`). `pod_name` is
    /// the pod the record names (its tag), for the workload.
    pub fn from_json(pod: &Json, pod_name: &str, shape: MetaShape) -> PodMeta {
        let mut out = PodMeta::default();
        let Some(obj) = pod.as_object() else {
            return out;
        };
        let md = obj.get("metadata").filter(|m| m.is_object());
        if let Some(md) = md {
            let keep = [
                ("uid", "pod_id", true),
                ("labels", "labels", shape.labels),
                ("annotations", "annotations", shape.annotations),
                ("ownerReferences", "ownerReferences", shape.owner_references),
            ];
            for (from, to, on) in keep {
                if let Some(v) = md.get(from).filter(|_| on) {
                    out.fields
                        .push((Str::from(to), Value::from_json(v.clone())));
                }
            }
            if shape.properties {
                if let Some(a) = md.get("annotations").and_then(Json::as_object) {
                    for (k, v) in a {
                        let (Some(prop), Some(v)) = (k.strip_prefix("fluentbit.io/"), v.as_str())
                        else {
                            continue;
                        };
                        if !prop.is_empty() {
                            out.properties.push((Str::from(prop), Str::from(v)));
                        }
                    }
                }
            }
            if shape.workload {
                out.workload = workload(md, pod_name);
            }
        }
        if let Some(host) = obj.get("spec").and_then(|s| s.get("nodeName")) {
            out.fields
                .push((Str::from("host"), Value::from_json(host.clone())));
        }
        let status = obj.get("status").and_then(Json::as_object);
        if let Some(ip) = status.and_then(|s| s.get("podIP")) {
            out.fields
                .push((Str::from("pod_ip"), Value::from_json(ip.clone())));
        }
        for (key, list) in status.into_iter().flatten() {
            if key != "containerStatuses" && key != "initContainerStatuses" {
                continue;
            }
            for c in list.as_array().into_iter().flatten() {
                let s = |k: &str| c.get(k).and_then(Json::as_str);
                let Some(name) = s("name") else { continue };
                out.containers.push(ContainerMeta {
                    name: Str::from(name),
                    docker_id: s("containerID").and_then(extract_hash).map(Str::from),
                    hash: s("imageID").and_then(extract_hash).map(Str::from),
                    image: s("image").filter(|i| !i.is_empty()).map(Str::from),
                });
            }
        }
        out
    }

    /// Finds the pod `(namespace, name)` in a kubelet `/pods` list (`items[]`), as Fluent Bit
    /// does with `Use_Kubelet`.
    pub fn find_in_list<'a>(list: &'a Json, namespace: &str, name: &str) -> Option<&'a Json> {
        list.get("items")?.as_array()?.iter().find(|item| {
            let md = item.get("metadata");
            md.and_then(|m| m.get("name")).and_then(Json::as_str) == Some(name)
                && md.and_then(|m| m.get("namespace")).and_then(Json::as_str) == Some(namespace)
        })
    }

    /// Whether a container of this pod runs with id `docker_id` (`Cache_Use_Docker_Id`).
    pub fn has_container_id(&self, docker_id: &str) -> bool {
        self.containers
            .iter()
            .any(|c| c.docker_id.as_deref() == Some(docker_id))
    }

    /// Bytes held beyond the struct itself (for the cache's memory figure).
    pub fn heap_size(&self) -> usize {
        let s = |s: &Str| {
            if s.is_heap_allocated() {
                s.capacity()
            } else {
                0
            }
        };
        self.fields.capacity() * std::mem::size_of::<(Str, Value)>()
            + self
                .fields
                .iter()
                .map(|(k, v)| s(k) + v.heap_size())
                .sum::<usize>()
            + self.containers.capacity() * std::mem::size_of::<ContainerMeta>()
            + self
                .containers
                .iter()
                .map(|c| {
                    s(&c.name)
                        + c.docker_id.as_ref().map_or(0, s)
                        + c.hash.as_ref().map_or(0, s)
                        + c.image.as_ref().map_or(0, s)
                })
                .sum::<usize>()
            + self.properties.capacity() * std::mem::size_of::<(Str, Str)>()
            + self
                .properties
                .iter()
                .map(|(k, v)| s(k) + s(v))
                .sum::<usize>()
            + self.workload.as_ref().map_or(0, s)
    }
}

/// The `kubernetes` map for records of `r`: names from the tag, `aws` (the `aws_entity_*`
/// pairs, already in order) after them, then what `meta` has. Without `meta` (a kubelet list
/// without the pod), the tag's names only.
pub fn kubernetes_map(r: &PodRef, meta: Option<&PodMeta>, aws: &[(Str, Value)]) -> Map {
    let mut m = Map::with_capacity(12 + aws.len());
    m.push("pod_name", r.pod.as_str());
    m.push("namespace_name", r.namespace.as_str());
    m.0.extend(aws.iter().cloned());
    if let Some(meta) = meta {
        m.0.extend(meta.fields.iter().cloned());
    }
    if r.container.is_empty() {
        return m;
    }
    m.push("container_name", r.container.as_str());
    let c = meta.and_then(|m| m.containers.iter().find(|c| c.name == r.container.as_str()));
    match (r.docker_id.as_str(), c.and_then(|c| c.docker_id.as_deref())) {
        ("", Some(id)) => m.push("docker_id", id),
        ("", None) => {}
        (id, _) => m.push("docker_id", id),
    }
    match (r.container_hash.as_str(), c.and_then(|c| c.hash.as_deref())) {
        ("", Some(h)) => m.push("container_hash", h),
        ("", None) => {}
        (h, _) => m.push("container_hash", h),
    }
    if let Some(i) = c.and_then(|c| c.image.as_deref()) {
        m.push("container_image", i);
    }
    m
}

/// The map of the agent's own pod (its own logs): no container.
pub fn local_map(namespace: &str, pod: &str, meta: Option<&PodMeta>, aws: &[(Str, Value)]) -> Map {
    let r = PodRef {
        namespace: namespace.to_string(),
        pod: pod.to_string(),
        ..PodRef::default()
    };
    kubernetes_map(&r, meta, aws)
}

/// The map added from the tag alone (`Use_Tag_For_Meta`, `Dummy_Meta`).
pub fn tag_only_map(r: &PodRef) -> Map {
    let mut m = Map::with_capacity(4);
    m.push("pod_name", r.pod.as_str());
    m.push("namespace_name", r.namespace.as_str());
    m.push("container_name", r.container.as_str());
    if !r.docker_id.is_empty() {
        m.push("docker_id", r.docker_id.as_str());
    }
    m
}

/// `kubernetes_namespace`: the namespace's name from the tag, then its `labels` and
/// `annotations` as the Namespace object holds them (each when its option is on).
pub fn namespace_map(namespace: &str, object: &Json, labels: bool, annotations: bool) -> Map {
    let mut m = Map::with_capacity(3);
    m.push("name", namespace);
    let md = object.get("metadata").filter(|m| m.is_object());
    for (on, key) in [(labels, "labels"), (annotations, "annotations")] {
        if let Some(v) = md.and_then(|md| md.get(key)).filter(|_| on) {
            m.push(key, Value::from_json(v.clone()));
        }
    }
    m
}

/// What the `fluentbit.io/parser*` and `fluentbit.io/exclude*` annotations say for one
/// container, per stream.
#[derive(Clone, Debug, Default)]
pub struct Properties {
    pub stdout_parser: Option<Arc<Parser>>,
    pub stderr_parser: Option<Arc<Parser>>,
    pub stdout_exclude: Option<bool>,
    pub stderr_exclude: Option<bool>,
}

/// A record's stream, as Fluent Bit tells them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
    /// No `stream` key, or another value.
    Other,
}

impl Stream {
    pub fn of(v: Option<&str>) -> Stream {
        match v {
            Some("stdout") => Stream::Stdout,
            Some("stderr") => Stream::Stderr,
            _ => Stream::Other,
        }
    }
}

impl Properties {
    /// Reads the annotations in the Pod's order, as Fluent Bit 5.1.1's `flb_kube_prop_set`:
    /// `<property>[_stdout|_stderr][-<container>]`; a container-specific annotation overrides,
    /// a general one applies only to a stream nothing set yet; a parser that does not exist,
    /// or a property whose option is off, is skipped (with a warning). `exclude` is true for
    /// `true`, `on` or `yes` (any case).
    pub fn read(
        meta: &PodMeta,
        container: &str,
        allow_parser: bool,
        allow_exclude: bool,
        parsers: &Parsers,
    ) -> Properties {
        let mut p = Properties::default();
        for (key, value) in &meta.properties {
            let Some((is_parser, stream, target)) = split_property(key) else {
                tracing::warn!(annotation = %format!("fluentbit.io/{key}"), "kubernetes: invalid or unknown annotation");
                continue;
            };
            if target.is_some_and(|t| t != container) {
                continue;
            }
            let specific = target.is_some();
            let (out, err) = (
                matches!(stream, Stream::Other | Stream::Stdout),
                matches!(stream, Stream::Other | Stream::Stderr),
            );
            if is_parser {
                if !allow_parser {
                    tracing::warn!("kubernetes: annotation 'fluentbit.io/parser' not allowed (K8S-Logging.Parser Off)");
                    continue;
                }
                let Some(parser) = parsers.get(value.trim()) else {
                    tracing::warn!(parser = %value, container, "kubernetes: annotation parser not found");
                    continue;
                };
                if out && (specific || p.stdout_parser.is_none()) {
                    p.stdout_parser = Some(Arc::clone(&parser));
                }
                if err && (specific || p.stderr_parser.is_none()) {
                    p.stderr_parser = Some(parser);
                }
            } else {
                if !allow_exclude {
                    tracing::warn!("kubernetes: annotation 'fluentbit.io/exclude' not allowed (K8S-Logging.Exclude Off)");
                    continue;
                }
                let v = value.trim();
                let on = ["true", "on", "yes"]
                    .iter()
                    .any(|t| v.eq_ignore_ascii_case(t));
                if out && (specific || p.stdout_exclude.is_none()) {
                    p.stdout_exclude = Some(on);
                }
                if err && (specific || p.stderr_exclude.is_none()) {
                    p.stderr_exclude = Some(on);
                }
            }
        }
        p
    }

    /// Whether records of `stream` are dropped. A record of no known stream is dropped only when
    /// both streams are.
    pub fn excludes(&self, stream: Stream) -> bool {
        match stream {
            Stream::Stdout => self.stdout_exclude == Some(true),
            Stream::Stderr => self.stderr_exclude == Some(true),
            Stream::Other => self.stdout_exclude == Some(true) && self.stderr_exclude == Some(true),
        }
    }

    /// The parser the pod suggests for `stream`. A record of no known stream gets none (Fluent
    /// Bit compares the two streams' parsers by address, which never match).
    pub fn parser(&self, stream: Stream) -> Option<&Arc<Parser>> {
        match stream {
            Stream::Stdout => self.stdout_parser.as_ref(),
            Stream::Stderr => self.stderr_parser.as_ref(),
            Stream::Other => None,
        }
    }

    /// Whether any property is set.
    pub fn is_empty(&self) -> bool {
        self.stdout_parser.is_none()
            && self.stderr_parser.is_none()
            && self.stdout_exclude.is_none()
            && self.stderr_exclude.is_none()
    }
}

/// `parser_stderr-api` → (parser, stderr, Some("api")); `None` when it is not one.
fn split_property(key: &str) -> Option<(bool, Stream, Option<&str>)> {
    let (is_parser, mut rest) = if let Some(r) = key.strip_prefix("parser") {
        (true, r)
    } else if let Some(r) = key.strip_prefix("exclude") {
        (false, r)
    } else {
        return None;
    };
    let mut stream = Stream::Other;
    if let Some(r) = rest.strip_prefix('_') {
        if let Some(r) = r.strip_prefix("stdout") {
            stream = Stream::Stdout;
            rest = r;
        } else if let Some(r) = r.strip_prefix("stderr") {
            stream = Stream::Stderr;
            rest = r;
        } else {
            return None;
        }
    }
    let mut target = None;
    if let Some(r) = rest.strip_prefix('-') {
        if r.is_empty() {
            return None;
        }
        target = Some(r);
        rest = "";
    }
    rest.is_empty().then_some((is_parser, stream, target))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The seed's Pod (the conformance fixture's `pod.json`, kept in this crate's fixtures).
    fn seed_pod() -> Json {
        serde_json::from_str(include_str!("../tests/fixtures/pod.json")).unwrap()
    }

    fn seed_ref() -> PodRef {
        PodRef {
            namespace: "default".into(),
            pod: "nginx-5468c5d4d7-n2swr".into(),
            container: "nginx".into(),
            docker_id: "b90a89309ac90fff2972822c66f11736933000c5aa6376dff0c11a441fa427ee".into(),
            container_hash: String::new(),
        }
    }

    #[test]
    fn seed_pod_gives_fluent_bits_keys_in_order() {
        let meta = PodMeta::from_json(&seed_pod(), "nginx-5468c5d4d7-n2swr", MetaShape::default());
        let m = kubernetes_map(&seed_ref(), Some(&meta), &[]);
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["pod_id"], "198f7dd2-2270-11ea-be47-0a5d932f5920");
        assert_eq!(json["host"], "ip-10-1-128-166.us-east-2.compute.internal");
        assert_eq!(json["labels"]["pod-template-hash"], "5468c5d4d7");
        assert_eq!(json["annotations"]["kubernetes.io/psp"], "eks.privileged");
        assert_eq!(
            json["container_hash"],
            "nginx@sha256:0e61b143db3110f3b8ae29a67f107d5536b71a7c1f10afb14d4228711fc65a13"
        );
        assert_eq!(json["container_image"], "nginx:1.17-alpine");
        assert!(json.get("ownerReferences").is_none());
        let keys: Vec<_> = m.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "pod_name",
                "namespace_name",
                "pod_id",
                "labels",
                "annotations",
                "host",
                "pod_ip",
                "container_name",
                "docker_id",
                "container_hash",
                "container_image"
            ]
        );
    }

    #[test]
    fn names_come_from_the_tag_and_any_object_reads() {
        let r = seed_ref();
        for obj in [json!({}), json!([1]), json!({"metadata": {}}), json!("x")] {
            let meta = PodMeta::from_json(&obj, &r.pod, MetaShape::default());
            let keys: Vec<_> = kubernetes_map(&r, Some(&meta), &[])
                .iter()
                .map(|(k, _)| k.to_string())
                .collect();
            assert_eq!(
                keys,
                ["pod_name", "namespace_name", "container_name", "docker_id"]
            );
        }
        let other = json!({"metadata": {"name": "else", "namespace": "where", "uid": 7}});
        let meta = PodMeta::from_json(&other, &r.pod, MetaShape::default());
        let m = kubernetes_map(&r, Some(&meta), &[]);
        assert_eq!(
            m.get("pod_name"),
            Some(&Value::from("nginx-5468c5d4d7-n2swr"))
        );
        assert_eq!(
            m.get("pod_id"),
            Some(&Value::Int(7)),
            "copied as the object holds it"
        );
    }

    #[test]
    fn only_what_records_use_is_kept() {
        let off = MetaShape {
            labels: false,
            annotations: false,
            owner_references: false,
            properties: true,
            workload: false,
        };
        let meta = PodMeta::from_json(&seed_pod(), "nginx-5468c5d4d7-n2swr", off);
        let keys: Vec<_> = meta.fields.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["pod_id", "host", "pod_ip"]);
        assert_eq!(
            meta.properties,
            vec![(Str::from("parser"), Str::from("nginx"))]
        );
        let full = PodMeta::from_json(&seed_pod(), "nginx-5468c5d4d7-n2swr", MetaShape::default());
        assert!(full.heap_size() > meta.heap_size());
    }

    #[test]
    fn extract_hash_as_fluent_bit() {
        assert_eq!(extract_hash("docker://abc"), Some("abc"));
        assert_eq!(
            extract_hash("docker-pullable://nginx@sha256:00"),
            Some("nginx@sha256:00")
        );
        assert_eq!(extract_hash("sha256:00ff"), Some("sha256:00ff"));
        assert_eq!(extract_hash("a:/b"), Some("b"));
        assert_eq!(extract_hash("nocolon"), None);
        assert_eq!(extract_hash("docker://"), None);
    }

    #[test]
    fn workload_from_owner() {
        let md = json!({"name": "web-7f9d8c6b5-qx2lp", "ownerReferences": [{"kind": "ReplicaSet", "name": "web-7f9d8c6b5"}]});
        assert_eq!(workload(&md, "web-7f9d8c6b5-qx2lp").as_deref(), Some("web"));
        let md = json!({"name": "j-1", "ownerReferences": [{"kind": "Job", "name": "nightly-29012345"}]});
        assert_eq!(workload(&md, "j-1").as_deref(), Some("nightly-29012345"));
        let md = json!({"name": "solo"});
        assert_eq!(workload(&md, "solo").as_deref(), Some("solo"));
        assert_eq!(workload(&md, "other"), None);
        let md = json!({"name": "rs-x", "ownerReferences": [{"kind": "ReplicaSet", "name": "not-a-hash-AAAA"}]});
        assert_eq!(workload(&md, "rs-x").as_deref(), Some("not-a-hash-AAAA"));
    }

    #[test]
    fn properties_follow_the_annotation_order() {
        let parsers = Parsers::builtin();
        let meta = PodMeta {
            properties: vec![
                ("parser".into(), "json".into()),
                ("parser_stderr".into(), "nginx".into()),
                ("parser_stdout-app".into(), "apache".into()),
                ("parser-app".into(), "no-such-parser".into()),
                ("exclude".into(), "false".into()),
                ("exclude_stderr".into(), "YES".into()),
                ("exclude_stderr-side".into(), "On".into()),
                ("exclude_bogus".into(), "true".into()),
            ],
            ..Default::default()
        };
        let app = Properties::read(&meta, "app", true, true, &parsers);
        assert_eq!(app.parser(Stream::Stdout).map(|p| p.name()), Some("apache"));
        assert_eq!(
            app.parser(Stream::Stderr).map(|p| p.name()),
            Some("json"),
            "a general stream annotation does not override one already set"
        );
        assert!(app.parser(Stream::Other).is_none());
        assert!(!app.excludes(Stream::Stderr), "exclude: false came first");
        let side = Properties::read(&meta, "side", true, true, &parsers);
        assert!(side.excludes(Stream::Stderr) && !side.excludes(Stream::Stdout));
        assert!(!side.excludes(Stream::Other));
        let off = Properties::read(&meta, "app", false, false, &parsers);
        assert!(off.is_empty());
    }
}
