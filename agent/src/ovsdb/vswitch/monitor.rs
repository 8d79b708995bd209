//! A `monitor` (RFC 7047 §4.1.5) of the `Bridge`, `Port` and `Interface` tables, as typed rows:
//! the initial reply fills a [`Tables`] replica, each `update` notification (§4.1.6) is decoded
//! into [`RowUpdate`]s, and [`Tables::apply`] turns them into [`Change`]s carrying the whole row
//! before and after (a `modify` update's `old` holds only the changed columns, §4.1.6, so the
//! "before" comes from the replica). Generic: no Proxmox names here.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::rows::{opt_i64, opt_str, set_elems, str_map, uuids};
use super::Client;
use crate::ovsdb::rpc::UpdateHandler;
use crate::ovsdb::{OvsdbError, VSWITCH_DB};

/// Prefix of the monitor ids (RFC 7047 §4.1.5 `json-value`) of the table monitor; a number
/// is appended per attempt.
const TABLES_MONITOR_ID: &str = "op-agent-tables-";

/// A `Bridge` row: `name` and `ports` (Port row UUIDs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BridgeRow {
    /// `Bridge.name`.
    pub name: String,
    /// `Bridge.ports`: UUIDs of its Port rows.
    pub ports: Vec<String>,
}

/// A `Port` row: the columns op-agent sets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MonPort {
    /// `Port.name`.
    pub name: String,
    /// `Port.external_ids`.
    pub external_ids: BTreeMap<String, String>,
    /// `Port.tag`.
    pub tag: Option<u16>,
    /// `Port.trunks`, ascending.
    pub trunks: Vec<u16>,
    /// `Port.vlan_mode`.
    pub vlan_mode: Option<String>,
    /// `Port.interfaces`: UUIDs of its Interface rows.
    pub interfaces: Vec<String>,
    /// `Port.qos` references a `QoS` row.
    pub qos: bool,
}

/// An `Interface` row: name and what ovs-vswitchd made of it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MonInterface {
    /// `Interface.name`.
    pub name: String,
    /// `Interface.ofport`: `-1` when ovs-vswitchd could not open the device, absent before it
    /// tried.
    pub ofport: Option<i64>,
    /// `Interface.error`, e.g. `could not open network device veth100i0 (No such device)`.
    pub error: Option<String>,
    /// `Interface.mtu_request` in bytes.
    pub mtu_request: Option<i64>,
    /// `Interface.ingress_policing_rate`, kbit/s (0: no policing).
    pub ingress_policing_rate: Option<i64>,
}

/// A row of one of the monitored tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Row {
    /// A `Bridge` row.
    Bridge(BridgeRow),
    /// A `Port` row.
    Port(MonPort),
    /// An `Interface` row.
    Interface(MonInterface),
}

/// The monitored tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Table {
    /// `Bridge`.
    Bridge,
    /// `Port`.
    Port,
    /// `Interface`.
    Interface,
}

/// One `<row-update>` (RFC 7047 §4.1.6): the row's UUID and its new contents, `None` when it
/// was deleted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowUpdate {
    /// Which table.
    pub table: Table,
    /// Row UUID (the member name of `<table-update>`).
    pub uuid: String,
    /// `new` (every monitored column for `initial`, `insert` and `modify`), `None` for a
    /// delete.
    pub new: Option<Row>,
}

/// A row as it was before and after one update.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// Which table.
    pub table: Table,
    /// Row UUID.
    pub uuid: String,
    /// The row before (`None`: inserted).
    pub old: Option<Row>,
    /// The row after (`None`: deleted).
    pub new: Option<Row>,
}

/// A replica of the monitored rows, keyed by UUID.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tables {
    /// `Bridge` rows.
    pub bridges: BTreeMap<String, BridgeRow>,
    /// `Port` rows.
    pub ports: BTreeMap<String, MonPort>,
    /// `Interface` rows.
    pub interfaces: BTreeMap<String, MonInterface>,
}

fn vlans(v: Option<&Value>) -> Vec<u16> {
    let mut t: Vec<u16> = v
        .map(set_elems)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|x| x.as_i64().and_then(|n| u16::try_from(n).ok()))
        .collect();
    t.sort_unstable();
    t
}

/// Decodes a `<row>` (RFC 7047 §5.1) of `table`; columns of the wrong type read as absent.
fn decode_row(table: Table, r: &Value) -> Row {
    match table {
        Table::Bridge => Row::Bridge(BridgeRow {
            name: opt_str(r.get("name")).unwrap_or_default(),
            ports: uuids(r.get("ports")),
        }),
        Table::Port => Row::Port(MonPort {
            name: opt_str(r.get("name")).unwrap_or_default(),
            external_ids: str_map(r.get("external_ids")),
            tag: opt_i64(r.get("tag")).and_then(|n| u16::try_from(n).ok()),
            trunks: vlans(r.get("trunks")),
            vlan_mode: opt_str(r.get("vlan_mode")),
            interfaces: uuids(r.get("interfaces")),
            qos: !uuids(r.get("qos")).is_empty(),
        }),
        Table::Interface => Row::Interface(MonInterface {
            name: opt_str(r.get("name")).unwrap_or_default(),
            ofport: opt_i64(r.get("ofport")),
            error: opt_str(r.get("error")),
            mtu_request: opt_i64(r.get("mtu_request")),
            ingress_policing_rate: opt_i64(r.get("ingress_policing_rate")),
        }),
    }
}

/// Decodes a `<table-updates>` object (RFC 7047 §4.1.6: table name → row UUID →
/// `{"old": <row>, "new": <row>}`) into row updates, tables in the order Bridge, Port,
/// Interface. Unknown tables and members that are not objects are skipped; never panics,
/// whatever the server sent.
pub fn decode_updates(updates: &Value) -> Vec<RowUpdate> {
    let mut out = Vec::new();
    for (name, table) in [
        ("Bridge", Table::Bridge),
        ("Port", Table::Port),
        ("Interface", Table::Interface),
    ] {
        let Some(rows) = updates.get(name).and_then(Value::as_object) else {
            continue;
        };
        for (uuid, ru) in rows {
            if !ru.is_object() {
                continue;
            }
            out.push(RowUpdate {
                table,
                uuid: uuid.clone(),
                new: ru.get("new").map(|n| decode_row(table, n)),
            });
        }
    }
    out
}

impl Tables {
    /// The replica of an initial `monitor` reply (a `<table-updates>`, RFC 7047 §4.1.5).
    pub fn from_initial(initial: &Value) -> Tables {
        let mut t = Tables::default();
        t.apply(&decode_updates(initial));
        t
    }

    /// Applies `updates` in order; returns each row before and after.
    pub fn apply(&mut self, updates: &[RowUpdate]) -> Vec<Change> {
        let mut out = Vec::with_capacity(updates.len());
        for u in updates {
            let old = match (u.table, &u.new) {
                (Table::Bridge, Some(Row::Bridge(b))) => self
                    .bridges
                    .insert(u.uuid.clone(), b.clone())
                    .map(Row::Bridge),
                (Table::Port, Some(Row::Port(p))) => {
                    self.ports.insert(u.uuid.clone(), p.clone()).map(Row::Port)
                }
                (Table::Interface, Some(Row::Interface(i))) => self
                    .interfaces
                    .insert(u.uuid.clone(), i.clone())
                    .map(Row::Interface),
                (Table::Bridge, _) => self.bridges.remove(&u.uuid).map(Row::Bridge),
                (Table::Port, _) => self.ports.remove(&u.uuid).map(Row::Port),
                (Table::Interface, _) => self.interfaces.remove(&u.uuid).map(Row::Interface),
            };
            out.push(Change {
                table: u.table,
                uuid: u.uuid.clone(),
                old,
                new: u.new.clone(),
            });
        }
        out
    }

    /// The Port named `name` and its UUID.
    pub fn port_by_name(&self, name: &str) -> Option<(&str, &MonPort)> {
        self.ports
            .iter()
            .find(|(_, p)| p.name == name)
            .map(|(u, p)| (u.as_str(), p))
    }

    /// The name of the Bridge whose `ports` holds Port `uuid`.
    pub fn bridge_of(&self, port_uuid: &str) -> Option<&str> {
        self.bridges
            .values()
            .find(|b| b.ports.iter().any(|p| p == port_uuid))
            .map(|b| b.name.as_str())
    }

    /// Whether a Bridge named `name` exists.
    pub fn has_bridge(&self, name: &str) -> bool {
        self.bridges.values().any(|b| b.name == name)
    }

    /// The Interface rows of `port`, in its `interfaces` order (unknown UUIDs skipped).
    pub fn interfaces_of<'a>(
        &'a self,
        port: &'a MonPort,
    ) -> impl Iterator<Item = &'a MonInterface> {
        port.interfaces
            .iter()
            .filter_map(|u| self.interfaces.get(u))
    }
}

/// The monitor requests (RFC 7047 §4.1.5 `<monitor-requests>`): every change (initial,
/// insert, delete, modify) of the columns [`Tables`] holds.
fn tables_request() -> Value {
    json!({
        "Bridge": {"columns": ["name", "ports"]},
        "Port": {"columns": ["name", "external_ids", "tag", "trunks", "vlan_mode", "interfaces", "qos"]},
        "Interface": {"columns": ["name", "ofport", "error", "mtu_request", "ingress_policing_rate"]},
    })
}

impl Client {
    /// Starts a `monitor` (RFC 7047 §4.1.5) of the `Bridge` (`name`, `ports`), `Port` (`name`,
    /// `external_ids`, `tag`, `trunks`, `vlan_mode`, `interfaces`) and `Interface` (`name`,
    /// `ofport`, `error`, `mtu_request`) tables. Returns the replica made from the initial
    /// reply, and a receiver of every later `update` (§4.1.6), decoded, in arrival order. The
    /// receiver never ends by itself: watch [`Client::closed`] for the connection's end.
    ///
    /// Errors: those of [`Client::call`].
    pub async fn monitor_tables(
        &self,
    ) -> Result<(Tables, mpsc::UnboundedReceiver<Vec<RowUpdate>>), OvsdbError> {
        let attempt = self.monitor_attempts.fetch_add(1, Ordering::Relaxed) + 1;
        let id = format!("{TABLES_MONITOR_ID}{attempt}");
        let (tx, rx) = mpsc::unbounded_channel();
        let on_update: UpdateHandler = Arc::new(move |u| {
            let _ = tx.send(decode_updates(u));
        });
        let initial = self
            .rpc
            .monitor(VSWITCH_DB, &id, tables_request(), on_update)
            .await?;
        Ok((Tables::from_initial(&initial), rx))
    }

    /// Resolves once the connection is gone, to the [`OvsdbError::ConnectionClosed`] that
    /// calls fail with.
    pub async fn closed(&self) -> OvsdbError {
        self.rpc.closed().await
    }
}

#[cfg(test)]
#[path = "monitor_tests.rs"]
mod tests;
