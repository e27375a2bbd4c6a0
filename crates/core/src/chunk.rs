//! Chunks: records that travel together under one tag, and the delivery tracking that tells the
//! input that produced them what became of them.
//!
//! A chunk is created by an input, filtered in place, then shared (`Arc<Chunk>`) by every output
//! whose `Match` accepts its tag. Each output marks the outcome on the chunk's [`Delivery`]; when
//! the last reference is dropped the delivery's callback runs once with the worst outcome seen.
//! That single drop is where buffer memory is released and where an input learns it may commit
//! (for tail: move the offset).

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use std::time::Instant;

use crate::event::Record;
use crate::msgpack::{event_size_memo, mem_and_event_size, MapHeaders};
use crate::packed::{PackedRecords, UnpackError};
use crate::tag::Tag;

/// The size of `records` in Fluent Bit's event encoding.
pub fn wire_size(records: &[Record], headers: MapHeaders) -> usize {
    let mut memo = None;
    records
        .iter()
        .map(|r| event_size_memo(r, headers, &mut memo))
        .sum()
}

/// `Mem_Buf_Limit` bytes ([`Record::mem_size`]) and [`wire_size`] of `records`, in one walk.
pub fn mem_and_wire_size(records: &[Record], headers: MapHeaders) -> (usize, usize) {
    let mut memo = None;
    records.iter().fold((0, 0), |(m, w), r| {
        let (rm, rw) = mem_and_event_size(r, headers, &mut memo);
        (m + rm, w + rw)
    })
}

/// What happened to a chunk, worst outcome across all outputs that took it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum DeliveryStatus {
    /// Every output that matched accepted it (or none matched, or filters dropped every record).
    Delivered = 0,
    /// An output gave up on it (a permanent error, or `Retry_Limit` reached): the data is gone,
    /// it was counted and logged. Re-reading it would only fail again.
    Rejected = 1,
    /// It was dropped before any output finished with it (shutdown before delivery). The input
    /// must not treat it as delivered: after a restart it is read again.
    Abandoned = 2,
}

impl DeliveryStatus {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => DeliveryStatus::Delivered,
            1 => DeliveryStatus::Rejected,
            _ => DeliveryStatus::Abandoned,
        }
    }

    /// Whether the input may move past these records (offsets committed).
    pub fn is_final(self) -> bool {
        self != DeliveryStatus::Abandoned
    }
}

/// Callback run once when every holder of a chunk has let go of it.
pub type DeliveryCallback = Box<dyn FnOnce(DeliveryStatus) + Send>;

/// Shared outcome of one chunk.
///
/// It counts holders that still owe an outcome: it starts with one (the router, which takes it
/// when the input emits), every output the router hands the chunk to adds one
/// ([`Delivery::expect`]), and each holder settles its share with [`Delivery::mark`]. When the
/// tracker drops, any holder that never settled makes the outcome `Abandoned`.
pub struct Delivery {
    status: AtomicU8,
    owed: AtomicUsize,
    callbacks: Mutex<Vec<DeliveryCallback>>,
}

impl Delivery {
    /// A new tracker owed one outcome (the router's), with no callbacks.
    pub fn new() -> Arc<Self> {
        Arc::new(Delivery {
            status: AtomicU8::new(DeliveryStatus::Delivered as u8),
            owed: AtomicUsize::new(1),
            callbacks: Mutex::new(Vec::new()),
        })
    }

    /// Adds a callback to run when the last holder drops.
    pub fn on_done(&self, cb: DeliveryCallback) {
        if let Ok(mut cbs) = self.callbacks.lock() {
            cbs.push(cb);
        }
    }

    /// Registers `n` more holders that each owe an outcome.
    pub fn expect(&self, n: usize) {
        self.owed.fetch_add(n, Ordering::AcqRel);
    }

    /// Settles one holder's share; the worst outcome wins.
    pub fn mark(&self, status: DeliveryStatus) {
        self.status.fetch_max(status as u8, Ordering::AcqRel);
        let _ = self
            .owed
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    /// A share of this delivery for a stage that keeps some of the chunk's records after the
    /// chunk moved on (a multiline filter holding a message's first lines): the outcome waits
    /// for it, and it is settled with the outcome of the chunk that finally carries those
    /// records ([`Chunk::carry`]).
    pub fn hold(self: &Arc<Self>) -> Held {
        self.expect(1);
        Held(Arc::clone(self))
    }

    /// The outcome so far: `Abandoned` while any holder still owes one.
    pub fn status(&self) -> DeliveryStatus {
        if self.owed.load(Ordering::Acquire) > 0 {
            return DeliveryStatus::Abandoned;
        }
        DeliveryStatus::from_u8(self.status.load(Ordering::Acquire))
    }
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("owed", &self.owed.load(Ordering::Relaxed))
            .field("status", &self.status.load(Ordering::Relaxed))
            .finish()
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        let status = self.status();
        let cbs = match self.callbacks.get_mut() {
            Ok(c) => std::mem::take(c),
            Err(poisoned) => std::mem::take(poisoned.into_inner()),
        };
        for cb in cbs {
            cb(status);
        }
    }
}

/// One share owed on a chunk's [`Delivery`] by a stage that holds some of its records
/// ([`Delivery::hold`]). Settled with the outcome of the chunk that carries the records on;
/// dropped unsettled (records lost at shutdown), it leaves the source chunk `Abandoned`, so
/// its input reads them again.
pub struct Held(Arc<Delivery>);

impl Held {
    /// Settles the share with the outcome of the records it stood for.
    pub fn settle(self, status: DeliveryStatus) {
        self.0.mark(status);
    }
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Held")
    }
}

/// The buffer limit a chunk is charged against (the engine's `Mem_Buf_Limit` budget of the
/// input that made it).
pub trait MemCharge: Send + Sync {
    /// Adds `n` bytes to what the chunk holds; they are given back with the rest when the
    /// chunk's delivery settles. Never waits: the input pauses on its next emit instead.
    fn grow(&self, n: usize);

    /// Whether the input has reached its limit (it is paused): outputs then send what they
    /// batch at once instead of waiting for the Flush tick, which the input would otherwise
    /// wait for too.
    fn pressing(&self) -> bool;

    /// The input's `Mem_Buf_Limit` in bytes, when this charge counts against one.
    fn limit(&self) -> Option<usize> {
        None
    }
}

/// Records that share a tag, produced by one input.
pub struct Chunk {
    pub tag: Tag,
    /// The records, unless they are [`Chunk::packed`] (then this is empty).
    pub records: Vec<Record>,
    /// The records packed while they wait for the outputs ([`Chunk::pack`]); outputs flush
    /// an unpacked copy ([`Chunk::unpacked`]).
    pub packed: Option<PackedRecords>,
    /// Bytes this chunk counts against its input's `Mem_Buf_Limit` ([`Record::mem_size`]).
    pub size: usize,
    /// Its size in Fluent Bit's event encoding ([`crate::msgpack::event_size`]): what the byte
    /// metrics count, as Fluent Bit counts its chunks' msgpack bytes.
    pub wire_size: usize,
    /// How the input that made it writes a record's maps (kept when filters re-measure it).
    pub headers: MapHeaders,
    /// The input instance that made it (`tail.0`), for the per-route metrics; `None` for
    /// chunks no input made (tests, records a filter released on its own).
    pub source: Option<Arc<str>>,
    /// The plugin of the input that made it (`tail`, `fluentbit_logs`), for filters that treat
    /// one input's records apart (kubernetes enriches `fluentbit_logs` records with the agent's
    /// own pod); `None` once filters have run and for chunks no input made.
    pub origin: Option<&'static str>,
    /// When its input made it: the start of `fluentbit_output_latency_seconds`.
    pub born: Instant,
    /// Outcome tracking; `None` only for chunks nobody waits on (tests, tools).
    pub delivery: Option<Arc<Delivery>>,
    /// Where growth after filters is charged; `None` for chunks no budget tracks.
    pub charge: Option<Arc<dyn MemCharge>>,
}

impl Chunk {
    /// A chunk with no delivery tracking.
    pub fn new(tag: Tag, records: Vec<Record>) -> Self {
        let size = records.iter().map(Record::mem_size).sum();
        let wire_size = wire_size(&records, MapHeaders::Compact);
        Chunk {
            tag,
            records,
            packed: None,
            size,
            wire_size,
            headers: MapHeaders::Compact,
            source: None,
            origin: None,
            born: Instant::now(),
            delivery: None,
            charge: None,
        }
    }

    /// Re-measures the records after filters changed them and charges any growth to the
    /// input's budget, so `Mem_Buf_Limit` sees what enrichment (kubernetes metadata, merged
    /// logs) added, not only what the input read.
    pub fn recharge(&mut self) {
        let now: usize = self.records.iter().map(Record::mem_size).sum();
        self.recharge_measured(now);
    }

    /// [`Chunk::recharge`] with the records' size already measured (`now`, the sum of their
    /// [`Record::mem_size`], as [`mem_and_wire_size`] gives it).
    pub fn recharge_measured(&mut self, now: usize) {
        if now > self.size {
            if let Some(c) = &self.charge {
                c.grow(now - self.size);
            }
        }
        self.size = now;
    }

    /// How many records it carries, packed or not.
    pub fn len(&self) -> usize {
        self.records.len() + self.packed.as_ref().map_or(0, PackedRecords::len)
    }

    /// Whether it carries no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Packs the records ([`crate::packed`]) for their wait in the outputs' queues. The charge
    /// on the input's `Mem_Buf_Limit` stays what the records cost unpacked, so the limit
    /// still counts every record as it will be again during its flush, and the memory the
    /// queued records really take is a fraction of the limit.
    pub fn pack(&mut self) {
        if self.packed.is_none() && !self.records.is_empty() {
            self.packed = Some(PackedRecords::pack(&self.records));
            self.records = Vec::new();
        }
    }

    /// A chunk with this one's records unpacked, for one flush: it shares this chunk's
    /// delivery tracking and budget charge, so it settles this chunk's share and keeps its
    /// charge held while it lives. Its records are freed when the flush lets it go.
    pub fn unpacked(&self) -> Result<Chunk, UnpackError> {
        let records = match &self.packed {
            Some(p) => p.unpack()?,
            None => self.records.clone(),
        };
        Ok(Chunk {
            tag: Arc::clone(&self.tag),
            records,
            packed: None,
            size: self.size,
            wire_size: self.wire_size,
            headers: self.headers,
            source: self.source.clone(),
            origin: self.origin,
            born: self.born,
            delivery: self.delivery.clone(),
            charge: self.charge.clone(),
        })
    }

    /// Whether the input that made this chunk is short of buffer ([`MemCharge::pressing`]).
    pub fn pressing(&self) -> bool {
        self.charge.as_ref().is_some_and(|c| c.pressing())
    }

    /// This chunk now carries records held back from earlier chunks: their shares settle with
    /// the outcome of this chunk's outputs. From here on the outputs settle a tracker of their
    /// own, which also settles this chunk's own delivery; so records of this chunk that a
    /// filter still holds delay this chunk's outcome, but never the outcome of the earlier
    /// records it carries (else each chunk would wait for the next one, and no offset would
    /// move while lines keep coming).
    pub fn carry(&mut self, held: Vec<Held>) {
        if held.is_empty() {
            return;
        }
        let own = self.delivery.as_ref().map(|d| d.hold());
        let sent = Delivery::new();
        sent.on_done(Box::new(move |status| {
            for h in held {
                h.settle(status);
            }
            if let Some(own) = own {
                own.settle(status);
            }
        }));
        if let Some(before) = self.delivery.replace(sent) {
            // Its routing share: the outputs now owe their outcome to `sent`.
            before.mark(DeliveryStatus::Delivered);
        }
    }

    /// Records this holder's outcome on the chunk's delivery tracker, if any.
    pub fn mark(&self, status: DeliveryStatus) {
        if let Some(d) = &self.delivery {
            d.mark(status);
        }
    }
}

impl std::fmt::Debug for Chunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chunk")
            .field("tag", &self.tag)
            .field("records", &self.len())
            .field("packed", &self.packed.is_some())
            .field("size", &self.size)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn tracked() -> (Arc<Delivery>, mpsc::Receiver<DeliveryStatus>) {
        let d = Delivery::new();
        let (tx, rx) = mpsc::channel();
        d.on_done(Box::new(move |s| {
            let _ = tx.send(s);
        }));
        (d, rx)
    }

    #[test]
    fn unsettled_router_share_is_abandoned() {
        let (d, rx) = tracked();
        drop(d);
        assert_eq!(rx.try_recv(), Ok(DeliveryStatus::Abandoned));
    }

    #[test]
    fn no_route_is_delivered() {
        let (d, rx) = tracked();
        d.mark(DeliveryStatus::Delivered); // router: nothing matched
        drop(d);
        assert_eq!(rx.try_recv(), Ok(DeliveryStatus::Delivered));
    }

    #[test]
    fn one_output_delivered_other_never_settled_is_abandoned() {
        let (d, rx) = tracked();
        d.expect(2);
        d.mark(DeliveryStatus::Delivered); // router
        d.mark(DeliveryStatus::Delivered); // output 1; output 2 dropped at shutdown
        drop(d);
        assert_eq!(rx.try_recv(), Ok(DeliveryStatus::Abandoned));
    }

    #[test]
    fn held_share_waits_for_the_carrying_chunk() {
        let (d, rx) = tracked();
        let held = d.hold();
        d.mark(DeliveryStatus::Delivered); // router: the held records left the chunk
        drop(d);
        assert!(rx.try_recv().is_err(), "a held share keeps the source open");
        let mut carrier = Chunk::new(Arc::from("t"), Vec::new());
        carrier.carry(vec![held]);
        let cd = carrier.delivery.clone().unwrap();
        drop(carrier);
        assert!(rx.try_recv().is_err(), "the carrier is not settled yet");
        cd.mark(DeliveryStatus::Rejected);
        drop(cd);
        assert_eq!(rx.try_recv(), Ok(DeliveryStatus::Rejected));
    }

    /// Chunk 1's held lines leave with chunk 2, while a line of chunk 2 is held in turn: chunk
    /// 1 settles as soon as chunk 2's outputs are done, not when chunk 2's held line is.
    #[test]
    fn carried_shares_do_not_wait_for_the_carriers_own_held_records() {
        let (d1, rx1) = tracked();
        let h1 = d1.hold();
        d1.mark(DeliveryStatus::Delivered);
        drop(d1);
        let (d2, rx2) = tracked();
        let mut c2 = Chunk::new(Arc::from("t"), Vec::new());
        c2.delivery = Some(Arc::clone(&d2));
        let h2 = d2.hold(); // a filter holds a line of chunk 2
        drop(d2);
        c2.carry(vec![h1]);
        let sent = c2.delivery.clone().unwrap();
        sent.expect(1); // one output
        c2.mark(DeliveryStatus::Delivered); // the router's share
        drop(c2);
        sent.mark(DeliveryStatus::Delivered); // the output
        drop(sent);
        assert_eq!(rx1.try_recv(), Ok(DeliveryStatus::Delivered));
        assert!(rx2.try_recv().is_err(), "chunk 2 waits for its held line");
        h2.settle(DeliveryStatus::Delivered);
        assert_eq!(rx2.try_recv(), Ok(DeliveryStatus::Delivered));
    }

    #[test]
    fn a_held_share_dropped_unsettled_abandons_the_source() {
        let (d, rx) = tracked();
        let held = d.hold();
        d.mark(DeliveryStatus::Delivered);
        drop(d);
        drop(held);
        assert_eq!(rx.try_recv(), Ok(DeliveryStatus::Abandoned));
    }

    #[test]
    fn callback_runs_once_after_last_holder_with_worst_status() {
        let (d, rx) = tracked();
        d.expect(2);
        d.mark(DeliveryStatus::Delivered);
        let other = Arc::clone(&d);
        d.mark(DeliveryStatus::Delivered);
        drop(d);
        assert!(rx.try_recv().is_err(), "must wait for the last holder");
        other.mark(DeliveryStatus::Rejected);
        drop(other);
        assert_eq!(rx.try_recv(), Ok(DeliveryStatus::Rejected));
        assert!(rx.try_recv().is_err());
    }
}
