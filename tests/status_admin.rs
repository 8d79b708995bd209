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
    assert!(
        o.stdout_text().contains("op-agent enroll <vmid>"),
        "{}",
        o.text()
    );

    host.manage_bridged(100, PveConf::bridged(100, 10));
    host.sim_ok(&["start", "100"]);
    // 101: enrolled, never started.
    host.write_pve_conf(
        101,
        "hookscript: local:snippets/op-hook\nhostname: ct101\nnet0: name=eth0,bridge=ovsbr0,hwaddr=BC:24:11:00:03:65,type=veth\n",
    );
    host.manage(101, "network_type = \"bridge\"\n");
    // 102: a TOML, but no op-agent hookscript in its conf: not managed, not listed.
    host.write_pve_conf(
        102,
        "hostname: ct102\nnet0: name=eth0,bridge=ovsbr0,hwaddr=BC:24:11:00:03:66,type=veth\n",
    );
    host.manage(102, "network_type = \"bridge\"\n");
    // 103: running, its NIC left to PVE (`manage = false`): skipped, not "ok".
    host.write_pve_conf(103, PveConf::bridged(103, 10));
    host.manage(
        103,
        "network_type = \"bridge\"\n\n[[nic]]\nnet = 0\nmanage = false\n",
    );
    host.sim_ok(&["start", "103"]);
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
    assert_eq!((r101[2], r101[8]), ("yes", "stopped"), "{out}");
    assert!(!out.lines().any(|l| l.starts_with("102")), "{out}");
    let r103 = line("103");
    assert_eq!((r103[4], r103[8]), ("veth103i0", "skipped"), "{out}");
    assert!(
        out.lines()
            .any(|l| l == "  103 net0: left to PVE (manage = false)"),
        "{out}"
    );
    // `status > /dev/full`: one line and EX_IOERR (74), not a panic (70).
    let (code, err) = host.agent_cmd(&["status"]).run_to_dev_full();
    assert_eq!(
        (code, err.trim()),
        (
            Some(74),
            "op-agent status: cannot write to stdout: No space left on device (os error 28)"
        ),
        "{err}"
    );

    for fmt in ["json", "json-pretty"] {
        let o = host.agent(&["status", "--output-format", fmt]);
        assert_eq!(o.code(), Some(0), "{}", o.text());
        let v: Value = serde_json::from_str(&o.stdout_text()).unwrap();
        let c = &v["containers"][0];
        assert_eq!(c["hookscript"], "local:snippets/op-hook", "{v}");
        assert_eq!(v["containers"][1]["nics"][0]["state"], "stopped", "{v}");
        assert_eq!(fmt == "json-pretty", o.stdout_text().lines().count() > 1);
    }

    // Two running: `apply --all` below converges them as one batch.
    host.sim_ok(&["start", "101"]);
    // OVSDB hung (ovsdb-server frozen): unknown too, exit 69, and one wait of timeout_ms for
    // the whole listing, not one per container.
    let mut cfg = host.config();
    cfg.ovsdb_timeout_ms = Some(1000);
    host.set_config(&cfg);
    host.ovs()
        .signal("ovsdb-server", nix::sys::signal::Signal::SIGSTOP);
    let o = host.agent(&["status"]);
    // `check --all` and `config check --live` alike: one wait, the others not checked.
    let checks: Vec<_> = [&["check", "--all"][..], &["config", "check", "--live"][..]]
        .iter()
        .map(|a| (a.to_vec(), host.agent(a)))
        .collect();
    host.ovs()
        .signal("ovsdb-server", nix::sys::signal::Signal::SIGCONT);
    for (args, c) in &checks {
        // 75 like `check <vmid>` for the same failure (OVSDB did not answer in time);
        // `config check` reports this host's file errors (78) first.
        let want = if args[0] == "check" { 75 } else { 78 };
        assert_eq!(c.code(), Some(want), "{args:?}: {}", c.text());
        assert!(
            c.took < std::time::Duration::from_millis(2500),
            "{args:?}: 3 containers, one wait of 1000 ms: took {:?}\n{}",
            c.took,
            c.text()
        );
        assert!(
            c.stdout_text().contains("not checked: the same failure as"),
            "{args:?}: {}",
            c.text()
        );
        if args[0] == "check" {
            // None was checked: the first container's failure is the host's.
            assert!(
                c.stdout_text().contains("0 checked: 0 ok, 0 with findings"),
                "{}",
                c.text()
            );
        }
    }
    assert_eq!(o.code(), Some(69), "{}", o.text());
    assert!(
        o.stderr_text().contains("OVSDB cannot be reached"),
        "{}",
        o.text()
    );
    assert!(
        o.took < std::time::Duration::from_millis(2500),
        "3 containers, one wait of 1000 ms: took {:?}",
        o.took
    );
    // OVSDB down: the states are unknown and the exit code says so.
    host.vsctl_ok(&["show"]);
    let mut cfg = host.config();
    cfg.ovsdb_socket = Some(host.root().join("no-such-db.sock"));
    cfg.ovsdb_timeout_ms = Some(300);
    host.set_config(&cfg);
    let o = host.agent(&["status"]);
    assert_eq!(o.code(), Some(69), "{}", o.text());
    assert!(
        o.stderr_text().contains("OVSDB cannot be reached"),
        "{}",
        o.text()
    );
    // `apply` and `apply --all` (the batch path): the same 69, the socket named.
    for args in [&["apply", "100"][..], &["apply", "--all"][..]] {
        let o = host.agent(args);
        assert_eq!(o.code(), Some(69), "{args:?}: {}", o.text());
        assert!(
            o.stderr_text().contains("no-such-db.sock"),
            "{args:?}: {}",
            o.text()
        );
    }
    // Also with nothing managed.
    std::fs::remove_file(host.root().join("etc/op-agent/containers/100.toml")).unwrap();
    std::fs::remove_file(host.root().join("etc/op-agent/containers/101.toml")).unwrap();
    std::fs::remove_file(host.root().join("etc/op-agent/containers/102.toml")).unwrap();
    let o = host.agent(&["status"]);
    assert_eq!(o.code(), Some(69), "{}", o.text());
}

fn json_of(host: &TestHost, args: &[&str], code: i32) -> Value {
    let o = host.agent(args);
    assert_eq!(o.code(), Some(code), "{args:?}: {}", o.text());
    serde_json::from_str(&o.stdout_text())
        .unwrap_or_else(|e| panic!("{args:?}: not JSON: {e}: {}", o.stdout_text()))
}

/// `--output-format json` for check, check --all, config check, gc and apply: one JSON
/// document on stdout, the same exit codes as the text.
#[test]
fn json_output_of_check_config_check_gc_apply() {
    let host = TestHost::new("st-json");
    host.manage_bridged(100, PveConf::bridged(100, 10));
    host.sim_ok(&["start", "100"]);
    fn with<'a>(a: &[&'a str]) -> Vec<&'a str> {
        [a, &["--output-format", "json"][..]].concat()
    }

    let v = json_of(&host, &with(&["check", "100"]), 0);
    assert_eq!(
        (&v["vmid"], &v["state"], &v["running"]),
        (&Value::from(100), &Value::from("ok"), &Value::from(true)),
        "{v}"
    );
    let v = json_of(&host, &with(&["check", "--all"]), 0);
    assert_eq!(v["containers"][0]["state"], "ok", "{v}");
    assert!(v["warnings"].is_array(), "{v}");
    let v = json_of(&host, &with(&["config", "check"]), 0);
    assert_eq!(
        (&v["exit"], &v["errors"]),
        (&Value::from(0), &Value::from(0)),
        "{v}"
    );
    assert!(
        v["lines"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["level"] == "ok"),
        "{v}"
    );

    let v = json_of(&host, &with(&["apply", "100"]), 0);
    assert_eq!(v["containers"][0]["result"], "ok", "{v}");
    assert_eq!(v["containers"][0]["summary"], "nothing to change", "{v}");
    host.run_ok(&["ip", "link", "set", "vi100", "down"]);
    let v = json_of(&host, &with(&["apply", "--all", "--dry-run"]), 0);
    assert_eq!(
        v["containers"][0]["plans"][0][0], "net0: link.up vi100",
        "{v}"
    );

    // An owned row of a container that is not running: gc removes it.
    host.vsctl_ok(&[
        "add-port",
        "ovsbr0",
        "vi105",
        "--",
        "set",
        "Interface",
        "vi105",
        "type=internal",
        "--",
        "set",
        "Port",
        "vi105",
        "external_ids:owner=op-agent",
        "external_ids:vm-id=105",
    ]);
    let v = json_of(&host, &with(&["gc", "--dry-run"]), 0);
    assert_eq!(v["dry_run"], true);
    assert_eq!(
        (&v["ports"][0]["port"], &v["ports"][0]["result"]),
        (&Value::from("vi105"), &Value::from("would-remove")),
        "{v}"
    );
    let v = json_of(&host, &with(&["gc"]), 0);
    assert_eq!(v["ports"][0]["result"], "removed", "{v}");
    assert!(!host.ports("ovsbr0").contains(&"vi105".to_string()));
}
