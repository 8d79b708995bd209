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
