//! `op-agent status [<vmid>] [--json]`: one row per managed NIC with vmid, mode, NIC,
//! link name, bridge, tag, state (`ok` / `drift` / `down` / `mesh via <if>`) and the last audit
//! seq of the container; with `--counters` a second table of each NIC's traffic counters
//! ([`crate::counters`]), which `--json` always carries.

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
    /// Print JSON: `{"containers":[{"vmid":100,"mode":"bridge","running":true,"last_seq":7,
    /// "nics":[{"net":0,"link":"vi100","bridge":"ovsbr0","tag":10,"state":"ok","drift":[],
    /// "counters":{"rx_bytes":..,"tx_bytes":..,"rx_packets":..,"tx_packets":..,"rx_dropped":..,
    /// "tx_dropped":..}}],"counters":{...the sum...}}]}` (`counters` null when unknown).
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
    /// `ok`, `drift`, `down` (container not running), `error` (config), `released` (handed back
    /// to PVE by `op-agent release`) or `mesh via <if>`.
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
    /// A config or OVSDB error that prevented the comparison.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub nics: Vec<NicStatus>,
    /// The sum of the NICs' counters; `None` when no NIC has any.
    pub counters: Option<LinkStats>,
}

async fn status_of(cfg: &AgentConfig, vmid: pve_integration::Vmid) -> ContainerStatus {
    let running = inspect::is_running(cfg, vmid);
    let mut st = ContainerStatus {
        vmid: vmid.get(),
        mode: String::new(),
        running,
        last_seq: inspect::last_audit_seq(&cfg.toml.audit.database, vmid.get()),
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
    let observed = inspect::observe(cfg, &d).await;
    let (obs, mesh) = match observed {
        Ok((t, o)) => {
            let mesh = if d.network_type == NetworkType::Netmaker {
                Some(crate::mesh::confirm(&t.nl, &cfg.toml.mesh).await)
            } else {
                None
            };
            (Some(o), mesh)
        }
        Err(e) => {
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
        let lines: Vec<String> = drift
            .iter()
            .filter(|x| x.net == Some(n))
            .map(|x| x.line.clone())
            .collect();
        let port = o.and_then(|o| o.target_port.as_ref().or(o.pve_port.as_ref()));
        let state = if !running {
            "down".to_string()
        } else if released {
            "released".to_string()
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
        let mut out = Vec::new();
        for v in vmids {
            out.push(status_of(cfg, v).await);
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

/// Prints the status of `only` (or every managed container) from the loaded agent.toml `cfg`:
/// a table, or with `json` one JSON object. A malformed vmid (64) is refused before, by
/// [`super::vmid_arg`].
///
/// # Errors
/// `Internal` (70) when no tokio runtime can be built.
pub fn run(
    only: Option<pve_integration::Vmid>,
    json: bool,
    counters: bool,
    cfg: &AgentConfig,
) -> Result<(), CliError> {
    let list = collect(cfg, only).map_err(|e| CliError::new(ExitCode::Internal, e))?;
    if json {
        println!("{}", serde_json::json!({ "containers": list }));
        return Ok(());
    }
    println!(
        "{:<10} {:<9} {:<5} {:<15} {:<15} {:<5} {:<18} LAST-SEQ",
        "VMID", "MODE", "NIC", "LINK", "BRIDGE", "TAG", "STATE"
    );
    for c in &list {
        if c.nics.is_empty() {
            println!(
                "{:<10} {:<9} {:<5} {:<15} {:<15} {:<5} {:<18} {}",
                c.vmid,
                dash(&Some(&c.mode).filter(|m| !m.is_empty())),
                "-",
                "-",
                "-",
                "-",
                if c.running { "error" } else { "down" },
                dash(&c.last_seq)
            );
        }
        for n in &c.nics {
            println!(
                "{:<10} {:<9} {:<5} {:<15} {:<15} {:<5} {:<18} {}",
                c.vmid,
                c.mode,
                format!("net{}", n.net),
                dash(&n.link),
                dash(&n.bridge),
                dash(&n.tag),
                n.state,
                dash(&c.last_seq)
            );
        }
        if let Some(e) = &c.error {
            println!("  {}: {e}", c.vmid);
        }
    }
    if counters {
        print!("\n{}", crate::counters::status_table(&list));
    }
    Ok(())
}
