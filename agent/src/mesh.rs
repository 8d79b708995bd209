//! Netmaker (host-mesh) mode: confirm that the host's mesh interface is usable. The host joins
//! the mesh once; containers reach it through the host, so op-agent only confirms and records.

use crate::config::MeshSection;
use crate::netlink::Netlink;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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

impl MeshState {
    /// `mesh via <iface> <addr>` (first usable address), as `op-agent status` and the
    /// post-start summary show it.
    pub fn via(&self) -> String {
        format!(
            "mesh via {} {}",
            self.interface,
            self.addresses.first().map(String::as_str).unwrap_or("")
        )
    }
}

/// How `netclient` is installed, quoted by [`JoinError::NotInstalled`].
pub const NETCLIENT_INSTALL_HINT: &str = "install it from Netmaker's Debian repository: \
     curl -sL https://apt.netmaker.org/gpg.key > /etc/apt/trusted.gpg.d/netclient.asc; \
     curl -sL https://apt.netmaker.org/debian.deb.txt > /etc/apt/sources.list.d/netclient.list; \
     apt update; apt install netclient (see https://docs.netmaker.io)";

/// How long `netclient list` and `netclient join` may run, each.
pub const NETCLIENT_TIMEOUT: Duration = Duration::from_secs(120);

/// The enrollment token read from `netmaker.env`. Its `Debug`/`Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// The secret itself; only for the `netclient join -t` argument.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `text` with every occurrence of the token replaced by `<token>`.
    pub fn redact(&self, text: &str) -> String {
        if self.0.is_empty() {
            text.to_string()
        } else {
            text.replace(&self.0, "<token>")
        }
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<token>")
    }
}

/// Errors of `op-agent mesh join`. No variant ever carries the token.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The env file is missing, unreadable, not root's, or not mode 0600.
    #[error("{path}: {reason}", path = .path.display())]
    EnvFile { path: PathBuf, reason: String },
    /// The env file has no `NETMAKER_TOKEN=` line (or it is empty).
    #[error("{path}: no NETMAKER_TOKEN=<token> line", path = .path.display())]
    NoToken { path: PathBuf },
    /// No executable `netclient` on `PATH`.
    #[error("netclient is not installed (not found on PATH); {NETCLIENT_INSTALL_HINT}")]
    NotInstalled,
    /// `netclient` could not be started or waited for.
    #[error("netclient {what}: {source}")]
    Spawn {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// `netclient` ran longer than [`NETCLIENT_TIMEOUT`] and was killed.
    #[error("netclient {what} did not finish within {} s; it was killed", NETCLIENT_TIMEOUT.as_secs())]
    Timeout { what: &'static str },
    /// `netclient join` exited non-zero; `output` is its last output line, token redacted.
    #[error("netclient join failed ({status}): {output}")]
    JoinFailed { status: String, output: String },
}

impl JoinError {
    /// True for ownership/mode refusals of the env file (exit code "refused").
    pub fn is_permission(&self) -> bool {
        matches!(self, JoinError::EnvFile { reason, .. } if reason.starts_with("refused:"))
    }
}

/// What `mesh join` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinOutcome {
    /// `netclient list` already showed a network: nothing was run.
    AlreadyJoined,
    /// `netclient join -t <token>` succeeded.
    Joined,
}

/// Reads `NETMAKER_TOKEN` from `path` (shell-style `KEY=value` lines, `#` comments, optional
/// `export ` and quotes). Refused unless the file is owned by root and has mode 0600 exactly
/// (it holds a secret: no group or other bits at all).
pub fn read_token(path: &Path) -> Result<Token, JoinError> {
    use std::os::unix::fs::MetadataExt;
    let env_err = |reason: String| JoinError::EnvFile {
        path: path.to_path_buf(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| env_err(format!("cannot read: {e}")))?;
    if meta.uid() != 0 {
        return Err(env_err(format!(
            "refused: owned by uid {}, not root; fix: chown root:root {}",
            meta.uid(),
            path.display()
        )));
    }
    let mode = meta.mode() & 0o7777;
    if mode != 0o600 {
        return Err(env_err(format!(
            "refused: mode {mode:04o}, must be 0600 (it holds the enrollment token); fix: chmod 0600 {}",
            path.display()
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| env_err(format!("cannot read: {e}")))?;
    parse_token(&text).ok_or_else(|| JoinError::NoToken {
        path: path.to_path_buf(),
    })
}

/// The value of the last `NETMAKER_TOKEN=` line of an env file text, unquoted; `None` when
/// there is none or it is empty.
pub fn parse_token(text: &str) -> Option<Token> {
    let mut found = None;
    for line in text.lines() {
        let l = line.trim();
        let l = l.strip_prefix("export ").map(str::trim_start).unwrap_or(l);
        if let Some(v) = l.strip_prefix("NETMAKER_TOKEN=") {
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|x| x.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|x| x.strip_suffix('\'')))
                .unwrap_or(v);
            found = Some(v.to_string());
        }
    }
    found.filter(|v| !v.is_empty()).map(Token)
}

/// The first executable regular file named `netclient` in the `PATH`-style list `path_var`.
pub fn find_netclient(path_var: &std::ffi::OsStr) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(path_var)
        .map(|d| d.join("netclient"))
        .find(|p| {
            std::fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// True when `netclient list` output names at least one network. The output is a table (or
/// plain lines): every line that is not a border, empty, a header (`NETWORK ...`) or a "no
/// networks" notice counts as a joined network.
pub fn list_shows_joined(stdout: &str) -> bool {
    stdout.lines().any(|line| {
        let cells = line
            .trim()
            .trim_matches(|c: char| c == '|' || c == '+' || c == '-' || c.is_whitespace());
        if cells.is_empty() || cells.chars().all(|c| "-+|= ".contains(c)) {
            return false;
        }
        let lower = cells.to_ascii_lowercase();
        let header = cells.starts_with("NETWORK") || lower.starts_with("network ");
        let none = lower.contains("no network") || lower.contains("not connected to any");
        !header && !none
    })
}

/// Runs `cmd` with stdin closed, output captured, killed after [`NETCLIENT_TIMEOUT`].
fn run_bounded(mut cmd: Command, what: &'static str) -> Result<std::process::Output, JoinError> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| JoinError::Spawn { what, source })?;
    let (mut out, mut err) = (child.stdout.take(), child.stderr.take());
    let reader = |p: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(mut p) = p {
                let _ = p.read_to_end(&mut v);
            }
            v
        })
    };
    let to = reader(
        out.take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    );
    let te = reader(
        err.take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    );
    let deadline = Instant::now() + NETCLIENT_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(JoinError::Timeout { what });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(source) => return Err(JoinError::Spawn { what, source }),
        }
    };
    Ok(std::process::Output {
        status,
        stdout: to.join().unwrap_or_default(),
        stderr: te.join().unwrap_or_default(),
    })
}

/// `op-agent mesh join`: reads the token from `env_file` ([`read_token`]), finds `netclient`
/// on `path_var`, does nothing when `netclient list` already shows a network, else runs
/// `netclient join -t <token>` (the token is on netclient's argv only while it runs; its
/// output is passed back with the token redacted). Environment: `LC_ALL=C`, stdin closed.
/// Returns what was done and netclient's (redacted) output.
pub fn join(
    env_file: &Path,
    path_var: &std::ffi::OsStr,
) -> Result<(JoinOutcome, String), JoinError> {
    let token = read_token(env_file)?;
    let bin = find_netclient(path_var).ok_or(JoinError::NotInstalled)?;
    let mut list = Command::new(&bin);
    list.arg("list").env("LC_ALL", "C");
    let listed = run_bounded(list, "list")?;
    if listed.status.success() && list_shows_joined(&String::from_utf8_lossy(&listed.stdout)) {
        return Ok((JoinOutcome::AlreadyJoined, String::new()));
    }
    let mut cmd = Command::new(&bin);
    cmd.arg("join")
        .arg("-t")
        .arg(token.expose())
        .env("LC_ALL", "C");
    let out = run_bounded(cmd, "join")?;
    let text = token.redact(&format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ));
    if !out.status.success() {
        let last = text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no output")
            .trim()
            .to_string();
        return Err(JoinError::JoinFailed {
            status: out.status.to_string(),
            output: last,
        });
    }
    Ok((JoinOutcome::Joined, text))
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

    #[test]
    fn token_parsing_and_redaction() {
        let t = parse_token("# x\nexport NETMAKER_TOKEN=\"abc123\"\n").unwrap();
        assert_eq!(t.expose(), "abc123");
        assert_eq!(format!("{t:?} {t}"), "Token(<redacted>) <token>");
        assert_eq!(t.redact("join -t abc123 ok"), "join -t <token> ok");
        assert_eq!(parse_token("NETMAKER_TOKEN=\n"), None);
        assert_eq!(parse_token("OTHER=1\n"), None);
        assert_eq!(parse_token("NETMAKER_TOKEN='q'").unwrap().expose(), "q");
    }

    #[test]
    fn netclient_list_heuristic() {
        assert!(!list_shows_joined(""));
        assert!(!list_shows_joined(
            "+---------+-----------+\n| NETWORK | CONNECTED |\n+---------+-----------+\n"
        ));
        assert!(list_shows_joined(
            "+---------+-----------+\n| NETWORK | CONNECTED |\n+---------+-----------+\n| mesh1   | true      |\n"
        ));
        assert!(!list_shows_joined("no networks found\n"));
        assert!(list_shows_joined("mesh1 10.101.0.3\n"));
    }

    #[test]
    fn env_file_mode_and_owner_checked() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("netmaker.env");
        std::fs::write(&f, "NETMAKER_TOKEN=sekrit\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
        let euid = nix::unistd::geteuid().as_raw();
        let e = read_token(&f).unwrap_err();
        assert!(e.is_permission(), "{e}");
        assert!(!e.to_string().contains("sekrit"), "{e}");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        if euid == 0 {
            assert_eq!(read_token(&f).unwrap().expose(), "sekrit");
        } else {
            assert!(read_token(&f).unwrap_err().is_permission());
        }
    }
}
