//! `op-agent watch` never gives up on a container that runs, is managed and whose config
//! loads, on a private OVS with veth pairs plugged as PVE's `tap_plug` does (each container's
//! lxc monitor socket bound, as tests/mass_repair.rs does): the bridge `ovsbr0` deleted while
//! a container needs repair (its veth re-created, as an in-guest reboot does), re-created with
//! its ports 10 s later (longer than the old 6 attempts), every container converges again
//! within a few seconds, and `op-agent status` shows the container in retry meanwhile; a
//! container TOML typo fixed after 10 s is picked up. Root only.
//!
//! Run: `cargo build --workspace && cargo test --features failpoints --test watch_retry`.

use op_testkit::{PveConf, TestHost};
use std::time::{Duration, Instant};

fn wait_all(host: &TestHost, vmids: &[u32], limit: Duration) -> Duration {
    let t = Instant::now();
    for v in vmids {
        host.wait_converged(*v, &format!("vi{v}"), 10, limit.saturating_sub(t.elapsed()));
    }
    t.elapsed()
}

/// An in-guest reboot of `vmid`: its veth pair goes, LXC creates `veth<vmid>i0` again (PVE
/// cannot plug it: the bridge is gone).
fn reboot_without_bridge(host: &TestHost, vmid: u32) {
    host.ip(&["link", "del", &format!("vi{vmid}")]);
    let (veth, peer) = (format!("veth{vmid}i0"), format!("pc{vmid}"));
    host.ip(&["link", "add", &veth, "type", "veth", "peer", "name", &peer]);
    host.ip(&["link", "set", &veth, "up"]);
    host.ip(&["link", "set", &peer, "up"]);
}

/// Polls `op-agent status` until a line says `vmid` is in retry; that line.
fn wait_status_retrying(host: &TestHost, vmid: u32, limit: Duration) -> String {
    let t = Instant::now();
    loop {
        let out = host.agent(&["status"]).stdout_text();
        let want = format!("{vmid}: retrying (attempt ");
        if let Some(l) = out.lines().find(|l| l.trim_start().starts_with(&want)) {
            return l.trim().to_string();
        }
        assert!(
            t.elapsed() < limit,
            "status never showed {vmid} in retry:\n{out}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn containers_come_back_when_the_bridge_returns_after_ten_seconds() {
    let host = TestHost::new("retrybr");
    let vmids: Vec<u32> = (100..106).collect();
    for v in &vmids {
        host.manage_bridged(*v, PveConf::bridged(*v, 10));
        host.plug_like_pve(*v);
    }
    let _running = host.bind_running(&vmids);
    let mut watch = host.spawn_watch(&[]);
    wait_all(&host, &vmids, Duration::from_secs(20));

    // What a database backup holds: op-agent's Ports with their external_ids.
    let ids: Vec<String> = vmids
        .iter()
        .map(|v| host.ovs_get("Port", &format!("vi{v}"), "external_ids"))
        .collect();
    host.vsctl_ok(&["del-br", "ovsbr0"]);
    reboot_without_bridge(&host, 100);
    let line = wait_status_retrying(&host, 100, Duration::from_secs(8));
    assert!(
        line.contains("ovsbr0"),
        "the last error names the bridge: {line}"
    );
    // Longer than the old 6 attempts (250 ms doubling to 4 s: about 8 s).
    let before = host.audit_rows().len();
    std::thread::sleep(Duration::from_secs(10));
    assert!(host.converged(100, "vi100", 10).is_err(), "no bridge yet");
    // The retries go on, but one that would fail as the last did writes no rows again.
    let mut runs: Vec<String> = host.audit_rows()[before..]
        .iter()
        .filter(|r| r.vmid == 100)
        .map(|r| r.run_id.clone())
        .collect();
    runs.dedup();
    assert!(
        runs.len() <= 1,
        "{} runs recorded for 100 while its bridge stayed gone: {runs:?}",
        runs.len()
    );

    // The bridge and its ports back, as a restored database has them.
    let mut restore = vec![
        "--".to_string(),
        "add-br".into(),
        "ovsbr0".into(),
        "--".into(),
        "set".into(),
        "Bridge".into(),
        "ovsbr0".into(),
        "datapath_type=netdev".into(),
    ];
    for (v, id) in vmids.iter().zip(&ids) {
        let p = format!("vi{v}");
        restore.extend(["--".into(), "add-port".into(), "ovsbr0".into(), p.clone()]);
        restore.extend(["tag=10".into()]);
        restore.extend(["--".into(), "set".into(), "Port".into(), p]);
        restore.push(format!("external_ids={id}"));
    }
    host.vsctl_ok(&restore.iter().map(String::as_str).collect::<Vec<_>>());
    let took = wait_all(&host, &vmids, Duration::from_secs(5));
    eprintln!(
        "all {} back {} ms after the restore",
        vmids.len(),
        took.as_millis()
    );
    host.assert_audit_intact("after the bridge came back");
    let st = watch.stop().expect("watch exits on SIGTERM");
    assert!(st.success(), "watch exit status {st:?}");
}

#[test]
fn a_container_toml_typo_fixed_after_ten_seconds_is_picked_up() {
    let host = TestHost::new("retrytypo");
    host.manage_bridged(100, PveConf::bridged(100, 10));
    host.plug_like_pve(100);
    let _running = host.bind_running(&[100]);
    let mut watch = host.spawn_watch(&[]);
    host.wait_converged(100, "vi100", 10, Duration::from_secs(10));

    // A typo, then the container needs repair (its Port deleted, as `ifreload -a` does).
    let toml = host.pve_root().container_toml(100);
    std::fs::write(&toml, "network_type = \"brdige\"\n").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    host.vsctl_ok(&["del-port", "vi100"]);
    std::thread::sleep(Duration::from_secs(10));
    assert!(
        host.converged(100, "vi100", 10).is_err(),
        "not with the typo"
    );
    std::fs::write(&toml, "network_type = \"bridge\"\n").unwrap();
    let took = host.wait_converged(100, "vi100", 10, Duration::from_secs(5));
    eprintln!("converged {} ms after the fix", took.as_millis());
    let st = watch.stop().expect("watch exits on SIGTERM");
    assert!(st.success(), "watch exit status {st:?}");
}

#[test]
fn a_lingering_old_link_that_goes_after_ten_seconds_does_not_end_the_retries() {
    let host = TestHost::new("retrylink");
    host.manage_bridged(100, PveConf::bridged(100, 10));
    host.plug_like_pve(100);
    let _running = host.bind_running(&[100]);
    let mut watch = host.spawn_watch(&[]);
    host.wait_converged(100, "vi100", 10, Duration::from_secs(10));

    // An in-guest reboot while a link of op-agent's name is still there (not the container's).
    host.ip(&["link", "del", "vi100"]);
    host.ip(&[
        "link", "add", "vi100", "type", "veth", "peer", "name", "lg100",
    ]);
    host.plug_like_pve(100);
    let line = wait_status_retrying(&host, 100, Duration::from_secs(8));
    eprintln!("in retry: {line}");
    std::thread::sleep(Duration::from_secs(10));
    assert!(
        host.converged(100, "vi100", 10).is_err(),
        "not while vi100 lingers"
    );
    host.ip(&["link", "del", "vi100"]);
    let took = host.wait_converged(100, "vi100", 10, Duration::from_secs(5));
    eprintln!("converged {} ms after the old link went", took.as_millis());
    let st = watch.stop().expect("watch exits on SIGTERM");
    assert!(st.success(), "watch exit status {st:?}");
}

/// The audit log's file system full for longer than 8 s while a container needs repair (its
/// veth re-created, as an in-guest reboot does): the retries go on (each changes nothing: no
/// intent row, no change), and once space is free again the container converges within a
/// few seconds, not after the next backoff step (15.75 s after the first failure).
#[test]
fn an_audit_disk_full_for_ten_seconds_is_retried_as_soon_as_space_is_back() {
    let host = TestHost::new("retryfull");
    host.manage_bridged(100, PveConf::bridged(100, 10));
    host.plug_like_pve(100);
    let _running = host.bind_running(&[100]);
    let dir = host.audit_db().parent().unwrap().to_path_buf();
    let _fs = op_testkit::Tmpfs::mount(&dir, "256k");
    let mut watch = host.spawn_watch(&[]);
    host.wait_converged(100, "vi100", 10, Duration::from_secs(10));

    let _ = std::fs::write(dir.join("filler"), vec![0u8; 1 << 20]);
    host.ip(&["link", "del", "vi100"]);
    host.plug_like_pve(100);
    let line = wait_status_retrying(&host, 100, Duration::from_secs(8));
    eprintln!("in retry: {line}");
    std::thread::sleep(Duration::from_secs(10));
    assert!(
        host.converged(100, "vi100", 10).is_err(),
        "not while the audit log cannot be written"
    );
    assert!(
        host.has_link("veth100i0"),
        "nothing changed without an intent row"
    );
    std::fs::remove_file(dir.join("filler")).unwrap();
    let took = host.wait_converged(100, "vi100", 10, Duration::from_secs(3));
    eprintln!("converged {} ms after space was back", took.as_millis());
    assert!(
        watch
            .log_text()
            .contains("space is free again for the audit log"),
        "{}",
        watch.log_text()
    );
    let st = watch.stop().expect("watch exits on SIGTERM");
    assert!(st.success(), "watch exit status {st:?}");
    host.assert_audit_intact("after the full disk");
}
