//! `[MULTILINE_PARSER]` sections (and YAML `multiline_parsers`, which the YAML reader turns into
//! the same `rule "state" "regex" "next_state"` entries).

use std::sync::Arc;
use std::time::Duration;

use logferry_core::config::{ConfigError, Entry, Section};
use logferry_core::Str;

use super::{link_rules, Inner, Mode, MultilineParser, Rule};
use crate::parser::Parser;
use crate::regex::Pattern;

logferry_core::options! {
    /// The keys of a `[MULTILINE_PARSER]` section, as Fluent Bit names them.
    pub struct MultilineOptions for "multiline parser" {
        /// The multiline parser's name, used by `multiline.parser` keys.
        pub name: String = ["Name"] None,
        /// regex, endswith or equal (eq).
        pub kind: String = ["Type"] None,
        /// Milliseconds a pending message may wait before it is flushed.
        pub flush_timeout: String = ["Flush_Timeout"] Some("4000"),
        /// The key holding the text to match and join.
        pub key_content: Option<String> = ["Key_Content"] None,
        /// A key whose value separates streams (e.g. `stream`).
        pub key_group: Option<String> = ["Key_Group"] None,
        /// endswith/equal: the key compared instead of the content.
        pub key_pattern: Option<String> = ["Key_Pattern"] None,
        /// endswith/equal: the string to compare with.
        pub match_string: Option<String> = ["Match_String"] None,
        /// endswith/equal: invert the comparison.
        pub negate: bool = ["Negate"] Some("off"),
        /// A parser applied to each line's content before the rules.
        pub parser: Option<String> = ["Parser"] None,
        /// `"from_state[, state2]" "/regex/" "to_state"`; repeatable (regex type).
        pub rule: Vec<String> = ["Rule"] None,
    }
}

/// Builds a multiline parser from its section; `parser` looks up `[PARSER]`s by name.
pub(crate) fn from_section(
    section: &Section,
    parser: &dyn Fn(&str) -> Option<Arc<Parser>>,
) -> Result<MultilineParser, Vec<ConfigError>> {
    let entries: Vec<&Entry> = section.entries.iter().collect();
    let opts = MultilineOptions::from_entries(&section.span, &entries, &[]).map_err(|e| vec![e])?;
    let name = opts.name.trim().to_string();
    let mut errors = Vec::new();
    let at = |key: &str| {
        section
            .get(key)
            .map(|e| (e.span.clone(), e.key.clone()))
            .unwrap_or_else(|| (section.span.clone(), key.to_string()))
    };

    let flush_timeout = match parse_millis(&opts.flush_timeout) {
        Ok(d) => d,
        Err(reason) => {
            let (span, key) = at("Flush_Timeout");
            errors.push(ConfigError::key(&span, &key, reason));
            super::DEFAULT_FLUSH_TIMEOUT
        }
    };

    let yaml = is_yaml(section);
    let mode = match opts.kind.trim().to_ascii_lowercase().as_str() {
        "regex" => {
            let mut rules = Vec::new();
            for e in section
                .entries
                .iter()
                .filter(|e| e.key.eq_ignore_ascii_case("rule"))
            {
                match rule(&e.value, yaml) {
                    Ok(r) => rules.push((r, e)),
                    Err(reason) => errors.push(ConfigError::key(
                        &e.span,
                        &e.key,
                        format!("multiline parser '{name}': {reason}"),
                    )),
                }
            }
            let from_states: Vec<String> = rules
                .iter()
                .flat_map(|(r, _)| r.from.iter().cloned())
                .collect();
            for (r, e) in &rules {
                if !from_states.contains(&r.to) {
                    errors.push(ConfigError::key(
                        &e.span,
                        &e.key,
                        format!(
                            "multiline parser '{name}': next state '{}' is not the state of any rule",
                            r.to
                        ),
                    ));
                }
            }
            if !rules.iter().any(|(r, _)| r.start) && errors.is_empty() {
                let (span, key) = at("Rule");
                errors.push(ConfigError::key(
                    &span,
                    &key,
                    format!(
                        "multiline parser '{name}' of type regex needs a rule for \"start_state\""
                    ),
                ));
            }
            let mut rules: Vec<Rule> = rules.into_iter().map(|(r, _)| r).collect();
            link_rules(&mut rules);
            Some(Mode::Regex(rules))
        }
        t @ ("endswith" | "equal" | "eq") => match opts.match_string.clone() {
            Some(m) if !m.is_empty() => Some(if t == "endswith" {
                Mode::EndsWith(m)
            } else {
                Mode::Equal(m)
            }),
            _ => {
                let (span, key) = at("Match_String");
                errors.push(ConfigError::key(
                    &span,
                    &key,
                    format!("multiline parser '{name}' of type {t} needs Match_String"),
                ));
                None
            }
        },
        other => {
            let (span, key) = at("Type");
            errors.push(ConfigError::key(
                &span,
                &key,
                format!("multiline parser '{name}': unknown type '{other}' (expected regex, endswith or equal)"),
            ));
            None
        }
    };

    let line_parser = match opts.parser.as_deref().map(str::trim) {
        Some(p) if !p.is_empty() => match parser(p) {
            Some(p) => Some(p),
            None => {
                let (span, key) = at("Parser");
                errors.push(ConfigError::key(
                    &span,
                    &key,
                    format!("multiline parser '{name}' names an undefined parser '{p}'"),
                ));
                None
            }
        },
        _ => None,
    };

    let Some(mode) = mode else {
        return Err(errors);
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    let key = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(Str::from)
    };
    Ok(MultilineParser::from_inner(Inner {
        name,
        mode,
        negate: opts.negate,
        flush_timeout,
        key_content: vec![key(&opts.key_content).unwrap_or_else(|| Str::from("log"))],
        key_group: key(&opts.key_group),
        key_pattern: key(&opts.key_pattern).into_iter().collect(),
        parser: line_parser,
        raw_parser: None,
    }))
}

/// Whether the section came from a YAML file, whose reader escapes `\` and `"` in rules.
fn is_yaml(section: &Section) -> bool {
    section
        .span
        .file
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"))
}

/// `Flush_Timeout`: milliseconds (Fluent Bit reads an integer); `ms`/`s` suffixes accepted.
fn parse_millis(text: &str) -> Result<Duration, String> {
    let t = text.trim().to_ascii_lowercase();
    let (num, mult) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1000.0)
    } else {
        (t.as_str(), 1.0)
    };
    match num.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(Duration::from_secs_f64(v * mult / 1000.0)),
        _ => Err(format!("expected milliseconds such as 1000, got '{text}'")),
    }
}

/// Splits a rule into its three tokens. Tokens are double-quoted (with `\"` for a quote) or
/// bare; in YAML files `\\` also stands for one backslash.
fn tokens(text: &str, yaml: bool) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&first) = chars.peek() else { break };
        let mut tok = String::new();
        if first == '"' {
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '"' => {
                        closed = true;
                        break;
                    }
                    '\\' => match chars.peek().copied() {
                        Some('"') => {
                            tok.push('"');
                            chars.next();
                        }
                        Some('\\') if yaml => {
                            tok.push('\\');
                            chars.next();
                        }
                        _ => tok.push('\\'),
                    },
                    c => tok.push(c),
                }
            }
            if !closed {
                return Err(format!("unterminated quote in rule '{text}'"));
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                tok.push(c);
                chars.next();
            }
        }
        out.push(tok);
    }
    Ok(out)
}

/// Parses one rule.
fn rule(text: &str, yaml: bool) -> Result<Rule, String> {
    let toks = tokens(text, yaml)?;
    let [from, re, to] = toks.as_slice() else {
        return Err(format!(
            "a rule is \"state\" \"/regex/\" \"next_state\" (3 parts), got {} in '{text}'",
            toks.len()
        ));
    };
    let from: Vec<String> = from
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if from.is_empty() {
        return Err("a rule needs a state".into());
    }
    let pattern = Pattern::new(re)?;
    Ok(Rule {
        start: from.iter().any(|f| f == "start_state"),
        from,
        pattern,
        to: to.trim().to_string(),
        next: Vec::new(),
        next_has_start: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_tokens() {
        let t = tokens(r#""start_state" "/^\d+ \"x\"/" "cont""#, false).unwrap();
        assert_eq!(t, ["start_state", r#"/^\d+ "x"/"#, "cont"]);
        let t = tokens(r#""start_state" "/^\\d+ \"x\"/" "cont""#, true).unwrap();
        assert_eq!(t, ["start_state", r#"/^\d+ "x"/"#, "cont"]);
        let t = tokens(r#"start_state /a b/ cont"#, false).unwrap();
        assert_eq!(t.len(), 4);
        assert!(tokens(r#""open"#, false).is_err());
    }

    #[test]
    fn millis() {
        assert_eq!(parse_millis("1000"), Ok(Duration::from_millis(1000)));
        assert_eq!(parse_millis("4s"), Ok(Duration::from_millis(4000)));
        assert!(parse_millis("soon").is_err());
    }
}
