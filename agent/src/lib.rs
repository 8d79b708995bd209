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
pub mod audit_key_place;
pub mod cli;
pub mod commands;
pub mod config;
pub mod counters;
pub mod desired;
pub mod engine;
pub mod exit;
pub mod file_kind;
#[doc(hidden)]
pub mod fuzz;
pub mod hook;
pub mod inspect;
pub mod lock;
pub mod logging;
pub mod mesh;
pub mod metrics;
pub mod netlink;
pub mod output;
pub mod ovsdb;
pub mod released;
pub mod report;
pub mod time;
pub mod watch;
pub mod witness;

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
    let name = cli.command.name();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| dispatch(cli)));
    match r {
        Ok(code) => code,
        Err(_) => {
            let msg = PANIC_MSG.lock().map(|m| m.clone()).unwrap_or_default();
            // `println!` panics when stdout cannot be written (`status > /dev/full`, a full
            // disk under a redirect): an I/O error of the caller's, not a bug of ours.
            if let Some(why) = msg.strip_prefix("failed printing to stdout: ") {
                let why = why.split(" at ").next().unwrap_or(why);
                crate::errln!("op-agent {name}: cannot write to stdout: {why}");
                return exit::ExitCode::AuditIo.code();
            }
            match &hook_args {
                Some((cfg, vmid, phase)) => {
                    crate::errln!("op-agent: {vmid} {phase}: internal error: {msg}");
                    hook::record_panic(cfg.as_deref(), vmid, phase, &msg);
                }
                None => crate::errln!("op-agent: internal error: {msg}"),
            }
            exit::ExitCode::Internal.code()
        }
    }
}

/// Runs one command through [`run_command`] and prints its error, if any, once, as
/// `op-agent <command>: <message>`. Returns the exit code.
fn dispatch(cli: cli::Cli) -> i32 {
    let name = cli.command.name();
    let is_hook = matches!(cli.command, cli::Command::Hook { .. });
    let r = run_command(cli);
    // Output lost on the way (`status > /dev/full`): never a success over a truncated file,
    // and one line (a command that stopped at the failed write has no other news). Not for
    // `hook`: its exit code is the container start's, and its lines are copies of what the
    // audit row and syslog hold.
    if !is_hook {
        let _ = std::io::Write::flush(&mut output::stdout());
        if let Some(why) = output::stdout_error() {
            crate::errln!("op-agent {name}: cannot write to stdout: {why}");
            return exit::ExitCode::AuditIo.code();
        }
    }
    if let Err(e) = &r {
        crate::errln!("{}", e.line(name));
    }
    commands::exit_status(&r)
}

/// Runs one command: installs logging, checks the arguments that need no config, loads
/// agent.toml where the command needs it (in that order, so a bad argument is reported before
/// a bad config), then runs it. `hook` and `watch` load their config themselves and print
/// their own lines (the PVE task log, the journal), so they never return an error.
fn run_command(cli: cli::Cli) -> commands::CommandResult {
    use cli::Command;
    use commands::CliError;
    use exit::ExitCode;
    let path = cli.config.as_deref();
    let load = || config::AgentConfig::load(path);
    // Commands that read this node's containers: a `[pve] root` without `etc/pve` is an
    // error (78), never "no container" (which would make `gc` remove every running
    // container's Port as "not running").
    let load_node = || -> Result<config::AgentConfig, CliError> {
        let c = load()?;
        pve_integration::paths::check_pve_root(&c.toml.pve.root).map_err(|e| {
            CliError::new(
                ExitCode::Config,
                format!(
                    "{}: [pve] root = {e}: not a Proxmox VE node, or the wrong root; nothing \
                     was read or changed",
                    c.path.display()
                ),
            )
        })?;
        Ok(c)
    };
    // Commands whose failures go to the PVE task log or a terminal: warnings and errors on
    // stderr when syslog is unreachable.
    let log_warn = || logging::init("op-agent", log::LevelFilter::Warn, false);
    // A dry run logs nothing (it changes nothing): [`logging::init_quiet`].
    let log_for = |dry_run: bool| match dry_run {
        true => logging::init_quiet("op-agent", false),
        false => log_warn(),
    };
    let ok = |()| ExitCode::Ok;
    match cli.command {
        Command::Hook {
            vmid,
            phase,
            dry_run,
            timings,
        } => {
            if dry_run {
                logging::init_quiet("op-agent", cli.verbose);
            } else {
                logging::init("op-agent", log::LevelFilter::Warn, cli.verbose);
            }
            let opts = hook::HookOptions { dry_run, timings };
            Ok(hook::run(path, &vmid, &phase, &opts))
        }
        Command::Audit { command } => {
            logging::init("op-agent", log::LevelFilter::Warn, cli.verbose);
            let cfg =
                load().map_err(|e| CliError::from(e).with_code(ExitCode::Config).unscoped())?;
            let command = command.with_json(cli.output_format.is_json());
            commands::audit::run_config(&command, &cfg, &mut crate::output::stdout())
        }
        Command::Watch(a) => commands::watch::run(&a, path),
        Command::Apply(a) => {
            log_for(a.dry_run);
            commands::apply::run(&a, load_node()?, cli.output_format)
        }
        Command::Check(a) => {
            log_warn();
            match a.vmid.as_deref() {
                Some(v) if !a.all => {
                    let vmid = commands::vmid_arg(v)?;
                    commands::check::run(vmid, &load_node()?, cli.output_format)
                }
                _ => commands::check_all::run(&load_node()?, cli.output_format),
            }
        }
        Command::Status(a) => {
            log_warn();
            let only = a.vmid.as_deref().map(commands::vmid_arg).transpose()?;
            let format = match (a.json, cli.output_format) {
                (true, output::OutputFormat::Text) => output::OutputFormat::Json,
                (_, f) => f,
            };
            commands::status::run(only, format, a.counters, &load_node()?)
        }
        Command::Metrics(a) => {
            log_warn();
            commands::metrics::run(&a, &load()?)
        }
        Command::Query(a) => {
            log_warn();
            commands::query::check_plugin(&a)?;
            commands::query::run(&load()?).map(ok)
        }
        Command::Release(a) => {
            log_warn();
            commands::release::run(&a, &load_node()?)
        }
        Command::Set(a) => {
            log_warn();
            commands::set::run(&a, &load_node()?)
        }
        Command::Gc(a) => {
            log_for(a.dry_run);
            commands::gc::run(&a, &load_node()?, cli.output_format)
        }
        Command::Mesh(a) => {
            log_warn();
            let cfg = load().map_err(|e| CliError::from(e).unscoped())?;
            commands::mesh::run(&a, &cfg)
        }
        Command::Enroll(a) => {
            let vmids = commands::enroll::check_args(&a)?;
            let cfg = load().map_err(|e| CliError::from(e).with_code(ExitCode::Config))?;
            if a.remove {
                commands::unenroll::run(&a, vmids, &cfg)
            } else {
                commands::enroll_multi::run(&a, vmids, &cfg)
            }
        }
        Command::ImportState(a) if a.enroll => {
            let cfg = load().map_err(|e| CliError::from(e).with_code(ExitCode::Config))?;
            commands::import_enroll::run(&a, &cfg)
        }
        Command::ImportState(a) => {
            let out_dir = match &a.out {
                Some(d) => d.clone(),
                None => load()
                    .map_err(|e| CliError::from(e).with_code(ExitCode::Config))?
                    .containers_dir(),
            };
            commands::import_state::run(&a, &out_dir)
        }
        Command::Config(a) => commands::config_check::run(&a, path, cli.output_format),
        Command::Generate(a) => {
            use clap::CommandFactory;
            commands::generate::run(&a, cli::Cli::command()).map(ok)
        }
    }
}
