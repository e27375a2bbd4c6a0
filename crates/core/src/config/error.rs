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
            file: Arc::from(Path::new("<command line>")),
            line: 0,
        }
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
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
    fn display_names_file_line_and_key() {
        let span = Span::new(&Arc::from(Path::new("/etc/fb.conf")), 7);
        let e = ConfigError::key(&span, "Flush", "not a number: 'x'");
        assert_eq!(e.to_string(), "/etc/fb.conf:7: Flush: not a number: 'x'");
    }
}
