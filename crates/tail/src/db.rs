//! The offsets database: SQLite with Fluent Bit's `in_tail_files` table, so that logferry can
//! resume from a DB Fluent Bit wrote (and the other way round). Only the columns Fluent Bit 1.x
//! already had are required; the 5.x `offset_marker` columns are added as Fluent Bit 5.x adds
//! them (`ALTER TABLE ... ADD COLUMN`), and written with every offset (see [`crate::marker`]).
//!
//! What Fluent Bit has no column for lives in logferry's own table, `logferry_tail_files`, in
//! the same file: Fluent Bit 5.1.1's SQL names only `in_tail_files` (and a temporary
//! `in_tail_current_inodes`), so it never reads, changes or trips over it. A row there is
//! trusted only while `in_tail_files` has a row with the same id and inode: Fluent Bit may have
//! deleted a row and reused its id meanwhile.

use std::collections::HashSet;
use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};

use crate::marker::Marker;

/// A DB failure, with what was being done.
#[derive(Debug, thiserror::Error)]
#[error("tail DB {path}: {what}: {source}")]
pub struct DbError {
    pub path: String,
    pub what: &'static str,
    #[source]
    pub source: rusqlite::Error,
}

/// One row of `in_tail_files` (with logferry's original path when it has one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileRow {
    pub id: i64,
    pub name: String,
    pub offset: u64,
    pub inode: u64,
    /// Set when Fluent Bit or logferry saw the file rotated away.
    pub rotated: bool,
    /// Fluent Bit 5.x's marker of `offset` (0/0 in rows written before the columns existed).
    pub marker: Marker,
    /// The path the file was followed under before it was rotated (logferry's own table):
    /// its tag and `Path_Key` come from it.
    pub origin: Option<String>,
}

/// The open DB.
pub struct Db {
    conn: Connection,
    path: String,
}

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS in_tail_files (
    id     INTEGER PRIMARY KEY,
    name   TEXT NOT NULL,
    offset INTEGER,
    inode  INTEGER,
    created INTEGER,
    rotated INTEGER DEFAULT 0,
    offset_marker INTEGER DEFAULT 0,
    offset_marker_size INTEGER DEFAULT 0
);
CREATE TABLE IF NOT EXISTS logferry_tail_files (
    id    INTEGER PRIMARY KEY,
    inode INTEGER NOT NULL,
    path  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS logferry_tail_state (
    key   TEXT PRIMARY KEY,
    value INTEGER
);";

/// The columns of [`FileRow`], `in_tail_files` as `f` and logferry's table as `l`.
const SELECT: &str = "SELECT f.id, f.name, f.offset, f.inode, f.rotated, f.offset_marker, \
     f.offset_marker_size, l.path FROM in_tail_files f \
     LEFT JOIN logferry_tail_files l ON l.id = f.id AND l.inode = f.inode";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<FileRow> {
    let int = |i: usize| -> rusqlite::Result<i64> { Ok(r.get::<_, Option<i64>>(i)?.unwrap_or(0)) };
    Ok(FileRow {
        id: r.get(0)?,
        name: r.get(1)?,
        offset: int(2)?.max(0) as u64,
        inode: int(3)? as u64,
        rotated: int(4)? != 0,
        // Fluent Bit binds the unsigned hash as a signed 64-bit integer.
        marker: Marker {
            hash: int(5)? as u64,
            size: int(6)?.max(0) as u64,
        },
        origin: r.get(7)?,
    })
}

impl Db {
    /// Opens (creating if needed) the DB with Fluent Bit's pragmas: `DB.sync`,
    /// `DB.journal_mode`, `DB.locking`.
    pub fn open(path: &Path, sync: &str, journal_mode: &str, locking: bool) -> Result<Db, DbError> {
        let p = path.display().to_string();
        let err = |what: &'static str| {
            let p = p.clone();
            move |source| DbError {
                path: p,
                what,
                source,
            }
        };
        let conn = Connection::open(path).map_err(err("open"))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(err("busy timeout"))?;
        conn.pragma_update(None, "synchronous", sync)
            .map_err(err("set synchronous"))?;
        let _: String = conn
            .query_row(
                &format!("PRAGMA journal_mode={}", sanitize(journal_mode)),
                [],
                |r| r.get(0),
            )
            .map_err(err("set journal_mode"))?;
        if locking {
            let _: String = conn
                .query_row("PRAGMA locking_mode=EXCLUSIVE", [], |r| r.get(0))
                .map_err(err("set locking_mode"))?;
        }
        conn.execute_batch(SCHEMA).map_err(err("create table"))?;
        // A DB from Fluent Bit before 5.x lacks the marker columns: add them as Fluent Bit 5.x
        // does (older readers ignore them; they select their columns by name).
        for col in ["offset_marker", "offset_marker_size"] {
            match conn.execute_batch(&format!(
                "ALTER TABLE in_tail_files ADD COLUMN {col} INTEGER DEFAULT 0;"
            )) {
                Ok(()) => {}
                Err(e) if e.to_string().contains("duplicate column name") => {}
                Err(e) => return Err(err("add the offset marker columns")(e)),
            }
        }
        Ok(Db { conn, path: p })
    }

    fn err(&self, what: &'static str) -> impl FnOnce(rusqlite::Error) -> DbError + '_ {
        move |source| DbError {
            path: self.path.clone(),
            what,
            source,
        }
    }

    /// The newest row for `inode` (and `name` when `compare_name` is set), as Fluent Bit looks
    /// files up.
    pub fn find(
        &self,
        inode: u64,
        name: &str,
        compare_name: bool,
    ) -> Result<Option<FileRow>, DbError> {
        let q = if compare_name {
            self.conn
                .query_row(
                    &format!("{SELECT} WHERE f.inode=?1 AND f.name=?2 ORDER BY f.id DESC LIMIT 1"),
                    params![inode as i64, name],
                    row,
                )
                .optional()
        } else {
            self.conn
                .query_row(
                    &format!("{SELECT} WHERE f.inode=?1 ORDER BY f.id DESC LIMIT 1"),
                    params![inode as i64],
                    row,
                )
                .optional()
        };
        q.map_err(self.err("look up file"))
    }

    /// Every row (for draining rotated files left behind at the last stop).
    pub fn all(&self) -> Result<Vec<FileRow>, DbError> {
        let mut st = self
            .conn
            .prepare(&format!("{SELECT} ORDER BY f.id"))
            .map_err(self.err("list files"))?;
        let rows = st.query_map([], row).map_err(self.err("list files"))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(self.err("list files"))
    }

    /// Adds a file found at `name`, to be read from `offset`; returns its id.
    pub fn insert(
        &self,
        name: &str,
        inode: u64,
        offset: u64,
        marker: Marker,
    ) -> Result<i64, DbError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        self.conn
            .execute(
                "INSERT INTO in_tail_files (name, offset, inode, created, rotated, offset_marker, offset_marker_size) VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6)",
                params![name, offset as i64, inode as i64, now, marker.hash as i64, marker.size as i64],
            )
            .map_err(self.err("add file"))?;
        let id = self.conn.last_insert_rowid();
        self.set_origin(id, inode, name)?;
        Ok(id)
    }

    /// Keeps `path` as the file's original path in logferry's table.
    fn set_origin(&self, id: i64, inode: u64, path: &str) -> Result<(), DbError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO logferry_tail_files (id, inode, path) VALUES (?1, ?2, ?3)",
                params![id, inode as i64, path],
            )
            .map_err(self.err("record the original path"))?;
        Ok(())
    }

    /// Records the offset up to which lines are delivered, with its marker.
    pub fn set_offset(&self, id: i64, offset: u64, marker: Marker) -> Result<(), DbError> {
        // Once per delivered chunk: the statement is prepared once, not parsed each time.
        self.conn
            .prepare_cached(
                "UPDATE in_tail_files SET offset=?1, offset_marker=?2, offset_marker_size=?3 WHERE id=?4",
            )
            .and_then(|mut st| {
                st.execute(params![offset as i64, marker.hash as i64, marker.size as i64, id])
            })
            .map_err(self.err("update offset"))?;
        Ok(())
    }

    /// Records a rotation: the file now has this name (its original path stays in logferry's
    /// table).
    pub fn rotate(&self, id: i64, new_name: &str) -> Result<(), DbError> {
        self.conn
            .execute(
                "UPDATE in_tail_files SET name=?1, rotated=1 WHERE id=?2",
                params![new_name, id],
            )
            .map_err(self.err("record rotation"))?;
        Ok(())
    }

    /// Records that the file is now followed under a new name (not a rotation): the new name
    /// is also its original path from now on.
    pub fn rename(&self, id: i64, inode: u64, new_name: &str) -> Result<(), DbError> {
        self.conn
            .execute(
                "UPDATE in_tail_files SET name=?1 WHERE id=?2",
                params![new_name, id],
            )
            .map_err(self.err("rename file"))?;
        self.set_origin(id, inode, new_name)
    }

    /// When an agent last used this DB (Unix seconds), if logferry ever did.
    pub fn last_seen(&self) -> Result<Option<i64>, DbError> {
        self.conn
            .query_row(
                "SELECT value FROM logferry_tail_state WHERE key='last_seen'",
                [],
                |r| r.get::<_, Option<i64>>(0),
            )
            .optional()
            .map(Option::flatten)
            .map_err(self.err("read last_seen"))
    }

    /// Records that an agent uses this DB now.
    pub fn set_last_seen(&self, secs: i64) -> Result<(), DbError> {
        self.conn
            .execute(
                "INSERT INTO logferry_tail_state (key, value) VALUES ('last_seen', ?1) \
                 ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                params![secs],
            )
            .map_err(self.err("write last_seen"))?;
        Ok(())
    }

    /// Forgets a file that is gone and fully delivered.
    pub fn delete(&self, id: i64) -> Result<(), DbError> {
        self.conn
            .execute("DELETE FROM in_tail_files WHERE id=?1", params![id])
            .map_err(self.err("remove file"))?;
        self.conn
            .execute("DELETE FROM logferry_tail_files WHERE id=?1", params![id])
            .map_err(self.err("remove file"))?;
        Ok(())
    }

    /// Fluent Bit's purge after the first scan (`flb_tail_db_stale_file_delete`): every row
    /// whose inode is not one of the files now followed is deleted, whatever its name, so that
    /// a later file with a reused inode never inherits its offset. Rows of logferry's own table
    /// without their `in_tail_files` row go too. Returns how many file rows were deleted.
    pub fn purge_stale(&self, followed: &HashSet<u64>) -> Result<usize, DbError> {
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(|source| DbError {
                path: self.path.clone(),
                what: "purge stale files",
                source,
            })?;
        let err = |source| DbError {
            path: self.path.clone(),
            what: "purge stale files",
            source,
        };
        let stale: Vec<i64> = {
            let mut st = tx
                .prepare("SELECT id, inode FROM in_tail_files")
                .map_err(err)?;
            let rows = st
                .query_map([], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, Option<i64>>(1)?.unwrap_or(0),
                    ))
                })
                .map_err(err)?;
            let mut stale = Vec::new();
            for r in rows {
                let (id, inode) = r.map_err(err)?;
                if !followed.contains(&(inode as u64)) {
                    stale.push(id);
                }
            }
            stale
        };
        for id in &stale {
            tx.execute("DELETE FROM in_tail_files WHERE id=?1", params![id])
                .map_err(err)?;
        }
        tx.execute(
            "DELETE FROM logferry_tail_files WHERE NOT EXISTS (SELECT 1 FROM in_tail_files f \
             WHERE f.id = logferry_tail_files.id AND f.inode = logferry_tail_files.inode)",
            [],
        )
        .map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(stale.len())
    }
}

/// Keeps a pragma value to letters so it cannot inject SQL.
fn sanitize(v: &str) -> String {
    v.chars().filter(char::is_ascii_alphabetic).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_seen_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("t.db"), "normal", "WAL", false).unwrap();
        assert_eq!(db.last_seen().unwrap(), None);
        db.set_last_seen(1_700_000_000).unwrap();
        db.set_last_seen(1_700_000_005).unwrap();
        assert_eq!(db.last_seen().unwrap(), Some(1_700_000_005));
    }

    #[test]
    fn round_trip_and_lookup_by_inode() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("t.db"), "normal", "WAL", false).unwrap();
        let id = db.insert("/a.log", 42, 0, Marker::default()).unwrap();
        let m = Marker {
            hash: u64::MAX - 5,
            size: 32,
        };
        db.set_offset(id, 1234, m).unwrap();
        let row = db.find(42, "/other", false).unwrap().unwrap();
        assert_eq!(
            (row.offset, row.marker),
            (1234, m),
            "an unsigned hash survives"
        );
        assert!(db.find(42, "/other", true).unwrap().is_none());
        db.rotate(id, "/a.log.1").unwrap();
        let row = db.find(42, "/a.log.1", true).unwrap().unwrap();
        assert_eq!(row.id, id);
        assert_eq!(row.origin.as_deref(), Some("/a.log"), "original path kept");
        db.delete(id).unwrap();
        assert!(db.find(42, "", false).unwrap().is_none());
    }

    #[test]
    fn reads_a_fluent_bit_1x_db_and_adds_the_marker_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "CREATE TABLE in_tail_files (id INTEGER PRIMARY KEY, name TEXT NOT NULL, offset INTEGER, inode INTEGER, created INTEGER, rotated INTEGER DEFAULT 0);
                 INSERT INTO in_tail_files (name, offset, inode, created) VALUES ('/x.log', 77, 9, 1480371857);",
            )
            .unwrap();
        }
        let db = Db::open(&path, "normal", "WAL", false).unwrap();
        let row = db.find(9, "/x.log", true).unwrap().unwrap();
        assert_eq!(
            (row.offset, row.marker, row.origin),
            (77, Marker::default(), None)
        );
        db.set_offset(row.id, 80, Marker { hash: 7, size: 32 })
            .unwrap();
        drop(db);
        let again = Db::open(&path, "normal", "WAL", false).unwrap();
        assert_eq!(again.find(9, "", false).unwrap().unwrap().marker.hash, 7);
    }

    #[test]
    fn purge_keeps_followed_inodes_only_and_ignores_reused_ids() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("p.db"), "normal", "WAL", false).unwrap();
        let a = db.insert("/a.log", 1, 0, Marker::default()).unwrap();
        let b = db.insert("/b.log", 2, 0, Marker::default()).unwrap();
        db.rotate(a, "/a.log.1").unwrap();
        let n = db.purge_stale(&HashSet::from([1])).unwrap();
        assert_eq!(n, 1);
        assert_eq!(
            db.find(1, "", false).unwrap().unwrap().origin.as_deref(),
            Some("/a.log")
        );
        assert!(db.find(2, "", false).unwrap().is_none());
        let left: i64 = db
            .conn
            .query_row("SELECT COUNT(*) FROM logferry_tail_files", [], |r| r.get(0))
            .unwrap();
        assert_eq!(left, 1, "b's original path went with its row");
        // Fluent Bit deletes a row and reuses its id for another inode: the old original
        // path must not be taken for the new file's.
        db.conn
            .execute_batch(&format!(
                "DELETE FROM in_tail_files WHERE id={a}; INSERT INTO in_tail_files (id, name, offset, inode) VALUES ({a}, '/c.log', 0, 3);"
            ))
            .unwrap();
        assert_eq!(db.find(3, "", false).unwrap().unwrap().origin, None);
        let _ = b;
    }
}
