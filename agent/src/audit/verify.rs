//! The streaming verifier of the chain: a pure state machine ([`Verifier`]) fed
//! [`StoredRow`]s in `seq` order, from the database ([`reader::verify_db`]) or from an export
//! file ([`export::verify_export`]).
//!
//! One pass in `seq` order, constant memory; it stops at the first failure and names the
//! first bad `seq`, the [`TamperClass`] and the last good head. Checks per row, in order:
//! `seq` continuity (gap), the row's own hash (content changed / reorder), the link to the
//! previous row (link broken), anchors at that `seq` (fork), checkpoint rows (epoch continuity
//! and, with the initial key, the HMAC). After the last row: anchors beyond the head (head older
//! than an anchor / missing rows after an anchor) and SQLite's `sqlite_sequence` high-water mark
//! (rows assigned but gone).
//!
//! [`reader::verify_db`]: super::reader::verify_db
//! [`export::verify_export`]: super::export::verify_export

use super::encoding::{self, GENESIS};
use super::Head;

// Moved to their own modules; re-exported here, where callers found them first.
#[doc(no_inline)]
pub use super::error::VerifyError;
#[doc(no_inline)]
pub use super::export::{verify_export, ExportHeader, EXPORT_FORMAT};
#[doc(no_inline)]
pub use super::reader::{
    decode_row, decode_row_into, open_read_only, verify_db, ReadOnlyDb, COLUMNS,
};
#[doc(no_inline)]
pub use super::StoredRow;

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
    /// Rows whose `ts` is more than [`CLOCK_TOLERANCE_MS`] before the latest `ts` of an
    /// earlier row: the clock was set back (or wrong) when they were written. A warning, not
    /// tampering: `ts` is hashed as written, so the chain is intact.
    pub clock_backwards: ClockWarnings,
}

/// How far a row's `ts` may be behind an earlier row's before [`VerifyReport::clock_backwards`]
/// reports it: 60 s (rows of parallel runs take their time before their `seq`).
pub const CLOCK_TOLERANCE_MS: i64 = 60_000;

/// Rows written while the clock ran backwards ([`VerifyReport::clock_backwards`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClockWarnings {
    /// How many rows.
    pub rows: u64,
    /// The first such row: its `seq` and how many ms its `ts` is behind.
    pub first: Option<(i64, i64)>,
    /// The largest step back, in ms.
    pub max_behind_ms: i64,
}

/// Inputs of a verification besides the rows.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Heads held outside the host (syslog collector), `SEQ:HASH`.
    pub anchors: Vec<Head>,
    /// The initial (epoch 0) checkpoint key, kept off the host.
    pub initial_key: Option<[u8; 32]>,
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
    latest_ts: Option<i64>,
    clock: ClockWarnings,
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
            latest_ts: None,
            clock: ClockWarnings::default(),
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
        self.note_time(row.seq, row.ts);
        true
    }

    /// Tracks rows whose `ts` runs backwards by more than [`CLOCK_TOLERANCE_MS`].
    fn note_time(&mut self, seq: i64, ts: i64) {
        if let Some(latest) = self.latest_ts {
            let behind = latest.saturating_sub(ts);
            if behind > CLOCK_TOLERANCE_MS {
                self.clock.rows += 1;
                self.clock.first.get_or_insert((seq, behind));
                self.clock.max_behind_ms = self.clock.max_behind_ms.max(behind);
            }
        }
        self.latest_ts = Some(self.latest_ts.map_or(ts, |l| l.max(ts)));
    }

    /// Records that the row after the last one fed could not be decoded: its column `column`
    /// has the wrong type or size, which only a tampered schema allows. A failure of class
    /// [`TamperClass::ContentChanged`] at `seq` (the row's own `seq` when it could be read,
    /// else the one expected next). Feed no more rows then.
    pub fn reject(&mut self, seq: Option<i64>, column: &str) {
        let seq = seq.unwrap_or(self.expected_seq);
        let lg = self.last_good();
        self.fail(
            TamperClass::ContentChanged,
            seq,
            format!("row seq {seq}: column {column} has the wrong type or size"),
            lg,
        );
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
            clock_backwards: self.clock,
        }
    }
}

#[cfg(test)]
mod tests;
