//! Whether a container is running, the way PVE `check_running` decides it.

use std::path::{Path, PathBuf};

use crate::ids::Vmid;
use crate::paths;

/// The abstract unix socket name of a container's lxc monitor, as listed in `/proc/net/unix`:
/// `@<lxcpath>/<vmid>/command` (lxc `src/lxc/commands.c`, `lxc_cmd_init`; checked with lxc 5.0.2).
/// A relative `root` is made absolute against the current directory.
///
/// lxc hashes the name when `<lxcpath>/<vmid>/command` does not fit `sun_path` (about 100
/// bytes); such long roots are not supported here.
pub fn command_socket_name(root: &Path, vmid: Vmid) -> String {
    let mut dir: PathBuf = paths::lxcpath(root);
    if dir.is_relative() {
        if let Ok(cwd) = std::env::current_dir() {
            dir = cwd.join(dir);
        }
    }
    format!("@{}/{vmid}/command", dir.display())
}

/// True when the container's lxc monitor command socket exists, like pve-container
/// `PVE::LXC::check_running` (which greps `/proc/net/unix` for `\0/var/lib/lxc/<vmid>/command`).
///
/// Abstract sockets are per network namespace, so this sees only containers whose `lxc-start`
/// ran in the caller's network namespace. An unreadable `/proc/net/unix` counts as not running.
pub fn is_running(root: &Path, vmid: Vmid) -> bool {
    let want = format!(" {}", command_socket_name(root, vmid));
    std::fs::read_to_string("/proc/net/unix")
        .map(|t| t.lines().any(|l| l.ends_with(&want)))
        .unwrap_or(false)
}

/// The inode of the container's lxc monitor command socket (column `Inode` of its listening
/// row in `/proc/net/unix`, the one with `__SO_ACCEPTCON` = `00010000` in `Flags`): it names
/// one run of the monitor, so it changes with every `pct start` and stays the same across an
/// in-guest reboot (lxc restarts the container inside the same monitor). `None` when the
/// container is not running ([`is_running`]).
pub fn monitor_instance(root: &Path, vmid: Vmid) -> Option<u64> {
    let want = format!(" {}", command_socket_name(root, vmid));
    let t = std::fs::read_to_string("/proc/net/unix").ok()?;
    let rows: Vec<Vec<&str>> = t
        .lines()
        .filter(|l| l.ends_with(&want))
        .map(|l| l.split_whitespace().collect())
        .collect();
    let listening = rows
        .iter()
        .find(|w| w.get(3) == Some(&"00010000"))
        .or(rows.first())?;
    listening.get(6)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_name_and_not_running() {
        let v: Vmid = "100".parse().unwrap();
        assert_eq!(
            command_socket_name(Path::new("/"), v),
            "@/var/lib/lxc/100/command"
        );
        assert!(!is_running(Path::new("/nonexistent-root-for-test"), v));
    }

    #[test]
    fn sees_a_listening_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let dir = tempfile::tempdir().unwrap();
        let v: Vmid = "4242".parse().unwrap();
        let name = command_socket_name(dir.path(), v);
        let addr =
            std::os::unix::net::SocketAddr::from_abstract_name(&name.as_bytes()[1..]).unwrap();
        let l = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();
        assert!(is_running(dir.path(), v));
        let ino = monitor_instance(dir.path(), v).expect("an inode");
        {
            use std::os::unix::fs::MetadataExt;
            use std::os::unix::io::AsRawFd;
            let m = std::fs::metadata(format!("/proc/self/fd/{}", l.as_raw_fd())).unwrap();
            assert_eq!(m.ino(), ino, "the listening socket's inode");
        }
        // A client connected to it adds rows of the same path; the listener's inode wins.
        {
            let _c = std::os::unix::net::UnixStream::connect_addr(&addr).unwrap();
            let _s = l.accept().unwrap();
            assert_eq!(monitor_instance(dir.path(), v), Some(ino));
        }
        drop(l);
        assert!(!is_running(dir.path(), v));
    }
}
