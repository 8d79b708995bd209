//! Where PVE keeps things, under a relocatable root (`/` on a real host, a temp dir in tests).

use std::path::{Path, PathBuf};

use crate::ids::Vmid;

/// Why a volume id cannot be resolved to a snippet path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VolumeError {
    /// Not `<storage>:<volname>`.
    #[error("unable to parse volume ID '{0}'")]
    Syntax(String),
    /// A storage other than `local` (the only one the simulator and agent know).
    #[error("storage '{storage}' of '{volid}' is not supported: only 'local' (/var/lib/vz)")]
    Storage {
        /// The storage id found.
        storage: String,
        /// The whole volume id.
        volid: String,
    },
    /// The volume is not `snippets/NAME` with a plain `NAME` (PVE `check_hookscript`).
    #[error("'{0}' is not in the snippets directory")]
    NotSnippet(String),
}

/// `<root>/etc/pve/lxc/<vmid>.conf`: a container's PVE configuration
/// (pmxcfs symlinks `/etc/pve/lxc` to the local node's directory).
pub fn lxc_conf_path(root: &Path, vmid: Vmid) -> PathBuf {
    root.join("etc/pve/lxc").join(format!("{vmid}.conf"))
}

/// `<root>/etc/pve/op-agent/containers`: op-agent's cluster-wide container TOMLs. Under
/// `/etc/pve`, pmxcfs (pve-cluster `src/pmxcfs`) replicates them to every node, so a
/// container's TOML follows it when it migrates.
pub fn cluster_containers_dir(root: &Path) -> PathBuf {
    root.join("etc/pve/op-agent/containers")
}

/// `<root>/etc/pve/op-agent/containers/<vmid>.toml`, in [`cluster_containers_dir`].
pub fn cluster_container_toml(root: &Path, vmid: Vmid) -> PathBuf {
    cluster_containers_dir(root).join(format!("{vmid}.toml"))
}

/// `root` has no `etc/pve` directory: it is not the root of a PVE node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{shown:?} has no etc/pve", shown = .0.display().to_string())]
pub struct NotPveRoot(pub PathBuf);

/// Checks that `<root>/etc/pve` is a directory, as on every PVE node (the pmxcfs mount point,
/// pve-cluster `src/PVE/Cluster.pm` `$basedir`).
///
/// # Errors
/// [`NotPveRoot`] when it is missing or not a directory; it displays as
/// `"<root>" has no etc/pve`.
pub fn check_pve_root(root: &Path) -> Result<(), NotPveRoot> {
    if root.join("etc/pve").is_dir() {
        Ok(())
    } else {
        Err(NotPveRoot(root.to_path_buf()))
    }
}

/// `<root>/var/lib/lxc`: the lxcpath where PVE keeps each container's LXC `config`.
pub fn lxcpath(root: &Path) -> PathBuf {
    root.join("var/lib/lxc")
}

/// Resolves a hookscript volume id like PVE `check_hookscript` → `PVE::Storage::path` with
/// pve-storage `Plugin.pm` `parse_volname` (`^snippets/([^/]+)$`) on the `local` storage,
/// whose path is forced to `/var/lib/vz`: `local:snippets/NAME` → `<root>/var/lib/vz/snippets/NAME`.
///
/// Does not check that the file exists or is executable (the caller does, like PVE).
///
/// # Errors
/// [`VolumeError`] for a malformed id, another storage, another content type, or a `NAME`
/// that is empty, `.`/`..` or contains `/`.
pub fn resolve_volume(root: &Path, volid: &str) -> Result<PathBuf, VolumeError> {
    let shown = volid.escape_debug().to_string();
    let Some((storage, volname)) = volid.split_once(':') else {
        return Err(VolumeError::Syntax(shown));
    };
    if storage.is_empty() || volname.is_empty() {
        return Err(VolumeError::Syntax(shown));
    }
    if storage != "local" {
        return Err(VolumeError::Storage {
            storage: storage.escape_debug().to_string(),
            volid: shown,
        });
    }
    let name = volname
        .strip_prefix("snippets/")
        .filter(|n| {
            !n.is_empty() && !n.contains('/') && *n != "." && *n != ".." && !n.contains('\0')
        })
        .ok_or(VolumeError::NotSnippet(shown))?;
    Ok(root.join("var/lib/vz/snippets").join(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_under_root() {
        let v: Vmid = "100".parse().unwrap();
        assert_eq!(
            lxc_conf_path(Path::new("/"), v),
            PathBuf::from("/etc/pve/lxc/100.conf")
        );
        assert_eq!(
            lxc_conf_path(Path::new("/tmp/r"), v),
            PathBuf::from("/tmp/r/etc/pve/lxc/100.conf")
        );
        assert_eq!(lxcpath(Path::new("/")), PathBuf::from("/var/lib/lxc"));
        assert_eq!(
            resolve_volume(Path::new("/"), "local:snippets/op-hook").unwrap(),
            PathBuf::from("/var/lib/vz/snippets/op-hook")
        );
        assert_eq!(
            resolve_volume(Path::new("/r"), "local:snippets/hook.pl").unwrap(),
            PathBuf::from("/r/var/lib/vz/snippets/hook.pl")
        );
    }

    #[test]
    fn cluster_toml_and_pve_root() {
        let v: Vmid = "100".parse().unwrap();
        assert_eq!(
            cluster_container_toml(Path::new("/r"), v),
            PathBuf::from("/r/etc/pve/op-agent/containers/100.toml")
        );
        assert_eq!(
            cluster_containers_dir(Path::new("/")),
            PathBuf::from("/etc/pve/op-agent/containers")
        );
        let d = tempfile::tempdir().unwrap();
        let e = check_pve_root(d.path()).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("{:?} has no etc/pve", d.path().display().to_string())
        );
        std::fs::write(d.path().join("etc"), "").unwrap();
        assert!(check_pve_root(d.path()).is_err());
        std::fs::remove_file(d.path().join("etc")).unwrap();
        std::fs::create_dir_all(d.path().join("etc/pve")).unwrap();
        assert_eq!(check_pve_root(d.path()), Ok(()));
    }

    #[test]
    fn rejects_what_pve_rejects() {
        let r = Path::new("/");
        assert!(matches!(
            resolve_volume(r, "op-hook"),
            Err(VolumeError::Syntax(_))
        ));
        assert!(matches!(
            resolve_volume(r, "cephfs:snippets/x"),
            Err(VolumeError::Storage { .. })
        ));
        for bad in [
            "local:iso/x",
            "local:snippets/",
            "local:snippets/a/b",
            "local:snippets/..",
            "local:x",
        ] {
            let e = resolve_volume(r, bad).unwrap_err();
            assert!(matches!(e, VolumeError::NotSnippet(_)), "{bad}: {e}");
            assert!(e.to_string().contains("is not in the snippets directory"));
        }
    }
}
