//! The OVSDB stages of a batch ([`super`]). Stage 1: every Port delete of the batch in ONE
//! transaction ([`Vswitch::del_ports`], each row under its own guard), ONE wait for
//! ovs-vswitchd to release the devices. Stage 3: every Port insert of the batch in ONE transaction
//! ([`Vswitch::add_ports`]; a drifted Port of op-agent's is replaced in its own transaction,
//! as [`Step::ReplacePort`] is all-or-nothing per Port), ONE wait for ovs-vswitchd, and ONE
//! read of every new `Interface`'s `ofport` and `error` (the `ovs.check` row per NIC).

use super::{collect, owned, Run, Stage};
use crate::audit::Outcome;
use crate::engine::deadline::Budget;
use crate::engine::execute;
use crate::engine::host::{Host, Links, Vswitch};
use crate::engine::plan::Step;
use crate::engine::RunError;
use crate::ovsdb::vswitch::batch::dup;
use crate::ovsdb::OvsdbError;
use serde_json::json;
use std::time::Instant;

/// Stage 1: every Port delete of the batch in one transaction, then one wait.
pub(super) async fn delete_stage<L: Links, V: Vswitch>(
    host: &Host<L, V>,
    runs: &mut [Run<'_>],
    batch: usize,
) {
    let at = collect(runs, Stage::Delete);
    if at.is_empty() {
        return;
    }
    let items: Vec<(String, crate::ovsdb::DelGuard)> = at
        .iter()
        .filter_map(|&(ri, si)| match &runs[ri].steps[si].step {
            Step::DelPort { port, guard } => Some((port.clone(), guard.to_ovsdb())),
            _ => None,
        })
        .collect();
    let t = Instant::now();
    let results = host.ovs.del_ports(&items).await;
    let elapsed = t.elapsed();
    let mut next_max = None;
    let mut waiting = Vec::new();
    for (&(ri, si), res) in at.iter().zip(results) {
        let r = &mut runs[ri];
        let p = &r.steps[si];
        let (net, name) = (p.net.map(|n| n.get()), p.step.name());
        let Step::DelPort { port, .. } = &p.step else {
            continue;
        };
        match res {
            Ok(Some(next)) => {
                r.rec
                    .outcome(name, Outcome::Ok, json!({"net": net, "port": port}));
                if let (Some(n), Some(d)) = (net, r.d.as_ref()) {
                    if let Some((i, nic)) = execute::nic_of(d, p) {
                        if *port == nic.pve_veth {
                            if let Some(o) = r.obs.nics.get(i) {
                                r.undo.of(n).pve_port = o.pve_port.clone();
                            }
                        }
                    }
                }
                next_max = next_max.max(Some(next));
                if !waiting.contains(&ri) {
                    waiting.push(ri);
                }
            }
            Ok(None) => r.rec.outcome(
                name,
                Outcome::Skipped,
                json!({"net": net, "port": port, "reason": "absent"}),
            ),
            Err(e) => {
                let e = RunError::Ovsdb(e);
                r.rec.outcome(
                    name,
                    Outcome::Failed,
                    json!({"net": net, "error": e.to_string()}),
                );
                r.failure.get_or_insert(e);
            }
        }
        r.rec.timing(name, elapsed);
        execute::failpoint(name);
    }
    if let Some(next) = next_max {
        wait_all(host, runs, &waiting, next, batch).await;
    }
}

/// ONE wait for ovs-vswitchd to apply `next_cfg` (within [`Budget::Batch`] of the batch's
/// deadline), recorded as an `ovs.wait` row in each run of `waiting`; a failed wait fails them
/// (and [`super::roll_back_failed`] then hands them all back in one batch).
pub(super) async fn wait_all<L: Links, V: Vswitch>(
    host: &Host<L, V>,
    runs: &mut [Run<'_>],
    waiting: &[usize],
    next_cfg: i64,
    batch: usize,
) {
    let t = Instant::now();
    let w = host
        .ovs
        .wait_cur_cfg(next_cfg, batch_budget(host, waiting.len()))
        .await;
    let ms = crate::report::rounded_ms(t.elapsed());
    for &ri in waiting {
        let r = &mut runs[ri];
        r.rec.timing("ovs.wait", t.elapsed());
        match &w {
            Ok(cur) => r.rec.outcome(
                "ovs.wait",
                Outcome::Ok,
                json!({"next_cfg": next_cfg, "cur_cfg": cur, "ms": ms, "batch": batch}),
            ),
            Err(e) => {
                r.rec.outcome(
                    "ovs.wait",
                    Outcome::Failed,
                    json!({"next_cfg": next_cfg, "error": e.to_string(), "batch": batch}),
                );
                r.failure.get_or_insert(RunError::Ovsdb(dup(e)));
            }
        }
    }
}

/// How long the batch's one wait may take: `[ovsdb] timeout_ms` for one container (as a
/// single run waits), and for more, until [`Budget::Batch`] of the deadline: one wait stands
/// for one per container, and ovs-vswitchd releases the devices of a batch one after another,
/// a kernel RCU grace period each in the userspace datapath (`packet_release` →
/// `synchronize_net`), so the wait grows with the batch (400 Ports deleted at once: 5.8 s on
/// the 2-CPU bench host under load). A wait that overran [`Budget::Forward`] polls on: failing
/// it would not stop ovs-vswitchd, and the rollback would queue behind the same work.
fn batch_budget<L: Links, V: Vswitch>(host: &Host<L, V>, containers: usize) -> std::time::Duration {
    match containers {
        0 | 1 => host.wait_budget(Budget::Forward),
        _ => host
            .deadline
            .wait_budget(Budget::Batch, host.deadline.length().max(host.timeout)),
    }
}

/// The Port of an add or replace step.
fn spec(s: &Step) -> Option<&crate::ovsdb::PortSpec> {
    match s {
        Step::AddPort(pp) | Step::ReplacePort(pp) | Step::AdoptPort(pp) => Some(pp),
        _ => None,
    }
}

/// Stage 3: inserts, one wait, one check; each run's rows as a single run records them.
pub(super) async fn add_stage<L: Links, V: Vswitch>(
    host: &Host<L, V>,
    runs: &mut [Run<'_>],
    batch: usize,
) {
    let at = collect(runs, Stage::Add);
    if at.is_empty() {
        return;
    }
    let (adds, replaces): (Vec<_>, Vec<_>) = at
        .into_iter()
        .partition(|&(ri, si)| matches!(runs[ri].steps[si].step, Step::AddPort(_)));
    let specs: Vec<_> = adds
        .iter()
        .filter_map(|&(ri, si)| spec(&runs[ri].steps[si].step).cloned())
        .collect();
    let t = Instant::now();
    let mut results: Vec<((usize, usize), Result<i64, OvsdbError>)> = adds
        .into_iter()
        .zip(host.ovs.add_ports(&specs).await)
        .collect();
    // Every replace (and keep mode's adopt) in one transaction too.
    let mut at_r = Vec::new();
    let mut items = Vec::new();
    for (ri, si) in replaces {
        let Some(pp) = spec(&runs[ri].steps[si].step) else {
            continue;
        };
        // PVE's own row (keep mode) is taken over whoever owns it.
        let guard = match runs[ri].steps[si].step {
            Step::AdoptPort(_) => crate::ovsdb::DelGuard::Any,
            _ => owned(),
        };
        at_r.push((ri, si));
        items.push((pp.name.clone(), guard, pp.clone()));
    }
    if !items.is_empty() {
        results.extend(at_r.into_iter().zip(host.ovs.replace_ports(&items).await));
    }
    let elapsed = t.elapsed();
    let mut next_max = None;
    let mut waiting = Vec::new();
    let mut added = Vec::new();
    for ((ri, si), res) in results {
        let r = &mut runs[ri];
        let p = &r.steps[si];
        let Some(pp) = spec(&p.step) else { continue };
        let (net, name) = (p.net.map(|n| n.get()), p.step.name());
        match res {
            Ok(next) => {
                r.rec.outcome(
                    name,
                    Outcome::Ok,
                    json!({"net": net, "port": pp.name, "bridge": pp.bridge, "tag": pp.tag,
                           "trunks": pp.trunks, "vlan_mode": pp.vlan_mode,
                           "mtu_request": pp.mtu_request, "external_ids": pp.external_ids}),
                );
                next_max = next_max.max(Some(next));
                if !waiting.contains(&ri) {
                    waiting.push(ri);
                }
                added.push((ri, si));
            }
            Err(e) => {
                let e = RunError::Ovsdb(e);
                r.rec.outcome(
                    name,
                    Outcome::Failed,
                    json!({"net": net, "error": e.to_string()}),
                );
                r.failure.get_or_insert(e);
            }
        }
        r.rec.timing(name, elapsed);
        execute::failpoint(name);
    }
    let Some(next) = next_max else { return };
    wait_all(host, runs, &waiting, next, batch).await;
    let added: Vec<(usize, usize)> = added
        .into_iter()
        .filter(|&(ri, _)| runs[ri].alive())
        .collect();
    let names: Vec<String> = added
        .iter()
        .filter_map(|&(ri, si)| spec(&runs[ri].steps[si].step).map(|p| p.name.clone()))
        .collect();
    let status = match host.ovs.interfaces_status(&names).await {
        Ok(s) => s,
        Err(e) => {
            for &(ri, _) in &added {
                runs[ri].failure.get_or_insert(RunError::Ovsdb(dup(&e)));
            }
            return;
        }
    };
    for (&(ri, si), st) in added.iter().zip(status) {
        let r = &mut runs[ri];
        if !r.alive() {
            continue;
        }
        let p = &r.steps[si];
        let Some(pp) = spec(&p.step) else { continue };
        let net = p.net.map(|n| n.get());
        let (ofport, error) = st.unwrap_or((None, Some("Interface row missing".into())));
        if ofport.unwrap_or(-1) <= 0 || error.is_some() {
            r.rec.outcome(
                "ovs.check",
                Outcome::Failed,
                json!({"net": net, "port": pp.name, "ofport": ofport, "error": error}),
            );
            r.failure = Some(RunError::NotAttached {
                port: pp.name.clone(),
                bridge: pp.bridge.clone(),
                reason: error.unwrap_or_else(|| "no ofport".into()),
            });
            continue;
        }
        r.rec.outcome(
            "ovs.check",
            Outcome::Ok,
            json!({"net": net, "port": pp.name, "ofport": ofport}),
        );
        if let Some(n) = net {
            r.undo.take(n);
        }
        let mut s = format!("on {}", pp.bridge);
        if let Some(t) = pp.tag {
            s.push_str(&format!(" tag {t}"));
        }
        s.push_str(&format!(" ofport {}", ofport.unwrap_or(-1)));
        r.summary.push(s);
    }
}
