//! The batched OVSDB changes against a real, private ovsdb-server and ovs-vswitchd: many Port
//! inserts or deletes cost ONE `next_cfg` bump (one reconfiguration of ovs-vswitchd), and a
//! row changed under the batch (its owner mark gone after the client read it) fails only its
//! own item: the others are still deleted, the changed row stays. Many Port replacements
//! (`naming = "keep"` taking over PVE's own rows) share one transaction as well. Root only.
//!
//! Run: `cargo test --test ovsdb_batch`.

use std::collections::BTreeMap;
use std::time::Duration;

use op_agent::ovsdb::{Client, DelGuard, OvsdbError, PortSpec};
use op_testkit::PrivateOvs;

const T: Duration = Duration::from_secs(10);

fn spec(name: &str) -> PortSpec {
    PortSpec {
        name: name.into(),
        bridge: "ovsbr0".into(),
        tag: Some(10),
        external_ids: BTreeMap::from([
            ("owner".to_string(), "op-agent".to_string()),
            ("vm-id".to_string(), "100".to_string()),
        ]),
        ..Default::default()
    }
}

fn owned() -> DelGuard {
    DelGuard::OwnedBy {
        key: "owner".into(),
        value: "op-agent".into(),
    }
}

fn next_cfg(ovs: &PrivateOvs) -> i64 {
    ovs.get_unquoted("Open_vSwitch", ".", "next_cfg")
        .parse()
        .unwrap()
}

const NAMES: [&str; 5] = ["vb0", "vb1", "vb2", "vb3", "vb4"];

#[tokio::test]
async fn five_ports_are_added_and_deleted_with_one_next_cfg_bump_each() {
    let ovs = PrivateOvs::with_vswitchd();
    for n in NAMES {
        ovs.veth(n);
    }
    let c = Client::connect(&ovs.socket(), T).await.unwrap();
    let before = next_cfg(&ovs);
    let specs: Vec<PortSpec> = NAMES.iter().map(|n| spec(n)).collect();
    let added = c.add_ports(&specs).await;
    let next: Vec<i64> = added.into_iter().map(Result::unwrap).collect();
    assert!(
        next.iter().all(|n| *n == before + 1),
        "{next:?} after {before}"
    );
    c.wait_cur_cfg(before + 1, T).await.unwrap();
    let names: Vec<String> = NAMES.iter().map(|n| n.to_string()).collect();
    for (n, st) in NAMES.iter().zip(c.interfaces_status(&names).await.unwrap()) {
        let (ofport, error) = st.unwrap();
        assert!(
            ofport.unwrap_or(-1) > 0 && error.is_none(),
            "{n}: {ofport:?} {error:?}"
        );
        assert_eq!(ovs.get_unquoted("Port", n, "tag"), "10");
    }
    let items: Vec<(String, DelGuard)> = names.iter().map(|n| (n.clone(), owned())).collect();
    let deleted = c.del_ports(&items).await;
    assert!(
        deleted
            .iter()
            .all(|r| matches!(r, Ok(Some(n)) if *n == before + 2)),
        "{deleted:?}"
    );
    assert_eq!(next_cfg(&ovs), before + 2);
    assert!(ovs.ports("ovsbr0").is_empty(), "{:?}", ovs.ports("ovsbr0"));
    // Absent now: each reports so, nothing is bumped.
    let again = c.del_ports(&items).await;
    assert!(again.iter().all(|r| matches!(r, Ok(None))), "{again:?}");
}

#[tokio::test]
async fn a_row_changed_under_the_batch_fails_alone_and_the_others_are_done() {
    let ovs = PrivateOvs::with_vswitchd();
    for n in NAMES {
        ovs.veth(n);
    }
    let c = Client::connect(&ovs.socket(), T).await.unwrap();
    let specs: Vec<PortSpec> = NAMES.iter().map(|n| spec(n)).collect();
    for r in c.add_ports(&specs).await {
        r.unwrap();
    }
    // The client reads the rows (and remembers their UUIDs); then an admin takes vb2 over.
    let read = c.list_ports().await.unwrap();
    assert_eq!(
        read.iter().filter(|p| p.name.starts_with("vb")).count(),
        NAMES.len()
    );
    ovs.vsctl_ok(&["set", "Port", "vb2", "external_ids:owner=admin"]);
    let items: Vec<(String, DelGuard)> = NAMES.iter().map(|n| (n.to_string(), owned())).collect();
    let before = next_cfg(&ovs);
    let r = c.del_ports(&items).await;
    for (n, r) in NAMES.iter().zip(&r) {
        match *n {
            "vb2" => assert!(matches!(r, Err(OvsdbError::NotOwned { .. })), "{n}: {r:?}"),
            _ => assert!(matches!(r, Ok(Some(_))), "{n}: {r:?}"),
        }
    }
    assert_eq!(ovs.ports("ovsbr0"), ["vb2"], "only the changed row is left");
    assert_eq!(
        ovs.get_unquoted("Port", "vb2", "external_ids:owner"),
        "admin"
    );
    assert!(
        next_cfg(&ovs) - before <= 2,
        "the others still in one transaction"
    );

    // An insert whose name is taken fails alone too: the others are added.
    let r = c.add_ports(&[spec("vb1"), spec("vb2"), spec("vb3")]).await;
    assert!(r[0].is_ok() && r[2].is_ok(), "{r:?}");
    assert!(matches!(r[1], Err(OvsdbError::PortExists { .. })), "{r:?}");
    let mut ports = ovs.ports("ovsbr0");
    ports.sort();
    assert_eq!(ports, ["vb1", "vb2", "vb3"]);
    assert_eq!(
        ovs.get_unquoted("Port", "vb2", "external_ids:owner"),
        "admin"
    );
}

#[tokio::test]
async fn pve_rows_are_taken_over_in_one_transaction_and_a_foreign_row_fails_alone() {
    let ovs = PrivateOvs::with_vswitchd();
    for n in NAMES {
        ovs.veth(n);
        // PVE's tap_plug: a Port of that name, no marks.
        ovs.vsctl_ok(&["add-port", "ovsbr0", n, "tag=20"]);
    }
    ovs.vsctl_ok(&["set", "Port", "vb3", "external_ids:owner=admin"]);
    let c = Client::connect(&ovs.socket(), T).await.unwrap();
    let before = next_cfg(&ovs);
    // vb0–vb2 taken over whoever owns them (keep mode's adopt); vb3 only if op-agent's; vb4 new.
    let items: Vec<(String, DelGuard, PortSpec)> = NAMES
        .iter()
        .map(|n| {
            let guard = if *n == "vb3" { owned() } else { DelGuard::Any };
            (n.to_string(), guard, spec(n))
        })
        .collect();
    ovs.vsctl_ok(&["del-port", "vb4"]);
    let r = c.replace_ports(&items).await;
    for (n, r) in NAMES.iter().zip(&r) {
        match *n {
            "vb3" => assert!(matches!(r, Err(OvsdbError::NotOwned { .. })), "{n}: {r:?}"),
            _ => assert_eq!(r.as_ref().ok(), Some(&(before + 1)), "{n}: {r:?}"),
        }
    }
    assert_eq!(next_cfg(&ovs), before + 1, "one transaction for the four");
    c.wait_cur_cfg(before + 1, T).await.unwrap();
    for n in ["vb0", "vb1", "vb2", "vb4"] {
        assert_eq!(ovs.get_unquoted("Port", n, "tag"), "10", "{n}");
        assert_eq!(
            ovs.get_unquoted("Port", n, "external_ids:owner"),
            "op-agent"
        );
    }
    assert_eq!(ovs.get_unquoted("Port", "vb3", "tag"), "20");
    assert_eq!(
        ovs.get_unquoted("Port", "vb3", "external_ids:owner"),
        "admin"
    );
    let names: Vec<String> = ["vb0", "vb4"].iter().map(|n| n.to_string()).collect();
    for st in c.interfaces_status(&names).await.unwrap() {
        assert!(st.unwrap().0.unwrap_or(-1) > 0);
    }
}
