//! Buffers on disk: Fluent Bit's filesystem storage (`storage.path`, `storage.type
//! filesystem`) and its dead-letter store (`storage.keep.rejected`).
//!
//! Layout, as Fluent Bit's: one directory (a "stream") per input instance under
//! `storage.path`, named after it (`tail.0`), holding one [`chunk_file`] per chunk, named
//! `<pid>-<seconds>.<nanoseconds>.flb`; the dead-letter store is the stream
//! `storage.rejected.path` (default `rejected`). A file is written whole under a dot-name and
//! renamed into place, so a crash leaves either the whole chunk or nothing (Fluent Bit skips
//! dot-names too); with `storage.sync full` the file and its directory are fsynced before the
//! rename is trusted. Files that cannot be read are moved to the stream's `.corrupt/`
//! directory (or deleted with `storage.delete_irrecoverable_chunks`), never fatal.

pub mod chunk_file;
pub mod dead_letters;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use logferry_core::{Delivery, Record, Tag};

use crate::metrics::PluginMetrics;

/// `storage.sync`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMode {
    /// Written to the page cache: survives a crash of the agent (`kill -9`), not of the host.
    Normal,
    /// fsynced before a chunk counts as stored: survives a power loss.
    Full,
}

impl SyncMode {
    /// Fluent Bit's spellings.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "normal" => Ok(SyncMode::Normal),
            "full" => Ok(SyncMode::Full),
            other => Err(format!("expected 'normal' or 'full', got '{other}'")),
        }
    }
}

/// The `[SERVICE]` storage settings the store needs.
#[derive(Clone, Debug)]
pub struct StorageSettings {
    pub path: PathBuf,
    pub sync: SyncMode,
    pub checksum: bool,
    pub delete_irrecoverable: bool,
    /// The dead-letter store, when `storage.keep.rejected` is on: its directory name under
    /// `path` and its size limit.
    pub rejected: Option<(String, Option<u64>)>,
}

/// Chunk counts of the storage layer (Fluent Bit's `fluentbit_storage_*` gauges).
#[derive(Debug, Default)]
pub struct StorageGauges {
    /// Chunk files on disk, not yet delivered everywhere.
    pub fs_chunks: AtomicU64,
    /// Of those, the ones whose records are in memory now.
    pub fs_chunks_up: AtomicU64,
    /// Chunks of memory inputs emitted and not yet settled.
    pub mem_chunks: AtomicU64,
}

/// Per input, its chunks (Fluent Bit's `fluentbit_input_storage_*` gauges).
#[derive(Debug, Clone)]
pub struct InputGauges {
    pub chunks: Arc<AtomicU64>,
    pub up: Arc<AtomicU64>,
    pub down: Arc<AtomicU64>,
    pub busy: Arc<AtomicU64>,
    pub busy_bytes: Arc<AtomicU64>,
}

impl InputGauges {
    /// Gauges kept but not served (without `storage.metrics`).
    pub fn unregistered() -> Self {
        InputGauges {
            chunks: Arc::default(),
            up: Arc::default(),
            down: Arc::default(),
            busy: Arc::default(),
            busy_bytes: Arc::default(),
        }
    }

    /// Registers the gauges on an input's metrics.
    pub fn register(m: &PluginMetrics) -> Self {
        InputGauges {
            chunks: m.register_gauge("fluentbit_input_storage_chunks", "Total number of chunks."),
            up: m.register_gauge(
                "fluentbit_input_storage_chunks_up",
                "Total number of chunks up in memory.",
            ),
            down: m.register_gauge(
                "fluentbit_input_storage_chunks_down",
                "Total number of chunks down.",
            ),
            busy: m.register_gauge(
                "fluentbit_input_storage_chunks_busy",
                "Total number of chunks in a busy state.",
            ),
            busy_bytes: m.register_gauge(
                "fluentbit_input_storage_chunks_busy_bytes",
                "Total number of bytes used by chunks in a busy state.",
            ),
        }
    }
}

/// Saturating decrement of a gauge.
pub(crate) fn dec(g: &AtomicU64, n: u64) {
    let _ = g.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
        Some(v.saturating_sub(n))
    });
}

/// The filesystem store of one pipeline.
#[derive(Debug)]
pub struct Storage {
    settings: StorageSettings,
    pub gauges: Arc<StorageGauges>,
    /// Chunk files set aside because they could not be read.
    pub corrupt: AtomicU64,
}

impl Storage {
    /// Opens (creating) `storage.path`.
    pub fn open(settings: StorageSettings) -> std::io::Result<Arc<Storage>> {
        std::fs::create_dir_all(&settings.path)?;
        Ok(Arc::new(Storage {
            settings,
            gauges: Arc::default(),
            corrupt: AtomicU64::new(0),
        }))
    }

    /// The settings it was opened with.
    pub fn settings(&self) -> &StorageSettings {
        &self.settings
    }

    /// The stream (directory) of input `name`.
    pub fn stream(
        self: &Arc<Self>,
        name: &str,
        gauges: InputGauges,
    ) -> std::io::Result<Arc<Stream>> {
        let dir = self.settings.path.join(sanitize(name));
        std::fs::create_dir_all(&dir)?;
        Ok(Arc::new(Stream {
            storage: Arc::clone(self),
            dir,
            name: name.to_string(),
            gauges,
            last_ns: AtomicI64::new(0),
        }))
    }

    /// The dead-letter store's directory name, if it is on.
    fn rejected_dir(&self) -> Option<&str> {
        self.settings.rejected.as_ref().map(|(d, _)| d.as_str())
    }

    /// Chunk files left by an earlier run (of logferry or Fluent Bit), oldest first, each
    /// with the stream it is in. Incomplete writes (dot-files) are removed: they were never
    /// acknowledged. Files whose header cannot be read are set aside.
    pub fn backlog(self: &Arc<Self>) -> Vec<(String, Arc<StoredChunk>)> {
        let mut found = Vec::new();
        let Ok(dirs) = std::fs::read_dir(&self.settings.path) else {
            return Vec::new();
        };
        for d in dirs.flatten() {
            let Ok(name) = d.file_name().into_string() else {
                continue;
            };
            if name.starts_with('.')
                || Some(name.as_str()) == self.rejected_dir()
                || !d.file_type().is_ok_and(|t| t.is_dir())
            {
                continue;
            }
            let Ok(files) = std::fs::read_dir(d.path()) else {
                continue;
            };
            for f in files.flatten() {
                let path = f.path();
                let Ok(fname) = f.file_name().into_string() else {
                    continue;
                };
                if !f.file_type().is_ok_and(|t| t.is_file()) {
                    continue;
                }
                if fname.starts_with('.') {
                    if fname.ends_with(TMP_SUFFIX) {
                        let _ = std::fs::remove_file(&path);
                    }
                    continue;
                }
                match read_header(&path) {
                    Ok((tag, bytes)) => {
                        let order = name_order(&fname).unwrap_or_else(|| mtime_order(&path));
                        found.push((order, name.clone(), path, tag, bytes));
                    }
                    Err(e) => self.set_aside(&path, &e.to_string()),
                }
            }
        }
        found.sort_by_key(|(order, ..)| *order);
        found
            .into_iter()
            .map(|(_, stream, path, tag, bytes)| {
                let stored = StoredChunk::new(self, path, Arc::from(tag), bytes, None);
                (stream, stored)
            })
            .collect()
    }

    /// Moves an unreadable chunk file out of the way (or deletes it with
    /// `storage.delete_irrecoverable_chunks`), with a log line; never fails.
    pub fn set_aside(&self, path: &Path, reason: &str) {
        self.corrupt.fetch_add(1, Ordering::Relaxed);
        if self.settings.delete_irrecoverable {
            tracing::error!(file = %path.display(), %reason, "chunk file cannot be read; deleted (storage.delete_irrecoverable_chunks)");
            let _ = std::fs::remove_file(path);
            return;
        }
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return;
        };
        let aside = dir.join(CORRUPT_DIR);
        let to = aside.join(name);
        match std::fs::create_dir_all(&aside).and_then(|()| std::fs::rename(path, &to)) {
            Ok(()) => {
                tracing::error!(file = %path.display(), moved_to = %to.display(), %reason, "chunk file cannot be read; set aside")
            }
            Err(e) => {
                tracing::error!(file = %path.display(), %reason, error = %e, "chunk file cannot be read and cannot be moved aside")
            }
        }
    }

    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        if self.settings.sync == SyncMode::Full {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

/// Where unreadable chunk files go, inside their stream (a dot-name: neither Fluent Bit nor
/// logferry loads it).
pub const CORRUPT_DIR: &str = ".corrupt";
const TMP_SUFFIX: &str = ".tmp";

/// A stream name as a directory name (instance names are `plugin.N` or an `Alias`).
fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| match c {
            '/' | '\\' | '\0' => '_',
            c => c,
        })
        .collect();
    match s.as_str() {
        "" | "." | ".." => format!("_{s}"),
        _ => s,
    }
}

/// The time in a chunk name `<pid>-<secs>.<nanos>.flb`, for ordering.
fn name_order(name: &str) -> Option<(i64, i64)> {
    let stem = name.strip_suffix(".flb")?;
    let stamp = stem.split_once('-').map_or(stem, |(_, t)| t);
    let (s, ns) = stamp.split_once('.')?;
    Some((s.trim().parse().ok()?, ns.trim().parse().ok()?))
}

fn mtime_order(path: &Path) -> (i64, i64) {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or((0, 0), |d| {
            (d.as_secs() as i64, i64::from(d.subsec_nanos()))
        })
}

/// The tag and size of a chunk file, reading only its header.
fn read_header(path: &Path) -> Result<(String, u64), LoadError> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let mut head = vec![0u8; chunk_file::HEADER];
    f.read_exact(&mut head)
        .map_err(|_| chunk_file::ChunkFileError::Truncated(len as usize))?;
    let meta = usize::from(u16::from_be_bytes([head[22], head[23]]));
    head.resize(chunk_file::HEADER + meta, 0);
    f.read_exact(&mut head[chunk_file::HEADER..])
        .map_err(|_| chunk_file::ChunkFileError::Truncated(len as usize))?;
    let h = chunk_file::header(&head, len as usize)?;
    Ok((h.tag, len))
}

/// Why a stored chunk could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Format(#[from] chunk_file::ChunkFileError),
}

/// One input's directory.
#[derive(Debug)]
pub struct Stream {
    storage: Arc<Storage>,
    dir: PathBuf,
    name: String,
    pub gauges: InputGauges,
    /// The time part of the last chunk name, so names stay unique and ordered.
    last_ns: AtomicI64,
}

impl Stream {
    /// The input instance this stream belongs to.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The store it is in.
    pub fn storage(&self) -> &Arc<Storage> {
        &self.storage
    }

    /// Writes `records` under `tag` as a new chunk file, whole or not at all (see the module
    /// docs); with `storage.sync full` it is on stable storage when this returns.
    pub fn write(&self, tag: &Tag, records: &[Record]) -> std::io::Result<Arc<StoredChunk>> {
        let n = records.len() as u64;
        let stored = self.write_bytes(tag, self.encode(tag, records))?;
        stored.set_records(n);
        Ok(stored)
    }

    /// The chunk file bytes of `records` (the CPU part of [`Stream::write`]).
    pub fn encode(&self, tag: &Tag, records: &[Record]) -> Vec<u8> {
        chunk_file::encode(tag, records, self.storage.settings.checksum)
    }

    /// Writes bytes from [`Stream::encode`] as a new chunk file (the I/O part of
    /// [`Stream::write`]).
    pub fn write_bytes(&self, tag: &Tag, bytes: Vec<u8>) -> std::io::Result<Arc<StoredChunk>> {
        let settings = &self.storage.settings;
        let now = logferry_core::EventTime::now().0;
        let ns = self
            .last_ns
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| {
                Some(now.max(last + 1))
            })
            .map_or(now, |last| now.max(last + 1));
        let name = format!(
            "{}-{}.{:09}.flb",
            std::process::id(),
            ns.div_euclid(1_000_000_000),
            ns.rem_euclid(1_000_000_000)
        );
        let tmp = self.dir.join(format!(".{name}{TMP_SUFFIX}"));
        let path = self.dir.join(&name);
        let written = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            if settings.sync == SyncMode::Full {
                f.sync_all()?;
            }
            drop(f);
            std::fs::rename(&tmp, &path)?;
            self.storage.sync_dir(&self.dir)
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        Ok(StoredChunk::new(
            &self.storage,
            path,
            Arc::clone(tag),
            bytes.len() as u64,
            Some(self.gauges.clone()),
        ))
    }
}

/// A chunk file, shared by the outputs that still owe it an outcome. Its [`Delivery`]
/// settles when all of them are done: delivered or given up, the file is removed; abandoned
/// (shutdown before delivery), it stays for the next start.
#[derive(Debug)]
pub struct StoredChunk {
    pub path: PathBuf,
    pub tag: Tag,
    /// Size on disk.
    pub bytes: u64,
    /// One share per output (see [`Delivery`]), plus the share of whoever routes it, which
    /// is settled once every output's share is registered; settling them all removes the file.
    pub delivery: Arc<Delivery>,
    corrupt: Arc<AtomicBool>,
    storage: Arc<Storage>,
    /// Records in it, once known (written now, or loaded).
    records: AtomicU64,
    gauges: Option<InputGauges>,
}

impl StoredChunk {
    fn new(
        storage: &Arc<Storage>,
        path: PathBuf,
        tag: Tag,
        bytes: u64,
        gauges: Option<InputGauges>,
    ) -> Arc<Self> {
        let delivery = Delivery::new();
        let corrupt = Arc::new(AtomicBool::new(false));
        {
            let storage = Arc::clone(storage);
            let path = path.clone();
            let corrupt = Arc::clone(&corrupt);
            let gauges = gauges.clone();
            delivery.on_done(Box::new(move |status| {
                dec(&storage.gauges.fs_chunks, 1);
                if let Some(g) = &gauges {
                    dec(&g.chunks, 1);
                    dec(&g.down, 1);
                }
                if corrupt.load(Ordering::Acquire) {
                    storage.set_aside(&path, "records could not be read");
                } else if status.is_final() {
                    if let Err(e) = std::fs::remove_file(&path) {
                        tracing::warn!(file = %path.display(), error = %e, "cannot remove a delivered chunk file");
                    }
                }
            }));
        }
        storage.gauges.fs_chunks.fetch_add(1, Ordering::Relaxed);
        if let Some(g) = &gauges {
            g.chunks.fetch_add(1, Ordering::Relaxed);
            g.down.fetch_add(1, Ordering::Relaxed);
        }
        Arc::new(StoredChunk {
            path,
            tag,
            bytes,
            delivery,
            corrupt,
            storage: Arc::clone(storage),
            records: AtomicU64::new(0),
            gauges,
        })
    }

    /// Reads the records back. A file that cannot be read is marked to be set aside once
    /// every output is done with it.
    pub fn load(&self) -> Result<Vec<Record>, LoadError> {
        let read = std::fs::read(&self.path)
            .map_err(LoadError::from)
            .and_then(|b| Ok(chunk_file::decode(&b, self.storage.settings.checksum)?));
        match read {
            Ok((_, records)) => {
                self.records.store(records.len() as u64, Ordering::Relaxed);
                Ok(records)
            }
            Err(e) => {
                self.corrupt.store(true, Ordering::Release);
                Err(e)
            }
        }
    }

    /// Records in the file, when known (0 when it was never read).
    pub fn records(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }

    /// Notes how many records the file holds.
    pub fn set_records(&self, n: u64) {
        self.records.store(n, Ordering::Relaxed);
    }

    /// The input's gauges, for chunks written in this run.
    pub fn gauges(&self) -> Option<&InputGauges> {
        self.gauges.as_ref()
    }

    /// The store it is in.
    pub fn storage(&self) -> &Arc<Storage> {
        &self.storage
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use logferry_core::{DeliveryStatus, EventTime, Map};

    fn settings(dir: &Path) -> StorageSettings {
        StorageSettings {
            path: dir.to_path_buf(),
            sync: SyncMode::Full,
            checksum: true,
            delete_irrecoverable: false,
            rejected: None,
        }
    }

    fn recs(n: usize) -> Vec<Record> {
        (0..n)
            .map(|i| {
                let mut m = Map::new();
                m.insert("log", format!("line {i}"));
                Record::new(EventTime::from_parts(1_700_000_000, i as u32), m)
            })
            .collect()
    }

    fn gauges() -> InputGauges {
        InputGauges::register(&PluginMetrics::new("tail.0"))
    }

    #[test]
    fn written_chunks_are_the_backlog_of_the_next_start_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(settings(dir.path())).unwrap();
        let s = storage.stream("tail.0", gauges()).unwrap();
        let a = s.write(&Tag::from("kube.a"), &recs(3)).unwrap();
        let b = s.write(&Tag::from("kube.b"), &recs(2)).unwrap();
        assert!(a.path.file_name().unwrap() < b.path.file_name().unwrap() || a.path != b.path);
        // The agent "crashes": nothing settled, nothing removed.
        a.delivery.mark(DeliveryStatus::Abandoned);
        drop(a);
        drop(b);
        let again = Storage::open(settings(dir.path())).unwrap();
        let backlog = again.backlog();
        let tags: Vec<(&str, &str)> = backlog
            .iter()
            .map(|(st, c)| (st.as_str(), &*c.tag))
            .collect();
        assert_eq!(tags, [("tail.0", "kube.a"), ("tail.0", "kube.b")]);
        assert_eq!(backlog[0].1.load().unwrap(), recs(3));
        assert_eq!(backlog[1].1.load().unwrap(), recs(2));
    }

    #[test]
    fn a_delivered_chunk_is_removed_an_abandoned_one_kept() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(settings(dir.path())).unwrap();
        let s = storage.stream("tail.0", gauges()).unwrap();
        let kept = s.write(&Tag::from("t"), &recs(1)).unwrap();
        let gone = s.write(&Tag::from("t"), &recs(1)).unwrap();
        let (kept_path, gone_path) = (kept.path.clone(), gone.path.clone());
        assert_eq!(storage.gauges.fs_chunks.load(Ordering::Relaxed), 2);
        gone.delivery.mark(DeliveryStatus::Delivered);
        drop(gone);
        drop(kept); // never settled: abandoned
        assert!(!gone_path.exists());
        assert!(kept_path.exists());
        assert_eq!(storage.gauges.fs_chunks.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn with_delete_irrecoverable_chunks_unreadable_files_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let stream = dir.path().join("tail.0");
        std::fs::create_dir_all(&stream).unwrap();
        let bad = stream.join("1-1.000000001.flb");
        std::fs::write(&bad, b"garbage").unwrap();
        let storage = Storage::open(StorageSettings {
            delete_irrecoverable: true,
            ..settings(dir.path())
        })
        .unwrap();
        assert!(storage.backlog().is_empty());
        assert!(!bad.exists());
        assert!(!stream.join(CORRUPT_DIR).exists());
        assert_eq!(storage.corrupt.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn unreadable_files_are_set_aside_and_leftover_temp_files_removed() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(settings(dir.path())).unwrap();
        let s = storage.stream("tail.0", gauges()).unwrap();
        let ok = s.write(&Tag::from("t"), &recs(2)).unwrap();
        ok.delivery.mark(DeliveryStatus::Abandoned);
        let bad = dir.path().join("tail.0").join("1-1.000000001.flb");
        std::fs::write(&bad, b"garbage").unwrap();
        let tmp = dir.path().join("tail.0").join(".1-2.000000000.flb.tmp");
        std::fs::write(&tmp, b"half").unwrap();
        // A flipped byte in an otherwise good file shows up when it is loaded.
        let flipped = dir.path().join("tail.0").join("1-3.000000000.flb");
        let mut bytes = std::fs::read(&ok.path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&flipped, bytes).unwrap();
        drop(ok);
        let again = Storage::open(settings(dir.path())).unwrap();
        let backlog = again.backlog();
        assert!(!tmp.exists());
        assert!(!bad.exists());
        assert!(dir
            .path()
            .join("tail.0/.corrupt/1-1.000000001.flb")
            .exists());
        assert_eq!(backlog.len(), 2);
        let f = backlog
            .iter()
            .find(|(_, c)| c.path == flipped)
            .map(|(_, c)| Arc::clone(c))
            .unwrap();
        assert!(f.load().is_err());
        f.delivery.mark(DeliveryStatus::Rejected);
        drop(backlog);
        drop(f);
        assert!(dir
            .path()
            .join("tail.0/.corrupt/1-3.000000000.flb")
            .exists());
        assert_eq!(again.corrupt.load(Ordering::Relaxed), 2);
    }
}
