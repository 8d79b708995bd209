//! Proxmox VE knowledge for op-agent: parsing `/etc/pve/lxc/<vmid>.conf`, PVE's interface
//! names, paths under a relocatable root, and whether a container is running.
//!
//! The agent's netlink, OVSDB and audit modules know nothing of Proxmox; everything PVE-specific
//! lives here. The `pve-sim` binary (src/bin/pve-sim.rs) stands in for Proxmox in tests and the demo.
//!
//! - [`Vmid`], [`NetIndex`], [`pve_veth_name`]: validated ids and `veth<vmid>i<n>`.
//! - [`parse_conf`], [`read_conf`] → [`PveConf`] / [`NetConf`], errors [`ConfError`].
//! - [`paths`]: `lxc_conf_path`, `resolve_volume`, `lxcpath` under a root.
//! - [`running::is_running`]: PVE `check_running`.

// No unwrap/expect/panic on data from outside the process (issue 8); tests may.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod conf;
pub mod ids;
pub mod paths;
pub mod running;

pub use conf::{parse_conf, read_conf, ConfError, ConfErrorKind, NetConf, PveConf};
pub use ids::{pve_veth_name, NetIndex, Vmid, VmidError, MAX_NET_INDEX};
