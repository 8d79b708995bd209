//! rtnetlink link events (`RTNLGRP_LINK`): a `veth<vmid>i<n>` that appears for a managed
//! container is converged once PVE has plugged it.

use super::worker::Job;
use super::WatchOptions;
use crate::config::AgentConfig;
use crate::inspect;
use crate::netlink::{Link, Netlink};
use crate::ovsdb::Client;
use std::collections::HashMap;
use std::sync::mpsc;
use std::time::{Duration, Instant};

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

/// A new or renamed link `l`: when it is a managed container's `veth<vmid>i<n>` not seen under
/// this ifindex before, converge that container once it is plugged (at most `plug_wait`).
pub fn on_new_link(
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
