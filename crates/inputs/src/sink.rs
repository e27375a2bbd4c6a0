//! Where an input's records go. The engine's [`Emitter`] is the real sink; tests collect records
//! with their own.

use std::future::Future;

use logferry_core::{Record, Tag};
use logferry_engine::{Emitter, PluginError};

/// Takes batches of records from an input loop.
pub trait RecordSink: Send {
    /// Sends one batch; `read_bytes` is what the input read to make it. Waits while the input
    /// is paused. Not cancel-safe: do not race it in `select!`.
    fn emit(
        &mut self,
        records: Vec<Record>,
        read_bytes: usize,
    ) -> impl Future<Output = Result<(), PluginError>> + Send;
}

/// The engine's emitter with the input's tag.
pub struct EmitterSink {
    pub emitter: Emitter,
    pub tag: Tag,
}

impl RecordSink for EmitterSink {
    fn emit(
        &mut self,
        records: Vec<Record>,
        read_bytes: usize,
    ) -> impl Future<Output = Result<(), PluginError>> + Send {
        self.emitter
            .emit(Tag::clone(&self.tag), records, read_bytes, None)
    }
}

/// A sink that keeps every batch (tests and tools).
#[derive(Debug, Default)]
pub struct CollectSink {
    pub batches: Vec<Vec<Record>>,
    pub bytes: usize,
}

impl CollectSink {
    /// Every record collected, in order.
    pub fn records(&self) -> impl Iterator<Item = &Record> {
        self.batches.iter().flatten()
    }
}

impl RecordSink for CollectSink {
    fn emit(
        &mut self,
        records: Vec<Record>,
        read_bytes: usize,
    ) -> impl Future<Output = Result<(), PluginError>> + Send {
        self.bytes += read_bytes;
        if !records.is_empty() {
            self.batches.push(records);
        }
        std::future::ready(Ok(()))
    }
}
