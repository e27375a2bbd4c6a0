//! The kubernetes filter against the HTTPS test API server (CA file, bearer token): the seed's
//! nginx record, JSON merge under a key and at the root, exclusion, token rotation, the API down
//! at start, and the API load of 1,000 records.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::time::Duration;

use logferry_engine::testing::{sink, wait_until};
use logferry_kubernetes::testing::KubeApiServer;
use serde_json::json;
use util::*;

/// The seed's case (../shared/conformance/seed-nginx): its line through tail (docker) and the
/// kubernetes filter with the seed's options gives the seed's record, compared as the fixture's
/// README says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_nginx_record_matches_the_fixture() {
    assert!(
        shared().exists(),
        "{} is missing: this test compares with the seed's shared conformance fixture",
        shared().display()
    );
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("containers");
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::write(
        logs.join(format!("{SEED_POD}_default_nginx-{SEED_ID}.log")),
        seed_line(),
    )
    .unwrap();
    let server = KubeApiServer::start(tmp.path()).await;
    server.add_pod(seed_pod());
    let p = pipeline(
        &logs,
        &server,
        &[
            ("Merge_Log", "On"),
            ("Merge_Log_Key", "data"),
            ("K8S-Logging.Parser", "On"),
            ("K8S-Logging.Exclude", "On"),
        ],
        "seed",
        true,
    );
    run_to_end(p).await;
    let got = collected("seed");
    assert_eq!(got.len(), 1);
    let rec = &got[0];
    assert_eq!(
        rec.time.as_millis(),
        1_576_777_272_000,
        "time from the nginx parser"
    );
    logferry_kubernetes::testing::assert_matches_seed_record(as_json(rec), &expected_record());
    assert!(server.requests("get_pod") <= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_merge_under_a_key_and_at_the_root() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("c");
    std::fs::create_dir_all(&logs).unwrap();
    let server = KubeApiServer::start(tmp.path()).await;
    server.add_pod(pod("app-1", "prod", "n1", json!({})));
    let app = r#"{ "message": "A new user signed up!", "service": "user-service", "metadata": { "source": "mobile" }, "kubernetes": "spoofed" }"#;
    std::fs::write(
        logs.join(log_name("app-1", "prod", 1)),
        docker_line(&format!("{app}\n"), "stdout", "2024-05-01T10:00:00Z")
            + &docker_line("plain text\n", "stdout", "2024-05-01T10:00:01Z"),
    )
    .unwrap();
    run_to_end(pipeline(
        &logs,
        &server,
        &[("Merge_Log", "On"), ("Merge_Log_Key", "data")],
        "merge_key",
        true,
    ))
    .await;
    let got: Vec<_> = collected("merge_key").iter().map(as_json).collect();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0]["data"]["message"], "A new user signed up!");
    assert_eq!(got[0]["data"]["metadata"]["source"], "mobile");
    assert!(
        got[0]["data"].get("kubernetes").is_none(),
        "an application's kubernetes key is dropped"
    );
    assert_eq!(got[0]["kubernetes"]["pod_name"], "app-1");
    assert_eq!(
        got[0]["log"],
        format!("{app}\n"),
        "Keep_Log On keeps the original"
    );
    assert!(got[1].get("data").is_none(), "non-JSON log is left alone");
    assert_eq!(got[1]["log"], "plain text\n");

    run_to_end(pipeline(
        &logs,
        &server,
        &[("Merge_Log", "On"), ("Keep_Log", "Off")],
        "merge_root",
        true,
    ))
    .await;
    let got: Vec<_> = collected("merge_root").iter().map(as_json).collect();
    assert_eq!(got[0]["service"], "user-service");
    assert_eq!(got[0]["kubernetes"]["namespace_name"], "prod");
    assert!(
        got[0].get("log").is_none(),
        "Keep_Log Off removes log after a merge"
    );
    assert_eq!(
        got[1]["log"], "plain text\n",
        "an unmerged record keeps its log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclude_annotation_drops_only_that_pods_records() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("c");
    std::fs::create_dir_all(&logs).unwrap();
    let server = KubeApiServer::start(tmp.path()).await;
    server.add_pod(pod(
        "quiet",
        "default",
        "n1",
        json!({"fluentbit.io/exclude": "true"}),
    ));
    server.add_pod(pod(
        "chatty",
        "default",
        "n1",
        json!({"fluentbit.io/exclude_stderr": "true"}),
    ));
    server.add_pod(pod("loud", "default", "n1", json!({})));
    for (i, name) in ["quiet", "chatty", "loud"].iter().enumerate() {
        let text = docker_line("to stdout\n", "stdout", "2024-05-01T10:00:00Z")
            + &docker_line("to stderr\n", "stderr", "2024-05-01T10:00:01Z");
        std::fs::write(logs.join(log_name(name, "default", i)), text).unwrap();
    }
    run_to_end(pipeline(
        &logs,
        &server,
        &[("K8S-Logging.Exclude", "On")],
        "exclude",
        true,
    ))
    .await;
    let mut got: Vec<(String, String)> = collected("exclude")
        .iter()
        .map(as_json)
        .map(|j| {
            (
                j["kubernetes"]["pod_name"].as_str().unwrap().to_string(),
                j["stream"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("chatty".into(), "stdout".into()),
            ("loud".into(), "stderr".into()),
            ("loud".into(), "stdout".into())
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_records_from_one_pod_cost_one_request() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("c");
    std::fs::create_dir_all(&logs).unwrap();
    let server = KubeApiServer::start(tmp.path()).await;
    server.add_pod(pod("busy", "default", "n1", json!({})));
    let mut text = String::new();
    for i in 0..1000 {
        text.push_str(&docker_line(
            &format!("line {i}\n"),
            "stdout",
            "2024-05-01T10:00:00Z",
        ));
    }
    std::fs::write(logs.join(log_name("busy", "default", 7)), text).unwrap();
    run_to_end(pipeline(&logs, &server, &[], "busy", true)).await;
    let got = collected("busy");
    assert_eq!(got.len(), 1000);
    assert!(got
        .iter()
        .all(|r| as_json(r)["kubernetes"]["pod_name"] == "busy"));
    println!(
        "API requests for 1,000 records of one pod: {}",
        server.total_requests()
    );
    assert!(
        server.total_requests() <= 1,
        "{} requests",
        server.total_requests()
    );
}

/// Records that waited for their pod's first lookup (a slow API server) go on as the chunks
/// tail read them in, each with the pod's metadata, in order. Merged with the chunk that found
/// the metadata, as they were, everything the input read during the lookup went on as one
/// chunk (11.6 MB in the first 0.1 s of `logferry-bench`'s P5), which the output then held
/// whole while its first flush started. And more than 10,000 of them wait: the queue's old
/// bound (10,000 records) sent the oldest on without metadata.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_that_waited_for_a_lookup_go_on_in_the_chunks_they_came_in() {
    const LINES: usize = 12_000;
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("c");
    std::fs::create_dir_all(&logs).unwrap();
    let server = KubeApiServer::start(tmp.path()).await;
    server.add_pod(pod("slow", "default", "n1", json!({})));
    server.set_delay(Duration::from_millis(1500));
    // ~860 KB: tail hands it on in chunks of at most 128 KB of lines.
    let text: String = (0..LINES)
        .map(|i| docker_line(&format!("line {i}\n"), "stdout", "2024-05-01T10:00:00Z"))
        .collect();
    std::fs::write(logs.join(log_name("slow", "default", 5)), text).unwrap();
    let p = pipeline(&logs, &server, &[], "waited", false);
    let metrics = std::sync::Arc::clone(&p.metrics);
    let stop = logferry_engine::CancellationToken::new();
    let run = tokio::spawn(p.run(stop.clone()));
    assert!(
        until_collected("waited", LINES).await,
        "every line came out"
    );
    stop_and_join(stop, run).await;
    let got = collected("waited");
    let lines: Vec<String> = got
        .iter()
        .map(|r| as_json(r)["log"].as_str().unwrap_or("").to_string())
        .collect();
    let want: Vec<String> = (0..LINES).map(|i| format!("line {i}\n")).collect();
    assert_eq!(lines, want, "each line once, in order");
    assert!(got
        .iter()
        .all(|r| as_json(r)["kubernetes"]["pod_name"] == "slow"));
    assert_eq!(
        filter_metric(&metrics, "kubernetes_records_waited"),
        LINES as u64,
        "all of them waited for the lookup"
    );
    let chunks = logferry_engine::testing::chunks("waited");
    assert!(chunks >= 3, "{chunks} chunks reached the output");
}

/// With the filter stage on four shards (`logferry.filter_workers 4`), twelve pods' files:
/// every record gets its own pod's metadata, each file's lines stay in order, and the
/// instances share one cache (one request per pod at most).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_filter_stage_enriches_every_pod_once() {
    const PODS: usize = 12;
    const LINES: usize = 200;
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("c");
    std::fs::create_dir_all(&logs).unwrap();
    let server = KubeApiServer::start(tmp.path()).await;
    for p in 0..PODS {
        let name = format!("web-{p}");
        server.add_pod(pod(&name, "default", "n1", json!({})));
        let mut text = String::new();
        for i in 0..LINES {
            text.push_str(&docker_line(
                &format!("{name} {i}\n"),
                "stdout",
                "2024-05-01T10:00:00Z",
            ));
        }
        std::fs::write(logs.join(log_name(&name, "default", p)), text).unwrap();
    }
    run_to_end(pipeline_with(
        &logs,
        &server,
        &[],
        "sharded",
        true,
        &[("logferry.filter_workers", "4")],
    ))
    .await;
    let got = collected("sharded");
    assert_eq!(got.len(), PODS * LINES);
    for p in 0..PODS {
        let name = format!("web-{p}");
        let lines: Vec<String> = got
            .iter()
            .map(as_json)
            .filter(|j| j["kubernetes"]["pod_name"] == name.as_str())
            .map(|j| j["log"].as_str().unwrap_or_default().to_string())
            .collect();
        let want: Vec<String> = (0..LINES).map(|i| format!("{name} {i}\n")).collect();
        assert_eq!(lines, want, "{name}: its own metadata, in order");
    }
    assert!(
        server.total_requests() <= PODS as u64,
        "{} requests for {PODS} pods",
        server.total_requests()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_token_file_is_picked_up() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("c");
    std::fs::create_dir_all(&logs).unwrap();
    let server = KubeApiServer::start(tmp.path()).await;
    server.add_pod(pod("first", "default", "n1", json!({})));
    server.add_pod(pod("second", "default", "n1", json!({})));
    std::fs::write(
        logs.join(log_name("first", "default", 1)),
        docker_line("a\n", "stdout", "2024-05-01T10:00:00Z"),
    )
    .unwrap();
    let p = pipeline(&logs, &server, &[("Kube_Token_TTL", "600")], "token", false);
    let stop = logferry_engine::CancellationToken::new();
    let run = tokio::spawn(p.run(stop.clone()));
    assert!(until_collected("token", 1).await);
    // The projected token rotates: the old one is refused from now on.
    server.set_token("test-token-2", true);
    std::fs::write(
        logs.join(log_name("second", "default", 2)),
        docker_line("b\n", "stdout", "2024-05-01T10:00:01Z"),
    )
    .unwrap();
    assert!(until_collected("token", 2).await);
    stop_and_join(stop, run).await;
    let second = as_json(&collected("token")[1]);
    assert_eq!(
        second["kubernetes"]["pod_name"], "second",
        "metadata fetched with the new token"
    );
    assert!(server.requests("unauthorized") >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_down_at_start_then_up() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("c");
    std::fs::create_dir_all(&logs).unwrap();
    let mut server = KubeApiServer::start(tmp.path()).await;
    server.add_pod(pod("early", "default", "n1", json!({})));
    server.stop();
    let file = logs.join(log_name("early", "default", 3));
    std::fs::write(
        &file,
        docker_line("while down\n", "stdout", "2024-05-01T10:00:00Z"),
    )
    .unwrap();
    let p = pipeline(&logs, &server, &[], "down", false);
    let stop = logferry_engine::CancellationToken::new();
    let run = tokio::spawn(p.run(stop.clone()));
    assert!(
        wait_until(Duration::from_secs(10), || sink("down")
            .lock()
            .unwrap()
            .len()
            == 1)
        .await,
        "records flow while the API is down"
    );
    assert!(as_json(&collected("down")[0]).get("kubernetes").is_none());
    server.restart().await;
    // After the back-off, new lines of the same pod get metadata again.
    let mut ok = false;
    for i in 0..20 {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&file)
            .unwrap();
        std::io::Write::write_all(
            &mut f,
            docker_line(&format!("after {i}\n"), "stdout", "2024-05-01T10:00:01Z").as_bytes(),
        )
        .unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        if collected("down")
            .iter()
            .any(|r| as_json(r)["kubernetes"]["pod_name"] == "early")
        {
            ok = true;
            break;
        }
    }
    stop_and_join(stop, run).await;
    assert!(ok, "metadata came back once the API server did");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_meta_owner_references_and_kubelet() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("c");
    std::fs::create_dir_all(&logs).unwrap();
    let server = KubeApiServer::start(tmp.path()).await;
    server.add_pod(pod("owned", "team-a", "n1", json!({"a": "b"})));
    server.add_namespace(json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "team-a", "labels": {"team": "a"}, "annotations": {"owner": "ops"}}}));
    std::fs::write(
        logs.join(log_name("owned", "team-a", 4)),
        docker_line("x\n", "stdout", "2024-05-01T10:00:00Z"),
    )
    .unwrap();
    run_to_end(pipeline(
        &logs,
        &server,
        &[
            ("Namespace_Labels", "On"),
            ("Namespace_Annotations", "On"),
            ("Owner_References", "On"),
            ("Annotations", "Off"),
        ],
        "nsmeta",
        true,
    ))
    .await;
    let j = as_json(&collected("nsmeta")[0]);
    assert_eq!(j["kubernetes_namespace"]["name"], "team-a");
    assert_eq!(j["kubernetes_namespace"]["labels"]["team"], "a");
    assert_eq!(j["kubernetes_namespace"]["annotations"]["owner"], "ops");
    assert_eq!(j["kubernetes"]["ownerReferences"][0]["kind"], "ReplicaSet");
    assert!(
        j["kubernetes"].get("annotations").is_none(),
        "Annotations Off"
    );

    // Use_Kubelet: one GET of the kubelet's /pods instead of per-pod GETs to the API server.
    let port = server.addr.port().to_string();
    run_to_end(pipeline(
        &logs,
        &server,
        &[
            ("Use_Kubelet", "On"),
            ("Kubelet_Host", "127.0.0.1"),
            ("Kubelet_Port", &port),
        ],
        "kubelet",
        true,
    ))
    .await;
    let j = as_json(&collected("kubelet")[0]);
    assert_eq!(j["kubernetes"]["pod_name"], "owned");
    assert_eq!(server.requests("kubelet_pods"), 1);

    // Dummy_Meta: metadata from the tag only, no API call.
    let before = server.total_requests();
    run_to_end(pipeline(
        &logs,
        &server,
        &[("Dummy_Meta", "On")],
        "dummy",
        true,
    ))
    .await;
    let j = as_json(&collected("dummy")[0]);
    assert_eq!(j["kubernetes"]["namespace_name"], "team-a");
    assert_eq!(j["kubernetes"]["container_name"], "nginx");
    assert_eq!(server.total_requests(), before);
}

/// Fluent Bit options that logferry accepts but does not apply are said (`--dry-run`, and the
/// log at start), never taken silently; options it applies are not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_accepted_but_not_applied_are_noted() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("c");
    std::fs::create_dir_all(&logs).unwrap();
    let server = KubeApiServer::start(tmp.path()).await;
    let p = pipeline(
        &logs,
        &server,
        &[
            ("tls.debug", "4"),
            ("DNS_Retries", "3"),
            ("Buffer_Size", "0"),
            ("Labels", "Off"),
            ("Kube_Meta_Cache_TTL", "60"),
        ],
        "notes",
        true,
    );
    // The test's tail Path matches no file yet, which is a note of its own.
    let notes: Vec<String> = p
        .notes
        .iter()
        .map(|n| n.to_string())
        .filter(|n| !n.contains(": Path: matches no file"))
        .collect();
    assert_eq!(notes.len(), 3, "{notes:#?}");
    for key in ["tls.debug", "DNS_Retries", "Buffer_Size"] {
        assert!(
            notes
                .iter()
                .any(|n| n.contains(key) && n.contains("not applied")),
            "{key}: {notes:#?}"
        );
    }
}

/// A container's per-file state goes once tail closes its file (deleted here), not after the
/// 10-minute idle timeout: 20 files, 19 deleted, and `kubernetes_tags` comes down to the one
/// file still written to. The pods of the closed files leave the metadata cache with them
/// (`kubernetes_cache_pods` 20 → 1): no line can come for them any more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_of_deleted_files_goes_when_tail_closes_them() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("c");
    std::fs::create_dir_all(&logs).unwrap();
    let server = KubeApiServer::start(tmp.path()).await;
    let mut files = Vec::new();
    for i in 0..20 {
        let name = format!("churn-{i}");
        server.add_pod(pod(&name, "default", "n1", json!({})));
        let f = logs.join(log_name(&name, "default", i));
        std::fs::write(&f, docker_line("hello\n", "stdout", "2024-05-01T10:00:00Z")).unwrap();
        files.push(f);
    }
    let p = pipeline(&logs, &server, &[], "retired", false);
    let metrics = std::sync::Arc::clone(&p.metrics);
    let stop = logferry_engine::CancellationToken::new();
    let run = tokio::spawn(p.run(stop.clone()));
    assert!(until_collected("retired", 20).await);
    assert_eq!(filter_metric(&metrics, "kubernetes_tags"), 20);
    assert_eq!(filter_metric(&metrics, "kubernetes_cache_pods"), 20);
    for f in &files[1..] {
        std::fs::remove_file(f).unwrap();
    }
    // Records keep coming from the file left (the filter sweeps as it works), for at most
    // 40 s: tail closes a deleted file after Rotate_Wait (5 s), the filter sweeps every 5 s.
    let (mut left, mut pods) = (20, 20);
    for _ in 0..80 {
        append(
            &files[0],
            &docker_line("still here\n", "stdout", "2024-05-01T10:00:01Z"),
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        left = filter_metric(&metrics, "kubernetes_tags");
        pods = filter_metric(&metrics, "kubernetes_cache_pods");
        if left == 1 && pods == 1 {
            break;
        }
    }
    stop_and_join(stop, run).await;
    assert_eq!(left, 1, "state kept for deleted files");
    assert_eq!(pods, 1, "metadata kept for pods whose files are gone");
}

/// With the filter stage on 8 shards, one pod's six files are read by several instances of the
/// filter. When five of them are deleted and closed, the pod stays in the cache (the one file
/// left is open on another instance) and is not asked for again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_stays_cached_while_any_instance_reads_one_of_its_files() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("c");
    std::fs::create_dir_all(&logs).unwrap();
    let server = KubeApiServer::start(tmp.path()).await;
    server.add_pod(pod("multi", "default", "n1", json!({})));
    let files: Vec<_> = (0..6)
        .map(|i| {
            let f = logs.join(log_name("multi", "default", 100 + i));
            std::fs::write(&f, docker_line("hello\n", "stdout", "2024-05-01T10:00:00Z")).unwrap();
            f
        })
        .collect();
    let p = pipeline_with(
        &logs,
        &server,
        &[],
        "multi",
        false,
        &[("logferry.filter_workers", "8")],
    );
    let metrics = std::sync::Arc::clone(&p.metrics);
    let stop = logferry_engine::CancellationToken::new();
    let run = tokio::spawn(p.run(stop.clone()));
    assert!(until_collected("multi", 6).await);
    assert_eq!(
        filter_metric(&metrics, "kubernetes_tags"),
        6,
        "summed over the instances"
    );
    assert_eq!(server.total_requests(), 1);
    for f in &files[1..] {
        std::fs::remove_file(f).unwrap();
    }
    // Tail closes a deleted file after Rotate_Wait (5 s); each instance sweeps every 5 s.
    let mut tags = 6;
    for _ in 0..80 {
        append(
            &files[0],
            &docker_line("still here\n", "stdout", "2024-05-01T10:00:01Z"),
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        tags = filter_metric(&metrics, "kubernetes_tags");
        if tags == 1 {
            break;
        }
    }
    // Two more sweeps with the last file still written to.
    for _ in 0..24 {
        append(
            &files[0],
            &docker_line("still here\n", "stdout", "2024-05-01T10:00:02Z"),
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let pods = filter_metric(&metrics, "kubernetes_cache_pods");
    let requests = server.total_requests();
    stop_and_join(stop, run).await;
    assert_eq!(tags, 1, "the deleted files' state went");
    assert_eq!(
        pods, 1,
        "the pod stays cached while one of its files is open"
    );
    assert_eq!(requests, 1, "and is not asked for again");
    let got = collected("multi");
    assert!(
        got.iter()
            .all(|r| as_json(r)["kubernetes"]["pod_name"] == "multi"),
        "every record has its metadata"
    );
}

/// TLS verification is on by default; `tls.verify Off` works but is warned about at start
/// (and in `--dry-run`), never taken silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turning_tls_verification_off_is_warned_about() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("c");
    std::fs::create_dir_all(&logs).unwrap();
    let server = KubeApiServer::start(tmp.path()).await;
    let tls_notes = |extra: &[(&str, &str)], sink: &str| -> Vec<String> {
        pipeline(&logs, &server, extra, sink, true)
            .notes
            .iter()
            .map(|n| n.to_string())
            .filter(|n| n.contains("verification is off"))
            .collect()
    };
    assert!(tls_notes(&[], "tls_default").is_empty());
    let notes = tls_notes(&[("tls.verify", "Off")], "tls_off");
    assert_eq!(notes.len(), 1, "{notes:#?}");
    assert!(notes[0].contains("tls.verify"), "{notes:#?}");
}
