//! `op-agent apply <vmid>` / `apply --all` (like CNI's ADD on a running container): converge
//! running containers now, with the same steps and audit rows as post-start (audit `phase` =
//! `apply`), under the per-vmid lock the hooks take ([`crate::engine::converge`]).

use crate::config::AgentConfig;
use crate::engine::{self, Job, Phase, RunOptions};
use crate::exit::ExitCode;
use crate::inspect;
use std::path::Path;

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

/// Runs the command; returns the process exit code: 0 when every container converged, else the
/// code of the first failure (see [`crate::exit::ExitCode`]); `Failed` (1) for a container that
/// is not managed or not running when named explicitly.
pub fn run(args: &ApplyArgs, config: Option<&Path>) -> i32 {
    crate::logging::init("op-agent", log::LevelFilter::Warn, false);
    let cfg = match AgentConfig::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("op-agent apply: {e}");
            return e.exit_code().code();
        }
    };
    let opts = RunOptions {
        dry_run: args.dry_run,
    };
    let managed = if args.all {
        inspect::managed_all(&cfg)
            .into_iter()
            .filter(|m| inspect::is_running(&cfg, m.vmid))
            .collect::<Vec<_>>()
    } else {
        let s = args.vmid.as_deref().unwrap_or("");
        let v = match inspect::parse_vmid(s) {
            Ok(v) => v,
            Err(e) => {
                eprintln!("op-agent apply: {e}");
                return ExitCode::Usage.code();
            }
        };
        let Some(m) = inspect::managed_one(&cfg, v) else {
            eprintln!(
                "op-agent apply: {v}: not managed by op-agent (no container TOML or no PVE conf)"
            );
            return ExitCode::Failed.code();
        };
        if !inspect::is_running(&cfg, v) {
            eprintln!("op-agent apply: {v}: container is not running");
            return ExitCode::Failed.code();
        }
        vec![m]
    };
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
    for r in engine::converge(&cfg, &jobs, opts) {
        let v = r.vmid;
        for plan in &r.plans {
            let lines = engine::plan::plan_lines(plan);
            for l in &lines {
                println!("{l}");
            }
            if lines.is_empty() {
                println!("(nothing to do)");
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
    code.code()
}
