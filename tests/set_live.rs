//! `op-agent set` end to end: live edits of a running container's renamed NIC through
//! `pct set`, which here is `pve-sim set` (pve-container `update_net` / `hotplug_net`; it
//! fails on a NIC op-agent renamed) behind a `pct` on `PATH`, with real LXC containers on a
//! private OVS and the watch service running. Root only (fails, never skips). Run:
//! `cargo build -p pve-integration && cargo test --test set_live -- --nocapture`.

use op_testkit::{bridged_ip, pve_mac, CmdOutput, Nic, PveConf, TestHost};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn conf_net0(host: &TestHost, vmid: u32) -> String {
    let text =
        std::fs::read_to_string(host.root().join(format!("etc/pve/lxc/{vmid}.conf"))).unwrap();
    text.lines()
        .take_while(|l| !l.starts_with('['))
        .find_map(|l| l.strip_prefix("net0: ").map(str::to_string))
        .unwrap()
}

/// `net0` value with `key=old` replaced by `key=new` (or `key=new` appended).
fn with(net0: &str, key: &str, new: &str) -> String {
    let mut parts: Vec<String> = net0
        .split(',')
        .filter(|p| !p.starts_with(&format!("{key}=")))
        .map(str::to_string)
        .collect();
    parts.push(format!("{key}={new}"));
    parts.join(",")
}

fn set(host: &TestHost, path: &str, vmid: u32, net0: &str) -> CmdOutput {
    let t = Instant::now();
    let out = host
        .agent_cmd(&["set", &vmid.to_string(), "-net0", net0])
        .env("PATH", path)
        .run();
    eprintln!(
        "op-agent set {vmid} -net0 {net0}: exit {:?} in {} ms: {}",
        out.code(),
        t.elapsed().as_millis(),
        out.text().trim()
    );
    // pct waits for PVE's config lock, which a watch run may hold while it waits for the
    // per-vmid lock this command holds: that must not stall the edit.
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "set took {:?}",
        t.elapsed()
    );
    out
}

/// `Ok` when `vi100` is op-agent's Port on `bridge` with `tag`, ofport > 0, and no
/// `veth100i0` link or Port is left anywhere.
fn on(host: &TestHost, bridge: &str, tag: u16) -> Result<(), String> {
    if host.has_link("veth100i0") {
        return Err("veth100i0 exists".into());
    }
    for b in ["ovsbr0", "ovsbr1"] {
        if host.ports(b).contains(&"veth100i0".to_string()) {
            return Err(format!("Port veth100i0 on {b}"));
        }
    }
    if !host.ports(bridge).contains(&"vi100".to_string()) {
        return Err(format!("no Port vi100 on {bridge}"));
    }
    let got = host.ovs_get("Port", "vi100", "tag");
    if got != tag.to_string() {
        return Err(format!("Port vi100 tag {got}"));
    }
    let owner = host.ovs_get("Port", "vi100", "external_ids:owner");
    if owner.trim_matches('"') != "op-agent" {
        return Err(format!("owner {owner}"));
    }
    let of: i64 = host
        .ovs_get("Interface", "vi100", "ofport")
        .parse()
        .unwrap_or(-1);
    if of <= 0 {
        return Err(format!("ofport {of}"));
    }
    if !host.is_up("vi100") {
        return Err("vi100 down".into());
    }
    Ok(())
}

fn assert_on(host: &TestHost, bridge: &str, tag: u16) {
    if let Err(e) = on(host, bridge, tag) {
        panic!("vi100 not on {bridge} tag {tag}: {e}");
    }
}

fn ct(host: &TestHost, vmid: u32, bridge: &str, tag: u16) {
    host.manage_bridged(
        vmid,
        PveConf::op_hook(vmid).nic(
            Nic::new(0, bridge)
                .hwaddr(&pve_mac(vmid))
                .ip(&format!("{}/24", bridged_ip(vmid)))
                .tag(tag),
        ),
    );
    host.sim_ok(&["start", &vmid.to_string()]);
}

/// Floods pings (every 5 ms for `secs`) from `from` to `ip` while `during` runs; returns
/// (sent, received).
fn ping_during(
    host: &TestHost,
    from: u32,
    ip: &str,
    secs: u32,
    during: impl FnOnce(),
) -> (u32, u32) {
    let lxcpath = host.lxcpath().display().to_string();
    let child = Command::new("ip")
        .args(["netns", "exec", host.netns(), "lxc-attach", "-P", &lxcpath])
        .args([
            "-n",
            &from.to_string(),
            "--",
            "ping",
            "-i",
            "0.005",
            "-W",
            "1",
        ])
        .args(["-w", &secs.to_string(), ip])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    during();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let line = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("no ping summary: {text}"));
    let num = |i: usize| -> u32 {
        let part = line.split(", ").nth(i).unwrap_or_default();
        let n = part.split_whitespace().next().unwrap_or_default();
        n.parse()
            .unwrap_or_else(|_| panic!("ping summary {line:?}"))
    };
    (num(0), num(1))
}

fn set_rows(host: &TestHost) -> Vec<(String, String)> {
    host.audit_rows_for(100)
        .into_iter()
        .filter(|r| r.phase == "set")
        .map(|r| (r.step, r.outcome))
        .collect()
}

#[test]
fn set_changes_tag_bridge_rate_and_link_state_live() {
    let host = TestHost::with_bridges("set", &["ovsbr0", "ovsbr1"], &[]);
    let path = host.pve_root().pct_shim();
    ct(&host, 100, "ovsbr0", 10);
    ct(&host, 101, "ovsbr0", 10);
    ct(&host, 102, "ovsbr0", 20);
    ct(&host, 103, "ovsbr1", 20);
    host.wait_converged(100, "vi100", 10, Duration::from_secs(5));
    let mut w = host.spawn_watch(&[]);
    assert!(host.ping(100, &bridged_ip(101)), "100 reaches 101 on 10");

    // VLAN 10 -> 20.
    let out = set(
        &host,
        &path,
        100,
        &with(&conf_net0(&host, 100), "tag", "20"),
    );
    assert_eq!(out.code(), Some(0), "{}", out.text());
    assert!(conf_net0(&host, 100).contains("tag=20"));
    assert_on(&host, "ovsbr0", 20);
    assert!(host.ping(100, &bridged_ip(102)), "100 reaches 102 on 20");
    assert!(
        !host.ping(100, &bridged_ip(101)),
        "100 must not reach 101 on 10"
    );
    let rows = set_rows(&host);
    for s in [
        "run.intent",
        "release.rename",
        "release.add-port",
        "set.pct",
        "link.rename",
    ] {
        assert!(rows.iter().any(|(st, _)| st == s), "{s} missing: {rows:?}");
    }
    assert!(rows.iter().all(|(_, o)| o != "failed"), "{rows:?}");

    // ovsbr0 -> ovsbr1 (VLAN 20 there).
    let out = set(
        &host,
        &path,
        100,
        &with(&conf_net0(&host, 100), "bridge", "ovsbr1"),
    );
    assert_eq!(out.code(), Some(0), "{}", out.text());
    assert!(conf_net0(&host, 100).contains("bridge=ovsbr1"));
    assert_on(&host, "ovsbr1", 20);
    assert!(!host.ports("ovsbr0").contains(&"vi100".to_string()));
    assert!(
        host.ping(100, &bridged_ip(103)),
        "100 reaches 103 on ovsbr1"
    );
    assert!(!host.ping(100, &bridged_ip(102)), "not 102 on ovsbr0");

    // rate=1 (MB/s): op-agent's ingress policing on vi100; the blip of the whole edit.
    let net0 = with(&conf_net0(&host, 100), "rate", "1");
    let (sent, got) = ping_during(&host, 103, &bridged_ip(100), 3, || {
        let out = set(&host, &path, 100, &net0);
        assert_eq!(out.code(), Some(0), "{}", out.text());
    });
    eprintln!(
        "blip during op-agent set rate=1: {} of {sent} pings (5 ms apart) lost, ~{} ms",
        sent - got,
        (sent - got) * 5
    );
    assert!(conf_net0(&host, 100).contains("rate=1"));
    assert_on(&host, "ovsbr1", 20);
    assert_eq!(
        host.ovs_get("Interface", "vi100", "ingress_policing_rate"),
        "8388"
    );

    // link_down=1: no Port, link down; then back.
    let out = set(
        &host,
        &path,
        100,
        &with(&conf_net0(&host, 100), "link_down", "1"),
    );
    assert_eq!(out.code(), Some(0), "{}", out.text());
    assert!(conf_net0(&host, 100).contains("link_down=1"));
    assert!(host.has_link("vi100") && !host.is_up("vi100"), "vi100 down");
    assert!(!host.has_link("veth100i0"));
    for b in ["ovsbr0", "ovsbr1"] {
        let ports = host.ports(b);
        assert!(
            !ports.contains(&"vi100".to_string()) && !ports.contains(&"veth100i0".to_string()),
            "{b}: {ports:?}"
        );
    }
    assert!(!host.ping(100, &bridged_ip(103)));
    let out = set(
        &host,
        &path,
        100,
        &with(&conf_net0(&host, 100), "link_down", "0"),
    );
    assert_eq!(out.code(), Some(0), "{}", out.text());
    assert!(!conf_net0(&host, 100).contains("link_down=1"));
    assert_on(&host, "ovsbr1", 20);
    assert!(host.ping(100, &bridged_ip(103)), "back on ovsbr1 VLAN 20");

    // The watch did not fight any of it.
    std::thread::sleep(Duration::from_millis(1500));
    assert_on(&host, "ovsbr1", 20);
    assert!(w.stop().is_some_and(|s| s.success()), "{}", w.log_text());
    host.assert_audit_intact("after set");
}

#[test]
fn set_refused_by_pve_leaves_the_old_values_on_op_agents_name() {
    let host = TestHost::new("set-no");
    let path = host.pve_root().pct_shim();
    ct(&host, 100, "ovsbr0", 10);
    ct(&host, 101, "ovsbr0", 10);
    host.wait_converged(100, "vi100", 10, Duration::from_secs(5));
    let before = conf_net0(&host, 100);

    let out = set(&host, &path, 100, &with(&before, "tag", "5000"));
    assert_eq!(out.code(), Some(1), "{}", out.text());
    let err = out.stderr_text();
    let line = err
        .lines()
        .find(|l| l.starts_with("op-agent set: "))
        .unwrap_or_else(|| panic!("no op-agent line: {err}"));
    assert!(
        line.contains("400 Parameter verification failed.") && line.contains("4094"),
        "PVE's message: {line}"
    );
    assert_eq!(conf_net0(&host, 100), before, "PVE wrote nothing");
    host.converged(100, "vi100", 10).unwrap();
    assert!(host.ping(100, &bridged_ip(101)), "still on VLAN 10");
    let rows = set_rows(&host);
    assert!(
        rows.iter().any(|(s, o)| s == "set.pct" && o == "failed"),
        "{rows:?}"
    );

    // A stopped container: just pct set.
    host.manage_bridged(104, PveConf::bridged(104, 10));
    let out = set(
        &host,
        &path,
        104,
        &with(&conf_net0(&host, 104), "tag", "30"),
    );
    assert_eq!(out.code(), Some(0), "{}", out.text());
    assert!(conf_net0(&host, 104).contains("tag=30"));
    host.assert_audit_intact("after a refused set");
}
