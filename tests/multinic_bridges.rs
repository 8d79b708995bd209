//! Multiple NICs end to end, through `pve-sim` with real LXC and a private OVS: two NICs on
//! different OVS bridges and VLANs with traffic checked on both, a `[[nic]]` for a missing
//! `netN` refused at pre-start, and a 9-digit vmid with net31 (name lengths).
//! Root only; run: `cargo build --workspace && cargo test --test multinic_bridges`.

use op_testkit::{Nic, PveConf, TestHost};

fn two_nic_ct(host: &TestHost, vmid: u32, tag0: u16, tag1: u16) {
    let h = vmid % 200 + 1;
    host.write_pve_conf(
        vmid,
        PveConf::op_hook(vmid).nics([
            Nic::with_id(0, "ovsbr0", vmid as u16)
                .ip(&format!("10.0.0.{h}/24"))
                .tag(tag0),
            Nic::with_id(1, "ovsbr1", vmid as u16)
                .ip(&format!("10.0.1.{h}/24"))
                .tag(tag1),
        ]),
    );
    host.manage(vmid, "network_type = \"bridge\"\n");
}

#[test]
fn two_nics_on_two_bridges_and_vlans_carry_traffic() {
    let host = TestHost::with_bridges("mn-two", &["ovsbr0", "ovsbr1"], &[]);
    two_nic_ct(&host, 100, 10, 20);
    two_nic_ct(&host, 101, 10, 20);
    // 102: net1 on another VLAN of ovsbr1: must not be reachable there.
    two_nic_ct(&host, 102, 10, 21);
    for v in ["100", "101", "102"] {
        host.sim_ok_text(&["start", v]);
    }
    let links = host.links();
    for v in [100, 101, 102] {
        for (name, old) in [
            (format!("vi{v}"), format!("veth{v}i0")),
            (format!("vi{v}i1"), format!("veth{v}i1")),
        ] {
            assert!(links.contains(&name), "{name} missing: {links:?}");
            assert!(!links.contains(&old), "{old} left: {links:?}");
        }
    }
    assert_eq!(host.vsctl_ok(&["port-to-br", "vi100"]), "ovsbr0");
    assert_eq!(host.vsctl_ok(&["port-to-br", "vi100i1"]), "ovsbr1");
    assert_eq!(host.ovs_get("Port", "vi100", "tag"), "10");
    assert_eq!(host.ovs_get("Port", "vi100i1", "tag"), "20");
    assert_eq!(host.ovs_get("Port", "vi102i1", "tag"), "21");
    assert_eq!(
        host.ovs_get("Port", "vi100i1", "external_ids:pve-net"),
        "net1"
    );
    assert_eq!(
        host.ovs_get("Port", "vi100i1", "external_ids:attached-mac"),
        "\"bc:24:11:01:00:64\""
    );
    for p in ["vi100", "vi100i1"] {
        let ofport: i64 = host.ovs_get("Interface", p, "ofport").parse().unwrap();
        assert!(ofport > 0, "{p} ofport {ofport}");
    }
    assert!(
        host.ping(100, "10.0.0.102"),
        "net0: 100 -> 101 on ovsbr0 VLAN 10"
    );
    assert!(
        host.ping(100, "10.0.1.102"),
        "net1: 100 -> 101 on ovsbr1 VLAN 20"
    );
    assert!(host.ping(100, "10.0.0.103"), "net0: 100 -> 102 on VLAN 10");
    assert!(
        !host.ping(100, "10.0.1.103"),
        "net1: 100 -> 102 across VLANs 20/21 must not answer"
    );
    let again = host.agent(&["hook", "100", "post-start"]);
    assert!(
        again.text().contains("nothing to change"),
        "{}",
        again.text()
    );

    host.sim_ok_text(&["stop", "100"]);
    for b in ["ovsbr0", "ovsbr1"] {
        let ports = host.ports(b);
        assert!(
            !ports.iter().any(|p| p.starts_with("vi100")),
            "{b}: {ports:?}"
        );
    }
}

#[test]
fn nic_table_for_a_missing_net_is_refused_at_pre_start() {
    let host = TestHost::with_bridges("mn-miss", &["ovsbr0"], &[]);
    host.write_pve_conf(
        100,
        PveConf::op_hook(100).nics([Nic::with_id(0, "ovsbr0", 100).tag(10)]),
    );
    host.manage(
        100,
        "network_type = \"bridge\"\n\n[[nic]]\nnet = 3\ntag = 30\n",
    );
    let out = host.sim(&["start", "100"]);
    let t = out.text();
    assert!(!out.status.success(), "{t}");
    let line = t
        .lines()
        .find(|l| l.starts_with("op-agent: 100 pre-start:"))
        .unwrap_or_else(|| panic!("{t}"));
    assert!(
        line.contains("containers/100.toml:3: [[nic]] net = 3: no net3 in"),
        "{line}"
    );
    assert_eq!(host.ct_status(100), "stopped");
}

/// 9-digit vmid: op-agent's names fit (`vi999999999i31` is 14 bytes, unit-tested in plan.rs),
/// but LXC 5 refuses the 16-byte `veth999999999i31` that PVE writes as `lxc.net.31.veth.pair`
/// ("too long (>= 16)") after it already created and plugged the lower NICs. op-agent's
/// pre-start therefore refuses such a NIC with a one-line reason before LXC runs, and a
/// 9-digit vmid works with net0..net9 (`vi999999999i9`).
#[test]
fn nine_digit_vmid_with_net31() {
    let host = TestHost::with_bridges("mn-long", &["ovsbr0"], &[]);
    let v: u32 = 999_999_999;
    let mut nets = vec![
        Nic::with_id(0, "ovsbr0", 1).ip("10.0.0.1/24").tag(10),
        Nic::with_id(9, "ovsbr0", 2).ip("10.0.9.1/24").tag(9),
    ];
    let with31 = [
        nets.clone(),
        vec![Nic::with_id(31, "ovsbr0", 3).ip("10.0.31.1/24").tag(31)],
    ]
    .concat();
    host.write_pve_conf(v, PveConf::op_hook(v).nics(with31.iter().cloned()));
    host.manage(v, "");
    let out = host.sim(&["start", "999999999"]);
    let t = out.text();
    assert!(!out.status.success(), "{t}");
    let line = t
        .lines()
        .find(|l| l.starts_with("op-agent: 999999999 pre-start:"))
        .unwrap_or_else(|| panic!("{t}"));
    assert!(
        line.contains("net31: PVE's host veth name veth999999999i31 is 16 bytes"),
        "{line}"
    );
    assert!(
        host.ports("ovsbr0").is_empty(),
        "{:?}",
        host.ports("ovsbr0")
    );
    assert!(!host.links().iter().any(|l| l.contains("999999999")));

    nets.truncate(2);
    host.write_pve_conf(v, PveConf::op_hook(v).nics(nets.iter().cloned()));
    let out = host.sim_ok_text(&["start", "999999999"]);
    let links = host.links();
    for l in ["vi999999999", "vi999999999i9"] {
        assert!(links.contains(&l.to_string()), "{l}: {out}\n{links:?}");
        let ofport: i64 = host.ovs_get("Interface", l, "ofport").parse().unwrap();
        assert!(ofport > 0, "{l} ofport {ofport}");
    }
    assert!(!links.iter().any(|l| l.starts_with("veth999")), "{links:?}");
    assert_eq!(host.ovs_get("Port", "vi999999999i9", "tag"), "9");
    assert_eq!(
        host.ovs_get("Port", "vi999999999i9", "external_ids:pve-net"),
        "net9"
    );
    host.sim_ok_text(&["stop", "999999999"]);
    assert!(
        host.ports("ovsbr0").is_empty(),
        "{:?}",
        host.ports("ovsbr0")
    );
}

/// net0 on the OVS bridge ovsbr0, net1 on the Linux bridge vmbr1 (a real kernel bridge in the
/// test netns). Without `[[nic]]` tables the Linux-bridge NIC is left to PVE: the container
/// starts, net0 is renamed and re-plugged, net1 stays `veth<vmid>i1` enslaved to vmbr1, and
/// the audit log says why. An explicit `[[nic]]` for net1 is refused at pre-start naming the
/// bridge.
#[test]
fn ovs_nic_and_linux_bridge_nic_start_end_to_end() {
    let host = TestHost::with_bridges("mn-lb", &["ovsbr0"], &["vmbr1"]);
    let conf = || {
        PveConf::op_hook(100).nics([
            Nic::with_id(0, "ovsbr0", 100).ip("10.0.0.1/24").tag(10),
            Nic::with_id(1, "vmbr1", 100).ip("10.0.1.1/24"),
        ])
    };
    host.write_pve_conf(100, conf());
    host.manage(100, "network_type = \"bridge\"\n");
    let dry = host.agent(&["hook", "100", "pre-start", "--dry-run"]);
    assert!(
        dry.text()
            .contains("net1: nic.skip (vmbr1 is a Linux bridge, not Open vSwitch: left to PVE)"),
        "{}",
        dry.text()
    );
    host.sim_ok_text(&["start", "100"]);
    assert_eq!(host.ct_status(100), "running");
    assert_eq!(host.vsctl_ok(&["port-to-br", "vi100"]), "ovsbr0");
    assert_eq!(host.link("veth100i1").unwrap()["master"], "vmbr1");
    assert!(!host.links().contains(&"vi100i1".to_string()));
    let skipped = host.audit_step_rows(100, "nic.skip");
    assert!(
        skipped
            .iter()
            .any(|r| r.outcome == "skipped" && r.detail.contains("vmbr1 is a Linux bridge")),
        "{skipped:?}"
    );
    host.sim_ok_text(&["stop", "100"]);
    assert!(!host.ports("ovsbr0").iter().any(|p| p.starts_with("vi100")));

    host.manage(
        100,
        "network_type = \"bridge\"\n\n[[nic]]\nnet = 1\ntag = 5\n",
    );
    let out = host.sim(&["start", "100"]);
    let t = out.text();
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains("net1: vmbr1 is a Linux bridge; op-agent manages Open vSwitch bridges"),
        "{t}"
    );
    assert_eq!(host.ct_status(100), "stopped");
}
