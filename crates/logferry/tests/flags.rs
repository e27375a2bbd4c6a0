//! Fluent Bit's command-line flags as charts, images and the docs use them, run through the
//! real binary: `-w` (the upstream Helm chart's `--workdir`), `-b`, `-H/-L/-P` and their long
//! forms, the flags logferry accepts with one warning line, `-e` of the AWS image's Go plugins,
//! `-h`/`-J` on plugins, `FLUENT_BIT_CONFIG_FILE`, and the AWS init variables (files, S3 through
//! moto, ECS task metadata).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::wait;

fn logferry() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_logferry"));
    // The AWS init steps start on these variables: keep the runner's out of every test.
    for (k, _) in std::env::vars() {
        if k.to_ascii_lowercase().starts_with("aws_fluent_bit_init_")
            || k == "FLUENT_BIT_CONFIG_FILE"
            || k == "ECS_CONTAINER_METADATA_URI_V4"
        {
            c.env_remove(k);
        }
    }
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("logferry runs")
}

/// The agent in the background with its stderr captured; killed on drop.
struct Running {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Running {
    fn start(cmd: &mut Command) -> Running {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let r = Running { child, log };
        assert!(
            wait(30, || r.logged("logferry started")),
            "the agent did not start:\n{}",
            r.log()
        );
        r
    }

    fn logged(&self, what: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(what))
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` on 127.0.0.1:port: (status, body); None when nothing answers.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let status = raw.split_whitespace().nth(1)?.parse().ok()?;
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The upstream fluent-bit chart's command line (`--workdir=/fluent-bit/etc
/// --config=/fluent-bit/etc/conf/fluent-bit.conf`) with relative paths: Fluent Bit enters the
/// working directory first, so the file output's relative `Path` lands inside it.
#[test]
fn workdir_is_entered_before_the_config_is_read() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("conf")).unwrap();
    std::fs::create_dir_all(dir.path().join("out")).unwrap();
    std::fs::write(
        dir.path().join("conf/fluent-bit.conf"),
        "[SERVICE]\n    Flush 0.2\n[INPUT]\n    Name dummy\n    Tag d\n    Dummy {\"k\":\"workdir\"}\n[OUTPUT]\n    Name file\n    Match *\n    Path out\n    File got.log\n",
    )
    .unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let r = Running::start(
        logferry()
            .current_dir(elsewhere.path())
            .arg(format!("--workdir={}", dir.path().display()))
            .arg("--config=conf/fluent-bit.conf"),
    );
    let got = dir.path().join("out/got.log");
    assert!(
        wait(20, || std::fs::read_to_string(&got)
            .is_ok_and(|s| s.contains("\"k\":\"workdir\""))),
        "no record in {}:\n{}",
        got.display(),
        r.log()
    );
    assert!(!elsewhere.path().join("out").exists());

    // The short form, and a missing directory is an error naming it.
    let out = run(logferry()
        .args(["-w", "/nonexistent/logferry-workdir", "-c", "x.conf"])
        .stdin(Stdio::null()));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("-w/--workdir /nonexistent/logferry-workdir"),
        "{}",
        text(&out.stderr)
    );
}

/// `-b PATH` is `storage.path`: a filesystem input's chunks are written under it.
#[test]
fn storage_path_flag_sets_storage_path() {
    let dir = tempfile::tempdir().unwrap();
    let buffers = dir.path().join("buffers");
    let r = Running::start(logferry().args([
        "-b",
        buffers.to_str().unwrap(),
        "-i",
        "dummy",
        "-p",
        "storage.type=filesystem",
        "-p",
        "rate=20",
        "-o",
        "null",
    ]));
    let has_chunk = || {
        walk(&buffers)
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "flb"))
    };
    assert!(
        wait(20, has_chunk),
        "no chunk file under {}: {:?}\n{}",
        buffers.display(),
        walk(&buffers),
        r.log()
    );
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// `-H -L ADDR -P PORT` and `--http_server --http_listen --http_port` start the monitoring
/// server where asked.
#[test]
fn http_flags_start_the_server_on_the_address_and_port_given() {
    for long in [false, true] {
        let port = free_port();
        let args: Vec<String> = if long {
            vec![
                "--http_server".into(),
                "--http_listen".into(),
                "127.0.0.1".into(),
                "--http_port".into(),
                port.to_string(),
            ]
        } else {
            vec![
                "-H".into(),
                "-L".into(),
                "127.0.0.1".into(),
                "-P".into(),
                port.to_string(),
            ]
        };
        let r = Running::start(logferry().args(&args).args(["-i", "dummy", "-o", "null"]));
        let mut answer = None;
        assert!(
            wait(20, || {
                answer = http_get(port, "/api/v1/uptime");
                answer.is_some()
            }),
            "nothing on 127.0.0.1:{port} ({args:?}):\n{}",
            r.log()
        );
        let (status, body) = answer.unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("uptime_sec"), "{body}");
    }
}

/// Flags that mean nothing for logferry are accepted with one warning line each, in
/// `--dry-run` and in the running agent's log, and never stop it.
#[test]
fn flags_without_meaning_give_one_warning_each_and_never_stop_the_agent() {
    let accepted: &[(&[&str], &str)] = &[
        (
            &["-s", "49152"],
            "Coro_Stack_Size: accepted but not applied",
        ),
        (&["-T", "SELECT * FROM TAG:'x';"], "-T/--sp-task"),
        (&["-S"], "-S/--sosreport"),
        (&["-d"], "Daemon: accepted but not applied"),
        (
            &["--enable-fips"],
            "security.fips_mode: accepted but not applied",
        ),
        (&["--supervisor"], "--supervisor: accepted but not applied"),
        (&["-Z"], "Enable_Chunk_Trace: accepted but not applied"),
        (
            &["--trace-input", "dummy.0"],
            "--trace-input: accepted but not applied",
        ),
        (
            &["-C", "calyptia"],
            "[CUSTOM] section is accepted but not applied",
        ),
        (
            &["-e", "/opt/plugins/out_gstdout.so"],
            "-e /opt/plugins/out_gstdout.so: accepted but not applied",
        ),
    ];
    for (flags, want) in accepted {
        let out = run(logferry()
            .args(["-D", "-i", "dummy", "-o", "null"])
            .args(*flags));
        let err = text(&out.stderr);
        assert!(out.status.success(), "{flags:?} was refused:\n{err}");
        let lines: Vec<&str> = err.lines().filter(|l| l.contains(want)).collect();
        assert_eq!(
            lines.len(),
            1,
            "{flags:?}: want one line with '{want}':\n{err}"
        );
        assert!(lines[0].starts_with("[warn] "), "{}", lines[0]);
    }
    // All of them at once on a running agent: it starts, and its log has each warning.
    let mut cmd = logferry();
    cmd.args(["-i", "dummy", "-o", "null"]);
    for (flags, _) in accepted {
        cmd.args(*flags);
    }
    let r = Running::start(&mut cmd);
    for (flags, want) in accepted {
        assert!(
            r.logged(want),
            "{flags:?}: no '{want}' in the log:\n{}",
            r.log()
        );
    }
}

/// The AWS for Fluent Bit image's command line: its Go plugins are built in, so `-e` of them is
/// an info line and their output names (`cloudwatch`, `firehose`, `kinesis`) work.
#[test]
fn aws_image_command_line_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("fluent-bit.conf");
    std::fs::write(
        &conf,
        "[INPUT]\n    Name dummy\n[OUTPUT]\n    Name cloudwatch\n    Match *\n    region us-east-1\n    log_group_name g\n    log_stream_prefix p-\n[OUTPUT]\n    Name firehose\n    Match *\n    region us-east-1\n    delivery_stream s\n[OUTPUT]\n    Name kinesis\n    Match *\n    region us-east-1\n    stream s\n",
    )
    .unwrap();
    let out = run(logferry()
        .args([
            "-e",
            "/fluent-bit/firehose.so",
            "-e",
            "/fluent-bit/cloudwatch.so",
            "-e",
            "/fluent-bit/kinesis.so",
            "-c",
        ])
        .arg(&conf)
        .arg("--dry-run"));
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    for (go, builtin) in [
        ("firehose", "kinesis_firehose"),
        ("cloudwatch", "cloudwatch_logs"),
        ("kinesis", "kinesis_streams"),
    ] {
        let want = format!(
            "[info] -e /fluent-bit/{go}.so: built in: output '{go}' is logferry's {builtin}"
        );
        assert!(err.lines().any(|l| l == want), "want {want}:\n{err}");
    }
    assert!(!err.contains("[warn] -e"), "{err}");
}

/// `-h` after a plugin: its options (exit 0); an unknown or not-yet-available plugin exits
/// non-zero, as Fluent Bit does for a plugin it does not have.
#[test]
fn plugin_help_exits_non_zero_for_a_plugin_logferry_lacks() {
    let ok = run(logferry().args(["-o", "cloudwatch_logs", "-h"]));
    assert!(ok.status.success());
    assert!(text(&ok.stdout).contains("log_group_name"));

    for (args, want) in [
        (
            &["-i", "no_such_input", "-h"][..],
            "unknown input plugin 'no_such_input'",
        ),
        (
            &["-F", "wasm", "-h"][..],
            "filter plugin 'wasm' is not yet available in logferry",
        ),
        (&["-o", "nope", "-h"][..], "unknown output plugin 'nope'"),
        (
            &["-C", "calyptia", "-h"][..],
            "custom plugin 'calyptia' is not available",
        ),
        (&["-i", "nope", "-J"][..], "unknown input plugin 'nope'"),
    ] {
        let out = run(logferry().args(args));
        assert!(!out.status.success(), "{args:?} must fail");
        assert!(
            text(&out.stderr).contains(want),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stdout).is_empty(),
            "{args:?}: {}",
            text(&out.stdout)
        );
    }
}

/// `-J`: every plugin's options as JSON, or one plugin's after `-i/-F/-o NAME`.
#[test]
fn help_json_lists_plugins_and_options() {
    let out = run(logferry().arg("-J"));
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names = |k: &str| -> Vec<String> {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(names("inputs").contains(&"tail".to_string()));
    assert!(names("filters").contains(&"kubernetes".to_string()));
    assert!(names("outputs").contains(&"cloudwatch_logs".to_string()));
    let flush = v["service"]["properties"]["options"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "Flush")
        .unwrap();
    assert_eq!(flush["default"], "1");

    let out = run(logferry().args(["-i", "tail", "-J"]));
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["type"], "input");
    assert_eq!(v["name"], "tail");
    let opts = v["properties"]["options"].as_array().unwrap();
    let rotate = opts.iter().find(|o| o["name"] == "Rotate_Wait").unwrap();
    assert_eq!(rotate["default"], "5");
    assert!(opts.iter().any(|o| o["name"] == "Mem_Buf_Limit"));
}

/// `FLUENT_BIT_CONFIG_FILE` names the config when `-c` does not.
#[test]
fn config_file_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("env.conf");
    std::fs::write(
        &conf,
        "[INPUT]\n    Name dummy\n[OUTPUT]\n    Name null\n    Match *\n",
    )
    .unwrap();
    let out = run(logferry()
        .env("FLUENT_BIT_CONFIG_FILE", &conf)
        .arg("--dry-run"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(&format!(
            "configuration from FLUENT_BIT_CONFIG_FILE: {}",
            conf.display()
        )),
        "{}",
        text(&out.stderr)
    );
    // A broken one is reported by name, as with -c.
    std::fs::write(&conf, "[INPUT]\n    Name dumy\n").unwrap();
    let out = run(logferry()
        .env("FLUENT_BIT_CONFIG_FILE", &conf)
        .arg("--dry-run"));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(&format!(
            "{}:2: Name: unknown input plugin 'dumy'",
            conf.display()
        )),
        "{}",
        text(&out.stderr)
    );
}

/// `aws_fluent_bit_init_file_N`: a file with `[PARSER]` is a parsers file, any other is
/// included after the main config; records go through both.
#[test]
fn aws_init_files_are_included_and_parsers_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("fluent-bit.conf");
    std::fs::write(
        &main,
        "[SERVICE]\n    Flush 0.2\n[INPUT]\n    Name dummy\n    Tag app\n    Dummy {\"log\":\"7 seven\"}\n",
    )
    .unwrap();
    let parsers = dir.path().join("my-parser.conf");
    std::fs::write(
        &parsers,
        "[PARSER]\n    Name numbered\n    Format regex\n    Regex ^(?<n>\\d+) (?<word>.+)$\n",
    )
    .unwrap();
    let filter = dir.path().join("my-filter.conf");
    std::fs::write(
        &filter,
        "[FILTER]\n    Name parser\n    Match app\n    Key_Name log\n    Parser numbered\n",
    )
    .unwrap();
    let got = dir.path().join("got.log");
    let output = dir.path().join("my-output.conf");
    std::fs::write(
        &output,
        format!(
            "[OUTPUT]\n    Name file\n    Match *\n    Path {}\n    File got.log\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let cmd = || {
        let mut c = logferry();
        c.arg("-c")
            .arg(&main)
            .env("aws_fluent_bit_init_file_1", &filter)
            .env("aws_fluent_bit_init_file_2", &parsers)
            .env("aws_fluent_bit_init_file_3", &output);
        c
    };
    let out = run(cmd().arg("--dry-run"));
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "aws init: aws_fluent_bit_init_file_2: {} loaded as a parsers file",
            parsers.display()
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "aws init: aws_fluent_bit_init_file_1: {} included",
            filter.display()
        )),
        "{err}"
    );
    let r = Running::start(&mut cmd());
    assert!(
        wait(20, || std::fs::read_to_string(&got).is_ok_and(|s| s
            .contains("\"n\":\"7\"")
            && s.contains("\"word\":\"seven\""))),
        "no parsed record in {}:\n{}",
        got.display(),
        r.log()
    );

    // A file that cannot be read stops the start, naming the variable (the image's init
    // process stops too).
    let out = run(logferry()
        .arg("-c")
        .arg(&main)
        .env("aws_fluent_bit_init_file_1", "/nonexistent/x.conf")
        .arg("--dry-run"));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("aws_fluent_bit_init_file_1: cannot read /nonexistent/x.conf"),
        "{}",
        text(&out.stderr)
    );
}

/// `aws_fluent_bit_init_s3_N`: the object is downloaded through the SDK (moto's S3 here) into
/// `$TMPDIR/init/fluent-bit-init-s3-files/` and included.
#[test]
fn aws_init_s3_files_are_downloaded_through_the_sdk() {
    use logferry_aws::testing::{create_bucket, hermetic_env, raw_http, Moto};
    hermetic_env();
    let moto = Moto::start();
    create_bucket(moto.port, "init-configs");
    let (status, body) = raw_http(
        moto.port,
        "PUT",
        "/init-configs/team/extra-filter.conf",
        b"[FILTER]\n    Name record_modifier\n    Match *\n    Record from s3\n",
    );
    assert_eq!(status, 200, "{}", text(&body));
    let (status, _) = raw_http(
        moto.port,
        "PUT",
        "/init-configs/team/parsers.conf",
        b"[PARSER]\n    Name from_s3\n    Format json\n",
    );
    assert_eq!(status, 200);

    let tmp = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("fluent-bit.conf");
    std::fs::write(
        &main,
        "[INPUT]\n    Name dummy\n[FILTER]\n    Name parser\n    Match *\n    Key_Name message\n    Parser from_s3\n[OUTPUT]\n    Name null\n    Match *\n",
    )
    .unwrap();
    let out = run(logferry()
        .arg("-c")
        .arg(&main)
        .arg("--dry-run")
        .env("TMPDIR", tmp.path())
        .env("AWS_ENDPOINT_URL_S3", moto.endpoint())
        .env("AWS_REGION", "us-east-1")
        .env(
            "aws_fluent_bit_init_s3_1",
            "arn:aws:s3:::init-configs/team/extra-filter.conf",
        )
        .env(
            "aws_fluent_bit_init_s3_2",
            "arn:aws:s3:::init-configs/team/parsers.conf",
        ));
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    let files = tmp.path().join("init/fluent-bit-init-s3-files");
    let filter = files.join("extra-filter.conf");
    assert_eq!(
        std::fs::read_to_string(&filter).unwrap(),
        "[FILTER]\n    Name record_modifier\n    Match *\n    Record from s3\n"
    );
    assert!(
        err.contains(&format!(
            "aws_fluent_bit_init_s3_1: {} included",
            filter.display()
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "aws_fluent_bit_init_s3_2: {} loaded as a parsers file",
            files.join("parsers.conf").display()
        )),
        "{err}"
    );

    // A missing object stops the start with the variable and the ARN.
    let out = run(logferry()
        .arg("-c")
        .arg(&main)
        .arg("--dry-run")
        .env("TMPDIR", tmp.path())
        .env("AWS_ENDPOINT_URL_S3", moto.endpoint())
        .env("AWS_REGION", "us-east-1")
        .env(
            "aws_fluent_bit_init_s3_1",
            "arn:aws:s3:::init-configs/missing.conf",
        ));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(
            "aws_fluent_bit_init_s3_1: cannot download arn:aws:s3:::init-configs/missing.conf"
        ),
        "{}",
        text(&out.stderr)
    );
}

/// `--aws-init` with `ECS_CONTAINER_METADATA_URI_V4`: the task metadata becomes `${ECS_*}`
/// variables, as the image's init process exports them.
#[test]
fn aws_init_exports_ecs_task_metadata() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let served = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = Arc::clone(&served);
    std::thread::spawn(move || {
        for stream in listener.incoming().take(4).flatten() {
            let mut stream = stream;
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            // The whole request head, however it arrives (bounded by the read timeout).
            let mut req = Vec::new();
            let mut buf = [0u8; 2048];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 16_384 {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let req = String::from_utf8_lossy(&req).to_string();
            seen.lock()
                .unwrap()
                .push(req.lines().next().unwrap_or("").to_string());
            let body = r#"{"Cluster":"arn:aws:ecs:eu-west-1:111122223333:cluster/demo","TaskARN":"arn:aws:ecs:eu-west-1:111122223333:task/demo/5f0c2d1e","Family":"web","Revision":"3","AvailabilityZone":"eu-west-1b","LaunchType":"FARGATE"}"#;
            let _ = write!(
                stream,
                "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("fluent-bit.conf");
    std::fs::write(
        &conf,
        format!(
            "[SERVICE]\n    Flush 0.2\n[INPUT]\n    Name dummy\n[FILTER]\n    Name record_modifier\n    Match *\n    Record task ${{ECS_TASK_ID}}\n    Record def ${{ECS_TASK_DEFINITION}}\n    Record cluster ${{ECS_CLUSTER}}\n[OUTPUT]\n    Name file\n    Match *\n    Path {}\n    File got.log\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let r = Running::start(logferry().arg("--aws-init").arg("-c").arg(&conf).env(
        "ECS_CONTAINER_METADATA_URI_V4",
        format!("http://127.0.0.1:{port}/v4/abc"),
    ));
    let got = dir.path().join("got.log");
    assert!(
        wait(20, || std::fs::read_to_string(&got)
            .is_ok_and(|s| s.contains("\"task\":\"5f0c2d1e\"")
                && s.contains("\"def\":\"web:3\"")
                && s.contains("\"cluster\":\"demo\""))),
        "{:?}\n{}",
        std::fs::read_to_string(&got),
        r.log()
    );
    assert_eq!(served.lock().unwrap()[0], "GET /v4/abc/task HTTP/1.0");
}
