//! `op-agent watch` (issue 5). Not yet implemented.

use std::path::Path;

/// Arguments of `op-agent watch`.
#[derive(Debug, Clone, clap::Args)]
pub struct WatchArgs {}

/// Runs the command; returns the process exit code.
pub fn run(_args: &WatchArgs, _config: Option<&Path>) -> i32 {
    eprintln!("op-agent watch: not implemented yet");
    crate::exit::ExitCode::Internal.code()
}
