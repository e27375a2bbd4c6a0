//! The agent's own pod, whose metadata Fluent Bit adds to the agent's own logs (its
//! `fluentbit_logs` input): the namespace is read from `Kube_Namespace_File` (trailing line
//! breaks removed) and the pod name from `HOSTNAME` (else the host name), as Fluent Bit 5.1.1
//! does. The agent runs in a pod when that file and the token can be read.
//!
//! Records of that input get [`crate::meta::local_map`]: the pod's names, the `aws_entity_*`
//! keys, `pod_id`, `labels`, `annotations`, `ownerReferences`, `host` and `pod_ip` — no container
//! keys. The filter knows those records by their chunk's origin
//! ([`logferry_engine::Carrier::origin`]).

use std::path::Path;

/// The agent's own pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalPod {
    pub namespace: String,
    pub pod: String,
}

impl LocalPod {
    /// The agent's pod, or `None` when `namespace_file` cannot be read (not running in a pod).
    /// `hostname` is `HOSTNAME` when set.
    pub fn discover(namespace_file: &Path, hostname: Option<String>) -> Option<LocalPod> {
        let ns = std::fs::read_to_string(namespace_file).ok()?;
        let namespace = ns.trim_end_matches(['\n', '\r']).to_string();
        let pod = hostname.filter(|h| !h.is_empty()).or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })?;
        (!namespace.is_empty() && !pod.is_empty()).then_some(LocalPod { namespace, pod })
    }

    /// The cache key of the pod.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.pod)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_file_and_hostname() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("namespace");
        assert_eq!(
            LocalPod::discover(&f, Some("p".into())),
            None,
            "not in a pod"
        );
        std::fs::write(&f, "shop\n").unwrap();
        assert_eq!(
            LocalPod::discover(&f, Some("agent-x1".into())),
            Some(LocalPod {
                namespace: "shop".into(),
                pod: "agent-x1".into()
            })
        );
    }
}
