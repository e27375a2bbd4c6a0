//! What the binary's end-to-end tests share: the agent as a child process (started with `-c`,
//! stopped with SIGTERM or killed with SIGKILL, its log captured), bounded waits, a container
//! log writer that rotates and deletes like kubelet, and exact line accounting.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The agent, running.
pub struct Agent {
    pub child: Child,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Agent {
    /// `logferry -c conf` with `envs`, stderr captured.
    pub fn start(conf: &Path, envs: &[(&str, String)]) -> Agent {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_logferry"));
        cmd.arg("-c").arg(conf);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("logferry starts");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Agent { child, log }
    }

    /// Whether a log line contains `what`.
    pub fn logged(&self, what: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(what))
    }

    /// Waits (bounded) until the agent logs that it started.
    pub fn started(self) -> Agent {
        assert!(
            wait(30, || self.logged("logferry started")),
            "the agent did not start:\n{}",
            self.log.lock().unwrap().join("\n")
        );
        self
    }

    /// Waits (bounded) until the tail input logs that it follows `file`. A file found at the
    /// first scan without `Read_from_Head` is read from its end (Fluent Bit's documented
    /// default), so a case writing to such a file must wait for this before its first line.
    pub fn following(self, file: &Path) -> Agent {
        let name = file.display().to_string();
        assert!(
            wait(30, || self
                .log
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains("following file") && l.contains(&name))),
            "the agent did not follow {name}:\n{}",
            self.log.lock().unwrap().join("\n")
        );
        self
    }

    /// SIGKILL, as a crash or an OOM kill.
    pub fn kill9(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.log.lock().unwrap().clone()
    }

    /// SIGTERM, then a bounded wait for the exit; returns the log.
    pub fn stop(mut self) -> Vec<String> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "the agent did not stop within 30s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // The reader thread may still hold the last lines.
        std::thread::sleep(Duration::from_millis(100));
        self.log.lock().unwrap().clone()
    }
}

/// Polls `cond` every 200ms for at most `secs` seconds.
pub fn wait(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `key=value` of an agent's "output totals" line for `output` (named in the line's component,
/// `[output:<plugin>:<instance>]`, as Fluent Bit names it).
pub fn total(log: &[String], output: &str, key: &str) -> u64 {
    log.iter()
        .rev()
        .filter(|l| l.contains("output totals") && l.contains(&format!(":{output}]")))
        .find_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{key}=")))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// The `Kube_Tag_Prefix` of tail's `kube.*` tags for files in `logs`: `kube.` and the
/// directory with `/` as `.`.
pub fn kube_tag_prefix(logs: &Path) -> String {
    format!(
        "kube.{}.",
        logs.display()
            .to_string()
            .trim_start_matches('/')
            .replace('/', ".")
    )
}

/// RFC 3339 with nanoseconds, UTC, as dockerd writes `time`.
pub fn docker_time(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap();
    let secs = d.as_secs() as i64;
    let (y, mo, day) = civil(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y}-{mo:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        s / 3600,
        s % 3600 / 60,
        s % 60,
        d.subsec_nanos()
    )
}

/// Civil date of a Unix day (Howard Hinnant's algorithm).
pub fn civil(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// A container's log file written as dockerd's json-file driver does, with kubelet's
/// rotation: the file is renamed away (`<name>.<n>`, outside the `*.log` glob) and a new one
/// started; a rotated file may be deleted later.
pub struct ContainerLog {
    pub path: PathBuf,
    file: std::fs::File,
    rotations: usize,
    pub rotated: Vec<PathBuf>,
}

impl ContainerLog {
    pub fn create(path: &Path) -> ContainerLog {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        ContainerLog {
            path: path.to_path_buf(),
            file,
            rotations: 0,
            rotated: Vec::new(),
        }
    }

    /// One Docker json-file line whose log is `id=<id>` and `pad` bytes of padding.
    pub fn write(&mut self, id: &str, pad: usize) {
        let log = format!("id={id} {}\n", "x".repeat(pad));
        let line = serde_json::json!({"log": log, "stream": "stdout", "time": docker_time(SystemTime::now())});
        writeln!(self.file, "{line}").unwrap();
    }

    /// Raw bytes (for formats other than Docker's).
    pub fn write_raw(&mut self, text: &str) {
        self.file.write_all(text.as_bytes()).unwrap();
    }

    /// kubelet's rotation: rename, then a new file at the path.
    pub fn rotate(&mut self) {
        self.rotations += 1;
        let to = PathBuf::from(format!("{}.{}", self.path.display(), self.rotations));
        std::fs::rename(&self.path, &to).unwrap();
        self.rotated.push(to);
        self.file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .unwrap();
    }

    /// Deletes the oldest rotated file still there (kubelet keeps a few).
    pub fn delete_oldest_rotated(&mut self) {
        if !self.rotated.is_empty() {
            let p = self.rotated.remove(0);
            std::fs::remove_file(p).unwrap();
        }
    }
}

/// How many times each id arrived, against the ids written: what was lost and duplicated.
#[derive(Debug)]
pub struct Tally {
    pub written: usize,
    pub delivered: usize,
    pub unique: usize,
    pub lost: Vec<String>,
    pub duplicated: usize,
}

impl Tally {
    pub fn of(written: &[String], got: impl IntoIterator<Item = String>) -> Tally {
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut delivered = 0;
        for id in got {
            delivered += 1;
            *seen.entry(id).or_default() += 1;
        }
        let lost: Vec<String> = written
            .iter()
            .filter(|id| !seen.contains_key(*id))
            .cloned()
            .collect();
        let duplicated = seen.values().map(|n| n - 1).sum();
        Tally {
            written: written.len(),
            delivered,
            unique: seen.len(),
            lost,
            duplicated,
        }
    }

    /// The suite's result line: `FAULT|case|written|lost|duplicated|dropped and counted|notes`
    /// (scripts/faults turns these into docs/reliability.md's table).
    pub fn report(&self, case: &str, dropped_counted: u64, notes: &str) {
        println!(
            "FAULT|{case}|{}|{}|{}|{dropped_counted}|{notes}",
            self.written,
            self.lost.len(),
            self.duplicated
        );
    }
}

/// The `id=` of a delivered log line.
pub fn id_of(log: &str) -> Option<String> {
    let rest = log.split("id=").nth(1)?;
    Some(rest.split_whitespace().next()?.to_string())
}

/// The `log` field's id of each JSON message (CloudWatch events, S3 lines, file lines).
pub fn ids_of_json(messages: impl IntoIterator<Item = String>) -> Vec<String> {
    messages
        .into_iter()
        .filter_map(|m| serde_json::from_str::<serde_json::Value>(&m).ok())
        .filter_map(|v| v["log"].as_str().and_then(id_of))
        .collect()
}

/// A small, bounded pseudo-random sequence (the same for every run with one seed).
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below.max(1)
    }
}

// Network plugin tests (forward, http, tcp, syslog).

/// The Python with the test packages: `LOGFERRY_TEST_PYTHON`, else the workspace's `.venv`.
pub fn python() -> PathBuf {
    match std::env::var_os("LOGFERRY_TEST_PYTHON") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../.venv/bin/python"
        )),
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// `TAG: [SECS.NANOS, {json}]` lines of a `file` output: (secs, nanos, record).
pub fn out_file_records(path: &Path) -> Vec<(i64, u32, serde_json::Value)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (_, rest) = l.split_once(": [").expect("TAG: [");
            let (time, json) = rest.split_once(", ").expect("time, record");
            let (s, n) = time.split_once('.').expect("SECS.NANOS");
            let json = json.strip_suffix(']').expect("closing ]");
            (
                s.parse().unwrap(),
                n.parse().unwrap(),
                serde_json::from_str(json).unwrap(),
            )
        })
        .collect()
}

/// Waits for the agent to exit on its own (every input finished and drained).
pub fn exited(agent: &mut Agent, secs: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if agent.child.try_wait().unwrap().is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

pub fn log_of(agent: &Agent) -> String {
    agent.log.lock().unwrap().join("\n")
}

/// A self-signed CA and a certificate for localhost/127.0.0.1: (ca.pem, cert.pem, key.pem).
pub fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    (
        write(dir, "ca.pem", &ca.pem()),
        write(dir, "cert.pem", &cert.pem()),
        write(dir, "key.pem", &key.serialize_pem()),
    )
}
