//! `op-agent status [<vmid>] [--json]`: one row per managed NIC with vmid, mode, whether the
//! container runs op-agent's hookscript, NIC, link name, bridge, tag, the last audit seq of
//! the container and state (`ok` / `drift` / `stopped` / `released` / `via <if>` in netmaker
//! mode), in 80 columns; with `--counters` a second table of each NIC's traffic counters
//! ([`crate::counters`]), which `--json` always carries. Exit 69 when OVSDB cannot be reached
//! (the states are then unknown).

use super::CliError;
use crate::config::{AgentConfig, NetworkType};
use crate::exit::ExitCode;
use crate::inspect;
use crate::netlink::LinkStats;
use serde::Serialize;

/// Arguments of `op-agent status`.
#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    /// Only this container (100..999999999).
    pub vmid: Option<String>,
    /// Print JSON (as `--output-format json`): `{"containers": [...]}`, one object per
    /// container with `vmid`, `mode`, `running`, `hookscript`, `last_seq`, `counters` (the sum
    /// of its NICs', null when unknown) and `nics`, each with `net`, `link`, `bridge`, `tag`,
    /// `state`, `drift` and `counters` (`rx_bytes`, `tx_bytes`, `rx_packets`, `tx_packets`,
    /// `rx_dropped`, `tx_dropped`).
    #[arg(long)]
    pub json: bool,
    /// Also print each NIC's traffic counters (host link rx/tx bytes and packets) and each
    /// container's sum; `--json` always has them (`"counters":{"rx_bytes":...}`).
    #[arg(long)]
    pub counters: bool,
}

/// One NIC row.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NicStatus {
    /// PVE `netN` index.
    pub net: u8,
    /// The host link as found (`vi100`, or `veth100i0` when not renamed); `None` when absent.
    pub link: Option<String>,
    /// The bridge the Port is on, else the configured one.
    pub bridge: Option<String>,
    /// The Port's tag, else the configured one.
    pub tag: Option<u16>,
    /// `ok`, `drift`, `stopped` (container not running), `skipped: <why>` (left to PVE:
    /// `firewall=1`, `manage = false`), `unknown` (OVSDB not reachable),
    /// `error` (config), `released` (handed back to PVE by `op-agent release`) or
    /// `mesh via <if>`.
    pub state: String,
    /// The `check` lines of this NIC.
    pub drift: Vec<String>,
    /// The host link's traffic counters (`IFLA_STATS64`; rx = sent by the container); `None`
    /// when the link is absent or could not be read.
    pub counters: Option<LinkStats>,
}

/// One container.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ContainerStatus {
    pub vmid: u32,
    /// `bridge` or `netmaker`.
    pub mode: String,
    pub running: bool,
    /// Highest audit `seq` with this vmid, if any.
    pub last_seq: Option<i64>,
    /// PVE's `hookscript:` of the container (`local:snippets/op-hook` when enrolled).
    pub hookscript: Option<String>,
    /// OVSDB or netlink could not be reached: the states are unknown.
    #[serde(skip)]
    pub unavailable: bool,
    /// A config or OVSDB error that prevented the comparison.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub nics: Vec<NicStatus>,
    /// The sum of the NICs' counters; `None` when no NIC has any.
    pub counters: Option<LinkStats>,
}

/// The status of `vmid`. `down`: OVSDB already failed to answer for an earlier container of
/// this listing, so its states are unknown too, without another wait of `[ovsdb]
/// timeout_ms`.
async fn status_of(
    cfg: &AgentConfig,
    vmid: pve_integration::Vmid,
    down: Option<&str>,
) -> ContainerStatus {
    let running = inspect::is_running(cfg, vmid);
    let mut st = ContainerStatus {
        vmid: vmid.get(),
        mode: String::new(),
        running,
        last_seq: inspect::last_audit_seq(&cfg.toml.audit.database, vmid.get()),
        hookscript: pve_integration::read_conf(&cfg.toml.pve.root, vmid)
            .ok()
            .flatten()
            .and_then(|c| c.hookscript),
        unavailable: false,
        error: None,
        nics: Vec::new(),
        counters: None,
    };
    let d = match inspect::load_desired(cfg, vmid) {
        Ok(Some(d)) => d,
        Ok(None) => {
            st.error = Some("not managed".into());
            return st;
        }
        Err(e) => {
            st.error = Some(e.to_string());
            return st;
        }
    };
    st.mode = d.network_type.as_str().to_string();
    let released = crate::released::is_released(&cfg.toml.pve.root, vmid);
    let observed = match down {
        Some(e) => {
            st.unavailable = true;
            st.error = Some(e.to_string());
            None
        }
        None => Some(inspect::observe(cfg, &d).await),
    };
    let (obs, mesh) = match observed {
        None => (None, None),
        Some(Ok((t, o))) => {
            let mesh = if d.network_type == NetworkType::Netmaker {
                Some(crate::mesh::confirm(&t.nl, &cfg.toml.mesh).await)
            } else {
                None
            };
            (Some(o), mesh)
        }
        Some(Err(e)) => {
            // Unreachable or not answering (a hung ovsdb-server): either way unknown.
            st.unavailable = matches!(e.code(), ExitCode::Unavailable | ExitCode::Timeout);
            st.error = Some(e.to_string());
            (None, None)
        }
    };
    let drift = match (&obs, running) {
        (Some(o), true) => inspect::drift(&d, o),
        _ => Vec::new(),
    };
    for (i, nic) in d.nics.iter().enumerate() {
        let o = obs.as_ref().and_then(|o| o.nics.get(i));
        let n = nic.net.get();
        // A container-wide finding (`apply would refuse: …`) concerns every NIC: a refused
        // plan is never `ok`.
        let lines: Vec<String> = drift
            .iter()
            .filter(|x| x.net == Some(n) || x.net.is_none())
            .map(|x| x.line.clone())
            .collect();
        let port = o.and_then(|o| o.target_port.as_ref().or(o.pve_port.as_ref()));
        let state = if !running {
            "stopped".to_string()
        } else if released {
            "released".to_string()
        } else if let crate::desired::NicMode::Skip(why) = &nic.mode {
            // Left to PVE (firewall=1 with on_firewall = "skip", manage = false): op-agent
            // does not vouch for it.
            format!("skipped: {why}")
        } else if obs.is_none() {
            "unknown".to_string()
        } else if !lines.is_empty() {
            "drift".to_string()
        } else {
            match &mesh {
                Some(Ok(m)) => m.via(),
                Some(Err(_)) => "drift".to_string(),
                None => "ok".to_string(),
            }
        };
        st.nics.push(NicStatus {
            net: n,
            link: o.and_then(|o| {
                o.target_link
                    .as_ref()
                    .or(o.pve_link.as_ref())
                    .map(|l| l.name.clone())
            }),
            bridge: port
                .and_then(|p| p.bridge.clone())
                .or_else(|| nic.bridge.as_ref().map(|b| b.to_string())),
            tag: port
                .map(|p| p.tag)
                .unwrap_or_else(|| nic.tag.map(|t| t.get())),
            state,
            drift: lines,
            counters: None,
        });
    }
    if let Some(Err(m)) = mesh {
        st.error = Some(m);
    }
    st
}

/// Collects the status of `only` (or every managed container). Must not run inside a tokio
/// runtime (it makes its own).
pub fn collect(
    cfg: &AgentConfig,
    only: Option<pve_integration::Vmid>,
) -> Result<Vec<ContainerStatus>, String> {
    let vmids = match only {
        Some(v) => vec![v],
        None => inspect::managed(cfg),
    };
    let rt = inspect::runtime().map_err(|e| e.to_string())?;
    Ok(rt.block_on(async {
        let mut out: Vec<ContainerStatus> = Vec::new();
        let mut down: Option<String> = None;
        for v in vmids {
            let st = status_of(cfg, v, down.as_deref()).await;
            if st.unavailable && down.is_none() {
                down.clone_from(&st.error);
            }
            out.push(st);
        }
        match crate::counters::dump().await {
            Ok(stats) => crate::counters::fill_status(&mut out, &stats),
            Err(e) => log::warn!("status: no traffic counters: {e}"),
        }
        out
    }))
}

fn dash<T: ToString>(v: &Option<T>) -> String {
    v.as_ref()
        .map(|x| x.to_string())
        .unwrap_or_else(|| "-".into())
}

/// The HOOK column: `yes` (op-agent's hookscript), `no` (none) or `other`.
fn hook_word(h: &Option<String>) -> &'static str {
    match h.as_deref() {
        Some(pve_integration::pct::HOOK_VOLID) => "yes",
        Some(_) => "other",
        None => "no",
    }
}

/// One table row, 80 columns for the usual names (a longer value pushes the rest right).
#[allow(clippy::too_many_arguments)]
fn row(
    vmid: &str,
    mode: &str,
    hook: &str,
    nic: &str,
    link: &str,
    bridge: &str,
    tag: &str,
    seq: &str,
    state: &str,
) -> String {
    format!(
        "{vmid:<9} {mode:<8} {hook:<4} {nic:<5} {link:<14} {bridge:<10} {tag:<4} {seq:<6} {state}"
    )
    .trim_end()
    .to_string()
}

/// The text table of `list` (header first); `empty_host` adds how to enroll when it is empty.
pub fn table(list: &[ContainerStatus], empty_host: bool) -> Vec<String> {
    if list.is_empty() && empty_host {
        return vec![
            "no container is managed by op-agent on this host; enroll one with \
             `op-agent enroll <vmid>`, or every container with `op-agent enroll --all`"
                .to_string(),
        ];
    }
    let mut out = vec![row(
        "VMID", "MODE", "HOOK", "NIC", "LINK", "BRIDGE", "TAG", "SEQ", "STATE",
    )];
    for c in list {
        let vmid = c.vmid.to_string();
        let mode = if c.mode.is_empty() {
            "-"
        } else {
            c.mode.as_str()
        };
        let hook = hook_word(&c.hookscript);
        let seq = dash(&c.last_seq);
        if c.nics.is_empty() {
            let state = if c.running { "error" } else { "stopped" };
            out.push(row(&vmid, mode, hook, "-", "-", "-", "-", &seq, state));
        }
        let mut left = Vec::new();
        for n in &c.nics {
            let mut state = n.state.strip_prefix("mesh ").unwrap_or(&n.state);
            if let Some(why) = state.strip_prefix("skipped: ") {
                left.push(format!("  {} net{}: left to PVE ({why})", c.vmid, n.net));
                state = "skipped";
            }
            out.push(row(
                &vmid,
                mode,
                hook,
                &format!("net{}", n.net),
                &dash(&n.link),
                &dash(&n.bridge),
                &dash(&n.tag),
                &seq,
                state,
            ));
        }
        out.extend(left);
        if let Some(e) = &c.error {
            out.push(format!("  {}: {e}", c.vmid));
        }
    }
    out
}

/// Prints the status of `only` (or every managed container) from the loaded agent.toml `cfg`:
/// a table, or with `format` JSON one JSON object. A malformed vmid (64) is refused before,
/// by [`super::vmid_arg`]. Returns the exit code: 0, or 69 when OVSDB cannot be reached.
///
/// # Errors
/// `Internal` (70) when no tokio runtime can be built.
pub fn run(
    only: Option<pve_integration::Vmid>,
    format: crate::output::OutputFormat,
    counters: bool,
    cfg: &AgentConfig,
) -> Result<ExitCode, CliError> {
    let list = collect(cfg, only).map_err(|e| CliError::new(ExitCode::Internal, e))?;
    let db = &cfg.toml.audit.database;
    if std::fs::symlink_metadata(db).is_ok() {
        if let Err(e) = crate::audit::reader::open_read_only(db) {
            log::warn!(
                "status: audit database {} cannot be read, SEQ unknown: {e}",
                db.display()
            );
        }
    }
    let mut down = list
        .iter()
        .find(|c| c.unavailable)
        .and_then(|c| c.error.clone());
    if list.is_empty() {
        down = ovsdb_unreachable(cfg);
    }
    // Containers the watch service is retrying (`watch::retry`), with their last error.
    let mut retrying = crate::watch::retry::read(&crate::watch::retry::path(cfg));
    retrying.retain(|v, _| list.iter().any(|c| c.vmid == *v));
    if format.is_json() {
        format.print(&serde_json::json!({ "containers": list, "retrying": retrying }));
    } else {
        for l in table(&list, only.is_none()) {
            println!("{l}");
        }
        for (v, r) in &retrying {
            println!("  {v}: retrying (attempt {}): {}", r.attempt, r.last_error);
        }
    }
    if counters && !format.is_json() {
        print!("\n{}", crate::counters::status_table(&list));
    }
    match down {
        Some(e) => Err(CliError::new(
            ExitCode::Unavailable,
            format!("OVSDB cannot be reached, states unknown: {e}"),
        )),
        None => Ok(ExitCode::Ok),
    }
}

/// With no container to observe: why OVSDB cannot be reached, if it cannot.
fn ovsdb_unreachable(cfg: &AgentConfig) -> Option<String> {
    let rt = inspect::runtime().ok()?;
    let timeout = std::time::Duration::from_millis(cfg.toml.ovsdb.timeout_ms);
    rt.block_on(crate::ovsdb::Client::connect(
        &cfg.toml.ovsdb.socket,
        timeout,
    ))
    .err()
    .map(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ct(vmid: u32, running: bool, hook: Option<&str>) -> ContainerStatus {
        ContainerStatus {
            vmid,
            mode: "netmaker".into(),
            running,
            last_seq: Some(123_456),
            hookscript: hook.map(str::to_string),
            unavailable: false,
            error: None,
            counters: None,
            nics: vec![NicStatus {
                net: 31,
                link: Some("vi999999999i31".into()),
                bridge: Some("vmbr0v1234".into()),
                tag: Some(4094),
                state: if running {
                    "mesh via netmaker".into()
                } else {
                    "stopped".into()
                },
                drift: vec![],
                counters: None,
            }],
        }
    }

    #[test]
    fn table_fits_80_columns_with_hook_and_stopped() {
        let t = table(
            &[
                ct(999_999_999, true, Some("local:snippets/op-hook")),
                ct(100, false, None),
                ct(101, false, Some("local:snippets/other.pl")),
            ],
            true,
        );
        for l in &t {
            assert!(l.len() <= 80, "{} columns: {l}", l.len());
        }
        assert!(
            t[0].contains(" HOOK ") && t[0].ends_with("STATE"),
            "{}",
            t[0]
        );
        assert!(
            t[1].contains(" yes ") && t[1].ends_with("via netmaker"),
            "{}",
            t[1]
        );
        assert!(
            t[2].contains(" no ") && t[2].ends_with("stopped"),
            "{}",
            t[2]
        );
        assert!(t[3].contains(" other "), "{}", t[3]);
        let empty = table(&[], true);
        assert!(empty[0].contains("op-agent enroll <vmid>"), "{empty:?}");
    }
}
