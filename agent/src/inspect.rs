//! Read-only views of managed containers, shared by `check`, `status`, `query`, `gc`, `apply`
//! and `watch`: which containers are managed, their desired state, and a field-level comparison of
//! the observed links and OVSDB rows with it ([`drift`]). Nothing here changes the host.

use crate::config::{AgentConfig, ConfigError};
use crate::desired::Desired;
use crate::engine::observe;
use crate::engine::observed::Observed;
use crate::engine::{plan, Deadline, Host, Managed, RunError};
use crate::report::Recorder;
use pve_integration::Vmid;
use std::path::Path;
use std::time::Instant;

/// `vmid` when op-agent manages it: a container TOML exists (either location) and so does
/// `<pve root>/etc/pve/lxc/<vmid>.conf` (the hook's fast path, [`Managed::find`]).
pub fn managed_one(cfg: &AgentConfig, vmid: Vmid) -> Option<Managed> {
    Managed::find(cfg, vmid).ok().flatten()
}

/// True when op-agent manages `vmid` ([`managed_one`]).
pub fn is_managed(cfg: &AgentConfig, vmid: Vmid) -> bool {
    managed_one(cfg, vmid).is_some()
}

/// Every managed container, by ascending vmid ([`AgentConfig::managed_vmids`] that
/// [`Managed::find`] finds managed).
pub fn managed_all(cfg: &AgentConfig) -> Vec<Managed> {
    cfg.managed_vmids()
        .into_iter()
        .filter_map(Vmid::new)
        .filter_map(|v| managed_one(cfg, v))
        .collect()
}

/// Every managed vmid, ascending ([`managed_all`]).
pub fn managed(cfg: &AgentConfig) -> Vec<Vmid> {
    managed_all(cfg).into_iter().map(|m| m.vmid).collect()
}

/// `pve_integration::running::is_running` under `[pve] root`.
pub fn is_running(cfg: &AgentConfig, vmid: Vmid) -> bool {
    pve_integration::running::is_running(&cfg.toml.pve.root, vmid)
}

/// Parses a vmid argument; the error is one line quoting it.
pub fn parse_vmid(s: &str) -> Result<Vmid, String> {
    s.parse::<Vmid>().map_err(|e| e.to_string())
}

/// The desired state of `vmid` from its container TOML and PVE conf, or `None` when the guest
/// is not managed. Errors name the file and line ([`ConfigError`]).
pub fn load_desired(cfg: &AgentConfig, vmid: Vmid) -> Result<Option<Desired>, ConfigError> {
    match managed_one(cfg, vmid) {
        Some(m) => m.load(),
        None => Ok(None),
    }
}

/// Connects to netlink and OVSDB and observes `d` (with the owned-port sweep), writing no
/// audit row. Must run inside a tokio runtime.
///
/// Errors: those of [`Host::connect`] and [`observe::observe`].
pub async fn observe(cfg: &AgentConfig, d: &Desired) -> Result<(Host, Observed), RunError> {
    let started = Instant::now();
    let mut rec = Recorder::new(d.vmid.get(), "inspect", None, started);
    let host = Host::connect(cfg, Deadline::of_config(cfg, started), &mut rec).await?;
    let obs = observe::observe(&host, d, true, &mut rec).await?;
    Ok((host, obs))
}

/// One difference between the live state and the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    /// PVE `netN` index, `None` for container-wide differences (mesh, stray owned ports).
    pub net: Option<u8>,
    /// One line: `net0 vi100: tag is 20, want 10`.
    pub line: String,
}

fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref()
        .map(|x| x.to_string())
        .unwrap_or_else(|| "none".into())
}

fn list(v: &[u16]) -> String {
    if v.is_empty() {
        "[]".into()
    } else {
        format!(
            "[{}]",
            v.iter().map(u16::to_string).collect::<Vec<_>>().join(",")
        )
    }
}

/// Field-level differences between `obs` and what post-start would make of `d`: link name and
/// ownership, link up, PVE's port left behind, Port missing, bridge, tag, trunks, vlan_mode,
/// mtu_request, each `external_ids` key, `ofport` and `error`, and owned ports of this vmid
/// that no NIC wants. Pure. Where the planner ([`plan::plan_post_start`]) would still act but
/// no field differs, a line names the planned steps, so `check` and `apply` never disagree.
pub fn drift(d: &Desired, obs: &Observed) -> Vec<Drift> {
    let mut out = Vec::new();
    let mut wanted_names = std::collections::BTreeSet::new();
    for (nic, o) in d.nics.iter().zip(&obs.nics) {
        let n = nic.net.get();
        if d.keeps_names() {
            // naming = "keep": op-agent's Port is PVE's `veth…` one, under PVE's name; the
            // rename-mode checks below would all misfire. What apply would still do (the
            // plan, below) is the drift.
            wanted_names.insert(d.port_name(nic).to_string());
            continue;
        }
        wanted_names.insert(nic.name.to_string());
        if plan::left_alone(nic, o, obs).is_some() {
            continue;
        }
        let name = nic.name.as_str();
        let mut push = |s: String| {
            out.push(Drift {
                net: Some(n),
                line: format!("net{n} {name}: {s}"),
            })
        };
        match (&o.pve_link, &o.target_link) {
            (Some(l), None) => push(format!(
                "link is named {} (ifindex {}), want {name}",
                l.name, l.index
            )),
            (Some(l), Some(t)) if l.index != t.index => push(format!(
                "both links {} (ifindex {}) and {name} (ifindex {}) exist",
                l.name, l.index, t.index
            )),
            (None, None) => push(format!(
                "no link: neither {} nor {name} exists",
                nic.pve_veth
            )),
            (_, Some(t)) => {
                if !t.ours {
                    push(format!(
                        "link {name} does not carry op-agent's alias for vm-id={} net={n}",
                        d.vmid
                    ));
                }
                if !t.up && !nic.link_down {
                    push("link is down, want up".into());
                }
            }
        }
        if let Some(p) = &o.pve_port {
            push(format!(
                "PVE's port {} is still on bridge {}",
                p.name,
                opt(&p.bridge)
            ));
        }
        let want = plan::desired_port(d, nic, o);
        match (&want, &o.target_port) {
            (Some(w), None) => push(format!(
                "no OVS port {name}, want one on bridge {}{}",
                w.bridge,
                if obs.ovs_bridges.contains(&w.bridge) {
                    ""
                } else {
                    " (that bridge is not in OVSDB: deleted? it is re-plugged when the bridge is back)"
                }
            )),
            (Some(w), Some(h)) => {
                if !h.owned() {
                    push(format!(
                        "OVS port {name} is not owned by op-agent (external_ids:owner)"
                    ));
                }
                if h.bridge.as_deref() != Some(w.bridge.as_str()) {
                    push(format!("bridge is {}, want {}", opt(&h.bridge), w.bridge));
                }
                if h.tag != w.tag {
                    push(format!("tag is {}, want {}", opt(&h.tag), opt(&w.tag)));
                }
                if h.trunks != w.trunks {
                    push(format!(
                        "trunks are {}, want {}",
                        list(&h.trunks),
                        list(&w.trunks)
                    ));
                }
                if h.vlan_mode != w.vlan_mode {
                    push(format!(
                        "vlan_mode is {}, want {}",
                        opt(&h.vlan_mode),
                        opt(&w.vlan_mode)
                    ));
                }
                if let Some(m) = w.mtu_request {
                    if h.mtu_request != Some(i64::from(m)) {
                        push(format!("mtu_request is {}, want {m}", opt(&h.mtu_request)));
                    }
                }
                for (k, v) in &w.external_ids {
                    match h.external_ids.get(k) {
                        Some(x) if x == v => {}
                        Some(x) => push(format!("external_ids:{k} is {x:?}, want {v:?}")),
                        None => push(format!("external_ids:{k} is missing, want {v:?}")),
                    }
                }
                if let Some(e) = &h.error {
                    push(format!("Interface error: {e}"));
                }
                if h.ofport.unwrap_or(-1) <= 0 {
                    push(format!(
                        "ofport is {}, ovs-vswitchd has not attached it",
                        opt(&h.ofport)
                    ));
                }
            }
            (None, Some(h)) if h.owned() => push(format!(
                "OVS port {name} exists on {} but none is wanted{}",
                opt(&h.bridge),
                if nic.link_down { " (link_down=1)" } else { "" }
            )),
            _ => {}
        }
    }
    for p in &obs.owned_ports {
        if !wanted_names.contains(&p.name) {
            out.push(Drift {
                net: None,
                line: format!(
                    "stray OVS port {} on {} owned by op-agent for vm-id={}",
                    p.name,
                    opt(&p.bridge),
                    d.vmid
                ),
            });
        }
    }
    match plan::plan_post_start(d, obs) {
        Err(e) if out.is_empty() => out.push(Drift {
            net: None,
            line: format!("apply would refuse: {e}"),
        }),
        Ok(steps) => {
            let acting: Vec<_> = steps
                .iter()
                .filter(|p| !matches!(p.step, plan::Step::Skip { .. }))
                .filter(|p| !matches!(p.step, plan::Step::CheckMaster { .. }))
                .collect();
            for p in acting {
                let n = p.net.map(|n| n.get());
                if !out.iter().any(|x| x.net == n && n.is_some()) {
                    out.push(Drift {
                        net: n,
                        line: format!(
                            "{}apply would run {}",
                            n.map(|n| format!("net{n}: ")).unwrap_or_default(),
                            p.step
                        ),
                    });
                }
            }
        }
        Err(_) => {}
    }
    out
}

/// `SELECT max(seq) FROM audit WHERE vmid = ?` on the audit database, opened read-only;
/// `None` when the database or a row is missing or unreadable.
pub fn last_audit_seq(db: &Path, vmid: u32) -> Option<i64> {
    let r = crate::audit::verify::open_read_only(db).ok()?;
    let conn = &r.conn;
    let _ = conn.busy_timeout(std::time::Duration::from_millis(1000));
    conn.query_row(
        "SELECT max(seq) FROM audit WHERE vmid = ?1",
        [i64::from(vmid)],
        |r| r.get::<_, Option<i64>>(0),
    )
    .ok()
    .flatten()
}

/// A current-thread tokio runtime for a command; the error is one line.
///
/// Errors: [`RunError::Runtime`] (exit code 70).
pub fn runtime() -> Result<tokio::runtime::Runtime, RunError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(RunError::Runtime)
}
