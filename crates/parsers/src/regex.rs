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

use std::borrow::Cow;

/// The engine that compiled a pattern.
#[derive(Debug)]
pub enum Engine {
    /// The `regex` crate: linear time.
    Std(::regex::Regex),
    /// `fancy-regex`, for patterns that need backtracking features.
    Fancy(fancy_regex::Regex),
}

/// A compiled pattern.
#[derive(Debug)]
pub struct Pattern {
    pub engine: Engine,
    /// The pattern has a `^`. Onigmo's `^` does not match at the very end of a text that ends
    /// with a newline (Rust's multi-line `^` does), so a match found only there is discarded.
    line_start: bool,
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
                return Ok(Pattern {
                    engine: Engine::Std(re),
                    line_start,
                })
            }
            Err(e) => e,
        };
        match fancy_regex::Regex::new(&full) {
            Ok(re) => Ok(Pattern {
                engine: Engine::Fancy(re),
                line_start,
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

    /// Whether the pattern matches anywhere in `text`.
    pub fn is_match(&self, text: &str) -> bool {
        if !(self.line_start && text.ends_with('\n')) {
            return match &self.engine {
                Engine::Std(re) => re.is_match(text),
                Engine::Fancy(re) => re.is_match(text).unwrap_or(false),
            };
        }
        let start = match &self.engine {
            Engine::Std(re) => re.find(text).map(|m| m.start()),
            Engine::Fancy(re) => re.find(text).ok().flatten().map(|m| m.start()),
        };
        start.is_some_and(|s| !self.phantom(text, s))
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
