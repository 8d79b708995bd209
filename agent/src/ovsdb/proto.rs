//! RFC 7047 protocol types, schema-free: the §5.1 notation (atoms, sets, maps, UUIDs,
//! conditions, mutations), the §5.2 operations of a `transact`, and the error kinds an
//! operation result may carry (following libovsdb's `ovsdb/notation.go` and `ovsdb/error.go`).
//!
//! Every type serialises to exactly the JSON RFC 7047 specifies, and deserialises from it.

use std::collections::BTreeMap;

use serde::de::{self, Deserializer};
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::OvsdbError;

/// A row UUID, `["uuid", "<uuid>"]` (RFC 7047 §5.1 `<uuid>`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Uuid(pub String);

/// A UUID named inside one transaction, `["named-uuid", "<id>"]` (RFC 7047 §5.1
/// `<named-uuid>`; the name is set by an `insert`'s `uuid-name`, §5.2.1).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NamedUuid(pub String);

/// An RFC 7047 §5.1 `<atom>`: integer, real, boolean, string, `<uuid>` or `<named-uuid>`.
#[derive(Clone, Debug, PartialEq)]
pub enum Atom {
    /// `<integer>`, a JSON number without fraction.
    Integer(i64),
    /// `<real>`, a JSON number.
    Real(f64),
    /// `<boolean>`.
    Boolean(bool),
    /// `<string>`.
    String(String),
    /// `<uuid>`: `["uuid", "..."]`.
    Uuid(Uuid),
    /// `<named-uuid>`: `["named-uuid", "..."]`.
    NamedUuid(NamedUuid),
}

/// An RFC 7047 §5.1 `<value>`: an atom, a `<set>` (`["set", [atoms]]`) or a `<pair>`-list
/// `<map>` (`["map", [[key, value], ...]]`). A set of exactly one element may also be sent as
/// the bare atom; [`Datum::Atom`] stands for both.
#[derive(Clone, Debug, PartialEq)]
pub enum Datum {
    /// A bare atom (also a 1-element set, or an optional column holding a value).
    Atom(Atom),
    /// `["set", [...]]`; an empty set is how an absent optional column reads.
    Set(Vec<Atom>),
    /// `["map", [[key, value], ...]]`, pairs in the order given.
    Map(Vec<(Atom, Atom)>),
}

/// A row (RFC 7047 §5.1 `<row>`): column name → value; columns left out keep their default.
pub type Row = BTreeMap<String, Datum>;

impl From<&str> for Atom {
    fn from(s: &str) -> Self {
        Atom::String(s.to_string())
    }
}

impl From<String> for Atom {
    fn from(s: String) -> Self {
        Atom::String(s)
    }
}

impl From<i64> for Atom {
    fn from(n: i64) -> Self {
        Atom::Integer(n)
    }
}

impl From<Uuid> for Atom {
    fn from(u: Uuid) -> Self {
        Atom::Uuid(u)
    }
}

impl From<NamedUuid> for Atom {
    fn from(u: NamedUuid) -> Self {
        Atom::NamedUuid(u)
    }
}

impl<T: Into<Atom>> From<T> for Datum {
    fn from(a: T) -> Self {
        Datum::Atom(a.into())
    }
}

impl Datum {
    /// A `<map>` of string keys to string values (e.g. `external_ids`), in key order.
    pub fn string_map<'a>(m: impl IntoIterator<Item = (&'a String, &'a String)>) -> Datum {
        Datum::Map(
            m.into_iter()
                .map(|(k, v)| (Atom::from(k.as_str()), Atom::from(v.as_str())))
                .collect(),
        )
    }

    /// Decodes an RFC 7047 §5.1 `<value>` from JSON; `None` when it is none of the forms.
    pub fn from_json(v: &Value) -> Option<Datum> {
        match v.as_array().map(Vec::as_slice) {
            Some([tag, Value::Array(items)]) if tag == "set" => items
                .iter()
                .map(Atom::from_json)
                .collect::<Option<_>>()
                .map(Datum::Set),
            Some([tag, Value::Array(pairs)]) if tag == "map" => pairs
                .iter()
                .map(|p| match p.as_array().map(Vec::as_slice) {
                    Some([k, v]) => Some((Atom::from_json(k)?, Atom::from_json(v)?)),
                    _ => None,
                })
                .collect::<Option<_>>()
                .map(Datum::Map),
            _ => Atom::from_json(v).map(Datum::Atom),
        }
    }
}

impl Atom {
    /// Decodes an RFC 7047 §5.1 `<atom>` from JSON; `None` when it is not one.
    pub fn from_json(v: &Value) -> Option<Atom> {
        match v {
            Value::Bool(b) => Some(Atom::Boolean(*b)),
            Value::String(s) => Some(Atom::String(s.clone())),
            Value::Number(n) => n
                .as_i64()
                .map(Atom::Integer)
                .or_else(|| n.as_f64().map(Atom::Real)),
            Value::Array(a) => match a.as_slice() {
                [tag, Value::String(u)] if tag == "uuid" => Some(Atom::Uuid(Uuid(u.clone()))),
                [tag, Value::String(u)] if tag == "named-uuid" => {
                    Some(Atom::NamedUuid(NamedUuid(u.clone())))
                }
                _ => None,
            },
            _ => None,
        }
    }
}

impl Serialize for Uuid {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        ("uuid", &self.0).serialize(s)
    }
}

impl Serialize for NamedUuid {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        ("named-uuid", &self.0).serialize(s)
    }
}

impl Serialize for Atom {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Atom::Integer(n) => s.serialize_i64(*n),
            Atom::Real(x) => s.serialize_f64(*x),
            Atom::Boolean(b) => s.serialize_bool(*b),
            Atom::String(v) => s.serialize_str(v),
            Atom::Uuid(u) => u.serialize(s),
            Atom::NamedUuid(u) => u.serialize(s),
        }
    }
}

/// `[key, value]` of a `<map>`.
struct Pair<'a>(&'a (Atom, Atom));

impl Serialize for Pair<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (&self.0 .0, &self.0 .1).serialize(s)
    }
}

/// The elements of a `<set>` or the pairs of a `<map>`, as one JSON array.
struct Elems<'a, T>(&'a [T]);

impl Serialize for Elems<'_, Atom> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for a in self.0 {
            seq.serialize_element(a)?;
        }
        seq.end()
    }
}

impl Serialize for Elems<'_, (Atom, Atom)> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for p in self.0 {
            seq.serialize_element(&Pair(p))?;
        }
        seq.end()
    }
}

impl Serialize for Datum {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Datum::Atom(a) => a.serialize(s),
            Datum::Set(items) => ("set", Elems(items)).serialize(s),
            Datum::Map(pairs) => ("map", Elems(pairs)).serialize(s),
        }
    }
}

fn via_json<'de, D: Deserializer<'de>, T>(
    d: D,
    what: &str,
    f: impl FnOnce(&Value) -> Option<T>,
) -> Result<T, D::Error> {
    let v = Value::deserialize(d)?;
    f(&v).ok_or_else(|| de::Error::custom(format!("not an RFC 7047 {what}: {v}")))
}

impl<'de> Deserialize<'de> for Atom {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        via_json(d, "<atom>", Atom::from_json)
    }
}

impl<'de> Deserialize<'de> for Datum {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        via_json(d, "<value>", Datum::from_json)
    }
}

impl<'de> Deserialize<'de> for Uuid {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        via_json(d, "<uuid>", |v| match Atom::from_json(v) {
            Some(Atom::Uuid(u)) => Some(u),
            _ => None,
        })
    }
}

impl<'de> Deserialize<'de> for NamedUuid {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        via_json(d, "<named-uuid>", |v| match Atom::from_json(v) {
            Some(Atom::NamedUuid(u)) => Some(u),
            _ => None,
        })
    }
}

/// The `<function>` of a condition (RFC 7047 §5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Function {
    /// `==`
    #[serde(rename = "==")]
    Eq,
    /// `!=`
    #[serde(rename = "!=")]
    Ne,
    /// `<`
    #[serde(rename = "<")]
    Lt,
    /// `<=`
    #[serde(rename = "<=")]
    Le,
    /// `>`
    #[serde(rename = ">")]
    Gt,
    /// `>=`
    #[serde(rename = ">=")]
    Ge,
    /// `includes`: the column's set or map contains the value's elements.
    #[serde(rename = "includes")]
    Includes,
    /// `excludes`: the column's set or map contains none of the value's elements.
    #[serde(rename = "excludes")]
    Excludes,
}

/// A `<condition>`, `[column, function, value]` (RFC 7047 §5.1), as in a `where` clause.
#[derive(Clone, Debug, PartialEq)]
pub struct Cond {
    /// Column name (`_uuid` for the row UUID).
    pub column: String,
    /// The comparison.
    pub function: Function,
    /// The value compared with.
    pub value: Datum,
}

impl Cond {
    /// `[column, "==", value]`.
    pub fn eq(column: &str, value: impl Into<Datum>) -> Cond {
        Cond {
            column: column.to_string(),
            function: Function::Eq,
            value: value.into(),
        }
    }

    /// `[column, "includes", value]`.
    pub fn includes(column: &str, value: Datum) -> Cond {
        Cond {
            column: column.to_string(),
            function: Function::Includes,
            value,
        }
    }
}

impl Serialize for Cond {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (&self.column, self.function, &self.value).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Cond {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (column, function, value) = <(String, Function, Datum)>::deserialize(d)?;
        Ok(Cond {
            column,
            function,
            value,
        })
    }
}

/// The `<mutator>` of a mutation (RFC 7047 §5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mutator {
    /// `+=`
    #[serde(rename = "+=")]
    Add,
    /// `-=`
    #[serde(rename = "-=")]
    Sub,
    /// `*=`
    #[serde(rename = "*=")]
    Mul,
    /// `/=`
    #[serde(rename = "/=")]
    Div,
    /// `%=`
    #[serde(rename = "%=")]
    Mod,
    /// `insert`: add the value's elements to a set or map column.
    #[serde(rename = "insert")]
    Insert,
    /// `delete`: remove the value's elements (or, for a map, keys) from the column.
    #[serde(rename = "delete")]
    Delete,
}

/// A `<mutation>`, `[column, mutator, value]` (RFC 7047 §5.1), as in a `mutate` op.
#[derive(Clone, Debug, PartialEq)]
pub struct Mutation {
    /// Column name.
    pub column: String,
    /// The change.
    pub mutator: Mutator,
    /// Its operand.
    pub value: Datum,
}

impl Mutation {
    /// `[column, mutator, value]`.
    pub fn new(column: &str, mutator: Mutator, value: impl Into<Datum>) -> Mutation {
        Mutation {
            column: column.to_string(),
            mutator,
            value: value.into(),
        }
    }
}

impl Serialize for Mutation {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (&self.column, self.mutator, &self.value).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Mutation {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (column, mutator, value) = <(String, Mutator, Datum)>::deserialize(d)?;
        Ok(Mutation {
            column,
            mutator,
            value,
        })
    }
}

/// The `until` of a `wait` (RFC 7047 §5.2.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Until {
    /// `==`: wait until the selected rows equal `rows`.
    #[serde(rename = "==")]
    Eq,
    /// `!=`: wait until they differ.
    #[serde(rename = "!=")]
    Ne,
}

/// One operation of a `transact` (RFC 7047 §5.2), serialised as its `{"op": ...}` object.
///
/// `G` is a tag a caller may put on a [`Op::Wait`] used as a guard; it is never sent. When a
/// transaction aborts, [`failed_guard`] names the guard whose `wait` failed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", bound = "")]
pub enum Op<G = ()> {
    /// §5.2.1 `insert`: a new row; `uuid-name` names its UUID for later ops.
    Insert {
        /// Table name.
        table: String,
        /// The columns set.
        row: Row,
        /// `uuid-name`, for `["named-uuid", ...]` references in the same transaction.
        #[serde(rename = "uuid-name", default, skip_serializing_if = "Option::is_none")]
        uuid_name: Option<String>,
    },
    /// §5.2.2 `select`: the rows matching `where`, with `columns` (all when absent).
    Select {
        /// Table name.
        table: String,
        /// Conditions, all of which must hold (empty: every row).
        #[serde(rename = "where")]
        conds: Vec<Cond>,
        /// Columns returned.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        columns: Option<Vec<String>>,
    },
    /// §5.2.3 `update`: sets `row`'s columns in every row matching `where`.
    Update {
        /// Table name.
        table: String,
        /// Conditions.
        #[serde(rename = "where")]
        conds: Vec<Cond>,
        /// The columns set.
        row: Row,
    },
    /// §5.2.4 `mutate`: applies `mutations` to every row matching `where`.
    Mutate {
        /// Table name.
        table: String,
        /// Conditions.
        #[serde(rename = "where")]
        conds: Vec<Cond>,
        /// The changes.
        mutations: Vec<Mutation>,
    },
    /// §5.2.5 `delete`: deletes every row matching `where`.
    Delete {
        /// Table name.
        table: String,
        /// Conditions.
        #[serde(rename = "where")]
        conds: Vec<Cond>,
    },
    /// §5.2.6 `wait`: aborts the transaction (error `timed out`) unless the `columns` of the
    /// rows matching `where` compare to `rows` as `until` says, within `timeout` ms.
    Wait {
        /// Table name.
        table: String,
        /// Milliseconds to wait; `0` fails at once (absent: wait forever).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout: Option<u64>,
        /// Conditions.
        #[serde(rename = "where")]
        conds: Vec<Cond>,
        /// Columns compared.
        columns: Vec<String>,
        /// `==` or `!=`.
        until: Until,
        /// The expected rows (only `columns` of them).
        rows: Vec<Row>,
        /// The caller's tag for this guard; not part of the protocol, never sent.
        #[serde(skip)]
        guard: Option<G>,
    },
    /// §5.2.9 `comment`: text for the database log.
    Comment {
        /// The text.
        comment: String,
    },
}

impl<G> Op<G> {
    /// The guard tag of a [`Op::Wait`], if it has one.
    pub fn guard(&self) -> Option<&G> {
        match self {
            Op::Wait { guard, .. } => guard.as_ref(),
            _ => None,
        }
    }

    /// The op as the JSON object sent in `transact` params (RFC 7047 §4.1.3).
    pub fn to_json(&self) -> Value {
        // Serialising these types into a `Value` has no failure path (string keys only).
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// The tag of the guard whose `wait` made the transaction fail, when `e` is an
/// [`OvsdbError::OpFailed`] at the index of a tagged [`Op::Wait`] of `ops` (the ops sent).
pub fn failed_guard<G: Clone>(ops: &[Op<G>], e: &OvsdbError) -> Option<G> {
    match e {
        OvsdbError::OpFailed { index, .. } => ops.get(*index)?.guard().cloned(),
        _ => None,
    }
}

/// The kind of an `error` string in an operation result or the extra commit-error element
/// (RFC 7047 §4.1.3 and §5.2; names as in libovsdb's `ovsdb/error.go`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpErrorKind {
    /// `referential integrity violation`: the commit would leave a reference to a missing row.
    ReferentialIntegrity,
    /// `constraint violation`: a value outside the column's constraints, or a duplicate index.
    ConstraintViolation,
    /// `resources exhausted`.
    ResourcesExhausted,
    /// `I/O error`: the commit could not be written.
    IoError,
    /// `duplicate uuid name`: two `insert`s with the same `uuid-name` (§5.2.1).
    DuplicateUuidName,
    /// `domain error`: a `mutate` division by zero or similar (§5.2.4).
    DomainError,
    /// `range error`: a `mutate` result out of range (§5.2.4).
    RangeError,
    /// `timed out`: a `wait` condition did not hold within its timeout (§5.2.6).
    TimedOut,
    /// `not supported`.
    NotSupported,
    /// `aborted`: an `abort` op (§5.2.7).
    Aborted,
    /// `not owner`: an `assert` of a lock not held (§5.2.10).
    NotOwner,
    /// Any other string, as sent.
    Other(String),
}

impl OpErrorKind {
    /// The kind of an `error` string.
    pub fn parse(error: &str) -> OpErrorKind {
        match error {
            "referential integrity violation" => OpErrorKind::ReferentialIntegrity,
            "constraint violation" => OpErrorKind::ConstraintViolation,
            "resources exhausted" => OpErrorKind::ResourcesExhausted,
            "I/O error" => OpErrorKind::IoError,
            "duplicate uuid name" => OpErrorKind::DuplicateUuidName,
            "domain error" => OpErrorKind::DomainError,
            "range error" => OpErrorKind::RangeError,
            "timed out" => OpErrorKind::TimedOut,
            "not supported" => OpErrorKind::NotSupported,
            "aborted" => OpErrorKind::Aborted,
            "not owner" => OpErrorKind::NotOwner,
            other => OpErrorKind::Other(other.to_string()),
        }
    }
}

/// The `error` and `details` members of an operation result (RFC 7047 §5.2) or of the extra
/// commit-error element (§4.1.3), as text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpError {
    /// The `error` string (a non-string `error` as its JSON text).
    pub error: String,
    /// The `details` string (a non-string one as JSON text), empty when absent.
    pub details: String,
}

impl OpError {
    /// The error of one result object; `None` when it has no non-null `error` member.
    pub fn from_result(r: &Value) -> Option<OpError> {
        let text = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_string);
        let err = r.get("error").filter(|e| !e.is_null())?;
        Some(OpError {
            error: text(err),
            details: r.get("details").map(text).unwrap_or_default(),
        })
    }

    /// Its kind.
    pub fn kind(&self) -> OpErrorKind {
        OpErrorKind::parse(&self.error)
    }
}

#[cfg(test)]
#[path = "proto_tests.rs"]
mod tests;
