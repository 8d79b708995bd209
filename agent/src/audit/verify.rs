//! Streaming verification of the chain, from the database or from an export file.
//!
//! One pass in `seq` order, constant memory; it stops at the first failure and names the
//! first bad `seq`, the [`TamperClass`] and the last good head. Checks per row, in order:
//! `seq` continuity (gap), the row's own hash (content changed / reorder), the link to the
//! previous row (link broken), anchors at that `seq` (fork), checkpoint rows (epoch continuity
//! and, with the initial key, the HMAC). After the last row: anchors beyond the head (head older
//! than an anchor / missing rows after an anchor) and SQLite's `sqlite_sequence` high-water mark
//! (rows assigned but gone).

use std::io::BufRead;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::encoding::{self, RowFields, GENESIS};
use super::Head;

/// What kind of tampering was found. `as_str` gives the stable kebab-case name used in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TamperClass {
    /// A row's columns no longer hash to its stored `hash`.
    ContentChanged,
    /// A row's `prev_hash` is not the previous row's `hash` (a row altered and re-hashed).
    LinkBroken,
    /// `seq` values are missing (rows deleted).
    Gap,
    /// The row at an anchored `seq` has another hash: history was rewritten at or before it.
    Fork,
    /// A row carries the record of another position (rows swapped or moved).
    Reorder,
    /// The chain ends before an anchored `seq` (an older copy of the file).
    HeadOlderThanAnchor,
    /// The chain ends before an anchored `seq` and SQLite recorded higher `seq`s (rows deleted).
    MissingRowsAfterAnchor,
    /// A checkpoint row is malformed, out of epoch order, or its HMAC fails.
    BadCheckpoint,
}

impl TamperClass {
    /// Stable name: `content-changed`, `link-broken`, `gap`, `fork`, `reorder`,
    /// `head-older-than-anchor`, `missing-rows-after-anchor`, `bad-checkpoint`.
    pub fn as_str(self) -> &'static str {
        match self {
            TamperClass::ContentChanged => "content-changed",
            TamperClass::LinkBroken => "link-broken",
            TamperClass::Gap => "gap",
            TamperClass::Fork => "fork",
            TamperClass::Reorder => "reorder",
            TamperClass::HeadOlderThanAnchor => "head-older-than-anchor",
            TamperClass::MissingRowsAfterAnchor => "missing-rows-after-anchor",
            TamperClass::BadCheckpoint => "bad-checkpoint",
        }
    }
}

/// The first failure found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tamper {
    /// Failure class.
    pub class: TamperClass,
    /// First bad `seq` (for a gap: the first missing one; for anchor failures: the anchor's).
    pub seq: i64,
    /// Human-readable explanation naming the values compared.
    pub message: String,
    /// Last row known good: the previous row for row-local failures; for fork and bad
    /// checkpoint, the last head confirmed by an anchor or valid checkpoint. `None`: nothing.
    pub last_good: Option<Head>,
}

/// Result of a completed pass (the input could be read).
#[derive(Debug, Clone)]
pub struct VerifyReport {
    /// Rows read before stopping.
    pub rows: u64,
    /// Last row read that passed every check (the head when intact).
    pub head: Option<Head>,
    /// Checkpoint rows seen.
    pub checkpoints: u64,
    /// Whether checkpoint HMACs were checked (an initial key was given).
    pub checkpoints_keyed: bool,
    /// Rows after the last checkpoint (not sealed yet: runs in progress or interrupted).
    pub unsealed_rows: u64,
    /// Anchors compared with a row.
    pub anchors_matched: usize,
    /// `None`: intact.
    pub tamper: Option<Tamper>,
}

/// Inputs of a verification besides the rows.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Heads held outside the host (syslog collector), `SEQ:HASH`.
    pub anchors: Vec<Head>,
    /// The initial (epoch 0) checkpoint key, kept off the host.
    pub initial_key: Option<[u8; 32]>,
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

/// One row as read, owned.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredRow {
    /// Position.
    pub seq: i64,
    /// UTC ms.
    pub ts: i64,
    /// Host.
    pub host: String,
    /// Guest id.
    pub vmid: u32,
    /// Phase.
    pub phase: String,
    /// Run id.
    pub run_id: String,
    /// Step.
    pub step: String,
    /// Outcome text.
    pub outcome: String,
    /// Detail JSON text, exact stored bytes.
    pub detail: String,
    /// Previous hash, 32 bytes (hex in JSON).
    #[serde(with = "hex32")]
    pub prev_hash: [u8; 32],
    /// Stored hash, 32 bytes (hex in JSON).
    #[serde(with = "hex32")]
    pub hash: [u8; 32],
}

impl StoredRow {
    /// The hashed fields of this row.
    pub fn fields(&self) -> RowFields<'_> {
        RowFields {
            seq: self.seq,
            ts_ms: self.ts,
            host: &self.host,
            vmid: self.vmid,
            phase: &self.phase,
            run_id: &self.run_id,
            step: &self.step,
            outcome: &self.outcome,
            detail: &self.detail,
            prev_hash: &self.prev_hash,
        }
    }
}

mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::encoding::hex(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        super::encoding::unhex32(&s)
            .ok_or_else(|| serde::de::Error::custom("expected 64 hex digits"))
    }
}

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

/// Streaming verifier: feed rows in `seq` order, then [`Verifier::finish`].
pub struct Verifier {
    expected_seq: i64,
    prev: Option<Head>,
    before_prev: Option<Head>,
    anchors: Vec<Head>,
    next_anchor: usize,
    anchors_matched: usize,
    last_sealed: Option<Head>,
    key: Option<[u8; 32]>,
    keyed: bool,
    next_epoch: Option<u64>,
    rows: u64,
    checkpoints: u64,
    unsealed: u64,
    tamper: Option<Tamper>,
}

impl Verifier {
    /// A verifier for a chain that starts after `start` (`None`: from `seq` 1 and
    /// [`GENESIS`]). With `start_seq > 0` (partial export) the first row's `prev_hash` is taken
    /// as given and checkpoint epochs start at whatever the first checkpoint says.
    pub fn new(opts: &VerifyOptions, start_seq: i64) -> Verifier {
        let mut anchors = opts.anchors.clone();
        anchors.sort_by_key(|a| a.seq);
        anchors.dedup();
        let next_anchor = anchors.partition_point(|a| a.seq <= start_seq);
        Verifier {
            expected_seq: start_seq + 1,
            prev: if start_seq == 0 {
                Some(Head {
                    seq: 0,
                    hash: GENESIS,
                })
            } else {
                None
            },
            before_prev: None,
            anchors,
            next_anchor,
            anchors_matched: 0,
            last_sealed: None,
            key: opts.initial_key,
            keyed: opts.initial_key.is_some(),
            next_epoch: if start_seq == 0 { Some(0) } else { None },
            rows: 0,
            checkpoints: 0,
            unsealed: 0,
            tamper: None,
        }
    }

    fn last_good(&self) -> Option<Head> {
        self.prev.filter(|h| h.seq > 0)
    }

    fn fail(
        &mut self,
        class: TamperClass,
        seq: i64,
        message: String,
        last_good: Option<Head>,
    ) -> bool {
        self.tamper = Some(Tamper {
            class,
            seq,
            message,
            last_good,
        });
        false
    }

    /// Checks one row; `successor` looks up the `seq` of the row whose `prev_hash` equals a
    /// hash (used only to classify a failed row as reordered). Returns `false` once a failure
    /// was recorded (feed no more rows then).
    pub fn feed(
        &mut self,
        row: &StoredRow,
        successor: &mut dyn FnMut(&[u8; 32]) -> Option<i64>,
    ) -> bool {
        if self.tamper.is_some() {
            return false;
        }
        // 1. seq continuity.
        if row.seq != self.expected_seq {
            let lg = self.last_good();
            return if row.seq > self.expected_seq {
                self.fail(
                    TamperClass::Gap,
                    self.expected_seq,
                    format!(
                        "rows {}..={} are missing (next row present is seq {})",
                        self.expected_seq,
                        row.seq - 1,
                        row.seq
                    ),
                    lg,
                )
            } else {
                let class = if row.seq == self.expected_seq - 1 {
                    TamperClass::Fork
                } else {
                    TamperClass::Reorder
                };
                self.fail(
                    class,
                    row.seq,
                    format!(
                        "seq {} appears again after seq {}",
                        row.seq,
                        self.expected_seq - 1
                    ),
                    lg,
                )
            };
        }
        // 2. the row's own hash.
        let computed = encoding::row_hash(&row.fields());
        if computed != row.hash {
            let lg = self.last_good();
            if let Some(t) = successor(&row.hash) {
                let orig = t - 1;
                if orig != row.seq && orig >= 1 {
                    let mut f = row.fields();
                    f.seq = orig;
                    if encoding::row_hash(&f) == row.hash {
                        return self.fail(
                            TamperClass::Reorder,
                            row.seq,
                            format!("the row at seq {} carries the record of seq {} (rows swapped or moved)", row.seq, orig),
                            lg,
                        );
                    }
                }
            }
            return self.fail(
                TamperClass::ContentChanged,
                row.seq,
                format!(
                    "row seq {} hashes to {} but stores {}: a column was changed",
                    row.seq,
                    encoding::hex(&computed),
                    encoding::hex(&row.hash)
                ),
                lg,
            );
        }
        // 3. link to the previous row.
        match self.prev {
            Some(p) if p.hash != row.prev_hash => {
                // Row `seq` is self-consistent but does not point at its predecessor: the
                // predecessor was altered and re-hashed (or this row re-linked).
                let (bad, lg) = if p.seq >= 1 {
                    (p.seq, self.before_prev)
                } else {
                    (row.seq, None)
                };
                return self.fail(
                    TamperClass::LinkBroken,
                    bad,
                    format!(
                        "row seq {} links to prev_hash {} but row seq {} hashes to {}: row {} was altered and re-hashed, or row {} re-linked",
                        row.seq,
                        encoding::hex(&row.prev_hash),
                        p.seq,
                        encoding::hex(&p.hash),
                        p.seq,
                        row.seq
                    ),
                    lg,
                );
            }
            // No predecessor known: seq 1 has GENESIS as `prev`, so this is only the first row
            // of a partial export, whose link is taken as given.
            _ => {}
        }
        // 4. anchors at this seq.
        while self.next_anchor < self.anchors.len() && self.anchors[self.next_anchor].seq == row.seq
        {
            let a = self.anchors[self.next_anchor];
            if a.hash != row.hash {
                let lg = self.last_sealed;
                return self.fail(
                    TamperClass::Fork,
                    row.seq,
                    format!(
                        "anchor {} does not match the chain, which has {} at seq {}: history was rewritten at or before seq {}",
                        a,
                        encoding::hex(&row.hash),
                        row.seq,
                        row.seq
                    ),
                    lg,
                );
            }
            self.anchors_matched += 1;
            self.next_anchor += 1;
            self.last_sealed = Some(a);
        }
        // 5. checkpoint rows.
        if row.step == encoding::CHECKPOINT_STEP && row.phase == encoding::CHECKPOINT_PHASE {
            let lg = self.last_sealed;
            let Some(cp) = encoding::parse_checkpoint_detail(&row.detail) else {
                return self.fail(
                    TamperClass::BadCheckpoint,
                    row.seq,
                    format!("checkpoint row seq {} has a malformed detail", row.seq),
                    lg,
                );
            };
            if cp.head_seq != row.seq - 1 {
                return self.fail(
                    TamperClass::BadCheckpoint,
                    row.seq,
                    format!(
                        "checkpoint row seq {} claims to seal seq {}, not seq {}",
                        row.seq,
                        cp.head_seq,
                        row.seq - 1
                    ),
                    lg,
                );
            }
            match self.next_epoch {
                Some(e) if e != cp.epoch => {
                    return self.fail(
                        TamperClass::BadCheckpoint,
                        row.seq,
                        format!("checkpoint row seq {} has key epoch {}, expected {} (epochs run 0, 1, 2, … without gaps)", row.seq, cp.epoch, e),
                        lg,
                    );
                }
                Some(_) => {}
                None => {
                    // Partial export: derive the first epoch's key from the initial key.
                    if let Some(k) = self.key {
                        self.key = Some(encoding::key_for_epoch(&k, cp.epoch));
                    }
                }
            }
            if let Some(k) = self.key {
                let want = encoding::checkpoint_mac(&k, cp.epoch, cp.head_seq, &row.prev_hash);
                if want != cp.mac {
                    return self.fail(
                        TamperClass::BadCheckpoint,
                        row.seq,
                        format!(
                            "checkpoint row seq {} (epoch {}): HMAC does not match the sealed head {}:{}: the sealed segment was re-chained or the checkpoint forged",
                            row.seq,
                            cp.epoch,
                            cp.head_seq,
                            encoding::hex(&row.prev_hash)
                        ),
                        lg,
                    );
                }
                self.key = Some(encoding::ratchet(&k));
                self.last_sealed = Some(Head {
                    seq: row.seq,
                    hash: row.hash,
                });
            }
            self.next_epoch = Some(cp.epoch + 1);
            self.checkpoints += 1;
            self.unsealed = 0;
        } else {
            self.unsealed += 1;
        }
        self.before_prev = self.prev;
        self.prev = Some(Head {
            seq: row.seq,
            hash: row.hash,
        });
        self.expected_seq += 1;
        self.rows += 1;
        true
    }

    /// Ends the pass. `high_water` is the highest `seq` the store ever assigned
    /// (`sqlite_sequence`), when known.
    pub fn finish(mut self, high_water: Option<i64>) -> VerifyReport {
        if self.tamper.is_none() {
            let last = self.expected_seq - 1;
            let deleted = high_water.filter(|&h| h > last);
            if let Some(a) = self.anchors.get(self.next_anchor).copied() {
                let lg = self.last_good();
                let (class, why) = match deleted {
                    Some(h) => (
                        TamperClass::MissingRowsAfterAnchor,
                        format!(
                            "; SQLite assigned seq up to {h}: rows {}..={h} were deleted",
                            last + 1
                        ),
                    ),
                    None => (
                        TamperClass::HeadOlderThanAnchor,
                        String::from(": an older copy of the log"),
                    ),
                };
                self.fail(
                    class,
                    last + 1,
                    format!("chain ends at seq {last} but anchor {a} is beyond it{why}"),
                    lg,
                );
            } else if let Some(h) = deleted {
                let lg = self.last_good();
                self.fail(
                    TamperClass::Gap,
                    last + 1,
                    format!("chain ends at seq {last} but SQLite assigned seq up to {h}: rows {}..={h} were deleted", last + 1),
                    lg,
                );
            } else if self.keyed && self.checkpoints == 0 && self.rows > 0 {
                let lg = self.last_good();
                self.fail(
                    TamperClass::BadCheckpoint,
                    self.expected_seq - self.rows as i64,
                    "a key was given but the log holds no checkpoint row: nothing is sealed"
                        .to_string(),
                    lg,
                );
            }
        }
        VerifyReport {
            rows: self.rows,
            head: self.prev.filter(|h| h.seq > 0),
            checkpoints: self.checkpoints,
            checkpoints_keyed: self.keyed,
            unsealed_rows: self.unsealed,
            anchors_matched: self.anchors_matched,
            tamper: self.tamper,
        }
    }
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
    if v != super::SCHEMA_VERSION {
        return Err(VerifyError::Schema {
            path: db.to_path_buf(),
            reason: format!("schema version {v}, expected {}", super::SCHEMA_VERSION),
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
        match decode_row_into(r, &mut row) {
            Ok(()) => {}
            Err(col) => {
                let seq = r.get::<_, i64>(0).unwrap_or(ver.expected_seq);
                let lg = ver.last_good();
                ver.fail(
                    TamperClass::ContentChanged,
                    seq,
                    format!("row seq {seq}: column {col} has the wrong type or size"),
                    lg,
                );
                break;
            }
        };
        if !ver.feed(&row, &mut lookup) {
            break;
        }
    }
    Ok(ver.finish(high_water))
}

/// First line of an export.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportHeader {
    /// Always [`EXPORT_FORMAT`].
    pub format: String,
    /// Rows with `seq > since_seq` follow.
    pub since_seq: i64,
    /// Head of the log when exported (`SEQ:HASH`), `None` for an empty log.
    pub head: Option<String>,
    /// Host name of the exporting machine.
    pub host: String,
}

/// `format` value of an export header.
pub const EXPORT_FORMAT: &str = "op-agent-audit-export/v1";

/// Verifies an export (header line, then one [`StoredRow`] JSON object per line). The header's
/// head acts as an anchor, so a cut file shows as missing rows; rows of a partial export
/// (`since_seq > 0`) start from the first row's `prev_hash` as given.
pub fn verify_export(
    r: &mut dyn BufRead,
    path: &Path,
    opts: &VerifyOptions,
) -> Result<VerifyReport, VerifyError> {
    let xerr = |line: u64, reason: String| VerifyError::Export {
        path: path.to_path_buf(),
        line,
        reason,
    };
    let mut lines = r.lines();
    let first = match lines.next() {
        Some(Ok(l)) => l,
        Some(Err(e)) => return Err(xerr(1, e.to_string())),
        None => return Err(xerr(1, "empty file".into())),
    };
    let hdr: ExportHeader =
        serde_json::from_str(&first).map_err(|e| xerr(1, format!("not an export header: {e}")))?;
    if hdr.format != EXPORT_FORMAT {
        return Err(xerr(
            1,
            format!("format {:?}, expected {EXPORT_FORMAT:?}", hdr.format),
        ));
    }
    let mut o = opts.clone();
    if let Some(h) = &hdr.head {
        let h: Head = h.parse().map_err(|e| xerr(1, format!("{e}")))?;
        o.anchors.push(h);
    }
    let mut ver = Verifier::new(&o, hdr.since_seq);
    for (n, l) in (2u64..).zip(lines) {
        let l = l.map_err(|e| xerr(n, e.to_string()))?;
        if l.is_empty() {
            continue;
        }
        let row: StoredRow =
            serde_json::from_str(&l).map_err(|e| xerr(n, format!("not a row: {e}")))?;
        if !ver.feed(&row, &mut |_| None) {
            break;
        }
    }
    Ok(ver.finish(None))
}
