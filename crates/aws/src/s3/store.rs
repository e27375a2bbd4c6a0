//! Buffer files under `store_dir/<bucket>`, one open file per tag, that survive restarts.
//!
//! **Names are bounded whatever the tag**: `<start ns>-<sequence>-<tag hash>.buf`, about 60
//! bytes. The previous scheme, `<start ns>-<tag in hex>.buf`, exceeded the 255-byte name limit
//! with a ~130-byte Kubernetes tag (ENAMETOOLONG: every record of such a tag was lost). The
//! full tag is kept in a header at the start of the file, so it is known again after a
//! restart: `logferry-s3-buffer 1 <tag length>\n<tag>\n`, then the records (JSON lines). Files
//! of the previous scheme (no header, tag in the name) left by an older version are still read.
//!
//! **Durability**: [`Store::append`] returns only once the records are fsynced (the file's data,
//! and the directory entry when it created the file), so a flush acknowledged `Ok` survives a
//! crash or a power loss. When a write or an fsync fails, the file is cut back to its last good
//! size and takes no more records (it is sealed, or removed if it held nothing acknowledged),
//! and the error is returned: the flush returns `Retry` and the engine sends the records again.
//! At start, a torn tail after the last newline (an append that never returned) is cut off.
//!
//! Files found at start (left by a previous run) are sealed: they take no more records and are
//! uploaded first. `index` holds the next `$INDEX`.

use std::collections::HashMap;
use std::fs::File;
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use md5::{Digest, Md5};

/// Longest wait between two upload attempts of one file.
pub const MAX_RETRY_WAIT: Duration = Duration::from_secs(300);
/// First wait after a failed upload.
pub const FIRST_RETRY_WAIT: Duration = Duration::from_secs(1);
/// First word of a buffer file's header.
const MAGIC: &str = "logferry-s3-buffer";
/// Longest tag a header may announce (a corrupt length must not make us read gigabytes).
const MAX_TAG: usize = 1 << 20;
/// Suffix of temporary files an upload writes (compressed objects for PutObject).
pub const UPLOAD_TMP_SUFFIX: &str = ".upload.tmp";

/// One buffer file.
#[derive(Clone, Debug)]
pub struct BufFile {
    pub path: PathBuf,
    pub tag: String,
    /// Start time, nanoseconds since the epoch.
    pub started_ns: i64,
    /// Where the records start (after the header; 0 for files of the previous scheme).
    pub data_offset: u64,
    /// Bytes of records acknowledged, from `data_offset`; uploads read exactly these.
    pub size: u64,
    /// Records in it (approximate for files found at start: their lines).
    pub records: u64,
    pub failures: u32,
    pub next_try: Option<Instant>,
    opened: Instant,
}

struct OpenFile {
    meta: BufFile,
    file: File,
}

/// The buffer files of one output.
pub struct Store {
    dir: PathBuf,
    open: HashMap<String, OpenFile>,
    sealed: Vec<BufFile>,
    /// Bytes of files being uploaded (taken out of the store).
    in_flight: u64,
    /// Sequence of the next file name (unique within this run).
    seq: u64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .field("open", &self.open.len())
            .field("sealed", &self.sealed.len())
            .finish()
    }
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

/// 16 hex digits identifying a tag in file names (for people looking at the directory; the
/// header, not the hash, says which tag a file holds).
fn tag_hash(tag: &str) -> String {
    Md5::digest(tag.as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The header of a file holding `tag`'s records.
pub fn header(tag: &str) -> Vec<u8> {
    let mut h = format!("{MAGIC} 1 {}\n", tag.len()).into_bytes();
    h.extend_from_slice(tag.as_bytes());
    h.push(b'\n');
    h
}

/// Reads a header: `Ok(None)` when the file ends inside it (it was being created and never
/// acknowledged), an `InvalidData` error when it is not one.
fn read_header(file: &mut File) -> std::io::Result<Option<(String, u64)>> {
    let invalid = |why: &str| std::io::Error::new(ErrorKind::InvalidData, why.to_string());
    let mut first = Vec::with_capacity(64);
    let mut byte = [0u8; 1];
    loop {
        if file.read(&mut byte)? == 0 {
            return Ok(None);
        }
        if byte[0] == b'\n' {
            break;
        }
        first.push(byte[0]);
        if first.len() > 64 {
            return Err(invalid("no header line"));
        }
    }
    let line = std::str::from_utf8(&first).map_err(|_| invalid("header is not text"))?;
    let mut words = line.split(' ');
    if words.next() != Some(MAGIC) || words.next() != Some("1") {
        return Err(invalid("not a logferry s3 buffer (version 1)"));
    }
    let len: usize = words
        .next()
        .and_then(|n| n.parse().ok())
        .filter(|&n| n <= MAX_TAG)
        .ok_or_else(|| invalid("bad tag length"))?;
    let mut tag = vec![0u8; len + 1];
    let mut got = 0;
    while got < tag.len() {
        let n = file.read(&mut tag[got..])?;
        if n == 0 {
            return Ok(None);
        }
        got += n;
    }
    if tag.pop() != Some(b'\n') {
        return Err(invalid("tag not followed by a newline"));
    }
    let tag = String::from_utf8(tag).map_err(|_| invalid("tag is not UTF-8"))?;
    Ok(Some((tag, (first.len() + 1 + len + 1) as u64)))
}

/// Makes a directory entry (a created, renamed or removed file) durable. File systems that
/// cannot fsync a directory (EINVAL) are taken as they are.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    match File::open(dir)?.sync_all() {
        Err(e) if e.kind() == ErrorKind::InvalidInput => Ok(()),
        r => r,
    }
}

/// What a file name says.
enum Named {
    /// `<ns>-<seq>-<hash>.buf`: the tag is in the header.
    Current { started_ns: i64 },
    /// `<ns>-<tag hex>.buf` (logferry before bounded names): no header.
    Legacy { started_ns: i64, tag: String },
}

fn parse_name(name: &str) -> Option<Named> {
    let stem = name.strip_suffix(".buf")?;
    let parts: Vec<&str> = stem.split('-').collect();
    match parts.as_slice() {
        [ns, seq, hash]
            if seq.bytes().all(|b| b.is_ascii_digit())
                && !seq.is_empty()
                && hash.len() == 16
                && hash.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            Some(Named::Current {
                started_ns: ns.parse().ok()?,
            })
        }
        [ns, hex] => Some(Named::Legacy {
            started_ns: ns.parse().ok()?,
            tag: unhex(hex)?,
        }),
        _ => None,
    }
}

/// Lines in `file` from `offset`, and where the data ends once a torn tail (bytes after the
/// last newline) is cut off. Reads 64 KiB at a time.
fn scan(file: &mut File, offset: u64) -> std::io::Result<(u64, u64)> {
    file.seek(SeekFrom::Start(offset))?;
    let mut buf = vec![0u8; 64 * 1024];
    let (mut pos, mut lines, mut good) = (offset, 0u64, offset);
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => return Ok((lines, good)),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        for (i, &b) in buf[..n].iter().enumerate() {
            if b == b'\n' {
                lines += 1;
                good = pos + i as u64 + 1;
            }
        }
        pos += n as u64;
    }
}

impl Store {
    /// A store for `dir` that has not looked at it: no files, nothing created.
    pub fn unopened(dir: &Path) -> Store {
        Store {
            dir: dir.to_path_buf(),
            open: HashMap::new(),
            sealed: Vec::new(),
            in_flight: 0,
            seq: 0,
        }
    }

    /// Opens (creating) `dir` and seals the files a previous run left.
    pub fn open(dir: &Path) -> std::io::Result<Store> {
        std::fs::create_dir_all(dir)?;
        let parent = dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if let Err(e) = sync_dir(parent) {
            tracing::warn!(dir = %parent.display(), error = %e, "s3: could not fsync the directory above store_dir");
        }
        let mut sealed = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if name.ends_with(UPLOAD_TMP_SUFFIX) {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let Some(named) = parse_name(name) else {
                continue;
            };
            match Self::recover(&path, named) {
                Ok(Some(f)) => sealed.push(f),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "s3: a file in store_dir could not be read; it is left in place and not uploaded");
                }
            }
        }
        sealed.sort_by_key(|f| (f.started_ns, f.path.clone()));
        Ok(Store {
            sealed,
            ..Store::unopened(dir)
        })
    }

    /// A file a previous run left, ready to upload; `None` (and the file removed) when it
    /// holds no acknowledged record.
    fn recover(path: &Path, named: Named) -> std::io::Result<Option<BufFile>> {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)?;
        let (tag, started_ns, data_offset) = match named {
            Named::Current { started_ns } => match read_header(&mut file)? {
                Some((tag, offset)) => (tag, started_ns, offset),
                None => {
                    std::fs::remove_file(path)?;
                    return Ok(None);
                }
            },
            Named::Legacy { started_ns, tag } => (tag, started_ns, 0),
        };
        let len = file.metadata()?.len();
        let (records, good) = scan(&mut file, data_offset)?;
        if good == data_offset {
            std::fs::remove_file(path)?;
            return Ok(None);
        }
        if good < len {
            tracing::warn!(path = %path.display(), bytes = len - good,
                "s3: cutting the torn end of a buffer file (an append that never completed)");
            file.set_len(good)?;
            file.sync_all()?;
        }
        Ok(Some(BufFile {
            path: path.to_path_buf(),
            tag,
            started_ns,
            data_offset,
            size: good - data_offset,
            records,
            failures: 0,
            next_try: None,
            opened: Instant::now(),
        }))
    }

    /// Bytes on disk (open, sealed and being uploaded).
    pub fn size(&self) -> u64 {
        self.open
            .values()
            .map(|o| &o.meta)
            .chain(&self.sealed)
            .map(|f| f.data_offset + f.size)
            .sum::<u64>()
            + self.in_flight
    }

    /// Files waiting, open or sealed.
    pub fn files(&self) -> usize {
        self.open.len() + self.sealed.len()
    }

    /// Creates a new file for `tag`, header written (not yet synced: the first append syncs it).
    fn create(&mut self, tag: &str) -> std::io::Result<OpenFile> {
        let started_ns = now_ns();
        let hash = tag_hash(tag);
        let mut tries = 0;
        let (path, mut file) = loop {
            let path = self
                .dir
                .join(format!("{started_ns}-{}-{hash}.buf", self.seq));
            self.seq += 1;
            match std::fs::OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(&path)
            {
                Ok(f) => break (path, f),
                Err(e) if e.kind() == ErrorKind::AlreadyExists && tries < 16 => tries += 1,
                Err(e) => return Err(e),
            }
        };
        let h = header(tag);
        if let Err(e) = file.write_all(&h) {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        Ok(OpenFile {
            meta: BufFile {
                path,
                tag: tag.to_string(),
                started_ns,
                data_offset: h.len() as u64,
                size: 0,
                records: 0,
                failures: 0,
                next_try: None,
                opened: Instant::now(),
            },
            file,
        })
    }

    /// Appends `data` (holding `records` records, each ending with a newline) to `tag`'s open
    /// file, creating it if needed, and returns once it is fsynced. On error the file is cut
    /// back to what was acknowledged before and takes no more records.
    pub fn append(&mut self, tag: &str, data: &[u8], records: u64) -> std::io::Result<()> {
        if !self.open.contains_key(tag) {
            let f = self.create(tag)?;
            self.open.insert(tag.to_string(), f);
        }
        let Some(f) = self.open.get_mut(tag) else {
            return Err(std::io::Error::other("buffer file vanished"));
        };
        let created = f.meta.size == 0;
        let mut res = f.file.write_all(data).and_then(|()| f.file.sync_data());
        if res.is_ok() && created {
            res = sync_dir(&self.dir);
        }
        match res {
            Ok(()) => {
                f.meta.size += data.len() as u64;
                f.meta.records += records;
                Ok(())
            }
            Err(e) => {
                if let Some(f) = self.open.remove(tag) {
                    self.set_aside(f);
                }
                Err(e)
            }
        }
    }

    /// A file whose write or fsync failed: cut back to its acknowledged records and sealed,
    /// or removed when it has none.
    fn set_aside(&mut self, f: OpenFile) {
        let good = f.meta.data_offset + f.meta.size;
        let cut = f.file.set_len(good).and_then(|()| f.file.sync_all());
        drop(f.file);
        if f.meta.size == 0 {
            if let Err(e) = std::fs::remove_file(&f.meta.path) {
                tracing::warn!(path = %f.meta.path.display(), error = %e, "s3: could not remove a buffer file that failed on its first write");
            }
            return;
        }
        if let Err(e) = cut {
            // Uploads read only the acknowledged bytes; a restart cuts after the last newline.
            tracing::warn!(path = %f.meta.path.display(), error = %e, "s3: could not cut a buffer file back after a failed write");
        }
        self.sealed.push(f.meta);
    }

    /// Whether an open file has reached `size`.
    pub fn any_full(&self, size: u64) -> bool {
        self.open.values().any(|f| f.meta.size >= size)
    }

    /// Takes the files to upload now: sealed ones whose wait is over, and open ones that are
    /// full or older than `timeout` (all of them with `force`).
    pub fn take_due(&mut self, full: u64, timeout: Duration, force: bool) -> Vec<BufFile> {
        let now = Instant::now();
        let due_tags: Vec<String> = self
            .open
            .iter()
            .filter(|(_, f)| {
                force || f.meta.size >= full || now.duration_since(f.meta.opened) >= timeout
            })
            .map(|(t, _)| t.clone())
            .collect();
        for t in due_tags {
            if let Some(f) = self.open.remove(&t) {
                self.sealed.push(f.meta);
            }
        }
        let (due, wait): (Vec<BufFile>, Vec<BufFile>) = std::mem::take(&mut self.sealed)
            .into_iter()
            .partition(|f| force || f.next_try.is_none_or(|t| t <= now));
        self.sealed = wait;
        self.in_flight += due.iter().map(|f| f.data_offset + f.size).sum::<u64>();
        due
    }

    /// An upload of `f` succeeded: its file is removed.
    pub fn uploaded(&mut self, f: &BufFile) -> std::io::Result<()> {
        self.in_flight = self.in_flight.saturating_sub(f.data_offset + f.size);
        std::fs::remove_file(&f.path)
    }

    /// An upload of `f` failed: it waits (doubling, up to [`MAX_RETRY_WAIT`]) and is tried again.
    pub fn failed(&mut self, mut f: BufFile) -> Duration {
        self.in_flight = self.in_flight.saturating_sub(f.data_offset + f.size);
        f.failures += 1;
        let wait = FIRST_RETRY_WAIT
            .saturating_mul(1u32 << f.failures.saturating_sub(1).min(16))
            .min(MAX_RETRY_WAIT);
        f.next_try = Some(Instant::now() + wait);
        self.sealed.push(f);
        wait
    }

    /// The next `$INDEX`, persisted (fsynced) before it is returned, so that no index is used
    /// twice across a crash.
    pub fn next_index(&self) -> std::io::Result<u64> {
        let path = self.dir.join("index");
        let current = std::fs::read_to_string(&path)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let tmp = self.dir.join("index.tmp");
        let mut f = File::create(&tmp)?;
        f.write_all((current + 1).to_string().as_bytes())?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, &path)?;
        sync_dir(&self.dir)?;
        Ok(current)
    }

    /// The directory the files are in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBE_TAG: &str = "kube.var.log.containers.nginx-5468c5d4d7-n2swr_default_nginx-b90a89309ac90fff2972822c66f11736933000c5aa6376dff0c11a441fa427ee.log";

    fn buf_names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .filter(|n| n.ends_with(".buf"))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn files_survive_a_restart_sealed_with_their_tag() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        s.append("kube.a/b", b"{\"x\":1}\n", 1).unwrap();
        s.append("kube.a/b", b"{\"x\":2}\n", 1).unwrap();
        s.append("other", b"y\n", 1).unwrap();
        let headers = (header("kube.a/b").len() + header("other").len()) as u64;
        assert_eq!(s.size(), 18 + headers);
        assert!(s.take_due(1000, Duration::from_secs(60), false).is_empty());
        drop(s);
        let mut s = Store::open(dir.path()).unwrap();
        assert_eq!(s.files(), 2);
        let due = s.take_due(1000, Duration::from_secs(60), false);
        let mut tags: Vec<(&str, u64, u64)> = due
            .iter()
            .map(|f| (f.tag.as_str(), f.records, f.size))
            .collect();
        tags.sort();
        assert_eq!(tags, [("kube.a/b", 2, 16), ("other", 1, 2)]);
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
    fn names_are_short_and_unique_whatever_the_tag() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        let long = "k".repeat(4096);
        for tag in [KUBE_TAG, long.as_str(), "a", "a-b", "ü/..\n"] {
            s.append(tag, b"x\n", 1).unwrap();
        }
        // The same tag again after its file was taken: a new file.
        let taken = s.take_due(1, Duration::from_secs(60), true);
        assert_eq!(taken.len(), 5);
        s.append(KUBE_TAG, b"y\n", 1).unwrap();
        let names = buf_names(dir.path());
        assert_eq!(names.len(), 6);
        assert!(names.iter().all(|n| n.len() < 80), "{names:?}");
        drop(s);
        let mut s = Store::open(dir.path()).unwrap();
        let mut tags: Vec<String> = s
            .take_due(1, Duration::from_secs(60), true)
            .into_iter()
            .map(|f| f.tag)
            .collect();
        tags.sort();
        let mut want = vec![KUBE_TAG, KUBE_TAG, &long, "a", "a-b", "ü/..\n"];
        want.sort();
        assert_eq!(tags, want);
    }

    #[test]
    fn files_of_the_previous_naming_scheme_are_picked_up() {
        let dir = tempfile::tempdir().unwrap();
        let hex: String = "app.one".bytes().map(|b| format!("{b:02x}")).collect();
        std::fs::write(
            dir.path().join(format!("1700000000000000000-{hex}.buf")),
            b"{\"a\":1}\n{\"a\":2}\n",
        )
        .unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        let due = s.take_due(1, Duration::from_secs(60), true);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].tag, "app.one");
        assert_eq!(due[0].started_ns, 1_700_000_000_000_000_000);
        assert_eq!(
            (due[0].data_offset, due[0].size, due[0].records),
            (0, 16, 2)
        );
    }

    #[test]
    fn a_torn_tail_is_cut_and_a_half_created_file_removed() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        s.append("t", b"one\ntwo\n", 2).unwrap();
        drop(s);
        let name = buf_names(dir.path()).remove(0);
        let path = dir.path().join(&name);
        // An append that never returned: half a record.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"thr").unwrap();
        drop(f);
        // A file whose header was being written.
        let partial = dir.path().join("1-0-0123456789abcdef.buf");
        std::fs::write(&partial, &header("x")[..10]).unwrap();
        // Something that is not a buffer of ours is left alone.
        let foreign = dir.path().join("2-0-0123456789abcdef.buf");
        std::fs::write(&foreign, b"hello\n").unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        assert!(!partial.exists());
        assert!(foreign.exists());
        let due = s.take_due(1, Duration::from_secs(60), true);
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].size, due[0].records), (8, 2));
        let data = std::fs::read(&path).unwrap();
        assert!(data.ends_with(b"\none\ntwo\n"), "{data:?}");
    }

    #[test]
    fn a_failed_create_is_an_error_and_leaves_nothing_open() {
        let dir = tempfile::tempdir().unwrap();
        let store_dir = dir.path().join("bucket");
        let mut s = Store::open(&store_dir).unwrap();
        s.append("kept", b"a\n", 1).unwrap();
        // The directory is replaced by a file: creating another buffer file fails, even as
        // root.
        let moved = dir.path().join("moved");
        std::fs::rename(&store_dir, &moved).unwrap();
        std::fs::write(&store_dir, b"not a directory").unwrap();
        let err = s.append("new", b"b\n", 1).unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::NotADirectory | ErrorKind::NotFound),
            "{err}"
        );
        assert_eq!(s.files(), 1, "only the file that was acknowledged");
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
