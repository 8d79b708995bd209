//! Rollback: after a failed post-start step, PVE's own plumbing of that NIC is put back where
//! op-agent had taken it apart: `veth<vmid>i<n>` renamed back (after ovs-vswitchd released
//! op-agent's Port, ovs-issues#284), set up, and PVE's Port re-added with PVE's own
//! tag/trunks/vlan_mode/mtu_request. Best effort: each action gets an audit row
//! (`rollback.rename`, `rollback.link-up`, `rollback.add-port`, `ok` or `failed`).

use crate::audit::Outcome;
use crate::engine::deadline::Budget;
use crate::engine::host::{Host, Links, Vswitch};
use crate::engine::observed::ObservedPort;
use crate::engine::ownership::DelGuard;
use crate::ovsdb::PortSpec;
use crate::report::Recorder;
use serde_json::{json, Value};

/// Per-NIC progress of a post-start, for putting PVE's plumbing back when a step fails.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Undo {
    /// PVE's port op-agent deleted (re-added with PVE's values).
    pub pve_port: Option<ObservedPort>,
    /// PVE's veth op-agent set down (set up again, unless the rename back does it).
    pub downed: Option<String>,
    /// `(pve name, new name)` after a rename.
    pub renamed: Option<(String, String)>,
}

/// The audit row of one rollback action: `detail`, plus `error` when it failed.
pub fn record_rollback(rec: &mut Recorder, step: &str, r: Result<(), String>, mut detail: Value) {
    match r {
        Ok(()) => rec.outcome(step, Outcome::Ok, detail),
        Err(e) => {
            detail["error"] = json!(e);
            rec.outcome(step, Outcome::Failed, detail)
        }
    }
}

/// What a hand-back of one NIC did, for the line the admin reads (the PVE task log): which
/// PVE Port is back on which bridge, and each action that failed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HandedBack {
    /// The NIC's index (`net<N>`).
    pub net: u8,
    /// `(PVE's Port name, its bridge)` when that Port was re-added and applied.
    pub port: Option<(String, String)>,
    /// The link under PVE's name again (renamed back, or set up again).
    pub link: Option<String>,
    /// Each action that failed, with its error.
    pub failed: Vec<String>,
}

impl HandedBack {
    /// One clause for the failure line: `rolled back: PVE's port veth100i0 is back on ovsbr0;
    /// the container is reachable as before`, or `rollback of net0 incomplete: …` naming each
    /// failed action (the audit rows `rollback.*` have the details).
    pub fn clause(&self) -> String {
        match (&self.port, &self.link, self.failed.is_empty()) {
            (Some((port, bridge)), _, true) => format!(
                "rolled back: PVE's port {port} is back on {bridge}; the container is \
                 reachable as before"
            ),
            (None, Some(link), true) => {
                format!(
                    "rolled back: {link} is as PVE left it; the container is reachable as before"
                )
            }
            (None, None, true) => format!("net{}: nothing to roll back", self.net),
            (_, _, false) => format!(
                "rollback of net{} incomplete: {}",
                self.net,
                self.failed.join("; ")
            ),
        }
    }
}

/// The clauses of `handed` joined for one line (see [`HandedBack::clause`]).
pub fn clauses(handed: &[HandedBack]) -> String {
    let v: Vec<String> = handed.iter().map(HandedBack::clause).collect();
    v.join("; ")
}

/// Puts PVE's plumbing of `net` back after a failed step: delete op-agent's Port and wait for
/// ovs-vswitchd to release the device, rename back (and up), or set PVE's veth up again when
/// it was only set down, then re-add PVE's Port with PVE's own values. Each wait uses
/// [`Budget::Rollback`]. Never fails: every action's outcome is an audit row, and the result
/// says what is back ([`HandedBack`]).
pub async fn restore_pve<L: Links, V: Vswitch>(
    host: &Host<L, V>,
    net: u8,
    u: Undo,
    rec: &mut Recorder,
) -> HandedBack {
    hand_back(host, net, u, rec, "rollback").await
}

/// [`restore_pve`] with audit steps named `<prefix>.rename`, `<prefix>.link-up` and
/// `<prefix>.add-port` (`op-agent release` hands NICs back with the prefix `release`).
/// Test builds (`failpoints`): `OP_AGENT_FAILPOINT=fail:<prefix>.rename` or
/// `fail:<prefix>.add-port` makes that action fail without running, after the ones before it
/// ran (a hand-back that fails part-way).
pub async fn hand_back<L: Links, V: Vswitch>(
    host: &Host<L, V>,
    net: u8,
    u: Undo,
    rec: &mut Recorder,
    prefix: &str,
) -> HandedBack {
    let net_v = Some(net);
    let mut done = HandedBack {
        net,
        ..HandedBack::default()
    };
    let (mut link_back, mut port_back) = (None, None);
    let mut note = |r: &Result<(), String>, action: &str| match r {
        Ok(()) => true,
        Err(e) => {
            done.failed.push(format!("{action}: {e}"));
            false
        }
    };
    if let Some((pve, ours)) = &u.renamed {
        // Our port first, and ovs-vswitchd must have released the device before it is renamed
        // back (ovs-issues#284, as on the way forward).
        let released = match host.ovs.del_port(ours, DelGuard::Owned.to_ovsdb()).await {
            Ok(Some(next)) => host
                .ovs
                .wait_cur_cfg(next, host.wait_budget(Budget::Rollback))
                .await
                .map(|_| ())
                .map_err(|e| format!("ovs-vswitchd did not release {ours}: {e}")),
            Ok(None) => Ok(()),
            // OVSDB unreachable: whether a row of ours exists cannot be known; PVE's name back
            // is what gets the container its network again once OVS answers.
            Err(_) => Ok(()),
        };
        let injected = super::execute::injected_failure(&format!("{prefix}.rename"));
        let r = match (injected, released) {
            (Some(e), _) => Err(e.to_string()),
            (None, Err(e)) => Err(e),
            (None, Ok(())) => match host.require_link(ours).await {
                Ok(l) => host
                    .nl
                    .rename(&l, pve, "", true)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            },
        };
        if note(&r, &format!("rename {ours} back to {pve}")) {
            link_back = Some(pve.clone());
        }
        record_rollback(
            rec,
            &format!("{prefix}.rename"),
            r,
            json!({"net": net_v, "from": ours, "to": pve}),
        );
    }
    if let (None, Some(link)) = (&u.renamed, &u.downed) {
        let r = match host.require_link(link).await {
            Ok(l) => host.nl.set_up(&l).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if note(&r, &format!("set {link} up")) {
            link_back = Some(link.clone());
        }
        record_rollback(
            rec,
            &format!("{prefix}.link-up"),
            r,
            json!({"net": net_v, "link": link}),
        );
    }
    if let Some(p) = u.pve_port {
        let Some(spec) = pve_spec(&p) else {
            done.link = link_back;
            return done;
        };
        if let Some(why) = skip_dead_pve_port(
            u.renamed.as_ref(),
            link_back.as_ref(),
            &p.name,
            net,
            prefix,
            rec,
        ) {
            note(&Err(why), &format!("re-add PVE's port {}", p.name));
            done.link = link_back;
            return done;
        }
        let injected = super::execute::injected_failure(&format!("{prefix}.add-port"));
        let r = match injected {
            Some(e) => Err(e.to_string()),
            None => host.ovs.add_port(&spec).await.map_err(|e| e.to_string()),
        };
        let r = match r {
            Ok(next) => host
                .ovs
                .wait_cur_cfg(next, host.wait_budget(Budget::Rollback))
                .await
                .map(|_| ())
                .map_err(|e| {
                    format!("the Port row is back, but ovs-vswitchd did not apply it: {e}")
                }),
            Err(e) => Err(e),
        };
        if note(
            &r,
            &format!("re-add PVE's port {} on {}", p.name, spec.bridge),
        ) {
            port_back = Some((p.name.clone(), spec.bridge.clone()));
        }
        record_rollback(
            rec,
            &format!("{prefix}.add-port"),
            r,
            json!({"net": net_v, "port": p.name}),
        );
    }
    done.link = link_back;
    done.port = port_back;
    done
}

/// One NIC to hand back in [`hand_back_many`]: the index of its run's recorder, its `netN`
/// and what op-agent had done to it.
pub type HandBack = (usize, u8, Undo);

/// [`hand_back`] for the NICs of many runs at once (a failed batch,
/// [`crate::engine::converge_batch`]), with the same audit rows in each run's recorder
/// (`recs[item.0]`) and the same order per NIC, but ONE transaction per kind: every Port of
/// op-agent's to delete in one ([`Vswitch::del_ports`], each under the owned guard), ONE wait
/// for ovs-vswitchd to release the devices, the renames back (or link-ups), every PVE Port in
/// one ([`Vswitch::add_ports`]), ONE wait. Each wait uses [`Budget::Rollback`]: a hundred
/// failed containers cost two waits, not two hundred (each of which would queue behind the
/// same work of ovs-vswitchd). Never fails: every action's outcome is an audit row, and the
/// result says, per item and in `items`' order, what is back ([`HandedBack`]). The same
/// failpoints as [`hand_back`] (`fail:<prefix>.rename`, `fail:<prefix>.add-port`).
pub async fn hand_back_many<L: Links, V: Vswitch>(
    host: &Host<L, V>,
    items: Vec<HandBack>,
    recs: &mut [&mut Recorder],
    prefix: &str,
) -> Vec<HandedBack> {
    let mut done: Vec<HandedBack> = items
        .iter()
        .map(|(_, net, _)| HandedBack {
            net: *net,
            ..HandedBack::default()
        })
        .collect();
    // 1. Our Ports, then one wait for their release before any rename back (ovs-issues#284).
    let ours: Vec<(usize, String)> = items
        .iter()
        .enumerate()
        .filter_map(|(k, (_, _, u))| u.renamed.as_ref().map(|(_, o)| (k, o.clone())))
        .collect();
    let mut released: Vec<Option<Result<(), String>>> = items.iter().map(|_| None).collect();
    if !ours.is_empty() {
        let del: Vec<(String, crate::ovsdb::DelGuard)> = ours
            .iter()
            .map(|(_, o)| (o.clone(), DelGuard::Owned.to_ovsdb()))
            .collect();
        let results = host.ovs.del_ports(&del).await;
        let next = results
            .iter()
            .filter_map(|r| r.as_ref().ok().copied().flatten())
            .max();
        let waited = match next {
            Some(n) => host
                .ovs
                .wait_cur_cfg(n, host.wait_budget(Budget::Rollback))
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            None => Ok(()),
        };
        for ((k, o), r) in ours.iter().zip(results) {
            released[*k] = Some(match r {
                Ok(Some(_)) => waited
                    .clone()
                    .map_err(|e| format!("ovs-vswitchd did not release {o}: {e}")),
                // Absent, or OVSDB unreachable (as in [`hand_back`]).
                Ok(None) | Err(_) => Ok(()),
            });
        }
    }
    // 2. Per NIC: the rename back, or the link up again.
    for (k, (ri, net, u)) in items.iter().enumerate() {
        let rec = &mut *recs[*ri];
        let net_v = Some(*net);
        if let Some((pve, ours)) = &u.renamed {
            let rel = released[k].take().unwrap_or(Ok(()));
            let injected = super::execute::injected_failure(&format!("{prefix}.rename"));
            let r = match (injected, rel) {
                (Some(e), _) => Err(e.to_string()),
                (None, Err(e)) => Err(e),
                (None, Ok(())) => match host.require_link(ours).await {
                    Ok(l) => host
                        .nl
                        .rename(&l, pve, "", true)
                        .await
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                },
            };
            match &r {
                Ok(()) => done[k].link = Some(pve.clone()),
                Err(e) => done[k]
                    .failed
                    .push(format!("rename {ours} back to {pve}: {e}")),
            }
            record_rollback(
                rec,
                &format!("{prefix}.rename"),
                r,
                json!({"net": net_v, "from": ours, "to": pve}),
            );
        } else if let Some(link) = &u.downed {
            let r = match host.require_link(link).await {
                Ok(l) => host.nl.set_up(&l).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match &r {
                Ok(()) => done[k].link = Some(link.clone()),
                Err(e) => done[k].failed.push(format!("set {link} up: {e}")),
            }
            record_rollback(
                rec,
                &format!("{prefix}.link-up"),
                r,
                json!({"net": net_v, "link": link}),
            );
        }
    }
    // 3. PVE's Ports with PVE's own values, one transaction, one wait; not for a NIC whose
    // rename back failed (as in [`hand_back`]: a Port for a name no device has is a dead row).
    let injected = super::execute::injected_failure(&format!("{prefix}.add-port"));
    let mut pve: Vec<(usize, PortSpec)> = Vec::new();
    for (k, (ri, net, u)) in items.iter().enumerate() {
        let Some(spec) = u.pve_port.as_ref().and_then(pve_spec) else {
            continue;
        };
        let rec = &mut *recs[*ri];
        let link = done[k].link.as_ref();
        if let Some(why) =
            skip_dead_pve_port(u.renamed.as_ref(), link, &spec.name, *net, prefix, rec)
        {
            done[k]
                .failed
                .push(format!("re-add PVE's port {}: {why}", spec.name));
            continue;
        }
        pve.push((k, spec));
    }
    if pve.is_empty() {
        return done;
    }
    let results: Vec<Result<i64, String>> = match &injected {
        Some(e) => pve.iter().map(|_| Err(e.to_string())).collect(),
        None => {
            let specs: Vec<PortSpec> = pve.iter().map(|(_, s)| s.clone()).collect();
            let r = host.ovs.add_ports(&specs).await;
            r.into_iter()
                .map(|r| r.map_err(|e| e.to_string()))
                .collect()
        }
    };
    let next = results
        .iter()
        .filter_map(|r| r.as_ref().ok().copied())
        .max();
    let waited = match next {
        Some(n) => host
            .ovs
            .wait_cur_cfg(n, host.wait_budget(Budget::Rollback))
            .await
            .map(|_| ())
            .map_err(|e| format!("the Port row is back, but ovs-vswitchd did not apply it: {e}")),
        None => Ok(()),
    };
    for ((k, spec), r) in pve.iter().zip(results) {
        let (ri, net, _) = &items[*k];
        let r = r.and_then(|_| waited.clone());
        match &r {
            Ok(()) => done[*k].port = Some((spec.name.clone(), spec.bridge.clone())),
            Err(e) => done[*k].failed.push(format!(
                "re-add PVE's port {} on {}: {e}",
                spec.name, spec.bridge
            )),
        }
        record_rollback(
            &mut *recs[*ri],
            &format!("{prefix}.add-port"),
            r,
            json!({"net": Some(*net), "port": spec.name}),
        );
    }
    done
}

/// PVE's Port as PVE's `tap_plug` made it (no external_ids, no rate): `None` without a bridge.
/// `Some("skipped, <why>")` (and a `<prefix>.add-port` row `skipped`) when PVE's Port
/// `port` must not be put back because the rename back failed (`renamed` set, `link_back`
/// unset): no device has PVE's name, and a Port for it would be a dead row (ofport -1) beside
/// a link left without any Port.
fn skip_dead_pve_port(
    renamed: Option<&(String, String)>,
    link_back: Option<&String>,
    port: &str,
    net: u8,
    prefix: &str,
    rec: &mut Recorder,
) -> Option<String> {
    let (Some((pve, ours)), None) = (renamed, link_back) else {
        return None;
    };
    let why = format!("{ours} could not be renamed back to {pve}");
    rec.outcome(
        &format!("{prefix}.add-port"),
        crate::audit::Outcome::Skipped,
        json!({"net": Some(net), "port": port, "why": why}),
    );
    Some(format!("skipped, {why}"))
}

fn pve_spec(p: &ObservedPort) -> Option<PortSpec> {
    Some(PortSpec {
        name: p.name.clone(),
        bridge: p.bridge.clone()?,
        tag: p.tag,
        trunks: p.trunks.clone(),
        vlan_mode: p.vlan_mode.clone(),
        mtu_request: p.mtu_request.and_then(|m| u32::try_from(m).ok()),
        external_ids: Default::default(),
        rate: None,
    })
}

#[cfg(test)]
mod tests;
