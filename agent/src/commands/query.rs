//! `op-agent query --plugin lxc`: JSON in the shape the old op-dbus query printed, so
//! existing `jq` scripts keep working:
//! `{"containers":[{"id":"100","veth":"vi100","bridge":"ovsbr0","running":true,
//! "properties":{"network_type":"bridge"}}]}`.

use super::CliError;
use crate::config::AgentConfig;
use crate::exit::ExitCode;
use crate::inspect;
use serde_json::{json, Value};

/// Arguments of `op-agent query`.
#[derive(Debug, Clone, clap::Args)]
pub struct QueryArgs {
    /// The op-dbus plugin to emulate; only `lxc` exists.
    #[arg(long)]
    pub plugin: String,
}

/// The `containers` array: one object per managed container, ascending vmid. `veth` and
/// `bridge` are those of the first managed NIC (net0 normally): op-agent's link name and the
/// configured bridge. A container whose config does not resolve is listed with `veth`/`bridge`
/// null and `properties.error` set.
pub fn containers(cfg: &AgentConfig) -> Vec<Value> {
    inspect::managed(cfg)
        .into_iter()
        .map(|v| {
            let running = inspect::is_running(cfg, v);
            match inspect::load_desired(cfg, v) {
                Ok(Some(d)) => {
                    let nic = d.nics.first();
                    json!({
                        "id": v.to_string(),
                        "veth": nic.map(|n| n.name.to_string()),
                        "bridge": nic.and_then(|n| n.bridge.as_ref().map(|b| b.to_string())),
                        "running": running,
                        "properties": {"network_type": d.network_type.as_str()},
                    })
                }
                Ok(None) => json!({"id": v.to_string(), "veth": null, "bridge": null,
                                   "running": running, "properties": {}}),
                Err(e) => json!({"id": v.to_string(), "veth": null, "bridge": null,
                                 "running": running, "properties": {"error": e.to_string()}}),
            }
        })
        .collect()
}

/// Refuses any `--plugin` but `lxc` (`Usage`, 64), before the config is loaded.
pub fn check_plugin(args: &QueryArgs) -> Result<(), CliError> {
    if args.plugin != "lxc" {
        return Err(CliError::new(
            ExitCode::Usage,
            format!(
                "unknown plugin {:?}: only \"lxc\" is supported",
                args.plugin
            ),
        ));
    }
    Ok(())
}

/// Prints `{"containers":[…]}` ([`containers`]) for the loaded agent.toml `cfg`. Never fails
/// once the config is loaded.
pub fn run(cfg: &AgentConfig) -> Result<(), CliError> {
    println!("{}", json!({ "containers": containers(cfg) }));
    Ok(())
}
