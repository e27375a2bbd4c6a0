//! The `http` input and output end to end over real sockets: raw HTTP/1.1 requests to the
//! input, and the output against a local server of Python's `http.server`
//! (`fixtures/http/http_server.py`, HTTP and HTTPS) that records what it receives.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::{
    certificates, exited, free_port, log_of, out_file_records, python, wait, write, Agent,
};

/// One HTTP/1.1 POST; returns (status, the response head).
fn post(port: u16, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    post_within(20, port, path, headers, body)
}

/// [`post`] that gives up waiting for the answer after `secs` (status 0).
fn post_within(
    secs: u64,
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(secs)))
        .unwrap();
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, resp)
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(b).unwrap();
    gz.finish().unwrap()
}

#[test]
fn the_input_takes_json_ndjson_gzip_and_forms_and_tags_by_uri() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let conf = write(
        dir.path(),
        "in.conf",
        &format!(
            "[SERVICE]\n    Flush 0.2\n\n[INPUT]\n    Name http\n    Listen 127.0.0.1\n    Port {port}\n    Tag root\n    successful_response_code 200\n    success_header X-Ok yes\n    buffer_max_size 64k\n    add_remote_addr on\n\n\
             [OUTPUT]\n    Name file\n    Match *\n    Path {}\n    Mkdir on\n",
            dir.path().join("out").display()
        ),
    );
    let agent = Agent::start(&conf, &[]).started();
    assert!(wait(10, || agent.logged("listening on")));
    let json = [("Content-Type", "application/json")];
    let (st, head) = post(port, "/app/web", &json, br#"{"msg":"one"}"#);
    assert_eq!(st, 200, "{head}");
    assert!(head.to_ascii_lowercase().contains("x-ok: yes"), "{head}");
    assert_eq!(
        post(
            port,
            "/app/web",
            &json,
            br#"[{"msg":"two"},{"msg":"three"}]"#
        )
        .0,
        200
    );
    let nd = [("Content-Type", "application/x-ndjson")];
    assert_eq!(
        post(port, "/", &nd, b"{\"msg\":\"four\"}\n{\"msg\":\"five\"}\n").0,
        200
    );
    let gz = [
        ("Content-Type", "application/json"),
        ("Content-Encoding", "gzip"),
    ];
    assert_eq!(
        post(port, "/zipped", &gz, &gzip(br#"{"msg":"six"}"#)).0,
        200
    );
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    assert_eq!(post(port, "/form", &form, b"msg=seven&who=a+b").0, 200);
    // Refusals: not JSON, not objects, too large, unknown type.
    assert_eq!(post(port, "/app/web", &json, b"{oops").0, 400);
    assert_eq!(post(port, "/app/web", &json, b"[1,2]").0, 400);
    assert_eq!(post(port, "/app/web", &json, &vec![b' '; 70_000]).0, 413);
    assert_eq!(
        post(port, "/x", &[("Content-Type", "text/csv")], b"a,b").0,
        400
    );

    let out = dir.path().join("out");
    let msgs = |tag: &str| -> Vec<String> {
        out_file_records(&out.join(tag))
            .into_iter()
            .map(|(_, _, r)| r["msg"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    assert!(
        wait(15, || msgs("app.web").len() == 3
            && msgs("root").len() == 2
            && msgs("zipped").len() == 1
            && msgs("form").len() == 1),
        "{}",
        log_of(&agent)
    );
    assert_eq!(msgs("app.web"), ["one", "two", "three"]);
    assert_eq!(msgs("root"), ["four", "five"]);
    assert_eq!(msgs("zipped"), ["six"]);
    let form = out_file_records(&out.join("form"));
    assert_eq!(form[0].2["who"], "a b");
    assert_eq!(form[0].2["REMOTE_ADDR"], "127.0.0.1");
    agent.stop();
}

/// Backpressure: once the input holds `Mem_Buf_Limit` of undelivered records (its output's
/// destination is down), it stops accepting and answering, so clients wait instead of having
/// their records read and dropped; it pauses as Fluent Bit logs it.
#[test]
fn the_input_stops_answering_while_paused_at_mem_buf_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (port, dead) = (free_port(), free_port());
    let conf = write(
        dir.path(),
        "paused.conf",
        &format!(
            "[SERVICE]\n    Flush 0.2\n    Grace 2\n\n[INPUT]\n    Name http\n    Listen 127.0.0.1\n    Port {port}\n    Mem_Buf_Limit 1k\n\n\
             [OUTPUT]\n    Name forward\n    Match *\n    Host 127.0.0.1\n    Port {dead}\n"
        ),
    );
    let agent = Agent::start(&conf, &[]).started();
    assert!(wait(10, || agent.logged("listening on")));
    let json = [("Content-Type", "application/json")];
    let big = format!("{{\"msg\":\"{}\"}}", "x".repeat(2000));
    assert_eq!(post(port, "/a", &json, big.as_bytes()).0, 201);
    // Over the limit now: the request in flight waits unanswered, and no further connection
    // is accepted until deliveries free room.
    let (status, _) = post_within(3, port, "/a", &json, b"{\"msg\":\"later\"}");
    assert_eq!(status, 0, "a paused input must not answer");
    assert!(
        wait(10, || agent.logged("paused (mem buf overlimit)")),
        "{}",
        log_of(&agent)
    );
    let log = agent.stop();
    assert!(log.iter().any(|l| l.contains("cannot connect")));
}

/// The Python HTTP server, killed on drop.
struct Server {
    child: Child,
    out: PathBuf,
    /// Kept open: the server prints to it.
    _stdout: std::process::ChildStdout,
}

impl Server {
    fn start(dir: &Path, port: u16, args: &[&str]) -> Server {
        let out = dir.join("requests.jsonl");
        let mut child = Command::new(python())
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/http/http_server.py"))
            .args(["--port", &port.to_string()])
            .arg("--out")
            .arg(&out)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python starts");
        let mut stdout = child.stdout.take().unwrap();
        let mut line = [0u8; 5];
        stdout.read_exact(&mut line).unwrap();
        assert_eq!(&line, b"ready");
        Server {
            child,
            out,
            _stdout: stdout,
        }
    }

    /// (status answered, headers, body as sent) of every request.
    fn requests(&self) -> Vec<(u16, serde_json::Value, Vec<u8>)> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                let body = b64(v["body_b64"].as_str().unwrap());
                (
                    v["status"].as_u64().unwrap() as u16,
                    v["headers"].clone(),
                    body,
                )
            })
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn b64(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let mut out = Vec::new();
    for ch in s.as_bytes().chunks(4) {
        let n = ch.iter().filter(|c| **c != b'=').count();
        let mut acc = 0u32;
        for (i, c) in ch.iter().enumerate() {
            if *c != b'=' {
                acc |= u32::from(val(*c)) << (18 - 6 * i);
            }
        }
        for i in 0..n.saturating_sub(1) {
            out.push((acc >> (16 - 8 * i)) as u8);
        }
    }
    out
}

fn gunzip(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(b)
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn sender(dir: &Path, keys: &str) -> Agent {
    let conf = write(
        dir,
        "out.conf",
        &format!(
            "[SERVICE]\n    Flush 0.2\n    Grace 20\n    scheduler.base 1\n    scheduler.cap 1\n\n\
             [INPUT]\n    Name dummy\n    Tag web.logs\n    Dummy {{\"msg\":\"über\"}}\n    Rate 100\n    Samples 5\n\n\
             [OUTPUT]\n    Name http\n    Match *\n    Host 127.0.0.1\n{keys}"
        ),
    );
    Agent::start(&conf, &[])
}

#[test]
fn the_output_retries_5xx_and_sends_json_lines_gzip_basic_auth_and_headers() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = Server::start(dir.path(), port, &["--statuses", "503,200"]);
    let mut agent = sender(
        dir.path(),
        &format!(
            "    Port {port}\n    URI /ingest?x=1\n    Format json_lines\n    compress gzip\n    HTTP_User alice\n    HTTP_Passwd s3cret\n    Header X-Team logs\n    Header X-Api-Key k3y-t0ken-77\n    header_tag X-Tag\n    json_date_key ts\n    json_date_format iso8601\n"
        ),
    );
    assert!(exited(&mut agent, 40), "{}", log_of(&agent));
    let reqs = server.requests();
    assert!(reqs.len() >= 2, "{reqs:?}");
    assert_eq!(reqs[0].0, 503);
    // Every record arrives in requests answered 200, each exactly once.
    let mut delivered = Vec::new();
    for (status, headers, body) in &reqs {
        assert_eq!(headers["content-encoding"], "gzip");
        assert_eq!(headers["content-type"], "application/x-ndjson");
        assert_eq!(headers["authorization"], "Basic YWxpY2U6czNjcmV0");
        assert_eq!(headers["x-team"], "logs");
        assert_eq!(headers["x-api-key"], "k3y-t0ken-77");
        assert_eq!(headers["x-tag"], "web.logs");
        if *status == 200 {
            for line in String::from_utf8(gunzip(body)).unwrap().lines() {
                delivered.push(serde_json::from_str::<serde_json::Value>(line).unwrap());
            }
        }
    }
    assert_eq!(delivered.len(), 5, "{delivered:?}");
    // The 503 was logged (a retry); the password, its Basic header and the key header's value
    // appear nowhere in the log.
    let log = log_of(&agent);
    assert!(log.contains("HTTP status=503"), "{log}");
    for secret in ["s3cret", "YWxpY2U6czNjcmV0", "k3y-t0ken-77"] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
    for r in &delivered {
        assert_eq!(r["msg"], "über");
        let ts = r["ts"].as_str().unwrap();
        assert!(ts.ends_with('Z') && ts.contains('T'), "{ts}");
    }
}

#[test]
fn the_output_gives_up_on_4xx_and_speaks_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(dir.path());
    let port = free_port();
    let server = Server::start(
        dir.path(),
        port,
        &[
            "--statuses",
            "400,200",
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
    );
    let mut agent = sender(
        dir.path(),
        &format!(
            "    Port {port}\n    tls on\n    tls.ca_file {}\n    tls.vhost localhost\n    Format json\n    Workers 1\n",
            ca.display()
        ),
    );
    assert!(exited(&mut agent, 40), "{}", log_of(&agent));
    let reqs = server.requests();
    assert!(!reqs.is_empty());
    assert_eq!(reqs[0].0, 400);
    assert!(
        agent.logged("HTTP status=400"),
        "the refusal is logged:\n{}",
        log_of(&agent)
    );
    // The refused batch is not sent again; the records of any later batch are.
    let total: usize = reqs
        .iter()
        .map(|(_, _, b)| {
            serde_json::from_slice::<Vec<serde_json::Value>>(b)
                .unwrap()
                .len()
        })
        .sum();
    assert_eq!(total, 5, "each record in one request: {reqs:?}");
    assert!(reqs
        .iter()
        .all(|(_, h, _)| h["content-type"] == "application/json"));
}
