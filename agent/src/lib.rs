//! op-agent library: everything the `op-agent` binary does, one module per job.
//!
//! The flow of a hook is parse (PVE conf + TOML, [`config`], [`desired`]) → plan (a pure list of
//! steps from config and observed state, [`plan`]) → apply (netlink, OVSDB, each outcome to the
//! audit seam, [`phases`]).

pub mod audit;
pub mod config;
pub mod desired;
pub mod exit;
pub mod lock;
pub mod logging;
pub mod netlink;
pub mod ovsdb;
pub mod plan;
pub mod types;
pub mod apply;
pub mod hook;
pub mod mesh;
pub mod report;
pub mod cli;

/// Runs a parsed command line and returns its exit code. A panic is caught, reported as one
/// line and as an audit-worthy internal error, never a backtrace on the PVE task log.
pub fn run(cli: cli::Cli) -> i32 {
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        eprintln!("op-agent: internal error: {msg}");
    }));
    let r = std::panic::catch_unwind(|| dispatch(cli));
    r.unwrap_or(exit::ExitCode::Internal.code())
}

fn dispatch(cli: cli::Cli) -> i32 {
    use cli::Command;
    match cli.command {
        Command::Hook {
            vmid,
            phase,
            dry_run,
            timings,
        } => {
            logging::init("op-agent", log::LevelFilter::Warn, cli.verbose);
            hook::run(
                cli.config.as_deref(),
                &vmid,
                &phase,
                &hook::HookOptions { dry_run, timings },
            )
            .code()
        }
        Command::Audit { command } => {
            logging::init("op-agent", log::LevelFilter::Warn, cli.verbose);
            let cfg = match config::AgentConfig::load(cli.config.as_deref()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("op-agent: {e}");
                    return exit::ExitCode::Config.code();
                }
            };
            // Exit codes of `audit verify`: 0 intact, 1 tampered, 2 cannot read.
            audit::cli::run(
                &command,
                &cfg.toml.audit.database,
                &cfg.audit_key_file(),
                &mut std::io::stdout(),
            )
        }
    }
}
