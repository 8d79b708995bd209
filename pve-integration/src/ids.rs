//! Validated identifiers: container ids and network indexes.

use std::fmt;
use std::str::FromStr;

/// Highest `netN` index PVE accepts for a container: `$MAX_LXC_NETWORKS = 32`
/// (pve-container `src/PVE/LXC/Config.pm`, commit 6dd2d4c), so indexes are 0..=31.
pub const MAX_NET_INDEX: u8 = 31;

/// A guest id as PVE accepts it: `^[1-9][0-9]{2,8}$`, i.e. 100..=999_999_999
/// (pve-common `src/PVE/JSONSchema.pm`, `pve_verify_vmid`).
///
/// Built only through [`FromStr`] (or [`Vmid::new`]), so a value always satisfies the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Vmid(u32);

/// Why a string is not a [`Vmid`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid vmid '{0}': expected ^[1-9][0-9]{{2,8}}$ (100..=999999999)")]
pub struct VmidError(pub String);

impl Vmid {
    /// The vmid for `n` when it is in 100..=999_999_999, else `None`.
    pub fn new(n: u32) -> Option<Self> {
        (100..=999_999_999).contains(&n).then_some(Vmid(n))
    }

    /// The numeric value (100..=999_999_999).
    pub fn get(self) -> u32 {
        self.0
    }
}

impl FromStr for Vmid {
    type Err = VmidError;

    /// Accepts exactly `^[1-9][0-9]{2,8}$` (no sign, no leading zero, no whitespace);
    /// errors with [`VmidError`] quoting the input.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        let ok = (3..=9).contains(&b.len())
            && (b'1'..=b'9').contains(&b[0])
            && b.iter().all(u8::is_ascii_digit);
        if !ok {
            return Err(VmidError(s.escape_debug().to_string()));
        }
        s.parse::<u32>()
            .map(Vmid)
            .map_err(|_| VmidError(s.escape_debug().to_string()))
    }
}

impl fmt::Display for Vmid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The `N` of a container's `netN` key: 0..=[`MAX_NET_INDEX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NetIndex(u8);

impl NetIndex {
    /// The index `n` when `n <= 31`, else `None`.
    pub fn new(n: u8) -> Option<Self> {
        (n <= MAX_NET_INDEX).then_some(NetIndex(n))
    }

    /// The numeric value (0..=31).
    pub fn get(self) -> u8 {
        self.0
    }
}

impl fmt::Display for NetIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vmid_accepts_pve_range_only() {
        for ok in ["100", "101", "999999999", "123456"] {
            assert_eq!(ok.parse::<Vmid>().unwrap().to_string(), ok);
        }
        for bad in [
            "",
            "99",
            "010",
            "0100",
            "1000000000",
            "+100",
            "-100",
            " 100",
            "100 ",
            "1e3",
            "abc",
            "１００",
        ] {
            assert!(bad.parse::<Vmid>().is_err(), "{bad:?} accepted");
        }
        assert_eq!(Vmid::new(99), None);
        assert_eq!(Vmid::new(100).map(Vmid::get), Some(100));
        assert_eq!(Vmid::new(1_000_000_000), None);
    }

    #[test]
    fn vmid_error_quotes_input() {
        let e = "10x".parse::<Vmid>().unwrap_err();
        assert!(e.to_string().contains("'10x'"), "{e}");
    }

    #[test]
    fn net_index_range() {
        assert!(NetIndex::new(31).is_some());
        assert!(NetIndex::new(32).is_none());
        assert_eq!(
            NetIndex::new(7).map(|n| n.to_string()).as_deref(),
            Some("7")
        );
    }
}
