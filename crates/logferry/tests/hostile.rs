//! Hostile container logs, read by the agent as a DaemonSet runs it: the `logferry` binary with
//! `tail` (`multiline.parser docker, cri`) → `kubernetes` (`Merge_Log On`, the project's test
//! API server) → `file`. Beside three well-behaved pods, other "pods" write a 500 MB line with
//! no newline (NUL bytes), Docker 16 KiB pieces and CRI `P` lines that never end, 100,000-deep
//! JSON, objects with 100,000 keys, invalid UTF-8 and NUL bytes, and the log directory holds a
//! FIFO, a symbolic link to `/dev/zero` and one to a file outside the glob.
//!
//! What must hold: the agent stays up, its resident memory (read from `/proc/<pid>/status`)
//! stays under [`RSS_BOUND`], every line of the well-behaved pods arrives exactly once and
//! within [`ON_TIME`] of being written, and each hostile input gets a bounded answer that is
//! counted and logged (or passed on raw).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use common::{docker_time, kube_tag_prefix, wait, Agent, ContainerLog};
use logferry_kubernetes::testing::KubeApiServer;
use serde_json::{json, Value};

/// Peak resident memory allowed. The hostile files hold over 900 MB; the agent's own working
/// set is a few tens of MB. Without the joiner's cap the two floods alone would be held whole
/// (400 MB of pending pieces).
const RSS_BOUND: u64 = 200 * 1024 * 1024;
/// How long after a well-behaved line is written it must have arrived.
const ON_TIME: Duration = Duration::from_secs(20);
/// Bytes of each never-ending flood (Docker pieces, CRI `P` lines).
const FLOOD: usize = 200 * 1024 * 1024;
/// Lines each well-behaved pod writes.
const GOOD_LINES: usize = 3_000;
const GOOD_PODS: usize = 3;
const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "default",
            "uid": format!("uid-{name}"),
            "labels": {"app": name},
        },
        "spec": {"nodeName": "node-a", "containers": [{"name": "c", "image": "busybox"}]},
        "status": {"containerStatuses": [{"name": "c", "image": "busybox", "imageID": "docker-pullable://busybox@sha256:00", "containerID": format!("docker://{ID}")}]},
    })
}

fn file_of(logs: &Path, pod: &str) -> PathBuf {
    logs.join(format!("{pod}_default_c-{ID}.log"))
}

/// `VmRSS` and `VmHWM` of a process, in bytes.
fn memory(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// A Docker json-file line.
fn docker_line(log: &str) -> String {
    format!(
        "{}\n",
        json!({"log": log, "stream": "stdout", "time": docker_time(SystemTime::now())})
    )
}

/// The records the `file` output wrote (`Format plain`: one JSON object a line).
fn records(out: &Path) -> Vec<Value> {
    let Ok(text) = std::fs::read_to_string(out) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The pod a record came from, by its file (`Path_Key`): metadata may be missing when the
/// API server is slow on a loaded machine (records go on without it after 3 s).
fn pod_of(r: &Value) -> &str {
    r["path"]
        .as_str()
        .and_then(|p| p.rsplit('/').next())
        .and_then(|f| f.split('_').next())
        .unwrap_or("")
}

fn log_of(r: &Value) -> &str {
    r["log"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_logs_get_bounded_answers_and_other_pods_arrive_complete() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("containers");
    std::fs::create_dir_all(&logs).unwrap();
    let kube = KubeApiServer::start(dir.path()).await;
    let hostile = [
        "huge", "dflood", "cflood", "deep", "wide", "badbytes", "outside",
    ];
    let good: Vec<String> = (0..GOOD_PODS).map(|i| format!("good-{i}")).collect();
    for name in hostile
        .iter()
        .copied()
        .chain(good.iter().map(String::as_str))
    {
        kube.add_pod(pod(name));
    }

    // Files there before the agent starts (read from their start).
    // A 500 MB line of NUL bytes with no newline (a sparse file), then one ordinary line.
    {
        let mut f = std::fs::File::create(file_of(&logs, "huge")).unwrap();
        f.set_len(500 * 1024 * 1024).unwrap();
        f.flush().unwrap();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(file_of(&logs, "huge"))
            .unwrap();
        f.write_all(b"\n").unwrap();
        f.write_all(docker_line("huge-after\n").as_bytes()).unwrap();
    }
    // 100,000-deep JSON: inside a Docker `log` (Merge_Log parses it) and as a raw line.
    {
        let depth = 100_000;
        let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let mut text = docker_line(&format!("{nested}\n"));
        text.push_str(&"{\"a\":".repeat(depth));
        text.push_str(&"}".repeat(depth));
        text.push('\n');
        text.push_str(&docker_line("deep-after\n"));
        std::fs::write(file_of(&logs, "deep"), text).unwrap();
    }
    // Objects with 100,000 keys: an application's JSON (merged at the top level by Merge_Log)
    // and a Docker line with 100,000 keys of its own.
    {
        let keys: serde_json::Map<String, Value> =
            (0..100_000).map(|i| (format!("k{i}"), json!(i))).collect();
        let app = Value::Object(keys.clone()).to_string();
        let mut text = docker_line(&format!("{app}\n"));
        let mut line = keys;
        line.insert("log".into(), json!("wide-line\n"));
        line.insert("stream".into(), json!("stdout"));
        line.insert("time".into(), json!(docker_time(SystemTime::now())));
        text.push_str(&Value::Object(line).to_string());
        text.push('\n');
        text.push_str(&docker_line("wide-after\n"));
        std::fs::write(file_of(&logs, "wide"), text).unwrap();
    }
    // Invalid UTF-8 and NUL bytes, inside a Docker line and as raw lines.
    {
        let mut text: Vec<u8> = Vec::new();
        text.extend_from_slice(b"{\"log\":\"bad \xff\xfe bytes\\n\",\"stream\":\"stdout\",\"time\":\"2024-01-02T03:04:05Z\"}\n");
        text.extend_from_slice(b"raw \xc3\x28 invalid\n");
        text.extend_from_slice(b"nul \0\0\0 bytes\n");
        text.extend_from_slice(
            b"{\"log\":\"nul \0 inside\\n\",\"stream\":\"stdout\",\"time\":\"2024-01-02T03:04:05Z\"}\n",
        );
        text.extend_from_slice(docker_line("badbytes-after\n").as_bytes());
        std::fs::write(file_of(&logs, "badbytes"), text).unwrap();
    }
    // A FIFO, a link to /dev/zero, and a link to a file outside the glob.
    let fifo = file_of(&logs, "fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success(), "mkfifo");
    std::os::unix::fs::symlink("/dev/zero", file_of(&logs, "zero")).unwrap();
    let outside = dir.path().join("elsewhere");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("target.txt"), docker_line("outside-line\n")).unwrap();
    std::os::unix::fs::symlink(outside.join("target.txt"), file_of(&logs, "outside")).unwrap();

    let out_dir = dir.path().join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let conf = dir.path().join("fluent-bit.conf");
    std::fs::write(
        &conf,
        format!(
            "[SERVICE]\n    Flush 0.2\n    Grace 5\n\
             [INPUT]\n    Name tail\n    Tag kube.*\n    Path {logs}/*.log\n    multiline.parser docker, cri\n    Read_from_Head On\n    Path_Key path\n    Buffer_Max_Size 4MB\n    Skip_Long_Lines On\n    Mem_Buf_Limit 16MB\n    Refresh_Interval 1\n\
             [FILTER]\n    Name kubernetes\n    Match kube.*\n    Kube_URL {url}\n    Kube_CA_File {ca}\n    Kube_Token_File {token}\n    Kube_Tag_Prefix {prefix}\n    Merge_Log On\n\
             [OUTPUT]\n    Name file\n    Match *\n    Path {out}\n    File out.log\n    Format plain\n",
            logs = logs.display(),
            url = kube.url(),
            ca = kube.ca_file.display(),
            token = kube.token_file.display(),
            prefix = kube_tag_prefix(&logs),
            out = out_dir.display(),
        ),
    )
    .unwrap();
    let out = out_dir.join("out.log");

    let agent = Agent::start(&conf, &[]).started();
    let pid = agent.child.id();
    // Sample resident memory all along.
    let peak = Arc::new(AtomicU64::new(0));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (Arc::clone(&peak), Arc::clone(&sampling));
        std::thread::spawn(move || {
            while sampling.load(Ordering::Relaxed) {
                if let Some((rss, hwm)) = memory(pid) {
                    peak.fetch_max(rss.max(hwm), Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };

    // The floods, written while the agent runs: pieces that never end.
    let flood = |path: PathBuf, cri: bool| {
        std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .unwrap();
            let piece = if cri { "c" } else { "d" }.repeat(16 * 1024);
            let mut written = 0;
            let mut batch = String::new();
            while written < FLOOD {
                let time = docker_time(SystemTime::now());
                if cri {
                    batch.push_str(&format!("{time} stdout P {piece}\n"));
                } else {
                    batch.push_str(&format!(
                        "{{\"log\":\"{piece}\",\"stream\":\"stdout\",\"time\":\"{time}\"}}\n"
                    ));
                }
                written += piece.len();
                if batch.len() > 1024 * 1024 {
                    f.write_all(batch.as_bytes()).unwrap();
                    batch.clear();
                }
            }
            f.write_all(batch.as_bytes()).unwrap();
        })
    };
    let floods = [
        flood(file_of(&logs, "dflood"), false),
        flood(file_of(&logs, "cflood"), true),
    ];
    // The well-behaved pods, at the same time: ids and when each was written.
    let writers: Vec<_> = good
        .iter()
        .map(|name| {
            let path = file_of(&logs, name);
            let name = name.clone();
            std::thread::spawn(move || {
                let mut log = ContainerLog::create(&path);
                let mut written = Vec::with_capacity(GOOD_LINES);
                for i in 0..GOOD_LINES {
                    let id = format!("{name}-{i:05}");
                    log.write(&id, 100);
                    written.push((id, Instant::now()));
                    if i % 100 == 99 {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
                written
            })
        })
        .collect();
    for f in floods {
        f.join().unwrap();
    }
    let mut written: Vec<(String, Instant)> = Vec::new();
    for w in writers {
        written.extend(w.join().unwrap());
    }
    let last_written = written.iter().map(|(_, t)| *t).max().unwrap();

    // Every good line arrives, and every hostile file's last ordinary line.
    let expected_after = [
        "huge-after\n",
        "deep-after\n",
        "wide-after\n",
        "badbytes-after\n",
        "outside-line\n",
    ];
    let mut arrived_at: HashMap<String, Instant> = HashMap::new();
    let complete = wait(60, || {
        let recs = records(&out);
        let now = Instant::now();
        for r in &recs {
            if let Some(id) = log_of(r).strip_prefix("id=") {
                let id = id.split(' ').next().unwrap_or("").to_string();
                arrived_at.entry(id).or_insert(now);
            }
        }
        let good_done = written.iter().all(|(id, _)| arrived_at.contains_key(id));
        let after_done = expected_after
            .iter()
            .all(|l| recs.iter().any(|r| log_of(r) == *l));
        assert!(
            agent_alive(pid),
            "the agent exited while reading hostile logs"
        );
        good_done && after_done
    });
    let log_lines = agent.log.lock().unwrap().clone();
    assert!(
        complete,
        "not everything arrived within 60 s: {} of {} good lines; agent log:\n{}",
        arrived_at.len(),
        written.len(),
        log_lines.join("\n")
    );
    // Give the floods' last pieces time to be read (they must not produce more records).
    std::thread::sleep(Duration::from_secs(2));
    assert!(agent_alive(pid), "the agent exited");
    let final_log = agent.stop();
    sampling.store(false, Ordering::Relaxed);
    sampler.join().unwrap();
    let recs_final = records(&out);
    let peak = peak.load(Ordering::Relaxed);
    eprintln!(
        "peak RSS {:.1} MiB; {} records; last good line written {:?} before the check ended",
        peak as f64 / 1048576.0,
        recs_final.len(),
        last_written.elapsed()
    );
    assert!(
        peak < RSS_BOUND,
        "peak RSS {peak} bytes is over the bound {RSS_BOUND}"
    );

    // Good pods: every line exactly once, with metadata, on time.
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for r in &recs_final {
        if let Some(id) = log_of(r).strip_prefix("id=") {
            *counts.entry(id.split(' ').next().unwrap()).or_default() += 1;
            assert!(pod_of(r).starts_with("good-"), "{r}");
        }
    }
    for (id, at) in &written {
        assert_eq!(counts.get(id.as_str()), Some(&1), "{id} exactly once");
        let got = arrived_at[id];
        assert!(
            got.saturating_duration_since(*at) < ON_TIME,
            "{id} arrived {:?} after it was written",
            got.saturating_duration_since(*at)
        );
    }

    // The floods: one record each, cut at multiline_buffer_limit (2 MiB), counted and logged.
    for (pod, ch) in [("dflood", 'd'), ("cflood", 'c')] {
        let theirs: Vec<&Value> = recs_final.iter().filter(|r| pod_of(r) == pod).collect();
        assert_eq!(theirs.len(), 1, "{pod}: one record, cut at the limit");
        let log = log_of(theirs[0]);
        assert_eq!(log.len(), 2 * 1024 * 1024, "{pod}");
        assert!(log.chars().all(|c| c == ch), "{pod}");
    }
    let truncations = final_log
        .iter()
        .filter(|l| l.contains("multiline message truncated due to buffer limit"))
        .count();
    assert_eq!(truncations, 2, "one warning per flood");
    // The 500 MB line: skipped (Skip_Long_Lines On), counted and logged; the file goes on.
    assert!(
        final_log
            .iter()
            .any(|l| l.contains("skipping a line longer than Buffer_Max_Size")),
        "the long line is logged"
    );
    let huge: Vec<&str> = recs_final
        .iter()
        .filter(|r| pod_of(r) == "huge")
        .map(log_of)
        .collect();
    assert_eq!(huge, ["huge-after\n"]);
    // Deep JSON: passed on as text (the Docker line's log stays a string; the raw line raw).
    let deep: Vec<&Value> = recs_final.iter().filter(|r| pod_of(r) == "deep").collect();
    let heads: Vec<String> = deep
        .iter()
        .map(|r| r.to_string().chars().take(60).collect())
        .collect();
    assert_eq!(deep.len(), 3, "deep: {heads:?}");
    assert!(log_of(deep[0]).starts_with("[[[[") && log_of(deep[0]).len() == 200_001);
    assert!(log_of(deep[1]).starts_with("{\"a\":{\"a\":"));
    // 100,000 keys: merged at the top level, and a Docker line's own keys kept.
    let wide: Vec<&Value> = recs_final.iter().filter(|r| pod_of(r) == "wide").collect();
    let heads: Vec<String> = wide
        .iter()
        .map(|r| {
            log_of(r).chars().take(40).collect::<String>()
                + &format!(" keys={}", r.as_object().map_or(0, |o| o.len()))
        })
        .collect();
    assert_eq!(wide.len(), 3, "wide: {heads:?}");
    assert_eq!(wide[0]["k99999"], json!(99999), "the app's keys are merged");
    assert_eq!(wide[1]["k99999"], json!(99999), "the line's own keys stay");
    assert_eq!(log_of(wide[1]), "wide-line\n");
    // Invalid UTF-8 and NUL bytes: passed on, bad bytes replaced (U+FFFD).
    let bad: Vec<&str> = recs_final
        .iter()
        .filter(|r| pod_of(r) == "badbytes")
        .map(log_of)
        .collect();
    assert_eq!(bad.len(), 5, "{bad:?}");
    assert!(bad[0].contains("bad \u{fffd}\u{fffd} bytes"), "{bad:?}");
    assert!(bad[1].contains("raw \u{fffd}( invalid"), "{bad:?}");
    assert_eq!(bad[2], "nul \0\0\0 bytes");
    assert!(bad[3].contains("nul \0 inside"), "{bad:?}");
    // The FIFO and /dev/zero are not regular files: never opened. The link to a regular file
    // outside the glob is followed, as kubelet's own links into /var/log/pods are.
    for pod in ["fifo", "zero"] {
        assert!(!recs_final.iter().any(|r| pod_of(r) == pod));
        assert!(
            !final_log
                .iter()
                .any(|l| l.contains("following file") && l.contains(&format!("/{pod}_"))),
            "{pod} is not followed"
        );
    }
    assert!(recs_final.iter().any(|r| pod_of(r) == "outside"));
    let _ = std::fs::remove_file(file_of(&logs, "huge"));
}

fn agent_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
        !s.lines()
            .any(|l| l.starts_with("State:") && l.contains("Z"))
    })
}

/// One HTTP/1.1 GET on 127.0.0.1; the body.
fn http_get(addr: &str, path: &str) -> String {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    raw
}

/// Secrets never show: the Kubernetes token (refused by the API server, so requests fail and
/// are logged) and AWS keys (CloudWatch unreachable, so flushes fail and are logged) appear
/// in no log line, no error and no metric, on any endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_keys_never_appear_in_logs_errors_or_metrics() {
    const TOKEN: &str = "kube-token-5ecret-8f3a1c";
    const SECRET: &str = "aws-secret-5ecret-d41d8cd98f00b204";
    const KEY_ID: &str = "AKIA5ECRETKEYID00001";
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("containers");
    std::fs::create_dir_all(&logs).unwrap();
    let kube = KubeApiServer::start(dir.path()).await;
    kube.add_pod(pod("web"));
    // The agent reads TOKEN from its file; the server wants another one: every request is
    // refused (401) and the agent says so.
    std::fs::write(&kube.token_file, TOKEN).unwrap();
    kube.set_token("the-server-wants-another", false);
    // A closed port for CloudWatch Logs.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let conf = dir.path().join("fluent-bit.conf");
    std::fs::write(
        &conf,
        format!(
            "[SERVICE]\n    Flush 0.2\n    Grace 2\n    Log_Level debug\n    HTTP_Server On\n    HTTP_Listen 127.0.0.1\n    HTTP_Port 0\n\
             [INPUT]\n    Name tail\n    Tag kube.*\n    Path {logs}/*.log\n    Parser docker\n    Read_from_Head On\n\
             [FILTER]\n    Name kubernetes\n    Match kube.*\n    Kube_URL {url}\n    Kube_CA_File {ca}\n    Kube_Token_File {token}\n    Kube_Tag_Prefix {prefix}\n\
             [OUTPUT]\n    Name cloudwatch_logs\n    Match *\n    region us-east-1\n    log_group_name g\n    log_stream_name s\n    endpoint {endpoint}\n    Retry_Limit 1\n",
            logs = logs.display(),
            url = kube.url(),
            ca = kube.ca_file.display(),
            token = kube.token_file.display(),
            prefix = kube_tag_prefix(&logs),
        ),
    )
    .unwrap();
    std::fs::write(file_of(&logs, "web"), docker_line("hello\n")).unwrap();
    let agent = Agent::start(
        &conf,
        &[
            ("AWS_ACCESS_KEY_ID", KEY_ID.to_string()),
            ("AWS_SECRET_ACCESS_KEY", SECRET.to_string()),
            ("AWS_SESSION_TOKEN", format!("{SECRET}-session")),
            ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
        ],
    )
    .started();
    let refused_and_failed = wait(30, || {
        kube.requests("unauthorized") > 0 && agent.logged("output=cloudwatch_logs.0")
    });
    let addr = agent
        .log
        .lock()
        .unwrap()
        .iter()
        .find_map(|l| l.split("listen=").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .map(str::to_string);
    let mut scraped = String::new();
    if let Some(addr) = &addr {
        for path in [
            "/api/v1/metrics",
            "/api/v1/metrics/prometheus",
            "/api/v2/metrics",
            "/api/v2/metrics/prometheus",
            "/api/v1/storage",
            "/",
        ] {
            scraped.push_str(&http_get(addr, path));
        }
    }
    let log = agent.stop().join("\n");
    assert!(
        refused_and_failed,
        "the failures to check never happened:\n{log}"
    );
    assert!(kube.requests("unauthorized") > 0, "the token was refused");
    assert!(
        addr.is_some() && scraped.contains("fluentbit_"),
        "metrics scraped"
    );
    for secret in [TOKEN, SECRET, KEY_ID] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
        assert!(!scraped.contains(secret), "{secret} in the metrics");
    }
}
