//! `kill -9` of the agent in the middle of a stream, then a restart on the same tail DB: every
//! line written reaches the output (at-least-once; lines delivered but not yet committed may
//! come twice, none may be missing).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn start(conf: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_logferry"))
        .args(["-c", &conf.display().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("logferry starts")
}

fn delivered(out: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(out).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["log"].as_str().map(String::from))
        .collect()
}

#[test]
fn kill_9_mid_stream_then_restart_loses_no_line() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let out_dir = dir.path().join("out");
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::create_dir_all(&out_dir).unwrap();
    let conf = dir.path().join("agent.conf");
    std::fs::write(
        &conf,
        format!(
            "[SERVICE]\n    Flush 0.2\n    Grace 2\n\n[INPUT]\n    Name tail\n    Tag app.*\n    Path {}/*.log\n    DB {}/offsets.db\n    Read_from_Head On\n    Refresh_Interval 1\n\n[OUTPUT]\n    Name file\n    Match *\n    Path {}\n    File out.log\n    Format plain\n",
            logs.display(),
            dir.path().display(),
            out_dir.display()
        ),
    )
    .unwrap();
    let out = out_dir.join("out.log");

    const N: usize = 100_000;
    let log = logs.join("app.log");
    let writer = std::thread::spawn(move || {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        for i in 0..N {
            writeln!(f, "line-{i}").unwrap();
            if i % 5_000 == 0 {
                std::thread::sleep(Duration::from_millis(30));
            }
        }
    });

    let mut agent = start(&conf);
    // Let it deliver part of the stream, then kill it without warning.
    let deadline = Instant::now() + Duration::from_secs(30);
    while delivered(&out).len() < 10_000 {
        assert!(
            Instant::now() < deadline,
            "nothing delivered before the kill"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    agent.kill().unwrap(); // SIGKILL
    agent.wait().unwrap();
    let before = delivered(&out).len();
    writer.join().unwrap();

    let mut agent = start(&conf);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got: HashSet<String> = delivered(&out).into_iter().collect();
        if got.len() >= N || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    agent.kill().unwrap();
    agent.wait().unwrap();

    let all = delivered(&out);
    let unique: HashSet<&str> = all.iter().map(String::as_str).collect();
    let missing: Vec<usize> = (0..N)
        .filter(|i| !unique.contains(format!("line-{i}").as_str()))
        .collect();
    println!(
        "delivered before kill: {before}; total records: {}; unique: {}; duplicates: {}",
        all.len(),
        unique.len(),
        all.len() - unique.len()
    );
    assert!(
        missing.is_empty(),
        "{} lines lost, first {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert_eq!(unique.len(), N);
}
