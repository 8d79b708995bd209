//! The batch on the fake host: three containers PVE just started converge with two waits for
//! ovs-vswitchd in all, each with its own rows; a step failing for one of them rolls back that
//! one only.

use super::*;
use crate::desired::{DesiredNic, NicMode};
use crate::engine::fake::{Fake, FakeLink, Fault, Op};
use crate::engine::load::Managed;
use crate::ovsdb::OvsdbError;
use pve_integration::{IfName, NetIndex, Vmid};
use std::time::Duration;

const VMIDS: [u32; 3] = [100, 101, 102];

/// The fake host with `veth<v>i0` of every vmid of [`VMIDS`] plugged by PVE.
fn host_of_three() -> Fake {
    let f = Fake::pve_started();
    for (k, v) in VMIDS.iter().enumerate().skip(1) {
        f.add_link(FakeLink {
            index: 20 + k as u32,
            name: format!("veth{v}i0"),
            kind: Some("veth".into()),
            up: true,
            alias: None,
            master: None,
            mtu: Some(1500),
        });
        f.add_row(crate::engine::fake::FakePort {
            name: format!("veth{v}i0"),
            ..Fake::pve_port()
        });
    }
    f
}

fn desired(v: u32) -> Desired {
    Desired {
        vmid: Vmid::new(v).unwrap(),
        network_type: crate::config::NetworkType::Bridge,
        require_mesh: false,
        naming: crate::config::Naming::Rename,
        nics: vec![DesiredNic {
            net: NetIndex::new(0).unwrap(),
            pve_veth: format!("veth{v}i0"),
            name: IfName::new(&format!("vi{v}")).unwrap(),
            bridge: Some(IfName::new("ovsbr0").unwrap()),
            tag: pve_integration::VlanTag::new(10),
            trunks: Vec::new(),
            hwaddr: None,
            link_down: false,
            rate: None,
            mode: NicMode::Plug,
        }],
    }
}

fn jobs() -> Vec<Job> {
    VMIDS
        .iter()
        .map(|&v| Job {
            managed: Managed {
                vmid: Vmid::new(v).unwrap(),
                ct_toml: format!("/fake/{v}.toml").into(),
                pve_conf: format!("/fake/{v}.conf").into(),
                pve_root: "/fake".into(),
                default_naming: crate::config::Naming::Rename,
                unhooked: false,
            },
            phase: Phase::PostStart,
            label: "watch".into(),
            started: None,
        })
        .collect()
}

fn runs(jobs: &[Job]) -> Vec<Run<'_>> {
    jobs.iter()
        .enumerate()
        .map(|(i, job)| Run {
            i,
            job,
            started: Instant::now(),
            deadline: Deadline::from_now(Duration::from_secs(10)),
            lock: None,
            rec: Recorder::new(job.managed.vmid.get(), "watch", None, Instant::now()),
            d: Some(desired(job.managed.vmid.get())),
            obs: Observed::default(),
            steps: Vec::new(),
            undo: Undos::default(),
            summary: Vec::new(),
            changes: false,
            plans: Vec::new(),
            failure: None,
            done: None,
        })
        .collect()
}

/// A fresh audit log in a temporary directory (kept alive by the returned guard).
fn log() -> (tempfile::TempDir, AuditLog) {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(
        &dir.path().join("audit.db"),
        &crate::audit::AuditOptions::default(),
    )
    .unwrap();
    (dir, log)
}

fn steps_of(r: &Run<'_>) -> Vec<(String, Outcome)> {
    r.rec
        .rows()
        .iter()
        .map(|(s, o, _)| (s.clone(), *o))
        .collect()
}

fn converged(fake: &Fake, v: u32) -> bool {
    fake.link(&format!("vi{v}")).is_some()
        && fake.link(&format!("veth{v}i0")).is_none()
        && fake.port(&format!("veth{v}i0")).is_none()
        && fake
            .port(&format!("vi{v}"))
            .is_some_and(|p| p.ofport.unwrap_or(-1) > 0 && p.tag == Some(10))
}

#[tokio::test(start_paused = true)]
async fn three_containers_converge_with_two_waits_each_with_its_own_rows() {
    let fake = host_of_three();
    let host = fake.host(
        Duration::from_secs(5),
        Deadline::from_now(Duration::from_secs(10)),
    );
    let jobs = jobs();
    let mut runs = runs(&jobs);
    let (_dir, mut log) = log();
    phases(
        &host,
        &MeshSection::default(),
        RunOptions::default(),
        &mut runs,
        Some(&mut log),
    )
    .await;
    assert_eq!(fake.wait_timeouts().len(), 2, "{:?}", fake.calls());
    for (r, v) in runs.iter().zip(VMIDS) {
        assert!(converged(&fake, v), "{v}: {:?}", fake.calls());
        let summary = r.done.as_ref().unwrap().as_ref().unwrap();
        assert!(
            summary.contains(&format!("veth{v}i0 -> vi{v}")),
            "{summary}"
        );
        let rows = steps_of(r);
        let intent = rows.iter().position(|x| x.1 == Outcome::Intent).unwrap();
        let del = rows
            .iter()
            .position(|x| *x == ("ovs.del-port".to_string(), Outcome::Ok))
            .unwrap();
        assert!(intent < del, "write-ahead: {rows:?}");
        for want in ["ovs.wait", "link.rename", "ovs.add-port", "ovs.check"] {
            assert!(
                rows.contains(&(want.to_string(), Outcome::Ok)),
                "{v}: {want}: {rows:?}"
            );
        }
        assert_eq!(
            rows.iter().filter(|x| x.0 == "ovs.wait").count(),
            2,
            "{v}: one row per batched wait"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_container_whose_port_insert_fails_is_rolled_back_alone() {
    let fake = host_of_three();
    // The second insert of the batch (container 101's vi101) is refused.
    fake.fail(
        Op::AddPort,
        2,
        Fault::Ovsdb(OvsdbError::PortExists {
            port: "vi101".into(),
        }),
    );
    let host = fake.host(
        Duration::from_secs(5),
        Deadline::from_now(Duration::from_secs(10)),
    );
    let jobs = jobs();
    let mut runs = runs(&jobs);
    let (_dir, mut log) = log();
    phases(
        &host,
        &MeshSection::default(),
        RunOptions::default(),
        &mut runs,
        Some(&mut log),
    )
    .await;
    assert!(
        converged(&fake, 100) && converged(&fake, 102),
        "{:?}",
        fake.calls()
    );
    // 101 has PVE's plumbing back: its veth name and PVE's Port with PVE's tag.
    assert!(fake.link("veth101i0").is_some() && fake.link("vi101").is_none());
    assert_eq!(fake.port("veth101i0").and_then(|p| p.tag), Some(10));
    let e = runs[1].done.as_ref().unwrap().as_ref().unwrap_err();
    assert!(e.to_string().contains("vi101"), "{e}");
    // The line the admin reads says what is back, for this container's NIC only.
    assert!(
        e.to_string()
            .contains("rolled back: PVE's port veth101i0 is back on ovsbr0"),
        "{e}"
    );
    assert!(!e.to_string().contains("veth100i0"), "{e}");
    let rows = steps_of(&runs[1]);
    for want in [
        ("ovs.add-port", Outcome::Failed),
        ("rollback.rename", Outcome::Ok),
        ("rollback.add-port", Outcome::Ok),
    ] {
        assert!(
            rows.contains(&(want.0.to_string(), want.1)),
            "{want:?}: {rows:?}"
        );
    }
    for r in [&runs[0], &runs[2]] {
        assert!(r.done.as_ref().unwrap().is_ok());
        assert!(!steps_of(r).iter().any(|x| x.0.starts_with("rollback")));
    }
}

#[tokio::test(start_paused = true)]
async fn a_dry_run_batch_hands_back_each_plan_and_changes_nothing() {
    let fake = host_of_three();
    let host = fake.host(
        Duration::from_secs(5),
        Deadline::from_now(Duration::from_secs(10)),
    );
    let jobs = jobs();
    let mut runs = runs(&jobs);
    phases(
        &host,
        &MeshSection::default(),
        RunOptions { dry_run: true },
        &mut runs,
        None,
    )
    .await;
    for (r, v) in runs.iter().zip(VMIDS) {
        let lines = plan::plan_lines(&r.plans[0]);
        assert!(
            lines.contains(&format!("net0: link.rename veth{v}i0 -> vi{v} (up)")),
            "{lines:?}"
        );
        assert!(fake.port(&format!("veth{v}i0")).is_some());
    }
    assert!(fake.wait_timeouts().is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_batch_observes_what_each_container_would_observe_alone() {
    let fake = host_of_three();
    // 101 also has op-agent's link of a net1 its conf no longer has, with its owned Port.
    fake.add_link(FakeLink {
        index: 40,
        name: "vi101i1".into(),
        kind: Some("veth".into()),
        up: true,
        alias: Some("op-agent vm-id=101 net=1".into()),
        master: None,
        mtu: Some(1500),
    });
    fake.add_row(crate::engine::fake::FakePort {
        name: "vi101i1".into(),
        bridge: "ovsbr0".into(),
        external_ids: [("owner", "op-agent"), ("vm-id", "101")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into(),
        ofport: Some(9),
        ..Default::default()
    });
    let host = fake.host(
        Duration::from_secs(5),
        Deadline::from_now(Duration::from_secs(10)),
    );
    let ds: Vec<Desired> = VMIDS.iter().map(|&v| desired(v)).collect();
    let mut recs: Vec<Recorder> = VMIDS
        .iter()
        .map(|&v| Recorder::new(v, "watch", None, Instant::now()))
        .collect();
    let mut alone = Vec::new();
    for (d, rec) in ds.iter().zip(recs.iter_mut()) {
        alone.push(
            crate::engine::observe::observe(&host, d, false, rec)
                .await
                .unwrap(),
        );
    }
    let mut args: Vec<(&Desired, &mut Recorder)> = ds.iter().zip(recs.iter_mut()).collect();
    let together = crate::engine::observe_batch::observe_many(&host, &mut args).await;
    for (a, b) in alone.iter().zip(together) {
        assert_eq!(*a, b.unwrap());
    }
    assert_eq!(alone[1].removed.len(), 1, "the removed net1 of 101");
    assert!(alone[0].removed.is_empty() && alone[2].removed.is_empty());
}

/// The rows of step `name` in run `r` with `outcome`.
fn count(r: &Run<'_>, name: &str, outcome: Outcome) -> usize {
    steps_of(r)
        .iter()
        .filter(|x| x.0 == name && x.1 == outcome)
        .count()
}

#[tokio::test(start_paused = true)]
async fn a_batch_wait_that_overruns_the_forward_budget_polls_on_and_converges_everyone() {
    let fake = host_of_three();
    // ovs-vswitchd needs 8 s to release the batch's devices: past the forward part of the
    // 10 s deadline (7.5 s), within the batch's (8.3 s).
    fake.fail(Op::WaitCurCfg, 1, Fault::Slow(Duration::from_secs(8)));
    let host = fake.host(
        Duration::from_secs(5),
        Deadline::from_now(Duration::from_secs(10)),
    );
    let jobs = jobs();
    let mut runs = runs(&jobs);
    let (_dir, mut log) = log();
    phases(
        &host,
        &MeshSection::default(),
        RunOptions::default(),
        &mut runs,
        Some(&mut log),
    )
    .await;
    for (r, v) in runs.iter().zip(VMIDS) {
        assert!(converged(&fake, v), "{v}: {:?}", fake.calls());
        assert!(r.done.as_ref().unwrap().is_ok(), "{v}: {:?}", r.done);
        assert_eq!(count(r, "ovs.wait", Outcome::Ok), 2, "{v}");
        assert!(
            !steps_of(r).iter().any(|x| x.0.starts_with("rollback")),
            "{v}: {:?}",
            steps_of(r)
        );
    }
    assert_eq!(fake.wait_timeouts().len(), 2, "{:?}", fake.calls());
}

#[tokio::test(start_paused = true)]
async fn a_batch_whose_wait_fails_is_rolled_back_in_one_go_not_one_wait_per_container() {
    let fake = host_of_three();
    // ovs-vswitchd never applies the batch's deletes.
    fake.fail(Op::WaitCurCfg, 1, Fault::Timeout);
    let host = fake.host(
        Duration::from_secs(5),
        Deadline::from_now(Duration::from_secs(10)),
    );
    let jobs = jobs();
    let mut runs = runs(&jobs);
    let (_dir, mut log) = log();
    phases(
        &host,
        &MeshSection::default(),
        RunOptions::default(),
        &mut runs,
        Some(&mut log),
    )
    .await;
    for (r, v) in runs.iter().zip(VMIDS) {
        // PVE's plumbing is back: its veth name and PVE's Port with PVE's tag.
        assert!(fake.link(&format!("veth{v}i0")).is_some(), "{v}");
        assert_eq!(
            fake.port(&format!("veth{v}i0")).and_then(|p| p.tag),
            Some(10)
        );
        assert!(fake.port(&format!("vi{v}")).is_none(), "{v}");
        let e = r.done.as_ref().unwrap().as_ref().unwrap_err();
        assert!(e.to_string().contains("next_cfg"), "{v}: {e}");
        let back = format!("rolled back: PVE's port veth{v}i0 is back on ovsbr0");
        assert!(e.to_string().contains(&back), "{v}: {e}");
        assert_eq!(e.to_string().matches("rolled back").count(), 1, "{v}: {e}");
        assert_eq!(count(r, "ovs.wait", Outcome::Failed), 1, "{v}");
        assert_eq!(count(r, "rollback.add-port", Outcome::Ok), 1, "{v}");
    }
    // The batch's wait and ONE wait for the rollback of all three (not one per container).
    let waits = fake.wait_timeouts();
    assert_eq!(waits.len(), 2, "{:?}", fake.calls());
    // The batch's wait polled until the last sixth of the deadline, the rollback's within it.
    assert!(waits[0] > Duration::from_millis(7_500), "{waits:?}");
    assert!(waits[1] <= Duration::from_millis(840), "{waits:?}");
}
