//! Loading `agent.toml` and `containers/<vmid>.toml`.
//!
//! Every key is optional (defaults below, as in the product card). Unknown keys and wrong types
//! are errors that name the file, line and key: `/etc/op-agent/containers/100.toml:4: key `tagg`:
//! unknown field ...`. Files that are not owned by root (or the effective user) or that are
//! writable by group or others are refused: op-agent runs as root, so a world-writable TOML
//! would be a root exploit.

use pve_integration::{paths, Vmid};
use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};

mod metrics;
mod naming;
mod safe_read;
mod validate;
mod witness;
pub use metrics::MetricsSection;
pub use naming::{Naming, NamingSection};
pub use safe_read::{check_owner_mode, check_regular, read_checked, read_checked_bytes};
pub use validate::{validate, MAX_DEADLINE_MS, MIN_DEADLINE_MS, MIN_TIMEOUT_MS};
pub use witness::{is_node_name, WitnessSection};

/// Default location of the agent configuration.
pub const DEFAULT_AGENT_TOML: &str = "/etc/op-agent/agent.toml";
/// Environment variable that selects another agent.toml (overridden by `--config`).
pub const CONFIG_ENV: &str = "OP_AGENT_CONFIG";

/// A configuration error, displayed as one line: `<file>:<line>: <message>` (line omitted when
/// unknown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file the error is in.
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// What is wrong, naming the key.
    pub message: String,
    /// The input is well-formed but refused for safety (unsafe ownership or mode, firewall=1):
    /// exit code 77 instead of 78.
    pub refused: bool,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{}: {}", self.file.display(), l, self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    /// An error about `file` as a whole.
    pub fn file(file: &Path, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: file.to_path_buf(),
            line: None,
            message: message.into(),
            refused: false,
        }
    }

    /// An error at a 1-based `line` of `file`.
    pub fn at(file: &Path, line: usize, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: file.to_path_buf(),
            line: Some(line),
            message: message.into(),
            refused: false,
        }
    }

    /// The same error at a 1-based `line` (0: the whole file).
    pub fn at_line(mut self, line: usize) -> ConfigError {
        self.line = Some(line).filter(|l| *l > 0);
        self
    }

    /// The same error, marked as a refusal (see [`ConfigError::refused`]).
    pub fn refusal(mut self) -> ConfigError {
        self.refused = true;
        self
    }

    /// True when the input is refused for safety rather than invalid.
    pub fn is_permission(&self) -> bool {
        self.refused
    }

    /// `EX_NOPERM` (77) for a refusal, `EX_CONFIG` (78) otherwise.
    pub fn exit_code(&self) -> crate::exit::ExitCode {
        if self.refused {
            crate::exit::ExitCode::Refused
        } else {
            crate::exit::ExitCode::Config
        }
    }
}

/// `[ovsdb]`: where ovsdb-server listens and how long to wait for ovs-vswitchd.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OvsdbSection {
    /// Unix socket of ovsdb-server (default `/run/openvswitch/db.sock`).
    pub socket: PathBuf,
    /// Each wait for ovs-vswitchd (`cur_cfg >= next_cfg`) and each OVSDB call, in ms (default 5000).
    pub timeout_ms: u64,
}

impl Default for OvsdbSection {
    fn default() -> Self {
        OvsdbSection {
            socket: PathBuf::from("/run/openvswitch/db.sock"),
            timeout_ms: 5000,
        }
    }
}

/// `[hook]`: limits for a whole hook run.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HookSection {
    /// A whole hook run, in ms (default 10000). PVE waits forever on a hung hookscript.
    pub deadline_ms: u64,
}

impl Default for HookSection {
    fn default() -> Self {
        HookSection {
            deadline_ms: 10_000,
        }
    }
}

/// `[audit]`: the hash-chained audit log.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSection {
    /// SQLite database (default `/var/lib/op-agent/audit.db`; its directory is made 0700).
    pub database: PathBuf,
}

impl Default for AuditSection {
    fn default() -> Self {
        AuditSection {
            database: PathBuf::from("/var/lib/op-agent/audit.db"),
        }
    }
}

/// `[pve]`: where Proxmox's files are.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PveSection {
    /// Root under which `etc/pve`, `var/lib/vz` and `var/lib/lxc` are found (default `/`).
    pub root: PathBuf,
}

impl Default for PveSection {
    fn default() -> Self {
        PveSection {
            root: PathBuf::from("/"),
        }
    }
}

/// `[mesh]`: the host's netmaker (WireGuard) interface, for `network_type = "netmaker"`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MeshSection {
    /// Mesh interface name (default `netmaker`).
    pub interface: String,
    /// When set, the interface must carry an address inside this CIDR (e.g. `10.101.0.0/16`).
    pub cidr: Option<String>,
    /// Required link kind (default `wireguard`; `any` disables the check).
    pub kind: String,
}

impl Default for MeshSection {
    fn default() -> Self {
        MeshSection {
            interface: "netmaker".into(),
            cidr: None,
            kind: "wireguard".into(),
        }
    }
}

/// The parsed `agent.toml` with every section defaulted.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AgentToml {
    pub ovsdb: OvsdbSection,
    pub hook: HookSection,
    pub audit: AuditSection,
    pub pve: PveSection,
    pub mesh: MeshSection,
    pub metrics: MetricsSection,
    pub witness: WitnessSection,
    /// `[naming] mode`: the default of containers whose TOML sets no `naming`.
    pub naming: NamingSection,
}

/// The agent configuration plus where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    /// The agent.toml that was read (it may not exist: then every default applies).
    pub path: PathBuf,
    /// The folder holding agent.toml; `containers/` is beside it.
    pub dir: PathBuf,
    /// The values.
    pub toml: AgentToml,
}

/// `network_type` of a container TOML (the values the old op-dbus `state.json` used).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum NetworkType {
    /// Re-plug each NIC into its OVS bridge under the new name (default).
    #[default]
    Bridge,
    /// Confirm the host's mesh interface; rename the NIC but keep PVE's attachment.
    Netmaker,
}

impl NetworkType {
    /// `bridge` or `netmaker`.
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkType::Bridge => "bridge",
            NetworkType::Netmaker => "netmaker",
        }
    }
}

/// What to do with a NIC that has PVE's `firewall=1`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnFirewall {
    /// Abort pre-start with a message naming the NIC (default): renaming would disable pve-firewall.
    #[default]
    Refuse,
    /// Leave that NIC untouched (audit row `skipped`).
    Skip,
}

/// One `[[nic]]` table of a container TOML.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct NicToml {
    /// The PVE `netN` index, 0..=31.
    pub net: u8,
    /// OVS bridge (default: PVE's `bridge=`).
    pub bridge: Option<String>,
    /// Access VLAN tag 1..=4094 (default: PVE's `tag=`).
    pub tag: Option<u16>,
    /// Trunk VLANs (default: PVE's `trunks=`).
    pub trunks: Option<Vec<u16>>,
    /// Host link name (default `vi<vmid>` for net0, `vi<vmid>i<N>` otherwise).
    pub name: Option<String>,
    /// `false`: leave this NIC to PVE (not renamed, not re-plugged; audit row `skipped`).
    /// Default `true`.
    pub manage: Option<bool>,
}

/// The parsed `containers/<vmid>.toml`.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct ContainerToml {
    #[serde(default)]
    pub network_type: NetworkType,
    /// Netmaker mode: abort the start when the mesh is not up (default true in that mode).
    pub require_mesh: Option<bool>,
    #[serde(default)]
    pub on_firewall: OnFirewall,
    /// `rename` or `keep` (`None`: agent.toml's `[naming] mode`).
    pub naming: Option<Naming>,
    #[serde(default)]
    pub nic: Vec<NicToml>,
}

/// A container TOML plus where it came from; `nic_lines[i]` is the line of `nic[i]`'s header.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerConfig {
    pub path: PathBuf,
    pub toml: ContainerToml,
    pub nic_lines: Vec<usize>,
}

impl AgentConfig {
    /// Reads the agent configuration from `explicit` (`--config`), else `$OP_AGENT_CONFIG`,
    /// else [`DEFAULT_AGENT_TOML`]. A missing file means all defaults.
    pub fn load(explicit: Option<&Path>) -> Result<AgentConfig, ConfigError> {
        let path = match explicit {
            Some(p) => p.to_path_buf(),
            None => match std::env::var_os(CONFIG_ENV) {
                Some(p) if !p.is_empty() => PathBuf::from(p),
                _ => PathBuf::from(DEFAULT_AGENT_TOML),
            },
        };
        let dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let toml = match read_checked(&path)? {
            Some(text) => parse_agent_toml(&path, &text)?,
            None => AgentToml::default(),
        };
        Ok(AgentConfig { path, dir, toml })
    }

    /// `<dir>/containers`.
    pub fn containers_dir(&self) -> PathBuf {
        self.dir.join("containers")
    }

    /// The current epoch key of keyed audit checkpoints: `audit.key` beside `[audit]
    /// database` (default `/var/lib/op-agent/audit.key`), after the one-time move of a key
    /// from beside agent.toml ([`crate::audit_key_place::key_file`]).
    pub fn audit_key_file(&self) -> PathBuf {
        crate::audit_key_place::key_file(self)
    }

    /// Candidate container TOML paths for `vmid`, highest priority first: the cluster-wide
    /// `<pve root>/etc/pve/op-agent/containers/<vmid>.toml` (replicated by pmxcfs, so the config
    /// follows a migrated container), then `<dir>/containers/<vmid>.toml`.
    pub fn container_candidates(&self, vmid: Vmid) -> [PathBuf; 2] {
        [
            paths::cluster_container_toml(&self.toml.pve.root, vmid),
            self.containers_dir().join(format!("{vmid}.toml")),
        ]
    }

    /// Loads the container TOML that wins for `vmid`; `Ok(None)` when there is none (the guest
    /// is not managed by op-agent).
    pub fn load_container(&self, vmid: Vmid) -> Result<Option<ContainerConfig>, ConfigError> {
        for path in self.container_candidates(vmid) {
            if let Some(text) = read_checked(&path)? {
                return parse_container(&path, &text).map(Some);
            }
        }
        Ok(None)
    }

    /// Every vmid with a container TOML in either location, ascending.
    pub fn managed_vmids(&self) -> Vec<u32> {
        let mut out = std::collections::BTreeSet::new();
        let dirs = [
            paths::cluster_containers_dir(&self.toml.pve.root),
            self.containers_dir(),
        ];
        for dir in dirs {
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in rd.flatten() {
                let name = entry.file_name();
                let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".toml")) else {
                    continue;
                };
                if let Ok(v) = stem.parse::<u32>() {
                    if stem.len() >= 3 && !stem.starts_with('0') {
                        out.insert(v);
                    }
                }
            }
        }
        out.into_iter().collect()
    }
}

/// Parses an agent.toml text (`path` is only used in messages) and checks its values
/// ([`validate`]: absolute paths, limits that leave time for the waits). Errors name the file,
/// line and key, as [`AgentConfig::load`] reports them.
pub fn parse_agent_toml(path: &Path, text: &str) -> Result<AgentToml, ConfigError> {
    let toml = parse_toml(path, text)?;
    validate(path, text, &toml)?;
    Ok(toml)
}

/// Parses a container TOML text (`path` is only used in messages).
pub fn parse_container(path: &Path, text: &str) -> Result<ContainerConfig, ConfigError> {
    let toml: ContainerToml = parse_toml(path, text)?;
    let nic_lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.trim_start().starts_with("[[nic]]"))
        .map(|(i, _)| i + 1)
        .collect();
    Ok(ContainerConfig {
        path: path.to_path_buf(),
        toml,
        nic_lines,
    })
}

/// Parses TOML into `T`, turning the toml crate's error into `file:line: key `k`: message`.
fn parse_toml<T: serde::de::DeserializeOwned>(path: &Path, text: &str) -> Result<T, ConfigError> {
    toml::from_str::<T>(text).map_err(|e| {
        let message = e.message().trim().to_string();
        match e.span() {
            Some(span) => {
                let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                let line_text = text.lines().nth(line - 1).unwrap_or("");
                let key = line_text
                    .split_once('=')
                    .map(|(k, _)| k.trim().trim_matches('"').to_string())
                    .filter(|k| !k.is_empty() && !k.starts_with('['));
                match key {
                    Some(k) if !message.contains(&format!("`{k}`")) => {
                        ConfigError::at(path, line, format!("key `{k}`: {message}"))
                    }
                    _ => ConfigError::at(path, line, message),
                }
            }
            None => ConfigError::file(path, message),
        }
    })
}

#[cfg(test)]
mod tests;
