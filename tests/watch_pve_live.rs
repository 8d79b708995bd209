//! End-to-end tests of `op-agent watch` following PVE's conf, through `pve-sim set` (pct set on
//! a running container, as pve-container does it) with real LXC and a private OVS: a NIC
//! hot-removed, hot-added, replaced by a live name change, a tag changed by a conf write
//! without pct (as a change replicated from another node), and the faults of that event
//! source: inotify disabled (the scan takes over) and PVE's config lock held longer than the
//! watch's timeout (retried, not skipped). Root only (fails, never skips).
//! Run: `cargo build -p pve-integration && cargo test --test watch_pve_live`.

use op_testkit::{bridged_ip, Nic, PveConf, TestHost};
use std::time::{Duration, Instant};

/// The text of container `vmid`'s PVE conf.
fn conf_text(host: &TestHost, vmid: u32) -> String {
    std::fs::read_to_string(host.root().join(format!("etc/pve/lxc/{vmid}.conf"))).unwrap()
}

/// Writes container `vmid`'s conf as PVE does (a temp file renamed over it), without pct.
fn write_conf(host: &TestHost, vmid: u32, text: &str) {
    let path = host.root().join(format!("etc/pve/lxc/{vmid}.conf"));
    let tmp = path.with_extension("conf.tmp.4242");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
}

/// The main-section value of `key` in container `vmid`'s conf.
fn conf_value(host: &TestHost, vmid: u32, key: &str) -> Option<String> {
    conf_text(host, vmid)
        .lines()
        .take_while(|l| !l.starts_with('['))
        .find_map(|l| l.strip_prefix(&format!("{key}: ")).map(str::to_string))
}

/// The links inside container `vmid` (its network namespace), `lo` aside.
fn ct_links(host: &TestHost, vmid: u32) -> Vec<String> {
    let lxcpath = host.lxcpath().display().to_string();
    let out = host.run(&[
        "lxc-attach",
        "-P",
        &lxcpath,
        "-n",
        &vmid.to_string(),
        "--",
        "ip",
        "-o",
        "link",
        "show",
    ]);
    out.stdout_text()
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .filter(|n| n != "lo")
        .collect()
}

/// Polls `check` every 10 ms until it is `Ok` or `limit` passed since `since` (then panics
/// with its last error and the watch log); returns the time since `since`.
fn wait_until(
    host: &TestHost,
    since: Instant,
    limit: Duration,
    mut check: impl FnMut() -> Result<(), String>,
) -> Duration {
    loop {
        match check() {
            Ok(()) => return since.elapsed(),
            Err(e) => assert!(
                since.elapsed() < limit,
                "not within {limit:?}: {e}\nwatch log:\n{}",
                std::fs::read_to_string(host.watch_log()).unwrap_or_default()
            ),
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until the audit log has a `watch` row for `vmid` after row `after`.
fn wait_watch_row(host: &TestHost, vmid: i64, after: usize) {
    wait_until(host, Instant::now(), Duration::from_secs(10), || {
        let rows = host.audit_rows();
        rows[after.min(rows.len())..]
            .iter()
            .any(|r| r.vmid == vmid && r.phase == "watch")
            .then_some(())
            .ok_or_else(|| format!("no watch row for {vmid}"))
    });
}

/// Containers 100 (net0 VLAN 10 on 10.0.0.0/24, net1 VLAN 20 on 10.0.1.0/24) and 101 (net0
/// VLAN 20, 10.0.1.102) started through op-agent's hookscript (`vi100`, `vi100i1`, `vi101`),
/// and `op-agent watch ARGS` running after its start-up reconcile.
fn two_nics(host: &TestHost, args: &[&str]) -> op_testkit::Service {
    host.manage_two_vlans(100);
    host.manage_bridged(
        101,
        PveConf::op_hook(101).nic(Nic::with_id(0, "ovsbr0", 101).ip("10.0.1.102/24").tag(20)),
    );
    host.sim_ok(&["start", "100"]);
    host.sim_ok(&["start", "101"]);
    host.wait_converged(100, "vi100i1", 20, Duration::from_secs(2));
    assert!(host.ping(100, "10.0.1.102"), "eth1 carries traffic");
    let w = host.spawn_watch(args);
    wait_watch_row(host, 100, 0);
    wait_watch_row(host, 101, 0);
    w
}

/// Containers 100 and 101 with one NIC each on VLAN 20 ([`bridged_ip`]), watch running.
fn one_nic(host: &TestHost, args: &[&str]) -> op_testkit::Service {
    host.manage_bridged(100, PveConf::bridged(100, 20));
    host.manage_bridged(101, PveConf::bridged(101, 20));
    host.sim_ok(&["start", "100"]);
    host.sim_ok(&["start", "101"]);
    host.wait_converged(100, "vi100", 20, Duration::from_secs(2));
    let w = host.spawn_watch(args);
    wait_watch_row(host, 100, 0);
    wait_watch_row(host, 101, 0);
    w
}

/// Changes `tag=<from>` to `tag=<to>` in container 100's net0 by a conf write (no pct).
fn edit_net0_tag(host: &TestHost, from: u16, to: u16) {
    let text = conf_text(host, 100);
    let net0 = conf_value(host, 100, "net0").unwrap();
    let new = net0.replace(&format!("tag={from}"), &format!("tag={to}"));
    assert_ne!(net0, new);
    write_conf(host, 100, &text.replace(&net0, &new));
}

fn stop(mut w: op_testkit::Service) {
    let st = w.stop().expect("watch exits on SIGTERM");
    assert!(st.success(), "watch exit status {st:?}: {}", w.log_text());
}

#[test]
fn hot_remove_deletes_the_nic_and_its_port_within_1s() {
    let host = TestHost::new("wl-hot-remove");
    let w = two_nics(&host, &[]);
    let before = host.audit_rows().len();
    let t = Instant::now();
    let out = host.sim(&["set", "100", "--delete", "net1"]);
    assert!(out.status.success(), "{}", out.text());
    let written = Instant::now();
    assert_eq!(conf_value(&host, 100, "net1"), None);
    let took = wait_until(&host, written, Duration::from_secs(1), || {
        if host.has_link("vi100i1") {
            return Err("vi100i1 still exists".into());
        }
        if host.ports("ovsbr0").contains(&"vi100i1".to_string()) {
            return Err("Port vi100i1 still exists".into());
        }
        if ct_links(&host, 100).contains(&"eth1".to_string()) {
            return Err("eth1 still in the container".into());
        }
        Ok(())
    });
    eprintln!(
        "hot-remove: converged {} ms after the conf write ({} ms after pve-sim set started)",
        took.as_millis(),
        t.elapsed().as_millis()
    );
    assert_eq!(ct_links(&host, 100), vec!["eth0".to_string()]);
    assert!(!host.ping(100, "10.0.1.102"), "no way to VLAN 20 any more");
    let rows = host.audit_rows();
    let new = &rows[before..];
    let removed: Vec<_> = new
        .iter()
        .filter(|r| r.vmid == 100 && r.phase == "watch" && r.step == "nic.removed")
        .collect();
    assert_eq!(removed.len(), 1, "{new:?}");
    let d = removed[0].detail_json();
    assert_eq!(d["link"], "vi100i1");
    assert_eq!(d["net"], 1);
    assert!(d["reason"]
        .as_str()
        .unwrap()
        .contains("no longer in the PVE conf"));
    assert!(
        new.iter().any(|r| r.step == "ovs.del-port"
            && r.outcome == "ok"
            && r.detail_json()["port"] == "vi100i1"),
        "{new:?}"
    );
    // net0 untouched.
    host.wait_converged(100, "vi100", 10, Duration::from_secs(1));
    host.assert_audit_intact("after a hot-remove");
    stop(w);
}

#[test]
fn hot_add_plugs_the_new_nic_within_1s_of_the_conf_write() {
    let host = TestHost::new("wl-hot-add");
    host.manage_bridged(100, PveConf::bridged(100, 10));
    host.manage_bridged(
        101,
        PveConf::op_hook(101).nic(Nic::with_id(0, "ovsbr0", 101).ip("10.0.2.2/24").tag(30)),
    );
    host.sim_ok(&["start", "100"]);
    host.sim_ok(&["start", "101"]);
    host.wait_converged(100, "vi100", 10, Duration::from_secs(2));
    let w = host.spawn_watch(&[]);
    wait_watch_row(&host, 100, 0);
    let t = Instant::now();
    let out = host.sim(&[
        "set",
        "100",
        "-net1",
        "name=eth1,bridge=ovsbr0,hwaddr=BC:24:11:01:00:64,ip=10.0.2.1/24,tag=30,type=veth",
    ]);
    assert!(out.status.success(), "{}", out.text());
    let written = Instant::now();
    let took = wait_until(&host, written, Duration::from_secs(1), || {
        host.converged(100, "vi100i1", 30)
    });
    eprintln!(
        "hot-add: vi100i1 on tag 30 {} ms after the conf write ({} ms after pve-sim set started)",
        took.as_millis(),
        t.elapsed().as_millis()
    );
    assert!(!host.has_link("veth100i1"));
    assert!(!host.ports("ovsbr0").contains(&"veth100i1".to_string()));
    assert!(host.ping(100, "10.0.2.2"), "eth1 answers on VLAN 30");
    assert_eq!(
        ct_links(&host, 100),
        vec!["eth0".to_string(), "eth1".to_string()]
    );
    stop(w);
}

#[test]
fn a_live_name_change_leaves_exactly_one_nic_on_op_agents_name() {
    let host = TestHost::new("wl-replace");
    let w = one_nic(&host, &[]);
    let old = host.link("vi100").unwrap()["ifindex"].clone();
    let before = host.audit_rows().len();
    let net0 = conf_value(&host, 100, "net0").unwrap();
    let t = Instant::now();
    let out = host.sim(&[
        "set",
        "100",
        "-net0",
        &net0.replace("name=eth0", "name=eth7"),
    ]);
    assert!(out.status.success(), "{}", out.text());
    let took = wait_until(&host, t, Duration::from_secs(2), || {
        let links = ct_links(&host, 100);
        if links != vec!["eth7".to_string()] {
            return Err(format!("container links {links:?}"));
        }
        if host.has_link("veth100i0") {
            return Err("veth100i0 still exists".into());
        }
        host.converged(100, "vi100", 20)
    });
    eprintln!(
        "NIC replaced: converged {} ms after pve-sim set started",
        took.as_millis()
    );
    assert_ne!(host.link("vi100").unwrap()["ifindex"], old, "the new pair");
    let rows = host.audit_rows();
    let new = &rows[before..];
    assert!(
        new.iter().any(|r| r.step == "nic.replaced"
            && r.outcome == "ok"
            && r.detail_json()["ifindex"] == old),
        "{new:?}"
    );
    assert!(host.ping(100, &bridged_ip(101)), "eth7 carries traffic");
    stop(w);
}

#[test]
fn a_tag_changed_by_a_conf_write_is_applied_within_1s() {
    let host = TestHost::new("wl-conf-tag");
    let w = one_nic(&host, &[]);
    let t = Instant::now();
    edit_net0_tag(&host, 20, 30);
    let took = wait_until(&host, t, Duration::from_secs(1), || {
        host.converged(100, "vi100", 30)
    });
    eprintln!(
        "conf-edit tag change applied {} ms after the write",
        took.as_millis()
    );
    assert!(
        !host.ping(100, &bridged_ip(101)),
        "VLAN 30 does not reach 101"
    );
    stop(w);
}

#[test]
fn without_inotify_the_scan_applies_a_conf_change_within_its_period() {
    let host = TestHost::new("wl-no-inotify");
    let w = one_nic(&host, &["--no-inotify", "--conf-poll-ms", "500"]);
    assert!(
        std::fs::read_to_string(host.watch_log())
            .unwrap_or_default()
            .contains("inotify disabled"),
        "one warning"
    );
    let t = Instant::now();
    edit_net0_tag(&host, 20, 30);
    let took = wait_until(&host, t, Duration::from_millis(1500), || {
        host.converged(100, "vi100", 30)
    });
    eprintln!(
        "no inotify: applied {} ms after the write",
        took.as_millis()
    );
    stop(w);
}

#[test]
fn a_conf_change_waits_for_pves_config_lock_and_is_applied_after_it() {
    let host = TestHost::new("wl-lock");
    let w = one_nic(&host, &["--conf-lock-ms", "200"]);
    let dir = host.root().join("run/lock/lxc");
    std::fs::create_dir_all(&dir).unwrap();
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("pve-config-100.lock"))
        .unwrap();
    lock.lock().unwrap();
    edit_net0_tag(&host, 20, 30);
    // Held for 1.5 s: several timeouts of 200 ms. Nothing is applied meanwhile.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        host.ovs_get("Port", "vi100", "tag"),
        "20",
        "not read under a held lock"
    );
    let log = std::fs::read_to_string(host.watch_log()).unwrap_or_default();
    assert!(log.contains("still held by another process"), "{log}");
    let t = Instant::now();
    drop(lock);
    let took = wait_until(&host, t, Duration::from_secs(2), || {
        host.converged(100, "vi100", 30)
    });
    eprintln!("lock released: applied {} ms later", took.as_millis());
    stop(w);
}

#[test]
fn a_link_event_while_pves_config_lock_is_held_is_retried_after_it() {
    let host = TestHost::new("wl-lock-link");
    let w = one_nic(&host, &[]);
    let dir = host.root().join("run/lock/lxc");
    std::fs::create_dir_all(&dir).unwrap();
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("pve-config-100.lock"))
        .unwrap();
    lock.lock().unwrap();
    // An in-guest reboot makes a new veth100i0: a link event, no conf change.
    host.sim_ok(&["reboot", "100"]);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        host.has_link("veth100i0"),
        "not converged under a held lock"
    );
    let t = Instant::now();
    drop(lock);
    let took = wait_until(&host, t, Duration::from_secs(5), || {
        host.converged(100, "vi100", 20)
    });
    eprintln!(
        "link event, lock released: converged {} ms later",
        took.as_millis()
    );
    assert!(host.ping(100, &bridged_ip(101)));
    stop(w);
}

#[test]
fn a_container_toml_change_is_applied_within_1s() {
    let host = TestHost::new("wl-toml");
    let w = one_nic(&host, &[]);
    let t = Instant::now();
    host.manage(
        100,
        "network_type = \"bridge\"\n[[nic]]\nnet = 0\ntag = 30\n",
    );
    let took = wait_until(&host, t, Duration::from_secs(1), || {
        host.converged(100, "vi100", 30)
    });
    eprintln!(
        "container TOML tag override applied {} ms after the write",
        took.as_millis()
    );
    stop(w);
}
