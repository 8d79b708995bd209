//! `op-agent check --all` predicts what each managed container's next pre-start would refuse,
//! on the live host (private OVS and netns): a `[[nic]]` on a Linux bridge, a bridge missing
//! from OVSDB, a name held by a link op-agent did not make, firewall=1 without
//! `on_firewall = "skip"`, and the condone regex of the bridge a NIC is plugged into.
//! Root only; run: `cargo build --workspace && cargo test --test check_all`.

use op_testkit::TestHost;

fn conf(vmid: u32, bridge: &str, flags: &str) -> String {
    format!(
        "hostname: ct{vmid}\nhookscript: local:snippets/op-hook\n\
         net0: name=eth0,bridge={bridge},hwaddr=BC:24:11:00:02:{:02X},ip=10.0.0.{}/24,type=veth{flags}\n",
        vmid % 256,
        vmid % 200 + 1
    )
}

#[test]
fn check_all_predicts_pre_start_refusals() {
    let host = TestHost::with_bridges("chk-all", &["ovsbr0"], &["vmbr1"]);
    let nic0 = "network_type = \"bridge\"\n\n[[nic]]\nnet = 0\n";
    host.write_pve_conf(100, conf(100, "vmbr1", ""));
    host.manage(100, nic0);
    host.write_pve_conf(101, conf(101, "ovsbr9", ""));
    host.manage(101, "network_type = \"bridge\"\n");
    host.write_pve_conf(102, conf(102, "ovsbr0", ",firewall=1"));
    host.manage(102, "network_type = \"bridge\"\n");
    host.write_pve_conf(103, conf(103, "ovsbr0", ""));
    host.manage(103, "network_type = \"bridge\"\n");
    host.ip(&[
        "link", "add", "vi103", "type", "veth", "peer", "name", "vi103p",
    ]);
    host.write_pve_conf(104, conf(104, "ovsbr0", ""));
    host.manage(104, "network_type = \"bridge\"\n");
    let dir = host.root().join("etc/network");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("interfaces"),
        "auto ovsbr0\niface ovsbr0 inet manual\n\tovs_type OVSBridge\n\tovs_ports eno1\n\tovs_ports_condone_regex ^stray\n",
    )
    .unwrap();

    let o = host.agent(&["check", "--all"]);
    let out = o.stdout_text();
    assert_eq!(o.code(), Some(1), "{}", o.text());
    let has = |s: &str| assert!(out.contains(s), "missing {s:?} in:\n{out}");
    has("100 pre-start would refuse: net0: vmbr1 is a Linux bridge; op-agent manages Open vSwitch bridges");
    has("101 pre-start would refuse: net0: bridge ovsbr9 does not exist in OVSDB");
    has("102: ERROR ");
    has("firewall=1");
    has("103 pre-start would refuse: net0: a link named vi103 exists that op-agent did not make");
    has("104: ok (stopped)");
    has("WARNING ");
    has("vi104");
    has("5 checked: 1 ok, 4 with findings, 1 warning");

    // One container: the same prediction, exit 1.
    let o = host.agent(&["check", "100"]);
    assert_eq!(o.code(), Some(1), "{}", o.text());
    assert!(
        o.stdout_text().contains("vmbr1 is a Linux bridge"),
        "{}",
        o.text()
    );
    let o = host.agent(&["check", "104"]);
    assert_eq!(o.code(), Some(0), "{}", o.text());

    // `config check --live`: the files' report, then the same live predictions.
    let o = host.agent(&["config", "check", "--live"]);
    let out = o.stdout_text();
    let has = |s: &str| assert!(out.contains(s), "missing {s:?} in:\n{out}");
    has("ERROR live 101 pre-start would refuse: net0: bridge ovsbr9 does not exist in OVSDB");
    has("ERROR live 103 pre-start would refuse: net0: a link named vi103 exists");
    has("live 104: ok (stopped)");
    // 102's firewall=1 is a file error: 78 wins over the live findings.
    assert_eq!(o.code(), Some(78), "{}", o.text());
    let o = host.agent(&["config", "check", "--live", "--vmid", "104"]);
    assert_eq!(o.code(), Some(0), "{}", o.text());
    assert!(
        o.stdout_text().contains("live 104: ok (stopped)"),
        "{}",
        o.text()
    );
    let o = host.agent(&["config", "check", "--live", "--vmid", "101"]);
    assert_eq!(o.code(), Some(1), "{}", o.text());
    let o = host.agent(&[
        "--output-format",
        "json",
        "config",
        "check",
        "--live",
        "--vmid",
        "101",
    ]);
    let v: serde_json::Value = serde_json::from_str(&o.stdout_text()).unwrap();
    assert_eq!(v["exit"], 1, "{v}");
    assert_eq!(v["live"]["containers"][0]["vmid"], 101, "{v}");
    assert_eq!(v["live"]["containers"][0]["state"], "drift", "{v}");
}
