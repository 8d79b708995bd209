//! What an attacker with root on one node does to its audit database: rewrite from a row and
//! re-chain, truncate and append; and a consistent copy of a live database.

use op_agent::audit::{encoding, verify, AuditLog, AuditOptions, NewRow, Outcome, StoredRow};
use rusqlite::Connection;
use std::path::Path;
use std::time::Duration;

/// A copy of the audit database `db` at `to` (`VACUUM INTO`: a consistent snapshot with the
/// WAL's rows, `sqlite_sequence` and the triggers).
pub fn snapshot(db: &Path, to: &Path) {
    let c = Connection::open(db).unwrap();
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    c.execute("VACUUM INTO ?1", [to.to_str().unwrap()]).unwrap();
}

/// An attacker's connection to `db`: the append-only triggers dropped.
fn attacker(db: &Path) -> Connection {
    let c = Connection::open(db).unwrap();
    c.execute_batch("DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;")
        .unwrap();
    c
}

fn stored_rows(c: &Connection) -> Vec<StoredRow> {
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

/// Changes row `k`'s detail and re-chains every row from `k` with correct hashes (the public
/// encoding), as an attacker with root on the node can: plain `audit verify` finds it intact.
pub fn rewrite_from(db: &Path, k: i64) {
    let c = attacker(db);
    c.execute(
        "UPDATE audit SET detail = '{\"rewritten\":true}' WHERE seq = ?1",
        [k],
    )
    .unwrap();
    let rows = stored_rows(&c);
    let mut prev = rows
        .iter()
        .find(|r| r.seq == k - 1)
        .map_or(encoding::GENESIS, |r| r.hash);
    c.execute(
        "UPDATE audit SET prev_hash = randomblob(32) WHERE seq >= ?1",
        [k],
    )
    .unwrap();
    for mut r in rows.into_iter().filter(|r| r.seq >= k) {
        r.prev_hash = prev;
        let h = encoding::row_hash(&r.fields());
        c.execute(
            "UPDATE audit SET prev_hash = ?1, hash = ?2 WHERE seq = ?3",
            rusqlite::params![&prev[..], &h[..], r.seq],
        )
        .unwrap();
        prev = h;
    }
}

/// Deletes every row after `m` (and lowers SQLite's high-water mark to it), then appends
/// `n` rows through op-agent's own writer.
pub fn truncate_and_append(db: &Path, m: i64, n: usize) {
    {
        let c = attacker(db);
        c.execute("DELETE FROM audit WHERE seq > ?1", [m]).unwrap();
        c.execute(
            "UPDATE sqlite_sequence SET seq = ?1 WHERE name = 'audit'",
            [m],
        )
        .unwrap();
    }
    let mut log = AuditLog::open(db, &AuditOptions::default()).unwrap();
    let run = op_agent::audit::run_id();
    for i in 0..n {
        let detail = format!("{{\"i\":{i}}}");
        log.append(&NewRow {
            vmid: 100,
            phase: "post-start",
            run_id: &run,
            step: "run.ok",
            outcome: Outcome::Ok,
            detail: &detail,
        })
        .unwrap();
    }
}
