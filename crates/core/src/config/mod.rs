//! The configuration model and its readers.
//!
//! Reading is two-stage (see ARCHITECTURE.md): the readers ([`classic`], [`yaml`]) turn a file
//! into [`Section`]s of raw `key value` [`Entry`]s that remember their file and line, expanding
//! `${VAR}` and following includes, but judging nothing else. The engine then builds each
//! plugin's typed options from those entries ([`options!`](crate::options)), which is where
//! unknown keys and bad values are reported.

pub mod classic;
pub mod env;
mod error;
mod options;
pub mod units;
pub mod yaml;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use env::Vars;
pub use error::{suggest, ConfigError, Span};
pub use options::{ByteSize, LogLevel, OptSpec, OptValue, PositiveSeconds, SizeLimit};

/// The kind of a section: `[INPUT]` in classic files, `pipeline.inputs` in YAML, and so on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SectionKind {
    Service,
    Input,
    Filter,
    Output,
    Parser,
    MultilineParser,
    Plugins,
    Custom,
    Upstream,
    Node,
    /// YAML `extensions`: settings for tools around the agent, which Fluent Bit 5.1 keeps and
    /// does not act on. Only the YAML reader makes it (classic files have no such section).
    Extensions,
}

impl SectionKind {
    /// Every kind, with its classic header name.
    pub const ALL: &'static [(SectionKind, &'static str)] = &[
        (SectionKind::Service, "SERVICE"),
        (SectionKind::Input, "INPUT"),
        (SectionKind::Filter, "FILTER"),
        (SectionKind::Output, "OUTPUT"),
        (SectionKind::Parser, "PARSER"),
        (SectionKind::MultilineParser, "MULTILINE_PARSER"),
        (SectionKind::Plugins, "PLUGINS"),
        (SectionKind::Custom, "CUSTOM"),
        (SectionKind::Upstream, "UPSTREAM"),
        (SectionKind::Node, "NODE"),
        (SectionKind::Extensions, "EXTENSIONS"),
    ];

    /// The kind for a classic header name (case-insensitive). `EXTENSIONS` is YAML only.
    pub fn from_header(name: &str) -> Option<Self> {
        Self::ALL
            .iter()
            .find(|(k, n)| n.eq_ignore_ascii_case(name) && *k != SectionKind::Extensions)
            .map(|(k, _)| *k)
    }

    /// The classic header name.
    pub fn header(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(k, _)| *k == self)
            .map(|(_, n)| *n)
            .unwrap_or("?")
    }
}

/// One `key value` line, with where it was written. Keys keep the spelling the user wrote;
/// every lookup is case-insensitive.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub key: String,
    pub value: String,
    pub span: Span,
}

/// A nested YAML value kept whole, with the line of every node: an input's or output's
/// `processors` and `routes`, and `telemetry`, which are structures rather than `key value`
/// lines. Scalars have `${VAR}` expanded.
#[derive(Clone, Debug, PartialEq)]
pub enum Tree {
    Scalar {
        text: String,
        /// Written without quotes (so `true` or `12` may be typed).
        plain: bool,
        span: Span,
    },
    Seq {
        items: Vec<Tree>,
        span: Span,
    },
    Map {
        pairs: Vec<(String, Span, Tree)>,
        span: Span,
    },
}

impl Tree {
    /// Where the node starts.
    pub fn span(&self) -> &Span {
        match self {
            Tree::Scalar { span, .. } | Tree::Seq { span, .. } | Tree::Map { span, .. } => span,
        }
    }

    /// The text of a scalar.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Tree::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// The value of `key` in a map (case-insensitive, last one wins), with the key's span.
    pub fn get(&self, key: &str) -> Option<(&Span, &Tree)> {
        match self {
            Tree::Map { pairs, .. } => pairs
                .iter()
                .rev()
                .find(|(k, _, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, s, v)| (s, v)),
            _ => None,
        }
    }

    /// "a map", "a list" or "a scalar", for messages.
    pub fn what(&self) -> &'static str {
        match self {
            Tree::Scalar { .. } => "a scalar",
            Tree::Seq { .. } => "a list",
            Tree::Map { .. } => "a map",
        }
    }
}

/// A key of a section whose value is a [`Tree`] (YAML only).
#[derive(Clone, Debug, PartialEq)]
pub struct Nested {
    pub key: String,
    pub span: Span,
    pub value: Tree,
}

/// A section and its entries in the order written.
#[derive(Clone, Debug, PartialEq)]
pub struct Section {
    pub kind: SectionKind,
    /// Where the section starts (its header line, or the YAML list item).
    pub span: Span,
    pub entries: Vec<Entry>,
    /// Keys whose values are structures (see [`Tree`]); empty for classic files.
    pub nested: Vec<Nested>,
}

impl Section {
    /// A new empty section.
    pub fn new(kind: SectionKind, span: Span) -> Self {
        Section {
            kind,
            span,
            entries: Vec::new(),
            nested: Vec::new(),
        }
    }

    /// The last entry for `key` (last one wins, as in Fluent Bit).
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.key.eq_ignore_ascii_case(key))
    }

    /// The value of the last entry for `key`.
    pub fn value(&self, key: &str) -> Option<&str> {
        self.get(key).map(|e| e.value.as_str())
    }

    /// The plugin name (`Name` key) if any.
    pub fn name(&self) -> Option<&str> {
        self.value("name")
    }

    /// The nested value of `key` (last one wins).
    pub fn nested(&self, key: &str) -> Option<&Nested> {
        self.nested
            .iter()
            .rev()
            .find(|n| n.key.eq_ignore_ascii_case(key))
    }

    /// Appends an entry.
    pub fn push(&mut self, key: impl Into<String>, value: impl Into<String>, span: Span) {
        self.entries.push(Entry {
            key: key.into(),
            value: value.into(),
            span,
        });
    }
}

/// A whole configuration: every section of the main file and its includes, in order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Config {
    pub sections: Vec<Section>,
    /// The main file, when read from one; relative paths in it resolve against its directory.
    pub path: Option<PathBuf>,
}

/// The two file formats Fluent Bit reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Classic,
    Yaml,
}

impl Format {
    /// Picks the format from the extension (`.yaml`/`.yml`), else from the content: a classic
    /// file's first significant line is a `[SECTION]` or an `@` command.
    pub fn detect(path: &Path, text: &str) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml") => {
                Format::Yaml
            }
            Some(e) if e.eq_ignore_ascii_case("conf") => Format::Classic,
            _ => {
                let first = text
                    .lines()
                    .map(str::trim)
                    .find(|l| !l.is_empty() && !l.starts_with('#'));
                match first {
                    Some(l) if l.starts_with('[') || l.starts_with('@') => Format::Classic,
                    Some(_) => Format::Yaml,
                    None => Format::Classic,
                }
            }
        }
    }
}

impl Config {
    /// Reads a config file in either format, following includes and expanding variables from
    /// the environment (and `@SET` / YAML `env`).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let mut vars = Vars::from_env();
        Self::load_with(path, &mut vars)
    }

    /// As [`Config::load`], with the variables given.
    pub fn load_with(path: &Path, vars: &mut Vars) -> Result<Config, ConfigError> {
        let text = read_file(path)?;
        let sections = match Format::detect(path, &text) {
            Format::Classic => classic::parse(&text, path, vars)?,
            Format::Yaml => yaml::parse(&text, path, vars)?,
        };
        Ok(Config {
            sections,
            path: Some(path.to_path_buf()),
        })
    }

    /// Sections of one kind, in order.
    pub fn sections(&self, kind: SectionKind) -> impl Iterator<Item = &Section> {
        self.sections.iter().filter(move |s| s.kind == kind)
    }

    /// The directory relative paths resolve against.
    pub fn base_dir(&self) -> PathBuf {
        self.path
            .as_deref()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))
    }

    /// Reads every `Parsers_File` named in `[SERVICE]` (relative to the main file) and appends
    /// their `[PARSER]` / `[MULTILINE_PARSER]` sections. An empty value (an unset variable) is
    /// skipped.
    pub fn load_parsers_files(&mut self, vars: &mut Vars) -> Result<(), ConfigError> {
        let files: Vec<(PathBuf, Span)> = self
            .sections(SectionKind::Service)
            .flat_map(|s| s.entries.iter())
            .filter(|e| e.key.eq_ignore_ascii_case("parsers_file") && !e.value.trim().is_empty())
            .map(|e| (self.base_dir().join(e.value.trim()), e.span.clone()))
            .collect();
        for (file, span) in files {
            self.add_parsers_file(&file, vars).map_err(|e| match e {
                ConfigError::Io { source, .. } => ConfigError::key(
                    &span,
                    "Parsers_File",
                    format!("cannot read {}: {source}", file.display()),
                ),
                other => other,
            })?;
        }
        Ok(())
    }

    /// Reads one parsers file (either format) and appends its parser sections.
    pub fn add_parsers_file(&mut self, file: &Path, vars: &mut Vars) -> Result<(), ConfigError> {
        let parsers = Config::load_with(file, vars)?;
        for s in parsers.sections {
            match s.kind {
                SectionKind::Parser | SectionKind::MultilineParser => self.sections.push(s),
                other => {
                    return Err(ConfigError::at(
                        &s.span,
                        format!(
                        "a parsers file may only hold [PARSER] and [MULTILINE_PARSER], not [{}]",
                        other.header()
                    ),
                    ))
                }
            }
        }
        Ok(())
    }
}

/// Reads a file, mapping the error to one that names it.
pub(crate) fn read_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The shared file name used in spans.
pub(crate) fn file_arc(path: &Path) -> Arc<Path> {
    Arc::from(path)
}
