//! pve-container `src/lxc-pve-poststop-hook`: what runs after a container stopped.

use super::exec::ip;
use super::network::sys_exists;
use super::{pve_veth_pair, Res, Sim, POSTSTOP_MARKER};
use crate::ids::{NetIndex, Vmid};

impl Sim {
    /// pve-container `lxc-pve-poststop-hook` (run by lxc as `lxc.hook.post-stop`).
    pub fn poststop(&self, args: &[String]) -> Res<()> {
        let name = std::env::var("LXC_NAME")
            .ok()
            .or_else(|| args.first().cloned())
            .unwrap_or_default();
        let vmid: Vmid = name.parse().map_err(|e| format!("poststop: {e}"))?;
        let target = std::env::var("LXC_TARGET").unwrap_or_else(|_| "stop".into());
        self.poststop_cleanup(vmid, &target)
    }

    pub(crate) fn poststop_cleanup(&self, vmid: Vmid, target: &str) -> Res<()> {
        let conf = self.conf(vmid)?;
        // "Because netlink is not reliable and lxc can fail to delete the veth" (PVE #929).
        for n in conf.nets.keys() {
            if let Some(idx) = NetIndex::new(*n) {
                self.veth_delete(&pve_veth_pair(vmid, idx));
            }
        }
        let marker = self.ctdir(vmid).join(POSTSTOP_MARKER);
        let _ = std::fs::write(&marker, format!("{target}\n"));
        if target == "reboot" {
            // PVE exits here (no post-stop hookscript) and restarts the unit; lxc restarts
            // the container itself in the simulator.
            return Ok(());
        }
        self.exec_hookscript(&conf, vmid, "post-stop", false)
    }

    /// pve-common `veth_delete` + `tap_unplug`; errors ignored as in PVE.
    pub(crate) fn veth_delete(&self, veth: &str) {
        if sys_exists(veth, "") {
            let _ = ip(&["link", "delete", "dev", veth]);
        }
        if sys_exists(veth, "brport/bridge") {
            let _ = ip(&["link", "set", veth, "nomaster"]);
        }
        self.cleanup_firewall_bridge(veth);
        self.vsctl_quiet(&["del-port", veth]);
    }
}
