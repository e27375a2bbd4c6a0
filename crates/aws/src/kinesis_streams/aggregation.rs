//! KPL aggregation: many user records in one Kinesis record, readable by the Kinesis Client
//! Library and the usual deaggregation libraries.
//!
//! Format: the 4 magic bytes `F3 89 9A C2`, an `AggregatedRecord` protobuf message, then the
//! MD5 digest of that message. `AggregatedRecord { repeated string partition_key_table = 1;
//! repeated string explicit_hash_key_table = 2; repeated Record records = 3; }` and
//! `Record { uint64 partition_key_index = 1; uint64 explicit_hash_key_index = 2; bytes data = 3; }`.
//! The Kinesis record's partition key is its first user record's. [`Aggregator`] computes the
//! exact encoded size as records are added, so an aggregate never exceeds the record limit.

use std::ops::Range;

use md5::{Digest, Md5};

/// The KPL magic prefix.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];
/// Bytes of the MD5 digest suffix.
pub const DIGEST_LEN: usize = 16;

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, field: u32, data: &[u8]) {
    put_varint(out, u64::from(field << 3 | 2));
    put_varint(out, data.len() as u64);
    out.extend_from_slice(data);
}

/// Length of a length-delimited field of `len` bytes (field numbers < 16).
fn field_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

fn record_len(key_index: usize, data_len: usize) -> usize {
    1 + varint_len(key_index as u64) + field_len(data_len)
}

/// Builds one aggregated record. Keys and data are kept in two buffers (no allocation per
/// user record), reused from one aggregate to the next.
#[derive(Debug, Default)]
pub struct Aggregator {
    /// The partition key table, one key after another.
    key_text: String,
    keys: Vec<Range<usize>>,
    /// User records: key index and where the data lies in `data`.
    records: Vec<(usize, Range<usize>)>,
    data: Vec<u8>,
    proto_len: usize,
}

impl Aggregator {
    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// User records added.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    fn key(&self, i: usize) -> &str {
        self.keys
            .get(i)
            .and_then(|r| self.key_text.get(r.clone()))
            .unwrap_or_default()
    }

    fn find(&self, key: &str) -> Option<usize> {
        (0..self.keys.len()).find(|&i| self.key(i) == key)
    }

    /// The Kinesis partition key of the aggregate (its first record's).
    pub fn partition_key(&self) -> Option<&str> {
        (!self.keys.is_empty()).then(|| self.key(0))
    }

    /// Bytes the aggregate would count for (data plus its partition key) with one more record.
    pub fn size_with(&self, key: &str, data_len: usize) -> usize {
        let (idx, key_cost) = match self.find(key) {
            Some(i) => (i, 0),
            None => (self.keys.len(), field_len(key.len())),
        };
        let proto = self.proto_len + key_cost + field_len(record_len(idx, data_len));
        let pk = self.partition_key().map_or(key.len(), str::len);
        MAGIC.len() + proto + DIGEST_LEN + pk
    }

    /// Bytes the aggregate counts for now.
    pub fn size(&self) -> usize {
        MAGIC.len() + self.proto_len + DIGEST_LEN + self.partition_key().map_or(0, str::len)
    }

    /// Adds a user record.
    pub fn add(&mut self, key: &str, data: &[u8]) {
        let idx = match self.find(key) {
            Some(i) => i,
            None => {
                self.proto_len += field_len(key.len());
                let from = self.key_text.len();
                self.key_text.push_str(key);
                self.keys.push(from..self.key_text.len());
                self.keys.len() - 1
            }
        };
        self.proto_len += field_len(record_len(idx, data.len()));
        let from = self.data.len();
        self.data.extend_from_slice(data);
        self.records.push((idx, from..self.data.len()));
    }

    /// Writes the aggregated blob into `out` (replacing what it held) and returns its partition
    /// key; the aggregator is left empty.
    pub fn finish_into(&mut self, out: &mut Vec<u8>) -> String {
        out.clear();
        out.reserve(MAGIC.len() + self.proto_len + DIGEST_LEN);
        out.extend_from_slice(&MAGIC);
        for k in &self.keys {
            put_bytes(
                out,
                1,
                self.key_text.get(k.clone()).unwrap_or_default().as_bytes(),
            );
        }
        for (idx, span) in &self.records {
            let data = self.data.get(span.clone()).unwrap_or_default();
            put_varint(out, u64::from(3u32 << 3 | 2));
            put_varint(out, record_len(*idx, data.len()) as u64);
            put_varint(out, 1 << 3);
            put_varint(out, *idx as u64);
            put_bytes(out, 3, data);
        }
        let digest = Md5::digest(out.get(MAGIC.len()..).unwrap_or_default());
        out.extend_from_slice(&digest);
        let key = self.partition_key().unwrap_or_default().to_string();
        self.key_text.clear();
        self.keys.clear();
        self.records.clear();
        self.data.clear();
        self.proto_len = 0;
        key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The aggregate built the plain way (a message per record, then the whole), to check
    /// the one-pass writer against.
    fn reference(records: &[(&str, &[u8])]) -> (Vec<u8>, String) {
        let mut keys: Vec<&str> = Vec::new();
        let mut proto = Vec::new();
        for (k, _) in records {
            if !keys.contains(k) {
                keys.push(k);
            }
        }
        for k in &keys {
            put_bytes(&mut proto, 1, k.as_bytes());
        }
        for (k, data) in records {
            let mut rec = Vec::new();
            put_varint(&mut rec, 1 << 3);
            put_varint(&mut rec, keys.iter().position(|x| x == k).unwrap() as u64);
            put_bytes(&mut rec, 3, data);
            put_bytes(&mut proto, 3, &rec);
        }
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&proto);
        out.extend_from_slice(&Md5::digest(&proto));
        (out, records[0].0.to_string())
    }

    #[test]
    fn encodes_kpl_with_exact_sizes() {
        let mut a = Aggregator::default();
        let predicted = a.size_with("k1", 3);
        a.add("k1", b"abc");
        assert_eq!(a.size(), predicted);
        let predicted = a.size_with("k2", 200);
        a.add("k2", &[b'x'; 200]);
        a.add("k1", b"z");
        assert_eq!(a.len(), 3);
        let size = a.size();
        let mut blob = Vec::new();
        let key = a.finish_into(&mut blob);
        assert_eq!(key, "k1");
        assert!(predicted < size);
        assert_eq!(blob.len() + key.len(), size);
        assert_eq!(&blob[..4], &MAGIC);
        let proto = &blob[4..blob.len() - 16];
        assert_eq!(&blob[blob.len() - 16..], Md5::digest(proto).as_slice());
        // partition_key_table "k1": field 1, length 2.
        assert_eq!(&proto[..4], &[0x0a, 0x02, b'k', b'1']);
        assert!(a.is_empty());
    }

    #[test]
    fn one_pass_writer_matches_the_plain_encoding_and_is_reusable() {
        let big = vec![b'y'; 300];
        let sets: [&[(&str, &[u8])]; 2] = [
            &[
                ("k1", b"abc"),
                ("k2", &big),
                ("k1", b""),
                ("\u{e9}\"", b"\x00\xff"),
            ],
            &[("only", b"{\"log\":\"x\"}\n")],
        ];
        let mut a = Aggregator::default();
        let mut blob = Vec::new();
        for records in sets {
            for (k, d) in records {
                a.add(k, d);
            }
            let size = a.size();
            let key = a.finish_into(&mut blob);
            let (want, want_key) = reference(records);
            assert_eq!(blob, want);
            assert_eq!(key, want_key);
            assert_eq!(blob.len() + key.len(), size);
        }
    }
}
