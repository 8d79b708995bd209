//! Proxmox VE knowledge for op-agent: parsing `/etc/pve/lxc/<vmid>.conf`, PVE's interface
//! names, paths under a relocatable root, and whether a container is running.
//!
//! The agent's netlink, OVSDB and audit modules know nothing of Proxmox; everything PVE-specific
//! lives here. The `pve-sim` binary (src/bin/pve-sim.rs) stands in for Proxmox in tests and the demo.
//!
//! CONTRACT (filled in by the pve-integration work; signatures below are what the agent uses):
//! - `Vmid`: `FromStr` accepting `^[1-9][0-9]{2,8}$` (pve-common `pve_verify_vmid`), `get() -> u32`, `Display`.
//! - `NetIndex`: 0..=31 (`$MAX_LXC_NETWORKS`), `new(u8) -> Option<NetIndex>`, `get() -> u8`, `Display`.
//! - `pve_veth_name(Vmid, NetIndex) -> String` = `veth<vmid>i<n>`.
//! - `NetConf` / `PveConf`, `parse_conf(reader, source_name) -> Result<PveConf, ConfError>`,
//!   `read_conf(root, vmid) -> Result<Option<PveConf>, ConfError>` (Ok(None) when the file is absent).
//! - `paths::lxc_conf_path(root, vmid)`, `paths::resolve_volume(root, volid)`, `paths::lxcpath(root)`.
//! - `running::is_running(root, vmid) -> bool`.
