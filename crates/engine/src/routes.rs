//! YAML `routes` of an input: conditional routing (Fluent Bit 4.2 and later).
//!
//! ```yaml
//! pipeline:
//!   inputs:
//!     - name: tail
//!       tag: app.logs
//!       routes:
//!         logs:
//!           - name: errors
//!             condition:
//!               op: or
//!               rules:
//!                 - {field: $level, op: eq, value: error}
//!             to:
//!               outputs: [error_destination]
//!           - name: rest
//!             condition: {default: true}
//!             to:
//!               outputs: [default_destination]
//! ```
//!
//! What Fluent Bit 5.1 does (`flb_input_log.c`, `flb_router_config.c`), and so what this does:
//! - After the input's processors, every record is checked against each route with a
//!   condition, in order: it goes to the outputs of *every* route whose condition it meets.
//!   Records that meet none go to the `default: true` routes; records that meet none and have
//!   no default route are dropped.
//! - A route's records travel as their own chunk tagged with the **route's name** (Fluent Bit
//!   writes them under that tag): `[FILTER]`s see that tag, and outputs receive it.
//! - `per_record_routing: true` without a condition makes a route that takes every record that
//!   way.
//! - A route with neither a condition nor `per_record_routing` is a direct route: when the
//!   input also has conditional routes, the records (under the input's own tag) go to the
//!   direct routes' outputs only; when it has direct routes only, to those of them whose
//!   `Match` also accepts the tag.
//! - An input with `routes` sends nothing by tag matching beyond that; other inputs are routed
//!   by `Match` as before. An output that is only reached by routes needs no `Match`.
//! - `to.outputs` names outputs by `alias`, instance name (`stdout.1`) or plugin name, the
//!   first output in config order that has it. An item may be `{name, fallback}`: the
//!   fallback is used when the name matches no output.
//! - `metrics` and `traces` routes are accepted and noted as not applied (logferry carries
//!   logs only); `any` routes logs.
//!
//! Deliberate differences: an output name that matches no output (and no fallback) is a
//! config error (Fluent Bit warns and the route's records are lost); two routes may name the
//! same output (Fluent Bit connects an output to the first route naming it only, and fails to
//! append the other route's records); route-level `processors` are a config error, not yet
//! available.

use logferry_core::config::{ConfigError, Nested, Span, Tree};
use logferry_core::{Record, Tag};

use crate::condition::{known_keys, scalar, Condition};

/// The signals a `routes` block may hold.
const SIGNALS: &[&str] = &["logs", "metrics", "traces", "any"];
/// The keys of one route.
const ROUTE_KEYS: &[&str] = &[
    "name",
    "condition",
    "per_record_routing",
    "processors",
    "to",
];

/// Which records a route takes.
#[derive(Debug)]
enum Takes {
    /// A direct route: no condition.
    Direct,
    /// `per_record_routing` without a condition: every record, as a routed chunk.
    All,
    /// `condition: {default: true}`.
    Default,
    Rules(Condition),
}

/// An output a route names.
#[derive(Debug)]
struct Target {
    name: String,
    fallback: Option<String>,
    span: Span,
}

#[derive(Debug)]
struct RouteSpec {
    name: String,
    takes: Takes,
    targets: Vec<Target>,
}

/// An input's routes as written, before outputs are known.
#[derive(Debug)]
pub(crate) struct RouteSpecs {
    routes: Vec<RouteSpec>,
}

/// A route with a condition (or a default route), resolved to output indices.
#[derive(Debug)]
pub(crate) struct CondRoute {
    pub tag: Tag,
    /// `None`: every record.
    condition: Option<Condition>,
    pub outputs: Vec<usize>,
}

/// An input's routes, resolved.
#[derive(Debug, Default)]
pub(crate) struct InputRoutes {
    pub conditional: Vec<CondRoute>,
    pub defaults: Vec<CondRoute>,
    /// Outputs of the direct routes (empty when there are none).
    pub direct: Vec<usize>,
}

impl InputRoutes {
    /// Whether records are split per route.
    pub fn splits(&self) -> bool {
        !self.conditional.is_empty() || !self.defaults.is_empty()
    }

    /// Splits `records` by route: for each route (conditional ones first, then defaults) that
    /// takes any, its index in [`InputRoutes::route`] order and its records. A record taken by
    /// several routes is copied.
    pub fn split(&self, records: Vec<Record>) -> Vec<(usize, Vec<Record>)> {
        let n = self.conditional.len() + self.defaults.len();
        let mut takers: Vec<Vec<usize>> = Vec::with_capacity(records.len());
        for r in &records {
            let mut t: Vec<usize> = self
                .conditional
                .iter()
                .enumerate()
                .filter(|(_, c)| c.condition.as_ref().is_none_or(|c| c.matches(r)))
                .map(|(i, _)| i)
                .collect();
            if t.is_empty() {
                t.extend(
                    self.defaults
                        .iter()
                        .enumerate()
                        .filter(|(_, c)| c.condition.as_ref().is_none_or(|c| c.matches(r)))
                        .map(|(i, _)| self.conditional.len() + i),
                );
            }
            takers.push(t);
        }
        let mut out: Vec<Vec<Record>> = (0..n).map(|_| Vec::new()).collect();
        for (r, t) in records.into_iter().zip(takers) {
            if let Some((last, rest)) = t.split_last() {
                for i in rest {
                    out[*i].push(r.clone());
                }
                out[*last].push(r);
            }
        }
        out.into_iter()
            .enumerate()
            .filter(|(_, v)| !v.is_empty())
            .collect()
    }

    /// A route by its [`InputRoutes::split`] index.
    pub fn route(&self, i: usize) -> Option<&CondRoute> {
        if i < self.conditional.len() {
            self.conditional.get(i)
        } else {
            self.defaults.get(i - self.conditional.len())
        }
    }
}

fn err(span: &Span, key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::key(span, key, reason)
}

impl RouteSpecs {
    /// Reads an input's `routes` node.
    pub fn parse(node: &Nested, notes: &mut Vec<ConfigError>) -> Result<RouteSpecs, ConfigError> {
        let v = &node.value;
        let Tree::Map { pairs, .. } = v else {
            return Err(err(
                &node.span,
                &node.key,
                format!(
                    "expected a map of logs, metrics or traces, found {}",
                    v.what()
                ),
            ));
        };
        known_keys(v, "routes", SIGNALS)?;
        let mut routes: Vec<RouteSpec> = Vec::new();
        for (signal, span, list) in pairs {
            let s = signal.to_ascii_lowercase();
            if s == "metrics" || s == "traces" {
                notes.push(err(
                    span,
                    signal,
                    format!("accepted but not applied: logferry carries logs only, so there are no {s} to route"),
                ));
                continue;
            }
            let items: Vec<&Tree> = match list {
                Tree::Seq { items, .. } if !items.is_empty() => items.iter().collect(),
                m @ Tree::Map { .. } => vec![m],
                other => {
                    return Err(err(
                        span,
                        signal,
                        format!(
                            "expected a non-empty list of routes, found {}",
                            other.what()
                        ),
                    ))
                }
            };
            for item in items {
                let r = RouteSpec::parse(item, notes)?;
                if routes.iter().any(|o| o.name == r.name) {
                    return Err(err(
                        item.span(),
                        "name",
                        format!("route '{}' is defined twice on this input", r.name),
                    ));
                }
                routes.push(r);
            }
        }
        Ok(RouteSpecs { routes })
    }

    /// Resolves output names: `find` gives the index of the output a name means.
    pub fn resolve(self, find: impl Fn(&str) -> Option<usize>) -> Result<InputRoutes, ConfigError> {
        let mut out = InputRoutes::default();
        for r in self.routes {
            let mut outputs = Vec::with_capacity(r.targets.len());
            for t in &r.targets {
                let found = find(&t.name).or_else(|| t.fallback.as_deref().and_then(&find));
                match found {
                    Some(i) => {
                        if !outputs.contains(&i) {
                            outputs.push(i);
                        }
                    }
                    None => {
                        return Err(err(
                            &t.span,
                            "outputs",
                            format!(
                                "route '{}' names output '{}', which matches no output's alias, name or plugin{}",
                                r.name,
                                t.name,
                                t.fallback
                                    .as_deref()
                                    .map(|f| format!(" (nor does its fallback '{f}')"))
                                    .unwrap_or_default()
                            ),
                        ))
                    }
                }
            }
            let tag: Tag = Tag::from(r.name.as_str());
            match r.takes {
                Takes::Direct => {
                    for i in outputs {
                        if !out.direct.contains(&i) {
                            out.direct.push(i);
                        }
                    }
                }
                Takes::All => out.conditional.push(CondRoute {
                    tag,
                    condition: None,
                    outputs,
                }),
                Takes::Rules(c) => out.conditional.push(CondRoute {
                    tag,
                    condition: Some(c),
                    outputs,
                }),
                Takes::Default => out.defaults.push(CondRoute {
                    tag,
                    condition: None,
                    outputs,
                }),
            }
        }
        Ok(out)
    }

    /// The output names every route refers to (with fallbacks), for "is this output used".
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.routes.iter().flat_map(|r| {
            r.targets
                .iter()
                .flat_map(|t| std::iter::once(t.name.as_str()).chain(t.fallback.as_deref()))
        })
    }
}

impl RouteSpec {
    fn parse(item: &Tree, notes: &mut Vec<ConfigError>) -> Result<RouteSpec, ConfigError> {
        let span = item.span();
        if !matches!(item, Tree::Map { .. }) {
            return Err(err(
                span,
                "logs",
                format!("expected a map for each route, found {}", item.what()),
            ));
        }
        known_keys(item, "a route", ROUTE_KEYS)?;
        let name = match item.get("name") {
            Some((s, t)) => scalar(s, "name", t)?.trim().to_string(),
            None => String::new(),
        };
        if name.is_empty() {
            return Err(err(span, "name", "a route needs a name"));
        }
        if let Some((s, _)) = item.get("processors") {
            return Err(err(
                s,
                "processors",
                "route processors are not yet available in logferry; put them on the input or on the route's outputs",
            ));
        }
        let per_record = match item.get("per_record_routing") {
            None => false,
            Some((s, t)) => {
                logferry_core::config::units::parse_bool(scalar(s, "per_record_routing", t)?)
                    .map_err(|r| err(s, "per_record_routing", r))?
            }
        };
        let takes = match item.get("condition") {
            None if per_record => Takes::All,
            None => Takes::Direct,
            Some((cs, ct)) => match ct.get("default") {
                Some((ds, dt)) => {
                    let d = logferry_core::config::units::parse_bool(scalar(ds, "default", dt)?)
                        .map_err(|r| err(ds, "default", r))?;
                    match (d, ct.get("rules")) {
                        (true, None) => {
                            known_keys(ct, "a condition", &["default", "op"])?;
                            Takes::Default
                        }
                        (true, Some((rs, _))) => {
                            return Err(err(
                                rs,
                                "rules",
                                "a default route takes the records no other route takes; it has no rules",
                            ))
                        }
                        (false, _) => {
                            Takes::Rules(Condition::parse(cs, ct, &["default"], notes)?)
                        }
                    }
                }
                None => Takes::Rules(Condition::parse(cs, ct, &[], notes)?),
            },
        };
        let Some((tspan, to)) = item.get("to") else {
            return Err(err(
                span,
                "to",
                format!("route '{name}' needs 'to: {{outputs: [...]}}'"),
            ));
        };
        let outputs = match to {
            Tree::Map { .. } => {
                known_keys(to, "to", &["outputs"])?;
                match to.get("outputs") {
                    Some((_, o)) => o,
                    None => return Err(err(tspan, "to", "expected 'outputs'")),
                }
            }
            other => other,
        };
        let items: Vec<&Tree> = match outputs {
            Tree::Seq { items, .. } => items.iter().collect(),
            other => vec![other],
        };
        let mut targets = Vec::new();
        for o in items {
            let t = match o {
                Tree::Scalar { text, span, .. } if !text.trim().is_empty() => Target {
                    name: text.trim().to_string(),
                    fallback: None,
                    span: span.clone(),
                },
                m @ Tree::Map { span, .. } => {
                    known_keys(m, "a route output", &["name", "fallback"])?;
                    let name = match m.get("name") {
                        Some((s, t)) => scalar(s, "name", t)?.trim().to_string(),
                        None => return Err(err(span, "outputs", "an output needs a name")),
                    };
                    let fallback = match m.get("fallback") {
                        Some((s, t)) => Some(scalar(s, "fallback", t)?.trim().to_string()),
                        None => None,
                    };
                    Target {
                        name,
                        fallback,
                        span: span.clone(),
                    }
                }
                other => {
                    return Err(err(
                        other.span(),
                        "outputs",
                        format!("expected an output name, found {}", other.what()),
                    ))
                }
            };
            targets.push(t);
        }
        if targets.is_empty() {
            return Err(err(tspan, "outputs", "a route needs at least one output"));
        }
        Ok(RouteSpec {
            name,
            takes,
            targets,
        })
    }
}
