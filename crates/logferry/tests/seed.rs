//! The seed's ConfigMap (../shared/conformance/seed-nginx/fluent-bit.conf), unchanged but for the
//! paths and endpoints its header lists, run as a user runs it: the `logferry` binary with `-c`,
//! the Kubernetes API over HTTPS through a CA file with a bearer token (the project's test API
//! server), and CloudWatch Logs (moto's server). What must hold is the fixture's README.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{civil, wait, Agent};
use logferry_aws::testing::{hermetic_env, logs_call, Moto};
use logferry_kubernetes::testing::KubeApiServer;
use serde_json::{json, Value};

const POD: &str = "nginx-5468c5d4d7-n2swr";
const ID: &str = "b90a89309ac90fff2972822c66f11736933000c5aa6376dff0c11a441fa427ee";

fn seed_dir() -> PathBuf {
    Path::new(&std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
        .join("../../../shared/conformance/seed-nginx")
}

/// A JSON call to moto's CloudWatch Logs in the seed's region.
fn logs_api(port: u16, action: &str, body: Value) -> Value {
    logs_call(port, "us-east-2", action, &body)
}

/// The seed's line with `secs` as both the Docker time and the nginx time (format kept).
fn seed_line_at(secs: i64) -> (String, String, String) {
    let (y, mo, d) = civil(secs.div_euclid(86_400));
    let t = secs.rem_euclid(86_400);
    let (h, mi, s) = (t / 3600, t % 3600 / 60, t % 60);
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let nginx_time = format!(
        "{d:02}/{}/{y}:{h:02}:{mi:02}:{s:02} +0000",
        months[(mo - 1) as usize]
    );
    let docker_time = format!("{y}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.70630778Z");
    let log = format!("10.1.128.166 - - [{nginx_time}] \"GET / HTTP/1.1\" 200 612 \"-\" \"hey/0.0.1\" \"52.95.4.2\"\n");
    let line = format!(
        "{}\n",
        json!({"log": log, "stream": "stdout", "time": docker_time})
    );
    (line, log, docker_time)
}

/// The agent on the seed's ConfigMap, its paths and endpoints from the environment.
fn start_agent(dir: &Path, kube: &KubeApiServer, cloudwatch: &str) -> Agent {
    let logs = dir.join("containers");
    let prefix = common::kube_tag_prefix(&logs);
    Agent::start(
        &seed_dir().join("fluent-bit.conf"),
        &[
            ("LOG_DIR", logs.display().to_string()),
            ("STATE_DIR", dir.display().to_string()),
            ("KUBE_TAG_PREFIX", prefix),
            ("KUBE_URL", kube.url()),
            ("KUBE_CA_FILE", kube.ca_file.display().to_string()),
            ("KUBE_TOKEN_FILE", kube.token_file.display().to_string()),
            ("CLOUDWATCH_ENDPOINT", cloudwatch.to_string()),
            ("PARSERS_FILE", String::new()),
        ],
    )
}

async fn setup() -> Option<(tempfile::TempDir, KubeApiServer, Moto)> {
    assert!(
        seed_dir().exists(),
        "{} is missing: this test runs the seed's ConfigMap from the shared conformance fixtures",
        seed_dir().display()
    );
    hermetic_env();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("containers")).unwrap();
    let kube = KubeApiServer::start(dir.path()).await;
    let pod: Value =
        serde_json::from_str(&std::fs::read_to_string(seed_dir().join("pod.json")).unwrap())
            .unwrap();
    kube.add_pod(pod);
    let moto = tokio::task::spawn_blocking(Moto::start).await.unwrap();
    Some((dir, kube, moto))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_configmap_delivers_the_seeds_record_to_cloudwatch() {
    let Some((dir, kube, moto)) = setup().await else {
        return;
    };
    let agent = start_agent(dir.path(), &kube, &moto.endpoint());
    assert!(
        wait(20, || agent.logged("logferry started")),
        "agent did not start"
    );
    // nginx writes its line after the agent is up (the file is new, so it is read from its start).
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        - 5;
    let (line, log, docker_time) = seed_line_at(now);
    let file = dir
        .path()
        .join("containers")
        .join(format!("{POD}_default_nginx-{ID}.log"));
    std::fs::write(&file, &line).unwrap();

    let port = moto.port;
    let mut stream = String::new();
    let found = tokio::task::spawn_blocking(move || {
        let ok = wait(30, || {
            let r = logs_api(port, "DescribeLogStreams", json!({"logGroupName": "fluentbit-cloudwatch", "logStreamNamePrefix": "fluentbit-"}));
            match r["logStreams"].as_array().and_then(|a| a.first()) {
                Some(s) => {
                    stream = s["logStreamName"].as_str().unwrap_or("").to_string();
                    let ev = logs_api(port, "GetLogEvents", json!({"logGroupName": "fluentbit-cloudwatch", "logStreamName": stream, "startFromHead": true}));
                    ev["events"].as_array().is_some_and(|e| !e.is_empty())
                }
                None => false,
            }
        });
        (ok, stream)
    })
    .await
    .unwrap();
    let lines = agent.stop();
    let (ok, stream) = found;
    assert!(
        ok,
        "no event reached CloudWatch Logs:\n{}",
        lines.join("\n")
    );

    let logs_dir = dir
        .path()
        .join("containers")
        .display()
        .to_string()
        .trim_start_matches('/')
        .replace('/', ".");
    assert_eq!(
        stream,
        format!("fluentbit-kube.{logs_dir}.{POD}_default_nginx-{ID}.log")
    );
    assert!(kube.requests("unauthorized") == 0 && kube.requests("get_pod") <= 1);
    let ev = logs_api(
        moto.port,
        "GetLogEvents",
        json!({"logGroupName": "fluentbit-cloudwatch", "logStreamName": stream, "startFromHead": true}),
    );
    let events = ev["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "one event");
    assert_eq!(
        events[0]["timestamp"].as_i64(),
        Some(now * 1000),
        "the nginx line's own time"
    );
    let got: Value = serde_json::from_str(events[0]["message"].as_str().unwrap()).unwrap();
    let mut expected: Value = serde_json::from_str(
        &std::fs::read_to_string(seed_dir().join("expected-record.json")).unwrap(),
    )
    .unwrap();
    expected["log"] = json!(log);
    expected["time"] = json!(docker_time);
    logferry_kubernetes::testing::assert_matches_seed_record(got, &expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_too_old_event_is_counted_and_logged_not_retried() {
    let Some((dir, kube, moto)) = setup().await else {
        return;
    };
    let agent = start_agent(dir.path(), &kube, &moto.endpoint());
    assert!(
        wait(20, || agent.logged("logferry started")),
        "agent did not start"
    );
    // The fixture's line as it stands: 2019, far older than 14 days.
    let line = std::fs::read_to_string(
        seed_dir().join(format!("var/log/containers/{POD}_default_nginx-{ID}.log")),
    )
    .unwrap();
    std::fs::write(
        dir.path()
            .join("containers")
            .join(format!("{POD}_default_nginx-{ID}.log")),
        line,
    )
    .unwrap();
    let logged = tokio::task::spawn_blocking({
        let log = std::sync::Arc::clone(&agent.log);
        move || {
            wait(30, || {
                log.lock()
                    .unwrap()
                    .iter()
                    .any(|l| l.contains("rejected log events"))
            })
        }
    })
    .await
    .unwrap();
    let started = Instant::now();
    let lines = agent.stop();
    assert!(
        logged,
        "the rejection was not logged:\n{}",
        lines.join("\n")
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "no stall at shutdown"
    );
    let rejected = lines
        .iter()
        .find(|l| l.contains("rejected log events"))
        .unwrap();
    assert!(rejected.contains("too_old=1"), "{rejected}");
    let totals = lines.iter().find(|l| l.contains("output totals")).unwrap();
    assert!(
        totals.contains("dropped=1") && totals.contains("retries=0"),
        "{totals}"
    );
}
