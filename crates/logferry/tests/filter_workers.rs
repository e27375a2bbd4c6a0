//! The filter stage on several tasks (`[SERVICE] logferry.filter_workers`), through the binary:
//! container log files → kubernetes (pod metadata from `Kube_Meta_Preload_Cache_Dir`) → a
//! `file` output. The agent says how many tasks the filters run on, or why it cannot shard
//! them, and every file's records arrive whole, in order, with their own pod's metadata.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

const PODS: usize = 9;
const LINES: usize = 400;

/// Writes `PODS` container log files and their pods' preload files; returns the config.
fn setup(dir: &std::path::Path, service: &str, extra_filter: &str) -> std::path::PathBuf {
    let logs = dir.join("containers");
    let meta = dir.join("meta");
    let out = dir.join("out");
    for d in [&logs, &meta, &out] {
        std::fs::create_dir_all(d).unwrap();
    }
    for p in 0..PODS {
        let pod = format!("api-{p}");
        let pod_json = serde_json::json!({
            "kind": "Pod",
            "metadata": {"name": pod, "namespace": "shop", "uid": format!("uid-{p}"),
                         "labels": {"app": "api", "n": p.to_string()}},
            "spec": {"nodeName": "node-1", "containers": [{"name": "app", "image": "api:1"}]},
            "status": {"containerStatuses": []}
        });
        write(&meta, &format!("shop_{pod}.meta"), &pod_json.to_string());
        let mut text = String::new();
        for i in 0..LINES {
            let line = serde_json::json!({
                "log": format!("{pod} line {i}\n"),
                "stream": "stdout",
                "time": "2026-11-30T10:00:00.000000000Z",
            });
            text.push_str(&line.to_string());
            text.push('\n');
        }
        write(&logs, &format!("{pod}_shop_app-{p:064x}.log"), &text);
    }
    let conf = dir.join("agent.conf");
    std::fs::write(
        &conf,
        format!(
            "[SERVICE]\n    Flush 1\n    Grace 5\n{service}\
             [INPUT]\n    Name tail\n    Tag kube.*\n    Path {logs}/*.log\n    Parser docker\n\
             \x20   Docker_Mode On\n    Read_from_Head On\n    Exit_On_Eof On\n\
             [FILTER]\n    Name kubernetes\n    Match kube.*\n    Kube_URL https://127.0.0.1:1\n\
             \x20   Kube_Meta_Preload_Cache_Dir {meta}\n    Kube_Tag_Prefix {prefix}\n{extra_filter}\
             [OUTPUT]\n    Name file\n    Match *\n    Path {out}\n    File records\n",
            logs = logs.display(),
            meta = meta.display(),
            out = out.display(),
            prefix = kube_tag_prefix(&logs),
        ),
    )
    .unwrap();
    conf
}

/// Runs the agent to its exit; returns its log and the records it wrote.
fn run(dir: &std::path::Path, conf: &std::path::Path) -> (String, Vec<serde_json::Value>) {
    let mut agent = Agent::start(conf, &[]);
    assert!(
        exited(&mut agent, 60),
        "the agent did not exit:\n{}",
        log_of(&agent)
    );
    std::thread::sleep(std::time::Duration::from_millis(100));
    let records = out_file_records(&dir.join("out/records"))
        .into_iter()
        .map(|(_, _, r)| r)
        .collect();
    (log_of(&agent), records)
}

/// Every pod's lines, whole and in order, each with its own pod's name and labels.
fn assert_every_pod_whole(records: &[serde_json::Value]) {
    assert_eq!(records.len(), PODS * LINES);
    for p in 0..PODS {
        let pod = format!("api-{p}");
        let mine: Vec<&serde_json::Value> = records
            .iter()
            .filter(|r| r["kubernetes"]["pod_name"] == pod.as_str())
            .collect();
        let logs: Vec<&str> = mine.iter().map(|r| r["log"].as_str().unwrap()).collect();
        let want: Vec<String> = (0..LINES).map(|i| format!("{pod} line {i}\n")).collect();
        assert_eq!(logs, want, "{pod}: every line, in order");
        assert!(
            mine.iter()
                .all(|r| r["kubernetes"]["labels"]["n"] == p.to_string().as_str()),
            "{pod}: its own labels"
        );
    }
}

#[test]
fn the_filters_run_on_the_configured_number_of_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let conf = setup(dir.path(), "    logferry.filter_workers 3\n", "");
    let (log, records) = run(dir.path(), &conf);
    assert!(
        log.contains("the filters run on 3 tasks"),
        "the agent says how the filters run:\n{log}"
    );
    assert_every_pod_whole(&records);
}

/// `throttle` limits the rate of everything it sees, across tags: sharding it would multiply
/// the limit, so the stage stays on one task and the agent says why.
#[test]
fn a_filter_with_state_across_tags_keeps_one_task_and_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let conf = setup(
        dir.path(),
        "    logferry.filter_workers 3\n",
        "[FILTER]\n    Name throttle\n    Match *\n    Rate 1000000\n    Window 5\n    Interval 1s\n",
    );
    // The file, line and key, at start and in --dry-run.
    let note = "agent.conf:4: logferry.filter_workers: 3 is not applied: \
                filter throttle.1 keeps state across tags; the filters run on one task";
    let dry = std::process::Command::new(env!("CARGO_BIN_EXE_logferry"))
        .arg("--dry-run")
        .arg("-c")
        .arg(&conf)
        .output()
        .unwrap();
    let dry_err = String::from_utf8_lossy(&dry.stderr);
    assert!(dry.status.success(), "{dry_err}");
    assert!(dry_err.contains(note), "--dry-run notes it:\n{dry_err}");
    let (log, records) = run(dir.path(), &conf);
    assert!(log.contains(note), "the agent warns:\n{log}");
    assert!(!log.contains("the filters run on 3 tasks"), "{log}");
    assert_every_pod_whole(&records);
}
