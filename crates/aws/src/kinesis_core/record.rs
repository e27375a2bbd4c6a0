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
use logferry_core::{Record, Value};
use logferry_filters::record_accessor::RecordAccessor;

use crate::encode::{write_message, Skip};
use crate::error::AwsError;

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

    /// Compresses `data` (returned unchanged without compression).
    pub fn apply(self, data: Vec<u8>) -> std::io::Result<Vec<u8>> {
        match self {
            Compression::None => Ok(data),
            Compression::Gzip => {
                let mut e =
                    GzEncoder::new(Vec::with_capacity(data.len() / 4 + 32), Level::default());
                e.write_all(&data)?;
                e.finish()
            }
            Compression::Zlib => {
                let mut e =
                    ZlibEncoder::new(Vec::with_capacity(data.len() / 4 + 32), Level::default());
                e.write_all(&data)?;
                e.finish()
            }
        }
    }
}

/// How records become blobs.
#[derive(Clone, Debug)]
pub struct RecordFormat {
    pub time_key: Option<String>,
    /// chrono format (Fluent Bit's `%3N`, `%9N`, `%L` translated).
    pub time_format: String,
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

impl RecordFormat {
    /// Reads the shared options.
    pub fn new(
        time_key: Option<&str>,
        time_key_format: &str,
        log_key: Option<&str>,
        newline: bool,
        compression: Compression,
    ) -> Result<Self, AwsError> {
        Ok(RecordFormat {
            time_key: time_key
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(str::to_string),
            time_format: time_format(time_key_format)?,
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

    /// The blob for one record.
    pub fn encode(&self, r: &Record, buf: &mut Vec<u8>) -> Result<Vec<u8>, Skip> {
        buf.clear();
        match (&self.time_key, &self.log_key) {
            (Some(key), None) => {
                let mut body = r.body.clone();
                let nanos = r.time.0;
                let dt: DateTime<Utc> = DateTime::from_timestamp_nanos(nanos);
                let mut s = String::new();
                std::fmt::Write::write_fmt(
                    &mut s,
                    format_args!("{}", dt.format(&self.time_format)),
                )
                .map_err(|_| Skip::Encoding)?;
                body.insert(key.as_str(), Value::from(s));
                write_message(buf, &body, None)?;
            }
            (_, key) => write_message(buf, &r.body, key.as_ref())?,
        }
        if self.newline {
            buf.push(b'\n');
        }
        self.compression
            .apply(buf.clone())
            .map_err(|_| Skip::Encoding)
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
        let out = f.encode(&r, &mut Vec::new()).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"log\":\"x\",\"ts\":\"2019-12-19T17:41:12.706\"}\n"
        );
        assert!(time_format("%Q").is_err());
        assert_eq!(time_format("%L").unwrap(), "%9f");
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
        let out = f
            .encode(&Record::new(EventTime(0), m), &mut Vec::new())
            .unwrap();
        let mut d = flate2::read::GzDecoder::new(&out[..]);
        let mut s = String::new();
        std::io::Read::read_to_string(&mut d, &mut s).unwrap();
        assert_eq!(s, "hello");
        assert!(Compression::parse(Some("zstd"), &["gzip"]).is_err());
    }
}
