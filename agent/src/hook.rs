//! `op-agent hook <vmid> <phase>`: what the hookscript runs for every PVE phase. The PVE-phase
//! adapter of the engine: argv → phase → fast path (unmanaged guests) → watchdog →
//! [`engine::converge`] → print. Each phase is idempotent and bounded by `[hook] deadline_ms`
//! (pve-guest-common `PVE::GuestHelpers::exec_hookscript` has no timeout of its own).

use crate::audit::{AuditLog, AuditOptions, Outcome};
use crate::config::AgentConfig;
use crate::engine::{self, Deadline, Job, Managed, PhaseArg, RunOptions};
use crate::exit::ExitCode;
use crate::report::Recorder;
use pve_integration::Vmid;
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

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
    crate::errln!("op-agent: {vmid} {phase}: {}", one_line(msg));
    code
}

/// Runs one hook. `config_path` is `--config`. Returns the exit code; prints at most one line
/// on stderr for a failure (the PVE task log shows it) and one summary line on stdout; with
/// `--dry-run` the plan, one step a line, on stdout.
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
            crate::errln!(
                "op-agent: invalid vmid {}: must match ^[1-9][0-9]{{2,8}}$",
                shown_arg(vmid_arg)
            );
            return ExitCode::Usage;
        }
    };
    let phase = match engine::parse_phase(phase_arg) {
        PhaseArg::Known(p) => p,
        PhaseArg::Unknown => return ExitCode::Ok,
        PhaseArg::Malformed => {
            crate::errln!("op-agent: invalid phase {}", shown_arg(phase_arg));
            return ExitCode::Usage;
        }
    };
    let ph = phase.as_str();
    // The deadline runs from the first read on: with the default length until agent.toml says
    // otherwise (a file that blocks must not hang the start of every guest).
    let watchdog = Watchdog::spawn(
        vmid_arg,
        ph,
        started,
        crate::config::HookSection::default().deadline_ms,
    );
    let cfg = match AgentConfig::load(config_path) {
        Ok(c) => c,
        Err(e) => return fail(vmid_arg, ph, e.exit_code(), &e.to_string()),
    };
    watchdog.set(Deadline::of_config(&cfg, started).length());
    // Fast path for guests op-agent does not manage: no container TOML, or no PVE CT conf
    // (e.g. a QEMU VM). Exit 0, change nothing, write nothing.
    let managed = match Managed::find(&cfg, vmid) {
        Ok(Some(m)) => m,
        Ok(None) => return ExitCode::Ok,
        Err(e) => return fail(vmid_arg, ph, e.code(), &e.to_string()),
    };
    let job = Job {
        managed,
        phase,
        label: ph.to_string(),
        started: Some(started),
    };
    let run = RunOptions {
        dry_run: opts.dry_run,
    };
    let jobs = [job];
    let Some(report) = engine::converge(&cfg, &jobs, run).next() else {
        return ExitCode::Internal;
    };
    for plan in &report.plans {
        let lines = engine::plan::plan_lines(plan);
        for l in &lines {
            crate::outln!("{l}");
        }
        if lines.is_empty() {
            crate::outln!("(nothing to do)");
        }
    }
    if let (true, Some((timings, total))) = (opts.timings, &report.timings) {
        for (step, d) in timings {
            crate::errln!("timing {step} {:.3} ms", d.as_secs_f64() * 1e3);
        }
        crate::errln!("timing total {:.3} ms", total.as_secs_f64() * 1e3);
    }
    match report.result {
        Err(e) => fail(vmid_arg, ph, e.code(), &e.to_string()),
        Ok(summary) => {
            if !summary.is_empty() && phase != engine::Phase::PostStop {
                crate::outln!("op-agent: {vmid} {ph}: {summary}");
            }
            ExitCode::Ok
        }
    }
}

/// After a caught panic in `hook`: appends one `run.panic` row with outcome `failed` and the
/// panic message to the audit log, best effort (nothing is written if the vmid, the phase or
/// the config is invalid, or the log cannot be opened within 1 s).
pub fn record_panic(config_path: Option<&Path>, vmid_arg: &str, phase_arg: &str, msg: &str) {
    let (Ok(vmid), PhaseArg::Known(phase)) =
        (vmid_arg.parse::<Vmid>(), engine::parse_phase(phase_arg))
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
        crate::errln!("op-agent: {vmid} {}: audit: {e}", phase.as_str());
    }
}

/// Hard bound: whatever hangs (a blocked syscall, a stuck SQLite lock), the process exits at
/// the deadline plus 1 s (counted from the hook's start) with `EX_TEMPFAIL`. The length can be
/// changed once agent.toml is read ([`Watchdog::set`]).
struct Watchdog {
    length_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
    thread: std::thread::Thread,
}

impl Watchdog {
    /// Starts the watchdog thread for a deadline of `length_ms` from `started`.
    fn spawn(vmid: &str, phase: &str, started: Instant, length_ms: u64) -> Watchdog {
        use std::sync::atomic::Ordering;
        let length = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(length_ms));
        let shared = length.clone();
        let who = format!("op-agent: {vmid} {phase}");
        let handle = std::thread::spawn(move || loop {
            let ms = shared.load(Ordering::Acquire);
            let Some(end) = started.checked_add(Duration::from_millis(ms) + Duration::from_secs(1))
            else {
                std::thread::park();
                continue;
            };
            let now = Instant::now();
            if now >= end {
                crate::errln!("{who}: deadline of {ms} ms exceeded; exiting");
                std::process::exit(ExitCode::Timeout.code());
            }
            // Woken early by `set`.
            std::thread::park_timeout(end - now);
        });
        Watchdog {
            length_ms: length,
            thread: handle.thread().clone(),
        }
    }

    /// Sets the deadline's length (from the same start).
    fn set(&self, length: Duration) {
        let ms = u64::try_from(length.as_millis()).unwrap_or(u64::MAX);
        self.length_ms
            .store(ms, std::sync::atomic::Ordering::Release);
        self.thread.unpark();
    }
}
