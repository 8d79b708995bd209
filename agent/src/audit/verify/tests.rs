//! Unit tests of the pure [`Verifier`]: chains built in memory, no SQLite.

use super::*;
use encoding::{CHECKPOINT_PHASE, CHECKPOINT_STEP};

const K0: [u8; 32] = [0x11; 32];

fn rehash(r: &mut StoredRow) {
    r.hash = encoding::row_hash(&r.fields());
}

/// Appends a row chained to the last one of `rows` (or to [`GENESIS`]).
fn push(rows: &mut Vec<StoredRow>, phase: &str, step: &str, detail: String) {
    let (seq, prev_hash) = rows.last().map_or((1, GENESIS), |r| (r.seq + 1, r.hash));
    let mut r = StoredRow {
        seq,
        ts: 1_000 + seq,
        host: "h".into(),
        vmid: 100,
        phase: phase.into(),
        run_id: "r".into(),
        step: step.into(),
        outcome: "ok".into(),
        detail,
        prev_hash,
        hash: [0; 32],
    };
    rehash(&mut r);
    rows.push(r);
}

fn chain(n: i64) -> Vec<StoredRow> {
    let mut rows = Vec::new();
    for i in 1..=n {
        push(&mut rows, "post-start", &format!("step{i}"), "{}".into());
    }
    rows
}

/// Appends a checkpoint row sealing the last row under the key of `epoch`.
fn seal(rows: &mut Vec<StoredRow>, initial: &[u8; 32], epoch: u64) {
    let head = rows.last().map(|r| (r.seq, r.hash)).unwrap();
    let key = encoding::key_for_epoch(initial, epoch);
    let mac = encoding::checkpoint_mac(&key, epoch, head.0, &head.1);
    let detail = encoding::checkpoint_detail(epoch, head.0, &mac);
    push(rows, CHECKPOINT_PHASE, CHECKPOINT_STEP, detail);
}

/// Feeds `rows` as `verify_db` does (the successor lookup by `prev_hash`) and finishes.
fn run(rows: &[StoredRow], opts: &VerifyOptions, start: i64, hw: Option<i64>) -> VerifyReport {
    let mut v = Verifier::new(opts, start);
    let mut succ = |h: &[u8; 32]| rows.iter().find(|r| &r.prev_hash == h).map(|r| r.seq);
    for r in rows {
        if !v.feed(r, &mut succ) {
            break;
        }
    }
    v.finish(hw)
}

fn verdict(rep: &VerifyReport) -> Option<(TamperClass, i64, Option<i64>)> {
    rep.tamper
        .as_ref()
        .map(|t| (t.class, t.seq, t.last_good.map(|h| h.seq)))
}

fn plain() -> VerifyOptions {
    VerifyOptions::default()
}

#[test]
fn intact_chain_reports_its_head() {
    let rows = chain(5);
    let rep = run(&rows, &plain(), 0, Some(5));
    assert_eq!(verdict(&rep), None);
    assert_eq!((rep.rows, rep.unsealed_rows, rep.checkpoints), (5, 5, 0));
    assert_eq!(rep.head.map(|h| (h.seq, h.hash)), Some((5, rows[4].hash)));
    assert_eq!(verdict(&run(&[], &plain(), 0, None)), None);
}

#[test]
fn deleted_row_is_a_gap_at_the_first_missing_seq() {
    let mut rows = chain(5);
    rows.remove(2);
    assert_eq!(
        verdict(&run(&rows, &plain(), 0, None)),
        Some((TamperClass::Gap, 3, Some(2)))
    );
    // Rows cut off the end, seen only through SQLite's high-water mark.
    let rows = chain(3);
    assert_eq!(
        verdict(&run(&rows, &plain(), 0, Some(5))),
        Some((TamperClass::Gap, 4, Some(3)))
    );
}

#[test]
fn edited_column_is_content_changed_and_rehashed_row_breaks_the_link() {
    let mut rows = chain(5);
    rows[2].detail = r#"{"x":1}"#.into();
    assert_eq!(
        verdict(&run(&rows, &plain(), 0, None)),
        Some((TamperClass::ContentChanged, 3, Some(2)))
    );
    rehash(&mut rows[2]);
    assert_eq!(
        verdict(&run(&rows, &plain(), 0, None)),
        Some((TamperClass::LinkBroken, 3, Some(2)))
    );
}

#[test]
fn swapped_rows_are_a_reorder_and_a_repeated_seq_a_fork() {
    let orig = chain(5);
    let mut rows = orig.clone();
    rows[1] = StoredRow {
        seq: 2,
        ..orig[2].clone()
    };
    rows[2] = StoredRow {
        seq: 3,
        ..orig[1].clone()
    };
    assert_eq!(
        verdict(&run(&rows, &plain(), 0, None)),
        Some((TamperClass::Reorder, 2, Some(1)))
    );
    let mut rows = chain(3);
    rows.insert(2, rows[1].clone());
    assert_eq!(
        verdict(&run(&rows, &plain(), 0, None)),
        Some((TamperClass::Fork, 2, Some(2)))
    );
}

#[test]
fn anchors_catch_a_rewrite_and_a_short_chain() {
    let rows = chain(5);
    let good = Head {
        seq: 2,
        hash: rows[1].hash,
    };
    let forged = Head {
        seq: 4,
        hash: [7; 32],
    };
    let opts = VerifyOptions {
        anchors: vec![forged, good],
        initial_key: None,
    };
    // The fork names the last anchored head as last good.
    assert_eq!(
        verdict(&run(&rows, &opts, 0, None)),
        Some((TamperClass::Fork, 4, Some(2)))
    );
    let beyond = VerifyOptions {
        anchors: vec![Head {
            seq: 7,
            hash: [1; 32],
        }],
        initial_key: None,
    };
    assert_eq!(
        verdict(&run(&rows, &beyond, 0, None)),
        Some((TamperClass::HeadOlderThanAnchor, 6, Some(5)))
    );
    assert_eq!(
        verdict(&run(&rows, &beyond, 0, Some(7))),
        Some((TamperClass::MissingRowsAfterAnchor, 6, Some(5)))
    );
    let rep = run(
        &rows,
        &VerifyOptions {
            anchors: vec![good],
            initial_key: None,
        },
        0,
        None,
    );
    assert_eq!((verdict(&rep), rep.anchors_matched), (None, 1));
}

#[test]
fn checkpoints_verify_with_the_initial_key_only() {
    let mut rows = chain(2);
    seal(&mut rows, &K0, 0);
    push(&mut rows, "post-stop", "x", "{}".into());
    seal(&mut rows, &K0, 1);
    push(&mut rows, "post-start", "y", "{}".into());
    let keyed = VerifyOptions {
        anchors: vec![],
        initial_key: Some(K0),
    };
    let rep = run(&rows, &keyed, 0, None);
    assert_eq!(verdict(&rep), None);
    assert!(rep.checkpoints_keyed);
    assert_eq!((rep.checkpoints, rep.unsealed_rows), (2, 1));
    // Without a key the HMACs are not checked, the epochs are.
    let rep = run(&rows, &plain(), 0, None);
    assert_eq!((verdict(&rep), rep.checkpoints_keyed), (None, false));
    // Another key: the first checkpoint fails, nothing was sealed before it.
    let wrong = VerifyOptions {
        anchors: vec![],
        initial_key: Some([0x22; 32]),
    };
    assert_eq!(
        verdict(&run(&rows, &wrong, 0, None)),
        Some((TamperClass::BadCheckpoint, 3, None))
    );
    // A later epoch skipped: the second checkpoint fails, the first one is last good.
    let mut skipped = chain(2);
    seal(&mut skipped, &K0, 0);
    push(&mut skipped, "post-stop", "x", "{}".into());
    seal(&mut skipped, &K0, 2);
    assert_eq!(
        verdict(&run(&skipped, &keyed, 0, None)),
        Some((TamperClass::BadCheckpoint, 5, Some(3)))
    );
    // A key but no checkpoint at all: nothing is sealed.
    assert_eq!(
        verdict(&run(&chain(3), &keyed, 0, None)),
        Some((TamperClass::BadCheckpoint, 1, Some(3)))
    );
}

#[test]
fn partial_chain_takes_its_first_link_as_given() {
    let mut rows = chain(3);
    seal(&mut rows, &K0, 0);
    push(&mut rows, "post-stop", "x", "{}".into());
    seal(&mut rows, &K0, 1);
    let keyed = VerifyOptions {
        anchors: vec![],
        initial_key: Some(K0),
    };
    let tail = &rows[4..];
    let rep = run(tail, &keyed, 4, None);
    assert_eq!((verdict(&rep), rep.rows, rep.checkpoints), (None, 2, 1));
    // Starting at the wrong seq is a gap.
    assert_eq!(
        verdict(&run(tail, &keyed, 3, None)),
        Some((TamperClass::Gap, 4, None))
    );
}

#[test]
fn undecodable_row_is_content_changed() {
    let rows = chain(2);
    let mut v = Verifier::new(&plain(), 0);
    for r in &rows {
        assert!(v.feed(r, &mut |_| None));
    }
    v.reject(None, "hash");
    let rep = v.finish(None);
    assert_eq!(
        verdict(&rep),
        Some((TamperClass::ContentChanged, 3, Some(2)))
    );
    let t = rep.tamper.unwrap();
    assert_eq!(
        t.message,
        "row seq 3: column hash has the wrong type or size"
    );
    assert_eq!(rep.rows, 2);
}

/// A clock set back 56 years (to 1969) between two rows: the chain is intact (the `ts` is
/// hashed as written), and the rows written under the wrong clock are a warning.
#[test]
fn a_clock_set_back_is_a_warning_not_tampering() {
    let mut rows = chain(2);
    rows[0].ts = 1_796_000_000_000;
    rows[1].ts = 1_796_000_030_000; // 30 s later
    rehash(&mut rows[0]);
    rows[1].prev_hash = rows[0].hash;
    rehash(&mut rows[1]);
    push(&mut rows, "post-start", "late", "{}".into());
    rows[2].ts = -1_000; // 1969-12-31T23:59:59Z
    rehash(&mut rows[2]);
    push(&mut rows, "post-start", "ok-again", "{}".into());
    rows[3].ts = 1_796_000_030_000 - 59_000; // within the tolerance of the latest
    rehash(&mut rows[3]);
    push(&mut rows, "post-start", "last", "{}".into());
    rows[4].ts = 1_796_000_040_000;
    rehash(&mut rows[4]);
    let rep = run(&rows, &plain(), 0, Some(5));
    assert_eq!(verdict(&rep), None);
    assert_eq!(rep.clock_backwards.rows, 1);
    assert_eq!(rep.clock_backwards.first, Some((3, 1_796_000_031_000)));
    assert_eq!(rep.clock_backwards.max_behind_ms, 1_796_000_031_000);
    assert_eq!(verdict(&run(&chain(4), &plain(), 0, None)), None);
    assert_eq!(run(&chain(4), &plain(), 0, None).clock_backwards.rows, 0);
}

#[test]
fn a_time_before_1970_is_kept_negative() {
    use std::time::{Duration, UNIX_EPOCH};
    assert_eq!(
        crate::audit::ms_since_epoch(UNIX_EPOCH - Duration::from_millis(1500)),
        -1500
    );
    assert_eq!(
        crate::audit::ms_since_epoch(UNIX_EPOCH + Duration::from_secs(2)),
        2000
    );
}
