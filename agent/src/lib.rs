//! op-agent library: everything the `op-agent` binary does, one module per job.
//!
//! The flow of a hook ([`hook`], and of `apply` and `watch`) is the engine's ([`engine`]):
//! load (PVE conf + TOML, [`config`], [`desired`]) → observe → plan (a pure list of steps from
//! config and observed state, [`engine::plan`]) → execute (netlink, OVSDB, each outcome to the
//! audit seam, [`report`]) → rollback on failure.

// No unwrap/expect/panic on data from outside the process (bad input never panics); tests may.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
pub mod audit;
pub mod cli;
pub mod commands;
pub mod config;
pub mod desired;
pub mod engine;
pub mod exit;
#[doc(hidden)]
pub mod fuzz;
pub mod hook;
pub mod inspect;
pub mod lock;
pub mod logging;
pub mod mesh;
pub mod netlink;
pub mod ovsdb;
pub mod report;
pub mod types;
pub mod watch;

/// The message of the last panic, kept by the panic hook for the audit row.
static PANIC_MSG: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

/// Runs a parsed command line and returns its exit code. A panic is caught and reported as one
/// line, never a backtrace on the PVE task log; for `hook` it also leaves a `run.panic` audit
/// row with outcome `failed`, and the exit code is [`exit::ExitCode::Internal`] (70).
pub fn run(cli: cli::Cli) -> i32 {
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let line = format!("{}{at}", msg.split(['\n', '\r']).next().unwrap_or(""));
        if let Ok(mut m) = PANIC_MSG.lock() {
            *m = line;
        }
    }));
    let hook_args = match &cli.command {
        cli::Command::Hook { vmid, phase, .. } => {
            Some((cli.config.clone(), vmid.clone(), phase.clone()))
        }
        _ => None,
    };
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| dispatch(cli)));
    match r {
        Ok(code) => code,
        Err(_) => {
            let msg = PANIC_MSG.lock().map(|m| m.clone()).unwrap_or_default();
            match &hook_args {
                Some((cfg, vmid, phase)) => {
                    eprintln!("op-agent: {vmid} {phase}: internal error: {msg}");
                    hook::record_panic(cfg.as_deref(), vmid, phase, &msg);
                }
                None => eprintln!("op-agent: internal error: {msg}"),
            }
            exit::ExitCode::Internal.code()
        }
    }
}

fn dispatch(cli: cli::Cli) -> i32 {
    use cli::Command;
    let cfg = cli.config.as_deref();
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
        Command::Watch(a) => commands::watch::run(&a, cfg),
        Command::Apply(a) => commands::apply::run(&a, cfg),
        Command::Check(a) => commands::check::run(&a, cfg),
        Command::Status(a) => commands::status::run(&a, cfg),
        Command::Query(a) => commands::query::run(&a, cfg),
        Command::Gc(a) => commands::gc::run(&a, cfg),
        Command::Mesh(a) => commands::mesh::run(&a, cfg),
        Command::Enroll(a) => commands::enroll::run(&a, cfg),
        Command::ImportState(a) => commands::import_state::run(&a, cfg),
        Command::Config(a) => commands::config_check::run(&a, cfg),
        Command::Generate(a) => {
            commands::generate::run(&a, <cli::Cli as clap::CommandFactory>::command())
        }
    }
}
