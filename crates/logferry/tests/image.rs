//! The container image's file layout without Docker: `scripts/image-layout` (which the
//! Dockerfile runs in its build stage) lays the built binary and the image's files out under a
//! temporary root, and the binary is started from there under its Fluent Bit name with the
//! image's paths (each `/fluent-bit/...` and `/var/log/...` moved under that root): the image's
//! default config, the seed's ConfigMap mounted at `/fluent-bit/etc/`, the AWS image's command
//! line and bundled configs, and the upstream chart's `--workdir` command line.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::wait;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A laid-out image root, removed on drop.
struct Image {
    dir: tempfile::TempDir,
}

impl Image {
    fn build() -> Image {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("bash")
            .arg(repo().join("scripts/image-layout"))
            .arg(env!("CARGO_BIN_EXE_logferry"))
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "image-layout: {}", text(&out.stderr));
        Image { dir }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    /// An image path (`/fluent-bit/...`) under the root.
    fn path(&self, p: &str) -> PathBuf {
        self.root().join(p.trim_start_matches('/'))
    }

    /// A config's text with the image's absolute paths moved under the root.
    fn rebase(&self, conf: &str) -> String {
        let root = self.root().display().to_string();
        conf.replace("/fluent-bit/", &format!("{root}/fluent-bit/"))
            .replace("/var/log", &format!("{root}/var/log"))
    }

    /// Rewrites an image file in place with [`Image::rebase`].
    fn rebase_file(&self, p: &str) {
        let f = self.path(p);
        let t = std::fs::read_to_string(&f).unwrap();
        std::fs::write(&f, self.rebase(&t)).unwrap();
    }

    /// The image's `/fluent-bit/bin/fluent-bit`, with the runner's AWS init variables removed.
    fn fluent_bit(&self) -> Command {
        let mut c = Command::new(self.path("/fluent-bit/bin/fluent-bit"));
        for (k, _) in std::env::vars() {
            if k.to_ascii_lowercase().starts_with("aws_fluent_bit_init_")
                || k == "ECS_CONTAINER_METADATA_URI_V4"
            {
                c.env_remove(k);
            }
        }
        // As the image's ENV sets it.
        c.env(
            "FLUENT_BIT_CONFIG_FILE",
            self.path("/fluent-bit/etc/fluent-bit.conf"),
        );
        c
    }
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap()
}

#[test]
fn layout_has_fluent_bits_paths_and_answers_under_both_names() {
    let img = Image::build();
    for p in [
        "/fluent-bit/bin/logferry",
        "/fluent-bit/bin/fluent-bit",
        "/usr/local/bin/logferry",
        "/fluent-bit/etc/fluent-bit.conf",
        "/fluent-bit/etc/parsers.conf",
        "/fluent-bit/parsers/parsers.conf",
        "/fluent-bit/configs/parse-json.conf",
        "/fluent-bit/configs/minimize-log-loss.conf",
    ] {
        assert!(img.path(p).is_file(), "{p} is missing");
    }
    assert_eq!(
        std::fs::read_link(img.path("/fluent-bit/bin/fluent-bit")).unwrap(),
        Path::new("logferry")
    );
    for name in ["/fluent-bit/bin/fluent-bit", "/usr/local/bin/logferry"] {
        let out = run(Command::new(img.path(name)).arg("--version"));
        assert!(out.status.success());
        assert_eq!(
            text(&out.stdout).trim(),
            format!("logferry {}", env!("CARGO_PKG_VERSION"))
        );
    }
    // Fluent Bit's standard parsers are in the shipped file.
    let parsers = std::fs::read_to_string(img.path("/fluent-bit/parsers/parsers.conf")).unwrap();
    for name in [
        "apache",
        "apache2",
        "apache_error",
        "nginx",
        "json",
        "docker",
        "syslog-rfc5424",
        "syslog-rfc3164",
        "mongodb",
        "envoy",
        "cri",
        "logfmt",
    ] {
        assert!(
            parsers
                .lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["Name", name]),
            "parsers.conf lacks {name}"
        );
    }
}

/// The image as `docker run IMAGE` starts it: no arguments, the config from
/// `FLUENT_BIT_CONFIG_FILE` (dummy → stdout with the API on). The port is moved with `-P`.
#[test]
fn default_config_runs_and_serves_health() {
    let img = Image::build();
    img.rebase_file("/fluent-bit/etc/fluent-bit.conf");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = img
        .fluent_bit()
        .args(["-P", &port.to_string(), "-L", "127.0.0.1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(20));
    let mut health = None;
    let healthy = wait(20, || {
        health = get(port, "/api/v1/health");
        health.as_ref().is_some_and(|(s, _)| *s == 200)
    });
    let _ = child.kill();
    let _ = child.wait();
    let line = line.expect("a record on stdout");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["message"], "dummy", "{line}");
    assert!(healthy, "{health:?}");
}

fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let status = raw.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, raw.split_once("\r\n\r\n")?.1.to_string()))
}

/// The seed's ConfigMap mounted over `/fluent-bit/etc/` (as its DaemonSet does) with its
/// `Parsers_File /fluent-bit/parsers/parsers.conf` from the image: the config checks out, and
/// its `docker` parser is the image's file's.
#[test]
fn seed_configmap_over_the_images_etc() {
    let img = Image::build();
    let seed = repo().join("../shared/conformance/seed-nginx/fluent-bit.conf");
    assert!(
        seed.exists(),
        "{} is missing: this test mounts the seed's ConfigMap from the shared fixtures",
        seed.display()
    );
    std::fs::copy(&seed, img.path("/fluent-bit/etc/fluent-bit.conf")).unwrap();
    std::fs::create_dir_all(img.path("/var/log/containers")).unwrap();
    let out = run(img
        .fluent_bit()
        .arg("--dry-run")
        .env("LOG_DIR", img.path("/var/log/containers"))
        .env("STATE_DIR", img.path("/var/log"))
        .env("PARSERS_FILE", img.path("/fluent-bit/parsers/parsers.conf"))
        .env("KUBE_URL", "https://127.0.0.1:1")
        .env("KUBE_CA_FILE", "")
        .env("KUBE_TOKEN_FILE", "")
        .env("KUBE_TAG_PREFIX", "kube.")
        .env("CLOUDWATCH_ENDPOINT", "http://127.0.0.1:1"));
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("[error]"), "{err}");
    assert_eq!(text(&out.stdout).trim(), "configuration test is successful");

    // A parsers file that does not load is an error, so the image's file was read.
    std::fs::write(
        img.path("/fluent-bit/parsers/parsers.conf"),
        "[PARSER]\n    Name docker\n    Format regex\n    Regex (\n",
    )
    .unwrap();
    let out = run(img
        .fluent_bit()
        .arg("--dry-run")
        .env("LOG_DIR", img.path("/var/log/containers"))
        .env("STATE_DIR", img.path("/var/log"))
        .env("PARSERS_FILE", img.path("/fluent-bit/parsers/parsers.conf"))
        .env("KUBE_URL", "https://127.0.0.1:1")
        .env("KUBE_TAG_PREFIX", "kube.")
        .env("CLOUDWATCH_ENDPOINT", "http://127.0.0.1:1"));
    assert!(!out.status.success());
}

/// AWS for Fluent Bit's command line, its bundled configs included the way a FireLens task
/// definition includes them (`@INCLUDE` in the generated config), and as init files.
#[test]
fn aws_image_command_line_and_bundled_configs() {
    let img = Image::build();
    let configs: Vec<String> = std::fs::read_dir(img.path("/fluent-bit/configs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(configs.len() >= 6, "{configs:?}");
    for c in &configs {
        img.rebase_file(&format!("/fluent-bit/configs/{c}"));
        let main = img.path("/fluent-bit/etc/fluent-bit.conf");
        std::fs::write(
            &main,
            img.rebase(&format!(
                "[INPUT]\n    Name forward_stand_in\n@INCLUDE /fluent-bit/configs/{c}\n"
            ))
            .replace("forward_stand_in", "dummy")
                + "[OUTPUT]\n    Name cloudwatch\n    Match *\n    region us-east-1\n    log_group_name g\n    log_stream_name s\n",
        )
        .unwrap();
        let out = run(img.fluent_bit().args([
            "-e",
            "/fluent-bit/firehose.so",
            "-e",
            "/fluent-bit/cloudwatch.so",
            "-e",
            "/fluent-bit/kinesis.so",
            "-c",
            main.to_str().unwrap(),
            "--dry-run",
        ]));
        let err = text(&out.stderr);
        assert!(out.status.success(), "{c}: {err}");
        assert!(
            !err.contains("[warn]"),
            "{c}: nothing is left unapplied: {err}"
        );
    }
    // As an init file (aws_fluent_bit_init_file_1=/fluent-bit/configs/parse-json.conf).
    std::fs::write(
        img.path("/fluent-bit/etc/fluent-bit.conf"),
        "[INPUT]\n    Name dummy\n    Dummy {\"log\":\"{\\\"a\\\":1}\"}\n[OUTPUT]\n    Name stdout\n    Match *\n    Format json_lines\n",
    )
    .unwrap();
    let mut child = img
        .fluent_bit()
        .env(
            "aws_fluent_bit_init_file_1",
            img.path("/fluent-bit/configs/parse-json.conf"),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(20));
    let _ = child.kill();
    let _ = child.wait();
    let v: serde_json::Value = serde_json::from_str(&line.expect("a record")).unwrap();
    assert_eq!(v["a"], 1, "parse-json.conf parsed `log`: {v}");
}

/// The upstream fluent-bit chart: config mounted at `/fluent-bit/etc/conf/`, the image's
/// `/fluent-bit/etc/parsers.conf` still there, `--workdir=/fluent-bit/etc
/// --config=/fluent-bit/etc/conf/fluent-bit.conf`.
#[test]
fn upstream_chart_command_line() {
    let img = Image::build();
    std::fs::create_dir_all(img.path("/fluent-bit/etc/conf")).unwrap();
    std::fs::write(
        img.path("/fluent-bit/etc/conf/custom_parsers.conf"),
        "[PARSER]\n    Name docker_no_time\n    Format json\n    Time_Keep Off\n    Time_Key time\n    Time_Format %Y-%m-%dT%H:%M:%S.%L\n",
    )
    .unwrap();
    std::fs::create_dir_all(img.path("/var/log/containers")).unwrap();
    std::fs::write(
        img.path("/fluent-bit/etc/conf/fluent-bit.conf"),
        img.rebase(
            "[SERVICE]\n    Daemon Off\n    Flush 1\n    Log_Level info\n    Parsers_File /fluent-bit/etc/parsers.conf\n    Parsers_File /fluent-bit/etc/conf/custom_parsers.conf\n    HTTP_Server On\n    HTTP_Listen 0.0.0.0\n    HTTP_Port 2020\n    Health_Check On\n\n[INPUT]\n    Name tail\n    Path /var/log/containers/*.log\n    multiline.parser docker, cri\n    Tag kube.*\n    Mem_Buf_Limit 5MB\n    Skip_Long_Lines On\n\n[FILTER]\n    Name kubernetes\n    Match kube.*\n    Merge_Log On\n    Keep_Log Off\n    K8S-Logging.Parser On\n    K8S-Logging.Exclude On\n\n[OUTPUT]\n    Name stdout\n    Match *\n",
        ),
    )
    .unwrap();
    let out = run(img.fluent_bit().env_remove("FLUENT_BIT_CONFIG_FILE").args([
        &format!("--workdir={}", img.path("/fluent-bit/etc").display()),
        &format!(
            "--config={}",
            img.path("/fluent-bit/etc/conf/fluent-bit.conf").display()
        ),
        "--dry-run",
    ]));
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("[error]"), "{err}");
}
