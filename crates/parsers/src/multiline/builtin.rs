//! The built-in multiline parsers, with Fluent Bit's definitions (`src/multiline/flb_ml_parser_*.c`):
//! `docker`, `cri`, `java`, `go`, `python`, `ruby`.

use std::path::Path;
use std::sync::Arc;

use logferry_core::config::{Section, SectionKind, Span};
use logferry_core::Str;

use super::{link_rules, Inner, Mode, MultilineParser, Rule, DEFAULT_FLUSH_TIMEOUT};
use crate::parser::Parser;
use crate::regex::Pattern;

/// `(from_states, regex, to_state)` for each regex built-in.
type RuleDef = (&'static str, &'static str, &'static str);

const JAVA: &[RuleDef] = &[
    (
        "start_state, java_start_exception",
        r"/(.)(?:Exception|Error|Throwable|V8 errors stack trace)[:\r\n]/",
        "java_after_exception",
    ),
    (
        "java_after_exception",
        r"/^[\t ]*nested exception is:[\t ]*/",
        "java_start_exception",
    ),
    (
        "java_after_exception",
        r"/^[\r\n]*$/",
        "java_after_exception",
    ),
    (
        "java_after_exception, java",
        r"/^[\t ]+(?:eval )?at /",
        "java",
    ),
    (
        "java_after_exception, java",
        r"/^[\t ]+--- End of inner exception stack trace ---$/",
        "java",
    ),
    (
        "java_after_exception, java",
        r"/^--- End of stack trace from previous (?x:)location where exception was thrown ---$/",
        "java",
    ),
    (
        "java_after_exception, java",
        r"/^[\t ]*(?:Caused by|Suppressed):/",
        "java_after_exception",
    ),
    (
        "java_after_exception, java",
        r"/^[\t ]*... \d+ (?:more|common frames omitted)/",
        "java",
    ),
];

const GO: &[RuleDef] = &[
    ("start_state", r"/\bpanic: /", "go_after_panic"),
    ("start_state", r"/http: panic serving/", "go_goroutine"),
    ("go_after_panic", r"/^$/", "go_goroutine"),
    (
        "go_after_panic, go_after_signal, go_frame_1",
        r"/^$/",
        "go_goroutine",
    ),
    ("go_after_panic", r"/^\[signal /", "go_after_signal"),
    (
        "go_goroutine",
        r"/^goroutine \d+ \[[^\]]+\]:$/",
        "go_frame_1",
    ),
    (
        "go_frame_1",
        r"/^(?:[^\s.:]+\.)*[^\s.():]+\(|^created by /",
        "go_frame_2",
    ),
    ("go_frame_2", r"/^\s/", "go_frame_1"),
];

const PYTHON: &[RuleDef] = &[
    (
        "start_state",
        r"/^Traceback \(most recent call last\):$/",
        "python",
    ),
    ("python", r"/^[\t ]+File /", "python_code"),
    ("python_code", r"/[^\t ]/", "python"),
    ("python", r"/^(?:[^\s.():]+\.)*[^\s.():]+:/", "start_state"),
];

const RUBY: &[RuleDef] = &[
    (
        "start_state, ruby_start_exception",
        r"/^.+:\d+:in\s+.*/",
        "ruby_after_exception",
    ),
    (
        "ruby_after_exception, ruby",
        r"/^\s+from\s+.*:\d+:in\s+.*/",
        "ruby",
    ),
];

/// Compiles a built-in rule set (their patterns are known to compile; a failure drops the rule).
fn rules(defs: &[RuleDef]) -> Vec<Rule> {
    let mut rules: Vec<Rule> = defs
        .iter()
        .filter_map(|(from, re, to)| {
            let from: Vec<String> = from.split(',').map(|s| s.trim().to_string()).collect();
            Some(Rule {
                start: from.iter().any(|f| f == "start_state"),
                from,
                pattern: Pattern::new(re).ok()?,
                to: (*to).to_string(),
                next: Vec::new(),
                next_has_start: false,
            })
        })
        .collect();
    link_rules(&mut rules);
    rules
}

/// A regex built-in reading `log`.
fn regex_builtin(name: &str, defs: &[RuleDef]) -> MultilineParser {
    MultilineParser::from_inner(Inner {
        name: name.to_string(),
        mode: Mode::Regex(rules(defs)),
        negate: false,
        flush_timeout: DEFAULT_FLUSH_TIMEOUT,
        key_content: vec![Str::from("log")],
        key_group: None,
        key_pattern: Vec::new(),
        parser: None,
        raw_parser: None,
    })
}

/// An internal parser from `key value` pairs.
fn internal_parser(pairs: &[(&str, &str)]) -> Option<Arc<Parser>> {
    let span = Span::new(&Arc::from(Path::new("<built-in multiline>")), 0);
    let mut section = Section::new(SectionKind::Parser, span.clone());
    for (k, v) in pairs {
        section.push(*k, *v, span.clone());
    }
    Parser::from_section(&section).ok().map(Arc::new)
}

/// Every built-in multiline parser.
pub(crate) fn builtin_multiline() -> Vec<MultilineParser> {
    // Docker's json-file driver splits lines at 16 KiB; a `log` that does not end with a
    // newline continues in the next record of the same stream.
    let docker = MultilineParser::from_inner(Inner {
        name: "docker".into(),
        mode: Mode::EndsWith("\n".into()),
        negate: false,
        flush_timeout: DEFAULT_FLUSH_TIMEOUT,
        key_content: vec![Str::from("log")],
        key_group: Some(Str::from("stream")),
        key_pattern: Vec::new(),
        parser: None,
        raw_parser: internal_parser(&[
            ("Name", "_ml_json_docker"),
            ("Format", "json"),
            ("Time_Key", "time"),
            ("Time_Format", "%Y-%m-%dT%H:%M:%S.%L"),
            ("Time_Keep", "On"),
            ("Time_Strict", "Off"),
        ]),
    });
    // CRI: `P` (partial) parts continue until an `F` (full) part.
    let cri = MultilineParser::from_inner(Inner {
        name: "cri".into(),
        mode: Mode::Equal("F".into()),
        negate: false,
        flush_timeout: DEFAULT_FLUSH_TIMEOUT,
        key_content: vec![Str::from("log"), Str::from("message")],
        key_group: Some(Str::from("stream")),
        key_pattern: vec![Str::from("_p"), Str::from("logtag")],
        parser: None,
        raw_parser: internal_parser(&[
            ("Name", "_ml_cri"),
            ("Format", "regex"),
            (
                "Regex",
                r"^(?<time>.+?) (?<stream>stdout|stderr) (?<_p>F|P) (?<log>.*)$",
            ),
            ("Skip_Empty_Values", "Off"),
            ("Time_Key", "time"),
            ("Time_Format", "%Y-%m-%dT%H:%M:%S.%L%z"),
            ("Time_Keep", "On"),
            ("Time_Strict", "Off"),
        ]),
    });
    vec![
        docker,
        cri,
        regex_builtin("java", JAVA),
        regex_builtin("go", GO),
        regex_builtin("python", PYTHON),
        regex_builtin("ruby", RUBY),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_rule_compiles_and_links() {
        for (defs, name) in [
            (JAVA, "java"),
            (GO, "go"),
            (PYTHON, "python"),
            (RUBY, "ruby"),
        ] {
            let rules = rules(defs);
            assert_eq!(rules.len(), defs.len(), "{name}: a rule failed to compile");
            for r in &rules {
                assert!(
                    r.next_has_start || !r.next.is_empty(),
                    "{name}: state '{}' leads nowhere",
                    r.to
                );
            }
        }
        assert!(internal_parser(&[("Name", "x"), ("Format", "json")]).is_some());
        assert_eq!(builtin_multiline().len(), 6);
        assert!(builtin_multiline()[..2]
            .iter()
            .all(|m| m.inner.raw_parser.is_some()));
    }
}
