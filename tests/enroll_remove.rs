//! `op-agent enroll --remove` end to end, with `pct` = `pve-sim` (pve-container
//! `update_pct_config` for `--delete hookscript`, `update_net` for live NIC edits) on real LXC
//! containers, a private OVS and the watch service running: one step releases a running
//! container's NICs to PVE, removes op-agent's hookscript from its conf and its container
//! TOML; PVE's own live edits and the next start then work as on a host without op-agent.
//! Root only (fails, never skips). Run:
//! `cargo build -p pve-integration && cargo test --features failpoints --test enroll_remove`.

use op_testkit::{stays_pves_net0, wait_pves_net0, CmdOutput, Nic, PveConf, TestHost};
use std::time::Duration;

fn remove(host: &TestHost, path: &str, args: &[&str]) -> CmdOutput {
    let mut a = vec!["enroll", "--remove"];
    a.extend_from_slice(args);
    host.agent_cmd(&a).env("PATH", path).run()
}

fn conf(host: &TestHost, vmid: u32) -> String {
    std::fs::read_to_string(host.pve_root().pve_conf_path(vmid)).unwrap()
}

fn net0(host: &TestHost, vmid: u32) -> String {
    conf(host, vmid)
        .lines()
        .take_while(|l| !l.starts_with('['))
        .find_map(|l| l.strip_prefix("net0: ").map(str::to_string))
        .unwrap()
}

#[test]
fn remove_releases_unhooks_and_forgets_in_one_step() {
    let host = TestHost::new("unenr");
    host.manage_bridged(100, PveConf::bridged(100, 10));
    host.manage_bridged(101, PveConf::bridged(101, 10));
    host.sim_ok(&["start", "100"]);
    host.wait_converged(100, "vi100", 10, Duration::from_secs(5));
    let mut w = host.spawn_watch(&[]);
    let path = host.pve_root().pct_shim();
    let toml100 = host.pve_root().container_toml(100);

    // A dry run says what it would do and changes nothing.
    let out = remove(&host, &path, &["--dry-run", "100"]);
    assert_eq!(out.code(), Some(0), "{}", out.text());
    let text = out.stdout_text();
    for l in [
        "100: would run: op-agent release 100",
        "100: would run: pct set 100 --delete hookscript",
        "100: would remove ",
    ] {
        assert!(text.contains(l), "{l:?} in {text}");
    }
    host.converged(100, "vi100", 10).unwrap();
    assert!(conf(&host, 100).contains("hookscript: local:snippets/op-hook"));
    assert!(toml100.exists());

    // Running 100 and stopped 101 in one command.
    let out = remove(&host, &path, &["100", "101"]);
    assert_eq!(out.code(), Some(0), "{}", out.text());
    let text = out.stdout_text();
    assert!(
        text.contains("100: released net0 vi100 -> veth100i0 on ovsbr0 tag 10")
            && text.contains("100: ran pct set 100 --delete hookscript")
            && text.contains("101: ran pct set 101 --delete hookscript"),
        "{text}"
    );
    assert!(!text.contains("101: released"), "{text}");
    wait_pves_net0(&host, 100, 10, Duration::from_secs(1));
    for v in [100, 101] {
        assert!(
            !conf(&host, v).contains("hookscript"),
            "{v}: {}",
            conf(&host, v)
        );
        assert!(
            !host.pve_root().container_toml(v).exists(),
            "{v}: TOML left"
        );
    }
    // The watch leaves it alone: op-agent does not manage it any more.
    stays_pves_net0(&host, 100, 10, Duration::from_secs(2));
    let st = host.agent(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&st.stdout_text()).unwrap();
    assert!(
        !v["containers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["vmid"] == 100 || c["vmid"] == 101),
        "{v}"
    );

    // Audit rows: the release's and the removal's, the TOML's text kept.
    let rows = host.audit_rows_for(100);
    let steps: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|r| (r.phase.as_str(), r.step.as_str(), r.outcome.as_str()))
        .collect();
    for s in [
        ("release", "run.intent", "intent"),
        ("release", "release.add-port", "ok"),
        ("enroll", "run.intent", "intent"),
        ("enroll", "enroll.del-hookscript", "ok"),
        ("enroll", "enroll.del-toml", "ok"),
    ] {
        assert!(steps.contains(&s), "{s:?} in {steps:?}");
    }
    let del = rows.iter().find(|r| r.step == "enroll.del-toml").unwrap();
    assert!(del.detail.contains("network_type"), "{}", del.detail);
    assert!(host
        .audit_rows_for(101)
        .iter()
        .any(|r| r.step == "enroll.del-hookscript" && r.outcome == "ok"));

    // PVE's own live edit and the next start: as on a host without op-agent.
    let tag30 = net0(&host, 100).replace("tag=10", "tag=30");
    let out = host.sim(&["set", "100", "-net0", &tag30]);
    assert!(out.status.success(), "pve-sim set: {}", out.text());
    wait_pves_net0(&host, 100, 30, Duration::from_secs(1));
    host.sim_ok(&["stop", "100"]);
    host.sim_ok(&["start", "100"]);
    stays_pves_net0(&host, 100, 30, Duration::from_secs(2));

    // Again: nothing to do.
    let out = remove(&host, &path, &["100"]);
    assert_eq!(out.code(), Some(0), "{}", out.text());
    assert!(out.stdout_text().contains("not enrolled"), "{}", out.text());

    assert!(w.stop().is_some_and(|s| s.success()), "{}", w.log_text());
    host.assert_audit_intact("after enroll --remove");
}

#[test]
fn remove_keeps_everything_when_the_release_is_refused_and_other_hooks() {
    let host = TestHost::with_bridges("unenr-no", &["ovsbr0", "ovsbr1"], &[]);
    let path = host.pve_root().pct_shim();
    // PVE plugs net0 into ovsbr1; the TOML moves it to ovsbr0; then ovsbr1 goes.
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
    let out = remove(&host, &path, &["100"]);
    assert_eq!(out.code(), Some(69), "{}", out.text());
    assert!(
        out.stderr_text()
            .contains("the hookscript and container TOML are kept"),
        "{}",
        out.text()
    );
    host.converged(100, "vi100", 10).unwrap();
    assert!(conf(&host, 100).contains("hookscript: local:snippets/op-hook"));
    assert!(host.pve_root().container_toml(100).exists());
    assert!(!host.audit_rows_for(100).iter().any(|r| r.phase == "enroll"));

    // Another hookscript is never removed; the stale TOML is.
    host.install_snippet("other", "#!/bin/sh\nexit 0\n");
    host.write_pve_conf(101, PveConf::new(101).hookscript("local:snippets/other"));
    host.manage(101, "network_type = \"bridge\"\n");
    let out = remove(&host, &path, &["101"]);
    assert_eq!(out.code(), Some(0), "{}", out.text());
    assert!(conf(&host, 101).contains("hookscript: local:snippets/other"));
    assert!(!host.pve_root().container_toml(101).exists());
    let out = remove(&host, &path, &["102"]);
    assert_eq!(out.code(), Some(78), "{}", out.text());
}
