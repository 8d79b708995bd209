//! The single seam where every step's outcome is reported: a log line, a timing, and an audit
//! row of the run.
//!
//! Write-ahead: [`Recorder::intent`] appends (and fsyncs) the run's `intent` row before anything
//! is changed; if that fails the caller changes nothing. Outcome rows are buffered and appended
//! in one transaction by [`Recorder::finish`] (one fsync per run instead of one per step); an
//! interrupted run therefore shows as an intent without outcomes.

use crate::audit::{AuditError, AuditLog, Head, NewRow, Outcome};
use serde_json::Value;
use std::time::{Duration, Instant};

struct PendingRow {
    step: String,
    outcome: Outcome,
    detail: String,
}

/// Reporter for one run of one phase for one vmid.
pub struct Recorder {
    vmid: u32,
    phase: String,
    run_id: String,
    audit: Option<AuditLog>,
    pending: Vec<PendingRow>,
    started: Instant,
    failed: bool,
    /// `(step, elapsed)` in the order the steps ran; printed by `--timings`.
    pub timings: Vec<(String, Duration)>,
}

impl Recorder {
    /// A recorder writing to `audit` (`None`: log only, e.g. for `--dry-run`).
    pub fn new(vmid: u32, phase: &str, audit: Option<AuditLog>, started: Instant) -> Recorder {
        Recorder {
            vmid,
            phase: phase.to_string(),
            run_id: crate::audit::run_id(),
            audit,
            pending: Vec::new(),
            started,
            failed: false,
            timings: Vec::new(),
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
        let detail = detail.to_string();
        log::info!(
            "{} {} run {}: intent {step} {detail}",
            self.vmid,
            self.phase,
            self.run_id
        );
        if let Some(a) = self.audit.as_mut() {
            let mut rows: Vec<NewRow> = self
                .pending
                .iter()
                .map(|p| NewRow {
                    vmid: self.vmid,
                    phase: &self.phase,
                    run_id: &self.run_id,
                    step: &p.step,
                    outcome: p.outcome,
                    detail: &p.detail,
                })
                .collect();
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
        let detail = detail.to_string();
        self.failed |= outcome == Outcome::Failed;
        match outcome {
            Outcome::Failed => log::error!(
                target: crate::logging::STEP_TARGET,
                "{} {}: {step} failed: {detail}",
                self.vmid,
                self.phase
            ),
            _ => log::info!(
                target: crate::logging::STEP_TARGET,
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

    /// Appends the buffered outcome rows in one transaction, adds a keyed checkpoint when a key
    /// is configured, and logs the chain head to syslog as an external anchor.
    pub fn finish(&mut self) -> Result<Option<Head>, AuditError> {
        let Some(a) = self.audit.as_mut() else {
            return Ok(None);
        };
        let t = Instant::now();
        let rows: Vec<NewRow> = self
            .pending
            .iter()
            .map(|p| NewRow {
                vmid: self.vmid,
                phase: &self.phase,
                run_id: &self.run_id,
                step: &p.step,
                outcome: p.outcome,
                detail: &p.detail,
            })
            .collect();
        let mut head = if rows.is_empty() {
            a.head()?
        } else {
            Some(a.append_all(&rows)?)
        };
        self.pending.clear();
        match a.checkpoint() {
            Ok(Some(h)) => head = Some(h),
            Ok(None) => {}
            Err(e) => {
                // The run's rows are written; only the keyed seal failed (e.g. audit.key does
                // not match a restored database). The changes are made, so the run does not
                // fail for it: the failure is recorded, and `audit verify --key-file` reports
                // the gap in the epochs.
                log::error!("audit checkpoint: {e}");
                eprintln!("op-agent: warning: audit checkpoint not written: {e}");
                let detail = serde_json::json!({"error": e.to_string()}).to_string();
                head = Some(a.append(&NewRow {
                    vmid: self.vmid,
                    phase: &self.phase,
                    run_id: &self.run_id,
                    step: "audit.checkpoint",
                    outcome: Outcome::Failed,
                    detail: &detail,
                })?);
            }
        }
        self.timings.push(("audit.finish".into(), t.elapsed()));
        if let Some(h) = &head {
            log::info!("audit head {h}");
        }
        Ok(head)
    }

    /// Time since the process started handling this run.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}
