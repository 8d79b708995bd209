//! Unit tests of the planner for NICs on Linux bridges and `manage = false`.

use super::*;
use crate::config::parse_container;
use crate::desired::resolve;
use pve_integration::{NetConf, NetIndex, PveConf, Vmid};
use std::path::Path;

fn net(i: u8, bridge: &str) -> NetConf {
    let mut n = NetConf::new(NetIndex::new(i).unwrap(), &format!("eth{i}"));
    n.bridge = Some(pve_integration::IfName::new(bridge).unwrap());
    n
}

/// net0 on OVS bridge ovsbr0, net1 on Linux bridge vmbr1; `toml` is the container TOML.
fn two_nics(toml: &str, firewall1: bool) -> Result<Desired, crate::config::ConfigError> {
    let mut pve = PveConf::default();
    pve.nets.insert(0, net(0, "ovsbr0"));
    let mut n1 = net(1, "vmbr1");
    n1.firewall = firewall1;
    pve.nets.insert(1, n1);
    let ct = parse_container(Path::new("/c/100.toml"), toml).unwrap();
    resolve(
        "100".parse::<Vmid>().unwrap(),
        &pve,
        Path::new("/p/100.conf"),
        &ct,
    )
}

fn link(name: &str, index: u32) -> ObservedLink {
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

/// What observe finds: ovsbr0 in the Bridge table, vmbr1 a kernel `bridge` link; with
/// `started`, PVE's veths (net0's on ovsbr0, net1's enslaved to vmbr1).
fn observed(started: bool) -> Observed {
    let nic = |i: u32, kind: &str| ObservedNic {
        pve_link: started.then(|| link(&format!("veth100i{i}"), 7 + i)),
        pve_port: (started && i == 0).then(|| ObservedPort {
            name: "veth100i0".into(),
            bridge: Some("ovsbr0".into()),
            ofport: Some(2),
            ..Default::default()
        }),
        bridge_link_kind: Some(kind.into()),
        ..Default::default()
    };
    Observed {
        nics: vec![nic(0, "openvswitch"), nic(1, "bridge")],
        ovs_bridges: ["ovsbr0".to_string()].into_iter().collect(),
        ..Default::default()
    }
}

#[test]
fn nic_without_table_on_a_linux_bridge_is_left_to_pve() {
    let d = two_nics("", false).unwrap();
    assert_eq!(d.nics[1].mode, NicMode::PlugIfOvs);
    let pre = plan_lines(&plan_pre_start(&d, &observed(false)).unwrap());
    assert_eq!(
        pre,
        vec!["net1: nic.skip (vmbr1 is a Linux bridge, not Open vSwitch: left to PVE)"]
    );
    let post = plan_lines(&plan_post_start(&d, &observed(true)).unwrap());
    assert!(post.iter().all(|l| !l.contains("veth100i1")), "{post:?}");
    assert!(
        post.contains(&"net0: link.rename veth100i0 -> vi100 (up)".to_string()),
        "{post:?}"
    );
    assert_eq!(
        post.last().map(String::as_str),
        Some("net1: nic.skip (vmbr1 is a Linux bridge, not Open vSwitch: left to PVE)"),
        "{post:?}"
    );
}

#[test]
fn explicit_nic_on_a_linux_bridge_is_refused_naming_it() {
    let d = two_nics("[[nic]]\nnet = 1\ntag = 5\n", false).unwrap();
    assert_eq!(d.nics[1].mode, NicMode::Plug);
    for e in [
        plan_pre_start(&d, &observed(false)).unwrap_err(),
        plan_post_start(&d, &observed(true)).unwrap_err(),
    ] {
        assert!(matches!(e, PlanError::Refused(_)), "{e:?}");
        assert!(
            e.to_string().starts_with(
                "net1: vmbr1 is a Linux bridge; op-agent manages Open vSwitch bridges"
            ),
            "{e}"
        );
    }
}

#[test]
fn manage_false_leaves_the_nic_even_with_firewall() {
    let d = two_nics("[[nic]]\nnet = 1\nmanage = false\n", true).unwrap();
    assert_eq!(d.nics[1].mode, NicMode::Skip("manage = false".into()));
    let pre = plan_lines(&plan_pre_start(&d, &observed(false)).unwrap());
    assert_eq!(pre, vec!["net1: nic.skip (manage = false)"]);
    // Without it, firewall=1 still refuses.
    assert!(two_nics("", true).unwrap_err().refused);
}

#[test]
fn nic_without_table_on_a_missing_bridge_still_fails() {
    let d = two_nics("", false).unwrap();
    let mut obs = observed(false);
    obs.nics[1].bridge_link_kind = None;
    let e = plan_pre_start(&d, &obs).unwrap_err();
    assert_eq!(
        e,
        PlanError::Unavailable("net1: bridge vmbr1 does not exist in OVSDB".into())
    );
}
