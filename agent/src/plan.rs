//! Plan step of a hook: from the desired state ([`crate::desired`]) and the observed state of
//! links and OVSDB rows, an ordered list of steps. Pure: no I/O, unit-tested on fixtures;
//! `op-agent hook --dry-run` prints it.
//!
//! Order of a post-start re-plug (pve-facts §9, ovs-issues#284): delete PVE's Port for the veth
//! and wait until ovs-vswitchd released it, delete a stale op-agent row of the new name, bring
//! the veth down, rename it (and set it up in the same message), insert Interface+Port in one
//! transaction, wait for `cur_cfg`, then check `ofport`/`error`.

use crate::desired::{Desired, DesiredNic, NicMode};
use pve_integration::NetIndex;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// `external_ids:owner` value that marks rows op-agent made (ovs-cni's ownership precedent).
pub const OWNER: &str = "op-agent";

/// A link as observed through netlink.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObservedLink {
    pub index: u32,
    pub name: String,
    /// IFLA_INFO_KIND (`veth`, ...).
    pub kind: Option<String>,
    pub up: bool,
    /// ifindex of the controller (bridge) holding it.
    pub master: Option<u32>,
    /// True when the link carries op-agent's IFLA_IFALIAS for this vmid and net.
    pub ours: bool,
    /// op-agent's alias when it marks the link as another container's or NIC's
    /// (`op-agent vm-id=102 net=0`).
    pub other_owner: Option<String>,
}

impl ObservedLink {
    fn foreign(&self, what: &str) -> PlanError {
        PlanError::Refused(match &self.other_owner {
            Some(o) => format!(
                "{what}: link {} is already in use by another op-agent NIC ({o}); names must be unique on the host",
                self.name
            ),
            None => format!(
                "{what}: a link named {} exists that op-agent did not make; it is left alone",
                self.name
            ),
        })
    }
}

/// A Port (with its single Interface) as observed in OVSDB.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObservedPort {
    pub name: String,
    /// The Bridge whose `ports` holds it.
    pub bridge: Option<String>,
    pub tag: Option<u16>,
    pub trunks: Vec<u16>,
    pub vlan_mode: Option<String>,
    /// Interface `mtu_request` (bytes).
    pub mtu_request: Option<i64>,
    /// Port `external_ids`.
    pub external_ids: BTreeMap<String, String>,
    /// Interface `ofport` (-1 or absent when not applied).
    pub ofport: Option<i64>,
    /// Interface `error`.
    pub error: Option<String>,
    /// A kernel link of the Port's name exists (its container is running): pre-start never
    /// deletes such a row.
    pub link_alive: bool,
}

impl ObservedPort {
    /// `external_ids:owner=op-agent`.
    pub fn owned(&self) -> bool {
        self.external_ids.get("owner").map(String::as_str) == Some(OWNER)
    }
}

/// What was observed for one desired NIC (same order as `Desired::nics`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObservedNic {
    /// The link `veth<vmid>i<n>`.
    pub pve_link: Option<ObservedLink>,
    /// The link with op-agent's name (`vi<vmid>`...).
    pub target_link: Option<ObservedLink>,
    /// The Port named `veth<vmid>i<n>`.
    pub pve_port: Option<ObservedPort>,
    /// The Port with op-agent's name.
    pub target_port: Option<ObservedPort>,
    /// Kind of the NIC's bridge as a kernel link (`bridge` for a Linux bridge), if it exists.
    pub bridge_link_kind: Option<String>,
    /// MTU of the bridge's kernel device (PVE `read_bridge_mtu`), bytes.
    pub bridge_mtu: Option<u32>,
}

/// The observed host.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Observed {
    pub nics: Vec<ObservedNic>,
    /// Names of the OVS Bridge rows.
    pub ovs_bridges: BTreeSet<String>,
    /// Ports with `owner=op-agent` and `vm-id=<vmid>` (filled for pre-start and post-stop).
    pub owned_ports: Vec<ObservedPort>,
}

/// The Port+Interface op-agent inserts: the OVSDB layer's [`crate::ovsdb::PortSpec`]
/// (`vlan_mode` is `native-untagged` when both tag and trunks are set, like PVE
/// `$ovs_bridge_add_port`; `external_ids` go on Port and Interface).
pub type PortPlan = crate::ovsdb::PortSpec;

/// Who may own a Port that a step deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DelGuard {
    /// Any row (PVE's own `veth<vmid>i<n>` port, which op-agent takes over).
    Any,
    /// Only a row with `external_ids:owner=op-agent`.
    Owned,
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Delete a Port (bump `next_cfg`, wait for ovs-vswitchd).
    DelPort { port: String, guard: DelGuard },
    /// Clear IFF_UP.
    LinkDown { link: String },
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

impl Step {
    /// The audit `step` name.
    pub fn name(&self) -> &'static str {
        match self {
            Step::DelPort { .. } => "ovs.del-port",
            Step::LinkDown { .. } => "link.down",
            Step::LinkRename { .. } => "link.rename",
            Step::LinkUp { .. } => "link.up",
            Step::AddPort(_) => "ovs.add-port",
            Step::ReplacePort(_) => "ovs.replace-port",
            Step::CheckMaster { .. } => "link.check-master",
            Step::ConfirmMesh => "mesh.confirm",
            Step::RecordMesh { .. } => "mesh.via",
            Step::Skip { .. } => "nic.skip",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::DelPort { port, guard } => write!(
                f,
                "ovs.del-port {port}{}",
                if *guard == DelGuard::Owned {
                    " (owned only)"
                } else {
                    ""
                }
            ),
            Step::LinkDown { link } => write!(f, "link.down {link}"),
            Step::LinkRename { from, to, up } => {
                write!(
                    f,
                    "link.rename {from} -> {to}{}",
                    if *up { " (up)" } else { "" }
                )
            }
            Step::LinkUp { link } => write!(f, "link.up {link}"),
            Step::AddPort(p) | Step::ReplacePort(p) => {
                let verb = if matches!(self, Step::AddPort(_)) {
                    "add-port"
                } else {
                    "replace-port"
                };
                write!(f, "ovs.{verb} {} {}", p.bridge, p.name)?;
                if let Some(t) = p.tag {
                    write!(f, " tag={t}")?;
                }
                if !p.trunks.is_empty() {
                    let t: Vec<String> = p.trunks.iter().map(u16::to_string).collect();
                    write!(f, " trunks={}", t.join(","))?;
                }
                if let Some(m) = &p.vlan_mode {
                    write!(f, " vlan_mode={m}")?;
                }
                if let Some(m) = p.mtu_request {
                    write!(f, " mtu_request={m}")?;
                }
                for (k, v) in &p.external_ids {
                    write!(f, " external_ids:{k}={v}")?;
                }
                Ok(())
            }
            Step::CheckMaster { link, bridge } => write!(f, "link.check-master {link} in {bridge}"),
            Step::ConfirmMesh => write!(f, "mesh.confirm"),
            Step::RecordMesh { link } => write!(f, "mesh.via {link}"),
            Step::Skip { reason } => write!(f, "nic.skip ({reason})"),
        }
    }
}

/// A step and the NIC it belongs to (`None` for container-wide steps).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub net: Option<NetIndex>,
    pub step: Step,
}

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

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanError::Refused(m) | PlanError::Unavailable(m) | PlanError::Missing(m) => {
                f.write_str(m)
            }
        }
    }
}

/// The `external_ids` op-agent writes on Port and Interface.
pub fn ownership_ids(d: &Desired, nic: &DesiredNic) -> BTreeMap<String, String> {
    let mut ids = BTreeMap::new();
    ids.insert("owner".to_string(), OWNER.to_string());
    ids.insert("vm-id".to_string(), d.vmid.to_string());
    ids.insert("pve-net".to_string(), format!("net{}", nic.net));
    if let Some(mac) = &nic.hwaddr {
        ids.insert("attached-mac".to_string(), mac.clone());
    }
    ids
}

/// The Port op-agent wants for `nic`, or `None` when it is not to be on an OVS bridge.
pub fn desired_port(d: &Desired, nic: &DesiredNic, obs: &ObservedNic) -> Option<PortPlan> {
    if nic.link_down {
        return None;
    }
    let (bridge, tag, trunks, pve_mtu) = match &nic.mode {
        NicMode::Skip(_) => return None,
        NicMode::Plug => (
            nic.bridge.as_ref()?.to_string(),
            nic.tag.map(|t| t.get()),
            nic.trunks.iter().map(|t| t.get()).collect::<Vec<_>>(),
            obs.pve_port.as_ref().and_then(|p| p.mtu_request),
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
    let mtu_request = pve_mtu
        .and_then(|m| u32::try_from(m).ok())
        .or(obs.bridge_mtu);
    Some(PortPlan {
        name: nic.name.to_string(),
        bridge,
        vlan_mode: pve_integration::ovs_vlan_mode(tag, &trunks).map(str::to_string),
        tag,
        trunks,
        mtu_request,
        external_ids: ownership_ids(d, nic),
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
}

fn check_target_link(nic: &DesiredNic, obs: &ObservedNic) -> Result<(), PlanError> {
    if let Some(t) = &obs.target_link {
        let same = obs.pve_link.as_ref().map(|p| p.index) == Some(t.index);
        if !t.ours && !same {
            return Err(t.foreign(&format!("net{}", nic.net)));
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
        if let NicMode::Skip(reason) = &nic.mode {
            steps.push(Planned {
                net: Some(nic.net),
                step: Step::Skip {
                    reason: reason.clone(),
                },
            });
            continue;
        }
        if nic.mode == NicMode::Plug && !nic.link_down {
            if let Some(b) = &nic.bridge {
                if !obs.ovs_bridges.contains(b.as_str()) {
                    return Err(PlanError::Unavailable(format!(
                        "net{}: bridge {b} does not exist in OVSDB",
                        nic.net
                    )));
                }
            }
        }
        if let Some(t) = &o.target_link {
            if !t.ours {
                return Err(t.foreign(&format!("net{}", nic.net)));
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
    for (nic, o) in d.nics.iter().zip(&obs.nics) {
        let net = Some(nic.net);
        let mut push = |step: Step| steps.push(Planned { net, step });
        if let NicMode::Skip(reason) = &nic.mode {
            push(Step::Skip {
                reason: reason.clone(),
            });
            continue;
        }
        check_target_link(nic, o)?;
        let want = desired_port(d, nic, o);
        if let Some(p) = &o.target_port {
            if !p.owned() {
                return Err(foreign_port(nic, p));
            }
        }
        match (&o.pve_link, &o.target_link) {
            (Some(l), t) => {
                if l.kind.as_deref() != Some("veth") {
                    return Err(PlanError::Refused(format!(
                        "net{}: {} is a {} device, not a veth; it is left alone",
                        nic.net,
                        l.name,
                        l.kind.as_deref().unwrap_or("kind-less")
                    )));
                }
                if let Some(t) = t {
                    if t.index != l.index {
                        return Err(PlanError::Refused(format!(
                            "net{}: both {} and {} exist; refusing to rename over an existing link",
                            nic.net, l.name, nic.name
                        )));
                    }
                }
                if o.pve_port.is_some() {
                    push(Step::DelPort {
                        port: l.name.clone(),
                        guard: DelGuard::Any,
                    });
                }
                if o.target_port.is_some() {
                    push(Step::DelPort {
                        port: nic.name.to_string(),
                        guard: DelGuard::Owned,
                    });
                }
                push(Step::LinkDown {
                    link: l.name.clone(),
                });
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
    sweep_owned(d, obs, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse_container, ContainerConfig};
    use crate::desired::resolve;
    use pve_integration::{NetConf, PveConf, Vmid};
    use std::path::Path;

    fn net(i: u8, bridge: &str, tag: Option<u16>) -> NetConf {
        let mut n = NetConf::new(NetIndex::new(i).unwrap(), &format!("eth{i}"));
        n.bridge = Some(pve_integration::IfName::new(bridge).unwrap());
        n.hwaddr = Some("BC:24:11:00:00:01".parse().unwrap());
        n.tag = tag.map(|t| pve_integration::VlanTag::new(t).unwrap());
        n
    }

    fn desired(nets: Vec<NetConf>, toml: &str) -> Desired {
        let mut pve = PveConf::default();
        for n in nets {
            pve.nets.insert(n.index.get(), n);
        }
        let ct: ContainerConfig = parse_container(Path::new("/c/100.toml"), toml).unwrap();
        resolve(
            "100".parse::<Vmid>().unwrap(),
            &pve,
            Path::new("/p/100.conf"),
            &ct,
        )
        .unwrap()
    }

    fn veth(name: &str, index: u32) -> ObservedLink {
        ObservedLink {
            index,
            name: name.into(),
            kind: Some("veth".into()),
            up: true,
            master: None,
            ours: false,
            other_owner: None,
        }
    }

    fn pve_port(name: &str) -> ObservedPort {
        ObservedPort {
            name: name.into(),
            bridge: Some("ovsbr0".into()),
            tag: Some(10),
            mtu_request: Some(1500),
            ofport: Some(2),
            ..Default::default()
        }
    }

    #[test]
    fn fresh_post_start_replugs() {
        let d = desired(vec![net(0, "ovsbr0", Some(10))], "");
        let obs = Observed {
            nics: vec![ObservedNic {
                pve_link: Some(veth("veth100i0", 7)),
                pve_port: Some(pve_port("veth100i0")),
                ..Default::default()
            }],
            ..Default::default()
        };
        let plan = plan_post_start(&d, &obs).unwrap();
        let names: Vec<String> = plan.iter().map(|p| p.step.to_string()).collect();
        assert_eq!(names[0], "ovs.del-port veth100i0");
        assert_eq!(names[1], "link.down veth100i0");
        assert_eq!(names[2], "link.rename veth100i0 -> vi100 (up)");
        assert_eq!(
            names[3],
            "ovs.add-port ovsbr0 vi100 tag=10 mtu_request=1500 external_ids:attached-mac=bc:24:11:00:00:01 \
             external_ids:owner=op-agent external_ids:pve-net=net0 external_ids:vm-id=100"
        );
        assert_eq!(plan.len(), 4);
    }

    #[test]
    fn toml_overrides_and_trunks_native_untagged() {
        let d = desired(
            vec![net(0, "vmbr0", None)],
            "[[nic]]\nnet = 0\nbridge = \"ovsbr0\"\ntag = 10\ntrunks = [30, 20, 30]\nname = \"ct100\"\n",
        );
        let o = ObservedNic {
            pve_link: Some(veth("veth100i0", 7)),
            bridge_mtu: Some(9000),
            ..Default::default()
        };
        let w = desired_port(&d, &d.nics[0], &o).unwrap();
        assert_eq!(w.name, "ct100");
        assert_eq!(w.bridge, "ovsbr0");
        assert_eq!(w.trunks, vec![20, 30]);
        assert_eq!(w.vlan_mode.as_deref(), Some("native-untagged"));
        assert_eq!(w.mtu_request, Some(9000));
    }

    #[test]
    fn converged_second_run_is_empty() {
        let d = desired(vec![net(0, "ovsbr0", Some(10))], "");
        let mut link = veth("vi100", 7);
        link.ours = true;
        let mut o = ObservedNic {
            target_link: Some(link),
            bridge_mtu: Some(1500),
            ..Default::default()
        };
        let mut have = pve_port("vi100");
        have.external_ids = ownership_ids(&d, &d.nics[0]);
        o.target_port = Some(have);
        let obs = Observed {
            nics: vec![o],
            ..Default::default()
        };
        assert_eq!(plan_post_start(&d, &obs).unwrap(), vec![]);
    }

    #[test]
    fn drifted_tag_is_replaced() {
        let d = desired(vec![net(0, "ovsbr0", Some(10))], "");
        let mut link = veth("vi100", 7);
        link.ours = true;
        let mut have = pve_port("vi100");
        have.tag = Some(99);
        have.external_ids = ownership_ids(&d, &d.nics[0]);
        let obs = Observed {
            nics: vec![ObservedNic {
                target_link: Some(link),
                target_port: Some(have),
                ..Default::default()
            }],
            ..Default::default()
        };
        let plan = plan_post_start(&d, &obs).unwrap();
        assert_eq!(plan.len(), 1);
        assert!(matches!(&plan[0].step, Step::ReplacePort(p) if p.tag == Some(10)));
    }

    #[test]
    fn foreign_link_and_port_refused() {
        let d = desired(vec![net(0, "ovsbr0", Some(10))], "");
        let obs = Observed {
            nics: vec![ObservedNic {
                pve_link: Some(veth("veth100i0", 7)),
                target_link: Some(veth("vi100", 9)),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(matches!(
            plan_post_start(&d, &obs),
            Err(PlanError::Refused(_))
        ));
        let obs = Observed {
            nics: vec![ObservedNic {
                pve_link: Some(veth("veth100i0", 7)),
                target_port: Some(pve_port("vi100")),
                ..Default::default()
            }],
            ..Default::default()
        };
        let e = plan_post_start(&d, &obs).unwrap_err();
        assert!(e.to_string().contains("not owned by op-agent"), "{e}");
    }

    #[test]
    fn not_a_veth_refused_and_missing_reported() {
        let d = desired(vec![net(0, "ovsbr0", None)], "");
        let mut l = veth("veth100i0", 7);
        l.kind = Some("dummy".into());
        let obs = Observed {
            nics: vec![ObservedNic {
                pve_link: Some(l),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(matches!(
            plan_post_start(&d, &obs),
            Err(PlanError::Refused(_))
        ));
        let obs = Observed {
            nics: vec![ObservedNic::default()],
            ..Default::default()
        };
        assert!(matches!(
            plan_post_start(&d, &obs),
            Err(PlanError::Missing(_))
        ));
    }

    #[test]
    fn pre_start_checks_bridge_and_sweeps_owned_rows() {
        let d = desired(vec![net(0, "ovsbr0", Some(10))], "");
        let obs = Observed {
            nics: vec![ObservedNic::default()],
            ..Default::default()
        };
        let e = plan_pre_start(&d, &obs).unwrap_err();
        assert_eq!(
            e,
            PlanError::Unavailable("net0: bridge ovsbr0 does not exist in OVSDB".into())
        );
        let mut stale = pve_port("vi100");
        stale.external_ids = ownership_ids(&d, &d.nics[0]);
        let mut other = pve_port("old100");
        other.external_ids = ownership_ids(&d, &d.nics[0]);
        let obs = Observed {
            nics: vec![ObservedNic {
                target_port: Some(stale.clone()),
                ..Default::default()
            }],
            ovs_bridges: ["ovsbr0".to_string()].into(),
            owned_ports: vec![stale, other],
        };
        let plan = plan_pre_start(&d, &obs).unwrap();
        let s: Vec<String> = plan.iter().map(|p| p.step.to_string()).collect();
        assert_eq!(
            s,
            vec![
                "ovs.del-port vi100 (owned only)",
                "ovs.del-port old100 (owned only)"
            ]
        );
    }

    #[test]
    fn link_down_renames_without_plugging() {
        let mut n = net(0, "ovsbr0", Some(10));
        n.link_down = true;
        let d = desired(vec![n], "");
        let obs = Observed {
            nics: vec![ObservedNic {
                pve_link: Some(veth("veth100i0", 7)),
                ..Default::default()
            }],
            ..Default::default()
        };
        let s: Vec<String> = plan_post_start(&d, &obs)
            .unwrap()
            .iter()
            .map(|p| p.step.to_string())
            .collect();
        assert_eq!(
            s,
            vec!["link.down veth100i0", "link.rename veth100i0 -> vi100"]
        );
    }

    #[test]
    fn post_stop_deletes_owned_only() {
        let d = desired(vec![net(0, "ovsbr0", Some(10))], "");
        let mut ours = pve_port("vi100");
        ours.external_ids = ownership_ids(&d, &d.nics[0]);
        let obs = Observed {
            nics: vec![ObservedNic {
                target_port: Some(ours.clone()),
                ..Default::default()
            }],
            owned_ports: vec![ours],
            ..Default::default()
        };
        let plan = plan_post_stop(&d, &obs);
        assert_eq!(plan.len(), 1);
        let obs = Observed {
            nics: vec![ObservedNic {
                target_port: Some(pve_port("vi100")),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(plan_post_stop(&d, &obs).is_empty());
    }

    #[test]
    fn firewall_refused_or_skipped() {
        let mut n = net(0, "ovsbr0", Some(10));
        n.firewall = true;
        let mut pve = PveConf::default();
        pve.nets.insert(0, n);
        let ct = parse_container(Path::new("/c/100.toml"), "").unwrap();
        let vmid: Vmid = "100".parse().unwrap();
        let e = resolve(vmid, &pve, Path::new("/p/100.conf"), &ct).unwrap_err();
        assert!(e.to_string().contains("firewall=1"), "{e}");
        let ct = parse_container(Path::new("/c/100.toml"), "on_firewall = \"skip\"\n").unwrap();
        let d = resolve(vmid, &pve, Path::new("/p/100.conf"), &ct).unwrap();
        assert_eq!(d.nics[0].mode, NicMode::Skip("firewall=1".into()));
    }

    #[test]
    fn nic_for_missing_net_is_config_error_with_line() {
        let mut pve = PveConf::default();
        pve.nets.insert(0, net(0, "ovsbr0", None));
        let ct = parse_container(
            Path::new("/c/100.toml"),
            "network_type = \"bridge\"\n\n[[nic]]\nnet = 5\n",
        )
        .unwrap();
        let e = resolve("100".parse().unwrap(), &pve, Path::new("/p/100.conf"), &ct).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/c/100.toml:3: [[nic]] net = 5: no net5 in /p/100.conf"
        );
    }

    #[test]
    fn name_overrides_cannot_take_pve_or_other_container_names() {
        let mut pve = PveConf::default();
        pve.nets.insert(0, net(0, "ovsbr0", None));
        let vmid: Vmid = "102".parse().unwrap();
        for (name, ok) in [
            ("vi101", false),
            ("vi101i1", false),
            ("veth101i0", false),
            ("tap5i0", false),
            ("fwbr102i0", false),
            ("vi102", true),
            ("vi102i3", true),
            ("dup0", true),
            ("vethx", true),
        ] {
            let ct = parse_container(
                Path::new("/c/102.toml"),
                &format!("[[nic]]\nnet = 0\nname = \"{name}\"\n"),
            )
            .unwrap();
            let r = resolve(vmid, &pve, Path::new("/p/102.conf"), &ct);
            assert_eq!(r.is_ok(), ok, "{name}: {r:?}");
        }
    }

    #[test]
    fn live_ports_are_never_swept() {
        let d = desired(vec![net(0, "ovsbr0", Some(10))], "");
        let mut ours = pve_port("vi100");
        ours.external_ids = ownership_ids(&d, &d.nics[0]);
        ours.link_alive = true;
        let mut link = veth("vi100", 7);
        link.ours = true;
        let obs = Observed {
            nics: vec![ObservedNic {
                target_link: Some(link),
                target_port: Some(ours.clone()),
                ..Default::default()
            }],
            ovs_bridges: ["ovsbr0".to_string()].into(),
            owned_ports: vec![ours],
        };
        assert!(plan_pre_start(&d, &obs).unwrap().is_empty());
        // post-stop removes them all the same: the kernel destroys a stopped container's veths
        // asynchronously, and a row left behind is PVE bug #1232.
        assert_eq!(plan_post_stop(&d, &obs).len(), 1);
    }

    #[test]
    fn long_vmid_net31_names() {
        let vmid: Vmid = "999999999".parse().unwrap();
        let n31 = NetIndex::new(31).unwrap();
        assert_eq!(
            crate::desired::default_link_name(vmid, n31),
            "vi999999999i31"
        );
        let too_long = pve_integration::HostVeth::new(vmid, n31).unwrap_err();
        assert_eq!(too_long.lxc_truncated(), "veth999999999i3");
        let mut pve = PveConf::default();
        pve.nets.insert(9, net(9, "ovsbr0", None));
        pve.nets.insert(31, net(31, "ovsbr0", None));
        let ct = parse_container(Path::new("/c/x.toml"), "").unwrap();
        let d = resolve(vmid, &pve, Path::new("/p/x.conf"), &ct).unwrap();
        let obs = Observed {
            nics: vec![ObservedNic::default(); 2],
            ovs_bridges: ["ovsbr0".to_string()].into(),
            ..Default::default()
        };
        let e = plan_pre_start(&d, &obs).unwrap_err().to_string();
        assert!(
            e.starts_with("net31: PVE's host veth name veth999999999i31 is 16 bytes"),
            "{e}"
        );
        pve.nets.remove(&31);
        let d = resolve(vmid, &pve, Path::new("/p/x.conf"), &ct).unwrap();
        assert!(plan_pre_start(&d, &obs).is_ok());
    }
}
