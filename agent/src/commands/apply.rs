//! `op-agent apply <vmid>` / `apply --all` (like CNI's ADD on a running container): converge
//! running containers now, with the same steps and audit rows as post-start (audit `phase` =
//! `apply`), under the per-vmid lock the hooks take. `--all` converges them as one batch
//! ([`crate::engine::converge_batch`]: two waits for ovs-vswitchd for all of them). A
//! container handed back to PVE by `op-agent release` is taken back: its release marker is
//! removed first ([`crate::released::clear`]).

use super::{CliError, CommandResult};
use crate::config::AgentConfig;
use crate::engine::{self, Job, Phase, RunOptions};
use crate::exit::ExitCode;
use crate::inspect;

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
/// With `format` JSON, one object at the end instead of the lines:
/// `{"containers":[{"vmid":100,"result":"ok"|"failed","summary":"…"|"error":"…","exit":0,
/// "plans":[["net0: link.rename …"]]}]}` (`plans` with `--dry-run`).
///
/// # Errors
/// `Usage` (64) for a malformed vmid; `Failed` (1) for a container that is not managed or not
/// running when named explicitly.
pub fn run(
    args: &ApplyArgs,
    cfg: AgentConfig,
    format: crate::output::OutputFormat,
) -> CommandResult {
    let opts = RunOptions {
        dry_run: args.dry_run,
    };
    let managed = if args.all {
        inspect::managed_all(&cfg)
            .into_iter()
            .filter(|m| inspect::is_running(&cfg, m.vmid))
            .collect::<Vec<_>>()
    } else {
        let v = super::vmid_arg(args.vmid.as_deref().unwrap_or(""))?;
        let Some(m) = inspect::managed_one(&cfg, v) else {
            let why = crate::engine::Managed::why_not(&cfg, v);
            return Err(CliError::new(
                ExitCode::Failed,
                format!("{v}: not managed by op-agent: {why}"),
            ));
        };
        if !inspect::is_running(&cfg, v) {
            return Err(CliError::new(
                ExitCode::Failed,
                format!("{v}: container is not running"),
            ));
        }
        vec![m]
    };
    if !args.dry_run {
        for m in &managed {
            crate::released::clear(&cfg.toml.pve.root, m.vmid).map_err(|e| {
                CliError::new(
                    ExitCode::Failed,
                    format!("{}: cannot remove the release marker: {e}", m.vmid),
                )
            })?;
        }
    }
    let jobs: Vec<Job> = managed
        .into_iter()
        .map(|managed| Job {
            managed,
            phase: Phase::PostStart,
            label: "apply".into(),
            started: None,
        })
        .collect();
    let mut code = ExitCode::Ok;
    if format.is_json() {
        let mut out = Vec::new();
        for r in engine::converge_batch(&cfg, &jobs, &[], opts) {
            let plans: Vec<Vec<String>> = r
                .plans
                .iter()
                .map(|p| engine::plan::plan_lines(p))
                .collect();
            let mut o = serde_json::json!({"vmid": r.vmid.get()});
            match r.result {
                Ok(summary) => {
                    o["result"] = "ok".into();
                    o["summary"] = summary.into();
                    o["exit"] = 0.into();
                }
                Err(e) => {
                    o["result"] = "failed".into();
                    o["error"] = e.to_string().into();
                    o["exit"] = e.code().code().into();
                    if code == ExitCode::Ok {
                        code = e.code();
                    }
                }
            }
            if args.dry_run {
                o["plans"] = serde_json::json!(plans);
            }
            out.push(o);
        }
        format.print(&serde_json::json!({ "containers": out }));
        return Ok(code);
    }
    for r in engine::converge_batch(&cfg, &jobs, &[], opts) {
        let v = r.vmid;
        // With several containers each plan line names its own (`101: rename …`).
        let who = if jobs.len() > 1 {
            format!("{v}: ")
        } else {
            String::new()
        };
        for plan in &r.plans {
            let lines = engine::plan::plan_lines(plan);
            for l in &lines {
                println!("{who}{l}");
            }
            if lines.is_empty() {
                println!("{who}(nothing to do)");
            }
        }
        match r.result {
            Ok(summary) => {
                if !summary.is_empty() {
                    println!("{v}: {summary}");
                }
            }
            Err(e) => {
                eprintln!("op-agent apply: {v}: {e}");
                if code == ExitCode::Ok {
                    code = e.code();
                }
            }
        }
    }
    Ok(code)
}
