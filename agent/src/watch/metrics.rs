//! The watch service's metrics textfile: when agent.toml has `[metrics] textfile`, a thread
//! writes the text of `op-agent metrics` ([`crate::metrics`]) there at start and then every
//! `interval_s`, for node_exporter's textfile collector.
//!
//! Each write goes to a temporary file in the same folder (`.<name>.tmp.<pid>`, created with
//! `O_EXCL`, so never through a link someone planted; node_exporter reads only `*.prom`),
//! which is flushed to disk and then renamed over the file: rename(2) replaces it atomically,
//! so a reader opens either the old or the new text, never a part. The audit rows are read
//! incrementally ([`crate::metrics::audit::AuditTally`]). The thread sleeps between writes
//! (on a channel, so the service wakes it to stop) and never polls.

use crate::config::AgentConfig;
use crate::metrics::{self, audit::AuditTally};
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The running textfile thread: dropping [`Textfile::stop`]'s sender wakes it.
pub struct Textfile {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

impl Textfile {
    /// Stops the thread after the write in progress (itself bounded by the audit database's
    /// 1 s busy timeout and one netlink dump), waiting at most `limit`.
    pub fn stop(self, limit: Duration) {
        drop(self.stop);
        let t = Instant::now();
        while !self.thread.is_finished() && t.elapsed() < limit {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Starts the thread when `cfg` has `[metrics] textfile`; `Ok(None)` otherwise.
///
/// # Errors
/// The thread could not be started.
pub fn spawn(cfg: &AgentConfig) -> std::io::Result<Option<Textfile>> {
    let Some(path) = cfg.toml.metrics.textfile.clone() else {
        return Ok(None);
    };
    let (stop, rx) = mpsc::channel::<()>();
    let cfg = cfg.clone();
    let thread = std::thread::Builder::new()
        .name("op-agent-watch-metrics".into())
        .spawn(move || run(cfg, path, rx))?;
    Ok(Some(Textfile { stop, thread }))
}

fn run(cfg: AgentConfig, path: PathBuf, stop: mpsc::Receiver<()>) {
    let interval = cfg.toml.metrics.interval();
    let rt = match crate::inspect::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            log::error!("watch: metrics textfile {}: {e}", path.display());
            return;
        }
    };
    log::info!(
        "watch: writing metrics to {} every {} ms",
        path.display(),
        interval.as_millis()
    );
    let mut tally = AuditTally::default();
    // The last problem logged, so that a lasting one is logged once, not every interval.
    let mut last_problem: Option<String> = None;
    loop {
        let t = Instant::now();
        let problem = match rt.block_on(metrics::gather(&cfg, &mut tally)) {
            Ok((text, audit)) => match write_atomic(&path, text.as_bytes()) {
                Ok(()) => audit.map(|e| format!("audit log not read: {e}")),
                Err(e) => Some(format!("cannot write it: {e}")),
            },
            Err(e) => Some(format!("no counters: {e}")),
        };
        if problem != last_problem {
            match &problem {
                Some(p) => log::warn!("watch: metrics textfile {}: {p}", path.display()),
                None if last_problem.is_some() => {
                    log::info!("watch: metrics textfile {}: written again", path.display())
                }
                None => {}
            }
            last_problem = problem;
        }
        match stop.recv_timeout(interval.saturating_sub(t.elapsed())) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
    }
}

/// Replaces `path` with `data` atomically: writes `.<name>.tmp.<pid>` beside it (mode 0644 set
/// with fchmod(2), whatever the umask; `O_EXCL | O_NOFOLLOW`), fsyncs it and renames it over `path`. On failure the temporary
/// file is removed and `path` is left as it was.
///
/// # Errors
/// The `io::Error` of the step that failed; `InvalidInput` for a path without a file name.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no file name"))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let tmp = dir.join(format!(
        ".{}.tmp.{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    // A leftover of a killed run of this pid (or a planted link) is removed, not followed.
    let _ = std::fs::remove_file(&tmp);
    let r = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        // 0644 whatever the umask (op-agent.service has `UMask=0077`): node_exporter reads
        // the file as its own user.
        f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("op_agent.prom");
        write_atomic(&p, b"a 1\n").unwrap();
        let ino = std::fs::metadata(&p).unwrap().ino();
        write_atomic(&p, b"a 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "a 2\n");
        let m = std::fs::metadata(&p).unwrap();
        assert_ne!(m.ino(), ino, "a new file, renamed over the old one");
        assert_eq!(m.mode() & 0o777, 0o644);
        let names: Vec<_> = std::fs::read_dir(d.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn a_planted_link_at_the_temporary_name_is_not_followed() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        let p = d.path().join("op_agent.prom");
        let tmp = d
            .path()
            .join(format!(".op_agent.prom.tmp.{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        write_atomic(&p, b"a 1\n").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "a 1\n");
    }

    #[test]
    fn a_missing_folder_is_an_error_and_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("no/op_agent.prom");
        assert!(write_atomic(&p, b"x").is_err());
        assert!(write_atomic(Path::new("/"), b"x").is_err());
    }
}
