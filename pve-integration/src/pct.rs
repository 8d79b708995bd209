//! The `pct` invocations of `op-agent enroll`: attaching its hookscript to a container, and
//! (`enroll --remove`) deleting it.

use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};

use crate::ids::Vmid;

/// The hookscript volume id op-agent attaches: the snippet `op-hook` on the `local` storage,
/// `/var/lib/vz/snippets/op-hook` (resolve it with [`crate::paths::resolve_volume`]).
pub const HOOK_VOLID: &str = "local:snippets/op-hook";

/// The volume name of op-agent's hookscript on any storage: `<storage>:snippets/op-hook`
/// ([`crate::conf_read::is_op_hook`]).
pub const HOOK_SNIPPET: &str = "snippets/op-hook";

/// The program name of PVE's container CLI, looked up on `PATH`.
pub const PCT: &str = "pct";

/// `pct set <vmid> --hookscript <volid>`, as shown to the admin.
pub fn set_hookscript_cmdline(vmid: Vmid, volid: &str) -> String {
    format!("{PCT} set {vmid} --hookscript {volid}")
}

/// Runs `<pct> set <vmid> --hookscript <volid>` with stdin `/dev/null`, output inherited, and
/// returns its exit status. pve-container `src/PVE/CLI/pct.pm` maps `set` to
/// `PVE::API2::LXC::Config` `update_vm`; `src/PVE/LXC/Config.pm` `update_pct_config` checks the
/// volume with pve-guest-common `PVE::GuestHelpers::check_hookscript` (the snippet must exist
/// and be executable on this node) and writes `hookscript: <volid>`.
///
/// # Errors
/// The I/O error when `pct` cannot be started.
pub fn set_hookscript(pct: &Path, vmid: Vmid, volid: &str) -> std::io::Result<ExitStatus> {
    Command::new(pct)
        .args(["set", &vmid.to_string(), "--hookscript", volid])
        .stdin(Stdio::null())
        .status()
}

/// `pct set <vmid> --delete hookscript`, as shown to the admin.
pub fn delete_hookscript_cmdline(vmid: Vmid) -> String {
    format!("{PCT} set {vmid} --delete hookscript")
}

/// Runs `<pct> set <vmid> --delete hookscript` with stdin `/dev/null`, output inherited, and
/// returns its exit status. pve-container `src/PVE/LXC/Config.pm` `update_pct_config` puts
/// `hookscript` on the pending delete list; `hookscript` is one of `$LXC_FASTPLUG_OPTIONS`, so
/// `vmconfig_hotplug_pending` (running) or `vmconfig_apply_pending` (stopped) drops it from the
/// conf at once: the next `pct start` runs no hookscript.
///
/// # Errors
/// The I/O error when `pct` cannot be started.
pub fn delete_hookscript(pct: &Path, vmid: Vmid) -> std::io::Result<ExitStatus> {
    Command::new(pct)
        .args(["set", &vmid.to_string(), "--delete", "hookscript"])
        .stdin(Stdio::null())
        .status()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_and_run() {
        let v: Vmid = "100".parse().unwrap();
        assert_eq!(
            set_hookscript_cmdline(v, HOOK_VOLID),
            "pct set 100 --hookscript local:snippets/op-hook"
        );
        // A stand-in `pct` that records its argv and stdin.
        let d = tempfile::tempdir().unwrap();
        let pct = d.path().join("pct");
        let log = d.path().join("argv");
        std::fs::write(
            &pct,
            format!(
                "#!/bin/sh\necho \"$*\" > {}\ncat >> {}\nexit 3\n",
                log.display(),
                log.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pct, std::fs::Permissions::from_mode(0o755)).unwrap();
        let st = set_hookscript(&pct, v, HOOK_VOLID).unwrap();
        assert_eq!(st.code(), Some(3));
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "set 100 --hookscript local:snippets/op-hook\n"
        );
        assert!(set_hookscript(&d.path().join("missing"), v, HOOK_VOLID).is_err());
        assert_eq!(
            delete_hookscript_cmdline(v),
            "pct set 100 --delete hookscript"
        );
        let st = delete_hookscript(&pct, v).unwrap();
        assert_eq!(st.code(), Some(3));
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "set 100 --delete hookscript\n"
        );
    }
}
