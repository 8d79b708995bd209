//! PVE conf and container TOML events: inotify (`IN_MOVED_TO`, `IN_CLOSE_WRITE`, `IN_DELETE`,
//! `IN_MOVED_FROM`) on this node's conf directory and the two container TOML directories, plus a
//! slow poll (mtime/size/inode of every file) for what inotify does not deliver: pmxcfs only
//! reports writes made on this node, not changes replicated from other nodes (e.g. after a
//! migration). Without inotify the poll alone runs.
//!
//! Per changed vmid of a managed running container, the conf is read under PVE's config lock
//! (pve-guest-common `PVE::AbstractConfig::lock_config_full` → pve-common
//! `PVE::Tools::lock_file_full`: an exclusive flock on
//! `/run/lock/lxc/pve-config-<vmid>.lock`), so it is never read in the middle of a `pct set`;
//! then a converge is scheduled through the worker. A lock held longer than the timeout is
//! retried with backoff (200 ms doubling to 5 s), never skipped.
//!
//! Runs on its own thread (the lock wait blocks); idle, it sleeps in `poll(2)` until the next
//! event or the next scan.

use super::worker::Job;
use crate::config::AgentConfig;
use crate::inspect;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use pve_integration::{paths, Vmid};
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Tunables of the conf watch.
#[derive(Debug, Clone)]
pub struct ConfOptions {
    /// Use inotify (the poll alone runs without it).
    pub inotify: bool,
    /// Period of the fallback scan (default 10 s; at least 100 ms).
    pub poll: Duration,
    /// Longest wait for PVE's config lock per attempt (default 2 s).
    pub lock_timeout: Duration,
}

impl Default for ConfOptions {
    fn default() -> Self {
        ConfOptions {
            inotify: true,
            poll: Duration::from_secs(10),
            lock_timeout: Duration::from_secs(2),
        }
    }
}

/// Most files one scan looks at per directory (a bound, far above any node's containers).
const SCAN_LIMIT: usize = 100_000;

/// `PVE::INotify::nodename`: the host name up to its first dot.
pub fn nodename() -> String {
    let h = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    h.split('.').next().unwrap_or_default().to_string()
}

/// The directory holding this node's container confs. pmxcfs makes `<root>/etc/pve/lxc` a
/// symlink to `nodes/<nodename>/lxc` (pve-cluster `src/pmxcfs/pmxcfs.c`, `cfs_plug_link_new`),
/// and inotify is delivered for the directory the link points to: that one, or
/// `<root>/etc/pve/nodes/<node>/lxc` for a link that does not resolve; `<root>/etc/pve/lxc`
/// itself when it is a plain directory.
pub fn lxc_conf_dir(root: &Path, node: &str) -> PathBuf {
    let link = root.join("etc/pve/lxc");
    match std::fs::symlink_metadata(&link) {
        Ok(m) if m.file_type().is_symlink() => std::fs::canonicalize(&link)
            .unwrap_or_else(|_| root.join("etc/pve/nodes").join(node).join("lxc")),
        _ => link,
    }
}

/// A watched directory and the extension of its files (`conf`, `toml`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dir {
    /// The directory.
    pub path: PathBuf,
    /// Files `<vmid>.<ext>` count.
    pub ext: &'static str,
}

/// The directories the conf watch follows: this node's PVE confs and both container TOML
/// directories.
pub fn watched_dirs(cfg: &AgentConfig) -> Vec<Dir> {
    let root = &cfg.toml.pve.root;
    vec![
        Dir {
            path: lxc_conf_dir(root, &nodename()),
            ext: "conf",
        },
        Dir {
            path: paths::cluster_containers_dir(root),
            ext: "toml",
        },
        Dir {
            path: cfg.containers_dir(),
            ext: "toml",
        },
    ]
}

/// The vmid of a file `<vmid>.<ext>` (not PVE's `<vmid>.conf.tmp.<pid>`).
pub fn vmid_of(name: &std::ffi::OsStr, ext: &str) -> Option<Vmid> {
    let (stem, e) = name.to_str()?.split_once('.')?;
    (e == ext).then(|| stem.parse().ok())?
}

/// What one file looked like to a scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// mtime, ns since the epoch.
    pub mtime_ns: i128,
    /// Size, bytes.
    pub size: u64,
    /// Inode (a `rename()` over the file changes it).
    pub ino: u64,
}

/// One scan: every `<vmid>.<ext>` of `dirs` (missing directories are empty).
pub type Scan = BTreeMap<(usize, Vmid), Stamp>;

/// Stats every file of `dirs` (at most `SCAN_LIMIT` entries per directory).
pub fn scan(dirs: &[Dir]) -> Scan {
    let mut out = Scan::new();
    for (i, d) in dirs.iter().enumerate() {
        let Ok(rd) = std::fs::read_dir(&d.path) else {
            continue;
        };
        for e in rd.take(SCAN_LIMIT).flatten() {
            let Some(v) = vmid_of(&e.file_name(), d.ext) else {
                continue;
            };
            if let Ok(m) = e.metadata() {
                let mtime_ns = i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec());
                out.insert(
                    (i, v),
                    Stamp {
                        mtime_ns,
                        size: m.size(),
                        ino: m.ino(),
                    },
                );
            }
        }
    }
    out
}

/// The vmids whose files differ between two scans (added, removed or changed).
pub fn changed(old: &Scan, new: &Scan) -> BTreeSet<Vmid> {
    let a = old.iter().filter(|(k, s)| new.get(k) != Some(s));
    let b = new.iter().filter(|(k, _)| !old.contains_key(k));
    a.chain(b).map(|((_, v), _)| *v).collect()
}

/// Sets up inotify on every existing directory of `dirs`; the watch descriptors' index into
/// `dirs`. `Err` when inotify itself is unavailable.
fn setup(dirs: &[Dir]) -> nix::Result<(Inotify, Vec<(nix::sys::inotify::WatchDescriptor, usize)>)> {
    let ino = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)?;
    let mask = AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_DELETE;
    let mut wds = Vec::new();
    for (i, d) in dirs.iter().enumerate() {
        match ino.add_watch(&d.path, mask) {
            Ok(wd) => wds.push((wd, i)),
            // A directory that does not exist (yet) is covered by the poll.
            Err(e) => log::info!(
                "watch: no inotify on {} ({e}); the poll covers it",
                d.path.display()
            ),
        }
    }
    Ok((ino, wds))
}

/// Starts the conf watch thread; it sends [`Job::One`] for each changed managed running
/// container.
pub fn spawn(
    cfg: AgentConfig,
    opts: ConfOptions,
    tx: mpsc::Sender<Job>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("op-agent-watch-conf".into())
        .spawn(move || run(&cfg, &opts, &tx))
}

fn run(cfg: &AgentConfig, opts: &ConfOptions, tx: &mpsc::Sender<Job>) {
    let dirs = watched_dirs(cfg);
    let poll = opts.poll.max(Duration::from_millis(100));
    let ino = match opts.inotify {
        false => {
            log::warn!(
                "watch: inotify disabled; PVE conf changes are seen by a scan every {} ms",
                poll.as_millis()
            );
            None
        }
        true => match setup(&dirs) {
            Ok(i) => Some(i),
            Err(e) => {
                log::warn!(
                    "watch: inotify unavailable ({e}); PVE conf changes are seen by a scan every {} ms",
                    poll.as_millis()
                );
                None
            }
        },
    };
    log::info!("watch: following PVE confs in {}", dirs[0].path.display());
    let mut last = scan(&dirs);
    let mut next_scan = Instant::now() + poll;
    let mut retry: BTreeMap<Vmid, (Instant, u32)> = BTreeMap::new();
    loop {
        let now = Instant::now();
        let wake = retry.values().map(|r| r.0).chain([next_scan]).min();
        let timeout = wake.unwrap_or(next_scan).saturating_duration_since(now);
        let mut due = BTreeSet::new();
        match &ino {
            Some((i, wds)) => {
                if wait_readable(i, timeout) {
                    due.extend(read_events(i, wds, &dirs));
                    // What inotify reported is not reported again by the next scan.
                    last = scan(&dirs);
                }
            }
            None => std::thread::sleep(timeout),
        }
        let now = Instant::now();
        if now >= next_scan {
            let s = scan(&dirs);
            due.extend(changed(&last, &s));
            last = s;
            next_scan = now + poll;
        }
        due.extend(retry.iter().filter(|(_, r)| r.0 <= now).map(|(v, _)| *v));
        for v in due {
            match handle(cfg, opts, v, tx) {
                Ok(()) => {
                    retry.remove(&v);
                }
                Err(e) => {
                    let attempt = retry.get(&v).map_or(0, |r| r.1) + 1;
                    let back = Duration::from_millis(200u64 << (attempt - 1).min(5))
                        .min(Duration::from_secs(5));
                    log::warn!("watch: {v}: {e}; retry in {} ms", back.as_millis());
                    retry.insert(v, (Instant::now() + back, attempt));
                }
            }
        }
    }
}

/// `poll(2)` on the inotify descriptor for at most `timeout`.
fn wait_readable(i: &Inotify, timeout: Duration) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let t = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
    let mut fds = [PollFd::new(i.as_fd(), PollFlags::POLLIN)];
    matches!(poll(&mut fds, t), Ok(n) if n > 0)
}

/// The vmids of the pending events; every vmid of every directory when the queue overflowed.
fn read_events(
    i: &Inotify,
    wds: &[(nix::sys::inotify::WatchDescriptor, usize)],
    dirs: &[Dir],
) -> BTreeSet<Vmid> {
    let mut out = BTreeSet::new();
    // Bounded: the queue is drained, then `EAGAIN` ends the loop.
    for _ in 0..1024 {
        let Ok(evs) = i.read_events() else { break };
        for ev in evs {
            if ev.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                out.extend(scan(dirs).keys().map(|(_, v)| *v));
                continue;
            }
            let Some((_, d)) = wds.iter().find(|(wd, _)| *wd == ev.wd) else {
                continue;
            };
            if let Some(v) = ev.name.as_deref().and_then(|n| vmid_of(n, dirs[*d].ext)) {
                out.insert(v);
            }
        }
    }
    out
}

/// One changed vmid: when it is a managed running container, its conf is read under PVE's
/// config lock and a converge is scheduled. `Err` (retry) when the lock was not free within
/// the timeout.
fn handle(
    cfg: &AgentConfig,
    opts: &ConfOptions,
    v: Vmid,
    tx: &mpsc::Sender<Job>,
) -> Result<(), String> {
    if !inspect::is_managed(cfg, v) || !inspect::is_running(cfg, v) {
        return Ok(());
    }
    let lock =
        super::worker::pve_config_lock(cfg, v, opts.lock_timeout).map_err(|e| e.to_string())?;
    match inspect::load_desired(cfg, v) {
        Ok(_) => {
            log::info!("watch: {v}: conf changed");
            let _ = tx.send(Job::One(v, "conf change"));
        }
        Err(e) => log::warn!("watch: {v}: conf changed but does not load: {e}"),
    }
    drop(lock);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    fn v(n: u32) -> Vmid {
        Vmid::new(n).unwrap()
    }

    #[test]
    fn only_vmid_files_count() {
        assert_eq!(vmid_of(OsStr::new("100.conf"), "conf"), Some(v(100)));
        assert_eq!(vmid_of(OsStr::new("100.conf.tmp.1234"), "conf"), None);
        assert_eq!(vmid_of(OsStr::new("100.toml"), "conf"), None);
        assert_eq!(vmid_of(OsStr::new("abc.conf"), "conf"), None);
        assert_eq!(vmid_of(OsStr::new("100.toml"), "toml"), Some(v(100)));
    }

    #[test]
    fn a_scan_sees_a_rename_over_a_change_an_add_and_a_delete() {
        let t = tempfile::tempdir().unwrap();
        let dirs = [
            Dir {
                path: t.path().join("lxc"),
                ext: "conf",
            },
            Dir {
                path: t.path().join("missing"),
                ext: "toml",
            },
        ];
        std::fs::create_dir(&dirs[0].path).unwrap();
        let f = |n: &str| dirs[0].path.join(n);
        std::fs::write(f("100.conf"), "a").unwrap();
        std::fs::write(f("101.conf"), "a").unwrap();
        std::fs::write(f("102.conf"), "a").unwrap();
        let s0 = scan(&dirs);
        assert_eq!(s0.len(), 3);
        assert!(changed(&s0, &scan(&dirs)).is_empty(), "nothing changed");
        // PVE's write: a temp file renamed over the conf, same size and maybe same mtime.
        std::fs::write(f("100.conf.tmp.7"), "b").unwrap();
        std::fs::rename(f("100.conf.tmp.7"), f("100.conf")).unwrap();
        std::fs::remove_file(f("101.conf")).unwrap();
        std::fs::write(f("103.conf"), "a").unwrap();
        let s1 = scan(&dirs);
        assert_eq!(
            changed(&s0, &s1),
            [v(100), v(101), v(103)].into_iter().collect()
        );
    }

    #[test]
    fn the_conf_dir_follows_pmxcfs_symlink_or_is_the_plain_directory() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        std::fs::create_dir_all(root.join("etc/pve")).unwrap();
        assert_eq!(lxc_conf_dir(root, "n1"), root.join("etc/pve/lxc"));
        std::os::unix::fs::symlink("nodes/n1/lxc", root.join("etc/pve/lxc")).unwrap();
        assert_eq!(
            lxc_conf_dir(root, "n1"),
            root.join("etc/pve/nodes/n1/lxc"),
            "dangling"
        );
        std::fs::create_dir_all(root.join("etc/pve/nodes/n1/lxc")).unwrap();
        assert_eq!(
            lxc_conf_dir(root, "n1"),
            std::fs::canonicalize(root.join("etc/pve/nodes/n1/lxc")).unwrap()
        );
    }

    #[test]
    fn inotify_reports_pves_rename_of_the_conf() {
        let t = tempfile::tempdir().unwrap();
        let dirs = [Dir {
            path: t.path().to_path_buf(),
            ext: "conf",
        }];
        let (i, wds) = setup(&dirs).unwrap();
        assert!(!wait_readable(&i, Duration::from_millis(10)));
        std::fs::write(t.path().join("100.conf.tmp.9"), "x").unwrap();
        std::fs::rename(t.path().join("100.conf.tmp.9"), t.path().join("100.conf")).unwrap();
        assert!(wait_readable(&i, Duration::from_secs(1)));
        assert_eq!(read_events(&i, &wds, &dirs), [v(100)].into_iter().collect());
    }
}
