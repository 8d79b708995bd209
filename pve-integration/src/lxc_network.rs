//! The `netN` value of a container conf: a `pve-lxc-network` property string (pve-common
//! `src/PVE/JSONSchema.pm` `parse_property_string` against pve-container
//! `src/PVE/LXC/Config.pm` `$netconf_desc`, read by `parse_lxc_network`), parsed into a typed
//! [`NetConf`].

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::conf_error::{invalid, ConfErrorKind};
use crate::ids::NetIndex;
use crate::net::{IfName, MacAddr, NetConf, VlanTag};

/// pve-common `parse_boolean`: `1|on|yes|true` / `0|off|no|false`, case-insensitive.
fn parse_bool(v: &str) -> Option<bool> {
    let l = v.to_ascii_lowercase();
    match l.as_str() {
        "1" | "on" | "yes" | "true" => Some(true),
        "0" | "off" | "no" | "false" => Some(false),
        _ => None,
    }
}

fn parse_uint(v: &str, min: u32, max: u32) -> Option<u32> {
    if v.is_empty() || v.len() > 10 || !v.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    v.parse::<u32>().ok().filter(|n| (min..=max).contains(n))
}

/// `[-_.\w\d]+` (ASCII word characters).
fn is_name(v: &str) -> bool {
    !v.is_empty()
        && v.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c))
}

/// A VLAN id 1..=4094 written as a plain decimal number.
fn vlan(v: &str) -> Option<VlanTag> {
    parse_uint(v, 1, 4094).and_then(|n| VlanTag::new(u16::try_from(n).ok()?))
}

fn is_cidr<A: std::str::FromStr>(v: &str, max_prefix: u32) -> bool {
    match v.split_once('/') {
        Some((a, p)) => a.parse::<A>().is_ok() && parse_uint(p, 0, max_prefix).is_some(),
        None => false,
    }
}

fn is_rate(v: &str) -> bool {
    !v.is_empty()
        && v.bytes().all(|c| c.is_ascii_digit() || c == b'.')
        && v.parse::<f64>().is_ok_and(|f| f.is_finite() && f >= 0.0)
}

/// The property (`None` for the whole value) and what is wrong with it.
pub(crate) type PropError = (Option<String>, ConfErrorKind);

/// Parses a `pve-lxc-network` property string (pve-common `parse_property_string`) into a
/// typed [`NetConf`]: `bridge` an [`IfName`], `hwaddr` a unicast [`MacAddr`], `tag` and every
/// trunk a [`VlanTag`] (PVE's own pattern for `trunks` is `\d+(?:;\d+)*`; ids outside 1..=4094
/// are refused here, as neither a Linux bridge nor op-agent can use them).
pub(crate) fn parse_lxc_network(index: NetIndex, value: &str) -> Result<NetConf, PropError> {
    let mut net = NetConf::new(index, "");
    let mut seen: Vec<&str> = Vec::new();
    let mut have_name = false;
    for part in value.split(',') {
        if part.trim().is_empty() {
            continue;
        }
        let Some((k, v)) = part
            .split_once('=')
            .filter(|(k, v)| !k.is_empty() && !v.is_empty())
        else {
            // netN has no default key, so a bare value is as wrong as `=value`.
            return Err((
                Some(part.escape_debug().to_string()),
                ConfErrorKind::MissingPropertyKey,
            ));
        };
        let prop = || Some(k.escape_debug().to_string());
        if seen.contains(&k) {
            return Err((prop(), ConfErrorKind::DuplicateProperty));
        }
        seen.push(k);
        let bad = |expected: &'static str| (prop(), invalid(v, expected));
        let boolean =
            || parse_bool(v).ok_or_else(|| bad("a boolean (1|on|yes|true|0|off|no|false)"));
        match k {
            "name" => {
                if !is_name(v) {
                    return Err(bad("[-_.a-zA-Z0-9]+"));
                }
                net.name = v.to_string();
                have_name = true;
            }
            "bridge" => {
                if !is_name(v) {
                    return Err(bad("[-_.a-zA-Z0-9]+"));
                }
                let b = IfName::new(v)
                    .map_err(|_| bad("an interface name of at most 15 bytes, not . or .."))?;
                net.bridge = Some(b);
            }
            "hwaddr" => {
                let mac = v
                    .parse::<MacAddr>()
                    .ok()
                    .filter(|m| m.is_unicast())
                    .ok_or_else(|| bad("a unicast MAC address xx:xx:xx:xx:xx:xx"))?;
                net.hwaddr = Some(mac);
            }
            "tag" => net.tag = Some(vlan(v).ok_or_else(|| bad("an integer 1..4094"))?),
            "trunks" => {
                let mut ts = Vec::new();
                for t in v.split(';') {
                    ts.push(vlan(t).ok_or_else(|| bad("VLAN ids 1..4094 separated by ';'"))?);
                }
                net.trunks = ts;
            }
            "mtu" => {
                net.mtu =
                    Some(parse_uint(v, 64, 65535).ok_or_else(|| bad("an integer 64..65535"))?);
            }
            "firewall" => net.firewall = boolean()?,
            "link_down" => net.link_down = boolean()?,
            "host-managed" => net.host_managed = boolean()?,
            "ip" => {
                if !(v == "dhcp" || v == "manual" || is_cidr::<Ipv4Addr>(v, 32)) {
                    return Err(bad("IPv4/CIDR, dhcp or manual"));
                }
                net.ip = Some(v.to_string());
            }
            "gw" => {
                if v.parse::<Ipv4Addr>().is_err() {
                    return Err(bad("an IPv4 address"));
                }
                net.gw = Some(v.to_string());
            }
            "ip6" => {
                if !(matches!(v, "auto" | "dhcp" | "manual") || is_cidr::<Ipv6Addr>(v, 128)) {
                    return Err(bad("IPv6/CIDR, auto, dhcp or manual"));
                }
                net.ip6 = Some(v.to_string());
            }
            "gw6" => {
                if v.parse::<Ipv6Addr>().is_err() {
                    return Err(bad("an IPv6 address"));
                }
                net.gw6 = Some(v.to_string());
            }
            "rate" => {
                if !is_rate(v) {
                    return Err(bad("a non-negative number (MB/s)"));
                }
                net.rate = Some(v.to_string());
            }
            "type" => {
                if v != "veth" {
                    return Err(bad("veth"));
                }
            }
            _ => return Err((prop(), ConfErrorKind::UnknownProperty)),
        }
    }
    if !have_name {
        return Err((Some("name".to_string()), ConfErrorKind::MissingName));
    }
    Ok(net)
}

#[cfg(test)]
mod tests {
    use crate::conf::{parse_conf, ConfError, PveConf};

    fn parse(s: &str) -> Result<PveConf, ConfError> {
        parse_conf(s.as_bytes(), "100.conf")
    }

    fn err(s: &str) -> String {
        parse(s).unwrap_err().to_string()
    }

    #[test]
    fn booleans_all_spellings() {
        for (v, want) in [
            ("1", true),
            ("on", true),
            ("YES", true),
            ("True", true),
            ("0", false),
            ("off", false),
            ("No", false),
            ("FALSE", false),
        ] {
            let c = parse(&format!("net0: name=e,firewall={v}\n")).unwrap();
            assert_eq!(c.nets[&0].firewall, want, "{v}");
        }
        assert_eq!(
            err("net0: name=e,firewall=2\n"),
            "100.conf:1: invalid value '2': expected a boolean (1|on|yes|true|0|off|no|false) (net0.firewall)"
        );
    }

    #[test]
    fn property_string_errors() {
        assert_eq!(
            err("net0: name=e,tag=1,tag=2\n"),
            "100.conf:1: duplicate key in comma-separated list property (net0.tag)"
        );
        assert_eq!(
            err("\nnet0: name=e,colour=red\n"),
            "100.conf:2: invalid key in comma-separated list property (net0.colour)"
        );
        assert_eq!(
            err("net0: bridge=vmbr0\n"),
            "100.conf:1: property is missing and it is not optional (net0.name)"
        );
        assert!(err("net0: eth0\n").contains("missing key"));
        assert!(err("net0: name=e,=x\n").contains("missing key"));
        assert!(err("net0: name=e,tag=0\n").contains("(net0.tag)"));
        assert!(err("net0: name=e,tag=4095\n").contains("1..4094"));
        assert!(err("net0: name=e,tag=+5\n").contains("net0.tag"));
        assert!(err("net0: name=e,mtu=63\n").contains("net0.mtu"));
        assert!(err("net0: name=e,mtu=65536\n").contains("net0.mtu"));
        assert!(err("net0: name=e,trunks=1,2\n").contains("missing key"));
        assert!(err("net0: name=e,trunks=1;;2\n").contains("net0.trunks"));
        assert!(err("net0: name=e,trunks=5000\n").contains("net0.trunks"));
        assert!(err("net0: name=e,hwaddr=01:00:5e:00:00:01\n").contains("unicast"));
        assert!(err("net0: name=e,hwaddr=BC:24:11:00:00\n").contains("net0.hwaddr"));
        assert!(err("net0: name=e,type=veth2\n").contains("net0.type"));
        assert!(err("net0: name=e,ip=10.0.0.1\n").contains("net0.ip"));
        assert!(err("net0: name=e,ip=10.0.0.1/33\n").contains("net0.ip"));
        assert!(err("net0: name=e,gw=fe80::1\n").contains("net0.gw"));
        assert!(err("net0: name=e,ip6=fe80::1/129\n").contains("net0.ip6"));
        assert!(err("net0: name=e,rate=-1\n").contains("net0.rate"));
        assert!(err("net0: name=e f\n").contains("net0.name"));
        assert!(err("net0: name=e,bridge=vm/br\n").contains("net0.bridge"));
        let ok = parse("net0: name=e,ip=dhcp,ip6=2001:db8::5/64,gw6=2001:db8::1,mtu=64,tag=4094,trunks=1;4094;1\n")
            .unwrap();
        let trunks: Vec<u16> = ok.nets[&0].trunks.iter().map(|t| t.get()).collect();
        assert_eq!(trunks, vec![1, 4094, 1], "file order, duplicates kept");
    }

    #[test]
    fn values_are_typed_once() {
        assert_eq!(
            err("net0: name=e,trunks=20;0\n"),
            "100.conf:1: invalid value '20;0': expected VLAN ids 1..4094 separated by ';' (net0.trunks)"
        );
        assert!(err("net0: name=e,trunks=4095\n").contains("(net0.trunks)"));
        assert_eq!(
            err("net0: name=e,bridge=abcdefghijklmnop\n"),
            "100.conf:1: invalid value 'abcdefghijklmnop': expected an interface name of at most 15 \
             bytes, not . or .. (net0.bridge)"
        );
        assert!(err("net0: name=e,bridge=..\n").contains("(net0.bridge)"));
        let c =
            parse("net0: name=e,bridge=abcdefghijklmno,hwaddr=bc:24:11:00:00:0a,tag=7\n").unwrap();
        let n = &c.nets[&0];
        assert_eq!(
            n.bridge.as_ref().map(|b| b.as_str()),
            Some("abcdefghijklmno")
        );
        assert_eq!(
            n.hwaddr.map(|m| m.octets()),
            Some([0xbc, 0x24, 0x11, 0, 0, 0x0a])
        );
        assert_eq!(n.tag.map(|t| t.get()), Some(7));
    }
}
