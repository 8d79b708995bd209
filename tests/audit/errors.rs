//! Failure paths: locked past busy_timeout, read-only database, corrupt file, bad input,
//! key file repair; plus export → offline verify and the read-only CLI commands.

use crate::common::*;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use op_agent::audit::verify::TamperClass;
use op_agent::audit::{
    encoding, format_key_line, init_key, read_key_file, AuditError, AuditLog, AuditOptions, NewRow,
    Outcome,
};
use op_agent::commands::audit::{self as cli, AuditCommand};
use op_agent::commands::exit_status;

fn count(db: &Path) -> i64 {
    rusqlite::Connection::open(db)
        .unwrap()
        .query_row("SELECT count(*) FROM audit", [], |r| r.get(0))
        .unwrap()
}

fn row<'a>(detail: &'a str) -> NewRow<'a> {
    NewRow {
        vmid: 100,
        phase: "post-start",
        run_id: "r1",
        step: "config.validate",
        outcome: Outcome::Intent,
        detail,
    }
}

fn run_cli(cmd: AuditCommand, db: &Path) -> (i32, String) {
    let mut out = Vec::new();
    let code = cli::run(&cmd, db, Path::new("/nonexistent/audit.key"), &mut out);
    (exit_status(&code), String::from_utf8(out).unwrap())
}

#[test]
fn locked_past_busy_timeout_fails_clearly_without_a_partial_row() {
    let (_d, db) = tmp();
    let o = AuditOptions {
        busy_timeout: Duration::from_millis(300),
        ..opts(None)
    };
    let mut log = AuditLog::open(&db, &o).unwrap();
    fill(&mut log, 3);
    let holder = rusqlite::Connection::open(&db).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    let t = Instant::now();
    let e = log.append_all(&[row("{}"), row("{}")]).unwrap_err();
    let waited = t.elapsed();
    assert!(
        matches!(
            e,
            AuditError::Busy {
                timeout_ms: 300,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        waited >= Duration::from_millis(290),
        "gave up after {waited:?}"
    );
    assert!(
        e.to_string().contains("is locked") && e.to_string().contains(db.to_str().unwrap()),
        "{e}"
    );
    holder.execute_batch("ROLLBACK").unwrap();
    assert_eq!(count(&db), 3);
    log.append(&row("{}")).unwrap();
    assert_eq!(count(&db), 4);
    assert_intact(&verify_db(&db, &[], None));
}

const RO_CHILD: &str = "OP_AUDIT_RO_CHILD";

#[test]
fn read_only_database_refuses_append_with_a_clear_error() {
    if let Ok(db) = std::env::var(RO_CHILD) {
        // Child, inside a mount namespace where the directory is a read-only bind mount.
        let db = Path::new(&db);
        let r = AuditLog::open(db, &opts(None)).and_then(|mut l| l.append(&row("{}")));
        let e = r.expect_err("append on a read-only mount succeeded");
        eprintln!("read-only error: {e}");
        assert!(matches!(e, AuditError::ReadOnly { .. }), "{e:?}");
        assert!(e.to_string().contains(db.to_str().unwrap()), "{e}");
        std::process::exit(0);
    }
    assert!(
        is_root(),
        "this test needs root (mount namespace with a read-only bind mount)"
    );
    let (d, db) = tmp();
    {
        let mut log = AuditLog::open(&db, &opts(None)).unwrap();
        fill(&mut log, 3);
    }
    let st = Command::new("unshare")
        .args(["-m", "--propagation", "private", "--", "sh", "-c"])
        .arg(r#"mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && exec "$2" --exact "$3" --nocapture --test-threads=1"#)
        .arg("sh")
        .arg(d.path())
        .arg(std::env::current_exe().unwrap())
        .arg(crate::test_name(
            module_path!(),
            "read_only_database_refuses_append_with_a_clear_error",
        ))
        .env(RO_CHILD, &db)
        .status()
        .unwrap();
    assert!(st.success(), "child failed: {st:?}");
    assert_eq!(count(&db), 3);
    assert_intact(&verify_db(&db, &[], None));
}

#[test]
fn corrupt_file_is_exit_2_and_a_typed_open_error() {
    let (_d, db) = tmp();
    std::fs::write(
        &db,
        "this is not an SQLite database, just text ".repeat(100),
    )
    .unwrap();
    let (code, out) = run_cli(
        AuditCommand::Verify {
            anchors: vec![],
            key_file: None,
            json: true,
            file: None,
            witnesses: false,
            peer_exports: vec![],
            node: None,
        },
        &db,
    );
    assert_eq!(code, 2);
    assert!(out.contains("unreadable"), "{out}");
    let e = AuditLog::open(&db, &opts(None)).unwrap_err();
    assert!(matches!(e, AuditError::NotADatabase { .. }), "{e:?}");
    let (code, _) = run_cli(
        AuditCommand::Verify {
            anchors: vec![],
            key_file: None,
            json: false,
            file: None,
            witnesses: false,
            peer_exports: vec![],
            node: None,
        },
        &db.with_file_name("missing.db"),
    );
    // A database that does not exist yet (fresh install) is an empty log, intact.
    assert_eq!(code, 0);
}

#[test]
fn detail_must_be_json_and_nothing_is_written_otherwise() {
    let (_d, db) = tmp();
    let mut log = AuditLog::open(&db, &opts(None)).unwrap();
    let e = log.append_all(&[row("{}"), row("{not json")]).unwrap_err();
    assert!(matches!(e, AuditError::DetailNotJson { .. }), "{e:?}");
    assert_eq!(count(&db), 0);
}

#[test]
fn new_db_dir_is_0700_file_0600_wal_full_and_schema_versioned() {
    use std::os::unix::fs::PermissionsExt;
    let (d, _) = tmp();
    let db = d.path().join("var/lib/op-agent/audit.db");
    let log = AuditLog::open(&db, &opts(None)).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(db.parent().unwrap()), 0o700);
    assert_eq!(mode(&db), 0o600);
    drop(log);
    let c = rusqlite::Connection::open(&db).unwrap();
    let jm: String = c
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    let uv: i64 = c
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!((jm.as_str(), uv), ("wal", 1));
    // A newer schema is refused, not silently used.
    c.pragma_update(None, "user_version", 99).unwrap();
    let e = AuditLog::open(&db, &opts(None)).unwrap_err();
    assert!(
        matches!(e, AuditError::UnsupportedSchema { found: 99, .. }),
        "{e:?}"
    );
}

#[test]
fn tampered_head_refuses_append() {
    let (_d, db) = tmp();
    let mut log = AuditLog::open(&db, &opts(None)).unwrap();
    fill(&mut log, 3);
    attacker(&db)
        .execute("UPDATE audit SET host = 'x' WHERE seq = 3", [])
        .unwrap();
    let e = log.append(&row("{}")).unwrap_err();
    assert!(
        matches!(e, AuditError::HeadTampered { seq: 3, .. }),
        "{e:?}"
    );
}

#[test]
fn key_file_behind_is_ratcheted_forward_ahead_is_refused() {
    let (d, db) = tmp();
    let kf = d.path().join("audit.key");
    let k0 = init_key(&kf).unwrap();
    assert!(init_key(&kf).is_err(), "init-key replaced an existing key");
    let mut log = AuditLog::open(&db, &opts(Some(kf.clone()))).unwrap();
    fill(&mut log, 2);
    log.checkpoint().unwrap().unwrap();
    fill(&mut log, 2);
    log.checkpoint().unwrap().unwrap();
    // As after a crash between commit and key write: the file is one epoch behind.
    std::fs::write(&kf, format_key_line(1, &encoding::key_for_epoch(&k0, 1))).unwrap();
    log.checkpoint().unwrap().unwrap();
    assert_eq!(read_key_file(&kf).unwrap().0, 3);
    assert_intact(&verify_db(&db, &[], Some(k0)));
    // Ahead of the log (e.g. the log was rolled back): refused, nothing written.
    std::fs::write(&kf, format_key_line(9, &encoding::key_for_epoch(&k0, 9))).unwrap();
    let n = count(&db);
    let e = log.checkpoint().unwrap_err();
    assert!(
        e.to_string().contains("epoch 9") && e.to_string().contains("rolled back"),
        "{e}"
    );
    assert_eq!(count(&db), n);
    // Group-readable key files are refused.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&kf, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(log.checkpoint().unwrap_err().to_string().contains("0644"));
    // No key file: no checkpoint, nothing written.
    let mut nokey = AuditLog::open(&db, &opts(Some(d.path().join("absent.key")))).unwrap();
    assert!(nokey.checkpoint().unwrap().is_none());
    assert_eq!(count(&db), n);
}

#[test]
fn keyed_verify_fails_when_nothing_is_sealed() {
    let (_d, db) = tmp();
    let mut log = AuditLog::open(&db, &opts(None)).unwrap();
    fill(&mut log, 3);
    assert_tamper(
        &verify_db(&db, &[], Some([1; 32])),
        TamperClass::BadCheckpoint,
        1,
    );
}

#[test]
fn export_then_verify_file_offline() {
    let (d, db) = tmp();
    let mut log = AuditLog::open(&db, &opts(None)).unwrap();
    fill(&mut log, 12);
    let (code, text) = run_cli(AuditCommand::Export { since_seq: 0 }, &db);
    assert_eq!(code, 0);
    assert_eq!(text.lines().count(), 13);
    let f = d.path().join("export.jsonl");
    std::fs::write(&f, &text).unwrap();
    let nodb = d.path().join("no-such.db");
    let verify_file = |p: &Path| {
        run_cli(
            AuditCommand::Verify {
                anchors: vec![],
                key_file: None,
                json: true,
                file: Some(p.into()),
                witnesses: false,
                peer_exports: vec![],
                node: None,
            },
            &nodb,
        )
    };
    let (code, out) = verify_file(&f);
    assert_eq!(code, 0, "{out}");
    // A partial export verifies too.
    let (_, part) = run_cli(AuditCommand::Export { since_seq: 5 }, &db);
    std::fs::write(&f, &part).unwrap();
    assert_eq!(verify_file(&f).0, 0);
    // An edited line: content changed at that seq.
    std::fs::write(&f, text.replacen(r#"\"i\":6"#, r#"\"i\":66"#, 1)).unwrap();
    let (code, out) = verify_file(&f);
    assert_eq!(code, 1, "{out}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (j["tamper"]["class"].as_str(), j["tamper"]["seq"].as_i64()),
        (Some("content-changed"), Some(7))
    );
    // A cut export: the header's head is the anchor.
    let cut: String = text.lines().take(10).map(|l| format!("{l}\n")).collect();
    std::fs::write(&f, cut).unwrap();
    let (code, out) = verify_file(&f);
    assert_eq!(code, 1);
    assert!(out.contains("head-older-than-anchor"), "{out}");
    // Garbage: cannot read.
    std::fs::write(&f, "hello\n").unwrap();
    assert_eq!(verify_file(&f).0, 2);
}

#[test]
fn log_head_and_filters() {
    let (_d, db) = tmp();
    let mut log = AuditLog::open(&db, &opts(None)).unwrap();
    let h = fill(&mut log, 9);
    let (code, out) = run_cli(AuditCommand::Head, &db);
    assert_eq!((code, out.trim()), (0, h.to_string().as_str()));
    let (code, out) = run_cli(
        AuditCommand::Log {
            vmid: Some(101),
            since: None,
            from_seq: None,
            to_seq: None,
            json: true,
            filter: Default::default(),
        },
        &db,
    );
    assert_eq!(code, 0);
    let seqs: Vec<i64> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, vec![2, 5, 8]);
    let (_, out) = run_cli(
        AuditCommand::Log {
            vmid: None,
            since: Some("2999-01-01".into()),
            from_seq: None,
            to_seq: None,
            json: false,
            filter: Default::default(),
        },
        &db,
    );
    assert_eq!(out, "");
    let (_, out) = run_cli(
        AuditCommand::Log {
            vmid: None,
            since: Some("1970-01-02T00:00Z".into()),
            from_seq: None,
            to_seq: None,
            json: false,
            filter: Default::default(),
        },
        &db,
    );
    assert_eq!(out.lines().count(), 9);
    assert!(
        out.lines()
            .next()
            .unwrap()
            .contains(" testhost 100 post-start "),
        "{out}"
    );
    assert_eq!(
        run_cli(
            AuditCommand::Log {
                vmid: None,
                since: Some("soon".into()),
                from_seq: None,
                to_seq: None,
                json: false,
                filter: Default::default(),
            },
            &db
        )
        .0,
        64
    );
}
