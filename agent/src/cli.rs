//! Command-line definitions (clap derive). The man page and shell completions are generated
//! from these.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// op-agent: renames Proxmox container veths to vi<vmid>, attaches them to Open vSwitch over
/// OVSDB, and keeps a hash-chained audit log of every step.
#[derive(Debug, Parser)]
#[command(name = "op-agent", version, about, long_about = None)]
pub struct Cli {
    /// agent.toml to use (default: $OP_AGENT_CONFIG, else /etc/op-agent/agent.toml).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log debug messages.
    #[arg(short, long, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
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
        command: crate::audit::cli::AuditCommand,
    },
}
