//! PVE firewall and link_down end to end, through `pve-sim` with real LXC and a private OVS:
//! `firewall=1` refused at pre-start (renaming the veth would switch pve-firewall off),
//! `on_firewall = "skip"` leaves that NIC in its fwbr untouched (audit row `skipped`) while the
//! other NIC is handled, and `link_down=1` is renamed but left down and unplugged.
//! Root only; run: `cargo build --workspace && cargo test --test firewall_link_down`.

#[path = "netmaker_support/mod.rs"]
mod agent;
mod support;

use agent::{net_line, pve_conf, text, Agent};

/// Container 100 with net0 on VLAN 10 carrying PVE's `net0_flag` (`firewall=1`, `link_down=1`)
/// and a plain net1 on VLAN 20, plus `toml` as its op-agent TOML.
fn ct_with_net0_flag(a: &Agent, net0_flag: &str, toml: &str) {
    a.host.write_pve_conf(
        100,
        &pve_conf(
            100,
            &[
                net_line(
                    0,
                    "ovsbr0",
                    100,
                    Some("10.0.0.101/24"),
                    &format!(",tag=10,{net0_flag}"),
                ),
                net_line(1, "ovsbr0", 100, Some("10.0.1.101/24"), ",tag=20"),
            ],
        ),
    );
    a.ct_toml(100, toml);
}

#[test]
fn firewall_nic_is_refused_at_pre_start() {
    let a = Agent::new("fw-refuse", &["ovsbr0"], &[], "");
    ct_with_net0_flag(&a, "firewall=1", "network_type = \"bridge\"\n");
    let out = a.sim(&["start", "100"]);
    let t = text(&out);
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
    assert_eq!(a.status(100), "stopped");
    assert!(a.host.ports("ovsbr0").is_empty());
    // Netmaker mode refuses the same way.
    a.ct_toml(100, "network_type = \"netmaker\"\n");
    let out = a.sim(&["start", "100"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("net0 has firewall=1"), "{}", text(&out));
}

#[test]
fn on_firewall_skip_leaves_the_nic_in_its_fwbr() {
    let a = Agent::new("fw-skip", &["ovsbr0"], &[], "");
    ct_with_net0_flag(&a, "firewall=1", "on_firewall = \"skip\"\n");
    a.sim_ok(&["start", "100"]);
    // net0: PVE's firewall plumbing untouched.
    let veth = a.link("veth100i0").expect("veth100i0 kept its name");
    assert_eq!(veth["master"], "fwbr100i0", "{veth}");
    assert!(a.link("vi100").is_none());
    let ports = a.host.ports("ovsbr0");
    assert!(ports.contains(&"fwln100o0".to_string()), "{ports:?}");
    assert_eq!(a.host.ovs_get("Port", "fwln100o0", "tag"), "10");
    // net1: renamed and re-plugged.
    assert!(a.link("veth100i1").is_none());
    assert_eq!(a.host.vsctl_ok(&["port-to-br", "vi100i1"]), "ovsbr0");
    assert_eq!(a.host.ovs_get("Port", "vi100i1", "tag"), "20");
    let skipped: Vec<_> = a
        .rows_of(100, "nic.skip")
        .into_iter()
        .filter(|r| r["phase"] == "post-start")
        .collect();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert_eq!(skipped[0]["outcome"], "skipped");
    assert!(skipped[0]["detail"]
        .as_str()
        .unwrap()
        .contains("firewall=1"));
    // Stop: PVE's fw plumbing is PVE's to clean up; our net1 row is gone.
    a.sim_ok(&["stop", "100"]);
    let ports = a.host.ports("ovsbr0");
    assert!(!ports.iter().any(|p| p.starts_with("vi100")), "{ports:?}");
}

#[test]
fn link_down_is_renamed_but_left_down_and_unplugged() {
    let a = Agent::new("link-down", &["ovsbr0"], &[], "");
    ct_with_net0_flag(&a, "link_down=1", "");
    a.sim_ok(&["start", "100"]);
    assert!(a.link("veth100i0").is_none());
    let l = a.link("vi100").expect("vi100");
    assert!(!a.is_up("vi100"), "{l}");
    assert!(l.get("master").is_none(), "{l}");
    let ports = a.host.ports("ovsbr0");
    assert!(
        !ports.iter().any(|p| p == "vi100" || p == "veth100i0"),
        "{ports:?}"
    );
    assert!(ports.contains(&"vi100i1".to_string()), "{ports:?}");
    assert!(a.is_up("vi100i1"));
    // Converged: a second post-start changes nothing and keeps it down.
    let again = a.agent(&[], &["hook", "100", "post-start"]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        text(&again).contains("nothing to change"),
        "{}",
        text(&again)
    );
    assert!(!a.is_up("vi100"));
    a.sim_ok(&["stop", "100"]);
    assert!(
        a.host.ports("ovsbr0").is_empty(),
        "{:?}",
        a.host.ports("ovsbr0")
    );
}
