//! `op-agent release <vmid>…|--all`: hands every NIC of running managed containers back to
//! Proxmox's names and plumbing, and stops managing them until their next start or
//! `op-agent apply` ([`crate::released`]).
//!
//! For each NIC op-agent renamed, in the order of a failed post-start's rollback
//! ([`crate::engine::rollback::hand_back`]): delete op-agent's Port and wait until
//! ovs-vswitchd applied that (it must release the device before it is renamed), rename
//! `vi<vmid>…` back to `veth<vmid>i<n>` (clearing op-agent's alias) and set it up, then add
//! the Port PVE's `tap_plug` would (pve-common `PVE::Network::tap_plug` →
//! `$ovs_bridge_add_port`: `add-port <bridge> <veth> [tag=] [trunks=]
//! [vlan_mode=native-untagged when both]`, `mtu_request=` the bridge's MTU of
//! `read_bridge_mtu`) with the values of the PVE conf, not the container TOML's, and wait
//! until ovs-vswitchd applied it. A NIC with `link_down=1` is renamed back and left down
//! without a Port (pve-container `net_tap_plug` only sets it down); one on a Linux bridge
//! keeps its master through the rename. A NIC's `rate=` is not touched: op-agent never removes
//! PVE's own tc rules from the device, and its OVS QoS rows go with its Port.
//!
//! Under PVE's config lock of the container (what `pct set` takes) and op-agent's per-vmid
//! lock, within `[hook] deadline_ms`; the release marker is written before the first change,
//! so a `watch` run started meanwhile finds every NIC skipped. Audit rows (`phase` =
//! `release`): `run.intent`, `release.rename`, `release.add-port` (`release.del-port` for a
//! NIC without a Port to put back). What would make a step fail (PVE's name taken, PVE's bridge
//! neither an OVS nor a Linux bridge, OVSDB unreachable) is refused before the first change,
//! with a `run.failed` row. When a step fails all the same (exit 71), the marker is removed and
//! the container converged again by op-agent (audit `phase` = `release`), so it is never left half
//! PVE's, half op-agent's.

use super::CommandResult;
use crate::audit::{AuditLog, AuditOptions, Outcome};
use crate::config::AgentConfig;
use crate::desired::{Desired, NicMode};
use crate::engine::observed::{ObservedNic, ObservedPort};
use crate::engine::ownership::DelGuard;
use crate::engine::plan::PlanError;
use crate::engine::rollback::{hand_back, record_rollback, Undo};
use crate::engine::{self, observe, Deadline, Host, Job, Managed, Phase, RunError, RunOptions};
use crate::exit::ExitCode;
use crate::inspect;
use crate::report::Recorder;
use pve_integration::{NetConf, Vmid};
use serde_json::json;
use std::time::Instant;

/// Arguments of `op-agent release`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReleaseArgs {
    /// Container ids (100..999999999); omit with `--all`.
    #[arg(required_unless_present_any = ["all", "list"], conflicts_with_all = ["all", "list"])]
    pub vmids: Vec<String>,
    /// Every managed container that is running and not released yet.
    #[arg(long)]
    pub all: bool,
    /// Print the vmids `--all` would release, one per line, and change nothing (the package's
    /// prerm names them).
    #[arg(long, conflicts_with = "all")]
    pub list: bool,
}

/// The containers `release --all` takes: managed, running and not released yet, ascending.
/// Also one whose hookscript was removed by hand while it ran, as long as one of its NICs
/// still is op-agent's renamed link (its alias names the container and NIC): PVE runs no
/// hookscript for it, so only `release` gives that NIC back (the package's prerm relies on
/// this list). A container with only a stale TOML is not listed.
fn releasable(cfg: &AgentConfig) -> Vec<Vmid> {
    let root = &cfg.toml.pve.root;
    cfg.managed_vmids()
        .into_iter()
        .filter_map(Vmid::new)
        .filter(|v| inspect::is_running(cfg, *v))
        .filter(|v| !crate::released::is_released(root, *v))
        .filter(|v| inspect::is_managed(cfg, *v) || renamed_unhooked(cfg, *v))
        .collect()
}

/// The links carrying op-agent's alias for `v` (any `netN`): its renamed NICs, whatever the
/// container TOML says or whether it is still there. Empty when netlink cannot be read.
fn links_of(v: Vmid) -> Vec<String> {
    let Ok(rt) = inspect::runtime() else {
        return Vec::new();
    };
    rt.block_on(async {
        let Ok(nl) = crate::netlink::Netlink::connect() else {
            return Vec::new();
        };
        nl.links()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|l| crate::engine::ownership::alias_net(l.alias.as_deref(), v.get()).is_some())
            .map(|l| l.name)
            .collect()
    })
}

/// Why `v` cannot be released: `not managed by op-agent`, and when a link still carries
/// op-agent's alias for `v` (its TOML was removed while it ran), how to get that NIC back to
/// PVE without it.
fn not_managed(cfg: &AgentConfig, v: Vmid) -> String {
    let ours = links_of(v);
    if ours.is_empty() || !inspect::is_running(cfg, v) {
        return "not managed by op-agent".into();
    }
    format!(
        "not managed by op-agent (no container TOML), but {} still has op-agent's name: restart \
         the container (pct reboot {v}) and PVE names and plugs its NICs itself, or put the TOML \
         back and run op-agent release {v}",
        ours.join(", ")
    )
}

/// True when `v` has a container TOML and a PVE conf (its hookscript may have been removed
/// by hand) and a link still carries op-agent's alias for it (renamed by op-agent).
pub(crate) fn renamed_unhooked(cfg: &AgentConfig, v: Vmid) -> bool {
    matches!(Managed::find_unhooked(cfg, v), Ok(Some(_))) && !links_of(v).is_empty()
}

/// Releases the containers `args` names with the loaded agent.toml `cfg` (with `--list` only
/// prints their vmids), printing one line per container
/// (`100: net0 vi100 -> veth100i0 on ovsbr0 tag 10`). Returns `Ok` with 0 when every
/// container was released, else the code of the first failure (71, [`ExitCode::HandBack`],
/// when a step failed part-way and op-agent's plumbing is back), each failure printed on
/// stderr as it happens.
///
/// # Errors
/// `Usage` (64) for a malformed vmid, before anything is changed.
pub fn run(args: &ReleaseArgs, cfg: &AgentConfig) -> CommandResult {
    if args.list {
        for v in releasable(cfg) {
            println!("{v}");
        }
        return Ok(ExitCode::Ok);
    }
    let vmids: Vec<Vmid> = if args.all {
        releasable(cfg)
    } else {
        args.vmids
            .iter()
            .map(|s| super::vmid_arg(s))
            .collect::<Result<_, _>>()?
    };
    let mut code = ExitCode::Ok;
    for v in vmids {
        match release_one(cfg, v) {
            Ok(lines) => {
                for l in lines {
                    println!("{v}: {l}");
                }
            }
            Err(Failure(c, msg)) => {
                eprintln!("op-agent release: {v}: {msg}");
                if code == ExitCode::Ok {
                    code = c;
                }
            }
        }
    }
    Ok(code)
}

/// Releases running managed container `v` as `op-agent release <v>` does (`enroll --remove`
/// shares it): the lines describing what was done.
///
/// # Errors
/// Why it was not released, with its exit code and one line (what became of the NICs).
pub(crate) fn release_vmid(cfg: &AgentConfig, v: Vmid) -> Result<Vec<String>, (ExitCode, String)> {
    release_one(cfg, v).map_err(|Failure(c, m)| (c, m))
}

/// Why a container was not released: the exit code and the one line.
struct Failure(ExitCode, String);

impl Failure {
    fn new(code: ExitCode, msg: impl Into<String>) -> Failure {
        Failure(code, msg.into())
    }
}

/// The lines to print for `v`, or why it was not released.
fn release_one(cfg: &AgentConfig, v: Vmid) -> Result<Vec<String>, Failure> {
    let root = &cfg.toml.pve.root;
    // Also a container whose hookscript was removed by hand while it ran: its NICs are still
    // op-agent's until its next stop.
    let managed = Managed::find_unhooked(cfg, v)
        .map_err(|e| Failure::new(e.code(), e.to_string()))?
        .ok_or_else(|| Failure::new(ExitCode::Failed, not_managed(cfg, v)))?;
    if !inspect::is_running(cfg, v) {
        return Err(Failure::new(
            ExitCode::Failed,
            "container is not running (a stopped container has no NIC to hand back)",
        ));
    }
    if crate::released::is_released(root, v) {
        return Ok(vec!["already released".into()]);
    }
    let started = Instant::now();
    let deadline = Deadline::of_config(cfg, started);
    let lock_err = |e: crate::lock::LockError| Failure::new(ExitCode::Timeout, e.to_string());
    let pve_dir = root.join("run/lock/lxc");
    let _pve_lock = crate::lock::lock_file(
        &pve_dir,
        &pve_dir.join(format!("pve-config-{v}.lock")),
        deadline.lock_wait(),
    )
    .map_err(lock_err)?;
    let lock = crate::lock::lock_vmid(&root.join("run/op-agent"), v.get(), deadline.lock_wait())
        .map_err(lock_err)?;
    let run_err = |e: RunError| Failure::new(e.code(), e.to_string());
    let d = managed
        .load()
        .map_err(|e| Failure::new(e.exit_code(), e.to_string()))?
        .ok_or_else(|| Failure::new(ExitCode::Config, "container TOML or PVE conf vanished"))?;
    let pve = pve_integration::read_conf(root, v)
        .map_err(|e| Failure::new(ExitCode::Config, e.to_string()))?
        .ok_or_else(|| Failure::new(ExitCode::Config, "PVE conf vanished"))?;
    let audit = AuditLog::open(
        &cfg.toml.audit.database,
        &AuditOptions {
            busy_timeout: deadline.audit_busy_timeout(),
            key_file: Some(cfg.audit_key_file()),
            ..AuditOptions::default()
        },
    )
    .map_err(|e| Failure::new(ExitCode::AuditIo, format!("{e}; nothing was changed")))?;
    crate::released::mark(root, v).map_err(|e| {
        Failure::new(
            ExitCode::Failed,
            format!("cannot write the release marker: {e}; nothing was changed"),
        )
    })?;
    let rt = inspect::runtime().map_err(run_err)?;
    let mut rec = Recorder::new(v.get(), "release", Some(audit), started);
    let result = rt.block_on(hand_back_all(cfg, &d, &pve, deadline, &mut rec, None));
    if let (Err(e), false) = (&result, rec.has_failed()) {
        // Refused or unreachable before the first change (hand_back_all returns no error
        // after it): the marker goes, the NICs are as they were.
        rec.outcome(
            "run.failed",
            Outcome::Failed,
            json!({"error": e.to_string(), "exit": e.code().code()}),
        );
    }
    let mid_failure = result.is_ok() && rec.has_failed();
    let finished = rec.finish();
    drop(rec);
    let lines = match result {
        Ok(lines) => lines,
        Err(e) => {
            let _ = crate::released::clear(root, v);
            return Err(Failure::new(
                e.code(),
                format!("not released: {e}; nothing was changed"),
            ));
        }
    };
    if !mid_failure {
        finished.map_err(|e| Failure::new(ExitCode::AuditIo, e.to_string()))?;
        return Ok(if lines.is_empty() {
            vec!["released (no NIC had op-agent's name)".into()]
        } else {
            lines
        });
    }
    // Half PVE's, half op-agent's is the one state nobody can work with: back to op-agent's.
    let _ = crate::released::clear(root, v);
    drop(lock);
    let job = Job {
        managed,
        phase: Phase::PostStart,
        label: "release".into(),
        started: None,
    };
    let back = engine::converge_noted(cfg, &job, &[], RunOptions::default());
    let why = "a step failed (op-agent audit log shows which)";
    match back.result {
        Ok(_) => Err(Failure::new(
            ExitCode::HandBack,
            format!("not released: {why}; op-agent's plumbing is back"),
        )),
        Err(e) => Err(Failure::new(
            e.code(),
            format!("not released: {why}; converging back failed too: {e}"),
        )),
    }
}

/// The Port PVE's `tap_plug` makes for `veth` from the PVE conf's `net`, with `mtu` the
/// bridge's (`read_bridge_mtu`).
fn pve_port(veth: &str, net: &NetConf, mtu: Option<u32>) -> Option<ObservedPort> {
    let tag = net.tag.map(|t| t.get());
    let trunks: Vec<u16> = net.trunks.iter().map(|t| t.get()).collect();
    Some(ObservedPort {
        name: veth.to_string(),
        bridge: Some(net.bridge.as_ref()?.to_string()),
        vlan_mode: pve_integration::ovs_vlan_mode(tag, &trunks).map(str::to_string),
        tag,
        trunks,
        mtu_request: mtu.map(i64::from),
        ..ObservedPort::default()
    })
}

/// Hands back every NIC of `d` op-agent renamed (only those whose `netN` index is in `only`,
/// when given: `op-agent set`); the lines describing what was done. Audit rows on `rec`:
/// `run.intent`, then `release.rename`, `release.add-port` or `release.del-port` per NIC.
///
/// # Errors
/// Before the first change (nothing changed, no `run.intent` row): OVSDB or netlink
/// unreachable, PVE's name taken, a NIC not in the PVE conf, PVE's bridge neither an OVS nor
/// a Linux bridge. A step failing after that is only recorded ([`Recorder::has_failed`]).
pub(crate) async fn hand_back_all(
    cfg: &AgentConfig,
    d: &Desired,
    pve: &pve_integration::PveConf,
    deadline: Deadline,
    rec: &mut Recorder,
    only: Option<&std::collections::BTreeSet<u8>>,
) -> Result<Vec<String>, RunError> {
    let host = Host::connect(cfg, deadline, rec).await?;
    let obs = observe::observe(&host, d, false, rec).await?;
    let todo: Vec<(&crate::desired::DesiredNic, &ObservedNic)> = d
        .nics
        .iter()
        .zip(&obs.nics)
        .filter(|(nic, o)| {
            // naming = "keep": PVE's name and Port are there already.
            !d.keeps_names()
                && !matches!(nic.mode, NicMode::Skip(_))
                && o.target_link.as_ref().is_some_and(|t| t.ours)
                && only.is_none_or(|s| s.contains(&nic.net.get()))
        })
        .collect();
    // Everything that would make a step fail is refused before the first change.
    let mut checked = Vec::new();
    for (nic, o) in todo {
        let n = nic.net.get();
        let refuse = |m: String| Err(RunError::Plan(PlanError::Refused(format!("net{n}: {m}"))));
        if o.pve_link.is_some() {
            return refuse(format!("a link named {} exists already", nic.pve_veth));
        }
        let Some(net) = pve.nets.get(&n) else {
            return refuse("not in the PVE conf".into());
        };
        let bridge = match &net.bridge {
            Some(b) => host.link(b.as_str()).await?,
            None => None,
        };
        let linux_bridge = bridge.as_ref().and_then(|b| b.kind.as_deref()) == Some("bridge");
        if let Some(b) = net
            .bridge
            .as_ref()
            .filter(|_| !net.link_down && !linux_bridge)
        {
            if !obs.ovs_bridges.contains(b.as_str()) {
                // pve-common tap_plug's own refusal.
                return Err(RunError::Plan(PlanError::Unavailable(format!(
                    "net{n}: bridge '{b}' is neither a linux nor an OVS bridge"
                ))));
            }
        }
        checked.push((nic, o, net, bridge, linux_bridge));
    }
    let plan: Vec<String> = checked
        .iter()
        .map(|(nic, ..)| format!("net{} {} -> {}", nic.net, nic.name, nic.pve_veth))
        .collect();
    rec.intent("run.intent", &json!({ "release": plan }))
        .map_err(RunError::AuditBefore)?;
    let mut lines = Vec::new();
    for (nic, o, net, bridge, linux_bridge) in checked {
        let n = nic.net.get();
        let (name, veth) = (nic.name.as_str(), nic.pve_veth.as_str());
        if net.link_down || linux_bridge || net.bridge.is_none() {
            // No Port to put back: only the name (a Linux bridge keeps its master, a
            // link_down NIC stays down); op-agent's Port, if any, goes first.
            if let Some(p) = o.target_port.as_ref().filter(|p| p.owned()) {
                let r = match host.ovs.del_port(&p.name, DelGuard::Owned.to_ovsdb()).await {
                    Ok(Some(next)) => host
                        .ovs
                        .wait_cur_cfg(next, host.wait_budget(engine::deadline::Budget::Rollback))
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string()),
                    Ok(None) => Ok(()),
                    Err(e) => Err(e.to_string()),
                };
                record_rollback(
                    rec,
                    "release.del-port",
                    r,
                    json!({"net": n, "port": p.name}),
                );
            }
            let r = match host.require_link(name).await {
                Ok(l) => host
                    .nl
                    .rename(&l, veth, "", !net.link_down)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            record_rollback(
                rec,
                "release.rename",
                r,
                json!({"net": n, "from": name, "to": veth, "up": !net.link_down}),
            );
            lines.push(format!(
                "net{n} {name} -> {veth}{}",
                if net.link_down { " (link down)" } else { "" }
            ));
            continue;
        }
        let port = pve_port(veth, net, bridge.as_ref().and_then(|b| b.mtu));
        let desc = port
            .as_ref()
            .map(|p| {
                format!(
                    " on {}{}",
                    p.bridge.as_deref().unwrap_or("-"),
                    p.tag.map(|t| format!(" tag {t}")).unwrap_or_default()
                )
            })
            .unwrap_or_default();
        let undo = Undo {
            pve_port: port,
            downed: None,
            renamed: Some((veth.to_string(), name.to_string())),
        };
        hand_back(&host, n, undo, rec, "release").await;
        lines.push(format!("net{n} {name} -> {veth}{desc}"));
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pve_integration::{IfName, NetIndex, VlanTag};

    #[test]
    fn pves_port_is_tap_plugs() {
        let mut net = NetConf::new(NetIndex::new(0).unwrap(), "eth0");
        assert_eq!(pve_port("veth100i0", &net, Some(1500)), None, "no bridge");
        net.bridge = Some(IfName::new("ovsbr0").unwrap());
        net.tag = VlanTag::new(10);
        let p = pve_port("veth100i0", &net, Some(9000)).unwrap();
        assert_eq!(
            (
                p.name.as_str(),
                p.bridge.as_deref(),
                p.tag,
                p.vlan_mode.as_deref()
            ),
            ("veth100i0", Some("ovsbr0"), Some(10), None)
        );
        assert_eq!(p.mtu_request, Some(9000));
        assert!(p.external_ids.is_empty(), "no op-agent marks");
        net.trunks = vec![VlanTag::new(20).unwrap(), VlanTag::new(30).unwrap()];
        let p = pve_port("veth100i0", &net, None).unwrap();
        assert_eq!(p.trunks, vec![20, 30]);
        assert_eq!(p.vlan_mode.as_deref(), Some("native-untagged"));
    }
}
