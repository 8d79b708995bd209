//! The seam under observe, execute and rollback: the two small traits the engine drives the host
//! through ([`Links`] for the kernel's links, [`Vswitch`] for the Open_vSwitch database), their
//! implementations for [`Netlink`] and [`Client`], and [`Host`], the pair of connections of one
//! run. Unit tests drive the same code through a fake (`engine/fake.rs`, test builds only).
//!
//! The traits use `async fn`: the engine runs on a current-thread tokio runtime, so the futures
//! need no `Send` bound.

use crate::config::{AgentConfig, MeshSection};
use crate::engine::deadline::{Budget, Deadline};
use crate::engine::error::RunError;
use crate::mesh::MeshState;
use crate::netlink::{Link, Netlink, NetlinkError};
use crate::ovsdb::vswitch::batch::IfaceStatus;
use crate::ovsdb::{Client, DelGuard, OvsdbError, PortRow, PortSpec, Snapshot};
use crate::report::Recorder;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Host links, as rtnetlink (`RTM_GETLINK`/`RTM_SETLINK`) serves them. Names are plain strings.
#[allow(async_fn_in_trait)]
pub trait Links {
    /// The link called `name`, `None` when there is none (ENODEV).
    async fn link_by_name(&self, name: &str) -> Result<Option<Link>, NetlinkError>;
    /// Every link of the namespace (one `RTM_GETLINK` dump, [`Netlink::links`]).
    async fn links(&self) -> Result<Vec<Link>, NetlinkError>;
    /// Deletes the link (`RTM_DELLINK`, [`Netlink::delete`]).
    async fn delete(&self, link: &Link) -> Result<(), NetlinkError>;
    /// Clears IFF_UP.
    async fn set_down(&self, link: &Link) -> Result<(), NetlinkError>;
    /// Sets IFF_UP.
    async fn set_up(&self, link: &Link) -> Result<(), NetlinkError>;
    /// The name of the other end of `link` when it is in another namespace
    /// ([`Netlink::peer_name`]).
    async fn peer_name(&self, link: &Link) -> Option<String>;
    /// Deletes the root and ingress qdiscs ([`Netlink::clear_qdiscs`]); how many there were.
    async fn clear_qdiscs(&self, link: &Link) -> Result<u8, NetlinkError>;
    /// Renames `link` to `new_name`, sets IFLA_IFALIAS to `alias` and, when `up`, IFF_UP, in
    /// one `RTM_SETLINK` ([`Netlink::rename`]).
    async fn rename(
        &self,
        link: &Link,
        new_name: &str,
        alias: &str,
        up: bool,
    ) -> Result<(), NetlinkError>;
    /// Gives `link` the alternative name `altname` and sets IFLA_IFALIAS to `alias`
    /// ([`Netlink::add_altname`]).
    async fn add_altname(
        &self,
        link: &Link,
        altname: &str,
        alias: &str,
    ) -> Result<(), NetlinkError>;
    /// Removes the alternative name `altname` from `link` ([`Netlink::del_altname`]).
    async fn del_altname(&self, link: &Link, altname: &str) -> Result<(), NetlinkError>;
    /// Confirms the host's mesh interface of `cfg` ([`crate::mesh::confirm`]); the error is
    /// one line.
    async fn confirm_mesh(&self, cfg: &MeshSection) -> Result<MeshState, String>;
}

/// The Open_vSwitch database operations of a run (RFC 7047 `transact`, and the `monitor` of
/// `Open_vSwitch.cur_cfg`), with [`Client`]'s shapes and errors.
#[allow(async_fn_in_trait)]
pub trait Vswitch {
    /// Every bridge name and the Ports named `names` ([`Client::snapshot`]).
    async fn snapshot(&self, names: &[&str]) -> Result<Snapshot, OvsdbError>;
    /// Every Port with its bridge and interfaces ([`Client::list_ports`]).
    async fn list_ports(&self) -> Result<Vec<PortRow>, OvsdbError>;
    /// Inserts Port + Interface; returns the `next_cfg` to wait for ([`Client::add_port`]).
    async fn add_port(&self, spec: &PortSpec) -> Result<i64, OvsdbError>;
    /// Deletes a Port if `guard` allows; `None` when absent ([`Client::del_port`]).
    async fn del_port(&self, name: &str, guard: DelGuard) -> Result<Option<i64>, OvsdbError>;
    /// Deletes `del_name` and inserts `spec` in one transaction ([`Client::replace_port`]).
    async fn replace_port(
        &self,
        del_name: &str,
        guard: DelGuard,
        spec: &PortSpec,
    ) -> Result<i64, OvsdbError>;
    /// Waits until ovs-vswitchd raised `cur_cfg` to `next_cfg`, at most `timeout`
    /// ([`Client::wait_cur_cfg`]).
    async fn wait_cur_cfg(&self, next_cfg: i64, timeout: Duration) -> Result<i64, OvsdbError>;
    /// `(ofport, error)` of an Interface ([`Client::interface_status`]).
    async fn interface_status(
        &self,
        name: &str,
    ) -> Result<Option<(Option<i64>, Option<String>)>, OvsdbError>;
    /// Deletes the QoS and Queue rows marked with all of `marks` ([`Client::del_qos_marked`]);
    /// how many. The default (fakes) deletes none.
    async fn del_qos_marked(&self, marks: &BTreeMap<String, String>) -> Result<u64, OvsdbError> {
        let _ = marks;
        Ok(0)
    }
    /// Deletes many Ports, each under its own guard, in as few transactions as the guards
    /// allow ([`Client::del_ports`]); per item what [`Vswitch::del_port`] returns. The default
    /// deletes them one by one.
    async fn del_ports(
        &self,
        items: &[(String, DelGuard)],
    ) -> Vec<Result<Option<i64>, OvsdbError>> {
        let mut out = Vec::new();
        for (name, guard) in items {
            out.push(self.del_port(name, guard.clone()).await);
        }
        out
    }
    /// Adds many Ports in as few transactions as the guards allow ([`Client::add_ports`]); per
    /// spec what [`Vswitch::add_port`] returns. The default adds them one by one.
    async fn add_ports(&self, specs: &[PortSpec]) -> Vec<Result<i64, OvsdbError>> {
        let mut out = Vec::new();
        for s in specs {
            out.push(self.add_port(s).await);
        }
        out
    }
    /// Replaces many Ports in as few transactions as the guards allow
    /// ([`Client::replace_ports`]); per item what [`Vswitch::replace_port`] returns. The
    /// default replaces them one by one.
    async fn replace_ports(
        &self,
        items: &[(String, DelGuard, PortSpec)],
    ) -> Vec<Result<i64, OvsdbError>> {
        let mut out = Vec::new();
        for (name, guard, spec) in items {
            out.push(self.replace_port(name, guard.clone(), spec).await);
        }
        out
    }
    /// `(ofport, error)` of many Interfaces ([`Client::interfaces_status`]). The default
    /// reads them one by one.
    async fn interfaces_status(&self, names: &[String]) -> Result<Vec<IfaceStatus>, OvsdbError> {
        let mut out = Vec::new();
        for n in names {
            out.push(self.interface_status(n).await?);
        }
        Ok(out)
    }
}

impl Links for Netlink {
    async fn link_by_name(&self, name: &str) -> Result<Option<Link>, NetlinkError> {
        Netlink::link_by_name(self, name).await
    }
    async fn links(&self) -> Result<Vec<Link>, NetlinkError> {
        Netlink::links(self).await
    }
    async fn delete(&self, link: &Link) -> Result<(), NetlinkError> {
        Netlink::delete(self, link).await
    }
    async fn set_down(&self, link: &Link) -> Result<(), NetlinkError> {
        Netlink::set_down(self, link).await
    }
    async fn set_up(&self, link: &Link) -> Result<(), NetlinkError> {
        Netlink::set_up(self, link).await
    }
    async fn clear_qdiscs(&self, link: &Link) -> Result<u8, NetlinkError> {
        Netlink::clear_qdiscs(self, link).await
    }
    async fn peer_name(&self, link: &Link) -> Option<String> {
        Netlink::peer_name(self, link).await
    }
    async fn rename(
        &self,
        link: &Link,
        new_name: &str,
        alias: &str,
        up: bool,
    ) -> Result<(), NetlinkError> {
        Netlink::rename(self, link, new_name, alias, up).await
    }
    async fn add_altname(
        &self,
        link: &Link,
        altname: &str,
        alias: &str,
    ) -> Result<(), NetlinkError> {
        Netlink::add_altname(self, link, altname, alias).await
    }
    async fn del_altname(&self, link: &Link, altname: &str) -> Result<(), NetlinkError> {
        Netlink::del_altname(self, link, altname).await
    }
    async fn confirm_mesh(&self, cfg: &MeshSection) -> Result<MeshState, String> {
        crate::mesh::confirm(self, cfg).await
    }
}

impl Vswitch for Client {
    async fn snapshot(&self, names: &[&str]) -> Result<Snapshot, OvsdbError> {
        Client::snapshot(self, names).await
    }
    async fn list_ports(&self) -> Result<Vec<PortRow>, OvsdbError> {
        Client::list_ports(self).await
    }
    async fn add_port(&self, spec: &PortSpec) -> Result<i64, OvsdbError> {
        Client::add_port(self, spec).await
    }
    async fn del_port(&self, name: &str, guard: DelGuard) -> Result<Option<i64>, OvsdbError> {
        Client::del_port(self, name, guard).await
    }
    async fn replace_port(
        &self,
        del_name: &str,
        guard: DelGuard,
        spec: &PortSpec,
    ) -> Result<i64, OvsdbError> {
        Client::replace_port(self, del_name, guard, spec).await
    }
    async fn wait_cur_cfg(&self, next_cfg: i64, timeout: Duration) -> Result<i64, OvsdbError> {
        Client::wait_cur_cfg(self, next_cfg, timeout).await
    }
    async fn interface_status(
        &self,
        name: &str,
    ) -> Result<Option<(Option<i64>, Option<String>)>, OvsdbError> {
        Client::interface_status(self, name).await
    }
    async fn del_qos_marked(&self, marks: &BTreeMap<String, String>) -> Result<u64, OvsdbError> {
        Client::del_qos_marked(self, marks).await
    }
    async fn del_ports(
        &self,
        items: &[(String, DelGuard)],
    ) -> Vec<Result<Option<i64>, OvsdbError>> {
        Client::del_ports(self, items).await
    }
    async fn add_ports(&self, specs: &[PortSpec]) -> Vec<Result<i64, OvsdbError>> {
        Client::add_ports(self, specs).await
    }
    async fn replace_ports(
        &self,
        items: &[(String, DelGuard, PortSpec)],
    ) -> Vec<Result<i64, OvsdbError>> {
        Client::replace_ports(self, items).await
    }
    async fn interfaces_status(&self, names: &[String]) -> Result<Vec<IfaceStatus>, OvsdbError> {
        Client::interfaces_status(self, names).await
    }
}

/// The connections of one run: links, the Open_vSwitch database, each wait's timeout and the
/// run's deadline.
pub struct Host<L = Netlink, V = Client> {
    /// The kernel's links.
    pub nl: L,
    /// The Open_vSwitch database.
    pub ovs: V,
    /// Each wait for ovs-vswitchd (`[ovsdb] timeout_ms`), before the deadline shortens it.
    pub timeout: Duration,
    /// The run's deadline.
    pub deadline: Deadline,
}

impl Host {
    /// Opens netlink and the OVSDB socket of `[ovsdb] socket` (bounded by `timeout_ms`). A
    /// failed OVSDB connect leaves an `ovs.connect failed` row.
    ///
    /// Errors: [`RunError::NetlinkSocket`], [`RunError::Ovsdb`].
    pub async fn connect(
        cfg: &AgentConfig,
        deadline: Deadline,
        rec: &mut Recorder,
    ) -> Result<Host, RunError> {
        let t = Instant::now();
        let timeout = Duration::from_millis(cfg.toml.ovsdb.timeout_ms);
        let nl = Netlink::connect().map_err(RunError::NetlinkSocket)?;
        let ovs = match Client::connect(&cfg.toml.ovsdb.socket, timeout).await {
            Ok(c) => c,
            Err(e) => {
                rec.outcome(
                    "ovs.connect",
                    crate::audit::Outcome::Failed,
                    json!({"error": e.to_string()}),
                );
                return Err(RunError::Ovsdb(e));
            }
        };
        rec.timing("ovs.connect", t.elapsed());
        Ok(Host {
            nl,
            ovs,
            timeout,
            deadline,
        })
    }
}

impl<L: Links, V: Vswitch> Host<L, V> {
    /// The link called `name`, or `None`.
    pub async fn link(&self, name: &str) -> Result<Option<Link>, RunError> {
        Ok(self.nl.link_by_name(name).await?)
    }

    /// The link called `name`; [`RunError::LinkMissing`] when there is none.
    pub async fn require_link(&self, name: &str) -> Result<Link, RunError> {
        self.link(name).await?.ok_or_else(|| RunError::LinkMissing {
            name: name.to_string(),
        })
    }

    /// How long a wait for ovs-vswitchd may take now ([`Deadline::wait_budget`]).
    pub fn wait_budget(&self, b: Budget) -> Duration {
        self.deadline.wait_budget(b, self.timeout)
    }
}
