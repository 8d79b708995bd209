//! PVE firewall and link_down end to end, through `pve-sim` with real LXC and a private OVS:
//! `firewall=1` refused at pre-start (renaming the veth would switch pve-firewall off),
//! `on_firewall = "skip"` leaves that NIC in its fwbr untouched (audit row `skipped`) while the
//! other NIC is handled, and `link_down=1` is renamed but left down and unplugged.
//! Root only; run: `cargo build --workspace && cargo test --test firewall_link_down`.

use op_testkit::{Nic, PveConf, TestHost};

/// Container 100 with net0 on VLAN 10 carrying PVE's `net0_flag` (`firewall=1`, `link_down=1`)
/// and a plain net1 on VLAN 20, plus `toml` as its op-agent TOML.
fn ct_with_net0_flag(host: &TestHost, net0_flag: &str, toml: &str) {
    host.write_pve_conf(
        100,
        PveConf::op_hook(100).nics([
            Nic::with_id(0, "ovsbr0", 100)
                .ip("10.0.0.101/24")
                .tag(10)
                .flag(net0_flag),
            Nic::with_id(1, "ovsbr0", 100).ip("10.0.1.101/24").tag(20),
        ]),
    );
    host.manage(100, toml);
}

#[test]
fn firewall_nic_is_refused_at_pre_start() {
    let host = TestHost::with_bridges("fw-refuse", &["ovsbr0"], &[]);
    ct_with_net0_flag(&host, "firewall=1", "network_type = \"bridge\"\n");
    let out = host.sim(&["start", "100"]);
    let t = out.text();
    assert!(!out.status.success(), "{t}");
    // The one-line reason (without a syslog socket the log line goes to stderr too).
    let lines: Vec<&str> = t
        .lines()
        .filter(|l| l.starts_with("op-agent: 100 pre-start:") && !l.contains("config.validate"))
        .collect();
    assert_eq!(lines.len(), 1, "{t}");
    assert!(t.contains("failed: exit code 77"), "exit code refused: {t}");
    assert!(
        lines[0].contains("net0 has firewall=1")
            && lines[0].contains("would silently disable pve-firewall")
            && lines[0].contains("on_firewall = \"skip\""),
        "{}",
        lines[0]
    );
    assert_eq!(host.ct_status(100), "stopped");
    assert!(host.ports("ovsbr0").is_empty());
    // Netmaker mode refuses the same way.
    host.manage(100, "network_type = \"netmaker\"\n");
    let out = host.sim(&["start", "100"]);
    assert!(!out.status.success());
    assert!(out.text().contains("net0 has firewall=1"), "{}", out.text());
}

#[test]
fn on_firewall_skip_leaves_the_nic_in_its_fwbr() {
    let host = TestHost::with_bridges("fw-skip", &["ovsbr0"], &[]);
    ct_with_net0_flag(&host, "firewall=1", "on_firewall = \"skip\"\n");
    host.sim_ok_text(&["start", "100"]);
    // net0: PVE's firewall plumbing untouched.
    let veth = host.link("veth100i0").expect("veth100i0 kept its name");
    assert_eq!(veth["master"], "fwbr100i0", "{veth}");
    assert!(host.link("vi100").is_none());
    let ports = host.ports("ovsbr0");
    assert!(ports.contains(&"fwln100o0".to_string()), "{ports:?}");
    assert_eq!(host.ovs_get("Port", "fwln100o0", "tag"), "10");
    // net1: renamed and re-plugged.
    assert!(host.link("veth100i1").is_none());
    assert_eq!(host.vsctl_ok(&["port-to-br", "vi100i1"]), "ovsbr0");
    assert_eq!(host.ovs_get("Port", "vi100i1", "tag"), "20");
    let skipped: Vec<_> = host
        .audit_step_rows(100, "nic.skip")
        .into_iter()
        .filter(|r| r.phase == "post-start")
        .collect();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert_eq!(skipped[0].outcome, "skipped");
    assert!(skipped[0].detail.contains("firewall=1"));
    // Stop: PVE's fw plumbing is PVE's to clean up; our net1 row is gone.
    host.sim_ok_text(&["stop", "100"]);
    let ports = host.ports("ovsbr0");
    assert!(!ports.iter().any(|p| p.starts_with("vi100")), "{ports:?}");
}

#[test]
fn link_down_is_renamed_but_left_down_and_unplugged() {
    let host = TestHost::with_bridges("link-down", &["ovsbr0"], &[]);
    ct_with_net0_flag(&host, "link_down=1", "");
    host.sim_ok_text(&["start", "100"]);
    assert!(host.link("veth100i0").is_none());
    let l = host.link("vi100").expect("vi100");
    assert!(!host.is_up("vi100"), "{l}");
    assert!(l.get("master").is_none(), "{l}");
    let ports = host.ports("ovsbr0");
    assert!(
        !ports.iter().any(|p| p == "vi100" || p == "veth100i0"),
        "{ports:?}"
    );
    assert!(ports.contains(&"vi100i1".to_string()), "{ports:?}");
    assert!(host.is_up("vi100i1"));
    // Converged: a second post-start changes nothing and keeps it down.
    let again = host.agent(&["hook", "100", "post-start"]);
    assert!(again.status.success(), "{}", again.text());
    assert!(
        again.text().contains("nothing to change"),
        "{}",
        again.text()
    );
    assert!(!host.is_up("vi100"));
    host.sim_ok_text(&["stop", "100"]);
    assert!(
        host.ports("ovsbr0").is_empty(),
        "{:?}",
        host.ports("ovsbr0")
    );
}
