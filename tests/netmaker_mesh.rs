//! Netmaker (host-mesh) mode end to end, through `pve-sim` with real LXC and a private OVS:
//! the mesh interface up / down / missing / without address / of the wrong kind, the
//! `require_mesh = false` warning path, a Linux bridge as PVE's bridge (the renamed veth keeps
//! its master), and a real WireGuard link when the kernel has the module.
//! Root only; run: `cargo build --workspace && cargo test --test netmaker_mesh`.

use op_testkit::{Nic, PveConf, TestHost};

/// A veth standing in for the wireguard interface (the kernels here have neither wireguard
/// nor dummy links).
fn add_mesh(host: &TestHost, name: &str, addr: Option<&str>, up: bool) {
    let peer = format!("{name}p");
    host.ip(&["link", "add", name, "type", "veth", "peer", "name", &peer]);
    if let Some(addr) = addr {
        host.ip(&["addr", "add", addr, "dev", name]);
    }
    if up {
        host.ip(&["link", "set", name, "up"]);
    }
}

const MESH_ANY: &str = "interface = \"netmaker\"\nkind = \"any\"\ncidr = \"10.101.0.0/16\"";

/// A host with the given OVS and Linux bridges and `mesh` as the body of agent.toml's
/// `[mesh]` table.
fn mesh_host(hint: &str, ovs: &[&str], linux: &[&str], mesh: &str) -> TestHost {
    let host = TestHost::with_bridges(hint, ovs, linux);
    host.write_agent_toml(&format!("[mesh]\n{mesh}\n"));
    host
}

fn netmaker_ct(host: &TestHost, vmid: u32, extra_toml: &str) {
    host.write_pve_conf(
        vmid,
        PveConf::op_hook(vmid).nics([Nic::with_id(0, "ovsbr0", vmid as u16)
            .ip(&format!("10.0.0.{}/24", vmid % 200 + 1))
            .tag(10)]),
    );
    host.manage(vmid, &format!("network_type = \"netmaker\"\n{extra_toml}"));
}

#[test]
fn mesh_up_renames_keeps_pve_attachment_and_records_the_mesh() {
    let host = mesh_host("nm-up", &["ovsbr0"], &[], MESH_ANY);
    add_mesh(&host, "netmaker", Some("10.101.0.7/16"), true);
    netmaker_ct(&host, 100, "");
    netmaker_ct(&host, 101, "");
    let out = host.sim_ok_text(&["start", "100"]);
    assert!(out.contains("mesh via netmaker 10.101.0.7/16"), "{out}");
    host.sim_ok_text(&["start", "101"]);

    let links = host.links();
    assert!(links.contains(&"vi100".to_string()), "{links:?}");
    assert!(!links.contains(&"veth100i0".to_string()), "{links:?}");
    // Re-plugged under the new name with PVE's own tag and mtu, marked as ours.
    assert_eq!(host.vsctl_ok(&["port-to-br", "vi100"]), "ovsbr0");
    assert_eq!(host.ovs_get("Port", "vi100", "tag"), "10");
    assert_eq!(host.ovs_get("Interface", "vi100", "mtu_request"), "1500");
    assert_eq!(
        host.ovs_get("Port", "vi100", "external_ids:owner"),
        "op-agent"
    );
    let ports = host.ports("ovsbr0");
    assert!(!ports.contains(&"veth100i0".to_string()), "{ports:?}");
    assert!(
        host.ping(100, "10.0.0.102"),
        "100 -> 101 through vi100/vi101"
    );

    // pre-start row: interface, kind, addresses.
    let pre = host.audit_step_rows(100, "mesh.confirm");
    assert_eq!(pre.len(), 1, "{pre:?}");
    assert_eq!(pre[0].outcome, "ok");
    let d = pre[0].detail_json();
    assert_eq!(d["interface"], "netmaker");
    assert_eq!(d["addresses"], serde_json::json!(["10.101.0.7/16"]));
    // post-start row: the mesh interface, its addresses and the container's NIC.
    let post = host.audit_step_rows(100, "mesh.via");
    assert_eq!(post.len(), 1, "{post:?}");
    assert_eq!(post[0].phase, "post-start");
    let d = post[0].detail_json();
    assert_eq!(d["interface"], "netmaker");
    assert_eq!(d["addresses"], serde_json::json!(["10.101.0.7/16"]));
    assert_eq!(d["link"], "vi100");
    assert_eq!(d["net"], 0);
    assert_eq!(d["hwaddr"], "bc:24:11:00:00:64");

    // mesh status shows the interface.
    let st = host.agent(&["mesh", "status"]);
    assert!(st.status.success(), "{}", st.text());
    assert!(
        st.text().starts_with("mesh via netmaker 10.101.0.7/16"),
        "{}",
        st.text()
    );

    // A second post-start changes nothing.
    let again = host.agent(&["hook", "100", "post-start"]);
    assert!(again.status.success(), "{}", again.text());
    assert!(
        again.text().contains("nothing to change"),
        "{}",
        again.text()
    );

    // Stop removes our row.
    host.sim_ok_text(&["stop", "100"]);
    let ports = host.ports("ovsbr0");
    assert!(!ports.iter().any(|p| p.contains("100")), "{ports:?}");
}

/// Starts 100 and expects pre-start to abort it with one line containing `want`.
fn assert_start_refused(host: &TestHost, want: &str) {
    let out = host.sim(&["start", "100"]);
    let t = out.text();
    assert!(!out.status.success(), "start must fail: {t}");
    let line = t
        .lines()
        .find(|l| l.starts_with("op-agent: 100 pre-start:"))
        .unwrap_or_else(|| panic!("no op-agent line in {t}"));
    assert!(line.contains(want), "{line}");
    assert_eq!(host.ct_status(100), "stopped");
    assert!(!host.links().iter().any(|l| l.contains("100")));
    let rows = host.audit_step_rows(100, "mesh.confirm");
    let last = rows.last().expect("a mesh.confirm row");
    assert_eq!(last.outcome, "failed");
    assert!(last.detail.contains(want), "{last:?}");
}

#[test]
fn mesh_down_missing_or_without_address_aborts_the_start() {
    let host = mesh_host("nm-bad", &["ovsbr0"], &[], MESH_ANY);
    netmaker_ct(&host, 100, "");
    assert_start_refused(&host, "mesh interface netmaker does not exist");

    add_mesh(&host, "netmaker", Some("10.101.0.7/16"), false);
    assert_start_refused(&host, "mesh interface netmaker is down");

    host.ip(&["addr", "flush", "dev", "netmaker"]);
    host.ip(&["link", "set", "netmaker", "up"]);
    assert_start_refused(
        &host,
        "mesh interface netmaker has no address in 10.101.0.0/16",
    );

    host.ip(&["addr", "add", "192.168.77.1/24", "dev", "netmaker"]);
    assert_start_refused(
        &host,
        "mesh interface netmaker has no address in 10.101.0.0/16",
    );

    host.ip(&["addr", "add", "10.101.3.4/16", "dev", "netmaker"]);
    let out = host.sim_ok_text(&["start", "100"]);
    assert!(out.contains("mesh via netmaker 10.101.3.4/16"), "{out}");
    assert_eq!(host.ct_status(100), "running");
}

#[test]
fn no_address_without_cidr_and_wrong_kind_are_refused() {
    // Default kind = wireguard: a veth is refused for its kind.
    let host = mesh_host("nm-kind", &["ovsbr0"], &[], "interface = \"nm0\"");
    netmaker_ct(&host, 100, "");
    add_mesh(&host, "nm0", None, true);
    assert_start_refused(&host, "mesh interface nm0 is of kind veth, not wireguard");
    std::fs::write(
        host.agent_toml(),
        std::fs::read_to_string(host.agent_toml())
            .unwrap()
            .replace("interface = \"nm0\"", "interface = \"nm0\"\nkind = \"any\""),
    )
    .unwrap();
    assert_start_refused(&host, "mesh interface nm0 has no address");
}

#[test]
fn require_mesh_false_warns_and_records() {
    let host = mesh_host("nm-warn", &["ovsbr0"], &[], MESH_ANY);
    netmaker_ct(&host, 100, "require_mesh = false\n");
    let out = host.sim_ok_text(&["start", "100"]);
    assert_eq!(host.ct_status(100), "running");
    assert!(host.links().contains(&"vi100".to_string()), "{out}");
    let pre = host.audit_step_rows(100, "mesh.confirm");
    assert_eq!(pre.len(), 1);
    assert_eq!(pre[0].outcome, "skipped");
    assert!(
        pre[0]
            .detail
            .contains("mesh interface netmaker does not exist"),
        "{:?}",
        pre[0]
    );
    let post = host.audit_step_rows(100, "mesh.via");
    assert_eq!(post.len(), 1);
    assert_eq!(post[0].outcome, "skipped");
    let st = host.agent(&["mesh", "status"]);
    assert_eq!(st.status.code(), Some(69), "{}", st.text());
    assert!(st.text().contains("does not exist"), "{}", st.text());
}

#[test]
fn linux_bridge_keeps_its_master_after_the_rename() {
    let host = mesh_host("nm-lbr", &["ovsbr0"], &["vmbr0"], MESH_ANY);
    add_mesh(&host, "netmaker", Some("10.101.0.7/16"), true);
    for v in [100u32, 101] {
        host.write_pve_conf(
            v,
            PveConf::op_hook(v).nics([
                Nic::with_id(0, "vmbr0", v as u16).ip(&format!("10.0.1.{}/24", v % 200 + 1))
            ]),
        );
        host.manage(v, "network_type = \"netmaker\"\n");
        host.sim_ok_text(&["start", &v.to_string()]);
    }
    for l in ["vi100", "vi101"] {
        let link = host.link(l).unwrap_or_else(|| panic!("{l} missing"));
        assert_eq!(link["master"], "vmbr0", "{link}");
        assert!(host.is_up(l));
    }
    assert!(!host.links().contains(&"veth100i0".to_string()));
    assert!(host.ports("ovsbr0").is_empty(), "nothing moved to OVS");
    let rows = host.audit_step_rows(100, "link.check-master");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].outcome, "ok");
    assert!(host.ping(100, "10.0.1.102"), "traffic through vmbr0");
}

#[test]
fn real_wireguard_link_when_the_kernel_has_it() {
    let host = mesh_host(
        "nm-wg",
        &["ovsbr0"],
        &[],
        "interface = \"netmaker\"\ncidr = \"10.101.0.0/16\"",
    );
    let probe = host.run(&["ip", "link", "add", "netmaker", "type", "wireguard"]);
    if !probe.status.success() {
        eprintln!(
            "real_wireguard_link_when_the_kernel_has_it: not run: `ip link add … type wireguard` failed: {}",
            String::from_utf8_lossy(&probe.stderr).trim()
        );
        return;
    }
    host.ip(&["addr", "add", "10.101.0.9/16", "dev", "netmaker"]);
    host.ip(&["link", "set", "netmaker", "up"]);
    netmaker_ct(&host, 100, "");
    let out = host.sim_ok_text(&["start", "100"]);
    assert!(out.contains("mesh via netmaker 10.101.0.9/16"), "{out}");
    let d = host.audit_step_rows(100, "mesh.confirm")[0].detail_json();
    assert_eq!(d["kind"], "wireguard");
}
