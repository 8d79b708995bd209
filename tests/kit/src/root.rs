//! A PVE node's file tree under a temp root `R` (or any directory): `R/etc/pve/lxc`,
//! `R/etc/op-agent`, `R/var/lib/vz/snippets`, `R/var/lib/op-agent`, `R/var/lib/lxc`,
//! `R/run/openvswitch`.

use std::fmt::Display;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::agent::AgentCommand;
use crate::config::AgentToml;

/// Writes `text` to `path` with permission bits `mode`, creating its directory.
pub fn write_file_mode(path: &Path, text: &str, mode: u32) {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
    }
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// op-agent's hookscript from this repository (`hookscript/op-hook`).
pub(crate) fn op_hook_text() -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../hookscript/op-hook");
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The root `R` of a simulated PVE node: a temp dir removed on drop ([`PveRoot::temp`]) or an
/// existing directory ([`PveRoot::at`]).
pub struct PveRoot {
    path: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl PveRoot {
    /// A fresh temp dir `<tmp>/<prefix><random>`.
    pub fn temp(prefix: &str) -> PveRoot {
        let d = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .expect("temp root");
        PveRoot {
            path: d.path().to_path_buf(),
            _temp: Some(d),
        }
    }

    /// An existing directory (kept on drop).
    pub fn at(path: &Path) -> PveRoot {
        PveRoot {
            path: path.to_path_buf(),
            _temp: None,
        }
    }

    /// `R`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `R/<rel>`.
    pub fn join(&self, rel: &str) -> PathBuf {
        self.path.join(rel)
    }

    /// `R/etc/op-agent/agent.toml`.
    pub fn agent_toml(&self) -> PathBuf {
        self.join("etc/op-agent/agent.toml")
    }

    /// Writes [`PveRoot::agent_toml`].
    pub fn write_agent_toml(&self, cfg: &AgentToml) {
        let p = self.agent_toml();
        cfg.write(&p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    }

    /// `R/var/lib/op-agent/audit.db`.
    pub fn audit_db(&self) -> PathBuf {
        self.join("var/lib/op-agent/audit.db")
    }

    /// `R/run/openvswitch`.
    pub fn ovs_rundir(&self) -> PathBuf {
        self.join("run/openvswitch")
    }

    /// `R/run/openvswitch/db.sock`.
    pub fn ovsdb_socket(&self) -> PathBuf {
        self.ovs_rundir().join("db.sock")
    }

    /// `R/var/lib/lxc`.
    pub fn lxcpath(&self) -> PathBuf {
        self.join("var/lib/lxc")
    }

    /// `R/etc/op-agent/containers`.
    pub fn containers_dir(&self) -> PathBuf {
        self.join("etc/op-agent/containers")
    }

    /// `R/etc/op-agent/containers/<vmid>.toml`.
    pub fn container_toml(&self, vmid: u32) -> PathBuf {
        self.containers_dir().join(format!("{vmid}.toml"))
    }

    /// `R/etc/pve/lxc/<vmid>.conf`.
    pub fn pve_conf_path(&self, vmid: u32) -> PathBuf {
        self.join(&format!("etc/pve/lxc/{vmid}.conf"))
    }

    /// Writes `R/etc/pve/lxc/<vmid>.conf` (e.g. a [`crate::PveConf`]).
    pub fn write_pve_conf(&self, vmid: u32, conf: impl Display) {
        write_file_mode(&self.pve_conf_path(vmid), &conf.to_string(), 0o644);
    }

    /// Writes `R/etc/op-agent/containers/<vmid>.toml`: the container is then managed.
    pub fn manage(&self, vmid: u32, toml: &str) {
        write_file_mode(&self.container_toml(vmid), toml, 0o644);
    }

    /// Writes an executable `R/var/lib/vz/snippets/<name>` (for
    /// `hookscript: local:snippets/<name>`).
    pub fn install_snippet(&self, name: &str, text: &str) -> PathBuf {
        let p = self.join(&format!("var/lib/vz/snippets/{name}"));
        write_file_mode(&p, text, 0o755);
        p
    }

    /// Installs this repository's `hookscript/op-hook` as snippet `op-hook`.
    pub fn install_op_hook(&self) -> PathBuf {
        self.install_snippet("op-hook", &op_hook_text())
    }

    /// Writes `R/bin/pct` (`exec pve-sim --root R "$@"`: PVE's CLI for op-agent's `set` and
    /// `enroll`) and returns a `PATH` with `R/bin` first.
    pub fn pct_shim(&self) -> String {
        let dir = self.join("bin");
        let text = format!(
            "#!/bin/sh\nexec {} --root {} \"$@\"\n",
            crate::target_bin("pve-sim").display(),
            self.path().display()
        );
        write_file_mode(&dir.join("pct"), &text, 0o755);
        format!(
            "{}:{}",
            dir.display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    /// `op-agent ARGS` with `OP_AGENT_CONFIG` = [`PveRoot::agent_toml`], outside any
    /// namespace.
    pub fn agent_cmd(&self, args: &[&str]) -> AgentCommand {
        AgentCommand::new(args).config_env(self.agent_toml())
    }
}
