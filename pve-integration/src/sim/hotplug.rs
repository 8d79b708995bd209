//! NIC hotplug on a running container, step by step in Proxmox's order: pve-container
//! `src/PVE/LXC.pm` `update_net`, `hotplug_net`, `net_tap_plug`, `update_ipconfig`, with
//! pve-common `src/PVE/Network.pm` `veth_create`, `veth_delete`, `tap_unplug`.
//!
//! Every host action addresses the device by PVE's name `veth<vmid>i<n>`, as PVE does, whatever
//! the device is called now. SDN (`$have_sdn`: IPAM, DHCP mappings, `add_bridge_fdb`) is not
//! simulated: the simulator has no vnets, and for plain bridges those calls do nothing.

use std::process::Command;

use super::conf_file::{print_lxc_network, ConfFile};
use super::exec::{describe, run_bounded, status_text, Out};
use super::network::{disable_ipv6, read_bridge_mtu, sys_exists};
use super::{Res, Sim, SHORT};
use crate::ids::Vmid;
use crate::lxc_network::parse_lxc_network;
use crate::net::NetConf;

/// pve-common `PVE::Tools::run_command` as the live path calls it: the child's output goes
/// to ours, and a failure is `command '<shown>' failed: exit code N` (`shown` is the command
/// line PVE runs, e.g. without the simulator's `-P <lxcpath>`).
pub(crate) fn run_command(cmd: &mut Command, shown: &str) -> Res<()> {
    let r =
        run_bounded(cmd, SHORT, Out::PassThrough).map_err(|e| e.replace(&describe(cmd), shown))?;
    if r.status.success() {
        Ok(())
    } else {
        Err(format!(
            "command '{shown}' failed: {}",
            status_text(r.status)
        ))
    }
}

/// `/sbin/ip ARGS` through [`run_command`] (pve-common `run` / `run_command`).
fn sbin_ip(args: &[&str]) -> Res<()> {
    run_command(
        Command::new("/sbin/ip").args(args),
        &format!("/sbin/ip {}", args.join(" ")),
    )
}

/// `parse_lxc_network` of a stored value; the conf was checked when it was loaded.
pub(crate) fn parse_net(netid: u8, value: &str) -> Res<NetConf> {
    let index = crate::ids::NetIndex::new(netid).ok_or_else(|| format!("bad net index {netid}"))?;
    parse_lxc_network(index, value).map_err(|(p, k)| {
        format!(
            "net{netid}{}: {k}",
            p.map(|p| format!(".{p}")).unwrap_or_default()
        )
    })
}

fn ne<T: PartialEq>(a: &T, b: &T) -> bool {
    a != b
}

impl Sim {
    /// pve-common `tap_unplug`: `nomaster` when the device is a Linux bridge port, then
    /// `$cleanup_firewall_bridge` and `ovs-vsctl del-port` (errors swallowed, as PVE's `eval`).
    pub(crate) fn tap_unplug(&self, iface: &str) {
        if sys_exists(iface, "brport/bridge") {
            let _ = sbin_ip(&["link", "set", "dev", iface, "nomaster"]);
        }
        self.cleanup_firewall_bridge(iface);
        self.vsctl_quiet(&["del-port", iface]);
    }

    /// pve-common `veth_create`: the pair `veth` / `peer` (peer with `mac`) unless `veth`
    /// exists, IPv6 off on both, both set up with the bridge MTU.
    fn veth_create(&self, veth: &str, peer: &str, net: &NetConf) -> Res<()> {
        let bridge = net
            .bridge
            .as_ref()
            .map(|b| b.as_str())
            .ok_or_else(|| "unable to get bridge setting".to_string())?;
        let mtu = read_bridge_mtu(bridge)?.to_string();
        if !sys_exists(veth, "") {
            let mut args = vec![
                "link", "add", "name", veth, "mtu", &mtu, "type", "veth", "peer", "name", peer,
                "mtu", &mtu,
            ];
            let mac = net.hwaddr.map(|m| m.to_string());
            if let Some(m) = &mac {
                args.extend(["addr", m.as_str()]);
            }
            sbin_ip(&args).map_err(|e| format!("can't create interface {veth} - {e}"))?;
        }
        disable_ipv6(veth);
        disable_ipv6(peer);
        for dev in [veth, peer] {
            // pve-common `$activate_interface`.
            sbin_ip(&["link", "set", dev, "up", "mtu", &mtu])
                .map_err(|e| format!("can't activate interface '{dev}' - {e}"))?;
        }
        Ok(())
    }

    /// pve-container `net_tap_plug` on the live path: `link_down` → `ip link set dev <iface>
    /// down` only; else pve-common `tap_plug` ([`Sim::tap_plug`], with its rate limit) and
    /// `/sbin/ip link set dev <iface> up`, which fails when no device has that name.
    fn live_net_tap_plug(&self, iface: &str, net: &NetConf) -> Res<()> {
        if net.link_down {
            return sbin_ip(&["link", "set", "dev", iface, "down"]);
        }
        let bridge = net
            .bridge
            .as_ref()
            .map(|b| b.as_str())
            .ok_or_else(|| "missing bridge configuration".to_string())?;
        let mtu = read_bridge_mtu(bridge)?;
        self.tap_plug(iface, net, bridge, mtu)?;
        sbin_ip(&["link", "set", "dev", iface, "up"])
    }

    /// pve-container `update_net` for `opt` = `net<netid>` with the new value `newnet`, on a
    /// running container: the host side by PVE's name, then [`Sim::update_ipconfig`].
    ///
    /// # Errors
    /// The first failing step, worded like PVE (the caller prefixes `unable to hotplug`).
    pub(crate) fn update_net(
        &self,
        vmid: Vmid,
        conf: &mut ConfFile,
        opt: &str,
        newnet: &NetConf,
        netid: u8,
    ) -> Res<()> {
        let veth = super::pve_veth_of(vmid, netid)?;
        if let Some(old) = conf.get(opt).map(str::to_string) {
            let mut oldnet = parse_net(netid, &old)?;
            if ne(&oldnet.hwaddr, &newnet.hwaddr) || ne(&oldnet.name, &newnet.name) {
                // update_net: veth_delete, `delete $conf->{$opt}`, write_config, hotplug_net.
                self.veth_delete(&veth);
                conf.remove(opt);
                conf.write()?;
                self.hotplug_net(vmid, conf, opt, newnet, netid)?;
            } else {
                if ne(&oldnet.bridge, &newnet.bridge)
                    || ne(&oldnet.tag, &newnet.tag)
                    || ne(&oldnet.firewall, &newnet.firewall)
                    || ne(&oldnet.link_down, &newnet.link_down)
                {
                    if oldnet.bridge.is_some() {
                        self.tap_unplug(&veth);
                    }
                    if let Err(err) = self.live_net_tap_plug(&veth, newnet) {
                        // update_net's rollback: re-plug the old values, then die with the
                        // first error.
                        if let Err(e) = self.live_net_tap_plug(&veth, &oldnet) {
                            eprintln!(
                                "restoring old network due to hot-plug failure for {veth} failed - {e}"
                            );
                        }
                        return Err(err);
                    }
                    // "This includes the rate": only values that are set are taken over.
                    if newnet.bridge.is_some() {
                        oldnet.bridge.clone_from(&newnet.bridge);
                    }
                    if newnet.tag.is_some() {
                        oldnet.tag = newnet.tag;
                    }
                    if newnet.firewall {
                        oldnet.firewall = true;
                    }
                    if newnet.rate.is_some() {
                        oldnet.rate.clone_from(&newnet.rate);
                    }
                    if newnet.link_down {
                        oldnet.link_down = true;
                    }
                } else if ne(&oldnet.rate, &newnet.rate) {
                    // PVE: `tap_rate_limit($veth, $rate)` (tc htb + ingress police). Not
                    // simulated: the value is taken over and nothing is done on the host.
                    oldnet.rate.clone_from(&newnet.rate);
                }
                // trunks and mtu are no triggers: written, not applied (stock PVE).
                conf.set(opt, &print_lxc_network(&oldnet));
                conf.write()?;
            }
        } else {
            self.hotplug_net(vmid, conf, opt, newnet, netid)?;
        }
        self.update_ipconfig(vmid, conf, opt, newnet, netid)
    }

    /// pve-container `hotplug_net`: `veth_create`, `net_tap_plug`, `lxc-device add` of the
    /// peer as the guest's `name`, `ip link set <name> up` inside, and only THEN `netN` (the
    /// subset `bridge tag firewall hwaddr name link_down`) into the conf, written.
    fn hotplug_net(
        &self,
        vmid: Vmid,
        conf: &mut ConfFile,
        opt: &str,
        newnet: &NetConf,
        netid: u8,
    ) -> Res<()> {
        let veth = super::pve_veth_of(vmid, netid)?;
        let peer = format!("{veth}p");
        let eth = newnet.name.as_str();
        self.veth_create(&veth, &peer, newnet)?;
        self.live_net_tap_plug(&veth, newnet)?;
        // "attach peer in container"
        self.lxc_device_add(vmid, &peer, eth)?;
        // "link up peer in container"
        let up = ["/sbin/ip", "link", "set", eth, "up"];
        run_command(
            self.lxc("lxc-attach", vmid)
                .args(["-s", "NETWORK", "--"])
                .args(up),
            &format!("lxc-attach -n {vmid} -s NETWORK -- {}", up.join(" ")),
        )?;
        let mut done = NetConf::new(newnet.index, &newnet.name);
        done.bridge.clone_from(&newnet.bridge);
        done.tag = newnet.tag;
        done.firewall = newnet.firewall;
        done.hwaddr = newnet.hwaddr;
        done.link_down = newnet.link_down;
        conf.set(opt, &print_lxc_network(&done));
        conf.write()
    }

    /// `lxc-device -n <vmid> add <dev> <name>`, done as lxc's `do_lxcapi_attach_interface`
    /// (`src/lxc/lxccontainer.c`) does it: the device down if up, then one RTM_NEWLINK that
    /// moves it into the netns of the container's init and renames it
    /// (`lxc_netdev_move_by_name`). The `lxc-device` tool itself cannot be used here: it looks
    /// for the device in the network namespace of PID 1 (`is_interface(dev, 1)`), and the
    /// simulator runs in a private one.
    ///
    /// # Errors
    /// `command 'lxc-device -n <vmid> add <dev> <name>' failed: exit code 1`, the tool's exit.
    fn lxc_device_add(&self, vmid: Vmid, dev: &str, name: &str) -> Res<()> {
        let shown = format!("lxc-device -n {vmid} add {dev} {name}");
        let fail = |why: String| {
            eprintln!("lxc-device: {vmid}: {why}");
            format!("command '{shown}' failed: exit code 1")
        };
        if sys_exists(dev, "") && self.is_up(dev) {
            sbin_ip(&["link", "set", "dev", dev, "down"]).map_err(fail)?;
        }
        let pid = self
            .state(vmid)
            .1
            .ok_or_else(|| fail("Failed to get init pid".into()))?
            .to_string();
        sbin_ip(&["link", "set", "dev", dev, "netns", &pid, "name", name]).map_err(fail)
    }

    /// IFF_UP of host device `dev` (`/sys/class/net/<dev>/flags`).
    fn is_up(&self, dev: &str) -> bool {
        std::fs::read_to_string(format!("/sys/class/net/{dev}/flags"))
            .ok()
            .and_then(|f| u32::from_str_radix(f.trim().trim_start_matches("0x"), 16).ok())
            .is_some_and(|f| f & 1 != 0)
    }

    /// pve-container `update_ipconfig`, static addresses only: for IPv4 then IPv6, when the
    /// address or gateway differs from the conf's, add the new address inside the container
    /// (`lxc-attach -s NETWORK -- /sbin/ip`), replace the default route, delete the old
    /// address, and write the conf with the new values. Warnings as PVE's `warn`. Not
    /// simulated: `manage_dhclient` (host-managed DHCP), `promote_secondaries`, and
    /// `PVE::LXC::Setup::setup_network` (the guest's own network files).
    fn update_ipconfig(
        &self,
        vmid: Vmid,
        conf: &mut ConfFile,
        opt: &str,
        newnet: &NetConf,
        netid: u8,
    ) -> Res<()> {
        let eth = newnet.name.as_str();
        let ipcmd = |args: &[&str]| -> Res<()> {
            run_command(
                self.lxc("lxc-attach", vmid)
                    .args(["-s", "NETWORK", "--", "/sbin/ip"])
                    .args(args),
                &format!(
                    "lxc-attach -n {vmid} -s NETWORK -- /sbin/ip {}",
                    args.join(" ")
                ),
            )
        };
        for v6 in [false, true] {
            let Some(cur) = conf.get(opt).map(str::to_string) else {
                return Ok(());
            };
            let mut optdata = parse_net(netid, &cur)?;
            let fam = if v6 { "-6" } else { "-4" };
            let (newip, newgw, oldip, oldgw) = if v6 {
                (
                    &newnet.ip6,
                    &newnet.gw6,
                    optdata.ip6.clone(),
                    optdata.gw6.clone(),
                )
            } else {
                (
                    &newnet.ip,
                    &newnet.gw,
                    optdata.ip.clone(),
                    optdata.gw.clone(),
                )
            };
            let change_ip = *newip != oldip;
            let change_gw = *newgw != oldgw;
            if !change_ip && !change_gw {
                continue;
            }
            let real = |ip: &Option<String>| {
                ip.as_deref()
                    .filter(|i| !matches!(*i, "auto" | "dhcp" | "manual"))
                    .map(str::to_string)
            };
            if change_ip {
                if let Some(ip) = real(newip) {
                    if let Err(e) = ipcmd(&[fam, "addr", "add", &ip, "dev", eth]) {
                        eprintln!("{e}");
                        continue;
                    }
                }
            }
            if change_gw {
                if let Some(gw) = newgw {
                    if let Err(e) = ipcmd(&[fam, "route", "replace", "default", "via", gw]) {
                        eprintln!("{e}");
                        if let (true, Some(ip)) = (change_ip, real(newip)) {
                            let _ = ipcmd(&[fam, "addr", "del", &ip, "dev", eth]);
                        }
                        continue;
                    }
                } else if let Err(e) = ipcmd(&[fam, "route", "del", "default"]) {
                    eprintln!("{e}");
                }
            }
            if change_ip {
                if let Some(ip) = oldip.as_deref().filter(|i| !matches!(*i, "auto" | "dhcp")) {
                    if let Err(e) = ipcmd(&[fam, "addr", "del", ip, "dev", eth]) {
                        eprintln!("{e}");
                    }
                }
            }
            if v6 {
                optdata.ip6.clone_from(newip);
                optdata.gw6.clone_from(newgw);
            } else {
                optdata.ip.clone_from(newip);
                optdata.gw.clone_from(newgw);
            }
            conf.set(opt, &print_lxc_network(&optdata));
            conf.write()?;
        }
        Ok(())
    }
}
