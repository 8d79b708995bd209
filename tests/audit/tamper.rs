//! Every tamper class on a real database file edited behind the library's back
//! (triggers dropped, as an attacker would). Each test asserts the class and first bad seq.

use crate::common::*;

use op_agent::audit::encoding;
use op_agent::audit::verify::TamperClass;
use op_agent::audit::{init_key, read_key_file, AuditLog, Head};
use op_agent::commands::audit::{self as cli, AuditCommand};
use op_agent::commands::exit_status;

fn ten_rows() -> (tempfile::TempDir, std::path::PathBuf, Head) {
    let (d, db) = tmp();
    let mut log = AuditLog::open(&db, &opts(None)).unwrap();
    let h = fill(&mut log, 10);
    assert_intact(&verify_db(&db, &[], None));
    (d, db, h)
}

fn cli_verify(
    db: &std::path::Path,
    anchors: Vec<Head>,
    key: Option<std::path::PathBuf>,
) -> (i32, serde_json::Value) {
    let mut out = Vec::new();
    let cmd = AuditCommand::Verify {
        anchors,
        key_file: key,
        json: true,
        file: None,
        witnesses: false,
        peer_exports: vec![],
        node: None,
    };
    let code = cli::run(
        &cmd,
        db,
        std::path::Path::new("/nonexistent/audit.key"),
        &mut out,
    );
    (exit_status(&code), serde_json::from_slice(&out).unwrap())
}

#[test]
fn triggers_refuse_update_and_delete() {
    let (_d, db, _) = ten_rows();
    let c = rusqlite::Connection::open(&db).unwrap();
    let e = c
        .execute("UPDATE audit SET detail = '{}' WHERE seq = 3", [])
        .unwrap_err();
    assert!(e.to_string().contains("append-only"), "{e}");
    assert!(c.execute("DELETE FROM audit WHERE seq = 3", []).is_err());
}

#[test]
fn change_any_column_of_a_middle_row() {
    let edits = [
        ("ts", "UPDATE audit SET ts = ts + 1 WHERE seq = 5"),
        ("host", "UPDATE audit SET host = 'evil' WHERE seq = 5"),
        ("vmid", "UPDATE audit SET vmid = 999 WHERE seq = 5"),
        (
            "phase",
            "UPDATE audit SET phase = 'post-stop' WHERE seq = 5",
        ),
        ("run_id", "UPDATE audit SET run_id = 'x' WHERE seq = 5"),
        ("step", "UPDATE audit SET step = 'ovs.gc' WHERE seq = 5"),
        (
            "outcome",
            "UPDATE audit SET outcome = 'failed' WHERE seq = 5",
        ),
        (
            "detail",
            r#"UPDATE audit SET detail = '{"i":4, "name":"vi101","note":"ü"}' WHERE seq = 5"#,
        ),
        (
            "prev_hash",
            "UPDATE audit SET prev_hash = randomblob(32) WHERE seq = 5",
        ),
        (
            "hash",
            "UPDATE audit SET hash = randomblob(32) WHERE seq = 5",
        ),
    ];
    for (col, sql) in edits {
        eprintln!("column {col}");
        let (_d, db, _) = ten_rows();
        assert_eq!(attacker(&db).execute(sql, []).unwrap(), 1);
        let rep = verify_db(&db, &[], None);
        assert_tamper(&rep, TamperClass::ContentChanged, 5);
        assert_eq!(rep.tamper.unwrap().last_good.unwrap().seq, 4);
        let (code, j) = cli_verify(&db, vec![], None);
        assert_eq!(code, 1, "{j}");
        assert_eq!(j["tamper"]["class"], "content-changed");
        assert_eq!(j["tamper"]["seq"], 5);
    }
    // The seq column itself: the row leaves its place, a gap opens at 5.
    let (_d, db, _) = ten_rows();
    attacker(&db)
        .execute("UPDATE audit SET seq = 50 WHERE seq = 5", [])
        .unwrap();
    assert_tamper(&verify_db(&db, &[], None), TamperClass::Gap, 5);
}

#[test]
fn changed_and_rehashed_row_breaks_the_link() {
    let (_d, db, _) = ten_rows();
    let c = attacker(&db);
    let mut r = read_rows(&c).into_iter().find(|r| r.seq == 5).unwrap();
    r.detail = r#"{"forged":true}"#.into();
    let h = hash_of(&r);
    c.execute(
        "UPDATE audit SET detail = ?1, hash = ?2 WHERE seq = 5",
        rusqlite::params![r.detail, &h[..]],
    )
    .unwrap();
    let rep = verify_db(&db, &[], None);
    assert_tamper(&rep, TamperClass::LinkBroken, 5);
    assert_eq!(rep.tamper.unwrap().last_good.unwrap().seq, 4);
}

#[test]
fn delete_a_middle_row() {
    let (_d, db, _) = ten_rows();
    attacker(&db)
        .execute("DELETE FROM audit WHERE seq = 5", [])
        .unwrap();
    let rep = verify_db(&db, &[], None);
    assert_tamper(&rep, TamperClass::Gap, 5);
    assert_eq!(rep.tamper.unwrap().last_good.unwrap().seq, 4);
}

#[test]
fn delete_last_rows_detected_against_anchor() {
    let (_d, db, head) = ten_rows();
    attacker(&db)
        .execute("DELETE FROM audit WHERE seq >= 8", [])
        .unwrap();
    let rep = verify_db(&db, &[head], None);
    assert_tamper(&rep, TamperClass::MissingRowsAfterAnchor, 8);
    assert_eq!(rep.tamper.unwrap().last_good.unwrap().seq, 7);
    assert_eq!(cli_verify(&db, vec![head], None).0, 1);
    // Without an anchor SQLite's high-water mark still shows the deletion...
    assert_tamper(&verify_db(&db, &[], None), TamperClass::Gap, 8);
    // ...until the attacker also rewrites sqlite_sequence: then only the anchor catches it.
    attacker(&db)
        .execute(
            "UPDATE sqlite_sequence SET seq = 7 WHERE name = 'audit'",
            [],
        )
        .unwrap();
    assert_intact(&verify_db(&db, &[], None));
    assert_tamper(
        &verify_db(&db, &[head], None),
        TamperClass::HeadOlderThanAnchor,
        8,
    );
}

#[test]
fn swap_two_rows() {
    let (_d, db, _) = ten_rows();
    let c = attacker(&db);
    // Exchange the records at seq 4 and 7 (seq values stay in order: rows moved).
    c.execute_batch(
        "UPDATE audit SET seq = 1004 WHERE seq = 4; UPDATE audit SET seq = 4 WHERE seq = 7; UPDATE audit SET seq = 7 WHERE seq = 1004;",
    )
    .unwrap();
    let rep = verify_db(&db, &[], None);
    assert_tamper(&rep, TamperClass::Reorder, 4);
    assert!(rep
        .tamper
        .as_ref()
        .unwrap()
        .message
        .contains("record of seq 7"));
    assert_eq!(rep.tamper.unwrap().last_good.unwrap().seq, 3);
}

/// Five runs of 4 rows, each sealed by a checkpoint (rows 5, 10, 15, 20, 25 are checkpoints).
fn keyed_log() -> (
    tempfile::TempDir,
    std::path::PathBuf,
    std::path::PathBuf,
    [u8; 32],
    Vec<Head>,
) {
    let (d, db) = tmp();
    let kf = d.path().join("etc/audit.key");
    let k0 = init_key(&kf).unwrap();
    let mut log = AuditLog::open(&db, &opts(Some(kf.clone()))).unwrap();
    let mut cps = Vec::new();
    for _ in 0..5 {
        fill(&mut log, 4);
        cps.push(log.checkpoint().unwrap().unwrap());
    }
    assert_eq!(
        cps.iter().map(|h| h.seq).collect::<Vec<_>>(),
        vec![5, 10, 15, 20, 25]
    );
    // The key on the host moved on: epoch 5, and the initial key is gone from the file.
    let (e, k) = read_key_file(&kf).unwrap();
    assert_eq!((e, k), (5, encoding::key_for_epoch(&k0, 5)));
    assert!(!std::fs::read_to_string(&kf)
        .unwrap()
        .contains(&encoding::hex(&k0)));
    let rep = verify_db(&db, &[], Some(k0));
    assert_intact(&rep);
    assert_eq!((rep.checkpoints, rep.unsealed_rows), (5, 0));
    (d, db, kf, k0, cps)
}

#[test]
fn keyed_checkpoints_verify_and_wrong_key_fails() {
    let (_d, db, kf, k0, _) = keyed_log();
    let keyfile0 = kf.with_file_name("initial.key");
    std::fs::write(&keyfile0, encoding::hex(&k0)).unwrap();
    assert_eq!(cli_verify(&db, vec![], Some(keyfile0.clone())).0, 0);
    assert_tamper(
        &verify_db(&db, &[], Some([9u8; 32])),
        TamperClass::BadCheckpoint,
        5,
    );
    // The current (ratcheted) key is refused as an initial key: exit 2.
    assert_eq!(cli_verify(&db, vec![], Some(kf)).0, 2);
}

#[test]
fn rechain_from_row_k_detected_by_anchor_and_by_checkpoint() {
    let (_d, db, _kf, k0, cps) = keyed_log();
    let anchor = cps[2]; // head logged to syslog after the third run (seq 15)
    let c = attacker(&db);
    c.execute(
        r#"UPDATE audit SET detail = '{"forged":true}' WHERE seq = 7"#,
        [],
    )
    .unwrap();
    rechain_from(&c, 7);
    drop(c);
    // A self-contained chain: without anchor or key the rewrite is invisible.
    assert_intact(&verify_db(&db, &[], None));
    // The anchor catches it...
    let rep = verify_db(&db, &[anchor], None);
    assert_tamper(&rep, TamperClass::Fork, 15);
    // ...and so does the checkpoint that sealed seq 9 (row 10, epoch 1).
    let rep = verify_db(&db, &[], Some(k0));
    assert_tamper(&rep, TamperClass::BadCheckpoint, 10);
    assert_eq!(rep.tamper.unwrap().last_good.unwrap().seq, 5);
}

#[test]
fn rechain_and_reseal_with_stolen_current_key_is_detected() {
    let (_d, db, kf, k0, _) = keyed_log();
    let (epoch, stolen) = read_key_file(&kf).unwrap();
    let c = attacker(&db);
    // Drop the checkpoints after row 7, forge row 7, re-chain, and seal with the stolen key.
    c.execute(
        "DELETE FROM audit WHERE step = 'audit.checkpoint' AND seq > 7",
        [],
    )
    .unwrap();
    c.execute("UPDATE audit SET seq = seq + 1000 WHERE seq > 7", [])
        .unwrap();
    let rest: Vec<i64> = c
        .prepare("SELECT seq FROM audit WHERE seq > 1000 ORDER BY seq")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for (i, s) in rest.iter().enumerate() {
        c.execute(
            "UPDATE audit SET seq = ?1 WHERE seq = ?2",
            [8 + i as i64, *s],
        )
        .unwrap();
    }
    c.execute(
        r#"UPDATE audit SET detail = '{"forged":true}' WHERE seq = 7"#,
        [],
    )
    .unwrap();
    let head = rechain_from(&c, 7);
    let mac = encoding::checkpoint_mac(&stolen, epoch, head.seq, &head.hash);
    let cp = op_agent::audit::verify::StoredRow {
        seq: head.seq + 1,
        ts: 0,
        host: "testhost".into(),
        vmid: 0,
        phase: encoding::CHECKPOINT_PHASE.into(),
        run_id: "x".into(),
        step: encoding::CHECKPOINT_STEP.into(),
        outcome: "ok".into(),
        detail: encoding::checkpoint_detail(epoch, head.seq, &mac),
        prev_hash: head.hash,
        hash: [0; 32],
    };
    let h = hash_of(&cp);
    c.execute(
        "INSERT INTO audit VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11)",
        rusqlite::params![
            cp.seq,
            cp.ts,
            cp.host,
            cp.vmid,
            cp.phase,
            cp.run_id,
            cp.step,
            cp.outcome,
            cp.detail,
            &cp.prev_hash[..],
            &h[..]
        ],
    )
    .unwrap();
    c.execute(
        "UPDATE sqlite_sequence SET seq = ?1 WHERE name = 'audit'",
        [cp.seq],
    )
    .unwrap();
    drop(c);
    // Structurally fine, but the epoch jumps from 0 to 5: the stolen key cannot re-seal.
    let rep = verify_db(&db, &[], Some(k0));
    assert_tamper(&rep, TamperClass::BadCheckpoint, cp.seq);
    assert!(rep.tamper.unwrap().message.contains("epoch 5, expected 1"));
}

fn close_and_copy(db: &std::path::Path, to: &std::path::Path) {
    // op-agent keeps its WAL on close; a plain SQLite connection (as `sqlite3` would) folds it
    // into the main file and deletes it when it closes, so the file alone is a full copy.
    let c = rusqlite::Connection::open(db).unwrap();
    let _: i64 = c
        .query_row("SELECT count(*) FROM audit", [], |r| r.get(0))
        .unwrap();
    drop(c);
    assert!(!db.with_extension("db-wal").exists());
    std::fs::copy(db, to).unwrap();
}

#[test]
fn roll_back_to_an_older_copy() {
    let (d, db) = tmp();
    {
        let mut log = AuditLog::open(&db, &opts(None)).unwrap();
        fill(&mut log, 6);
    }
    let old = d.path().join("old.db");
    close_and_copy(&db, &old);
    let anchor = {
        let mut log = AuditLog::open(&db, &opts(None)).unwrap();
        fill(&mut log, 5)
    };
    std::fs::copy(&old, &db).unwrap();
    let _ = std::fs::remove_file(db.with_extension("db-wal"));
    let _ = std::fs::remove_file(db.with_extension("db-shm"));
    assert_intact(&verify_db(&db, &[], None));
    let rep = verify_db(&db, &[anchor], None);
    assert_tamper(&rep, TamperClass::HeadOlderThanAnchor, 7);
    assert_eq!(rep.tamper.unwrap().last_good.unwrap().seq, 6);
}

#[test]
fn truncate_then_append() {
    let (_d, db) = tmp();
    let anchor = {
        let mut log = AuditLog::open(&db, &opts(None)).unwrap();
        fill(&mut log, 10)
    };
    std::fs::OpenOptions::new()
        .write(true)
        .open(&db)
        .unwrap()
        .set_len(0)
        .unwrap();
    let _ = std::fs::remove_file(db.with_extension("db-wal"));
    let _ = std::fs::remove_file(db.with_extension("db-shm"));
    {
        let mut log = AuditLog::open(&db, &opts(None)).unwrap();
        fill(&mut log, 12);
    }
    assert_intact(&verify_db(&db, &[], None));
    let rep = verify_db(&db, &[anchor], None);
    assert_tamper(&rep, TamperClass::Fork, 10);
    assert_eq!(cli_verify(&db, vec![anchor], None).0, 1);
}

#[test]
fn anchors_that_match_pass() {
    let (_d, db, head) = ten_rows();
    let rep = verify_db(
        &db,
        &[
            head,
            Head {
                seq: 3,
                hash: read_rows(&attacker(&db))[2].hash,
            },
        ],
        None,
    );
    assert_intact(&rep);
    assert_eq!(rep.anchors_matched, 2);
}
