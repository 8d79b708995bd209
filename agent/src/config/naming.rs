//! `naming`: whether op-agent renames a container's host veths (`rename`, the default) or
//! keeps PVE's `veth<vmid>i<n>` and adds its own name as an alternative name (`keep`).
//! A container TOML's `naming` wins over agent.toml's `[naming] mode`.

use serde::Deserialize;

/// How op-agent names a managed NIC's host link.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Naming {
    /// Rename `veth<vmid>i<n>` to `vi<vmid>`/`vi<vmid>i<n>` and plug op-agent's own Port
    /// (default).
    #[default]
    Rename,
    /// Keep PVE's name; add `vi<vmid>`/`vi<vmid>i<n>` as an alternative name
    /// (`IFLA_ALT_IFNAME`) and manage PVE's own Port row in place.
    Keep,
}

impl Naming {
    /// `rename` or `keep`.
    pub fn as_str(self) -> &'static str {
        match self {
            Naming::Rename => "rename",
            Naming::Keep => "keep",
        }
    }
}

/// `[naming]` of agent.toml.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct NamingSection {
    /// The mode of every container whose TOML sets no `naming` (default `rename`).
    pub mode: Naming,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_modes_and_refuses_others() {
        let s: NamingSection = toml::from_str("mode = \"keep\"").unwrap();
        assert_eq!(s.mode, Naming::Keep);
        let s: NamingSection = toml::from_str("").unwrap();
        assert_eq!(s.mode, Naming::Rename);
        assert!(toml::from_str::<NamingSection>("mode = \"both\"").is_err());
        assert!(toml::from_str::<NamingSection>("style = \"keep\"").is_err());
    }
}
