//! `op-agent audit verify --witnesses` and `op-agent audit witnesses`: the witness rows about
//! one node collected from other nodes' chains ([`Claims`]) and checked against that node's
//! chain ([`verify`]).
//!
//! Every `witness.head` row about the subject node, written by another node, is an anchor of
//! the subject's chain (a head held outside it): the audit verifier reports the first one the
//! chain contradicts, as a fork (another hash at that `seq`: history rewritten at or before
//! it), a head older than the witnessed one (an older copy, rows cut) or rows missing after it.
//! Contradiction rows (head files that went back, forked or were malformed) are reported
//! beside the result; they are never used as anchors, since their content came from a file
//! that contradicted itself.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use crate::audit::export::verify_export;
use crate::audit::reader::{self, verify_db, Rows};
use crate::audit::verify::{Verifier, VerifyOptions, VerifyReport};
use crate::audit::{Head, StoredRow};

use super::observe::{witness_row, WitnessRow};

/// Where a witness row was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sourced {
    /// The row.
    pub row: WitnessRow,
    /// The database or export file it was read from.
    pub source: PathBuf,
}

/// The witness rows about one node, from other nodes' chains.
#[derive(Debug, Clone, Default)]
pub struct Claims {
    /// `witness.head` rows written by a node other than the subject.
    pub heads: Vec<Sourced>,
    /// Contradiction rows about the subject (any writer, the subject's own included).
    pub contradictions: Vec<Sourced>,
}

impl Claims {
    fn take(&mut self, subject: &str, r: &StoredRow, source: &Path) {
        let Some(w) = witness_row(r).filter(|w| w.node == subject) else {
            return;
        };
        let s = Sourced {
            row: w,
            source: source.to_path_buf(),
        };
        match (&s.row.contradiction, s.row.head) {
            (None, Some(_)) if s.row.by != subject => self.heads.push(s),
            (None, _) => {}
            (Some(_), _) => self.contradictions.push(s),
        }
    }

    /// Adds the witness rows about `subject` in the database `db` (another node's).
    ///
    /// # Errors
    /// The database cannot be read.
    pub fn add_db(&mut self, subject: &str, db: &Path) -> Result<(), String> {
        let r = reader::open(db).map_err(|e| e.to_string())?;
        let rows = Rows::Matching {
            vmid: Some(0),
            since_ms: None,
            from_seq: None,
            to_seq: None,
        };
        reader::for_each_row(&r.conn, db, rows, &mut |row| {
            self.take(subject, row, db);
            Ok(())
        })
        .map_err(|e| e.to_string())
    }

    /// Adds the witness rows about `subject` in the export `path` (from `audit export` on
    /// another node), after checking that export's own chain: a peer export that is not
    /// intact cannot witness anything.
    ///
    /// # Errors
    /// It cannot be read, is not an export, or its chain is not intact (the finding named).
    pub fn add_export(&mut self, subject: &str, path: &Path) -> Result<(), String> {
        let open = || {
            std::fs::File::open(path)
                .map(std::io::BufReader::new)
                .map_err(|e| format!("cannot open peer export {}: {e}", path.display()))
        };
        let rep = verify_export(&mut open()?, path, &VerifyOptions::default())
            .map_err(|e| e.to_string())?;
        if let Some(t) = rep.tamper {
            return Err(format!(
                "peer export {} is not intact ({} at seq {}: {}); it cannot witness",
                path.display(),
                t.class.as_str(),
                t.seq,
                t.message
            ));
        }
        for (n, l) in (1u64..).zip(open()?.lines()) {
            let l = l.map_err(|e| format!("{}:{n}: {e}", path.display()))?;
            if n == 1 || l.is_empty() {
                continue;
            }
            let row: StoredRow = serde_json::from_str(&l)
                .map_err(|e| format!("{}:{n}: not a row: {e}", path.display()))?;
            self.take(subject, &row, path);
        }
        Ok(())
    }

    /// The distinct witnessed heads.
    pub fn anchors(&self) -> Vec<Head> {
        let mut v: Vec<Head> = self.heads.iter().filter_map(|s| s.row.head).collect();
        v.sort_by_key(|h| (h.seq, h.hash));
        v.dedup();
        v
    }

    /// The witnessing nodes, sorted, without repeats.
    pub fn witnesses(&self) -> Vec<String> {
        let mut v: Vec<String> = self.heads.iter().map(|s| s.row.by.clone()).collect();
        v.sort();
        v.dedup();
        v
    }
}

/// The subject chain of a witness check.
#[derive(Debug, Clone)]
pub enum Subject<'a> {
    /// This node's database.
    Db(&'a Path),
    /// An export of the subject node's database.
    Export(&'a Path),
}

/// Result of [`verify`]: the audit verifier's report and, when it found a contradiction, the
/// first contradicted witnessed `seq` and the witness rows naming it.
#[derive(Debug, Clone)]
pub struct WitnessReport {
    /// The chain's verification with every witnessed head as an anchor.
    pub report: VerifyReport,
    /// The first witnessed `seq` the chain contradicts (`None`: intact, or the failure is
    /// before every witnessed head).
    pub contradicted_seq: Option<i64>,
    /// The witness rows at [`WitnessReport::contradicted_seq`].
    pub contradicted_by: Vec<Sourced>,
}

/// Verifies `subject` with every witnessed head of `claims` as an anchor (`opts.anchors`
/// kept as well).
///
/// # Errors
/// The subject cannot be read (as `audit verify`: exit 2).
pub fn verify(
    subject: Subject<'_>,
    claims: &Claims,
    opts: &VerifyOptions,
) -> Result<WitnessReport, String> {
    let mut o = opts.clone();
    o.anchors.extend(claims.anchors());
    let report = match subject {
        // A fresh install has no database: an empty chain, which contradicts any witness.
        Subject::Db(db) if !db.exists() => Verifier::new(&o, 0).finish(None),
        Subject::Db(db) => verify_db(db, &o).map_err(|e| e.to_string())?,
        Subject::Export(p) => {
            let f = std::fs::File::open(p)
                .map_err(|e| format!("cannot open export {}: {e}", p.display()))?;
            verify_export(&mut std::io::BufReader::new(f), p, &o).map_err(|e| e.to_string())?
        }
    };
    // A fork is at a witnessed seq; a chain that ends early fails at the seq after its end,
    // a broken row at its own: in each case the first witnessed head at or after it.
    let contradicted_seq = report.tamper.as_ref().and_then(|t| {
        let from = t.seq;
        claims
            .heads
            .iter()
            .filter_map(|s| s.row.head.map(|h| h.seq))
            .filter(|&s| s >= from)
            .min()
    });
    let contradicted_by = match contradicted_seq {
        Some(seq) => claims
            .heads
            .iter()
            .filter(|s| s.row.head.is_some_and(|h| h.seq == seq))
            .cloned()
            .collect(),
        None => Vec::new(),
    };
    Ok(WitnessReport {
        report,
        contradicted_seq,
        contradicted_by,
    })
}

/// Per node named in the witness rows of the database `db`: the last head witnessed and when,
/// the number of contradiction rows and the last one ([`PeerSeen`]), sorted by node.
///
/// # Errors
/// The database cannot be read.
pub fn last_seen(db: &Path) -> Result<Vec<PeerSeen>, String> {
    let r = reader::open(db).map_err(|e| e.to_string())?;
    let mut out: std::collections::BTreeMap<String, PeerSeen> = Default::default();
    let rows = Rows::Matching {
        vmid: Some(0),
        since_ms: None,
        from_seq: None,
        to_seq: None,
    };
    reader::for_each_row(&r.conn, db, rows, &mut |row| {
        if let Some(w) = witness_row(row) {
            let p = out.entry(w.node.clone()).or_insert_with(|| PeerSeen {
                node: w.node.clone(),
                ..PeerSeen::default()
            });
            match w.contradiction {
                None => p.last = Some(w),
                Some(_) => {
                    p.contradictions += 1;
                    p.last_contradiction = Some(w);
                }
            }
        }
        Ok(())
    })
    .map_err(|e| e.to_string())?;
    Ok(out.into_values().collect())
}

/// One peer in `audit witnesses`.
#[derive(Debug, Clone, Default)]
pub struct PeerSeen {
    /// The peer node.
    pub node: String,
    /// Its last witnessed head row.
    pub last: Option<WitnessRow>,
    /// Contradiction rows about it.
    pub contradictions: u64,
    /// The last of them.
    pub last_contradiction: Option<WitnessRow>,
}
