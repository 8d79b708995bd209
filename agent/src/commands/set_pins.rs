//! The container TOML's `[[nic]]` pins against the PVE conf. What `op-agent set` refuses
//! before it changes anything ([`conflicts`]): an edit whose `bridge`, `tag` or
//! `trunks` for a `netN` differs from a value the container TOML's `[[nic]]` pins for it. The
//! TOML wins over the PVE conf ([`crate::desired`]), so `pct set` would write the new value to
//! the PVE conf and the GUI while op-agent kept the NIC on the pinned one: a VLAN the admin
//! believes changed, silently not. What `config check` warns about ([`differs_from_conf`]):
//! a pin that already differs from the PVE conf.

use crate::config::ContainerConfig;

/// The `netN` values `options` write (`-netN VALUE`, `--netN VALUE`, `--netN=VALUE`), as
/// pve-container's `net` property strings: `name=eth0,bridge=ovsbr0,tag=20,trunks=20;30`.
fn net_values(options: &[String]) -> Vec<(u8, String)> {
    super::set::option_pairs(options)
        .into_iter()
        .filter_map(|(name, v)| Some((super::set::net_key(&name)?, v?)))
        .collect()
}

/// The value of `key` in a property string (`None`: not given, which PVE writes as unset).
fn prop<'a>(value: &'a str, key: &str) -> Option<&'a str> {
    value
        .split(',')
        .find_map(|p| p.trim().strip_prefix(key)?.strip_prefix('='))
}

/// `trunks=20;30` (PVE's `pve-vlan-id-or-range` list, `;`-separated) as sorted ids; a range or
/// a value that is not a number stays as text, so it never compares equal to a pin.
fn trunks_text(list: &[u16]) -> String {
    let mut v = list.to_vec();
    v.sort_unstable();
    v.dedup();
    v.iter().map(u16::to_string).collect::<Vec<_>>().join(";")
}

fn normalise_trunks(s: &str) -> String {
    let mut ids: Vec<u16> = Vec::new();
    for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        match part.parse() {
            Ok(id) => ids.push(id),
            Err(_) => return s.to_string(),
        }
    }
    trunks_text(&ids)
}

/// One line per pinned field the edit would change, naming the TOML file and line:
/// `/etc/op-agent/containers/100.toml line 3: [[nic]] net = 0 pins tag = 10, which wins over
/// the tag=20 this edit writes`. Empty: nothing pinned is touched.
pub fn conflicts(ct: &ContainerConfig, options: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    // A `[[nic]]` of a NIC the edit deletes: every later pre-start would refuse the
    // container (`[[nic]] net = 0: no net0 in …`, which guards against a mistyped `net`).
    for net in super::set::deleted_nets(options) {
        if let Some(i) = ct.toml.nic.iter().position(|n| n.net == net) {
            out.push(format!(
                "{} line {}: [[nic]] net = {net} names net{net}, which this edit deletes (the \
                 next start would refuse the container); remove that [[nic]] table",
                ct.path.display(),
                ct.nic_lines.get(i).copied().unwrap_or(0)
            ));
        }
    }
    for (net, value) in net_values(options) {
        let Some((i, nic)) = ct.toml.nic.iter().enumerate().find(|(_, n)| n.net == net) else {
            continue;
        };
        let at = format!(
            "{} line {}: [[nic]] net = {net}",
            ct.path.display(),
            ct.nic_lines.get(i).copied().unwrap_or(0)
        );
        let writes = |key: &str, v: Option<&str>| match v {
            Some(v) => format!("the {key}={v} this edit writes"),
            None => format!("the edit's net{net}, which has no {key}="),
        };
        if let Some(b) = &nic.bridge {
            let new = prop(&value, "bridge");
            if new != Some(b.as_str()) {
                out.push(format!(
                    "{at} pins bridge = {b:?}, which wins over {}",
                    writes("bridge", new)
                ));
            }
        }
        if let Some(t) = nic.tag {
            let new = prop(&value, "tag");
            if new.map(str::trim) != Some(t.to_string().as_str()) {
                out.push(format!(
                    "{at} pins tag = {t}, which wins over {}",
                    writes("tag", new)
                ));
            }
        }
        if let Some(ts) = &nic.trunks {
            let new = prop(&value, "trunks");
            if new.map(normalise_trunks) != Some(trunks_text(ts)) {
                out.push(format!(
                    "{at} pins trunks = {ts:?}, which wins over {}",
                    writes("trunks", new)
                ));
            }
        }
    }
    out
}

/// One line per NIC the edit gives `firewall=1` while the container TOML keeps the default
/// `on_firewall = "refuse"`: PVE would apply it and op-agent then refuse to converge the NIC
/// (renaming it would silently disable pve-firewall for it), every later start included.
pub fn firewall_refusals(ct: &ContainerConfig, options: &[String]) -> Vec<String> {
    if ct.toml.on_firewall != crate::config::OnFirewall::Refuse {
        return Vec::new();
    }
    net_values(options)
        .into_iter()
        .filter(|(_, v)| {
            matches!(
                prop(v, "firewall").map(str::trim),
                Some("1" | "on" | "yes" | "true")
            )
        })
        .map(|(net, _)| {
            format!(
                "net{net}: firewall=1 with on_firewall = \"refuse\" in {} (renaming the NIC would \
                 silently disable pve-firewall for it, so op-agent would refuse it at every start); \
                 set on_firewall = \"skip\" there to leave such NICs to PVE",
                ct.path.display()
            )
        })
        .collect()
}

/// One line per `[[nic]]` pin that differs from what the PVE conf `pve` (at `pve_path`) holds
/// for that `netN`, for `config check`: `/etc/op-agent/containers/100.toml line 3: [[nic]] net
/// = 0 pins tag = 10 while /etc/pve/lxc/100.conf has tag=20: op-agent applies tag = 10, the
/// GUI shows tag=20 …`. After `op-agent release` and PVE's own `pct set`, this is how the
/// admin learns that `apply` will not keep PVE's new value.
pub fn differs_from_conf(
    ct: &ContainerConfig,
    pve: &pve_integration::PveConf,
    pve_path: &std::path::Path,
) -> Vec<String> {
    let mut out = Vec::new();
    for (i, nic) in ct.toml.nic.iter().enumerate() {
        let Some(conf) = pve.nets.get(&nic.net) else {
            continue;
        };
        let at = format!(
            "{} line {}: [[nic]] net = {}",
            ct.path.display(),
            ct.nic_lines.get(i).copied().unwrap_or(0),
            nic.net
        );
        let shown = |v: Option<String>, key: &str| match v {
            Some(v) => format!("{key}={v}"),
            None => format!("no {key}="),
        };
        let mut push = |key: &str, pin: String, conf_value: Option<String>| {
            out.push(format!(
                "{at} pins {key} = {pin} while {} has {}: op-agent applies {key} = {pin}, the GUI \
                 and `pct config` show the other; remove the pin to follow the PVE conf",
                pve_path.display(),
                shown(conf_value, key)
            ));
        };
        if let Some(b) = &nic.bridge {
            if conf.bridge.as_ref().map(|x| x.as_str()) != Some(b.as_str()) {
                push(
                    "bridge",
                    format!("{b:?}"),
                    conf.bridge.as_ref().map(|x| x.to_string()),
                );
            }
        }
        if let Some(t) = nic.tag {
            if conf.tag.map(|x| x.get()) != Some(t) {
                push("tag", t.to_string(), conf.tag.map(|x| x.get().to_string()));
            }
        }
        if let Some(ts) = &nic.trunks {
            let have: Vec<u16> = conf.trunks.iter().map(|x| x.get()).collect();
            if trunks_text(&have) != trunks_text(ts) {
                let v = (!have.is_empty()).then(|| trunks_text(&have));
                push("trunks", format!("{ts:?}"), v);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ContainerToml, NicToml};

    fn ct(nic: NicToml) -> ContainerConfig {
        ContainerConfig {
            path: "/etc/op-agent/containers/100.toml".into(),
            toml: ContainerToml {
                nic: vec![nic],
                ..ContainerToml::default()
            },
            nic_lines: vec![3],
        }
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn a_changed_pinned_tag_is_named_with_file_and_line() {
        let c = ct(NicToml {
            net: 0,
            tag: Some(10),
            ..NicToml::default()
        });
        assert_eq!(
            conflicts(&c, &s(&["-net0", "name=eth0,bridge=ovsbr0,tag=20"])),
            [
                "/etc/op-agent/containers/100.toml line 3: [[nic]] net = 0 pins tag = 10, which \
              wins over the tag=20 this edit writes"
            ]
        );
        // Dropping the tag is a change too; the same tag, or another NIC, is not.
        assert_eq!(
            conflicts(&c, &s(&["--net0=name=eth0,bridge=ovsbr0"])).len(),
            1
        );
        assert!(conflicts(&c, &s(&["-net0", "name=eth0,bridge=ovsbr0,tag=10,rate=5"])).is_empty());
        assert!(conflicts(&c, &s(&["-net1", "name=eth1,bridge=ovsbr0,tag=20"])).is_empty());
        assert!(conflicts(&c, &s(&["--delete", "net1"])).is_empty());
        assert_eq!(
            conflicts(&c, &s(&["--delete", "net2,net0"])),
            [
                "/etc/op-agent/containers/100.toml line 3: [[nic]] net = 0 names net0, which this \
              edit deletes (the next start would refuse the container); remove that [[nic]] table"
            ]
        );
    }

    #[test]
    fn pinned_bridge_and_trunks_compare_as_values() {
        let c = ct(NicToml {
            net: 0,
            bridge: Some("ovsbr1".into()),
            trunks: Some(vec![30, 20]),
            ..NicToml::default()
        });
        assert!(conflicts(&c, &s(&["-net0", "name=eth0,bridge=ovsbr1,trunks=20;30"])).is_empty());
        let got = conflicts(&c, &s(&["-net0", "name=eth0,bridge=ovsbr0,trunks=20"]));
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].contains("pins bridge = \"ovsbr1\""), "{got:?}");
        assert!(got[1].contains("the trunks=20 this edit writes"), "{got:?}");
    }
}
