//! `op-agent set <vmid> <pct set options>`: a live edit of a running managed container's NICs
//! through Proxmox's own code, which fails on a NIC op-agent renamed (pve-container
//! `update_net` runs `/sbin/ip link set dev veth<vmid>i<n> up`).
//!
//! Under op-agent's per-vmid lock, kept from the first step to the last (no hook phase and no
//! `watch` run touches the container meanwhile; PVE's config lock is taken by `pct` itself
//! and never held here, which would deadlock):
//! 1. each NIC whose `netN` the options name (`-netN …`, `--delete netN,…`) is handed back to
//!    PVE's name and Port as `op-agent release` does ([`super::release::hand_back_all`]:
//!    audit rows `run.intent`, `release.rename`, `release.add-port` / `release.del-port`);
//! 2. `pct set <vmid> <options>` runs with the options unchanged, so PVE validates them, writes
//!    the conf and runs its own hotplug (pve-container `PVE::API2::LXC::Config` `update_vm` →
//!    `vmconfig_hotplug_pending` → `update_net`); bounded by [`PCT_TIMEOUT`], killed after it;
//!    audit row `set.pct` with its exit code and message;
//! 3. the container is converged again from the conf PVE left ([`engine::converge_held`]):
//!    the new values when `pct` succeeded, the old ones when it failed (PVE writes nothing
//!    then, and `update_net` re-plugs the old values itself).
//!
//! Every row has `phase` = `set`. On a container that is stopped, not managed or released,
//! `pct set` just runs. Exit 0 when `pct` and the convergence succeeded; 71
//! ([`ExitCode::HandBack`]) when a hand-back step failed part-way (`pct` not run, the NICs
//! converged back on the conf's values); else 1 (or the convergence's code) with one line:
//! PVE's message, and where the NICs ended.

use super::{CliError, CommandResult};
use crate::audit::{AuditLog, AuditOptions, Outcome};
use crate::config::AgentConfig;
use crate::engine::{self, Deadline, Job, Managed, Note, Phase};
use crate::exit::ExitCode;
use crate::inspect;
use crate::report::Recorder;
use pve_integration::Vmid;
use serde_json::json;
use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long `pct set` may run before it is killed: PVE's config lock alone waits up to 10 s
/// (pve-guest-common `lock_config_full($vmid, 10, …)`), its hotplug a few more.
pub const PCT_TIMEOUT: Duration = Duration::from_secs(60);

/// Arguments of `op-agent set`.
#[derive(Debug, Clone, clap::Args)]
pub struct SetArgs {
    /// Container id (100..999999999).
    pub vmid: String,
    /// The options of `pct set`, passed unchanged (`-net0 name=eth0,bridge=ovsbr0,tag=20`,
    /// `--delete net1`).
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub options: Vec<String>,
}

/// `pct set` options as `(name, value)` pairs: `-name value`, `--name value` or
/// `--name=value` (every option of `pct set` takes a value; pve-common `cli_handler` parses
/// them with Getopt::Long). A next word starting with `-` is taken as the next option, not
/// as a value (`-description -net0 …` counts net0 as touched: handing back one NIC too many
/// is harmless, one too few makes PVE's hotplug fail). Words that are not options are
/// skipped.
pub fn option_pairs(options: &[String]) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut it = options.iter().peekable();
    while let Some(o) = it.next() {
        let Some(opt) = o.strip_prefix("--").or_else(|| o.strip_prefix('-')) else {
            continue;
        };
        match opt.split_once('=') {
            Some((n, v)) => out.push((n.to_string(), Some(v.to_string()))),
            None => {
                let v = it.next_if(|w| !w.starts_with('-')).cloned();
                out.push((opt.to_string(), v));
            }
        }
    }
    out
}

/// `N` of a `netN` key (0..31), if `s` is one.
pub fn net_key(s: &str) -> Option<u8> {
    let d = s.trim().strip_prefix("net")?;
    (!d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
        .then(|| d.parse().ok())
        .flatten()
        .filter(|n| *n < 32)
}

/// The `netN` indexes `pct set` options touch: `-netN`/`--netN` (also `--netN=…`) and the
/// names in `-delete`/`--delete` (comma or space separated, as pve-container's `delete`
/// format `pve-configid-list` allows).
pub fn touched_nets(options: &[String]) -> BTreeSet<u8> {
    let mut out: BTreeSet<u8> = deleted_nets(options).into_iter().collect();
    out.extend(option_pairs(options).iter().filter_map(|(n, _)| net_key(n)));
    out
}

/// The `netN` indexes named in `-delete`/`--delete` (comma, space or `;` separated, as
/// pve-container's `delete` format `pve-configid-list` allows), in order.
pub fn deleted_nets(options: &[String]) -> Vec<u8> {
    option_pairs(options)
        .into_iter()
        .filter(|(name, _)| name == "delete")
        .flat_map(|(_, v)| {
            v.unwrap_or_default()
                .split([',', ' ', ';'])
                .filter_map(net_key)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// PVE's message on `stderr` as one line: its non-empty lines joined by `; `, without the
/// usage line `pct set <vmid> [OPTIONS]` that pve-common `cli_handler` appends.
pub fn one_line(stderr: &str) -> String {
    stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("pct set <vmid>"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// What `pct set` did: its exit code (`None`: killed after [`PCT_TIMEOUT`] or not started)
/// and the one-line message of its stderr.
struct PctRun {
    code: Option<i32>,
    message: String,
}

/// Runs `<pct> set <vmid> <options>`, stdin `/dev/null`; its stdout is copied to ours, its
/// stderr collected (and copied to ours when it succeeds: PVE's warnings).
fn run_pct(pct: &Path, vmid: Vmid, options: &[String]) -> PctRun {
    let mut child = match Command::new(pct)
        .arg("set")
        .arg(vmid.to_string())
        .args(options)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            return PctRun {
                code: None,
                message: format!("cannot run {}: {e}", pct.display()),
            }
        }
    };
    let pipe = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut r) = r {
                let _ = r.read_to_string(&mut s);
            }
            s
        })
    };
    let out = pipe(child.stdout.take().map(|r| Box::new(r) as _));
    let err = pipe(child.stderr.take().map(|r| Box::new(r) as _));
    let until = Instant::now() + PCT_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    print!("{stdout}");
    let code = status.and_then(|s| s.code());
    let message = match code {
        Some(0) => {
            eprint!("{stderr}");
            String::new()
        }
        Some(c) => match one_line(&stderr) {
            m if m.is_empty() => format!("pct exited with code {c}"),
            m => m,
        },
        None => format!(
            "pct set did not finish within {} s and was killed",
            PCT_TIMEOUT.as_secs()
        ),
    };
    PctRun { code, message }
}

/// Runs the command with the loaded agent.toml `cfg`.
///
/// # Errors
/// `Usage` (64) for a malformed vmid; `Unavailable` (69) when no `pct` is on `PATH`;
/// `Timeout` for the per-vmid lock; `Failed` (1) when `pct set` failed (PVE's message); the
/// convergence's own code when converging after it failed.
pub fn run(args: &SetArgs, cfg: &AgentConfig) -> CommandResult {
    let v = super::vmid_arg(&args.vmid)?;
    let pct = super::enroll::find_in_path(pve_integration::pct::PCT).ok_or_else(|| {
        CliError::new(
            ExitCode::Unavailable,
            "pct not found on PATH (is this a PVE node?)",
        )
    })?;
    let root = &cfg.toml.pve.root;
    let managed = Managed::find(cfg, v).map_err(|e| CliError::new(e.code(), e.to_string()))?;
    if managed.is_some() {
        refuse_pinned(cfg, v, &args.options)?;
    }
    let live =
        managed.filter(|_| inspect::is_running(cfg, v) && !crate::released::is_released(root, v));
    let Some(managed) = live else {
        // Stopped, not op-agent's or handed back to PVE: PVE's own code does it all.
        let r = run_pct(&pct, v, &args.options);
        return match r.code {
            Some(0) => Ok(ExitCode::Ok),
            _ => Err(CliError::new(
                ExitCode::Failed,
                format!("{v}: {}", r.message),
            )),
        };
    };
    let started = Instant::now();
    let deadline = Deadline::of_config(cfg, started);
    let lock = crate::lock::lock_vmid(&root.join("run/op-agent"), v.get(), deadline.lock_wait())
        .map_err(|e| CliError::new(ExitCode::Timeout, format!("{v}: {e}")))?;
    let _marker = EditMarker::write(engine::edit_marker(cfg, v))
        .map_err(|e| CliError::new(ExitCode::Failed, format!("{v}: not set: {e}")))?;
    let nets = touched_nets(&args.options);
    let handed = hand_back(cfg, &managed, &nets, deadline)?;
    let job = Job {
        managed,
        phase: Phase::PostStart,
        label: "set".into(),
        started: None,
    };
    let (note, pct_run) = if handed {
        let r = run_pct(&pct, v, &args.options);
        let detail = json!({"options": args.options, "exit": r.code, "error": r.message});
        let outcome = if r.code == Some(0) {
            Outcome::Ok
        } else {
            Outcome::Failed
        };
        (
            Note {
                step: "set.pct".into(),
                outcome,
                detail,
            },
            Some(r),
        )
    } else {
        let note = Note {
            step: "set.pct".into(),
            outcome: Outcome::Skipped,
            detail: json!({"options": args.options, "why": "a hand-back step failed"}),
        };
        (note, None)
    };
    let back = engine::converge_held(cfg, &job, &[note], &lock);
    drop(_marker);
    drop(lock);
    let ended = match &back.result {
        Ok(_) => "the NICs are converged on the PVE conf's values".to_string(),
        Err(e) => format!("converging afterwards failed: {e}"),
    };
    match (pct_run, back.result) {
        (Some(r), Ok(summary)) if r.code == Some(0) => {
            let nets: Vec<String> = nets.iter().map(|n| format!("net{n}")).collect();
            // (`--delete net1`: PVE removed the NIC; op-agent had nothing left to plug.)
            let summary = if summary == "nothing to change" {
                "PVE applied it; nothing left for op-agent to change".to_string()
            } else {
                summary
            };
            println!("{v}: set {}: {summary}", nets.join(","));
            Ok(ExitCode::Ok)
        }
        (Some(r), Err(e)) if r.code == Some(0) => Err(CliError::new(
            e.code(),
            format!("{v}: PVE applied the edit; {ended}"),
        )),
        (Some(r), _) => Err(CliError::new(
            ExitCode::Failed,
            format!("{v}: {}; {ended}", r.message),
        )),
        (None, Ok(_)) => Err(CliError::new(
            ExitCode::HandBack,
            format!(
                "{v}: not set: handing a NIC back to PVE failed (op-agent audit log shows \
                 which), pct was not run; {ended}"
            ),
        )),
        (None, Err(e)) => Err(CliError::new(
            e.code(),
            format!(
                "{v}: not set: handing a NIC back to PVE failed (op-agent audit log shows \
                 which), pct was not run; {ended}"
            ),
        )),
    }
}

/// Refuses (audit row `set.refused`), before anything is changed, an edit that changes a
/// `bridge`, `tag` or `trunks` the container TOML pins or deletes a NIC it has a `[[nic]]`
/// for (78, [`super::set_pins::conflicts`]: `pct set` would write it to the PVE conf while
/// op-agent kept the pinned value, or every later start would refuse the container), or
/// that gives a NIC `firewall=1` under `on_firewall = "refuse"` (77,
/// [`super::set_pins::firewall_refusals`]).
fn refuse_pinned(cfg: &AgentConfig, v: Vmid, options: &[String]) -> Result<(), CliError> {
    let ct = cfg
        .load_container(v)
        .map_err(|e| CliError::new(e.exit_code(), e.to_string()))?;
    let Some(ct) = ct else {
        return Ok(());
    };
    let firewall = super::set_pins::firewall_refusals(&ct, options);
    let pins = super::set_pins::conflicts(&ct, options);
    if pins.is_empty() && firewall.is_empty() {
        return Ok(());
    }
    let audit = AuditLog::open(
        &cfg.toml.audit.database,
        &AuditOptions {
            busy_timeout: Duration::from_secs(2),
            key_file: Some(cfg.audit_key_file()),
            ..AuditOptions::default()
        },
    );
    if let Ok(audit) = audit {
        let mut rec = Recorder::new(v.get(), "set", Some(audit), Instant::now());
        rec.outcome(
            "set.refused",
            Outcome::Failed,
            json!({"options": options, "pinned": pins, "firewall": firewall}),
        );
        if let Err(e) = rec.finish() {
            crate::errln!("op-agent set: {v}: audit row of the refusal not written: {e}");
        }
    }
    let (code, why) = if firewall.is_empty() {
        (ExitCode::Config, pins)
    } else {
        (ExitCode::Refused, firewall)
    };
    Err(CliError::new(
        code,
        format!(
            "{v}: not set: {}; edit the container TOML first; nothing was changed",
            why.join("; ")
        ),
    ))
}

/// [`engine::edit_marker`] while it exists; removed on drop (before the lock is released).
struct EditMarker(std::path::PathBuf);

impl EditMarker {
    fn write(path: std::path::PathBuf) -> std::io::Result<EditMarker> {
        std::fs::write(&path, format!("pid={}\n", std::process::id()))?;
        Ok(EditMarker(path))
    }
}

impl Drop for EditMarker {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Step 1 under the held lock: hands the NICs `nets` names back to PVE, with its own audit
/// rows. `Ok(true)` when every step succeeded, `Ok(false)` when one failed after the first
/// change (the caller converges back and does not run `pct`).
///
/// # Errors
/// A refusal before the first change (nothing changed): the one line and its exit code.
fn hand_back(
    cfg: &AgentConfig,
    managed: &Managed,
    nets: &BTreeSet<u8>,
    deadline: Deadline,
) -> Result<bool, CliError> {
    let v = managed.vmid;
    let root = &cfg.toml.pve.root;
    let fail = |code: ExitCode, m: String| CliError::new(code, format!("{v}: not set: {m}"));
    let d = managed
        .load()
        .map_err(|e| fail(e.exit_code(), e.to_string()))?
        .ok_or_else(|| {
            fail(
                ExitCode::Config,
                "container TOML or PVE conf vanished".into(),
            )
        })?;
    let pve = pve_integration::read_conf(root, v)
        .map_err(|e| fail(ExitCode::Config, e.to_string()))?
        .ok_or_else(|| fail(ExitCode::Config, "PVE conf vanished".into()))?;
    let audit = AuditLog::open(
        &cfg.toml.audit.database,
        &AuditOptions {
            busy_timeout: deadline.audit_busy_timeout(),
            key_file: Some(cfg.audit_key_file()),
            ..AuditOptions::default()
        },
    )
    .map_err(|e| fail(ExitCode::AuditIo, format!("{e}; nothing was changed")))?;
    let rt = inspect::runtime().map_err(|e| fail(e.code(), e.to_string()))?;
    let mut rec = Recorder::new(v.get(), "set", Some(audit), deadline.started());
    let r = rt.block_on(super::release::hand_back_all(
        cfg,
        &d,
        &pve,
        deadline,
        &mut rec,
        Some(nets),
    ));
    if let Err(e) = &r {
        rec.outcome(
            "run.failed",
            Outcome::Failed,
            json!({"error": e.to_string(), "exit": e.code().code()}),
        );
    }
    let ok = !rec.has_failed();
    let finished = rec.finish();
    match r {
        Err(e) => Err(fail(e.code(), format!("{e}; nothing was changed"))),
        Ok(_) => {
            if let Err(e) = finished {
                eprintln!("op-agent set: {v}: audit rows of the hand-back not written: {e}");
            }
            Ok(ok)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn the_nets_options_touch() {
        let t = touched_nets(&s(&["-net0", "name=eth0,bridge=ovsbr0,tag=20"]));
        assert_eq!(t.into_iter().collect::<Vec<_>>(), vec![0]);
        let t = touched_nets(&s(&[
            "--net3=name=eth3",
            "--delete",
            "net1,net12",
            "-memory",
            "512",
            "-net32",
            "x",
        ]));
        assert_eq!(t.into_iter().collect::<Vec<_>>(), vec![1, 3, 12]);
        assert!(touched_nets(&s(&["-description", "-net0"])).contains(&0));
        assert!(touched_nets(&s(&["-memory", "512"])).is_empty());
    }

    #[test]
    fn pves_message_in_one_line() {
        let e = "400 Parameter verification failed.\nnet0: invalid format - format error\n\
                 net0.tag: value must have a maximum value of 4094\n\npct set <vmid> [OPTIONS]\n";
        assert_eq!(
            one_line(e),
            "400 Parameter verification failed.; net0: invalid format - format error; \
             net0.tag: value must have a maximum value of 4094"
        );
    }
}
