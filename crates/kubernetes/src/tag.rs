//! Pod identity from a tail tag: `Kube_Tag_Prefix` is removed, then Fluent Bit's tag regex (or a
//! `Regex_Parser`) gives `namespace_name`, `pod_name`, `container_name` and `docker_id`.

use std::sync::Arc;

use logferry_core::Value;
use logferry_parsers::Parser;
use regex::Regex;

/// Fluent Bit's default tag regex (`KUBE_TAG_TO_REGEX`), for `<pod>_<ns>_<container>-<id>.log`.
pub const DEFAULT_TAG_REGEX: &str = r"(?<pod_name>[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)_(?<namespace_name>[^_]+)_(?<container_name>.+)-(?<docker_id>[a-z0-9]{64})\.log$";

/// Which pod and container a record comes from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct PodRef {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub docker_id: String,
    /// Only a `Regex_Parser` with a `container_hash` group fills it (then it wins over the
    /// Pod's image ID, as in Fluent Bit).
    pub container_hash: String,
}

impl PodRef {
    /// The cache key of the pod: `<namespace>/<pod>` (neither may hold a `/`).
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.pod)
    }
}

/// Reads pod identity from tags.
#[derive(Clone)]
pub enum TagReader {
    Regex { prefix: String, re: Regex },
    Parser { prefix: String, parser: Arc<Parser> },
}

impl TagReader {
    /// The default reader for a prefix.
    pub fn default_for(prefix: &str) -> Result<TagReader, regex::Error> {
        Ok(TagReader::Regex {
            prefix: prefix.to_string(),
            re: Regex::new(DEFAULT_TAG_REGEX)?,
        })
    }

    /// Pod identity from a tag, if it has the expected shape.
    pub fn read(&self, tag: &str) -> Option<PodRef> {
        let rest = match self {
            TagReader::Regex { prefix, .. } | TagReader::Parser { prefix, .. } => {
                tag.strip_prefix(prefix.as_str()).unwrap_or(tag)
            }
        };
        match self {
            TagReader::Regex { re, .. } => {
                let c = re.captures(rest)?;
                let get = |n: &str| {
                    c.name(n)
                        .map(|m| m.as_str().to_string())
                        .unwrap_or_default()
                };
                Some(PodRef {
                    namespace: get("namespace_name"),
                    pod: get("pod_name"),
                    container: get("container_name"),
                    docker_id: get("docker_id"),
                    container_hash: get("container_hash"),
                })
            }
            TagReader::Parser { parser, .. } => {
                let p = parser.parse(rest)?;
                let get = |n: &str| {
                    p.body
                        .get(n)
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string()
                };
                let r = PodRef {
                    namespace: get("namespace_name"),
                    pod: get("pod_name"),
                    container: get("container_name"),
                    docker_id: get("docker_id"),
                    container_hash: get("container_hash"),
                };
                (!r.namespace.is_empty() && !r.pod.is_empty()).then_some(r)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_seed_tag() {
        let r = TagReader::default_for("kube.var.log.containers.").unwrap();
        let tag = "kube.var.log.containers.nginx-5468c5d4d7-n2swr_default_nginx-b90a89309ac90fff2972822c66f11736933000c5aa6376dff0c11a441fa427ee.log";
        let p = r.read(tag).unwrap();
        assert_eq!(p.pod, "nginx-5468c5d4d7-n2swr");
        assert_eq!(p.namespace, "default");
        assert_eq!(p.container, "nginx");
        assert_eq!(
            p.docker_id,
            "b90a89309ac90fff2972822c66f11736933000c5aa6376dff0c11a441fa427ee"
        );
    }

    #[test]
    fn other_tags_do_not_match() {
        let r = TagReader::default_for("kube.").unwrap();
        assert!(r.read("kube.var.log.syslog").is_none());
        assert!(r.read("app.x").is_none());
    }
}
