//! Fluent Bit's regular expressions (Onigmo, Ruby syntax) on Rust engines.
//!
//! A pattern is first translated from Ruby to Rust syntax ([`translate`]), then compiled with
//! the `regex` crate (linear time, the fast path); a pattern it rejects (look-around,
//! backreferences, atomic groups) is compiled with `fancy-regex` instead. Translation keeps
//! Ruby's meaning where the syntaxes differ:
//! - `/.../imx` delimiters and flags are accepted, as Fluent Bit strips them;
//! - `^` and `$` match at line boundaries (Ruby's are always multi-line);
//! - `\d \w \s \h` (and negations) are ASCII classes, `\h` being a hex digit;
//! - `\<` `\>` are literal `<` `>` (Rust reads them as word boundaries), `\Z` is end of text
//!   before an optional final newline, `\e` is ESC, `\0` octal;
//! - a `{` or `}` that is not part of a `{n,m}` repetition is literal; `{,m}` means `{0,m}`;
//! - `(?'name'...)` is `(?<name>...)`, and `(?#...)` comments are dropped.
//! - the braces of `\p{Greek}`, `\x{263A}` belong to the escape, and Onigmo's negated property
//!   `\p{^Greek}` is `\P{Greek}`.
//!
//! Captures (what a `Format regex` parser needs per line) have a fast path: a pattern the
//! `regex` crate compiled is also compiled with PCRE2's JIT when its translated text only uses
//! syntax that means the same in both ([`pcre_safe`]). To resolve capture groups, the `regex`
//! crate scans each line three times (forward and reverse lazy DFA for the match bounds, then
//! its bounded backtracker), about 2 µs on a 200-byte nginx line; the JIT does it in one pass
//! in about a sixth of that. Leftmost-first (Rust) and backtracking (PCRE2, Onigmo) semantics
//! give the same match and groups, and PCRE2's multi-line `^` already follows Onigmo at a final
//! newline. A JIT search that fails (PCRE2's match or stack limit) falls back to the `regex`
//! crate, which stays the engine for everything else (`is_match`, patterns PCRE2 is not
//! trusted with).

use std::borrow::Cow;
use std::panic::{RefUnwindSafe, UnwindSafe};

use regex_automata::util::pool::Pool;

/// The engine that compiled a pattern.
#[derive(Debug)]
pub enum Engine {
    /// The `regex` crate: linear time.
    Std(::regex::Regex),
    /// `fancy-regex`, for patterns that need backtracking features.
    Fancy(fancy_regex::Regex),
}

/// A search the backtracking engine gave up on (its backtrack limit): neither a match nor a
/// non-match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimitHit;

/// A compiled pattern.
#[derive(Debug)]
pub struct Pattern {
    pub engine: Engine,
    /// The pattern has a `^`. Onigmo's `^` does not match at the very end of a text that ends
    /// with a newline (Rust's multi-line `^` does), so a match found only there is discarded.
    line_start: bool,
    /// Capture slots for [`Engine::Std`], reused across calls (one per thread in use).
    std_locs: Option<Box<LocPool<::regex::CaptureLocations>>>,
    /// The PCRE2 JIT twin of an [`Engine::Std`] pattern, for captures (see the module docs).
    jit: Option<Box<Jit>>,
}

/// A pool of capture slots: `get` hands the calling thread its own, without allocating.
type LocPool<T> = Pool<T, Box<dyn Fn() -> T + Send + Sync + UnwindSafe + RefUnwindSafe>>;

/// A pattern compiled by PCRE2's JIT, with its capture slots.
struct Jit {
    re: pcre2::bytes::Regex,
    locs: LocPool<pcre2::bytes::CaptureLocations>,
}

impl std::fmt::Debug for Jit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Jit").field(&self.re.as_str()).finish()
    }
}

/// The capture groups of a match, by index (0 is the whole match).
pub enum Slots<'a> {
    Std(&'a ::regex::CaptureLocations),
    Jit(&'a pcre2::bytes::CaptureLocations),
    Fancy(&'a fancy_regex::Captures<'a>),
}

impl Slots<'_> {
    /// The byte range of group `i`, if it took part in the match.
    #[inline]
    pub fn get(&self, i: usize) -> Option<(usize, usize)> {
        match self {
            Slots::Std(l) => l.get(i),
            Slots::Jit(l) => l.get(i),
            Slots::Fancy(c) => c.get(i).map(|m| (m.start(), m.end())),
        }
    }
}

impl Pattern {
    /// Compiles a Fluent Bit (Onigmo) pattern, optionally wrapped in `/.../flags`.
    pub fn new(pattern: &str) -> Result<Pattern, String> {
        let (body, flags) = strip_slashes(pattern);
        let (translated, line_start) = translate_with_anchor(body);
        let mut prefix = String::from("(?m");
        prefix.push_str(&flags);
        prefix.push(')');
        let full = format!("{prefix}{translated}");
        let std_err = match ::regex::RegexBuilder::new(&full).build() {
            Ok(re) => {
                let jit = if pcre_safe(&full) {
                    Jit::new(&full)
                } else {
                    None
                };
                let locs_of = re.clone();
                let std_locs: LocPool<_> = Pool::new(Box::new(move || locs_of.capture_locations()));
                return Ok(Pattern {
                    engine: Engine::Std(re),
                    line_start,
                    std_locs: Some(Box::new(std_locs)),
                    jit,
                });
            }
            Err(e) => e,
        };
        match fancy_regex::Regex::new(&full) {
            Ok(re) => Ok(Pattern {
                engine: Engine::Fancy(re),
                line_start,
                std_locs: None,
                jit: None,
            }),
            Err(fancy_err) => {
                let std_msg = match &std_err {
                    ::regex::Error::Syntax(s) => s
                        .lines()
                        .rev()
                        .find(|l| l.starts_with("error:"))
                        .map(|l| l.trim_start_matches("error:").trim().to_string())
                        .unwrap_or_else(|| s.clone()),
                    other => other.to_string(),
                };
                Err(format!(
                    "invalid regular expression: {std_msg} (fancy-regex: {fancy_err})"
                ))
            }
        }
    }

    /// Whether a match starting at `start` only exists through the empty line Rust sees after
    /// a final newline (see [`Pattern::line_start`]).
    pub fn phantom(&self, text: &str, start: usize) -> bool {
        self.line_start && start == text.len() && text.ends_with('\n')
    }

    /// Finds the leftmost match in `text` and hands its groups to `f`; `None` when there is no
    /// match. Uses the PCRE2 JIT when the pattern has it (see the module docs).
    pub fn captures<R>(&self, text: &str, f: impl FnOnce(&Slots<'_>) -> R) -> Option<R> {
        self.captures_with(text, true, f)
    }

    /// As [`Pattern::captures`], with the JIT fast path only when `fast` (tests compare both).
    fn captures_with<R>(
        &self,
        text: &str,
        fast: bool,
        f: impl FnOnce(&Slots<'_>) -> R,
    ) -> Option<R> {
        if let Some(jit) = self.jit.as_ref().filter(|_| fast) {
            let mut locs = jit.locs.get();
            match jit.re.captures_read(&mut locs, text.as_bytes()) {
                Ok(Some(m)) if !self.phantom(text, m.start()) => {
                    return Some(f(&Slots::Jit(&locs)))
                }
                Ok(_) => return None,
                // PCRE2's match or JIT stack limit: the linear-time engine decides.
                Err(_) => {}
            }
        }
        match (&self.engine, &self.std_locs) {
            (Engine::Std(re), Some(pool)) => {
                let mut locs = pool.get();
                let m = re.captures_read(&mut locs, text)?;
                if self.phantom(text, m.start()) {
                    return None;
                }
                Some(f(&Slots::Std(&locs)))
            }
            (Engine::Std(re), None) => {
                let mut locs = re.capture_locations();
                let m = re.captures_read(&mut locs, text)?;
                if self.phantom(text, m.start()) {
                    return None;
                }
                Some(f(&Slots::Std(&locs)))
            }
            (Engine::Fancy(re), _) => {
                let caps = match re.captures(text) {
                    Ok(c) => c?,
                    Err(e) => {
                        self.limit_hit(text, &e);
                        return None;
                    }
                };
                if self.phantom(text, caps.get(0)?.start()) {
                    return None;
                }
                Some(f(&Slots::Fancy(&caps)))
            }
        }
    }

    /// Whether the pattern matches anywhere in `text`. A search the backtracking engine gave
    /// up on is no match, counted and logged ([`Pattern::try_is_match`] tells it apart).
    pub fn is_match(&self, text: &str) -> bool {
        self.try_is_match(text).unwrap_or(false)
    }

    /// Whether the pattern matches anywhere in `text`; `Err` when the backtracking engine hit
    /// its limit (counted in [`logferry_core::fb_regex::LIMIT_ERRORS`] and logged).
    pub fn try_is_match(&self, text: &str) -> Result<bool, LimitHit> {
        let fancy = |r: Result<Option<usize>, fancy_regex::Error>| match r {
            Ok(m) => Ok(m),
            Err(e) => {
                self.limit_hit(text, &e);
                Err(LimitHit)
            }
        };
        if !(self.line_start && text.ends_with('\n')) {
            return match &self.engine {
                Engine::Std(re) => Ok(re.is_match(text)),
                Engine::Fancy(re) => {
                    fancy(re.is_match(text).map(|m| m.then_some(0))).map(|m| m.is_some())
                }
            };
        }
        let start = match &self.engine {
            Engine::Std(re) => re.find(text).map(|m| m.start()),
            Engine::Fancy(re) => fancy(re.find(text).map(|m| m.map(|m| m.start())))?,
        };
        Ok(start.is_some_and(|s| !self.phantom(text, s)))
    }

    /// Counts a search that ended in an error and logs it: every time for the first ten, then
    /// at every power of two, so a hostile stream cannot flood the agent's log.
    fn limit_hit(&self, text: &str, e: &fancy_regex::Error) {
        use std::sync::atomic::Ordering;
        let n = logferry_core::fb_regex::LIMIT_ERRORS.fetch_add(1, Ordering::Relaxed) + 1;
        if n <= 10 || n.is_power_of_two() {
            let pattern = match &self.engine {
                Engine::Std(re) => re.as_str(),
                Engine::Fancy(re) => re.as_str(),
            };
            tracing::warn!(pattern, bytes = text.len(), error = %e, total = n,
                "regular expression search failed (backtracking limit); the text is passed on as not matched");
        }
    }

    /// The capture group names with their indices, in the order written.
    pub fn names(&self) -> Vec<(usize, String)> {
        let names: Vec<Option<&str>> = match &self.engine {
            Engine::Std(re) => re.capture_names().collect(),
            Engine::Fancy(re) => re.capture_names().collect(),
        };
        names
            .into_iter()
            .enumerate()
            .filter_map(|(i, n)| n.map(|n| (i, n.to_string())))
            .collect()
    }

    /// Which engine compiled the pattern (for diagnostics and tests).
    pub fn engine(&self) -> &'static str {
        match self.engine {
            Engine::Std(_) => "regex",
            Engine::Fancy(_) => "fancy-regex",
        }
    }
}

impl Jit {
    /// Compiles an already translated pattern with PCRE2 (UTF mode, so `.` and classes match
    /// characters; `\d \w \s` were translated to ASCII sets). `None` if PCRE2 rejects it or
    /// its JIT is not available: the interpreter would not be faster than the `regex` crate.
    ///
    /// Without a POSIX class (`[:alpha:]`), the pattern is compiled with UCP too: the `pcre2`
    /// crate then sets `PCRE2_MATCH_INVALID_UTF`, which spares each match PCRE2's UTF-8 check
    /// of the whole subject (6% of the seed pipeline's instructions; our subjects are `&str`,
    /// valid already). UCP changes only what [`pcre_safe`] keeps off PCRE2 (`\b \B \D \W
    /// \S \p \P`; `\d \w \s` are translated to ASCII sets) and POSIX classes, so the
    /// match is the same.
    fn new(translated: &str) -> Option<Box<Jit>> {
        let re = pcre2::bytes::RegexBuilder::new()
            .utf(true)
            .ucp(!translated.contains("[:"))
            .jit(true)
            .build(translated)
            .ok()?;
        let locs_of = re.clone();
        let locs: LocPool<_> = Pool::new(Box::new(move || locs_of.capture_locations()));
        Some(Box::new(Jit { re, locs }))
    }
}

/// Whether a translated pattern (Rust syntax, already accepted by the `regex` crate) means the
/// same to PCRE2. Conservative: anything whose meaning differs or might differ keeps the
/// pattern on the `regex` crate alone:
/// - flags other than `i`-less `m`/`s` (Rust's `x` also skips spaces in classes, `i` folds
///   cases with its own tables, `R` is recursion in PCRE2, `u` does not exist there);
/// - escapes other than `\A \z \t \n \r \f \xHH \x{H}` and escaped punctuation: Rust's
///   `\b \B \D \W \S \p \P` are Unicode-aware, PCRE2's (without UCP) ASCII, `\v` differs;
/// - nested classes and the set operations `&&`, `--`, `~~`, which PCRE2 reads literally.
fn pcre_safe(p: &str) -> bool {
    let b = p.as_bytes();
    let mut class_depth = 0usize;
    let mut i = 0usize;
    while i < b.len() {
        match b[i] {
            b'\\' => {
                let Some(&n) = b.get(i + 1) else {
                    return false;
                };
                if n.is_ascii_alphanumeric() && !b"Aztnrfx".contains(&n) {
                    return false;
                }
                i += 2;
                continue;
            }
            b'[' if class_depth > 0 => {
                if p[i..].starts_with("[:") {
                    if let Some(end) = p[i + 2..].find(":]") {
                        i += 2 + end + 2;
                        continue;
                    }
                }
                return false;
            }
            b'[' => {
                class_depth = 1;
                i += 1;
                // A leading `^` then `]` are part of the set, not its end.
                if b.get(i) == Some(&b'^') {
                    i += 1;
                }
                if b.get(i) == Some(&b']') {
                    i += 1;
                }
                continue;
            }
            b']' if class_depth > 0 => class_depth = 0,
            b'&' | b'-' | b'~' if class_depth > 0 && b.get(i + 1) == Some(&b[i]) => return false,
            b'(' if class_depth == 0 && b.get(i + 1) == Some(&b'?') => {
                let rest = &p[i + 2..];
                let flags_len = rest
                    .find(|c: char| !(c.is_ascii_alphabetic() || c == '-'))
                    .unwrap_or(rest.len());
                let flags = &rest[..flags_len];
                let is_flag_group = matches!(rest[flags_len..].chars().next(), Some(')' | ':'));
                if is_flag_group && !flags.chars().all(|c| matches!(c, 'm' | 's' | '-')) {
                    return false;
                }
            }
            _ => {}
        }
        i += 1;
    }
    true
}

/// Strips Fluent Bit's optional `/pattern/flags` form, returning the body and the Rust flags
/// (`i`, `x`, and Ruby's `m`, which is Rust's `s`).
fn strip_slashes(p: &str) -> (&str, String) {
    if let Some(rest) = p.strip_prefix('/') {
        if let Some(end) = rest.rfind('/') {
            let opts = &rest[end + 1..];
            if opts.chars().all(|c| matches!(c, 'i' | 'm' | 'x')) {
                let flags = opts
                    .chars()
                    .map(|c| if c == 'm' { 's' } else { c })
                    .collect();
                return (&rest[..end], flags);
            }
        }
    }
    (p, String::new())
}

/// Characters that must stay escaped in Rust syntax.
fn is_rust_meta(c: char) -> bool {
    matches!(
        c,
        '\\' | '.'
            | '+'
            | '*'
            | '?'
            | '('
            | ')'
            | '|'
            | '['
            | ']'
            | '{'
            | '}'
            | '^'
            | '$'
            | '#'
            | '&'
            | '-'
            | '~'
    )
}

/// Length of a valid `{n}`, `{n,}`, `{n,m}` or `{,m}` repetition at the start of `s`, and its
/// Rust spelling.
fn repetition(s: &str) -> Option<(usize, Cow<'_, str>)> {
    let close = s.find('}')?;
    let inner = &s[1..close];
    let (a, b) = match inner.split_once(',') {
        Some((a, b)) => (a, Some(b)),
        None => (inner, None),
    };
    let digits = |t: &str| t.chars().all(|c| c.is_ascii_digit());
    let ok = digits(a) && b.is_none_or(digits) && !(a.is_empty() && b.is_none_or(str::is_empty));
    if !ok {
        return None;
    }
    let text = &s[..=close];
    if a.is_empty() {
        Some((close + 1, Cow::Owned(format!("{{0,{}}}", b.unwrap_or("")))))
    } else {
        Some((close + 1, Cow::Borrowed(text)))
    }
}

/// Translates Ruby (Onigmo) syntax to Rust `regex` syntax; see the module docs.
#[cfg(test)]
fn translate(p: &str) -> String {
    translate_with_anchor(p).0
}

/// As [`translate`], also telling whether the pattern has a `^` outside brackets.
fn translate_with_anchor(p: &str) -> (String, bool) {
    let mut line_start = false;
    // With named groups, Onigmo's plain groups do not capture (Ruby syntax): make them `(?:`,
    // which also spares the capture engines their slots.
    let named = p.match_indices("(?").any(|(i, _)| {
        let rest = &p[i + 2..];
        let rest = rest.strip_prefix('P').unwrap_or(rest);
        let mut chars = rest.chars();
        matches!(chars.next(), Some('<' | '\''))
            && chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
    });
    let mut out = String::with_capacity(p.len() + 16);
    let mut class_depth = 0usize;
    let mut i = 0usize;
    let b = p.as_bytes();
    while i < p.len() {
        let Some(c) = p[i..].chars().next() else {
            break;
        };
        let clen = c.len_utf8();
        match c {
            '\\' => {
                let Some(n) = p[i + 1..].chars().next() else {
                    out.push_str("\\\\");
                    i += 1;
                    continue;
                };
                let inside = class_depth > 0;
                let rep: Option<&str> = match (n, inside) {
                    ('d', false) => Some("[0-9]"),
                    ('d', true) => Some("0-9"),
                    ('D', false) => Some("[^0-9]"),
                    ('w', false) => Some("[0-9A-Za-z_]"),
                    ('w', true) => Some("0-9A-Za-z_"),
                    ('W', false) => Some("[^0-9A-Za-z_]"),
                    ('s', false) => Some("[\\t\\n\\x0B\\f\\r ]"),
                    ('s', true) => Some("\\t\\n\\x0B\\f\\r "),
                    ('S', false) => Some("[^\\t\\n\\x0B\\f\\r ]"),
                    ('h', false) => Some("[0-9A-Fa-f]"),
                    ('h', true) => Some("0-9A-Fa-f"),
                    ('H', false) => Some("[^0-9A-Fa-f]"),
                    ('Z', false) => Some("(?:\\n?\\z)"),
                    ('e', _) => Some("\\x1B"),
                    ('a', _) => Some("\\x07"),
                    ('v', _) => Some("\\x0B"),
                    _ => None,
                };
                if let Some(r) = rep {
                    out.push_str(r);
                    i += 1 + n.len_utf8();
                    continue;
                }
                if n == '0' {
                    // Octal: \0, \0n, \0nn.
                    let mut j = i + 2;
                    let mut v = 0u32;
                    while j < p.len() && j < i + 4 && (b'0'..=b'7').contains(&b[j]) {
                        v = v * 8 + u32::from(b[j] - b'0');
                        j += 1;
                    }
                    out.push_str(&format!("\\x{{{v:X}}}"));
                    i = j;
                    continue;
                }
                if matches!(n, 'p' | 'P' | 'x' | 'u') && p[i + 2..].starts_with('{') {
                    // `\p{Greek}`, `\x{263A}`: the braces belong to the escape (not a
                    // repetition to escape). Onigmo's negation `\p{^Greek}` is Rust's `\P{Greek}`.
                    if let Some(end) = p[i + 2..].find('}') {
                        let inner = &p[i + 3..i + 2 + end];
                        match inner.strip_prefix('^') {
                            Some(neg) if n == 'p' || n == 'P' => {
                                out.push_str(if n == 'p' { "\\P{" } else { "\\p{" });
                                out.push_str(neg);
                                out.push('}');
                            }
                            _ => out.push_str(&p[i..i + 2 + end + 1]),
                        }
                        i += 2 + end + 1;
                        continue;
                    }
                }
                if n.is_ascii_alphanumeric() {
                    // \A \z \b \B \t \n \r \f \v \x \u \p \P \k and backreferences: same in Rust
                    // (or left for fancy-regex / an error).
                    out.push('\\');
                    out.push(n);
                } else if n.is_ascii() {
                    if is_rust_meta(n) {
                        out.push('\\');
                        out.push(n);
                    } else if n == ' ' {
                        out.push_str("\\x20");
                    } else {
                        // `\<`, `\>`, `\"`, `\/`, `\:` ... are plain characters in Ruby.
                        out.push(n);
                    }
                } else {
                    out.push(n);
                }
                i += 1 + n.len_utf8();
            }
            '[' => {
                if class_depth > 0 && p[i..].starts_with("[:") {
                    // POSIX class inside a set: copy through its closing ":]".
                    if let Some(end) = p[i + 2..].find(":]") {
                        out.push_str(&p[i..i + 2 + end + 2]);
                        i += 2 + end + 2;
                        continue;
                    }
                }
                class_depth += 1;
                out.push('[');
                i += 1;
                if p[i..].starts_with('^') {
                    out.push('^');
                    i += 1;
                }
                if p[i..].starts_with(']') {
                    out.push_str("\\]");
                    i += 1;
                }
            }
            ']' => {
                if class_depth > 0 {
                    class_depth -= 1;
                    out.push(']');
                } else {
                    out.push_str("\\]");
                }
                i += 1;
            }
            '{' if class_depth == 0 => match repetition(&p[i..]) {
                Some((len, text)) => {
                    out.push_str(&text);
                    i += len;
                }
                None => {
                    out.push_str("\\{");
                    i += 1;
                }
            },
            '}' if class_depth == 0 => {
                out.push_str("\\}");
                i += 1;
            }
            '(' if class_depth == 0 && p[i..].starts_with("(?#") => match p[i..].find(')') {
                Some(end) => i += end + 1,
                None => {
                    out.push_str(&p[i..]);
                    i = p.len();
                }
            },
            '(' if class_depth == 0 && p[i..].starts_with("(?'") => match p[i + 3..].find('\'') {
                Some(end) => {
                    out.push_str("(?<");
                    out.push_str(&p[i + 3..i + 3 + end]);
                    out.push('>');
                    i += 3 + end + 1;
                }
                None => {
                    out.push('(');
                    i += 1;
                }
            },
            '(' if class_depth == 0
                && named
                && !p[i + 1..].starts_with('?')
                && !p[i + 1..].starts_with('*') =>
            {
                out.push_str("(?:");
                i += 1;
            }
            '^' if class_depth == 0 => {
                line_start = true;
                out.push('^');
                i += 1;
            }
            _ => {
                out.push(c);
                i += clen;
            }
        }
    }
    (out, line_start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn translation_keeps_ruby_meaning() {
        assert_eq!(translate(r"^\<(?<pri>\d+)\>"), r"^<(?<pri>[0-9]+)>");
        assert_eq!(translate(r"[^\]]*"), r"[^\]]*");
        assert_eq!(translate(r"[\w\-.]"), r"[0-9A-Za-z_\-.]");
        assert_eq!(translate(r#"\"\/"#), r#""/"#);
        assert_eq!(translate(r#"^{"log":"#), r#"^\{"log":"#);
        assert_eq!(translate(r"a{2,3}b{,4}c{x}"), r"a{2,3}b{0,4}c\{x\}");
        assert_eq!(translate(r"x(?#note)y"), "xy");
        assert_eq!(translate(r"(?'n'a)"), "(?<n>a)");
        assert_eq!(translate(r"[[:alpha:]]"), "[[:alpha:]]");
        // Plain groups capture only when there are no named groups (Ruby syntax).
        assert_eq!(translate(r"(?<a>x)(y|z)\(w\)"), r"(?<a>x)(?:y|z)\(w\)");
        assert_eq!(translate(r"(y|z)"), r"(y|z)");
    }

    #[test]
    fn engines_and_errors() {
        let p = Pattern::new(r"^(?<a>\w+) (?<b>\d+)$").unwrap();
        assert_eq!(p.engine(), "regex");
        let p = Pattern::new(r"(?<word>\w+) \k<word>").unwrap();
        assert_eq!(p.engine(), "fancy-regex");
        assert!(p.is_match("hello hello"));
        assert!(!p.is_match("hello world"));
        let p = Pattern::new(r"foo(?=bar)").unwrap();
        assert_eq!(p.engine(), "fancy-regex");
        let e = Pattern::new(r"(?<a>unclosed").unwrap_err();
        assert!(e.contains("invalid regular expression"), "{e}");
    }

    /// A pattern that needs the backtracking engine and backtracks exponentially on a line
    /// without its final `!`: the search ends at fancy-regex's backtrack limit. That is not
    /// taken silently as "no match": `try_is_match` says so, and each is counted (and logged).
    #[test]
    fn a_backtracking_limit_is_counted_not_a_silent_non_match() {
        use std::sync::atomic::Ordering;
        let p = Pattern::new(r"^(?<w>(a|aa)+)\k<w>?(?=!)!").unwrap();
        assert_eq!(p.engine(), "fancy-regex");
        assert_eq!(p.try_is_match("aaaa!"), Ok(true));
        let hostile = format!("{}x", "a".repeat(64));
        let before = logferry_core::fb_regex::LIMIT_ERRORS.load(Ordering::Relaxed);
        assert_eq!(p.try_is_match(&hostile), Err(LimitHit));
        assert!(!p.is_match(&hostile));
        assert!(p.captures(&hostile, |_| ()).is_none());
        let after = logferry_core::fb_regex::LIMIT_ERRORS.load(Ordering::Relaxed);
        assert!(after >= before + 3, "{before} -> {after}");
    }

    /// Every group of the leftmost match, through the JIT (`fast`) or the `regex` crate.
    fn groups(p: &Pattern, text: &str, fast: bool) -> Option<Vec<Option<(usize, usize)>>> {
        let n = match &p.engine {
            Engine::Std(re) => re.captures_len(),
            Engine::Fancy(re) => re.captures_len(),
        };
        p.captures_with(text, fast, |slots| (0..n).map(|i| slots.get(i)).collect())
    }

    #[test]
    fn jit_fast_path_gives_the_same_captures() {
        let nginx = r#"^(?<remote>[^ ]*) (?<host>[^ ]*) (?<user>[^ ]*) \[(?<time>[^\]]*)\] "(?<method>\S+)(?: +(?<path>[^\"]*?)(?: +\S*)?)?" (?<code>[^ ]*) (?<size>[^ ]*)(?: "(?<referer>[^\"]*)" "(?<agent>[^\"]*)")"#;
        let line = r#"10.1.128.166 - - [19/Dec/2019:17:41:12 +0000] "GET /a?b=1 HTTP/1.1" 200 612 "-" "hey/0.0.1" "52.95.4.2""#;
        let patterns = [
            nginx,
            r"^(?<time>[^ ]+) (?<stream>stdout|stderr) (?<logtag>[^ ]*) (?<message>.*)$",
            r"^\<(?<pri>[0-9]{1,5})\>1 (?<time>[^ ]+) (?<host>[^ ]+) (?<ident>[^ ]+) (?<pid>[-0-9]+) (?<msgid>[^ ]+) (?<extradata>(\[(.*?)\]|-)) (?<message>.+)$",
            r"^(?<time>[^ ]*)\s+(?<severity>\w)\s+(?<component>[^ ]+)\s+\[(?<context>[^\]]+)]\s+(?<message>.*?) *(?<ms>(\d+))?(:?ms)?$",
            r"(?<key>\w+)=(?<value>[^ ]*)",
            r"^[\r\n]*$",
            r"^$",
            r"(?<a>x*)$",
            r"/^(?<all>.*)$/m",
            r"^(?<w>é+)(?<rest>.)",
            // POSIX classes (compiled without UCP) and non-ASCII sets (with it).
            r"^(?<p>[[:alpha:]]+)(?<r>.*)$",
            r"^(?<c>[^a-z ]+) (?<d>[a-zé]+)",
        ];
        let texts = [
            line.to_string(),
            format!("{line}\n"),
            format!("junk\n{line}\nmore"),
            "2019-12-19T17:41:12.1Z stdout F hello world".into(),
            "2019-12-19T17:41:12.1Z stdout F hello\n".into(),
            "<165>1 2003-10-11T22:14:15.003Z host app 42 ID47 [a b=\"c\"] msg".into(),
            "2014-11-03T18:28:32.450-0500 I NETWORK [initandlisten] waiting 12ms".into(),
            "no match here at all".into(),
            "a=1 b=\nc=3".into(),
            String::new(),
            "\n".into(),
            "text\n".into(),
            "x\ny\n".into(),
            "éééà and more".into(),
            "Ééa abé".into(),
            "éab".into(),
            "ab1 x".into(),
        ];
        // Every built-in regex parser takes the fast path.
        let builtin = include_str!("builtin_parsers.conf")
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Regex"))
            .map(str::trim);
        let explicit = patterns.len();
        for (n, pat) in patterns.into_iter().chain(builtin).enumerate() {
            let p = Pattern::new(pat).unwrap();
            assert!(p.jit.is_some(), "{pat} has the JIT fast path");
            let mut matched = 0;
            for text in &texts {
                let fast = groups(&p, text, true);
                assert_eq!(fast, groups(&p, text, false), "{pat} on {text:?}");
                matched += usize::from(fast.is_some());
            }
            assert!(matched > 0 || n >= explicit, "{pat} matched nothing");
        }
        // The nginx line itself, group by group.
        let p = Pattern::new(nginx).unwrap();
        let g = groups(&p, line, true).unwrap();
        let text = |i: usize| g[i].map(|(s, e)| &line[s..e]);
        assert_eq!(text(6), Some("/a?b=1"));
        assert_eq!(text(10), Some("hey/0.0.1"));
        assert_eq!(groups(&p, "nope", true), None);
    }

    #[test]
    fn unicode_properties_and_braced_hex_escapes_compile() {
        let p = Pattern::new(r"^(?<w>\p{Greek}+) (?<o>\p{^Greek}+) (?<x>\x{41})$").unwrap();
        let text = "αβγ abc A";
        let g = groups(&p, text, true).unwrap();
        let got: Vec<&str> = g[1..]
            .iter()
            .map(|s| s.map_or("", |(a, b)| &text[a..b]))
            .collect();
        assert_eq!(got, ["αβγ", "abc", "A"]);
        assert!(groups(&p, "abc abc A", true).is_none());
        let p = Pattern::new(r"^[\p{Greek}\d]+$").unwrap();
        assert!(p.is_match("α1β2"));
        assert!(!p.is_match("a1"));
    }

    #[test]
    fn jit_only_where_pcre2_means_the_same() {
        for pat in [
            r"^(?<a>\w+)\b",
            r"(?i)abc",
            "/abc/i",
            "/a b/x",
            r"[a-z&&[^aeiou]]",
            r"[a[bc]]",
            r"[\S]",
            r"\pL",
            r"(?R)^a$",
        ] {
            let p = Pattern::new(pat).unwrap();
            assert!(p.jit.is_none(), "{pat} must stay on the regex crate");
        }
        for pat in [r"[[:alpha:]]+\v", r"(?P<n>a)(?s:.)\x{41}\z", r"^[\]\-x]"] {
            let p = Pattern::new(pat).unwrap();
            assert!(p.jit.is_some(), "{pat} can use the JIT");
        }
        // Shared across tasks.
        fn shared<T: Send + Sync + std::panic::UnwindSafe + std::panic::RefUnwindSafe>() {}
        shared::<Pattern>();
    }

    #[test]
    fn slashes_and_flags() {
        let p = Pattern::new("/^abc$/i").unwrap();
        assert!(p.is_match("ABC"));
        let p = Pattern::new("/a.b/m").unwrap();
        assert!(p.is_match("a\nb"));
        // Ruby's `$` matches before a newline anywhere.
        let p = Pattern::new(r"^x$").unwrap();
        assert!(p.is_match("x\n"));
        assert!(p.is_match("y\nx\nz"));
        // ... but its `^` never matches after a final newline.
        let p = Pattern::new(r"^[\r\n]*$").unwrap();
        assert!(p.is_match(""));
        assert!(p.is_match("\n"));
        assert!(!p.is_match("text\n"));
        assert!(!Pattern::new(r"^$").unwrap().is_match("x\n"));
    }
}
