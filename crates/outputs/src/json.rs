//! Record encodings shared by the outputs, byte for byte as Fluent Bit writes them.
//!
//! JSON follows `flb_pack_msgpack_to_json_format` / `msgpack2json` (Fluent Bit 4.x/5.x):
//! - doubles: `%.1f` when the value is integral, else `%.16g` (`1.0`, `0.5`, `1576777272.706308`);
//!   NaN and infinities become `null` (Fluent Bit prints `nan` unless `json.convert_nan_to_null`,
//!   which is not valid JSON);
//! - strings: `"` `\` and control characters escaped (`\n`, `\t`, `\b`, `\f`, `\r`, else
//!   `\u00XX`), `0x7f` and every non-ASCII character escaped as `\uXXXX` (UTF-16 surrogate pairs
//!   beyond the BMP) — Fluent Bit's default `json.escape_unicode on`; with it off, UTF-8 is
//!   written as is;
//! - maps: when a key appears more than once only its last occurrence is written, at that
//!   position (`key_exists_in_map`), which also applies to the date key when the record has a
//!   key of the same name;
//! - the date key comes first, formatted per `json_date_format`.
//!
//! The JSON is written straight into the caller's buffer through `serde_json`'s serializer with
//! a custom [`Formatter`](serde_json::ser::Formatter); nothing is built in between.
//!
//! Fluent Bit's human-readable printer (`msgpack_object_print`, used by `stdout`'s default
//! format and by `file`'s csv/ltsv/template formats) is [`logferry_core::event::FluentDisplay`];
//! [`FluentMap`] adapts it to a map.

use std::fmt;
use std::io::{self, Write};

use logferry_core::event::write_fluent_map;
use logferry_core::{EventTime, Map, Value};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

/// How the date key is written (`json_date_format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DateFormat {
    /// Seconds as a double: `1576777272.706308`.
    Double,
    /// Whole seconds: `1576777272`.
    Epoch,
    /// Milliseconds: `1576777272706`.
    EpochMs,
    /// `2019-12-19T17:41:12.706307Z` (microseconds, UTC).
    Iso8601,
    /// `2019-12-19 17:41:12.706307` (microseconds, UTC).
    JavaSqlTimestamp,
}

impl DateFormat {
    /// Parses Fluent Bit's names (`flb_pack_to_json_date_type`), case-insensitively.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "double" => Ok(DateFormat::Double),
            "epoch" => Ok(DateFormat::Epoch),
            "epoch_ms" | "epoch_millis" | "epoch_milliseconds" => Ok(DateFormat::EpochMs),
            "iso8601" => Ok(DateFormat::Iso8601),
            "java_sql_timestamp" => Ok(DateFormat::JavaSqlTimestamp),
            _ => Err(format!(
                "invalid json_date_format '{s}': expected double, epoch, epoch_ms, iso8601 or java_sql_timestamp"
            )),
        }
    }
}

/// The date entry a JSON record starts with.
#[derive(Clone, Copy, Debug)]
pub struct DateKey<'a> {
    pub key: &'a str,
    pub format: DateFormat,
    pub time: EventTime,
}

/// `serde_json` formatter that writes numbers and strings as Fluent Bit does (module docs).
#[derive(Clone, Copy, Debug)]
pub struct FluentFormatter {
    /// Escape non-ASCII characters as `\uXXXX` (Fluent Bit's `json.escape_unicode`, on by
    /// default).
    pub escape_unicode: bool,
}

impl serde_json::ser::Formatter for FluentFormatter {
    fn write_f64<W: ?Sized + Write>(&mut self, writer: &mut W, value: f64) -> io::Result<()> {
        write_double(writer, value)
    }

    fn write_f32<W: ?Sized + Write>(&mut self, writer: &mut W, value: f32) -> io::Result<()> {
        write_double(writer, f64::from(value))
    }

    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        if !self.escape_unicode {
            return writer.write_all(fragment.as_bytes());
        }
        let bytes = fragment.as_bytes();
        // serde_json already escaped quotes, backslashes and C0 controls; what is left to do is
        // DEL and everything non-ASCII.
        let Some(first) = bytes.iter().position(|&b| b >= 0x7f) else {
            return writer.write_all(bytes);
        };
        writer.write_all(&bytes[..first])?;
        let rest = &fragment[first..];
        let mut run_start = 0;
        for (i, c) in rest.char_indices() {
            let cp = c as u32;
            if cp < 0x7f {
                continue;
            }
            writer.write_all(&rest.as_bytes()[run_start..i])?;
            run_start = i + c.len_utf8();
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                write_u_escape(writer, *unit)?;
            }
        }
        writer.write_all(&rest.as_bytes()[run_start..])
    }
}

fn write_u_escape<W: ?Sized + Write>(w: &mut W, unit: u16) -> io::Result<()> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    w.write_all(&[
        b'\\',
        b'u',
        HEX[usize::from(unit >> 12)],
        HEX[usize::from((unit >> 8) & 0xf)],
        HEX[usize::from((unit >> 4) & 0xf)],
        HEX[usize::from(unit & 0xf)],
    ])
}

/// Writes a double as `msgpack2json` does: `%.1f` if integral, else `%.16g`.
pub fn write_double<W: ?Sized + Write>(w: &mut W, v: f64) -> io::Result<()> {
    if !v.is_finite() {
        return w.write_all(b"null");
    }
    // Fluent Bit tests `v == (double)(long long)v`; only values within i64 range can pass.
    if v.fract() == 0.0 && v.abs() < 9.2e18 {
        return write!(w, "{v:.1}");
    }
    write_g(w, v, 16)
}

/// C's `%.{prec}g` for a finite double, without heap allocation.
fn write_g<W: ?Sized + Write>(w: &mut W, v: f64, prec: usize) -> io::Result<()> {
    let mut sci = [0u8; 64];
    let n = {
        let mut cur = io::Cursor::new(&mut sci[..]);
        write!(cur, "{:.*e}", prec - 1, v)?;
        cur.position() as usize
    };
    let sci = &sci[..n];
    let e_at = sci.iter().position(|&b| b == b'e').unwrap_or(n);
    let exp: i32 = std::str::from_utf8(&sci[(e_at + 1).min(n)..])
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if exp < -4 || exp >= prec as i32 {
        w.write_all(strip_fraction_zeros(&sci[..e_at]))?;
        let sign = if exp < 0 { '-' } else { '+' };
        return write!(w, "e{sign}{:02}", exp.unsigned_abs());
    }
    let decimals = (prec as i32 - 1 - exp) as usize;
    let mut fixed = [0u8; 64];
    let n = {
        let mut cur = io::Cursor::new(&mut fixed[..]);
        write!(cur, "{v:.decimals$}")?;
        cur.position() as usize
    };
    w.write_all(strip_fraction_zeros(&fixed[..n]))
}

/// `%g` drops trailing zeros of the fraction, and the point when nothing is left.
fn strip_fraction_zeros(s: &[u8]) -> &[u8] {
    if !s.contains(&b'.') {
        return s;
    }
    let mut end = s.len();
    while end > 0 && s[end - 1] == b'0' {
        end -= 1;
    }
    if end > 0 && s[end - 1] == b'.' {
        end -= 1;
    }
    &s[..end]
}

/// A value serialized with Fluent Bit's map rule (last duplicate key wins).
pub struct FluentValue<'a>(pub &'a Value);

impl Serialize for FluentValue<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Map(m) => FluentJsonMap { map: m, date: None }.serialize(s),
            Value::SharedMap(m) => FluentJsonMap { map: m, date: None }.serialize(s),
            Value::Array(a) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for v in a {
                    seq.serialize_element(&FluentValue(v))?;
                }
                seq.end()
            }
            other => other.serialize(s),
        }
    }
}

/// A record body, optionally preceded by the date key.
pub struct FluentJsonMap<'a> {
    pub map: &'a Map,
    pub date: Option<DateKey<'a>>,
}

impl Serialize for FluentJsonMap<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut out = s.serialize_map(None)?;
        if let Some(d) = &self.date {
            if !self.map.contains_key(d.key) {
                out.serialize_key(d.key)?;
                serialize_date(&mut out, d)?;
            }
        }
        for (k, v) in self.map.iter_last_wins() {
            out.serialize_entry(k.as_str(), &FluentValue(v))?;
        }
        out.end()
    }
}

fn serialize_date<M: SerializeMap>(out: &mut M, d: &DateKey<'_>) -> Result<(), M::Error> {
    match d.format {
        DateFormat::Double => out.serialize_value(&d.time.as_f64()),
        DateFormat::Epoch => out.serialize_value(&d.time.secs()),
        DateFormat::EpochMs => out.serialize_value(&d.time.as_millis()),
        DateFormat::Iso8601 | DateFormat::JavaSqlTimestamp => {
            let mut buf = [0u8; 48];
            let n = format_date(&mut buf, d.time, d.format);
            out.serialize_value(std::str::from_utf8(&buf[..n]).unwrap_or(""))
        }
    }
}

/// Writes `2019-12-19T17:41:12.706307Z` (iso8601) or `2019-12-19 17:41:12.706307`
/// (java_sql_timestamp) into `buf`, returning the length.
pub fn format_date(buf: &mut [u8], t: EventTime, f: DateFormat) -> usize {
    let secs = t.secs();
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    let (h, mi, s) = (sod / 3600, (sod / 60) % 60, sod % 60);
    let micros = t.subsec_nanos() / 1000;
    let mut cur = io::Cursor::new(buf);
    let r = match f {
        DateFormat::Iso8601 => write!(
            cur,
            "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{micros:06}Z"
        ),
        _ => write!(
            cur,
            "{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{micros:06}"
        ),
    };
    if r.is_err() {
        return 0;
    }
    cur.position() as usize
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Appends one record body as JSON (with the date key first when given).
pub fn write_record(
    out: &mut Vec<u8>,
    body: &Map,
    date: Option<DateKey<'_>>,
    escape_unicode: bool,
) -> Result<(), serde_json::Error> {
    let mut ser = serde_json::Serializer::with_formatter(out, FluentFormatter { escape_unicode });
    FluentJsonMap { map: body, date }.serialize(&mut ser)
}

/// Appends one value as JSON.
pub fn write_value(
    out: &mut Vec<u8>,
    v: &Value,
    escape_unicode: bool,
) -> Result<(), serde_json::Error> {
    let mut ser = serde_json::Serializer::with_formatter(out, FluentFormatter { escape_unicode });
    FluentValue(v).serialize(&mut ser)
}

/// A map printed as Fluent Bit's `msgpack_object_print` does: `{"k"=>"v", "n"=>1}`.
pub struct FluentMap<'a>(pub &'a Map);

impl fmt::Display for FluentMap<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_fluent_map(f, self.0)
    }
}

/// Whether `json.escape_unicode` is on in the `[SERVICE]` section (Fluent Bit's default: on).
/// Unparsable values keep the default; the service options report those.
pub fn escape_unicode_setting(config: &logferry_core::config::Config) -> bool {
    config
        .sections(logferry_core::config::SectionKind::Service)
        .filter_map(|s| s.value("json.escape_unicode"))
        .last()
        .and_then(|v| logferry_core::config::units::parse_bool(v).ok())
        .unwrap_or(true)
}

/// Reusable output buffers, so that a flush does not start from an empty allocation.
#[derive(Debug, Default)]
pub struct BufPool {
    free: std::sync::Mutex<Vec<Vec<u8>>>,
}

impl BufPool {
    /// Buffers larger than this are not kept.
    const KEEP_MAX: usize = 8 * 1024 * 1024;
    /// Buffers kept at most.
    const KEEP_COUNT: usize = 4;

    /// An empty buffer, reused when one is free.
    pub fn take(&self) -> Vec<u8> {
        self.free
            .lock()
            .ok()
            .and_then(|mut f| f.pop())
            .unwrap_or_else(|| Vec::with_capacity(64 * 1024))
    }

    /// Hands a buffer back.
    pub fn put(&self, mut buf: Vec<u8>) {
        if buf.capacity() > Self::KEEP_MAX {
            return;
        }
        buf.clear();
        if let Ok(mut f) = self.free.lock() {
            if f.len() < Self::KEEP_COUNT {
                f.push(buf);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g16(v: f64) -> String {
        let mut out = Vec::new();
        write_double(&mut out, v).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn doubles_match_printf() {
        assert_eq!(g16(1.0), "1.0");
        assert_eq!(g16(-3.0), "-3.0");
        assert_eq!(g16(0.5), "0.5");
        assert_eq!(g16(0.1), "0.1");
        assert_eq!(g16(1.0 / 3.0), "0.3333333333333333");
        assert_eq!(
            g16(EventTime::from_parts(1_576_777_272, 706_307_780).as_f64()),
            "1576777272.706308"
        );
        assert_eq!(g16(1e-5), "1e-05");
        assert_eq!(g16(1.5e-7), "1.5e-07");
        assert_eq!(g16(0.0001), "0.0001");
        assert_eq!(g16(1e20), "1e+20");
        assert_eq!(g16(1.25e17), "125000000000000000.0");
        assert_eq!(g16(123_456.789), "123456.789");
        assert_eq!(g16(f64::NAN), "null");
    }

    #[test]
    fn strings_escape_like_fluent_bit() {
        let mut m = Map::new();
        m.insert("k", "a\"b\\c\n\t\u{1}\u{7f}é€😀/");
        let mut out = Vec::new();
        write_record(&mut out, &m, None, true).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"k":"a\"b\\c\n\t\u0001\u007f\u00e9\u20ac\ud83d\ude00/"}"#
        );
        let mut out = Vec::new();
        write_record(&mut out, &m, None, false).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"k\":\"a\\\"b\\\\c\\n\\t\\u0001\u{7f}é€😀/\"}"
        );
    }

    #[test]
    fn last_duplicate_wins_and_shadows_the_date_key() {
        let m = Map(vec![
            ("a".into(), Value::Int(1)),
            ("date".into(), Value::from("mine")),
            ("a".into(), Value::Int(2)),
        ]);
        let date = DateKey {
            key: "date",
            format: DateFormat::Epoch,
            time: EventTime::from_parts(10, 0),
        };
        let mut out = Vec::new();
        write_record(&mut out, &m, Some(date), true).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), r#"{"date":"mine","a":2}"#);
    }

    #[test]
    fn date_formats() {
        let t = EventTime::from_parts(1_576_777_272, 706_307_780);
        let body = Map(vec![("m".into(), Value::from("x"))]);
        let render = |f| {
            let mut out = Vec::new();
            write_record(
                &mut out,
                &body,
                Some(DateKey {
                    key: "date",
                    format: f,
                    time: t,
                }),
                true,
            )
            .unwrap();
            String::from_utf8(out).unwrap()
        };
        assert_eq!(
            render(DateFormat::Double),
            r#"{"date":1576777272.706308,"m":"x"}"#
        );
        assert_eq!(render(DateFormat::Epoch), r#"{"date":1576777272,"m":"x"}"#);
        assert_eq!(
            render(DateFormat::EpochMs),
            r#"{"date":1576777272706,"m":"x"}"#
        );
        assert_eq!(
            render(DateFormat::Iso8601),
            r#"{"date":"2019-12-19T17:41:12.706307Z","m":"x"}"#
        );
        assert_eq!(
            render(DateFormat::JavaSqlTimestamp),
            r#"{"date":"2019-12-19 17:41:12.706307","m":"x"}"#
        );
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }

    #[test]
    fn date_format_names() {
        assert_eq!(DateFormat::parse("ISO8601"), Ok(DateFormat::Iso8601));
        assert_eq!(DateFormat::parse("epoch_millis"), Ok(DateFormat::EpochMs));
        assert!(DateFormat::parse("rfc3339").is_err());
    }
}
