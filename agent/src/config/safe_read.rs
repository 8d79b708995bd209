//! Reading the files that decide what op-agent (running as root) does, after checking who may
//! have written them: owner root (or the effective user), not writable by group or others, in a
//! folder only root can write to (or a sticky one).

use super::ConfigError;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Reads `path` after checking ownership and mode; `Ok(None)` when it does not exist.
///
/// Checked, since op-agent runs as root and these files decide what it does: the file (after
/// following a symlink) and the symlink itself must be owned by root (or the effective user),
/// the file must not be writable by group or others, and the folder holding it (and the
/// folder holding the link target) must not be writable by group or others unless it has the
/// sticky bit: otherwise anyone could swap the file for another.
pub fn read_checked(path: &Path) -> Result<Option<String>, ConfigError> {
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
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ConfigError::file(path, format!("cannot read: {e}"))),
    };
    check_owner_mode(path, &meta)?;
    std::fs::read_to_string(path)
        .map(Some)
        .map_err(|e| ConfigError::file(path, format!("cannot read: {e}")))
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
