//! What an admin or an attacker can leave on a host that must neither act on the wrong
//! container nor hang: a TOML left by a destroyed container, a FIFO where a config file should
//! be, a PVE conf with quirks PVE tolerates, a reader that closes the hook's pipes.

use op_testkit::{bridged_ip, op_agent_bin, pve_mac, AuditRow, Nic, PveConf, TestHost};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn mkfifo(path: &std::path::Path) {
    let _ = std::fs::remove_file(path);
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

/// Runs `op-agent <args>` with the host's agent.toml and asserts that it ended within 5 s (a
/// hung read would take the 20 s timeout) and said `a FIFO, not a regular file`.
fn refuses_fifo_quickly(host: &TestHost, args: &[&str]) {
    let o = host
        .agent_cmd(args)
        .config(host.agent_toml())
        .timeout(Duration::from_secs(20))
        .run();
    assert!(
        o.took < Duration::from_secs(5),
        "{args:?} took {:?}",
        o.took
    );
    let all = format!("{}{}", o.stdout_text(), o.stderr_text());
    assert!(
        all.contains("a FIFO, not a regular file"),
        "{args:?}: {all}"
    );
}

/// Waits until the audit log has a `watch` row for `vmid` (the start-up reconcile ran).
fn wait_watch_row(host: &TestHost, vmid: i64, limit: Duration) {
    let t = Instant::now();
    while t.elapsed() < limit {
        if host
            .audit_rows()
            .iter()
            .any(|r| r.vmid == vmid && r.phase == "watch")
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no watch audit row for {vmid} within {limit:?}");
}

/// `pct destroy 100` left `containers/100.toml` (VLAN 10); a new container 100 without
/// `hookscript:` is on VLAN 20. With `watch` running (it converges the enrolled 101), the new
/// 100 keeps PVE's `veth100i0` on VLAN 20, and `config check` says the TOML is stale.
#[test]
fn a_reused_vmid_without_hookscript_is_left_alone_by_watch() {
    let host = TestHost::new("r-reuse");
    host.manage(
        100,
        "network_type = \"bridge\"\n[[nic]]\nnet = 0\ntag = 10\n",
    );
    host.write_pve_conf(
        100,
        PveConf::new(100).nic(
            Nic::new(0, "ovsbr0")
                .hwaddr(&pve_mac(100))
                .ip(&format!("{}/24", bridged_ip(100)))
                .tag(20),
        ),
    );
    host.manage_bridged(101, PveConf::bridged(101, 10));
    host.sim_ok(&["start", "100"]);
    host.sim_ok(&["start", "101"]);
    assert!(host.has_link("veth100i0"), "PVE's veth, no hook ran");
    let mut w = host.spawn_watch(&[]);
    wait_watch_row(&host, 101, Duration::from_secs(10));
    host.wait_converged(101, "vi101", 10, Duration::from_secs(3));
    // Events for 100 too: its link goes down and up again.
    host.ip(&["link", "set", "veth100i0", "down"]);
    host.ip(&["link", "set", "veth100i0", "up"]);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(host.has_link("veth100i0"), "{:?}", host.links());
    assert!(!host.has_link("vi100"), "{:?}", host.links());
    assert_eq!(host.ovs_get("Port", "veth100i0", "tag"), "20");
    let rows: Vec<AuditRow> = host.audit_rows_for(100);
    assert!(rows.is_empty(), "no run for 100: {rows:?}");
    let st = host.agent(&["status"]);
    assert!(!st.stdout_text().contains("vi100 "), "{}", st.stdout_text());
    w.stop();

    let c = host.agent(&["config", "check"]);
    let out = c.stdout_text();
    assert_eq!(c.code(), Some(78), "{out}");
    let toml = host.root().join("etc/op-agent/containers/100.toml");
    assert!(
        out.contains(&format!(
            "ERROR {}: container 100 is not enrolled",
            toml.display()
        )) && out.contains(&format!("rm {}", toml.display())),
        "{out}"
    );
    // The hint is one command the admin can paste, not one broken by a run of spaces.
    assert!(
        out.contains("(or keep it: op-agent enroll 100 --keep-config)"),
        "{out}"
    );
    // Never op-agent's NIC (PVE's veth100i0 runs): nothing to release first.
    assert!(!out.contains("op-agent release 100"), "{out}");
    // `apply` says which condition is missing, not "no container TOML or no PVE conf".
    let a = host.agent(&["apply", "100"]);
    assert_eq!(a.code(), Some(1), "{}", a.text());
    assert!(
        a.stderr_text().contains("its PVE conf names no hookscript")
            && a.stderr_text()
                .contains("op-agent enroll 100 --keep-config"),
        "{}",
        a.text()
    );
    assert_eq!(host.ovs_get("Port", "veth100i0", "tag"), "20");
}

/// A FIFO as agent.toml: every hook (an unmanaged guest's too) returns at once with one line
/// and exit 77 instead of waiting for a writer for ever.
#[test]
fn a_fifo_as_agent_toml_does_not_hang_the_hook() {
    let host = TestHost::new("r-fifo1");
    let cfg = host.root().join("fifo-agent.toml");
    mkfifo(&cfg);
    let o = host
        .hook(999, "pre-start")
        .config_env(&cfg)
        .timeout(Duration::from_secs(20))
        .run();
    let err = o.stderr_text();
    assert_eq!(o.code(), Some(77), "{err}");
    assert!(o.took < Duration::from_secs(2), "took {:?}", o.took);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("a FIFO, not a regular file"), "{err}");
}

/// A FIFO as a container TOML: `status`, `config check` and `watch` go on (the FIFO's
/// container is reported, the other one converges).
#[test]
fn a_fifo_as_container_toml_does_not_hang_status_check_or_watch() {
    let host = TestHost::new("r-fifo2");
    host.manage_bridged(100, PveConf::bridged(100, 10));
    host.manage_bridged(101, PveConf::bridged(101, 10));
    host.sim_ok(&["start", "101"]);
    mkfifo(&host.root().join("etc/op-agent/containers/100.toml"));
    for args in [&["status"][..], &["config", "check"][..]] {
        refuses_fifo_quickly(&host, args);
    }
    let mut w = host.spawn_watch(&[]);
    host.ip(&["link", "set", "vi101", "down"]);
    let t = Instant::now();
    while !host.is_up("vi101") && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(host.is_up("vi101"), "watch wedged: {}", w.log_text());
    w.stop();
}

/// A PVE conf starting with a UTF-8 byte order mark and with an upper-case `NET1:` line:
/// PVE's `parse_pct_config` drops both lines with a warning and starts the container, so the
/// hook converges net0 and exits 0 (not 78).
#[test]
fn a_bom_and_an_upper_case_key_in_the_pve_conf_do_not_abort_the_start() {
    let host = TestHost::new("r-bom");
    let conf = PveConf::bridged(100, 10).line("NET1: name=eth1,bridge=ovsbr0,tag=30,type=veth");
    host.write_pve_conf(100, format!("\u{feff}ostype: unmanaged\n{conf}"));
    host.manage(100, "network_type = \"bridge\"\n");
    let out = host.sim_ok(&["start", "100"]);
    assert!(out.contains("veth100i0 -> vi100"), "{out}");
    host.wait_converged(100, "vi100", 10, Duration::from_secs(2));
    let c = host.agent(&["config", "check"]);
    assert!(
        c.stdout_text().contains("WARNING") && c.stdout_text().contains("NET1"),
        "{}",
        c.stdout_text()
    );
}

/// A hand-edited PVE conf with a second `net0:` line (VLAN 20), `delete:` outside
/// `[pve:pending]` and a header PVE does not take (`[snap 1]`): PVE's `parse_pct_config` keeps
/// the last `net0` (`$conf->{$key} = $value`) and only warns about the rest, so the container
/// starts on VLAN 20. The hook converges it there (not 78, which aborted the start), post-stop
/// removes the Port, and `config check` names the shadowed line.
#[test]
fn a_duplicate_key_delete_and_odd_header_in_the_pve_conf_follow_pve() {
    let host = TestHost::new("r-dup");
    let second = Nic::new(0, "ovsbr0")
        .hwaddr(&pve_mac(100))
        .ip(&format!("{}/24", bridged_ip(100)))
        .tag(20)
        .to_string();
    let conf = PveConf::bridged(100, 10)
        .line("delete: net5")
        .line("[snap 1]")
        .line(second.trim_end());
    host.write_pve_conf(100, conf);
    host.manage(100, "network_type = \"bridge\"\n");
    let out = host.sim_ok(&["start", "100"]);
    assert!(out.contains("veth100i0 -> vi100"), "{out}");
    host.wait_converged(100, "vi100", 20, Duration::from_secs(2));
    let c = host.agent(&["config", "check"]);
    assert_eq!(c.code(), Some(0), "{}", c.text());
    assert!(
        c.stdout_text().contains("WARNING") && c.stdout_text().contains("later line"),
        "{}",
        c.stdout_text()
    );
    host.sim_ok(&["stop", "100"]);
    let left = host.vsctl_ok(&["--columns=name", "find", "Port", "external_ids:vm-id=100"]);
    assert!(left.is_empty(), "post-stop left {left}");
}

/// A PVE conf with a Latin-1 byte in a comment (written by hand, not UTF-8): PVE's
/// `parse_pct_config` reads bytes and starts the container, so the hook converges it too (not
/// 78 "not valid UTF-8", which aborted the start), and `config check` still sees the
/// hookscript.
#[test]
fn a_latin1_comment_in_the_pve_conf_does_not_abort_the_start() {
    let host = TestHost::new("r-latin1");
    host.write_pve_conf(100, PveConf::bridged(100, 10));
    let path = host.pve_root().pve_conf_path(100);
    let mut bytes = b"#Caf\xe9 server\n".to_vec();
    bytes.extend(std::fs::read(&path).unwrap());
    std::fs::write(&path, bytes).unwrap();
    host.manage(100, "network_type = \"bridge\"\n");
    let out = host.sim_ok(&["start", "100"]);
    assert!(out.contains("veth100i0 -> vi100"), "{out}");
    host.wait_converged(100, "vi100", 10, Duration::from_secs(2));
    let c = host.agent(&["config", "check"]);
    assert_eq!(c.code(), Some(0), "{}", c.text());
    assert!(
        c.stdout_text().contains("100: ") && c.stdout_text().contains("wins: valid"),
        "{}",
        c.text()
    );
}

/// The hook's stdout and stderr are a pipe whose reader is gone: post-start still ends with its
/// own exit code (not killed by SIGPIPE, no panic) and the audit row records the outcome.
#[test]
fn a_closed_stdout_and_stderr_do_not_kill_the_hook() {
    let host = TestHost::new("r-pipe");
    host.manage_bridged(100, PveConf::bridged(100, 10));
    host.plug_like_pve(100);
    let (r, w) = nix::unistd::pipe().unwrap();
    drop(r);
    let w2 = w.try_clone().unwrap();
    let status = Command::new("ip")
        .args(["netns", "exec", host.netns()])
        .arg(op_agent_bin())
        .args(["hook", "100", "post-start"])
        .env("OP_AGENT_CONFIG", host.agent_toml())
        .stdin(Stdio::null())
        .stdout(Stdio::from(w))
        .stderr(Stdio::from(w2))
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
    host.wait_converged(100, "vi100", 10, Duration::from_secs(1));
    let rows = host.audit_rows_for(100);
    assert!(
        rows.iter()
            .any(|r| r.phase == "post-start" && r.step == "ovs.check" && r.outcome == "ok"),
        "{rows:?}"
    );
    // Rows selected by seq, whatever their time says.
    let o = host.agent(&["audit", "log", "--from-seq", "2", "--to-seq", "3"]);
    let seqs: Vec<String> = o
        .stdout_text()
        .lines()
        .map(|l| l.split(' ').next().unwrap_or("").to_string())
        .collect();
    assert_eq!(seqs, ["2", "3"], "{}{}", o.stdout_text(), o.stderr_text());
}

/// `[audit] database` relative, `[hook] deadline_ms = 0`: the hook and `config check` refuse
/// agent.toml with one line naming the file, the line and the field.
#[test]
fn relative_paths_and_a_zero_deadline_in_agent_toml_are_refused() {
    let host = TestHost::new("r-rel");
    host.manage_bridged(100, PveConf::bridged(100, 10));
    let cfg = host.agent_toml();
    for (toml, line, field) in [
        (
            op_testkit::AgentToml {
                audit_db: Some("audit.db".into()),
                ..host.config()
            },
            "[audit] database",
            "database",
        ),
        (
            op_testkit::AgentToml {
                hook_deadline_ms: Some(0),
                ..host.config()
            },
            "[hook] deadline_ms",
            "deadline_ms",
        ),
    ] {
        host.set_config(&toml);
        let text = std::fs::read_to_string(&cfg).unwrap();
        let n = text
            .lines()
            .position(|l| l.starts_with(field))
            .map(|i| i + 1)
            .unwrap();
        let want = format!("{}:{n}: {line}", cfg.display());
        let o = host.hook(100, "pre-start").run();
        let err = o.stderr_text();
        assert_eq!(o.code(), Some(78), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(&want), "{err} lacks {want}");
        let c = host.agent(&["config", "check"]);
        assert_eq!(c.code(), Some(78), "{}", c.stdout_text());
        assert!(c.stdout_text().contains(&want), "{}", c.stdout_text());
    }
}

/// A FIFO as `/etc/network/interfaces`, or as a file it `source`s: `config check` reads it
/// without blocking and says what it refused, within the time a normal check takes (it hung,
/// waiting for a writer).
#[test]
fn a_fifo_as_the_interfaces_file_or_a_sourced_file_does_not_hang_config_check() {
    let host = TestHost::new("r-fifo-if");
    host.manage_bridged(100, PveConf::bridged(100, 10));
    host.sim_ok(&["start", "100"]);
    let dir = host.root().join("etc/network");
    std::fs::create_dir_all(&dir).unwrap();
    for sourced in [false, true] {
        if sourced {
            std::fs::remove_file(dir.join("interfaces")).unwrap();
            std::fs::write(
                dir.join("interfaces"),
                "auto lo\niface lo inet loopback\n\nsource /etc/network/extra\n",
            )
            .unwrap();
            mkfifo(&dir.join("extra"));
        } else {
            mkfifo(&dir.join("interfaces"));
        }
        eprintln!("sourced={sourced}");
        refuses_fifo_quickly(&host, &["config", "check"]);
    }
}

/// A FIFO as `[audit] database`: `status`, `audit log`, `audit verify` and `metrics` end at
/// once with one line naming the FIFO (they hung in SQLite's open), and the hook refuses the
/// same way before it changes anything.
#[test]
fn a_fifo_as_the_audit_database_is_refused_without_hanging() {
    let host = TestHost::new("r-fifo-db");
    host.manage_bridged(100, PveConf::bridged(100, 10));
    let db = host.audit_db();
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    mkfifo(&db);
    for args in [
        &["status"][..],
        &["audit", "log"][..],
        &["audit", "verify"][..],
        &["metrics"][..],
    ] {
        refuses_fifo_quickly(&host, args);
    }
    host.plug_like_pve(100);
    let o = host
        .hook(100, "post-start")
        .timeout(Duration::from_secs(20))
        .run();
    let err = o.stderr_text();
    assert!(
        o.took < Duration::from_secs(5),
        "post-start took {:?}",
        o.took
    );
    assert_ne!(o.code(), Some(0), "{err}");
    assert!(err.contains("a FIFO, not a regular file"), "{err}");
    assert!(
        host.ports("ovsbr0").contains(&"veth100i0".to_string()),
        "PVE's port was touched without an audit trail: {:?}",
        host.ports("ovsbr0")
    );
}

/// A dangling and a looping symlink as the container TOML: the hook refuses the start with one
/// line naming the file (it took the container for one op-agent does not manage, exit 0, and
/// PVE started it on its own plumbing), as `config check` does.
#[test]
fn a_dangling_or_looping_symlink_as_container_toml_is_an_error_not_unmanaged() {
    let host = TestHost::new("r-dangle");
    host.manage_bridged(100, PveConf::bridged(100, 10));
    let toml = host.root().join("etc/op-agent/containers/100.toml");
    for target in ["/nonexistent/100.toml", "100.toml"] {
        std::fs::remove_file(&toml).unwrap();
        std::os::unix::fs::symlink(target, &toml).unwrap();
        let o = host
            .hook(100, "pre-start")
            .timeout(Duration::from_secs(20))
            .run();
        let err = o.stderr_text();
        assert_eq!(o.code(), Some(78), "{target}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("100.toml"), "{err}");
        let c = host.agent(&["config", "check"]);
        assert_ne!(c.code(), Some(0), "{}", c.text());
    }
}

/// A symlink to nothing as `[audit] database`: the hook refuses before any change (it started
/// a new chain at the link's target, mode 0644), and nothing is created there.
#[test]
fn a_dangling_symlink_as_the_audit_database_is_refused() {
    let host = TestHost::new("r-dangle-db");
    host.manage_bridged(100, PveConf::bridged(100, 10));
    let db = host.audit_db();
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    let _ = std::fs::remove_file(&db);
    let target = host.root().join("elsewhere.db");
    std::os::unix::fs::symlink(&target, &db).unwrap();
    host.plug_like_pve(100);
    let o = host.hook(100, "post-start").run();
    let err = o.stderr_text();
    assert_eq!(o.code(), Some(74), "{err}");
    assert!(err.contains("a symlink to nothing"), "{err}");
    assert!(!target.exists(), "a new database was created at the target");
    assert!(host.ports("ovsbr0").contains(&"veth100i0".to_string()));
    let v = host.agent(&["audit", "verify"]);
    assert_ne!(v.code(), Some(0), "{}", v.text());
}

/// The audit database removed after hooks sealed checkpoints: `audit verify` (and `log`) say
/// the log is missing (exit 2) instead of "intact: 0 rows", which a fresh install says.
#[test]
fn a_removed_audit_database_is_not_an_intact_empty_log() {
    let host = TestHost::new("r-gone-db");
    host.manage_bridged(100, PveConf::bridged(100, 10));
    // As the package's postinst does: the key that seals each run's rows.
    let k = host.agent(&["audit", "init-key"]);
    assert_eq!(k.code(), Some(0), "{}", k.text());
    host.plug_like_pve(100);
    let o = host.hook(100, "post-start").run();
    assert_eq!(o.code(), Some(0), "{}", o.text());
    let db = host.audit_db();
    for suffix in ["", "-wal", "-shm"] {
        let mut p = db.clone().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
    for args in [&["audit", "verify"][..], &["audit", "log"][..]] {
        let v = host.agent(args);
        assert_eq!(v.code(), Some(2), "{args:?}: {}", v.text());
        assert!(v.stderr_text().contains("is missing"), "{}", v.text());
    }
}
