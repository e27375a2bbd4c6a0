//! Ordered commit of offsets: a file's offset moves to the end of a chunk only when that chunk
//! and every chunk read before it from the same file are delivered (or given up by an output).
//! A chunk that was abandoned (the agent stopped before delivering it) pins the offset where it
//! starts, so the next run reads it again: at-least-once, never a gap.
//!
//! Delivery callbacks run on output tasks; they settle here and write the DB directly, so an
//! offset is durable as soon as its chunk is delivered, even after the tail task has returned.
//! Each offset is written with Fluent Bit 5.x's marker of it, read through the file's own
//! descriptor as Fluent Bit does, so that Fluent Bit trusts the offset when it takes the DB over.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::sync::{Arc, Mutex};

use logferry_core::DeliveryStatus;

use crate::db::Db;
use crate::marker::Marker;

/// Identifies a tailed file within one tail instance.
pub type FileKey = u64;

struct Pending {
    seq: u64,
    end: u64,
    settled: Option<bool>,
}

struct FileAcks {
    db_id: Option<i64>,
    /// The file, to compute the marker of each committed offset.
    file: Option<Arc<File>>,
    queue: VecDeque<Pending>,
    committed: u64,
    /// An abandoned chunk: nothing after it may be committed in this run.
    stuck: bool,
    /// The file is gone and closed: forget its row once everything is settled.
    forget_when_drained: bool,
}

struct Inner {
    db: Option<Db>,
    files: HashMap<FileKey, FileAcks>,
    next_seq: u64,
    /// Chunks emitted and not yet settled (`logferry_tail_acks_pending`).
    pending: Arc<std::sync::atomic::AtomicU64>,
}

/// Shared between the tail task and the delivery callbacks.
#[derive(Clone)]
pub struct Tracker(Arc<Mutex<Inner>>);

impl Tracker {
    /// A tracker writing to `db` when given.
    pub fn new(db: Option<Db>) -> Self {
        Self::with_gauge(db, Arc::default())
    }

    /// A tracker that keeps `pending` at the number of chunks awaiting their outcome.
    pub fn with_gauge(db: Option<Db>, pending: Arc<std::sync::atomic::AtomicU64>) -> Self {
        Tracker(Arc::new(Mutex::new(Inner {
            db,
            files: HashMap::new(),
            next_seq: 0,
            pending,
        })))
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let mut g = match self.0.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut g)
    }

    /// Runs `f` with the DB, if there is one (for inserts and renames from the tail task).
    pub fn db<R>(&self, f: impl FnOnce(&Db) -> R) -> Option<R> {
        self.with(|i| i.db.as_ref().map(f))
    }

    /// Starts tracking a file whose delivered offset is `committed`.
    pub fn register(
        &self,
        key: FileKey,
        db_id: Option<i64>,
        committed: u64,
        file: Option<Arc<File>>,
    ) {
        self.with(|i| {
            i.files.insert(
                key,
                FileAcks {
                    db_id,
                    file,
                    queue: VecDeque::new(),
                    committed,
                    stuck: false,
                    forget_when_drained: false,
                },
            );
        });
    }

    /// Notes that a chunk covering the file up to `end` is about to be emitted; returns the
    /// sequence number its callback settles.
    pub fn reserve(&self, key: FileKey, end: u64) -> u64 {
        self.with(|i| {
            let seq = i.next_seq;
            i.next_seq += 1;
            if let Some(f) = i.files.get_mut(&key) {
                f.queue.push_back(Pending {
                    seq,
                    end,
                    settled: None,
                });
                i.pending.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            seq
        })
    }

    /// Settles a chunk's outcome and commits what has become contiguous.
    pub fn settle(&self, key: FileKey, seq: u64, status: DeliveryStatus) {
        self.with(|i| {
            let Some(f) = i.files.get_mut(&key) else { return };
            if let Some(p) = f.queue.iter_mut().find(|p| p.seq == seq && p.settled.is_none()) {
                p.settled = Some(status.is_final());
                let _ = i.pending.fetch_update(std::sync::atomic::Ordering::Relaxed, std::sync::atomic::Ordering::Relaxed, |n| n.checked_sub(1));
            }
            if !status.is_final() {
                f.stuck = true;
            }
            let before = f.committed;
            while !f.stuck && f.queue.front().is_some_and(|p| p.settled == Some(true)) {
                if let Some(p) = f.queue.pop_front() {
                    f.committed = f.committed.max(p.end);
                }
            }
            let (db_id, committed, forget) = (
                f.db_id,
                f.committed,
                f.forget_when_drained && f.queue.iter().all(|p| p.settled.is_some()),
            );
            let file = f.file.clone();
            if forget && !f.stuck {
                i.files.remove(&key);
                if let (Some(db), Some(id)) = (&i.db, db_id) {
                    if let Err(e) = db.delete(id) {
                        tracing::error!(error = %e, "cannot remove a finished file from the tail DB");
                    }
                }
            } else if committed != before {
                if let (Some(db), Some(id)) = (&i.db, db_id) {
                    if let Err(e) = db.set_offset(id, committed, Marker::for_db(file.as_deref(), committed)) {
                        tracing::error!(error = %e, "cannot save a tail offset");
                    }
                }
            }
        });
    }

    /// The file was truncated (copytruncate): everything before is moot, start over at 0.
    pub fn reset(&self, key: FileKey) {
        self.with(|i| {
            if let Some(f) = i.files.get_mut(&key) {
                let unsettled = f.queue.iter().filter(|p| p.settled.is_none()).count() as u64;
                let _ = i.pending.fetch_update(
                    std::sync::atomic::Ordering::Relaxed,
                    std::sync::atomic::Ordering::Relaxed,
                    |n| Some(n.saturating_sub(unsettled)),
                );
                f.queue.clear();
                f.committed = 0;
                f.stuck = false;
                if let (Some(db), Some(id)) = (&i.db, f.db_id) {
                    if let Err(e) = db.set_offset(id, 0, Marker::default()) {
                        tracing::error!(error = %e, "cannot save a tail offset");
                    }
                }
            }
        });
    }

    /// The file is gone and closed: drop its row once all its chunks are settled.
    pub fn forget_when_drained(&self, key: FileKey) {
        self.with(|i| {
            let Some(f) = i.files.get_mut(&key) else { return };
            f.forget_when_drained = true;
            if f.queue.is_empty() && !f.stuck {
                let id = f.db_id;
                i.files.remove(&key);
                if let (Some(db), Some(id)) = (&i.db, id) {
                    if let Err(e) = db.delete(id) {
                        tracing::error!(error = %e, "cannot remove a finished file from the tail DB");
                    }
                }
            }
        });
    }

    /// The delivered offset of a file.
    pub fn committed(&self, key: FileKey) -> Option<u64> {
        self.with(|i| i.files.get(&key).map(|f| f.committed))
    }

    /// Chunks emitted but not yet settled, over all files.
    pub fn outstanding(&self) -> usize {
        self.with(|i| {
            i.files
                .values()
                .map(|f| f.queue.iter().filter(|p| p.settled.is_none()).count())
                .sum()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_only_contiguous_delivered_prefix() {
        let t = Tracker::new(None);
        t.register(1, None, 0, None);
        let a = t.reserve(1, 100);
        let b = t.reserve(1, 200);
        let c = t.reserve(1, 300);
        t.settle(1, b, DeliveryStatus::Delivered);
        assert_eq!(t.committed(1), Some(0), "b waits for a");
        t.settle(1, a, DeliveryStatus::Rejected);
        assert_eq!(t.committed(1), Some(200), "a given up counts as final");
        t.settle(1, c, DeliveryStatus::Delivered);
        assert_eq!(t.committed(1), Some(300));
    }

    #[test]
    fn pending_gauge_follows_reserve_settle_and_reset() {
        let g: Arc<std::sync::atomic::AtomicU64> = Arc::default();
        let t = Tracker::with_gauge(None, Arc::clone(&g));
        t.register(1, None, 0, None);
        let a = t.reserve(1, 10);
        let _b = t.reserve(1, 20);
        assert_eq!(g.load(std::sync::atomic::Ordering::Relaxed), 2);
        t.settle(1, a, DeliveryStatus::Delivered);
        t.settle(1, a, DeliveryStatus::Delivered);
        assert_eq!(
            g.load(std::sync::atomic::Ordering::Relaxed),
            1,
            "settling twice counts once"
        );
        t.reset(1);
        assert_eq!(g.load(std::sync::atomic::Ordering::Relaxed), 0);
    }

    #[test]
    fn abandoned_chunk_pins_the_offset() {
        let t = Tracker::new(None);
        t.register(1, None, 10, None);
        let a = t.reserve(1, 100);
        let b = t.reserve(1, 200);
        t.settle(1, a, DeliveryStatus::Abandoned);
        t.settle(1, b, DeliveryStatus::Delivered);
        assert_eq!(t.committed(1), Some(10));
    }

    #[test]
    fn writes_offsets_and_forgets_drained_files_in_the_db() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let db = Db::open(&path, "normal", "WAL", false).unwrap();
        let id = db.insert("/x.log", 5, 0, Marker::default()).unwrap();
        let log = dir.path().join("x.log");
        std::fs::write(&log, "x".repeat(200)).unwrap();
        let file = Arc::new(File::open(&log).unwrap());
        let t = Tracker::new(Some(db));
        t.register(7, Some(id), 0, Some(Arc::clone(&file)));
        let a = t.reserve(7, 64);
        t.settle(7, a, DeliveryStatus::Delivered);
        let check = Db::open(&path, "normal", "WAL", false).unwrap();
        let row = check.find(5, "", false).unwrap().unwrap();
        assert_eq!(row.offset, 64);
        assert_eq!(
            Some(row.marker),
            Marker::at(&file, 64),
            "the marker is written with the offset"
        );
        assert_eq!(row.marker.size, 32);
        let b = t.reserve(7, 128);
        t.forget_when_drained(7);
        assert!(
            check.find(5, "", false).unwrap().is_some(),
            "still owed a chunk"
        );
        t.settle(7, b, DeliveryStatus::Delivered);
        assert!(check.find(5, "", false).unwrap().is_none());
    }
}
