//! `op-agent config check`: validates agent.toml and every container TOML in both locations,
//! and says which file wins for each vmid.
//!
//! Lookup order (as the hook uses it, [`AgentConfig::container_candidates`]): the cluster-wide
//! `<pve root>/etc/pve/op-agent/containers/<vmid>.toml` (replicated by pmxcfs to every node)
//! first, then the node-local `containers/<vmid>.toml`. Each winning file is also resolved
//! against `/etc/pve/lxc/<vmid>.conf` when that exists on this node, exactly as pre-start does.
//!
//! Output, one line per file: `ok <path>`, `ERROR <path>:<line>: <why>`, `ignored <path>: <why>`,
//! then one line per vmid: `<vmid>: <winner> wins[, shadows <other>]: <summary>`.

use super::{CliError, CommandResult};
use crate::config::{self, AgentConfig};
use crate::exit::ExitCode;
use pve_integration::{paths, Vmid};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Arguments of `op-agent config`.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    pub command: ConfigCommand,
}

/// Subcommands of `op-agent config`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ConfigCommand {
    /// Validate agent.toml and every container TOML; say which file wins for each vmid
    /// (exit 0 all valid, 78 any error).
    Check {
        /// Only this container.
        #[arg(long, value_name = "VMID")]
        vmid: Option<String>,
    },
}

/// Runs the command; returns `Ok` with the exit code of [`check`] (0 all valid, 78 any error,
/// said in the report on stdout).
///
/// # Errors
/// `Usage` (64): `--vmid` is not a vmid.
pub fn run(args: &ConfigArgs, config: Option<&Path>) -> CommandResult {
    match &args.command {
        ConfigCommand::Check { vmid } => {
            let only = vmid
                .as_deref()
                .map(str::parse::<Vmid>)
                .transpose()
                .map_err(|e| CliError::wrap(ExitCode::Usage, e))?;
            Ok(check(config, only, &mut std::io::stdout()))
        }
    }
}

/// Checks every file (agent.toml at `config` first, loaded here: its errors are part of the
/// report) and writes the report to `out`; returns the exit code (`Ok` or `Config`).
pub fn check(config: Option<&Path>, only: Option<Vmid>, out: &mut dyn Write) -> ExitCode {
    let mut errors = 0usize;
    let cfg = match AgentConfig::load(config) {
        Ok(c) => {
            if c.path.exists() {
                let _ = writeln!(out, "ok {}", c.path.display());
            } else {
                let _ = writeln!(out, "ok {} (absent: defaults)", c.path.display());
            }
            c
        }
        Err(e) => {
            let _ = writeln!(out, "ERROR {e}");
            let _ = writeln!(out, "1 error");
            return ExitCode::Config;
        }
    };
    let root = cfg.toml.pve.root.clone();
    let dirs: [(PathBuf, &str); 2] = [
        (paths::cluster_containers_dir(&root), "cluster"),
        (cfg.containers_dir(), "node"),
    ];
    // Files that are not <vmid>.toml are reported: the hook would never read them.
    for (dir, _) in &dirs {
        let Ok(rd) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut names: Vec<_> = rd.flatten().map(|e| e.file_name()).collect();
        names.sort();
        for name in names {
            let n = name.to_string_lossy();
            if n.starts_with('.') || !n.ends_with(".toml") {
                continue;
            }
            let stem = n.strip_suffix(".toml");
            let valid = stem.map(|s| s.parse::<Vmid>().is_ok()).unwrap_or(false);
            if !valid && only.is_none() {
                let _ = writeln!(
                    out,
                    "ignored {}: not <vmid>.toml, never read",
                    dir.join(&*n).display()
                );
            }
        }
    }
    let vmids: Vec<u32> = match only {
        Some(v) => vec![v.get()],
        None => cfg.managed_vmids(),
    };
    if vmids.is_empty() {
        let _ = writeln!(
            out,
            "no container TOML in {} or {}",
            dirs[0].0.display(),
            dirs[1].0.display()
        );
    }
    if let Err(e) = paths::check_pve_root(&root) {
        errors += 1;
        let _ = writeln!(
            out,
            "ERROR {}: [pve] root = {e}: every hook of a managed container fails",
            cfg.path.display()
        );
    }
    // Host link names must be unique across containers: name -> "<vmid> net<n>".
    let mut taken: std::collections::BTreeMap<String, String> = Default::default();
    for raw in vmids {
        let Some(vmid) = Vmid::new(raw) else {
            continue;
        };
        let candidates = cfg.container_candidates(vmid);
        let mut present = Vec::new();
        let mut winner_cfg = None;
        for path in candidates.iter() {
            match config::read_checked(path) {
                Ok(None) => {}
                Ok(Some(text)) => match config::parse_container(path, &text) {
                    Ok(c) => {
                        let _ = writeln!(out, "ok {}", path.display());
                        present.push(path.clone());
                        if present.len() == 1 {
                            winner_cfg = Some(c);
                        }
                    }
                    Err(e) => {
                        errors += 1;
                        present.push(path.clone());
                        let _ = writeln!(out, "ERROR {e}");
                    }
                },
                Err(e) => {
                    errors += 1;
                    present.push(path.clone());
                    let _ = writeln!(out, "ERROR {e}");
                }
            }
        }
        let Some(winner) = present.first() else {
            let _ = writeln!(out, "{vmid}: no container TOML (not managed)");
            continue;
        };
        let shadows = match present.get(1) {
            Some(o) => format!(", shadows {}", o.display()),
            None => String::new(),
        };
        let Some(ct) = winner_cfg.filter(|c| &c.path == winner) else {
            let _ = writeln!(
                out,
                "{vmid}: {} wins{shadows}: invalid, pre-start would abort",
                winner.display()
            );
            continue;
        };
        let summary = match pve_integration::read_conf(&root, vmid) {
            Ok(None) => format!(
                "valid; no {} on this node",
                paths::lxc_conf_path(&root, vmid).display()
            ),
            Err(e) => {
                errors += 1;
                format!("PVE conf error: {e}")
            }
            Ok(Some(pve)) => {
                let pve_path = paths::lxc_conf_path(&root, vmid);
                match crate::desired::resolve(vmid, &pve, &pve_path, &ct) {
                    Ok(d) => {
                        for n in &d.nics {
                            let me = format!("{vmid} net{}", n.net);
                            if let Some(other) = taken.insert(n.name.to_string(), me.clone()) {
                                errors += 1;
                                let _ = writeln!(
                                    out,
                                    "ERROR {}: name {} of {me} is also the name of {other}",
                                    winner.display(),
                                    n.name
                                );
                            }
                        }
                        let nics: Vec<String> = d
                            .nics
                            .iter()
                            .map(|n| {
                                let mut s = format!("net{} -> {}", n.net, n.name);
                                if let Some(b) = &n.bridge {
                                    s.push_str(&format!(" on {b}"));
                                }
                                if let Some(t) = n.tag {
                                    s.push_str(&format!(" tag {t}"));
                                }
                                if !n.trunks.is_empty() {
                                    let l: Vec<String> =
                                        n.trunks.iter().map(|t| t.to_string()).collect();
                                    s.push_str(&format!(" trunks {}", l.join(",")));
                                }
                                if let crate::desired::NicMode::Skip(why) = &n.mode {
                                    s.push_str(&format!(" (skipped: {why})"));
                                }
                                s
                            })
                            .collect();
                        let hook = match pve.hookscript.as_deref() {
                            Some(pve_integration::pct::HOOK_VOLID) => String::new(),
                            Some(h) => format!("; hookscript is {h}, not op-hook"),
                            None => "; no hookscript: run `op-agent enroll`".into(),
                        };
                        format!(
                            "valid, {}: {}{hook}",
                            ct.toml.network_type.as_str(),
                            nics.join("; ")
                        )
                    }
                    Err(e) => {
                        errors += 1;
                        format!("ERROR {e}")
                    }
                }
            }
        };
        let _ = writeln!(out, "{vmid}: {} wins{shadows}: {summary}", winner.display());
    }
    if errors == 0 {
        let _ = writeln!(out, "no errors");
        ExitCode::Ok
    } else {
        let _ = writeln!(out, "{errors} error{}", if errors == 1 { "" } else { "s" });
        ExitCode::Config
    }
}
