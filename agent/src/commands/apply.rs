//! `op-agent apply <vmid>` / `apply --all`: converge running containers now, with the
//! same steps and audit rows as post-start (audit `phase` = `apply`), under the per-vmid lock
//! the hooks take.

use super::{CliError, CommandResult};
use crate::config::AgentConfig;
use crate::exit::ExitCode;
use crate::hook::{self, HookOptions, Phase};
use crate::inspect;
use std::time::Instant;

/// Arguments of `op-agent apply`.
#[derive(Debug, Clone, clap::Args)]
pub struct ApplyArgs {
    /// Container id (100..999999999); omit with `--all`.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub vmid: Option<String>,
    /// Every managed container that is running.
    #[arg(long)]
    pub all: bool,
    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Runs the command with the loaded agent.toml `cfg`; returns `Ok` with the exit code: 0 when
/// every container converged, else the code of the first failure (see
/// [`crate::exit::ExitCode`]), each failure printed as it happens.
///
/// # Errors
/// `Usage` (64) for a malformed vmid; `Failed` (1) for a container that is not managed or not
/// running when named explicitly.
pub fn run(args: &ApplyArgs, cfg: AgentConfig) -> CommandResult {
    let opts = HookOptions {
        dry_run: args.dry_run,
        timings: false,
    };
    let vmids = if args.all {
        inspect::managed(&cfg)
            .into_iter()
            .filter(|v| inspect::is_running(&cfg, *v))
            .collect::<Vec<_>>()
    } else {
        let v = super::vmid_arg(args.vmid.as_deref().unwrap_or(""))?;
        if !inspect::is_managed(&cfg, v) {
            return Err(CliError::new(
                ExitCode::Failed,
                format!("{v}: not managed by op-agent (no container TOML or no PVE conf)"),
            ));
        }
        if !inspect::is_running(&cfg, v) {
            return Err(CliError::new(
                ExitCode::Failed,
                format!("{v}: container is not running"),
            ));
        }
        vec![v]
    };
    let mut code = ExitCode::Ok;
    for v in vmids {
        match hook::run_locked(&cfg, v, Phase::PostStart, "apply", &opts, Instant::now()) {
            Ok(summary) => {
                if !summary.is_empty() {
                    println!("{v}: {summary}");
                }
            }
            Err(e) => {
                eprintln!("op-agent apply: {v}: {}", e.message);
                if code == ExitCode::Ok {
                    code = e.code;
                }
            }
        }
    }
    Ok(code)
}
