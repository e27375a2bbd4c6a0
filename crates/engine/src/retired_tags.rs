//! Tags no input uses any more: `tail` retires a file's tag when it closes the last file that
//! had it (deleted or rotated away and read to its end), so that filters keeping state per tag
//! (kubernetes: one entry per container log file) let it go then, not after an idle timeout.
//!
//! A bounded log read through cursors: each reader sees every tag retired after it was made,
//! unless it fell more than [`KEEP`] behind (then it misses the oldest, which its own idle
//! sweep still removes).

use std::collections::VecDeque;
use std::sync::{Mutex, OnceLock};

use logferry_core::Tag;

/// Retired tags kept for readers.
pub const KEEP: usize = 65_536;

struct Log {
    /// The sequence number of the first tag in `tags`.
    first: u64,
    tags: VecDeque<Tag>,
}

fn log() -> &'static Mutex<Log> {
    static LOG: OnceLock<Mutex<Log>> = OnceLock::new();
    LOG.get_or_init(|| {
        Mutex::new(Log {
            first: 0,
            tags: VecDeque::new(),
        })
    })
}

/// Says that no input uses `tag` any more.
pub fn retire(tag: Tag) {
    let Ok(mut l) = log().lock() else { return };
    if l.tags.len() >= KEEP {
        l.tags.pop_front();
        l.first += 1;
    }
    l.tags.push_back(tag);
}

/// A reader of retired tags.
#[derive(Debug)]
pub struct Cursor {
    next: u64,
}

impl Cursor {
    /// A reader of the tags retired from now on.
    pub fn new() -> Self {
        let next = log()
            .lock()
            .map(|l| l.first + l.tags.len() as u64)
            .unwrap_or(0);
        Cursor { next }
    }

    /// The tags retired since the last call.
    pub fn take(&mut self) -> Vec<Tag> {
        let Ok(l) = log().lock() else {
            return Vec::new();
        };
        let end = l.first + l.tags.len() as u64;
        let from = self.next.max(l.first);
        self.next = end;
        l.tags
            .iter()
            .skip((from - l.first) as usize)
            .cloned()
            .collect()
    }
}

impl Default for Cursor {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_see_what_was_retired_after_they_started() {
        retire(Tag::from("before"));
        let mut a = Cursor::new();
        retire(Tag::from("kube.a"));
        let mut b = Cursor::new();
        retire(Tag::from("kube.b"));
        // Other tests in this process may retire tags too: look for ours.
        let got_a = a.take();
        let got_b = b.take();
        assert!(!got_a.iter().any(|t| &**t == "before"));
        assert!(got_a.iter().any(|t| &**t == "kube.a"));
        assert!(got_a.iter().any(|t| &**t == "kube.b"));
        assert!(!got_b.iter().any(|t| &**t == "kube.a"));
        assert!(got_b.iter().any(|t| &**t == "kube.b"));
        assert!(!a.take().iter().any(|t| &**t == "kube.b"), "each tag once");
    }
}
