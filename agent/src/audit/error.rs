//! The errors of the audit module: [`AuditError`] for the writer ([`super::AuditLog`], the key
//! file), [`VerifyError`] for a verification whose input cannot be read, and [`ReadError`] for
//! the read-only row readers of `audit log`, `head` and `export`. Each names the file involved
//! and keeps SQLite's, the OS's or the parser's error as its source.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::ErrorCode;

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
        /// [`super::SCHEMA_VERSION`].
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

/// The input cannot be read (exit code 2 of `audit verify`), as opposed to tampering.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// SQLite could not open or read the file (missing, not a database, I/O error).
    #[error("cannot read audit database {path}: {source}")]
    Db {
        /// Database path.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// The database has no `audit` table or an unknown `user_version`.
    #[error("audit database {path}: {reason}")]
    Schema {
        /// Database path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The export file cannot be read or a line is not the export format.
    #[error("export {path} line {line}: {reason}")]
    Export {
        /// Export path.
        path: PathBuf,
        /// 1-based line number (0: whole file).
        line: u64,
        /// What is wrong.
        reason: String,
    },
}

/// The database cannot be read for `audit log`, `head` or `export`, or the output cannot be
/// written. The texts are those `op-agent audit` prints after `op-agent audit: `.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The database cannot be opened read-only ([`super::reader::open_read_only`]).
    #[error("cannot open audit database {path}: {source}")]
    Open {
        /// Database path.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// A query failed.
    #[error("{path}: {source}")]
    Sqlite {
        /// Database path.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// A column has the wrong type or size ([`super::reader::decode_row`]).
    #[error("{path}: column {column} unreadable")]
    Column {
        /// Database path.
        path: PathBuf,
        /// Column name.
        column: &'static str,
    },
    /// The head row's hash is not 32 bytes.
    #[error("{path}: head row seq {seq} has a hash of {len} bytes")]
    HeadHash {
        /// Database path.
        path: PathBuf,
        /// `seq` of the head row.
        seq: i64,
        /// Length of its stored hash in bytes.
        len: usize,
    },
    /// Writing the output failed.
    #[error(transparent)]
    Write(#[from] std::io::Error),
    /// A row or header could not be serialised as JSON.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}
