//! `op-agent mesh` (issue 4). Not yet implemented.

use std::path::Path;

/// Arguments of `op-agent mesh`.
#[derive(Debug, Clone, clap::Args)]
pub struct MeshArgs {}

/// Runs the command; returns the process exit code.
pub fn run(_args: &MeshArgs, _config: Option<&Path>) -> i32 {
    eprintln!("op-agent mesh: not implemented yet");
    crate::exit::ExitCode::Internal.code()
}
