//! `op-agent gc [--dry-run]`: removes Port rows op-agent owns
//! (`external_ids:owner=op-agent`) whose container is not running or whose Interface reports
//! an error. A row without the owner mark is never touched: every delete carries a `wait` guard
//! on `owner=op-agent` ([`crate::ovsdb::DelGuard::OwnedBy`]).

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
            match remove(cfg, &client, &p.name, vmid_of(p)).await {
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
                    eprintln!("op-agent gc: {}: {m}", p.name);
                    if code == ExitCode::Ok {
                        code = c;
                    }
                }
            }
            items.push(item);
        }
        if json {
            format.print(&json!({"dry_run": args.dry_run, "ports": items}));
        } else if n == 0 {
            println!("nothing to remove");
        }
        Ok(code)
    })
}
