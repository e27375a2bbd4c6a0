//! CloudWatch Logs specifics of failures: `rejectedLogEventsInfo` turned into event counts.
//!
//! PutLogEvents accepts a call and still refuses some of its events: those older than 14 days
//! or than the group's retention (`tooOldLogEventEndIndex`, `expiredLogEventEndIndex`: index of
//! the last such event) and those more than 2 hours ahead (`tooNewLogEventStartIndex`: index of
//! the first). Events are sorted, so refused ones sit at both ends. They will never be accepted:
//! the sink rejects their records ([`Rejected::indices`] maps them back to the call's events)
//! and logs why, and never retries them. Call-level failures use the shared classifier in
//! [`crate::retry`].

use aws_sdk_cloudwatchlogs::types::RejectedLogEventsInfo;

/// Events a call refused, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rejected {
    pub too_old: usize,
    pub too_new: usize,
    pub expired: usize,
    /// Events refused in all (old and expired overlap at the front).
    pub total: usize,
}

impl Rejected {
    /// Counts for a call of `n` events.
    pub fn from_info(info: Option<&RejectedLogEventsInfo>, n: usize) -> Self {
        let Some(info) = info else {
            return Rejected::default();
        };
        let end = |i: Option<i32>| {
            i.and_then(|i| usize::try_from(i).ok())
                .map(|i| (i + 1).min(n))
        };
        let too_old = end(info.too_old_log_event_end_index()).unwrap_or(0);
        let expired = end(info.expired_log_event_end_index()).unwrap_or(0);
        let front = too_old.max(expired);
        let too_new = info
            .too_new_log_event_start_index()
            .and_then(|i| usize::try_from(i).ok())
            .map_or(0, |i| n.saturating_sub(i.max(front)));
        Rejected {
            too_old,
            too_new,
            expired,
            total: (front + too_new).min(n),
        }
    }

    /// Indices, in a call of `n` events, of the events refused: the front (too old, expired)
    /// and the back (too new).
    pub fn indices(&self, n: usize) -> impl Iterator<Item = usize> {
        let front = self.too_old.max(self.expired).min(n);
        let back = n.saturating_sub(self.too_new).max(front);
        (0..front).chain(back..n)
    }
}
