//! The Fluent forward protocol's messages, as bytes (Fluentd's "Forward Protocol Specification
//! v1", which Fluent Bit's `forward` input and output speak): framing of a msgpack stream,
//! event messages in the four modes, the `chunk`/`ack` exchange and the shared-key handshake
//! (`HELO`, `PING`, `PONG`). Runtime-free: the `forward` input and output own the sockets.
//!
//! Event modes (`[tag, ...]`, an optional option map last):
//! - Message: `[tag, time, record, option?]`;
//! - Forward: `[tag, [[time, record], ...], option?]`;
//! - PackedForward: `[tag, bin|str of concatenated [time, record], option?]`;
//! - CompressedPackedForward: PackedForward with `{"compressed": "gzip"}` (the caller inflates).
//!
//! `time` is an `EventTime` (ext 0), integer seconds or a float; entries may also be Fluent Bit's
//! `[[time, metadata], record]`.

use crate::event::{Map, Record, Value};
use crate::msgpack::{self, MsgpackError, MAX_DEPTH};

/// How far a msgpack value at some offset reaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scan {
    /// The value is complete and ends at this offset.
    Done(usize),
    /// The value needs at least this many bytes in the buffer.
    Need(usize),
}

/// Where the value starting at `at` ends, without decoding it: a stream reader calls it on
/// what it has so far and reads more until [`Scan::Done`]. `Need` is a lower bound, exact for a
/// large string or binary, so a reader does not rescan a big message for every read.
pub fn scan(buf: &[u8], at: usize) -> Result<Scan, MsgpackError> {
    scan_at(buf, at, 0)
}

fn be(buf: &[u8], at: usize, n: usize) -> Option<usize> {
    let b = buf.get(at..at.checked_add(n)?)?;
    Some(b.iter().fold(0usize, |acc, &x| (acc << 8) | usize::from(x)))
}

fn scan_at(buf: &[u8], at: usize, depth: usize) -> Result<Scan, MsgpackError> {
    if depth > MAX_DEPTH {
        return Err(MsgpackError::TooDeep(at));
    }
    let Some(&b) = buf.get(at) else {
        return Ok(Scan::Need(at + 1));
    };
    // (header bytes, length field bytes, then either raw bytes or items)
    enum Body {
        Raw(usize),
        Items(usize),
    }
    let sized = |hdr: usize, extra: usize, items: bool, per: usize| -> Result<Scan, MsgpackError> {
        let Some(n) = be(buf, at + 1, hdr - 1) else {
            return Ok(Scan::Need(at + hdr));
        };
        let n = n.saturating_mul(per);
        finish(
            buf,
            at + hdr,
            if items {
                Body::Items(n)
            } else {
                Body::Raw(n.saturating_add(extra))
            },
            depth,
        )
    };
    fn finish(buf: &[u8], pos: usize, body: Body, depth: usize) -> Result<Scan, MsgpackError> {
        match body {
            Body::Raw(n) => {
                let end = pos.saturating_add(n);
                Ok(if end > buf.len() {
                    Scan::Need(end)
                } else {
                    Scan::Done(end)
                })
            }
            Body::Items(n) => {
                let mut pos = pos;
                for i in 0..n {
                    match scan_at(buf, pos, depth + 1)? {
                        Scan::Done(e) => pos = e,
                        Scan::Need(e) => return Ok(Scan::Need(e.saturating_add(n - i - 1))),
                    }
                }
                Ok(Scan::Done(pos))
            }
        }
    }
    match b {
        0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => Ok(Scan::Done(at + 1)),
        0x80..=0x8f => finish(buf, at + 1, Body::Items(usize::from(b & 0x0f) * 2), depth),
        0x90..=0x9f => finish(buf, at + 1, Body::Items(usize::from(b & 0x0f)), depth),
        0xa0..=0xbf => finish(buf, at + 1, Body::Raw(usize::from(b & 0x1f)), depth),
        0xc4 | 0xd9 => sized(2, 0, false, 1),
        0xc5 | 0xda => sized(3, 0, false, 1),
        0xc6 | 0xdb => sized(5, 0, false, 1),
        0xc7 => sized(2, 1, false, 1),
        0xc8 => sized(3, 1, false, 1),
        0xc9 => sized(5, 1, false, 1),
        0xca | 0xce | 0xd2 => finish(buf, at + 1, Body::Raw(4), depth),
        0xcb | 0xcf | 0xd3 => finish(buf, at + 1, Body::Raw(8), depth),
        0xcc | 0xd0 => finish(buf, at + 1, Body::Raw(1), depth),
        0xcd | 0xd1 => finish(buf, at + 1, Body::Raw(2), depth),
        0xd4 => finish(buf, at + 1, Body::Raw(2), depth),
        0xd5 => finish(buf, at + 1, Body::Raw(3), depth),
        0xd6 => finish(buf, at + 1, Body::Raw(5), depth),
        0xd7 => finish(buf, at + 1, Body::Raw(9), depth),
        0xd8 => finish(buf, at + 1, Body::Raw(17), depth),
        0xdc => sized(3, 0, true, 1),
        0xdd => sized(5, 0, true, 1),
        0xde => sized(3, 0, true, 2),
        0xdf => sized(5, 0, true, 2),
        0xc1 => Err(MsgpackError::Unexpected { byte: b, at }),
    }
}

/// Why a complete msgpack value is not a forward protocol message this side can use.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("{0}")]
    Msgpack(#[from] MsgpackError),
    #[error("not a forward protocol message: {0}")]
    Shape(&'static str),
    #[error("cannot decompress the entries: {0}")]
    Inflate(String),
    #[error("entries of signal type {0} (metrics or traces) are not taken by logferry")]
    Signal(i64),
}

/// An array header at `at`: (items, offset after the header).
fn array_at(buf: &[u8], at: usize) -> Option<(usize, usize)> {
    let b = *buf.get(at)?;
    match b {
        0x90..=0x9f => Some((usize::from(b & 0x0f), at + 1)),
        0xdc => Some((be(buf, at + 1, 2)?, at + 3)),
        0xdd => Some((be(buf, at + 1, 4)?, at + 5)),
        _ => None,
    }
}

/// A string or binary value at `at`: (its bytes, offset after it).
pub fn raw_at(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let b = *buf.get(at)?;
    let (n, start) = match b {
        0xa0..=0xbf => (usize::from(b & 0x1f), at + 1),
        0xc4 | 0xd9 => (be(buf, at + 1, 1)?, at + 2),
        0xc5 | 0xda => (be(buf, at + 1, 2)?, at + 3),
        0xc6 | 0xdb => (be(buf, at + 1, 4)?, at + 5),
        _ => return None,
    };
    let end = start.checked_add(n)?;
    Some((buf.get(start..end)?, end))
}

fn end_of(buf: &[u8], at: usize) -> Result<usize, FrameError> {
    match scan(buf, at)? {
        Scan::Done(e) => Ok(e),
        Scan::Need(_) => Err(MsgpackError::Truncated(at).into()),
    }
}

/// One event message, decoded.
#[derive(Debug, Default)]
pub struct EventMessage {
    /// The tag the sender gave.
    pub tag: String,
    pub records: Vec<Record>,
    /// The `chunk` option: the sender wants `{"ack": chunk}` back.
    pub chunk: Option<String>,
}

/// A message from a forward client: events, or its half of the handshake.
#[derive(Debug)]
pub enum ClientMessage {
    Events(EventMessage),
    Ping(Ping),
}

/// Decompresses gzip entries for [`decode_client`] (the caller owns the bound on their size).
pub type Inflate<'a> = &'a dyn Fn(&[u8]) -> Result<Vec<u8>, String>;

/// Decodes one complete message from a client (`frame` is exactly one msgpack value).
/// `inflate` decompresses gzip entries (CompressedPackedForward).
pub fn decode_client(frame: &[u8], inflate: Inflate<'_>) -> Result<ClientMessage, FrameError> {
    let (n, mut at) = array_at(frame, 0).ok_or(FrameError::Shape("expected an array"))?;
    if !(2..=6).contains(&n) {
        return Err(FrameError::Shape("expected an array of 2 to 4 items"));
    }
    let (tag, next) = raw_at(frame, at).ok_or(FrameError::Shape("the tag is not a string"))?;
    if tag == b"PING" && n == 6 {
        return Ping::decode_after(frame, next).map(ClientMessage::Ping);
    }
    if n > 4 {
        return Err(FrameError::Shape("expected an array of 2 to 4 items"));
    }
    let tag = String::from_utf8_lossy(tag).into_owned();
    at = next;
    let second = *frame.get(at).ok_or(MsgpackError::Truncated(at))?;
    let entries_at = at;
    let entries_end = end_of(frame, at)?;
    let forward = matches!(second, 0x90..=0x9f | 0xdc | 0xdd);
    let packed = !forward && raw_at(frame, at).is_some();
    let mut msg = EventMessage {
        tag,
        ..Default::default()
    };
    // The option map is the last item, where there is one.
    let option_at = match (forward || packed, n) {
        (true, 3) => Some(entries_end),
        (false, 4) => Some(end_of(frame, entries_end)?),
        (true, 2) | (false, 3) => None,
        _ => return Err(FrameError::Shape("wrong number of items for the mode")),
    };
    let mut compressed = false;
    if let Some(o) = option_at {
        let (v, _) = msgpack::read_value(&frame[o..])?;
        if let Value::Map(m) = v {
            read_options(&m, &mut msg, &mut compressed)?;
        }
    }
    if forward {
        let (_, first) = array_at(frame, entries_at).ok_or(FrameError::Shape("bad entries"))?;
        msg.records = msgpack::read_records(&frame[first..entries_end])?;
    } else if let Some((packed, _)) = raw_at(frame, entries_at).filter(|_| packed) {
        msg.records = if compressed {
            let data = inflate(packed).map_err(FrameError::Inflate)?;
            msgpack::read_records(&data)?
        } else {
            msgpack::read_records(packed)?
        };
    } else {
        // Message mode: `time, record` is one entry without its array header.
        let record_end = end_of(frame, entries_end)?;
        let mut entry = Vec::with_capacity(record_end - entries_at + 1);
        entry.push(0x92);
        entry.extend_from_slice(&frame[entries_at..record_end]);
        msg.records = msgpack::read_records(&entry)?;
    }
    Ok(ClientMessage::Events(msg))
}

fn read_options(m: &Map, msg: &mut EventMessage, compressed: &mut bool) -> Result<(), FrameError> {
    if let Some(c) = m.get("chunk").and_then(Value::as_str) {
        msg.chunk = Some(c.to_string());
    }
    if let Some(c) = m.get("compressed").and_then(Value::as_str) {
        if c != "gzip" && c != "text" {
            return Err(FrameError::Inflate(format!("unknown compression '{c}'")));
        }
        *compressed = c == "gzip";
    }
    match m.get("fluent_signal") {
        None | Some(Value::Int(0)) | Some(Value::UInt(0)) => Ok(()),
        Some(Value::Int(s)) => Err(FrameError::Signal(*s)),
        Some(Value::UInt(s)) => Err(FrameError::Signal(*s as i64)),
        Some(_) => Ok(()),
    }
}

/// Encodes a PackedForward message: `[tag, bin(entries), {options}]`. `entries` are
/// concatenated `[time, record]` (see [`msgpack::write_entry`]); options are written when any is
/// given.
pub fn packed_forward(
    tag: &str,
    entries: &[u8],
    size: Option<usize>,
    chunk: Option<&str>,
    gzip: bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() + tag.len() + 64);
    let opts = usize::from(size.is_some()) + usize::from(chunk.is_some()) + usize::from(gzip);
    msgpack::write_array_header(&mut out, if opts > 0 { 3 } else { 2 });
    msgpack::write_str(&mut out, tag);
    msgpack::write_bin(&mut out, entries);
    if opts > 0 {
        msgpack::write_map_header(&mut out, opts);
        if let Some(n) = size {
            msgpack::write_str(&mut out, "size");
            msgpack::write_value(&mut out, &Value::UInt(n as u64));
        }
        if let Some(c) = chunk {
            msgpack::write_str(&mut out, "chunk");
            msgpack::write_str(&mut out, c);
        }
        if gzip {
            msgpack::write_str(&mut out, "compressed");
            msgpack::write_str(&mut out, "gzip");
        }
    }
    out
}

/// `{"ack": chunk}`, the server's answer to a message with the `chunk` option.
pub fn ack(chunk: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(chunk.len() + 8);
    msgpack::write_map_header(&mut out, 1);
    msgpack::write_str(&mut out, "ack");
    msgpack::write_str(&mut out, chunk);
    out
}

/// The chunk id of an `{"ack": chunk}` answer.
pub fn read_ack(frame: &[u8]) -> Option<String> {
    match msgpack::read_value(frame).ok()?.0 {
        Value::Map(m) => m.get("ack").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

/// The server's greeting when a shared key is set: `["HELO", {"nonce", "auth", "keepalive"}]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Helo {
    pub nonce: Vec<u8>,
    /// The salt of user authentication; empty when the server has no users.
    pub auth: Vec<u8>,
    pub keepalive: bool,
}

impl Helo {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        msgpack::write_array_header(&mut out, 2);
        msgpack::write_str(&mut out, "HELO");
        msgpack::write_map_header(&mut out, 3);
        msgpack::write_str(&mut out, "nonce");
        msgpack::write_bin(&mut out, &self.nonce);
        msgpack::write_str(&mut out, "auth");
        msgpack::write_bin(&mut out, &self.auth);
        msgpack::write_str(&mut out, "keepalive");
        out.push(if self.keepalive { 0xc3 } else { 0xc2 });
        out
    }

    pub fn decode(frame: &[u8]) -> Result<Self, FrameError> {
        let bad = FrameError::Shape("expected [\"HELO\", {options}]");
        let (n, at) = array_at(frame, 0).ok_or(FrameError::Shape("expected an array"))?;
        let (word, at) = raw_at(frame, at).ok_or(FrameError::Shape("expected HELO"))?;
        if n != 2 || word != b"HELO" {
            return Err(bad);
        }
        let (count, mut at) = map_at(frame, at).ok_or(bad)?;
        let mut helo = Helo {
            nonce: Vec::new(),
            auth: Vec::new(),
            keepalive: true,
        };
        for _ in 0..count {
            let (k, next) = raw_at(frame, at).ok_or(FrameError::Shape("bad HELO key"))?;
            let k = k.to_vec();
            let end = end_of(frame, next)?;
            match k.as_slice() {
                b"nonce" => {
                    helo.nonce = raw_at(frame, next)
                        .map(|r| r.0.to_vec())
                        .unwrap_or_default()
                }
                b"auth" => {
                    helo.auth = raw_at(frame, next)
                        .map(|r| r.0.to_vec())
                        .unwrap_or_default()
                }
                b"keepalive" => helo.keepalive = frame.get(next) != Some(&0xc2),
                _ => {}
            }
            at = end;
        }
        Ok(helo)
    }
}

fn map_at(buf: &[u8], at: usize) -> Option<(usize, usize)> {
    let b = *buf.get(at)?;
    match b {
        0x80..=0x8f => Some((usize::from(b & 0x0f), at + 1)),
        0xde => Some((be(buf, at + 1, 2)?, at + 3)),
        0xdf => Some((be(buf, at + 1, 4)?, at + 5)),
        _ => None,
    }
}

/// The client's answer to `HELO`:
/// `["PING", hostname, shared_key_salt, sha512_hex(salt + hostname + nonce + shared_key),
/// username, sha512_hex(auth_salt + username + password)]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ping {
    pub hostname: Vec<u8>,
    pub shared_key_salt: Vec<u8>,
    pub shared_key_digest: Vec<u8>,
    pub username: Vec<u8>,
    pub password_digest: Vec<u8>,
}

impl Ping {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        msgpack::write_array_header(&mut out, 6);
        msgpack::write_str(&mut out, "PING");
        for f in [
            &self.hostname,
            &self.shared_key_salt,
            &self.shared_key_digest,
            &self.username,
            &self.password_digest,
        ] {
            write_raw_str(&mut out, f);
        }
        out
    }

    fn decode_after(frame: &[u8], mut at: usize) -> Result<Self, FrameError> {
        let mut f: [Vec<u8>; 5] = Default::default();
        for slot in &mut f {
            let (v, next) = raw_at(frame, at).ok_or(FrameError::Shape("bad PING field"))?;
            *slot = v.to_vec();
            at = next;
        }
        let [hostname, shared_key_salt, shared_key_digest, username, password_digest] = f;
        Ok(Ping {
            hostname,
            shared_key_salt,
            shared_key_digest,
            username,
            password_digest,
        })
    }
}

/// The server's verdict: `["PONG", ok, reason, hostname, sha512_hex(salt + hostname + nonce +
/// shared_key)]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pong {
    pub ok: bool,
    pub reason: String,
    pub hostname: Vec<u8>,
    pub shared_key_digest: Vec<u8>,
}

impl Pong {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(200);
        msgpack::write_array_header(&mut out, 5);
        msgpack::write_str(&mut out, "PONG");
        out.push(if self.ok { 0xc3 } else { 0xc2 });
        msgpack::write_str(&mut out, &self.reason);
        write_raw_str(&mut out, &self.hostname);
        write_raw_str(&mut out, &self.shared_key_digest);
        out
    }

    pub fn decode(frame: &[u8]) -> Result<Self, FrameError> {
        let bad = FrameError::Shape("expected [\"PONG\", ok, reason, hostname, digest]");
        let (n, at) = array_at(frame, 0).ok_or(FrameError::Shape("expected an array"))?;
        let (word, at) = raw_at(frame, at).ok_or(FrameError::Shape("expected PONG"))?;
        if n != 5 || word != b"PONG" {
            return Err(bad);
        }
        let ok = match frame.get(at) {
            Some(0xc3) => true,
            Some(0xc2) => false,
            _ => return Err(bad),
        };
        let (reason, at) = raw_at(frame, at + 1).ok_or(FrameError::Shape("bad PONG reason"))?;
        let (hostname, at) = raw_at(frame, at).ok_or(FrameError::Shape("bad PONG hostname"))?;
        let (digest, _) = raw_at(frame, at).ok_or(FrameError::Shape("bad PONG digest"))?;
        Ok(Pong {
            ok,
            reason: String::from_utf8_lossy(reason).into_owned(),
            hostname: hostname.to_vec(),
            shared_key_digest: digest.to_vec(),
        })
    }
}

/// Bytes as a msgpack `str` (the handshake's fields are strings on the wire; salts may hold any
/// byte, which peers compare as bytes).
fn write_raw_str(out: &mut Vec<u8>, b: &[u8]) {
    let n = b.len();
    if n < 32 {
        out.push(0xa0 | n as u8);
    } else if n <= 0xff {
        out.extend_from_slice(&[0xd9, n as u8]);
    } else if n <= 0xffff {
        out.push(0xda);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xdb);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
    out.extend_from_slice(b);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventTime;

    fn no_inflate(_: &[u8]) -> Result<Vec<u8>, String> {
        Err("no".into())
    }

    fn rec(i: i64) -> Record {
        let mut m = Map::new();
        m.insert("i", i);
        Record::new(EventTime::from_parts(1_700_000_000 + i, 5), m)
    }

    fn events(frame: &[u8]) -> EventMessage {
        match decode_client(frame, &no_inflate).unwrap() {
            ClientMessage::Events(e) => e,
            ClientMessage::Ping(_) => panic!("not events"),
        }
    }

    #[test]
    fn scan_finds_ends_and_asks_for_more() {
        let mut entries = Vec::new();
        for i in 0..3 {
            msgpack::write_entry(&mut entries, &rec(i), false);
        }
        let frame = packed_forward("app", &entries, Some(3), Some("abc"), false);
        assert_eq!(scan(&frame, 0), Ok(Scan::Done(frame.len())));
        for cut in 0..frame.len() {
            match scan(&frame[..cut], 0).unwrap() {
                Scan::Need(n) => assert!(n > cut && n <= frame.len(), "cut {cut}: need {n}"),
                Scan::Done(_) => panic!("cut {cut} scanned as complete"),
            }
        }
        // A huge declared length asks for it rather than failing or allocating.
        assert_eq!(
            scan(&[0xc6, 0xff, 0xff, 0xff, 0xff], 0),
            Ok(Scan::Need(5 + 0xffff_ffff))
        );
        assert!(scan(&[0xc1], 0).is_err());
    }

    #[test]
    fn the_four_modes() {
        // Message mode with an EventTime, and with integer seconds and options.
        let mut f = vec![0x93];
        msgpack::write_str(&mut f, "t.msg");
        let mut e = Vec::new();
        msgpack::write_entry(&mut e, &rec(1), false);
        f.extend_from_slice(&e[1..]);
        let m = events(&f);
        assert_eq!(m.tag, "t.msg");
        assert_eq!(m.records, vec![rec(1)]);
        let mut f = vec![0x94];
        msgpack::write_str(&mut f, "t.msg");
        let mut e = Vec::new();
        msgpack::write_entry(&mut e, &rec(2), true);
        f.extend_from_slice(&e[1..]);
        f.extend_from_slice(&[0x81, 0xa5]);
        f.extend_from_slice(b"chunk");
        msgpack::write_str(&mut f, "c1");
        let m = events(&f);
        assert_eq!(m.records[0].time, EventTime::from_parts(1_700_000_002, 0));
        assert_eq!(m.chunk.as_deref(), Some("c1"));
        // Forward mode.
        let mut f = vec![0x92];
        msgpack::write_str(&mut f, "t.fwd");
        msgpack::write_array_header(&mut f, 2);
        msgpack::write_entry(&mut f, &rec(3), false);
        msgpack::write_record(&mut f, &rec(4));
        let m = events(&f);
        assert_eq!(m.records, vec![rec(3), rec(4)]);
        // PackedForward, and compressed with a caller's inflate.
        let mut entries = Vec::new();
        msgpack::write_entry(&mut entries, &rec(5), false);
        let m = events(&packed_forward("t.p", &entries, None, None, false));
        assert_eq!(m.records, vec![rec(5)]);
        let f = packed_forward("t.p", b"zipped", Some(1), Some("c2"), true);
        let e2 = entries.clone();
        let inflate = move |b: &[u8]| {
            assert_eq!(b, b"zipped");
            Ok(e2.clone())
        };
        match decode_client(&f, &inflate).unwrap() {
            ClientMessage::Events(m) => {
                assert_eq!(m.records, vec![rec(5)]);
                assert_eq!(m.chunk.as_deref(), Some("c2"));
            }
            ClientMessage::Ping(_) => panic!(),
        }
        assert!(matches!(
            decode_client(&f, &no_inflate),
            Err(FrameError::Inflate(_))
        ));
    }

    #[test]
    fn malformed_messages_are_errors() {
        for bad in [
            &[0xc0][..],
            &[0x91, 0xa1, b'a'],
            &[0x92, 0x01, 0x02],
            &[0x92, 0xa1, b'a', 0x92],
            &[0x92, 0xa1, b'a', 0xa1, 0xff],
        ] {
            assert!(decode_client(bad, &no_inflate).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn handshake_round_trips() {
        let h = Helo {
            nonce: vec![0, 255, 7],
            auth: vec![],
            keepalive: true,
        };
        assert_eq!(Helo::decode(&h.encode()), Ok(h));
        let p = Ping {
            hostname: b"client".to_vec(),
            shared_key_salt: vec![1, 200, 3],
            shared_key_digest: b"ab".repeat(64),
            username: b"u".to_vec(),
            password_digest: b"cd".repeat(64),
        };
        match decode_client(&p.encode(), &no_inflate).unwrap() {
            ClientMessage::Ping(q) => assert_eq!(p, q),
            ClientMessage::Events(_) => panic!(),
        }
        let o = Pong {
            ok: false,
            reason: "shared key mismatch".into(),
            hostname: b"srv".to_vec(),
            shared_key_digest: vec![],
        };
        assert_eq!(Pong::decode(&o.encode()), Ok(o));
        assert_eq!(read_ack(&ack("xyz")).as_deref(), Some("xyz"));
    }
}
