use super::*;
use crate::config::NetworkType;
use crate::desired::DesiredNic;
use crate::ovsdb::vswitch::monitor::{decode_updates, Table};
use pve_integration::{IfName, NetIndex, VlanTag};

fn nic(net: u32, name: &str, bridge: &str, tag: Option<u16>, trunks: &[u16]) -> DesiredNic {
    DesiredNic {
        net: NetIndex::new(net as u8).unwrap(),
        pve_veth: format!("veth100i{net}"),
        name: IfName::new(name).unwrap(),
        bridge: Some(IfName::new(bridge).unwrap()),
        tag: tag.and_then(VlanTag::new),
        trunks: trunks.iter().filter_map(|t| VlanTag::new(*t)).collect(),
        hwaddr: None,
        link_down: false,
        rate: None,
        mode: NicMode::Plug,
    }
}

fn desired(nics: Vec<DesiredNic>) -> Desired {
    Desired {
        vmid: "100".parse().unwrap(),
        network_type: NetworkType::Bridge,
        require_mesh: false,
        naming: crate::config::Naming::Rename,
        nics,
    }
}

fn owned() -> Value {
    json!([
        "map",
        [["owner", "op-agent"], ["vm-id", "100"], ["pve-net", "net0"]]
    ])
}

/// Bridge ovsbr0 (b1) holding vi100 (p1, tag 10, interface i1) and ovsbr1 (b2), empty.
fn tables() -> Tables {
    Tables::from_initial(&json!({
        "Bridge": {
            "b1": {"new": {"name": "ovsbr0", "ports": ["uuid", "p1"]}},
            "b2": {"new": {"name": "ovsbr1", "ports": ["set", []]}}
        },
        "Port": {"p1": {"new": {"name": "vi100", "tag": 10, "trunks": ["set", []],
            "vlan_mode": ["set", []], "external_ids": owned(), "interfaces": ["uuid", "i1"]}}},
        "Interface": {"i1": {"new": {"name": "vi100", "ofport": 2, "error": ["set", []]}}}
    }))
}

fn port_row(name: &str, tag: u16, ids: Value, iface: &str) -> Value {
    json!({"name": name, "tag": tag, "trunks": ["set", []], "vlan_mode": ["set", []],
        "external_ids": ids, "interfaces": ["uuid", iface]})
}

#[test]
fn wanted_ports_follow_the_config() {
    let mut off = nic(1, "vi100i1", "ovsbr0", None, &[]);
    off.link_down = true;
    let mut skip = nic(2, "vi100i2", "ovsbr0", None, &[]);
    skip.mode = NicMode::Skip("firewall".into());
    let d = desired(vec![
        nic(0, "vi100", "ovsbr0", Some(10), &[20, 30]),
        off,
        skip,
    ]);
    let w = wanted_ports(&d);
    assert_eq!(w.len(), 1, "link_down and skipped NICs want no port: {w:?}");
    assert_eq!(w[0].vlan_mode.as_deref(), Some("native-untagged"));
    assert_eq!((w[0].tag, w[0].trunks.clone()), (Some(10), vec![20, 30]));
}

#[test]
fn converged_rows_are_not_due_even_when_just_written() {
    // Our own run's insert of the desired row touches the container but leaves no drift: no
    // second run (no loop).
    let mut t = Tables::default();
    let ch = t.apply(&decode_updates(&json!({
        "Bridge": {"b1": {"new": {"name": "ovsbr0", "ports": ["uuid", "p1"]}}},
        "Port": {"p1": {"new": port_row("vi100", 10, owned(), "i1")}}
    })));
    let w = wanted_ports(&desired(vec![nic(0, "vi100", "ovsbr0", Some(10), &[])]));
    assert!(touched(&ch, &t).owned.contains(&"100".parse().unwrap()));
    assert_eq!(drifts(&w, &t), vec![]);
}

#[test]
fn a_deleted_owned_port_is_missing() {
    let mut t = tables();
    let ch = t.apply(&decode_updates(&json!({
        "Bridge": {"b1": {"new": {"name": "ovsbr0", "ports": ["set", []]}}},
        "Port": {"p1": {"old": {}}},
        "Interface": {"i1": {"old": {}}}
    })));
    let tc = touched(&ch, &t);
    assert_eq!(tc.owned, ["100".parse().unwrap()].into());
    let w = wanted_ports(&desired(vec![nic(0, "vi100", "ovsbr0", Some(10), &[])]));
    let d = drifts(&w, &t);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].found, Found::Missing);
    assert_eq!(
        d[0].detail(),
        json!({"port": "vi100", "net": "net0", "found": "missing"})
    );
}

#[test]
fn a_changed_tag_and_a_moved_port_are_changes() {
    let mut t = tables();
    let ch = t.apply(&decode_updates(&json!({
        "Port": {"p1": {"old": {"tag": 10}, "new": port_row("vi100", 99, owned(), "i1")}}
    })));
    assert_eq!(touched(&ch, &t).owned.len(), 1);
    let w = wanted_ports(&desired(vec![nic(0, "vi100", "ovsbr0", Some(10), &[])]));
    let d = drifts(&w, &t);
    assert_eq!(
        d[0].found,
        Found::Changed(vec![("tag", json!(10), json!(99))])
    );
    assert_eq!(d[0].detail()["changes"][0]["found"], json!(99));
    // Moved to ovsbr1 (only the Bridge rows change).
    let mut t = tables();
    let ch = t.apply(&decode_updates(&json!({
        "Bridge": {
            "b1": {"old": {"ports": ["uuid", "p1"]}, "new": {"name": "ovsbr0", "ports": ["set", []]}},
            "b2": {"old": {"ports": ["set", []]}, "new": {"name": "ovsbr1", "ports": ["uuid", "p1"]}}
        }
    })));
    assert_eq!(
        touched(&ch, &t).owned.len(),
        1,
        "a moved port touches its owner"
    );
    let d = drifts(&w, &t);
    assert_eq!(
        d[0].found,
        Found::Changed(vec![("bridge", json!("ovsbr0"), json!("ovsbr1"))])
    );
}

#[test]
fn no_drift_without_the_bridge_or_for_a_foreign_port() {
    let w = wanted_ports(&desired(vec![nic(0, "vi100", "ovsbr9", Some(10), &[])]));
    assert_eq!(drifts(&w, &tables()), vec![], "bridge gone: wait for it");
    let t = Tables::from_initial(&json!({
        "Bridge": {"b1": {"new": {"name": "ovsbr0", "ports": ["uuid", "p1"]}}},
        "Port": {"p1": {"new": port_row("vi100", 99, json!(["map", []]), "i1")}}
    }));
    let w = wanted_ports(&desired(vec![nic(0, "vi100", "ovsbr0", Some(10), &[])]));
    assert_eq!(drifts(&w, &t), vec![], "not ours: left alone");
    assert!(touched(&t.clone().apply(&[]), &t).owned.is_empty());
}

#[test]
fn a_dead_veth_row_is_found_once_vswitchd_failed_it() {
    let mut t = tables();
    // PVE's add-port: the row first, then ovs-vswitchd's verdict.
    let ch = t.apply(&decode_updates(&json!({
        "Bridge": {"b1": {"new": {"name": "ovsbr0", "ports": ["set", [["uuid", "p1"], ["uuid", "p9"]]]}}},
        "Port": {"p9": {"new": port_row("veth100i0", 20, json!(["map", []]), "i9")}},
        "Interface": {"i9": {"new": {"name": "veth100i0", "ofport": ["set", []], "error": ["set", []]}}}
    })));
    let tc = touched(&ch, &t);
    assert_eq!(tc.veth_ports, ["veth100i0".to_string()].into());
    assert!(tc.owned.is_empty() && tc.new_bridges.is_empty());
    assert_eq!(dead_port(&t, "veth100i0"), None, "not processed yet");
    let ch = t.apply(&decode_updates(&json!({
        "Interface": {"i9": {"old": {"ofport": ["set", []]}, "new": {"name": "veth100i0", "ofport": -1,
            "error": "could not open network device veth100i0 (No such device)"}}}
    })));
    assert_eq!(touched(&ch, &t).veth_ports.len(), 1);
    assert_eq!(
        dead_port(&t, "veth100i0").as_deref(),
        Some("could not open network device veth100i0 (No such device)")
    );
    assert_eq!(dead_port(&t, "vi100"), None);
    let line = dead_port_line("100".parse().unwrap(), 0, "veth100i0", "vi100", "x");
    assert!(!line.contains('\n'));
    for part in [
        "live edit of net0 failed",
        "renamed veth100i0 to vi100",
        "`op-agent set 100 -net0 ...`",
        "hands the NIC back to PVE",
    ] {
        assert!(line.contains(part), "{part}: {line}");
    }
}

#[test]
fn a_new_bridge_is_noticed() {
    let mut t = tables();
    let ch = t.apply(&decode_updates(&json!({
        "Bridge": {"b3": {"new": {"name": "ovsbr2", "ports": ["set", []]}}}
    })));
    assert_eq!(ch[0].table, Table::Bridge);
    assert_eq!(touched(&ch, &t).new_bridges, ["ovsbr2".to_string()].into());
    // A deleted one is not "new".
    let ch = t.apply(&decode_updates(&json!({"Bridge": {"b3": {"old": {}}}})));
    assert!(touched(&ch, &t).new_bridges.is_empty());
}

#[test]
fn a_lost_rate_limit_is_a_drift_and_a_kept_one_is_not() {
    let mut n = nic(0, "vi100", "ovsbr0", Some(10), &[]);
    n.rate = pve_integration::Rate::from_pve("1");
    let wants = wanted_ports(&desired(vec![n]));
    assert_eq!(wants[0].rate_kbits, Some(8388));
    // tables(): vi100 without QoS and without policing.
    let d = drifts(&wants, &tables());
    assert_eq!(d.len(), 1);
    let Found::Changed(c) = &d[0].found else {
        panic!("{d:?}")
    };
    let cols: Vec<&str> = c.iter().map(|(col, _, _)| *col).collect();
    assert_eq!(cols, ["qos", "ingress_policing_rate"]);
    // The same port with op-agent's QoS and policing: nothing due.
    let mut t = tables();
    t.apply(&decode_updates(&json!({
        "Port": {"p1": {"new": {"name": "vi100", "tag": 10, "trunks": ["set", []],
            "vlan_mode": ["set", []], "external_ids": owned(), "interfaces": ["uuid", "i1"],
            "qos": ["uuid", "q1"]}}},
        "Interface": {"i1": {"new": {"name": "vi100", "ofport": 2, "error": ["set", []],
            "ingress_policing_rate": 8388}}}
    })));
    assert_eq!(drifts(&wants, &t), vec![]);
    // A limit the config no longer asks for is a drift too.
    let plain = wanted_ports(&desired(vec![nic(0, "vi100", "ovsbr0", Some(10), &[])]));
    assert_eq!(drifts(&plain, &t).len(), 1);
}

#[test]
fn keep_mode_wants_pves_port_marked() {
    let mut d = desired(vec![nic(0, "vi100", "ovsbr0", Some(10), &[])]);
    d.naming = crate::config::Naming::Keep;
    let w = wanted_ports(&d);
    assert_eq!((w[0].name.as_str(), w[0].keep), ("veth100i0", true));
    // PVE's hotplug (tap_plug) put back its own row: unmarked, the new tag.
    let t = Tables::from_initial(&json!({
        "Bridge": {"b1": {"new": {"name": "ovsbr0", "ports": ["uuid", "p1"]}}},
        "Port": {"p1": {"new": port_row("veth100i0", 20, json!(["map", []]), "i1")}},
        "Interface": {"i1": {"new": {"name": "veth100i0", "ofport": 3, "error": ["set", []]}}}
    }));
    let dr = drifts(&w, &t);
    assert_eq!(dr.len(), 1, "{dr:?}");
    let Found::Changed(c) = &dr[0].found else {
        panic!("{dr:?}")
    };
    let cols: Vec<&str> = c.iter().map(|(col, ..)| *col).collect();
    assert_eq!(cols, vec!["external_ids", "tag"]);
    // The same row in rename mode is PVE's, not op-agent's: not due.
    d.naming = crate::config::Naming::Rename;
    let mut w = wanted_ports(&d);
    w[0].name = "veth100i0".into();
    assert_eq!(drifts(&w, &t), vec![]);
}

#[test]
fn an_interface_mtu_request_unlike_the_bridge_mtu_is_a_change() {
    // ovs-vsctl set Interface vi100 mtu_request=1400: only the Interface row changes. The
    // bridge has an MTU of its own (its Interface i0's mtu_request).
    let mut t = tables();
    t.apply(&decode_updates(&json!({
        "Interface": {"i0": {"new": {"name": "ovsbr0", "ofport": 65534, "error": ["set", []], "mtu_request": 1500}}}
    })));
    let ch = t.apply(&decode_updates(&json!({
        "Interface": {"i1": {"old": {"mtu_request": ["set", []]},
            "new": {"name": "vi100", "ofport": 2, "error": ["set", []], "mtu_request": 1400}}}
    })));
    assert_eq!(
        touched(&ch, &t).owned,
        ["100".parse().unwrap()].into(),
        "an owned Port's Interface changed"
    );
    let w = wanted_ports(&desired(vec![nic(0, "vi100", "ovsbr0", Some(10), &[])]));
    assert_eq!(
        drifts(&w, &t)[0].found,
        Found::Changed(vec![("mtu_request", json!(1500), json!(1400))])
    );
    // Without an MTU of its own the bridge's follows its smallest port: nothing to restore.
    t.apply(&decode_updates(&json!({
        "Interface": {"i0": {"new": {"name": "ovsbr0", "ofport": 65534, "error": ["set", []]}}}
    })));
    assert_eq!(drifts(&w, &t), vec![]);
}
