//! The offsets database: SQLite with Fluent Bit's `in_tail_files` table, so that logferry can
//! resume from a DB Fluent Bit wrote (and the other way round). Only the columns Fluent Bit 1.x
//! already had are read, so older DBs work too; a new DB gets the 5.x layout.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};

/// A DB failure, with what was being done.
#[derive(Debug, thiserror::Error)]
#[error("tail DB {path}: {what}: {source}")]
pub struct DbError {
    pub path: String,
    pub what: &'static str,
    #[source]
    pub source: rusqlite::Error,
}

/// One row of `in_tail_files`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileRow {
    pub id: i64,
    pub name: String,
    pub offset: u64,
    pub inode: u64,
    /// Set when Fluent Bit or logferry saw the file rotated away.
    pub rotated: bool,
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
);";

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
        let row = |r: &rusqlite::Row<'_>| -> rusqlite::Result<FileRow> {
            Ok(FileRow {
                id: r.get(0)?,
                name: r.get(1)?,
                offset: r.get::<_, Option<i64>>(2)?.unwrap_or(0).max(0) as u64,
                inode: r.get::<_, i64>(3)? as u64,
                rotated: r.get::<_, Option<i64>>(4)?.unwrap_or(0) != 0,
            })
        };
        let q = if compare_name {
            self.conn
                .query_row(
                    "SELECT id, name, offset, inode, rotated FROM in_tail_files WHERE inode=?1 AND name=?2 ORDER BY id DESC LIMIT 1",
                    params![inode as i64, name],
                    row,
                )
                .optional()
        } else {
            self.conn
                .query_row(
                    "SELECT id, name, offset, inode, rotated FROM in_tail_files WHERE inode=?1 ORDER BY id DESC LIMIT 1",
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
            .prepare("SELECT id, name, offset, inode, rotated FROM in_tail_files ORDER BY id")
            .map_err(self.err("list files"))?;
        let rows = st
            .query_map([], |r| {
                Ok(FileRow {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    offset: r.get::<_, Option<i64>>(2)?.unwrap_or(0).max(0) as u64,
                    inode: r.get::<_, i64>(3)? as u64,
                    rotated: r.get::<_, Option<i64>>(4)?.unwrap_or(0) != 0,
                })
            })
            .map_err(self.err("list files"))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(self.err("list files"))
    }

    /// Adds a file at `offset`; returns its id.
    pub fn insert(&self, name: &str, inode: u64, offset: u64) -> Result<i64, DbError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        self.conn
            .execute(
                "INSERT INTO in_tail_files (name, offset, inode, created, rotated) VALUES (?1, ?2, ?3, ?4, 0)",
                params![name, offset as i64, inode as i64, now],
            )
            .map_err(self.err("add file"))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Records the offset up to which lines are delivered.
    pub fn set_offset(&self, id: i64, offset: u64) -> Result<(), DbError> {
        self.conn
            .execute(
                "UPDATE in_tail_files SET offset=?1 WHERE id=?2",
                params![offset as i64, id],
            )
            .map_err(self.err("update offset"))?;
        Ok(())
    }

    /// Records a rotation: the file now has this name.
    pub fn rotate(&self, id: i64, new_name: &str) -> Result<(), DbError> {
        self.conn
            .execute(
                "UPDATE in_tail_files SET name=?1, rotated=1 WHERE id=?2",
                params![new_name, id],
            )
            .map_err(self.err("record rotation"))?;
        Ok(())
    }

    /// Records a new name without marking a rotation.
    pub fn rename(&self, id: i64, new_name: &str) -> Result<(), DbError> {
        self.conn
            .execute(
                "UPDATE in_tail_files SET name=?1 WHERE id=?2",
                params![new_name, id],
            )
            .map_err(self.err("rename file"))?;
        Ok(())
    }

    /// Forgets a file that is gone and fully delivered.
    pub fn delete(&self, id: i64) -> Result<(), DbError> {
        self.conn
            .execute("DELETE FROM in_tail_files WHERE id=?1", params![id])
            .map_err(self.err("remove file"))?;
        Ok(())
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
    fn round_trip_and_lookup_by_inode() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("t.db"), "normal", "WAL", false).unwrap();
        let id = db.insert("/a.log", 42, 0).unwrap();
        db.set_offset(id, 1234).unwrap();
        let row = db.find(42, "/other", false).unwrap().unwrap();
        assert_eq!(row.offset, 1234);
        assert!(db.find(42, "/other", true).unwrap().is_none());
        db.rotate(id, "/a.log.1").unwrap();
        assert_eq!(db.find(42, "/a.log.1", true).unwrap().unwrap().id, id);
        db.delete(id).unwrap();
        assert!(db.find(42, "", false).unwrap().is_none());
    }

    #[test]
    fn reads_a_fluent_bit_1x_db_without_the_newer_columns() {
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
        assert_eq!(db.find(9, "/x.log", true).unwrap().unwrap().offset, 77);
    }
}
