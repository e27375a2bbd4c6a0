//! logferry-parsers: Fluent Bit's parsers (`regex`, `json`, `logfmt`, `ltsv`), its built-in
//! parser definitions, and multiline joining. Synchronous and runtime-free; see `README.md`.
//!
//! ```
//! use logferry_parsers::Parsers;
//! let parsers = Parsers::builtin();
//! let nginx = parsers.get("nginx").unwrap();
//! let line = r#"10.1.128.166 - - [19/Dec/2019:17:41:12 +0000] "GET / HTTP/1.1" 200 612 "-" "hey/0.0.1" "52.95.4.2""#;
//! let parsed = nginx.parse(line).unwrap();
//! assert_eq!(parsed.time.unwrap().secs(), 1_576_777_272);
//! assert_eq!(parsed.body.get("code").and_then(|v| v.as_str()), Some("200"));
//! ```

mod convert;
mod format;
pub mod multiline;
mod parser;
mod regex;
pub mod time;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use logferry_core::config::{Config, ConfigError, SectionKind, Vars};

pub use convert::TypeKind;
pub use multiline::MultilineOptions;
pub use multiline::{MultilineGroup, MultilineParser};
pub use parser::{Parsed, Parser, ParserOptions};

/// The built-in `[PARSER]` definitions (Fluent Bit's `conf/parsers.conf`).
const BUILTIN_PARSERS: &str = include_str!("builtin_parsers.conf");

/// Every parser and multiline parser, by name.
#[derive(Clone, Debug, Default)]
pub struct Parsers {
    parsers: Vec<Arc<Parser>>,
    by_name: HashMap<String, usize>,
    multiline: Vec<Arc<MultilineParser>>,
    ml_by_name: HashMap<String, usize>,
}

impl Parsers {
    /// The built-in parsers (no parsers file needed): `docker`, `cri`, `json`, `nginx`,
    /// `apache`, `apache2`, `apache_error`, `syslog-rfc5424`, `syslog-rfc3164`,
    /// `syslog-rfc3164-local`, `mongodb`, `envoy`, `istio-envoy-proxy`, `k8s-nginx-ingress`,
    /// `kube-custom`, `logfmt`; and the multiline `docker`, `cri`, `java`, `go`, `python`,
    /// `ruby`. Compiled once per process.
    pub fn builtin() -> Parsers {
        static BUILTIN: OnceLock<Parsers> = OnceLock::new();
        BUILTIN
            .get_or_init(|| {
                let (parsers, _errors) = Self::builtin_checked();
                parsers
            })
            .clone()
    }

    /// Builds the built-ins, returning any definition that failed (a bug; tests check none does).
    fn builtin_checked() -> (Parsers, Vec<ConfigError>) {
        let mut out = Parsers::default();
        let mut errors = Vec::new();
        let mut vars = Vars::empty();
        match logferry_core::config::classic::parse(
            BUILTIN_PARSERS,
            Path::new("<built-in parsers.conf>"),
            &mut vars,
        ) {
            Ok(sections) => {
                for s in sections.iter().filter(|s| s.kind == SectionKind::Parser) {
                    match Parser::from_section(s) {
                        Ok(p) => out.insert(Arc::new(p)),
                        Err(e) => errors.extend(e),
                    }
                }
            }
            Err(e) => errors.push(e),
        }
        for ml in multiline::builtin_multiline() {
            out.insert_multiline(Arc::new(ml));
        }
        (out, errors)
    }

    /// The built-ins, then every `[PARSER]` and `[MULTILINE_PARSER]` section of `config` (including
    /// those read from `Parsers_File`). A section named like a built-in replaces it; when two
    /// sections share a name, the first one is kept (as Fluent Bit). Every error is returned,
    /// each with file:line and key.
    pub fn from_config(config: &Config) -> Result<Parsers, Vec<ConfigError>> {
        let mut out = Parsers::builtin();
        let mut errors = Vec::new();
        let mut defined: Vec<String> = Vec::new();
        for section in config.sections(SectionKind::Parser) {
            match Parser::from_section(section) {
                Ok(p) => {
                    if defined.iter().any(|n| n == p.name()) {
                        continue;
                    }
                    defined.push(p.name().to_string());
                    out.insert(Arc::new(p));
                }
                Err(e) => errors.extend(e),
            }
        }
        let mut ml_defined: Vec<String> = Vec::new();
        for section in config.sections(SectionKind::MultilineParser) {
            let lookup = |name: &str| out.get(name);
            match multiline::from_section(section, &lookup) {
                Ok(ml) => {
                    if ml_defined.iter().any(|n| n == ml.name()) {
                        continue;
                    }
                    ml_defined.push(ml.name().to_string());
                    out.insert_multiline(Arc::new(ml));
                }
                Err(e) => errors.extend(e),
            }
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(errors)
        }
    }

    /// The parser named `name` (names are case-sensitive, as in Fluent Bit).
    pub fn get(&self, name: &str) -> Option<Arc<Parser>> {
        self.by_name
            .get(name)
            .map(|&i| Arc::clone(&self.parsers[i]))
    }

    /// The multiline parser named `name`.
    pub fn multiline(&self, name: &str) -> Option<Arc<MultilineParser>> {
        self.ml_by_name
            .get(name)
            .map(|&i| Arc::clone(&self.multiline[i]))
    }

    /// Parser names: built-ins first, then the configuration's, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.parsers.iter().map(|p| p.name())
    }

    /// Multiline parser names, in the same order rule.
    pub fn multiline_names(&self) -> impl Iterator<Item = &str> {
        self.multiline.iter().map(|p| p.name())
    }

    /// Adds or replaces (by name) a parser.
    pub fn insert(&mut self, parser: Arc<Parser>) {
        match self.by_name.get(parser.name()) {
            Some(&i) => self.parsers[i] = parser,
            None => {
                self.by_name
                    .insert(parser.name().to_string(), self.parsers.len());
                self.parsers.push(parser);
            }
        }
    }

    /// Adds or replaces (by name) a multiline parser.
    pub fn insert_multiline(&mut self, ml: Arc<MultilineParser>) {
        match self.ml_by_name.get(ml.name()) {
            Some(&i) => self.multiline[i] = ml,
            None => {
                self.ml_by_name
                    .insert(ml.name().to_string(), self.multiline.len());
                self.multiline.push(ml);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_compiles() {
        let (parsers, errors) = Parsers::builtin_checked();
        assert!(errors.is_empty(), "{errors:?}");
        let names: Vec<&str> = parsers.names().collect();
        for n in [
            "docker",
            "cri",
            "crio",
            "json",
            "nginx",
            "apache",
            "apache2",
            "apache_error",
            "syslog-rfc5424",
            "syslog-rfc3164",
            "syslog-rfc3164-local",
            "mongodb",
            "envoy",
            "istio-envoy-proxy",
            "k8s-nginx-ingress",
            "kube-custom",
            "logfmt",
        ] {
            assert!(names.contains(&n), "missing built-in {n}");
        }
        for n in ["docker", "cri", "java", "go", "python", "ruby"] {
            assert!(parsers.multiline(n).is_some(), "missing multiline {n}");
        }
    }

    #[test]
    fn options_are_documented() {
        assert!(ParserOptions::OPTIONS
            .iter()
            .all(|o| !o.doc.trim().is_empty()));
        assert!(MultilineOptions::OPTIONS
            .iter()
            .all(|o| !o.doc.trim().is_empty()));
    }
}
