//! The agent's own log lines, mirrored to `fluentbit_logs` inputs.
//!
//! As Fluent Bit 5.1 documents its `fluentbit_logs` input: mirroring is on only while such an
//! input runs, each input has a bounded queue of 1024 entries, and lines logged before it
//! starts or while its queue is full are not delivered through it (they still go to the log
//! file or stderr, and the drops are counted). The logging layer calls [`publish`]; it never
//! blocks and never logs (a log line about a log line would loop).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::Notify;

/// Entries each subscriber's queue holds (Fluent Bit's documented bound).
pub const QUEUE_LEN: usize = 1024;

/// One mirrored log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// When it was logged.
    pub time: logferry_core::EventTime,
    /// `error`, `warn`, `info`, `debug` or `trace`, as Fluent Bit names its levels.
    pub level: &'static str,
    /// The text after the level: `[component] message key=value`.
    pub message: String,
}

/// One input's queue.
#[derive(Default)]
pub struct Subscriber {
    queue: Mutex<VecDeque<LogLine>>,
    notify: Notify,
    dropped: AtomicU64,
    closed: AtomicBool,
}

impl Subscriber {
    /// Waits until a line is queued.
    pub async fn wait(&self) {
        self.notify.notified().await;
    }

    /// Takes every queued line, oldest first.
    pub fn drain(&self) -> Vec<LogLine> {
        match self.queue.lock() {
            Ok(mut q) => q.drain(..).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Lines not queued because the queue was full, since the last call.
    pub fn take_dropped(&self) -> u64 {
        self.dropped.swap(0, Ordering::Relaxed)
    }

    fn push(&self, line: &LogLine) {
        let Ok(mut q) = self.queue.lock() else {
            return;
        };
        if q.len() >= QUEUE_LEN {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        q.push_back(line.clone());
        drop(q);
        self.notify.notify_one();
    }
}

/// Unsubscribes when the input stops.
pub struct Subscription(pub Arc<Subscriber>);

impl Drop for Subscription {
    fn drop(&mut self) {
        self.0.closed.store(true, Ordering::Relaxed);
        if let Ok(mut subs) = hub().subs.lock() {
            subs.retain(|s| !s.closed.load(Ordering::Relaxed));
            ACTIVE.store(!subs.is_empty(), Ordering::Relaxed);
        }
    }
}

#[derive(Default)]
struct Hub {
    subs: Mutex<Vec<Arc<Subscriber>>>,
}

/// Whether any input listens: the logging layer skips formatting the line otherwise.
static ACTIVE: AtomicBool = AtomicBool::new(false);

fn hub() -> &'static Hub {
    static HUB: OnceLock<Hub> = OnceLock::new();
    HUB.get_or_init(Hub::default)
}

/// Starts mirroring log lines to a new queue, until the returned subscription drops.
pub fn subscribe() -> Subscription {
    let sub = Arc::new(Subscriber::default());
    if let Ok(mut subs) = hub().subs.lock() {
        subs.push(Arc::clone(&sub));
        ACTIVE.store(true, Ordering::Relaxed);
    }
    Subscription(sub)
}

/// Whether [`publish`] would deliver anything.
pub fn active() -> bool {
    ACTIVE.load(Ordering::Relaxed)
}

/// Queues a line for every listening input.
pub fn publish(line: LogLine) {
    if !active() {
        return;
    }
    // try_lock: a line logged while subscribing or unsubscribing is not worth a wait.
    let Ok(subs) = hub().subs.try_lock() else {
        return;
    };
    for s in subs.iter() {
        s.push(&line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(n: usize) -> LogLine {
        LogLine {
            time: logferry_core::EventTime(n as i64),
            level: "info",
            message: format!("[engine] line {n}"),
        }
    }

    /// One test: the hub is process-wide, so subscriptions in parallel tests would see each
    /// other's lines.
    #[test]
    fn mirrors_only_while_subscribed_and_bounds_the_queue() {
        publish(line(0));
        let sub = subscribe();
        assert!(active());
        for n in 1..=QUEUE_LEN + 10 {
            publish(line(n));
        }
        let got = sub.0.drain();
        assert_eq!(got.len(), QUEUE_LEN, "the queue holds {QUEUE_LEN}");
        assert_eq!(
            got[0],
            line(1),
            "lines before subscribing are not delivered"
        );
        assert_eq!(sub.0.take_dropped(), 10);
        assert_eq!(sub.0.take_dropped(), 0);
        publish(line(7));
        assert_eq!(sub.0.drain(), vec![line(7)]);
        drop(sub);
        assert!(!active());
    }
}
