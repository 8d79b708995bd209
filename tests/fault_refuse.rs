//! refusals: veth missing at post-start, a foreign link or a foreign OVS port holding
//! op-agent's name (refused, never renamed or deleted), bad interface names, unsafe config
//! file ownership/modes, and arguments validated before anything is read.

use op_testkit::{AgentToml, Nic, PveConf, PveRoot, TestHost};
use std::os::unix::fs::PermissionsExt;

#[test]
fn veth_missing_at_post_start_fails_with_a_row() {
    let host = TestHost::new("f-noveth");
    host.manage_bridged(100, PveConf::bridged(100, 10));
    let (code, err, _) = host.hook(100, "post-start").run().exit_stderr_took();
    assert_ne!(code, Some(0), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("veth100i0"), "{err}");
    assert!(host.ports("ovsbr0").is_empty());
    assert!(!host.has_link("vi100"));
    let r = host.audit_rows_for(100);
    assert!(r.iter().any(|r| r.outcome == "failed"), "{r:?}");
}

#[test]
fn foreign_link_with_target_name_is_refused_and_kept() {
    let host = TestHost::new("f-flink");
    host.manage_bridged(100, PveConf::bridged(100, 10));
    host.plug_like_pve(100);
    // A link op-agent did not make (no owner alias), of the same kind as ours.
    host.run_ok(&[
        "ip", "link", "add", "vi100", "type", "veth", "peer", "name", "fx100",
    ]);
    let before = host.link("vi100").unwrap()["ifindex"].clone();
    for phase in ["pre-start", "post-start"] {
        let (code, err, _) = host.hook(100, phase).run().exit_stderr_took();
        assert_eq!(code, Some(77), "{phase}: {err}");
        assert!(err.contains("vi100"), "{err}");
    }
    // The foreign link is neither renamed nor deleted; PVE's veth and Port are untouched.
    let l = host.link("vi100").expect("foreign vi100 kept");
    assert_eq!(l["ifindex"], before);
    assert_eq!(l["linkinfo"]["info_kind"], "veth");
    assert!(host.has_link("fx100"));
    assert!(host.has_link("veth100i0"));
    assert_eq!(host.ports("ovsbr0"), vec!["veth100i0"]);
}

#[test]
fn foreign_ovs_port_with_our_name_is_refused_not_deleted() {
    let host = TestHost::new("f-fport");
    host.manage_bridged(100, PveConf::bridged(100, 10));
    host.vsctl_ok(&[
        "add-port",
        "ovsbr0",
        "vi100",
        "--",
        "set",
        "Interface",
        "vi100",
        "type=internal",
    ]);
    let uuid = host.ovs_get("Port", "vi100", "_uuid");
    let (code, err, _) = host.hook(100, "pre-start").run().exit_stderr_took();
    assert_eq!(code, Some(77), "{err}");
    assert!(err.contains("vi100"), "{err}");
    host.plug_like_pve(100);
    let (code, err, _) = host.hook(100, "post-start").run().exit_stderr_took();
    assert_eq!(code, Some(77), "{err}");
    assert_eq!(host.ovs_get("Port", "vi100", "_uuid"), uuid, "not deleted");
    assert!(host.has_link("veth100i0"), "PVE's veth not renamed");
    let ports = host.ports("ovsbr0");
    assert!(ports.contains(&"veth100i0".to_string()), "{ports:?}");
}

/// A PVE root with container 100 managed by `toml`, no OVS (these fail before connecting).
fn offline_root(toml: &str) -> PveRoot {
    let r = PveRoot::temp("opa-offline-");
    r.write_pve_conf(100, PveConf::bridged(100, 10));
    r.manage(100, toml);
    r.write_agent_toml(&AgentToml {
        ovsdb_socket: Some(r.join("nosock")),
        audit_db: Some(r.join("audit.db")),
        pve_root: Some(r.path().to_path_buf()),
        ..AgentToml::default()
    });
    r
}

/// `op-agent ARGS` on `r` (outside any namespace): (exit code, stderr).
fn offline_hook(r: &PveRoot, args: &[&str]) -> (Option<i32>, String) {
    let out = r.agent_cmd(args).run();
    (out.code(), out.stderr_text())
}

#[test]
fn bad_names_are_refused_at_pre_start() {
    for (name, why) in [
        ("'a/b'", "/"),
        ("'a b'", "whitespace"),
        ("\"a\\u0007b\"", "control"),
        ("\"a\\tb\"", "tab"),
        ("'abcdefghijklmnop'", "16 bytes"),
        ("''", "empty"),
    ] {
        let r = offline_root(&format!("[[nic]]\nnet = 0\nname = {name}\n"));
        let (code, err) = offline_hook(&r, &["hook", "100", "pre-start"]);
        assert_eq!(code, Some(78), "{why}: {err}");
        assert_eq!(err.lines().count(), 1, "{why}: {err}");
        // The line of the `[[nic]]` table that holds the name.
        assert!(
            err.contains("100.toml:1:"),
            "{why}: names file and line: {err}"
        );
        assert!(!r.path().join("nosock").exists());
    }
    // Two NICs with the same name collide.
    let conf = PveConf::bridged(100, 10).nic(Nic::new(1, "ovsbr0").hwaddr("BC:24:11:00:01:01"));
    let r = offline_root("[[nic]]\nnet = 0\nname = 'ct1'\n[[nic]]\nnet = 1\nname = 'ct1'\n");
    r.write_pve_conf(100, conf);
    let (code, err) = offline_hook(&r, &["hook", "100", "pre-start"]);
    assert_eq!(code, Some(78), "collision: {err}");
    assert!(err.contains("ct1"), "{err}");
}

#[test]
fn unsafe_config_files_are_refused_with_file_and_fix() {
    let r = offline_root("network_type = \"bridge\"\n");
    let agent = r.path().join("etc/op-agent/agent.toml");
    let ct = r.path().join("etc/op-agent/containers/100.toml");
    for (file, how) in [(&agent, "mode 0666"), (&ct, "mode 0620"), (&ct, "uid 1000")] {
        match how {
            "mode 0666" => std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o666)),
            "mode 0620" => std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o620)),
            _ => std::os::unix::fs::chown(file, Some(1000), Some(1000)),
        }
        .unwrap();
        let (code, err) = offline_hook(&r, &["hook", "100", "pre-start"]);
        assert_eq!(code, Some(77), "{how}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains(&file.display().to_string()),
            "names the file: {err}"
        );
        assert!(err.contains("fix: ch"), "gives the fix: {err}");
        if file == &agent {
            assert!(!r.path().join("audit.db").exists(), "nothing written");
        }
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::chown(file, Some(0), Some(0)).unwrap();
    }
    // The PVE conf is read with the same check.
    let pve = r.path().join("etc/pve/lxc/100.conf");
    std::fs::set_permissions(&pve, std::fs::Permissions::from_mode(0o646)).unwrap();
    let (code, err) = offline_hook(&r, &["hook", "100", "pre-start"]);
    assert_eq!(code, Some(77), "{err}");
    assert!(err.contains("100.conf"), "{err}");
}

#[test]
fn vmid_and_phase_are_validated_before_anything_is_read() {
    // agent.toml is world-writable (would be refused, 77) and the socket absent (69): a bad
    // vmid or phase must be reported first (64), so nothing was read.
    let r = offline_root("network_type = \"bridge\"\n");
    let agent = r.path().join("etc/op-agent/agent.toml");
    std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o666)).unwrap();
    for (vmid, phase) in [
        ("99", "pre-start"),
        ("100;rm", "pre-start"),
        ("../100", "post-start"),
        ("100", "pre-start\n"),
        ("100", "../../x"),
        ("1e3", "pre-start"),
    ] {
        let (code, err) = offline_hook(&r, &["hook", vmid, phase]);
        assert_eq!(code, Some(64), "{vmid:?} {phase:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        // The argument is shown as given, control characters escaped.
        let shown = if vmid == "100" { phase } else { vmid };
        assert!(err.contains(&format!("{shown:?}")), "{err}");
    }
}

#[test]
fn unsafe_netmaker_env_is_refused_with_file_and_fix() {
    let r = offline_root("network_type = \"netmaker\"\n");
    let env = r.path().join("etc/op-agent/netmaker.env");
    std::fs::write(&env, "NETMAKER_TOKEN=secret-token-value\n").unwrap();
    for how in ["mode 0644", "mode 0660", "uid 1000"] {
        std::fs::set_permissions(&env, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::chown(&env, Some(0), Some(0)).unwrap();
        match how {
            "mode 0644" => std::fs::set_permissions(&env, std::fs::Permissions::from_mode(0o644)),
            "mode 0660" => std::fs::set_permissions(&env, std::fs::Permissions::from_mode(0o660)),
            _ => std::os::unix::fs::chown(&env, Some(1000), Some(1000)),
        }
        .unwrap();
        let (code, err) = offline_hook(&r, &["mesh", "join"]);
        assert_eq!(code, Some(77), "{how}: {err}");
        assert!(
            err.contains(&env.display().to_string()),
            "names the file: {err}"
        );
        assert!(err.contains("fix: ch"), "gives the fix: {err}");
        assert!(!err.contains("secret-token-value"), "token leaked: {err}");
    }
}
