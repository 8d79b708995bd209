use super::*;

fn p() -> PathBuf {
    PathBuf::from("/etc/op-agent/containers/100.toml")
}

#[test]
fn defaults_when_empty() {
    let a: AgentToml = parse_toml(&p(), "").unwrap();
    assert_eq!(a.ovsdb.socket, PathBuf::from("/run/openvswitch/db.sock"));
    assert_eq!(a.ovsdb.timeout_ms, 5000);
    assert_eq!(a.hook.deadline_ms, 10_000);
    assert_eq!(
        a.audit.database,
        PathBuf::from("/var/lib/op-agent/audit.db")
    );
    assert_eq!(a.pve.root, PathBuf::from("/"));
    assert_eq!(a.mesh.interface, "netmaker");
}

#[test]
fn full_agent_toml() {
    let text = "[ovsdb]\nsocket = \"/tmp/x.sock\"\ntimeout_ms = 100\n[hook]\ndeadline_ms = 2000\n\
                [audit]\ndatabase = \"/tmp/a.db\"\n[pve]\nroot = \"/srv/pve\"\n[mesh]\ninterface = \"nm0\"\n";
    let a: AgentToml = parse_toml(&p(), text).unwrap();
    assert_eq!(a.ovsdb.timeout_ms, 100);
    assert_eq!(a.hook.deadline_ms, 2000);
    assert_eq!(a.pve.root, PathBuf::from("/srv/pve"));
    assert_eq!(a.mesh.interface, "nm0");
}

#[test]
fn container_toml_full() {
    let text = "network_type = \"bridge\"\n[[nic]]\nnet = 0\nbridge = \"ovsbr0\"\ntag = 10\n\
                trunks = [20, 30]\nname = \"vi100\"\n";
    let c = parse_container(&p(), text).unwrap();
    assert_eq!(c.toml.network_type, NetworkType::Bridge);
    assert_eq!(c.toml.nic.len(), 1);
    assert_eq!(c.toml.nic[0].trunks, Some(vec![20, 30]));
    assert_eq!(c.nic_lines, vec![2]);
}

#[test]
fn nic_lines_follow_the_parser_not_the_spelling() {
    // `[[ nic ]]` with a comment, a `[[nic]]` inside a multi-line string, and an inline array.
    let text = "network_type = \"bridge\"\n\n[[ nic ]] # net0\nnet = 0\n\n[[nic]]\nnet = 1\n";
    assert_eq!(parse_container(&p(), text).unwrap().nic_lines, vec![3, 6]);
    let text = "on_firewall = \"skip\"\nnetwork_type = \"bridge\"\n\n[[nic]]\nnet = 0\nname = \"\"\"\n[[nic]]\n\"\"\"\n[[nic]]\nnet = 1\n";
    assert_eq!(parse_container(&p(), text).unwrap().nic_lines, vec![4, 9]);
    let text = "network_type = \"bridge\"\nnic = [\n  { net = 0 },\n  { net = 1, tag = 5 },\n]\n";
    assert_eq!(parse_container(&p(), text).unwrap().nic_lines, vec![3, 4]);
}

#[test]
fn unknown_key_names_file_line_key() {
    let text = "network_type = \"bridge\"\n[[nic]]\nnet = 0\ntagg = 10\n";
    let e = parse_container(&p(), text).unwrap_err();
    let s = e.to_string();
    assert!(
        s.starts_with("/etc/op-agent/containers/100.toml:4: "),
        "{s}"
    );
    assert!(s.contains("tagg"), "{s}");
}

#[test]
fn wrong_type_names_key() {
    let text = "[[nic]]\nnet = 0\ntag = \"ten\"\n";
    let e = parse_container(&p(), text).unwrap_err();
    let s = e.to_string();
    assert!(s.contains(":3: "), "{s}");
    assert!(s.contains("tag"), "{s}");
    let e = parse_toml::<AgentToml>(&p(), "[hook]\ndeadline_ms = -1\n").unwrap_err();
    assert!(e.to_string().contains(":2: "), "{e}");
    assert!(e.to_string().contains("deadline_ms"), "{e}");
}

#[test]
fn bad_network_type() {
    let e = parse_container(&p(), "network_type = \"vxlan\"\n").unwrap_err();
    assert!(e.to_string().contains(":1: "), "{e}");
    assert!(e.to_string().contains("network_type"), "{e}");
}

#[test]
fn syntax_error_has_line() {
    let e = parse_container(&p(), "network_type = \"bridge\"\n[[nic]\n").unwrap_err();
    assert_eq!(e.line, Some(2), "{e}");
}

#[test]
fn world_writable_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("100.toml");
    std::fs::write(&f, "").unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o666)).unwrap();
    let e = read_checked(&f).unwrap_err();
    assert!(e.is_permission(), "{e}");
    assert!(e.to_string().contains("chmod go-w"), "{e}");
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(read_checked(&f).unwrap(), Some(String::new()));
    assert_eq!(read_checked(&dir.path().join("none.toml")).unwrap(), None);
    // A folder others can write to: anyone could swap the file.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let e = read_checked(&f).unwrap_err();
    assert!(
        e.is_permission() && e.to_string().contains("its folder"),
        "{e}"
    );
    // ... unless sticky (like /tmp): others cannot replace root's file there.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    assert!(read_checked(&f).is_ok());
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn symlink_owned_by_another_user_refused() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("181.toml");
    std::fs::write(&target, "").unwrap();
    let link = dir.path().join("100.toml");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    assert!(read_checked(&link).is_ok());
    nix::unistd::fchownat(
        nix::fcntl::AT_FDCWD,
        &link,
        Some(nix::unistd::Uid::from_raw(65534)),
        None,
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .unwrap();
    let e = read_checked(&link).unwrap_err();
    assert!(
        e.is_permission() && e.to_string().contains("symlink"),
        "{e}"
    );
}

#[test]
fn metrics_section_defaults_and_bounds() {
    let a: AgentToml = parse_toml(&p(), "").unwrap();
    assert_eq!(a.metrics.textfile, None);
    assert_eq!(a.metrics.interval_s, 15.0);
    let a: AgentToml = parse_toml(
        &p(),
        "[metrics]\ntextfile = \"/var/lib/node/op_agent.prom\"\ninterval_s = 30\n",
    )
    .unwrap();
    assert_eq!(
        a.metrics.textfile,
        Some(PathBuf::from("/var/lib/node/op_agent.prom"))
    );
    assert_eq!(a.metrics.interval(), std::time::Duration::from_secs(30));
    let a: AgentToml = parse_toml(&p(), "[metrics]\ninterval_s = 0.25\n").unwrap();
    assert_eq!(a.metrics.interval(), std::time::Duration::from_millis(250));
    for bad in ["0", "-1", "0.05", "100000", "nan"] {
        let e =
            parse_toml::<AgentToml>(&p(), &format!("[metrics]\ninterval_s = {bad}\n")).unwrap_err();
        assert_eq!(e.line, Some(2), "{bad}: {e}");
        assert!(e.to_string().contains("interval_s"), "{bad}: {e}");
    }
    let e = parse_toml::<AgentToml>(&p(), "[metrics]\ntextfle = \"/x\"\n").unwrap_err();
    assert!(e.to_string().contains("textfle"), "{e}");
}

#[test]
fn the_shipped_agent_toml_parses_with_every_example_uncommented() {
    let text = include_str!("../../../config/agent.toml");
    let uncommented: String = text
        .lines()
        .map(|l| match l.strip_prefix('#') {
            Some(k) if k.split_once(" = ").is_some_and(|(k, _)| !k.contains(' ')) => k,
            _ => l,
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let a: AgentToml = parse_toml(&p(), &uncommented).unwrap();
    assert_eq!(a.metrics.interval_s, 15.0);
    assert_eq!(
        a.metrics.textfile,
        Some(PathBuf::from(
            "/var/lib/prometheus/node-exporter/op_agent.prom"
        ))
    );
    assert_eq!(a.hook, HookSection::default());
    assert_eq!(a.witness.node.as_deref(), Some("pve1"));
    assert_eq!(a.witness.interval_s, 10.0);
}

#[test]
fn witness_section_defaults_and_bad_values_name_the_line() {
    let a: AgentToml = parse_toml(&p(), "").unwrap();
    assert!(a.witness.enabled && a.witness.node.is_none());
    assert_eq!(a.witness.interval(), std::time::Duration::from_secs(10));
    assert_eq!(
        a.witness.heads_dir(Path::new("/")),
        PathBuf::from("/etc/pve/op-agent/heads")
    );
    let path = Path::new("/etc/op-agent/agent.toml");
    let ok = "[witness]\nnode = \"pve-2\"\ninterval_s = 0.5\ndir = \"/srv/heads\"\n";
    let a = parse_agent_toml(path, ok).unwrap();
    assert_eq!(a.witness.node.as_deref(), Some("pve-2"));
    assert_eq!(
        a.witness.heads_dir(Path::new("/")),
        PathBuf::from("/srv/heads")
    );
    let e = parse_agent_toml(path, "[witness]\nnode = \"pve.example\"\n").unwrap_err();
    assert!(
        e.to_string().starts_with("/etc/op-agent/agent.toml:2: "),
        "{e}"
    );
    assert!(e.to_string().contains("not a node name"), "{e}");
    let e = parse_agent_toml(path, "[witness]\ninterval_s = 0\n").unwrap_err();
    assert!(e.to_string().contains("interval_s must be"), "{e}");
    let e = parse_agent_toml(path, "[witness]\ndir = \"heads\"\n").unwrap_err();
    assert!(
        e.to_string()
            .starts_with("/etc/op-agent/agent.toml:2: [witness] dir: "),
        "{e}"
    );
}

/// A 50 GB sparse file as a container TOML is refused with one line (it was read into memory
/// and ended with "out of memory").
#[test]
fn a_huge_sparse_file_is_refused_unread() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("100.toml");
    std::fs::File::create(&f)
        .unwrap()
        .set_len(50_000_000_000)
        .unwrap();
    let e = read_checked(&f).unwrap_err();
    assert!(
        e.to_string()
            .contains("refused: 50000000000 bytes, more than a config file can hold"),
        "{e}"
    );
    assert_eq!(e.to_string().lines().count(), 1);
}

/// A Unix socket as a config file is refused by its kind (77), like a FIFO (it was "cannot
/// read: No such device or address", 78).
#[test]
fn a_socket_is_refused_by_its_kind() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("agent.toml");
    let _l = std::os::unix::net::UnixListener::bind(&f).unwrap();
    let e = read_checked(&f).unwrap_err();
    assert!(
        e.to_string()
            .contains("refused: a socket, not a regular file"),
        "{e}"
    );
    assert_eq!(e.exit_code(), crate::exit::ExitCode::Refused, "{e}");
}
