//! The watch worker's retry state: which containers are in retry, at which attempt, with which
//! last error, written by the worker after every change and read by `op-agent status`.
//!
//! File: `<[pve] root>/run/op-agent/watch-retry.json`, one JSON object
//! `{"<vmid>": {"attempt": n, "last_error": "...", "next_ms": ms}}` (`next_ms`: milliseconds
//! since the Unix epoch when the next attempt is due). Replaced atomically (a temp file in the
//! same directory, then rename(2)), so a reader sees the old or the new state, never a part.

use crate::config::AgentConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// First retry delay of a failed run.
pub const BACKOFF_FIRST: Duration = Duration::from_millis(250);

/// Longest retry delay: the backoff doubles from [`BACKOFF_FIRST`] up to this and stays there.
pub const BACKOFF_CAP: Duration = Duration::from_secs(30);

/// The delay before retry number `attempt` (1-based): 250 ms doubling, capped at 30 s.
pub fn backoff(attempt: u32) -> Duration {
    let shift = attempt.saturating_sub(1).min(16);
    (BACKOFF_FIRST * (1u32 << shift)).min(BACKOFF_CAP)
}

/// One container in retry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    /// Failed attempts so far (1 after the first failure).
    pub attempt: u32,
    /// The last failure, one line.
    pub last_error: String,
    /// When the next attempt is due, milliseconds since the Unix epoch.
    pub next_ms: u64,
}

/// The retry state, by vmid.
pub type State = BTreeMap<u32, Entry>;

/// `<[pve] root>/run/op-agent/watch-retry.json`.
pub fn path(cfg: &AgentConfig) -> PathBuf {
    cfg.toml.pve.root.join("run/op-agent/watch-retry.json")
}

/// Milliseconds since the Unix epoch, `after` from now.
pub fn epoch_ms_after(after: Duration) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from((now + after).as_millis()).unwrap_or(u64::MAX)
}

/// Replaces the file at `path` with `state` (temp file + rename). Errors are the I/O error of
/// creating the directory, writing or renaming.
pub fn write(path: &Path, state: &State) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let text = serde_json::to_vec(state).map_err(std::io::Error::other)?;
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp.{}", std::process::id()));
    let tmp = dir.join(name);
    let r = std::fs::write(&tmp, &text).and_then(|()| std::fs::rename(&tmp, path));
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

/// The state at `path`; empty when the file is absent or unreadable (no watch running, or
/// nothing in retry). Only a regular file is opened (a FIFO would block the reader).
pub fn read(path: &Path) -> State {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_file() => {}
        _ => return State::new(),
    }
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_then_stays_at_the_cap() {
        assert_eq!(backoff(1), Duration::from_millis(250));
        assert_eq!(backoff(2), Duration::from_millis(500));
        assert_eq!(backoff(7), Duration::from_secs(16));
        assert_eq!(backoff(8), BACKOFF_CAP);
        assert_eq!(backoff(1000), BACKOFF_CAP);
    }

    #[test]
    fn state_round_trips_through_the_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("run/op-agent/watch-retry.json");
        assert!(read(&p).is_empty());
        let mut s = State::new();
        s.insert(
            100,
            Entry {
                attempt: 3,
                last_error: "no bridge ovsbr0".into(),
                next_ms: 5,
            },
        );
        write(&p, &s).unwrap();
        assert_eq!(read(&p), s);
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains("\"100\":{\"attempt\":3"), "{text}");
    }
}
