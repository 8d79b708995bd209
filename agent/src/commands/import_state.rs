//! `op-agent import-state <state.json>`: converts the old op-dbus `state.json` into container
//! TOML files.
//!
//! Input shape (other keys are ignored):
//! `{"plugins": {"lxc": {"containers": [{"id": 100, "veth": "vi100", "bridge": "ovsbr0",
//! "running": true, "properties": {"network_type": "bridge"}}]}}}`. `id` may be a number or a
//! string; `veth` is the host link name op-dbus gave net0 (written as `name` only when it is
//! not the default `vi<vmid>`); `bridge` becomes net0's `bridge`; `properties.network_type` is
//! `bridge` (default) or `netmaker`; `running` is only reported.
//!
//! Each entry either becomes `containers/<vmid>.toml` (reported `wrote <path>`) or is reported
//! as `skipped entry <i> (<id>): <why>`. Existing files are left alone unless `--force`.

use super::enroll::{render_container_toml, write_config_file, ContainerSpec};
use super::{CliError, CommandResult};
use crate::config::{self, NetworkType, NicToml};
use crate::exit::ExitCode;
use pve_integration::{IfName, NetIndex, Vmid};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Arguments of `op-agent import-state`.
#[derive(Debug, Clone, clap::Args)]
pub struct ImportStateArgs {
    /// The op-dbus state file (e.g. /var/lib/op-dbus/state.json).
    pub state: PathBuf,
    /// Folder to write into (default: containers/ beside agent.toml).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Replace container TOML files that already exist.
    #[arg(long)]
    pub force: bool,
    /// Print what would be written without writing.
    #[arg(long)]
    pub dry_run: bool,
    /// Also attach op-agent's hookscript to each container imported (written or unchanged)
    /// that has a PVE conf on this node, as `op-agent enroll <vmid> --keep-config` does.
    #[arg(long, conflicts_with = "out")]
    pub enroll: bool,
}

/// One entry of `plugins.lxc.containers[]` converted, or why not.
#[derive(Debug, Clone, PartialEq)]
pub enum Converted {
    /// The container id and the file content.
    Toml {
        /// The container.
        vmid: Vmid,
        /// Whether op-dbus recorded it as running (reported only).
        running: Option<bool>,
        /// The TOML text.
        text: String,
    },
    /// The entry cannot be converted; the string says why, quoting the value.
    Skip(String),
}

/// Why a state file cannot be read at all.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The state file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Not JSON.
    #[error("{path}: not JSON: {source}")]
    Json {
        /// The state file.
        path: String,
        /// serde_json's error (with line and column).
        source: serde_json::Error,
    },
    /// JSON, but without `plugins.lxc.containers` as an array.
    #[error("{path}: no plugins.lxc.containers array (not an op-dbus state.json?)")]
    Shape {
        /// The state file.
        path: String,
    },
}

/// Converts a parsed state file: one [`Converted`] per entry of `plugins.lxc.containers`, in
/// order. `source` is named in each file's header comment.
///
/// # Errors
/// [`ImportError::Shape`] when `plugins.lxc.containers` is not an array.
pub fn convert(state: &Value, source: &str) -> Result<Vec<Converted>, ImportError> {
    let list = state
        .pointer("/plugins/lxc/containers")
        .and_then(Value::as_array)
        .ok_or_else(|| ImportError::Shape {
            path: source.to_string(),
        })?;
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for (i, entry) in list.iter().enumerate() {
        let c = convert_entry(entry, source, i);
        if let Converted::Toml { vmid, .. } = &c {
            if !seen.insert(vmid.get()) {
                out.push(Converted::Skip(format!(
                    "id {vmid} appears more than once; only the first entry is used"
                )));
                continue;
            }
        }
        out.push(c);
    }
    Ok(out)
}

fn convert_entry(entry: &Value, source: &str, index: usize) -> Converted {
    let Some(obj) = entry.as_object() else {
        return Converted::Skip(format!("not an object: {entry}"));
    };
    let id_str = match obj.get("id") {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => return Converted::Skip(format!("id {v} is neither a number nor a string")),
        None => return Converted::Skip("no id".into()),
    };
    let vmid: Vmid = match id_str.parse() {
        Ok(v) => v,
        Err(_) => {
            return Converted::Skip(format!(
                "id {:?} is not a container id 100..999999999",
                id_str
            ))
        }
    };
    let network_type = match entry.pointer("/properties/network_type") {
        None | Some(Value::Null) => NetworkType::Bridge,
        Some(Value::String(s)) if s == "bridge" => NetworkType::Bridge,
        Some(Value::String(s)) if s == "netmaker" => NetworkType::Netmaker,
        Some(v) => {
            return Converted::Skip(format!(
                "id {vmid}: properties.network_type {v} is not \"bridge\" or \"netmaker\""
            ))
        }
    };
    let str_field = |key: &str| -> Result<Option<String>, Converted> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(Converted::Skip(format!(
                "id {vmid}: {key} {v} is not a string"
            ))),
        }
    };
    let veth = match str_field("veth") {
        Ok(v) => v,
        Err(c) => return c,
    };
    let bridge = match str_field("bridge") {
        Ok(v) => v,
        Err(c) => return c,
    };
    if let Some(v) = &veth {
        if let Err(e) = IfName::new(v) {
            return Converted::Skip(format!("id {vmid}: veth: {e}"));
        }
    }
    if let Some(b) = &bridge {
        if let Err(e) = IfName::new(b) {
            return Converted::Skip(format!("id {vmid}: bridge: {e}"));
        }
    }
    let running = obj.get("running").and_then(Value::as_bool);
    let net0 = NetIndex::new(0).map(|n| crate::desired::default_link_name(vmid, n));
    let name = veth.filter(|v| Some(v) != net0.as_ref());
    let mut spec = ContainerSpec {
        network_type,
        nics: Vec::new(),
        ..ContainerSpec::default()
    };
    if bridge.is_some() || name.is_some() {
        spec.nics.push(NicToml {
            net: 0,
            bridge,
            tag: None,
            trunks: None,
            name,
            ..NicToml::default()
        });
    }
    let header = vec![format!(
        "Imported by `op-agent import-state` from {source}, plugins.lxc.containers[{index}]."
    )];
    let text = render_container_toml(&header, &spec);
    // The text must parse back exactly as the hook will read it.
    if let Err(e) = config::parse_container(Path::new(source), &text) {
        return Converted::Skip(format!("id {vmid}: {e}"));
    }
    Converted::Toml {
        vmid,
        running,
        text,
    }
}

/// Converts the state file into container TOML files in `out_dir` (`--out`, else the
/// node-local `containers/` of agent.toml), reporting each entry on stdout; returns `Ok` with
/// the exit code: 0 every entry converted (or already present), 1 some entries skipped or a
/// file could not be written.
///
/// # Errors
/// `Config` (78): the state file is unreadable ([`ImportError`]).
pub fn run(args: &ImportStateArgs, out_dir: &Path) -> CommandResult {
    import(args, out_dir, &mut std::io::stdout()).map(|(code, _)| code)
}

/// [`run`], writing to `out`; also returns the containers whose TOML is in place (written,
/// unchanged, or with `--dry-run` would be written), in the state file's order.
///
/// # Errors
/// As [`run`].
pub fn import(
    args: &ImportStateArgs,
    out_dir: &Path,
    out: &mut dyn Write,
) -> Result<(ExitCode, Vec<Vmid>), CliError> {
    let mut ready = Vec::new();
    let path = args.state.display().to_string();
    let parsed = std::fs::read_to_string(&args.state)
        .map_err(|source| ImportError::Io {
            path: path.clone(),
            source,
        })
        .and_then(|t| {
            serde_json::from_str::<Value>(&t).map_err(|source| ImportError::Json {
                path: path.clone(),
                source,
            })
        })
        .and_then(|v| convert(&v, &path));
    let items = parsed.map_err(|e| CliError::wrap(ExitCode::Config, e))?;
    let mut failed = 0usize;
    let mut written = 0usize;
    for (i, item) in items.iter().enumerate() {
        match item {
            Converted::Skip(why) => {
                failed += 1;
                let _ = writeln!(out, "skipped entry {i}: {why}");
            }
            Converted::Toml {
                vmid,
                running,
                text,
            } => {
                let target = out_dir.join(format!("{vmid}.toml"));
                let note = match running {
                    Some(true) => {
                        " (was running: takes effect at its next start, or `op-agent apply`)"
                    }
                    _ => "",
                };
                let existing = std::fs::read_to_string(&target).ok();
                if existing.as_deref() == Some(text.as_str()) {
                    let _ = writeln!(out, "unchanged {}", target.display());
                    ready.push(*vmid);
                    continue;
                }
                if existing.is_some() && !args.force {
                    failed += 1;
                    let _ = writeln!(
                        out,
                        "skipped entry {i}: {} already exists (use --force to replace it)",
                        target.display()
                    );
                    continue;
                }
                if args.dry_run {
                    let _ = writeln!(out, "would write {}{note}:", target.display());
                    for l in text.lines() {
                        let _ = writeln!(out, "    {l}");
                    }
                    ready.push(*vmid);
                    continue;
                }
                match write_config_file(&target, text) {
                    Ok(()) => {
                        written += 1;
                        ready.push(*vmid);
                        let _ = writeln!(out, "wrote {}{note}", target.display());
                    }
                    Err(e) => {
                        failed += 1;
                        let _ = writeln!(out, "skipped entry {i}: {e}");
                    }
                }
            }
        }
    }
    let _ = writeln!(
        out,
        "{written} written, {failed} not converted, {} entries",
        items.len()
    );
    let code = if failed > 0 {
        ExitCode::Failed
    } else {
        ExitCode::Ok
    };
    Ok((code, ready))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_and_reports() {
        let v: Value = serde_json::json!({"plugins": {"lxc": {"containers": [
            {"id": 100, "veth": "vi100", "bridge": "ovsbr0", "running": true,
             "properties": {"network_type": "bridge"}},
            {"id": "101", "veth": "custom0", "bridge": "vmbr1",
             "properties": {"network_type": "netmaker"}},
            {"id": "abc"},
            {"id": 102, "properties": {"network_type": "vxlan"}},
            {"id": 100},
            {"id": 103, "veth": "a-name-longer-than-15"},
            {"id": 104}
        ]}}});
        let c = convert(&v, "state.json").unwrap();
        assert_eq!(c.len(), 7);
        let Converted::Toml {
            vmid,
            text,
            running,
        } = &c[0]
        else {
            panic!("{:?}", c[0])
        };
        assert_eq!(vmid.get(), 100);
        assert_eq!(*running, Some(true));
        let p = config::parse_container(Path::new("x"), text).unwrap();
        assert_eq!(p.toml.nic[0].bridge.as_deref(), Some("ovsbr0"));
        assert_eq!(p.toml.nic[0].name, None, "default name is not written");
        let Converted::Toml { text, .. } = &c[1] else {
            panic!("{:?}", c[1])
        };
        let p = config::parse_container(Path::new("x"), text).unwrap();
        assert_eq!(p.toml.network_type, NetworkType::Netmaker);
        assert_eq!(p.toml.nic[0].name.as_deref(), Some("custom0"));
        assert!(matches!(&c[2], Converted::Skip(s) if s.contains("\"abc\"")));
        assert!(matches!(&c[3], Converted::Skip(s) if s.contains("vxlan")));
        assert!(matches!(&c[4], Converted::Skip(s) if s.contains("more than once")));
        assert!(matches!(&c[5], Converted::Skip(s) if s.contains("longer than 15")));
        let Converted::Toml { text, .. } = &c[6] else {
            panic!("{:?}", c[6])
        };
        assert!(!text.contains("[[nic]]"));
        assert!(matches!(
            convert(&serde_json::json!({"plugins": {}}), "s"),
            Err(ImportError::Shape { .. })
        ));
    }
}
