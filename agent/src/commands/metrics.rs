//! `op-agent metrics`: the Prometheus text exposition of [`crate::metrics`] on stdout, made
//! once (the watch service keeps the same text in `[metrics] textfile`).

use super::{CliError, CommandResult};
use crate::config::AgentConfig;
use crate::exit::ExitCode;
use crate::inspect;
use crate::metrics::{self, audit::AuditTally};

/// Arguments of `op-agent metrics` (none).
#[derive(Debug, Clone, clap::Args)]
pub struct MetricsArgs {}

/// Prints the metrics of the host described by `cfg`. An unreadable audit database is a
/// warning on stderr (the text then says `op_agent_audit_readable 0`), exit 0.
///
/// # Errors
/// `Internal` (70) when no runtime can be built, `Failed` (1) when the link counters cannot
/// be read from netlink.
pub fn run(_args: &MetricsArgs, cfg: &AgentConfig) -> CommandResult {
    let rt = inspect::runtime().map_err(|e| CliError::new(ExitCode::Internal, e.to_string()))?;
    let mut tally = AuditTally::default();
    let (text, audit_err) = rt
        .block_on(metrics::gather(cfg, &mut tally))
        .map_err(|e| CliError::wrap(ExitCode::Failed, e))?;
    if let Some(e) = audit_err {
        if cfg.toml.audit.database.exists() {
            eprintln!("op-agent metrics: audit log not read: {e}");
        }
    }
    print!("{text}");
    Ok(ExitCode::Ok)
}
