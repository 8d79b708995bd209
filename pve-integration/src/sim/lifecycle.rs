//! `pct start` / `pct stop` / in-guest reboot / destroy / list: pve-container `src/PVE/LXC.pm`
//! `vm_start`, `vm_stop` and the hookscript phases around `lxc-start` / `lxc-stop`.

use std::time::{Duration, Instant};

use super::exec::{check, run_bounded, Out};
use super::{Res, Sim, POSTSTOP_MARKER, RUNNING_TIMEOUT, SHORT, STOP_TIMEOUT};
use crate::conf::read_conf;
use crate::ids::Vmid;
use crate::running;

impl Sim {
    pub(crate) fn state(&self, vmid: Vmid) -> (String, Option<u32>) {
        let out =
            check(self.lxc("lxc-info", vmid).args(["-s", "-p", "-H"]), SHORT).unwrap_or_default();
        // Lines look like `State:          RUNNING` and `PID:            14926`.
        let field = |name: &str| {
            out.lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim() == name)
                .map(|(_, v)| v.trim().to_string())
        };
        let state = field("State").unwrap_or_default();
        let pid = field("PID").and_then(|p| p.parse().ok());
        (state, pid)
    }

    /// `pct start` (pve-container `src/PVE/API2/LXC/Status.pm` `vm_start`: all of it under
    /// `PVE::LXC::Config->lock_config`, then `PVE::LXC::vm_start`): writes the LXC config,
    /// runs the pre-start hookscript (its failure aborts), `lxc-start`, waits for RUNNING
    /// (`monitor_start`), runs post-start; the config lock is released after post-start.
    pub fn start(&self, vmid: Vmid) -> Res<()> {
        let _lock = self.lock_config(vmid)?;
        let conf = self.conf(vmid)?;
        if running::is_running(&self.root, vmid) {
            return Err(format!("CT {vmid} already running"));
        }
        self.ensure_container(vmid)?;
        self.write_lxc_config(vmid, &conf)?;
        self.exec_hookscript(&conf, vmid, "pre-start", true)?;
        let log = self.ctdir(vmid).join("lxc.log");
        if let Err(e) = check(
            self.lxc("lxc-start", vmid)
                .arg("-o")
                .arg(&log)
                .args(["-l", "INFO"]),
            Duration::from_secs(60),
        ) {
            return Err(format!(
                "startup for container '{vmid}' failed: {e}{}",
                log_errors(&log)
            ));
        }
        let deadline = Instant::now() + RUNNING_TIMEOUT;
        loop {
            if self.state(vmid).0 == "RUNNING" {
                break;
            }
            if Instant::now() >= deadline {
                return Err(format!("CT {vmid}: timeout waiting for RUNNING"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.exec_hookscript(&conf, vmid, "post-start", false)
    }

    /// `pct stop` (pve-container `src/PVE/API2/LXC/Status.pm` `vm_stop`, under
    /// `lock_config` as `vm_start`): pre-stop hookscript, `lxc-stop -k`, then waits for
    /// the lxc monitor to exit (the post-stop step has run then; it is run here if it did not).
    pub fn stop(&self, vmid: Vmid) -> Res<()> {
        let _lock = self.lock_config(vmid)?;
        if !running::is_running(&self.root, vmid) {
            return Err(format!("CT {vmid} not running"));
        }
        // A missing or broken conf must not keep a container running.
        let conf = self.conf(vmid);
        if let Ok(c) = &conf {
            self.exec_hookscript(c, vmid, "pre-stop", false)?;
        }
        let marker = self.ctdir(vmid).join(POSTSTOP_MARKER);
        let _ = std::fs::remove_file(&marker);
        let stop_err = check(
            self.lxc("lxc-stop", vmid).arg("-k"),
            Duration::from_secs(30),
        )
        .err();
        // PVE vm_stop waits for EOF on the command socket: lxc-start (and so the post-stop
        // hook with the hookscript) has finished then.
        let deadline = Instant::now() + STOP_TIMEOUT;
        while running::is_running(&self.root, vmid) {
            if Instant::now() >= deadline {
                return Err(format!(
                    "CT {vmid}: lxc monitor still running {} s after lxc-stop{}",
                    STOP_TIMEOUT.as_secs(),
                    stop_err.map(|e| format!(" ({e})")).unwrap_or_default()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if !marker.exists() {
            eprintln!("pve-sim: warning: post-stop hook of CT {vmid} did not run, running its cleanup now");
            self.poststop_cleanup(vmid, "stop")?;
        }
        Ok(())
    }

    /// In-guest `reboot -f`: no hookscript phase runs; waits until the container is RUNNING
    /// again with a new init pid, restarting it like `pve-container-stop-wrapper` if needed.
    pub fn reboot(&self, vmid: Vmid) -> Res<()> {
        if !running::is_running(&self.root, vmid) {
            return Err(format!("CT {vmid} not running"));
        }
        let (_, old_pid) = self.state(vmid);
        // The guest reboots itself; lxc-attach may die with it, so its status is not checked.
        let _ = run_bounded(
            self.lxc("lxc-attach", vmid)
                .args(["--", "/bin/reboot", "-f"]),
            SHORT,
            Out::Capture,
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut restarted_by_us = false;
        loop {
            let (state, pid) = self.state(vmid);
            if state == "RUNNING" && pid.is_some() && pid != old_pid {
                return Ok(());
            }
            if !restarted_by_us && !running::is_running(&self.root, vmid) {
                // lxc did not restart it itself: do what pve-container-stop-wrapper does.
                restarted_by_us = true;
                let log = self.ctdir(vmid).join("lxc.log");
                check(
                    self.lxc("lxc-start", vmid)
                        .arg("-o")
                        .arg(&log)
                        .args(["-l", "INFO"]),
                    Duration::from_secs(60),
                )
                .map_err(|e| format!("restart of CT {vmid} failed: {e}{}", log_errors(&log)))?;
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "CT {vmid}: not RUNNING again within 20 s of the reboot"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the container if running, then `lxc-destroy` and removes its lxcpath directory.
    pub fn destroy(&self, vmid: Vmid) -> Res<()> {
        if running::is_running(&self.root, vmid) {
            self.stop(vmid)?;
        }
        if self.ctdir(vmid).join("config").exists() {
            check(&mut self.lxc("lxc-destroy", vmid), Duration::from_secs(60))?;
        }
        let _ = std::fs::remove_dir_all(self.ctdir(vmid));
        Ok(())
    }

    /// Prints every container of `R/etc/pve/lxc/*.conf` with its status and hostname.
    pub fn list(&self) -> Res<()> {
        let mut ids: Vec<Vmid> = std::fs::read_dir(self.root.join("etc/pve/lxc"))
            .map(|d| {
                d.filter_map(|e| {
                    let name = e.ok()?.file_name();
                    name.to_str()?.strip_suffix(".conf")?.parse().ok()
                })
                .collect()
            })
            .unwrap_or_default();
        ids.sort();
        println!("{:<10} {:<10} Name", "VMID", "Status");
        for v in ids {
            let status = if running::is_running(&self.root, v) {
                "running"
            } else {
                "stopped"
            };
            let name = read_conf(&self.root, v)
                .ok()
                .flatten()
                .and_then(|c| c.options.get("hostname").cloned())
                .unwrap_or_default();
            println!("{:<10} {:<10} {name}", v.to_string(), status);
        }
        Ok(())
    }
}

/// The last ERROR lines of an `lxc-start -o` log, as `; lxc: …` (empty when there are none), so
/// a failed start says why in its one line, as PVE's task log does.
fn log_errors(log: &std::path::Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let errors: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(" ERROR ") || l.contains(" WARN "))
        .collect();
    let last = &errors[errors.len().saturating_sub(12)..];
    match last.is_empty() {
        true => String::new(),
        false => format!("; lxc: {}", last.join(" | ")),
    }
}
