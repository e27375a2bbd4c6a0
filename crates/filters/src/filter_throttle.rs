//! `throttle` filter: keeps the average number of records per `Interval` at or below `Rate`,
//! averaged over the last `Window` intervals, and drops the rest (Fluent Bit's
//! `filter_throttle`).
//!
//! As Fluent Bit documents it: the window is `Window` panes of `Interval` each; a record is let
//! through when, counting it, the average over the panes filled so far stays at or below `Rate`
//! (a "slow start": before `Window` intervals have passed, the average is over the panes there
//! are, so 1, 3, 5 records in the first three seconds average 3, not 1.8), and dropped
//! otherwise. One window per filter instance, over every tag it matches. Defaults as Fluent Bit
//! 5.1: `Rate 1`, `Window 5`, `Interval 1` (seconds; `1.5m`, `0.5h` as in its "sleep" format).
//!
//! `Print_Status On` logs the average, the limit and the window at info level once per interval
//! that had records (Fluent Bit prints from a timer every interval, records or not). Dropped
//! records are counted in `fluentbit_filter_drop_records_total`, as for every filter.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use logferry_core::config::{ConfigError, Entry, Section};
use logferry_core::{options, Record};
use logferry_engine::{BuildContext, Filter, FilterPlugin};

options! {
    /// Options of the `throttle` filter.
    pub struct ThrottleOptions for "throttle filter" {
        /// Records allowed per Interval, on average over the window (may be fractional).
        pub rate: f64 = ["Rate"] Some("1"),
        /// Intervals the average is taken over.
        pub window: i64 = ["Window"] Some("5"),
        /// Length of one interval (10, 10s, 1.5m, 0.5h).
        pub interval: Duration = ["Interval"] Some("1"),
        /// Log the current rate and the limits at info level every interval.
        pub print_status: bool = ["Print_Status"] Some("false"),
    }
}

/// The registry entry.
pub static PLUGIN: FilterPlugin = FilterPlugin {
    name: "throttle",
    aliases: &[],
    description: "Throttle messages using sliding window algorithm",
    options: ThrottleOptions::OPTIONS,
    default_workers: 0,
    build,
};

fn build(
    ctx: &BuildContext,
    section: &Section,
    entries: &[&Entry],
) -> Result<Box<dyn Filter>, ConfigError> {
    let o = ThrottleOptions::from_entries(&section.span, entries, &[])?;
    let err = |key: &str, reason: String| {
        let span = entries
            .iter()
            .rev()
            .find(|e| e.key.eq_ignore_ascii_case(key))
            .map_or(&section.span, |e| &e.span);
        ConfigError::key(span, key, reason)
    };
    if !(o.rate > 0.0 && o.rate.is_finite()) {
        return Err(err("Rate", format!("must be above 0, got {}", o.rate)));
    }
    if o.window < 1 {
        return Err(err(
            "Window",
            format!("must be at least 1, got {}", o.window),
        ));
    }
    if o.interval.is_zero() {
        return Err(err("Interval", "must be above 0".into()));
    }
    Ok(Box::new(Throttle::new(
        o.rate,
        o.window as usize,
        o.interval,
        o.print_status.then(|| ctx.instance.clone()),
    )))
}

/// The sliding window.
pub struct Throttle {
    rate: f64,
    window: usize,
    interval: Duration,
    /// Records let through per interval, oldest first; the last is the current interval.
    panes: VecDeque<u64>,
    total: u64,
    /// The start of the current interval.
    pane_start: Instant,
    /// `Print_Status`: the instance name to log under.
    status: Option<String>,
}

impl Throttle {
    pub fn new(rate: f64, window: usize, interval: Duration, status: Option<String>) -> Self {
        Throttle {
            rate,
            window,
            interval,
            panes: VecDeque::from([0]),
            total: 0,
            pane_start: Instant::now(),
            status,
        }
    }

    /// Moves the window on by the intervals that passed until `now`.
    fn advance(&mut self, now: Instant) {
        let passed = now.saturating_duration_since(self.pane_start);
        if passed < self.interval {
            return;
        }
        let steps = (passed.as_nanos() / self.interval.as_nanos().max(1)) as u64;
        if let Some(name) = &self.status {
            tracing::info!(filter = %name, rate = format!("{:.2}", self.average()),
                limit = self.rate, interval = ?self.interval, window = self.window,
                "current rate per interval");
        }
        // More steps than panes only empties the window.
        for _ in 0..steps.min(self.window as u64) {
            self.panes.push_back(0);
            if self.panes.len() > self.window {
                if let Some(old) = self.panes.pop_front() {
                    self.total -= old;
                }
            }
        }
        self.pane_start += self
            .interval
            .saturating_mul(steps.min(u32::MAX as u64) as u32);
    }

    fn average(&self) -> f64 {
        self.total as f64 / self.panes.len().max(1) as f64
    }

    /// Whether one more record may pass now; counts it when it may.
    pub fn admit(&mut self, now: Instant) -> bool {
        self.advance(now);
        let filled = self.panes.len().max(1) as f64;
        if (self.total + 1) as f64 > self.rate * filled {
            return false;
        }
        self.total += 1;
        if let Some(last) = self.panes.back_mut() {
            *last += 1;
        }
        true
    }
}

#[async_trait]
impl Filter for Throttle {
    async fn filter(&mut self, _tag: &str, records: &mut Vec<Record>) {
        let now = Instant::now();
        records.retain(|_| self.admit(now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{build, build_err};

    #[tokio::test]
    async fn through_the_registry_one_record_a_second_by_default() {
        let mut f = build(&PLUGIN, &[]).unwrap();
        let mut recs = crate::testing::records(r#"[{"a":1},{"a":2},{"a":3}]"#);
        f.filter("t", &mut recs).await;
        assert_eq!(recs.len(), 1, "Rate 1 per Interval 1 s");
        let e = build_err(&PLUGIN, &[("Rate", "0")]);
        assert!(e.contains("test.conf:2") && e.contains("Rate"), "{e}");
        let e = build_err(&PLUGIN, &[("Interval", "soon")]);
        assert!(e.contains("Interval"), "{e}");
    }

    /// Fluent Bit's documented example: Rate 5, Window 5, Interval 1s; 1, 3 and 5 records in
    /// the first three seconds all pass (slow start: average 3); later a pane that would take
    /// the average over 5 is cut so that it stays at 5.
    #[test]
    fn the_documented_window() {
        let t0 = Instant::now();
        let mut t = Throttle::new(5.0, 5, Duration::from_secs(1), None);
        let sec = |n: u64| t0 + Duration::from_millis(1000 * n + 10);
        let mut passed = Vec::new();
        for (i, offered) in [1u64, 3, 5, 7, 3, 4, 7].into_iter().enumerate() {
            let at = sec(i as u64);
            passed.push((0..offered).filter(|_| t.admit(at)).count() as u64);
        }
        // Second 4: 7 offered; (1+3+5+7)/4 = 4 ≤ 5, all pass. Second 7: panes 3,5,7,3,4 then
        // 7 would make 26/5 = 5.2, so 6 pass (25/5 = 5); the window slid past the 1 and the 3.
        assert_eq!(passed, [1, 3, 5, 7, 3, 4, 6]);
    }

    #[test]
    fn a_flood_leaks_at_the_rate() {
        let t0 = Instant::now();
        let mut t = Throttle::new(10.0, 2, Duration::from_secs(1), None);
        let mut total = 0;
        for s in 0..10u64 {
            let at = t0 + Duration::from_millis(1000 * s + 1);
            total += (0..1000).filter(|_| t.admit(at)).count();
        }
        assert_eq!(total, 100, "10 per second over 10 seconds");
    }

    #[test]
    fn a_long_pause_empties_the_window() {
        let t0 = Instant::now();
        let mut t = Throttle::new(2.0, 3, Duration::from_secs(1), None);
        assert_eq!((0..5).filter(|_| t.admit(t0)).count(), 2);
        let later = t0 + Duration::from_secs(3600);
        // The window is three empty panes: 2 × 3 = 6 may pass at once.
        assert_eq!((0..10).filter(|_| t.admit(later)).count(), 6);
    }
}
