//! `op-agent apply` (issue 5). Not yet implemented.

use std::path::Path;

/// Arguments of `op-agent apply`.
#[derive(Debug, Clone, clap::Args)]
pub struct ApplyArgs {}

/// Runs the command; returns the process exit code.
pub fn run(_args: &ApplyArgs, _config: Option<&Path>) -> i32 {
    eprintln!("op-agent apply: not implemented yet");
    crate::exit::ExitCode::Internal.code()
}
