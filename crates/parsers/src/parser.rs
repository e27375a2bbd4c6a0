//! One `[PARSER]`: its options, compiled once, and `parse`.

use logferry_core::config::{ConfigError, Entry, Section};
use logferry_core::{EventTime, Map, Str, Value};

use crate::convert::{self, FieldDecoders, TypeKind};
use crate::format;
use crate::regex::Pattern;
use crate::time::{parse_time_offset, TimeFormat};

logferry_core::options! {
    /// The keys of a `[PARSER]` section, as Fluent Bit names them.
    pub struct ParserOptions for "parser" {
        /// The parser's name, used by `Parser` keys elsewhere.
        pub name: String = ["Name"] None,
        /// regex, json, logfmt, ltsv (or tskv).
        pub format: String = ["Format"] None,
        /// The Ruby (Onigmo) regular expression with named groups, for Format regex.
        pub regex: Option<String> = ["Regex"] None,
        /// The field holding the record's time (with Time_Format; defaults to `time`).
        pub time_key: Option<String> = ["Time_Key"] None,
        /// strptime format of the time field; %L is fractional seconds.
        pub time_format: Option<String> = ["Time_Format"] None,
        /// Keep the time field in the record after reading it.
        pub time_keep: bool = ["Time_Keep"] Some("off"),
        /// Fixed UTC offset (+0200, -0600) for times without a zone.
        pub time_offset: Option<String> = ["Time_Offset"] None,
        /// IANA time zone (Europe/Berlin) for times without a zone, daylight saving included.
        pub time_zone: Option<String> = ["Time_Zone"] None,
        /// Reject times that match only part of Time_Format.
        pub time_strict: bool = ["Time_Strict"] Some("on"),
        /// Read zone-less times in the system time zone (TZ) instead of UTC.
        pub time_system_timezone: bool = ["Time_System_Timezone"] Some("off"),
        /// Casts: `field:integer field2:float ...` (integer, float, bool, hex, string).
        pub types: Option<String> = ["Types"] None,
        /// `<json|escaped|escaped_utf8> <field> [try_next|do_next]`: decode and add keys.
        pub decode_field: Vec<String> = ["Decode_Field"] None,
        /// `<json|escaped|escaped_utf8> <field> [try_next|do_next]`: decode in place.
        pub decode_field_as: Vec<String> = ["Decode_Field_As"] None,
        /// Omit regex captures that matched the empty string.
        pub skip_empty_values: bool = ["Skip_Empty_Values"] Some("on"),
        /// logfmt: reject lines holding a key without a value.
        pub logfmt_no_bare_keys: bool = ["Logfmt_No_Bare_Keys"] Some("off"),
    }
}

/// The result of a successful parse.
#[derive(Clone, Debug, PartialEq)]
pub struct Parsed {
    /// The time read from the time field, if the parser has a Time_Format and it read.
    pub time: Option<EventTime>,
    /// The fields.
    pub body: Map,
}

/// The format with what it needs, compiled.
#[derive(Debug)]
enum Kind {
    Regex {
        pattern: Pattern,
        /// Every named group, in pattern order.
        groups: Vec<Group>,
    },
    Json,
    Logfmt {
        no_bare_keys: bool,
    },
    Ltsv,
    Tskv,
}

/// A named group of a regex parser, with what its value becomes worked out once when the
/// parser is built instead of comparing its name with `Time_Key` and `Types` on every line.
#[derive(Debug)]
struct Group {
    /// Capture index.
    idx: usize,
    /// Field name.
    key: Str,
    role: Role,
}

#[derive(Debug, Clone, Copy)]
enum Role {
    /// A string field.
    Plain,
    /// Cast by `Types`.
    Cast(TypeKind),
    /// The `Time_Key` field of a parser with a `Time_Format`.
    Time,
}

/// A compiled parser. Cheap to share (`Arc`); `parse` takes `&self`.
#[derive(Debug)]
pub struct Parser {
    name: String,
    kind: Kind,
    time_key: Str,
    time: Option<TimeFormat>,
    time_keep: bool,
    types: Vec<(Str, TypeKind)>,
    decoders: Vec<FieldDecoders>,
    skip_empty: bool,
}

impl Parser {
    /// The parser's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The format's name (`regex`, `json`, `logfmt`, `ltsv`, `tskv`).
    pub fn format(&self) -> &'static str {
        match self.kind {
            Kind::Regex { .. } => "regex",
            Kind::Json => "json",
            Kind::Logfmt { .. } => "logfmt",
            Kind::Ltsv => "ltsv",
            Kind::Tskv => "tskv",
        }
    }

    /// The time field's name when the parser reads a time.
    pub fn time_key(&self) -> Option<&str> {
        self.time.as_ref().map(|_| self.time_key.as_str())
    }

    /// Whether this parser does exactly what Docker json-file decoding does (JSON, time from
    /// `time` and kept, nothing else), so that inputs may use their own fast decoder instead.
    pub fn is_docker_json(&self) -> bool {
        matches!(self.kind, Kind::Json)
            && self.time.is_some()
            && self.time_key == "time"
            && self.time_keep
            && self.types.is_empty()
            && self.decoders.is_empty()
    }

    /// For a regex parser, which engine compiled the pattern (`regex` or `fancy-regex`).
    pub fn regex_engine(&self) -> Option<&'static str> {
        match &self.kind {
            Kind::Regex { pattern, .. } => Some(pattern.engine()),
            _ => None,
        }
    }

    /// Builds a parser from a `[PARSER]` section. Every problem is reported with file:line and
    /// the key.
    pub fn from_section(section: &Section) -> Result<Parser, Vec<ConfigError>> {
        let entries: Vec<&Entry> = section.entries.iter().collect();
        let opts =
            ParserOptions::from_entries(&section.span, &entries, &[]).map_err(|e| vec![e])?;
        let mut errors = Vec::new();
        let at = |key: &str| {
            section
                .get(key)
                .map(|e| (e.span.clone(), e.key.clone()))
                .unwrap_or_else(|| (section.span.clone(), key.to_string()))
        };
        let name = opts.name.trim().to_string();
        let format = opts.format.trim().to_ascii_lowercase();
        let kind = match format.as_str() {
            "regex" => match opts.regex.as_deref() {
                None => {
                    let (span, _) = at("Regex");
                    errors.push(ConfigError::key(
                        &span,
                        "Regex",
                        format!("parser '{name}' has Format regex but no Regex"),
                    ));
                    None
                }
                Some(re) => match Pattern::new(re.trim()) {
                    Ok(pattern) => {
                        let groups = pattern
                            .names()
                            .into_iter()
                            .map(|(idx, n)| Group {
                                idx,
                                key: Str::from(n),
                                role: Role::Plain,
                            })
                            .collect();
                        Some(Kind::Regex { pattern, groups })
                    }
                    Err(reason) => {
                        let (span, key) = at("Regex");
                        errors.push(ConfigError::key(
                            &span,
                            &key,
                            format!("parser '{name}': {reason}"),
                        ));
                        None
                    }
                },
            },
            "json" => Some(Kind::Json),
            "logfmt" => Some(Kind::Logfmt {
                no_bare_keys: opts.logfmt_no_bare_keys,
            }),
            "ltsv" => Some(Kind::Ltsv),
            "tskv" => Some(Kind::Tskv),
            _ => {
                let (span, key) = at("Format");
                errors.push(ConfigError::key(
                    &span,
                    &key,
                    format!(
                        "parser '{name}': unknown format '{}' (expected regex, json, logfmt or ltsv)",
                        opts.format.trim()
                    ),
                ));
                None
            }
        };

        let mut offset = 0;
        if let Some(o) = opts.time_offset.as_deref() {
            match parse_time_offset(o) {
                Ok(v) => offset = v,
                Err(reason) => {
                    let (span, key) = at("Time_Offset");
                    errors.push(ConfigError::key(&span, &key, reason));
                }
            }
        }
        // As Fluent Bit 5.1 checks it: a zone needs a Time_Format, and does not combine with
        // Time_System_Timezone or Time_Offset.
        let mut zone = None;
        if let Some(z) = opts.time_zone.as_deref().filter(|z| !z.trim().is_empty()) {
            let (span, key) = at("Time_Zone");
            let conflict = if opts
                .time_format
                .as_deref()
                .is_none_or(|f| f.trim().is_empty())
            {
                Some("Time_Zone requires Time_Format")
            } else if opts.time_system_timezone {
                Some("Time_Zone cannot be combined with Time_System_Timezone")
            } else if opts
                .time_offset
                .as_deref()
                .is_some_and(|o| !o.trim().is_empty())
            {
                Some("Time_Zone cannot be combined with Time_Offset")
            } else {
                None
            };
            match conflict {
                Some(reason) => errors.push(ConfigError::key(
                    &span,
                    &key,
                    format!("parser '{name}': {reason}"),
                )),
                None => match crate::time::load_zone(z) {
                    Ok(tz) => zone = Some(tz),
                    Err(reason) => errors.push(ConfigError::key(&span, &key, reason)),
                },
            }
        }
        let time = match opts.time_format.as_deref().map(str::trim) {
            Some(f) if !f.is_empty() => match TimeFormat::new(f) {
                Ok(t) => Some(
                    t.with_offset(offset)
                        .with_system_timezone(opts.time_system_timezone)
                        .with_zone(zone)
                        .with_strict(opts.time_strict),
                ),
                Err(reason) => {
                    let (span, key) = at("Time_Format");
                    errors.push(ConfigError::key(&span, &key, reason));
                    None
                }
            },
            _ => None,
        };
        let types = match opts.types.as_deref() {
            Some(t) => match convert::parse_types(t) {
                Ok(t) => t,
                Err(reason) => {
                    let (span, key) = at("Types");
                    errors.push(ConfigError::key(
                        &span,
                        &key,
                        format!("parser '{name}': {reason}"),
                    ));
                    Vec::new()
                }
            },
            None => Vec::new(),
        };
        // Decoders keep the order written across both keys, so they are read from the entries.
        let mut decoders = Vec::new();
        for e in &section.entries {
            let replace = if e.key.eq_ignore_ascii_case("Decode_Field_As") {
                true
            } else if e.key.eq_ignore_ascii_case("Decode_Field") {
                false
            } else {
                continue;
            };
            if let Err(reason) = convert::add_decoder(&mut decoders, replace, &e.value) {
                errors.push(ConfigError::key(
                    &e.span,
                    &e.key,
                    format!("parser '{name}': {reason}"),
                ));
            }
        }
        let Some(mut kind) = kind else {
            return Err(errors);
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        let time_key = Str::from(opts.time_key.as_deref().map(str::trim).unwrap_or("time"));
        if let Kind::Regex { groups, .. } = &mut kind {
            for g in groups {
                g.role = if time.is_some() && g.key == time_key {
                    Role::Time
                } else if let Some((_, t)) = types.iter().find(|(k, _)| *k == g.key) {
                    Role::Cast(*t)
                } else {
                    Role::Plain
                };
            }
        }
        Ok(Parser {
            name,
            kind,
            time_key,
            time,
            time_keep: opts.time_keep,
            types,
            decoders,
            skip_empty: opts.skip_empty_values,
        })
    }

    /// Parses `text`. `None` means no match (the caller keeps its record unchanged).
    pub fn parse(&self, text: &str) -> Option<Parsed> {
        let mut out = match &self.kind {
            Kind::Regex { pattern, groups } => self.parse_regex(pattern, groups, text)?,
            Kind::Json => self.parse_json(text)?,
            Kind::Logfmt { no_bare_keys } => self.parse_logfmt(text, *no_bare_keys)?,
            Kind::Ltsv => self.parse_ltsv(text, b':')?,
            Kind::Tskv => self.parse_ltsv(text.strip_prefix("tskv\t").unwrap_or(text), b'=')?,
        };
        if !self.decoders.is_empty() {
            convert::apply_decoders(&self.decoders, &mut out.body);
        }
        Some(out)
    }

    /// A string field as the parser emits it: cast by `Types`.
    fn field(&self, key: &str, value: &str) -> Value {
        if !self.types.is_empty() {
            if let Some((_, kind)) = self.types.iter().find(|(k, _)| k == key) {
                return convert::cast(*kind, value);
            }
        }
        Value::Str(Str::from(value))
    }

    /// Handles a string field that may be the time field; returns whether to keep the field.
    /// A time that does not read drops the field and leaves the time unset (as Fluent Bit).
    fn time_field(&self, key: &str, value: &str, time: &mut Option<EventTime>) -> bool {
        match &self.time {
            Some(fmt) if key == self.time_key => match fmt.parse(value) {
                Some(t) => {
                    *time = Some(t);
                    self.time_keep
                }
                None => false,
            },
            _ => true,
        }
    }

    /// The pairs are made where they stay: every group's key is cloned straight into the
    /// map's buffer beside a `Null`, then each value is written over its `Null` ([`Value::fill_null`]).
    /// Making each pair on the stack and pushing it cost store-forwarding stalls (wide loads
    /// over the narrower stores that had just built the string, the key and the value): 70% of
    /// this closure's cpu-clock samples, and the closure was 17% of P3's CPU
    /// (docs/performance.md).
    fn parse_regex(&self, pattern: &Pattern, groups: &[Group], text: &str) -> Option<Parsed> {
        pattern.captures(text, |slots| {
            let mut body = Map(Vec::with_capacity(groups.len()));
            body.0
                .extend(groups.iter().map(|g| (g.key.clone(), Value::Null)));
            let mut time = None;
            // Pairs kept so far; a skipped group (unmatched, empty with `Skip_Empty_Values`,
            // a time that does not read) moves the later ones down by one.
            let mut kept = 0;
            for (i, g) in groups.iter().enumerate() {
                let Some(value) = slots.get(g.idx).and_then(|(s, e)| text.get(s..e)) else {
                    continue;
                };
                if value.is_empty() && self.skip_empty {
                    continue;
                }
                if matches!(g.role, Role::Time) && !self.time_field(&g.key, value, &mut time) {
                    continue;
                }
                let Some(pair) = body.0.get_mut(kept) else {
                    break;
                };
                if kept < i {
                    pair.0 = g.key.clone();
                }
                match g.role {
                    // Longer than fits inline: a heap buffer of its length, straight into the
                    // `Null` (an empty string put there first and then replaced cost 46 more
                    // instructions per P3 line; twelfth session).
                    Role::Plain if value.len() > std::mem::size_of::<Str>() => {
                        pair.1.fill_null(Value::Str(Str::from(value)));
                    }
                    // Filled in place: `Str::from` builds a short string on the stack and the
                    // move reads it back wider than `memcpy` wrote it.
                    Role::Plain => {
                        pair.1.fill_null(Value::Str(Str::default()));
                        if let Value::Str(s) = &mut pair.1 {
                            s.push_str(value);
                        }
                    }
                    Role::Cast(kind) => pair.1.fill_null(convert::cast(kind, value)),
                    Role::Time => pair.1.fill_null(self.field(&g.key, value)),
                }
                kept += 1;
            }
            body.0.truncate(kept);
            Parsed { time, body }
        })
    }

    fn parse_json(&self, text: &str) -> Option<Parsed> {
        let mut body = format::json_map(text)?;
        let mut time = None;
        if let Some(fmt) = &self.time {
            if let Some(i) = body.position(&self.time_key) {
                if let Value::Str(s) = &body.0[i].1 {
                    if let Some(t) = fmt.parse(s) {
                        time = Some(t);
                        if !self.time_keep {
                            body.0.remove(i);
                        }
                    }
                }
            }
        }
        Some(Parsed { time, body })
    }

    fn parse_logfmt(&self, text: &str, no_bare_keys: bool) -> Option<Parsed> {
        let pairs = format::logfmt_pairs(text, no_bare_keys)?;
        let mut body = Map::with_capacity(pairs.len());
        let mut time = None;
        for p in &pairs {
            if let (Some(fmt), Some(v)) = (&self.time, p.value) {
                if p.key == self.time_key && !v.is_empty() {
                    // In logfmt a time that does not read fails the whole line (Fluent Bit).
                    time = Some(fmt.parse(v)?);
                    if !self.time_keep {
                        continue;
                    }
                }
            }
            let value = match p.value {
                _ if !self.types.is_empty() && self.types.iter().any(|(k, _)| k == p.key) => {
                    self.field(p.key, p.value.unwrap_or(""))
                }
                None if p.quoted => Value::Str(Str::default()),
                None => Value::Bool(true),
                Some(v) if p.escaped => Value::Str(format::logfmt_unescape(v).into()),
                Some(v) => Value::Str(Str::from(v)),
            };
            body.0.push((Str::from(p.key), value));
        }
        if body.is_empty() {
            return None;
        }
        Some(Parsed { time, body })
    }

    fn parse_ltsv(&self, text: &str, sep: u8) -> Option<Parsed> {
        let pairs = format::ltsv_pairs(text, sep);
        let mut body = Map::with_capacity(pairs.len());
        let mut time = None;
        for (k, v) in pairs {
            if let Some(fmt) = &self.time {
                if k == self.time_key && !v.is_empty() {
                    time = Some(fmt.parse(v)?);
                    if !self.time_keep {
                        continue;
                    }
                }
            }
            body.0.push((Str::from(k), self.field(k, v)));
        }
        if body.is_empty() {
            return None;
        }
        Some(Parsed { time, body })
    }
}
