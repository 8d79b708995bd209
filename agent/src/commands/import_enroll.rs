//! `op-agent import-state --enroll`: after the container TOMLs are in place, attach op-agent's
//! hookscript to each imported container that has a PVE conf on this node, as `op-agent
//! enroll <vmid> --keep-config` does ([`super::enroll::run_one`]), and warn when the op-dbus
//! service is still enabled: two agents would rename the same `veth<vmid>i<n>` at every start.

use super::enroll::{self, EnrollArgs};
use super::import_state::{self, ImportStateArgs};
use super::{CliError, CommandResult};
use crate::config::AgentConfig;
use pve_integration::{paths, pct, Vmid};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The unit names op-dbus was installed under.
const OP_DBUS_UNITS: [&str; 2] = ["op-dbus.service", "op-dbus-agent.service"];

/// Where systemd keeps the `enable` symlinks of the system's units, under `root`.
const WANTS_PARENT: &str = "etc/systemd/system";

/// The `enable` symlink of an op-dbus unit under `root` (`etc/systemd/system/*.wants/`), the
/// way `systemctl is-enabled` finds a unit enabled; `None` when there is none.
pub fn op_dbus_enabled(root: &Path) -> Option<PathBuf> {
    let dir = root.join(WANTS_PARENT);
    let mut wants: Vec<PathBuf> = std::fs::read_dir(&dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "wants"))
        .collect();
    wants.sort();
    wants.into_iter().find_map(|w| {
        OP_DBUS_UNITS
            .iter()
            .map(|u| w.join(u))
            .find(|l| l.symlink_metadata().is_ok())
    })
}

/// The one-line warning for an enabled op-dbus unit at `link`.
pub fn op_dbus_warning(link: &Path) -> String {
    let unit = link
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!(
        "warning: {unit} is still enabled ({}): it and op-agent would both rename the same \
         veth at every start; stop and disable it: systemctl disable --now {unit}",
        link.display()
    )
}

/// Imports the state file into the node-local `containers/` of `cfg`
/// ([`import_state::import`]), then enrolls each imported container with a PVE conf on this
/// node, keeping the imported TOML; with `--dry-run`, prints the `pct` command of each. Warns
/// on stderr when op-dbus is still enabled.
///
/// # Errors
/// `Config` (78): the state file is unreadable. The exit code is 0 only when every entry was
/// imported and every imported container enrolled; else the first failure's.
pub fn run(args: &ImportStateArgs, cfg: &AgentConfig) -> CommandResult {
    let out = &mut std::io::stdout();
    let (code, vmids) = import_state::import(args, &cfg.containers_dir(), out)?;
    let mut first_failure: Option<CliError> = None;
    let (mut enrolled, mut total) = (0usize, 0usize);
    for v in vmids {
        let conf = paths::lxc_conf_path(&cfg.toml.pve.root, v);
        if !conf.exists() {
            let _ = writeln!(
                out,
                "{v}: not enrolled: no {} on this node (enroll it on its node)",
                conf.display()
            );
            continue;
        }
        total += 1;
        if args.dry_run {
            let cmd = pct::set_hookscript_cmdline(v, pct::HOOK_VOLID);
            let _ = writeln!(out, "{v}: would run: {cmd}");
            continue;
        }
        match enroll::run_one(&keep_config(v), v, cfg, out) {
            Ok(()) => enrolled += 1,
            Err(e) => {
                crate::errln!("op-agent import-state: {v}: not enrolled: {}", e.message());
                first_failure.get_or_insert(e);
            }
        }
    }
    if !args.dry_run {
        let _ = writeln!(out, "enrolled {enrolled} of {total} containers");
    }
    if let Some(link) = op_dbus_enabled(&cfg.toml.pve.root) {
        crate::errln!("op-agent import-state: {}", op_dbus_warning(&link));
    }
    match first_failure {
        Some(e) => Err(CliError::with_status(
            e.status(),
            format!(
                "{} of {total} containers not enrolled (reasons above)",
                total - enrolled
            ),
        )),
        None => Ok(code),
    }
}

/// `op-agent enroll <vmid> --keep-config`.
fn keep_config(vmid: Vmid) -> EnrollArgs {
    EnrollArgs {
        vmids: vec![vmid.to_string()],
        all: false,
        on_firewall: None,
        bridge: None,
        tag: None,
        trunks: None,
        net: 0,
        netmaker: false,
        cluster: false,
        force: false,
        keep_config: true,
        remove: false,
        dry_run: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_an_enabled_op_dbus_unit() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(op_dbus_enabled(d.path()), None);
        let wants = d.path().join("etc/systemd/system/multi-user.target.wants");
        std::fs::create_dir_all(&wants).unwrap();
        std::os::unix::fs::symlink("/lib/systemd/system/ssh.service", wants.join("ssh.service"))
            .unwrap();
        assert_eq!(op_dbus_enabled(d.path()), None);
        // A dangling symlink still means enabled (the unit file may be gone, the link is not).
        std::os::unix::fs::symlink(
            "/lib/systemd/system/op-dbus.service",
            wants.join("op-dbus.service"),
        )
        .unwrap();
        let link = op_dbus_enabled(d.path()).unwrap();
        assert_eq!(link, wants.join("op-dbus.service"));
        assert!(op_dbus_warning(&link).contains("systemctl disable --now op-dbus.service"));
    }
}
