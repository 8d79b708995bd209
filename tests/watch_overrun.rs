//! The watch service when the kernel dropped link events: a burst larger than the link-event
//! socket's receive buffer while the service could not read (here: stopped with SIGSTOP)
//! makes `recvmsg` fail with `ENOBUFS`; the service re-lists every link and still converges a
//! container whose veth was re-created in the burst (as an in-guest reboot does).

use op_testkit::{PveConf, TestHost};
use std::time::{Duration, Instant};

#[test]
fn a_veth_recreated_during_an_event_overrun_is_still_converged() {
    let host = TestHost::new("w-overrun");
    host.manage_bridged(100, PveConf::bridged(100, 10));
    host.sim_ok(&["start", "100"]);
    host.wait_converged(100, "vi100", 10, Duration::from_secs(1));
    // A small buffer, so that the burst below overruns it for certain.
    let mut w = host.spawn_watch(&["--netlink-rcvbuf-kib", "64"]);
    let t = Instant::now();
    while !w.log_text().contains("watch: running") {
        assert!(t.elapsed() < Duration::from_secs(10), "{}", w.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let pid = w.pid().expect("watch pid").to_string();
    host.run_ok(&["kill", "-STOP", &pid]);
    // 1500 Linux bridges (about 1.5 MiB of RTM_NEWLINK messages), then an in-guest reboot of
    // container 100: op-agent's vi100 goes, LXC makes a new veth100i0 and PVE plugs it.
    let batch = host.root().join("burst.ip");
    let text: String = (0..1500)
        .map(|i| format!("link add opd{i} type bridge\n"))
        .collect();
    std::fs::write(&batch, text).unwrap();
    host.ip(&["-batch", &batch.display().to_string()]);
    host.sim_ok(&["reboot", "100"]);
    host.run_ok(&["kill", "-CONT", &pid]);
    host.wait_converged(100, "vi100", 10, Duration::from_secs(5));
    let log = w.log_text();
    assert!(log.contains("link events were lost"), "{log}");
    w.stop();
    host.sim_ok(&["stop", "100"]);
}
