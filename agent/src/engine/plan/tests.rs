//! Unit tests of the planner (and of `desired::resolve`, whose fixtures they share).

use super::*;
use crate::config::{parse_container, ContainerConfig};
use crate::desired::resolve;
use pve_integration::{NetConf, NetIndex, PveConf, Vmid};
use std::path::Path;

pub(super) fn net(i: u8, bridge: &str, tag: Option<u16>) -> NetConf {
    let mut n = NetConf::new(NetIndex::new(i).unwrap(), &format!("eth{i}"));
    n.bridge = Some(pve_integration::IfName::new(bridge).unwrap());
    n.hwaddr = Some("BC:24:11:00:00:01".parse().unwrap());
    n.tag = tag.map(|t| pve_integration::VlanTag::new(t).unwrap());
    n
}

pub(super) fn desired(nets: Vec<NetConf>, toml: &str) -> Desired {
    let mut pve = PveConf::default();
    for n in nets {
        pve.nets.insert(n.index.get(), n);
    }
    let ct: ContainerConfig = parse_container(Path::new("/c/100.toml"), toml).unwrap();
    resolve(
        "100".parse::<Vmid>().unwrap(),
        &pve,
        Path::new("/p/100.conf"),
        &ct,
    )
    .unwrap()
}

pub(super) fn veth(name: &str, index: u32) -> ObservedLink {
    ObservedLink {
        index,
        name: name.into(),
        kind: Some("veth".into()),
        up: true,
        master: None,
        ours: false,
        other_owner: None,
        in_setup: false,
    }
}

/// The OVS bridges every post-start fixture has.
pub(super) fn ovs() -> std::collections::BTreeSet<String> {
    ["ovsbr0", "ovsbr1"].map(String::from).into()
}

/// What post-start finds on a fresh start: PVE's `veth100i0` plugged into `ovsbr0`.
pub(super) fn pve_plugged() -> Observed {
    Observed {
        nics: vec![ObservedNic {
            pve_link: Some(veth("veth100i0", 7)),
            pve_port: Some(pve_port("veth100i0")),
            ..Default::default()
        }],
        ovs_bridges: ovs(),
        ..Default::default()
    }
}

pub(super) fn pve_port(name: &str) -> ObservedPort {
    ObservedPort {
        name: name.into(),
        bridge: Some("ovsbr0".into()),
        tag: Some(10),
        mtu_request: Some(1500),
        ofport: Some(2),
        ..Default::default()
    }
}

/// A bridge gone from OVSDB (`del-br`): refused before the rename, so nothing is renamed and
/// renamed back (the add-port failed after the rename, and the rename back made the watch
/// retry at once).
#[test]
fn post_start_refuses_a_bridge_missing_from_ovsdb_before_any_change() {
    let d = desired(vec![net(0, "ovsbr0", Some(10))], "");
    let obs = Observed {
        nics: vec![ObservedNic {
            pve_link: Some(veth("veth100i0", 7)),
            ..Default::default()
        }],
        ..Default::default()
    };
    assert_eq!(
        plan_post_start(&d, &obs).unwrap_err(),
        PlanError::Unavailable("net0: bridge ovsbr0 does not exist in OVSDB".into())
    );
}

/// On a bridge with an MTU of its own, a Port's `mtu_request` unlike it is replaced; on one
/// without (OVS's smallest-port MTU), the Port keeps the one it has, so a port set lower by
/// hand does not spread to every repaired one.
#[test]
fn an_existing_ports_mtu_follows_only_a_bridge_with_its_own_mtu() {
    let d = desired(vec![net(0, "ovsbr0", Some(10))], "");
    let mut link = veth("vi100", 7);
    link.ours = true;
    let mut have = pve_port("vi100");
    have.external_ids = ownership_ids(&d, &d.nics[0]);
    have.mtu_request = Some(1500);
    let obs = |have: &ObservedPort, bridge_mtu_request: Option<i64>| Observed {
        nics: vec![ObservedNic {
            target_link: Some(link.clone()),
            target_port: Some(have.clone()),
            bridge_mtu: Some(1200),
            bridge_mtu_request,
            ..Default::default()
        }],
        ovs_bridges: ovs(),
        ..Default::default()
    };
    assert_eq!(plan_post_start(&d, &obs(&have, None)).unwrap(), vec![]);
    let plan = plan_post_start(&d, &obs(&have, Some(1200))).unwrap();
    assert!(
        plan.len() == 1 && plan[0].step.to_string().contains("mtu_request=1200"),
        "{plan:?}"
    );
    // A Port moving to that bridge from another takes the bridge's MTU, not its old one.
    have.bridge = Some("ovsbr1".into());
    let moved = plan_post_start(&d, &obs(&have, None)).unwrap();
    assert!(
        moved.len() == 1
            && moved[0]
                .step
                .to_string()
                .contains("ovsbr0 vi100 tag=10 mtu_request=1200"),
        "{moved:?}"
    );
}

#[test]
fn fresh_post_start_replugs() {
    let d = desired(vec![net(0, "ovsbr0", Some(10))], "");
    let obs = pve_plugged();
    let plan = plan_post_start(&d, &obs).unwrap();
    let names: Vec<String> = plan.iter().map(|p| p.step.to_string()).collect();
    assert_eq!(names[0], "ovs.del-port veth100i0");
    assert_eq!(names[1], "link.down veth100i0");
    assert_eq!(names[2], "link.rename veth100i0 -> vi100 (up)");
    assert_eq!(
        names[3],
        "ovs.add-port ovsbr0 vi100 tag=10 mtu_request=1500 external_ids:attached-mac=bc:24:11:00:00:01 \
         external_ids:owner=op-agent external_ids:pve-net=net0 external_ids:vm-id=100"
    );
    assert_eq!(plan.len(), 4);
}

#[test]
fn toml_overrides_and_trunks_native_untagged() {
    let d = desired(
        vec![net(0, "vmbr0", None)],
        "[[nic]]\nnet = 0\nbridge = \"ovsbr0\"\ntag = 10\ntrunks = [30, 20, 30]\nname = \"ct100\"\n",
    );
    let o = ObservedNic {
        pve_link: Some(veth("veth100i0", 7)),
        bridge_mtu: Some(9000),
        ..Default::default()
    };
    let w = desired_port(&d, &d.nics[0], &o).unwrap();
    assert_eq!(w.name, "ct100");
    assert_eq!(w.bridge, "ovsbr0");
    assert_eq!(w.trunks, vec![20, 30]);
    assert_eq!(w.vlan_mode.as_deref(), Some("native-untagged"));
    assert_eq!(w.mtu_request, Some(9000));
    // PVE plugged it into vmbr0 (MTU 1500 there): its Port's mtu_request is vmbr0's, not
    // ovsbr0's, and does not follow the NIC to the TOML's bridge.
    let mut pves = pve_port("veth100i0");
    pves.bridge = Some("vmbr0".into());
    let o = ObservedNic {
        pve_port: Some(pves),
        ..o
    };
    assert_eq!(
        desired_port(&d, &d.nics[0], &o).unwrap().mtu_request,
        Some(9000)
    );
}

#[test]
fn converged_second_run_is_empty() {
    let d = desired(vec![net(0, "ovsbr0", Some(10))], "");
    let mut link = veth("vi100", 7);
    link.ours = true;
    let mut o = ObservedNic {
        target_link: Some(link),
        bridge_mtu: Some(1500),
        ..Default::default()
    };
    let mut have = pve_port("vi100");
    have.external_ids = ownership_ids(&d, &d.nics[0]);
    o.target_port = Some(have);
    let obs = Observed {
        nics: vec![o],
        ovs_bridges: ovs(),
        ..Default::default()
    };
    assert_eq!(plan_post_start(&d, &obs).unwrap(), vec![]);
}

#[test]
fn drifted_tag_is_replaced() {
    let d = desired(vec![net(0, "ovsbr0", Some(10))], "");
    let mut link = veth("vi100", 7);
    link.ours = true;
    let mut have = pve_port("vi100");
    have.tag = Some(99);
    have.external_ids = ownership_ids(&d, &d.nics[0]);
    let obs = Observed {
        nics: vec![ObservedNic {
            target_link: Some(link),
            target_port: Some(have),
            ..Default::default()
        }],
        ovs_bridges: ovs(),
        ..Default::default()
    };
    let plan = plan_post_start(&d, &obs).unwrap();
    assert_eq!(plan.len(), 1);
    assert!(matches!(&plan[0].step, Step::ReplacePort(p) if p.tag == Some(10)));
}

#[test]
fn foreign_link_and_port_refused() {
    let d = desired(vec![net(0, "ovsbr0", Some(10))], "");
    let obs = Observed {
        nics: vec![ObservedNic {
            pve_link: Some(veth("veth100i0", 7)),
            target_link: Some(veth("vi100", 9)),
            ..Default::default()
        }],
        ovs_bridges: ovs(),
        ..Default::default()
    };
    assert!(matches!(
        plan_post_start(&d, &obs),
        Err(PlanError::Refused(_))
    ));
    let obs = Observed {
        nics: vec![ObservedNic {
            pve_link: Some(veth("veth100i0", 7)),
            target_port: Some(pve_port("vi100")),
            ..Default::default()
        }],
        ovs_bridges: ovs(),
        ..Default::default()
    };
    let e = plan_post_start(&d, &obs).unwrap_err();
    assert!(e.to_string().contains("not owned by op-agent"), "{e}");
}

#[test]
fn not_a_veth_refused_and_missing_reported() {
    let d = desired(vec![net(0, "ovsbr0", None)], "");
    let mut l = veth("veth100i0", 7);
    l.kind = Some("dummy".into());
    let obs = Observed {
        nics: vec![ObservedNic {
            pve_link: Some(l),
            ..Default::default()
        }],
        ovs_bridges: ovs(),
        ..Default::default()
    };
    assert!(matches!(
        plan_post_start(&d, &obs),
        Err(PlanError::Refused(_))
    ));
    let obs = Observed {
        nics: vec![ObservedNic::default()],
        ovs_bridges: ovs(),
        ..Default::default()
    };
    assert!(matches!(
        plan_post_start(&d, &obs),
        Err(PlanError::Missing(_))
    ));
}

#[test]
fn pre_start_checks_bridge_and_sweeps_owned_rows() {
    let d = desired(vec![net(0, "ovsbr0", Some(10))], "");
    let obs = Observed {
        nics: vec![ObservedNic::default()],
        ..Default::default()
    };
    let e = plan_pre_start(&d, &obs).unwrap_err();
    assert_eq!(
        e,
        PlanError::Unavailable("net0: bridge ovsbr0 does not exist in OVSDB".into())
    );
    let mut stale = pve_port("vi100");
    stale.external_ids = ownership_ids(&d, &d.nics[0]);
    let mut other = pve_port("old100");
    other.external_ids = ownership_ids(&d, &d.nics[0]);
    let obs = Observed {
        nics: vec![ObservedNic {
            target_port: Some(stale.clone()),
            ..Default::default()
        }],
        ovs_bridges: ["ovsbr0".to_string()].into(),
        owned_ports: vec![stale, other],
        ..Default::default()
    };
    let plan = plan_pre_start(&d, &obs).unwrap();
    let s: Vec<String> = plan.iter().map(|p| p.step.to_string()).collect();
    assert_eq!(
        s,
        vec![
            "ovs.del-port vi100 (owned only)",
            "ovs.del-port old100 (owned only)"
        ]
    );
}

#[test]
fn link_down_renames_without_plugging() {
    let mut n = net(0, "ovsbr0", Some(10));
    n.link_down = true;
    let d = desired(vec![n], "");
    let obs = Observed {
        nics: vec![ObservedNic {
            pve_link: Some(veth("veth100i0", 7)),
            ..Default::default()
        }],
        ..Default::default()
    };
    let s: Vec<String> = plan_post_start(&d, &obs)
        .unwrap()
        .iter()
        .map(|p| p.step.to_string())
        .collect();
    assert_eq!(
        s,
        vec!["link.down veth100i0", "link.rename veth100i0 -> vi100"]
    );
}

#[test]
fn post_stop_deletes_owned_only() {
    let d = desired(vec![net(0, "ovsbr0", Some(10))], "");
    let mut ours = pve_port("vi100");
    ours.external_ids = ownership_ids(&d, &d.nics[0]);
    let obs = Observed {
        nics: vec![ObservedNic {
            target_port: Some(ours.clone()),
            ..Default::default()
        }],
        owned_ports: vec![ours],
        ..Default::default()
    };
    let plan = plan_post_stop(&d, &obs);
    assert_eq!(plan.len(), 1);
    let obs = Observed {
        nics: vec![ObservedNic {
            target_port: Some(pve_port("vi100")),
            ..Default::default()
        }],
        ..Default::default()
    };
    assert!(plan_post_stop(&d, &obs).is_empty());
}

#[test]
fn firewall_refused_or_skipped() {
    let mut n = net(0, "ovsbr0", Some(10));
    n.firewall = true;
    let mut pve = PveConf::default();
    pve.nets.insert(0, n);
    let ct = parse_container(Path::new("/c/100.toml"), "").unwrap();
    let vmid: Vmid = "100".parse().unwrap();
    let e = resolve(vmid, &pve, Path::new("/p/100.conf"), &ct).unwrap_err();
    assert!(e.to_string().contains("firewall=1"), "{e}");
    let ct = parse_container(Path::new("/c/100.toml"), "on_firewall = \"skip\"\n").unwrap();
    let d = resolve(vmid, &pve, Path::new("/p/100.conf"), &ct).unwrap();
    assert_eq!(d.nics[0].mode, NicMode::Skip("firewall=1".into()));
}

#[test]
fn nic_for_missing_net_is_config_error_with_line() {
    let mut pve = PveConf::default();
    pve.nets.insert(0, net(0, "ovsbr0", None));
    let ct = parse_container(
        Path::new("/c/100.toml"),
        "network_type = \"bridge\"\n\n[[nic]]\nnet = 5\n",
    )
    .unwrap();
    let e = resolve("100".parse().unwrap(), &pve, Path::new("/p/100.conf"), &ct).unwrap_err();
    assert_eq!(
        e.to_string(),
        "/c/100.toml:3: [[nic]] net = 5: no net5 in /p/100.conf"
    );
}

#[test]
fn name_overrides_cannot_take_pve_or_other_container_names() {
    let mut pve = PveConf::default();
    pve.nets.insert(0, net(0, "ovsbr0", None));
    let vmid: Vmid = "102".parse().unwrap();
    for (name, ok) in [
        ("vi101", false),
        ("vi101i1", false),
        ("veth101i0", false),
        ("tap5i0", false),
        ("fwbr102i0", false),
        ("vi102", true),
        ("vi102i3", true),
        ("dup0", true),
        ("vethx", true),
    ] {
        let ct = parse_container(
            Path::new("/c/102.toml"),
            &format!("[[nic]]\nnet = 0\nname = \"{name}\"\n"),
        )
        .unwrap();
        let r = resolve(vmid, &pve, Path::new("/p/102.conf"), &ct);
        assert_eq!(r.is_ok(), ok, "{name}: {r:?}");
    }
}

#[test]
fn live_ports_are_never_swept() {
    let d = desired(vec![net(0, "ovsbr0", Some(10))], "");
    let mut ours = pve_port("vi100");
    ours.external_ids = ownership_ids(&d, &d.nics[0]);
    ours.link_alive = true;
    let mut link = veth("vi100", 7);
    link.ours = true;
    let obs = Observed {
        nics: vec![ObservedNic {
            target_link: Some(link),
            target_port: Some(ours.clone()),
            ..Default::default()
        }],
        ovs_bridges: ["ovsbr0".to_string()].into(),
        owned_ports: vec![ours],
        ..Default::default()
    };
    assert!(plan_pre_start(&d, &obs).unwrap().is_empty());
    // post-stop removes them all the same: the kernel destroys a stopped container's veths
    // asynchronously, and a row left behind is PVE bug #1232.
    assert_eq!(plan_post_stop(&d, &obs).len(), 1);
}

#[test]
fn long_vmid_net31_names() {
    let vmid: Vmid = "999999999".parse().unwrap();
    let n31 = NetIndex::new(31).unwrap();
    assert_eq!(
        crate::desired::default_link_name(vmid, n31),
        "vi999999999i31"
    );
    let too_long = pve_integration::HostVeth::new(vmid, n31).unwrap_err();
    assert_eq!(too_long.lxc_truncated(), "veth999999999i3");
    let mut pve = PveConf::default();
    pve.nets.insert(9, net(9, "ovsbr0", None));
    pve.nets.insert(31, net(31, "ovsbr0", None));
    let ct = parse_container(Path::new("/c/x.toml"), "").unwrap();
    let d = resolve(vmid, &pve, Path::new("/p/x.conf"), &ct).unwrap();
    let obs = Observed {
        nics: vec![ObservedNic::default(); 2],
        ovs_bridges: ["ovsbr0".to_string()].into(),
        ..Default::default()
    };
    let e = plan_pre_start(&d, &obs).unwrap_err().to_string();
    assert!(
        e.starts_with("net31: PVE's host veth name veth999999999i31 is 16 bytes"),
        "{e}"
    );
    pve.nets.remove(&31);
    let d = resolve(vmid, &pve, Path::new("/p/x.conf"), &ct).unwrap();
    assert!(plan_pre_start(&d, &obs).is_ok());
}
