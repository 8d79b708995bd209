//! Batched convergence of many containers at once (`watch`, `apply --all`), for the events that
//! hit every container together: `ifreload -a` deleting every owned Port of a bridge, an OVS
//! database restored or re-created, a host-wide event re-creating many veths.
//!
//! Every container keeps what a single run gives it ([`super::converge`]): its per-vmid lock,
//! its own audit recorder and run id (the intent row before any change, the outcome rows
//! after), its own plan (the same pure [`plan::plan_post_start`]), its own [`Report`], and on a
//! failure its own rollback of PVE's plumbing. What is shared is the host: one connection, and
//! the execution phase by phase, so ovs-vswitchd reconfigures twice per batch instead of twice
//! per container (each reconfiguration walks every port of the bridge):
//! 1. every Port delete of the batch in ONE transaction ([`Vswitch::del_ports`]), each row
//!    under its own ownership guard, then ONE wait for `cur_cfg`;
//! 2. the link steps per container (delete, down, rename, up; netlink);
//! 3. every Port insert in ONE transaction ([`Vswitch::add_ports`]), ONE wait, ONE read of
//!    every `Interface`'s `ofport`/`error`;
//! 4. the remaining checks per container.
//!
//! The stages keep each container's own order of steps of one kind, and the planner's order
//! between kinds holds (a Port is deleted and released before its device is renamed or
//! deleted, ovs-issues#284; the Port is added after the rename). A guard that aborts a
//! batched transaction only fails its own container: the OVSDB layer does that item alone and
//! retries the others. A container that fails at any stage is taken out of the later stages
//! and every NIC of it op-agent had taken apart is put back (for all such containers at once,
//! [`rollback::hand_back_many`]).

use super::execute::{self, Undos};
use super::plan::{self, plan_lines, Planned, Step};
use super::{
    rollback, Deadline, Host, Job, Links, Note, Phase, Report, RunError, RunOptions, Vswitch,
};
use crate::audit::AuditLog;
use crate::audit::Outcome;
use crate::config::{AgentConfig, ConfigError, MeshSection};
use crate::desired::Desired;
use crate::engine::observed::Observed;
use crate::engine::ownership::DelGuard;
use crate::lock::VmidLock;
use crate::ovsdb::vswitch::batch::dup;
use crate::report::Recorder;
use serde_json::json;
use std::time::Instant;

/// One container of a batch.
struct Run<'a> {
    /// Its index in the jobs.
    i: usize,
    job: &'a Job,
    started: Instant,
    deadline: Deadline,
    lock: Option<VmidLock>,
    rec: Recorder,
    d: Option<Desired>,
    obs: Observed,
    steps: Vec<Planned>,
    undo: Undos,
    summary: Vec<String>,
    changes: bool,
    plans: Vec<Vec<Planned>>,
    /// The first failure of a step; the run is rolled back and taken out of later stages.
    failure: Option<RunError>,
    /// The run's result once it is over.
    done: Option<Result<String, RunError>>,
}

impl Run<'_> {
    fn alive(&self) -> bool {
        self.done.is_none() && self.failure.is_none()
    }
}

/// Converges `jobs` as one batch (post-start steps, e.g. `watch` and `apply --all`), `notes[i]`
/// recorded first in job `i`'s run (missing: none). Returns one [`Report`] per job, in order.
/// A single job, and jobs of another phase, run alone as [`super::converge`] runs them.
///
/// Each job is under its own lock, recorder and [`Deadline`]; the batch's waits for
/// ovs-vswitchd are bounded by the earliest deadline, and when it passes every unfinished
/// container gets a `hook.deadline failed` row and [`RunError::Deadline`].
pub fn converge_batch(
    cfg: &AgentConfig,
    jobs: &[Job],
    notes: &[Vec<Note>],
    opts: RunOptions,
) -> Vec<Report> {
    let t0 = Instant::now();
    let notes_of = |i: usize| notes.get(i).map(Vec::as_slice).unwrap_or(&[]);
    let one_by_one = |cfg: &AgentConfig| -> Vec<Report> {
        let mut out = Vec::new();
        for (i, job) in jobs.iter().enumerate() {
            out.push(super::converge_noted(cfg, job, notes_of(i), opts));
        }
        out
    };
    let batched = jobs.iter().filter(|j| j.phase == Phase::PostStart).count();
    if batched < 2 {
        return one_by_one(cfg);
    }
    // One audit log for the batch; when it cannot be opened, each container opens its own and
    // reports its own error.
    let mut log = match opts.dry_run {
        true => None,
        false => match audit::open_log(cfg, Deadline::of_config(cfg, t0)) {
            Ok(l) => Some(l),
            Err(_) => return one_by_one(cfg),
        },
    };
    let mut reports: Vec<Option<Report>> = jobs.iter().map(|_| None).collect();
    let mut runs = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        let n = notes_of(i);
        if job.phase != Phase::PostStart {
            reports[i] = Some(super::converge_noted(cfg, job, n, opts));
            continue;
        }
        let started = job.started.unwrap_or_else(Instant::now);
        let deadline = Deadline::of_config(cfg, started);
        match lock(cfg, job, deadline, opts) {
            Err(e) => {
                reports[i] = Some(Report {
                    vmid: job.managed.vmid,
                    plans: Vec::new(),
                    timings: None,
                    result: Err(e),
                })
            }
            Ok(lock) => {
                let mut rec = Recorder::new(job.managed.vmid.get(), &job.label, None, started);
                if !opts.dry_run {
                    super::note_unrecorded(cfg, job.managed.vmid, &mut rec);
                }
                for note in n {
                    rec.outcome(&note.step, note.outcome, note.detail.clone());
                }
                runs.push(Run {
                    i,
                    job,
                    started,
                    deadline,
                    lock,
                    rec,
                    d: None,
                    obs: Observed::default(),
                    steps: Vec::new(),
                    undo: Undos::default(),
                    summary: Vec::new(),
                    changes: false,
                    plans: Vec::new(),
                    failure: None,
                    done: None,
                });
            }
        }
    }
    let opened = t0.elapsed();
    for r in &mut runs {
        load(r);
    }
    let loaded = t0.elapsed();
    let batch = runs.len();
    if runs.iter().any(Run::alive) {
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(bounded(cfg, opts, &mut runs, log.as_mut())),
            Err(e) => {
                for r in runs.iter_mut().filter(|r| r.alive()) {
                    let e = std::io::Error::new(e.kind(), e.to_string());
                    r.done = Some(Err(RunError::Runtime(e)));
                }
            }
        }
    }
    let ran = t0.elapsed();
    audit::finish(log.as_mut(), &mut runs);
    drop(log);
    for mut r in runs {
        let result = r.done.take().unwrap_or_else(|| Ok(String::new()));
        let timings = Some((std::mem::take(&mut r.rec.timings), r.started.elapsed()));
        // The audit log (closed above) before the lock.
        drop(r.rec);
        drop(r.lock);
        reports[r.i] = Some(Report {
            vmid: r.job.managed.vmid,
            plans: r.plans,
            timings,
            result,
        });
    }
    if batch > 0 {
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        log::info!(
            "batch of {batch}: audit log and locks open {:.1} ms, loaded {:.1} ms, run {:.1} ms, \
             audit rows written {:.1} ms",
            ms(opened),
            ms(loaded),
            ms(ran),
            ms(t0.elapsed())
        );
    }
    reports.into_iter().flatten().collect()
}

/// The load step of one run, with its `config.validate` row.
fn load(r: &mut Run<'_>) {
    let m = &r.job.managed;
    let loaded = m.load().and_then(|d| {
        d.ok_or_else(|| ConfigError::file(&m.pve_conf, "container TOML or PVE conf vanished"))
    });
    match loaded {
        Ok(d) => {
            r.rec.outcome(
                "config.validate",
                Outcome::Ok,
                json!({"nics": d.nics.len(), "network_type": d.network_type.as_str()}),
            );
            r.d = Some(d);
        }
        Err(e) => {
            r.rec.outcome(
                "config.validate",
                Outcome::Failed,
                json!({"error": e.to_string()}),
            );
            r.done = Some(Err(RunError::Config(e)));
        }
    }
}

/// [`phases`], stopped at the earliest deadline of the batch.
async fn bounded(
    cfg: &AgentConfig,
    opts: RunOptions,
    runs: &mut [Run<'_>],
    log: Option<&mut AuditLog>,
) {
    let Some(deadline) = runs
        .iter()
        .filter(|r| r.alive())
        .map(|r| r.deadline)
        .min_by_key(Deadline::remaining)
    else {
        return;
    };
    let r = tokio::time::timeout(deadline.remaining(), async {
        let host = match Host::connect(cfg, deadline, &mut first_alive(runs).rec).await {
            Ok(h) => h,
            Err(e) => {
                fail_all(runs, &e);
                return;
            }
        };
        phases(&host, &cfg.toml.mesh, opts, runs, log).await;
    })
    .await;
    if r.is_err() {
        for r in runs.iter_mut().filter(|r| r.done.is_none()) {
            let e = RunError::Deadline {
                ms: r.deadline.length().as_millis(),
            };
            r.rec.outcome(
                "hook.deadline",
                Outcome::Failed,
                json!({"error": e.to_string()}),
            );
            r.done = Some(Err(e));
        }
    }
}

fn first_alive<'a, 'b>(runs: &'a mut [Run<'b>]) -> &'a mut Run<'b> {
    let i = runs.iter().position(Run::alive).unwrap_or(0);
    &mut runs[i]
}

/// Every run still going fails with (a copy of) `e`.
fn fail_all(runs: &mut [Run<'_>], e: &RunError) {
    for r in runs.iter_mut().filter(|r| r.alive()) {
        r.done = Some(Err(dup_run(e)));
    }
}

/// A copy of a connect or wait error for each container it failed.
fn dup_run(e: &RunError) -> RunError {
    match e {
        RunError::Ovsdb(o) => RunError::Ovsdb(dup(o)),
        RunError::NetlinkSocket(io) => {
            RunError::NetlinkSocket(std::io::Error::new(io.kind(), io.to_string()))
        }
        other => RunError::Ovsdb(crate::ovsdb::OvsdbError::BadReply {
            method: "batch".into(),
            detail: other.to_string(),
        }),
    }
}

/// Which stage of the batch runs a step.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Port deletes (one transaction, one wait).
    Delete,
    /// Link steps, per container.
    Links,
    /// Port inserts and replacements (one transaction, one wait, one check).
    Add,
    /// Checks and records, per container.
    Last,
}

fn stage(s: &Step) -> Stage {
    match s {
        Step::DelPort { .. } => Stage::Delete,
        Step::DelLink { .. }
        | Step::LinkDown { .. }
        | Step::ClearQdiscs { .. }
        | Step::LinkRename { .. }
        | Step::LinkUp { .. }
        | Step::AltName { .. }
        | Step::DelAltName { .. } => Stage::Links,
        Step::AddPort(_) | Step::ReplacePort(_) | Step::AdoptPort(_) => Stage::Add,
        Step::CheckMaster { .. }
        | Step::DelStaleQos
        | Step::ConfirmMesh
        | Step::RecordMesh { .. }
        | Step::Skip { .. } => Stage::Last,
    }
}

/// Observe → plan → intent → the four stages, on one host connection.
async fn phases<L: Links, V: Vswitch>(
    host: &Host<L, V>,
    mesh: &MeshSection,
    opts: RunOptions,
    runs: &mut [Run<'_>],
    log: Option<&mut AuditLog>,
) {
    let t = Instant::now();
    // Observe every container at once: one link dump and one OVSDB snapshot for the batch.
    let at: Vec<usize> = (0..runs.len())
        .filter(|&i| runs[i].alive() && runs[i].d.is_some())
        .collect();
    let results = {
        let mut args: Vec<(&Desired, &mut Recorder)> = runs
            .iter_mut()
            .filter(|r| r.alive())
            .filter_map(|r| {
                let Run { d, rec, .. } = r;
                Some((d.as_ref()?, rec))
            })
            .collect();
        super::observe_batch::observe_many(host, &mut args).await
    };
    for (i, res) in at.into_iter().zip(results) {
        match res {
            Ok(o) => runs[i].obs = o,
            Err(e) => runs[i].done = Some(Err(e)),
        }
    }
    for r in runs.iter_mut().filter(|r| r.alive()) {
        let Some(d) = r.d.as_ref() else { continue };
        match plan::plan_post_start(d, &r.obs) {
            Ok(steps) if opts.dry_run => {
                r.plans.push(steps);
                r.done = Some(Ok(String::new()));
            }
            Ok(steps) => r.steps = steps,
            Err(e) => r.done = Some(Err(RunError::Plan(e))),
        }
    }
    // Write-ahead: each container's intent row before any of its changes.
    for r in runs.iter_mut().filter(|r| r.alive()) {
        r.changes = r.steps.iter().any(|p| super::plan::changes_host(&p.step));
    }
    let observed = t.elapsed();
    match log {
        Some(log) => audit::write_intents(log, runs),
        None => fail_all(
            runs,
            &RunError::Runtime(std::io::Error::other("no audit log")),
        ),
    }
    let written = t.elapsed();
    let batch = runs.iter().filter(|r| r.alive()).count();
    add::delete_stage(host, runs, batch).await;
    roll_back_failed(host, runs).await;
    let deleted = t.elapsed();
    per_run_stage(host, mesh, runs, Stage::Links).await;
    roll_back_failed(host, runs).await;
    let linked = t.elapsed();
    add::add_stage(host, runs, batch).await;
    roll_back_failed(host, runs).await;
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    if batch > 0 {
        log::info!(
            "batch of {batch}: observed and planned {:.1} ms, intents {:.1} ms, deletes and \
             wait {:.1} ms, links {:.1} ms, inserts, wait and check {:.1} ms",
            ms(observed),
            ms(written),
            ms(deleted),
            ms(linked),
            ms(t.elapsed())
        );
    }
    per_run_stage(host, mesh, runs, Stage::Last).await;
    roll_back_failed(host, runs).await;
    for r in runs.iter_mut().filter(|r| r.alive()) {
        if !r.changes {
            r.rec.outcome("run.converged", Outcome::Ok, json!({}));
        }
        r.done = Some(Ok(super::plan::run_summary(&r.summary, &r.steps)));
    }
}

/// The `(run, step)` indices of the alive runs' steps of `stage`; a run with a step whose
/// failure is injected (`OP_AGENT_FAILPOINT=fail:<step>`) fails before any of them.
fn collect(runs: &mut [Run<'_>], st: Stage) -> Vec<(usize, usize)> {
    let mut at = Vec::new();
    for (ri, r) in runs.iter_mut().enumerate().filter(|(_, r)| r.alive()) {
        let mine: Vec<usize> = (0..r.steps.len())
            .filter(|&si| stage(&r.steps[si].step) == st)
            .collect();
        let injected = mine.iter().find_map(|&si| {
            let p = &r.steps[si];
            execute::injected_failure(p.step.name())
                .map(|e| (p.net.map(|n| n.get()), p.step.name(), e))
        });
        match injected {
            Some((net, name, e)) => {
                r.rec.outcome(
                    name,
                    Outcome::Failed,
                    json!({"net": net, "error": e.to_string()}),
                );
                r.failure = Some(e);
            }
            None => at.extend(mine.into_iter().map(|si| (ri, si))),
        }
    }
    at
}

/// Stages 2 and 4: each alive run's steps of `st`, in its order, as a single run executes them;
/// the runs side by side (their netlink requests pipelined on the one connection), so the
/// kernel's link changes of a batch come in one burst, which ovs-vswitchd takes in one or two
/// reconfigurations (it reconfigures once per burst of link events it sees), instead of one
/// round trip after another.
async fn per_run_stage<L: Links, V: Vswitch>(
    host: &Host<L, V>,
    mesh: &MeshSection,
    runs: &mut [Run<'_>],
    st: Stage,
) {
    let at = collect(runs, st);
    let mut mine: Vec<Vec<usize>> = runs.iter().map(|_| Vec::new()).collect();
    for (ri, si) in at {
        mine[ri].push(si);
    }
    let each = runs
        .iter_mut()
        .zip(mine)
        .filter(|(_, steps)| !steps.is_empty())
        .map(|(r, steps)| async move {
            for si in steps {
                if !r.alive() {
                    return;
                }
                let Some(d) = r.d.as_ref() else { return };
                let p = &r.steps[si];
                let t = Instant::now();
                let res = execute::step(host, mesh, d, &r.obs, p, &mut r.rec, &mut r.undo).await;
                r.rec.timing(p.step.name(), t.elapsed());
                execute::failpoint(p.step.name());
                match res {
                    Ok(Some(s)) => r.summary.push(s),
                    Ok(None) => {}
                    Err(e) => r.failure = Some(e),
                }
            }
        });
    futures_util::future::join_all(each).await;
}

/// Every run that failed in the last stage: PVE's plumbing of each NIC op-agent had taken
/// apart is put back, for all of them at once ([`rollback::hand_back_many`]: one transaction
/// per kind and one wait each, however many failed; a wait that failed the whole batch must
/// not turn into a rollback with its own waits per container), and each run ends with its
/// failure and its own `rollback.*` rows.
async fn roll_back_failed<L: Links, V: Vswitch>(host: &Host<L, V>, runs: &mut [Run<'_>]) {
    // The failed runs (index into `runs`, failure) and their NICs; item.0 indexes `failed`.
    let mut failed = Vec::new();
    let mut items = Vec::new();
    for (i, r) in runs.iter_mut().enumerate() {
        if r.done.is_some() {
            continue;
        }
        let Some(e) = r.failure.take() else { continue };
        for (net, u) in r.undo.take_all() {
            items.push((failed.len(), net, u));
        }
        failed.push((i, e));
    }
    if failed.is_empty() {
        return;
    }
    let owner: Vec<usize> = items.iter().map(|(k, _, _)| *k).collect();
    let handed = if items.is_empty() {
        Vec::new()
    } else {
        let mut recs: Vec<&mut Recorder> = runs
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| failed.iter().any(|(f, _)| f == i))
            .map(|(_, r)| &mut r.rec)
            .collect();
        rollback::hand_back_many(host, items, &mut recs, "rollback").await
    };
    for (k, (i, e)) in failed.into_iter().enumerate() {
        let mine: Vec<_> = owner
            .iter()
            .zip(&handed)
            .filter(|(o, _)| **o == k)
            .map(|(_, h)| h.clone())
            .collect();
        runs[i].done = Some(Err(e.rolled_back(&mine)));
    }
}

/// Guard of a replaced Port (op-agent's own, drifted): owned only.
fn owned() -> crate::ovsdb::DelGuard {
    DelGuard::Owned.to_ovsdb()
}

#[path = "batch_add.rs"]
mod add;

#[path = "batch_audit.rs"]
mod audit;

/// The per-vmid lock of `job` (not for a dry run), waited for within `deadline`.
fn lock(
    cfg: &AgentConfig,
    job: &Job,
    deadline: Deadline,
    opts: RunOptions,
) -> Result<Option<VmidLock>, RunError> {
    if opts.dry_run {
        return Ok(None);
    }
    crate::lock::lock_vmid(
        &cfg.toml.pve.root.join("run/op-agent"),
        job.managed.vmid.get(),
        super::lock_wait(cfg, job, deadline),
    )
    .map(Some)
    .map_err(RunError::Lock)
}

#[cfg(test)]
#[path = "batch_tests.rs"]
mod tests;
