//! The bodies of logferry's fuzz targets, one function per target taking the fuzzer's bytes.
//!
//! `fuzz/` (cargo-fuzz, nightly, outside the workspace) calls them from libFuzzer, and
//! `tests/corpus.rs` replays every committed input (`fuzz/corpus/<target>/` seeds and
//! `fuzz/regressions/<target>/` crashes found and fixed) through them on stable, so CI runs the
//! regression corpus without libFuzzer. Each function must never panic, whatever the bytes; the
//! few assertions inside state properties the code promises (bounded joiner memory, the filter's
//! own `kubernetes` key never coming from a log, a set value reading back), so that breaking one
//! is a finding too.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use logferry_core::config::{self, Vars};
use logferry_core::record_accessor::RecordAccessor;
use logferry_core::{msgpack, EventTime, Map, Record, Str, Value};
use logferry_kubernetes::merge::{self, MergeOptions};
use logferry_parsers::time::TimeFormat;
use logferry_parsers::{Parser, Parsers};
use logferry_tail::format::{self, Framing, Joiner};

/// A target's body: the fuzzer's bytes in, a panic on a finding.
pub type Target = fn(&[u8]);

/// Every target, by the name of its `fuzz/fuzz_targets/<name>.rs` and corpus directory.
pub const TARGETS: &[(&str, Target)] = &[
    ("docker_cri", docker_cri),
    ("joiner", joiner),
    ("merge_log", merge_log),
    ("parser_regex", parser_regex),
    ("parser_logfmt", parser_logfmt),
    ("parser_ltsv", parser_ltsv),
    ("strptime", strptime),
    ("record_accessor", record_accessor),
    ("config_classic", config_classic),
    ("config_yaml", config_yaml),
];

/// A fixed "now" (2024-01-02T03:04:05Z) so that runs are reproducible.
const NOW: EventTime = EventTime(1_704_164_645_000_000_000);

/// Splits the input at its first `\n`: a pattern or format, then the text it applies to.
fn split_first_line(data: &[u8]) -> (String, String) {
    let text = String::from_utf8_lossy(data);
    match text.split_once('\n') {
        Some((a, b)) => (a.to_string(), b.to_string()),
        None => (text.to_string(), String::new()),
    }
}

/// Encodes a record as a forward entry and reads it back: whatever a parser or decoder
/// produced must be encodable and decodable.
fn roundtrip(r: &Record) {
    let mut buf = Vec::new();
    msgpack::write_record(&mut buf, r);
    match msgpack::read_records(&buf) {
        Ok(back) => assert_eq!(back.len(), 1, "one record written, {} read", back.len()),
        Err(e) => panic!("a record logferry wrote does not read back: {e}"),
    }
}

/// Docker json-file and CRI line decoding, one line (each framing).
pub fn docker_cri(data: &[u8]) {
    for framing in [
        Framing::Docker,
        Framing::Cri,
        Framing::DockerOrCri,
        Framing::Raw,
    ] {
        let d = framing.decode("log", data);
        assert!(d.stream <= 2);
        roundtrip(&d.record);
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = format::parse_rfc3339(s);
    }
}

/// The Docker/CRI partial-line joiner over a file's lines, with the first byte choosing the
/// limit (`multiline_buffer_limit`). What is held per stream must stay within the limit.
pub fn joiner(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let limit = (first != 0).then_some(usize::from(first) * 8);
    let mut j = Joiner::with_limit(limit);
    let mut out = Vec::new();
    let mut offset = 0u64;
    for line in rest.split(|&b| b == b'\n') {
        let start = offset;
        offset += line.len() as u64 + 1;
        let d = Framing::DockerOrCri.decode("log", line);
        let _ = j.push(d, start, offset, &mut out);
        if let Some(l) = limit {
            assert!(
                j.pending_bytes() <= 3 * l.max(1),
                "joiner holds {} bytes with limit {l}",
                j.pending_bytes()
            );
        }
        if let Some(s) = j.earliest_start() {
            assert!(s < offset);
        }
    }
    j.flush(None, &mut out);
    assert!(j.is_empty());
    assert!(out.len() <= rest.split(|&b| b == b'\n').count());
    for (r, _) in &out {
        roundtrip(r);
    }
}

/// The kubernetes filter's `Merge_Log` on a record whose `log` is the input, with the first
/// byte choosing the options. The application's `kubernetes` key must never survive.
pub fn merge_log(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let log = String::from_utf8_lossy(rest);
    let o = MergeOptions {
        key: (first & 1 != 0).then(|| Str::from("data")),
        trim: first & 2 != 0,
        keep_log: first & 4 != 0,
    };
    let mut body = Map::new();
    body.push("stream", "stdout");
    body.push("log", Value::Str(Str::from(log.as_ref())));
    let mut rec = Record::new(NOW, body);
    let p = (first & 8 != 0).then(|| parsers().get("logfmt")).flatten();
    let before = rec.clone();
    merge::merge_log(
        &mut rec,
        p.as_deref(),
        None,
        &o,
        "kubernetes",
        &mut Vec::new(),
        1,
    );
    // Pairs moved in without a key comparison where no key repeats: the same record as
    // replacing them one at a time.
    if p.is_none() && o.key.is_none() {
        if let Some(mut m) = merge::json_object(&log) {
            m.0.retain(|(k, _)| k != "kubernetes");
            let mut expect = before.body;
            if !o.keep_log {
                expect.0.retain(|(k, _)| k != "log");
            }
            if o.trim {
                for (_, v) in m.0.iter_mut() {
                    if let Value::Str(s) = v {
                        *s = Str::from(merge::trim_value(s));
                    }
                }
            }
            expect.append_replacing(m.0);
            assert_eq!(rec.body, expect);
        }
    }
    assert!(
        !rec.body.contains_key("kubernetes"),
        "a log's own kubernetes key was merged"
    );
    if o.key.is_some() {
        assert_eq!(
            rec.body.get("stream").and_then(Value::as_str),
            Some("stdout")
        );
    }
    let _ = merge::json_object(&log);
    // The fast object reader makes serde_json's map, or steps aside.
    if let Some((fast, _)) = logferry_core::json_fast::object(&log) {
        match serde_json::Deserializer::from_str(&log)
            .into_iter::<Value>()
            .next()
        {
            Some(Ok(Value::Map(slow))) => assert_eq!(fast, slow, "json_fast differs: {log:?}"),
            other => panic!("json_fast read {log:?}, serde_json: {other:?}"),
        }
    }
    let _ = merge::trim_value(&log);
    roundtrip(&rec);
}

/// Parsers built once: the built-ins (regex ones: nginx, apache, syslog, envoy, ...) and
/// logfmt/ltsv/tskv ones with times, types and decoders.
fn parsers() -> &'static Parsers {
    static P: OnceLock<Parsers> = OnceLock::new();
    P.get_or_init(|| {
        const EXTRA: &str = "\
[PARSER]
    Name        fz_logfmt
    Format      logfmt
    Time_Key    ts
    Time_Format %Y-%m-%dT%H:%M:%S.%L%z
    Types       n:integer f:float b:bool h:hex
[PARSER]
    Name        fz_logfmt_strict
    Format      logfmt
    Logfmt_No_Bare_Keys On
    Time_Key    time
    Time_Format %s
    Time_Strict Off
[PARSER]
    Name        fz_ltsv
    Format      ltsv
    Time_Key    time
    Time_Format [%d/%b/%Y:%H:%M:%S %z]
    Types       status:integer size:integer
    Decode_Field_As escaped_utf8 msg do_next
    Decode_Field json msg
[PARSER]
    Name        fz_tskv
    Format      tskv
    Time_Key    t
    Time_Format %Y-%m-%d %H:%M:%S
    Time_Offset +0200
";
        let mut vars = Vars::empty();
        let sections = config::classic::parse(EXTRA, Path::new("<fuzz parsers>"), &mut vars)
            .expect("the fuzz parsers' definitions read");
        let mut ps = Parsers::builtin();
        for s in &sections {
            let p = Parser::from_section(s).expect("the fuzz parsers' definitions compile");
            ps.insert(Arc::new(p));
        }
        ps
    })
}

fn run_parser(p: &Parser, text: &str) {
    if let Some(parsed) = p.parse(text) {
        roundtrip(&Record::new(parsed.time.unwrap_or(NOW), parsed.body));
    }
}

/// Regex parsers: every built-in regex parser on the whole input; then the first line as a
/// `Regex` of a parser of its own (Onigmo syntax translated, either engine) on the rest.
pub fn parser_regex(data: &[u8]) {
    let ps = parsers();
    let whole = String::from_utf8_lossy(data);
    for name in ps.names().collect::<Vec<_>>() {
        if let Some(p) = ps.get(name).filter(|p| p.format() == "regex") {
            run_parser(&p, &whole);
        }
    }
    let (pattern, text) = split_first_line(data);
    if pattern.len() > 512 {
        return;
    }
    let span = config::Span::new(&Arc::from(Path::new("<fuzz>")), 1);
    let mut s = config::Section::new(config::SectionKind::Parser, span.clone());
    s.push("Name", "fz_regex", span.clone());
    s.push("Format", "regex", span.clone());
    s.push("Regex", pattern, span.clone());
    s.push("Time_Key", "time", span.clone());
    s.push("Time_Format", "%d/%b/%Y:%H:%M:%S %z", span);
    if let Ok(p) = Parser::from_section(&s) {
        run_parser(&p, &text);
    }
}

/// logfmt parsers (bare keys allowed or not) and the JSON one, on the input.
pub fn parser_logfmt(data: &[u8]) {
    let ps = parsers();
    let text = String::from_utf8_lossy(data);
    for name in ["logfmt", "fz_logfmt", "fz_logfmt_strict", "json"] {
        if let Some(p) = ps.get(name) {
            run_parser(&p, &text);
        }
    }
}

/// ltsv and tskv parsers on the input.
pub fn parser_ltsv(data: &[u8]) {
    let ps = parsers();
    let text = String::from_utf8_lossy(data);
    for name in ["fz_ltsv", "fz_tskv"] {
        if let Some(p) = ps.get(name) {
            run_parser(&p, &text);
        }
    }
}

/// `Time_Format`: the first line is the format, the rest the time text, read strict and not,
/// with and without an offset.
pub fn strptime(data: &[u8]) {
    let (fmt, text) = split_first_line(data);
    let Ok(tf) = TimeFormat::new(&fmt) else {
        return;
    };
    let _ = tf.clone().parse_at(&text, NOW);
    let _ = tf.clone().with_strict(false).parse_at(&text, NOW);
    let _ = tf
        .with_offset(-(14 * 3600))
        .with_strict(false)
        .parse_at(&text, NOW);
    let _ = logferry_parsers::time::parse_time_offset(&text);
}

/// Record accessor: the first line is the pattern, the rest a JSON record to read, set and
/// remove in. A value that was set reads back.
pub fn record_accessor(data: &[u8]) {
    let (pattern, json) = split_first_line(data);
    let _ = RecordAccessor::parse_key(&pattern);
    let Ok(ra) = RecordAccessor::parse(&pattern) else {
        return;
    };
    let _ = ra.ignored_suffix();
    let mut map: Map = serde_json::from_str(&json).unwrap_or_default();
    let _ = ra.get(&map);
    let _ = ra.get_str(&map);
    let _ = ra.get_mut(&mut map);
    if ra.set(&mut map, Value::Str(Str::from("fuzz-value"))) {
        assert_eq!(
            ra.get_str(&map),
            Some("fuzz-value"),
            "a value set through {pattern:?} does not read back"
        );
    }
    let _ = ra.remove(&mut map);
    let _ = ra.exists(&map);
    roundtrip(&Record::new(NOW, map));
}

/// Where config readers resolve relative includes: a directory that does not exist, so a
/// fuzzed `@INCLUDE`/`includes` reads nothing of this machine's but absolute paths.
const CONFIG_DIR: &str = "/nonexistent-logferry-fuzz";

/// The classic config reader (with `@SET`, `@INCLUDE`, `${VAR}`), then the parsers' section
/// reader on what it read.
pub fn config_classic(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if skip_config(&text) {
        return;
    }
    let mut vars = Vars::empty();
    let path = Path::new(CONFIG_DIR).join("fluent-bit.conf");
    if let Ok(sections) = config::classic::parse(&text, &path, &mut vars) {
        use_sections(sections, path);
    }
}

/// The YAML config reader, then the parsers' section reader on what it read.
pub fn config_yaml(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if skip_config(&text) {
        return;
    }
    let mut vars = Vars::empty();
    let path = Path::new(CONFIG_DIR).join("fluent-bit.yaml");
    if let Ok(sections) = config::yaml::parse(&text, &path, &mut vars) {
        use_sections(sections, path);
    }
}

/// Includes of absolute paths with wildcards would walk this machine's file system (slow,
/// and not the reader's code); those inputs are skipped.
fn skip_config(text: &str) -> bool {
    text.contains('*') && text.contains('/')
}

fn use_sections(sections: Vec<config::Section>, path: std::path::PathBuf) {
    let cfg = config::Config {
        sections,
        path: Some(path),
    };
    let _ = cfg.base_dir();
    let _ = Parsers::from_config(&cfg);
}
