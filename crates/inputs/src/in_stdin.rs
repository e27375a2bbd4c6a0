//! `stdin` input: reads records from standard input (Fluent Bit's `in_stdin`). At end of input it
//! flushes what it read and asks the agent to exit, as Fluent Bit does.
//!
//! Each line is one of (Fluent Bit's accepted input formats):
//! - a JSON object, `{"key":"value"}`, stamped with the current time;
//! - a Fluent Bit event, `[TIME, {...}]` or `[[TIME, {metadata}], {...}]`, TIME in seconds
//!   (integer or fractional; metadata is dropped, logferry records carry none);
//! - an array of those, or several of them back to back on the line.
//!
//! A JSON value may span lines: a line that starts with `{` or `[` and ends before the value does
//! is joined with the following lines until the value is complete (up to `Buffer_Size` bytes).
//!
//! Anything else is kept, not dropped (Fluent Bit logs "invalid JSON message, skipping"): the
//! line becomes `{"log": "<line>"}` (invalid UTF-8 replaced by U+FFFD) and a debug message is
//! logged. A line longer than `Buffer_Size` is cut into `Buffer_Size` pieces at character
//! boundaries, each a `{"log": ...}` record, with a warning. Blank lines are skipped.
//!
//! Lines are gathered into chunks of up to 1000 records; a chunk is emitted when it is full or
//! when the next read would wait. `Parser` is accepted and kept, but not applied yet (a warning
//! says so); lines are then read as above.

use std::io;
use std::pin::Pin;
use std::task::Poll;

use async_trait::async_trait;
use logferry_core::config::{ByteSize, ConfigError, Entry, Section, SectionKind};
use logferry_core::{options, EventTime, Map, Record, Value};
use logferry_engine::{
    BuildContext, CancellationToken, Input, InputContext, InputExit, InputPlugin, PluginError,
};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

use crate::key_error;
use crate::sink::{EmitterSink, RecordSink};

options! {
    /// Options of the `stdin` input.
    pub struct StdinOptions for "stdin input" {
        /// Read buffer size: also the longest line and multi-line JSON value taken whole.
        pub buffer_size: ByteSize = ["Buffer_Size"] Some("16k"),
        /// Parser for the lines (accepted; parsers are not applied yet).
        pub parser: Option<String> = ["Parser"] None,
    }
}

/// The registry entry.
pub static PLUGIN: InputPlugin = InputPlugin {
    name: "stdin",
    aliases: &[],
    description: "Standard Input",
    options: StdinOptions::OPTIONS,
    default_workers: 1,
    build,
};

/// Records per emitted chunk at most.
pub const MAX_BATCH: usize = 1000;

/// The options, checked.
#[derive(Clone, Debug)]
pub struct StdinSettings {
    pub buffer_size: usize,
    pub parser: Option<String>,
}

impl StdinSettings {
    /// Checks the options; an error names the Fluent Bit key at fault.
    pub fn from_options(o: &StdinOptions) -> Result<Self, (&'static str, String)> {
        if o.buffer_size.0 == 0 {
            return Err(("Buffer_Size", "must be greater than 0".into()));
        }
        Ok(StdinSettings {
            buffer_size: usize::try_from(o.buffer_size.0).unwrap_or(usize::MAX),
            parser: o.parser.clone(),
        })
    }
}

fn build(
    ctx: &BuildContext,
    section: &Section,
    entries: &[&Entry],
) -> Result<Box<dyn Input>, ConfigError> {
    let opts = StdinOptions::from_entries(&section.span, entries, &[])?;
    let settings = StdinSettings::from_options(&opts)
        .map_err(|(key, reason)| key_error(section, entries, key, reason))?;
    if let Some(p) = &settings.parser {
        let known = ctx
            .config
            .sections(SectionKind::Parser)
            .any(|s| s.name().is_some_and(|n| n.trim() == p));
        let e = entries
            .iter()
            .rev()
            .find(|e| e.key.eq_ignore_ascii_case("Parser"));
        if let Some(e) = e {
            if known {
                ctx.note(e, "accepted but not applied: stdin lines are read as JSON");
            } else {
                ctx.note(e, format!("requested parser '{p}' not found"));
            }
        }
    }
    Ok(Box::new(StdinInput::new(settings)))
}

/// A boxed byte source.
pub type BoxedReader = Box<dyn AsyncRead + Send + Unpin>;

/// Reads the process's standard input (or another reader, for tests and tools).
pub struct StdinInput {
    settings: StdinSettings,
    reader: Option<BoxedReader>,
}

impl StdinInput {
    /// Reads the process's standard input.
    pub fn new(settings: StdinSettings) -> Self {
        StdinInput {
            settings,
            reader: None,
        }
    }

    /// Reads `reader` instead of standard input, with the same behaviour.
    pub fn from_reader(settings: StdinSettings, reader: BoxedReader) -> Self {
        StdinInput {
            settings,
            reader: Some(reader),
        }
    }
}

#[async_trait]
impl Input for StdinInput {
    async fn run(self: Box<Self>, ctx: InputContext) -> Result<InputExit, PluginError> {
        let mut sink = EmitterSink {
            emitter: ctx.emitter,
            tag: ctx.tag,
        };
        let StdinInput { settings, reader } = *self;
        let reader: BoxedReader = match reader {
            Some(r) => r,
            None => Box::new(tokio::io::stdin()),
        };
        read_input(reader, &settings, &mut sink, &ctx.shutdown, &ctx.name).await
    }
}

/// Why a text is not (yet) records.
#[derive(Debug, PartialEq, Eq)]
enum DecodeError {
    /// It ends before the JSON value does.
    Incomplete,
    /// It is not JSON in an accepted shape.
    Invalid,
}

/// A time in seconds, as Fluent Bit's `flb_time_from_double` (fraction truncated to ns).
fn time_from_json(v: &serde_json::Value) -> Option<EventTime> {
    let n = v.as_number()?;
    if let Some(i) = n.as_i64() {
        return Some(EventTime(i.checked_mul(1_000_000_000)?));
    }
    let f = n.as_f64()?;
    if !f.is_finite() || f.abs() >= 9.2e9 {
        return None;
    }
    let secs = f.trunc();
    let nanos = ((f - secs) * 1e9) as i64;
    Some(EventTime(secs as i64 * 1_000_000_000 + nanos))
}

fn into_map(obj: serde_json::Map<String, serde_json::Value>) -> Map {
    match Value::from_json(serde_json::Value::Object(obj)) {
        Value::Map(m) => m,
        _ => Map::new(),
    }
}

/// `[TIME, {...}]` or `[[TIME, {metadata}], {...}]`.
fn event(arr: &mut [serde_json::Value]) -> Option<Record> {
    let [head, body] = arr else { return None };
    let time = match head {
        serde_json::Value::Array(h) => match h.as_slice() {
            [t, meta] if meta.is_object() => time_from_json(t)?,
            _ => return None,
        },
        t => time_from_json(t)?,
    };
    match body.take() {
        serde_json::Value::Object(o) => Some(Record::new(time, into_map(o))),
        _ => None,
    }
}

/// Turns one JSON value into records, or says it has no accepted shape.
fn value_records(
    v: serde_json::Value,
    now: EventTime,
    out: &mut Vec<Record>,
) -> Result<(), DecodeError> {
    match v {
        serde_json::Value::Object(o) => out.push(Record::new(now, into_map(o))),
        serde_json::Value::Array(mut a) => {
            if a.len() == 2 && a[1].is_object() && !a[0].is_object() {
                out.push(event(&mut a).ok_or(DecodeError::Invalid)?);
                return Ok(());
            }
            if a.is_empty() {
                return Err(DecodeError::Invalid);
            }
            for el in a {
                match el {
                    serde_json::Value::Object(o) => out.push(Record::new(now, into_map(o))),
                    serde_json::Value::Array(mut e) => {
                        out.push(event(&mut e).ok_or(DecodeError::Invalid)?)
                    }
                    _ => return Err(DecodeError::Invalid),
                }
            }
        }
        _ => return Err(DecodeError::Invalid),
    }
    Ok(())
}

/// Decodes every JSON value in `text`; on error nothing is added to `out`.
fn decode(text: &[u8], now: EventTime, out: &mut Vec<Record>) -> Result<(), DecodeError> {
    let before = out.len();
    let mut r = Ok(());
    for v in serde_json::Deserializer::from_slice(text).into_iter::<serde_json::Value>() {
        r = match v {
            Ok(v) => value_records(v, now, out),
            Err(e) if e.is_eof() => Err(DecodeError::Incomplete),
            Err(_) => Err(DecodeError::Invalid),
        };
        if r.is_err() {
            break;
        }
    }
    if r.is_err() {
        out.truncate(before);
    }
    r
}

/// `{"log": "<text>"}`.
fn log_record(text: &[u8], now: EventTime) -> Record {
    let mut m = Map::with_capacity(1);
    m.push(
        "log",
        Value::Str(String::from_utf8_lossy(text).as_ref().into()),
    );
    Record::new(now, m)
}

/// Turns lines into records, joining lines of a JSON value that spans several.
#[derive(Debug)]
pub struct LineDecoder {
    max: usize,
    /// Lines of a JSON value not complete yet.
    pending: Vec<Vec<u8>>,
    /// Those lines joined with `\n`.
    joined: Vec<u8>,
}

fn opens_json(line: &[u8]) -> bool {
    matches!(line.trim_ascii_start().first(), Some(b'{' | b'['))
}

impl LineDecoder {
    /// A decoder that holds at most `max` bytes of an unfinished JSON value.
    pub fn new(max: usize) -> Self {
        LineDecoder {
            max,
            pending: Vec::new(),
            joined: Vec::new(),
        }
    }

    /// Decodes one line (without its `\n`; a trailing `\r` is dropped).
    pub fn line(&mut self, line: &[u8], now: EventTime, out: &mut Vec<Record>) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if self.pending.is_empty() {
            if line.trim_ascii().is_empty() {
                return;
            }
            match decode(line, now, out) {
                Ok(()) => {}
                Err(DecodeError::Incomplete) if opens_json(line) && line.len() < self.max => {
                    self.pending.push(line.to_vec());
                    self.joined.extend_from_slice(line);
                }
                Err(_) => {
                    tracing::debug!("invalid JSON message, kept as {{\"log\": ...}}");
                    out.push(log_record(line, now));
                }
            }
            return;
        }
        self.joined.push(b'\n');
        self.joined.extend_from_slice(line);
        self.pending.push(line.to_vec());
        match decode(&self.joined, now, out) {
            Ok(()) => {
                self.pending.clear();
                self.joined.clear();
            }
            Err(DecodeError::Incomplete) if self.joined.len() < self.max => {}
            Err(_) => {
                // The first line did not start a value after all: keep it as text and read the
                // others again, one of them may start a value.
                let lines = std::mem::take(&mut self.pending);
                self.joined.clear();
                tracing::debug!("invalid JSON message, kept as {{\"log\": ...}}");
                out.push(log_record(&lines[0], now));
                for l in &lines[1..] {
                    self.line(l, now, out);
                }
            }
        }
    }

    /// At end of input: lines of an unfinished value become `{"log": ...}` records.
    pub fn finish(&mut self, now: EventTime, out: &mut Vec<Record>) {
        for l in std::mem::take(&mut self.pending) {
            if !l.trim_ascii().is_empty() {
                out.push(log_record(&l, now));
            }
        }
        self.joined.clear();
    }
}

/// Polls one read without waiting: `None` when it would block.
async fn try_read<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut [u8],
) -> Option<io::Result<usize>> {
    std::future::poll_fn(|cx| {
        let mut rb = ReadBuf::new(&mut *buf);
        match Pin::new(&mut *reader).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) => Poll::Ready(Some(Ok(rb.filled().len()))),
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Pending => Poll::Ready(None),
        }
    })
    .await
}

/// The longest prefix of `b` of at most `max` bytes that does not split a UTF-8 sequence
/// (at least one byte).
fn char_boundary(b: &[u8], max: usize) -> usize {
    if b.len() <= max {
        return b.len();
    }
    let mut end = max;
    while end > 0 && (b[end] & 0xc0) == 0x80 {
        end -= 1;
    }
    if end == 0 {
        max
    } else {
        end
    }
}

/// Reading state between reads.
struct Reader<'a, S> {
    sink: &'a mut S,
    name: &'a str,
    max: usize,
    decoder: LineDecoder,
    batch: Vec<Record>,
    /// Bytes read since the last emit.
    read: usize,
    /// Inside a line longer than the buffer: its next segment is text, not JSON.
    in_long_line: bool,
}

impl<S: RecordSink> Reader<'_, S> {
    async fn emit(&mut self) -> Result<(), PluginError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let records = std::mem::replace(&mut self.batch, Vec::with_capacity(MAX_BATCH));
        let read = std::mem::take(&mut self.read);
        self.sink.emit(records, read).await
    }

    async fn line(&mut self, line: &[u8]) -> Result<(), PluginError> {
        let now = EventTime::now();
        if self.in_long_line {
            self.in_long_line = false;
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if !line.is_empty() {
                self.batch.push(log_record(line, now));
            }
        } else {
            self.decoder.line(line, now, &mut self.batch);
        }
        if self.batch.len() >= MAX_BATCH {
            self.emit().await?;
        }
        Ok(())
    }

    /// A piece of a line that does not fit the buffer.
    async fn long_piece(&mut self, piece: &[u8]) -> Result<(), PluginError> {
        if !self.in_long_line {
            tracing::warn!(input = %self.name, max = self.max, "line longer than Buffer_Size; split into several {{\"log\": ...}} records");
            let now = EventTime::now();
            self.decoder.finish(now, &mut self.batch);
        }
        self.in_long_line = true;
        self.batch.push(log_record(piece, EventTime::now()));
        if self.batch.len() >= MAX_BATCH {
            self.emit().await?;
        }
        Ok(())
    }

    /// Handles the complete lines in `buf[..len]`; returns how many bytes remain (moved to the
    /// front), always less than the buffer size.
    async fn process(&mut self, buf: &mut [u8], len: usize) -> Result<usize, PluginError> {
        let mut start = 0;
        while let Some(nl) = memchr::memchr(b'\n', &buf[start..len]) {
            let end = start + nl;
            self.line(&buf[start..end]).await?;
            start = end + 1;
        }
        while len - start >= buf.len() {
            let cut = char_boundary(&buf[start..len], self.max);
            self.long_piece(&buf[start..start + cut]).await?;
            start += cut;
        }
        buf.copy_within(start..len, 0);
        Ok(len - start)
    }

    /// End of input (or shutdown): the partial last line, unfinished values, the last chunk.
    async fn finish(&mut self, buf: &[u8]) -> Result<(), PluginError> {
        if !buf.is_empty() {
            self.line(buf).await?;
        }
        self.in_long_line = false;
        self.decoder.finish(EventTime::now(), &mut self.batch);
        self.emit().await
    }
}

/// Reads `reader` to its end, emitting records to `sink`; returns `ExitEngine` at end of input,
/// `Finished` when `shutdown` fires first.
pub async fn read_input<R, S>(
    mut reader: R,
    settings: &StdinSettings,
    sink: &mut S,
    shutdown: &CancellationToken,
    name: &str,
) -> Result<InputExit, PluginError>
where
    R: AsyncRead + Unpin,
    S: RecordSink,
{
    let size = settings.buffer_size.max(1);
    let mut buf = vec![0u8; size];
    let mut len = 0;
    let mut r = Reader {
        sink,
        name,
        max: size,
        decoder: LineDecoder::new(size),
        batch: Vec::with_capacity(MAX_BATCH),
        read: 0,
        in_long_line: false,
    };
    loop {
        if shutdown.is_cancelled() {
            r.finish(&buf[..len]).await?;
            return Ok(InputExit::Finished);
        }
        let got = if r.batch.is_empty() {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => continue,
                got = reader.read(&mut buf[len..]) => got,
            }
        } else {
            match try_read(&mut reader, &mut buf[len..]).await {
                Some(got) => got,
                None => {
                    r.emit().await?;
                    continue;
                }
            }
        };
        let n = match got {
            Ok(n) => n,
            Err(e) => {
                r.finish(&buf[..len]).await?;
                return Err(PluginError::Io {
                    context: "reading standard input".into(),
                    source: e,
                });
            }
        };
        if n == 0 {
            r.finish(&buf[..len]).await?;
            tracing::info!(input = %name, "end of file (stdin closed by remote end)");
            return Ok(InputExit::ExitEngine);
        }
        r.read += n;
        len = r.process(&mut buf, len + n).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::CollectSink;
    use std::time::Duration;

    fn decode_lines(lines: &[&str]) -> Vec<Record> {
        let mut d = LineDecoder::new(16 * 1024);
        let mut out = Vec::new();
        for l in lines {
            d.line(l.as_bytes(), EventTime(7), &mut out);
        }
        d.finish(EventTime(7), &mut out);
        out
    }

    fn log_of(r: &Record) -> Option<&str> {
        r.body.get("log").and_then(Value::as_str)
    }

    #[test]
    fn accepted_shapes() {
        let out = decode_lines(&[
            r#"{"a":1}"#,
            r#"[1700000000.5, {"b":2}]"#,
            r#"[[1700000001, {"m":1}], {"c":3}]"#,
            r#"[[1700000002, {"d":4}], [1700000003, {"e":5}], {"f":6}]"#,
            r#"{"g":7} {"h":8}"#,
            "   ",
        ]);
        let times: Vec<i64> = out.iter().map(|r| r.time.0).collect();
        assert_eq!(
            times,
            [
                7,
                1_700_000_000_500_000_000,
                1_700_000_001_000_000_000,
                1_700_000_002_000_000_000,
                1_700_000_003_000_000_000,
                7,
                7,
                7
            ]
        );
        let keys: Vec<&str> = out.iter().map(|r| r.body.0[0].0.as_str()).collect();
        assert_eq!(keys, ["a", "b", "c", "d", "e", "f", "g", "h"]);
    }

    #[test]
    fn anything_else_is_kept_as_log() {
        let out = decode_lines(&[
            "plain text",
            "42",
            r#"[1, 2]"#,
            r#"{"a":1} trailing"#,
            "\"str",
        ]);
        let logs: Vec<&str> = out.iter().filter_map(log_of).collect();
        assert_eq!(
            logs,
            ["plain text", "42", "[1, 2]", r#"{"a":1} trailing"#, "\"str"]
        );
        assert!(out
            .iter()
            .all(|r| r.body.len() == 1 && r.time == EventTime(7)));
    }

    #[test]
    fn multi_line_json_is_joined() {
        let out = decode_lines(&["{", r#"  "a": 1,"#, r#"  "b": [1,"#, "2]}", r#"{"c":3}"#]);
        assert_eq!(out.len(), 2);
        assert_eq!(
            out[0].body.get("b"),
            Some(&Value::Array(vec![Value::Int(1), Value::Int(2)]))
        );
        assert_eq!(out[1].body.get("c"), Some(&Value::Int(3)));
        // A start that goes wrong is text; the lines after it are read again.
        let out = decode_lines(&["{oops", "[", r#"{"c":3}"#, "x", "[1,"]);
        assert_eq!(log_of(&out[0]), Some("{oops"));
        assert_eq!(log_of(&out[1]), Some("["));
        assert_eq!(out[2].body.get("c"), Some(&Value::Int(3)));
        assert_eq!(log_of(&out[3]), Some("x"));
        assert_eq!(log_of(&out[4]), Some("[1,"));
        assert_eq!(out.len(), 5);
    }

    async fn read_all(input: &[u8], buffer_size: usize) -> (InputExit, CollectSink) {
        let settings = StdinSettings {
            buffer_size,
            parser: None,
        };
        let mut sink = CollectSink::default();
        let exit = tokio::time::timeout(
            Duration::from_secs(10),
            read_input(
                input,
                &settings,
                &mut sink,
                &CancellationToken::new(),
                "stdin.0",
            ),
        )
        .await
        .unwrap()
        .unwrap();
        (exit, sink)
    }

    #[tokio::test]
    async fn reads_to_eof_in_batches_and_asks_to_exit() {
        let mut input = String::new();
        for i in 0..2500 {
            input.push_str(&format!("{{\"i\":{i}}}\n"));
        }
        input.push_str("no newline at the end");
        let (exit, sink) = read_all(input.as_bytes(), 16 * 1024).await;
        assert_eq!(exit, InputExit::ExitEngine);
        assert!(sink.batches.iter().all(|b| b.len() <= MAX_BATCH));
        let recs: Vec<&Record> = sink.records().collect();
        assert_eq!(recs.len(), 2501);
        assert_eq!(recs[2499].body.get("i"), Some(&Value::Int(2499)));
        assert_eq!(log_of(recs[2500]), Some("no newline at the end"));
        assert_eq!(sink.bytes, input.len());
    }

    #[tokio::test]
    async fn long_lines_are_split_not_dropped() {
        let long = "é".repeat(20);
        let input = format!("{long}\n{{\"ok\":true}}\r\n");
        let (_, sink) = read_all(input.as_bytes(), 16).await;
        let recs: Vec<&Record> = sink.records().collect();
        let pieces: String = recs.iter().filter_map(|r| log_of(r)).collect();
        assert_eq!(pieces, long);
        assert!(recs.iter().filter_map(|r| log_of(r)).all(|p| p.len() <= 16));
        assert_eq!(
            recs.last().unwrap().body.get("ok"),
            Some(&Value::Bool(true))
        );
    }

    #[tokio::test]
    async fn shutdown_flushes_and_finishes() {
        let (client, server) = tokio::io::duplex(64);
        let settings = StdinSettings {
            buffer_size: 1024,
            parser: None,
        };
        let stop = CancellationToken::new();
        let mut sink = CollectSink::default();
        let mut client = client;
        let writer = async {
            tokio::io::AsyncWriteExt::write_all(&mut client, b"{\"a\":1}\npartial")
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            stop.cancel();
        };
        let (exit, ()) = tokio::time::timeout(Duration::from_secs(10), async {
            tokio::join!(
                read_input(server, &settings, &mut sink, &stop, "stdin.0"),
                writer
            )
        })
        .await
        .unwrap();
        assert_eq!(exit.unwrap(), InputExit::Finished);
        let recs: Vec<&Record> = sink.records().collect();
        assert_eq!(recs.len(), 2);
        assert_eq!(log_of(recs[1]), Some("partial"));
    }
}
