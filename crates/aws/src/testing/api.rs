//! Plain HTTP calls to moto's server, for tests that read back what an output delivered
//! (moto does not check signatures, so a fixed `Authorization` header does).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// One HTTP/1.1 S3 request to 127.0.0.1:`port` with a dummy signature (moto does not check it); returns
/// (status, body). Bounded by a 30 s timeout.
pub fn raw_http(port: u16, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=testing/20250101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let status = std::str::from_utf8(&resp[9..12]).unwrap().parse().unwrap();
    let split = find(&resp, b"\r\n\r\n").unwrap() + 4;
    let headers = String::from_utf8_lossy(&resp[..split]).to_ascii_lowercase();
    let mut body = resp[split..].to_vec();
    if headers.contains("transfer-encoding: chunked") {
        body = dechunk(&body).unwrap();
    }
    (status, body)
}

/// Creates an S3 bucket in moto.
pub fn create_bucket(port: u16, bucket: &str) {
    let (status, body) = raw_http(port, "PUT", &format!("/{bucket}"), b"");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
}

/// Every object of a bucket, by key order: (key, content).
pub fn bucket_objects(port: u16, bucket: &str) -> Vec<(String, Vec<u8>)> {
    let (status, body) = raw_http(
        port,
        "GET",
        &format!("/{bucket}?list-type=2&max-keys=1000"),
        b"",
    );
    assert_eq!(status, 200);
    let text = String::from_utf8_lossy(&body).to_string();
    let mut keys: Vec<String> = text
        .split("<Key>")
        .skip(1)
        .filter_map(|s| s.split("</Key>").next())
        .map(str::to_string)
        .collect();
    keys.sort();
    keys.into_iter()
        .map(|k| {
            let (status, data) = raw_http(port, "GET", &format!("/{bucket}/{k}"), b"");
            assert_eq!(status, 200, "{k}");
            (k, data)
        })
        .collect()
}

/// The body of a complete chunked message, or `None` while incomplete.
pub fn dechunk(raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        let line_end = i + find(&raw[i..], b"\r\n")?;
        let size_text = String::from_utf8_lossy(&raw[i..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        i = line_end + 2;
        if size == 0 {
            return Some(out);
        }
        if raw.len() < i + size + 2 {
            return None;
        }
        out.extend_from_slice(&raw[i..i + size]);
        i += size + 2;
    }
}

/// Where `needle` first occurs in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A CloudWatch Logs call in `region` (`action` as in `X-Amz-Target: Logs_20140328.<action>`);
/// the JSON answer, or `Null` when it has none.
pub fn logs_call(
    port: u16,
    region: &str,
    action: &str,
    body: &serde_json::Value,
) -> serde_json::Value {
    let body = body.to_string();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
        return serde_json::Value::Null;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let head = format!(
        "POST / HTTP/1.1\r\nHost: logs.{region}.amazonaws.com\r\nX-Amz-Target: Logs_20140328.{action}\r\n\
         Content-Type: application/x-amz-json-1.1\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=testing/20260101/{region}/logs/aws4_request, SignedHeaders=host, Signature=0\r\n\
         Connection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    if s.write_all(head.as_bytes()).is_err() {
        return serde_json::Value::Null;
    }
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let Some(split) = find(&resp, b"\r\n\r\n") else {
        return serde_json::Value::Null;
    };
    let headers = String::from_utf8_lossy(&resp[..split]).to_ascii_lowercase();
    let mut payload = resp[split + 4..].to_vec();
    if headers.contains("transfer-encoding: chunked") {
        payload = dechunk(&payload).unwrap_or_default();
    }
    serde_json::from_slice(&payload).unwrap_or(serde_json::Value::Null)
}

/// Every event message of every stream of a log group in `region`, stream by stream, oldest
/// first.
pub fn log_messages(port: u16, region: &str, group: &str) -> Vec<String> {
    use serde_json::json;
    let mut out = Vec::new();
    let mut streams = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut req = json!({"logGroupName": group});
        if let Some(t) = &token {
            req["nextToken"] = json!(t);
        }
        let r = logs_call(port, region, "DescribeLogStreams", &req);
        for s in r["logStreams"].as_array().into_iter().flatten() {
            if let Some(n) = s["logStreamName"].as_str() {
                streams.push(n.to_string());
            }
        }
        match r["nextToken"].as_str() {
            Some(t) if token.as_deref() != Some(t) => token = Some(t.to_string()),
            _ => break,
        }
    }
    for stream in streams {
        let mut token: Option<String> = None;
        loop {
            let mut req =
                json!({"logGroupName": group, "logStreamName": stream, "startFromHead": true});
            if let Some(t) = &token {
                req["nextToken"] = json!(t);
            }
            let r = logs_call(port, region, "GetLogEvents", &req);
            let events = r["events"].as_array().cloned().unwrap_or_default();
            out.extend(
                events
                    .iter()
                    .filter_map(|e| e["message"].as_str().map(str::to_string)),
            );
            match r["nextForwardToken"].as_str() {
                Some(t) if !events.is_empty() && token.as_deref() != Some(t) => {
                    token = Some(t.to_string());
                }
                _ => break,
            }
        }
    }
    out
}
