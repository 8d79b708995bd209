use super::*;

#[test]
fn render_round_trips() {
    let spec = ContainerSpec {
        network_type: NetworkType::Netmaker,
        on_firewall: OnFirewall::Skip,
        nics: vec![NicToml {
            net: 1,
            bridge: Some("ovsbr0".into()),
            tag: Some(10),
            trunks: Some(vec![20, 30]),
            name: Some("vi100x".into()),
            ..NicToml::default()
        }],
    };
    let text = render_container_toml(&["hello".into()], &spec);
    assert!(text.starts_with("# hello\n"), "{text}");
    let c = config::parse_container(Path::new("/x/100.toml"), &text).unwrap();
    assert_eq!(c.toml.network_type, NetworkType::Netmaker);
    assert_eq!(c.toml.on_firewall, OnFirewall::Skip);
    assert_eq!(c.toml.nic, spec.nics);
    assert_eq!(c.nic_lines.len(), 1);
    let empty = render_container_toml(&[], &ContainerSpec::default());
    assert_eq!(empty, "network_type = \"bridge\"\n");
}

#[test]
fn write_is_0644_and_replaces() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("sub/100.toml");
    write_config_file(&p, "a = 1\n").unwrap();
    write_config_file(&p, "b = 2\n").unwrap();
    assert_eq!(std::fs::read_to_string(&p).unwrap(), "b = 2\n");
    let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
    assert_eq!(std::fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
}

/// A TOML left by a destroyed container 100 and a new container 100 without hookscript:
/// plain enroll refuses to adopt it, `--keep-config` keeps it.
#[test]
fn a_stale_toml_is_adopted_only_with_keep_config() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    for dir in [
        "etc/pve/lxc",
        "etc/op-agent/containers",
        "var/lib/vz/snippets",
    ] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    std::fs::write(
        root.join("etc/pve/lxc/100.conf"),
        "net0: name=eth0,bridge=ovsbr0,tag=20,type=veth\n",
    )
    .unwrap();
    let old = "network_type = \"bridge\"\n[[nic]]\nnet = 0\ntag = 10\n";
    let toml = root.join("etc/op-agent/containers/100.toml");
    std::fs::write(&toml, old).unwrap();
    let hook = root.join("var/lib/vz/snippets/op-hook");
    std::fs::write(&hook, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut cfg = AgentConfig {
        path: root.join("etc/op-agent/agent.toml"),
        dir: root.join("etc/op-agent"),
        toml: Default::default(),
    };
    cfg.toml.pve.root = root.to_path_buf();
    let vmid = Vmid::new(100).unwrap();
    let mut args = EnrollArgs {
        vmids: vec!["100".into()],
        all: false,
        on_firewall: None,
        bridge: None,
        tag: None,
        trunks: None,
        net: 0,
        netmaker: false,
        cluster: false,
        force: false,
        keep_config: false,
        remove: false,
        dry_run: true,
    };
    let mut out = Vec::new();
    let Err(Fail(code, msg)) = enroll(&args, vmid, &cfg, &mut out) else {
        panic!("adopted the stale TOML: {}", String::from_utf8_lossy(&out));
    };
    assert_eq!(code, ExitCode::Refused);
    assert!(
        msg.contains("--keep-config") && msg.contains("rm "),
        "{msg}"
    );
    args.keep_config = true;
    let mut out = Vec::new();
    assert!(enroll(&args, vmid, &cfg, &mut out).is_ok());
    let out = String::from_utf8_lossy(&out);
    assert!(
        out.contains("would keep") && out.contains("100.toml"),
        "{out}"
    );
    // The dry run shows the file it keeps (VLAN 10), not the one it would have generated.
    assert!(out.contains("    tag = 10"), "{out}");
    assert_eq!(std::fs::read_to_string(&toml).unwrap(), old);
    // Another hookscript in the PVE conf: refused without --force; with it, replaced while
    // the TOML is still kept.
    std::fs::write(
        root.join("etc/pve/lxc/100.conf"),
        "hookscript: local:snippets/other\nnet0: name=eth0,bridge=ovsbr0,tag=20,type=veth\n",
    )
    .unwrap();
    let mut out = Vec::new();
    let Err(Fail(code, msg)) = enroll(&args, vmid, &cfg, &mut out) else {
        panic!("replaced another hookscript without --force");
    };
    assert_eq!(code, ExitCode::Refused, "{msg}");
    args.force = true;
    let mut out = Vec::new();
    assert!(enroll(&args, vmid, &cfg, &mut out).is_ok());
    let out = String::from_utf8_lossy(&out);
    assert!(
        out.contains("would keep") && out.contains("    tag = 10"),
        "{out}"
    );
}
