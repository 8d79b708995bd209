//! The convergence engine: one flow for every caller (`hook`, `apply`, `watch`), per container:
//! load (PVE conf + container TOML, [`load`]) → observe (netlink, OVSDB, [`observe`]) → plan
//! (pure, [`plan`]) → execute ([`execute`], each outcome to the audit seam
//! [`crate::report::Recorder`]) → rollback of PVE's plumbing on failure ([`rollback`]).
//!
//! Each container is run under its per-vmid lock, with its own audit log handle and recorder,
//! within its own [`Deadline`] (`[hook] deadline_ms`; PVE's `exec_hookscript` has no timeout of
//! its own). With `dry_run` the engine stops after planning and hands the plan back; the
//! caller prints it.

pub mod batch;
pub mod deadline;
pub mod error;
pub mod execute;
pub mod host;
pub mod load;
pub mod observe;
pub mod observe_batch;
pub mod observed;
pub mod ownership;
pub mod phase;
pub mod plan;
pub mod rollback;

#[cfg(test)]
mod fake;

pub use batch::converge_batch;
pub use deadline::{Budget, Deadline};
pub use error::RunError;
pub use host::{Host, Links, Vswitch};
pub use load::Managed;
pub use phase::{parse_phase, Phase, PhaseArg};

use crate::audit::{AuditLog, AuditOptions, Outcome};
use crate::config::{AgentConfig, ConfigError, NetworkType};
use crate::desired::Desired;
use crate::report::Recorder;
use plan::Planned;
use pve_integration::Vmid;
use serde_json::json;
use std::time::{Duration, Instant};

/// One container to converge.
#[derive(Debug, Clone)]
pub struct Job {
    /// The container, found managed by the caller ([`Managed::find`]).
    pub managed: Managed,
    /// Which phase's steps to run (`apply` and `watch` run post-start's).
    pub phase: Phase,
    /// The audit rows' `phase`: `post-start`, `apply`, `watch`, ...
    pub label: String,
    /// When its deadline starts: the hook process's start, or `None` for when the engine
    /// picks the job up.
    pub started: Option<Instant>,
}

/// An audit row a caller hands the run to record first, under the run's lock and with its
/// `run_id` (e.g. what `watch` found changed before it converged the container).
#[derive(Debug, Clone, PartialEq)]
pub struct Note {
    /// The audit `step` (`watch.drift`, ...).
    pub step: String,
    /// The row's outcome.
    pub outcome: Outcome,
    /// The row's `detail`.
    pub detail: serde_json::Value,
}

/// Options of a [`converge`] call.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Stop after planning, change nothing, take no lock, write no audit row; the plan is in
    /// [`Report::plans`].
    pub dry_run: bool,
}

/// What became of one [`Job`].
#[derive(Debug)]
pub struct Report {
    /// The container.
    pub vmid: Vmid,
    /// With `dry_run`: each plan made, in order (also the post-stop sweep made for a broken
    /// config, whose error is still in `result`). Print with [`plan::plan_lines`].
    pub plans: Vec<Vec<Planned>>,
    /// For `--timings`: `(step, elapsed)` in the order the steps ran, and the time from the
    /// job's start until its audit rows were written. `None` when the run stopped before it
    /// loaded the config (lock or audit log not available, pre-stop).
    pub timings: Option<(Vec<(String, Duration)>, Duration)>,
    /// The one-line summary (empty for pre-stop and dry runs), or why the run failed.
    pub result: Result<String, RunError>,
}

/// Converges `jobs`, one after another (each under its own lock and deadline), yielding one
/// [`Report`] per job, in order. Lazy: a job runs when the iterator reaches it, so a caller
/// prints each report as soon as its container is done. Every failed run leaves a `failed`
/// audit row.
pub fn converge<'a>(
    cfg: &'a AgentConfig,
    jobs: &'a [Job],
    opts: RunOptions,
) -> impl Iterator<Item = Report> + 'a {
    jobs.iter()
        .map(move |job| converge_one(cfg, job, &[], opts, false))
}

/// [`converge`] of one job whose run records `notes` (not in a dry run) before its own rows.
pub fn converge_noted(cfg: &AgentConfig, job: &Job, notes: &[Note], opts: RunOptions) -> Report {
    converge_one(cfg, job, notes, opts, false)
}

/// [`converge_noted`] for a caller that already holds the container's per-vmid lock
/// ([`crate::lock::lock_vmid`], passed as `_held` to prove it) and keeps it after the run:
/// `op-agent set` converges between its own steps without letting a hook or the watch in.
pub fn converge_held(
    cfg: &AgentConfig,
    job: &Job,
    notes: &[Note],
    _held: &crate::lock::VmidLock,
) -> Report {
    converge_one(cfg, job, notes, RunOptions::default(), true)
}

/// One container: lock (unless `held`), audit log, load, then observe → plan → execute within
/// its deadline.
fn converge_one(
    cfg: &AgentConfig,
    job: &Job,
    notes: &[Note],
    opts: RunOptions,
    held: bool,
) -> Report {
    let started = job.started.unwrap_or_else(Instant::now);
    let deadline = Deadline::of_config(cfg, started);
    let vmid = job.managed.vmid;
    let mut plans = Vec::new();
    let (timings, result) = match open(cfg, job, deadline, opts, held) {
        Err(e) => (None, Err(e)),
        Ok((lock, mut rec)) => {
            for n in notes {
                rec.outcome(&n.step, n.outcome, n.detail.clone());
            }
            let r = run_locked(cfg, job, deadline, opts, &mut rec, &mut plans);
            let timings = (job.phase != Phase::PreStop)
                .then(|| (std::mem::take(&mut rec.timings), started.elapsed()));
            // The audit log is closed before the lock is released.
            drop(rec);
            drop(lock);
            (timings, r)
        }
    };
    Report {
        vmid,
        plans,
        timings,
        result,
    }
}

/// The per-vmid lock (not for a dry run, nor when the caller `held` it) and the recorder on
/// the audit log.
fn open(
    cfg: &AgentConfig,
    job: &Job,
    deadline: Deadline,
    opts: RunOptions,
    held: bool,
) -> Result<(Option<crate::lock::VmidLock>, Recorder), RunError> {
    let vmid = job.managed.vmid;
    let lock = match opts.dry_run || held {
        true => None,
        false => Some(
            crate::lock::lock_vmid(
                &cfg.toml.pve.root.join("run/op-agent"),
                vmid.get(),
                lock_wait(cfg, job, deadline),
            )
            .map_err(RunError::Lock)?,
        ),
    };
    let audit = match opts.dry_run {
        true => None,
        false => {
            let o = AuditOptions {
                busy_timeout: deadline.audit_busy_timeout(),
                key_file: Some(cfg.audit_key_file()),
                ..AuditOptions::default()
            };
            Some(AuditLog::open(&cfg.toml.audit.database, &o).map_err(RunError::AuditBefore)?)
        }
    };
    let mut rec = Recorder::new(vmid.get(), &job.label, audit, deadline.started());
    if !opts.dry_run {
        note_unrecorded(cfg, vmid, &mut rec);
    }
    Ok((lock, rec))
}

/// `<pve root>/run/op-agent/set-<vmid>`, beside the per-vmid lock: present while
/// `op-agent set` holds that lock across its `pct set`, which waits for PVE's config lock.
/// A watch run takes PVE's config lock first and the per-vmid lock second, so it must not
/// wait for the latter then (a lock-order inversion that would stall `pct` until the watch's
/// wait ran out): it tries once and is retried later ([`lock_wait`]).
pub fn edit_marker(cfg: &AgentConfig, vmid: Vmid) -> std::path::PathBuf {
    cfg.toml.pve.root.join(format!("run/op-agent/set-{vmid}"))
}

/// How long `job` waits for its per-vmid lock: [`Deadline::lock_wait`], but not at all for a
/// watch run while an `op-agent set` of the container is under way ([`edit_marker`]).
pub(crate) fn lock_wait(cfg: &AgentConfig, job: &Job, deadline: Deadline) -> Duration {
    if job.label == "watch" && edit_marker(cfg, job.managed.vmid).exists() {
        Duration::ZERO
    } else {
        deadline.lock_wait()
    }
}

/// `<pve root>/run/op-agent/unrecorded-<vmid>.json`, beside the per-vmid lock: the marker of a
/// run whose intent is in the audit log and whose outcome is not yet
/// ([`Recorder::mark_unrecorded_at`]).
pub fn unrecorded_marker(cfg: &AgentConfig, vmid: Vmid) -> std::path::PathBuf {
    cfg.toml
        .pve
        .root
        .join(format!("run/op-agent/unrecorded-{vmid}.json"))
}

/// Under the container's lock: an `audit.unrecorded` row first when an earlier run left its
/// marker ([`crate::report::take_unrecorded`]), and this run's marker kept at the same path.
fn note_unrecorded(cfg: &AgentConfig, vmid: Vmid, rec: &mut Recorder) {
    let marker = unrecorded_marker(cfg, vmid);
    if let Some(detail) = crate::report::take_unrecorded(&marker) {
        rec.outcome("audit.unrecorded", Outcome::Ok, detail);
    }
    rec.mark_unrecorded_at(marker);
}

/// Under the lock: load, run, record the failure, write the audit rows.
fn run_locked(
    cfg: &AgentConfig,
    job: &Job,
    deadline: Deadline,
    opts: RunOptions,
    rec: &mut Recorder,
    plans: &mut Vec<Vec<Planned>>,
) -> Result<String, RunError> {
    if job.phase == Phase::PreStop {
        // Nothing to change, so nothing to validate (a config edited while the container ran
        // must not make its stop fail).
        rec.outcome("phase.noop", Outcome::Skipped, json!({}));
        return rec.finish().map(|_| String::new()).map_err(RunError::Audit);
    }
    let loaded = job.managed.load().and_then(|d| {
        d.ok_or_else(|| {
            ConfigError::file(&job.managed.pve_conf, "container TOML or PVE conf vanished")
        })
    });
    let result = match loaded {
        Ok(d) => {
            rec.outcome(
                "config.validate",
                Outcome::Ok,
                json!({"nics": d.nics.len(), "network_type": d.network_type.as_str()}),
            );
            bounded(cfg, &d, job.phase, deadline, opts, rec, plans)
        }
        Err(e) => {
            rec.outcome(
                "config.validate",
                Outcome::Failed,
                json!({"error": e.to_string()}),
            );
            if job.phase == Phase::PostStop {
                // The config broke while the container ran: still remove every row op-agent
                // owns for it, then report the config error.
                let d = Desired {
                    vmid: job.managed.vmid,
                    network_type: NetworkType::Bridge,
                    require_mesh: false,
                    naming: crate::config::Naming::Rename,
                    nics: Vec::new(),
                };
                let _ = bounded(cfg, &d, job.phase, deadline, opts, rec, plans);
            }
            Err(RunError::Config(e))
        }
    };
    settle_run(rec, result)
}

/// The end of a run: every failed run leaves a `failed` row, then the buffered rows are
/// written ([`Recorder::finish`]); a failure to write them fails a run that succeeded.
fn settle_run(rec: &mut Recorder, result: Result<String, RunError>) -> Result<String, RunError> {
    failed_row(rec, &result);
    let finished = rec.finish();
    match (result, finished) {
        (Err(e), _) => Err(e),
        (Ok(summary), Err(e)) => Err(RunError::Unrecorded(Box::new(error::Unrecorded {
            applied: summary,
            source: e,
        }))),
        (Ok(summary), Ok(_)) => Ok(summary),
    }
}

/// Every failed run leaves a `failed` row, also when it failed before any step did (a plan
/// refusal such as a missing veth or a foreign link).
fn failed_row(rec: &mut Recorder, result: &Result<String, RunError>) {
    if let Err(e) = result {
        if !rec.has_failed() {
            rec.outcome(
                "run.failed",
                Outcome::Failed,
                json!({"error": e.to_string(), "exit": e.code().code()}),
            );
        }
    }
}

/// Runs [`run_phase`] on a current-thread runtime, stopped at the deadline (a
/// `hook.deadline failed` row and [`RunError::Deadline`]).
fn bounded(
    cfg: &AgentConfig,
    d: &Desired,
    phase: Phase,
    deadline: Deadline,
    opts: RunOptions,
    rec: &mut Recorder,
    plans: &mut Vec<Vec<Planned>>,
) -> Result<String, RunError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(RunError::Runtime)?;
    rt.block_on(within(deadline, rec, async |rec: &mut Recorder| {
        run_phase(cfg, d, phase, deadline, opts, rec, plans).await
    }))
}

/// `run(rec)`, stopped once `deadline` has passed: then a `hook.deadline failed` row and
/// [`RunError::Deadline`]. Nothing is rolled back then: the waits of the plan end a quarter of
/// the deadline early ([`Budget::Forward`]) so that a rollback fits before it.
async fn within(
    deadline: Deadline,
    rec: &mut Recorder,
    run: impl AsyncFnOnce(&mut Recorder) -> Result<String, RunError>,
) -> Result<String, RunError> {
    match tokio::time::timeout(deadline.remaining(), run(rec)).await {
        Ok(r) => r,
        Err(_) => {
            let e = RunError::Deadline {
                ms: deadline.length().as_millis(),
            };
            rec.outcome(
                "hook.deadline",
                Outcome::Failed,
                json!({"error": e.to_string()}),
            );
            Err(e)
        }
    }
}

/// One phase, on a fresh connection to the host: observe → plan (the planner of `phase`) →
/// execute. With `dry_run` the plan is pushed to `plans` instead of executed.
async fn run_phase(
    cfg: &AgentConfig,
    d: &Desired,
    phase: Phase,
    deadline: Deadline,
    opts: RunOptions,
    rec: &mut Recorder,
    plans: &mut Vec<Vec<Planned>>,
) -> Result<String, RunError> {
    let host = Host::connect(cfg, deadline, rec).await?;
    // Post-stop removes every owned row, even while the kernel is still destroying the
    // container's veths (asynchronously): a row left behind would capture the next device of
    // that name (PVE bug #1232). Pre-start sweeps the stale ones.
    let with_owned = phase != Phase::PostStart;
    let mut obs = observe::observe(&host, d, with_owned, rec).await?;
    let steps = match phase {
        Phase::PreStart => {
            observe::mark_live_ports(&host, &mut obs).await?;
            plan::plan_pre_start(d, &obs)?
        }
        Phase::PostStart => plan::plan_post_start(d, &obs)?,
        Phase::PostStop => plan::plan_post_stop(d, &obs),
        // pre-stop never gets here: `run_locked` records it without loading the config.
        Phase::PreStop => return Ok(String::new()),
    };
    if opts.dry_run {
        plans.push(steps);
        return Ok(String::new());
    }
    execute::execute(&host, &cfg.toml.mesh, d, &obs, &steps, rec).await
}

#[cfg(test)]
mod tests;
