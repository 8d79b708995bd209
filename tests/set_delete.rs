//! `op-agent set` end to end for a hot-remove (`--delete net1` of a managed NIC) and for a
//! hand-back that fails part-way (test builds' `OP_AGENT_FAILPOINT=fail:release.add-port` /
//! `fail:release.rename`), with `pct` = `pve-sim` (pve-container `vmconfig_hotplug_pending`:
//! `veth_delete` by PVE's name, `update_net`) on real LXC containers and a private OVS, the
//! watch service running. Root only (fails, never skips). Run:
//! `cargo build -p pve-integration && cargo test --features failpoints --test set_delete`.

use op_testkit::{CmdOutput, TestHost};
use std::time::Duration;

fn conf(host: &TestHost) -> String {
    std::fs::read_to_string(host.pve_root().pve_conf_path(100)).unwrap()
}

fn set(host: &TestHost, path: &str, args: &[&str], env: &[(&str, &str)]) -> CmdOutput {
    let mut a = vec!["set", "100"];
    a.extend_from_slice(args);
    let out = host.agent_cmd(&a).env("PATH", path).envs(env).run();
    eprintln!(
        "op-agent {a:?}: exit {:?}: {}",
        out.code(),
        out.text().trim()
    );
    out
}

/// Neither name of net1 is left: no link, no Port on any bridge.
fn net1_gone(host: &TestHost) -> Result<(), String> {
    for n in ["vi100i1", "veth100i1"] {
        if host.has_link(n) {
            return Err(format!("link {n} is left"));
        }
        if host.ports("ovsbr0").iter().any(|p| p == n) {
            return Err(format!("Port {n} is left"));
        }
    }
    let all = host.vsctl_ok(&["--bare", "--columns=name", "list", "Port"]);
    if all.contains("100i1") {
        return Err(format!("a Port row for net1 is left: {all}"));
    }
    Ok(())
}

#[test]
fn set_delete_net1_hot_removes_a_managed_nic() {
    let host = TestHost::new("set-del");
    let path = host.pve_root().pct_shim();
    host.manage_two_vlans(100);
    host.sim_ok(&["start", "100"]);
    host.wait_converged(100, "vi100", 10, Duration::from_secs(5));
    host.wait_converged(100, "vi100i1", 20, Duration::from_secs(5));
    let mut w = host.spawn_watch(&[]);

    let out = set(&host, &path, &["--delete", "net1"], &[]);
    assert_eq!(out.code(), Some(0), "{}", out.text());
    assert!(
        !conf(&host)
            .lines()
            .take_while(|l| !l.starts_with('['))
            .any(|l| l.starts_with("net1:")),
        "{}",
        conf(&host)
    );
    assert!(
        !conf(&host).contains("[pve:pending]"),
        "nothing left pending: {}",
        conf(&host)
    );
    net1_gone(&host).unwrap();
    // net0 untouched, and the watch neither re-adds net1 nor disturbs net0.
    host.converged(100, "vi100", 10).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    net1_gone(&host).unwrap();
    host.converged(100, "vi100", 10).unwrap();
    let steps: Vec<(String, String)> = host
        .audit_rows_for(100)
        .into_iter()
        .filter(|r| r.phase == "set")
        .map(|r| (r.step, r.outcome))
        .collect();
    for s in [("release.rename", "ok"), ("set.pct", "ok")] {
        assert!(
            steps.iter().any(|(st, o)| st == s.0 && o == s.1),
            "{s:?} in {steps:?}"
        );
    }
    assert!(w.stop().is_some_and(|s| s.success()), "{}", w.log_text());
    host.assert_audit_intact("after set --delete net1");
}

/// This test binary's `failpoints` feature (op-agent is built with the same features).
fn built_with_failpoints() -> bool {
    cfg!(feature = "failpoints")
}

#[test]
fn set_whose_hand_back_fails_part_way_converges_back_with_its_own_exit_code() {
    assert!(
        built_with_failpoints(),
        "build the tests with --features failpoints (make test does)"
    );
    let host = TestHost::new("set-fail");
    let path = host.pve_root().pct_shim();
    host.manage_two_vlans(100);
    host.sim_ok(&["start", "100"]);
    host.wait_converged(100, "vi100", 10, Duration::from_secs(5));
    host.wait_converged(100, "vi100i1", 20, Duration::from_secs(5));
    let net0 = conf(&host)
        .lines()
        .find_map(|l| l.strip_prefix("net0: ").map(str::to_string))
        .unwrap();
    let tag30 = net0.replace("tag=10", "tag=30");
    assert_ne!(net0, tag30);

    // Port deleted and renamed back, then PVE's Port cannot be added; or the rename fails
    // after op-agent's Port is deleted.
    for fp in ["fail:release.add-port", "fail:release.rename"] {
        let before = conf(&host);
        let out = set(
            &host,
            &path,
            &["-net0", &tag30],
            &[("OP_AGENT_FAILPOINT", fp)],
        );
        assert_eq!(out.code(), Some(71), "{fp}: {}", out.text());
        let err = out.stderr_text();
        assert!(
            err.contains("handing a NIC back to PVE failed")
                && err.contains("pct was not run")
                && err.contains("converged on the values the PVE conf holds"),
            "{fp}: {err}"
        );
        assert_eq!(conf(&host), before, "{fp}: pct must not have run");
        // Back on op-agent's name, Port and the conf's values (tag 10); net1 untouched.
        host.converged(100, "vi100", 10)
            .unwrap_or_else(|e| panic!("{fp}: {e}"));
        assert!(!host.has_link("veth100i0"), "{fp}");
        assert!(
            !host.ports("ovsbr0").contains(&"veth100i0".to_string()),
            "{fp}"
        );
        host.converged(100, "vi100i1", 20)
            .unwrap_or_else(|e| panic!("{fp}: {e}"));
        let step = fp.strip_prefix("fail:").unwrap();
        let rows = host.audit_rows_for(100);
        assert!(
            rows.iter()
                .any(|r| r.phase == "set" && r.step == step && r.outcome == "failed"),
            "{fp}: no failed {step} row"
        );
        assert!(
            rows.iter()
                .any(|r| r.phase == "set" && r.step == "set.pct" && r.outcome == "skipped"),
            "{fp}: no skipped set.pct row"
        );
    }
    // Without the failpoint the same edit goes through.
    let out = set(&host, &path, &["-net0", &tag30], &[]);
    assert_eq!(out.code(), Some(0), "{}", out.text());
    host.converged(100, "vi100", 30).unwrap();
    host.assert_audit_intact("after failed hand-backs");
}
