//! Parser throughput: 1,000,000 nginx lines (built-in `nginx`, regex + time) and 1,000,000
//! Docker JSON lines (built-in `docker`, JSON + time), generated in memory. Prints lines/s and
//! the CPU seconds used (from /proc/self/stat), per format.
//!
//! Run: `cargo bench -p logferry-parsers --bench parse` (release profile).

use std::hint::black_box;
use std::time::Instant;

use logferry_parsers::{Parser, Parsers};

mod common;
use common::{Lcg, PATHS};

const LINES: usize = 1_000_000;

/// User + system CPU seconds of this process, from /proc/self/stat (USER_HZ = 100 on Linux).
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    // Fields after the command name (which is in parentheses and may hold spaces).
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
        return f64::NAN;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn nginx_lines(rng: &mut Lcg) -> Vec<String> {
    (0..LINES).map(|i| common::nginx(i, rng.next())).collect()
}

fn docker_lines(rng: &mut Lcg) -> Vec<String> {
    (0..LINES)
        .map(|i| {
            let r = rng.next();
            format!(
                "{{\"log\":\"2019-12-19 17:41:12.{:03} INFO  [worker-{}] handled request id={} in {}ms path={}\\n\",\"stream\":\"{}\",\"time\":\"2019-12-19T17:41:{:02}.{:09}Z\"}}",
                r % 1000,
                r % 16,
                r,
                r % 500,
                PATHS[(r >> 24) as usize % PATHS.len()],
                match r % 10 {
                    0 => "stderr",
                    _ => "stdout",
                },
                i % 60,
                r % 1_000_000_000,
            )
        })
        .collect()
}

fn run(name: &str, parser: &Parser, lines: &[String]) {
    let bytes: usize = lines.iter().map(String::len).sum();
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let mut fields = 0usize;
    let mut timed = 0usize;
    for line in lines {
        if let Some(p) = parser.parse(black_box(line)) {
            fields += p.body.len();
            timed += usize::from(p.time.is_some());
            black_box(p);
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    assert_eq!(
        timed,
        lines.len(),
        "{name}: every line must parse with a time"
    );
    println!(
        "{name:<7} {:>9} lines  {:>7.1} MB  wall {:>6.3} s  cpu {:>6.2} s  {:>10.0} lines/s  {:>7.1} MB/s  ({} fields)",
        lines.len(),
        bytes as f64 / 1e6,
        wall,
        cpu,
        lines.len() as f64 / wall,
        bytes as f64 / 1e6 / wall,
        fields,
    );
}

fn main() {
    let parsers = Parsers::builtin();
    let (Some(nginx), Some(docker)) = (parsers.get("nginx"), parsers.get("docker")) else {
        eprintln!("built-in parsers missing");
        std::process::exit(1);
    };
    let mut rng = Lcg(42);
    let n = nginx_lines(&mut rng);
    run("nginx", &nginx, &n);
    drop(n);
    let d = docker_lines(&mut rng);
    run("json", &docker, &d);
}
