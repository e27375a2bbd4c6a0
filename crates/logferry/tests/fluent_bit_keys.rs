//! Every configuration key Fluent Bit 5.1.1 takes, for the plugins logferry has, is a key logferry
//! knows: applied, or accepted and noted as not applied. A Fluent Bit config must never fail here
//! with "unknown key". The list is `tests/fixtures/fluent-bit-5.1-keys.txt` (its header says how it
//! was derived).

use logferry_core::config::OptSpec;
use logferry_engine::common::{FilterCommon, InputCommon, OutputCommon, ServiceOptions};
use logferry_parsers::{MultilineOptions, ParserOptions};

fn knows(specs: &[&[OptSpec]], key: &str) -> bool {
    specs.iter().flat_map(|s| s.iter()).any(|o| o.is(key))
}

#[test]
fn every_fluent_bit_5_1_key_of_logferrys_plugins_is_known() {
    let path = std::path::Path::new(
        &std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    )
    .join("tests/fixtures/fluent-bit-5.1-keys.txt");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let reg = logferry::registry::registry();
    let mut unknown = Vec::new();
    let mut checked = 0;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(section), Some(plugin), Some(key)) = (parts.next(), parts.next(), parts.next())
        else {
            panic!(
                "line {}: expected '<section> <plugin> <key>': {line}",
                n + 1
            );
        };
        let own = match (section, plugin) {
            (_, "-") => None,
            ("input", p) => Some(reg.input(p).map(|p| p.options)),
            ("filter", p) => Some(reg.filter(p).map(|p| p.options)),
            ("output", p) => Some(reg.output(p).map(|p| p.options)),
            _ => panic!("line {}: unknown section {section}", n + 1),
        };
        let own: &[OptSpec] = match own {
            None => &[],
            Some(Some(o)) => o,
            Some(None) => panic!(
                "line {}: logferry has no {section} plugin '{plugin}'",
                n + 1
            ),
        };
        let known = match (section, key) {
            // A prefix: Parser_1, Parser_2, … (the old multiline mode's line parsers).
            ("input", "parser_") if plugin == "tail" => {
                logferry_tail::config::is_old_multiline_parser("Parser_1")
            }
            _ => match section {
                "service" => knows(&[ServiceOptions::OPTIONS], key),
                "input" => knows(&[own, InputCommon::OPTIONS], key),
                "filter" => knows(&[own, FilterCommon::OPTIONS], key),
                "output" => knows(&[own, OutputCommon::OPTIONS], key),
                "parser" => knows(&[ParserOptions::OPTIONS], key),
                "multiline_parser" => knows(&[MultilineOptions::OPTIONS], key),
                _ => panic!("line {}: unknown section {section}", n + 1),
            },
        };
        checked += 1;
        if !known {
            unknown.push(format!("{section} {plugin} {key}"));
        }
    }
    assert!(
        checked > 300,
        "only {checked} keys read from {}",
        path.display()
    );
    assert!(
        unknown.is_empty(),
        "{} Fluent Bit 5.1 keys are unknown to logferry:\n{}",
        unknown.len(),
        unknown.join("\n")
    );
}
