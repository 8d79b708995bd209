//! Parse step of a hook: combine the PVE container config (`/etc/pve/lxc/<vmid>.conf`) with
//! op-agent's container TOML into the desired state of every NIC. Pure: no I/O.

use crate::config::{ConfigError, ContainerConfig, NetworkType, OnFirewall};
use pve_integration::{HostVeth, IfName, NetConf, NetIndex, PveConf, VlanTag, Vmid};
use std::path::Path;

/// The host link name op-agent gives `netN`: `vi<vmid>` for net0, `vi<vmid>i<N>` otherwise
/// (at most 14 bytes for a 9-digit vmid and net31).
pub fn default_link_name(vmid: Vmid, net: NetIndex) -> String {
    if net.get() == 0 {
        format!("vi{vmid}")
    } else {
        format!("vi{vmid}i{net}")
    }
}

/// What op-agent does with one NIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NicMode {
    /// Rename and re-plug into the OVS bridge with the desired tag/trunks (bridge mode, a NIC
    /// with its own `[[nic]]` table): its bridge must be an Open vSwitch bridge.
    Plug,
    /// A NIC without a `[[nic]]` table in bridge mode: [`NicMode::Plug`] when its bridge is a
    /// row of OVSDB's Bridge table; a NIC on a Linux bridge is left to PVE (the plan decides,
    /// [`crate::engine::plan::left_alone`]).
    PlugIfOvs,
    /// Rename only and keep PVE's attachment: OVS re-plugged with PVE's own tag/trunks/mtu, a
    /// Linux bridge keeps its master (netmaker mode).
    KeepAttachment,
    /// Leave the NIC untouched; the string says why (audit row `skipped`).
    Skip(String),
}

/// The desired state of one `netN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredNic {
    /// PVE's `netN` index.
    pub net: NetIndex,
    /// The host veth LXC creates for it: [`HostVeth::new`], or where that name is too long the
    /// 15 bytes LXC keeps of it ([`pve_integration::VethTooLong::lxc_truncated`]; pre-start
    /// refuses such a NIC).
    pub pve_veth: String,
    /// The name op-agent gives it.
    pub name: IfName,
    /// Bridge from the TOML, else PVE's `bridge=`; `None` when neither names one.
    pub bridge: Option<IfName>,
    /// Access VLAN.
    pub tag: Option<VlanTag>,
    /// Trunk VLANs, ascending, without duplicates.
    pub trunks: Vec<VlanTag>,
    /// PVE's `hwaddr=` (the guest side MAC), lower-case; recorded as `attached-mac`.
    pub hwaddr: Option<String>,
    /// PVE's `link_down=1`: rename, but leave the link down and unplugged.
    pub link_down: bool,
    /// PVE's `rate=` as pve-common `PVE::Network::tap_rate_limit` applies it (`None`: no
    /// limit), put on op-agent's Port as OVS QoS and ingress policing.
    pub rate: Option<pve_integration::Rate>,
    /// What to do.
    pub mode: NicMode,
}

impl Desired {
    /// True in `naming = "keep"`: PVE's `veth<vmid>i<n>` keeps its name and its Port.
    pub fn keeps_names(&self) -> bool {
        self.naming == crate::config::Naming::Keep
    }

    /// The Port op-agent manages for `nic`: PVE's own `veth<vmid>i<n>` in keep mode, the
    /// renamed link's otherwise.
    pub fn port_name<'a>(&self, nic: &'a DesiredNic) -> &'a str {
        if self.keeps_names() {
            &nic.pve_veth
        } else {
            nic.name.as_str()
        }
    }
}

/// Everything a hook needs to know about one managed container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub vmid: Vmid,
    pub network_type: NetworkType,
    /// Netmaker mode: abort pre-start when the mesh is not up.
    pub require_mesh: bool,
    /// `naming` of the container TOML, else agent.toml's `[naming] mode`
    /// ([`crate::engine::Managed::load`] applies that default).
    pub naming: crate::config::Naming,
    /// Managed NICs in `netN` order.
    pub nics: Vec<DesiredNic>,
}

/// Builds the desired state. Errors name the file and line (`[[nic]]` tables) or the PVE conf
/// key (`net3`), e.g. `/etc/op-agent/containers/100.toml:7: [[nic]] net = 5: no net5 in
/// /etc/pve/lxc/100.conf`.
pub fn resolve(
    vmid: Vmid,
    pve: &PveConf,
    pve_path: &Path,
    ct: &ContainerConfig,
) -> Result<Desired, ConfigError> {
    let t = &ct.toml;
    let mut nics = Vec::new();
    for (i, n) in t.nic.iter().enumerate() {
        let line = ct.nic_lines.get(i).copied();
        let err = |msg: String| match line {
            Some(l) => ConfigError::at(&ct.path, l, msg),
            None => ConfigError::file(&ct.path, msg),
        };
        if n.net > 31 {
            return Err(err(format!("[[nic]] net = {}: must be 0..31", n.net)));
        }
        if t.nic[..i].iter().any(|o| o.net == n.net) {
            return Err(err(format!("[[nic]] net = {}: duplicate", n.net)));
        }
        if !pve.nets.contains_key(&n.net) {
            return Err(err(format!(
                "[[nic]] net = {}: no net{} in {}",
                n.net,
                n.net,
                pve_path.display()
            )));
        }
    }
    for (idx, netconf) in &pve.nets {
        let Some(net) = NetIndex::new(*idx) else {
            continue;
        };
        let over = t.nic.iter().position(|n| n.net == *idx);
        let line = over.and_then(|i| ct.nic_lines.get(i).copied());
        let err = |msg: String| match line {
            Some(l) => ConfigError::at(&ct.path, l, msg),
            None => ConfigError::file(pve_path, msg),
        };
        let o = over.map(|i| &t.nic[i]);
        nics.push(resolve_nic(
            vmid,
            net,
            netconf,
            o,
            t.network_type,
            t.on_firewall,
            &err,
        )?);
    }
    // Names must be unique among this container's NICs.
    for (i, a) in nics.iter().enumerate() {
        if let Some(b) = nics[..i].iter().find(|b| b.name == a.name) {
            return Err(ConfigError::file(
                &ct.path,
                format!("name {} is used by net{} and net{}", a.name, b.net, a.net),
            ));
        }
    }
    Ok(Desired {
        vmid,
        network_type: t.network_type,
        require_mesh: t
            .require_mesh
            .unwrap_or(t.network_type == NetworkType::Netmaker),
        naming: t.naming.unwrap_or_default(),
        nics,
    })
}

/// A `name` override must not take a name PVE or another container owns: PVE's own device
/// names ([`pve_integration::is_pve_device_name`]) and op-agent's default names of other
/// containers (`vi<id>`, `vi<id>i<n>`).
fn check_name_namespace(vmid: Vmid, name: &str) -> Result<(), String> {
    if pve_integration::is_pve_device_name(name) {
        return Err(format!(
            "{name:?} is a Proxmox VE device name; choose another"
        ));
    }
    if let Some(rest) = name.strip_prefix("vi") {
        let id = rest.split('i').next().unwrap_or("");
        if !id.is_empty() && id.bytes().all(|c| c.is_ascii_digit()) && id != vmid.to_string() {
            return Err(format!(
                "{name:?} is op-agent's name for container {id}; choose another"
            ));
        }
    }
    Ok(())
}

fn resolve_nic(
    vmid: Vmid,
    net: NetIndex,
    pve: &NetConf,
    over: Option<&crate::config::NicToml>,
    network_type: NetworkType,
    on_firewall: OnFirewall,
    err: &dyn Fn(String) -> ConfigError,
) -> Result<DesiredNic, ConfigError> {
    let name_str = over
        .and_then(|o| o.name.clone())
        .unwrap_or_else(|| default_link_name(vmid, net));
    let name = IfName::new(&name_str).map_err(|e| err(format!("net{net} name: {e}")))?;
    if over.and_then(|o| o.name.as_ref()).is_some() {
        check_name_namespace(vmid, &name_str).map_err(|m| err(format!("net{net} name: {m}")))?;
    }
    let bridge = match over.and_then(|o| o.bridge.as_deref()) {
        Some(b) => Some(IfName::new(b).map_err(|e| err(format!("net{net} bridge: {e}")))?),
        None => pve.bridge.clone(),
    };
    let tag = match over.and_then(|o| o.tag) {
        Some(t) => {
            Some(VlanTag::new(t).ok_or_else(|| err(format!("net{net} tag {t}: must be 1..4094")))?)
        }
        None => pve.tag,
    };
    let trunks_all = match over.and_then(|o| o.trunks.as_ref()) {
        Some(ts) => ts
            .iter()
            .map(|&t| {
                VlanTag::new(t).ok_or_else(|| err(format!("net{net} trunk {t}: must be 1..4094")))
            })
            .collect::<Result<Vec<_>, _>>()?,
        None => pve.trunks.clone(),
    };
    let mut trunks = Vec::new();
    for v in trunks_all {
        if !trunks.contains(&v) {
            trunks.push(v);
        }
    }
    trunks.sort();
    // PVE's name, and the one LXC creates (they differ only when PVE's is too long).
    let (pve_name, pve_veth) = match HostVeth::new(vmid, net) {
        Ok(v) => (v.to_string(), v.to_string()),
        Err(e) => (e.full(), e.lxc_truncated()),
    };
    let mode = if over.and_then(|o| o.manage) == Some(false) {
        NicMode::Skip("manage = false".into())
    } else if pve.firewall {
        match on_firewall {
            OnFirewall::Refuse => {
                return Err(err(format!(
                    "refused: net{net} has firewall=1: renaming {pve_name} would silently disable \
                     pve-firewall for it; set on_firewall = \"skip\" to leave it untouched"
                ))
                .refusal());
            }
            OnFirewall::Skip => NicMode::Skip("firewall=1".into()),
        }
    } else {
        match network_type {
            NetworkType::Bridge if over.is_some() => NicMode::Plug,
            NetworkType::Bridge => NicMode::PlugIfOvs,
            NetworkType::Netmaker => NicMode::KeepAttachment,
        }
    };
    if matches!(mode, NicMode::Plug | NicMode::PlugIfOvs) && bridge.is_none() && !pve.link_down {
        return Err(err(format!(
            "net{net} has no bridge (PVE conf or [[nic]] bridge)"
        )));
    }
    Ok(DesiredNic {
        net,
        pve_veth,
        name,
        bridge,
        tag,
        trunks,
        hwaddr: pve.hwaddr.map(|h| format!("{h:x}")),
        link_down: pve.link_down,
        rate: pve
            .rate
            .as_deref()
            .and_then(pve_integration::Rate::from_pve),
        mode,
    })
}
