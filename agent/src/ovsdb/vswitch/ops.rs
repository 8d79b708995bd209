//! The transactions op-agent runs on the `Open_vSwitch` database, as pure builders of
//! RFC 7047 §5.2 operations, and the mapping of an aborted transaction to the error of the
//! guard that aborted it.
//!
//! A change is one transaction whose `wait` ops (§5.2.6, `timeout` 0) are guards: each carries
//! a [`Guard`] tag (never sent), and when the server reports that op failed the transaction
//! was aborted and [`failed_guard`] names the guard, so the error says which precondition did
//! not hold. Changes end with `next_cfg += 1` and a `select` of `next_cfg` (the value to wait
//! for in `cur_cfg`); see [`cfg_index`].

use crate::ovsdb::proto::{
    failed_guard, Cond, Datum, Mutation, Mutator, NamedUuid, Op, Row, Until, Uuid,
};
use crate::ovsdb::OvsdbError;

use super::rows::{IFACE_COLS, PORT_COLS};
use super::{DelGuard, PortRate, PortSpec};

/// What a guard `wait` of a change checks; its failure aborts the whole transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guard {
    /// The `Bridge` row to add the port to exists ([`OvsdbError::NoSuchBridge`]).
    Bridge,
    /// No `Port` row has the new port's name ([`OvsdbError::PortExists`]).
    NoPort,
    /// No `Interface` row has the new port's name ([`OvsdbError::PortExists`]).
    NoInterface,
    /// The `Port` row of a remembered UUID still has the name to delete (the UUID is a hint).
    SameName,
    /// The `Port` row of that UUID still has the name and the owner mark in `external_ids`
    /// ([`OvsdbError::NotOwned`]).
    Owned,
}

/// An operation of these transactions.
pub type VsOp = Op<Guard>;

fn strings(cols: &[&str]) -> Vec<String> {
    cols.iter().map(|c| c.to_string()).collect()
}

fn select(table: &str, conds: Vec<Cond>, cols: &[&str]) -> VsOp {
    Op::Select {
        table: table.to_string(),
        conds,
        columns: Some(strings(cols)),
    }
}

fn comment(text: String) -> VsOp {
    Op::Comment { comment: text }
}

/// A `wait` (timeout 0) that the `name` column of the rows matching `conds` is `rows`.
fn wait_names(table: &str, conds: Vec<Cond>, rows: Vec<Row>, guard: Guard) -> VsOp {
    Op::Wait {
        table: table.to_string(),
        timeout: Some(0),
        conds,
        columns: strings(&["name"]),
        until: Until::Eq,
        rows,
        guard: Some(guard),
    }
}

fn name_row(name: &str) -> Row {
    Row::from([("name".to_string(), Datum::from(name))])
}

fn uuid_set(uuid: &str) -> Datum {
    Datum::Set(vec![Uuid(uuid.to_string()).into()])
}

/// `[select Bridge where name == name, columns name]`: whether the bridge exists.
pub fn bridge_exists(name: &str) -> Vec<VsOp> {
    vec![select("Bridge", vec![Cond::eq("name", name)], &["name"])]
}

/// `[select Bridge, columns name]`: every bridge name.
pub fn bridge_names() -> Vec<VsOp> {
    vec![select("Bridge", vec![], &["name"])]
}

/// The snapshot read: all Bridges' `name`/`ports`, then per name (give them sorted and
/// deduplicated) the Port and the Interface of that name; result `1 + 2i` holds the Port
/// rows of `names[i]`, `2 + 2i` its Interface rows.
pub fn snapshot(names: &[&str]) -> Vec<VsOp> {
    let mut ops = vec![select("Bridge", vec![], &["name", "ports"])];
    for n in names {
        ops.push(select("Port", vec![Cond::eq("name", *n)], &PORT_COLS));
        ops.push(select("Interface", vec![Cond::eq("name", *n)], &IFACE_COLS));
    }
    ops
}

/// One `select` of the Interface row per UUID in `uuids`.
pub fn interfaces_by_uuid(uuids: &[String]) -> Vec<VsOp> {
    uuids
        .iter()
        .map(|u| {
            select(
                "Interface",
                vec![Cond::eq("_uuid", Uuid(u.clone()))],
                &IFACE_COLS,
            )
        })
        .collect()
}

/// `[Port of that name, all Bridges' name/ports, Interface of that name]`.
pub fn get_port(name: &str) -> Vec<VsOp> {
    vec![
        select("Port", vec![Cond::eq("name", name)], &PORT_COLS),
        select("Bridge", vec![], &["name", "ports"]),
        select("Interface", vec![Cond::eq("name", name)], &IFACE_COLS),
    ]
}

/// `[all Bridges, all Ports, all Interfaces]`, as
/// [`port_rows_from_results`](super::port_rows_from_results) reads them.
pub fn list_ports() -> Vec<VsOp> {
    vec![
        select("Bridge", vec![], &["name", "ports"]),
        select("Port", vec![], &PORT_COLS),
        select("Interface", vec![], &IFACE_COLS),
    ]
}

/// `[select Interface where name == name, columns ofport, error]`.
pub fn interface_status(name: &str) -> Vec<VsOp> {
    vec![select(
        "Interface",
        vec![Cond::eq("name", name)],
        &["ofport", "error"],
    )]
}

/// `[select Port where name == name, columns _uuid, external_ids]`: the row to delete.
pub fn port_to_delete(name: &str) -> Vec<VsOp> {
    vec![select(
        "Port",
        vec![Cond::eq("name", name)],
        &["_uuid", "external_ids"],
    )]
}

/// `next_cfg += 1`, then `select next_cfg`: always the last two ops of a change.
pub(super) fn bump_and_read_cfg() -> [VsOp; 2] {
    [
        Op::Mutate {
            table: "Open_vSwitch".into(),
            conds: vec![],
            mutations: vec![Mutation::new("next_cfg", Mutator::Add, 1)],
        },
        select("Open_vSwitch", vec![], &["next_cfg"]),
    ]
}

/// Index of the `select next_cfg` result of a change built here (its last op).
pub fn cfg_index(ops: &[VsOp]) -> usize {
    ops.len().saturating_sub(1)
}

/// Index of the `Bridge.ports delete` mutate in [`del_port`]'s ops (before the bump).
pub fn del_mutate_index(ops: &[VsOp]) -> usize {
    ops.len().saturating_sub(3)
}

/// Adds `spec`: comment; guards [`Guard::Bridge`], [`Guard::NoPort`], [`Guard::NoInterface`];
/// insert Interface and Port; `Bridge.ports insert`; the `next_cfg` bump.
pub fn add_port(spec: &PortSpec) -> Vec<VsOp> {
    let mut ops = vec![comment(format!(
        "op-agent: add-port {} {}",
        spec.bridge, spec.name
    ))];
    ops.extend(add_port_ops(spec));
    ops.extend(bump_and_read_cfg());
    ops
}

/// Deletes Port row `uuid` named `name` from its bridge: comment; guard [`Guard::Owned`]
/// (with [`DelGuard::OwnedBy`]) or [`Guard::SameName`]; `Bridge.ports delete`
/// ([`del_mutate_index`]); the `next_cfg` bump.
pub fn del_port(name: &str, uuid: &str, guard: &DelGuard) -> Vec<VsOp> {
    let mut ops = vec![comment(format!("op-agent: del-port {name}"))];
    ops.extend(del_port_ops(name, uuid, guard, true));
    ops.extend(bump_and_read_cfg());
    ops
}

/// Replaces port `del_name` (row `del_uuid`, when it exists) by `spec`: comment; if
/// `del_uuid`, guard [`Guard::Owned`] (only with [`DelGuard::OwnedBy`]), `Bridge.ports
/// delete` and explicit deletes of the old Port and Interface rows; then the ops of
/// [`add_port`] after its comment.
pub fn replace_port(
    del_name: &str,
    del_uuid: Option<&str>,
    guard: &DelGuard,
    spec: &PortSpec,
) -> Vec<VsOp> {
    let mut ops = vec![comment(format!(
        "op-agent: replace-port {} by {} {}",
        del_name, spec.bridge, spec.name
    ))];
    ops.extend(replace_port_ops(del_name, del_uuid, guard, spec));
    ops.extend(bump_and_read_cfg());
    ops
}

/// The ops of one replace in [`replace_port`], without the comment and the `next_cfg` bump
/// (a batch of replaces shares those).
pub(super) fn replace_port_ops(
    del_name: &str,
    del_uuid: Option<&str>,
    guard: &DelGuard,
    spec: &PortSpec,
) -> Vec<VsOp> {
    let mut ops = Vec::new();
    if let Some(uuid) = del_uuid {
        ops.extend(del_port_ops(del_name, uuid, guard, false));
        // Unreferenced rows are only garbage-collected at commit: delete them explicitly so
        // the insert's "no Port/Interface of that name" guards pass when the new port has the
        // old one's name.
        ops.push(Op::Delete {
            table: "Port".into(),
            conds: vec![Cond::eq("_uuid", Uuid(uuid.to_string()))],
        });
        ops.push(Op::Delete {
            table: "Interface".into(),
            conds: vec![Cond::eq("name", del_name)],
        });
    }
    ops.extend(add_port_ops(spec));
    ops
}

/// Ops that delete Port `uuid` (named `name`) from its bridge; the last op is the mutate.
/// With [`DelGuard::OwnedBy`], or when `check_name`, the first op is a guard `wait` that the
/// row of that UUID still has this name (and the owner mark): a remembered UUID is a hint.
/// With [`DelGuard::OwnedBy`] the port's own QoS and Queue rows go too ([`del_qos_ops`]).
pub(super) fn del_port_ops(
    name: &str,
    uuid: &str,
    guard: &DelGuard,
    check_name: bool,
) -> Vec<VsOp> {
    let by_uuid = Cond::eq("_uuid", Uuid(uuid.to_string()));
    let mut ops = Vec::new();
    match guard {
        DelGuard::OwnedBy { key, value } => {
            let mark = Datum::Map(vec![(key.as_str().into(), value.as_str().into())]);
            ops.push(wait_names(
                "Port",
                vec![by_uuid, Cond::includes("external_ids", mark)],
                vec![name_row(name)],
                Guard::Owned,
            ));
        }
        DelGuard::Any if check_name => ops.push(wait_names(
            "Port",
            vec![by_uuid],
            vec![name_row(name)],
            Guard::SameName,
        )),
        DelGuard::Any => {}
    }
    if let DelGuard::OwnedBy { key, value } = guard {
        // A port op-agent made may carry QoS/Queue rows: roots of the schema, which nothing
        // but these deletes removes (none match for a port without a rate).
        ops.extend(del_qos_ops(name, uuid, key, value));
    }
    ops.push(Op::Mutate {
        table: "Bridge".into(),
        conds: vec![Cond::includes("ports", uuid_set(uuid))],
        mutations: vec![Mutation::new("ports", Mutator::Delete, uuid_set(uuid))],
    });
    ops
}

/// The guarded insert of `spec`: [wait bridge, wait no port, wait no interface, insert
/// Interface, insert Port, mutate Bridge].
pub(super) fn add_port_ops(spec: &PortSpec) -> Vec<VsOp> {
    let name = spec.name.as_str();
    let ext = Datum::string_map(&spec.external_ids);
    let mut iface = name_row(name);
    iface.insert("external_ids".into(), ext.clone());
    if let Some(m) = spec.mtu_request {
        iface.insert("mtu_request".into(), i64::from(m).into());
    }
    if let Some(r) = &spec.rate {
        iface.insert("ingress_policing_rate".into(), int(r.policing_kbits).into());
        iface.insert(
            "ingress_policing_burst".into(),
            int(r.policing_burst_kbits).into(),
        );
    }
    let mut port = name_row(name);
    port.insert("interfaces".into(), NamedUuid("iface".into()).into());
    port.insert("external_ids".into(), ext);
    if let Some(t) = spec.tag {
        port.insert("tag".into(), i64::from(t).into());
    }
    if !spec.trunks.is_empty() {
        let trunks = spec.trunks.iter().map(|&t| i64::from(t).into()).collect();
        port.insert("trunks".into(), Datum::Set(trunks));
    }
    if let Some(m) = &spec.vlan_mode {
        port.insert("vlan_mode".into(), m.as_str().into());
    }
    if spec.rate.is_some() {
        port.insert("qos".into(), NamedUuid("qos".into()).into());
    }
    let bridge = spec.bridge.as_str();
    let mut ops = vec![
        wait_names(
            "Bridge",
            vec![Cond::eq("name", bridge)],
            vec![name_row(bridge)],
            Guard::Bridge,
        ),
        wait_names("Port", vec![Cond::eq("name", name)], vec![], Guard::NoPort),
        wait_names(
            "Interface",
            vec![Cond::eq("name", name)],
            vec![],
            Guard::NoInterface,
        ),
        Op::Insert {
            table: "Interface".into(),
            row: iface,
            uuid_name: Some("iface".into()),
        },
    ];
    if let Some(r) = &spec.rate {
        // Rows an earlier port of this name left (its Port deleted by another client, e.g.
        // `ovs-vsctl del-port`, which leaves QoS and Queue rows: roots of the schema): the
        // NoPort guard above holds, so no Port references them.
        let ids = qos_ids(spec);
        for table in ["QoS", "Queue"] {
            ops.push(Op::Delete {
                table: table.into(),
                conds: vec![Cond::includes("external_ids", ids.clone())],
            });
        }
        ops.extend(qos_inserts(spec, r));
    }
    ops.push(Op::Insert {
        table: "Port".into(),
        row: port,
        uuid_name: Some("port".into()),
    });
    ops.push(Op::Mutate {
        table: "Bridge".into(),
        conds: vec![Cond::eq("name", bridge)],
        mutations: vec![Mutation::new(
            "ports",
            Mutator::Insert,
            Datum::Set(vec![NamedUuid("port".into()).into()]),
        )],
    });
    ops
}

/// `external_ids` key naming, on a `QoS` or `Queue` row, the port it was made for.
pub const QOS_PORT_KEY: &str = "port";

/// An OVSDB integer (RFC 7047 §5.1) of `n`, saturated at `i64::MAX`.
fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The `external_ids` of the QoS and Queue rows of `spec`: the port's own plus
/// [`QOS_PORT_KEY`]`=<port name>`.
fn qos_ids(spec: &PortSpec) -> Datum {
    let mut ids = spec.external_ids.clone();
    ids.insert(QOS_PORT_KEY.to_string(), spec.name.clone());
    Datum::string_map(&ids)
}

/// Inserts `Queue` 0 (`other_config:max-rate`, `burst`; named `queue`) and a `linux-htb`
/// `QoS` (`other_config:max-rate`, `queues` `{0: queue}`; named `qos`, which `Port.qos`
/// references). ovs-vswitchd makes htb class `1:1` (queue 0, the qdisc's default) from the
/// Queue row; without one (OVS 3.1) it still makes that class, capped at the QoS `max-rate` but
/// with a burst of one MTU: the Queue carries PVE's 1 MiB burst (OVS `vswitch.xml`, QoS type
/// `linux-htb`). Both tables are roots of `vswitch.ovsschema`: nothing deletes these rows but
/// [`del_qos_ops`].
fn qos_inserts(spec: &PortSpec, r: &PortRate) -> [VsOp; 2] {
    let ids = qos_ids(spec);
    let max = r.max_rate_bits.to_string();
    let queue = Row::from([
        (
            "other_config".to_string(),
            Datum::Map(vec![
                ("burst".into(), r.burst_bits.to_string().into()),
                ("max-rate".into(), max.as_str().into()),
            ]),
        ),
        ("external_ids".to_string(), ids.clone()),
    ]);
    let qos = Row::from([
        ("type".to_string(), Datum::from("linux-htb")),
        (
            "other_config".to_string(),
            Datum::Map(vec![("max-rate".into(), max.as_str().into())]),
        ),
        (
            "queues".to_string(),
            Datum::Map(vec![(0i64.into(), NamedUuid("queue".into()).into())]),
        ),
        ("external_ids".to_string(), ids),
    ]);
    [
        Op::Insert {
            table: "Queue".into(),
            row: queue,
            uuid_name: Some("queue".into()),
        },
        Op::Insert {
            table: "QoS".into(),
            row: qos,
            uuid_name: Some("qos".into()),
        },
    ]
}

/// Deletes the `QoS` and `Queue` rows made for port `name` (row `port_uuid`): clears that
/// Port's `qos`, then deletes the rows whose `external_ids` include `key=value` (the owner
/// mark) and [`QOS_PORT_KEY`]`=name`, so rows of another owner or port are never touched
/// (RFC 7047 §5.2.5 `delete` with an `includes` condition). The `qos` is cleared first because
/// ovsdb-server checks referential integrity before it garbage-collects the Port that a
/// `Bridge.ports delete` left unreferenced: a still-referenced QoS row aborts the commit.
pub fn del_qos_ops(name: &str, port_uuid: &str, key: &str, value: &str) -> [VsOp; 3] {
    let mark = || {
        Datum::Map(vec![
            (key.into(), value.into()),
            (QOS_PORT_KEY.into(), name.into()),
        ])
    };
    [
        Op::Update {
            table: "Port".into(),
            conds: vec![Cond::eq("_uuid", Uuid(port_uuid.to_string()))],
            row: Row::from([("qos".to_string(), Datum::Set(vec![]))]),
        },
        Op::Delete {
            table: "QoS".into(),
            conds: vec![Cond::includes("external_ids", mark())],
        },
        Op::Delete {
            table: "Queue".into(),
            conds: vec![Cond::includes("external_ids", mark())],
        },
    ]
}

/// Deletes the `QoS` and `Queue` rows whose `external_ids` include every pair of `marks`
/// ([`super::Client::del_qos_marked`]).
pub fn del_qos_marked(marks: &std::collections::BTreeMap<String, String>) -> Vec<VsOp> {
    let mark = Datum::string_map(marks);
    let mut ops = vec![comment(
        "op-agent: delete unreferenced QoS/Queue rows".into(),
    )];
    for table in ["QoS", "Queue"] {
        ops.push(Op::Delete {
            table: table.into(),
            conds: vec![Cond::includes("external_ids", mark.clone())],
        });
    }
    ops
}

/// [`OvsdbError::NotOwned`] for port `name` and the mark `key=value`.
pub fn not_owned(name: &str, key: &str, value: &str) -> OvsdbError {
    OvsdbError::NotOwned {
        port: name.to_string(),
        key: key.to_string(),
        value: value.to_string(),
    }
}

/// Whether the transaction of [`del_port`] (`ops`) failed at its guard: the row of that UUID
/// no longer has the name (or the owner mark), or is gone.
pub fn row_guard_failed(ops: &[VsOp], e: &OvsdbError) -> bool {
    matches!(failed_guard(ops, e), Some(Guard::SameName | Guard::Owned))
}

/// Maps the failure `e` of an [`add_port`] or [`replace_port`] transaction (`ops`; `replaced`
/// the name and [`DelGuard`] of the replaced port) to the error of the guard that aborted it:
/// [`Guard::Bridge`] → [`OvsdbError::NoSuchBridge`], [`Guard::NoPort`] and
/// [`Guard::NoInterface`] → [`OvsdbError::PortExists`], [`Guard::Owned`] →
/// [`OvsdbError::NotOwned`]; any other error is returned as it is.
pub fn change_error(
    ops: &[VsOp],
    e: OvsdbError,
    spec: &PortSpec,
    replaced: Option<(&str, &DelGuard)>,
) -> OvsdbError {
    match (failed_guard(ops, &e), replaced) {
        (Some(Guard::Bridge), _) => OvsdbError::NoSuchBridge {
            bridge: spec.bridge.clone(),
            port: spec.name.clone(),
        },
        (Some(Guard::NoPort | Guard::NoInterface), _) => OvsdbError::PortExists {
            port: spec.name.clone(),
        },
        (Some(Guard::Owned), Some((name, DelGuard::OwnedBy { key, value }))) => {
            not_owned(name, key, value)
        }
        _ => e,
    }
}

#[cfg(test)]
#[path = "ops_tests.rs"]
mod tests;
