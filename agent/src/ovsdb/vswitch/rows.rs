//! `Port` and `Interface` rows as read back from `select` results (RFC 7047 §5.2.2), and the
//! tolerant decoding of their column values (§5.1: optional columns are an atom or
//! `["set",[]]`, sets `["set",[..]]` where a 1-element set may be the bare atom, maps
//! `["map",[[k,v],..]]`, UUIDs `["uuid","..."]`). A column of the wrong type reads as absent;
//! nothing here panics, whatever the server sent.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use crate::ovsdb::OvsdbError;

/// Columns of `Port` that [`PortRow`] is made of.
pub(super) const PORT_COLS: [&str; 8] = [
    "_uuid",
    "name",
    "tag",
    "trunks",
    "vlan_mode",
    "external_ids",
    "interfaces",
    "qos",
];

/// Columns of `Interface` that [`InterfaceRow`] is made of.
pub(super) const IFACE_COLS: [&str; 9] = [
    "_uuid",
    "name",
    "ofport",
    "error",
    "mtu_request",
    "external_ids",
    "type",
    "ingress_policing_rate",
    "ingress_policing_burst",
];

/// An `Interface` row as read back.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InterfaceRow {
    /// Row UUID.
    pub uuid: String,
    /// `Interface.name`.
    pub name: String,
    /// `Interface.ofport`: OpenFlow port number once ovs-vswitchd opened it, `-1` on failure.
    pub ofport: Option<i64>,
    /// `Interface.error`, e.g. `could not open network device X (No such device)`.
    pub error: Option<String>,
    /// `Interface.mtu_request` in bytes.
    pub mtu_request: Option<i64>,
    /// `Interface.external_ids`.
    pub external_ids: BTreeMap<String, String>,
    /// `Interface.type` (empty string = system device).
    pub kind: String,
    /// `Interface.ingress_policing_rate`, kbit/s (0 = no policing).
    pub ingress_policing_rate: Option<i64>,
    /// `Interface.ingress_policing_burst`, kbit.
    pub ingress_policing_burst: Option<i64>,
}

/// A `Port` row as read back, with its bridge and interfaces.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortRow {
    /// Row UUID.
    pub uuid: String,
    /// `Port.name`.
    pub name: String,
    /// Name of the `Bridge` whose `ports` holds this port (`None` if none does).
    pub bridge: Option<String>,
    /// `Port.tag`.
    pub tag: Option<u16>,
    /// `Port.trunks`, ascending.
    pub trunks: Vec<u16>,
    /// `Port.vlan_mode`.
    pub vlan_mode: Option<String>,
    /// `Port.external_ids`.
    pub external_ids: BTreeMap<String, String>,
    /// The rows of `Port.interfaces`.
    pub interfaces: Vec<InterfaceRow>,
    /// `Port.qos`: UUID of the `QoS` row that shapes what the port sends, if any.
    pub qos: Option<String>,
}

/// The elements of a `<set>`; any other value is a 1-element set of itself.
pub(super) fn set_elems(v: &Value) -> Vec<&Value> {
    match v.as_array().map(Vec::as_slice) {
        Some([tag, Value::Array(items)]) if tag == "set" => items.iter().collect(),
        _ => vec![v],
    }
}

/// An optional integer column: the first element, if it is an integer.
pub(super) fn opt_i64(v: Option<&Value>) -> Option<i64> {
    v.map(set_elems)?.first().and_then(|x| x.as_i64())
}

/// An optional string column: the first element, if it is a string.
pub(super) fn opt_str(v: Option<&Value>) -> Option<String> {
    v.map(set_elems)?
        .first()
        .and_then(|x| x.as_str())
        .map(str::to_string)
}

/// The id of a `["uuid", "..."]` atom.
pub(super) fn uuid_of(v: &Value) -> Option<String> {
    match v.as_array().map(Vec::as_slice) {
        Some([tag, Value::String(u)]) if tag == "uuid" => Some(u.clone()),
        _ => None,
    }
}

/// The ids of a set of UUIDs (non-UUID elements skipped).
pub(super) fn uuids(v: Option<&Value>) -> Vec<String> {
    v.map(set_elems)
        .unwrap_or_default()
        .into_iter()
        .filter_map(uuid_of)
        .collect()
}

/// A string → string `<map>` (pairs of other types skipped; empty for a non-map).
pub(super) fn str_map(v: Option<&Value>) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    if let Some(Some([tag, Value::Array(pairs)])) = v.map(|v| v.as_array().map(Vec::as_slice)) {
        if tag == "map" {
            for p in pairs {
                if let Some([Value::String(k), Value::String(val)]) =
                    p.as_array().map(Vec::as_slice)
                {
                    m.insert(k.clone(), val.clone());
                }
            }
        }
    }
    m
}

/// The `rows` of result `i` of a transaction (empty when absent or not a select result).
pub(super) fn rows(results: &[Value], i: usize) -> &[Value] {
    results
        .get(i)
        .and_then(|r| r.get("rows"))
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// The `name`s of selected rows, sorted (rows without a string name skipped).
pub(super) fn sorted_names(rows: &[Value]) -> Vec<String> {
    let mut names: Vec<String> = rows.iter().filter_map(|b| opt_str(b.get("name"))).collect();
    names.sort();
    names
}

/// `Open_vSwitch.next_cfg` from the `select` result at index `i`.
///
/// Errors: [`OvsdbError::BadReply`] when it is not there.
pub(super) fn next_cfg_of(results: &[Value], i: usize) -> Result<i64, OvsdbError> {
    rows(results, i)
        .first()
        .and_then(|r| r.get("next_cfg"))
        .and_then(Value::as_i64)
        .ok_or_else(|| OvsdbError::BadReply {
            method: "transact".into(),
            detail: format!("op {i}: no Open_vSwitch.next_cfg in select result"),
        })
}

fn parse_iface(r: &Value) -> InterfaceRow {
    InterfaceRow {
        uuid: r.get("_uuid").and_then(uuid_of).unwrap_or_default(),
        name: opt_str(r.get("name")).unwrap_or_default(),
        ofport: opt_i64(r.get("ofport")),
        error: opt_str(r.get("error")),
        mtu_request: opt_i64(r.get("mtu_request")),
        external_ids: str_map(r.get("external_ids")),
        kind: opt_str(r.get("type")).unwrap_or_default(),
        ingress_policing_rate: opt_i64(r.get("ingress_policing_rate")),
        ingress_policing_burst: opt_i64(r.get("ingress_policing_burst")),
    }
}

/// Decodes the reply of the `list_ports` transaction (RFC 7047 §5.2.2: one `{"rows": [...]}`
/// per select, in the order Bridge, Port, Interface) into [`PortRow`]s sorted by name. Columns
/// of the wrong type are read as absent; never panics, whatever the server sent.
pub fn port_rows_from_results(results: &[Value]) -> Vec<PortRow> {
    let mut ports = assemble(rows(results, 0), rows(results, 1), rows(results, 2));
    ports.sort_by(|a, b| a.name.cmp(&b.name));
    ports
}

/// Builds PortRows from selected Bridge (`name`, `ports`), Port ([`PORT_COLS`]) and Interface
/// ([`IFACE_COLS`]) rows, in the order of `ports`. A port's bridge is the one whose `ports`
/// holds its UUID; its interfaces are those of `ifaces` its `interfaces` names, in that order.
pub(super) fn assemble(bridges: &[Value], ports: &[Value], ifaces: &[Value]) -> Vec<PortRow> {
    let mut owner: HashMap<String, String> = HashMap::new();
    for b in bridges {
        let name = opt_str(b.get("name")).unwrap_or_default();
        for u in uuids(b.get("ports")) {
            owner.insert(u, name.clone());
        }
    }
    let ifaces: HashMap<String, InterfaceRow> = ifaces
        .iter()
        .map(parse_iface)
        .map(|i| (i.uuid.clone(), i))
        .collect();
    ports
        .iter()
        .map(|p| {
            let uuid = p.get("_uuid").and_then(uuid_of).unwrap_or_default();
            let vlan = |v: &Value| v.as_i64().and_then(|n| u16::try_from(n).ok());
            let mut trunks: Vec<u16> = p
                .get("trunks")
                .map(set_elems)
                .unwrap_or_default()
                .into_iter()
                .filter_map(vlan)
                .collect();
            trunks.sort_unstable();
            PortRow {
                bridge: owner.get(&uuid).cloned(),
                name: opt_str(p.get("name")).unwrap_or_default(),
                tag: opt_i64(p.get("tag")).and_then(|n| u16::try_from(n).ok()),
                trunks,
                vlan_mode: opt_str(p.get("vlan_mode")),
                external_ids: str_map(p.get("external_ids")),
                interfaces: uuids(p.get("interfaces"))
                    .iter()
                    .filter_map(|u| ifaces.get(u).cloned())
                    .collect(),
                qos: uuids(p.get("qos")).into_iter().next(),
                uuid,
            }
        })
        .collect()
}

#[cfg(test)]
#[path = "rows_tests.rs"]
mod tests;
