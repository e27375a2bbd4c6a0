//! Tags no input uses any more: `tail` retires a file's tag when it closes the last file that
//! had it (deleted or rotated away and read to its end), so that filters keeping state per tag
//! (kubernetes: one entry per container log file) let it go then, not after an idle timeout.
//!
//! A log read through cursors: each reader sees every tag retired after it was made, unless it
//! fell more than [`KEEP`] behind (then it misses the oldest, which its own idle sweep still
//! removes). A tag is kept only until every live cursor has read it, and not at all while
//! there is no cursor (a configuration without such a filter), so pod churn does not pile up
//! tags here.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, OnceLock};

use logferry_core::Tag;

/// Most retired tags kept for readers that lag.
pub const KEEP: usize = 65_536;

#[derive(Default)]
struct Log {
    /// The sequence number of the first tag in `tags`.
    first: u64,
    tags: VecDeque<Tag>,
    /// The sequence number each live cursor reads next, by cursor id.
    readers: HashMap<u64, u64>,
    next_id: u64,
}

impl Log {
    fn end(&self) -> u64 {
        self.first + self.tags.len() as u64
    }

    fn retire(&mut self, tag: Tag) {
        if self.readers.is_empty() {
            return;
        }
        if self.tags.len() >= KEEP {
            self.tags.pop_front();
            self.first += 1;
        }
        self.tags.push_back(tag);
    }

    fn register(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let end = self.end();
        self.readers.insert(id, end);
        id
    }

    fn unregister(&mut self, id: u64) {
        self.readers.remove(&id);
        self.trim();
    }

    fn take(&mut self, id: u64) -> Vec<Tag> {
        let end = self.end();
        let from = self
            .readers
            .get(&id)
            .copied()
            .unwrap_or(end)
            .max(self.first);
        self.readers.insert(id, end);
        let got = self
            .tags
            .iter()
            .skip((from - self.first) as usize)
            .cloned()
            .collect();
        self.trim();
        got
    }

    /// Drops what every cursor has read (everything without cursors).
    fn trim(&mut self) {
        let upto = self.readers.values().copied().min().unwrap_or(self.end());
        while self.first < upto && self.tags.pop_front().is_some() {
            self.first += 1;
        }
        if self.tags.capacity() > 1024 && self.tags.len() < self.tags.capacity() / 4 {
            self.tags.shrink_to(self.tags.len() * 2);
        }
    }
}

fn log() -> &'static Mutex<Log> {
    static LOG: OnceLock<Mutex<Log>> = OnceLock::new();
    LOG.get_or_init(|| Mutex::new(Log::default()))
}

fn with<R>(f: impl FnOnce(&mut Log) -> R) -> R {
    let mut g = match log().lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    f(&mut g)
}

/// Says that no input uses `tag` any more.
pub fn retire(tag: Tag) {
    with(|l| l.retire(tag));
}

/// A reader of retired tags.
#[derive(Debug)]
pub struct Cursor {
    id: u64,
}

impl Cursor {
    /// A reader of the tags retired from now on.
    pub fn new() -> Self {
        Cursor {
            id: with(Log::register),
        }
    }

    /// The tags retired since the last call.
    pub fn take(&mut self) -> Vec<Tag> {
        with(|l| l.take(self.id))
    }
}

impl Default for Cursor {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Cursor {
    fn drop(&mut self) {
        with(|l| l.unregister(self.id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_see_what_was_retired_after_they_started() {
        let mut l = Log::default();
        l.retire(Tag::from("unread"));
        let a = l.register();
        l.retire(Tag::from("kube.a"));
        let b = l.register();
        l.retire(Tag::from("kube.b"));
        let got_a: Vec<String> = l.take(a).iter().map(|t| t.to_string()).collect();
        assert_eq!(got_a, ["kube.a", "kube.b"], "not what came before it");
        assert_eq!(l.tags.len(), 1, "kube.a went once both had read past it");
        let got_b: Vec<String> = l.take(b).iter().map(|t| t.to_string()).collect();
        assert_eq!(got_b, ["kube.b"]);
        assert!(l.take(a).is_empty(), "each tag once");
        assert!(
            l.tags.is_empty(),
            "nothing is kept once every cursor read it"
        );
    }

    #[test]
    fn nothing_is_kept_without_readers_and_churn_does_not_pile_up() {
        let mut l = Log::default();
        for i in 0..10_000 {
            l.retire(Tag::from(format!("kube.none-{i}").as_str()));
        }
        assert!(l.tags.is_empty(), "no cursor: nothing kept");
        let a = l.register();
        for round in 0..10 {
            for i in 0..1_000 {
                l.retire(Tag::from(format!("kube.{round}-{i}").as_str()));
            }
            assert_eq!(l.take(a).len(), 1_000);
            assert!(l.tags.is_empty());
        }
        assert!(l.tags.capacity() <= 2048, "capacity {}", l.tags.capacity());
        let b = l.register();
        l.retire(Tag::from("kube.last"));
        l.unregister(b);
        assert_eq!(l.tags.len(), 1, "a is yet to read it");
        l.unregister(a);
        assert!(l.tags.is_empty());
    }

    #[test]
    fn the_global_log_through_cursors() {
        let mut a = Cursor::new();
        retire(Tag::from("kube.global-a"));
        // Other tests in this process may retire tags too: look for ours.
        assert!(a.take().iter().any(|t| &**t == "kube.global-a"));
        assert!(!a.take().iter().any(|t| &**t == "kube.global-a"));
    }
}
