//! An API server that accepts connections and never answers (overloaded, cut off by a network
//! policy, restarting behind a load balancer) must not slow the logs of pods whose metadata is
//! known. Fluent Bit 5.1.1 gets a known pod's lines out in such a hang (its lookups time out and
//! records go on without metadata); before logferry moved lookups off the router, that pod got
//! none of its lines out in 60 s.
//!
//! One test, two runs of the same pipeline: 60 pods the agent has never seen log first, then a
//! pod whose metadata is preloaded (`<namespace>_<pod>.meta`) logs a burst. Once the API server
//! is healthy, once black-holed. The burst's throughput in the hole must stay within a generous
//! ratio of the healthy one (no timing is asserted), and the unknown pods' records must all come
//! out — without metadata, in order, counted — after their bounded wait.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::time::{Duration, Instant};

use logferry_engine::testing::{sink, wait_until};
use logferry_engine::CancellationToken;
use logferry_kubernetes::testing::KubeApiServer;
use serde_json::json;
use util::*;

const UNKNOWN: usize = 60;
const BURST: usize = 20_000;
const KNOWN: &str = "known-6d5f8b7c9-abcde";

struct Run {
    /// Lines of the known pod per second.
    rate: f64,
    elapsed: Duration,
    /// Records of the unknown pods: (pod, line, had metadata).
    unknown: Vec<(String, String, bool)>,
    waited: u64,
    without_metadata: u64,
}

async fn run(black_hole: bool) -> Run {
    let name = if black_hole { "hole" } else { "healthy" };
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("c");
    let meta = tmp.path().join("meta");
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::create_dir_all(&meta).unwrap();
    let server = KubeApiServer::start(tmp.path()).await;
    std::fs::write(
        meta.join(format!("default_{KNOWN}.meta")),
        pod(KNOWN, "default", "node-a", json!({})).to_string(),
    )
    .unwrap();
    for i in 0..UNKNOWN {
        server.add_pod(pod(&format!("new-{i}"), "default", "node-a", json!({})));
    }
    let known_file = logs.join(log_name(KNOWN, "default", 9999));
    append(
        &known_file,
        &docker_line("ready\n", "stdout", "2024-05-01T10:00:00Z"),
    );
    let meta_dir = meta.display().to_string();
    let p = pipeline(
        &logs,
        &server,
        &[("Kube_Meta_Preload_Cache_Dir", meta_dir.as_str())],
        name,
        false,
    );
    let metrics = std::sync::Arc::clone(&p.metrics);
    let stop = CancellationToken::new();
    let task = tokio::spawn(p.run(stop.clone()));
    let count = |pod: &str| {
        sink(name)
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _)| t.contains(&format!("{pod}_default_")))
            .count()
    };
    assert!(
        wait_until(Duration::from_secs(20), || count(KNOWN) == 1).await,
        "{name}: the known pod's first line"
    );

    if black_hole {
        server.set_black_hole(true);
    }
    // Every unknown pod logs a line; a later chunk of each comes behind it.
    for i in 0..UNKNOWN {
        append(
            &logs.join(log_name(&format!("new-{i}"), "default", i)),
            &docker_line("first\n", "stdout", "2024-05-01T10:00:01Z"),
        );
    }
    if black_hole {
        assert!(
            wait_until(Duration::from_secs(10), || server.swallowed() > 0).await,
            "the lookups reached the black hole"
        );
    } else {
        assert!(
            wait_until(Duration::from_secs(20), || server.requests("get_pod")
                >= UNKNOWN as u64)
            .await,
            "the healthy server answered the lookups"
        );
    }
    for i in 0..UNKNOWN {
        append(
            &logs.join(log_name(&format!("new-{i}"), "default", i)),
            &docker_line("second\n", "stdout", "2024-05-01T10:00:02Z"),
        );
    }

    // The known pod's burst, timed from the write to the last record out.
    let burst: String = (0..BURST)
        .map(|i| docker_line(&format!("line {i}\n"), "stdout", "2024-05-01T10:00:03Z"))
        .collect();
    let t0 = Instant::now();
    append(&known_file, &burst);
    assert!(
        wait_until(Duration::from_secs(60), || count(KNOWN) == BURST + 1).await,
        "{name}: {} of {BURST} lines of the known pod came out in 60 s",
        count(KNOWN).saturating_sub(1)
    );
    let elapsed = t0.elapsed();

    // The unknown pods' records come out too: with metadata from the healthy server, without
    // it after their bounded wait in the hole.
    assert!(
        wait_until(Duration::from_secs(30), || (0..UNKNOWN)
            .all(|i| count(&format!("new-{i}")) == 2))
        .await,
        "{name}: every unknown pod's records came out"
    );
    let waited = filter_metric(&metrics, "kubernetes_records_waited");
    let without_metadata = filter_metric(&metrics, "kubernetes_records_without_metadata");
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .unwrap()
        .unwrap();

    let got = collected(name);
    let known: Vec<_> = got
        .iter()
        .map(as_json)
        .filter(|j| j["kubernetes"]["pod_name"] == KNOWN)
        .collect();
    assert_eq!(
        known.len(),
        BURST + 1,
        "{name}: the known pod's records have metadata"
    );
    assert!(known
        .iter()
        .all(|j| j["kubernetes"]["pod_id"] == format!("uid-{KNOWN}")));
    let unknown = sink(name)
        .lock()
        .unwrap()
        .iter()
        .filter_map(|(t, r)| {
            let j = as_json(r);
            let pod = t.split("new-").nth(1)?.split('_').next()?.to_string();
            Some((
                pod,
                j["log"].as_str().unwrap_or("").to_string(),
                j.get("kubernetes").is_some(),
            ))
        })
        .collect();
    Run {
        rate: BURST as f64 / elapsed.as_secs_f64(),
        elapsed,
        unknown,
        waited,
        without_metadata,
    }
}

fn check_order(name: &str, unknown: &[(String, String, bool)]) {
    for i in 0..UNKNOWN {
        let lines: Vec<&str> = unknown
            .iter()
            .filter(|(p, _, _)| *p == i.to_string())
            .map(|(_, l, _)| l.as_str())
            .collect();
        assert_eq!(
            lines,
            ["first\n", "second\n"],
            "{name}: pod new-{i} in order"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_api_server_does_not_slow_known_pods() {
    let healthy = run(false).await;
    let hole = run(true).await;
    println!(
        "known pod, {BURST} lines: healthy {:?} ({:.0} lines/s), black hole {:?} ({:.0} lines/s); \
         black hole: {} records waited, {} went on without metadata",
        healthy.elapsed, healthy.rate, hole.elapsed, hole.rate, hole.waited, hole.without_metadata
    );
    check_order("healthy", &healthy.unknown);
    check_order("hole", &hole.unknown);
    assert!(
        healthy.unknown.iter().all(|(_, _, meta)| *meta),
        "the healthy server gave every unknown pod its metadata"
    );
    assert!(
        hole.unknown.iter().all(|(_, _, meta)| !*meta),
        "in the hole, the unknown pods' records went on without metadata"
    );
    assert!(
        hole.without_metadata >= 2 * UNKNOWN as u64,
        "counted: {}",
        hole.without_metadata
    );
    assert!(hole.waited >= UNKNOWN as u64, "counted: {}", hole.waited);
    assert_eq!(healthy.without_metadata, 0);
    // Known pods are not slowed: a generous ratio (the two runs differ only by the hole).
    assert!(
        hole.rate * 4.0 >= healthy.rate,
        "known pod in the hole at {:.0} lines/s, healthy {:.0} lines/s",
        hole.rate,
        healthy.rate
    );
}
