//! `file` output: appends records to a file (Fluent Bit's `out_file`).
//!
//! The file is `Path/File`; without `File` it is the tag with every byte other than ASCII
//! letters, digits, `-`, `_` and `.` replaced by `_` (`.`/`..` components become `_`), as
//! Fluent Bit 5.x sanitizes it. Relative paths resolve against the configuration file's
//! directory (logferry's rule for paths in a config; Fluent Bit uses its working directory).
//! With `Mkdir on`, missing directories are created (mode 0755).
//!
//! Formats, byte for byte as Fluent Bit's `file.c` writes them:
//! - `out_file` (default): `TAG: [SECS.NANOS, {"k":"v"}]` (nanoseconds with 9 digits; JSON as
//!   in [`crate::json`]);
//! - `plain`: the record as JSON;
//! - `csv`: `SECS.NANOS,"v1",2` — values as Fluent Bit's msgpack printer writes them (strings
//!   quoted), `Delimiter` default `,`; with `CSV_Column_Names on` a `timestamp,"k1","k2"` header
//!   is written first when the file is empty (keys of the flush's first record);
//! - `ltsv`: `"time":1576777272.706308\t"k":"v"` (time with `%f`), `Delimiter` default tab,
//!   `Label_Delimiter` default `:`;
//! - `template`: `Template` (default `{time} {message}`) with `{key}` replaced by the value
//!   (strings unquoted, others as the msgpack printer) and `{time}` by the time with `%f`; an
//!   unknown key is left as written. Like Fluent Bit, any prefix of `time` (`{}`, `{t}`) prints
//!   the time;
//! - `msgpack`: the records in Fluent Bit's chunk format (see [`logferry_core::msgpack`]).
//!
//! csv and ltsv skip records with an empty body, as Fluent Bit does. `Delimiter` and
//! `Label_Delimiter` take `\t`/`tab`, `space` or `comma` (and the characters themselves); other
//! values are ignored with a build note (Fluent Bit ignores them silently).
//!
//! Each flush is rendered into one buffer and appended with a single `write_all`; a failure to
//! open or write is a retry carrying the I/O error.
//!
//! Not supported yet: rotation (`files_rotation` with `max_size`, `max_files` and `gzip`, and
//! Fluent Bit 5.1's `rotate`, `rotate_max_size`, `rotate_max_files`, `rotate_gzip`),
//! `enable_strftime` and Fluent Bit 5.x's dynamic destinations (`fallback_file`,
//! `fallback_path`, `max_dynamic_files`, `on_missing_field`, `on_limit_reached`). Their keys are
//! accepted, and each one set is a build note (`--dry-run` and the start-up log), but a record accessor (`$`) in `Path` or
//! `File` is a configuration error, since writing to a file literally named after it would be
//! silently wrong.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use logferry_core::config::{ConfigError, Entry, Section};
use logferry_core::event::FluentDisplay;
use logferry_core::options;
use logferry_core::{Record, Value};
use logferry_engine::common::NotApplied;
use logferry_engine::{Batch, BuildContext, FlushResult, Output, OutputPlugin};

use crate::json::{self, BufPool};
use crate::out_stdout::key_error;
use logferry_core::msgpack;

options! {
    /// Options of the `file` output.
    pub struct FileOptions for "file output" {
        /// Directory to write in (relative: to the working directory, as in Fluent Bit).
        pub path: Option<String> = ["Path"] None,
        /// File name (default: the tag, made safe for a path).
        pub file: Option<String> = ["File"] None,
        /// Content format: out_file, plain, csv, ltsv, template or msgpack.
        pub format: String = ["Format"] Some("out_file"),
        /// Field separator of csv and ltsv: tab, space or comma.
        pub delimiter: Option<String> = ["Delimiter"] None,
        /// Label separator of ltsv: tab, space or comma.
        pub label_delimiter: Option<String> = ["Label_Delimiter"] None,
        /// Line template of the template format; {key} is replaced by the record's value.
        pub template: String = ["Template"] Some("{time} {message}"),
        /// Write the keys as a header line when a csv file is empty.
        pub csv_column_names: bool = ["CSV_Column_Names"] Some("false"),
        /// Create missing directories (mode 0755).
        pub mkdir: bool = ["Mkdir"] Some("false"),
        /// Rotate files by size (accepted; not applied yet, a build note says so).
        pub files_rotation: bool = ["files_rotation"] Some("false"),
        /// Size that triggers rotation (accepted; rotation is not implemented yet).
        pub max_size: Option<String> = ["max_size"] None,
        /// Rotated files kept (accepted; rotation is not implemented yet).
        pub max_files: Option<String> = ["max_files"] None,
        /// Compress rotated files (accepted; rotation is not implemented yet).
        pub gzip: Option<String> = ["gzip"] None,
        /// Fallback file of dynamic destinations (accepted; no effect).
        pub fallback_file: Option<String> = ["fallback_file"] None,
        /// Fallback directory of dynamic destinations (accepted; no effect).
        pub fallback_path: Option<String> = ["fallback_path"] None,
        /// Open file limit of dynamic destinations (accepted; no effect).
        pub max_dynamic_files: Option<String> = ["max_dynamic_files"] None,
        /// Missing field action of dynamic destinations (accepted; no effect).
        pub on_missing_field: Option<String> = ["on_missing_field"] None,
        /// Limit action of dynamic destinations (accepted; no effect).
        pub on_limit_reached: Option<String> = ["on_limit_reached"] None,
        /// strftime placeholders in Path and File (accepted; not applied).
        pub enable_strftime: bool = ["enable_strftime"] Some("false"),
        /// Fluent Bit 5.1's size rotation (accepted; not applied).
        pub rotate: bool = ["rotate"] Some("false"),
        /// Size that triggers rotate (accepted; not applied).
        pub rotate_max_size: Option<String> = ["rotate_max_size"] None,
        /// Rotated files kept by rotate (accepted; not applied).
        pub rotate_max_files: Option<String> = ["rotate_max_files"] None,
        /// Compress files rotated by rotate (accepted; not applied).
        pub rotate_gzip: Option<String> = ["rotate_gzip"] None,
    }
}

/// The registry entry.
pub static PLUGIN: OutputPlugin = OutputPlugin {
    name: "file",
    aliases: &[],
    description: "Generate log file",
    options: FileOptions::OPTIONS,
    default_workers: 1,
    build,
};

/// What a record looks like in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileFormat {
    OutFile,
    Plain,
    Csv,
    Ltsv,
    Template(String),
    Msgpack,
}

/// The options, checked.
#[derive(Clone, Debug)]
pub struct FileSettings {
    /// The directory, already resolved; `None` writes next to the config file.
    pub dir: Option<PathBuf>,
    /// The file name; `None` uses the sanitized tag.
    pub file: Option<String>,
    /// Where relative names resolve when `dir` is unset.
    pub base_dir: PathBuf,
    pub format: FileFormat,
    pub delimiter: String,
    pub label_delimiter: String,
    pub csv_column_names: bool,
    pub mkdir: bool,
    /// `json.escape_unicode` (on by default).
    pub escape_unicode: bool,
}

/// Fluent Bit's `check_delimiter`, plus the characters themselves.
fn delimiter(raw: &str) -> Option<&'static str> {
    match raw {
        "\t" => return Some("\t"),
        " " => return Some(" "),
        "," => return Some(","),
        _ => {}
    }
    let t = raw.trim();
    if t.eq_ignore_ascii_case("\\t") || t.eq_ignore_ascii_case("tab") {
        Some("\t")
    } else if t.eq_ignore_ascii_case("space") {
        Some(" ")
    } else if t.eq_ignore_ascii_case("comma") {
        Some(",")
    } else {
        None
    }
}

impl FileSettings {
    /// Checks the options; an error names the Fluent Bit key at fault.
    pub fn from_options(o: &FileOptions, base_dir: &Path) -> Result<Self, (&'static str, String)> {
        for (key, v) in [("Path", &o.path), ("File", &o.file)] {
            if v.as_deref().is_some_and(|s| s.contains('$')) {
                return Err((
                    key,
                    "record accessors in file destinations are not supported by logferry yet"
                        .into(),
                ));
            }
        }
        let (format, mut delim, mut label) = match o.format.trim().to_ascii_lowercase().as_str() {
            "out_file" => (FileFormat::OutFile, "", ""),
            "plain" => (FileFormat::Plain, "", ""),
            "csv" => (FileFormat::Csv, ",", ""),
            "ltsv" => (FileFormat::Ltsv, "\t", ":"),
            "template" => (FileFormat::Template(o.template.clone()), "", ""),
            "msgpack" => (FileFormat::Msgpack, "", ""),
            _ => {
                return Err((
                    "Format",
                    format!(
                    "unknown format '{}': expected out_file, plain, csv, ltsv, template or msgpack",
                    o.format
                ),
                ))
            }
        };
        // Other values are ignored, as Fluent Bit ignores them; build() notes them.
        if let Some(d) = o.delimiter.as_deref().and_then(delimiter) {
            delim = d;
        }
        if let Some(d) = o.label_delimiter.as_deref().and_then(delimiter) {
            label = d;
        }
        let resolve = |p: &str| {
            let p = Path::new(p);
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base_dir.join(p)
            }
        };
        Ok(FileSettings {
            dir: o.path.as_deref().filter(|p| !p.is_empty()).map(resolve),
            file: o.file.clone().filter(|f| !f.is_empty()),
            base_dir: base_dir.to_path_buf(),
            format,
            delimiter: delim.to_string(),
            label_delimiter: label.to_string(),
            csv_column_names: o.csv_column_names,
            mkdir: o.mkdir,
            escape_unicode: true,
        })
    }
}

const ROTATION: &str = "files are not rotated by logferry yet";
const DYNAMIC: &str = "dynamic destinations are not supported by logferry yet";

/// Keys accepted and not applied (each set one is a build note).
pub const NOT_APPLIED: &[NotApplied] = &[
    NotApplied::new("files_rotation", Some("false"), ROTATION),
    NotApplied::new("max_size", None, ROTATION),
    NotApplied::new("max_files", None, ROTATION),
    NotApplied::new("gzip", None, ROTATION),
    NotApplied::new("rotate", Some("false"), ROTATION),
    NotApplied::new("rotate_max_size", None, ROTATION),
    NotApplied::new("rotate_max_files", None, ROTATION),
    NotApplied::new("rotate_gzip", None, ROTATION),
    NotApplied::new(
        "enable_strftime",
        Some("false"),
        "Path and File are used as written",
    ),
    NotApplied::new("fallback_file", None, DYNAMIC),
    NotApplied::new("fallback_path", None, DYNAMIC),
    NotApplied::new("max_dynamic_files", None, DYNAMIC),
    NotApplied::new("on_missing_field", None, DYNAMIC),
    NotApplied::new("on_limit_reached", None, DYNAMIC),
];

fn build(
    ctx: &BuildContext,
    section: &Section,
    entries: &[&Entry],
) -> Result<Arc<dyn Output>, ConfigError> {
    let opts = FileOptions::from_entries(&section.span, entries, &[])?;
    ctx.not_applied(NOT_APPLIED, entries);
    for e in entries {
        let k = e.key.as_str();
        if (k.eq_ignore_ascii_case("Delimiter") || k.eq_ignore_ascii_case("Label_Delimiter"))
            && delimiter(&e.value).is_none()
        {
            ctx.note(e, "must be tab, space or comma; ignored");
        }
    }
    // Relative paths are relative to the working directory, as in Fluent Bit.
    let _ = &ctx.base_dir;
    let mut settings = FileSettings::from_options(&opts, Path::new(""))
        .map_err(|(key, reason)| key_error(section, entries, key, reason))?;
    settings.escape_unicode = json::escape_unicode_setting(&ctx.config);
    Ok(Arc::new(FileOutput::new(settings)))
}

/// The tag made safe as a relative path, as Fluent Bit 5.x's `sanitize_tag_name`.
pub fn sanitize_tag(tag: &str) -> String {
    let mut out = String::with_capacity(tag.len());
    for comp in tag.split(['/', '\\']).filter(|c| !c.is_empty()) {
        if !out.is_empty() {
            out.push('/');
        }
        if comp == "." || comp == ".." {
            out.push('_');
            continue;
        }
        out.extend(comp.bytes().map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') {
                b as char
            } else {
                '_'
            }
        }));
    }
    if out.is_empty() {
        out.push('_');
    }
    out
}

/// Appends records to files.
pub struct FileOutput {
    settings: FileSettings,
    bufs: BufPool,
}

impl FileOutput {
    /// An output with these settings.
    pub fn new(settings: FileSettings) -> Self {
        FileOutput {
            settings,
            bufs: BufPool::default(),
        }
    }

    /// The file records under `tag` go to.
    pub fn destination(&self, tag: &str) -> PathBuf {
        let s = &self.settings;
        let name = match &s.file {
            Some(f) => f.clone(),
            None => sanitize_tag(tag),
        };
        match &s.dir {
            // Fluent Bit joins with "%s/%s", so an absolute File stays under Path.
            Some(dir) => {
                let mut p = dir.clone().into_os_string();
                p.push("/");
                p.push(name);
                PathBuf::from(p)
            }
            None => s.base_dir.join(name),
        }
    }

    /// Appends what one flush writes; returns the length of the csv header at the start of
    /// `out` (0 when there is none), which is written only if the file is empty.
    pub fn render<'a>(
        &self,
        tag: &str,
        records: impl Iterator<Item = &'a Record>,
        out: &mut Vec<u8>,
    ) -> Result<usize, String> {
        let s = &self.settings;
        let io = |e: std::io::Error| e.to_string();
        let mut header_len = 0;
        let mut first = true;
        for r in records {
            match &s.format {
                FileFormat::OutFile => {
                    write!(
                        out,
                        "{tag}: [{}.{:09}, ",
                        r.time.secs() as u64,
                        r.time.subsec_nanos()
                    )
                    .map_err(io)?;
                    json::write_record(out, &r.body, None, s.escape_unicode)
                        .map_err(|e| e.to_string())?;
                    out.extend_from_slice(b"]\n");
                }
                FileFormat::Plain => {
                    json::write_record(out, &r.body, None, s.escape_unicode)
                        .map_err(|e| e.to_string())?;
                    out.push(b'\n');
                }
                FileFormat::Csv => {
                    if first && s.csv_column_names && !r.body.is_empty() {
                        out.extend_from_slice(b"timestamp");
                        out.extend_from_slice(s.delimiter.as_bytes());
                        for (i, (k, _)) in r.body.iter().enumerate() {
                            if i > 0 {
                                out.extend_from_slice(s.delimiter.as_bytes());
                            }
                            write!(out, "{}", FluentDisplay(&Value::Str(k.clone()))).map_err(io)?;
                        }
                        out.push(b'\n');
                        header_len = out.len();
                    }
                    if !r.body.is_empty() {
                        write!(out, "{}.{:09}", r.time.secs(), r.time.subsec_nanos())
                            .map_err(io)?;
                        for (_, v) in r.body.iter() {
                            out.extend_from_slice(s.delimiter.as_bytes());
                            write!(out, "{}", FluentDisplay(v)).map_err(io)?;
                        }
                        out.push(b'\n');
                    }
                }
                FileFormat::Ltsv => {
                    if !r.body.is_empty() {
                        write!(out, "\"time\"{}{:.6}", s.label_delimiter, r.time.as_f64())
                            .map_err(io)?;
                        for (k, v) in r.body.iter() {
                            out.extend_from_slice(s.delimiter.as_bytes());
                            write!(
                                out,
                                "{}{}{}",
                                FluentDisplay(&Value::Str(k.clone())),
                                s.label_delimiter,
                                FluentDisplay(v)
                            )
                            .map_err(io)?;
                        }
                        out.push(b'\n');
                    }
                }
                FileFormat::Template(t) => render_template(out, t, r).map_err(io)?,
                FileFormat::Msgpack => msgpack::write_record(out, r),
            }
            first = false;
        }
        Ok(header_len)
    }
}

/// Fluent Bit's `template_output`: `{key}` placeholders, an unmatched `{` restarting at the next
/// one, unknown keys and an unclosed brace copied as written.
fn render_template(out: &mut Vec<u8>, template: &str, r: &Record) -> std::io::Result<()> {
    let t = template.as_bytes();
    let mut open: Option<usize> = None;
    for (i, &c) in t.iter().enumerate() {
        match (c, open) {
            (b'{', prev) => {
                if let Some(start) = prev {
                    out.extend_from_slice(&t[start..i]);
                }
                open = Some(i);
            }
            (b'}', Some(start)) => {
                let key = &template[start + 1..i];
                if !write_template_key(out, key, r)? {
                    out.extend_from_slice(&t[start..=i]);
                }
                open = None;
            }
            (_, None) => out.push(c),
            (_, Some(_)) => {}
        }
    }
    if let Some(start) = open {
        out.extend_from_slice(&t[start..]);
    }
    out.push(b'\n');
    Ok(())
}

fn write_template_key(out: &mut Vec<u8>, key: &str, r: &Record) -> std::io::Result<bool> {
    // Fluent Bit compares with strncmp(key, "time", strlen(key)).
    if "time".starts_with(key) {
        write!(out, "{:.6}", r.time.as_f64())?;
        return Ok(true);
    }
    match r.body.get(key) {
        Some(Value::Str(s)) => out.extend_from_slice(s.as_bytes()),
        Some(v) => write!(out, "{}", FluentDisplay(v))?,
        None => return Ok(false),
    }
    Ok(true)
}

fn open_append(path: &Path, mkdir: bool) -> std::io::Result<std::fs::File> {
    let open = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    };
    match open() {
        Err(e) if mkdir && e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                let mut b = std::fs::DirBuilder::new();
                b.recursive(true);
                #[cfg(unix)]
                {
                    use std::os::unix::fs::DirBuilderExt;
                    b.mode(0o755);
                }
                b.create(parent)?;
            }
            open()
        }
        other => other,
    }
}

fn append(path: &Path, mkdir: bool, buf: &[u8], header_len: usize) -> std::io::Result<()> {
    let mut f = open_append(path, mkdir)?;
    let start = if header_len > 0 && f.metadata()?.len() > 0 {
        header_len
    } else {
        0
    };
    f.write_all(&buf[start..])
}

#[async_trait]
impl Output for FileOutput {
    async fn flush(&self, batch: &Batch) -> FlushResult {
        let mut buf = self.bufs.take();
        let header_len = match self.render(&batch.tag, batch.records(), &mut buf) {
            Ok(h) => h,
            Err(e) => {
                self.bufs.put(buf);
                return FlushResult::Error(e);
            }
        };
        if buf.is_empty() {
            self.bufs.put(buf);
            return FlushResult::Ok;
        }
        let path = self.destination(&batch.tag);
        let mkdir = self.settings.mkdir;
        let done = tokio::task::spawn_blocking(move || {
            let r = append(&path, mkdir, &buf, header_len)
                .map_err(|e| format!("{}: {e}", path.display()));
            (r, buf)
        })
        .await;
        match done {
            Ok((r, buf)) => {
                self.bufs.put(buf);
                match r {
                    Ok(()) => FlushResult::Ok,
                    Err(e) => FlushResult::Retry(e),
                }
            }
            Err(e) => FlushResult::Retry(format!("file output: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use logferry_core::{EventTime, Map};

    fn opts(format: &str) -> FileOptions {
        let mut o = FileOptions::defaults().unwrap();
        o.format = format.into();
        o
    }

    fn out(o: &FileOptions) -> FileOutput {
        FileOutput::new(FileSettings::from_options(o, Path::new("/base")).unwrap())
    }

    fn records() -> Vec<Record> {
        let mut a = Map::new();
        a.insert("message", "hello");
        a.insert("n", 7i64);
        a.insert("f", 0.5f64);
        vec![
            Record::new(EventTime::from_parts(1_576_777_272, 706_307_780), a),
            Record::new(EventTime::from_parts(1_576_777_273, 0), Map::new()),
        ]
    }

    fn render(o: &FileOptions) -> (String, usize) {
        let mut buf = Vec::new();
        let recs = records();
        let h = out(o).render("app.log", recs.iter(), &mut buf).unwrap();
        (String::from_utf8(buf).unwrap(), h)
    }

    #[test]
    fn out_file_and_plain() {
        assert_eq!(
            render(&opts("out_file")).0,
            "app.log: [1576777272.706307780, {\"message\":\"hello\",\"n\":7,\"f\":0.5}]\n\
             app.log: [1576777273.000000000, {}]\n"
        );
        assert_eq!(
            render(&opts("plain")).0,
            "{\"message\":\"hello\",\"n\":7,\"f\":0.5}\n{}\n"
        );
    }

    #[test]
    fn csv_and_ltsv() {
        let mut o = opts("csv");
        o.csv_column_names = true;
        let (s, h) = render(&o);
        assert_eq!(
            s,
            "timestamp,\"message\",\"n\",\"f\"\n1576777272.706307780,\"hello\",7,0.500000\n"
        );
        assert_eq!(h, "timestamp,\"message\",\"n\",\"f\"\n".len());
        let mut o = opts("csv");
        o.delimiter = Some("tab".into());
        assert_eq!(
            render(&o),
            ("1576777272.706307780\t\"hello\"\t7\t0.500000\n".into(), 0)
        );
        assert_eq!(
            render(&opts("ltsv")).0,
            "\"time\":1576777272.706308\t\"message\":\"hello\"\t\"n\":7\t\"f\":0.500000\n"
        );
        let mut o = opts("ltsv");
        o.delimiter = Some("comma".into());
        o.label_delimiter = Some("space".into());
        o.delimiter = Some("bogus".into());
        assert_eq!(
            render(&o).0,
            "\"time\" 1576777272.706308\t\"message\" \"hello\"\t\"n\" 7\t\"f\" 0.500000\n"
        );
    }

    #[test]
    fn template_like_fluent_bit() {
        let mut o = opts("template");
        assert_eq!(
            render(&o).0,
            "1576777272.706308 hello\n1576777273.000000 {message}\n"
        );
        o.template = "{a{message} n={n} {missing} {f".into();
        let recs = records();
        let mut buf = Vec::new();
        out(&o).render("t", recs[..1].iter(), &mut buf).unwrap();
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "{ahello n=7 {missing} {f\n"
        );
    }

    #[test]
    fn msgpack_format_writes_chunk_records() {
        let recs = records();
        let mut buf = Vec::new();
        out(&opts("msgpack"))
            .render("t", recs.iter(), &mut buf)
            .unwrap();
        assert_eq!(&buf[..4], &[0x92, 0x92, 0xd7, 0x00]);
    }

    #[test]
    fn destination_and_sanitizing() {
        assert_eq!(sanitize_tag("kube.var.log"), "kube.var.log");
        assert_eq!(sanitize_tag("../a b/./c:d"), "_/a_b/_/c_d");
        assert_eq!(sanitize_tag("//"), "_");
        let o = opts("plain");
        assert_eq!(out(&o).destination("x/../y"), Path::new("/base/x/_/y"));
        let mut o = opts("plain");
        o.path = Some("logs".into());
        o.file = Some("out.txt".into());
        assert_eq!(
            out(&o).destination("ignored"),
            Path::new("/base/logs/out.txt")
        );
        o.path = Some("/var/log".into());
        assert_eq!(
            out(&o).destination("ignored"),
            Path::new("/var/log/out.txt")
        );
    }

    #[test]
    fn unsupported_and_bad_values_name_the_key() {
        let check = |o: FileOptions| {
            FileSettings::from_options(&o, Path::new("/"))
                .unwrap_err()
                .0
        };
        assert_eq!(check(opts("yaml")), "Format");
        let mut o = opts("plain");
        o.files_rotation = true;
        o.fallback_file = Some("x".into());
        assert!(
            FileSettings::from_options(&o, Path::new("/")).is_ok(),
            "accepted, with a warning"
        );
        let mut o = opts("plain");
        o.file = Some("$kubernetes['pod_name']".into());
        assert_eq!(check(o), "File");
    }
}
