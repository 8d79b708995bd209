//! `op-agent query` (issue 5). Not yet implemented.

use std::path::Path;

/// Arguments of `op-agent query`.
#[derive(Debug, Clone, clap::Args)]
pub struct QueryArgs {}

/// Runs the command; returns the process exit code.
pub fn run(_args: &QueryArgs, _config: Option<&Path>) -> i32 {
    eprintln!("op-agent query: not implemented yet");
    crate::exit::ExitCode::Internal.code()
}
