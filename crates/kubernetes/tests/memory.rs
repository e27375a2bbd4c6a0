//! Memory the kubernetes filter keeps per pod, measured as the growth of the process's resident
//! memory (the figure docs/configuration.md states; the allocator's own overhead included):
//! 2,000 pods, one container each, each logging one record, their metadata from preload files;
//! what stays is the cache entry, the per-file (tag) state and the `kubernetes` map built for
//! it. With `Labels Off` and `Annotations Off` the cache keeps neither, and it costs less.
//! Its own test binary, so other tests do not move the figure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use logferry_core::config::{Config, SectionKind};
use logferry_core::{EventTime, Map, Record};
use logferry_engine::testing::section;
use logferry_engine::BuildContext;
use serde_json::json;
use util::*;

/// Resident memory of this process, in bytes (`/proc/self/statm`).
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// Below the cache's 2,048-entry bound, so every pod stays.
const PODS: usize = 2_000;

/// A pod as a Helm chart's Deployment makes it: the seed's, with common labels and annotations.
fn typical_pod(name: &str) -> serde_json::Value {
    let mut p = pod(
        name,
        "shop",
        "node-a",
        json!({
            "kubectl.kubernetes.io/restartedAt": "2024-05-01T10:00:00Z",
            "checksum/config": "4f1c3a2b9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b",
            "prometheus.io/scrape": "true",
            "prometheus.io/port": "9102",
            "prometheus.io/path": "/metrics",
        }),
    );
    p["metadata"]["labels"] = json!({
        "app.kubernetes.io/name": "checkout",
        "app.kubernetes.io/instance": "checkout-prod",
        "app.kubernetes.io/version": "1.24.3",
        "app.kubernetes.io/managed-by": "Helm",
        "helm.sh/chart": "checkout-3.2.1",
        "pod-template-hash": "7f9d8c6b5",
    });
    p
}

/// Bytes kept per pod by a filter built with `extra` options, and the filter (kept alive, so
/// that the next measure does not reuse its memory).
async fn per_pod(extra: &[(&str, &str)]) -> (usize, Box<dyn logferry_engine::Filter>) {
    let tmp = tempfile::tempdir().unwrap();
    for i in 0..PODS {
        let name = format!("checkout-7f9d8c6b5-{i:05}");
        std::fs::write(
            tmp.path().join(format!("shop_{name}.meta")),
            typical_pod(&name).to_string(),
        )
        .unwrap();
    }
    let dir = tmp.path().display().to_string();
    let mut kv = vec![
        ("Kube_URL", "http://127.0.0.1:9"),
        ("Kube_Meta_Preload_Cache_Dir", dir.as_str()),
        ("Kube_Tag_Prefix", "kube.var.log.containers."),
        ("Kube_Namespace_File", "/nonexistent/namespace"),
    ];
    kv.extend_from_slice(extra);
    let s = section(SectionKind::Filter, &kv);
    let ctx = BuildContext::standalone("kubernetes.0", Config::default()).unwrap();
    let entries: Vec<_> = s.entries.iter().collect();
    let mut filter = (logferry_kubernetes::PLUGIN.build)(&ctx, &s, &entries)
        .map_err(|e| e.to_string())
        .unwrap();
    let tags: Vec<String> = (0..PODS)
        .map(|i| {
            format!(
                "kube.var.log.containers.{}",
                log_name(&format!("checkout-7f9d8c6b5-{i:05}"), "shop", i)
            )
        })
        .collect();
    // One pod first, so what is allocated once (regexes, tables) is not counted.
    let mut warm = vec![Record::new(EventTime(1), Map::new())];
    filter.filter(&tags[0], &mut warm).await;
    drop(warm);
    let before = rss();
    for tag in &tags[1..] {
        let mut body = Map::new();
        body.push("log", "hello\n");
        body.push("stream", "stdout");
        let mut records = vec![Record::new(EventTime(1), body)];
        filter.filter(tag, &mut records).await;
        assert!(
            records[0].body.get("kubernetes").is_some(),
            "enriched from the preload file"
        );
    }
    let after = rss();
    (after.saturating_sub(before) / (PODS - 1), filter)
}

#[tokio::test(flavor = "current_thread")]
async fn memory_per_pod() {
    let (lean, _a) = per_pod(&[("Labels", "Off"), ("Annotations", "Off")]).await;
    let (full, _b) = per_pod(&[]).await;
    println!(
        "kept per pod (one container, typical Helm pod: 6 labels, 5 annotations): \
         {full} bytes; with Labels Off and Annotations Off: {lean} bytes"
    );
    assert!(lean < full, "labels and annotations are not kept when off");
    assert!(full < 16 * 1024, "{full} bytes per pod");
}

/// What the filter adds fits the room tail leaves: a Docker record (made by tail with room for
/// two more pairs) that gains `data` (`Merge_Log_Key`) and `kubernetes` holds no unused pairs
/// and is not reallocated; with `Merge_Log Off` one pair stays unused (the price of not
/// reallocating every record of the seed's configuration). A doubling `push` would leave three
/// (168 bytes) in every record held under `Mem_Buf_Limit`.
#[tokio::test(flavor = "current_thread")]
async fn enriched_records_hold_no_spare_pairs() {
    let tmp = tempfile::tempdir().unwrap();
    let name = "checkout-7f9d8c6b5-00001";
    std::fs::write(
        tmp.path().join(format!("shop_{name}.meta")),
        typical_pod(name).to_string(),
    )
    .unwrap();
    let dir = tmp.path().display().to_string();
    for (merge_log, added, spare) in [("On", 2, 0), ("Off", 1, 1)] {
        let s = section(
            SectionKind::Filter,
            &[
                ("Kube_URL", "http://127.0.0.1:9"),
                ("Kube_Meta_Preload_Cache_Dir", dir.as_str()),
                ("Kube_Tag_Prefix", "kube.var.log.containers."),
                ("Kube_Namespace_File", "/nonexistent/namespace"),
                ("Merge_Log", merge_log),
                ("Merge_Log_Key", "data"),
            ],
        );
        let ctx = BuildContext::standalone("kubernetes.0", Config::default()).unwrap();
        let entries: Vec<_> = s.entries.iter().collect();
        let mut filter = (logferry_kubernetes::PLUGIN.build)(&ctx, &s, &entries)
            .map_err(|e| e.to_string())
            .unwrap();
        let tag = format!("kube.var.log.containers.{}", log_name(name, "shop", 1));
        let mut records: Vec<Record> = (0..3)
            .map(|i| {
                // As tail's Docker decoder makes it.
                let mut body = Map::with_capacity(5);
                body.push("log", format!("{{\"level\":\"info\",\"n\":{i}}}\n"));
                body.push("stream", "stdout");
                body.push("time", "2024-05-01T10:00:00.000000000Z");
                Record::new(EventTime(1), body)
            })
            .collect();
        let buffers: Vec<*const _> = records.iter().map(|r| r.body.0.as_ptr()).collect();
        filter.filter(&tag, &mut records).await;
        for (r, before) in records.iter().zip(buffers) {
            assert!(r.body.get("kubernetes").is_some(), "enriched: {r:?}");
            assert_eq!(r.body.len(), 3 + added, "Merge_Log {merge_log}: {r:?}");
            assert_eq!(
                r.body.0.capacity(),
                r.body.len() + spare,
                "Merge_Log {merge_log}: unused pairs"
            );
            assert_eq!(
                r.body.0.as_ptr(),
                before,
                "Merge_Log {merge_log}: the pairs were not reallocated"
            );
        }
    }
}
