//! Observe and apply: the only module that reads and changes the host for a hook. It turns
//! netlink links and OVSDB rows into [`crate::plan::Observed`], and executes a plan's steps,
//! reporting each outcome to the [`Recorder`]. A post-start that fails half-way puts PVE's own
//! plumbing back (`veth<vmid>i<n>` on its bridge with PVE's tag/trunks/mtu).

use crate::audit::Outcome;
use crate::config::AgentConfig;
use crate::desired::{Desired, DesiredNic};
use crate::exit::ExitCode;
use crate::hook::HookOptions;
use crate::netlink::{Link, Netlink, OWNER_ALIAS_PREFIX};
use crate::ovsdb::{Client, DelGuard, OvsdbError, PortRow, PortSpec};
use crate::plan::{
    self, Observed, ObservedLink, ObservedNic, ObservedPort, PlanError, Planned, Step,
};
use crate::report::Recorder;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// A failed run: exit code and one-line message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookError {
    pub code: ExitCode,
    pub message: String,
}

impl HookError {
    /// A new error.
    pub fn new(code: ExitCode, message: impl Into<String>) -> HookError {
        HookError {
            code,
            message: message.into(),
        }
    }

    /// Maps a planning refusal to its exit code.
    pub fn from_plan(e: PlanError) -> HookError {
        let code = match e {
            PlanError::Refused(_) => ExitCode::Refused,
            PlanError::Unavailable(_) => ExitCode::Unavailable,
            PlanError::Missing(_) => ExitCode::Failed,
        };
        HookError::new(code, e.to_string())
    }

    fn from_ovsdb(e: &OvsdbError) -> HookError {
        let code = match e {
            OvsdbError::Connect { .. }
            | OvsdbError::ConnectTimeout { .. }
            | OvsdbError::ConnectionClosed { .. }
            | OvsdbError::NoSuchBridge { .. } => ExitCode::Unavailable,
            OvsdbError::Timeout { .. } | OvsdbError::WaitTimeout { .. } => ExitCode::Timeout,
            OvsdbError::PortExists { .. } | OvsdbError::NotOwned { .. } => ExitCode::Refused,
            _ => ExitCode::Failed,
        };
        HookError::new(code, e.to_string())
    }
}

/// The alias op-agent puts on a link it renamed.
pub fn owner_alias(vmid: u32, net: u8) -> String {
    format!("{OWNER_ALIAS_PREFIX}vm-id={vmid} net={net}")
}

/// Connections to the kernel and to ovsdb-server for one run.
pub struct Target {
    pub nl: Netlink,
    pub ovs: Client,
    /// Each wait for ovs-vswitchd (`[ovsdb] timeout_ms`).
    pub timeout: Duration,
    /// When the run's `[hook] deadline_ms` ends, and that deadline's length.
    deadline: (Instant, Duration),
}

fn port_of(row: PortRow) -> ObservedPort {
    let iface = row.interfaces.into_iter().next();
    ObservedPort {
        name: row.name,
        bridge: row.bridge,
        tag: row.tag,
        trunks: row.trunks,
        vlan_mode: row.vlan_mode,
        mtu_request: iface.as_ref().and_then(|i| i.mtu_request),
        external_ids: row.external_ids,
        ofport: iface.as_ref().and_then(|i| i.ofport),
        error: iface.and_then(|i| i.error),
        link_alive: false,
    }
}

fn link_of(l: Link, vmid: u32, net: u8) -> ObservedLink {
    let ours = l.alias.as_deref() == Some(owner_alias(vmid, net).as_str());
    ObservedLink {
        other_owner: l
            .alias
            .clone()
            .filter(|a| !ours && a.starts_with(OWNER_ALIAS_PREFIX)),
        ours,
        index: l.index,
        name: l.name,
        kind: l.kind,
        up: l.up,
        master: l.master,
    }
}

impl Target {
    /// Opens netlink and the OVSDB socket of `[ovsdb] socket` (bounded by `timeout_ms`).
    pub async fn connect(cfg: &AgentConfig, rec: &mut Recorder) -> Result<Target, HookError> {
        let t = Instant::now();
        let timeout = Duration::from_millis(cfg.toml.ovsdb.timeout_ms);
        let nl = Netlink::connect()
            .map_err(|e| HookError::new(ExitCode::Internal, format!("netlink socket: {e}")))?;
        let ovs = match Client::connect(&cfg.toml.ovsdb.socket, timeout).await {
            Ok(c) => c,
            Err(e) => {
                let err = HookError::from_ovsdb(&e);
                rec.outcome(
                    "ovs.connect",
                    Outcome::Failed,
                    json!({"error": e.to_string()}),
                );
                return Err(err);
            }
        };
        rec.timing("ovs.connect", t.elapsed());
        let length = Duration::from_millis(cfg.toml.hook.deadline_ms);
        let deadline = (t + length.saturating_sub(rec.elapsed()), length);
        Ok(Target {
            nl,
            ovs,
            timeout,
            deadline,
        })
    }

    async fn link(&self, name: &str) -> Result<Option<Link>, HookError> {
        self.nl
            .link_by_name(name)
            .await
            .map_err(|e| HookError::new(ExitCode::Failed, e.to_string()))
    }

    /// Reads what the plan needs: one OVSDB transaction (all bridge names and the Ports and
    /// Interfaces named `veth<vmid>i<n>` and op-agent's name for every NIC) with every netlink
    /// lookup (both link names and the bridge's device per NIC) in flight at the same time, so
    /// the whole read costs about one round trip. `with_owned` also lists every Port owned by
    /// op-agent for this vmid (pre-start and post-stop sweeps), pipelined on the same
    /// connection.
    pub async fn observe(
        &self,
        d: &Desired,
        with_owned: bool,
        rec: &mut Recorder,
    ) -> Result<Observed, HookError> {
        let t = Instant::now();
        let vmid = d.vmid.get();
        let names: Vec<&str> = d
            .nics
            .iter()
            .flat_map(|n| [n.pve_veth.as_str(), n.name.as_str()])
            .collect();
        let ovs = async {
            let owned = async {
                match with_owned {
                    true => self.ovs.list_ports().await.map(Some),
                    false => Ok(None),
                }
            };
            tokio::try_join!(self.ovs.snapshot(&names), owned)
        };
        let links = futures_util::future::try_join_all(d.nics.iter().map(|nic| async move {
            let (pve, target, bridge) = tokio::try_join!(
                self.link(&nic.pve_veth),
                self.link(nic.name.as_str()),
                async {
                    match &nic.bridge {
                        Some(b) => self.link(b.as_str()).await,
                        None => Ok(None),
                    }
                }
            )?;
            Ok::<_, HookError>((pve, target, bridge))
        }));
        let (ovs, links) = tokio::join!(ovs, links);
        let (snap, owned) = match ovs {
            Ok(r) => r,
            Err(e) => {
                rec.outcome(
                    "ovs.observe",
                    Outcome::Failed,
                    json!({"error": e.to_string()}),
                );
                return Err(HookError::from_ovsdb(&e));
            }
        };
        let links = links?;
        let mut obs = Observed {
            ovs_bridges: snap.bridges.into_iter().collect(),
            ..Observed::default()
        };
        for (nic, (pve, target, bridge)) in d.nics.iter().zip(links) {
            let n = nic.net.get();
            let mut o = ObservedNic {
                pve_link: pve.map(|l| link_of(l, vmid, n)),
                target_link: target.map(|l| link_of(l, vmid, n)),
                pve_port: snap.ports.get(&nic.pve_veth).cloned().map(port_of),
                target_port: snap.ports.get(nic.name.as_str()).cloned().map(port_of),
                ..Default::default()
            };
            if let Some(bl) = bridge {
                o.bridge_link_kind = bl.kind;
                o.bridge_mtu = bl.mtu;
            }
            obs.nics.push(o);
        }
        if let Some(ports) = owned {
            let vm = vmid.to_string();
            obs.owned_ports = ports
                .into_iter()
                .filter(|p| {
                    p.external_ids.get("owner").map(String::as_str) == Some(plan::OWNER)
                        && p.external_ids.get("vm-id") == Some(&vm)
                })
                .map(port_of)
                .collect();
        }
        rec.timing("observe", t.elapsed());
        Ok(obs)
    }

    async fn wait(
        &self,
        next_cfg: i64,
        rec: &mut Recorder,
        net: Option<u8>,
    ) -> Result<(), HookError> {
        let t = Instant::now();
        let r = self
            .ovs
            .wait_cur_cfg(next_cfg, self.wait_budget(Budget::Forward))
            .await;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        rec.timing("ovs.wait", t.elapsed());
        match r {
            Ok(cur) => {
                rec.outcome(
                    "ovs.wait",
                    Outcome::Ok,
                    json!({"net": net, "next_cfg": next_cfg, "cur_cfg": cur, "ms": ms}),
                );
                Ok(())
            }
            Err(e) => {
                rec.outcome(
                    "ovs.wait",
                    Outcome::Failed,
                    json!({"net": net, "next_cfg": next_cfg, "error": e.to_string()}),
                );
                Err(HookError::from_ovsdb(&e))
            }
        }
    }
}

/// Which part of the hook deadline a wait for ovs-vswitchd may use.
#[derive(Clone, Copy)]
enum Budget {
    /// A step of the plan: it must end a quarter of the deadline early, so a rollback and the
    /// audit rows still fit (PVE's veth is never left off its port by the deadline).
    Forward,
    /// A rollback: it may use all but the last twelfth (for the outcome rows).
    Rollback,
}

impl Target {
    /// `[ovsdb] timeout_ms`, shortened so the wait ends before its part of the deadline.
    fn wait_budget(&self, b: Budget) -> Duration {
        let (end, length) = self.deadline;
        let reserve = match b {
            Budget::Forward => length / 4,
            Budget::Rollback => length / 12,
        };
        end.saturating_duration_since(Instant::now())
            .saturating_sub(reserve)
            .min(self.timeout)
    }
}

/// Sets `link_alive` on every observed Port whose name is a kernel link; returns whether any
/// is alive.
pub async fn mark_live_ports(target: &Target, obs: &mut Observed) -> Result<bool, HookError> {
    let mut any = false;
    for nic in &mut obs.nics {
        if let Some(p) = nic.target_port.as_mut() {
            p.link_alive = target.link(&p.name).await?.is_some();
            any |= p.link_alive;
        }
    }
    for p in &mut obs.owned_ports {
        p.link_alive = target.link(&p.name).await?.is_some();
        any |= p.link_alive;
    }
    Ok(any)
}

/// Per-NIC progress, for putting PVE's plumbing back when a post-start step fails.
#[derive(Default)]
struct Undo {
    /// PVE's port we deleted (re-added with PVE's values).
    pve_port: Option<ObservedPort>,
    /// PVE's veth we set down (set up again, unless the rename back does it).
    downed: Option<String>,
    /// `(pve name, new name)` after a rename.
    renamed: Option<(String, String)>,
}

fn nic_of<'a>(d: &'a Desired, p: &Planned) -> Option<&'a DesiredNic> {
    p.net.and_then(|n| d.nics.iter().find(|x| x.net == n))
}

/// Executes `steps` in order: the intent row first (write-ahead), then each step with its
/// outcome row. Returns a one-line summary. On a failed step of a NIC, PVE's plumbing of that
/// NIC is restored where op-agent had taken it apart, and the error is returned.
pub async fn apply(
    target: &Target,
    cfg: &AgentConfig,
    d: &Desired,
    obs: &Observed,
    steps: &[Planned],
    opts: &HookOptions,
    rec: &mut Recorder,
) -> Result<String, HookError> {
    let lines: Vec<String> = steps
        .iter()
        .map(|p| match p.net {
            Some(n) => format!("net{n}: {}", p.step),
            None => p.step.to_string(),
        })
        .collect();
    if opts.dry_run {
        for l in &lines {
            println!("{l}");
        }
        if lines.is_empty() {
            println!("(nothing to do)");
        }
        return Ok(String::new());
    }
    let changes = steps.iter().any(|p| {
        !matches!(
            p.step,
            Step::Skip { .. }
                | Step::ConfirmMesh
                | Step::RecordMesh { .. }
                | Step::CheckMaster { .. }
        )
    });
    if changes {
        rec.intent("run.intent", &json!({"plan": lines}))
            .map_err(|e| HookError::new(ExitCode::AuditIo, format!("{e}; nothing was changed")))?;
    }
    let mut undo: Vec<(u8, Undo)> = Vec::new();
    let mut summary = Vec::new();
    for p in steps {
        let net = p.net.map(|n| n.get());
        let t = Instant::now();
        let res = match injected_failure(p.step.name()) {
            Some(e) => {
                rec.outcome(
                    p.step.name(),
                    Outcome::Failed,
                    json!({"net": net, "error": e.message}),
                );
                Err(e)
            }
            None => apply_step(target, cfg, d, obs, p, rec, &mut undo).await,
        };
        rec.timing(p.step.name(), t.elapsed());
        failpoint(p.step.name());
        match res {
            Ok(Some(s)) => summary.push(s),
            Ok(None) => {}
            Err(e) => {
                if let Some(n) = net {
                    if let Some(pos) = undo.iter().position(|(x, _)| *x == n) {
                        let (_, u) = undo.remove(pos);
                        restore_pve(target, n, u, rec).await;
                    }
                }
                return Err(e);
            }
        }
    }
    if !changes {
        rec.outcome("run.converged", Outcome::Ok, json!({}));
        if summary.is_empty() {
            summary.push("nothing to change".into());
        }
    }
    Ok(summary.join("; "))
}

/// Test builds only: `OP_AGENT_FAILPOINT=<step name>` kills the process right after that step
/// (SIGKILL, like `kill -9`), to test that running the phase again converges;
/// `OP_AGENT_FAILPOINT=panic:<step name>` panics there instead.
fn failpoint(step: &str) {
    #[cfg(feature = "failpoints")]
    {
        let fp = std::env::var("OP_AGENT_FAILPOINT").unwrap_or_default();
        if fp == step {
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        }
        // `panic:<step>`: a panic instead of a kill (tests the panic path of `lib::run`).
        #[allow(clippy::panic)]
        if fp.strip_prefix("panic:") == Some(step) {
            panic!("failpoint panic after {step}");
        }
    }
    let _ = step;
}

/// Test builds only: `OP_AGENT_FAILPOINT=fail:<step name>` makes that step fail without
/// running (exit 1), to test the rollback of PVE's plumbing.
fn injected_failure(step: &str) -> Option<HookError> {
    #[cfg(feature = "failpoints")]
    {
        let fp = std::env::var("OP_AGENT_FAILPOINT").unwrap_or_default();
        if fp.strip_prefix("fail:") == Some(step) {
            return Some(HookError::new(
                ExitCode::Failed,
                format!("failpoint: {step} failed"),
            ));
        }
    }
    let _ = step;
    None
}

async fn apply_step(
    target: &Target,
    cfg: &AgentConfig,
    d: &Desired,
    obs: &Observed,
    p: &Planned,
    rec: &mut Recorder,
    undo: &mut Vec<(u8, Undo)>,
) -> Result<Option<String>, HookError> {
    let net = p.net.map(|n| n.get());
    let name = p.step.name();
    let failed = |rec: &mut Recorder, e: &HookError| {
        rec.outcome(
            name,
            Outcome::Failed,
            json!({"net": net, "error": e.message}),
        );
    };
    let undo_of = |undo: &mut Vec<(u8, Undo)>| -> Option<usize> {
        let n = net?;
        Some(match undo.iter().position(|(x, _)| *x == n) {
            Some(i) => i,
            None => {
                undo.push((n, Undo::default()));
                undo.len() - 1
            }
        })
    };
    match &p.step {
        Step::DelPort { port, guard } => {
            let g = match guard {
                plan::DelGuard::Any => DelGuard::Any,
                plan::DelGuard::Owned => DelGuard::OwnedBy {
                    key: "owner".into(),
                    value: plan::OWNER.into(),
                },
            };
            match target.ovs.del_port(port, g).await {
                Ok(Some(next)) => {
                    rec.outcome(name, Outcome::Ok, json!({"net": net, "port": port}));
                    if let Some(nic) = nic_of(d, p) {
                        if *port == nic.pve_veth {
                            let i = nic_index(d, nic);
                            if let (Some(u), Some(o)) = (undo_of(undo), obs.nics.get(i)) {
                                undo[u].1.pve_port = o.pve_port.clone();
                            }
                        }
                    }
                    // ovs-vswitchd now releases the device: ~10 ms in the userspace datapath,
                    // where closing its packet socket waits for an RCU grace period. The audit
                    // WAL is folded meanwhile, when it is due.
                    rec.idle();
                    target.wait(next, rec, net).await?;
                }
                Ok(None) => rec.outcome(
                    name,
                    Outcome::Skipped,
                    json!({"net": net, "port": port, "reason": "absent"}),
                ),
                Err(e) => {
                    let he = HookError::from_ovsdb(&e);
                    failed(rec, &he);
                    return Err(he);
                }
            }
            Ok(None)
        }
        Step::LinkDown { link } => {
            let l = require_link(target, link)
                .await
                .inspect_err(|e| failed(rec, e))?;
            target
                .nl
                .set_down(&l)
                .await
                .map_err(|e| HookError::new(ExitCode::Failed, e.to_string()))
                .inspect_err(|e| failed(rec, e))?;
            if let Some(u) = undo_of(undo) {
                undo[u].1.downed = Some(link.clone());
            }
            rec.outcome(name, Outcome::Ok, json!({"net": net, "link": link}));
            Ok(None)
        }
        Step::LinkRename { from, to, up } => {
            let l = require_link(target, from)
                .await
                .inspect_err(|e| failed(rec, e))?;
            let alias = owner_alias(d.vmid.get(), net.unwrap_or(0));
            target
                .nl
                .rename(&l, to, &alias, *up)
                .await
                .map_err(|e| HookError::new(ExitCode::Failed, e.to_string()))
                .inspect_err(|e| failed(rec, e))?;
            if let Some(u) = undo_of(undo) {
                undo[u].1.renamed = Some((from.clone(), to.clone()));
            }
            rec.outcome(
                name,
                Outcome::Ok,
                json!({"net": net, "from": from, "to": to, "ifindex": l.index, "up": up}),
            );
            Ok(Some(format!("net{} {from} -> {to}", net.unwrap_or(0))))
        }
        Step::LinkUp { link } => {
            let l = require_link(target, link)
                .await
                .inspect_err(|e| failed(rec, e))?;
            target
                .nl
                .set_up(&l)
                .await
                .map_err(|e| HookError::new(ExitCode::Failed, e.to_string()))
                .inspect_err(|e| failed(rec, e))?;
            rec.outcome(name, Outcome::Ok, json!({"net": net, "link": link}));
            Ok(None)
        }
        Step::AddPort(pp) | Step::ReplacePort(pp) => {
            let r = if matches!(p.step, Step::ReplacePort(_)) {
                target
                    .ovs
                    .replace_port(
                        &pp.name,
                        DelGuard::OwnedBy {
                            key: "owner".into(),
                            value: plan::OWNER.into(),
                        },
                        pp,
                    )
                    .await
            } else {
                target.ovs.add_port(pp).await
            };
            let next = r
                .map_err(|e| HookError::from_ovsdb(&e))
                .inspect_err(|e| failed(rec, e))?;
            rec.outcome(
                name,
                Outcome::Ok,
                json!({"net": net, "port": pp.name, "bridge": pp.bridge, "tag": pp.tag,
                       "trunks": pp.trunks, "vlan_mode": pp.vlan_mode,
                       "mtu_request": pp.mtu_request, "external_ids": pp.external_ids}),
            );
            target.wait(next, rec, net).await?;
            let status = target
                .ovs
                .interface_status(&pp.name)
                .await
                .map_err(|e| HookError::from_ovsdb(&e))?;
            let (ofport, error) = status.unwrap_or((None, Some("Interface row missing".into())));
            if ofport.unwrap_or(-1) <= 0 || error.is_some() {
                let e = HookError::new(
                    ExitCode::Failed,
                    format!(
                        "ovs-vswitchd could not attach {} to {}: {}",
                        pp.name,
                        pp.bridge,
                        error.as_deref().unwrap_or("no ofport")
                    ),
                );
                rec.outcome(
                    "ovs.check",
                    Outcome::Failed,
                    json!({"net": net, "port": pp.name, "ofport": ofport, "error": error}),
                );
                return Err(e);
            }
            rec.outcome(
                "ovs.check",
                Outcome::Ok,
                json!({"net": net, "port": pp.name, "ofport": ofport}),
            );
            if let Some(i) = net.and_then(|n| undo.iter().position(|(x, _)| *x == n)) {
                undo.remove(i);
            }
            let mut s = format!("on {}", pp.bridge);
            if let Some(t) = pp.tag {
                s.push_str(&format!(" tag {t}"));
            }
            s.push_str(&format!(" ofport {}", ofport.unwrap_or(-1)));
            Ok(Some(s))
        }
        Step::CheckMaster { link, bridge } => {
            let l = require_link(target, link)
                .await
                .inspect_err(|e| failed(rec, e))?;
            let b = require_link(target, bridge)
                .await
                .inspect_err(|e| failed(rec, e))?;
            if l.master != Some(b.index) {
                let e = HookError::new(
                    ExitCode::Failed,
                    format!("{link} is no longer enslaved to {bridge} after the rename"),
                );
                failed(rec, &e);
                return Err(e);
            }
            rec.outcome(
                name,
                Outcome::Ok,
                json!({"net": net, "link": link, "master": bridge}),
            );
            Ok(Some(format!("{link} in {bridge}")))
        }
        Step::ConfirmMesh => match crate::mesh::confirm(&target.nl, &cfg.toml.mesh).await {
            Ok(m) => {
                rec.outcome(
                    name,
                    Outcome::Ok,
                    json!({"interface": m.interface, "kind": m.kind, "addresses": m.addresses}),
                );
                Ok(Some(m.via()))
            }
            Err(msg) if d.require_mesh => {
                let e = HookError::new(ExitCode::Unavailable, msg);
                failed(rec, &e);
                Err(e)
            }
            Err(msg) => {
                log::warn!("{msg}");
                rec.outcome(name, Outcome::Skipped, json!({"warning": msg}));
                Ok(None)
            }
        },
        Step::RecordMesh { link } => {
            let nic = nic_of(d, p);
            match crate::mesh::confirm(&target.nl, &cfg.toml.mesh).await {
                Ok(m) => {
                    rec.outcome(
                        name,
                        Outcome::Ok,
                        json!({"net": net, "link": link, "hwaddr": nic.and_then(|n| n.hwaddr.clone()),
                               "interface": m.interface, "kind": m.kind, "addresses": m.addresses}),
                    );
                    Ok(Some(format!("{link} {}", m.via())))
                }
                Err(msg) => {
                    // post-start cannot abort the start any more: warn and record.
                    log::warn!("{link}: {msg}");
                    rec.outcome(
                        name,
                        Outcome::Skipped,
                        json!({"net": net, "link": link, "warning": msg}),
                    );
                    Ok(Some(format!("{link} without mesh: {msg}")))
                }
            }
        }
        Step::Skip { reason } => {
            rec.outcome(
                name,
                Outcome::Skipped,
                json!({"net": net, "reason": reason}),
            );
            Ok(None)
        }
    }
}

fn nic_index(d: &Desired, nic: &DesiredNic) -> usize {
    d.nics
        .iter()
        .position(|n| n.net == nic.net)
        .unwrap_or(usize::MAX)
}

async fn require_link(target: &Target, name: &str) -> Result<Link, HookError> {
    target
        .link(name)
        .await?
        .ok_or_else(|| HookError::new(ExitCode::Failed, format!("link {name} does not exist")))
}

/// The audit row of one rollback action: `detail`, plus `error` when it failed.
fn record_rollback(rec: &mut Recorder, step: &str, r: Result<(), String>, mut detail: Value) {
    match r {
        Ok(()) => rec.outcome(step, Outcome::Ok, detail),
        Err(e) => {
            detail["error"] = json!(e);
            rec.outcome(step, Outcome::Failed, detail)
        }
    }
}

/// Puts PVE's plumbing of `net` back after a failed step: rename back, re-add PVE's port with
/// PVE's own values. Best effort: each action gets an audit row.
async fn restore_pve(target: &Target, net: u8, u: Undo, rec: &mut Recorder) {
    let net_v = Some(net);
    if let Some((pve, ours)) = &u.renamed {
        // Our port first, and ovs-vswitchd must have released the device before it is renamed
        // back (ovs-issues#284, as on the way forward).
        let released = match target
            .ovs
            .del_port(
                ours,
                DelGuard::OwnedBy {
                    key: "owner".into(),
                    value: plan::OWNER.into(),
                },
            )
            .await
        {
            Ok(Some(next)) => target
                .ovs
                .wait_cur_cfg(next, target.wait_budget(Budget::Rollback))
                .await
                .map(|_| ())
                .map_err(|e| format!("ovs-vswitchd did not release {ours}: {e}")),
            Ok(None) => Ok(()),
            // OVSDB unreachable: whether a row of ours exists cannot be known; PVE's name back
            // is what gets the container its network again once OVS answers.
            Err(_) => Ok(()),
        };
        let r = match (released, require_link(target, ours).await) {
            (Err(e), _) => Err(e),
            (Ok(()), Ok(l)) => target
                .nl
                .rename(&l, pve, "", true)
                .await
                .map_err(|e| e.to_string()),
            (Ok(()), Err(e)) => Err(e.message),
        };
        record_rollback(
            rec,
            "rollback.rename",
            r,
            json!({"net": net_v, "from": ours, "to": pve}),
        );
    }
    if let (None, Some(link)) = (&u.renamed, &u.downed) {
        let r = match require_link(target, link).await {
            Ok(l) => target.nl.set_up(&l).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.message),
        };
        record_rollback(
            rec,
            "rollback.link-up",
            r,
            json!({"net": net_v, "link": link}),
        );
    }
    if let Some(p) = u.pve_port {
        let Some(bridge) = p.bridge.clone() else {
            return;
        };
        let spec = PortSpec {
            name: p.name.clone(),
            bridge,
            tag: p.tag,
            trunks: p.trunks.clone(),
            vlan_mode: p.vlan_mode.clone(),
            mtu_request: p.mtu_request.and_then(|m| u32::try_from(m).ok()),
            external_ids: Default::default(),
        };
        let r = match target.ovs.add_port(&spec).await {
            Ok(next) => target
                .ovs
                .wait_cur_cfg(next, target.wait_budget(Budget::Rollback))
                .await
                .map(|_| ())
                .map_err(|e| {
                    format!("the Port row is back, but ovs-vswitchd did not apply it: {e}")
                }),
            Err(e) => Err(e.to_string()),
        };
        record_rollback(
            rec,
            "rollback.add-port",
            r,
            json!({"net": net_v, "port": p.name}),
        );
    }
}
