//! Where the audit checkpoint key lives: `audit.key` beside the audit database (`[audit]
//! database`, default `/var/lib/op-agent/audit.db`, so `/var/lib/op-agent/audit.key`), with
//! its lock `audit.key.lock`. Every checkpoint rewrites the key (the ratchet of
//! [`crate::audit`]), so it is state, not configuration: under `/var/lib` it is writable with
//! `ProtectSystem=strict` and is removed with the log by a purge (debian/postrm).
//!
//! Earlier versions kept it beside agent.toml (`/etc/op-agent/audit.key`). [`key_file`]
//! moves such a key once, under its old lock, when the log it belongs to exists. A key at the
//! old place without a log is what a purge of those versions left behind: it belongs to a log
//! that is gone, so it is not used (using it would make every checkpoint report a rolled-back
//! log) and not deleted either.

use crate::config::AgentConfig;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// `audit.key` beside the audit database.
pub fn new_place(cfg: &AgentConfig) -> PathBuf {
    cfg.toml
        .audit
        .database
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join("audit.key")
}

/// `audit.key` beside agent.toml, where earlier versions kept it.
pub fn old_place(cfg: &AgentConfig) -> PathBuf {
    cfg.dir.join("audit.key")
}

fn lock_of(key: &Path) -> PathBuf {
    let mut s = key.as_os_str().to_os_string();
    s.push(".lock");
    PathBuf::from(s)
}

/// The key file to use ([`new_place`]), after moving a key from [`old_place`] there when the
/// audit database exists and no key is at the new place yet. When the move fails the old
/// place is returned (checkpoints go on as before) and a warning is logged.
pub fn key_file(cfg: &AgentConfig) -> PathBuf {
    let new = new_place(cfg);
    let old = old_place(cfg);
    if old == new || old.symlink_metadata().is_err() || new.symlink_metadata().is_ok() {
        return new;
    }
    if cfg.toml.audit.database.symlink_metadata().is_err() {
        return new;
    }
    match migrate(&old, &new) {
        Ok(()) => {
            log::info!("moved the audit key {} to {}", old.display(), new.display());
            new
        }
        Err(e) => {
            log::warn!(
                "cannot move the audit key {} to {}: {e}; still using {}",
                old.display(),
                new.display(),
                old.display()
            );
            old
        }
    }
}

/// Moves `old` to `new` under `old`'s lock (the lock checkpointers take), then removes the
/// old lock file: `rename(2)`, or across file systems a copy (0600, fsync) renamed into place
/// before `old` is removed. A concurrent mover finds `old` gone and does nothing.
///
/// # Errors
/// The I/O error of the step that failed; `old` is then still in place.
fn migrate(old: &Path, new: &Path) -> std::io::Result<()> {
    let old_lock = lock_of(old);
    let lock = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&old_lock)?;
    lock.lock()?;
    if old.symlink_metadata().is_err() || new.symlink_metadata().is_ok() {
        return Ok(()); // another process moved it while we waited
    }
    if let Err(e) = std::fs::rename(old, new) {
        if e.raw_os_error() != Some(libc::EXDEV) {
            return Err(e);
        }
        let text = std::fs::read(old)?;
        let tmp = lock_of(new).with_extension("move");
        let res = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&text)?;
            f.sync_all()?;
            std::fs::rename(&tmp, new)
        })();
        if let Err(e) = res {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        std::fs::remove_file(old)?;
    }
    if let Some(dir) = new.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    let _ = std::fs::remove_file(&old_lock);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AgentToml;

    fn cfg(etc: &Path, var: &Path) -> AgentConfig {
        let mut toml = AgentToml::default();
        toml.audit.database = var.join("audit.db");
        AgentConfig {
            path: etc.join("agent.toml"),
            dir: etc.to_path_buf(),
            toml,
        }
    }

    #[test]
    fn key_moves_once_with_its_log_and_a_stale_one_is_not_used() {
        let d = tempfile::tempdir().unwrap();
        let (etc, var) = (d.path().join("etc"), d.path().join("var"));
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::create_dir_all(&var).unwrap();
        let c = cfg(&etc, &var);
        // Fresh install: the new place, nothing moved.
        assert_eq!(key_file(&c), var.join("audit.key"));
        // An old key without a log (left by a purge): not used, not deleted.
        std::fs::write(etc.join("audit.key"), "k1\n").unwrap();
        assert_eq!(key_file(&c), var.join("audit.key"));
        assert!(etc.join("audit.key").exists() && !var.join("audit.key").exists());
        // With its log: moved, the old lock removed.
        std::fs::write(var.join("audit.db"), "").unwrap();
        std::fs::write(etc.join("audit.key.lock"), "").unwrap();
        assert_eq!(key_file(&c), var.join("audit.key"));
        assert_eq!(
            std::fs::read_to_string(var.join("audit.key")).unwrap(),
            "k1\n"
        );
        assert!(!etc.join("audit.key").exists());
        assert!(!etc.join("audit.key.lock").exists());
        // A later old file never replaces the key in place.
        std::fs::write(etc.join("audit.key"), "k2\n").unwrap();
        assert_eq!(key_file(&c), var.join("audit.key"));
        assert_eq!(
            std::fs::read_to_string(var.join("audit.key")).unwrap(),
            "k1\n"
        );
    }
}
