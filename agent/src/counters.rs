//! Traffic counters of managed containers' NICs: the `IFLA_STATS64` counters of each NIC's host
//! link ([`crate::netlink::LinkStats`]), found under op-agent's name (`vi<vmid>`) or, before
//! the rename, under PVE's (`veth<vmid>i<n>`).
//!
//! The counters are the host link's, as `ip -s link show vi100` prints them: `rx` is what the
//! container sent, `tx` what it received. PVE's `PVE::LXC::vmstatus` swaps them the same way
//! for its graphs (`netout` += the host veth's `receive`, `netin` += its `transmit`), but only
//! counts links named `veth<vmid>i<n>`, so a renamed NIC reads 0 there.

use crate::commands::status::ContainerStatus;
use crate::config::AgentConfig;
use crate::desired::Desired;
use crate::inspect;
use crate::netlink::{LinkStats, Netlink, NetlinkError};
use std::collections::HashMap;

/// Why the counters could not be read; one line.
#[derive(Debug, thiserror::Error)]
pub enum CountersError {
    /// No `NETLINK_ROUTE` socket.
    #[error("netlink socket: {0}")]
    Connect(#[source] std::io::Error),
    /// The link dump failed.
    #[error(transparent)]
    Dump(#[from] NetlinkError),
}

/// The counters of one NIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicCounters {
    /// PVE `netN` index.
    pub net: u8,
    /// The host link the counters are of (`vi100`, or `veth100i0` when not renamed).
    pub port: String,
    /// Its counters.
    pub stats: LinkStats,
}

/// The counters of one running managed container's NICs, in `netN` order; NICs without a host
/// link are left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerCounters {
    /// The container.
    pub vmid: u32,
    /// Its NICs.
    pub nics: Vec<NicCounters>,
}

impl ContainerCounters {
    /// The sum over the container's NICs.
    pub fn total(&self) -> LinkStats {
        self.nics
            .iter()
            .fold(LinkStats::default(), |a, n| a.plus(&n.stats))
    }
}

/// The counters of `d`'s NICs from `stats` (a dump of [`Netlink::stats`]): each NIC under its
/// op-agent name, else under PVE's veth name.
pub fn of_desired(d: &Desired, stats: &HashMap<String, LinkStats>) -> ContainerCounters {
    let nics = d
        .nics
        .iter()
        .filter_map(|nic| {
            [nic.name.as_str(), nic.pve_veth.as_str()]
                .into_iter()
                .find_map(|name| {
                    stats.get(name).map(|s| NicCounters {
                        net: nic.net.get(),
                        port: name.to_string(),
                        stats: *s,
                    })
                })
        })
        .collect();
    ContainerCounters {
        vmid: d.vmid.get(),
        nics,
    }
}

/// The counters of every running managed container, by ascending vmid, from one dump of the
/// namespace's links. A container whose config does not load is left out (`status` and
/// `check` report why). Reads no OVSDB row. Must run inside a tokio runtime.
///
/// # Errors
/// [`CountersError`]: no netlink socket, or the dump failed.
pub async fn collect(cfg: &AgentConfig) -> Result<Vec<ContainerCounters>, CountersError> {
    let stats = dump().await?;
    let mut out = Vec::new();
    for vmid in inspect::managed(cfg) {
        if !inspect::is_running(cfg, vmid) {
            continue;
        }
        if let Ok(Some(d)) = inspect::load_desired(cfg, vmid) {
            out.push(of_desired(&d, &stats));
        }
    }
    Ok(out)
}

/// One [`Netlink::stats`] dump on a fresh connection. Must run inside a tokio runtime.
///
/// # Errors
/// As [`collect`].
pub async fn dump() -> Result<HashMap<String, LinkStats>, CountersError> {
    let nl = Netlink::connect().map_err(CountersError::Connect)?;
    Ok(nl.stats().await?)
}

/// Sets each NIC's [`crate::commands::status::NicStatus::counters`] from `stats` (by its link name) and each
/// container's sum.
pub fn fill_status(list: &mut [ContainerStatus], stats: &HashMap<String, LinkStats>) {
    for c in list {
        let mut sum: Option<LinkStats> = None;
        for n in &mut c.nics {
            n.counters = n.link.as_ref().and_then(|l| stats.get(l)).copied();
            if let Some(s) = &n.counters {
                sum = Some(sum.unwrap_or_default().plus(s));
            }
        }
        c.counters = sum;
    }
}

/// The `status --counters` table: one row per NIC with a link and one `all` row per container
/// with more than one, at most 80 columns for counters below 10^11 bytes.
pub fn status_table(list: &[ContainerStatus]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let row = |out: &mut String, vmid: u32, nic: &str, link: &str, s: &LinkStats| {
        let _ = writeln!(
            out,
            "{:<10} {:<5} {:<15} {:>12} {:>10} {:>12} {:>10}",
            vmid, nic, link, s.rx_bytes, s.rx_packets, s.tx_bytes, s.tx_packets
        );
    };
    let _ = writeln!(
        out,
        "{:<10} {:<5} {:<15} {:>12} {:>10} {:>12} {:>10}",
        "VMID", "NIC", "LINK", "RX-BYTES", "RX-PKTS", "TX-BYTES", "TX-PKTS"
    );
    for c in list {
        let mut shown = 0;
        for n in &c.nics {
            if let (Some(l), Some(s)) = (&n.link, &n.counters) {
                row(&mut out, c.vmid, &format!("net{}", n.net), l, s);
                shown += 1;
            }
        }
        if let (true, Some(s)) = (shown > 1, &c.counters) {
            row(&mut out, c.vmid, "all", "-", s);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::status::NicStatus;
    use crate::config::NetworkType;
    use crate::desired::{DesiredNic, NicMode};
    use pve_integration::{IfName, NetIndex, Vmid};

    fn nic(n: u8, name: &str, veth: &str) -> DesiredNic {
        DesiredNic {
            net: NetIndex::new(n).unwrap(),
            pve_veth: veth.into(),
            name: IfName::new(name).unwrap(),
            bridge: None,
            tag: None,
            trunks: Vec::new(),
            hwaddr: None,
            link_down: false,
            rate: None,
            mode: NicMode::Plug,
        }
    }

    fn st(rx: u64, tx: u64) -> LinkStats {
        LinkStats {
            rx_bytes: rx,
            tx_bytes: tx,
            rx_packets: rx / 100,
            tx_packets: tx / 100,
            ..LinkStats::default()
        }
    }

    #[test]
    fn each_nic_under_its_name_else_pves_and_the_sum() {
        let d = Desired {
            vmid: Vmid::new(100).unwrap(),
            network_type: NetworkType::Bridge,
            require_mesh: false,
            naming: crate::config::Naming::Rename,
            nics: vec![
                nic(0, "vi100", "veth100i0"),
                nic(1, "vi100i1", "veth100i1"),
                nic(2, "vi100i2", "veth100i2"),
            ],
        };
        let stats: HashMap<String, LinkStats> = [
            ("vi100".to_string(), st(1000, 2000)),
            // A stale PVE name next to op-agent's does not win.
            ("veth100i0".to_string(), st(7, 7)),
            ("veth100i1".to_string(), st(300, 400)),
        ]
        .into_iter()
        .collect();
        let c = of_desired(&d, &stats);
        assert_eq!(c.vmid, 100);
        let ports: Vec<(u8, &str)> = c.nics.iter().map(|n| (n.net, n.port.as_str())).collect();
        assert_eq!(ports, vec![(0, "vi100"), (1, "veth100i1")]);
        let t = c.total();
        assert_eq!((t.rx_bytes, t.tx_bytes), (1300, 2400));
        assert_eq!((t.rx_packets, t.tx_packets), (13, 24));
    }

    #[test]
    fn status_rows_get_their_links_counters_and_the_sum() {
        let nic = |net: u8, link: Option<&str>| NicStatus {
            net,
            link: link.map(str::to_string),
            bridge: None,
            tag: None,
            state: "ok".into(),
            drift: Vec::new(),
            counters: None,
        };
        let mut list = vec![ContainerStatus {
            vmid: 100,
            mode: "bridge".into(),
            running: true,
            last_seq: None,
            hookscript: Some("local:snippets/op-hook".into()),
            unavailable: false,
            error: None,
            nics: vec![nic(0, Some("vi100")), nic(1, Some("vi100i1")), nic(2, None)],
            counters: None,
        }];
        let stats: HashMap<String, LinkStats> = [
            ("vi100".to_string(), st(1000, 2000)),
            ("vi100i1".to_string(), st(300, 400)),
        ]
        .into_iter()
        .collect();
        fill_status(&mut list, &stats);
        assert_eq!(list[0].nics[0].counters, Some(st(1000, 2000)));
        assert_eq!(list[0].nics[2].counters, None);
        assert_eq!(list[0].counters.map(|s| s.tx_bytes), Some(2400));
        let t = status_table(&list);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4, "{t}");
        assert!(lines.iter().all(|l| l.len() <= 80), "{t}");
        let w: Vec<&str> = lines[3].split_whitespace().collect();
        assert_eq!(w, ["100", "all", "-", "1300", "13", "2400", "24"]);
        let w: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(w, ["100", "net0", "vi100", "1000", "10", "2000", "20"]);
    }
}
