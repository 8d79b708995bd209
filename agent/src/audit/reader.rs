//! Read-only access to an audit database: [`open_read_only`] (which falls back to a private
//! copy when the database sits on a read-only or full file system), the row decoder
//! ([`COLUMNS`], [`decode_row`]), [`verify_db`] (feeding the rows to the pure
//! [`Verifier`]) and the row readers of `audit log`, `head` and `export`.

use std::path::Path;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::error::{ReadError, VerifyError};
use super::verify::{StoredRow, Verifier, VerifyOptions, VerifyReport};
use super::{Head, SCHEMA_VERSION};

/// Column list in the order [`decode_row`] expects.
pub const COLUMNS: &str =
    "seq, ts, host, vmid, phase, run_id, step, outcome, detail, prev_hash, hash";

/// Decodes a row selected with [`COLUMNS`]; `Err(column name)` when a column has the wrong
/// type or a hash is not 32 bytes (only possible after the schema was tampered with).
pub fn decode_row(r: &rusqlite::Row<'_>) -> Result<StoredRow, &'static str> {
    fn blob32(r: &rusqlite::Row<'_>, i: usize) -> Option<[u8; 32]> {
        let v = r.get_ref(i).ok()?;
        let b = v.as_blob().ok()?;
        b.try_into().ok()
    }
    Ok(StoredRow {
        seq: r.get(0).map_err(|_| "seq")?,
        ts: r.get(1).map_err(|_| "ts")?,
        host: r.get(2).map_err(|_| "host")?,
        vmid: r.get(3).map_err(|_| "vmid")?,
        phase: r.get(4).map_err(|_| "phase")?,
        run_id: r.get(5).map_err(|_| "run_id")?,
        step: r.get(6).map_err(|_| "step")?,
        outcome: r.get(7).map_err(|_| "outcome")?,
        detail: r.get(8).map_err(|_| "detail")?,
        prev_hash: blob32(r, 9).ok_or("prev_hash")?,
        hash: blob32(r, 10).ok_or("hash")?,
    })
}

/// Like [`decode_row`], but into `out`, reusing its string buffers (the verify loop decodes a
/// million rows without allocating per row).
pub fn decode_row_into(r: &rusqlite::Row<'_>, out: &mut StoredRow) -> Result<(), &'static str> {
    fn text_into(
        r: &rusqlite::Row<'_>,
        i: usize,
        s: &mut String,
        col: &'static str,
    ) -> Result<(), &'static str> {
        let v = r.get_ref(i).map_err(|_| col)?;
        let t = v.as_str().map_err(|_| col)?;
        s.clear();
        s.push_str(t);
        Ok(())
    }
    fn blob32(r: &rusqlite::Row<'_>, i: usize) -> Option<[u8; 32]> {
        let v = r.get_ref(i).ok()?;
        let b = v.as_blob().ok()?;
        b.try_into().ok()
    }
    out.seq = r.get(0).map_err(|_| "seq")?;
    out.ts = r.get(1).map_err(|_| "ts")?;
    text_into(r, 2, &mut out.host, "host")?;
    out.vmid = r.get(3).map_err(|_| "vmid")?;
    text_into(r, 4, &mut out.phase, "phase")?;
    text_into(r, 5, &mut out.run_id, "run_id")?;
    text_into(r, 6, &mut out.step, "step")?;
    text_into(r, 7, &mut out.outcome, "outcome")?;
    text_into(r, 8, &mut out.detail, "detail")?;
    out.prev_hash = blob32(r, 9).ok_or("prev_hash")?;
    out.hash = blob32(r, 10).ok_or("hash")?;
    Ok(())
}

/// A read-only connection to an audit database, possibly to a private copy of it (see
/// [`open_read_only`]); the copy is removed when this is dropped.
pub struct ReadOnlyDb {
    /// The connection (declared first: closed before the copy goes).
    pub conn: Connection,
    /// `PRAGMA user_version` of the database.
    pub version: i64,
    copy: Option<PrivateCopy>,
}

impl ReadOnlyDb {
    /// Whether the rows are read from a private copy (a read-only file system with a WAL and
    /// no `-shm` file).
    pub fn is_copy(&self) -> bool {
        self.copy.is_some()
    }
}

/// A folder of this process under the temp dir, mode 0700, removed on drop.
struct PrivateCopy(std::path::PathBuf);

impl Drop for PrivateCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Checks, without opening anything (a FIFO's `open` would wait for a writer), that `db` and
/// its `-wal` and `-shm` files are regular files where they exist (symlinks followed), and
/// that none is a symlink to nothing.
///
/// # Errors
/// `InvalidInput` `refused: a FIFO, not a regular file` (`<path> is a FIFO` for `-wal`/`-shm`;
/// socket, device, directory alike); the OS error of `stat` other than `NotFound`.
pub(super) fn regular_or_absent(db: &Path) -> std::io::Result<()> {
    let mut paths = vec![db.to_path_buf()];
    for suffix in ["-wal", "-shm"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        paths.push(p.into());
    }
    for p in paths {
        let what = match std::fs::metadata(&p) {
            Ok(m) if m.is_file() => continue,
            Ok(m) => crate::file_kind::describe(&m.file_type()),
            // A symlink to nothing: SQLite would create its target (mode 0644, wherever it
            // points) and start a new chain there.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if std::fs::symlink_metadata(&p).is_err() {
                    continue;
                }
                "a symlink to nothing"
            }
            Err(e) => return Err(e),
        };
        let msg = if p == db {
            format!("refused: {what}, not a regular file; the audit database must be one")
        } else {
            format!(
                "refused: {} is {what}, not a regular file; remove it",
                p.display()
            )
        };
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, msg));
    }
    Ok(())
}

fn user_version(c: &Connection) -> Result<i64, rusqlite::Error> {
    c.query_row("PRAGMA user_version", [], |r| r.get(0))
}

/// Opens `db` read-only and reads `user_version`. A reader of a WAL database must map the
/// `-shm` file and create it if it is missing; on a full file system that fails with
/// `SQLITE_IOERR`, on a read-only one with `SQLITE_CANTOPEN`. Then, if the file exists:
/// - with no `-wal` content (every row is in the main file) it is read as `immutable=1` (SQLite
///   URI parameter: no locks, no `-shm`);
/// - with rows in the `-wal` (op-agent keeps its WAL between runs), the main file and its
///   `-wal` are copied into a private folder under the temp dir and read there; nothing can
///   change them meanwhile on a read-only file system (on a full one, a writer could: the
///   copy is then a consistent snapshot of the moment it was taken, as SQLite's own recovery
///   would see it).
///
/// Used by `audit verify`, `log`, `head`, `export` and `status`.
pub fn open_read_only(db: &Path) -> Result<ReadOnlyDb, rusqlite::Error> {
    if let Err(e) = regular_or_absent(db) {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
            Some(e.to_string()),
        ));
    }
    let ro = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let first = Connection::open_with_flags(db, ro).and_then(|c| {
        let v = user_version(&c)?;
        Ok((c, v))
    });
    match first {
        Ok((conn, version)) => Ok(ReadOnlyDb {
            conn,
            version,
            copy: None,
        }),
        Err(rusqlite::Error::SqliteFailure(e, m))
            if matches!(
                e.code,
                rusqlite::ErrorCode::SystemIoFailure | rusqlite::ErrorCode::CannotOpen
            ) && db.is_file() =>
        {
            let mut wal = db.as_os_str().to_owned();
            wal.push("-wal");
            let wal = std::path::PathBuf::from(wal);
            let wal_empty = std::fs::metadata(&wal).map_or(true, |m| m.len() == 0);
            if wal_empty {
                let uri = format!("file:{}?mode=ro&immutable=1", db.display());
                let conn = Connection::open_with_flags(uri, ro | OpenFlags::SQLITE_OPEN_URI)?;
                let version = user_version(&conn)?;
                return Ok(ReadOnlyDb {
                    conn,
                    version,
                    copy: None,
                });
            }
            let Some(copy) = private_copy(db, &wal) else {
                return Err(rusqlite::Error::SqliteFailure(e, m));
            };
            let conn = Connection::open_with_flags(copy.0.join("audit.db"), ro)?;
            let version = user_version(&conn)?;
            Ok(ReadOnlyDb {
                conn,
                version,
                copy: Some(copy),
            })
        }
        Err(e) => Err(e),
    }
}

/// Copies `db` and `wal` as `audit.db` and `audit.db-wal` into a new 0700 folder under the
/// temp dir; `None` if that fails (the caller reports the original error).
fn private_copy(db: &Path, wal: &Path) -> Option<PrivateCopy> {
    use std::os::unix::fs::DirBuilderExt;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!("op-agent-audit-{}-{nanos}", std::process::id()));
    std::fs::DirBuilder::new().mode(0o700).create(&dir).ok()?;
    let copy = PrivateCopy(dir);
    std::fs::copy(db, copy.0.join("audit.db")).ok()?;
    std::fs::copy(wal, copy.0.join("audit.db-wal")).ok()?;
    Some(copy)
}

/// Verifies the database at `db`, opened read-only. `Err` only when it cannot be read
/// (missing, not a database, no `audit` table, unknown schema version, I/O error mid-way).
pub fn verify_db(db: &Path, opts: &VerifyOptions) -> Result<VerifyReport, VerifyError> {
    let dberr = |e| VerifyError::Db {
        path: db.to_path_buf(),
        source: e,
    };
    let r = open_read_only(db).map_err(dberr)?;
    let (c, v) = (&r.conn, r.version);
    if v != SCHEMA_VERSION {
        return Err(VerifyError::Schema {
            path: db.to_path_buf(),
            reason: format!("schema version {v}, expected {}", SCHEMA_VERSION),
        });
    }
    // One read transaction: a consistent snapshot while writers go on.
    c.execute_batch("BEGIN").map_err(dberr)?;
    let high_water: Option<i64> = c
        .query_row(
            "SELECT seq FROM sqlite_sequence WHERE name = 'audit'",
            [],
            |r| r.get(0),
        )
        .optional()
        .unwrap_or(None);
    let mut st = c
        .prepare(&format!("SELECT {COLUMNS} FROM audit ORDER BY seq"))
        .map_err(dberr)?;
    let mut succ = c
        .prepare("SELECT seq FROM audit WHERE prev_hash = ?1")
        .map_err(dberr)?;
    let mut lookup = |h: &[u8; 32]| -> Option<i64> { succ.query_row([&h[..]], |r| r.get(0)).ok() };
    let mut ver = Verifier::new(opts, 0);
    let mut rows = st.query([]).map_err(dberr)?;
    let mut row = StoredRow::default();
    while let Some(r) = rows.next().map_err(dberr)? {
        if let Err(col) = decode_row_into(r, &mut row) {
            ver.reject(r.get::<_, i64>(0).ok(), col);
            break;
        }
        if !ver.feed(&row, &mut lookup) {
            break;
        }
    }
    Ok(ver.finish(high_water))
}

/// The head row of the open database `c` (at `db`, for messages): `None` on an empty log.
/// Reads without checking the row's hash (`audit verify` does that).
///
/// # Errors
/// [`ReadError::Sqlite`]; [`ReadError::HeadHash`] when the stored hash is not 32 bytes.
pub fn read_head(c: &Connection, db: &Path) -> Result<Option<Head>, ReadError> {
    let r: Option<(i64, Vec<u8>)> = c
        .query_row(
            "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(|e| sqlite(db, e))?;
    match r {
        None => Ok(None),
        Some((seq, h)) => match <[u8; 32]>::try_from(h.as_slice()) {
            Ok(hash) => Ok(Some(Head { seq, hash })),
            Err(_) => Err(ReadError::HeadHash {
                path: db.to_path_buf(),
                seq,
                len: h.len(),
            }),
        },
    }
}

/// Which rows [`for_each_row`] reads, in `seq` order.
#[derive(Debug, Clone, Copy)]
pub enum Rows {
    /// Rows of guest `vmid` (all guests: `None`) with `ts` at or after `since_ms` (UTC ms since
    /// the Unix epoch; `None`: from the first row), as `audit log` prints them.
    Matching {
        /// Only rows of this guest.
        vmid: Option<u32>,
        /// Only rows at or after this time.
        since_ms: Option<i64>,
        /// Only rows with `seq` at or after this.
        from_seq: Option<i64>,
        /// Only rows with `seq` at or before this.
        to_seq: Option<i64>,
    },
    /// Rows with `seq` greater than this, as `audit export` writes them.
    After(i64),
}

/// Opens `db` with [`open_read_only`], mapping its error to [`ReadError::Open`].
pub fn open(db: &Path) -> Result<ReadOnlyDb, ReadError> {
    open_read_only(db).map_err(|source| ReadError::Open {
        path: db.to_path_buf(),
        source,
    })
}

/// Calls `each` with every row of `c` (the database at `db`) that `filter` selects, in `seq`
/// order; stops at the first error.
///
/// # Errors
/// [`ReadError::Sqlite`], [`ReadError::Column`] for a row [`decode_row`] rejects, and those
/// of `each`.
pub fn for_each_row(
    c: &Connection,
    db: &Path,
    filter: Rows,
    each: &mut dyn FnMut(&StoredRow) -> Result<(), ReadError>,
) -> Result<(), ReadError> {
    let mut st;
    let mut rows = match filter {
        Rows::Matching {
            vmid,
            since_ms,
            from_seq,
            to_seq,
        } => {
            st = c
                .prepare(&format!(
                    "SELECT {COLUMNS} FROM audit WHERE (?1 IS NULL OR vmid = ?1) AND (?2 IS NULL OR ts >= ?2) \
                     AND (?3 IS NULL OR seq >= ?3) AND (?4 IS NULL OR seq <= ?4) ORDER BY seq"
                ))
                .map_err(|e| sqlite(db, e))?;
            st.query(rusqlite::params![vmid, since_ms, from_seq, to_seq])
        }
        Rows::After(seq) => {
            st = c
                .prepare(&format!(
                    "SELECT {COLUMNS} FROM audit WHERE seq > ?1 ORDER BY seq"
                ))
                .map_err(|e| sqlite(db, e))?;
            st.query([seq])
        }
    }
    .map_err(|e| sqlite(db, e))?;
    while let Some(r) = rows.next().map_err(|e| sqlite(db, e))? {
        let row = decode_row(r).map_err(|column| ReadError::Column {
            path: db.to_path_buf(),
            column,
        })?;
        each(&row)?;
    }
    Ok(())
}

fn sqlite(db: &Path, source: rusqlite::Error) -> ReadError {
    ReadError::Sqlite {
        path: db.to_path_buf(),
        source,
    }
}
