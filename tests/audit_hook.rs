//! The audit log on the hook side: the write-ahead rule on real containers. A run appends its intent
//! before it changes anything; when the audit log cannot be written the hook changes nothing.

use op_testkit::{target_bin, AuditRow, Nic, PveConf, TestHost};

fn conf(vmid: u32) -> PveConf {
    PveConf::op_hook(vmid).minimal().nic(
        Nic::new(0, "ovsbr0")
            .hwaddr(&format!("BC:24:11:00:02:{:02x}", vmid % 256))
            .ip(&format!("10.20.0.{}/24", vmid % 200))
            .tag(10),
    )
}

#[test]
fn intent_row_comes_before_every_change_and_the_chain_verifies() {
    let host = TestHost::new("awal");
    host.write_pve_conf(110, conf(110));
    host.manage(110, "network_type = \"bridge\"\n");
    // A stand-in syslog socket: the head of the chain is logged after each run (the anchor).
    let sock_path = host.root().join("syslog.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_millis(100)))
        .unwrap();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done2 = done.clone();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match sock.recv(&mut buf) {
                Ok(n) => lines.push(String::from_utf8_lossy(&buf[..n]).to_string()),
                Err(_) if done2.load(std::sync::atomic::Ordering::SeqCst) => return lines,
                Err(_) => {}
            }
        }
    });
    let sp = sock_path.display().to_string();
    let env = [("OP_AGENT_SYSLOG_SOCKET", sp.as_str())];
    let sim = target_bin("pve-sim").display().to_string();
    let root = host.root().display().to_string();
    for cmd in ["start", "stop"] {
        let out = host.run_env(&[&sim, "--root", &root, cmd, "110"], &env);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let anchors: Vec<String> = reader
        .join()
        .unwrap()
        .iter()
        .filter_map(|l| l.split("audit head ").nth(1).map(|h| h.trim().to_string()))
        .collect();
    assert!(anchors.len() >= 4, "one anchor per hook run: {anchors:?}");
    let rows = host.audit_rows();
    let mut seqs = std::collections::BTreeSet::new();
    for r in &rows {
        assert!(seqs.insert(r.seq), "duplicate seq");
    }
    let n = rows.len() as i64;
    assert_eq!(seqs, (1..=n).collect(), "seq 1..n without gaps");
    // For each run that changed something, the intent precedes every change row.
    let runs: std::collections::BTreeSet<&str> = rows.iter().map(|r| r.run_id.as_str()).collect();
    let mut changing_runs = 0;
    for run in runs {
        let rr: Vec<&AuditRow> = rows.iter().filter(|r| r.run_id == run).collect();
        let intent = rr.iter().position(|r| r.outcome == "intent");
        let first_change = rr.iter().position(|r| {
            let s = r.step.as_str();
            s.starts_with("ovs.del-port") || s.starts_with("link.") || s.starts_with("ovs.add-port")
        });
        if let Some(c) = first_change {
            changing_runs += 1;
            let i = intent.unwrap_or_else(|| panic!("run {run} changed things without an intent"));
            assert!(i < c, "run {run}: intent at {i} after change at {c}");
        }
    }
    assert!(
        changing_runs >= 2,
        "post-start and post-stop both change things"
    );
    let head = host.agent(&["audit", "head"]);
    let head = String::from_utf8_lossy(&head.stdout).trim().to_string();
    assert!(
        head.starts_with(anchors.last().unwrap().as_str()),
        "{head} vs {anchors:?}"
    );
    let mut args = vec!["audit", "verify"];
    for a in &anchors {
        args.extend(["--anchor", a.as_str()]);
    }
    let v = host.agent(&args);
    assert_eq!(
        v.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&v.stdout)
    );
}

#[test]
fn unwritable_audit_log_changes_nothing() {
    let host = TestHost::new("aro");
    // A database path whose parent is a regular file: it can never be created.
    let blocker = host.root().join("not-a-dir");
    std::fs::write(&blocker, "").unwrap();
    let db = blocker.join("audit.db");
    host.write_pve_conf(111, conf(111));
    host.manage(111, "network_type = \"bridge\"\n");
    let agent_toml = host.agent_toml();
    let good = std::fs::read_to_string(&agent_toml).unwrap();
    let bad = good.replace(
        &host.audit_db().display().to_string(),
        &db.display().to_string(),
    );
    std::fs::write(&agent_toml, &bad).unwrap();

    // pre-start: the start is aborted with the reason, nothing made.
    let out = host.sim(&["start", "111"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err
        .lines()
        .find(|l| l.starts_with("op-agent: 111 pre-start:"))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(
        line.contains("audit") && line.contains("nothing was changed"),
        "{line}"
    );
    assert!(host.sim_ok(&["status", "111"]).contains("stopped"));

    // post-start: PVE's plumbing is left as it is (start with a working log, then break it).
    std::fs::write(&agent_toml, &good).unwrap();
    host.manage(111, "network_type = \"bridge\"\n");
    std::fs::remove_file(host.root().join("etc/op-agent/containers/111.toml")).unwrap();
    host.sim_ok(&["start", "111"]); // unmanaged now: PVE plugs veth111i0
    host.manage(111, "network_type = \"bridge\"\n");
    std::fs::write(&agent_toml, &bad).unwrap();
    let out = host.agent(&["hook", "111", "post-start"]);
    assert_eq!(
        out.status.code(),
        Some(74),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
    assert!(host.links().contains(&"veth111i0".to_string()));
    assert!(!host.links().contains(&"vi111".to_string()));
    assert_eq!(host.ports("ovsbr0"), vec!["veth111i0"]);
    assert_eq!(host.ovs_get("Port", "veth111i0", "tag"), "10");
}

#[test]
fn keyed_checkpoints_seal_runs_and_a_key_mismatch_never_fails_a_finished_run() {
    let host = TestHost::new("akey");
    host.write_pve_conf(112, conf(112));
    host.manage(112, "network_type = \"bridge\"\n");
    let out = host.agent(&["audit", "init-key"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let initial = text.lines().last().unwrap().trim().to_string();
    assert_eq!(initial.len(), 64, "{text}");
    let key_copy = host.root().join("initial.key");
    std::fs::write(&key_copy, &initial).unwrap();
    let kc = key_copy.display().to_string();

    host.sim_ok(&["start", "112"]);
    let rows = host.audit_rows();
    let seals = rows.iter().filter(|r| r.step == "audit.checkpoint").count();
    assert!(seals >= 2, "one checkpoint per run: {seals}");
    let v = host.agent(&["audit", "verify", "--key-file", &kc]);
    assert_eq!(
        v.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&v.stdout)
    );

    // The database is replaced by an empty one (restored elsewhere, moved): the key no longer
    // fits. A run still does its job and exits 0; the failed seal is a row, and verify with
    // the initial key reports the break.
    let db = host.audit_db();
    for ext in ["", "-wal", "-shm"] {
        let p = std::path::PathBuf::from(format!("{}{ext}", db.display()));
        let _ = std::fs::rename(&p, format!("{}.old", p.display()));
    }
    host.run_ok(&["ip", "link", "set", "vi112", "down"]);
    let out = host.agent(&["hook", "112", "post-start"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("audit checkpoint not written"));
    assert_ne!(host.link("vi112").unwrap()["operstate"], "DOWN");
    let rows = host.audit_rows();
    assert!(rows
        .iter()
        .any(|r| r.step == "audit.checkpoint" && r.outcome == "failed"));
    let v = host.agent(&["audit", "verify", "--key-file", &kc]);
    assert_eq!(
        v.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&v.stdout)
    );
}

/// The checkpoint key is state beside the audit database (`R/var/lib/op-agent/audit.key`),
/// not in `R/etc/op-agent`: a key left there by an earlier version is moved once (and the
/// chain keeps verifying with the initial key), and deleting the state folder (what a purge
/// does) takes the key with the log, so the next run after a reinstall writes no false
/// "rolled back" warning into the task log.
#[test]
fn audit_key_lives_beside_the_log_and_goes_with_it() {
    let host = TestHost::new("akeyplace");
    host.write_pve_conf(113, conf(113));
    host.manage(113, "network_type = \"bridge\"\n");
    let out = host.agent(&["audit", "init-key"]);
    assert!(out.status.success(), "{}", out.text());
    let initial = out.stdout_text().lines().last().unwrap().trim().to_string();
    let kc = host.root().join("initial.key");
    std::fs::write(&kc, &initial).unwrap();
    let kc = kc.display().to_string();
    let state = host.audit_db().parent().unwrap().to_path_buf();
    let etc = host.agent_toml().parent().unwrap().to_path_buf();
    assert!(state.join("audit.key").is_file(), "key beside the log");
    assert!(!etc.join("audit.key").exists(), "no key in etc");

    // An earlier version's key in etc (with its lock) is moved on the next run.
    host.sim_ok(&["start", "113"]);
    std::fs::rename(state.join("audit.key"), etc.join("audit.key")).unwrap();
    std::fs::write(etc.join("audit.key.lock"), "").unwrap();
    host.run_ok(&["ip", "link", "set", "vi113", "down"]);
    let out = host.agent(&["hook", "113", "post-start"]);
    assert_eq!(out.status.code(), Some(0), "{}", out.text());
    assert!(!out.text().contains("checkpoint"), "{}", out.text());
    assert!(state.join("audit.key").is_file());
    assert!(!etc.join("audit.key").exists() && !etc.join("audit.key.lock").exists());
    let v = host.agent(&["audit", "verify", "--key-file", &kc]);
    assert_eq!(v.status.code(), Some(0), "{}", v.text());

    // Purge and reinstall: the state folder goes, key included; the next runs say nothing
    // about the audit log.
    std::fs::remove_dir_all(&state).unwrap();
    host.sim_ok(&["stop", "113"]);
    let out = host.sim(&["start", "113"]);
    assert!(out.status.success(), "{}", out.text());
    assert!(!out.text().contains("rolled back"), "{}", out.text());
    assert!(!out.text().contains("checkpoint"), "{}", out.text());
    assert!(!host
        .audit_rows()
        .iter()
        .any(|r| r.step == "audit.checkpoint" && r.outcome == "failed"));
}
