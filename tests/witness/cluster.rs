//! The three test nodes ([`Cluster`]): private hosts sharing one folder as pmxcfs'
//! `/etc/pve/op-agent/heads`, each with its own agent.toml, audit database, node name and
//! `op-agent watch`.

use op_testkit::{AuditRow, PveConf, Service, TestHost};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `[witness] interval_s` of the test nodes.
pub const INTERVAL: Duration = Duration::from_millis(500);

pub struct Node {
    pub name: &'static str,
    pub host: TestHost,
    pub watch: Option<Service>,
}

impl Node {
    pub fn rows(&self) -> Vec<AuditRow> {
        self.host.audit_rows()
    }

    /// The witness rows of this node's chain (`vmid` 0, `phase` `witness`).
    pub fn witness_rows(&self) -> Vec<AuditRow> {
        self.rows()
            .into_iter()
            .filter(|r| r.vmid == 0 && r.phase == "witness")
            .collect()
    }

    /// The `(seq, hash)` of each `witness.head` row about `node`.
    pub fn witnessed(&self, node: &str) -> Vec<(i64, String)> {
        self.witness_rows()
            .iter()
            .filter(|r| r.step == "witness.head")
            .map(|r| r.detail_json())
            .filter(|d| d["node"] == node)
            .map(|d| {
                (
                    d["seq"].as_i64().unwrap(),
                    d["hash"].as_str().unwrap().into(),
                )
            })
            .collect()
    }

    /// The contradiction rows about `node`.
    pub fn contradictions(&self, node: &str) -> Vec<serde_json::Value> {
        self.witness_rows()
            .iter()
            .filter(|r| r.step == "witness.contradiction")
            .map(|r| r.detail_json())
            .filter(|d| d["node"] == node)
            .collect()
    }

    /// `op-agent audit ARGS` on this node: (exit code, stdout + stderr).
    pub fn audit(&self, args: &[&str]) -> (Option<i32>, String) {
        let mut a = vec!["audit"];
        a.extend_from_slice(args);
        let o = self.host.agent(&a);
        (o.code(), o.text())
    }

    /// `op-agent audit export` of this node to `path`.
    pub fn export(&self, path: &Path) {
        let o = self.host.agent(&["audit", "export"]);
        assert_eq!(o.code(), Some(0), "export on {}: {}", self.name, o.text());
        std::fs::write(path, o.stdout).unwrap();
    }

    /// One post-start hook run for container 100 (which must exit 0).
    pub fn hook(&self) {
        let o = self.host.hook(100, "post-start").run();
        assert_eq!(o.code(), Some(0), "hook on {}: {}", self.name, o.text());
    }

    /// An agent.toml for this node with the audit database `db` (a tampered copy).
    pub fn config_with_db(&self, db: &Path, dir: &Path) -> PathBuf {
        let mut t = self.host.config();
        t.audit_db = Some(db.to_path_buf());
        t.extra = std::fs::read_to_string(self.host.agent_toml())
            .unwrap()
            .split_once("[witness]")
            .map(|(_, w)| format!("[witness]{w}"))
            .unwrap();
        let p = dir.join(format!(
            "{}-{}.toml",
            self.name,
            db.file_stem().unwrap().to_str().unwrap()
        ));
        t.write(&p).unwrap();
        p
    }

    /// `op-agent --config CFG ARGS` on this node: (exit code, stdout + stderr, stdout).
    pub fn agent_with(&self, cfg: &Path, args: &[&str]) -> (Option<i32>, String, Vec<u8>) {
        let o = self.host.agent_cmd(args).config(cfg).run();
        (o.code(), o.text(), o.stdout)
    }
}

pub struct Cluster {
    pub nodes: Vec<Node>,
    /// The shared folder standing for `/etc/pve`.
    pub pve: tempfile::TempDir,
}

impl Cluster {
    /// Three nodes `pve-a`, `pve-b`, `pve-c`, each with container 100 managed and plugged as
    /// PVE leaves it before post-start, and its watch service running.
    pub fn start(hint: &str) -> Cluster {
        Cluster::start_with(hint, &[])
    }

    /// [`Cluster::start`] with `pve-c`'s watch started with `c_args` (e.g. `--no-inotify`:
    /// it sees the head files only by its read every interval, as pmxcfs writes made on
    /// other nodes).
    pub fn start_with(hint: &str, c_args: &[&str]) -> Cluster {
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
                let args = if name == "pve-c" { c_args } else { &[] };
                let watch = Some(host.spawn_watch(args));
                Node { name, host, watch }
            })
            .collect();
        Cluster { nodes, pve }
    }

    pub fn heads_dir(&self) -> PathBuf {
        self.pve.path().join("op-agent/heads")
    }

    pub fn node(&self, name: &str) -> &Node {
        self.nodes.iter().find(|n| n.name == name).unwrap()
    }

    /// Waits until every node has witnessed every other node's current head.
    pub fn wait_all_witnessed(&self, limit: Duration) {
        let t = Instant::now();
        loop {
            let missing: Vec<String> = self
                .nodes
                .iter()
                .flat_map(|w| {
                    self.nodes
                        .iter()
                        .filter(|o| o.name != w.name)
                        .filter_map(|o| {
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

    pub fn logs(&self) -> String {
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
    pub fn head_seq_run(&self) -> i64 {
        self.rows()
            .iter()
            .rev()
            .find(|r| !(r.vmid == 0 && r.phase == "witness"))
            .map_or(0, |r| r.seq)
    }
}

/// Three nodes with hooks on each, then `rounds - 1` more hooks on `pve-b` each witnessed by
/// the others before the next.
pub fn cluster_with_runs(hint: &str, rounds: usize) -> Cluster {
    cluster_with_runs_args(hint, rounds, &[])
}

/// [`cluster_with_runs`] with `pve-c`'s watch started with `c_args`.
pub fn cluster_with_runs_args(hint: &str, rounds: usize, c_args: &[&str]) -> Cluster {
    let c = Cluster::start_with(hint, c_args);
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

/// Waits until `pred` holds; returns how long it took. Panics after `limit` with `what`.
pub fn wait_for(c: &Cluster, limit: Duration, what: &str, pred: impl Fn() -> bool) -> Duration {
    let t = Instant::now();
    while !pred() {
        assert!(
            t.elapsed() < limit,
            "{what} not within {limit:?}\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    t.elapsed()
}

pub fn kinds(n: &Node, about: &str) -> Vec<String> {
    n.contradictions(about)
        .iter()
        .map(|d| d["contradiction"].as_str().unwrap().to_string())
        .collect()
}
