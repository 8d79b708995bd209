//! The `op-agent watch` service: keeps managed containers converged between hooks.
//!
//! PVE calls no hook phase on an in-guest `reboot` (lxc-start's `reboot` restarts the container
//! inside the same monitor, so pve-container's pre-start/post-stop hooks run, but no hookscript
//! phase), on NIC hotplug (pve-container `PVE::LXC::update_net`) or after an OVS restart, yet each of these recreates `veth<vmid>i<n>` or loses op-agent's rows.
//! The service:
//! - subscribes to rtnetlink link events (`RTNLGRP_LINK`); when a link named `veth<vmid>i<n>`
//!   appears (a new ifindex, or a link renamed to that name) for a managed vmid, it waits up to
//!   `plug_wait` until PVE has plugged it (an OVS Port of that name that ovs-vswitchd has
//!   processed, or a master), then runs the post-start steps with audit `phase` = `watch`;
//! - reconciles every managed running container at start-up and whenever its OVSDB connection
//!   comes back after a loss (probed with RFC 7047 §4.1.11 `echo` every `probe`), reconnecting
//!   with exponential backoff (100 ms doubling to 2 s);
//! - retries a failed container with backoff (250 ms doubling to 4 s, 6 attempts);
//! - takes the per-vmid lock the hooks take ([`crate::engine::converge`]), so a hook and the
//!   service never work on one container at once;
//! - exits 0 on SIGTERM or SIGINT after the run in progress (itself bounded by
//!   `[hook] deadline_ms`).
//!
//! Runs are executed one at a time on a worker thread (each builds its own runtime, like a hook);
//! the event loop runs on a current-thread tokio runtime.

use crate::config::AgentConfig;
use crate::engine::{self, Phase, RunOptions};
use crate::exit::ExitCode;
use crate::inspect;
use crate::netlink::{Link, Netlink};
use crate::ovsdb::Client;
use futures_util::StreamExt;
use pve_integration::Vmid;
use rtnetlink::packet_core::NetlinkPayload;
use rtnetlink::packet_route::RouteNetlinkMessage;
use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Tunables of the service.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Longest wait for PVE to plug a new veth before converging anyway (default 2000 ms).
    pub plug_wait: Duration,
    /// Interval of the OVSDB liveness probe (default 500 ms).
    pub probe: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            plug_wait: Duration::from_millis(2000),
            probe: Duration::from_millis(500),
        }
    }
}

/// Work for the worker thread.
#[derive(Debug, Clone)]
enum Job {
    /// Converge one container (a link event).
    One(Vmid, &'static str),
    /// Converge every managed running container (start-up, OVSDB back).
    All(&'static str),
    Stop,
}

const MAX_ATTEMPTS: u32 = 6;

struct Pending {
    due: Instant,
    attempt: u32,
    why: &'static str,
}

/// The worker: runs post-start steps for due containers, one at a time, with retries.
fn worker(cfg: AgentConfig, rx: mpsc::Receiver<Job>) {
    let mut pending: BTreeMap<Vmid, Pending> = BTreeMap::new();
    let opts = RunOptions::default();
    loop {
        let now = Instant::now();
        let wait = pending
            .values()
            .map(|p| p.due.saturating_duration_since(now))
            .min()
            .unwrap_or(Duration::from_secs(3600));
        match rx.recv_timeout(wait) {
            Ok(Job::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
            Ok(Job::One(v, why)) => {
                pending.insert(
                    v,
                    Pending {
                        due: Instant::now(),
                        attempt: 0,
                        why,
                    },
                );
            }
            Ok(Job::All(why)) => {
                for v in inspect::managed(&cfg) {
                    if inspect::is_running(&cfg, v) {
                        pending.insert(
                            v,
                            Pending {
                                due: Instant::now(),
                                attempt: 0,
                                why,
                            },
                        );
                    }
                }
                log::info!("watch: reconcile all ({why}): {} running", pending.len());
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        let now = Instant::now();
        let due: Vec<Vmid> = pending
            .iter()
            .filter(|(_, p)| p.due <= now)
            .map(|(v, _)| *v)
            .collect();
        for v in due {
            let Some(p) = pending.remove(&v) else {
                continue;
            };
            let managed = match inspect::managed_one(&cfg, v) {
                Some(m) if inspect::is_running(&cfg, v) => m,
                _ => {
                    log::info!("watch: {v}: not managed or not running; nothing to do");
                    continue;
                }
            };
            let job = engine::Job {
                managed,
                phase: Phase::PostStart,
                label: "watch".into(),
                started: None,
            };
            let jobs = [job];
            let result = engine::converge(&cfg, &jobs, opts)
                .next()
                .map(|r| r.result)
                .unwrap_or(Ok(String::new()));
            match result {
                Ok(s) => log::info!("watch: {v} ({}): {s}", p.why),
                Err(e) => {
                    let attempt = p.attempt + 1;
                    if attempt >= MAX_ATTEMPTS {
                        log::error!(
                            "watch: {v} ({}): {}; giving up after {attempt} attempts",
                            p.why,
                            e
                        );
                        continue;
                    }
                    let back = Duration::from_millis(250u64 << (attempt - 1).min(4));
                    log::warn!(
                        "watch: {v} ({}): {}; retry in {} ms",
                        p.why,
                        e,
                        back.as_millis()
                    );
                    pending.entry(v).or_insert(Pending {
                        due: Instant::now() + back,
                        attempt,
                        why: p.why,
                    });
                }
            }
        }
    }
}

/// Waits until `name` (ifindex `index`) is plugged: an OVS Port of that name whose Interface
/// ovs-vswitchd has processed (ofport or error set), or a master. `false` when the link went
/// away or changed its name meanwhile (nothing to do); `true` after `limit` as well (a
/// `link_down=1` NIC is never plugged).
async fn wait_plugged(
    nl: &Netlink,
    socket: &std::path::Path,
    name: &str,
    index: u32,
    limit: Duration,
) -> bool {
    let deadline = Instant::now() + limit;
    let ovs = Client::connect(socket, limit).await.ok();
    loop {
        match nl.link_by_name(name).await {
            Ok(None) => return false,
            Ok(Some(l)) if l.index != index => return false,
            Ok(Some(l)) if l.master.is_some() => return true,
            _ => {}
        }
        if let Some(c) = &ovs {
            if let Ok(Some((ofport, error))) = c.interface_status(name).await {
                if ofport.is_some() || error.is_some() {
                    return true;
                }
            }
        }
        if Instant::now() >= deadline {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Keeps an OVSDB connection, probing it with `echo`; sends `Job::All` on every (re)connect.
async fn supervise_ovsdb(cfg: AgentConfig, probe: Duration, tx: mpsc::Sender<Job>) {
    let socket = cfg.toml.ovsdb.socket.clone();
    let timeout = Duration::from_millis(cfg.toml.ovsdb.timeout_ms).min(Duration::from_secs(2));
    let mut backoff = Duration::from_millis(100);
    let mut first = true;
    loop {
        match Client::connect(&socket, timeout).await {
            Ok(c) => {
                backoff = Duration::from_millis(100);
                let why = if first {
                    "start-up"
                } else {
                    "ovsdb reconnected"
                };
                log::info!("watch: OVSDB {} connected ({why})", socket.display());
                first = false;
                if tx.send(Job::All(why)).is_err() {
                    return;
                }
                loop {
                    tokio::time::sleep(probe).await;
                    let r = tokio::time::timeout(
                        timeout,
                        c.call("echo", serde_json::json!(["op-agent"])),
                    )
                    .await;
                    match r {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => {
                            log::warn!("watch: OVSDB lost: {e}; reconnecting");
                            break;
                        }
                        Err(_) => {
                            log::warn!(
                                "watch: OVSDB {}: no echo reply within {} ms; reconnecting",
                                socket.display(),
                                timeout.as_millis()
                            );
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                if first {
                    log::warn!("watch: {e}; retrying in {} ms", backoff.as_millis());
                } else {
                    log::debug!("watch: {e}; retrying in {} ms", backoff.as_millis());
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Runs the service until SIGTERM/SIGINT. Returns `Ok` on a clean stop; errors (no netlink
/// socket, no signal handler, no runtime) are one line.
pub fn serve(cfg: AgentConfig, opts: WatchOptions) -> Result<(), String> {
    let (tx, rx) = mpsc::channel::<Job>();
    let wcfg = cfg.clone();
    let worker = std::thread::Builder::new()
        .name("op-agent-watch-worker".into())
        .spawn(move || worker(wcfg, rx))
        .map_err(|e| format!("cannot start the worker thread: {e}"))?;
    let rt = inspect::runtime().map_err(|e| e.to_string())?;
    let r = rt.block_on(event_loop(&cfg, &opts, tx.clone()));
    let _ = tx.send(Job::Stop);
    drop(rt);
    // The run in progress is bounded by [hook] deadline_ms; wait that long plus a margin.
    let limit = Duration::from_millis(cfg.toml.hook.deadline_ms) + Duration::from_secs(2);
    let t = Instant::now();
    while !worker.is_finished() && t.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(10));
    }
    if !worker.is_finished() {
        log::error!(
            "watch: the worker did not stop within {} ms",
            limit.as_millis()
        );
    }
    r
}

async fn event_loop(
    cfg: &AgentConfig,
    opts: &WatchOptions,
    tx: mpsc::Sender<Job>,
) -> Result<(), String> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM handler: {e}"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT handler: {e}"))?;
    let (conn, _handle, mut events) =
        rtnetlink::new_multicast_connection(&[rtnetlink::MulticastGroup::Link])
            .map_err(|e| format!("netlink link-event socket: {e}"))?;
    tokio::spawn(conn);
    let nl = Netlink::connect().map_err(|e| format!("netlink socket: {e}"))?;
    // Links that exist now are covered by the start-up reconcile.
    let mut known: HashMap<u32, String> = HashMap::new();
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
    let sup = tokio::spawn(supervise_ovsdb(cfg.clone(), opts.probe, tx.clone()));
    log::info!(
        "watch: running (plug wait {} ms)",
        opts.plug_wait.as_millis()
    );
    let result = loop {
        tokio::select! {
            _ = term.recv() => { log::info!("watch: SIGTERM, stopping"); break Ok(()); }
            _ = int.recv() => { log::info!("watch: SIGINT, stopping"); break Ok(()); }
            ev = events.next() => {
                let Some((msg, _)) = ev else {
                    break Err("netlink link-event socket closed".to_string());
                };
                match msg.payload {
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(m)) => {
                        let l = Link::from_notification(&m);
                        on_new_link(cfg, opts, &nl, &mut known, l, &tx);
                    }
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(m)) => {
                        known.remove(&m.header.index);
                    }
                    _ => {}
                }
            }
        }
    };
    sup.abort();
    result
}

fn on_new_link(
    cfg: &AgentConfig,
    opts: &WatchOptions,
    nl: &Netlink,
    known: &mut HashMap<u32, String>,
    l: Link,
    tx: &mpsc::Sender<Job>,
) {
    let Some((vmid, _net)) = pve_integration::HostVeth::parse(&l.name) else {
        known.remove(&l.index);
        return;
    };
    if known.get(&l.index) == Some(&l.name) {
        return; // a flag or master change of a link already handled
    }
    known.insert(l.index, l.name.clone());
    if !inspect::is_managed(cfg, vmid) {
        return;
    }
    log::info!(
        "watch: {} (ifindex {}) appeared for {vmid}",
        l.name,
        l.index
    );
    let (nl, socket, limit, tx) = (
        nl.clone(),
        cfg.toml.ovsdb.socket.clone(),
        opts.plug_wait,
        tx.clone(),
    );
    tokio::spawn(async move {
        if wait_plugged(&nl, &socket, &l.name, l.index, limit).await {
            let _ = tx.send(Job::One(vmid, "link event"));
        }
    });
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
    match serve(cfg, opts) {
        Ok(()) => ExitCode::Ok,
        Err(e) => {
            eprintln!("op-agent watch: {e}");
            ExitCode::Internal
        }
    }
}
