//! The worker's batch: every container due at once is converged through ONE
//! [`engine::converge_batch`] (one OVSDB transaction of deletes, one of inserts, two waits for
//! ovs-vswitchd for the whole batch), each under PVE's config lock held through the batch, the
//! monitor's repairs gated by one batched dry run, and each failed container retried on its own
//! schedule, as [`super::run_one`] does for one.

use super::WORKER_LOCK_WAIT;
use super::{
    after_dry_run, after_run, dry_runs_first, lock_retry, pve_config_lock, run_one, Budget,
    DryVerdict, Pending,
};
use crate::config::AgentConfig;
use crate::engine::{self, Phase, RunOptions};
use crate::inspect;
use pve_integration::Vmid;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Converges `due` as one batch; returns the retries to schedule. Once `stop` is set (SIGTERM)
/// no run of the batch starts: it is checked before the batch's runs (and while PVE's config
/// locks are being taken), never in the middle of a run.
pub(super) fn run_batch(
    cfg: &AgentConfig,
    due: Vec<(Vmid, Pending)>,
    budget: &mut Budget,
    pve_lock: Duration,
    stop: &AtomicBool,
) -> Vec<(Vmid, Pending)> {
    let mut retries = Vec::new();
    let stopped = || stop.load(Ordering::SeqCst);
    if due.len() <= 1 {
        for (v, p) in due {
            if stopped() {
                break;
            }
            if let Some(r) = run_one(cfg, v, p, budget, pve_lock) {
                retries.push((v, r));
            }
        }
        return retries;
    }
    // PVE's config locks of the batch, held until every run of it is over.
    let mut locks = Vec::new();
    let mut batch: Vec<(Vmid, Pending, engine::Job)> = Vec::new();
    for (v, p) in due {
        if stopped() {
            return retries;
        }
        let managed = match inspect::managed_one(cfg, v) {
            Some(m) if inspect::is_running(cfg, v) => m,
            _ => {
                log::info!("watch: {v}: not managed or not running; nothing to do");
                continue;
            }
        };
        match pve_config_lock(cfg, v, pve_lock.min(WORKER_LOCK_WAIT)) {
            Ok(l) => locks.push(l),
            Err(e) => {
                if let Some(r) = lock_retry(v, p, &e) {
                    retries.push((v, r));
                }
                continue;
            }
        }
        let job = engine::Job {
            managed,
            phase: Phase::PostStart,
            label: "watch".into(),
            started: None,
        };
        batch.push((v, p, job));
    }
    // The monitor's repairs and the retries: one batched dry run decides which still have
    // work, and which retries would fail as before (no run, no rows: `still_failing`).
    let gated: Vec<usize> = (0..batch.len())
        .filter(|&i| dry_runs_first(&batch[i].1))
        .collect();
    if !gated.is_empty() {
        let jobs: Vec<engine::Job> = gated.iter().map(|&i| batch[i].2.clone()).collect();
        let dry = engine::converge_batch(cfg, &jobs, &[], RunOptions { dry_run: true });
        let mut keep = vec![true; batch.len()];
        for (&i, d) in gated.iter().zip(&dry) {
            let (v, p, _) = &batch[i];
            match after_dry_run(*v, p, d, budget) {
                DryVerdict::Run => {}
                DryVerdict::Drop => keep[i] = false,
                DryVerdict::Retry(again) => {
                    retries.push((*v, again));
                    keep[i] = false;
                }
            }
        }
        let mut k = keep.into_iter();
        batch.retain(|_| k.next().unwrap_or(true));
    }
    if batch.is_empty() || stopped() {
        return retries;
    }
    log::info!("watch: converging {} containers as one batch", batch.len());
    let jobs: Vec<engine::Job> = batch.iter().map(|(_, _, j)| j.clone()).collect();
    let notes: Vec<Vec<engine::Note>> = batch
        .iter_mut()
        .map(|(_, p, _)| std::mem::take(&mut p.notes))
        .collect();
    let reports = engine::converge_batch(cfg, &jobs, &notes, RunOptions::default());
    for ((v, p, _), r) in batch.into_iter().zip(reports) {
        if let Some(retry) = after_run(v, p, r.result) {
            retries.push((v, retry));
        }
    }
    drop(locks);
    retries
}
