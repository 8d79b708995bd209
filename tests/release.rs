//! `op-agent release` end to end, through `pve-sim` with real LXC containers on a private OVS
//! and the watch service running: the NIC goes back to PVE's name and Port (as PVE's
//! `tap_plug` makes it), the watch leaves it there, PVE's own live `pct set -net0 …,tag=30`
//! (pve-sim's `update_net`, which fails on a renamed NIC) then succeeds, `op-agent apply`
//! takes the NIC back on the new tag, and a release lasts only until the next start.
//! Root only (fails, never skips). Run:
//! `cargo build -p pve-integration && cargo test --test release`.

use op_testkit::{
    bridged_ip, op_agent_bin, stays_pves_net0, wait_pves_net0, Nic, PveConf, TestHost,
};
use std::time::{Duration, Instant};

fn conf_net0(host: &TestHost, vmid: u32) -> String {
    let text =
        std::fs::read_to_string(host.root().join(format!("etc/pve/lxc/{vmid}.conf"))).unwrap();
    text.lines()
        .take_while(|l| !l.starts_with('['))
        .find_map(|l| l.strip_prefix("net0: ").map(str::to_string))
        .unwrap()
}

fn wait_pves(host: &TestHost, tag: u16, limit: Duration) {
    wait_pves_net0(host, 100, tag, limit);
}

fn stays_pves(host: &TestHost, tag: u16, d: Duration) {
    stays_pves_net0(host, 100, tag, d);
}

/// The package's `debian/prerm remove`, run in the namespace with this build's op-agent first
/// on `PATH` and the host's agent.toml (`OP_AGENT_CONFIG`): its stderr.
fn prerm(host: &TestHost) -> String {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("debian/prerm");
    let bin = op_agent_bin();
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = host.run_env(
        &["sh", script.to_str().unwrap(), "remove"],
        &[("PATH", &path)],
    );
    assert_eq!(out.code(), Some(0), "prerm: {}", out.text());
    out.stderr_text()
}

#[test]
fn release_then_pves_own_hotplug_works_and_apply_takes_the_nic_back() {
    let host = TestHost::new("rel");
    host.manage_bridged(100, PveConf::bridged(100, 10));
    host.manage_bridged(101, PveConf::bridged(101, 10));
    host.sim_ok(&["start", "100"]);
    host.sim_ok(&["start", "101"]);
    host.wait_converged(100, "vi100", 10, Duration::from_secs(5));
    host.wait_converged(101, "vi101", 10, Duration::from_secs(5));
    let mut w = host.spawn_watch(&[]);
    // prerm on removal names both and the one command that releases them.
    let text = prerm(&host);
    assert!(
        text.contains("  100\n  101\n") && text.contains("op-agent release --all"),
        "{text}"
    );

    // PVE's live edit of net0's tag (on the renamed NIC it would fail: no veth100i0).
    let net0 = conf_net0(&host, 100);
    let tag30 = net0.replace("tag=10", "tag=30");
    assert_ne!(net0, tag30);

    let t = Instant::now();
    let out = host.agent(&["release", "100"]);
    let took = t.elapsed();
    assert_eq!(out.code(), Some(0), "{}", out.text());
    eprintln!(
        "release took {} ms: {}",
        took.as_millis(),
        out.stdout_text().trim()
    );
    assert!(
        out.stdout_text()
            .contains("net0 vi100 -> veth100i0 on ovsbr0 tag 10"),
        "{}",
        out.text()
    );
    wait_pves(&host, 10, Duration::from_secs(1));
    assert!(
        host.ping(100, &bridged_ip(101)),
        "100 reaches 101 on PVE's Port"
    );
    stays_pves(&host, 10, Duration::from_secs(3));
    let steps: Vec<(String, String)> = host
        .audit_rows_for(100)
        .into_iter()
        .filter(|r| r.phase == "release")
        .map(|r| (r.step, r.outcome))
        .collect();
    for s in ["run.intent", "release.rename", "release.add-port"] {
        assert!(steps.iter().any(|(st, _)| st == s), "{steps:?}");
    }
    assert!(steps.iter().all(|(_, o)| o != "failed"), "{steps:?}");
    let st = host.agent(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&st.stdout_text()).unwrap();
    let c = v["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["vmid"] == 100)
        .unwrap()
        .clone();
    assert_eq!(c["nics"][0]["state"], "released", "{c}");
    let list = host.agent(&["release", "--list"]);
    assert_eq!(
        (list.code(), list.stdout_text().as_str()),
        (Some(0), "101\n"),
        "{}",
        list.text()
    );
    // A second release changes nothing.
    let again = host.agent(&["release", "100"]);
    assert_eq!(again.code(), Some(0), "{}", again.text());
    assert!(again.stdout_text().contains("already released"));

    // PVE's own hotplug (pve-container update_net: tap_unplug, tap_plug, ip link set up).
    let out = host.sim(&["set", "100", "-net0", &tag30]);
    assert!(out.status.success(), "pve-sim set: {}", out.text());
    wait_pves(&host, 30, Duration::from_secs(1));
    assert!(
        !host.ping(100, &bridged_ip(101)),
        "VLAN 30 must not reach 101 on 10"
    );
    stays_pves(&host, 30, Duration::from_secs(3));

    // apply takes it back with the conf's new tag.
    let out = host.agent(&["apply", "100"]);
    assert_eq!(out.code(), Some(0), "{}", out.text());
    host.wait_converged(100, "vi100", 30, Duration::from_secs(2));
    assert!(!host.has_link("veth100i0"));

    // A release lasts until the next start: the hooks take the NIC again.
    let out = host.agent(&["release", "--all"]);
    assert_eq!(out.code(), Some(0), "{}", out.text());
    assert!(
        out.stdout_text().contains("101: net0 vi101 -> veth101i0"),
        "{}",
        out.text()
    );
    wait_pves(&host, 30, Duration::from_secs(1));
    host.sim_ok(&["stop", "100"]);
    host.sim_ok(&["start", "100"]);
    host.wait_converged(100, "vi100", 30, Duration::from_secs(5));
    assert!(host.has_link("veth101i0"), "101 stays released");
    let text = prerm(&host);
    assert!(
        text.contains("  100\n") && !text.contains("  101\n"),
        "{text}"
    );
    host.sim_ok(&["stop", "100"]);
    let text = prerm(&host);
    assert!(!text.contains("op-agent release --all"), "{text}");

    assert!(w.stop().is_some_and(|s| s.success()), "{}", w.log_text());
    host.assert_audit_intact("after release");
}

#[test]
fn release_refuses_what_it_cannot_hand_back() {
    let host = TestHost::new("rel-no");
    host.manage_bridged(100, PveConf::bridged(100, 10));
    let out = host.agent(&["release", "100"]);
    assert_eq!(out.code(), Some(1), "{}", out.text());
    assert!(out.stderr_text().contains("not running"), "{}", out.text());
    let out = host.agent(&["release", "105"]);
    assert_eq!(out.code(), Some(1), "{}", out.text());
    assert!(out.stderr_text().contains("not managed"), "{}", out.text());
    let out = host.agent(&["release", "1x"]);
    assert_eq!(out.code(), Some(64), "{}", out.text());
    let out = host.agent(&["release"]);
    assert_ne!(out.code(), Some(0), "{}", out.text());
}

#[test]
fn release_changes_nothing_when_pves_bridge_is_gone() {
    let host = TestHost::with_bridges("rel-br", &["ovsbr0", "ovsbr1"], &[]);
    // PVE plugs net0 into ovsbr1; the container TOML moves it to ovsbr0.
    host.write_pve_conf(
        100,
        PveConf::op_hook(100).nic(Nic::new(0, "ovsbr1").ip("10.10.0.101/24").tag(10)),
    );
    host.manage(
        100,
        "network_type = \"bridge\"\n[[nic]]\nnet = 0\nbridge = \"ovsbr0\"\n",
    );
    host.sim_ok(&["start", "100"]);
    host.wait_converged(100, "vi100", 10, Duration::from_secs(5));
    host.vsctl_ok(&["del-br", "ovsbr1"]);

    let out = host.agent(&["release", "100"]);
    assert_eq!(out.code(), Some(69), "{}", out.text());
    let err = out.stderr_text();
    assert!(
        err.contains("bridge 'ovsbr1' is neither a linux nor an OVS bridge")
            && err.contains("nothing was changed"),
        "{err}"
    );
    host.converged(100, "vi100", 10).unwrap();
    let rows = host.audit_rows_for(100);
    let last = rows.last().unwrap();
    assert_eq!(
        (
            last.phase.as_str(),
            last.step.as_str(),
            last.outcome.as_str()
        ),
        ("release", "run.failed", "failed")
    );
    assert!(!rows
        .iter()
        .any(|r| r.phase == "release" && r.step == "run.intent"));
    // Not left released: op-agent still manages it.
    let st = host.agent(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&st.stdout_text()).unwrap();
    assert_eq!(v["containers"][0]["nics"][0]["state"], "ok", "{v}");
}

/// ovs-vswitchd frozen (SIGSTOP) during `release`: it cannot let go of `vi100`, so the NIC is
/// not renamed under it and the release fails; no dead Port for a `veth100i0` that does not
/// exist is left behind (the watch would take it for a failed PVE live edit), and once
/// ovs-vswitchd runs again `apply` puts the NIC back on op-agent's Port.
#[test]
fn release_with_ovs_vswitchd_frozen_leaves_no_dead_port() {
    use nix::sys::signal::Signal;
    let host = TestHost::new("rel-stop");
    let mut cfg = host.config();
    cfg.hook_deadline_ms = Some(2000);
    host.set_config(&cfg);
    host.manage_bridged(100, PveConf::bridged(100, 10));
    host.sim_ok(&["start", "100"]);
    host.wait_converged(100, "vi100", 10, Duration::from_secs(5));
    host.ovs().signal("ovs-vswitchd", Signal::SIGSTOP);
    let out = host.agent(&["release", "100"]);
    host.ovs().signal("ovs-vswitchd", Signal::SIGCONT);
    assert_ne!(out.code(), Some(0), "{}", out.text());
    assert!(host.has_link("vi100") && !host.has_link("veth100i0"));
    assert!(
        !host.ports("ovsbr0").contains(&"veth100i0".to_string()),
        "a Port for a device that does not exist: {:?}",
        host.ports("ovsbr0")
    );
    let out = host.agent(&["apply", "100"]);
    assert_eq!(out.code(), Some(0), "{}", out.text());
    host.converged(100, "vi100", 10).unwrap();
    assert!(host
        .audit_rows_for(100)
        .iter()
        .any(|r| r.phase == "release"));
}

/// `release --list` (what the package's prerm hands back) also names a running container whose
/// hookscript was removed by hand while op-agent's renamed link is still there (it was left
/// out, so removing the package left that NIC renamed), but not a container with only a stale
/// TOML that op-agent never touched.
#[test]
fn release_list_names_a_running_container_whose_hookscript_was_removed_by_hand() {
    let host = TestHost::new("rel-list");
    for v in [100, 101] {
        host.manage_bridged(v, PveConf::bridged(v, 10));
        host.sim_ok(&["start", &v.to_string()]);
        host.wait_converged(v, &format!("vi{v}"), 10, Duration::from_secs(5));
    }
    let unhooked = |v: u32| {
        PveConf::new(v).nic(
            Nic::new(0, "ovsbr0")
                .hwaddr(&op_testkit::pve_mac(v))
                .ip(&format!("{}/24", bridged_ip(v)))
                .tag(10),
        )
    };
    // By hand, not through `pct set --delete hookscript` (no hook runs either way).
    host.write_pve_conf(101, unhooked(101));
    // A stale TOML beside a container that never had op-agent's hookscript.
    host.manage(102, "network_type = \"bridge\"\n");
    host.write_pve_conf(102, unhooked(102));
    host.sim_ok(&["start", "102"]);
    assert!(host.ports("ovsbr0").contains(&"veth102i0".to_string()));
    let list = host.agent(&["release", "--list"]);
    assert_eq!(
        (list.code(), list.stdout_text().as_str()),
        (Some(0), "100\n101\n"),
        "{}",
        list.text()
    );
    let rel = host.agent(&["release", "--all"]);
    assert_eq!(rel.code(), Some(0), "{}", rel.text());
    assert!(
        host.ports("ovsbr0").contains(&"veth101i0".to_string()),
        "{:?}",
        host.ports("ovsbr0")
    );
    // 100 taken back, then its hookscript and its TOML removed by hand: `release` cannot
    // hand it back without the TOML, and says how the NIC gets back to PVE.
    let a = host.agent(&["apply", "100"]);
    assert_eq!(a.code(), Some(0), "{}", a.text());
    host.write_pve_conf(100, unhooked(100));
    std::fs::remove_file(host.pve_root().container_toml(100)).unwrap();
    let r = host.agent(&["release", "100"]);
    assert_eq!(r.code(), Some(1), "{}", r.text());
    assert!(
        r.stderr_text().contains("vi100 still has op-agent's name")
            && r.stderr_text().contains("pct reboot 100"),
        "{}",
        r.text()
    );
    for v in ["100", "101", "102"] {
        host.sim_ok(&["stop", v]);
    }
}
