//! Reading the files that decide what op-agent (running as root) does, after checking who may
//! have written them: owner root (or the effective user), not writable by group or others, in a
//! folder only root can write to (or a sticky one).

use super::ConfigError;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Reads `path` after checking ownership, mode and type; `Ok(None)` when it does not exist.
///
/// Never blocks on the file: it is opened with `O_NONBLOCK` and anything but a regular file
/// (a FIFO, socket, device or directory, also behind a symlink) is refused (exit 77) with one
/// line naming it.
///
/// Checked, since op-agent runs as root and these files decide what it does: the file (after
/// following a symlink) and the symlink itself must be owned by root (or the effective user),
/// the file must not be writable by group or others, and the folder holding it (and the
/// folder holding the link target) must not be writable by group or others unless it has the
/// sticky bit: otherwise anyone could swap the file for another.
pub fn read_checked(path: &Path) -> Result<Option<String>, ConfigError> {
    match read_checked_bytes(path)? {
        None => Ok(None),
        Some(b) => String::from_utf8(b).map(Some).map_err(|e| {
            ConfigError::file(
                path,
                format!(
                    "cannot read: not UTF-8 (byte {} is invalid)",
                    e.utf8_error().valid_up_to()
                ),
            )
        }),
    }
}

/// [`read_checked`] without the UTF-8 requirement: the bytes, for a PVE conf (PVE's
/// `parse_pct_config` reads bytes, and a Latin-1 comment written by hand is no error there).
pub fn read_checked_bytes(path: &Path) -> Result<Option<Vec<u8>>, ConfigError> {
    let lmeta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ConfigError::file(path, format!("cannot read: {e}"))),
    };
    if let Some(dir) = path.parent() {
        check_dir(path, dir)?;
    }
    if lmeta.file_type().is_symlink() {
        check_owner(
            path,
            lmeta.uid(),
            "the symlink is ",
            &format!("chown -h root:root {}", path.display()),
        )?;
        let target = std::fs::canonicalize(path)
            .map_err(|e| ConfigError::file(path, format!("cannot read: {e}")))?;
        if let Some(dir) = target.parent() {
            check_dir(path, dir)?;
        }
    }
    // Opened without blocking (a FIFO would otherwise wait for a writer, for ever), then
    // checked on the open file: what is read is what was checked.
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        // A socket cannot be opened (ENXIO): refused by its kind, like a FIFO.
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
            if let Ok(m) = std::fs::metadata(path) {
                check_regular(path, &m)?;
            }
            return Err(ConfigError::file(path, format!("cannot read: {e}")));
        }
        Err(e) => return Err(ConfigError::file(path, format!("cannot read: {e}"))),
    };
    let meta = file
        .metadata()
        .map_err(|e| ConfigError::file(path, format!("cannot read: {e}")))?;
    check_regular(path, &meta)?;
    check_owner_mode(path, &meta)?;
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(ConfigError::file(
            path,
            format!(
                "refused: {} bytes, more than a config file can hold ({MAX_CONFIG_BYTES}); \
                 replace it with the real file",
                meta.len()
            ),
        )
        .refusal());
    }
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(&file, MAX_CONFIG_BYTES),
        &mut bytes,
    )
    .map(|_| Some(bytes))
    .map_err(|e| ConfigError::file(path, format!("cannot read: {e}")))
}

/// The largest config file read (bytes): 16 MiB, far above any agent.toml, container TOML or
/// PVE conf (pmxcfs holds files of at most 1 MiB), so a huge or sparse file is refused with
/// one line instead of being read into memory.
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// Refuses anything but a regular file (after following a symlink): a FIFO, a socket or a
/// device could block a reader or feed it endless data.
pub fn check_regular(path: &Path, meta: &std::fs::Metadata) -> Result<(), ConfigError> {
    let ft = meta.file_type();
    if ft.is_file() {
        return Ok(());
    }
    let what = crate::file_kind::describe(&ft);
    Err(ConfigError::file(
        path,
        format!("refused: {what}, not a regular file; replace it with a regular file"),
    )
    .refusal())
}

/// Refuses `uid` unless it is root or the effective user; `what` names the object ("owned by
/// uid …" follows) and `fix` is the command to print.
fn check_owner(path: &Path, uid: u32, what: &str, fix: &str) -> Result<(), ConfigError> {
    let euid = nix::unistd::geteuid().as_raw();
    if uid != 0 && uid != euid {
        return Err(ConfigError::file(
            path,
            format!("refused: {what}owned by uid {uid}, not root; fix: {fix}"),
        )
        .refusal());
    }
    Ok(())
}

/// The folder `dir` holding `path` must be owned by root and not writable by group or others
/// (unless sticky).
fn check_dir(path: &Path, dir: &Path) -> Result<(), ConfigError> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let Ok(m) = std::fs::metadata(dir) else {
        return Ok(());
    };
    check_owner(
        path,
        m.uid(),
        &format!("its folder {} is ", dir.display()),
        &format!("chown root:root {}", dir.display()),
    )?;
    let mode = m.mode() & 0o7777;
    if mode & 0o022 != 0 && mode & 0o1000 == 0 {
        return Err(ConfigError::file(
            path,
            format!(
                "refused: its folder {} is writable by group or others (mode {mode:04o}); fix: chmod go-w {}",
                dir.display(),
                dir.display()
            ),
        )
        .refusal());
    }
    Ok(())
}

/// Refuses a file not owned by root (or the effective user) or writable by group or others.
pub fn check_owner_mode(path: &Path, meta: &std::fs::Metadata) -> Result<(), ConfigError> {
    check_owner(
        path,
        meta.uid(),
        "",
        &format!("chown root:root {}", path.display()),
    )?;
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(ConfigError::file(
            path,
            format!(
                "refused: writable by group or others (mode {mode:04o}); fix: chmod go-w {}",
                path.display()
            ),
        )
        .refusal());
    }
    Ok(())
}
