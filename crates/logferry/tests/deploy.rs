//! deploy/kubernetes/ checked without a cluster: every manifest deserializes into the
//! Kubernetes API's own types (k8s-openapi, the types kube-rs uses) with no field left over, the
//! kustomization's overlays are put together (resources and `configMapGenerator` merges) and
//! each resulting `fluent-bit.conf` passes `logferry --dry-run`, and the DaemonSet agrees with
//! its config (mount, probes on the health endpoint, `NODE_NAME`, state on a hostPath). Where
//! `kubectl` is installed, `kubectl kustomize` renders each overlay and its output is checked
//! the same way. The Fargate examples: the EKS logging ConfigMap's sections and the FireLens
//! task definition's output options pass `--dry-run` too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn kube_dir() -> PathBuf {
    repo().join("deploy/kubernetes")
}

/// YAML (one or more documents) as JSON values.
fn yaml_docs(text: &str) -> Vec<Value> {
    yaml_rust2::YamlLoader::load_from_str(text)
        .unwrap()
        .iter()
        .filter(|d| !d.is_null())
        .map(to_json)
        .collect()
}

fn to_json(y: &yaml_rust2::Yaml) -> Value {
    use yaml_rust2::Yaml;
    match y {
        Yaml::Real(s) => s
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(s.clone())),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Array(a) => Value::Array(a.iter().map(to_json).collect()),
        Yaml::Hash(h) => Value::Object(
            h.iter()
                .map(|(k, v)| {
                    let k = match k {
                        Yaml::String(s) => s.clone(),
                        Yaml::Integer(i) => i.to_string(),
                        Yaml::Boolean(b) => b.to_string(),
                        other => panic!("unsupported key {other:?}"),
                    };
                    (k, to_json(v))
                })
                .collect(),
        ),
        Yaml::Null => Value::Null,
        other => panic!("unsupported YAML {other:?}"),
    }
}

/// Every leaf of `orig` (a path of keys and indexes) that `typed` lacks: a field the API type
/// does not have (a typo, or a field in the wrong place), which serde would otherwise drop.
fn dropped(orig: &Value, typed: &Value, at: &str, out: &mut Vec<String>) {
    match (orig, typed) {
        (Value::Object(o), Value::Object(t)) => {
            for (k, v) in o {
                match t.get(k) {
                    Some(tv) => dropped(v, tv, &format!("{at}.{k}"), out),
                    None if v.is_null() => {}
                    None => out.push(format!("{at}.{k}")),
                }
            }
        }
        (Value::Array(o), Value::Array(t)) => {
            for (i, v) in o.iter().enumerate() {
                match t.get(i) {
                    Some(tv) => dropped(v, tv, &format!("{at}[{i}]"), out),
                    None => out.push(format!("{at}[{i}]")),
                }
            }
        }
        (Value::Object(o), _) if o.is_empty() => {}
        (Value::Object(_) | Value::Array(_), _) => out.push(at.to_string()),
        _ => {}
    }
}

/// Deserializes one manifest into its API type and back; panics naming the file and the
/// fields the type does not know.
fn check_typed(doc: &Value, file: &str) -> String {
    use k8s_openapi::api::apps::v1::DaemonSet;
    use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    fn round<T: serde::de::DeserializeOwned + serde::Serialize>(doc: &Value, file: &str) -> Value {
        let t: T = serde_json::from_value(doc.clone())
            .unwrap_or_else(|e| panic!("{file}: {} is not valid: {e}", doc["kind"]));
        serde_json::to_value(t).unwrap()
    }
    let api = doc["apiVersion"].as_str().unwrap_or("");
    let kind = doc["kind"].as_str().unwrap_or("");
    let typed = match (api, kind) {
        ("v1", "Namespace") => round::<Namespace>(doc, file),
        ("v1", "ServiceAccount") => round::<ServiceAccount>(doc, file),
        ("v1", "ConfigMap") => round::<ConfigMap>(doc, file),
        ("apps/v1", "DaemonSet") => round::<DaemonSet>(doc, file),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => round::<ClusterRole>(doc, file),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            round::<ClusterRoleBinding>(doc, file)
        }
        other => panic!("{file}: unexpected {other:?} (only current API versions are used)"),
    };
    let mut left = Vec::new();
    dropped(doc, &typed, kind, &mut left);
    assert!(
        left.is_empty(),
        "{file}: fields {kind} does not have: {left:?}"
    );
    kind.to_string()
}

/// A base or overlay put together as kustomize does for the features used here: resources
/// (files, or directories with their own kustomization) and `configMapGenerator` (create, or
/// `behavior: merge` over the base's).
struct Built {
    docs: Vec<(String, Value)>,
    config_maps: BTreeMap<String, BTreeMap<String, String>>,
}

fn kustomize(dir: &Path) -> Built {
    let k = yaml_docs(&std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap())
        .pop()
        .unwrap();
    assert_eq!(k["apiVersion"], "kustomize.config.k8s.io/v1beta1");
    assert_eq!(k["kind"], "Kustomization");
    let mut built = Built {
        docs: Vec::new(),
        config_maps: BTreeMap::new(),
    };
    for r in k["resources"].as_array().into_iter().flatten() {
        let p = dir.join(r.as_str().unwrap());
        assert!(
            p.exists(),
            "{}: resource {} is missing",
            dir.display(),
            p.display()
        );
        if p.is_dir() {
            let b = kustomize(&p);
            built.docs.extend(b.docs);
            built.config_maps.extend(b.config_maps);
        } else {
            for d in yaml_docs(&std::fs::read_to_string(&p).unwrap()) {
                built.docs.push((p.display().to_string(), d));
            }
        }
    }
    for g in k["configMapGenerator"].as_array().into_iter().flatten() {
        let name = g["name"].as_str().unwrap().to_string();
        let mut data = match g["behavior"].as_str().unwrap_or("create") {
            "merge" | "replace" => built
                .config_maps
                .remove(&name)
                .unwrap_or_else(|| panic!("{}: no {name} to merge into", dir.display())),
            "create" => BTreeMap::new(),
            other => panic!("behavior {other}"),
        };
        for f in g["files"].as_array().into_iter().flatten() {
            let f = f.as_str().unwrap();
            let text = std::fs::read_to_string(dir.join(f))
                .unwrap_or_else(|e| panic!("{}: {f}: {e}", dir.display()));
            data.insert(f.to_string(), text);
        }
        built.config_maps.insert(name, data);
    }
    built
}

fn logferry() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_logferry"));
    for (k, _) in std::env::vars() {
        if k.to_ascii_lowercase().starts_with("aws_fluent_bit_init_")
            || k == "FLUENT_BIT_CONFIG_FILE"
        {
            c.env_remove(k);
        }
    }
    c
}

/// Writes a ConfigMap's files into a directory standing for `/fluent-bit/etc/`, with the
/// image's and the node's absolute paths moved under `root`, and runs `--dry-run` on
/// `fluent-bit.conf` there.
fn dry_run_configmap(data: &BTreeMap<String, String>, what: &str) {
    let root = tempfile::tempdir().unwrap();
    let r = root.path().display().to_string();
    let etc = root.path().join("fluent-bit/etc");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::create_dir_all(root.path().join("fluent-bit/parsers")).unwrap();
    std::fs::copy(
        repo().join("crates/parsers/src/builtin_parsers.conf"),
        root.path().join("fluent-bit/parsers/parsers.conf"),
    )
    .unwrap();
    std::fs::create_dir_all(root.path().join("var/log/containers")).unwrap();
    for (name, text) in data {
        let text = text
            .replace("/fluent-bit/", &format!("{r}/fluent-bit/"))
            .replace("/var/log/", &format!("{r}/var/log/"))
            .replace("/var/fluent-bit/", &format!("{r}/var/fluent-bit/"));
        std::fs::write(etc.join(name), text).unwrap();
    }
    let out = logferry()
        .arg("--dry-run")
        .arg("-c")
        .arg(etc.join("fluent-bit.conf"))
        .env("AWS_REGION", "us-east-2")
        .env("NODE_NAME", "node-1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{what}: dry-run failed:\n{err}");
    assert!(!err.contains("[error]"), "{what}:\n{err}");
}

fn daemonset(built: &Built) -> &Value {
    &built
        .docs
        .iter()
        .find(|(_, d)| d["kind"] == "DaemonSet")
        .expect("a DaemonSet")
        .1
}

#[test]
fn every_manifest_is_a_valid_api_object() {
    let mut kinds = Vec::new();
    for sub in ["base", "fargate"] {
        for e in std::fs::read_dir(kube_dir().join(sub)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "yaml")
                && p.file_name().is_some_and(|n| n != "kustomization.yaml")
            {
                for d in yaml_docs(&std::fs::read_to_string(&p).unwrap()) {
                    kinds.push(check_typed(&d, &p.display().to_string()));
                }
            }
        }
    }
    for k in [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "DaemonSet",
        "ConfigMap",
    ] {
        assert!(kinds.iter().any(|x| x == k), "no {k} among {kinds:?}");
    }
}

#[test]
fn rbac_is_read_only_on_pods_and_namespaces() {
    let b = kustomize(&kube_dir().join("base"));
    let role = &b
        .docs
        .iter()
        .find(|(_, d)| d["kind"] == "ClusterRole")
        .unwrap()
        .1;
    let rules = role["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 1);
    let mut res: Vec<&str> = rules[0]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    res.sort();
    assert_eq!(res, ["namespaces", "pods"]);
    let mut verbs: Vec<&str> = rules[0]["verbs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    verbs.sort();
    assert_eq!(verbs, ["get", "list", "watch"]);
    let binding = &b
        .docs
        .iter()
        .find(|(_, d)| d["kind"] == "ClusterRoleBinding")
        .unwrap()
        .1;
    let sa = &b
        .docs
        .iter()
        .find(|(_, d)| d["kind"] == "ServiceAccount")
        .unwrap()
        .1;
    assert_eq!(binding["subjects"][0]["name"], sa["metadata"]["name"]);
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    assert!(sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].is_string());
}

/// The DaemonSet matches its config: the ConfigMap at /fluent-bit/etc/, the probes on the
/// HTTP server's port and health path, NODE_NAME from the node, the tail DB and storage.path
/// on the hostPath, log mounts read-only.
#[test]
fn daemonset_agrees_with_its_config() {
    let b = kustomize(&kube_dir().join("base"));
    let ds = daemonset(&b);
    let spec = &ds["spec"]["template"]["spec"];
    let c = &spec["containers"][0];
    let conf = &b.config_maps["fluentbit-config"]["fluent-bit.conf"];
    let key = |k: &str| -> String {
        conf.lines()
            .map(str::trim)
            .find_map(|l| {
                let (a, b) = l.split_once(char::is_whitespace)?;
                a.eq_ignore_ascii_case(k).then(|| b.trim().to_string())
            })
            .unwrap_or_else(|| panic!("{k} not in fluent-bit.conf"))
    };
    assert_eq!(key("HTTP_Server"), "On");
    assert_eq!(key("Health_Check"), "On");
    let port: i64 = key("HTTP_Port").parse().unwrap();
    assert_eq!(c["ports"][0]["containerPort"], port);
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(c[probe]["httpGet"]["path"], "/api/v1/health", "{probe}");
        assert_eq!(
            c[probe]["httpGet"]["port"], c["ports"][0]["name"],
            "{probe}"
        );
    }
    let env = c["env"].as_array().unwrap();
    let node = env.iter().find(|e| e["name"] == "NODE_NAME").unwrap();
    assert_eq!(node["valueFrom"]["fieldRef"]["fieldPath"], "spec.nodeName");
    assert!(c["resources"]["requests"]["cpu"].is_string());
    assert!(c["resources"]["limits"]["memory"].is_string());
    assert!(spec["tolerations"]
        .as_array()
        .is_some_and(|t| !t.is_empty()));
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);

    let mounts = c["volumeMounts"].as_array().unwrap();
    let volumes = spec["volumes"].as_array().unwrap();
    let mount_of = |path: &str| {
        mounts
            .iter()
            .filter(|m| path.starts_with(m["mountPath"].as_str().unwrap().trim_end_matches('/')))
            .max_by_key(|m| m["mountPath"].as_str().unwrap().len())
            .unwrap_or_else(|| panic!("nothing mounted over {path}"))
    };
    let volume = |m: &Value| {
        volumes
            .iter()
            .find(|v| v["name"] == m["name"])
            .unwrap()
            .clone()
    };
    // The ConfigMap is the config.
    let cm = volume(mount_of("/fluent-bit/etc/fluent-bit.conf"));
    assert_eq!(cm["configMap"]["name"], "fluentbit-config");
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args, ["-c", "/fluent-bit/etc/fluent-bit.conf"]);
    // State survives restarts: the DB and storage.path are on a hostPath, not the log mount.
    let storage = key("storage.path");
    let v = volume(mount_of(&storage));
    assert!(
        v["hostPath"]["path"].is_string() && mount_of(&storage)["readOnly"] != true,
        "storage.path is not on a writable hostPath: {v}"
    );
    let db = key("DB");
    let v = volume(mount_of(&db));
    assert!(
        v["hostPath"].is_object() && mount_of(&db)["readOnly"] != true,
        "DB: {v}"
    );
    // The logs are read-only.
    for p in [
        "/var/log/containers/x.log",
        "/var/lib/docker/containers/x/x-json.log",
    ] {
        assert_eq!(mount_of(p)["readOnly"], true, "{p}");
        assert!(volume(mount_of(p))["hostPath"].is_object());
    }
}

#[test]
fn each_overlays_config_passes_dry_run() {
    let base = kustomize(&kube_dir().join("base"));
    dry_run_configmap(&base.config_maps["fluentbit-config"], "base");
    let mut outputs = Vec::new();
    for overlay in ["cloudwatch", "firehose", "s3"] {
        let b = kustomize(&kube_dir().join("overlays").join(overlay));
        let data = &b.config_maps["fluentbit-config"];
        outputs.push(data["output.conf"].clone());
        dry_run_configmap(data, overlay);
        for (file, d) in &b.docs {
            check_typed(d, file);
        }
    }
    assert!(outputs[0].contains("cloudwatch_logs"));
    assert!(outputs[1].contains("kinesis_firehose"));
    assert!(outputs[2].contains("Name             s3"));
}

/// With kubectl installed, `kubectl kustomize` renders each overlay; every object it prints is
/// a valid API object and the DaemonSet mounts the generated ConfigMap by its hashed name.
#[test]
fn kubectl_kustomize_renders_each_overlay_where_installed() {
    let Ok(v) = Command::new("kubectl")
        .args(["version", "--client"])
        .output()
    else {
        eprintln!("kubectl is not installed: the overlays are checked by the other tests only");
        return;
    };
    if !v.status.success() {
        eprintln!("kubectl does not run: the overlays are checked by the other tests only");
        return;
    }
    for overlay in ["cloudwatch", "firehose", "s3"] {
        let out = Command::new("kubectl")
            .arg("kustomize")
            .arg(kube_dir().join("overlays").join(overlay))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kubectl kustomize {overlay}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let docs = yaml_docs(&String::from_utf8_lossy(&out.stdout));
        for d in &docs {
            check_typed(d, overlay);
        }
        let cm = docs.iter().find(|d| d["kind"] == "ConfigMap").unwrap();
        let ds = docs.iter().find(|d| d["kind"] == "DaemonSet").unwrap();
        let vol = ds["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["configMap"].is_object())
            .unwrap();
        assert_eq!(vol["configMap"]["name"], cm["metadata"]["name"]);
        assert_eq!(ds["metadata"]["namespace"], "fluentbit-system");
        let data: BTreeMap<String, String> = cm["data"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect();
        dry_run_configmap(&data, &format!("kubectl kustomize {overlay}"));
    }
}

/// EKS on Fargate: the aws-logging ConfigMap's filters, output and parsers are Fluent Bit
/// sections that logferry reads as they are.
#[test]
fn eks_fargate_logging_configmap_sections_pass_dry_run() {
    let docs = yaml_docs(
        &std::fs::read_to_string(kube_dir().join("fargate/eks-fargate-logging.yaml")).unwrap(),
    );
    let cm = docs.iter().find(|d| d["kind"] == "ConfigMap").unwrap();
    assert_eq!(cm["metadata"]["namespace"], "aws-observability");
    assert_eq!(cm["metadata"]["name"], "aws-logging");
    let section = |k: &str| cm["data"][k].as_str().unwrap().to_string();
    let mut data = BTreeMap::new();
    data.insert(
        "fluent-bit.conf".to_string(),
        "[SERVICE]\n    Parsers_File parsers.conf\n[INPUT]\n    Name tail\n    Tag kube.*\n    Path /var/log/containers/*.log\n@INCLUDE filters.conf\n@INCLUDE output.conf\n".to_string(),
    );
    data.insert("filters.conf".into(), section("filters.conf"));
    data.insert("output.conf".into(), section("output.conf"));
    data.insert("parsers.conf".into(), section("parsers.conf"));
    dry_run_configmap(&data, "EKS Fargate aws-logging");
}

/// ECS FireLens: the log router's bundled config exists in the image layout, and the app
/// container's `awsfirelens` options make an [OUTPUT] logferry accepts.
#[test]
fn ecs_firelens_task_definition_options_are_valid_outputs() {
    let td: Value = serde_json::from_str(
        &std::fs::read_to_string(kube_dir().join("fargate/ecs-firelens-task-definition.json"))
            .unwrap(),
    )
    .unwrap();
    let containers = td["containerDefinitions"].as_array().unwrap();
    let router = containers
        .iter()
        .find(|c| c["firelensConfiguration"].is_object())
        .unwrap();
    let file = router["firelensConfiguration"]["options"]["config-file-value"]
        .as_str()
        .unwrap();
    let name = file.strip_prefix("/fluent-bit/configs/").unwrap();
    assert!(
        repo().join("deploy/image/configs").join(name).is_file(),
        "{file}"
    );
    for c in containers {
        let lc = &c["logConfiguration"];
        if lc["logDriver"] != "awsfirelens" {
            continue;
        }
        let mut out = String::from("[OUTPUT]\n    Match *\n");
        for (k, v) in lc["options"].as_object().unwrap() {
            out.push_str(&format!("    {k} {}\n", v.as_str().unwrap()));
        }
        let mut data = BTreeMap::new();
        data.insert(
            "fluent-bit.conf".to_string(),
            format!("[INPUT]\n    Name dummy\n@INCLUDE /fluent-bit/configs/{name}\n{out}"),
        );
        // The bundled file, where the include names it (etc/../configs/).
        let bundled =
            std::fs::read_to_string(repo().join("deploy/image/configs").join(name)).unwrap();
        data.insert(format!("../configs/{name}"), bundled);
        dry_run_with_configs(&data, name);
    }
}

/// As [`dry_run_configmap`], with `/fluent-bit/configs/` laid out beside `/fluent-bit/etc/`.
fn dry_run_with_configs(data: &BTreeMap<String, String>, what: &str) {
    let root = tempfile::tempdir().unwrap();
    let r = root.path().display().to_string();
    for (name, text) in data {
        let p = root.path().join("fluent-bit/etc").join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text.replace("/fluent-bit/", &format!("{r}/fluent-bit/"))).unwrap();
    }
    std::fs::create_dir_all(root.path().join("fluent-bit/parsers")).unwrap();
    std::fs::copy(
        repo().join("crates/parsers/src/builtin_parsers.conf"),
        root.path().join("fluent-bit/parsers/parsers.conf"),
    )
    .unwrap();
    let out = logferry()
        .arg("--dry-run")
        .arg("-c")
        .arg(root.path().join("fluent-bit/etc/fluent-bit.conf"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{what}: {err}");
}

fn chart_dir() -> PathBuf {
    repo().join("deploy/helm/logferry")
}

fn chart_values() -> Value {
    yaml_docs(&std::fs::read_to_string(chart_dir().join("values.yaml")).unwrap())
        .pop()
        .unwrap()
}

/// The aws-for-fluent-bit chart's value groups and the upstream chart's config strings are all
/// there, so either chart's values file applies.
#[test]
fn chart_values_take_both_charts_keys() {
    let v = chart_values();
    for (group, keys) in [
        (
            "cloudWatchLogs",
            &[
                "enabled",
                "match",
                "region",
                "logGroupName",
                "logStreamPrefix",
                "autoCreateGroup",
                "roleArn",
                "endpoint",
            ][..],
        ),
        (
            "firehose",
            &[
                "enabled",
                "match",
                "region",
                "deliveryStream",
                "dataKeys",
                "timeKey",
            ][..],
        ),
        (
            "kinesis",
            &[
                "enabled",
                "match",
                "region",
                "stream",
                "partitionKey",
                "appendNewline",
            ][..],
        ),
        (
            "s3",
            &[
                "enabled",
                "match",
                "bucket",
                "region",
                "totalFileSize",
                "uploadTimeout",
                "s3KeyFormat",
            ][..],
        ),
        (
            "input",
            &[
                "enabled",
                "tag",
                "path",
                "db",
                "memBufLimit",
                "skipLongLines",
                "refreshInterval",
            ][..],
        ),
        (
            "filter",
            &[
                "enabled",
                "match",
                "kubeURL",
                "mergeLog",
                "mergeLogKey",
                "keepLog",
                "k8sLoggingParser",
                "k8sLoggingExclude",
            ][..],
        ),
        (
            "service",
            &["extraService", "parsersFiles", "extraParsers"][..],
        ),
        ("serviceAccount", &["create", "annotations", "name"][..]),
        (
            "config",
            &["service", "inputs", "filters", "outputs", "customParsers"][..],
        ),
    ] {
        for k in keys {
            assert!(
                !v[group][k].is_null() || v[group].get(*k).is_some(),
                "values.{group}.{k} is missing"
            );
        }
    }
    assert!(v["resources"]["limits"]["memory"].is_string());
    assert!(v["tolerations"].is_array());
}

/// Without helm here (it is not in Debian's or the other registries' packages), the templates
/// are checked statically: every `.Values.x.y` they name exists in values.yaml, and inside a
/// `with .Values.group` block every `.key` is a key of that group. `helm template` renders
/// them where helm is installed (docs/deploy.md).
#[test]
fn chart_templates_name_only_values_that_exist() {
    let v = chart_values();
    let mut checked = 0;
    for e in std::fs::read_dir(chart_dir().join("templates")).unwrap() {
        let p = e.unwrap().path();
        let t = std::fs::read_to_string(&p).unwrap();
        let file = p.file_name().unwrap().to_string_lossy().into_owned();
        // Direct references.
        for (i, _) in t.match_indices(".Values.") {
            let path: String = t[i + ".Values.".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '_')
                .collect();
            let mut at = &v;
            for part in path.trim_end_matches('.').split('.') {
                assert!(
                    at.get(part).is_some(),
                    "{file}: .Values.{path} is not in values.yaml"
                );
                at = &at[part];
            }
            checked += 1;
        }
        // `with .Values.group` blocks: their `.key`s.
        let actions: Vec<(usize, String)> = t
            .match_indices("{{")
            .filter_map(|(i, _)| {
                let end = t[i..].find("}}")? + i;
                Some((i, t[i + 2..end].trim_start_matches('-').trim().to_string()))
            })
            .collect();
        let mut stack: Vec<Option<&Value>> = Vec::new();
        for (_, a) in &actions {
            let word = a.split_whitespace().next().unwrap_or("");
            match word {
                "with" | "if" | "range" | "define" => {
                    let group = a
                        .strip_prefix("with .Values.")
                        .filter(|g| !g.contains('.') && v[g.trim()].is_object())
                        .map(|g| &v[g.trim()]);
                    // Inside a group block, `with .key` / `if .key` name the group's keys.
                    if let (Some(Some(g)), Some(k)) = (
                        stack.last(),
                        a.split_whitespace()
                            .nth(1)
                            .and_then(|x| x.strip_prefix('.')),
                    ) {
                        if !k.is_empty() && !k.starts_with("Values") {
                            assert!(
                                g.get(k).is_some(),
                                "{file}: `{a}` names no key of its group"
                            );
                            checked += 1;
                        }
                    }
                    stack.push(group.or(stack.last().copied().flatten()));
                }
                "end" => {
                    stack.pop();
                }
                _ => {
                    if let (Some(Some(g)), Some(k)) = (stack.last(), a.strip_prefix('.')) {
                        let k = k.split([' ', '|']).next().unwrap_or("");
                        if !k.is_empty() && !k.starts_with("Values") {
                            assert!(
                                g.get(k).is_some(),
                                "{file}: `{{{{ {a} }}}}` names no key of its group"
                            );
                            checked += 1;
                        }
                    }
                }
            }
        }
        assert!(stack.is_empty(), "{file}: unbalanced blocks");
    }
    assert!(checked > 50, "only {checked} references checked");
}

/// The upstream chart's mode: config.service + inputs + filters + outputs is the config, with
/// custom_parsers.conf beside it, run as that chart runs it (`--workdir`, config under conf/).
#[test]
fn chart_upstream_config_strings_pass_dry_run() {
    let v = chart_values();
    let up =
        yaml_docs(&std::fs::read_to_string(chart_dir().join("ci/upstream-values.yaml")).unwrap())
            .pop()
            .unwrap();
    let s = |k: &str| -> String {
        up["config"][k]
            .as_str()
            .or(v["config"][k].as_str())
            .unwrap_or("")
            .to_string()
    };
    let root = tempfile::tempdir().unwrap();
    let r = root.path().display().to_string();
    let conf_dir = root.path().join("fluent-bit/etc/conf");
    std::fs::create_dir_all(&conf_dir).unwrap();
    std::fs::create_dir_all(root.path().join("var/log/containers")).unwrap();
    std::fs::copy(
        repo().join("crates/parsers/src/builtin_parsers.conf"),
        root.path().join("fluent-bit/etc/parsers.conf"),
    )
    .unwrap();
    let rebase = |t: String| {
        t.replace("/fluent-bit/", &format!("{r}/fluent-bit/"))
            .replace("/var/log/", &format!("{r}/var/log/"))
    };
    let conf = format!(
        "{}\n{}\n{}\n{}",
        s("service"),
        s("inputs"),
        s("filters"),
        s("outputs")
    );
    std::fs::write(conf_dir.join("fluent-bit.conf"), rebase(conf)).unwrap();
    std::fs::write(conf_dir.join("custom_parsers.conf"), s("customParsers")).unwrap();
    let out = logferry()
        .arg(format!("--workdir={r}/fluent-bit/etc"))
        .arg(format!("--config={r}/fluent-bit/etc/conf/fluent-bit.conf"))
        .arg("--dry-run")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("[error]"), "{err}");
}
