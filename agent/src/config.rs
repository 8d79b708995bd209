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
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

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
}

/// The agent configuration plus where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    /// The agent.toml that was read (it may not exist: then every default applies).
    pub path: PathBuf,
    /// The folder holding agent.toml; `containers/` and `audit.key` are beside it.
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
            Some(text) => parse_toml::<AgentToml>(&path, &text)?,
            None => AgentToml::default(),
        };
        Ok(AgentConfig { path, dir, toml })
    }

    /// `<dir>/containers`.
    pub fn containers_dir(&self) -> PathBuf {
        self.dir.join("containers")
    }

    /// `<dir>/audit.key`: the current epoch key of keyed audit checkpoints.
    pub fn audit_key_file(&self) -> PathBuf {
        self.dir.join("audit.key")
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

/// Parses an agent.toml text (`path` is only used in messages). Errors name the file, line
/// and key, as [`AgentConfig::load`] reports them.
pub fn parse_agent_toml(path: &Path, text: &str) -> Result<AgentToml, ConfigError> {
    parse_toml(path, text)
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

/// Reads `path` after checking ownership and mode; `Ok(None)` when it does not exist.
///
/// Checked, since op-agent runs as root and these files decide what it does: the file (after
/// following a symlink) and the symlink itself must be owned by root (or the effective user),
/// the file must not be writable by group or others, and the folder holding it (and the
/// folder holding the link target) must not be writable by group or others unless it has the
/// sticky bit: otherwise anyone could swap the file for another.
pub fn read_checked(path: &Path) -> Result<Option<String>, ConfigError> {
    let lmeta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ConfigError::file(path, format!("cannot read: {e}"))),
    };
    if let Some(dir) = path.parent() {
        check_dir(path, dir)?;
    }
    if lmeta.file_type().is_symlink() {
        check_owner(
            path,
            lmeta.uid(),
            "the symlink is ",
            &format!("chown -h root:root {}", path.display()),
        )?;
        let target = std::fs::canonicalize(path)
            .map_err(|e| ConfigError::file(path, format!("cannot read: {e}")))?;
        if let Some(dir) = target.parent() {
            check_dir(path, dir)?;
        }
    }
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ConfigError::file(path, format!("cannot read: {e}"))),
    };
    check_owner_mode(path, &meta)?;
    std::fs::read_to_string(path)
        .map(Some)
        .map_err(|e| ConfigError::file(path, format!("cannot read: {e}")))
}

/// Refuses `uid` unless it is root or the effective user; `what` names the object ("owned by
/// uid …" follows) and `fix` is the command to print.
fn check_owner(path: &Path, uid: u32, what: &str, fix: &str) -> Result<(), ConfigError> {
    let euid = nix::unistd::geteuid().as_raw();
    if uid != 0 && uid != euid {
        return Err(ConfigError::file(
            path,
            format!("refused: {what}owned by uid {uid}, not root; fix: {fix}"),
        )
        .refusal());
    }
    Ok(())
}

/// The folder `dir` holding `path` must be owned by root and not writable by group or others
/// (unless sticky).
fn check_dir(path: &Path, dir: &Path) -> Result<(), ConfigError> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let Ok(m) = std::fs::metadata(dir) else {
        return Ok(());
    };
    check_owner(
        path,
        m.uid(),
        &format!("its folder {} is ", dir.display()),
        &format!("chown root:root {}", dir.display()),
    )?;
    let mode = m.mode() & 0o7777;
    if mode & 0o022 != 0 && mode & 0o1000 == 0 {
        return Err(ConfigError::file(
            path,
            format!(
                "refused: its folder {} is writable by group or others (mode {mode:04o}); fix: chmod go-w {}",
                dir.display(),
                dir.display()
            ),
        )
        .refusal());
    }
    Ok(())
}

/// Refuses a file not owned by root (or the effective user) or writable by group or others.
pub fn check_owner_mode(path: &Path, meta: &std::fs::Metadata) -> Result<(), ConfigError> {
    check_owner(
        path,
        meta.uid(),
        "",
        &format!("chown root:root {}", path.display()),
    )?;
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(ConfigError::file(
            path,
            format!(
                "refused: writable by group or others (mode {mode:04o}); fix: chmod go-w {}",
                path.display()
            ),
        )
        .refusal());
    }
    Ok(())
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
mod tests {
    use super::*;

    fn p() -> PathBuf {
        PathBuf::from("/etc/op-agent/containers/100.toml")
    }

    #[test]
    fn defaults_when_empty() {
        let a: AgentToml = parse_toml(&p(), "").unwrap();
        assert_eq!(a.ovsdb.socket, PathBuf::from("/run/openvswitch/db.sock"));
        assert_eq!(a.ovsdb.timeout_ms, 5000);
        assert_eq!(a.hook.deadline_ms, 10_000);
        assert_eq!(
            a.audit.database,
            PathBuf::from("/var/lib/op-agent/audit.db")
        );
        assert_eq!(a.pve.root, PathBuf::from("/"));
        assert_eq!(a.mesh.interface, "netmaker");
    }

    #[test]
    fn full_agent_toml() {
        let text = "[ovsdb]\nsocket = \"/tmp/x.sock\"\ntimeout_ms = 100\n[hook]\ndeadline_ms = 2000\n\
                    [audit]\ndatabase = \"/tmp/a.db\"\n[pve]\nroot = \"/srv/pve\"\n[mesh]\ninterface = \"nm0\"\n";
        let a: AgentToml = parse_toml(&p(), text).unwrap();
        assert_eq!(a.ovsdb.timeout_ms, 100);
        assert_eq!(a.hook.deadline_ms, 2000);
        assert_eq!(a.pve.root, PathBuf::from("/srv/pve"));
        assert_eq!(a.mesh.interface, "nm0");
    }

    #[test]
    fn container_toml_full() {
        let text = "network_type = \"bridge\"\n[[nic]]\nnet = 0\nbridge = \"ovsbr0\"\ntag = 10\n\
                    trunks = [20, 30]\nname = \"vi100\"\n";
        let c = parse_container(&p(), text).unwrap();
        assert_eq!(c.toml.network_type, NetworkType::Bridge);
        assert_eq!(c.toml.nic.len(), 1);
        assert_eq!(c.toml.nic[0].trunks, Some(vec![20, 30]));
        assert_eq!(c.nic_lines, vec![2]);
    }

    #[test]
    fn unknown_key_names_file_line_key() {
        let text = "network_type = \"bridge\"\n[[nic]]\nnet = 0\ntagg = 10\n";
        let e = parse_container(&p(), text).unwrap_err();
        let s = e.to_string();
        assert!(
            s.starts_with("/etc/op-agent/containers/100.toml:4: "),
            "{s}"
        );
        assert!(s.contains("tagg"), "{s}");
    }

    #[test]
    fn wrong_type_names_key() {
        let text = "[[nic]]\nnet = 0\ntag = \"ten\"\n";
        let e = parse_container(&p(), text).unwrap_err();
        let s = e.to_string();
        assert!(s.contains(":3: "), "{s}");
        assert!(s.contains("tag"), "{s}");
        let e = parse_toml::<AgentToml>(&p(), "[hook]\ndeadline_ms = -1\n").unwrap_err();
        assert!(e.to_string().contains(":2: "), "{e}");
        assert!(e.to_string().contains("deadline_ms"), "{e}");
    }

    #[test]
    fn bad_network_type() {
        let e = parse_container(&p(), "network_type = \"vxlan\"\n").unwrap_err();
        assert!(e.to_string().contains(":1: "), "{e}");
        assert!(e.to_string().contains("network_type"), "{e}");
    }

    #[test]
    fn syntax_error_has_line() {
        let e = parse_container(&p(), "network_type = \"bridge\"\n[[nic]\n").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
    }

    #[test]
    fn world_writable_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("100.toml");
        std::fs::write(&f, "").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = read_checked(&f).unwrap_err();
        assert!(e.is_permission(), "{e}");
        assert!(e.to_string().contains("chmod go-w"), "{e}");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(read_checked(&f).unwrap(), Some(String::new()));
        assert_eq!(read_checked(&dir.path().join("none.toml")).unwrap(), None);
        // A folder others can write to: anyone could swap the file.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = read_checked(&f).unwrap_err();
        assert!(
            e.is_permission() && e.to_string().contains("its folder"),
            "{e}"
        );
        // ... unless sticky (like /tmp): others cannot replace root's file there.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(read_checked(&f).is_ok());
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn symlink_owned_by_another_user_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("181.toml");
        std::fs::write(&target, "").unwrap();
        let link = dir.path().join("100.toml");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(read_checked(&link).is_ok());
        nix::unistd::fchownat(
            nix::fcntl::AT_FDCWD,
            &link,
            Some(nix::unistd::Uid::from_raw(65534)),
            None,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .unwrap();
        let e = read_checked(&link).unwrap_err();
        assert!(
            e.is_permission() && e.to_string().contains("symlink"),
            "{e}"
        );
    }
}
