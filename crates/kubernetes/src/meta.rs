//! Pod metadata as Fluent Bit adds it under `kubernetes`, read from Pod JSON (the API server's,
//! the kubelet's, or a preload file's).
//!
//! Key order follows Fluent Bit: `pod_name`, `namespace_name`, `pod_id`, `labels`,
//! `annotations`, `ownerReferences`, `host`, `pod_ip`, `container_name`, `docker_id`,
//! `container_hash`, `container_image`. `container_hash` is the image ID without its
//! `docker-pullable://` scheme (`nginx@sha256:…`), as current Fluent Bit writes it.

use logferry_core::{Map, Str, Value};
use serde_json::Value as Json;

use crate::tag::PodRef;

/// One container's status.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ContainerMeta {
    pub name: String,
    pub image: Option<String>,
    pub image_id: Option<String>,
    pub container_id: Option<String>,
}

/// What the filter keeps of a Pod.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodMeta {
    pub namespace: String,
    pub name: String,
    pub uid: Option<String>,
    pub labels: Vec<(String, String)>,
    pub annotations: Vec<(String, String)>,
    pub owner_references: Option<Value>,
    pub host: Option<String>,
    pub pod_ip: Option<String>,
    pub containers: Vec<ContainerMeta>,
}

/// Which optional parts go into the `kubernetes` map.
#[derive(Clone, Copy, Debug)]
pub struct MetaShape {
    pub labels: bool,
    pub annotations: bool,
    pub owner_references: bool,
}

fn string_pairs(v: Option<&Json>) -> Vec<(String, String)> {
    v.and_then(Json::as_object)
        .map(|o| {
            o.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str().map_or_else(|| v.to_string(), str::to_string),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn strip_scheme(s: &str) -> String {
    match s.split_once("://") {
        Some((_, rest)) => rest.to_string(),
        None => s.to_string(),
    }
}

impl PodMeta {
    /// Reads a Pod object. `None` if it is not one (no name or namespace).
    pub fn from_json(pod: &Json) -> Option<PodMeta> {
        let md = pod.get("metadata")?;
        let name = md.get("name")?.as_str()?.to_string();
        let namespace = md
            .get("namespace")
            .and_then(Json::as_str)
            .unwrap_or("default")
            .to_string();
        let status = pod.get("status");
        let mut containers = Vec::new();
        for key in [
            "containerStatuses",
            "initContainerStatuses",
            "ephemeralContainerStatuses",
        ] {
            for c in status
                .and_then(|s| s.get(key))
                .and_then(Json::as_array)
                .into_iter()
                .flatten()
            {
                let s = |k: &str| {
                    c.get(k)
                        .and_then(Json::as_str)
                        .filter(|v| !v.is_empty())
                        .map(str::to_string)
                };
                if let Some(n) = s("name") {
                    containers.push(ContainerMeta {
                        name: n,
                        image: s("image"),
                        image_id: s("imageID").map(|i| strip_scheme(&i)),
                        container_id: s("containerID").map(|i| strip_scheme(&i)),
                    });
                }
            }
        }
        // Containers without a status yet still have their image from the spec.
        for c in pod
            .get("spec")
            .and_then(|s| s.get("containers"))
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(n) = c.get("name").and_then(Json::as_str) {
                if !containers.iter().any(|k| k.name == n) {
                    containers.push(ContainerMeta {
                        name: n.to_string(),
                        image: c.get("image").and_then(Json::as_str).map(str::to_string),
                        ..Default::default()
                    });
                }
            }
        }
        Some(PodMeta {
            namespace,
            name,
            uid: md.get("uid").and_then(Json::as_str).map(str::to_string),
            labels: string_pairs(md.get("labels")),
            annotations: string_pairs(md.get("annotations")),
            owner_references: md
                .get("ownerReferences")
                .filter(|v| v.as_array().is_some_and(|a| !a.is_empty()))
                .cloned()
                .map(Value::from_json),
            host: pod
                .get("spec")
                .and_then(|s| s.get("nodeName"))
                .and_then(Json::as_str)
                .map(str::to_string),
            pod_ip: status
                .and_then(|s| s.get("podIP"))
                .and_then(Json::as_str)
                .map(str::to_string),
            containers,
        })
    }

    /// An annotation's value.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The most specific `fluentbit.io/<what>[_stream][-container]` annotation for this
    /// container and stream.
    pub fn suggestion(&self, what: &str, container: &str, stream: Option<&str>) -> Option<&str> {
        let base = format!("fluentbit.io/{what}");
        if let Some(s) = stream {
            if let Some(v) = self.annotation(&format!("{base}_{s}-{container}")) {
                return Some(v);
            }
        }
        if let Some(v) = self.annotation(&format!("{base}-{container}")) {
            return Some(v);
        }
        if let Some(s) = stream {
            if let Some(v) = self.annotation(&format!("{base}_{s}")) {
                return Some(v);
            }
        }
        self.annotation(&base)
    }

    /// The `kubernetes` map for records of container `r`.
    pub fn kubernetes_map(&self, r: &PodRef, shape: MetaShape) -> Map {
        let mut m = Map::with_capacity(12);
        m.push("pod_name", self.name.as_str());
        m.push("namespace_name", self.namespace.as_str());
        if let Some(uid) = &self.uid {
            m.push("pod_id", uid.as_str());
        }
        let pairs = |v: &[(String, String)]| -> Value {
            Value::Map(
                v.iter()
                    .map(|(k, v)| (Str::from(k.as_str()), Value::from(v.as_str())))
                    .collect(),
            )
        };
        if shape.labels && !self.labels.is_empty() {
            m.push("labels", pairs(&self.labels));
        }
        if shape.annotations && !self.annotations.is_empty() {
            m.push("annotations", pairs(&self.annotations));
        }
        if shape.owner_references {
            if let Some(o) = &self.owner_references {
                m.push("ownerReferences", o.clone());
            }
        }
        if let Some(h) = &self.host {
            m.push("host", h.as_str());
        }
        if let Some(ip) = &self.pod_ip {
            m.push("pod_ip", ip.as_str());
        }
        m.push("container_name", r.container.as_str());
        let c = self.containers.iter().find(|c| c.name == r.container);
        let docker_id = if r.docker_id.is_empty() {
            c.and_then(|c| c.container_id.as_deref()).unwrap_or("")
        } else {
            r.docker_id.as_str()
        };
        if !docker_id.is_empty() {
            m.push("docker_id", docker_id);
        }
        if let Some(c) = c {
            if let Some(h) = &c.image_id {
                m.push("container_hash", h.as_str());
            }
            if let Some(i) = &c.image {
                m.push("container_image", i.as_str());
            }
        }
        m
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The seed's Pod (the conformance fixture's `pod.json`, kept in this crate's fixtures).
    fn seed_pod() -> Json {
        serde_json::from_str(include_str!("../tests/fixtures/pod.json")).unwrap()
    }

    #[test]
    fn seed_pod_gives_fluent_bits_keys() {
        let meta = PodMeta::from_json(&seed_pod()).unwrap();
        let r = PodRef {
            namespace: "default".into(),
            pod: "nginx-5468c5d4d7-n2swr".into(),
            container: "nginx".into(),
            docker_id: "b90a89309ac90fff2972822c66f11736933000c5aa6376dff0c11a441fa427ee".into(),
        };
        let m = meta.kubernetes_map(
            &r,
            MetaShape {
                labels: true,
                annotations: true,
                owner_references: false,
            },
        );
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
        assert_eq!(
            json["docker_id"],
            "b90a89309ac90fff2972822c66f11736933000c5aa6376dff0c11a441fa427ee"
        );
        assert!(json.get("ownerReferences").is_none());
        let keys: Vec<_> = m.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(&keys[..3], ["pod_name", "namespace_name", "pod_id"]);
    }

    #[test]
    fn most_specific_annotation_wins() {
        let mut meta = PodMeta::from_json(&seed_pod()).unwrap();
        meta.annotations = vec![
            ("fluentbit.io/parser".into(), "a".into()),
            ("fluentbit.io/parser_stderr".into(), "b".into()),
            ("fluentbit.io/parser-nginx".into(), "c".into()),
            ("fluentbit.io/parser_stderr-nginx".into(), "d".into()),
        ];
        assert_eq!(
            meta.suggestion("parser", "nginx", Some("stderr")),
            Some("d")
        );
        assert_eq!(
            meta.suggestion("parser", "nginx", Some("stdout")),
            Some("c")
        );
        assert_eq!(
            meta.suggestion("parser", "other", Some("stderr")),
            Some("b")
        );
        assert_eq!(
            meta.suggestion("parser", "other", Some("stdout")),
            Some("a")
        );
        assert_eq!(meta.suggestion("exclude", "nginx", None), None);
    }
}
