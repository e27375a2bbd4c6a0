//! PutLogEvents limits and the split of one stream's events into calls.
//!
//! Limits (AWS CloudWatch Logs API reference, PutLogEvents; see shared facts):
//! - at most [`MAX_BATCH_BYTES`] per call, counted as the UTF-8 bytes of every message plus
//!   [`EVENT_OVERHEAD`] per event;
//! - at most [`MAX_BATCH_EVENTS`] events per call;
//! - events in chronological order, and one call spanning less than [`MAX_BATCH_SPAN_MS`];
//! - one event up to 1 MB: here at most [`MAX_MESSAGE_BYTES`] so that it fits a call alone.
//!
//! [`split`] takes events already sorted by time (a stable sort keeps records of the same
//! millisecond in their order) and cuts them greedily into the fewest consecutive calls.

use std::ops::Range;

use super::request_builder::Event;

/// Bytes per PutLogEvents call, overhead included.
pub const MAX_BATCH_BYTES: usize = 1_048_576;
/// Bytes CloudWatch Logs counts for each event besides its message.
pub const EVENT_OVERHEAD: usize = 26;
/// Events per PutLogEvents call.
pub const MAX_BATCH_EVENTS: usize = 10_000;
/// One call's events must span less than 24 hours.
pub const MAX_BATCH_SPAN_MS: i64 = 24 * 60 * 60 * 1000;
/// Longest message sent; longer ones are truncated to it.
pub const MAX_MESSAGE_BYTES: usize = MAX_BATCH_BYTES - EVENT_OVERHEAD;

/// Bytes one event counts for.
pub fn event_size(e: &Event) -> usize {
    e.size + EVENT_OVERHEAD
}

/// Cuts sorted `events` into ranges that each fit one PutLogEvents call.
pub fn split(events: &[Event]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, e) in events.iter().enumerate() {
        let size = event_size(e);
        let full = i > start
            && (i - start >= MAX_BATCH_EVENTS
                || bytes + size > MAX_BATCH_BYTES
                || e.timestamp - events[start].timestamp >= MAX_BATCH_SPAN_MS);
        if full {
            out.push(start..i);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < events.len() {
        out.push(start..events.len());
    }
    out
}
