//! `op-agent check --all`: [`super::check::check_vmid`] for every managed container, then the
//! condone regexes of `<pve root>/etc/network/interfaces` for the bridges their NICs are
//! plugged into (the `WARNING` lines of `config check`). Read-only.
//!
//! Output: one line per finding (`<vmid> <line>`, `<vmid>: ERROR <why>`), `<vmid>: ok
//! (running|stopped)` for the others, the warnings, and a count. Exit 0 when every container
//! matches its config and no pre-start would refuse, 1 otherwise (warnings do not count), 69
//! when OVSDB cannot be reached, 75 when it does not answer in time (one wait: the containers
//! after the first that failed so are `not checked`).

use super::check::check_vmid;
use super::config_check::{interfaces_warnings, BridgeUse};
use super::{CliError, CommandResult};
use crate::config::AgentConfig;
use crate::exit::ExitCode;
use crate::inspect;
use std::io::Write;

/// What `check --all` found for one container (also its JSON shape).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ContainerCheck {
    /// The container.
    pub vmid: u32,
    /// `ok`, `drift` (findings, including a refusal pre-start would make), `error` (its
    /// config cannot be loaded, e.g. firewall=1 without `on_firewall = "skip"`, or OVSDB did
    /// not answer), `not-checked` (OVSDB did not answer for an earlier container) or
    /// `not-managed`.
    pub state: &'static str,
    /// Whether it is running; `None` when its config could not be loaded.
    pub running: Option<bool>,
    /// The findings, one line each (the error for `error`).
    pub findings: Vec<String>,
    /// OVSDB (or netlink) did not answer for this container, or it was not checked because it
    /// did not answer for an earlier one: the exit code that says so (69 unreachable, 75 no
    /// answer in time), which the command ends with.
    #[serde(skip)]
    pub unreachable: Option<ExitCode>,
}

/// The exit code of a `check --all` report: the first `unreachable` one (69/75), else 0 when
/// every container is `ok` (or `not-managed` where `allow_unmanaged`), else 1.
pub fn exit_code(checks: &[ContainerCheck], allow_unmanaged: bool) -> ExitCode {
    if let Some(c) = checks.iter().find_map(|c| c.unreachable) {
        return c;
    }
    let fine =
        |c: &ContainerCheck| c.state == "ok" || (allow_unmanaged && c.state == "not-managed");
    if checks.iter().all(fine) {
        ExitCode::Ok
    } else {
        ExitCode::Failed
    }
}

impl ContainerCheck {
    /// The result of [`check_vmid`] for `vmid` that ran to its end (`None`: not managed).
    pub fn of(vmid: pve_integration::Vmid, r: Option<super::check::CheckReport>) -> Self {
        match r {
            None => ContainerCheck {
                vmid: vmid.get(),
                state: "not-managed",
                running: None,
                findings: Vec::new(),
                unreachable: None,
            },
            Some(r) => ContainerCheck {
                vmid: vmid.get(),
                state: if r.drift.is_empty() { "ok" } else { "drift" },
                running: Some(r.running),
                findings: r.drift.into_iter().map(|d| d.line).collect(),
                unreachable: None,
            },
        }
    }
}

/// Checks every managed container; returns each result, and the NICs plugged per bridge.
///
/// # Errors
/// OVSDB or netlink cannot be reached (69): the first container's error, when every
/// container failed for that reason.
pub fn check_all(cfg: &AgentConfig) -> Result<(Vec<ContainerCheck>, BridgeUse), CliError> {
    let mut out = Vec::new();
    let mut on_bridge = BridgeUse::default();
    // After one container found OVSDB unreachable or not answering, the others are not
    // checked: each would wait out `timeout_ms` again for the same answer.
    let mut down: Option<(String, ExitCode)> = None;
    for vmid in inspect::managed(cfg) {
        if let Some((why, code)) = &down {
            if matches!(inspect::load_desired(cfg, vmid), Ok(None)) {
                continue;
            }
            out.push(ContainerCheck {
                vmid: vmid.get(),
                state: "not-checked",
                running: None,
                findings: vec![format!("not checked: {why}")],
                unreachable: Some(*code),
            });
            continue;
        }
        let c = match check_vmid(cfg, vmid) {
            Ok(None) => continue,
            Ok(Some(r)) => {
                for (bridge, name) in &r.plugged {
                    on_bridge
                        .entry(bridge.clone())
                        .or_default()
                        .push((name.clone(), vmid.to_string()));
                }
                ContainerCheck::of(vmid, Some(r))
            }
            Err((ExitCode::Unavailable, msg)) if out.is_empty() => {
                // The host's OVSDB, not this container's: nothing was checked.
                return Err(CliError::new(
                    ExitCode::Unavailable,
                    format!("nothing checked: {msg}"),
                ));
            }
            Err((code, msg)) => {
                let unreachable =
                    matches!(code, ExitCode::Unavailable | ExitCode::Timeout).then_some(code);
                if unreachable.is_some() {
                    down = Some((format!("the same failure as {vmid}: {msg}"), code));
                }
                ContainerCheck {
                    vmid: vmid.get(),
                    state: "error",
                    running: None,
                    findings: vec![msg],
                    unreachable,
                }
            }
        };
        out.push(c);
    }
    Ok((out, on_bridge))
}

/// Prints the text report of [`check_all`] on `w`; returns the exit code.
pub fn print_text(
    cfg: &AgentConfig,
    checks: &[ContainerCheck],
    on_bridge: &BridgeUse,
    w: &mut dyn Write,
) -> ExitCode {
    if checks.is_empty() {
        let _ = writeln!(
            w,
            "no managed container: enroll one with `op-agent enroll <vmid>` (or --all)"
        );
    }
    for c in checks {
        match (c.state, c.running) {
            ("ok", Some(r)) => {
                let _ = writeln!(w, "{}: ok ({})", c.vmid, running_word(r));
            }
            ("error" | "not-checked", _) => {
                let _ = writeln!(w, "{}: ERROR {}", c.vmid, c.findings.join("; "));
            }
            _ => {
                for f in &c.findings {
                    let _ = writeln!(w, "{} {f}", c.vmid);
                }
            }
        }
    }
    let warnings = interfaces_warnings(&cfg.toml.pve.root, on_bridge, w);
    // The container OVSDB failed for was not checked either.
    let skipped = checks.iter().filter(|c| c.unreachable.is_some()).count();
    let bad = checks
        .iter()
        .filter(|c| c.state != "ok" && c.unreachable.is_none())
        .count();
    let _ = writeln!(
        w,
        "{} checked: {} ok, {bad} with findings, {warnings} warning{}{}",
        checks.len() - skipped,
        checks.len() - bad - skipped,
        if warnings == 1 { "" } else { "s" },
        if skipped > 0 {
            format!("; {skipped} not checked")
        } else {
            String::new()
        }
    );
    exit_code(checks, false)
}

fn running_word(r: bool) -> &'static str {
    if r {
        "running"
    } else {
        "stopped"
    }
}

/// `op-agent check --all` on stdout: text, or with `format` JSON
/// `{"containers":[ContainerCheck…],"warnings":["<file>:<line>: …"]}`.
///
/// # Errors
/// Those of [`check_all`].
pub fn run(cfg: &AgentConfig, format: crate::output::OutputFormat) -> CommandResult {
    let (checks, on_bridge) = check_all(cfg)?;
    if !format.is_json() {
        return Ok(print_text(
            cfg,
            &checks,
            &on_bridge,
            &mut crate::output::stdout(),
        ));
    }
    let mut buf = Vec::new();
    interfaces_warnings(&cfg.toml.pve.root, &on_bridge, &mut buf);
    let warnings: Vec<String> = String::from_utf8_lossy(&buf)
        .lines()
        .filter_map(|l| l.strip_prefix("WARNING ").map(str::to_string))
        .collect();
    format.print(&serde_json::json!({"containers": checks, "warnings": warnings}));
    Ok(exit_code(&checks, false))
}
