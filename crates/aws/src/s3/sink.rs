//! The `s3` output: flushes append to the store; a timer task and full files trigger uploads.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use logferry_core::packed::{Cursor, UnpackError};
use logferry_core::{EventTime, Record};
use logferry_engine::metrics::PluginMetrics;
use logferry_engine::plugin::{BatchRecords, Part, ReadRecords};
use logferry_engine::{Batch, FlushResult, Output, PluginError};

use super::config::{DateFormat, S3Settings};
use super::service::{S3Service, Source};
use super::store::{BufFile, Store};
use crate::plain_json::{float, str, PlainJson};

struct Inner {
    settings: Arc<S3Settings>,
    store: Mutex<Store>,
    service: S3Service,
    metrics: Arc<PluginMetrics>,
    name: String,
    upload_lock: tokio::sync::Mutex<()>,
    uploaded: AtomicU64,
    buffers: Mutex<Vec<Buffers>>,
}

/// Sends records to S3 through files in `store_dir`.
pub struct S3Output {
    inner: Arc<Inner>,
    ticker: AtomicBool,
}

fn lock(m: &Mutex<Store>) -> std::sync::MutexGuard<'_, Store> {
    lock_any(m)
}

fn lock_any<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Writes the `json_date_key` value for `t` as JSON into `out` (replacing what it held):
/// a string for the ISO 8601 and java.sql formats, a number for the others.
fn date_json(out: &mut Vec<u8>, text: &mut String, t: EventTime, f: DateFormat) {
    use std::fmt::Write as _;
    out.clear();
    let dt: DateTime<Utc> = DateTime::from_timestamp_nanos(t.0);
    let pattern = match f {
        DateFormat::Iso8601 => "%Y-%m-%dT%H:%M:%S%.6fZ",
        DateFormat::JavaSqlTimestamp => "%Y-%m-%d %H:%M:%S%.6f",
        DateFormat::Double => return float(out, t.as_f64()),
        DateFormat::Epoch => {
            return out.extend_from_slice(itoa::Buffer::new().format(t.secs()).as_bytes())
        }
        DateFormat::EpochMs => {
            return out.extend_from_slice(itoa::Buffer::new().format(t.as_millis()).as_bytes())
        }
    };
    text.clear();
    let _ = write!(text, "{}", dt.format(pattern));
    str(out, text);
}

/// A flush's buffers, kept for the next flush: the JSON lines, the JSON writer (its shared
/// map cache is cleared per flush), the date value.
#[derive(Default)]
struct Buffers {
    lines: Vec<u8>,
    json: PlainJson,
    date: Vec<u8>,
    date_text: String,
}

/// Buffers kept between flushes (one per concurrent flush is enough).
const BUFFERS_KEPT: usize = 4;
/// A lines buffer larger than this is let go rather than kept.
const LINES_KEPT_MAX: usize = 16 << 20;

impl S3Output {
    /// An output for `settings`; opens `store_dir/<bucket>` and finds files left by a previous
    /// run (uploaded by the timer task, which starts here when a runtime is running, else when
    /// the pipeline starts ([`Output::start`]) or on the first flush).
    pub fn new(
        settings: S3Settings,
        metrics: Arc<PluginMetrics>,
        name: String,
    ) -> std::io::Result<Self> {
        let dir = settings.store_dir.join(&settings.bucket);
        let store = Store::open(&dir)?;
        let left = store.files();
        if left > 0 {
            tracing::info!(output = %name, files = left, dir = %dir.display(), "buffered files from a previous run will be uploaded");
        }
        let out = Self::with_store(settings, metrics, name, store);
        out.ensure_ticker();
        Ok(out)
    }

    /// The output as configured, for a configuration check (`--dry-run`): `store_dir` is not
    /// opened, so nothing in it is created, sealed, cut or removed (an agent running on the
    /// same directory may be writing to it), and no upload starts.
    pub fn unopened(settings: S3Settings, metrics: Arc<PluginMetrics>, name: String) -> Self {
        let dir = settings.store_dir.join(&settings.bucket);
        Self::with_store(settings, metrics, name, Store::unopened(&dir))
    }

    fn with_store(
        settings: S3Settings,
        metrics: Arc<PluginMetrics>,
        name: String,
        store: Store,
    ) -> Self {
        let settings = Arc::new(settings);
        S3Output {
            inner: Arc::new(Inner {
                service: S3Service::new(Arc::clone(&settings)),
                settings,
                store: Mutex::new(store),
                metrics,
                name,
                upload_lock: tokio::sync::Mutex::new(()),
                uploaded: AtomicU64::new(0),
                buffers: Mutex::new(Vec::new()),
            }),
            ticker: AtomicBool::new(false),
        }
    }

    /// Objects uploaded since start.
    pub fn uploaded(&self) -> u64 {
        self.inner.uploaded.load(Ordering::Relaxed)
    }

    /// Files waiting in the store.
    pub fn buffered_files(&self) -> usize {
        lock(&self.inner.store).files()
    }

    /// The most bytes of one buffer file held in memory at once by uploads so far (about one
    /// `upload_chunk_size` part, whatever the file's size).
    pub fn largest_upload_buffer(&self) -> u64 {
        self.inner.service.largest_buffer()
    }

    /// Uploads what is due now (everything with `force`); returns how many objects were
    /// uploaded, or the reasons of the failures (the files stay for a later attempt).
    pub async fn upload_due(&self, force: bool) -> Result<usize, String> {
        self.inner.upload_due(force).await
    }

    fn ensure_ticker(&self) {
        if self.ticker.load(Ordering::Acquire) {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.ticker.swap(true, Ordering::AcqRel) {
            return;
        }
        let period = (self.inner.settings.upload_timeout / 4)
            .clamp(Duration::from_millis(100), Duration::from_secs(30));
        handle.spawn(ticker(Arc::downgrade(&self.inner), period));
    }

    /// The records as JSON lines into `buf.lines` (each record written once, straight into
    /// it, the date key put in front without copying the record; packed chunks read straight
    /// from their bytes unless a `log_key` is looked up): (records written, the numbers in
    /// the batch of the records that gave no line).
    fn encode(&self, buf: &mut Buffers, view: &BatchRecords<'_>) -> (u64, Vec<usize>) {
        let s = &self.inner.settings;
        buf.lines.clear();
        buf.json.clear();
        let mut lines = Lines {
            s,
            buf,
            n: 0,
            skipped: Vec::new(),
        };
        view.read(s.log_key.is_none(), &mut lines);
        (lines.n, lines.skipped)
    }
}

/// Records written as JSON lines ([`S3Output::encode`]).
struct Lines<'a> {
    s: &'a S3Settings,
    buf: &'a mut Buffers,
    /// Lines written.
    n: u64,
    /// The numbers in the batch of records that gave no line.
    skipped: Vec<usize>,
}

impl ReadRecords for Lines<'_> {
    fn start_packed(&mut self) {
        self.buf.json.start_packed();
    }

    fn packed(
        &mut self,
        _: usize,
        time: EventTime,
        keys: usize,
        c: &mut Cursor<'_>,
        _: (&Part<'_>, usize),
    ) -> Result<(), UnpackError> {
        let Buffers {
            lines: out,
            json,
            date,
            date_text,
        } = &mut *self.buf;
        let front = match &self.s.date_key {
            Some(dk) if !c.keys(keys).contains(&dk.as_str()) => {
                date_json(date, date_text, time, self.s.date_format);
                Some((dk.as_str(), date.as_slice()))
            }
            _ => None,
        };
        let start = out.len();
        if let Err(e) = json.packed_map_edited(c, out, keys, front.as_slice(), None, 0) {
            out.truncate(start);
            return Err(e);
        }
        out.push(b'\n');
        self.n += 1;
        Ok(())
    }

    fn record(&mut self, i: usize, r: &Record) {
        let Buffers {
            lines: out,
            json,
            date,
            date_text,
        } = &mut *self.buf;
        let start = out.len();
        let res = match (&self.s.log_key, &self.s.date_key) {
            (Some(key), _) => json.message(out, &r.body, Some(key)).map_err(|_| ()),
            (None, Some(dk)) if !r.body.contains_key(dk) => {
                date_json(date, date_text, r.time, self.s.date_format);
                json.map_edited(out, &r.body, &[(dk.as_str(), date.as_slice())], None);
                Ok(())
            }
            (None, _) => {
                json.map(out, &r.body);
                Ok(())
            }
        };
        match res {
            Ok(()) => {
                out.push(b'\n');
                self.n += 1;
            }
            Err(()) => {
                out.truncate(start);
                self.skipped.push(i);
            }
        }
    }

    fn lost(&mut self, i: usize) {
        self.skipped.push(i);
    }
}

async fn ticker(inner: Weak<Inner>, period: Duration) {
    let mut every = tokio::time::interval(period);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let _ = inner.upload_due(false).await;
    }
}

impl Inner {
    /// Keeps a flush's buffers for the next one, unless an unusually large flush made them big.
    fn keep(&self, buf: Buffers) {
        let mut pool = lock_any(&self.buffers);
        if pool.len() < BUFFERS_KEPT && buf.lines.capacity() <= LINES_KEPT_MAX {
            pool.push(buf);
        }
    }

    /// Appends to the tag's buffer file and fsyncs it; whether an open file is now full.
    fn append(&self, tag: &str, data: &[u8], records: u64) -> Result<bool, String> {
        let s = &self.settings;
        let mut store = lock(&self.store);
        let limit = s.store_dir_limit_size;
        if limit > 0 && store.size() + data.len() as u64 > limit {
            return Err(format!(
                "store_dir_limit_size ({limit} bytes) reached; waiting for uploads to free space"
            ));
        }
        store
            .append(tag, data, records)
            .map_err(|e| format!("writing to store_dir {}: {e}", store.dir().display()))?;
        Ok(store.any_full(s.total_file_size))
    }

    async fn upload_due(&self, force: bool) -> Result<usize, String> {
        let _one_at_a_time = self.upload_lock.lock().await;
        let s = &self.settings;
        let due = lock(&self.store).take_due(s.total_file_size, s.upload_timeout, force);
        let mut done = 0;
        let mut errors = Vec::new();
        for f in due {
            match self.upload(&f).await {
                Ok(key) => {
                    done += 1;
                    self.uploaded.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(output = %self.name, bucket = %s.bucket, %key, bytes = f.size, records = f.records, "uploaded");
                    if let Err(e) = lock(&self.store).uploaded(&f) {
                        tracing::warn!(output = %self.name, path = %f.path.display(), error = %e, "could not remove an uploaded buffer file");
                    }
                }
                Err(e) => {
                    let wait = lock(&self.store).failed(f.clone());
                    tracing::warn!(output = %self.name, path = %f.path.display(), failures = f.failures + 1,
                        retry_in_secs = wait.as_secs(), error = %e, "upload failed; the file is kept and tried again");
                    errors.push(e);
                }
            }
        }
        if errors.is_empty() {
            Ok(done)
        } else {
            Err(errors.join("; "))
        }
    }

    async fn upload(&self, f: &BufFile) -> Result<String, String> {
        let s = &self.settings;
        let index = if s.key.uses_index() {
            lock(&self.store)
                .next_index()
                .map_err(|e| format!("updating the $INDEX file: {e}"))?
        } else {
            0
        };
        let key = s
            .key
            .render(&f.tag, f.started_ns.div_euclid(1_000_000_000), index);
        self.service
            .upload_file(&key, &Source::from(f))
            .await
            .map_err(|e| e.to_string())?;
        Ok(key)
    }
}

#[async_trait]
impl Output for S3Output {
    /// The upload timer starts with the pipeline, so files a previous run left are uploaded
    /// after `upload_timeout` even when no new record comes.
    async fn start(&self) {
        self.ensure_ticker();
    }

    async fn flush(&self, b: &Batch) -> FlushResult {
        self.ensure_ticker();
        let mut buf = lock_any(&self.inner.buffers).pop().unwrap_or_default();
        // Packed chunks stay packed: their records are written from the packed bytes.
        let view = b.view();
        let (n, skipped) = self.encode(&mut buf, &view);
        let full = if buf.lines.is_empty() {
            self.inner.keep(buf);
            false
        } else {
            // The append waits for fsync: off the runtime's threads.
            let inner = Arc::clone(&self.inner);
            let tag = b.tag.to_string();
            let res = tokio::task::spawn_blocking(move || {
                let res = inner.append(&tag, &buf.lines, n);
                inner.keep(buf);
                res
            })
            .await;
            match res {
                Ok(Ok(full)) => full,
                Ok(Err(reason)) => return FlushResult::Retry(reason),
                Err(e) => return FlushResult::Retry(format!("writing to store_dir: {e}")),
            }
        };
        // Only in the attempt that stored the rest, so a retried batch rejects them once.
        if !skipped.is_empty() {
            let count = skipped.len();
            b.reject(
                &self.inner.metrics,
                skipped.iter().filter_map(|&i| view.get(i)),
            );
            tracing::warn!(output = %self.inner.name, tag = %b.tag, records = count, "records without log_key dropped");
        }
        if full {
            let _ = self.inner.upload_due(false).await;
        }
        FlushResult::Ok
    }

    fn reads_packed(&self) -> bool {
        true
    }

    async fn shutdown(&self) -> Result<(), PluginError> {
        self.inner.upload_due(true).await.map(|_| ()).map_err(|e| {
            PluginError::Other(format!(
                "s3: uploads failed at shutdown, files kept in store_dir: {e}"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use logferry_core::config::{Section, SectionKind, Span};
    use logferry_core::{Chunk, Tag};
    use logferry_engine::Batch;

    use super::super::config::settings_from_entries;
    use super::super::store::Store;
    use super::{Buffers, S3Output};

    fn output(kv: &[(&str, &str)], dir: &Path) -> S3Output {
        let mut s = Section::new(SectionKind::Output, Span::command_line());
        for (k, v) in [("region", "us-east-1"), ("bucket", "b")].iter().chain(kv) {
            s.push(*k, *v, Span::command_line());
        }
        let entries: Vec<_> = s.entries.iter().collect();
        let settings = settings_from_entries(&s, &entries, dir).unwrap();
        let metrics = Arc::new(logferry_engine::metrics::PluginMetrics::default());
        S3Output::with_store(settings, metrics, "s3.0".into(), Store::open(dir).unwrap())
    }

    /// Packed chunks written straight from their bytes give the same JSON lines, byte for
    /// byte, as the same records never packed: `json_date_key` in each format (put in front,
    /// or not where the record has the key, once or twice), off, and `log_key` (which reads
    /// the records unpacked; a record without it gives no line, by number).
    #[test]
    fn packed_chunks_give_the_lines_of_their_records() {
        let dir = tempfile::tempdir().unwrap();
        let mut records = crate::test_records::varied_records(300 * 1024);
        records[7].body.0.retain(|(k, _)| k != "log");
        let tag = Tag::from("kube.a");
        let chunks = |packed: bool| -> Batch {
            let chunks = records
                .chunks(70)
                .enumerate()
                .map(|(i, part)| {
                    let mut c = Chunk::new(tag.clone(), part.to_vec());
                    if packed && i != 1 {
                        c.pack();
                    }
                    Arc::new(c)
                })
                .collect();
            Batch::new(tag.clone(), chunks)
        };
        let (packed, plain) = (chunks(true), chunks(false));
        assert!(packed
            .view()
            .parts()
            .any(|(_, p)| matches!(p, super::Part::Packed(..))));
        for kv in [
            &[][..],
            &[("json_date_format", "double")],
            &[("json_date_format", "epoch")],
            &[("json_date_format", "epoch_ms")],
            &[("json_date_format", "java_sql_timestamp")],
            &[("json_date_key", "n")],
            &[("json_date_key", "nested")],
            &[("json_date_key", "false")],
            &[("log_key", "log")],
        ] {
            let out = output(kv, dir.path());
            let mut a = Buffers::default();
            let mut b = Buffers::default();
            let got = out.encode(&mut a, &packed.view());
            let want = out.encode(&mut b, &plain.view());
            assert_eq!(got, want, "{kv:?}");
            assert_eq!(a.lines, b.lines, "{kv:?}");
            let lines = a.lines.split(|&c| c == b'\n').filter(|l| !l.is_empty());
            let skipped: &[usize] = if kv == [("log_key", "log")] {
                &[7]
            } else {
                &[]
            };
            assert_eq!(
                got,
                ((records.len() - skipped.len()) as u64, skipped.to_vec())
            );
            assert_eq!(lines.count(), records.len() - skipped.len(), "{kv:?}");
        }
    }
}
