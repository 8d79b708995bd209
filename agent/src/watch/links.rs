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

/// Default receive buffer of the link-event socket, KiB: room for the events of 200
/// containers re-created at once (each veth pair makes a handful of `RTM_NEWLINK` messages of
/// about 1–2 KiB: about 2 MiB), twice over.
pub const EVENT_RCVBUF_KIB: usize = 4096;

/// Sets the receive buffer of the link-event socket to `bytes`: `SO_RCVBUFFORCE` (root, above
/// `net.core.rmem_max`), else `SO_RCVBUF` (capped at `rmem_max`). A failure is logged: the
/// overrun resync ([`resync`]) still covers what a small buffer drops.
pub fn size_buffer(
    conn: &mut rtnetlink::proto::Connection<rtnetlink::packet_route::RouteNetlinkMessage>,
    bytes: usize,
) {
    use rtnetlink::sys::AsyncSocket;
    use std::os::fd::AsRawFd;
    let fd = conn.socket_mut().socket_mut().as_raw_fd();
    let size = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: `fd` is the open netlink socket `conn` owns; `size` outlives the call and
        // its length is passed.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            return;
        }
    }
    log::warn!(
        "watch: cannot size the link-event socket buffer to {bytes} bytes: {}",
        std::io::Error::last_os_error()
    );
}

/// After an overrun (the kernel dropped link events: `ENOBUFS`, which netlink-proto hands on
/// as `NLMSG_OVERRUN`), re-lists every link, as iproute2's `ip monitor` users and other
/// netlink consumers resynchronise: links gone meanwhile are forgotten, and every
/// `veth<vmid>i<n>` not known under its ifindex is handled as a new link ([`on_new_link`]), so
/// a container whose veth was re-created during the burst is still converged.
pub async fn resync(
    cfg: &AgentConfig,
    opts: &WatchOptions,
    nl: &Netlink,
    known: &mut HashMap<u32, String>,
    tx: &mpsc::Sender<Job>,
) {
    log::warn!(
        "watch: link events were lost (netlink socket buffer overran); re-listing every link"
    );
    let links = match nl.links().await {
        Ok(l) => l,
        Err(e) => {
            log::warn!("watch: cannot re-list links after an overrun: {e}");
            return;
        }
    };
    known.retain(|index, name| links.iter().any(|l| l.index == *index && l.name == *name));
    for l in links {
        on_new_link(cfg, opts, nl, known, l, tx);
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
