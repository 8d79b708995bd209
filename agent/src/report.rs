//! The single seam where every step's outcome is reported: a log line, a timing, and an audit
//! row of the run.
//!
//! Write-ahead: [`Recorder::intent`] appends (and fsyncs) the run's `intent` row before anything
//! is changed; if that fails the caller changes nothing. Outcome rows are buffered and appended
//! in one transaction by [`Recorder::finish`] (one fsync per run instead of one per step); an
//! interrupted run therefore shows as an intent without outcomes.

use crate::audit::{AuditError, AuditLog, Head, NewRow, Outcome};
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The audit log while a helper thread warms it up ([`AuditLog::warm_up`]) or folds its WAL
/// ([`AuditLog::fold_wal`]).
type Warming = (Arc<Mutex<Option<AuditLog>>>, JoinHandle<()>);

struct PendingRow {
    step: String,
    outcome: Outcome,
    detail: String,
}

/// The audit rows of `pending` outcomes of one run.
fn rows_of<'a>(
    vmid: u32,
    phase: &'a str,
    run_id: &'a str,
    pending: &'a [PendingRow],
) -> Vec<NewRow<'a>> {
    pending
        .iter()
        .map(|p| NewRow {
            vmid,
            phase,
            run_id,
            step: &p.step,
            outcome: p.outcome,
            detail: &p.detail,
        })
        .collect()
}

/// Reporter for one run of one phase for one vmid.
pub struct Recorder {
    vmid: u32,
    phase: String,
    run_id: String,
    audit: Option<AuditLog>,
    warming: Option<Warming>,
    pending: Vec<PendingRow>,
    started: Instant,
    failed: bool,
    /// `(step, elapsed)` in the order the steps ran; printed by `--timings`.
    pub timings: Vec<(String, Duration)>,
    /// Every row reported, intent rows included, in order (unit tests read them).
    #[cfg(test)]
    seen: Vec<(String, Outcome, Value)>,
}

impl Recorder {
    /// A recorder writing to `audit` (`None`: log only, e.g. for `--dry-run`).
    ///
    /// The log is warmed up ([`AuditLog::warm_up`]: schema, statements, head row) on a helper
    /// thread while the caller connects and observes; the first append waits for it. If the
    /// thread cannot be started, the first append does that work itself.
    pub fn new(vmid: u32, phase: &str, audit: Option<AuditLog>, started: Instant) -> Recorder {
        let (audit, warming) = match audit {
            None => (None, None),
            Some(a) => on_helper(a, "audit-warm-up", |a| {
                let _ = a.warm_up();
            }),
        };
        Recorder {
            vmid,
            phase: phase.to_string(),
            run_id: crate::audit::run_id(),
            audit,
            warming,
            pending: Vec::new(),
            started,
            failed: false,
            timings: Vec::new(),
            #[cfg(test)]
            seen: Vec::new(),
        }
    }

    /// Waits for the helper thread, if any, and takes the log back from it.
    fn settle(&mut self) {
        if let Some((slot, h)) = self.warming.take() {
            // A panic in the warm-up leaves the log in the slot (the mutex is then poisoned).
            let _ = h.join();
            self.audit = take_slot(&slot);
        }
    }

    /// Called while the run waits for ovs-vswitchd to release a port: the audit WAL is folded
    /// into the main file on a helper thread ([`AuditLog::fold_wal`]); the next append waits
    /// for that thread. A failed fold goes to syslog only (SQLite's automatic checkpoint
    /// remains); nothing is written to the log and nothing to stderr.
    pub fn idle(&mut self) {
        let Some(a) = self.audit.take_if(|_| self.warming.is_none()) else {
            return;
        };
        // No thread: no fold (SQLite's automatic checkpoint remains).
        (self.audit, self.warming) = on_helper(a, "audit-fold", |a| {
            if let Err(e) = a.fold_wal() {
                log::warn!(
                    target: crate::logging::STEP_TARGET,
                    "audit: folding the WAL into the main file: {e}"
                );
            }
        });
    }

    /// The run id written in every row of this run.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Appends the rows reported so far and the run's `intent` row now, in one transaction
    /// (write-ahead). An error means nothing may be changed.
    pub fn intent(&mut self, step: &str, detail: &Value) -> Result<(), AuditError> {
        let t = Instant::now();
        #[cfg(test)]
        self.seen
            .push((step.to_string(), Outcome::Intent, detail.clone()));
        let detail = detail.to_string();
        log::info!(
            vmid = self.vmid,
            phase = self.phase.as_str(),
            run_id = self.run_id.as_str(),
            step = step,
            outcome = "intent",
            message_id = crate::logging::MSG_INTENT;
            "{} {} run {}: intent {step} {detail}",
            self.vmid,
            self.phase,
            self.run_id
        );
        self.settle();
        if let Some(a) = self.audit.as_mut() {
            let mut rows = rows_of(self.vmid, &self.phase, &self.run_id, &self.pending);
            rows.push(NewRow {
                vmid: self.vmid,
                phase: &self.phase,
                run_id: &self.run_id,
                step,
                outcome: Outcome::Intent,
                detail: &detail,
            });
            a.append_all(&rows)?;
        }
        self.pending.clear();
        self.timings.push(("audit.intent".into(), t.elapsed()));
        Ok(())
    }

    /// Reports the outcome of a step (buffered until [`Recorder::finish`]).
    pub fn outcome(&mut self, step: &str, outcome: Outcome, detail: Value) {
        #[cfg(test)]
        self.seen.push((step.to_string(), outcome, detail.clone()));
        let detail = detail.to_string();
        self.failed |= outcome == Outcome::Failed;
        match outcome {
            Outcome::Failed => log::error!(
                target: crate::logging::STEP_TARGET,
                vmid = self.vmid,
                phase = self.phase.as_str(),
                run_id = self.run_id.as_str(),
                step = step,
                outcome = "failed",
                message_id = crate::logging::MSG_STEP_FAILED;
                "{} {}: {step} failed: {detail}",
                self.vmid,
                self.phase
            ),
            _ => log::info!(
                target: crate::logging::STEP_TARGET,
                vmid = self.vmid,
                phase = self.phase.as_str(),
                run_id = self.run_id.as_str(),
                step = step,
                outcome = outcome.as_str(),
                message_id = crate::logging::MSG_STEP;
                "{} {}: {step} {}: {detail}",
                self.vmid,
                self.phase,
                outcome.as_str()
            ),
        }
        self.pending.push(PendingRow {
            step: step.to_string(),
            outcome,
            detail,
        });
    }

    /// True once a `failed` outcome was reported in this run.
    pub fn has_failed(&self) -> bool {
        self.failed
    }

    /// Records how long `step` took.
    pub fn timing(&mut self, step: &str, d: Duration) {
        self.timings.push((step.to_string(), d));
    }

    /// Appends the buffered outcome rows and, when a key is configured, the keyed checkpoint
    /// sealing them, in one transaction ([`AuditLog::append_all_sealed`]), and logs the chain
    /// head to syslog as an external anchor.
    pub fn finish(&mut self) -> Result<Option<Head>, AuditError> {
        self.settle();
        let Some(a) = self.audit.as_mut() else {
            return Ok(None);
        };
        let t = Instant::now();
        let rows = rows_of(self.vmid, &self.phase, &self.run_id, &self.pending);
        let head = if rows.is_empty() {
            let mut head = a.head()?;
            match a.checkpoint() {
                Ok(Some(h)) => head = Some(h),
                Ok(None) => {}
                Err(e) => {
                    log::error!("audit checkpoint: {e}");
                    eprintln!("op-agent: warning: audit checkpoint not written: {e}");
                }
            }
            head
        } else {
            // The outcome rows and the keyed checkpoint sealing them: one transaction.
            let r = a.append_all_sealed(&rows);
            self.pending.clear();
            match r {
                Ok(h) => Some(h),
                // The rows are written; only the keyed seal failed (audit.key unreadable, or
                // not matching a database restored from a backup). The changes are made, so the
                // run does not fail for it: the failure is recorded as a row, and `audit verify
                // --key-file` reports the break in the epochs.
                Err(e @ (AuditError::Key { .. } | AuditError::Io { .. })) => {
                    log::error!("audit checkpoint: {e}");
                    eprintln!("op-agent: warning: audit checkpoint not written: {e}");
                    let detail = serde_json::json!({"error": e.to_string()}).to_string();
                    Some(a.append(&NewRow {
                        vmid: self.vmid,
                        phase: &self.phase,
                        run_id: &self.run_id,
                        step: "audit.checkpoint",
                        outcome: Outcome::Failed,
                        detail: &detail,
                    })?)
                }
                Err(e) => return Err(e),
            }
        };
        self.timings.push(("audit.finish".into(), t.elapsed()));
        if let Some(h) = &head {
            log::info!(
                vmid = self.vmid,
                phase = self.phase.as_str(),
                run_id = self.run_id.as_str(),
                message_id = crate::logging::MSG_AUDIT_HEAD;
                "audit head {h}"
            );
        }
        Ok(head)
    }

    /// Every row reported so far (intent and outcomes, also those already appended), in
    /// order: `(step, outcome, detail)`.
    #[cfg(test)]
    pub fn rows(&self) -> &[(String, Outcome, Value)] {
        &self.seen
    }

    /// Time since the process started handling this run.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

impl Drop for Recorder {
    /// Takes the log back from a helper thread still running, so it is closed here (after
    /// the warm-up or fold) rather than lost with the thread at process exit.
    fn drop(&mut self) {
        self.settle();
    }
}

/// Runs `work` on `a` on a helper thread named `name`; the log stays in the returned slot
/// until [`Recorder::settle`] joins the thread and takes it back. If no thread can be started,
/// the log comes back at once and `work` is skipped.
fn on_helper(
    a: AuditLog,
    name: &str,
    work: fn(&mut AuditLog),
) -> (Option<AuditLog>, Option<Warming>) {
    let slot = Arc::new(Mutex::new(Some(a)));
    let theirs = slot.clone();
    let spawned = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let mut guard = theirs.lock();
            if let Ok(Some(a)) = guard.as_deref_mut() {
                work(a);
            }
        });
    match spawned {
        Ok(h) => (None, Some((slot, h))),
        Err(_) => (take_slot(&slot), None),
    }
}

fn take_slot(slot: &Mutex<Option<AuditLog>>) -> Option<AuditLog> {
    slot.lock().unwrap_or_else(|p| p.into_inner()).take()
}
