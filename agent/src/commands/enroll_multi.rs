//! `op-agent enroll` for more than one container (`enroll 100 101 102`, `enroll --all`) and
//! the `--on-firewall` choice. One container is enrolled by [`super::enroll::run_one`]; this
//! module picks the containers, runs it for each (one dry run prints every plan) and sums up.

use super::enroll::{self, EnrollArgs};
use super::{CliError, CommandResult};
use crate::config::{AgentConfig, ConfigError, OnFirewall};
use crate::exit::ExitCode;
use pve_integration::pct::HOOK_VOLID;
use pve_integration::Vmid;
use std::io::Write;
use std::path::Path;

/// Parses each vmid argument (100..999999999).
///
/// # Errors
/// `Usage` (64) naming the first bad one.
pub fn parse_vmids(args: &[String]) -> Result<Vec<Vmid>, CliError> {
    let mut out: Vec<Vmid> = Vec::new();
    for a in args {
        let v: Vmid = a.parse().map_err(|_| {
            CliError::new(
                ExitCode::Usage,
                format!(
                    "vmid {:?} is not 100..999999999",
                    a.escape_debug().to_string()
                ),
            )
        })?;
        if !out.contains(&v) {
            out.push(v);
        }
    }
    Ok(out)
}

/// `--bridge`, `--tag`, `--trunks` and `--net` describe one NIC of one container: refused with
/// `--all` or more than one vmid (`count`).
///
/// # Errors
/// `Usage` (64).
pub fn check_overrides(args: &EnrollArgs, count: usize) -> Result<(), CliError> {
    let overrides = args.bridge.is_some() || args.tag.is_some() || args.trunks.is_some();
    if (args.all || count > 1) && (overrides || args.net != 0) {
        return Err(CliError::new(
            ExitCode::Usage,
            "--bridge, --tag, --trunks and --net apply to one container: name one vmid",
        ));
    }
    Ok(())
}

/// The `on_firewall` to write for `vmid`: `--on-firewall`, else what the container TOML that
/// wins today says (a hand-written `on_firewall = "skip"` is kept), else `refuse`.
pub fn on_firewall(args: &EnrollArgs, cfg: &AgentConfig, vmid: Vmid) -> OnFirewall {
    match args.on_firewall {
        Some(a) => a.into(),
        None => cfg
            .load_container(vmid)
            .ok()
            .flatten()
            .map(|c| c.toml.on_firewall)
            .unwrap_or_default(),
    }
}

/// The message for a container TOML enroll would write that the hook would refuse; a
/// firewall=1 refusal also names the flag that writes `on_firewall = "skip"`.
pub fn firewall_hint(vmid: Vmid, e: &ConfigError) -> String {
    if e.refused && e.message.contains("firewall=1") {
        format!("{e} (op-agent enroll {vmid} --on-firewall skip)")
    } else {
        e.to_string()
    }
}

/// The containers of this node: every `<root>/etc/pve/lxc/<vmid>.conf`, ascending.
///
/// # Errors
/// The folder cannot be read (message naming it).
pub fn node_vmids(root: &Path) -> Result<Vec<Vmid>, String> {
    let dir = root.join("etc/pve/lxc");
    let rd = std::fs::read_dir(&dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut out: Vec<Vmid> = rd
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            name.to_str()?.strip_suffix(".conf")?.parse::<Vmid>().ok()
        })
        .collect();
    out.sort_by_key(|v| v.get());
    Ok(out)
}

/// True when `vmid` already runs op-agent's hookscript and has a container TOML: `--all`
/// leaves it as it is.
fn enrolled(cfg: &AgentConfig, vmid: Vmid) -> bool {
    let hook = pve_integration::read_conf(&cfg.toml.pve.root, vmid)
        .ok()
        .flatten()
        .and_then(|c| c.hookscript);
    hook.as_deref() == Some(HOOK_VOLID) && matches!(cfg.load_container(vmid), Ok(Some(_)))
}

/// Enrolls `vmids` (from [`enroll::check_args`]; with `--all` every container of the node not
/// enrolled yet), one after another, reporting on stdout and each failure on stderr as
/// `op-agent enroll: <vmid>: <message>`. One container: its error is the command's.
///
/// # Errors
/// One container: [`enroll::run_one`]'s. More: the exit code of the first failure, with a
/// line counting the failures; the others are still enrolled.
pub fn run(args: &EnrollArgs, vmids: Vec<Vmid>, cfg: &AgentConfig) -> CommandResult {
    let out = &mut crate::output::stdout();
    if !args.all && vmids.len() == 1 {
        return enroll::run_one(args, vmids[0], cfg, out).map(|()| ExitCode::Ok);
    }
    let mut todo = vmids;
    if args.all {
        let all = node_vmids(&cfg.toml.pve.root).map_err(|e| CliError::new(ExitCode::Config, e))?;
        for v in all {
            if enrolled(cfg, v) {
                let _ = writeln!(out, "{v}: already enrolled, left as it is");
            } else {
                todo.push(v);
            }
        }
        if todo.is_empty() {
            let _ = writeln!(out, "nothing to enroll");
            return Ok(ExitCode::Ok);
        }
    }
    let mut failed: Vec<(Vmid, CliError)> = Vec::new();
    for &v in &todo {
        let _ = writeln!(out, "{v}:");
        if let Err(e) = enroll::run_one(args, v, cfg, out) {
            eprintln!("op-agent enroll: {v}: {}", e.message());
            failed.push((v, e));
        }
    }
    let verb = if args.dry_run {
        "would enroll"
    } else {
        "enrolled"
    };
    let done = todo.len() - failed.len();
    let _ = writeln!(out, "{verb} {done} of {} containers", todo.len());
    match failed.first() {
        None => Ok(ExitCode::Ok),
        Some((_, first)) => {
            let ids: Vec<String> = failed.iter().map(|(v, _)| v.to_string()).collect();
            Err(CliError::with_status(
                first.status(),
                format!("not enrolled: {} (reasons above)", ids.join(", ")),
            ))
        }
    }
}
