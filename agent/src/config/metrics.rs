//! `[metrics]` of agent.toml: the Prometheus textfile the watch service keeps.

use serde::{Deserialize, Deserializer};
use std::path::PathBuf;

/// Shortest `interval_s` accepted, in seconds.
pub const MIN_INTERVAL_S: f64 = 0.1;
/// Longest `interval_s` accepted, in seconds (one day).
pub const MAX_INTERVAL_S: f64 = 86_400.0;

/// `[metrics]`: the file `op-agent watch` writes `op-agent metrics`' text to, for
/// node_exporter's textfile collector (`--collector.textfile.directory`, which reads the
/// `*.prom` files of one folder at each scrape).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// The file to write (e.g. `/var/lib/prometheus/node-exporter/op_agent.prom`); `None`
    /// (default): the watch service writes no file. Its folder must exist; the file is
    /// replaced by a rename of a temporary file in that folder, so a reader never sees a
    /// partial one.
    pub textfile: Option<PathBuf>,
    /// Seconds between two writes (default 15; from 0.1 to 86400, fractions allowed).
    #[serde(deserialize_with = "interval")]
    pub interval_s: f64,
}

impl Default for MetricsSection {
    fn default() -> Self {
        MetricsSection {
            textfile: None,
            interval_s: 15.0,
        }
    }
}

impl MetricsSection {
    /// [`MetricsSection::interval_s`] as a duration.
    pub fn interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.interval_s.clamp(MIN_INTERVAL_S, MAX_INTERVAL_S))
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
