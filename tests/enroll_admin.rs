//! The admin's path: `op-agent enroll` (dry run, with a stand-in `pct` that records its
//! arguments, refusals), `op-agent import-state` on the seed-style `config/state.json`, and
//! `op-agent config check` saying which file wins. No root needed: every file lives under a
//! temporary PVE root named by `[pve] root`.

use op_testkit::{AgentCommand, AgentToml, CmdOutput, PveRoot};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A temporary PVE root with agent.toml, one container conf, the snippet and a `pct` stand-in.
struct Host {
    root: PveRoot,
}

impl Host {
    fn new(conf: &str) -> Host {
        let h = Host {
            root: PveRoot::temp(&format!("op-agent-enroll-{}-", std::process::id())),
        };
        for d in ["etc/op-agent/containers", "bin", "empty-bin"] {
            std::fs::create_dir_all(h.root().join(d)).unwrap();
        }
        h.root.write_agent_toml(&AgentToml {
            pve_root: Some(h.root().to_path_buf()),
            ..AgentToml::default()
        });
        h.root.write_pve_conf(100, conf);
        h.root.install_op_hook();
        h.set_pct(0);
        h
    }

    fn root(&self) -> &Path {
        self.root.path()
    }

    fn agent_toml(&self) -> PathBuf {
        self.root.agent_toml()
    }

    fn local_toml(&self) -> PathBuf {
        self.root.container_toml(100)
    }

    fn pct_log(&self) -> PathBuf {
        self.root().join("pct.args")
    }

    /// A `pct` that appends its arguments (one per line, then `--`) and exits `code`; on
    /// success `set <vmid> --hookscript <volid>` writes `hookscript: <volid>` into the conf, as
    /// PVE's `update_pct_config` does.
    fn set_pct(&self, code: i32) {
        let p = self.root().join("bin/pct");
        let conf = self.root().join("etc/pve/lxc");
        std::fs::write(
            &p,
            format!(
                "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done >> '{}'\necho -- >> '{}'\n\
                 if [ {code} = 0 ] && [ \"$1\" = set ] && [ \"$3\" = --hookscript ]; then \
                 c='{}'/\"$2\".conf; grep -v '^hookscript:' \"$c\" > \"$c.new\"; \
                 echo \"hookscript: $4\" >> \"$c.new\"; mv \"$c.new\" \"$c\"; fi\nexit {code}\n",
                self.pct_log().display(),
                self.pct_log().display(),
                conf.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn run(&self, with_pct: bool, args: &[&str]) -> CmdOutput {
        let bin = if with_pct { "bin" } else { "empty-bin" };
        let path = format!("{}:/usr/bin:/bin", self.root().join(bin).display());
        let path = if with_pct {
            path
        } else {
            // No pct anywhere: only the empty folder.
            self.root().join(bin).display().to_string()
        };
        AgentCommand::new(args)
            .config(self.agent_toml())
            .env("PATH", path)
            .env_remove("OP_AGENT_CONFIG")
            .run()
    }

    fn pct_calls(&self) -> String {
        std::fs::read_to_string(self.pct_log()).unwrap_or_default()
    }
}

fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

const CONF: &str = "arch: amd64\nhostname: ct100\n\
net0: name=eth0,bridge=ovsbr0,hwaddr=BC:24:11:00:01:00,ip=10.10.0.100/24,tag=10,type=veth\n";

#[test]
fn enroll_dry_run_prints_both_and_does_nothing() {
    let h = Host::new(CONF);
    let o = h.run(
        true,
        &[
            "enroll",
            "100",
            "--bridge",
            "ovsbr1",
            "--tag",
            "20",
            "--trunks",
            "30,40",
            "--dry-run",
        ],
    );
    let out = text(&o.stdout);
    assert!(o.status.success(), "{out}{}", text(&o.stderr));
    assert!(
        out.contains(&format!("would write {}", h.local_toml().display())),
        "{out}"
    );
    assert!(out.contains("bridge = \"ovsbr1\""), "{out}");
    assert!(out.contains("tag = 20"), "{out}");
    assert!(out.contains("trunks = [30, 40]"), "{out}");
    assert!(
        out.contains("would run: pct set 100 --hookscript local:snippets/op-hook"),
        "{out}"
    );
    assert!(!h.local_toml().exists(), "dry run wrote the TOML");
    assert_eq!(h.pct_calls(), "", "dry run ran pct");
}

#[test]
fn enroll_writes_toml_and_runs_pct_set() {
    let h = Host::new(CONF);
    let o = h.run(true, &["enroll", "100", "--tag", "20", "--trunks", "30,40"]);
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert_eq!(
        h.pct_calls(),
        "set\n100\n--hookscript\nlocal:snippets/op-hook\n--\n",
        "pct arguments"
    );
    let toml = std::fs::read_to_string(h.local_toml()).unwrap();
    let c = op_agent::config::parse_container(&h.local_toml(), &toml).unwrap();
    assert_eq!(c.toml.network_type, op_agent::config::NetworkType::Bridge);
    assert_eq!(c.toml.nic.len(), 1);
    assert_eq!(c.toml.nic[0].net, 0);
    assert_eq!(c.toml.nic[0].tag, Some(20));
    assert_eq!(c.toml.nic[0].trunks, Some(vec![30, 40]));
    assert_eq!(c.toml.nic[0].bridge, None, "bridge comes from the PVE conf");
    let mode = std::fs::metadata(h.local_toml())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o644);
    // Again: same file, nothing refused, pct run again (idempotent).
    let o = h.run(true, &["enroll", "100", "--tag", "20", "--trunks", "30,40"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("already up to date"));
    // Other content: refused without --force.
    let o = h.run(true, &["enroll", "100", "--netmaker"]);
    assert_eq!(o.status.code(), Some(77), "{}", text(&o.stdout));
    assert!(
        text(&o.stderr).contains("already exists"),
        "{}",
        text(&o.stderr)
    );
    let o = h.run(true, &["enroll", "100", "--netmaker", "--force"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let toml = std::fs::read_to_string(h.local_toml()).unwrap();
    assert!(toml.contains("network_type = \"netmaker\""), "{toml}");
}

#[test]
fn enroll_refuses_another_hookscript_unless_forced() {
    let h = Host::new(&format!("hookscript: local:snippets/other.pl\n{CONF}"));
    let o = h.run(true, &["enroll", "100"]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(77), "{err}");
    assert!(err.contains("local:snippets/other.pl"), "{err}");
    assert!(err.contains("--force"), "{err}");
    assert!(!h.local_toml().exists());
    assert_eq!(h.pct_calls(), "");
    let o = h.run(true, &["enroll", "100", "--force"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(h.local_toml().exists());
    assert!(h.pct_calls().contains("local:snippets/op-hook"));
}

#[test]
fn enroll_refuses_missing_snippet_and_missing_pct() {
    let h = Host::new(CONF);
    let o = h.run(false, &["enroll", "100"]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(69), "{err}");
    assert!(err.contains("not a Proxmox VE host"), "{err}");
    assert!(!h.local_toml().exists());
    // Dry run without pct says so but still prints the plan.
    let o = h.run(false, &["enroll", "100", "--dry-run"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(text(&o.stdout).contains("not a Proxmox VE host"));

    std::fs::remove_file(h.root().join("var/lib/vz/snippets/op-hook")).unwrap();
    let o = h.run(true, &["enroll", "100"]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(69), "{err}");
    assert!(err.contains("snippets/op-hook is missing"), "{err}");
    assert!(!h.local_toml().exists());
    assert_eq!(h.pct_calls(), "");
}

#[test]
fn enroll_rejects_bad_input() {
    let h = Host::new(CONF);
    let o = h.run(true, &["enroll", "099"]);
    assert_eq!(o.status.code(), Some(64));
    let o = h.run(true, &["enroll", "101"]);
    assert_eq!(o.status.code(), Some(78));
    assert!(text(&o.stderr).contains("101.conf does not exist"));
    // A VLAN out of range is a usage error, not a line of a file never written.
    let o = h.run(true, &["enroll", "100", "--tag", "5000"]);
    assert_eq!(o.status.code(), Some(64), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("5000"));
    assert!(!text(&o.stderr).contains(".toml"), "{}", text(&o.stderr));
    let o = h.run(true, &["enroll", "100", "--trunks", "20,4095"]);
    assert_eq!(o.status.code(), Some(64), "{}", text(&o.stderr));
    // Overrides describe one NIC of one container.
    let o = h.run(true, &["enroll", "100", "101", "--tag", "5"]);
    assert_eq!(o.status.code(), Some(64), "{}", text(&o.stderr));
    let o = h.run(true, &["enroll", "--all", "--bridge", "ovsbr1"]);
    assert_eq!(o.status.code(), Some(64), "{}", text(&o.stderr));
    let o = h.run(true, &["enroll"]);
    assert_eq!(o.status.code(), Some(64), "{}", text(&o.stderr));
    let o = h.run(true, &["enroll", "100", "--net", "3", "--tag", "5"]);
    assert_eq!(o.status.code(), Some(78), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("no net3"));
    assert!(!h.local_toml().exists());
    assert_eq!(h.pct_calls(), "");
}

#[test]
fn enroll_undoes_the_toml_when_pct_fails() {
    let h = Host::new(CONF);
    h.set_pct(2);
    let o = h.run(true, &["enroll", "100"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("removed"), "{}", text(&o.stderr));
    assert!(!h.local_toml().exists());
    assert!(h.pct_calls().starts_with("set\n100\n"));
}

#[test]
fn import_state_seed_example() {
    let h = Host::new(CONF);
    let state = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/state.json");
    let o = h.run(true, &["import-state", state.to_str().unwrap()]);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "entries were skipped: {out}");
    let dir = h.root().join("etc/op-agent/containers");
    for v in ["100", "101", "102", "200"] {
        assert!(
            out.contains(&format!(
                "wrote {}",
                dir.join(format!("{v}.toml")).display()
            )),
            "{v}: {out}"
        );
    }
    assert!(out.contains("skipped entry 4: id \"42\""), "{out}");
    assert!(
        out.contains("skipped entry 5: id 103") && out.contains("vxlan"),
        "{out}"
    );
    assert!(
        out.contains("4 written, 2 not converted, 6 entries"),
        "{out}"
    );
    let read = |v: &str| {
        let p = dir.join(format!("{v}.toml"));
        let t = std::fs::read_to_string(&p).unwrap();
        op_agent::config::parse_container(&p, &t).unwrap().toml
    };
    assert_eq!(read("100").nic[0].bridge.as_deref(), Some("ovsbr0"));
    assert_eq!(read("100").nic[0].name, None);
    assert_eq!(
        read("102").network_type,
        op_agent::config::NetworkType::Netmaker
    );
    assert_eq!(read("200").nic[0].name.as_deref(), Some("mesh-uplink-200"));
    assert!(!dir.join("103.toml").exists());
    // A second run leaves the files alone.
    let o = h.run(true, &["import-state", state.to_str().unwrap()]);
    assert!(text(&o.stdout).contains("unchanged"), "{}", text(&o.stdout));
    let o = h.run(true, &["import-state", "/nonexistent/state.json"]);
    assert_eq!(o.status.code(), Some(78));
}

/// `import-state --enroll`: the imported TOML is kept and the hookscript attached (through
/// `pct`) for the container this node has; the others are named as not on this node; an
/// enabled op-dbus unit gets a warning. `--dry-run` prints the `pct` command only.
#[test]
fn import_state_enroll_attaches_hookscripts_and_warns_about_op_dbus() {
    let h = Host::new(CONF);
    let wants = h.root().join("etc/systemd/system/multi-user.target.wants");
    std::fs::create_dir_all(&wants).unwrap();
    std::os::unix::fs::symlink(
        "/lib/systemd/system/op-dbus.service",
        wants.join("op-dbus.service"),
    )
    .unwrap();
    let state = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/state.json");
    let state = state.to_str().unwrap();

    let o = h.run(true, &["import-state", state, "--enroll", "--dry-run"]);
    let out = text(&o.stdout);
    assert!(
        out.contains("100: would run: pct set 100 --hookscript local:snippets/op-hook"),
        "{out}"
    );
    assert_eq!(h.pct_calls(), "", "a dry run runs no pct");
    assert!(!h.local_toml().exists());

    let o = h.run(true, &["import-state", state, "--enroll"]);
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert_eq!(o.status.code(), Some(1), "entries were skipped: {out}{err}");
    assert!(
        out.contains(&format!(
            "kept {} (--keep-config)",
            h.local_toml().display()
        )),
        "{out}"
    );
    assert!(out.contains("enrolled 1 of 1 containers"), "{out}");
    for v in ["101", "102", "200"] {
        assert!(
            out.contains(&format!("{v}: not enrolled: no ")),
            "{v}: {out}"
        );
    }
    assert_eq!(
        h.pct_calls(),
        "set\n100\n--hookscript\nlocal:snippets/op-hook\n--\n"
    );
    let conf = std::fs::read_to_string(h.root().join("etc/pve/lxc/100.conf")).unwrap();
    assert!(
        conf.contains("hookscript: local:snippets/op-hook"),
        "{conf}"
    );
    // The imported values are what stays.
    let t = std::fs::read_to_string(h.local_toml()).unwrap();
    let parsed = op_agent::config::parse_container(&h.local_toml(), &t).unwrap();
    assert_eq!(parsed.toml.nic[0].bridge.as_deref(), Some("ovsbr0"));
    assert!(
        err.contains("warning: op-dbus.service is still enabled")
            && err.contains("systemctl disable --now op-dbus.service"),
        "{err}"
    );
}

#[test]
fn config_check_says_which_file_wins() {
    let h = Host::new(&format!("{CONF}hookscript: local:snippets/op-hook\n"));
    std::fs::write(h.local_toml(), "network_type = \"bridge\"\n").unwrap();
    let o = h.run(true, &["config", "check"]);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        out.contains(&format!("100: {} wins: valid", h.local_toml().display())),
        "{out}"
    );
    let cluster = h.root().join("etc/pve/op-agent/containers/100.toml");
    std::fs::create_dir_all(cluster.parent().unwrap()).unwrap();
    std::fs::write(
        &cluster,
        "network_type = \"bridge\"\n[[nic]]\nnet = 0\ntag = 30\n",
    )
    .unwrap();
    let o = h.run(true, &["config", "check"]);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        out.contains(&format!(
            "100: {} wins, shadows {}",
            cluster.display(),
            h.local_toml().display()
        )),
        "{out}"
    );
    assert!(out.contains("net0 -> vi100 on ovsbr0 tag 30"), "{out}");
    // A broken shadowed file is still reported.
    std::fs::write(h.local_toml(), "network_type = \"bridge\"\ntagg = 1\n").unwrap();
    let o = h.run(true, &["config", "check"]);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(78), "{out}");
    assert!(out.contains("100.toml:2:") && out.contains("tagg"), "{out}");
}

const FW_CONF: &str = "arch: amd64\nhostname: ct100\n\
net0: name=eth0,bridge=ovsbr0,firewall=1,hwaddr=BC:24:11:00:01:00,ip=dhcp,type=veth\n";

#[test]
fn enroll_on_firewall_flag_and_hand_written_skip() {
    let h = Host::new(FW_CONF);
    // Refused by default, naming the flag.
    let o = h.run(true, &["enroll", "100"]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(77), "{err}");
    assert!(err.contains("--on-firewall skip"), "{err}");
    assert!(!h.local_toml().exists());
    // The flag writes on_firewall = "skip" and enrolls.
    let o = h.run(true, &["enroll", "100", "--on-firewall", "skip"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let toml = std::fs::read_to_string(h.local_toml()).unwrap();
    assert!(toml.contains("on_firewall = \"skip\""), "{toml}");
    assert!(h.pct_calls().contains("local:snippets/op-hook"));
    // A hand-written TOML's on_firewall = "skip" is honoured: --force rewrites it keeping it.
    std::fs::write(h.local_toml(), "on_firewall = \"skip\"\n").unwrap();
    let o = h.run(true, &["enroll", "100", "--force"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let toml = std::fs::read_to_string(h.local_toml()).unwrap();
    let c = op_agent::config::parse_container(&h.local_toml(), &toml).unwrap();
    assert_eq!(
        c.toml.on_firewall,
        op_agent::config::OnFirewall::Skip,
        "{toml}"
    );
    // --on-firewall refuse overrides the file.
    let o = h.run(
        true,
        &["enroll", "100", "--force", "--on-firewall", "refuse"],
    );
    assert_eq!(o.status.code(), Some(77), "{}", text(&o.stderr));
}

#[test]
fn enroll_many_and_all() {
    let h = Host::new(CONF);
    for v in [101, 102] {
        h.root
            .write_pve_conf(v, CONF.replace("ct100", &format!("ct{v}")));
    }
    let toml = |v: u32| h.root().join(format!("etc/op-agent/containers/{v}.toml"));
    // One dry run for all three: every plan printed, nothing done.
    let o = h.run(true, &["enroll", "100", "101", "102", "--dry-run"]);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}{}", text(&o.stderr));
    for v in [100, 101, 102] {
        assert!(
            out.contains(&format!("would write {}", toml(v).display())),
            "{v}: {out}"
        );
        assert!(
            out.contains(&format!("would run: pct set {v} --hookscript")),
            "{v}: {out}"
        );
        assert!(!toml(v).exists());
    }
    assert!(out.contains("would enroll 3 of 3 containers"), "{out}");
    assert_eq!(h.pct_calls(), "");
    // Two named: both enrolled.
    let o = h.run(true, &["enroll", "100", "102"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(toml(100).exists() && toml(102).exists() && !toml(101).exists());
    // The stand-in pct writes the hookscript line as PVE's `update_pct_config` does.
    // --all: 100 and 102 are enrolled already, 101 and 103 are done; a failure does not stop it.
    h.root.write_pve_conf(
        103,
        "arch: amd64\nnet0: name=eth0,bridge=ovsbr0,firewall=1,type=veth\n",
    );
    let o = h.run(true, &["enroll", "--all"]);
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert_eq!(o.status.code(), Some(77), "{out}{err}");
    assert!(out.contains("100: already enrolled"), "{out}");
    assert!(out.contains("102: already enrolled"), "{out}");
    assert!(out.contains("enrolled 1 of 2 containers"), "{out}");
    assert!(
        err.contains("op-agent enroll: 103: ") && err.contains("firewall=1"),
        "{err}"
    );
    assert!(err.contains("not enrolled: 103"), "{err}");
    assert!(toml(101).exists() && !toml(103).exists());
    assert!(h.pct_calls().contains("set\n101\n"), "{}", h.pct_calls());
}
