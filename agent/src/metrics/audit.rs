//! Facts of the audit log the metrics expose, folded row by row so that the watch service
//! reads only the rows appended since its last write (`seq > last`, the table's primary key):
//! the chain head's `seq`, each container's last hook run and its outcome, and the watch
//! service's repair runs.

use crate::audit::reader::open_read_only;
use std::collections::BTreeMap;
use std::path::Path;

/// The hookscript phases (`PVE::GuestHelpers::exec_hookscript` calls them), as audit `phase`.
pub const HOOK_PHASES: [&str; 4] = ["pre-start", "post-start", "pre-stop", "post-stop"];

/// The audit `phase` of the watch service's runs.
pub const WATCH_PHASE: &str = "watch";

/// The outcome of a run as far as its rows tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    /// No `failed` row, and more than the write-ahead `intent` row.
    Ok,
    /// At least one `failed` row.
    Failed,
    /// Only the write-ahead `run.intent` row: the run is in progress or was killed.
    Incomplete,
}

impl RunOutcome {
    /// Every outcome, in label order.
    pub const ALL: [RunOutcome; 3] = [RunOutcome::Ok, RunOutcome::Failed, RunOutcome::Incomplete];

    /// `ok`, `failed` or `incomplete`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Ok => "ok",
            RunOutcome::Failed => "failed",
            RunOutcome::Incomplete => "incomplete",
        }
    }
}

/// A container's last hook run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastHook {
    /// Its `phase` (`post-start`, ...).
    pub phase: String,
    /// Its `run_id`.
    pub run_id: String,
    /// `ts` of its first row, in ms since the Unix epoch (UTC).
    pub started_ms: i64,
    rows: u64,
    failed: bool,
    intent_only: bool,
}

impl LastHook {
    /// What its rows say.
    pub fn outcome(&self) -> RunOutcome {
        if self.failed {
            RunOutcome::Failed
        } else if self.rows == 1 && self.intent_only {
            RunOutcome::Incomplete
        } else {
            RunOutcome::Ok
        }
    }
}

/// The watch service's runs of one container that changed something.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Repairs {
    /// Runs with a write-ahead `run.intent` row (the engine writes one only when the run has
    /// changes to make).
    pub started: u64,
    /// Runs with a `failed` row.
    pub failed: u64,
    last_failed_run: String,
}

/// The facts, folded over the rows read so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditTally {
    /// `seq` of the last row (the chain head); `None` on an empty log.
    pub head_seq: Option<i64>,
    /// By vmid.
    pub last_hook: BTreeMap<u32, LastHook>,
    /// By vmid.
    pub repairs: BTreeMap<u32, Repairs>,
}

/// The columns of one row the tally reads.
#[derive(Debug, Clone)]
pub struct TallyRow<'a> {
    pub seq: i64,
    pub ts: i64,
    pub vmid: u32,
    pub phase: &'a str,
    pub run_id: &'a str,
    pub step: &'a str,
    pub outcome: &'a str,
}

impl AuditTally {
    /// Folds one row (rows must come in `seq` order).
    pub fn fold(&mut self, r: &TallyRow<'_>) {
        self.head_seq = Some(r.seq);
        if HOOK_PHASES.contains(&r.phase) {
            let fresh = self
                .last_hook
                .get(&r.vmid)
                .is_none_or(|h| h.run_id != r.run_id);
            if fresh {
                self.last_hook.insert(
                    r.vmid,
                    LastHook {
                        phase: r.phase.to_string(),
                        run_id: r.run_id.to_string(),
                        started_ms: r.ts,
                        rows: 0,
                        failed: false,
                        intent_only: true,
                    },
                );
            }
            if let Some(h) = self.last_hook.get_mut(&r.vmid) {
                h.rows += 1;
                h.failed |= r.outcome == "failed";
                h.intent_only &= r.step == "run.intent";
            }
        } else if r.phase == WATCH_PHASE {
            let rep = self.repairs.entry(r.vmid).or_default();
            if r.step == "run.intent" {
                rep.started += 1;
            }
            if r.outcome == "failed" && rep.last_failed_run != r.run_id {
                rep.failed += 1;
                rep.last_failed_run = r.run_id.to_string();
            }
        }
    }

    /// Reads the rows of the audit database `db` after [`AuditTally::head_seq`] (all of them the
    /// first time) and folds them. A log whose head is below the one folded (a new database)
    /// is folded again from its first row.
    ///
    /// # Errors
    /// The database cannot be opened or read (one line naming it); the tally is unchanged.
    pub fn update(&mut self, db: &Path) -> Result<(), String> {
        let r = open_read_only(db).map_err(|e| format!("{}: {e}", db.display()))?;
        let c = &r.conn;
        let _ = c.busy_timeout(std::time::Duration::from_millis(1000));
        let err = |e: rusqlite::Error| format!("{}: {e}", db.display());
        let max: Option<i64> = c
            .query_row("SELECT max(seq) FROM audit", [], |r| r.get(0))
            .map_err(err)?;
        let mut next = self.clone();
        if max < next.head_seq {
            next = AuditTally::default();
        }
        let mut st = c
            .prepare(
                "SELECT seq, ts, vmid, phase, run_id, step, outcome FROM audit \
                 WHERE seq > ?1 ORDER BY seq",
            )
            .map_err(err)?;
        let mut rows = st.query([next.head_seq.unwrap_or(0)]).map_err(err)?;
        while let Some(row) = rows.next().map_err(err)? {
            let get = |i| {
                row.get_ref(i)
                    .ok()
                    .and_then(|v| v.as_str().ok())
                    .unwrap_or("")
            };
            let (Ok(seq), Ok(ts), Ok(vmid)) = (row.get(0), row.get(1), row.get(2)) else {
                return Err(format!("{}: a row with unreadable columns", db.display()));
            };
            next.fold(&TallyRow {
                seq,
                ts,
                vmid,
                phase: get(3),
                run_id: get(4),
                step: get(5),
                outcome: get(6),
            });
        }
        *self = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row<'a>(
        seq: i64,
        vmid: u32,
        phase: &'a str,
        run: &'a str,
        step: &'a str,
        outcome: &'a str,
    ) -> TallyRow<'a> {
        TallyRow {
            seq,
            ts: seq * 1000,
            vmid,
            phase,
            run_id: run,
            step,
            outcome,
        }
    }

    #[test]
    fn last_hook_outcome_and_repairs() {
        let mut t = AuditTally::default();
        let rows = [
            row(1, 100, "pre-start", "a", "run.intent", "intent"),
            row(2, 100, "pre-start", "a", "link.down", "ok"),
            row(3, 101, "post-start", "b", "run.intent", "intent"),
            row(4, 100, "post-start", "c", "config.validate", "ok"),
            row(5, 100, "post-start", "c", "port.plug", "failed"),
            row(6, 100, "watch", "d", "run.intent", "intent"),
            row(7, 100, "watch", "d", "port.plug", "failed"),
            row(8, 100, "watch", "d", "run.failed", "failed"),
            row(9, 100, "watch", "e", "run.intent", "intent"),
            row(10, 100, "watch", "e", "port.plug", "ok"),
            row(11, 100, "watch", "f", "run.converged", "ok"),
            row(12, 100, "apply", "g", "run.intent", "intent"),
        ];
        for r in &rows[..3] {
            t.fold(r);
        }
        assert_eq!(t.last_hook[&100].outcome(), RunOutcome::Ok);
        assert_eq!(t.last_hook[&100].phase, "pre-start");
        assert_eq!(t.last_hook[&101].outcome(), RunOutcome::Incomplete);
        for r in &rows[3..] {
            t.fold(r);
        }
        assert_eq!(t.head_seq, Some(12));
        let h = &t.last_hook[&100];
        assert_eq!((h.phase.as_str(), h.started_ms), ("post-start", 4000));
        assert_eq!(h.outcome(), RunOutcome::Failed);
        assert_eq!(t.repairs[&100].started, 2);
        assert_eq!(t.repairs[&100].failed, 1);
        assert!(!t.repairs.contains_key(&101));
    }

    #[test]
    fn update_reads_only_new_rows_and_restarts_on_a_new_log() {
        use crate::audit::{AuditLog, AuditOptions, NewRow, Outcome};
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("audit.db");
        let mut t = AuditTally::default();
        assert!(t.update(&db).is_err(), "no database yet");
        let append = |step: &str, outcome: Outcome, n: usize| {
            let mut log = AuditLog::open(&db, &AuditOptions::default()).unwrap();
            for _ in 0..n {
                log.append(&NewRow {
                    vmid: 100,
                    phase: "watch",
                    run_id: &crate::audit::run_id(),
                    step,
                    outcome,
                    detail: "{}",
                })
                .unwrap();
            }
        };
        append("run.intent", Outcome::Intent, 2);
        t.update(&db).unwrap();
        assert_eq!(t.repairs[&100].started, 2);
        append("run.intent", Outcome::Intent, 1);
        t.update(&db).unwrap();
        assert_eq!(t.repairs[&100].started, 3);
        assert_eq!(t.head_seq, Some(3));
        std::fs::remove_file(&db).unwrap();
        let _ = std::fs::remove_file(dir.path().join("audit.db-wal"));
        let _ = std::fs::remove_file(dir.path().join("audit.db-shm"));
        append("run.intent", Outcome::Intent, 1);
        t.update(&db).unwrap();
        assert_eq!(t.head_seq, Some(1));
        assert_eq!(t.repairs[&100].started, 1);
    }
}
