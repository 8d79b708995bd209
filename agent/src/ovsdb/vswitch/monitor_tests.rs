use super::*;

fn initial() -> Value {
    json!({
        "Bridge": {"b1": {"new": {"name": "ovsbr0", "ports": ["set", [["uuid", "p1"], ["uuid", "p2"]]]}}},
        "Port": {
            "p1": {"new": {"name": "vi100", "tag": 10, "trunks": ["set", []], "vlan_mode": ["set", []],
                "external_ids": ["map", [["owner", "op-agent"], ["vm-id", "100"]]],
                "interfaces": ["uuid", "i1"]}},
            "p2": {"new": {"name": "vi101", "tag": ["set", []], "trunks": ["set", [30, 20]],
                "vlan_mode": "trunk", "external_ids": ["map", []], "interfaces": ["set", [["uuid", "i2"]]]}}
        },
        "Interface": {
            "i1": {"new": {"name": "vi100", "ofport": 3, "error": ["set", []], "mtu_request": 1500}},
            "i2": {"new": {"name": "vi101", "ofport": -1, "error": "could not open", "mtu_request": ["set", []]}}
        }
    })
}

#[test]
fn initial_reply_is_the_replica() {
    let t = Tables::from_initial(&initial());
    assert_eq!(t.bridges.len(), 1);
    let (u, p) = t.port_by_name("vi100").unwrap();
    assert_eq!((u, p.tag, p.trunks.as_slice()), ("p1", Some(10), &[][..]));
    assert_eq!(p.external_ids.get("vm-id").map(String::as_str), Some("100"));
    assert_eq!(p.interfaces, vec!["i1".to_string()]);
    assert_eq!(t.bridge_of("p1"), Some("ovsbr0"));
    assert!(t.has_bridge("ovsbr0") && !t.has_bridge("ovsbr1"));
    let (_, p2) = t.port_by_name("vi101").unwrap();
    assert_eq!(
        (p2.tag, p2.trunks.clone(), p2.vlan_mode.as_deref()),
        (None, vec![20, 30], Some("trunk"))
    );
    let i2: Vec<_> = t.interfaces_of(p2).collect();
    assert_eq!(
        (i2[0].ofport, i2[0].error.as_deref(), i2[0].mtu_request),
        (Some(-1), Some("could not open"), None)
    );
    assert_eq!(t.interfaces_of(p).next().unwrap().mtu_request, Some(1500));
}

#[test]
fn modify_and_delete_carry_the_whole_old_row() {
    let mut t = Tables::from_initial(&initial());
    // A modify's `old` holds only the changed column; the replica supplies the rest.
    let modify = json!({"Port": {"p1": {"old": {"tag": 10}, "new": {"name": "vi100", "tag": 99,
        "trunks": ["set", []], "vlan_mode": ["set", []], "external_ids": ["map", [["owner", "op-agent"]]],
        "interfaces": ["uuid", "i1"]}}}});
    let ch = t.apply(&decode_updates(&modify));
    assert_eq!(ch.len(), 1);
    let (Some(Row::Port(old)), Some(Row::Port(new))) = (&ch[0].old, &ch[0].new) else {
        panic!("{ch:?}");
    };
    assert_eq!(
        (old.tag, new.tag, old.name.as_str()),
        (Some(10), Some(99), "vi100")
    );
    let delete = json!({"Port": {"p1": {"old": {"name": "vi100"}}},
        "Bridge": {"b1": {"old": {"ports": ["set", [["uuid", "p1"], ["uuid", "p2"]]]},
            "new": {"name": "ovsbr0", "ports": ["uuid", "p2"]}}}});
    let ch = t.apply(&decode_updates(&delete));
    // Bridge first, then Port.
    assert_eq!(ch[0].table, Table::Bridge);
    assert_eq!((ch[1].table, ch[1].new.is_none()), (Table::Port, true));
    assert!(matches!(&ch[1].old, Some(Row::Port(p)) if p.tag == Some(99)));
    assert!(t.port_by_name("vi100").is_none());
    assert_eq!(t.bridges["b1"].ports, vec!["p2".to_string()]);
    // An insert has no old row.
    let insert = json!({"Bridge": {"b2": {"new": {"name": "ovsbr1", "ports": ["set", []]}}}});
    let ch = t.apply(&decode_updates(&insert));
    assert_eq!((ch[0].old.is_none(), t.has_bridge("ovsbr1")), (true, true));
}

#[test]
fn malformed_updates_never_panic() {
    for v in [
        json!(null),
        json!([]),
        json!({"Port": 3}),
        json!({"Port": {"p": 3}}),
        json!({"Port": {"p": {"new": {"name": 5, "tag": "x", "trunks": ["set", ["a", 99999]],
            "external_ids": ["map", [[1, 2]]], "interfaces": ["uuid", 7]}}}}),
        json!({"Other": {"x": {"new": {}}}}),
    ] {
        let mut t = Tables::default();
        let ch = t.apply(&decode_updates(&v));
        for c in ch {
            if let Some(Row::Port(p)) = c.new {
                assert_eq!(
                    (p.name.as_str(), p.tag, p.trunks.len(), p.interfaces.len()),
                    ("", None, 0, 0)
                );
            }
        }
    }
}
