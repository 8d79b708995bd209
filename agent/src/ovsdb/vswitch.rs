//! Operations on the `Open_vSwitch` database (`vswitch.ovsschema` 8.x): bridges, ports and
//! interfaces, each one transaction where possible, with `wait` ops as guards so a change is
//! all-or-nothing. Generic: no Proxmox names or vmids here.
//!
//! Value encodings follow RFC 7047 §5.1: optional columns are an atom or `["set",[]]`, sets
//! `["set",[..]]` (a 1-element set may be the bare atom), maps `["map",[[k,v],..]]`, UUIDs
//! `["uuid","..."]`.

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Value};

use super::{Client, OvsdbError, VSWITCH_DB};

/// A port to add: one `Port` row with one `Interface` row of the same name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortSpec {
    /// Port and interface name (`Port.name`, `Interface.name`; the netdev name, ≤ 15 bytes).
    pub name: String,
    /// Name of the `Bridge` row whose `ports` gets the new port.
    pub bridge: String,
    /// `Port.tag`: access VLAN (0–4095 per schema), none when `None`.
    pub tag: Option<u16>,
    /// `Port.trunks`: trunk VLANs (0–4095 each); empty = all.
    pub trunks: Vec<u16>,
    /// `Port.vlan_mode` (`trunk`, `access`, `native-tagged`, `native-untagged`, ...).
    pub vlan_mode: Option<String>,
    /// `Interface.mtu_request` in bytes.
    pub mtu_request: Option<u32>,
    /// `external_ids`, written on BOTH the Port and the Interface row.
    pub external_ids: BTreeMap<String, String>,
}

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
}

/// What [`Client::del_port`] must check before deleting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DelGuard {
    /// Delete whatever port has that name.
    Any,
    /// Delete only if the Port's `external_ids` has `key=value` (checked by a `wait` op inside
    /// the deleting transaction, so a row changed meanwhile is never deleted).
    OwnedBy {
        /// `external_ids` key, e.g. `owner`.
        key: String,
        /// Required value.
        value: String,
    },
}

/// What [`Client::snapshot`] read in one transaction: every bridge name and the Ports asked
/// for by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Names of all `Bridge` rows, sorted.
    pub bridges: Vec<String>,
    /// The Ports found, keyed by `Port.name` (names asked for but absent have no entry).
    pub ports: BTreeMap<String, PortRow>,
}

const PORT_COLS: [&str; 7] = [
    "_uuid",
    "name",
    "tag",
    "trunks",
    "vlan_mode",
    "external_ids",
    "interfaces",
];
const IFACE_COLS: [&str; 7] = [
    "_uuid",
    "name",
    "ofport",
    "error",
    "mtu_request",
    "external_ids",
    "type",
];

fn set_elems(v: &Value) -> Vec<&Value> {
    match v.as_array().map(Vec::as_slice) {
        Some([tag, Value::Array(items)]) if tag == "set" => items.iter().collect(),
        _ => vec![v],
    }
}

fn opt_i64(v: Option<&Value>) -> Option<i64> {
    v.map(set_elems)?.first().and_then(|x| x.as_i64())
}

fn opt_str(v: Option<&Value>) -> Option<String> {
    v.map(set_elems)?
        .first()
        .and_then(|x| x.as_str())
        .map(str::to_string)
}

fn uuid_of(v: &Value) -> Option<String> {
    match v.as_array().map(Vec::as_slice) {
        Some([tag, Value::String(u)]) if tag == "uuid" => Some(u.clone()),
        _ => None,
    }
}

fn uuids(v: Option<&Value>) -> Vec<String> {
    v.map(set_elems)
        .unwrap_or_default()
        .into_iter()
        .filter_map(uuid_of)
        .collect()
}

fn str_map(v: Option<&Value>) -> BTreeMap<String, String> {
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

fn map_value(m: &BTreeMap<String, String>) -> Value {
    json!([
        "map",
        m.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>()
    ])
}

fn rows(results: &[Value], i: usize) -> &[Value] {
    results
        .get(i)
        .and_then(|r| r.get("rows"))
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn select(table: &str, cond: Value, cols: &[&str]) -> Value {
    json!({"op": "select", "table": table, "where": cond, "columns": cols})
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

/// Builds PortRows from selected Bridge (`name`, `ports`), Port and Interface rows.
fn assemble(bridges: &[Value], ports: &[Value], ifaces: &[Value]) -> Vec<PortRow> {
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
                uuid,
            }
        })
        .collect()
}

fn next_cfg_of(results: &[Value], i: usize) -> Result<i64, OvsdbError> {
    rows(results, i)
        .first()
        .and_then(|r| r.get("next_cfg"))
        .and_then(Value::as_i64)
        .ok_or_else(|| OvsdbError::BadReply {
            method: "transact".into(),
            detail: format!("op {i}: no Open_vSwitch.next_cfg in select result"),
        })
}

fn bump_and_read_cfg() -> [Value; 2] {
    [
        json!({"op": "mutate", "table": "Open_vSwitch", "where": [],
               "mutations": [["next_cfg", "+=", 1]]}),
        select("Open_vSwitch", json!([]), &["next_cfg"]),
    ]
}

fn is_wait_abort(e: &OvsdbError, at: usize) -> bool {
    matches!(e, OvsdbError::OpFailed { index, op, .. } if *index == at && op == "wait")
}

impl Client {
    /// Whether a `Bridge` row named `name` exists. One `select`.
    ///
    /// Errors: those of [`Client::transact`].
    pub async fn bridge_exists(&self, name: &str) -> Result<bool, OvsdbError> {
        let r = self
            .transact(
                VSWITCH_DB,
                vec![select("Bridge", json!([["name", "==", name]]), &["name"])],
            )
            .await?;
        Ok(!rows(&r, 0).is_empty())
    }

    /// Names of all `Bridge` rows, sorted. One `select`.
    ///
    /// Errors: those of [`Client::transact`].
    pub async fn bridge_names(&self) -> Result<Vec<String>, OvsdbError> {
        let r = self
            .transact(VSWITCH_DB, vec![select("Bridge", json!([]), &["name"])])
            .await?;
        let mut names: Vec<String> = rows(&r, 0)
            .iter()
            .filter_map(|b| opt_str(b.get("name")))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Bridge names and the Ports named `names` (with their bridge and interfaces), read in ONE
    /// transaction (RFC 7047 §5.2.2 `select`s: all Bridges' `name`/`ports`, then per name the
    /// Port and the Interface of that name), instead of one round trip per name. A second
    /// transaction only when a port has interfaces named differently (bonds). Row UUIDs of the
    /// ports read are remembered so that a following [`Client::del_port`] needs no select.
    ///
    /// Errors: those of [`Client::transact`].
    pub async fn snapshot(&self, names: &[&str]) -> Result<Snapshot, OvsdbError> {
        let mut uniq: Vec<&str> = names.to_vec();
        uniq.sort_unstable();
        uniq.dedup();
        let mut ops = vec![select("Bridge", json!([]), &["name", "ports"])];
        for n in &uniq {
            let by_name = json!([["name", "==", n]]);
            ops.push(select("Port", by_name.clone(), &PORT_COLS));
            ops.push(select("Interface", by_name, &IFACE_COLS));
        }
        let r = self.transact(VSWITCH_DB, ops).await?;
        let bridges = rows(&r, 0);
        let mut names: Vec<String> = bridges
            .iter()
            .filter_map(|b| opt_str(b.get("name")))
            .collect();
        names.sort();
        let mut ports = Vec::new();
        let mut ifaces = Vec::new();
        for i in 0..uniq.len() {
            ports.extend_from_slice(rows(&r, 1 + 2 * i));
            ifaces.extend_from_slice(rows(&r, 2 + 2 * i));
        }
        self.fetch_missing_ifaces(&ports, &mut ifaces).await?;
        let mut out = BTreeMap::new();
        for p in assemble(bridges, &ports, &ifaces) {
            self.remember_uuid(&p);
            out.insert(p.name.clone(), p);
        }
        Ok(Snapshot {
            bridges: names,
            ports: out,
        })
    }

    /// Adds to `ifaces` the Interface rows of `ports` it lacks (one transaction, if any).
    async fn fetch_missing_ifaces(
        &self,
        ports: &[Value],
        ifaces: &mut Vec<Value>,
    ) -> Result<(), OvsdbError> {
        let have: Vec<String> = ifaces
            .iter()
            .filter_map(|i| i.get("_uuid").and_then(uuid_of))
            .collect();
        let missing: Vec<Value> = ports
            .iter()
            .flat_map(|p| uuids(p.get("interfaces")))
            .filter(|u| !have.contains(u))
            .map(|u| {
                select(
                    "Interface",
                    json!([["_uuid", "==", ["uuid", u]]]),
                    &IFACE_COLS,
                )
            })
            .collect();
        if !missing.is_empty() {
            let more = self.transact(VSWITCH_DB, missing).await?;
            for i in 0..more.len() {
                ifaces.extend_from_slice(rows(&more, i));
            }
        }
        Ok(())
    }

    fn remember_uuid(&self, p: &PortRow) {
        if !p.uuid.is_empty() {
            self.port_uuids().insert(p.name.clone(), p.uuid.clone());
        }
    }

    /// The `Port` named `name` with its bridge and interfaces, `None` if absent.
    ///
    /// One transaction (Port by name, all Bridges' `ports`, Interface of the same name); a
    /// second select only if the port has interfaces named differently (bonds).
    /// Errors: those of [`Client::transact`].
    pub async fn get_port(&self, name: &str) -> Result<Option<PortRow>, OvsdbError> {
        let by_name = json!([["name", "==", name]]);
        let r = self
            .transact(
                VSWITCH_DB,
                vec![
                    select("Port", by_name.clone(), &PORT_COLS),
                    select("Bridge", json!([]), &["name", "ports"]),
                    select("Interface", by_name, &IFACE_COLS),
                ],
            )
            .await?;
        let mut ifaces = rows(&r, 2).to_vec();
        let Some(port) = rows(&r, 0).first() else {
            return Ok(None);
        };
        self.fetch_missing_ifaces(std::slice::from_ref(port), &mut ifaces)
            .await?;
        let p = assemble(rows(&r, 1), std::slice::from_ref(port), &ifaces)
            .into_iter()
            .next();
        if let Some(p) = &p {
            self.remember_uuid(p);
        }
        Ok(p)
    }

    /// All `Port` rows with their bridge and interfaces, sorted by name. One transaction
    /// selecting Bridge, Port and Interface (for gc, status and ownership sweeps).
    ///
    /// Errors: those of [`Client::transact`].
    pub async fn list_ports(&self) -> Result<Vec<PortRow>, OvsdbError> {
        let r = self
            .transact(
                VSWITCH_DB,
                vec![
                    select("Bridge", json!([]), &["name", "ports"]),
                    select("Port", json!([]), &PORT_COLS),
                    select("Interface", json!([]), &IFACE_COLS),
                ],
            )
            .await?;
        let ports = port_rows_from_results(&r);
        for p in &ports {
            self.remember_uuid(p);
        }
        Ok(ports)
    }

    /// `(ofport, error)` of the `Interface` named `name`, `None` if there is no such row.
    /// Read after [`Client::wait_cur_cfg`]: ofport > 0 and no error means ovs-vswitchd opened
    /// the device.
    ///
    /// Errors: those of [`Client::transact`].
    pub async fn interface_status(
        &self,
        name: &str,
    ) -> Result<Option<(Option<i64>, Option<String>)>, OvsdbError> {
        let r = self
            .transact(
                VSWITCH_DB,
                vec![select(
                    "Interface",
                    json!([["name", "==", name]]),
                    &["ofport", "error"],
                )],
            )
            .await?;
        Ok(rows(&r, 0)
            .first()
            .map(|i| (opt_i64(i.get("ofport")), opt_str(i.get("error")))))
    }

    /// Adds `spec` as a Port + Interface in ONE transaction: comment; `wait` that the Bridge
    /// exists; `wait` that no Port and no Interface has the name; insert Interface (mtu_request,
    /// external_ids) and Port (tag, trunks, vlan_mode, external_ids); `Bridge.ports insert`;
    /// `next_cfg += 1`; select `next_cfg`. Returns that `next_cfg`, to pass to
    /// [`Client::wait_cur_cfg`]. Equivalent of `ovs-vsctl add-port` without the wait.
    ///
    /// Errors: [`OvsdbError::NoSuchBridge`], [`OvsdbError::PortExists`] (nothing changed in
    /// either case), and those of [`Client::transact`] (e.g. `constraint violation` for a tag
    /// outside 0–4095).
    pub async fn add_port(&self, spec: &PortSpec) -> Result<i64, OvsdbError> {
        let mut ops = vec![json!({"op": "comment",
            "comment": format!("op-agent: add-port {} {}", spec.bridge, spec.name)})];
        ops.extend(add_port_ops(spec));
        let cfg_at = ops.len() + 1;
        ops.extend(bump_and_read_cfg());
        match self.transact_bumping(ops).await {
            Ok(r) => next_cfg_of(&r, cfg_at),
            Err(e) => Err(map_add_error(e, 1, spec)),
        }
    }

    /// Removes the `Port` named `name` from its bridge (`Bridge.ports delete`; the Port and
    /// its Interfaces are then garbage-collected) and bumps `next_cfg`. Returns the `next_cfg`
    /// to wait for, or `None` when no such port exists.
    ///
    /// One round trip when this client read the port before ([`Client::snapshot`],
    /// [`Client::get_port`], [`Client::list_ports`] remember its row UUID): one transaction
    /// (comment; a `wait` that the row of that UUID still has this name and, with
    /// [`DelGuard::OwnedBy`], still has `key=value`; the mutate; the bump; select `next_cfg`).
    /// If that `wait` fails (the row changed or is gone) or the UUID is not known, two round
    /// trips: a select for the current row, then the same transaction.
    /// The `cur_cfg` monitor ([`Client::monitor_cur_cfg`]) is started in the same write.
    /// Errors: [`OvsdbError::NotOwned`] (row left in place), and those of [`Client::transact`].
    pub async fn del_port(&self, name: &str, guard: DelGuard) -> Result<Option<i64>, OvsdbError> {
        let known = self.port_uuids().get(name).cloned();
        if let Some(uuid) = known {
            match self.del_port_row(name, &uuid, &guard).await {
                // The remembered row changed or is gone: read it afresh.
                Err(e) if is_wait_abort(&e, 1) => {
                    self.port_uuids().remove(name);
                }
                r => return r,
            }
        }
        let by_name = json!([["name", "==", name]]);
        let r = self
            .transact(
                VSWITCH_DB,
                vec![select("Port", by_name, &["_uuid", "external_ids"])],
            )
            .await?;
        let Some(row) = rows(&r, 0).first() else {
            return Ok(None);
        };
        let uuid = row
            .get("_uuid")
            .and_then(uuid_of)
            .ok_or_else(|| OvsdbError::BadReply {
                method: "transact".into(),
                detail: format!("Port {name:?} without _uuid"),
            })?;
        if let DelGuard::OwnedBy { key, value } = &guard {
            if str_map(row.get("external_ids")).get(key) != Some(value) {
                return Err(not_owned(name, key, value));
            }
        }
        match self.del_port_row(name, &uuid, &guard).await {
            Err(e) if is_wait_abort(&e, 1) => match &guard {
                DelGuard::OwnedBy { key, value } => {
                    // The row changed or vanished since the select; absent counts as done.
                    match self.get_port(name).await? {
                        None => Ok(None),
                        Some(_) => Err(not_owned(name, key, value)),
                    }
                }
                DelGuard::Any => match self.get_port(name).await? {
                    // Renamed or removed since the select: nothing of that name to delete.
                    None => Ok(None),
                    Some(_) => Err(e),
                },
            },
            r => r,
        }
    }

    /// The deleting transaction of [`Client::del_port`] for row `uuid`; op 1 is the guard
    /// `wait`. `Ok(None)` when the row was no longer in any bridge.
    async fn del_port_row(
        &self,
        name: &str,
        uuid: &str,
        guard: &DelGuard,
    ) -> Result<Option<i64>, OvsdbError> {
        let mut ops =
            vec![json!({"op": "comment", "comment": format!("op-agent: del-port {name}")})];
        ops.extend(del_port_ops(name, uuid, guard, true));
        let mutate_at = ops.len() - 1;
        let cfg_at = ops.len() + 1;
        ops.extend(bump_and_read_cfg());
        let res = self.transact_bumping(ops).await?;
        self.port_uuids().remove(name);
        let count = res
            .get(mutate_at)
            .and_then(|r| r.get("count"))
            .and_then(Value::as_i64);
        if count == Some(0) {
            // Removed from its bridge by someone else meanwhile.
            return Ok(None);
        }
        next_cfg_of(&res, cfg_at).map(Some)
    }

    /// `transact` of a change that bumps `next_cfg`, with the `cur_cfg` monitor request sent
    /// right behind it on the same connection (pipelined, no extra round trip), so the wait
    /// that follows finds the monitor in place. A monitor error is left to
    /// [`Client::wait_cur_cfg`], which retries it.
    async fn transact_bumping(&self, ops: Vec<Value>) -> Result<Vec<Value>, OvsdbError> {
        let (r, _) = tokio::join!(self.transact(VSWITCH_DB, ops), self.monitor_cur_cfg());
        r
    }

    /// Replaces port `del_name` by `spec` in ONE transaction (delete guarded by `guard`, then
    /// the same guarded insert as [`Client::add_port`]), bumping `next_cfg` once. Returns the
    /// `next_cfg` to wait for. If `del_name` is absent only the add is done.
    ///
    /// Errors: [`OvsdbError::NotOwned`], [`OvsdbError::NoSuchBridge`],
    /// [`OvsdbError::PortExists`] (nothing changed), and those of [`Client::transact`].
    pub async fn replace_port(
        &self,
        del_name: &str,
        guard: DelGuard,
        spec: &PortSpec,
    ) -> Result<i64, OvsdbError> {
        let r = self
            .transact(
                VSWITCH_DB,
                vec![select(
                    "Port",
                    json!([["name", "==", del_name]]),
                    &["_uuid", "external_ids"],
                )],
            )
            .await?;
        let mut ops = vec![json!({"op": "comment",
            "comment": format!("op-agent: replace-port {} by {} {}", del_name, spec.bridge, spec.name)})];
        let mut owned_wait = None;
        if let Some(row) = rows(&r, 0).first() {
            if let DelGuard::OwnedBy { key, value } = &guard {
                if str_map(row.get("external_ids")).get(key) != Some(value) {
                    return Err(not_owned(del_name, key, value));
                }
            }
            if let Some(uuid) = row.get("_uuid").and_then(uuid_of) {
                if matches!(guard, DelGuard::OwnedBy { .. }) {
                    owned_wait = Some(ops.len());
                }
                ops.extend(del_port_ops(del_name, &uuid, &guard, false));
                // Unreferenced rows are only garbage-collected at commit: delete them
                // explicitly so the insert's "no Port/Interface of that name" guards pass
                // when the new port has the old one's name.
                ops.push(json!({"op": "delete", "table": "Port",
                    "where": [["_uuid", "==", ["uuid", uuid]]]}));
                ops.push(json!({"op": "delete", "table": "Interface",
                    "where": [["name", "==", del_name]]}));
            }
        }
        let add_at = ops.len();
        ops.extend(add_port_ops(spec));
        let cfg_at = ops.len() + 1;
        ops.extend(bump_and_read_cfg());
        match self.transact_bumping(ops).await {
            Ok(res) => next_cfg_of(&res, cfg_at),
            Err(e) if owned_wait.is_some_and(|at| is_wait_abort(&e, at)) => match guard {
                DelGuard::OwnedBy { key, value } => Err(not_owned(del_name, &key, &value)),
                DelGuard::Any => Err(e),
            },
            Err(e) => Err(map_add_error(e, add_at, spec)),
        }
    }
}

fn not_owned(name: &str, key: &str, value: &str) -> OvsdbError {
    OvsdbError::NotOwned {
        port: name.to_string(),
        key: key.to_string(),
        value: value.to_string(),
    }
}

/// Ops that delete Port `uuid` (named `name`) from its bridge; the last op is the mutate.
/// With [`DelGuard::OwnedBy`], or when `check_name`, the first op is a `wait` that the row of
/// that UUID still has this name (and the owner mark): a remembered UUID is only a hint.
fn del_port_ops(name: &str, uuid: &str, guard: &DelGuard, check_name: bool) -> Vec<Value> {
    let mut ops = Vec::new();
    match guard {
        DelGuard::OwnedBy { key, value } => ops.push(json!({"op": "wait", "table": "Port",
            "timeout": 0,
            "where": [["_uuid", "==", ["uuid", uuid]],
                      ["external_ids", "includes", ["map", [[key, value]]]]],
            "columns": ["name"], "until": "==", "rows": [{"name": name}]})),
        DelGuard::Any if check_name => ops.push(json!({"op": "wait", "table": "Port",
            "timeout": 0, "where": [["_uuid", "==", ["uuid", uuid]]],
            "columns": ["name"], "until": "==", "rows": [{"name": name}]})),
        DelGuard::Any => {}
    }
    let u = json!(["set", [["uuid", uuid]]]);
    ops.push(json!({"op": "mutate", "table": "Bridge",
        "where": [["ports", "includes", u]],
        "mutations": [["ports", "delete", u]]}));
    ops
}

/// The guarded insert of `spec`: [wait bridge, wait no port, wait no interface, insert
/// Interface, insert Port, mutate Bridge].
fn add_port_ops(spec: &PortSpec) -> Vec<Value> {
    let name = &spec.name;
    let ext = map_value(&spec.external_ids);
    let mut iface = json!({"name": name, "external_ids": ext});
    if let Some(m) = spec.mtu_request {
        iface["mtu_request"] = json!(m);
    }
    let mut port =
        json!({"name": name, "interfaces": ["named-uuid", "iface"], "external_ids": ext});
    if let Some(t) = spec.tag {
        port["tag"] = json!(t);
    }
    if !spec.trunks.is_empty() {
        port["trunks"] = json!(["set", spec.trunks]);
    }
    if let Some(m) = &spec.vlan_mode {
        port["vlan_mode"] = json!(m);
    }
    vec![
        json!({"op": "wait", "table": "Bridge", "timeout": 0, "where": [["name", "==", spec.bridge]],
               "columns": ["name"], "until": "==", "rows": [{"name": spec.bridge}]}),
        json!({"op": "wait", "table": "Port", "timeout": 0, "where": [["name", "==", name]],
               "columns": ["name"], "until": "==", "rows": []}),
        json!({"op": "wait", "table": "Interface", "timeout": 0, "where": [["name", "==", name]],
               "columns": ["name"], "until": "==", "rows": []}),
        json!({"op": "insert", "table": "Interface", "uuid-name": "iface", "row": iface}),
        json!({"op": "insert", "table": "Port", "uuid-name": "port", "row": port}),
        json!({"op": "mutate", "table": "Bridge", "where": [["name", "==", spec.bridge]],
               "mutations": [["ports", "insert", ["set", [["named-uuid", "port"]]]]]}),
    ]
}

/// Maps a failed guard `wait` of [`add_port_ops`] starting at op index `at` to its error.
fn map_add_error(e: OvsdbError, at: usize, spec: &PortSpec) -> OvsdbError {
    if is_wait_abort(&e, at) {
        OvsdbError::NoSuchBridge {
            bridge: spec.bridge.clone(),
            port: spec.name.clone(),
        }
    } else if is_wait_abort(&e, at + 1) || is_wait_abort(&e, at + 2) {
        OvsdbError::PortExists {
            port: spec.name.clone(),
        }
    } else {
        e
    }
}
