//! Entry points of the fuzz targets in `fuzz/` (cargo fuzz) and of `tests/fault_fuzz_corpus.rs`,
//! which replays the kept corpus and mutations of it without libFuzzer. Each takes arbitrary
//! bytes, runs one parser that reads data from outside the process, and must return without
//! panicking whatever the bytes; the checks that can be made on any input are asserted here
//! (an `assert!` failing is a finding, like a crash).

use std::path::Path;

/// The PVE container conf parser (`/etc/pve/lxc/<vmid>.conf`, pve-container
/// `parse_pct_config`), then the merge with a fixed container TOML (name rules, tag/trunks).
pub fn pve_conf(data: &[u8]) {
    let Ok(conf) = pve_integration::parse_conf(data, "fuzz.conf") else {
        return;
    };
    let Some(vmid) = pve_integration::Vmid::new(100) else {
        return;
    };
    let ct = crate::config::parse_container(Path::new("100.toml"), "network_type = \"bridge\"\n");
    if let Ok(ct) = ct {
        let _ = crate::desired::resolve(vmid, &conf, Path::new("fuzz.conf"), &ct);
    }
}

/// The TOML config loader: agent.toml and a container TOML from the same text, then the
/// container TOML merged with a fixed PVE conf (name, bridge, tag, trunks rules).
pub fn config_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let p = Path::new("fuzz.toml");
    if let Err(e) = crate::config::parse_agent_toml(p, text) {
        // Every error names the file.
        assert!(e.to_string().contains("fuzz.toml"), "{e}");
    }
    let Ok(ct) = crate::config::parse_container(p, text) else {
        return;
    };
    let pve_text = "net0: name=eth0,bridge=ovsbr0,hwaddr=BC:24:11:00:01:00,tag=10,type=veth\n\
                    net1: name=eth1,bridge=ovsbr0,type=veth\n";
    let (Ok(pve), Some(vmid)) = (
        pve_integration::parse_conf(pve_text.as_bytes(), "100.conf"),
        pve_integration::Vmid::new(100),
    ) else {
        return;
    };
    if let Ok(d) = crate::desired::resolve(vmid, &pve, Path::new("100.conf"), &ct) {
        for n in &d.nics {
            let name = n.name.as_str();
            assert!(
                !name.is_empty() && name.len() <= 15,
                "accepted name {name:?}"
            );
            assert!(
                !name
                    .bytes()
                    .any(|b| b == b'/' || b.is_ascii_whitespace() || b.is_ascii_control()),
                "accepted name {name:?}"
            );
        }
    }
}

/// The OVSDB reply parser: the stream decoder fed in one chunk and in small chunks (the values
/// must be the same), then each value decoded as a `list_ports` reply.
pub fn ovsdb_stream(data: &[u8]) {
    use crate::ovsdb::rpc::StreamDecoder;
    let mut whole = StreamDecoder::default();
    let all = whole.push(data);
    let mut pieces = StreamDecoder::default();
    let mut split: Result<Vec<serde_json::Value>, String> = Ok(Vec::new());
    let step = 1 + data.first().map_or(0, |b| usize::from(*b % 7));
    for c in data.chunks(step) {
        match pieces.push(c) {
            Ok(v) => {
                if let Ok(acc) = split.as_mut() {
                    acc.extend(v)
                }
            }
            Err(e) => {
                split = Err(e);
                break;
            }
        }
    }
    if let (Ok(a), Ok(b)) = (&all, &split) {
        assert_eq!(a, b, "chunking changed the decoded values");
    }
    for v in all.unwrap_or_default() {
        if let Some(results) = v.get("result").and_then(|r| r.as_array()) {
            let _ = crate::ovsdb::vswitch::port_rows_from_results(results);
        }
        if let Some(results) = v.as_array() {
            let _ = crate::ovsdb::vswitch::port_rows_from_results(results);
        }
    }
}

/// The audit export reader (`op-agent audit verify --export FILE`): header line, then rows.
pub fn audit_export(data: &[u8]) {
    let mut r = data;
    let _ = crate::audit::verify::verify_export(
        &mut r,
        Path::new("fuzz.export"),
        &crate::audit::verify::VerifyOptions::default(),
    );
}
