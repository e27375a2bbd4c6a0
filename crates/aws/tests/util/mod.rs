//! Test harness for the AWS outputs: moto's server on a free 127.0.0.1 port, a small HTTP
//! proxy in front of it that records requests and injects faults, and builders for outputs and
//! batches. Every wait is bounded; only 127.0.0.1 is used.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use logferry_core::config::{Entry, Section, SectionKind, Span};
use logferry_core::{Chunk, EventTime, Map, Record, Tag};
use logferry_engine::metrics::PluginMetrics;
use logferry_engine::{Batch, FlushResult, Output};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Region every test uses.
pub const REGION: &str = "us-east-1";
#[allow(unused_imports)]
pub use logferry_aws::testing::{
    answers, bucket_objects, create_bucket, dechunk, find, free_port, hermetic_env, python,
    raw_http, Moto,
};

/// A fault the proxy answers with instead of forwarding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// HTTP 400 `ThrottlingException` (JSON protocols).
    Throttle,
    /// HTTP 500 `ServiceUnavailableException`.
    ServerError,
    /// Firehose/Kinesis partial failure: the records at odd positions of the call's `Records`
    /// are held back from moto and reported failed (`FailedPutCount`/`FailedRecordCount`).
    PartialOdd,
}

/// One request the proxy saw.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// Header names lowercased.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    /// Whether the proxy answered with a fault instead of forwarding it.
    pub faulted: bool,
    /// The status of the answer (the fault's, or moto's).
    pub status: u16,
}

impl Seen {
    /// `X-Amz-Target` (JSON protocols), or `Action=` of a query body, or `METHOD path`.
    pub fn operation(&self) -> String {
        if let Some(t) = self.headers.get("x-amz-target") {
            return t.rsplit('.').next().unwrap_or(t).to_string();
        }
        let body = String::from_utf8_lossy(&self.body);
        if let Some(a) = body.split('&').find_map(|kv| kv.strip_prefix("Action=")) {
            return a.to_string();
        }
        format!("{} {}", self.method, self.path)
    }

    /// The access key id the request was signed with.
    pub fn access_key(&self) -> Option<String> {
        let auth = self.headers.get("authorization")?;
        let cred = auth.split("Credential=").nth(1)?;
        Some(cred.split('/').next()?.to_string())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// Which requests get a fault: those of `operation` whose 0-based index among that operation's
/// requests is in `nth`.
#[derive(Clone, Debug)]
pub struct FaultPlan {
    pub operation: String,
    pub nth: Vec<usize>,
    pub fault: Fault,
}

/// A recording, fault-injecting HTTP/1.1 proxy on 127.0.0.1 in front of `upstream`.
pub struct Proxy {
    pub port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Starts a proxy to 127.0.0.1:`upstream` applying `plan`.
    pub async fn start(upstream: u16, plan: Option<FaultPlan>) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let counts: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let plan = Arc::new(plan);
        let log = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let (log, counts, plan) =
                    (Arc::clone(&log), Arc::clone(&counts), Arc::clone(&plan));
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(
                        Duration::from_secs(60),
                        serve(sock, upstream, log, counts, plan),
                    )
                    .await;
                });
            }
        });
        Proxy { port, seen, task }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Requests of one operation.
    pub fn calls(&self, operation: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.operation() == operation)
            .collect()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    mut sock: tokio::net::TcpStream,
    upstream: u16,
    log: Arc<Mutex<Vec<Seen>>>,
    counts: Arc<Mutex<HashMap<String, usize>>>,
    plan: Arc<Option<FaultPlan>>,
) -> std::io::Result<()> {
    let Some(req) = read_request(&mut sock).await? else {
        return Ok(());
    };
    let op = req.operation();
    let n = {
        let mut c = counts.lock().unwrap();
        let e = c.entry(op.clone()).or_insert(0);
        *e += 1;
        *e - 1
    };
    let fault = plan
        .as_ref()
        .as_ref()
        .filter(|p| p.operation == op && p.nth.contains(&n))
        .map(|p| p.fault);
    let response = match fault {
        Some(Fault::Throttle) => {
            json_error(400, "Bad Request", "ThrottlingException", "Rate exceeded")
        }
        Some(Fault::ServerError) => json_error(
            500,
            "Internal Server Error",
            "ServiceUnavailableException",
            "injected",
        ),
        Some(Fault::PartialOdd) => partial_odd(&req, upstream).await?,
        None => forward(&req, upstream).await?,
    };
    let mut seen = req;
    seen.faulted = fault.is_some();
    seen.status = std::str::from_utf8(response.get(9..12).unwrap_or_default())
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    log.lock().unwrap().push(seen);
    sock.write_all(&response).await?;
    sock.shutdown().await
}

fn json_error(status: u16, text: &str, code: &str, message: &str) -> Vec<u8> {
    let body = format!(r#"{{"__type":"{code}","message":"{message}"}}"#);
    format!(
        "HTTP/1.1 {status} {text}\r\nContent-Type: application/x-amz-json-1.1\r\nx-amzn-ErrorType: {code}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

async fn read_request(sock: &mut tokio::net::TcpStream) -> std::io::Result<Option<Seen>> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 64 * 1024];
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i;
        }
        let n = sock.read(&mut tmp).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let method = first.next().unwrap_or("").to_string();
    let path = first.next().unwrap_or("").to_string();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = buf[head_end + 4..].to_vec();
    if headers
        .get("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        loop {
            if let Some(decoded) = dechunk(&body) {
                body = decoded;
                break;
            }
            let n = sock.read(&mut tmp).await?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&tmp[..n]);
        }
    } else {
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while body.len() < len {
            let n = sock.read(&mut tmp).await?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&tmp[..n]);
        }
    }
    Ok(Some(Seen {
        method,
        path,
        headers,
        body,
        faulted: false,
        status: 0,
    }))
}

async fn forward(req: &Seen, upstream: u16) -> std::io::Result<Vec<u8>> {
    let mut up = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await?;
    let mut head = format!("{} {} HTTP/1.1\r\n", req.method, req.path);
    for (k, v) in &req.headers {
        if k == "connection" || k == "transfer-encoding" || k == "content-length" {
            continue;
        }
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n",
        req.body.len()
    ));
    up.write_all(head.as_bytes()).await?;
    up.write_all(&req.body).await?;
    let mut resp = Vec::new();
    up.read_to_end(&mut resp).await?;
    Ok(resp)
}

/// Forwards the even-positioned records and answers as if the odd ones failed.
async fn partial_odd(req: &Seen, upstream: u16) -> std::io::Result<Vec<u8>> {
    let mut body = req.json();
    let records = body["Records"].as_array().cloned().unwrap_or_default();
    let kept: Vec<serde_json::Value> = records.iter().step_by(2).cloned().collect();
    body["Records"] = serde_json::Value::Array(kept);
    let mut fwd = req.clone();
    fwd.body = serde_json::to_vec(&body).unwrap();
    let resp = forward(&fwd, upstream).await?;
    let split = find(&resp, b"\r\n\r\n").unwrap() + 4;
    let upstream_json: serde_json::Value = serde_json::from_slice(&resp[split..]).unwrap();
    let (list_key, count_key, code) = if upstream_json.get("RequestResponses").is_some() {
        (
            "RequestResponses",
            "FailedPutCount",
            "ServiceUnavailableException",
        )
    } else {
        (
            "Records",
            "FailedRecordCount",
            "ProvisionedThroughputExceededException",
        )
    };
    let ok = upstream_json[list_key]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut ok = ok.into_iter();
    let mut merged = Vec::new();
    let mut failed = 0;
    for i in 0..records.len() {
        if i % 2 == 0 {
            merged.push(ok.next().unwrap_or(serde_json::Value::Null));
        } else {
            failed += 1;
            merged.push(serde_json::json!({"ErrorCode": code, "ErrorMessage": "injected"}));
        }
    }
    let mut out = upstream_json.clone();
    out[list_key] = serde_json::Value::Array(merged);
    out[count_key] = serde_json::json!(failed);
    let text = serde_json::to_string(&out).unwrap();
    Ok(format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    )
    .into_bytes())
}

/// A section of `kv` entries (as the config readers would produce).
pub fn section(kv: &[(&str, &str)]) -> Section {
    let mut s = Section::new(SectionKind::Output, Span::command_line());
    for (k, v) in kv {
        s.push(*k, *v, Span::command_line());
    }
    s
}

/// The entries of a section, as the pipeline hands them to `build`.
pub fn entries(s: &Section) -> Vec<&Entry> {
    s.entries.iter().collect()
}

/// A batch of one chunk.
pub fn batch(tag: &str, records: Vec<Record>) -> Batch {
    let tag: Tag = Tag::from(tag);
    let chunk = Arc::new(Chunk::new(tag.clone(), records));
    Batch::new(tag, vec![chunk])
}

/// A batch of `records` under `tag` in chunks of `per_chunk`, every chunk packed (as records
/// that waited for an output are) but the one at `plain`.
#[allow(dead_code)]
pub fn packed_batch(tag: &str, records: &[Record], per_chunk: usize, plain: usize) -> Batch {
    let tag: Tag = Tag::from(tag);
    let chunks = records
        .chunks(per_chunk)
        .enumerate()
        .map(|(i, part)| {
            let mut c = Chunk::new(tag.clone(), part.to_vec());
            if i != plain {
                c.pack();
            }
            Arc::new(c)
        })
        .collect();
    Batch::new(tag, chunks)
}

/// A record with `log` = `msg` at `time`.
pub fn record(time: EventTime, msg: &str) -> Record {
    let mut m = Map::new();
    m.insert("log", msg);
    Record::new(time, m)
}

/// Flushes as the engine does: again after each `Retry`, up to `attempts` times. Returns the
/// results in order.
pub async fn flush_until_done(out: &dyn Output, b: &Batch, attempts: usize) -> Vec<FlushResult> {
    let mut results = Vec::new();
    for _ in 0..attempts {
        let r = tokio::time::timeout(Duration::from_secs(120), out.flush(b))
            .await
            .expect("flush took more than 120 s");
        let again = matches!(r, FlushResult::Retry(_));
        results.push(r);
        if !again {
            break;
        }
    }
    results
}

/// Counters for an output under test.
pub fn metrics() -> Arc<PluginMetrics> {
    PluginMetrics::new("test.0")
}

/// A unique suffix for resource names within one moto.
pub fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("{prefix}-{}", N.fetch_add(1, Ordering::Relaxed))
}

/// A second, independent CloudWatch Logs client for reading back.
pub fn logs_client(endpoint: &str) -> aws_sdk_cloudwatchlogs::Client {
    let conf = aws_sdk_cloudwatchlogs::Config::builder()
        .behavior_version_latest()
        .region(aws_sdk_cloudwatchlogs::config::Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(aws_credential_types::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .http_client(logferry_aws::client::http_client())
        .build();
    aws_sdk_cloudwatchlogs::Client::from_conf(conf)
}

/// Every event of a stream, oldest first: (timestamp ms, message).
pub async fn read_events(
    client: &aws_sdk_cloudwatchlogs::Client,
    group: &str,
    stream: &str,
) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..1000 {
        let page = client
            .get_log_events()
            .log_group_name(group)
            .log_stream_name(stream)
            .start_from_head(true)
            .set_next_token(token.clone())
            .send()
            .await
            .unwrap();
        let events = page.events();
        for e in events {
            out.push((
                e.timestamp().unwrap_or(0),
                e.message().unwrap_or("").to_string(),
            ));
        }
        let next = page.next_forward_token().map(str::to_string);
        if events.is_empty() || next.is_none() || next == token {
            return out;
        }
        token = next;
    }
    panic!("get_log_events did not end within 1000 pages");
}

/// A Firehose client for test setup.
pub fn firehose_client(endpoint: &str) -> aws_sdk_firehose::Client {
    let conf = aws_sdk_firehose::Config::builder()
        .behavior_version_latest()
        .region(aws_sdk_firehose::config::Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(aws_credential_types::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .http_client(logferry_aws::client::http_client())
        .build();
    aws_sdk_firehose::Client::from_conf(conf)
}

/// A Kinesis client for setup and reading back.
pub fn kinesis_client(endpoint: &str) -> aws_sdk_kinesis::Client {
    let conf = aws_sdk_kinesis::Config::builder()
        .behavior_version_latest()
        .region(aws_sdk_kinesis::config::Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(aws_credential_types::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .http_client(logferry_aws::client::http_client())
        .build();
    aws_sdk_kinesis::Client::from_conf(conf)
}

/// Record counts of each call of `operation` that moto answered 200 (`Records` in the body).
pub fn record_counts(p: &Proxy, operation: &str) -> Vec<usize> {
    p.calls(operation)
        .iter()
        .filter(|s| s.status == 200)
        .map(|s| s.json()["Records"].as_array().map_or(0, Vec::len))
        .collect()
}
