//! The project's test Kubernetes API server as a process, for `examples/seed-demo`: HTTPS on a
//! free 127.0.0.1 port with its own CA and a bearer token, serving the pods given as JSON files.
//!
//! `cargo run -p logferry --example kube_api_server -- DIR POD.json...` writes `DIR/ca.crt`,
//! `DIR/token` and `DIR/kube.env` (`KUBE_URL=`, `KUBE_CA_FILE=`, `KUBE_TOKEN_FILE=` lines, written
//! last, so its presence means the server is up), then serves until SIGTERM or SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1).map(PathBuf::from);
    let Some(dir) = args.next() else {
        eprintln!("usage: kube_api_server DIR POD.json...");
        return ExitCode::from(2);
    };
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("cannot create {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    let server = logferry_kubernetes::testing::KubeApiServer::start(&dir).await;
    for pod in args {
        let text = match std::fs::read_to_string(&pod) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("cannot read {}: {e}", pod.display());
                return ExitCode::FAILURE;
            }
        };
        match serde_json::from_str(&text) {
            Ok(v) => server.add_pod(v),
            Err(e) => {
                eprintln!("{}: not JSON: {e}", pod.display());
                return ExitCode::FAILURE;
            }
        }
    }
    let env = format!(
        "KUBE_URL={}\nKUBE_CA_FILE={}\nKUBE_TOKEN_FILE={}\n",
        server.url(),
        server.ca_file.display(),
        server.token_file.display()
    );
    let tmp = dir.join("kube.env.tmp");
    if let Err(e) =
        std::fs::write(&tmp, env).and_then(|()| std::fs::rename(&tmp, dir.join("kube.env")))
    {
        eprintln!("cannot write kube.env: {e}");
        return ExitCode::FAILURE;
    }
    eprintln!("kube API server on {}", server.url());
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    server.stop();
    ExitCode::SUCCESS
}
