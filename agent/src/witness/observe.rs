//! The pure part of witnessing: what a head file read now means given what this node
//! witnessed before ([`Tracker`]), and the detail JSON of the witness rows it asks for.
//!
//! Per peer node the tracker keeps the head it last accepted from that node's file (from this
//! node's own chain at start, then from what it appends) and the bytes of the file last read.
//! A file whose bytes did not change asks for nothing. Otherwise, as [`Tracker::observe`]
//! says: the accepted head again asks for nothing; a higher `seq` is a new head (a
//! `witness.head` row); the same `seq` with another hash (fork), a lower `seq` (rollback), a
//! file that cannot be read or parsed (malformed) is a contradiction (a
//! `witness.contradiction` row). A fork or a malformed file leaves the accepted head as it
//! is; after a rollback the lower head is the one later heads are compared with, so a file
//! forged to a far-future `seq` is contradicted as soon as the node writes its real head
//! again and cannot stop the witnessing of its later heads (the forged head stays recorded:
//! `audit verify --witnesses` of that node reports it, beside the contradiction).

use std::collections::BTreeMap;

use crate::audit::{encoding, Head, StoredRow};

use super::{parse, Seen, PHASE, STEP_CONTRADICTION, STEP_HEAD};

/// What a head file asks this node to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A new head of `node`: append a `witness.head` row.
    Head {
        /// The peer.
        node: String,
        /// Its head as published.
        head: Head,
        /// The file's `ts` (UTC ms).
        file_ts: i64,
    },
    /// A head file that contradicts what was witnessed, or cannot be read: append a
    /// `witness.contradiction` row.
    Contradiction {
        /// The node the file is about.
        node: String,
        /// `fork`, `rollback`, `malformed`, or for this node's own file `own-file-changed`.
        kind: &'static str,
        /// The head the file names, when it parses.
        found: Option<Head>,
        /// The head witnessed before (for this node's own file: the head it wrote).
        witnessed: Option<Head>,
        /// Why, in words.
        reason: String,
    },
}

impl Event {
    /// `(step, outcome is ok, detail JSON)` of the witness row recording it; `by` is this
    /// node. Detail: `{"node","seq","hash","by","file_ts"}` for a head,
    /// `{"node","by","contradiction","seq","hash","witnessed_seq","witnessed_hash","reason"}`
    /// for a contradiction (`seq`/`hash` `null` when the file does not parse).
    pub fn row(&self, by: &str) -> (&'static str, bool, String) {
        match self {
            Event::Head {
                node,
                head,
                file_ts,
            } => (
                STEP_HEAD,
                true,
                serde_json::json!({
                    "node": node, "seq": head.seq, "hash": encoding::hex(&head.hash),
                    "by": by, "file_ts": file_ts,
                })
                .to_string(),
            ),
            Event::Contradiction {
                node,
                kind,
                found,
                witnessed,
                reason,
            } => (
                STEP_CONTRADICTION,
                false,
                serde_json::json!({
                    "node": node, "by": by, "contradiction": kind,
                    "seq": found.map(|h| h.seq),
                    "hash": found.map(|h| encoding::hex(&h.hash)),
                    "witnessed_seq": witnessed.map(|h| h.seq),
                    "witnessed_hash": witnessed.map(|h| encoding::hex(&h.hash)),
                    "reason": reason,
                })
                .to_string(),
            ),
        }
    }
}

/// A witness row read back: which node it is about and the head it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessRow {
    /// The node the row is about.
    pub node: String,
    /// The witnessing node (`by`).
    pub by: String,
    /// `None` for a `witness.head` row, else the contradiction kind.
    pub contradiction: Option<String>,
    /// The head named (`None`: a malformed file).
    pub head: Option<Head>,
    /// The row's own `seq` and `ts` in the witnessing chain.
    pub row_seq: i64,
    /// UTC ms.
    pub row_ts: i64,
    /// The row's detail text.
    pub detail: String,
}

/// Decodes a witness row (`vmid` 0, `phase` [`PHASE`]); `None` for any other row or a detail
/// without `node`.
pub fn witness_row(r: &StoredRow) -> Option<WitnessRow> {
    if r.vmid != 0 || r.phase != PHASE {
        return None;
    }
    let d: serde_json::Value = serde_json::from_str(&r.detail).ok()?;
    let node = d["node"].as_str()?.to_string();
    let head = match (d["seq"].as_i64(), d["hash"].as_str()) {
        (Some(s), Some(h)) => format!("{s}:{h}").parse::<Head>().ok(),
        _ => None,
    };
    Some(WitnessRow {
        node,
        by: d["by"].as_str().unwrap_or_default().to_string(),
        contradiction: match r.step.as_str() {
            STEP_HEAD => None,
            _ => Some(d["contradiction"].as_str().unwrap_or("unknown").to_string()),
        },
        head,
        row_seq: r.seq,
        row_ts: r.ts,
        detail: r.detail.clone(),
    })
}

#[derive(Debug, Default, Clone)]
struct Peer {
    witnessed: Option<Head>,
    last_bytes: Option<Result<Vec<u8>, String>>,
}

/// Per peer node: the head accepted from its file and the file last read.
#[derive(Debug, Default, Clone)]
pub struct Tracker {
    peers: BTreeMap<String, Peer>,
}

impl Tracker {
    /// Takes a row of this node's own chain into account (at start, every row in `seq` order;
    /// later, the rows appended): a `witness.head` row about a peer, or a `rollback`
    /// contradiction, sets the head accepted from it, as [`Tracker::observe`] did.
    pub fn learn(&mut self, r: &StoredRow) {
        let Some(w) = witness_row(r) else { return };
        let accepts = match w.contradiction.as_deref() {
            None => true,
            Some(k) => k == "rollback",
        };
        if let (true, Some(h)) = (accepts, w.head) {
            self.peers.entry(w.node).or_default().witnessed = Some(h);
        }
    }

    /// The head last accepted from `node`'s file.
    pub fn witnessed(&self, node: &str) -> Option<Head> {
        self.peers.get(node).and_then(|p| p.witnessed)
    }

    /// Every peer with an accepted head, sorted by node.
    pub fn all_witnessed(&self) -> Vec<(String, Head)> {
        self.peers
            .iter()
            .filter_map(|(n, p)| p.witnessed.map(|h| (n.clone(), h)))
            .collect()
    }

    /// What the file `seen` means (see the module doc); remembers its bytes and, for a new
    /// head, the head.
    pub fn observe(&mut self, seen: &Seen) -> Option<Event> {
        let p = self.peers.entry(seen.node.clone()).or_default();
        if p.last_bytes.as_ref() == Some(&seen.content) {
            return None;
        }
        p.last_bytes = Some(seen.content.clone());
        let node = seen.node.clone();
        let bytes = match &seen.content {
            Ok(b) => b,
            Err(e) => {
                return Some(Event::Contradiction {
                    node,
                    kind: "malformed",
                    found: None,
                    witnessed: p.witnessed,
                    reason: format!("cannot read the head file: {e}"),
                })
            }
        };
        let (f, h) = match parse(&seen.node, bytes) {
            Ok(x) => x,
            Err(e) => {
                return Some(Event::Contradiction {
                    node,
                    kind: "malformed",
                    found: None,
                    witnessed: p.witnessed,
                    reason: e,
                })
            }
        };
        match p.witnessed {
            Some(w) if w == h => None,
            Some(w) if h.seq == w.seq => Some(Event::Contradiction {
                node,
                kind: "fork",
                found: Some(h),
                witnessed: Some(w),
                reason: format!("head file names {h}, but {w} was witnessed at that seq"),
            }),
            Some(w) if h.seq < w.seq => {
                p.witnessed = Some(h);
                Some(Event::Contradiction {
                    node,
                    kind: "rollback",
                    found: Some(h),
                    witnessed: Some(w),
                    reason: format!("head file went back to {h} after {w} was witnessed"),
                })
            }
            _ => {
                p.witnessed = Some(h);
                Some(Event::Head {
                    node,
                    head: h,
                    file_ts: f.ts,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(node: &str, seq: i64, b: u8) -> Seen {
        let h = Head { seq, hash: [b; 32] };
        Seen {
            node: node.into(),
            content: Ok(super::super::render(node, h, 5, None).into_bytes()),
        }
    }

    #[test]
    fn new_heads_are_witnessed_once_and_contradictions_are_recorded() {
        let mut t = Tracker::default();
        let head = |e: Option<Event>| matches!(e, Some(Event::Head { .. }));
        let contradiction = |e: Option<Event>| match e {
            Some(Event::Contradiction {
                kind, witnessed, ..
            }) => (kind, witnessed.map(|w| w.seq)),
            other => panic!("not a contradiction: {other:?}"),
        };
        assert!(head(t.observe(&seen("b", 3, 1))));
        assert_eq!(t.observe(&seen("b", 3, 1)), None);
        assert!(head(t.observe(&seen("b", 5, 2))));
        // Another hash at the accepted seq: a fork, the accepted head kept.
        assert_eq!(
            contradiction(t.observe(&seen("b", 5, 7))),
            ("fork", Some(5))
        );
        assert_eq!(t.observe(&seen("b", 5, 2)), None);
        // A far-future head is a claim; going back from it is a rollback, reported once,
        // and the node's later heads are witnessed again.
        assert!(head(t.observe(&seen("b", 1_000_000, 3))));
        assert_eq!(
            contradiction(t.observe(&seen("b", 6, 4))),
            ("rollback", Some(1_000_000))
        );
        assert_eq!(t.observe(&seen("b", 6, 4)), None);
        assert!(head(t.observe(&seen("b", 7, 5))));
        assert_eq!(t.witnessed("b").unwrap().seq, 7);
        let bad = Seen {
            node: "b".into(),
            content: Ok(b"{\"node\":\"b\"".to_vec()),
        };
        assert_eq!(contradiction(t.observe(&bad)).0, "malformed");
        assert_eq!(t.witnessed("b").unwrap().seq, 7);
    }

    #[test]
    fn learned_rows_are_what_a_restarted_service_compares_with() {
        let mut t = Tracker::default();
        let (step, ok, detail) = Event::Head {
            node: "b".into(),
            head: Head {
                seq: 9,
                hash: [4; 32],
            },
            file_ts: 1,
        }
        .row("a");
        assert!(ok);
        t.learn(&StoredRow {
            vmid: 0,
            phase: PHASE.into(),
            step: step.into(),
            detail,
            ..StoredRow::default()
        });
        assert_eq!(t.witnessed("b").unwrap().seq, 9);
        let Some(Event::Contradiction { kind, .. }) = t.observe(&seen("b", 8, 4)) else {
            panic!("rollback across a restart not reported")
        };
        assert_eq!(kind, "rollback");
    }
}
