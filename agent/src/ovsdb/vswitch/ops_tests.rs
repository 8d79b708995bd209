//! Golden JSON of every transaction (the literals are what the pre-split `json!` builders
//! sent, so the wire format is unchanged), and the mapping of a failed guard to its error.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::*;
use crate::ovsdb::rpc::transact_results;

fn wire(ops: &[VsOp]) -> Value {
    Value::Array(ops.iter().map(Op::to_json).collect())
}

fn full_spec() -> PortSpec {
    PortSpec {
        name: "p1".into(),
        bridge: "br0".into(),
        tag: Some(10),
        trunks: vec![30, 20],
        vlan_mode: Some("trunk".into()),
        mtu_request: Some(9000),
        external_ids: BTreeMap::from([
            ("owner".to_string(), "op-agent".to_string()),
            ("site".to_string(), "a \"b\"".to_string()),
        ]),
        rate: None,
    }
}

fn bare_spec() -> PortSpec {
    PortSpec {
        name: "p2".into(),
        bridge: "br1".into(),
        ..PortSpec::default()
    }
}

fn owned() -> DelGuard {
    DelGuard::OwnedBy {
        key: "owner".into(),
        value: "op-agent".into(),
    }
}

const BUMP: [&str; 2] = [
    r#"{"op":"mutate","table":"Open_vSwitch","where":[],"mutations":[["next_cfg","+=",1]]}"#,
    r#"{"op":"select","table":"Open_vSwitch","where":[],"columns":["next_cfg"]}"#,
];

fn bump() -> [Value; 2] {
    BUMP.map(|s| serde_json::from_str(s).unwrap())
}

/// The guarded insert of [`full_spec`] (ops 1–6 of `add_port`).
fn full_insert() -> Vec<Value> {
    let ext = json!(["map", [["owner", "op-agent"], ["site", "a \"b\""]]]);
    vec![
        json!({"op": "wait", "table": "Bridge", "timeout": 0, "where": [["name", "==", "br0"]],
               "columns": ["name"], "until": "==", "rows": [{"name": "br0"}]}),
        json!({"op": "wait", "table": "Port", "timeout": 0, "where": [["name", "==", "p1"]],
               "columns": ["name"], "until": "==", "rows": []}),
        json!({"op": "wait", "table": "Interface", "timeout": 0, "where": [["name", "==", "p1"]],
               "columns": ["name"], "until": "==", "rows": []}),
        json!({"op": "insert", "table": "Interface", "uuid-name": "iface",
               "row": {"name": "p1", "external_ids": ext, "mtu_request": 9000}}),
        json!({"op": "insert", "table": "Port", "uuid-name": "port",
               "row": {"name": "p1", "interfaces": ["named-uuid", "iface"], "external_ids": ext,
                       "tag": 10, "trunks": ["set", [30, 20]], "vlan_mode": "trunk"}}),
        json!({"op": "mutate", "table": "Bridge", "where": [["name", "==", "br0"]],
               "mutations": [["ports", "insert", ["set", [["named-uuid", "port"]]]]]}),
    ]
}

#[test]
fn add_port_golden() {
    let mut want = vec![json!({"op": "comment", "comment": "op-agent: add-port br0 p1"})];
    want.extend(full_insert());
    want.extend(bump());
    assert_eq!(wire(&add_port(&full_spec())), Value::Array(want));
}

#[test]
fn add_port_without_options_golden() {
    let want = json!([
        {"op": "comment", "comment": "op-agent: add-port br1 p2"},
        {"op": "wait", "table": "Bridge", "timeout": 0, "where": [["name", "==", "br1"]],
         "columns": ["name"], "until": "==", "rows": [{"name": "br1"}]},
        {"op": "wait", "table": "Port", "timeout": 0, "where": [["name", "==", "p2"]],
         "columns": ["name"], "until": "==", "rows": []},
        {"op": "wait", "table": "Interface", "timeout": 0, "where": [["name", "==", "p2"]],
         "columns": ["name"], "until": "==", "rows": []},
        {"op": "insert", "table": "Interface", "uuid-name": "iface",
         "row": {"name": "p2", "external_ids": ["map", []]}},
        {"op": "insert", "table": "Port", "uuid-name": "port",
         "row": {"name": "p2", "interfaces": ["named-uuid", "iface"], "external_ids": ["map", []]}},
        {"op": "mutate", "table": "Bridge", "where": [["name", "==", "br1"]],
         "mutations": [["ports", "insert", ["set", [["named-uuid", "port"]]]]]},
        bump()[0], bump()[1],
    ]);
    assert_eq!(wire(&add_port(&bare_spec())), want);
    // A single trunk is still sent as a set.
    let one = PortSpec {
        trunks: vec![7],
        ..bare_spec()
    };
    assert_eq!(
        wire(&add_port(&one))[5]["row"]["trunks"],
        json!(["set", [7]])
    );
}

#[test]
fn add_port_with_rate_golden() {
    let spec = PortSpec {
        rate: Some(PortRate {
            max_rate_bits: 8_388_608,
            burst_bits: 8_388_608,
            policing_kbits: 8_388,
            policing_burst_kbits: 8_388,
        }),
        ..full_spec()
    };
    let ext = json!(["map", [["owner", "op-agent"], ["site", "a \"b\""]]]);
    let qos_ext = json!([
        "map",
        [["owner", "op-agent"], ["port", "p1"], ["site", "a \"b\""]]
    ]);
    let mut want = vec![json!({"op": "comment", "comment": "op-agent: add-port br0 p1"})];
    let mut insert = full_insert();
    insert[3] = json!({"op": "insert", "table": "Interface", "uuid-name": "iface",
        "row": {"name": "p1", "external_ids": ext, "mtu_request": 9000,
                "ingress_policing_rate": 8388, "ingress_policing_burst": 8388}});
    insert[4]["row"]["qos"] = json!(["named-uuid", "qos"]);
    insert.splice(
        4..4,
        [
            json!({"op": "delete", "table": "QoS",
                   "where": [["external_ids", "includes", qos_ext.clone()]]}),
            json!({"op": "delete", "table": "Queue",
                   "where": [["external_ids", "includes", qos_ext.clone()]]}),
            json!({"op": "insert", "table": "Queue", "uuid-name": "queue",
                   "row": {"other_config": ["map", [["burst", "8388608"], ["max-rate", "8388608"]]],
                           "external_ids": qos_ext}}),
            json!({"op": "insert", "table": "QoS", "uuid-name": "qos",
                   "row": {"type": "linux-htb",
                           "other_config": ["map", [["max-rate", "8388608"]]],
                           "queues": ["map", [[0, ["named-uuid", "queue"]]]],
                           "external_ids": qos_ext}}),
        ],
    );
    want.extend(insert);
    want.extend(bump());
    assert_eq!(wire(&add_port(&spec)), Value::Array(want));
}

#[test]
fn del_qos_golden() {
    let mark = json!(["map", [["owner", "op-agent"], ["port", "vi100"]]]);
    assert_eq!(
        wire(&del_qos_ops("vi100", "u-1", "owner", "op-agent")),
        json!([
            {"op": "update", "table": "Port", "where": [["_uuid", "==", ["uuid", "u-1"]]],
             "row": {"qos": ["set", []]}},
            {"op": "delete", "table": "QoS", "where": [["external_ids", "includes", mark]]},
            {"op": "delete", "table": "Queue", "where": [["external_ids", "includes", mark]]},
        ])
    );
}

#[test]
fn add_port_wire_text_is_byte_identical() {
    // The exact bytes of one op as the transport writes them (serde_json, sorted keys).
    let ops = add_port(&full_spec());
    assert_eq!(
        ops[1].to_json().to_string(),
        r#"{"columns":["name"],"op":"wait","rows":[{"name":"br0"}],"table":"Bridge","timeout":0,"until":"==","where":[["name","==","br0"]]}"#
    );
    assert_eq!(
        ops[7].to_json().to_string(),
        r#"{"mutations":[["next_cfg","+=",1]],"op":"mutate","table":"Open_vSwitch","where":[]}"#
    );
}

#[test]
fn del_port_golden() {
    let any = json!([
        {"op": "comment", "comment": "op-agent: del-port p1"},
        {"op": "wait", "table": "Port", "timeout": 0, "where": [["_uuid", "==", ["uuid", "u-1"]]],
         "columns": ["name"], "until": "==", "rows": [{"name": "p1"}]},
        {"op": "mutate", "table": "Bridge", "where": [["ports", "includes", ["set", [["uuid", "u-1"]]]]],
         "mutations": [["ports", "delete", ["set", [["uuid", "u-1"]]]]]},
        bump()[0], bump()[1],
    ]);
    assert_eq!(wire(&del_port("p1", "u-1", &DelGuard::Any)), any);
    let own = json!([
        {"op": "comment", "comment": "op-agent: del-port p1"},
        {"op": "wait", "table": "Port", "timeout": 0,
         "where": [["_uuid", "==", ["uuid", "u-1"]],
                   ["external_ids", "includes", ["map", [["owner", "op-agent"]]]]],
         "columns": ["name"], "until": "==", "rows": [{"name": "p1"}]},
        {"op": "update", "table": "Port", "where": [["_uuid", "==", ["uuid", "u-1"]]], "row": {"qos": ["set", []]}},
        {"op": "delete", "table": "QoS", "where": [["external_ids", "includes", ["map", [["owner", "op-agent"], ["port", "p1"]]]]]},
        {"op": "delete", "table": "Queue", "where": [["external_ids", "includes", ["map", [["owner", "op-agent"], ["port", "p1"]]]]]},
        {"op": "mutate", "table": "Bridge", "where": [["ports", "includes", ["set", [["uuid", "u-1"]]]]],
         "mutations": [["ports", "delete", ["set", [["uuid", "u-1"]]]]]},
        bump()[0], bump()[1],
    ]);
    let ops = del_port("p1", "u-1", &owned());
    assert_eq!(wire(&ops), own);
    assert_eq!(wire(&ops)[del_mutate_index(&ops)], own[5]);
    assert_eq!(wire(&ops)[cfg_index(&ops)], bump()[1]);
}

fn replace_deletes(guard_wait: Option<Value>) -> Vec<Value> {
    let mut v = vec![json!({"op": "comment", "comment": "op-agent: replace-port old by br0 p1"})];
    let owned = guard_wait.is_some();
    v.extend(guard_wait);
    if owned {
        let mark = json!(["map", [["owner", "op-agent"], ["port", "old"]]]);
        v.extend([
            json!({"op": "update", "table": "Port", "where": [["_uuid", "==", ["uuid", "u-9"]]],
                   "row": {"qos": ["set", []]}}),
            json!({"op": "delete", "table": "QoS", "where": [["external_ids", "includes", mark]]}),
            json!({"op": "delete", "table": "Queue", "where": [["external_ids", "includes", mark]]}),
        ]);
    }
    v.extend([
        json!({"op": "mutate", "table": "Bridge",
               "where": [["ports", "includes", ["set", [["uuid", "u-9"]]]]],
               "mutations": [["ports", "delete", ["set", [["uuid", "u-9"]]]]]}),
        json!({"op": "delete", "table": "Port", "where": [["_uuid", "==", ["uuid", "u-9"]]]}),
        json!({"op": "delete", "table": "Interface", "where": [["name", "==", "old"]]}),
    ]);
    v
}

#[test]
fn replace_port_golden() {
    let owner_wait = json!({"op": "wait", "table": "Port", "timeout": 0,
        "where": [["_uuid", "==", ["uuid", "u-9"]],
                  ["external_ids", "includes", ["map", [["owner", "op-agent"]]]]],
        "columns": ["name"], "until": "==", "rows": [{"name": "old"}]});
    let mut want = replace_deletes(Some(owner_wait));
    want.extend(full_insert());
    want.extend(bump());
    let ops = replace_port("old", Some("u-9"), &owned(), &full_spec());
    assert_eq!(wire(&ops), Value::Array(want));
    assert_eq!(cfg_index(&ops), 15);

    // DelGuard::Any: no wait before the delete (the select just read the row).
    let mut want = replace_deletes(None);
    want.extend(full_insert());
    want.extend(bump());
    let ops = replace_port("old", Some("u-9"), &DelGuard::Any, &full_spec());
    assert_eq!(wire(&ops), Value::Array(want));

    // No row to delete: only the add.
    let mut want =
        vec![json!({"op": "comment", "comment": "op-agent: replace-port old by br0 p1"})];
    want.extend(full_insert());
    want.extend(bump());
    let ops = replace_port("old", None, &owned(), &full_spec());
    assert_eq!(wire(&ops), Value::Array(want));
}

const PORT_COLS_JSON: &str =
    r#"["_uuid","name","tag","trunks","vlan_mode","external_ids","interfaces","qos"]"#;
const IFACE_COLS_JSON: &str = r#"["_uuid","name","ofport","error","mtu_request","external_ids","type","ingress_policing_rate","ingress_policing_burst"]"#;

fn cols(s: &str) -> Value {
    serde_json::from_str(s).unwrap()
}

#[test]
fn read_transactions_golden() {
    let (pc, ic) = (cols(PORT_COLS_JSON), cols(IFACE_COLS_JSON));
    assert_eq!(
        wire(&bridge_exists("br0")),
        json!([{"op": "select", "table": "Bridge", "where": [["name", "==", "br0"]], "columns": ["name"]}])
    );
    assert_eq!(
        wire(&bridge_names()),
        json!([{"op": "select", "table": "Bridge", "where": [], "columns": ["name"]}])
    );
    assert_eq!(
        wire(&snapshot(&["a", "b"])),
        json!([
            {"op": "select", "table": "Bridge", "where": [], "columns": ["name", "ports"]},
            {"op": "select", "table": "Port", "where": [["name", "==", "a"]], "columns": pc},
            {"op": "select", "table": "Interface", "where": [["name", "==", "a"]], "columns": ic},
            {"op": "select", "table": "Port", "where": [["name", "==", "b"]], "columns": pc},
            {"op": "select", "table": "Interface", "where": [["name", "==", "b"]], "columns": ic},
        ])
    );
    assert_eq!(
        wire(&snapshot(&[])),
        json!([{"op": "select", "table": "Bridge", "where": [], "columns": ["name", "ports"]}])
    );
    assert_eq!(
        wire(&interfaces_by_uuid(&["u1".into(), "u2".into()])),
        json!([
            {"op": "select", "table": "Interface", "where": [["_uuid", "==", ["uuid", "u1"]]], "columns": ic},
            {"op": "select", "table": "Interface", "where": [["_uuid", "==", ["uuid", "u2"]]], "columns": ic},
        ])
    );
    assert_eq!(
        wire(&get_port("p1")),
        json!([
            {"op": "select", "table": "Port", "where": [["name", "==", "p1"]], "columns": pc},
            {"op": "select", "table": "Bridge", "where": [], "columns": ["name", "ports"]},
            {"op": "select", "table": "Interface", "where": [["name", "==", "p1"]], "columns": ic},
        ])
    );
    assert_eq!(
        wire(&list_ports()),
        json!([
            {"op": "select", "table": "Bridge", "where": [], "columns": ["name", "ports"]},
            {"op": "select", "table": "Port", "where": [], "columns": pc},
            {"op": "select", "table": "Interface", "where": [], "columns": ic},
        ])
    );
    assert_eq!(
        wire(&interface_status("p1")),
        json!([{"op": "select", "table": "Interface", "where": [["name", "==", "p1"]],
                "columns": ["ofport", "error"]}])
    );
    assert_eq!(
        wire(&port_to_delete("p1")),
        json!([{"op": "select", "table": "Port", "where": [["name", "==", "p1"]],
                "columns": ["_uuid", "external_ids"]}])
    );
}

/// What the transport makes of a `transact` reply whose op `at` failed with `error`
/// (RFC 7047 §5.2: the results up to the failed op, that one with `error` and `details`).
fn fail_at(ops: &[VsOp], at: usize, error: &str) -> OvsdbError {
    let names: Vec<String> = wire(ops)
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["op"].as_str().unwrap().to_string())
        .collect();
    let mut results = vec![json!({}); at];
    results.push(json!({"error": error, "details": "guard"}));
    transact_results(&names, Value::Array(results)).unwrap_err()
}

#[test]
fn add_port_failure_names_the_guard() {
    let spec = full_spec();
    let ops = add_port(&spec);
    let map = |at, error| change_error(&ops, fail_at(&ops, at, error), &spec, None);
    assert!(matches!(
        map(1, "timed out"),
        OvsdbError::NoSuchBridge { bridge, port } if bridge == "br0" && port == "p1"
    ));
    for at in [2, 3] {
        assert!(matches!(map(at, "timed out"), OvsdbError::PortExists { port } if port == "p1"));
    }
    // Non-guard ops keep the transport's error, index and all.
    let e = map(5, "constraint violation");
    assert!(
        matches!(&e, OvsdbError::OpFailed { index: 5, op, .. } if op == "insert"),
        "{e}"
    );
    assert_eq!(
        e.op_error_kind(),
        Some(crate::ovsdb::proto::OpErrorKind::ConstraintViolation)
    );
    // The commit error element (all ops succeeded) is not a guard.
    let names = vec!["comment".to_string(); ops.len()];
    let mut results = vec![json!({}); ops.len()];
    results.push(json!({"error": "referential integrity violation"}));
    let e = transact_results(&names, Value::Array(results)).unwrap_err();
    let e = change_error(&ops, e, &spec, None);
    assert!(matches!(e, OvsdbError::CommitFailed { .. }), "{e}");
}

#[test]
fn replace_port_failure_names_the_guard() {
    let spec = full_spec();
    let guard = owned();
    let ops = replace_port("old", Some("u-9"), &guard, &spec);
    let map = |at| {
        change_error(
            &ops,
            fail_at(&ops, at, "timed out"),
            &spec,
            Some(("old", &guard)),
        )
    };
    assert!(matches!(
        map(1),
        OvsdbError::NotOwned { port, key, value } if port == "old" && key == "owner" && value == "op-agent"
    ));
    assert!(matches!(map(8), OvsdbError::NoSuchBridge { .. }));
    assert!(matches!(map(9), OvsdbError::PortExists { .. }));
    assert!(matches!(map(10), OvsdbError::PortExists { .. }));
    assert!(matches!(map(2), OvsdbError::OpFailed { index: 2, .. }));

    // With DelGuard::Any there is no owner wait: the bridge guard moves up to op 4.
    let ops = replace_port("old", Some("u-9"), &DelGuard::Any, &spec);
    let any = DelGuard::Any;
    let map = |at| {
        change_error(
            &ops,
            fail_at(&ops, at, "timed out"),
            &spec,
            Some(("old", &any)),
        )
    };
    assert!(matches!(map(1), OvsdbError::OpFailed { index: 1, .. }));
    assert!(matches!(map(4), OvsdbError::NoSuchBridge { .. }));
    assert!(matches!(map(5), OvsdbError::PortExists { .. }));
}

#[test]
fn del_port_guard_failure_is_recognised() {
    for guard in [DelGuard::Any, owned()] {
        let ops = del_port("p1", "u-1", &guard);
        assert!(row_guard_failed(&ops, &fail_at(&ops, 1, "timed out")));
        assert!(!row_guard_failed(&ops, &fail_at(&ops, 2, "timed out")));
        assert!(!row_guard_failed(&ops, &fail_at(&ops, 3, "timed out")));
        let closed = OvsdbError::Rpc {
            method: "transact".into(),
            error: json!("x"),
        };
        assert!(!row_guard_failed(&ops, &closed));
    }
    // An add's guards are not a delete's.
    let ops = add_port(&full_spec());
    assert!(!row_guard_failed(&ops, &fail_at(&ops, 1, "timed out")));
}

#[test]
fn guards_are_tagged_on_waits_only() {
    let ops = replace_port("old", Some("u-9"), &owned(), &full_spec());
    let tags: Vec<(usize, Guard)> = ops
        .iter()
        .enumerate()
        .filter_map(|(i, o)| o.guard().map(|g| (i, *g)))
        .collect();
    assert_eq!(
        tags,
        vec![
            (1, Guard::Owned),
            (8, Guard::Bridge),
            (9, Guard::NoPort),
            (10, Guard::NoInterface)
        ]
    );
    assert!(ops
        .iter()
        .filter(|o| o.guard().is_some())
        .all(|o| matches!(o, Op::Wait { .. })));
    let ops = del_port("p1", "u-1", &DelGuard::Any);
    assert_eq!(ops[1].guard(), Some(&Guard::SameName));
}
