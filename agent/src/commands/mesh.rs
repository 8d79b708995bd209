//! `op-agent mesh join` and `op-agent mesh status` (netmaker host-mesh mode).
//!
//! `join` enrolls the host (not a container) into the netmaker mesh once, with the token from
//! `netmaker.env` beside agent.toml; `status` shows the state of `[mesh] interface`.

use super::{CliError, CommandResult};
use crate::audit::{AuditLog, AuditOptions, Outcome};
use crate::config::AgentConfig;
use crate::exit::ExitCode;
use crate::mesh::{self, JoinError, JoinOutcome};
use crate::report::Recorder;
use serde_json::json;
use std::time::{Duration, Instant};

/// Arguments of `op-agent mesh`.
#[derive(Debug, Clone, clap::Args)]
pub struct MeshArgs {
    #[command(subcommand)]
    pub command: MeshCommand,
}

/// The `mesh` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum MeshCommand {
    /// Join the host to the netmaker mesh with NETMAKER_TOKEN from netmaker.env (beside
    /// agent.toml, root-owned, mode 0600); does nothing when `netclient list` shows a network.
    Join,
    /// Show the mesh interface: `mesh via <iface> <addr>` and its kind, or what is missing
    /// (exit 69 when it is not usable).
    Status {
        /// One JSON object instead of a line.
        #[arg(long)]
        json: bool,
    },
}

/// Runs the command with the loaded agent.toml `cfg`; returns `Ok` with the exit code: 0
/// done, else the code of the failure printed as it happened (`join`: 77 permission, 78
/// token or env file, 69 netclient missing, 75 timeout, 1 netclient failed, 74 audit;
/// `status`: 69 when the mesh is not usable, said on stdout).
///
/// # Errors
/// `join`: `AuditIo` (74) when the audit database cannot be opened (nothing was run);
/// `status`: `Internal` (70) without a tokio runtime.
pub fn run(args: &MeshArgs, cfg: &AgentConfig) -> CommandResult {
    match &args.command {
        MeshCommand::Join => join(cfg),
        MeshCommand::Status { json } => status(cfg, *json),
    }
}

/// `netmaker.env` beside agent.toml (`/etc/op-agent/netmaker.env` by default).
pub fn env_file(cfg: &AgentConfig) -> std::path::PathBuf {
    cfg.dir.join("netmaker.env")
}

fn join(cfg: &AgentConfig) -> CommandResult {
    let started = Instant::now();
    let audit = match AuditLog::open(
        &cfg.toml.audit.database,
        &AuditOptions {
            busy_timeout: Duration::from_secs(5),
            key_file: Some(cfg.audit_key_file()),
            ..AuditOptions::default()
        },
    ) {
        Ok(a) => a,
        Err(e) => {
            let msg = format!("{e}; nothing was run");
            return Err(CliError::new(ExitCode::AuditIo, msg).caused_by(e));
        }
    };
    // Host-wide rows carry vmid 0.
    let mut rec = Recorder::new(0, "mesh", Some(audit), started);
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    let env = env_file(cfg);
    let iface = cfg.toml.mesh.interface.clone();
    let (code, row) = match mesh::join(&env, &path_var) {
        Ok((JoinOutcome::AlreadyJoined, _)) => {
            println!(
                "op-agent: host already joined (netclient list shows a network); nothing done"
            );
            (
                ExitCode::Ok,
                (
                    Outcome::Skipped,
                    json!({"reason": "already joined", "interface": iface}),
                ),
            )
        }
        Ok((JoinOutcome::Joined, output)) => {
            for l in output.lines().filter(|l| !l.trim().is_empty()) {
                println!("netclient: {l}");
            }
            println!("op-agent: host joined the netmaker mesh (interface {iface})");
            (
                ExitCode::Ok,
                (Outcome::Ok, json!({"joined": true, "interface": iface})),
            )
        }
        Err(e) => {
            eprintln!("op-agent mesh join: {e}");
            let code = match &e {
                e if e.is_permission() => ExitCode::Refused,
                JoinError::EnvFile { .. } | JoinError::NoToken { .. } => ExitCode::Config,
                JoinError::NotInstalled => ExitCode::Unavailable,
                JoinError::Timeout { .. } => ExitCode::Timeout,
                JoinError::Spawn { .. } | JoinError::JoinFailed { .. } => ExitCode::Failed,
            };
            (code, (Outcome::Failed, json!({"error": e.to_string()})))
        }
    };
    rec.outcome("mesh.join", row.0, row.1);
    if let Err(e) = rec.finish() {
        eprintln!("op-agent mesh join: audit: {e}");
        if code == ExitCode::Ok {
            return Ok(ExitCode::AuditIo);
        }
    }
    Ok(code)
}

fn status(cfg: &AgentConfig, as_json: bool) -> CommandResult {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let msg = format!("tokio runtime: {e}");
            return Err(CliError::new(ExitCode::Internal, msg).caused_by(e));
        }
    };
    let r = rt.block_on(async {
        let nl = crate::netlink::Netlink::connect().map_err(|e| format!("netlink socket: {e}"))?;
        mesh::confirm(&nl, &cfg.toml.mesh).await
    });
    match r {
        Ok(m) => {
            if as_json {
                println!(
                    "{}",
                    json!({"interface": m.interface, "kind": m.kind, "addresses": m.addresses,
                           "usable": true})
                );
            } else {
                println!(
                    "{} (kind {}, up, addresses {})",
                    m.via(),
                    m.kind.as_deref().unwrap_or("none"),
                    m.addresses.join(", ")
                );
            }
            Ok(ExitCode::Ok)
        }
        Err(msg) => {
            if as_json {
                println!(
                    "{}",
                    json!({"interface": cfg.toml.mesh.interface, "usable": false, "error": msg})
                );
            } else {
                println!("mesh not usable: {msg}");
            }
            Ok(ExitCode::Unavailable)
        }
    }
}
