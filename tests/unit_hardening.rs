//! `op-agent.service` as systemd sees it: `systemd-analyze security --offline=yes` rates its
//! exposure at most 2.5, it starts after pve-cluster on Proxmox VE nodes only, does not
//! restart on a bad config (78), and may write exactly the state, lock and log paths the code
//! uses (the tmpfiles.d entry makes the lock folder). No root needed.

use std::path::Path;

fn repo(p: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

#[test]
fn service_is_hardened_and_writes_only_its_state() {
    let unit = repo("debian/op-agent.service");
    let o = std::process::Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&unit)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    let line = out
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("{out}{}", String::from_utf8_lossy(&o.stderr)));
    let level: f64 = line
        .split(':')
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!(level <= 2.5, "{line}");

    let text = std::fs::read_to_string(&unit).unwrap();
    let has = |l: &str| assert!(text.lines().any(|x| x == l), "no {l:?} in the unit");
    has("ConditionPathIsDirectory=/etc/pve");
    has("RestartPreventExitStatus=78");
    has("CapabilityBoundingSet=CAP_NET_ADMIN");
    has("ProtectSystem=strict");
    assert!(
        text.lines().any(|l| l.starts_with("After=")
            && l.split_whitespace()
                .any(|w| w.ends_with("pve-cluster.service"))),
        "After= lacks pve-cluster.service"
    );
    let rw: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("ReadWritePaths="))
        .flat_map(|l| l.split_whitespace())
        .map(|p| p.trim_start_matches('-'))
        .collect();
    let db_dir = Path::new(op_agent::audit::DEFAULT_DB).parent().unwrap();
    let key_dir = Path::new(op_agent::audit::DEFAULT_KEY_FILE)
        .parent()
        .unwrap();
    for want in [
        db_dir,
        key_dir,
        Path::new("/run/op-agent"),
        Path::new("/run/lock/lxc"),
        Path::new("/etc/pve/op-agent/heads"),
    ] {
        assert!(
            rw.iter().any(|p| Path::new(p) == want),
            "{} not writable: {rw:?}",
            want.display()
        );
    }
    // The witness folder is made before the sandbox, so ReadWritePaths finds it.
    assert!(
        text.lines()
            .any(|l| l.starts_with("ExecStartPre=-+")
                && l.contains("mkdir -p /etc/pve/op-agent/heads")),
        "no ExecStartPre making the witness folder"
    );
    let default = op_agent::config::WitnessSection::default().heads_dir(Path::new("/"));
    assert_eq!(default, Path::new("/etc/pve/op-agent/heads"));
    let tmpfiles = std::fs::read_to_string(repo("debian/op-agent.tmpfiles")).unwrap();
    assert!(
        tmpfiles.lines().any(|l| l.starts_with("d /run/op-agent ")),
        "{tmpfiles}"
    );
}
