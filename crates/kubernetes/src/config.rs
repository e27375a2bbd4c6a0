//! The `kubernetes` filter's options, with Fluent Bit's names and defaults
//! (`pipeline/filters/kubernetes.md`, Fluent Bit 5.x).

use std::time::Duration;

use logferry_core::config::ByteSize;
use logferry_core::options;

options! {
    /// Options of the `kubernetes` filter.
    pub struct KubeOptions for "kubernetes filter" {
        /// Most bytes read of one API response (0: no limit). logferry reads whole responses and
        /// only warns past this size: a large pod spec never loses its metadata.
        pub buffer_size: ByteSize = ["Buffer_Size"] Some("32k"),
        /// API server URL.
        pub kube_url: String = ["Kube_URL"] Some("https://kubernetes.default.svc:443"),
        /// CA certificate file of the API server.
        pub kube_ca_file: String = ["Kube_CA_File"] Some("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"),
        /// Directory of CA certificate files.
        pub kube_ca_path: Option<String> = ["Kube_CA_Path"] None,
        /// Bearer token file (re-read every Kube_Token_TTL and on a 401).
        pub kube_token_file: String = ["Kube_Token_File"] Some("/var/run/secrets/kubernetes.io/serviceaccount/token"),
        /// Command printing the bearer token (instead of the token file).
        pub kube_token_command: Option<String> = ["Kube_Token_Command"] None,
        /// Seconds a token is used before it is read again.
        pub kube_token_ttl: Duration = ["Kube_Token_TTL"] Some("600"),
        /// Tag prefix removed before the tag is matched against the tag regex.
        pub kube_tag_prefix: String = ["Kube_Tag_Prefix"] Some("kube.var.log.containers."),
        /// Merge the JSON (or parsed) content of `log` into the record.
        pub merge_log: bool = ["Merge_Log"] Some("off"),
        /// Put merged fields under this key instead of at the root.
        pub merge_log_key: Option<String> = ["Merge_Log_Key"] None,
        /// Trim trailing `\n`/`\r` from merged string values.
        pub merge_log_trim: bool = ["Merge_Log_Trim"] Some("on"),
        /// Parser for `log` when the pod suggests none (instead of JSON).
        pub merge_parser: Option<String> = ["Merge_Parser"] None,
        /// Keep `log` after a successful merge.
        pub keep_log: bool = ["Keep_Log"] Some("on"),
        /// TLS debug level (accepted).
        pub tls_debug: i64 = ["tls.debug"] Some("-1"),
        /// Verify the API server's certificate.
        pub tls_verify: bool = ["tls.verify"] Some("on"),
        /// Verify the API server's host name (accepted; rustls always checks it when verifying).
        pub tls_verify_hostname: bool = ["tls.verify_hostname"] Some("off"),
        /// TLS SNI host name (accepted).
        pub tls_vhost: Option<String> = ["tls.vhost"] None,
        /// Read journald records (accepted; tail records only).
        pub use_journal: bool = ["Use_Journal"] Some("off"),
        /// Refetch metadata when the container id changes.
        pub cache_use_docker_id: bool = ["Cache_Use_Docker_Id"] Some("off"),
        /// Parser that reads pod, namespace, container and id from the tag.
        pub regex_parser: Option<String> = ["Regex_Parser"] None,
        /// Let pods choose a parser with `fluentbit.io/parser*` annotations.
        pub k8s_logging_parser: bool = ["K8S-Logging.Parser"] Some("off"),
        /// Let pods drop their logs with `fluentbit.io/exclude*` annotations.
        pub k8s_logging_exclude: bool = ["K8S-Logging.Exclude"] Some("off"),
        /// Add the pod's labels.
        pub labels: bool = ["Labels"] Some("on"),
        /// Add the pod's annotations.
        pub annotations: bool = ["Annotations"] Some("on"),
        /// Directory of `<namespace>-<pod>.meta` files holding Pod JSON, used before the API.
        pub kube_meta_preload_cache_dir: Option<String> = ["Kube_Meta_Preload_Cache_Dir"] None,
        /// Add metadata from the tag only, with no API calls (testing).
        pub dummy_meta: bool = ["Dummy_Meta"] Some("off"),
        /// DNS lookup retries (accepted).
        pub dns_retries: u64 = ["DNS_Retries"] Some("6"),
        /// Seconds between DNS retries (accepted).
        pub dns_wait_time: u64 = ["DNS_Wait_Time"] Some("30"),
        /// Get pod metadata from the kubelet's `/pods` instead of the API server.
        pub use_kubelet: bool = ["Use_Kubelet"] Some("off"),
        /// Kubelet host.
        pub kubelet_host: String = ["Kubelet_Host"] Some("127.0.0.1"),
        /// Kubelet port.
        pub kubelet_port: u16 = ["Kubelet_Port"] Some("10250"),
        /// Read metadata from the tag only, with no API calls.
        pub use_tag_for_meta: bool = ["Use_Tag_For_Meta"] Some("off"),
        /// Seconds metadata of a pod is kept before it is fetched again (0: until it changes).
        pub kube_meta_cache_ttl: Duration = ["Kube_Meta_Cache_TTL"] Some("0"),
        /// Seconds namespace metadata is kept.
        pub kube_meta_namespace_cache_ttl: Duration = ["Kube_Meta_Namespace_Cache_TTL"] Some("900"),
        /// Add the namespace's labels under `kubernetes_namespace`.
        pub namespace_labels: bool = ["Namespace_Labels"] Some("off"),
        /// Add the namespace's annotations under `kubernetes_namespace`.
        pub namespace_annotations: bool = ["Namespace_Annotations"] Some("off"),
        /// Add namespace metadata only.
        pub namespace_metadata_only: bool = ["Namespace_Metadata_Only"] Some("off"),
        /// Add the pod's owner references.
        pub owner_references: bool = ["Owner_References"] Some("off"),
        /// Pod association for AWS (accepted).
        pub use_pod_association: bool = ["Use_Pod_Association"] Some("off"),
    }
}
