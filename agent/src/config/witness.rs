//! `[witness]` of agent.toml: where and how often the watch service publishes this node's
//! chain head for the other cluster nodes, and reads theirs (`crate::witness`).

use serde::{Deserialize, Deserializer};
use std::path::{Path, PathBuf};

/// Shortest `interval_s` accepted, in seconds.
pub const MIN_INTERVAL_S: f64 = 0.1;
/// Longest `interval_s` accepted, in seconds (one hour).
pub const MAX_INTERVAL_S: f64 = 3600.0;
/// Default `interval_s`, in seconds.
pub const DEFAULT_INTERVAL_S: f64 = 10.0;

/// `[witness]`: cluster witnesses of the audit chain through pmxcfs (`/etc/pve`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WitnessSection {
    /// `false`: the watch service neither publishes nor witnesses (default `true`).
    pub enabled: bool,
    /// This node's name in the head files; `None` (default): the PVE node name
    /// (`PVE::INotify::nodename`, [`crate::watch::conf::nodename`]). Checked by
    /// [`is_node_name`].
    #[serde(deserialize_with = "node_name")]
    pub node: Option<String>,
    /// The folder of the head files; `None` (default): `<pve root>/etc/pve/op-agent/heads`,
    /// used only while pmxcfs is mounted there (`crate::witness::service::pmxcfs_marker`).
    pub dir: Option<PathBuf>,
    /// Seconds between two publications of this node's head and between two reads of the
    /// peers' head files (default 10; from 0.1 to 3600, fractions allowed).
    #[serde(deserialize_with = "interval")]
    pub interval_s: f64,
}

impl Default for WitnessSection {
    fn default() -> Self {
        WitnessSection {
            enabled: true,
            node: None,
            dir: None,
            interval_s: DEFAULT_INTERVAL_S,
        }
    }
}

impl WitnessSection {
    /// [`WitnessSection::interval_s`] as a duration.
    pub fn interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.interval_s.clamp(MIN_INTERVAL_S, MAX_INTERVAL_S))
    }

    /// The head-file folder: [`WitnessSection::dir`] or `<pve_root>/etc/pve/op-agent/heads`.
    pub fn heads_dir(&self, pve_root: &Path) -> PathBuf {
        self.dir
            .clone()
            .unwrap_or_else(|| pve_root.join("etc/pve/op-agent/heads"))
    }
}

/// True for a PVE node name: letters, digits and `-`, neither first nor last `-`, as
/// pve-common `PVE::JSONSchema::pve_verify_node_name` checks it
/// (`^[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?$`), and at most 200 bytes (a file name).
pub fn is_node_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 200
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn node_name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v = String::deserialize(d)?;
    if is_node_name(&v) {
        Ok(Some(v))
    } else {
        Err(serde::de::Error::custom(format!(
            "node {v:?} is not a node name (letters, digits and `-`, not first or last)"
        )))
    }
}

fn interval<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let v = f64::deserialize(d)?;
    if v.is_finite() && (MIN_INTERVAL_S..=MAX_INTERVAL_S).contains(&v) {
        Ok(v)
    } else {
        Err(serde::de::Error::custom(format!(
            "interval_s must be from {MIN_INTERVAL_S} to {MAX_INTERVAL_S} seconds, not {v}"
        )))
    }
}
