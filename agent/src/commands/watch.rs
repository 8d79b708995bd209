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
    /// Period (ms) of the scan of PVE confs and container TOMLs that catches what inotify does
    /// not report (changes replicated from other nodes); at least 100.
    #[arg(long, default_value_t = 10000, value_name = "MS")]
    pub conf_poll_ms: u64,
    /// Longest wait (ms) for PVE's config lock before a conf is read (retried after it).
    #[arg(long, default_value_t = 2000, value_name = "MS")]
    pub conf_lock_ms: u64,
    /// Do not use inotify: the scan alone follows the confs, and the read every
    /// `[witness] interval_s` alone the other nodes' head files.
    #[arg(long)]
    pub no_inotify: bool,
    /// Receive buffer (KiB) of the netlink link-event socket (`SO_RCVBUFFORCE`); an overrun
    /// makes the service re-list every link.
    #[arg(long, default_value_t = crate::watch::links::EVENT_RCVBUF_KIB, value_name = "KIB", hide = true)]
    pub netlink_rcvbuf_kib: usize,
    /// Converge due containers one at a time instead of as one batch (for `make bench`'s
    /// comparison).
    #[arg(long, hide = true)]
    pub no_batch: bool,
}

/// Runs the service until SIGTERM with the agent.toml at `config` (loaded by the service,
/// which reports its own errors to the journal); returns `Ok` with the exit code (0 on a
/// clean stop).
pub fn run(args: &WatchArgs, config: Option<&Path>) -> super::CommandResult {
    let opts = crate::watch::WatchOptions {
        plug_wait: Duration::from_millis(args.plug_wait_ms),
        event_rcvbuf: args.netlink_rcvbuf_kib.max(4) * 1024,
        probe: Duration::from_millis(match args.probe_ms {
            0 => 0,
            ms => ms.max(10),
        }),
        conf: crate::watch::conf::ConfOptions {
            inotify: !args.no_inotify,
            poll: Duration::from_millis(args.conf_poll_ms.max(100)),
            lock_timeout: Duration::from_millis(args.conf_lock_ms),
        },
        batch: !args.no_batch,
    };
    Ok(crate::watch::run(config, opts, false))
}
