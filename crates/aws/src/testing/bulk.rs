//! The `_bulk` test server (`tests/fixtures/bulk_server.py`, see its docs) run from the
//! workspace's Python, and helpers to read back what it stored. Every wait is bounded. Used by
//! the `opensearch` tests and by `logferry-bench`'s P5OS.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::{python, raw_http};

/// How long the server may take to start (moto's import is slow).
const START: Duration = Duration::from_secs(60);

/// The server, stopped on drop.
pub struct BulkServer {
    child: Child,
    _stdin: Option<ChildStdin>,
    /// The `_bulk` port (HTTPS with a certificate).
    pub port: u16,
    /// The plain-HTTP control port.
    pub control: u16,
    /// moto's port with `--moto`.
    pub moto: Option<u16>,
}

impl BulkServer {
    /// Starts the server with `args`.
    pub fn start(args: &[&str]) -> BulkServer {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/bulk_server.py");
        let py = python();
        assert!(
            py.exists(),
            "{} not found: create the workspace's .venv (requirements-test.txt) or set LOGFERRY_TEST_PYTHON",
            py.display()
        );
        let mut child = Command::new(&py)
            .arg(script)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting the bulk server");
        let stdin = child.stdin.take();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (mut port, mut control, mut moto) = (None, None, None);
        let deadline = std::time::Instant::now() + START;
        while port.is_none() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(l) => l,
                Err(_) => {
                    let _ = child.kill();
                    panic!("the bulk server did not start within {START:?}");
                }
            };
            let mut parts = line.split_whitespace();
            let (Some(what), Some(n)) = (parts.next(), parts.next()) else {
                continue;
            };
            let n: u16 = n.parse().unwrap();
            match what {
                "PORT" => port = Some(n),
                "CONTROL" => control = Some(n),
                "MOTO" => moto = Some(n),
                _ => {}
            }
        }
        BulkServer {
            child,
            _stdin: stdin,
            port: port.unwrap(),
            control: control.expect("CONTROL before PORT"),
            moto,
        }
    }

    fn get(&self, path: &str) -> serde_json::Value {
        let (status, body) = raw_http(self.control, "GET", path, b"");
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).unwrap()
    }

    /// Every stored document: `{"_index", "_id", "_source"}`.
    pub fn docs(&self) -> Vec<serde_json::Value> {
        self.get("/_test/docs")["docs"].as_array().unwrap().clone()
    }

    /// Every `_bulk` request seen: path, query, content_encoding, content_type, auth, items.
    pub fn requests(&self) -> Vec<serde_json::Value> {
        self.get("/_test/requests")["requests"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// (documents stored, `_bulk` requests seen, their body bytes in all).
    pub fn totals(&self) -> (u64, u64, u64) {
        let t = self.get("/_test/totals");
        let n = |k: &str| t[k].as_u64().unwrap_or_default();
        (n("docs"), n("requests"), n("bytes"))
    }

    /// Queues faults (see the script's docs).
    pub fn faults(&self, json: &str) {
        let (status, body) = raw_http(self.control, "POST", "/_test/faults", json.as_bytes());
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }
}

impl Drop for BulkServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
