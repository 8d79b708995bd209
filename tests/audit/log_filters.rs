//! `op-agent audit log` (the binary) as an admin filters it: a fresh install's missing
//! database is an empty log, `-n`, `--until`, `--run`, `--phase`, `--outcome`, local time
//! display (`TZ`) or `--utc`, and dates checked by the calendar (`2026-02-30` is a usage
//! error, 64).

use op_agent::audit::{AuditLog, NewRow, Outcome};
use op_testkit::{AgentCommand, AgentToml, CmdOutput, PveRoot};

fn audit(root: &PveRoot, args: &[&str], tz: &str) -> CmdOutput {
    let mut a = vec!["audit"];
    a.extend_from_slice(args);
    AgentCommand::new(&a)
        .config(root.agent_toml())
        .env_remove("OP_AGENT_CONFIG")
        .env("TZ", tz)
        .run()
}

fn seqs(o: &CmdOutput) -> Vec<i64> {
    o.stdout_text()
        .lines()
        .map(|l| l.split(' ').next().unwrap().parse().unwrap())
        .collect()
}

#[test]
fn audit_log_filters_local_time_and_a_fresh_install() {
    let root = PveRoot::temp(&format!("op-agent-auditlog-{}-", std::process::id()));
    root.write_agent_toml(&AgentToml {
        audit_db: Some(root.audit_db()),
        pve_root: Some(root.path().to_path_buf()),
        ..AgentToml::default()
    });
    // Fresh install: no database yet.
    assert!(!root.audit_db().exists());
    let o = audit(&root, &["log"], "UTC");
    assert_eq!(
        (o.code(), o.stdout_text()),
        (Some(0), String::new()),
        "{}",
        o.text()
    );
    let o = audit(&root, &["head"], "UTC");
    assert_eq!(
        (o.code(), o.stdout_text().trim()),
        (Some(0), "empty"),
        "{}",
        o.text()
    );
    let o = audit(&root, &["verify"], "UTC");
    assert_eq!(o.code(), Some(0), "{}", o.text());
    assert!(
        o.stdout_text().starts_with("intact: 0 rows"),
        "{}",
        o.text()
    );
    // `audit export` on a fresh install: the header alone, no head, which `verify --file`
    // reads as an intact empty log.
    let o = audit(&root, &["export"], "UTC");
    assert_eq!(o.code(), Some(0), "{}", o.text());
    let lines: Vec<String> = o.stdout_text().lines().map(String::from).collect();
    assert_eq!(lines.len(), 1, "{}", o.text());
    let hdr: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(hdr["head"], serde_json::Value::Null, "{}", lines[0]);
    assert_eq!(hdr["since_seq"], 0, "{}", lines[0]);
    let export = root.path().join("fresh-export.jsonl");
    std::fs::write(&export, o.stdout_text()).unwrap();
    let o = audit(
        &root,
        &["verify", "--file", export.to_str().unwrap()],
        "UTC",
    );
    assert_eq!(o.code(), Some(0), "{}", o.text());
    assert!(
        !root.audit_db().exists(),
        "export must not create the database"
    );

    let mut log = AuditLog::open(
        &root.audit_db(),
        &op_agent::audit::AuditOptions {
            busy_timeout: std::time::Duration::from_secs(5),
            host: "h".into(),
            key_file: None,
        },
    )
    .unwrap();
    let row = |phase, run_id, outcome| NewRow {
        vmid: 100,
        phase,
        run_id,
        step: "link.rename",
        outcome,
        detail: "{}",
    };
    log.append_all(&[
        row("pre-start", "run-aaa1", Outcome::Intent),
        row("pre-start", "run-aaa1", Outcome::Ok),
        row("post-start", "run-bbb2", Outcome::Intent),
        row("post-start", "run-bbb2", Outcome::Failed),
        row("post-start", "run-bbb2", Outcome::Skipped),
    ])
    .unwrap();
    drop(log);

    let all = audit(&root, &["log"], "UTC");
    assert_eq!(seqs(&all), [1, 2, 3, 4, 5], "{}", all.text());
    let o = audit(&root, &["log", "-n", "2"], "UTC");
    assert_eq!(seqs(&o), [4, 5], "{}", o.text());
    let o = audit(
        &root,
        &["log", "--limit", "1", "--phase", "pre-start"],
        "UTC",
    );
    assert_eq!(seqs(&o), [2], "{}", o.text());
    let o = audit(&root, &["log", "--run", "run-bbb"], "UTC");
    assert_eq!(seqs(&o), [3, 4, 5], "{}", o.text());
    let o = audit(&root, &["log", "--outcome", "failed"], "UTC");
    assert_eq!(seqs(&o), [4], "{}", o.text());
    let o = audit(&root, &["log", "--until", "2000-01-01"], "UTC");
    assert_eq!(seqs(&o), Vec::<i64>::new(), "{}", o.text());
    let o = audit(
        &root,
        &[
            "log",
            "--until",
            "@99999999999",
            "--since",
            "2000-01-01T00:00Z",
        ],
        "UTC",
    );
    assert_eq!(seqs(&o).len(), 5, "{}", o.text());
    for bad in [
        ["--since", "2026-02-30"],
        ["--until", "2026-02-30"],
        ["--outcome", "great"],
    ] {
        let o = audit(&root, &[&["log"][..], &bad[..]].concat(), "UTC");
        assert_eq!(o.code(), Some(64), "{bad:?}: {}", o.text());
    }

    // Times: local with its offset, or UTC.
    let field = |o: &CmdOutput| {
        o.stdout_text()
            .lines()
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .to_string()
    };
    let utc = field(&all);
    assert!(utc.ends_with("+00:00"), "{utc}");
    let asia = field(&audit(&root, &["log"], "Asia/Kolkata"));
    assert!(asia.ends_with("+05:30"), "{asia}");
    let z = field(&audit(&root, &["log", "--utc"], "Asia/Kolkata"));
    assert!(z.ends_with('Z') && z[..19] == utc[..19], "{z} vs {utc}");
}
