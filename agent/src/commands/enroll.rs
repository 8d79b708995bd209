//! `op-agent enroll <vmid>`: the admin's one step from "installed" to "managed".
//!
//! Writes `containers/<vmid>.toml` from the flags and the container's PVE conf, checks it the
//! way a hook would ([`crate::desired::resolve`]), then runs
//! `pct set <vmid> --hookscript local:snippets/op-hook` (PVE `update_pct_config` →
//! `check_hookscript`: the snippet must exist and be executable on this node). Refuses when the
//! container already has another hookscript (unless `--force`), when the snippet is missing and
//! when `pct` is not on `PATH` (not a Proxmox VE host). `--dry-run` prints the file and the
//! command and changes nothing.
//!
//! `enroll --remove` is [`super::unenroll`].
//!
//! The helpers [`render_container_toml`] and [`write_config_file`] are shared with
//! `import-state`.

use super::CliError;
use crate::config::{self, AgentConfig, NetworkType, NicToml, OnFirewall};
use crate::exit::ExitCode;
use pve_integration::pct::{self, HOOK_VOLID};
use pve_integration::{paths, Vmid};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Arguments of `op-agent enroll` (their doc comments are clap's help text: `<vmid>` is literal).
#[allow(rustdoc::invalid_html_tags)]
#[derive(Debug, Clone, clap::Args)]
pub struct EnrollArgs {
    /// Container ids (100..999999999), each with a /etc/pve/lxc/<vmid>.conf on this node.
    #[arg(value_name = "VMID", required_unless_present = "all")]
    pub vmids: Vec<String>,
    /// Every container of this node (each /etc/pve/lxc/<vmid>.conf) not enrolled yet.
    #[arg(long, conflicts_with = "vmids")]
    pub all: bool,
    /// NICs with PVE's firewall=1: refuse to enroll (default, or what an existing TOML says)
    /// or skip them (they stay on PVE's firewall bridge, untouched).
    #[arg(long, value_enum, value_name = "ACTION")]
    pub on_firewall: Option<OnFirewallArg>,
    /// OVS bridge for the NIC chosen by --net (default: PVE's bridge=).
    #[arg(long, value_name = "BRIDGE")]
    pub bridge: Option<String>,
    /// Access VLAN 1..4094 for the NIC chosen by --net (default: PVE's tag=).
    #[arg(long, value_name = "TAG", value_parser = clap::value_parser!(u16).range(1..=4094))]
    pub tag: Option<u16>,
    /// Trunk VLANs, comma-separated (e.g. 20,30) for the NIC chosen by --net (default: PVE's trunks=).
    #[arg(long, value_name = "A,B", value_delimiter = ',',
          value_parser = clap::value_parser!(u16).range(1..=4094))]
    pub trunks: Option<Vec<u16>>,
    /// Which netN the --bridge/--tag/--trunks overrides apply to.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub net: u8,
    /// network_type = "netmaker": confirm the mesh, rename, keep PVE's attachment.
    #[arg(long)]
    pub netmaker: bool,
    /// Write the cluster-wide <pve root>/etc/pve/op-agent/containers/<vmid>.toml instead of the
    /// node-local containers/<vmid>.toml.
    #[arg(long)]
    pub cluster: bool,
    /// Replace another hookscript, or a container TOML with other content.
    #[arg(long)]
    pub force: bool,
    /// Keep the container TOML that is already there (left by an earlier container with this
    /// vmid) instead of refusing to adopt it; it is checked as the hook would. With `--force`,
    /// another hookscript in the PVE conf is replaced and the TOML still kept.
    #[arg(long, conflicts_with_all = ["bridge", "tag", "trunks", "netmaker"])]
    pub keep_config: bool,
    /// Take the containers off op-agent in one step: release a running one's NICs to PVE
    /// (as `op-agent release`), run `pct set <vmid> --delete hookscript`, remove the
    /// container TOML.
    #[arg(long, conflicts_with_all = ["all", "on_firewall", "bridge", "tag", "trunks",
          "netmaker", "cluster", "force", "keep_config"])]
    pub remove: bool,
    /// Print the TOML and the pct command without doing either.
    #[arg(long)]
    pub dry_run: bool,
}

/// `--on-firewall`: what enroll writes as `on_firewall` ([`OnFirewall`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnFirewallArg {
    /// `on_firewall = "refuse"`: enrolling a container with a firewall=1 NIC fails (exit 77).
    Refuse,
    /// `on_firewall = "skip"`: firewall=1 NICs are left to PVE (audit row `skipped`).
    Skip,
}

impl From<OnFirewallArg> for OnFirewall {
    fn from(a: OnFirewallArg) -> OnFirewall {
        match a {
            OnFirewallArg::Refuse => OnFirewall::Refuse,
            OnFirewallArg::Skip => OnFirewall::Skip,
        }
    }
}

/// What a container TOML written by op-agent says: the network type, `on_firewall` and
/// `[[nic]]` overrides.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ContainerSpec {
    /// `network_type`.
    pub network_type: NetworkType,
    /// `on_firewall` (written only when `skip`, the default being `refuse`).
    pub on_firewall: OnFirewall,
    /// `[[nic]]` tables, in order.
    pub nics: Vec<NicToml>,
}

/// Renders `spec` as a container TOML; `header` lines are written first as `# ` comments.
/// The output parses with [`config::parse_container`] to the same values.
pub fn render_container_toml(header: &[String], spec: &ContainerSpec) -> String {
    let mut out = String::new();
    for h in header {
        out.push_str("# ");
        out.push_str(h);
        out.push('\n');
    }
    out.push_str(&format!(
        "network_type = \"{}\"\n",
        spec.network_type.as_str()
    ));
    if spec.on_firewall == OnFirewall::Skip {
        out.push_str("on_firewall = \"skip\"\n");
    }
    for n in &spec.nics {
        out.push_str("\n[[nic]]\n");
        out.push_str(&format!("net = {}\n", n.net));
        if let Some(b) = &n.bridge {
            out.push_str(&format!("bridge = {}\n", toml::Value::String(b.clone())));
        }
        if let Some(t) = n.tag {
            out.push_str(&format!("tag = {t}\n"));
        }
        if let Some(tr) = &n.trunks {
            let list: Vec<String> = tr.iter().map(u16::to_string).collect();
            out.push_str(&format!("trunks = [{}]\n", list.join(", ")));
        }
        if let Some(name) = &n.name {
            out.push_str(&format!("name = {}\n", toml::Value::String(name.clone())));
        }
        if let Some(m) = n.manage {
            out.push_str(&format!("manage = {m}\n"));
        }
    }
    out
}

/// Writes `text` to `path` atomically (temporary file in the same folder, fsync, rename), mode
/// 0644, creating the parent folder (0755) when missing.
///
/// # Errors
/// The I/O error, as a message naming the path.
pub fn write_config_file(path: &Path, text: &str) -> Result<(), String> {
    let dir = path
        .parent()
        .ok_or_else(|| format!("{}: no parent folder", path.display()))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.tmp.{}", std::process::id()));
    let res = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    res.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot write {}: {e}", path.display())
    })
}

/// Finds an executable named `name` on `PATH`.
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| {
            std::fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// A refusal or failure: the exit code and the one-line reason.
struct Fail(ExitCode, String);

/// Checks the arguments that need no config: each vmid (100..999999999), `--net` (0..31),
/// and that the per-NIC overrides (`--bridge`, `--tag`, `--trunks`, `--net`) name one
/// container. Returns the vmids (empty with `--all`).
///
/// # Errors
/// `Usage` (64), saying which argument.
pub fn check_args(args: &EnrollArgs) -> Result<Vec<Vmid>, CliError> {
    if args.net > pve_integration::MAX_NET_INDEX {
        return Err(CliError::new(
            ExitCode::Usage,
            format!("--net {}: must be 0..31", args.net),
        ));
    }
    let vmids = super::enroll_multi::parse_vmids(&args.vmids)?;
    super::enroll_multi::check_overrides(args, vmids.len())?;
    Ok(vmids)
}

/// Enrolls one `vmid` (from [`check_args`]) with the loaded agent.toml `cfg`, reporting on
/// `out`.
///
/// # Errors
/// 69 no `pct` or snippet, 77 refused, 78 bad config, 1 `pct` failed (the file written is
/// restored or removed).
pub fn run_one(
    args: &EnrollArgs,
    vmid: Vmid,
    cfg: &AgentConfig,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    enroll(args, vmid, cfg, out).map_err(|Fail(code, msg)| CliError::new(code, msg))
}

fn enroll(
    args: &EnrollArgs,
    vmid: Vmid,
    cfg: &AgentConfig,
    out: &mut dyn Write,
) -> Result<(), Fail> {
    let root = cfg.toml.pve.root.clone();

    // The container's PVE conf: defaults for every NIC, and the current hookscript.
    let pve_path = paths::lxc_conf_path(&root, vmid);
    let pve = pve_integration::read_conf(&root, vmid)
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

    // The TOML to write.
    let on_firewall = super::enroll_multi::on_firewall(args, cfg, vmid);
    let mut spec = ContainerSpec {
        network_type: if args.netmaker {
            NetworkType::Netmaker
        } else {
            NetworkType::Bridge
        },
        on_firewall,
        nics: Vec::new(),
    };
    if args.bridge.is_some() || args.tag.is_some() || args.trunks.is_some() {
        spec.nics.push(NicToml {
            net: args.net,
            bridge: args.bridge.clone(),
            tag: args.tag,
            trunks: args.trunks.clone(),
            ..NicToml::default()
        });
    }
    let candidates = cfg.container_candidates(vmid);
    let (target, other) = if args.cluster {
        (candidates[0].clone(), candidates[1].clone())
    } else {
        (candidates[1].clone(), candidates[0].clone())
    };
    let mut flags = vec![format!("op-agent enroll {vmid}")];
    if let Some(b) = &args.bridge {
        flags.push(format!("--bridge {b}"));
    }
    if let Some(t) = args.tag {
        flags.push(format!("--tag {t}"));
    }
    if let Some(tr) = &args.trunks {
        let l: Vec<String> = tr.iter().map(u16::to_string).collect();
        flags.push(format!("--trunks {}", l.join(",")));
    }
    if args.net != 0 {
        flags.push(format!("--net {}", args.net));
    }
    if args.netmaker {
        flags.push("--netmaker".into());
    }
    if on_firewall == OnFirewall::Skip {
        flags.push("--on-firewall skip".into());
    }
    let header = vec![
        format!("Written by `{}`.", flags.join(" ")),
        format!(
            "Unset keys take PVE's values from {}; see /usr/share/doc/op-agent/examples/container.toml.",
            paths::lxc_conf_path(Path::new("/"), vmid).display()
        ),
    ];
    let text = render_container_toml(&header, &spec);

    // Check it as the hook will: same parser, same resolution against the PVE conf.
    let parsed = config::parse_container(&target, &text)
        .map_err(|e| Fail(ExitCode::Config, e.to_string()))?;
    crate::desired::resolve(vmid, &pve, &pve_path, &parsed).map_err(|e| {
        let msg = super::enroll_multi::firewall_hint(vmid, &e);
        Fail(e.exit_code(), msg)
    })?;

    // Existing files.
    let existing = config::read_checked(&target).map_err(|e| Fail(e.exit_code(), e.to_string()))?;
    let kept = keep_stale(
        args,
        vmid,
        &pve,
        &pve_path,
        &target,
        existing.is_some(),
        &other,
    )?;
    let unchanged = kept.is_some() || existing.as_deref() == Some(text.as_str());
    if existing.is_some() && !unchanged && !args.force {
        return Err(Fail(
            ExitCode::Refused,
            format!(
                "{} already exists with other content; use --force to replace it",
                target.display()
            ),
        ));
    }
    if !args.cluster && other.exists() && !args.force && kept.is_none() {
        return Err(Fail(
            ExitCode::Refused,
            format!(
                "{} exists and wins over {}; edit it, or use --cluster, or --force to write the \
                 node-local file anyway",
                other.display(),
                target.display()
            ),
        ));
    }

    // The hookscript.
    let snippet = paths::resolve_volume(&root, HOOK_VOLID)
        .map_err(|e| Fail(ExitCode::Internal, e.to_string()))?;
    let current_hook = pve.hookscript.as_deref();
    let hook_ok = current_hook == Some(HOOK_VOLID);
    if let Some(h) = current_hook {
        if !hook_ok && !args.force {
            return Err(Fail(
                ExitCode::Refused,
                format!(
                    "container {vmid} already has hookscript {h} ({}); op-agent would replace it: \
                     use --force to replace it",
                    pve_path.display()
                ),
            ));
        }
    }
    let snippet_ok = std::fs::metadata(&snippet)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false);
    if !snippet_ok {
        return Err(Fail(
            ExitCode::Unavailable,
            format!(
                "snippet {} is missing or not executable: reinstall the op-agent package, or \
                 install -m 0755 /usr/share/op-agent/op-hook {}",
                snippet.display(),
                snippet.display()
            ),
        ));
    }
    let pct = find_in_path(pct::PCT);
    let pct_cmd = pct::set_hookscript_cmdline(vmid, HOOK_VOLID);

    if args.dry_run {
        let w = |out: &mut dyn Write, s: String| {
            let _ = writeln!(out, "{s}");
        };
        // With --keep-config, the file that stays (checked by `keep_stale`), not `text`.
        let shown = match &kept {
            Some(k) => {
                w(out, format!("would keep {} (--keep-config):", k.display()));
                config::read_checked(k)
                    .map_err(|e| Fail(e.exit_code(), e.to_string()))?
                    .unwrap_or_default()
            }
            None => {
                if unchanged {
                    w(out, format!("{} is already up to date:", target.display()));
                } else {
                    w(out, format!("would write {}:", target.display()));
                }
                text.clone()
            }
        };
        for l in shown.lines() {
            w(out, format!("    {l}"));
        }
        if hook_ok {
            w(
                out,
                format!("hookscript already {HOOK_VOLID}; would still run: {pct_cmd}"),
            );
        } else {
            w(out, format!("would run: {pct_cmd}"));
        }
        if pct.is_none() {
            w(
                out,
                "note: pct is not on PATH: this is not a Proxmox VE host, a real run would refuse"
                    .into(),
            );
        }
        return Ok(());
    }

    let pct = pct.ok_or_else(|| {
        Fail(
            ExitCode::Unavailable,
            format!(
                "pct is not on PATH: this is not a Proxmox VE host (nothing written; on the PVE \
                 node run: op-agent enroll {vmid} ...)"
            ),
        )
    })?;

    if !unchanged {
        write_config_file(&target, &text).map_err(|e| Fail(ExitCode::Failed, e))?;
        let _ = writeln!(out, "wrote {}", target.display());
    } else if let Some(k) = &kept {
        let _ = writeln!(out, "kept {} (--keep-config)", k.display());
    } else {
        let _ = writeln!(out, "{} is already up to date", target.display());
    }
    let status = pct::set_hookscript(&pct, vmid, HOOK_VOLID);
    let ok = matches!(&status, Ok(s) if s.success());
    if !ok {
        // Leave things as they were: a TOML without the hookscript would only confuse.
        if !unchanged {
            let _ = match &existing {
                Some(old) => write_config_file(&target, old),
                None => std::fs::remove_file(&target).map_err(|e| e.to_string()),
            };
        }
        let why = match status {
            Ok(s) => format!("{s}"),
            Err(e) => e.to_string(),
        };
        return Err(Fail(
            ExitCode::Failed,
            format!(
                "`{pct_cmd}` failed ({why}) ({} {})",
                pct.display(),
                if existing.is_some() {
                    format!("restored {}", target.display())
                } else {
                    format!("removed {}", target.display())
                }
            ),
        ));
    }
    let _ = writeln!(out, "ran {pct_cmd}");
    // A running container is converged at once by op-agent.service (`op-agent watch` reads
    // the PVE conf's new hookscript line), not at its next start; a release left by an
    // earlier `op-agent release` / `enroll --remove` no longer holds it back.
    if let Err(e) = crate::released::clear(&root, vmid) {
        let _ = writeln!(out, "warning: cannot remove the release marker: {e}");
    }
    let when = if crate::inspect::is_running(cfg, vmid) {
        format!(
            "it is running: op-agent.service renames and re-plugs its NICs now (without the \
             service: `op-agent apply {vmid}`)"
        )
    } else {
        format!("the next `pct start {vmid}` renames its NICs")
    };
    let _ = writeln!(
        out,
        "container {vmid} is enrolled: {when}; see `op-agent status` and `op-agent audit log`"
    );
    Ok(())
}

/// A container TOML for `vmid` while its PVE conf does not name op-agent's hookscript is left
/// from an earlier container with that vmid (`pct destroy` keeps it): enroll adopts it only
/// with `--keep-config` (then returns its path, after checking it as the hook would), replaces
/// it with `--force` (`None`), and refuses otherwise (77, naming the file and both ways out).
fn keep_stale(
    args: &EnrollArgs,
    vmid: Vmid,
    pve: &pve_integration::PveConf,
    pve_path: &Path,
    target: &Path,
    target_exists: bool,
    other: &Path,
) -> Result<Option<PathBuf>, Fail> {
    let enrolled = pve
        .hookscript
        .as_deref()
        .is_some_and(pve_integration::is_op_hook);
    // The file the hook would read: the cluster-wide one wins.
    let cluster_first = if args.cluster { target } else { other };
    let local = if args.cluster { other } else { target };
    let present = if cluster_first.exists() {
        Some(cluster_first)
    } else if target_exists || local.exists() {
        Some(local)
    } else {
        None
    };
    // Enrolled already: `--keep-config` keeps its TOML too (a second `import-state --enroll`
    // or `enroll --keep-config` is not a conflict).
    let Some(stale) = present.filter(|_| !enrolled || args.keep_config) else {
        return Ok(None);
    };
    if args.keep_config {
        let text = config::read_checked(stale)
            .map_err(|e| Fail(e.exit_code(), e.to_string()))?
            .unwrap_or_default();
        let ct = config::parse_container(stale, &text)
            .map_err(|e| Fail(ExitCode::Config, e.to_string()))?;
        crate::desired::resolve(vmid, pve, pve_path, &ct)
            .map_err(|e| Fail(ExitCode::Config, e.to_string()))?;
        return Ok(Some(stale.to_path_buf()));
    }
    if args.force {
        return Ok(None);
    }
    Err(Fail(
        ExitCode::Refused,
        format!(
            "{} is left from an earlier container {vmid} ({} does not name op-hook): check it, then keep it with --keep-config, replace it with --force, or remove it: rm {}",
            stale.display(),
            pve_path.display(),
            stale.display()
        ),
    ))
}

#[cfg(test)]
#[path = "enroll_tests.rs"]
mod tests;
