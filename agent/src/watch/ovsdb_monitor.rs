//! The OVSDB side of the service: one connection with a `monitor` (RFC 7047 §4.1.5) of the
//! Bridge, Port and Interface tables. The initial reply is the snapshot (and every
//! (re)connect a full reconcile, [`Job::All`]); each `update` (§4.1.6) is applied to the
//! replica and collected for a short window ([`WINDOW`], from the first update of a burst:
//! `ifreload` deletes ports one `ovs-vsctl` at a time), then judged once ([`super::decide`])
//! and each due container is handed to the worker once ([`Job::Repair`]). Nothing runs while
//! nothing happens: the loop sleeps on the socket (plus an optional `echo` probe, §4.1.11).

use super::decide::{self, Touched};
use super::worker::{Job, Repair};
use crate::audit::Outcome;
use crate::config::AgentConfig;
use crate::desired::Desired;
use crate::engine::ownership::{alias_owner, AliasOwner};
use crate::engine::Note;
use crate::inspect;
use crate::netlink::Netlink;
use crate::ovsdb::vswitch::monitor::{Change, RowUpdate, Tables};
use crate::ovsdb::Client;
use pve_integration::{HostVeth, Vmid};
use serde_json::json;
use std::collections::BTreeSet;
use std::sync::mpsc;
use std::time::Duration;
use tokio::sync::mpsc as tmpsc;
use tokio::time::Instant;

/// How long updates are collected after the first of a burst before they are judged.
pub const WINDOW: Duration = Duration::from_millis(20);

/// The longest wait between two connects while OVSDB is unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Keeps the monitor connection until the worker is gone; reconnects with exponential
/// backoff (100 ms doubling to 2 s) and sends [`Job::All`] on every (re)connect. `probe`
/// (zero: none) is the interval of an `echo` that detects a server that stopped answering.
pub async fn supervise(cfg: AgentConfig, nl: Netlink, probe: Duration, tx: mpsc::Sender<Job>) {
    let socket = cfg.toml.ovsdb.socket.clone();
    let timeout = Duration::from_millis(cfg.toml.ovsdb.timeout_ms).min(Duration::from_secs(2));
    let mut backoff = Duration::from_millis(100);
    let mut first = true;
    loop {
        let session = match Client::connect(&socket, timeout).await {
            Ok(c) => match c.monitor_tables().await {
                Ok((t, rx)) => Ok((c, t, rx)),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        let (c, mut tables, mut rx) = match session {
            Ok(s) => s,
            Err(e) => {
                super::warn_limit::ovsdb_down(format_args!(
                    "watch: {e}; retrying every {} s at most",
                    MAX_BACKOFF.as_secs()
                ));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        super::warn_limit::ovsdb_back();
        let why = if first {
            "start-up"
        } else {
            "ovsdb reconnected"
        };
        log::info!(
            "watch: OVSDB {} connected ({why}); monitoring {} bridges, {} ports",
            socket.display(),
            tables.bridges.len(),
            tables.ports.len()
        );
        first = false;
        if tx.send(Job::All(why)).is_err() {
            return;
        }
        let s = Session {
            cfg: &cfg,
            nl: &nl,
            c: &c,
            probe,
            timeout,
            tx: &tx,
            dead_warned: Default::default(),
        };
        match s.follow(&mut tables, &mut rx).await {
            None => return,
            Some(reason) => super::warn_limit::ovsdb_down(format_args!(
                "watch: OVSDB lost: {reason}; reconnecting"
            )),
        }
    }
}

/// How long after its row is gone a dead Port's name stays warned about
/// ([`Session::dead_warned`]): longer than one `pct set` (its config lock waits up to 10 s).
const DEAD_WARN_QUIET: Duration = Duration::from_secs(30);

struct Session<'a> {
    cfg: &'a AgentConfig,
    nl: &'a Netlink,
    c: &'a Client,
    probe: Duration,
    timeout: Duration,
    tx: &'a mpsc::Sender<Job>,
    /// Dead `veth…` Ports already warned about, and when: one line per failed PVE edit,
    /// however many updates show the row before the repair deletes it, and although PVE's
    /// `update_net` leaves two such rows in a row (its hotplug's `tap_plug`, then its
    /// rollback's). A name is forgotten [`DEAD_WARN_QUIET`] after its row is gone.
    dead_warned: std::sync::Mutex<std::collections::BTreeMap<String, Instant>>,
}

impl Session<'_> {
    /// Follows the updates until the connection is lost (`Some(reason)`) or the worker is gone
    /// (`None`).
    async fn follow(
        &self,
        tables: &mut Tables,
        rx: &mut tmpsc::UnboundedReceiver<Vec<RowUpdate>>,
    ) -> Option<String> {
        let mut changes: Vec<Change> = Vec::new();
        let mut window: Option<Instant> = None;
        let mut next_probe = Instant::now() + self.probe;
        loop {
            let flush_at = window.unwrap_or(next_probe);
            tokio::select! {
                u = rx.recv() => {
                    let Some(u) = u else {
                        return Some("monitor channel closed".into());
                    };
                    changes.extend(tables.apply(&u));
                    window.get_or_insert_with(|| Instant::now() + WINDOW);
                }
                _ = tokio::time::sleep_until(flush_at), if window.is_some() => {
                    window = None;
                    let ch = std::mem::take(&mut changes);
                    for r in self.judge(tables, &ch).await {
                        if self.tx.send(Job::Repair(r)).is_err() {
                            return None;
                        }
                    }
                }
                e = self.c.closed() => return Some(e.to_string()),
                _ = tokio::time::sleep_until(next_probe), if !self.probe.is_zero() => {
                    next_probe = Instant::now() + self.probe;
                    let echo = self.c.call("echo", json!(["op-agent"]));
                    match tokio::time::timeout(self.timeout, echo).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return Some(e.to_string()),
                        Err(_) => {
                            return Some(format!(
                                "no echo reply within {} ms",
                                self.timeout.as_millis()
                            ))
                        }
                    }
                }
            }
        }
    }

    /// The repairs one window's `changes` make due (replica `t` is the state after them).
    async fn judge(&self, t: &Tables, changes: &[Change]) -> Vec<Repair> {
        if let Ok(mut w) = self.dead_warned.lock() {
            let now = Instant::now();
            w.retain(|n, at| {
                t.port_by_name(n).is_some() || now.duration_since(*at) < DEAD_WARN_QUIET
            });
        }
        let tc = decide::touched(changes, t);
        let mut vmids: BTreeSet<Vmid> = tc.owned.clone();
        vmids.extend(
            tc.veth_ports
                .iter()
                .filter_map(|n| HostVeth::parse(n).map(|(v, _)| v)),
        );
        if !tc.new_bridges.is_empty() {
            vmids.extend(inspect::managed(self.cfg));
        }
        for b in tc.gone_bridges.iter().filter(|b| !t.has_bridge(b)) {
            self.warn_bridge_gone(b);
        }
        // A Port named after a device's alternative name: the device's own name says whose.
        for name in &tc.other_ports {
            if let Ok(Some(l)) = self.nl.link_by_name(name).await {
                if l.name != *name {
                    vmids.extend(HostVeth::parse(&l.name).map(|(v, _)| v));
                }
            }
        }
        let mut out = Vec::new();
        for v in vmids {
            if !inspect::is_running(self.cfg, v) {
                continue;
            }
            let d = match inspect::load_desired(self.cfg, v) {
                Ok(Some(d)) => d,
                Ok(None) => continue,
                Err(e) => {
                    log::warn!("watch: {v}: OVS rows changed, but its config does not load: {e}");
                    continue;
                }
            };
            if let Some(r) = self.judge_one(t, &tc, &d).await {
                out.push(r);
            }
        }
        out
    }

    /// One line when Bridge `b` was deleted: which NICs of running managed containers lost
    /// their Port with it. Nothing is run: their plans would refuse until the bridge is back,
    /// and its return converges them (`watch.bridge`).
    fn warn_bridge_gone(&self, b: &str) {
        let mut nics = Vec::new();
        for v in inspect::managed(self.cfg) {
            if !inspect::is_running(self.cfg, v) {
                continue;
            }
            if let Ok(Some(d)) = inspect::load_desired(self.cfg, v) {
                for w in decide::wanted_ports(&d).iter().filter(|w| w.bridge == b) {
                    nics.push(format!("{v} net{} ({})", w.net, w.name));
                }
            }
        }
        if !nics.is_empty() {
            log::warn!(
                "watch: bridge {b} was deleted from OVSDB; these NICs have no Port until it is \
                 back, then they are re-plugged: {}",
                nics.join(", ")
            );
        }
    }

    async fn judge_one(&self, t: &Tables, tc: &Touched, d: &Desired) -> Option<Repair> {
        let v = d.vmid;
        let wants = decide::wanted_ports(d);
        let mut notes = Vec::new();
        let mut why = "ovsdb drift";
        if tc.owned.contains(&v) || d.keeps_names() {
            for dr in decide::drifts(&wants, t) {
                log::warn!(
                    "watch: {v}: OVS port {} was changed by someone else: {}; restoring it",
                    dr.want.name,
                    dr.detail()
                );
                notes.push(Note {
                    step: "watch.drift".into(),
                    outcome: Outcome::Ok,
                    detail: dr.detail(),
                });
            }
        }
        for name in &tc.veth_ports {
            let Some((pv, net)) = HostVeth::parse(name) else {
                continue;
            };
            let Some(nic) = d.nics.iter().find(|n| n.net == net).filter(|_| pv == v) else {
                continue;
            };
            let Some(error) = decide::dead_port(t, name) else {
                continue;
            };
            // Only a row whose device is gone, while op-agent's renamed link of that NIC is
            // there (PVE's failed live edit, not a start in progress).
            let gone = matches!(self.nl.link_by_name(name).await, Ok(None));
            let ours = match self.nl.link_by_name(nic.name.as_str()).await {
                Ok(Some(l)) => {
                    alias_owner(l.alias.as_deref(), v.get(), net.get()) == AliasOwner::This
                }
                _ => false,
            };
            if !(gone && ours) {
                continue;
            }
            let link = nic.name.as_str();
            let n = u32::from(net.get());
            let first = self
                .dead_warned
                .lock()
                .map(|mut w| w.insert(name.clone(), Instant::now()).is_none())
                .unwrap_or(true);
            if first {
                log::warn!("{}", decide::dead_port_line(v, n, name, link, &error));
            }
            notes.push(Note {
                step: "watch.dead-port".into(),
                outcome: Outcome::Ok,
                detail: json!({
                    "port": name, "net": format!("net{n}"), "link": link, "error": error,
                    "cause": "PVE's live edit of a NIC op-agent renamed failed",
                    "instead": format!("op-agent set {v} -net{n} ..., which hands the NIC back to PVE for the edit"),
                }),
            });
            why = "dead port";
        }
        if d.keeps_names() {
            for name in &tc.other_ports {
                let Some(nic) = d.nics.iter().find(|n| n.name.as_str() == name) else {
                    continue;
                };
                if t.port_by_name(name).is_none() {
                    continue;
                }
                log::warn!(
                    "watch: {v}: OVS port {name} was added for {}, which already is Port {} \
                     (naming = \"keep\": {name} is only its alternative name); one device on \
                     two Ports is never valid, deleting Port {name}",
                    nic.pve_veth,
                    nic.pve_veth
                );
                notes.push(Note {
                    step: "watch.second-port".into(),
                    outcome: Outcome::Ok,
                    detail: json!({
                        "port": name, "net": format!("net{}", nic.net), "device": nic.pve_veth,
                        "why": "a second Port for a device op-agent manages, made by its alternative name",
                    }),
                });
                why = "second port";
            }
        }
        let bridges: BTreeSet<&str> = wants
            .iter()
            .map(|w| w.bridge.as_str())
            .filter(|b| tc.new_bridges.contains(*b))
            .collect();
        for b in bridges {
            log::info!("watch: {v}: bridge {b} appeared; converging");
            notes.push(Note {
                step: "watch.bridge".into(),
                outcome: Outcome::Ok,
                detail: json!({"bridge": b, "found": "appeared"}),
            });
            why = "bridge appeared";
        }
        (!notes.is_empty()).then_some(Repair {
            vmid: v,
            why,
            notes,
        })
    }
}
