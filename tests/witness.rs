//! End-to-end tests of cluster witnesses: three op-agent nodes (three agent.toml files, three
//! audit databases, three node names, each a private host with its own OVS and its own
//! `op-agent watch`) sharing one folder as pmxcfs' `/etc/pve/op-agent/heads`. Hooks run on
//! each; every node's chain then holds witness rows for the other two, and a node's rewritten,
//! restored or truncated database, or an edited head file, is named by the others.
//! Root only (fails, never skips). Run: `cargo build -p pve-integration && cargo test --test
//! witness`.

use op_agent::audit::{encoding, verify, AuditLog, AuditOptions, NewRow, Outcome, StoredRow};
use op_testkit::{AgentToml, AuditRow, PveConf, Service, TestHost};
use rusqlite::Connection;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `[witness] interval_s` of the test nodes.
const INTERVAL: Duration = Duration::from_millis(500);

struct Node {
    name: &'static str,
    host: TestHost,
    watch: Option<Service>,
}

impl Node {
    fn rows(&self) -> Vec<AuditRow> {
        self.host.audit_rows()
    }

    /// The witness rows of this node's chain (`vmid` 0, `phase` `witness`).
    fn witness_rows(&self) -> Vec<AuditRow> {
        self.rows()
            .into_iter()
            .filter(|r| r.vmid == 0 && r.phase == "witness")
            .collect()
    }

    /// The `(seq, hash)` of each `witness.head` row about `node`.
    fn witnessed(&self, node: &str) -> Vec<(i64, String)> {
        self.witness_rows()
            .iter()
            .filter(|r| r.step == "witness.head")
            .map(|r| r.detail_json())
            .filter(|d| d["node"] == node)
            .map(|d| (d["seq"].as_i64().unwrap(), d["hash"].as_str().unwrap().into()))
            .collect()
    }

    /// The contradiction rows about `node`.
    fn contradictions(&self, node: &str) -> Vec<serde_json::Value> {
        self.witness_rows()
            .iter()
            .filter(|r| r.step == "witness.contradiction")
            .map(|r| r.detail_json())
            .filter(|d| d["node"] == node)
            .collect()
    }

    /// `op-agent audit ARGS` on this node: (exit code, stdout + stderr).
    fn audit(&self, args: &[&str]) -> (Option<i32>, String) {
        let mut a = vec!["audit"];
        a.extend_from_slice(args);
        let o = self.host.agent(&a);
        (o.code(), o.text())
    }

    /// `op-agent audit export` of this node to `path`.
    fn export(&self, path: &Path) {
        let o = self.host.agent(&["audit", "export"]);
        assert_eq!(o.code(), Some(0), "export on {}: {}", self.name, o.text());
        std::fs::write(path, o.stdout).unwrap();
    }

    /// One post-start hook run for container 100 (which must exit 0).
    fn hook(&self) {
        let o = self.host.hook(100, "post-start").run();
        assert_eq!(o.code(), Some(0), "hook on {}: {}", self.name, o.text());
    }

    /// An agent.toml for this node with the audit database `db` (a tampered copy).
    fn config_with_db(&self, db: &Path, dir: &Path) -> PathBuf {
        let mut t = self.host.config();
        t.audit_db = Some(db.to_path_buf());
        t.extra = std::fs::read_to_string(self.host.agent_toml())
            .unwrap()
            .split_once("[witness]")
            .map(|(_, w)| format!("[witness]{w}"))
            .unwrap();
        let p = dir.join(format!("{}-{}.toml", self.name, db.file_stem().unwrap().to_str().unwrap()));
        t.write(&p).unwrap();
        p
    }

    /// `op-agent --config CFG ARGS` on this node: (exit code, stdout + stderr, stdout).
    fn agent_with(&self, cfg: &Path, args: &[&str]) -> (Option<i32>, String, Vec<u8>) {
        let o = self.host.agent_cmd(args).config(cfg).run();
        (o.code(), o.text(), o.stdout)
    }
}

struct Cluster {
    nodes: Vec<Node>,
    /// The shared folder standing for `/etc/pve`.
    pve: tempfile::TempDir,
}

impl Cluster {
    /// Three nodes `pve-a`, `pve-b`, `pve-c`, each with container 100 managed and plugged as
    /// PVE leaves it before post-start, and its watch service running.
    fn start(hint: &str) -> Cluster {
        let pve = tempfile::tempdir().unwrap();
        let heads = pve.path().join("op-agent/heads");
        let nodes = ["pve-a", "pve-b", "pve-c"]
            .into_iter()
            .enumerate()
            .map(|(i, name)| {
                let host = TestHost::new(&format!("{hint}{i}"));
                host.write_agent_toml(&format!(
                    "[witness]\nnode = \"{name}\"\ndir = \"{}\"\ninterval_s = {}\n",
                    heads.display(),
                    INTERVAL.as_secs_f64()
                ));
                host.manage_bridged(100, PveConf::bridged(100, 10));
                host.plug_like_pve(100);
                let watch = Some(host.spawn_watch(&[]));
                Node { name, host, watch }
            })
            .collect();
        Cluster { nodes, pve }
    }

    fn heads_dir(&self) -> PathBuf {
        self.pve.path().join("op-agent/heads")
    }

    fn node(&self, name: &str) -> &Node {
        self.nodes.iter().find(|n| n.name == name).unwrap()
    }

    /// Waits until every node has witnessed every other node's current head.
    fn wait_all_witnessed(&self, limit: Duration) {
        let t = Instant::now();
        loop {
            let missing: Vec<String> = self
                .nodes
                .iter()
                .flat_map(|w| {
                    self.nodes.iter().filter(|o| o.name != w.name).filter_map(|o| {
                        let head = o.head_seq_run();
                        let seen = w.witnessed(o.name).iter().map(|x| x.0).max();
                        (seen < Some(head) || head == 0)
                            .then(|| format!("{} has not seen {} at {head}", w.name, o.name))
                    })
                })
                .collect();
            if missing.is_empty() {
                return;
            }
            assert!(
                t.elapsed() < limit,
                "not witnessed within {limit:?}: {missing:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                format!(
                    "--- {} watch log:\n{}",
                    n.name,
                    std::fs::read_to_string(n.host.watch_log()).unwrap_or_default()
                )
            })
            .collect()
    }
}

impl Node {
    /// The seq of the last row that is not a witness row (the head a publication after a run
    /// names at least).
    fn head_seq_run(&self) -> i64 {
        self.rows()
            .iter()
            .rev()
            .find(|r| !(r.vmid == 0 && r.phase == "witness"))
            .map_or(0, |r| r.seq)
    }
}

/// Three nodes with hooks on each, then `rounds - 1` more hooks on `pve-b` each witnessed by
/// the others before the next.
fn cluster_with_runs(hint: &str, rounds: usize) -> Cluster {
    let c = Cluster::start(hint);
    for n in &c.nodes {
        n.hook();
    }
    c.wait_all_witnessed(Duration::from_secs(20));
    for _ in 1..rounds {
        c.node("pve-b").hook();
        c.wait_all_witnessed(Duration::from_secs(20));
    }
    c
}

#[test]
fn three_nodes_witness_each_other_and_verify_intact_everywhere() {
    let mut c = cluster_with_runs("wit", 1);
    let d = tempfile::tempdir().unwrap();
    for n in &c.nodes {
        for o in c.nodes.iter().filter(|o| o.name != n.name) {
            assert!(
                !n.witnessed(o.name).is_empty(),
                "{} holds no witness row of {}",
                n.name,
                o.name
            );
            // Each witness row names the witnessing node and sits in its own chain.
            let rows = n.witness_rows();
            assert!(rows.iter().all(|r| r.detail_json()["by"] == n.name));
        }
        assert!(n.contradictions(n.name).is_empty());
        let f = c.heads_dir().join(format!("{}.json", n.name));
        let head: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
        assert_eq!(head["node"], n.name);
        assert!(head["seq"].as_i64().unwrap() >= 1 && head["ts"].as_i64().is_some());
    }
    // Idle: no run anywhere, so no publication and no new witness row (a head grown only by
    // witness rows is not published, or the nodes would witness each other for ever).
    let before: Vec<usize> = c.nodes.iter().map(|n| n.witness_rows().len()).collect();
    std::thread::sleep(INTERVAL * 6);
    let after: Vec<usize> = c.nodes.iter().map(|n| n.witness_rows().len()).collect();
    assert_eq!(before, after, "witness rows while idle\n{}", c.logs());
    for n in &c.nodes {
        n.export(&d.path().join(format!("{}.export", n.name)));
    }
    for n in &c.nodes {
        let (code, out) = n.audit(&["verify", "--witnesses"]);
        assert_eq!(code, Some(0), "{}: {out}", n.name);
        assert!(out.starts_with("intact: "), "{}: {out}", n.name);
        let peers: Vec<String> = c
            .nodes
            .iter()
            .filter(|o| o.name != n.name)
            .map(|o| d.path().join(format!("{}.export", o.name)).display().to_string())
            .collect();
        let mut args = vec!["verify", "--witnesses"];
        for p in &peers {
            args.extend(["--peer-export", p.as_str()]);
        }
        let (code, out) = n.audit(&args);
        assert_eq!(code, Some(0), "{}: {out}", n.name);
        let others: Vec<&str> = c
            .nodes
            .iter()
            .filter(|o| o.name != n.name)
            .map(|o| o.name)
            .collect();
        assert!(
            out.contains(&format!("witnessed heads by {} agree", others.join(", "))),
            "{}: {out}",
            n.name
        );
        let (code, out) = n.audit(&["witnesses"]);
        assert_eq!(code, Some(0), "{out}");
        let listed: BTreeSet<&str> = out.lines().filter_map(|l| l.split(' ').next()).collect();
        assert_eq!(listed, others.iter().copied().collect(), "{out}");
    }
    for n in &mut c.nodes {
        let st = n.watch.as_mut().unwrap().stop();
        assert!(st.is_some_and(|s| s.success()), "{} watch did not stop cleanly", n.name);
    }
}

/// A copy of the audit database `db` at `to` (`VACUUM INTO`: a consistent snapshot with the
/// WAL's rows, `sqlite_sequence` and the triggers).
fn snapshot(db: &Path, to: &Path) {
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
        .prepare(&format!("SELECT {} FROM audit ORDER BY seq", verify::COLUMNS))
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
fn rewrite_from(db: &Path, k: i64) {
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
fn truncate_and_append(db: &Path, m: i64, n: usize) {
    {
        let c = attacker(db);
        c.execute("DELETE FROM audit WHERE seq > ?1", [m]).unwrap();
        c.execute("UPDATE sqlite_sequence SET seq = ?1 WHERE name = 'audit'", [m])
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

/// The seqs of pve-b's heads witnessed by pve-a and pve-c, ascending, and who witnessed each.
fn witnessed_b(c: &Cluster) -> Vec<(i64, BTreeSet<&'static str>)> {
    let mut m: std::collections::BTreeMap<i64, BTreeSet<&'static str>> = Default::default();
    for w in ["pve-a", "pve-c"] {
        for (seq, _) in c.node(w).witnessed("pve-b") {
            m.entry(seq).or_default().insert(w);
        }
    }
    m.into_iter().collect()
}

/// The witnesses of the first witnessed seq greater than `after`.
fn first_after(w: &[(i64, BTreeSet<&'static str>)], after: i64) -> (i64, BTreeSet<&'static str>) {
    w.iter()
        .find(|(s, _)| *s > after)
        .cloned()
        .expect("a witnessed head after the tampered row")
}

#[test]
fn a_rewritten_restored_or_truncated_chain_is_named_by_its_witnesses() {
    let c = Cluster::start("wtam");
    for n in &c.nodes {
        n.hook();
    }
    c.wait_all_witnessed(Duration::from_secs(20));
    let d = tempfile::tempdir().unwrap();
    let b = c.node("pve-b");
    let old = d.path().join("old.db");
    snapshot(&b.host.audit_db(), &old);
    let old_head = {
        let oc = Connection::open(&old).unwrap();
        oc.query_row("SELECT max(seq) FROM audit", [], |r| r.get::<_, i64>(0))
            .unwrap()
    };
    for _ in 0..3 {
        b.hook();
        c.wait_all_witnessed(Duration::from_secs(20));
    }
    let mut c = c;
    // The attacker has root on pve-b: its watch is stopped, its database rewritten.
    c.nodes[1].watch.as_mut().unwrap().stop();
    let b = c.node("pve-b");
    let (a_exp, c_exp) = (d.path().join("a.export"), d.path().join("c.export"));
    c.node("pve-a").export(&a_exp);
    c.node("pve-c").export(&c_exp);
    let w = witnessed_b(&c);
    assert!(w.len() >= 3, "pve-b's heads witnessed: {w:?}");
    let first = w[0].0;

    let rewritten = d.path().join("rewritten.db");
    snapshot(&b.host.audit_db(), &rewritten);
    rewrite_from(&rewritten, first + 1);
    let truncated = d.path().join("truncated.db");
    snapshot(&b.host.audit_db(), &truncated);
    truncate_and_append(&truncated, first, 40);

    // (database, what plain verify cannot see, the first witnessed seq contradicted)
    let cases = [
        (&rewritten, "fork", first_after(&w, first)),
        (&old, "head-older-than-anchor", first_after(&w, old_head)),
        (&truncated, "fork", first_after(&w, first)),
    ];
    for (db, class, (seq, by)) in cases {
        let cfg = b.config_with_db(db, d.path());
        let (code, out, _) = b.agent_with(&cfg, &["audit", "verify"]);
        assert_eq!(code, Some(0), "plain verify of {}: {out}", db.display());
        // On pve-b, given the others' exports.
        let args = [
            "audit",
            "verify",
            "--witnesses",
            "--peer-export",
            a_exp.to_str().unwrap(),
            "--peer-export",
            c_exp.to_str().unwrap(),
        ];
        let (code, out, _) = b.agent_with(&cfg, &args);
        assert_eq!(code, Some(1), "{}: {out}", db.display());
        assert!(out.contains(&format!("TAMPERED: {class} ")), "{out}");
        let want = format!("node pve-b: first contradicted witnessed seq {seq}, witnessed by ");
        assert!(out.contains(&want), "{} (want {want}): {out}", db.display());
        let named = out.split(&want).nth(1).unwrap();
        for n in &by {
            assert!(named.contains(n), "{n} not named: {out}");
        }
        // On pve-a, about pve-b, from pve-b's export.
        let (code, _, exp) = b.agent_with(&cfg, &["audit", "export"]);
        assert_eq!(code, Some(0));
        let b_exp = d.path().join("b-tampered.export");
        std::fs::write(&b_exp, exp).unwrap();
        let (code, out) = c.node("pve-a").audit(&[
            "verify",
            "--witnesses",
            "--node",
            "pve-b",
            "--file",
            b_exp.to_str().unwrap(),
            "--peer-export",
            c_exp.to_str().unwrap(),
        ]);
        assert_eq!(code, Some(1), "on pve-a: {out}");
        assert!(out.contains(&want), "on pve-a (want {want}): {out}");
    }
    // The untouched database passes the same check.
    let args = [
        "verify",
        "--witnesses",
        "--peer-export",
        a_exp.to_str().unwrap(),
        "--peer-export",
        c_exp.to_str().unwrap(),
    ];
    let (code, out) = b.audit(&args);
    assert_eq!(code, Some(0), "{out}");
}
