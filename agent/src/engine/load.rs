//! Load step: is a guest managed by op-agent (answered once, as a [`Managed`] value passed on),
//! and its desired state from the container TOML that wins and the PVE conf.

use crate::config::{AgentConfig, ConfigError};
use crate::desired::{self, Desired};
use crate::engine::error::RunError;
use pve_integration::Vmid;
use std::path::PathBuf;

/// A guest op-agent manages: a container TOML exists and its PVE CT conf names op-agent's
/// hookscript (`hookscript: <storage>:snippets/op-hook`, [`pve_integration::is_op_hook`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Managed {
    /// The container.
    pub vmid: Vmid,
    /// The container TOML that wins ([`AgentConfig::container_candidates`], highest priority
    /// first: the first one present).
    pub ct_toml: PathBuf,
    /// `<pve root>/etc/pve/lxc/<vmid>.conf`.
    pub pve_conf: PathBuf,
    /// `[pve] root`, where [`crate::released`] keeps its markers.
    pub pve_root: PathBuf,
    /// agent.toml's `[naming] mode`, for a container TOML without `naming`.
    pub default_naming: crate::config::Naming,
    /// Found by [`Managed::find_unhooked`]: the PVE conf may no longer name op-agent's
    /// hookscript (removed by hand), and [`Managed::load`] loads it all the same.
    pub unhooked: bool,
}

impl Managed {
    /// Finds out whether op-agent manages `vmid`: `Ok(None)` when no container TOML exists
    /// (either location), there is no PVE CT conf (e.g. a QEMU VM), or the conf's main section
    /// does not name op-agent's hookscript ([`pve_integration::enrolled_hookscript`]). PVE runs
    /// a hookscript only while it is set (pve-guest-common
    /// `PVE::GuestHelpers::exec_hookscript`), so a TOML left behind by a destroyed container,
    /// or by `pct set <vmid> --delete hookscript`, never acts on a new container with that
    /// vmid: `watch`, `apply`, `gc`, `status` and the hook all ask here. A PVE conf that cannot
    /// be read counts as managed, so that [`Managed::load`] reports why.
    ///
    /// Errors: [`RunError::PveRoot`] when a container TOML exists but `[pve] root` has no
    /// `etc/pve` (silently doing nothing would switch op-agent off for every container).
    pub fn find(cfg: &AgentConfig, vmid: Vmid) -> Result<Option<Managed>, RunError> {
        Self::find_as(cfg, vmid, false)
    }

    /// [`Managed::find`] without asking for op-agent's hookscript: a container whose
    /// hookscript was removed by hand (`pct set <vmid> --delete hookscript`) while it ran keeps
    /// op-agent's names and Ports until its next stop, and only `release` and `enroll
    /// --remove` hand them back (nothing else acts on it: PVE runs no hookscript for it).
    pub fn find_unhooked(cfg: &AgentConfig, vmid: Vmid) -> Result<Option<Managed>, RunError> {
        Self::find_as(cfg, vmid, true)
    }

    fn find_as(cfg: &AgentConfig, vmid: Vmid, unhooked: bool) -> Result<Option<Managed>, RunError> {
        let candidates = cfg.container_candidates(vmid);
        if !candidates.iter().any(|p| there(p)) {
            return Ok(None);
        }
        let root = &cfg.toml.pve.root;
        pve_integration::paths::check_pve_root(root).map_err(|source| RunError::PveRoot {
            agent_toml: cfg.path.clone(),
            source,
        })?;
        let pve_conf = pve_integration::paths::lxc_conf_path(root, vmid);
        if !pve_conf.exists() || !(unhooked || enrolled(&pve_conf)) {
            return Ok(None);
        }
        // The first candidate that is there at all, as `read_checked` sees it: a dangling
        // symlink is there (and refused when read).
        let [first, second] = candidates;
        let ct_toml = match std::fs::symlink_metadata(&first) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => second,
            _ => first,
        };
        Ok(Some(Managed {
            vmid,
            ct_toml,
            pve_conf,
            pve_root: root.clone(),
            default_naming: cfg.toml.naming.mode,
            unhooked,
        }))
    }

    /// Which condition of [`Managed::find`] `vmid` misses, in the order it asks, as one clause
    /// with what to do: no PVE conf (no container of this node), no container TOML, or a PVE
    /// conf that names another hookscript or none.
    pub fn why_not(cfg: &AgentConfig, vmid: Vmid) -> String {
        let root = &cfg.toml.pve.root;
        let conf = pve_integration::paths::lxc_conf_path(root, vmid);
        if !conf.exists() {
            return format!("no container {vmid} on this node (no {})", conf.display());
        }
        if !cfg.container_candidates(vmid).iter().any(|p| there(p)) {
            return format!("no container TOML: enroll it with `op-agent enroll {vmid}`");
        }
        match pve_integration::read_conf(root, vmid)
            .ok()
            .flatten()
            .and_then(|c| c.hookscript)
        {
            Some(h) => format!(
                "its PVE conf names another hookscript ({h}); `op-agent enroll {vmid} \
                 --keep-config --force` replaces it and adopts the container TOML"
            ),
            None => format!(
                "its PVE conf names no hookscript (the container TOML is left from an earlier \
                 container or from `pct set {vmid} --delete hookscript`; `op-agent enroll \
                 {vmid} --keep-config` adopts it)"
            ),
        }
    }

    /// Parse step: the container TOML and the PVE conf, combined ([`desired::resolve`]);
    /// `Ok(None)` when either file vanished since [`Managed::find`]. Errors name the file and
    /// line. While the container is released to PVE ([`crate::released::is_released`], read
    /// here, under the caller's lock) every NIC is `NicMode::Skip`.
    pub fn load(&self) -> Result<Option<Desired>, ConfigError> {
        let Some(text) = crate::config::read_checked(&self.ct_toml)? else {
            return Ok(None);
        };
        let ct = crate::config::parse_container(&self.ct_toml, &text)?;
        let Some(bytes) = crate::config::read_checked_bytes(&self.pve_conf)? else {
            return Ok(None);
        };
        let path = &self.pve_conf;
        let pve =
            pve_integration::parse_conf(&bytes[..], &path.display().to_string()).map_err(|e| {
                ConfigError::file(path, format!("{} ({})", e.kind, e.key)).at_line(e.line)
            })?;
        if !self.unhooked
            && !pve
                .hookscript
                .as_deref()
                .is_some_and(pve_integration::is_op_hook)
        {
            // The hookscript was removed since `find`.
            return Ok(None);
        }
        for w in &pve.ignored {
            log::warn!("{w}: ignored, as PVE's parse_pct_config does");
        }
        let mut d = desired::resolve(self.vmid, &pve, path, &ct)?;
        if ct.toml.naming.is_none() {
            d.naming = self.default_naming;
        }
        if crate::released::is_released(&self.pve_root, self.vmid) {
            for nic in &mut d.nics {
                nic.mode = desired::NicMode::Skip(crate::released::SKIP_REASON.into());
            }
        }
        Ok(Some(d))
    }
}

/// True when the PVE conf at `pve_conf` names op-agent's hookscript, or cannot be read (then
/// [`Managed::load`] reports the error).
fn enrolled(pve_conf: &std::path::Path) -> bool {
    match crate::config::read_checked_bytes(pve_conf) {
        Ok(Some(bytes)) => pve_integration::enrolled_hookscript(&bytes)
            .is_some_and(|h| pve_integration::is_op_hook(&h)),
        Ok(None) => false,
        Err(_) => true,
    }
}

/// Whether `p` is there at all, as `read_checked` sees it: a dangling or looping symlink is a
/// TOML that cannot be read (an error), not a container op-agent does not manage.
fn there(p: &std::path::Path) -> bool {
    !matches!(std::fs::symlink_metadata(p), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Naming;

    #[test]
    fn agent_tomls_naming_mode_is_the_default_a_container_toml_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let (ct, pve) = (dir.path().join("100.toml"), dir.path().join("100.conf"));
        std::fs::write(
            &pve,
            "hookscript: local:snippets/op-hook\nnet0: name=eth0,bridge=ovsbr0,type=veth\n",
        )
        .unwrap();
        let m = Managed {
            vmid: Vmid::new(100).unwrap(),
            ct_toml: ct.clone(),
            pve_conf: pve,
            pve_root: dir.path().into(),
            default_naming: Naming::Keep,
            unhooked: false,
        };
        std::fs::write(&ct, "network_type = \"bridge\"\n").unwrap();
        assert_eq!(m.load().unwrap().unwrap().naming, Naming::Keep);
        std::fs::write(&ct, "naming = \"rename\"\n").unwrap();
        assert_eq!(m.load().unwrap().unwrap().naming, Naming::Rename);
        std::fs::write(&ct, "naming = \"both\"\n").unwrap();
        assert!(m.load().is_err(), "an unknown mode is refused");
    }
}
