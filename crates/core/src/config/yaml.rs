//! Fluent Bit's YAML config format, read into the same [`Section`]s as the classic format.
//!
//! The file is parsed with yaml-rust2's event parser into a small tree that remembers line
//! numbers, then mapped onto sections:
//!
//! - `env`: a map of variables, set (with `${VAR}` expanded in their values) before anything
//!   else in the file is expanded, wherever `env` is written;
//! - `includes`: a list of files relative to this file, in either format, whose sections are
//!   inserted where `includes` is written;
//! - `service`: a map, one [`SectionKind::Service`] section;
//! - `pipeline`: a map of `inputs`, `filters` and `outputs`, each a list of maps, one section per
//!   item;
//! - `parsers`, `multiline_parsers`, `customs`: lists of maps, one section per item;
//! - `plugins`: a list of shared-object paths, one [`SectionKind::Plugins`] section with a
//!   `path` entry per item (as the classic `[PLUGINS]` section writes them);
//! - `upstream_servers`: a list of `{name, nodes}`, one [`SectionKind::Upstream`] section per
//!   group followed by a [`SectionKind::Node`] section per node (the classic `[UPSTREAM]` /
//!   `[NODE]` shape);
//! - `extensions`: one [`SectionKind::Extensions`] section holding the whole node as a
//!   [`Tree`] (Fluent Bit 5.1 keeps it for external tools and does not act on it).
//!
//! Inside a section's map:
//! - a scalar is one entry, with its text as written (`on`, `5MB`, `1.5` stay text);
//! - a list of scalars is one entry per item under the same key (repeatable keys such as `add`);
//! - a multiline parser's `rules` (a list of `{state, regex, next_state}` maps) becomes one
//!   `rule` entry per item in the classic form `"state" "regex" "next_state"`, with `"` and `\`
//!   inside each part escaped as `\"` and `\\`;
//! - an input's `processors`, `routes` and `telemetry`, an output's `processors` and the
//!   service's `telemetry` are kept whole as a [`Tree`] in [`Section::nested`], with the line
//!   of every node, for the engine to read and report on;
//! - any other nested map or list is one entry whose value is the JSON text of that node;
//!   plain scalars in it become JSON null, booleans and numbers when they read as such (YAML
//!   1.2 core schema), and strings otherwise.
//!
//! `${VAR}` is expanded in every scalar value (not in keys). Unknown top-level or `pipeline`
//! keys are errors with a suggestion, and every error names the file and line.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use super::classic::{self, IncludeStack};
use super::{ConfigError, Format, Nested, Section, SectionKind, Span, Tree, Vars};

/// Top-level keys, for suggestions.
const TOP_KEYS: &[&str] = &[
    "env",
    "includes",
    "service",
    "pipeline",
    "parsers",
    "multiline_parsers",
    "plugins",
    "customs",
    "upstream_servers",
    "extensions",
];

/// Keys whose values are kept as a [`Tree`] (with lines) for the engine, by section kind:
/// Fluent Bit's structured plugin keys.
fn keeps_tree(kind: SectionKind, key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    match kind {
        SectionKind::Input => matches!(k.as_str(), "processors" | "routes" | "telemetry"),
        SectionKind::Output => k == "processors",
        SectionKind::Service => k == "telemetry",
        _ => false,
    }
}

/// Keys of `pipeline`.
const PIPELINE_KEYS: &[&str] = &["inputs", "filters", "outputs"];

/// Keys of one multiline parser rule.
const RULE_KEYS: &[&str] = &["state", "regex", "next_state"];

/// Reads a YAML config file's text. `path` names the file in spans and is the base for relative
/// `includes`; `vars` receives the `env` section and expands `${VAR}` in values.
pub fn parse(text: &str, path: &Path, vars: &mut Vars) -> Result<Vec<Section>, ConfigError> {
    let mut stack = IncludeStack::new(path);
    parse_nested(text, path, vars, &mut stack)
}

/// A YAML node with the line it starts on.
#[derive(Clone, Debug)]
enum Node {
    Scalar {
        text: String,
        /// Written without quotes or block indicators (so `~`, `true`, `12` may be typed).
        plain: bool,
        line: u32,
    },
    Seq {
        items: Vec<Node>,
        line: u32,
    },
    Map {
        pairs: Vec<(Node, Node)>,
        line: u32,
    },
}

impl Node {
    fn line(&self) -> u32 {
        match self {
            Node::Scalar { line, .. } | Node::Seq { line, .. } | Node::Map { line, .. } => *line,
        }
    }

    /// A plain empty scalar: what YAML gives for `key:` with nothing after it.
    fn is_null(&self) -> bool {
        match self {
            Node::Scalar { text, plain, .. } => {
                *plain && (text.is_empty() || text == "~" || text == "null")
            }
            _ => false,
        }
    }

    fn what(&self) -> &'static str {
        match self {
            Node::Scalar { .. } => "a scalar",
            Node::Seq { .. } => "a list",
            Node::Map { .. } => "a map",
        }
    }
}

/// A container being built from events.
struct Open {
    is_map: bool,
    items: Vec<Node>,
    line: u32,
    anchor: usize,
}

/// Builds [`Node`] trees from parser events.
#[derive(Default)]
struct Builder {
    open: Vec<Open>,
    docs: Vec<Node>,
    anchors: HashMap<usize, Node>,
    /// The line of a document after the first, to report.
    extra_doc_line: Option<u32>,
}

fn line_of(mark: &Marker) -> u32 {
    u32::try_from(mark.line()).unwrap_or(u32::MAX).max(1)
}

impl Builder {
    fn finish(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.open.last_mut() {
            Some(parent) => parent.items.push(node),
            None => {
                if !self.docs.is_empty() && self.extra_doc_line.is_none() {
                    self.extra_doc_line = Some(node.line());
                }
                self.docs.push(node);
            }
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let line = line_of(&mark);
        match ev {
            Event::Scalar(text, style, anchor, _) => {
                let plain = style == TScalarStyle::Plain;
                self.finish(Node::Scalar { text, plain, line }, anchor);
            }
            Event::SequenceStart(anchor, _) => self.open.push(Open {
                is_map: false,
                items: Vec::new(),
                line,
                anchor,
            }),
            Event::MappingStart(anchor, _) => self.open.push(Open {
                is_map: true,
                items: Vec::new(),
                line,
                anchor,
            }),
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some(open) = self.open.pop() {
                    let node = if open.is_map {
                        let mut pairs = Vec::with_capacity(open.items.len() / 2);
                        let mut it = open.items.into_iter();
                        while let (Some(k), Some(v)) = (it.next(), it.next()) {
                            pairs.push((k, v));
                        }
                        Node::Map {
                            pairs,
                            line: open.line,
                        }
                    } else {
                        Node::Seq {
                            items: open.items,
                            line: open.line,
                        }
                    };
                    self.finish(node, open.anchor);
                }
            }
            Event::Alias(id) => {
                // The parser rejects unknown anchors, so the lookup only misses on a bug.
                let node = self.anchors.get(&id).cloned().unwrap_or(Node::Scalar {
                    text: String::new(),
                    plain: true,
                    line,
                });
                self.finish(node, 0);
            }
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => {}
        }
    }
}

/// Parses YAML text into its documents.
fn load(text: &str, file: &Arc<Path>) -> Result<Option<Node>, ConfigError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut builder, true).map_err(|e| {
        let mark = e.marker();
        ConfigError::at(
            &Span::new(file, line_of(mark)),
            format!(
                "YAML syntax error: {} (column {})",
                e.info(),
                mark.col() + 1
            ),
        )
    })?;
    if let Some(line) = builder.extra_doc_line {
        return Err(ConfigError::at(
            &Span::new(file, line),
            "only one YAML document is allowed in a config file",
        ));
    }
    Ok(builder.docs.into_iter().next())
}

/// The state of reading one file.
struct Reader<'a> {
    file: Arc<Path>,
    path: &'a Path,
    vars: &'a mut Vars,
    stack: &'a mut IncludeStack,
    out: Vec<Section>,
}

/// Parses one YAML file's text with an include stack already holding it.
pub(super) fn parse_nested(
    text: &str,
    path: &Path,
    vars: &mut Vars,
    stack: &mut IncludeStack,
) -> Result<Vec<Section>, ConfigError> {
    let file = super::file_arc(path);
    let Some(doc) = load(text, &file)? else {
        return Ok(Vec::new());
    };
    let pairs = match doc {
        Node::Map { pairs, .. } => pairs,
        ref n if n.is_null() => return Ok(Vec::new()),
        other => {
            return Err(ConfigError::at(
                &Span::new(&file, other.line()),
                format!(
                    "the top level must be a map (of service, pipeline, ...), not {}",
                    other.what()
                ),
            ))
        }
    };
    let mut reader = Reader {
        file,
        path,
        vars,
        stack,
        out: Vec::new(),
    };
    // `env` first, so that every value can use its variables.
    for (k, v) in &pairs {
        let key = reader.key_text(k)?;
        if key.eq_ignore_ascii_case("env") {
            reader.env(k, v)?;
        }
    }
    for (k, v) in &pairs {
        reader.top(k, v)?;
    }
    Ok(reader.out)
}

impl Reader<'_> {
    fn span(&self, line: u32) -> Span {
        Span::new(&self.file, line)
    }

    /// The text of a key, which must be a scalar.
    fn key_text<'n>(&self, k: &'n Node) -> Result<&'n str, ConfigError> {
        match k {
            Node::Scalar { text, .. } => Ok(text),
            other => Err(ConfigError::at(
                &self.span(other.line()),
                format!("a key must be a plain name, not {}", other.what()),
            )),
        }
    }

    fn top(&mut self, k: &Node, v: &Node) -> Result<(), ConfigError> {
        let key = self.key_text(k)?;
        let span = self.span(k.line());
        match key.to_ascii_lowercase().as_str() {
            "env" => Ok(()),
            "includes" => self.includes(key, &span, v),
            "service" => {
                let mut section = Section::new(SectionKind::Service, span.clone());
                match v {
                    Node::Map { pairs, .. } => self.entries(&mut section, pairs)?,
                    n if n.is_null() => {}
                    other => return Err(expected(&span, key, "a map", other)),
                }
                self.out.push(section);
                Ok(())
            }
            "pipeline" => {
                let pairs = match v {
                    Node::Map { pairs, .. } => pairs,
                    n if n.is_null() => return Ok(()),
                    other => {
                        return Err(expected(
                            &span,
                            key,
                            "a map of inputs, filters and outputs",
                            other,
                        ))
                    }
                };
                for (pk, pv) in pairs {
                    let pkey = self.key_text(pk)?;
                    let pspan = self.span(pk.line());
                    let kind = match pkey.to_ascii_lowercase().as_str() {
                        "inputs" => SectionKind::Input,
                        "filters" => SectionKind::Filter,
                        "outputs" => SectionKind::Output,
                        _ => {
                            return Err(ConfigError::unknown_key(
                                &pspan,
                                pkey,
                                "pipeline",
                                PIPELINE_KEYS.iter().copied(),
                            ))
                        }
                    };
                    self.list_of_maps(kind, pkey, &pspan, pv)?;
                }
                Ok(())
            }
            "parsers" => self.list_of_maps(SectionKind::Parser, key, &span, v),
            "multiline_parsers" => self.list_of_maps(SectionKind::MultilineParser, key, &span, v),
            "customs" => self.list_of_maps(SectionKind::Custom, key, &span, v),
            "plugins" => self.plugins(key, &span, v),
            "upstream_servers" => self.upstream_servers(key, &span, v),
            "extensions" => {
                let mut section = Section::new(SectionKind::Extensions, span.clone());
                section.nested.push(Nested {
                    key: key.to_string(),
                    span,
                    value: self.to_tree(v),
                });
                self.out.push(section);
                Ok(())
            }
            _ => Err(ConfigError::unknown_key(
                &span,
                key,
                "the top level",
                TOP_KEYS.iter().copied(),
            )),
        }
    }

    fn env(&mut self, k: &Node, v: &Node) -> Result<(), ConfigError> {
        let key = self.key_text(k)?;
        let span = self.span(k.line());
        let pairs = match v {
            Node::Map { pairs, .. } => pairs,
            n if n.is_null() => return Ok(()),
            other => return Err(expected(&span, key, "a map of variables", other)),
        };
        for (name, value) in pairs {
            let name_text = self.key_text(name)?;
            let value = match value {
                Node::Scalar { text, .. } => self.vars.expand(text),
                other => {
                    return Err(expected(
                        &self.span(name.line()),
                        name_text,
                        "a scalar value",
                        other,
                    ))
                }
            };
            self.vars.set(name_text, &value);
        }
        Ok(())
    }

    fn includes(&mut self, key: &str, span: &Span, v: &Node) -> Result<(), ConfigError> {
        let items = match v {
            Node::Seq { items, .. } => items,
            n if n.is_null() => return Ok(()),
            other => return Err(expected(span, key, "a list of files", other)),
        };
        for item in items {
            let item_span = self.span(item.line());
            let target = match item {
                Node::Scalar { text, .. } if !text.trim().is_empty() => text.trim(),
                other => return Err(expected(&item_span, key, "a file name", other)),
            };
            let file = classic::resolve(self.path, target);
            let sections = self.stack.include(
                &file,
                &item_span,
                key,
                self.vars,
                |text, path, vars, stack| match Format::detect(path, text) {
                    Format::Classic => classic::parse_nested(text, path, vars, stack),
                    Format::Yaml => parse_nested(text, path, vars, stack),
                },
            )?;
            self.out.extend(sections);
        }
        Ok(())
    }

    fn plugins(&mut self, key: &str, span: &Span, v: &Node) -> Result<(), ConfigError> {
        let items = match v {
            Node::Seq { items, .. } => items,
            n if n.is_null() => return Ok(()),
            other => return Err(expected(span, key, "a list of plugin paths", other)),
        };
        let mut section = Section::new(SectionKind::Plugins, span.clone());
        for item in items {
            let item_span = self.span(item.line());
            match item {
                Node::Scalar { text, .. } if !item.is_null() => {
                    section.push("path", self.vars.expand(text), item_span)
                }
                other => return Err(expected(&item_span, key, "a plugin path", other)),
            }
        }
        self.out.push(section);
        Ok(())
    }

    /// `upstream_servers`: a list of `{name, nodes: [...]}`, one [`SectionKind::Upstream`]
    /// section (its `name`) followed by one [`SectionKind::Node`] section per node, as the
    /// classic `[UPSTREAM]` and `[NODE]` sections write them.
    fn upstream_servers(&mut self, key: &str, span: &Span, v: &Node) -> Result<(), ConfigError> {
        let items = match v {
            Node::Seq { items, .. } => items,
            n if n.is_null() => return Ok(()),
            other => return Err(expected(span, key, "a list of upstream groups", other)),
        };
        for item in items {
            let item_span = self.span(item.line());
            let Node::Map { pairs, .. } = item else {
                return Err(expected(&item_span, key, "a map for each group", item));
            };
            let mut upstream = Section::new(SectionKind::Upstream, item_span.clone());
            let mut nodes = None;
            let mut scalars = Vec::new();
            for (k, v) in pairs {
                if self.key_text(k)?.eq_ignore_ascii_case("nodes") {
                    nodes = Some((k, v));
                } else {
                    scalars.push((k.clone(), v.clone()));
                }
            }
            self.entries(&mut upstream, &scalars)?;
            self.out.push(upstream);
            if let Some((k, v)) = nodes {
                let nspan = self.span(k.line());
                self.list_of_maps(SectionKind::Node, "nodes", &nspan, v)?;
            }
        }
        Ok(())
    }

    /// `inputs:`, `parsers:` and the like: one section per map in the list.
    fn list_of_maps(
        &mut self,
        kind: SectionKind,
        key: &str,
        span: &Span,
        v: &Node,
    ) -> Result<(), ConfigError> {
        let items = match v {
            Node::Seq { items, .. } => items,
            n if n.is_null() => return Ok(()),
            other => return Err(expected(span, key, "a list of maps", other)),
        };
        for item in items {
            let item_span = self.span(item.line());
            let Node::Map { pairs, .. } = item else {
                return Err(expected(&item_span, key, "a map for each item", item));
            };
            let mut section = Section::new(kind, item_span);
            self.entries(&mut section, pairs)?;
            self.out.push(section);
        }
        Ok(())
    }

    /// Turns one plugin map into entries; see the module docs.
    fn entries(
        &mut self,
        section: &mut Section,
        pairs: &[(Node, Node)],
    ) -> Result<(), ConfigError> {
        for (k, v) in pairs {
            let key = self.key_text(k)?;
            let span = self.span(k.line());
            if keeps_tree(section.kind, key) {
                section.nested.push(Nested {
                    key: key.to_string(),
                    span,
                    value: self.to_tree(v),
                });
                continue;
            }
            match v {
                Node::Scalar { text, plain, .. } => {
                    if *plain && text.is_empty() {
                        return Err(ConfigError::key(&span, key, "each key must have a value"));
                    }
                    section.push(key, self.vars.expand(text), span);
                }
                Node::Seq { items, .. }
                    if section.kind == SectionKind::MultilineParser
                        && key.eq_ignore_ascii_case("rules") =>
                {
                    for item in items {
                        let rule = self.rule(item)?;
                        section.push("rule", rule, self.span(item.line()));
                    }
                }
                Node::Seq { items, .. }
                    if items.iter().all(|i| matches!(i, Node::Scalar { .. })) =>
                {
                    for item in items {
                        let item_span = self.span(item.line());
                        if let Node::Scalar { text, plain, .. } = item {
                            if *plain && text.is_empty() {
                                return Err(ConfigError::key(
                                    &item_span,
                                    key,
                                    "a list item has no value",
                                ));
                            }
                            section.push(key, self.vars.expand(text), item_span);
                        }
                    }
                }
                // Any other nested node (e.g. `processors`) is kept whole as JSON text, for the
                // plugin that reads it.
                nested => {
                    let json = self.to_json(nested);
                    section.push(key, json.to_string(), span);
                }
            }
        }
        Ok(())
    }

    /// One multiline parser rule `{state, regex, next_state}` in the classic quoted form.
    fn rule(&self, item: &Node) -> Result<String, ConfigError> {
        let span = self.span(item.line());
        let Node::Map { pairs, .. } = item else {
            return Err(expected(
                &span,
                "rules",
                "a map of state, regex and next_state",
                item,
            ));
        };
        let mut parts: [Option<String>; 3] = [None, None, None];
        for (k, v) in pairs {
            let key = self.key_text(k)?;
            let kspan = self.span(k.line());
            let Some(idx) = RULE_KEYS.iter().position(|r| r.eq_ignore_ascii_case(key)) else {
                return Err(ConfigError::unknown_key(
                    &kspan,
                    key,
                    "a multiline rule",
                    RULE_KEYS.iter().copied(),
                ));
            };
            match v {
                Node::Scalar { text, .. } if !v.is_null() => {
                    parts[idx] = Some(self.vars.expand(text));
                }
                other => return Err(expected(&kspan, key, "a text value", other)),
            }
        }
        let mut quoted = Vec::with_capacity(3);
        for (part, name) in parts.iter().zip(RULE_KEYS) {
            match part {
                Some(p) => quoted.push(quote(p)),
                None => {
                    return Err(ConfigError::at(
                        &span,
                        format!(
                            "rules: a rule needs state, regex and next_state; '{name}' is missing"
                        ),
                    ))
                }
            }
        }
        Ok(quoted.join(" "))
    }

    /// A nested node as a [`Tree`], with `${VAR}` expanded in scalars.
    fn to_tree(&self, node: &Node) -> Tree {
        let span = self.span(node.line());
        match node {
            Node::Scalar { text, plain, .. } => Tree::Scalar {
                text: self.vars.expand(text),
                plain: *plain,
                span,
            },
            Node::Seq { items, .. } => Tree::Seq {
                items: items.iter().map(|i| self.to_tree(i)).collect(),
                span,
            },
            Node::Map { pairs, .. } => Tree::Map {
                pairs: pairs
                    .iter()
                    .map(|(k, v)| {
                        let key = match k {
                            Node::Scalar { text, .. } => text.clone(),
                            other => self.to_json(other).to_string(),
                        };
                        (key, self.span(k.line()), self.to_tree(v))
                    })
                    .collect(),
                span,
            },
        }
    }

    /// A nested node as JSON; see the module docs for how scalars are typed.
    fn to_json(&self, node: &Node) -> serde_json::Value {
        use serde_json::Value;
        match node {
            Node::Scalar { text, plain, .. } => {
                let text = self.vars.expand(text);
                if *plain {
                    typed_scalar(&text)
                } else {
                    Value::String(text)
                }
            }
            Node::Seq { items, .. } => {
                Value::Array(items.iter().map(|i| self.to_json(i)).collect())
            }
            Node::Map { pairs, .. } => {
                let mut map = serde_json::Map::new();
                for (k, v) in pairs {
                    let key = match k {
                        Node::Scalar { text, .. } => text.clone(),
                        other => self.to_json(other).to_string(),
                    };
                    map.insert(key, self.to_json(v));
                }
                Value::Object(map)
            }
        }
    }
}

/// A plain scalar typed by the YAML 1.2 core schema.
fn typed_scalar(text: &str) -> serde_json::Value {
    use serde_json::Value;
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    if let Ok(i) = text.parse::<i64>() {
        return Value::from(i);
    }
    let looks_numeric = text
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'))
        && text.chars().any(|c| c.is_ascii_digit());
    if looks_numeric {
        if let Some(n) = text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
        {
            return Value::Number(n);
        }
    }
    Value::String(text.to_string())
}

/// Quotes one part of a classic `rule` value.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// "`key`: expected X, found Y".
fn expected(span: &Span, key: &str, what: &str, found: &Node) -> ConfigError {
    ConfigError::key(
        span,
        key,
        format!("expected {what}, found {}", found.what()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<Vec<Section>, ConfigError> {
        parse(text, Path::new("/cfg/fb.yaml"), &mut Vars::empty())
    }

    fn err(text: &str) -> String {
        match read(text) {
            Ok(s) => panic!("expected an error, got {s:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn kv(s: &Section) -> Vec<(&str, &str)> {
        s.entries
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_str()))
            .collect()
    }

    #[test]
    fn maps_pipeline_to_sections_with_lines() {
        let text = "\
service:
  flush: 1
  http_server: on
pipeline:
  inputs:
    - name: dummy
      tag: a.b
      rate: 1.5
  filters:
    - name: modify
      match: '*'
      add:
        - k1 v1
        - k2 v2
  outputs:
    - name: stdout
      match: \"*\"
";
        let s = read(text).unwrap();
        let kinds: Vec<_> = s.iter().map(|s| s.kind).collect();
        assert_eq!(
            kinds,
            [
                SectionKind::Service,
                SectionKind::Input,
                SectionKind::Filter,
                SectionKind::Output
            ]
        );
        assert_eq!(s[0].span.line, 1);
        assert_eq!(kv(&s[0]), [("flush", "1"), ("http_server", "on")]);
        assert_eq!(s[0].entries[1].span.line, 3);
        assert_eq!(s[1].span.line, 6);
        assert_eq!(
            kv(&s[1]),
            [("name", "dummy"), ("tag", "a.b"), ("rate", "1.5")]
        );
        assert_eq!(
            kv(&s[2]),
            [
                ("name", "modify"),
                ("match", "*"),
                ("add", "k1 v1"),
                ("add", "k2 v2")
            ]
        );
        assert_eq!(s[2].entries[3].span.line, 14);
        assert_eq!(kv(&s[3]), [("name", "stdout"), ("match", "*")]);
    }

    #[test]
    fn rules_become_classic_rule_entries() {
        let text = r#"
multiline_parsers:
  - name: ml
    type: regex
    rules:
      - state: start_state
        regex: '/^\d+ "x"/'
        next_state: cont
      - {state: cont, regex: '/^\s+at/', next_state: cont}
"#;
        let s = read(text).unwrap();
        assert_eq!(s[0].kind, SectionKind::MultilineParser);
        assert_eq!(
            kv(&s[0])[2..],
            [
                ("rule", r#""start_state" "/^\\d+ \"x\"/" "cont""#),
                ("rule", r#""cont" "/^\\s+at/" "cont""#)
            ]
        );
        assert_eq!(s[0].entries[2].span.line, 6);
        assert!(err(
            "multiline_parsers:\n  - name: m\n    rules:\n      - state: a\n        regex: b\n"
        )
        .starts_with("/cfg/fb.yaml:4: rules: a rule needs"));
    }

    #[test]
    fn nested_nodes_become_json() {
        let text = "\
pipeline:
  inputs:
    - name: dummy
      other:
        logs:
          - name: content_modifier
            value: 5
            on: true
            q: 'true'
";
        let s = read(text).unwrap();
        let e = s[0].get("other").unwrap();
        assert_eq!(e.span.line, 4);
        assert_eq!(
            e.value,
            r#"{"logs":[{"name":"content_modifier","value":5,"on":true,"q":"true"}]}"#
        );
    }

    #[test]
    fn processors_routes_and_telemetry_keep_their_lines() {
        let text = "\
service:
  telemetry:
    metrics: {}
pipeline:
  inputs:
    - name: dummy
      processors:
        logs:
          - name: content_modifier
            action: insert
            value: ${V}
      routes:
        logs:
          - name: r
  outputs:
    - name: stdout
      processors:
        logs: []
upstream_servers:
  - name: up
    nodes:
      - name: n1
        host: 127.0.0.1
extensions:
  tool: {a: 1}
";
        let mut vars = Vars::empty();
        vars.set("V", "x");
        let s = parse(text, Path::new("/cfg/fb.yaml"), &mut vars).unwrap();
        assert_eq!(s[0].nested("telemetry").unwrap().span.line, 2);
        assert!(s[1].entries.iter().all(|e| e.key == "name"));
        let p = &s[1].nested("processors").unwrap().value;
        let (lspan, logs) = p.get("logs").unwrap();
        assert_eq!(lspan.line, 8);
        let Tree::Seq { items, .. } = logs else {
            panic!("{logs:?}")
        };
        assert_eq!(items[0].span().line, 9);
        let (vspan, v) = items[0].get("value").unwrap();
        assert_eq!((vspan.line, v.as_str()), (11, Some("x")));
        assert_eq!(s[1].nested("routes").unwrap().span.line, 12);
        assert!(s[2].nested("processors").is_some());
        assert_eq!(s[3].kind, SectionKind::Upstream);
        assert_eq!(kv(&s[3]), [("name", "up")]);
        assert_eq!(s[4].kind, SectionKind::Node);
        assert_eq!(kv(&s[4]), [("name", "n1"), ("host", "127.0.0.1")]);
        assert_eq!(s[5].kind, SectionKind::Extensions);
        assert_eq!(s[5].span.line, 24);
    }

    #[test]
    fn env_applies_everywhere_and_plugins_are_paths() {
        let mut vars = Vars::empty();
        vars.set("OUTER", "o");
        let text = "\
pipeline:
  inputs:
    - name: tail
      path: ${DIR}/*.log
env:
  DIR: /data/${OUTER}
plugins:
  - /opt/${OUTER}.so
";
        let s = parse(text, Path::new("x.yaml"), &mut vars).unwrap();
        assert_eq!(s[0].value("path"), Some("/data/o/*.log"));
        assert_eq!(s[1].kind, SectionKind::Plugins);
        assert_eq!(kv(&s[1]), [("path", "/opt/o.so")]);
    }

    #[test]
    fn reports_errors_with_file_line_and_key() {
        assert_eq!(
            err("service:\n  flush: 1\npipelines:\n  inputs: []\n"),
            "/cfg/fb.yaml:3: pipelines: unknown key for the top level (did you mean 'pipeline'?)"
        );
        assert_eq!(
            err("pipeline:\n  input:\n    - name: x\n"),
            "/cfg/fb.yaml:2: input: unknown key for pipeline (did you mean 'inputs'?)"
        );
        assert!(err("pipeline: 3\n").starts_with("/cfg/fb.yaml:1: pipeline: expected a map"));
        assert!(err("pipeline:\n  inputs:\n    name: x\n")
            .starts_with("/cfg/fb.yaml:2: inputs: expected a list of maps, found a map"));
        assert!(err("pipeline:\n  inputs:\n    - tail\n")
            .starts_with("/cfg/fb.yaml:3: inputs: expected a map for each item"));
        assert!(err("service:\n  flush:\n  grace: 5\n")
            .starts_with("/cfg/fb.yaml:2: flush: each key must have a value"));
        assert!(err("service:\n  flush: [1\n").starts_with("/cfg/fb.yaml:3: YAML syntax error"));
        assert!(err("a: b\n  c: d\n").starts_with("/cfg/fb.yaml:2: YAML syntax error"));
        assert!(err("- a\n- b\n").starts_with("/cfg/fb.yaml:1: the top level must be a map"));
        assert!(err("service: {}\n---\nservice: {}\n")
            .starts_with("/cfg/fb.yaml:3: only one YAML document"));
    }

    #[test]
    fn empty_documents_have_no_sections() {
        assert!(read("").unwrap().is_empty());
        assert!(read("# nothing\n").unwrap().is_empty());
        assert!(read("pipeline:\n").unwrap().is_empty());
    }

    #[test]
    fn anchors_and_aliases_are_followed() {
        let text = "\
pipeline:
  outputs:
    - &out
      name: stdout
      match: a
    - *out
";
        let s = read(text).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(kv(&s[1]), [("name", "stdout"), ("match", "a")]);
    }

    #[test]
    fn typed_scalars_follow_the_core_schema() {
        assert_eq!(typed_scalar("12"), serde_json::json!(12));
        assert_eq!(typed_scalar("1.5"), serde_json::json!(1.5));
        assert_eq!(typed_scalar("on"), serde_json::json!("on"));
        assert_eq!(typed_scalar("~"), serde_json::Value::Null);
        assert_eq!(typed_scalar("e"), serde_json::json!("e"));
        assert_eq!(quote(r#"a"b\c"#), r#""a\"b\\c""#);
    }
}
