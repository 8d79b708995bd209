//! The forward-secure checkpoint key: the key-file format (`op-agent-audit-key v1 epoch=N
//! key=HEX`), reading, locking and overwriting it, the ratchet to the next epoch, the
//! checkpoint row sealing a head, and [`init_key`]. The scheme is that of Schneier and
//! Kelsey, "Secure Audit Logs to Support Computer Forensics" (1999), as systemd-journald's
//! Forward Secure Sealing uses it; the MAC and ratchet bytes are in [`super::encoding`].

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use super::encoding;
use super::error::{sql_err, AuditError};
use super::store::{create_private_parent, insert_row, INSERT};
use super::{Head, NewRow, Outcome};

/// Opens and locks the key file `key_file` for a checkpoint; `None` when no key is configured
/// or the file does not exist.
pub(super) fn open_key(key_file: Option<&Path>) -> Result<Option<KeyHold>, AuditError> {
    let Some(kf) = key_file.map(Path::to_path_buf) else {
        return Ok(None);
    };
    match std::fs::metadata(&kf) {
        Ok(_) => {}
        // Absent: no key configured yet. A symlink to nothing (or a loop) is not absent:
        // reading it fails below, so the checkpoint is reported as not written.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if std::fs::symlink_metadata(&kf).is_err() {
                return Ok(None);
            }
            return Err(AuditError::Key {
                path: kf.clone(),
                reason: "a symlink to nothing; point it at the key file or remove it".into(),
            });
        }
        Err(e) => {
            return Err(AuditError::Io {
                op: "stat key",
                path: kf.clone(),
                source: e,
            })
        }
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
        .custom_flags(libc::O_NONBLOCK)
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

/// A key file opened and locked (`<key_file>.lock`) for one checkpoint.
pub(super) struct KeyHold {
    _lock: File,
    /// The key file, open read-write.
    pub(super) file: File,
    /// Its path.
    pub(super) path: PathBuf,
    epoch: u64,
    key: [u8; 32],
}

/// Inside `tx`, whose head is `head`: inserts the checkpoint row sealing `head` under the
/// key of the next epoch. Returns the new head and `(epoch + 1, ratcheted key)` to write to
/// the key file after the commit.
pub(super) fn insert_checkpoint(
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

/// `<key_file>.lock`, the file checkpointers lock.
fn lock_path_for(kf: &Path) -> PathBuf {
    let mut s = kf.as_os_str().to_os_string();
    s.push(".lock");
    PathBuf::from(s)
}

const KEY_MAGIC: &str = "op-agent-audit-key v1";

/// Formats a key file line: `op-agent-audit-key v1 epoch=<20 digits> key=<64 hex>\n`
/// (fixed length, 118 bytes, so a ratchet overwrites the old key in place).
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
    let m = f.metadata().map_err(|e| AuditError::Io {
        op: "stat key",
        path: path.to_path_buf(),
        source: e,
    })?;
    if !m.is_file() {
        return Err(kerr(
            "not a regular file (a FIFO, socket or device); a key file is one line in a \
             regular file"
                .into(),
        ));
    }
    if check_mode && m.permissions().mode() & 0o077 != 0 {
        return Err(kerr(format!(
            "mode {:04o} lets group/others read it; must be 0600 (root only)",
            m.permissions().mode() & 0o7777
        )));
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
    // Without blocking: a FIFO given as --key-file is refused by `read_key`, not waited on.
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path);
    if let Err(e) = &opened {
        // A socket cannot be opened (ENXIO): say what it is.
        if e.raw_os_error() == Some(libc::ENXIO) {
            return Err(AuditError::Key {
                path: path.to_path_buf(),
                reason: "not a regular file (a socket); a key file is one line in a regular file"
                    .into(),
            });
        }
    }
    let mut f = opened.map_err(|e| AuditError::Io {
        op: "open key",
        path: path.to_path_buf(),
        source: e,
    })?;
    read_key(&mut f, path, false)
}

/// Overwrites the key file `f` (at `path`) in place with `epoch` and `key`, then fsyncs it.
pub(super) fn write_key(
    f: &mut File,
    path: &Path,
    epoch: u64,
    key: &[u8; 32],
) -> Result<(), AuditError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::store::tests::row;
    use crate::audit::{verify, AuditLog, AuditOptions};
    use std::fs;

    fn db_conn(db: &Path) -> Connection {
        Connection::open(db).unwrap()
    }

    fn count(db: &Path) -> i64 {
        db_conn(db)
            .query_row("SELECT count(*) FROM audit", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn key_line_round_trips_and_bare_hex_is_epoch_0() {
        let k = [0x5a; 32];
        let line = format_key_line(7, &k);
        assert_eq!(line.len(), 118);
        assert_eq!(parse_key_text(&line), Some((7, k)));
        assert_eq!(parse_key_text(&encoding::hex(&k)), Some((0, k)));
        assert_eq!(parse_key_text("op-agent-audit-key v1 epoch=x key=00"), None);
    }

    /// A FIFO as the key file (or as `verify --key-file`) is refused with one line, never
    /// waited on, and never seeked ("Illegal seek").
    #[test]
    fn a_fifo_key_file_is_refused_without_blocking() {
        let d = tempfile::tempdir().unwrap();
        let kf = d.path().join("audit.key");
        let c = std::ffi::CString::new(kf.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        for e in [
            read_key_file(&kf).unwrap_err(),
            open_key(Some(&kf)).err().unwrap(),
        ] {
            let t = e.to_string();
            assert!(t.contains("not a regular file"), "{t}");
            assert_eq!(t.lines().count(), 1, "{t}");
        }
        // A dangling or looping symlink is not an absent key: the checkpoint is not written,
        // and says why (it was silently skipped).
        for target in ["/nonexistent/audit.key", "audit.key2"] {
            let l = d.path().join("audit.key2");
            let _ = fs::remove_file(&l);
            std::os::unix::fs::symlink(target, &l).unwrap();
            let e = open_key(Some(&l)).err().expect("refused");
            assert_eq!(e.to_string().lines().count(), 1, "{e}");
        }
        assert!(open_key(Some(&d.path().join("none"))).unwrap().is_none());
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
        let (phase, run, detail): (String, String, String) = db_conn(&db)
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
        let n = count(&db);
        let e = log.append_all_sealed(&[row("r3", "d")]).unwrap_err();
        assert!(matches!(e, AuditError::Key { .. }), "{e}");
        assert_eq!(count(&db), n + 1);
        // No key file: a plain append.
        fs::remove_file(&kf).unwrap();
        let h = log.append_all_sealed(&[row("r4", "e")]).unwrap();
        assert_eq!((h.seq, count(&db)), (n + 2, n + 2));
    }
}
