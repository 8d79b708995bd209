//! The steps a plan is made of ([`Step`], each with the NIC it belongs to: [`Planned`]), and
//! the lines and summary a run gives of them.

use super::PortPlan;
use crate::engine::ownership::DelGuard;
use pve_integration::NetIndex;

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Delete a Port (bump `next_cfg`, wait for ovs-vswitchd).
    DelPort { port: String, guard: DelGuard },
    /// Delete op-agent's link (`RTM_DELLINK`; the container's end of the pair goes with it, as
    /// with pve-common `PVE::Network::veth_delete`). Execute checks op-agent's alias for this
    /// vmid and net again right before it deletes.
    DelLink { link: String, why: DelWhy },
    /// Clear IFF_UP.
    LinkDown { link: String },
    /// Delete the root and ingress qdiscs of PVE's `rate=` limit (pve-common
    /// `setup_tc_rate_limit`'s htb and police), which ovs-vswitchd would otherwise take over
    /// half-way when op-agent's Port sets the same limit as OVS QoS.
    ClearQdiscs { link: String },
    /// Rename (marking the link as op-agent's) and optionally set it up in the same message.
    LinkRename { from: String, to: String, up: bool },
    /// Set IFF_UP.
    LinkUp { link: String },
    /// Insert Interface+Port, wait for ovs-vswitchd, check `ofport`/`error`.
    AddPort(PortPlan),
    /// Replace op-agent's drifted Port of the same name in ONE transaction (delete guarded by
    /// ownership, then the same insert as [`Step::AddPort`]), so a failure never leaves the NIC
    /// without a port.
    ReplacePort(PortPlan),
    /// `naming = "keep"`: give PVE's veth op-agent's name as an alternative name
    /// (`IFLA_ALT_IFNAME`) and op-agent's alias (the owner mark).
    AltName { link: String, altname: String },
    /// Remove op-agent's alternative name from PVE's veth (left by `naming = "keep"`), so that
    /// the rename to that name can happen (the kernel refuses a name in use as an altname).
    DelAltName { link: String, altname: String },
    /// `naming = "keep"`: replace PVE's own Port of the same name (any owner) by op-agent's,
    /// with the desired values and op-agent's marks, in ONE transaction; then as
    /// [`Step::AddPort`].
    AdoptPort(PortPlan),
    /// `naming = "keep"`, pre-start and post-stop: delete the QoS and Queue rows op-agent
    /// made for this container's Ports that PVE's own `ovs-vsctl del-port` of those Ports
    /// left behind (roots of the schema, never collected). Never fatal.
    DelStaleQos,
    /// Check that the renamed link is still enslaved to its Linux bridge.
    CheckMaster { link: String, bridge: String },
    /// Confirm the host's mesh interface (netmaker mode, pre-start).
    ConfirmMesh,
    /// Record that the renamed `link` reaches the mesh through the host's mesh interface
    /// (netmaker mode, post-start): audit row with interface, addresses and NIC. Never fatal.
    RecordMesh { link: String },
    /// Leave this NIC alone.
    Skip { reason: String },
}

/// Why op-agent deletes one of its links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DelWhy {
    /// Its `netN` is no longer in the PVE conf (`pct set --delete netN`).
    Removed,
    /// PVE made a new `veth<vmid>i<n>` for its `netN` (a live `name=`/`hwaddr=` change:
    /// pve-container `update_net` deletes the old pair and hotplugs a new one).
    Replaced,
}

impl DelWhy {
    /// The audit `step` name and the reason of its row.
    pub fn describe(self) -> (&'static str, &'static str) {
        match self {
            DelWhy::Removed => ("nic.removed", "netN is no longer in the PVE conf"),
            DelWhy::Replaced => (
                "nic.replaced",
                "PVE made a new veth for this netN (live name/hwaddr change)",
            ),
        }
    }
}

impl Step {
    /// The audit `step` name.
    pub fn name(&self) -> &'static str {
        match self {
            Step::DelPort { .. } => "ovs.del-port",
            Step::DelLink { why, .. } => why.describe().0,
            Step::LinkDown { .. } => "link.down",
            Step::ClearQdiscs { .. } => "link.clear-qdiscs",
            Step::LinkRename { .. } => "link.rename",
            Step::LinkUp { .. } => "link.up",
            Step::AddPort(_) => "ovs.add-port",
            Step::ReplacePort(_) => "ovs.replace-port",
            Step::AltName { .. } => "link.altname",
            Step::DelAltName { .. } => "link.del-altname",
            Step::AdoptPort(_) => "ovs.adopt-port",
            Step::DelStaleQos => "ovs.del-stale-qos",
            Step::CheckMaster { .. } => "link.check-master",
            Step::ConfirmMesh => "mesh.confirm",
            Step::RecordMesh { .. } => "mesh.via",
            Step::Skip { .. } => "nic.skip",
        }
    }
}

/// A step and the NIC it belongs to (`None` for container-wide steps).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub net: Option<NetIndex>,
    pub step: Step,
}

/// One line per step, as `--dry-run` prints them and the `run.intent` row records them:
/// `net0: link.rename veth100i0 -> vi100 (up)`.
pub fn plan_lines(steps: &[Planned]) -> Vec<String> {
    steps
        .iter()
        .map(|p| match p.net {
            Some(n) => format!("net{n}: {}", p.step),
            None => p.step.to_string(),
        })
        .collect()
}

/// True when `step` changes the host (not a skip, a mesh check or a master check).
pub fn changes_host(step: &Step) -> bool {
    !matches!(
        step,
        Step::Skip { .. } | Step::ConfirmMesh | Step::RecordMesh { .. } | Step::CheckMaster { .. }
    )
}

/// The run's one-line summary once every step ran: the lines its steps gave, else the plan
/// lines of the steps that changed the host (a post-stop's deletes give no line of their
/// own), else `nothing to change`.
pub fn run_summary(lines: &[String], steps: &[Planned]) -> String {
    if !lines.is_empty() {
        return lines.join("; ");
    }
    let changed: Vec<Planned> = steps
        .iter()
        .filter(|p| changes_host(&p.step))
        .cloned()
        .collect();
    match changed.is_empty() {
        true => "nothing to change".into(),
        false => plan_lines(&changed).join("; "),
    }
}
