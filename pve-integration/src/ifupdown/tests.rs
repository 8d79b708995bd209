use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use super::parse::glob_match;
use super::*;

/// Files by path; directories are the parents of the files.
#[derive(Default)]
struct MapLoader(BTreeMap<PathBuf, String>);

impl MapLoader {
    fn with(files: &[(&str, &str)]) -> MapLoader {
        MapLoader(
            files
                .iter()
                .map(|(p, t)| (PathBuf::from(p), t.to_string()))
                .collect(),
        )
    }
}

impl Loader for MapLoader {
    fn read(&mut self, path: &Path) -> io::Result<String> {
        self.0
            .get(path)
            .cloned()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    fn list(&mut self, dir: &Path) -> io::Result<Vec<(String, bool)>> {
        let v: Vec<(String, bool)> = self
            .0
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), true))
            .collect();
        if v.is_empty() {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        Ok(v)
    }
}

const TOP: &str = "/r/etc/network/interfaces";

fn parse_top(text: &str, files: &[(&str, &str)]) -> Interfaces {
    parse(
        Path::new("/r"),
        Path::new(TOP),
        text,
        &mut MapLoader::with(files),
    )
    .unwrap()
}

/// What PVE's GUI writes for an OVS bridge with an internal port and a Linux bridge.
const PVE_OVS: &str = "\
auto lo
iface lo inet loopback

auto eno1
iface eno1 inet manual
\tovs_type OVSPort
\tovs_bridge vmbr1

auto vmbr0
iface vmbr0 inet static
\taddress 192.0.2.10/24
\tbridge-ports eno2
\tbridge-stp off
\tbridge-fd 0

auto vmbr1
iface vmbr1 inet manual
\tovs_type OVSBridge
\tovs_ports eno1 mgmt0
#ovs comment

source /etc/network/interfaces.d/*
";

#[test]
fn pve_gui_file_ovs_and_linux_bridges() {
    let i = parse_top(PVE_OVS, &[]);
    assert!(i.diagnostics.is_empty(), "{:?}", i.diagnostics);
    let names: Vec<&str> = i.stanzas.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["lo", "eno1", "vmbr0", "vmbr1"]);
    let ovs: Vec<BridgeStanza> = i.bridge_stanzas("vmbr1").collect();
    assert_eq!(ovs.len(), 1);
    assert_eq!(ovs[0].kind, BridgeKind::Ovs);
    assert_eq!(ovs[0].ports.names, ["eno1", "mgmt0"]);
    assert_eq!(ovs[0].stanza.at.to_string(), format!("{TOP}:17"));
    assert_eq!(ovs[0].condone.pattern, "^(tap|veth|fwln)");
    assert_eq!(ovs[0].condone.set_at, None);
    let lb: Vec<BridgeStanza> = i.bridge_stanzas("vmbr0").collect();
    assert_eq!(lb[0].kind, BridgeKind::Linux);
    assert_eq!(lb[0].ports.names, ["eno2"]);
    assert_eq!(lb[0].condone.pattern, "^(tap|veth|fwpr)");
    assert!(
        i.bridge_stanzas("eno1").next().is_none(),
        "OVSPort is no bridge"
    );
    assert!(i.is_auto("vmbr1") && i.has_stanza("eno1") && !i.has_stanza("vi100"));
    let opt = ovs[0].stanza.first("ovs-type").unwrap();
    assert_eq!((opt.value.as_str(), opt.line), ("OVSBridge", 18));
}

#[test]
fn default_condone_removes_vi_keeps_tap_veth_fwln_and_listed() {
    let i = parse_top(PVE_OVS, &[]);
    let b = i.bridge_stanzas("vmbr1").next().unwrap();
    for p in ["vi100", "vi100i1", "web0", "xtap0"] {
        assert!(b.removes(p).unwrap(), "{p}");
    }
    for p in ["tap100i0", "veth100i0", "fwln100i0", "eno1", "mgmt0"] {
        assert!(!b.removes(p).unwrap(), "{p}");
    }
    let l = i.bridge_stanzas("vmbr0").next().unwrap();
    assert!(l.removes("vi100").unwrap());
    assert!(
        l.removes("fwln100i0").unwrap(),
        "Linux default has fwpr, not fwln"
    );
    assert!(!l.removes("fwpr100p0").unwrap());
}

#[test]
fn condone_attribute_replaces_default_either_spelling() {
    let text = "iface vmbr1 inet manual\n ovs_type OVSBridge\n ovs_ports eno1\n ovs_ports_condone_regex ^(tap|veth|fwln|vi)\n\
                iface vmbr2\n bridge_ports none\n bridge-ports-condone-regex ^vi\n";
    let i = parse_top(text, &[]);
    let b = i.bridge_stanzas("vmbr1").next().unwrap();
    assert_eq!(b.condone.set_at, Some(4));
    assert!(!b.removes("vi100").unwrap());
    assert!(!b.removes("tap100i0").unwrap());
    let l = i.bridge_stanzas("vmbr2").next().unwrap();
    assert!(l.ports.names.is_empty(), "none is no port");
    assert!(!l.removes("vi100").unwrap());
    assert!(
        l.removes("veth100i0").unwrap(),
        "the attribute replaces the default"
    );
}

#[test]
fn regex_uses_python_match_semantics() {
    let c = |p: &str| Condone {
        pattern: p.into(),
        set_at: Some(1),
    };
    // re.match: anchored at the start, not at the end.
    assert!(c("vi").matches("vi100").unwrap());
    assert!(!c("100").matches("vi100").unwrap(), "re.search would match");
    assert!(c("tap|vi").matches("vi100").unwrap());
    assert!(!c("^vi1$").matches("vi100").unwrap());
    assert!(c("(?i)VI").matches("vi100").unwrap());
    assert!(c(r"^[a-z]+\d+$").matches("vi100").unwrap());
    // Python accepts look-ahead; the regex crate does not: an error, not a guess.
    assert!(c("^(?!eth)").matches("vi100").is_err());
}

#[test]
fn widened_keeps_default_alternatives_and_covers_names() {
    let d = Condone {
        pattern: PVE_OVS_CONDONE_DEFAULT.into(),
        set_at: None,
    };
    assert_eq!(
        d.widened(&["vi100", "vi100i1"]).unwrap(),
        "^(tap|veth|fwln|vi)"
    );
    assert_eq!(
        d.widened(&["web0", "vi7", "a.b"]).unwrap(),
        r"^(tap|veth|fwln|vi|web0$|a\.b$)"
    );
    let custom = Condone {
        pattern: "^eth9$".into(),
        set_at: Some(3),
    };
    let w = custom.widened(&["vi100"]).unwrap();
    assert_eq!(w, "^eth9$|^(vi)");
    let w = Condone {
        pattern: w,
        set_at: Some(3),
    };
    assert!(w.matches("eth9").unwrap() && w.matches("vi100").unwrap());
}

#[test]
fn continuation_comments_iface_alias_and_dollar_iface() {
    let text = "# top\nauto vmbr1\niface vmbr1:0 inet manual\n  ovs_type OVSBridge\n  ovs_ports eno1 \\\n     eno2\n  # inside\n  ovs_extra set bridge $IFACE x=1\n";
    let i = parse_top(text, &[]);
    assert!(i.diagnostics.is_empty(), "{:?}", i.diagnostics);
    let s = &i.stanzas[0];
    assert_eq!(s.name, "vmbr1");
    assert!(s.auto);
    let b = s.bridge().unwrap();
    assert_eq!(b.ports.names, ["eno1", "eno2"]);
    let extra = s.first("ovs-extra").unwrap();
    assert_eq!(extra.value, "set bridge vmbr1:0 x=1");
    assert_eq!(extra.line, 8, "physical line after a continuation");
}

#[test]
fn auto_only_counts_before_the_stanza_and_allow_auto_all() {
    let i = parse_top(
        "iface a inet manual\nauto a\nallow-hotplug b\niface b\nallow-auto c\niface c\n",
        &[],
    );
    let auto: Vec<bool> = i.stanzas.iter().map(|s| s.auto).collect();
    assert_eq!(auto, [false, false, true]);
    let i = parse_top("auto all\niface x\n", &[]);
    assert!(i.stanzas[0].auto);
}

#[test]
fn source_glob_sorted_skips_dotfiles_relative_and_source_directory() {
    let files = [
        (
            "/r/etc/network/interfaces.d/b",
            "iface vmbr2\n ovs_type OVSBridge\n ovs_ports x\n",
        ),
        (
            "/r/etc/network/interfaces.d/a",
            "iface vmbr1\n bridge_ports none\n",
        ),
        ("/r/etc/network/interfaces.d/.hidden", "iface hidden\n"),
        ("/r/etc/network/more/z", "iface z\n"),
        ("/r/etc/network/more/.y", "iface y\n"),
        ("/r/etc/network/rel", "iface rel\n"),
    ];
    let i = parse_top(
        "source /etc/network/interfaces.d/*\nsource rel\nsource-directory /etc/network/more\nsource /etc/network/gone\nsource /etc/network/none.d/*\n",
        &files,
    );
    let names: Vec<&str> = i.stanzas.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["vmbr1", "vmbr2", "rel", "y", "z"]);
    let b = i.bridge_stanzas("vmbr2").next().unwrap();
    assert_eq!(b.stanza.at.to_string(), "/r/etc/network/interfaces.d/b:1");
    assert_eq!(b.ports.names, ["x"]);
    assert_eq!(i.diagnostics.len(), 1, "{:?}", i.diagnostics);
    assert_eq!(
        i.diagnostics[0].to_string(),
        format!("{TOP}:4: cannot find source file /r/etc/network/gone")
    );
}

#[test]
fn source_loop_is_an_error_naming_file_and_line() {
    let e = parse(
        Path::new("/r"),
        Path::new(TOP),
        "source /etc/network/interfaces\n",
        &mut MapLoader::with(&[(TOP, "\n\nsource /etc/network/interfaces\n")]),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("{TOP}:3: source nests deeper than 16 files (a loop?)")
    );
}

#[test]
fn bad_lines_are_diagnostics_with_file_line() {
    let i = parse_top(
        "mapping eth0\n  script x\niface vmbr1\n  ovs_type OVSBridge\n  ovs_ports\n",
        &[],
    );
    let d: Vec<String> = i.diagnostics.iter().map(|d| d.to_string()).collect();
    assert_eq!(
        d,
        [
            format!("{TOP}:1: error processing line 'mapping eth0'"),
            format!("{TOP}:2: error processing line 'script x'"),
            format!("{TOP}:5: iface vmbr1: invalid syntax 'ovs_ports'"),
        ]
    );
    assert!(
        i.stanzas[0].bridge().is_none(),
        "no ovs_ports value: ifupdown2 deletes nothing"
    );
}

#[test]
fn glob_and_regex_port_expressions_are_flagged() {
    let i = parse_top(
        "iface vmbr1\n ovs_type OVSBridge\n ovs_ports eno1 glob swp1-3\n",
        &[],
    );
    let b = i.stanzas[0].bridge().unwrap();
    assert_eq!(b.ports.names, ["eno1"]);
    assert_eq!(b.ports.unsupported.as_deref(), Some("swp1-3"));
}

#[test]
fn vlan_aware_linux_bridge_without_ports_still_removes() {
    let i = parse_top("iface vmbr0\n bridge-vlan-aware yes\n", &[]);
    let b = i.stanzas[0].bridge().unwrap();
    assert_eq!(b.kind, BridgeKind::Linux);
    assert!(b.removes("vi100").unwrap());
}

#[test]
fn fnmatch_rules() {
    assert!(glob_match("*", "a"));
    assert!(!glob_match("*", ".a"));
    assert!(glob_match(".*", ".a"));
    assert!(glob_match("a?c", "abc"));
    assert!(glob_match("[a-c]x", "bx"));
    assert!(!glob_match("[!a-c]x", "bx"));
    assert!(glob_match("[x", "[x"));
    assert!(glob_match("*.cfg", "vmbr.cfg"));
    assert!(!glob_match("*.cfg", "vmbr.cfg~"));
    assert!(!glob_match("a*a*a*a*a*a*a*b", &"a".repeat(200)));
}
