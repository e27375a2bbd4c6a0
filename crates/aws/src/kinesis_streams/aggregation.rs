//! KPL aggregation: many user records in one Kinesis record, readable by the Kinesis Client
//! Library and the usual deaggregation libraries.
//!
//! Format: the 4 magic bytes `F3 89 9A C2`, an `AggregatedRecord` protobuf message, then the
//! MD5 digest of that message. `AggregatedRecord { repeated string partition_key_table = 1;
//! repeated string explicit_hash_key_table = 2; repeated Record records = 3; }` and
//! `Record { uint64 partition_key_index = 1; uint64 explicit_hash_key_index = 2; bytes data = 3; }`.
//! The Kinesis record's partition key is its first user record's. [`Aggregator`] computes the
//! exact encoded size as records are added, so an aggregate never exceeds the record limit.

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

/// Builds one aggregated record.
#[derive(Debug, Default)]
pub struct Aggregator {
    keys: Vec<String>,
    records: Vec<(usize, Vec<u8>)>,
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

    /// The Kinesis partition key of the aggregate (its first record's).
    pub fn partition_key(&self) -> Option<&str> {
        self.keys.first().map(String::as_str)
    }

    /// Bytes the aggregate would count for (data plus its partition key) with one more record.
    pub fn size_with(&self, key: &str, data_len: usize) -> usize {
        let (idx, key_cost) = match self.keys.iter().position(|k| k == key) {
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
    pub fn add(&mut self, key: &str, data: Vec<u8>) {
        let idx = match self.keys.iter().position(|k| k == key) {
            Some(i) => i,
            None => {
                self.proto_len += field_len(key.len());
                self.keys.push(key.to_string());
                self.keys.len() - 1
            }
        };
        self.proto_len += field_len(record_len(idx, data.len()));
        self.records.push((idx, data));
    }

    /// The aggregated blob and its partition key; the aggregator is left empty.
    pub fn finish(&mut self) -> (Vec<u8>, String) {
        let mut proto = Vec::with_capacity(self.proto_len);
        for k in &self.keys {
            put_bytes(&mut proto, 1, k.as_bytes());
        }
        let mut rec = Vec::new();
        for (idx, data) in &self.records {
            rec.clear();
            put_varint(&mut rec, 1 << 3);
            put_varint(&mut rec, *idx as u64);
            put_bytes(&mut rec, 3, data);
            put_bytes(&mut proto, 3, &rec);
        }
        let mut out = Vec::with_capacity(MAGIC.len() + proto.len() + DIGEST_LEN);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&proto);
        out.extend_from_slice(&Md5::digest(&proto));
        let key = self.keys.first().cloned().unwrap_or_default();
        *self = Aggregator::default();
        (out, key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_kpl_with_exact_sizes() {
        let mut a = Aggregator::default();
        let predicted = a.size_with("k1", 3);
        a.add("k1", b"abc".to_vec());
        assert_eq!(a.size(), predicted);
        let predicted = a.size_with("k2", 200);
        a.add("k2", vec![b'x'; 200]);
        a.add("k1", b"z".to_vec());
        assert_eq!(a.len(), 3);
        let size = a.size();
        let (blob, key) = a.finish();
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
}
