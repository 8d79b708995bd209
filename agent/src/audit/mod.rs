//! Tamper-evident audit chain in SQLite (issue 3).
//!
//! Every hook step is one row of the table `audit`; each row's `hash` is SHA-256 over a
//! versioned, domain-separated, length-prefixed encoding of all its columns and `prev_hash`
//! (see `README-encoding.md` beside this file and [`encoding`]). Appends read the head and
//! insert inside one `BEGIN IMMEDIATE` transaction, so concurrent hook processes never fork
//! the chain (`UNIQUE(prev_hash)` and `seq = head + 1` enforce it a second time).
//! When a key file exists, [`AuditLog::checkpoint`] appends a row carrying an HMAC-SHA256 of
//! the head under the current epoch key and ratchets the key forward (Schneier–Kelsey /
//! journald FSS style forward security). [`verify`] streams the chain and names the first bad
//! row; [`cli`] is the `op-agent audit …` command set.
//!
//! The module knows nothing of Proxmox: `vmid`, `phase` and `step` are plain fields.

pub mod cli;
pub mod encoding;
pub mod verify;

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::config::DbConfig;
use rusqlite::{params, Connection, ErrorCode, OptionalExtension, TransactionBehavior};

use encoding::{RowFields, GENESIS};

/// Schema version stored in `PRAGMA user_version` by this code.
pub const SCHEMA_VERSION: i64 = 1;

/// Default database path (the `[audit] database` key of agent.toml overrides it).
pub const DEFAULT_DB: &str = "/var/lib/op-agent/audit.db";
/// Default key file path for keyed checkpoints.
pub const DEFAULT_KEY_FILE: &str = "/etc/op-agent/audit.key";

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

/// Outcome of a step, stored as text in the `outcome` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Written before a run changes anything (write-ahead).
    Intent,
    /// The step succeeded.
    Ok,
    /// The step failed.
    Failed,
    /// The step was not needed or not attempted.
    Skipped,
}

impl Outcome {
    /// `"intent"`, `"ok"`, `"failed"` or `"skipped"`: the stored and hashed text.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Intent => "intent",
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
            Outcome::Skipped => "skipped",
        }
    }
}

/// A row to append; `seq`, `ts`, `host`, `prev_hash` and `hash` are filled in by
/// [`AuditLog::append`].
#[derive(Debug, Clone, Copy)]
pub struct NewRow<'a> {
    /// Guest id (0 for host-wide rows).
    pub vmid: u32,
    /// Hook phase, e.g. `post-start`.
    pub phase: &'a str,
    /// Id of the hook run, from [`run_id`].
    pub run_id: &'a str,
    /// Step name, e.g. `ovs.add-port`.
    pub step: &'a str,
    /// Outcome of the step.
    pub outcome: Outcome,
    /// JSON text (must parse as JSON), stored and hashed as these exact bytes.
    pub detail: &'a str,
}

/// A chain position: `seq` and the 32-byte `hash` of that row.
/// Displays and parses as `seq:hex-hash` (64 lowercase hex digits), the syslog anchor form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Sequence number, 1-based.
    pub seq: i64,
    /// SHA-256 row hash.
    pub hash: [u8; 32],
}

impl fmt::Display for Head {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.seq, encoding::hex(&self.hash))
    }
}

/// Error of [`Head::from_str`]: the text that is not `SEQ:HASH`.
#[derive(Debug, thiserror::Error)]
#[error("anchor {0:?} is not SEQ:HASH (seq >= 1, 64 hex digits)")]
pub struct HeadParseError(pub String);

impl FromStr for Head {
    type Err = HeadParseError;
    fn from_str(s: &str) -> Result<Head, HeadParseError> {
        let bad = || HeadParseError(s.to_string());
        let (a, b) = s.trim().split_once(':').ok_or_else(bad)?;
        let seq: i64 = a.parse().map_err(|_| bad())?;
        if seq < 1 {
            return Err(bad());
        }
        let hash = encoding::unhex32(b).ok_or_else(bad)?;
        Ok(Head { seq, hash })
    }
}

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

/// Errors of the audit log. Each quotes the file involved; SQLite's own message is kept as
/// the source.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// Creating the directory or file, or reading/writing the key file failed.
    #[error("audit: {op} {path}: {source}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// File or directory involved.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// Another writer held the lock longer than `busy_timeout` (SQLITE_BUSY / SQLITE_LOCKED).
    #[error("audit database {path} is locked: waited {timeout_ms} ms for another writer ({op})")]
    Busy {
        /// Database path.
        path: PathBuf,
        /// The configured busy timeout in ms.
        timeout_ms: u128,
        /// What was attempted.
        op: &'static str,
    },
    /// The database or its directory is read-only (SQLITE_READONLY, EROFS, EACCES).
    #[error("audit database {path} is read-only ({op}): {source}")]
    ReadOnly {
        /// Database path.
        path: PathBuf,
        /// What was attempted.
        op: &'static str,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// The disk is full (SQLITE_FULL).
    #[error("audit database {path}: disk full ({op})")]
    DiskFull {
        /// Database path.
        path: PathBuf,
        /// What was attempted.
        op: &'static str,
    },
    /// The file is not an SQLite database (SQLITE_NOTADB) or is corrupt (SQLITE_CORRUPT).
    #[error("audit database {path} is not a database or is corrupt ({op}): {source}")]
    NotADatabase {
        /// Database path.
        path: PathBuf,
        /// What was attempted.
        op: &'static str,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// `user_version` is newer than this code knows.
    #[error(
        "audit database {path} has schema version {found}; this op-agent knows up to {supported}"
    )]
    UnsupportedSchema {
        /// Database path.
        path: PathBuf,
        /// `PRAGMA user_version` found.
        found: i64,
        /// [`SCHEMA_VERSION`].
        supported: i64,
    },
    /// The head row does not hash to its stored hash: appending would extend a forgery.
    #[error("audit database {path}: head row seq {seq} fails its hash check; refusing to append (run `op-agent audit verify`)")]
    HeadTampered {
        /// Database path.
        path: PathBuf,
        /// `seq` of the head row.
        seq: i64,
    },
    /// A row's `detail` is not JSON text.
    #[error("audit row for step {step:?}: detail is not JSON: {source}")]
    DetailNotJson {
        /// Step of the rejected row.
        step: String,
        /// Parser error.
        source: serde_json::Error,
    },
    /// The key file is malformed, has group/other permissions, or is ahead of the log.
    #[error("audit key file {path}: {reason}")]
    Key {
        /// Key file path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Any other SQLite error.
    #[error("audit database {path}: {op}: {source}")]
    Sqlite {
        /// Database path.
        path: PathBuf,
        /// What was attempted.
        op: &'static str,
        /// SQLite's error.
        source: rusqlite::Error,
    },
}

/// Maps a rusqlite error to the typed [`AuditError`] variant for `path`.
pub(crate) fn sql_err(
    path: &Path,
    op: &'static str,
    timeout: Duration,
    e: rusqlite::Error,
) -> AuditError {
    let path = path.to_path_buf();
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy) | Some(ErrorCode::DatabaseLocked) => AuditError::Busy {
            path,
            timeout_ms: timeout.as_millis(),
            op,
        },
        Some(ErrorCode::ReadOnly) | Some(ErrorCode::PermissionDenied) => AuditError::ReadOnly {
            path,
            op,
            source: e,
        },
        // SQLITE_CANTOPEN on an existing file: the -wal/-shm files cannot be created beside it.
        Some(ErrorCode::CannotOpen) if dir_not_writable(&path) => AuditError::ReadOnly {
            path,
            op,
            source: e,
        },
        Some(ErrorCode::DiskFull) => AuditError::DiskFull { path, op },
        Some(ErrorCode::NotADatabase) | Some(ErrorCode::DatabaseCorrupt) => {
            AuditError::NotADatabase {
                path,
                op,
                source: e,
            }
        }
        _ => AuditError::Sqlite {
            path,
            op,
            source: e,
        },
    }
}

fn dir_not_writable(db: &Path) -> bool {
    let dir = match db.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK).is_err()
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

/// Current UTC time in ms since the Unix epoch (0 if the clock is before 1970).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
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
        let Some(mut kh) = self.open_key()? else {
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
        let mut kh = match self.open_key() {
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

    /// Opens and locks the key file for a checkpoint; `None` when no key is configured or
    /// the file does not exist.
    fn open_key(&self) -> Result<Option<KeyHold>, AuditError> {
        let Some(kf) = self.opts.key_file.clone() else {
            return Ok(None);
        };
        if !kf.exists() {
            return Ok(None);
        }
        let lock_path = lock_path_for(&kf);
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| AuditError::Io {
                op: "open lock",
                path: lock_path.clone(),
                source: e,
            })?;
        lock.lock().map_err(|e| AuditError::Io {
            op: "lock",
            path: lock_path.clone(),
            source: e,
        })?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&kf)
            .map_err(|e| AuditError::Io {
                op: "open key",
                path: kf.clone(),
                source: e,
            })?;
        let (epoch, key) = read_key(&mut file, &kf, true)?;
        Ok(Some(KeyHold {
            _lock: lock,
            file,
            path: kf,
            epoch,
            key,
        }))
    }
}

/// A key file opened and locked (`<key_file>.lock`) for one checkpoint.
struct KeyHold {
    _lock: File,
    file: File,
    path: PathBuf,
    epoch: u64,
    key: [u8; 32],
}

/// Inside `tx`, whose head is `head`: inserts the checkpoint row sealing `head` under the
/// key of the next epoch. Returns the new head and `(epoch + 1, ratcheted key)` to write to
/// the key file after the commit.
fn insert_checkpoint(
    tx: &Connection,
    kh: &KeyHold,
    head: &Head,
    host: &str,
    run_id: &str,
    path: &Path,
    t: Duration,
) -> Result<(Head, (u64, [u8; 32])), AuditError> {
    let kf = &kh.path;
    let last: Option<String> = tx
        .query_row(
            "SELECT detail FROM audit WHERE step = ?1 AND phase = ?2 ORDER BY seq DESC LIMIT 1",
            params![encoding::CHECKPOINT_STEP, encoding::CHECKPOINT_PHASE],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| sql_err(path, "read last checkpoint", t, e))?;
    let want =
        match last {
            None => 0,
            Some(d) => match encoding::parse_checkpoint_detail(&d) {
                Some(c) => c.epoch + 1,
                None => return Err(AuditError::Key {
                    path: kf.clone(),
                    reason:
                        "the log's last checkpoint row is malformed (run `op-agent audit verify`)"
                            .into(),
                }),
            },
        };
    if kh.epoch > want {
        return Err(AuditError::Key {
            path: kf.clone(),
            reason: format!(
                "key is at epoch {} but the log's next checkpoint epoch is {want}: \
                 the log was rolled back or checkpoint rows were removed",
                kh.epoch
            ),
        });
    }
    let mut key = kh.key;
    for _ in kh.epoch..want {
        key = encoding::ratchet(&key);
    }
    let mac = encoding::checkpoint_mac(&key, want, head.seq, &head.hash);
    let detail = encoding::checkpoint_detail(want, head.seq, &mac);
    let row = NewRow {
        vmid: 0,
        phase: encoding::CHECKPOINT_PHASE,
        run_id,
        step: encoding::CHECKPOINT_STEP,
        outcome: Outcome::Ok,
        detail: &detail,
    };
    let mut ins = tx
        .prepare_cached(INSERT)
        .map_err(|e| sql_err(path, "prepare insert", t, e))?;
    let new_head = insert_row(&mut ins, head, host, &row, path, t)?;
    Ok((new_head, (want + 1, encoding::ratchet(&key))))
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

const INSERT: &str = "INSERT INTO audit (seq, ts, host, vmid, phase, run_id, step, outcome, detail, prev_hash, hash) \
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

fn insert_row(
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
    let row = verify::decode_row(r).map_err(|_| tampered())?;
    if encoding::row_hash(&row.fields()) != row.hash {
        return Err(tampered());
    }
    Ok(Head {
        seq,
        hash: row.hash,
    })
}

/// `<key_file>.lock`, the file checkpointers lock.
fn lock_path_for(kf: &Path) -> PathBuf {
    let mut s = kf.as_os_str().to_os_string();
    s.push(".lock");
    PathBuf::from(s)
}

const KEY_MAGIC: &str = "op-agent-audit-key v1";

/// Formats a key file line: `op-agent-audit-key v1 epoch=<20 digits> key=<64 hex>\n`
/// (fixed length, 114 bytes, so a ratchet overwrites the old key in place).
pub fn format_key_line(epoch: u64, key: &[u8; 32]) -> String {
    format!("{KEY_MAGIC} epoch={epoch:020} key={}\n", encoding::hex(key))
}

/// Parses a key file's text: the [`format_key_line`] form, or a bare 64-hex-digit key
/// (epoch 0, the form an admin keeps off the host). Returns `(epoch, key)`.
pub fn parse_key_text(text: &str) -> Option<(u64, [u8; 32])> {
    let t = text.trim();
    if let Some(k) = encoding::unhex32(t) {
        return Some((0, k));
    }
    let rest = t.strip_prefix(KEY_MAGIC)?.trim_start();
    let rest = rest.strip_prefix("epoch=")?;
    let (e, rest) = rest.split_once(' ')?;
    let epoch: u64 = e.parse().ok()?;
    let k = encoding::unhex32(rest.trim_start().strip_prefix("key=")?)?;
    Some((epoch, k))
}

fn read_key(f: &mut File, path: &Path, check_mode: bool) -> Result<(u64, [u8; 32]), AuditError> {
    let kerr = |reason: String| AuditError::Key {
        path: path.to_path_buf(),
        reason,
    };
    if check_mode {
        let m = f.metadata().map_err(|e| AuditError::Io {
            op: "stat key",
            path: path.to_path_buf(),
            source: e,
        })?;
        if m.permissions().mode() & 0o077 != 0 {
            return Err(kerr(format!(
                "mode {:04o} lets group/others read it; must be 0600 (root only)",
                m.permissions().mode() & 0o7777
            )));
        }
    }
    let mut s = String::new();
    f.seek(SeekFrom::Start(0))
        .and_then(|_| f.take(4096).read_to_string(&mut s))
        .map_err(|e| AuditError::Io {
            op: "read key",
            path: path.to_path_buf(),
            source: e,
        })?;
    parse_key_text(&s).ok_or_else(|| {
        kerr(format!(
            "not a key file (expected `{KEY_MAGIC} epoch=N key=HEX` or 64 hex digits)"
        ))
    })
}

/// Reads an initial (epoch 0) or later key from `path`. Used by `verify --key-file`.
pub fn read_key_file(path: &Path) -> Result<(u64, [u8; 32]), AuditError> {
    let mut f = File::open(path).map_err(|e| AuditError::Io {
        op: "open key",
        path: path.to_path_buf(),
        source: e,
    })?;
    read_key(&mut f, path, false)
}

fn write_key(f: &mut File, path: &Path, epoch: u64, key: &[u8; 32]) -> Result<(), AuditError> {
    let line = format_key_line(epoch, key);
    let io = |e| AuditError::Io {
        op: "overwrite key",
        path: path.to_path_buf(),
        source: e,
    };
    f.seek(SeekFrom::Start(0)).map_err(io)?;
    f.write_all(line.as_bytes()).map_err(io)?;
    f.set_len(line.len() as u64).map_err(io)?;
    f.sync_all().map_err(io)
}

/// Creates the missing parent directory of `path` with mode 0700 (an existing one is left as
/// it is).
fn create_private_parent(path: &Path) -> Result<(), AuditError> {
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

/// Creates a new key file at `path` (mode 0600, parent directory 0700 if missing) holding a
/// fresh 32-byte key from `/dev/urandom` at epoch 0, and returns that initial key.
/// Errors: [`AuditError::Io`] (e.g. `AlreadyExists`: an existing key is never replaced).
pub fn init_key(path: &Path) -> Result<[u8; 32], AuditError> {
    create_private_parent(path)?;
    let mut key = [0u8; 32];
    File::open("/dev/urandom")
        .and_then(|mut u| u.read_exact(&mut key))
        .map_err(|e| AuditError::Io {
            op: "read",
            path: PathBuf::from("/dev/urandom"),
            source: e,
        })?;
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| AuditError::Io {
            op: "create key",
            path: path.to_path_buf(),
            source: e,
        })?;
    write_key(&mut f, path, 0, &key)?;
    Ok(key)
}

/// A new id for one hook run: `<ms since epoch, hex>-<pid>-<8 random bytes, hex>`, e.g.
/// `19ad2f3c1a0-4242-9f1c0e7d2b3a4c5d`. Falls back to a process counter and the clock's
/// nanoseconds when `/dev/urandom` cannot be read.
pub fn run_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut r = [0u8; 8];
    if File::open("/dev/urandom")
        .and_then(|mut u| u.read_exact(&mut r))
        .is_err()
    {
        let n = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let c = COUNTER.fetch_add(1, Ordering::Relaxed);
        r = ((n as u64) << 32 | (c & 0xffff_ffff)).to_be_bytes();
    }
    format!(
        "{:x}-{}-{}",
        now_ms(),
        std::process::id(),
        encoding::hex(&r)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row<'a>(run: &'a str, step: &'a str) -> NewRow<'a> {
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

    /// The outcome rows and the checkpoint sealing them land in one transaction; the chain
    /// verifies with the initial key; a key ahead of the log still lets the rows in.
    #[test]
    fn append_all_sealed_seals_in_one_transaction_and_never_loses_rows() {
        let d = tempfile::tempdir().unwrap();
        let db = d.path().join("audit.db");
        let kf = d.path().join("audit.key");
        let k0 = init_key(&kf).unwrap();
        let opts = AuditOptions {
            key_file: Some(kf.clone()),
            ..AuditOptions::default()
        };
        let mut log = AuditLog::open(&db, &opts).unwrap();
        log.warm_up().unwrap();
        let h = log
            .append_all_sealed(&[row("r1", "a"), row("r1", "b")])
            .unwrap();
        assert_eq!(h.seq, 3);
        let (phase, run, detail): (String, String, String) = log
            .conn
            .query_row(
                "SELECT phase, run_id, detail FROM audit WHERE seq = 3",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!((phase.as_str(), run.as_str()), ("checkpoint", "r1"));
        let cp = encoding::parse_checkpoint_detail(&detail).unwrap();
        assert_eq!((cp.epoch, cp.head_seq), (0, 2));
        assert_eq!(read_key_file(&kf).unwrap().0, 1);
        log.append_all_sealed(&[row("r2", "c")]).unwrap();
        assert_eq!(read_key_file(&kf).unwrap().0, 2);
        let rep = verify::verify_db(
            &db,
            &verify::VerifyOptions {
                anchors: vec![],
                initial_key: Some(k0),
            },
        )
        .unwrap();
        assert!(rep.tamper.is_none(), "{:?}", rep.tamper);
        assert_eq!((rep.rows, rep.checkpoints, rep.unsealed_rows), (5, 2, 0));
        // A key ahead of the log: no seal, but the run's rows are appended.
        fs::write(&kf, format_key_line(9, &encoding::key_for_epoch(&k0, 9))).unwrap();
        let n = count(&log);
        let e = log.append_all_sealed(&[row("r3", "d")]).unwrap_err();
        assert!(matches!(e, AuditError::Key { .. }), "{e}");
        assert_eq!(count(&log), n + 1);
        // No key file: a plain append.
        fs::remove_file(&kf).unwrap();
        let h = log.append_all_sealed(&[row("r4", "e")]).unwrap();
        assert_eq!((h.seq, count(&log)), (n + 2, n + 2));
    }
}
