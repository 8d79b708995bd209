//! Typed values of a container's `netN`: interface names, VLAN ids, MAC addresses, and the
//! [`NetConf`] that carries them, checked once when the PVE conf is parsed (the pattern of
//! proxmox-ve-rs `proxmox-ve-config/src/guest/vm.rs` `LxcNetworkDevice`).

use std::fmt;
use std::str::FromStr;

use crate::ids::NetIndex;

/// Linux `IFNAMSIZ` is 16 bytes including the terminating NUL: 15 usable bytes
/// (pve-common `src/PVE/ProcFSTools.pm` `IFNAMSIZ`, checked by `PVE::Network::check_iface_name`).
pub const IFNAME_MAX: usize = 15;

/// A network interface name that the kernel will accept: 1..=15 bytes, no `/`, no `:`, no
/// whitespace, no control characters, not `.` or `..` (the checks of `dev_valid_name()` in the
/// kernel and pve-common `src/PVE/Network.pm` `check_iface_name`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IfName(String);

/// Why a string is not a valid interface name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IfNameError {
    /// The empty string.
    #[error("interface name is empty")]
    Empty,
    /// More than [`IFNAME_MAX`] bytes.
    #[error("interface name {0:?} is longer than 15 bytes")]
    TooLong(String),
    /// A `/`, `:`, whitespace or control character.
    #[error("interface name {0:?} contains '/', whitespace or a control character")]
    BadChar(String),
    /// `.` or `..`.
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

/// An 802.1Q VLAN id usable as an access `tag` or a trunk: 1..=4094, the range of pve-container
/// `src/PVE/LXC/Config.pm` `$netconf_desc` `tag` (`minimum => 1, maximum => 4094`).
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

/// An Ethernet MAC address: six octets.
///
/// Parsed from `xx:xx:xx:xx:xx:xx` (hex, either case). Displays upper-case like pve-common
/// `src/PVE/Tools.pm` `random_ether_addr` writes it (`BC:24:11:5E:2A:01`); `{:x}` gives the
/// lower-case form the kernel and Open vSwitch print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddr([u8; 6]);

/// Why a string is not a [`MacAddr`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address '{0}': expected xx:xx:xx:xx:xx:xx")]
pub struct MacAddrError(pub String);

impl MacAddr {
    /// The address of these octets.
    pub fn new(octets: [u8; 6]) -> MacAddr {
        MacAddr(octets)
    }

    /// The six octets.
    pub fn octets(self) -> [u8; 6] {
        self.0
    }

    /// True when the I/G bit (bit 0 of the first octet) is clear, the rule of pve-common
    /// `src/PVE/JSONSchema.pm` `pve_verify_mac_addr` (`^[a-f0-9][02468ace](?::[a-f0-9]{2}){5}$`).
    pub fn is_unicast(self) -> bool {
        self.0[0] & 1 == 0
    }
}

impl FromStr for MacAddr {
    type Err = MacAddrError;

    /// Accepts exactly six `:`-separated pairs of hex digits.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || MacAddrError(s.escape_debug().to_string());
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for o in &mut out {
            let p = parts.next().ok_or_else(bad)?;
            if p.len() != 2 || !p.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(bad());
            }
            *o = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(MacAddr(out))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::UpperHex::fmt(self, f)
    }
}

impl fmt::UpperHex for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02X}:{b:02X}:{c:02X}:{d:02X}:{e:02X}:{g:02X}")
    }
}

impl fmt::LowerHex for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// The OVS `Port.vlan_mode` PVE sets for a port with this tag and these trunks: pve-common
/// `src/PVE/Network.pm` `$ovs_bridge_add_port` (called by `tap_plug`) adds
/// `vlan_mode=native-untagged` when both are set, and leaves the column empty otherwise.
pub fn ovs_vlan_mode<T>(tag: Option<T>, trunks: &[T]) -> Option<&'static str> {
    (tag.is_some() && !trunks.is_empty()).then_some("native-untagged")
}

/// One `netN` entry of the current configuration, as pve-container `src/PVE/LXC/Config.pm`
/// `parse_lxc_network` returns it against `$netconf_desc`, with each value typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConf {
    /// `N` of `netN`.
    pub index: NetIndex,
    /// `name=`: interface name inside the container (required, `[-_.\w\d]+`).
    pub name: String,
    /// `bridge=`: Linux bridge, OVS bridge or SDN vnet on the host (`[-_.\w\d]+`, and a valid
    /// kernel interface name).
    pub bridge: Option<IfName>,
    /// `hwaddr=`: the guest side's unicast MAC.
    pub hwaddr: Option<MacAddr>,
    /// `tag=`: access VLAN.
    pub tag: Option<VlanTag>,
    /// `trunks=a;b;c`: VLAN ids in file order; empty when absent.
    pub trunks: Vec<VlanTag>,
    /// `mtu=`: 64..=65535 bytes.
    pub mtu: Option<u32>,
    /// `firewall=`: boolean, false when absent.
    pub firewall: bool,
    /// `link_down=`: boolean, false when absent; PVE then never plugs the veth.
    pub link_down: bool,
    /// `ip=`: IPv4/CIDR, `dhcp` or `manual`.
    pub ip: Option<String>,
    /// `gw=`: IPv4 address.
    pub gw: Option<String>,
    /// `ip6=`: IPv6/CIDR, `auto`, `dhcp` or `manual`.
    pub ip6: Option<String>,
    /// `gw6=`: IPv6 address.
    pub gw6: Option<String>,
    /// `rate=`: limit in MB/s (a non-negative number, kept as written; [`crate::Rate`]).
    pub rate: Option<String>,
    /// `host-managed=`: boolean, false when absent.
    pub host_managed: bool,
}

impl NetConf {
    /// `netN: name=<name>` and nothing else: every optional property absent, every boolean
    /// false (the defaults of `$netconf_desc`). `name` is not checked here.
    pub fn new(index: NetIndex, name: &str) -> NetConf {
        NetConf {
            index,
            name: name.to_string(),
            bridge: None,
            hwaddr: None,
            tag: None,
            trunks: Vec::new(),
            mtu: None,
            firewall: false,
            link_down: false,
            ip: None,
            gw: None,
            ip6: None,
            gw6: None,
            rate: None,
            host_managed: false,
        }
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

    #[test]
    fn mac_parse_and_display() {
        let m: MacAddr = "bc:24:11:5E:2a:01".parse().unwrap();
        assert_eq!(m.octets(), [0xbc, 0x24, 0x11, 0x5e, 0x2a, 0x01]);
        assert_eq!(m.to_string(), "BC:24:11:5E:2A:01");
        assert_eq!(format!("{m:x}"), "bc:24:11:5e:2a:01");
        assert!(m.is_unicast());
        assert!(!"01:00:5e:00:00:01".parse::<MacAddr>().unwrap().is_unicast());
        for bad in [
            "",
            "BC:24:11:00:00",
            "BC:24:11:00:00:01:02",
            "BC:24:11:00:00:1",
            "BC:24:11:00:00:001",
            "BC-24-11-00-00-01",
            "BC:24:11:00:00:0g",
            "BC:24:11:00:00:+1",
            "BC:24:11:00:00:01:",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad:?}");
        }
        let e = "x\ny".parse::<MacAddr>().unwrap_err().to_string();
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn native_untagged_only_with_tag_and_trunks() {
        let t = VlanTag::new(10);
        let trunks = [VlanTag::new(20).unwrap()];
        assert_eq!(ovs_vlan_mode(t, &trunks), Some("native-untagged"));
        assert_eq!(ovs_vlan_mode(t, &[]), None);
        assert_eq!(ovs_vlan_mode(None, &trunks), None);
        assert_eq!(ovs_vlan_mode::<u16>(None, &[]), None);
    }

    #[test]
    fn netconf_new_is_all_defaults() {
        let n = NetConf::new(NetIndex::new(3).unwrap(), "eth3");
        assert_eq!((n.index.get(), n.name.as_str()), (3, "eth3"));
        assert!(n.bridge.is_none() && n.hwaddr.is_none() && n.tag.is_none());
        assert!(n.trunks.is_empty() && !n.firewall && !n.link_down && !n.host_managed);
    }
}
