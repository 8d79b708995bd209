//! `op-agent enroll` (issue 6). Not yet implemented.

use std::path::Path;

/// Arguments of `op-agent enroll`.
#[derive(Debug, Clone, clap::Args)]
pub struct EnrollArgs {}

/// Runs the command; returns the process exit code.
pub fn run(_args: &EnrollArgs, _config: Option<&Path>) -> i32 {
    eprintln!("op-agent enroll: not implemented yet");
    crate::exit::ExitCode::Internal.code()
}
