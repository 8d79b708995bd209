//! Unit tests of the keep-mode plan ([`super::plan_keep_nic`] through `plan_post_start`).

use crate::config::parse_container;
use crate::desired::{resolve, Desired};
use crate::engine::observed::{Observed, ObservedLink, ObservedNic, ObservedPort};
use crate::engine::ownership::ownership_ids;
use crate::engine::plan::{plan_post_start, PlanError};
use pve_integration::{NetConf, NetIndex, PveConf, Vmid};
use std::path::Path;

fn keep(rate: Option<&str>) -> Desired {
    let mut n = NetConf::new(NetIndex::new(0).unwrap(), "eth0");
    n.bridge = Some(pve_integration::IfName::new("ovsbr0").unwrap());
    n.hwaddr = Some("BC:24:11:00:00:01".parse().unwrap());
    n.tag = pve_integration::VlanTag::new(10);
    n.rate = rate.map(str::to_string);
    let mut pve = PveConf::default();
    pve.nets.insert(0, n);
    let toml = "naming = \"keep\"\n";
    let ct = parse_container(Path::new("/c/100.toml"), toml).unwrap();
    let vmid: Vmid = "100".parse().unwrap();
    resolve(vmid, &pve, Path::new("/p/100.conf"), &ct).unwrap()
}

fn veth(index: u32, ours: bool) -> ObservedLink {
    ObservedLink {
        index,
        name: "veth100i0".into(),
        kind: Some("veth".into()),
        up: true,
        ours,
        ..Default::default()
    }
}

fn pves_port() -> ObservedPort {
    ObservedPort {
        name: "veth100i0".into(),
        bridge: Some("ovsbr0".into()),
        tag: Some(10),
        mtu_request: Some(1500),
        ofport: Some(2),
        ..Default::default()
    }
}

fn observed(o: ObservedNic) -> Observed {
    Observed {
        nics: vec![o],
        ovs_bridges: ["ovsbr0".to_string()].into(),
        ..Default::default()
    }
}

fn lines(d: &Desired, obs: &Observed) -> Vec<String> {
    plan_post_start(d, obs)
        .unwrap()
        .iter()
        .map(|p| p.step.to_string())
        .collect()
}

#[test]
fn the_toml_says_keep() {
    assert_eq!(keep(None).naming, crate::config::Naming::Keep);
    assert!(keep(None).keeps_names());
    assert_eq!(keep(None).port_name(&keep(None).nics[0]), "veth100i0");
}

#[test]
fn fresh_start_adds_the_altname_and_adopts_pves_port_without_renaming() {
    let d = keep(None);
    let obs = observed(ObservedNic {
        pve_link: Some(veth(7, false)),
        pve_port: Some(pves_port()),
        ..Default::default()
    });
    assert_eq!(
        lines(&d, &obs),
        vec![
            "link.altname veth100i0 vi100".to_string(),
            "ovs.adopt-port ovsbr0 veth100i0 tag=10 mtu_request=1500 \
             external_ids:attached-mac=bc:24:11:00:00:01 external_ids:owner=op-agent \
             external_ids:pve-net=net0 external_ids:vm-id=100"
                .to_string(),
        ]
    );
}

#[test]
fn converged_is_empty_and_a_second_port_by_the_altname_goes_first() {
    let d = keep(None);
    let mut have = pves_port();
    have.external_ids = ownership_ids(&d, &d.nics[0]);
    let mut o = ObservedNic {
        pve_link: Some(veth(7, true)),
        // The name lookup of the altname finds the veth itself.
        target_link: Some(veth(7, true)),
        pve_port: Some(have),
        ..Default::default()
    };
    assert_eq!(lines(&d, &observed(o.clone())), Vec::<String>::new());
    // Someone set mtu_request=1400 on PVE's Port: the bridge's own MTU is restored.
    let mut drifted = o.clone();
    drifted.bridge_mtu = Some(1500);
    drifted.bridge_mtu_request = Some(1500);
    drifted.pve_port.as_mut().unwrap().mtu_request = Some(1400);
    let l = lines(&d, &observed(drifted.clone()));
    assert!(l.len() == 1 && l[0].contains("mtu_request=1500"), "{l:?}");
    // A bridge without an MTU of its own has no MTU to restore: the Port's stays.
    drifted.bridge_mtu_request = None;
    assert_eq!(lines(&d, &observed(drifted)), Vec::<String>::new());
    o.target_port = Some(ObservedPort {
        name: "vi100".into(),
        bridge: Some("ovsbr0".into()),
        ..Default::default()
    });
    assert_eq!(
        lines(&d, &observed(o)),
        vec!["ovs.del-port vi100".to_string()]
    );
}

#[test]
fn pves_rate_goes_on_the_port_and_a_foreign_vi100_is_refused() {
    let d = keep(Some("10"));
    let obs = observed(ObservedNic {
        pve_link: Some(veth(7, true)),
        target_link: Some(veth(7, true)),
        pve_port: Some(pves_port()),
        ..Default::default()
    });
    let l = lines(&d, &obs);
    assert_eq!(l[0], "link.clear-qdiscs veth100i0", "{l:?}");
    assert!(
        l[1].starts_with("ovs.adopt-port") && l[1].contains("qos=linux-htb"),
        "{l:?}"
    );
    let mut other = veth(9, false);
    other.name = "vi100".into();
    let obs = observed(ObservedNic {
        pve_link: Some(veth(7, false)),
        target_link: Some(other),
        ..Default::default()
    });
    assert!(matches!(
        plan_post_start(&d, &obs),
        Err(PlanError::Refused(m)) if m.contains("alternative name")
    ));
    let obs = observed(ObservedNic::default());
    assert!(matches!(
        plan_post_start(&d, &obs),
        Err(PlanError::Missing(_))
    ));
}

#[test]
fn keep_modes_stop_and_start_delete_the_qos_rows_pve_left() {
    use crate::engine::plan::{plan_post_stop, plan_pre_start};
    let mut d = keep(Some("1"));
    let obs = observed(ObservedNic::default());
    let last = |v: Vec<crate::engine::plan::Planned>| v.last().map(|p| p.step.to_string());
    assert_eq!(
        last(plan_post_stop(&d, &obs)).as_deref(),
        Some("ovs.del-stale-qos")
    );
    assert_eq!(
        last(plan_pre_start(&d, &obs).unwrap()).as_deref(),
        Some("ovs.del-stale-qos")
    );
    d.naming = crate::config::Naming::Rename;
    assert!(
        plan_post_stop(&d, &obs).is_empty(),
        "rename: PVE never deletes op-agent's Ports"
    );
}

#[test]
fn back_to_rename_removes_the_altname_before_the_rename() {
    let mut d = keep(None);
    d.naming = crate::config::Naming::Rename;
    let obs = observed(ObservedNic {
        pve_link: Some(veth(7, true)),
        target_link: Some(veth(7, true)),
        pve_port: Some(pves_port()),
        ..Default::default()
    });
    let l = lines(&d, &obs);
    let at = |s: &str| l.iter().position(|x| x.starts_with(s)).unwrap();
    assert_eq!(
        l[at("link.del-altname")],
        "link.del-altname veth100i0 vi100"
    );
    assert!(at("link.del-altname") < at("link.rename"), "{l:?}");
}
