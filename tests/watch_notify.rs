//! `op-agent watch` under systemd's notify protocol (`Type=notify`, `WatchdogSec=`): the
//! `NOTIFY_SOCKET` is a datagram listener of this test, `WATCHDOG_USEC` 300 ms (a ping every
//! 100 ms). The service says `READY=1` before its first watchdog ping, pings while idle and
//! while a run is within its stop limit (`deadline_ms` 1000: 6.25 s), stops pinging when the
//! run outlasts it (held by a `pause:` failpoint: a hung worker), pings again once the run
//! ends, and says `STOPPING=1` on SIGTERM. Root, `failpoints` build only.
//!
//! Run: `cargo build --workspace --features failpoints &&
//! cargo test --features failpoints --test watch_notify`.

use op_testkit::{AgentToml, PveConf, TestHost};
use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Heard = Arc<Mutex<Vec<(Instant, String)>>>;

/// Collects every datagram on `sock` with the time it arrived, until `done`.
fn listen(sock: UnixDatagram, done: Arc<std::sync::atomic::AtomicBool>) -> Heard {
    let heard: Heard = Arc::default();
    let h = heard.clone();
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 4096];
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            if let Ok(n) = sock.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                h.lock().unwrap().push((Instant::now(), msg));
            }
        }
    });
    heard
}

fn pings_between(heard: &Heard, from: Instant, to: Instant) -> usize {
    heard
        .lock()
        .unwrap()
        .iter()
        .filter(|(t, m)| *t >= from && *t < to && m.contains("WATCHDOG=1"))
        .count()
}

#[test]
#[cfg_attr(not(feature = "failpoints"), ignore = "needs the failpoints build")]
fn ready_watchdog_pings_stop_on_a_hung_run_and_stopping() {
    let host = TestHost::new("notify");
    host.set_config(&AgentToml {
        hook_deadline_ms: Some(1000),
        ..host.config()
    });
    host.manage_bridged(100, PveConf::bridged(100, 10));
    host.plug_like_pve(100);
    let _running = host.bind_running(&[100]);
    let fp = host.root().join("failpoint");
    std::fs::create_dir_all(&fp).unwrap();
    let sock_path = host.root().join("notify.sock");
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let heard = listen(UnixDatagram::bind(&sock_path).unwrap(), done.clone());

    let mut watch = host
        .agent_cmd(&["watch"])
        .config(host.agent_toml())
        .envs(&[
            ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "300000"),
            ("OP_AGENT_FAILPOINT", "pause:ovs.del-port"),
            ("OP_AGENT_FAILPOINT_DIR", fp.to_str().unwrap()),
        ])
        .spawn(&host.watch_log());

    // The start-up reconcile of 100 holds at its first step: the worker is busy from here.
    let t = Instant::now();
    while !fp.join("paused").exists() {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "{}",
            watch.log_text()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let paused = Instant::now();
    {
        let h = heard.lock().unwrap();
        let first = h.first().map(|(_, m)| m.clone()).unwrap_or_default();
        assert!(first.contains("READY=1"), "READY=1 first: {h:?}");
    }
    // Within the stop limit (6.25 s) the pings go on; past it they stop.
    std::thread::sleep(Duration::from_millis(8_000).saturating_sub(paused.elapsed()));
    let within = pings_between(&heard, paused, paused + Duration::from_secs(5));
    assert!(within >= 20, "{within} pings in the first 5 s of the run");
    let past = pings_between(
        &heard,
        paused + Duration::from_millis(6_600),
        paused + Duration::from_millis(8_000),
    );
    assert_eq!(past, 0, "no ping once the run outlasted its limit");
    assert!(
        watch.log_text().contains("no watchdog ping"),
        "{}",
        watch.log_text()
    );

    // The run ends: the pings come back.
    std::fs::write(fp.join("resume"), "").unwrap();
    host.wait_converged(100, "vi100", 10, Duration::from_secs(10));
    let back = Instant::now();
    std::thread::sleep(Duration::from_millis(1_000));
    assert!(
        pings_between(&heard, back, back + Duration::from_secs(1)) >= 3,
        "pings after the run"
    );
    let status = watch.stop();
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    std::thread::sleep(Duration::from_millis(100));
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let h = heard.lock().unwrap();
    assert!(
        h.iter().any(|(_, m)| m.contains("STOPPING=1")),
        "STOPPING=1 on SIGTERM: {:?}",
        h.iter().rev().take(3).collect::<Vec<_>>()
    );
}
