//! `examples/seed-demo/run`, the README's second way to see the main job, run as a user runs
//! it: nginx and hey from Debian, the json-file shim, the test Kubernetes API server, moto's
//! CloudWatch Logs and logferry on the seed's ConfigMap; the script's own check of the records
//! against the seed's shape must pass.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

#[test]
fn seed_demo_script_delivers_the_seeds_records() {
    for tool in ["nginx", "hey"] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
            .unwrap_or(false)
            || Path::new("/usr/sbin").join(tool).is_file();
        assert!(
            found,
            "{tool} is not installed: apt-get install nginx hey (.ci/run does)"
        );
    }
    let bin = Path::new(env!("CARGO_BIN_EXE_logferry"));
    // `cargo test` builds the examples beside the binary; a run of this test alone does not.
    let kube = bin.parent().unwrap().join("examples/kube_api_server");
    if !kube.is_file() {
        let st = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "-p", "logferry", "--example", "kube_api_server"])
            .status()
            .unwrap();
        assert!(st.success(), "building the kube_api_server example failed");
    }
    assert!(kube.is_file(), "{} is not built", kube.display());
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new("bash")
        .arg(repo.join("examples/seed-demo/run"))
        .env("LOGFERRY_BIN", bin)
        .env("KUBE_API_SERVER_BIN", &kube)
        .env(
            "PATH",
            format!("{}:/usr/sbin", std::env::var("PATH").unwrap_or_default()),
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the demo failed:\n{stdout}\n{stderr}");
    assert!(
        stderr.contains("30 from hey's 30 requests")
            && stderr.contains("every record has the seed's shape"),
        "{stderr}"
    );
    // The records are printed.
    assert!(
        stdout.contains("\"pod_name\": \"nginx-5468c5d4d7-n2swr\""),
        "{stdout}"
    );
}
