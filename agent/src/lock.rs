//! Per-vmid lock shared by hooks, `apply` and `watch`: `flock(2)` on `<run dir>/<vmid>.lock`.
//! The kernel drops a flock when its holder dies, so a lock held by a dead process never blocks.

use nix::fcntl::{Flock, FlockArg};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A held per-vmid lock; released on drop.
pub struct VmidLock {
    _lock: Flock<File>,
    /// The lock file.
    pub path: PathBuf,
}

/// Why a lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("lock {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("lock {path}: still held by another op-agent after {ms} ms")]
    Timeout { path: PathBuf, ms: u64 },
    #[error("lock {path}: still held by another process after {ms} ms")]
    Held { path: PathBuf, ms: u64 },
}

/// Takes the exclusive lock for `vmid` under `dir` (created 0700), polling every 5 ms until
/// `timeout`.
pub fn lock_vmid(dir: &Path, vmid: u32, timeout: Duration) -> Result<VmidLock, LockError> {
    let path = dir.join(format!("{vmid}.lock"));
    lock_path(dir, path, timeout)?.map_err(|path| LockError::Timeout {
        path,
        ms: timeout.as_millis() as u64,
    })
}

/// Takes an exclusive flock on `path` (in `dir`, created if missing), polling every 5 ms until
/// `timeout`, as pve-common `PVE::Tools::lock_file_full` does with `$shared` = 0 (the mode of
/// pve-guest-common `lock_config_full`).
pub fn lock_file(dir: &Path, path: &Path, timeout: Duration) -> Result<VmidLock, LockError> {
    lock_path(dir, path.to_path_buf(), timeout)?.map_err(|path| LockError::Held {
        path,
        ms: timeout.as_millis() as u64,
    })
}

/// The lock, or `Ok(Err(path))` on timeout.
fn lock_path(
    dir: &Path,
    path: PathBuf,
    timeout: Duration,
) -> Result<Result<VmidLock, PathBuf>, LockError> {
    let io = |source| LockError::Io {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(io)?;
    let start = Instant::now();
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(Ok(VmidLock { _lock: lock, path })),
            Err((f, errno)) if errno == nix::errno::Errno::EWOULDBLOCK => {
                if start.elapsed() >= timeout {
                    return Ok(Err(path));
                }
                file = f;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((_, errno)) => return Err(io(std::io::Error::from(errno))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_times_out_then_succeeds_after_drop() {
        let dir = tempfile::tempdir().unwrap();
        let a = lock_vmid(dir.path(), 100, Duration::from_millis(10)).unwrap();
        let e = lock_vmid(dir.path(), 100, Duration::from_millis(30));
        assert!(matches!(e, Err(LockError::Timeout { .. })));
        assert!(lock_vmid(dir.path(), 101, Duration::from_millis(10)).is_ok());
        drop(a);
        assert!(lock_vmid(dir.path(), 100, Duration::from_millis(10)).is_ok());
    }
}
