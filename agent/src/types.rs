//! Validated newtypes that carry the kernel's and OVS's limits: a value of these types exists
//! only once checked.

use std::fmt;

/// Linux `IFNAMSIZ` is 16 bytes including the terminating NUL: 15 usable bytes.
pub const IFNAME_MAX: usize = 15;

/// A network interface name that the kernel will accept: 1..=15 bytes, no `/`, no whitespace,
/// no control characters, not `.` or `..` (the checks of `dev_valid_name()` in the kernel and
/// pve-common `PVE::Network::check_iface_name`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IfName(String);

/// Why a string is not a valid interface name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IfNameError {
    #[error("interface name is empty")]
    Empty,
    #[error("interface name {0:?} is longer than 15 bytes")]
    TooLong(String),
    #[error("interface name {0:?} contains '/', whitespace or a control character")]
    BadChar(String),
    #[error("interface name {0:?} is reserved")]
    Reserved(String),
}

impl IfName {
    /// Validates `name`; errors name the offending value.
    pub fn new(name: &str) -> Result<IfName, IfNameError> {
        if name.is_empty() {
            return Err(IfNameError::Empty);
        }
        if name.len() > IFNAME_MAX {
            return Err(IfNameError::TooLong(name.to_string()));
        }
        if name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
        {
            return Err(IfNameError::BadChar(name.to_string()));
        }
        if name == "." || name == ".." {
            return Err(IfNameError::Reserved(name.to_string()));
        }
        Ok(IfName(name.to_string()))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An 802.1Q VLAN id usable as an OVS access `tag` or trunk: 1..=4094 (PVE's `tag` range).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VlanTag(u16);

impl VlanTag {
    /// `Some` when `id` is in 1..=4094.
    pub fn new(id: u16) -> Option<VlanTag> {
        (1..=4094).contains(&id).then_some(VlanTag(id))
    }

    /// The numeric VLAN id.
    pub fn get(self) -> u16 {
        self.0
    }
}

impl fmt::Display for VlanTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifname_rules() {
        assert!(IfName::new("vi100").is_ok());
        assert!(IfName::new("vi999999999i31").is_ok());
        assert_eq!(IfName::new("vi999999999i31").unwrap().as_str().len(), 14);
        assert_eq!(
            IfName::new("abcdefghijklmnop"),
            Err(IfNameError::TooLong("abcdefghijklmnop".into()))
        );
        assert!(IfName::new("abcdefghijklmno").is_ok());
        for bad in ["a/b", "a b", "a\tb", "a\nb", "a\u{7}b", "a:b"] {
            assert!(
                matches!(IfName::new(bad), Err(IfNameError::BadChar(_))),
                "{bad:?}"
            );
        }
        assert_eq!(IfName::new(""), Err(IfNameError::Empty));
        assert!(matches!(IfName::new(".."), Err(IfNameError::Reserved(_))));
    }

    #[test]
    fn vlan_range() {
        assert!(VlanTag::new(0).is_none());
        assert!(VlanTag::new(4095).is_none());
        assert_eq!(VlanTag::new(1).map(VlanTag::get), Some(1));
        assert_eq!(VlanTag::new(4094).map(VlanTag::get), Some(4094));
    }
}
