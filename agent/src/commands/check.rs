//! `op-agent check` (issue 5). Not yet implemented.

use std::path::Path;

/// Arguments of `op-agent check`.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {}

/// Runs the command; returns the process exit code.
pub fn run(_args: &CheckArgs, _config: Option<&Path>) -> i32 {
    eprintln!("op-agent check: not implemented yet");
    crate::exit::ExitCode::Internal.code()
}
