//! Exit codes, decided in one place. Values follow BSD `sysexits.h` so that a Proxmox task log's
//! `exit code N` says which kind of failure stopped a container start.

/// A process exit status of `op-agent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum ExitCode {
    /// Success, or nothing to do (unmanaged guest, unknown phase).
    Ok = 0,
    /// A step failed (netlink or OVSDB refused an operation), or `check` found drift.
    Failed = 1,
    /// Malformed vmid, phase or command line (`EX_USAGE`).
    Usage = 64,
    /// ovsdb-server unreachable, bridge missing, mesh interface down (`EX_UNAVAILABLE`).
    Unavailable = 69,
    /// Internal error, including a caught panic (`EX_SOFTWARE`).
    Internal = 70,
    /// `op-agent set` / `release`: handing a NIC back to PVE failed part-way (a netlink or
    /// OVSDB operation on the host failed, `EX_OSERR`); `pct` was not run and the NICs are
    /// back on op-agent's plumbing with the values the PVE conf holds.
    HandBack = 71,
    /// The audit database could not be written (`EX_IOERR`).
    AuditIo = 74,
    /// A deadline, an ovs-vswitchd wait or a lock timed out (`EX_TEMPFAIL`).
    Timeout = 75,
    /// Refused: a foreign link or port holds our name, firewall=1, unsafe file permissions (`EX_NOPERM`).
    Refused = 77,
    /// agent.toml, a container TOML or the PVE conf is invalid (`EX_CONFIG`).
    Config = 78,
}

impl ExitCode {
    /// The numeric status passed to `std::process::exit`.
    pub fn code(self) -> i32 {
        self as i32
    }
}
