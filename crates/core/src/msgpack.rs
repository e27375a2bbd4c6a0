//! Records in Fluent Bit's event encoding: msgpack, each record `[[TIME, METADATA], BODY]`
//! (format v2), where TIME is the forward protocol's `EventTime` (ext type 0: big-endian u32
//! seconds, u32 nanoseconds) and METADATA a map (empty: logferry records carry none). Integers
//! use the smallest encoding, as msgpack-c does. This is what `file`'s `msgpack` format
//! writes and what chunk files (filesystem buffering, the dead-letter store) hold.
//!
//! [`read_records`] reads it back, and also Fluent Bit's older `[TIME, BODY]` form with
//! integer or float times. It never panics on bad input and bounds nesting, so a corrupt or
//! hostile chunk file is an error, not a crash.

use crate::event::{EventTime, Map, Record, Str, Value};

/// Appends one record.
pub fn write_record(out: &mut Vec<u8>, r: &Record) {
    out.push(0x92); // fixarray(2)
    out.push(0x92);
    out.extend_from_slice(&[0xd7, 0x00]); // fixext8, type 0
    out.extend_from_slice(&(r.time.secs() as u32).to_be_bytes());
    out.extend_from_slice(&r.time.subsec_nanos().to_be_bytes());
    out.push(0x80); // empty metadata map
    write_map(out, &r.body);
}

/// Appends one record as a forward protocol entry, `[TIME, BODY]`: TIME is an `EventTime`, or
/// whole seconds when `integer_time` (Fluentd v0.12's form).
pub fn write_entry(out: &mut Vec<u8>, r: &Record, integer_time: bool) {
    out.push(0x92);
    if integer_time {
        write_int(out, r.time.secs());
    } else {
        out.extend_from_slice(&[0xd7, 0x00]);
        out.extend_from_slice(&(r.time.secs() as u32).to_be_bytes());
        out.extend_from_slice(&r.time.subsec_nanos().to_be_bytes());
    }
    write_map(out, &r.body);
}

/// Appends a map header for `n` entries (the smallest form).
pub fn write_map_header(out: &mut Vec<u8>, n: usize) {
    write_header(out, n, 0x80, 0xde);
}

/// Appends an array header for `n` items (the smallest form).
pub fn write_array_header(out: &mut Vec<u8>, n: usize) {
    write_header(out, n, 0x90, 0xdc);
}

fn write_header(out: &mut Vec<u8>, n: usize, fix: u8, wide: u8) {
    if n < 16 {
        out.push(fix | n as u8);
    } else if n <= 0xffff {
        out.push(wide);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(wide + 1);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
}

/// Appends msgpack binary data (`bin 8/16/32`).
pub fn write_bin(out: &mut Vec<u8>, b: &[u8]) {
    let n = b.len();
    if n <= 0xff {
        out.extend_from_slice(&[0xc4, n as u8]);
    } else if n <= 0xffff {
        out.push(0xc5);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xc6);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
    out.extend_from_slice(b);
}

fn write_map(out: &mut Vec<u8>, m: &Map) {
    let n = m.len();
    if n < 16 {
        out.push(0x80 | n as u8);
    } else if n <= 0xffff {
        out.push(0xde);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xdf);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
    for (k, v) in m.iter() {
        write_str(out, k);
        write_value(out, v);
    }
}

/// Appends a msgpack string.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    let n = s.len();
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
    out.extend_from_slice(s.as_bytes());
}

fn write_uint(out: &mut Vec<u8>, u: u64) {
    if u < 128 {
        out.push(u as u8);
    } else if u <= 0xff {
        out.extend_from_slice(&[0xcc, u as u8]);
    } else if u <= 0xffff {
        out.push(0xcd);
        out.extend_from_slice(&(u as u16).to_be_bytes());
    } else if u <= 0xffff_ffff {
        out.push(0xce);
        out.extend_from_slice(&(u as u32).to_be_bytes());
    } else {
        out.push(0xcf);
        out.extend_from_slice(&u.to_be_bytes());
    }
}

fn write_int(out: &mut Vec<u8>, i: i64) {
    if i >= 0 {
        return write_uint(out, i as u64);
    }
    if i >= -32 {
        out.push(i as i8 as u8);
    } else if i >= i64::from(i8::MIN) {
        out.extend_from_slice(&[0xd0, i as i8 as u8]);
    } else if i >= i64::from(i16::MIN) {
        out.push(0xd1);
        out.extend_from_slice(&(i as i16).to_be_bytes());
    } else if i >= i64::from(i32::MIN) {
        out.push(0xd2);
        out.extend_from_slice(&(i as i32).to_be_bytes());
    } else {
        out.push(0xd3);
        out.extend_from_slice(&i.to_be_bytes());
    }
}

/// Appends any value.
pub fn write_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => out.push(0xc0),
        Value::Bool(b) => out.push(if *b { 0xc3 } else { 0xc2 }),
        Value::Int(i) => write_int(out, *i),
        Value::UInt(u) => write_uint(out, *u),
        Value::Float(f) => {
            out.push(0xcb);
            out.extend_from_slice(&f.to_be_bytes());
        }
        Value::Str(s) => write_str(out, s),
        Value::Array(a) => {
            let n = a.len();
            if n < 16 {
                out.push(0x90 | n as u8);
            } else if n <= 0xffff {
                out.push(0xdc);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            } else {
                out.push(0xdd);
                out.extend_from_slice(&(n as u32).to_be_bytes());
            }
            for v in a {
                write_value(out, v);
            }
        }
        Value::Map(m) => write_map(out, m),
        Value::SharedMap(m) => write_map(out, m),
    }
}

/// How the maps that open a record (its metadata and its body) were written. Fluent Bit's
/// log event encoder writes them as `map32` (5 bytes, `0xdf` and a count patched in when the
/// record is done) when a plugin builds the record field by field, as `tail` does; a plugin that
/// hands the encoder a whole msgpack body (`dummy`, JSON parsers) gets the smallest headers.
/// Nested maps are always the smallest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MapHeaders {
    /// Smallest headers everywhere (what [`write_record`] writes).
    #[default]
    Compact,
    /// `map32` headers for the metadata map and the body map.
    Dynamic,
}

/// The size of `r` in Fluent Bit's event encoding, without encoding it: what Fluent Bit counts
/// in `fluentbit_input_bytes_total`, `fluentbit_output_proc_bytes_total` and the routing and
/// filter byte counters. Walks the record once and allocates nothing.
pub fn event_size(r: &Record, headers: MapHeaders) -> usize {
    event_wrapping(headers, r.body.len()) + map_body_size(&r.body)
}

/// The last shared map sized, by address: records of one pod share their `kubernetes` map
/// (one `Arc`), so a run of them sizes it once. Only compared, never dereferenced; the records
/// hold the map alive while a run is sized, so an address cannot be reused meanwhile.
pub type SharedSizeMemo = Option<(*const Map, usize)>;

/// [`event_size`] for a run of records, sizing each top-level shared map once while the same
/// one repeats (the filters' and routes' byte counters size every chunk they touch).
pub fn event_size_memo(r: &Record, headers: MapHeaders, memo: &mut SharedSizeMemo) -> usize {
    let body: usize = r
        .body
        .iter()
        .map(|(k, v)| {
            str_size(k)
                + match v {
                    Value::SharedMap(m) => shared_map_size(m, memo),
                    v => value_size(v),
                }
        })
        .sum();
    event_wrapping(headers, r.body.len()) + body
}

/// A top-level shared map's encoded size, from `memo` while the same map repeats.
fn shared_map_size(m: &std::sync::Arc<Map>, memo: &mut SharedSizeMemo) -> usize {
    let p = std::sync::Arc::as_ptr(m);
    match *memo {
        Some((q, n)) if std::ptr::eq(p, q) => n,
        _ => {
            let n = map_size(m);
            *memo = Some((p, n));
            n
        }
    }
}

/// The bytes of an event around its body's pairs: `[[time, {}], body]` (two fixarray headers,
/// fixext8 time of 10 bytes, an empty metadata map) and the body map's header for `pairs`.
fn event_wrapping(headers: MapHeaders, pairs: usize) -> usize {
    let head = 1 + 1 + 10;
    match headers {
        MapHeaders::Compact => head + 1 + len_header(pairs, 16),
        MapHeaders::Dynamic => head + 5 + 5,
    }
}

/// [`Record::mem_size`] and [`event_size_memo`] of a record in one walk: an input's emit
/// needs both (`Mem_Buf_Limit` and the byte metrics), and each walk visits every value.
pub fn mem_and_event_size(
    r: &Record,
    headers: MapHeaders,
    memo: &mut SharedSizeMemo,
) -> (usize, usize) {
    // The sums stay in locals (registers) over the record's pairs; only a nested value gets an
    // accumulator in memory. Adding into one in memory for every string chained each add to
    // the store before it (a store-forwarding round trip per field).
    let mut heap = r.body.0.capacity() * std::mem::size_of::<(Str, Value)>();
    let mut wire = 0;
    for (k, v) in r.body.iter() {
        wire += str_size(k);
        heap += crate::event::str_heap(k);
        match v {
            Value::Str(s) => {
                wire += str_size(s);
                heap += crate::event::str_heap(s);
            }
            Value::SharedMap(m) => wire += shared_map_size(m, memo),
            v => {
                let nested = Sizes::of(v);
                wire += nested.wire;
                heap += nested.heap;
            }
        }
    }
    let wire = event_wrapping(headers, r.body.len()) + wire;
    (std::mem::size_of::<Record>() + heap, wire)
}

/// Heap bytes ([`Value::heap_size`]) and encoded size ([`value_size`]) summed over a walk.
/// One accumulator passed down instead of a pair returned from each value: the walk runs over
/// every value of every record after the filters, so its per-value cost counts.
struct Sizes {
    heap: usize,
    wire: usize,
}

impl Sizes {
    /// The sizes of `v` and all it holds.
    fn of(v: &Value) -> Sizes {
        let mut acc = Sizes { heap: 0, wire: 0 };
        acc.value(v);
        acc
    }

    #[inline(always)]
    fn str(&mut self, s: &Str) {
        self.wire += str_size(s);
        self.heap += crate::event::str_heap(s);
    }

    fn value(&mut self, v: &Value) {
        match v {
            Value::Str(s) => self.str(s),
            Value::Int(i) => self.wire += int_size(*i),
            Value::Float(_) => self.wire += 9,
            Value::Null | Value::Bool(_) => self.wire += 1,
            Value::UInt(u) => self.wire += uint_size(*u),
            Value::Map(m) => {
                // Locals over the pairs, as in `mem_and_event_size`.
                let mut heap = m.0.capacity() * std::mem::size_of::<(Str, Value)>();
                let mut wire = len_header(m.len(), 16);
                for (k, x) in m.iter() {
                    wire += str_size(k);
                    heap += crate::event::str_heap(k);
                    // Strings, most values, and numbers without the recursive call's frame
                    // (a call per number was ~70 instructions; twelfth session).
                    match x {
                        Value::Str(s) => {
                            wire += str_size(s);
                            heap += crate::event::str_heap(s);
                        }
                        Value::Int(i) => wire += int_size(*i),
                        Value::Float(_) => wire += 9,
                        x => self.value(x),
                    }
                }
                self.heap += heap;
                self.wire += wire;
            }
            Value::Array(a) => {
                self.heap += a.capacity() * std::mem::size_of::<Value>();
                self.wire += len_header(a.len(), 16);
                for x in a {
                    self.value(x);
                }
            }
            // Shared: its heap is not the record's (see `Value::heap_size`).
            Value::SharedMap(m) => self.wire += map_size(m),
        }
    }
}

fn map_size(m: &Map) -> usize {
    len_header(m.len(), 16) + map_body_size(m)
}

fn map_body_size(m: &Map) -> usize {
    m.iter().map(|(k, v)| str_size(k) + value_size(v)).sum()
}

/// Header bytes of a map or array of `n` entries (`fix` is how many fit in the fix form).
fn len_header(n: usize, fix: usize) -> usize {
    if n < fix {
        1
    } else if n <= 0xffff {
        3
    } else {
        5
    }
}

fn str_size(s: &str) -> usize {
    let n = s.len();
    let head = if n < 32 {
        1
    } else if n <= 0xff {
        2
    } else if n <= 0xffff {
        3
    } else {
        5
    };
    head + n
}

fn uint_size(u: u64) -> usize {
    if u < 128 {
        1
    } else if u <= 0xff {
        2
    } else if u <= 0xffff {
        3
    } else if u <= 0xffff_ffff {
        5
    } else {
        9
    }
}

fn int_size(i: i64) -> usize {
    if i >= 0 {
        uint_size(i as u64)
    } else if i >= -32 {
        1
    } else if i >= i64::from(i8::MIN) {
        2
    } else if i >= i64::from(i16::MIN) {
        3
    } else if i >= i64::from(i32::MIN) {
        5
    } else {
        9
    }
}

fn value_size(v: &Value) -> usize {
    match v {
        Value::Null | Value::Bool(_) => 1,
        Value::Int(i) => int_size(*i),
        Value::UInt(u) => uint_size(*u),
        Value::Float(_) => 9,
        Value::Str(s) => str_size(s),
        Value::Array(a) => len_header(a.len(), 16) + a.iter().map(value_size).sum::<usize>(),
        Value::Map(m) => map_size(m),
        Value::SharedMap(m) => map_size(m),
    }
}

/// Deepest nesting [`read_records`] follows; deeper data is an error.
pub const MAX_DEPTH: usize = 512;

/// Why bytes are not a sequence of records.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MsgpackError {
    #[error("msgpack data ends in the middle of a value at byte {0}")]
    Truncated(usize),
    #[error("unexpected msgpack byte 0x{byte:02x} at byte {at}")]
    Unexpected { byte: u8, at: usize },
    #[error("msgpack nested deeper than {MAX_DEPTH} at byte {0}")]
    TooDeep(usize),
    #[error("a record at byte {0} is not [[time, metadata], body] or [time, body]")]
    NotARecord(usize),
}

/// Reads every record in `buf`. Fluent Bit's group markers (times -1 and -2, which open and
/// close OpenTelemetry groups) are skipped.
pub fn read_records(buf: &[u8]) -> Result<Vec<Record>, MsgpackError> {
    read(buf, false)
}

/// [`read_records`] of data followed by zero bytes (a file grown in zeroed pages): reading
/// stops where only zeros are left.
pub fn read_records_before_padding(buf: &[u8]) -> Result<Vec<Record>, MsgpackError> {
    read(buf, true)
}

/// Reads the one value at the start of `buf`: the value and the bytes it took. Binary data and
/// ext values other than `EventTime` come back as strings (lossy), as in [`read_records`]; an
/// `EventTime` comes back as `[secs, nanos]`.
pub fn read_value(buf: &[u8]) -> Result<(Value, usize), MsgpackError> {
    let mut r = Reader { buf, at: 0 };
    let v = r.value(0)?;
    Ok((v, r.at))
}

fn read(buf: &[u8], padded: bool) -> Result<Vec<Record>, MsgpackError> {
    let mut r = Reader { buf, at: 0 };
    let mut out = Vec::new();
    while r.at < buf.len() {
        if padded && buf[r.at..].iter().all(|&b| b == 0) {
            break;
        }
        let start = r.at;
        let v = r.value(0)?;
        let Value::Array(mut parts) = v else {
            return Err(MsgpackError::NotARecord(start));
        };
        if parts.len() != 2 {
            return Err(MsgpackError::NotARecord(start));
        }
        let body = parts.pop().unwrap_or_default();
        let head = parts.pop().unwrap_or_default();
        // `[[time, metadata], body]`; a bare ext EventTime (`[time, body]`, decoded as
        // `[secs, nanos]`) is not that.
        let time = match head {
            Value::Array(mut tm) if !tm.is_empty() && !is_event_time(&tm) => {
                tm.truncate(1);
                tm.pop().unwrap_or_default()
            }
            other => other,
        };
        let time = match time {
            Value::Int(-1) | Value::Int(-2) => continue,
            Value::Int(s) => EventTime::from_parts(s, 0),
            Value::UInt(s) => EventTime::from_parts(s.min(i64::MAX as u64) as i64, 0),
            Value::Float(f) => EventTime((f * 1e9) as i64),
            Value::Array(ref a) if a.len() == 2 => match (&a[0], &a[1]) {
                // The ext EventTime, decoded by `ext` as [secs, nanos].
                (Value::UInt(s), Value::UInt(n)) => EventTime::from_parts(*s as i64, *n as u32),
                _ => return Err(MsgpackError::NotARecord(start)),
            },
            _ => return Err(MsgpackError::NotARecord(start)),
        };
        let body = match body.into_map() {
            Ok(m) => m,
            Err(_) => return Err(MsgpackError::NotARecord(start)),
        };
        out.push(Record::new(time, body));
    }
    Ok(out)
}

fn is_event_time(a: &[Value]) -> bool {
    matches!(a, [Value::UInt(_), Value::UInt(_)])
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], MsgpackError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(MsgpackError::Truncated(self.at))?;
        let s = &self.buf[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn byte(&mut self) -> Result<u8, MsgpackError> {
        Ok(self.take(1)?[0])
    }

    fn be(&mut self, n: usize) -> Result<u64, MsgpackError> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }

    fn str(&mut self, n: usize) -> Result<Str, MsgpackError> {
        let b = self.take(n)?;
        Ok(match std::str::from_utf8(b) {
            Ok(s) => Str::from(s),
            Err(_) => Str::from(String::from_utf8_lossy(b).as_ref()),
        })
    }

    /// Room for `n` items of at least one byte each: a length claiming more than the data
    /// holds is refused before anything is allocated for it.
    fn count(&self, n: usize, per: usize) -> Result<usize, MsgpackError> {
        if n.saturating_mul(per) > self.buf.len() - self.at {
            return Err(MsgpackError::Truncated(self.at));
        }
        Ok(n)
    }

    fn array(&mut self, n: usize, depth: usize) -> Result<Value, MsgpackError> {
        let n = self.count(n, 1)?;
        let mut a = Vec::with_capacity(n);
        for _ in 0..n {
            a.push(self.value(depth + 1)?);
        }
        Ok(Value::Array(a))
    }

    fn map(&mut self, n: usize, depth: usize) -> Result<Value, MsgpackError> {
        let n = self.count(n, 2)?;
        let mut m = Map::with_capacity(n);
        for _ in 0..n {
            let at = self.at;
            let k = match self.value(depth + 1)? {
                Value::Str(s) => s,
                Value::Int(i) => Str::from(i.to_string()),
                Value::UInt(u) => Str::from(u.to_string()),
                Value::Bool(b) => Str::from(if b { "true" } else { "false" }),
                _ => {
                    return Err(MsgpackError::Unexpected {
                        byte: self.buf[at],
                        at,
                    })
                }
            };
            let v = self.value(depth + 1)?;
            m.0.push((k, v));
        }
        Ok(Value::Map(m))
    }

    /// An ext value: type 0 with 8 bytes is an EventTime, returned as `[secs, nanos]`; any
    /// other ext is kept as its bytes in a string (lossy), as nothing in a log record uses one.
    fn ext(&mut self, n: usize) -> Result<Value, MsgpackError> {
        let ty = self.byte()?;
        if ty == 0 && n == 8 {
            let s = self.be(4)?;
            let ns = self.be(4)?;
            return Ok(Value::Array(vec![Value::UInt(s), Value::UInt(ns)]));
        }
        Ok(Value::Str(self.str(n)?))
    }

    fn value(&mut self, depth: usize) -> Result<Value, MsgpackError> {
        if depth > MAX_DEPTH {
            return Err(MsgpackError::TooDeep(self.at));
        }
        let at = self.at;
        let b = self.byte()?;
        Ok(match b {
            0x00..=0x7f => Value::Int(i64::from(b)),
            0x80..=0x8f => return self.map(usize::from(b & 0x0f), depth),
            0x90..=0x9f => return self.array(usize::from(b & 0x0f), depth),
            0xa0..=0xbf => Value::Str(self.str(usize::from(b & 0x1f))?),
            0xc0 => Value::Null,
            0xc2 => Value::Bool(false),
            0xc3 => Value::Bool(true),
            0xc4 | 0xd9 => {
                let n = self.be(1)? as usize;
                Value::Str(self.str(n)?)
            }
            0xc5 | 0xda => {
                let n = self.be(2)? as usize;
                Value::Str(self.str(n)?)
            }
            0xc6 | 0xdb => {
                let n = self.be(4)? as usize;
                Value::Str(self.str(n)?)
            }
            0xc7 => {
                let n = self.be(1)? as usize;
                return self.ext(n);
            }
            0xc8 => {
                let n = self.be(2)? as usize;
                return self.ext(n);
            }
            0xc9 => {
                let n = self.be(4)? as usize;
                return self.ext(n);
            }
            0xca => Value::Float(f64::from(f32::from_bits(self.be(4)? as u32))),
            0xcb => Value::Float(f64::from_bits(self.be(8)?)),
            0xcc => Value::Int(self.be(1)? as i64),
            0xcd => Value::Int(self.be(2)? as i64),
            0xce => Value::Int(self.be(4)? as i64),
            0xcf => {
                let u = self.be(8)?;
                i64::try_from(u).map_or(Value::UInt(u), Value::Int)
            }
            0xd0 => Value::Int(i64::from(self.be(1)? as u8 as i8)),
            0xd1 => Value::Int(i64::from(self.be(2)? as u16 as i16)),
            0xd2 => Value::Int(i64::from(self.be(4)? as u32 as i32)),
            0xd3 => Value::Int(self.be(8)? as i64),
            0xd4 => return self.ext(1),
            0xd5 => return self.ext(2),
            0xd6 => return self.ext(4),
            0xd7 => return self.ext(8),
            0xd8 => return self.ext(16),
            0xdc => {
                let n = self.be(2)? as usize;
                return self.array(n, depth);
            }
            0xdd => {
                let n = self.be(4)? as usize;
                return self.array(n, depth);
            }
            0xde => {
                let n = self.be(2)? as usize;
                return self.map(n, depth);
            }
            0xdf => {
                let n = self.be(4)? as usize;
                return self.map(n, depth);
            }
            0xe0..=0xff => Value::Int(i64::from(b as i8)),
            0xc1 => return Err(MsgpackError::Unexpected { byte: b, at }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `event_size` is the length `write_record` writes, for every kind and size of value.
    #[test]
    fn event_size_is_the_encoded_length() {
        let mut big = Map::new();
        for i in 0..20 {
            big.insert(format!("k{i}"), i as i64);
        }
        let mut body = Map::new();
        body.insert("s", "x".repeat(31));
        body.insert("s8", "x".repeat(200));
        body.insert("s16", "x".repeat(70_000));
        body.insert("u", Value::UInt(u64::MAX));
        body.insert("i", Value::Int(i64::MIN));
        body.insert("small", Value::Int(-5));
        body.insert("i16", Value::Int(-300));
        body.insert("i32", Value::Int(-70_000));
        body.insert("u16", Value::UInt(300));
        body.insert("u32", Value::UInt(70_000));
        body.insert("f", 1.5f64);
        body.insert("n", Value::Null);
        body.insert("a", Value::Array((0..20).map(Value::Int).collect()));
        body.insert("m", Value::Map(big.clone()));
        body.insert("sm", Value::SharedMap(std::sync::Arc::new(big)));
        for b in [Map::new(), body] {
            let r = Record::new(EventTime::from_parts(1_700_000_000, 5), b);
            let mut out = Vec::new();
            write_record(&mut out, &r);
            assert_eq!(event_size(&r, MapHeaders::Compact), out.len());
        }
    }

    /// The one-walk sizes equal the two walks, for every kind of value, nested and shared.
    #[test]
    fn mem_and_event_size_match_the_two_walks() {
        let mut inner = Map::with_capacity(9);
        inner.insert("k", "v".repeat(40));
        // Numbers in a nested map are sized in the map's own loop.
        inner.insert("i", Value::Int(-70_000));
        inner.insert("u", Value::Int(200));
        inner.insert("f", 2.5f64);
        inner.insert(
            "a",
            Value::Array(vec![Value::Int(1), Value::from("x".repeat(30))]),
        );
        let shared = std::sync::Arc::new(inner.clone());
        let mut body = Map::with_capacity(12);
        body.insert("log", "x".repeat(200));
        body.insert("short", "x");
        body.insert("n", Value::Null);
        body.insert("b", true);
        body.insert("u", Value::UInt(u64::MAX));
        body.insert("i", Value::Int(-70_000));
        body.insert("f", 2.5f64);
        body.insert("m", Value::Map(inner));
        body.insert(
            "kubernetes",
            Value::SharedMap(std::sync::Arc::clone(&shared)),
        );
        let mut memo = None;
        for b in [Map::new(), body.clone(), body] {
            let r = Record::new(EventTime::from_parts(1_700_000_000, 5), b);
            for h in [MapHeaders::Compact, MapHeaders::Dynamic] {
                let (mem, wire) = mem_and_event_size(&r, h, &mut memo);
                assert_eq!(mem, r.mem_size());
                assert_eq!(wire, event_size(&r, h));
            }
        }
    }

    /// The memo sizes a run of records sharing one map as the plain walk does, and a different
    /// shared map (or none) is sized anew.
    #[test]
    fn event_size_memo_matches_event_size() {
        let shared = |n: i64| {
            let mut m = Map::new();
            for i in 0..n {
                m.insert(format!("k{i}"), "v".repeat(i as usize));
            }
            Value::SharedMap(std::sync::Arc::new(m))
        };
        let (a, b) = (shared(3), shared(40));
        let recs: Vec<Record> = [Some(&a), Some(&a), Some(&b), None, Some(&b), Some(&a)]
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let mut body = Map::new();
                body.insert("log", "x".repeat(i * 10));
                if let Some(k) = k {
                    body.insert("kubernetes", (*k).clone());
                }
                Record::new(EventTime::from_parts(1, 0), body)
            })
            .collect();
        for h in [MapHeaders::Compact, MapHeaders::Dynamic] {
            let mut memo = None;
            for r in &recs {
                assert_eq!(event_size_memo(r, h, &mut memo), event_size(r, h));
            }
        }
    }

    /// Fluent Bit 5.1.1's `dummy` record `{"message":"dummy"}` counts 28 bytes; its `tail`
    /// record `{"log":"line one"}` counts 35, because tail's encoder writes both of the record's
    /// maps as map32 (bytes read back from Fluent Bit's `file` output with `Format msgpack`).
    #[test]
    fn event_size_counts_as_fluent_bit() {
        let mut body = Map::new();
        body.insert("message", "dummy");
        let r = Record::new(EventTime::from_parts(1, 0), body);
        assert_eq!(event_size(&r, MapHeaders::Compact), 28);
        let lines = ["line one", "{\"a\":1}", "line three is longer"];
        let total: usize = lines
            .iter()
            .map(|l| {
                let mut body = Map::new();
                body.insert("log", *l);
                event_size(
                    &Record::new(EventTime::from_parts(1, 0), body),
                    MapHeaders::Dynamic,
                )
            })
            .sum();
        assert_eq!(total, 116);
    }

    #[test]
    fn record_bytes() {
        let mut body = Map::new();
        body.insert("a", 1i64);
        body.insert("b", -33i64);
        body.insert(
            "c",
            Value::Array(vec![Value::Null, Value::Bool(true), Value::UInt(300)]),
        );
        let r = Record::new(EventTime::from_parts(1, 2), body);
        let mut out = Vec::new();
        write_record(&mut out, &r);
        assert_eq!(
            out,
            [
                0x92, 0x92, 0xd7, 0x00, 0, 0, 0, 1, 0, 0, 0, 2, 0x80, 0x83, 0xa1, b'a', 0x01, 0xa1,
                b'b', 0xd0, 0xdf, 0xa1, b'c', 0x93, 0xc0, 0xc3, 0xcd, 0x01, 0x2c,
            ]
        );
    }

    #[test]
    fn records_round_trip() {
        let mut body = Map::new();
        body.insert("log", "héllo\n");
        body.insert("n", -70000i64);
        body.insert("u", Value::UInt(u64::MAX));
        body.insert("f", 1.5f64);
        let mut inner = Map::new();
        inner.insert("k", Value::Array(vec![Value::Null, Value::Bool(false)]));
        body.insert("kubernetes", Value::Map(inner));
        body.insert("long", "x".repeat(70_000));
        let a = Record::new(EventTime::from_parts(1_700_000_000, 123_456_789), body);
        let b = Record::new(EventTime::from_parts(5, 0), Map::new());
        let mut out = Vec::new();
        write_record(&mut out, &a);
        write_record(&mut out, &b);
        assert_eq!(read_records(&out).unwrap(), vec![a, b]);
    }

    #[test]
    fn older_forms_and_group_markers() {
        // [int time, body], [float time, body], and a v2 group start marker.
        let data = [
            0x92, 0xce, 0x65, 0x53, 0xf1, 0x00, 0x81, 0xa1, b'a', 0x01, //
            0x92, 0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0, 0x80, //
            0x92, 0x92, 0xff, 0x80, 0x80,
        ];
        let got = read_records(&data).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].time, EventTime::from_parts(1_700_000_000, 0));
        assert_eq!(got[0].body.get("a"), Some(&Value::Int(1)));
        assert_eq!(got[1].time, EventTime(1_500_000_000));
    }

    #[test]
    fn bad_input_is_an_error_never_a_panic() {
        let mut good = Vec::new();
        let mut body = Map::new();
        body.insert("log", "line");
        write_record(&mut good, &Record::new(EventTime::from_parts(1, 2), body));
        for cut in 0..good.len() {
            assert!(
                read_records(&good[..cut]).is_err() || cut == 0,
                "cut at {cut}"
            );
        }
        // A length far beyond the data.
        assert!(read_records(&[0x92, 0xdd, 0xff, 0xff, 0xff, 0xff]).is_err());
        // Nesting deeper than MAX_DEPTH.
        let deep = vec![0x91u8; MAX_DEPTH + 10];
        assert!(matches!(read_records(&deep), Err(MsgpackError::TooDeep(_))));
        assert!(read_records(&[0xc1]).is_err());
        assert!(read_records(&[0x01]).is_err(), "not a record");
    }
}
