//! The audit disk fills up after a post-start wrote its intent row and made its changes: the
//! hook says what was applied and that its outcome is not recorded (exit 74, one line), the
//! network stays converged, and the next run that can write records an `audit.unrecorded`
//! row for the lost outcome before its own rows; the chain stays intact throughout.

use op_testkit::{PveConf, TestHost, Tmpfs};
use std::time::{Duration, Instant};

/// Runs `phase` of container 100, paused at failpoint step `step` (after its intent row and the
/// changes before that step), fills the audit file system at `dir` meanwhile, resumes it:
/// the hook's exit code and stderr.
fn run_with_disk_full_at(
    host: &TestHost,
    phase: &str,
    step: &str,
    dir: &std::path::Path,
) -> (Option<i32>, String) {
    let fp = host.root().join(format!("fp-{phase}"));
    std::fs::create_dir_all(&fp).unwrap();
    let hook = host
        .hook(100, phase)
        .env("OP_AGENT_FAILPOINT", format!("pause:{step}"))
        .env("OP_AGENT_FAILPOINT_DIR", &fp);
    let run = std::thread::spawn(move || hook.run().exit_stderr_took());
    let t = Instant::now();
    while !fp.join("paused").exists() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the hook never paused"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = std::fs::write(dir.join("filler"), vec![0u8; 8 << 20]);
    std::fs::write(fp.join("resume"), "").unwrap();
    let (code, err, _) = run.join().unwrap();
    (code, err)
}

#[test]
fn audit_unwritable_after_the_intent_says_what_was_applied_and_the_next_run_records_it() {
    let host = TestHost::new("f-unrec");
    host.manage_bridged(100, PveConf::bridged(100, 10));
    host.plug_like_pve(100);
    let dir = host.audit_db().parent().unwrap().to_path_buf();
    let _fs = Tmpfs::mount(&dir, "4m");
    let (code, err, _) = host.hook(100, "pre-start").run().exit_stderr_took();
    assert_eq!(code, Some(0), "{err}");
    // The intent row is written and the port added: then the audit file system is full.
    let (code, err) = run_with_disk_full_at(&host, "post-start", "ovs.add-port", &dir);
    assert_eq!(code, Some(74), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("applied (net0 veth100i0 -> vi100"), "{err}");
    assert!(err.contains("the outcome is not recorded"), "{err}");
    host.wait_converged(100, "vi100", 10, Duration::from_secs(1));
    host.assert_audit_intact("unwritable after the intent");
    let lost = host
        .audit_rows_for(100)
        .into_iter()
        .rfind(|r| r.phase == "post-start")
        .unwrap();
    assert_eq!(lost.step, "run.intent", "the outcome rows are not there");

    // Space again: the next run records the lost outcome first, then its own rows.
    std::fs::remove_file(dir.join("filler")).unwrap();
    let (code, err, _) = host.hook(100, "post-start").run().exit_stderr_took();
    assert_eq!(code, Some(0), "{err}");
    let rows = host.audit_rows_for(100);
    let at = rows
        .iter()
        .position(|r| r.step == "audit.unrecorded")
        .unwrap_or_else(|| panic!("no audit.unrecorded row: {rows:?}"));
    assert!(rows[at].detail.contains(&lost.run_id), "{:?}", rows[at]);
    assert!(
        rows[at]
            .detail
            .contains("never reached the log (audit disk full or read-only"),
        "the row says in one sentence what happened: {:?}",
        rows[at]
    );
    assert!(rows[at].seq > lost.seq);
    assert_ne!(rows[at].run_id, lost.run_id);
    assert!(
        rows[at + 1..].iter().all(|r| r.run_id == rows[at].run_id),
        "the row opens the new run: {rows:?}"
    );
    host.assert_audit_intact("space again");
    // Recorded once: a third run adds no second row.
    let (code, err, _) = host.hook(100, "post-start").run().exit_stderr_took();
    assert_eq!(code, Some(0), "{err}");
    let n = host
        .audit_rows_for(100)
        .iter()
        .filter(|r| r.step == "audit.unrecorded")
        .count();
    assert_eq!(n, 1);
}

/// The same for a post-stop whose deletes give no summary line of their own: the one line
/// names the deletes it applied (it said "applied (nothing to change)" although the Port was
/// gone).
#[test]
fn a_post_stop_unrecorded_names_the_deletes_it_applied() {
    let host = TestHost::new("f-unrec-stop");
    host.manage_bridged(100, PveConf::bridged(100, 10));
    host.plug_like_pve(100);
    let (code, err, _) = host.hook(100, "post-start").run().exit_stderr_took();
    assert_eq!(code, Some(0), "{err}");
    let dir = host.audit_db().parent().unwrap().to_path_buf();
    // The database moves onto a small file system of its own, as in the test above.
    let keep = host.root().join("audit-keep");
    std::fs::create_dir_all(&keep).unwrap();
    for f in std::fs::read_dir(&dir).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, keep.join(f.file_name().unwrap())).unwrap();
    }
    let _fs = Tmpfs::mount(&dir, "4m");
    for f in std::fs::read_dir(&keep).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dir.join(f.file_name().unwrap())).unwrap();
    }
    let (code, err) = run_with_disk_full_at(&host, "post-stop", "ovs.del-port", &dir);
    assert_eq!(code, Some(74), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!host.ports("ovsbr0").contains(&"vi100".to_string()));
    assert!(err.contains("applied (net0: ovs.del-port vi100"), "{err}");
    assert!(err.contains("the outcome is not recorded"), "{err}");
    std::fs::remove_file(dir.join("filler")).unwrap();
}
