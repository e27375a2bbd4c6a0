//! The classic Fluent Bit format (`fluent-bit.conf`): `[SECTION]` headers, indented `key value`
//! entries, `#` comments, and the `@INCLUDE` / `@SET` commands.
//!
//! The reader follows Fluent Bit's `flb_cf_fluentbit.c`, with these deliberate choices:
//! - an entry is split at the first run of blanks (space or tab); the value is trimmed and kept
//!   whole, so a `#` in the middle of a value is part of it, as in Fluent Bit;
//! - indentation is checked per section: the first entry of a section sets it and every other
//!   entry of that section must use exactly the same blanks (Fluent Bit sets it once per file);
//! - `@INCLUDE` paths are relative to the including file's directory; a glob that matches
//!   nothing includes nothing, while a plain path that cannot be read is an error;
//! - an include cycle, or includes nested more than [`MAX_INCLUDE_DEPTH`] deep, is an error;
//! - `@SET KEY=VALUE` expands `${VAR}` in its value when it is read;
//! - an unknown section header or `@` command is an error (with a suggestion for typos).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{ConfigError, Section, SectionKind, Span, Vars};

/// How deep includes may nest (the main file is level 0).
pub const MAX_INCLUDE_DEPTH: usize = 16;

/// Reads a classic config file's text. `path` names the file in spans and is the base for
/// relative `@INCLUDE` paths; `vars` receives `@SET` definitions and expands `${VAR}` in values.
pub fn parse(text: &str, path: &Path, vars: &mut Vars) -> Result<Vec<Section>, ConfigError> {
    let mut stack = IncludeStack::new(path);
    parse_nested(text, path, vars, &mut stack)
}

/// The files being read, outermost first, to catch include cycles and runaway nesting. Shared
/// with the YAML reader so that cycles across both formats are caught too.
#[derive(Debug)]
pub(super) struct IncludeStack {
    chain: Vec<PathBuf>,
}

impl IncludeStack {
    /// A stack holding the main file.
    pub(super) fn new(root: &Path) -> Self {
        IncludeStack {
            chain: vec![identity(root)],
        }
    }

    /// Reads `file` (included at `span` by `key`) and parses it with `parse` while it is on the
    /// stack. A file that cannot be read is reported at the including line.
    pub(super) fn include<F>(
        &mut self,
        file: &Path,
        span: &Span,
        key: &str,
        vars: &mut Vars,
        parse: F,
    ) -> Result<Vec<Section>, ConfigError>
    where
        F: FnOnce(&str, &Path, &mut Vars, &mut IncludeStack) -> Result<Vec<Section>, ConfigError>,
    {
        let text = super::read_file(file).map_err(|e| match e {
            ConfigError::Io { path, source } => ConfigError::key(
                span,
                key,
                format!("cannot read {}: {source}", path.display()),
            ),
            other => other,
        })?;
        let id = identity(file);
        if let Some(pos) = self.chain.iter().position(|p| *p == id) {
            let cycle: Vec<String> = self.chain[pos..]
                .iter()
                .chain(std::iter::once(&id))
                .map(|p| p.display().to_string())
                .collect();
            return Err(ConfigError::key(
                span,
                key,
                format!("include cycle: {}", cycle.join(" -> ")),
            ));
        }
        if self.chain.len() > MAX_INCLUDE_DEPTH {
            return Err(ConfigError::key(
                span,
                key,
                format!(
                    "includes nested more than {MAX_INCLUDE_DEPTH} levels deep (at {})",
                    file.display()
                ),
            ));
        }
        self.chain.push(id);
        let result = parse(&text, file, vars, self);
        self.chain.pop();
        result
    }
}

/// The name a file is known by for cycle detection: its canonical path when it exists.
fn identity(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Resolves an include path against the directory of the including file.
pub(super) fn resolve(including: &Path, target: &str) -> PathBuf {
    let target = Path::new(target);
    if target.is_absolute() {
        return target.to_path_buf();
    }
    match including.parent() {
        Some(dir) => dir.join(target),
        None => target.to_path_buf(),
    }
}

/// The classic header names, for suggestions.
fn header_names() -> impl Iterator<Item = &'static str> {
    SectionKind::ALL.iter().map(|(_, n)| *n)
}

/// The `@` commands a classic file may use.
const COMMANDS: &[&str] = &["INCLUDE", "SET"];

/// Parses one file's text with an include stack already holding it.
pub(super) fn parse_nested(
    text: &str,
    path: &Path,
    vars: &mut Vars,
    stack: &mut IncludeStack,
) -> Result<Vec<Section>, ConfigError> {
    let file: Arc<Path> = super::file_arc(path);
    let mut sections: Vec<Section> = Vec::new();
    // The section that entries go to (an index into `sections`) and, once its first entry is
    // read, that section's indentation. As in Fluent Bit, entries after an `@INCLUDE` line still
    // belong to the section written before it.
    let mut current: Option<usize> = None;
    let mut indent: Option<String> = None;
    // Editors on Windows may start a file with a byte-order mark.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);

    for (idx, raw) in text.split('\n').enumerate() {
        let line_no = u32::try_from(idx + 1).unwrap_or(u32::MAX);
        let span = Span::new(&file, line_no);
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let body = line.trim_start_matches([' ', '\t']);
        if body.trim().is_empty() || body.starts_with('#') {
            continue;
        }
        let lead = &line[..line.len() - body.len()];

        if lead.is_empty() {
            if let Some(cmd) = body.strip_prefix('@') {
                let included = command(cmd, &span, path, vars, stack)?;
                sections.extend(included);
                continue;
            }
            if let Some(rest) = body.strip_prefix('[') {
                let Some(end) = rest.find(']') else {
                    return Err(ConfigError::at(
                        &span,
                        format!("bad header definition '{}': missing ']'", body.trim_end()),
                    ));
                };
                let name = rest[..end].trim();
                let Some(kind) = SectionKind::from_header(name) else {
                    let mut reason = format!("unknown section [{name}]");
                    if let Some(s) = super::suggest(name, header_names()) {
                        reason.push_str(&format!(" (did you mean [{s}]?)"));
                    }
                    return Err(ConfigError::at(&span, reason));
                };
                sections.push(Section::new(kind, span));
                current = Some(sections.len() - 1);
                indent = None;
                continue;
            }
        } else if body.starts_with('@') {
            return Err(ConfigError::at(
                &span,
                format!(
                    "'{}' must start at the beginning of the line",
                    body.split([' ', '\t']).next().unwrap_or(body)
                ),
            ));
        } else if body.starts_with('[') && body.trim_end().ends_with(']') {
            return Err(ConfigError::at(
                &span,
                format!("section header {} must not be indented", body.trim_end()),
            ));
        }

        // An entry.
        let Some(section_idx) = current else {
            return Err(ConfigError::at(
                &span,
                "entry before any section: start the file with a header such as [SERVICE] or [INPUT]",
            ));
        };
        match &indent {
            _ if lead.is_empty() => {
                return Err(ConfigError::at(
                    &span,
                    "invalid indentation level: entries must be indented",
                ));
            }
            Some(expected) if expected != lead => {
                return Err(ConfigError::at(
                    &span,
                    format!(
                        "invalid indentation level: expected {}, found {} (every entry of a section must be indented the same way)",
                        describe_blanks(expected),
                        describe_blanks(lead)
                    ),
                ));
            }
            Some(_) => {}
            None => indent = Some(lead.to_string()),
        }
        let body = body.trim_end();
        let (key, value) = match body.find([' ', '\t']) {
            Some(i) => (&body[..i], body[i..].trim()),
            None => (body, ""),
        };
        if value.is_empty() {
            return Err(ConfigError::key(&span, key, "each key must have a value"));
        }
        let value = vars.expand(value);
        if let Some(section) = sections.get_mut(section_idx) {
            section.push(key, value, span);
        }
    }
    Ok(sections)
}

/// Handles one `@` command (the text after `@`), returning the sections it includes.
fn command(
    cmd: &str,
    span: &Span,
    path: &Path,
    vars: &mut Vars,
    stack: &mut IncludeStack,
) -> Result<Vec<Section>, ConfigError> {
    let cmd = cmd.trim_end();
    let (name, arg) = match cmd.find([' ', '\t']) {
        Some(i) => (&cmd[..i], cmd[i..].trim()),
        None => (cmd, ""),
    };
    let key = format!("@{name}");
    if name.eq_ignore_ascii_case("INCLUDE") {
        if arg.is_empty() {
            return Err(ConfigError::key(span, &key, "missing the file to include"));
        }
        include(arg, span, &key, path, vars, stack)
    } else if name.eq_ignore_ascii_case("SET") {
        let Some((k, v)) = arg.split_once('=') else {
            return Err(ConfigError::key(span, &key, "expected KEY=VALUE"));
        };
        let k = k.trim();
        if k.is_empty() {
            return Err(ConfigError::key(
                span,
                &key,
                "expected KEY=VALUE, the KEY is empty",
            ));
        }
        let v = vars.expand(v.trim());
        vars.set(k, &v);
        Ok(Vec::new())
    } else {
        let mut reason = "unknown command (expected @INCLUDE or @SET)".to_string();
        if let Some(s) = super::suggest(name, COMMANDS.iter().copied()) {
            reason.push_str(&format!(" (did you mean '@{s}'?)"));
        }
        Err(ConfigError::key(span, &key, reason))
    }
}

/// `@INCLUDE target`: one file, or every file a glob pattern matches, in sorted order.
fn include(
    target: &str,
    span: &Span,
    key: &str,
    path: &Path,
    vars: &mut Vars,
    stack: &mut IncludeStack,
) -> Result<Vec<Section>, ConfigError> {
    if !target.contains(['*', '?', '[']) {
        let file = resolve(path, target);
        return stack.include(&file, span, key, vars, parse_nested);
    }
    // A glob: escape the base directory so that only the written pattern is special.
    let pattern = if Path::new(target).is_absolute() {
        target.to_string()
    } else {
        match path.parent().map(|d| d.to_string_lossy()) {
            Some(dir) if !dir.is_empty() => {
                format!("{}/{target}", glob::Pattern::escape(&dir))
            }
            _ => target.to_string(),
        }
    };
    let paths = glob::glob(&pattern)
        .map_err(|e| ConfigError::key(span, key, format!("bad glob pattern '{target}': {e}")))?;
    let mut files = Vec::new();
    for entry in paths {
        let file = entry.map_err(|e| {
            ConfigError::key(
                span,
                key,
                format!("cannot read {}: {}", e.path().display(), e.error()),
            )
        })?;
        if file.is_file() {
            files.push(file);
        }
    }
    files.sort();
    let mut out = Vec::new();
    for file in files {
        out.extend(stack.include(&file, span, key, vars, parse_nested)?);
    }
    Ok(out)
}

/// Names a run of blanks for an indentation error.
fn describe_blanks(s: &str) -> String {
    let spaces = s.chars().filter(|c| *c == ' ').count();
    let tabs = s.chars().filter(|c| *c == '\t').count();
    match (spaces, tabs) {
        (0, 0) => "no indentation".to_string(),
        (n, 0) => format!("{n} space{}", if n == 1 { "" } else { "s" }),
        (0, n) => format!("{n} tab{}", if n == 1 { "" } else { "s" }),
        _ => format!("a mix of {spaces} spaces and {tabs} tabs"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<Vec<Section>, ConfigError> {
        parse(text, Path::new("/cfg/fb.conf"), &mut Vars::empty())
    }

    fn err(text: &str) -> String {
        match read(text) {
            Ok(s) => panic!("expected an error, got {s:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn kv(s: &Section) -> Vec<(&str, &str)> {
        s.entries
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_str()))
            .collect()
    }

    #[test]
    fn reads_sections_entries_and_lines() {
        let text = "# top comment\n[SERVICE]\n    Flush 1\n\n[input]\n    Name  tail\n    # indented comment\n    Path  /var/log/*.log   \n";
        let s = read(text).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].kind, SectionKind::Service);
        assert_eq!(s[0].span.line, 2);
        assert_eq!(kv(&s[0]), [("Flush", "1")]);
        assert_eq!(s[1].kind, SectionKind::Input);
        assert_eq!(kv(&s[1]), [("Name", "tail"), ("Path", "/var/log/*.log")]);
        assert_eq!(s[1].entries[1].span.line, 8);
        assert_eq!(&*s[1].entries[1].span.file, Path::new("/cfg/fb.conf"));
    }

    #[test]
    fn keeps_hash_mid_value_and_tolerates_crlf_and_tabs() {
        let s =
            read("\u{feff}[FILTER]\r\n\tName\tmodify\r\n\tAdd  k v # not a comment\r\n").unwrap();
        assert_eq!(
            kv(&s[0]),
            [("Name", "modify"), ("Add", "k v # not a comment")]
        );
    }

    #[test]
    fn indentation_is_per_section() {
        let s = read("[SERVICE]\n  Flush 1\n[INPUT]\n    Name dummy\n").unwrap();
        assert_eq!(s.len(), 2);
        assert!(err("[INPUT]\n    Name dummy\n  Tag x\n")
            .starts_with("/cfg/fb.conf:3: invalid indentation level"));
        assert!(err("[INPUT]\n    Name dummy\n\tTag x\n")
            .starts_with("/cfg/fb.conf:3: invalid indentation level"));
        assert!(
            err("[INPUT]\nName dummy\n").starts_with("/cfg/fb.conf:2: invalid indentation level")
        );
    }

    #[test]
    fn reports_reader_errors_with_file_and_line() {
        assert_eq!(
            err("[INPUTS]\n    Name x\n"),
            "/cfg/fb.conf:1: unknown section [INPUTS] (did you mean [INPUT]?)"
        );
        assert_eq!(
            err("[OUTPUT]\n    Name stdout\n    Match\n"),
            "/cfg/fb.conf:3: Match: each key must have a value"
        );
        assert!(err("    Name x\n").starts_with("/cfg/fb.conf:1: entry before any section"));
        assert!(err("[INPUT\n").starts_with("/cfg/fb.conf:1: bad header definition"));
        assert!(
            err("[INPUT]\n    Name x\n  [OUTPUT]\n").starts_with("/cfg/fb.conf:3: section header")
        );
        assert!(err("@INCLUD x.conf\n").starts_with("/cfg/fb.conf:1: @INCLUD: unknown command"));
        assert!(err("@SET novalue\n").starts_with("/cfg/fb.conf:1: @SET: expected KEY=VALUE"));
        assert!(err("[INPUT]\n    @INCLUDE x.conf\n")
            .starts_with("/cfg/fb.conf:2: '@INCLUDE' must start"));
        assert!(err("@INCLUDE /nonexistent/logferry/x.conf\n")
            .starts_with("/cfg/fb.conf:1: @INCLUDE: cannot read /nonexistent/logferry/x.conf"));
    }

    #[test]
    fn set_defines_variables_for_later_values() {
        let mut vars = Vars::empty();
        vars.set("BASE", "/data");
        let text = "@SET DIR=${BASE}/logs\n@set  TAG = app \n[INPUT]\n    Path ${DIR}/*.log\n    Tag ${TAG}.${UNSET}x\n";
        let s = parse(text, Path::new("a.conf"), &mut vars).unwrap();
        assert_eq!(kv(&s[0]), [("Path", "/data/logs/*.log"), ("Tag", "app.x")]);
        assert_eq!(vars.get("DIR").as_deref(), Some("/data/logs"));
    }

    #[test]
    fn includes_files_in_place_and_detects_cycles() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("main.conf");
        std::fs::create_dir(dir.path().join("conf.d")).unwrap();
        std::fs::write(dir.path().join("conf.d/b.conf"), "[OUTPUT]\n    Name b\n").unwrap();
        std::fs::write(dir.path().join("conf.d/a.conf"), "[OUTPUT]\n    Name a\n").unwrap();
        std::fs::write(dir.path().join("one.conf"), "[FILTER]\n    Name one\n").unwrap();
        let text = "[SERVICE]\n    Flush 1\n@INCLUDE one.conf\n@INCLUDE conf.d/*.conf\n@INCLUDE empty.d/*.conf\n[INPUT]\n    Name last\n";
        let s = parse(text, &main, &mut Vars::empty()).unwrap();
        let names: Vec<_> = s.iter().map(|s| s.name().unwrap_or("-")).collect();
        assert_eq!(names, ["-", "one", "a", "b", "last"]);
        assert_eq!(&*s[2].span.file, dir.path().join("conf.d/a.conf").as_path());

        std::fs::write(dir.path().join("x.conf"), "@INCLUDE y.conf\n").unwrap();
        std::fs::write(dir.path().join("y.conf"), "\n@INCLUDE x.conf\n").unwrap();
        let x = dir.path().join("x.conf");
        let e = parse("@INCLUDE y.conf\n", &x, &mut Vars::empty())
            .unwrap_err()
            .to_string();
        let y = dir.path().join("y.conf");
        assert!(
            e.starts_with(&format!("{}:2: @INCLUDE: include cycle", y.display())),
            "{e}"
        );
    }

    #[test]
    fn deep_includes_are_limited() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..20 {
            let text = format!("@INCLUDE f{}.conf\n", i + 1);
            std::fs::write(dir.path().join(format!("f{i}.conf")), text).unwrap();
        }
        std::fs::write(dir.path().join("f20.conf"), "[INPUT]\n    Name x\n").unwrap();
        let main = dir.path().join("f0.conf");
        let text = std::fs::read_to_string(&main).unwrap();
        let e = parse(&text, &main, &mut Vars::empty())
            .unwrap_err()
            .to_string();
        assert!(e.contains("nested more than 16 levels"), "{e}");
        let f16 = dir.path().join("f16.conf");
        assert!(
            e.starts_with(&format!("{}:1: @INCLUDE", f16.display())),
            "{e}"
        );
    }
}
