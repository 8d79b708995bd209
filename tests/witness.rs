//! End-to-end tests of cluster witnesses: three op-agent nodes (three agent.toml files, three
//! audit databases, three node names, each a private host with its own OVS and its own
//! `op-agent watch`) sharing one folder as pmxcfs' `/etc/pve/op-agent/heads`. Hooks run on
//! each; every node's chain then holds witness rows for the other two, and a node's rewritten,
//! restored or truncated database, or an edited head file, is named by the others.
//! Root only (fails, never skips). Run: `cargo build -p pve-integration && cargo test --test
//! witness`.

use op_testkit::{AgentToml, AuditRow, PveConf, Service, TestHost};
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

    fn head_seq(&self) -> i64 {
        self.rows().last().map_or(0, |r| r.seq)
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
