//! What op-agent's rate rows ([`PortSpec::rate`]: a `linux-htb` QoS with Queue 0 on the Port,
//! `ingress_policing_*` on the Interface) do to real traffic between two LXC containers on a
//! private OVS with `datapath_type=netdev` (ovs-vswitchd reads and writes the veths through
//! AF_PACKET sockets). The rows are written through op-agent's own client, as the Port
//! `pve-sim start` made is replaced by one with the limit of PVE's `rate=1`.
//! Root only; run: `cargo build --workspace && cargo test --test rate_limit -- --nocapture`.

use std::time::{Duration, Instant};

use op_agent::ovsdb::vswitch::{ops, PortRate};
use op_agent::ovsdb::{Client, DelGuard, PortSpec, VSWITCH_DB};
use op_testkit::{Nic, PveConf, TestHost};
use pve_integration::Rate;
use serde_json::Value;

/// Bytes each transfer sends: 6 MiB (1 MiB of burst, then 5 s at 1 MiB/s).
const SENT: u64 = 6 * 1024 * 1024;

fn ct(host: &TestHost, vmid: u32, rate: Option<&str>) {
    let h = vmid % 200 + 1;
    let mut nic = Nic::with_id(0, "ovsbr0", vmid as u16).ip(&format!("10.0.0.{h}/24"));
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

fn owned() -> DelGuard {
    DelGuard::OwnedBy {
        key: "owner".into(),
        value: "op-agent".into(),
    }
}

/// Replaces op-agent's Port `name` by the same Port with `rate` (op-agent's replace
/// transaction) and waits until ovs-vswitchd applied it.
async fn limit(host: &TestHost, name: &str, rate: Rate) {
    let c = Client::connect(&host.ovsdb_socket(), Duration::from_secs(10))
        .await
        .unwrap();
    let p = c.get_port(name).await.unwrap().expect("port");
    let spec = PortSpec {
        name: p.name.clone(),
        bridge: p.bridge.clone().unwrap(),
        tag: p.tag,
        trunks: p.trunks.clone(),
        vlan_mode: p.vlan_mode.clone(),
        mtu_request: p.interfaces[0].mtu_request.map(|m| m as u32),
        external_ids: p.external_ids.clone(),
        rate: Some(PortRate {
            max_rate_bits: rate.bits_per_sec(),
            burst_bits: rate.burst_bits(),
            policing_kbits: rate.kbits_per_sec(),
            policing_burst_kbits: rate.burst_kbits(),
        }),
    };
    let cfg = c.replace_port(name, owned(), &spec).await.unwrap();
    c.wait_cur_cfg(cfg, Duration::from_secs(10)).await.unwrap();
}

/// Deletes op-agent's Port `name` with its QoS and Queue rows in one transaction.
async fn unplug(host: &TestHost, name: &str) {
    let c = Client::connect(&host.ovsdb_socket(), Duration::from_secs(10))
        .await
        .unwrap();
    let uuid = c.get_port(name).await.unwrap().expect("port").uuid;
    let mut del = ops::del_port(name, &uuid, &owned());
    let at = ops::cfg_index(&del) - 1;
    del.splice(at..at, ops::del_qos_ops(name, &uuid, "owner", "op-agent"));
    let wire: Vec<Value> = del.iter().map(|o| o.to_json()).collect();
    c.transact(VSWITCH_DB, wire).await.unwrap();
}

/// Into the container (ovs-vswitchd sending out of `vi100`, shaped by htb on the device) the
/// limit of `rate=1` holds within 30% of 1 MiB/s. Out of the container the policing is
/// measured and printed, not asserted: on this userspace datapath ovs-vswitchd's packet
/// socket sees the frames before tc ingress, so the police filter does not act here.
#[tokio::test(flavor = "current_thread")]
async fn htb_queue_holds_rate_1_into_the_container() {
    let host = TestHost::new("rate");
    ct(&host, 100, None);
    ct(&host, 101, None);
    host.sim_ok_text(&["start", "100"]);
    host.sim_ok_text(&["start", "101"]);
    assert!(host.ping(101, "10.0.0.101"));
    csum_off(&host, 100);
    csum_off(&host, 101);
    serve(&host, 100);
    serve(&host, 101);
    let free = download(&host, 100, "10.0.0.102");
    let free_out = download(&host, 101, "10.0.0.101");
    eprintln!("no limit: into 100 {free:.2} MiB/s, out of 100 {free_out:.2} MiB/s");
    assert!(
        free > 3.0,
        "unshaped {free:.2} MiB/s: the path is too slow to measure a limit"
    );

    limit(&host, "vi100", Rate::from_pve("1").unwrap()).await;
    let into = download(&host, 100, "10.0.0.102");
    let out = download(&host, 101, "10.0.0.101");
    eprintln!("rate=1: into 100 {into:.2} MiB/s, out of 100 {out:.2} MiB/s");
    eprintln!(
        "{}",
        host.run_ok(&["tc", "-s", "class", "show", "dev", "vi100"])
    );
    let log =
        std::fs::read_to_string(host.ovs_rundir().join("ovs-vswitchd.log")).unwrap_or_default();
    for l in log.lines().filter(|l| l.contains("polic")) {
        eprintln!("LOG {l}");
    }
    assert!((0.7..=1.3).contains(&into), "into 100: {into:.2} MiB/s");

    unplug(&host, "vi100").await;
    assert_eq!(host.vsctl_ok(&["list", "QoS"]), "");
    assert_eq!(host.vsctl_ok(&["list", "Queue"]), "");
}
