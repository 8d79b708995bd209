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

/// `d` in ms rounded to two decimals (`0.70`, printed by serde_json as `0.7`), as audit rows
/// and logs carry durations: the microsecond noise of a raw `f64`
/// (`0.6999839999999999`) says nothing to an admin and bloats every row.
pub fn rounded_ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
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
    /// The run's "outcome not yet recorded" marker ([`Recorder::mark_unrecorded_at`]).
    marker: Option<std::path::PathBuf>,
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
            marker: None,
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

    /// Keeps the file `path` while this run's intent is written and its outcome is not: written
    /// (`{"run_id","phase","vmid","intent"}`) once the intent row is, removed once the outcome
    /// rows are. A marker found by a later run of the container ([`take_unrecorded`]) means
    /// the changes of that run were made (or begun) but their outcome never reached the log
    /// (audit disk full or read-only after the intent, a crash).
    pub fn mark_unrecorded_at(&mut self, path: std::path::PathBuf) {
        self.marker = Some(path);
    }

    /// Writes the marker (intent row `detail` written, outcome not yet).
    fn marker_set(&self, detail: &str) {
        if let Some(m) = &self.marker {
            let text = serde_json::json!({
                "run_id": self.run_id, "phase": self.phase, "vmid": self.vmid, "intent": detail,
            });
            if let Err(e) = write_marker(m, &text.to_string()) {
                log::warn!("audit: cannot write {}: {e}", m.display());
            }
        }
    }

    /// Removes the marker (the outcome rows are written).
    fn marker_clear(&self) {
        if let Some(m) = &self.marker {
            match std::fs::remove_file(m) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    log::warn!("audit: cannot remove {}: {e}", m.display())
                }
                _ => {}
            }
        }
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
            self.marker_set(&detail);
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
                    crate::errln!("op-agent: warning: audit checkpoint not written: {e}");
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
                    crate::errln!("op-agent: warning: audit checkpoint not written: {e}");
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
        self.marker_clear();
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

/// The rows of many runs written through ONE audit log, one transaction per write, for a batch
/// of containers ([`crate::engine::converge_batch`]): each run's [`Recorder`] is made without a
/// log of its own and buffers its rows; [`intents`] writes every run's intent row (write-ahead:
/// before any change of any container of the batch) and [`finish_all`] every run's outcome rows
/// with one keyed seal. Each row keeps its run's vmid, phase and run id.
///
/// Appends, in ONE transaction of `log`, each run's buffered rows followed by its intent row
/// (`step`, `detail`), as [`Recorder::intent`] does for one run. An error means nothing may be
/// changed for any of them (the rows stay buffered).
pub fn intents(
    log: &mut AuditLog,
    runs: &mut [(&mut Recorder, &str, &Value)],
) -> Result<(), AuditError> {
    let t = Instant::now();
    let details: Vec<String> = runs.iter().map(|(_, _, d)| d.to_string()).collect();
    let mut rows = Vec::new();
    for ((r, step, _), detail) in runs.iter().zip(&details) {
        log::info!(
            "{} {} run {}: intent {step} {detail}",
            r.vmid,
            r.phase,
            r.run_id
        );
        rows.extend(rows_of(r.vmid, &r.phase, &r.run_id, &r.pending));
        rows.push(NewRow {
            vmid: r.vmid,
            phase: &r.phase,
            run_id: &r.run_id,
            step,
            outcome: Outcome::Intent,
            detail,
        });
    }
    log.append_all(&rows)?;
    drop(rows);
    for ((r, _, _), detail) in runs.iter().zip(&details) {
        r.marker_set(detail);
    }
    for (r, step, detail) in runs.iter_mut() {
        #[cfg(test)]
        r.seen
            .push((step.to_string(), Outcome::Intent, (*detail).clone()));
        let _ = (&step, &detail);
        r.pending.clear();
        r.timings.push(("audit.intent".into(), t.elapsed()));
    }
    Ok(())
}

/// Appends every run's buffered outcome rows and, when a key is configured, the keyed
/// checkpoint sealing them, in ONE transaction of `log` ([`AuditLog::append_all_sealed`]), as
/// [`Recorder::finish`] does for one run. A seal that fails after the rows were written
/// (audit.key unreadable or not matching) leaves an `audit.checkpoint failed` row of the first
/// run and is not an error, as there.
pub fn finish_all(
    log: &mut AuditLog,
    recs: &mut [&mut Recorder],
) -> Result<Option<Head>, AuditError> {
    let t = Instant::now();
    let mut rows = Vec::new();
    for r in recs.iter() {
        rows.extend(rows_of(r.vmid, &r.phase, &r.run_id, &r.pending));
    }
    if rows.is_empty() {
        return Ok(None);
    }
    let written = log.append_all_sealed(&rows);
    drop(rows);
    let head = match written {
        Ok(h) => Some(h),
        Err(e @ (AuditError::Key { .. } | AuditError::Io { .. })) => {
            log::error!("audit checkpoint: {e}");
            eprintln!("op-agent: warning: audit checkpoint not written: {e}");
            let detail = serde_json::json!({"error": e.to_string()}).to_string();
            match recs.first() {
                Some(r) => Some(log.append(&NewRow {
                    vmid: r.vmid,
                    phase: &r.phase,
                    run_id: &r.run_id,
                    step: "audit.checkpoint",
                    outcome: Outcome::Failed,
                    detail: &detail,
                })?),
                None => None,
            }
        }
        Err(e) => return Err(e),
    };
    for r in recs.iter_mut() {
        r.pending.clear();
        r.marker_clear();
        r.timings.push(("audit.finish".into(), t.elapsed()));
    }
    if let Some(h) = &head {
        log::info!("audit head {h}");
    }
    Ok(head)
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

/// Writes `text` to `path` through a temporary file and a rename (a reader never sees half of
/// it). Not synced: the marker lives under `/run` and means nothing after a reboot.
fn write_marker(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// A marker left by an earlier run of this container ([`Recorder::mark_unrecorded_at`]) as the
/// `audit.unrecorded` row's detail: that run's `run_id`, `phase` and `intent` (its plan), with
/// what it means. `None` when there is none (or it cannot be read: then a one-line warning).
/// The marker stays until the row is written: the finishing run removes it.
pub fn take_unrecorded(path: &std::path::Path) -> Option<Value> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            log::warn!("audit: cannot read {}: {e}", path.display());
            return None;
        }
    };
    let mut v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if let Some(o) = v.as_object_mut() {
        if let Some(Value::String(i)) = o.get("intent") {
            if let Ok(parsed) = serde_json::from_str::<Value>(i) {
                o.insert("intent".into(), parsed);
            }
        }
        o.insert(
            "found".into(),
            Value::String(
                "that run wrote its intent, but its outcome rows never reached the log                  (audit disk full or read-only, or the process was killed); its changes may                  have been applied: this run's rows show the state it found"
                    .into(),
            ),
        );
    }
    Some(v)
}

#[cfg(test)]
mod rounded_ms_tests {
    use super::rounded_ms;
    use std::time::Duration;

    #[test]
    fn durations_in_rows_have_two_decimals() {
        let row = |d| serde_json::json!({ "ms": rounded_ms(d) }).to_string();
        assert_eq!(row(Duration::from_nanos(699_998)), r#"{"ms":0.7}"#);
        assert_eq!(row(Duration::from_nanos(10_294_517)), r#"{"ms":10.29}"#);
        assert_eq!(row(Duration::from_nanos(4_999)), r#"{"ms":0.0}"#);
        assert_eq!(row(Duration::from_millis(1_234)), r#"{"ms":1234.0}"#);
    }
}
