//! How Fluent Bit reads plugin option values: its three string splitters and its regular
//! expression dialect, reproduced so that a filter splits `KEY VALUE` and compiles patterns
//! exactly as Fluent Bit does.
//!
//! - [`split_key_rest`] is `flb_utils_split(value, ' ', 1)` (grep's `KEY REGEX`): no quoting;
//!   the key ends at the first space and *everything after that one space* is the rest.
//! - [`split_quoted`] is `flb_utils_split_quoted(value, ' ', max)` (modify's rules and
//!   conditions): tokens separated by spaces, `"..."` or `'...'` quote a token (with `\"`, `\'`
//!   and `\\` escapes inside), and once `max` tokens are read the remaining text is one more
//!   token.
//! - [`split_tokens`] is `flb_slist_split_tokens(value, max)` (record_modifier's `Record`, a
//!   `FLB_CONFIG_MAP_SLIST_2` option): like the previous one but only `"` quotes.
//! - [`regex()`] is `flb_regex_create`: Onigmo with Ruby syntax, where `^` and `$` match at line
//!   boundaries, and a pattern wrapped in `/.../` has the slashes removed.

use regex::Regex;

/// Splits `KEY REST` at the first space after the key (leading spaces skipped). `None` when
/// there is no space or nothing after it.
pub fn split_key_rest(value: &str) -> Option<(&str, &str)> {
    let value = value.trim_start_matches(' ');
    let sp = value.find(' ')?;
    let rest = &value[sp + 1..];
    (!rest.is_empty()).then_some((&value[..sp], rest))
}

/// Splits on spaces with `"`/`'` quoting; after `max` tokens (0: no limit) the rest of the text
/// is one last token, taken raw. Fails on an unterminated quote.
pub fn split_quoted(value: &str, max: usize) -> Result<Vec<String>, String> {
    let b = value.as_bytes();
    let len = b.len();
    let mut out = Vec::new();
    let mut i = 0;
    while i < len {
        let mut p = i;
        while p < len && b[p] == b' ' {
            p += 1;
        }
        if p == len {
            break;
        }
        if b[p] == b'"' || b[p] == b'\'' {
            let quote = b[p];
            let mut tok = Vec::new();
            let mut j = p + 1;
            loop {
                if j >= len {
                    return Err(format!("unterminated quote in '{value}'"));
                }
                let c = b[j];
                if c == b'\\' && j + 1 < len && (b[j + 1] == quote || b[j + 1] == b'\\') {
                    tok.push(b[j + 1]);
                    j += 2;
                } else if c == quote {
                    j += 1;
                    break;
                } else {
                    tok.push(c);
                    j += 1;
                }
            }
            out.push(String::from_utf8(tok).map_err(|_| format!("invalid UTF-8 in '{value}'"))?);
            i = j;
        } else {
            let end = value[p..].find(' ').map_or(len, |k| p + k);
            out.push(value[p..end].to_string());
            i = end + 1;
        }
        if max > 0 && out.len() >= max && i < len {
            out.push(value[i..].to_string());
            break;
        }
    }
    Ok(out)
}

/// Splits on spaces with `"` quoting (`\"` and `\\` escapes inside); after `max` tokens
/// (0: no limit) the rest of the text, leading spaces skipped, is one last token.
pub fn split_tokens(value: &str, max: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = value;
    loop {
        rest = rest.trim_start_matches(' ');
        if rest.is_empty() {
            break;
        }
        if let Some(quoted) = rest.strip_prefix('"') {
            match closing_quote(quoted) {
                Some(end) => {
                    out.push(unescape(&quoted[..end]));
                    rest = &quoted[end + 1..];
                }
                None => {
                    // Fluent Bit takes an unterminated quoted token as the rest of the line.
                    out.push(quoted.to_string());
                    break;
                }
            }
        } else {
            let end = rest.find(' ').unwrap_or(rest.len());
            out.push(rest[..end].to_string());
            rest = &rest[end..];
        }
        if max > 0 && out.len() >= max {
            let tail = rest.trim_start_matches(' ');
            if !tail.is_empty() {
                out.push(tail.to_string());
            }
            break;
        }
    }
    out
}

/// Position of the first `"` not preceded by a backslash.
fn closing_quote(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    (0..b.len()).find(|&i| b[i] == b'"' && (i == 0 || b[i - 1] != b'\\'))
}

/// Turns `\"` into `"` and `\\` into `\`.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(&n) = chars.peek() {
                if n == '"' || n == '\\' {
                    out.push(n);
                    chars.next();
                    continue;
                }
            }
        }
        out.push(c);
    }
    out
}

/// Compiles a pattern as Fluent Bit's `flb_regex_create` does (see the module docs). Onigmo
/// features the `regex` crate lacks (look-around, back-references) are reported as errors.
pub fn regex(pattern: &str) -> Result<Regex, String> {
    logferry_core::fb_regex::compile(pattern)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_rest_keeps_spaces_after_the_first() {
        assert_eq!(split_key_rest("log aa"), Some(("log", "aa")));
        assert_eq!(split_key_rest("  log foo bar"), Some(("log", "foo bar")));
        assert_eq!(split_key_rest("log  ^x"), Some(("log", " ^x")));
        assert_eq!(split_key_rest("log"), None);
        assert_eq!(split_key_rest("log "), None);
    }

    #[test]
    fn quoted_split_as_flb_utils_split_quoted() {
        assert_eq!(split_quoted("a b", 3).unwrap(), ["a", "b"]);
        assert_eq!(
            split_quoted("Rename  💦 ❄️", 3).unwrap(),
            ["Rename", "💦", "❄️"]
        );
        // The fluent-bit runtime test for issue 1225.
        assert_eq!(
            split_quoted(r#"key_value_matches "key 1" ".*with spaces.*""#, 3).unwrap(),
            ["key_value_matches", "key 1", ".*with spaces.*"]
        );
        assert_eq!(
            split_quoted(r#"'it\'s' "a \"q\" \\ b""#, 3).unwrap(),
            ["it's", r#"a "q" \ b"#]
        );
        assert_eq!(
            split_quoted("a b c d e", 3).unwrap(),
            ["a", "b", "c", "d e"]
        );
        assert!(split_quoted(r#"a "b"#, 3).is_err());
        assert!(split_quoted("", 3).unwrap().is_empty());
    }

    #[test]
    fn tokens_as_flb_slist_split_tokens() {
        assert_eq!(split_tokens("hostname my-host", 2), ["hostname", "my-host"]);
        assert_eq!(
            split_tokens(r#"k "v with \"q\"""#, 2),
            ["k", r#"v with "q""#]
        );
        assert_eq!(split_tokens("k a b c", 2), ["k", "a", "b c"]);
        assert_eq!(split_tokens("k", 2), ["k"]);
        assert_eq!(split_tokens(r#"k "open"#, 2), ["k", "open"]);
    }

    #[test]
    fn regex_dialect() {
        let r = regex("/^aa/").unwrap();
        assert!(r.is_match("aab"));
        // Ruby's ^ matches after every newline.
        assert!(regex("^bar").unwrap().is_match("foo\nbar"));
        assert!(regex("(")
            .unwrap_err()
            .contains("invalid regular expression '('"));
    }
}
