//! Test builds only: a fake host behind [`Links`] and [`Vswitch`], so that execute, rollback and
//! observe run as millisecond unit tests. It keeps a model of links (name, ifindex, up, alias,
//! kind, master, mtu) and Ports (name, bridge, tag, trunks, vlan_mode, mtu_request,
//! external_ids, ofport, error), records every call, and fails a chosen call.
//!
//! Like ovs-vswitchd, it holds a deleted Port's device until a `wait_cur_cfg` for that
//! deletion answered; renaming a device it still holds, or one a Port row names, is refused
//! (ovs-issues#284), so a test fails when the engine renames too early.

use crate::engine::deadline::Deadline;
use crate::engine::host::{Host, Vswitch};
use crate::mesh::MeshState;
use crate::netlink::{Link, NetlinkError};
use crate::ovsdb::{DelGuard, InterfaceRow, OvsdbError, PortRow, PortSpec, Snapshot};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

#[path = "fake_links.rs"]
mod links;

/// A call kind, for choosing which call fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    /// [`Links::set_down`].
    SetDown,
    /// [`Links::set_up`].
    SetUp,
    /// [`Links::rename`].
    Rename,
    /// [`Links::delete`].
    DelLink,
    /// [`Vswitch::add_port`].
    AddPort,
    /// [`Vswitch::del_port`].
    DelPort,
    /// [`Vswitch::replace_port`].
    ReplacePort,
    /// [`Vswitch::wait_cur_cfg`].
    WaitCurCfg,
    /// [`Vswitch::interface_status`].
    InterfaceStatus,
}

/// How a chosen call fails.
#[derive(Debug)]
pub enum Fault {
    /// The call returns this error.
    Ovsdb(OvsdbError),
    /// A netlink call fails (`RequestFailed`).
    Netlink,
    /// `wait_cur_cfg` waits its whole timeout (tokio's clock), then fails like the real
    /// client ([`OvsdbError::WaitTimeout`]).
    Timeout,
    /// `wait_cur_cfg` is answered after this long (tokio's clock), like ovs-vswitchd working
    /// through a large transaction: it fails like [`Fault::Timeout`] when its timeout is
    /// shorter.
    Slow(Duration),
    /// The call never answers.
    Hang,
    /// The connection to ovsdb-server is gone: this call and every later OVSDB call fail with
    /// [`OvsdbError::ConnectionClosed`].
    LoseOvsdb,
}

/// A link of the model (the fields of [`Link`] a test checks).
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct FakeLink {
    pub index: u32,
    pub name: String,
    pub kind: Option<String>,
    pub up: bool,
    pub alias: Option<String>,
    pub master: Option<u32>,
    pub mtu: Option<u32>,
}

/// A Port (with its one Interface) of the model (the columns of [`PortRow`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[allow(missing_docs)]
pub struct FakePort {
    pub name: String,
    pub bridge: String,
    pub tag: Option<u16>,
    pub trunks: Vec<u16>,
    pub vlan_mode: Option<String>,
    pub mtu_request: Option<i64>,
    pub external_ids: BTreeMap<String, String>,
    pub ofport: Option<i64>,
    pub error: Option<String>,
    /// `Interface.ingress_policing_rate` (kbit/s), with a `QoS` row on the Port when set.
    pub policing_kbits: Option<i64>,
}

#[derive(Default)]
struct Model {
    links: Vec<FakeLink>,
    ports: BTreeMap<String, FakePort>,
    bridges: BTreeSet<String>,
    next_cfg: i64,
    next_ofport: i64,
    /// Device names ovs-vswitchd still holds after their Port was deleted: until `cur_cfg`
    /// reaches the `next_cfg` of the deletion.
    releasing: BTreeMap<String, i64>,
    /// Names ovs-vswitchd cannot open: their Interface gets `ofport` -1 and an `error`.
    unattachable: BTreeSet<String>,
    mesh: Option<MeshState>,
    faults: Vec<(Op, usize, Fault)>,
    counts: BTreeMap<Op, usize>,
    lost: bool,
    calls: Vec<String>,
    waits: Vec<Duration>,
}

/// The fake host; clones share one model.
#[derive(Clone, Default)]
pub struct Fake(Rc<RefCell<Model>>);

fn nl_err(op: &'static str, link: &str) -> NetlinkError {
    NetlinkError {
        op,
        link: link.to_string(),
        source: rtnetlink::Error::RequestFailed,
    }
}

fn lost() -> OvsdbError {
    OvsdbError::ConnectionClosed {
        path: PathBuf::from("/fake/db.sock"),
        reason: "EOF".into(),
    }
}

impl Fake {
    /// A host right after PVE started container 100: `veth100i0` (ifindex 7, up) plugged into
    /// OVS bridge `ovsbr0` with PVE's tag 10, trunks 20,30 (`native-untagged`) and
    /// mtu_request 1500, ofport 2.
    pub fn pve_started() -> Fake {
        let f = Fake::default();
        {
            let mut m = f.0.borrow_mut();
            m.bridges.insert("ovsbr0".into());
            m.next_cfg = 10;
            m.next_ofport = 3;
            m.links.push(FakeLink {
                index: 3,
                name: "ovsbr0".into(),
                kind: Some("openvswitch".into()),
                up: true,
                alias: None,
                master: None,
                mtu: Some(1500),
            });
            m.links.push(FakeLink {
                index: 7,
                name: "veth100i0".into(),
                kind: Some("veth".into()),
                up: true,
                alias: None,
                master: None,
                mtu: Some(1500),
            });
            m.ports.insert("veth100i0".into(), Fake::pve_port());
        }
        f
    }

    /// PVE's Port of `veth100i0`, as [`Fake::pve_started`] has it.
    pub fn pve_port() -> FakePort {
        FakePort {
            name: "veth100i0".into(),
            bridge: "ovsbr0".into(),
            tag: Some(10),
            trunks: vec![20, 30],
            vlan_mode: Some("native-untagged".into()),
            mtu_request: Some(1500),
            external_ids: BTreeMap::new(),
            ofport: Some(2),
            error: None,
            policing_kbits: None,
        }
    }

    /// A [`Host`] on this fake with `[ovsdb] timeout_ms` = `timeout` and `deadline`.
    pub fn host(&self, timeout: Duration, deadline: Deadline) -> Host<Fake, Fake> {
        Host {
            nl: self.clone(),
            ovs: self.clone(),
            timeout,
            deadline,
        }
    }

    /// Makes the `nth` call (1-based) of `op` fail with `fault`.
    pub fn fail(&self, op: Op, nth: usize, fault: Fault) {
        self.0.borrow_mut().faults.push((op, nth, fault));
    }

    /// ovs-vswitchd cannot open a device of this name (ofport -1).
    pub fn unattachable(&self, name: &str) {
        self.0.borrow_mut().unattachable.insert(name.into());
    }

    /// Adds a link as is.
    pub fn add_link(&self, l: FakeLink) {
        self.0.borrow_mut().links.push(l);
    }

    /// Sets the alias of the link called `name`.
    pub fn set_alias(&self, name: &str, alias: Option<&str>) {
        let mut m = self.0.borrow_mut();
        if let Some(l) = m.links.iter_mut().find(|l| l.name == name) {
            l.alias = alias.map(str::to_string);
        }
    }

    /// Adds a Port row as is.
    pub fn add_row(&self, p: FakePort) {
        self.0.borrow_mut().ports.insert(p.name.clone(), p);
    }

    /// The link called `name`.
    pub fn link(&self, name: &str) -> Option<FakeLink> {
        self.0
            .borrow()
            .links
            .iter()
            .find(|l| l.name == name)
            .cloned()
    }

    /// The Port called `name`.
    pub fn port(&self, name: &str) -> Option<FakePort> {
        self.0.borrow().ports.get(name).cloned()
    }

    /// Every call so far, one line each (`del_port veth100i0`, `wait_cur_cfg 11 3000ms`).
    pub fn calls(&self) -> Vec<String> {
        self.0.borrow().calls.clone()
    }

    /// The `timeout` of every `wait_cur_cfg` call, in order.
    pub fn wait_timeouts(&self) -> Vec<Duration> {
        self.0.borrow().waits.clone()
    }

    /// Records the call and returns its fault, if one was chosen for it.
    fn enter(&self, op: Op, line: String) -> Option<Fault> {
        let mut m = self.0.borrow_mut();
        m.calls.push(line);
        let n = {
            let c = m.counts.entry(op).or_insert(0);
            *c += 1;
            *c
        };
        let i = m.faults.iter().position(|(o, k, _)| *o == op && *k == n)?;
        Some(m.faults.remove(i).2)
    }

    /// [`Fake::enter`] for an OVSDB call: a lost connection fails it.
    async fn ovs_enter(&self, op: Op, line: String) -> Result<(), OvsdbError> {
        let fault = self.enter(op, line);
        self.ovs_fault(fault).await
    }

    /// Fails an OVSDB call as `fault` says (a [`Fault::Timeout`] is handled by the wait).
    async fn ovs_fault(&self, fault: Option<Fault>) -> Result<(), OvsdbError> {
        if self.0.borrow().lost {
            return Err(lost());
        }
        match fault {
            None | Some(Fault::Timeout) | Some(Fault::Slow(_)) => Ok(()),
            Some(Fault::Ovsdb(e)) => Err(e),
            Some(Fault::LoseOvsdb) | Some(Fault::Netlink) => {
                self.0.borrow_mut().lost = true;
                Err(lost())
            }
            Some(Fault::Hang) => std::future::pending().await,
        }
    }

    /// [`Fake::enter`] for a netlink call.
    async fn nl_enter(&self, op: Op, line: String, link: &str) -> Result<(), NetlinkError> {
        match self.enter(op, line) {
            None => Ok(()),
            Some(Fault::Hang) => std::future::pending().await,
            Some(_) => Err(nl_err("fake", link)),
        }
    }

    fn with_link<T>(&self, index: u32, f: impl FnOnce(&mut FakeLink) -> T) -> Option<T> {
        let mut m = self.0.borrow_mut();
        m.links.iter_mut().find(|l| l.index == index).map(f)
    }

    fn bump(m: &mut Model) -> i64 {
        m.next_cfg += 1;
        m.next_cfg
    }

    fn insert(m: &mut Model, spec: &PortSpec) -> Result<(), OvsdbError> {
        if !m.bridges.contains(&spec.bridge) {
            return Err(OvsdbError::NoSuchBridge {
                bridge: spec.bridge.clone(),
                port: spec.name.clone(),
            });
        }
        if m.ports.contains_key(&spec.name) {
            return Err(OvsdbError::PortExists {
                port: spec.name.clone(),
            });
        }
        let device = m.links.iter().any(|l| l.name == spec.name);
        let (ofport, error) = if device && !m.unattachable.contains(&spec.name) {
            m.next_ofport += 1;
            (Some(m.next_ofport), None)
        } else {
            (
                Some(-1),
                Some(format!(
                    "could not open network device {} (No such device)",
                    spec.name
                )),
            )
        };
        m.ports.insert(
            spec.name.clone(),
            FakePort {
                name: spec.name.clone(),
                bridge: spec.bridge.clone(),
                tag: spec.tag,
                trunks: spec.trunks.clone(),
                vlan_mode: spec.vlan_mode.clone(),
                mtu_request: spec.mtu_request.map(i64::from),
                policing_kbits: spec
                    .rate
                    .map(|r| i64::try_from(r.policing_kbits).unwrap_or(i64::MAX)),
                external_ids: spec.external_ids.clone(),
                ofport,
                error,
            },
        );
        Ok(())
    }

    fn guard_ok(p: &FakePort, guard: &DelGuard) -> Result<(), OvsdbError> {
        match guard {
            DelGuard::Any => Ok(()),
            DelGuard::OwnedBy { key, value } if p.external_ids.get(key) == Some(value) => Ok(()),
            DelGuard::OwnedBy { key, value } => Err(OvsdbError::NotOwned {
                port: p.name.clone(),
                key: key.clone(),
                value: value.clone(),
            }),
        }
    }

    fn row(p: &FakePort) -> PortRow {
        PortRow {
            uuid: format!("uuid-{}", p.name),
            name: p.name.clone(),
            bridge: Some(p.bridge.clone()),
            tag: p.tag,
            trunks: p.trunks.clone(),
            vlan_mode: p.vlan_mode.clone(),
            external_ids: p.external_ids.clone(),
            interfaces: vec![InterfaceRow {
                uuid: format!("iface-{}", p.name),
                name: p.name.clone(),
                ofport: p.ofport,
                error: p.error.clone(),
                mtu_request: p.mtu_request,
                external_ids: p.external_ids.clone(),
                kind: String::new(),
                ingress_policing_rate: Some(p.policing_kbits.unwrap_or(0)),
                ingress_policing_burst: None,
            }],
            qos: p.policing_kbits.map(|_| format!("qos-{}", p.name)),
        }
    }
}

impl FakeLink {
    fn link(&self) -> Link {
        Link {
            index: self.index,
            name: self.name.clone(),
            kind: self.kind.clone(),
            up: self.up,
            master: self.master,
            mac: None,
            mtu: self.mtu,
            alias: self.alias.clone(),
            peer_index: None,
            peer_netnsid: None,
        }
    }
}

impl Vswitch for Fake {
    async fn snapshot(&self, names: &[&str]) -> Result<Snapshot, OvsdbError> {
        self.0.borrow_mut().calls.push("snapshot".into());
        let m = self.0.borrow();
        if m.lost {
            return Err(lost());
        }
        Ok(Snapshot {
            bridges: m.bridges.iter().cloned().collect(),
            ports: names
                .iter()
                .filter_map(|n| m.ports.get(*n))
                .map(|p| (p.name.clone(), Fake::row(p)))
                .collect(),
        })
    }

    async fn list_ports(&self) -> Result<Vec<PortRow>, OvsdbError> {
        self.0.borrow_mut().calls.push("list_ports".into());
        let m = self.0.borrow();
        if m.lost {
            return Err(lost());
        }
        Ok(m.ports.values().map(Fake::row).collect())
    }

    async fn add_port(&self, spec: &PortSpec) -> Result<i64, OvsdbError> {
        self.ovs_enter(Op::AddPort, format!("add_port {}", spec.name))
            .await?;
        let mut m = self.0.borrow_mut();
        Fake::insert(&mut m, spec)?;
        Ok(Fake::bump(&mut m))
    }

    async fn del_port(&self, name: &str, guard: DelGuard) -> Result<Option<i64>, OvsdbError> {
        self.ovs_enter(Op::DelPort, format!("del_port {name}"))
            .await?;
        let mut m = self.0.borrow_mut();
        let Some(p) = m.ports.get(name) else {
            return Ok(None);
        };
        Fake::guard_ok(p, &guard)?;
        m.ports.remove(name);
        let next = Fake::bump(&mut m);
        m.releasing.insert(name.to_string(), next);
        Ok(Some(next))
    }

    async fn replace_port(
        &self,
        del_name: &str,
        guard: DelGuard,
        spec: &PortSpec,
    ) -> Result<i64, OvsdbError> {
        self.ovs_enter(Op::ReplacePort, format!("replace_port {del_name}"))
            .await?;
        let mut m = self.0.borrow_mut();
        let old = m.ports.get(del_name).cloned();
        if let Some(p) = &old {
            Fake::guard_ok(p, &guard)?;
            m.ports.remove(del_name);
        }
        if let Err(e) = Fake::insert(&mut m, spec) {
            if let Some(p) = old {
                m.ports.insert(p.name.clone(), p);
            }
            return Err(e);
        }
        Ok(Fake::bump(&mut m))
    }

    async fn wait_cur_cfg(&self, next_cfg: i64, timeout: Duration) -> Result<i64, OvsdbError> {
        let line = format!("wait_cur_cfg {next_cfg} {}ms", timeout.as_millis());
        self.0.borrow_mut().waits.push(timeout);
        let fault = self.enter(Op::WaitCurCfg, line);
        let timed_out = match &fault {
            Some(Fault::Timeout) => true,
            Some(Fault::Slow(d)) if *d > timeout => true,
            Some(Fault::Slow(d)) => {
                tokio::time::sleep(*d).await;
                false
            }
            _ => false,
        };
        self.ovs_fault(fault).await?;
        if timed_out {
            tokio::time::sleep(timeout).await;
            return Err(OvsdbError::WaitTimeout {
                next_cfg,
                cur_cfg: None,
                ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            });
        }
        let mut m = self.0.borrow_mut();
        m.releasing.retain(|_, cfg| *cfg > next_cfg);
        Ok(next_cfg)
    }

    async fn interface_status(
        &self,
        name: &str,
    ) -> Result<Option<(Option<i64>, Option<String>)>, OvsdbError> {
        self.ovs_enter(Op::InterfaceStatus, format!("interface_status {name}"))
            .await?;
        Ok(self.port(name).map(|p| (p.ofport, p.error)))
    }
}
