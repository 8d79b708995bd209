//! Free space on the audit log's file system, for retries that failed because the audit log
//! could not be written (a full disk): no event reports space coming back, so while such a
//! retry is pending the worker looks every [`POLL`] (`statvfs(3)`, no I/O on the disk) and
//! re-arms those retries at once when the free space grew by [`GREW`] or more, instead of
//! waiting out a backoff of up to 30 s.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// How often free space is looked at while a retry waits for it.
pub const POLL: Duration = Duration::from_millis(500);

/// Growth of free space, bytes, that counts as "space back" (an audit run needs a few pages).
pub const GREW: u64 = 64 * 1024;

/// The audit log's folder and the free space last seen there.
#[derive(Debug)]
pub struct DiskSpace {
    dir: PathBuf,
    last_free: Option<u64>,
}

impl DiskSpace {
    /// Watches the file system that holds the audit database `db`.
    pub fn new(db: &Path) -> DiskSpace {
        DiskSpace {
            dir: db.parent().unwrap_or(Path::new("/")).to_path_buf(),
            last_free: None,
        }
    }

    /// Bytes available to unprivileged writers there now (`None` when `statvfs` fails).
    fn free(&self) -> Option<u64> {
        nix::sys::statvfs::statvfs(&self.dir)
            .ok()
            .map(|v| v.blocks_available().saturating_mul(v.fragment_size()))
    }

    /// Forgets the last value (no retry waits for space any more).
    pub fn reset(&mut self) {
        self.last_free = None;
    }

    /// True when the free space grew by [`GREW`] or more since the last call (the first call
    /// only records it).
    pub fn space_back(&mut self) -> bool {
        let Some(now) = self.free() else {
            return false;
        };
        let back = grew(self.last_free, now);
        self.last_free = Some(now);
        back
    }
}

/// Whether free space `now` is at least [`GREW`] more than `before` (`None`: not seen yet).
fn grew(before: Option<u64>, now: u64) -> bool {
    before.is_some_and(|b| now >= b.saturating_add(GREW))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn space_back_is_growth_by_grew_or_more() {
        assert!(!grew(None, 1 << 30), "the first look only records");
        assert!(!grew(Some(0), GREW - 1));
        assert!(grew(Some(0), GREW));
        assert!(
            !grew(Some(10 << 20), 1 << 20),
            "less space is not space back"
        );
        let d = tempfile::tempdir().unwrap();
        let mut s = DiskSpace::new(&d.path().join("audit.db"));
        assert!(!s.space_back(), "the first real look only records");
        assert!(
            s.last_free.is_some(),
            "statvfs works on {}",
            d.path().display()
        );
    }
}
