//! Measurements (printed, not asserted beyond sanity): append rate with synchronous=FULL and
//! verify rate over 100,000 rows. Run with `--nocapture` to see the numbers. These run in the
//! test (debug) profile; issue 3's `make bench` figures need an optimised build.

mod audit_common;
use audit_common::*;

use std::time::Instant;

use op_agent::audit::{AuditLog, NewRow, Outcome};

#[test]
fn measure_append_and_verify_rates() {
    let (_d, db) = tmp();
    let mut log = AuditLog::open(&db, &opts(None)).unwrap();
    let run = op_agent::audit::run_id();
    let detail = r#"{"nic":0,"name":"vi100","bridge":"ovsbr0","tag":10,"port_uuid":"3f1c2a9e-0d1b-4c55-9a51-0b8a7c1d2e3f"}"#;
    let row = NewRow {
        vmid: 100,
        phase: "post-start",
        run_id: &run,
        step: "ovs.add-port",
        outcome: Outcome::Ok,
        detail,
    };

    let n = 2000;
    let t = Instant::now();
    for _ in 0..n {
        log.append(&row).unwrap();
    }
    let dt = t.elapsed().as_secs_f64();
    println!("MEASURE append: {n} rows, one BEGIN IMMEDIATE txn each, WAL + synchronous=FULL: {:.0} rows/s ({:.0} us/row)", n as f64 / dt, dt * 1e6 / n as f64);

    let rows: Vec<NewRow> = vec![row; 10_000];
    let t = Instant::now();
    while log.head().unwrap().unwrap().seq < 100_000 {
        log.append_all(&rows[..(100_000 - log.head().unwrap().unwrap().seq as usize).min(10_000)])
            .unwrap();
    }
    println!(
        "MEASURE bulk: 98,000 rows in 10,000-row txns: {:.0} rows/s",
        98_000.0 / t.elapsed().as_secs_f64()
    );
    drop(log);

    let t = Instant::now();
    let rep = verify_db(&db, &[], None);
    let dt = t.elapsed().as_secs_f64();
    assert_intact(&rep);
    assert_eq!(rep.rows, 100_000);
    let size = std::fs::metadata(&db).unwrap().len();
    println!("MEASURE verify: {} rows in {:.3} s = {:.0} rows/s; db {:.1} MiB = {:.0} MiB per 1e6 rows ({} bytes/row)",
        rep.rows, dt, rep.rows as f64 / dt, size as f64 / 1048576.0, size as f64 * 10.0 / 1048576.0, size / 100_000);
}
