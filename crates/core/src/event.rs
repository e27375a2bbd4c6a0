//! The record: a nanosecond timestamp plus an ordered map of JSON-like values.
//!
//! Maps keep insertion order and are a flat `Vec` of pairs: records hold a handful of keys, so a
//! linear scan beats hashing and keeps one allocation per map. Strings are `CompactString`s, which
//! store up to 24 bytes inline, so the usual keys (`log`, `stream`, `time`) never allocate.

use std::fmt;
use std::sync::Arc;

use compact_str::CompactString;
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

/// A string inside a record: inline up to 24 bytes, heap beyond.
pub type Str = CompactString;

/// Time of an event, in nanoseconds since the Unix epoch (UTC).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventTime(pub i64);

impl EventTime {
    /// The current wall-clock time.
    pub fn now() -> Self {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        EventTime(d.as_nanos() as i64)
    }

    /// Builds a time from whole seconds and nanoseconds.
    pub const fn from_parts(secs: i64, nanos: u32) -> Self {
        EventTime(secs * 1_000_000_000 + nanos as i64)
    }

    /// Whole seconds since the epoch.
    pub const fn secs(self) -> i64 {
        self.0.div_euclid(1_000_000_000)
    }

    /// Nanoseconds within the second.
    pub const fn subsec_nanos(self) -> u32 {
        self.0.rem_euclid(1_000_000_000) as u32
    }

    /// Milliseconds since the epoch (what CloudWatch Logs takes).
    pub const fn as_millis(self) -> i64 {
        self.0.div_euclid(1_000_000)
    }

    /// Seconds as a float, as Fluent Bit prints `date` in `json_date_format double`.
    pub fn as_f64(self) -> f64 {
        self.secs() as f64 + self.subsec_nanos() as f64 / 1e9
    }
}

/// A JSON-like value; the shape of msgpack as Fluent Bit uses it.
#[derive(Clone, Debug, Default)]
pub enum Value {
    #[default]
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(Str),
    Array(Vec<Value>),
    Map(Map),
    /// A map shared by many records (the kubernetes filter's per-pod metadata): cloning it is a
    /// reference count, not a copy of every key and label. It reads, prints, serializes and
    /// compares exactly like [`Value::Map`]; [`Value::as_map_mut`] copies it on first write.
    SharedMap(Arc<Map>),
}

/// Equality by content: a [`Value::SharedMap`] equals a [`Value::Map`] with the same pairs.
impl PartialEq for Value {
    fn eq(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Null, Value::Null) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Int(a), Value::Int(b)) => a == b,
            (Value::UInt(a), Value::UInt(b)) => a == b,
            (Value::Float(a), Value::Float(b)) => a == b,
            (Value::Str(a), Value::Str(b)) => a == b,
            (Value::Array(a), Value::Array(b)) => a == b,
            (a, b) => match (a.as_map(), b.as_map()) {
                (Some(a), Some(b)) => a == b,
                _ => false,
            },
        }
    }
}

impl Value {
    /// Writes `v` over this value, which must be a `Null` put there as a placeholder: parsers
    /// make a pair where it stays and then fill it, because a pair made on the stack and
    /// moved in is read back with wider loads than the stores that made it (store-forwarding
    /// stalls; docs/performance.md). An assignment would call `drop_in_place` on the `Null`,
    /// a call per field that frees nothing; forgetting a `Null` leaks nothing.
    #[inline(always)]
    pub fn fill_null(&mut self, v: Value) {
        debug_assert!(matches!(self, Value::Null), "only a placeholder is filled");
        std::mem::forget(std::mem::replace(self, v));
    }

    /// The string inside, if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s.as_str()),
            _ => None,
        }
    }

    /// The map inside, if this is a map (owned or shared).
    pub fn as_map(&self) -> Option<&Map> {
        match self {
            Value::Map(m) => Some(m),
            Value::SharedMap(m) => Some(m),
            _ => None,
        }
    }

    /// The map inside, mutably, if this is a map. A shared map is copied first if other
    /// records still hold it (copy on write), so a change never leaks into them.
    pub fn as_map_mut(&mut self) -> Option<&mut Map> {
        match self {
            Value::Map(m) => Some(m),
            Value::SharedMap(m) => Some(Arc::make_mut(m)),
            _ => None,
        }
    }

    /// Whether this is a map (owned or shared).
    pub fn is_map(&self) -> bool {
        matches!(self, Value::Map(_) | Value::SharedMap(_))
    }

    /// Takes the map out of a map value (copying a shared one only if it is still shared).
    pub fn into_map(self) -> Result<Map, Value> {
        match self {
            Value::Map(m) => Ok(m),
            Value::SharedMap(m) => Ok(Arc::try_unwrap(m).unwrap_or_else(|m| (*m).clone())),
            other => Err(other),
        }
    }

    /// A rough count of the bytes this value takes in msgpack, used for buffer accounting.
    pub fn approx_size(&self) -> usize {
        match self {
            Value::Null | Value::Bool(_) => 1,
            Value::Int(_) | Value::UInt(_) | Value::Float(_) => 9,
            Value::Str(s) => s.len() + 3,
            Value::Array(a) => 3 + a.iter().map(Value::approx_size).sum::<usize>(),
            Value::Map(m) => m.approx_size(),
            Value::SharedMap(m) => m.approx_size(),
        }
    }

    /// Heap bytes this value owns beyond its own 32 bytes: what holding it costs in memory.
    /// A shared map counts nothing: every record points at the same one.
    pub fn heap_size(&self) -> usize {
        match self {
            Value::Str(s) => str_heap(s),
            Value::Array(a) => {
                a.capacity() * std::mem::size_of::<Value>()
                    + a.iter().map(Value::heap_size).sum::<usize>()
            }
            Value::Map(m) => m.heap_size(),
            _ => 0,
        }
    }

    /// Converts a parsed `serde_json` value, keeping key order.
    pub fn from_json(v: serde_json::Value) -> Value {
        match v {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(b),
            serde_json::Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Value::Int(i)
                } else if let Some(u) = n.as_u64() {
                    Value::UInt(u)
                } else {
                    Value::Float(n.as_f64().unwrap_or(0.0))
                }
            }
            serde_json::Value::String(s) => Value::Str(s.into()),
            serde_json::Value::Array(a) => {
                Value::Array(a.into_iter().map(Value::from_json).collect())
            }
            serde_json::Value::Object(o) => Value::Map(Map(o
                .into_iter()
                .map(|(k, v)| (Str::from(k), Value::from_json(v)))
                .collect())),
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.into())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(s.into())
    }
}
impl From<Str> for Value {
    fn from(s: Str) -> Self {
        Value::Str(s)
    }
}
impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}
impl From<f64> for Value {
    fn from(f: f64) -> Self {
        Value::Float(f)
    }
}
impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}
impl From<Map> for Value {
    fn from(m: Map) -> Self {
        Value::Map(m)
    }
}
impl From<Arc<Map>> for Value {
    fn from(m: Arc<Map>) -> Self {
        Value::SharedMap(m)
    }
}

/// An ordered map. Duplicate keys are possible (msgpack allows them) but the helpers here keep
/// keys unique: `insert` replaces in place, so a key keeps its position.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Map(pub Vec<(Str, Value)>);

impl Map {
    /// An empty map.
    pub const fn new() -> Self {
        Map(Vec::new())
    }

    /// An empty map with room for `n` pairs.
    pub fn with_capacity(n: usize) -> Self {
        Map(Vec::with_capacity(n))
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the map has no pairs.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value of the first pair whose key is `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The value of the first pair whose key is `key`, mutably.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Value> {
        self.0.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Position of the first pair whose key is `key`.
    pub fn position(&self, key: &str) -> Option<usize> {
        self.0.iter().position(|(k, _)| k == key)
    }

    /// Whether a pair with this key exists.
    pub fn contains_key(&self, key: &str) -> bool {
        self.position(key).is_some()
    }

    /// Sets `key` to `value`: replaces the value in place if the key exists, else appends.
    pub fn insert(&mut self, key: impl Into<Str>, value: impl Into<Value>) {
        let key = key.into();
        let value = value.into();
        match self.position(&key) {
            Some(i) => self.0[i].1 = value,
            None => self.0.push((key, value)),
        }
    }

    /// Appends a pair without looking for an existing key (for builders that know keys are new).
    pub fn push(&mut self, key: impl Into<Str>, value: impl Into<Value>) {
        self.0.push((key.into(), value.into()));
    }

    /// Removes every pair whose key is `key`, returning the first value removed.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        let i = self.position(key)?;
        let (_, v) = self.0.remove(i);
        self.0.retain(|(k, _)| k != key);
        Some(v)
    }

    /// Renames the first pair with key `from` to `to`, in place. Returns whether it did.
    pub fn rename(&mut self, from: &str, to: &str) -> bool {
        match self.position(from) {
            Some(i) => {
                self.0[i].0 = to.into();
                true
            }
            None => false,
        }
    }

    /// Iterates over the pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&Str, &Value)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    /// The pairs in order, leaving out each pair whose key comes again later: the last
    /// duplicate wins, as JSON readers and Fluent Bit's maps take them. A map of up to
    /// [`SMALL_MAP`] pairs is checked by scanning (no allocation: the usual record); a larger
    /// one through a hash index built for the call, so the work stays linear in the number of
    /// pairs whatever a record holds.
    pub fn iter_last_wins(&self) -> LastWins<'_> {
        let keep = (self.0.len() > SMALL_MAP).then(|| {
            let mut last: std::collections::HashMap<&str, usize> =
                std::collections::HashMap::with_capacity(self.0.len());
            for (i, (k, _)) in self.0.iter().enumerate() {
                last.insert(k.as_str(), i);
            }
            self.0
                .iter()
                .enumerate()
                .map(|(i, (k, _))| last.get(k.as_str()) == Some(&i))
                .collect()
        });
        LastWins {
            pairs: &self.0,
            next: 0,
            keep,
        }
    }

    /// Appends each of `pairs` at the end, first removing any pair with the same key (from the
    /// map, and earlier ones of `pairs`): what `insert`-at-the-end one pair at a time gives,
    /// in time linear in both sizes (hash index) when the product of the sizes is large.
    pub fn append_replacing(&mut self, pairs: Vec<(Str, Value)>) {
        if self.0.len().saturating_mul(pairs.len()) <= SMALL_MAP * SMALL_MAP {
            for (k, v) in pairs {
                self.0.retain(|(key, _)| *key != k);
                self.0.push((k, v));
            }
            return;
        }
        let mut last: std::collections::HashMap<Str, usize> =
            std::collections::HashMap::with_capacity(pairs.len());
        for (i, (k, _)) in pairs.iter().enumerate() {
            last.insert(k.clone(), i);
        }
        self.0.retain(|(k, _)| !last.contains_key(k));
        self.0.reserve(last.len());
        for (i, (k, v)) in pairs.into_iter().enumerate() {
            if last.get(&k) == Some(&i) {
                self.0.push((k, v));
            }
        }
    }

    /// [`Map::append_replacing`] of the pairs `pairs` holds, leaving it empty (its buffer is
    /// kept for the next record, except when a key repeats). When no key comes twice, which a 64-bit set of key
    /// fingerprints shows without comparing keys (a scan only on a fingerprint hit), the pairs
    /// move in with one reservation of exactly what they need plus `room` for pairs the
    /// caller adds next.
    pub fn append_moving(&mut self, pairs: &mut Vec<(Str, Value)>, room: usize) {
        if self.0.len() + pairs.len() <= SMALL_MAP && !repeats(&self.0, pairs) {
            self.0.reserve_exact(pairs.len() + room);
            self.0.append(pairs);
            return;
        }
        self.append_replacing(std::mem::take(pairs));
        self.0.reserve_exact(room);
    }

    /// Heap bytes the map owns: its pairs plus what their keys and values own.
    pub fn heap_size(&self) -> usize {
        self.0.capacity() * std::mem::size_of::<(Str, Value)>()
            + self
                .0
                .iter()
                .map(|(k, v)| str_heap(k) + v.heap_size())
                .sum::<usize>()
    }

    /// A rough msgpack size (what Fluent Bit would count for these pairs).
    pub fn approx_size(&self) -> usize {
        3 + self
            .0
            .iter()
            .map(|(k, v)| k.len() + 1 + v.approx_size())
            .sum::<usize>()
    }
}

/// One bit of 64 for a key, from its length and its first and last bytes: keys that differ
/// there (nearly all keys of one record) never need comparing.
fn key_bit(k: &str) -> u64 {
    let b = k.as_bytes();
    let (first, last) = match b {
        [] => (0, 0),
        [f, .., l] => (*f, *l),
        [f] => (*f, *f),
    };
    let h = (b.len() as u32).wrapping_mul(0x9e37_79b1)
        ^ u32::from(first).wrapping_mul(0x85eb_ca6b)
        ^ u32::from(last).wrapping_mul(0xc2b2_ae35);
    1 << (h >> 26)
}

/// Whether a key of `new` is also in `old` or earlier in `new`.
fn repeats(old: &[(Str, Value)], new: &[(Str, Value)]) -> bool {
    let mut seen = old.iter().fold(0u64, |s, (k, _)| s | key_bit(k));
    for (i, (k, _)) in new.iter().enumerate() {
        let bit = key_bit(k);
        if seen & bit != 0
            && (old.iter().any(|(o, _)| o == k) || new[..i].iter().any(|(o, _)| o == k))
        {
            return true;
        }
        seen |= bit;
    }
    false
}

/// Maps up to this many pairs are searched by scanning; larger ones get a hash index for
/// operations over every key ([`Map::iter_last_wins`], [`Map::append_replacing`]).
pub const SMALL_MAP: usize = 32;

/// See [`Map::iter_last_wins`].
pub struct LastWins<'a> {
    pairs: &'a [(Str, Value)],
    next: usize,
    /// For large maps: whether each pair is the last of its key.
    keep: Option<Vec<bool>>,
}

impl<'a> Iterator for LastWins<'a> {
    type Item = (&'a Str, &'a Value);

    fn next(&mut self) -> Option<Self::Item> {
        while let Some((k, v)) = self.pairs.get(self.next) {
            let i = self.next;
            self.next += 1;
            let last = match &self.keep {
                Some(keep) => keep.get(i).copied().unwrap_or(true),
                None => !self.pairs[i + 1..].iter().any(|(other, _)| other == k),
            };
            if last {
                return Some((k, v));
            }
        }
        None
    }
}

impl FromIterator<(Str, Value)> for Map {
    fn from_iter<T: IntoIterator<Item = (Str, Value)>>(iter: T) -> Self {
        Map(iter.into_iter().collect())
    }
}

/// One event: when it happened and what it says.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Record {
    pub time: EventTime,
    pub body: Map,
}

impl Record {
    /// A record with this time and body.
    pub fn new(time: EventTime, body: Map) -> Self {
        Record { time, body }
    }

    /// A rough msgpack size of the record (what Fluent Bit would count).
    pub fn approx_size(&self) -> usize {
        12 + self.body.approx_size()
    }

    /// The bytes holding this record costs in memory, used for `Mem_Buf_Limit`: the record
    /// itself plus every allocation it owns, so the limit bounds the agent's memory.
    pub fn mem_size(&self) -> usize {
        std::mem::size_of::<Record>() + self.body.heap_size()
    }
}

/// Heap bytes of a string: none while it is stored inline.
pub(crate) fn str_heap(s: &Str) -> usize {
    if s.is_heap_allocated() {
        s.capacity()
    } else {
        0
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::UInt(u) => s.serialize_u64(*u),
            Value::Float(f) => s.serialize_f64(*f),
            Value::Str(v) => s.serialize_str(v),
            Value::Array(a) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for v in a {
                    seq.serialize_element(v)?;
                }
                seq.end()
            }
            Value::Map(m) => m.serialize(s),
            Value::SharedMap(m) => m.serialize(s),
        }
    }
}

impl Serialize for Map {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k.as_str(), v)?;
        }
        map.end()
    }
}

/// Deserializes straight into [`Value`] (no intermediate `serde_json::Value`), keeping key
/// order. Strings up to 24 bytes land inline, so decoding `{"log":…,"stream":…,"time":…}`
/// allocates for the long `log` string and the map only.
impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

impl<'de> Deserialize<'de> for Map {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ValueVisitor).and_then(|v| match v {
            Value::Map(m) => Ok(m),
            _ => Err(serde::de::Error::custom("expected a JSON object")),
        })
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(i64::try_from(v).map_or(Value::UInt(v), Value::Int))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(Str::from(v)))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Value, E> {
        Ok(Value::Str(Str::from(v)))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(Str::from(v)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(v) = seq.next_element::<Value>()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        // JSON gives no size hint; 8 pairs hold most log objects without growing (4 → 8 → 16
        // costs a realloc and a copy each time).
        let mut out = Vec::with_capacity(map.size_hint().unwrap_or(8).min(64));
        while let Some(k) = map.next_key::<KeyStr>()? {
            let v = map.next_value::<Value>()?;
            out.push((k.0, v));
        }
        Ok(Value::Map(Map(out)))
    }
}

/// A map key decoded without going through `String`.
struct KeyStr(Str);

impl<'de> Deserialize<'de> for KeyStr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct K;
        impl<'de> Visitor<'de> for K {
            type Value = KeyStr;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_str<E>(self, v: &str) -> Result<KeyStr, E> {
                Ok(KeyStr(Str::from(v)))
            }
            fn visit_string<E>(self, v: String) -> Result<KeyStr, E> {
                Ok(KeyStr(Str::from(v)))
            }
        }
        d.deserialize_str(K)
    }
}

/// Writes a value the way Fluent Bit's `stdout` output prints msgpack: maps as
/// `{"k"=>"v"}`, strings quoted, arrays as `[a, b]`.
pub struct FluentDisplay<'a>(pub &'a Value);

impl fmt::Display for FluentDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_fluent(f, self.0)
    }
}

fn write_fluent(f: &mut fmt::Formatter<'_>, v: &Value) -> fmt::Result {
    match v {
        Value::Null => f.write_str("nil"),
        Value::Bool(b) => write!(f, "{b}"),
        Value::Int(i) => write!(f, "{i}"),
        Value::UInt(u) => write!(f, "{u}"),
        Value::Float(x) => write_float(f, *x),
        Value::Str(s) => write_quoted(f, s),
        Value::Array(a) => {
            f.write_str("[")?;
            for (i, v) in a.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write_fluent(f, v)?;
            }
            f.write_str("]")
        }
        Value::Map(m) => write_fluent_map(f, m),
        Value::SharedMap(m) => write_fluent_map(f, m),
    }
}

/// Writes a map as Fluent Bit's msgpack printer does: `{"k"=>"v", "n"=>1}`.
pub fn write_fluent_map(f: &mut fmt::Formatter<'_>, m: &Map) -> fmt::Result {
    f.write_str("{")?;
    for (i, (k, v)) in m.0.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write_quoted(f, k)?;
        f.write_str("=>")?;
        write_fluent(f, v)?;
    }
    f.write_str("}")
}

/// msgpack-c's object printer formats doubles with C's `%f`.
fn write_float(f: &mut fmt::Formatter<'_>, x: f64) -> fmt::Result {
    write!(f, "{x:.6}")
}

fn write_quoted(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_str("\"")?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            '\t' => f.write_str("\\t")?,
            c if (c as u32) < 0x20 => write!(f, "\\u{:04x}", c as u32)?,
            c => write!(f, "{c}")?,
        }
    }
    f.write_str("\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_replaces_in_place_and_keeps_order() {
        let mut m = Map::new();
        m.insert("a", 1i64);
        m.insert("b", "x");
        m.insert("a", 2i64);
        assert_eq!(m.0.len(), 2);
        assert_eq!(m.0[0].0, "a");
        assert_eq!(m.get("a"), Some(&Value::Int(2)));
    }

    #[test]
    fn remove_drops_every_duplicate() {
        let mut m = Map(vec![
            ("a".into(), Value::Int(1)),
            ("b".into(), Value::Int(2)),
            ("a".into(), Value::Int(3)),
        ]);
        assert_eq!(m.remove("a"), Some(Value::Int(1)));
        assert_eq!(m.len(), 1);
        assert_eq!(m.remove("zz"), None);
    }

    /// Maps of `n` pairs whose keys repeat every `period` pairs.
    fn repeating(n: usize, period: usize, tag: i64) -> Map {
        Map((0..n)
            .map(|i| {
                (
                    Str::from(format!("k{}", i % period)),
                    Value::Int(tag + i as i64),
                )
            })
            .collect())
    }

    /// What both operations meant before they had a hash index: a scan per pair.
    fn naive_last_wins(m: &Map) -> Vec<(Str, Value)> {
        m.0.iter()
            .enumerate()
            .filter(|(i, (k, _))| !m.0[i + 1..].iter().any(|(o, _)| o == k))
            .map(|(_, p)| p.clone())
            .collect()
    }

    fn naive_append(m: &mut Map, pairs: Vec<(Str, Value)>) {
        for (k, v) in pairs {
            m.0.retain(|(key, _)| *key != k);
            m.0.push((k, v));
        }
    }

    #[test]
    fn last_wins_and_append_replacing_match_the_scans_small_and_large() {
        for (n, period) in [
            (0, 1),
            (1, 1),
            (5, 3),
            (32, 40),
            (33, 7),
            (200, 50),
            (500, 1000),
        ] {
            let m = repeating(n, period, 0);
            let fast: Vec<(Str, Value)> = m
                .iter_last_wins()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            assert_eq!(fast, naive_last_wins(&m), "n={n} period={period}");
            for (add, add_period) in [(0, 1), (3, 2), (40, 10), (300, 70)] {
                let pairs = repeating(add, add_period, 10_000).0;
                let mut a = m.clone();
                a.append_replacing(pairs.clone());
                let mut b = m.clone();
                naive_append(&mut b, pairs.clone());
                assert_eq!(
                    a, b,
                    "n={n} period={period} add={add} add_period={add_period}"
                );
                let mut c = m.clone();
                let mut moving = pairs;
                c.append_moving(&mut moving, 2);
                assert_eq!(c, b, "moving: n={n} period={period} add={add}");
                assert!(moving.is_empty());
                assert!(c.0.capacity() >= c.len() + 2, "room for two more");
            }
        }
    }

    /// Keys alike in length and first and last byte share a fingerprint bit: they are then
    /// compared, and only a real repeat takes the replacing path.
    #[test]
    fn append_moving_tells_a_shared_fingerprint_from_a_repeat() {
        let pairs = |keys: &[&str]| -> Vec<(Str, Value)> {
            keys.iter()
                .enumerate()
                .map(|(i, k)| (Str::from(*k), Value::Int(i as i64)))
                .collect()
        };
        let mut m = Map(pairs(&["log", "stream", "time"]));
        let mut add = pairs(&["lag", "tame", "level", "lag2", ""]);
        m.append_moving(&mut add, 1);
        let keys: Vec<&str> = m.0.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            ["log", "stream", "time", "lag", "tame", "level", "lag2", ""]
        );
        assert_eq!(m.0.capacity(), 9, "exactly the pairs and the room");
        let mut add = pairs(&["a", "time", "b", "a"]);
        m.append_moving(&mut add, 0);
        let keys: Vec<&str> = m.0.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            ["log", "stream", "lag", "tame", "level", "lag2", "", "time", "b", "a"]
        );
        assert_eq!(m.get("a"), Some(&Value::Int(3)), "the last one wins");
    }

    /// 100,000 keys: the scans would take 5·10^9 key comparisons each (minutes); the hash
    /// index takes well under a second even in a debug build. The bound is generous.
    #[test]
    fn a_hundred_thousand_keys_take_linear_time() {
        let n = 100_000;
        let started = std::time::Instant::now();
        let m = repeating(n, n, 0);
        assert_eq!(m.iter_last_wins().count(), n);
        let mut rec = repeating(10, 10, 0);
        rec.append_replacing(repeating(n, n, 1).0);
        assert_eq!(rec.len(), n);
        assert_eq!(rec.0[n - 1].1, Value::Int(n as i64));
        let took = started.elapsed();
        assert!(took < std::time::Duration::from_secs(10), "{took:?}");
    }

    #[test]
    fn time_parts_round_trip_before_and_after_epoch() {
        let t = EventTime::from_parts(1_576_777_272, 706_307_780);
        assert_eq!(t.secs(), 1_576_777_272);
        assert_eq!(t.subsec_nanos(), 706_307_780);
        assert_eq!(t.as_millis(), 1_576_777_272_706);
        let neg = EventTime(-1);
        assert_eq!(neg.secs(), -1);
        assert_eq!(neg.subsec_nanos(), 999_999_999);
    }

    #[test]
    fn json_conversion_keeps_key_order_and_serializes_back() {
        let v: serde_json::Value =
            serde_json::from_str(r#"{"z":1,"a":{"y":[true,null,1.5]},"m":"s"}"#).unwrap();
        let ours = Value::from_json(v);
        let keys: Vec<_> = ours
            .as_map()
            .unwrap()
            .iter()
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(keys, ["z", "a", "m"]);
        assert_eq!(
            serde_json::to_string(&ours).unwrap(),
            r#"{"z":1,"a":{"y":[true,null,1.5]},"m":"s"}"#
        );
    }

    #[test]
    fn deserializes_json_directly_keeping_order() {
        let m: Map = serde_json::from_str(
            r#"{"log":"GET / \"x\"\n","stream":"stdout","n":-3,"u":18446744073709551615,"f":0.5,"a":[1,{"b":null}]}"#,
        )
        .unwrap();
        assert_eq!(m.get("log"), Some(&Value::from("GET / \"x\"\n")));
        assert_eq!(m.get("n"), Some(&Value::Int(-3)));
        assert_eq!(m.get("u"), Some(&Value::UInt(u64::MAX)));
        assert_eq!(m.0[1].0, "stream");
        assert!(serde_json::from_str::<Map>("[1]").is_err());
        assert!(serde_json::from_str::<Map>("{\"a\":").is_err());
    }

    #[test]
    fn shared_map_reads_like_a_map_and_copies_on_write() {
        let mut inner = Map::new();
        inner.insert("pod_name", "nginx");
        let shared = Arc::new(inner.clone());
        let a = Value::SharedMap(Arc::clone(&shared));
        let mut b = a.clone();
        assert_eq!(a, Value::Map(inner.clone()));
        assert_eq!(Value::Map(inner.clone()), a);
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            serde_json::to_string(&Value::Map(inner.clone())).unwrap()
        );
        assert_eq!(a.approx_size(), Value::Map(inner.clone()).approx_size());
        assert_eq!(
            FluentDisplay(&a).to_string(),
            FluentDisplay(&Value::Map(inner)).to_string()
        );
        b.as_map_mut().unwrap().insert("x", 1i64);
        assert_eq!(
            a.as_map().unwrap().len(),
            1,
            "the other holders keep the original"
        );
        assert_eq!(b.as_map().unwrap().len(), 2);
        assert_eq!(shared.len(), 1);
        assert!(a.is_map() && !Value::Null.is_map());
        assert_eq!(a.into_map().unwrap().len(), 1);
    }

    #[test]
    fn mem_size_counts_owned_allocations_not_shared_maps() {
        let mut r = Record::default();
        let base = r.mem_size();
        r.body.push("stream", "stdout");
        let with_inline = r.mem_size();
        assert!(with_inline >= base + std::mem::size_of::<(Str, Value)>());
        r.body.push("log", "x".repeat(200));
        assert!(r.mem_size() >= with_inline + 200);
        let mut big = Map::new();
        big.push("labels", "y".repeat(1000));
        let before = r.mem_size();
        r.body.push("kubernetes", Value::SharedMap(Arc::new(big)));
        assert!(
            r.mem_size() - before < 200,
            "a shared map is not charged per record"
        );
    }

    #[test]
    fn fluent_display_matches_msgpack_printer_style() {
        let mut m = Map::new();
        m.insert("message", "say \"hi\"\n");
        m.insert("n", 1i64);
        m.insert("f", 2.0f64);
        m.insert("arr", Value::Array(vec![Value::Bool(false), Value::Null]));
        let s = FluentDisplay(&Value::Map(m)).to_string();
        assert_eq!(
            s,
            r#"{"message"=>"say \"hi\"\n", "n"=>1, "f"=>2.000000, "arr"=>[false, nil]}"#
        );
    }
}
