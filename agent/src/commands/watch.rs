//! `op-agent watch`: the long-running service; see [`crate::watch`].

use std::path::Path;
use std::time::Duration;

/// Arguments of `op-agent watch`.
#[derive(Debug, Clone, clap::Args)]
pub struct WatchArgs {
    /// Longest wait (ms) for PVE to plug a new `veth<vmid>i<n>` before converging anyway.
    #[arg(long, default_value_t = 2000, value_name = "MS")]
    pub plug_wait_ms: u64,
    /// Interval (ms) of the OVSDB liveness probe (`echo`); 0 disables it.
    #[arg(long, default_value_t = 5000, value_name = "MS")]
    pub probe_ms: u64,
}

/// Runs the service until SIGTERM with the agent.toml at `config` (loaded by the service,
/// which reports its own errors to the journal); returns `Ok` with the exit code (0 on a
/// clean stop).
pub fn run(args: &WatchArgs, config: Option<&Path>) -> super::CommandResult {
    let opts = crate::watch::WatchOptions {
        plug_wait: Duration::from_millis(args.plug_wait_ms),
        probe: Duration::from_millis(match args.probe_ms {
            0 => 0,
            ms => ms.max(10),
        }),
    };
    Ok(crate::watch::run(config, opts, false))
}
