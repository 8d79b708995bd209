//! `host-up` / `host-down`: the private Open vSwitch daemons (ovsdb-server + ovs-vswitchd,
//! datapath_type=netdev) and bridges a test or the demo runs against. Test infrastructure, not
//! a part of PVE.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::exec::{check, ip, run_bounded, Out};
use super::network::sys_exists;
use super::{Res, Sim, SHORT};
use crate::ids::Vmid;
use crate::running;

impl Sim {
    /// `host-up`: creates R's directories, starts ovsdb-server and ovs-vswitchd under
    /// `R/run/openvswitch` and adds the OVS bridges (datapath_type=netdev) and Linux bridges.
    /// Refuses to run in the initial network namespace.
    pub fn host_up(&self, bridges: &[String], linux_bridges: &[String]) -> Res<()> {
        if !in_own_netns()? {
            return Err("host-up refuses to run in the initial network namespace (only one userspace ovs-vswitchd per netns): use 'ip netns exec NS pve-sim ...'".into());
        }
        for d in [
            "etc/pve/lxc",
            "var/lib/vz/snippets",
            "var/lib/lxc",
            "run/openvswitch",
            "run/pve-sim",
        ] {
            std::fs::create_dir_all(self.root.join(d)).map_err(|e| format!("mkdir {d}: {e}"))?;
        }
        let pidfile = self.rundir.join("ovsdb-server.pid");
        if pid_alive(&pidfile).is_some() {
            return Err(format!("OVS already up under {}", self.rundir.display()));
        }
        let _ = ip(&["link", "set", "lo", "up"]);
        let db = self.rundir.join("conf.db");
        if !db.exists() {
            check(
                Command::new("ovsdb-tool")
                    .arg("create")
                    .arg(&db)
                    .arg("/usr/share/openvswitch/vswitch.ovsschema"),
                SHORT,
            )?;
        }
        let r = |f: &str| self.rundir.join(f).display().to_string();
        check(
            self.ovs_env(&mut Command::new("ovsdb-server"))
                .arg(&db)
                .arg(format!("--remote=punix:{}", r("db.sock")))
                .arg(format!("--unixctl={}", r("ovsdb-server.ctl")))
                .arg(format!("--pidfile={}", r("ovsdb-server.pid")))
                .arg(format!("--log-file={}", r("ovsdb-server.log")))
                .arg("--detach"),
            SHORT,
        )?;
        self.vsctl(&["--no-wait", "init"])?;
        check(
            self.ovs_env(&mut Command::new("ovs-vswitchd"))
                .arg(format!("unix:{}", r("db.sock")))
                .arg(format!("--unixctl={}", r("ovs-vswitchd.ctl")))
                .arg(format!("--pidfile={}", r("ovs-vswitchd.pid")))
                .arg(format!("--log-file={}", r("ovs-vswitchd.log")))
                .arg("--detach"),
            SHORT,
        )?;
        for b in bridges {
            self.vsctl(&[
                "--",
                "add-br",
                b,
                "--",
                "set",
                "Bridge",
                b,
                "datapath_type=netdev",
            ])?;
            ip(&["link", "set", b, "up"])?;
        }
        let mut record = String::new();
        for b in linux_bridges {
            ip(&["link", "add", "name", b, "type", "bridge"])?;
            ip(&["link", "set", b, "up"])?;
            record.push_str(b);
            record.push('\n');
        }
        std::fs::write(self.root.join("run/pve-sim/linux-bridges"), record)
            .map_err(|e| format!("write run/pve-sim/linux-bridges: {e}"))?;
        println!(
            "pve-sim: OVS up, db unix:{} (bridges: {}; linux bridges: {})",
            r("db.sock"),
            bridges.join(" "),
            linux_bridges.join(" ")
        );
        Ok(())
    }

    /// Teardown keeps going: every step is tried, the first error is reported at the end.
    pub fn host_down(&self) -> Res<()> {
        let mut errors = Vec::new();
        for vmid in self.container_ids() {
            if running::is_running(&self.root, vmid) {
                if let Err(e) = self.stop(vmid) {
                    errors.push(e);
                }
            }
        }
        let ctl = self.rundir.join("ovs-vswitchd.ctl");
        if ctl.exists() {
            let mut c = Command::new("ovs-appctl");
            self.ovs_env(&mut c)
                .arg("-t")
                .arg(&ctl)
                .args(["exit", "--cleanup"]);
            if let Err(e) = check(&mut c, Duration::from_secs(15)) {
                errors.push(e);
            }
        }
        for daemon in ["ovs-vswitchd", "ovsdb-server"] {
            let pidfile = self.rundir.join(format!("{daemon}.pid"));
            if let Err(e) = stop_pid(&pidfile) {
                errors.push(format!("{daemon}: {e}"));
            }
        }
        // The userspace datapath's own device outlives `exit --cleanup`.
        if sys_exists("ovs-netdev", "") {
            let _ = ip(&["link", "delete", "dev", "ovs-netdev"]);
        }
        if let Ok(list) = std::fs::read_to_string(self.root.join("run/pve-sim/linux-bridges")) {
            for b in list.lines().filter(|l| !l.is_empty()) {
                if sys_exists(b, "") {
                    if let Err(e) = ip(&["link", "delete", "dev", b]) {
                        errors.push(e);
                    }
                }
            }
        }
        match errors.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    pub(crate) fn container_ids(&self) -> Vec<Vmid> {
        let mut ids: Vec<Vmid> = std::fs::read_dir(&self.lxcpath)
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        ids
    }
}

/// Whether this process runs outside the initial network namespace: `/proc/self/ns/net`
/// differs from `/proc/1/ns/net`. Where `/proc/1/ns/net` is unreadable (a sandboxed pid 1),
/// being in one of the named namespaces of `/run/netns` (same nsfs inode) counts instead.
pub(crate) fn in_own_netns() -> Res<bool> {
    use std::os::unix::fs::MetadataExt;
    let own =
        std::fs::metadata("/proc/self/ns/net").map_err(|e| format!("/proc/self/ns/net: {e}"))?;
    if let Ok(init) = std::fs::metadata("/proc/1/ns/net") {
        return Ok((own.dev(), own.ino()) != (init.dev(), init.ino()));
    }
    let named = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.filter_map(|e| std::fs::metadata(e.ok()?.path()).ok())
                .any(|m| m.ino() == own.ino() && m.dev() == own.dev())
        })
        .unwrap_or(false);
    Ok(named)
}

/// The pid in `pidfile` if that process is alive.
pub(crate) fn pid_alive(pidfile: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()?;
    Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
}

/// SIGTERM the process of `pidfile`, wait up to 5 s, then SIGKILL.
pub(crate) fn stop_pid(pidfile: &Path) -> Res<()> {
    let Some(pid) = pid_alive(pidfile) else {
        return Ok(());
    };
    let _ = run_bounded(
        Command::new("kill").arg(pid.to_string()),
        SHORT,
        Out::Capture,
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while Path::new(&format!("/proc/{pid}")).exists() {
        if Instant::now() >= deadline {
            check(Command::new("kill").args(["-9", &pid.to_string()]), SHORT)?;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}
