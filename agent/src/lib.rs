//! op-agent library: everything the `op-agent` binary does, one module per job.
//!
//! The flow of a hook is parse (PVE conf + TOML, [`config`]) → plan (a pure list of steps,
//! [`plan`]) → apply (netlink, OVSDB, each outcome to the audit seam, [`phases`]).

pub mod audit;
pub mod ovsdb;
