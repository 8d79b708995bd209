//! audit faults at the hook level: the audit database locked past its busy timeout,
//! corrupt (not a database), on a full filesystem (a small tmpfs) or read-only: the hook
//! changes nothing it cannot record (intent first), exits 74 with one line, and `audit verify`
//! still reports correctly on what is there. And a panic ends with an audit `failed` row.

use op_testkit::{AgentToml, PveConf, TestHost, Tmpfs};
use std::time::Duration;

fn assert_nothing_changed(host: &TestHost, ctx: &str) {
    assert!(host.has_link("veth100i0"), "{ctx}: veth100i0 kept");
    assert!(!host.has_link("vi100"), "{ctx}");
    assert_eq!(host.ports("ovsbr0"), vec!["veth100i0"], "{ctx}");
}

#[test]
fn audit_locked_past_timeout_changes_nothing() {
    let host = TestHost::new("f-alock");
    host.manage_bridged(100, PveConf::bridged(100, 10));
    host.plug_like_pve(100);
    // A first run creates the database; then reset to PVE's state.
    let (code, err, _) = host.hook(100, "pre-start").run().exit_stderr_took();
    assert_eq!(code, Some(0), "{err}");
    host.set_config(&AgentToml {
        ovsdb_socket: Some(host.ovsdb_socket()),
        ovsdb_timeout_ms: Some(2000),
        hook_deadline_ms: Some(1500),
        ..host.config()
    });
    let db = host.audit_db();
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let (code, err, took) = host.hook(100, "post-start").run().exit_stderr_took();
    conn.execute_batch("ROLLBACK").unwrap();
    drop(conn);
    assert_eq!(code, Some(74), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("nothing was changed"), "{err}");
    assert!(took < Duration::from_millis(1500 + 1500), "{took:?}");
    assert_nothing_changed(&host, "locked");
    host.assert_audit_intact("after a locked run");
}

#[test]
fn audit_corrupt_changes_nothing_and_verify_says_so() {
    let host = TestHost::new("f-acorrupt");
    host.manage_bridged(100, PveConf::bridged(100, 10));
    host.plug_like_pve(100);
    std::fs::create_dir_all(host.audit_db().parent().unwrap()).unwrap();
    std::fs::write(host.audit_db(), vec![0x5a; 8192]).unwrap();
    let (code, err, _) = host.hook(100, "post-start").run().exit_stderr_took();
    assert_eq!(code, Some(74), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("audit.db"), "{err}");
    assert_nothing_changed(&host, "corrupt");
    let v = host.agent(&["audit", "verify"]);
    assert_eq!(v.status.code(), Some(2), "cannot read: {v:?}");
}

#[test]
fn audit_on_full_filesystem_changes_nothing_and_verify_holds() {
    let host = TestHost::new("f-afull");
    host.manage_bridged(100, PveConf::bridged(100, 10));
    host.plug_like_pve(100);
    let dir = host.audit_db().parent().unwrap().to_path_buf();
    let _fs = Tmpfs::mount(&dir, "256k");
    let (code, err, _) = host.hook(100, "pre-start").run().exit_stderr_took();
    assert_eq!(code, Some(0), "{err}");
    // Fill what is left.
    let _ = std::fs::write(dir.join("filler"), vec![0u8; 1 << 20]);
    let (code, err, _) = host.hook(100, "post-start").run().exit_stderr_took();
    assert_eq!(code, Some(74), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_nothing_changed(&host, "full");
    host.assert_audit_intact("full file system");
    // Space again: the next run works and the chain is intact.
    std::fs::remove_file(dir.join("filler")).unwrap();
    let (code, err, _) = host.hook(100, "post-start").run().exit_stderr_took();
    assert_eq!(code, Some(0), "{err}");
    host.assert_audit_intact("space again");
}

#[test]
fn audit_read_only_changes_nothing_and_verify_holds() {
    let host = TestHost::new("f-aro");
    host.manage_bridged(100, PveConf::bridged(100, 10));
    host.plug_like_pve(100);
    let dir = host.audit_db().parent().unwrap().to_path_buf();
    let fs = Tmpfs::mount(&dir, "4m");
    let (code, err, _) = host.hook(100, "pre-start").run().exit_stderr_took();
    assert_eq!(code, Some(0), "{err}");
    fs.remount_ro();
    let (code, err, _) = host.hook(100, "post-start").run().exit_stderr_took();
    assert_eq!(code, Some(74), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_nothing_changed(&host, "read-only");
    host.assert_audit_intact("read-only file system");
}

/// op-agent keeps its WAL between runs; a read-only copy of the folder without the transient
/// `-shm` file (a snapshot, a forensic copy) must still be readable by every audit command.
#[test]
fn read_only_without_shm_still_reads_the_rows_in_the_wal() {
    let host = TestHost::new("f-arosh");
    host.manage_bridged(100, PveConf::bridged(100, 10));
    host.plug_like_pve(100);
    let dir = host.audit_db().parent().unwrap().to_path_buf();
    let fs = Tmpfs::mount(&dir, "4m");
    for phase in ["pre-start", "post-start"] {
        let (code, err, _) = host.hook(100, phase).run().exit_stderr_took();
        assert_eq!(code, Some(0), "{phase}: {err}");
    }
    let rows_before = host.audit_rows_for(100).len();
    let wal = dir.join("audit.db-wal");
    assert!(
        std::fs::metadata(&wal).unwrap().len() > 0,
        "rows in the WAL"
    );
    let _ = std::fs::remove_file(dir.join("audit.db-shm"));
    fs.remount_ro();
    host.assert_audit_intact("read-only, no -shm");
    let head = host.agent(&["audit", "head"]);
    assert!(head.status.success(), "head: {head:?}");
    assert!(
        String::from_utf8_lossy(&head.stdout).starts_with(&format!("{}:", rows_before)),
        "head: {head:?}"
    );
    let log = host.agent(&["audit", "log", "--vmid", "100"]);
    assert!(log.status.success(), "log: {log:?}");
    assert_eq!(
        String::from_utf8_lossy(&log.stdout).lines().count(),
        rows_before,
        "{log:?}"
    );
    let ex = host.agent(&["audit", "export"]);
    assert!(ex.status.success(), "export: {ex:?}");
    // No private copy is left behind.
    let left: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("op-agent-audit-")
        })
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn panic_ends_with_failed_row_and_exit_70() {
    let host = TestHost::plugged_for_failpoints("f-panic", cfg!(feature = "failpoints"));
    let (code, err, _) = host
        .hook(100, "post-start")
        .envs(&[("OP_AGENT_FAILPOINT", "panic:link.rename")])
        .run()
        .exit_stderr_took();
    assert_eq!(code, Some(70), "{err}");
    assert_eq!(err.lines().count(), 1, "no backtrace: {err}");
    assert!(err.contains("internal error"), "{err}");
    let r = host.audit_rows_for(100);
    assert!(
        r.iter()
            .any(|r| r.step == "run.panic" && r.outcome == "failed"),
        "{r:?}"
    );
    // And the phase again converges.
    let (code, err, _) = host.hook(100, "post-start").run().exit_stderr_took();
    assert_eq!(code, Some(0), "{err}");
    assert!(host.has_link("vi100"));
    assert_eq!(host.ports("ovsbr0"), vec!["vi100"]);
}
