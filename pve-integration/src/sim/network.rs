//! The plug step LXC runs as `lxc.net.N.script.up`: pve-container `src/lxcnetaddbr` and
//! `net_tap_plug`, pve-common `src/PVE/Network.pm` `tap_plug` with its firewall bridge
//! (`fwbr`) devices.

use std::path::Path;
use std::process::Command;

use super::exec::{check, ip};
use super::{Res, Sim, SHORT};
use crate::ids::Vmid;
use crate::names::{FwNames, HostVeth};
use crate::net::{ovs_vlan_mode, IfName, NetConf, VlanTag};

pub(crate) fn sys_exists(dev: &str, sub: &str) -> bool {
    !dev.is_empty()
        && !dev.contains('/')
        && Path::new("/sys/class/net").join(dev).join(sub).exists()
}

pub(crate) fn read_bridge_mtu(bridge: &str) -> Res<u32> {
    if bridge.is_empty() || bridge.contains('/') {
        return Err(format!("bridge '{bridge}' does not exist"));
    }
    std::fs::read_to_string(Path::new("/sys/class/net").join(bridge).join("mtu"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| format!("bridge '{bridge}' does not exist"))
}

/// The firewall bridge devices of a PVE veth name (pve-common `src/PVE/Network.pm`
/// `$parse_tap_device_name` + `$compute_fwbr_names`); `None` for any other name.
fn fw_names(iface: &str) -> Option<FwNames> {
    let (vmid, net) = HostVeth::parse(iface)?;
    HostVeth::new(vmid, net).ok().map(|v| FwNames::of(&v))
}

impl Sim {
    /// pve-container `src/lxcnetaddbr`.
    pub fn lxcnetaddbr(&self, args: &[String]) -> Res<()> {
        if args.len() != 5 {
            return Err(format!(
                "lxcnetaddbr: got wrong number of arguments ({})",
                args.len()
            ));
        }
        let vmid: Vmid = args[0].parse().map_err(|e| format!("lxcnetaddbr: {e}"))?;
        if std::env::var("LXC_NAME").ok().as_deref() != Some(args[0].as_str()) {
            return Err(format!("lxcnetaddbr: LXC_NAME does not match vmid {vmid}"));
        }
        let (typ, iface) = (&args[3], &args[4]);
        if typ != "veth" {
            return Err(format!("lxcnetaddbr: got unexpected network type '{typ}'"));
        }
        let nodef = || format!("unable to find network definition for interface '{iface}'");
        let netid = HostVeth::parse(iface)
            .map(|(_, n)| n.get())
            .ok_or_else(nodef)?;
        let conf = self.conf(vmid)?;
        let net = conf.nets.get(&netid).ok_or_else(nodef)?;
        let bridge = net
            .bridge
            .as_ref()
            .map(IfName::as_str)
            .ok_or_else(|| "missing bridge configuration".to_string())?;
        let bridge_mtu = read_bridge_mtu(bridge)?;
        ip(&[
            "link",
            "set",
            "dev",
            iface,
            "up",
            "mtu",
            &bridge_mtu.to_string(),
        ])?;
        self.net_tap_plug(iface, net, bridge, bridge_mtu)
    }

    /// pve-container `net_tap_plug`: `link_down` → `ip link set dev <iface> down` only;
    /// otherwise [`Sim::tap_plug`] and `ip link set dev <iface> up`.
    pub(crate) fn net_tap_plug(
        &self,
        iface: &str,
        net: &NetConf,
        bridge: &str,
        mtu: u32,
    ) -> Res<()> {
        if net.link_down {
            // "Don't add disconnected interfaces to the bridge".
            ip(&["link", "set", "dev", iface, "down"])?;
            return Ok(());
        }
        self.tap_plug(iface, net, bridge, mtu)?;
        ip(&["link", "set", "dev", iface, "up"])?;
        Ok(())
    }

    /// pve-common `src/PVE/Network.pm` `tap_plug`: `del-port`, then the Linux bridge
    /// (`$bridge_add_interface`, fwbr when needed) or OVS (`$ovs_bridge_add_port`) attach.
    /// Then `tap_rate_limit` ([`super::rate_limit::tap_rate_limit`]).
    pub(crate) fn tap_plug(&self, iface: &str, net: &NetConf, bridge: &str, mtu: u32) -> Res<()> {
        // "cleanup old port config from any openvswitch bridge"
        self.vsctl_quiet(&["del-port", iface]);
        let trunks = net
            .trunks
            .iter()
            .map(VlanTag::to_string)
            .collect::<Vec<_>>()
            .join(",");
        if sys_exists(bridge, "bridge") {
            self.cleanup_firewall_bridge(iface);
            let vlan_aware =
                std::fs::read_to_string(format!("/sys/class/net/{bridge}/bridge/vlan_filtering"))
                    .map(|s| s.trim() == "1")
                    .unwrap_or(false);
            if !vlan_aware && !net.trunks.is_empty() {
                return Err("vlan aware feature need to be enabled to use trunks".into());
            }
            if !vlan_aware && net.tag.is_some() {
                return Err(format!(
                    "pve-sim does not simulate activate_bridge_vlan (tag on non-vlan-aware Linux bridge '{bridge}')"
                ));
            }
            // nftables firewall (PVE's default) needs no fwbr on a Linux bridge.
            let iptables = self
                .root
                .join("run/proxmox-nftables-firewall-force-disable")
                .exists();
            if net.firewall && iptables {
                let FwNames {
                    fwbr, fwln, fwpr, ..
                } = fw_names(iface).ok_or_else(|| {
                    format!("can't create firewall bridge for random interface name '{iface}'")
                })?;
                self.create_fwbr(&fwbr, mtu)?;
                ip(&[
                    "link",
                    "add",
                    &fwln,
                    "mtu",
                    &mtu.to_string(),
                    "type",
                    "veth",
                    "peer",
                    "name",
                    &fwpr,
                    "mtu",
                    &mtu.to_string(),
                ])?;
                ip(&["link", "set", &fwln, "up"])?;
                ip(&["link", "set", &fwpr, "up"])?;
                bridge_add_interface(bridge, &fwpr, mtu, net.tag, &net.trunks, vlan_aware)?;
                bridge_add_interface(&fwbr, &fwln, mtu, None, &[], false)?;
                bridge_add_interface(&fwbr, iface, mtu, None, &[], false)?;
            } else {
                bridge_add_interface(bridge, iface, mtu, net.tag, &net.trunks, vlan_aware)?;
            }
        } else if self.vsctl(&["br-exists", bridge]).is_ok() {
            self.cleanup_firewall_bridge(iface);
            let port = |name: &str, internal: bool| -> Res<()> {
                let mut args: Vec<String> =
                    vec!["--".into(), "add-port".into(), bridge.into(), name.into()];
                if let Some(t) = net.tag {
                    args.push(format!("tag={t}"));
                }
                if !trunks.is_empty() {
                    args.push(format!("trunks={trunks}"));
                }
                if let Some(mode) = ovs_vlan_mode(net.tag, &net.trunks) {
                    args.push(format!("vlan_mode={mode}"));
                }
                args.extend(["--", "set", "Interface", name].map(String::from));
                args.push(format!("mtu_request={mtu}"));
                if internal {
                    args.extend(
                        ["--", "set", "Interface", name, "type=internal"].map(String::from),
                    );
                }
                let a: Vec<&str> = args.iter().map(String::as_str).collect();
                self.vsctl(&a).map(|_| ())
            };
            if net.firewall {
                let FwNames {
                    fwbr,
                    ovs_int: ovsint,
                    ..
                } = fw_names(iface).ok_or_else(|| {
                    format!("can't create firewall bridge for random interface name '{iface}'")
                })?;
                self.create_fwbr(&fwbr, mtu)?;
                bridge_add_interface(&fwbr, iface, mtu, None, &[], false)?;
                self.vsctl_quiet(&["del-port", &ovsint]);
                port(&ovsint, true)?;
                ip(&["link", "set", &ovsint, "up"])?;
                ip(&["link", "set", &ovsint, "master", &fwbr])?;
            } else {
                port(iface, false)?;
            }
            disable_ipv6(iface);
        } else {
            return Err(format!(
                "bridge '{bridge}' is neither a linux nor an OVS bridge!"
            ));
        }
        super::rate_limit::tap_rate_limit(iface, net.rate.as_deref())
    }

    pub(crate) fn create_fwbr(&self, fwbr: &str, mtu: u32) -> Res<()> {
        if !sys_exists(fwbr, "") {
            ip(&[
                "link",
                "add",
                "name",
                fwbr,
                "mtu",
                &mtu.to_string(),
                "type",
                "bridge",
            ])?;
        }
        disable_ipv6(fwbr);
        ip(&["link", "set", "dev", fwbr, "up"])?;
        Ok(())
    }

    /// pve-common `$cleanup_firewall_bridge`; errors ignored like PVE's `eval` around it.
    pub(crate) fn cleanup_firewall_bridge(&self, iface: &str) {
        let Some(FwNames {
            fwbr,
            fwpr,
            ovs_int: ovsint,
            ..
        }) = fw_names(iface)
        else {
            return;
        };
        if sys_exists(&ovsint, "") {
            self.vsctl_quiet(&["del-port", &ovsint]);
        }
        if sys_exists(&fwpr, "") {
            let _ = ip(&["link", "delete", "dev", &fwpr]);
        }
        if sys_exists(&fwbr, "") {
            let _ = ip(&["link", "set", "dev", &fwbr, "down"]);
            let _ = ip(&["link", "delete", "dev", &fwbr]);
        }
    }
}

/// pve-common `$bridge_add_interface` (Linux bridge).
pub(crate) fn bridge_add_interface(
    bridge: &str,
    iface: &str,
    mtu: u32,
    tag: Option<VlanTag>,
    trunks: &[VlanTag],
    vlan_aware: bool,
) -> Res<()> {
    ip(&["link", "set", iface, "mtu", &mtu.to_string()])?;
    disable_ipv6(iface);
    ip(&["link", "set", iface, "master", bridge])
        .map_err(|e| format!("can't enslave '{iface}' to '{bridge}': {e}"))?;
    if vlan_aware {
        let bv = |args: &[&str]| check(Command::new("bridge").arg("vlan").args(args), SHORT);
        bv(&["del", "dev", iface, "vid", "1-4094"])?;
        if !trunks.is_empty() {
            for t in trunks {
                bv(&["add", "dev", iface, "vid", &t.to_string()])?;
            }
        } else if tag.is_none() {
            bv(&["add", "dev", iface, "vid", "2-4094"])?;
        }
        let pvid = tag.map_or(1, VlanTag::get).to_string();
        bv(&["add", "dev", iface, "vid", &pvid, "pvid", "untagged"])?;
    }
    Ok(())
}

pub(crate) fn disable_ipv6(iface: &str) {
    if !iface.contains('/') {
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{iface}/disable_ipv6"), "1");
    }
}
