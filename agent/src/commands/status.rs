//! `op-agent status` (issue 5). Not yet implemented.

use std::path::Path;

/// Arguments of `op-agent status`.
#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {}

/// Runs the command; returns the process exit code.
pub fn run(_args: &StatusArgs, _config: Option<&Path>) -> i32 {
    eprintln!("op-agent status: not implemented yet");
    crate::exit::ExitCode::Internal.code()
}
