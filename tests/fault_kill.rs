//! `kill -9` after each post-start step (the `failpoints` feature, which `make test`
//! builds with), then the phase again converges to the uninterrupted end state and the audit
//! shows the interrupted run; two hooks for one vmid at once are serialised by the per-vmid
//! lock; a lock file left by a dead holder does not block.

use op_testkit::{AgentToml, AuditRow, PveConf, TestHost};
use std::collections::BTreeMap;
use std::time::Duration;

/// The end state of an uninterrupted post-start of 100.
fn assert_converged(host: &TestHost, ctx: &str) {
    assert!(host.has_link("vi100"), "{ctx}: vi100");
    assert!(!host.has_link("veth100i0"), "{ctx}: veth100i0 gone");
    assert_eq!(host.ports("ovsbr0"), vec!["vi100"], "{ctx}");
    assert_eq!(host.ovs_get("Port", "vi100", "tag"), "10", "{ctx}");
    let ids = host.ovs_get("Port", "vi100", "external_ids");
    assert!(ids.contains("owner=op-agent"), "{ctx}: {ids}");
    let ofport: i64 = host
        .ovs_get("Interface", "vi100", "ofport")
        .parse()
        .unwrap();
    assert!(ofport > 0, "{ctx}: ofport {ofport}");
    let l = host.link("vi100").unwrap();
    assert!(
        l["flags"].as_array().unwrap().iter().any(|f| f == "UP"),
        "{ctx}: {l}"
    );
}

/// Back to the state PVE leaves before post-start.
fn reset(host: &TestHost) {
    for p in host.ports("ovsbr0") {
        host.vsctl_ok(&["del-port", "ovsbr0", &p]);
    }
    for l in ["vi100", "veth100i0"] {
        if host.has_link(l) {
            host.run_ok(&["ip", "link", "del", l]);
        }
    }
    host.plug_like_pve(100);
}

#[test]
fn kill_9_after_each_step_then_rerun_converges() {
    let host = TestHost::plugged_for_failpoints("f-kill", cfg!(feature = "failpoints"));
    let (code, err, _) = host.hook(100, "post-start").run().exit_stderr_took();
    assert_eq!(code, Some(0), "{err}");
    assert_converged(&host, "uninterrupted");
    // The steps of a clean run, in order, as the audit names them.
    let clean = host.audit_rows_for(100);
    let run = clean.last().unwrap().run_id.clone();
    let mut steps: Vec<String> = Vec::new();
    for row in &clean {
        let (r, s, o) = (&row.run_id, &row.step, &row.outcome);
        // Failpoints fire after a plan step (ovs.wait and ovs.check are parts of ovs.del-port /
        // ovs.add-port).
        let plan_step = !["config.validate", "ovs.wait", "ovs.check"].contains(&s.as_str());
        if *r == run && o != "intent" && !steps.contains(s) && plan_step {
            steps.push(s.clone());
        }
    }
    assert!(steps.len() >= 3, "{steps:?}");
    eprintln!("observed: plan steps of a clean post-start: {steps:?}");
    for step in &steps {
        reset(&host);
        let before: Vec<String> = host
            .audit_rows_for(100)
            .into_iter()
            .map(|r| r.run_id)
            .collect();
        let (code, err, _) = host
            .hook(100, "post-start")
            .envs(&[("OP_AGENT_FAILPOINT", step)])
            .run()
            .exit_stderr_took();
        // Killed by SIGKILL: no exit code. A step the plan does not reach leaves a normal run.
        if code.is_some() {
            panic!("failpoint {step} did not fire: exit {code:?}: {err}");
        }
        let after = host.audit_rows_for(100);
        let new: Vec<&AuditRow> = after
            .iter()
            .filter(|r| !before.contains(&r.run_id))
            .collect();
        let killed_run = new.first().map(|r| r.run_id.clone()).unwrap_or_default();
        let killed: Vec<String> = new
            .iter()
            .filter(|r| r.run_id == killed_run)
            .map(|r| format!("{} {}", r.step, r.outcome))
            .collect();
        assert!(
            killed.contains(&"run.intent intent".to_string()),
            "{step}: the interrupted run shows its intent: {killed:?}"
        );
        assert!(
            !killed.iter().any(|s| s.starts_with("ovs.check")),
            "{step}: no outcome after the kill: {killed:?}"
        );
        let (code, err, took) = host.hook(100, "post-start").run().exit_stderr_took();
        assert_eq!(code, Some(0), "re-run after kill at {step}: {err}");
        assert!(
            took < Duration::from_secs(5),
            "the dead holder's lock did not block: {took:?}"
        );
        assert_converged(&host, &format!("after kill -9 at {step}"));
    }
    host.assert_audit_intact("after the runs");
}

#[test]
fn two_hooks_for_one_vmid_are_serialised() {
    let host = TestHost::new("f-two");
    host.manage_bridged(100, PveConf::bridged(100, 10));
    host.plug_like_pve(100);
    let h = &host;
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| h.hook(100, "post-start").run().exit_stderr_took());
        let b = s.spawn(|| h.hook(100, "post-start").run().exit_stderr_took());
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_eq!(a.0, Some(0), "{}", a.1);
    assert_eq!(b.0, Some(0), "{}", b.1);
    assert_converged(&host, "two at once");
    // Each run's rows are contiguous (one run never interleaves with the other), exactly one
    // run renamed the link, and the other found nothing to change.
    let r = host.audit_rows_for(100);
    let mut seen: Vec<String> = Vec::new();
    for run in r.iter().map(|x| &x.run_id) {
        if seen.last() != Some(run) {
            assert!(!seen.contains(run), "runs interleaved: {r:?}");
            seen.push(run.clone());
        }
    }
    assert_eq!(seen.len(), 2, "{r:?}");
    let per_run: BTreeMap<&String, Vec<&str>> = seen
        .iter()
        .map(|run| {
            (
                run,
                r.iter()
                    .filter(|x| &x.run_id == run)
                    .map(|x| x.step.as_str())
                    .collect(),
            )
        })
        .collect();
    let renames = per_run
        .values()
        .filter(|s| s.contains(&"link.rename"))
        .count();
    let converged = per_run
        .values()
        .filter(|s| s.contains(&"run.converged"))
        .count();
    assert_eq!((renames, converged), (1, 1), "{per_run:?}");
}

#[test]
fn lock_held_by_live_process_times_out_and_dead_one_does_not_block() {
    let host = TestHost::new("f-lock");
    host.manage_bridged(100, PveConf::bridged(100, 10));
    host.plug_like_pve(100);
    host.set_config(&AgentToml {
        ovsdb_socket: Some(host.ovsdb_socket()),
        ovsdb_timeout_ms: Some(2000),
        hook_deadline_ms: Some(2000),
        ..host.config()
    });
    let lock = host.root().join("run/op-agent/100.lock");
    std::fs::create_dir_all(lock.parent().unwrap()).unwrap();
    // A live holder (flock(1) keeps the lock while sleep runs): the hook waits, then gives up
    // within the deadline, changing nothing.
    let mut holder = std::process::Command::new("flock")
        .args(["-x", lock.to_str().unwrap(), "sleep", "30"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let (code, err, took) = host.hook(100, "post-start").run().exit_stderr_took();
    assert_eq!(code, Some(75), "{err}");
    assert!(err.contains("100.lock"), "{err}");
    assert!(took < Duration::from_millis(2000 + 1500), "{took:?}");
    assert!(host.has_link("veth100i0"), "nothing changed");
    // The holder dies (kill -9 of flock and its sleep): the lock file stays, the lock does not.
    let _ = std::process::Command::new("pkill")
        .args(["-9", "-P", &holder.id().to_string()])
        .status();
    let _ = holder.kill();
    let _ = holder.wait();
    std::thread::sleep(Duration::from_millis(100));
    assert!(lock.exists());
    let (code, err, took) = host.hook(100, "post-start").run().exit_stderr_took();
    assert_eq!(code, Some(0), "{err}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert_converged(&host, "after dead holder");
}

#[test]
fn hook_and_watch_on_one_vmid_are_serialised() {
    // The service acts on running containers only: a real one through pve-sim.
    let host = TestHost::new("f-hw");
    host.manage_bridged(100, PveConf::bridged(100, 10));
    host.sim_ok(&["start", "100"]);
    assert_converged(&host, "after start");
    let _w = host.spawn_watch(&["--plug-wait-ms", "300"]);
    std::thread::sleep(Duration::from_millis(800));
    for round in 0..2 {
        // An in-guest reboot recreates veth100i0 (no hook phase: the service converges it)
        // while hooks for the same vmid run at the same moment.
        let h = &host;
        std::thread::scope(|s| {
            let r = s.spawn(|| h.sim_ok(&["reboot", "100"]));
            for _ in 0..5 {
                let (code, err, _) = h.hook(100, "post-start").run().exit_stderr_took();
                assert!(
                    matches!(code, Some(0) | Some(1)),
                    "round {round}: hook during reboot: {err}"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
            r.join().unwrap();
        });
        let t = std::time::Instant::now();
        while !(host.has_link("vi100") && host.ports("ovsbr0") == vec!["vi100"]) {
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "round {round}: not converged"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let (code, err, _) = host.hook(100, "post-start").run().exit_stderr_took();
        assert_eq!(code, Some(0), "round {round}: {err}");
        assert_converged(&host, &format!("hook+watch round {round}"));
    }
    // The service did run for 100 (its rows are labelled `watch`), and no two runs interleave.
    let watch_rows = host
        .audit_rows()
        .into_iter()
        .filter(|r| r.vmid == 100 && r.phase == "watch")
        .count();
    eprintln!("observed: {watch_rows} watch rows for 100");
    assert!(watch_rows > 0, "op-agent watch never ran for 100");
    let r = host.audit_rows_for(100);
    let mut seen: Vec<String> = Vec::new();
    for run in r.iter().map(|x| &x.run_id) {
        if seen.last() != Some(run) {
            assert!(!seen.contains(run), "runs interleaved: {r:?}");
            seen.push(run.clone());
        }
    }
    host.assert_audit_intact("after the runs");
}
