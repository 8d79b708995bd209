//! The `Open_vSwitch` database (`vswitch.ovsschema` 8.x) session: bridges, ports and
//! interfaces, each change one transaction with `wait` guards so it is all-or-nothing
//! ([`ops`]), rows read back ([`rows`](mod@rows)), the `cur_cfg` monitor that tells when
//! ovs-vswitchd applied a change, the table [`monitor`] of Bridge/Port/Interface, and the
//! remembered Port UUIDs. Generic: no Proxmox names or vmids here.

pub mod batch;
pub mod monitor;
pub mod ops;
pub mod rows;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::{watch, OnceCell};

use super::rpc::{self, Connection};
use super::{OvsdbError, VSWITCH_DB};
use ops::VsOp;
use rows::{assemble, next_cfg_of, opt_i64, opt_str, rows, sorted_names, str_map, uuid_of, uuids};
pub use rows::{port_rows_from_results, InterfaceRow, PortRow};

/// Prefix of the `monitor` ids (RFC 7047 §4.1.5 `json-value`) of our `Open_vSwitch.cur_cfg`
/// monitor; a number is appended per attempt, so a retry after a timed-out attempt (which the
/// server may still have registered) never collides with it.
const CFG_MONITOR_ID: &str = "op-agent-cur_cfg-";

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
    /// A bandwidth limit in both directions; `None` adds no QoS/Queue row and no policing.
    pub rate: Option<PortRate>,
}

/// A bandwidth limit on a port, in the units of the `vswitch.ovsschema` columns that carry it:
/// a `QoS` row of `type` `linux-htb` (referenced from `Port.qos`) with one `Queue` 0 shapes
/// what ovs-vswitchd sends out of the device; `Interface.ingress_policing_*` polices what the
/// device sends in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRate {
    /// `QoS` and `Queue` `other_config:max-rate`, bit/s.
    pub max_rate_bits: u64,
    /// `Queue` `other_config:burst`, bits.
    pub burst_bits: u64,
    /// `Interface.ingress_policing_rate`, kbit/s (1000 bit/s).
    pub policing_kbits: u64,
    /// `Interface.ingress_policing_burst`, kbit.
    pub policing_burst_kbits: u64,
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

/// A connection to an ovsdb-server (RFC 7047) over a unix socket, for the `Open_vSwitch`
/// database: the JSON-RPC [`Connection`], the `cur_cfg` monitor and the remembered Port UUIDs.
///
/// Methods take `&self` and may run concurrently (pipelined on the one connection). Every call
/// is bounded by the timeout given to [`Client::connect`]; when the connection is lost every
/// pending and later call fails with [`OvsdbError::ConnectionClosed`]. Dropping the client
/// stops its tasks and closes the socket.
pub struct Client {
    rpc: Connection,
    /// Last `cur_cfg` seen through the monitor (only ever raised).
    cfg: Arc<watch::Sender<Option<i64>>>,
    monitor: OnceCell<()>,
    monitor_attempts: AtomicU64,
    /// `Port.name` → row UUID of the ports this client read (a hint for `del_port`, always
    /// checked by a `wait` op in the deleting transaction).
    port_uuids: Mutex<HashMap<String, String>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("path", &self.rpc.path())
            .field("timeout", &self.rpc.timeout())
            .finish()
    }
}

/// Raises the known `cur_cfg` from a `<table-updates>` object (RFC 7047 §4.1.6), from the
/// monitor reply or an `update` notification. Only ever raises: replies and updates may be
/// seen in either order by the waiting side.
fn apply_cfg_updates(cfg: &watch::Sender<Option<i64>>, updates: &Value) {
    let Some(rows) = updates.get("Open_vSwitch").and_then(Value::as_object) else {
        return;
    };
    for row in rows.values() {
        if let Some(v) = row
            .get("new")
            .and_then(|n| n.get("cur_cfg"))
            .and_then(Value::as_i64)
        {
            cfg.send_if_modified(|c| {
                if c.is_none_or(|old| v > old) {
                    *c = Some(v);
                    true
                } else {
                    false
                }
            });
        }
    }
}

/// How a [`Client::del_port_row`] transaction failed.
enum DelFailed {
    /// Its guard `wait` failed: the row of that UUID changed or is gone (nothing changed).
    Changed(OvsdbError),
    /// Any other error.
    Other(OvsdbError),
}

impl From<DelFailed> for OvsdbError {
    fn from(d: DelFailed) -> OvsdbError {
        match d {
            DelFailed::Changed(e) | DelFailed::Other(e) => e,
        }
    }
}

impl Client {
    /// Connects to the ovsdb-server unix socket at `path` (e.g. `/run/openvswitch/db.sock`);
    /// see [`Connection::connect`] (RFC 7047 §4: JSON-RPC over a stream socket).
    ///
    /// `timeout` bounds the connect and, later, every single request (ms resolution).
    /// Must be called within a tokio runtime (current-thread is fine).
    ///
    /// Errors: [`OvsdbError::Connect`] (e.g. `ENOENT`, `ECONNREFUSED`),
    /// [`OvsdbError::ConnectTimeout`].
    pub async fn connect(path: &Path, timeout: Duration) -> Result<Client, OvsdbError> {
        Ok(Client::with(Connection::connect(path, timeout).await?))
    }

    /// The session over an open connection.
    fn with(rpc: Connection) -> Client {
        Client {
            rpc,
            cfg: Arc::new(watch::Sender::new(None)),
            monitor: OnceCell::new(),
            monitor_attempts: AtomicU64::new(0),
            port_uuids: Mutex::new(HashMap::new()),
        }
    }

    /// The socket path this client is connected to.
    pub fn path(&self) -> &Path {
        self.rpc.path()
    }

    /// The per-request timeout given to [`Client::connect`].
    pub fn timeout(&self) -> Duration {
        self.rpc.timeout()
    }

    /// How many server `echo` requests (RFC 7047 §4.1.11, the server's inactivity probe) this
    /// connection has answered.
    pub fn echoes_answered(&self) -> u64 {
        self.rpc.echoes_answered()
    }

    fn port_uuids(&self) -> MutexGuard<'_, HashMap<String, String>> {
        self.port_uuids.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends one JSON-RPC request and returns its `result` (RFC 7047 §4.1); see
    /// [`Connection::call`].
    ///
    /// `params` must be a JSON array (the server drops the connection otherwise).
    /// Errors: [`OvsdbError::Timeout`] after the client timeout, [`OvsdbError::ConnectionClosed`],
    /// [`OvsdbError::Rpc`] for a non-null `error` member.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, OvsdbError> {
        self.rpc.call(method, params).await
    }

    /// Runs one `transact` (RFC 7047 §4.1.3) of `ops` (each an operation object, §5.2) on
    /// database `db`, and returns the per-op results (same length as `ops`); see
    /// [`Connection::transact`].
    ///
    /// Errors: [`OvsdbError::OpFailed`] naming the index, op, `error` and `details` of the
    /// first failed op (the transaction was aborted); [`OvsdbError::CommitFailed`] for the
    /// extra commit-error element; [`OvsdbError::BadReply`] when the result is not an array;
    /// plus those of [`Client::call`].
    pub async fn transact(&self, db: &str, ops: Vec<Value>) -> Result<Vec<Value>, OvsdbError> {
        self.rpc.transact(db, ops).await
    }

    /// `transact` of typed ops on the `Open_vSwitch` database.
    async fn run(&self, ops: &[VsOp]) -> Result<Vec<Value>, OvsdbError> {
        self.transact(VSWITCH_DB, ops.iter().map(|o| o.to_json()).collect())
            .await
    }

    /// `transact` of a change that bumps `next_cfg`, with the `cur_cfg` monitor request sent
    /// right behind it on the same connection (pipelined, no extra round trip), so the wait
    /// that follows finds the monitor in place. A monitor error is left to
    /// [`Client::wait_cur_cfg`], which retries it.
    async fn run_bumping(&self, ops: &[VsOp]) -> Result<Vec<Value>, OvsdbError> {
        let (r, _) = tokio::join!(self.run(ops), self.monitor_cur_cfg());
        r
    }

    /// Starts (once per connection) the `monitor` of `Open_vSwitch.cur_cfg` (RFC 7047 §4.1.5)
    /// that [`Client::wait_cur_cfg`] uses, and returns the current `cur_cfg`.
    ///
    /// Errors: those of [`Client::call`]; [`OvsdbError::BadReply`] if the reply lacks the
    /// `Open_vSwitch` row.
    pub async fn monitor_cur_cfg(&self) -> Result<i64, OvsdbError> {
        self.monitor
            .get_or_try_init(|| async {
                let attempt = self.monitor_attempts.fetch_add(1, Ordering::Relaxed) + 1;
                let mon = format!("{CFG_MONITOR_ID}{attempt}");
                let cfg = self.cfg.clone();
                let on_update: rpc::UpdateHandler = Arc::new(move |u| apply_cfg_updates(&cfg, u));
                let requests = json!({"Open_vSwitch": {"columns": ["cur_cfg"]}});
                let initial = self
                    .rpc
                    .monitor(VSWITCH_DB, &mon, requests, on_update)
                    .await?;
                apply_cfg_updates(&self.cfg, &initial);
                Ok::<(), OvsdbError>(())
            })
            .await?;
        self.cfg.borrow().ok_or_else(|| OvsdbError::BadReply {
            method: "monitor".into(),
            detail: "no Open_vSwitch row with cur_cfg".into(),
        })
    }

    /// Waits until ovs-vswitchd has applied configuration `next_cfg`, i.e. until
    /// `Open_vSwitch.cur_cfg >= next_cfg` (as `ovs-vsctl` does; robust to other clients bumping
    /// `next_cfg` meanwhile), seen through the monitor (RFC 7047 §4.1.6 `update`s). Returns the
    /// `cur_cfg` reached.
    ///
    /// `timeout` bounds the whole wait (ms resolution), monitor setup included.
    /// Errors: [`OvsdbError::WaitTimeout`] (e.g. ovs-vswitchd not running),
    /// [`OvsdbError::ConnectionClosed`], and those of [`Client::monitor_cur_cfg`].
    pub async fn wait_cur_cfg(&self, next_cfg: i64, timeout: Duration) -> Result<i64, OvsdbError> {
        let mut rx = self.cfg.subscribe();
        let wait = async {
            self.monitor_cur_cfg().await?;
            tokio::select! {
                // A value reached wins over a close seen at the same time.
                biased;
                reached = rx.wait_for(|c| c.is_some_and(|v| v >= next_cfg)) => {
                    match reached.ok().and_then(|v| *v) {
                        Some(v) => Ok(v),
                        None => Err(self.rpc.closed().await),
                    }
                }
                e = self.rpc.closed() => Err(e),
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(r) => r,
            Err(_) => Err(OvsdbError::WaitTimeout {
                next_cfg,
                cur_cfg: *self.cfg.borrow(),
                ms: rpc::ms(timeout),
            }),
        }
    }

    /// Whether a `Bridge` row named `name` exists. One `select` (RFC 7047 §5.2.2).
    ///
    /// Errors: those of [`Client::transact`].
    pub async fn bridge_exists(&self, name: &str) -> Result<bool, OvsdbError> {
        let r = self.run(&ops::bridge_exists(name)).await?;
        Ok(!rows(&r, 0).is_empty())
    }

    /// Names of all `Bridge` rows, sorted. One `select` (RFC 7047 §5.2.2).
    ///
    /// Errors: those of [`Client::transact`].
    pub async fn bridge_names(&self) -> Result<Vec<String>, OvsdbError> {
        let r = self.run(&ops::bridge_names()).await?;
        Ok(sorted_names(rows(&r, 0)))
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
        let r = self.run(&ops::snapshot(&uniq)).await?;
        let bridges = rows(&r, 0);
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
            bridges: sorted_names(bridges),
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
        let missing: Vec<String> = ports
            .iter()
            .flat_map(|p| uuids(p.get("interfaces")))
            .filter(|u| !have.contains(u))
            .collect();
        if !missing.is_empty() {
            let more = self.run(&ops::interfaces_by_uuid(&missing)).await?;
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
        let r = self.run(&ops::get_port(name)).await?;
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
        let r = self.run(&ops::list_ports()).await?;
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
        let r = self.run(&ops::interface_status(name)).await?;
        Ok(rows(&r, 0)
            .first()
            .map(|i| (opt_i64(i.get("ofport")), opt_str(i.get("error")))))
    }

    /// Adds `spec` as a Port + Interface in ONE transaction ([`ops::add_port`]): comment;
    /// `wait` that the Bridge exists; `wait` that no Port and no Interface has the name;
    /// insert Interface (mtu_request, external_ids) and Port (tag, trunks, vlan_mode,
    /// external_ids); `Bridge.ports insert`; `next_cfg += 1`; select `next_cfg`. Returns that
    /// `next_cfg`, to pass to [`Client::wait_cur_cfg`]. Equivalent of `ovs-vsctl add-port`
    /// without the wait.
    ///
    /// Errors: [`OvsdbError::NoSuchBridge`], [`OvsdbError::PortExists`] (nothing changed in
    /// either case), and those of [`Client::transact`] (e.g. `constraint violation` for a tag
    /// outside 0–4095).
    pub async fn add_port(&self, spec: &PortSpec) -> Result<i64, OvsdbError> {
        let ops = ops::add_port(spec);
        match self.run_bumping(&ops).await {
            Ok(r) => next_cfg_of(&r, ops::cfg_index(&ops)),
            Err(e) => Err(ops::change_error(&ops, e, spec, None)),
        }
    }

    /// Removes the `Port` named `name` from its bridge (`Bridge.ports delete`; the Port and
    /// its Interfaces are then garbage-collected) and bumps `next_cfg`. Returns the `next_cfg`
    /// to wait for, or `None` when no such port exists.
    ///
    /// One round trip when this client read the port before ([`Client::snapshot`],
    /// [`Client::get_port`], [`Client::list_ports`] remember its row UUID): one transaction
    /// ([`ops::del_port`]: comment; a `wait` that the row of that UUID still has this name
    /// and, with [`DelGuard::OwnedBy`], still has `key=value`; the mutate; the bump; select
    /// `next_cfg`). If that `wait` fails (the row changed or is gone) or the UUID is not
    /// known, two round trips: a select for the current row, then the same transaction.
    /// The `cur_cfg` monitor ([`Client::monitor_cur_cfg`]) is started in the same write.
    /// Errors: [`OvsdbError::NotOwned`] (row left in place), and those of [`Client::transact`].
    pub async fn del_port(&self, name: &str, guard: DelGuard) -> Result<Option<i64>, OvsdbError> {
        let known = self.port_uuids().get(name).cloned();
        if let Some(uuid) = known {
            match self.del_port_row(name, &uuid, &guard).await {
                // The remembered row changed or is gone: read it afresh.
                Err(DelFailed::Changed(_)) => {
                    self.port_uuids().remove(name);
                }
                r => return r.map_err(OvsdbError::from),
            }
        }
        let r = self.run(&ops::port_to_delete(name)).await?;
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
                return Err(ops::not_owned(name, key, value));
            }
        }
        match self.del_port_row(name, &uuid, &guard).await {
            Err(DelFailed::Changed(e)) => match &guard {
                DelGuard::OwnedBy { key, value } => {
                    // The row changed or vanished since the select; absent counts as done.
                    match self.get_port(name).await? {
                        None => Ok(None),
                        Some(_) => Err(ops::not_owned(name, key, value)),
                    }
                }
                DelGuard::Any => match self.get_port(name).await? {
                    // Renamed or removed since the select: nothing of that name to delete.
                    None => Ok(None),
                    Some(_) => Err(e),
                },
            },
            r => r.map_err(OvsdbError::from),
        }
    }

    /// The deleting transaction of [`Client::del_port`] for row `uuid` ([`ops::del_port`]).
    /// `Ok(None)` when the row was no longer in any bridge.
    async fn del_port_row(
        &self,
        name: &str,
        uuid: &str,
        guard: &DelGuard,
    ) -> Result<Option<i64>, DelFailed> {
        let ops = ops::del_port(name, uuid, guard);
        let res = match self.run_bumping(&ops).await {
            Ok(res) => res,
            Err(e) if ops::row_guard_failed(&ops, &e) => return Err(DelFailed::Changed(e)),
            Err(e) => return Err(DelFailed::Other(e)),
        };
        self.port_uuids().remove(name);
        let count = res
            .get(ops::del_mutate_index(&ops))
            .and_then(|r| r.get("count"))
            .and_then(Value::as_i64);
        if count == Some(0) {
            // Removed from its bridge by someone else meanwhile.
            return Ok(None);
        }
        next_cfg_of(&res, ops::cfg_index(&ops))
            .map(Some)
            .map_err(DelFailed::Other)
    }

    /// Deletes every `QoS` and `Queue` row whose `external_ids` include all of `marks` (RFC
    /// 7047 §5.2.5 `delete` with an `includes` condition), in one transaction; returns how
    /// many rows went. Both tables are roots of the schema: rows that another client's
    /// `del-port` left unreferenced stay until someone deletes them.
    ///
    /// Errors: those of [`Client::transact`]; a row still referenced by a Port aborts the
    /// whole transaction (`referential integrity violation`), nothing deleted.
    pub async fn del_qos_marked(
        &self,
        marks: &std::collections::BTreeMap<String, String>,
    ) -> Result<u64, OvsdbError> {
        let ops = ops::del_qos_marked(marks);
        let r = self.run(&ops).await?;
        Ok(r.iter()
            .filter_map(|x| x.get("count").and_then(Value::as_u64))
            .sum())
    }

    /// Replaces port `del_name` by `spec` in ONE transaction ([`ops::replace_port`]: delete
    /// guarded by `guard`, then the same guarded insert as [`Client::add_port`]), bumping
    /// `next_cfg` once. Returns the `next_cfg` to wait for. If `del_name` is absent only the
    /// add is done.
    ///
    /// Errors: [`OvsdbError::NotOwned`], [`OvsdbError::NoSuchBridge`],
    /// [`OvsdbError::PortExists`] (nothing changed), and those of [`Client::transact`].
    pub async fn replace_port(
        &self,
        del_name: &str,
        guard: DelGuard,
        spec: &PortSpec,
    ) -> Result<i64, OvsdbError> {
        let r = self.run(&ops::port_to_delete(del_name)).await?;
        let mut del_uuid = None;
        if let Some(row) = rows(&r, 0).first() {
            if let DelGuard::OwnedBy { key, value } = &guard {
                if str_map(row.get("external_ids")).get(key) != Some(value) {
                    return Err(ops::not_owned(del_name, key, value));
                }
            }
            del_uuid = row.get("_uuid").and_then(uuid_of);
        }
        let ops = ops::replace_port(del_name, del_uuid.as_deref(), &guard, spec);
        match self.run_bumping(&ops).await {
            Ok(res) => next_cfg_of(&res, ops::cfg_index(&ops)),
            Err(e) => Err(ops::change_error(&ops, e, spec, Some((del_name, &guard)))),
        }
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
