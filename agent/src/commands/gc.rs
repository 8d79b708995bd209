//! `op-agent gc [--dry-run]`: removes Port rows op-agent owns
//! (`external_ids:owner=op-agent`) whose container is not running or whose Interface reports
//! an error. A row without the owner mark is never touched: every delete carries a `wait` guard
//! on `owner=op-agent` ([`crate::ovsdb::DelGuard::OwnedBy`]). Many stale rows are deleted in
//! one transaction with one wait for ovs-vswitchd, each still under its container's lock and
//! with its own audit run.

use super::{CliError, CommandResult};
use crate::audit::{AuditLog, AuditOptions, Outcome};
use crate::config::AgentConfig;
use crate::engine::ownership::{self, DelGuard as Ownership};
use crate::exit::ExitCode;
use crate::inspect;
use crate::ovsdb::{Client, PortRow};
use crate::report::Recorder;
use pve_integration::Vmid;
use serde_json::json;
use std::time::{Duration, Instant};

/// Arguments of `op-agent gc`.
#[derive(Debug, Clone, clap::Args)]
pub struct GcArgs {
    /// Print what would be removed and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Why an owned row is stale, or `None` when it is to be kept.
pub fn stale_reason(cfg: &AgentConfig, p: &PortRow) -> Option<String> {
    if !ownership::is_owned(&p.external_ids) {
        return None;
    }
    let vm = p
        .external_ids
        .get("vm-id")
        .map(String::as_str)
        .unwrap_or("");
    let Ok(vmid) = vm.parse::<Vmid>() else {
        return Some(format!("external_ids:vm-id {vm:?} is not a vmid"));
    };
    if !inspect::is_running(cfg, vmid) {
        return Some(format!("container {vmid} is not running"));
    }
    if let Some(e) = p.interfaces.iter().find_map(|i| i.error.clone()) {
        return Some(format!("Interface error: {e}"));
    }
    None
}

fn vmid_of(p: &PortRow) -> u32 {
    p.external_ids
        .get("vm-id")
        .and_then(|v| v.parse::<Vmid>().ok())
        .map(|v| v.get())
        .unwrap_or(0)
}

/// Removes one stale row under the container's lock, re-checking after the lock is taken.
/// Returns the line to print.
async fn remove(
    cfg: &AgentConfig,
    client: &Client,
    name: &str,
    vmid: u32,
) -> Result<String, (ExitCode, String)> {
    let started = Instant::now();
    let _lock = if vmid > 0 {
        Some(
            crate::lock::lock_vmid(
                &cfg.toml.pve.root.join("run/op-agent"),
                vmid,
                Duration::from_secs(3),
            )
            .map_err(|e| (ExitCode::Timeout, e.to_string()))?,
        )
    } else {
        None
    };
    let now = client
        .get_port(name)
        .await
        .map_err(|e| (ExitCode::Unavailable, e.to_string()))?;
    let Some(p) = now else {
        return Ok(format!("{name}: already gone"));
    };
    let Some(reason) = stale_reason(cfg, &p) else {
        return Ok(format!("{name}: no longer stale, kept"));
    };
    let o = AuditOptions {
        busy_timeout: Duration::from_secs(5),
        key_file: Some(cfg.audit_key_file()),
        ..AuditOptions::default()
    };
    let audit = AuditLog::open(&cfg.toml.audit.database, &o)
        .map_err(|e| (ExitCode::AuditIo, format!("{e}; nothing was changed")))?;
    let mut rec = Recorder::new(vmid, "gc", Some(audit), started);
    rec.intent(
        "run.intent",
        &json!({"plan": [format!("ovs.del-port {name} (owned only)")], "reason": reason}),
    )
    .map_err(|e| (ExitCode::AuditIo, format!("{e}; nothing was changed")))?;
    let guard = Ownership::Owned.to_ovsdb();
    let r = match client.del_port(name, guard).await {
        Ok(Some(next)) => match client.wait_cur_cfg(next, client.timeout()).await {
            Ok(_) => {
                rec.outcome(
                    "ovs.del-port",
                    Outcome::Ok,
                    json!({"port": name, "bridge": p.bridge, "reason": reason}),
                );
                Ok(format!(
                    "{name}: removed from {} ({reason})",
                    p.bridge.as_deref().unwrap_or("no bridge")
                ))
            }
            Err(e) => {
                rec.outcome(
                    "ovs.wait",
                    Outcome::Failed,
                    json!({"port": name, "error": e.to_string()}),
                );
                Err((ExitCode::Timeout, e.to_string()))
            }
        },
        Ok(None) => {
            rec.outcome(
                "ovs.del-port",
                Outcome::Skipped,
                json!({"port": name, "reason": "absent"}),
            );
            Ok(format!("{name}: already gone"))
        }
        Err(e) => {
            rec.outcome(
                "ovs.del-port",
                Outcome::Failed,
                json!({"port": name, "error": e.to_string()}),
            );
            Err((ExitCode::Failed, e.to_string()))
        }
    };
    rec.finish()
        .map_err(|e| (ExitCode::AuditIo, e.to_string()))?;
    r
}

/// One stale row of [`remove_all`] under way: its name, recorder, row as re-read, reason.
struct Stale {
    name: String,
    rec: Recorder,
    bridge: Option<String>,
    reason: String,
}

/// [`remove`] for many stale rows at once: the lock of each container (once per vmid), one
/// re-read of every row under the locks, an intent row per row, then every delete in ONE
/// transaction ([`Client::del_ports`], each under the owner guard) and ONE wait for
/// ovs-vswitchd. Returns the line to print per `(name, vmid)` of `stale`, in order.
async fn remove_all(
    cfg: &AgentConfig,
    client: &Client,
    stale: &[(String, u32)],
) -> Vec<Result<String, (ExitCode, String)>> {
    let started = Instant::now();
    let mut out: Vec<Option<Result<String, (ExitCode, String)>>> =
        stale.iter().map(|_| None).collect();
    let mut locks = std::collections::BTreeMap::new();
    for (i, (_, vmid)) in stale.iter().enumerate() {
        if *vmid == 0 || locks.contains_key(vmid) {
            continue;
        }
        let dir = cfg.toml.pve.root.join("run/op-agent");
        match crate::lock::lock_vmid(&dir, *vmid, Duration::from_secs(3)) {
            Ok(l) => {
                locks.insert(*vmid, l);
            }
            Err(e) => out[i] = Some(Err((ExitCode::Timeout, e.to_string()))),
        }
    }
    for (i, (_, vmid)) in stale.iter().enumerate() {
        if out[i].is_none() && *vmid > 0 && !locks.contains_key(vmid) {
            out[i] = Some(Err((
                ExitCode::Timeout,
                format!("lock of {vmid} not taken"),
            )));
        }
    }
    let now: std::collections::HashMap<String, PortRow> = match client.list_ports().await {
        Ok(ps) => ps.into_iter().map(|p| (p.name.clone(), p)).collect(),
        Err(e) => {
            let m = e.to_string();
            return out
                .into_iter()
                .map(|o| o.unwrap_or_else(|| Err((ExitCode::Unavailable, m.clone()))))
                .collect();
        }
    };
    let o = AuditOptions {
        busy_timeout: Duration::from_secs(5),
        key_file: Some(cfg.audit_key_file()),
        ..AuditOptions::default()
    };
    let mut todo: Vec<(usize, Stale)> = Vec::new();
    for (i, (name, vmid)) in stale.iter().enumerate() {
        if out[i].is_some() {
            continue;
        }
        let Some(p) = now.get(name) else {
            out[i] = Some(Ok(format!("{name}: already gone")));
            continue;
        };
        let Some(reason) = stale_reason(cfg, p) else {
            out[i] = Some(Ok(format!("{name}: no longer stale, kept")));
            continue;
        };
        let audit = match AuditLog::open(&cfg.toml.audit.database, &o) {
            Ok(a) => a,
            Err(e) => {
                out[i] = Some(Err((
                    ExitCode::AuditIo,
                    format!("{e}; nothing was changed"),
                )));
                continue;
            }
        };
        let mut rec = Recorder::new(*vmid, "gc", Some(audit), started);
        let plan = json!({"plan": [format!("ovs.del-port {name} (owned only)")], "reason": reason});
        if let Err(e) = rec.intent("run.intent", &plan) {
            out[i] = Some(Err((
                ExitCode::AuditIo,
                format!("{e}; nothing was changed"),
            )));
            continue;
        }
        let bridge = p.bridge.clone();
        todo.push((
            i,
            Stale {
                name: name.clone(),
                rec,
                bridge,
                reason,
            },
        ));
    }
    let items: Vec<(String, crate::ovsdb::DelGuard)> = todo
        .iter()
        .map(|(_, s)| (s.name.clone(), Ownership::Owned.to_ovsdb()))
        .collect();
    let results = client.del_ports(&items).await;
    let next = results
        .iter()
        .filter_map(|r| r.as_ref().ok().copied().flatten())
        .max();
    let waited = match next {
        Some(n) => client.wait_cur_cfg(n, client.timeout()).await.map(|_| ()),
        None => Ok(()),
    };
    for ((i, mut s), r) in todo.into_iter().zip(results) {
        let name = s.name.as_str();
        out[i] = Some(match (r, &waited) {
            (Ok(Some(_)), Ok(())) => {
                s.rec.outcome(
                    "ovs.del-port",
                    Outcome::Ok,
                    json!({"port": name, "bridge": s.bridge, "reason": s.reason}),
                );
                Ok(format!(
                    "{name}: removed from {} ({})",
                    s.bridge.as_deref().unwrap_or("no bridge"),
                    s.reason
                ))
            }
            (Ok(Some(_)), Err(e)) => {
                s.rec.outcome(
                    "ovs.wait",
                    Outcome::Failed,
                    json!({"port": name, "error": e.to_string()}),
                );
                Err((ExitCode::Timeout, e.to_string()))
            }
            (Ok(None), _) => {
                s.rec.outcome(
                    "ovs.del-port",
                    Outcome::Skipped,
                    json!({"port": name, "reason": "absent"}),
                );
                Ok(format!("{name}: already gone"))
            }
            (Err(e), _) => {
                s.rec.outcome(
                    "ovs.del-port",
                    Outcome::Failed,
                    json!({"port": name, "error": e.to_string()}),
                );
                Err((ExitCode::Failed, e.to_string()))
            }
        });
        if let Err(e) = s.rec.finish() {
            out[i] = Some(Err((ExitCode::AuditIo, e.to_string())));
        }
    }
    drop(locks);
    out.into_iter()
        .map(|o| o.unwrap_or_else(|| Err((ExitCode::Failed, "not removed".into()))))
        .collect()
}

/// Runs the command with the loaded agent.toml `cfg`; returns `Ok` with the exit code: 0 when
/// every stale row was removed (or none exists), else the code of the first failure (75
/// lock/wait timeout, 74 audit, 1 OVSDB refused), each printed as it happens.
///
/// With `format` JSON, one object at the end instead of the lines: `{"dry_run":false,
/// "ports":[{"port":"vi100","bridge":"ovsbr0","reason":"…","result":"removed"|
/// "would-remove"|"failed","message":"…"}]}`.
///
/// # Errors
/// `Unavailable` (69) when OVSDB cannot be reached or listed; the runtime's error.
pub fn run(args: &GcArgs, cfg: &AgentConfig, format: crate::output::OutputFormat) -> CommandResult {
    let rt = inspect::runtime().map_err(|e| CliError::wrap(e.code(), e))?;
    let timeout = Duration::from_millis(cfg.toml.ovsdb.timeout_ms);
    rt.block_on(async {
        let client = Client::connect(&cfg.toml.ovsdb.socket, timeout)
            .await
            .map_err(|e| CliError::wrap(ExitCode::Unavailable, e))?;
        let ports = client
            .list_ports()
            .await
            .map_err(|e| CliError::wrap(ExitCode::Unavailable, e))?;
        let mut code = ExitCode::Ok;
        let mut n = 0;
        let mut stale = Vec::new();
        let mut items = Vec::new();
        let json = format.is_json();
        for p in &ports {
            let Some(reason) = stale_reason(cfg, p) else {
                continue;
            };
            n += 1;
            let mut item = json!({"port": p.name, "bridge": p.bridge, "reason": reason});
            if args.dry_run {
                item["result"] = "would-remove".into();
                if !json {
                    println!(
                        "{}: would remove from {} ({reason})",
                        p.name,
                        p.bridge.as_deref().unwrap_or("no bridge")
                    );
                }
                items.push(item);
                continue;
            }
            stale.push((p.name.clone(), vmid_of(p)));
            items.push(item);
        }
        let results = match stale.len() {
            0 => Vec::new(),
            1 => vec![remove(cfg, &client, &stale[0].0, stale[0].1).await],
            _ => remove_all(cfg, &client, &stale).await,
        };
        // Without --dry-run, `items` are the ports of `stale`, in the same order.
        let first = items.len() - stale.len();
        for (((name, _), r), item) in stale.iter().zip(results).zip(&mut items[first..]) {
            match r {
                Ok(line) => {
                    item["result"] = "removed".into();
                    item["message"] = line.clone().into();
                    if !json {
                        println!("{line}");
                    }
                }
                Err((c, m)) => {
                    item["result"] = "failed".into();
                    item["message"] = m.clone().into();
                    eprintln!("op-agent gc: {name}: {m}");
                    if code == ExitCode::Ok {
                        code = c;
                    }
                }
            }
        }
        if json {
            format.print(&json!({"dry_run": args.dry_run, "ports": items}));
        } else if n == 0 {
            println!("nothing to remove");
        }
        Ok(code)
    })
}
