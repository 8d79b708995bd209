//! The chain store: [`AuditLog`] opens (and creates or migrates) the SQLite database, appends
//! rows inside `BEGIN IMMEDIATE` transactions, seals them with keyed checkpoints (the key side
//! is in [`super::key`]), reads the head and folds the WAL.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::encoding::{self, RowFields, GENESIS};
use super::error::{sql_err, AuditError};
use super::key::{insert_checkpoint, open_key, write_key};
use super::{now_ms, reader, Head, NewRow, SCHEMA_VERSION};

const SCHEMA_V1: &str = r#"
CREATE TABLE audit (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT CHECK (seq >= 1),
    ts        INTEGER NOT NULL,
    host      TEXT    NOT NULL,
    vmid      INTEGER NOT NULL CHECK (vmid BETWEEN 0 AND 4294967295),
    phase     TEXT    NOT NULL,
    run_id    TEXT    NOT NULL,
    step      TEXT    NOT NULL,
    outcome   TEXT    NOT NULL CHECK (outcome IN ('intent', 'ok', 'failed', 'skipped')),
    detail    TEXT    NOT NULL,
    prev_hash BLOB    NOT NULL UNIQUE CHECK (length(prev_hash) = 32),
    hash      BLOB    NOT NULL CHECK (length(hash) = 32)
) STRICT;
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'op-agent audit rows are append-only (UPDATE refused)'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'op-agent audit rows are append-only (DELETE refused)'); END;
"#;

/// Free space (bytes) the database's file system must have for [`AuditLog::fold_wal`] to run
/// besides four times the WAL: a fold grows the main file, and must not take the room the
/// run's outcome commit needs.
pub const FOLD_MIN_FREE_BYTES: u64 = 8 << 20;

/// Options of [`AuditLog::open`].
#[derive(Debug, Clone)]
pub struct AuditOptions {
    /// How long an append waits for another writer's lock before failing with
    /// [`AuditError::Busy`] (SQLite `busy_timeout`, ms resolution).
    pub busy_timeout: Duration,
    /// Host name recorded in every row.
    pub host: String,
    /// Key file for keyed checkpoints ([`AuditLog::checkpoint`]); `None` or a missing file
    /// means no checkpoints.
    pub key_file: Option<PathBuf>,
}

impl Default for AuditOptions {
    /// 5 s busy timeout, the kernel host name, no key file.
    fn default() -> AuditOptions {
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default();
        AuditOptions {
            busy_timeout: Duration::from_secs(5),
            host,
            key_file: None,
        }
    }
}

/// The append-only audit log of one database file.
pub struct AuditLog {
    conn: Connection,
    path: PathBuf,
    opts: AuditOptions,
    last_run_id: String,
}

impl fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Opens (creating if missing) the database at `db`: a missing parent directory is created
    /// with mode 0700 (an existing one is left as it is), a new file gets mode 0600;
    /// `journal_mode=WAL`, `synchronous=FULL`, `busy_timeout = opts.busy_timeout`; the schema is
    /// created or migrated forward (`user_version`, in a `BEGIN IMMEDIATE` transaction).
    ///
    /// Errors: [`AuditError::Io`] (directory/file), [`AuditError::ReadOnly`],
    /// [`AuditError::Busy`], [`AuditError::NotADatabase`], [`AuditError::UnsupportedSchema`].
    pub fn open(db: &Path, opts: &AuditOptions) -> Result<AuditLog, AuditError> {
        create_private_parent(db)?;
        reader::regular_or_absent(db).map_err(|source| AuditError::Io {
            op: "open",
            path: db.to_path_buf(),
            source,
        })?;
        if !db.exists() {
            // Create the file 0600 ourselves; SQLite gives -wal/-shm the main file's mode.
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(db)
            {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(AuditError::Io {
                        op: "create",
                        path: db.to_path_buf(),
                        source: e,
                    })
                }
            }
        }
        let t = opts.busy_timeout;
        let conn = Connection::open(db).map_err(|e| sql_err(db, "open", t, e))?;
        conn.busy_timeout(t)
            .map_err(|e| sql_err(db, "busy_timeout", t, e))?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(|e| sql_err(db, "journal_mode=WAL", t, e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(AuditError::Sqlite {
                path: db.to_path_buf(),
                op: "journal_mode=WAL",
                source: rusqlite::Error::InvalidParameterName(format!(
                    "journal_mode stayed {mode}"
                )),
            });
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(|e| sql_err(db, "synchronous=FULL", t, e))?;
        // Keep the WAL when the connection closes instead of checkpointing it into the main
        // file and deleting it. With SQLite's default a hook run paid six fsyncs on its
        // critical path (WAL re-created: header and directory; intent commit; outcome commit;
        // checkpoint on close: WAL and main file); now four when the run waits for
        // ovs-vswitchd (intent commit + the directory fsync SQLite does on a process's first
        // WAL sync; outcome commit + the header of the WAL starting over) and three otherwise.
        // A hook folds the WAL into the main file (`fold_wal`) while ovs-vswitchd releases a
        // port, so the main file is at most one run behind; SQLite's automatic checkpoint at
        // 1000 pages is the backstop for runs that never wait. Every SQLite reader (`audit
        // verify`, `export`, `status`) sees the rows still in the WAL; a copy of the file
        // alone does not (README: backups). bench/README.md, run 3, has the measurements.
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
            .map_err(|e| sql_err(db, "no checkpoint on close", t, e))?;
        let mut log = AuditLog {
            conn,
            path: db.to_path_buf(),
            opts: opts.clone(),
            last_run_id: String::new(),
        };
        log.migrate()?;
        Ok(log)
    }

    fn err(&self, op: &'static str, e: rusqlite::Error) -> AuditError {
        sql_err(&self.path, op, self.opts.busy_timeout, e)
    }

    fn migrate(&mut self) -> Result<(), AuditError> {
        let v: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| self.err("read user_version", e))?;
        if v == SCHEMA_VERSION {
            return Ok(());
        }
        if v > SCHEMA_VERSION {
            return Err(AuditError::UnsupportedSchema {
                path: self.path.clone(),
                found: v,
                supported: SCHEMA_VERSION,
            });
        }
        let (path, t) = (self.path.clone(), self.opts.busy_timeout);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| sql_err(&path, "begin migration", t, e))?;
        // Re-read under the write lock: another process may have migrated meanwhile.
        let v: i64 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| sql_err(&path, "read user_version", t, e))?;
        if v == 0 {
            tx.execute_batch(SCHEMA_V1)
                .map_err(|e| sql_err(&path, "create schema v1", t, e))?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)
                .map_err(|e| sql_err(&path, "set user_version", t, e))?;
        } else if v > SCHEMA_VERSION {
            return Err(AuditError::UnsupportedSchema {
                path,
                found: v,
                supported: SCHEMA_VERSION,
            });
        }
        tx.commit()
            .map_err(|e| sql_err(&path, "commit migration", t, e))
    }

    /// Prepares for the first append without taking the write lock: parses the schema,
    /// prepares (and caches) the statements an append runs, and reads the head row with its
    /// hash check, so those pages sit in SQLite's cache. Meant to run on another thread while
    /// the caller does other work (see [`crate::report::Recorder::new`]); an append re-reads
    /// and re-checks the head under the lock regardless.
    ///
    /// Errors: those of reading the head ([`AuditError::HeadTampered`], SQLite errors); the
    /// next append reports them again.
    pub fn warm_up(&self) -> Result<(), AuditError> {
        let t = self.opts.busy_timeout;
        self.conn
            .prepare_cached(INSERT)
            .map_err(|e| sql_err(&self.path, "prepare insert", t, e))?;
        read_head_checked(&self.conn, &self.path, t).map(|_| ())
    }

    /// Folds the WAL into the main file: `PRAGMA wal_checkpoint(PASSIVE)`, which never waits
    /// for readers or writers and copies what it can; the next commit starts the WAL over.
    /// A hook calls this while ovs-vswitchd releases a port, so the copy and its two fsyncs
    /// stay off its critical path (the commit that starts the WAL over pays one more fsync,
    /// for the WAL header). Skipped, returning `Ok(false)`, when the file system has less
    /// free space than [`FOLD_MIN_FREE_BYTES`] plus four times the WAL. Errors: those of
    /// SQLite's checkpoint (e.g. [`AuditError::DiskFull`]).
    pub fn fold_wal(&mut self) -> Result<bool, AuditError> {
        let mut wal = self.path.as_os_str().to_owned();
        wal.push("-wal");
        let wal_bytes = std::fs::metadata(&wal).map_or(0, |m| m.len());
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let free = nix::sys::statvfs::statvfs(dir).map_or(0, |v| {
            v.blocks_available().saturating_mul(v.fragment_size())
        });
        if free < FOLD_MIN_FREE_BYTES + 4 * wal_bytes {
            return Ok(false);
        }
        self.conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
            .map_err(|e| self.err("wal checkpoint", e))?;
        Ok(true)
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one row in its own `BEGIN IMMEDIATE` transaction and returns the new head.
    /// Errors as [`AuditLog::append_all`].
    pub fn append(&mut self, row: &NewRow) -> Result<Head, AuditError> {
        self.append_all(std::slice::from_ref(row))
    }

    /// Appends `rows` in order inside one `BEGIN IMMEDIATE` transaction (all or none) and
    /// returns the new head. With no rows it returns the current head (seq 0 and
    /// [`GENESIS`] on an empty log).
    ///
    /// Errors: [`AuditError::DetailNotJson`] before anything is written;
    /// [`AuditError::Busy`] when another writer holds the lock past `busy_timeout`;
    /// [`AuditError::ReadOnly`], [`AuditError::DiskFull`]; [`AuditError::HeadTampered`] when
    /// the head row fails its own hash check. On error no row is written.
    pub fn append_all(&mut self, rows: &[NewRow]) -> Result<Head, AuditError> {
        check_details(rows)?;
        let (path, t) = (self.path.clone(), self.opts.busy_timeout);
        let (tx, head) = begin_and_insert(&mut self.conn, &path, t, &self.opts.host, rows)?;
        tx.commit().map_err(|e| sql_err(&path, "commit", t, e))?;
        if let Some(last) = rows.last() {
            self.last_run_id = last.run_id.to_string();
        }
        Ok(head)
    }

    /// The newest row's position, `None` on an empty log. Reads without a write lock.
    pub fn head(&self) -> Result<Option<Head>, AuditError> {
        let r: Option<(i64, Vec<u8>)> = self
            .conn
            .query_row(
                "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.err("read head", e))?;
        Ok(r.map(|(seq, h)| Head {
            seq,
            hash: to32(&h),
        }))
    }

    /// Appends a keyed checkpoint row sealing the current head, then ratchets the key file
    /// forward and overwrites the old key in place. Returns `Ok(None)` (and writes nothing)
    /// when `opts.key_file` is `None` or does not exist.
    ///
    /// The row: `vmid` 0, `phase` `checkpoint`, `step` `audit.checkpoint`, `outcome` `ok`,
    /// `run_id` of this log's last append, `detail` `{"epoch":E,"head_seq":S,"mac":"hex"}` with
    /// `mac = HMAC-SHA256(K(E), …)` (see [`encoding::checkpoint_mac`]). Epochs in the chain are
    /// 0, 1, 2, … without gaps; a key file behind the log is ratcheted forward first (crash
    /// after commit), a key file ahead of it is an error ([`AuditError::Key`]: the log was
    /// rolled back or checkpoints were removed). Checkpointers serialise on `<key_file>.lock`.
    pub fn checkpoint(&mut self) -> Result<Option<Head>, AuditError> {
        let Some(mut kh) = open_key(self.opts.key_file.as_deref())? else {
            return Ok(None);
        };
        let (path, t) = (self.path.clone(), self.opts.busy_timeout);
        let run = self.last_run_id.clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| sql_err(&path, "begin immediate", t, e))?;
        let head = read_head_checked(&tx, &path, t)?;
        let (new_head, next) = insert_checkpoint(&tx, &kh, &head, &self.opts.host, &run, &path, t)?;
        tx.commit()
            .map_err(|e| sql_err(&path, "commit checkpoint", t, e))?;
        // Only now advance the key: a crash before this leaves the file behind the log,
        // which the next checkpoint repairs by ratcheting forward.
        write_key(&mut kh.file, &kh.path, next.0, &next.1)?;
        Ok(Some(new_head))
    }

    /// Appends `rows` and then the keyed checkpoint row of [`AuditLog::checkpoint`] sealing
    /// them, in ONE `BEGIN IMMEDIATE` transaction (one commit and fsync instead of two), then
    /// ratchets the key file. Returns the new head (the checkpoint row's). Without a key file
    /// this is [`AuditLog::append_all`].
    ///
    /// Errors: those of [`AuditLog::append_all`] (nothing written). A key file that cannot be
    /// read or does not fit the log ([`AuditError::Io`], [`AuditError::Key`]) does not cost
    /// the rows: they are appended alone, then that error is returned (as `append_all`
    /// followed by a failing `checkpoint` would).
    pub fn append_all_sealed(&mut self, rows: &[NewRow]) -> Result<Head, AuditError> {
        let mut kh = match open_key(self.opts.key_file.as_deref()) {
            Ok(Some(k)) => k,
            Ok(None) => return self.append_all(rows),
            Err(e) => {
                self.append_all(rows)?;
                return Err(e);
            }
        };
        check_details(rows)?;
        let (path, t) = (self.path.clone(), self.opts.busy_timeout);
        let run = rows
            .last()
            .map_or_else(|| self.last_run_id.clone(), |r| r.run_id.to_string());
        let (tx, head) = begin_and_insert(&mut self.conn, &path, t, &self.opts.host, rows)?;
        match insert_checkpoint(&tx, &kh, &head, &self.opts.host, &run, &path, t) {
            Ok((new_head, next)) => {
                tx.commit().map_err(|e| sql_err(&path, "commit", t, e))?;
                self.last_run_id = run;
                write_key(&mut kh.file, &kh.path, next.0, &next.1)?;
                Ok(new_head)
            }
            Err(e @ AuditError::Key { .. }) => {
                drop(tx); // rolls back; the rows go in without the seal
                drop(kh);
                self.append_all(rows)?;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }
}

/// Every row's `detail` must be JSON text ([`AuditError::DetailNotJson`] otherwise).
fn check_details(rows: &[NewRow]) -> Result<(), AuditError> {
    for r in rows {
        serde_json::from_str::<serde::de::IgnoredAny>(r.detail).map_err(|e| {
            AuditError::DetailNotJson {
                step: r.step.to_string(),
                source: e,
            }
        })?;
    }
    Ok(())
}

/// The statement inserting one row, all columns given.
pub(super) const INSERT: &str = "INSERT INTO audit (seq, ts, host, vmid, phase, run_id, step, outcome, detail, prev_hash, hash) \
                      VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";

/// `BEGIN IMMEDIATE` on `conn`, then `rows` chained after the head read under that lock.
/// Returns the open transaction (the caller commits, or adds a checkpoint row first) and the
/// new head.
fn begin_and_insert<'c>(
    conn: &'c mut Connection,
    path: &Path,
    t: Duration,
    host: &str,
    rows: &[NewRow],
) -> Result<(rusqlite::Transaction<'c>, Head), AuditError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| sql_err(path, "begin immediate", t, e))?;
    let mut head = read_head_checked(&tx, path, t)?;
    {
        let mut ins = tx
            .prepare_cached(INSERT)
            .map_err(|e| sql_err(path, "prepare insert", t, e))?;
        for r in rows {
            head = insert_row(&mut ins, &head, host, r, path, t)?;
        }
    }
    Ok((tx, head))
}

/// Inserts `r` after `head` with the statement `ins` ([`INSERT`]); returns the new head.
pub(super) fn insert_row(
    ins: &mut rusqlite::CachedStatement<'_>,
    head: &Head,
    host: &str,
    r: &NewRow,
    path: &Path,
    t: Duration,
) -> Result<Head, AuditError> {
    let seq = head.seq + 1;
    let ts = now_ms();
    let f = RowFields {
        seq,
        ts_ms: ts,
        host,
        vmid: r.vmid,
        phase: r.phase,
        run_id: r.run_id,
        step: r.step,
        outcome: r.outcome.as_str(),
        detail: r.detail,
        prev_hash: &head.hash,
    };
    let hash = encoding::row_hash(&f);
    ins.execute(params![
        seq,
        ts,
        host,
        r.vmid,
        r.phase,
        r.run_id,
        r.step,
        r.outcome.as_str(),
        r.detail,
        &head.hash[..],
        &hash[..]
    ])
    .map_err(|e| sql_err(path, "insert row", t, e))?;
    Ok(Head { seq, hash })
}

fn to32(v: &[u8]) -> [u8; 32] {
    let mut a = [0u8; 32];
    let n = v.len().min(32);
    a[..n].copy_from_slice(&v[..n]);
    a
}

/// Reads the head row in full and recomputes its hash; an empty log gives seq 0 / GENESIS.
fn read_head_checked(c: &Connection, path: &Path, t: Duration) -> Result<Head, AuditError> {
    let mut st = c
        .prepare_cached(
            "SELECT seq, ts, host, vmid, phase, run_id, step, outcome, detail, prev_hash, hash \
             FROM audit ORDER BY seq DESC LIMIT 1",
        )
        .map_err(|e| sql_err(path, "prepare head", t, e))?;
    let mut rows = st.query([]).map_err(|e| sql_err(path, "read head", t, e))?;
    let Some(r) = rows.next().map_err(|e| sql_err(path, "read head", t, e))? else {
        return Ok(Head {
            seq: 0,
            hash: GENESIS,
        });
    };
    let seq: i64 = r.get(0).map_err(|e| sql_err(path, "read head", t, e))?;
    let tampered = || AuditError::HeadTampered {
        path: path.to_path_buf(),
        seq,
    };
    let row = reader::decode_row(r).map_err(|_| tampered())?;
    if encoding::row_hash(&row.fields()) != row.hash {
        return Err(tampered());
    }
    Ok(Head {
        seq,
        hash: row.hash,
    })
}

/// Creates the missing parent directory of `path` with mode 0700 (an existing one is left as
/// it is).
pub(super) fn create_private_parent(path: &Path) -> Result<(), AuditError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| AuditError::Io {
                    op: "create directory",
                    path: dir.to_path_buf(),
                    source: e,
                })?;
        }
    }
    Ok(())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::audit::Outcome;

    /// A row of run `run` and step `step` (guest 100, outcome ok, detail `{}`).
    pub(in crate::audit) fn row<'a>(run: &'a str, step: &'a str) -> NewRow<'a> {
        NewRow {
            vmid: 100,
            phase: "post-start",
            run_id: run,
            step,
            outcome: Outcome::Ok,
            detail: "{}",
        }
    }

    fn count(log: &AuditLog) -> i64 {
        log.conn
            .query_row("SELECT count(*) FROM audit", [], |r| r.get(0))
            .unwrap()
    }

    /// Rows in the main database file alone (a copy without its `-wal`), i.e. what a backup
    /// of `audit.db` by itself would hold.
    fn rows_in_main_file(db: &Path) -> i64 {
        let d = tempfile::tempdir().unwrap();
        let copy = d.path().join("copy.db");
        std::fs::copy(db, &copy).unwrap();
        let c = Connection::open(&copy).unwrap();
        c.query_row("SELECT count(*) FROM audit", [], |r| r.get(0))
            .unwrap_or(0)
    }

    /// Closing keeps the WAL (no checkpoint on the way out); any reader still sees every row;
    /// `fold_wal` copies the WAL into the main file.
    #[test]
    fn wal_survives_close_and_fold_moves_it_into_the_main_file() {
        let d = tempfile::tempdir().unwrap();
        let db = d.path().join("audit.db");
        let opts = AuditOptions::default();
        {
            let mut log = AuditLog::open(&db, &opts).unwrap();
            log.append_all(&[row("r1", "a"), row("r1", "b")]).unwrap();
        }
        let wal = d.path().join("audit.db-wal");
        assert!(wal.exists(), "the WAL is kept on close");
        assert!(std::fs::metadata(&wal).unwrap().len() > 0);
        // A new connection (another hook) and a read-only verifier see both rows.
        let mut log = AuditLog::open(&db, &opts).unwrap();
        assert_eq!(count(&log), 2);
        let v = crate::audit::verify::verify_db(&db, &Default::default()).unwrap();
        assert_eq!(v.rows, 2, "{v:?}");
        // Not folded yet: the main file alone lacks the rows (and the schema).
        assert_eq!(rows_in_main_file(&db), 0);
        // Folding moves them into the main file; the WAL starts over with the next commit.
        assert!(log.fold_wal().unwrap());
        assert_eq!(rows_in_main_file(&db), 2);
        log.append_all(&[row("r2", "c")]).unwrap();
        assert_eq!(count(&log), 3);
        assert_eq!(rows_in_main_file(&db), 2);
    }
}
