//! Helpers shared by the issue-4 end-to-end tests (`netmaker_*`, `multinic_*`, `firewall_*`):
//! a [`TestHost`] with op-agent installed as PVE's hookscript (`op-hook` snippet, agent.toml
//! under the temp root), `pve-sim` runs with `OP_AGENT_BIN`/`OP_AGENT_CONFIG` set, and readers
//! for the audit log. Include with `#[path = "netmaker_support/mod.rs"] mod agent;` after
//! `mod support;`.
#![allow(dead_code)]

use crate::support::{self, TestHost};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Output;

/// op-agent installed on a [`TestHost`].
pub struct Agent {
    pub host: TestHost,
}

/// The op-agent binary Cargo built for this test.
pub fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_op-agent"))
}

/// `net<n>` line of a PVE conf.
pub fn net_line(n: u8, bridge: &str, mac_low: u16, ip: Option<&str>, extra: &str) -> String {
    let ip = ip.map(|i| format!(",ip={i}")).unwrap_or_default();
    format!(
        "net{n}: name=eth{n},bridge={bridge},hwaddr=BC:24:11:{:02X}:{:02X}:{:02X}{ip},type=veth{extra}\n",
        n,
        mac_low >> 8,
        mac_low & 0xff
    )
}

/// A PVE conf with op-hook attached and the given `netN` lines.
pub fn pve_conf(vmid: u32, nets: &[String]) -> String {
    format!(
        "arch: amd64\nhookscript: local:snippets/op-hook\nhostname: ct{vmid}\nmemory: 128\n{}",
        nets.concat()
    )
}

impl Agent {
    /// A host with the given OVS and Linux bridges, op-hook installed, and agent.toml with
    /// `mesh` as the body of its `[mesh]` section.
    pub fn new(hint: &str, ovs: &[&str], linux: &[&str], mesh: &str) -> Agent {
        let host = TestHost::with_bridges(hint, ovs, linux);
        let a = Agent { host };
        let hook =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/hookscript/op-hook"))
                .expect("hookscript/op-hook");
        a.host.install_snippet("op-hook", &hook);
        std::fs::create_dir_all(a.containers_dir()).unwrap();
        let r = a.host.root().display().to_string();
        a.write_private(
            &a.config_path(),
            &format!(
                "[ovsdb]\nsocket = \"{}\"\ntimeout_ms = 5000\n[audit]\ndatabase = \"{r}/var/lib/op-agent/audit.db\"\n\
                 [pve]\nroot = \"{r}\"\n[mesh]\n{mesh}\n",
                a.host.ovsdb_socket().display()
            ),
            0o644,
        );
        a
    }

    /// `R/etc/op-agent/agent.toml`.
    pub fn config_path(&self) -> PathBuf {
        self.host.root().join("etc/op-agent/agent.toml")
    }

    /// `R/etc/op-agent/containers`.
    pub fn containers_dir(&self) -> PathBuf {
        self.host.root().join("etc/op-agent/containers")
    }

    /// Writes `path` with `mode` (creating its directory).
    pub fn write_private(&self, path: &std::path::Path, text: &str, mode: u32) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// Writes `containers/<vmid>.toml`.
    pub fn ct_toml(&self, vmid: u32, text: &str) {
        self.write_private(
            &self.containers_dir().join(format!("{vmid}.toml")),
            text,
            0o644,
        );
    }

    fn env(&self) -> Vec<String> {
        vec![
            "env".into(),
            format!("OP_AGENT_BIN={}", agent_bin().display()),
            format!("OP_AGENT_CONFIG={}", self.config_path().display()),
        ]
    }

    /// `pve-sim ARGS` in the namespace, with op-agent as the hookscript's agent.
    pub fn sim(&self, args: &[&str]) -> Output {
        let bin = support::pve_sim_bin().display().to_string();
        let root = self.host.root().display().to_string();
        let mut cmd = self.env();
        cmd.extend([bin, "--root".into(), root]);
        cmd.extend(args.iter().map(|s| s.to_string()));
        let c: Vec<&str> = cmd.iter().map(String::as_str).collect();
        self.host.run(&c)
    }

    /// `pve-sim ARGS` that must succeed; returns stdout+stderr.
    pub fn sim_ok(&self, args: &[&str]) -> String {
        let out = self.sim(args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "pve-sim {args:?} failed: {text}");
        text
    }

    /// `op-agent ARGS` in the namespace with this host's agent.toml; `extra_env` are
    /// `KEY=VALUE` pairs.
    pub fn agent(&self, extra_env: &[&str], args: &[&str]) -> Output {
        let mut cmd = self.env();
        cmd.extend(extra_env.iter().map(|s| s.to_string()));
        cmd.push(agent_bin().display().to_string());
        cmd.extend(args.iter().map(|s| s.to_string()));
        let c: Vec<&str> = cmd.iter().map(String::as_str).collect();
        self.host.run(&c)
    }

    /// Every audit row (`audit log --json`), optionally of one vmid.
    pub fn audit_rows(&self, vmid: Option<u32>) -> Vec<serde_json::Value> {
        let v = vmid.map(|v| v.to_string());
        let mut args = vec!["audit", "log", "--json"];
        if let Some(v) = &v {
            args.extend(["--vmid", v.as_str()]);
        }
        let out = self.agent(&[], &args);
        assert!(
            out.status.success(),
            "audit log: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("audit log --json line"))
            .collect()
    }

    /// Rows of `step` (any phase) for `vmid`.
    pub fn rows_of(&self, vmid: u32, step: &str) -> Vec<serde_json::Value> {
        self.audit_rows(Some(vmid))
            .into_iter()
            .filter(|r| r["step"] == step)
            .collect()
    }

    /// `ip link show` detail of a link, or `None`.
    pub fn link(&self, name: &str) -> Option<serde_json::Value> {
        self.host.link(name)
    }

    /// True when IFF_UP is set on `name`.
    pub fn is_up(&self, name: &str) -> bool {
        let l = self.link(name).unwrap_or_else(|| panic!("{name} missing"));
        l["flags"]
            .as_array()
            .map(|f| f.iter().any(|x| x == "UP"))
            .unwrap_or(false)
    }

    /// `ip` in the namespace that must succeed.
    pub fn ip(&self, args: &[&str]) {
        let mut c = vec!["ip"];
        c.extend_from_slice(args);
        self.host.run_ok(&c);
    }

    /// The container `vmid`'s state as `pve-sim status` prints it (`running`/`stopped`).
    pub fn status(&self, vmid: u32) -> String {
        let v = vmid.to_string();
        self.host
            .sim_ok(&["status", &v])
            .trim()
            .trim_start_matches("status: ")
            .to_string()
    }
}

/// stdout+stderr of an [`Output`].
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
