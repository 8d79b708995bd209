//! Plan step of a hook: from the desired state ([`crate::desired`]) and the observed state of
//! links and OVSDB rows, an ordered list of steps. Pure: no I/O, unit-tested on fixtures;
//! `op-agent hook --dry-run` prints it.
//!
//! Order of a post-start re-plug: PVE has already plugged the veth (pve-common
//! `PVE::Network::veth_create` and `tap_plug`, `ovs-vsctl add-port`), and a device
//! ovs-vswitchd still holds must not be renamed (ovs-issues#284). So: delete PVE's Port for
//! the veth and wait until ovs-vswitchd released it, delete a stale op-agent row of the new name, bring
//! the veth down, rename it (and set it up in the same message), insert Interface+Port in one
//! transaction, wait for `cur_cfg`, then check `ofport`/`error`.

use crate::desired::{Desired, DesiredNic, NicMode};
use crate::engine::observed::{Observed, ObservedLink, ObservedNic, ObservedPort};
use crate::engine::ownership::{ownership_ids, DelGuard, OWNER};
use std::collections::BTreeSet;
use std::fmt;

/// The refusal for a link that holds a name op-agent needs: another op-agent NIC's, or one
/// op-agent did not make.
fn foreign(link: &ObservedLink, what: &str) -> PlanError {
    PlanError::Refused(match &link.other_owner {
        Some(o) => format!(
            "{what}: link {} is already in use by another op-agent NIC ({o}); names must be unique on the host",
            link.name
        ),
        None => format!(
            "{what}: a link named {} exists that op-agent did not make; it is left alone",
            link.name
        ),
    })
}

/// The Port+Interface op-agent inserts: the OVSDB layer's [`crate::ovsdb::PortSpec`]
/// (`vlan_mode` is `native-untagged` when both tag and trunks are set, like PVE
/// `$ovs_bridge_add_port`; `external_ids` go on Port and Interface).
pub type PortPlan = crate::ovsdb::PortSpec;

/// Why no plan could be made. Nothing has been changed when this is returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanError {
    /// A foreign link or port holds a name op-agent needs, or the veth is not a veth.
    Refused(String),
    /// A bridge does not exist in OVSDB.
    Unavailable(String),
    /// The veth LXC should have made is not there.
    Missing(String),
}

impl std::error::Error for PlanError {}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanError::Refused(m) | PlanError::Unavailable(m) | PlanError::Missing(m) => {
                f.write_str(m)
            }
        }
    }
}

/// The Port op-agent wants for `nic`, or `None` when it is not to be on an OVS bridge.
pub fn desired_port(d: &Desired, nic: &DesiredNic, obs: &ObservedNic) -> Option<PortPlan> {
    if nic.link_down {
        return None;
    }
    // `attached_mtu`: netmaker mode keeps PVE's whole attachment, its MTU too.
    let (bridge, tag, trunks, attached_mtu) = match &nic.mode {
        NicMode::Skip(_) => return None,
        NicMode::Plug | NicMode::PlugIfOvs => (
            nic.bridge.as_ref()?.to_string(),
            nic.tag.map(|t| t.get()),
            nic.trunks.iter().map(|t| t.get()).collect::<Vec<_>>(),
            None,
        ),
        NicMode::KeepAttachment => match &obs.pve_port {
            // PVE's own attachment: keep its bridge, tag, trunks and mtu.
            Some(p) => (p.bridge.clone()?, p.tag, p.trunks.clone(), p.mtu_request),
            None => {
                let b = nic.bridge.as_ref()?.to_string();
                if obs.bridge_link_kind.as_deref() == Some("bridge") {
                    return None; // Linux bridge: the rename keeps the master.
                }
                (
                    b,
                    nic.tag.map(|t| t.get()),
                    nic.trunks.iter().map(|t| t.get()).collect(),
                    None,
                )
            }
        },
    };
    // The MTU is the bridge's, as PVE's plug gives it (pve-common `$ovs_bridge_add_port`:
    // `mtu_request=$bridgemtu`, `read_bridge_mtu`). A Port's own `mtu_request` counts only on
    // that same bridge: PVE's Port about to be replaced carries the MTU PVE read when it
    // plugged (rename mode); and on a bridge without an MTU of its own (no
    // `bridge_mtu_request`), whose MTU is the smallest of its ports', the Port op-agent
    // manages keeps the one it has, as PVE sets it only when it plugs, so one port set lower
    // by hand does not spread to every repaired one.
    let on_bridge = |p: Option<&ObservedPort>| {
        p.filter(|p| p.bridge.as_deref() == Some(bridge.as_str()))
            .and_then(|p| p.mtu_request)
    };
    let managed = match d.keeps_names() {
        true => obs.pve_port.as_ref(),
        false => obs.target_port.as_ref(),
    };
    let kept = on_bridge(managed).filter(|_| obs.bridge_mtu_request.is_none());
    let pves = on_bridge(obs.pve_port.as_ref()).filter(|_| !d.keeps_names());
    let mtu_request = attached_mtu
        .or(kept)
        .or(pves)
        .and_then(|m| u32::try_from(m).ok())
        .or(obs.bridge_mtu);
    Some(PortPlan {
        name: d.port_name(nic).to_string(),
        bridge,
        vlan_mode: pve_integration::ovs_vlan_mode(tag, &trunks).map(str::to_string),
        tag,
        trunks,
        mtu_request,
        external_ids: ownership_ids(d, nic),
        rate: nic.rate.map(port_rate),
    })
}

/// True when an existing Port already is what `want` describes and ovs-vswitchd applied it.
pub fn port_matches(have: &ObservedPort, want: &PortPlan) -> bool {
    have.bridge.as_deref() == Some(want.bridge.as_str())
        && have.tag == want.tag
        && have.trunks == want.trunks
        && have.vlan_mode == want.vlan_mode
        && (want.mtu_request.is_none() || have.mtu_request == want.mtu_request.map(i64::from))
        && want
            .external_ids
            .iter()
            .all(|(k, v)| have.external_ids.get(k) == Some(v))
        && have.ofport.unwrap_or(-1) > 0
        && have.error.is_none()
        && rate_matches(have, want)
}

fn check_target_link(nic: &DesiredNic, obs: &ObservedNic) -> Result<(), PlanError> {
    if let Some(t) = &obs.target_link {
        let same = obs.pve_link.as_ref().map(|p| p.index) == Some(t.index);
        if !t.ours && !same {
            return Err(foreign(t, &format!("net{}", nic.net)));
        }
    }
    Ok(())
}

fn foreign_port(nic: &DesiredNic, p: &ObservedPort) -> PlanError {
    PlanError::Refused(format!(
        "net{}: OVS port {} on bridge {} is not owned by op-agent (no external_ids:owner={OWNER}); it is left alone",
        nic.net,
        p.name,
        p.bridge.as_deref().unwrap_or("?")
    ))
}

/// True when `nic` is to be plugged ([`NicMode::Plug`], [`NicMode::PlugIfOvs`]) but its bridge
/// is a Linux bridge (kernel link kind `bridge`) and no row of OVSDB's Bridge table.
fn is_linux_bridge(nic: &DesiredNic, o: &ObservedNic, obs: &Observed) -> bool {
    matches!(nic.mode, NicMode::Plug | NicMode::PlugIfOvs)
        && nic
            .bridge
            .as_ref()
            .is_some_and(|b| !obs.ovs_bridges.contains(b.as_str()))
        && o.bridge_link_kind.as_deref() == Some("bridge")
}

/// Why `nic` is left alone in this run: its [`NicMode::Skip`] reason, or, for a NIC without a
/// `[[nic]]` table ([`NicMode::PlugIfOvs`]) on a Linux bridge, that it is left to PVE (whose
/// `veth_create`/`tap_plug` already enslaved it, pve-common `PVE::Network`).
pub fn left_alone(nic: &DesiredNic, o: &ObservedNic, obs: &Observed) -> Option<String> {
    match &nic.mode {
        NicMode::Skip(reason) => Some(reason.clone()),
        NicMode::PlugIfOvs if is_linux_bridge(nic, o, obs) => Some(format!(
            "{} is a Linux bridge, not Open vSwitch: left to PVE",
            nic.bridge.as_ref().map(|b| b.as_str()).unwrap_or("?")
        )),
        _ => None,
    }
}

/// A NIC to plug needs its bridge in OVSDB's Bridge table: a Linux bridge or a missing bridge
/// is refused, naming it.
fn check_ovs_bridge(nic: &DesiredNic, o: &ObservedNic, obs: &Observed) -> Result<(), PlanError> {
    let Some(b) = nic.bridge.as_ref().filter(|_| !nic.link_down) else {
        return Ok(());
    };
    if !matches!(nic.mode, NicMode::Plug | NicMode::PlugIfOvs)
        || obs.ovs_bridges.contains(b.as_str())
    {
        return Ok(());
    }
    if is_linux_bridge(nic, o, obs) {
        return Err(PlanError::Refused(format!(
            "net{}: {b} is a Linux bridge; op-agent manages Open vSwitch bridges (manage = false \
             in its [[nic]] table leaves this NIC to PVE)",
            nic.net
        )));
    }
    Err(PlanError::Unavailable(format!(
        "net{}: bridge {b} does not exist in OVSDB",
        nic.net
    )))
}

/// pre-start: every bridge exists, no foreign link or port holds a name, stale op-agent rows
/// of this container are removed (PVE bug #1232: a stale row captures the next device).
pub fn plan_pre_start(d: &Desired, obs: &Observed) -> Result<Vec<Planned>, PlanError> {
    let mut steps = Vec::new();
    if d.network_type == crate::config::NetworkType::Netmaker {
        steps.push(Planned {
            net: None,
            step: Step::ConfirmMesh,
        });
    }
    for nic in &d.nics {
        // PVE writes `lxc.net.N.veth.pair = veth<vmid>i<N>` unconditionally; LXC 5 refuses a
        // name of 16 bytes or more and fails the start half-way (after it created and PVE
        // plugged the earlier NICs, whose port rows then stay behind). Refuse before that.
        if let Err(e) = pve_integration::HostVeth::new(d.vmid, nic.net) {
            return Err(PlanError::Refused(e.to_string()));
        }
    }
    for (nic, o) in d.nics.iter().zip(&obs.nics) {
        if let Some(reason) = left_alone(nic, o, obs) {
            steps.push(Planned {
                net: Some(nic.net),
                step: Step::Skip { reason },
            });
            continue;
        }
        check_ovs_bridge(nic, o, obs)?;
        if let Some(t) = &o.target_link {
            if !t.ours {
                return Err(foreign(t, &format!("net{}", nic.net)));
            }
        }
        if let Some(p) = &o.target_port {
            if !p.owned() {
                return Err(foreign_port(nic, p));
            }
        }
    }
    // A live port belongs to a running container (pre-start run by hand): left alone.
    steps.extend(sweep_owned(d, obs, true));
    steps.extend(stale_qos(d));
    Ok(steps)
}

/// Deletes of every Port op-agent owns for this container: the NICs' own names first, then
/// the other owned rows with `vm-id=<vmid>`, each once; with `spare_live`, rows whose device
/// still exists are kept.
fn sweep_owned(d: &Desired, obs: &Observed, spare_live: bool) -> Vec<Planned> {
    let nic_ports = d
        .nics
        .iter()
        .zip(&obs.nics)
        .filter(|(nic, _)| !matches!(nic.mode, NicMode::Skip(_)))
        .filter_map(|(nic, o)| Some((Some(nic.net), o.target_port.as_ref()?)));
    let others = obs.owned_ports.iter().map(|p| (None, p));
    let mut seen = BTreeSet::new();
    nic_ports
        .chain(others)
        .filter(|(_, p)| p.owned() && seen.insert(p.name.clone()) && !(spare_live && p.link_alive))
        .map(|(net, p)| Planned {
            net,
            step: Step::DelPort {
                port: p.name.clone(),
                guard: DelGuard::Owned,
            },
        })
        .collect()
}

/// post-start (and `apply`/`watch`): converge every NIC. Running it again on a converged host
/// gives an empty plan.
pub fn plan_post_start(d: &Desired, obs: &Observed) -> Result<Vec<Planned>, PlanError> {
    let mut steps = Vec::new();
    // A netN PVE removed: its Port (owned only) and op-agent's link, as `veth_delete` would
    // have deleted PVE's.
    for r in obs.removed.iter().filter(|r| r.link.ours) {
        let net = Some(r.net);
        if r.port.as_ref().is_some_and(ObservedPort::owned) {
            steps.push(Planned {
                net,
                step: Step::DelPort {
                    port: r.link.name.clone(),
                    guard: DelGuard::Owned,
                },
            });
        }
        steps.push(Planned {
            net,
            step: Step::DelLink {
                link: r.link.name.clone(),
                why: DelWhy::Removed,
            },
        });
    }
    for (nic, o) in d.nics.iter().zip(&obs.nics) {
        let net = Some(nic.net);
        if let (None, true) = (left_alone(nic, o, obs), d.keeps_names()) {
            keep::plan_keep_nic(d, nic, o, obs, &mut steps)?;
            continue;
        }
        let mut push = |step: Step| steps.push(Planned { net, step });
        if let Some(reason) = left_alone(nic, o, obs) {
            push(Step::Skip { reason });
            continue;
        }
        // Before anything is renamed: a bridge missing from OVSDB would only fail the
        // add-port after the rename, and the rollback's rename back (a link event) would
        // make the watch try again at once, flapping the NIC.
        check_ovs_bridge(nic, o, obs)?;
        check_target_link(nic, o)?;
        let want = desired_port(d, nic, o);
        if let Some(p) = &o.target_port {
            if !p.owned() {
                return Err(foreign_port(nic, p));
            }
        }
        match (&o.pve_link, &o.target_link) {
            (Some(l), t) => {
                if l.in_setup {
                    return Err(PlanError::Missing(format!(
                        "net{}: LXC is still setting up {} (the container's end is not named yet); \
                         it is converged once the container runs",
                        nic.net, l.name
                    )));
                }
                if l.kind.as_deref() != Some("veth") {
                    return Err(PlanError::Refused(format!(
                        "net{}: {} is a {} device, not a veth; it is left alone",
                        nic.net,
                        l.name,
                        l.kind.as_deref().unwrap_or("kind-less")
                    )));
                }
                if let Some(t) = t {
                    if t.index != l.index && !t.ours {
                        return Err(PlanError::Refused(format!(
                            "net{}: both {} and {} exist; refusing to rename over an existing link",
                            nic.net, l.name, nic.name
                        )));
                    }
                    if t.index != l.index {
                        // PVE replaced the NIC: op-agent's old link is the one PVE believes
                        // it deleted.
                        if o.target_port.is_some() {
                            push(Step::DelPort {
                                port: nic.name.to_string(),
                                guard: DelGuard::Owned,
                            });
                        }
                        push(Step::DelLink {
                            link: nic.name.to_string(),
                            why: DelWhy::Replaced,
                        });
                    }
                }
                let replaced = t.as_ref().is_some_and(|t| t.index != l.index);
                if o.pve_port.is_some() {
                    push(Step::DelPort {
                        port: l.name.clone(),
                        guard: DelGuard::Any,
                    });
                }
                if o.target_port.is_some() && !replaced {
                    push(Step::DelPort {
                        port: nic.name.to_string(),
                        guard: DelGuard::Owned,
                    });
                }
                if t.as_ref().is_some_and(|t| t.index == l.index) {
                    // op-agent's name is an alternative name of PVE's veth (the container ran
                    // in keep mode): it must go before the rename.
                    push(Step::DelAltName {
                        link: l.name.clone(),
                        altname: nic.name.to_string(),
                    });
                }
                push(Step::LinkDown {
                    link: l.name.clone(),
                });
                if nic.rate.is_some() && want.is_some() {
                    push(Step::ClearQdiscs {
                        link: l.name.clone(),
                    });
                }
                push(Step::LinkRename {
                    from: l.name.clone(),
                    to: nic.name.to_string(),
                    up: !nic.link_down,
                });
                if let Some(want) = want {
                    push(Step::AddPort(want));
                } else if let (NicMode::KeepAttachment, Some(b)) = (&nic.mode, &nic.bridge) {
                    if !nic.link_down && o.bridge_link_kind.as_deref() == Some("bridge") {
                        push(Step::CheckMaster {
                            link: nic.name.to_string(),
                            bridge: b.to_string(),
                        });
                    }
                }
                if nic.mode == NicMode::KeepAttachment {
                    push(Step::RecordMesh {
                        link: nic.name.to_string(),
                    });
                }
            }
            (None, Some(t)) => {
                if let Some(p) = &o.pve_port {
                    push(Step::DelPort {
                        port: p.name.clone(),
                        guard: DelGuard::Any,
                    });
                }
                match (&want, &o.target_port) {
                    (Some(w), Some(have)) if port_matches(have, w) => {}
                    (Some(w), Some(_)) => push(Step::ReplacePort(w.clone())),
                    (Some(w), None) => push(Step::AddPort(w.clone())),
                    (None, Some(_)) if nic.link_down => push(Step::DelPort {
                        port: nic.name.to_string(),
                        guard: DelGuard::Owned,
                    }),
                    (None, _) => {}
                }
                if !t.up && !nic.link_down {
                    push(Step::LinkUp {
                        link: nic.name.to_string(),
                    });
                }
            }
            (None, None) => {
                return Err(PlanError::Missing(format!(
                    "net{}: neither {} nor {} exists; is the container running?",
                    nic.net, nic.pve_veth, nic.name
                )))
            }
        }
    }
    Ok(steps)
}

/// post-stop: delete every Port op-agent owns for this container (PVE only removes
/// `veth<vmid>i<n>` rows, never ours), even while the kernel is still destroying the
/// container's veths (it does so asynchronously): a row left behind is PVE bug #1232.
pub fn plan_post_stop(d: &Desired, obs: &Observed) -> Vec<Planned> {
    let mut steps = sweep_owned(d, obs, false);
    steps.extend(stale_qos(d));
    steps
}

/// [`Step::DelStaleQos`] in keep mode (PVE deletes the Ports op-agent marked, not their QoS).
fn stale_qos(d: &Desired) -> Option<Planned> {
    d.keeps_names().then_some(Planned {
        net: None,
        step: Step::DelStaleQos,
    })
}

mod display;
mod step;
pub use step::{changes_host, plan_lines, run_summary, DelWhy, Planned, Step};
mod keep;
mod rate;
pub use rate::{port_rate, rate_matches};

#[cfg(test)]
mod linux_bridge_tests;
#[cfg(test)]
mod live_edit_tests;
#[cfg(test)]
mod tests;
