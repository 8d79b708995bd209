//! The one audit reader: the rows of op-agent's audit table, read with SQLite through a
//! read-only connection (it never checkpoints the WAL op-agent keeps, and never writes).

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

/// One row of op-agent's `audit` table (the hash columns left out).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRow {
    /// Position in the chain, from 1.
    pub seq: i64,
    /// Unix time, ms.
    pub ts: i64,
    /// Host name recorded by the writer.
    pub host: String,
    /// The container (0 for host-wide rows such as checkpoints).
    pub vmid: i64,
    /// Hook phase (`pre-start`, …) or command label (`watch`, `apply`, `gc`, …).
    pub phase: String,
    /// One run of op-agent.
    pub run_id: String,
    /// The step (`run.intent`, `ovs.add-port`, `link.rename`, …).
    pub step: String,
    /// `intent`, `ok`, `failed` or `skipped`.
    pub outcome: String,
    /// The step's detail, a JSON text.
    pub detail: String,
}

impl AuditRow {
    /// [`AuditRow::detail`] parsed; panics if it is not JSON.
    pub fn detail_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.detail).unwrap_or_else(|e| {
            panic!(
                "detail of seq {} is not JSON: {e}: {}",
                self.seq, self.detail
            )
        })
    }
}

/// Every row of the audit database `db` in `seq` order; empty when the file or its table does
/// not exist yet.
/// Waits up to 5 s for a writer's lock. Panics when the file cannot be read as op-agent's
/// audit database.
pub fn read_audit_rows(db: &Path) -> Vec<AuditRow> {
    if !db.exists() {
        return Vec::new();
    }
    let c = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .unwrap_or_else(|e| panic!("open {}: {e}", db.display()));
    c.busy_timeout(Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{}: busy_timeout: {e}", db.display()));
    let sql =
        "SELECT seq, ts, host, vmid, phase, run_id, step, outcome, detail FROM audit ORDER BY seq";
    let mut st = match c.prepare(sql) {
        Ok(st) => st,
        // A writer that has created the file but not yet committed the schema.
        Err(e) if e.to_string().contains("no such table") => return Vec::new(),
        Err(e) => panic!("{}: {e}", db.display()),
    };
    st.query_map([], |r| {
        Ok(AuditRow {
            seq: r.get(0)?,
            ts: r.get(1)?,
            host: r.get(2)?,
            vmid: r.get(3)?,
            phase: r.get(4)?,
            run_id: r.get(5)?,
            step: r.get(6)?,
            outcome: r.get(7)?,
            detail: r.get(8)?,
        })
    })
    .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
    .unwrap_or_else(|e| panic!("{}: read audit rows: {e}", db.display()))
}
