//! Observe step of a batch: what [`observe::observe`] reads for one container (post-start:
//! without the owned-Port sweep), read ONCE for all containers of the batch: one link dump
//! (`RTM_GETLINK`, [`Links::links`]) and one OVSDB snapshot ([`Vswitch::snapshot`]) of every
//! name any of them needs, then each container's [`Observed`] cut from them. Per-container
//! reads would cost a link dump per container (each as long as the host has links): quadratic
//! in the number of containers.

use crate::audit::Outcome;
use crate::desired::Desired;
use crate::engine::error::RunError;
use crate::engine::host::{Host, Links, Vswitch};
use crate::engine::observe::{link_of, port_of};
use crate::engine::observed::{Observed, ObservedNic, RemovedNic};
use crate::engine::ownership;
use crate::netlink::Link;
use crate::ovsdb::vswitch::batch::dup;
use crate::report::Recorder;
use serde_json::json;
use std::collections::HashMap;
use std::time::Instant;

/// The observed state of every `(desired, recorder)` of `runs`, in order; a failed read fails
/// every container (an `ovs.observe failed` row each for an OVSDB read, as in
/// [`observe::observe`](crate::engine::observe::observe)).
pub async fn observe_many<L: Links, V: Vswitch>(
    host: &Host<L, V>,
    runs: &mut [(&Desired, &mut Recorder)],
) -> Vec<Result<Observed, RunError>> {
    let t = Instant::now();
    let links = match host.nl.links().await {
        Ok(l) => l,
        Err(e) => {
            // The first container gets the error itself, the others one of the same request.
            let again = |e: &crate::netlink::NetlinkError| crate::netlink::NetlinkError {
                op: e.op,
                link: e.link.clone(),
                source: rtnetlink::Error::RequestFailed,
            };
            let mut out: Vec<Result<Observed, RunError>> = (1..runs.len())
                .map(|_| Err(RunError::Netlink(again(&e))))
                .collect();
            out.insert(0, Err(RunError::Netlink(e)));
            return out;
        }
    };
    let by_name: HashMap<&str, &Link> = links.iter().map(|l| (l.name.as_str(), l)).collect();
    // What each container's removed_nics would find: links with op-agent's alias for its vmid
    // and a netN its conf no longer has.
    let removed: Vec<Vec<(pve_integration::NetIndex, &Link)>> = runs
        .iter()
        .map(|(d, _)| {
            let vmid = d.vmid.get();
            links
                .iter()
                .filter_map(|l| {
                    let n = ownership::alias_net(l.alias.as_deref(), vmid)?;
                    let net = pve_integration::NetIndex::new(n)?;
                    (!d.nics.iter().any(|x| x.net == net)).then_some((net, l))
                })
                .collect()
        })
        .collect();
    let mut names: Vec<&str> = runs
        .iter()
        .flat_map(|(d, _)| {
            d.nics
                .iter()
                .flat_map(|n| [n.pve_veth.as_str(), n.name.as_str()])
                .chain(
                    d.nics
                        .iter()
                        .filter_map(|n| n.bridge.as_ref().map(|b| b.as_str())),
                )
        })
        .collect();
    names.extend(removed.iter().flatten().map(|(_, l)| l.name.as_str()));
    let snap = match host.ovs.snapshot(&names).await {
        Ok(s) => s,
        Err(e) => {
            return runs
                .iter_mut()
                .map(|(_, rec)| {
                    rec.outcome(
                        "ovs.observe",
                        Outcome::Failed,
                        json!({"error": e.to_string()}),
                    );
                    Err(RunError::Ovsdb(dup(&e)))
                })
                .collect();
        }
    };
    let elapsed = t.elapsed();
    let mut out = Vec::new();
    for ((d, rec), removed) in runs.iter_mut().zip(removed) {
        let vmid = d.vmid.get();
        let mut obs = Observed {
            ovs_bridges: snap.bridges.iter().cloned().collect(),
            ..Observed::default()
        };
        for nic in &d.nics {
            let n = nic.net.get();
            let link = |name: &str| by_name.get(name).map(|l| link_of((*l).clone(), vmid, n));
            let mut o = ObservedNic {
                pve_link: link(&nic.pve_veth),
                target_link: link(nic.name.as_str()),
                pve_port: snap.ports.get(&nic.pve_veth).cloned().map(port_of),
                target_port: snap.ports.get(nic.name.as_str()).cloned().map(port_of),
                ..Default::default()
            };
            if let Some(bl) = nic.bridge.as_ref().and_then(|b| by_name.get(b.as_str())) {
                o.bridge_link_kind = bl.kind.clone();
                o.bridge_mtu = bl.mtu;
            }
            o.bridge_mtu_request = nic
                .bridge
                .as_ref()
                .and_then(|b| snap.ports.get(b.as_str()))
                .and_then(|p| p.interfaces.first().and_then(|i| i.mtu_request));
            obs.nics.push(o);
        }
        obs.removed = removed
            .into_iter()
            .map(|(net, l)| RemovedNic {
                net,
                link: link_of(l.clone(), vmid, net.get()),
                port: snap.ports.get(&l.name).cloned().map(port_of),
            })
            .collect();
        rec.timing("observe", elapsed);
        out.push(Ok(obs));
    }
    out
}
