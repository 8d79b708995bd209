//! The witness thread of `op-agent watch`: every `[witness] interval_s` (default 10 s), and at
//! once when inotify reports a change in the head folder (pmxcfs reports only writes made on
//! this node, hence the poll for the others'), it
//! 0. with the default folder, does nothing while pmxcfs is not mounted ([`pmxcfs_marker`]);
//! 1. reads the rows appended to this node's chain since the last look, learning its own
//!    witness rows and the epoch of keyed checkpoints ([`Follower`]);
//! 2. reads the other nodes' head files and appends one witness row per new head or
//!    contradiction ([`super::observe::Tracker`]), all in one transaction, then rewrites its
//!    seen file (`<node>.seen.json`, [`super::SeenFile`]: the last head of each peer witnessed);
//! 3. checks this node's own head file: bytes other than those it wrote are recorded once
//!    (`own-file-changed`, saying whether its chain holds the head named) and the file is
//!    written again two intervals later (so the other nodes see the edit before it is
//!    repaired);
//! 4. publishes this node's head when rows other than its own witness rows were appended
//!    since the last publication (a hook run, a watch run, a checkpoint) or at start, at most
//!    once per interval. A head that only grew by witness rows is not published on its own:
//!    otherwise each publication would make every peer append a row and publish in turn, for
//!    ever; those rows are covered by the next head published after a run.
//!
//! All of it runs off the hook's path: a hook never waits for the witness thread (both
//! append through SQLite's `BEGIN IMMEDIATE`, a witness transaction is one short commit).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use crate::audit::reader::{self, Rows};
use crate::audit::{now_ms, run_id, AuditLog, AuditOptions, Head, NewRow, Outcome, StoredRow};
use crate::config::AgentConfig;

use super::observe::{Event, Tracker};
use super::{head_path, heads_dir, node_name, parse, publish, read_peers, read_small, render};

/// What the thread knows of this node's own chain, kept up to date from the rows appended.
#[derive(Debug, Default)]
pub struct Follower {
    /// Last `seq` read.
    pub seen_seq: i64,
    /// Head after the last read.
    pub head: Option<Head>,
    /// Epoch of the last keyed checkpoint row (`phase` `checkpoint`, detail `{"epoch":E,…}`).
    pub epoch: Option<u64>,
    /// A row other than this node's witness rows was read since the last publication.
    pub run_rows: bool,
    /// Witness state learnt from the rows.
    pub tracker: Tracker,
}

impl Follower {
    /// Reads the rows of `db` after [`Follower::seen_seq`].
    ///
    /// # Errors
    /// The database cannot be read (a missing one is `Ok`: nothing yet).
    pub fn catch_up(&mut self, db: &Path) -> Result<(), String> {
        if !db.exists() {
            return Ok(());
        }
        let r = reader::open(db).map_err(|e| e.to_string())?;
        let after = self.seen_seq;
        let mut each = |row: &StoredRow| {
            self.seen_seq = row.seq;
            self.head = Some(Head {
                seq: row.seq,
                hash: row.hash,
            });
            if row.vmid == 0 && row.phase == "checkpoint" {
                let d: serde_json::Value = serde_json::from_str(&row.detail).unwrap_or_default();
                if let Some(e) = d["epoch"].as_u64() {
                    self.epoch = Some(e);
                }
            }
            if row.vmid == 0 && row.phase == super::PHASE {
                self.tracker.learn(row);
            } else {
                self.run_rows = true;
            }
            Ok(())
        };
        reader::for_each_row(&r.conn, db, Rows::After(after), &mut each).map_err(|e| e.to_string())
    }
}

/// Whether the chain of `db` holds `h` (a row at `h.seq` with `h.hash`).
fn chain_holds(db: &Path, h: Head) -> bool {
    let Ok(r) = reader::open(db) else {
        return false;
    };
    let mut found = false;
    let rows = Rows::Matching {
        vmid: None,
        since_ms: None,
        from_seq: Some(h.seq),
        to_seq: Some(h.seq),
    };
    let _ = reader::for_each_row(&r.conn, db, rows, &mut |row| {
        found = row.hash == h.hash;
        Ok(())
    });
    found
}

/// Starts the witness thread (detached: it sleeps in `poll(2)` and ends with the process);
/// `None` when `[witness] enabled = false`. `inotify` false (`watch --no-inotify`): the read
/// every interval alone follows the head files, as it does for pmxcfs writes made on other
/// nodes.
///
/// # Errors
/// The thread cannot be started.
pub fn spawn(
    cfg: &AgentConfig,
    inotify: bool,
) -> std::io::Result<Option<std::thread::JoinHandle<()>>> {
    if !cfg.toml.witness.enabled {
        return Ok(None);
    }
    let cfg = cfg.clone();
    std::thread::Builder::new()
        .name("op-agent-watch-witness".into())
        .spawn(move || run(&cfg, inotify))
        .map(Some)
}

struct State {
    me: String,
    dir: PathBuf,
    db: PathBuf,
    follow: Follower,
    log: Option<AuditLog>,
    /// The bytes this node last wrote to its own head file.
    written: Option<String>,
    /// The own file was found changed: write it again at this time.
    repair_at: Option<Instant>,
    /// The own file bytes already recorded as changed (recorded once).
    own_reported: Option<Result<Vec<u8>, String>>,
    /// With the default folder: pmxcfs' `.version`, whose absence means `/etc/pve` is not
    /// mounted (nothing is then read or written, so nothing lands under the mount point).
    mounted: Option<PathBuf>,
    /// Whether the missing mount was logged.
    unmounted_logged: bool,
}

/// `<pve root>/etc/pve/.version`: pmxcfs serves this file (pve-cluster `src/pmxcfs/pmxcfs.c`
/// plugs it in beside `.members` and `.vmlist`); a plain folder has none.
pub fn pmxcfs_marker(pve_root: &Path) -> PathBuf {
    pve_root.join("etc/pve/.version")
}

fn run(cfg: &AgentConfig, inotify: bool) {
    let interval = cfg.toml.witness.interval();
    let mut st = State {
        me: node_name(cfg),
        dir: heads_dir(cfg),
        db: cfg.toml.audit.database.clone(),
        follow: Follower::default(),
        log: None,
        written: None,
        repair_at: None,
        own_reported: None,
        mounted: match cfg.toml.witness.dir {
            Some(_) => None,
            None => Some(pmxcfs_marker(&cfg.toml.pve.root)),
        },
        unmounted_logged: false,
    };
    if !crate::config::is_node_name(&st.me) {
        log::warn!(
            "watch: witness: the host name gives no node name ({:?}): set [witness] node in agent.toml; no witnessing",
            st.me
        );
        return;
    }
    if st.mounted.as_ref().is_none_or(|m| m.exists()) {
        if let Err(e) = std::fs::create_dir_all(&st.dir) {
            log::warn!("watch: witness: cannot create {}: {e}", st.dir.display());
        }
    }
    let ino = match inotify {
        false => None,
        true => Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
            .and_then(|i| {
                let m = AddWatchFlags::IN_MOVED_TO
                    | AddWatchFlags::IN_CLOSE_WRITE
                    | AddWatchFlags::IN_DELETE;
                i.add_watch(&st.dir, m).map(|_| i)
            })
            .map_err(|e| {
                log::info!(
                    "watch: witness: no inotify on {} ({e}); the read every {} ms covers it",
                    st.dir.display(),
                    interval.as_millis()
                )
            })
            .ok(),
    };
    log::info!(
        "watch: witness: node {} publishes and reads heads in {} every {} ms",
        st.me,
        st.dir.display(),
        interval.as_millis()
    );
    let mut next_tick = Instant::now();
    loop {
        let wait = next_tick.saturating_duration_since(Instant::now());
        let event = match &ino {
            Some(i) => wait_readable(i, wait) && drain(i),
            None => {
                std::thread::sleep(wait);
                false
            }
        };
        let tick = Instant::now() >= next_tick;
        if tick {
            next_tick = Instant::now() + interval;
        }
        if event || tick {
            round(&mut st, interval, tick);
        }
    }
}

/// One round: catch up with the chain, witness the peers, check the own file, publish.
fn round(st: &mut State, interval: Duration, tick: bool) {
    if let Some(m) = st.mounted.as_ref().filter(|m| !m.exists()) {
        if !st.unmounted_logged {
            log::info!(
                "watch: witness: {} is missing (pmxcfs not mounted): no witnessing until it is",
                m.display()
            );
            st.unmounted_logged = true;
        }
        return;
    }
    if let Err(e) = st.follow.catch_up(&st.db) {
        log::warn!("watch: witness: {e}");
        return;
    }
    let mut events: Vec<Event> = read_peers(&st.dir, &st.me)
        .iter()
        .filter_map(|s| st.follow.tracker.observe(s))
        .collect();
    let now = Instant::now();
    if let Some(ev) = check_own(st, now, interval) {
        events.push(ev);
    }
    if !events.is_empty() {
        append(st, &events);
        if let Err(e) = st.follow.catch_up(&st.db) {
            log::warn!("watch: witness: {e}");
        }
    }
    let due_repair = st.repair_at.is_some_and(|t| now >= t);
    // Publications happen on ticks (one per interval at most) or to repair the own file.
    let due_run = tick && (st.follow.run_rows || st.written.is_none());
    if due_run || due_repair {
        publish_head(st);
    }
}

/// The own head file compared with what was written; an event when it names something else
/// (recorded once per content), scheduling the file to be written again.
fn check_own(st: &mut State, now: Instant, interval: Duration) -> Option<Event> {
    let written = st.written.as_ref()?;
    let content = read_small(&head_path(&st.dir, &st.me));
    if content.as_deref().ok() == Some(written.as_bytes()) {
        st.own_reported = None;
        return None;
    }
    if st.own_reported.as_ref() == Some(&content) {
        return None;
    }
    st.own_reported = Some(content.clone());
    // Two intervals: every peer reads the files at least once (each interval) before.
    st.repair_at = Some(now + interval * 2);
    let written_head = parse(&st.me, written.as_bytes()).ok().map(|(_, h)| h);
    let (found, reason) = match &content {
        Ok(b) => match parse(&st.me, b) {
            Ok((_, h)) if chain_holds(&st.db, h) => (
                Some(h),
                format!("this node's head file was replaced with {h}, an older head of its chain"),
            ),
            Ok((_, h)) => (
                Some(h),
                format!(
                    "this node's head file was replaced with {h}, which its chain does not hold"
                ),
            ),
            Err(e) => (None, format!("this node's head file was replaced: {e}")),
        },
        Err(e) => (None, format!("this node's head file cannot be read: {e}")),
    };
    Some(Event::Contradiction {
        node: st.me.clone(),
        kind: "own-file-changed",
        found,
        witnessed: written_head,
        reason,
    })
}

fn append(st: &mut State, events: &[Event]) {
    if st.log.is_none() {
        match AuditLog::open(&st.db, &AuditOptions::default()) {
            Ok(l) => st.log = Some(l),
            Err(e) => {
                log::warn!("watch: witness: cannot open the audit log: {e}");
                return;
            }
        }
    }
    let Some(log) = st.log.as_mut() else { return };
    let rid = run_id();
    let rows: Vec<(&'static str, bool, String)> = events.iter().map(|e| e.row(&st.me)).collect();
    let new: Vec<NewRow> = rows
        .iter()
        .map(|(step, ok, detail)| NewRow {
            vmid: 0,
            phase: super::PHASE,
            run_id: &rid,
            step,
            outcome: if *ok { Outcome::Ok } else { Outcome::Failed },
            detail,
        })
        .collect();
    for (_, ok, detail) in &rows {
        if *ok {
            log::debug!("watch: witness: {detail}");
        } else {
            log::warn!("watch: witness: contradiction: {detail}");
        }
    }
    if let Err(e) = log.append_all(&new) {
        log::warn!("watch: witness: cannot append witness rows: {e}");
        // The tracker already moved on; forget the files so the next round retries.
        st.follow.tracker = Tracker::default();
        st.follow.seen_seq = 0;
        return;
    }
    if events.iter().any(|e| matches!(e, Event::Head { .. })) {
        write_seen(st);
    }
}

/// Writes `<dir>/<me>.seen.json` from what the chain holds ([`super::SeenFile`]).
fn write_seen(st: &State) {
    let f = super::SeenFile {
        node: st.me.clone(),
        ts: now_ms(),
        seen: st
            .follow
            .tracker
            .all_witnessed()
            .into_iter()
            .map(|(n, h)| {
                let hash = crate::audit::encoding::hex(&h.hash);
                (n, super::SeenHead { seq: h.seq, hash })
            })
            .collect(),
    };
    let mut text = serde_json::to_string(&f).unwrap_or_default();
    text.push('\n');
    let name = format!("{}.seen.json", st.me);
    if let Err(e) = super::write_atomic(&st.dir, &name, &text) {
        log::warn!("watch: witness: {e}");
    }
}

fn publish_head(st: &mut State) {
    let Some(head) = st.follow.head else { return };
    let text = render(&st.me, head, now_ms(), st.follow.epoch);
    match publish(&st.dir, &st.me, &text) {
        Ok(()) => {
            st.written = Some(text);
            st.follow.run_rows = false;
            st.repair_at = None;
            st.own_reported = None;
        }
        Err(e) => log::warn!("watch: witness: {e}"),
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

/// Drains the inotify queue (bounded); true when any event was read.
fn drain(i: &Inotify) -> bool {
    let mut any = false;
    for _ in 0..1024 {
        match i.read_events() {
            Ok(evs) if !evs.is_empty() => any = true,
            _ => break,
        }
    }
    any
}
