//! The audit side of a batch ([`super`]): ONE audit log for the whole batch, each container's
//! rows still its own run (vmid, phase, run id). The intent rows of every container are written
//! in one transaction before any change (write-ahead), the outcome rows of every container in
//! one transaction with one keyed seal at the end ([`crate::report::intents`],
//! [`crate::report::finish_all`]). A write that fails for the batch is retried container by
//! container, so each gets its own error (and a container whose intent cannot be written
//! changes nothing).

use super::Run;
use crate::audit::{AuditError, AuditLog, AuditOptions};
use crate::config::AgentConfig;
use crate::engine::{Deadline, RunError};
use crate::report::{finish_all, intents, Recorder};
use serde_json::{json, Value};

/// The batch's audit log, with the busy timeout of `deadline` ([`Deadline::audit_busy_timeout`]).
pub(super) fn open_log(cfg: &AgentConfig, deadline: Deadline) -> Result<AuditLog, AuditError> {
    let o = AuditOptions {
        busy_timeout: deadline.audit_busy_timeout(),
        key_file: Some(cfg.audit_key_file()),
        ..AuditOptions::default()
    };
    AuditLog::open(&cfg.toml.audit.database, &o)
}

/// The intent row of every alive run with changes, in one transaction; when that fails, each
/// alone. A run whose intent is not written ends with [`RunError::AuditBefore`].
pub(super) fn write_intents(log: &mut AuditLog, runs: &mut [Run<'_>]) {
    let plans: Vec<Value> = runs
        .iter()
        .filter(|r| r.alive() && r.changes)
        .map(|r| json!({"plan": super::plan_lines(&r.steps), "batch": true}))
        .collect();
    if plans.is_empty() {
        return;
    }
    let mut todo: Vec<(&mut Run<'_>, &Value)> = runs
        .iter_mut()
        .filter(|r| r.alive() && r.changes)
        .zip(&plans)
        .collect();
    let all = {
        let mut args: Vec<(&mut Recorder, &str, &Value)> = todo
            .iter_mut()
            .map(|(r, p)| (&mut r.rec, "run.intent", *p))
            .collect();
        intents(log, &mut args)
    };
    if all.is_ok() {
        return;
    }
    for (r, p) in todo {
        if let Err(e) = intents(log, &mut [(&mut r.rec, "run.intent", p)]) {
            r.done = Some(Err(RunError::AuditBefore(e)));
        }
    }
}

/// Every run's `failed` row where it failed, then every run's rows in one transaction; when
/// that fails, each run's alone, and a run that succeeded but whose rows are not written ends
/// with [`RunError::Audit`]. Without a log (a dry run) nothing is written.
pub(super) fn finish(log: Option<&mut AuditLog>, runs: &mut [Run<'_>]) {
    for r in runs.iter_mut() {
        let result = r.done.take().unwrap_or_else(|| Ok(String::new()));
        super::super::failed_row(&mut r.rec, &result);
        r.done = Some(result);
    }
    let Some(log) = log else { return };
    let all = {
        let mut recs: Vec<&mut Recorder> = runs.iter_mut().map(|r| &mut r.rec).collect();
        finish_all(log, &mut recs)
    };
    if all.is_ok() {
        return;
    }
    for r in runs.iter_mut() {
        if let Err(e) = finish_all(log, &mut [&mut r.rec]) {
            if matches!(r.done, Some(Ok(_))) {
                r.done = Some(Err(RunError::Audit(e)));
            }
        }
    }
}
