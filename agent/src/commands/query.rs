//! `op-agent query --plugin lxc` (issue 5): JSON in the shape the old op-dbus query printed, so
//! existing `jq` scripts keep working:
//! `{"containers":[{"id":"100","veth":"vi100","bridge":"ovsbr0","running":true,
//! "properties":{"network_type":"bridge"}}]}`.

use crate::config::AgentConfig;
use crate::exit::ExitCode;
use crate::inspect;
use serde_json::{json, Value};
use std::path::Path;

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

/// Runs the command; returns 0, 64 for an unknown plugin, 78 for a bad agent.toml.
pub fn run(args: &QueryArgs, config: Option<&Path>) -> i32 {
    crate::logging::init("op-agent", log::LevelFilter::Warn, false);
    if args.plugin != "lxc" {
        eprintln!(
            "op-agent query: unknown plugin {:?}: only \"lxc\" is supported",
            args.plugin
        );
        return ExitCode::Usage.code();
    }
    let cfg = match AgentConfig::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("op-agent query: {e}");
            return e.exit_code().code();
        }
    };
    println!("{}", json!({ "containers": containers(&cfg) }));
    ExitCode::Ok.code()
}
