//! End-to-end tests of `pve-sim` on real LXC and a private Open vSwitch, with a stand-in
//! hookscript that records each call. Root only (they fail, never skip, without root).
//! Run: `cargo build -p pve-integration && cargo test --test pve_sim`.

use op_testkit::{pve_mac, run_bounded, target_bin, Nic, PveConf, TestHost, CMD_TIMEOUT};

/// A stand-in hookscript: appends `$1 $2 LC_ALL=.. PATH=.. stdin-eof|stdin-data` to `LOG`,
/// and fails pre-start (exit 1) when `FAIL` exists.
fn hook_script(host: &TestHost) -> String {
    let log = host.root().join("hook.log");
    let fail = host.root().join("hook.fail");
    format!(
        "#!/bin/sh\n\
         if read -r line; then s=stdin-data; else s=stdin-eof; fi\n\
         echo \"$1 $2 LC_ALL=$LC_ALL PATH=$PATH $s\" >> '{}'\n\
         if [ \"$2\" = pre-start ] && [ -e '{}' ]; then echo 'hook refuses' >&2; exit 1; fi\n\
         echo \"hook ran $1 $2\"\n",
        log.display(),
        fail.display()
    )
}

fn hook_calls(host: &TestHost) -> Vec<String> {
    std::fs::read_to_string(host.root().join("hook.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn clear_hook_calls(host: &TestHost) {
    let _ = std::fs::remove_file(host.root().join("hook.log"));
}

fn expected_call(vmid: u32, phase: &str) -> String {
    format!("{vmid} {phase} LC_ALL=C PATH=/sbin:/bin:/usr/sbin:/usr/bin stdin-eof")
}

/// `net0` on ovsbr0 for a container on 10.0.0.<vmid % 200 + 1>/24 with a unique MAC, the
/// stand-in hookscript when `with_hook`, and `more` NICs.
fn conf(vmid: u32, with_hook: bool, net0: impl FnOnce(Nic) -> Nic, more: &[Nic]) -> PveConf {
    let c = PveConf::new(vmid);
    let c = if with_hook {
        c.hookscript("local:snippets/hook")
    } else {
        c
    };
    c.nic(net0(
        Nic::new(0, "ovsbr0")
            .hwaddr(&pve_mac(vmid))
            .ip(&format!("{}/24", ip_of(vmid))),
    ))
    .nics(more.iter().cloned())
}

fn ip_of(vmid: u32) -> String {
    format!("10.0.0.{}", vmid % 200 + 1)
}

fn assert_plugged(host: &TestHost, port: &str, bridge: &str, tag: &str) {
    assert_eq!(
        host.vsctl_ok(&["port-to-br", port]),
        bridge,
        "{port} bridge"
    );
    assert_eq!(host.ovs_get("Port", port, "tag"), tag, "{port} tag");
    assert_eq!(
        host.ovs_get("Interface", port, "mtu_request"),
        "1500",
        "{port} mtu_request"
    );
    let ofport: i64 = host.ovs_get("Interface", port, "ofport").parse().unwrap();
    assert!(ofport > 0, "{port} ofport {ofport}");
    assert_eq!(
        host.ovs_get("Interface", port, "error"),
        "[]",
        "{port} error"
    );
}

#[test]
fn start_runs_hooks_in_order_and_plugs_like_tap_plug_then_stop_cleans_up() {
    let host = TestHost::new("sim-start");
    host.install_snippet("hook", &hook_script(&host));
    host.write_pve_conf(
        100,
        conf(
            100,
            true,
            |n| n.tag(10),
            &[Nic::new(1, "ovsbr0")
                .hwaddr("BC:24:11:01:00:64")
                .tag(5)
                .trunks("20;30")],
        ),
    );

    let out = host.sim(&["start", "100"]);
    assert!(
        out.status.success(),
        "start: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The hookscript's output is passed through.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("hook ran 100 pre-start") && stdout.contains("hook ran 100 post-start"),
        "{stdout}"
    );
    assert_eq!(
        hook_calls(&host),
        vec![
            expected_call(100, "pre-start"),
            expected_call(100, "post-start")
        ]
    );
    assert_eq!(host.sim_ok(&["status", "100"]).trim(), "status: running");

    let links = host.links();
    assert!(
        links.contains(&"veth100i0".to_string()) && links.contains(&"veth100i1".to_string()),
        "{links:?}"
    );
    assert_plugged(&host, "veth100i0", "ovsbr0", "10");
    assert_eq!(host.ovs_get("Port", "veth100i0", "trunks"), "[]");
    assert_eq!(host.ovs_get("Port", "veth100i0", "vlan_mode"), "[]");
    // tag + trunks → vlan_mode=native-untagged, like PVE's $ovs_bridge_add_port.
    assert_plugged(&host, "veth100i1", "ovsbr0", "5");
    assert_eq!(host.ovs_get("Port", "veth100i1", "trunks"), "[20, 30]");
    assert_eq!(
        host.ovs_get("Port", "veth100i1", "vlan_mode"),
        "native-untagged"
    );
    // The LXC config is PVE's block.
    let cfg = std::fs::read_to_string(host.lxcpath().join("100/config")).unwrap();
    for line in [
        "lxc.net.0.type = veth",
        "lxc.net.0.veth.pair = veth100i0",
        "lxc.net.0.hwaddr = BC:24:11:00:00:64",
        "lxc.net.0.name = eth0",
        "lxc.net.0.mtu = 1500",
        "lxc.net.1.veth.pair = veth100i1",
    ] {
        assert!(cfg.lines().any(|l| l == line), "missing {line:?} in\n{cfg}");
    }

    clear_hook_calls(&host);
    host.sim_ok(&["stop", "100"]);
    assert_eq!(
        hook_calls(&host),
        vec![
            expected_call(100, "pre-stop"),
            expected_call(100, "post-stop")
        ]
    );
    assert_eq!(host.sim_ok(&["status", "100"]).trim(), "status: stopped");
    assert!(
        host.ports("ovsbr0").is_empty(),
        "ports left: {:?}",
        host.ports("ovsbr0")
    );
    let links = host.links();
    assert!(!links.iter().any(|l| l.starts_with("veth100")), "{links:?}");
}

#[test]
fn ping_works_within_a_vlan_and_not_across() {
    let host = TestHost::new("sim-ping");
    host.write_pve_conf(100, conf(100, false, |n| n.tag(10), &[]));
    host.write_pve_conf(101, conf(101, false, |n| n.tag(10), &[]));
    host.write_pve_conf(102, conf(102, false, |n| n.tag(20), &[]));
    for v in ["100", "101", "102"] {
        host.sim_ok(&["start", v]);
    }
    assert!(
        host.ping(100, &ip_of(101)),
        "100 → 101 on VLAN 10 must answer"
    );
    assert!(
        !host.ping(100, &ip_of(102)),
        "100 → 102 across VLANs must not answer"
    );
    assert!(
        host.ping(101, &ip_of(100)),
        "101 → 100 on VLAN 10 must answer"
    );
}

#[test]
fn failing_pre_start_hook_aborts_the_start() {
    let host = TestHost::new("sim-prefail");
    let hook = host.install_snippet("hook", &hook_script(&host));
    std::fs::write(host.root().join("hook.fail"), "").unwrap();
    host.write_pve_conf(100, conf(100, true, |n| n.tag(10), &[]));

    let out = host.sim(&["start", "100"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let want = format!(
        "hookscript error for 100 on pre-start: command '{} 100 pre-start' failed: exit code 1",
        hook.display()
    );
    assert!(stderr.contains(&want), "stderr: {stderr}");
    assert!(
        stderr.contains("hook refuses"),
        "hook stderr passed through: {stderr}"
    );
    assert_eq!(hook_calls(&host), vec![expected_call(100, "pre-start")]);
    assert_eq!(host.sim_ok(&["status", "100"]).trim(), "status: stopped");
    assert!(!host.links().contains(&"veth100i0".to_string()));
    assert!(host.ports("ovsbr0").is_empty());

    // Other phases only warn: post-start failing keeps the container running.
    std::fs::remove_file(host.root().join("hook.fail")).unwrap();
    host.install_snippet("hook", "#!/bin/sh\n[ \"$2\" = pre-start ] || exit 3\n");
    let out = host.sim(&["start", "100"]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("hookscript error for 100 on post-start:")
            && stderr.contains("exit code 3"),
        "{stderr}"
    );
    assert_eq!(host.sim_ok(&["status", "100"]).trim(), "status: running");
}

#[test]
fn in_guest_reboot_calls_no_hook_and_replugs_the_veth() {
    let host = TestHost::with_bridges("sim-reboot", &["ovsbr0"], &["vmbr0"]);
    host.install_snippet("hook", &hook_script(&host));
    host.write_pve_conf(100, conf(100, true, |n| n.tag(10), &[]));
    host.write_pve_conf(101, conf(101, false, |n| n.tag(10), &[]));
    // A container on a Linux bridge: the veth is enslaved, no OVS port.
    host.write_pve_conf(
        103,
        "hostname: ct103\nnet0: name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:00:67,ip=10.0.1.3/24,type=veth\n",
    );
    host.sim_ok(&["start", "100"]);
    host.sim_ok(&["start", "101"]);
    host.sim_ok(&["start", "103"]);
    assert_eq!(host.link("veth103i0").unwrap()["master"], "vmbr0");
    assert!(!host.ports("ovsbr0").contains(&"veth103i0".to_string()));

    let before: i64 = host
        .ovs_get("Interface", "veth100i0", "ofport")
        .parse()
        .unwrap();
    let ifindex_before = host.link("veth100i0").unwrap()["ifindex"].clone();
    clear_hook_calls(&host);
    host.sim_ok(&["reboot", "100"]);
    assert!(
        hook_calls(&host).is_empty(),
        "hook called on in-guest reboot: {:?}",
        hook_calls(&host)
    );
    assert_eq!(host.sim_ok(&["status", "100"]).trim(), "status: running");
    assert_ne!(
        host.link("veth100i0").unwrap()["ifindex"],
        ifindex_before,
        "veth was recreated"
    );
    assert_plugged(&host, "veth100i0", "ovsbr0", "10");
    let after: i64 = host
        .ovs_get("Interface", "veth100i0", "ofport")
        .parse()
        .unwrap();
    assert_ne!(before, after, "a new port row was added");
    assert!(
        host.ping(100, &ip_of(101)),
        "traffic flows after the reboot"
    );
}

#[test]
fn firewall_builds_fwbr_and_internal_fwln_port() {
    let host = TestHost::new("sim-fw");
    host.write_pve_conf(100, conf(100, false, |n| n.tag(10).flag("firewall=1"), &[]));
    host.write_pve_conf(101, conf(101, false, |n| n.tag(10), &[]));
    host.sim_ok(&["start", "100"]);
    host.sim_ok(&["start", "101"]);
    let links = host.links();
    assert!(
        links.contains(&"fwbr100i0".to_string()) && links.contains(&"fwln100o0".to_string()),
        "{links:?}"
    );
    assert_eq!(host.link("veth100i0").unwrap()["master"], "fwbr100i0");
    assert_eq!(host.link("fwln100o0").unwrap()["master"], "fwbr100i0");
    assert_plugged(&host, "fwln100o0", "ovsbr0", "10");
    assert_eq!(host.ovs_get("Interface", "fwln100o0", "type"), "internal");
    assert!(
        !host.ports("ovsbr0").contains(&"veth100i0".to_string()),
        "veth is not an OVS port with firewall=1"
    );
    assert!(host.ping(100, &ip_of(101)), "traffic flows through fwbr");

    host.sim_ok(&["stop", "100"]);
    let links = host.links();
    assert!(
        !links
            .iter()
            .any(|l| l.starts_with("fwbr100") || l.starts_with("fwln100")),
        "{links:?}"
    );
    assert_eq!(host.ports("ovsbr0"), vec!["veth101i0".to_string()]);
}

#[test]
fn bad_input_gives_one_line_errors() {
    let host = TestHost::new("sim-bad");
    // MTU above the bridge MTU dies like update_lxc_config, before any hook.
    host.install_snippet("hook", &hook_script(&host));
    host.write_pve_conf(100, conf(100, true, |n| n.flag("mtu=9000"), &[]));
    let out = host.sim(&["start", "100"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("net0: MTU size '9000' is bigger than bridge MTU '1500'"),
        "{stderr}"
    );
    assert!(hook_calls(&host).is_empty());
    // Missing bridge.
    host.write_pve_conf(101, "net0: name=eth0,bridge=nosuchbr,type=veth\n");
    let stderr = String::from_utf8_lossy(&host.sim(&["start", "101"]).stderr).into_owned();
    assert!(
        stderr.contains("bridge 'nosuchbr' does not exist"),
        "{stderr}"
    );
    // A malformed conf.
    host.write_pve_conf(102, "net0: name=eth0,bridge=ovsbr0,tag=9999\n");
    let stderr = String::from_utf8_lossy(&host.sim(&["start", "102"]).stderr).into_owned();
    assert!(
        stderr.contains("102.conf:1:") && stderr.contains("(net0.tag)"),
        "{stderr}"
    );
    // No conf at all, bad vmid.
    assert!(!host.sim(&["start", "555"]).status.success());
    assert!(!host.sim(&["start", "99"]).status.success());
    assert!(host.links().iter().all(|l| !l.starts_with("veth")));
}

#[test]
fn host_up_refuses_the_initial_network_namespace() {
    op_testkit::assert_root();
    let root = tempfile::tempdir().unwrap();
    let out = run_bounded(
        std::process::Command::new(target_bin("pve-sim"))
            .arg("--root")
            .arg(root.path())
            .args(["host-up", "--bridge", "ovsbr0"]),
        CMD_TIMEOUT,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("initial network namespace"));
    assert!(!root.path().join("run/openvswitch/db.sock").exists());
}

// ---------------------------------------------------------------------------- pct set

/// The text of container `vmid`'s PVE conf.
fn conf_text(host: &TestHost, vmid: u32) -> String {
    std::fs::read_to_string(host.root().join(format!("etc/pve/lxc/{vmid}.conf"))).unwrap()
}

/// The main-section value of `key` in container `vmid`'s conf.
fn conf_value(host: &TestHost, vmid: u32, key: &str) -> Option<String> {
    conf_text(host, vmid)
        .lines()
        .take_while(|l| !l.starts_with('['))
        .find_map(|l| l.strip_prefix(&format!("{key}: ")).map(str::to_string))
}

/// True when device `dev` exists inside container `vmid` (its network namespace).
fn ct_has_link(host: &TestHost, vmid: u32, dev: &str) -> bool {
    let lxcpath = host.lxcpath().display().to_string();
    host.run(&[
        "lxc-attach",
        "-P",
        &lxcpath,
        "-n",
        &vmid.to_string(),
        "--",
        "ip",
        "link",
        "show",
        "dev",
        dev,
    ])
    .status
    .success()
}

/// A container whose only NIC, net0, is on ovsbr0 with `tag` and the address `cidr`.
fn one_nic(vmid: u32, tag: u16, cidr: &str) -> PveConf {
    PveConf::new(vmid).nic(
        Nic::new(0, "ovsbr0")
            .hwaddr(&pve_mac(vmid))
            .ip(cidr)
            .tag(tag),
    )
}

const NET1: &str =
    "name=eth1,bridge=ovsbr0,hwaddr=BC:24:11:01:00:64,ip=10.0.2.1/24,tag=20,type=veth";

#[test]
fn set_on_a_stopped_container_only_writes_the_conf() {
    let host = TestHost::new("sim-set-stopped");
    host.write_pve_conf(100, conf(100, false, |n| n.tag(10), &[]));
    let before = conf_text(&host, 100);
    let out = host.sim(&["set", "100", "-net1", NET1]);
    assert!(out.status.success(), "{}", out.text());
    assert_eq!(conf_value(&host, 100, "net1").as_deref(), Some(NET1));
    assert_eq!(
        conf_text(&host, 100),
        format!("{before}net1: {NET1}\n"),
        "the rest of the conf is kept, nothing pending"
    );
    assert!(host.links().iter().all(|l| !l.starts_with("veth100")));
    assert!(host.ports("ovsbr0").is_empty());

    // Deleting an option that is not set only warns, like update_pct_config.
    let out = host.sim(&["set", "100", "--delete", "net1,net5"]);
    assert!(out.status.success(), "{}", out.text());
    assert!(
        out.stderr_text()
            .contains("cannot delete 'net5' - not set in current configuration!"),
        "{}",
        out.text()
    );
    assert_eq!(conf_text(&host, 100), before);

    // Option errors are PVE's 400, nothing written.
    let out = host.sim(&["set", "100", "-net1", NET1, "--delete", "net1"]);
    assert_eq!(out.code(), Some(255), "{}", out.text());
    assert!(
        out.stderr_text().starts_with(
            "400 Parameter verification failed.\ndelete: you can't use '-net1' and -delete net1' at the same time\n"
        ),
        "{}",
        out.text()
    );
    let out = host.sim(&["set", "100", "-net1", "name=eth1,bridge=ovsbr0,tag=5000"]);
    assert_eq!(out.code(), Some(255), "{}", out.text());
    assert!(
        out.stderr_text()
            .contains("\nnet1: invalid format - net1.tag: invalid value '5000'"),
        "{}",
        out.text()
    );
    assert_eq!(conf_text(&host, 100), before);
}

#[test]
fn set_waits_for_the_config_lock() {
    let host = TestHost::new("sim-set-lock");
    host.write_pve_conf(100, conf(100, false, |n| n.tag(10), &[]));
    let dir = host.root().join("run/lock/lxc");
    std::fs::create_dir_all(&dir).unwrap();
    let lock = dir.join("pve-config-100.lock");
    let mut holder = std::process::Command::new("flock")
        .arg("-x")
        .arg(&lock)
        .args(["sleep", "1.5"])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let t = std::time::Instant::now();
    let out = host.sim(&["set", "100", "-net1", NET1]);
    let took = t.elapsed();
    let _ = holder.wait();
    assert!(out.status.success(), "{}", out.text());
    assert!(
        took >= std::time::Duration::from_millis(1000),
        "set did not wait for the lock: {took:?}"
    );
    assert_eq!(conf_value(&host, 100, "net1").as_deref(), Some(NET1));
}

#[test]
fn hot_add_plugs_a_new_nic_that_pings_on_its_vlan_and_hot_remove_takes_it_away() {
    let host = TestHost::new("sim-hotadd");
    host.write_pve_conf(100, conf(100, false, |n| n.tag(10), &[]));
    host.write_pve_conf(101, one_nic(101, 20, "10.0.2.2/24"));
    host.write_pve_conf(102, one_nic(102, 30, "10.0.2.3/24"));
    for v in ["100", "101", "102"] {
        host.sim_ok(&["start", v]);
    }
    assert!(!host.ping(100, "10.0.2.2"), "no path to VLAN 20 yet");

    let out = host.sim(&["set", "100", "-net1", NET1]);
    assert!(out.status.success(), "{}", out.text());
    assert!(host.has_link("veth100i1"));
    assert!(
        !host.has_link("veth100i1p"),
        "the peer moved into the container"
    );
    assert_plugged(&host, "veth100i1", "ovsbr0", "20");
    assert!(ct_has_link(&host, 100, "eth1"));
    assert!(host.ping(100, "10.0.2.2"), "eth1 reaches VLAN 20");
    assert!(!host.ping(100, "10.0.2.3"), "eth1 is not on VLAN 30");
    assert_eq!(conf_value(&host, 100, "net1").as_deref(), Some(NET1));
    assert!(!conf_text(&host, 100).contains("[pve:pending]"));
    let lxc_cfg = std::fs::read_to_string(host.lxcpath().join("100/config")).unwrap();
    assert!(
        lxc_cfg
            .lines()
            .any(|l| l == "lxc.net.1.veth.pair = veth100i1"),
        "update_lxc_config ran: {lxc_cfg}"
    );

    let out = host.sim(&["set", "100", "--delete", "net1"]);
    assert!(out.status.success(), "{}", out.text());
    assert!(!host.has_link("veth100i1"));
    assert!(!host.ports("ovsbr0").contains(&"veth100i1".to_string()));
    assert!(!ct_has_link(&host, 100, "eth1"));
    assert!(!host.ping(100, "10.0.2.2"));
    assert_eq!(conf_value(&host, 100, "net1"), None);
    assert!(conf_value(&host, 100, "net0").is_some());
    assert!(!conf_text(&host, 100).contains("[pve:pending]"));
}

#[test]
fn live_tag_change_replugs_the_port_with_the_new_tag() {
    let host = TestHost::new("sim-retag");
    host.write_pve_conf(100, one_nic(100, 10, "10.0.2.1/24"));
    host.write_pve_conf(101, one_nic(101, 20, "10.0.2.2/24"));
    host.sim_ok(&["start", "100"]);
    host.sim_ok(&["start", "101"]);
    assert!(!host.ping(100, "10.0.2.2"));
    let net0 = conf_value(&host, 100, "net0").unwrap();
    let ofport = host.ovs_get("Interface", "veth100i0", "ofport");
    // A tag change re-plugs with the whole new value (trunks included).
    let new = net0.replace("tag=10", "tag=20").replace(",type=veth", "") + ",trunks=7";
    let out = host.sim(&["set", "100", "-net0", &new]);
    assert!(out.status.success(), "{}", out.text());
    assert_plugged(&host, "veth100i0", "ovsbr0", "20");
    assert_eq!(host.ovs_get("Port", "veth100i0", "trunks"), "[7]");
    assert_ne!(
        host.ovs_get("Interface", "veth100i0", "ofport"),
        ofport,
        "a new Port row (del-port + add-port)"
    );
    assert!(host.ping(100, "10.0.2.2"), "now on VLAN 20");
    let want = net0.replace("tag=10", "tag=20,trunks=7");
    assert_eq!(
        conf_value(&host, 100, "net0").as_deref(),
        Some(want.as_str())
    );
    // trunks alone is no hotplug trigger: written, not applied (stock PVE).
    let out = host.sim(&["set", "100", "-net0", &want.replace("trunks=7", "trunks=8")]);
    assert!(out.status.success(), "{}", out.text());
    assert_eq!(host.ovs_get("Port", "veth100i0", "trunks"), "[7]");
    assert_eq!(
        conf_value(&host, 100, "net0").as_deref(),
        Some(want.replace("trunks=7", "trunks=8").as_str())
    );
}

#[test]
fn failed_hotplug_writes_nothing_and_prints_pves_error() {
    let host = TestHost::new("sim-set-fail");
    host.write_pve_conf(100, conf(100, false, |n| n.tag(10), &[]));
    host.sim_ok(&["start", "100"]);
    let before = conf_text(&host, 100);
    let out = host.sim(&[
        "set",
        "100",
        "-net1",
        "name=eth1,bridge=nosuchbr,hwaddr=BC:24:11:01:00:64",
    ]);
    assert_eq!(out.code(), Some(255), "{}", out.text());
    assert_eq!(
        out.stderr_text(),
        "400 Parameter verification failed.\n\
         net1: unable to hotplug net1: bridge 'nosuchbr' does not exist\n\
         pct set <vmid> [OPTIONS]\n"
    );
    assert_eq!(conf_text(&host, 100), before, "conf untouched");
    assert!(!host.has_link("veth100i1"));

    // A guest name that is taken: hotplug_net fails at lxc-device, after veth_create and
    // net_tap_plug and before netN reaches the conf (PVE writes it last).
    let out = host.sim(&[
        "set",
        "100",
        "-net1",
        "name=eth0,bridge=ovsbr0,hwaddr=BC:24:11:01:00:64,tag=20",
    ]);
    assert_eq!(out.code(), Some(255), "{}", out.text());
    assert!(
        out.stderr_text().contains(
            "\nnet1: unable to hotplug net1: command 'lxc-device -n 100 add veth100i1p eth0' failed: exit code 1\n"
        ),
        "{}",
        out.text()
    );
    assert_eq!(conf_text(&host, 100), before, "net1 never written");
    // PVE leaves its plumbing behind: the host end on its Port.
    assert!(host.has_link("veth100i1"));
    assert_eq!(host.ovs_get("Port", "veth100i1", "tag"), "20");
}

/// Containers 100 (net0 VLAN 10, net1 VLAN 20) and 101 (net0 VLAN 20 on 10.0.1.0/24) started
/// through op-agent's hookscript: PVE's `veth100i0` / `veth100i1` are now `vi100` / `vi100i1`.
fn renamed_by_op_agent(host: &TestHost) {
    host.manage_two_vlans(100);
    host.write_pve_conf(101, one_nic(101, 20, "10.0.1.102/24"));
    host.sim_ok_text(&["start", "100"]);
    host.sim_ok(&["start", "101"]);
    let links = host.links();
    for l in ["vi100", "vi100i1"] {
        assert!(links.contains(&l.to_string()), "{l}: {links:?}");
    }
    assert!(!links.iter().any(|l| l.starts_with("veth100")), "{links:?}");
    assert!(host.ping(100, "10.0.1.102"));
}

#[test]
fn with_op_agents_rename_delete_succeeds_but_leaves_the_nic_live() {
    let host = TestHost::new("sim-set-del-renamed");
    renamed_by_op_agent(&host);
    let out = host.sim(&["set", "100", "--delete", "net1"]);
    // PVE's veth_delete("veth100i1") finds nothing and reports success.
    assert!(out.status.success(), "{}", out.text());
    assert_eq!(conf_value(&host, 100, "net1"), None);
    // Today's behaviour: the NIC stays, plugged on its VLAN, and still carries traffic.
    assert!(host.has_link("vi100i1"));
    assert_eq!(host.ovs_get("Port", "vi100i1", "tag"), "20");
    assert!(ct_has_link(&host, 100, "eth1"));
    assert!(host.ping(100, "10.0.1.102"));
}

#[test]
fn with_op_agents_rename_a_tag_change_fails_writes_nothing_and_leaves_a_dead_port() {
    let host = TestHost::new("sim-set-tag-renamed");
    renamed_by_op_agent(&host);
    let before = conf_text(&host, 100);
    let net0 = conf_value(&host, 100, "net0").unwrap();
    let out = host.sim(&["set", "100", "-net0", &net0.replace("tag=10", "tag=20")]);
    assert_eq!(out.code(), Some(255), "{}", out.text());
    let stderr = out.stderr_text();
    assert!(
        stderr.contains(
            "400 Parameter verification failed.\n\
             net0: unable to hotplug net0: command '/sbin/ip link set dev veth100i0 up' failed: exit code 1\n"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("restoring old network due to hot-plug failure for veth100i0 failed - command '/sbin/ip link set dev veth100i0 up' failed: exit code 1"),
        "{stderr}"
    );
    assert_eq!(conf_text(&host, 100), before, "nothing written");
    // The rollback's add-port left a Port for a device that does not exist, on the old tag.
    assert!(host.ports("ovsbr0").contains(&"veth100i0".to_string()));
    assert_eq!(host.ovs_get("Port", "veth100i0", "tag"), "10");
    assert_eq!(host.ovs_get("Interface", "veth100i0", "ofport"), "-1");
    assert!(
        host.ovs_get("Interface", "veth100i0", "error")
            .contains("could not open network device veth100i0"),
        "{}",
        host.ovs_get("Interface", "veth100i0", "error")
    );
    // op-agent's port is untouched.
    assert_eq!(host.ovs_get("Port", "vi100", "tag"), "10");
}

#[test]
fn live_name_change_deletes_the_nic_and_hotplugs_it_again() {
    let host = TestHost::new("sim-rename-eth");
    host.write_pve_conf(100, conf(100, false, |n| n.tag(10), &[]));
    host.write_pve_conf(101, one_nic(101, 20, "10.0.2.2/24"));
    host.sim_ok(&["start", "100"]);
    host.sim_ok(&["start", "101"]);
    host.sim_ok(&["set", "100", "-net1", NET1]);
    let ifindex = host.link("veth100i1").unwrap()["ifindex"].clone();
    let eth2 = NET1.replace("name=eth1", "name=eth2");
    let out = host.sim(&["set", "100", "-net1", &eth2]);
    assert!(out.status.success(), "{}", out.text());
    assert_ne!(
        host.link("veth100i1").unwrap()["ifindex"],
        ifindex,
        "veth_delete + hotplug_net made a new pair"
    );
    assert_plugged(&host, "veth100i1", "ovsbr0", "20");
    assert!(!ct_has_link(&host, 100, "eth1"));
    assert!(ct_has_link(&host, 100, "eth2"));
    assert!(host.ping(100, "10.0.2.2"), "the address moved to eth2");
    assert_eq!(
        conf_value(&host, 100, "net1").as_deref(),
        Some(eth2.as_str())
    );
    assert!(!conf_text(&host, 100).contains("[pve:pending]"));
}

#[test]
fn with_op_agents_rename_a_name_change_gives_the_container_a_second_nic() {
    let host = TestHost::new("sim-set-name-renamed");
    renamed_by_op_agent(&host);
    let net1 = conf_value(&host, 100, "net1").unwrap();
    let out = host.sim(&[
        "set",
        "100",
        "-net1",
        &net1.replace("name=eth1", "name=eth2"),
    ]);
    // veth_delete("veth100i1") finds nothing; hotplug_net adds a new pair: success.
    assert!(out.status.success(), "{}", out.text());
    // Today's behaviour: the old NIC stays (op-agent's port), the new one is PVE's.
    assert!(ct_has_link(&host, 100, "eth1") && ct_has_link(&host, 100, "eth2"));
    assert_eq!(host.ovs_get("Port", "vi100i1", "tag"), "20");
    assert_plugged(&host, "veth100i1", "ovsbr0", "20");
    assert!(conf_value(&host, 100, "net1")
        .unwrap()
        .starts_with("name=eth2,"));
}
