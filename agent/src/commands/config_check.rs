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
//!
//! Then the host's `<pve root>/etc/network/interfaces` (and what it sources), read as
//! ifupdown2 reads it ([`pve_integration::ifupdown`]): for every bridge a managed NIC is
//! plugged into whose stanza lists ports (`ovs_ports`, `bridge-ports`), a
//! `WARNING <file>:<line>: …` when its condone regex does not cover op-agent's name for that
//! NIC: `ifreload -a` (PVE's *Apply Configuration*, SDN apply, `systemctl reload networking`)
//! would delete the port (`openvswitch._addbridge`) or un-enslave it and set it down
//! (`bridge._add_ports`). The warning names the one line to add; nothing is edited. Warnings
//! do not change the exit code; an absent interfaces file is not reported.
//!
//! `--live` then checks the host as the next pre-start will find it, for every managed
//! container (or `--vmid`), as `op-agent check --all` does: `live <vmid>: ok (running|stopped)`
//! or `ERROR live <vmid> <finding>` (a bridge missing from OVSDB or not Open vSwitch, a name
//! held by a link op-agent did not make, drift). Exit 78 for a file error, else 1 for a
//! finding, 69 when OVSDB cannot be reached.

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
        /// Also check the host as pre-start will find it, for every managed container (as
        /// `op-agent check --all`): bridges in OVSDB and Open vSwitch, names free, drift.
        /// Exit 78 any file error, else 1 any finding, 69 OVSDB unreachable.
        #[arg(long)]
        live: bool,
    },
}

/// Runs the command; returns `Ok` with the exit code of [`check`] (0 all valid, 78 any error,
/// said in the report on stdout).
///
/// # Errors
/// `Usage` (64): `--vmid` is not a vmid.
pub fn run(
    args: &ConfigArgs,
    config: Option<&Path>,
    format: crate::output::OutputFormat,
) -> CommandResult {
    match &args.command {
        ConfigCommand::Check { vmid, live } => {
            let only = vmid
                .as_deref()
                .map(str::parse::<Vmid>)
                .transpose()
                .map_err(|e| CliError::wrap(ExitCode::Usage, e))?;
            if format.is_json() {
                let mut buf = Vec::new();
                let code = check(config, only, &mut buf);
                let text = String::from_utf8_lossy(&buf);
                let mut report = crate::output::report_json(&text, code);
                if !*live {
                    format.print(&report);
                    return Ok(code);
                }
                let (live, live_code) = match live_checks(config, only) {
                    Ok((checks, c)) => (serde_json::json!({"containers": checks}), c),
                    Err((c, msg)) => (serde_json::json!({"error": msg}), c),
                };
                let code = worst(code, live_code);
                report["live"] = live;
                report["exit"] = serde_json::json!(code.code());
                format.print(&report);
                return Ok(code);
            }
            let out = &mut crate::output::stdout();
            let code = check(config, only, out);
            if !*live {
                return Ok(code);
            }
            let live_code = match live_checks(config, only) {
                Ok((checks, c)) => {
                    for c in &checks {
                        print_check(c, out);
                    }
                    c
                }
                Err((c, msg)) => {
                    let _ = writeln!(out, "ERROR live: {msg}");
                    c
                }
            };
            Ok(worst(code, live_code))
        }
    }
}

/// The hookscript (`local:snippets/op-hook`) when users other than its owner may write it:
/// PVE runs it as root at every start of every enrolled container, so whoever can write it
/// runs code as root. `None` when it is absent (enroll reports that) or safe.
fn hookscript_problem(root: &Path) -> Option<String> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let path = paths::resolve_volume(root, pve_integration::pct::HOOK_VOLID).ok()?;
    let m = std::fs::metadata(&path).ok()?;
    let mode = m.permissions().mode() & 0o7777;
    (mode & 0o022 != 0).then(|| {
        format!(
            "{}: mode {mode:04o}: group or others may write the hookscript PVE runs as root at \
             every container start; chmod 0755 {} (owner uid {})",
            path.display(),
            path.display(),
            m.uid()
        )
    })
}

/// The exit code of `config check --live`: the files' error (78) first, else the live one.
fn worst(files: ExitCode, live: ExitCode) -> ExitCode {
    if files != ExitCode::Ok {
        files
    } else {
        live
    }
}

/// `--live`: [`super::check_all::check_all`] (or [`super::check::check_vmid`] for `only`) on
/// the config at `config`; the exit code 0 when nothing would be refused or differs, else 1.
///
/// # Errors
/// `(exit code, message)`: OVSDB or netlink unreachable (69).
fn live_checks(
    config: Option<&Path>,
    only: Option<Vmid>,
) -> Result<(Vec<super::check_all::ContainerCheck>, ExitCode), (ExitCode, String)> {
    let cfg = AgentConfig::load(config).map_err(|e| (e.exit_code(), e.to_string()))?;
    let checks = match only {
        None => {
            super::check_all::check_all(&cfg)
                .map_err(|e| (ExitCode::Unavailable, e.message().to_string()))?
                .0
        }
        Some(v) => match super::check::check_vmid(&cfg, v) {
            Ok(r) => vec![super::check_all::ContainerCheck::of(v, r)],
            Err((code, msg)) => return Err((code, format!("{v}: {msg}"))),
        },
    };
    let code = super::check_all::exit_code(&checks, true);
    Ok((checks, code))
}

/// One container's `--live` result: `live <vmid>: ok (running|stopped)`, `ERROR live <vmid>:
/// <why>` or one `WARNING live <vmid> <finding>` per finding.
fn print_check(c: &super::check_all::ContainerCheck, out: &mut dyn Write) {
    let state = |r: bool| if r { "running" } else { "stopped" };
    match (c.state, c.running) {
        ("ok", Some(r)) => {
            let _ = writeln!(out, "live {}: ok ({})", c.vmid, state(r));
        }
        ("not-managed", _) => {
            let _ = writeln!(out, "live {}: not managed", c.vmid);
        }
        ("error" | "not-checked", _) => {
            let _ = writeln!(out, "ERROR live {}: {}", c.vmid, c.findings.join("; "));
        }
        _ => {
            for f in &c.findings {
                let _ = writeln!(out, "ERROR live {} {f}", c.vmid);
            }
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
    if let Some(line) = hookscript_problem(&root) {
        errors += 1;
        let _ = writeln!(out, "ERROR {line}");
    }
    // Host link names must be unique across containers: name -> "<vmid> net<n>".
    let mut taken: std::collections::BTreeMap<String, String> = Default::default();
    // Bridge -> (link name, "<vmid> net<n>") of every NIC op-agent plugs into it.
    let mut on_bridge: BridgeUse = Default::default();
    // PVE conf lines PVE drops with a warning.
    let mut warnings_early = 0usize;
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
            Ok(None) if on_other_node(&root, vmid) => format!(
                "valid; no {} on this node",
                paths::lxc_conf_path(&root, vmid).display()
            ),
            Ok(None) => {
                errors += 1;
                let _ = writeln!(
                    out,
                    "ERROR {}: no container {vmid} in the cluster (left from a destroyed container?); remove it: rm {}",
                    winner.display(),
                    winner.display()
                );
                "stale: no container".into()
            }
            Err(e) => {
                errors += 1;
                format!("PVE conf error: {e}")
            }
            Ok(Some(pve))
                if !pve
                    .hookscript
                    .as_deref()
                    .is_some_and(pve_integration::is_op_hook) =>
            {
                errors += 1;
                let why = match pve.hookscript.as_deref() {
                    Some(h) => format!("hookscript is {h}"),
                    None => "no hookscript".into(),
                };
                // Running with its hookscript removed by hand while a NIC still is op-agent's
                // renamed link: `release` needs the TOML to hand it back.
                let first = if crate::inspect::is_running(&cfg, vmid)
                    && super::release::renamed_unhooked(&cfg, vmid)
                {
                    format!("op-agent release {vmid} (it runs: its NICs stay op-agent's until it stops), then ")
                } else {
                    String::new()
                };
                let _ = writeln!(
                    out,
                    "ERROR {}: container {vmid} is not enrolled ({why} in {}), op-agent ignores it; remove the stale TOML: {first}rm {} (or keep it: op-agent enroll {vmid} --keep-config)",
                    winner.display(),
                    paths::lxc_conf_path(&root, vmid).display(),
                    winner.display()
                );
                "not enrolled: ignored by the hook, watch, apply and status".into()
            }
            Ok(Some(pve)) => {
                let pve_path = paths::lxc_conf_path(&root, vmid);
                warnings_early += pve.ignored.len();
                for w in &pve.ignored {
                    let _ = writeln!(out, "WARNING {w}: ignored, as PVE's parse_pct_config does");
                }
                match crate::desired::resolve(vmid, &pve, &pve_path, &ct) {
                    Ok(d) => {
                        for w in super::set_pins::differs_from_conf(&ct, &pve, &pve_path) {
                            warnings_early += 1;
                            let _ = writeln!(out, "WARNING {w}");
                        }
                        for n in &d.nics {
                            let me = format!("{vmid} net{}", n.net);
                            let plugged =
                                !n.link_down && !matches!(n.mode, crate::desired::NicMode::Skip(_));
                            if let (Some(b), true) = (&n.bridge, plugged) {
                                on_bridge
                                    .entry(b.to_string())
                                    .or_default()
                                    .push((n.name.to_string(), me.clone()));
                            }
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
                        format!(
                            "valid, {}: {}",
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
    let warnings = warnings_early + interfaces_warnings(&root, &on_bridge, out);
    let plural = |n: usize, w: &str| format!("{n} {w}{}", if n == 1 { "" } else { "s" });
    let tail = match warnings {
        0 => String::new(),
        n => format!(", {}", plural(n, "warning")),
    };
    if errors == 0 {
        let _ = writeln!(out, "no errors{tail}");
        ExitCode::Ok
    } else {
        let _ = writeln!(out, "{}{tail}", plural(errors, "error"));
        ExitCode::Config
    }
}

/// True when container `vmid`'s conf is on another node of the cluster
/// (`<root>/etc/pve/nodes/*/lxc/<vmid>.conf`): a cluster-wide TOML for it is not stale.
fn on_other_node(root: &Path, vmid: Vmid) -> bool {
    let Ok(rd) = std::fs::read_dir(root.join("etc/pve/nodes")) else {
        return false;
    };
    rd.flatten()
        .any(|n| n.path().join(format!("lxc/{vmid}.conf")).exists())
}

/// Bridge name -> (link name, `<vmid> net<n>`) of the NICs op-agent plugs into it.
pub(crate) type BridgeUse = std::collections::BTreeMap<String, Vec<(String, String)>>;

/// The `WARNING` lines for `<root>/etc/network/interfaces` (module doc); returns how many.
pub(crate) fn interfaces_warnings(
    root: &Path,
    on_bridge: &BridgeUse,
    out: &mut dyn Write,
) -> usize {
    use pve_integration::ifupdown::{self, BridgeKind};
    let conf = match ifupdown::read(root) {
        Ok(Some(c)) => c,
        Ok(None) => return 0,
        Err(e) => {
            let _ = writeln!(
                out,
                "WARNING {e}: cannot tell whether ifreload removes op-agent's ports"
            );
            return 1;
        }
    };
    let mut warnings = 0;
    let path = root.join("etc/network/interfaces");
    let _ = writeln!(out, "ok {}", path.display());
    for d in &conf.diagnostics {
        warnings += 1;
        let _ = writeln!(out, "WARNING {d} (ifupdown2 reports this too)");
    }
    for (bridge, nics) in on_bridge {
        for b in conf.bridge_stanzas(bridge) {
            let opt = b.kind.condone_option();
            let what = match b.kind {
                BridgeKind::Ovs => "deletes",
                BridgeKind::Linux => "un-enslaves and sets down",
            };
            let origin = match b.condone.set_at {
                Some(l) => format!("line {l}"),
                None => "Proxmox's default".into(),
            };
            let mut hit: Vec<&(String, String)> = Vec::new();
            let mut unknown = None;
            for nic in nics {
                match b.removes(&nic.0) {
                    Ok(true) => hit.push(nic),
                    Ok(false) => {}
                    Err(e) => unknown = Some(e),
                }
            }
            if let Some(e) = unknown {
                warnings += 1;
                let e = e.to_string().replace('\n', " ");
                let _ = writeln!(
                    out,
                    "WARNING {}: {} {bridge}: cannot evaluate {opt} {} ({origin}): {e}; make sure it matches {}",
                    b.stanza.at,
                    b.kind,
                    b.condone.pattern,
                    nics.iter().map(|n| n.0.as_str()).collect::<Vec<_>>().join(", ")
                );
                continue;
            }
            if hit.is_empty() {
                continue;
            }
            warnings += 1;
            let ports: Vec<String> = hit.iter().map(|(n, who)| format!("{n} ({who})")).collect();
            let names: Vec<&str> = nics.iter().map(|n| n.0.as_str()).collect();
            let fix = match (b.condone.widened(&names), b.condone.set_at) {
                (Some(p), None) => format!("add to the iface {bridge} stanza: {opt} {p}"),
                (Some(p), Some(l)) => format!("replace line {l} with: {opt} {p}"),
                (None, _) => format!("give it a {opt} that matches {}", names.join(", ")),
            };
            let _ = writeln!(
                out,
                "WARNING {}: ifreload -a (Apply Configuration, SDN apply, systemctl reload networking) {what} {} from {} {bridge}: {} does not list it and {opt} {} ({origin}) does not match; {fix}",
                b.stanza.at,
                ports.join(", "),
                b.kind,
                b.kind.ports_option(),
                b.condone.pattern,
            );
        }
    }
    warnings
}
