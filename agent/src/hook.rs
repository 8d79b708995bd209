//! `op-agent hook <vmid> <phase>`: what the hookscript runs for every PVE phase.
//!
//! The flow of every phase is parse (agent.toml, container TOML, PVE conf) → observe (netlink,
//! OVSDB) → plan ([`crate::plan`], pure) → apply ([`crate::apply`]), with every outcome
//! reported to the audit seam ([`crate::report::Recorder`]). Each phase is idempotent and bounded
//! by `[hook] deadline_ms` (PVE `exec_hookscript` has no timeout of its own).

use crate::apply::{self, HookError, Target};
use crate::audit::{AuditLog, AuditOptions, Outcome};
use crate::config::{AgentConfig, ConfigError};
use crate::desired::{self, Desired};
use crate::exit::ExitCode;
use crate::plan;
use crate::report::Recorder;
use pve_integration::Vmid;
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

/// The LXC hookscript phases of pve-container (pve-facts §1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    PreStart,
    PostStart,
    PreStop,
    PostStop,
}

impl Phase {
    /// The phase as PVE passes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::PreStart => "pre-start",
            Phase::PostStart => "post-start",
            Phase::PreStop => "pre-stop",
            Phase::PostStop => "post-stop",
        }
    }
}

/// Result of validating the phase argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhaseArg {
    Known(Phase),
    /// Well-formed but not an LXC phase op-agent acts on: exit 0, change nothing.
    Unknown,
    /// Not `^[a-z][a-z0-9-]{0,31}$`: usage error.
    Malformed,
}

/// Validates a phase argument before anything is read.
pub fn parse_phase(s: &str) -> PhaseArg {
    let well_formed = !s.is_empty()
        && s.len() <= 32
        && s.as_bytes()[0].is_ascii_lowercase()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !well_formed {
        return PhaseArg::Malformed;
    }
    match s {
        "pre-start" => PhaseArg::Known(Phase::PreStart),
        "post-start" => PhaseArg::Known(Phase::PostStart),
        "pre-stop" => PhaseArg::Known(Phase::PreStop),
        "post-stop" => PhaseArg::Known(Phase::PostStop),
        _ => PhaseArg::Unknown,
    }
}

/// Options of one hook run.
#[derive(Debug, Clone, Default)]
pub struct HookOptions {
    /// Print the plan, change nothing, write no audit row.
    pub dry_run: bool,
    /// Print per-step timings to stderr.
    pub timings: bool,
}

fn one_line(s: &str) -> String {
    s.split(['\n', '\r']).next().unwrap_or("").to_string()
}

/// An argument as it is shown in a usage error: quoted with control characters escaped (so a
/// `\n` is visible and the message stays one line), at most 64 characters.
fn shown_arg(s: &str) -> String {
    format!("{:?}", s.chars().take(64).collect::<String>())
}

fn fail(vmid: &str, phase: &str, code: ExitCode, msg: &str) -> ExitCode {
    eprintln!("op-agent: {vmid} {phase}: {}", one_line(msg));
    code
}

/// Runs one hook. `config_path` is `--config`. Returns the exit code; prints at most one line
/// on stderr for a failure (the PVE task log shows it) and one summary line on stdout.
pub fn run(
    config_path: Option<&Path>,
    vmid_arg: &str,
    phase_arg: &str,
    opts: &HookOptions,
) -> ExitCode {
    let started = Instant::now();
    let vmid: Vmid = match vmid_arg.parse() {
        Ok(v) => v,
        Err(_) => {
            eprintln!(
                "op-agent: invalid vmid {}: must match ^[1-9][0-9]{{2,8}}$",
                shown_arg(vmid_arg)
            );
            return ExitCode::Usage;
        }
    };
    let phase = match parse_phase(phase_arg) {
        PhaseArg::Known(p) => p,
        PhaseArg::Unknown => return ExitCode::Ok,
        PhaseArg::Malformed => {
            eprintln!("op-agent: invalid phase {}", shown_arg(phase_arg));
            return ExitCode::Usage;
        }
    };
    let ph = phase.as_str();
    let cfg = match AgentConfig::load(config_path) {
        Ok(c) => c,
        Err(e) => return fail(vmid_arg, ph, e.exit_code(), &e.to_string()),
    };
    // Fast path for guests op-agent does not manage: no container TOML, or no PVE CT conf
    // (e.g. a QEMU VM). Exit 0, change nothing, write nothing.
    let root = cfg.toml.pve.root.clone();
    let pve_path = pve_integration::paths::lxc_conf_path(&root, vmid);
    if !cfg.container_candidates(vmid).iter().any(|p| p.exists()) {
        return ExitCode::Ok;
    }
    if let Err(e) = pve_integration::paths::check_pve_root(&root) {
        // A managed guest, but the PVE root is wrong: silently doing nothing would switch
        // op-agent off for every container.
        let msg = format!("{}: [pve] root = {e}", cfg.path.display());
        return fail(vmid_arg, ph, ExitCode::Config, &msg);
    }
    if !pve_path.exists() {
        return ExitCode::Ok;
    }
    let deadline = Duration::from_millis(cfg.toml.hook.deadline_ms);
    spawn_watchdog(vmid_arg, ph, deadline);
    match run_locked(&cfg, vmid, phase, ph, opts, started) {
        Err(e) => fail(vmid_arg, ph, e.code, &e.message),
        Ok(summary) => {
            if !summary.is_empty() && phase != Phase::PostStop {
                println!("op-agent: {vmid} {ph}: {summary}");
            }
            ExitCode::Ok
        }
    }
}

/// Runs the steps of `phase` for a managed `vmid`: takes the per-vmid lock, opens the audit
/// log, loads and validates the config, then observe → plan → apply within `[hook]
/// deadline_ms` of `started`. Audit rows carry `label` as their phase (`post-start`, `apply`,
/// `watch`). Returns the one-line summary. Used by `hook`, `apply` and `watch`.
pub fn run_locked(
    cfg: &AgentConfig,
    vmid: Vmid,
    phase: Phase,
    label: &str,
    opts: &HookOptions,
    started: Instant,
) -> Result<String, HookError> {
    let deadline = Duration::from_millis(cfg.toml.hook.deadline_ms);
    let root = cfg.toml.pve.root.clone();
    let pve_path = pve_integration::paths::lxc_conf_path(&root, vmid);
    let lock_dir = root.join("run/op-agent");
    let _lock = if opts.dry_run {
        None
    } else {
        let wait = deadline.saturating_sub(started.elapsed()) / 2;
        Some(
            crate::lock::lock_vmid(&lock_dir, vmid.get(), wait)
                .map_err(|e| HookError::new(ExitCode::Timeout, e.to_string()))?,
        )
    };
    let audit =
        if opts.dry_run {
            None
        } else {
            let o = AuditOptions {
                busy_timeout: (deadline / 3).min(Duration::from_secs(5)),
                key_file: Some(cfg.audit_key_file()),
                ..AuditOptions::default()
            };
            Some(AuditLog::open(&cfg.toml.audit.database, &o).map_err(|e| {
                HookError::new(ExitCode::AuditIo, format!("{e}; nothing was changed"))
            })?)
        };
    let mut rec = Recorder::new(vmid.get(), label, audit, started);

    if phase == Phase::PreStop {
        // Nothing to change, so nothing to validate (a config edited while the container ran
        // must not make its stop fail).
        rec.outcome("phase.noop", Outcome::Skipped, json!({}));
        return rec
            .finish()
            .map(|_| String::new())
            .map_err(|e| HookError::new(ExitCode::AuditIo, e.to_string()));
    }
    let loaded = load_desired(cfg, vmid).and_then(|d| {
        d.ok_or_else(|| ConfigError::file(&pve_path, "container TOML or PVE conf vanished"))
    });
    let result = match loaded {
        Ok(d) => {
            rec.outcome(
                "config.validate",
                Outcome::Ok,
                json!({"nics": d.nics.len(), "network_type": d.network_type.as_str()}),
            );
            run_async(cfg, &d, phase, opts, &mut rec, deadline, started)
        }
        Err(e) => {
            rec.outcome(
                "config.validate",
                Outcome::Failed,
                json!({"error": e.to_string()}),
            );
            if phase == Phase::PostStop {
                // The config broke while the container ran: still remove every row op-agent
                // owns for it, then report the config error.
                let d = Desired {
                    vmid,
                    network_type: crate::config::NetworkType::Bridge,
                    require_mesh: false,
                    nics: Vec::new(),
                };
                let _ = run_async(cfg, &d, phase, opts, &mut rec, deadline, started);
            }
            Err(HookError::new(e.exit_code(), e.to_string()))
        }
    };
    // Every failed run leaves a `failed` row, also when it failed before any step did (a plan
    // refusal such as a missing veth or a foreign link).
    if let Err(e) = &result {
        if !rec.has_failed() {
            rec.outcome(
                "run.failed",
                Outcome::Failed,
                json!({"error": e.message, "exit": e.code.code()}),
            );
        }
    }
    let finished = rec.finish();
    if opts.timings {
        for (step, d) in &rec.timings {
            eprintln!("timing {step} {:.3} ms", d.as_secs_f64() * 1e3);
        }
        eprintln!(
            "timing total {:.3} ms",
            started.elapsed().as_secs_f64() * 1e3
        );
    }
    match (result, finished) {
        (Err(e), _) => Err(e),
        (Ok(_), Err(e)) => Err(HookError::new(ExitCode::AuditIo, e.to_string())),
        (Ok(summary), Ok(_)) => Ok(summary),
    }
}

/// After a caught panic in `hook`: appends one `run.panic` row with outcome `failed` and the
/// panic message to the audit log, best effort (nothing is written if the vmid, the phase or
/// the config is invalid, or the log cannot be opened within 1 s).
pub fn record_panic(config_path: Option<&Path>, vmid_arg: &str, phase_arg: &str, msg: &str) {
    let (Ok(vmid), PhaseArg::Known(phase)) = (vmid_arg.parse::<Vmid>(), parse_phase(phase_arg))
    else {
        return;
    };
    let Ok(cfg) = AgentConfig::load(config_path) else {
        return;
    };
    let o = AuditOptions {
        busy_timeout: Duration::from_secs(1),
        key_file: Some(cfg.audit_key_file()),
        ..AuditOptions::default()
    };
    let Ok(audit) = AuditLog::open(&cfg.toml.audit.database, &o) else {
        return;
    };
    let mut rec = Recorder::new(vmid.get(), phase.as_str(), Some(audit), Instant::now());
    rec.outcome("run.panic", Outcome::Failed, json!({"error": msg}));
    if let Err(e) = rec.finish() {
        eprintln!("op-agent: {vmid} {}: audit: {e}", phase.as_str());
    }
}

/// Parse step: the container TOML that wins and the PVE conf, combined; `Ok(None)` when either
/// file is absent. Errors name the file and line.
pub fn load_desired(cfg: &AgentConfig, vmid: Vmid) -> Result<Option<Desired>, ConfigError> {
    let pve_path = pve_integration::paths::lxc_conf_path(&cfg.toml.pve.root, vmid);
    let Some(ct) = cfg.load_container(vmid)? else {
        return Ok(None);
    };
    let Some(text) = crate::config::read_checked(&pve_path)? else {
        return Ok(None);
    };
    let pve = pve_integration::parse_conf(text.as_bytes(), &pve_path.display().to_string())
        .map_err(|e| {
            ConfigError::file(&pve_path, format!("{} ({})", e.kind, e.key)).at_line(e.line)
        })?;
    desired::resolve(vmid, &pve, &pve_path, &ct).map(Some)
}

/// Hard bound: whatever hangs (a blocked syscall, a stuck SQLite lock), the process exits at
/// the deadline plus 1 s with `EX_TEMPFAIL`.
fn spawn_watchdog(vmid: &str, phase: &str, deadline: Duration) {
    let msg = format!(
        "op-agent: {vmid} {phase}: deadline of {} ms exceeded; exiting",
        deadline.as_millis()
    );
    std::thread::spawn(move || {
        std::thread::sleep(deadline + Duration::from_secs(1));
        eprintln!("{msg}");
        std::process::exit(ExitCode::Timeout.code());
    });
}

fn run_async(
    cfg: &AgentConfig,
    d: &Desired,
    phase: Phase,
    opts: &HookOptions,
    rec: &mut Recorder,
    deadline: Duration,
    started: Instant,
) -> Result<String, HookError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| HookError::new(ExitCode::Internal, format!("tokio runtime: {e}")))?;
    let remaining = deadline.saturating_sub(started.elapsed());
    rt.block_on(async {
        match tokio::time::timeout(remaining, run_phase(cfg, d, phase, opts, rec)).await {
            Ok(r) => r,
            Err(_) => {
                let msg = format!(
                    "deadline of {} ms exceeded; the run was stopped",
                    deadline.as_millis()
                );
                rec.outcome("hook.deadline", Outcome::Failed, json!({"error": msg}));
                Err(HookError::new(ExitCode::Timeout, msg))
            }
        }
    })
}

/// One readable function per phase: observe → plan → apply.
async fn run_phase(
    cfg: &AgentConfig,
    d: &Desired,
    phase: Phase,
    opts: &HookOptions,
    rec: &mut Recorder,
) -> Result<String, HookError> {
    match phase {
        Phase::PreStart => pre_start(cfg, d, opts, rec).await,
        Phase::PostStart => post_start(cfg, d, opts, rec).await,
        // pre-stop never gets here: `run_locked` records it without loading the config.
        Phase::PreStop => Ok(String::new()),
        Phase::PostStop => post_stop(cfg, d, opts, rec).await,
    }
}

/// pre-start: the bridges exist, no foreign link or port holds our names, stale op-agent rows
/// of this container are removed. A failure aborts the start (PVE `stop_on_error`).
async fn pre_start(
    cfg: &AgentConfig,
    d: &Desired,
    opts: &HookOptions,
    rec: &mut Recorder,
) -> Result<String, HookError> {
    let target = Target::connect(cfg, rec).await?;
    let mut obs = target.observe(d, true, rec).await?;
    apply::mark_live_ports(&target, &mut obs).await?;
    let steps = plan::plan_pre_start(d, &obs).map_err(HookError::from_plan)?;
    apply::apply(&target, cfg, d, &obs, &steps, opts, rec).await
}

/// post-start: per NIC, take PVE's veth off its OVS port, rename it, plug it under the new
/// name, wait for ovs-vswitchd, check ofport/error. Converged NICs are left alone.
async fn post_start(
    cfg: &AgentConfig,
    d: &Desired,
    opts: &HookOptions,
    rec: &mut Recorder,
) -> Result<String, HookError> {
    let target = Target::connect(cfg, rec).await?;
    let obs = target.observe(d, false, rec).await?;
    let steps = plan::plan_post_start(d, &obs).map_err(HookError::from_plan)?;
    apply::apply(&target, cfg, d, &obs, &steps, opts, rec).await
}

/// post-stop: delete every Port row op-agent owns for this container, so no stale row
/// captures the next device of that name (PVE bug #1232).
async fn post_stop(
    cfg: &AgentConfig,
    d: &Desired,
    opts: &HookOptions,
    rec: &mut Recorder,
) -> Result<String, HookError> {
    let target = Target::connect(cfg, rec).await?;
    // Every owned row goes, even if the kernel has not finished destroying the container's
    // veths yet (it does so asynchronously): a row left behind would capture the next device
    // of that name (PVE bug #1232).
    let obs = target.observe(d, true, rec).await?;
    let steps = plan::plan_post_stop(d, &obs);
    apply::apply(&target, cfg, d, &obs, &steps, opts, rec).await
}
