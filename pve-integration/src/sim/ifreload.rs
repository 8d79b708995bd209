//! `ifreload`: what ifupdown2's `ifreload -a` does to the running ports of the bridges in
//! `R/etc/network/interfaces` (PVE runs it on GUI *Apply Configuration*, SDN apply and
//! `systemctl reload networking`). Only the port removal is simulated; addresses, MTUs of
//! ports, bonds, VLANs are not.
//!
//! Every `auto` stanza (`ifupdownMain._iface_whitelisted` with `-a`) that configures a bridge
//! with a port list ([`crate::ifupdown::Stanza::bridge`]), in file order, whose bridge exists
//! (`self.cache.link_exists`; a missing one ifupdown2 would create, empty):
//!
//! - OVS: `addons/openvswitch.py` `openvswitch._addbridge`, one `ovs-vsctl` transaction:
//!   `--may-exist add-br <br>` (`ovs-options` appended for a fake bridge with `ovs-bridge`,
//!   else `set bridge <br> <ovs-options>`), then for each port of `ovs-vsctl list-ports <br>`
//!   not in `ovs_ports` and not matched by the condone regex `--if-exists del-port <br>
//!   <port>`, then `--if-exists clear bridge <br> auto_attach controller external-ids
//!   fail_mode flood_vlans ipfix mirrors netflow other_config protocols sflow`, `--if-exists
//!   clear interface <br> mtu_request external-ids other_config options`, and `set Interface
//!   <br> mtu_request=<ovs-mtu>` when set. Not run: `ovs-extra` (a shell command line there).
//! - Linux bridge: `addons/bridge.py` `bridge._add_ports`: for each enslaved port
//!   (`/sys/class/net/<br>/brif`) not in `bridge-ports` and not matched by the condone regex:
//!   `ip link set <port> nomaster`, `ip link set <port> down` when no stanza configures the
//!   port, and `disable_ipv6 = 0` for it (`handle_ipv6(…, '0')`).
//!
//! ifupdown2 iterates the OVS difference as a Python set (no order); ports are handled in
//! sorted order here.

use super::exec::ip;
use super::network::sys_exists;
use super::{Res, Sim};
use crate::ifupdown::{self, BridgeKind, BridgeStanza};

impl Sim {
    /// `ifreload -a` on `R/etc/network/interfaces`: removes the ports ifupdown2 removes and
    /// prints one line per removed or condoned port. A bridge whose condone regex does not
    /// compile is left alone (ifupdown2's `re.compile` raises before it changes anything) and
    /// makes the command fail after the other bridges are done.
    pub fn ifreload(&self) -> Res<()> {
        let parsed = ifupdown::read(&self.root).map_err(|e| e.to_string())?;
        let Some(conf) = parsed else {
            return Err(format!(
                "{}: no such file",
                self.root.join("etc/network/interfaces").display()
            ));
        };
        for d in &conf.diagnostics {
            eprintln!("pve-sim ifreload: warning: {d}");
        }
        let mut errors = Vec::new();
        for stanza in &conf.stanzas {
            let Some(b) = stanza.bridge() else { continue };
            if !conf.is_auto(&stanza.name) || !sys_exists(&stanza.name, "") {
                continue;
            }
            if let Some(expr) = &b.ports.unsupported {
                println!(
                    "{}: port expression '{expr}' (glob/regex) is not simulated: bridge left alone",
                    stanza.name
                );
                continue;
            }
            let r = match b.kind {
                BridgeKind::Ovs => self.reload_ovs(&b),
                BridgeKind::Linux => reload_linux(&b, &conf),
            };
            if let Err(e) = r {
                errors.push(format!("{}: {}: {e}", b.stanza.at, stanza.name));
            }
        }
        match errors.is_empty() {
            true => Ok(()),
            false => Err(errors.join("; ")),
        }
    }

    /// `openvswitch._addbridge` on an existing bridge.
    fn reload_ovs(&self, b: &BridgeStanza<'_>) -> Res<()> {
        let br = b.stanza.name.as_str();
        // `_get_ovs_port_condone_regex` compiles it first: an error changes nothing.
        b.condone.matches("").map_err(|e| one_line_err(&e))?;
        let mut running: Vec<String> = self
            .vsctl(&["list-ports", br])?
            .lines()
            .map(str::to_string)
            .collect();
        running.sort();
        let options = b.stanza.first("ovs-options").map(|o| o.value.as_str());
        let parent = b.stanza.first("ovs-bridge");
        let mut cmds: Vec<Vec<String>> = Vec::new();
        let words = |s: &str| s.split_whitespace().map(str::to_string).collect::<Vec<_>>();
        let mut add = words(&format!("--may-exist add-br {br}"));
        match (parent, options) {
            (Some(_), Some(o)) => add.extend(words(o)),
            (None, Some(o)) => cmds.push(words(&format!("set bridge {br} {o}"))),
            _ => {}
        }
        cmds.insert(0, add);
        for port in &running {
            if b.ports.names.contains(port) {
                continue;
            }
            if b.condone.matches(port).map_err(|e| one_line_err(&e))? {
                println!(
                    "{br}: port {port} will stay enslaved as it matches with ovs-ports-condone-regex {}",
                    b.condone.pattern
                );
                continue;
            }
            println!("{br}: --if-exists del-port {br} {port}");
            cmds.push(words(&format!("--if-exists del-port {br} {port}")));
        }
        cmds.push(words(&format!("--if-exists clear bridge {br} auto_attach controller external-ids fail_mode flood_vlans ipfix mirrors netflow other_config protocols sflow")));
        cmds.push(words(&format!(
            "--if-exists clear interface {br} mtu_request external-ids other_config options"
        )));
        if b.stanza.first("ovs-extra").is_some() {
            println!("{br}: ovs_extra is not simulated");
        }
        if let Some(mtu) = b.stanza.first("ovs-mtu") {
            cmds.push(words(&format!(
                "set Interface {br} mtu_request={}",
                mtu.value
            )));
        }
        let mut args: Vec<&str> = Vec::new();
        for c in &cmds {
            args.push("--");
            args.extend(c.iter().map(String::as_str));
        }
        self.vsctl(&args).map(|_| ())
    }
}

fn one_line_err(e: &regex::Error) -> String {
    format!("condone regex: {}", super::one_line(&e.to_string()))
}

/// `bridge._add_ports`, the "delete active ports not in the new port list" part.
fn reload_linux(b: &BridgeStanza<'_>, conf: &ifupdown::Interfaces) -> Res<()> {
    let br = b.stanza.name.as_str();
    let dir = std::path::Path::new("/sys/class/net").join(br).join("brif");
    let mut running: Vec<String> = std::fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    running.sort();
    // The regex is compiled before any port is touched, as ifupdown2 does.
    b.condone.matches("").map_err(|e| one_line_err(&e))?;
    for port in &running {
        if !b.removes(port).map_err(|e| one_line_err(&e))? {
            if !b.ports.names.contains(port) {
                println!(
                    "{br}: port {port} will stay enslaved as it matches with bridge-ports-condone-regex {}",
                    b.condone.pattern
                );
            }
            continue;
        }
        println!("{br}: link_set_nomaster {port}");
        ip(&["link", "set", "dev", port, "nomaster"])?;
        if !conf.has_stanza(port) {
            println!("{br}: link_down {port}");
            ip(&["link", "set", "dev", port, "down"])?;
        }
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{port}/disable_ipv6"), "0");
    }
    Ok(())
}
