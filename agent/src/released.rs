//! Containers handed back to Proxmox by `op-agent release`: a marker
//! `<pve root>/run/op-agent/released/<vmid>` holding `monitor=<inode>`, the inode of the
//! container's lxc monitor command socket when it was released
//! ([`pve_integration::running::monitor_instance`]).
//!
//! While the marker names the running monitor, [`crate::engine::Managed::load`] gives every
//! NIC of the container `NicMode::Skip`, so no hook phase, `watch` run or `check` touches or
//! reports its NICs: PVE's names and Ports stay as PVE's own plumbing made them. The next
//! `pct start` runs a new monitor (a new socket inode), so the marker no longer applies from
//! its pre-start on; an in-guest reboot keeps the monitor and so the release. `op-agent apply`
//! removes the marker before it converges. `/run` is a tmpfs: a host reboot forgets every
//! release, as it stops every container.

use pve_integration::Vmid;
use std::path::{Path, PathBuf};

/// The `NicMode::Skip` reason of a released container's NICs (and its audit `nic.skip` rows).
pub const SKIP_REASON: &str =
    "released to PVE by op-agent release until the next start or op-agent apply";

/// `<root>/run/op-agent/released/<vmid>`.
pub fn marker_path(root: &Path, vmid: Vmid) -> PathBuf {
    root.join("run/op-agent/released").join(vmid.to_string())
}

/// The monitor inode a marker text names.
fn parse(text: &str) -> Option<u64> {
    text.trim().strip_prefix("monitor=")?.parse().ok()
}

/// True when `vmid` is released: its marker names the monitor that runs it now. A marker of
/// an earlier monitor (the container was started again) is removed.
pub fn is_released(root: &Path, vmid: Vmid) -> bool {
    let path = marker_path(root, vmid);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return false;
    };
    match (
        parse(&text),
        pve_integration::running::monitor_instance(root, vmid),
    ) {
        (Some(a), Some(b)) if a == b => true,
        (_, Some(_)) => {
            let _ = std::fs::remove_file(&path);
            false
        }
        _ => false,
    }
}

/// Writes the marker of running container `vmid` (atomically; the folder is made 0700).
///
/// # Errors
/// The container is not running (`NotFound`), or the file could not be written.
pub fn mark(root: &Path, vmid: Vmid) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let inode = pve_integration::running::monitor_instance(root, vmid).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("container {vmid} is not running"),
        )
    })?;
    let path = marker_path(root, vmid);
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    crate::watch::metrics::write_atomic(&path, format!("monitor={inode}\n").as_bytes())
}

/// Removes the marker of `vmid`; `Ok(true)` when there was one (stale or not).
///
/// # Errors
/// The file exists but could not be removed.
pub fn clear(root: &Path, vmid: Vmid) -> std::io::Result<bool> {
    match std::fs::remove_file(marker_path(root, vmid)) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_holds_only_for_the_monitor_it_names() {
        use std::os::linux::net::SocketAddrExt;
        let dir = tempfile::tempdir().unwrap();
        let v: Vmid = "4243".parse().unwrap();
        assert!(mark(dir.path(), v).is_err(), "not running");
        let name = pve_integration::running::command_socket_name(dir.path(), v);
        let addr =
            std::os::unix::net::SocketAddr::from_abstract_name(&name.as_bytes()[1..]).unwrap();
        let l = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();
        assert!(!is_released(dir.path(), v));
        mark(dir.path(), v).unwrap();
        assert!(is_released(dir.path(), v));
        // The next start: a new monitor, a new socket.
        drop(l);
        assert!(!is_released(dir.path(), v));
        assert!(
            marker_path(dir.path(), v).exists(),
            "kept while not running"
        );
        let _l = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();
        assert!(!is_released(dir.path(), v), "a stale marker");
        assert!(
            !marker_path(dir.path(), v).exists(),
            "a stale marker is removed"
        );
        mark(dir.path(), v).unwrap();
        assert!(clear(dir.path(), v).unwrap());
        assert!(!clear(dir.path(), v).unwrap());
    }
}
