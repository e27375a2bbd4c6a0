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
    assert!(
        wait_until(Duration::from_secs(10), || sink("watch")
            .lock()
            .unwrap()
            .len()
            == 1)
        .await
    );
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
    assert!(
        wait_until(Duration::from_secs(10), || sink("watch")
            .lock()
            .unwrap()
            .len()
            == 102)
        .await
    );
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .unwrap()
        .unwrap();

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
