//! Helpers shared by the `fault_*` tests: a managed container 100 whose veth is plugged into
//! the private OVS the way PVE's `lxcnetaddbr` leaves it before post-start, without starting a
//! real container (the faults are in op-agent's path, not in LXC's), and ways to break OVS.
#![allow(dead_code)]

use crate::support::TestHost;
use std::time::{Duration, Instant};

/// PVE conf of container `vmid` with net0 on `ovsbr0`, VLAN 10.
pub fn pve_conf(vmid: u32) -> String {
    format!(
        "arch: amd64\nhostname: ct{vmid}\nhookscript: local:snippets/op-hook\nmemory: 128\n\
         net0: name=eth0,bridge=ovsbr0,hwaddr=BC:24:11:00:01:00,ip=10.10.0.{}/24,tag=10,type=veth\n\
         ostype: unmanaged\n",
        vmid % 200
    )
}

/// Writes the PVE conf and the container TOML of `vmid` (managed, bridge mode).
pub fn manage(host: &TestHost, vmid: u32) {
    host.write_pve_conf(vmid, &pve_conf(vmid));
    host.manage(vmid, "network_type = \"bridge\"\n");
}

/// What LXC + `lxcnetaddbr` leave before post-start: `veth<vmid>i0` (peer `pc<vmid>`) up, a
/// Port of that name on ovsbr0 with tag 10 and no external_ids.
pub fn plug_like_pve(host: &TestHost, vmid: u32) {
    let veth = format!("veth{vmid}i0");
    let peer = format!("pc{vmid}");
    host.run_ok(&[
        "ip", "link", "add", &veth, "type", "veth", "peer", "name", &peer,
    ]);
    host.run_ok(&["ip", "link", "set", &veth, "up"]);
    host.run_ok(&["ip", "link", "set", &peer, "up"]);
    host.vsctl_ok(&["add-port", "ovsbr0", &veth, "tag=10"]);
}

/// For tests that use `OP_AGENT_FAILPOINT`: fails loudly unless the tests were built with
/// `--features failpoints` (make test does), then gives a host named after `name_hint` with
/// container 100 managed and plugged like PVE.
#[allow(clippy::assertions_on_constants)] // fails loudly without --features failpoints
pub fn failpoint_host(name_hint: &str) -> TestHost {
    assert!(
        cfg!(feature = "failpoints"),
        "build the tests with --features failpoints (make test does)"
    );
    let host = TestHost::new(name_hint);
    manage(&host, 100);
    plug_like_pve(&host, 100);
    host
}

/// `op-agent hook <vmid> <phase>` with extra environment; returns (exit code, stderr, elapsed).
pub fn hook(
    host: &TestHost,
    vmid: u32,
    phase: &str,
    env: &[(&str, &str)],
) -> (Option<i32>, String, Duration) {
    let bin = crate::support::op_agent_bin().display().to_string();
    let v = vmid.to_string();
    let t = Instant::now();
    let out = host.run_env(&[&bin, "hook", &v, phase], env);
    let (code, err, took) = (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        t.elapsed(),
    );
    eprintln!(
        "observed: hook {vmid} {phase} -> exit {code:?} in {took:?}: {}",
        err.trim()
    );
    (code, err, took)
}

/// Audit rows of `vmid` as `(run_id, step, outcome)`, in seq order.
pub fn rows(host: &TestHost, vmid: u64) -> Vec<(String, String, String)> {
    host.audit_rows()
        .into_iter()
        .filter(|r| r["vmid"].as_u64() == Some(vmid))
        .map(|r| {
            (
                r["run_id"].as_str().unwrap_or("").to_string(),
                r["step"].as_str().unwrap_or("").to_string(),
                r["outcome"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// Pid of a private OVS daemon (`ovsdb-server` or `ovs-vswitchd`) from its pid file.
pub fn daemon_pid(host: &TestHost, daemon: &str) -> i32 {
    let p = host.ovs_rundir().join(format!("{daemon}.pid"));
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .parse()
        .unwrap()
}

/// Sends `sig` (e.g. "STOP", "CONT", "KILL") to a private OVS daemon.
pub fn signal_daemon(host: &TestHost, daemon: &str, sig: &str) {
    let pid = daemon_pid(host, daemon).to_string();
    let out = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid])
        .output()
        .unwrap();
    assert!(out.status.success(), "kill -{sig} {daemon} {pid}");
}

/// Kills a private OVS daemon and waits until it is gone.
pub fn kill_daemon(host: &TestHost, daemon: &str) {
    let pid = daemon_pid(host, daemon);
    signal_daemon(host, daemon, "KILL");
    let t = Instant::now();
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        // Reaped by nobody (daemonised): a zombie has no /proc/<pid>/exe target.
        if std::fs::read_link(format!("/proc/{pid}/exe")).is_err() {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "{daemon} did not die");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// True if link `name` exists in the host's namespace.
pub fn has_link(host: &TestHost, name: &str) -> bool {
    host.link(name).is_some()
}

/// Rewrites agent.toml with the given OVS wait timeout and hook deadline (ms), and the socket.
pub fn agent_toml(host: &TestHost, socket: &std::path::Path, timeout_ms: u64, deadline_ms: u64) {
    let text = format!(
        "[ovsdb]\nsocket = \"{}\"\ntimeout_ms = {timeout_ms}\n[hook]\ndeadline_ms = {deadline_ms}\n\
         [audit]\ndatabase = \"{}\"\n[pve]\nroot = \"{}\"\n",
        socket.display(),
        host.audit_db().display(),
        host.root().display()
    );
    std::fs::write(host.agent_toml(), text).unwrap();
}
