//! Command-line definitions (clap derive). The man page and shell completions are generated
//! from these.

use crate::commands;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// What `op-agent --version` prints after the name: the package version, the git commit it
/// was built from and the build date (from build.rs): `0.1.0 (commit 8bc5bee1a2b3, built
/// 2026-12-02)`.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("OP_AGENT_GIT_COMMIT"),
    ", built ",
    env!("OP_AGENT_BUILD_DATE"),
    ")"
);

/// op-agent: renames Proxmox container veths to vi<vmid>, attaches them to Open vSwitch over
/// OVSDB, and keeps a hash-chained audit log of every step.
// The doc comments here are also clap's help text, where `<vmid>` is meant literally.
#[allow(rustdoc::invalid_html_tags)]
#[derive(Debug, Parser)]
#[command(name = "op-agent", version = VERSION, about, long_about = None)]
pub struct Cli {
    /// agent.toml to use (default: $OP_AGENT_CONFIG, else /etc/op-agent/agent.toml).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log debug messages.
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// Output format of status, check, config check, apply, gc and audit log/verify/witnesses
    /// (as pvesh); the other commands print their one format.
    #[arg(
        long,
        global = true,
        value_enum,
        value_name = "FORMAT",
        default_value_t
    )]
    pub output_format: crate::output::OutputFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[allow(rustdoc::invalid_html_tags)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one hookscript phase (what op-hook execs): `op-agent hook 100 post-start`.
    Hook {
        /// Container id (100..999999999).
        vmid: String,
        /// pre-start, post-start, pre-stop or post-stop; other phases do nothing.
        phase: String,
        /// Print the plan and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print how long each step took (ms) to stderr.
        #[arg(long)]
        timings: bool,
    },
    /// The audit log: verify, log, head, export, init-key.
    Audit {
        #[command(subcommand)]
        command: commands::audit::AuditCommand,
    },
    /// Long-running service: re-apply after in-guest reboots, hotplug and OVS restarts.
    Watch(commands::watch::WatchArgs),
    /// Converge a running container now (same steps and audit rows as post-start).
    Apply(commands::apply::ApplyArgs),
    /// Compare live state with the config without changing anything (exit 1 on drift).
    Check(commands::check::CheckArgs),
    /// Table (or JSON) of managed containers and the state of their NICs.
    Status(commands::status::StatusArgs),
    /// Prometheus text exposition of NIC traffic counters and audit facts.
    Metrics(commands::metrics::MetricsArgs),
    /// JSON compatible with the old op-dbus query (`--plugin lxc`).
    Query(commands::query::QueryArgs),
    /// Hand running containers' NICs back to PVE's names and Ports until their next start
    /// (or `apply`).
    Release(commands::release::ReleaseArgs),
    /// Live edit of a running container through `pct set` (hand back, pct set, converge):
    /// `op-agent set 100 -net0 name=eth0,bridge=ovsbr0,tag=20`.
    Set(commands::set::SetArgs),
    /// Remove stale Port rows op-agent owns.
    Gc(commands::gc::GcArgs),
    /// Netmaker mesh: join, status.
    Mesh(commands::mesh::MeshArgs),
    /// Write containers/<vmid>.toml and attach op-hook with `pct set`.
    Enroll(commands::enroll::EnrollArgs),
    /// Convert an old op-dbus state.json into container TOML files.
    ImportState(commands::import_state::ImportStateArgs),
    /// Validate configuration files (`config check`).
    Config(commands::config_check::ConfigArgs),
    /// Write the man page or a shell completion (package build).
    #[command(hide = true)]
    Generate(commands::generate::GenerateArgs),
}

impl Command {
    /// The words of this command on the command line that its error messages carry after
    /// `op-agent ` (`check`, `mesh join`, `config check`). `audit` names only `verify`; its
    /// other subcommands report as `audit`.
    pub fn name(&self) -> &'static str {
        use commands::audit::AuditCommand;
        use commands::config_check::ConfigCommand;
        use commands::mesh::MeshCommand;
        match self {
            Command::Hook { .. } => "hook",
            Command::Audit {
                command: AuditCommand::Verify { .. },
            } => "audit verify",
            Command::Audit { .. } => "audit",
            Command::Watch(_) => "watch",
            Command::Apply(_) => "apply",
            Command::Check(_) => "check",
            Command::Status(_) => "status",
            Command::Metrics(_) => "metrics",
            Command::Query(_) => "query",
            Command::Gc(_) => "gc",
            Command::Release(_) => "release",
            Command::Set(_) => "set",
            Command::Mesh(a) => match a.command {
                MeshCommand::Join => "mesh join",
                MeshCommand::Status { .. } => "mesh status",
            },
            Command::Enroll(_) => "enroll",
            Command::ImportState(_) => "import-state",
            Command::Config(a) => match a.command {
                ConfigCommand::Check { .. } => "config check",
            },
            Command::Generate(_) => "generate",
        }
    }
}
