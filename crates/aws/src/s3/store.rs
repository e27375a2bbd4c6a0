//! Buffer files under `store_dir`, one open file per tag, that survive restarts.
//!
//! A file is named `<start time ns>-<tag in hex>.buf`, so its tag and start time are known
//! again after a restart without any other metadata. Files found at start (left by a previous
//! run) are sealed: they take no more records and are uploaded first. `index` holds the next
//! `$INDEX`.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Longest wait between two upload attempts of one file.
pub const MAX_RETRY_WAIT: Duration = Duration::from_secs(300);
/// First wait after a failed upload.
pub const FIRST_RETRY_WAIT: Duration = Duration::from_secs(1);

/// One buffer file.
#[derive(Clone, Debug)]
pub struct BufFile {
    pub path: PathBuf,
    pub tag: String,
    /// Start time, nanoseconds since the epoch.
    pub started_ns: i64,
    pub size: u64,
    /// Records in it (approximate for files found at start: their lines).
    pub records: u64,
    pub failures: u32,
    pub next_try: Option<Instant>,
    opened: Instant,
}

/// The buffer files of one output.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    open: HashMap<String, BufFile>,
    sealed: Vec<BufFile>,
    /// Bytes of files being uploaded (taken out of the store).
    in_flight: u64,
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

fn now_ns() -> i64 {
    logferry_core::EventTime::now().0
}

impl Store {
    /// Opens (creating) `dir` and seals the files a previous run left.
    pub fn open(dir: &Path) -> std::io::Result<Store> {
        std::fs::create_dir_all(dir)?;
        let mut sealed = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let path = entry.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let Some(stem) = name.strip_suffix(".buf") else {
                continue;
            };
            let Some((ns, tag)) = stem.split_once('-') else {
                continue;
            };
            let (Ok(started_ns), Some(tag)) = (ns.parse::<i64>(), unhex(tag)) else {
                continue;
            };
            let data = std::fs::read(&path)?;
            if data.is_empty() {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            sealed.push(BufFile {
                path,
                tag,
                started_ns,
                size: data.len() as u64,
                records: data.iter().filter(|&&b| b == b'\n').count() as u64,
                failures: 0,
                next_try: None,
                opened: Instant::now(),
            });
        }
        sealed.sort_by_key(|f| f.started_ns);
        Ok(Store {
            dir: dir.to_path_buf(),
            open: HashMap::new(),
            sealed,
            in_flight: 0,
        })
    }

    /// Bytes on disk (open, sealed and being uploaded).
    pub fn size(&self) -> u64 {
        self.open
            .values()
            .chain(&self.sealed)
            .map(|f| f.size)
            .sum::<u64>()
            + self.in_flight
    }

    /// Files waiting, open or sealed.
    pub fn files(&self) -> usize {
        self.open.len() + self.sealed.len()
    }

    /// Appends `data` (holding `records` records) to `tag`'s open file.
    pub fn append(&mut self, tag: &str, data: &[u8], records: u64) -> std::io::Result<()> {
        if !self.open.contains_key(tag) {
            let started_ns = now_ns();
            let path = self.dir.join(format!("{started_ns}-{}.buf", hex(tag)));
            self.open.insert(
                tag.to_string(),
                BufFile {
                    path,
                    tag: tag.to_string(),
                    started_ns,
                    size: 0,
                    records: 0,
                    failures: 0,
                    next_try: None,
                    opened: Instant::now(),
                },
            );
        }
        let Some(f) = self.open.get_mut(tag) else {
            return Ok(());
        };
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&f.path)?;
        file.write_all(data)?;
        file.flush()?;
        f.size += data.len() as u64;
        f.records += records;
        Ok(())
    }

    /// Whether an open file has reached `size`.
    pub fn any_full(&self, size: u64) -> bool {
        self.open.values().any(|f| f.size >= size)
    }

    /// Takes the files to upload now: sealed ones whose wait is over, and open ones that are
    /// full or older than `timeout` (all of them with `force`).
    pub fn take_due(&mut self, full: u64, timeout: Duration, force: bool) -> Vec<BufFile> {
        let now = Instant::now();
        let due_tags: Vec<String> = self
            .open
            .iter()
            .filter(|(_, f)| force || f.size >= full || now.duration_since(f.opened) >= timeout)
            .map(|(t, _)| t.clone())
            .collect();
        for t in due_tags {
            if let Some(f) = self.open.remove(&t) {
                self.sealed.push(f);
            }
        }
        let (due, wait): (Vec<BufFile>, Vec<BufFile>) = std::mem::take(&mut self.sealed)
            .into_iter()
            .partition(|f| force || f.next_try.is_none_or(|t| t <= now));
        self.sealed = wait;
        self.in_flight += due.iter().map(|f| f.size).sum::<u64>();
        due
    }

    /// An upload of `f` succeeded: its file is removed.
    pub fn uploaded(&mut self, f: &BufFile) -> std::io::Result<()> {
        self.in_flight = self.in_flight.saturating_sub(f.size);
        std::fs::remove_file(&f.path)
    }

    /// An upload of `f` failed: it waits (doubling, up to [`MAX_RETRY_WAIT`]) and is tried again.
    pub fn failed(&mut self, mut f: BufFile) -> Duration {
        self.in_flight = self.in_flight.saturating_sub(f.size);
        f.failures += 1;
        let wait = FIRST_RETRY_WAIT
            .saturating_mul(1u32 << f.failures.saturating_sub(1).min(16))
            .min(MAX_RETRY_WAIT);
        f.next_try = Some(Instant::now() + wait);
        self.sealed.push(f);
        wait
    }

    /// The next `$INDEX`, persisted before it is returned.
    pub fn next_index(&self) -> std::io::Result<u64> {
        let path = self.dir.join("index");
        let current = std::fs::read_to_string(&path)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let tmp = self.dir.join("index.tmp");
        std::fs::write(&tmp, (current + 1).to_string())?;
        std::fs::rename(&tmp, &path)?;
        Ok(current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_survive_a_restart_sealed_with_their_tag() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        s.append("kube.a/b", b"{\"x\":1}\n", 1).unwrap();
        s.append("kube.a/b", b"{\"x\":2}\n", 1).unwrap();
        s.append("other", b"y\n", 1).unwrap();
        assert_eq!(s.size(), 18);
        assert!(s.take_due(1000, Duration::from_secs(60), false).is_empty());
        drop(s);
        let mut s = Store::open(dir.path()).unwrap();
        assert_eq!(s.files(), 2);
        let due = s.take_due(1000, Duration::from_secs(60), false);
        let mut tags: Vec<(&str, u64)> = due.iter().map(|f| (f.tag.as_str(), f.records)).collect();
        tags.sort();
        assert_eq!(tags, [("kube.a/b", 2), ("other", 1)]);
        let wait = s.failed(due[0].clone());
        assert_eq!(wait, FIRST_RETRY_WAIT);
        s.uploaded(&due[1]).unwrap();
        assert_eq!(s.files(), 1);
        assert!(
            s.take_due(1000, Duration::from_secs(60), false).is_empty(),
            "still waiting"
        );
        assert_eq!(s.take_due(1000, Duration::from_secs(60), true).len(), 1);
    }

    #[test]
    fn index_persists() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.next_index().unwrap(), 0);
        assert_eq!(s.next_index().unwrap(), 1);
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.next_index().unwrap(), 2);
    }
}
