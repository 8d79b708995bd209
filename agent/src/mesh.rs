//! Netmaker (host-mesh) mode: confirm that the host's mesh interface is usable. The host joins
//! the mesh once; containers reach it through the host, so op-agent only confirms and records.

use crate::config::MeshSection;
use crate::netlink::Netlink;
use std::net::IpAddr;

/// The observed mesh interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshState {
    /// Interface name.
    pub interface: String,
    /// IFLA_INFO_KIND.
    pub kind: Option<String>,
    /// Addresses as `addr/prefix`.
    pub addresses: Vec<String>,
}

/// Parses `a.b.c.d/len` or an IPv6 CIDR.
fn parse_cidr(cidr: &str) -> Option<(IpAddr, u8)> {
    let (a, l) = cidr.split_once('/')?;
    let ip: IpAddr = a.trim().parse().ok()?;
    let len: u8 = l.trim().parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some((ip, len))
}

fn in_cidr(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mask = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len))
            };
            (u32::from(a) & mask) == (u32::from(b) & mask)
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len))
            };
            (u128::from(a) & mask) == (u128::from(b) & mask)
        }
        _ => false,
    }
}

/// Checks the mesh interface of `cfg`: it exists, is up, is of `cfg.kind` (unless `any`) and
/// carries at least one address (inside `cfg.cidr` when set). The error is one line naming the
/// interface and what is missing.
pub async fn confirm(nl: &Netlink, cfg: &MeshSection) -> Result<MeshState, String> {
    let name = &cfg.interface;
    let link = nl
        .link_by_name(name)
        .await
        .map_err(|e| format!("mesh interface {name}: {e}"))?
        .ok_or_else(|| format!("mesh interface {name} does not exist"))?;
    if cfg.kind != "any" && link.kind.as_deref() != Some(cfg.kind.as_str()) {
        return Err(format!(
            "mesh interface {name} is of kind {}, not {}",
            link.kind.as_deref().unwrap_or("none"),
            cfg.kind
        ));
    }
    if !link.up {
        return Err(format!("mesh interface {name} is down"));
    }
    let addrs = nl
        .addresses(&link)
        .await
        .map_err(|e| format!("mesh interface {name}: {e}"))?;
    let wanted = match &cfg.cidr {
        Some(c) => Some(parse_cidr(c).ok_or_else(|| format!("[mesh] cidr {c:?} is not a CIDR"))?),
        None => None,
    };
    let usable: Vec<String> = addrs
        .iter()
        .filter(|(ip, _)| wanted.is_none_or(|(n, l)| in_cidr(*ip, n, l)))
        .map(|(ip, l)| format!("{ip}/{l}"))
        .collect();
    if usable.is_empty() {
        return Err(match &cfg.cidr {
            Some(c) => format!("mesh interface {name} has no address in {c}"),
            None => format!("mesh interface {name} has no address"),
        });
    }
    Ok(MeshState {
        interface: name.clone(),
        kind: link.kind,
        addresses: usable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_membership() {
        let (n, l) = parse_cidr("10.101.0.0/16").unwrap();
        assert!(in_cidr("10.101.3.4".parse().unwrap(), n, l));
        assert!(!in_cidr("10.102.3.4".parse().unwrap(), n, l));
        assert!(parse_cidr("10.0.0.0/33").is_none());
        let (n, l) = parse_cidr("fd00::/8").unwrap();
        assert!(in_cidr("fd12::1".parse().unwrap(), n, l));
    }
}
