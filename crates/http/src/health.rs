//! `/api/v1/health`: Fluent Bit's rule, and logferry's optional no-progress rule.
//!
//! Fluent Bit keeps the running totals of output errors and given-up retries, sampled once a
//! second, for `HC_Period` seconds; the agent is unhealthy when the totals now exceed the oldest
//! sample of the window by more than `HC_Errors_Count` or `HC_Retry_Failure_Count` (strictly more:
//! `period_errors > HC_Errors_Count` in `health.c`, "over" in its documentation).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use logferry_engine::metrics::{Metrics, PluginMetrics};

use crate::options::HttpOptions;

/// Sums over every instance that health is judged on, read from the atomics at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    /// Output flushes that failed for good.
    pub errors: u64,
    /// Output retries given up after `Retry_Limit`.
    pub retry_failures: u64,
    /// Records inputs emitted, plus records filters added, plus pauses by `Mem_Buf_Limit`: work
    /// that should reach an output.
    pub work_in: u64,
    /// Records filters dropped: work that reaches no output by design.
    pub absorbed: u64,
    /// Records outputs delivered or dropped: the pipeline moved.
    pub work_out: u64,
    /// Number of outputs.
    pub outputs: usize,
}

impl Totals {
    pub fn of(m: &Metrics) -> Self {
        let get = PluginMetrics::get;
        let mut t = Totals::default();
        for i in Metrics::list(&m.inputs) {
            t.work_in = t
                .work_in
                .wrapping_add(get(&i.records))
                .wrapping_add(get(&i.paused));
        }
        for f in Metrics::list(&m.filters) {
            t.work_in = t.work_in.wrapping_add(get(&f.retried_records));
            t.absorbed = t.absorbed.wrapping_add(get(&f.dropped_records));
        }
        let outputs = Metrics::list(&m.outputs);
        t.outputs = outputs.len();
        for o in outputs {
            t.errors = t.errors.wrapping_add(get(&o.errors));
            t.retry_failures = t.retry_failures.wrapping_add(get(&o.retries_failed));
            t.work_out = t
                .work_out
                .wrapping_add(get(&o.records))
                .wrapping_add(get(&o.dropped_records));
        }
        t
    }
}

#[derive(Clone, Copy, Debug)]
struct Sample {
    at: Instant,
    errors: u64,
    retry_failures: u64,
}

/// The health verdict and the numbers behind it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthReport {
    /// Whether `/api/v1/health` answers 200 `ok` (else 500 `error`).
    pub healthy: bool,
    /// Output errors within the window.
    pub period_errors: u64,
    /// Retries given up within the window.
    pub period_retry_failures: u64,
    /// How long the outputs have made no progress while records waited, when that is over
    /// `hc_no_progress` (logferry only).
    pub stalled_for: Option<Duration>,
}

/// The window of samples and the no-progress tracker. Reset when the metrics are replaced (a
/// reload starts every counter from zero).
#[derive(Debug)]
pub(crate) struct Health {
    samples: VecDeque<Sample>,
    last: Totals,
    /// Since when records have waited with no output progress (no-progress rule).
    waiting_since: Option<Instant>,
}

impl Health {
    pub fn new(now: Instant, totals: Totals) -> Self {
        let mut h = Health {
            samples: VecDeque::new(),
            last: totals,
            waiting_since: None,
        };
        h.reset(now, totals);
        h
    }

    /// Starts over from `totals` (new counters after a reload).
    pub fn reset(&mut self, now: Instant, totals: Totals) {
        self.samples.clear();
        self.samples.push_back(Sample {
            at: now,
            errors: totals.errors,
            retry_failures: totals.retry_failures,
        });
        self.last = totals;
        self.waiting_since = None;
    }

    /// Takes a sample and forgets the ones older than `period` (the newest always stays).
    pub fn record(&mut self, now: Instant, totals: Totals, period: Duration) {
        let came_in = totals
            .work_in
            .wrapping_sub(self.last.work_in)
            .saturating_sub(totals.absorbed.wrapping_sub(self.last.absorbed));
        let went_out = totals.work_out.wrapping_sub(self.last.work_out);
        if went_out > 0 {
            // Progress; whatever came in beyond what went out waits from now.
            self.waiting_since = (came_in > went_out).then_some(now);
        } else if came_in > 0 {
            self.waiting_since.get_or_insert(now);
        }
        self.last = totals;
        self.samples.push_back(Sample {
            at: now,
            errors: totals.errors,
            retry_failures: totals.retry_failures,
        });
        while self.samples.len() > 1
            && self
                .samples
                .front()
                .is_some_and(|s| now.saturating_duration_since(s.at) > period)
        {
            self.samples.pop_front();
        }
    }

    /// The verdict for `totals` read now.
    pub fn report(&self, now: Instant, totals: Totals, opts: &HttpOptions) -> HealthReport {
        let (period_errors, period_retry_failures) = match self.samples.front() {
            Some(oldest) => (
                totals.errors.saturating_sub(oldest.errors),
                totals.retry_failures.saturating_sub(oldest.retry_failures),
            ),
            None => (0, 0),
        };
        let stalled_for = opts.hc_no_progress.and_then(|limit| {
            let waited = now.saturating_duration_since(self.waiting_since?);
            (totals.outputs > 0 && totals.work_out == self.last.work_out && waited >= limit)
                .then_some(waited)
        });
        HealthReport {
            healthy: period_errors <= opts.hc_errors_count
                && period_retry_failures <= opts.hc_retry_failure_count
                && stalled_for.is_none(),
            period_errors,
            period_retry_failures,
            stalled_for,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> HttpOptions {
        HttpOptions {
            health_check: true,
            hc_errors_count: 2,
            hc_retry_failure_count: 1,
            hc_period: Duration::from_secs(10),
            ..HttpOptions::default()
        }
    }

    fn t(errors: u64, retry_failures: u64) -> Totals {
        Totals {
            errors,
            retry_failures,
            outputs: 1,
            ..Totals::default()
        }
    }

    #[test]
    fn more_than_the_count_within_the_period_is_unhealthy() {
        let o = opts();
        let t0 = Instant::now();
        let mut h = Health::new(t0, t(0, 0));
        let s = |n| t0 + Duration::from_secs(n);
        h.record(s(1), t(2, 0), o.hc_period);
        assert!(
            h.report(s(1), t(2, 0), &o).healthy,
            "2 errors is not over 2"
        );
        let r = h.report(s(2), t(3, 0), &o);
        assert!(!r.healthy);
        assert_eq!(r.period_errors, 3);
        h.record(s(2), t(3, 0), o.hc_period);
        assert!(!h.report(s(2), t(3, 2), &o).healthy, "retry failures too");
        // The samples before the errors leave the window: healthy again.
        h.record(s(12), t(3, 2), o.hc_period);
        h.record(s(13), t(3, 2), o.hc_period);
        let r = h.report(s(13), t(3, 2), &o);
        assert!(r.healthy, "{r:?}");
        assert_eq!((r.period_errors, r.period_retry_failures), (0, 0));
    }

    #[test]
    fn a_reset_starts_from_the_new_counters() {
        let o = opts();
        let t0 = Instant::now();
        let mut h = Health::new(t0, t(100, 100));
        h.reset(t0, t(0, 0));
        assert!(h.report(t0, t(1, 0), &o).healthy);
        assert!(!h.report(t0, t(3, 0), &o).healthy);
    }

    #[test]
    fn no_progress_only_counts_when_records_wait() {
        let mut o = opts();
        o.hc_no_progress = Some(Duration::from_secs(5));
        let t0 = Instant::now();
        let s = |n| t0 + Duration::from_secs(n);
        let flow = |inp, out| Totals {
            work_in: inp,
            work_out: out,
            outputs: 1,
            ..Totals::default()
        };
        let mut h = Health::new(t0, flow(0, 0));
        // Idle: nothing in, nothing out.
        h.record(s(10), flow(0, 0), o.hc_period);
        assert!(h.report(s(10), flow(0, 0), &o).healthy);
        // Flowing.
        h.record(s(11), flow(10, 10), o.hc_period);
        h.record(s(12), flow(20, 20), o.hc_period);
        assert!(h.report(s(12), flow(20, 20), &o).healthy);
        // Records come in, none go out.
        h.record(s(13), flow(30, 20), o.hc_period);
        assert!(h.report(s(16), flow(30, 20), &o).healthy, "not for 5s yet");
        let r = h.report(s(18), flow(30, 20), &o);
        assert!(!r.healthy);
        assert_eq!(r.stalled_for, Some(Duration::from_secs(5)));
        assert!(
            h.report(s(18), flow(30, 25), &o).healthy,
            "progress not sampled yet"
        );
        // Progress again.
        h.record(s(19), flow(30, 30), o.hc_period);
        assert!(h.report(s(30), flow(30, 30), &o).healthy);
        // Records a filter drops do not wait for an output.
        let dropped = Totals {
            absorbed: 10,
            ..flow(40, 30)
        };
        h.record(s(31), dropped, o.hc_period);
        assert!(h.report(s(40), dropped, &o).healthy);
    }
}
