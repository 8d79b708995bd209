//! Checks that a running container's first NIC is PVE's own again (after `op-agent release`
//! or `enroll --remove`): the state pve-container's `update_net` / pve-common `tap_plug`
//! leave on a host without op-agent.

use crate::TestHost;
use std::time::{Duration, Instant};

/// `Ok` when container `vmid`'s net0 is PVE's: link `veth<vmid>i0` up without op-agent's
/// alias, no `vi<vmid>` link or Port, and a Port `veth<vmid>i0` on `ovsbr0` with `tag`, no
/// `external_ids`, the bridge's MTU (1500) and an ofport > 0.
pub fn pves_net0(host: &TestHost, vmid: u32, tag: u16) -> Result<(), String> {
    let (vi, veth) = (format!("vi{vmid}"), format!("veth{vmid}i0"));
    if host.has_link(&vi) || host.ports("ovsbr0").contains(&vi) {
        return Err(format!("{vi} is still there"));
    }
    let l = host.link(&veth).ok_or(format!("no {veth}"))?;
    if !host.is_up(&veth) {
        return Err(format!("{veth} is down"));
    }
    if l.get("ifalias").is_some_and(|a| a.as_str() != Some("")) {
        return Err(format!("{veth} alias {:?}", l["ifalias"]));
    }
    if !host.ports("ovsbr0").contains(&veth) {
        return Err(format!("no Port {veth} on ovsbr0"));
    }
    let got = host.ovs_get("Port", &veth, "tag");
    if got != tag.to_string() {
        return Err(format!("Port {veth} tag {got}"));
    }
    let ids = host.ovs_get("Port", &veth, "external_ids");
    if ids != "{}" {
        return Err(format!("Port {veth} external_ids {ids}"));
    }
    let mtu = host.ovs_get("Interface", &veth, "mtu_request");
    if mtu != "1500" {
        return Err(format!("Interface {veth} mtu_request {mtu}"));
    }
    let of: i64 = host
        .ovs_get("Interface", &veth, "ofport")
        .parse()
        .unwrap_or(-1);
    if of <= 0 {
        return Err(format!("Interface {veth} ofport {of}"));
    }
    Ok(())
}

/// Waits up to `limit` for [`pves_net0`]; panics with its last reason.
pub fn wait_pves_net0(host: &TestHost, vmid: u32, tag: u16, limit: Duration) {
    let t = Instant::now();
    loop {
        match pves_net0(host, vmid, tag) {
            Ok(()) => return,
            Err(e) if t.elapsed() > limit => panic!("not PVE's after {limit:?}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// [`pves_net0`] must hold for `d` (e.g. while the watch runs); panics when it does not.
pub fn stays_pves_net0(host: &TestHost, vmid: u32, tag: u16, d: Duration) {
    let t = Instant::now();
    while t.elapsed() < d {
        if let Err(e) = pves_net0(host, vmid, tag) {
            panic!("taken back after {:?}: {e}", t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
