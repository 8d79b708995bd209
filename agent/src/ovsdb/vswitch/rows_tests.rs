//! The column codec (RFC 7047 §5.1 sets, maps, UUIDs, optional columns), its round trip with
//! the encoder of `proto`, and row assembly.

use serde_json::{json, Value};

use super::*;
use crate::ovsdb::proto::{Atom, Datum, Uuid};

#[test]
fn sets_of_zero_one_and_many() {
    assert!(set_elems(&json!(["set", []])).is_empty());
    assert_eq!(set_elems(&json!(["set", [5]])), vec![&json!(5)]);
    assert_eq!(set_elems(&json!(5)), vec![&json!(5)]);
    assert_eq!(set_elems(&json!(["set", [1, 2, 3]])).len(), 3);
    // A uuid atom is a 1-element set, not a set of two strings.
    assert_eq!(
        set_elems(&json!(["uuid", "u1"])),
        vec![&json!(["uuid", "u1"])]
    );
}

#[test]
fn optional_columns() {
    assert_eq!(opt_i64(None), None);
    assert_eq!(opt_i64(Some(&json!(["set", []]))), None);
    assert_eq!(opt_i64(Some(&json!(7))), Some(7));
    assert_eq!(opt_i64(Some(&json!(["set", [-1]]))), Some(-1));
    assert_eq!(opt_i64(Some(&json!("7"))), None);
    assert_eq!(opt_str(Some(&json!("trunk"))), Some("trunk".into()));
    assert_eq!(opt_str(Some(&json!(["set", ["x"]]))), Some("x".into()));
    assert_eq!(opt_str(Some(&json!(["set", []]))), None);
    assert_eq!(opt_str(Some(&json!(3))), None);
}

#[test]
fn uuids_and_maps() {
    assert_eq!(uuid_of(&json!(["uuid", "u1"])), Some("u1".into()));
    assert_eq!(uuid_of(&json!(["named-uuid", "u1"])), None);
    assert_eq!(uuid_of(&json!("u1")), None);
    assert_eq!(uuids(None), Vec::<String>::new());
    assert_eq!(uuids(Some(&json!(["set", []]))), Vec::<String>::new());
    assert_eq!(uuids(Some(&json!(["uuid", "a"]))), vec!["a"]);
    assert_eq!(
        uuids(Some(&json!(["set", [["uuid", "a"], 3, ["uuid", "b"]]]))),
        vec!["a", "b"]
    );
    assert!(str_map(Some(&json!(["map", []]))).is_empty());
    assert!(str_map(Some(&json!(["set", [["a", "b"]]]))).is_empty());
    assert!(str_map(None).is_empty());
    let m = str_map(Some(&json!([
        "map",
        [["a", "1"], ["b", 2], ["c", "3"], ["d"]]
    ])));
    assert_eq!(
        m,
        BTreeMap::from([("a".into(), "1".into()), ("c".into(), "3".into())])
    );
}

#[test]
fn proto_encoding_reads_back() {
    let enc = |d: &Datum| serde_json::to_value(d).unwrap();
    assert_eq!(opt_i64(Some(&enc(&Datum::Set(vec![])))), None);
    assert_eq!(opt_i64(Some(&enc(&Datum::from(9)))), Some(9));
    assert_eq!(
        opt_i64(Some(&enc(&Datum::Set(vec![Atom::Integer(9)])))),
        Some(9)
    );
    let set = Datum::Set(vec![Uuid("a".into()).into(), Uuid("b".into()).into()]);
    assert_eq!(uuids(Some(&enc(&set))), vec!["a", "b"]);
    assert_eq!(
        uuid_of(&enc(&Datum::from(Uuid("z".into())))),
        Some("z".into())
    );
    let m = BTreeMap::from([
        ("k\"1".to_string(), "v]1".to_string()),
        ("k2".to_string(), String::new()),
    ]);
    assert_eq!(str_map(Some(&enc(&Datum::string_map(&m)))), m);
    assert!(str_map(Some(&enc(&Datum::string_map(&BTreeMap::new())))).is_empty());
}

fn port(uuid: &str, name: &str, extra: Value) -> Value {
    let mut p = json!({"_uuid": ["uuid", uuid], "name": name, "tag": ["set", []],
                       "trunks": ["set", []], "vlan_mode": ["set", []],
                       "external_ids": ["map", []], "interfaces": ["set", []]});
    for (k, v) in extra.as_object().unwrap() {
        p[k] = v.clone();
    }
    p
}

fn iface(uuid: &str, name: &str) -> Value {
    json!({"_uuid": ["uuid", uuid], "name": name, "ofport": 3, "error": ["set", []],
           "mtu_request": ["set", [1500]], "external_ids": ["map", [["owner", "x"]]],
           "type": ""})
}

#[test]
fn assemble_joins_bridge_port_and_interfaces() {
    let bridges = [
        json!({"name": "br0", "ports": ["set", [["uuid", "p-a"], ["uuid", "p-b"]]]}),
        json!({"name": "br1", "ports": ["uuid", "p-c"]}),
    ];
    let ports = [
        port(
            "p-b",
            "bond0",
            json!({"interfaces": ["set", [["uuid", "i-2"], ["uuid", "i-1"], ["uuid", "i-gone"]]],
                   "trunks": ["set", [300, 10, 70000, -1]], "tag": 70000}),
        ),
        port(
            "p-c",
            "p1",
            json!({"interfaces": ["uuid", "i-3"], "tag": 10, "vlan_mode": "access",
                   "external_ids": ["map", [["owner", "op-agent"]]]}),
        ),
        port("p-x", "loose", json!({})),
    ];
    let ifaces = [iface("i-1", "e1"), iface("i-2", "e2"), iface("i-3", "p1")];
    let rows = assemble(&bridges, &ports, &ifaces);
    assert_eq!(rows.len(), 3);
    let bond = &rows[0];
    assert_eq!(bond.bridge.as_deref(), Some("br0"));
    assert_eq!(bond.trunks, vec![10, 300]);
    assert_eq!(bond.tag, None, "a tag outside u16 reads as absent");
    let names: Vec<&str> = bond.interfaces.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, vec!["e2", "e1"]);
    let p1 = &rows[1];
    assert_eq!(p1.uuid, "p-c");
    assert_eq!(p1.bridge.as_deref(), Some("br1"));
    assert_eq!(p1.tag, Some(10));
    assert_eq!(p1.vlan_mode.as_deref(), Some("access"));
    assert_eq!(
        p1.external_ids.get("owner").map(String::as_str),
        Some("op-agent")
    );
    assert_eq!(
        p1.interfaces,
        vec![InterfaceRow {
            uuid: "i-3".into(),
            name: "p1".into(),
            ofport: Some(3),
            error: None,
            mtu_request: Some(1500),
            external_ids: BTreeMap::from([("owner".into(), "x".into())]),
            kind: String::new(),
            ingress_policing_rate: None,
            ingress_policing_burst: None,
        }]
    );
    assert_eq!(rows[2].bridge, None);
    assert!(rows[2].interfaces.is_empty());
}

#[test]
fn port_rows_sorted_and_garbage_tolerated() {
    let results = vec![
        json!({"rows": [{"name": "br0", "ports": ["uuid", "u2"]}]}),
        json!({"rows": [port("u2", "zz", json!({})), port("u1", "aa", json!({}))]}),
        json!({"rows": []}),
    ];
    let names: Vec<String> = port_rows_from_results(&results)
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, vec!["aa", "zz"]);
    for garbage in [
        vec![],
        vec![Value::Null],
        vec![
            json!({"rows": 5}),
            json!({"rows": [1, "x", null]}),
            json!([]),
        ],
        vec![
            json!({}),
            json!({"rows": [{"_uuid": 3, "name": [], "trunks": {"a": 1}}]}),
        ],
    ] {
        let _ = port_rows_from_results(&garbage);
    }
    let odd = port_rows_from_results(&[
        json!({}),
        json!({"rows": [{"_uuid": 3, "name": [], "tag": "x"}]}),
    ]);
    assert_eq!(odd, vec![PortRow::default()]);
}

#[test]
fn next_cfg_and_names() {
    let r = [json!({}), json!({"rows": [{"next_cfg": 42}]})];
    assert_eq!(next_cfg_of(&r, 1).unwrap(), 42);
    let e = next_cfg_of(&r, 0).unwrap_err();
    assert_eq!(
        e.to_string(),
        "OVSDB transact: malformed reply: op 0: no Open_vSwitch.next_cfg in select result"
    );
    assert!(next_cfg_of(&r, 7).is_err());
    assert_eq!(
        sorted_names(&[
            json!({"name": "b"}),
            json!({"name": 1}),
            json!({"name": "a"})
        ]),
        vec!["a", "b"]
    );
}
