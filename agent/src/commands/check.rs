//! `op-agent check <vmid>` (issue 5, like CNI's CHECK): compares the live links and OVSDB rows
//! with the config without changing anything.

use crate::config::{AgentConfig, NetworkType};
use crate::exit::ExitCode;
use crate::inspect::{self, Drift};
use std::path::Path;

/// Arguments of `op-agent check`.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    /// Container id (100..999999999).
    pub vmid: String,
}

/// What `check` found for one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// Whether the container is running (`pve_integration::running::is_running`).
    pub running: bool,
    /// The differences, one line each; empty when the live state matches.
    pub drift: Vec<Drift>,
}

/// Checks one managed container. A running container is compared field by field
/// ([`inspect::drift`]) and, in netmaker mode, its mesh interface is confirmed; a stopped one
/// must have no Port row op-agent owns for it. `Ok(None)`: not managed.
pub fn check_vmid(
    cfg: &AgentConfig,
    vmid: pve_integration::Vmid,
) -> Result<Option<CheckReport>, (ExitCode, String)> {
    let d = match inspect::load_desired(cfg, vmid) {
        Ok(Some(d)) => d,
        Ok(None) => return Ok(None),
        Err(e) => return Err((e.exit_code(), e.to_string())),
    };
    let running = inspect::is_running(cfg, vmid);
    let rt = inspect::runtime().map_err(|e| (e.code(), e.to_string()))?;
    rt.block_on(async {
        let (target, obs) = inspect::observe(cfg, &d)
            .await
            .map_err(|e| (e.code(), e.to_string()))?;
        let mut drift = Vec::new();
        if running {
            drift = inspect::drift(&d, &obs);
            if d.network_type == NetworkType::Netmaker {
                if let Err(m) = crate::mesh::confirm(&target.nl, &cfg.toml.mesh).await {
                    drift.push(Drift {
                        net: None,
                        line: format!("mesh: {m}"),
                    });
                }
            }
        } else {
            for p in &obs.owned_ports {
                drift.push(Drift {
                    net: None,
                    line: format!(
                        "container is not running but op-agent's OVS port {} is still on {}",
                        p.name,
                        p.bridge.as_deref().unwrap_or("none")
                    ),
                });
            }
        }
        Ok(Some(CheckReport { running, drift }))
    })
}

/// Runs the command; returns the exit code: 0 when the live state matches the config (or the
/// guest is not managed), 1 with one line per difference on stdout, 64 for a malformed vmid,
/// 69 when OVSDB is unreachable, 78 for a bad config.
pub fn run(args: &CheckArgs, config: Option<&Path>) -> i32 {
    crate::logging::init("op-agent", log::LevelFilter::Warn, false);
    let vmid = match inspect::parse_vmid(&args.vmid) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("op-agent check: {e}");
            return ExitCode::Usage.code();
        }
    };
    let cfg = match AgentConfig::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("op-agent check: {e}");
            return e.exit_code().code();
        }
    };
    match check_vmid(&cfg, vmid) {
        Ok(None) => {
            println!("{vmid}: not managed by op-agent");
            ExitCode::Ok.code()
        }
        Ok(Some(r)) if r.drift.is_empty() => {
            println!(
                "{vmid}: ok ({})",
                if r.running { "running" } else { "stopped" }
            );
            ExitCode::Ok.code()
        }
        Ok(Some(r)) => {
            for d in &r.drift {
                println!("{vmid} {}", d.line);
            }
            ExitCode::Failed.code()
        }
        Err((code, msg)) => {
            eprintln!("op-agent check: {vmid}: {msg}");
            code.code()
        }
    }
}
