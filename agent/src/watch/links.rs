//! rtnetlink link events (`RTNLGRP_LINK`): a `veth<vmid>i<n>` that appears for a managed
//! container is converged once PVE has plugged it.

use super::worker::Job;
use super::WatchOptions;
use crate::config::AgentConfig;
use crate::inspect;
use crate::netlink::{Link, Netlink};
use crate::ovsdb::Client;
use std::collections::HashMap;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// A new `veth<vmid>i<n>` waiting for PVE to plug it.
struct Waiting {
    vmid: pve_integration::Vmid,
    name: String,
    index: u32,
    until: Instant,
}

/// The veths waiting for PVE's plug, polled together by one task: every 20 ms one netlink
/// lookup per link and ONE OVSDB read of all their Interfaces ([`Client::interfaces_status`]),
/// on one connection, so a mass event (every veth re-created at once) costs ovsdb-server one
/// transaction per poll instead of one per veth.
#[derive(Clone, Default)]
pub struct Plugs {
    waiting: Arc<Mutex<Vec<Waiting>>>,
    wake: Arc<tokio::sync::Notify>,
    started: Arc<std::sync::atomic::AtomicBool>,
}

impl Plugs {
    fn push(&self, w: Waiting) {
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(w);
        self.wake.notify_one();
    }

    fn take(&self) -> Vec<Waiting> {
        std::mem::take(&mut *self.waiting.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Starts the poller once (on the event loop's runtime).
    fn start(&self, nl: &Netlink, socket: &std::path::Path, tx: &mpsc::Sender<Job>) {
        if self.started.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let (me, nl, socket, tx) = (self.clone(), nl.clone(), socket.to_path_buf(), tx.clone());
        tokio::spawn(async move { me.poll(nl, socket, tx).await });
    }

    /// The poller: a link that went away or changed its name is dropped; one that has a master,
    /// whose Interface ovs-vswitchd has processed (ofport or error set), or whose wait is over
    /// (a `link_down=1` NIC is never plugged) makes its container due.
    async fn poll(self, nl: Netlink, socket: std::path::PathBuf, tx: mpsc::Sender<Job>) {
        let mut ovs: Option<Client> = None;
        let mut mine: Vec<Waiting> = Vec::new();
        loop {
            mine.extend(self.take());
            if mine.is_empty() {
                self.wake.notified().await;
                continue;
            }
            if ovs.is_none() {
                ovs = Client::connect(&socket, Duration::from_secs(2)).await.ok();
            }
            let links =
                futures_util::future::join_all(mine.iter().map(|w| nl.link_by_name(&w.name))).await;
            let names: Vec<String> = mine.iter().map(|w| w.name.clone()).collect();
            let status = match &ovs {
                Some(c) => match c.interfaces_status(&names).await {
                    Ok(s) => s,
                    Err(_) => {
                        ovs = None;
                        vec![None; names.len()]
                    }
                },
                None => vec![None; names.len()],
            };
            let now = Instant::now();
            let mut left = Vec::new();
            for ((w, l), st) in mine.drain(..).zip(links).zip(status) {
                let ready = match l {
                    Ok(None) => continue,
                    Ok(Some(l)) if l.index != w.index => continue,
                    Ok(Some(l)) if l.master.is_some() => true,
                    _ => matches!(st, Some((o, e)) if o.is_some() || e.is_some()),
                };
                if ready || now >= w.until {
                    let _ = tx.send(Job::One(w.vmid, "link event"));
                } else {
                    left.push(w);
                }
            }
            mine = left;
            if !mine.is_empty() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// A new or renamed link `l`: when it is a managed container's `veth<vmid>i<n>` not seen under
/// this ifindex before, converge that container once it is plugged (at most `plug_wait`;
/// [`Plugs`] polls).
pub fn on_new_link(
    cfg: &AgentConfig,
    opts: &WatchOptions,
    nl: &Netlink,
    known: &mut HashMap<u32, String>,
    l: Link,
    tx: &mpsc::Sender<Job>,
    plugs: &Plugs,
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
    plugs.start(nl, &cfg.toml.ovsdb.socket, tx);
    plugs.push(Waiting {
        vmid,
        name: l.name,
        index: l.index,
        until: Instant::now() + opts.plug_wait,
    });
}
