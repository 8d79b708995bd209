//! What the observe step found, as plain values the pure planner works on: links as netlink
//! shows them and Port/Interface rows as OVSDB holds them, per desired NIC.

use crate::engine::ownership;
use std::collections::{BTreeMap, BTreeSet};

/// A link as observed through netlink.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObservedLink {
    /// ifindex.
    pub index: u32,
    /// IFLA_IFNAME.
    pub name: String,
    /// IFLA_INFO_KIND (`veth`, ...).
    pub kind: Option<String>,
    /// IFF_UP is set.
    pub up: bool,
    /// ifindex of the controller (bridge) holding it.
    pub master: Option<u32>,
    /// True when the link carries op-agent's IFLA_IFALIAS for this vmid and net.
    pub ours: bool,
    /// op-agent's alias when it marks the link as another container's or NIC's
    /// (`op-agent vm-id=102 net=0`).
    pub other_owner: Option<String>,
    /// A veth whose container end still has LXC's name ([`pve_integration::is_lxc_setup_peer_name`]):
    /// LXC and PVE's `lxcnetaddbr` are still setting it up.
    pub in_setup: bool,
}

/// A Port (with its single Interface) as observed in OVSDB.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObservedPort {
    /// `Port.name`.
    pub name: String,
    /// The Bridge whose `ports` holds it.
    pub bridge: Option<String>,
    /// `Port.tag`.
    pub tag: Option<u16>,
    /// `Port.trunks`, ascending.
    pub trunks: Vec<u16>,
    /// `Port.vlan_mode`.
    pub vlan_mode: Option<String>,
    /// Interface `mtu_request` (bytes).
    pub mtu_request: Option<i64>,
    /// Port `external_ids`.
    pub external_ids: BTreeMap<String, String>,
    /// Interface `ofport` (-1 or absent when not applied).
    pub ofport: Option<i64>,
    /// Interface `error`.
    pub error: Option<String>,
    /// `Port.qos` references a `QoS` row.
    pub qos: bool,
    /// Interface `ingress_policing_rate`, kbit/s (0 or absent: no policing).
    pub policing_kbits: Option<i64>,
    /// A kernel link of the Port's name exists (its container is running): pre-start never
    /// deletes such a row.
    pub link_alive: bool,
}

impl ObservedPort {
    /// `external_ids:owner=op-agent` ([`ownership::is_owned`]).
    pub fn owned(&self) -> bool {
        ownership::is_owned(&self.external_ids)
    }
}

/// What was observed for one desired NIC (same order as `Desired::nics`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObservedNic {
    /// The link `veth<vmid>i<n>`.
    pub pve_link: Option<ObservedLink>,
    /// The link with op-agent's name (`vi<vmid>`...).
    pub target_link: Option<ObservedLink>,
    /// The Port named `veth<vmid>i<n>`.
    pub pve_port: Option<ObservedPort>,
    /// The Port with op-agent's name.
    pub target_port: Option<ObservedPort>,
    /// Kind of the NIC's bridge as a kernel link (`bridge` for a Linux bridge), if it exists.
    pub bridge_link_kind: Option<String>,
    /// MTU of the bridge's kernel device (PVE `read_bridge_mtu`), bytes.
    pub bridge_mtu: Option<u32>,
    /// `mtu_request` of the bridge's own (internal) Interface, bytes: set by an `mtu` line of
    /// its stanza (ifupdown2's openvswitch addon). `None`: OVS gives the bridge the smallest
    /// MTU of its ports (Open vSwitch "ofproto: Honor mtu_request even for internal ports"),
    /// so its MTU follows any port's and says nothing about what a port should have.
    pub bridge_mtu_request: Option<i64>,
}

/// The observed host.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Observed {
    /// One entry per desired NIC, in `Desired::nics` order.
    pub nics: Vec<ObservedNic>,
    /// Names of the OVS Bridge rows.
    pub ovs_bridges: BTreeSet<String>,
    /// Ports with `owner=op-agent` and `vm-id=<vmid>` (filled for pre-start and post-stop).
    pub owned_ports: Vec<ObservedPort>,
    /// Links carrying op-agent's alias for this vmid and a `netN` the PVE conf no longer has
    /// (filled for post-start), with the Port of the link's name.
    pub removed: Vec<RemovedNic>,
}

/// An op-agent link (and its Port) of a `netN` no longer in the PVE conf's current section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovedNic {
    /// The `netN` of the link's alias.
    pub net: pve_integration::NetIndex,
    /// The link (`ours` is true: its alias names this vmid and `net`).
    pub link: ObservedLink,
    /// The Port of the link's name, if any.
    pub port: Option<ObservedPort>,
}
