//! A container configuration as the live `pct set` path edits and writes it: pve-container
//! `src/PVE/LXC/Config.pm` `write_pct_config` (main section, then `[pve:pending]`, then the
//! snapshot sections), written like pve-common `PVE::Tools::file_set_contents` (a temporary
//! file renamed over the old one), and `print_lxc_network` for `netN` values.
//!
//! Unlike PVE, which re-serializes every key, lines of the main section that are not edited
//! are kept byte for byte (comments, raw `lxc.*` keys, order); an edited key keeps its place
//! and a new one is appended to the main section.

use std::path::PathBuf;

use super::Res;
use crate::net::NetConf;

/// The text of `<root>/etc/pve/lxc/<vmid>.conf`, split into what `pct set` edits.
#[derive(Debug, Clone)]
pub(crate) struct ConfFile {
    path: PathBuf,
    /// Lines of the main section, without line breaks.
    main: Vec<String>,
    /// `[pve:pending]` keys in file order (`delete` holds a comma-separated list).
    pending: Vec<(String, String)>,
    /// Everything from the first snapshot section header on, verbatim.
    rest: String,
}

/// `key` and value of a main-section line `key: value` (pve-container `parse_pct_config`:
/// `^([a-z][a-z_]*\d*):\s*(.+?)\s*$`), `None` for other lines.
fn key_value(line: &str) -> Option<(&str, &str)> {
    let (k, v) = line.split_once(':')?;
    let mut chars = k.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    let name_end = k.trim_end_matches(|c: char| c.is_ascii_digit());
    let body_ok = name_end.chars().all(|c| c.is_ascii_lowercase() || c == '_');
    (first_ok && body_ok && !v.trim().is_empty()).then(|| (k, v.trim()))
}

impl ConfFile {
    /// Reads and splits the file at `path`.
    ///
    /// # Errors
    /// The I/O error, as PVE's `load_config` words it.
    pub(crate) fn load(path: PathBuf) -> Res<ConfFile> {
        let text = std::fs::read_to_string(&path).map_err(|e| {
            format!(
                "Configuration file '{}' does not exist ({e})",
                path.display()
            )
        })?;
        let mut main = Vec::new();
        let mut pending = Vec::new();
        let mut rest = String::new();
        let mut in_pending = false;
        let mut lines = text.lines();
        while let Some(line) = lines.next() {
            let t = line.trim();
            if t.starts_with('[') && t.ends_with(']') {
                if t.eq_ignore_ascii_case("[pve:pending]") {
                    in_pending = true;
                    continue;
                }
                rest.push_str(line);
                rest.push('\n');
                for l in lines.by_ref() {
                    rest.push_str(l);
                    rest.push('\n');
                }
                break;
            }
            if in_pending {
                if let Some((k, v)) = key_value(line) {
                    pending.push((k.to_string(), v.to_string()));
                }
            } else {
                main.push(line.to_string());
            }
        }
        while main.last().is_some_and(|l| l.trim().is_empty()) {
            main.pop();
        }
        Ok(ConfFile {
            path,
            main,
            pending,
            rest,
        })
    }

    /// The main-section value of `key`.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.main
            .iter()
            .filter_map(|l| key_value(l))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }

    /// Sets `key` in the main section (in place, or appended).
    pub(crate) fn set(&mut self, key: &str, value: &str) {
        let line = format!("{key}: {value}");
        match self
            .main
            .iter()
            .position(|l| key_value(l).is_some_and(|(k, _)| k == key))
        {
            Some(i) => self.main[i] = line,
            None => self.main.push(line),
        }
    }

    /// Removes `key` from the main section (`delete $conf->{$opt}`).
    pub(crate) fn remove(&mut self, key: &str) {
        self.main
            .retain(|l| key_value(l).is_none_or(|(k, _)| k != key));
    }

    /// The `[pve:pending]` value of `key`.
    pub(crate) fn pending(&self, key: &str) -> Option<&str> {
        self.pending
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Pending keys other than `delete`, in file order.
    pub(crate) fn pending_keys(&self) -> Vec<String> {
        self.pending
            .iter()
            .filter(|(k, _)| k != "delete")
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// `$conf->{pending}->{$key} = $value`.
    pub(crate) fn set_pending(&mut self, key: &str, value: &str) {
        match self.pending.iter_mut().find(|(k, _)| k == key) {
            Some(e) => e.1 = value.to_string(),
            None => self.pending.push((key.to_string(), value.to_string())),
        }
    }

    /// `delete $conf->{pending}->{$key}`.
    pub(crate) fn remove_pending(&mut self, key: &str) {
        self.pending.retain(|(k, _)| k != key);
    }

    /// The options of the pending `delete:` list (pve-guest-common `parse_pending_delete`,
    /// without the `!` force marker, which containers do not implement).
    pub(crate) fn pending_delete(&self) -> Vec<String> {
        self.pending("delete")
            .map(|d| {
                d.split([',', ';', ' '])
                    .map(|o| o.trim_start_matches('!'))
                    .filter(|o| !o.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }

    fn set_pending_delete(&mut self, opts: &[String]) {
        if opts.is_empty() {
            self.remove_pending("delete");
        } else {
            self.set_pending("delete", &opts.join(","));
        }
    }

    /// pve-guest-common `add_to_pending_delete`.
    pub(crate) fn add_to_pending_delete(&mut self, opt: &str) {
        let mut d = self.pending_delete();
        if !d.iter().any(|o| o == opt) {
            d.push(opt.to_string());
        }
        self.remove_pending(opt);
        self.set_pending_delete(&d);
    }

    /// pve-guest-common `remove_from_pending_delete`.
    pub(crate) fn remove_from_pending_delete(&mut self, opt: &str) {
        let d: Vec<String> = self
            .pending_delete()
            .into_iter()
            .filter(|o| o != opt)
            .collect();
        self.set_pending_delete(&d);
    }

    /// pve-guest-common `cleanup_pending`: drops pending values equal to the current ones
    /// and pending deletions of options that are not set.
    pub(crate) fn cleanup_pending(&mut self) {
        let same: Vec<String> = self
            .pending
            .iter()
            .filter(|(k, v)| k != "delete" && self.get(k) == Some(v.as_str()))
            .map(|(k, _)| k.clone())
            .collect();
        for k in same {
            self.remove_pending(&k);
        }
        let d: Vec<String> = self
            .pending_delete()
            .into_iter()
            .filter(|o| self.get(o).is_some())
            .collect();
        self.set_pending_delete(&d);
    }

    /// The file text as `write_pct_config` lays it out.
    pub(crate) fn render(&self) -> String {
        let mut s = String::new();
        for l in &self.main {
            s.push_str(l);
            s.push('\n');
        }
        if !self.pending.is_empty() {
            s.push_str("\n[pve:pending]\n");
            for (k, v) in &self.pending {
                s.push_str(&format!("{k}: {v}\n"));
            }
        }
        if !self.rest.is_empty() {
            s.push('\n');
            s.push_str(&self.rest);
        }
        s
    }

    /// pve-guest-common `write_config` → `PVE::Tools::file_set_contents`: a temporary file in
    /// the same directory, renamed over the configuration.
    ///
    /// # Errors
    /// The I/O error, with the path.
    pub(crate) fn write(&self) -> Res<()> {
        let tmp = self
            .path
            .with_extension(format!("conf.tmp.{}", std::process::id()));
        std::fs::write(&tmp, self.render())
            .map_err(|e| format!("unable to open file '{}' - {e}", tmp.display()))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            format!(
                "close (rename) atomic file '{}' failed: {e}",
                self.path.display()
            )
        })
    }
}

/// pve-container `print_lxc_network` → pve-common `print_property_string`: the required key
/// (`name`) first, then the others sorted by key; booleans as `1`; `type=veth` always.
pub(crate) fn print_lxc_network(net: &NetConf) -> String {
    let mut parts = vec![format!("name={}", net.name)];
    let mut kv: Vec<(&str, String)> = Vec::new();
    if let Some(b) = &net.bridge {
        kv.push(("bridge", b.to_string()));
    }
    if net.firewall {
        kv.push(("firewall", "1".into()));
    }
    if let Some(g) = &net.gw {
        kv.push(("gw", g.clone()));
    }
    if let Some(g) = &net.gw6 {
        kv.push(("gw6", g.clone()));
    }
    if net.host_managed {
        kv.push(("host-managed", "1".into()));
    }
    if let Some(h) = net.hwaddr {
        kv.push(("hwaddr", format!("{h:X}")));
    }
    if let Some(i) = &net.ip {
        kv.push(("ip", i.clone()));
    }
    if let Some(i) = &net.ip6 {
        kv.push(("ip6", i.clone()));
    }
    if net.link_down {
        kv.push(("link_down", "1".into()));
    }
    if let Some(m) = net.mtu {
        kv.push(("mtu", m.to_string()));
    }
    if let Some(r) = &net.rate {
        kv.push(("rate", r.clone()));
    }
    if let Some(t) = net.tag {
        kv.push(("tag", t.to_string()));
    }
    if !net.trunks.is_empty() {
        let t: Vec<String> = net.trunks.iter().map(|t| t.to_string()).collect();
        kv.push(("trunks", t.join(";")));
    }
    kv.push(("type", "veth".into()));
    parts.extend(kv.into_iter().map(|(k, v)| format!("{k}={v}")));
    parts.join(",")
}
