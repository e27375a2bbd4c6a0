//! Records packed into one byte buffer while they wait for an output.
//!
//! A [`Record`] in memory is a tree: a vector of 56-byte pairs per map and a heap string per long
//! value, each allocation rounded up by the allocator. Records waiting in an output's queue for
//! a slow destination (the common case of an outage or throttling) hold the input's whole
//! `Mem_Buf_Limit` in that form. Packed, the same records are one allocation with each value's
//! bytes back to back, and the maps the kubernetes filter shares between a pod's records
//! ([`Value::SharedMap`]) stay shared: one reference per chunk, not a copy per record. The
//! engine packs a chunk on its way to the outputs and each output unpacks it for the flush that
//! sends it, so queued records cost a fraction of what they cost as trees.
//!
//! The form is private to one process (never written to disk or sent): a tag byte per value,
//! LEB128 lengths and counts, zigzag integers, floats as their bits; the text of every key and
//! string goes to a `String` of its own, so reading it back takes a slice of text already
//! known to be UTF-8 instead of checking each string again. Unpacking gives back the
//! records exactly: the same value kinds (`Int` stays `Int`, a shared map stays the same `Arc`),
//! the same key order and duplicate keys, the same float bits.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::event::{EventTime, Map, Record, Str, Value};

const NULL: u8 = 0;
const FALSE: u8 = 1;
const TRUE: u8 = 2;
const INT: u8 = 3;
const UINT: u8 = 4;
const FLOAT: u8 = 5;
const STR: u8 = 6;
const ARRAY: u8 = 7;
const MAP: u8 = 8;
const SHARED: u8 = 9;
/// A map with the same keys, in the same order, as a map written before with `MAP` (its
/// shape, by number): only its values follow. A chunk's records mostly share a few shapes (a
/// file's lines through the same parser, with the same nested object), so each key is written
/// and read back once per chunk, not once per record.
const SAME_KEYS: u8 = 10;

/// Shapes remembered per chunk: each map written with `MAP` becomes the next shape while
/// there is room (both sides follow this rule, so they number shapes alike).
const MAX_SHAPES: usize = 16;

/// Deepest nesting [`PackedRecords::unpack`] (and any reader of a [`Cursor`]) follows (records
/// are never this deep: parsers stop well before it); past it the data is reported as damaged
/// rather than overflowing the stack.
pub const MAX_DEPTH: usize = 512;

/// Records packed since start (`logferry_packed_records_total`): a sign that an output's
/// destination was slower than the inputs.
pub static PACKED_RECORDS: AtomicU64 = AtomicU64::new(0);

/// Why packed bytes could not be read back. Only a bug can cause it: the bytes never leave
/// the process.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum UnpackError {
    #[error("packed records end early at byte {0}")]
    Truncated(usize),
    #[error("packed records hold an unknown value kind {kind} at byte {at}")]
    Kind { kind: u8, at: usize },
    #[error("packed records refer to shared map {0}, which is not there")]
    Shared(usize),
    #[error(
        "packed records hold a string length past the text or off a character boundary at byte {0}"
    )]
    Utf8(usize),
    #[error("packed records go on past their last record, at byte {0}")]
    Trailing(usize),
    #[error("packed records refer to map shape {0}, which is not there")]
    Shape(usize),
    #[error("packed records nest deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

/// Records in the packed form (see the module's documentation).
#[derive(Clone, Default)]
pub struct PackedRecords {
    bytes: Vec<u8>,
    text: String,
    shared: Vec<Arc<Map>>,
    count: usize,
}

impl std::fmt::Debug for PackedRecords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedRecords")
            .field("records", &self.count)
            .field("bytes", &self.bytes.len())
            .field("text", &self.text.len())
            .field("shared", &self.shared.len())
            .finish()
    }
}

impl PackedRecords {
    /// Packs `records`.
    pub fn pack(records: &[Record]) -> Self {
        PACKED_RECORDS.fetch_add(records.len() as u64, Ordering::Relaxed);
        thread_local! {
            /// Packing happens on the filter tasks' threads, chunk after chunk: the buffer
            /// grows once, and each chunk gets an exact-size copy of its bytes.
            static SCRATCH: std::cell::RefCell<(Vec<u8>, String)> =
                const { std::cell::RefCell::new((Vec::new(), String::new())) };
        }
        SCRATCH.with(|scratch| {
            let mut scratch = match scratch.try_borrow_mut() {
                Ok(s) => s,
                // Never reentered; fresh buffers are the safe answer if it were.
                Err(_) => return Self::pack_into(Default::default(), records).0,
            };
            let (packed, bufs) = Self::pack_into(std::mem::take(&mut *scratch), records);
            *scratch = bufs;
            packed
        })
    }

    /// Packs into `bufs` (cleared first); gives them back for reuse.
    fn pack_into(
        (mut out, mut text): (Vec<u8>, String),
        records: &[Record],
    ) -> (Self, (Vec<u8>, String)) {
        out.clear();
        text.clear();
        let mut p = Packer {
            out,
            text,
            shared: Vec::new(),
            shapes: Vec::new(),
        };
        for r in records {
            p.out.extend_from_slice(&r.time.0.to_le_bytes());
            p.map(&r.body);
        }
        let packed = PackedRecords {
            bytes: p.out.as_slice().to_vec(),
            text: p.text.as_str().to_owned(),
            shared: p.shared,
            count: records.len(),
        };
        // A chunk far larger than usual is not kept around.
        if p.out.capacity() + p.text.capacity() > 8 << 20 {
            p.out = Vec::new();
            p.text = String::new();
        }
        (packed, (p.out, p.text))
    }

    /// How many records are packed.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether no record is packed.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// A copy with its last `drop` bytes cut off: damaged records, for tests of what readers
    /// do with them (only a bug makes such a chunk).
    #[doc(hidden)]
    pub fn cut_short(&self, drop: usize) -> Self {
        let mut p = self.clone();
        p.bytes.truncate(p.bytes.len().saturating_sub(drop));
        p
    }

    /// Bytes this form holds in memory (the shared maps are counted where they live: with the
    /// kubernetes filter's cache, as [`Record::mem_size`] counts them).
    pub fn mem_size(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.bytes.capacity()
            + self.text.capacity()
            + self.shared.capacity() * std::mem::size_of::<Arc<Map>>()
    }

    /// The records back, as they were packed.
    pub fn unpack(&self) -> Result<Vec<Record>, UnpackError> {
        let mut c = self.cursor();
        let mut out = Vec::with_capacity(self.count);
        while let Some((time, keys)) = c.next_record()? {
            let body = unpack_map(&mut c, keys, 0)?;
            out.push(Record { time, body });
        }
        c.finish()?;
        Ok(out)
    }

    /// Reads the records one value at a time, without building them (see [`Cursor`]).
    pub fn cursor(&self) -> Cursor<'_> {
        Cursor {
            buf: &self.bytes,
            at: 0,
            text: &self.text,
            text_at: 0,
            shared: &self.shared,
            lists: Vec::new(),
            left: self.count,
        }
    }
}

fn unpack_map(c: &mut Cursor<'_>, keys: usize, depth: usize) -> Result<Map, UnpackError> {
    let n = c.keys(keys).len();
    let mut pairs = Vec::with_capacity(n);
    for j in 0..n {
        let k = Str::from(c.keys(keys).get(j).copied().unwrap_or_default());
        pairs.push((k, unpack_value(c, depth + 1)?));
    }
    Ok(Map(pairs))
}

fn unpack_value(c: &mut Cursor<'_>, depth: usize) -> Result<Value, UnpackError> {
    if depth > MAX_DEPTH {
        return Err(UnpackError::TooDeep);
    }
    Ok(match c.item()? {
        Item::Null => Value::Null,
        Item::Bool(b) => Value::Bool(b),
        Item::Int(i) => Value::Int(i),
        Item::UInt(u) => Value::UInt(u),
        Item::Float(f) => Value::Float(f),
        Item::Str(s) => Value::Str(Str::from(s)),
        Item::Array(n) => {
            let mut a = Vec::with_capacity(n);
            for _ in 0..n {
                a.push(unpack_value(c, depth + 1)?);
            }
            Value::Array(a)
        }
        Item::Map(keys) => Value::Map(unpack_map(c, keys, depth)?),
        Item::Shared(m) => Value::SharedMap(Arc::clone(m)),
    })
}

struct Packer {
    out: Vec<u8>,
    text: String,
    shared: Vec<Arc<Map>>,
    /// Shapes so far: where each one's keys are in `text`.
    shapes: Vec<Vec<std::ops::Range<usize>>>,
}

impl Packer {
    fn len(&mut self, n: usize) {
        self.u64(n as u64);
    }

    /// LEB128: seven bits a byte, the high bit set on all but the last.
    fn u64(&mut self, mut n: u64) {
        while n >= 0x80 {
            self.out.push((n as u8) | 0x80);
            n >>= 7;
        }
        self.out.push(n as u8);
    }

    /// A key or string: its length here, its text in `text`.
    fn str(&mut self, s: &str) {
        self.len(s.len());
        self.text.push_str(s);
    }

    /// `SAME_KEYS`, a shape's number and the values when the keys are a known shape's;
    /// else `MAP` with the keys, which becomes a shape while there is room.
    fn map(&mut self, m: &Map) {
        let text = &self.text;
        let known = self.shapes.iter().position(|shape| {
            shape.len() == m.0.len()
                && m.0
                    .iter()
                    .zip(shape)
                    .all(|((k, _), at)| text.get(at.clone()) == Some(k.as_str()))
        });
        if let Some(i) = known {
            self.out.push(SAME_KEYS);
            self.len(i);
            for (_, v) in &m.0 {
                self.value(v);
            }
            return;
        }
        // Keys first, then the values: a reader knows every key of the map before its first
        // value (what an encoder needs to let the last duplicate win without a tree).
        let remember = self.shapes.len() < MAX_SHAPES;
        let mut shape = Vec::new();
        self.out.push(MAP);
        self.len(m.0.len());
        for (k, _) in &m.0 {
            let from = self.text.len();
            self.str(k);
            if remember {
                shape.push(from..self.text.len());
            }
        }
        // Numbered before its values, as the reader numbers it when it has read the keys.
        if remember {
            self.shapes.push(shape);
        }
        for (_, v) in &m.0 {
            self.value(v);
        }
    }

    fn value(&mut self, v: &Value) {
        match v {
            Value::Null => self.out.push(NULL),
            Value::Bool(false) => self.out.push(FALSE),
            Value::Bool(true) => self.out.push(TRUE),
            Value::Int(i) => {
                self.out.push(INT);
                self.u64(((i << 1) ^ (i >> 63)) as u64);
            }
            Value::UInt(u) => {
                self.out.push(UINT);
                self.u64(*u);
            }
            Value::Float(f) => {
                self.out.push(FLOAT);
                self.out.extend_from_slice(&f.to_bits().to_le_bytes());
            }
            Value::Str(s) => {
                self.out.push(STR);
                self.str(s);
            }
            Value::Array(a) => {
                self.out.push(ARRAY);
                self.len(a.len());
                for v in a {
                    self.value(v);
                }
            }
            Value::Map(m) => self.map(m),
            Value::SharedMap(m) => {
                // A chunk's records come from a few pods: the last one is the usual hit.
                let i = match self.shared.iter().rposition(|s| Arc::ptr_eq(s, m)) {
                    Some(i) => i,
                    None => {
                        self.shared.push(Arc::clone(m));
                        self.shared.len() - 1
                    }
                };
                self.out.push(SHARED);
                self.len(i);
            }
        }
    }
}

/// One value read from packed records ([`Cursor::item`]). A container's contents follow it:
/// an array's values, a map's values (one per key of its key list, in order).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Item<'a> {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(&'a str),
    /// An array of this many values.
    Array(usize),
    /// A map; its keys are [`Cursor::keys`] of this number. Maps with the same keys in a
    /// chunk mostly share one number, so what a reader works out per key list (escaped keys,
    /// which duplicate wins) it can work out once per chunk.
    Map(usize),
    /// A map shared between records ([`Value::SharedMap`]): the same `Arc` as was packed.
    Shared(&'a Arc<Map>),
}

/// Reads packed records in order, one value at a time, borrowing keys and strings from the
/// packed text: for an output that encodes records straight from the packed form instead of
/// building them again ([`PackedRecords::unpack`] is built on it). Damaged bytes (only a bug
/// can cause them) give an [`UnpackError`], never a panic. Callers that recurse into nested
/// values stop at [`MAX_DEPTH`].
pub struct Cursor<'a> {
    buf: &'a [u8],
    at: usize,
    text: &'a str,
    text_at: usize,
    shared: &'a [Arc<Map>],
    /// Every key list read so far; the first [`MAX_SHAPES`] are the shapes `SAME_KEYS` names.
    lists: Vec<Vec<&'a str>>,
    /// Records not yet started.
    left: usize,
}

impl<'a> Cursor<'a> {
    /// Starts the next record: its time and its body's key list (the body's values follow).
    /// `None` after the last record.
    pub fn next_record(&mut self) -> Result<Option<(EventTime, usize)>, UnpackError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        let time = EventTime(i64::from_le_bytes(self.array::<8>()?));
        let at = self.at;
        match self.item()? {
            Item::Map(keys) => Ok(Some((time, keys))),
            _ => Err(UnpackError::Kind { kind: MAP, at }),
        }
    }

    /// The keys of key list `n` (as [`Item::Map`] numbers it); empty for a number never given.
    pub fn keys(&self, n: usize) -> &[&'a str] {
        self.lists.get(n).map(Vec::as_slice).unwrap_or_default()
    }

    /// After the last record: an error when bytes or text are left over.
    pub fn finish(&self) -> Result<(), UnpackError> {
        if self.left != 0 || self.at != self.buf.len() || self.text_at != self.text.len() {
            return Err(UnpackError::Trailing(self.at));
        }
        Ok(())
    }

    /// The next value.
    pub fn item(&mut self) -> Result<Item<'a>, UnpackError> {
        let at = self.at;
        Ok(match self.byte()? {
            NULL => Item::Null,
            FALSE => Item::Bool(false),
            TRUE => Item::Bool(true),
            INT => {
                let z = self.u64()?;
                Item::Int(((z >> 1) as i64) ^ -((z & 1) as i64))
            }
            UINT => Item::UInt(self.u64()?),
            FLOAT => Item::Float(f64::from_bits(u64::from_le_bytes(self.array::<8>()?))),
            STR => Item::Str(self.str()?),
            ARRAY => Item::Array(self.len()?),
            MAP => {
                let n = self.len()?;
                let mut keys = Vec::with_capacity(n);
                for _ in 0..n {
                    keys.push(self.str()?);
                }
                self.lists.push(keys);
                Item::Map(self.lists.len() - 1)
            }
            SAME_KEYS => {
                let i = self.index()?;
                if i >= MAX_SHAPES.min(self.lists.len()) {
                    return Err(UnpackError::Shape(i));
                }
                Item::Map(i)
            }
            SHARED => {
                let i = self.index()?;
                Item::Shared(self.shared.get(i).ok_or(UnpackError::Shared(i))?)
            }
            kind => return Err(UnpackError::Kind { kind, at }),
        })
    }

    fn byte(&mut self) -> Result<u8, UnpackError> {
        let b = *self
            .buf
            .get(self.at)
            .ok_or(UnpackError::Truncated(self.at))?;
        self.at += 1;
        Ok(b)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], UnpackError> {
        let s = self
            .buf
            .get(self.at..self.at + N)
            .ok_or(UnpackError::Truncated(self.at))?;
        self.at += N;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u64(&mut self) -> Result<u64, UnpackError> {
        let mut n = 0u64;
        let mut shift = 0;
        loop {
            let b = self.byte()?;
            if shift < 64 {
                n |= u64::from(b & 0x7f) << shift;
            }
            if b < 0x80 {
                return Ok(n);
            }
            shift += 7;
        }
    }

    fn len(&mut self) -> Result<usize, UnpackError> {
        let at = self.at;
        let n = self.u64()? as usize;
        // Every item takes at least one byte (a key at least its length byte): a count past
        // the data is damage, refused before anything is allocated for it.
        if n > self.buf.len() - self.at.min(self.buf.len()) {
            return Err(UnpackError::Truncated(at));
        }
        Ok(n)
    }

    /// A shape's or a shared map's number: checked against what it numbers, not against the
    /// bytes left (it can be the last thing in the chunk).
    fn index(&mut self) -> Result<usize, UnpackError> {
        Ok(usize::try_from(self.u64()?).unwrap_or(usize::MAX))
    }

    fn str(&mut self) -> Result<&'a str, UnpackError> {
        let at = self.at;
        let n = self.u64()? as usize;
        let end = self
            .text_at
            .checked_add(n)
            .ok_or(UnpackError::Truncated(at))?;
        // A slice of text that is UTF-8 already: `get` only checks that both ends fall on
        // character boundaries (and within the text).
        let s = self
            .text
            .get(self.text_at..end)
            .ok_or(UnpackError::Utf8(at))?;
        self.text_at = end;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Value {
        Value::Str(Str::from(v))
    }

    /// Every value kind, nested, with duplicate keys, edge numbers and long and short strings.
    fn varied(i: i64, pod: &Arc<Map>) -> Record {
        let mut nested = Map::with_capacity(3);
        nested.push(
            "a",
            Value::Array(vec![Value::Null, Value::Bool(true), s("x")]),
        );
        nested.push("a", Value::Int(-1)); // a duplicate key stays
        nested.push("é", Value::Float(-0.0));
        let mut body = Map::with_capacity(12);
        body.push("log", s(&"line ".repeat(i as usize % 40)));
        body.push("int", Value::Int(i64::MIN + i));
        body.push("max", Value::Int(i64::MAX - i));
        body.push("uint", Value::UInt(u64::MAX - i as u64));
        body.push("small", Value::Int(i - 3));
        body.push("nan", Value::Float(f64::NAN));
        body.push("inf", Value::Float(f64::NEG_INFINITY));
        body.push("f", Value::Float(1.5e300));
        body.push("bools", Value::Array(vec![Value::Bool(false)]));
        body.push("nested", Value::Map(nested));
        body.push("kubernetes", Value::SharedMap(Arc::clone(pod)));
        body.push("", s("日本語 and a \u{0} byte"));
        Record::new(EventTime(i * 1_000_000_007 - 5), body)
    }

    fn same(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits(),
            (Value::Array(x), Value::Array(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
            }
            (Value::Map(x), Value::Map(y)) => same_map(x, y),
            (Value::SharedMap(x), Value::SharedMap(y)) => Arc::ptr_eq(x, y),
            (x, y) => std::mem::discriminant(x) == std::mem::discriminant(y) && x == y,
        }
    }

    fn same_map(x: &Map, y: &Map) -> bool {
        x.0.len() == y.0.len()
            && x.0
                .iter()
                .zip(&y.0)
                .all(|((kx, vx), (ky, vy))| kx == ky && same(vx, vy))
    }

    #[test]
    fn unpack_gives_back_exactly_what_was_packed() {
        let mut pod = Map::with_capacity(2);
        pod.push("pod_name", s("web-1"));
        pod.push("labels", Value::Map(Map::with_capacity(0)));
        let pod = Arc::new(pod);
        let other = Arc::new(Map::with_capacity(0));
        let mut records: Vec<Record> = (0..300).map(|i| varied(i, &pod)).collect();
        records[7]
            .body
            .push("kubernetes", Value::SharedMap(Arc::clone(&other)));
        // Bodies of other shapes between bodies of the same shape: same keys in another
        // order, one key renamed, an empty body.
        records[20].body.0.swap(0, 1);
        records[21].body.0[3].0 = Str::from("uinT");
        records.push(Record::default());
        records.push(varied(5, &pod));
        // More shapes than are remembered, nested, each seen again later.
        for i in 0..(3 * MAX_SHAPES) {
            let mut inner = Map::with_capacity(1);
            inner.push(
                format!("inner{}", i % (MAX_SHAPES + 3)),
                Value::Int(i as i64),
            );
            let mut body = Map::with_capacity(2);
            body.push(format!("k{}", i % (2 * MAX_SHAPES)), Value::Map(inner));
            body.push("z", s("z"));
            records.push(Record::new(EventTime(i as i64), body));
        }
        let p = PackedRecords::pack(&records);
        assert_eq!(p.len(), records.len());
        let back = p.unpack().unwrap();
        assert_eq!(back.len(), records.len());
        for (a, b) in records.iter().zip(&back) {
            assert_eq!(a.time, b.time);
            assert!(same_map(&a.body, &b.body), "{a:?}\n!=\n{b:?}");
        }
        // Two shared maps, each stored once, each handed back as the same allocation.
        assert_eq!(p.shared.len(), 2);
        assert_eq!(Arc::strong_count(&pod), 1 + 301 + 301 + 1);
    }

    /// A shared map's or a shape's number is an index, not a count of what follows: the last
    /// value of a chunk can be the second pod's map, or a map of the third shape.
    /// A map numbers its key list before its values on both sides, so a nested map with its
    /// parent's keys, or with keys seen later, reads back (a numbering off by one gave the
    /// wrong keys to the wrong maps).
    #[test]
    fn nested_maps_with_their_parents_keys_read_back() {
        let inner = |v: Value| Value::Map(Map(vec![("a".into(), v), ("b".into(), s("x"))]));
        let mut records = Vec::new();
        for i in 0..3 {
            let mut body = Map(vec![
                ("a".into(), inner(inner(Value::Int(i)))),
                ("b".into(), s("y")),
            ]);
            body.push("c", Value::Map(Map(vec![("z".into(), Value::Int(i))])));
            records.push(Record {
                time: EventTime(i),
                body,
            });
        }
        let back = PackedRecords::pack(&records).unpack().unwrap();
        assert_eq!(back.len(), 3);
        for (a, b) in records.iter().zip(&back) {
            assert!(same_map(&a.body, &b.body), "{:?} != {:?}", a.body, b.body);
        }
    }

    #[test]
    fn numbers_at_the_very_end_are_read_back() {
        let pods: Vec<Arc<Map>> = (0..3).map(|_| Arc::new(Map::with_capacity(0))).collect();
        let records: Vec<Record> = (0..6)
            .map(|i| {
                let mut body = Map::with_capacity(2);
                body.push(format!("k{}", i % 3), Value::Null);
                body.push("kubernetes", Value::SharedMap(Arc::clone(&pods[i % 3])));
                Record::new(EventTime(i as i64), body)
            })
            .collect();
        let back = PackedRecords::pack(&records).unpack().unwrap();
        assert!(records
            .iter()
            .zip(&back)
            .all(|(a, b)| same_map(&a.body, &b.body)));
        let mut one = Map::with_capacity(1);
        one.push("only", Value::Null);
        let mut records: Vec<Record> = (0..3)
            .map(|i| {
                let mut body = Map::with_capacity(1);
                body.push(format!("k{i}"), Value::Null);
                Record::new(EventTime(0), body)
            })
            .collect();
        records.push(Record::new(EventTime(0), one.clone()));
        records.push(Record::new(EventTime(0), one));
        let back = PackedRecords::pack(&records).unpack().unwrap();
        assert!(records
            .iter()
            .zip(&back)
            .all(|(a, b)| same_map(&a.body, &b.body)));
    }

    #[test]
    fn packed_records_take_less_memory_than_the_records() {
        let pod = Arc::new(Map::with_capacity(0));
        let records: Vec<Record> = (0..100).map(|i| varied(i, &pod)).collect();
        let tree: usize = records.iter().map(Record::mem_size).sum();
        let p = PackedRecords::pack(&records);
        assert!(p.mem_size() * 2 < tree, "{} vs {tree}", p.mem_size());
    }

    #[test]
    fn damaged_bytes_are_an_error_not_a_panic() {
        let pod = Arc::new(Map::with_capacity(0));
        let records: Vec<Record> = (0..3).map(|i| varied(i, &pod)).collect();
        let p = PackedRecords::pack(&records);
        for cut in 0..p.bytes.len() {
            let mut q = p.clone();
            q.bytes.truncate(cut);
            assert!(q.unpack().is_err(), "cut at {cut}");
        }
        for cut in (0..p.text.len()).filter(|&c| p.text.is_char_boundary(c)) {
            let mut q = p.clone();
            q.text.truncate(cut);
            assert!(q.unpack().is_err(), "text cut at {cut}");
        }
        // A string that would end inside a character is refused, not sliced.
        let mut body = Map::with_capacity(1);
        body.push("k", s("é"));
        let mut q = PackedRecords::pack(&[Record::new(EventTime(0), body)]);
        assert_eq!(q.text, "ké");
        q.text = "kxé".into();
        // time (8 bytes), `MAP`, 1 pair, the key's length, `STR`: the string's length is at byte 12.
        assert_eq!(q.unpack().unwrap_err(), UnpackError::Utf8(12));
        let mut q = p.clone();
        q.bytes.push(NULL);
        assert_eq!(
            q.unpack().unwrap_err(),
            UnpackError::Trailing(p.bytes.len())
        );
        let mut q = p.clone();
        q.text.push('x');
        assert!(matches!(q.unpack(), Err(UnpackError::Trailing(_))));
        let mut q = p.clone();
        q.shared.clear();
        assert_eq!(q.unpack().unwrap_err(), UnpackError::Shared(0));
        let mut q = p.clone();
        q.bytes[8] = 77;
        assert_eq!(
            q.unpack().unwrap_err(),
            UnpackError::Kind { kind: 77, at: 8 }
        );
        // The second and third bodies have the first one's keys, so they are written without
        // them; a `SAME_KEYS` first, with no shape known, cannot be read.
        let mut q = p.clone();
        q.bytes[8] = SAME_KEYS;
        assert!(q.unpack().is_err());
        // Every single-byte change either reads back or fails cleanly.
        for i in 0..p.bytes.len() {
            let mut q = p.clone();
            q.bytes[i] ^= 0xff;
            let _ = q.unpack();
        }
    }

    #[test]
    fn deep_nesting_is_refused_on_unpack() {
        let mut v = Value::Null;
        for _ in 0..(MAX_DEPTH + 2) {
            v = Value::Array(vec![v]);
        }
        let mut body = Map::with_capacity(1);
        body.push("deep", v);
        let p = PackedRecords::pack(&[Record::new(EventTime(0), body)]);
        assert_eq!(p.unpack().unwrap_err(), UnpackError::TooDeep);
    }
}
