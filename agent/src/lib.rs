//! op-agent library: everything the `op-agent` binary does, one module per job.
//!
//! The flow of a hook is parse (PVE conf + TOML, [`config`], [`desired`]) → plan (a pure list of
//! steps from config and observed state, [`plan`]) → apply (netlink, OVSDB, each outcome to the
//! audit seam, [`phases`]).

pub mod audit;
pub mod config;
pub mod desired;
pub mod exit;
pub mod lock;
pub mod logging;
pub mod netlink;
pub mod ovsdb;
pub mod plan;
pub mod types;
