//! The session over a socket pair whose other end the test scripts: the `cur_cfg` monitor and
//! wait, and guard failures mapped end to end. The real server is in tests/ovsdb_client.rs.

use std::time::Duration;

use serde_json::{json, Value};

use super::*;
use crate::ovsdb::rpc::tests::Peer;

fn session(timeout: Duration) -> (Client, Peer) {
    let (conn, peer) = Peer::pair(timeout);
    (Client::with(conn), peer)
}

fn cfg_update(v: i64) -> Value {
    json!({"Open_vSwitch": {"row-1": {"new": {"cur_cfg": v}}}})
}

/// Answers the monitor request with `cur_cfg` = `initial`; returns the monitor id.
async fn answer_monitor(srv: &mut Peer, initial: i64) -> String {
    let req = srv.recv().await;
    assert_eq!(req["method"], "monitor");
    assert_eq!(req["params"][0], "Open_vSwitch");
    assert_eq!(
        req["params"][2],
        json!({"Open_vSwitch": {"columns": ["cur_cfg"]}})
    );
    srv.send(json!({"id": req["id"], "result": cfg_update(initial), "error": null}))
        .await;
    req["params"][1].as_str().unwrap().to_string()
}

#[tokio::test]
async fn wait_cur_cfg_follows_updates_and_only_raises() {
    let (c, mut srv) = session(Duration::from_secs(5));
    let server = async {
        let mon = answer_monitor(&mut srv, 3).await;
        assert_eq!(mon, "op-agent-cur_cfg-1");
        // These reach the reader before the client applies the monitor reply (3): only raising
        // keeps 5 from being lowered back, whatever the order.
        for v in [4, 2, 5] {
            srv.send(json!({"id": null, "method": "update", "params": [mon, cfg_update(v)]}))
                .await;
        }
    };
    let (_, r) = tokio::join!(server, c.wait_cur_cfg(5, Duration::from_secs(5)));
    assert_eq!(r.unwrap(), 5);
    assert_eq!(c.monitor_cur_cfg().await.unwrap(), 5);
    // Already reached: no traffic needed.
    assert_eq!(
        c.wait_cur_cfg(4, Duration::from_millis(50)).await.unwrap(),
        5
    );
    let e = c
        .wait_cur_cfg(9, Duration::from_millis(50))
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "ovs-vswitchd did not apply next_cfg 9 within 50 ms (cur_cfg is 5; is ovs-vswitchd running?)"
    );
}

#[tokio::test]
async fn wait_cur_cfg_fails_when_the_connection_closes() {
    let (c, mut srv) = session(Duration::from_secs(5));
    let server = async {
        answer_monitor(&mut srv, 1).await;
        drop(srv);
    };
    let (_, r) = tokio::join!(server, c.wait_cur_cfg(2, Duration::from_secs(5)));
    let e = r.unwrap_err();
    assert!(matches!(e, OvsdbError::ConnectionClosed { .. }), "{e}");
}

/// Reads one `transact`, checks its ops are `ops`, and answers `results`.
async fn answer_transact(srv: &mut Peer, ops: &[ops::VsOp], results: Value) {
    let req = srv.recv().await;
    assert_eq!(req["method"], "transact");
    let mut want = vec![json!("Open_vSwitch")];
    want.extend(ops.iter().map(|o| o.to_json()));
    assert_eq!(req["params"], Value::Array(want));
    srv.send(json!({"id": req["id"], "result": results, "error": null}))
        .await;
}

#[tokio::test]
async fn add_port_maps_the_failed_guard() {
    let (c, mut srv) = session(Duration::from_secs(5));
    let spec = PortSpec {
        name: "p1".into(),
        bridge: "nobr".into(),
        ..PortSpec::default()
    };
    let server = async {
        // The change, then the monitor pipelined behind it.
        let ops = ops::add_port(&spec);
        answer_transact(&mut srv, &ops, json!([{}, {"error": "timed out"}])).await;
        answer_monitor(&mut srv, 1).await;
    };
    let (_, r) = tokio::join!(server, c.add_port(&spec));
    let e = r.unwrap_err();
    assert_eq!(
        e.to_string(),
        r#"bridge "nobr" does not exist in OVSDB (while adding port "p1")"#
    );
}

#[tokio::test]
async fn del_port_with_a_stale_hint_reads_the_row_afresh() {
    let (c, mut srv) = session(Duration::from_secs(5));
    let server = async {
        let rows = json!([
            {"rows": [{"name": "br0", "ports": ["uuid", "u-1"]}]},
            {"rows": [{"_uuid": ["uuid", "u-1"], "name": "p1"}]},
            {"rows": []},
        ]);
        answer_transact(&mut srv, &ops::list_ports(), rows).await;
        // The hinted row was renamed meanwhile: the guard fails, nothing is deleted.
        let del = ops::del_port("p1", "u-1", &DelGuard::Any);
        answer_transact(&mut srv, &del, json!([{}, {"error": "timed out"}])).await;
        answer_monitor(&mut srv, 1).await;
        answer_transact(&mut srv, &ops::port_to_delete("p1"), json!([{"rows": []}])).await;
    };
    let client = async {
        assert_eq!(c.list_ports().await.unwrap().len(), 1);
        c.del_port("p1", DelGuard::Any).await
    };
    let (_, r) = tokio::join!(server, client);
    assert_eq!(r.unwrap(), None);
    assert!(c.port_uuids().is_empty());
}
