//! YAML `processors` of inputs and outputs (Fluent Bit's processors):
//!
//! ```yaml
//! pipeline:
//!   inputs:
//!     - name: tail
//!       processors:
//!         logs:
//!           - name: content_modifier   # a processor
//!             action: insert
//!             key: color
//!             value: blue
//!           - name: grep               # or any filter
//!             regex: log aa
//!             condition: {op: and, rules: [{field: $level, op: eq, value: debug}]}
//! ```
//!
//! - Every filter logferry has can be a processor, plus the processors of [`PROCESSORS`]
//!   (`content_modifier`). A processor takes the same keys as the filter (validated the same
//!   way), without `Match`: it applies to every record of its input or output.
//! - Input processors run, in the order written, on the records their input produces, before
//!   routing and the pipeline's `[FILTER]`s. Output processors run on the records routed to
//!   that output only, just before they are flushed (other outputs get them unchanged).
//! - `condition` (see [`crate::condition`]): the processor runs on the records that meet it;
//!   the others pass by unchanged, in place (Fluent Bit 5.1 does this for filters used as
//!   processors too).
//! - Only `logs` are processed; `metrics`, `traces` and `profiles` are accepted and noted as not
//!   applied (logferry carries logs only).
//! - Filters that hold records back (`multiline`) keep them across chunks on inputs, as
//!   `[FILTER]`s do; on outputs, what they hold is let go at the end of each batch, so a
//!   message never waits for the next batch of that output.

pub mod processor_content_modifier;

use std::sync::Arc;

use logferry_core::config::{suggest, ConfigError, Nested, Section, SectionKind, Tree};
use logferry_core::{Chunk, DeliveryStatus, Record};

use crate::common::{not_applied, FilterCommon, FILTER_NOT_APPLIED};
use crate::condition::{known_keys, Condition};
use crate::metrics::PluginMetrics;
use crate::pipeline::{Env, FilterInstance};
use crate::plugin::{Carrier, FilterPlugin};

/// Processors that are not filters, by Fluent Bit name.
pub static PROCESSORS: &[&FilterPlugin] = &[&processor_content_modifier::PLUGIN];

/// The telemetry kinds a `processors` block may hold; only `logs` is applied.
const SIGNALS: &[&str] = &["logs", "metrics", "traces", "profiles"];

/// Builds the `logs` processors of `owner` (an input or output section) from its nested
/// `processors` node.
pub(crate) fn build(
    env: &Env<'_>,
    owner: &Section,
    node: &Nested,
    notes: &mut Vec<ConfigError>,
) -> Result<Vec<FilterInstance>, ConfigError> {
    let v = &node.value;
    if !matches!(v, Tree::Map { .. }) {
        return Err(ConfigError::key(
            &node.span,
            &node.key,
            format!(
                "expected a map of logs, metrics or traces, found {}",
                v.what()
            ),
        ));
    }
    known_keys(v, "processors", SIGNALS)?;
    let mut out = Vec::new();
    let Tree::Map { pairs, .. } = v else {
        return Ok(out);
    };
    for (signal, span, list) in pairs {
        if !signal.eq_ignore_ascii_case("logs") {
            notes.push(ConfigError::key(
                span,
                signal,
                format!("accepted but not applied: logferry carries logs only, so there are no {signal} to process"),
            ));
            continue;
        }
        let items = match list {
            Tree::Seq { items, .. } => items,
            other => {
                return Err(ConfigError::key(
                    span,
                    signal,
                    format!("expected a list of processors, found {}", other.what()),
                ))
            }
        };
        for (i, item) in items.iter().enumerate() {
            out.push(build_one(env, owner, i, item, notes)?);
        }
    }
    Ok(out)
}

/// One processor of a `logs` list.
fn build_one(
    env: &Env<'_>,
    owner: &Section,
    index: usize,
    item: &Tree,
    notes: &mut Vec<ConfigError>,
) -> Result<FilterInstance, ConfigError> {
    let Tree::Map { pairs, span } = item else {
        return Err(ConfigError::key(
            item.span(),
            "logs",
            format!("expected a map for each processor, found {}", item.what()),
        ));
    };
    // The processor's keys as a filter section, so that it is built and checked exactly as
    // a `[FILTER]` is.
    let mut section = Section::new(SectionKind::Filter, span.clone());
    let mut condition = None;
    for (k, kspan, v) in pairs {
        match v {
            _ if k.eq_ignore_ascii_case("condition") => {
                condition = Some(Condition::parse(kspan, v, &[], notes)?);
            }
            Tree::Scalar { text, .. } => section.push(k, text, kspan.clone()),
            Tree::Seq { items, .. } if items.iter().all(|i| i.as_str().is_some()) => {
                for i in items {
                    section.push(k, i.as_str().unwrap_or_default(), i.span().clone());
                }
            }
            other => {
                return Err(ConfigError::key(
                    kspan,
                    k,
                    format!("expected a value, found {}", other.what()),
                ))
            }
        }
    }
    let Some(name) = section.name().map(str::trim).filter(|n| !n.is_empty()) else {
        return Err(ConfigError::at(span, "a processor needs a name"));
    };
    let plugin = lookup(env, &section, name)?;
    let (shared, own): (Vec<_>, Vec<_>) = section
        .entries
        .iter()
        .partition(|e| FilterCommon::OPTIONS.iter().any(|o| o.is(&e.key)));
    let common = FilterCommon::from_entries(&section.span, &shared, &[])?;
    for e in &shared {
        if e.key.eq_ignore_ascii_case("match") || e.key.eq_ignore_ascii_case("match_regex") {
            notes.push(ConfigError::key(
                &e.span,
                &e.key,
                "accepted but not applied: a processor applies to every record of its input or output",
            ));
        }
    }
    notes.extend(not_applied(FILTER_NOT_APPLIED, shared.iter().copied()));
    let owner_name = owner.name().unwrap_or("?");
    let name = match common.alias.as_deref() {
        Some(a) if !a.is_empty() => a.to_string(),
        _ => format!("{}.{index}", plugin.name),
    };
    let metrics = PluginMetrics::new(name.clone());
    let ctx = env.context(&name, &metrics);
    let filter = (plugin.build)(&ctx, &section, &own).map_err(|e| {
        crate::pipeline::with_shared_suggestions(
            e,
            &FilterCommon::OPTIONS
                .iter()
                .map(|o| o.name)
                .collect::<Vec<_>>(),
        )
    })?;
    tracing::debug!(processor = %name, owner = %owner_name, "processor built");
    Ok(FilterInstance {
        name,
        matcher: None,
        condition,
        plugin: filter,
        metrics,
    })
}

/// The processor or filter a processor's `name` means.
fn lookup(
    env: &Env<'_>,
    section: &Section,
    name: &str,
) -> Result<&'static FilterPlugin, ConfigError> {
    if let Some(p) = PROCESSORS
        .iter()
        .chain(env.registry.filters.iter())
        .copied()
        .find(|p| p.is(name))
    {
        return Ok(p);
    }
    let span = section
        .get("name")
        .map_or_else(|| section.span.clone(), |e| e.span.clone());
    if env.registry.is_planned("filter", name) {
        return Err(ConfigError::key(
            &span,
            "name",
            format!("processor '{name}' (a filter) is not yet available in logferry"),
        ));
    }
    let mut reason = format!("unknown processor '{name}'");
    let names = PROCESSORS
        .iter()
        .chain(env.registry.filters.iter())
        .map(|p| p.name);
    if let Some(s) = suggest(name, names) {
        reason.push_str(&format!(" (did you mean '{s}'?)"));
    }
    Err(ConfigError::key(&span, "name", reason))
}

/// Runs one filter or processor on `records`: all of them, or, with a condition, the runs of
/// records that meet it (the others stay as they are, in place).
pub(crate) async fn apply(
    f: &mut FilterInstance,
    tag: &str,
    records: &mut Vec<Record>,
    carrier: &mut Carrier<'_>,
) {
    let Some(cond) = &f.condition else {
        f.plugin.filter_carried(tag, records, carrier).await;
        return;
    };
    let meets: Vec<bool> = records.iter().map(|r| cond.matches(r)).collect();
    if meets.iter().all(|m| *m) {
        f.plugin.filter_carried(tag, records, carrier).await;
        return;
    }
    if !meets.iter().any(|m| *m) {
        return;
    }
    let input = std::mem::take(records);
    let mut run = Vec::new();
    for (r, m) in input.into_iter().zip(meets) {
        if m {
            run.push(r);
            continue;
        }
        if !run.is_empty() {
            f.plugin.filter_carried(tag, &mut run, carrier).await;
            records.append(&mut run);
        }
        records.push(r);
    }
    if !run.is_empty() {
        f.plugin.filter_carried(tag, &mut run, carrier).await;
        records.append(&mut run);
    }
}

/// An output's processors, run on each batch before it is flushed.
pub(crate) struct OutputProcessors {
    units: tokio::sync::Mutex<Vec<FilterInstance>>,
}

impl OutputProcessors {
    pub(crate) fn new(units: Vec<FilterInstance>) -> Option<Arc<Self>> {
        (!units.is_empty()).then(|| {
            Arc::new(OutputProcessors {
                units: tokio::sync::Mutex::new(units),
            })
        })
    }

    /// The batch's chunks as this output's processors leave them. Each chunk keeps its
    /// delivery (this output settles it as before); a chunk left with no records is settled
    /// as delivered here and leaves the batch (Fluent Bit does not flush an empty chunk).
    pub(crate) async fn run(&self, tag: &str, chunks: Vec<Arc<Chunk>>) -> Vec<Arc<Chunk>> {
        let mut units = self.units.lock().await;
        let mut out = Vec::with_capacity(chunks.len());
        for chunk in chunks {
            let (chunk_tag, mut records, delivery, charge, headers, source, born) =
                match Arc::try_unwrap(chunk) {
                    Ok(c) => (
                        c.tag, c.records, c.delivery, c.charge, c.headers, c.source, c.born,
                    ),
                    Err(shared) => (
                        Arc::clone(&shared.tag),
                        shared.records.clone(),
                        shared.delivery.clone(),
                        shared.charge.clone(),
                        shared.headers,
                        shared.source.clone(),
                        shared.born,
                    ),
                };
            for i in 0..units.len() {
                if records.is_empty() {
                    break;
                }
                let before = records.len() as u64;
                let mut carrier = Carrier::new(None, 0);
                apply(&mut units[i], tag, &mut records, &mut carrier).await;
                // What it held from before these records and lets go now goes first, through
                // the processors after it (`Filter::take_ready`).
                let ready = units[i].plugin.take_ready();
                if !ready.is_empty() {
                    let mut front = Vec::new();
                    for released in ready {
                        for h in released.held {
                            h.settle(DeliveryStatus::Delivered);
                        }
                        front.extend(released.records);
                    }
                    front.append(&mut records);
                    records = front;
                }
                count(&units[i].metrics, before, records.len() as u64);
            }
            // What a holding filter keeps goes out with this batch, through the processors
            // after it.
            for i in 0..units.len() {
                for released in units[i].plugin.flush_due(true) {
                    let mut recs = released.records;
                    for h in released.held {
                        h.settle(DeliveryStatus::Delivered);
                    }
                    for j in i + 1..units.len() {
                        let mut carrier = Carrier::new(None, 0);
                        apply(&mut units[j], tag, &mut recs, &mut carrier).await;
                    }
                    records.append(&mut recs);
                }
            }
            // The byte metrics count what the processors leave (Fluent Bit counts an output's
            // bytes after its processors).
            let chunk = Chunk {
                tag: chunk_tag,
                packed: None,
                size: records.iter().map(Record::mem_size).sum(),
                wire_size: logferry_core::chunk::wire_size(&records, headers),
                headers,
                source,
                origin: None,
                born,
                records,
                delivery,
                charge,
            };
            if chunk.records.is_empty() {
                chunk.mark(DeliveryStatus::Delivered);
                continue;
            }
            out.push(Arc::new(chunk));
        }
        out
    }
}

/// Counts what one filter or processor did to a run of records, as the router counts filters.
pub(crate) fn count(m: &PluginMetrics, before: u64, after: u64) {
    PluginMetrics::add(&m.records, before);
    if after < before {
        PluginMetrics::add(&m.dropped_records, before - after);
    } else if after > before {
        PluginMetrics::add(&m.retried_records, after - before);
    }
}
