//! `naming = "keep"` end to end on real LXC through pve-sim (pve-container `update_net` /
//! `vmconfig_hotplug_pending` for live edits) with a private OVS and the watch service: PVE's
//! `veth100i0` keeps its name and gets `vi100` as an alternative name, its own Port carries
//! op-agent's marks and the TOML's values, PVE's live tag edit, hot-add and hot-remove work as
//! on a host without op-agent, a second Port made by the alternative name is deleted at once,
//! and op-agent's counters are the ones PVE's `vmstatus` reads. Root only (fails, never
//! skips). Run: `cargo build -p pve-integration && cargo test --test naming_keep`.

use op_testkit::{bridged_ip, Nic, PveConf, TestHost};
use std::time::{Duration, Instant};

const KEEP: &str = "network_type = \"bridge\"\nnaming = \"keep\"\n";

/// `Ok` when PVE's `veth` is op-agent's in keep mode: `vi…` resolves to the same ifindex,
/// Port `veth` on ovsbr0 with `tag`, op-agent's owner mark and ofport > 0, no Port `vi…`.
fn kept(host: &TestHost, veth: &str, alt: &str, tag: u16) -> Result<(), String> {
    let a = host.link(veth).ok_or(format!("no {veth}"))?;
    let b = host.link(alt).ok_or(format!("no link by the name {alt}"))?;
    if a["ifindex"] != b["ifindex"] || b["ifname"] != veth {
        return Err(format!("{alt} is {} not {veth}", b["ifname"]));
    }
    let ports = host.ports("ovsbr0");
    if ports.iter().any(|p| p == alt) {
        return Err(format!("a Port {alt} exists"));
    }
    if !ports.iter().any(|p| p == veth) {
        return Err(format!("no Port {veth}: {ports:?}"));
    }
    let got = host.ovs_get("Port", veth, "tag");
    if got != tag.to_string() {
        return Err(format!("Port {veth} tag {got}"));
    }
    // Missing for a moment after PVE's live edit re-creates its Port, until the watch marks
    // it again: a retry, not a failure (`--if-exists`: an absent key reads as empty).
    let owner = host
        .vsctl(&["--if-exists", "get", "Port", veth, "external_ids:owner"])
        .stdout_text()
        .trim()
        .to_string();
    if owner.trim_matches('"') != "op-agent" {
        return Err(format!("Port {veth} owner {owner:?}"));
    }
    let of: i64 = host
        .ovs_get("Interface", veth, "ofport")
        .parse()
        .unwrap_or(-1);
    if of <= 0 {
        return Err(format!("Interface {veth} ofport {of}"));
    }
    Ok(())
}

fn wait_kept(host: &TestHost, veth: &str, alt: &str, tag: u16, what: &str) {
    let t = Instant::now();
    loop {
        match kept(host, veth, alt, tag) {
            Ok(()) => {
                eprintln!("{what}: kept in {} ms", t.elapsed().as_millis());
                return;
            }
            Err(e) if t.elapsed() > Duration::from_secs(5) => panic!("{what}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn net(host: &TestHost, n: u8) -> Option<String> {
    let text = std::fs::read_to_string(host.pve_root().pve_conf_path(100)).unwrap();
    let key = format!("net{n}: ");
    text.lines()
        .take_while(|l| !l.starts_with('['))
        .find_map(|l| l.strip_prefix(&key).map(str::to_string))
}

/// `/proc/net/dev` of the namespace: PVE `vmstatus`'s `netout`/`netin` of container 100
/// (the receive/transmit bytes of every `veth100i…` row).
fn vmstatus_bytes(host: &TestHost) -> (u64, u64) {
    let text = host.run_ok(&["cat", "/proc/net/dev"]);
    let mut out = (0, 0);
    for l in text.lines() {
        let Some((dev, rest)) = l.split_once(':') else {
            continue;
        };
        if !dev.trim().starts_with("veth100i") {
            continue;
        }
        let f: Vec<u64> = rest
            .split_whitespace()
            .map(|x| x.parse().unwrap())
            .collect();
        out.0 += f[0];
        out.1 += f[8];
    }
    out
}

#[test]
fn keep_mode_leaves_pve_its_names_and_live_edits() {
    let host = TestHost::new("keep");
    host.write_pve_conf(100, PveConf::bridged(100, 10));
    host.manage(100, KEEP);
    host.manage_bridged(101, PveConf::bridged(101, 10));
    host.sim_ok(&["start", "100"]);
    host.sim_ok(&["start", "101"]);
    wait_kept(&host, "veth100i0", "vi100", 10, "after start");
    host.wait_converged(101, "vi101", 10, Duration::from_secs(5));
    assert!(host.ping(100, &bridged_ip(101)), "100 reaches 101 on 10");
    // `check` and `status` judge it by keep mode's rules: converged is ok, not drift.
    let c = host.agent(&["check", "100"]);
    assert_eq!(c.code(), Some(0), "{}", c.text());
    let st = host.agent(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&st.stdout_text()).unwrap();
    let c100 = v["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["vmid"] == 100)
        .unwrap()
        .clone();
    assert_eq!(c100["nics"][0]["state"], "ok", "{c100}");
    // A tag changed by hand is drift (no watch yet), and apply repairs it.
    host.vsctl_ok(&["set", "Port", "veth100i0", "tag=99"]);
    let c = host.agent(&["check", "100"]);
    assert_eq!(c.code(), Some(1), "{}", c.text());
    assert!(
        c.stdout_text().contains("net0: apply would run"),
        "{}",
        c.text()
    );
    let out = host.agent(&["apply", "100"]);
    assert_eq!(out.code(), Some(0), "{}", out.text());
    wait_kept(&host, "veth100i0", "vi100", 10, "after apply");
    let mut w = host.spawn_watch(&[]);

    // PVE's own live tag edit: it succeeds, and the watch puts op-agent's marks back.
    let tag20 = net(&host, 0).unwrap().replace("tag=10", "tag=20");
    let out = host.sim(&["set", "100", "-net0", &tag20]);
    assert!(out.status.success(), "pve-sim set: {}", out.text());
    wait_kept(&host, "veth100i0", "vi100", 20, "after the tag edit");
    assert!(
        !host.ping(100, &bridged_ip(101)),
        "VLAN 20 must not reach 10"
    );

    // Hot-add and hot-remove.
    let net1 = Nic::with_id(1, "ovsbr0", 100).tag(30).to_string();
    let value = net1.trim_end().split_once(": ").unwrap().1;
    let out = host.sim(&["set", "100", "-net1", value]);
    assert!(out.status.success(), "hot-add: {}", out.text());
    wait_kept(&host, "veth100i1", "vi100i1", 30, "after the hot-add");
    let out = host.sim(&["set", "100", "--delete", "net1"]);
    assert!(out.status.success(), "hot-remove: {}", out.text());
    assert!(net(&host, 1).is_none());
    std::thread::sleep(Duration::from_millis(500));
    assert!(!host.has_link("veth100i1") && !host.has_link("vi100i1"));
    assert!(!host.ports("ovsbr0").iter().any(|p| p.contains("100i1")));

    // A second Port of the device by its alternative name goes at once.
    host.vsctl_ok(&["add-port", "ovsbr0", "vi100"]);
    let t = Instant::now();
    while host.ports("ovsbr0").contains(&"vi100".to_string()) {
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "Port vi100 is still there: {}",
            w.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_kept(&host, "veth100i0", "vi100", 20, "after the second Port");
    assert!(
        w.log_text().contains("alternative name"),
        "{}",
        w.log_text()
    );

    // op-agent's counters are the ones PVE's vmstatus reads.
    let before = vmstatus_bytes(&host);
    let st = host.agent(&["status", "--json"]);
    let after = vmstatus_bytes(&host);
    let v: serde_json::Value = serde_json::from_str(&st.stdout_text()).unwrap();
    let c = v["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["vmid"] == 100)
        .unwrap()
        .clone();
    let rx = c["counters"]["rx_bytes"].as_u64().unwrap();
    let tx = c["counters"]["tx_bytes"].as_u64().unwrap();
    assert!(before.0 > 0, "vmstatus reads 0: {before:?}");
    assert!(
        (before.0..=after.0).contains(&rx) && (before.1..=after.1).contains(&tx),
        "status {rx}/{tx}, vmstatus {before:?}..{after:?}"
    );

    // `op-agent set` hands nothing back in keep mode: pct set (PVE's hotplug) and converge.
    let path = host.pve_root().pct_shim();
    let tag10 = net(&host, 0).unwrap().replace("tag=20", "tag=10");
    let out = host
        .agent_cmd(&["set", "100", "-net0", &tag10])
        .env("PATH", &path)
        .run();
    assert_eq!(out.code(), Some(0), "{}", out.text());
    wait_kept(&host, "veth100i0", "vi100", 10, "after op-agent set");
    assert!(
        host.ping(100, &bridged_ip(101)),
        "100 reaches 101 on 10 again"
    );
    assert!(w.stop().is_some_and(|s| s.success()), "{}", w.log_text());

    // A restart: PVE plugs veth100i0 again, the hooks mark it again, nothing stale is left.
    host.sim_ok(&["stop", "100"]);
    assert!(!host.ports("ovsbr0").iter().any(|p| p.contains("100")));
    host.sim_ok(&["start", "100"]);
    wait_kept(&host, "veth100i0", "vi100", 10, "after a restart");
    assert!(!host
        .audit_rows_for(100)
        .iter()
        .any(|r| r.outcome == "failed"));

    // Back to rename while it runs: the altname goes, then the usual rename and Port.
    host.manage(100, "network_type = \"bridge\"\n");
    let out = host.agent(&["apply", "100"]);
    assert_eq!(out.code(), Some(0), "{}", out.text());
    host.converged(100, "vi100", 10).unwrap();
    let l = host.link("vi100").unwrap();
    assert_eq!(l["ifname"], "vi100");
    assert!(l.get("altnames").is_none(), "{l}");
    assert!(host.ping(100, &bridged_ip(101)), "100 reaches 101 renamed");
    host.sim_ok(&["stop", "100"]);
    host.assert_audit_intact("keep mode");
}

fn rows(host: &TestHost, table: &str) -> usize {
    host.vsctl_ok(&["--bare", "--columns=_uuid", "list", table])
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count()
}

fn policing(host: &TestHost) -> String {
    host.ovs_get("Interface", "veth100i0", "ingress_policing_rate")
}

fn wait_policing(host: &TestHost, want: &str, what: &str) {
    let t = Instant::now();
    while policing(host) != want {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{what}: ingress_policing_rate {}",
            policing(host)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// PVE's `rate=` in keep mode: OVS QoS and policing on PVE's own Port (as on a renamed NIC),
/// following PVE's live edits of the rate and of the tag, with one QoS row at any time and
/// none after the stop.
#[test]
fn keep_mode_puts_pves_rate_on_its_port_and_follows_live_edits() {
    let host = TestHost::new("keep-rate");
    host.write_pve_conf(
        100,
        PveConf::op_hook(100).nic(
            Nic::with_id(0, "ovsbr0", 100)
                .ip("10.10.0.101/24")
                .tag(10)
                .prop("rate", 1),
        ),
    );
    host.manage(100, KEEP);
    host.sim_ok(&["start", "100"]);
    wait_kept(&host, "veth100i0", "vi100", 10, "after start");
    assert_eq!(policing(&host), "8388");
    assert_eq!(rows(&host, "QoS"), 1);
    let mut w = host.spawn_watch(&[]);

    let rate2 = net(&host, 0).unwrap().replace("rate=1", "rate=2");
    let out = host.sim(&["set", "100", "-net0", &rate2]);
    assert!(out.status.success(), "rate edit: {}", out.text());
    wait_policing(&host, "16777", "after the rate edit");
    assert_eq!(rows(&host, "QoS"), 1, "{}", w.log_text());

    let tag20 = net(&host, 0).unwrap().replace("tag=10", "tag=20");
    let out = host.sim(&["set", "100", "-net0", &tag20]);
    assert!(out.status.success(), "tag edit: {}", out.text());
    wait_kept(&host, "veth100i0", "vi100", 20, "after the tag edit");
    wait_policing(&host, "16777", "after the tag edit");
    assert_eq!(rows(&host, "QoS"), 1, "{}", w.log_text());
    assert_eq!(rows(&host, "Queue"), 1, "{}", w.log_text());

    assert!(w.stop().is_some_and(|s| s.success()), "{}", w.log_text());
    host.sim_ok(&["stop", "100"]);
    assert_eq!(
        (rows(&host, "QoS"), rows(&host, "Queue")),
        (0, 0),
        "after the stop"
    );
    host.assert_audit_intact("keep mode rate");
}

/// `naming = "keep"` written while a renamed container runs: the plan refuses (the veth is
/// `vi100`, not PVE's name) until the restart. With its Port deleted meanwhile, `status` says
/// drift with the refusal, not `ok` (a container-wide finding was dropped from the NIC state),
/// and the refusal points at the restart.
#[test]
fn keep_mode_switched_on_while_renamed_is_reported_not_ok() {
    let host = TestHost::new("keep-sw");
    host.manage_bridged(100, PveConf::bridged(100, 10));
    host.sim_ok(&["start", "100"]);
    host.wait_converged(100, "vi100", 10, Duration::from_secs(5));
    host.manage(100, KEEP);
    host.vsctl_ok(&["del-port", "vi100"]);
    let st = host.agent(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&st.stdout_text()).unwrap();
    let nic = &v["containers"][0]["nics"][0];
    assert_eq!(nic["state"], "drift", "{v}");
    assert!(nic["drift"].to_string().contains("pct reboot 100"), "{v}");
    let c = host.agent(&["check", "100"]);
    assert_eq!(c.code(), Some(1), "{}", c.text());
    host.sim_ok(&["stop", "100"]);
}
