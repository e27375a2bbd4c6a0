//! The fault suite: the `logferry` binary under real faults, each case with an exact account of
//! the lines written, lost, duplicated, and dropped-and-counted. Faults are injected by the
//! project's proxy in front of moto's server ([`FaultProxy`]: hang, 503, throttling, connection
//! resets), by `kill -9`, and by rotating and deleting the log files as kubelet does. Each case
//! prints a `FAULT|…` line; `scripts/faults` runs the suite and prints them as the table in
//! docs/reliability.md. Every wait is bounded.
//!
//! The cases run one at a time (they time their faults and share two cores).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{ids_of_json, total, wait, Agent, ContainerLog, Lcg, Tally};
use logferry_aws::testing::{
    bucket_objects, create_bucket, hermetic_env, log_messages, FaultProxy, Mode, Moto,
};
use logferry_kubernetes::testing::KubeApiServer;

/// One case at a time (tests of a binary run on parallel threads, each with its runtime).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const REGION: &str = "us-east-2";
const GROUP: &str = "fluentbit-cloudwatch";
/// A pod of the bundled quick start (examples/quickstart/meta), served by the test API server.
const POD_FILE: &str = "user-service-7d9c8b6f5-x2k4p_default_app-3f1c2a9e8d7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a19.log";

fn pod_json() -> serde_json::Value {
    let p =
        Path::new(&std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
            .join("../../examples/quickstart/meta/default_user-service-7d9c8b6f5-x2k4p.meta");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// The servers a case runs against, in a fresh directory.
struct World {
    dir: tempfile::TempDir,
    kube: KubeApiServer,
    moto: Moto,
    proxy: FaultProxy,
}

impl World {
    async fn start() -> World {
        hermetic_env();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("containers")).unwrap();
        let kube = KubeApiServer::start(dir.path()).await;
        kube.add_pod(pod_json());
        let moto = tokio::task::spawn_blocking(Moto::start).await.unwrap();
        let proxy = FaultProxy::start(moto.addr());
        World {
            dir,
            kube,
            moto,
            proxy,
        }
    }

    fn logs(&self) -> PathBuf {
        self.dir.path().join("containers")
    }

    fn log_file(&self) -> PathBuf {
        self.logs().join(POD_FILE)
    }

    /// The seed's ConfigMap, unchanged but for paths and endpoints (CloudWatch through the
    /// proxy), with lines added to `[SERVICE]`, `[INPUT]` and `[OUTPUT]`, and sections after.
    fn seed_config(&self, service: &str, input: &str, output: &str, more: &str) -> PathBuf {
        let logs = self.logs();
        let prefix = common::kube_tag_prefix(&logs);
        let conf = format!(
            "[SERVICE]\n{service}\n\
             [INPUT]\n    Name              tail\n    Tag               kube.*\n    Path              {logs}/*.log\n    DB                {dir}/flb_kube.db\n    Parser            docker\n    Docker_Mode       On\n    Mem_Buf_Limit     5MB\n    Skip_Long_Lines   On\n    Refresh_Interval  10\n{input}\n\
             [FILTER]\n    Name                kubernetes\n    Match               kube.*\n    Kube_URL            {url}\n    Kube_CA_File        {ca}\n    Kube_Token_File     {token}\n    Kube_Tag_Prefix     {prefix}\n    Merge_Log           On\n    Merge_Log_Key       data\n    K8S-Logging.Parser  On\n    K8S-Logging.Exclude On\n\n\
             [OUTPUT]\n    Name cloudwatch\n    Match   **\n    region us-east-2\n    log_group_name fluentbit-cloudwatch\n    log_stream_prefix fluentbit-\n    auto_create_group true\n    endpoint {endpoint}\n{output}\n{more}\n",
            logs = logs.display(),
            dir = self.dir.path().display(),
            url = self.kube.url(),
            ca = self.kube.ca_file.display(),
            token = self.kube.token_file.display(),
            endpoint = self.proxy.endpoint(),
        );
        let path = self.dir.path().join("fluent-bit.conf");
        std::fs::write(&path, conf).unwrap();
        path
    }

    /// Starts the agent on `conf` with the pod's log file there (empty) and waits until the
    /// tail input follows it. The seed has no `Read_from_Head`, so a file its first scan finds
    /// is read from its end, as in Fluent Bit: a line written between "logferry started" and
    /// that scan is skipped by design, and a case must not count it as lost.
    fn start_following(&self, conf: &Path) -> Agent {
        drop(ContainerLog::create(&self.log_file()));
        Agent::start(conf, &[])
            .started()
            .following(&self.log_file())
    }

    /// The ids CloudWatch Logs holds.
    fn cloudwatch_ids(&self) -> Vec<String> {
        ids_of_json(log_messages(self.moto.port, REGION, GROUP))
    }
}

/// Writes `n` lines of `pad` bytes at about `per_sec` lines a second on a thread, calling
/// `at(i, log)` before line `i` (to rotate, delete, ...). Returns the ids written.
fn write_lines(
    path: PathBuf,
    case: &'static str,
    n: usize,
    pad: usize,
    per_sec: usize,
    mut at: impl FnMut(usize, &mut ContainerLog) + Send + 'static,
) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        let mut log = ContainerLog::create(&path);
        let mut ids = Vec::with_capacity(n);
        let start = Instant::now();
        for i in 0..n {
            at(i, &mut log);
            let id = format!("{case}-{i:06}");
            log.write(&id, pad);
            ids.push(id);
            let due = start + Duration::from_secs_f64((i + 1) as f64 / per_sec as f64);
            if let Some(d) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }
        }
        ids
    })
}

/// A CloudWatch outage of every kind while the file is rotated twice and a rotated file is
/// deleted by "kubelet" before it was read: with the seed's config (`Retry_Limit` unset) and
/// with `Retry_Limit no_limits`, nothing may be lost.
async fn outage_case(case: &'static str, output: &str) {
    let w = World::start().await;
    let conf = w.seed_config("", "", output, "");
    let agent = w.start_following(&conf);
    const N: usize = 12_000;
    // 12,000 lines of ~600 bytes: more than the input's 5MB Mem_Buf_Limit holds, so it pauses
    // during the outage and the log files are the buffer.
    let writer = write_lines(w.log_file(), case, N, 560, 400, |i, log| {
        if i == 4_000 || i == 8_000 {
            log.rotate();
        }
        if i == 10_000 {
            // kubelet deletes a rotated file the paused agent has not finished reading.
            log.delete_oldest_rotated();
        }
    });
    // As the issue measured it: CloudWatch hangs, then answers 503, then throttles, then
    // resets connections, 12 s each. (A request the hang holds fails at the client's 20 s read
    // timeout, inside the 503 phase.)
    let phases = [Mode::Hang, Mode::Unavailable, Mode::Throttle, Mode::Reset];
    std::thread::sleep(Duration::from_secs(2));
    for m in phases.iter() {
        w.proxy.set_mode(m.clone());
        std::thread::sleep(Duration::from_secs(12));
    }
    w.proxy.set_mode(Mode::Pass);
    let back = Instant::now();
    let before = w.cloudwatch_ids().len();
    let moving = wait(60, || w.cloudwatch_ids().len() > before);
    let resumed_after = back.elapsed();
    let written = writer.join().unwrap();
    let all = wait(180, || {
        let got = w.cloudwatch_ids();
        let t = Tally::of(&written, got);
        t.lost.is_empty()
    });
    let log = agent.stop();
    let t = Tally::of(&written, w.cloudwatch_ids());
    let dropped = total(&log, "cloudwatch_logs.0", "dropped");
    for m in &phases {
        assert!(
            w.proxy.requests(m) > 0,
            "{case}: the outage had a {m:?} phase"
        );
    }
    t.report(
        case,
        dropped,
        &format!(
            "hang, 503, throttling, resets: 48 s; 2 rotations; a rotated file deleted unread; backlog moving {:.1} s after recovery",
            resumed_after.as_secs_f64()
        ),
    );
    assert!(moving, "{case}: nothing moved within 60 s of the recovery");
    assert!(
        resumed_after < Duration::from_secs(30),
        "{case}: the backlog must start moving within 30 s, took {resumed_after:?}"
    );
    assert!(
        all && t.lost.is_empty(),
        "{case}: {} lines lost, first {:?}\n{}",
        t.lost.len(),
        &t.lost[..t.lost.len().min(5)],
        log.iter()
            .filter(|l| l.contains("[error]") || l.contains("[ warn]"))
            .take(40)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(dropped, 0, "{case}: nothing dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_with_the_seeds_config_loses_nothing() {
    let _one = SERIAL.lock().await;
    outage_case("outage-seed-config", "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_with_retry_limit_no_limits_and_rotation_loses_nothing() {
    let _one = SERIAL.lock().await;
    outage_case("outage-no_limits", "    Retry_Limit no_limits").await;
}

/// `kill -9` at 20 random moments while lines are written and rotated, then a last run:
/// every line arrives (at-least-once), duplicates counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_nothing() {
    let _one = SERIAL.lock().await;
    let w = World::start().await;
    let conf = w.seed_config("", "", "", "");
    // The pod starts logging once the agent follows its file (see `start_following`).
    let agent = w.start_following(&conf);
    const N: usize = 30_000;
    let writer = write_lines(w.log_file(), "kill9", N, 200, 800, |i, log| {
        if i % 8_000 == 7_999 {
            log.rotate();
        }
    });
    let mut rng = Lcg(0x5eed);
    const KILLS: usize = 20;
    std::thread::sleep(Duration::from_millis(700 + rng.next(2_500)));
    agent.kill9();
    for _ in 1..KILLS {
        let agent = Agent::start(&conf, &[]);
        std::thread::sleep(Duration::from_millis(700 + rng.next(2_500)));
        agent.kill9();
    }
    let written = writer.join().unwrap();
    // The kills came while lines were being delivered, not before.
    let before_last_run = w.cloudwatch_ids().len();
    let agent = Agent::start(&conf, &[]).started();
    let all = wait(120, || {
        Tally::of(&written, w.cloudwatch_ids()).lost.is_empty()
    });
    let log = agent.stop();
    let t = Tally::of(&written, w.cloudwatch_ids());
    t.report(
        "kill-9-x20",
        total(&log, "cloudwatch_logs.0", "dropped"),
        &format!("20 kill -9 at random moments (0.7-3.2 s apart) while writing, 3 rotations; {before_last_run} events delivered before the last start"),
    );
    assert!(
        before_last_run > 0,
        "nothing was delivered between the kills"
    );
    assert!(
        all && t.lost.is_empty(),
        "{} lost, first {:?}",
        t.lost.len(),
        &t.lost[..t.lost.len().min(5)]
    );
}

/// Filesystem storage during an outage: the input keeps reading into chunk files, rotated
/// files are deleted soon after rotation (as kubelet does), the agent is killed with `kill -9`
/// during the outage and restarted after it: the chunks on disk are delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_files_with_filesystem_storage_lose_nothing() {
    let _one = SERIAL.lock().await;
    let w = World::start().await;
    let storage = w.dir.path().join("storage");
    let conf = w.seed_config(
        &format!("    storage.path {}\n", storage.display()),
        "    storage.type filesystem",
        "",
        "",
    );
    w.proxy.set_mode(Mode::Unavailable);
    let agent = w.start_following(&conf);
    const N: usize = 6_000;
    let writer = write_lines(w.log_file(), "fs-deleted", N, 300, 1_000, |i, log| {
        if i > 0 && i % 1_500 == 0 {
            log.rotate();
        }
        if i > 0 && i % 1_500 == 200 {
            log.delete_oldest_rotated();
        }
    });
    let written = writer.join().unwrap();
    // Every line is on disk once the stored chunks stop changing.
    let chunks = || {
        std::fs::read_dir(storage.join("tail.0"))
            .map(|d| d.flatten().count())
            .unwrap_or(0)
    };
    let mut last = (chunks(), Instant::now());
    assert!(wait(30, || {
        let now = chunks();
        if now != last.0 {
            last = (now, Instant::now());
        }
        now > 0 && last.1.elapsed() > Duration::from_secs(2)
    }));
    let stored = chunks();
    agent.kill9();
    assert!(w.cloudwatch_ids().is_empty(), "nothing was delivered yet");
    w.proxy.set_mode(Mode::Pass);
    let agent = Agent::start(&conf, &[]).started();
    let all = wait(120, || {
        Tally::of(&written, w.cloudwatch_ids()).lost.is_empty()
    });
    let log = agent.stop();
    let t = Tally::of(&written, w.cloudwatch_ids());
    t.report(
        "fs-storage-deleted-files",
        total(&log, "cloudwatch_logs.0", "dropped"),
        &format!("outage for the whole write; 3 rotated files deleted; kill -9 with {stored} chunk files on disk, restart after the outage"),
    );
    assert!(
        all && t.lost.is_empty(),
        "{} lost, first {:?}",
        t.lost.len(),
        &t.lost[..t.lost.len().min(5)]
    );
}

/// `storage.total_limit_size` reached: CloudWatch is down and may hold 256K on disk; a `file`
/// output beside it gets every line; CloudWatch gets every line it did not drop and count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn total_limit_size_drops_the_oldest_and_counts_them_while_others_keep_up() {
    let _one = SERIAL.lock().await;
    let w = World::start().await;
    let storage = w.dir.path().join("storage");
    let out_dir = w.dir.path().join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let conf = w.seed_config(
        &format!(
            "    storage.path {}\n    scheduler.base 1\n    scheduler.cap 2\n",
            storage.display()
        ),
        "    storage.type filesystem",
        "    storage.total_limit_size 256K",
        &format!(
            "[OUTPUT]\n    Name file\n    Match **\n    Path {}\n    File out.log\n    Format plain\n",
            out_dir.display()
        ),
    );
    w.proxy.set_mode(Mode::Unavailable);
    let agent = w.start_following(&conf);
    const N: usize = 5_000;
    let written = write_lines(w.log_file(), "limit", N, 300, 1_000, |_, _| {})
        .join()
        .unwrap();
    let file_ids = || -> Vec<String> {
        let text = std::fs::read_to_string(out_dir.join("out.log")).unwrap_or_default();
        ids_of_json(text.lines().map(str::to_string))
    };
    assert!(wait(60, || Tally::of(&written, file_ids()).lost.is_empty()));
    w.proxy.set_mode(Mode::Pass);
    // CloudWatch gets what it kept; then the agent says what it dropped.
    let settled = wait(60, || {
        let n = w.cloudwatch_ids().len();
        std::thread::sleep(Duration::from_secs(2));
        n > 0 && n == w.cloudwatch_ids().len()
    });
    let log = agent.stop();
    let dropped = total(&log, "cloudwatch_logs.0", "dropped");
    let cw = Tally::of(&written, w.cloudwatch_ids());
    let file = Tally::of(&written, file_ids());
    file.report(
        "total_limit_size: file output beside",
        0,
        "storage.total_limit_size on the dead CloudWatch output only",
    );
    cw.report(
        "total_limit_size: dead CloudWatch",
        dropped,
        "256K on disk while CloudWatch answered 503; the oldest chunks dropped and counted",
    );
    assert!(settled);
    assert!(file.lost.is_empty() && file.duplicated == 0);
    assert!(dropped > 0, "the limit was reached");
    assert_eq!(
        cw.lost.len() as u64,
        dropped,
        "every line CloudWatch lacks was dropped and counted"
    );
    assert_eq!(cw.duplicated, 0);
}

/// Java stack traces joined by `[FILTER] multiline` while the agent is killed five times: no
/// trace is lost or cut, because records the filter holds keep their chunk unacknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multiline_java_under_kill_9_loses_no_trace() {
    let _one = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let out = dir.path().join("out");
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    let conf = dir.path().join("agent.conf");
    std::fs::write(
        &conf,
        format!(
            "[SERVICE]\n    Flush 0.5\n    Grace 2\n\n\
             [INPUT]\n    Name tail\n    Tag app.*\n    Path {}/*.log\n    DB {}/offsets.db\n    Read_from_Head On\n\n\
             [FILTER]\n    Name multiline\n    Match app.*\n    multiline.key_content log\n    multiline.parser java\n    flush_ms 1500\n\n\
             [OUTPUT]\n    Name file\n    Match *\n    Path {}\n    File traces.log\n    Format plain\n",
            logs.display(),
            dir.path().display(),
            out.display()
        ),
    )
    .unwrap();
    const TRACES: usize = 60;
    let path = logs.join("app.log");
    let writer = std::thread::spawn(move || {
        let mut f = ContainerLog::create(&path);
        let mut rng = Lcg(7);
        let mut shapes = Vec::new();
        for t in 0..TRACES {
            let frames = 2 + rng.next(5) as usize;
            f.write_raw(&format!(
                "Exception in thread \"main\" java.lang.IllegalStateException: trace-{t:03}\n"
            ));
            for k in 0..frames {
                f.write_raw(&format!("\tat com.example.T{t}.f{k}(T.java:{k})\n"));
                std::thread::sleep(Duration::from_millis(15));
            }
            shapes.push((format!("trace-{t:03}"), frames));
            std::thread::sleep(Duration::from_millis(60));
        }
        // A last plain line ends the last trace.
        f.write_raw("done\n");
        shapes
    });
    let mut rng = Lcg(99);
    for _ in 0..5 {
        let agent = Agent::start(&conf, &[]);
        std::thread::sleep(Duration::from_millis(700 + rng.next(1_500)));
        agent.kill9();
    }
    let shapes = writer.join().unwrap();
    let agent = Agent::start(&conf, &[]).started();
    let records = || -> Vec<String> {
        std::fs::read_to_string(out.join("traces.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v["log"].as_str().map(str::to_string))
            .collect()
    };
    let ids = |recs: &[String]| -> Vec<String> {
        recs.iter()
            .filter_map(|r| r.split("IllegalStateException: ").nth(1))
            .map(|s| s.split_whitespace().next().unwrap_or("").to_string())
            .collect()
    };
    let written: Vec<String> = shapes.iter().map(|(id, _)| id.clone()).collect();
    let all = wait(60, || Tally::of(&written, ids(&records())).lost.is_empty());
    agent.stop();
    let recs = records();
    let t = Tally::of(&written, ids(&recs));
    // Every trace that arrived arrived whole: its header and all its frames in one record.
    let cut: Vec<&String> = recs
        .iter()
        .filter(|r| r.contains("IllegalStateException"))
        .filter(|r| {
            let id = r.split("IllegalStateException: ").nth(1).unwrap_or("");
            let frames = shapes
                .iter()
                .find(|(s, _)| id.starts_with(s.as_str()))
                .map_or(0, |(_, n)| *n);
            r.matches("\tat com.example").count() != frames
        })
        .collect();
    t.report(
        "multiline java, kill -9 x5",
        0,
        &format!("60 stack traces; records cut: {}", cut.len()),
    );
    assert!(all && t.lost.is_empty(), "traces lost: {:?}", t.lost);
    assert!(cut.is_empty(), "traces cut: {cut:?}");
}

/// The `s3` output with a Kubernetes tag (~130 bytes) under `kill -9`: every line reaches the
/// bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_with_a_kubernetes_tag_under_kill_9_loses_nothing() {
    let _one = SERIAL.lock().await;
    hermetic_env();
    let moto = tokio::task::spawn_blocking(Moto::start).await.unwrap();
    create_bucket(moto.port, "faults");
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("var/log/containers");
    std::fs::create_dir_all(&logs).unwrap();
    let conf = dir.path().join("agent.conf");
    std::fs::write(
        &conf,
        format!(
            "[SERVICE]\n    Flush 0.5\n    Grace 5\n\n\
             [INPUT]\n    Name tail\n    Tag kube.*\n    Path {}/*.log\n    DB {}/offsets.db\n    Parser docker\n    Read_from_Head On\n\n\
             [OUTPUT]\n    Name s3\n    Match *\n    bucket faults\n    region us-east-1\n    endpoint {}\n    store_dir {}/s3\n    total_file_size 1M\n    upload_timeout 2s\n    use_put_object On\n",
            logs.display(),
            dir.path().display(),
            moto.endpoint(),
            dir.path().display()
        ),
    )
    .unwrap();
    const N: usize = 3_000;
    let writer = write_lines(logs.join(POD_FILE), "s3", N, 200, 600, |_, _| {});
    let mut rng = Lcg(3);
    for _ in 0..3 {
        let agent = Agent::start(&conf, &[]);
        std::thread::sleep(Duration::from_millis(1_000 + rng.next(2_000)));
        agent.kill9();
    }
    let written = writer.join().unwrap();
    let ids = || -> Vec<String> {
        bucket_objects(moto.port, "faults")
            .into_iter()
            .flat_map(|(_, body)| {
                String::from_utf8_lossy(&body)
                    .lines()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .flat_map(|l| ids_of_json([l]))
            .collect()
    };
    let agent = Agent::start(&conf, &[]).started();
    let all = wait(90, || Tally::of(&written, ids()).lost.is_empty());
    let log = agent.stop();
    let t = Tally::of(&written, ids());
    let tag_len = format!("kube.{}", logs.join(POD_FILE).display())
        .trim_start_matches('/')
        .len();
    t.report(
        "s3, Kubernetes tag, kill -9 x3",
        total(&log, "s3.0", "dropped"),
        &format!("tag of {tag_len} bytes; 3 kill -9 while writing"),
    );
    assert!(
        all && t.lost.is_empty(),
        "{} lost, first {:?}",
        t.lost.len(),
        &t.lost[..t.lost.len().min(5)]
    );
}

/// A record the destination refuses for good (CloudWatch: older than 14 days) is counted,
/// logged, not retried, and with `storage.keep.rejected On` kept in the dead-letter store as a
/// chunk file; the rest of the call is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_cloudwatch_refuses_is_kept_as_a_dead_letter() {
    let _one = SERIAL.lock().await;
    let w = World::start().await;
    let storage = w.dir.path().join("storage");
    let conf = w.seed_config(
        &format!(
            "    storage.path {}\n    storage.keep.rejected On\n",
            storage.display()
        ),
        "",
        "",
        "",
    );
    let agent = w.start_following(&conf);
    let mut log = ContainerLog::create(&w.log_file());
    // The seed fixture's time: 2019, far older than 14 days.
    log.write_raw(&format!(
        "{}\n",
        serde_json::json!({"log": "id=dlq-old old line\n", "stream": "stdout", "time": "2019-12-19T17:41:12.70630778Z"})
    ));
    log.write("dlq-new", 10);
    let written = vec!["dlq-old".to_string(), "dlq-new".to_string()];
    let delivered = wait(30, || w.cloudwatch_ids().contains(&"dlq-new".to_string()));
    let kept = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".flb"))
                    .flat_map(|e| {
                        let b = std::fs::read(e.path()).unwrap();
                        logferry_engine::storage::chunk_file::decode(&b, true)
                            .unwrap()
                            .1
                    })
                    .filter_map(|r| {
                        r.body
                            .get("log")
                            .and_then(logferry_core::Value::as_str)
                            .and_then(common::id_of)
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let dead = storage.join("rejected");
    let in_store = wait(30, || kept(&dead) == ["dlq-old"]);
    let lines = agent.stop();
    let dropped = total(&lines, "cloudwatch_logs.0", "dropped");
    let t = Tally::of(&written, w.cloudwatch_ids().into_iter().chain(kept(&dead)));
    t.report(
        "refused by CloudWatch (too old)",
        dropped,
        "the refused record is in the dead-letter store (storage.keep.rejected), the other delivered",
    );
    assert!(delivered && in_store, "dead letters: {:?}", kept(&dead));
    assert_eq!(dropped, 1, "counted");
    assert!(t.lost.is_empty() && t.duplicated == 0);
    assert_eq!(
        total(&lines, "cloudwatch_logs.0", "retries"),
        0,
        "not retried"
    );
}
