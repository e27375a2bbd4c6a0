//! With `NODE_NAME` set (as the downward API does in a DaemonSet), metadata comes from one
//! node-scoped watch: 100 pods starting on the node cost the watch and at most 2 GETs (without
//! the watch they would cost 100: one per pod the cache does not know), and a pod deleted before
//! its last lines are read still gets metadata.
//! Its own test binary, because it sets NODE_NAME for the process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::time::Duration;

use logferry_engine::testing::{sink, wait_until};
use logferry_kubernetes::testing::KubeApiServer;
use serde_json::json;
use util::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_pod_starts_cost_the_watch_and_no_storm() {
    std::env::set_var("NODE_NAME", "node-a");
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("c");
    std::fs::create_dir_all(&logs).unwrap();
    let server = KubeApiServer::start(tmp.path()).await;
    // A pod on another node must not be listed to us.
    server.add_pod(pod("elsewhere", "default", "node-b", json!({})));
    let p = pipeline(&logs, &server, &[], "watch", false);
    let stop = logferry_engine::CancellationToken::new();
    let run = tokio::spawn(p.run(stop.clone()));
    // The watch starts with the first chunk; give it one.
    server.add_pod(pod("warmup", "default", "node-a", json!({})));
    std::fs::write(
        logs.join(log_name("warmup", "default", 999)),
        docker_line("w\n", "stdout", "2024-05-01T10:00:00Z"),
    )
    .unwrap();
    assert!(until_collected("watch", 1).await);
    assert!(
        wait_until(Duration::from_secs(10), || server.requests("watch") >= 1).await,
        "the watch started"
    );
    let gets_before = server.requests("get_pod");

    for i in 0..100 {
        let name = format!("pod-{i}");
        server.add_pod(pod(&name, "default", "node-a", json!({})));
        std::fs::write(
            logs.join(log_name(&name, "default", i)),
            docker_line(
                &format!("hello from {i}\n"),
                "stdout",
                "2024-05-01T10:00:00Z",
            ),
        )
        .unwrap();
    }
    assert!(
        wait_until(Duration::from_secs(30), || sink("watch")
            .lock()
            .unwrap()
            .len()
            == 101)
        .await,
        "got {}",
        sink("watch").lock().unwrap().len()
    );
    // A pod deleted before its last line is read keeps its metadata for late lines.
    server.delete_pod("default", "pod-7");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(logs.join(log_name("pod-7", "default", 7)))
        .unwrap();
    std::io::Write::write_all(
        &mut f,
        docker_line("last words\n", "stdout", "2024-05-01T10:00:02Z").as_bytes(),
    )
    .unwrap();
    assert!(until_collected("watch", 102).await);
    stop_and_join(stop, run).await;

    let got: Vec<_> = collected("watch").iter().map(as_json).collect();
    assert!(
        got.iter().all(|j| j["kubernetes"]["host"] == "node-a"),
        "every record has metadata"
    );
    let last = got.iter().find(|j| j["log"] == "last words\n").unwrap();
    assert_eq!(last["kubernetes"]["pod_name"], "pod-7");
    let gets = server.requests("get_pod") - gets_before;
    println!(
        "100 pod starts: watch requests {}, list requests {}, pod GETs {gets}, all requests {}",
        server.requests("watch"),
        server.requests("list"),
        server.total_requests()
    );
    assert!(gets <= 2, "{gets} GETs for 100 pods the watch showed");
    assert!(server.requests("watch") <= 3, "no watch storm");
    assert_eq!(
        server.requests("list"),
        1,
        "no relist while the watch is healthy"
    );
}

/// 10,000 pods created and deleted on the node (CronJobs, CI runners), all seen through the
/// watch: deleted pods are kept for late lines only up to the cache's bound, which the cache
/// reaches and never passes; the newest deletions are the ones kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_pods_through_the_watch_leave_the_cache_at_its_bound() {
    use logferry_kubernetes::cache::MAX_PODS;
    std::env::set_var("NODE_NAME", "node-a");
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("c");
    std::fs::create_dir_all(&logs).unwrap();
    let server = KubeApiServer::start(tmp.path()).await;
    let p = pipeline(&logs, &server, &[], "churn", false);
    let metrics = std::sync::Arc::clone(&p.metrics);
    let stop = logferry_engine::CancellationToken::new();
    let run = tokio::spawn(p.run(stop.clone()));
    server.add_pod(pod("warmup", "default", "node-a", json!({})));
    append(
        &logs.join(log_name("warmup", "default", 999)),
        &docker_line("w\n", "stdout", "2024-05-01T10:00:00Z"),
    );
    assert!(until_collected("churn", 1).await);
    assert!(wait_until(Duration::from_secs(10), || server.requests("watch") >= 1).await);

    // The gauge is sampled while the watch works through the churn.
    let size = || filter_metric(&metrics, "kubernetes_cache_pods");
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (metrics, sampling) = (std::sync::Arc::clone(&metrics), sampling.clone());
        tokio::spawn(async move {
            let mut max = 0;
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                max = max.max(filter_metric(&metrics, "kubernetes_cache_pods"));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            max
        })
    };
    server.churn("ci", "job", "node-a", 10_000);
    // Drained once the gauge stops moving (every ADDED event inserts): bounded wait.
    let (mut last, mut still) = (u64::MAX, 0);
    for _ in 0..300 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = size();
        still = if now == last { still + 1 } else { 0 };
        last = now;
        if still >= 10 {
            break;
        }
    }
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let max = sampler.await.unwrap();
    let gets_before = server.requests("get_pod");
    // A late line of the last pod deleted: kept, so no GET.
    append(
        &logs.join(log_name("job-9999", "ci", 9999)),
        &docker_line("late\n", "stdout", "2024-05-01T10:00:01Z"),
    );
    assert!(until_collected("churn", 2).await);
    stop_and_join(stop, run).await;
    println!(
        "10,000 pods created and deleted: cache {last} entries at the end, at most {max} \
         (bound {MAX_PODS}); requests: {} watch, {} list, {} pod GETs",
        server.requests("watch"),
        server.requests("list"),
        server.requests("get_pod")
    );
    assert!(max <= MAX_PODS as u64, "the cache held {max} entries");
    assert!(
        last >= (MAX_PODS - MAX_PODS / 16) as u64,
        "the churn filled the cache to its bound ({last}): the watch saw it"
    );
    let late = collected("churn")
        .iter()
        .map(as_json)
        .find(|j| j["log"] == "late\n")
        .unwrap();
    assert_eq!(late["kubernetes"]["pod_id"], "uid-job-9999");
    assert_eq!(server.requests("get_pod"), gets_before, "from the cache");
}

/// When the API server restarts, the watches of many agents come back spread out in time
/// (full-jitter back-off), resume from their resource version without listing again, and list
/// again only when the server says that version is gone (410).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_api_restart_reconnects_spread_out_and_do_not_relist() {
    use logferry_kubernetes::api::{watch_node, ApiAccess, WatchStats};
    use logferry_kubernetes::cache::Cache;
    use logferry_kubernetes::meta::MetaShape;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::Instant;

    const AGENTS: usize = 20;
    let tmp = tempfile::tempdir().unwrap();
    let mut server = KubeApiServer::start(tmp.path()).await;
    let settings = api_settings(&server);
    let stop = logferry_engine::CancellationToken::new();
    let (mut stats, mut caches) = (Vec::new(), Vec::new());
    let t0 = Instant::now();
    for i in 0..AGENTS {
        let node = format!("node-{i}");
        server.add_pod(pod(&format!("p-{i}"), "default", &node, json!({})));
        let api = Arc::new(ApiAccess::new(&settings, Arc::default()).unwrap());
        let s = WatchStats::default();
        stats.push(s.clone());
        let cache = Cache::new(Duration::ZERO);
        caches.push(Arc::clone(&cache));
        tokio::spawn(watch_node(
            api,
            node,
            cache,
            MetaShape::default(),
            s,
            stop.clone(),
        ));
    }
    let watching = |server: &KubeApiServer, since: Instant| {
        let log = server.request_log();
        (0..AGENTS)
            .filter_map(|i| {
                let node = format!("node-{i}");
                log.iter()
                    .find(|s| {
                        s.kind == "watch" && s.at >= since && s.node.as_deref() == Some(&node)
                    })
                    .map(|s| s.at)
            })
            .collect::<Vec<_>>()
    };
    assert!(
        wait_until(Duration::from_secs(20), || watching(&server, t0).len()
            == AGENTS)
        .await,
        "watches: {}, lists: {}, unauthorized: {}",
        server.requests("watch"),
        server.requests("list"),
        server.requests("unauthorized")
    );

    server.stop();
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.restart().await;
    let back = Instant::now();
    assert!(
        wait_until(Duration::from_secs(30), || watching(&server, back).len()
            == AGENTS)
        .await,
        "every agent came back"
    );
    let mut at: Vec<f64> = watching(&server, back)
        .iter()
        .map(|t| t.duration_since(back).as_secs_f64())
        .collect();
    at.sort_by(f64::total_cmp);
    let crowd = at
        .iter()
        .map(|a| at.iter().filter(|b| **b >= *a && **b < *a + 0.1).count())
        .max()
        .unwrap_or(0);
    println!(
        "{AGENTS} agents after the API restart came back over {:.2} s (first {:.2} s, last {:.2} s), \
         at most {crowd} within 100 ms",
        at[AGENTS - 1] - at[0],
        at[0],
        at[AGENTS - 1]
    );
    assert!(
        crowd <= AGENTS / 2,
        "{crowd} of {AGENTS} reconnected within 100 ms: {at:?}"
    );
    let relists: u64 = stats
        .iter()
        .map(|s| s.relists.load(Ordering::Relaxed))
        .sum();
    assert_eq!(relists, 0, "resumed from their resource version, no relist");
    assert!(stats
        .iter()
        .all(|s| s.restarts.load(Ordering::Relaxed) >= 1));
    assert_eq!(server.requests("list"), AGENTS as u64);

    // Restarted after a compaction: each agent lists once more, once. A pod deleted while
    // the watches were away is reconciled by the list: kept for late lines, then evicted.
    server.stop();
    server.delete_pod_quietly("default", "p-0");
    server.compact();
    server.restart().await;
    // Bounded by the watch's longest back-off (30 s) and then some: under a loaded CI an
    // agent's reconnects can fail a few times in a row while the server comes back, and
    // each failure doubles its back-off (a 30 s bound failed once in a CI run).
    assert!(
        wait_until(Duration::from_secs(70), || stats
            .iter()
            .all(|s| s.relists.load(Ordering::Relaxed) == 1))
        .await,
        "each agent relisted once after 410: {:?}",
        server
            .request_log()
            .iter()
            .rev()
            .take(8)
            .map(|s| (s.kind, s.node.clone(), s.resource_version.clone()))
            .collect::<Vec<_>>()
    );
    // An agent counts its relist before its list request goes out: wait for the requests
    // (cancelling at once could stop the last one on its way), then check none came twice.
    assert!(
        wait_until(Duration::from_secs(30), || server.requests("list")
            >= 2 * AGENTS as u64)
        .await,
        "every relist reached the server"
    );
    stop.cancel();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(server.requests("list"), 2 * AGENTS as u64);
    let later = Instant::now() + logferry_kubernetes::cache::DELETED_KEEP;
    assert!(
        caches[0].peek("default/p-0").is_some(),
        "kept for late lines"
    );
    assert_eq!(
        caches[0].sweep(later),
        1,
        "the pod deleted meanwhile goes after its keep"
    );
    assert_eq!(caches[1].sweep(later), 0, "running pods stay");
}

/// The node's pods are listed a page at a time (`limit`, then `continue`), so a list never
/// holds more than one page of Pod objects: 250 pods come in three requests, every one of
/// them reaches the cache, none of another node's, and the watch starts from the list's
/// version (a pod added after it is seen).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_list_comes_in_pages() {
    use logferry_kubernetes::api::{watch_node, ApiAccess, WatchStats, LIST_PAGE};
    use logferry_kubernetes::cache::Cache;
    use logferry_kubernetes::meta::MetaShape;
    use std::sync::Arc;

    const PODS: usize = 250;
    let tmp = tempfile::tempdir().unwrap();
    let server = KubeApiServer::start(tmp.path()).await;
    for i in 0..PODS {
        server.add_pod(pod(&format!("p-{i:03}"), "default", "node-x", json!({})));
    }
    for i in 0..30 {
        server.add_pod(pod(&format!("other-{i}"), "default", "node-y", json!({})));
    }
    let settings = api_settings(&server);
    let api = Arc::new(ApiAccess::new(&settings, Arc::default()).unwrap());
    let cache = Cache::new(Duration::ZERO);
    let stats = WatchStats::default();
    let stop = logferry_engine::CancellationToken::new();
    let task = tokio::spawn(watch_node(
        api,
        "node-x".to_string(),
        Arc::clone(&cache),
        MetaShape::default(),
        stats.clone(),
        stop.clone(),
    ));
    assert!(
        wait_until(Duration::from_secs(20), || server.requests("watch") >= 1).await,
        "the watch started after the list; lists: {}",
        server.requests("list")
    );
    assert_eq!(cache.len(), PODS, "every listed pod is cached");
    for i in 0..PODS {
        assert!(
            cache.peek(&format!("default/p-{i:03}")).is_some(),
            "p-{i:03}"
        );
    }
    assert!(
        cache.peek("default/other-0").is_none(),
        "another node's pod"
    );
    assert_eq!(
        server.requests("list"),
        PODS.div_ceil(LIST_PAGE) as u64,
        "one request per page of {LIST_PAGE}"
    );
    // The watch runs from the list's version: a pod added now reaches the cache through it.
    server.add_pod(pod("late", "default", "node-x", json!({})));
    assert!(
        wait_until(Duration::from_secs(20), || cache
            .peek("default/late")
            .is_some())
        .await,
        "the pod added after the list came through the watch"
    );
    assert_eq!(
        stats.relists.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "no relist"
    );
    stop.cancel();
    task.await.unwrap();
}

/// API access to `server` as a DaemonSet's agent has it: its CA file and its token file.
fn api_settings(server: &KubeApiServer) -> logferry_kubernetes::api::ApiSettings {
    logferry_kubernetes::api::ApiSettings {
        url: server.url(),
        ca_file: Some(server.ca_file.clone()),
        ca_path: None,
        verify: true,
        token: logferry_kubernetes::api::TokenSource::File(server.token_file.clone()),
        token_ttl: Duration::from_secs(600),
    }
}
