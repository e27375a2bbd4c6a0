//! `churn`: an hour of pod churn on one node, compressed in time. logferry runs the seed's
//! tail → kubernetes pipeline (into the `file` output, so every line can be counted) while
//! `--churn-pods` pods come and go in `--churn-waves` waves: each wave's pods are added to the
//! test API server and write a few lines each to their container log file; once those lines are
//! out, the wave before it goes away as the kubelet does it (log file removed, pod deleted from
//! the API server, so a later GET gets 404). The agent's RSS (`VmRSS`) is sampled the whole
//! time; the figure is the end against the start, both taken with one wave of pods running.

use std::fmt::Write as _;
use std::io::{Read, Seek, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{file_output, pod_json, proc_status, rss_mb, status_mb, tag_prefix, Args, Kube};

/// How long one wave's lines may take to come out.
const WAVE_WAIT: Duration = Duration::from_secs(120);
/// How often the RSS is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// After a wave is removed: long enough for tail to see the deletions (`Refresh_Interval 1`)
/// to close them once read, and for the kubernetes filter's sweep (every 5 s) to let their
/// state go.
const SETTLE: Duration = Duration::from_secs(12);

/// One pod of the churn: its API name and its container log file.
struct Pod {
    name: String,
    /// The container ID (64 hex digits).
    id: String,
    file: PathBuf,
}

fn pod(logs: &Path, i: usize) -> Pod {
    let name = format!("churn-{i:05}-6d4cf56db6-c{i:05}");
    let id = format!("{:064x}", 0xc0ff_ee00_0000_u64 + i as u64);
    let file = logs.join(format!("{name}_churn_app-{id}.log"));
    Pod { name, id, file }
}

/// A line of pod `i`: `churn <pod> <seq> ...`, at a typical access-log length.
fn line(i: usize, seq: usize) -> String {
    format!(
        "{{\"log\":\"churn {i} {seq} GET /api/v1/orders?page={seq} HTTP/1.1 200 4672 kube-probe/1.29\\n\",\"stream\":\"stdout\",\"time\":\"2026-11-24T10:00:00.000000000Z\"}}\n"
    )
}

/// `VmRSS` with its anonymous and file-backed parts, in MB.
fn rss_split(pid: u32) -> (f64, f64, f64) {
    let s = proc_status(pid).unwrap_or_default();
    let f = |name| status_mb(&s, name).unwrap_or(f64::NAN);
    (f("VmRSS:"), f("RssAnon:"), f("RssFile:"))
}

/// Counts the `churn ` lines of the output file as it grows.
struct OutputCounter {
    path: PathBuf,
    pos: u64,
    partial: Vec<u8>,
    lines: usize,
}

impl OutputCounter {
    fn poll(&mut self) -> usize {
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return self.lines;
        };
        if f.seek(SeekFrom::Start(self.pos)).is_err() {
            return self.lines;
        }
        let mut buf = Vec::new();
        if let Ok(n) = f.read_to_end(&mut buf) {
            self.pos += n as u64;
            self.partial.extend_from_slice(&buf[..n]);
            let end = self
                .partial
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
            self.lines += self.partial[..end]
                .split(|&b| b == b'\n')
                .filter(|l| l.starts_with(b"churn "))
                .count();
            self.partial.drain(..end);
        }
        self.lines
    }

    /// Waits (bounded) until `want` lines came out.
    fn wait_for(&mut self, want: usize, limit: Duration) -> Result<(), String> {
        let until = Instant::now() + limit;
        while self.poll() < want {
            if Instant::now() > until {
                return Err(format!(
                    "{} of {want} lines came out within {} s",
                    self.lines,
                    limit.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

/// A free port on 127.0.0.1 for the agent's HTTP server.
fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

/// The agent's `logferry_kubernetes_cache_pods` and `logferry_kubernetes_tags` gauges, and
/// the number of metric series (per-tag state shows there), from its Prometheus endpoint.
fn gauges(port: u16) -> String {
    let get = || -> std::io::Result<String> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(
            b"GET /api/v2/metrics/prometheus HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        )?;
        let mut body = String::new();
        s.read_to_string(&mut body)?;
        Ok(body)
    };
    let Ok(body) = get() else {
        return "metrics unavailable".into();
    };
    let value = |name: &str| {
        body.lines()
            .find(|l| l.starts_with(name) && !l.starts_with('#'))
            .and_then(|l| l.rsplit(' ').next())
            .unwrap_or("?")
            .to_string()
    };
    let series = body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .count();
    format!(
        "cache_pods {}, tags {}, {series} metric series",
        value("logferry_kubernetes_cache_pods"),
        value("logferry_kubernetes_tags")
    )
}

/// Runs the churn; returns the report line, or why it failed (lines lost, agent gone, ...).
pub(crate) fn churn(
    logferry: &Path,
    dir: &Path,
    kube: &Kube,
    args: &Args,
) -> Result<String, String> {
    let logs = dir.join("churn-containers");
    let out_dir = dir.join("churn-out");
    for d in [&logs, &out_dir] {
        let _ = std::fs::remove_dir_all(d);
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let waves = args.churn_waves.max(3);
    let per_wave = args.churn_pods.div_ceil(waves).max(1);
    let total_pods = per_wave * waves;
    let lines_per_pod = args.churn_lines.max(1);
    let filter = kube.filter_in(
        &tag_prefix(&logs),
        "    K8S-Logging.Parser On\n    K8S-Logging.Exclude On\n",
        &file_output(&out_dir, "churn.out"),
    );
    let port = free_port()?;
    // The seed's tail, with Refresh_Interval 1 instead of 10 (time is compressed).
    let conf = format!(
        "[SERVICE]\n    Flush 1\n    Grace 5\n    Log_Level info\n    HTTP_Server On\n    HTTP_Listen 127.0.0.1\n    HTTP_Port {port}\n\n[INPUT]\n    Name tail\n    Tag kube.*\n    Path {}/*.log\n    DB {}/churn.db\n    Parser docker\n    Docker_Mode On\n    Mem_Buf_Limit 5MB\n    Skip_Long_Lines On\n    Refresh_Interval 1\n\n{filter}",
        logs.display(),
        dir.display(),
    );
    let _ = std::fs::remove_file(dir.join("churn.db"));
    let conf_path = dir.join("churn.conf");
    std::fs::write(&conf_path, conf).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(logferry);
    if args.churn_watch {
        cmd.env("NODE_NAME", "bench-node");
    } else {
        cmd.env_remove("NODE_NAME");
    }
    let mut child = cmd
        .arg("-c")
        .arg(&conf_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start logferry: {e}"))?;
    let pid = child.id();

    // RSS sampler: every sample, with the time since the start.
    let samples: Arc<Mutex<Vec<(f64, f64)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (samples, stop) = (Arc::clone(&samples), Arc::clone(&stop));
        let t0 = Instant::now();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let r = rss_mb(pid);
                if let Ok(mut s) = samples.lock() {
                    s.push((t0.elapsed().as_secs_f64(), r));
                }
                std::thread::sleep(SAMPLE_EVERY);
            }
        })
    };
    let result = drive(
        kube,
        &logs,
        &out_dir,
        pid,
        port,
        args,
        waves,
        per_wave,
        lines_per_pod,
    );
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&logs);
    let _ = std::fs::remove_dir_all(&out_dir);
    let r = result?;
    let peak = samples
        .lock()
        .map(|s| s.iter().map(|x| x.1).fold(0.0, f64::max))
        .unwrap_or(f64::NAN);
    Ok(format!(
        "churn ({} pods in {waves} waves of {per_wave}, {lines_per_pod} lines each, {}, {:.0} s): \
         RSS start {:.1} MB, peak {peak:.1} MB, end {:.1} MB (end/start {:.3}), after the last wave \
         went {:.1} MB; lines written {} = delivered {}\n  start: anon {:.1} MB, file {:.1} MB; {}\n  \
         end:   anon {:.1} MB, file {:.1} MB; {}\n  RSS per wave: {}",
        total_pods,
        if args.churn_watch {
            "NODE_NAME set: watch"
        } else {
            "no NODE_NAME: one GET per pod"
        },
        r.elapsed,
        r.start.0,
        r.end.0,
        r.end.0 / r.start.0,
        r.after,
        r.written,
        r.delivered,
        r.start.1,
        r.start.2,
        r.start_gauges,
        r.end.1,
        r.end.2,
        r.end_gauges,
        r.per_wave,
    ))
}

struct Outcome {
    /// RSS, anonymous, file-backed (MB).
    start: (f64, f64, f64),
    end: (f64, f64, f64),
    after: f64,
    written: usize,
    delivered: usize,
    elapsed: f64,
    start_gauges: String,
    end_gauges: String,
    per_wave: String,
}

#[allow(clippy::too_many_arguments)]
fn drive(
    kube: &Kube,
    logs: &Path,
    out_dir: &Path,
    pid: u32,
    port: u16,
    args: &Args,
    waves: usize,
    per_wave: usize,
    lines_per_pod: usize,
) -> Result<Outcome, String> {
    let alive = |what: &str| -> Result<(), String> {
        if std::fs::metadata(format!("/proc/{pid}")).is_err() {
            return Err(format!("logferry exited {what}"));
        }
        Ok(())
    };
    std::thread::sleep(Duration::from_secs(2));
    alive("at start")?;
    let mut out = OutputCounter {
        path: out_dir.join("churn.out"),
        pos: 0,
        partial: Vec::new(),
        lines: 0,
    };
    let annotations = serde_json::json!({
        "kubernetes.io/psp": "eks.privileged",
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "9102",
        "checksum/config": "5d41402abc4b2a76b9719d0911cbfb1e8f0e4c1f3c2b5a4d6e7f8a9b0c1d2e3f"
    });
    let interval = Duration::from_secs_f64(args.churn_secs as f64 / waves as f64);
    let t0 = Instant::now();
    let mut written = 0usize;
    let mut start = None;
    let mut start_gauges = String::new();
    let mut per_wave_rss = String::new();
    let remove = |w: usize| {
        for i in w * per_wave..(w + 1) * per_wave {
            let p = pod(logs, i);
            let _ = std::fs::remove_file(&p.file);
            kube.server.delete_pod("churn", &p.name);
        }
    };
    for w in 0..waves {
        let due = t0 + interval * w as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        for i in w * per_wave..(w + 1) * per_wave {
            let p = pod(logs, i);
            kube.server.add_pod(pod_json(
                &p.name,
                "churn",
                "app",
                "example.com/churn:1.0",
                &p.id,
                annotations.clone(),
            ));
            let mut text = String::new();
            for seq in 0..lines_per_pod {
                text.push_str(&line(i, seq));
            }
            std::fs::write(&p.file, text).map_err(|e| format!("{}: {e}", p.file.display()))?;
            written += lines_per_pod;
        }
        out.wait_for(written, WAVE_WAIT)?;
        alive("during the churn")?;
        if w > 0 {
            remove(w - 1);
        }
        if w == 1 {
            // Warmed up: one wave running, one wave come and gone.
            std::thread::sleep(SETTLE);
            start = Some(rss_split(pid));
            start_gauges = gauges(port);
        }
        let _ = write!(per_wave_rss, "{:.1} ", rss_mb(pid));
    }
    std::thread::sleep(SETTLE);
    alive("at the end")?;
    let end = rss_split(pid);
    let end_gauges = gauges(port);
    remove(waves - 1);
    std::thread::sleep(SETTLE);
    let after = rss_mb(pid);
    let delivered = out.poll();
    if delivered != written {
        return Err(format!("{delivered} lines delivered, {written} written"));
    }
    Ok(Outcome {
        start: start.unwrap_or((f64::NAN, f64::NAN, f64::NAN)),
        end,
        after,
        written,
        delivered,
        elapsed: t0.elapsed().as_secs_f64(),
        start_gauges,
        end_gauges,
        per_wave: per_wave_rss.trim_end().to_string(),
    })
}
