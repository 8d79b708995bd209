//! End-to-end tests of cluster witnesses: three op-agent nodes (three agent.toml files, three
//! audit databases, three node names, each a private host with its own OVS and its own
//! `op-agent watch`) sharing one folder as pmxcfs' `/etc/pve/op-agent/heads`. Hooks run on
//! each; every node's chain then holds witness rows for the other two, and a node's rewritten,
//! restored or truncated database, or an edited head file, is named by the others.
//! Root only (fails, never skips). Run: `cargo build -p pve-integration && cargo test --test
//! witness`.

mod cluster;
mod tamper;

use cluster::{cluster_with_runs, cluster_with_runs_args, kinds, wait_for, Cluster, INTERVAL};
use rusqlite::Connection;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use tamper::{rewrite_from, snapshot, truncate_and_append};

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
        // Without exports: the peers' seen files and the own head file, as pmxcfs holds them.
        let (code, out) = n.audit(&["verify", "--witnesses"]);
        assert_eq!(code, Some(0), "{}: {out}", n.name);
        assert!(out.starts_with("intact: "), "{}: {out}", n.name);
        for o in c.nodes.iter().filter(|o| o.name != n.name) {
            assert!(out.contains(o.name), "{} not a witness: {out}", o.name);
        }
        let peers: Vec<String> = c
            .nodes
            .iter()
            .filter(|o| o.name != n.name)
            .map(|o| {
                d.path()
                    .join(format!("{}.export", o.name))
                    .display()
                    .to_string()
            })
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
        args.push("--json");
        let (code, out) = n.audit(&args);
        assert_eq!(code, Some(0), "{}: {out}", n.name);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["status"], "intact", "{out}");
        assert_eq!(v["witnesses"]["by"], serde_json::json!(others), "{out}");
        assert!(v["anchors_matched"].as_u64().unwrap() >= 1, "{out}");
        let (code, out) = n.audit(&["witnesses"]);
        assert_eq!(code, Some(0), "{out}");
        let listed: BTreeSet<&str> = out.lines().filter_map(|l| l.split(' ').next()).collect();
        assert_eq!(listed, others.iter().copied().collect(), "{out}");
        let (_, out) = n.audit(&["witnesses", "--json"]);
        for l in out.lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let (seq, _) = n.witnessed(v["node"].as_str().unwrap()).pop().unwrap();
            assert!(
                v["head"].as_str().unwrap().starts_with(&format!("{seq}:")),
                "{l}"
            );
            assert_eq!(v["contradictions"], 0, "{l}");
        }
    }
    // Busy: a hook on every node every 100 ms for 12 intervals. Each node publishes at most
    // once per interval, so each node appends at most 2 witness rows per interval.
    let before: Vec<usize> = c.nodes.iter().map(|n| n.witness_rows().len()).collect();
    let t = Instant::now();
    while t.elapsed() < INTERVAL * 12 {
        for n in &c.nodes {
            n.hook();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let took = t.elapsed();
    std::thread::sleep(INTERVAL * 2);
    let intervals = (took + INTERVAL * 2).as_secs_f64() / INTERVAL.as_secs_f64();
    for (n, b) in c.nodes.iter().zip(before) {
        let added = n.witness_rows().len() - b;
        eprintln!(
            "{}: {added} witness rows in {:.1} intervals of hooks every 100 ms on every node (at most {:.0})",
            n.name,
            intervals,
            2.0 * (intervals + 1.0)
        );
        assert!(added >= 2, "{}: {added}", n.name);
        assert!(
            added as f64 <= 2.0 * (intervals + 1.0),
            "{}: {added}",
            n.name
        );
    }
    for n in &mut c.nodes {
        let st = n.watch.as_mut().unwrap().stop();
        assert!(
            st.is_some_and(|s| s.success()),
            "{} watch did not stop cleanly",
            n.name
        );
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
        // On pve-b without exports: the others' latest witnesses of pve-b in pmxcfs.
        let latest = ["pve-a", "pve-c"]
            .iter()
            .map(|w| {
                c.node(w)
                    .witnessed("pve-b")
                    .iter()
                    .map(|x| x.0)
                    .max()
                    .unwrap()
            })
            .min()
            .unwrap();
        let (code, out, _) = b.agent_with(&cfg, &["audit", "verify", "--witnesses"]);
        assert_eq!(code, Some(1), "without exports, {}: {out}", db.display());
        let want_latest = format!("first contradicted witnessed seq {latest}, witnessed by ");
        assert!(out.contains(&want_latest), "(want {want_latest}): {out}");
        assert!(out.contains(".seen.json"), "{out}");
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

#[test]
fn edited_head_files_are_recorded_as_contradictions_and_repaired() {
    // pve-c reads the head files only every interval (no inotify), as it would see a write
    // made on another node through pmxcfs.
    let c = cluster_with_runs_args("wfile", 2, &["--no-inotify"]);
    let dir = c.heads_dir();
    let b_file = dir.join("pve-b.json");
    let witnessed = c.node("pve-a").witnessed("pve-b");
    assert!(witnessed.len() >= 2, "{witnessed:?}");
    let (old_seq, old_hash) = witnessed[0].clone();
    let real: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&b_file).unwrap()).unwrap();

    // 1. pve-b's head file edited to an older value: both peers record it within interval_s.
    let older = serde_json::json!({
        "node": "pve-b", "seq": old_seq, "hash": old_hash, "ts": real["ts"], "epoch": null,
    });
    std::fs::write(&b_file, format!("{older}\n")).unwrap();
    let t = Instant::now();
    let rolled = |n: &str| kinds(c.node(n), "pve-b").contains(&"rollback".to_string());
    let by_inotify = wait_for(&c, INTERVAL * 4, "rollback row on pve-a", || {
        rolled("pve-a")
    });
    wait_for(&c, INTERVAL * 4, "rollback row on pve-c", || {
        rolled("pve-c")
    });
    let by_poll = t.elapsed();
    assert!(
        by_inotify <= INTERVAL,
        "pve-a (inotify) reported after {by_inotify:?} (interval {INTERVAL:?})"
    );
    // One interval at most, plus the round that reads the files and appends the row.
    assert!(
        by_poll <= INTERVAL + Duration::from_millis(300),
        "pve-c (read every interval) reported after {by_poll:?} (interval {INTERVAL:?})"
    );
    eprintln!("rollback reported by inotify after {by_inotify:?}, by the read after {by_poll:?}");
    let row = &c.node("pve-a").contradictions("pve-b")[0];
    assert_eq!(row["seq"], old_seq);
    assert_eq!(row["witnessed_seq"], witnessed.last().unwrap().0);
    // pve-b notices its own file changed, records it and writes it again.
    wait_for(&c, INTERVAL * 4, "own-file-changed on pve-b", || {
        kinds(c.node("pve-b"), "pve-b").contains(&"own-file-changed".to_string())
    });
    wait_for(&c, INTERVAL * 6, "pve-b's head file repaired", || {
        let f: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&b_file).unwrap_or_default())
                .unwrap_or_default();
        f["seq"]
            .as_i64()
            .is_some_and(|s| s >= real["seq"].as_i64().unwrap())
    });
    let (code, out) = c.node("pve-a").audit(&["witnesses"]);
    assert_eq!(code, Some(0));
    let line = out
        .lines()
        .find(|l| l.starts_with("pve-b "))
        .unwrap_or_default();
    assert!(line.contains("1 contradictions, last: rollback"), "{out}");

    // 2. A malformed head file of pve-c.
    let c_file = dir.join("pve-c.json");
    std::fs::write(&c_file, "{\"node\":\"pve-c\",\"seq\":").unwrap();
    wait_for(
        &c,
        INTERVAL * 4,
        "malformed rows on pve-a and pve-b",
        || {
            ["pve-a", "pve-b"]
                .iter()
                .all(|n| kinds(c.node(n), "pve-c").contains(&"malformed".to_string()))
        },
    );

    // 3. A head file naming a future seq pve-b never reaches: witnessed as a claim, then
    // contradicted when pve-b writes its real head again, and `verify --witnesses` on pve-b
    // fails with the contradiction beside it.
    let hash = "ab".repeat(32);
    let future = serde_json::json!({
        "node": "pve-b", "seq": 1_000_000, "hash": hash, "ts": real["ts"], "epoch": null,
    });
    std::fs::write(&b_file, format!("{future}\n")).unwrap();
    wait_for(
        &c,
        INTERVAL * 8,
        "the future head contradicted on pve-a",
        || {
            c.node("pve-a")
                .contradictions("pve-b")
                .iter()
                .any(|d| d["contradiction"] == "rollback" && d["witnessed_seq"] == 1_000_000)
        },
    );
    let own = c.node("pve-b").contradictions("pve-b");
    assert!(
        own.iter().any(|d| d["reason"]
            .as_str()
            .unwrap()
            .contains("which its chain does not hold")),
        "{own:?}"
    );
    // The forged head does not stop the witnessing: pve-b's next head is witnessed again.
    let before = c.node("pve-b").rows().last().unwrap().seq;
    c.node("pve-b").hook();
    wait_for(
        &c,
        INTERVAL * 8,
        "pve-b's next head witnessed after the forgery",
        || {
            c.node("pve-a")
                .witnessed("pve-b")
                .iter()
                .any(|(s, _)| *s > before && *s < 1_000_000)
        },
    );
    let d = tempfile::tempdir().unwrap();
    let a_exp = d.path().join("a.export");
    c.node("pve-a").export(&a_exp);
    let (code, out) = c.node("pve-b").audit(&[
        "verify",
        "--witnesses",
        "--peer-export",
        a_exp.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("first contradicted witnessed seq 1000000"),
        "{out}"
    );
    assert!(
        out.contains("WARNING head-file contradiction about pve-b recorded by pve-a"),
        "{out}"
    );
}

#[test]
fn the_default_folder_is_used_only_under_a_mounted_pmxcfs_with_the_pve_node_name() {
    let host = op_testkit::TestHost::new("wdef");
    host.write_agent_toml("[witness]\ninterval_s = 0.2\n");
    host.manage_bridged(100, op_testkit::PveConf::bridged(100, 10));
    host.plug_like_pve(100);
    let _watch = host.spawn_watch(&[]);
    // With keyed checkpoints the head file carries the epoch of the last one.
    let o = host.agent(&["audit", "init-key"]);
    assert_eq!(o.code(), Some(0), "{}", o.text());
    let o = host.hook(100, "post-start").run();
    assert_eq!(o.code(), Some(0), "{}", o.text());
    let heads = host.root().join("etc/pve/op-agent/heads");
    std::thread::sleep(Duration::from_millis(1000));
    assert!(!heads.exists(), "head folder written without pmxcfs");
    std::fs::write(host.root().join("etc/pve/.version"), "1\n").unwrap();
    // PVE::INotify::nodename: uname's nodename (the kernel host name) up to the first dot.
    let host_name = nix::unistd::gethostname().unwrap();
    let node = host_name.to_str().unwrap().split('.').next().unwrap();
    let file = heads.join(format!("{node}.json"));
    let t = Instant::now();
    while !file.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "no {} after .version appeared: {}",
            file.display(),
            std::fs::read_to_string(host.watch_log()).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let f: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(f["node"], node);
    assert_eq!(f["epoch"], 0, "{f}");
    let head = host.agent(&["audit", "head"]).stdout_text();
    assert!(head.starts_with(&format!("{}:", f["seq"])), "{head} vs {f}");
}
