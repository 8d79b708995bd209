//! The `op-agent watch` service: keeps managed containers converged between hooks, from three
//! event sources, without polling while nothing happens.
//!
//! PVE calls no hook phase on an in-guest `reboot` (lxc-start's `reboot` restarts the container
//! inside the same monitor, so pve-container's pre-start/post-stop hooks run, but no hookscript
//! phase), on NIC hotplug (pve-container `PVE::LXC::update_net`) or after an OVS restart, yet
//! each of these recreates `veth<vmid>i<n>` or loses op-agent's rows; `ifreload -a` (ifupdown2
//! `addons/openvswitch.py`) deletes every port of a bridge that its stanza does not list, and a
//! failed live `pct set -netN` leaves a dead `veth<vmid>i<n>` Port row. The service:
//! - [`links`]: subscribes to rtnetlink link events (`RTNLGRP_LINK`); when a link named
//!   `veth<vmid>i<n>` appears (a new ifindex, or a link renamed to that name) for a managed
//!   vmid, it waits up to `plug_wait` until PVE has plugged it (an OVS Port of that name that
//!   ovs-vswitchd has processed, or a master), then converges the container; when the kernel
//!   dropped events (the socket buffer overran, `ENOBUFS`), it re-lists every link;
//! - [`ovsdb_monitor`]: keeps a `monitor` (RFC 7047 §4.1.5) of the Bridge, Port and Interface
//!   tables; every (re)connect reconciles every managed running container (reconnecting with
//!   exponential backoff, 100 ms doubling to 2 s, warning once and then at most once a minute
//!   while OVSDB stays unreachable, [`warn_limit`]); an owned Port deleted or changed by someone
//!   else, a dead PVE-named row next to op-agent's link, or a bridge that appears makes the
//!   containers concerned due ([`decide`]);
//! - [`conf`]: follows the PVE confs of this node and the container TOMLs (inotify, plus a slow
//!   scan for changes replicated from other nodes); a changed conf of a managed running
//!   container is read under PVE's config lock, then the container converges: a `netN` PVE
//!   removed loses op-agent's link and Port, a changed tag/trunks/bridge/mtu/link_down is
//!   applied, a NIC PVE hot-added is renamed and plugged once its `netN` is in the conf;
//! - [`worker`]: converges what is due within a short window (50 ms after the last request,
//!   at most 500 ms) as one batch through the engine ([`crate::engine::converge_batch`]:
//!   post-start steps, audit `phase` = `watch`, two waits for ovs-vswitchd per batch),
//!   retrying a failed container with backoff (250 ms doubling, capped at 30 s) for as long
//!   as it runs and is managed, at once when an event concerns it or, for a run the audit log
//!   could not record (a full disk), when free space is back ([`disk_space`]), and writing the containers
//!   in retry for `op-agent status` ([`retry`]); it takes the per-vmid lock the hooks take ([`crate::engine::converge`]),
//!   so a hook and the service never work on one container at once;
//! - [`metrics`]: with `[metrics] textfile` in agent.toml, writes the text of `op-agent metrics`
//!   there every `interval_s`, replacing the file atomically;
//! - [`notify`]: tells systemd `READY=1` once its sources are up, pings its watchdog while the
//!   worker is not stuck in a run, and says `STOPPING=1`;
//! - [`crate::witness::service`]: publishes this node's audit chain head to
//!   `/etc/pve/op-agent/heads/<node>.json` and records the other nodes' heads as witness rows
//!   (`[witness]` in agent.toml);
//! - holds `<pve root>/run/op-agent/watch.lock` while it runs: a second `watch` on the host
//!   refuses to start (exit 77), since two would double every repair;
//! - on SIGTERM or SIGINT starts no new run, lets the run or batch in progress finish or roll
//!   back (bounded by `[hook] deadline_ms`), then exits 0 ([`stop_limit`]).
//!
//! Runs are executed on the worker thread (each builds its own runtime, like a hook); the event
//! loop runs on a current-thread tokio runtime.

pub mod conf;
pub mod decide;
pub mod disk_space;
pub mod heap;
pub mod links;
pub mod metrics;
pub mod notify;
pub mod ovsdb_monitor;
pub mod retry;
pub mod warn_limit;
pub mod worker;

use crate::config::AgentConfig;
use crate::exit::ExitCode;
use crate::inspect;
use crate::netlink::{Link, Netlink};
use futures_util::StreamExt;
use rtnetlink::packet_core::NetlinkPayload;
use rtnetlink::packet_route::RouteNetlinkMessage;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use worker::Job;

/// Tunables of the service.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Longest wait for PVE to plug a new veth before converging anyway (default 2000 ms).
    pub plug_wait: Duration,
    /// Interval of the OVSDB `echo` probe (RFC 7047 §4.1.11) that detects a server that stopped
    /// answering (a closed connection is noticed at once without it); zero disables it
    /// (default 5000 ms).
    pub probe: Duration,
    /// The PVE conf watch ([`conf`]).
    pub conf: conf::ConfOptions,
    /// Receive buffer of the link-event socket, bytes ([`links::EVENT_RCVBUF_KIB`]).
    pub event_rcvbuf: usize,
    /// Converge what is due at once as one batch ([`crate::engine::converge_batch`]); false:
    /// one container at a time (`watch --no-batch`, for comparison in `make bench`).
    pub batch: bool,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            plug_wait: Duration::from_millis(2000),
            probe: Duration::from_millis(5000),
            conf: conf::ConfOptions::default(),
            event_rcvbuf: links::EVENT_RCVBUF_KIB * 1024,
            batch: true,
        }
    }
}

/// Runs the service until SIGTERM/SIGINT. Returns `Ok` on a clean stop; errors (no netlink
/// socket, no signal handler, no runtime) are one line.
pub fn serve(cfg: AgentConfig, opts: WatchOptions) -> Result<(), String> {
    heap::limit_arenas();
    let (tx, rx) = mpsc::channel::<Job>();
    let wcfg = cfg.clone();
    let lock_wait = opts.conf.lock_timeout;
    let batch = opts.batch;
    let stop = Arc::new(AtomicBool::new(false));
    let wstop = stop.clone();
    let heartbeat = notify::Heartbeat::default();
    let whb = heartbeat.clone();
    let worker = std::thread::Builder::new()
        .name("op-agent-watch-worker".into())
        .spawn(move || worker::worker(wcfg, rx, lock_wait, batch, wstop, whb))
        .map_err(|e| format!("cannot start the worker thread: {e}"))?;
    // Detached: it only sleeps in poll(2) or waits for a lock (bounded), and ends with the
    // process.
    conf::spawn(cfg.clone(), opts.conf.clone(), tx.clone())
        .map_err(|e| format!("cannot start the conf watch thread: {e}"))?;
    // Detached as well: it sleeps in poll(2) between rounds of short file reads and one
    // audit append (bounded by the busy timeout).
    crate::witness::service::spawn(&cfg, opts.conf.inotify)
        .map_err(|e| format!("cannot start the witness thread: {e}"))?;
    let textfile = metrics::spawn(&cfg)
        .map_err(|e| format!("cannot start the metrics textfile thread: {e}"))?;
    let rt = inspect::runtime().map_err(|e| e.to_string())?;
    let r = rt.block_on(event_loop(&cfg, &opts, tx.clone(), &heartbeat));
    // First: no new run or batch starts from now on (the worker checks before each).
    stop.store(true, Ordering::SeqCst);
    let _ = tx.send(Job::Stop);
    let t = Instant::now();
    if let Some(t) = textfile {
        t.stop(Duration::from_secs(3));
    }
    drop(rt);
    let limit = stop_limit(cfg.toml.hook.deadline_ms);
    while !worker.is_finished() && t.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(10));
    }
    if worker.is_finished() {
        // No service, no retry: `status` must not show a stopped service's retries.
        let _ = std::fs::remove_file(retry::path(&cfg));
    } else {
        log::error!(
            "watch: the worker did not stop within {} ms",
            limit.as_millis()
        );
    }
    r
}

/// Margin of [`stop_limit`] over the run's deadline: the audit rows after the deadline, the
/// per-vmid and PVE config locks taken before a run (at most 250 ms each) and joining threads.
pub const STOP_MARGIN: Duration = Duration::from_secs(5);

/// How long the service waits on SIGTERM for the run (or batch) in progress: its deadline
/// (`deadline_ms`, which a rollback also fits in: [`crate::engine::Budget::Rollback`]), plus
/// a quarter of it again as a reserve (a batch's rollback starts at the latest a sixth before
/// its deadline, [`crate::engine::deadline::Budget::Batch`], and ends within it), plus
/// [`STOP_MARGIN`]. With the default `deadline_ms` of
/// 10 000: 17.5 s; debian/op-agent.service's `TimeoutStopSec` covers it.
pub fn stop_limit(deadline_ms: u64) -> Duration {
    let d = Duration::from_millis(deadline_ms);
    d + d / 4 + STOP_MARGIN
}

async fn event_loop(
    cfg: &AgentConfig,
    opts: &WatchOptions,
    tx: mpsc::Sender<Job>,
    heartbeat: &notify::Heartbeat,
) -> Result<(), String> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM handler: {e}"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT handler: {e}"))?;
    let (mut conn, _handle, mut events) =
        rtnetlink::new_multicast_connection(&[rtnetlink::MulticastGroup::Link])
            .map_err(|e| format!("netlink link-event socket: {e}"))?;
    links::size_buffer(&mut conn, opts.event_rcvbuf);
    tokio::spawn(conn);
    let nl = Netlink::connect().map_err(|e| format!("netlink socket: {e}"))?;
    // Links that exist now are covered by the start-up reconcile.
    let mut known: HashMap<u32, String> = HashMap::new();
    let plugs = links::Plugs::default();
    match nl.links().await {
        Ok(ls) => {
            for l in ls {
                if pve_integration::HostVeth::parse(&l.name).is_some() {
                    known.insert(l.index, l.name);
                }
            }
        }
        Err(e) => log::warn!("watch: cannot list links: {e}"),
    }
    let sup = tokio::spawn(ovsdb_monitor::supervise(
        cfg.clone(),
        nl.clone(),
        opts.probe,
        tx.clone(),
    ));
    log::info!(
        "watch: running (plug wait {} ms)",
        opts.plug_wait.as_millis()
    );
    notify::ready("watching links, OVSDB and PVE confs");
    // Watchdog pings while the worker is not stuck in a run ([`notify`]).
    let wd_every = notify::watchdog_interval();
    let mut wd = tokio::time::interval(wd_every.unwrap_or(Duration::from_secs(3600)));
    wd.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stuck_after = stop_limit(cfg.toml.hook.deadline_ms);
    let mut stuck_logged = false;
    let result = loop {
        tokio::select! {
            _ = term.recv() => { log::info!("watch: SIGTERM, stopping"); break Ok(()); }
            _ = int.recv() => { log::info!("watch: SIGINT, stopping"); break Ok(()); }
            _ = wd.tick(), if wd_every.is_some() => {
                let now = Instant::now();
                if heartbeat.alive(now, stuck_after) {
                    notify::watchdog();
                    stuck_logged = false;
                } else if !stuck_logged {
                    stuck_logged = true;
                    log::error!(
                        "watch: a run has lasted more than {} ms; no watchdog ping, systemd \
                         restarts the service",
                        stuck_after.as_millis()
                    );
                }
            }
            ev = events.next() => {
                let Some((msg, _)) = ev else {
                    break Err("netlink link-event socket closed".to_string());
                };
                match msg.payload {
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(m)) => {
                        let l = Link::from_notification(&m);
                        links::on_new_link(cfg, opts, &nl, &mut known, l, &tx, &plugs);
                    }
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(m)) => {
                        known.remove(&m.header.index);
                        let l = Link::from_notification(&m);
                        if let Some(v) = links::vmid_of_gone(&l.name) {
                            let _ = tx.send(Job::Rearm(v, "link gone"));
                        }
                    }
                    NetlinkPayload::Overrun(_) => {
                        links::resync(cfg, opts, &nl, &mut known, &tx, &plugs).await;
                    }
                    _ => {}
                }
            }
        }
    };
    notify::stopping();
    sup.abort();
    result
}

/// `op-agent watch` with `config` (`--config`): loads agent.toml, logs to syslog (stderr at
/// info level when syslog is unreachable) and serves until SIGTERM. Exit 0 on a clean stop,
/// 78 for a bad agent.toml, 70 when the service cannot start.
pub fn run(config: Option<&std::path::Path>, opts: WatchOptions, verbose: bool) -> ExitCode {
    crate::logging::init("op-agent", log::LevelFilter::Info, verbose);
    let cfg = match AgentConfig::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("op-agent watch: {e}");
            return e.exit_code();
        }
    };
    // One service per host: a second one would double every repair and race the first.
    let dir = cfg.toml.pve.root.join("run/op-agent");
    let path = dir.join("watch.lock");
    let _only = match crate::lock::lock_file(&dir, &path, Duration::ZERO) {
        Ok(l) => l,
        Err(crate::lock::LockError::Held { .. }) => {
            eprintln!(
                "op-agent watch: refused: another op-agent watch is running on this host (it \
                 holds {}); stop it first (systemctl stop op-agent)",
                path.display()
            );
            return ExitCode::Refused;
        }
        Err(e) => {
            eprintln!("op-agent watch: {e}");
            return ExitCode::Internal;
        }
    };
    match serve(cfg, opts) {
        Ok(()) => ExitCode::Ok,
        Err(e) => {
            eprintln!("op-agent watch: {e}");
            ExitCode::Internal
        }
    }
}

#[cfg(test)]
mod tests {
    use super::stop_limit;
    use std::time::Duration;

    #[test]
    fn the_units_stop_timeout_covers_the_default_stop_limit() {
        let unit = include_str!("../../../debian/op-agent.service");
        let secs: u64 = unit
            .lines()
            .find_map(|l| l.strip_prefix("TimeoutStopSec="))
            .and_then(|v| v.trim().strip_suffix('s'))
            .and_then(|v| v.parse().ok())
            .expect("TimeoutStopSec=<n>s in debian/op-agent.service");
        assert_eq!(stop_limit(10_000), Duration::from_millis(17_500));
        assert!(Duration::from_secs(secs) > stop_limit(10_000));
        assert!(Duration::from_secs(secs) > stop_limit(19_000));
    }
}
