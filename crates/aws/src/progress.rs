//! What a batch already delivered, remembered across the engine's retries of that batch.
//!
//! The engine retries a [`Batch`] whole (the same chunks, after a full-jitter wait), but AWS
//! calls commit part of a batch: a later call of the batch can be throttled after earlier ones
//! were accepted, and Firehose/Kinesis accept part of one call. An output keeps what was
//! committed here when it returns `Retry`, and the next flush of the same batch resumes after
//! it, so records already accepted are never sent twice.
//!
//! A batch is recognized by its chunks' identity. Entries hold `Weak` references, which keep the
//! allocations (so no other chunk can reuse an address) but not the records; an entry whose
//! chunks are all gone (the engine gave up on the batch) is purged on the next access.

use std::sync::{Arc, Mutex, Weak};

use logferry_core::Chunk;
use logferry_engine::Batch;

struct Entry<P> {
    chunks: Vec<Weak<Chunk>>,
    progress: P,
}

impl<P> Entry<P> {
    fn is(&self, batch: &Batch) -> bool {
        self.chunks.len() == batch.chunks.len()
            && self
                .chunks
                .iter()
                .zip(&batch.chunks)
                .all(|(w, c)| std::ptr::eq(w.as_ptr(), Arc::as_ptr(c)))
    }

    fn alive(&self) -> bool {
        self.chunks.iter().any(|w| w.strong_count() > 0)
    }
}

/// Progress of batches that are being retried.
pub struct ProgressMemo<P> {
    entries: Mutex<Vec<Entry<P>>>,
}

impl<P> Default for ProgressMemo<P> {
    fn default() -> Self {
        ProgressMemo {
            entries: Mutex::new(Vec::new()),
        }
    }
}

impl<P> ProgressMemo<P> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Entry<P>>> {
        match self.entries.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Removes and returns what an earlier flush of `batch` delivered, if it was kept.
    pub fn take(&self, batch: &Batch) -> Option<P> {
        let mut entries = self.lock();
        entries.retain(Entry::alive);
        let i = entries.iter().position(|e| e.is(batch))?;
        Some(entries.swap_remove(i).progress)
    }

    /// Remembers what this flush of `batch` delivered, for its retry.
    pub fn keep(&self, batch: &Batch, progress: P) {
        if batch.chunks.is_empty() {
            return;
        }
        let mut entries = self.lock();
        entries.retain(|e| e.alive() && !e.is(batch));
        entries.push(Entry {
            chunks: batch.chunks.iter().map(Arc::downgrade).collect(),
            progress,
        });
    }

    /// Batches remembered now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use logferry_core::Tag;

    fn chunk() -> Arc<Chunk> {
        Arc::new(Chunk::new(Tag::from("t"), Vec::new()))
    }

    #[test]
    fn kept_progress_comes_back_for_the_same_chunks_only() {
        let memo = ProgressMemo::<usize>::default();
        let a = Batch::new(Tag::from("t"), vec![chunk(), chunk()]);
        let b = Batch::new(Tag::from("t"), vec![chunk()]);
        memo.keep(&a, 7);
        assert_eq!(memo.take(&b), None);
        assert_eq!(memo.take(&a), Some(7));
        assert_eq!(memo.take(&a), None);
    }

    #[test]
    fn entries_of_dropped_batches_are_purged() {
        let memo = ProgressMemo::<usize>::default();
        let a = Batch::new(Tag::from("t"), vec![chunk()]);
        memo.keep(&a, 1);
        drop(a);
        let b = Batch::new(Tag::from("t"), vec![chunk()]);
        assert_eq!(memo.take(&b), None);
        assert!(memo.is_empty());
    }
}
