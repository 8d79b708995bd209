//! agent.toml as the tests write it: only the keys a test sets, in op-agent's tables.

use std::path::{Path, PathBuf};

/// The keys of `/etc/op-agent/agent.toml` a test sets; everything unset keeps op-agent's
/// default. Rendered as `[ovsdb]`, `[hook]`, `[audit]`, `[pve]` (each only when one of its
/// keys is set), then [`AgentToml::extra`] verbatim.
#[derive(Clone, Debug, Default)]
pub struct AgentToml {
    /// `[ovsdb] socket`.
    pub ovsdb_socket: Option<PathBuf>,
    /// `[ovsdb] timeout_ms`.
    pub ovsdb_timeout_ms: Option<u64>,
    /// `[hook] deadline_ms`.
    pub hook_deadline_ms: Option<u64>,
    /// `[audit] database`.
    pub audit_db: Option<PathBuf>,
    /// `[pve] root`.
    pub pve_root: Option<PathBuf>,
    /// Further TOML appended as written (e.g. a `[mesh]` table); it must not reopen a table
    /// written above.
    pub extra: String,
}

impl AgentToml {
    /// The TOML text.
    pub fn render(&self) -> String {
        let mut s = String::new();
        if self.ovsdb_socket.is_some() || self.ovsdb_timeout_ms.is_some() {
            s.push_str("[ovsdb]\n");
            if let Some(p) = &self.ovsdb_socket {
                s.push_str(&format!("socket = \"{}\"\n", p.display()));
            }
            if let Some(t) = self.ovsdb_timeout_ms {
                s.push_str(&format!("timeout_ms = {t}\n"));
            }
        }
        if let Some(d) = self.hook_deadline_ms {
            s.push_str(&format!("[hook]\ndeadline_ms = {d}\n"));
        }
        if let Some(p) = &self.audit_db {
            s.push_str(&format!("[audit]\ndatabase = \"{}\"\n", p.display()));
        }
        if let Some(p) = &self.pve_root {
            s.push_str(&format!("[pve]\nroot = \"{}\"\n", p.display()));
        }
        s.push_str(&self.extra);
        s
    }

    /// Writes [`AgentToml::render`] to `path`, creating its directory.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d)?;
        }
        std::fs::write(path, self.render())
    }
}
