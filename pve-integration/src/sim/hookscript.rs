//! Running a container's hookscript, like pve-guest-common `src/PVE/GuestHelpers.pm`
//! `exec_hookscript`.

use std::process::Command;

use super::exec::{run_bounded, status_text, Out};
use super::{Res, Sim, HOOK_TIMEOUT, PVE_PATH};
use crate::conf::PveConf;
use crate::ids::Vmid;
use crate::paths;

impl Sim {
    /// pve-guest-common `exec_hookscript`: argv `<script> <vmid> <phase>`, stdin at EOF,
    /// env inherited + `LC_ALL=C`, `LVM_SUPPRESS_FD_WARNINGS=1`, PVE's PATH; output passed
    /// through. With `stop_on_error` a failure is the error, otherwise only a warning.
    pub(crate) fn exec_hookscript(
        &self,
        conf: &PveConf,
        vmid: Vmid,
        phase: &str,
        stop_on_error: bool,
    ) -> Res<()> {
        let Some(volid) = conf.hookscript.as_deref() else {
            return Ok(());
        };
        let result = (|| -> Res<()> {
            let path = paths::resolve_volume(&self.root, volid).map_err(|e| e.to_string())?;
            let meta = std::fs::metadata(&path);
            if !meta.as_ref().is_ok_and(|m| m.is_file()) {
                return Err(format!("script '{volid}' does not exist"));
            }
            use std::os::unix::fs::PermissionsExt;
            if meta
                .as_ref()
                .is_ok_and(|m| m.permissions().mode() & 0o111 == 0)
            {
                return Err(format!("script '{volid}' is not executable"));
            }
            let what = format!("{} {vmid} {phase}", path.display());
            let r = run_bounded(
                Command::new(&path)
                    .arg(vmid.to_string())
                    .arg(phase)
                    .env("LC_ALL", "C")
                    .env("LVM_SUPPRESS_FD_WARNINGS", "1")
                    .env("PATH", PVE_PATH),
                HOOK_TIMEOUT,
                Out::PassThrough,
            )
            .map_err(|e| format!("command '{what}' failed: {e}"))?;
            if r.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "command '{what}' failed: {}",
                    status_text(r.status)
                ))
            }
        })();
        match result {
            Ok(()) => Ok(()),
            Err(e) => {
                let msg = format!("hookscript error for {vmid} on {phase}: {e}");
                if stop_on_error {
                    Err(msg)
                } else {
                    eprintln!("{msg}");
                    Ok(())
                }
            }
        }
    }
}
