//! `Time_Format`: a strptime subset compiled once, and the rules Fluent Bit applies around it.
//!
//! Supported: `%Y %y %m %d %e %j %H %I %M %S %p %L %z %Z %b %B %h %a %A %T %D %F %R %s %n %t %%`
//! and literal characters; a blank in the format matches any run of blanks (even none), as in
//! strptime(3). As in Fluent Bit, input left over after the format is ignored (Docker's trailing
//! `Z` against `%Y-%m-%dT%H:%M:%S.%L`), a format without a year takes the current one (syslog
//! RFC 3164), and without `%z` the time is read in `Time_Offset`, in the IANA zone
//! `Time_Zone` (from the system zoneinfo, `TZDIR` or `/usr/share/zoneinfo`, as Fluent Bit 5.1
//! reads it), or in the system time zone with `Time_System_Timezone On`. `%L` takes any number of digits (nanoseconds kept, the rest
//! ignored).

use chrono::{Datelike, Local, NaiveDate, TimeZone};
use logferry_core::EventTime;

/// One piece of a compiled format.
#[derive(Clone, Debug, PartialEq)]
enum Item {
    /// Text that must appear as written.
    Literal(char),
    /// Any run of blanks, possibly empty.
    Space,
    Year,
    Year2,
    Month,
    MonthName,
    Day,
    YearDay,
    WeekdayName,
    Hour,
    Hour12,
    AmPm,
    Minute,
    Second,
    Fraction,
    Offset,
    ZoneName,
    Epoch,
}

/// A compiled `Time_Format` plus the parser's time options.
#[derive(Clone, Debug)]
pub struct TimeFormat {
    items: Vec<Item>,
    has_year: bool,
    has_offset: bool,
    /// Fixed offset in seconds east of UTC for formats without `%z` (`Time_Offset`).
    offset: i32,
    system_timezone: bool,
    /// `Time_Zone`: an IANA zone for formats without `%z`.
    zone: Option<jiff::tz::TimeZone>,
    strict: bool,
    /// The format is the common log format's `%d/%b/%Y:%H:%M:%S %z` (nginx, Apache): times of
    /// its fixed width are read by [`clf`] instead of item by item.
    clf: bool,
}

/// What a parse found; absent fields take defaults.
#[derive(Default, Debug)]
struct Parts {
    year: Option<i64>,
    month: Option<u32>,
    day: Option<u32>,
    yday: Option<u32>,
    hour: u32,
    hour12: Option<u32>,
    pm: Option<bool>,
    minute: u32,
    second: u32,
    nanos: u32,
    offset: Option<i32>,
    epoch: Option<i64>,
    /// How many conversions succeeded (for `Time_Strict Off`).
    fields: usize,
}

impl TimeFormat {
    /// Compiles `format`. Errors name the bad conversion.
    pub fn new(format: &str) -> Result<TimeFormat, String> {
        let mut items = Vec::new();
        let mut chars = format.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                items.push(if c.is_whitespace() {
                    Item::Space
                } else {
                    Item::Literal(c)
                });
                continue;
            }
            let Some(spec) = chars.next() else {
                return Err("Time_Format ends with a lone '%'".into());
            };
            match spec {
                'Y' => items.push(Item::Year),
                'y' => items.push(Item::Year2),
                'm' => items.push(Item::Month),
                'b' | 'B' | 'h' => items.push(Item::MonthName),
                'd' | 'e' => items.push(Item::Day),
                'j' => items.push(Item::YearDay),
                'a' | 'A' => items.push(Item::WeekdayName),
                'H' | 'k' => items.push(Item::Hour),
                'I' | 'l' => items.push(Item::Hour12),
                'p' | 'P' => items.push(Item::AmPm),
                'M' => items.push(Item::Minute),
                'S' => items.push(Item::Second),
                'L' | 'N' => items.push(Item::Fraction),
                'z' => items.push(Item::Offset),
                'Z' => items.push(Item::ZoneName),
                's' => items.push(Item::Epoch),
                'n' | 't' => items.push(Item::Space),
                '%' => items.push(Item::Literal('%')),
                'T' => items.extend([
                    Item::Hour,
                    Item::Literal(':'),
                    Item::Minute,
                    Item::Literal(':'),
                    Item::Second,
                ]),
                'R' => items.extend([Item::Hour, Item::Literal(':'), Item::Minute]),
                'D' => items.extend([
                    Item::Month,
                    Item::Literal('/'),
                    Item::Day,
                    Item::Literal('/'),
                    Item::Year2,
                ]),
                'F' => items.extend([
                    Item::Year,
                    Item::Literal('-'),
                    Item::Month,
                    Item::Literal('-'),
                    Item::Day,
                ]),
                other => return Err(format!("Time_Format: unsupported conversion '%{other}'")),
            }
        }
        let has_year = items
            .iter()
            .any(|i| matches!(i, Item::Year | Item::Year2 | Item::Epoch));
        let has_offset = items
            .iter()
            .any(|i| matches!(i, Item::Offset | Item::Epoch));
        let clf = items == CLF_ITEMS;
        Ok(TimeFormat {
            items,
            has_year,
            has_offset,
            offset: 0,
            system_timezone: false,
            zone: None,
            strict: true,
            clf,
        })
    }

    /// Sets `Time_Zone`: read zone-less times in this IANA zone (daylight saving included).
    pub fn with_zone(mut self, zone: Option<jiff::tz::TimeZone>) -> Self {
        self.zone = zone;
        self
    }

    /// Sets `Time_Offset` (seconds east of UTC), used when the format has no `%z`.
    pub fn with_offset(mut self, offset: i32) -> Self {
        self.offset = offset;
        self
    }

    /// Sets `Time_System_Timezone`: read zone-less times in the local time zone (`TZ`).
    pub fn with_system_timezone(mut self, on: bool) -> Self {
        self.system_timezone = on;
        self
    }

    /// Sets `Time_Strict`: when off, a time that matches only the start of the format is
    /// accepted with what was read (e.g. no fraction for `%S.%L`).
    pub fn with_strict(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }

    /// Parses `text`; `None` when it does not match.
    pub fn parse(&self, text: &str) -> Option<EventTime> {
        self.parse_with(text, EventTime::now)
    }

    /// As [`TimeFormat::parse`], with `now` supplying the year when the format has none.
    pub fn parse_at(&self, text: &str, now: EventTime) -> Option<EventTime> {
        self.parse_with(text, || now)
    }

    fn parse_with(&self, text: &str, now: impl FnOnce() -> EventTime) -> Option<EventTime> {
        let mut p = Parts::default();
        let complete = self.scan(text.as_bytes(), &mut p);
        if !complete && (self.strict || p.fields == 0) {
            return None;
        }
        self.resolve(p, now)
    }

    /// Runs the format over the input; false when a conversion or literal did not match.
    fn scan(&self, s: &[u8], p: &mut Parts) -> bool {
        if self.clf {
            if let Some(parts) = clf(s) {
                *p = parts;
                return true;
            }
        }
        let mut pos = 0usize;
        for item in &self.items {
            let ok = match item {
                // The usual literal (`/`, `:`, `-`, `T`) is one byte: compared as one.
                Item::Literal(c) if c.is_ascii() => {
                    let hit = s.get(pos) == Some(&(*c as u8));
                    pos += usize::from(hit);
                    hit
                }
                Item::Literal(c) => {
                    let mut buf = [0u8; 4];
                    let lit = c.encode_utf8(&mut buf).as_bytes();
                    if s[pos..].starts_with(lit) {
                        pos += lit.len();
                        true
                    } else {
                        false
                    }
                }
                Item::Space => {
                    while pos < s.len() && s[pos].is_ascii_whitespace() {
                        pos += 1;
                    }
                    true
                }
                Item::Year => num(s, &mut pos, 4, true)
                    .map(|v| p.year = Some(v))
                    .is_some(),
                Item::Year2 => num(s, &mut pos, 2, false)
                    .map(|v| p.year = Some(if v < 69 { 2000 + v } else { 1900 + v }))
                    .is_some(),
                Item::Month => range(num(s, &mut pos, 2, false), 1, 12)
                    .map(|v| p.month = Some(v))
                    .is_some(),
                Item::MonthName => name(s, &mut pos, &MONTHS, &MONTH_KEYS)
                    .map(|v| p.month = Some(v + 1))
                    .is_some(),
                Item::Day => range(num(s, &mut pos, 2, false), 1, 31)
                    .map(|v| p.day = Some(v))
                    .is_some(),
                Item::YearDay => range(num(s, &mut pos, 3, false), 1, 366)
                    .map(|v| p.yday = Some(v))
                    .is_some(),
                Item::WeekdayName => name(s, &mut pos, &WEEKDAYS, &WEEKDAY_KEYS).is_some(),
                Item::Hour => range(num(s, &mut pos, 2, false), 0, 23)
                    .map(|v| p.hour = v)
                    .is_some(),
                Item::Hour12 => range(num(s, &mut pos, 2, false), 1, 12)
                    .map(|v| p.hour12 = Some(v))
                    .is_some(),
                Item::AmPm => name(s, &mut pos, &AMPM, &AMPM_KEYS)
                    .map(|v| p.pm = Some(v == 1))
                    .is_some(),
                Item::Minute => range(num(s, &mut pos, 2, false), 0, 59)
                    .map(|v| p.minute = v)
                    .is_some(),
                Item::Second => range(num(s, &mut pos, 2, false), 0, 61)
                    .map(|v| p.second = v)
                    .is_some(),
                Item::Fraction => fraction(s, &mut pos).map(|v| p.nanos = v).is_some(),
                Item::Offset => offset(s, &mut pos).map(|v| p.offset = Some(v)).is_some(),
                Item::ZoneName => {
                    let start = pos;
                    while pos < s.len() && s[pos].is_ascii_alphabetic() {
                        pos += 1;
                    }
                    let zone = &s[start..pos];
                    if zone.eq_ignore_ascii_case(b"UTC")
                        || zone.eq_ignore_ascii_case(b"GMT")
                        || zone.eq_ignore_ascii_case(b"Z")
                    {
                        p.offset = Some(0);
                    }
                    pos > start
                }
                Item::Epoch => num(s, &mut pos, 19, true)
                    .map(|v| p.epoch = Some(v))
                    .is_some(),
            };
            if !ok {
                return false;
            }
            if !matches!(item, Item::Literal(_) | Item::Space) {
                p.fields += 1;
            }
        }
        true
    }

    /// Turns the parts into a time, applying the year, offset and time zone rules.
    fn resolve(&self, p: Parts, now: impl FnOnce() -> EventTime) -> Option<EventTime> {
        if let Some(epoch) = p.epoch {
            let secs = epoch.checked_sub(i64::from(p.offset.unwrap_or(0)))?;
            return secs
                .checked_mul(1_000_000_000)
                .and_then(|ns| ns.checked_add(i64::from(p.nanos)))
                .map(EventTime);
        }
        let mut hour = p.hour;
        if let Some(h12) = p.hour12 {
            hour = h12 % 12;
        }
        if p.pm == Some(true) && hour < 12 {
            hour += 12;
        }
        // A format without a year reads today's year (and today's date for missing fields),
        // in UTC, or in the local zone with Time_System_Timezone.
        let (year, month, day) = if self.has_year {
            (p.year.unwrap_or(1970), p.month, p.day)
        } else {
            let today = self.today(now())?;
            (
                p.year.unwrap_or(i64::from(today.year())),
                p.month.or(Some(today.month())),
                p.day.or(Some(today.day())),
            )
        };
        let days = match (month, day, p.yday) {
            (None, None, Some(yday)) => days_from_ordinal(year, yday)?,
            (m, d, _) => civil_days(year, m.unwrap_or(1), d.unwrap_or(1))?,
        };
        let local =
            days * 86_400 + i64::from(hour) * 3600 + i64::from(p.minute) * 60 + i64::from(p.second);
        let offset = match p.offset {
            Some(o) => i64::from(o),
            None if self.has_offset => 0,
            None if self.zone.is_some() => zone_offset(self.zone.as_ref()?, local)?,
            None if self.system_timezone => local_offset(local)?,
            None => i64::from(self.offset),
        };
        (local - offset)
            .checked_mul(1_000_000_000)
            .and_then(|ns| ns.checked_add(i64::from(p.nanos)))
            .map(EventTime)
    }

    /// Today's date in UTC, or in the zone times are read in.
    fn today(&self, now: EventTime) -> Option<NaiveDate> {
        let utc = chrono::DateTime::from_timestamp(now.secs(), 0)?;
        if let Some(z) = &self.zone {
            let off = z
                .to_offset(jiff::Timestamp::from_second(now.secs()).ok()?)
                .seconds();
            let local = chrono::DateTime::from_timestamp(now.secs() + i64::from(off), 0)?;
            return Some(local.date_naive());
        }
        if self.system_timezone {
            Some(utc.with_timezone(&Local).date_naive())
        } else {
            Some(utc.date_naive())
        }
    }
}

/// The dates `NaiveDate` can hold (chrono's range, which this code used before): a year
/// outside it is no time, as it was.
const YEARS: std::ops::RangeInclusive<i64> = -262_143..=262_142;

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

/// Days from 1970-01-01 to `year-month-day` of the proleptic Gregorian calendar; `None` for a
/// day the month does not have (Feb 30), as `NaiveDate::from_ymd_opt` gives: the checks, then
/// [`days_from_civil`] instead of chrono's table walk and its `NaiveDate` on every line.
fn civil_days(year: i64, month: u32, day: u32) -> Option<i64> {
    const DAYS: [u32; 12] = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if !YEARS.contains(&year) || !(1..=12).contains(&month) || day == 0 {
        return None;
    }
    let last = DAYS[month as usize - 1] + u32::from(month == 2 && is_leap(year));
    if day > last {
        return None;
    }
    Some(days_of(year, i64::from(month), i64::from(day)))
}

/// Days since 1970-01-01 of a proleptic Gregorian date, unchecked (Howard Hinnant's
/// `days_from_civil`: years counted from March, so the leap day is last). Tail's RFC 3339
/// reader calls it too, on a date it has checked itself.
#[inline]
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

thread_local! {
    /// The date [`days_of`] last read on this thread, as its key, and its day number.
    static LAST_DAY: std::cell::Cell<(i64, i64)> = const { std::cell::Cell::new((i64::MIN, 0)) };
}

/// [`days_from_civil`] for a month of 1–12 and a day of 1–31, remembering the last date read
/// on this thread: one file's lines are nearly all of one day, and the arithmetic cost ~50
/// instructions per line (twelfth session).
pub fn days_of(y: i64, m: i64, d: i64) -> i64 {
    // Month and day fit in 4 and 5 bits; the year takes the rest.
    let key = (y << 9) | ((m & 0xF) << 5) | (d & 0x1F);
    LAST_DAY.with(|last| {
        let (k, days) = last.get();
        if k == key {
            return days;
        }
        let days = days_from_civil(y, m, d);
        last.set((key, days));
        days
    })
}

/// Days from 1970-01-01 to day `yday` (1-based) of `year`; `None` past the year's last day.
fn days_from_ordinal(year: i64, yday: u32) -> Option<i64> {
    let len = 365 + u32::from(is_leap(year));
    if yday == 0 || yday > len {
        return None;
    }
    Some(civil_days(year, 1, 1)? + i64::from(yday) - 1)
}

/// The local zone's offset (seconds east of UTC) for a local wall-clock time, as mktime(3)
/// with `tm_isdst = -1` would pick it: the earlier of two readings in a fold, and the offset
/// before a gap.
fn local_offset(local_secs: i64) -> Option<i64> {
    let naive = chrono::DateTime::from_timestamp(local_secs, 0)?.naive_utc();
    let offset = match Local.offset_from_local_datetime(&naive) {
        chrono::LocalResult::Single(o) => o,
        chrono::LocalResult::Ambiguous(a, _) => a,
        chrono::LocalResult::None => Local.offset_from_utc_datetime(&naive),
    };
    Some(i64::from(offset.local_minus_utc()))
}

/// A zone's offset (seconds east of UTC) for a local wall-clock time, picked as for the
/// system zone ([`local_offset`]): the earlier reading in a fold, the offset before a gap.
fn zone_offset(zone: &jiff::tz::TimeZone, local_secs: i64) -> Option<i64> {
    let civil = jiff::Timestamp::from_second(local_secs)
        .ok()?
        .to_zoned(jiff::tz::TimeZone::UTC)
        .datetime();
    let offset = match zone.to_ambiguous_zoned(civil).offset() {
        jiff::tz::AmbiguousOffset::Unambiguous { offset } => offset,
        jiff::tz::AmbiguousOffset::Fold { before, .. } => before,
        jiff::tz::AmbiguousOffset::Gap { before, .. } => before,
    };
    Some(i64::from(offset.seconds()))
}

/// The IANA zone `name` from the system zoneinfo (`TZDIR`, else `/usr/share/zoneinfo`), as
/// Fluent Bit 5.1 loads `Time_Zone`.
pub fn load_zone(name: &str) -> Result<jiff::tz::TimeZone, String> {
    let name = name.trim();
    if name.is_empty() || name.starts_with(['+', '-']) || name.contains("..") {
        return Err(format!(
            "'{name}' is not an IANA time zone name (such as Europe/Berlin; use Time_Offset for +0100)"
        ));
    }
    let dir = std::env::var_os("TZDIR")
        .filter(|d| !d.is_empty())
        .map_or_else(
            || std::path::PathBuf::from("/usr/share/zoneinfo"),
            std::path::PathBuf::from,
        );
    let path = dir.join(name);
    let data = std::fs::read(&path).map_err(|e| {
        format!(
            "unknown time zone '{name}': cannot read {}: {e}",
            path.display()
        )
    })?;
    jiff::tz::TimeZone::tzif(name, &data).map_err(|e| {
        format!(
            "time zone '{name}': {} is not a TZif file: {e}",
            path.display()
        )
    })
}

const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];
const WEEKDAYS: [&str; 7] = [
    "sunday",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
];
const AMPM: [&str; 2] = ["am", "pm"];

/// Reads a full or three-letter name from `names` (lowercase; matched case-insensitively);
/// returns its index. The input's first three letters are lowercased once into a number, so
/// each candidate costs one masked compare (a name's first letters are unique in each table).
/// The full name is taken when it is there (a full name starts with its short form); its next
/// letter is checked before the whole name is compared, so "Nov/" costs one byte's look.
fn name(s: &[u8], pos: &mut usize, names: &[&str], keys: &[(u32, u32)]) -> Option<u32> {
    let rest = s.get(*pos..)?;
    let mut key = [0u8; 4];
    let k = rest.len().min(3);
    for (d, b) in key.iter_mut().zip(&rest[..k]) {
        *d = b.to_ascii_lowercase();
    }
    let key = u32::from_le_bytes(key);
    // A name longer than the input has a letter where `key` has a zero: no match.
    let i = keys
        .iter()
        .position(|&(short_key, mask)| key & mask == short_key)?;
    let n = names[i].as_bytes();
    let short = n.len().min(3);
    let full = n.len() > short
        && rest.get(short).map(u8::to_ascii_lowercase) == Some(n[short])
        && rest.len() >= n.len()
        && rest[..n.len()].eq_ignore_ascii_case(n);
    *pos += if full { n.len() } else { short };
    Some(i as u32)
}

/// Each name's first three letters (fewer for a shorter name) as a little-endian number, with
/// the mask of the bytes they fill: what [`name`] compares the input's first letters with.
const fn short_keys<const N: usize>(names: [&str; N]) -> [(u32, u32); N] {
    let mut out = [(0u32, 0u32); N];
    let mut i = 0;
    while i < N {
        let n = names[i].as_bytes();
        let mut j = 0;
        while j < 3 && j < n.len() {
            out[i].0 |= (n[j] as u32) << (8 * j);
            out[i].1 |= 0xff << (8 * j);
            j += 1;
        }
        i += 1;
    }
    out
}

const MONTH_KEYS: [(u32, u32); 12] = short_keys(MONTHS);
const WEEKDAY_KEYS: [(u32, u32); 7] = short_keys(WEEKDAYS);
const AMPM_KEYS: [(u32, u32); 2] = short_keys(AMPM);

/// Reads up to `max` digits (after optional leading blanks, and a sign when `signed`).
fn num(s: &[u8], pos: &mut usize, max: usize, signed: bool) -> Option<i64> {
    let mut i = *pos;
    while i < s.len() && s[i] == b' ' {
        i += 1;
    }
    let mut neg = false;
    if signed && i < s.len() && (s[i] == b'-' || s[i] == b'+') {
        neg = s[i] == b'-';
        i += 1;
    }
    let start = i;
    let mut v: i64 = 0;
    while i < s.len() && i - start < max && s[i].is_ascii_digit() {
        v = v.checked_mul(10)?.checked_add(i64::from(s[i] - b'0'))?;
        i += 1;
    }
    if i == start {
        return None;
    }
    *pos = i;
    Some(if neg { -v } else { v })
}

/// `%d/%b/%Y:%H:%M:%S %z`, compiled: the time of every nginx and Apache access line.
const CLF_ITEMS: [Item; 13] = [
    Item::Day,
    Item::Literal('/'),
    Item::MonthName,
    Item::Literal('/'),
    Item::Year,
    Item::Literal(':'),
    Item::Hour,
    Item::Literal(':'),
    Item::Minute,
    Item::Literal(':'),
    Item::Second,
    Item::Space,
    Item::Offset,
];

/// [`CLF_ITEMS`] read at fixed places from a time of exactly their usual width
/// (`19/Dec/2019:17:41:12 +0000`): one check for all digits, the month's three letters
/// compared as one number. `None` for anything else, even a time the items would read, which
/// then goes item by item: this gives the same parts or none (`tests::clf_matches_the_items`).
/// About a third of the instructions of the item loop on the seed's lines (twelfth session).
fn clf(s: &[u8]) -> Option<Parts> {
    let s: &[u8; 26] = s.try_into().ok()?;
    if s[2] != b'/'
        || s[6] != b'/'
        || s[11] != b':'
        || s[14] != b':'
        || s[17] != b':'
        || s[20] != b' '
    {
        return None;
    }
    // Digits at 0 1 7 8 9 10 12 13 15 16 18 19 22 23 24 25, by the words holding them.
    if !(digits_in_word(word(s, 0)?, byte_mask(&[0, 1, 7]))
        && digits_in_word(word(s, 8)?, byte_mask(&[0, 1, 2, 4, 5, 7]))
        && digits_in_word(word(s, 16)?, byte_mask(&[0, 2, 3, 6, 7]))
        && digits_in_word(word(s, 18)?, byte_mask(&[6, 7])))
    {
        return None;
    }
    let d = |i: usize| s[i].wrapping_sub(b'0');
    let two = |i: usize| u32::from(d(i)) * 10 + u32::from(d(i + 1));
    // `| 0x20` lowers a letter and maps nothing else onto one.
    let key = u32::from_le_bytes([s[3] | 0x20, s[4] | 0x20, s[5] | 0x20, 0]);
    let month = MONTH_KEYS.iter().position(|&(k, _)| k == key)? as u32 + 1;
    let (day, hour, minute, second) = (two(0), two(12), two(15), two(18));
    let (off_h, off_m) = (two(22), two(24));
    let sign = match s[21] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    if !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 61
        || off_h > 23
        || off_m > 59
    {
        return None;
    }
    Some(Parts {
        year: Some(i64::from(two(7) * 100 + two(9))),
        month: Some(month),
        day: Some(day),
        hour,
        minute,
        second,
        offset: Some(sign * (off_h * 3600 + off_m * 60) as i32),
        fields: 7,
        ..Parts::default()
    })
}

/// The 8 bytes of `s` from `at` as a little-endian word (the first byte lowest).
#[inline]
pub fn word(s: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(s.get(at..at + 8)?.try_into().ok()?))
}

/// A word with 0xFF in each byte listed (0 the lowest), for [`digits_in_word`].
pub const fn byte_mask(at: &[usize]) -> u64 {
    let mut m = 0;
    let mut i = 0;
    while i < at.len() {
        m |= 0xFF << (8 * at[i]);
        i += 1;
    }
    m
}

/// Whether every byte of `w` that `at` selects ([`byte_mask`]) is an ASCII digit: its high
/// nibble is 3, and adding 6 leaves it 3 (no carry out of a low nibble of 9 or less, and so
/// none into the next byte). The fixed-width time readers check all their digits this way,
/// a few instructions per word instead of a compare per byte.
#[inline]
pub fn digits_in_word(w: u64, at: u64) -> bool {
    const HIGH: u64 = 0xF0F0_F0F0_F0F0_F0F0;
    const ZEROS: u64 = 0x3030_3030_3030_3030;
    const SIXES: u64 = 0x0606_0606_0606_0606;
    w & HIGH & at == ZEROS & at && w.wrapping_add(SIXES & at) & HIGH & at == ZEROS & at
}

/// Narrows a number to `lo..=hi`.
fn range(v: Option<i64>, lo: i64, hi: i64) -> Option<u32> {
    v.filter(|v| (lo..=hi).contains(v)).map(|v| v as u32)
}

/// `%L`: one or more digits of a fraction of a second, as nanoseconds (digits past the ninth are
/// read and ignored).
fn fraction(s: &[u8], pos: &mut usize) -> Option<u32> {
    let start = *pos;
    let mut nanos: u32 = 0;
    let mut i = start;
    while i < s.len() && s[i].is_ascii_digit() {
        if i - start < 9 {
            nanos = nanos * 10 + u32::from(s[i] - b'0');
        }
        i += 1;
    }
    let digits = i - start;
    if digits == 0 {
        return None;
    }
    for _ in digits..9 {
        nanos *= 10;
    }
    *pos = i;
    Some(nanos)
}

/// `%z`: `Z`, `UTC`, `GMT`, `+hh`, `+hhmm` or `+hh:mm`; seconds east of UTC.
fn offset(s: &[u8], pos: &mut usize) -> Option<i32> {
    let rest = &s[*pos..];
    if rest.first().is_some_and(|c| *c == b'Z' || *c == b'z') {
        *pos += 1;
        return Some(0);
    }
    for name in [b"UTC", b"GMT"] {
        if rest.len() >= 3 && rest[..3].eq_ignore_ascii_case(name) {
            *pos += 3;
            return Some(0);
        }
    }
    let (consumed, secs) = parse_offset_prefix(rest)?;
    *pos += consumed;
    Some(secs)
}

/// Reads `+hh`, `+hhmm` or `+hh:mm` at the start of `s`: bytes used and seconds east of UTC.
fn parse_offset_prefix(s: &[u8]) -> Option<(usize, i32)> {
    let neg = match s.first()? {
        b'+' => false,
        b'-' => true,
        _ => return None,
    };
    let digit = |i: usize| {
        s.get(i)
            .filter(|c| c.is_ascii_digit())
            .map(|c| i32::from(c - b'0'))
    };
    let hours = digit(1)? * 10 + digit(2)?;
    let (used, minutes) = if s.get(3) == Some(&b':') {
        (6, digit(4)? * 10 + digit(5)?)
    } else if let (Some(a), Some(b)) = (digit(3), digit(4)) {
        (5, a * 10 + b)
    } else {
        (3, 0)
    };
    if hours > 23 || minutes > 59 {
        return None;
    }
    let secs = hours * 3600 + minutes * 60;
    Some((used, if neg { -secs } else { secs }))
}

/// Parses a `Time_Offset` value (`+0200`, `-06:00`, `Z`, `UTC`): seconds east of UTC.
pub fn parse_time_offset(text: &str) -> Result<i32, String> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("z") || t.eq_ignore_ascii_case("utc") || t.eq_ignore_ascii_case("gmt")
    {
        return Ok(0);
    }
    match parse_offset_prefix(t.as_bytes()) {
        Some((used, secs)) if used == t.len() => Ok(secs),
        _ => Err(format!(
            "expected an offset such as +0200, -0600 or +05:30, got '{text}'"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The remembered day is the computed one, for dates read in turn, repeated and
    /// alternating, across month, year and leap-day boundaries.
    #[test]
    fn days_of_matches_days_from_civil() {
        let mut dates = Vec::new();
        for y in [1969, 1970, 2000, 2023, 2024, 2100, 2262, -5] {
            for m in 1..=12 {
                for d in [1, 2, 28, 29, 30, 31] {
                    dates.push((y, m, d));
                }
            }
        }
        for (i, &(y, m, d)) in dates.iter().enumerate() {
            let other = dates[(i * 7919) % dates.len()];
            for (y, m, d) in [(y, m, d), (y, m, d), other, (y, m, d)] {
                assert_eq!(days_of(y, m, d), days_from_civil(y, m, d), "{y}-{m}-{d}");
            }
        }
    }

    /// Each selected byte is checked, with every value it can have; unselected bytes do not
    /// count, whatever they hold.
    #[test]
    fn digits_in_word_checks_exactly_the_selected_bytes() {
        for at in 0..8 {
            for c in 0..=255u8 {
                let mut b = *b"01234567";
                b[at] = c;
                let w = u64::from_le_bytes(b);
                assert_eq!(digits_in_word(w, !0), c.is_ascii_digit(), "{at} {c}");
                assert_eq!(digits_in_word(w, byte_mask(&[at])), c.is_ascii_digit());
                let others: Vec<usize> = (0..8).filter(|i| *i != at).collect();
                assert!(digits_in_word(w, byte_mask(&others)), "{at} {c}");
            }
        }
        assert_eq!(byte_mask(&[0, 7]), 0xFF00_0000_0000_00FF);
    }

    /// The fixed-width reader gives what the item loop gives, on every time of the common log
    /// format's width it is tried on: each month in three cases, then each byte replaced by
    /// bytes that are or border on digits, letters and separators; strict and not, since a
    /// partial read differs between the two.
    #[test]
    fn clf_matches_the_items() {
        let now = EventTime::from_parts(1_700_000_000, 0);
        let fast = TimeFormat::new("%d/%b/%Y:%H:%M:%S %z").unwrap();
        assert!(fast.clf, "the nginx format is recognized");
        assert!(TimeFormat::new("%d/%b/%Y:%H:%M:%S%z").is_ok_and(|f| !f.clf));
        let mut slow = fast.clone();
        slow.clf = false;
        let mut texts = Vec::new();
        for m in MONTHS {
            let m = &m[..3];
            for name in [m.to_string(), m.to_uppercase(), m.to_lowercase()] {
                texts.push(format!("09/{name}/2019:17:41:12 +0530"));
            }
        }
        let base = ["19/Dec/2019:17:41:12 +0000", "31/Jan/1970:00:00:60 -2359"];
        let bytes = b"0129:;/+-  aAzZ@[`{";
        for t in base {
            for at in 0..t.len() {
                for &c in bytes.iter() {
                    let mut m = t.as_bytes().to_vec();
                    m[at] = c;
                    texts.push(String::from_utf8(m).unwrap());
                }
            }
        }
        let mut read = 0;
        for t in &texts {
            for strict in [true, false] {
                let (f, s) = (
                    fast.clone().with_strict(strict),
                    slow.clone().with_strict(strict),
                );
                let got = f.parse_at(t, now);
                assert_eq!(got, s.parse_at(t, now), "{t} strict {strict}");
                read += usize::from(got.is_some() && clf(t.as_bytes()).is_some());
            }
        }
        assert!(read > 200, "the fast path read {read} of them");
        assert_eq!(
            fast.parse_at("19/Dec/2019:17:41:12 +0000", now),
            Some(EventTime::from_parts(1_576_777_272, 0))
        );
    }

    fn at(fmt: &str, text: &str) -> Option<i64> {
        TimeFormat::new(fmt).unwrap().parse(text).map(|t| t.0)
    }

    /// One-byte literals compare as a byte, others as text; a literal past the end of the
    /// input, or a different byte, is no match.
    #[test]
    fn literals_ascii_and_not() {
        assert_eq!(
            at("%Y年%m月%d日", "2024年05月06日"),
            at("%Y-%m-%d", "2024-05-06")
        );
        assert!(at("%Y年%m月", "2024-05").is_none());
        assert!(at("%d/%b/%Y", "24/Nov").is_none());
        assert!(at("%d/%b/%Y", "24/Nov-2026").is_none());
        assert_eq!(
            at("%d/%b/%Y:%H:%M:%S %z", "24/Nov/2026:10:03:07 +0000"),
            Some(1_795_514_587_000_000_000)
        );
        for (i, m) in MONTHS.iter().enumerate() {
            let text = format!("01/{}/2026", &m[..3].to_uppercase());
            let want = at("%d/%m/%Y", &format!("01/{:02}/2026", i + 1));
            assert_eq!(at("%d/%b/%Y", &text), want, "{text}");
        }
    }

    /// The day counts agree with chrono's `NaiveDate` (what this code used before) on every
    /// month and day number, valid or not, across leap and century years and both eras, and
    /// on the edges of chrono's range.
    #[test]
    fn day_counts_agree_with_chrono() {
        let chrono_days = |y: i64, m: u32, d: u32| {
            NaiveDate::from_ymd_opt(i32::try_from(y).ok()?, m, d)
                .map(|n| i64::from(n.num_days_from_ce()) - 719_163)
        };
        let years = (-410..=410)
            .chain(1590..=2410)
            .chain([-262_144, -262_143, 262_142, 262_143, 99_999]);
        let mut checked = 0;
        for y in years {
            for m in 0..=13 {
                for d in 0..=32 {
                    assert_eq!(civil_days(y, m, d), chrono_days(y, m, d), "{y}-{m}-{d}");
                    checked += 1;
                }
            }
            for yd in [0, 1, 59, 60, 365, 366, 367] {
                let want = i32::try_from(y)
                    .ok()
                    .and_then(|y32| NaiveDate::from_yo_opt(y32, yd))
                    .map(|n| i64::from(n.num_days_from_ce()) - 719_163);
                assert_eq!(days_from_ordinal(y, yd), want, "{y} day {yd}");
            }
        }
        assert!(checked > 700_000);
        assert_eq!(civil_days(1970, 1, 1), Some(0));
        assert_eq!(civil_days(2000, 2, 29), Some(11_016));
        assert_eq!(civil_days(1900, 2, 29), None);
    }

    #[test]
    fn month_and_day_names_full_short_any_case() {
        let mut pos = 0;
        assert_eq!(
            name(b"September 3", &mut pos, &MONTHS, &MONTH_KEYS),
            Some(8)
        );
        assert_eq!(pos, 9, "the full name is consumed");
        pos = 0;
        assert_eq!(name(b"sep 3", &mut pos, &MONTHS, &MONTH_KEYS), Some(8));
        assert_eq!(pos, 3);
        pos = 0;
        assert_eq!(name(b"NOV", &mut pos, &MONTHS, &MONTH_KEYS), Some(10));
        pos = 0;
        assert_eq!(name(b"Ju", &mut pos, &MONTHS, &MONTH_KEYS), None);
        pos = 0;
        assert_eq!(
            name(b"Junk", &mut pos, &MONTHS, &MONTH_KEYS),
            Some(5),
            "Jun, as strptime"
        );
        assert_eq!(pos, 3);
        pos = 0;
        assert_eq!(name(b"PM", &mut pos, &AMPM, &AMPM_KEYS), Some(1));
        pos = 1;
        assert_eq!(
            name(b"xaM", &mut pos, &AMPM, &AMPM_KEYS),
            Some(0),
            "from the position on"
        );
        pos = 5;
        assert_eq!(
            name(b"Nov", &mut pos, &MONTHS, &MONTH_KEYS),
            None,
            "past the end"
        );
        // `name` lowercases the input only: the tables must be lowercase.
        for n in MONTHS.iter().chain(&WEEKDAYS).chain(&AMPM) {
            assert_eq!(*n, n.to_ascii_lowercase());
        }
    }

    #[test]
    fn nginx_time() {
        assert_eq!(
            at("%d/%b/%Y:%H:%M:%S %z", "19/Dec/2019:17:41:12 +0000"),
            Some(1_576_777_272_000_000_000)
        );
    }

    #[test]
    fn offsets_and_fractions() {
        let base = 1_576_777_272_000_000_000i64;
        let f = "%Y-%m-%dT%H:%M:%S.%L%z";
        assert_eq!(at(f, "2019-12-19T17:41:12.5Z"), Some(base + 500_000_000));
        assert_eq!(at(f, "2019-12-19T19:41:12.000000001+02:00"), Some(base + 1));
        assert_eq!(
            at(f, "2019-12-19T12:41:12.123456789123-0500"),
            Some(base + 123_456_789)
        );
        assert_eq!(at(f, "2019-12-19T17:41:12Z"), None);
    }

    #[test]
    fn trailing_input_is_ignored_like_fluent_bit() {
        assert_eq!(
            at("%Y-%m-%dT%H:%M:%S.%L", "2019-12-19T17:41:12.70630778Z"),
            Some(1_576_777_272_706_307_780)
        );
    }

    #[test]
    fn lenient_mode_keeps_what_was_read() {
        let f = TimeFormat::new("%Y-%m-%dT%H:%M:%S.%L")
            .unwrap()
            .with_strict(false);
        assert_eq!(
            f.parse("2019-12-19T17:41:12").map(|t| t.0),
            Some(1_576_777_272_000_000_000)
        );
        assert_eq!(f.parse("nonsense"), None);
    }

    #[test]
    fn bad_formats_are_rejected() {
        assert!(TimeFormat::new("%Q").is_err());
        assert!(TimeFormat::new("%").is_err());
    }

    #[test]
    fn time_offset_values() {
        assert_eq!(parse_time_offset("+0200"), Ok(7200));
        assert_eq!(parse_time_offset("-06:00"), Ok(-21600));
        assert_eq!(parse_time_offset("Z"), Ok(0));
        assert!(parse_time_offset("two hours").is_err());
    }
}
