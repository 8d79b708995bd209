//! The worker thread: converges due containers one at a time through the engine
//! ([`engine::converge`]), retrying a failed run with backoff, and gating the monitor's
//! repairs (a dry run first: a drift that is already gone, e.g. one seen between two
//! transactions of op-agent's own run, or one that cannot be planned, e.g. the rows post-stop
//! deleted, costs no run and no audit row; and at most
//! [`REPAIR_BUDGET`] repairs per container per [`REPAIR_PERIOD`], so two writers fighting over
//! a row cannot make the service spin). A retry is dry-run first as well: one that would fail
//! exactly as its last run did is not run, so a container that stays broken (its bridge
//! gone, a config typo) writes its failure rows once, not every 30 s.

use super::retry;
use crate::config::AgentConfig;
use crate::engine::plan::Step;
use crate::engine::{self, Note, Phase, RunOptions};
use crate::inspect;
use pve_integration::Vmid;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// A repair the OVSDB monitor asks for.
#[derive(Debug, Clone)]
pub struct Repair {
    /// The container.
    pub vmid: Vmid,
    /// Why, for the log (`ovsdb drift`, `dead port`, `bridge appeared`).
    pub why: &'static str,
    /// Audit rows recorded first in the run (what was found).
    pub notes: Vec<Note>,
}

/// Work for the worker thread.
#[derive(Debug, Clone)]
pub enum Job {
    /// Converge one container (a link event).
    One(Vmid, &'static str),
    /// Converge every managed running container (start-up, OVSDB back).
    All(&'static str),
    /// Converge one container the monitor found drifted, if a dry run still finds work.
    Repair(Repair),
    /// Make a pending retry of the container due now (an event that can change its outcome,
    /// e.g. a link of its name deleted); nothing when it is not in retry.
    Rearm(Vmid, &'static str),
    /// Stop after the run in progress.
    Stop,
}

/// Repairs allowed per container within [`REPAIR_PERIOD`].
pub const REPAIR_BUDGET: usize = 10;

/// The window of [`REPAIR_BUDGET`].
pub const REPAIR_PERIOD: Duration = Duration::from_secs(60);

struct Pending {
    due: Instant,
    attempt: u32,
    why: &'static str,
    notes: Vec<Note>,
    /// Dry-run first (a monitor repair); false once any other event asked for a run.
    gate: bool,
    /// Attempts that found PVE's config lock held.
    locked: u32,
    /// The last failure, for `op-agent status` ([`super::retry`]).
    last_error: Option<String>,
    /// The last failure was the audit log not written (e.g. a full disk): re-armed when space
    /// comes back ([`super::disk_space`]).
    audit_failed: bool,
}

impl Pending {
    /// The retry after failure `attempt` (error text `error`), due after `back`.
    fn failed_again(
        &self,
        attempt: u32,
        back: Duration,
        error: String,
        audit_failed: bool,
    ) -> Pending {
        Pending {
            due: Instant::now() + back,
            attempt,
            why: self.why,
            notes: Vec::new(),
            gate: false,
            locked: 0,
            audit_failed,
            last_error: Some(error),
        }
    }

    fn now(why: &'static str) -> Pending {
        Pending {
            due: Instant::now(),
            attempt: 0,
            why,
            notes: Vec::new(),
            gate: false,
            locked: 0,
            last_error: None,
            audit_failed: false,
        }
    }
}

/// Whether a dry run's plans change anything (skips and checks only: nothing to do).
fn has_work(plans: &[Vec<engine::plan::Planned>]) -> bool {
    plans.iter().flatten().any(|p| {
        !matches!(
            p.step,
            Step::Skip { .. } | Step::RecordMesh { .. } | Step::CheckMaster { .. }
        )
    })
}

/// Per-container repair budget.
#[derive(Default)]
struct Budget {
    runs: HashMap<Vmid, VecDeque<Instant>>,
}

impl Budget {
    /// Takes one repair for `v`; false when its budget is spent.
    fn take(&mut self, v: Vmid, now: Instant) -> bool {
        let q = self.runs.entry(v).or_default();
        while q
            .front()
            .is_some_and(|t| now.duration_since(*t) >= REPAIR_PERIOD)
        {
            q.pop_front();
        }
        if q.len() >= REPAIR_BUDGET {
            return false;
        }
        q.push_back(now);
        true
    }
}

/// Makes `v` due now for `why`: a new request, or one that re-arms a pending retry at once (an
/// event that can change the outcome), its backoff starting again from the first step.
fn add(pending: &mut BTreeMap<Vmid, Pending>, v: Vmid, why: &'static str) {
    let p = pending.entry(v).or_insert_with(|| Pending::now(why));
    p.due = Instant::now();
    p.attempt = 0;
    p.locked = 0;
    p.why = why;
    p.gate = false;
}

/// The worker loop: runs post-start steps (audit `phase` = `watch`) for due containers, with
/// retries ([`retry::backoff`]: 250 ms doubling, capped at 30 s) for as long as the container
/// runs and is managed; a request for a container in retry makes it due at once. Stops before
/// the next run or batch once `stop` is set (SIGTERM), or at [`Job::Stop`]; the run in
/// progress is not interrupted (it is bounded by `[hook] deadline_ms`). Writes the containers
/// in retry to [`retry::path`] after each round. Each run holds
/// PVE's config lock of the container (waited for up to `pve_lock`, at most 250 ms, then
/// retried with the same backoff), so it never reads the
/// conf in the middle of a `pct set` (pve-container `update_net` writes it more than once,
/// e.g. without the `netN` between deleting the old pair and hotplugging the new one).
pub fn worker(
    cfg: AgentConfig,
    rx: mpsc::Receiver<Job>,
    pve_lock: Duration,
    batch: bool,
    stop: Arc<AtomicBool>,
    heartbeat: super::notify::Heartbeat,
) {
    let mut pending: BTreeMap<Vmid, Pending> = BTreeMap::new();
    let mut budget = Budget::default();
    let state_path = retry::path(&cfg);
    // Nothing is in retry yet (a file left by a killed service is stale).
    let _ = std::fs::remove_file(&state_path);
    let mut published = retry::State::new();
    let mut disk = super::disk_space::DiskSpace::new(&cfg.toml.audit.database);
    loop {
        heartbeat.idle();
        publish(&state_path, &pending, &mut published);
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let now = Instant::now();
        let waits_for_space = pending.values().any(|p| p.audit_failed);
        let mut wait = pending
            .values()
            .map(|p| p.due.saturating_duration_since(now))
            .min()
            .unwrap_or(Duration::from_secs(3600));
        if waits_for_space {
            wait = wait.min(super::disk_space::POLL);
            if disk.space_back() {
                rearm_audit_failed(&mut pending);
            }
        } else {
            disk.reset();
        }
        match rx.recv_timeout(wait) {
            Ok(job) => {
                if !take(&cfg, &mut pending, job) {
                    return;
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if batch && pending.values().any(|p| p.due <= Instant::now()) {
            // Coalesce: what else is asked for within the window joins the batch.
            let end = Instant::now() + COALESCE_MAX;
            loop {
                let left = end.saturating_duration_since(Instant::now()).min(COALESCE);
                if left.is_zero() {
                    break;
                }
                match rx.recv_timeout(left) {
                    Ok(job) => {
                        if !take(&cfg, &mut pending, job) {
                            return;
                        }
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    Err(mpsc::RecvTimeoutError::Timeout) => break,
                }
            }
        }
        let now = Instant::now();
        let due: Vec<Vmid> = pending
            .iter()
            .filter(|(_, p)| p.due <= now)
            .map(|(v, _)| *v)
            .collect();
        let ran = !due.is_empty();
        if ran {
            heartbeat.busy();
        }
        if batch {
            let due: Vec<(Vmid, Pending)> = due
                .into_iter()
                .filter_map(|v| pending.remove(&v).map(|p| (v, p)))
                .collect();
            for (v, retry) in batched::run_batch(&cfg, due, &mut budget, pve_lock, &stop) {
                pending.entry(v).or_insert(retry);
            }
            if ran {
                super::heap::trim();
            }
            continue;
        }
        for v in due {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            if let Some(p) = pending.remove(&v) {
                if let Some(retry) = run_one(&cfg, v, p, &mut budget, pve_lock) {
                    pending.entry(v).or_insert(retry);
                }
            }
        }
        if ran {
            super::heap::trim();
        }
    }
}

/// Free space is back on the audit log's file system: every retry that failed to write the
/// audit log is due at once, its backoff starting over.
fn rearm_audit_failed(pending: &mut BTreeMap<Vmid, Pending>) {
    for (v, p) in pending.iter_mut().filter(|(_, p)| p.audit_failed) {
        log::info!("watch: {v}: space is free again for the audit log; retrying now");
        p.due = Instant::now();
        p.attempt = 0;
        p.audit_failed = false;
    }
}

/// The window after the last request within which another joins the batch. Longer than two
/// periods of the plug poller ([`super::links::PLUG_POLL`], plus the poll itself): the veths
/// of one burst (every veth re-created at once) are handed over in consecutive polls as
/// their plug is seen, and a shorter window would close between two polls and split the
/// burst into batches (each with its own waits for ovs-vswitchd).
pub const COALESCE: Duration = Duration::from_millis(50);

/// The longest a due batch waits for more requests (the window extends by [`COALESCE`] after
/// each request, up to this).
pub const COALESCE_MAX: Duration = Duration::from_millis(500);

/// Takes one request into `pending`; false for [`Job::Stop`].
fn take(cfg: &AgentConfig, pending: &mut BTreeMap<Vmid, Pending>, job: Job) -> bool {
    match job {
        Job::Stop => return false,
        Job::One(v, why) => add(pending, v, why),
        Job::Rearm(v, why) => {
            if let Some(p) = pending.get_mut(&v) {
                log::info!("watch: {v}: {why}; retrying now");
                p.due = Instant::now();
            }
        }
        Job::All(why) => {
            for v in inspect::managed(cfg) {
                if inspect::is_running(cfg, v) {
                    add(pending, v, why);
                }
            }
            log::info!("watch: reconcile all ({why}): {} running", pending.len());
        }
        Job::Repair(r) => {
            let p = pending.entry(r.vmid).or_insert_with(|| Pending {
                gate: true,
                ..Pending::now(r.why)
            });
            // A retry waiting out its backoff becomes due at once: what the monitor saw
            // (a bridge that appeared, a row changed) can change the outcome.
            p.due = p.due.min(Instant::now());
            p.notes.extend(r.notes);
        }
    }
    true
}

/// Writes the containers of `pending` that are in retry to `path` when they differ from
/// `published` (what was written last); a write error is logged, the worker goes on.
fn publish(
    path: &std::path::Path,
    pending: &BTreeMap<Vmid, Pending>,
    published: &mut retry::State,
) {
    let now = Instant::now();
    let state: retry::State = pending
        .iter()
        .filter_map(|(v, p)| {
            let e = p.last_error.as_ref()?;
            Some((
                v.get(),
                retry::Entry {
                    attempt: p.attempt.max(p.locked),
                    last_error: e.clone(),
                    next_ms: 0,
                },
            ))
        })
        .collect();
    if state == *published {
        return;
    }
    let mut with_time = state.clone();
    for (v, e) in with_time.iter_mut() {
        let due = Vmid::new(*v)
            .and_then(|v| pending.get(&v))
            .map(|p| p.due.saturating_duration_since(now))
            .unwrap_or_default();
        e.next_ms = retry::epoch_ms_after(due);
    }
    if let Err(e) = retry::write(path, &with_time) {
        log::warn!("watch: cannot write {}: {e}", path.display());
    }
    *published = state;
}

/// Longest wait of the worker for PVE's config lock per attempt: PVE holds it through a whole
/// `pct start` (pve-container `vm_start` under `lock_config`, post-start hookscript included),
/// and the worker serves every container, so it backs off instead of waiting long.
const WORKER_LOCK_WAIT: Duration = Duration::from_millis(250);

/// PVE's config lock of `v` (pve-guest-common `lock_config_full` → pve-common
/// `lock_file_full`, exclusive), waited for up to `timeout`.
pub fn pve_config_lock(
    cfg: &AgentConfig,
    v: Vmid,
    timeout: Duration,
) -> Result<crate::lock::VmidLock, crate::lock::LockError> {
    let dir = cfg.toml.pve.root.join("run/lock/lxc");
    let path = dir.join(format!("pve-config-{v}.lock"));
    crate::lock::lock_file(&dir, &path, timeout)
}

/// One run for `v`; the retry to schedule when it failed.
fn run_one(
    cfg: &AgentConfig,
    v: Vmid,
    p: Pending,
    budget: &mut Budget,
    pve_lock: Duration,
) -> Option<Pending> {
    let managed = match inspect::managed_one(cfg, v) {
        Some(m) if inspect::is_running(cfg, v) => m,
        _ => {
            log::info!("watch: {v}: not managed or not running; nothing to do");
            return None;
        }
    };
    let _pve = match pve_config_lock(cfg, v, pve_lock.min(WORKER_LOCK_WAIT)) {
        Ok(l) => l,
        Err(e) => return lock_retry(v, p, &e),
    };
    let job = engine::Job {
        managed,
        phase: Phase::PostStart,
        label: "watch".into(),
        started: None,
    };
    if dry_runs_first(&p) {
        let dry = engine::converge_noted(cfg, &job, &[], RunOptions { dry_run: true });
        match after_dry_run(v, &p, &dry, budget) {
            DryVerdict::Run => {}
            DryVerdict::Drop => return None,
            DryVerdict::Retry(again) => return Some(again),
        }
    }
    let report = engine::converge_noted(cfg, &job, &p.notes, RunOptions::default());
    after_run(v, p, report.result)
}

/// Whether `p` is dry-run before its run: a monitor repair ([`gate_passes`]) or a retry
/// ([`repeats`]).
fn dry_runs_first(p: &Pending) -> bool {
    p.gate || repeats(p)
}

/// What a dry run decided for a due container.
enum DryVerdict {
    /// Make the run.
    Run,
    /// No run: nothing to do, or the repair budget is spent.
    Drop,
    /// No run: it would fail as the last did; this retry is scheduled instead.
    Retry(Pending),
}

/// The verdict on `p` (of `v`) after its dry run `dry` ([`dry_runs_first`]).
fn after_dry_run(v: Vmid, p: &Pending, dry: &engine::Report, budget: &mut Budget) -> DryVerdict {
    if let Some(again) = still_failing(v, p, dry) {
        return DryVerdict::Retry(again);
    }
    if p.gate && !gate_passes(v, p, dry, budget) {
        return DryVerdict::Drop;
    }
    DryVerdict::Run
}

/// Whether `p` is a retry whose dry run may show that nothing changed since its last
/// failure: a run failed before, the failure was not the audit log's (a dry run writes no
/// rows, so it cannot tell), and no event brought notes to record.
fn repeats(p: &Pending) -> bool {
    p.attempt > 0 && p.last_error.is_some() && !p.audit_failed && p.notes.is_empty()
}

/// The next retry of `v` when its dry run `dry` fails exactly as its last run did
/// ([`repeats`]): the outcome cannot have changed, so no run is made and no audit row is
/// written for it (the first failure's rows and `op-agent status` say it); the backoff
/// goes on. `None` when a run is to be made.
fn still_failing(v: Vmid, p: &Pending, dry: &engine::Report) -> Option<Pending> {
    if !repeats(p) {
        return None;
    }
    let e = dry.result.as_ref().err()?.to_string();
    if p.last_error.as_deref() != Some(e.as_str()) {
        return None;
    }
    let attempt = p.attempt + 1;
    let back = retry::backoff(attempt);
    log::debug!(
        "watch: {v} ({}): still failing as before (attempt {attempt}, not recorded again): {e}; \
         retry in {} ms",
        p.why,
        back.as_millis()
    );
    Some(p.failed_again(attempt, back, e, false))
}

/// Whether a monitor repair of `v` is to run after its dry run `dry`: the plan has work and
/// the repair budget is not spent.
fn gate_passes(v: Vmid, p: &Pending, dry: &engine::Report, budget: &mut Budget) -> bool {
    match &dry.result {
        Ok(_) if !has_work(&dry.plans) => {
            log::debug!("watch: {v} ({}): already converged", p.why);
            return false;
        }
        Ok(_) => {}
        // E.g. its links are gone: the container is stopping (post-stop deletes its rows
        // while lxc's monitor still runs). A run would fail the same way.
        Err(e) => {
            log::info!("watch: {v} ({}): not repaired: {e}", p.why);
            return false;
        }
    }
    if !budget.take(v, Instant::now()) {
        log::error!(
            "watch: {v} ({}): more than {REPAIR_BUDGET} repairs within {} s; someone keeps \
             changing its OVS rows; leaving it until the next event",
            p.why,
            REPAIR_PERIOD.as_secs()
        );
        return false;
    }
    true
}

/// The retry of `v` when PVE's config lock was not taken (`e`): not a failed run, PVE is
/// changing the container; retried with backoff, not counted.
fn lock_retry(v: Vmid, p: Pending, e: &crate::lock::LockError) -> Option<Pending> {
    let locked = p.locked + 1;
    let back = retry::backoff(locked);
    log::warn!(
        "watch: {v} ({}): {e}; retry in {} ms",
        p.why,
        back.as_millis()
    );
    Some(Pending {
        due: Instant::now() + back,
        locked,
        last_error: Some(e.to_string()),
        ..p
    })
}

/// Logs the result of a run of `v`; the retry to schedule when it failed.
fn after_run(v: Vmid, p: Pending, result: Result<String, engine::RunError>) -> Option<Pending> {
    match result {
        Ok(s) => {
            // A run that only deleted a row (a dead or second Port) has no NIC summary.
            let s = if s.is_empty() { "repaired" } else { s.as_str() };
            log::info!("watch: {v} ({}): {s}", p.why);
            None
        }
        Err(e) => {
            let attempt = p.attempt + 1;
            let back = retry::backoff(attempt);
            let line = format_args!(
                "watch: {v} ({}): {e}; retry in {} ms",
                p.why,
                back.as_millis()
            );
            if ovsdb_unreachable(&e) {
                // One condition for every container: warned once, then once a minute.
                super::warn_limit::ovsdb_down(line);
            } else {
                log::warn!("{line}");
            }
            let audit_failed = matches!(
                e.root(),
                engine::RunError::AuditBefore(_)
                    | engine::RunError::Audit(_)
                    | engine::RunError::Unrecorded(_)
            );
            Some(p.failed_again(attempt, back, e.to_string(), audit_failed))
        }
    }
}

/// Whether run error `e` is OVSDB being unreachable (no connection, or lost), which the
/// monitor warns about too ([`super::warn_limit::OVSDB_DOWN`]).
fn ovsdb_unreachable(e: &engine::RunError) -> bool {
    use crate::ovsdb::OvsdbError;
    matches!(
        e.root(),
        engine::RunError::Ovsdb(
            OvsdbError::Connect { .. }
                | OvsdbError::ConnectTimeout { .. }
                | OvsdbError::ConnectionClosed { .. }
        )
    )
}

#[path = "worker_batch.rs"]
mod batched;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::plan::Planned;

    #[test]
    fn the_repair_budget_refills_after_the_period() {
        let mut b = Budget::default();
        let v: Vmid = "100".parse().unwrap();
        let t = Instant::now();
        for _ in 0..REPAIR_BUDGET {
            assert!(b.take(v, t));
        }
        assert!(!b.take(v, t), "spent");
        assert!(b.take("101".parse().unwrap(), t), "per container");
        assert!(b.take(v, t + REPAIR_PERIOD), "refilled");
    }

    #[test]
    fn the_collection_window_outlasts_two_plug_polls() {
        assert!(COALESCE > 2 * crate::watch::links::PLUG_POLL);
        assert!(COALESCE_MAX >= 10 * COALESCE);
    }

    #[test]
    fn only_changing_steps_are_work() {
        let skip = Planned {
            net: None,
            step: Step::Skip { reason: "x".into() },
        };
        assert!(!has_work(&[vec![skip.clone()]]));
        assert!(!has_work(&[]));
        let up = Planned {
            net: None,
            step: Step::LinkUp {
                link: "vi100".into(),
            },
        };
        assert!(has_work(&[vec![skip, up]]));
    }
}
