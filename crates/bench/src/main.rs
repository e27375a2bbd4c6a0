//! `logferry-bench`: generates container log workloads, runs the release `logferry` binary on
//! each pipeline, and prints wall s, CPU s, peak RSS, lines/s, lines per CPU-second and MB/s,
//! medians of several runs, with the `cat` floor. Each run's delivered count is checked.
//!
//! CPU and peak RSS come from `getrusage(RUSAGE_CHILDREN)` taken in a small wrapper process
//! (this binary re-run with `measure`) whose only child is the command, so each figure belongs
//! to that one run.

use std::fmt::Write as _;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use clap::{Parser, Subcommand};

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
    /// Pipelines to run (comma-separated): p1 docker → null, p4 CRI → null.
    #[arg(long, default_value = "p1,p4")]
    pipelines: String,
    /// The logferry binary (default: target/release/logferry next to this one).
    #[arg(long)]
    logferry: Option<PathBuf>,
    /// Where workloads are written (default: a fresh temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
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
        .stdout(Stdio::null())
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

/// (a) Docker json-file lines of nginx access lines.
fn write_docker_nginx(path: &Path, n: usize) -> std::io::Result<u64> {
    let mut w = BufWriter::new(std::fs::File::create(path)?);
    for i in 0..n {
        let log = nginx_line(i).replace('"', "\\\"");
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

fn config(path: &Path, input_extra: &str) -> String {
    format!(
        "[SERVICE]\n    Flush 1\n    Grace 5\n    Log_Level info\n\n[INPUT]\n    Name tail\n    Tag kube.*\n    Path {}\n    Read_from_Head On\n    Exit_On_Eof On\n    Mem_Buf_Limit 5MB\n    Buffer_Max_Size 64k\n{input_extra}\n[OUTPUT]\n    Name null\n    Match *\n",
        path.display()
    )
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
    let tmp;
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => {
            tmp = std::env::temp_dir().join(format!("logferry-bench-{}", std::process::id()));
            tmp.clone()
        }
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
        .collect();
    let mut pipelines = Vec::new();
    let gen = || -> std::io::Result<Vec<Pipeline>> {
        let mut v = Vec::new();
        if wanted.iter().any(|w| w == "p1") {
            let f = containers.join(format!("nginx-5468c5d4d7-n2swr_default_nginx-{hex}.log"));
            let bytes = write_docker_nginx(&f, args.lines)?;
            v.push(Pipeline {
                name: "P1",
                what: "docker → null",
                config: config(&f, "    Parser docker\n    Docker_Mode On\n"),
                file: f,
                bytes,
                lines: args.lines,
            });
        }
        if wanted.iter().any(|w| w == "p4") {
            let f = containers.join(format!("nginx-cri-5468c5d4d7-x1_default_nginx-{hex}.log"));
            let (bytes, records) = write_cri_nginx(&f, args.lines)?;
            v.push(Pipeline {
                name: "P4",
                what: "CRI → null",
                config: config(&f, "    multiline.parser cri\n"),
                file: f,
                bytes,
                lines: records,
            });
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
        "| pipeline | wall s | CPU s | peak RSS MB | lines/s | lines per CPU-s | MB/s | floor: cat wall s |\n|---|---|---|---|---|---|---|---|"
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
        for _ in 0..args.runs {
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
        let wall = median(runs.iter().map(|r| r.wall).collect());
        let cpu = median(runs.iter().map(|r| r.cpu).collect());
        let rss = median(runs.iter().map(|r| r.rss_mb).collect());
        let _ = writeln!(
            table,
            "| {} {} | {wall:.2} | {cpu:.2} | {rss:.1} | {:.0}k | {:.0}k | {:.1} | {floor:.3} |",
            p.name,
            p.what,
            p.lines as f64 / wall / 1e3,
            p.lines as f64 / cpu.max(1e-9) / 1e3,
            p.bytes as f64 / 1_048_576.0 / wall,
        );
    }
    println!(
        "{} records per workload, median of {} runs, {} ({} cores)\n",
        args.lines,
        args.runs,
        logferry.display(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    print!("{table}");
    if args.dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    ExitCode::SUCCESS
}
