//! OVS faults: ovsdb-server down at pre-start / post-start / mid-transaction,
//! ovs-vswitchd down (cur_cfg wait times out, nothing after it runs), and the hook deadline
//! holding while a daemon is frozen (SIGSTOP). Each test asserts the end state.

use nix::sys::signal::Signal;
use op_testkit::{AgentToml, PveConf, TestHost};
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[test]
fn ovsdb_server_down_at_pre_start_aborts_with_one_line() {
    let host = TestHost::new("f-dbpre");
    host.manage_bridged(100, PveConf::bridged(100, 10));
    host.ovs().kill_daemon("ovsdb-server");
    let (code, err, took) = host.hook(100, "pre-start").run().exit_stderr_took();
    assert_eq!(code, Some(69), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.starts_with("op-agent: 100 pre-start: ") && err.contains("db.sock"),
        "{err}"
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
    let r = host.audit_rows_for(100);
    assert!(
        r.iter()
            .any(|r| r.step == "ovs.connect" && r.outcome == "failed"),
        "{r:?}"
    );
}

#[test]
fn ovsdb_server_down_at_post_start_leaves_pve_plumbing() {
    let host = TestHost::new("f-dbpost");
    host.manage_bridged(100, PveConf::bridged(100, 10));
    host.plug_like_pve(100);
    host.ovs().kill_daemon("ovsdb-server");
    let (code, err, took) = host.hook(100, "post-start").run().exit_stderr_took();
    assert_eq!(code, Some(69), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        took < Duration::from_secs(10),
        "within the deadline: {took:?}"
    );
    // PVE's plumbing untouched: the veth keeps its name and stays up (and, in the kernel's
    // netdev datapath, in ovs-vswitchd, which is still running).
    assert!(host.has_link("veth100i0"));
    assert!(!host.has_link("vi100"));
    let l = host.link("veth100i0").unwrap();
    assert!(
        l["flags"].as_array().unwrap().iter().any(|f| f == "UP"),
        "{l}"
    );
    let r = host.audit_rows_for(100);
    assert!(
        r.iter()
            .any(|r| r.step == "ovs.connect" && r.outcome == "failed"),
        "{r:?}"
    );
    assert!(!r.iter().any(|r| r.step == "link.rename"), "{r:?}");
}

/// A unix-socket proxy to the real ovsdb-server that drops both connections as soon as the
/// client sends a `transact` whose text contains `needle` (the server never sees it).
fn cutting_proxy(
    listen: &std::path::Path,
    server: std::path::PathBuf,
    needle: &'static str,
) -> Arc<AtomicBool> {
    let cut = Arc::new(AtomicBool::new(false));
    let l = UnixListener::bind(listen).unwrap();
    let flag = cut.clone();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut client) = c else { return };
            let Ok(mut srv) = UnixStream::connect(&server) else {
                return;
            };
            let (mut c2, mut s2) = (client.try_clone().unwrap(), srv.try_clone().unwrap());
            std::thread::spawn(move || {
                let mut b = [0u8; 65536];
                while let Ok(n) = s2.read(&mut b) {
                    if n == 0 || c2.write_all(&b[..n]).is_err() {
                        break;
                    }
                }
                let _ = c2.shutdown(std::net::Shutdown::Both);
            });
            let flag = flag.clone();
            std::thread::spawn(move || {
                let mut b = [0u8; 65536];
                while let Ok(n) = client.read(&mut b) {
                    if n == 0 {
                        break;
                    }
                    let text = String::from_utf8_lossy(&b[..n]);
                    if text.contains("\"transact\"") && text.contains(needle) {
                        flag.store(true, Ordering::SeqCst);
                        break;
                    }
                    if srv.write_all(&b[..n]).is_err() {
                        break;
                    }
                }
                let _ = srv.shutdown(std::net::Shutdown::Both);
                let _ = client.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    cut
}

#[test]
fn ovsdb_server_gone_mid_transaction_fails_then_rerun_converges() {
    let host = TestHost::new("f-dbmid");
    host.manage_bridged(100, PveConf::bridged(100, 10));
    host.plug_like_pve(100);
    let proxy = host.root().join("run/proxy.sock");
    // The insert of our Port is the transaction that never reaches the server.
    let cut = cutting_proxy(&proxy, host.ovsdb_socket(), "\"insert\"");
    host.set_config(&AgentToml {
        ovsdb_socket: Some(proxy.clone()),
        ovsdb_timeout_ms: Some(3000),
        hook_deadline_ms: Some(8000),
        ..host.config()
    });
    let (code, err, took) = host.hook(100, "post-start").run().exit_stderr_took();
    assert!(
        cut.load(Ordering::SeqCst),
        "the proxy must have cut the insert"
    );
    assert_ne!(code, Some(0), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(took < Duration::from_secs(9), "{took:?}");
    let r = host.audit_rows_for(100);
    assert!(
        r.iter()
            .any(|r| r.step == "run.intent" && r.outcome == "intent"),
        "{r:?}"
    );
    assert!(
        r.iter()
            .any(|r| r.step == "ovs.add-port" && r.outcome == "failed"),
        "{r:?}"
    );
    // The rename was rolled back: the kernel link has PVE's name again; no row of ours exists.
    assert!(host.has_link("veth100i0"), "rolled back to veth100i0");
    assert!(!host.has_link("vi100"));
    assert!(!host.ports("ovsbr0").contains(&"vi100".to_string()));
    // The server is back (direct socket): post-start again converges to the normal end state.
    host.set_config(&AgentToml {
        ovsdb_socket: Some(host.ovsdb_socket()),
        ovsdb_timeout_ms: Some(5000),
        hook_deadline_ms: Some(10000),
        ..host.config()
    });
    let (code, err, _) = host.hook(100, "post-start").run().exit_stderr_took();
    assert_eq!(code, Some(0), "{err}");
    assert!(host.has_link("vi100") && !host.has_link("veth100i0"));
    assert_eq!(host.ports("ovsbr0"), vec!["vi100"]);
    assert_eq!(host.ovs_get("Port", "vi100", "tag"), "10");
    let ofport: i64 = host
        .ovs_get("Interface", "vi100", "ofport")
        .parse()
        .unwrap();
    assert!(ofport > 0);
    host.assert_audit_intact("after the re-run");
}

#[test]
fn vswitchd_down_wait_times_out_and_no_later_step_runs() {
    let host = TestHost::new("f-vsd");
    host.manage_bridged(100, PveConf::bridged(100, 10));
    host.plug_like_pve(100);
    host.ovs().kill_daemon("ovs-vswitchd");
    host.set_config(&AgentToml {
        ovsdb_socket: Some(host.ovsdb_socket()),
        ovsdb_timeout_ms: Some(800),
        hook_deadline_ms: Some(10000),
        ..host.config()
    });
    let (code, err, took) = host.hook(100, "post-start").run().exit_stderr_took();
    assert_eq!(code, Some(75), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("cur_cfg") || err.contains("ovs-vswitchd"),
        "{err}"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    let r = host.audit_rows_for(100);
    let steps: Vec<String> = r
        .iter()
        .map(|r| format!("{} {}", r.step, r.outcome))
        .collect();
    assert!(steps.contains(&"ovs.wait failed".to_string()), "{steps:?}");
    for later in ["link.down", "link.rename", "ovs.add-port", "ovs.check"] {
        assert!(
            !steps.iter().any(|s| s.starts_with(later)),
            "{later} ran after the failed wait: {steps:?}"
        );
    }
    // Nothing renamed; PVE's Port row was put back.
    assert!(host.has_link("veth100i0") && !host.has_link("vi100"));
    assert_eq!(host.ports("ovsbr0"), vec!["veth100i0"]);
    assert_eq!(host.ovs_get("Port", "veth100i0", "tag"), "10");
}

/// `daemon` frozen (SIGSTOP) during post-start with `timeout_ms` 5000 and `deadline_ms` 1500:
/// the hook ends within the deadline (+ margin) with exit 75. Returns the host (still frozen
/// daemon thawed) and the hook's stderr.
fn frozen_post_start(daemon: &str) -> (TestHost, String) {
    let host = TestHost::new(&format!("f-dl{}", &daemon[4..7]));
    host.manage_bridged(100, PveConf::bridged(100, 10));
    host.plug_like_pve(100);
    host.set_config(&AgentToml {
        ovsdb_socket: Some(host.ovsdb_socket()),
        ovsdb_timeout_ms: Some(5000),
        hook_deadline_ms: Some(1500),
        ..host.config()
    });
    host.ovs().signal(daemon, Signal::SIGSTOP);
    let (code, err, took) = host.hook(100, "post-start").run().exit_stderr_took();
    host.ovs().signal(daemon, Signal::SIGCONT);
    assert_eq!(code, Some(75), "{daemon} frozen: {err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        took < Duration::from_millis(1500 + 1500),
        "{daemon} frozen: hook took {took:?} with deadline_ms 1500"
    );
    (host, err)
}

#[test]
fn deadline_holds_with_ovs_vswitchd_stopped_and_pve_port_comes_back() {
    let (host, err) = frozen_post_start("ovs-vswitchd");
    // The wait ends a quarter of the deadline early, so the rollback and its rows still fit.
    assert!(err.contains("next_cfg"), "{err}");
    let r = host.audit_rows_for(100);
    assert!(
        r.iter().any(|r| r.step == "rollback.add-port"),
        "the rollback ran within the deadline: {r:?}"
    );
    assert!(!r.iter().any(|r| r.step == "hook.deadline"), "{r:?}");
    // Thawed, ovs-vswitchd applies PVE's Port again: the container is back on its VLAN.
    assert!(host.has_link("veth100i0") && !host.has_link("vi100"));
    assert_eq!(host.ports("ovsbr0"), vec!["veth100i0"]);
    assert_eq!(host.ovs_get("Port", "veth100i0", "tag"), "10");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while host
        .ovs_get("Interface", "veth100i0", "ofport")
        .parse::<i64>()
        .unwrap_or(-1)
        <= 0
    {
        assert!(std::time::Instant::now() < deadline, "no ofport after thaw");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn deadline_holds_with_ovsdb_server_stopped() {
    let (host, err) = frozen_post_start("ovsdb-server");
    assert!(err.contains("deadline"), "{err}");
    // Nothing was changed: the frozen server never committed anything.
    assert!(host.has_link("veth100i0") && !host.has_link("vi100"));
    assert_eq!(host.ports("ovsbr0"), vec!["veth100i0"]);
}

#[test]
fn bridge_name_with_quotes_is_json_encoded() {
    let host = TestHost::new("f-quote");
    host.manage_bridged(100, PveConf::bridged(100, 10));
    host.manage(100, "[[nic]]\nnet = 0\nbridge = 'br\"}],\"x'\n");
    let (code, err, _) = host.hook(100, "pre-start").run().exit_stderr_took();
    assert_eq!(code, Some(69), "{err}");
    assert!(
        err.contains("br\"}],\"x"),
        "names the bridge as given: {err}"
    );
    // The OVSDB stream was not broken: the server still answers and nothing was added.
    assert_eq!(host.vsctl_ok(&["list-br"]), "ovsbr0");
    assert!(host.ports("ovsbr0").is_empty());
}

#[test]
fn failed_rename_restores_pve_port_and_link_up() {
    let host = TestHost::plugged_for_failpoints("f-renfail", cfg!(feature = "failpoints"));
    // The rename fails after PVE's port was deleted and the veth was set down.
    let (code, err, _) = host
        .hook(100, "post-start")
        .envs(&[("OP_AGENT_FAILPOINT", "fail:link.rename")])
        .run()
        .exit_stderr_took();
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    // The task log line says what is back.
    assert!(
        err.contains(
            "rolled back: PVE's port veth100i0 is back on ovsbr0; the container is reachable \
             as before"
        ),
        "{err}"
    );
    // What the admin had is back: the veth under PVE's name, UP, on PVE's port with its tag.
    assert!(host.has_link("veth100i0"));
    assert!(!host.has_link("vi100"));
    let l = host.link("veth100i0").unwrap();
    assert!(
        l["flags"].as_array().unwrap().iter().any(|f| f == "UP"),
        "the veth stays down after the rollback: {l}"
    );
    assert_eq!(host.ports("ovsbr0"), vec!["veth100i0"]);
    assert_eq!(host.ovs_get("Port", "veth100i0", "tag"), "10");
    let r = host.audit_rows_for(100);
    for step in ["link.down", "rollback.link-up", "rollback.add-port"] {
        assert!(
            r.iter().any(|r| r.step == *step && (r.outcome == "ok")),
            "{step} ok: {r:?}"
        );
    }
    assert!(
        r.iter()
            .any(|r| r.step == "link.rename" && r.outcome == "failed"),
        "{r:?}"
    );
    // And the phase again converges.
    let (code, err, _) = host.hook(100, "post-start").run().exit_stderr_took();
    assert_eq!(code, Some(0), "{err}");
    assert!(host.has_link("vi100"));
    assert_eq!(host.ports("ovsbr0"), vec!["vi100"]);
}

#[test]
fn failed_add_port_renames_back_and_says_so() {
    let host = TestHost::plugged_for_failpoints("f-addfail", cfg!(feature = "failpoints"));
    // The add fails after PVE's port was deleted and the veth renamed to vi100.
    let (code, err, _) = host
        .hook(100, "post-start")
        .envs(&[("OP_AGENT_FAILPOINT", "fail:ovs.add-port")])
        .run()
        .exit_stderr_took();
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("failpoint: ovs.add-port failed; rolled back: PVE's port veth100i0 is back on ovsbr0; the container is reachable as before"),
        "{err}"
    );
    assert!(host.has_link("veth100i0") && !host.has_link("vi100"));
    assert_eq!(host.ports("ovsbr0"), vec!["veth100i0"]);
    assert_eq!(host.ovs_get("Port", "veth100i0", "tag"), "10");
}
