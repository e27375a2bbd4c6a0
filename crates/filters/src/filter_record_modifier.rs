//! `record_modifier` filter: appends fixed fields, removes fields or keeps only some, and can
//! add a random UUID to each record (Fluent Bit's `filter_record_modifier`).
//!
//! As documented: `Record KEY VALUE` appends a field (repeatable); `Remove_key` removes matching
//! fields; `Allowlist_key` (alias `Whitelist_key`) removes the fields that do *not* match;
//! `Remove_key` and `Allowlist_key` are exclusive; `Uuid_key` appends a UUID under that key.
//!
//! Where the docs are silent this follows Fluent Bit's `filter_modifier.c`:
//! - `Record` is split like Fluent Bit's `FLB_CONFIG_MAP_SLIST_2` options: on spaces, with `"`
//!   quoting a value that holds spaces (`Record cluster "my cluster"`). Anything but exactly
//!   one key and one value is an error here; Fluent Bit logs "invalid record parameters,
//!   expects 'KEY VALUE'" and drops that `Record`.
//! - `Remove_key` / `Allowlist_key` compare keys case-insensitively, exactly or, with a
//!   trailing `*`, by prefix. They apply first; then the `Record` fields are appended in the
//!   order written, then the UUID. Appended fields are always strings and are appended even when
//!   the record already has that key (the record then holds it twice, as Fluent Bit writes it).
//! - The UUID is a random (version 4) UUID in lower-case hex, a new one for every record.

use async_trait::async_trait;
use logferry_core::config::{ConfigError, Entry, Section};
use logferry_core::{options, Map, Record, Str, Value};
use logferry_engine::{BuildContext, Filter, FilterPlugin};
use rand::Rng;

use crate::syntax;

options! {
    /// Options of the `record_modifier` filter.
    pub struct RecordModifierOptions for "record_modifier filter" {
        /// `KEY VALUE`: append this field to every record (repeatable).
        pub record: Vec<String> = ["Record"] None,
        /// Remove fields with this key; a trailing `*` matches by prefix (repeatable).
        pub remove_key: Vec<String> = ["Remove_key"] None,
        /// Keep only fields with this key; a trailing `*` matches by prefix (repeatable).
        pub allowlist_key: Vec<String> = ["Allowlist_key", "Whitelist_key"] None,
        /// Append a random UUID to every record under this key.
        pub uuid_key: Option<String> = ["Uuid_key"] None,
    }
}

/// The registry entry.
pub static PLUGIN: FilterPlugin = FilterPlugin {
    name: "record_modifier",
    aliases: &[],
    description: "modify record",
    options: RecordModifierOptions::OPTIONS,
    default_workers: 0,
    build,
};

/// A `Remove_key` / `Allowlist_key` pattern.
#[derive(Clone, Debug)]
struct KeyPattern {
    text: String,
    prefix: bool,
}

impl KeyPattern {
    fn new(raw: &str) -> Self {
        match raw.strip_suffix('*') {
            Some(p) => KeyPattern {
                text: p.to_string(),
                prefix: true,
            },
            None => KeyPattern {
                text: raw.to_string(),
                prefix: false,
            },
        }
    }

    fn matches(&self, key: &str) -> bool {
        let n = self.text.len();
        if self.prefix {
            key.len() >= n && key.as_bytes()[..n].eq_ignore_ascii_case(self.text.as_bytes())
        } else {
            key.eq_ignore_ascii_case(&self.text)
        }
    }
}

/// Which fields go.
#[derive(Clone, Debug)]
enum Selection {
    All,
    Remove(Vec<KeyPattern>),
    Allow(Vec<KeyPattern>),
}

fn build(
    _ctx: &BuildContext,
    section: &Section,
    entries: &[&Entry],
) -> Result<Box<dyn Filter>, ConfigError> {
    let opts = RecordModifierOptions::from_entries(&section.span, entries, &[])?;
    let mut fields = Vec::with_capacity(opts.record.len());
    for e in entries
        .iter()
        .filter(|e| e.key.eq_ignore_ascii_case("Record"))
    {
        let mut tokens = syntax::split_tokens(&e.value, 2);
        if tokens.len() != 2 {
            let mut reason = format!("expected 'KEY VALUE', got {} word(s)", tokens.len());
            if tokens.len() > 2 {
                reason.push_str(r#"; quote a value that contains spaces, as in key "a b""#);
            }
            return Err(ConfigError::key(&e.span, &e.key, reason));
        }
        let value = tokens.pop().unwrap_or_default();
        let key = tokens.pop().unwrap_or_default();
        fields.push((Str::from(key), Value::Str(Str::from(value))));
    }
    let selection = match (opts.remove_key.is_empty(), opts.allowlist_key.is_empty()) {
        (true, true) => Selection::All,
        (false, true) => {
            Selection::Remove(opts.remove_key.iter().map(|k| KeyPattern::new(k)).collect())
        }
        (true, false) => Selection::Allow(
            opts.allowlist_key
                .iter()
                .map(|k| KeyPattern::new(k))
                .collect(),
        ),
        (false, false) => {
            let e = entries
                .iter()
                .filter(|e| {
                    ["Remove_key", "Allowlist_key", "Whitelist_key"]
                        .iter()
                        .any(|k| e.key.eq_ignore_ascii_case(k))
                })
                .nth(1)
                .copied();
            let (span, key) =
                e.map_or((&section.span, "Remove_key"), |e| (&e.span, e.key.as_str()));
            return Err(ConfigError::key(
                span,
                key,
                "Remove_key and Allowlist_key are exclusive",
            ));
        }
    };
    Ok(Box::new(RecordModifierFilter {
        fields,
        selection,
        uuid_key: opts.uuid_key.map(Str::from),
    }))
}

/// The running filter.
#[derive(Clone, Debug)]
pub struct RecordModifierFilter {
    fields: Vec<(Str, Value)>,
    selection: Selection,
    uuid_key: Option<Str>,
}

impl RecordModifierFilter {
    fn apply(&self, body: &mut Map, rng: &mut impl Rng) {
        match &self.selection {
            Selection::All => {}
            Selection::Remove(pats) => body.0.retain(|(k, _)| !pats.iter().any(|p| p.matches(k))),
            Selection::Allow(pats) => body.0.retain(|(k, _)| pats.iter().any(|p| p.matches(k))),
        }
        body.0
            .reserve(self.fields.len() + usize::from(self.uuid_key.is_some()));
        body.0.extend(self.fields.iter().cloned());
        if let Some(k) = &self.uuid_key {
            body.0.push((k.clone(), Value::Str(uuid_v4(rng))));
        }
    }
}

/// A random version-4 UUID, `xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx` in lower-case hex.
fn uuid_v4(rng: &mut impl Rng) -> Str {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut b: [u8; 16] = rng.random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let mut s = Str::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push(char::from(HEX[usize::from(byte >> 4)]));
        s.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    s
}

#[async_trait]
impl Filter for RecordModifierFilter {
    /// Its state is its configuration: any number of copies filter alike.
    fn fork(&self) -> Option<Box<dyn Filter>> {
        Some(Box::new(self.clone()))
    }
    async fn filter(&mut self, _tag: &str, records: &mut Vec<Record>) {
        let mut rng = rand::rng();
        for r in records.iter_mut() {
            self.apply(&mut r.body, &mut rng);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{uuid_v4, PLUGIN};
    use crate::testing;

    fn check(entries: &[(&str, &str)], input: &str, expected: &str) {
        testing::check(&PLUGIN, entries, input, expected);
    }

    /// The `in_mem` record of the docs.
    const MEM: &str = r#"{"Mem.total": 1016024, "Mem.used": 716672, "Mem.free": 299352,
        "Swap.total": 2064380, "Swap.used": 32656, "Swap.free": 2031724}"#;

    #[test]
    fn doc_example_append_fields() {
        // Docs, "Append fields" (with ${HOSTNAME} already expanded by the config reader).
        check(
            &[
                ("Record", "hostname localhost.localdomain"),
                ("Record", "product Awesome_Tool"),
            ],
            MEM,
            r#"{"Mem.total": 1016024, "Mem.used": 716672, "Mem.free": 299352, "Swap.total": 2064380,
                "Swap.used": 32656, "Swap.free": 2031724, "hostname": "localhost.localdomain",
                "product": "Awesome_Tool"}"#,
        );
    }

    #[test]
    fn doc_example_remove_key() {
        // Docs, "Remove fields with Remove_key".
        check(
            &[
                ("Remove_key", "Swap.total"),
                ("Remove_key", "Swap.used"),
                ("Remove_key", "Swap.free"),
            ],
            MEM,
            r#"{"Mem.total": 1016024, "Mem.used": 716672, "Mem.free": 299352}"#,
        );
    }

    #[test]
    fn doc_example_allowlist_key() {
        // Docs, "Remove fields with Allowlist_key".
        let expected = r#"{"Mem.total": 1016024, "Mem.used": 716672, "Mem.free": 299352}"#;
        check(
            &[
                ("Allowlist_key", "Mem.total"),
                ("Allowlist_key", "Mem.used"),
                ("Allowlist_key", "Mem.free"),
            ],
            MEM,
            expected,
        );
        check(&[("Whitelist_key", "Mem.*")], MEM, expected);
        check(
            &[
                ("Allowlist_key", "Mem.total"),
                ("Whitelist_key", "Mem.u*"),
                ("Allowlist_key", "mem.FREE"),
            ],
            MEM,
            expected,
        );
    }

    #[test]
    fn remove_key_wildcards_and_case() {
        check(
            &[("Remove_key", "swap.*")],
            MEM,
            r#"{"Mem.total": 1016024, "Mem.used": 716672, "Mem.free": 299352}"#,
        );
        check(&[("Remove_key", "Mem")], MEM, MEM);
    }

    #[test]
    fn records_are_appended_after_removal_and_quoted_values() {
        // The allowlist applies before the Record fields, which are appended even when the key
        // exists (the record then holds it twice, as Fluent Bit writes it).
        let mut f = testing::build(
            &PLUGIN,
            &[
                ("Allowlist_key", "a"),
                ("Record", r#"cluster "my cluster""#),
                ("Record", "a 2"),
            ],
        )
        .unwrap();
        assert_eq!(
            testing::run(f.as_mut(), r#"{"a": 1, "b": 2}"#),
            r#"[{"a":1,"cluster":"my cluster","a":"2"}]"#
        );
    }

    #[test]
    fn uuid_key_appends_a_new_uuid_per_record() {
        let mut f = testing::build(&PLUGIN, &[("Record", "k v"), ("Uuid_key", "uuid")]).unwrap();
        let out: serde_json::Value =
            serde_json::from_str(&testing::run(f.as_mut(), r#"[{"a": 1}, {"a": 2}]"#)).unwrap();
        let mut seen = Vec::new();
        for rec in out.as_array().unwrap() {
            let keys: Vec<&String> = rec.as_object().unwrap().keys().collect();
            assert_eq!(keys, ["a", "k", "uuid"]);
            let u = rec["uuid"].as_str().unwrap().to_string();
            assert_eq!(u.len(), 36);
            assert_eq!(&u[14..15], "4");
            assert!(u
                .chars()
                .all(|c| c == '-' || c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
            seen.push(u);
        }
        assert_ne!(seen[0], seen[1]);
        let u = uuid_v4(&mut rand::rng());
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"), "{u}");
    }

    #[test]
    fn no_options_changes_nothing() {
        check(&[], MEM, MEM);
    }

    #[test]
    fn config_errors_name_file_line_and_key() {
        testing::check_err(
            &PLUGIN,
            &[("Record", "a b"), ("Record", "onlykey")],
            3,
            "Record",
            "expected 'KEY VALUE', got 1",
        );
        testing::check_err(
            &PLUGIN,
            &[("Record", "k a b")],
            2,
            "Record",
            "quote a value",
        );
        testing::check_err(
            &PLUGIN,
            &[("Remove_key", "a"), ("Whitelist_key", "b")],
            3,
            "Whitelist_key",
            "exclusive",
        );
        testing::check_err(
            &PLUGIN,
            &[("Uuid_keys", "u")],
            2,
            "Uuid_keys",
            "did you mean 'Uuid_key'?",
        );
    }
}
