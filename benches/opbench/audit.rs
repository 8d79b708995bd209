//! Sections 6 and 6b: audit append and verify rates, the audit work of one hook run, and
//! DEFERRED vs IMMEDIATE appenders under contention.

use crate::proc::{env_path, time_one};
use crate::stats::{fmt3, stats};
use crate::Res;
use op_agent::audit::encoding::{row_hash, RowFields, GENESIS};
use op_agent::audit::{AuditLog, AuditOptions, NewRow, Outcome};
use op_testkit::AgentToml;
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// An agent.toml at `path` for `op-agent audit …` on `db` alone (no OVS, PVE root `root`).
pub(crate) fn audit_only_toml(path: &Path, db: &Path, root: &Path) -> Res<()> {
    AgentToml {
        ovsdb_socket: Some("/nonexistent".into()),
        audit_db: Some(db.to_path_buf()),
        pve_root: Some(root.to_path_buf()),
        ..AgentToml::default()
    }
    .write(path)
    .map_err(|e| e.to_string())
}

pub(crate) fn sample_row<'a>(run: &'a str, detail: &'a str) -> NewRow<'a> {
    NewRow {
        vmid: 100,
        phase: "post-start",
        run_id: run,
        step: "ovs.add-port",
        outcome: Outcome::Ok,
        detail,
    }
}

pub(crate) const DETAIL: &str = r#"{"net":0,"port":"vi100","bridge":"ovsbr0","tag":10,"mtu_request":1500,"uuid":"3f1c2a9e-0d1b-4c55-9a51-0b8a7c1d2e3f"}"#;

/// The audit work of one hook run, in-process, `runs` times on `dir`'s file system: open,
/// the intent transaction (2 rows), the WAL fold (a hook does it on a helper thread while
/// ovs-vswitchd works), the outcome transaction (9 rows), close (the WAL is kept).
/// Medians per step, as a Markdown table.
pub(crate) fn audit_steps(dir: &Path, runs: usize) -> Res<()> {
    fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let db = dir.join("steps.db");
    for s in ["", "-wal", "-shm"] {
        let _ = fs::remove_file(format!("{}{s}", db.display()));
    }
    let o = AuditOptions::default();
    let mut t: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    for i in 0..runs + 3 {
        let run = format!("run-{i}");
        let t0 = Instant::now();
        let mut log = AuditLog::open(&db, &o).map_err(|e| e.to_string())?;
        let t1 = Instant::now();
        log.append_all(&[sample_row(&run, DETAIL), sample_row(&run, DETAIL)])
            .map_err(|e| e.to_string())?;
        let tf = Instant::now();
        let folded = log.fold_wal().map_err(|e| e.to_string())?;
        let t2 = Instant::now();
        let rows: Vec<NewRow> = (0..9).map(|_| sample_row(&run, DETAIL)).collect();
        log.append_all_sealed(&rows).map_err(|e| e.to_string())?;
        let t3 = Instant::now();
        drop(log);
        let t4 = Instant::now();
        if i < 3 {
            continue;
        }
        t.entry("1 open").or_default().push(ms(t1 - t0));
        t.entry("2 intent txn (2 rows)")
            .or_default()
            .push(ms(tf - t1));
        if folded {
            t.entry("2b WAL fold (a hook does it while ovs-vswitchd works)")
                .or_default()
                .push(ms(t2 - tf));
        }
        t.entry("3 outcome txn (9 rows)")
            .or_default()
            .push(ms(t3 - t2));
        t.entry("4 close (WAL kept)").or_default().push(ms(t4 - t3));
        t.entry("5 all but the fold")
            .or_default()
            .push(ms(t4 - t0 - (t2 - tf)));
    }
    println!("| audit step ({runs} runs) | median (min – max) ms |\n|---|---|");
    for (k, v) in &t {
        println!("| {k} | {} |", fmt3(&stats(v)));
    }
    println!();
    Ok(())
}

pub(crate) fn audit_rate(dir: &Path, appends: usize, verify_rows: usize) -> Res<()> {
    let agent = env_path("OPB_AGENT")?;
    fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let db = dir.join("rate.db");
    for s in ["", "-wal", "-shm"] {
        let _ = fs::remove_file(format!("{}{s}", db.display()));
    }
    // The floor: one 4 KiB write + fdatasync on the same file system.
    let fsync_us = {
        use std::io::{Seek, Write};
        let fp = dir.join("fsync.probe");
        let mut f = fs::File::create(&fp).map_err(|e| e.to_string())?;
        let buf = [7u8; 4096];
        let n = 300;
        let t = Instant::now();
        for _ in 0..n {
            f.seek(std::io::SeekFrom::Start(0))
                .map_err(|e| e.to_string())?;
            f.write_all(&buf).map_err(|e| e.to_string())?;
            f.sync_data().map_err(|e| e.to_string())?;
        }
        let us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
        let _ = fs::remove_file(&fp);
        us
    };
    let mut log = AuditLog::open(&db, &AuditOptions::default()).map_err(|e| e.to_string())?;
    let run = op_agent::audit::run_id();
    let row = sample_row(&run, DETAIL);
    for _ in 0..50 {
        log.append(&row).map_err(|e| e.to_string())?;
    }
    let t = Instant::now();
    for _ in 0..appends {
        log.append(&row).map_err(|e| e.to_string())?;
    }
    let dt = t.elapsed().as_secs_f64();
    let single = appends as f64 / dt;
    let rows: Vec<NewRow> = vec![row; 10_000];
    let t = Instant::now();
    let mut have = log.head().map_err(|e| e.to_string())?.map_or(0, |h| h.seq) as usize;
    let bulk_from = have;
    while have < verify_rows {
        let k = (verify_rows - have).min(rows.len());
        have = log.append_all(&rows[..k]).map_err(|e| e.to_string())?.seq as usize;
    }
    let bulk = (have - bulk_from) as f64 / t.elapsed().as_secs_f64();
    drop(log);
    // Fold the WAL into the main file so the size is the database's.
    let c = rusqlite::Connection::open(&db).map_err(|e| e.to_string())?;
    c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .map_err(|e| e.to_string())?;
    drop(c);
    let size = fs::metadata(&db).map_err(|e| e.to_string())?.len() as f64;
    let toml = dir.join("agent.toml");
    audit_only_toml(&toml, &db, dir)?;
    let mut vt = vec![];
    let mut ok = true;
    for _ in 0..3 {
        let d = time_one(
            Command::new(&agent)
                .env("OP_AGENT_CONFIG", &toml)
                .args(["audit", "verify"]),
        )?;
        ok &= d.ok;
        vt.push(d.ms);
    }
    let v = stats(&vt);
    println!("### 6. Audit append and verify rates (ext4, WAL, synchronous=FULL)\n");
    println!("| measure | value |\n|---|---|");
    println!(
        "| append, one `BEGIN IMMEDIATE` txn + fsync per row ({appends} rows) | **{single:.0} rows/s** ({:.0} µs/row) |",
        dt * 1e6 / appends as f64
    );
    println!("| append, 10,000-row txns (bulk fill) | {bulk:.0} rows/s |");
    println!(
        "| floor: 4 KiB write + fdatasync on the same file system | {fsync_us:.0} µs = {:.0} /s |",
        1e6 / fsync_us
    );
    println!(
        "| `op-agent audit verify` over {have} rows (process, median of 3) | **{:.0} rows/s** ({:.0} ms; min {:.0} max {:.0}; exit ok: {ok}) |",
        have as f64 / (v.med / 1e3),
        v.med,
        v.min,
        v.max
    );
    println!(
        "| database size per 1,000,000 rows | {:.1} MiB ({:.0} bytes/row) |\n",
        size / 1048576.0 * 1e6 / have as f64,
        size / have as f64
    );
    let _ = fs::remove_file(&db);
    Ok(())
}

#[derive(Default, Debug)]
pub(crate) struct Counts {
    ok: u64,
    busy: u64,
    constraint: u64,
    other: u64,
}

pub(crate) fn contention(dir: &Path, procs: usize, appends: usize) -> Res<()> {
    let agent = env_path("OPB_AGENT")?;
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    println!("### 6b. DEFERRED vs IMMEDIATE under contention ({procs} processes × {appends} appends, busy_timeout 5 s, no retries)\n");
    println!("| mode | wall ms | rows written | failed: busy / constraint (fork refused) / other | rows/s | chain (`audit verify`) |\n|---|---|---|---|---|---|");
    for mode in ["immediate", "deferred"] {
        let db = dir.join(format!("contention-{mode}.db"));
        for s in ["", "-wal", "-shm"] {
            let _ = fs::remove_file(format!("{}{s}", db.display()));
        }
        drop(AuditLog::open(&db, &AuditOptions::default()).map_err(|e| e.to_string())?);
        let start_at = op_agent::audit::now_ms() + 300;
        let t = Instant::now();
        let kids: Vec<_> = (0..procs)
            .map(|_| {
                Command::new(&me)
                    .args([
                        "contention-child",
                        &db.display().to_string(),
                        mode,
                        &appends.to_string(),
                        &start_at.to_string(),
                    ])
                    .stdout(Stdio::piped())
                    .spawn()
            })
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        let mut tot = Counts::default();
        for k in kids {
            let out = k.wait_with_output().map_err(|e| e.to_string())?;
            let s = String::from_utf8_lossy(&out.stdout);
            let n: Vec<u64> = s
                .split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect();
            if n.len() == 4 {
                tot.ok += n[0];
                tot.busy += n[1];
                tot.constraint += n[2];
                tot.other += n[3];
            } else {
                tot.other += appends as u64;
            }
        }
        let wall = t.elapsed().as_secs_f64() * 1e3 - 300.0;
        let toml = dir.join(format!("contention-{mode}.toml"));
        audit_only_toml(&toml, &db, dir)?;
        let v = Command::new(&agent)
            .env("OP_AGENT_CONFIG", &toml)
            .args(["audit", "verify"])
            .output()
            .map_err(|e| e.to_string())?;
        let c = rusqlite::Connection::open(&db).map_err(|e| e.to_string())?;
        let (rows, maxseq, distinct): (i64, i64, i64) = c
            .query_row(
                "SELECT count(*), coalesce(max(seq),0), count(DISTINCT prev_hash) FROM audit",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .map_err(|e| e.to_string())?;
        println!(
            "| {} | {wall:.0} | {rows} of {} (max seq {maxseq}, distinct prev_hash {distinct}) | {} / {} / {} | {:.0} | {} |",
            mode.to_uppercase(),
            procs * appends,
            tot.busy,
            tot.constraint,
            tot.other,
            rows as f64 / (wall / 1e3),
            if v.status.success() { "intact, linear" } else { "FAILED" }
        );
        for s in ["", "-wal", "-shm"] {
            let _ = fs::remove_file(format!("{}{s}", db.display()));
        }
    }
    println!();
    Ok(())
}

pub(crate) fn classify(e: &rusqlite::Error, c: &mut Counts) {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy) | Some(rusqlite::ErrorCode::DatabaseLocked) => {
            c.busy += 1
        }
        Some(rusqlite::ErrorCode::ConstraintViolation) => c.constraint += 1,
        _ => c.other += 1,
    }
}

pub(crate) fn contention_child(db: &Path, mode: &str, appends: usize, start_at: usize) -> Res<()> {
    let now = op_agent::audit::now_ms() as usize;
    if start_at > now {
        std::thread::sleep(Duration::from_millis((start_at - now) as u64));
    }
    let mut c = Counts::default();
    let run = op_agent::audit::run_id();
    if mode == "immediate" {
        let mut log = AuditLog::open(db, &AuditOptions::default()).map_err(|e| e.to_string())?;
        for _ in 0..appends {
            match log.append(&sample_row(&run, DETAIL)) {
                Ok(_) => c.ok += 1,
                Err(op_agent::audit::AuditError::Busy { .. }) => c.busy += 1,
                Err(_) => c.other += 1,
            }
        }
    } else {
        let mut conn = rusqlite::Connection::open(db).map_err(|e| e.to_string())?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(|e| e.to_string())?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(|e| e.to_string())?;
        let host = AuditOptions::default().host;
        for _ in 0..appends {
            let r = (|| -> rusqlite::Result<()> {
                let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Deferred)?;
                let head: Option<(i64, Vec<u8>)> = tx
                    .query_row(
                        "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
                        [],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .ok();
                let (seq, prev) = head.unwrap_or((0, GENESIS.to_vec()));
                let mut p = [0u8; 32];
                p.copy_from_slice(&prev);
                let ts = op_agent::audit::now_ms();
                let f = RowFields {
                    seq: seq + 1,
                    ts_ms: ts,
                    host: &host,
                    vmid: 100,
                    phase: "post-start",
                    run_id: &run,
                    step: "ovs.add-port",
                    outcome: "ok",
                    detail: DETAIL,
                    prev_hash: &p,
                };
                let hash = row_hash(&f);
                tx.execute(
                    "INSERT INTO audit (seq, ts, host, vmid, phase, run_id, step, outcome, detail, prev_hash, hash) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                    rusqlite::params![seq + 1, ts, host, 100, "post-start", run, "ovs.add-port", "ok", DETAIL, &p[..], &hash[..]],
                )?;
                tx.commit()
            })();
            match r {
                Ok(()) => c.ok += 1,
                Err(e) => classify(&e, &mut c),
            }
        }
    }
    println!("{} {} {} {}", c.ok, c.busy, c.constraint, c.other);
    Ok(())
}
