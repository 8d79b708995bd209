//! End-to-end tests of `op-agent watch` through `pve-sim` with real LXC and a private
//! OVS: in-guest reboot, OVS restart, hook/watch races. Root only (fails, never skips).
//! Run: `cargo build -p pve-integration && cargo test --test watch_e2e`.

use op_testkit::{bridged_ip, PveConf, TestHost};
use std::time::{Duration, Instant};

/// Waits until the audit log has a `watch` row for `vmid` (the start-up reconcile ran).
fn wait_watch_row(host: &TestHost, vmid: i64, after: usize, limit: Duration) {
    let t = Instant::now();
    while t.elapsed() < limit {
        let rows = host.audit_rows();
        if rows[after.min(rows.len())..]
            .iter()
            .any(|r| r.vmid == vmid && r.phase == "watch")
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no watch audit row for {vmid} within {limit:?}");
}

#[test]
fn in_guest_reboot_with_watch_running_brings_vi100_back_within_2s() {
    let host = TestHost::new("w-reboot");
    host.manage_bridged(100, PveConf::bridged(100, 10));
    host.manage_bridged(101, PveConf::bridged(101, 10));
    host.sim_ok(&["start", "100"]);
    host.sim_ok(&["start", "101"]);
    host.wait_converged(100, "vi100", 10, Duration::from_secs(1));
    let mut w = host.spawn_watch(&[]);
    wait_watch_row(&host, 100, 0, Duration::from_secs(10));
    wait_watch_row(&host, 101, 0, Duration::from_secs(10));
    let before = host.audit_rows().len();
    let ifindex = host.link("vi100").unwrap()["ifindex"].clone();

    host.sim_ok(&["reboot", "100"]);
    let took = host.wait_converged(100, "vi100", 10, Duration::from_secs(2));
    eprintln!(
        "vi100 back {} ms after pve-sim reboot returned",
        took.as_millis()
    );
    assert_ne!(
        host.link("vi100").unwrap()["ifindex"],
        ifindex,
        "a new link"
    );
    let rows = host.audit_rows();
    let new = &rows[before..];
    assert!(
        new.iter().any(|r| r.vmid == 100
            && r.phase == "watch"
            && r.step == "link.rename"
            && r.outcome == "ok"),
        "audit rows after the reboot: {new:?}"
    );
    assert!(
        new.iter().all(|r| r.phase == "watch"),
        "no hook phase runs on an in-guest reboot: {new:?}"
    );
    assert!(host.ping(100, &bridged_ip(101)), "traffic flows");
    let st = w.stop().expect("watch exits on SIGTERM");
    assert!(st.success(), "watch exit status {st:?}: {}", w.log_text());
}

#[test]
fn ovs_restart_watch_reconnects_and_replugs_within_5s() {
    let host = TestHost::new("w-ovs");
    host.manage_bridged(100, PveConf::bridged(100, 10));
    host.manage_bridged(101, PveConf::bridged(101, 20));
    host.sim_ok(&["start", "100"]);
    host.sim_ok(&["start", "101"]);
    let mut w = host.spawn_watch(&[]);
    wait_watch_row(&host, 101, 0, Duration::from_secs(10));

    host.ovs().restart_fresh(&["ovsbr0"]);
    assert!(
        !host.ports("ovsbr0").contains(&"vi100".to_string()),
        "the fresh database has no op-agent rows"
    );
    let t = Instant::now();
    host.wait_converged(100, "vi100", 10, Duration::from_secs(5));
    host.wait_converged(
        101,
        "vi101",
        20,
        Duration::from_secs(5).saturating_sub(t.elapsed()),
    );
    eprintln!(
        "both ports right {} ms after OVS came back",
        t.elapsed().as_millis()
    );
    assert!(
        w.log_text().contains("ovsdb reconnected"),
        "{}",
        w.log_text()
    );
    let st = w.stop().expect("watch exits on SIGTERM");
    assert!(st.success(), "watch exit status {st:?}");
}

#[test]
fn hook_and_watch_racing_end_in_one_correct_state() {
    let host = TestHost::new("w-race");
    host.manage_bridged(100, PveConf::bridged(100, 10));
    let _w = host.spawn_watch(&[]);
    std::thread::sleep(Duration::from_millis(300));
    for i in 0..6 {
        // Start: the veth appears (watch reacts) while pve-sim runs the post-start hook.
        let out = host.sim(&["start", "100"]);
        assert!(
            out.status.success(),
            "round {i}: start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        host.wait_converged(100, "vi100", 10, Duration::from_secs(3));
        // Let any late watch run finish, then the state must still be the one correct state.
        std::thread::sleep(Duration::from_millis(300));
        host.converged(100, "vi100", 10)
            .unwrap_or_else(|e| panic!("round {i}: {e}"));
        let o = host
            .agent_cmd(&["check", "100"])
            .config(host.agent_toml())
            .run();
        let (code, out, err) = (o.code().unwrap_or(-1), o.stdout_text(), o.stderr_text());
        assert_eq!(code, 0, "round {i}: check: {out}{err}");
        if i % 2 == 1 {
            // In-guest reboot: only watch acts, with a hook-less restart racing nothing.
            host.sim_ok(&["reboot", "100"]);
            host.wait_converged(100, "vi100", 10, Duration::from_secs(3));
        }
        host.sim_ok(&["stop", "100"]);
        let owned = host.vsctl_ok(&[
            "--columns=name",
            "find",
            "Port",
            "external_ids:owner=op-agent",
        ]);
        assert!(
            owned.is_empty(),
            "round {i}: owned rows after stop: {owned}"
        );
    }
    let rows = host.audit_rows();
    assert!(rows.iter().any(|r| r.phase == "post-start"));
    assert!(rows.iter().any(|r| r.phase == "watch"));
}
