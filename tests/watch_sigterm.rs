//! SIGTERM to `op-agent watch` in the middle of a mass repair, on a private OVS with 24
//! managed "running" containers (veth pairs plugged as PVE's `tap_plug` does, each container's
//! lxc monitor socket bound, as tests/mass_repair.rs does): every veth re-created at once (a
//! mass in-guest reboot), the repairs start, the run in progress is held at its first step
//! (`pause:` failpoint, PVE's Port already deleted) when SIGTERM arrives. The service must
//! start no run after the signal, let the one in progress finish, exit 0 within its bound
//! (`[hook] deadline_ms` plus a quarter plus 5 s), and leave every container converged or on
//! PVE's plumbing (never without a Port), each audit run with its outcome. Both with the batch
//! (default) and one container at a time (`--no-batch`). Root, `failpoints` build only.
//!
//! Run: `cargo build --workspace --features failpoints &&
//! cargo test --features failpoints --test watch_sigterm`.

use op_testkit::{PveConf, TestHost};
use std::path::Path;
use std::time::{Duration, Instant};

fn now_ms() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    i64::try_from(d.as_millis()).unwrap()
}

/// Waits until `path` exists; panics after `limit`.
fn wait_file(path: &Path, limit: Duration) {
    let t = Instant::now();
    while !path.exists() {
        assert!(t.elapsed() < limit, "{} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Op-agent's plumbing (converged) or PVE's (`veth<vmid>i0` with its Port on `ovsbr0`).
fn on_a_port(host: &TestHost, vmid: u32) -> Result<&'static str, String> {
    if host.converged(vmid, &format!("vi{vmid}"), 10).is_ok() {
        return Ok("converged");
    }
    let veth = format!("veth{vmid}i0");
    let ports = host.ports("ovsbr0");
    if host.has_link(&veth) && ports.contains(&veth) {
        return Ok("pve");
    }
    Err(format!(
        "{vmid}: without a port: links {:?}, ports {ports:?}",
        host.links()
    ))
}

/// A row that tells how a run ended: its last check, a rollback, a failure or the deadline.
fn is_outcome(step: &str, outcome: &str) -> bool {
    ["ovs.check", "run.converged", "run.failed", "hook.deadline"].contains(&step)
        || step.contains("rollback")
        || outcome.contains("fail")
}

fn sigterm_mid_repair(name: &str, args: &[&str]) {
    let host = TestHost::new(name);
    let vmids: Vec<u32> = (100..124).collect();
    for v in &vmids {
        host.manage_bridged(*v, PveConf::bridged(*v, 10));
        host.plug_like_pve(*v);
    }
    let _running = host.bind_running(&vmids);
    let fp = host.root().join("failpoint");
    std::fs::create_dir_all(&fp).unwrap();
    // Resumed at once during the start-up reconcile.
    std::fs::write(fp.join("resume"), "").unwrap();
    let mut a = vec!["watch"];
    a.extend_from_slice(args);
    let mut watch = host
        .agent_cmd(&a)
        .config(host.agent_toml())
        .envs(&[
            ("OP_AGENT_FAILPOINT", "pause:ovs.del-port"),
            ("OP_AGENT_FAILPOINT_DIR", fp.to_str().unwrap()),
        ])
        .spawn(&host.watch_log());
    for v in &vmids {
        host.wait_converged(*v, &format!("vi{v}"), 10, Duration::from_secs(30));
    }
    std::thread::sleep(Duration::from_millis(300));
    let before = host.audit_rows().len();
    std::fs::remove_file(fp.join("resume")).unwrap();
    let _ = std::fs::remove_file(fp.join("paused"));

    // A mass in-guest reboot: every container due at once.
    for v in &vmids {
        host.ip(&["link", "del", &format!("vi{v}")]);
    }
    for v in &vmids {
        host.plug_like_pve(*v);
    }
    wait_file(&fp.join("paused"), Duration::from_secs(20));
    let t_sig = now_ms();
    let t = Instant::now();
    let pid = nix::unistd::Pid::from_raw(watch.pid().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    std::fs::write(fp.join("resume"), "").unwrap();
    // deadline_ms (10 s) + a quarter + 5 s, plus 1 s for the process to end.
    let bound = Duration::from_millis(18_500);
    let st = loop {
        if let Some(st) = watch.try_wait() {
            break st;
        }
        assert!(
            t.elapsed() < bound,
            "watch still running {bound:?} after SIGTERM:\n{}",
            watch.log_text()
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    eprintln!(
        "{name}: exited {st:?} {} ms after SIGTERM",
        t.elapsed().as_millis()
    );
    assert!(st.success(), "exit status {st:?}:\n{}", watch.log_text());

    let mut states = std::collections::BTreeMap::new();
    for v in &vmids {
        let s = on_a_port(&host, *v).unwrap_or_else(|e| panic!("{e}\n{}", watch.log_text()));
        *states.entry(s).or_insert(0) += 1;
    }
    eprintln!("{name}: after the stop: {states:?}");
    let rows = host.audit_rows();
    let rows = &rows[before..];
    for intent in rows.iter().filter(|r| r.step == "run.intent") {
        assert!(
            intent.ts <= t_sig,
            "{}: a run started {} ms after SIGTERM",
            intent.vmid,
            intent.ts - t_sig
        );
        assert!(
            rows.iter()
                .any(|r| r.run_id == intent.run_id && is_outcome(&r.step, &r.outcome)),
            "{}: run {} has no outcome: {:?}",
            intent.vmid,
            intent.run_id,
            rows.iter()
                .filter(|r| r.run_id == intent.run_id)
                .map(|r| format!("{} {}", r.step, r.outcome))
                .collect::<Vec<_>>()
        );
    }
    host.assert_audit_intact("after the stop");
}

#[test]
fn sigterm_mid_batch_starts_no_run_and_exits_zero() {
    sigterm_mid_repair("sigb", &[]);
}

#[test]
fn sigterm_mid_one_by_one_repairs_starts_no_run_and_exits_zero() {
    sigterm_mid_repair("sig1", &["--no-batch"]);
}
