//! `logferry-bench`: generates container log workloads, runs the release `logferry` binary on
//! each pipeline, and prints wall s, CPU s, peak RSS, lines/s, lines per CPU-second and MB/s,
//! medians of several runs, with the `cat` floor. Each run's delivered count is checked.
//!
//! CPU and peak RSS come from `getrusage(RUSAGE_CHILDREN)` taken in a small wrapper process
//! (this binary re-run with `measure`) whose only child is the command, so each figure belongs
//! to that one run.
//!
//! P2 and P3 need the kubernetes filter's API server: the project's HTTPS test server
//! (`logferry_kubernetes::testing::KubeApiServer`) runs inside this process on its own tokio
//! runtime, with one Pod per workload file. CW needs moto's CloudWatch Logs server, started from
//! the workspace's Python (`LOGFERRY_TEST_PYTHON`, else `.venv/bin/python`); the default pipelines
//! (`p1,p4`) need neither.

use std::fmt::Write as _;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use clap::{Parser, Subcommand};

mod aws_outputs;
mod churn;

#[derive(Parser)]
#[command(about = "Benchmark logferry pipelines (see docs/performance.md)")]
struct Args {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// Records per workload.
    #[arg(long, default_value_t = 1_000_000)]
    lines: usize,
    /// Runs per pipeline (the median is shown).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Pipelines to run (comma-separated): p1 docker → null, p2 docker JSON → kubernetes merge
    /// (under `Merge_Log_Key data`) → null, p2t the same merged at the top level, p3 the seed
    /// (docker nginx → kubernetes + nginx annotation parser → null), p4 CRI → null, p5 the
    /// seed into cloudwatch_logs (moto, through a proxy that counts the bytes sent),
    /// p5fh/p5ks/p5s3 the same into kinesis_firehose, kinesis_streams and s3 (aws_outputs.rs),
    /// p5os the same into opensearch (the project's `_bulk` test server),
    /// cw docker nginx → cloudwatch (moto). p2/p2t/p3/p5 start the test Kubernetes API server;
    /// cw and p5 need moto in the workspace's Python. idle: the seed's configuration (tail with
    /// a DB on an empty directory, kubernetes, cloudwatch_logs, HTTP server) with no traffic,
    /// its RSS read from /proc after --idle-secs. p6 a busy node: --p6-files files of
    /// --p6-lines lines written at once, then steady appends, through kubernetes into a file;
    /// reports CPU per million lines, RSS per file and the write-to-output lag. churn:
    /// --churn-pods pods come and go in waves (tail → kubernetes → file), RSS at start, peak and
    /// end (src/churn.rs).
    #[arg(long, default_value = "p1,p4")]
    pipelines: String,
    /// `Mem_Buf_Limit` of the tail input in P1–P5 and CW (the performance goal's setting).
    #[arg(long, default_value = "50MB")]
    mem_buf_limit: String,
    /// Run P1–P5 and CW without tail's `DB` (by default each run starts from a fresh DB
    /// next to the workload, `<file>.db`, so offsets are committed as in production).
    #[arg(long)]
    no_db: bool,
    /// Records for the CW and P5 workloads (default: --lines).
    #[arg(long)]
    cw_lines: Option<usize>,
    /// The logferry binary (default: target/release/logferry next to this one).
    #[arg(long)]
    logferry: Option<PathBuf>,
    /// A Fluent Bit binary to run P1–P4 with the same configuration files, side by side in the
    /// same run (checked through tail's DB: the offset committed must be the workload's size).
    #[arg(long)]
    fluent_bit: Option<PathBuf>,
    /// Where workloads are written (default: a fresh temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// P6: container log files written at once.
    #[arg(long, default_value_t = 500)]
    p6_files: usize,
    /// P6: lines written to each file in the burst.
    #[arg(long, default_value_t = 2000)]
    p6_lines: usize,
    /// P6: seconds of steady appends after the burst.
    #[arg(long, default_value_t = 10)]
    p6_steady_secs: u64,
    /// P6: lines per second of the steady appends, over all files.
    #[arg(long, default_value_t = 10_000)]
    p6_rate: usize,
    /// P6: tail's `Mem_Buf_Limit` (default: the seed's 5MB).
    #[arg(long, default_value = "5MB")]
    p6_mem_buf_limit: String,
    /// P6: no NODE_NAME, so the kubernetes filter makes one GET per pod instead of watching the
    /// node's pods (the DaemonSets in deploy/ set NODE_NAME).
    #[arg(long)]
    p6_no_watch: bool,
    /// P6: run logferry under `taskset -c CPUS` (e.g. `0` for one core).
    #[arg(long)]
    cpus: Option<String>,
    /// P6: `[SERVICE] logferry.filter_workers` (default: unset, one filter task per core).
    #[arg(long)]
    p6_filter_workers: Option<usize>,
    /// Seconds the `idle` pipeline waits before reading the agent's RSS.
    #[arg(long, default_value_t = 10)]
    idle_secs: u64,
    /// churn: pods created and deleted over the run.
    #[arg(long, default_value_t = 10_000)]
    churn_pods: usize,
    /// churn: waves the pods come in (each wave's pods go when the next wave's lines are out).
    #[arg(long, default_value_t = 20)]
    churn_waves: usize,
    /// churn: lines each pod writes.
    #[arg(long, default_value_t = 5)]
    churn_lines: usize,
    /// churn: seconds the simulated hour is compressed into (waves start evenly over it, or
    /// later when a wave's lines take longer to come out).
    #[arg(long, default_value_t = 180)]
    churn_secs: u64,
    /// churn: set NODE_NAME so the agent watches the node's pods (default: one GET per pod).
    #[arg(long)]
    churn_watch: bool,
    /// Also count instructions per record with `valgrind --tool=callgrind` (one run per
    /// pipeline, minus a run on an empty file for start-up and shutdown). Instruction counts
    /// do not depend on what else the machine is doing, unlike seconds. Slow: use --lines
    /// 200000 or so.
    #[arg(long)]
    instructions: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// Internal: run a command and print `wall cpu maxrss_kb` for it, then its stderr.
    Measure {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        cmd: Vec<String>,
    },
}

/// One measured run.
#[derive(Clone, Copy, Debug, Default)]
struct Run {
    wall: f64,
    cpu: f64,
    rss_mb: f64,
}

fn measure(cmd: &[String]) -> ExitCode {
    let Some((prog, args)) = cmd.split_first() else {
        eprintln!("measure: no command");
        return ExitCode::FAILURE;
    };
    let start = Instant::now();
    let out = match Command::new(prog)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            eprintln!("measure: cannot run {prog}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let wall = start.elapsed().as_secs_f64();
    let Ok(u) = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN) else {
        eprintln!("measure: getrusage failed");
        return ExitCode::FAILURE;
    };
    let tv = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    let cpu = tv(u.user_time()) + tv(u.system_time());
    println!("{wall} {cpu} {}", u.max_rss());
    print!("{}", String::from_utf8_lossy(&out.stderr));
    print!("{}", String::from_utf8_lossy(&out.stdout));
    if out.status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Runs `cmd` under the measuring wrapper; returns the figures and the command's stderr.
fn measured(cmd: &[String]) -> Result<(Run, String), String> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = Command::new(me)
        .arg("measure")
        .args(cmd)
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines();
    let first = lines.next().unwrap_or("");
    let f: Vec<f64> = first.split(' ').filter_map(|x| x.parse().ok()).collect();
    if f.len() != 3 || !out.status.success() {
        return Err(format!(
            "run failed: {first}\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let rest: String = lines.collect::<Vec<_>>().join("\n");
    Ok((
        Run {
            wall: f[0],
            cpu: f[1],
            rss_mb: f[2] / 1024.0,
        },
        rest,
    ))
}

const AGENTS: [&str; 4] = [
    "hey/0.0.1",
    "curl/8.5.0",
    "Mozilla/5.0 (X11; Linux x86_64)",
    "kube-probe/1.29",
];
const PATHS: [&str; 4] = ["/", "/index.html", "/api/v1/users?id=42", "/static/app.js"];

/// An nginx `main`-format access line, deterministic in `i`.
fn nginx_line(i: usize) -> String {
    format!(
        "10.{}.{}.{} - - [24/Nov/2026:10:{:02}:{:02} +0000] \"GET {} HTTP/1.1\" {} {} \"-\" \"{}\" \"-\"",
        (i / 65536) % 256,
        (i / 256) % 256,
        i % 256,
        (i / 60) % 60,
        i % 60,
        PATHS[i % 4],
        if i.is_multiple_of(17) { 404 } else { 200 },
        4672 + i % 1000,
        AGENTS[i % 4]
    )
}

fn docker_time(i: usize) -> String {
    format!(
        "2026-11-24T10:{:02}:{:02}.{:09}Z",
        (i / 60) % 60,
        i % 60,
        (i * 7919) % 1_000_000_000
    )
}

const LEVELS: [&str; 4] = ["info", "info", "warn", "error"];
const ACTIONS: [&str; 4] = ["created", "paid", "shipped", "cancelled"];

/// An application's JSON log line (~200 bytes): level, msg, ids, a nested object, a float.
fn app_json(i: usize) -> String {
    format!(
        "{{\"level\":\"{}\",\"msg\":\"order {} {}\",\"service\":\"orders-api\",\"request_id\":\"{:016x}\",\"user_id\":{},\"order\":{{\"id\":{},\"items\":{},\"currency\":\"EUR\",\"total\":{}.{:02}}},\"latency_ms\":{:.3}}}",
        LEVELS[i % 4],
        500_000 + i,
        ACTIONS[i % 4],
        (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
        1000 + i % 9000,
        500_000 + i,
        1 + i % 7,
        10 + i % 490,
        i % 100,
        (i % 5000) as f64 / 7.0
    )
}

/// (a) Docker json-file lines of nginx access lines.
fn write_docker_nginx(path: &Path, n: usize) -> std::io::Result<u64> {
    write_docker(path, n, nginx_line)
}

/// (b) Docker json-file lines of application JSON objects.
fn write_docker_json(path: &Path, n: usize) -> std::io::Result<u64> {
    write_docker(path, n, app_json)
}

/// Docker json-file lines whose `log` is `log(i)`.
fn write_docker(path: &Path, n: usize, log: fn(usize) -> String) -> std::io::Result<u64> {
    let mut w = BufWriter::new(std::fs::File::create(path)?);
    for i in 0..n {
        let log = log(i).replace('"', "\\\"");
        writeln!(
            w,
            "{{\"log\":\"{log}\\n\",\"stream\":\"stdout\",\"time\":\"{}\"}}",
            docker_time(i)
        )?;
    }
    w.flush()?;
    Ok(std::fs::metadata(path)?.len())
}

/// (c) CRI lines of nginx access lines, about 1% split into a `P` and an `F` part; returns the
/// size and the number of records after joining.
fn write_cri_nginx(path: &Path, n: usize) -> std::io::Result<(u64, usize)> {
    let mut w = BufWriter::new(std::fs::File::create(path)?);
    for i in 0..n {
        let line = nginx_line(i);
        let t = docker_time(i);
        if i % 100 == 7 {
            let (a, b) = line.split_at(line.len() / 2);
            writeln!(w, "{t} stdout P {a}")?;
            writeln!(w, "{t} stdout F {b}")?;
        } else {
            writeln!(w, "{t} stdout F {line}")?;
        }
    }
    w.flush()?;
    Ok((std::fs::metadata(path)?.len(), n))
}

struct Pipeline {
    name: &'static str,
    what: &'static str,
    file: PathBuf,
    bytes: u64,
    lines: usize,
    config: String,
}

/// logferry's built-in parser definitions, in Fluent Bit's parsers file format.
const PARSERS: &str = include_str!("../../parsers/src/builtin_parsers.conf");

const NULL_OUTPUT: &str = "[OUTPUT]\n    Name null\n    Match *\n";

/// The tail settings every measured pipeline shares.
struct TailOpts {
    mem_buf_limit: String,
    db: bool,
    /// Fluent Bit has no built-in parsers: both agents read the same parsers file (logferry's
    /// built-in definitions, written out).
    parsers_file: PathBuf,
}

/// tail's DB for the workload `file`: removed before each run (with SQLite's side files).
fn db_path(file: &Path) -> PathBuf {
    file.with_extension("db")
}

fn remove_db(file: &Path) {
    let db = db_path(file);
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = db.clone().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
}

/// tail of `path` (from head to EOF) with `input_extra`, then `rest` (filters and the output).
fn config(path: &Path, tail: &TailOpts, input_extra: &str, grace: u32, rest: &str) -> String {
    let db = if tail.db {
        format!("    DB {}\n", db_path(path).display())
    } else {
        String::new()
    };
    format!(
        "[SERVICE]\n    Flush 1\n    Grace {grace}\n    Log_Level info\n    Parsers_File {}\n\n[INPUT]\n    Name tail\n    Tag kube.*\n    Path {}\n    Read_from_Head On\n    Exit_On_Eof On\n    Mem_Buf_Limit {}\n    Buffer_Max_Size 64k\n{db}{input_extra}\n{rest}",
        tail.parsers_file.display(),
        path.display(),
        tail.mem_buf_limit,
    )
}

/// The test Kubernetes API server, on a runtime kept alive for the whole benchmark.
struct Kube {
    server: logferry_kubernetes::testing::KubeApiServer,
    /// `Kube_Tag_Prefix` for files in the workload directory.
    prefix: String,
    _rt: tokio::runtime::Runtime,
}

impl Kube {
    fn start(dir: &Path, containers: &Path) -> std::io::Result<Kube> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("kube-api")
            .enable_all()
            .build()?;
        let server = rt.block_on(logferry_kubernetes::testing::KubeApiServer::start(dir));
        Ok(Kube {
            server,
            prefix: tag_prefix(containers),
            _rt: rt,
        })
    }

    /// A `[FILTER] kubernetes` section talking to this server, with `Merge_Log On`,
    /// `Merge_Log_Key data` and `extra`, followed by the null output.
    fn filter(&self, extra: &str) -> String {
        self.filter_to(extra, NULL_OUTPUT)
    }

    /// [`Kube::filter`] followed by `output`.
    fn filter_to(&self, extra: &str, output: &str) -> String {
        self.filter_in(&self.prefix, extra, output)
    }

    /// [`Kube::filter_to`] for container log files elsewhere: `prefix` is their
    /// [`tag_prefix`].
    fn filter_in(&self, prefix: &str, extra: &str, output: &str) -> String {
        format!(
            "[FILTER]\n    Name kubernetes\n    Match kube.*\n    Kube_URL {}\n    Kube_CA_File {}\n    Kube_Token_File {}\n    Kube_Tag_Prefix {}\n    Merge_Log On\n    Merge_Log_Key data\n{extra}\n{output}",
            self.server.url(),
            self.server.ca_file.display(),
            self.server.token_file.display(),
            prefix
        )
    }
}

/// The prefix `Tag kube.*` gives files in `dir` (what `Kube_Tag_Prefix` strips).
fn tag_prefix(dir: &Path) -> String {
    format!(
        "kube.{}.",
        dir.display()
            .to_string()
            .trim_start_matches('/')
            .replace('/', ".")
    )
}

/// A `file` output writing each record's `log` alone, one per line, to `dir/file`.
fn file_output(dir: &Path, file: &str) -> String {
    format!(
        "[OUTPUT]\n    Name file\n    Match *\n    Path {}\n    File {file}\n    Format template\n    Template {{log}}\n",
        dir.display()
    )
}

/// A Pod in the shape of the seed's pod.json, for the container log file
/// `<name>_<ns>_<container>-<id>.log`.
fn pod_json(
    name: &str,
    ns: &str,
    container: &str,
    image: &str,
    id: &str,
    annotations: serde_json::Value,
) -> serde_json::Value {
    let rs = name.rsplit_once('-').map_or(name, |(a, _)| a);
    let hash = rs.rsplit_once('-').map_or("", |(_, b)| b);
    let app = rs.rsplit_once('-').map_or(rs, |(a, _)| a);
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "generateName": format!("{rs}-"),
            "namespace": ns,
            "uid": format!("bench-{name}"),
            "resourceVersion": "1",
            "creationTimestamp": "2026-11-24T09:00:00Z",
            "labels": {"app": app, "pod-template-hash": hash},
            "annotations": annotations,
            "ownerReferences": [{
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": rs,
                "uid": format!("bench-{rs}"),
                "controller": true,
                "blockOwnerDeletion": true
            }],
            "managedFields": managed_fields(container, &format!("bench-{rs}"))
        },
        "spec": {
            "containers": [{
                "name": container,
                "image": image,
                "ports": [{"containerPort": 80, "protocol": "TCP"}],
                "resources": {},
                "imagePullPolicy": "IfNotPresent"
            }],
            "restartPolicy": "Always",
            "serviceAccountName": "default",
            "nodeName": "bench-node"
        },
        "status": {
            "phase": "Running",
            "hostIP": "10.1.128.166",
            "podIP": "10.1.140.21",
            "startTime": "2026-11-24T09:00:00Z",
            "containerStatuses": [{
                "name": container,
                "ready": true,
                "restartCount": 0,
                "image": image,
                "imageID": format!("docker-pullable://{image}"),
                "containerID": format!("docker://{id}"),
                "started": true,
                "state": {"running": {"startedAt": "2026-11-24T09:00:05Z"}}
            }]
        }
    })
}

/// The `managedFields` the API server adds to every Pod it returns (server-side apply's
/// record of who set what: here the ReplicaSet controller's and the kubelet's, as on a real
/// cluster): 1.6 KB of each bench pod's 2.8 KB of JSON. The agent keeps none of it, but a
/// node's pod list carries it for every pod.
fn managed_fields(container: &str, rs_uid: &str) -> serde_json::Value {
    let c = format!("k:{{\"name\":\"{container}\"}}");
    let o = format!("k:{{\"uid\":\"{rs_uid}\"}}");
    serde_json::json!([
        {
            "manager": "kube-controller-manager",
            "operation": "Update",
            "apiVersion": "v1",
            "time": "2026-11-24T09:00:00Z",
            "fieldsType": "FieldsV1",
            "fieldsV1": {
                "f:metadata": {
                    "f:generateName": {},
                    "f:labels": {".": {}, "f:app": {}, "f:pod-template-hash": {}},
                    "f:ownerReferences": {".": {}, o: {}}
                },
                "f:spec": {
                    "f:containers": {c.clone(): {
                        ".": {}, "f:image": {}, "f:imagePullPolicy": {}, "f:name": {},
                        "f:ports": {".": {}, "k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {
                            ".": {}, "f:containerPort": {}, "f:protocol": {}
                        }},
                        "f:resources": {}, "f:terminationMessagePath": {},
                        "f:terminationMessagePolicy": {}
                    }},
                    "f:dnsPolicy": {}, "f:enableServiceLinks": {}, "f:restartPolicy": {},
                    "f:schedulerName": {}, "f:securityContext": {}, "f:serviceAccount": {},
                    "f:serviceAccountName": {}, "f:terminationGracePeriodSeconds": {}
                }
            }
        },
        {
            "manager": "kubelet",
            "operation": "Update",
            "apiVersion": "v1",
            "time": "2026-11-24T09:00:05Z",
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:status": {
                "f:conditions": {
                    "k:{\"type\":\"ContainersReady\"}": {".": {}, "f:lastProbeTime": {}, "f:lastTransitionTime": {}, "f:status": {}, "f:type": {}},
                    "k:{\"type\":\"Initialized\"}": {".": {}, "f:lastProbeTime": {}, "f:lastTransitionTime": {}, "f:status": {}, "f:type": {}},
                    "k:{\"type\":\"PodReadyToStartContainers\"}": {".": {}, "f:lastProbeTime": {}, "f:lastTransitionTime": {}, "f:status": {}, "f:type": {}},
                    "k:{\"type\":\"Ready\"}": {".": {}, "f:lastProbeTime": {}, "f:lastTransitionTime": {}, "f:status": {}, "f:type": {}}
                },
                "f:containerStatuses": {}, "f:hostIP": {}, "f:hostIPs": {}, "f:phase": {},
                "f:podIP": {}, "f:podIPs": {".": {}, "k:{\"ip\":\"10.1.140.21\"}": {".": {}, "f:ip": {}}},
                "f:startTime": {}
            }},
            "subresource": "status"
        }
    ])
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn output_records(stderr: &str) -> Option<usize> {
    stderr
        .lines()
        .filter(|l| l.contains("output totals"))
        .filter_map(|l| {
            let i = l.find("records=")? + "records=".len();
            l[i..]
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse::<usize>()
                .ok()
        })
        .next()
}

/// Instructions callgrind counted for `cmd` (its `Collected : N` line), and the stderr.
fn callgrind(cmd: &[String]) -> Result<(u64, String), String> {
    let out = Command::new("valgrind")
        .args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
        .args(cmd)
        .stdout(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run valgrind (install it: apt-get install valgrind): {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let n = stderr
        .lines()
        .find_map(|l| {
            let i = l.find("Collected :")? + "Collected :".len();
            l[i..].trim().parse::<u64>().ok()
        })
        .ok_or_else(|| format!("no instruction count from callgrind:\n{stderr}"))?;
    if !out.status.success() {
        return Err(format!("run under callgrind failed:\n{stderr}"));
    }
    Ok((n, stderr))
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Cmd::Measure { cmd }) = &args.cmd {
        return measure(cmd);
    }
    let logferry = args.logferry.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("logferry")))
            .unwrap_or_else(|| PathBuf::from("logferry"))
    });
    if !logferry.exists() {
        eprintln!(
            "{} not found: build it first with `cargo build --release -p logferry`",
            logferry.display()
        );
        return ExitCode::FAILURE;
    }
    // A directory of its own unless `--dir` names one, removed however `main` returns: a run
    // that failed used to leave its workloads (up to ~190 MB) in the temp directory.
    let _own_dir;
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => match tempfile::Builder::new().prefix("logferry-bench-").tempdir() {
            Ok(t) => {
                let path = t.path().to_path_buf();
                _own_dir = t;
                path
            }
            Err(e) => {
                eprintln!("cannot create a temporary directory: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let containers = dir.join("containers");
    if let Err(e) = std::fs::create_dir_all(&containers) {
        eprintln!("cannot create {}: {e}", containers.display());
        return ExitCode::FAILURE;
    }
    let hex = "b90a89309ac90fff2972822c66f11736933000c5aa6376dff0c11a441fa427ee";
    let wanted: Vec<String> = args
        .pipelines
        .split(',')
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect();
    if let Some(w) = wanted.iter().find(|w| {
        ![
            "p1", "p2", "p2t", "p3", "p4", "p5", "p6", "cw", "idle", "churn",
        ]
        .contains(&w.as_str())
            && !aws_outputs::NAMES.contains(&w.as_str())
    }) {
        eprintln!(
            "unknown pipeline {w:?}: use p1, p2, p2t, p3, p4, p5, p5fh, p5ks, p5s3, p5os, p6, cw, idle or churn"
        );
        return ExitCode::FAILURE;
    }
    let want = |name: &str| wanted.iter().any(|w| w == name);
    let aws = aws_outputs::NAMES.iter().any(|p| want(p));
    let kube = if aws
        || ["p2", "p2t", "p3", "p5", "p6", "idle", "churn"]
            .iter()
            .any(|p| want(p))
    {
        match Kube::start(&dir, &containers) {
            Ok(k) => Some(k),
            Err(e) => {
                eprintln!("cannot start the test Kubernetes API server: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    let moto = if want("cw") || want("p5") || aws {
        let py = logferry_aws::testing::python();
        if !py.exists() {
            eprintln!(
                "cw and p5 need moto: {} not found (create the workspace's .venv with \
                 `python3 -m venv .venv && .venv/bin/pip install -r requirements-test.txt`, \
                 or set LOGFERRY_TEST_PYTHON)",
                py.display()
            );
            return ExitCode::FAILURE;
        }
        // Also sets dummy AWS credentials (inherited by logferry) and disables IMDS.
        Some(logferry_aws::testing::Moto::start())
    } else {
        None
    };
    // P5's requests go through a counting proxy: the bytes logferry sends.
    let proxy = match (&moto, want("p5") || aws) {
        (Some(m), true) => Some(logferry_aws::testing::proxy::FaultProxy::start(m.addr())),
        _ => None,
    };
    let cw_lines = args.cw_lines.unwrap_or(args.lines);
    let docker = "    Parser docker\n    Docker_Mode On\n";
    let tail = TailOpts {
        mem_buf_limit: args.mem_buf_limit.clone(),
        db: !args.no_db,
        parsers_file: dir.join("parsers.conf"),
    };
    if let Err(e) = std::fs::write(&tail.parsers_file, PARSERS) {
        eprintln!("cannot write {}: {e}", tail.parsers_file.display());
        return ExitCode::FAILURE;
    }
    let mut pipelines = Vec::new();
    let gen = || -> std::io::Result<Vec<Pipeline>> {
        let mut v = Vec::new();
        // (a), shared by P1, P3 and CW: the seed's pod.
        let nginx = containers.join(format!("nginx-5468c5d4d7-n2swr_default_nginx-{hex}.log"));
        let mut nginx_bytes = None;
        if want("p1") || want("p3") || (want("cw") && cw_lines == args.lines) {
            nginx_bytes = Some(write_docker_nginx(&nginx, args.lines)?);
        }
        if let (true, Some(bytes)) = (want("p1"), nginx_bytes) {
            v.push(Pipeline {
                name: "P1",
                what: "docker → null",
                config: config(&nginx, &tail, docker, 5, NULL_OUTPUT),
                file: nginx.clone(),
                bytes,
                lines: args.lines,
            });
        }
        if let Some(k) = &kube {
            // P2 merges under `Merge_Log_Key data`, as the seed does; P2t at the top level
            // (Fluent Bit's default, no key), which takes another path through `Merge_Log`.
            for (want_it, name, what, pod) in [
                (
                    want("p2"),
                    "P2",
                    "docker JSON → kubernetes merge → null",
                    "orders-api-7d9f8b6c5-k2x9p",
                ),
                (
                    want("p2t"),
                    "P2t",
                    "docker JSON → kubernetes merge at the top level → null",
                    "orders-api-7d9f8b6c5-t0p7l",
                ),
            ] {
                if !want_it {
                    continue;
                }
                let (ns, container) = ("shop", "app");
                let f = containers.join(format!("{pod}_{ns}_{container}-{hex}.log"));
                let bytes = write_docker_json(&f, args.lines)?;
                k.server.add_pod(pod_json(
                    pod,
                    ns,
                    container,
                    "example.com/orders-api:1.4.2",
                    hex,
                    serde_json::json!({"kubernetes.io/psp": "eks.privileged"}),
                ));
                let mut filter = k.filter("");
                if name == "P2t" {
                    filter = filter.replace("    Merge_Log_Key data\n", "");
                }
                v.push(Pipeline {
                    name,
                    what,
                    config: config(&f, &tail, docker, 5, &filter),
                    file: f,
                    bytes,
                    lines: args.lines,
                });
            }
            if let (true, Some(bytes)) = (want("p3"), nginx_bytes) {
                k.server.add_pod(pod_json(
                    "nginx-5468c5d4d7-n2swr",
                    "default",
                    "nginx",
                    "nginx:1.17-alpine",
                    hex,
                    serde_json::json!({
                        "fluentbit.io/parser": "nginx",
                        "kubernetes.io/psp": "eks.privileged"
                    }),
                ));
                v.push(Pipeline {
                    name: "P3",
                    what: "seed: docker → kubernetes + nginx parser → null",
                    config: config(
                        &nginx,
                        &tail,
                        docker,
                        5,
                        &k.filter("    K8S-Logging.Parser On\n"),
                    ),
                    file: nginx.clone(),
                    bytes,
                    lines: args.lines,
                });
            }
        }
        if want("p4") {
            let f = containers.join(format!("nginx-cri-5468c5d4d7-x1_default_nginx-{hex}.log"));
            let (bytes, records) = write_cri_nginx(&f, args.lines)?;
            v.push(Pipeline {
                name: "P4",
                what: "CRI → null",
                config: config(&f, &tail, "    multiline.parser cri\n", 5, NULL_OUTPUT),
                file: f,
                bytes,
                lines: records,
            });
        }
        if let (Some(k), Some(px), true) = (&kube, &proxy, want("p5")) {
            let (pod, ns, container) = ("web-5468c5d4d7-p5x7q", "default", "nginx");
            let f = containers.join(format!("{pod}_{ns}_{container}-{hex}.log"));
            let bytes = write_docker_nginx(&f, cw_lines)?;
            k.server.add_pod(pod_json(
                pod,
                ns,
                container,
                "nginx:1.17-alpine",
                hex,
                serde_json::json!({
                    "fluentbit.io/parser": "nginx",
                    "kubernetes.io/psp": "eks.privileged"
                }),
            ));
            let output = format!(
                "[OUTPUT]\n    Name cloudwatch_logs\n    Match *\n    region us-east-1\n    log_group_name bench-p5\n    log_stream_prefix from-fluent-bit-\n    auto_create_group true\n    endpoint {}\n",
                px.endpoint()
            );
            v.push(Pipeline {
                name: "P5",
                what: "seed: docker → kubernetes + nginx parser → cloudwatch_logs (moto)",
                config: config(
                    &f,
                    &tail,
                    docker,
                    600,
                    &k.filter_to("    K8S-Logging.Parser On\n", &output),
                ),
                file: f,
                bytes,
                lines: cw_lines,
            });
        }
        if let (Some(m), true) = (&moto, want("cw")) {
            let (f, bytes) = match nginx_bytes {
                Some(b) if cw_lines == args.lines => (nginx.clone(), b),
                _ => {
                    let f =
                        containers.join(format!("nginx-cw-5468c5d4d7-c1_default_nginx-{hex}.log"));
                    let b = write_docker_nginx(&f, cw_lines)?;
                    (f, b)
                }
            };
            let output = format!(
                "[OUTPUT]\n    Name cloudwatch\n    Match *\n    region us-east-1\n    log_group_name bench\n    log_stream_prefix b-\n    auto_create_group true\n    endpoint {}\n",
                m.endpoint()
            );
            v.push(Pipeline {
                name: "CW",
                what: "docker → cloudwatch (moto)",
                // moto is slow: give the outputs all the time they need to deliver everything.
                config: config(&f, &tail, docker, 600, &output),
                file: f,
                bytes,
                lines: cw_lines,
            });
        }
        if let (Some(k), Some(px), Some(m)) = (&kube, &proxy, &moto) {
            v.extend(
                aws_outputs::pipelines(&want, k, px, m, &dir, &containers, hex, cw_lines, &tail)
                    .map_err(std::io::Error::other)?,
            );
        }
        Ok(v)
    };
    match gen() {
        Ok(v) => pipelines.extend(v),
        Err(e) => {
            eprintln!("cannot write workloads: {e}");
            return ExitCode::FAILURE;
        }
    }

    let mut table = String::new();
    let _ = writeln!(
        table,
        "| pipeline | wall s | CPU s | peak RSS MB | lines/s | lines per CPU-s | MB/s | floor: cat wall s |{}\n|---|---|---|---|---|---|---|---|{}",
        if args.instructions { " instructions per record |" } else { "" },
        if args.instructions { "---|" } else { "" },
    );
    let mut notes = String::new();
    let mut fb_table = String::from(
        "| pipeline | Fluent Bit wall s | CPU s | peak RSS MB | lines per CPU-s | logferry's lines per CPU-s over Fluent Bit's | logferry's peak RSS over Fluent Bit's |\n|---|---|---|---|---|---|---|\n",
    );
    for p in &pipelines {
        let conf = dir.join(format!("{}.conf", p.name));
        if let Err(e) = std::fs::write(&conf, &p.config) {
            eprintln!("cannot write {}: {e}", conf.display());
            return ExitCode::FAILURE;
        }
        // Warm the page cache and take the floor.
        let cat = vec!["cat".to_string(), p.file.display().to_string()];
        let _ = measured(&cat);
        let floor = median(
            (0..args.runs)
                .filter_map(|_| measured(&cat).ok().map(|(r, _)| r.wall))
                .collect(),
        );
        let mut runs = Vec::new();
        let kube_requests = kube.as_ref().map_or(0, |k| k.server.total_requests());
        let sent_before = proxy.as_ref().map_or(0, |px| px.seen().len());
        for _ in 0..args.runs {
            remove_db(&p.file);
            let cmd = vec![
                logferry.display().to_string(),
                "-c".into(),
                conf.display().to_string(),
            ];
            match measured(&cmd) {
                Ok((r, stderr)) => {
                    let got = output_records(&stderr);
                    if got != Some(p.lines) {
                        eprintln!(
                            "{}: delivered {got:?} records, expected {}: wrong run\n{stderr}",
                            p.name, p.lines
                        );
                        return ExitCode::FAILURE;
                    }
                    runs.push(r);
                }
                Err(e) => {
                    eprintln!("{}: {e}", p.name);
                    return ExitCode::FAILURE;
                }
            }
        }
        // P2 and P3 must have asked the API server for their pod (one GET per run at least).
        if let (true, Some(k)) = (p.name == "P2" || p.name == "P3", &kube) {
            let asked = k.server.total_requests() - kube_requests;
            if asked < args.runs as u64 {
                eprintln!(
                    "{}: the kubernetes filter made {asked} API requests in {} runs: no metadata",
                    p.name, args.runs
                );
                return ExitCode::FAILURE;
            }
        }
        if let (true, Some(px)) = (p.name == "P5", &proxy) {
            let calls: Vec<_> = px.seen().into_iter().skip(sent_before).collect();
            let puts = calls
                .iter()
                .filter(|c| c.operation.ends_with("PutLogEvents"));
            let (n, body): (usize, usize) = puts.fold((0, 0), |(n, b), c| (n + 1, b + c.body_len));
            let cpu = median(runs.iter().map(|r| r.cpu).collect());
            let _ = writeln!(
                notes,
                "P5: {:.2} CPU s per million events delivered, {:.1} MB of PutLogEvents bodies per run ({} calls, {:.0} bytes per event)",
                cpu / p.lines.max(1) as f64 * 1e6,
                body as f64 / args.runs.max(1) as f64 / 1e6,
                n / args.runs.max(1),
                body as f64 / (p.lines * args.runs).max(1) as f64,
            );
        }
        if let (Some(px), Some(m)) = (&proxy, &moto) {
            let calls: Vec<_> = px.seen().into_iter().skip(sent_before).collect();
            let cpu = median(runs.iter().map(|r| r.cpu).collect());
            match aws_outputs::note(p, m, &calls, args.runs, cpu) {
                Some(Ok(line)) => {
                    let _ = writeln!(notes, "{line}");
                }
                Some(Err(e)) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
                None => {}
            }
        }
        let wall = median(runs.iter().map(|r| r.wall).collect());
        let cpu = median(runs.iter().map(|r| r.cpu).collect());
        let rss = median(runs.iter().map(|r| r.rss_mb).collect());
        if let (Some(fb), true) = (&args.fluent_bit, ["P1", "P2", "P3", "P4"].contains(&p.name)) {
            match fluent_bit_runs(fb, p, args.runs) {
                Ok(fb_runs) => {
                    let fb_wall = median(fb_runs.iter().map(|r| r.wall).collect());
                    let fb_cpu = median(fb_runs.iter().map(|r| r.cpu).collect());
                    let fb_rss = median(fb_runs.iter().map(|r| r.rss_mb).collect());
                    let _ = writeln!(
                        fb_table,
                        "| {} | {fb_wall:.2} | {fb_cpu:.2} | {fb_rss:.1} | {:.0}k | {:.2}× | {:.2} |",
                        p.name,
                        p.lines as f64 / fb_cpu.max(1e-9) / 1e3,
                        fb_cpu / cpu.max(1e-9),
                        rss / fb_rss.max(1e-9),
                    );
                }
                Err(e) => {
                    eprintln!("{} under Fluent Bit: {e}", p.name);
                    return ExitCode::FAILURE;
                }
            }
        }
        let instructions = if args.instructions {
            match per_record_instructions(&logferry, &dir, p) {
                Ok(n) => format!(" {n:.0} |"),
                Err(e) => {
                    eprintln!("{}: {e}", p.name);
                    return ExitCode::FAILURE;
                }
            }
        } else {
            String::new()
        };
        let _ = writeln!(
            table,
            "| {} {} | {wall:.2} | {cpu:.2} | {rss:.1} | {:.0}k | {:.0}k | {:.1} | {floor:.3} |{instructions}",
            p.name,
            p.what,
            p.lines as f64 / wall / 1e3,
            p.lines as f64 / cpu.max(1e-9) / 1e3,
            p.bytes as f64 / 1_048_576.0 / wall,
        );
    }
    let cw_note = if moto.is_some() && cw_lines != args.lines {
        format!(" ({cw_lines} for CW and P5)")
    } else {
        String::new()
    };
    println!(
        "{} records per workload{cw_note}, median of {} runs, {} ({} cores)\n",
        args.lines,
        args.runs,
        logferry.display(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    if let (true, Some(k)) = (want("idle"), &kube) {
        match idle_rss(&logferry, &dir, k, args.idle_secs) {
            Ok(line) => {
                let _ = writeln!(notes, "{line}");
            }
            Err(e) => {
                eprintln!("idle: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if let (true, Some(k)) = (want("p6"), &kube) {
        match busy_node(&logferry, &dir, k, &args) {
            Ok(line) => {
                let _ = writeln!(notes, "{line}");
            }
            Err(e) => {
                eprintln!("p6: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if let (true, Some(k)) = (want("churn"), &kube) {
        match churn::churn(&logferry, &dir, k, &args) {
            Ok(line) => {
                let _ = writeln!(notes, "{line}");
            }
            Err(e) => {
                eprintln!("churn: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    print!("{table}");
    if let Some(fb) = &args.fluent_bit {
        print!(
            "\nSide by side, same configuration files ({}):\n\n{fb_table}",
            fb.display()
        );
    }
    if !notes.is_empty() {
        print!("\n{notes}");
    }
    if let Some(k) = &kube {
        k.server.stop();
    }
    drop(proxy);
    drop(moto);
    ExitCode::SUCCESS
}

/// `runs` measured runs of Fluent Bit on pipeline `p`'s configuration file, unchanged. This
/// Fluent Bit build (`FLB_MINIMAL`) has no `counter` output and its `null` output says nothing,
/// so a run is checked through tail's DB instead: the offset committed for the workload must be
/// its size (every line read and filtered; filters run as records are ingested).
fn fluent_bit_runs(fb: &Path, p: &Pipeline, runs: usize) -> Result<Vec<Run>, String> {
    if !p.config.contains(NULL_OUTPUT) {
        return Err("only pipelines into null run side by side".into());
    }
    let conf = p.file.with_extension("fluent-bit.conf");
    std::fs::write(&conf, &p.config)
        .map_err(|e| format!("cannot write {}: {e}", conf.display()))?;
    let mut out = Vec::new();
    for _ in 0..runs {
        remove_db(&p.file);
        let cmd = vec![
            fb.display().to_string(),
            "-c".into(),
            conf.display().to_string(),
        ];
        let (r, text) = measured(&cmd)?;
        let read = db_offset(&db_path(&p.file))
            .map_err(|e| format!("no offset in tail's DB ({e}): run with the DB\n{text}"))?;
        if read != p.bytes {
            return Err(format!(
                "read {read} of {} bytes: wrong run\n{text}",
                p.bytes
            ));
        }
        out.push(r);
    }
    Ok(out)
}

/// The largest offset tail's DB (Fluent Bit's `in_tail_files` table) holds.
fn db_offset(db: &Path) -> Result<u64, String> {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| format!("{}: {e}", db.display()))?;
    c.query_row("SELECT MAX(offset) FROM in_tail_files", [], |r| {
        r.get::<_, Option<i64>>(0)
    })
    .map_err(|e| format!("{}: {e}", db.display()))?
    .map(|o| o as u64)
    .ok_or_else(|| format!("{}: no file recorded", db.display()))
}

/// Instructions per record of pipeline `p`: a callgrind run on its workload minus one on an
/// empty file with the same configuration (start-up, shutdown), over the record count.
fn per_record_instructions(logferry: &Path, dir: &Path, p: &Pipeline) -> Result<f64, String> {
    let run = |name: &str, config: &str| -> Result<(u64, String), String> {
        let conf = dir.join(name);
        std::fs::write(&conf, config)
            .map_err(|e| format!("cannot write {}: {e}", conf.display()))?;
        remove_db(&p.file);
        callgrind(&[
            logferry.display().to_string(),
            "-c".into(),
            conf.display().to_string(),
        ])
    };
    let (full, stderr) = run(&format!("{}.callgrind.conf", p.name), &p.config)?;
    let got = output_records(&stderr);
    if got != Some(p.lines) {
        return Err(format!(
            "under callgrind: delivered {got:?} records, expected {}",
            p.lines
        ));
    }
    let empty = p.file.with_extension("empty.log");
    std::fs::write(&empty, "").map_err(|e| format!("cannot write {}: {e}", empty.display()))?;
    let config = p
        .config
        .replace(&p.file.display().to_string(), &empty.display().to_string());
    let (base, _) = run(&format!("{}.empty.conf", p.name), &config)?;
    let _ = std::fs::remove_file(&empty);
    remove_db(&empty);
    Ok(full.saturating_sub(base) as f64 / p.lines.max(1) as f64)
}

/// The seed's pipeline with nothing to read: RSS (`VmRSS`, and the peak `VmHWM`) after `secs`.
fn idle_rss(logferry: &Path, dir: &Path, kube: &Kube, secs: u64) -> Result<String, String> {
    let logs = dir.join("idle-containers");
    std::fs::create_dir_all(&logs).map_err(|e| e.to_string())?;
    let output = "[OUTPUT]\n    Name cloudwatch_logs\n    Match **\n    region us-east-2\n    log_group_name fluentbit-cloudwatch\n    log_stream_prefix fluentbit-\n    auto_create_group true\n    endpoint http://127.0.0.1:9\n";
    let conf = format!(
        "[SERVICE]\n    Flush 1\n    Log_Level info\n    HTTP_Server On\n    HTTP_Listen 127.0.0.1\n    HTTP_Port 0\n\n[INPUT]\n    Name tail\n    Tag kube.*\n    Path {}/*.log\n    DB {}/idle.db\n    Parser docker\n    Docker_Mode On\n    Mem_Buf_Limit 5MB\n    Skip_Long_Lines On\n    Refresh_Interval 10\n\n{}",
        logs.display(),
        dir.display(),
        kube.filter_to("    K8S-Logging.Parser On\n    K8S-Logging.Exclude On\n", output)
    );
    let path = dir.join("idle.conf");
    std::fs::write(&path, conf).map_err(|e| e.to_string())?;
    let mut child = Command::new(logferry)
        .arg("-c")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    std::thread::sleep(std::time::Duration::from_secs(secs));
    let status = proc_status(child.id());
    let _ = child.kill();
    let _ = child.wait();
    let status = status.ok_or_else(|| format!("logferry exited before {secs} s"))?;
    let field = |name| status_mb(&status, name).unwrap_or(f64::NAN);
    Ok(format!(
        "idle (the seed's configuration, no traffic, after {secs} s): RSS {:.1} MB, peak {:.1} MB",
        field("VmRSS:"),
        field("VmHWM:")
    ))
}

/// A P6 line's `log`: its file, its sequence number in that file and when it was written (ns
/// since the epoch), padded to a typical access-log length.
fn p6_log(file: usize, seq: usize) -> String {
    let now = now_ns();
    format!(
        "p6 {file} {seq} {now} GET /api/v1/orders?page={seq} HTTP/1.1 200 4672 kube-probe/1.29 rid={:016x}",
        (seq as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    )
}

fn now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// A `/proc/<pid>/status` size field (`VmRSS:`, `VmHWM:`, given in kB) in MB.
fn status_mb(status: &str, field: &str) -> Option<f64> {
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse::<f64>()
        .ok()?;
    Some(kb / 1024.0)
}

fn proc_status(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/status")).ok()
}

/// (utime + stime) seconds and VmHWM MB of a running process.
fn proc_cpu_hwm(pid: u32) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    let ticks = 100.0; // USER_HZ on Linux
    let cpu = (f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / ticks;
    let hwm = status_mb(&proc_status(pid)?, "VmHWM:")?;
    Some((cpu, hwm))
}

fn rss_mb(pid: u32) -> f64 {
    proc_status(pid)
        .and_then(|s| status_mb(&s, "VmRSS:"))
        .unwrap_or(f64::NAN)
}

/// P6, a busy node: many container log files written at once, then steady appends; the agent
/// (tail → kubernetes → file output with `Format template`) runs the whole time, and a reader
/// here follows its output file, so every line's lag from write to output is measured.
fn busy_node(logferry: &Path, dir: &Path, kube: &Kube, args: &Args) -> Result<String, String> {
    use std::io::{Read, Seek, SeekFrom};
    use std::time::{Duration, Instant};
    let hex = "c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d2e3f4a5b6c7d8e9f0a1b2c3d4";
    let logs = dir.join("p6-containers");
    let out_dir = dir.join("p6-out");
    for d in [&logs, &out_dir] {
        let _ = std::fs::remove_dir_all(d);
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let files: Vec<PathBuf> = (0..args.p6_files)
        .map(|i| {
            let pod = format!("busy-{i:04}-5468c5d4d7-b{i:04}");
            kube.server.add_pod(pod_json(
                &pod,
                "busy",
                "app",
                "example.com/busy:1.0",
                hex,
                serde_json::json!({"kubernetes.io/psp": "eks.privileged"}),
            ));
            logs.join(format!("{pod}_busy_app-{hex}.log"))
        })
        .collect();
    let filter = kube.filter_in(&tag_prefix(&logs), "", &file_output(&out_dir, "p6.out"));
    let workers = args.p6_filter_workers.map_or(String::new(), |n| {
        format!("    logferry.filter_workers {n}\n")
    });
    let conf = format!(
        "[SERVICE]\n    Flush 1\n    Grace 5\n    Log_Level info\n{workers}\n[INPUT]\n    Name tail\n    Tag kube.*\n    Path {}/*.log\n    DB {}/p6.db\n    Parser docker\n    Docker_Mode On\n    Mem_Buf_Limit {}\n    Refresh_Interval 1\n    Read_from_Head On\n    Buffer_Max_Size 64k\n\n{filter}",
        logs.display(),
        dir.display(),
        args.p6_mem_buf_limit,
    );
    let conf_path = dir.join("p6.conf");
    std::fs::write(&conf_path, conf).map_err(|e| e.to_string())?;
    let mut cmd = match &args.cpus {
        Some(c) => {
            let mut t = Command::new("taskset");
            t.arg("-c").arg(c).arg(logferry);
            t
        }
        None => Command::new(logferry),
    };
    if args.p6_no_watch {
        cmd.env_remove("NODE_NAME");
    } else {
        cmd.env("NODE_NAME", "bench-node");
    }
    let mut child = cmd
        .arg("-c")
        .arg(&conf_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start logferry: {e}"))?;
    // taskset execs logferry: same pid.
    let pid = child.id();
    std::thread::sleep(Duration::from_secs(2));
    let idle = rss_mb(pid);
    let burst = args.p6_files * args.p6_lines;
    let steady = args.p6_rate * args.p6_steady_secs as usize;
    let total = burst + steady;
    let t0 = Instant::now();
    let cpu0 = proc_cpu_hwm(pid).map_or(0.0, |(c, _)| c);

    // The reader: follows the output file, takes each line's write time.
    let out_file = out_dir.join("p6.out");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut lags: Vec<u64> = Vec::with_capacity(total);
            let mut pos = 0u64;
            let mut partial = Vec::new();
            let mut buf = vec![0u8; 1 << 20];
            let deadline = Instant::now() + Duration::from_secs(600);
            while lags.len() < total && Instant::now() < deadline {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let mut got = 0;
                if let Ok(mut f) = std::fs::File::open(&out_file) {
                    if f.seek(SeekFrom::Start(pos)).is_ok() {
                        while let Ok(n) = f.read(&mut buf) {
                            if n == 0 {
                                break;
                            }
                            got += n;
                            pos += n as u64;
                            let now = now_ns();
                            partial.extend_from_slice(&buf[..n]);
                            let end = partial
                                .iter()
                                .rposition(|&b| b == b'\n')
                                .map_or(0, |i| i + 1);
                            for line in partial[..end].split(|&b| b == b'\n') {
                                let Ok(l) = std::str::from_utf8(line) else {
                                    continue;
                                };
                                let mut it = l.split(' ');
                                if it.next() != Some("p6") {
                                    continue;
                                }
                                if let Some(t) = it.nth(2).and_then(|t| t.parse::<u128>().ok()) {
                                    lags.push((now.saturating_sub(t) / 1_000_000) as u64);
                                }
                            }
                            partial.drain(..end);
                        }
                    }
                }
                if got == 0 {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            lags
        })
    };

    // The burst: every file at once, a few writer threads, 50 lines per write.
    let writers = 8;
    std::thread::scope(|sc| {
        for w in 0..writers {
            let files = &files;
            sc.spawn(move || {
                let mine: Vec<usize> = (w..files.len()).step_by(writers).collect();
                let mut handles: Vec<Option<std::fs::File>> = mine
                    .iter()
                    .map(|&i| {
                        std::fs::OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(&files[i])
                            .ok()
                    })
                    .collect();
                let mut seq = 0;
                while seq < args.p6_lines {
                    let n = 50.min(args.p6_lines - seq);
                    for (k, &i) in mine.iter().enumerate() {
                        let mut chunk = String::new();
                        for s in seq..seq + n {
                            let log = p6_log(i, s);
                            let _ = writeln!(
                                chunk,
                                "{{\"log\":\"{log}\\n\",\"stream\":\"stdout\",\"time\":\"2026-11-24T10:00:00.000000000Z\"}}"
                            );
                        }
                        if let Some(f) = handles[k].as_mut() {
                            let _ = f.write_all(chunk.as_bytes());
                        }
                    }
                    seq += n;
                }
            });
        }
    });
    let burst_written = t0.elapsed().as_secs_f64();
    // Steady appends: p6_rate lines per second over all files, in 100 ms ticks.
    let per_tick = (args.p6_rate / 10).max(1);
    let mut seqs = vec![args.p6_lines; files.len()];
    let mut next = 0usize;
    let ticks = args.p6_steady_secs * 10;
    let start = Instant::now();
    for tick in 0..ticks {
        let mut by_file: Vec<String> = vec![String::new(); files.len()];
        for _ in 0..per_tick {
            let i = next % files.len();
            next += 1;
            let log = p6_log(i, seqs[i]);
            seqs[i] += 1;
            let _ = writeln!(
                by_file[i],
                "{{\"log\":\"{log}\\n\",\"stream\":\"stdout\",\"time\":\"2026-11-24T10:00:00.000000000Z\"}}"
            );
        }
        for (i, chunk) in by_file.iter().enumerate() {
            if chunk.is_empty() {
                continue;
            }
            if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(&files[i]) {
                let _ = f.write_all(chunk.as_bytes());
            }
        }
        let due = start + Duration::from_millis(100 * (tick + 1));
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    // Wait for everything to come out (bounded by the reader's deadline), then stop the reader.
    let wait_until = Instant::now() + Duration::from_secs(120);
    while !reader.is_finished() && Instant::now() < wait_until {
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let elapsed = t0.elapsed().as_secs_f64();
    let (cpu1, hwm) = proc_cpu_hwm(pid).unwrap_or((f64::NAN, f64::NAN));
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
    let _ = child.wait();
    let mut lags = reader
        .join()
        .map_err(|_| "the output reader panicked".to_string())?;
    if lags.len() != total {
        return Err(format!(
            "{} of {total} lines came out within the time allowed",
            lags.len()
        ));
    }
    lags.sort_unstable();
    let pct = |p: f64| lags[((lags.len() - 1) as f64 * p) as usize];
    let cpu = cpu1 - cpu0;
    let _ = std::fs::remove_dir_all(&logs);
    let _ = std::fs::remove_dir_all(&out_dir);
    Ok(format!(
        "P6 busy node{}{} (Mem_Buf_Limit {}, {}): {} files, {burst} lines written in {burst_written:.1} s then {steady} at {}/s; \
         all out after {elapsed:.1} s; CPU {cpu:.2} s ({:.2} s per million lines); peak RSS {hwm:.1} MB \
         (idle {idle:.1} MB, {:.0} KB per file over idle); lag write→output p50 {} ms, p99 {} ms, max {} ms",
        args.cpus.as_ref().map_or(String::new(), |c| format!(" (taskset -c {c})")),
        args.p6_filter_workers
            .map_or(String::new(), |n| format!(" (logferry.filter_workers {n})")),
        args.p6_mem_buf_limit,
        if args.p6_no_watch {
            "one GET per pod"
        } else {
            "NODE_NAME: watch"
        },
        files.len(),
        args.p6_rate,
        cpu / total as f64 * 1e6,
        (hwm - idle) * 1024.0 / files.len().max(1) as f64,
        pct(0.50),
        pct(0.99),
        lags.last().copied().unwrap_or(0),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_records_reads_the_totals_line() {
        let text = "x\n[info] output totals: records=12345 bytes=99\n";
        assert_eq!(output_records(text), Some(12345));
    }

    #[test]
    fn config_names_the_db_and_the_limit() {
        let tail = TailOpts {
            mem_buf_limit: "50MB".into(),
            db: true,
            parsers_file: PathBuf::from("/w/parsers.conf"),
        };
        let c = config(Path::new("/w/a.log"), &tail, "", 5, NULL_OUTPUT);
        assert!(c.contains("    DB /w/a.db\n"), "{c}");
        assert!(c.contains("    Mem_Buf_Limit 50MB\n"), "{c}");
        assert!(c.contains("    Parsers_File /w/parsers.conf\n"), "{c}");
        let no_db = TailOpts { db: false, ..tail };
        assert!(!config(Path::new("/w/a.log"), &no_db, "", 5, NULL_OUTPUT).contains("DB "));
    }
}
