//! Container log framing: Docker json-file lines and CRI lines, decoded without a generic JSON
//! tree, and the joining of split lines (Docker's 16 KiB pieces without a trailing `\n`, CRI `P`
//! partials up to the `F` line), one pending message per stream so stdout and stderr never mix.
//!
//! A line that does not decode is never dropped: it becomes `{"log": <line>}`.

use logferry_core::json_fast::SHORT_ESCAPES;
use logferry_core::{EventTime, Map, Record, Str, Value};
use logferry_parsers::time::{byte_mask, days_of, digits_in_word, word};

/// How a line becomes a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// The whole line under `Key`.
    Raw,
    /// Docker json-file: the JSON object as is, time from its `time` key (kept).
    Docker,
    /// CRI: `<time> <stream> <P|F> <log>` → `time`, `stream`, `_p`, `log`.
    Cri,
    /// Try Docker, then CRI (`multiline.parser docker, cri`).
    DockerOrCri,
}

/// The result of decoding one line.
pub struct Decoded {
    pub record: Record,
    /// Whether this is an unfinished piece (Docker line without `\n`, CRI `P`).
    pub partial: bool,
    /// Which stream (for joining): 0 stdout, 1 stderr, 2 other.
    pub stream: u8,
}

fn stream_id(s: &str) -> u8 {
    match s {
        "stdout" => 0,
        "stderr" => 1,
        _ => 2,
    }
}

/// Parses RFC 3339 timestamps as Docker and CRI write them (`2019-12-19T17:41:12.70630778Z`,
/// `2024-01-02T03:04:05.123456789+02:00`), any number of fraction digits.
///
/// Every container line has one, so the fixed head is read without a loop: its fourteen
/// digits are checked a word at a time ([`digits_in_word`]), eight fraction digits are read
/// as one word, and the day number of the last date is remembered ([`days_of`])
/// (docs/performance.md, twelfth session). `tests::rfc3339_matches_the_digit_loop` holds it
/// to the loop it replaced.
pub fn parse_rfc3339(s: &str) -> Option<EventTime> {
    let b = s.as_bytes();
    let head: &[u8; 19] = b.get(..19)?.try_into().ok()?;
    if b.len() < 20
        || head[4] != b'-'
        || head[7] != b'-'
        || !matches!(head[10], b'T' | b't' | b' ')
        || head[13] != b':'
        || head[16] != b':'
    {
        return None;
    }
    // Digits at 0 1 2 3 5 6 8 9 11 12 14 15 17 18, by the words holding them.
    if !(digits_in_word(word(head, 0)?, byte_mask(&[0, 1, 2, 3, 5, 6]))
        && digits_in_word(word(head, 8)?, byte_mask(&[0, 1, 3, 4, 6, 7]))
        && digits_in_word(word(head, 11)?, byte_mask(&[6, 7])))
    {
        return None;
    }
    let d = |i: usize| head[i].wrapping_sub(b'0');
    let two = |i: usize| i64::from(d(i)) * 10 + i64::from(d(i + 1));
    let (y, mo, day) = (two(0) * 100 + two(2), two(5), two(8));
    let (h, mi, sec) = (two(11), two(14), two(17));
    if !(1..=12).contains(&mo) || !(1..=31).contains(&day) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0i64;
    if b[19] == b'.' {
        i = 20;
        // Docker and CRI write up to nine digits (Go's RFC3339Nano drops trailing zeros):
        // the first eight at once where they are all digits, else one at a time.
        let mut digits = 0;
        if let Some(n) = b.get(20..28).and_then(eight_digits) {
            (nanos, digits, i) = (n as i64, 8, 28);
        }
        while let Some(v) = b.get(i).map(|c| c.wrapping_sub(b'0')).filter(|v| *v <= 9) {
            if digits < 9 {
                nanos = nanos * 10 + i64::from(v);
                digits += 1;
            }
            i += 1;
        }
        nanos *= POW10[9 - digits];
    }
    let offset = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        c @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let num = |r: std::ops::Range<usize>| -> Option<i64> {
                b.get(r)?.iter().try_fold(0i64, |v, c| {
                    c.is_ascii_digit().then(|| v * 10 + i64::from(c - b'0'))
                })
            };
            let off = num(i + 1..i + 3)? * 3600 + num(i + 4..i + 6)? * 60;
            if *c == b'+' {
                off
            } else {
                -off
            }
        }
        _ => return None,
    };
    let days = days_of(y, mo, day);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset;
    // Nanoseconds in an i64 end in 2262: a later (or much earlier) time is not read, and the
    // line gets the time it is read at, like any other time that does not parse.
    let ns = secs.checked_mul(1_000_000_000)?.checked_add(nanos)?;
    Some(EventTime(ns))
}

/// 10^n for the fraction digits a time did not write.
const POW10: [i64; 10] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
    1_000_000_000,
];

/// The number eight ASCII digits spell (the first the most significant), `None` unless all
/// eight are digits: a check and three multiplications for the word instead of a loop.
fn eight_digits(b: &[u8]) -> Option<u64> {
    let w = u64::from_le_bytes(b.try_into().ok()?);
    if !digits_in_word(w, !0) {
        return None;
    }
    let v = w - 0x3030_3030_3030_3030;
    // Pairs: bytes 0, 2, 4 and 6 hold d0d1, d2d3, d4d5 and d6d7 (each at most 99).
    let v = v * 10 + (v >> 8);
    // d0d1·10^6 + d4d5·10^2 and d2d3·10^4 + d6d7 land in the high half of the products.
    const PAIRS: u64 = 0x0000_00FF_0000_00FF;
    let v = (v & PAIRS)
        .wrapping_mul(100 + (1_000_000 << 32))
        .wrapping_add(((v >> 16) & PAIRS).wrapping_mul(1 + (10_000 << 32)));
    Some(v >> 32)
}

/// Decodes a Docker json-file line. `None` if it is not a JSON object with a string `log`.
pub fn decode_docker(line: &[u8]) -> Option<Decoded> {
    let (body, fast) = match docker_fast(line) {
        Some(m) => (m, true),
        None => (serde_json::from_slice::<Map>(line).ok()?, false),
    };
    // The fast path's map holds `log`, `stream` and `time` in that order: read in place,
    // not looked up by key.
    let (log, stream, time) = match body.0.as_slice() {
        [(_, Value::Str(l)), (_, Value::Str(s)), (_, Value::Str(t))] if fast => {
            (l.as_str(), Some(s.as_str()), Some(t.as_str()))
        }
        _ => (
            body.get("log")?.as_str()?,
            body.get("stream").and_then(Value::as_str),
            body.get("time").and_then(Value::as_str),
        ),
    };
    let partial = !log.ends_with('\n');
    let stream = stream.map_or(2, stream_id);
    let time = time.and_then(parse_rfc3339).unwrap_or_else(EventTime::now);
    Some(Decoded {
        record: Record::new(time, body),
        partial,
        stream,
    })
}

/// The exact shape Docker's json-file driver writes, `{"log":"…","stream":"…","time":"…"}`,
/// decoded by a scan for quotes and backslashes instead of a generic JSON parser: no
/// intermediate tree, one copy of `log`. Anything else (other keys or order, `\u` escapes,
/// spaces, invalid UTF-8) returns `None` and takes the general path, which gives the same map.
fn docker_fast(line: &[u8]) -> Option<Map> {
    let line = trim_ascii_end(line);
    // One vectorized pass for what JSON strings may not hold raw, then one UTF-8 check for the
    // whole line; after that, slicing at ASCII quotes and backslashes needs no more checks.
    if line.iter().fold(false, |bad, &c| bad | (c < 0x20)) {
        return None;
    }
    // simdutf8 checks 32 bytes a step where the CPU has AVX2; the standard library's check
    // took twice the instructions of the whole line's word scan (twelfth session).
    let line = simdutf8::basic::from_utf8(line).ok()?;
    let rest = line.strip_prefix(r#"{"log":""#)?;
    // Two spare pairs: the kubernetes filter appends `kubernetes` to nearly every container
    // record, and under the seed's `Merge_Log_Key` the merged map too; with one spare, every
    // such record was reallocated to 5 (8% of P3's CPU samples with the frees; a map left to
    // grow by doubling would hold 112 bytes per record unused). Without the filter the second
    // spare is 56 bytes per record held (P1's peak RSS did not move; docs/performance.md).
    // The pairs are pushed from constants and the strings read into them where they stay: a
    // string made on the stack and moved in was read back with wider loads than the stores
    // that made it (a store-forwarding stall per field).
    let mut body = Map::with_capacity(5);
    // One push per constant: a loop over an array of them copied the array to the stack
    // and each pair out of it at other widths, the very stall this avoids.
    body.0.push(const { pair(LOG) });
    body.0.push(const { pair(STREAM) });
    body.0.push(const { pair(TIME) });
    let [(_, Value::Str(log)), (_, Value::Str(stream)), (_, Value::Str(time))] =
        body.0.as_mut_slice()
    else {
        return None;
    };
    let rest = json_string(rest, log)?;
    let rest = rest.strip_prefix(r#","stream":""#)?;
    // The two streams Docker writes are constants: no scan, no copy.
    let rest = if let Some(r) = rest.strip_prefix("stdout\"") {
        *stream = STDOUT;
        r
    } else if let Some(r) = rest.strip_prefix("stderr\"") {
        *stream = STDERR;
        r
    } else {
        json_string(rest, stream)?
    };
    let rest = rest.strip_prefix(r#","time":""#)?;
    let rest = json_string(rest, time)?;
    if rest != "}" {
        return None;
    }
    Some(body)
}

/// A pair of a container record before its string is read into it: a constant, so the push
/// copies it from read-only data rather than from a stack slot just written.
const fn pair(key: Str) -> (Str, Value) {
    (key, Value::Str(Str::const_new("")))
}

/// The keys of a container log record, made once at compile time rather than copied into a
/// new `CompactString` for every line.
const LOG: Str = Str::const_new("log");
const STREAM: Str = Str::const_new("stream");
const TIME: Str = Str::const_new("time");
const PARTIAL: Str = Str::const_new("_p");
const STDOUT: Str = Str::const_new("stdout");
const STDERR: Str = Str::const_new("stderr");
const TAG_P: Str = Str::const_new("P");
const TAG_F: Str = Str::const_new("F");

/// JSON's own whitespace only (space, tab, CR, LF): `<[u8]>::trim_ascii_end` would also take a
/// form feed, which serde_json rejects after the object, and the two paths must agree.
fn trim_ascii_end(mut b: &[u8]) -> &[u8] {
    while let [rest @ .., b' ' | b'\t' | b'\r' | b'\n'] = b {
        b = rest;
    }
    b
}

/// Reads a JSON string body up to its closing quote (the opening one is already consumed)
/// into `dst` (empty); returns what follows the quote. `None` on `\u` escapes (and any
/// unknown escape), which the general parser handles (or rejects) instead.
///
/// Application JSON inside `log` has an escaped quote every few bytes, so after the first
/// escape the text is read 8 bytes at a time with an exact mask of its quotes and
/// backslashes: every escape inside a word is handled from the word itself (no reload, no
/// call), and each word is stored whole at the write position, which moves only over the
/// bytes that belong. The output is made once at the rest of the line's length (unescaping
/// only shrinks).
fn json_string<'s>(s: &'s str, dst: &mut Str) -> Option<&'s str> {
    let b = s.as_bytes();
    let first = first_special(b)?;
    if b[first] == b'"' {
        // A Docker `time` is 30 bytes: made at its length, growing the empty inline string
        // took 60% more instructions.
        set_str(dst, s.get(..first)?);
        return s.get(first + 1..);
    }
    // +8: a word is stored whole even where the text ends inside it.
    let mut out = vec![0u8; b.len() + 8];
    out.get_mut(..first)?.copy_from_slice(&b[..first]);
    // b[..i] is read, out[..o] written.
    let (mut i, mut o) = (first, first);
    'words: while let Some(chunk) = b.get(i..i + 8) {
        let mut w = u64::from_le_bytes(<[u8; 8]>::try_from(chunk).ok()?);
        let mut m = specials(w);
        // Bytes of `w` not yet read.
        let mut left = 8;
        loop {
            out.get_mut(o..o + 8)?.copy_from_slice(&w.to_le_bytes());
            if m == 0 {
                i += left;
                o += left;
                continue 'words;
            }
            let k = (m.trailing_zeros() / 8) as usize;
            i += k;
            o += k;
            if (w >> (8 * k)) as u8 == b'"' {
                return finish(out, o, s, i, dst);
            }
            // A backslash; the byte it escapes is the next one, in `w` unless it was last.
            let e = if k + 1 < left {
                (w >> (8 * (k + 1))) as u8
            } else {
                *b.get(i + 1)?
            };
            let c = SHORT_ESCAPES[usize::from(e)];
            if c == 0 {
                return None;
            }
            *out.get_mut(o)? = c;
            i += 2;
            o += 1;
            if k + 2 >= left {
                continue 'words;
            }
            let shift = 8 * (k as u32 + 2);
            w >>= shift;
            m >>= shift;
            left -= k + 2;
        }
    }
    // The last few bytes, one at a time.
    loop {
        match *b.get(i)? {
            b'"' => return finish(out, o, s, i, dst),
            b'\\' => {
                let c = SHORT_ESCAPES[usize::from(*b.get(i + 1)?)];
                if c == 0 {
                    return None;
                }
                *out.get_mut(o)? = c;
                i += 2;
            }
            c => {
                *out.get_mut(o)? = c;
                i += 1;
            }
        }
        o += 1;
    }
}

/// The index of the first quote or backslash in `b`. The first 32 bytes are read a word at a
/// time: a Docker line's `time` (30 bytes) and `stream`, and many a short log, end there, and a
/// call to the vectorized search cost more than the scan (twelfth session).
fn first_special(b: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < 32 {
        let Some(chunk) = b.get(i..i + 8) else {
            break;
        };
        let m = specials(u64::from_le_bytes(<[u8; 8]>::try_from(chunk).ok()?));
        if m != 0 {
            return Some(i + (m.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    Some(i + memchr::memchr2(b'"', b'\\', b.get(i..)?)?)
}

/// `json_string`'s result: the first `len` bytes of `out` into `dst`, and the text after the
/// quote at `quote`.
fn finish<'s>(
    mut out: Vec<u8>,
    len: usize,
    s: &'s str,
    quote: usize,
    dst: &mut Str,
) -> Option<&'s str> {
    out.truncate(len);
    // Only ASCII was cut at or put in, so the text is still UTF-8.
    let text = String::from_utf8(out).ok()?;
    if text.len() <= INLINE {
        dst.push_str(&text);
    } else {
        // The buffer becomes the string's own.
        *dst = Str::from(text);
    }
    s.get(quote + 1..)
}

/// The longest string a `Str` holds inline.
const INLINE: usize = std::mem::size_of::<Str>();

/// The high bit of each byte of `w` that is a quote or a backslash, and no other bit: exact
/// for every byte (no borrow runs from one byte into the next), so every hit in a word can be
/// taken from one mask.
fn specials(w: u64) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    let zero = |x: u64| !(((x & LOW7) + LOW7) | x | LOW7);
    zero(w ^ QUOTES) | zero(w ^ BACKSLASHES)
}

const QUOTES: u64 = 0x2222_2222_2222_2222;
const BACKSLASHES: u64 = 0x5c5c_5c5c_5c5c_5c5c;

/// Decodes a CRI line (`<time> <stream> <tag> <log>`). `None` if it is not one.
///
/// The fields are cut at the first three spaces by hand, and the stream and the tag's `P` or
/// `F` are constants: `str::splitn` cost 518 instructions per P4 line and growing four empty
/// strings 367 more (twelfth session). `tests::cri_matches_splitn` holds it to the `splitn`
/// reading it replaced.
pub fn decode_cri(line: &[u8]) -> Option<Decoded> {
    let s = simdutf8::basic::from_utf8(line).ok()?;
    let at = memchr::memchr(b' ', s.as_bytes())?;
    let (time_s, rest) = (s.get(..at)?, s.get(at + 1..)?);
    // The stream must be followed by a space: a line that ends after it has no tag.
    let (stream, sid, rest) = if let Some(r) = rest.strip_prefix("stdout ") {
        (STDOUT, 0, r)
    } else if let Some(r) = rest.strip_prefix("stderr ") {
        (STDERR, 1, r)
    } else {
        return None;
    };
    let (tag, log) = match memchr::memchr(b' ', rest.as_bytes()) {
        Some(k) => (rest.get(..k)?, rest.get(k + 1..)?),
        None => (rest, ""),
    };
    let time = parse_rfc3339(time_s)?;
    // The tag is `P` or `F`, possibly with more `:`-separated flags after it.
    let p = tag.split(':').next()?;
    let partial = match p {
        "P" => true,
        "F" => false,
        _ => return None,
    };
    // One spare pair for the kubernetes filter's `kubernetes`; the pairs made in place (both
    // as in `docker_fast`).
    let mut body = Map::with_capacity(5);
    body.0.push(const { pair(TIME) });
    body.0.push(const { pair(STREAM) });
    body.0.push(const { pair(PARTIAL) });
    body.0.push(const { pair(LOG) });
    if let [(_, Value::Str(t)), (_, Value::Str(st)), (_, Value::Str(pp)), (_, Value::Str(l))] =
        body.0.as_mut_slice()
    {
        set_str(t, time_s);
        *st = stream;
        *pp = if partial { TAG_P } else { TAG_F };
        set_str(l, log);
    }
    Some(Decoded {
        record: Record::new(time, body),
        partial,
        stream: sid,
    })
}

/// `text` into `dst` (empty): pushed where it fits inline (a string built on the stack and
/// moved in was read back wider than it was written), else made at its length in one step.
fn set_str(dst: &mut Str, text: &str) {
    if text.len() <= INLINE {
        dst.push_str(text);
    } else {
        *dst = Str::from(text);
    }
}

/// A record holding the raw line, for lines that do not decode (never dropped).
pub fn raw_record(key: &str, line: &[u8]) -> Record {
    let mut body = Map::with_capacity(1);
    body.push(key, Value::Str(Str::from(String::from_utf8_lossy(line))));
    Record::new(EventTime::now(), body)
}

impl Framing {
    /// Decodes one line with this framing; falls back to a raw record.
    pub fn decode(self, key: &str, line: &[u8]) -> Decoded {
        let d = match self {
            Framing::Raw => None,
            Framing::Docker => decode_docker(line),
            Framing::Cri => decode_cri(line),
            Framing::DockerOrCri => decode_docker(line).or_else(|| decode_cri(line)),
        };
        d.unwrap_or_else(|| Decoded {
            record: raw_record(key, line),
            partial: false,
            stream: 2,
        })
    }
}

/// A message being assembled from split pieces, for one stream.
pub struct Pending {
    pub record: Record,
    /// File offset where its first piece starts (offsets are not committed past it).
    pub start: u64,
    /// File offset just past its last piece.
    pub end: u64,
    pub since: std::time::Instant,
}

/// A joined message cut at the joiner's limit (see [`Joiner::with_limit`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Truncated {
    /// File offset where the message's first piece starts.
    pub start: u64,
    /// Bytes of `log` kept.
    pub kept: usize,
}

/// Joins split lines per stream.
///
/// A message is bounded by its limit (`multiline_buffer_limit`, Fluent Bit's cap on a message
/// assembled from parts, 2MB by default): once its `log` would pass it, the first `limit` bytes
/// (cut at a character boundary) are emitted at once and the rest of that message, up to its
/// last piece, is dropped (Fluent Bit's `flb_ml_group_cat` keeps the first `limit` bytes too).
/// So pieces that never end cost at most `limit` bytes per stream, whatever their total.
#[derive(Default)]
pub struct Joiner {
    pending: [Option<Pending>; 3],
    /// Per stream: dropping the rest of a message cut at the limit, until its last piece.
    dropping: [bool; 3],
    limit: Option<usize>,
}

impl Joiner {
    /// A joiner whose messages hold at most `limit` bytes of `log` (`None`: no limit).
    pub fn with_limit(limit: Option<usize>) -> Self {
        Joiner {
            limit: limit.map(|l| l.max(1)),
            ..Joiner::default()
        }
    }

    /// Feeds one decoded line spanning `[start, end)` of the file. Completed records go to `out`
    /// with the file offset just past their last piece. Returns what was cut when the message
    /// reached the limit with this piece.
    pub fn push(
        &mut self,
        d: Decoded,
        start: u64,
        end: u64,
        out: &mut Vec<(Record, u64)>,
    ) -> Option<Truncated> {
        let i = usize::from(d.stream.min(2));
        if self.dropping[i] {
            // The rest of a message already cut and emitted: dropped up to its last piece.
            if !d.partial {
                self.dropping[i] = false;
            }
            return None;
        }
        let slot = &mut self.pending[i];
        let mut over = false;
        let mut p = match slot.take() {
            Some(mut p) => {
                over = append_log(&mut p.record.body, &d.record.body, self.limit);
                p.end = end;
                if !d.partial {
                    if let Some(v) = d.record.body.get("_p") {
                        p.record.body.insert("_p", v.clone());
                    }
                }
                p
            }
            None if d.partial => Pending {
                record: d.record,
                start,
                end,
                since: std::time::Instant::now(),
            },
            // A whole line on its own: not a joined message (Buffer_Max_Size bounds it).
            None => {
                out.push((d.record, end));
                return None;
            }
        };
        if let Some(limit) = self.limit {
            if over || log_len(&p.record.body) > limit {
                let kept = cut_log(&mut p.record.body, limit);
                let cut = Truncated {
                    start: p.start,
                    kept,
                };
                self.dropping[i] = d.partial;
                out.push((p.record, end));
                return Some(cut);
            }
        }
        if d.partial {
            *slot = Some(p);
        } else {
            out.push((p.record, end));
        }
        None
    }

    /// Emits every pending message older than `older_than` (all if `None`).
    pub fn flush(&mut self, older_than: Option<std::time::Duration>, out: &mut Vec<(Record, u64)>) {
        for slot in &mut self.pending {
            let due = match (slot.as_ref(), older_than) {
                (Some(p), Some(age)) => p.since.elapsed() >= age,
                (Some(_), None) => true,
                (None, _) => false,
            };
            if due {
                if let Some(p) = slot.take() {
                    out.push((p.record, p.end));
                }
            }
        }
    }

    /// Where the earliest pending message starts: offsets must not be committed beyond it.
    pub fn earliest_start(&self) -> Option<u64> {
        self.pending.iter().flatten().map(|p| p.start).min()
    }

    /// Whether anything is waiting.
    pub fn is_empty(&self) -> bool {
        self.pending.iter().all(Option::is_none)
    }

    /// Bytes of `log` held in pending messages.
    pub fn pending_bytes(&self) -> usize {
        self.pending
            .iter()
            .flatten()
            .map(|p| log_len(&p.record.body))
            .sum()
    }
}

fn log_len(m: &Map) -> usize {
    match m.get("log") {
        Some(Value::Str(s)) => s.len(),
        _ => 0,
    }
}

/// Cuts `log` to at most `limit` bytes at a character boundary; returns the bytes kept.
fn cut_log(m: &mut Map, limit: usize) -> usize {
    match m.get_mut("log") {
        Some(Value::Str(s)) => {
            let mut cut = limit.min(s.len());
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            s.truncate(cut);
            cut
        }
        _ => 0,
    }
}

/// Appends `from`'s `log` to `into`'s, at most up to `limit` bytes in all (cut at a character
/// boundary); returns whether some of it did not fit.
fn append_log(into: &mut Map, from: &Map, limit: Option<usize>) -> bool {
    let Some(Value::Str(more)) = from.get("log") else {
        return false;
    };
    match into.get_mut("log") {
        Some(Value::Str(s)) => {
            let room = limit.map_or(usize::MAX, |l| l.saturating_sub(s.len()));
            if more.len() <= room {
                s.push_str(more);
                return false;
            }
            let mut take = room;
            while !more.is_char_boundary(take) {
                take -= 1;
            }
            s.push_str(&more[..take]);
            true
        }
        _ => {
            into.insert("log", more.clone());
            limit.is_some_and(|l| more.len() > l)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzzing (joiner): a year past 2262 overflowed the nanoseconds (a panic with
    /// overflow checks, a wrapped time without).
    #[test]
    fn rfc3339_beyond_i64_nanoseconds_is_not_a_time() {
        assert_eq!(parse_rfc3339("4048-01-02T03:04:05Z"), None);
        assert_eq!(parse_rfc3339("9999-12-31T23:59:59.999999999+00:00"), None);
        assert_eq!(parse_rfc3339("0000-01-01T00:00:00Z"), None);
        assert!(parse_rfc3339("2262-04-11T23:47:16Z").is_some());
        let d = decode_docker(br#"{"log":"x\n","time":"4048-01-02T03:04:05Z"}"#).unwrap();
        let now = EventTime::now();
        assert!(
            (d.record.time.0 - now.0).abs() < 60_000_000_000,
            "read time is used"
        );
    }

    /// The digit loop `parse_rfc3339` replaced (eleventh session and before), kept as the
    /// reference the unrolled head must agree with.
    fn rfc3339_by_loop(s: &str) -> Option<EventTime> {
        let b = s.as_bytes();
        if b.len() < 20
            || b[4] != b'-'
            || b[7] != b'-'
            || (b[10] != b'T' && b[10] != b't' && b[10] != b' ')
        {
            return None;
        }
        let num = |r: std::ops::Range<usize>| -> Option<i64> {
            let mut v = 0i64;
            for &c in b.get(r)? {
                if !c.is_ascii_digit() {
                    return None;
                }
                v = v * 10 + i64::from(c - b'0');
            }
            Some(v)
        };
        let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
        if b[13] != b':' || b[16] != b':' {
            return None;
        }
        let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
            return None;
        }
        let mut i = 19;
        let mut nanos = 0i64;
        if b.get(i) == Some(&b'.') {
            i += 1;
            let mut digits = 0;
            while let Some(c) = b.get(i).filter(|c| c.is_ascii_digit()) {
                if digits < 9 {
                    nanos = nanos * 10 + i64::from(c - b'0');
                    digits += 1;
                }
                i += 1;
            }
            while digits < 9 {
                nanos *= 10;
                digits += 1;
            }
        }
        let offset = match b.get(i)? {
            b'Z' | b'z' if i + 1 == b.len() => 0,
            c @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
                let off = num(i + 1..i + 3)? * 3600 + num(i + 4..i + 6)? * 60;
                if *c == b'+' {
                    off
                } else {
                    -off
                }
            }
            _ => return None,
        };
        let days = logferry_parsers::time::days_from_civil(y, mo, d);
        let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset;
        // Nanoseconds in an i64 end in 2262: a later (or much earlier) time is not read, and the
        // line gets the time it is read at, like any other time that does not parse.
        let ns = secs.checked_mul(1_000_000_000)?.checked_add(nanos)?;
        Some(EventTime(ns))
    }

    /// The unrolled head reads every timestamp as the digit loop did, and refuses what it
    /// refused: valid times of every form, then each byte of them replaced by each of a set
    /// of bytes that are or border on digits and separators.
    #[test]
    fn rfc3339_matches_the_digit_loop() {
        let valid = [
            "2019-12-19T17:41:12.70630778Z",
            "1970-01-01T00:00:00Z",
            "2024-01-02T05:04:05.5+02:00",
            "2024-02-29T23:59:59.123456789123-00:30",
            "2000-02-29 00:00:60.000000001z",
            "1999-09-09t09:09:09.9-09:59",
            "2262-04-11T23:47:16.854775807Z",
            "2262-04-11T23:47:16.854775808Z",
            "2024-05-01T10:00:00.000000001Z",
            "2024-05-01T10:00:00.Z",
            "2024-05-01T10:00:00.1234567Z",
            "2024-05-01T10:00:00.123456789Z",
            "2024-05-01T10:00:00.12345678901+00:00",
        ];
        let bytes = b"0189/:;-+.TtZz x";
        let mut checked = 0;
        for t in valid {
            assert_eq!(parse_rfc3339(t), rfc3339_by_loop(t), "{t}");
            for at in 0..t.len() {
                for &c in bytes {
                    let mut m = t.as_bytes().to_vec();
                    m[at] = c;
                    let m = String::from_utf8(m).unwrap();
                    assert_eq!(parse_rfc3339(&m), rfc3339_by_loop(&m), "{m}");
                    checked += 1;
                }
                let cut = &t[..at];
                assert_eq!(parse_rfc3339(cut), rfc3339_by_loop(cut), "{cut}");
            }
        }
        assert!(checked > 4000, "{checked}");
        // The mutations include times both read and refuse.
        assert!(rfc3339_by_loop("2019-12-19T17:41:19.70630778Z").is_some());
        assert!(rfc3339_by_loop("2019-12-19T17:41:1/.70630778Z").is_none());
    }

    #[test]
    fn eight_digits_reads_only_eight_digits() {
        for n in [
            0u64, 1, 9, 10, 12_345_678, 99_999_999, 70_630_778, 10_000_000, 9_000_009,
        ] {
            let text = format!("{n:08}");
            assert_eq!(eight_digits(text.as_bytes()), Some(n), "{text}");
        }
        // Every byte position, with every byte that is not a digit.
        for at in 0..8 {
            for c in 0..=255u8 {
                let mut text = *b"12345678";
                text[at] = c;
                let want = c.is_ascii_digit().then(|| {
                    std::str::from_utf8(&text)
                        .ok()
                        .and_then(|t| t.parse::<u64>().ok())
                });
                assert_eq!(eight_digits(&text), want.flatten(), "{text:?}");
            }
        }
        assert_eq!(eight_digits(b"1234567"), None);
    }

    /// The word scan and the vectorized search after it find the first quote or backslash
    /// wherever it is, before, across and after the 32-byte boundary between them.
    #[test]
    fn first_special_finds_the_first_quote_or_backslash() {
        for len in 0..80 {
            assert_eq!(first_special(&vec![b'a'; len]), None, "{len}");
            for at in 0..len {
                for c in [b'"', b'\\'] {
                    let mut b = vec![b'a'; len];
                    b[at] = c;
                    if at + 3 < len {
                        b[at + 3] = b'"';
                    }
                    assert_eq!(first_special(&b), Some(at), "{len} {at}");
                }
            }
        }
    }

    /// The `splitn` reading `decode_cri` replaced, kept as its reference.
    fn cri_by_splitn(line: &[u8]) -> Option<Decoded> {
        let s = simdutf8::basic::from_utf8(line).ok()?;
        let mut it = s.splitn(4, ' ');
        let time_s = it.next()?;
        let stream = it.next()?;
        let tag = it.next()?;
        let log = it.next().unwrap_or("");
        if stream != "stdout" && stream != "stderr" {
            return None;
        }
        let time = parse_rfc3339(time_s)?;
        // The tag is `P` or `F`, possibly with more `:`-separated flags after it.
        let p = tag.split(':').next()?;
        if p != "P" && p != "F" {
            return None;
        }
        // One spare pair for the kubernetes filter's `kubernetes`; the pairs made in place (both
        // as in `docker_fast`).
        let mut body = Map::with_capacity(5);
        body.0.push(const { pair(TIME) });
        body.0.push(const { pair(STREAM) });
        body.0.push(const { pair(PARTIAL) });
        body.0.push(const { pair(LOG) });
        if let [(_, Value::Str(t)), (_, Value::Str(st)), (_, Value::Str(pp)), (_, Value::Str(l))] =
            body.0.as_mut_slice()
        {
            t.push_str(time_s);
            st.push_str(stream);
            pp.push_str(p);
            l.push_str(log);
        }
        Some(Decoded {
            record: Record::new(time, body),
            partial: p == "P",
            stream: stream_id(stream),
        })
    }

    /// The hand-cut fields read every line as `splitn` did: lines of each shape, then each
    /// byte of them replaced by spaces, colons, letters and digits, and every prefix.
    #[test]
    fn cri_matches_splitn() {
        let lines = [
            "2024-01-02T03:04:05.000000001Z stderr P part one",
            "2024-01-02T03:04:05Z stdout F",
            "2024-01-02T03:04:05Z stdout F ",
            "2024-01-02T03:04:05Z stdout F:x:y the log  with  spaces",
            "2024-01-02T03:04:05.123456789+02:00 stdout P x",
            "2024-01-02T03:04:05Z stdout  F x",
            "2024-01-02T03:04:05Z stdin F x",
        ];
        let mut read = 0;
        let mut check = |line: &str| {
            let (a, b) = (decode_cri(line.as_bytes()), cri_by_splitn(line.as_bytes()));
            match (&a, &b) {
                (Some(a), Some(b)) => {
                    assert_eq!(a.record.time, b.record.time, "{line}");
                    assert_eq!(a.record.body, b.record.body, "{line}");
                    assert_eq!((a.partial, a.stream), (b.partial, b.stream), "{line}");
                    read += 1;
                }
                (None, None) => {}
                _ => panic!("{line}: {} against {}", a.is_some(), b.is_some()),
            }
        };
        for line in lines {
            for at in 0..line.len() {
                check(&line[..at]);
                for c in *b" :PFx0e" {
                    let mut m = line.as_bytes().to_vec();
                    m[at] = c;
                    check(&String::from_utf8(m).unwrap());
                }
            }
            check(line);
        }
        assert!(read > 300, "{read} lines read");
    }

    #[test]
    fn rfc3339_forms() {
        assert_eq!(
            parse_rfc3339("2019-12-19T17:41:12.70630778Z"),
            Some(EventTime::from_parts(1_576_777_272, 706_307_780))
        );
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(EventTime(0)));
        assert_eq!(
            parse_rfc3339("2024-01-02T05:04:05.5+02:00"),
            Some(EventTime::from_parts(1_704_164_645, 500_000_000))
        );
        assert_eq!(
            parse_rfc3339("2024-02-29T23:59:59.123456789123-00:30"),
            Some(EventTime::from_parts(1_709_251_199 + 1800, 123_456_789))
        );
        for bad in [
            "",
            "2019-12-19",
            "2019-13-19T00:00:00Z",
            "2019-12-19T17:41:12",
            "2019-12-19T17:41:12.5+0200x",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn docker_line_keeps_keys_and_sets_time() {
        let line = br#"{"log":"10.1.128.166 - - [19/Dec/2019:17:41:12 +0000] \"GET / HTTP/1.1\" 200 612 \"-\" \"hey/0.0.1\" \"52.95.4.2\"\n","stream":"stdout","time":"2019-12-19T17:41:12.70630778Z"}"#;
        let d = decode_docker(line).unwrap();
        assert!(!d.partial);
        assert_eq!(d.stream, 0);
        assert_eq!(
            d.record.time,
            EventTime::from_parts(1_576_777_272, 706_307_780)
        );
        let keys: Vec<_> = d.record.body.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["log", "stream", "time"]);
        assert!(d
            .record
            .body
            .get("log")
            .and_then(Value::as_str)
            .unwrap()
            .ends_with("\"52.95.4.2\"\n"));
    }

    #[test]
    fn cri_line_and_flags() {
        let d = decode_cri(b"2024-01-02T03:04:05.000000001Z stderr P part one").unwrap();
        assert!(d.partial);
        assert_eq!(d.stream, 1);
        assert_eq!(d.record.body.get("log"), Some(&Value::from("part one")));
        assert_eq!(d.record.body.get("_p"), Some(&Value::from("P")));
        let d = decode_cri(b"2024-01-02T03:04:05Z stdout F").unwrap();
        assert_eq!(d.record.body.get("log"), Some(&Value::from("")));
        assert!(decode_cri(b"2024-01-02T03:04:05Z stdin F x").is_none());
        assert!(decode_cri(b"not a cri line at all").is_none());
    }

    #[test]
    fn malformed_lines_become_raw_records() {
        let d = Framing::DockerOrCri.decode("log", b"{\"log\": broken");
        assert_eq!(
            d.record.body.get("log"),
            Some(&Value::from("{\"log\": broken"))
        );
        assert!(!d.partial);
        let d = Framing::Docker.decode("msg", b"\xff\xfe plain");
        assert!(d
            .record
            .body
            .get("msg")
            .and_then(Value::as_str)
            .unwrap()
            .ends_with(" plain"));
    }

    #[test]
    fn joiner_keeps_streams_apart_and_tracks_offsets() {
        let mut j = Joiner::default();
        let mut out = Vec::new();
        let p = |s: &str| decode_cri(s.as_bytes()).unwrap();
        j.push(p("2024-01-02T03:04:05Z stdout P out-a "), 0, 10, &mut out);
        j.push(p("2024-01-02T03:04:06Z stderr P err-a "), 10, 20, &mut out);
        assert_eq!(j.earliest_start(), Some(0));
        j.push(p("2024-01-02T03:04:07Z stderr F err-b"), 20, 30, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0.body.get("log"), Some(&Value::from("err-a err-b")));
        assert_eq!(out[0].0.body.get("_p"), Some(&Value::from("F")));
        assert_eq!(out[0].1, 30);
        j.push(p("2024-01-02T03:04:08Z stdout F out-b"), 30, 40, &mut out);
        assert_eq!(out[1].0.body.get("log"), Some(&Value::from("out-a out-b")));
        assert_eq!(
            out[1].0.time,
            parse_rfc3339("2024-01-02T03:04:05Z").unwrap(),
            "first piece's time"
        );
        assert!(j.is_empty());
    }

    #[test]
    fn docker_split_pieces_are_joined() {
        let mut j = Joiner::default();
        let mut out = Vec::new();
        let a = decode_docker(br#"{"log":"aaaa","stream":"stdout","time":"2024-01-02T03:04:05Z"}"#)
            .unwrap();
        let b =
            decode_docker(br#"{"log":"bbbb\n","stream":"stdout","time":"2024-01-02T03:04:06Z"}"#)
                .unwrap();
        j.push(a, 0, 5, &mut out);
        assert!(out.is_empty());
        j.push(b, 5, 9, &mut out);
        assert_eq!(out[0].0.body.get("log"), Some(&Value::from("aaaabbbb\n")));
        let mut j = Joiner::default();
        let a = decode_docker(br#"{"log":"cut","stream":"stdout","time":"2024-01-02T03:04:05Z"}"#)
            .unwrap();
        j.push(a, 0, 5, &mut out);
        j.flush(None, &mut out);
        assert_eq!(
            out[1].0.body.get("log"),
            Some(&Value::from("cut")),
            "flushed as is"
        );
    }

    /// CRI `P` pieces that never end: one record of the first `limit` bytes, emitted as soon
    /// as the limit is reached; the rest of that message is dropped up to its `F` line; what
    /// is held never passes the limit; the next message is joined as usual.
    #[test]
    fn joined_messages_stop_at_the_limit() {
        let mut j = Joiner::with_limit(Some(100));
        let mut out = Vec::new();
        let p = |s: &str| decode_cri(s.as_bytes()).unwrap();
        let mut cuts = Vec::new();
        for i in 0..1000u64 {
            let piece = p("2024-01-02T03:04:05Z stdout P 0123456789");
            if let Some(c) = j.push(piece, i * 50, i * 50 + 50, &mut out) {
                cuts.push((i, c));
            }
            assert!(j.pending_bytes() <= 100);
        }
        assert_eq!(
            cuts,
            [(
                10,
                Truncated {
                    start: 0,
                    kept: 100
                }
            )]
        );
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].0.body.get("log"),
            Some(&Value::from("0123456789".repeat(10).as_str()))
        );
        assert_eq!(out[0].1, 550, "ends with the piece that reached the limit");
        assert!(j.is_empty() && j.earliest_start().is_none());
        // The cut message's last piece is dropped too; then joining starts over.
        j.push(
            p("2024-01-02T03:04:05Z stdout F end"),
            50_000,
            50_010,
            &mut out,
        );
        assert_eq!(out.len(), 1);
        j.push(
            p("2024-01-02T03:04:06Z stdout P next "),
            50_010,
            50_020,
            &mut out,
        );
        j.push(
            p("2024-01-02T03:04:06Z stdout F one"),
            50_020,
            50_030,
            &mut out,
        );
        assert_eq!(out[1].0.body.get("log"), Some(&Value::from("next one")));
    }

    /// The cut never splits a character, a single oversized first piece is cut too, and the
    /// other stream is not touched.
    #[test]
    fn the_limit_cuts_at_a_character_boundary_per_stream() {
        let mut j = Joiner::with_limit(Some(10));
        let mut out = Vec::new();
        let p = |s: &str| decode_cri(s.as_bytes()).unwrap();
        j.push(p("2024-01-02T03:04:05Z stderr P err "), 0, 1, &mut out);
        j.push(p("2024-01-02T03:04:05Z stdout P ééé"), 1, 2, &mut out);
        let c = j.push(p("2024-01-02T03:04:05Z stdout P ééé"), 2, 3, &mut out);
        assert_eq!(c, Some(Truncated { start: 1, kept: 10 }));
        assert_eq!(out[0].0.body.get("log"), Some(&Value::from("ééééé")));
        let c = j.push(
            p("2024-01-02T03:04:05Z stdout P abcdefghijklmnop"),
            3,
            4,
            &mut out,
        );
        assert_eq!(c, None, "still dropping the rest of the cut message");
        j.push(p("2024-01-02T03:04:05Z stdout F x"), 4, 5, &mut out);
        let c = j.push(
            p("2024-01-02T03:04:05Z stdout P abcdefghijklmnop"),
            5,
            6,
            &mut out,
        );
        assert_eq!(c, Some(Truncated { start: 5, kept: 10 }));
        assert_eq!(out[1].0.body.get("log"), Some(&Value::from("abcdefghij")));
        j.push(p("2024-01-02T03:04:05Z stderr F done"), 6, 7, &mut out);
        assert_eq!(out[2].0.body.get("log"), Some(&Value::from("err done")));
        // Without a limit (multiline_buffer_limit false) everything is joined.
        let mut j = Joiner::with_limit(None);
        let mut out = Vec::new();
        for _ in 0..100 {
            j.push(
                p("2024-01-02T03:04:05Z stdout P 0123456789"),
                0,
                1,
                &mut out,
            );
        }
        j.push(p("2024-01-02T03:04:05Z stdout F"), 1, 2, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0]
                .0
                .body
                .get("log")
                .and_then(Value::as_str)
                .map(str::len),
            Some(1000)
        );
    }

    /// The fast Docker path must give exactly the map serde_json gives, and step aside
    /// (`None`) for everything it does not handle.
    #[test]
    fn docker_fast_path_matches_the_general_parser() {
        let same = [
            r#"{"log":"plain\n","stream":"stdout","time":"2019-12-19T17:41:12.70630778Z"}"#,
            r#"{"log":"GET \"/a\\b\/c\" \t tab\r\n","stream":"stderr","time":"2019-12-19T17:41:12Z"}"#,
            r#"{"log":"no newline","stream":"stdout","time":"t"}"#,
            r#"{"log":"","stream":"stdout","time":"t"}"#,
            r#"{"log":"ünïcödé ✓\n","stream":"stdout","time":"t"}"#,
            r#"{"log":"\b\f\\\"","stream":"stdout","time":"t"}"#,
            "{\"log\":\"x\\n\",\"stream\":\"stdout\",\"time\":\"t\"}\r\n",
        ];
        for line in same {
            let fast = docker_fast(line.as_bytes()).unwrap_or_else(|| panic!("fast path: {line}"));
            let slow: Map = serde_json::from_str(line).unwrap();
            assert_eq!(fast, slow, "{line}");
            assert_eq!(
                fast.0.capacity(),
                5,
                "room for `kubernetes` and a merged map: {line}"
            );
        }
        let general_only = [
            r#"{"log":"\u00e9\n","stream":"stdout","time":"t"}"#,
            r#"{"stream":"stdout","log":"x\n","time":"t"}"#,
            r#"{"log":"x\n","stream":"stdout","time":"t","attrs":{"a":"b"}}"#,
            r#"{"log": "x\n","stream":"stdout","time":"t"}"#,
            r#"{"log":"x\n","stream":"stdout","time":"t"} x"#,
            r#"{"log":"x"#,
            r#"{"log":"bad \x escape","stream":"stdout","time":"t"}"#,
            "{\"log\":\"raw\ttab\",\"stream\":\"stdout\",\"time\":\"t\"}",
        ];
        for line in general_only {
            assert!(docker_fast(line.as_bytes()).is_none(), "{line}");
        }
        assert!(docker_fast(b"{\"log\":\"\xff\",\"stream\":\"s\",\"time\":\"t\"}").is_none());
        // Invalid UTF-8 in any string, before or after an escape (the word loop), or a
        // character cut by an escape: the fast path steps aside, and serde_json refuses the
        // line too (it is then passed on raw).
        let bad: [&[u8]; 7] = [
            b"{\"log\":\"ok \\\"q\\\" \xff after\",\"stream\":\"s\",\"time\":\"t\"}",
            b"{\"log\":\"\xc3\\\"\",\"stream\":\"s\",\"time\":\"t\"}",
            b"{\"log\":\"\\\"0123456789abcdef\xe2\x9c\",\"stream\":\"s\",\"time\":\"t\"}",
            b"{\"log\":\"x\",\"stream\":\"s\xff\",\"time\":\"t\"}",
            b"{\"log\":\"x\",\"stream\":\"s\",\"time\":\"\xc3\"}",
            b"{\"log\":\"\xed\xa0\x80\",\"stream\":\"s\",\"time\":\"t\"}",
            b"{\"log\":\"x\",\"stream\":\"s\",\"time\":\"t\"\xff}",
        ];
        for line in bad {
            assert!(docker_fast(line).is_none(), "{line:?}");
            assert!(decode_docker(line).is_none(), "{line:?}");
        }
        // Escapes at every distance from each other and from the end (the 8-byte scan).
        for n in 0..40 {
            for gap in 0..12 {
                let mut text = String::new();
                for j in 0..n {
                    text.push(if j % (gap + 1) == 0 {
                        '"'
                    } else {
                        (b'a' + (j % 26) as u8) as char
                    });
                }
                text.push('é');
                text.push('\\');
                let line =
                    serde_json::json!({"log": text, "stream": "stdout", "time": "t"}).to_string();
                let fast = docker_fast(line.as_bytes()).unwrap_or_else(|| panic!("{line}"));
                assert_eq!(fast.get("log"), Some(&Value::from(text.as_str())), "{line}");
            }
        }
        // Every escape next to every other, at every offset in a word, and `\/`, which
        // serde_json does not write: texts from a fixed pseudo-random sequence.
        let alphabet = [
            'a', '"', '\\', '\n', '\t', '\r', '/', 'é', '\u{8}', '\u{c}', 'z',
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..3000 {
            let mut text = String::new();
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            for j in 0..(x % 40) {
                text.push(alphabet[((x >> (j % 50)) as usize + j as usize * 7) % alphabet.len()]);
            }
            let encoded = serde_json::to_string(&text).unwrap();
            for log in [encoded.clone(), encoded.replace('/', "\\/")] {
                let line = format!(r#"{{"log":{log},"stream":"stdout","time":"t"}}"#);
                let fast = docker_fast(line.as_bytes()).unwrap_or_else(|| panic!("{line}"));
                assert_eq!(fast.get("log"), Some(&Value::from(text.as_str())), "{line}");
            }
        }
        // Lines the fast path leaves alone still decode (or not) as before.
        let d = decode_docker(general_only[0].as_bytes()).unwrap();
        assert_eq!(d.record.body.get("log"), Some(&Value::from("é\n")));
        let d = decode_docker(general_only[2].as_bytes()).unwrap();
        assert!(d.record.body.get("attrs").is_some());
        assert!(decode_docker(general_only[5].as_bytes()).is_none());
    }
}
