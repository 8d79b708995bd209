//! Execute step: runs a plan's steps against the host through [`Links`] and [`Vswitch`],
//! reporting each outcome to the [`Recorder`]. A step that fails puts PVE's plumbing of its
//! NIC back ([`rollback::restore_pve`]). Never sees `--dry-run`: the engine stops before it.
//!
//! Test builds with the `failpoints` feature read `OP_AGENT_FAILPOINT`: `<step>` kills the
//! process (SIGKILL) right after that step, `panic:<step>` panics there, `fail:<step>` fails
//! the step without running it.

use crate::audit::Outcome;
use crate::config::MeshSection;
use crate::desired::{Desired, DesiredNic};
use crate::engine::deadline::Budget;
use crate::engine::error::RunError;
use crate::engine::host::{Host, Links, Vswitch};
use crate::engine::observed::Observed;
use crate::engine::ownership::{self, DelGuard};
use crate::engine::plan::{plan_lines, PlanError, Planned, Step};
use crate::engine::rollback::{self, Undo};
use crate::report::Recorder;
use serde_json::json;
use std::time::Instant;

/// Executes `steps` in order: the intent row first (write-ahead), then each step with its
/// outcome row. Returns a one-line summary. On a failed step of a NIC, PVE's plumbing of that
/// NIC is restored where op-agent had taken it apart, and the error is returned.
///
/// `mesh` is `[mesh]` of agent.toml (netmaker mode). Errors: [`RunError::AuditBefore`] when
/// the intent row cannot be written (nothing was changed), else the failed step's error.
pub async fn execute<L: Links, V: Vswitch>(
    host: &Host<L, V>,
    mesh: &MeshSection,
    d: &Desired,
    obs: &Observed,
    steps: &[Planned],
    rec: &mut Recorder,
) -> Result<String, RunError> {
    let changes = steps.iter().any(|p| super::plan::changes_host(&p.step));
    if changes {
        rec.intent("run.intent", &json!({"plan": plan_lines(steps)}))
            .map_err(RunError::AuditBefore)?;
    }
    let mut undo = Undos::default();
    let mut summary = Vec::new();
    for p in steps {
        let t = Instant::now();
        let res = match injected_failure(p.step.name()) {
            Some(e) => {
                rec.outcome(
                    p.step.name(),
                    Outcome::Failed,
                    json!({"net": p.net.map(|n| n.get()), "error": e.to_string()}),
                );
                Err(e)
            }
            None => step(host, mesh, d, obs, p, rec, &mut undo).await,
        };
        rec.timing(p.step.name(), t.elapsed());
        failpoint(p.step.name());
        match res {
            Ok(Some(s)) => summary.push(s),
            Ok(None) => {}
            Err(e) => {
                if let Some(n) = p.net.map(|n| n.get()) {
                    if let Some(u) = undo.take(n) {
                        let back = rollback::restore_pve(host, n, u, rec).await;
                        return Err(e.rolled_back(&[back]));
                    }
                }
                return Err(e);
            }
        }
    }
    if !changes {
        rec.outcome("run.converged", Outcome::Ok, json!({}));
    }
    Ok(super::plan::run_summary(&summary, steps))
}

/// Per-NIC [`Undo`] records, by `net` index.
#[derive(Default)]
pub(super) struct Undos(Vec<(u8, Undo)>);

impl Undos {
    /// The record of `net`, made empty when there is none yet.
    pub(super) fn of(&mut self, net: u8) -> &mut Undo {
        let i = match self.0.iter().position(|(x, _)| *x == net) {
            Some(i) => i,
            None => {
                self.0.push((net, Undo::default()));
                self.0.len() - 1
            }
        };
        &mut self.0[i].1
    }

    /// Removes and returns the record of `net`.
    pub(super) fn take(&mut self, net: u8) -> Option<Undo> {
        let i = self.0.iter().position(|(x, _)| *x == net)?;
        Some(self.0.remove(i).1)
    }

    /// Removes and returns every record, in the order they were made.
    pub(super) fn take_all(&mut self) -> Vec<(u8, Undo)> {
        std::mem::take(&mut self.0)
    }
}

/// Test builds only: `OP_AGENT_FAILPOINT=<step name>` kills the process right after that step
/// (SIGKILL, like `kill -9`), to test that running the phase again converges;
/// `OP_AGENT_FAILPOINT=panic:<step name>` panics there instead, and `pause:<step name>`
/// waits there for the test (see below).
pub(super) fn failpoint(step: &str) {
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
        // `pause:<step>`: creates `$OP_AGENT_FAILPOINT_DIR/paused`, then waits (at most 10 s)
        // for `$OP_AGENT_FAILPOINT_DIR/resume`, so a test can change the host mid-run.
        if fp.strip_prefix("pause:") == Some(step) {
            let dir = std::path::PathBuf::from(
                std::env::var_os("OP_AGENT_FAILPOINT_DIR").unwrap_or_default(),
            );
            let _ = std::fs::write(dir.join("paused"), step);
            let t = std::time::Instant::now();
            while !dir.join("resume").exists() && t.elapsed().as_secs() < 10 {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
    }
    let _ = step;
}

/// Test builds only: `OP_AGENT_FAILPOINT=fail:<step name>` makes that step fail without
/// running (exit 1), to test the rollback of PVE's plumbing.
pub(super) fn injected_failure(step: &str) -> Option<RunError> {
    #[cfg(feature = "failpoints")]
    {
        let fp = std::env::var("OP_AGENT_FAILPOINT").unwrap_or_default();
        if fp.strip_prefix("fail:") == Some(step) {
            return Some(RunError::Failpoint { step: step.into() });
        }
    }
    let _ = step;
    None
}

pub(super) fn nic_of<'a>(d: &'a Desired, p: &Planned) -> Option<(usize, &'a DesiredNic)> {
    let n = p.net?;
    d.nics.iter().enumerate().find(|(_, x)| x.net == n)
}

/// Waits (within [`Budget::Forward`]) until ovs-vswitchd applied `next_cfg`; an `ovs.wait`
/// row either way.
async fn wait<L: Links, V: Vswitch>(
    host: &Host<L, V>,
    next_cfg: i64,
    rec: &mut Recorder,
    net: Option<u8>,
) -> Result<(), RunError> {
    let t = Instant::now();
    let r = host
        .ovs
        .wait_cur_cfg(next_cfg, host.wait_budget(Budget::Forward))
        .await;
    let ms = crate::report::rounded_ms(t.elapsed());
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
            Err(RunError::Ovsdb(e))
        }
    }
}

/// Runs one step and records its outcome; `Ok(Some(line))` adds to the run's summary.
pub(super) async fn step<L: Links, V: Vswitch>(
    host: &Host<L, V>,
    mesh: &MeshSection,
    d: &Desired,
    obs: &Observed,
    p: &Planned,
    rec: &mut Recorder,
    undo: &mut Undos,
) -> Result<Option<String>, RunError> {
    let net = p.net.map(|n| n.get());
    let name = p.step.name();
    let failed = |rec: &mut Recorder, e: &RunError| {
        rec.outcome(
            name,
            Outcome::Failed,
            json!({"net": net, "error": e.to_string()}),
        );
    };
    match &p.step {
        Step::DelPort { port, guard } => {
            match host.ovs.del_port(port, guard.to_ovsdb()).await {
                Ok(Some(next)) => {
                    rec.outcome(name, Outcome::Ok, json!({"net": net, "port": port}));
                    if let (Some(n), Some((i, nic))) = (net, nic_of(d, p)) {
                        if *port == nic.pve_veth {
                            if let Some(o) = obs.nics.get(i) {
                                undo.of(n).pve_port = o.pve_port.clone();
                            }
                        }
                    }
                    // ovs-vswitchd now releases the device: ~10 ms in the userspace datapath,
                    // where closing its packet socket waits for an RCU grace period. The audit
                    // WAL is folded meanwhile, when it is due.
                    rec.idle();
                    wait(host, next, rec, net).await?;
                }
                Ok(None) => rec.outcome(
                    name,
                    Outcome::Skipped,
                    json!({"net": net, "port": port, "reason": "absent"}),
                ),
                Err(e) => {
                    let e = RunError::Ovsdb(e);
                    failed(rec, &e);
                    return Err(e);
                }
            }
            Ok(None)
        }
        Step::DelLink { link, why } => {
            let reason = why.describe().1;
            let Some(l) = host.link(link).await.inspect_err(|e| failed(rec, e))? else {
                rec.outcome(
                    name,
                    Outcome::Skipped,
                    json!({"net": net, "link": link, "reason": "absent"}),
                );
                return Ok(None);
            };
            // The guard: only a link carrying op-agent's alias for this vmid and net.
            if net.is_none() || ownership::alias_net(l.alias.as_deref(), d.vmid.get()) != net {
                let e = RunError::Plan(PlanError::Refused(format!(
                    "{link}: not deleted: its alias {:?} is not op-agent's for net{}",
                    l.alias,
                    net.unwrap_or(0)
                )));
                failed(rec, &e);
                return Err(e);
            }
            host.nl
                .delete(&l)
                .await
                .map_err(RunError::Netlink)
                .inspect_err(|e| failed(rec, e))?;
            rec.outcome(
                name,
                Outcome::Ok,
                json!({"net": net, "link": link, "ifindex": l.index, "reason": reason}),
            );
            Ok(Some(format!("net{} {link} deleted", net.unwrap_or(0))))
        }
        Step::LinkDown { link } => {
            let l = host
                .require_link(link)
                .await
                .inspect_err(|e| failed(rec, e))?;
            host.nl
                .set_down(&l)
                .await
                .map_err(RunError::Netlink)
                .inspect_err(|e| failed(rec, e))?;
            if let Some(n) = net {
                undo.of(n).downed = Some(link.clone());
            }
            rec.outcome(name, Outcome::Ok, json!({"net": net, "link": link}));
            Ok(None)
        }
        Step::ClearQdiscs { link } => {
            let l = host
                .require_link(link)
                .await
                .inspect_err(|e| failed(rec, e))?;
            let deleted = host
                .nl
                .clear_qdiscs(&l)
                .await
                .map_err(RunError::Netlink)
                .inspect_err(|e| failed(rec, e))?;
            rec.outcome(
                name,
                Outcome::Ok,
                json!({"net": net, "link": link, "deleted": deleted}),
            );
            Ok(None)
        }
        Step::LinkRename { from, to, up } => {
            let l = host
                .require_link(from)
                .await
                .inspect_err(|e| failed(rec, e))?;
            let alias = ownership::owner_alias(d.vmid.get(), net.unwrap_or(0));
            host.nl
                .rename(&l, to, &alias, *up)
                .await
                .map_err(RunError::Netlink)
                .inspect_err(|e| failed(rec, e))?;
            if let Some(n) = net {
                undo.of(n).renamed = Some((from.clone(), to.clone()));
            }
            rec.outcome(
                name,
                Outcome::Ok,
                json!({"net": net, "from": from, "to": to, "ifindex": l.index, "up": up}),
            );
            Ok(Some(format!("net{} {from} -> {to}", net.unwrap_or(0))))
        }
        Step::LinkUp { link } => {
            let l = host
                .require_link(link)
                .await
                .inspect_err(|e| failed(rec, e))?;
            host.nl
                .set_up(&l)
                .await
                .map_err(RunError::Netlink)
                .inspect_err(|e| failed(rec, e))?;
            rec.outcome(name, Outcome::Ok, json!({"net": net, "link": link}));
            Ok(None)
        }
        Step::AltName { link, altname } => {
            let l = host
                .require_link(link)
                .await
                .inspect_err(|e| failed(rec, e))?;
            let alias = ownership::owner_alias(d.vmid.get(), net.unwrap_or(0));
            host.nl
                .add_altname(&l, altname, &alias)
                .await
                .map_err(RunError::Netlink)
                .inspect_err(|e| failed(rec, e))?;
            rec.outcome(
                name,
                Outcome::Ok,
                json!({"net": net, "link": link, "altname": altname, "ifindex": l.index}),
            );
            Ok(Some(format!(
                "net{} {link} altname {altname}",
                net.unwrap_or(0)
            )))
        }
        Step::DelAltName { link, altname } => {
            let l = host
                .require_link(link)
                .await
                .inspect_err(|e| failed(rec, e))?;
            host.nl
                .del_altname(&l, altname)
                .await
                .map_err(RunError::Netlink)
                .inspect_err(|e| failed(rec, e))?;
            rec.outcome(
                name,
                Outcome::Ok,
                json!({"net": net, "link": link, "altname": altname}),
            );
            Ok(None)
        }
        Step::AddPort(pp) | Step::ReplacePort(pp) | Step::AdoptPort(pp) => {
            let r = match p.step {
                Step::ReplacePort(_) => {
                    host.ovs
                        .replace_port(&pp.name, DelGuard::Owned.to_ovsdb(), pp)
                        .await
                }
                // PVE's own row of the same name, taken over in one transaction.
                Step::AdoptPort(_) => {
                    host.ovs
                        .replace_port(&pp.name, DelGuard::Any.to_ovsdb(), pp)
                        .await
                }
                _ => host.ovs.add_port(pp).await,
            };
            let next = r.map_err(RunError::Ovsdb).inspect_err(|e| failed(rec, e))?;
            rec.outcome(
                name,
                Outcome::Ok,
                json!({"net": net, "port": pp.name, "bridge": pp.bridge, "tag": pp.tag,
                       "trunks": pp.trunks, "vlan_mode": pp.vlan_mode,
                       "mtu_request": pp.mtu_request, "external_ids": pp.external_ids}),
            );
            wait(host, next, rec, net).await?;
            let status = host
                .ovs
                .interface_status(&pp.name)
                .await
                .map_err(RunError::Ovsdb)?;
            let (ofport, error) = status.unwrap_or((None, Some("Interface row missing".into())));
            if ofport.unwrap_or(-1) <= 0 || error.is_some() {
                let e = RunError::NotAttached {
                    port: pp.name.clone(),
                    bridge: pp.bridge.clone(),
                    reason: error.clone().unwrap_or_else(|| "no ofport".into()),
                };
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
            if let Some(n) = net {
                undo.take(n);
            }
            let mut s = format!("on {}", pp.bridge);
            if let Some(t) = pp.tag {
                s.push_str(&format!(" tag {t}"));
            }
            s.push_str(&format!(" ofport {}", ofport.unwrap_or(-1)));
            Ok(Some(s))
        }
        Step::DelStaleQos => {
            let marks = std::collections::BTreeMap::from([
                (
                    ownership::OWNER_KEY.to_string(),
                    ownership::OWNER.to_string(),
                ),
                ("vm-id".to_string(), d.vmid.to_string()),
            ]);
            match host.ovs.del_qos_marked(&marks).await {
                Ok(n) => rec.outcome(name, Outcome::Ok, json!({"deleted": n})),
                // Still referenced (a Port of the container is there): left for the next run.
                Err(e) => rec.outcome(name, Outcome::Failed, json!({"error": e.to_string()})),
            }
            Ok(None)
        }
        Step::CheckMaster { link, bridge } => {
            let l = host
                .require_link(link)
                .await
                .inspect_err(|e| failed(rec, e))?;
            let b = host
                .require_link(bridge)
                .await
                .inspect_err(|e| failed(rec, e))?;
            if l.master != Some(b.index) {
                let e = RunError::NotEnslaved {
                    link: link.clone(),
                    bridge: bridge.clone(),
                };
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
        Step::ConfirmMesh => match host.nl.confirm_mesh(mesh).await {
            Ok(m) => {
                rec.outcome(
                    name,
                    Outcome::Ok,
                    json!({"interface": m.interface, "kind": m.kind, "addresses": m.addresses}),
                );
                Ok(Some(m.via()))
            }
            Err(msg) if d.require_mesh => {
                let e = RunError::Mesh(msg);
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
            let hwaddr = nic_of(d, p).and_then(|(_, n)| n.hwaddr.clone());
            match host.nl.confirm_mesh(mesh).await {
                Ok(m) => {
                    rec.outcome(
                        name,
                        Outcome::Ok,
                        json!({"net": net, "link": link, "hwaddr": hwaddr,
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
