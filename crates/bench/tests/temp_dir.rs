//! The bench removes its own workload directory however it exits.

use std::process::Command;

/// A run that fails (here on an unknown pipeline, after the directory is made) leaves nothing
/// in the temp directory. It used to leave `logferry-bench-<pid>` with its workloads.
#[test]
fn a_failed_run_leaves_no_workload_behind() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let bench = env!("CARGO_BIN_EXE_logferry-bench");
    let out = Command::new(bench)
        // Any existing file passes the binary check; the run stops at the pipeline name.
        .args(["--pipelines", "nope", "--logferry", bench])
        .env("TMPDIR", tmp.path())
        .output()
        .expect("run the bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "an unknown pipeline fails: {stderr}");
    assert!(stderr.contains("nope"), "and says which: {stderr}");
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .expect("read the temp dir")
        .map(|e| e.map(|e| e.file_name()))
        .collect();
    assert!(left.is_empty(), "left behind in TMPDIR: {left:?}");
}
