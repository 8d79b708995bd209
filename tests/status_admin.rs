//! `op-agent status` as an admin reads it: 80 columns, a HOOK column, `stopped` for a stopped
//! container, how to enroll on an empty host, `--output-format json`, and a non-zero exit when
//! OVSDB is down. Root only (private OVS, real LXC through pve-sim).
//! Run: `cargo build --workspace && cargo test --test status_admin`.

use op_testkit::{PveConf, TestHost};
use serde_json::Value;

#[test]
fn status_table_json_and_ovsdb_down() {
    let host = TestHost::new("st-adm");
    // Empty host: how to enroll, exit 0.
    let o = host.agent(&["status"]);
    assert_eq!(o.code(), Some(0), "{}", o.text());
    assert!(o.stdout_text().contains("op-agent enroll <vmid>"), "{}", o.text());

    host.manage_bridged(100, PveConf::bridged(100, 10));
    host.sim_ok(&["start", "100"]);
    // 101: managed but without op-agent's hookscript, never started.
    host.write_pve_conf(
        101,
        "hostname: ct101\nnet0: name=eth0,bridge=ovsbr0,hwaddr=BC:24:11:00:03:65,type=veth\n",
    );
    host.manage(101, "network_type = \"bridge\"\n");
    let o = host.agent(&["status"]);
    let out = o.stdout_text();
    assert_eq!(o.code(), Some(0), "{}", o.text());
    for l in out.lines() {
        assert!(l.len() <= 80, "{} columns: {l:?}", l.len());
    }
    let line = |v: &str| {
        out.lines()
            .find(|l| l.starts_with(v))
            .unwrap_or_else(|| panic!("no {v} in {out}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    let header = line("VMID");
    assert_eq!(
        header,
        ["VMID", "MODE", "HOOK", "NIC", "LINK", "BRIDGE", "TAG", "SEQ", "STATE"]
    );
    let r100 = line("100");
    assert_eq!((r100[2], r100[4], r100[8]), ("yes", "vi100", "ok"), "{out}");
    let r101 = line("101");
    assert_eq!((r101[2], r101[8]), ("no", "stopped"), "{out}");

    for fmt in ["json", "json-pretty"] {
        let o = host.agent(&["status", "--output-format", fmt]);
        assert_eq!(o.code(), Some(0), "{}", o.text());
        let v: Value = serde_json::from_str(&o.stdout_text()).unwrap();
        let c = &v["containers"][0];
        assert_eq!(c["hookscript"], "local:snippets/op-hook", "{v}");
        assert_eq!(v["containers"][1]["nics"][0]["state"], "stopped", "{v}");
        assert_eq!(fmt == "json-pretty", o.stdout_text().lines().count() > 1);
    }

    // OVSDB down: the states are unknown and the exit code says so.
    host.vsctl_ok(&["show"]);
    let mut cfg = host.config();
    cfg.ovsdb_socket = Some(host.root().join("no-such-db.sock"));
    cfg.ovsdb_timeout_ms = Some(300);
    host.set_config(&cfg);
    let o = host.agent(&["status"]);
    assert_eq!(o.code(), Some(69), "{}", o.text());
    assert!(o.stderr_text().contains("OVSDB cannot be reached"), "{}", o.text());
    // Also with nothing managed.
    std::fs::remove_file(host.root().join("etc/op-agent/containers/100.toml")).unwrap();
    std::fs::remove_file(host.root().join("etc/op-agent/containers/101.toml")).unwrap();
    let o = host.agent(&["status"]);
    assert_eq!(o.code(), Some(69), "{}", o.text());
}
