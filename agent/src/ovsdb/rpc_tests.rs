//! The transport without a server: the stream framer and decoder, the `transact` reply check,
//! and a [`Connection`] over a socket pair whose other end the test scripts (echo, pipelined
//! replies out of order, `update` dispatch by monitor id, close, timeout).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::{transact_results, Connection, Framer, StreamDecoder, UpdateHandler};
use crate::ovsdb::OvsdbError;

/// The server end of a socket pair: reads JSON values, writes JSON text.
pub(crate) struct Peer {
    stream: UnixStream,
    dec: StreamDecoder,
    queue: std::collections::VecDeque<Value>,
}

impl Peer {
    /// A connection (call timeout `timeout`) and the peer playing the server.
    pub(crate) fn pair(timeout: Duration) -> (Connection, Peer) {
        let (a, b) = UnixStream::pair().unwrap();
        let conn = Connection::over(std::path::Path::new("test.sock"), a, timeout);
        let peer = Peer {
            stream: b,
            dec: StreamDecoder::default(),
            queue: Default::default(),
        };
        (conn, peer)
    }

    /// The next value the client sent.
    pub(crate) async fn recv(&mut self) -> Value {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(v) = self.queue.pop_front() {
                return v;
            }
            let n = self.stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "client closed");
            self.queue.extend(self.dec.push(&buf[..n]).unwrap());
        }
    }

    /// Writes `v` to the client.
    pub(crate) async fn send(&mut self, v: Value) {
        self.stream
            .write_all(v.to_string().as_bytes())
            .await
            .unwrap();
    }
}

/// Feeding a stream byte by byte, every complete value is framed exactly at its end,
/// whatever quotes, escapes and brackets its strings hold.
#[test]
fn framer_finds_value_ends_across_splits() {
    let msgs = [
        r#"{"id":1,"result":[{"rows":[{"name":"a\"}b"}]}],"error":null}"#,
        r#" {"id":null,"method":"update","params":["x",{"s":"\\","t":"]}[{\\\""}]}"#,
        "\n[\"echo\"]",
    ];
    let stream: String = msgs.concat();
    let mut ends = Vec::new();
    let mut acc = 0;
    for m in msgs {
        acc += m.len();
        ends.push(acc);
    }
    let mut f = Framer::default();
    let mut found = Vec::new();
    let bytes = stream.as_bytes();
    for n in 1..=bytes.len() {
        let end = f.complete_prefix(&bytes[..n]);
        if end != 0 {
            found.push(end);
        }
    }
    assert_eq!(found, ends);
    let mut it = serde_json::Deserializer::from_slice(bytes).into_iter::<serde_json::Value>();
    assert_eq!(it.by_ref().count(), 3);
}

#[test]
fn decoder_splits_concatenated_values_in_any_chunks() {
    let text = r#"{"id":1,"result":["a}"]} [2,{"x":"\\\""}]
{"method":"echo","params":[],"id":"e"}"#;
    let whole = StreamDecoder::default().push(text.as_bytes()).unwrap();
    assert_eq!(whole.len(), 3);
    assert_eq!(whole[1], json!([2, {"x": "\\\""}]));
    for step in 1..8 {
        let mut dec = StreamDecoder::default();
        let mut got = Vec::new();
        for c in text.as_bytes().chunks(step) {
            got.extend(dec.push(c).unwrap());
        }
        assert_eq!(got, whole, "chunks of {step}");
        assert_eq!(dec.pending_bytes(), 0);
    }
    let mut dec = StreamDecoder::default();
    assert!(dec.push(br#"{"id":1,"res"#).unwrap().is_empty());
    assert_eq!(dec.pending_bytes(), 12);
    assert_eq!(
        dec.push(b"ult\":2}").unwrap(),
        vec![json!({"id": 1, "result": 2})]
    );
    assert_eq!(dec.pending_bytes(), 0);
    let e = StreamDecoder::default().push(b"{nope}").unwrap_err();
    assert!(e.starts_with("invalid JSON from server: "), "{e}");
}

fn names(ops: &[&str]) -> Vec<String> {
    ops.iter().map(|s| s.to_string()).collect()
}

#[test]
fn transact_reply_check() {
    let n = names(&["comment", "wait", "insert"]);
    let ok = transact_results(&n, json!([{}, {}, {"uuid": ["uuid", "u"]}])).unwrap();
    assert_eq!(ok.len(), 3);
    let e = transact_results(&n, json!([{}, {"error": "timed out", "details": "d"}]));
    assert!(matches!(
        e,
        Err(OvsdbError::OpFailed { index: 1, ref op, ref error, ref details })
            if op == "wait" && error == "timed out" && details == "d"
    ));
    assert_eq!(
        e.unwrap_err().to_string(),
        "OVSDB transaction op 1 (wait) failed: timed out: d"
    );
    let e = transact_results(&n, json!([{}, {}, {}, {"error": "constraint violation"}]));
    assert!(
        matches!(e, Err(OvsdbError::CommitFailed { ref error, .. }) if error == "constraint violation")
    );
    let e = transact_results(&n, json!({"rows": []})).unwrap_err();
    assert_eq!(
        e.to_string(),
        r#"OVSDB transact: malformed reply: result is not an array: {"rows":[]}"#
    );
    let e = transact_results(&n, json!([{}, {}])).unwrap_err();
    assert_eq!(
        e.to_string(),
        "OVSDB transact: malformed reply: 2 results for 3 ops"
    );
    // `error: null` members are successes.
    assert!(transact_results(&n, json!([{"error": null}, {}, {}])).is_ok());
}

#[tokio::test]
async fn echo_answered_and_pipelined_replies_routed_by_id() {
    let (conn, mut srv) = Peer::pair(Duration::from_secs(5));
    srv.send(json!({"id": "probe", "method": "echo", "params": ["x", 1]}))
        .await;
    assert_eq!(
        srv.recv().await,
        json!({"id": "probe", "result": ["x", 1], "error": null})
    );
    srv.send(json!({"id": 7, "method": "lock", "params": []}))
        .await;
    assert_eq!(
        srv.recv().await,
        json!({"id": 7, "result": null, "error": "unknown method lock"})
    );
    let server = async {
        let a = srv.recv().await;
        let b = srv.recv().await;
        assert_eq!(a["method"], "list_dbs");
        assert_eq!(b["params"], json!(["Open_vSwitch"]));
        // Answer out of order, with a stray reply in between.
        srv.send(json!({"id": b["id"], "result": {"b": 1}, "error": null}))
            .await;
        srv.send(json!({"id": 999, "result": 0, "error": null}))
            .await;
        srv.send(json!({"id": a["id"], "result": ["db"], "error": null}))
            .await;
    };
    let client = async {
        tokio::join!(
            conn.call("list_dbs", json!([])),
            conn.call("get_schema", json!(["Open_vSwitch"]))
        )
    };
    let (_, (a, b)) = tokio::join!(server, client);
    assert_eq!(a.unwrap(), json!(["db"]));
    assert_eq!(b.unwrap(), json!({"b": 1}));
    assert_eq!(conn.echoes_answered(), 1);
}

#[tokio::test]
async fn updates_dispatched_by_monitor_id() {
    let (conn, mut srv) = Peer::pair(Duration::from_secs(5));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let on_update: UpdateHandler = Arc::new(move |u: &Value| log.lock().unwrap().push(u.clone()));
    let server = async {
        let req = srv.recv().await;
        assert_eq!(req["method"], "monitor");
        assert_eq!(
            req["params"],
            json!(["db", "m-1", {"T": {"columns": ["c"]}}])
        );
        srv.send(json!({"id": req["id"], "result": {"T": {}}, "error": null}))
            .await;
        srv.send(json!({"id": null, "method": "update", "params": ["other", {"T": 1}]}))
            .await;
        srv.send(json!({"id": null, "method": "update", "params": ["m-1", {"T": 2}]}))
            .await;
        srv.send(json!({"id": null, "method": "update", "params": ["m-1"]}))
            .await;
        srv.send(json!({"id": null, "method": "update2", "params": ["m-1", {"T": 3}]}))
            .await;
        // A reply after the notifications: they were dispatched by the time it arrives.
        let req = srv.recv().await;
        srv.send(json!({"id": req["id"], "result": [], "error": null}))
            .await;
    };
    let client = async {
        let initial = conn
            .monitor("db", "m-1", json!({"T": {"columns": ["c"]}}), on_update)
            .await
            .unwrap();
        conn.call("list_dbs", json!([])).await.unwrap();
        initial
    };
    let (_, initial) = tokio::join!(server, client);
    assert_eq!(initial, json!({"T": {}}));
    assert_eq!(*seen.lock().unwrap(), vec![json!({"T": 2})]);
}

#[tokio::test]
async fn rpc_error_timeout_and_close() {
    let (conn, mut srv) = Peer::pair(Duration::from_millis(100));
    let server = async {
        let req = srv.recv().await;
        srv.send(json!({"id": req["id"], "result": null, "error": "no such db"}))
            .await;
        let _ignored = srv.recv().await;
    };
    let client = async {
        let e = conn.call("get_schema", json!(["x"])).await.unwrap_err();
        assert_eq!(e.to_string(), r#"OVSDB get_schema failed: "no such db""#);
        let e = conn.call("list_dbs", json!([])).await.unwrap_err();
        assert!(
            matches!(e, OvsdbError::Timeout { ref method, ms: 100, .. } if method == "list_dbs"),
            "{e}"
        );
    };
    tokio::join!(server, client);

    // The server goes away with a call pending: it, and every later call, fail.
    let pending = conn.call("transact", json!(["db"]));
    let close = async {
        let _req = srv.recv().await;
        drop(srv);
    };
    let (r, ()) = tokio::join!(pending, close);
    let e = r.unwrap_err();
    assert_eq!(
        e.to_string(),
        "OVSDB connection to test.sock lost: ovsdb-server closed the connection"
    );
    assert!(matches!(
        conn.closed().await,
        OvsdbError::ConnectionClosed { .. }
    ));
    assert!(matches!(
        conn.call("list_dbs", json!([])).await,
        Err(OvsdbError::ConnectionClosed { .. })
    ));
}

#[tokio::test]
async fn invalid_json_closes_the_connection() {
    let (conn, mut srv) = Peer::pair(Duration::from_secs(5));
    srv.stream.write_all(b"{]").await.unwrap();
    let e = conn.closed().await;
    assert!(e.to_string().contains("invalid JSON from server"), "{e}");
}
