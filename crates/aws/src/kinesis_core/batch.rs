//! Call limits of PutRecordBatch / PutRecords and the split of pending items into calls.

use std::ops::Range;

/// Limits of one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Records per call.
    pub max_records: usize,
    /// Bytes per call (data, plus partition keys for Kinesis).
    pub max_bytes: usize,
    /// Bytes of one record (data, plus its partition key for Kinesis).
    pub max_record_bytes: usize,
}

/// Cuts items of `sizes` (each at most `max_record_bytes`) into consecutive calls.
pub fn split(sizes: &[usize], limits: Limits) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, &size) in sizes.iter().enumerate() {
        if i > start && (i - start >= limits.max_records || bytes + size > limits.max_bytes) {
            out.push(start..i);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < sizes.len() {
        out.push(start..sizes.len());
    }
    out
}
