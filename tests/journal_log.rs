//! Logging to journald in its native protocol (systemd `sd_journal_sendv`): a hook's records
//! carry `SYSLOG_IDENTIFIER=op-agent` and the fields `VMID`, `PHASE`, `RUN_ID`, `STEP`,
//! `OUTCOME`, `MESSAGE_ID`, so `journalctl -t op-agent VMID=100` selects them. The journal is
//! a datagram listener of this test, bind-mounted on `/run/systemd/journal` in a private
//! mount namespace (`unshare -m`: nothing outside it changes). Root only.

use op_agent::logging::{MSG_INTENT, MSG_STEP_FAILED};
use op_testkit::{AgentToml, PveRoot};
use std::collections::BTreeMap;
use std::os::unix::net::UnixDatagram;

/// Parses one native-protocol datagram: `KEY=value\n`, or `KEY\n` + 64-bit little-endian
/// length + value + `\n` for values with newlines.
fn parse(mut d: &[u8]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    while !d.is_empty() {
        let nl = d
            .iter()
            .position(|&b| b == b'\n')
            .expect("field without newline");
        let line = &d[..nl];
        if let Some(eq) = line.iter().position(|&b| b == b'=') {
            let k = String::from_utf8_lossy(&line[..eq]).into_owned();
            out.insert(k, String::from_utf8_lossy(&line[eq + 1..]).into_owned());
            d = &d[nl + 1..];
        } else {
            let k = String::from_utf8_lossy(line).into_owned();
            let len = u64::from_le_bytes(d[nl + 1..nl + 9].try_into().unwrap()) as usize;
            let v = &d[nl + 9..nl + 9 + len];
            assert_eq!(
                d[nl + 9 + len],
                b'\n',
                "binary field {k} not ended by a newline"
            );
            out.insert(k, String::from_utf8_lossy(v).into_owned());
            d = &d[nl + 10 + len..];
        }
        let k = out.keys().last().unwrap();
        assert!(
            k.bytes()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'_'),
            "invalid journal field name {k:?}"
        );
    }
    out
}

#[test]
fn hook_records_reach_journald_with_fields() {
    let root = PveRoot::temp(&format!("op-agent-journal-{}-", std::process::id()));
    root.write_agent_toml(&AgentToml {
        ovsdb_socket: Some(root.path().join("no-ovsdb.sock")),
        ovsdb_timeout_ms: Some(200),
        audit_db: Some(root.audit_db()),
        pve_root: Some(root.path().to_path_buf()),
        ..AgentToml::default()
    });
    root.write_pve_conf(
        100,
        "hookscript: local:snippets/op-hook\nnet0: name=eth0,bridge=ovsbr0,hwaddr=BC:24:11:00:04:64,type=veth\n",
    );
    std::fs::create_dir_all(root.container_toml(100).parent().unwrap()).unwrap();
    std::fs::write(root.container_toml(100), "network_type = \"bridge\"\n").unwrap();
    let jdir = root.path().join("journal");
    std::fs::create_dir_all(&jdir).unwrap();
    let sock = UnixDatagram::bind(jdir.join("socket")).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_millis(500)))
        .unwrap();

    let out = std::process::Command::new("unshare")
        .args([
            "-m",
            "sh",
            "-c",
            "mount -t tmpfs tmpfs /run/systemd && mkdir /run/systemd/journal && \
             mount --bind \"$1\" /run/systemd/journal && exec \"$2\" --config \"$3\" hook 100 post-start",
            "sh",
        ])
        .arg(&jdir)
        .arg(env!("CARGO_BIN_EXE_op-agent"))
        .arg(root.agent_toml())
        .env_remove("OP_AGENT_SYSLOG_SOCKET")
        .env_remove("OP_AGENT_CONFIG")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(69), "{err}");
    // The task log still gets its one line; the step records went to the journal only.
    assert_eq!(err.lines().count(), 1, "{err}");

    let mut records = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    while let Ok(n) = sock.recv(&mut buf) {
        // The client probes the socket with an empty datagram when it connects.
        if n > 0 {
            records.push(parse(&buf[..n]));
        }
    }
    assert!(
        !records.is_empty(),
        "nothing reached the journal socket; stderr: {err}"
    );
    for r in &records {
        assert_eq!(
            r.get("SYSLOG_IDENTIFIER").map(String::as_str),
            Some("op-agent"),
            "{r:?}"
        );
    }
    let failed: Vec<_> = records
        .iter()
        .filter(|r| r.get("MESSAGE_ID").map(String::as_str) == Some(MSG_STEP_FAILED))
        .collect();
    let r = failed
        .first()
        .unwrap_or_else(|| panic!("no failed-step record in {records:?}"));
    assert_eq!(r["VMID"], "100", "{r:?}");
    assert_eq!(r["PHASE"], "post-start", "{r:?}");
    assert_eq!(r["OUTCOME"], "failed", "{r:?}");
    assert_eq!(r["PRIORITY"], "3", "{r:?}");
    assert!(!r["STEP"].is_empty() && !r["RUN_ID"].is_empty(), "{r:?}");
    assert!(r["MESSAGE"].contains("100 post-start"), "{r:?}");
    // Every record of the run carries the same RUN_ID.
    for x in records.iter().filter(|x| x.contains_key("RUN_ID")) {
        assert_eq!(x["RUN_ID"], r["RUN_ID"], "{x:?}");
    }
    let _ = MSG_INTENT;
}
