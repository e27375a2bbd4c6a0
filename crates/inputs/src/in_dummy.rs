//! `dummy` input: generates a fixed record on a timer (Fluent Bit's `in_dummy`), for testing,
//! benchmarking and getting started.
//!
//! Behaviour, as Fluent Bit 5.x's `in_dummy.c`:
//! - one *event* per tick; an event is `Copies` copies of the `Dummy` record(s) (`Dummy` may hold
//!   several JSON objects back to back, each a record), all with the same timestamp;
//! - the tick is `Interval_sec`/`Interval_nsec` when either is above 0 (negative values reset
//!   both to 0), else `1/Rate` seconds when `Rate` is above 1, else one second;
//! - the first event comes one tick after start, or at once with `Flush_on_startup`;
//! - `Samples` counts events (not records): after that many the input finishes, and the agent
//!   stops when every input has finished (logferry's rule); 0 or less means no limit;
//! - timestamps: with `Start_time_sec`/`Start_time_nsec` (either not -1) time starts there and
//!   advances with the wall clock; `Fixed_timestamp` repeats that start time (or the start-up
//!   time when none is set) on every event;
//! - ticks missed while the input was paused or the host was busy are skipped, not caught up
//!   (Fluent Bit's timerfd collector runs once however many expirations it reads); a tick shorter
//!   than the timer's 1 ms resolution still produces `Rate` events per second by generating the
//!   events due within each millisecond together.
//!
//! Differences: an invalid `Dummy` or `Metadata` (not JSON, or not objects) is a configuration
//! error (Fluent Bit warns and uses the default), and so is `Copies` below 1 (Fluent Bit then
//! produces nothing). `Metadata` is validated but not attached: logferry records carry no
//! metadata.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use logferry_core::config::{ConfigError, Entry, Section};
use logferry_core::{options, EventTime, Map, Record, Value};
use logferry_engine::common::NotApplied;
use logferry_engine::{
    BuildContext, CancellationToken, Input, InputContext, InputExit, InputPlugin, PluginError,
};
use tokio::time::Instant;

use crate::key_error;
use crate::sink::{EmitterSink, RecordSink};

options! {
    /// Options of the `dummy` input.
    pub struct DummyOptions for "dummy input" {
        /// JSON record to generate; several objects back to back make several records.
        pub dummy: String = ["Dummy"] Some(r#"{"message":"dummy"}"#),
        /// JSON metadata (validated; logferry records carry no metadata).
        pub metadata: String = ["Metadata"] Some("{}"),
        /// Base timestamp, seconds part; -1 uses the current time.
        pub start_time_sec: i64 = ["Start_time_sec"] Some("-1"),
        /// Base timestamp, nanoseconds part; -1 uses the current time.
        pub start_time_nsec: i64 = ["Start_time_nsec"] Some("-1"),
        /// Events per second (ignored when Interval_sec or Interval_nsec is set).
        pub rate: i64 = ["Rate"] Some("1"),
        /// Seconds between events; overrides Rate.
        pub interval_sec: i64 = ["Interval_sec"] Some("0"),
        /// Nanoseconds between events; overrides Rate.
        pub interval_nsec: i64 = ["Interval_nsec"] Some("0"),
        /// Events to generate before the input finishes; 0 means no limit.
        pub samples: i64 = ["Samples"] Some("0"),
        /// Copies of the record in each event.
        pub copies: i64 = ["Copies"] Some("1"),
        /// Give every event the same timestamp.
        pub fixed_timestamp: bool = ["Fixed_timestamp"] Some("off"),
        /// Generate the first event at start instead of one interval later.
        pub flush_on_startup: bool = ["Flush_on_startup"] Some("false"),
        /// Fluent Bit's test switch that hangs at exit (accepted; not applied).
        pub test_hang_on_exit: bool = ["test_hang_on_exit"] Some("false"),
    }
}

/// Keys accepted and not applied (each set one is a build note).
const NOT_APPLIED: &[NotApplied] = &[NotApplied::new(
    "test_hang_on_exit",
    Some("false"),
    "a test switch of Fluent Bit's hot reload watchdog",
)];

/// The registry entry.
pub static PLUGIN: InputPlugin = InputPlugin {
    name: "dummy",
    aliases: &[],
    description: "Generate dummy data",
    options: DummyOptions::OPTIONS,
    default_workers: 1,
    build,
};

/// The options, checked.
#[derive(Clone, Debug)]
pub struct DummySettings {
    /// Records of one copy of an event.
    pub bodies: Vec<Map>,
    /// Time between events.
    pub interval: Duration,
    /// Base timestamp (`Start_time_*`).
    pub start_time: Option<EventTime>,
    pub fixed_timestamp: bool,
    /// `None`: no limit.
    pub samples: Option<u64>,
    pub copies: u64,
    pub flush_on_startup: bool,
}

/// Parses whitespace-separated JSON objects.
fn json_objects(text: &str) -> Result<Vec<Map>, String> {
    let mut out = Vec::new();
    for v in serde_json::Deserializer::from_str(text).into_iter::<serde_json::Value>() {
        match Value::from_json(v.map_err(|e| format!("invalid JSON: {e}"))?) {
            Value::Map(m) => out.push(m),
            _ => return Err("expected a JSON object".into()),
        }
    }
    if out.is_empty() {
        return Err("expected a JSON object, got nothing".into());
    }
    Ok(out)
}

impl DummySettings {
    /// Checks the options; an error names the Fluent Bit key at fault.
    pub fn from_options(o: &DummyOptions) -> Result<Self, (&'static str, String)> {
        let bodies = json_objects(&o.dummy).map_err(|r| ("Dummy", r))?;
        json_objects(&o.metadata).map_err(|r| ("Metadata", r))?;
        if o.copies < 1 {
            return Err(("Copies", format!("must be at least 1, got {}", o.copies)));
        }
        let (isec, insec) = if o.interval_sec < 0 || o.interval_nsec < 0 {
            (0, 0)
        } else {
            (o.interval_sec as u64, o.interval_nsec as u64)
        };
        let interval = if isec > 0 || insec > 0 {
            Duration::from_secs(isec) + Duration::from_nanos(insec)
        } else if o.rate > 1 {
            Duration::from_nanos(1_000_000_000 / o.rate as u64)
        } else {
            Duration::from_secs(1)
        };
        let start_time = (o.start_time_sec >= 0 || o.start_time_nsec >= 0).then(|| {
            EventTime(
                o.start_time_sec
                    .max(0)
                    .saturating_mul(1_000_000_000)
                    .saturating_add(o.start_time_nsec.max(0)),
            )
        });
        Ok(DummySettings {
            bodies,
            interval: interval.max(Duration::from_nanos(1)),
            start_time,
            fixed_timestamp: o.fixed_timestamp,
            samples: (o.samples > 0).then_some(o.samples as u64),
            copies: o.copies as u64,
            flush_on_startup: o.flush_on_startup,
        })
    }
}

fn build(
    ctx: &BuildContext,
    section: &Section,
    entries: &[&Entry],
) -> Result<Box<dyn Input>, ConfigError> {
    let opts = DummyOptions::from_entries(&section.span, entries, &[])?;
    ctx.not_applied(NOT_APPLIED, entries);
    let settings = DummySettings::from_options(&opts)
        .map_err(|(key, reason)| key_error(section, entries, key, reason))?;
    Ok(Box::new(DummyInput {
        settings: Arc::new(settings),
    }))
}

/// Generates records.
pub struct DummyInput {
    settings: Arc<DummySettings>,
}

impl DummyInput {
    /// An input with these settings.
    pub fn new(settings: DummySettings) -> Self {
        DummyInput {
            settings: Arc::new(settings),
        }
    }
}

#[async_trait]
impl Input for DummyInput {
    async fn run(self: Box<Self>, ctx: InputContext) -> Result<InputExit, PluginError> {
        let mut sink = EmitterSink {
            emitter: ctx.emitter,
            tag: ctx.tag,
        };
        generate(&self.settings, &mut sink, &ctx.shutdown).await
    }
}

/// The timer's resolution: events due within it are generated together.
const TIMER_RESOLUTION: Duration = Duration::from_millis(1);

/// Runs the generator until `Samples` is reached (`Finished`) or `shutdown` fires.
pub async fn generate<S: RecordSink>(
    s: &DummySettings,
    sink: &mut S,
    shutdown: &CancellationToken,
) -> Result<InputExit, PluginError> {
    let period = s.interval;
    let period_ns = period.as_nanos().max(1);
    let per_wake = (TIMER_RESOLUTION.as_nanos() / period_ns).max(1) as u64;
    let base = EventTime::now();
    let started = Instant::now();
    let mut next = if s.flush_on_startup {
        started
    } else {
        started + period
    };
    let mut done: u64 = 0;
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Ok(InputExit::Finished),
            _ = tokio::time::sleep_until(next) => {}
        }
        let late = Instant::now().saturating_duration_since(next).as_nanos();
        let elapsed_ticks = 1 + (late / period_ns).min(u128::from(u32::MAX - 1)) as u32;
        next += period.saturating_mul(elapsed_ticks);
        let mut events = u64::from(elapsed_ticks).min(per_wake);
        if let Some(limit) = s.samples {
            events = events.min(limit - done);
        }
        let time = timestamp(s, base);
        let per_event = s.bodies.len() * s.copies as usize;
        let mut records = Vec::with_capacity(per_event * events as usize);
        for _ in 0..events * s.copies {
            records.extend(s.bodies.iter().map(|b| Record::new(time, b.clone())));
        }
        let bytes = records.iter().map(Record::approx_size).sum();
        sink.emit(records, bytes).await?;
        done += events;
        if s.samples.is_some_and(|limit| done >= limit) {
            return Ok(InputExit::Finished);
        }
    }
}

/// The timestamp of an event generated now.
fn timestamp(s: &DummySettings, base: EventTime) -> EventTime {
    match (s.fixed_timestamp, s.start_time) {
        (true, Some(start)) => start,
        (true, None) => base,
        (false, Some(start)) => EventTime(start.0 + (EventTime::now().0 - base.0)),
        (false, None) => EventTime::now(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::CollectSink;

    fn opts() -> DummyOptions {
        DummyOptions::defaults().unwrap()
    }

    fn settings(o: &DummyOptions) -> DummySettings {
        DummySettings::from_options(o).unwrap()
    }

    #[test]
    fn defaults_are_fluent_bits() {
        let s = settings(&opts());
        assert_eq!(s.interval, Duration::from_secs(1));
        assert_eq!(s.samples, None);
        assert_eq!(s.copies, 1);
        assert_eq!(s.start_time, None);
        assert_eq!(s.bodies.len(), 1);
        assert_eq!(s.bodies[0].get("message"), Some(&Value::from("dummy")));
    }

    #[test]
    fn interval_rules() {
        let mut o = opts();
        o.rate = 4;
        assert_eq!(settings(&o).interval, Duration::from_millis(250));
        o.interval_nsec = 5_000;
        assert_eq!(settings(&o).interval, Duration::from_micros(5));
        o.interval_sec = -1;
        assert_eq!(settings(&o).interval, Duration::from_millis(250));
        o.rate = 0;
        assert_eq!(settings(&o).interval, Duration::from_secs(1));
    }

    #[test]
    fn bad_values_name_the_key() {
        let mut o = opts();
        o.dummy = r#"{"message": "#.into();
        let (key, reason) = DummySettings::from_options(&o).unwrap_err();
        assert_eq!(key, "Dummy");
        assert!(reason.starts_with("invalid JSON"), "{reason}");
        o.dummy = "[1, 2]".into();
        assert_eq!(DummySettings::from_options(&o).unwrap_err().0, "Dummy");
        let mut o = opts();
        o.metadata = "nope".into();
        assert_eq!(DummySettings::from_options(&o).unwrap_err().0, "Metadata");
        let mut o = opts();
        o.copies = 0;
        assert_eq!(DummySettings::from_options(&o).unwrap_err().0, "Copies");
    }

    #[tokio::test(start_paused = true)]
    async fn samples_copies_and_fixed_time() {
        let mut o = opts();
        o.dummy = r#"{"a":1} {"b":2}"#.into();
        o.samples = 3;
        o.copies = 2;
        o.fixed_timestamp = true;
        o.start_time_sec = 1_700_000_000;
        o.start_time_nsec = 5;
        let s = settings(&o);
        let mut sink = CollectSink::default();
        let exit = tokio::time::timeout(
            Duration::from_secs(10),
            generate(&s, &mut sink, &CancellationToken::new()),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(exit, InputExit::Finished);
        assert_eq!(sink.batches.len(), 3);
        let recs: Vec<&Record> = sink.records().collect();
        assert_eq!(recs.len(), 12);
        assert!(recs
            .iter()
            .all(|r| r.time == EventTime::from_parts(1_700_000_000, 5)));
        assert_eq!(recs[0].body.get("a"), Some(&Value::Int(1)));
        assert_eq!(recs[1].body.get("b"), Some(&Value::Int(2)));
    }

    #[tokio::test(start_paused = true)]
    async fn first_event_waits_one_interval_unless_flush_on_startup() {
        let mut o = opts();
        o.samples = 1;
        o.interval_sec = 5;
        let s = settings(&o);
        let start = Instant::now();
        let mut sink = CollectSink::default();
        generate(&s, &mut sink, &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        o.flush_on_startup = true;
        let s = settings(&o);
        let start = Instant::now();
        generate(&s, &mut sink, &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn high_rates_are_kept_by_batching_within_the_timer_resolution() {
        let mut o = opts();
        o.rate = 10_000;
        o.samples = 1_000;
        let s = settings(&o);
        let start = Instant::now();
        let mut sink = CollectSink::default();
        generate(&s, &mut sink, &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(sink.records().count(), 1_000);
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(99) && took <= Duration::from_millis(102),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_stops_promptly() {
        let s = settings(&opts());
        let stop = CancellationToken::new();
        let canceller = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(3_500)).await;
            canceller.cancel();
        });
        let mut sink = CollectSink::default();
        let exit = tokio::time::timeout(Duration::from_secs(10), generate(&s, &mut sink, &stop))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(exit, InputExit::Finished);
        assert_eq!(sink.records().count(), 3);
    }
}
