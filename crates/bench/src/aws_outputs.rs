//! P5FH, P5KS and P5S3: the seed pipeline of P5 (docker nginx → kubernetes + nginx parser)
//! into `kinesis_firehose`, `kinesis_streams` and `s3` on moto, through the counting proxy,
//! so that the CPU an output spends building request bodies can be compared before and after a
//! change. Each pipeline creates its delivery stream, stream or bucket in moto first. P5OS is
//! the same into `opensearch` on the project's `_bulk` test server (`Logstash_Format` and
//! `Replace_Dots` on, as Elasticsearch users often run it), which counts what it stored.
//!
//! What each checks besides logferry's own delivered count (`output totals`): every put call
//! answered 200; for Firehose and S3, the lines in the bucket (moto's Firehose writes one object
//! per PutRecordBatch into its S3 destination) equal the records sent. Kinesis records are not
//! read back (GetRecords of the whole stream from moto takes longer than the run). For P5OS,
//! the documents the server stored equal the records sent.
//!
//! P5FH sets `time_key` (the record gains a time field, Fluent Bit's `time_key_format`), P5KS
//! uses the default random partition keys, P5S3 the defaults (`json_date_key date`, multipart
//! uploads of 5 MB parts at shutdown).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use logferry_aws::testing::proxy::{FaultProxy, Seen};
use logferry_aws::testing::{find, raw_http, BulkServer, Moto};

use super::{config, pod_json, write_docker_nginx, Kube, Pipeline, TailOpts};

/// The pipeline names, as given to `--pipelines`.
pub(crate) const NAMES: [&str; 4] = ["p5fh", "p5ks", "p5s3", "p5os"];

/// P5OS's `_bulk` server, started with the pipeline and left to end with the bench (the
/// script stops when its stdin closes).
static BULK: OnceLock<BulkServer> = OnceLock::new();

const REGION: &str = "us-east-1";
const FH_BUCKET: &str = "bench-p5fh";
const FH_STREAM: &str = "bench-p5fh";
const KS_STREAM: &str = "bench-p5ks";
const S3_BUCKET: &str = "bench-p5s3";
const KS_SHARDS: usize = 100;

/// One JSON-protocol call to moto (`target` as in `X-Amz-Target`); moto does not check
/// signatures, so a fixed `Authorization` header does. Returns (status, body).
fn json_call(port: u16, service: &str, target: &str, body: &str) -> Result<(u16, String), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connecting to moto: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let head = format!(
        "POST / HTTP/1.1\r\nHost: {service}.{REGION}.amazonaws.com\r\nX-Amz-Target: {target}\r\n\
         Content-Type: application/x-amz-json-1.1\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=testing/20260101/{REGION}/{service}/aws4_request, SignedHeaders=host, Signature=0\r\n\
         Connection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(head.as_bytes())
        .map_err(|e| format!("writing to moto: {e}"))?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)
        .map_err(|e| format!("reading moto's answer: {e}"))?;
    let status = std::str::from_utf8(resp.get(9..12).unwrap_or_default())
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let split = find(&resp, b"\r\n\r\n").map_or(resp.len(), |i| i + 4);
    Ok((status, String::from_utf8_lossy(&resp[split..]).into_owned()))
}

fn ok_call(port: u16, service: &str, target: &str, body: &str) -> Result<(), String> {
    match json_call(port, service, target, body)? {
        (200, _) => Ok(()),
        (status, text) => Err(format!("{target}: HTTP {status}: {text}")),
    }
}

fn create_bucket(port: u16, bucket: &str) -> Result<(), String> {
    match raw_http(port, "PUT", &format!("/{bucket}"), b"") {
        (200, _) => Ok(()),
        (status, body) => Err(format!(
            "creating bucket {bucket}: HTTP {status}: {}",
            String::from_utf8_lossy(&body)
        )),
    }
}

/// Lines (newlines) in every object of `bucket`, read one object at a time.
fn bucket_lines(port: u16, bucket: &str) -> Result<usize, String> {
    let mut lines = 0;
    let mut token: Option<String> = None;
    for _ in 0..10_000 {
        let mut path = format!("/{bucket}?list-type=2&max-keys=1000");
        if let Some(t) = &token {
            path.push_str("&continuation-token=");
            path.push_str(&url_escape(t));
        }
        let (status, body) = raw_http(port, "GET", &path, b"");
        if status != 200 {
            return Err(format!("listing {bucket}: HTTP {status}"));
        }
        let text = String::from_utf8_lossy(&body).into_owned();
        for key in text
            .split("<Key>")
            .skip(1)
            .filter_map(|s| s.split("</Key>").next())
        {
            let (status, data) = raw_http(port, "GET", &format!("/{bucket}/{key}"), b"");
            if status != 200 {
                return Err(format!("reading {bucket}/{key}: HTTP {status}"));
            }
            lines += data.iter().filter(|&&b| b == b'\n').count();
        }
        token = text
            .split("<NextContinuationToken>")
            .nth(1)
            .and_then(|s| s.split("</NextContinuationToken>").next())
            .map(str::to_string);
        if token.is_none() {
            return Ok(lines);
        }
    }
    Err(format!("listing {bucket} did not end within 10000 pages"))
}

fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Creates the destinations in moto and returns the wanted pipelines.
#[allow(clippy::too_many_arguments)]
pub(crate) fn pipelines(
    want: &dyn Fn(&str) -> bool,
    kube: &Kube,
    proxy: &FaultProxy,
    moto: &Moto,
    dir: &Path,
    containers: &Path,
    hex: &str,
    lines: usize,
    tail: &TailOpts,
) -> Result<Vec<Pipeline>, String> {
    let mut v = Vec::new();
    if !NAMES.iter().any(|n| want(n)) {
        return Ok(v);
    }
    let (pod, ns, container) = ("api-5468c5d4d7-a5x7q", "default", "nginx");
    let f = containers.join(format!("{pod}_{ns}_{container}-{hex}.log"));
    let bytes = write_docker_nginx(&f, lines).map_err(|e| format!("writing the workload: {e}"))?;
    kube.server.add_pod(pod_json(
        pod,
        ns,
        container,
        "nginx:1.17-alpine",
        hex,
        serde_json::json!({
            "fluentbit.io/parser": "nginx",
            "kubernetes.io/psp": "eks.privileged"
        }),
    ));
    let docker = "    Parser docker\n    Docker_Mode On\n";
    let pipeline = |name, what, output: String| Pipeline {
        name,
        what,
        // moto is slow: give the outputs all the time they need to deliver everything.
        config: config(
            &f,
            tail,
            docker,
            600,
            &kube.filter_to("    K8S-Logging.Parser On\n", &output),
        ),
        file: f.clone(),
        bytes,
        lines,
    };
    let common = format!(
        "    Match *\n    region {REGION}\n    endpoint {}\n",
        proxy.endpoint()
    );
    if want("p5fh") {
        create_bucket(moto.port, FH_BUCKET)?;
        ok_call(
            moto.port,
            "firehose",
            "Firehose_20150804.CreateDeliveryStream",
            &serde_json::json!({
                "DeliveryStreamName": FH_STREAM,
                "ExtendedS3DestinationConfiguration": {
                    "BucketARN": format!("arn:aws:s3:::{FH_BUCKET}"),
                    "RoleARN": "arn:aws:iam::123456789012:role/firehose",
                }
            })
            .to_string(),
        )?;
        v.push(pipeline(
            "P5FH",
            "seed → kinesis_firehose (moto)",
            format!(
                "[OUTPUT]\n    Name kinesis_firehose\n{common}    delivery_stream {FH_STREAM}\n    time_key time\n    time_key_format %Y-%m-%dT%H:%M:%S.%3N\n"
            ),
        ));
    }
    if want("p5ks") {
        ok_call(
            moto.port,
            "kinesis",
            "Kinesis_20131202.CreateStream",
            // Many shards: moto finds a shard's last sequence number by listing all its
            // records, so a put costs as much as the shard holds (quadratic on one shard).
            &serde_json::json!({"StreamName": KS_STREAM, "ShardCount": KS_SHARDS}).to_string(),
        )?;
        v.push(pipeline(
            "P5KS",
            "seed → kinesis_streams (moto)",
            format!("[OUTPUT]\n    Name kinesis_streams\n{common}    stream {KS_STREAM}\n"),
        ));
    }
    if want("p5s3") {
        create_bucket(moto.port, S3_BUCKET)?;
        let store = dir.join("p5s3-store");
        v.push(pipeline(
            "P5S3",
            "seed → s3 (moto)",
            format!(
                "[OUTPUT]\n    Name s3\n{common}    bucket {S3_BUCKET}\n    store_dir {}\n",
                store.display()
            ),
        ));
    }
    if want("p5os") {
        let srv = BULK.get_or_init(|| BulkServer::start(&["--discard"]));
        v.push(pipeline(
            "P5OS",
            "seed → opensearch (_bulk test server)",
            format!(
                "[OUTPUT]\n    Name opensearch\n    Match *\n    Host 127.0.0.1\n    Port {}\n    Logstash_Format On\n    Replace_Dots On\n",
                srv.port
            ),
        ));
    }
    Ok(v)
}

/// P5OS's note: CPU per million events, what the `_bulk` server stored and was sent.
fn search_note(p: &Pipeline, runs: usize, cpu: f64) -> Result<String, String> {
    let srv = BULK.get().ok_or("P5OS: the bulk server is not running")?;
    let (docs, requests, bytes) = srv.totals();
    let runs = runs.max(1);
    if docs != (p.lines * runs) as u64 {
        return Err(format!(
            "P5OS: {docs} documents stored, expected {}",
            p.lines * runs
        ));
    }
    Ok(format!(
        "{}: {:.2} CPU s per million events delivered, {:.1} MB of _bulk bodies per run ({} requests, {:.0} bytes per event)",
        p.name,
        cpu / p.lines.max(1) as f64 * 1e6,
        bytes as f64 / runs as f64 / 1e6,
        requests / runs as u64,
        bytes as f64 / (p.lines * runs).max(1) as f64,
    ))
}

/// After pipeline `p`'s runs (`calls`: the requests the proxy saw during them): the note with
/// CPU per million events and bytes sent, or why the run is wrong.
pub(crate) fn note(
    p: &Pipeline,
    moto: &Moto,
    calls: &[Seen],
    runs: usize,
    cpu: f64,
) -> Option<Result<String, String>> {
    let (op, check_bucket) = match p.name {
        "P5FH" => ("PutRecordBatch", Some(FH_BUCKET)),
        "P5KS" => ("PutRecords", None),
        "P5S3" => ("PUT", Some(S3_BUCKET)),
        "P5OS" => return Some(search_note(p, runs, cpu)),
        _ => return None,
    };
    let puts: Vec<&Seen> = calls
        .iter()
        .filter(|c| match op {
            "PUT" => c.method == "PUT" || c.method == "POST",
            _ => c.operation.ends_with(op),
        })
        .collect();
    if let Some(bad) = puts.iter().find(|c| c.status != Some(200)) {
        return Some(Err(format!(
            "{}: {} answered {:?}",
            p.name, bad.operation, bad.status
        )));
    }
    if let Some(bucket) = check_bucket {
        match bucket_lines(moto.port, bucket) {
            Ok(n) if n == p.lines * runs => {}
            Ok(n) => {
                return Some(Err(format!(
                    "{}: {n} lines in bucket {bucket}, expected {}",
                    p.name,
                    p.lines * runs
                )))
            }
            Err(e) => return Some(Err(format!("{}: {e}", p.name))),
        }
    }
    let body: usize = puts.iter().map(|c| c.body_len).sum();
    let runs = runs.max(1);
    Some(Ok(format!(
        "{}: {:.2} CPU s per million events delivered, {:.1} MB of request bodies per run ({} calls, {:.0} bytes per event)",
        p.name,
        cpu / p.lines.max(1) as f64 * 1e6,
        body as f64 / runs as f64 / 1e6,
        puts.len() / runs,
        body as f64 / (p.lines * runs).max(1) as f64,
    )))
}
