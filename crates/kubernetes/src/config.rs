//! The `kubernetes` filter's options, with Fluent Bit's names and defaults
//! (`pipeline/filters/kubernetes.md`, Fluent Bit 5.x): all 53 of Fluent Bit 5.1.1's keys.

use std::time::Duration;

use logferry_core::config::ByteSize;
use logferry_core::options;

options! {
    /// Options of the `kubernetes` filter.
    pub struct KubeOptions for "kubernetes filter" {
        /// Most bytes read of one API response (0: no limit). Accepted, not applied: logferry
        /// reads whole responses, so a large pod spec never loses its metadata.
        pub buffer_size: ByteSize = ["Buffer_Size"] Some("32k"),
        /// API server URL.
        pub kube_url: String = ["Kube_URL"] Some("https://kubernetes.default.svc:443"),
        /// CA certificate file of the API server.
        pub kube_ca_file: String = ["Kube_CA_File"] Some("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"),
        /// Directory of CA certificate files.
        pub kube_ca_path: Option<String> = ["Kube_CA_Path"] None,
        /// File holding the agent's own namespace; with `HOSTNAME` it names the agent's pod,
        /// whose metadata the `fluentbit_logs` input's records get.
        pub kube_namespace_file: String = ["Kube_Namespace_File"] Some("/var/run/secrets/kubernetes.io/serviceaccount/namespace"),
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
        /// TLS debug level (accepted, not applied).
        pub tls_debug: i64 = ["tls.debug"] Some("0"),
        /// Verify the API server's certificate.
        pub tls_verify: bool = ["tls.verify"] Some("on"),
        /// Verify the API server's host name (accepted, not applied: always checked when verifying).
        pub tls_verify_hostname: bool = ["tls.verify_hostname"] Some("off"),
        /// TLS SNI host name (accepted, not applied: Kube_URL's host is sent).
        pub tls_vhost: Option<String> = ["tls.vhost"] None,
        /// Read journald records (accepted, not applied: tail records only).
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
        /// Directory of `<namespace>_<pod>.meta` (any JSON object; with Use_Kubelet a `/pods`
        /// list) and `<namespace>.namespace_meta` files, read before the API.
        pub kube_meta_preload_cache_dir: Option<String> = ["Kube_Meta_Preload_Cache_Dir"] None,
        /// Add metadata from the tag only, with no API calls (testing).
        pub dummy_meta: bool = ["Dummy_Meta"] Some("off"),
        /// DNS lookup retries (accepted, not applied: lookups back off per pod).
        pub dns_retries: u64 = ["DNS_Retries"] Some("6"),
        /// Seconds between DNS retries (accepted, not applied).
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
        /// EKS pod association: add the service name and environment the CloudWatch agent maps
        /// each pod to (`aws_entity_*` keys).
        pub aws_use_pod_association: bool = ["AWS_Use_Pod_Association", "Use_Pod_Association"] Some("off"),
        /// Host serving the pod-to-service map.
        pub aws_pod_association_host: String = ["AWS_Pod_Association_Host"] Some("cloudwatch-agent.amazon-cloudwatch"),
        /// Path of the pod-to-service map on that host.
        pub aws_pod_association_endpoint: String = ["AWS_Pod_Association_Endpoint"] Some("/kubernetes/pod-to-service-env-map"),
        /// Port of that host (HTTPS).
        pub aws_pod_association_port: u16 = ["AWS_Pod_Association_Port"] Some("4311"),
        /// Seconds a pod's service entry is kept after it was fetched (0: until replaced).
        pub aws_pod_service_map_ttl: u64 = ["AWS_Pod_Service_Map_TTL"] Some("0"),
        /// Seconds between fetches of the pod-to-service map.
        pub aws_pod_service_map_refresh_interval: u64 = ["AWS_Pod_Service_Map_Refresh_Interval"] Some("60"),
        /// Path prefix of a local pod-to-service map (`<value>.map`), read instead of the host.
        pub aws_pod_service_preload_cache_dir: Option<String> = ["AWS_Pod_Service_Preload_Cache_Dir"] None,
        /// CA certificate of the pod association host.
        pub aws_pod_association_host_server_ca_file: String = ["AWS_Pod_Association_Host_Server_CA_File"] Some("/etc/amazon-cloudwatch-observability-agent-server-cert/tls-ca.crt"),
        /// Client certificate for mTLS to the pod association host.
        pub aws_pod_association_host_client_cert_file: String = ["AWS_Pod_Association_Host_Client_Cert_File"] Some("/etc/amazon-cloudwatch-observability-agent-client-cert/client.crt"),
        /// Client key for mTLS to the pod association host.
        pub aws_pod_association_host_client_key_file: String = ["AWS_Pod_Association_Host_Client_Key_File"] Some("/etc/amazon-cloudwatch-observability-agent-client-cert/client.key"),
        /// TLS debug level for the pod association host (accepted, not applied).
        pub aws_pod_association_host_tls_debug: i64 = ["AWS_Pod_Association_Host_TLS_Debug"] Some("0"),
        /// Verify the pod association host's certificate.
        pub aws_pod_association_host_tls_verify: bool = ["AWS_Pod_Association_Host_TLS_Verify"] Some("on"),
        /// The platform reported as `aws_entity_platform` (`k8s` or `eks`) instead of the one
        /// read from the service account token; for testing, as Fluent Bit documents it.
        pub set_platform: Option<String> = ["Set_Platform"] None,
    }
}
