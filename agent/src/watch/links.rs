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
    plugs: &Plugs,
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
        on_new_link(cfg, opts, nl, known, l, tx, plugs);
    }
}

/// The plug poller's period ([`Plugs`]): it sleeps this long between two polls.
pub const PLUG_POLL: Duration = Duration::from_millis(20);

/// A new `veth<vmid>i<n>` waiting for PVE to plug it.
struct Waiting {
    vmid: pve_integration::Vmid,
    name: String,
    index: u32,
    until: Instant,
}

/// The veths waiting for PVE's plug, polled together by one task: every [`PLUG_POLL`] one netlink
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

    /// The poller: a link that went away or changed its name is dropped; one that has a master
    /// or whose Interface ovs-vswitchd has processed (ofport or error set), and that LXC has
    /// handed over ([`handed_over`]: PVE's `lxcnetaddbr` still works on it by name until
    /// then, and renaming it earlier aborts the start), or whose wait is over (a `link_down=1`
    /// NIC is never plugged), makes its container due.
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
                let (plugged, link) = match l {
                    Ok(None) => continue,
                    Ok(Some(l)) if l.index != w.index => continue,
                    Ok(Some(l)) if l.master.is_some() => (true, Some(l)),
                    Ok(l) => (matches!(st, Some((o, e)) if o.is_some() || e.is_some()), l),
                    Err(_) => (
                        matches!(st, Some((o, e)) if o.is_some() || e.is_some()),
                        None,
                    ),
                };
                let ready = plugged && handed_over(&nl, link.as_ref()).await;
                if ready || now >= w.until {
                    let _ = tx.send(Job::One(w.vmid, "link event"));
                } else {
                    left.push(w);
                }
            }
            mine = left;
            if !mine.is_empty() {
                tokio::time::sleep(PLUG_POLL).await;
            }
        }
    }
}

/// False while the container's end of veth `l` still has LXC's name: LXC and PVE's
/// `lxcnetaddbr` are still working on `l` by its name ([`pve_integration::is_lxc_setup_peer_name`]).
async fn handed_over(nl: &Netlink, l: Option<&Link>) -> bool {
    match l {
        Some(l) if l.kind.as_deref() == Some("veth") && l.peer_netnsid.is_some() => !nl
            .peer_name(l)
            .await
            .is_some_and(|p| pve_integration::is_lxc_setup_peer_name(&p)),
        _ => true,
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

/// The vmid a deleted link `name` may have blocked: a PVE host veth `veth<vmid>i<n>` or
/// op-agent's default name `vi<vmid>` / `vi<vmid>i<n>` ([`crate::desired`]). Its deletion can
/// change the outcome of a retry (a lingering old link took the name), so it re-arms one.
pub fn vmid_of_gone(name: &str) -> Option<pve_integration::Vmid> {
    if let Some((v, _)) = pve_integration::HostVeth::parse(name) {
        return Some(v);
    }
    let rest = name.strip_prefix("vi")?;
    let (id, net) = rest.split_once('i').unwrap_or((rest, "0"));
    if id.is_empty() || net.is_empty() || !net.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    id.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::vmid_of_gone;

    #[test]
    fn gone_links_name_their_vmid() {
        let v = |n: &str| vmid_of_gone(n).map(pve_integration::Vmid::get);
        assert_eq!(v("vi100"), Some(100));
        assert_eq!(v("vi100i1"), Some(100));
        assert_eq!(v("veth101i0"), Some(101));
        assert_eq!(v("vi"), None);
        assert_eq!(v("vi100i"), None);
        assert_eq!(v("virbr0"), None);
        assert_eq!(v("eth0"), None);
    }
}
