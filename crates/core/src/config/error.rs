//! Configuration errors. Every error that comes from a file names the file and line, and the key
//! when one is involved, so that a user can go straight to the mistake.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where something was written: a file and a 1-based line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Span {
    pub file: Arc<Path>,
    pub line: u32,
}

impl Span {
    /// A span in `file` at `line`.
    pub fn new(file: &Arc<Path>, line: u32) -> Self {
        Span {
            file: Arc::clone(file),
            line,
        }
    }

    /// A span for values that come from the command line rather than a file.
    pub fn command_line() -> Self {
        Span {
            file: Arc::from(Path::new("command line")),
            line: 0,
        }
    }

    /// A span for one command-line argument (`-p`, `Flush=soon`), so an error quotes it.
    pub fn argument(flag: &str, value: &str) -> Self {
        Span {
            file: Arc::from(Path::new(&format!("command line ({flag} {value})"))),
            line: 0,
        }
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Line 0: not from a file (the command line, built-in defaults).
        match self.line {
            0 => write!(f, "{}", self.file.display()),
            n => write!(f, "{}:{n}", self.file.display()),
        }
    }
}

/// A configuration mistake.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Something is wrong with one key's line.
    #[error("{span}: {key}: {reason}")]
    Key {
        span: Span,
        key: String,
        reason: String,
    },
    /// Something is wrong at a line, not tied to one key (syntax, a section).
    #[error("{span}: {reason}")]
    At { span: Span, reason: String },
    /// Several mistakes of one section, each reported (a dry run shows them all at once).
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Many(Vec<ConfigError>),
}

impl ConfigError {
    /// An error about `key` written at `span`.
    pub fn key(span: &Span, key: &str, reason: impl Into<String>) -> Self {
        ConfigError::Key {
            span: span.clone(),
            key: key.to_string(),
            reason: reason.into(),
        }
    }

    /// An error at `span`.
    pub fn at(span: &Span, reason: impl Into<String>) -> Self {
        ConfigError::At {
            span: span.clone(),
            reason: reason.into(),
        }
    }

    /// One error for all of `errors`: the error itself when there is one.
    pub fn many(mut errors: Vec<ConfigError>) -> Self {
        if errors.len() == 1 {
            if let Some(e) = errors.pop() {
                return e;
            }
        }
        ConfigError::Many(errors.into_iter().flat_map(ConfigError::into_vec).collect())
    }

    /// The single errors this one stands for.
    pub fn into_vec(self) -> Vec<ConfigError> {
        match self {
            ConfigError::Many(v) => v.into_iter().flat_map(ConfigError::into_vec).collect(),
            e => vec![e],
        }
    }

    /// An unknown key, with a suggestion when one of `candidates` is a near miss.
    pub fn unknown_key<'a>(
        span: &Span,
        key: &str,
        what: &str,
        candidates: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        let mut reason = format!("unknown key for {what}");
        if let Some(s) = suggest(key, candidates) {
            reason.push_str(&format!(" (did you mean '{s}'?)"));
        }
        ConfigError::key(span, key, reason)
    }
}

/// The candidate closest to `word` (case-insensitive), if it is close enough to be a typo.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let w = word.to_ascii_lowercase();
    let mut best: Option<(f64, &str)> = None;
    for c in candidates {
        let lc = c.to_ascii_lowercase();
        let score = strsim::jaro_winkler(&w, &lc);
        // Short names defeat Jaro-Winkler (`sqe` vs `seq`): also take one or two edits,
        // transpositions included.
        let edits = strsim::damerau_levenshtein(&w, &lc);
        let close = score >= 0.85 || edits <= 1 || (edits == 2 && w.len() >= 6);
        let score = score.max(1.0 - edits as f64 / w.len().max(lc.len()).max(1) as f64);
        if close && best.is_none_or(|(b, _)| score > b) {
            best = Some((score, c));
        }
    }
    best.map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_near_misses_only() {
        let keys = ["Path", "Parser", "Refresh_Interval", "Read_from_Head"];
        assert_eq!(suggest("Pathh", keys), Some("Path"));
        assert_eq!(suggest("refresh_intervall", keys), Some("Refresh_Interval"));
        assert_eq!(suggest("completely_else", keys), None);
        assert_eq!(suggest("sqe", ["seq", "tail"]), Some("seq"));
        assert_eq!(suggest("x", ["seq", "tail"]), None);
    }

    #[test]
    fn many_flattens_and_prints_one_error_a_line() {
        let span = Span::new(&Arc::from(Path::new("f.conf")), 3);
        let one = ConfigError::many(vec![ConfigError::key(&span, "A", "bad")]);
        assert!(matches!(one, ConfigError::Key { .. }));
        let nested = ConfigError::many(vec![
            ConfigError::key(&span, "A", "bad"),
            ConfigError::many(vec![
                ConfigError::at(&span, "worse"),
                ConfigError::key(&span, "B", "worst"),
            ]),
        ]);
        assert_eq!(
            nested.to_string(),
            "f.conf:3: A: bad\nf.conf:3: worse\nf.conf:3: B: worst"
        );
        assert_eq!(nested.into_vec().len(), 3);
    }

    #[test]
    fn display_names_file_line_and_key() {
        let span = Span::new(&Arc::from(Path::new("/etc/fb.conf")), 7);
        let e = ConfigError::key(&span, "Flush", "not a number: 'x'");
        assert_eq!(e.to_string(), "/etc/fb.conf:7: Flush: not a number: 'x'");
    }
}
