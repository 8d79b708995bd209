//! `op-agent enroll --remove <vmid>…`: takes containers off op-agent in one step, the reverse
//! of [`super::enroll`], in the order that never leaves a NIC op-agent's without a hookscript:
//! 1. a running container whose NICs op-agent manages is released first
//!    ([`super::release::release_vmid`]: op-agent's Ports and names handed back to PVE's
//!    `veth<vmid>i<n>` and `tap_plug` Port; audit rows `phase` = `release`); when that fails
//!    nothing else is done (the hookscript and the TOML stay, op-agent keeps managing it);
//! 2. `pct set <vmid> --delete hookscript` (pve-container `update_pct_config`, `hookscript`
//!    being one of `$LXC_FASTPLUG_OPTIONS`), only when the conf names op-agent's hookscript
//!    (another hookscript is never touched); PVE runs no hookscript from the next start on;
//! 3. each container TOML (node-local and cluster-wide) is removed; its text is kept in the
//!    audit row, so nothing the admin wrote is lost.
//!
//! Audit rows (`phase` = `enroll`): `run.intent` (what will be done), `enroll.del-hookscript`,
//! `enroll.del-toml` (`detail.text`: the file's content). Idempotent: a container already off
//! op-agent is reported as such (exit 0); a run that failed at step 2 or 3 is finished by
//! running it again. `--dry-run` prints the steps and changes nothing.

use super::{CliError, CommandResult};
use crate::audit::{AuditLog, AuditOptions, Outcome};
use crate::config::AgentConfig;
use crate::engine::Managed;
use crate::exit::ExitCode;
use crate::inspect;
use crate::report::Recorder;
use pve_integration::{paths, pct, Vmid};
use serde_json::json;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use super::enroll::EnrollArgs;

/// A refusal or failure: the exit code and the one-line reason.
struct Fail(ExitCode, String);

/// Takes `vmids` off op-agent, one after another, with the loaded agent.toml `cfg`: stdout
/// gets what was done (`100: …` per line), stderr each failure as
/// `op-agent enroll: <vmid>: <message>`.
///
/// # Errors
/// One container: its failure (69 no `pct` on `PATH`, 78 no PVE conf, the release's code, 1
/// `pct` failed or a TOML could not be removed). More: the code of the first failure, the
/// others are still done.
pub fn run(args: &EnrollArgs, vmids: Vec<Vmid>, cfg: &AgentConfig) -> CommandResult {
    let out = &mut std::io::stdout();
    let mut failed: Vec<(Vmid, Fail)> = Vec::new();
    for &v in &vmids {
        let mut lines = Vec::new();
        let r = remove_one(cfg, v, args.dry_run, &mut lines);
        for l in lines {
            let _ = writeln!(out, "{v}: {l}");
        }
        if let Err(f) = r {
            if vmids.len() > 1 {
                eprintln!("op-agent enroll: {v}: {}", f.1);
            }
            failed.push((v, f));
        }
    }
    match failed.into_iter().next() {
        None => Ok(ExitCode::Ok),
        Some((v, Fail(code, msg))) if vmids.len() == 1 => {
            Err(CliError::new(code, format!("{v}: {msg}")))
        }
        Some((_, Fail(code, _))) => Err(CliError::new(
            code,
            "not every container was taken off op-agent (reasons above)",
        )),
    }
}

/// The container TOMLs of `vmid` that exist (a dangling symlink counts), cluster-wide first.
fn tomls(cfg: &AgentConfig, vmid: Vmid) -> Vec<PathBuf> {
    cfg.container_candidates(vmid)
        .into_iter()
        .filter(|p| std::fs::symlink_metadata(p).is_ok())
        .collect()
}

/// Takes one container off op-agent, pushing the lines to print on `lines`.
fn remove_one(
    cfg: &AgentConfig,
    vmid: Vmid,
    dry_run: bool,
    lines: &mut Vec<String>,
) -> Result<(), Fail> {
    let root = &cfg.toml.pve.root;
    let pve_path = paths::lxc_conf_path(root, vmid);
    let pve = pve_integration::read_conf(root, vmid)
        .map_err(|e| Fail(ExitCode::Config, e.to_string()))?
        .ok_or_else(|| {
            Fail(
                ExitCode::Config,
                format!(
                    "no container {vmid} on this node: {} does not exist",
                    pve_path.display()
                ),
            )
        })?;
    let hook = pve.hookscript.clone();
    let op_hook = hook.as_deref().is_some_and(pve_integration::is_op_hook);
    let files = tomls(cfg, vmid);
    if !op_hook && files.is_empty() {
        lines
            .push("not enrolled (no op-agent hookscript, no container TOML): nothing to do".into());
        return Ok(());
    }
    let pct_path = super::enroll::find_in_path(pct::PCT);
    if op_hook && pct_path.is_none() && !dry_run {
        return Err(Fail(
            ExitCode::Unavailable,
            "pct is not on PATH: this is not a Proxmox VE host (nothing was changed)".into(),
        ));
    }
    let managed = Managed::find(cfg, vmid).map_err(|e| Fail(e.code(), e.to_string()))?;
    let release = managed.is_some()
        && inspect::is_running(cfg, vmid)
        && !crate::released::is_released(root, vmid);
    let pct_cmd = pct::delete_hookscript_cmdline(vmid);
    if dry_run {
        if release {
            lines.push(format!("would run: op-agent release {vmid}"));
        }
        match (&hook, op_hook) {
            (_, true) => lines.push(format!("would run: {pct_cmd}")),
            (Some(h), false) => lines.push(format!("hookscript {h} is not op-agent's: left")),
            (None, false) => {}
        }
        for f in &files {
            lines.push(format!("would remove {}", f.display()));
        }
        return Ok(());
    }
    // Refused before the first change when the audit log cannot be opened.
    let audit = AuditLog::open(
        &cfg.toml.audit.database,
        &AuditOptions {
            key_file: Some(cfg.audit_key_file()),
            ..AuditOptions::default()
        },
    )
    .map_err(|e| Fail(ExitCode::AuditIo, format!("{e}; nothing was changed")))?;

    // 1. The NICs go back to PVE while op-agent's hookscript still runs the stop.
    if release {
        let released = super::release::release_vmid(cfg, vmid).map_err(|(code, msg)| {
            Fail(
                code,
                format!("{msg}; the hookscript and container TOML are kept"),
            )
        })?;
        lines.extend(released.into_iter().map(|l| format!("released {l}")));
    }
    let mut rec = Recorder::new(vmid.get(), "enroll", Some(audit), Instant::now());
    let plan = json!({
        "remove": {
            "hookscript": hook.as_deref().filter(|_| op_hook),
            "tomls": files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
            "released": release,
        }
    });
    rec.intent("run.intent", &plan).map_err(|e| {
        Fail(
            ExitCode::AuditIo,
            format!("{e}; the hookscript and container TOML are kept"),
        )
    })?;
    let result = steps(vmid, op_hook, pct_path, &files, &mut rec, lines);
    let finished = rec.finish();
    result?;
    finished.map_err(|e| Fail(ExitCode::AuditIo, e.to_string()))?;
    lines.push(format!(
        "taken off op-agent: PVE runs no op-agent hookscript for it, its NICs stay PVE's (op-agent enroll {vmid} adds it again)"
    ));
    Ok(())
}

/// Steps 2 and 3 after the intent row: `pct set --delete hookscript` (when `op_hook`) and the
/// TOMLs, each with its outcome row. A failed `pct` keeps the TOMLs.
fn steps(
    vmid: Vmid,
    op_hook: bool,
    pct_path: Option<PathBuf>,
    files: &[PathBuf],
    rec: &mut Recorder,
    lines: &mut Vec<String>,
) -> Result<(), Fail> {
    let pct_cmd = pct::delete_hookscript_cmdline(vmid);
    if let (true, Some(p)) = (op_hook, pct_path) {
        let st = pct::delete_hookscript(&p, vmid);
        let ok = matches!(&st, Ok(s) if s.success());
        let why = match &st {
            Ok(s) => s.to_string(),
            Err(e) => e.to_string(),
        };
        if !ok {
            rec.outcome(
                "enroll.del-hookscript",
                Outcome::Failed,
                json!({"command": pct_cmd, "error": why}),
            );
            return Err(Fail(
                ExitCode::Failed,
                format!("`{pct_cmd}` failed ({why}); the container TOML is kept: run `op-agent enroll --remove {vmid}` again"),
            ));
        }
        rec.outcome(
            "enroll.del-hookscript",
            Outcome::Ok,
            json!({"command": pct_cmd}),
        );
        lines.push(format!("ran {pct_cmd}"));
    }
    for f in files {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        match std::fs::remove_file(f) {
            Ok(()) => {
                rec.outcome(
                    "enroll.del-toml",
                    Outcome::Ok,
                    json!({"path": f.display().to_string(), "text": text}),
                );
                lines.push(format!("removed {}", f.display()));
            }
            Err(e) => {
                rec.outcome(
                    "enroll.del-toml",
                    Outcome::Failed,
                    json!({"path": f.display().to_string(), "error": e.to_string()}),
                );
                return Err(Fail(
                    ExitCode::Failed,
                    format!("cannot remove {}: {e}", f.display()),
                ));
            }
        }
    }
    Ok(())
}
