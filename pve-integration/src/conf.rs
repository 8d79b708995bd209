//! Parser for `/etc/pve/lxc/<vmid>.conf`, mirroring pve-container `src/PVE/LXC/Config.pm`
//! `parse_pct_config`: sections, keys and their errors. `netN` values are parsed by
//! `lxc_network.rs` (pve-common `src/PVE/JSONSchema.pm` `parse_property_string` against
//! the `pve-lxc-network` format, `$netconf_desc`).
//!
//! A line that matches none of `parse_pct_config`'s patterns is dropped with a warning, as
//! PVE's non-strict mode (the one `PVE::LXC::Config::load_config` uses) does with
//! `unable to parse config: <line>`: a UTF-8 byte order mark before the first key, an
//! upper-case key (`NET0:`), a key with an empty value. Such lines are listed in
//! [`PveConf::ignored`]; the container PVE starts does not have them either. So is `delete:`
//! outside `[pve:pending]` (PVE: `property 'delete' is only allowed in [pve:pending]`). A key
//! given twice in a section takes its last line's value, as PVE's `$conf->{$key} = $value`
//! does without a word; op-agent lists the earlier lines in [`PveConf::ignored`]. A section
//! header PVE does not take (`[snap 1]`) is such a dropped line, so the keys after it stay
//! in the section before, as in PVE. Differences from PVE, on purpose: a bad *value* of a key
//! op-agent reads (`netN`, `hookscript`) is an error (PVE warns and keeps it), because the
//! agent must not act on a half-read NIC. A `netN` without `hwaddr` stays `None` (PVE
//! invents a random MAC on every parse).

use std::collections::BTreeMap;
use std::io::BufRead;

use crate::conf_error::invalid;
pub use crate::conf_error::{ConfError, ConfErrorKind};
pub use crate::conf_read::read_conf;
use crate::ids::NetIndex;
use crate::lxc_network::parse_lxc_network;
use crate::net::NetConf;

/// A parsed container configuration.
///
/// Only the main (current) section fills [`PveConf::nets`] and [`PveConf::hookscript`];
/// the `[pve:pending]` section goes to [`PveConf::pending`] and `[snapname]` sections are
/// only named in [`PveConf::snapshots`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PveConf {
    /// `hookscript:` volume id as written, e.g. `local:snippets/op-hook`
    /// (resolve it with [`crate::paths::resolve_volume`]).
    pub hookscript: Option<String>,
    /// `netN` entries of the main section, keyed by `N`.
    pub nets: BTreeMap<u8, NetConf>,
    /// Every other `key: value` of the main section, value trimmed and unchecked.
    pub options: BTreeMap<String, String>,
    /// Raw `lxc.*` keys of the main section in file order (`key`, `value`).
    pub lxc: Vec<(String, String)>,
    /// Main-section description: `#` lines (percent-decoded) and `description:`, `\n`-joined.
    pub description: String,
    /// `[pve:pending]` keys (including `delete`), raw values.
    pub pending: BTreeMap<String, String>,
    /// Names of the `[snapname]` sections, in file order.
    pub snapshots: Vec<String>,
    /// Lines PVE's `parse_pct_config` warns about and drops (they match none of its patterns),
    /// in file order, kind [`ConfErrorKind::Syntax`], key `line "<start of the line>"`.
    pub ignored: Vec<ConfError>,
}

/// Which section of the file a line belongs to.
enum Section {
    Main,
    Pending,
    Snapshot,
}

/// Parses a container configuration from `reader`; `source` names it in errors.
///
/// Grammar (pve-container `parse_pct_config`): blank lines are skipped; `#text` lines add to
/// the description; `[pve:pending]` and `[snapname]` start sections; raw keys match
/// `^(lxc\.[a-z0-9_\-\.]+)(:|\s*=)\s*(.*?)\s*$`; other keys match `^([a-z][a-z_]*\d*):\s*(.+?)\s*$`.
/// `netN` values are checked as [`NetConf`] says; `hookscript` must be `<storage>:<volname>`.
///
/// # Errors
/// The first problem found, as a [`ConfError`]. Never panics, whatever the input.
///
/// # Example
/// ```
/// let text = "hookscript: local:snippets/op-hook\nnet0: name=eth0,bridge=ovsbr0,tag=10,type=veth\n";
/// let conf = pve_integration::parse_conf(text.as_bytes(), "100.conf").unwrap();
/// assert_eq!(conf.nets[&0].tag.map(|t| t.get()), Some(10));
/// ```
pub fn parse_conf<R: BufRead>(mut reader: R, source: &str) -> Result<PveConf, ConfError> {
    let mut conf = PveConf::default();
    let mut section = Section::Main;
    // Main-section keys as `parse_pct_config` ends with them: the last line of each wins.
    let mut main: BTreeMap<String, (usize, String)> = BTreeMap::new();
    let mut pending_lines: BTreeMap<String, usize> = BTreeMap::new();
    let mut buf = Vec::new();
    let mut lineno = 0usize;
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf).map_err(|e| ConfError {
            file: source.to_string(),
            line: lineno + 1,
            key: "file".to_string(),
            kind: ConfErrorKind::Io(e.to_string()),
        })?;
        if n == 0 {
            break;
        }
        lineno += 1;
        let err = |key: &str, kind: ConfErrorKind| ConfError {
            file: source.to_string(),
            line: lineno,
            key: key.escape_debug().to_string(),
            kind,
        };
        let raw = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let shadowed = |key: &str, earlier: usize| ConfError {
            file: source.to_string(),
            line: earlier,
            key: key.escape_debug().to_string(),
            kind: ConfErrorKind::DuplicateKey,
        };
        let ignored = |what: &str| ConfError {
            key: format!("line {:?}", what.chars().take(40).collect::<String>()),
            ..err("line", ConfErrorKind::Syntax)
        };
        // `parse_pct_config` works on the file's bytes and decodes nothing but the description
        // (`decode_text`): a Latin-1 byte in a comment or description is no error for PVE, so
        // it is none here either. Such a line is read with U+FFFD for each invalid byte; a
        // value op-agent uses (`netN`, `hookscript`) is ASCII in every conf PVE writes.
        let lossy;
        let line: &str = match std::str::from_utf8(raw) {
            Ok(l) => l,
            Err(_) => {
                lossy = String::from_utf8_lossy(raw).into_owned();
                if matches_no_pattern(&lossy) {
                    conf.ignored.push(ignored(&lossy));
                    continue;
                }
                &lossy
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        if let Some(name) = section_header(line) {
            if name.eq_ignore_ascii_case("pve:pending") {
                section = Section::Pending;
            } else {
                section = Section::Snapshot;
                conf.snapshots.push(name.to_string());
            }
            continue;
        }
        if let Some(text) = line.strip_prefix('#') {
            if matches!(section, Section::Main) {
                conf.description.push_str(&decode_text(text));
                conf.description.push('\n');
            }
            continue;
        }
        if let Some((key, value)) = raw_lxc_key(line) {
            if matches!(section, Section::Main) {
                conf.lxc.push((key.to_string(), value.to_string()));
            }
            continue;
        }
        let Some((key, value)) = key_value(line) else {
            // PVE: `unable to parse config: $line`, a warning in non-strict mode; dropped.
            conf.ignored.push(ignored(line));
            continue;
        };
        match section {
            Section::Snapshot => {}
            Section::Pending => {
                if let Some(earlier) = pending_lines.insert(key.to_string(), lineno) {
                    conf.ignored.push(shadowed(key, earlier));
                }
                conf.pending.insert(key.to_string(), value.to_string());
            }
            Section::Main => {
                if key == "delete" {
                    // PVE: `property 'delete' is only allowed in [pve:pending]`, a warning.
                    conf.ignored
                        .push(err(key, ConfErrorKind::DeleteOutsidePending));
                    continue;
                }
                if key == "description" {
                    conf.description.push_str(&decode_text(value));
                    continue;
                }
                // `$conf->{$key} = $value`: a later line of the same key wins, silently.
                if let Some((earlier, _)) =
                    main.insert(key.to_string(), (lineno, value.to_string()))
                {
                    conf.ignored.push(shadowed(key, earlier));
                }
            }
        }
    }
    conf.ignored.sort_by_key(|e| e.line);
    // The values that won, checked in file order (the first bad one is the error).
    let mut main: Vec<(String, (usize, String))> = main.into_iter().collect();
    main.sort_by_key(|(_, (line, _))| *line);
    for (key, (line, value)) in main {
        let err = |key: &str, kind: ConfErrorKind| ConfError {
            file: source.to_string(),
            line,
            key: key.escape_debug().to_string(),
            kind,
        };
        if key == "hookscript" {
            if !is_volume_id(&value) {
                return Err(err(&key, invalid(&value, "<storage>:<volume>")));
            }
            conf.hookscript = Some(value);
            continue;
        }
        if let Some(digits) = key.strip_prefix("net") {
            if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                let index = digits
                    .parse::<u8>()
                    .ok()
                    .and_then(NetIndex::new)
                    .ok_or_else(|| err(&key, ConfErrorKind::NetIndexRange))?;
                let net = parse_lxc_network(index, &value).map_err(|(prop, kind)| {
                    err(
                        &format!("{key}{}", prop.map(|p| format!(".{p}")).unwrap_or_default()),
                        kind,
                    )
                })?;
                conf.nets.insert(index.get(), net);
                continue;
            }
        }
        conf.options.insert(key, value);
    }
    Ok(conf)
}

/// True when `line` matches none of `parse_pct_config`'s patterns (PVE drops it with a
/// warning).
fn matches_no_pattern(line: &str) -> bool {
    !(line.trim().is_empty()
        || section_header(line).is_some()
        || line.starts_with('#')
        || raw_lxc_key(line).is_some()
        || key_value(line).is_some())
}

/// `^\[pve:pending\]\s*$` (case-insensitive) or `^\[([a-z][a-z0-9_\-]+)\]\s*$`.
fn section_header(line: &str) -> Option<&str> {
    let rest = line.strip_prefix('[')?;
    let (name, tail) = rest.split_once(']')?;
    if !tail.trim().is_empty() {
        return None;
    }
    if name.eq_ignore_ascii_case("pve:pending") {
        return Some(name);
    }
    let b = name.as_bytes();
    let ok = b.len() >= 2
        && b[0].is_ascii_alphabetic()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'-');
    ok.then_some(name)
}

/// `^(lxc\.[a-z0-9_\-\.]+)(:|\s*=)\s*(.*?)\s*$`.
fn raw_lxc_key(line: &str) -> Option<(&str, &str)> {
    if !line.starts_with("lxc.") {
        return None;
    }
    let end = line
        .bytes()
        .position(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || b"_-.".contains(&c)))?;
    let key = &line[..end];
    if key.len() <= 4 {
        return None;
    }
    let rest = &line[end..];
    let rest = if let Some(r) = rest.strip_prefix(':') {
        r
    } else {
        rest.trim_start().strip_prefix('=')?
    };
    Some((key, rest.trim()))
}

/// `^([a-z][a-z_]*\d*):\s*(.+?)\s*$`.
fn key_value(line: &str) -> Option<(&str, &str)> {
    let (key, value) = line.split_once(':')?;
    let b = key.as_bytes();
    let letters = b
        .iter()
        .position(|c| !(c.is_ascii_lowercase() || *c == b'_'))
        .unwrap_or(b.len());
    let ok =
        !b.is_empty() && b[0].is_ascii_lowercase() && b[letters..].iter().all(u8::is_ascii_digit);
    let value = value.trim();
    (ok && !value.is_empty()).then_some((key, value))
}

/// pve-common `PVE::Tools::decode_text`: `%XX` → byte, then UTF-8 (lossy).
fn decode_text(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(v) = hex {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `pve-volume-id`: `^(?i:[a-z][a-z0-9\-\_\.]*[a-z0-9]):(.+)$`.
fn is_volume_id(s: &str) -> bool {
    let Some((storage, vol)) = s.split_once(':') else {
        return false;
    };
    let b = storage.as_bytes();
    b.len() >= 2
        && b[0].is_ascii_alphabetic()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c))
        && !vol.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    const REAL: &str = "\
#Web server%0Asecond line
arch: amd64
cores: 2
features: nesting=1
hookscript: local:snippets/op-hook
hostname: web1
memory: 512
net0: name=eth0,bridge=ovsbr0,firewall=1,hwaddr=BC:24:11:5E:2A:01,ip=10.0.10.5/24,gw=10.0.10.1,tag=10,type=veth
net1: name=eth1,bridge=vmbr1,hwaddr=BC:24:11:5E:2A:02,ip6=auto,mtu=1400,trunks=20;30;40,tag=5,type=veth,link_down=ON,rate=12.5,host-managed=yes
ostype: debian
parent: before-upgrade
rootfs: local-lvm:vm-100-disk-0,size=8G
swap: 512
unprivileged: 1
lxc.apparmor.profile: unconfined
lxc.net.0.mtu = 9000
lxc.cgroup2.devices.allow: c 10:200 rwm

[pve:pending]
net0: name=eth0,bridge=ovsbr1,tag=20,type=veth
delete: net1

[before-upgrade]
#snapshot description
arch: amd64
hookscript: local:snippets/old-hook
net0: name=eth0,bridge=vmbr0,type=veth
snaptime: 1700000000
lxc.net.0.mtu = 1000
";

    fn parse(s: &str) -> Result<PveConf, ConfError> {
        parse_conf(s.as_bytes(), "100.conf")
    }

    fn err(s: &str) -> String {
        parse(s).unwrap_err().to_string()
    }

    #[test]
    fn parses_real_conf_with_pending_and_snapshot() {
        let c = parse(REAL).unwrap();
        assert_eq!(c.hookscript.as_deref(), Some("local:snippets/op-hook"));
        assert_eq!(c.description, "Web server\nsecond line\n");
        assert_eq!(c.nets.len(), 2);
        let n0 = &c.nets[&0];
        assert_eq!(n0.name, "eth0");
        assert_eq!(n0.bridge.as_ref().map(|b| b.as_str()), Some("ovsbr0"));
        assert_eq!(
            n0.hwaddr.map(|m| m.to_string()).as_deref(),
            Some("BC:24:11:5E:2A:01")
        );
        assert_eq!(n0.tag.map(|t| t.get()), Some(10));
        assert!(n0.firewall && !n0.link_down && !n0.host_managed);
        assert_eq!(n0.ip.as_deref(), Some("10.0.10.5/24"));
        assert_eq!(n0.gw.as_deref(), Some("10.0.10.1"));
        let n1 = &c.nets[&1];
        assert_eq!(
            n1.trunks.iter().map(|t| t.get()).collect::<Vec<_>>(),
            vec![20, 30, 40]
        );
        assert_eq!(n1.mtu, Some(1400));
        assert!(n1.link_down && n1.host_managed);
        assert_eq!(n1.rate.as_deref(), Some("12.5"));
        assert_eq!(n1.ip6.as_deref(), Some("auto"));
        assert_eq!(c.options["rootfs"], "local-lvm:vm-100-disk-0,size=8G");
        assert_eq!(c.options["parent"], "before-upgrade");
        assert!(!c.options.contains_key("net0"));
        assert_eq!(
            c.lxc,
            vec![
                ("lxc.apparmor.profile".into(), "unconfined".into()),
                ("lxc.net.0.mtu".into(), "9000".into()),
                ("lxc.cgroup2.devices.allow".into(), "c 10:200 rwm".into()),
            ]
        );
        assert_eq!(
            c.pending["net0"],
            "name=eth0,bridge=ovsbr1,tag=20,type=veth"
        );
        assert_eq!(c.pending["delete"], "net1");
        assert_eq!(c.snapshots, vec!["before-upgrade".to_string()]);
    }

    #[test]
    fn minimal_and_empty() {
        let c = parse("").unwrap();
        assert!(c.nets.is_empty() && c.hookscript.is_none());
        let c = parse("net31: name=x,type=veth\r\n\n   \n").unwrap();
        assert_eq!(c.nets[&31].name, "x");
        assert_eq!(c.nets[&31].bridge, None);
    }

    #[test]
    fn file_level_errors() {
        assert_eq!(
            err("net32: name=e\n"),
            "100.conf:1: network index out of range 0..=31 (net32)"
        );
    }

    /// `parse_pct_config` keeps the last line of a key (`$conf->{$key} = $value`), only warns
    /// about `delete:` outside `[pve:pending]`, and reads a header it does not take
    /// (`[snap 1]`) as a dropped line, so the keys after it stay in the main section.
    #[test]
    fn pve_tolerated_duplicates_delete_and_headers_are_warnings() {
        let c = parse("net0: name=a,bogus=1\nhookscript: local:snippets/op-hook\nnet0: name=b\n")
            .unwrap();
        assert_eq!(c.nets[&0].name, "b", "the last line wins");
        assert_eq!(c.ignored.len(), 1);
        assert_eq!(
            c.ignored[0].to_string(),
            "100.conf:1: key given again on a later line, which wins as in PVE; this line is ignored (net0)"
        );
        let c = parse("delete: net0\nnet0: name=eth0\n").unwrap();
        assert_eq!(c.nets[&0].name, "eth0");
        assert!(c.ignored[0]
            .to_string()
            .contains("only allowed in [pve:pending]"));
        let c = parse("net0: name=eth0,tag=10\n[snap 1]\nnet0: name=eth0,tag=20\n").unwrap();
        assert_eq!(c.nets[&0].tag.map(|t| t.get()), Some(20), "as in PVE");
        assert!(c.snapshots.is_empty());
        assert_eq!(c.ignored.len(), 2, "{:?}", c.ignored);
        let c = parse("[pve:pending]\nmemory: 1\nmemory: 2\n").unwrap();
        assert_eq!(c.pending["memory"], "2");
        // The value that wins is still checked.
        assert_eq!(
            err("net0: name=a\nnet0: name=b,bogus=1\n"),
            "100.conf:2: invalid key in comma-separated list property (net0.bogus)"
        );
    }

    #[test]
    fn bad_hookscript_values() {
        assert!(err("hookscript: op-hook\n").contains("(hookscript)"));
        assert!(err("hookscript: 1local:snippets/x\n").contains("(hookscript)"));
    }

    /// Bytes that are not UTF-8 (a Latin-1 comment written by hand) are no error for
    /// `parse_pct_config`, which reads bytes: the rest of the conf is read as usual.
    #[test]
    fn latin1_bytes_in_comments_and_values_are_read() {
        let c = parse_conf(
            &b"#Caf\xe9 server\nhostname: caf\xe9\nhookscript: local:snippets/op-hook\nnet0: name=eth0,bridge=ovsbr0,hwaddr=BC:24:11:00:00:01,type=veth\n"[..],
            "x",
        )
        .unwrap();
        assert_eq!(c.description, "Caf\u{fffd} server\n");
        assert_eq!(c.hookscript.as_deref(), Some("local:snippets/op-hook"));
        assert_eq!(c.nets.len(), 1);
    }

    #[test]
    fn sections_keep_main_apart() {
        let c = parse("[snap1]\nnet0: name=eth0,bridge=vmbr9,bogus=1\n").unwrap();
        assert!(c.nets.is_empty());
        assert_eq!(c.snapshots, vec!["snap1"]);
        let c = parse("[PVE:PENDING]\nhookscript: local:snippets/x\n").unwrap();
        assert!(c.hookscript.is_none());
        assert_eq!(c.pending["hookscript"], "local:snippets/x");
        let c = parse("[a]\n[snap]x\n").unwrap();
        assert!(
            c.snapshots.is_empty(),
            "one-letter snapshot names do not match PVE's regex"
        );
        assert_eq!(c.ignored.len(), 2);
    }

    /// pve-container `PVE::LXC::Config::parse_pct_config` matches keys against
    /// `^([a-z][a-z_]*\d*):` on the raw bytes: a line starting with a UTF-8 byte order mark or
    /// an upper-case key matches nothing and is dropped with `warn "unable to parse config"`.
    #[test]
    fn lines_pve_drops_are_ignored_with_a_warning() {
        let c = parse(
            "\u{feff}arch: amd64\nNET0: name=eth0,bridge=ovsbr0,tag=10\n\
             net1: name=eth1,bridge=ovsbr0,tag=20,type=veth\nmemory:\nthis is not a conf\n\
             [PVE:PENDING]\nHostname: x\n",
        )
        .unwrap();
        assert!(
            !c.options.contains_key("arch"),
            "PVE drops the BOM line too"
        );
        assert_eq!(c.nets.keys().copied().collect::<Vec<_>>(), vec![1]);
        let lines: Vec<String> = c.ignored.iter().map(|e| e.to_string()).collect();
        assert_eq!(lines.len(), 5, "{lines:?}");
        assert!(
            lines[0].starts_with("100.conf:1: unable to parse config line (line \"\\u{feff}arch"),
            "{lines:?}"
        );
        assert!(lines[1].starts_with("100.conf:2: "), "{lines:?}");
        assert!(lines[4].starts_with("100.conf:7: "), "{lines:?}");
        let c = parse_conf(&b"\xff\xfe: 1\nmemory: 5\n"[..], "x").unwrap();
        assert_eq!(c.ignored.len(), 1);
        assert_eq!(c.options["memory"], "5");
    }

    #[test]
    fn error_message_is_one_line_even_for_control_chars() {
        let e = err("net0: name=e,tag=1\r2\n");
        assert!(!e.contains('\r') && !e.contains('\n'), "{e:?}");
    }

    #[test]
    fn never_panics_on_garbage() {
        // A cheap deterministic fuzz: every prefix and byte-mutation of a real conf.
        let base = REAL.as_bytes();
        for i in 0..base.len() {
            let _ = parse_conf(&base[..i], "p");
            let mut m = base.to_vec();
            m[i] = m[i].wrapping_add(0x5a);
            let _ = parse_conf(&m[..], "m");
        }
        for s in [
            "%",
            "#%",
            "#%4",
            "#%zz",
            "description: %e2%82",
            "lxc.",
            "lxc.a",
            "lxc.a =",
            "[",
            "[]",
            "]",
        ] {
            let _ = parse(s);
        }
    }
}
