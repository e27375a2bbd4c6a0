//! Test support (feature `testing`): moto's server on a free 127.0.0.1 port, started from the
//! Python in `LOGFERRY_TEST_PYTHON` (else the workspace's `.venv`), a hermetic AWS
//! environment, and [`proxy::FaultProxy`] to put outages between an output and moto. Used by
//! this crate's tests and the binary's end-to-end tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod api;
pub mod bulk;
pub mod proxy;

pub use api::{bucket_objects, create_bucket, dechunk, find, log_messages, logs_call, raw_http};
pub use bulk::BulkServer;
pub use proxy::{FaultProxy, Mode};

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

/// How long moto may take to answer after it starts.
const MOTO_START: Duration = Duration::from_secs(60);

static ENV: Once = Once::new();

/// Dummy credentials and no IMDS or shared files, set once per test binary.
pub fn hermetic_env() {
    ENV.call_once(|| {
        std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
        std::env::remove_var("AWS_SESSION_TOKEN");
        std::env::remove_var("AWS_PROFILE");
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
        std::env::set_var("AWS_CONFIG_FILE", "/nonexistent/logferry-test/config");
        std::env::set_var(
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/logferry-test/credentials",
        );
    });
}

/// The Python that has moto: `LOGFERRY_TEST_PYTHON`, else the workspace's `.venv`.
pub fn python() -> PathBuf {
    match std::env::var_os("LOGFERRY_TEST_PYTHON") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../.venv/bin/python"
        )),
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// moto's server, killed on drop.
pub struct Moto {
    pub port: u16,
    child: Child,
}

impl Moto {
    /// Starts `python -m moto.server -p PORT -H 127.0.0.1` and waits (bounded) until it answers.
    pub fn start() -> Moto {
        hermetic_env();
        let py = python();
        assert!(
            py.exists(),
            "{} not found: create it with `python3 -m venv .venv && .venv/bin/pip install -r requirements-test.txt` \
             at the workspace root, or set LOGFERRY_TEST_PYTHON",
            py.display()
        );
        for _ in 0..3 {
            let port = free_port();
            let mut child = Command::new(&py)
                .args([
                    "-m",
                    "moto.server",
                    "-p",
                    &port.to_string(),
                    "-H",
                    "127.0.0.1",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("starting moto");
            let deadline = Instant::now() + MOTO_START;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // exited (port taken?): try another port
                }
                if answers(port) {
                    return Moto { port, child };
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!(
            "moto did not start (is moto[server] installed in {}?)",
            py.display()
        );
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:PORT`, for [`FaultProxy::start`].
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether something answers HTTP on the port.
pub fn answers(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /moto-api/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 12];
    matches!(s.read(&mut buf), Ok(n) if n > 0 && buf.starts_with(b"HTTP/"))
}
