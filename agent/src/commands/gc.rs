//! `op-agent gc` (issue 5). Not yet implemented.

use std::path::Path;

/// Arguments of `op-agent gc`.
#[derive(Debug, Clone, clap::Args)]
pub struct GcArgs {}

/// Runs the command; returns the process exit code.
pub fn run(_args: &GcArgs, _config: Option<&Path>) -> i32 {
    eprintln!("op-agent gc: not implemented yet");
    crate::exit::ExitCode::Internal.code()
}
