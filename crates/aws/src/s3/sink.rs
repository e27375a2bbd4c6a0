//! The `s3` output: flushes append to the store; a timer task and full files trigger uploads.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use logferry_core::{EventTime, Map, Record, Str, Value};
use logferry_engine::metrics::PluginMetrics;
use logferry_engine::{Batch, FlushResult, Output, PluginError};

use super::config::{DateFormat, S3Settings};
use super::service::{S3Service, Source};
use super::store::{BufFile, Store};
use crate::encode::{write_json, write_message};

struct Inner {
    settings: Arc<S3Settings>,
    store: Mutex<Store>,
    service: S3Service,
    metrics: Arc<PluginMetrics>,
    name: String,
    upload_lock: tokio::sync::Mutex<()>,
    uploaded: AtomicU64,
}

/// Sends records to S3 through files in `store_dir`.
pub struct S3Output {
    inner: Arc<Inner>,
    ticker: AtomicBool,
}

fn lock(m: &Mutex<Store>) -> std::sync::MutexGuard<'_, Store> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

fn date_value(t: EventTime, f: DateFormat) -> Value {
    let dt: DateTime<Utc> = DateTime::from_timestamp_nanos(t.0);
    match f {
        DateFormat::Iso8601 => Value::from(dt.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()),
        DateFormat::JavaSqlTimestamp => Value::from(dt.format("%Y-%m-%d %H:%M:%S%.6f").to_string()),
        DateFormat::Double => Value::Float(t.as_f64()),
        DateFormat::Epoch => Value::Int(t.secs()),
        DateFormat::EpochMs => Value::Int(t.as_millis()),
    }
}

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
        let settings = Arc::new(settings);
        let out = S3Output {
            inner: Arc::new(Inner {
                service: S3Service::new(Arc::clone(&settings)),
                settings,
                store: Mutex::new(store),
                metrics,
                name,
                upload_lock: tokio::sync::Mutex::new(()),
                uploaded: AtomicU64::new(0),
            }),
            ticker: AtomicBool::new(false),
        };
        out.ensure_ticker();
        Ok(out)
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

    /// The records as JSON lines: (data, records written, records that gave no line).
    fn encode<'a>(
        &self,
        records: impl Iterator<Item = &'a Record>,
    ) -> (Vec<u8>, u64, Vec<&'a Record>) {
        let s = &self.inner.settings;
        let mut out = Vec::new();
        let mut n = 0u64;
        let mut skipped = Vec::new();
        for r in records {
            let start = out.len();
            let res = match (&s.log_key, &s.date_key) {
                (Some(k), _) => write_message(&mut out, &r.body, Some(k)).map_err(|_| ()),
                (None, Some(dk)) if !r.body.contains_key(dk) => {
                    let mut m = Map::with_capacity(r.body.len() + 1);
                    m.0.push((Str::from(dk.as_str()), date_value(r.time, s.date_format)));
                    m.0.extend(r.body.0.iter().cloned());
                    write_json(&mut out, &m).map_err(|_| ())
                }
                (None, _) => write_json(&mut out, &r.body).map_err(|_| ()),
            };
            match res {
                Ok(()) => {
                    out.push(b'\n');
                    n += 1;
                }
                Err(()) => {
                    out.truncate(start);
                    skipped.push(r);
                }
            }
        }
        (out, n, skipped)
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
        let (data, n, skipped) = self.encode(b.records());
        let full = if data.is_empty() {
            false
        } else {
            // The append waits for fsync: off the runtime's threads.
            let inner = Arc::clone(&self.inner);
            let tag = b.tag.to_string();
            match tokio::task::spawn_blocking(move || inner.append(&tag, &data, n)).await {
                Ok(Ok(full)) => full,
                Ok(Err(reason)) => return FlushResult::Retry(reason),
                Err(e) => return FlushResult::Retry(format!("writing to store_dir: {e}")),
            }
        };
        // Only in the attempt that stored the rest, so a retried batch rejects them once.
        if !skipped.is_empty() {
            let count = skipped.len();
            b.reject(&self.inner.metrics, skipped);
            tracing::warn!(output = %self.inner.name, tag = %b.tag, records = count, "records without log_key dropped");
        }
        if full {
            let _ = self.inner.upload_due(false).await;
        }
        FlushResult::Ok
    }

    async fn shutdown(&self) -> Result<(), PluginError> {
        self.inner.upload_due(true).await.map(|_| ()).map_err(|e| {
            PluginError::Other(format!(
                "s3: uploads failed at shutdown, files kept in store_dir: {e}"
            ))
        })
    }
}
