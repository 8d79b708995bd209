//! `op-agent import-state` (issue 6). Not yet implemented.

use std::path::Path;

/// Arguments of `op-agent import-state`.
#[derive(Debug, Clone, clap::Args)]
pub struct ImportStateArgs {}

/// Runs the command; returns the process exit code.
pub fn run(_args: &ImportStateArgs, _config: Option<&Path>) -> i32 {
    eprintln!("op-agent import-state: not implemented yet");
    crate::exit::ExitCode::Internal.code()
}
