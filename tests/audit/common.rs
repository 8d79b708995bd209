//! Helpers shared by the audit integration tests: a temp database, filling it through the
//! library, and an "attacker" connection that edits the file behind the library's back.

use std::path::{Path, PathBuf};
use std::time::Duration;

use op_agent::audit::encoding::{self, RowFields};
use op_agent::audit::verify::{self, StoredRow, TamperClass, VerifyOptions, VerifyReport};
use op_agent::audit::{AuditLog, AuditOptions, Head, NewRow, Outcome};
use rusqlite::Connection;

pub fn opts(key_file: Option<PathBuf>) -> AuditOptions {
    AuditOptions {
        busy_timeout: Duration::from_secs(30),
        host: "testhost".into(),
        key_file,
    }
}

pub fn tmp() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::Builder::new()
        .prefix(&format!("audit-{}-", std::process::id()))
        .tempdir()
        .unwrap();
    let db = d.path().join("audit.db");
    (d, db)
}

/// Appends `n` rows of one run, with varied fields.
pub fn fill(log: &mut AuditLog, n: usize) -> Head {
    let run = op_agent::audit::run_id();
    let steps = [
        "config.validate",
        "ovs.del-port",
        "link.rename",
        "ovs.add-port",
        "ovs.wait",
    ];
    let mut h = None;
    for i in 0..n {
        let detail = format!(r#"{{"i":{i},"name":"vi{}","note":"ü"}}"#, 100 + i % 3);
        let row = NewRow {
            vmid: 100 + (i % 3) as u32,
            phase: if i % 2 == 0 {
                "post-start"
            } else {
                "pre-start"
            },
            run_id: &run,
            step: steps[i % steps.len()],
            outcome: if i == 0 { Outcome::Intent } else { Outcome::Ok },
            detail: &detail,
        };
        h = Some(log.append(&row).unwrap());
    }
    h.unwrap()
}

/// An attacker's connection: the append-only triggers dropped.
pub fn attacker(db: &Path) -> Connection {
    let c = Connection::open(db).unwrap();
    c.execute_batch(
        "DROP TRIGGER IF EXISTS audit_no_update; DROP TRIGGER IF EXISTS audit_no_delete;",
    )
    .unwrap();
    c
}

pub fn read_rows(c: &Connection) -> Vec<StoredRow> {
    let mut st = c
        .prepare(&format!(
            "SELECT {} FROM audit ORDER BY seq",
            verify::COLUMNS
        ))
        .unwrap();
    let mut rows = st.query([]).unwrap();
    let mut v = Vec::new();
    while let Some(r) = rows.next().unwrap() {
        v.push(verify::decode_row(r).unwrap());
    }
    v
}

/// Re-chains every row with seq >= `from` with correct hashes (the public encoding).
/// Returns the new head.
pub fn rechain_from(c: &Connection, from: i64) -> Head {
    let rows = read_rows(c);
    let mut prev = rows
        .iter()
        .find(|r| r.seq == from - 1)
        .map(|r| r.hash)
        .unwrap_or(encoding::GENESIS);
    // Clear prev_hash first so UNIQUE(prev_hash) does not trip mid-way.
    c.execute(
        "UPDATE audit SET prev_hash = randomblob(32) WHERE seq >= ?1",
        [from],
    )
    .unwrap();
    let mut head = Head {
        seq: from - 1,
        hash: prev,
    };
    for mut r in rows.into_iter().filter(|r| r.seq >= from) {
        r.prev_hash = prev;
        let h = encoding::row_hash(&r.fields());
        c.execute(
            "UPDATE audit SET prev_hash = ?1, hash = ?2 WHERE seq = ?3",
            rusqlite::params![&prev[..], &h[..], r.seq],
        )
        .unwrap();
        prev = h;
        head = Head {
            seq: r.seq,
            hash: h,
        };
    }
    head
}

pub fn hash_of(r: &StoredRow) -> [u8; 32] {
    encoding::row_hash(&RowFields { ..r.fields() })
}

pub fn verify_db(db: &Path, anchors: &[Head], key: Option<[u8; 32]>) -> VerifyReport {
    verify::verify_db(
        db,
        &VerifyOptions {
            anchors: anchors.to_vec(),
            initial_key: key,
        },
    )
    .unwrap()
}

#[track_caller]
pub fn assert_tamper(rep: &VerifyReport, class: TamperClass, seq: i64) {
    let t = rep
        .tamper
        .as_ref()
        .unwrap_or_else(|| panic!("expected {class:?} at seq {seq}, verify passed: {rep:?}"));
    assert_eq!((t.class, t.seq), (class, seq), "{t:?}");
    eprintln!(
        "detected: {} at seq {}: {} (last good {:?})",
        t.class.as_str(),
        t.seq,
        t.message,
        t.last_good.map(|h| h.seq)
    );
}

#[track_caller]
pub fn assert_intact(rep: &VerifyReport) {
    assert!(rep.tamper.is_none(), "expected intact: {:?}", rep.tamper);
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}
