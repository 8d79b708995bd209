//! post-start plan of one NIC in `naming = "keep"`: PVE's `veth<vmid>i<n>` keeps its name
//! (pve-container `update_net` / pve-common `PVE::Network::tap_plug` keep working on it);
//! op-agent adds its own name as an alternative name
//! (`IFLA_ALT_IFNAME`, with op-agent's alias as the owner mark) and takes over PVE's own Port
//! row of that name: the same name, the container TOML's bridge/tag/trunks, the bridge's MTU
//! and op-agent's `external_ids` marks, in one transaction ([`Step::AdoptPort`]). A second
//! Port made for the device by its alternative name (`ovs-vsctl add-port <bridge> vi100`
//! attaches the same device twice) is deleted first.

use super::{check_ovs_bridge, desired_port, port_matches, PlanError, Planned, Step};
use crate::desired::{Desired, DesiredNic};
use crate::engine::observed::ObservedNic;
use crate::engine::ownership::DelGuard;

/// The steps of `nic` (observed as `o`) in keep mode, appended to `steps`.
///
/// # Errors
/// The veth LXC makes is missing or not a veth, or op-agent's name is held by another link.
pub(super) fn plan_keep_nic(
    d: &Desired,
    nic: &DesiredNic,
    o: &ObservedNic,
    obs: &crate::engine::observed::Observed,
    steps: &mut Vec<Planned>,
) -> Result<(), PlanError> {
    let net = Some(nic.net);
    let mut push = |step: Step| steps.push(Planned { net, step });
    let Some(l) = &o.pve_link else {
        return Err(PlanError::Missing(match &o.target_link {
            Some(t) => format!(
                "net{}: {} is gone and {} exists: op-agent renamed it before naming = \"keep\" \
                 was set; the switch takes effect when the container restarts (pct reboot {}); \
                 until then {} keeps its name",
                nic.net, nic.pve_veth, t.name, d.vmid, t.name
            ),
            None => format!(
                "net{}: {} does not exist; is the container running?",
                nic.net, nic.pve_veth
            ),
        }));
    };
    if l.in_setup {
        return Err(PlanError::Missing(format!(
            "net{}: LXC is still setting up {} (the container's end is not named yet); it is \
             converged once the container runs",
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
    check_ovs_bridge(nic, o, obs)?;
    // The name lookup of the altname finds the veth itself once it has it.
    let has_altname = match &o.target_link {
        Some(t) if t.index == l.index => true,
        Some(t) => {
            return Err(PlanError::Refused(format!(
                "net{}: a link named {} exists (ifindex {}), so {} cannot have it as an \
                 alternative name; it is left alone",
                nic.net, nic.name, t.index, l.name
            )))
        }
        None => false,
    };
    if let Some(second) = &o.target_port {
        // A Port of the altname attaches the same device a second time.
        push(Step::DelPort {
            port: second.name.clone(),
            guard: DelGuard::Any,
        });
    }
    if !has_altname || !l.ours {
        push(Step::AltName {
            link: l.name.clone(),
            altname: nic.name.to_string(),
        });
    }
    if !l.up && !nic.link_down {
        push(Step::LinkUp {
            link: l.name.clone(),
        });
    }
    let Some(want) = desired_port(d, nic, o) else {
        return Ok(());
    };
    if o.pve_port
        .as_ref()
        .is_some_and(|have| port_matches(have, &want))
    {
        return Ok(());
    }
    if nic.rate.is_some() {
        // PVE's `rate=` as on a renamed NIC: OVS QoS and policing on the Port, PVE's own tc
        // qdiscs (pve-common `setup_tc_rate_limit`) removed first so that ovs-vswitchd does
        // not take them over half-way.
        push(Step::ClearQdiscs {
            link: l.name.clone(),
        });
    }
    push(match o.pve_port {
        Some(_) => Step::AdoptPort(want),
        None => Step::AddPort(want),
    });
    Ok(())
}

#[cfg(test)]
#[path = "keep_tests.rs"]
mod tests;
