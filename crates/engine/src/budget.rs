//! `Mem_Buf_Limit`: the bytes an input has emitted that are not yet delivered (or given up).
//!
//! An input that has reached its limit waits in `acquire` (it is "paused", as Fluent Bit logs it)
//! until deliveries release enough; it does not lose its place, because it simply has not read
//! further. Like Fluent Bit, the chunk that crosses the limit is accepted, the next one waits.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// The buffer budget of one input.
#[derive(Debug)]
pub struct MemBudget {
    limit: usize,
    used: AtomicUsize,
    notify: Notify,
    /// Outputs that hold the input paused whatever its usage (`storage.pause_on_chunks_overlimit`
    /// with an output over its `storage.total_limit_size`), by output number.
    blocked_by: std::sync::Mutex<Vec<usize>>,
    blocked: std::sync::atomic::AtomicBool,
}

impl MemBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Self {
        MemBudget {
            limit: limit.max(1),
            used: AtomicUsize::new(0),
            notify: Notify::new(),
            blocked_by: std::sync::Mutex::new(Vec::new()),
            blocked: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Output `by` holds the input paused until [`MemBudget::unblock`].
    pub fn block(&self, by: usize) {
        if let Ok(mut b) = self.blocked_by.lock() {
            if !b.contains(&by) {
                b.push(by);
            }
            self.blocked.store(true, Ordering::Release);
        }
    }

    /// Output `by` no longer holds the input paused.
    pub fn unblock(&self, by: usize) {
        if let Ok(mut b) = self.blocked_by.lock() {
            b.retain(|&o| o != by);
            self.blocked.store(!b.is_empty(), Ordering::Release);
        }
        self.notify.notify_waiters();
    }

    fn has_room(&self, used: usize) -> bool {
        used < self.limit && !self.blocked.load(Ordering::Acquire)
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// The limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Whether the input is over its limit, or held by an output (paused).
    pub fn is_full(&self) -> bool {
        !self.has_room(self.used())
    }

    /// Takes `n` bytes once usage is below the limit. Returns whether it had to wait.
    ///
    /// # Cancel safety
    /// Cancel-safe: nothing is taken unless the future completes.
    pub async fn acquire(&self, n: usize) -> bool {
        let mut waited = false;
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let cur = self.used.load(Ordering::Acquire);
            if self.has_room(cur) {
                if self
                    .used
                    .compare_exchange(cur, cur + n, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    return waited;
                }
                continue;
            }
            waited = true;
            notified.await;
        }
    }

    /// Waits until usage is below the limit, taking nothing.
    ///
    /// # Cancel safety
    /// Cancel-safe.
    pub async fn wait_room(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.has_room(self.used.load(Ordering::Acquire)) {
                return;
            }
            notified.await;
        }
    }

    /// Takes `n` bytes without waiting (growth of records already admitted): the input stays
    /// paused on its next `acquire` until deliveries bring usage back under the limit.
    pub fn force(&self, n: usize) {
        self.used.fetch_add(n, Ordering::AcqRel);
    }

    /// Gives back `n` bytes and wakes a paused input.
    pub fn release(&self, n: usize) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                Some(u.saturating_sub(n))
            });
        self.notify.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn waits_at_limit_and_resumes_on_release() {
        let b = Arc::new(MemBudget::new(100));
        assert!(!b.acquire(60).await);
        assert!(!b.acquire(60).await, "the crossing chunk is accepted");
        assert!(b.is_full());
        let b2 = Arc::clone(&b);
        let waiter = tokio::spawn(async move { b2.acquire(10).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "must pause while over the limit");
        b.release(60);
        let waited = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("resumes after release")
            .unwrap();
        assert!(waited);
        assert_eq!(b.used(), 70);
    }

    #[tokio::test]
    async fn a_blocked_budget_pauses_until_every_blocker_lets_go() {
        let b = Arc::new(MemBudget::new(100));
        b.block(1);
        b.block(2);
        assert!(b.is_full());
        let b2 = Arc::clone(&b);
        let waiter = tokio::spawn(async move { b2.acquire(10).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        b.unblock(1);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "output 2 still holds it");
        b.unblock(2);
        let waited = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("resumes")
            .unwrap();
        assert!(waited);
    }

    #[tokio::test]
    async fn forced_growth_pauses_the_next_acquire_until_released() {
        let b = Arc::new(MemBudget::new(100));
        b.acquire(50).await;
        b.force(60);
        assert!(b.is_full());
        let b2 = Arc::clone(&b);
        let waiter = tokio::spawn(async move { b2.acquire(10).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        b.release(110);
        let waited = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("resumes after release")
            .unwrap();
        assert!(waited);
    }
}
