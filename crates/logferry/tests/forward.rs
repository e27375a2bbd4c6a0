//! The `forward` input and output end to end, over real sockets: logferry to logferry (TLS,
//! shared key with user authentication, acks, retries until acknowledged), the `fluent-logger`
//! Python package as an independent client of the input (TCP and Unix socket), and an
//! independent msgpack server written from the protocol specification
//! (`fixtures/forward/forward_server.py`) as the output's peer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::{
    certificates, exited, free_port, log_of, out_file_records, python, wait, write, Agent,
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/forward")
        .join(name)
}

/// The receiving agent: `inputs` (classic sections) into a `file` output under `dir/out`.
fn receiver(dir: &Path, inputs: &str) -> Agent {
    let conf = write(
        dir,
        "receiver.conf",
        &format!(
            "[SERVICE]\n    Flush 0.2\n    Grace 2\n\n{inputs}\n[OUTPUT]\n    Name file\n    Match *\n    Path {}\n    Mkdir on\n",
            dir.join("out").display()
        ),
    );
    Agent::start(&conf, &[]).started()
}

/// A sending agent: 20 `dummy` records tagged `fw.test` into a `forward` output with `keys`.
fn sender(dir: &Path, name: &str, keys: &str) -> Agent {
    let conf = write(
        dir,
        name,
        &format!(
            "[SERVICE]\n    Flush 0.2\n    Grace 20\n    scheduler.base 1\n    scheduler.cap 1\n\n\
             [INPUT]\n    Name dummy\n    Tag fw.test\n    Dummy {{\"msg\":\"via forward\"}}\n    Rate 100\n    Samples 20\n\n\
             [OUTPUT]\n    Name forward\n    Match *\n    Host 127.0.0.1\n{keys}"
        ),
    );
    Agent::start(&conf, &[])
}

#[test]
fn fluent_logger_is_a_client_of_the_input_over_tcp_and_unix_sockets() {
    let py = python();
    assert!(
        py.exists(),
        "{} not found: pip install -r requirements-test.txt into .venv, or set LOGFERRY_TEST_PYTHON",
        py.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let sock = dir.path().join("fw.sock");
    let agent = receiver(
        dir.path(),
        &format!(
            "[INPUT]\n    Name forward\n    Listen 127.0.0.1\n    Port {port}\n\n\
             [INPUT]\n    Name forward\n    Unix_Path {}\n    Tag_Prefix unix.\n",
            sock.display()
        ),
    );
    assert!(
        wait(10, || sock.exists()),
        "no socket at {}",
        sock.display()
    );
    for (host, port) in [
        ("127.0.0.1".to_string(), port),
        (format!("unix://{}", sock.display()), 0),
    ] {
        let st = Command::new(&py)
            .arg(fixture("fluent_logger_client.py"))
            .args([&host, &port.to_string(), "app", "50"])
            .status()
            .unwrap();
        assert!(st.success(), "fluent-logger client to {host} failed");
    }
    let (tcp, unix) = (
        dir.path().join("out/app.x"),
        dir.path().join("out/unix.app.x"),
    );
    let full = || out_file_records(&tcp).len() >= 50 && out_file_records(&unix).len() >= 50;
    assert!(wait(20, full), "records missing:\n{}", log_of(&agent));
    for f in [tcp, unix] {
        let recs = out_file_records(&f);
        assert_eq!(recs.len(), 50, "{}", f.display());
        for (i, (secs, _, r)) in recs.iter().enumerate() {
            assert_eq!(r["i"], i as i64);
            assert_eq!(r["msg"], "hello é");
            assert!(*secs > 1_600_000_000);
        }
        // fluent-logger sends EventTime (nanosecond_precision): the fraction arrives.
        assert!(recs.iter().any(|(_, n, _)| *n != 0));
    }
    agent.stop();
}

#[test]
fn logferry_to_logferry_over_tls_with_shared_key_users_and_acks_retries_until_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(dir.path());
    let port = free_port();
    // The sender starts first: the receiver is down, so its flushes are retried.
    let mut sending = sender(
        dir.path(),
        "sender.conf",
        &format!(
            "    Port {port}\n    tls on\n    tls.ca_file {}\n    tls.vhost localhost\n    Shared_Key s3cret\n    Self_Hostname client1\n    Username alice\n    Password pw\n    Require_ack_response on\n    Compress gzip\n",
            ca.display()
        ),
    );
    assert!(
        wait(15, || sending.logged("cannot connect")),
        "no failed attempt while the receiver is down:\n{}",
        log_of(&sending)
    );
    let agent = receiver(
        dir.path(),
        &format!(
            "[INPUT]\n    Name forward\n    Listen 127.0.0.1\n    Port {port}\n    tls on\n    tls.crt_file {}\n    tls.key_file {}\n    Shared_Key s3cret\n    Self_Hostname receiver\n    security.users alice pw\n",
            cert.display(),
            key.display()
        ),
    );
    assert!(
        exited(&mut sending, 30),
        "the sender did not deliver and exit:\n{}",
        log_of(&sending)
    );
    let out = dir.path().join("out/fw.test");
    assert!(wait(10, || out_file_records(&out).len() >= 20));
    let recs = out_file_records(&out);
    assert_eq!(recs.len(), 20, "each record once");
    assert!(recs.iter().all(|(_, _, r)| r["msg"] == "via forward"));
    let log = agent.stop();
    assert!(
        !log.iter().any(|l| l.contains("handshake failed")),
        "{}",
        log.join("\n")
    );
}

#[test]
fn a_wrong_shared_key_is_refused_by_the_input() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let agent = receiver(
        dir.path(),
        &format!(
            "[INPUT]\n    Name forward\n    Listen 127.0.0.1\n    Port {port}\n    Shared_Key right\n"
        ),
    );
    let mut sending = sender(
        dir.path(),
        "sender.conf",
        &format!("    Port {port}\n    Shared_Key wrong\n    Retry_Limit 1\n"),
    );
    assert!(exited(&mut sending, 30), "{}", log_of(&sending));
    assert!(
        sending.logged("handshake refused by the server: shared_key mismatch"),
        "{}",
        log_of(&sending)
    );
    let log = agent.stop();
    assert!(log.iter().any(|l| l.contains("shared_key mismatch")));
    assert!(!dir.path().join("out/fw.test").exists());
}

/// The Python forward server, killed on drop.
struct Peer {
    child: Child,
    out: PathBuf,
    status: PathBuf,
}

impl Peer {
    fn start(dir: &Path, port: u16, args: &[&str]) -> Peer {
        let (out, status) = (dir.join("peer.jsonl"), dir.join("peer.status"));
        let child = Command::new(python())
            .arg(fixture("forward_server.py"))
            .args(["--port", &port.to_string()])
            .arg("--out")
            .arg(&out)
            .arg("--status")
            .arg(&status)
            .args(args)
            .stdout(Stdio::null())
            .spawn()
            .expect("python starts");
        let p = Peer { child, out, status };
        assert!(
            wait(15, || p.status().contains("ready")),
            "peer did not start"
        );
        p
    }

    fn status(&self) -> String {
        std::fs::read_to_string(&self.status).unwrap_or_default()
    }

    fn records(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_output_authenticates_to_an_independent_server_and_resends_what_it_did_not_ack() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let peer = Peer::start(
        dir.path(),
        port,
        &[
            "--shared-key",
            "s3cret",
            "--user",
            "alice:pw",
            "--drop-first",
            "1",
        ],
    );
    let mut sending = sender(
        dir.path(),
        "sender.conf",
        &format!(
            "    Port {port}\n    Shared_Key s3cret\n    Self_Hostname client1\n    Username alice\n    Password pw\n    Require_ack_response on\n    Compress gzip\n    Tag renamed\n"
        ),
    );
    assert!(exited(&mut sending, 30), "{}", log_of(&sending));
    let status = peer.status();
    assert!(status.contains("auth_ok client1"), "{status}");
    assert!(status.contains("dropped"), "{status}");
    assert!(status.contains("acked"), "{status}");
    let recs = peer.records();
    assert_eq!(
        recs.len(),
        20,
        "every record once, after the resend: {recs:?}"
    );
    for r in &recs {
        assert_eq!(r["tag"], "renamed");
        assert_eq!(r["record"]["msg"], "via forward");
        assert!(r["time"][0].as_i64().unwrap() > 1_600_000_000);
        let opts: Vec<&str> = r["options"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o.as_str().unwrap())
            .collect();
        assert_eq!(opts, ["chunk", "compressed", "size"]);
    }
    assert!(sending.logged("connection closed by the server"));
}

#[test]
fn the_output_gives_up_when_the_server_refuses_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let peer = Peer::start(
        dir.path(),
        port,
        &["--shared-key", "s3cret", "--user", "alice:pw"],
    );
    let mut sending = sender(
        dir.path(),
        "sender.conf",
        &format!(
            "    Port {port}\n    Shared_Key s3cret\n    Username alice\n    Password nope\n    Retry_Limit 1\n"
        ),
    );
    assert!(exited(&mut sending, 30), "{}", log_of(&sending));
    assert!(
        sending.logged("handshake refused by the server: username/password mismatch"),
        "{}",
        log_of(&sending)
    );
    // Neither the shared key nor the password is in the log of the refused handshake.
    let log = log_of(&sending);
    for secret in ["s3cret", "Password nope", "=nope", " nope"] {
        assert!(!log.contains(secret), "{secret:?} in the log:\n{log}");
    }
    assert!(peer
        .status()
        .contains("auth_failed username/password mismatch"));
    assert!(peer.records().is_empty());
}
