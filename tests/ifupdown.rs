//! Host network reloads on a private OVS: `pve-sim ifreload` removes what ifupdown2's
//! `ifreload -a` removes (`openvswitch._addbridge`: `--if-exists del-port` for running ports
//! that `ovs_ports` does not list and the condone regex does not match; `bridge._add_ports`:
//! nomaster + down), and `op-agent config check` warns about the bridges where that hits
//! op-agent's ports, naming the stanza and the line to add.
//! Root only; run: `cargo build --workspace && cargo test --test ifupdown`.

use op_testkit::{PveConf, TestHost};

/// PVE's GUI file for OVS bridge `ovsbr0` with internal port `mgmt0`; `condone` is an extra
/// option line for the bridge stanza (or empty).
fn interfaces(condone: &str) -> String {
    format!(
        "auto lo\niface lo inet loopback\n\nauto mgmt0\niface mgmt0 inet manual\n\tovs_type OVSIntPort\n\tovs_bridge ovsbr0\n\nauto ovsbr0\niface ovsbr0 inet manual\n\tovs_type OVSBridge\n\tovs_ports mgmt0\n{condone}\nsource /etc/network/interfaces.d/*\n"
    )
}

fn write_interfaces(host: &TestHost, text: &str) {
    let dir = host.root().join("etc/network");
    std::fs::create_dir_all(dir.join("interfaces.d")).unwrap();
    std::fs::write(dir.join("interfaces"), text).unwrap();
}

/// Container 100 managed on `ovsbr0` and renamed to `vi100` by op-agent's post-start, plus
/// what PVE plugs itself (`veth101i0`, `tap102i0`, `fwln103i0`), the listed `mgmt0` and an
/// unlisted `stray0`.
fn host_with_ports(hint: &str) -> TestHost {
    let host = TestHost::new(hint);
    host.manage_bridged(100, PveConf::bridged(100, 10));
    host.plug_like_pve(100);
    let post = host.hook(100, "post-start").run();
    assert_eq!(post.code(), Some(0), "{}", post.text());
    assert!(host.ports("ovsbr0").contains(&"vi100".to_string()));
    for (dev, peer) in [("veth101i0", "pc101"), ("fwln103i0", "pc103")] {
        host.ip(&["link", "add", dev, "type", "veth", "peer", "name", peer]);
        host.vsctl_ok(&["add-port", "ovsbr0", dev]);
    }
    host.ip(&["tuntap", "add", "dev", "tap102i0", "mode", "tap"]);
    host.vsctl_ok(&["add-port", "ovsbr0", "tap102i0"]);
    for p in ["mgmt0", "stray0"] {
        host.vsctl_ok(&[
            "add-port",
            "ovsbr0",
            p,
            "--",
            "set",
            "Interface",
            p,
            "type=internal",
        ]);
    }
    host
}

fn sorted_ports(host: &TestHost) -> Vec<String> {
    let mut p = host.ports("ovsbr0");
    p.sort();
    p
}

#[test]
fn default_condone_regex_ifreload_deletes_vi100_and_config_check_warns() {
    let host = host_with_ports("ifr-def");
    write_interfaces(&host, &interfaces(""));
    let check = host.agent(&["config", "check"]);
    assert_eq!(
        check.code(),
        Some(0),
        "warnings are no errors: {}",
        check.text()
    );
    let out = check.stdout_text();
    let warn: Vec<&str> = out.lines().filter(|l| l.starts_with("WARNING")).collect();
    assert_eq!(warn.len(), 1, "{out}");
    let stanza = format!(
        "{}:10:",
        host.root().join("etc/network/interfaces").display()
    );
    assert!(warn[0].starts_with(&format!("WARNING {stanza}")), "{out}");
    assert!(warn[0].contains("vi100 (100 net0)"), "{out}");
    assert!(
        warn[0].ends_with(
            "add to the iface ovsbr0 stanza: ovs-ports-condone-regex ^(tap|veth|fwln|vi)"
        ),
        "{out}"
    );
    assert!(out.ends_with("no errors, 1 warning\n"), "{out}");

    let reload = host.sim(&["ifreload"]);
    assert!(reload.status.success(), "{}", reload.text());
    // Today's outage: the renamed port is gone, PVE's own names stay.
    assert_eq!(
        sorted_ports(&host),
        ["fwln103i0", "mgmt0", "tap102i0", "veth101i0"],
        "{}",
        reload.text()
    );
    assert!(reload.stdout_text().contains("del-port ovsbr0 vi100"));
    assert!(reload.stdout_text().contains("del-port ovsbr0 stray0"));
    assert!(host.has_link("vi100"), "del-port keeps the link");
}

#[test]
fn widened_condone_regex_keeps_vi100_and_config_check_is_quiet() {
    let host = host_with_ports("ifr-vi");
    write_interfaces(
        &host,
        &interfaces("\tovs-ports-condone-regex ^(tap|veth|fwln|vi)\n"),
    );
    let check = host.agent(&["config", "check"]);
    assert_eq!(check.code(), Some(0), "{}", check.text());
    let out = check.stdout_text();
    assert!(!out.contains("WARNING"), "{out}");
    assert!(out.ends_with("no errors\n"), "{out}");

    let reload = host.sim(&["ifreload"]);
    assert!(reload.status.success(), "{}", reload.text());
    assert_eq!(
        sorted_ports(&host),
        ["fwln103i0", "mgmt0", "tap102i0", "veth101i0", "vi100"],
        "{}",
        reload.text()
    );
    assert_eq!(host.vsctl_ok(&["port-to-br", "vi100"]), "ovsbr0");
    assert_eq!(host.ovs_get("Port", "vi100", "tag"), "10");
}

#[test]
fn config_check_skips_unused_bridges_and_a_missing_file_and_widens_a_custom_regex() {
    let host = host_with_ports("ifr-other");
    let check = host.agent(&["config", "check"]);
    assert_eq!(check.code(), Some(0), "{}", check.text());
    assert!(
        !check.stdout_text().contains("interfaces"),
        "{}",
        check.text()
    );
    // A stanza for another bridge only: ovsbr0 has none, ifreload leaves it alone.
    write_interfaces(
        &host,
        "auto ovsbr9\niface ovsbr9 inet manual\n\tovs_type OVSBridge\n\tovs_ports eno9\n",
    );
    let check = host.agent(&["config", "check"]);
    assert!(!check.stdout_text().contains("WARNING"), "{}", check.text());
    let reload = host.sim(&["ifreload"]);
    assert!(reload.status.success(), "{}", reload.text());
    assert!(host.ports("ovsbr0").contains(&"vi100".to_string()));
    // A condone regex of the admin's own that misses vi100: replace that line, keep its
    // alternatives.
    write_interfaces(&host, &interfaces("\tovs_ports_condone_regex ^stray\n"));
    let out = host.agent(&["config", "check"]).stdout_text();
    assert!(
        out.contains("ovs-ports-condone-regex ^stray (line 13) does not match; replace line 13 with: ovs-ports-condone-regex ^stray|^(vi)"),
        "{out}"
    );
}

#[test]
fn linux_bridge_ifreload_unenslaves_and_downs_vi_keeps_veth() {
    let host = TestHost::with_bridges("ifr-lb", &["ovsbr0"], &["vmbr0"]);
    for (dev, peer) in [("vi100", "pc100"), ("veth101i0", "pc101")] {
        host.ip(&["link", "add", dev, "type", "veth", "peer", "name", peer]);
        host.ip(&["link", "set", dev, "master", "vmbr0"]);
        host.ip(&["link", "set", dev, "up"]);
    }
    let master = |dev: &str| {
        host.link(dev)
            .and_then(|l| l["master"].as_str().map(str::to_string))
    };
    write_interfaces(
        &host,
        "auto vmbr0\niface vmbr0 inet manual\n\tbridge-ports none\n\tbridge-stp off\n",
    );
    let reload = host.sim(&["ifreload"]);
    assert!(reload.status.success(), "{}", reload.text());
    assert_eq!(master("vi100"), None, "{}", reload.text());
    assert!(!host.is_up("vi100"), "set down: no stanza of its own");
    assert_eq!(master("veth101i0").as_deref(), Some("vmbr0"));
    assert!(host.is_up("veth101i0"));

    host.ip(&["link", "set", "vi100", "master", "vmbr0"]);
    write_interfaces(
        &host,
        "auto vmbr0\niface vmbr0 inet manual\n\tbridge-ports none\n\tbridge_ports_condone_regex ^(tap|veth|fwpr|vi)\n",
    );
    let reload = host.sim(&["ifreload"]);
    assert!(reload.status.success(), "{}", reload.text());
    assert_eq!(
        master("vi100").as_deref(),
        Some("vmbr0"),
        "{}",
        reload.text()
    );
}

/// `ifreload -a` (GUI *Apply Configuration*) with PVE's default condone regex while
/// `op-agent watch` runs: pve-sim's ifreload deletes the `vi<vmid>` Port of each of 10 running
/// containers, and the watch's OVSDB monitor puts every one back within 2 s, with a
/// `watch.drift` row each; the containers ping each other again.
#[test]
fn ifreload_with_watch_running_gets_10_containers_back_within_2s() {
    use std::time::{Duration, Instant};
    let host = TestHost::new("if-watch");
    write_interfaces(&host, &interfaces(""));
    let vmids: Vec<u32> = (100..110).collect();
    for v in &vmids {
        host.manage_bridged(*v, PveConf::bridged(*v, 10));
        host.sim_ok(&["start", &v.to_string()]);
    }
    for v in &vmids {
        host.wait_converged(*v, &format!("vi{v}"), 10, Duration::from_secs(10));
    }
    let started = host.audit_rows().len();
    let mut watch = host.spawn_watch(&[]);
    // The start-up reconcile has looked at every container: its monitor is up.
    let t = Instant::now();
    while !vmids.iter().all(|v| {
        host.audit_rows()[started..]
            .iter()
            .any(|r| r.vmid == i64::from(*v) && r.phase == "watch")
    }) {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "no start-up reconcile"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = host.audit_rows().len();
    let reload = host.sim(&["ifreload"]);
    assert_eq!(reload.code(), Some(0), "{}", reload.text());
    let reloaded = Instant::now();
    let limit = Duration::from_secs(2);
    for v in &vmids {
        let left = limit.saturating_sub(reloaded.elapsed());
        host.wait_converged(*v, &format!("vi{v}"), 10, left);
    }
    eprintln!(
        "all 10 back {} ms after ifreload returned",
        reloaded.elapsed().as_millis()
    );
    for (i, v) in vmids.iter().enumerate() {
        let to = vmids[(i + 1) % vmids.len()];
        assert!(
            (0..3).any(|_| host.ping(*v, &op_testkit::bridged_ip(to))),
            "{v} -> {to}"
        );
    }
    let rows = host.audit_rows();
    for v in &vmids {
        let r = rows[before..]
            .iter()
            .find(|r| r.vmid == i64::from(*v) && r.step == "watch.drift")
            .unwrap_or_else(|| panic!("no watch.drift row for {v}"));
        let d = r.detail_json();
        assert_eq!(
            (d["port"].as_str(), d["found"].as_str()),
            (Some(&*format!("vi{v}")), Some("missing")),
            "{d}"
        );
    }
    host.assert_audit_intact("after ifreload and the repairs");
    let st = watch.stop().expect("watch exits on SIGTERM");
    assert!(st.success(), "watch exit status {st:?}");
}
