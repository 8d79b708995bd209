//! `op-agent config` (issue 6). Not yet implemented.

use std::path::Path;

/// Arguments of `op-agent config`.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArgs {}

/// Runs the command; returns the process exit code.
pub fn run(_args: &ConfigArgs, _config: Option<&Path>) -> i32 {
    eprintln!("op-agent config: not implemented yet");
    crate::exit::ExitCode::Internal.code()
}
