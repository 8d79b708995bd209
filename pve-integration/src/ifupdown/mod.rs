//! The host's `/etc/network/interfaces` as Proxmox VE's ifupdown2 reads it, and which running
//! bridge ports an `ifreload -a` removes.
//!
//! PVE applies the host's network configuration with `ifreload -a` (pve-manager
//! `PVE::API2::Network::reload_network_config`, SDN apply, `systemctl reload networking`).
//! ifupdown2 then brings every `auto` interface up again, and a bridge's up step removes every
//! running port that its stanza does not list, unless the bridge's condone regex matches it:
//!
//! - OVS bridge (`ovs_type OVSBridge` with `ovs_ports`): `addons/openvswitch.py`
//!   `openvswitch._addbridge` computes `set(running_ovs_ports) - set(ovs_ports)` and runs
//!   `ovs-vsctl -- --if-exists del-port <br> <port>` for each port that
//!   `_get_ovs_port_condone_regex(ifaceobj).match(port)` does not condone.
//! - Linux bridge (`bridge-ports`, or `bridge-vlan-aware`: `bridge._is_bridge`):
//!   `addons/bridge.py` `bridge._add_ports` un-enslaves (`link_set_nomaster`) each running
//!   port not in the list and not matched by `_get_bridge_port_condone_regex`, sets it down
//!   when it has no stanza of its own, and re-enables its IPv6.
//!
//! Proxmox's patches give the condone regexes defaults: `^(tap|veth|fwln)` for OVS
//! (`0006-openvswitch-ovs-ports-condone-regex-exclude-tap-veth.patch`) and `^(tap|veth|fwpr)`
//! for Linux bridges (`0001-don-t-remove-tap-veth-fwpr-interfaces-from-bridge-on.patch`); the
//! attribute, when the stanza sets it, replaces the default. op-agent's `vi<vmid>` names match
//! neither default.
//!
//! [`parse`] reads the file (parser: `ifupdown/networkinterfaces.py`), [`Stanza::bridge`] says
//! which bridge a stanza configures and [`Condone`] decides a port name.

use std::fmt;
use std::path::PathBuf;

mod parse;
#[cfg(test)]
mod tests;

pub use parse::{parse, read, FsLoader, Loader, ParseError};

/// Proxmox's default `ovs-ports-condone-regex` (patch 0006, `openvswitch._modinfo`).
pub const PVE_OVS_CONDONE_DEFAULT: &str = "^(tap|veth|fwln)";
/// Proxmox's default `bridge-ports-condone-regex` (patch 0001, `bridge._modinfo`).
pub const PVE_BRIDGE_CONDONE_DEFAULT: &str = "^(tap|veth|fwpr)";

/// Where a line is: the file as read (under the root) and its 1-based line number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    pub line: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// One option line of a stanza. The name is normalised as ifupdown2 does
/// (`networkInterfaces._add_to_iface_config`: `_` → `-`, so `ovs_ports` is `ovs-ports`); the
/// value is the rest of the line with `$IFACE` replaced by the stanza's name
/// (`networkInterfaces.parse_iface`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opt {
    pub name: String,
    pub value: String,
    pub line: usize,
}

/// One `iface <name> [<family> <method>]` stanza (`networkInterfaces.parse_iface`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stanza {
    /// The interface: the stanza's name up to a `:` (ifupdown2 drops `:<alias>`).
    pub name: String,
    /// `inet` / `inet6`, when given.
    pub family: Option<String>,
    /// `static`, `manual`, …, when given.
    pub method: Option<String>,
    /// The `iface` line.
    pub at: Location,
    /// Whether an `auto` / `allow-auto` line naming it (or `auto all`) came before the stanza:
    /// ifupdown2 sets `ifaceobj.auto` while parsing, so `ifreload -a` takes it
    /// (`ifupdownMain._iface_whitelisted`).
    pub auto: bool,
    /// Options in file order.
    pub options: Vec<Opt>,
}

impl Stanza {
    /// The first value of option `name` (normalised: `ovs-ports`), as ifupdown2's
    /// `iface.get_attr_value_first`.
    pub fn first(&self, name: &str) -> Option<&Opt> {
        self.options.iter().find(|o| o.name == name)
    }

    /// Every value of option `name`, in file order (`iface.get_attr_value`).
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Opt> + 'a {
        self.options.iter().filter(move |o| o.name == name)
    }

    /// The bridge this stanza configures in a way that removes unlisted ports on `ifreload`,
    /// or `None`.
    pub fn bridge(&self) -> Option<BridgeStanza<'_>> {
        if self.first("ovs-type").map(|o| o.value.as_str()) == Some("OVSBridge") {
            // openvswitch._get_ovs_ports: None unless some port is listed.
            let ports = port_list(self.all("ovs-ports"), false);
            if ports.names.is_empty() && ports.unsupported.is_none() {
                return None;
            }
            return Some(BridgeStanza {
                stanza: self,
                kind: BridgeKind::Ovs,
                ports,
                condone: Condone::of(self, BridgeKind::Ovs),
            });
        }
        // bridge._is_bridge: `bridge-ports` (also `none`) or `bridge-vlan-aware`.
        if self.first("bridge-ports").is_some() || self.first("bridge-vlan-aware").is_some() {
            return Some(BridgeStanza {
                stanza: self,
                kind: BridgeKind::Linux,
                ports: port_list(self.all("bridge-ports"), true),
                condone: Condone::of(self, BridgeKind::Linux),
            });
        }
        None
    }
}

/// The kind of bridge a [`BridgeStanza`] configures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BridgeKind {
    /// Open vSwitch (`ovs_type OVSBridge`, ports in `ovs_ports`).
    Ovs,
    /// Linux bridge (ports in `bridge-ports`).
    Linux,
}

impl BridgeKind {
    /// The port list option as PVE writes it.
    pub fn ports_option(self) -> &'static str {
        match self {
            BridgeKind::Ovs => "ovs_ports",
            BridgeKind::Linux => "bridge-ports",
        }
    }

    /// The condone option's (normalised) name.
    pub fn condone_option(self) -> &'static str {
        match self {
            BridgeKind::Ovs => "ovs-ports-condone-regex",
            BridgeKind::Linux => "bridge-ports-condone-regex",
        }
    }

    /// Proxmox's default condone regex.
    pub fn pve_default(self) -> &'static str {
        match self {
            BridgeKind::Ovs => PVE_OVS_CONDONE_DEFAULT,
            BridgeKind::Linux => PVE_BRIDGE_CONDONE_DEFAULT,
        }
    }
}

impl fmt::Display for BridgeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BridgeKind::Ovs => "OVS bridge",
            BridgeKind::Linux => "Linux bridge",
        })
    }
}

/// The ports a stanza lists (`moduleBase.parse_port_list`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PortList {
    /// Plain names, in order.
    pub names: Vec<String>,
    /// The first `glob` / `regex` expression, which ifupdown2 expands against the system's
    /// interfaces and this module does not: the list is then not exact.
    pub unsupported: Option<String>,
}

fn port_list<'a>(opts: impl Iterator<Item = &'a Opt>, linux: bool) -> PortList {
    let mut list = PortList::default();
    let mut expand = false;
    for word in opts.flat_map(|o| o.value.split_whitespace()) {
        match word {
            // lib/addon.py Addon._get_ifaceobj_bridge_ports drops `none`.
            "none" if linux => {}
            "glob" | "regex" => expand = true,
            "noglob" | "noregex" => expand = false,
            w if expand => {
                list.unsupported.get_or_insert_with(|| w.to_string());
                expand = false;
            }
            w => list.names.push(w.to_string()),
        }
    }
    list
}

/// A stanza that configures a bridge with a port list: what `ifreload` compares the running
/// ports with.
#[derive(Debug, Clone)]
pub struct BridgeStanza<'a> {
    pub stanza: &'a Stanza,
    pub kind: BridgeKind,
    pub ports: PortList,
    pub condone: Condone,
}

impl BridgeStanza<'_> {
    /// Whether `ifreload` removes the running port `port`: it is not listed and the condone
    /// regex does not match it (`openvswitch._addbridge`, `bridge._add_ports`).
    ///
    /// # Errors
    /// The condone regex could not be compiled ([`Condone::matches`]).
    pub fn removes(&self, port: &str) -> Result<bool, regex::Error> {
        if self.ports.names.iter().any(|p| p == port) {
            return Ok(false);
        }
        Ok(!self.condone.matches(port)?)
    }
}

/// The effective condone regex of a bridge stanza: the stanza's
/// `ovs-ports-condone-regex` / `bridge-ports-condone-regex` (first value), else Proxmox's
/// default (`openvswitch._get_ovs_port_condone_regex`,
/// `bridge._get_bridge_port_condone_regex` with Proxmox's patches).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condone {
    /// The pattern.
    pub pattern: String,
    /// The option line that set it; `None` for Proxmox's default.
    pub set_at: Option<usize>,
}

impl Condone {
    fn of(stanza: &Stanza, kind: BridgeKind) -> Condone {
        match stanza.first(kind.condone_option()) {
            Some(o) if !o.value.is_empty() => Condone {
                pattern: o.value.clone(),
                set_at: Some(o.line),
            },
            _ => Condone {
                pattern: kind.pve_default().to_string(),
                set_at: None,
            },
        }
    }

    /// Whether the pattern condones `port`, with Python's `re.match` semantics (ifupdown2
    /// calls `re.compile(pattern).match(port)`): a match must start at the first character;
    /// it need not reach the end. With the `regex` crate's leftmost-first search, "the
    /// leftmost match starts at 0" is exactly "some match starts at 0".
    ///
    /// Syntax: the `regex` crate accepts Python's usual syntax for such patterns (classes,
    /// groups, `(?:…)`, `(?i)`, anchors, repetitions); it rejects look-around and
    /// back-references, which Python accepts: then this is an error, and the caller cannot
    /// decide.
    ///
    /// # Errors
    /// The pattern does not compile with the `regex` crate.
    pub fn matches(&self, port: &str) -> Result<bool, regex::Error> {
        let re = regex::Regex::new(&self.pattern)?;
        Ok(re.find(port).is_some_and(|m| m.start() == 0))
    }

    /// A condone regex that keeps what this one keeps and also every name in `names`: the
    /// Proxmox default with `vi` (and each other name, anchored) added to its alternatives,
    /// e.g. `^(tap|veth|fwln|vi)`, or for a pattern the stanza set, `<pattern>|^(vi)`.
    /// `None` when that pattern would still miss one of `names` (checked with
    /// [`Condone::matches`]).
    pub fn widened(&self, names: &[&str]) -> Option<String> {
        let mut alts: Vec<String> = Vec::new();
        for n in names {
            let alt = if n.starts_with("vi") {
                "vi".to_string()
            } else {
                format!("{}$", regex::escape(n))
            };
            if !alts.contains(&alt) {
                alts.push(alt);
            }
        }
        alts.sort_by_key(|a| a != "vi");
        let alts = alts.join("|");
        let pattern = match self
            .pattern
            .strip_prefix("^(")
            .and_then(|p| p.strip_suffix(')'))
        {
            Some(inner) if self.set_at.is_none() => format!("^({inner}|{alts})"),
            _ => format!("{}|^({alts})", self.pattern),
        };
        let widened = Condone {
            pattern,
            set_at: None,
        };
        names
            .iter()
            .all(|n| widened.matches(n).unwrap_or(false))
            .then_some(widened.pattern)
    }
}

/// A problem ifupdown2 would also log while reading (a line it cannot process, a missing
/// `source` file): reading goes on, as ifupdown2's does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub at: Location,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

/// The parsed configuration: every stanza of the file and of what it sources, in reading
/// order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Interfaces {
    pub stanzas: Vec<Stanza>,
    pub diagnostics: Vec<Diagnostic>,
}

impl Interfaces {
    /// The stanzas that configure bridge `name` with a port list.
    pub fn bridge_stanzas<'a>(&'a self, name: &'a str) -> impl Iterator<Item = BridgeStanza<'a>> {
        self.stanzas
            .iter()
            .filter(move |s| s.name == name)
            .filter_map(Stanza::bridge)
    }

    /// Whether some stanza configures interface `name` (`ifaceobj_getfunc(name)` in
    /// `bridge._add_ports`).
    pub fn has_stanza(&self, name: &str) -> bool {
        self.stanzas.iter().any(|s| s.name == name)
    }

    /// Whether `ifreload -a` brings `name` up: one of its stanzas is `auto`
    /// (`ifupdownMain._iface_whitelisted`).
    pub fn is_auto(&self, name: &str) -> bool {
        self.stanzas.iter().any(|s| s.name == name && s.auto)
    }
}
