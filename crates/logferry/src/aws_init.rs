//! The AWS for Fluent Bit image's init process, built into the binary.
//!
//! That image's `init` variant starts a helper before Fluent Bit which (documented in its
//! `use_cases/init-process-for-fluent-bit` guide):
//! - reads the ECS task metadata (`$ECS_CONTAINER_METADATA_URI_V4/task`) and exports
//!   `AWS_REGION`, `AWS_AVAILABILITY_ZONE`, `ECS_LAUNCH_TYPE`, `ECS_CLUSTER`, `ECS_FAMILY`,
//!   `ECS_TASK_ARN`, `ECS_TASK_ID`, `ECS_REVISION`, `ECS_TASK_DEFINITION` for `${VAR}` in configs;
//! - takes every `aws_fluent_bit_init_file_N` (a path in the image) and `aws_fluent_bit_init_s3_N`
//!   (an S3 object ARN, downloaded to `/init/fluent-bit-init-s3-files/`, or under `/tmp/init/`
//!   when `/init` is not writable) and includes each after the main config
//!   (`/fluent-bit/etc/fluent-bit.conf`), except that a file holding `[PARSER]` or
//!   `[MULTILINE_PARSER]` is loaded as a parsers file (`-R`) instead.
//!
//! logferry does the same in-process, before the config is read, when any of those variables
//! is set or `--aws-init` is given. Differences: the files are taken in the order of their
//! number `N` (the image takes them in environment order); a temporary directory is
//! `$TMPDIR/init/` (the image uses `/tmp/init/`); the S3 client follows
//! `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL` (path-style addressing then).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cli::Cli;

/// The main config the image's init process includes first.
pub const IMAGE_MAIN_CONFIG: &str = "/fluent-bit/etc/fluent-bit.conf";
const FILE_PREFIX: &str = "aws_fluent_bit_init_file_";
const S3_PREFIX: &str = "aws_fluent_bit_init_s3_";

/// One `aws_fluent_bit_init_*` variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitSource {
    File { var: String, path: PathBuf },
    S3 { var: String, arn: String },
}

/// The init variables of `env`, ordered by their number (then name).
pub fn sources(env: impl IntoIterator<Item = (String, String)>) -> Vec<InitSource> {
    let mut found: Vec<(u64, String, InitSource)> = Vec::new();
    for (k, v) in env {
        let lower = k.to_ascii_lowercase();
        let (rest, is_s3) = if let Some(r) = lower.strip_prefix(FILE_PREFIX) {
            (r.to_string(), false)
        } else if let Some(r) = lower.strip_prefix(S3_PREFIX) {
            (r.to_string(), true)
        } else {
            continue;
        };
        if v.trim().is_empty() {
            continue;
        }
        let n = rest.parse::<u64>().unwrap_or(u64::MAX);
        let src = if is_s3 {
            InitSource::S3 {
                var: k.clone(),
                arn: v.trim().to_string(),
            }
        } else {
            InitSource::File {
                var: k.clone(),
                path: PathBuf::from(v.trim()),
            }
        };
        found.push((n, k, src));
    }
    found.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    found.into_iter().map(|(_, _, s)| s).collect()
}

/// Whether a config file is a parsers file, as the image's init process decides it.
pub fn is_parsers_file(text: &str) -> bool {
    text.contains("[PARSER]") || text.contains("[MULTILINE_PARSER]")
}

/// Bucket and key of an S3 object ARN (`arn:aws:s3:::bucket/path/to/key`).
pub fn parse_s3_arn(arn: &str) -> Result<(String, String), String> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [scheme, _partition, service, _region, _account, resource] = parts[..] else {
        return Err(format!("'{arn}' is not an ARN (arn:aws:s3:::bucket/key)"));
    };
    if scheme != "arn" || service != "s3" {
        return Err(format!(
            "'{arn}' is not an S3 ARN (arn:aws:s3:::bucket/key)"
        ));
    }
    match resource.split_once('/') {
        Some((bucket, key)) if !bucket.is_empty() && !key.is_empty() => {
            Ok((bucket.to_string(), key.to_string()))
        }
        _ => Err(format!("'{arn}' names no object (arn:aws:s3:::bucket/key)")),
    }
}

/// Applies the init process to `cli` when its variables are set (or `force`): exports the
/// ECS metadata, downloads the S3 files, and adds each file as an include or a parsers file.
pub fn apply(cli: &mut Cli, force: bool) -> Result<(), String> {
    let srcs = sources(std::env::vars());
    if srcs.is_empty() && !force {
        return Ok(());
    }
    if let Some(uri) = std::env::var("ECS_CONTAINER_METADATA_URI_V4")
        .ok()
        .filter(|u| !u.is_empty())
    {
        let vars = ecs_metadata(&uri)?;
        for (k, v) in &vars {
            std::env::set_var(k, v);
        }
        cli.infos.push(format!(
            "aws init: ECS task metadata exported as {}",
            vars.iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if cli.config.is_none() && cli.sections.is_empty() && Path::new(IMAGE_MAIN_CONFIG).exists() {
        cli.config = Some(PathBuf::from(IMAGE_MAIN_CONFIG));
    }
    let needs_s3 = srcs.iter().any(|s| matches!(s, InitSource::S3 { .. }));
    let s3_dir = if needs_s3 { Some(s3_dir()?) } else { None };
    let runtime = if needs_s3 {
        Some(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("aws init: cannot start a runtime: {e}"))?,
        )
    } else {
        None
    };
    for src in srcs {
        let (var, path) = match src {
            InitSource::File { var, path } => (var, path),
            InitSource::S3 { var, arn } => {
                let (bucket, key) = parse_s3_arn(&arn).map_err(|e| format!("{var}: {e}"))?;
                let (Some(rt), Some(dir)) = (&runtime, &s3_dir) else {
                    return Err(format!("{var}: no S3 download directory"));
                };
                let name = key.rsplit('/').next().unwrap_or(&key).to_string();
                let to = dir.join(name);
                rt.block_on(download(&bucket, &key, &to))
                    .map_err(|e| format!("{var}: cannot download {arn}: {e}"))?;
                (var, to)
            }
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("{var}: cannot read {}: {e}", path.display()))?;
        if is_parsers_file(&text) {
            cli.infos.push(format!(
                "aws init: {var}: {} loaded as a parsers file",
                path.display()
            ));
            cli.parsers.push(path);
        } else {
            cli.infos
                .push(format!("aws init: {var}: {} included", path.display()));
            cli.includes.push(path);
        }
    }
    Ok(())
}

/// `/init/fluent-bit-init-s3-files/` when `/init` is writable, else under `$TMPDIR/init/`.
fn s3_dir() -> Result<PathBuf, String> {
    let primary = Path::new("/init");
    let base = if writable(primary) {
        primary.to_path_buf()
    } else {
        std::env::temp_dir().join("init")
    };
    let dir = base.join("fluent-bit-init-s3-files");
    std::fs::create_dir_all(&dir)
        .map_err(|e| format!("aws init: cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}

fn writable(dir: &Path) -> bool {
    let probe = dir.join(".logferry-write-test");
    match std::fs::File::create(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            true
        }
        Err(_) => false,
    }
}

/// The S3 endpoint from the environment, as the SDK's own settings name it.
fn s3_endpoint() -> Option<String> {
    ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
}

async fn s3_client(region: &str) -> aws_sdk_s3::Client {
    use logferry_aws::client::{load_sdk_config, AwsSettings, ServiceClient};
    let settings = AwsSettings::local(region, s3_endpoint().as_deref());
    let conf = load_sdk_config(&settings).await;
    aws_sdk_s3::Client::from_sdk_config(&conf, &settings)
}

/// Downloads `bucket/key` to `to`: the bucket's region first (HeadBucket, else
/// GetBucketLocation), then one GetObject, tried twice as the image's init process does.
async fn download(bucket: &str, key: &str, to: &Path) -> Result<(), String> {
    let home = std::env::var("AWS_REGION")
        .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
        .ok()
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "us-east-1".to_string());
    let client = s3_client(&home).await;
    let region = match client.head_bucket().bucket(bucket).send().await {
        Ok(h) if h.bucket_region().is_some_and(|r| !r.is_empty()) => {
            h.bucket_region().unwrap_or(&home).to_string()
        }
        _ => {
            let loc = client
                .get_bucket_location()
                .bucket(bucket)
                .send()
                .await
                .map_err(|e| format!("bucket region of {bucket}: {}", sdk_error(&e)))?;
            match loc.location_constraint().map(|c| c.as_str()) {
                None | Some("") => "us-east-1".to_string(),
                Some("EU") => "eu-west-1".to_string(),
                Some(r) => r.to_string(),
            }
        }
    };
    let client = if region == home {
        client
    } else {
        s3_client(&region).await
    };
    let mut last = String::new();
    for _ in 0..2 {
        match client.get_object().bucket(bucket).key(key).send().await {
            Ok(out) => match out.body.collect().await {
                Ok(bytes) => {
                    return std::fs::write(to, bytes.into_bytes())
                        .map_err(|e| format!("cannot write {}: {e}", to.display()));
                }
                Err(e) => last = e.to_string(),
            },
            Err(e) => last = sdk_error(&e),
        }
    }
    Err(last)
}

fn sdk_error<E: std::error::Error + 'static>(e: &E) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// The ECS task metadata (v4 `/task`) as the variables the image's init process exports.
pub fn ecs_metadata(uri: &str) -> Result<Vec<(String, String)>, String> {
    let body = http_get(&format!("{}/task", uri.trim_end_matches('/')))
        .map_err(|e| format!("aws init: ECS task metadata from {uri}: {e}"))?;
    metadata_vars(&body).map_err(|e| format!("aws init: ECS task metadata from {uri}: {e}"))
}

/// The exported variables from a `/task` response body.
pub fn metadata_vars(body: &str) -> Result<Vec<(String, String)>, String> {
    let v: serde_json::Value = serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))?;
    let field = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
    let task_arn = field("TaskARN");
    let arn: Vec<&str> = task_arn.splitn(6, ':').collect();
    let [_, _, _, region, _, resource] = arn[..] else {
        return Err(format!("TaskARN '{task_arn}' is not an ARN"));
    };
    let task_id = resource.rsplit('/').next().unwrap_or(resource).to_string();
    let mut cluster = field("Cluster");
    if cluster.contains('/') {
        cluster = cluster.rsplit('/').next().unwrap_or("").to_string();
    }
    let family = field("Family");
    let revision = field("Revision");
    let vars = [
        ("AWS_REGION", region.to_string()),
        ("AWS_AVAILABILITY_ZONE", field("AvailabilityZone")),
        ("ECS_CLUSTER", cluster),
        ("ECS_TASK_ARN", task_arn.clone()),
        ("ECS_TASK_ID", task_id),
        ("ECS_FAMILY", family.clone()),
        ("ECS_LAUNCH_TYPE", field("LaunchType")),
        ("ECS_REVISION", revision.clone()),
        ("ECS_TASK_DEFINITION", format!("{family}:{revision}")),
    ];
    Ok(vars
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.to_string(), v))
        .collect())
}

/// A plain-HTTP GET (the ECS metadata endpoint is `http://169.254.170.2/v4/...`), bounded:
/// 5 s to connect, 5 s without a byte, 1 MiB of response.
fn http_get(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("'{url}' is not an http:// URL"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let with_port = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&with_port)
        .map_err(|e| format!("{authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("{authority}: no address"))?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    // One write of the whole request: a server may answer (and close) after the first packet.
    let request =
        format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\nAccept: application/json\r\n\r\n");
    s.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.take(1 << 20)
        .read_to_end(&mut raw)
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or("incomplete HTTP response")?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        return Err(format!("HTTP {}", head.lines().next().unwrap_or("").trim()));
    }
    Ok(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_ordered_by_number_and_both_spellings_count() {
        let env = [
            ("aws_fluent_bit_init_file_10", "/c.conf"),
            ("aws_fluent_bit_init_S3_2", "arn:aws:s3:::b/k.conf"),
            ("aws_fluent_bit_init_file_1", "/a.conf"),
            ("aws_fluent_bit_init_file_3", ""),
            ("OTHER", "x"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let got = sources(env);
        assert_eq!(
            got,
            vec![
                InitSource::File {
                    var: "aws_fluent_bit_init_file_1".into(),
                    path: "/a.conf".into()
                },
                InitSource::S3 {
                    var: "aws_fluent_bit_init_S3_2".into(),
                    arn: "arn:aws:s3:::b/k.conf".into()
                },
                InitSource::File {
                    var: "aws_fluent_bit_init_file_10".into(),
                    path: "/c.conf".into()
                },
            ]
        );
    }

    #[test]
    fn s3_arns() {
        assert_eq!(
            parse_s3_arn("arn:aws:s3:::my-bucket/dir/x.conf"),
            Ok(("my-bucket".into(), "dir/x.conf".into()))
        );
        assert!(parse_s3_arn("arn:aws:s3:::my-bucket").is_err());
        assert!(parse_s3_arn("s3://b/k").is_err());
        assert!(parse_s3_arn("arn:aws:logs:::b/k").is_err());
    }

    #[test]
    fn parser_files_are_told_apart_by_their_sections() {
        assert!(is_parsers_file("[PARSER]\n    Name x\n"));
        assert!(is_parsers_file("[MULTILINE_PARSER]\n    name x\n"));
        assert!(!is_parsers_file("[FILTER]\n    Name grep\n"));
    }

    #[test]
    fn metadata_vars_follow_the_init_process() {
        let body = r#"{"Cluster":"arn:aws:ecs:us-west-2:111122223333:cluster/prod","TaskARN":"arn:aws:ecs:us-west-2:111122223333:task/prod/0123abcd","Family":"web","Revision":"7","AvailabilityZone":"us-west-2a","LaunchType":"FARGATE"}"#;
        let vars: std::collections::HashMap<String, String> =
            metadata_vars(body).unwrap().into_iter().collect();
        assert_eq!(vars["AWS_REGION"], "us-west-2");
        assert_eq!(vars["ECS_CLUSTER"], "prod");
        assert_eq!(vars["ECS_TASK_ID"], "0123abcd");
        assert_eq!(vars["ECS_TASK_DEFINITION"], "web:7");
        assert_eq!(vars["ECS_LAUNCH_TYPE"], "FARGATE");
        assert_eq!(vars["AWS_AVAILABILITY_ZONE"], "us-west-2a");
        assert!(metadata_vars("{}").is_err());
    }
}
