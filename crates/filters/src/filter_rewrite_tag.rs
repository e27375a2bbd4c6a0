//! `rewrite_tag` filter: re-emits records under a new tag, from the start of the pipeline
//! (Fluent Bit's `filter_rewrite_tag`).
//!
//! As Fluent Bit documents it: each `Rule $KEY REGEX NEW_TAG KEEP` matches the string at `$KEY`
//! (a record accessor; numbers, booleans, maps and arrays never match) against `REGEX`; rules
//! are tried in order and the first that matches wins. `NEW_TAG` may hold `$TAG`, `$TAG[n]`
//! (the n-th dot-separated part), `$0`…`$9` (the match and its groups), record accessors
//! (`$sub['s1']['s2']`) and `${ENV}` (expanded when the config is read). With `KEEP` false the
//! original record leaves its chunk; with `true` it goes on too.
//!
//! The re-emitted records enter the pipeline again at its first filter under their new tag,
//! within a quarter of a second ([`logferry_engine::plugin::FILTER_TICK`]), as Fluent Bit sends
//! them through its emitter input. That input shows in the metrics as an input named
//! `Emitter_Name` (default `emitter_for_<filter instance>`): `fluentbit_input_records_total` and
//! `fluentbit_input_bytes_total` count what was re-emitted. logferry re-emits inside its router
//! rather than through a separate input, so the records cannot be lost between the two, and
//! at shutdown the last ones are still routed.
//!
//! Delivery: a re-emitted record holds a share of the original chunk's delivery, so the input
//! that read it (tail's offset) is told it was delivered only once the re-emitted record was.
//!
//! Back-pressure, as Fluent Bit 5.1 does it: the emitter holds at most `Emitter_Mem_Buf_Limit`
//! (default 10M) of records waiting to re-enter; when a record would go over, it is not
//! re-emitted but stays in its chunk under its original tag (counted in
//! `logferry_rewrite_tag_emitter_busy_total`), so nothing is lost. `Emitter_Storage.type
//! filesystem` is accepted and noted: the records wait in memory, and from a filesystem input
//! they are stored with their new tag when they re-enter.
//!
//! A record whose new tag matches the same filter again is rewritten again; as in Fluent Bit,
//! a rule that always matches its own output loops (Fluent Bit's docs warn of it). A tag part
//! that cannot be filled (a missing key, `$TAG[9]` of a shorter tag) is left empty, as Fluent
//! Bit's record accessor leaves it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use logferry_core::config::{ByteSize, ConfigError, Entry, Section};
use logferry_core::record_accessor::RecordAccessor;
use logferry_core::{options, Record, Tag, Value};
use logferry_engine::common::NotApplied;
use logferry_engine::metrics::PluginMetrics;
use logferry_engine::{BuildContext, Carrier, Filter, FilterPlugin, Released};
use regex::Regex;

options! {
    /// Options of the `rewrite_tag` filter.
    pub struct RewriteTagOptions for "rewrite_tag filter" {
        /// `$KEY REGEX NEW_TAG KEEP`: re-emit matching records under NEW_TAG (repeatable).
        pub rule: Vec<String> = ["Rule"] None,
        /// Name of the emitter input that re-emits the records (default emitter_for_<name>).
        pub emitter_name: Option<String> = ["Emitter_Name"] None,
        /// Buffering of the emitter: memory (filesystem is accepted, and buffers in memory).
        pub emitter_storage_type: String = ["Emitter_Storage.type"] Some("memory"),
        /// Records the emitter may hold before matching records stay under their old tag.
        pub emitter_mem_buf_limit: ByteSize = ["Emitter_Mem_Buf_Limit"] Some("10M"),
    }
}

const NOT_APPLIED: &[NotApplied] = &[NotApplied::new(
    "Emitter_Storage.type",
    Some("memory"),
    "re-emitted records wait in memory until they re-enter the pipeline; each holds its original chunk's delivery, so a crash loses nothing the input does not read again",
)];

/// The registry entry.
pub static PLUGIN: FilterPlugin = FilterPlugin {
    name: "rewrite_tag",
    aliases: &[],
    description: "Rewrite records tags",
    options: RewriteTagOptions::OPTIONS,
    default_workers: 0,
    build,
};

/// A part of `NEW_TAG`.
#[derive(Debug)]
enum Part {
    Literal(String),
    Tag,
    TagIndex(usize),
    Capture(usize),
    Accessor(RecordAccessor),
}

/// One rule.
#[derive(Debug)]
struct Rule {
    key: RecordAccessor,
    regex: Regex,
    tag: Vec<Part>,
    keep: bool,
}

fn parse_tag(text: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut lit = String::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        lit.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (part, used) = if let Some(d) = after.chars().next().and_then(|c| c.to_digit(10)) {
            (Part::Capture(d as usize), 1)
        } else if let Some(r) = after.strip_prefix("TAG") {
            match r
                .strip_prefix('[')
                .and_then(|x| x.find(']').map(|e| (x, e)))
            {
                Some((x, end)) => {
                    let n = x[..end].trim().parse::<usize>().map_err(|_| {
                        format!("'$TAG[{}]': the index must be a number", &x[..end])
                    })?;
                    (Part::TagIndex(n), 3 + end + 2)
                }
                None => (Part::Tag, 3),
            }
        } else if after.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
            let ra = RecordAccessor::parse(&format!("${after}"))?;
            let len = after.len() - ra.ignored_suffix().map_or(0, str::len);
            (Part::Accessor(ra), len)
        } else {
            lit.push('$');
            rest = after;
            continue;
        };
        if !lit.is_empty() {
            parts.push(Part::Literal(std::mem::take(&mut lit)));
        }
        parts.push(part);
        rest = &after[used..];
    }
    lit.push_str(rest);
    if !lit.is_empty() {
        parts.push(Part::Literal(lit));
    }
    Ok(parts)
}

fn parse_rule(text: &str) -> Result<Rule, String> {
    let fields: Vec<&str> = text.split_whitespace().collect();
    let [key, regex, tag, keep] = fields[..] else {
        return Err(format!(
            "expected '$KEY REGEX NEW_TAG KEEP' (four fields; write spaces in REGEX as \\s), got '{text}'"
        ));
    };
    let key = if key.starts_with('$') {
        RecordAccessor::parse(key)?
    } else {
        RecordAccessor::literal(key)
    };
    let regex = logferry_core::fb_regex::compile(regex)?;
    let keep = logferry_core::config::units::parse_bool(keep)
        .map_err(|_| format!("KEEP must be true or false, got '{keep}'"))?;
    Ok(Rule {
        key,
        regex,
        tag: parse_tag(tag)?,
        keep,
    })
}

fn build(
    ctx: &BuildContext,
    section: &Section,
    entries: &[&Entry],
) -> Result<Box<dyn Filter>, ConfigError> {
    let o = RewriteTagOptions::from_entries(&section.span, entries, &[])?;
    ctx.not_applied(NOT_APPLIED, entries);
    let mut rules = Vec::new();
    for e in entries
        .iter()
        .filter(|e| e.key.eq_ignore_ascii_case("Rule"))
    {
        rules.push(parse_rule(&e.value).map_err(|r| ConfigError::key(&e.span, &e.key, r))?);
    }
    if rules.is_empty() {
        return Err(ConfigError::key(
            &section.span,
            "Rule",
            "rewrite_tag needs at least one Rule",
        ));
    }
    let name = o
        .emitter_name
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| format!("emitter_for_{}", ctx.instance));
    Ok(Box::new(RewriteTag {
        rules,
        waiting: Vec::new(),
        waiting_bytes: 0,
        limit: o.emitter_mem_buf_limit.0 as usize,
        emitter: ctx.input_metrics(&name),
        busy: ctx.metrics.register(
            "rewrite_tag_emitter_busy",
            "Matching records kept under their old tag because the emitter was full.",
        ),
    }))
}

/// The filter.
pub struct RewriteTag {
    rules: Vec<Rule>,
    /// Re-emitted records waiting to re-enter the pipeline, by new tag in the order first seen.
    waiting: Vec<Released>,
    waiting_bytes: usize,
    limit: usize,
    /// The emitter's input metrics.
    emitter: Arc<PluginMetrics>,
    busy: Arc<AtomicU64>,
}

impl RewriteTag {
    /// The first rule that matches `body`, with its captures: (rule, new tag).
    fn new_tag(&self, tag: &str, body: &logferry_core::Map) -> Option<(bool, String)> {
        for rule in &self.rules {
            let Some(Value::Str(s)) = rule.key.get(body) else {
                continue;
            };
            let Some(caps) = rule.regex.captures(s.as_str()) else {
                continue;
            };
            let mut out = String::new();
            for p in &rule.tag {
                match p {
                    Part::Literal(l) => out.push_str(l),
                    Part::Tag => out.push_str(tag),
                    Part::TagIndex(n) => out.push_str(tag.split('.').nth(*n).unwrap_or("")),
                    Part::Capture(n) => out.push_str(caps.get(*n).map_or("", |m| m.as_str())),
                    Part::Accessor(ra) => match ra.get(body) {
                        Some(Value::Str(v)) => out.push_str(v),
                        Some(Value::Int(i)) => out.push_str(&i.to_string()),
                        Some(Value::UInt(u)) => out.push_str(&u.to_string()),
                        Some(Value::Float(f)) => out.push_str(&f.to_string()),
                        Some(Value::Bool(b)) => out.push_str(if *b { "true" } else { "false" }),
                        _ => {}
                    },
                }
            }
            return Some((rule.keep, out));
        }
        None
    }
}

#[async_trait]
impl Filter for RewriteTag {
    async fn filter(&mut self, tag: &str, records: &mut Vec<Record>) {
        let mut carrier = Carrier::new(None, 0);
        self.filter_carried(tag, records, &mut carrier).await;
    }

    async fn filter_carried(
        &mut self,
        tag: &str,
        records: &mut Vec<Record>,
        carrier: &mut Carrier<'_>,
    ) {
        let mut kept = Vec::with_capacity(records.len());
        // Where in `waiting` this chunk's records for each new tag went (one share each).
        let mut mine: Vec<usize> = Vec::new();
        for rec in records.drain(..) {
            let Some((keep, new_tag)) = self.new_tag(tag, &rec.body) else {
                kept.push(rec);
                continue;
            };
            let size = rec.mem_size();
            if self.waiting_bytes + size > self.limit {
                // As Fluent Bit: the emitter is full, so the record stays where it was.
                self.busy.fetch_add(1, Ordering::Relaxed);
                kept.push(rec);
                continue;
            }
            self.waiting_bytes += size;
            if keep {
                kept.push(rec.clone());
            }
            match mine.iter().find(|&&i| *self.waiting[i].tag == *new_tag) {
                Some(&i) => self.waiting[i].records.push(rec),
                None => {
                    self.waiting.push(Released {
                        tag: Tag::from(new_tag.as_str()),
                        records: vec![rec],
                        held: carrier.hold().into_iter().collect(),
                        restart: true,
                        charge: None,
                    });
                    mine.push(self.waiting.len() - 1);
                }
            }
        }
        *records = kept;
    }

    fn flush_due(&mut self, _all: bool) -> Vec<Released> {
        self.waiting_bytes = 0;
        let out = std::mem::take(&mut self.waiting);
        for r in &out {
            PluginMetrics::add(&self.emitter.records, r.records.len() as u64);
            PluginMetrics::add(
                &self.emitter.bytes,
                logferry_core::chunk::wire_size(
                    &r.records,
                    logferry_core::msgpack::MapHeaders::Compact,
                ) as u64,
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::build_err;

    fn rendered(rule: &str, tag: &str, json: &str) -> Option<(bool, String)> {
        let f = RewriteTag {
            rules: vec![parse_rule(rule).unwrap()],
            waiting: Vec::new(),
            waiting_bytes: 0,
            limit: usize::MAX,
            emitter: PluginMetrics::new("e"),
            busy: Arc::default(),
        };
        let v = Value::from_json(serde_json::from_str(json).unwrap());
        f.new_tag(tag, v.as_map().unwrap())
    }

    /// Fluent Bit's documented example: tag `aa.bb.cc`, `$name` `abc-123`.
    #[test]
    fn new_tags_as_fluent_bit_documents_them() {
        let rec = r#"{"name":"abc-123","ss":{"s1":{"s2":"flb"}}}"#;
        assert_eq!(
            rendered(
                "$name ^([a-z]+)-([0-9]+)$ newtag.$TAG.$TAG[1].$1.$ss['s1']['s2'].out false",
                "aa.bb.cc",
                rec
            ),
            Some((false, "newtag.aa.bb.cc.bb.abc.flb.out".to_string()))
        );
        assert_eq!(
            rendered("$name ^abc-(\\d+)$ n.$0.$2 true", "t", rec),
            Some((true, "n.abc-123.".to_string()))
        );
        assert_eq!(rendered("$missing . x false", "t", rec), None);
        assert_eq!(
            rendered("$ss . x false", "t", rec),
            None,
            "a map never matches"
        );
    }

    #[test]
    fn bad_rules_name_the_line() {
        let e = build_err(&PLUGIN, &[("Rule", "$a ^x$ y")]);
        assert!(
            e.contains("test.conf:2") && e.contains("four fields"),
            "{e}"
        );
        let e = build_err(&PLUGIN, &[("Rule", "$a ^(x$ y false")]);
        assert!(e.contains("invalid regular expression"), "{e}");
        let e = build_err(&PLUGIN, &[("Rule", "$a x y maybe")]);
        assert!(e.contains("KEEP"), "{e}");
        let e = build_err(&PLUGIN, &[("Emitter_Name", "x")]);
        assert!(e.contains("at least one Rule"), "{e}");
    }
}
