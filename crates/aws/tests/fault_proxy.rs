//! The fault-injection proxy (`logferry_aws::testing::FaultProxy`) in front of moto's server:
//! every mode, answered in each service's protocol, mode switches taking effect on a kept-alive
//! connection, chunked and `Expect: 100-continue` bodies relayed, hanging and reset
//! connections, the errors as the SDK and logferry's classifier see them, and a clean drop.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use aws_sdk_kinesis::error::ProvideErrorMetadata;
use logferry_aws::client::{AwsSettings, LazyClient};
use logferry_aws::retry::{classify, Class};
use logferry_aws::testing::{FaultProxy, Mode};
use util::*;

/// A minimal HTTP/1.1 client on one kept-alive connection, independent of the proxy's code.
struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

enum Body<'a> {
    None,
    Length(&'a [u8]),
    Chunked(&'a [&'a [u8]]),
    /// `Expect: 100-continue`: the body is sent after the interim answer.
    Expect(&'a [u8]),
}

impl Conn {
    fn open(addr: SocketAddr) -> Conn {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Conn { s, buf: Vec::new() }
    }

    fn more(&mut self) {
        let mut tmp = [0u8; 65536];
        let n = self.s.read(&mut tmp).unwrap();
        assert!(n > 0, "connection closed");
        self.buf.extend_from_slice(&tmp[..n]);
    }

    fn line(&mut self) -> String {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let l = String::from_utf8_lossy(&self.buf[..i]).to_string();
                self.buf.drain(..i + 2);
                return l;
            }
            self.more();
        }
    }

    fn take(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            self.more();
        }
        self.buf.drain(..n).collect()
    }

    fn head(&mut self) -> (u16, Vec<(String, String)>) {
        let status = self.line();
        let code = status.split(' ').nth(1).unwrap().parse().unwrap();
        let mut headers = Vec::new();
        loop {
            let l = self.line();
            if l.is_empty() {
                return (code, headers);
            }
            let (k, v) = l.split_once(':').unwrap();
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }

    fn send(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: Body<'_>) {
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        match &body {
            Body::None => {}
            Body::Length(b) => head.push_str(&format!("Content-Length: {}\r\n", b.len())),
            Body::Chunked(_) => head.push_str("Transfer-Encoding: chunked\r\n"),
            Body::Expect(b) => head.push_str(&format!(
                "Content-Length: {}\r\nExpect: 100-continue\r\n",
                b.len()
            )),
        }
        head.push_str("\r\n");
        self.s.write_all(head.as_bytes()).unwrap();
        match body {
            Body::None => {}
            Body::Length(b) => self.s.write_all(b).unwrap(),
            Body::Chunked(chunks) => {
                for c in chunks {
                    self.s
                        .write_all(format!("{:x}\r\n", c.len()).as_bytes())
                        .unwrap();
                    self.s.write_all(c).unwrap();
                    self.s.write_all(b"\r\n").unwrap();
                }
                self.s.write_all(b"0\r\n\r\n").unwrap();
            }
            Body::Expect(b) => {
                let (status, _) = self.head();
                assert_eq!(status, 100, "the interim answer comes first");
                self.s.write_all(b).unwrap();
            }
        }
    }

    fn response(&mut self, method: &str) -> Response {
        let (status, headers) = self.head();
        let get = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.clone())
        };
        let body = if method == "HEAD" {
            Vec::new()
        } else if get("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
            let mut out = Vec::new();
            loop {
                let size = usize::from_str_radix(self.line().trim(), 16).unwrap();
                if size == 0 {
                    while !self.line().is_empty() {}
                    break out;
                }
                out.extend(self.take(size));
                assert_eq!(self.line(), "");
            }
        } else {
            let n: usize = get("content-length")
                .expect("a kept-alive answer has a length")
                .parse()
                .unwrap();
            self.take(n)
        };
        Response {
            status,
            headers,
            body,
        }
    }

    fn call(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Body<'_>,
    ) -> Response {
        self.send(method, path, headers, body);
        self.response(method)
    }
}

const S3_AUTH: &str = "AWS4-HMAC-SHA256 Credential=testing/20250101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00";
const KINESIS_AUTH: &str = "AWS4-HMAC-SHA256 Credential=testing/20250101/us-east-1/kinesis/aws4_request, SignedHeaders=host, Signature=00";

fn s3(c: &mut Conn, method: &str, path: &str, body: Body<'_>) -> Response {
    c.call(method, path, &[("Authorization", S3_AUTH)], body)
}

fn kinesis_list_streams(c: &mut Conn) -> Response {
    c.call(
        "POST",
        "/",
        &[
            ("Authorization", KINESIS_AUTH),
            ("X-Amz-Target", "Kinesis_20131202.ListStreams"),
            ("Content-Type", "application/x-amz-json-1.1"),
        ],
        Body::Length(b"{}"),
    )
}

#[test]
fn every_mode_on_one_kept_alive_connection_in_each_protocol() {
    let moto = Moto::start();
    let proxy = FaultProxy::start(moto.addr());
    let mut c = Conn::open(proxy.addr());

    // Pass: S3 (REST-XML) with Content-Length, chunked and 100-continue bodies, and JSON.
    assert_eq!(s3(&mut c, "PUT", "/fp-bucket", Body::None).status, 200);
    let put = s3(
        &mut c,
        "PUT",
        "/fp-bucket/chunked",
        Body::Chunked(&[b"hello ", b"chunked ", b"world"]),
    );
    assert_eq!(put.status, 200, "{}", put.text());
    let big = vec![b'z'; 3 << 20];
    assert_eq!(
        s3(&mut c, "PUT", "/fp-bucket/expect", Body::Expect(&big)).status,
        200
    );
    let got = s3(&mut c, "GET", "/fp-bucket/chunked", Body::None);
    assert_eq!(
        (got.status, got.text().as_str()),
        (200, "hello chunked world")
    );
    let got = s3(&mut c, "GET", "/fp-bucket/expect", Body::None);
    assert_eq!(got.status, 200);
    assert!(got.body == big, "3 MiB relayed whole");
    let head = s3(&mut c, "HEAD", "/fp-bucket/expect", Body::None);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("3145728"));
    let list = kinesis_list_streams(&mut c);
    assert_eq!(list.status, 200, "{}", list.text());
    assert!(list.json()["StreamNames"].is_array());

    // Throttle.
    proxy.set_mode(Mode::Throttle);
    let r = kinesis_list_streams(&mut c);
    assert_eq!(r.status, 400);
    assert_eq!(r.header("content-type"), Some("application/x-amz-json-1.1"));
    assert_eq!(
        r.json(),
        serde_json::json!({"__type": "ThrottlingException", "message": "Rate exceeded"})
    );
    let r = s3(&mut c, "PUT", "/fp-bucket/throttled", Body::Length(b"lost"));
    assert_eq!(r.status, 503);
    assert!(
        r.text().contains(
            "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message>"
        ),
        "{}",
        r.text()
    );

    // Unavailable.
    proxy.set_mode(Mode::Unavailable);
    let r = kinesis_list_streams(&mut c);
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["__type"], "ServiceUnavailableException");
    let r = s3(&mut c, "GET", "/fp-bucket/chunked", Body::None);
    assert_eq!(r.status, 503);
    assert!(r.text().contains("<Code>ServiceUnavailable</Code>"));

    // Any error.
    proxy.set_mode(Mode::access_denied());
    let r = kinesis_list_streams(&mut c);
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["__type"], "AccessDeniedException");
    let denied = Mode::error(403, "AccessDenied", "Access Denied");
    proxy.set_mode(denied.clone());
    let r = s3(&mut c, "GET", "/fp-bucket/chunked", Body::None);
    assert_eq!(r.status, 403);
    assert!(r
        .text()
        .contains("<Code>AccessDenied</Code><Message>Access Denied</Message>"));

    // Back to Pass: the throttled PUT never reached moto.
    proxy.set_mode(Mode::Pass);
    let r = s3(&mut c, "GET", "/fp-bucket/throttled", Body::None);
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(r.text().contains("NoSuchKey"));

    assert_eq!(
        proxy.connections(),
        1,
        "one kept-alive connection throughout"
    );
    assert_eq!(proxy.requests(&Mode::Pass), 8);
    assert_eq!(proxy.requests(&Mode::Throttle), 2);
    assert_eq!(proxy.requests(&Mode::Unavailable), 2);
    assert_eq!(proxy.requests(&Mode::access_denied()), 1);
    assert_eq!(proxy.requests(&denied), 1);
    assert_eq!(proxy.requests(&Mode::Hang), 0);
    assert_eq!(proxy.total_requests(), 14);
    let seen = proxy.seen();
    assert_eq!(seen[1].body_len, "hello chunked world".len(), "de-chunked");
    assert_eq!(seen[6].operation, "ListStreams");
    assert_eq!((seen[6].status, &seen[6].mode), (Some(200), &Mode::Pass));
    assert_eq!(
        (seen[7].status, &seen[7].mode),
        (Some(400), &Mode::Throttle)
    );
    assert_eq!(seen[8].status, Some(503));
}

#[test]
fn hang_holds_the_request_and_reset_sends_a_tcp_reset() {
    let moto = Moto::start();
    let proxy = FaultProxy::start(moto.addr());
    proxy.set_mode(Mode::Hang);
    let mut hung = Conn::open(proxy.addr());
    hung.send(
        "POST",
        "/",
        &[
            ("Authorization", KINESIS_AUTH),
            ("X-Amz-Target", "Kinesis_20131202.ListStreams"),
            ("Content-Type", "application/x-amz-json-1.1"),
        ],
        Body::Length(b"{}"),
    );
    hung.s
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let mut b = [0u8; 16];
    let err = hung.s.read(&mut b).unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{err}"
    );
    assert_eq!(proxy.requests(&Mode::Hang), 1);

    // A hung connection does not hold others back.
    proxy.set_mode(Mode::Pass);
    assert_eq!(
        kinesis_list_streams(&mut Conn::open(proxy.addr())).status,
        200
    );
    // ... and it still gets nothing.
    assert!(hung.s.read(&mut b).is_err());

    proxy.set_mode(Mode::Reset);
    let mut reset = Conn::open(proxy.addr());
    reset.send("GET", "/fp/x", &[("Authorization", S3_AUTH)], Body::None);
    let err = reset.s.read(&mut b).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
    assert_eq!(proxy.requests(&Mode::Reset), 1);
    assert_eq!(proxy.requests(&Mode::Pass), 1);

    // Dropping the proxy closes the hung connection and the port, promptly.
    let addr = proxy.addr();
    let t = Instant::now();
    drop(proxy);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    hung.s
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    match hung.s.read(&mut b) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("the hung connection is still open: {other:?}"),
    }
    assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_sees_each_fault_as_the_classifier_expects() {
    let moto = Moto::start();
    let proxy = FaultProxy::start(moto.addr());
    hermetic_env();
    let settings = AwsSettings::local(REGION, Some(&proxy.endpoint()));
    let kinesis = LazyClient::<aws_sdk_kinesis::Client>::new(settings.clone());
    let kinesis = kinesis.get().await;
    let s3 = LazyClient::<aws_sdk_s3::Client>::new(settings);
    let s3 = s3.get().await;
    let bucket = unique("fp-sdk");
    s3.create_bucket().bucket(&bucket).send().await.unwrap();

    let put = || {
        s3.put_object()
            .bucket(&bucket)
            .key("k")
            .body(aws_sdk_s3::primitives::ByteStream::from_static(b"v"))
            .send()
    };
    let list = || kinesis.list_streams().send();
    assert!(list().await.is_ok());
    assert!(put().await.is_ok());

    // (mode, JSON class and code, S3 class and code)
    let cases = [
        (
            Mode::Throttle,
            Class::Throttled,
            Some("ThrottlingException"),
            Some("SlowDown"),
        ),
        (
            Mode::Unavailable,
            Class::Server,
            Some("ServiceUnavailableException"),
            Some("ServiceUnavailable"),
        ),
        (Mode::Reset, Class::Network, None, None),
        (
            Mode::access_denied(),
            Class::Credentials,
            Some("AccessDeniedException"),
            Some("AccessDeniedException"),
        ),
        (
            Mode::unrecognized_client(),
            Class::Credentials,
            Some("UnrecognizedClientException"),
            Some("UnrecognizedClientException"),
        ),
        (
            Mode::expired_token(),
            Class::Credentials,
            Some("ExpiredTokenException"),
            Some("ExpiredTokenException"),
        ),
        (
            Mode::signature_expired(),
            Class::Credentials,
            Some("InvalidSignatureException"),
            Some("InvalidSignatureException"),
        ),
        (
            Mode::error(
                403,
                "InvalidAccessKeyId",
                "The AWS Access Key Id you provided does not exist",
            ),
            Class::Credentials,
            Some("InvalidAccessKeyId"),
            Some("InvalidAccessKeyId"),
        ),
        (
            Mode::error(400, "ResourceNotFoundException", "Stream x not found"),
            Class::NotFound,
            Some("ResourceNotFoundException"),
            Some("ResourceNotFoundException"),
        ),
        (
            Mode::error(400, "ValidationException", "bad"),
            Class::Permanent,
            Some("ValidationException"),
            Some("ValidationException"),
        ),
    ];
    for (mode, class, json_code, s3_code) in cases {
        proxy.set_mode(mode.clone());
        let e = list().await.unwrap_err();
        assert_eq!(classify(&e), class, "{mode:?}: {e:?}");
        assert_eq!(e.code(), json_code, "{mode:?}");
        let e = put().await.unwrap_err();
        // S3 throttling is HTTP 503 SlowDown: the classifier calls it throttling too.
        assert_eq!(classify(&e), class, "{mode:?}: {e:?}");
        assert_eq!(e.code(), s3_code, "{mode:?}");
        assert_eq!(proxy.requests(&mode), 2, "{mode:?}");
    }
    proxy.set_mode(Mode::Pass);
    assert!(list().await.is_ok());
    assert!(put().await.is_ok());
}
