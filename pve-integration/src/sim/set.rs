//! `pct set <vmid> -netN … / --delete netN`: pve-container `src/PVE/API2/LXC/Config.pm`
//! `update_vm` under `PVE::LXC::Config->lock_config`, `src/PVE/LXC/Config.pm`
//! `update_pct_config` (new values into `[pve:pending]`, in memory), then
//! `vmconfig_hotplug_pending` (running: [`Sim::update_net`] per NIC) or
//! `vmconfig_apply_pending` (stopped), and `write_config` only when no option failed.
//!
//! Only `netN`, `hookscript` and `delete` are simulated. `hookscript` is one of pve-container's
//! `$LXC_FASTPLUG_OPTIONS`: on a running container its new value, or its deletion, is applied
//! to the conf at once.

use std::fs::{File, OpenOptions, TryLockError};
use std::time::{Duration, Instant};

use super::conf_file::{print_lxc_network, ConfFile};
use super::hotplug::parse_net;
use super::network::read_bridge_mtu;
use super::{pve_veth_of, Res, Sim};
use crate::ids::Vmid;
use crate::net::MacAddr;
use crate::{paths, running};

/// pve-container `lock_config` → pve-guest-common `lock_config_full($vmid, 10, …)`.
const CONFIG_LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// Why `pct set` failed, rendered as PVE's CLI prints it ([`SetError::render`]).
#[derive(Debug)]
pub enum SetError {
    /// pve-common `raise_param_exc`: HTTP 400 with one message per option.
    Param(Vec<(String, String)>),
    /// A plain `die` inside the handler.
    Die(String),
}

impl SetError {
    /// The text on stderr: `400 Parameter verification failed.`, then `<opt>: <msg>` per
    /// option and the short usage (pve-common `PVE::Exception::stringify`, the usage added by
    /// `PVE::RESTHandler::cli_handler`); or the `die` message.
    pub fn render(&self) -> String {
        match self {
            SetError::Param(errs) => {
                let mut s = String::from("400 Parameter verification failed.\n");
                for (opt, msg) in errs {
                    s.push_str(&format!("{opt}: {}\n", msg.trim_end()));
                }
                s.push_str("pct set <vmid> [OPTIONS]\n");
                s
            }
            SetError::Die(m) => format!("{}\n", m.trim_end()),
        }
    }
}

impl From<String> for SetError {
    fn from(s: String) -> SetError {
        SetError::Die(s)
    }
}

/// The one non-`netN` option simulated (a `$LXC_FASTPLUG_OPTIONS` entry).
const HOOKSCRIPT: &str = "hookscript";

/// pve-guest-common `PVE::GuestHelpers::check_hookscript`: the volume must be a snippet that
/// exists and is executable on this node.
fn check_hookscript(root: &std::path::Path, volid: &str) -> Result<(), String> {
    if !volid.contains(":snippets/") {
        return Err(format!("'{volid}' is not in the snippets directory"));
    }
    let path = paths::resolve_volume(root, volid).map_err(|e| e.to_string())?;
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(&path) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(()),
        Ok(m) if m.is_file() => Err(format!("Script '{}' is not executable", path.display())),
        _ => Err(format!("Script '{}' does not exist", path.display())),
    }
}

/// `netN` → `N` when `N` is 0..=31 (`$MAX_LXC_NETWORKS`), as `option_exists` allows.
fn net_option(opt: &str) -> Option<u8> {
    let d = opt.strip_prefix("net")?;
    if d.is_empty() || !d.bytes().all(|b| b.is_ascii_digit()) || (d.len() > 1 && d.starts_with('0'))
    {
        return None;
    }
    d.parse::<u8>().ok().filter(|n| *n <= 31)
}

/// pve-common `random_ether_addr` with PVE's default `mac_prefix` `BC:24:11`.
fn random_mac() -> MacAddr {
    let mut b = [0u8; 3];
    if let Ok(mut f) = File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut b);
    }
    MacAddr::new([0xbc, 0x24, 0x11, b[0], b[1], b[2]])
}

/// The options of one `pct set`: `netN` values in command-line order, and the options to
/// delete.
pub type SetArgs = (Vec<(String, String)>, Vec<String>);

/// The arguments of `pct set <vmid>`: `-netN <value>` / `--netN <value>` pairs and
/// `-delete` / `--delete <opt[,opt]…>` (pve-common `PVE::JSONSchema::get_options`).
///
/// # Errors
/// [`SetError::Param`] for an option outside the simulated ones or a missing value.
pub fn parse_set_args(args: &[String]) -> Result<SetArgs, SetError> {
    let mut params = Vec::new();
    let mut delete = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let opt = a.trim_start_matches('-');
        if opt.len() == a.len() {
            return Err(SetError::Param(vec![(
                a.clone(),
                "too many arguments".into(),
            )]));
        }
        let Some(value) = it.next() else {
            return Err(SetError::Param(vec![(
                opt.to_string(),
                "missing value".into(),
            )]));
        };
        if opt == "delete" {
            delete.extend(
                value
                    .split([',', ';', ' '])
                    .filter(|o| !o.is_empty())
                    .map(str::to_string),
            );
        } else if net_option(opt).is_some() || opt == HOOKSCRIPT {
            params.push((opt.to_string(), value.clone()));
        } else {
            return Err(SetError::Param(vec![(
                opt.to_string(),
                "property is not defined in schema and the schema does not allow additional properties (pve-sim simulates netN, hookscript and delete only)".into(),
            )]));
        }
    }
    Ok((params, delete))
}

impl Sim {
    /// pve-guest-common `lock_config_full` → pve-common `lock_file_full`: an exclusive flock
    /// on `<root>/run/lock/lxc/pve-config-<vmid>.lock`, waited for up to 10 s; released when
    /// the returned file is dropped.
    ///
    /// # Errors
    /// `can't lock file '<path>' - got timeout`, or the I/O error.
    pub fn lock_config(&self, vmid: Vmid) -> Res<File> {
        let dir = self.root.join("run/lock/lxc");
        std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let path = dir.join(format!("pve-config-{vmid}.lock"));
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("can't open file '{}' - {e}", path.display()))?;
        let deadline = Instant::now() + CONFIG_LOCK_TIMEOUT;
        loop {
            match f.try_lock() {
                Ok(()) => return Ok(f),
                Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(TryLockError::WouldBlock) => {
                    return Err(format!(
                        "can't lock file '{}' - got timeout",
                        path.display()
                    ))
                }
                Err(TryLockError::Error(e)) => {
                    return Err(format!("can't lock file '{}' - {e}", path.display()))
                }
            }
        }
    }

    /// `pct set <vmid>` for `netN` values and deletions: pve-container `update_vm`.
    ///
    /// # Errors
    /// A [`SetError`] as PVE raises it; with [`SetError::Param`] from a hotplug failure the
    /// conf is not written by this function (`update_net`'s own intermediate writes stay).
    pub fn set(
        &self,
        vmid: Vmid,
        params: &[(String, String)],
        delete: &[String],
    ) -> Result<(), SetError> {
        // Schema check of the values before the handler runs (pve-common RESTHandler).
        let mut bad = Vec::new();
        let mut nets = Vec::new();
        let mut fastplug = Vec::new();
        for (opt, value) in params {
            if opt == HOOKSCRIPT {
                // update_pct_config: `check_hookscript($value)` before anything is written.
                check_hookscript(&self.root, value)
                    .map_err(|e| SetError::Param(vec![(opt.clone(), e)]))?;
                fastplug.push((opt.clone(), value.clone()));
                continue;
            }
            let n = net_option(opt).ok_or_else(|| SetError::Die(format!("bad option {opt}")))?;
            match parse_net(n, value) {
                Ok(net) => nets.push((opt.clone(), n, value.clone(), net)),
                Err(e) => bad.push((opt.clone(), format!("invalid format - {e}"))),
            }
        }
        if !bad.is_empty() {
            return Err(SetError::Param(bad));
        }
        let _lock = self.lock_config(vmid)?;
        // load_config: a missing conf or one that does not parse is refused.
        self.conf(vmid)?;
        let mut conf = ConfFile::load(paths::lxc_conf_path(&self.root, vmid))?;
        if let Some(lock) = conf.get("lock") {
            // pve-guest-common `check_lock`.
            return Err(SetError::Die(format!("CT {vmid} is locked ({lock})")));
        }
        for opt in delete {
            if net_option(opt).is_none() && opt != HOOKSCRIPT {
                return Err(SetError::Param(vec![(
                    "delete".into(),
                    format!("unknown option '{opt}'"),
                )]));
            }
            if params.iter().any(|(o, _)| o == opt) {
                return Err(SetError::Param(vec![(
                    "delete".into(),
                    format!("you can't use '-{opt}' and -delete {opt}' at the same time"),
                )]));
            }
        }
        let running = running::is_running(&self.root, vmid);
        let mut modified: Vec<String> = Vec::new();
        // update_pct_config: deletions and new values go to the pending section (in memory).
        for opt in delete {
            if conf.get(opt).is_none() && conf.pending(opt).is_none() {
                eprintln!("cannot delete '{opt}' - not set in current configuration!");
                continue;
            }
            modified.push(opt.clone());
            conf.add_to_pending_delete(opt);
        }
        for (opt, value) in &fastplug {
            modified.push(opt.clone());
            conf.set_pending(opt, value);
            conf.remove_from_pending_delete(opt);
        }
        for (opt, _, value, net) in &nets {
            if let Some(mtu) = net.mtu {
                let bridge = net.bridge.as_ref().map(|b| b.as_str()).unwrap_or("");
                let bridge_mtu = read_bridge_mtu(bridge)?;
                if mtu > bridge_mtu {
                    return Err(SetError::Die(format!(
                        "{opt}: MTU size '{mtu}' is bigger than bridge MTU '{bridge_mtu}'"
                    )));
                }
            }
            modified.push(opt.clone());
            conf.set_pending(opt, value);
            conf.remove_from_pending_delete(opt);
        }
        conf.cleanup_pending();
        let errors = if running {
            self.vmconfig_hotplug_pending(vmid, &mut conf, &modified)
        } else {
            vmconfig_apply_pending(&mut conf, &modified)
        };
        // "don't write to config if we get any errors – this can result in a broken config"
        if !errors.is_empty() {
            return Err(SetError::Param(errors));
        }
        conf.write()?;
        // update_lxc_config: the LXC config follows the PVE conf.
        if self.ctdir(vmid).join("config.base").exists() {
            let parsed = self.conf(vmid)?;
            self.write_lxc_config(vmid, &parsed)?;
        }
        Ok(())
    }

    /// pve-container `vmconfig_hotplug_pending` for `netN`: deletions first (sorted; only
    /// `net\d`, one digit, as PVE's regex: `veth_delete` by PVE's name), then new and changed
    /// values (sorted by key) through [`Sim::update_net`]. Returns `(opt, message)` per failed
    /// option, message `unable to hotplug <opt>: <error>`.
    fn vmconfig_hotplug_pending(
        &self,
        vmid: Vmid,
        conf: &mut ConfFile,
        selection: &[String],
    ) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        // `$LXC_FASTPLUG_OPTIONS`: new values first, straight into the conf.
        for opt in conf.pending_keys() {
            if opt == HOOKSCRIPT && selection.contains(&opt) {
                let v = conf.pending(&opt).unwrap_or_default().to_string();
                conf.set(&opt, &v);
                conf.remove_pending(&opt);
            }
        }
        let mut deletes = conf.pending_delete();
        deletes.sort();
        for opt in deletes.iter().filter(|o| selection.contains(o)) {
            if opt == HOOKSCRIPT {
                // A fastplug option: "pass", then deleted from the conf.
                conf.remove(opt);
                conf.remove_from_pending_delete(opt);
                continue;
            }
            let netid = opt
                .strip_prefix("net")
                .filter(|d| d.len() == 1 && d.bytes().all(|b| b.is_ascii_digit()));
            // A single digit: always a valid index.
            let Some(veth) = netid.and_then(|d| pve_veth_of(vmid, d.parse().ok()?).ok()) else {
                continue; // "skip": not hotpluggable, stays pending until the next stop
            };
            // kill_dhclients for host-managed NICs is not simulated (no dhclient here).
            self.veth_delete(&veth);
            conf.remove(opt);
            conf.remove_from_pending_delete(opt);
        }
        let mut keys = conf.pending_keys();
        keys.sort();
        for opt in keys.iter().filter(|o| selection.contains(o)) {
            let Some(netid) = net_option(opt) else {
                continue; // "skip"
            };
            let value = conf.pending(opt).unwrap_or_default().to_string();
            let r = parse_net(netid, &value).and_then(|mut net| {
                // parse_lxc_network invents a MAC when there is none.
                if net.hwaddr.is_none() {
                    net.hwaddr = Some(random_mac());
                }
                let printed = print_lxc_network(&net);
                self.update_net(vmid, conf, opt, &net, netid)?;
                Ok(printed)
            });
            match r {
                Ok(v) => {
                    conf.set(opt, &v);
                    conf.remove_pending(opt);
                }
                Err(e) => errors.push((opt.clone(), format!("unable to hotplug {opt}: {e}"))),
            }
        }
        errors
    }
}

/// pve-container `vmconfig_apply_pending` for `netN` on a stopped container: deletions and
/// new values move from the pending section to the current one; nothing on the host.
fn vmconfig_apply_pending(conf: &mut ConfFile, selection: &[String]) -> Vec<(String, String)> {
    for opt in conf.pending_delete() {
        if selection.contains(&opt) {
            conf.remove(&opt);
            conf.remove_from_pending_delete(&opt);
        }
    }
    for opt in conf.pending_keys() {
        if selection.contains(&opt) {
            let v = conf.pending(&opt).unwrap_or_default().to_string();
            conf.set(&opt, &v);
            conf.remove_pending(&opt);
        }
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hookscript_is_a_simulated_option_checked_as_pve_does() {
        let a: Vec<String> = [
            "-hookscript",
            "local:snippets/h",
            "--delete",
            "hookscript,net1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let (params, delete) = parse_set_args(&a).unwrap();
        assert_eq!(
            params,
            vec![("hookscript".into(), "local:snippets/h".into())]
        );
        assert_eq!(delete, vec!["hookscript".to_string(), "net1".to_string()]);
        let d = tempfile::tempdir().unwrap();
        let snippets = d.path().join("var/lib/vz/snippets");
        std::fs::create_dir_all(&snippets).unwrap();
        let e = check_hookscript(d.path(), "local:snippets/h").unwrap_err();
        assert!(e.contains("does not exist"), "{e}");
        std::fs::write(snippets.join("h"), "#!/bin/sh\n").unwrap();
        let e = check_hookscript(d.path(), "local:snippets/h").unwrap_err();
        assert!(e.contains("is not executable"), "{e}");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(snippets.join("h"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        check_hookscript(d.path(), "local:snippets/h").unwrap();
        assert!(check_hookscript(d.path(), "local:iso/h").is_err());
    }
}
