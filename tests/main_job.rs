//! The main job end to end: `pve-sim start` (standing in for `pct start`) runs op-hook, op-agent
//! renames `veth<vmid>i0` to `vi<vmid>` and re-plugs it into a private Open vSwitch, on real LXC
//! containers. Every assertion is what an admin would check: links, OVSDB rows, pings, audit.

use op_testkit::{AuditRow, Nic, PveConf, TestHost};

/// Container `vmid` with op-hook and `net0` on ovsbr0.
fn conf(vmid: u32, net0: Nic) -> PveConf {
    PveConf::op_hook(vmid).nic(net0).line("ostype: unmanaged")
}

/// net0 on ovsbr0 with PVE MAC `BC:24:11:00:01:<vmid-100>`, `ip` and VLAN `tag`.
fn net0(vmid: u32, ip: Option<&str>, tag: u16) -> Nic {
    let nic = Nic::new(0, "ovsbr0").hwaddr(&format!("BC:24:11:00:01:{:02}", vmid - 100));
    match ip {
        Some(ip) => nic.ip(ip),
        None => nic,
    }
    .tag(tag)
}

fn rows_for(host: &TestHost, vmid: u32, phase: &str) -> Vec<AuditRow> {
    host.audit_rows_for(vmid)
        .into_iter()
        .filter(|r| r.phase == phase)
        .collect()
}

#[test]
fn start_renames_plugs_isolates_vlans_and_stop_cleans_up() {
    let host = TestHost::new("main");
    host.write_pve_conf(100, conf(100, net0(100, Some("10.10.0.100/24"), 10)));
    host.write_pve_conf(101, conf(101, net0(101, Some("10.10.0.101/24"), 10)));
    host.write_pve_conf(
        102,
        conf(102, net0(102, Some("10.10.0.102/24"), 20).trunks("20;30")),
    );
    for v in [100, 101, 102] {
        host.manage(v, "network_type = \"bridge\"\n");
    }
    for v in ["100", "101", "102"] {
        let out = host.sim_ok(&["start", v]);
        assert!(out.contains(&format!("veth{v}i0 -> vi{v}")), "{out}");
    }

    // The link: vi100 exists, veth100i0 does not.
    let links = host.links();
    for v in ["100", "101", "102"] {
        assert!(links.contains(&format!("vi{v}")), "{links:?}");
        assert!(!links.contains(&format!("veth{v}i0")), "{links:?}");
    }
    // The OVSDB rows.
    let ports = host.ports("ovsbr0");
    assert_eq!(ports, vec!["vi100", "vi101", "vi102"]);
    assert_eq!(host.ovs_get("Port", "vi100", "tag"), "10");
    assert_eq!(host.ovs_get("Port", "vi100", "trunks"), "[]");
    assert_eq!(host.ovs_get("Port", "vi100", "vlan_mode"), "[]");
    assert_eq!(host.ovs_get("Port", "vi102", "tag"), "20");
    assert_eq!(host.ovs_get("Port", "vi102", "trunks"), "[20, 30]");
    assert_eq!(
        host.ovs_get("Port", "vi102", "vlan_mode"),
        "native-untagged"
    );
    let bridge_mtu = host.run_ok(&["cat", "/sys/class/net/ovsbr0/mtu"]);
    assert_eq!(
        host.ovs_get("Interface", "vi100", "mtu_request"),
        bridge_mtu.trim()
    );
    for table in ["Port", "Interface"] {
        let ids = host.ovs_get(table, "vi100", "external_ids");
        for want in [
            "owner=op-agent",
            "vm-id=\"100\"",
            "pve-net=net0",
            "attached-mac=\"bc:24:11:00:01:00\"",
        ] {
            assert!(
                ids.contains(want),
                "{table} external_ids {ids} lacks {want}"
            );
        }
    }
    // ovs-vswitchd applied it.
    for v in ["vi100", "vi101", "vi102"] {
        let ofport: i64 = host.ovs_get("Interface", v, "ofport").parse().unwrap();
        assert!(ofport > 0, "{v} ofport {ofport}");
        assert_eq!(host.ovs_get("Interface", v, "error"), "[]");
    }
    // Traffic flows through the ports, within a VLAN and not across.
    assert!(
        host.ping(100, "10.10.0.101"),
        "100 -> 101 on VLAN 10 must answer"
    );
    assert!(
        !host.ping(100, "10.10.0.102"),
        "100 -> 102 across VLANs must not answer"
    );

    // pre-start run by hand on a running container leaves its live port alone.
    let out = host.agent(&["hook", "100", "pre-start"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(host.ports("ovsbr0"), vec!["vi100", "vi101", "vi102"]);
    assert!(
        host.ping(100, "10.10.0.101"),
        "still connected after a manual pre-start"
    );

    // A second post-start changes nothing.
    let uuid = host.ovs_get("Port", "vi100", "_uuid");
    let ifindex = host.link("vi100").unwrap()["ifindex"].clone();
    let out = host.agent(&["hook", "100", "post-start"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing to change"));
    assert_eq!(host.ovs_get("Port", "vi100", "_uuid"), uuid);
    assert_eq!(host.link("vi100").unwrap()["ifindex"], ifindex);
    let last = rows_for(&host, 100, "post-start");
    assert_eq!(last.last().unwrap().step, "run.converged");

    // Audit rows of the first post-start: intent first, then each step ok.
    let rows = rows_for(&host, 100, "post-start");
    let steps: Vec<String> = rows
        .iter()
        .map(|r| format!("{} {}", r.step, r.outcome))
        .collect();
    // Durations in rows are rounded to two decimals (`10.29`, not `10.294517000000001`).
    for r in rows.iter().filter(|r| r.step == "ovs.wait") {
        let ms = r.detail_json()["ms"].to_string();
        let decimals = ms.split_once('.').map_or(0, |(_, f)| f.len());
        assert!(decimals <= 2, "ovs.wait ms {ms} in {}", r.detail);
    }
    for want in [
        "run.intent intent",
        "ovs.del-port ok",
        "link.rename ok",
        "ovs.add-port ok",
        "ovs.wait ok",
        "ovs.check ok",
    ] {
        assert!(steps.iter().any(|s| s == want), "{steps:?} lacks {want}");
    }
    let verify = host.agent(&["audit", "verify"]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );

    // Stop: no row op-agent owns is left, for any of them.
    for v in ["100", "101", "102"] {
        host.sim_ok(&["stop", v]);
    }
    assert!(
        host.ports("ovsbr0").is_empty(),
        "{:?}",
        host.ports("ovsbr0")
    );
    let owned = host.vsctl_ok(&[
        "--columns=name",
        "find",
        "Port",
        "external_ids:owner=op-agent",
    ]);
    assert!(owned.is_empty(), "owned rows left: {owned}");
    assert!(!rows_for(&host, 100, "post-stop").is_empty());
}

#[test]
fn unmanaged_container_ends_as_without_the_hook() {
    let host = TestHost::new("unmanaged");
    host.write_pve_conf(103, conf(103, net0(103, Some("10.10.0.103/24"), 10)));
    let out = host.sim_ok(&["start", "103"]);
    assert!(!out.contains("op-agent"), "{out}");
    let links = host.links();
    assert!(links.contains(&"veth103i0".to_string()), "{links:?}");
    assert!(!links.contains(&"vi103".to_string()), "{links:?}");
    assert_eq!(host.ports("ovsbr0"), vec!["veth103i0"]);
    assert_eq!(host.ovs_get("Port", "veth103i0", "tag"), "10");
    assert_eq!(host.ovs_get("Port", "veth103i0", "external_ids"), "{}");
    assert!(
        !host.audit_db().exists(),
        "no audit database for an unmanaged guest"
    );
    host.sim_ok(&["stop", "103"]);
    assert!(host.ports("ovsbr0").is_empty());
}

#[test]
fn pre_start_with_missing_bridge_aborts_the_start() {
    let host = TestHost::new("nobridge");
    host.write_pve_conf(104, conf(104, net0(104, Some("10.10.0.104/24"), 10)));
    host.manage(104, "[[nic]]\nnet = 0\nbridge = \"ovsbr9\"\n");
    let out = host.sim(&["start", "104"]);
    assert!(!out.status.success(), "start must be aborted");
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err
        .lines()
        .find(|l| l.starts_with("op-agent: 104 pre-start:"))
        .unwrap_or_else(|| panic!("no op-agent line in: {err}"));
    assert!(line.contains("bridge ovsbr9 does not exist"), "{line}");
    assert!(
        err.contains("hookscript error for 104 on pre-start"),
        "{err}"
    );
    assert!(host.sim_ok(&["status", "104"]).contains("stopped"));
    assert!(!host.links().iter().any(|l| l.contains("104")));
    let rows = rows_for(&host, 104, "pre-start");
    assert!(rows
        .iter()
        .any(|r| r.outcome == "failed" || r.step == "config.validate"));
}

#[test]
fn toml_overrides_name_tag_and_trunks() {
    let host = TestHost::with_bridges("override", &["ovsbr0", "ovsbr1"], &[]);
    host.write_pve_conf(105, conf(105, net0(105, Some("10.10.0.105/24"), 10)));
    host.manage(
        105,
        "[[nic]]\nnet = 0\nbridge = \"ovsbr1\"\ntag = 30\ntrunks = [40, 50]\nname = \"ct105\"\n",
    );
    host.sim_ok(&["start", "105"]);
    assert!(host.links().contains(&"ct105".to_string()));
    assert_eq!(host.ports("ovsbr1"), vec!["ct105"]);
    assert!(host.ports("ovsbr0").is_empty());
    assert_eq!(host.ovs_get("Port", "ct105", "tag"), "30");
    assert_eq!(host.ovs_get("Port", "ct105", "trunks"), "[40, 50]");
    assert_eq!(
        host.ovs_get("Port", "ct105", "vlan_mode"),
        "native-untagged"
    );
    host.sim_ok(&["stop", "105"]);
    assert!(host.ports("ovsbr1").is_empty());
}

#[test]
fn bad_arguments_and_unknown_phases() {
    let host = TestHost::new("args");
    for (args, code) in [
        (vec!["hook", "99", "post-start"], 64),
        (vec!["hook", "0100", "post-start"], 64),
        (vec!["hook", "1000000000", "post-start"], 64),
        (vec!["hook", "100", "Post Start"], 64),
        (vec!["hook", "100", "post-migrate"], 0),
        (vec!["hook", "100", "post-start"], 0), // not managed: no TOML, no PVE conf
    ] {
        let out = host.agent(&args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if code != 0 {
            assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
        }
    }
    // Bad TOML: one line naming file, line and key; an audit row; distinct exit code 78.
    host.write_pve_conf(106, conf(106, net0(106, None, 10)));
    host.manage(
        106,
        "network_type = \"bridge\"\n[[nic]]\nnet = 0\ntagg = 5\n",
    );
    let out = host.agent(&["hook", "106", "pre-start"]);
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("106.toml:4:") && err.contains("tagg"), "{err}");
    let rows = rows_for(&host, 106, "pre-start");
    assert!(rows
        .iter()
        .any(|r| r.step == "config.validate" && r.outcome == "failed"));
}
