//! What the OVSDB monitor's changes mean for managed containers. Pure: works on the
//! [`Tables`] replica, the [`Change`]s of one coalescing window and the desired state; the
//! caller does the I/O (config reads, netlink checks) and schedules the runs.
//!
//! Loop avoidance, first half: a container is due only when the replica differs from its
//! desired state (a row missing, or tag/trunks/vlan_mode/bridge/mtu_request not what the
//! config and the bridge's MTU say),
//! never merely because one of its rows changed. The rows op-agent's own runs write are the
//! desired ones, so they never make a container due again. (Second half: the worker's dry run
//! drops a drift seen between two transactions of one of op-agent's own runs.)

use crate::desired::{Desired, NicMode};
use crate::engine::ownership;
use crate::ovsdb::vswitch::monitor::{Change, Row, Tables};
use pve_integration::{HostVeth, Vmid};
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// The Port op-agent keeps for one NIC, as far as the config decides it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WantPort {
    /// PVE `netN` index.
    pub net: u32,
    /// `Port.name` (`vi<vmid>`, ...).
    pub name: String,
    /// The Bridge that must hold it.
    pub bridge: String,
    /// `Port.tag`.
    pub tag: Option<u16>,
    /// `Port.trunks`, ascending.
    pub trunks: Vec<u16>,
    /// `Port.vlan_mode` (`native-untagged` with both tag and trunks, like PVE).
    pub vlan_mode: Option<String>,
    /// PVE's `rate=` as the Interface's `ingress_policing_rate` (kbit/s), with a `QoS` row on
    /// the Port; `None` without a limit.
    pub rate_kbits: Option<i64>,
    /// `naming = "keep"`: the Port is PVE's own `veth<vmid>i<n>` row, which PVE's live edits
    /// replace by one without op-agent's marks (that is drift too).
    pub keep: bool,
}

/// The Ports the config asks for: every NIC that is not skipped, not `link_down` and has a
/// bridge. (Whether that bridge is an OVS bridge is read from the replica.)
pub fn wanted_ports(d: &Desired) -> Vec<WantPort> {
    d.nics
        .iter()
        .filter(|n| !matches!(n.mode, NicMode::Skip(_)) && !n.link_down)
        .filter_map(|n| {
            let tag = n.tag.map(|t| t.get());
            let trunks: Vec<u16> = n.trunks.iter().map(|t| t.get()).collect();
            Some(WantPort {
                net: u32::from(n.net.get()),
                name: d.port_name(n).to_string(),
                keep: d.keeps_names(),
                bridge: n.bridge.as_ref()?.to_string(),
                vlan_mode: pve_integration::ovs_vlan_mode(tag, &trunks).map(str::to_string),
                tag,
                trunks,
                rate_kbits: n
                    .rate
                    .map(|r| i64::try_from(r.kbits_per_sec()).unwrap_or(i64::MAX)),
            })
        })
        .collect()
}

/// How an owned Port differs from what the config asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// No Port of that name.
    Missing,
    /// Columns that differ: `(column, want, found)`.
    Changed(Vec<(&'static str, Value, Value)>),
}

/// One NIC's Port found not as wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    /// The wanted port.
    pub want: WantPort,
    /// What was found.
    pub found: Found,
}

impl Drift {
    /// The `watch.drift` audit detail: `{"port", "net", "found": "missing"}` or
    /// `{"port", "net", "found": "changed", "changes": [{"column", "want", "found"}]}`.
    pub fn detail(&self) -> Value {
        let mut d = json!({"port": self.want.name, "net": format!("net{}", self.want.net)});
        match &self.found {
            Found::Missing => d["found"] = json!("missing"),
            Found::Changed(c) => {
                d["found"] = json!("changed");
                d["changes"] = c
                    .iter()
                    .map(|(col, w, f)| json!({"column": col, "want": w, "found": f}))
                    .collect();
            }
        }
        d
    }
}

/// The drifts of `wants` in `t`. A NIC whose bridge is not in the replica is not due (the
/// bridge's return converges it); a Port of that name without op-agent's mark is not ours
/// (the run would refuse it), so it is not due either.
///
/// On a bridge with an MTU of its own (its Interface's `mtu_request`, which is also its
/// device's MTU once ovs-vswitchd applied it, what post-start gives a Port: pve-common
/// `$ovs_bridge_add_port`, `mtu_request=$bridgemtu`), an Interface whose `mtu_request` differs
/// has drifted. A bridge without one has its smallest port's MTU, which follows the drift, so
/// nothing is compared there ([`crate::engine::plan::desired_port`]).
pub fn drifts(wants: &[WantPort], t: &Tables) -> Vec<Drift> {
    let mut out = Vec::new();
    for w in wants.iter().filter(|w| t.has_bridge(&w.bridge)) {
        let Some((uuid, p)) = t.port_by_name(&w.name) else {
            out.push(Drift {
                want: w.clone(),
                found: Found::Missing,
            });
            continue;
        };
        let mut c = Vec::new();
        if !ownership::is_owned(&p.external_ids) {
            if !w.keep {
                continue;
            }
            // Keep mode: PVE's hotplug (tap_plug) put back its own unmarked row.
            c.push((
                "external_ids",
                json!("owner=op-agent"),
                json!(p.external_ids),
            ));
        }
        let bridge = t.bridge_of(uuid);
        if bridge != Some(w.bridge.as_str()) {
            c.push(("bridge", json!(w.bridge), json!(bridge)));
        }
        if p.tag != w.tag {
            c.push(("tag", json!(w.tag), json!(p.tag)));
        }
        if p.trunks != w.trunks {
            c.push(("trunks", json!(w.trunks), json!(p.trunks)));
        }
        if p.vlan_mode != w.vlan_mode {
            c.push(("vlan_mode", json!(w.vlan_mode), json!(p.vlan_mode)));
        }
        if p.qos != w.rate_kbits.is_some() {
            c.push(("qos", json!(w.rate_kbits.is_some()), json!(p.qos)));
        }
        let iface = t.interfaces_of(p).next();
        let bridge_mtu = t
            .interfaces
            .values()
            .find(|i| i.name == w.bridge)
            .and_then(|i| i.mtu_request);
        if let (Some(want), Some(i)) = (bridge_mtu, iface) {
            if i.mtu_request != Some(want) {
                c.push(("mtu_request", json!(want), json!(i.mtu_request)));
            }
        }
        let policing = iface.and_then(|i| i.ingress_policing_rate).unwrap_or(0);
        if policing != w.rate_kbits.unwrap_or(0) {
            c.push((
                "ingress_policing_rate",
                json!(w.rate_kbits.unwrap_or(0)),
                json!(policing),
            ));
        }
        if !c.is_empty() {
            out.push(Drift {
                want: w.clone(),
                found: Found::Changed(c),
            });
        }
    }
    out
}

/// What one window's changes touched.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Touched {
    /// Containers one of whose owned Ports (`external_ids:owner=op-agent`, `vm-id`) was
    /// inserted, deleted, changed or moved between bridges, or whose Interface row changed
    /// (`mtu_request`, `ingress_policing_rate`).
    pub owned: BTreeSet<Vmid>,
    /// PVE-named Ports (`veth<vmid>i<n>`) inserted or changed, or whose Interface changed.
    pub veth_ports: BTreeSet<String>,
    /// Names of Bridge rows inserted.
    pub new_bridges: BTreeSet<String>,
    /// Names of Bridge rows deleted (`del-br`).
    pub gone_bridges: BTreeSet<String>,
    /// Ports inserted that are neither op-agent's nor PVE-named: one may be a second Port of
    /// a keep-mode device made by its alternative name (the monitor asks netlink).
    pub other_ports: BTreeSet<String>,
}

fn owner_vmid(ids: &std::collections::BTreeMap<String, String>) -> Option<Vmid> {
    if !ownership::is_owned(ids) {
        return None;
    }
    ids.get("vm-id")?.parse().ok()
}

/// Sorts `changes` (applied to `t`, which is the state after them) into [`Touched`].
pub fn touched(changes: &[Change], t: &Tables) -> Touched {
    let mut out = Touched::default();
    let mut moved: BTreeSet<&str> = BTreeSet::new();
    for c in changes {
        match (&c.old, &c.new) {
            (None, Some(Row::Bridge(b))) => {
                out.new_bridges.insert(b.name.clone());
            }
            (Some(Row::Bridge(b)), None) => {
                out.gone_bridges.insert(b.name.clone());
            }
            (Some(Row::Bridge(o)), Some(Row::Bridge(n))) => {
                let (a, b): (BTreeSet<&str>, BTreeSet<&str>) = (
                    o.ports.iter().map(String::as_str).collect(),
                    n.ports.iter().map(String::as_str).collect(),
                );
                moved.extend(a.symmetric_difference(&b));
            }
            _ => {}
        }
        for row in [&c.old, &c.new].into_iter().flatten() {
            if let Row::Port(p) = row {
                out.owned.extend(owner_vmid(&p.external_ids));
                if c.new.is_some() && HostVeth::parse(&p.name).is_some() {
                    out.veth_ports.insert(p.name.clone());
                } else if c.old.is_none()
                    && c.new.is_some()
                    && !ownership::is_owned(&p.external_ids)
                {
                    out.other_ports.insert(p.name.clone());
                }
            }
        }
        if let Some(Row::Interface(i)) = &c.new {
            if HostVeth::parse(&i.name).is_some() {
                out.veth_ports.insert(i.name.clone());
            }
            if c.old.is_some() {
                let port = t.ports.values().find(|p| p.interfaces.contains(&c.uuid));
                out.owned
                    .extend(port.and_then(|p| owner_vmid(&p.external_ids)));
            }
        }
    }
    for u in moved {
        if let Some(p) = t.ports.get(u) {
            out.owned.extend(owner_vmid(&p.external_ids));
        }
    }
    out
}

/// When Port `name` exists and one of its Interfaces failed (`error` set or `ofport` -1:
/// ovs-vswitchd could not open the device), the error text (`ofport -1` when none).
pub fn dead_port(t: &Tables, name: &str) -> Option<String> {
    let (_, p) = t.port_by_name(name)?;
    t.interfaces_of(p)
        .find(|i| i.error.is_some() || i.ofport == Some(-1))
        .map(|i| i.error.clone().unwrap_or_else(|| "ofport -1".into()))
}

/// The one log line for a dead `veth<vmid>i<n>` row of a failed live edit.
pub fn dead_port_line(vmid: Vmid, net: u32, port: &str, link: &str, error: &str) -> String {
    format!(
        "watch: {vmid}: PVE's live edit of net{net} failed: op-agent renamed {port} to {link}, so PVE \
         could not plug it and left a dead OVS port {port} ({error}); removing that row, {link} keeps \
         its network. To change net{net} of a running container, run the same edit as \
         `op-agent set {vmid} -net{net} ...`: it hands the NIC back to PVE for the edit"
    )
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
