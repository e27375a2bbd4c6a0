//! Container log framing: Docker json-file lines and CRI lines, decoded without a generic JSON
//! tree, and the joining of split lines (Docker's 16 KiB pieces without a trailing `\n`, CRI `P`
//! partials up to the `F` line), one pending message per stream so stdout and stderr never mix.
//!
//! A line that does not decode is never dropped: it becomes `{"log": <line>}`.

use logferry_core::{EventTime, Map, Record, Str, Value};

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
pub fn parse_rfc3339(s: &str) -> Option<EventTime> {
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
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset;
    Some(EventTime(secs * 1_000_000_000 + nanos))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Decodes a Docker json-file line. `None` if it is not a JSON object with a string `log`.
pub fn decode_docker(line: &[u8]) -> Option<Decoded> {
    let body: Map = serde_json::from_slice(line).ok()?;
    let log = body.get("log")?.as_str()?;
    let partial = !log.ends_with('\n');
    let stream = body
        .get("stream")
        .and_then(Value::as_str)
        .map_or(2, stream_id);
    let time = body
        .get("time")
        .and_then(Value::as_str)
        .and_then(parse_rfc3339)
        .unwrap_or_else(EventTime::now);
    Some(Decoded {
        record: Record::new(time, body),
        partial,
        stream,
    })
}

/// Decodes a CRI line (`<time> <stream> <tag> <log>`). `None` if it is not one.
pub fn decode_cri(line: &[u8]) -> Option<Decoded> {
    let s = std::str::from_utf8(line).ok()?;
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
    let mut body = Map::with_capacity(4);
    body.push("time", time_s);
    body.push("stream", stream);
    body.push("_p", p);
    body.push("log", log);
    Some(Decoded {
        record: Record::new(time, body),
        partial: p == "P",
        stream: stream_id(stream),
    })
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

/// Joins split lines per stream.
#[derive(Default)]
pub struct Joiner {
    pending: [Option<Pending>; 3],
}

impl Joiner {
    /// Feeds one decoded line spanning `[start, end)` of the file. Completed records go to `out`
    /// with the file offset just past their last piece.
    pub fn push(&mut self, d: Decoded, start: u64, end: u64, out: &mut Vec<(Record, u64)>) {
        let slot = &mut self.pending[usize::from(d.stream.min(2))];
        match slot.take() {
            Some(mut p) => {
                append_log(&mut p.record.body, &d.record.body);
                p.end = end;
                if d.partial {
                    *slot = Some(p);
                } else {
                    if let Some(v) = d.record.body.get("_p") {
                        p.record.body.insert("_p", v.clone());
                    }
                    out.push((p.record, end));
                }
            }
            None if d.partial => {
                *slot = Some(Pending {
                    record: d.record,
                    start,
                    end,
                    since: std::time::Instant::now(),
                });
            }
            None => out.push((d.record, end)),
        }
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
}

fn append_log(into: &mut Map, from: &Map) {
    let Some(Value::Str(more)) = from.get("log") else {
        return;
    };
    match into.get_mut("log") {
        Some(Value::Str(s)) => s.push_str(more),
        _ => into.insert("log", more.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
