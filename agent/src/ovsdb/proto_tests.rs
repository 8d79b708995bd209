//! RFC 7047 notation and operations: exact JSON, round trips, rejected forms, error kinds.

use serde_json::json;

use super::*;

fn round_trip<T>(v: &T, want: Value)
where
    T: Serialize + for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug,
{
    let got = serde_json::to_value(v).unwrap();
    assert_eq!(got, want);
    let back: T = serde_json::from_value(got).unwrap();
    assert_eq!(&back, v);
}

#[test]
fn atoms_and_uuids() {
    round_trip(&Atom::Integer(-3), json!(-3));
    round_trip(&Atom::Real(1.5), json!(1.5));
    round_trip(&Atom::Boolean(true), json!(true));
    round_trip(&Atom::from("a\"]"), json!("a\"]"));
    round_trip(&Atom::from(Uuid("u".into())), json!(["uuid", "u"]));
    round_trip(
        &Atom::from(NamedUuid("n".into())),
        json!(["named-uuid", "n"]),
    );
    round_trip(&Uuid("u".into()), json!(["uuid", "u"]));
    round_trip(&NamedUuid("n".into()), json!(["named-uuid", "n"]));
    assert!(serde_json::from_value::<Uuid>(json!(["named-uuid", "n"])).is_err());
    assert!(serde_json::from_value::<NamedUuid>(json!(["uuid", "n"])).is_err());
    for bad in [
        json!(null),
        json!({}),
        json!(["uuid"]),
        json!(["uuid", 1]),
        json!(["x", "y"]),
    ] {
        assert!(
            serde_json::from_value::<Atom>(bad.clone()).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn sets_and_maps() {
    round_trip(&Datum::Set(vec![]), json!(["set", []]));
    round_trip(&Datum::Set(vec![Atom::Integer(1)]), json!(["set", [1]]));
    round_trip(
        &Datum::Set(vec![Uuid("a".into()).into(), Uuid("b".into()).into()]),
        json!(["set", [["uuid", "a"], ["uuid", "b"]]]),
    );
    round_trip(&Datum::from(7), json!(7));
    round_trip(&Datum::Map(vec![]), json!(["map", []]));
    round_trip(
        &Datum::Map(vec![
            ("k".into(), Uuid("u".into()).into()),
            ("j".into(), Atom::Integer(2)),
        ]),
        json!(["map", [["k", ["uuid", "u"]], ["j", 2]]]),
    );
    let m = BTreeMap::from([("b".to_string(), "2".to_string()), ("a".into(), "1".into())]);
    assert_eq!(
        serde_json::to_value(Datum::string_map(&m)).unwrap(),
        json!(["map", [["a", "1"], ["b", "2"]]])
    );
    for bad in [
        json!(["set", [["set", []]]]),
        json!(["set", [null]]),
        json!(["map", [["a"]]]),
        json!(["map", [["a", {}]]]),
        json!(["set", 1]),
        json!({"set": []}),
    ] {
        assert!(
            serde_json::from_value::<Datum>(bad.clone()).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn conditions_and_mutations() {
    round_trip(&Cond::eq("name", "p1"), json!(["name", "==", "p1"]));
    round_trip(
        &Cond::includes("ports", Datum::Set(vec![Uuid("u".into()).into()])),
        json!(["ports", "includes", ["set", [["uuid", "u"]]]]),
    );
    for (f, s) in [
        (Function::Ne, "!="),
        (Function::Lt, "<"),
        (Function::Le, "<="),
        (Function::Gt, ">"),
        (Function::Ge, ">="),
        (Function::Excludes, "excludes"),
    ] {
        let c = Cond {
            column: "c".into(),
            function: f,
            value: Datum::from(1),
        };
        round_trip(&c, json!(["c", s, 1]));
    }
    round_trip(
        &Mutation::new("next_cfg", Mutator::Add, 1),
        json!(["next_cfg", "+=", 1]),
    );
    for (m, s) in [
        (Mutator::Sub, "-="),
        (Mutator::Mul, "*="),
        (Mutator::Div, "/="),
        (Mutator::Mod, "%="),
        (Mutator::Insert, "insert"),
        (Mutator::Delete, "delete"),
    ] {
        round_trip(&Mutation::new("c", m, 2), json!(["c", s, 2]));
    }
    assert!(serde_json::from_value::<Cond>(json!(["c", "=~", 1])).is_err());
    assert!(serde_json::from_value::<Mutation>(json!(["c", "+="])).is_err());
}

#[test]
fn every_operation() {
    let row = Row::from([("name".to_string(), Datum::from("p1"))]);
    round_trip(
        &Op::<()>::Insert {
            table: "Port".into(),
            row: row.clone(),
            uuid_name: Some("port".into()),
        },
        json!({"op": "insert", "table": "Port", "row": {"name": "p1"}, "uuid-name": "port"}),
    );
    round_trip(
        &Op::<()>::Insert {
            table: "Port".into(),
            row: Row::new(),
            uuid_name: None,
        },
        json!({"op": "insert", "table": "Port", "row": {}}),
    );
    round_trip(
        &Op::<()>::Select {
            table: "Bridge".into(),
            conds: vec![],
            columns: None,
        },
        json!({"op": "select", "table": "Bridge", "where": []}),
    );
    round_trip(
        &Op::<()>::Update {
            table: "Port".into(),
            conds: vec![Cond::eq("name", "p1")],
            row: Row::from([("tag".to_string(), Datum::Set(vec![]))]),
        },
        json!({"op": "update", "table": "Port", "where": [["name", "==", "p1"]],
               "row": {"tag": ["set", []]}}),
    );
    round_trip(
        &Op::<()>::Delete {
            table: "Port".into(),
            conds: vec![Cond::eq("_uuid", Uuid("u".into()))],
        },
        json!({"op": "delete", "table": "Port", "where": [["_uuid", "==", ["uuid", "u"]]]}),
    );
    round_trip(
        &Op::<()>::Comment {
            comment: "hi".into(),
        },
        json!({"op": "comment", "comment": "hi"}),
    );
    round_trip(
        &Op::<()>::Wait {
            table: "Bridge".into(),
            timeout: None,
            conds: vec![],
            columns: vec!["name".into()],
            until: Until::Ne,
            rows: vec![row],
            guard: None,
        },
        json!({"op": "wait", "table": "Bridge", "where": [], "columns": ["name"],
               "until": "!=", "rows": [{"name": "p1"}]}),
    );
    assert!(serde_json::from_value::<Op>(json!({"op": "abort"})).is_err());
    assert!(serde_json::from_value::<Op>(json!({"op": "select", "table": "T"})).is_err());
}

#[test]
fn guard_tag_is_never_sent() {
    let tagged = Op::Wait {
        table: "Port".into(),
        timeout: Some(0),
        conds: vec![],
        columns: vec![],
        until: Until::Eq,
        rows: vec![],
        guard: Some("mine"),
    };
    assert_eq!(
        tagged.to_json(),
        json!({"op": "wait", "table": "Port", "timeout": 0, "where": [], "columns": [],
               "until": "==", "rows": []})
    );
    assert_eq!(tagged.guard(), Some(&"mine"));
    let ops = [
        Op::Comment {
            comment: "c".into(),
        },
        tagged,
    ];
    let failed = |index: usize, op: &str| OvsdbError::OpFailed {
        index,
        op: op.into(),
        error: "timed out".into(),
        details: String::new(),
    };
    assert_eq!(failed_guard(&ops, &failed(1, "wait")), Some("mine"));
    assert_eq!(failed_guard(&ops, &failed(0, "comment")), None);
    assert_eq!(failed_guard(&ops, &failed(9, "wait")), None);
    let commit = OvsdbError::CommitFailed {
        error: "timed out".into(),
        details: String::new(),
    };
    assert_eq!(failed_guard(&ops, &commit), None);
}

#[test]
fn error_kinds() {
    for (s, k) in [
        (
            "referential integrity violation",
            OpErrorKind::ReferentialIntegrity,
        ),
        ("constraint violation", OpErrorKind::ConstraintViolation),
        ("resources exhausted", OpErrorKind::ResourcesExhausted),
        ("I/O error", OpErrorKind::IoError),
        ("duplicate uuid name", OpErrorKind::DuplicateUuidName),
        ("domain error", OpErrorKind::DomainError),
        ("range error", OpErrorKind::RangeError),
        ("timed out", OpErrorKind::TimedOut),
        ("not supported", OpErrorKind::NotSupported),
        ("aborted", OpErrorKind::Aborted),
        ("not owner", OpErrorKind::NotOwner),
        ("syntax error", OpErrorKind::Other("syntax error".into())),
    ] {
        assert_eq!(OpErrorKind::parse(s), k);
    }
    let e = OpError::from_result(&json!({"error": "timed out", "details": "d"})).unwrap();
    assert_eq!(e.kind(), OpErrorKind::TimedOut);
    assert_eq!(e.details, "d");
    let e = OpError::from_result(&json!({"error": {"x": 1}, "details": 5})).unwrap();
    assert_eq!((e.error.as_str(), e.details.as_str()), (r#"{"x":1}"#, "5"));
    assert_eq!(
        OpError::from_result(&json!({"error": "aborted"}))
            .unwrap()
            .details,
        ""
    );
    assert_eq!(OpError::from_result(&json!({"error": null})), None);
    assert_eq!(OpError::from_result(&json!({"rows": []})), None);
    let e = OvsdbError::CommitFailed {
        error: "not owner".into(),
        details: String::new(),
    };
    assert_eq!(e.op_error_kind(), Some(OpErrorKind::NotOwner));
    let e = OvsdbError::PortExists { port: "p".into() };
    assert_eq!(e.op_error_kind(), None);
}
