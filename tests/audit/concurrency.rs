//! Many processes appending at once, and appenders killed with SIGKILL mid-way. The child
//! processes are this test binary itself, re-executed with `OP_AUDIT_CHILD` set.

use crate::common::*;

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use op_agent::audit::{init_key, AuditLog, NewRow, Outcome};

const CHILD: &str = "OP_AUDIT_CHILD";

/// In a child: append as told by the environment, then exit without returning to libtest.
fn child_mode() {
    let Ok(db) = std::env::var(CHILD) else { return };
    let n: usize = std::env::var("OP_AUDIT_N").unwrap().parse().unwrap();
    let key = std::env::var("OP_AUDIT_KEY").ok().map(Into::into);
    let mut log = AuditLog::open(Path::new(&db), &opts(key.clone())).unwrap();
    let run = op_agent::audit::run_id();
    let mut i = 0;
    while n == 0 || i < n {
        let d = format!(r#"{{"child":{},"i":{i}}}"#, std::process::id());
        let row = |o| NewRow {
            vmid: 100 + (i % 50) as u32,
            phase: "post-start",
            run_id: &run,
            step: "ovs.add-port",
            outcome: o,
            detail: &d,
        };
        if n == 0 {
            // kill -9 loop: multi-row transactions and checkpoints (key ratchet) too.
            log.append_all(&[
                row(Outcome::Intent),
                row(Outcome::Ok),
                row(Outcome::Skipped),
            ])
            .unwrap();
            if key.is_some() {
                log.checkpoint().unwrap().unwrap();
            }
        } else {
            log.append(&row(Outcome::Ok)).unwrap();
        }
        i += 1;
    }
    std::process::exit(0);
}

fn spawn_child(test: &str, db: &Path, n: usize, key: Option<&Path>) -> std::process::Child {
    let test = crate::test_name(module_path!(), test);
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args(["--exact", &test, "--nocapture", "--test-threads=1"])
        .env(CHILD, db)
        .env("OP_AUDIT_N", n.to_string())
        .stdout(Stdio::null());
    if let Some(k) = key {
        c.env("OP_AUDIT_KEY", k);
    }
    c.spawn().unwrap()
}

/// Kills and reaps children still running when the test fails.
struct Children(Vec<std::process::Child>);
impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn sixteen_processes_times_200_appends() {
    child_mode();
    let (_d, db) = tmp();
    drop(AuditLog::open(&db, &opts(None)).unwrap());
    let t = Instant::now();
    let mut kids = Children(
        (0..16)
            .map(|_| spawn_child("sixteen_processes_times_200_appends", &db, 200, None))
            .collect(),
    );
    for c in &mut kids.0 {
        assert!(c.wait().unwrap().success(), "an appender failed");
    }
    let wall = t.elapsed();
    let c = rusqlite::Connection::open(&db).unwrap();
    let (n, min, max, distinct_prev): (i64, i64, i64, i64) = c
        .query_row(
            "SELECT count(*), min(seq), max(seq), count(DISTINCT prev_hash) FROM audit",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!((n, min, max, distinct_prev), (3200, 1, 3200, 3200));
    let children: HashSet<String> = read_rows(&c)
        .iter()
        .map(|r| r.detail.split(',').next().unwrap().to_string())
        .collect();
    assert_eq!(children.len(), 16);
    let rep = verify_db(&db, &[], None);
    assert_intact(&rep);
    assert_eq!(rep.rows, 3200);
    println!("MEASURE concurrent: 16 processes x 200 appends (FULL, one txn each): {:.2} s wall, {:.0} rows/s", wall.as_secs_f64(), 3200.0 / wall.as_secs_f64());
}

#[test]
fn kill_9_of_appenders_in_a_loop_leaves_a_chain_that_verifies() {
    child_mode();
    let (d, db) = tmp();
    let kf = d.path().join("audit.key");
    let k0 = init_key(&kf).unwrap();
    drop(AuditLog::open(&db, &opts(None)).unwrap());
    let mut killed = 0;
    for round in 0..12u64 {
        // Two appenders at once, killed at staggered moments.
        let mut kids = Children(vec![
            spawn_child(
                "kill_9_of_appenders_in_a_loop_leaves_a_chain_that_verifies",
                &db,
                0,
                Some(&kf),
            ),
            spawn_child(
                "kill_9_of_appenders_in_a_loop_leaves_a_chain_that_verifies",
                &db,
                0,
                Some(&kf),
            ),
        ]);
        std::thread::sleep(Duration::from_millis(60 + (round * 37) % 90));
        for c in &mut kids.0 {
            if c.try_wait().unwrap().is_none() {
                killed += 1;
            }
            c.kill().unwrap(); // SIGKILL
            let st = c.wait().unwrap();
            assert!(!st.success(), "appender ended on its own: {st:?}");
        }
    }
    assert!(
        killed >= 20,
        "only {killed} appenders were killed while running"
    );
    let rep = verify_db(&db, &[], Some(k0));
    assert_intact(&rep);
    assert!(rep.rows > 30 && rep.checkpoints > 5, "{rep:?}");
    // The log is still appendable and sealable after all that.
    let mut log = AuditLog::open(&db, &opts(Some(kf))).unwrap();
    fill(&mut log, 2);
    log.checkpoint().unwrap().unwrap();
    assert_intact(&verify_db(&db, &[], Some(k0)));
    println!(
        "MEASURE kill-9: {killed} appenders killed, {} rows, {} checkpoints, verify intact",
        rep.rows, rep.checkpoints
    );
}
