//! Record → blob, as Fluent Bit's Firehose and Kinesis plugins write them.
//!
//! The record as JSON, with `time_key` added (the record time in UTC, formatted with
//! `time_key_format`, strftime plus Fluent Bit's `%3N` milliseconds and `%9N`/`%L`
//! nanoseconds); or, with `log_key`, only that key's value (a string raw). Then an optional
//! newline, then optional per-record compression (`gzip`, or `zlib` for the Go Kinesis plugin).

use std::io::Write;

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, Utc};
use flate2::write::{GzEncoder, ZlibEncoder};
use flate2::Compression as Level;
use logferry_core::packed::{Cursor, UnpackError};
use logferry_core::Record;
use logferry_filters::record_accessor::RecordAccessor;

use crate::encode::{whole_seconds, Skip};
use crate::error::AwsError;
use crate::plain_json::PlainJson;

/// Fluent Bit's default `time_key_format`.
pub const DEFAULT_TIME_FORMAT: &str = "%Y-%m-%dT%H:%M:%S";

/// Per-record compression.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zlib,
}

impl Compression {
    /// Parses `compression`; `allowed` lists what the plugin takes.
    pub fn parse(v: Option<&str>, allowed: &[&str]) -> Result<Self, AwsError> {
        let Some(v) = v.map(str::trim).filter(|v| !v.is_empty()) else {
            return Ok(Compression::None);
        };
        let lower = v.to_ascii_lowercase();
        if !allowed.contains(&lower.as_str()) {
            return Err(AwsError::setting(
                "compression",
                format!("'{v}': expected one of {}", allowed.join(", ")),
            ));
        }
        Ok(match lower.as_str() {
            "gzip" => Compression::Gzip,
            "zlib" => Compression::Zlib,
            _ => Compression::None,
        })
    }

    /// Appends `data` compressed (as is without compression) to `out`.
    pub fn write(self, data: &[u8], out: &mut Vec<u8>) -> std::io::Result<()> {
        match self {
            Compression::None => out.extend_from_slice(data),
            Compression::Gzip => {
                let mut e = GzEncoder::new(out, Level::default());
                e.write_all(data)?;
                e.finish()?;
            }
            Compression::Zlib => {
                let mut e = ZlibEncoder::new(out, Level::default());
                e.write_all(data)?;
                e.finish()?;
            }
        }
        Ok(())
    }
}

/// How records become blobs.
#[derive(Clone, Debug)]
pub struct RecordFormat {
    pub time_key: Option<String>,
    /// chrono format (Fluent Bit's `%3N`, `%9N`, `%L` translated).
    pub time_format: String,
    /// `time_format` parsed once, not once per record.
    time_items: Vec<Item<'static>>,
    /// Whether `time_items` print nothing finer than a second ([`whole_seconds`]).
    whole_seconds: bool,
    pub log_key: Option<RecordAccessor>,
    pub newline: bool,
    pub compression: Compression,
}

/// Translates Fluent Bit's time format to chrono's and checks it.
pub fn time_format(fluent: &str) -> Result<String, AwsError> {
    let f = fluent
        .replace("%3N", "%3f")
        .replace("%9N", "%9f")
        .replace("%L", "%9f");
    if StrftimeItems::new(&f).any(|i| matches!(i, Item::Error)) {
        return Err(AwsError::setting(
            "time_key_format",
            format!("'{fluent}' is not a valid strftime format"),
        ));
    }
    Ok(f)
}

/// Buffers one encoder reuses from record to record (and, kept with [`Encoded`], from flush
/// to flush), so a record costs no allocation of its own.
///
/// [`Encoded`]: super::sink::Encoded
#[derive(Default)]
pub struct Scratch {
    /// The last record's blob (after [`RecordFormat::encode`]).
    pub blob: Vec<u8>,
    /// The JSON before compression.
    json: Vec<u8>,
    /// The formatted `time_key` value, as a JSON string.
    time: Vec<u8>,
    time_text: String,
    /// The second `time` holds, for a format that prints whole seconds, and which format
    /// (its parsed items' address): the records of one second reuse it.
    time_second: Option<(usize, i64)>,
    pub(crate) plain: PlainJson,
}

impl std::fmt::Debug for Scratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scratch").finish_non_exhaustive()
    }
}

impl Scratch {
    /// Readies the buffers for another batch (shared maps are cached per batch).
    pub fn start_batch(&mut self) {
        self.plain.clear();
        self.time_second = None;
    }

    /// Starts the records of a packed chunk ([`RecordFormat::encode_packed`]).
    pub fn start_packed(&mut self) {
        self.plain.start_packed();
    }

    /// Where the JSON is written (the blob itself, or the buffer compressed into it), the
    /// `time_key` value, and the writer.
    fn parts(&mut self, compression: Compression) -> (&mut Vec<u8>, &Vec<u8>, &mut PlainJson) {
        let out = match compression {
            Compression::None => &mut self.blob,
            _ => &mut self.json,
        };
        (out, &self.time, &mut self.plain)
    }

    /// Bytes held by its buffers.
    pub fn capacity(&self) -> usize {
        self.blob.capacity() + self.json.capacity() + self.time.capacity()
    }
}

impl RecordFormat {
    /// Reads the shared options.
    pub fn new(
        time_key: Option<&str>,
        time_key_format: &str,
        log_key: Option<&str>,
        newline: bool,
        compression: Compression,
    ) -> Result<Self, AwsError> {
        let time_format = time_format(time_key_format)?;
        let time_items = StrftimeItems::new(&time_format)
            .parse_to_owned()
            .map_err(|e| AwsError::setting("time_key_format", e.to_string()))?;
        Ok(RecordFormat {
            time_key: time_key
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(str::to_string),
            whole_seconds: whole_seconds(&time_items),
            time_items,
            time_format,
            log_key: log_key
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(RecordAccessor::parse_key)
                .transpose()
                .map_err(|r| AwsError::setting("log_key", r))?,
            newline,
            compression,
        })
    }

    /// Writes the blob for one record into `s.blob`: the record as JSON (with `time_key` set
    /// as [`logferry_core::Map::insert`] would, without copying the record), or the `log_key`
    /// value; a newline; then the compression.
    pub fn encode(&self, r: &Record, s: &mut Scratch) -> Result<(), Skip> {
        let timed = match (&self.time_key, &self.log_key) {
            (Some(_), None) => {
                self.time_json(r.time, s)?;
                true
            }
            _ => false,
        };
        let (out, time, plain) = s.parts(self.compression);
        out.clear();
        match (&self.time_key, timed) {
            (Some(key), true) => {
                plain.map_edited(out, &r.body, &[], Some((key.as_str(), time.as_slice())))
            }
            _ => plain.message(out, &r.body, self.log_key.as_ref())?,
        }
        self.finish(s)
    }

    /// Whether records can be encoded straight from packed chunks ([`Self::encode_packed`]):
    /// all but a `log_key`'s value, which is looked up in the record.
    pub fn reads_packed(&self) -> bool {
        self.log_key.is_none()
    }

    /// [`Self::encode`] for a packed record: its `time`, then its body (key list `keys`, the
    /// values next in `c`), the same blob as for the record unpacked. The outer error is a
    /// damaged chunk (only a bug makes one: nothing more of it can be read); the inner one a
    /// record that gives no blob, read past. Needs [`Self::reads_packed`].
    pub fn encode_packed(
        &self,
        time: logferry_core::EventTime,
        c: &mut Cursor<'_>,
        keys: usize,
        s: &mut Scratch,
    ) -> Result<Result<(), Skip>, UnpackError> {
        if self.time_key.is_some() {
            if let Err(why) = self.time_json(time, s) {
                s.plain
                    .packed_map_edited(c, &mut Vec::new(), keys, &[], None, 0)?;
                return Ok(Err(why));
            }
        }
        let (out, time, plain) = s.parts(self.compression);
        out.clear();
        let set = self.time_key.as_deref().map(|k| (k, time.as_slice()));
        plain.packed_map_edited(c, out, keys, &[], set, 0)?;
        Ok(self.finish(s))
    }

    /// `time` as `time_key`'s JSON string, in `s.time`. With a format of whole seconds
    /// (Fluent Bit's default), the records of one second share the text formatted for the
    /// first of them.
    fn time_json(&self, time: logferry_core::EventTime, s: &mut Scratch) -> Result<(), Skip> {
        let second = (
            self.time_items.as_ptr() as usize,
            time.0.div_euclid(1_000_000_000),
        );
        if self.whole_seconds && s.time_second == Some(second) {
            return Ok(());
        }
        s.time_second = None;
        let dt: DateTime<Utc> = DateTime::from_timestamp_nanos(time.0);
        s.time_text.clear();
        std::fmt::Write::write_fmt(
            &mut s.time_text,
            format_args!("{}", dt.format_with_items(self.time_items.iter())),
        )
        .map_err(|_| Skip::Encoding)?;
        s.time.clear();
        crate::plain_json::str(&mut s.time, &s.time_text);
        if self.whole_seconds {
            s.time_second = Some(second);
        }
        Ok(())
    }

    /// After the JSON: the newline, then the compression into `s.blob`.
    fn finish(&self, s: &mut Scratch) -> Result<(), Skip> {
        if self.newline {
            s.parts(self.compression).0.push(b'\n');
        }
        if self.compression != Compression::None {
            s.blob.clear();
            self.compression
                .write(&s.json, &mut s.blob)
                .map_err(|_| Skip::Encoding)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use logferry_core::{EventTime, Map};

    #[test]
    fn time_key_with_fluent_bit_fraction_specifiers() {
        let f = RecordFormat::new(
            Some("ts"),
            "%Y-%m-%dT%H:%M:%S.%3N",
            None,
            true,
            Compression::None,
        )
        .unwrap();
        let mut m = Map::new();
        m.insert("log", "x");
        let r = Record::new(EventTime::from_parts(1_576_777_272, 706_307_780), m);
        let mut s = Scratch::default();
        f.encode(&r, &mut s).unwrap();
        assert_eq!(
            String::from_utf8(s.blob).unwrap(),
            "{\"log\":\"x\",\"ts\":\"2019-12-19T17:41:12.706\"}\n"
        );
        assert!(time_format("%Q").is_err());
        assert_eq!(time_format("%L").unwrap(), "%9f");
    }

    /// A time formatted once per second for the records after it gives each record the
    /// text formatted for itself: whole-second formats (cached) and finer ones (not), across
    /// second boundaries and before 1970, one scratch for all against a fresh one each.
    #[test]
    fn time_key_text_reused_within_a_second_is_each_records_own() {
        let formats = [
            (DEFAULT_TIME_FORMAT, true),
            ("%s", true),
            ("%d/%b/%Y:%H:%M:%S %z", true),
            ("%Y-%m-%dT%H:%M:%S.%3N", false),
            ("%L", false),
            ("%s.%9N", false),
            ("%Y-%m-%dT%H:%M:%S%.6f", false),
            ("%+", false),
        ];
        let times: Vec<i64> = [
            1_576_777_272_000_000_000,
            1_576_777_272_706_307_780,
            1_576_777_272_999_999_999,
            1_576_777_273_000_000_000,
            1_576_777_273_000_000_001,
            1_576_777_272_500_000_000,
            -1_500_000_000,
            -1_000_000_000,
            -1,
            0,
        ]
        .to_vec();
        for (fmt, whole) in formats {
            let f = RecordFormat::new(Some("ts"), fmt, None, false, Compression::None).unwrap();
            assert_eq!(f.whole_seconds, whole, "{fmt}");
            let mut shared = Scratch::default();
            for &t in &times {
                let mut m = Map::new();
                m.insert("log", "x");
                let r = Record::new(EventTime(t), m);
                let mut fresh = Scratch::default();
                f.encode(&r, &mut fresh).unwrap();
                f.encode(&r, &mut shared).unwrap();
                assert_eq!(shared.blob, fresh.blob, "{fmt} {t}");
            }
            // Another format of the same second does not reuse the first one's text.
            let other =
                RecordFormat::new(Some("ts"), "%H", None, false, Compression::None).unwrap();
            let r = Record::new(EventTime(times[0]), Map::new());
            f.encode(&r, &mut shared).unwrap();
            other.encode(&r, &mut shared).unwrap();
            assert_eq!(shared.blob, b"{\"ts\":\"17\"}", "{fmt}");
        }
    }

    #[test]
    fn gzip_round_trips() {
        let f = RecordFormat::new(
            None,
            DEFAULT_TIME_FORMAT,
            Some("log"),
            false,
            Compression::Gzip,
        )
        .unwrap();
        let mut m = Map::new();
        m.insert("log", "hello");
        let mut s = Scratch::default();
        f.encode(&Record::new(EventTime(0), m), &mut s).unwrap();
        let mut d = flate2::read::GzDecoder::new(&s.blob[..]);
        let mut s = String::new();
        std::io::Read::read_to_string(&mut d, &mut s).unwrap();
        assert_eq!(s, "hello");
        assert!(Compression::parse(Some("zstd"), &["gzip"]).is_err());
    }
}
