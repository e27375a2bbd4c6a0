//! Helpers of the integration tests: a raw HTTP/1.1 client over TCP, and scraping with a
//! Prometheus text parser plus a strict line check of the 0.0.4 format.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const WAIT: Duration = Duration::from_secs(10);

pub struct Reply {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// One HTTP/1.1 request on its own connection, read to the end.
pub async fn request(addr: SocketAddr, method: &str, path: &str, extra: &[(&str, &str)]) -> Reply {
    let go = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
        if method == "POST" || method == "PUT" {
            req.push_str("Content-Type: application/json\r\nContent-Length: 2\r\n");
        }
        for (k, v) in extra {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        if method == "POST" || method == "PUT" {
            req.push_str("{}");
        }
        s.write_all(req.as_bytes()).await.expect("write");
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.expect("read");
        String::from_utf8(raw).expect("utf-8 reply")
    };
    let raw = tokio::time::timeout(WAIT, go).await.expect("reply in time");
    let (head, body) = raw.split_once("\r\n\r\n").expect("head and body");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers: HashMap<_, _> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    assert_ne!(
        headers.get("transfer-encoding").map(String::as_str),
        Some("chunked"),
        "bodies are sent whole"
    );
    Reply {
        status,
        headers,
        body: body.to_string(),
    }
}

pub async fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "GET", path, &[]).await
}

/// Checks Prometheus text format 0.0.4 line by line, strictly: only `# HELP`, `# TYPE` and sample
/// lines; each family typed once, before its samples, under the samples' own name; well-formed
/// labels and numeric values.
pub fn check_text_004(text: &str) {
    let mut typed: HashMap<String, String> = HashMap::new();
    let mut current: Option<String> = None;
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            && !n.starts_with(|c: char| c.is_ascii_digit())
    };
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP has text");
            assert!(valid_name(name) && !help.is_empty(), "bad HELP: {line}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE has a kind");
            assert!(valid_name(name), "bad TYPE: {line}");
            assert!(
                ["counter", "gauge", "untyped", "histogram"].contains(&kind),
                "bad type: {line}"
            );
            assert!(
                typed.insert(name.to_string(), kind.to_string()).is_none(),
                "typed twice: {name}"
            );
            current = Some(name.to_string());
            continue;
        }
        assert!(!line.starts_with('#'), "stray comment: {line}");
        // `series value [timestamp]` (Fluent Bit's v1 endpoint stamps samples in ms).
        let split_at = match line.find('}') {
            Some(i) => i + 1,
            None => line.find(' ').expect("sample has a value"),
        };
        let (series, rest) = line.split_at(split_at);
        let mut fields = rest.split_whitespace();
        let value = fields.next().expect("sample has a value");
        value
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        if let Some(ts) = fields.next() {
            ts.parse::<u64>()
                .unwrap_or_else(|_| panic!("bad timestamp: {line}"));
        }
        assert!(fields.next().is_none(), "trailing text: {line}");
        let name = match series.split_once('{') {
            Some((name, labels)) => {
                let labels = labels.strip_suffix('}').expect("labels close");
                for pair in labels.split("\",").filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once("=\"").expect("label=\"value\"");
                    assert!(valid_name(k), "bad label name: {line}");
                    assert!(!v.is_empty() || pair.ends_with('"'), "bad label: {line}");
                }
                assert!(labels.ends_with('"'), "bad labels: {line}");
                name
            }
            None => series,
        };
        let family = current.as_deref().unwrap_or_default();
        let in_family = name == family
            || (typed.get(family).is_some_and(|k| k == "histogram")
                && ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|s| name.strip_suffix(s) == Some(family)));
        assert!(in_family, "sample outside its family: {line}");
    }
}

pub struct Scraped {
    pub samples: Vec<prometheus_parse::Sample>,
    pub text: String,
}

impl Scraped {
    /// The counter `metric{name=instance}`; it must be typed a counter.
    pub fn counter(&self, metric: &str, instance: &str) -> f64 {
        let s = self
            .samples
            .iter()
            .find(|s| s.metric == metric && s.labels.get("name") == Some(instance))
            .unwrap_or_else(|| panic!("no {metric}{{name={instance}}} in\n{}", self.text));
        match s.value {
            prometheus_parse::Value::Counter(v) => v,
            ref v => panic!("{metric} is not a counter: {v:?}"),
        }
    }

    pub fn gauge(&self, metric: &str) -> (f64, &prometheus_parse::Labels) {
        let s = self
            .samples
            .iter()
            .find(|s| s.metric == metric)
            .unwrap_or_else(|| panic!("no {metric} in\n{}", self.text));
        match s.value {
            prometheus_parse::Value::Gauge(v) => (v, &s.labels),
            ref v => panic!("{metric} is not a gauge: {v:?}"),
        }
    }

    /// A counter without a `name` label (`fluentbit_uptime`) and its labels.
    pub fn plain_counter(&self, metric: &str) -> (f64, &prometheus_parse::Labels) {
        let s = self
            .samples
            .iter()
            .find(|s| s.metric == metric)
            .unwrap_or_else(|| panic!("no {metric} in\n{}", self.text));
        match s.value {
            prometheus_parse::Value::Counter(v) => (v, &s.labels),
            ref v => panic!("{metric} is not a counter: {v:?}"),
        }
    }

    pub fn has(&self, metric: &str) -> bool {
        self.samples.iter().any(|s| s.metric == metric)
    }
}

pub async fn scrape(addr: SocketAddr, path: &str) -> Scraped {
    let r = get(addr, path).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.headers.get("content-type").map(String::as_str),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    check_text_004(&r.body);
    let scrape =
        prometheus_parse::Scrape::parse(r.body.lines().map(|l| Ok(l.to_string()))).expect("parses");
    Scraped {
        samples: scrape.samples,
        text: r.body,
    }
}
