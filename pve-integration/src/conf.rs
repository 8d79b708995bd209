//! Parser for `/etc/pve/lxc/<vmid>.conf`, mirroring pve-container `src/PVE/LXC/Config.pm`
//! `parse_pct_config` and, for `netN` values, pve-common `src/PVE/JSONSchema.pm`
//! `parse_property_string` against the `pve-lxc-network` format (`$netconf_desc`).
//!
//! Differences from PVE, on purpose: PVE's non-strict mode only warns about a bad line and
//! drops it; here every bad line is an error, because the agent must not act on a half-read
//! file. A `netN` without `hwaddr` stays `None` (PVE invents a random MAC on every parse).

use std::collections::BTreeMap;
use std::io::BufRead;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;

use crate::ids::{NetIndex, Vmid};
use crate::paths;

/// One `netN` entry of the current configuration, as `parse_lxc_network` returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConf {
    /// `N` of `netN`.
    pub index: NetIndex,
    /// `name=`: interface name inside the container (required, `[-_.\w\d]+`).
    pub name: String,
    /// `bridge=`: Linux bridge, OVS bridge or SDN vnet on the host.
    pub bridge: Option<String>,
    /// `hwaddr=`: unicast MAC `xx:xx:xx:xx:xx:xx` as written (case kept).
    pub hwaddr: Option<String>,
    /// `tag=`: VLAN id 1..=4094.
    pub tag: Option<u16>,
    /// `trunks=a;b;c`: VLAN ids (0..=4095), in file order; empty when absent.
    pub trunks: Vec<u16>,
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
    /// `rate=`: limit in MB/s (a non-negative number, kept as written).
    pub rate: Option<String>,
    /// `host-managed=`: boolean, false when absent.
    pub host_managed: bool,
}

/// A parsed container configuration.
///
/// Only the main (current) section fills [`PveConf::nets`] and [`PveConf::hookscript`];
/// the `[pve:pending]` section goes to [`PveConf::pending`] and `[snapname]` sections are
/// only named in [`PveConf::snapshots`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PveConf {
    /// `hookscript:` volume id as written, e.g. `local:snippets/op-hook`
    /// (resolve it with [`paths::resolve_volume`]).
    pub hookscript: Option<String>,
    /// `netN` entries of the main section, keyed by `N`.
    pub nets: BTreeMap<u8, NetConf>,
    /// Every other `key: value` of the main section, value trimmed and unchecked.
    pub options: BTreeMap<String, String>,
    /// Raw `lxc.*` keys of the main section in file order (`key`, `value`).
    pub lxc: Vec<(String, String)>,
    /// Main-section description: `#` lines (percent-decoded) and `description:`, `\n`-joined.
    pub description: String,
    /// `[pve:pending]` keys (including `delete`), raw values.
    pub pending: BTreeMap<String, String>,
    /// Names of the `[snapname]` sections, in file order.
    pub snapshots: Vec<String>,
}

/// What is wrong with a configuration, without the location (see [`ConfError`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfErrorKind {
    /// The file could not be read (I/O error text from the OS).
    #[error("cannot read: {0}")]
    Io(String),
    /// The line is not UTF-8.
    #[error("line is not valid UTF-8")]
    NotUtf8,
    /// The line matches none of `parse_pct_config`'s patterns.
    #[error("unable to parse config line")]
    Syntax,
    /// The same key appears twice in one section.
    #[error("duplicate key")]
    DuplicateKey,
    /// `delete:` outside `[pve:pending]`.
    #[error("property 'delete' is only allowed in [pve:pending]")]
    DeleteOutsidePending,
    /// `netN` with `N` > 31.
    #[error("network index out of range 0..=31")]
    NetIndexRange,
    /// A property-string key not in `pve-lxc-network`.
    #[error("invalid key in comma-separated list property")]
    UnknownProperty,
    /// A property-string key given twice.
    #[error("duplicate key in comma-separated list property")]
    DuplicateProperty,
    /// A property-string part without `key=`.
    #[error("missing key in comma-separated list property")]
    MissingPropertyKey,
    /// `netN` without `name=`.
    #[error("property is missing and it is not optional")]
    MissingName,
    /// A value that fails its type or format check.
    #[error("invalid value '{value}': expected {expected}")]
    InvalidValue {
        /// The offending value, control characters escaped.
        value: String,
        /// What the format requires.
        expected: &'static str,
    },
}

/// A configuration error with its place: displays as `<source>:<line>: <what> (<key>)` on
/// one line (`line` is 1-based; 0 for errors about the whole file).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {kind} ({key})")]
pub struct ConfError {
    /// The source name given to [`parse_conf`] (usually the path).
    pub file: String,
    /// 1-based line number, 0 for the whole file.
    pub line: usize,
    /// The key involved, e.g. `net0`, `net0.tag`, `hookscript`, or `line` for syntax errors.
    pub key: String,
    /// What is wrong.
    pub kind: ConfErrorKind,
}

fn invalid(value: &str, expected: &'static str) -> ConfErrorKind {
    ConfErrorKind::InvalidValue {
        value: value.escape_debug().to_string(),
        expected,
    }
}

/// Which section of the file a line belongs to.
enum Section {
    Main,
    Pending,
    Snapshot,
}

/// Parses a container configuration from `reader`; `source` names it in errors.
///
/// Grammar (pve-container `parse_pct_config`): blank lines are skipped; `#text` lines add to
/// the description; `[pve:pending]` and `[snapname]` start sections; raw keys match
/// `^(lxc\.[a-z0-9_\-\.]+)(:|\s*=)\s*(.*?)\s*$`; other keys match `^([a-z][a-z_]*\d*):\s*(.+?)\s*$`.
/// `netN` values are checked as [`NetConf`] says; `hookscript` must be `<storage>:<volname>`.
///
/// # Errors
/// The first problem found, as a [`ConfError`]. Never panics, whatever the input.
///
/// # Example
/// ```
/// let text = "hookscript: local:snippets/op-hook\nnet0: name=eth0,bridge=ovsbr0,tag=10,type=veth\n";
/// let conf = pve_integration::parse_conf(text.as_bytes(), "100.conf").unwrap();
/// assert_eq!(conf.nets[&0].tag, Some(10));
/// ```
pub fn parse_conf<R: BufRead>(mut reader: R, source: &str) -> Result<PveConf, ConfError> {
    let mut conf = PveConf::default();
    let mut section = Section::Main;
    let mut seen_main: BTreeMap<String, ()> = BTreeMap::new();
    let mut buf = Vec::new();
    let mut lineno = 0usize;
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf).map_err(|e| ConfError {
            file: source.to_string(),
            line: lineno + 1,
            key: "file".to_string(),
            kind: ConfErrorKind::Io(e.to_string()),
        })?;
        if n == 0 {
            break;
        }
        lineno += 1;
        let err = |key: &str, kind: ConfErrorKind| ConfError {
            file: source.to_string(),
            line: lineno,
            key: key.escape_debug().to_string(),
            kind,
        };
        let raw = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let line = std::str::from_utf8(raw).map_err(|_| err("line", ConfErrorKind::NotUtf8))?;
        if line.trim().is_empty() {
            continue;
        }
        if let Some(name) = section_header(line) {
            if name.eq_ignore_ascii_case("pve:pending") {
                section = Section::Pending;
            } else {
                section = Section::Snapshot;
                conf.snapshots.push(name.to_string());
            }
            continue;
        }
        if let Some(text) = line.strip_prefix('#') {
            if matches!(section, Section::Main) {
                conf.description.push_str(&decode_text(text));
                conf.description.push('\n');
            }
            continue;
        }
        if let Some((key, value)) = raw_lxc_key(line) {
            if matches!(section, Section::Main) {
                conf.lxc.push((key.to_string(), value.to_string()));
            }
            continue;
        }
        let Some((key, value)) = key_value(line) else {
            return Err(err("line", ConfErrorKind::Syntax));
        };
        match section {
            Section::Snapshot => {}
            Section::Pending => {
                if conf
                    .pending
                    .insert(key.to_string(), value.to_string())
                    .is_some()
                {
                    return Err(err(key, ConfErrorKind::DuplicateKey));
                }
            }
            Section::Main => {
                if seen_main.insert(key.to_string(), ()).is_some() {
                    return Err(err(key, ConfErrorKind::DuplicateKey));
                }
                if key == "delete" {
                    return Err(err(key, ConfErrorKind::DeleteOutsidePending));
                }
                if key == "description" {
                    conf.description.push_str(&decode_text(value));
                    continue;
                }
                if key == "hookscript" {
                    if !is_volume_id(value) {
                        return Err(err(key, invalid(value, "<storage>:<volume>")));
                    }
                    conf.hookscript = Some(value.to_string());
                    continue;
                }
                if let Some(digits) = key.strip_prefix("net") {
                    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                        let index = digits
                            .parse::<u8>()
                            .ok()
                            .and_then(NetIndex::new)
                            .ok_or_else(|| err(key, ConfErrorKind::NetIndexRange))?;
                        let net = parse_net(index, value).map_err(|(prop, kind)| {
                            err(
                                &format!(
                                    "{key}{}",
                                    prop.map(|p| format!(".{p}")).unwrap_or_default()
                                ),
                                kind,
                            )
                        })?;
                        conf.nets.insert(index.get(), net);
                        continue;
                    }
                }
                conf.options.insert(key.to_string(), value.to_string());
            }
        }
    }
    Ok(conf)
}

/// Reads `<root>/etc/pve/lxc/<vmid>.conf` ([`paths::lxc_conf_path`]) with [`parse_conf`].
///
/// # Errors
/// `Ok(None)` when the file does not exist; a [`ConfError`] (line 0, key `file`) for any
/// other I/O error, or the parse error.
pub fn read_conf(root: &Path, vmid: Vmid) -> Result<Option<PveConf>, ConfError> {
    let path = paths::lxc_conf_path(root, vmid);
    let name = path.display().to_string();
    match std::fs::File::open(&path) {
        Ok(f) => parse_conf(std::io::BufReader::new(f), &name).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ConfError {
            file: name,
            line: 0,
            key: "file".to_string(),
            kind: ConfErrorKind::Io(e.to_string()),
        }),
    }
}

/// `^\[pve:pending\]\s*$` (case-insensitive) or `^\[([a-z][a-z0-9_\-]+)\]\s*$`.
fn section_header(line: &str) -> Option<&str> {
    let rest = line.strip_prefix('[')?;
    let (name, tail) = rest.split_once(']')?;
    if !tail.trim().is_empty() {
        return None;
    }
    if name.eq_ignore_ascii_case("pve:pending") {
        return Some(name);
    }
    let b = name.as_bytes();
    let ok = b.len() >= 2
        && b[0].is_ascii_alphabetic()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'-');
    ok.then_some(name)
}

/// `^(lxc\.[a-z0-9_\-\.]+)(:|\s*=)\s*(.*?)\s*$`.
fn raw_lxc_key(line: &str) -> Option<(&str, &str)> {
    if !line.starts_with("lxc.") {
        return None;
    }
    let end = line
        .bytes()
        .position(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || b"_-.".contains(&c)))?;
    let key = &line[..end];
    if key.len() <= 4 {
        return None;
    }
    let rest = &line[end..];
    let rest = if let Some(r) = rest.strip_prefix(':') {
        r
    } else {
        rest.trim_start().strip_prefix('=')?
    };
    Some((key, rest.trim()))
}

/// `^([a-z][a-z_]*\d*):\s*(.+?)\s*$`.
fn key_value(line: &str) -> Option<(&str, &str)> {
    let (key, value) = line.split_once(':')?;
    let b = key.as_bytes();
    let letters = b
        .iter()
        .position(|c| !(c.is_ascii_lowercase() || *c == b'_'))
        .unwrap_or(b.len());
    let ok =
        !b.is_empty() && b[0].is_ascii_lowercase() && b[letters..].iter().all(u8::is_ascii_digit);
    let value = value.trim();
    (ok && !value.is_empty()).then_some((key, value))
}

/// pve-common `PVE::Tools::decode_text`: `%XX` → byte, then UTF-8 (lossy).
fn decode_text(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(v) = hex {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `pve-volume-id`: `^(?i:[a-z][a-z0-9\-\_\.]*[a-z0-9]):(.+)$`.
fn is_volume_id(s: &str) -> bool {
    let Some((storage, vol)) = s.split_once(':') else {
        return false;
    };
    let b = storage.as_bytes();
    b.len() >= 2
        && b[0].is_ascii_alphabetic()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c))
        && !vol.is_empty()
}

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

/// pve-common `pve_verify_mac_addr`: six hex pairs, I/G bit (bit 0 of the first byte) clear.
fn is_unicast_mac(v: &str) -> bool {
    let parts: Vec<&str> = v.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|c| c.is_ascii_hexdigit()))
        && u8::from_str_radix(parts[0], 16).is_ok_and(|b| b & 1 == 0)
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

type PropError = (Option<String>, ConfErrorKind);

/// Parses a `pve-lxc-network` property string (pve-common `parse_property_string`).
fn parse_net(index: NetIndex, value: &str) -> Result<NetConf, PropError> {
    let mut net = NetConf {
        index,
        name: String::new(),
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
    };
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
                net.bridge = Some(v.to_string());
            }
            "hwaddr" => {
                if !is_unicast_mac(v) {
                    return Err(bad("a unicast MAC address xx:xx:xx:xx:xx:xx"));
                }
                net.hwaddr = Some(v.to_string());
            }
            "tag" => {
                let t = parse_uint(v, 1, 4094).ok_or_else(|| bad("an integer 1..4094"))?;
                net.tag = Some(t as u16);
            }
            "trunks" => {
                let mut ts = Vec::new();
                for t in v.split(';') {
                    let n = parse_uint(t, 0, 4095)
                        .ok_or_else(|| bad("VLAN ids 0..4095 separated by ';'"))?;
                    ts.push(n as u16);
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
    use super::*;

    const REAL: &str = "\
#Web server%0Asecond line
arch: amd64
cores: 2
features: nesting=1
hookscript: local:snippets/op-hook
hostname: web1
memory: 512
net0: name=eth0,bridge=ovsbr0,firewall=1,hwaddr=BC:24:11:5E:2A:01,ip=10.0.10.5/24,gw=10.0.10.1,tag=10,type=veth
net1: name=eth1,bridge=vmbr1,hwaddr=BC:24:11:5E:2A:02,ip6=auto,mtu=1400,trunks=20;30;40,tag=5,type=veth,link_down=ON,rate=12.5,host-managed=yes
ostype: debian
parent: before-upgrade
rootfs: local-lvm:vm-100-disk-0,size=8G
swap: 512
unprivileged: 1
lxc.apparmor.profile: unconfined
lxc.net.0.mtu = 9000
lxc.cgroup2.devices.allow: c 10:200 rwm

[pve:pending]
net0: name=eth0,bridge=ovsbr1,tag=20,type=veth
delete: net1

[before-upgrade]
#snapshot description
arch: amd64
hookscript: local:snippets/old-hook
net0: name=eth0,bridge=vmbr0,type=veth
snaptime: 1700000000
lxc.net.0.mtu = 1000
";

    fn parse(s: &str) -> Result<PveConf, ConfError> {
        parse_conf(s.as_bytes(), "100.conf")
    }

    fn err(s: &str) -> String {
        parse(s).unwrap_err().to_string()
    }

    #[test]
    fn parses_real_conf_with_pending_and_snapshot() {
        let c = parse(REAL).unwrap();
        assert_eq!(c.hookscript.as_deref(), Some("local:snippets/op-hook"));
        assert_eq!(c.description, "Web server\nsecond line\n");
        assert_eq!(c.nets.len(), 2);
        let n0 = &c.nets[&0];
        assert_eq!(n0.name, "eth0");
        assert_eq!(n0.bridge.as_deref(), Some("ovsbr0"));
        assert_eq!(n0.hwaddr.as_deref(), Some("BC:24:11:5E:2A:01"));
        assert_eq!(n0.tag, Some(10));
        assert!(n0.firewall && !n0.link_down && !n0.host_managed);
        assert_eq!(n0.ip.as_deref(), Some("10.0.10.5/24"));
        assert_eq!(n0.gw.as_deref(), Some("10.0.10.1"));
        let n1 = &c.nets[&1];
        assert_eq!(n1.trunks, vec![20, 30, 40]);
        assert_eq!(n1.mtu, Some(1400));
        assert!(n1.link_down && n1.host_managed);
        assert_eq!(n1.rate.as_deref(), Some("12.5"));
        assert_eq!(n1.ip6.as_deref(), Some("auto"));
        assert_eq!(c.options["rootfs"], "local-lvm:vm-100-disk-0,size=8G");
        assert_eq!(c.options["parent"], "before-upgrade");
        assert!(!c.options.contains_key("net0"));
        assert_eq!(
            c.lxc,
            vec![
                ("lxc.apparmor.profile".into(), "unconfined".into()),
                ("lxc.net.0.mtu".into(), "9000".into()),
                ("lxc.cgroup2.devices.allow".into(), "c 10:200 rwm".into()),
            ]
        );
        assert_eq!(
            c.pending["net0"],
            "name=eth0,bridge=ovsbr1,tag=20,type=veth"
        );
        assert_eq!(c.pending["delete"], "net1");
        assert_eq!(c.snapshots, vec!["before-upgrade".to_string()]);
    }

    #[test]
    fn minimal_and_empty() {
        let c = parse("").unwrap();
        assert!(c.nets.is_empty() && c.hookscript.is_none());
        let c = parse("net31: name=x,type=veth\r\n\n   \n").unwrap();
        assert_eq!(c.nets[&31].name, "x");
        assert_eq!(c.nets[&31].bridge, None);
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
        let ok = parse("net0: name=e,ip=dhcp,ip6=2001:db8::5/64,gw6=2001:db8::1,mtu=64,tag=4094,trunks=0;4095\n")
            .unwrap();
        assert_eq!(ok.nets[&0].trunks, vec![0, 4095]);
    }

    #[test]
    fn file_level_errors() {
        assert_eq!(
            err("net32: name=e\n"),
            "100.conf:1: network index out of range 0..=31 (net32)"
        );
        assert_eq!(
            err("net0: name=a\nnet0: name=b\n"),
            "100.conf:2: duplicate key (net0)"
        );
        assert!(err("delete: net0\n").contains("only allowed in [pve:pending]"));
        assert_eq!(
            err("Net0: name=e\n"),
            "100.conf:1: unable to parse config line (line)"
        );
        assert!(err("this is not a conf\n").contains("unable to parse"));
        assert!(err("memory:\n").contains("unable to parse"));
        assert!(err("hookscript: op-hook\n").contains("(hookscript)"));
        assert!(err("hookscript: 1local:snippets/x\n").contains("(hookscript)"));
        let e = parse_conf(&b"memory: 512\n\xff\xfe: 1\n"[..], "x").unwrap_err();
        assert_eq!(e.to_string(), "x:2: line is not valid UTF-8 (line)");
    }

    #[test]
    fn sections_keep_main_apart() {
        let c = parse("[snap1]\nnet0: name=eth0,bridge=vmbr9,bogus=1\n").unwrap();
        assert!(c.nets.is_empty());
        assert_eq!(c.snapshots, vec!["snap1"]);
        let c = parse("[PVE:PENDING]\nhookscript: local:snippets/x\n").unwrap();
        assert!(c.hookscript.is_none());
        assert_eq!(c.pending["hookscript"], "local:snippets/x");
        assert!(err("[pve:pending]\nmemory: 1\nmemory: 2\n").contains("duplicate key"));
        assert!(
            parse("[a]\n").is_err(),
            "one-letter snapshot names do not match PVE's regex"
        );
        assert!(parse("[snap]x\n").is_err());
    }

    #[test]
    fn error_message_is_one_line_even_for_control_chars() {
        let e = err("net0: name=e,tag=1\r2\n");
        assert!(!e.contains('\r') && !e.contains('\n'), "{e:?}");
    }

    #[test]
    fn never_panics_on_garbage() {
        // A cheap deterministic fuzz: every prefix and byte-mutation of a real conf.
        let base = REAL.as_bytes();
        for i in 0..base.len() {
            let _ = parse_conf(&base[..i], "p");
            let mut m = base.to_vec();
            m[i] = m[i].wrapping_add(0x5a);
            let _ = parse_conf(&m[..], "m");
        }
        for s in [
            "%",
            "#%",
            "#%4",
            "#%zz",
            "description: %e2%82",
            "lxc.",
            "lxc.a",
            "lxc.a =",
            "[",
            "[]",
            "]",
        ] {
            let _ = parse(s);
        }
    }
}
