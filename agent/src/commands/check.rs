//! `op-agent check <vmid>` (like the CNI specification's CHECK): compares the live links and OVSDB rows
//! with the config without changing anything, and predicts what the next pre-start would
//! refuse (the pre-start plan made on the live state: bridges in OVSDB and Open vSwitch, names
//! free). `op-agent check --all` does so for every managed container
//! ([`super::check_all`]).

use super::{CliError, CommandResult};
use crate::config::{AgentConfig, NetworkType};
use crate::exit::ExitCode;
use crate::inspect::{self, Drift};

/// Arguments of `op-agent check`.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    /// Container id (100..999999999).
    #[arg(required_unless_present = "all")]
    pub vmid: Option<String>,
    /// Every managed container, and the condone regexes of the bridges they are plugged into
    /// (as `config check`).
    #[arg(long, conflicts_with = "vmid")]
    pub all: bool,
}

/// What `check` found for one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// Whether the container is running (`pve_integration::running::is_running`).
    pub running: bool,
    /// The differences, one line each; empty when the live state matches. A refusal the
    /// next pre-start would make is one line `pre-start would refuse: <why>`.
    pub drift: Vec<Drift>,
    /// `(bridge, link name)` of each NIC op-agent plugs into an OVS bridge.
    pub plugged: Vec<(String, String)>,
}

/// Checks one managed container. A running container is compared field by field
/// ([`inspect::drift`]) and, in netmaker mode, its mesh interface is confirmed; a stopped one
/// must have no Port row op-agent owns for it. `Ok(None)`: not managed.
pub fn check_vmid(
    cfg: &AgentConfig,
    vmid: pve_integration::Vmid,
) -> Result<Option<CheckReport>, (ExitCode, String)> {
    let d = match inspect::load_desired(cfg, vmid) {
        Ok(Some(d)) => d,
        Ok(None) => return Ok(None),
        Err(e) => return Err((e.exit_code(), e.to_string())),
    };
    let running = inspect::is_running(cfg, vmid);
    let rt = inspect::runtime().map_err(|e| (e.code(), e.to_string()))?;
    rt.block_on(async {
        let (target, obs) = inspect::observe(cfg, &d)
            .await
            .map_err(|e| (e.code(), e.to_string()))?;
        let mut drift = Vec::new();
        if let Err(e) = crate::engine::plan::plan_pre_start(&d, &obs) {
            drift.push(Drift {
                net: None,
                line: format!("pre-start would refuse: {e}"),
            });
        }
        let plugged = d
            .nics
            .iter()
            .zip(&obs.nics)
            .filter(|(n, o)| !n.link_down && crate::engine::plan::left_alone(n, o, &obs).is_none())
            .filter_map(|(n, _)| Some((n.bridge.as_ref()?.to_string(), n.name.to_string())))
            .collect();
        if running {
            drift = inspect::drift(&d, &obs);
            if d.network_type == NetworkType::Netmaker {
                if let Err(m) = crate::mesh::confirm(&target.nl, &cfg.toml.mesh).await {
                    drift.push(Drift {
                        net: None,
                        line: format!("mesh: {m}"),
                    });
                }
            }
        } else {
            for p in &obs.owned_ports {
                drift.push(Drift {
                    net: None,
                    line: format!(
                        "container is not running but op-agent's OVS port {} is still on {}",
                        p.name,
                        p.bridge.as_deref().unwrap_or("none")
                    ),
                });
            }
        }
        Ok(Some(CheckReport {
            running,
            drift,
            plugged,
        }))
    })
}

/// Checks `vmid` against the loaded agent.toml `cfg` and prints the result on stdout (as
/// text, or as the JSON of [`super::check_all::ContainerCheck`] with `format` JSON); returns
/// `Ok` with the exit code: 0 when the live state matches the config (or the guest is not
/// managed), 1 with one line per difference.
///
/// # Errors
/// `<vmid>: <why>`: 69 when OVSDB is unreachable, 78 for a bad container config, others as
/// [`check_vmid`]. A malformed vmid (64) is refused before, by [`super::vmid_arg`].
pub fn run(
    vmid: pve_integration::Vmid,
    cfg: &AgentConfig,
    format: crate::output::OutputFormat,
) -> CommandResult {
    let r = check_vmid(cfg, vmid);
    if format.is_json() {
        let c = match r {
            Ok(r) => super::check_all::ContainerCheck::of(vmid, r),
            Err((code, msg)) => return Err(CliError::new(code, format!("{vmid}: {msg}"))),
        };
        format.print(&c);
        return Ok(if c.state == "drift" {
            ExitCode::Failed
        } else {
            ExitCode::Ok
        });
    }
    match r {
        Ok(None) => {
            println!("{vmid}: not managed by op-agent");
            Ok(ExitCode::Ok)
        }
        Ok(Some(r)) if r.drift.is_empty() => {
            println!(
                "{vmid}: ok ({})",
                if r.running { "running" } else { "stopped" }
            );
            Ok(ExitCode::Ok)
        }
        Ok(Some(r)) => {
            for d in &r.drift {
                println!("{vmid} {}", d.line);
            }
            Ok(ExitCode::Failed)
        }
        Err((code, msg)) => Err(CliError::new(code, format!("{vmid}: {msg}"))),
    }
}
