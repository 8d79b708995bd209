//! The PVE simulator behind the `pve-sim` binary: a stand-in for Proxmox VE's container
//! start/stop machinery on real LXC and a private Open vSwitch, under a relocatable root `R`
//! (default `/`). Test infrastructure for op-agent's tests, demo and benchmarks.
//!
//! It mirrors pve-container: `update_lxc_config` (the `lxc.net.N.*` block, `lxc_config.rs`),
//! `vm_start` / `vm_stop` (hookscript phases around `lxc-start` / `lxc-stop`, `lifecycle.rs`,
//! `hookscript.rs`), `lxcnetaddbr` + `net_tap_plug` + pve-common `tap_plug` (the plug step, run
//! by LXC as `script.up`, `network.rs`) and `lxc-pve-poststop-hook` (`veth_delete` +
//! `del-port`, then the post-stop hookscript, `poststop.rs`), and `pct set` of `netN` on a
//! stopped or running container (`update_vm`, `vmconfig_hotplug_pending`, `update_net`,
//! `hotplug_net`: `set.rs`, `hotplug.rs`, `conf_file.rs`), and ifupdown2's
//! `ifreload -a` port removal on the host's bridges (`ifreload.rs`). Unlike op-agent it may call `ip`,
//! `bridge`, `ovs-vsctl` and `lxc-*`: it stands for Proxmox. `host.rs` runs the private OVS
//! daemons.
//!
//! Every subprocess and wait is bounded in time (`exec.rs`); every error is one line.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::conf::{read_conf, PveConf};
use crate::ids::{NetIndex, Vmid};
use crate::names::HostVeth;
use crate::paths;
use exec::{check, run_bounded, Out};

mod conf_file;
mod exec;
mod hookscript;
mod host;
mod hotplug;
mod ifreload;
mod lifecycle;
mod lxc_config;
mod network;
mod poststop;
mod rate_limit;
mod set;

pub use set::{parse_set_args, SetError};

/// Bound for one `ovs-vsctl` call (also passed as `--timeout`), seconds.
const VSCTL_TIMEOUT_S: u64 = 10;
/// Bound for short commands (`ip`, `bridge`, `lxc-info`).
pub(crate) const SHORT: Duration = Duration::from_secs(10);
/// Bound for one hookscript run (PVE has none; op-agent's own deadline is 10 s).
pub(crate) const HOOK_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound for reaching RUNNING after `lxc-start` (PVE `monitor_start`: 10 s).
pub(crate) const RUNNING_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound for the lxc monitor to exit after `lxc-stop` (includes the post-stop hook).
pub(crate) const STOP_TIMEOUT: Duration = Duration::from_secs(45);
/// PATH that PVE daemons and the CLI set (pve-common `PVE/Daemon.pm`, `PVE/CLIHandler.pm`).
pub const PVE_PATH: &str = "/sbin:/bin:/usr/sbin:/usr/bin";
/// Marker written by the poststop step so `stop` knows it ran.
pub(crate) const POSTSTOP_MARKER: &str = "pve-sim-poststop.done";

/// A simulator result: the error is the message for stderr.
pub type Res<T> = Result<T, String>;

/// One line for stderr: `s` trimmed, line breaks replaced by ` | `.
pub fn one_line(s: &str) -> String {
    s.trim().replace(['\n', '\r'], " | ")
}

/// The `lxc.net.N.veth.pair` PVE writes for `netN` ([`HostVeth::new`]), even when it is too
/// long for LXC ([`crate::VethTooLong::full`]): the simulator does what PVE does.
fn pve_veth_pair(vmid: Vmid, net: NetIndex) -> String {
    HostVeth::new(vmid, net).map_or_else(|e| e.full(), |v| v.to_string())
}

/// [`pve_veth_pair`] for the `netid` of a `net<netid>` option (`update_net`'s
/// `"veth${vmid}i${netid}"`); an index over 31 is an error.
fn pve_veth_of(vmid: Vmid, netid: u8) -> Res<String> {
    NetIndex::new(netid)
        .map(|n| pve_veth_pair(vmid, n))
        .ok_or_else(|| format!("net{netid}: index out of range 0..=31"))
}

/// The simulator for one root.
pub struct Sim {
    root: PathBuf,
    rundir: PathBuf,
    lxcpath: PathBuf,
    exe: PathBuf,
}

impl Sim {
    /// The simulator for the (canonical) `root`; `exe` is the `pve-sim` binary that LXC's
    /// `script.up` and `hook.post-stop` wrappers exec.
    pub fn new(root: PathBuf, exe: PathBuf) -> Sim {
        Sim {
            rundir: root.join("run/openvswitch"),
            lxcpath: paths::lxcpath(&root),
            root,
            exe,
        }
    }

    /// The root `R`.
    pub fn root(&self) -> &std::path::Path {
        &self.root
    }

    pub(crate) fn ovs_env<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        cmd.env("OVS_RUNDIR", &self.rundir)
            .env("OVS_LOGDIR", &self.rundir)
            .env("OVS_DBDIR", &self.rundir)
    }

    pub(crate) fn vsctl_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ovs-vsctl");
        self.ovs_env(&mut c)
            .arg(format!("--timeout={VSCTL_TIMEOUT_S}"))
            .args(args);
        c
    }

    pub(crate) fn vsctl(&self, args: &[&str]) -> Res<String> {
        check(
            &mut self.vsctl_cmd(args),
            Duration::from_secs(VSCTL_TIMEOUT_S + 2),
        )
    }

    /// `ovs-vsctl ...` with output discarded and errors ignored (PVE's `del-port` calls).
    pub(crate) fn vsctl_quiet(&self, args: &[&str]) {
        let _ = run_bounded(
            &mut self.vsctl_cmd(args),
            Duration::from_secs(VSCTL_TIMEOUT_S + 2),
            Out::Capture,
        );
    }

    pub(crate) fn lxc(&self, tool: &str, vmid: Vmid) -> Command {
        let mut c = Command::new(tool);
        c.arg("-P")
            .arg(&self.lxcpath)
            .arg("-n")
            .arg(vmid.to_string());
        c
    }

    pub(crate) fn ctdir(&self, vmid: Vmid) -> PathBuf {
        self.lxcpath.join(vmid.to_string())
    }

    pub(crate) fn conf(&self, vmid: Vmid) -> Res<PveConf> {
        read_conf(&self.root, vmid)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| {
                format!(
                    "Configuration file '{}' does not exist",
                    paths::lxc_conf_path(&self.root, vmid).display()
                )
            })
    }
}
