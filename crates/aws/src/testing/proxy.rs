//! A fault-injecting HTTP/1.1 proxy on 127.0.0.1 in front of moto's server (feature `testing`).
//!
//! [`FaultProxy::start`] listens on a free loopback port and serves each connection on its own
//! std thread, so sync tests (the binary's end-to-end tests, which point `endpoint` at it) and
//! tokio tests use it alike; dropping it stops every thread and closes every connection.
//!
//! It reads HTTP/1.1 request by request (bodies by `Content-Length` or chunked transfer
//! encoding; `Expect: 100-continue` is answered by the proxy itself), so a kept-alive
//! connection carries several requests and [`FaultProxy::set_mode`] takes effect on the next
//! request, even on a connection already open. What each request gets is the [`Mode`] current
//! when the request was read whole. Each request is counted per mode ([`FaultProxy::requests`])
//! so a test can assert that an outage really happened.
//!
//! Errors are answered in the service's protocol: JSON protocols (the request has
//! `X-Amz-Target`: CloudWatch Logs, Firehose, Kinesis) get `{"__type":…,"message":…}` with
//! `application/x-amz-json-1.1`; the query protocol (a form body with `Action=`: STS) gets an
//! `<ErrorResponse>`; anything else is treated as REST-XML (S3): `<Error><Code>…`.
//!
//! Requests are forwarded upstream one connection per request (`Connection: close`), with
//! the body re-framed by `Content-Length`; answers are relayed with a `Content-Length` body.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often a blocked read looks at the stop flag.
const POLL: Duration = Duration::from_millis(100);
/// Time to connect to the upstream.
const CONNECT: Duration = Duration::from_secs(5);
/// Longest a write may block (a peer that stops reading must not keep a thread, or the drop,
/// waiting for ever).
const WRITE: Duration = Duration::from_secs(10);
/// Longest request line, header line or chunk-size line accepted.
const MAX_LINE: usize = 64 * 1024;

/// What the proxy does with the next requests.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Forward to the upstream and relay its answer.
    Pass,
    /// Read the request and never answer; the connection is held until the client closes it
    /// or the proxy is dropped.
    Hang,
    /// Read the request, then close the connection with a TCP RST (`SO_LINGER` 0).
    Reset,
    /// HTTP 503 in the service's protocol (`ServiceUnavailableException`, S3
    /// `ServiceUnavailable`).
    Unavailable,
    /// The service's throttling error: HTTP 400 `ThrottlingException` "Rate exceeded" (JSON
    /// protocols), HTTP 503 `SlowDown` (S3), HTTP 400 `Throttling` (query protocol).
    Throttle,
    /// Any AWS error, in the service's protocol.
    Error {
        status: u16,
        code: String,
        message: String,
    },
}

impl Mode {
    /// An [`Mode::Error`].
    pub fn error(status: u16, code: &str, message: &str) -> Mode {
        Mode::Error {
            status,
            code: code.to_string(),
            message: message.to_string(),
        }
    }

    /// HTTP 400 `AccessDeniedException` (JSON services; S3 answers 403 `AccessDenied`).
    pub fn access_denied() -> Mode {
        Mode::error(
            400,
            "AccessDeniedException",
            "User: arn:aws:sts::123456789012:assumed-role/logferry/i-0 is not authorized to perform this action",
        )
    }

    /// HTTP 400 `UnrecognizedClientException`: an access key the service does not know.
    pub fn unrecognized_client() -> Mode {
        Mode::error(
            400,
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        )
    }

    /// HTTP 400 `ExpiredTokenException`: session credentials that expired.
    pub fn expired_token() -> Mode {
        Mode::error(
            400,
            "ExpiredTokenException",
            "The security token included in the request is expired",
        )
    }

    /// HTTP 400 `InvalidSignatureException` "Signature expired": the agent's clock is skewed.
    pub fn signature_expired() -> Mode {
        Mode::error(
            400,
            "InvalidSignatureException",
            "Signature expired: 20200101T000000Z is now earlier than 20200101T000500Z (20200101T001000Z - 5 min.)",
        )
    }
}

/// One request the proxy read.
#[derive(Clone, Debug)]
pub struct Seen {
    /// Which accepted connection carried it (0-based, in accept order).
    pub connection: u64,
    pub method: String,
    pub path: String,
    /// The `X-Amz-Target` operation, the query `Action`, else `METHOD path`.
    pub operation: String,
    /// Body bytes, after removing the chunked framing.
    pub body_len: usize,
    /// The mode that answered it.
    pub mode: Mode,
    /// The status sent back (`None` for [`Mode::Hang`] and [`Mode::Reset`]).
    pub status: Option<u16>,
}

struct Shared {
    upstream: SocketAddr,
    mode: Mutex<Mode>,
    stop: AtomicBool,
    counts: Mutex<Vec<(Mode, u64)>>,
    seen: Mutex<Vec<Seen>>,
    connections: AtomicU64,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

/// The proxy; stopped (threads joined, connections closed) on drop.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` on a free 127.0.0.1 port, in [`Mode::Pass`].
    pub fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the fault proxy");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            upstream,
            mode: Mutex::new(Mode::Pass),
            stop: AtomicBool::new(false),
            counts: Mutex::new(Vec::new()),
            seen: Mutex::new(Vec::new()),
            connections: AtomicU64::new(0),
            workers: Mutex::new(Vec::new()),
        });
        let sh = Arc::clone(&shared);
        let acceptor = std::thread::Builder::new()
            .name("fault-proxy-accept".into())
            .spawn(move || accept_loop(listener, sh))
            .expect("spawning the fault proxy");
        FaultProxy {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:PORT`, for `endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Switches what the next requests get (requests already answered or hanging are not
    /// affected).
    pub fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().unwrap() = mode;
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        self.shared.mode.lock().unwrap().clone()
    }

    /// Requests answered (or held, or reset) under `mode` so far.
    pub fn requests(&self, mode: &Mode) -> u64 {
        self.shared
            .counts
            .lock()
            .unwrap()
            .iter()
            .find(|(m, _)| m == mode)
            .map_or(0, |(_, n)| *n)
    }

    /// Requests read so far, whatever the mode.
    pub fn total_requests(&self) -> u64 {
        self.shared
            .counts
            .lock()
            .unwrap()
            .iter()
            .map(|(_, n)| n)
            .sum()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Every request read so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        let workers = std::mem::take(&mut *self.shared.workers.lock().unwrap());
        for w in workers {
            let _ = w.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for conn in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = conn else {
            continue;
        };
        let id = shared.connections.fetch_add(1, Ordering::SeqCst);
        let sh = Arc::clone(&shared);
        let handle = std::thread::Builder::new()
            .name(format!("fault-proxy-{id}"))
            .spawn(move || {
                let _ = serve(stream, id, &sh);
            });
        if let Ok(h) = handle {
            let mut workers = shared.workers.lock().unwrap();
            workers.retain(|w| !w.is_finished());
            workers.push(h);
        }
    }
}

/// A buffered reader that gives up when the proxy stops.
struct Conn<'a> {
    stream: TcpStream,
    buf: Vec<u8>,
    pos: usize,
    stop: &'a AtomicBool,
}

fn stopped() -> std::io::Error {
    std::io::Error::new(ErrorKind::Interrupted, "fault proxy stopped")
}

fn eof() -> std::io::Error {
    std::io::Error::new(ErrorKind::UnexpectedEof, "connection closed mid-message")
}

impl<'a> Conn<'a> {
    fn new(stream: TcpStream, stop: &'a AtomicBool) -> std::io::Result<Self> {
        stream.set_read_timeout(Some(POLL))?;
        stream.set_write_timeout(Some(WRITE))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::new(),
            pos: 0,
            stop,
        })
    }

    /// Reads more bytes; `Ok(false)` at end of stream.
    fn fill(&mut self) -> std::io::Result<bool> {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        let mut tmp = [0u8; 64 * 1024];
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return Err(stopped());
            }
            match self.stream.read(&mut tmp) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.buf.extend_from_slice(&tmp[..n]);
                    return Ok(true);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// One line without its CRLF; `Ok(None)` at a clean end of stream before any byte.
    fn line(&mut self) -> std::io::Result<Option<String>> {
        loop {
            if let Some(i) = self.buf[self.pos..].windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[self.pos..self.pos + i]).to_string();
                self.pos += i + 2;
                return Ok(Some(line));
            }
            if self.buf.len() - self.pos > MAX_LINE {
                return Err(std::io::Error::new(ErrorKind::InvalidData, "line too long"));
            }
            if !self.fill()? {
                return if self.pos == self.buf.len() {
                    Ok(None)
                } else {
                    Err(eof())
                };
            }
        }
    }

    fn exact(&mut self, n: usize, out: &mut Vec<u8>) -> std::io::Result<()> {
        let mut left = n;
        while left > 0 {
            if self.pos == self.buf.len() && !self.fill()? {
                return Err(eof());
            }
            let take = left.min(self.buf.len() - self.pos);
            out.extend_from_slice(&self.buf[self.pos..self.pos + take]);
            self.pos += take;
            left -= take;
        }
        Ok(())
    }

    fn read_to_close(&mut self, out: &mut Vec<u8>) -> std::io::Result<()> {
        loop {
            out.extend_from_slice(&self.buf[self.pos..]);
            self.pos = self.buf.len();
            if !self.fill()? {
                return Ok(());
            }
        }
    }

    /// The start line and headers; `Ok(None)` at a clean end of stream.
    fn head(&mut self) -> std::io::Result<Option<Head>> {
        let Some(start) = self.line()? else {
            return Ok(None);
        };
        let mut headers = Vec::new();
        loop {
            let line = self.line()?.ok_or_else(eof)?;
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        Ok(Some(Head { start, headers }))
    }

    /// A body framed by `head`'s headers (`Content-Length` or chunked); `until_close` reads
    /// to the end of the stream when neither is given (responses).
    fn body(&mut self, head: &Head, until_close: bool) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        if head.is_chunked() {
            loop {
                let line = self.line()?.ok_or_else(eof)?;
                let size = line.split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(size, 16).map_err(|_| {
                    std::io::Error::new(ErrorKind::InvalidData, format!("chunk size '{line}'"))
                })?;
                if size == 0 {
                    // Trailers, up to the empty line.
                    while !self.line()?.ok_or_else(eof)?.is_empty() {}
                    return Ok(out);
                }
                self.exact(size, &mut out)?;
                if !self.line()?.ok_or_else(eof)?.is_empty() {
                    return Err(std::io::Error::new(
                        ErrorKind::InvalidData,
                        "chunk not followed by CRLF",
                    ));
                }
            }
        }
        match head.content_length() {
            Some(n) => self.exact(n, &mut out)?,
            None if until_close => self.read_to_close(&mut out)?,
            None => {}
        }
        Ok(out)
    }
}

struct Head {
    start: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn is_chunked(&self) -> bool {
        self.get("transfer-encoding")
            .is_some_and(|t| t.to_ascii_lowercase().contains("chunked"))
    }

    fn content_length(&self) -> Option<usize> {
        self.get("content-length").and_then(|v| v.parse().ok())
    }

    fn has_body_framing(&self) -> bool {
        self.is_chunked() || self.get("content-length").is_some()
    }
}

/// Headers that belong to one hop and are never relayed.
fn hop_by_hop(name: &str) -> bool {
    [
        "connection",
        "keep-alive",
        "transfer-encoding",
        "content-length",
        "expect",
        "te",
        "trailer",
        "upgrade",
        "proxy-connection",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

struct Request {
    head: Head,
    method: String,
    path: String,
    body: Vec<u8>,
}

impl Request {
    fn operation(&self) -> String {
        if let Some(t) = self.head.get("x-amz-target") {
            return t.rsplit('.').next().unwrap_or(t).to_string();
        }
        if let Some(a) = self.query_action() {
            return a;
        }
        format!("{} {}", self.method, self.path)
    }

    fn query_action(&self) -> Option<String> {
        let form = self
            .head
            .get("content-type")
            .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
        if !form {
            return None;
        }
        String::from_utf8_lossy(&self.body)
            .split('&')
            .find_map(|kv| kv.strip_prefix("Action="))
            .map(str::to_string)
    }

    fn protocol(&self) -> Protocol {
        if self.head.get("x-amz-target").is_some() {
            Protocol::Json
        } else if self.query_action().is_some() {
            Protocol::Query
        } else {
            Protocol::RestXml
        }
    }

    fn wants_close(&self) -> bool {
        self.head.start.ends_with("HTTP/1.0")
            || self
                .head
                .get("connection")
                .is_some_and(|c| c.eq_ignore_ascii_case("close"))
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Json,
    Query,
    RestXml,
}

fn serve(stream: TcpStream, id: u64, shared: &Shared) -> std::io::Result<()> {
    let mut writer = stream.try_clone()?;
    let mut conn = Conn::new(stream, &shared.stop)?;
    loop {
        let Some(head) = conn.head()? else {
            return Ok(());
        };
        let mut start = head.start.split(' ');
        let method = start.next().unwrap_or("").to_string();
        let path = start.next().unwrap_or("").to_string();
        if head
            .get("expect")
            .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
        {
            writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        let body = conn.body(&head, false)?;
        let req = Request {
            head,
            method,
            path,
            body,
        };
        let mode = shared.mode.lock().unwrap().clone();
        {
            let mut counts = shared.counts.lock().unwrap();
            match counts.iter_mut().find(|(m, _)| *m == mode) {
                Some((_, n)) => *n += 1,
                None => counts.push((mode.clone(), 1)),
            }
        }
        let seen_at = {
            let mut seen = shared.seen.lock().unwrap();
            seen.push(Seen {
                connection: id,
                method: req.method.clone(),
                path: req.path.clone(),
                operation: req.operation(),
                body_len: req.body.len(),
                mode: mode.clone(),
                status: None,
            });
            seen.len() - 1
        };
        let close = req.wants_close();
        let (status, response) = match &mode {
            Mode::Hang => return hold(&mut conn),
            Mode::Reset => {
                socket2::SockRef::from(&writer).set_linger(Some(Duration::ZERO))?;
                drop(writer);
                drop(conn);
                return Ok(());
            }
            Mode::Pass => match forward(&req, shared) {
                Ok((status, r)) => (status, relay(&req, status, r, close)),
                Err(e) => (
                    502,
                    plain(502, "Bad Gateway", &format!("fault proxy: {e}"), close),
                ),
            },
            Mode::Unavailable => {
                let (code, message) = match req.protocol() {
                    Protocol::RestXml => ("ServiceUnavailable", "Please reduce your request rate."),
                    Protocol::Query => ("ServiceUnavailable", "Service Unavailable"),
                    Protocol::Json => ("ServiceUnavailableException", "Service Unavailable"),
                };
                (503, aws_error(&req, 503, code, message, close))
            }
            Mode::Throttle => match req.protocol() {
                Protocol::RestXml => (
                    503,
                    aws_error(
                        &req,
                        503,
                        "SlowDown",
                        "Please reduce your request rate.",
                        close,
                    ),
                ),
                Protocol::Query => (
                    400,
                    aws_error(&req, 400, "Throttling", "Rate exceeded", close),
                ),
                Protocol::Json => (
                    400,
                    aws_error(&req, 400, "ThrottlingException", "Rate exceeded", close),
                ),
            },
            Mode::Error {
                status,
                code,
                message,
            } => (*status, aws_error(&req, *status, code, message, close)),
        };
        shared.seen.lock().unwrap()[seen_at].status = Some(status);
        writer.write_all(&response)?;
        writer.flush()?;
        if close {
            let _ = writer.shutdown(Shutdown::Both);
            return Ok(());
        }
    }
}

/// [`Mode::Hang`]: reads and drops whatever comes until the client closes or the proxy stops.
fn hold(conn: &mut Conn<'_>) -> std::io::Result<()> {
    loop {
        conn.pos = conn.buf.len();
        if !conn.fill()? {
            return Ok(());
        }
    }
}

/// The upstream's answer: (status, head, body).
struct Upstream {
    head: Head,
    body: Vec<u8>,
}

fn forward(req: &Request, shared: &Shared) -> std::io::Result<(u16, Upstream)> {
    let stream = TcpStream::connect_timeout(&shared.upstream, CONNECT)?;
    let mut w = stream.try_clone()?;
    let mut up = Conn::new(stream, &shared.stop)?;
    let mut out = format!("{} {} HTTP/1.1\r\n", req.method, req.path).into_bytes();
    for (k, v) in &req.head.headers {
        if !hop_by_hop(k) {
            out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
    }
    if req.head.has_body_framing() {
        out.extend_from_slice(format!("Content-Length: {}\r\n", req.body.len()).as_bytes());
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    w.write_all(&out)?;
    w.write_all(&req.body)?;
    w.flush()?;
    loop {
        let head = up.head()?.ok_or_else(eof)?;
        let status: u16 = head
            .start
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                std::io::Error::new(ErrorKind::InvalidData, format!("status '{}'", head.start))
            })?;
        if (100..200).contains(&status) {
            continue;
        }
        let no_body = req.method.eq_ignore_ascii_case("HEAD") || status == 204 || status == 304;
        let body = if no_body {
            Vec::new()
        } else {
            up.body(&head, true)?
        };
        return Ok((status, Upstream { head, body }));
    }
}

fn relay(req: &Request, status: u16, up: Upstream, close: bool) -> Vec<u8> {
    let reason = up.head.start.splitn(3, ' ').nth(2).unwrap_or("");
    let mut out = format!("HTTP/1.1 {status} {reason}\r\n").into_bytes();
    for (k, v) in &up.head.headers {
        let keep_length =
            k.eq_ignore_ascii_case("content-length") && req.method.eq_ignore_ascii_case("HEAD");
        if !hop_by_hop(k) || keep_length {
            out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
    }
    if !req.method.eq_ignore_ascii_case("HEAD") && status != 204 && status != 304 {
        out.extend_from_slice(format!("Content-Length: {}\r\n", up.body.len()).as_bytes());
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&up.body);
    out
}

fn plain(status: u16, reason: &str, text: &str, close: bool) -> Vec<u8> {
    response(status, reason, "text/plain", &[], text.as_bytes(), close)
}

fn reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// An AWS error in the request's protocol.
fn aws_error(req: &Request, status: u16, code: &str, message: &str, close: bool) -> Vec<u8> {
    static N: AtomicU64 = AtomicU64::new(0);
    let request_id = format!("fault-proxy-{}", N.fetch_add(1, Ordering::Relaxed));
    let (content_type, body, headers) = match req.protocol() {
        Protocol::Json => {
            let content_type = req
                .head
                .get("content-type")
                .filter(|c| c.starts_with("application/x-amz-json-"))
                .unwrap_or("application/x-amz-json-1.1")
                .to_string();
            let body = serde_json::json!({"__type": code, "message": message}).to_string();
            (
                content_type,
                body,
                vec![
                    ("x-amzn-ErrorType", code.to_string()),
                    ("x-amzn-RequestId", request_id),
                ],
            )
        }
        Protocol::Query => {
            let kind = if status >= 500 { "Receiver" } else { "Sender" };
            let body = format!(
                "<ErrorResponse><Error><Type>{kind}</Type><Code>{}</Code><Message>{}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>",
                xml_escape(code),
                xml_escape(message)
            );
            (
                "text/xml".to_string(),
                body,
                vec![("x-amzn-RequestId", request_id)],
            )
        }
        Protocol::RestXml => {
            let body = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{}</Code><Message>{}</Message><RequestId>{request_id}</RequestId><HostId>fault-proxy</HostId></Error>",
                xml_escape(code),
                xml_escape(message)
            );
            (
                "application/xml".to_string(),
                body,
                vec![("x-amz-request-id", request_id)],
            )
        }
    };
    let body = if req.method.eq_ignore_ascii_case("HEAD") {
        String::new()
    } else {
        body
    };
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    response(
        status,
        reason(status),
        &content_type,
        &headers,
        body.as_bytes(),
        close,
    )
}

fn response(
    status: u16,
    reason: &str,
    content_type: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    close: bool,
) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n",
        body.len()
    )
    .into_bytes();
    for (k, v) in headers {
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}
