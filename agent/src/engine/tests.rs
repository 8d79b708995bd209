//! The engine's deadline: a call that never answers is stopped when `[hook] deadline_ms`
//! passes (tokio's clock paused, so the test takes no time).

use super::*;
use crate::config::MeshSection;
use crate::engine::fake::{Fake, Fault, Op};

fn desired() -> Desired {
    Desired {
        vmid: "100".parse::<Vmid>().unwrap(),
        network_type: NetworkType::Bridge,
        require_mesh: false,
        naming: crate::config::Naming::Rename,
        nics: Vec::new(),
    }
}

#[tokio::test(start_paused = true)]
async fn a_hung_call_is_stopped_at_the_deadline() {
    let fake = Fake::pve_started();
    // The post-stop sweep of an owned row: its del_port never answers.
    fake.add_row(crate::engine::fake::FakePort {
        name: "vi100".into(),
        bridge: "ovsbr0".into(),
        external_ids: [("owner", "op-agent"), ("vm-id", "100")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into(),
        ..Default::default()
    });
    fake.fail(Op::DelPort, 1, Fault::Hang);
    let deadline = Deadline::from_now(Duration::from_millis(4000));
    let host = fake.host(Duration::from_secs(10), deadline);
    let mut rec = Recorder::new(100, "post-stop", None, Instant::now());
    let t = tokio::time::Instant::now();
    let d = desired();
    let r = within(deadline, &mut rec, async |rec: &mut Recorder| {
        let obs = observe::observe(&host, &d, true, rec).await?;
        let steps = plan::plan_post_stop(&d, &obs);
        assert_eq!(steps.len(), 1);
        execute::execute(&host, &MeshSection::default(), &d, &obs, &steps, rec).await
    })
    .await;
    assert_eq!(t.elapsed(), Duration::from_millis(4000));
    let e = r.unwrap_err();
    assert_eq!(e.code(), crate::exit::ExitCode::Timeout);
    assert_eq!(
        e.to_string(),
        "deadline of 4000 ms exceeded; the run was stopped"
    );
    let last = rec.rows().last().unwrap();
    assert_eq!(
        (last.0.as_str(), last.1),
        ("hook.deadline", Outcome::Failed)
    );
}

/// Container 100 with only net0 in its conf.
fn net0_only() -> Desired {
    use crate::desired::{DesiredNic, NicMode};
    use pve_integration::{IfName, NetIndex};
    Desired {
        nics: vec![DesiredNic {
            net: NetIndex::new(0).unwrap(),
            pve_veth: "veth100i0".into(),
            name: IfName::new("vi100").unwrap(),
            bridge: Some(IfName::new("ovsbr0").unwrap()),
            tag: pve_integration::VlanTag::new(10),
            trunks: Vec::new(),
            hwaddr: None,
            link_down: false,
            rate: None,
            mode: NicMode::Plug,
        }],
        ..desired()
    }
}

fn link(index: u32, name: &str, alias: Option<&str>) -> crate::engine::fake::FakeLink {
    crate::engine::fake::FakeLink {
        index,
        name: name.into(),
        kind: Some("veth".into()),
        up: true,
        alias: alias.map(str::to_string),
        master: None,
        mtu: Some(1500),
    }
}

#[tokio::test(start_paused = true)]
async fn a_removed_net_loses_only_op_agents_link_and_port() {
    let fake = Fake::pve_started();
    fake.add_link(link(9, "vi100i1", Some("op-agent vm-id=100 net=1")));
    fake.add_link(link(10, "vi101i1", Some("op-agent vm-id=101 net=1")));
    fake.add_link(link(11, "vi100i2", None));
    fake.add_row(crate::engine::fake::FakePort {
        name: "vi100i1".into(),
        bridge: "ovsbr0".into(),
        external_ids: [("owner", "op-agent"), ("vm-id", "100"), ("pve-net", "net1")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into(),
        ofport: Some(5),
        ..Default::default()
    });
    let host = fake.host(
        Duration::from_secs(10),
        Deadline::from_now(Duration::from_secs(4)),
    );
    let mut rec = Recorder::new(100, "watch", None, Instant::now());
    let d = net0_only();
    let obs = observe::observe(&host, &d, false, &mut rec).await.unwrap();
    assert_eq!(obs.removed.len(), 1, "only vm-id=100 with op-agent's alias");
    let steps = plan::plan_post_start(&d, &obs).unwrap();
    assert_eq!(
        plan::plan_lines(&steps)[..2],
        [
            "net1: ovs.del-port vi100i1 (owned only)",
            "net1: nic.removed vi100i1"
        ]
    );
    execute::execute(&host, &MeshSection::default(), &d, &obs, &steps, &mut rec)
        .await
        .unwrap();
    assert!(fake.link("vi100i1").is_none() && fake.port("vi100i1").is_none());
    assert!(fake.link("vi101i1").is_some() && fake.link("vi100i2").is_some());
    assert!(fake.link("vi100").is_some(), "net0 converged");
    let row = rec
        .rows()
        .iter()
        .find(|r| r.0 == "nic.removed")
        .unwrap()
        .clone();
    assert_eq!(row.1, Outcome::Ok);
    assert_eq!(row.2["reason"], "netN is no longer in the PVE conf");
}

#[tokio::test(start_paused = true)]
async fn a_link_whose_alias_changed_since_the_plan_is_not_deleted() {
    let fake = Fake::pve_started();
    fake.add_link(link(9, "vi100i1", Some("op-agent vm-id=100 net=1")));
    let host = fake.host(
        Duration::from_secs(10),
        Deadline::from_now(Duration::from_secs(4)),
    );
    let mut rec = Recorder::new(100, "watch", None, Instant::now());
    let d = net0_only();
    let obs = observe::observe(&host, &d, false, &mut rec).await.unwrap();
    let steps = plan::plan_post_start(&d, &obs).unwrap();
    fake.set_alias("vi100i1", Some("someone else"));
    let e = execute::execute(&host, &MeshSection::default(), &d, &obs, &steps, &mut rec)
        .await
        .unwrap_err();
    assert_eq!(e.code(), crate::exit::ExitCode::Refused);
    assert!(fake.link("vi100i1").is_some());
    let last = rec.rows().last().unwrap();
    assert_eq!((last.0.as_str(), last.1), ("nic.removed", Outcome::Failed));
}
