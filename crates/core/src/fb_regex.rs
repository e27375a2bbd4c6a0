//! Fluent Bit's regular expressions (`flb_regex_create`): Onigmo with Ruby syntax, where `^`
//! and `$` match at line boundaries, and a pattern wrapped in `/.../` has the slashes removed.
//! Shared by the filters, routes' and processors' conditions, and `content_modifier`.

use std::sync::atomic::AtomicU64;

use regex::{Regex, RegexBuilder};

/// Searches that ended in an error instead of an answer: a backtracking engine's limit
/// (parsers' and multiline rules' patterns that need look-around or backreferences run on
/// one). Such a text is passed on as not parsed, never silently: each is counted here
/// (`logferry_regex_limit_errors_total`) and logged. Patterns compiled by this module run on
/// the `regex` crate, whose searches take linear time and cannot fail.
pub static LIMIT_ERRORS: AtomicU64 = AtomicU64::new(0);

/// Compiles `pattern` as Fluent Bit does; the error is one line, for a config error.
pub fn compile(pattern: &str) -> Result<Regex, String> {
    let inner = if pattern.len() >= 2 && pattern.starts_with('/') && pattern.ends_with('/') {
        &pattern[1..pattern.len() - 1]
    } else {
        pattern
    };
    RegexBuilder::new(inner)
        .multi_line(true)
        .build()
        .map_err(|e| {
            format!(
                "invalid regular expression '{pattern}': {}",
                one_line(&e.to_string())
            )
        })
}

/// The regex crate's multi-line error messages, on one line.
fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}
