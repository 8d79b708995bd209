//! Ownership: how op-agent marks what it made, and the one test of that mark. A row or link
//! without the mark is never changed (ovs-cni marks its rows the same way, with
//! `external_ids:owner`).
//!
//! - OVSDB Port and Interface rows carry `external_ids:owner=op-agent`, `vm-id=<vmid>`,
//!   `pve-net=net<n>` and, when known, `attached-mac`.
//! - A link op-agent renamed carries IFLA_IFALIAS `op-agent vm-id=<vmid> net=<n>`.

use crate::desired::{Desired, DesiredNic};
use crate::ovsdb;
use std::collections::BTreeMap;

/// `external_ids:owner` value that marks rows op-agent made.
pub const OWNER: &str = "op-agent";

/// The `external_ids` key holding [`OWNER`].
pub const OWNER_KEY: &str = "owner";

/// Prefix of the IFLA_IFALIAS op-agent sets on a link it renamed (`op-agent vm-id=100 net=0`),
/// so that a link of the same name that op-agent did not make is never touched.
pub const ALIAS_PREFIX: &str = "op-agent ";

/// The alias op-agent puts on the link of `vmid`'s `net<net>` when it renames it.
pub fn owner_alias(vmid: u32, net: u8) -> String {
    format!("{ALIAS_PREFIX}vm-id={vmid} net={net}")
}

/// Whose a link is, from its IFLA_IFALIAS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AliasOwner {
    /// No alias, or one op-agent did not write.
    Foreign,
    /// op-agent's alias for this vmid and net.
    This,
    /// op-agent's alias for another container or NIC; holds the alias.
    Other(String),
}

/// Reads `alias` (IFLA_IFALIAS, if any) against op-agent's alias for `vmid`/`net`.
pub fn alias_owner(alias: Option<&str>, vmid: u32, net: u8) -> AliasOwner {
    match alias {
        Some(a) if a == owner_alias(vmid, net) => AliasOwner::This,
        Some(a) if a.starts_with(ALIAS_PREFIX) => AliasOwner::Other(a.to_string()),
        _ => AliasOwner::Foreign,
    }
}

/// The `net` of op-agent's alias for `vmid` (`op-agent vm-id=<vmid> net=<n>`), `None` for any
/// other alias.
pub fn alias_net(alias: Option<&str>, vmid: u32) -> Option<u8> {
    let rest = alias?
        .strip_prefix(ALIAS_PREFIX)?
        .strip_prefix(&format!("vm-id={vmid} net="))?;
    let n: u8 = rest.parse().ok()?;
    (owner_alias(vmid, n) == alias?).then_some(n)
}

/// `external_ids:owner=op-agent`.
pub fn is_owned(external_ids: &BTreeMap<String, String>) -> bool {
    external_ids.get(OWNER_KEY).map(String::as_str) == Some(OWNER)
}

/// `external_ids:owner=op-agent` and `vm-id=<vmid>`.
pub fn is_owned_for(external_ids: &BTreeMap<String, String>, vmid: u32) -> bool {
    is_owned(external_ids) && external_ids.get("vm-id") == Some(&vmid.to_string())
}

/// The `external_ids` op-agent writes on Port and Interface for `nic`.
pub fn ownership_ids(d: &Desired, nic: &DesiredNic) -> BTreeMap<String, String> {
    let mut ids = BTreeMap::new();
    ids.insert(OWNER_KEY.to_string(), OWNER.to_string());
    ids.insert("vm-id".to_string(), d.vmid.to_string());
    ids.insert("pve-net".to_string(), format!("net{}", nic.net));
    if let Some(mac) = &nic.hwaddr {
        ids.insert("attached-mac".to_string(), mac.clone());
    }
    ids
}

/// Who may own a Port that a step deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DelGuard {
    /// Any row (PVE's own `veth<vmid>i<n>` port, which op-agent takes over).
    Any,
    /// Only a row with `external_ids:owner=op-agent`.
    Owned,
}

impl DelGuard {
    /// The OVSDB layer's guard: [`ovsdb::DelGuard::OwnedBy`] `owner=op-agent` for
    /// [`DelGuard::Owned`], checked by a `wait` inside the deleting transaction.
    pub fn to_ovsdb(self) -> ovsdb::DelGuard {
        match self {
            DelGuard::Any => ovsdb::DelGuard::Any,
            DelGuard::Owned => ovsdb::DelGuard::OwnedBy {
                key: OWNER_KEY.into(),
                value: OWNER.into(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_and_ids() {
        assert_eq!(owner_alias(100, 0), "op-agent vm-id=100 net=0");
        assert_eq!(
            alias_owner(Some("op-agent vm-id=100 net=0"), 100, 0),
            AliasOwner::This
        );
        assert_eq!(
            alias_owner(Some("op-agent vm-id=102 net=0"), 100, 0),
            AliasOwner::Other("op-agent vm-id=102 net=0".into())
        );
        assert_eq!(alias_owner(Some("uplink"), 100, 0), AliasOwner::Foreign);
        assert_eq!(alias_owner(None, 100, 0), AliasOwner::Foreign);
        assert_eq!(alias_net(Some("op-agent vm-id=100 net=3"), 100), Some(3));
        assert_eq!(alias_net(Some("op-agent vm-id=100 net=3"), 10), None);
        assert_eq!(alias_net(Some("op-agent vm-id=100 net=03"), 100), None);
        assert_eq!(alias_net(Some("op-agent vm-id=100 net=x"), 100), None);
        assert_eq!(alias_net(Some("uplink"), 100), None);
        assert_eq!(alias_net(None, 100), None);
        let mut ids = BTreeMap::new();
        assert!(!is_owned(&ids));
        ids.insert("owner".into(), "op-agent".into());
        assert!(is_owned(&ids) && !is_owned_for(&ids, 100));
        ids.insert("vm-id".into(), "100".into());
        assert!(is_owned_for(&ids, 100) && !is_owned_for(&ids, 101));
        assert_eq!(
            DelGuard::Owned.to_ovsdb(),
            ovsdb::DelGuard::OwnedBy {
                key: "owner".into(),
                value: "op-agent".into()
            }
        );
    }
}
