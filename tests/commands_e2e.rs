//! End-to-end tests of `op-agent apply/check/status/query/gc` through `pve-sim` with
//! real LXC and a private OVS. Root only (fails, never skips).
//! Run: `cargo build -p pve-integration && cargo test --test commands_e2e`.

use op_testkit::{PveConf, TestHost};
use serde_json::Value;
use std::time::Duration;

/// `op-agent --config CFG ARGS` in the host: (exit code, stdout, stderr).
fn op_out(host: &TestHost, args: &[&str]) -> (i32, String, String) {
    let o = host.agent_cmd(args).config(host.agent_toml()).run();
    (o.code().unwrap_or(-1), o.stdout_text(), o.stderr_text())
}

fn check(host: &TestHost, vmid: &str) -> (i32, Vec<String>) {
    let (code, out, err) = op_out(host, &["check", vmid]);
    assert!(code == 0 || code == 1, "check {vmid}: {code} {out}{err}");
    (code, out.lines().map(str::to_string).collect())
}

fn apply(host: &TestHost, vmid: &str) {
    let (code, out, err) = op_out(host, &["apply", vmid]);
    assert_eq!(code, 0, "apply {vmid}: {out}{err}");
}

fn status_json(host: &TestHost) -> Value {
    let (code, out, err) = op_out(host, &["status", "--json"]);
    assert_eq!(code, 0, "status: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("status --json: {e}: {out}"))
}

fn container(v: &Value, id: u64) -> &Value {
    v["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["vmid"].as_u64() == Some(id))
        .unwrap_or_else(|| panic!("no {id} in {v}"))
}

#[test]
fn check_reports_each_kind_of_drift_and_apply_repairs_it() {
    let host = TestHost::new("c-drift");
    host.manage_bridged(100, PveConf::bridged(100, 10));
    host.manage_bridged(102, PveConf::bridged(102, 20)); // managed, never started
    host.sim_ok(&["start", "100"]);
    host.wait_converged(100, "vi100", 10, Duration::from_secs(1));
    assert_eq!(check(&host, "100").0, 0);

    let st = status_json(&host);
    let c = container(&st, 100);
    assert_eq!(c["mode"], "bridge");
    assert_eq!(c["running"], true);
    assert!(c["last_seq"].as_i64().unwrap() > 0, "{c}");
    let n = &c["nics"][0];
    assert_eq!(
        (&n["net"], &n["link"], &n["bridge"], &n["tag"], &n["state"]),
        (
            &Value::from(0),
            &Value::from("vi100"),
            &Value::from("ovsbr0"),
            &Value::from(10),
            &Value::from("ok")
        ),
        "{c}"
    );
    assert_eq!(container(&st, 102)["nics"][0]["state"], "stopped");
    assert_eq!(container(&st, 102)["running"], false);

    // 1. Tag changed behind op-agent's back.
    host.vsctl_ok(&["set", "Port", "vi100", "tag=20"]);
    let (code, lines) = check(&host, "100");
    assert_eq!(code, 1);
    assert!(
        lines.iter().any(|l| l.contains("tag is 20, want 10")),
        "{lines:?}"
    );
    let st = status_json(&host);
    assert_eq!(container(&st, 100)["nics"][0]["state"], "drift");
    apply(&host, "100");
    host.converged(100, "vi100", 10).unwrap();
    assert_eq!(check(&host, "100").0, 0);

    // 2. Port deleted.
    host.vsctl_ok(&["del-port", "vi100"]);
    let (code, lines) = check(&host, "100");
    assert_eq!(code, 1);
    assert!(
        lines.iter().any(|l| l.contains("no OVS port vi100")),
        "{lines:?}"
    );
    apply(&host, "100");
    host.converged(100, "vi100", 10).unwrap();

    // 3. Link renamed back to PVE's name.
    host.run_ok(&["ip", "link", "set", "vi100", "down"]);
    host.run_ok(&["ip", "link", "set", "vi100", "name", "veth100i0"]);
    host.run_ok(&["ip", "link", "set", "veth100i0", "up"]);
    let (code, lines) = check(&host, "100");
    assert_eq!(code, 1);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("link is named veth100i0") && l.contains("want vi100")),
        "{lines:?}"
    );
    apply(&host, "100");
    host.converged(100, "vi100", 10).unwrap();
    assert_eq!(check(&host, "100").0, 0);

    // 4. Trunks and an external_id changed. (Not mtu_request: OVS lowers the netdev bridge's
    // own MTU to its smallest port's, and the wanted mtu_request follows the bridge MTU as
    // PVE's read_bridge_mtu does.)
    host.vsctl_ok(&["set", "Port", "vi100", "trunks=30"]);
    host.vsctl_ok(&["set", "Port", "vi100", "external_ids:vm-id=999"]);
    let (_, lines) = check(&host, "100");
    assert!(
        lines.iter().any(|l| l.contains("trunks are [30], want []")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("external_ids:vm-id")),
        "{lines:?}"
    );

    let rows = host.audit_rows();
    assert!(
        rows.iter()
            .filter(|r| {
                r.phase == "apply"
                    && (r.step == "ovs.add-port" || r.step == "ovs.replace-port")
                    && r.outcome == "ok"
            })
            .count()
            >= 3,
        "{rows:?}"
    );
    // check and status change nothing: no rows of theirs.
    assert!(rows
        .iter()
        .all(|r| r.phase != "check" && r.phase != "status"));
    // apply on a container that is not running refuses.
    let (code, _, err) = op_out(&host, &["apply", "102"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not running"), "{err}");
}

#[test]
fn gc_removes_only_owned_stale_rows_and_query_parses() {
    let host = TestHost::new("c-gc");
    host.manage_bridged(100, PveConf::bridged(100, 10));
    host.manage_bridged(103, PveConf::bridged(103, 10)); // managed, not running
    host.sim_ok(&["start", "100"]);
    host.wait_converged(100, "vi100", 10, Duration::from_secs(1));

    // Foreign rows: one working (internal), one whose device is missing (error).
    host.vsctl_ok(&[
        "add-port",
        "ovsbr0",
        "foreign0",
        "--",
        "set",
        "Interface",
        "foreign0",
        "type=internal",
    ]);
    let _ = host.vsctl(&["add-port", "ovsbr0", "ghost0"]);
    // Owned rows: one for a container that is not running, one with an Interface error.
    host.vsctl_ok(&[
        "add-port",
        "ovsbr0",
        "vi103",
        "--",
        "set",
        "Interface",
        "vi103",
        "type=internal",
        "--",
        "set",
        "Port",
        "vi103",
        "external_ids:owner=op-agent",
        "external_ids:vm-id=103",
    ]);
    let _ = host.vsctl(&[
        "add-port",
        "ovsbr0",
        "vi100i7",
        "--",
        "set",
        "Port",
        "vi100i7",
        "external_ids:owner=op-agent",
        "external_ids:vm-id=100",
    ]);
    let before = host.ports("ovsbr0");
    for p in ["foreign0", "ghost0", "vi103", "vi100i7", "vi100"] {
        assert!(before.contains(&p.to_string()), "{p} in {before:?}");
    }
    assert_ne!(host.ovs_get("Interface", "ghost0", "error"), "[]");

    // agent.toml naming a `[pve] root` without etc/pve: every command that reads this node's
    // containers refuses (78) instead of seeing "no container running" (gc would then remove
    // every running container's Port).
    let good = host.config();
    host.set_config(&op_testkit::AgentToml {
        pve_root: Some(host.root().join("no-such-root")),
        ..host.config()
    });
    for args in [
        &["gc"][..],
        &["gc", "--dry-run"],
        &["status"],
        &["check", "--all"],
        &["apply", "--all"],
        &["release", "--all"],
    ] {
        let (code, out, err) = op_out(&host, args);
        assert_eq!(code, 78, "{args:?}: {out}{err}");
        assert!(err.contains("has no etc/pve"), "{args:?}: {err}");
    }
    assert_eq!(host.ports("ovsbr0"), before, "nothing removed");
    host.set_config(&good);

    let (code, out, err) = op_out(&host, &["gc", "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("vi103: would remove") && out.contains("vi100i7: would remove"),
        "{out}"
    );
    assert!(
        !out.contains("foreign0") && !out.contains("ghost0") && !out.contains("vi100:"),
        "{out}"
    );
    assert_eq!(host.ports("ovsbr0"), before, "dry run changes nothing");

    let next_cfg = || -> i64 {
        host.ovs_get("Open_vSwitch", ".", "next_cfg")
            .trim_matches('"')
            .parse()
            .unwrap()
    };
    let cfg0 = next_cfg();
    let (code, out, err) = op_out(&host, &["gc"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(next_cfg() - cfg0, 1, "both rows deleted in one transaction");
    let after = host.ports("ovsbr0");
    for p in ["foreign0", "ghost0", "vi100"] {
        assert!(after.contains(&p.to_string()), "{p} survives: {after:?}");
    }
    for p in ["vi103", "vi100i7"] {
        assert!(!after.contains(&p.to_string()), "{p} removed: {after:?}");
    }
    host.converged(100, "vi100", 10).unwrap();
    let rows = host.audit_rows();
    assert_eq!(
        rows.iter()
            .filter(|r| r.phase == "gc" && r.step == "ovs.del-port" && r.outcome == "ok")
            .count(),
        2,
        "{rows:?}"
    );

    // query --plugin lxc, parsed.
    let (code, out, err) = op_out(&host, &["query", "--plugin", "lxc"]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let cs = v["containers"].as_array().unwrap();
    assert_eq!(cs.len(), 2, "{v}");
    assert_eq!(
        cs[0],
        serde_json::json!({"id":"100","veth":"vi100","bridge":"ovsbr0","running":true,
                           "properties":{"network_type":"bridge"}})
    );
    assert_eq!(cs[1]["id"], "103");
    assert_eq!(cs[1]["running"], false);
    let (code, _, _) = op_out(&host, &["query", "--plugin", "kvm"]);
    assert_eq!(code, 64);
}
