//! Unit tests of post-start plans while a container runs: a `netN` PVE removed or replaced,
//! a changed tag/bridge/MTU/link_down, PVE's `rate=`, a veth LXC is still setting up.

use super::tests::{desired, net, ovs, pve_plugged, pve_port, veth};
use super::*;
use crate::engine::observed::RemovedNic;
use pve_integration::NetIndex;

fn ours(name: &str, index: u32) -> ObservedLink {
    ObservedLink {
        ours: true,
        ..veth(name, index)
    }
}

fn owned_port(d: &Desired, name: &str) -> ObservedPort {
    let mut p = pve_port(name);
    p.external_ids = ownership_ids(d, &d.nics[0]);
    p
}

fn converged_net0(d: &Desired) -> ObservedNic {
    let mut p = owned_port(d, "vi100");
    p.tag = Some(10);
    p.mtu_request = None;
    ObservedNic {
        target_link: Some(ours("vi100", 7)),
        target_port: Some(p),
        ..Default::default()
    }
}

#[test]
fn a_removed_net_loses_its_port_then_its_link() {
    let d = desired(vec![net(0, "ovsbr0", Some(10))], "");
    let mut obs = Observed {
        nics: vec![converged_net0(&d)],
        ovs_bridges: ovs(),
        ..Default::default()
    };
    assert_eq!(plan_post_start(&d, &obs).unwrap(), vec![], "converged");
    obs.removed = vec![RemovedNic {
        net: NetIndex::new(1).unwrap(),
        link: ours("vi100i1", 8),
        port: Some(owned_port(&d, "vi100i1")),
    }];
    let plan = plan_post_start(&d, &obs).unwrap();
    assert_eq!(
        plan_lines(&plan),
        vec![
            "net1: ovs.del-port vi100i1 (owned only)",
            "net1: nic.removed vi100i1"
        ]
    );
    assert_eq!(plan[1].step.name(), "nic.removed");
    // A Port op-agent does not own is left alone; the link (ours) still goes.
    obs.removed[0].port = Some(pve_port("vi100i1"));
    assert_eq!(
        plan_lines(&plan_post_start(&d, &obs).unwrap()),
        vec!["net1: nic.removed vi100i1"]
    );
    // A link without op-agent's alias for this vmid and net is never deleted.
    obs.removed[0].link.ours = false;
    assert_eq!(plan_post_start(&d, &obs).unwrap(), vec![]);
}

#[test]
fn a_replaced_nic_deletes_op_agents_old_link_then_takes_the_new_veth() {
    let d = desired(vec![net(0, "ovsbr0", Some(10))], "");
    let mut o = converged_net0(&d);
    o.pve_link = Some(veth("veth100i0", 9));
    o.pve_port = Some(pve_port("veth100i0"));
    let mut obs = Observed {
        nics: vec![o],
        ovs_bridges: ovs(),
        ..Default::default()
    };
    let plan = plan_post_start(&d, &obs).unwrap();
    let lines = plan_lines(&plan);
    assert_eq!(
        lines[..5],
        [
            "net0: ovs.del-port vi100 (owned only)",
            "net0: nic.replaced vi100",
            "net0: ovs.del-port veth100i0",
            "net0: link.down veth100i0",
            "net0: link.rename veth100i0 -> vi100 (up)",
        ]
    );
    assert!(lines[5].starts_with("net0: ovs.add-port ovsbr0 vi100 tag=10"));
    assert_eq!(lines.len(), 6);
    // A vi100 op-agent did not make is still refused.
    obs.nics[0].target_link.as_mut().unwrap().ours = false;
    assert!(matches!(
        plan_post_start(&d, &obs),
        Err(PlanError::Refused(m)) if m.contains("op-agent did not make")
    ));
}

#[test]
fn a_changed_tag_bridge_mtu_or_link_down_is_applied_to_the_port() {
    let obs_of = |d: &Desired| Observed {
        nics: vec![converged_net0(d)],
        ovs_bridges: ovs(),
        ..Default::default()
    };
    let d = desired(vec![net(0, "ovsbr0", Some(30))], "");
    let lines = plan_lines(&plan_post_start(&d, &obs_of(&d)).unwrap());
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].starts_with("net0: ovs.replace-port ovsbr0 vi100 tag=30"));
    let d = desired(vec![net(0, "ovsbr1", Some(10))], "");
    let lines = plan_lines(&plan_post_start(&d, &obs_of(&d)).unwrap());
    assert!(lines[0].starts_with("net0: ovs.replace-port ovsbr1 vi100 tag=10"));
    let mut n = net(0, "ovsbr0", Some(10));
    n.trunks = vec![pve_integration::VlanTag::new(20).unwrap()];
    let d = desired(vec![n], "");
    let lines = plan_lines(&plan_post_start(&d, &obs_of(&d)).unwrap());
    assert!(
        lines[0].contains("trunks=20 vlan_mode=native-untagged"),
        "{lines:?}"
    );
    let mut n = net(0, "ovsbr0", Some(10));
    n.link_down = true;
    let d = desired(vec![n], "");
    let lines = plan_lines(&plan_post_start(&d, &obs_of(&d)).unwrap());
    assert_eq!(lines, vec!["net0: ovs.del-port vi100 (owned only)"]);
    let n = net(0, "ovsbr0", Some(10));
    let d = desired(vec![n], "");
    let mut obs = obs_of(&d);
    obs.nics[0].target_link.as_mut().unwrap().up = false;
    assert_eq!(
        plan_lines(&plan_post_start(&d, &obs).unwrap()),
        vec!["net0: link.up vi100"]
    );
}

#[test]
fn rate_clears_pves_qdiscs_then_plugs_with_ovs_qos() {
    let mut n = net(0, "ovsbr0", Some(10));
    n.rate = Some("1".into());
    let d = desired(vec![n], "");
    let obs = pve_plugged();
    let plan = plan_post_start(&d, &obs).unwrap();
    let names: Vec<String> = plan.iter().map(|p| p.step.to_string()).collect();
    assert_eq!(names[2], "link.clear-qdiscs veth100i0");
    assert_eq!(names[3], "link.rename veth100i0 -> vi100 (up)");
    assert!(
        names[4].contains(" qos=linux-htb:max-rate=8388608 ingress_policing_rate=8388 "),
        "{}",
        names[4]
    );
    let Step::AddPort(want) = &plan[4].step else {
        panic!("{names:?}")
    };
    // The same port without its QoS (someone cleared Port.qos) is not converged.
    let mut have = pve_port("vi100");
    have.external_ids = want.external_ids.clone();
    have.policing_kbits = Some(8388);
    assert!(!port_matches(&have, want));
    have.qos = true;
    assert!(port_matches(&have, want));
    have.policing_kbits = Some(0);
    assert!(!port_matches(&have, want));
}

#[test]
fn a_veth_lxc_is_still_setting_up_is_left_alone() {
    let d = desired(vec![net(0, "ovsbr0", Some(10))], "");
    let mut l = veth("veth100i0", 7);
    l.in_setup = true;
    let obs = Observed {
        nics: vec![ObservedNic {
            pve_link: Some(l),
            pve_port: Some(pve_port("veth100i0")),
            ..Default::default()
        }],
        ovs_bridges: ovs(),
        ..Default::default()
    };
    let e = plan_post_start(&d, &obs).unwrap_err();
    assert!(matches!(e, PlanError::Missing(_)), "{e}");
    assert!(
        e.to_string().contains("LXC is still setting up veth100i0"),
        "{e}"
    );
}
