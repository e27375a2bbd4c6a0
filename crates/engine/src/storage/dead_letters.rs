//! Fluent Bit's dead-letter store (`storage.keep.rejected On`): what an output gives up on is
//! kept as a chunk file under `storage.path/storage.rejected.path` (default `rejected`),
//! named `<tag>_<status>_<output>_<unique>.flb` with `/`, `\` and `:` in the tag and output
//! name replaced by `_`, as Fluent Bit names them (status is 0: logferry's outputs report no
//! status code to the engine, as most of Fluent Bit's do not). `storage.rejected.limit` caps
//! the store's size: past it a copy is skipped with a warning, as in Fluent Bit. The store is
//! never replayed: the files are for an operator to inspect and, fixed, to move into an
//! input's stream to be sent again.
//!
//! logferry keeps more than Fluent Bit does: besides whole chunks an output gave up on
//! (permanent error, `Retry_Limit` reached), the records a destination refused one by one
//! (too old, too large, malformed), each under the output's name.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use logferry_core::Record;

use super::{chunk_file, SyncMode};

/// The dead-letter store.
#[derive(Debug)]
pub struct DeadLetters {
    dir: PathBuf,
    limit: Option<u64>,
    checksum: bool,
    /// Bytes in the store (what was there at start plus what was written since).
    used: AtomicU64,
    seq: AtomicU64,
    /// Records kept, and records not kept because the limit was reached or a write failed.
    pub kept: AtomicU64,
    pub skipped: AtomicU64,
}

/// `/`, `\` and `:` become `_`, and the result is cut to `max` bytes at a character boundary.
fn sanitize(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max));
    for c in s.chars() {
        let c = match c {
            '/' | '\\' | ':' | '\0' => '_',
            c => c,
        };
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(c);
    }
    out
}

impl DeadLetters {
    /// Opens (creating) the store's directory and measures what it holds.
    pub fn open(
        dir: PathBuf,
        limit: Option<u64>,
        checksum: bool,
        _sync: SyncMode,
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        let used = std::fs::read_dir(&dir)?
            .flatten()
            .filter_map(|e| e.metadata().ok())
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .sum();
        Ok(DeadLetters {
            dir,
            limit,
            checksum,
            used: AtomicU64::new(used),
            seq: AtomicU64::new(0),
            kept: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
        })
    }

    /// Where the files go.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Keeps `records` that output `output` gave up on (`reason`). Always fsynced: a dead
    /// letter is the last copy. Never fails: a copy that cannot be made is logged and counted.
    pub fn keep(&self, tag: &str, output: &str, records: &[Record], reason: &str) {
        if records.is_empty() {
            return;
        }
        let n = records.len() as u64;
        let bytes = chunk_file::encode(tag, records, self.checksum);
        let size = bytes.len() as u64;
        if let Some(limit) = self.limit {
            let used = self.used.load(Ordering::Acquire);
            if used + size > limit {
                self.skipped.fetch_add(n, Ordering::Relaxed);
                tracing::warn!(output, tag, records = n, used, limit,
                    "storage.rejected.limit reached: rejected records are not kept in the dead-letter store");
                return;
            }
        }
        let unique = format!(
            "{:x}{:04x}",
            logferry_core::EventTime::now().0,
            self.seq.fetch_add(1, Ordering::Relaxed) & 0xffff
        );
        let name = format!(
            "{}_0_{}_{unique}.flb",
            sanitize(tag, 127),
            sanitize(output, 63)
        );
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let written = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            drop(f);
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(&self.dir)?.sync_all()
        })();
        match written {
            Ok(()) => {
                self.used.fetch_add(size, Ordering::AcqRel);
                self.kept.fetch_add(n, Ordering::Relaxed);
                if let Some(limit) = self.limit {
                    let used = self.used.load(Ordering::Acquire);
                    if used >= limit / 10 * 9 {
                        tracing::warn!(
                            used,
                            limit,
                            "the dead-letter store is at 90% of storage.rejected.limit or more"
                        );
                    }
                }
                tracing::info!(output, tag, records = n, bytes = size, file = %path.display(), %reason,
                    "rejected records kept in the dead-letter store");
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                self.skipped.fetch_add(n, Ordering::Relaxed);
                tracing::error!(output, tag, records = n, error = %e, dir = %self.dir.display(),
                    "cannot write to the dead-letter store; rejected records not kept");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use logferry_core::{EventTime, Map};

    fn recs(n: usize) -> Vec<Record> {
        (0..n)
            .map(|i| {
                let mut m = Map::new();
                m.insert("log", format!("rejected {i}"));
                Record::new(EventTime::from_parts(1, 0), m)
            })
            .collect()
    }

    #[test]
    fn keeps_readable_chunks_named_like_fluent_bits_until_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let dl = DeadLetters::open(
            dir.path().join("rejected"),
            Some(400),
            true,
            SyncMode::Normal,
        )
        .unwrap();
        dl.keep("kube.var/log:x", "cloudwatch_logs.0", &recs(2), "too old");
        let files: Vec<PathBuf> = std::fs::read_dir(dl.dir())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(files.len(), 1);
        let name = files[0].file_name().unwrap().to_str().unwrap().to_string();
        assert!(
            name.starts_with("kube.var_log_x_0_cloudwatch_logs.0_") && name.ends_with(".flb"),
            "{name}"
        );
        let (tag, got) = chunk_file::decode(&std::fs::read(&files[0]).unwrap(), true).unwrap();
        assert_eq!(tag, "kube.var/log:x");
        assert_eq!(got, recs(2));
        assert_eq!(dl.kept.load(Ordering::Relaxed), 2);
        // Past the limit, copies are skipped and counted.
        for _ in 0..10 {
            dl.keep("t", "o", &recs(3), "refused");
        }
        assert!(dl.used.load(Ordering::Relaxed) <= 400);
        assert!(dl.skipped.load(Ordering::Relaxed) > 0);
        // A restart measures what is there.
        let again = DeadLetters::open(
            dir.path().join("rejected"),
            Some(400),
            true,
            SyncMode::Normal,
        )
        .unwrap();
        assert_eq!(
            again.used.load(Ordering::Relaxed),
            dl.used.load(Ordering::Relaxed)
        );
    }
}
