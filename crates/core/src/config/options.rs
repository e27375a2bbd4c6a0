//! Typed plugin options, declared once.
//!
//! Each plugin declares its options with [`options!`](crate::options): the Fluent Bit name and
//! aliases, the Rust type, the default as Fluent Bit writes it, and a one-line doc (required: the
//! macro does not accept an option without one). The macro generates the struct, its
//! `OPTIONS` table (for `--help` and docs) and `from_entries`, which fills the struct from a
//! section and reports unknown keys and bad values with file, line and key.

use std::time::Duration;

use super::units::{parse_bool, parse_seconds, parse_size};

/// One declared option, as listed by `--help` and checked by tests.
#[derive(Clone, Copy, Debug)]
pub struct OptSpec {
    /// Fluent Bit's name for the key (matched case-insensitively).
    pub name: &'static str,
    /// Other accepted spellings.
    pub aliases: &'static [&'static str],
    /// What kind of value it takes, for humans.
    pub kind: &'static str,
    /// The default as it would be written in a config file; `None` when there is none.
    pub default: Option<&'static str>,
    /// One line saying what it does.
    pub doc: &'static str,
}

impl OptSpec {
    /// Whether `key` names this option.
    pub fn is(&self, key: &str) -> bool {
        self.name.eq_ignore_ascii_case(key)
            || self.aliases.iter().any(|a| a.eq_ignore_ascii_case(key))
    }
}

/// A byte count written as Fluent Bit sizes are (`5MB`, `32k`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct ByteSize(pub u64);

/// A type an option can have.
pub trait OptValue: Sized {
    /// The kind shown in help.
    const KIND: &'static str;
    /// Parses one written value.
    fn parse_opt(raw: &str) -> Result<Self, String>;
    /// The value when the key is absent and has no default; `None` makes the key required.
    fn missing() -> Option<Self> {
        None
    }
    /// Folds a repeated key into the slot: last one wins, except for lists.
    fn accumulate(slot: &mut Option<Self>, v: Self) {
        *slot = Some(v);
    }
}

impl OptValue for bool {
    const KIND: &'static str = "bool";
    fn parse_opt(raw: &str) -> Result<Self, String> {
        parse_bool(raw)
    }
}

impl OptValue for String {
    const KIND: &'static str = "string";
    fn parse_opt(raw: &str) -> Result<Self, String> {
        Ok(raw.to_string())
    }
}

macro_rules! int_opt {
    ($($t:ty),*) => {$(
        impl OptValue for $t {
            const KIND: &'static str = "integer";
            fn parse_opt(raw: &str) -> Result<Self, String> {
                raw.trim().parse::<$t>().map_err(|_| format!("expected an integer, got '{raw}'"))
            }
        }
    )*};
}
int_opt!(i64, u64, u32, u16, usize, i32);

impl OptValue for f64 {
    const KIND: &'static str = "number";
    fn parse_opt(raw: &str) -> Result<Self, String> {
        match raw.trim().parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(v),
            _ => Err(format!("expected a number, got '{raw}'")),
        }
    }
}

/// A log level as Fluent Bit takes it (`Log_Level`): anything else is refused, as Fluent Bit 5.1
/// refuses it ("could not configure service property 'log_level'").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLevel(String);

impl std::ops::Deref for LogLevel {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl OptValue for LogLevel {
    const KIND: &'static str = "level";
    fn parse_opt(raw: &str) -> Result<Self, String> {
        let l = raw.trim().to_ascii_lowercase();
        match l.as_str() {
            "off" | "error" | "warn" | "warning" | "info" | "debug" | "trace" => Ok(LogLevel(l)),
            _ => Err(format!(
                "expected off, error, warn, info, debug or trace, got '{raw}'"
            )),
        }
    }
}

/// Seconds that must be more than zero (`Flush`): Fluent Bit 5.1 aborts on `Flush 0` or a
/// negative flush ("invalid flush value").
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub struct PositiveSeconds(pub f64);

impl OptValue for PositiveSeconds {
    const KIND: &'static str = "seconds";
    fn parse_opt(raw: &str) -> Result<Self, String> {
        let v = f64::parse_opt(raw)?;
        if v.is_finite() && v > 0.0 {
            Ok(PositiveSeconds(v))
        } else {
            Err(format!(
                "invalid flush value '{raw}': expected seconds above 0"
            ))
        }
    }
}

impl OptValue for ByteSize {
    const KIND: &'static str = "size";
    fn parse_opt(raw: &str) -> Result<Self, String> {
        parse_size(raw).map(ByteSize)
    }
}

/// A size limit that `false`/`off` turns off (`0`), as Fluent Bit reads
/// `multiline_buffer_limit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SizeLimit(pub u64);

impl SizeLimit {
    /// The limit in bytes; `None` when turned off.
    pub fn bytes(self) -> Option<u64> {
        (self.0 > 0).then_some(self.0)
    }
}

impl OptValue for SizeLimit {
    const KIND: &'static str = "size";
    fn parse_opt(raw: &str) -> Result<Self, String> {
        match parse_bool(raw) {
            Ok(false) => Ok(SizeLimit(0)),
            _ => parse_size(raw).map(SizeLimit),
        }
    }
}

impl OptValue for Duration {
    const KIND: &'static str = "time";
    fn parse_opt(raw: &str) -> Result<Self, String> {
        parse_seconds(raw).map(Duration::from_secs_f64)
    }
}

/// An optional value; an empty value (e.g. from an unset `${VAR}`) counts as absent.
impl<T: OptValue> OptValue for Option<T> {
    const KIND: &'static str = T::KIND;
    fn parse_opt(raw: &str) -> Result<Self, String> {
        if raw.trim().is_empty() {
            Ok(None)
        } else {
            T::parse_opt(raw).map(Some)
        }
    }
    fn missing() -> Option<Self> {
        Some(None)
    }
}

/// A key that may be repeated (`Add`, `Rule`, `Parsers_File`): every occurrence, in order.
impl OptValue for Vec<String> {
    const KIND: &'static str = "string, repeatable";
    fn parse_opt(raw: &str) -> Result<Self, String> {
        Ok(vec![raw.to_string()])
    }
    fn missing() -> Option<Self> {
        Some(Vec::new())
    }
    fn accumulate(slot: &mut Option<Self>, v: Self) {
        slot.get_or_insert_with(Vec::new).extend(v);
    }
}

/// Declares a plugin's options once; see the module docs.
///
/// ```
/// logferry_core::options! {
///     /// Options of an example plugin.
///     pub struct ExampleOptions for "example input" {
///         /// How often to do it.
///         pub interval: std::time::Duration = ["Interval_Sec", "Interval"] Some("1"),
///         /// A required name.
///         pub name: String = ["Label"] None,
///     }
/// }
/// assert_eq!(ExampleOptions::OPTIONS[0].name, "Interval_Sec");
/// ```
#[macro_export]
macro_rules! options {
    (
        $(#[$meta:meta])*
        $vis:vis struct $Name:ident for $what:literal {
            $(
                $(#[doc = $doc:literal])+
                $fvis:vis $field:ident : $ty:ty = [$key:literal $(, $alias:literal)*] $default:expr
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug)]
        $vis struct $Name {
            $( $(#[doc = $doc])+ $fvis $field: $ty, )*
        }

        impl $Name {
            /// Every option this plugin takes, in declaration order.
            pub const OPTIONS: &'static [$crate::config::OptSpec] = &[
                $( $crate::config::OptSpec {
                    name: $key,
                    aliases: &[$($alias),*],
                    kind: <$ty as $crate::config::OptValue>::KIND,
                    default: $default,
                    doc: concat!($($doc),+),
                }, )*
            ];

            /// Fills the options from a section's entries. `span` is the section's (for missing
            /// keys); `also_known` are keys handled elsewhere, offered as suggestions.
            #[allow(unused_mut, unused_variables, clippy::redundant_closure_call)]
            pub fn from_entries(
                span: &$crate::config::Span,
                entries: &[&$crate::config::Entry],
                also_known: &[&'static str],
            ) -> Result<Self, $crate::config::ConfigError> {
                $( let mut $field: Option<$ty> = None; )*
                // Every mistake is reported, not only the first: a dry run shows them all.
                let mut errors: Vec<$crate::config::ConfigError> = Vec::new();
                for e in entries {
                    let key = e.key.as_str();
                    $(
                        if [$key $(, $alias)*].iter().any(|n: &&str| n.eq_ignore_ascii_case(key)) {
                            match <$ty as $crate::config::OptValue>::parse_opt(&e.value) {
                                Ok(v) => <$ty as $crate::config::OptValue>::accumulate(&mut $field, v),
                                Err(r) => errors.push($crate::config::ConfigError::key(&e.span, key, r)),
                            }
                            continue;
                        }
                    )*
                    let names = Self::OPTIONS
                        .iter()
                        .flat_map(|o| std::iter::once(o.name).chain(o.aliases.iter().copied()))
                        .chain(also_known.iter().copied());
                    errors.push($crate::config::ConfigError::unknown_key(&e.span, key, $what, names));
                }
                $( let $field: Option<$ty> = match $field {
                    Some(v) => Some(v),
                    // A key given with a bad value is not also reported as missing.
                    None if entries.iter().any(|e| [$key $(, $alias)*].iter().any(|n: &&str| n.eq_ignore_ascii_case(&e.key))) => None,
                    None => match ($default as Option<&'static str>) {
                        Some(d) => match <$ty as $crate::config::OptValue>::parse_opt(d) {
                            Ok(v) => Some(v),
                            Err(r) => {
                                errors.push($crate::config::ConfigError::key(span, $key, format!("bad built-in default: {r}")));
                                None
                            }
                        },
                        None => match <$ty as $crate::config::OptValue>::missing() {
                            Some(v) => Some(v),
                            None => {
                                errors.push($crate::config::ConfigError::key(span, $key, concat!("missing required key for ", $what)));
                                None
                            }
                        },
                    },
                }; )*
                if !errors.is_empty() {
                    return Err($crate::config::ConfigError::many(errors));
                }
                match ($($field,)*) {
                    ($(Some($field),)*) => Ok($Name { $($field,)* }),
                    #[allow(unreachable_patterns)]
                    _ => Err($crate::config::ConfigError::key(span, "", "internal: an option was left unset")),
                }
            }

            /// The options with every key at its default (fails if a key is required).
            pub fn defaults() -> Result<Self, $crate::config::ConfigError> {
                Self::from_entries(&$crate::config::Span::command_line(), &[], &[])
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use crate::config::{ByteSize, Entry, OptValue, SizeLimit, Span};

    crate::options! {
        /// Test options.
        pub struct TestOpts for "test input" {
            /// A size.
            pub limit: ByteSize = ["Mem_Buf_Limit"] Some("5MB"),
            /// A switch with an alias.
            pub skip: bool = ["Skip_Long_Lines", "skip_long"] Some("off"),
            /// Repeatable.
            pub add: Vec<String> = ["Add"] None,
            /// Optional.
            pub db: Option<String> = ["DB"] None,
            /// Required.
            pub path: String = ["Path"] None,
            /// A time.
            pub every: std::time::Duration = ["Refresh_Interval"] Some("60"),
        }
    }

    fn entry(key: &str, value: &str, line: u32) -> Entry {
        Entry {
            key: key.into(),
            value: value.into(),
            span: Span::new(&Arc::from(Path::new("t.conf")), line),
        }
    }

    #[test]
    fn size_limits_turn_off_with_false() {
        assert_eq!(SizeLimit::parse_opt("2MB"), Ok(SizeLimit(2 * 1024 * 1024)));
        assert_eq!(
            SizeLimit::parse_opt("false").map(SizeLimit::bytes),
            Ok(None)
        );
        assert_eq!(SizeLimit::parse_opt("Off").map(SizeLimit::bytes), Ok(None));
        assert_eq!(
            SizeLimit::parse_opt("512k").map(SizeLimit::bytes),
            Ok(Some(512 * 1024))
        );
        assert!(SizeLimit::parse_opt("lots").is_err());
    }

    #[test]
    fn fills_defaults_aliases_and_repeats() {
        let es = [
            entry("path", "/x", 2),
            entry("SKIP_LONG", "On", 3),
            entry("Add", "a 1", 4),
            entry("add", "b 2", 5),
            entry("db", "", 6),
        ];
        let refs: Vec<&Entry> = es.iter().collect();
        let o = TestOpts::from_entries(&Span::command_line(), &refs, &[]).unwrap();
        assert_eq!(o.limit, ByteSize(5 * 1024 * 1024));
        assert!(o.skip);
        assert_eq!(o.add, ["a 1", "b 2"]);
        assert_eq!(o.db, None);
        assert_eq!(o.path, "/x");
        assert_eq!(o.every, std::time::Duration::from_secs(60));
    }

    #[test]
    fn unknown_key_names_file_line_key_and_suggests() {
        let es = [entry("Path", "/x", 1), entry("Mem_Buf_Limt", "5MB", 9)];
        let refs: Vec<&Entry> = es.iter().collect();
        let e = TestOpts::from_entries(&Span::command_line(), &refs, &["Tag"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.conf:9: Mem_Buf_Limt: unknown key for test input (did you mean 'Mem_Buf_Limit'?)"
        );
    }

    #[test]
    fn bad_value_and_missing_required() {
        let es = [
            entry("Path", "/x", 1),
            entry("Refresh_Interval", "often", 4),
        ];
        let refs: Vec<&Entry> = es.iter().collect();
        let e = TestOpts::from_entries(&Span::command_line(), &refs, &[]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("t.conf:4: Refresh_Interval: expected a time"),
            "{e}"
        );
        let sec = Span::new(&Arc::from(Path::new("t.conf")), 12);
        let e = TestOpts::from_entries(&sec, &[], &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.conf:12: Path: missing required key for test input"
        );
    }

    #[test]
    fn every_mistake_of_a_section_is_reported() {
        let es = [
            entry("Mem_Buf_Limit", "lots", 2),
            entry("Skip_Long_Lines", "maybe", 3),
            entry("Refresh_Intervl", "5", 4),
            entry("Refresh_Interval", "often", 5),
        ];
        let refs: Vec<&Entry> = es.iter().collect();
        let sec = Span::new(&Arc::from(Path::new("t.conf")), 1);
        let errs: Vec<String> = TestOpts::from_entries(&sec, &refs, &[])
            .unwrap_err()
            .into_vec()
            .iter()
            .map(ToString::to_string)
            .collect();
        let at: Vec<&str> = errs
            .iter()
            .map(|e| &e[..e.find(": ").unwrap() + 1])
            .collect();
        // Four bad lines and the missing Path, in the order they were written.
        assert_eq!(
            at,
            [
                "t.conf:2:",
                "t.conf:3:",
                "t.conf:4:",
                "t.conf:5:",
                "t.conf:1:"
            ],
            "{errs:#?}"
        );
        assert!(errs[4].ends_with("Path: missing required key for test input"));
    }

    #[test]
    fn defaults_fail_when_a_key_is_required() {
        let e = TestOpts::defaults().unwrap_err();
        assert!(e.to_string().contains("Path: missing required key"), "{e}");
    }

    #[test]
    fn every_option_has_a_doc_line() {
        assert!(TestOpts::OPTIONS.iter().all(|o| !o.doc.trim().is_empty()));
    }
}
