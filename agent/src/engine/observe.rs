//! Observe step: what the host looks like for one container, read through [`Links`] and
//! [`Vswitch`] into plain values ([`Observed`]) the pure planner works on.

use crate::audit::Outcome;
use crate::desired::Desired;
use crate::engine::error::RunError;
use crate::engine::host::{Host, Links, Vswitch};
use crate::engine::observed::{Observed, ObservedLink, ObservedNic, ObservedPort, RemovedNic};
use crate::engine::ownership::{self, AliasOwner};
use crate::netlink::Link;
use crate::ovsdb::PortRow;
use crate::report::Recorder;
use serde_json::json;
use std::time::Instant;

/// A Port row (first Interface only) as the planner sees it.
pub fn port_of(row: PortRow) -> ObservedPort {
    let iface = row.interfaces.into_iter().next();
    ObservedPort {
        name: row.name,
        bridge: row.bridge,
        tag: row.tag,
        trunks: row.trunks,
        vlan_mode: row.vlan_mode,
        mtu_request: iface.as_ref().and_then(|i| i.mtu_request),
        external_ids: row.external_ids,
        ofport: iface.as_ref().and_then(|i| i.ofport),
        policing_kbits: iface.as_ref().and_then(|i| i.ingress_policing_rate),
        error: iface.and_then(|i| i.error),
        qos: row.qos.is_some(),
        link_alive: false,
    }
}

/// A link as the planner sees it, its alias read against `vmid`'s `net<net>`.
pub fn link_of(l: Link, vmid: u32, net: u8) -> ObservedLink {
    let (ours, other_owner) = match ownership::alias_owner(l.alias.as_deref(), vmid, net) {
        AliasOwner::This => (true, None),
        AliasOwner::Other(a) => (false, Some(a)),
        AliasOwner::Foreign => (false, None),
    };
    ObservedLink {
        in_setup: false,
        other_owner,
        ours,
        index: l.index,
        name: l.name,
        kind: l.kind,
        up: l.up,
        master: l.master,
    }
}

/// Reads what the plan needs: one OVSDB transaction (all bridge names and the Ports and
/// Interfaces named `veth<vmid>i<n>` and op-agent's name for every NIC) with every netlink
/// lookup (both link names and the bridge's device per NIC) in flight at the same time, so
/// the whole read costs about one round trip. `with_owned` also lists every Port owned by
/// op-agent for this vmid (pre-start and post-stop sweeps), pipelined on the same
/// connection. A failed OVSDB read leaves an `ovs.observe failed` row.
///
/// Errors: [`RunError::Ovsdb`], [`RunError::Netlink`].
pub async fn observe<L: Links, V: Vswitch>(
    host: &Host<L, V>,
    d: &Desired,
    with_owned: bool,
    rec: &mut Recorder,
) -> Result<Observed, RunError> {
    let t = Instant::now();
    let vmid = d.vmid.get();
    // The bridges' own Ports too: their Interface's mtu_request (`bridge_mtu_request`).
    let names: Vec<&str> = d
        .nics
        .iter()
        .flat_map(|n| [n.pve_veth.as_str(), n.name.as_str()])
        .chain(
            d.nics
                .iter()
                .filter_map(|n| n.bridge.as_ref().map(|b| b.as_str())),
        )
        .collect();
    let ovs = async {
        let owned = async {
            match with_owned {
                true => host.ovs.list_ports().await.map(Some),
                false => Ok(None),
            }
        };
        tokio::try_join!(host.ovs.snapshot(&names), owned)
    };
    let links = futures_util::future::try_join_all(d.nics.iter().map(|nic| async move {
        let (pve, target, bridge) = tokio::try_join!(
            async {
                let l = host.link(&nic.pve_veth).await?;
                let setup = match &l {
                    Some(l) if l.kind.as_deref() == Some("veth") && l.peer_netnsid.is_some() => {
                        host.nl
                            .peer_name(l)
                            .await
                            .is_some_and(|p| pve_integration::is_lxc_setup_peer_name(&p))
                    }
                    _ => false,
                };
                Ok::<_, RunError>(l.map(|l| (l, setup)))
            },
            host.link(nic.name.as_str()),
            async {
                match &nic.bridge {
                    Some(b) => host.link(b.as_str()).await,
                    None => Ok(None),
                }
            }
        )?;
        Ok::<_, RunError>((pve, target, bridge))
    }));
    let (ovs, links) = tokio::join!(ovs, links);
    let (snap, owned) = match ovs {
        Ok(r) => r,
        Err(e) => {
            rec.outcome(
                "ovs.observe",
                Outcome::Failed,
                json!({"error": e.to_string()}),
            );
            return Err(RunError::Ovsdb(e));
        }
    };
    let links = links?;
    let mut obs = Observed {
        ovs_bridges: snap.bridges.into_iter().collect(),
        ..Observed::default()
    };
    for (nic, (pve, target, bridge)) in d.nics.iter().zip(links) {
        let n = nic.net.get();
        let mut o = ObservedNic {
            pve_link: pve.map(|(l, in_setup)| ObservedLink {
                in_setup,
                ..link_of(l, vmid, n)
            }),
            target_link: target.map(|l| link_of(l, vmid, n)),
            pve_port: snap.ports.get(&nic.pve_veth).cloned().map(port_of),
            target_port: snap.ports.get(nic.name.as_str()).cloned().map(port_of),
            ..Default::default()
        };
        if let Some(bl) = bridge {
            o.bridge_link_kind = bl.kind;
            o.bridge_mtu = bl.mtu;
        }
        o.bridge_mtu_request = nic
            .bridge
            .as_ref()
            .and_then(|b| snap.ports.get(b.as_str()))
            .and_then(|p| p.interfaces.first().and_then(|i| i.mtu_request));
        obs.nics.push(o);
    }
    if let Some(ports) = owned {
        obs.owned_ports = ports
            .into_iter()
            .filter(|p| ownership::is_owned_for(&p.external_ids, vmid))
            .map(port_of)
            .collect();
    }
    if !with_owned {
        obs.removed = removed_nics(host, d).await?;
    }
    rec.timing("observe", t.elapsed());
    Ok(obs)
}

/// The links carrying op-agent's alias for `d`'s vmid and a `netN` that `d` (the PVE conf's
/// current section) no longer has, each with the Port of its name: what is left of a NIC
/// `pct set --delete netN` removed. pve-container `vmconfig_hotplug_pending` deletes it with
/// pve-common `PVE::Network::veth_delete("veth<vmid>i<n>")`, which finds nothing once the
/// link is renamed. One link dump; one OVSDB read only when there is such a link.
///
/// Errors: [`RunError::Netlink`], [`RunError::Ovsdb`].
async fn removed_nics<L: Links, V: Vswitch>(
    host: &Host<L, V>,
    d: &Desired,
) -> Result<Vec<RemovedNic>, RunError> {
    let vmid = d.vmid.get();
    let mut out = Vec::new();
    for l in host.nl.links().await? {
        let Some(n) = ownership::alias_net(l.alias.as_deref(), vmid) else {
            continue;
        };
        let Some(net) = pve_integration::NetIndex::new(n) else {
            continue;
        };
        if d.nics.iter().any(|x| x.net == net) {
            continue;
        }
        out.push(RemovedNic {
            net,
            link: link_of(l, vmid, n),
            port: None,
        });
    }
    if !out.is_empty() {
        let names: Vec<&str> = out.iter().map(|r| r.link.name.as_str()).collect();
        let snap = host.ovs.snapshot(&names).await.map_err(RunError::Ovsdb)?;
        for r in &mut out {
            r.port = snap.ports.get(&r.link.name).cloned().map(port_of);
        }
    }
    Ok(out)
}

/// Sets `link_alive` on every observed Port whose name is a kernel link; returns whether any
/// is alive.
///
/// Errors: [`RunError::Netlink`].
pub async fn mark_live_ports<L: Links, V: Vswitch>(
    host: &Host<L, V>,
    obs: &mut Observed,
) -> Result<bool, RunError> {
    let mut any = false;
    for nic in &mut obs.nics {
        if let Some(p) = nic.target_port.as_mut() {
            p.link_alive = host.link(&p.name).await?.is_some();
            any |= p.link_alive;
        }
    }
    for p in &mut obs.owned_ports {
        p.link_alive = host.link(&p.name).await?.is_some();
        any |= p.link_alive;
    }
    Ok(any)
}
