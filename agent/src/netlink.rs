//! Host links over rtnetlink (`RTM_GETLINK`, `RTM_SETLINK`, `RTM_GETADDR`): find a link, read its
//! kind, flags, controller (master), addresses and traffic counters (`IFLA_STATS64`), bring it
//! down, rename it, bring it up, give it an alternative name (`RTM_NEWLINKPROP`).
//!
//! Knows nothing of Proxmox: names are plain strings here. Every call goes to the kernel of the
//! network namespace the process runs in.

use futures_util::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkInfo, LinkMessage, Stats64};
use rtnetlink::{Handle, LinkUnspec};
use std::net::IpAddr;

/// A failed netlink request; displays as `netlink <op> <link>: <kernel error>`.
#[derive(Debug, thiserror::Error)]
#[error("netlink {op} {link}: {source}")]
pub struct NetlinkError {
    /// What was asked (`get`, `dump`, `stats`, `down`, `rename`, `up`, `delete`, `addresses`).
    pub op: &'static str,
    /// The link involved, as a name or `#<ifindex>`.
    pub link: String,
    /// The kernel's or the library's error.
    #[source]
    pub source: rtnetlink::Error,
}

impl NetlinkError {
    /// The kernel's errno (positive, e.g. `libc::EEXIST`), when the kernel refused the request.
    pub fn errno(&self) -> Option<i32> {
        match &self.source {
            rtnetlink::Error::NetlinkError(e) => e.code.map(|c| -c.get()),
            _ => None,
        }
    }
}

/// What op-agent needs to know of a link (from one `RTM_NEWLINK` message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// ifindex.
    pub index: u32,
    /// IFLA_IFNAME.
    pub name: String,
    /// IFLA_INFO_KIND (`veth`, `bridge`, `wireguard`, `tun`, ...); `None` for kind-less devices.
    pub kind: Option<String>,
    /// IFF_UP is set.
    pub up: bool,
    /// IFLA_MASTER: the ifindex of the bridge or bond holding this link.
    pub master: Option<u32>,
    /// IFLA_ADDRESS formatted as `aa:bb:cc:dd:ee:ff`.
    pub mac: Option<String>,
    /// IFLA_MTU in bytes.
    pub mtu: Option<u32>,
    /// IFLA_IFALIAS (free text set by whoever configured the link).
    pub alias: Option<String>,
    /// IFLA_LINK: ifindex of the other end (a veth's peer), in the namespace of
    /// [`Link::peer_netnsid`] when that is set.
    pub peer_index: Option<u32>,
    /// IFLA_LINK_NETNSID: set when the other end is in another network namespace (a
    /// container's end of its veth).
    pub peer_netnsid: Option<i32>,
}

impl Link {
    fn from_message(m: &LinkMessage) -> Link {
        let mut link = Link {
            index: m.header.index,
            name: String::new(),
            kind: None,
            up: m.header.flags.contains(LinkFlags::Up),
            master: None,
            mac: None,
            mtu: None,
            alias: None,
            peer_index: None,
            peer_netnsid: None,
        };
        for attr in &m.attributes {
            match attr {
                LinkAttribute::IfName(n) => link.name = n.clone(),
                LinkAttribute::Controller(i) => link.master = Some(*i),
                LinkAttribute::Mtu(v) => link.mtu = Some(*v),
                LinkAttribute::IfAlias(a) => link.alias = Some(a.clone()),
                LinkAttribute::Link(i) => link.peer_index = Some(*i),
                LinkAttribute::LinkNetNsId(id) => link.peer_netnsid = Some(*id),
                LinkAttribute::Address(a) if a.len() == 6 => {
                    link.mac = Some(
                        a.iter()
                            .map(|b| format!("{b:02x}"))
                            .collect::<Vec<_>>()
                            .join(":"),
                    )
                }
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        if let LinkInfo::Kind(k) = info {
                            link.kind = Some(k.to_string());
                        }
                    }
                }
                _ => {}
            }
        }
        link
    }

    /// Parses a link from an `RTM_NEWLINK`/`RTM_DELLINK` notification (used by `watch`).
    pub fn from_notification(m: &LinkMessage) -> Link {
        Link::from_message(m)
    }
}

/// A link's traffic counters as the kernel keeps them for the device (`IFLA_STATS64`,
/// `struct rtnl_link_stats64` of `include/uapi/linux/if_link.h`): what the device received
/// (`rx_*`) and sent (`tx_*`) since it was created. They wrap only at 2^64 and a rename keeps
/// them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct LinkStats {
    /// Bytes received by the device.
    pub rx_bytes: u64,
    /// Bytes sent by the device.
    pub tx_bytes: u64,
    /// Packets received by the device.
    pub rx_packets: u64,
    /// Packets sent by the device.
    pub tx_packets: u64,
    /// Received packets dropped (no room, no handler).
    pub rx_dropped: u64,
    /// Packets dropped on sending.
    pub tx_dropped: u64,
}

impl LinkStats {
    fn of(s: &Stats64) -> LinkStats {
        LinkStats {
            rx_bytes: s.rx_bytes,
            tx_bytes: s.tx_bytes,
            rx_packets: s.rx_packets,
            tx_packets: s.tx_packets,
            rx_dropped: s.rx_dropped,
            tx_dropped: s.tx_dropped,
        }
    }

    /// The counters of `m`'s `IFLA_STATS64` attribute, `None` when the kernel sent none.
    pub fn from_message(m: &LinkMessage) -> Option<LinkStats> {
        m.attributes.iter().find_map(|a| match a {
            LinkAttribute::Stats64(s) => Some(LinkStats::of(s)),
            _ => None,
        })
    }

    /// The field-wise sum of `self` and `o` (saturating).
    pub fn plus(&self, o: &LinkStats) -> LinkStats {
        LinkStats {
            rx_bytes: self.rx_bytes.saturating_add(o.rx_bytes),
            tx_bytes: self.tx_bytes.saturating_add(o.tx_bytes),
            rx_packets: self.rx_packets.saturating_add(o.rx_packets),
            tx_packets: self.tx_packets.saturating_add(o.tx_packets),
            rx_dropped: self.rx_dropped.saturating_add(o.rx_dropped),
            tx_dropped: self.tx_dropped.saturating_add(o.tx_dropped),
        }
    }
}

/// An rtnetlink connection of the current network namespace.
#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
}

/// The one link a `match_name`/`match_index` request returns, `None` on ENODEV.
async fn first_link(
    req: rtnetlink::LinkGetRequest,
    label: String,
) -> Result<Option<Link>, NetlinkError> {
    match req.execute().try_next().await {
        Ok(m) => Ok(m.map(|m| Link::from_message(&m))),
        Err(e) if is_enodev(&e) => Ok(None),
        Err(e) => Err(NetlinkError {
            op: "get",
            link: label,
            source: e,
        }),
    }
}

fn is_enodev(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.code.map(|c| -c.get()) == Some(libc::ENODEV))
}

impl Netlink {
    /// Opens a `NETLINK_ROUTE` socket and spawns its connection task on the current tokio runtime.
    pub fn connect() -> Result<Netlink, std::io::Error> {
        let (conn, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    /// The link called `name`, or `None` when there is none (ENODEV).
    pub async fn link_by_name(&self, name: &str) -> Result<Option<Link>, NetlinkError> {
        let req = self.handle.link().get().match_name(name);
        first_link(req, name.to_string()).await
    }

    /// The link with ifindex `index`, or `None`.
    pub async fn link_by_index(&self, index: u32) -> Result<Option<Link>, NetlinkError> {
        let req = self.handle.link().get().match_index(index);
        first_link(req, format!("#{index}")).await
    }

    /// The name of `link`'s other end when it is in another namespace (`RTM_GETLINK` of
    /// [`Link::peer_index`] with `IFLA_TARGET_NETNSID` = [`Link::peer_netnsid`], Linux ≥
    /// 4.20); `None` when the peer is in this namespace, unknown, or cannot be read there.
    pub async fn peer_name(&self, link: &Link) -> Option<String> {
        let (Some(index), Some(nsid)) = (link.peer_index, link.peer_netnsid) else {
            return None;
        };
        let mut req = self.handle.link().get().match_index(index);
        req.message_mut()
            .attributes
            .push(LinkAttribute::IfNetnsId(nsid));
        first_link(req, format!("#{index}@{nsid}"))
            .await
            .ok()
            .flatten()
            .map(|l| l.name)
    }

    /// Every link of the namespace (one `RTM_GETLINK` dump).
    pub async fn links(&self) -> Result<Vec<Link>, NetlinkError> {
        let mut s = self.handle.link().get().execute();
        let mut out = Vec::new();
        loop {
            match s.try_next().await {
                Ok(Some(m)) => out.push(Link::from_message(&m)),
                Ok(None) => return Ok(out),
                Err(e) => {
                    return Err(NetlinkError {
                        op: "dump",
                        link: "*".into(),
                        source: e,
                    })
                }
            }
        }
    }

    /// The traffic counters of every link of the namespace by name (one `RTM_GETLINK` dump;
    /// links the kernel sends without `IFLA_STATS64` are left out).
    pub async fn stats(
        &self,
    ) -> Result<std::collections::HashMap<String, LinkStats>, NetlinkError> {
        let mut s = self.handle.link().get().execute();
        let mut out = std::collections::HashMap::new();
        loop {
            match s.try_next().await {
                Ok(Some(m)) => {
                    if let Some(st) = LinkStats::from_message(&m) {
                        out.insert(Link::from_message(&m).name, st);
                    }
                }
                Ok(None) => return Ok(out),
                Err(e) => {
                    return Err(NetlinkError {
                        op: "stats",
                        link: "*".into(),
                        source: e,
                    })
                }
            }
        }
    }

    /// Deletes `link` (`RTM_DELLINK` by ifindex); deleting one end of a veth pair deletes both,
    /// as pve-common `PVE::Network::veth_delete` (`ip link delete dev <veth>`) does.
    pub async fn delete(&self, link: &Link) -> Result<(), NetlinkError> {
        self.handle
            .link()
            .del(link.index)
            .execute()
            .await
            .map_err(|e| NetlinkError {
                op: "delete",
                link: link.name.clone(),
                source: e,
            })
    }

    /// Deletes the root and the ingress qdisc of `link` (`RTM_DELQDISC` with parent
    /// `TC_H_ROOT`, then with parent `TC_H_INGRESS`, as `tc qdisc del dev <link> root` and
    /// `... ingress` do), so the device goes back to its default queueing. A qdisc that is not
    /// there (`ENOENT`, or `EINVAL` for the default root) is not an error. Returns how many
    /// were deleted (0–2).
    pub async fn clear_qdiscs(&self, link: &Link) -> Result<u8, NetlinkError> {
        use rtnetlink::packet_route::tc::TcHandle;
        let mut deleted = 0;
        for (parent, handle) in [
            (TcHandle::ROOT, TcHandle::UNSPEC),
            (
                TcHandle::INGRESS,
                TcHandle {
                    major: 0xffff,
                    minor: 0,
                },
            ),
        ] {
            let mut req = self.handle.qdisc().del(link.index as i32);
            req.message_mut().header.parent = parent;
            req.message_mut().header.handle = handle;
            match req.execute().await {
                Ok(()) => deleted += 1,
                Err(e) => {
                    let err = NetlinkError {
                        op: "qdisc del",
                        link: link.name.clone(),
                        source: e,
                    };
                    if !matches!(err.errno(), Some(libc::ENOENT | libc::EINVAL)) {
                        return Err(err);
                    }
                }
            }
        }
        Ok(deleted)
    }

    /// Clears IFF_UP on `link`.
    pub async fn set_down(&self, link: &Link) -> Result<(), NetlinkError> {
        self.set_flag(link, false).await
    }

    /// Sets IFF_UP on `link`.
    pub async fn set_up(&self, link: &Link) -> Result<(), NetlinkError> {
        self.set_flag(link, true).await
    }

    async fn set_flag(&self, link: &Link, up: bool) -> Result<(), NetlinkError> {
        let b = LinkUnspec::new_with_index(link.index);
        let msg = if up { b.up() } else { b.down() }.build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(|e| NetlinkError {
                op: if up { "up" } else { "down" },
                link: link.name.clone(),
                source: e,
            })
    }

    /// Renames `link` to `new_name`, sets IFLA_IFALIAS to `alias` and, when `up`, sets IFF_UP,
    /// all in one `RTM_SETLINK` (the kernel applies IFLA_IFNAME before the flags, so this works on
    /// a down link on every kernel; a live rename of an UP link needs Linux >= 6.2).
    pub async fn rename(
        &self,
        link: &Link,
        new_name: &str,
        alias: &str,
        up: bool,
    ) -> Result<(), NetlinkError> {
        let mut b = LinkUnspec::new_with_index(link.index)
            .name(new_name)
            .alias(alias);
        if up {
            b = b.up();
        }
        self.handle
            .link()
            .set(b.build())
            .execute()
            .await
            .map_err(|e| NetlinkError {
                op: "rename",
                link: format!("{} -> {new_name}", link.name),
                source: e,
            })
    }

    /// Gives `link` the alternative name `altname` (`RTM_NEWLINKPROP` with `IFLA_PROP_LIST` /
    /// `IFLA_ALT_IFNAME`, Linux >= 5.5, what `ip link property add altname` sends) and sets
    /// IFLA_IFALIAS to `alias` (`RTM_SETLINK`). An `altname` the link already has is kept (the
    /// kernel's EEXIST for it); the kernel resolves a name lookup (`RTM_GETLINK` by
    /// IFLA_IFNAME) through alternative names, so [`Netlink::link_by_name`] of `altname` then
    /// finds `link`.
    ///
    /// # Errors
    /// `altname` is another link's name or altname (EEXIST), or the kernel refused.
    pub async fn add_altname(
        &self,
        link: &Link,
        altname: &str,
        alias: &str,
    ) -> Result<(), NetlinkError> {
        let err = |op: &'static str, e: rtnetlink::Error| NetlinkError {
            op,
            link: format!("{} altname {altname}", link.name),
            source: e,
        };
        let r = self
            .handle
            .link()
            .property_add(link.index)
            .alt_ifname(&[altname])
            .execute()
            .await;
        if let Err(e) = r {
            let exists = matches!(&e, rtnetlink::Error::NetlinkError(m)
                if m.code.map(|c| -c.get()) == Some(libc::EEXIST));
            let mine = exists
                && matches!(self.link_by_name(altname).await, Ok(Some(l)) if l.index == link.index);
            if !mine {
                return Err(err("altname", e));
            }
        }
        let b = LinkUnspec::new_with_index(link.index).alias(alias);
        self.handle
            .link()
            .set(b.build())
            .execute()
            .await
            .map_err(|e| err("alias", e))
    }

    /// Removes the alternative name `altname` from `link` (`RTM_DELLINKPROP`, what `ip link
    /// property del altname` sends). An `altname` the link does not have is no error.
    ///
    /// # Errors
    /// The kernel refused.
    pub async fn del_altname(&self, link: &Link, altname: &str) -> Result<(), NetlinkError> {
        let r = self
            .handle
            .link()
            .property_del(link.index)
            .alt_ifname(&[altname])
            .execute()
            .await;
        match r {
            Err(rtnetlink::Error::NetlinkError(m))
                if m.code.map(|c| -c.get()) == Some(libc::ENOENT) =>
            {
                Ok(())
            }
            r => r.map_err(|e| NetlinkError {
                op: "del-altname",
                link: format!("{} altname {altname}", link.name),
                source: e,
            }),
        }
    }

    /// The addresses on `link` as `(address, prefix length)`, IPv4 and IPv6.
    pub async fn addresses(&self, link: &Link) -> Result<Vec<(IpAddr, u8)>, NetlinkError> {
        let mut s = self
            .handle
            .address()
            .get()
            .set_link_index_filter(link.index)
            .execute();
        let mut out = Vec::new();
        loop {
            match s.try_next().await {
                Ok(Some(m)) => out.extend(address_of(&m)),
                Ok(None) => return Ok(out),
                Err(e) => {
                    return Err(NetlinkError {
                        op: "addresses",
                        link: link.name.clone(),
                        source: e,
                    })
                }
            }
        }
    }
}

fn address_of(m: &AddressMessage) -> Option<(IpAddr, u8)> {
    let mut addr = None;
    for a in &m.attributes {
        match a {
            AddressAttribute::Local(ip) => addr = Some(*ip),
            AddressAttribute::Address(ip) if addr.is_none() => addr = Some(*ip),
            _ => {}
        }
    }
    addr.map(|ip| (ip, m.header.prefix_len))
}
