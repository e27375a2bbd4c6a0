//! The HTTP server and hot reload through the binary: metrics scraped over TCP move as records
//! flow; `POST /api/v2/reload` and SIGHUP each swap the pipeline, and every record the inputs
//! emitted reaches the output (the old pipeline drains before the new one starts).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn http(addr: &str, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

fn metric(body: &str, name: &str) -> Option<u64> {
    body.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
}

fn wait_for(rx: &mpsc::Receiver<String>, what: &str, secs: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            if line.contains(what) {
                return line;
            }
        }
    }
    panic!("no log line with {what:?} within {secs}s");
}

#[test]
fn metrics_move_and_reloads_lose_no_record() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let conf = dir.path().join("agent.conf");
    std::fs::write(
        &conf,
        format!(
            "[SERVICE]\n    Flush 0.2\n    Grace 3\n    Log_Level info\n    HTTP_Server On\n    HTTP_Listen 127.0.0.1\n    HTTP_Port 0\n    Hot_Reload On\n\n[INPUT]\n    Name dummy\n    Tag app\n    Rate 200\n\n[OUTPUT]\n    Name file\n    Match *\n    Path {}\n    File out.log\n    Format plain\n",
            out.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_logferry"))
        .args(["-c", &conf.display().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line.clone());
            all.push(line);
        }
        all
    });
    let listening = wait_for(&rx, "HTTP server listening", 20);
    let addr = listening
        .split("listen=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();

    // Counters move between two scrapes.
    std::thread::sleep(Duration::from_millis(600));
    let (code, m1) = http(&addr, "GET", "/api/v1/metrics/prometheus");
    assert_eq!(code, 200);
    let first =
        metric(&m1, "fluentbit_input_records_total{name=\"dummy.0\"}").expect("input counter");
    std::thread::sleep(Duration::from_millis(600));
    let (_, m2) = http(&addr, "GET", "/api/v1/metrics/prometheus");
    let second = metric(&m2, "fluentbit_input_records_total{name=\"dummy.0\"}").unwrap();
    assert!(second > first, "counter moved: {first} -> {second}");
    assert!(metric(&m2, "fluentbit_output_proc_records_total{name=\"file.0\"}").unwrap() > 0);

    // Reload through the API, then through SIGHUP.
    let (code, body) = http(&addr, "POST", "/api/v2/reload");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"reload\":\"done\""), "{body}");
    wait_for(&rx, "reload done", 20);
    std::thread::sleep(Duration::from_millis(500));
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    wait_for(&rx, "reload done", 20);
    std::thread::sleep(Duration::from_millis(500));
    let (_, count) = http(&addr, "GET", "/api/v2/reload");
    assert!(count.contains("\"hot_reload_count\":2"), "{count}");

    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "agent did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    let lines = reader.join().unwrap();
    let emitted: u64 = lines
        .iter()
        .filter(|l| l.contains("input totals"))
        .filter_map(|l| {
            l.split("records=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    let generations = lines.iter().filter(|l| l.contains("input totals")).count();
    assert_eq!(generations, 3, "three pipelines ran");
    let written = std::fs::read_to_string(out.join("out.log"))
        .unwrap()
        .lines()
        .count() as u64;
    println!("records emitted over 3 pipelines: {emitted}, written: {written}");
    assert!(emitted > 0);
    assert_eq!(
        written, emitted,
        "every emitted record was delivered across the reloads"
    );
}
