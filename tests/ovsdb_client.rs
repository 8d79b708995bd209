//! OVSDB client tests against a real, private ovsdb-server (and ovs-vswitchd in a netns of its
//! own where cur_cfg must move). Root only: they fail loudly otherwise.
//!
//! Run: `cargo test --test ovsdb_client` (add `-- --nocapture` for the timing printout).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use op_agent::ovsdb::vswitch::{ops, PortRate};
use op_agent::ovsdb::{Client, DelGuard, OvsdbError, PortSpec, VSWITCH_DB};
use op_testkit::{run_bounded, PrivateOvs};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(10);

async fn client(ovs: &PrivateOvs) -> Client {
    Client::connect(&ovs.socket(), T).await.unwrap()
}

fn ids(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn spec(name: &str, bridge: &str) -> PortSpec {
    PortSpec {
        name: name.into(),
        bridge: bridge.into(),
        tag: Some(10),
        trunks: vec![20, 30],
        vlan_mode: Some("native-untagged".into()),
        mtu_request: Some(1400),
        external_ids: ids(&[("owner", "op-agent"), ("vm-id", "100")]),
        rate: None,
    }
}

fn median(v: &mut [Duration]) -> (Duration, Duration) {
    v.sort();
    (v[v.len() / 2], v[v.len() * 9 / 10])
}

#[tokio::test]
async fn add_port_real_veth_applied_and_rows_visible() {
    let ovs = PrivateOvs::with_vswitchd();
    ovs.veth("vt0");
    let c = client(&ovs).await;
    assert!(c.bridge_exists("ovsbr0").await.unwrap());
    assert!(!c.bridge_exists("nobr").await.unwrap());
    assert_eq!(c.bridge_names().await.unwrap(), vec!["ovsbr0".to_string()]);

    let cfg = c.add_port(&spec("vt0", "ovsbr0")).await.unwrap();
    let cur = c.wait_cur_cfg(cfg, T).await.unwrap();
    assert!(cur >= cfg);

    // What a user checks with ovs-vsctl.
    assert_eq!(ovs.vsctl_ok(&["port-to-br", "vt0"]), "ovsbr0");
    assert_eq!(ovs.get_unquoted("Port", "vt0", "tag"), "10");
    assert_eq!(ovs.get_unquoted("Port", "vt0", "trunks"), "[20, 30]");
    assert_eq!(
        ovs.get_unquoted("Port", "vt0", "vlan_mode"),
        "native-untagged"
    );
    assert_eq!(ovs.get_unquoted("Interface", "vt0", "mtu_request"), "1400");
    for t in ["Port", "Interface"] {
        assert_eq!(ovs.get_unquoted(t, "vt0", "external_ids:owner"), "op-agent");
        assert_eq!(ovs.get_unquoted(t, "vt0", "external_ids:vm-id"), "100");
    }
    let ofport: i64 = ovs
        .get_unquoted("Interface", "vt0", "ofport")
        .parse()
        .unwrap();
    assert!(ofport > 0, "ofport {ofport}");
    assert_eq!(ovs.get_unquoted("Interface", "vt0", "error"), "[]");

    let (of, err) = c.interface_status("vt0").await.unwrap().unwrap();
    assert_eq!((of, err), (Some(ofport), None));
    assert_eq!(c.interface_status("nope").await.unwrap(), None);

    let row = c.get_port("vt0").await.unwrap().unwrap();
    assert_eq!(row.bridge.as_deref(), Some("ovsbr0"));
    assert_eq!((row.tag, row.trunks.clone()), (Some(10), vec![20, 30]));
    assert_eq!(row.vlan_mode.as_deref(), Some("native-untagged"));
    assert_eq!(
        row.external_ids,
        ids(&[("owner", "op-agent"), ("vm-id", "100")])
    );
    assert_eq!(row.interfaces.len(), 1);
    let i = &row.interfaces[0];
    assert_eq!(
        (i.name.as_str(), i.ofport, i.mtu_request, i.kind.as_str()),
        ("vt0", Some(ofport), Some(1400), "")
    );
    assert_eq!(i.external_ids, row.external_ids);
    assert_eq!(c.get_port("nope").await.unwrap(), None);
    let all = c.list_ports().await.unwrap();
    let names: Vec<&str> = all.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, vec!["ovsbr0", "vt0"]); // the bridge's internal port too
    assert_eq!(all[1], row);

    // Others bumping next_cfg meanwhile do not confuse the >= wait.
    ovs.vsctl_ok(&["set", "Open_vSwitch", ".", "external_ids:x=1"]);
    // This one waits for ovs-vswitchd (no --no-wait).
    let out = run_bounded(
        ovs.command("ovs-vsctl")
            .arg(format!("--db=unix:{}", ovs.socket().display()))
            .args([
                "--timeout=10",
                "set",
                "Open_vSwitch",
                ".",
                "external_ids:x=2",
            ]),
        T,
    );
    assert!(out.status.success(), "{out:?}");
    c.wait_cur_cfg(cfg, T).await.unwrap();

    let dcfg = c
        .del_port(
            "vt0",
            DelGuard::OwnedBy {
                key: "owner".into(),
                value: "op-agent".into(),
            },
        )
        .await
        .unwrap()
        .expect("port was present");
    assert!(dcfg > cfg);
    c.wait_cur_cfg(dcfg, T).await.unwrap();
    assert_eq!(ovs.vsctl_ok(&["list-ports", "ovsbr0"]), "");
    assert_eq!(
        ovs.vsctl_ok(&["--columns=name", "find", "Interface", "name=vt0"]),
        ""
    );
    assert_eq!(c.del_port("vt0", DelGuard::Any).await.unwrap(), None);
}

#[tokio::test]
async fn guards_abort_with_nothing_changed() {
    let ovs = PrivateOvs::db_only();
    ovs.vsctl_ok(&["add-br", "ovsbr0"]);
    let c = client(&ovs).await;
    let snapshot = || {
        (
            ovs.vsctl_ok(&["--format=json", "list", "Port"]),
            ovs.vsctl_ok(&["--format=json", "list", "Interface"]),
            ovs.vsctl_ok(&["--format=json", "list", "Bridge"]),
            ovs.get_unquoted("Open_vSwitch", ".", "next_cfg"),
        )
    };

    let before = snapshot();
    match c.add_port(&spec("p1", "nobr")).await {
        Err(OvsdbError::NoSuchBridge { bridge, port }) => {
            assert_eq!((bridge.as_str(), port.as_str()), ("nobr", "p1"))
        }
        other => panic!("expected NoSuchBridge, got {other:?}"),
    }
    assert_eq!(snapshot(), before);

    let first = spec("p1", "ovsbr0");
    c.add_port(&first).await.unwrap();
    let before = snapshot();
    let mut second = first.clone();
    second.tag = Some(99);
    match c.add_port(&second).await {
        Err(OvsdbError::PortExists { port }) => assert_eq!(port, "p1"),
        other => panic!("expected PortExists, got {other:?}"),
    }
    // An Interface of that name under another Port name is caught too.
    ovs.vsctl_ok(&["add-bond", "ovsbr0", "bond0", "i1", "i2"]);
    let before2 = snapshot();
    match c.add_port(&spec("i1", "ovsbr0")).await {
        Err(OvsdbError::PortExists { port }) => assert_eq!(port, "i1"),
        other => panic!("expected PortExists, got {other:?}"),
    }
    assert_eq!(snapshot(), before2);
    assert_ne!(before, before2);
    assert_eq!(ovs.get_unquoted("Port", "p1", "tag"), "10");
    // The bond's interfaces are not named like the port: get_port fetches them by uuid.
    let bond = c.get_port("bond0").await.unwrap().unwrap();
    let mut inames: Vec<String> = bond.interfaces.iter().map(|i| i.name.clone()).collect();
    inames.sort();
    assert_eq!(inames, vec!["i1", "i2"]);

    // Per-op error objects carry index and details; out-of-range tag is a constraint error.
    let mut bad = spec("p2", "ovsbr0");
    bad.tag = Some(5000);
    let e = c.add_port(&bad).await.unwrap_err();
    assert!(
        matches!(e, OvsdbError::OpFailed { index: 5, ref op, .. } if op == "insert"),
        "{e}"
    );
    let e = c
        .transact(
            VSWITCH_DB,
            vec![json!({"op": "select", "table": "NoTable", "where": []})],
        )
        .await
        .unwrap_err();
    assert!(matches!(e, OvsdbError::OpFailed { index: 0, .. }), "{e}");
    assert!(e.to_string().contains("NoTable"), "{e}");
}

#[tokio::test]
async fn del_port_owned_by_refuses_foreign_row() {
    let ovs = PrivateOvs::db_only();
    ovs.vsctl_ok(&["add-br", "ovsbr0"]);
    ovs.vsctl_ok(&[
        "add-port",
        "ovsbr0",
        "foreign",
        "--",
        "set",
        "Port",
        "foreign",
        "external_ids:owner=someone",
    ]);
    ovs.vsctl_ok(&["add-port", "ovsbr0", "plain"]);
    let c = client(&ovs).await;
    let owned = || DelGuard::OwnedBy {
        key: "owner".into(),
        value: "op-agent".into(),
    };
    for name in ["foreign", "plain"] {
        match c.del_port(name, owned()).await {
            Err(OvsdbError::NotOwned { port, .. }) => assert_eq!(port, name),
            other => panic!("expected NotOwned for {name}, got {other:?}"),
        }
    }
    assert_eq!(ovs.vsctl_ok(&["list-ports", "ovsbr0"]), "foreign\nplain");
    assert_eq!(c.del_port("absent", owned()).await.unwrap(), None);

    // replace_port with the same guard refuses too, and adds nothing.
    match c
        .replace_port("foreign", owned(), &spec("new0", "ovsbr0"))
        .await
    {
        Err(OvsdbError::NotOwned { .. }) => {}
        other => panic!("expected NotOwned, got {other:?}"),
    }
    assert_eq!(ovs.vsctl_ok(&["list-ports", "ovsbr0"]), "foreign\nplain");
    // With Any it goes; replace_port swaps in one transaction.
    let cfg = c
        .replace_port("plain", DelGuard::Any, &spec("new0", "ovsbr0"))
        .await
        .unwrap();
    assert_eq!(ovs.vsctl_ok(&["list-ports", "ovsbr0"]), "foreign\nnew0");
    assert_eq!(
        ovs.get_unquoted("Open_vSwitch", ".", "next_cfg"),
        cfg.to_string()
    );
    assert!(c
        .del_port("foreign", DelGuard::Any)
        .await
        .unwrap()
        .is_some());
    assert_eq!(ovs.vsctl_ok(&["list-ports", "ovsbr0"]), "new0");
}

#[tokio::test]
async fn wait_cur_cfg_times_out_without_vswitchd() {
    let ovs = PrivateOvs::db_only();
    ovs.vsctl_ok(&["add-br", "ovsbr0"]);
    let c = client(&ovs).await;
    let cfg = c.add_port(&spec("p1", "ovsbr0")).await.unwrap();
    let t0 = Instant::now();
    let e = c
        .wait_cur_cfg(cfg, Duration::from_millis(300))
        .await
        .unwrap_err();
    let took = t0.elapsed();
    println!("wait_cur_cfg(300 ms) without vswitchd returned after {took:?}");
    match e {
        OvsdbError::WaitTimeout {
            next_cfg,
            cur_cfg,
            ms,
        } => {
            assert_eq!((next_cfg, cur_cfg, ms), (cfg, Some(0), 300))
        }
        other => panic!("expected WaitTimeout, got {other:?}"),
    }
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(500),
        "{took:?}"
    );
    // A request timeout: the server holds a `wait` op for 5 s; the client gives up at 300 ms and
    // the connection stays usable (the late reply is dropped).
    let short = Client::connect(&ovs.socket(), Duration::from_millis(300))
        .await
        .unwrap();
    let t0 = Instant::now();
    let e = short
        .transact(VSWITCH_DB, vec![json!({"op": "wait", "table": "Bridge", "timeout": 5000,
            "where": [["name", "==", "never"]], "columns": ["name"], "until": "==", "rows": [{"name": "never"}]})])
        .await
        .unwrap_err();
    assert!(
        matches!(e, OvsdbError::Timeout { ref method, ms: 300, .. } if method == "transact"),
        "{e}"
    );
    assert!(t0.elapsed() < Duration::from_millis(450));
    assert!(short.bridge_exists("ovsbr0").await.unwrap());
}

#[tokio::test]
async fn fifty_pipelined_transacts_all_answered() {
    let ovs = PrivateOvs::db_only();
    let mut args: Vec<String> = Vec::new();
    for i in 0..50 {
        args.extend(["--".into(), "add-br".into(), format!("b{i}")]);
    }
    ovs.vsctl_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let c = client(&ovs).await;
    let calls = (0..50).map(|i| {
        let c = &c;
        async move {
            let r = c
                .transact(VSWITCH_DB, vec![
                    json!({"op": "comment", "comment": format!("call {i}")}),
                    json!({"op": "select", "table": "Bridge", "where": [["name", "==", format!("b{i}")]], "columns": ["name"]}),
                ])
                .await
                .unwrap();
            (i, r)
        }
    });
    let t0 = Instant::now();
    let results = futures_util::future::join_all(calls).await;
    println!("50 pipelined transacts: {:?}", t0.elapsed());
    assert_eq!(results.len(), 50);
    for (i, r) in results {
        assert_eq!(
            r[1]["rows"],
            json!([{"name": format!("b{i}")}]),
            "call {i} got another call's answer"
        );
    }
}

#[tokio::test]
async fn quotes_and_braces_round_trip() {
    let ovs = PrivateOvs::db_only();
    let br = r#"a"}b"#;
    ovs.vsctl_ok(&["add-br", br]);
    let c = client(&ovs).await;
    assert!(c.bridge_exists(br).await.unwrap());
    assert_eq!(c.bridge_names().await.unwrap(), vec![br.to_string()]);
    let name = r#"p"}{\'x"#;
    let mut s = spec(name, br);
    s.external_ids = ids(&[("k\"}", "v\"}\n{\\"), ("owner", "op-agent")]);
    c.add_port(&s).await.unwrap();
    let row = c.get_port(name).await.unwrap().unwrap();
    assert_eq!((row.name.as_str(), row.bridge.as_deref()), (name, Some(br)));
    assert_eq!(row.external_ids, s.external_ids);
    assert_eq!(row.interfaces[0].external_ids, s.external_ids);
    // What ovs-vsctl sees, as JSON.
    let listed: Value =
        serde_json::from_str(&ovs.vsctl_ok(&["--format=json", "--columns=name", "list", "Port"]))
            .unwrap();
    let mut data = listed["data"].as_array().unwrap().clone();
    data.sort_by_key(|v| v.to_string());
    assert_eq!(data, vec![json!([br]), json!([name])]); // with the bridge's internal port
                                                        // The stream is still in sync for the next calls.
    assert_eq!(c.list_ports().await.unwrap().len(), 2);
    let owned = DelGuard::OwnedBy {
        key: "owner".into(),
        value: "op-agent".into(),
    };
    assert!(c.del_port(name, owned).await.unwrap().is_some());
    assert_eq!(c.list_ports().await.unwrap().len(), 1);
}

#[tokio::test]
async fn server_echo_is_answered() {
    let ovs = PrivateOvs::db_only();
    let mgr = ovs.file("mgr.sock");
    let target = format!("target=\"punix:{}\"", mgr.display());
    ovs.vsctl_ok(&[
        "--",
        "--id=@m",
        "create",
        "Manager",
        &target,
        "inactivity_probe=1000",
        "--",
        "add",
        "Open_vSwitch",
        ".",
        "manager_options",
        "@m",
    ]);
    // The socket file can exist before ovsdb-server listens on it: wait until a connect works.
    for _ in 0..250 {
        if std::os::unix::net::UnixStream::connect(&mgr).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let c = Client::connect(&mgr, T).await.unwrap();
    // Control: a connection that never answers is dropped by the server's probe.
    let mut silent = std::os::unix::net::UnixStream::connect(&mgr).unwrap();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(
        c.echoes_answered() >= 1,
        "no echo seen in 3.5 s with a 1 s probe"
    );
    assert!(
        c.bridge_exists("x").await.is_ok(),
        "connection dropped despite echo replies"
    );
    silent
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut got = Vec::new();
    let eof = std::io::Read::read_to_end(&mut silent, &mut got).is_ok();
    assert!(
        eof,
        "server kept a silent connection open; the echo test proves nothing"
    );
    assert!(String::from_utf8_lossy(&got).contains("echo"));
}

#[tokio::test]
async fn server_killed_mid_call_fails_pending_calls() {
    let ovs = PrivateOvs::db_only();
    ovs.vsctl_ok(&["add-br", "ovsbr0"]);
    let c = Client::connect(&ovs.socket(), Duration::from_secs(30))
        .await
        .unwrap();
    c.monitor_cur_cfg().await.unwrap();
    let pid = ovs.daemon_pid("ovsdb-server");
    let held = c.transact(VSWITCH_DB, vec![json!({"op": "wait", "table": "Bridge", "timeout": 20000,
        "where": [["name", "==", "never"]], "columns": ["name"], "until": "==", "rows": [{"name": "never"}]})]);
    let waiting = c.wait_cur_cfg(1000, Duration::from_secs(30));
    let kill = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        unsafe { libc::kill(pid, libc::SIGKILL) };
        Instant::now()
    };
    let (held, waiting, killed_at) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(3), held),
        tokio::time::timeout(Duration::from_secs(3), waiting),
        kill
    );
    println!(
        "pending calls failed {:?} after the kill",
        killed_at.elapsed()
    );
    for r in [held.map(|r| r.map(|_| ())), waiting.map(|r| r.map(|_| ()))] {
        match r {
            Ok(Err(OvsdbError::ConnectionClosed { .. })) => {}
            other => panic!("expected ConnectionClosed, got {other:?}"),
        }
    }
    let t0 = Instant::now();
    assert!(matches!(
        c.bridge_names().await,
        Err(OvsdbError::ConnectionClosed { .. })
    ));
    assert!(t0.elapsed() < Duration::from_millis(100));
}

#[tokio::test]
async fn measure_add_del_with_real_veth() {
    let ovs = PrivateOvs::with_vswitchd();
    ovs.veth("vm0");
    let c = client(&ovs).await;
    let owned = || DelGuard::OwnedBy {
        key: "owner".into(),
        value: "op-agent".into(),
    };
    let (mut add, mut del, mut add_tx, mut del_tx) = (vec![], vec![], vec![], vec![]);
    for _ in 0..100 {
        let t0 = Instant::now();
        let cfg = c.add_port(&spec("vm0", "ovsbr0")).await.unwrap();
        add_tx.push(t0.elapsed());
        c.wait_cur_cfg(cfg, T).await.unwrap();
        add.push(t0.elapsed());
        let (of, err) = c.interface_status("vm0").await.unwrap().unwrap();
        assert!(of.unwrap_or(0) > 0 && err.is_none(), "{of:?} {err:?}");
        let t0 = Instant::now();
        let cfg = c.del_port("vm0", owned()).await.unwrap().unwrap();
        del_tx.push(t0.elapsed());
        c.wait_cur_cfg(cfg, T).await.unwrap();
        del.push(t0.elapsed());
    }
    for (what, v) in [
        ("add_port (transact)", &mut add_tx),
        ("add_port+wait", &mut add),
        ("del_port (select+transact)", &mut del_tx),
        ("del_port+wait", &mut del),
    ] {
        let (m, p90) = median(v);
        println!("{what:28} n=100 median {m:?} p90 {p90:?}");
    }
    // replace_port vs del+add on the same connection (fake device names, no netdev).
    ovs.vsctl_ok(&["add-port", "ovsbr0", "r0"]);
    let (mut sep, mut one) = (vec![], vec![]);
    let (a, b) = ("r0", "r1");
    for _ in 0..50 {
        let t0 = Instant::now();
        let cfg = c.del_port(a, DelGuard::Any).await.unwrap().unwrap();
        c.wait_cur_cfg(cfg, T).await.unwrap();
        let cfg = c.add_port(&spec(b, "ovsbr0")).await.unwrap();
        c.wait_cur_cfg(cfg, T).await.unwrap();
        sep.push(t0.elapsed());
        let t0 = Instant::now();
        let cfg = c
            .replace_port(b, DelGuard::Any, &spec(a, "ovsbr0"))
            .await
            .unwrap();
        c.wait_cur_cfg(cfg, T).await.unwrap();
        one.push(t0.elapsed());
    }
    let ((ms, _), (mo, _)) = (median(&mut sep), median(&mut one));
    println!("fake port: del+wait+add+wait median {ms:?}; replace_port+wait median {mo:?} (n=50)");
}

#[tokio::test]
async fn measure_list_ports_1000() {
    let ovs = PrivateOvs::db_only();
    let mut args: Vec<String> = vec!["add-br".into(), "ovsbr0".into()];
    for i in 0..1000 {
        args.extend([
            "--".into(),
            "add-port".into(),
            "ovsbr0".into(),
            format!("lp{i}"),
        ]);
        args.extend(["--".into(), "set".into(), "Port".into(), format!("lp{i}")]);
        args.push("external_ids:owner=op-agent".into());
    }
    ovs.vsctl_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let c = client(&ovs).await;
    let mut v = vec![];
    for _ in 0..10 {
        let t0 = Instant::now();
        let ports = c.list_ports().await.unwrap();
        v.push(t0.elapsed());
        assert_eq!(ports.len(), 1001);
        assert!(ports.iter().all(|p| p.bridge.as_deref() == Some("ovsbr0")));
    }
    let (m, p90) = median(&mut v);
    println!("list_ports with 1001 ports: n=10 median {m:?} p90 {p90:?}");
}

/// `snapshot` reads bridges and the named ports in one transaction and remembers their row
/// UUIDs; `del_port` uses a remembered UUID only behind a `wait`, so a hint gone stale (the
/// port re-created, or replaced by a foreign one, or removed) never deletes the wrong row.
#[tokio::test]
async fn snapshot_and_del_port_by_stale_uuid_hint() {
    let ovs = PrivateOvs::db_only();
    ovs.vsctl_ok(&["add-br", "ovsbr0"]);
    ovs.vsctl_ok(&["add-br", "ovsbr1"]);
    let c = client(&ovs).await;
    let owned = DelGuard::OwnedBy {
        key: "owner".into(),
        value: "op-agent".into(),
    };
    let mut s = spec("p1", "ovsbr0");
    s.external_ids = ids(&[("owner", "op-agent")]);
    c.add_port(&s).await.unwrap();
    ovs.vsctl_ok(&["add-bond", "ovsbr1", "bond0", "i1", "i2"]);

    let snap = c.snapshot(&["p1", "absent", "bond0", "p1"]).await.unwrap();
    assert_eq!(snap.bridges, vec!["ovsbr0", "ovsbr1"]);
    assert_eq!(snap.ports.keys().collect::<Vec<_>>(), vec!["bond0", "p1"]);
    let p1 = &snap.ports["p1"];
    assert_eq!(p1.bridge.as_deref(), Some("ovsbr0"));
    assert_eq!(p1.tag, Some(10));
    assert_eq!(p1.interfaces.len(), 1);
    assert_eq!(snap.ports["bond0"].interfaces.len(), 2);

    // Re-created by someone else (new row UUID, still owned): the hint fails its wait, the
    // port is read afresh and the current row is deleted.
    ovs.vsctl_ok(&["del-port", "p1"]);
    ovs.vsctl_ok(&[
        "add-port",
        "ovsbr0",
        "p1",
        "--",
        "set",
        "Port",
        "p1",
        "external_ids:owner=op-agent",
    ]);
    assert!(c.del_port("p1", owned.clone()).await.unwrap().is_some());
    assert_eq!(
        ovs.vsctl_ok(&["--if-exists", "get", "Port", "p1", "name"]),
        ""
    );

    // Re-created as a foreign port: never deleted through the stale hint.
    c.add_port(&s).await.unwrap();
    c.snapshot(&["p1"]).await.unwrap();
    ovs.vsctl_ok(&["del-port", "p1"]);
    ovs.vsctl_ok(&["add-port", "ovsbr0", "p1"]);
    match c.del_port("p1", owned.clone()).await {
        Err(OvsdbError::NotOwned { port, .. }) => assert_eq!(port, "p1"),
        other => panic!("expected NotOwned, got {other:?}"),
    }
    assert_eq!(ovs.get_unquoted("Port", "p1", "name"), "p1");

    // Hint for a port that is gone: nothing to delete.
    c.snapshot(&["p1"]).await.unwrap();
    ovs.vsctl_ok(&["del-port", "p1"]);
    assert_eq!(c.del_port("p1", DelGuard::Any).await.unwrap(), None);
    // A fresh hint: deleted in one transaction.
    c.add_port(&s).await.unwrap();
    c.snapshot(&["p1"]).await.unwrap();
    assert!(c.del_port("p1", DelGuard::Any).await.unwrap().is_some());
    assert_eq!(
        ovs.vsctl_ok(&["--if-exists", "get", "Port", "p1", "name"]),
        ""
    );
}

/// A port with a rate gets its linux-htb QoS with queue 0 and its policing in the one insert
/// transaction; the owner-marked deletes of `del_qos_ops`, run with the port's delete, leave
/// no QoS or Queue row behind, and never touch another port's or owner's rows.
#[tokio::test]
async fn rate_rows_inserted_with_the_port_and_deleted_with_it() {
    let ovs = PrivateOvs::db_only();
    ovs.vsctl_ok(&["add-br", "ovsbr0"]);
    let c = client(&ovs).await;
    let rate = PortRate {
        max_rate_bits: 8_388_608,
        burst_bits: 8_388_608,
        policing_kbits: 8_388,
        policing_burst_kbits: 8_388,
    };
    for name in ["vi100", "vi101"] {
        let s = PortSpec {
            rate: Some(rate),
            ..spec(name, "ovsbr0")
        };
        c.add_port(&s).await.unwrap();
    }
    ovs.vsctl_ok(&[
        "--",
        "--id=@q",
        "create",
        "QoS",
        "type=linux-htb",
        "external_ids:owner=someone",
        "external_ids:port=vi100",
    ]);
    let qos = ovs.vsctl_ok(&["get", "Port", "vi100", "qos"]);
    assert_eq!(ovs.vsctl_ok(&["get", "QoS", &qos, "type"]), "linux-htb");
    assert_eq!(
        ovs.vsctl_ok(&["get", "QoS", &qos, "other_config:max-rate"]),
        "\"8388608\""
    );
    let queue = ovs.vsctl_ok(&["get", "QoS", &qos, "queues:0"]);
    assert_eq!(
        ovs.vsctl_ok(&["get", "Queue", &queue, "other_config:burst"]),
        "\"8388608\""
    );
    assert_eq!(
        ovs.vsctl_ok(&["get", "Queue", &queue, "external_ids:port"]),
        "vi100"
    );
    assert_eq!(
        ovs.vsctl_ok(&["get", "Interface", "vi100", "ingress_policing_rate"]),
        "8388"
    );
    assert_eq!(
        ovs.vsctl_ok(&["get", "Interface", "vi100", "ingress_policing_burst"]),
        "8388"
    );
    let uuid = c.get_port("vi100").await.unwrap().unwrap().uuid;
    let owned = DelGuard::OwnedBy {
        key: "owner".into(),
        value: "op-agent".into(),
    };
    let mut del = ops::del_port("vi100", &uuid, &owned);
    let at = ops::cfg_index(&del) - 1;
    let qos_ops = ops::del_qos_ops("vi100", &uuid, "owner", "op-agent");
    del.splice(at..at, qos_ops);
    let wire: Vec<Value> = del.iter().map(|o| o.to_json()).collect();
    c.transact(VSWITCH_DB, wire).await.unwrap();
    assert_eq!(ovs.vsctl_ok(&["list-ports", "ovsbr0"]), "vi101");
    // vi101's rows and the foreign row stay; vi100's are gone.
    let ports = ovs.vsctl_ok(&["--columns=external_ids", "list", "QoS"]);
    assert!(ports.contains("port=vi101"), "{ports}");
    assert!(ports.contains("owner=someone"), "{ports}");
    assert_eq!(ports.matches("owner=op-agent").count(), 1, "{ports}");
    let queues = ovs.vsctl_ok(&["--columns=external_ids", "list", "Queue"]);
    assert_eq!(queues.matches("port=vi").count(), 1, "{queues}");
    assert!(queues.contains("port=vi101"), "{queues}");
}
