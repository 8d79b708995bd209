//! Reading `/etc/pve/lxc/<vmid>.conf` without ever blocking, and the one question asked of it
//! before anything else: does it name op-agent's hookscript ([`enrolled_hookscript`])?

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use crate::conf::{parse_conf, ConfError, ConfErrorKind, PveConf};
use crate::ids::Vmid;
use crate::paths;

/// Reads `<root>/etc/pve/lxc/<vmid>.conf` ([`paths::lxc_conf_path`]) with [`read_conf_file`]
/// and parses it with [`parse_conf`].
///
/// # Errors
/// `Ok(None)` when the file does not exist; a [`ConfError`] (line 0, key `file`) for any
/// other I/O error or a file that is not a regular one, or the parse error.
pub fn read_conf(root: &Path, vmid: Vmid) -> Result<Option<PveConf>, ConfError> {
    let path = paths::lxc_conf_path(root, vmid);
    let name = path.display().to_string();
    match read_conf_file(&path)? {
        Some(bytes) => parse_conf(&bytes[..], &name).map(Some),
        None => Ok(None),
    }
}

/// Reads `path` whole, opened with `O_NONBLOCK` so that a FIFO never blocks the reader, and
/// only when it is a regular file (after following symlinks).
///
/// # Errors
/// `Ok(None)` when the file does not exist; a [`ConfError`] (line 0, key `file`, kind
/// [`ConfErrorKind::Io`]) for any other I/O error and for a FIFO, socket, device or folder.
pub fn read_conf_file(path: &Path) -> Result<Option<Vec<u8>>, ConfError> {
    match read_regular(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ConfError {
            file: path.display().to_string(),
            line: 0,
            key: "file".to_string(),
            kind: ConfErrorKind::Io(e.to_string()),
        }),
    }
}

/// Reads `path` whole without ever blocking: opened with `O_NONBLOCK`, and refused unless it is
/// a regular file (after following symlinks), so that a FIFO, socket or device left where a
/// config file belongs can neither hang the reader nor feed it endless data.
///
/// # Errors
/// The OS error of `open`/`read` (`NotFound` when the file does not exist), or
/// `InvalidInput` `refused: a FIFO, not a regular file` (socket, device, directory alike).
pub fn read_regular(path: &Path) -> std::io::Result<Vec<u8>> {
    let refused = |ft: std::fs::FileType| {
        let what = if ft.is_fifo() {
            "a FIFO"
        } else if ft.is_dir() {
            "a directory"
        } else if ft.is_socket() {
            "a socket"
        } else {
            "a device"
        };
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("refused: {what}, not a regular file"),
        )
    };
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path)
    {
        Ok(f) => f,
        // A socket cannot be opened (ENXIO): refused by its kind, like a FIFO.
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
            return Err(refused(std::fs::metadata(path)?.file_type()))
        }
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(refused(meta.file_type()));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "refused: {} bytes, more than a config file can hold ({MAX_FILE_BYTES})",
                meta.len()
            ),
        ));
    }
    let mut bytes = Vec::new();
    (&file).take(MAX_FILE_BYTES).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The largest file [`read_regular`] reads (bytes): 16 MiB, far above any PVE conf (pmxcfs
/// holds files of at most 1 MiB) or `/etc/network/interfaces`.
pub const MAX_FILE_BYTES: u64 = 16 << 20;

/// [`read_regular`] as UTF-8 text, like `std::fs::read_to_string`.
///
/// # Errors
/// Those of [`read_regular`], and `InvalidData` for bytes that are not UTF-8.
pub fn read_regular_text(path: &Path) -> std::io::Result<String> {
    String::from_utf8(read_regular(path)?).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "not UTF-8 (byte {} is invalid)",
                e.utf8_error().valid_up_to()
            ),
        )
    })
}

/// The `hookscript:` value of the main section of a container conf's `text`, scanned as
/// pve-container `PVE::LXC::Config::parse_pct_config` reads it: lines before the first
/// `[section]` header, key pattern `^([a-z][a-z_]*\d*):\s*(.+?)\s*$` (case-sensitive, so a
/// line with a byte order mark or `HOOKSCRIPT:` is not one), the last one wins (PVE's
/// `$conf->{$key} = $value`). Nothing else is checked: the answer must not depend on a bad
/// line elsewhere in the file.
///
/// PVE runs a guest's hookscript only when this value is set
/// (pve-guest-common `PVE::GuestHelpers::exec_hookscript`), so op-agent manages a container
/// only while this names its snippet ([`is_op_hook`]).
pub fn enrolled_hookscript(text: &[u8]) -> Option<String> {
    let mut found = None;
    for raw in text.split(|b| *b == b'\n') {
        let line = String::from_utf8_lossy(raw);
        let t = line.trim_end();
        if t.starts_with('[') && t.ends_with(']') {
            break;
        }
        if let Some(v) = line.strip_prefix("hookscript:") {
            let v = v.trim();
            if !v.is_empty() {
                found = Some(v.to_string());
            }
        }
    }
    found
}

/// True when `volid` is op-agent's hookscript on any storage: `<storage>:snippets/op-hook`
/// (`enroll` writes `local:snippets/op-hook`; a cluster may keep it on shared storage).
pub fn is_op_hook(volid: &str) -> bool {
    match volid.split_once(':') {
        Some((storage, vol)) => {
            !storage.is_empty()
                && storage
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c))
                && vol == crate::pct::HOOK_SNIPPET
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hookscript_of_the_main_section_only() {
        let h = |s: &str| enrolled_hookscript(s.as_bytes());
        assert_eq!(
            h("arch: amd64\nhookscript: local:snippets/op-hook\n").as_deref(),
            Some("local:snippets/op-hook")
        );
        assert_eq!(h("[snap]\nhookscript: local:snippets/op-hook\n"), None);
        assert_eq!(
            h("[pve:pending]\nhookscript: local:snippets/op-hook\n"),
            None
        );
        assert_eq!(h("\u{feff}hookscript: local:snippets/op-hook\n"), None);
        assert_eq!(h("HOOKSCRIPT: local:snippets/op-hook\n"), None);
        assert_eq!(
            h("net0: bogus\nhookscript: a:b\nhookscript: c:d\n").as_deref(),
            Some("c:d")
        );
        assert!(is_op_hook("local:snippets/op-hook"));
        assert!(is_op_hook("cephfs-1:snippets/op-hook"));
        assert!(!is_op_hook("local:snippets/other"));
        assert!(!is_op_hook("snippets/op-hook"));
        assert!(!is_op_hook("local:snippets/op-hook2"));
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("100.conf");
        let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = read_conf_file(&p).unwrap_err();
        assert!(e.to_string().contains("a FIFO, not a regular file"), "{e}");
        assert!(read_conf_file(&d.path().join("none")).unwrap().is_none());
    }

    #[test]
    fn a_socket_is_refused_by_its_kind() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("interfaces");
        let _l = std::os::unix::net::UnixListener::bind(&p).unwrap();
        let e = read_regular(&p).unwrap_err();
        assert!(e.to_string().contains("refused: a socket"), "{e}");
    }

    #[test]
    fn a_huge_sparse_file_is_refused_unread() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("interfaces");
        std::fs::File::create(&p)
            .unwrap()
            .set_len(50_000_000_000)
            .unwrap();
        let e = read_regular(&p).unwrap_err();
        assert!(
            e.to_string().contains("more than a config file can hold"),
            "{e}"
        );
    }
}
