//! `stdout` output: prints records to standard output (Fluent Bit's `out_stdout`).
//!
//! Formats, as Fluent Bit 5.x prints them:
//! - `msgpack` (default), Fluent Bit's human-readable printer, one line per record, `N` counting
//!   from 0 within each flush, seconds printed as a signed 32-bit number and nanoseconds with 9
//!   digits, the metadata map (always `{}`: logferry records carry none) then the body:
//!   `[0] dummy.0: [[1576777272.706307780, {}], {"message"=>"dummy"}]`
//! - `json_lines`: one JSON object per line, `{"date":1576777272.706308,"message":"dummy"}`;
//! - `json`: the flush's records as one JSON array followed by a newline;
//! - `json_stream`: the JSON objects back to back, a newline after the last.
//!
//! JSON formats start each object with `json_date_key` (default `date`; `false`/`off`/`no`
//! leaves it out) in `json_date_format` (see [`crate::json`] for number and string encoding).
//! An unknown `Format` or `json_date_format` is a configuration error (Fluent Bit logs an error
//! and falls back to `msgpack` / `double`); `otlp_json` and `otlp_json_pretty` are not supported.
//!
//! Each flush is rendered into one buffer and written with a single `write_all` while holding
//! the writer's lock, on the blocking pool so a slow reader of stdout does not stall the runtime.

use std::io::Write;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use logferry_core::config::{ConfigError, Entry, Section};
use logferry_core::options;
use logferry_core::Record;
use logferry_engine::{Batch, BuildContext, FlushResult, Output, OutputPlugin};

use crate::json::{self, BufPool, DateFormat, DateKey, FluentMap};

options! {
    /// Options of the `stdout` output.
    pub struct StdoutOptions for "stdout output" {
        /// Output format: msgpack (Fluent Bit's printer), json, json_lines or json_stream.
        pub format: String = ["Format"] Some("msgpack"),
        /// Name of the time key in JSON formats; false/off disables it.
        pub json_date_key: String = ["json_date_key"] Some("date"),
        /// Time format in JSON formats: double, epoch, epoch_ms, iso8601 or java_sql_timestamp.
        pub json_date_format: String = ["json_date_format"] Some("double"),
    }
}

/// The registry entry.
pub static PLUGIN: OutputPlugin = OutputPlugin {
    name: "stdout",
    aliases: &[],
    description: "Prints events to STDOUT",
    options: StdoutOptions::OPTIONS,
    default_workers: 1,
    build,
};

/// What `stdout` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StdoutFormat {
    Msgpack,
    Json,
    JsonLines,
    JsonStream,
}

impl StdoutFormat {
    /// Parses Fluent Bit's names (case-insensitive).
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "msgpack" => Ok(StdoutFormat::Msgpack),
            "json" => Ok(StdoutFormat::Json),
            "json_lines" => Ok(StdoutFormat::JsonLines),
            "json_stream" => Ok(StdoutFormat::JsonStream),
            "otlp_json" | "otlp_json_pretty" => {
                Err(format!("format '{s}' is not supported by logferry yet"))
            }
            _ => Err(format!(
                "unknown format '{s}': expected msgpack, json, json_lines or json_stream"
            )),
        }
    }
}

/// The options, checked.
#[derive(Clone, Debug)]
pub struct StdoutSettings {
    pub format: StdoutFormat,
    /// `None` when `json_date_key` disables the date.
    pub date_key: Option<String>,
    pub date_format: DateFormat,
    /// `json.escape_unicode` (on by default).
    pub escape_unicode: bool,
}

impl StdoutSettings {
    /// Checks the options; an error names the Fluent Bit key at fault.
    pub fn from_options(o: &StdoutOptions) -> Result<Self, (&'static str, String)> {
        let format = StdoutFormat::parse(&o.format).map_err(|r| ("Format", r))?;
        let date_format =
            DateFormat::parse(&o.json_date_format).map_err(|r| ("json_date_format", r))?;
        let key = o.json_date_key.trim();
        let disabled = ["false", "off", "no"]
            .iter()
            .any(|d| key.eq_ignore_ascii_case(d));
        Ok(StdoutSettings {
            format,
            date_key: (!disabled).then(|| key.to_string()),
            date_format,
            escape_unicode: true,
        })
    }
}

/// Where the error about `key` should point: the entry that set it, else the section.
pub(crate) fn key_error(
    section: &Section,
    entries: &[&Entry],
    key: &str,
    reason: String,
) -> ConfigError {
    match entries
        .iter()
        .rev()
        .find(|e| e.key.eq_ignore_ascii_case(key))
    {
        Some(e) => ConfigError::key(&e.span, &e.key, reason),
        None => ConfigError::key(&section.span, key, reason),
    }
}

fn build(
    ctx: &BuildContext,
    section: &Section,
    entries: &[&Entry],
) -> Result<Arc<dyn Output>, ConfigError> {
    let opts = StdoutOptions::from_entries(&section.span, entries, &[])?;
    let mut settings = StdoutSettings::from_options(&opts)
        .map_err(|(key, reason)| key_error(section, entries, key, reason))?;
    settings.escape_unicode = json::escape_unicode_setting(&ctx.config);
    Ok(Arc::new(StdoutOutput::new(settings)))
}

/// A shared, lockable writer.
pub type SharedWriter = Arc<Mutex<dyn Write + Send>>;

/// Prints records.
pub struct StdoutOutput {
    settings: StdoutSettings,
    writer: SharedWriter,
    bufs: BufPool,
}

impl StdoutOutput {
    /// Prints to the process's standard output.
    pub fn new(settings: StdoutSettings) -> Self {
        Self::with_writer(settings, Arc::new(Mutex::new(std::io::stdout())))
    }

    /// Prints to `writer` (tests capture output this way).
    pub fn with_writer(settings: StdoutSettings, writer: SharedWriter) -> Self {
        StdoutOutput {
            settings,
            writer,
            bufs: BufPool::default(),
        }
    }

    /// Appends what one flush of `records` under `tag` prints.
    pub fn render<'a>(
        &self,
        tag: &str,
        records: impl Iterator<Item = &'a Record>,
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        let s = &self.settings;
        let date = |r: &Record| {
            s.date_key.as_deref().map(|key| DateKey {
                key,
                format: s.date_format,
                time: r.time,
            })
        };
        let json_err = |e: serde_json::Error| format!("encoding JSON: {e}");
        match s.format {
            StdoutFormat::Msgpack => {
                for (n, r) in records.enumerate() {
                    // Fluent Bit: printf("[%zd] %s: [[", ...) then "%"PRId32".%09lu, " of the time.
                    writeln!(
                        out,
                        "[{n}] {tag}: [[{}.{:09}, {{}}], {}]",
                        r.time.secs() as i32,
                        r.time.subsec_nanos(),
                        FluentMap(&r.body)
                    )
                    .map_err(|e| e.to_string())?;
                }
            }
            StdoutFormat::JsonLines => {
                for r in records {
                    json::write_record(out, &r.body, date(r), s.escape_unicode)
                        .map_err(json_err)?;
                    out.push(b'\n');
                }
            }
            StdoutFormat::JsonStream => {
                for r in records {
                    json::write_record(out, &r.body, date(r), s.escape_unicode)
                        .map_err(json_err)?;
                }
                out.push(b'\n');
            }
            StdoutFormat::Json => {
                out.push(b'[');
                for (i, r) in records.enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    json::write_record(out, &r.body, date(r), s.escape_unicode)
                        .map_err(json_err)?;
                }
                out.extend_from_slice(b"]\n");
            }
        }
        Ok(())
    }
}

fn write_locked(writer: &SharedWriter, buf: &[u8]) -> std::io::Result<()> {
    let mut w = match writer.lock() {
        Ok(w) => w,
        Err(poisoned) => poisoned.into_inner(),
    };
    w.write_all(buf)?;
    w.flush()
}

#[async_trait]
impl Output for StdoutOutput {
    async fn flush(&self, batch: &Batch) -> FlushResult {
        let mut buf = self.bufs.take();
        if let Err(e) = self.render(&batch.tag, batch.records(), &mut buf) {
            self.bufs.put(buf);
            return FlushResult::Error(e);
        }
        let writer = Arc::clone(&self.writer);
        let done = tokio::task::spawn_blocking(move || {
            let r = write_locked(&writer, &buf);
            (r, buf)
        })
        .await;
        match done {
            Ok((Ok(()), buf)) => {
                self.bufs.put(buf);
                FlushResult::Ok
            }
            Ok((Err(e), buf)) => {
                self.bufs.put(buf);
                FlushResult::Retry(format!("writing to standard output: {e}"))
            }
            Err(e) => FlushResult::Retry(format!("writing to standard output: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use logferry_core::{EventTime, Map, Value};

    fn settings(format: &str, key: &str, date: &str) -> StdoutSettings {
        let o = StdoutOptions {
            format: format.into(),
            json_date_key: key.into(),
            json_date_format: date.into(),
        };
        StdoutSettings::from_options(&o).unwrap()
    }

    fn records() -> Vec<Record> {
        let mut a = Map::new();
        a.insert("message", "dummy");
        let mut b = Map::new();
        b.insert("n", 1i64);
        b.insert("f", 2.5f64);
        b.insert("ok", true);
        b.insert("nil", Value::Null);
        vec![
            Record::new(EventTime::from_parts(1_576_777_272, 706_307_780), a),
            Record::new(EventTime::from_parts(1_576_777_273, 5), b),
        ]
    }

    fn render(s: StdoutSettings) -> String {
        let out = StdoutOutput::with_writer(s, Arc::new(Mutex::new(Vec::new())));
        let mut buf = Vec::new();
        let recs = records();
        out.render("dummy.0", recs.iter(), &mut buf).unwrap();
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn msgpack_printer_format() {
        assert_eq!(
            render(settings("msgpack", "date", "double")),
            "[0] dummy.0: [[1576777272.706307780, {}], {\"message\"=>\"dummy\"}]\n\
             [1] dummy.0: [[1576777273.000000005, {}], {\"n\"=>1, \"f\"=>2.500000, \"ok\"=>true, \"nil\"=>nil}]\n"
        );
    }

    #[test]
    fn json_formats() {
        assert_eq!(
            render(settings("json_lines", "date", "double")),
            "{\"date\":1576777272.706308,\"message\":\"dummy\"}\n\
             {\"date\":1576777273.0,\"n\":1,\"f\":2.5,\"ok\":true,\"nil\":null}\n"
        );
        assert_eq!(
            render(settings("JSON", "ts", "epoch")),
            "[{\"ts\":1576777272,\"message\":\"dummy\"},{\"ts\":1576777273,\"n\":1,\"f\":2.5,\"ok\":true,\"nil\":null}]\n"
        );
        assert_eq!(
            render(settings("json_stream", "off", "double")),
            "{\"message\":\"dummy\"}{\"n\":1,\"f\":2.5,\"ok\":true,\"nil\":null}\n"
        );
    }

    #[test]
    fn bad_values_name_the_key() {
        let o = StdoutOptions {
            format: "yaml".into(),
            json_date_key: "date".into(),
            json_date_format: "double".into(),
        };
        assert_eq!(StdoutSettings::from_options(&o).unwrap_err().0, "Format");
        let o = StdoutOptions {
            format: "json".into(),
            json_date_key: "date".into(),
            json_date_format: "rfc".into(),
        };
        assert_eq!(
            StdoutSettings::from_options(&o).unwrap_err().0,
            "json_date_format"
        );
    }
}
