//! Proxmox VE knowledge for op-agent: parsing `/etc/pve/lxc/<vmid>.conf` into typed values,
//! PVE's and LXC's interface names, paths under a relocatable root, the `pct` call, and
//! whether a container is running.
//!
//! The agent's netlink, OVSDB and audit modules know nothing of Proxmox; everything PVE-specific
//! lives here. The `pve-sim` binary (src/bin/pve-sim.rs, built on [`sim`]) stands in for Proxmox
//! in tests and the demo.
//!
//! - [`Vmid`], [`NetIndex`]: validated ids ([`ids`]).
//! - [`HostVeth`] (`veth<vmid>i<n>`), [`FwNames`], [`is_pve_device_name`] ([`names`]).
//! - [`IfName`], [`VlanTag`], [`MacAddr`], [`NetConf`], [`ovs_vlan_mode`] ([`net`]).
//! - [`parse_conf`], [`read_conf`] → [`PveConf`], errors [`ConfError`] ([`conf`]; `netN`
//!   values are parsed in `lxc_network.rs`).
//! - [`paths`]: `lxc_conf_path`, `resolve_volume`, `lxcpath`, `cluster_container_toml`,
//!   `check_pve_root` under a root.
//! - [`pct`]: `pct set <vmid> --hookscript`, [`pct::HOOK_VOLID`].
//! - [`Rate`]: `rate=` as `PVE::Network::tap_rate_limit` applies it ([`rate`]).
//! - [`running::is_running`]: PVE `check_running`.
//! - [`ifupdown`]: the host's `/etc/network/interfaces` as ifupdown2 reads it, and which bridge
//!   ports `ifreload -a` removes.

// No unwrap/expect/panic on data from outside the process; tests may.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod conf;
mod conf_error;
pub mod conf_read;
pub mod ids;
pub mod ifupdown;
mod lxc_network;
pub mod names;
pub mod net;
pub mod paths;
pub mod pct;
pub mod rate;
pub mod running;
pub mod sim;

pub use conf::{parse_conf, ConfError, ConfErrorKind, PveConf};
pub use conf_read::{enrolled_hookscript, is_op_hook, read_conf, read_conf_file};
pub use ids::{NetIndex, Vmid, VmidError, MAX_NET_INDEX};
pub use names::{is_lxc_setup_peer_name, is_pve_device_name, FwNames, HostVeth, VethTooLong};
pub use net::{
    ovs_vlan_mode, IfName, IfNameError, MacAddr, MacAddrError, NetConf, VlanTag, IFNAME_MAX,
};
pub use rate::{Rate, RATE_BURST_BYTES};
