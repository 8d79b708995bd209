//! Mass repair with `op-agent watch` running, on a private OVS: 20 managed "running" containers
//! (veth pairs plugged as PVE's `tap_plug` does, no LXC: each container's lxc monitor socket
//! `@<lxcpath>/<vmid>/command`, which pve-container `check_running` looks for, is bound in the
//! host's netns). Every owned Port deleted at once (as `ifreload -a` does) → all 20 back with
//! ofport > 0 within 3 s, in a handful of ovs-vswitchd reconfigurations (a batch), each
//! container with its own audit run (intent before the change, outcome after); then every veth
//! re-created at once → all 20 converged again. The times are printed, not asserted (`make
//! bench` measures them). Root only.
//!
//! Run: `cargo build --workspace && cargo test --test mass_repair`.

use op_testkit::{PveConf, TestHost};
use std::time::{Duration, Instant};

fn next_cfg(host: &TestHost) -> i64 {
    host.ovs_get("Open_vSwitch", ".", "next_cfg")
        .trim_matches('"')
        .parse()
        .unwrap()
}

fn now_ms() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    i64::try_from(d.as_millis()).unwrap()
}

/// `ts` (Unix ms) of the last `ovs.check ok` row after `from`.
fn last_check(host: &TestHost, from: usize) -> i64 {
    host.audit_rows()[from..]
        .iter()
        .filter(|r| r.step == "ovs.check" && r.outcome == "ok")
        .map(|r| r.ts)
        .max()
        .unwrap_or(0)
}

fn wait_all(host: &TestHost, vmids: &[u32], limit: Duration) -> Duration {
    let t = Instant::now();
    for v in vmids {
        host.wait_converged(*v, &format!("vi{v}"), 10, limit.saturating_sub(t.elapsed()));
    }
    t.elapsed()
}

/// Each vmid's rows after `from` of phase `watch`: one run with an intent row before its
/// `ovs.add-port` and `ovs.check` ok rows; every container a run of its own.
fn assert_own_runs(host: &TestHost, from: usize, vmids: &[u32]) {
    let rows = host.audit_rows();
    let mut runs = std::collections::BTreeSet::new();
    for v in vmids {
        let mine: Vec<_> = rows[from..]
            .iter()
            .filter(|r| r.vmid == i64::from(*v) && r.phase == "watch")
            .collect();
        let intent = mine
            .iter()
            .find(|r| r.step == "run.intent")
            .unwrap_or_else(|| panic!("{v}: no intent row: {mine:?}"));
        for step in ["ovs.add-port", "ovs.check"] {
            let r = mine
                .iter()
                .find(|r| r.step == step && r.outcome == "ok" && r.run_id == intent.run_id)
                .unwrap_or_else(|| panic!("{v}: no {step} ok in run {}", intent.run_id));
            assert!(intent.seq < r.seq, "{v}: write-ahead");
        }
        assert!(runs.insert(intent.run_id.clone()), "{v}: a run of its own");
    }
}

#[test]
fn twenty_containers_come_back_as_one_batch_after_ifreload_and_veth_recreation() {
    let host = TestHost::new("mass");
    let vmids: Vec<u32> = (100..120).collect();
    for v in &vmids {
        host.manage_bridged(*v, PveConf::bridged(*v, 10));
        host.plug_like_pve(*v);
    }
    let _running = host.bind_running(&vmids);
    let mut watch = host.spawn_watch(&[]);
    let s = wait_all(&host, &vmids, Duration::from_secs(20));
    eprintln!("start-up reconcile of 20: {} ms", s.as_millis());

    // ifreload -a: every owned Port deleted in one transaction.
    let before = host.audit_rows().len();
    let cfg0 = next_cfg(&host);
    let t_del = now_ms();
    let mut del = vec![];
    for v in &vmids {
        del.extend(["--".to_string(), "del-port".into(), format!("vi{v}")]);
    }
    host.vsctl_ok(&del.iter().map(String::as_str).collect::<Vec<_>>());
    wait_all(&host, &vmids, Duration::from_secs(20));
    let bumps = next_cfg(&host) - cfg0;
    eprintln!(
        "20 ports back: the last ovs.check row {} ms after the deletion, {bumps} next_cfg bumps",
        last_check(&host, before) - t_del
    );
    // The deletion itself, then op-agent's inserts: batched, not one per container.
    assert!(bumps <= 5, "{bumps} next_cfg bumps for 20 repairs");
    assert_own_runs(&host, before, &vmids);

    // A mass in-guest reboot: every veth pair goes, PVE plugs a new veth<vmid>i0.
    let before = host.audit_rows().len();
    for v in &vmids {
        host.ip(&["link", "del", &format!("vi{v}")]);
    }
    for v in &vmids {
        host.plug_like_pve(*v);
    }
    let t_plug = now_ms();
    wait_all(&host, &vmids, Duration::from_secs(20));
    eprintln!(
        "20 re-created veths: the last ovs.check row {} ms after the last plug",
        last_check(&host, before) - t_plug
    );
    assert_own_runs(&host, before, &vmids);

    if std::env::var_os("MASS_LOG").is_some() {
        let log = std::fs::read_to_string(host.watch_log()).unwrap_or_default();
        eprintln!(
            "{}",
            log.lines()
                .filter(|l| l.contains("batch of"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    host.assert_audit_intact("after the mass repairs");
    let st = watch.stop().expect("watch exits on SIGTERM");
    assert!(st.success(), "watch exit status {st:?}");
}
