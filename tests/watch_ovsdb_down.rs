//! `op-agent watch` while OVSDB is unreachable: it retries (the monitor every 2 s at most, the
//! container's run with its backoff) but warns once, not once per retry, and says how long the
//! outage lasted when OVSDB is back; then the container converges. agent.toml names a socket
//! path that is a symlink created only after 6 s, to the test's private ovsdb-server. Root
//! only.
//!
//! Run: `cargo build --workspace && cargo test --features failpoints --test watch_ovsdb_down`.

use op_testkit::{AgentToml, PveConf, TestHost};
use std::time::Duration;

#[test]
fn ovsdb_unreachable_warns_once_and_recovery_is_logged() {
    let host = TestHost::new("ovsdown");
    host.manage_bridged(100, PveConf::bridged(100, 10));
    host.plug_like_pve(100);
    let _running = host.bind_running(&[100]);
    let later = host.root().join("ovsdb-later.sock");
    host.set_config(&AgentToml {
        ovsdb_socket: Some(later.clone()),
        ..host.config()
    });
    let mut watch = host.spawn_watch(&[]);
    std::thread::sleep(Duration::from_secs(6));
    let log = std::fs::read_to_string(host.watch_log()).unwrap();
    let down: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("connect to OVSDB socket"))
        .collect();
    assert_eq!(down.len(), 1, "one warning in 6 s of retries:\n{log}");

    std::os::unix::fs::symlink(host.ovsdb_socket(), &later).unwrap();
    host.wait_converged(100, "vi100", 10, Duration::from_secs(10));
    let status = watch.stop();
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let log = std::fs::read_to_string(host.watch_log()).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("OVSDB reachable again after ")),
        "{log}"
    );
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("connect to OVSDB socket"))
            .count(),
        1,
        "{log}"
    );
}
