//! PVE's `rate=` on a renamed NIC, end to end: `pve-sim start` plugs `veth100i0` and limits
//! it with tc as pve-common `tap_rate_limit` does, op-agent's post-start re-plugs it as
//! `vi100` (ovs-vswitchd then replaces the device's qdiscs) with the same limit as OVS rows (a
//! `linux-htb` QoS with Queue 0 on the Port, `ingress_policing_*` on the Interface), and the
//! watch puts the limit back with the Port after someone deletes it. Measured on real
//! traffic between two LXC containers on a private OVS with `datapath_type=netdev`.
//! Root only; run: `cargo build --workspace && cargo test --test rate_limit -- --nocapture`.

use std::time::{Duration, Instant};

use op_testkit::{Nic, PveConf, TestHost};

/// Bytes each transfer sends: 6 MiB (1 MiB of burst, then 5 s at 1 MiB/s).
const SENT: u64 = 6 * 1024 * 1024;

fn ct(host: &TestHost, vmid: u32, rate: Option<&str>) {
    let h = vmid % 200 + 1;
    let mut nic = Nic::with_id(0, "ovsbr0", vmid as u16)
        .tag(10)
        .ip(&format!("10.0.0.{h}/24"));
    if let Some(r) = rate {
        nic = nic.prop("rate", r);
    }
    host.write_pve_conf(vmid, PveConf::op_hook(vmid).nic(nic));
    host.manage(vmid, "network_type = \"bridge\"\n");
}

fn attach(host: &TestHost, vmid: u32, script: &str) -> Vec<String> {
    let lxcpath = host.lxcpath().display().to_string();
    [
        "lxc-attach",
        "-P",
        &lxcpath,
        "-n",
        &vmid.to_string(),
        "--",
        "sh",
        "-c",
        script,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Turns off TX checksum offload on the guest's `eth0`: ovs-vswitchd's userspace datapath
/// reads frames with AF_PACKET and would forward CHECKSUM_PARTIAL TCP segments unfinished.
fn csum_off(host: &TestHost, vmid: u32) {
    let lxcpath = host.lxcpath().display().to_string();
    let v = vmid.to_string();
    let pid = host.run_ok(&["lxc-info", "-P", &lxcpath, "-n", &v, "-p", "-H"]);
    let pid = pid.trim();
    host.run_ok(&[
        "nsenter", "-t", pid, "-n", "ethtool", "-K", "eth0", "tx", "off",
    ]);
}

/// Serves [`SENT`] bytes at `http://<ip>/f` from container `vmid` (busybox `httpd`).
fn serve(host: &TestHost, vmid: u32) {
    let script = format!(
        "mkdir -p /tmp/www && dd if=/dev/zero of=/tmp/www/f bs=65536 count={} 2>/dev/null && httpd -p 80 -h /tmp/www",
        SENT / 65536
    );
    let args = attach(host, vmid, &script);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    host.run_ok(&args);
}

/// Throughput in MiB/s of container `vmid` downloading [`SENT`] bytes from `http://<ip>/f`.
fn download(host: &TestHost, vmid: u32, ip: &str) -> f64 {
    let args = attach(
        host,
        vmid,
        &format!("timeout 60 wget -q -O /dev/null http://{ip}/f"),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let t = Instant::now();
    let out = host.run(&args);
    let secs = t.elapsed().as_secs_f64();
    assert!(out.status.success(), "{}", out.text());
    SENT as f64 / secs / (1024.0 * 1024.0)
}

/// The QoS and Queue rows (`ovs-vsctl --columns=_uuid list`), one UUID per line.
fn rows(host: &TestHost, table: &str) -> Vec<String> {
    host.vsctl_ok(&["--bare", "--columns=_uuid", "list", table])
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// Into the container (ovs-vswitchd sending out of `vi100`, shaped by htb on the device) the
/// limit of `rate=1` holds within 30% of 1 MiB/s after the start and after a watch repair;
/// a container without `rate=` is not limited; post-stop leaves no QoS or Queue row. Out of
/// the container the policing is printed, not asserted: on this userspace datapath
/// ovs-vswitchd's packet socket sees the frames before tc ingress.
#[test]
fn rate_1_holds_after_start_and_after_a_watch_repair() {
    let host = TestHost::new("rate");
    ct(&host, 100, Some("1"));
    ct(&host, 101, None);
    host.sim_ok_text(&["start", "100"]);
    host.sim_ok_text(&["start", "101"]);
    assert!(host.ping(101, "10.0.0.101"));
    assert_eq!(
        host.ovs_get("Interface", "vi100", "ingress_policing_rate"),
        "8388"
    );
    assert_eq!(
        host.ovs_get("Interface", "vi101", "ingress_policing_rate"),
        "0"
    );
    assert_eq!(rows(&host, "QoS").len(), 1, "one QoS row, for vi100");
    csum_off(&host, 100);
    csum_off(&host, 101);
    serve(&host, 100);
    serve(&host, 101);
    let free = download(&host, 101, "10.0.0.101");
    eprintln!("no limit: into 101 {free:.2} MiB/s");
    assert!(
        free > 3.0,
        "unshaped {free:.2} MiB/s: the path is too slow to measure a limit"
    );
    let into = download(&host, 100, "10.0.0.102");
    eprintln!("rate=1 after start: into 100 {into:.2} MiB/s");
    eprintln!(
        "{}",
        host.run_ok(&["tc", "-s", "class", "show", "dev", "vi100"])
    );
    assert!(
        (0.7..=1.3).contains(&into),
        "into 100 after start: {into:.2} MiB/s"
    );

    // Someone deletes the Port (as `ifreload -a` does): the watch restores it, limit included,
    // and the QoS row the deletion left is replaced, not doubled.
    let mut w = host.spawn_watch(&[]);
    std::thread::sleep(Duration::from_millis(500));
    host.vsctl_ok(&["del-port", "vi100"]);
    host.wait_converged(100, "vi100", 10, Duration::from_secs(3));
    let t = Instant::now();
    while host.ovs_get("Interface", "vi100", "ingress_policing_rate") != "8388" {
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "no policing after the repair"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(rows(&host, "QoS").len(), 1, "{}", w.log_text());
    let again = download(&host, 100, "10.0.0.102");
    eprintln!("rate=1 after repair: into 100 {again:.2} MiB/s");
    assert!(
        (0.7..=1.3).contains(&again),
        "into 100 after repair: {again:.2} MiB/s"
    );
    let out = download(&host, 101, "10.0.0.101");
    eprintln!("out of 100 (policing not effective on this datapath): {out:.2} MiB/s");
    w.stop();

    host.sim_ok_text(&["stop", "100"]);
    host.sim_ok_text(&["stop", "101"]);
    assert_eq!(rows(&host, "QoS"), Vec::<String>::new());
    assert_eq!(rows(&host, "Queue"), Vec::<String>::new());
}
