//! The host interface names PVE and LXC give a container's NICs: the veth `veth<vmid>i<n>`,
//! the firewall bridge devices around it, and the name space they claim.

use std::fmt;

use crate::ids::{NetIndex, Vmid};
use crate::net::IFNAME_MAX;

/// The host side of `netN` of container `vmid`, as PVE names it and LXC creates it:
/// `veth<vmid>i<n>` (pve-container `src/PVE/LXC.pm` `update_lxc_config` writes it as
/// `lxc.net.N.veth.pair`; pve-common `src/PVE/Network.pm` `$parse_tap_device_name` reads it).
///
/// A value exists only for names the kernel accepts (at most [`IFNAME_MAX`] bytes).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostVeth {
    name: String,
    vmid: Vmid,
    net: NetIndex,
}

/// `veth<vmid>i<n>` is 16 bytes or more (a 9-digit vmid with `n >= 10`): LXC cannot create it.
///
/// LXC 5 `network_ifname` (lxc `src/lxc/confile_utils.c`, called for `lxc.net.N.veth.pair`)
/// logs `Network device name "…" is too long (>= 16)` and keeps the first 15 bytes, so the
/// start then fails or picks up another NIC's name ([`VethTooLong::lxc_truncated`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct VethTooLong {
    /// The container.
    pub vmid: Vmid,
    /// Its `netN` index.
    pub net: NetIndex,
}

impl fmt::Display for VethTooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let full = self.full();
        write!(
            f,
            "net{}: PVE's host veth name {full} is {} bytes, more than the kernel's {IFNAME_MAX}; \
             LXC cannot create it, so vmid {} can only use net0..net9",
            self.net,
            full.len(),
            self.vmid
        )
    }
}

impl VethTooLong {
    /// The name PVE writes: `veth<vmid>i<n>`, untruncated.
    pub fn full(&self) -> String {
        format!("veth{}i{}", self.vmid, self.net)
    }

    /// The first [`IFNAME_MAX`] bytes of [`VethTooLong::full`], the name LXC's `strlcpy` in
    /// `network_ifname` leaves (it may be another NIC's veth: `veth999999999i31` →
    /// `veth999999999i3`).
    pub fn lxc_truncated(&self) -> String {
        let mut n = self.full();
        n.truncate(IFNAME_MAX);
        n
    }
}

impl HostVeth {
    /// `veth<vmid>i<n>`.
    ///
    /// # Errors
    /// [`VethTooLong`] when the name has 16 bytes or more (9-digit vmid, `n >= 10`).
    pub fn new(vmid: Vmid, net: NetIndex) -> Result<HostVeth, VethTooLong> {
        let name = format!("veth{vmid}i{net}");
        if name.len() > IFNAME_MAX {
            return Err(VethTooLong { vmid, net });
        }
        Ok(HostVeth { name, vmid, net })
    }

    /// The `(vmid, n)` of a name [`HostVeth::new`] builds, else `None`: exactly
    /// `veth<vmid>i<n>` with a valid [`Vmid`], `n` in 0..=31 without a leading zero, and at most
    /// 15 bytes. Stricter than pve-common `$parse_tap_device_name` (`^veth(\d+)i(\d+)$`), which
    /// also matches names PVE never creates.
    pub fn parse(name: &str) -> Option<(Vmid, NetIndex)> {
        let (v, n) = name.strip_prefix("veth")?.split_once('i')?;
        if n.is_empty() || n.len() > 2 || !n.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let vmid = v.parse::<Vmid>().ok()?;
        let net = NetIndex::new(n.parse().ok()?)?;
        let built = HostVeth::new(vmid, net).ok()?;
        (built.name == name).then_some((vmid, net))
    }

    /// The container.
    pub fn vmid(&self) -> Vmid {
        self.vmid
    }

    /// The `netN` index.
    pub fn net(&self) -> NetIndex {
        self.net
    }

    /// The name, e.g. `veth100i0`.
    pub fn as_str(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for HostVeth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// The devices PVE's iptables firewall puts between a veth and its bridge, pve-common
/// `src/PVE/Network.pm` `$compute_fwbr_names`. Each is as long as the veth name, so it fits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FwNames {
    /// `fwbr<vmid>i<n>`: the Linux bridge holding the veth.
    pub fwbr: String,
    /// `fwln<vmid>i<n>`: the veth end in the firewall bridge (Linux bridge case).
    pub fwln: String,
    /// `fwpr<vmid>p<n>`: its peer, in the real bridge (Linux bridge case).
    pub fwpr: String,
    /// `fwln<vmid>o<n>`: the OVS internal port in the firewall bridge (OVS bridge case).
    pub ovs_int: String,
}

impl FwNames {
    /// The firewall device names for `veth`.
    pub fn of(veth: &HostVeth) -> FwNames {
        let (v, n) = (veth.vmid, veth.net);
        FwNames {
            fwbr: format!("fwbr{v}i{n}"),
            fwln: format!("fwln{v}i{n}"),
            fwpr: format!("fwpr{v}p{n}"),
            ovs_int: format!("fwln{v}o{n}"),
        }
    }
}

/// True for a name in PVE's device name space: `veth`, `tap`, `fwbr`, `fwln` or `fwpr`
/// followed by digits, one of `i`, `p`, `o`, and digits. This covers every name pve-common
/// `src/PVE/Network.pm` uses (`$parse_tap_device_name`: `tap<vmid>i<n>` of a VM and
/// `veth<vmid>i<n>` of a container; `$compute_fwbr_names`), for any vmid and index.
pub fn is_pve_device_name(name: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    let digits_sep_digits = |rest: &str, sep: char| match rest.split_once(sep) {
        Some((a, b)) => digits(a) && digits(b),
        None => false,
    };
    ["veth", "tap", "fwbr", "fwln", "fwpr"].iter().any(|p| {
        name.strip_prefix(p).is_some_and(|rest| {
            digits_sep_digits(rest, 'i')
                || digits_sep_digits(rest, 'p')
                || digits_sep_digits(rest, 'o')
        })
    })
}

/// Whether `peer`, the name of the container's end of a host veth, is still LXC's: LXC creates
/// that end as `vethXXXXXX` (lxc `src/lxc/network.c` `instantiate_veth`, `lxc_ifname_alnum`
/// template) directly in the container's namespace and the container renames it to
/// `lxc.net.N.name` (PVE's `name=`, e.g. `eth0`) only after the host end's
/// `lxc.net.N.script.up` (PVE's `lxcnetaddbr`) has returned. Until then that script may still
/// work on the host end by its name, so op-agent must not rename it. (A guest NIC that PVE's
/// `name=` itself calls `veth…` reads as "still LXC's": op-agent then waits for its bound.)
pub fn is_lxc_setup_peer_name(peer: &str) -> bool {
    peer.starts_with("veth")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(n: u32) -> Vmid {
        Vmid::new(n).unwrap()
    }
    fn i(n: u8) -> NetIndex {
        NetIndex::new(n).unwrap()
    }

    #[test]
    fn builds_and_refuses_like_lxc() {
        assert_eq!(HostVeth::new(v(100), i(0)).unwrap().as_str(), "veth100i0");
        assert_eq!(
            HostVeth::new(v(100), i(31)).unwrap().to_string(),
            "veth100i31"
        );
        let max = HostVeth::new(v(99_999_999), i(31)).unwrap();
        assert_eq!(
            (max.as_str().len(), max.vmid(), max.net()),
            (15, v(99_999_999), i(31))
        );
        assert_eq!(
            HostVeth::new(v(999_999_999), i(9)).unwrap().as_str(),
            "veth999999999i9"
        );
        let e = HostVeth::new(v(999_999_999), i(31)).unwrap_err();
        assert_eq!(e.full(), "veth999999999i31");
        assert_eq!(e.lxc_truncated(), "veth999999999i3");
        assert_eq!(
            e.to_string(),
            "net31: PVE's host veth name veth999999999i31 is 16 bytes, more than the kernel's \
             15; LXC cannot create it, so vmid 999999999 can only use net0..net9"
        );
        assert!(HostVeth::new(v(999_999_999), i(10)).is_err());
    }

    #[test]
    fn parses_pve_veth_names() {
        assert_eq!(HostVeth::parse("veth100i0"), Some((v(100), i(0))));
        assert_eq!(HostVeth::parse("veth123456i12"), Some((v(123_456), i(12))));
        assert_eq!(
            HostVeth::parse("veth999999999i3"),
            Some((v(999_999_999), i(3)))
        );
        for bad in [
            "vi100",
            "veth100",
            "veth100i",
            "veth99i0",
            "veth100ix",
            "veth0100i0",
            "veth100i0p",
            "veth100i32",
            "veth100i01",
            "veth100i100",
            "veth999999999i31",
            "tap100i0",
            " veth100i0",
        ] {
            assert_eq!(HostVeth::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn parse_is_the_inverse_of_new() {
        for vmid in [100, 101, 9_999, 123_456_789, 999_999_999] {
            for n in 0..=31 {
                if let Ok(h) = HostVeth::new(v(vmid), i(n)) {
                    assert_eq!(HostVeth::parse(h.as_str()), Some((v(vmid), i(n))));
                }
            }
        }
    }

    #[test]
    fn firewall_names() {
        let f = FwNames::of(&HostVeth::new(v(100), i(2)).unwrap());
        assert_eq!(
            f,
            FwNames {
                fwbr: "fwbr100i2".into(),
                fwln: "fwln100i2".into(),
                fwpr: "fwpr100p2".into(),
                ovs_int: "fwln100o2".into(),
            }
        );
    }

    #[test]
    fn pve_device_name_space() {
        for yes in [
            "veth100i0",
            "veth5i1",
            "tap100i0",
            "fwbr102i0",
            "fwln100i3",
            "fwln100o3",
            "fwpr100p3",
            "veth1p2",
        ] {
            assert!(is_pve_device_name(yes), "{yes}");
        }
        for no in [
            "vi100",
            "vethx",
            "veth100",
            "veth100i",
            "tapi0",
            "eth0",
            "fwbr100x0",
            "veth1i2x",
        ] {
            assert!(!is_pve_device_name(no), "{no}");
        }
    }
}
