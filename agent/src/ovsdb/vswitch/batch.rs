//! Batched changes of many ports at once, for a repair of many containers: every delete in ONE
//! transaction, every insert in ONE transaction, every `Interface` status in one read, so
//! ovs-vswitchd reconfigures once per batch instead of once per port.
//!
//! Each row keeps its own guards ([`ops`]'s `wait` ops, RFC 7047 §5.2.6): a guard that fails
//! aborts the whole transaction (RFC 7047 §4.1.3, the transaction is atomic), and the error
//! names the op's index. The op belongs to one item: that item is then done on its own (the
//! single-port call, which re-reads the row and names the precondition that failed), and the
//! others are sent again together, so one changed row never undoes the rest. An error that
//! names no item (a commit failure, a lost connection) makes every item go on its own.

use super::ops::{self, VsOp};
use super::rows::{next_cfg_of, opt_i64, opt_str, rows, str_map, uuid_of};
use super::{Client, DelGuard, PortSpec};
use crate::ovsdb::proto::Op;
use crate::ovsdb::{OvsdbError, VSWITCH_DB};
use serde_json::Value;

/// `(ofport, error)` of an `Interface` row, `None` when there is no such row.
pub type IfaceStatus = Option<(Option<i64>, Option<String>)>;

/// The ops of one transaction, with the item each op belongs to (`None`: the transaction's
/// own ops, the comment and the `next_cfg` bump).
struct Batch {
    ops: Vec<VsOp>,
    owner: Vec<Option<usize>>,
}

impl Batch {
    fn new(comment: String) -> Batch {
        Batch {
            ops: vec![Op::Comment { comment }],
            owner: vec![None],
        }
    }

    fn extend(&mut self, item: Option<usize>, ops: impl IntoIterator<Item = VsOp>) {
        for op in ops {
            self.ops.push(op);
            self.owner.push(item);
        }
    }

    /// The item whose op made the transaction fail (`OpFailed` names the op's index).
    fn failed_item(&self, e: &OvsdbError) -> Option<usize> {
        match e {
            OvsdbError::OpFailed { index, .. } => self.owner.get(*index).copied().flatten(),
            _ => None,
        }
    }

    /// The JSON ops; with `rename`, the `uuid-name`s and `named-uuid` references of item `i`
    /// get the suffix `_<i>`, so the inserts of many ports do not share a name (RFC 7047
    /// §5.2.1: a `uuid-name` is unique within a transaction).
    fn json(&self, rename: bool) -> Vec<Value> {
        self.ops
            .iter()
            .zip(&self.owner)
            .map(|(op, item)| {
                let mut v = op.to_json();
                if let (true, Some(i)) = (rename, item) {
                    suffix_names(&mut v, &format!("_{i}"));
                }
                v
            })
            .collect()
    }
}

/// Appends `suffix` to every `uuid-name` member and `["named-uuid", name]` reference in `v`.
fn suffix_names(v: &mut Value, suffix: &str) {
    match v {
        Value::Array(a) => {
            if a.len() == 2 && a[0] == "named-uuid" {
                if let Some(n) = a[1].as_str() {
                    a[1] = Value::String(format!("{n}{suffix}"));
                }
                return;
            }
            a.iter_mut().for_each(|x| suffix_names(x, suffix));
        }
        Value::Object(o) => {
            for (k, x) in o.iter_mut() {
                match (k.as_str(), x.as_str()) {
                    ("uuid-name", Some(n)) => *x = Value::String(format!("{n}{suffix}")),
                    _ => suffix_names(x, suffix),
                }
            }
        }
        _ => {}
    }
}

impl Client {
    /// `transact` of a batch that bumps `next_cfg`, the `cur_cfg` monitor request pipelined
    /// behind it (as [`Client::add_port`] does).
    async fn run_batch(&self, b: &Batch, rename: bool) -> Result<Vec<Value>, OvsdbError> {
        let (r, _) = tokio::join!(
            self.transact(VSWITCH_DB, b.json(rename)),
            self.monitor_cur_cfg()
        );
        r
    }

    /// Deletes the Ports `items` (`(name, guard)`) in ONE transaction: per port the guard
    /// `wait` and the `Bridge.ports delete` of [`Client::del_port`], then one `next_cfg` bump.
    /// Row UUIDs this client did not read before are selected first, in one transaction for
    /// all. Returns, per item in order, what [`Client::del_port`] returns: the `next_cfg` to
    /// wait for, `None` when the port is absent, or the error of that item alone (e.g.
    /// [`OvsdbError::NotOwned`], the row left in place). An item whose guard aborted the
    /// transaction is deleted on its own ([`Client::del_port`]), the others again together.
    pub async fn del_ports(
        &self,
        items: &[(String, DelGuard)],
    ) -> Vec<Result<Option<i64>, OvsdbError>> {
        let mut out: Vec<Option<Result<Option<i64>, OvsdbError>>> =
            items.iter().map(|_| None).collect();
        let mut todo: Vec<(usize, String)> = Vec::new();
        let mut unknown = Vec::new();
        for (i, (name, _)) in items.iter().enumerate() {
            match self.port_uuids().get(name) {
                Some(u) => todo.push((i, u.clone())),
                None => unknown.push(i),
            }
        }
        if !unknown.is_empty() {
            let sel: Vec<VsOp> = unknown
                .iter()
                .flat_map(|&i| ops::port_to_delete(&items[i].0))
                .collect();
            match self.run(&sel).await {
                Ok(r) => {
                    for (k, &i) in unknown.iter().enumerate() {
                        let (name, guard) = &items[i];
                        let Some(row) = rows(&r, k).first() else {
                            out[i] = Some(Ok(None));
                            continue;
                        };
                        if let DelGuard::OwnedBy { key, value } = guard {
                            if str_map(row.get("external_ids")).get(key) != Some(value) {
                                out[i] = Some(Err(ops::not_owned(name, key, value)));
                                continue;
                            }
                        }
                        match row.get("_uuid").and_then(uuid_of) {
                            Some(u) => todo.push((i, u)),
                            None => out[i] = Some(self.del_port(name, guard.clone()).await),
                        }
                    }
                }
                Err(_) => {
                    for &i in &unknown {
                        let (name, guard) = &items[i];
                        out[i] = Some(self.del_port(name, guard.clone()).await);
                    }
                }
            }
        }
        while !todo.is_empty() {
            if todo.len() == 1 {
                let (i, _) = todo[0];
                let (name, guard) = &items[i];
                out[i] = Some(self.del_port(name, guard.clone()).await);
                break;
            }
            let names: Vec<&str> = todo.iter().map(|(i, _)| items[*i].0.as_str()).collect();
            let mut b = Batch::new(format!("op-agent: del-port {}", names.join(" ")));
            let mut mutate_at = Vec::new();
            for (k, (i, uuid)) in todo.iter().enumerate() {
                let (name, guard) = &items[*i];
                b.extend(Some(k), ops::del_port_ops(name, uuid, guard, true));
                mutate_at.push(b.ops.len() - 1);
            }
            b.extend(None, ops::bump_and_read_cfg());
            match self.run_batch(&b, false).await {
                Ok(res) => {
                    let next = next_cfg_of(&res, ops::cfg_index(&b.ops));
                    for (k, (i, _)) in todo.iter().enumerate() {
                        self.port_uuids().remove(&items[*i].0);
                        let count = res
                            .get(mutate_at[k])
                            .and_then(|r| r.get("count"))
                            .and_then(Value::as_i64);
                        out[*i] = Some(match (&next, count) {
                            // Removed from its bridge by someone else meanwhile.
                            (_, Some(0)) => Ok(None),
                            (Ok(n), _) => Ok(Some(*n)),
                            (Err(e), _) => Err(dup(e)),
                        });
                    }
                    break;
                }
                Err(e) => match b.failed_item(&e) {
                    Some(k) => {
                        let (i, _) = todo.remove(k);
                        let (name, guard) = &items[i];
                        self.port_uuids().remove(name);
                        out[i] = Some(self.del_port(name, guard.clone()).await);
                    }
                    None => {
                        for (i, _) in todo.drain(..) {
                            let (name, guard) = &items[i];
                            out[i] = Some(self.del_port(name, guard.clone()).await);
                        }
                    }
                },
            }
        }
        out.into_iter().map(|r| r.unwrap_or(Ok(None))).collect()
    }

    /// Adds every Port + Interface of `specs` in ONE transaction: per port the guarded insert
    /// of [`Client::add_port`] (its `uuid-name`s made unique per port), then one `next_cfg`
    /// bump. Returns, per spec in order, the `next_cfg` to wait for or the error of that spec
    /// alone ([`OvsdbError::NoSuchBridge`], [`OvsdbError::PortExists`], ...). A spec whose op
    /// aborted the transaction is added on its own ([`Client::add_port`], which names the
    /// guard), the others again together.
    pub async fn add_ports(&self, specs: &[PortSpec]) -> Vec<Result<i64, OvsdbError>> {
        let mut out: Vec<Option<Result<i64, OvsdbError>>> = specs.iter().map(|_| None).collect();
        let mut todo: Vec<usize> = (0..specs.len()).collect();
        while !todo.is_empty() {
            if todo.len() == 1 {
                out[todo[0]] = Some(self.add_port(&specs[todo[0]]).await);
                break;
            }
            let names: Vec<&str> = todo.iter().map(|&i| specs[i].name.as_str()).collect();
            let mut b = Batch::new(format!("op-agent: add-port {}", names.join(" ")));
            for (k, &i) in todo.iter().enumerate() {
                b.extend(Some(k), ops::add_port_ops(&specs[i]));
            }
            b.extend(None, ops::bump_and_read_cfg());
            match self.run_batch(&b, true).await {
                Ok(res) => {
                    let next = next_cfg_of(&res, ops::cfg_index(&b.ops));
                    for &i in &todo {
                        out[i] = Some(next.as_ref().map(|n| *n).map_err(dup));
                    }
                    break;
                }
                Err(e) => match b.failed_item(&e) {
                    Some(k) => {
                        let i = todo.remove(k);
                        out[i] = Some(self.add_port(&specs[i]).await);
                    }
                    None => {
                        for i in todo.drain(..) {
                            out[i] = Some(self.add_port(&specs[i]).await);
                        }
                    }
                },
            }
        }
        out.into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(OvsdbError::BadReply {
                        method: "transact".into(),
                        detail: "port not added".into(),
                    })
                })
            })
            .collect()
    }

    /// Replaces many Ports in ONE transaction: per item `(del_name, guard, spec)` the ops of
    /// [`Client::replace_port`] (the guarded delete of `del_name`'s row, when there is one,
    /// and the guarded insert of `spec`, its `uuid-name`s made unique per item), then one
    /// `next_cfg` bump. The rows to delete are read first, in one transaction for all.
    /// Returns, per item in order, what [`Client::replace_port`] returns. An item whose op
    /// aborted the transaction, or whose row is not `guard`'s, is done on its own
    /// ([`Client::replace_port`], which names the guard), the others again together.
    pub async fn replace_ports(
        &self,
        items: &[(String, DelGuard, PortSpec)],
    ) -> Vec<Result<i64, OvsdbError>> {
        let mut out: Vec<Option<Result<i64, OvsdbError>>> = items.iter().map(|_| None).collect();
        let sel: Vec<VsOp> = items
            .iter()
            .flat_map(|(name, _, _)| ops::port_to_delete(name))
            .collect();
        // Per item: the UUID of the row to delete (None: absent); items not in `todo` go alone.
        let mut todo: Vec<(usize, Option<String>)> = Vec::new();
        // Unreadable (OVSDB unreachable): every item goes alone and reports its own error.
        if let Ok(r) = self.run(&sel).await {
            for (i, (_, guard, _)) in items.iter().enumerate() {
                let row = rows(&r, i).first().cloned();
                let guard_ok = match (&row, guard) {
                    (Some(row), DelGuard::OwnedBy { key, value }) => {
                        str_map(row.get("external_ids")).get(key) == Some(value)
                    }
                    _ => true,
                };
                let uuid = row.as_ref().and_then(|x| x.get("_uuid")).and_then(uuid_of);
                if guard_ok && (row.is_none() || uuid.is_some()) {
                    todo.push((i, uuid));
                }
            }
        }
        let alone: Vec<usize> = (0..items.len())
            .filter(|i| !todo.iter().any(|(k, _)| k == i))
            .collect();
        for i in alone {
            let (name, guard, spec) = &items[i];
            out[i] = Some(self.replace_port(name, guard.clone(), spec).await);
        }
        while !todo.is_empty() {
            if todo.len() == 1 {
                let (i, _) = todo[0];
                let (name, guard, spec) = &items[i];
                out[i] = Some(self.replace_port(name, guard.clone(), spec).await);
                break;
            }
            let names: Vec<&str> = todo.iter().map(|(i, _)| items[*i].0.as_str()).collect();
            let mut b = Batch::new(format!("op-agent: replace-port {}", names.join(" ")));
            for (k, (i, uuid)) in todo.iter().enumerate() {
                let (name, guard, spec) = &items[*i];
                b.extend(
                    Some(k),
                    ops::replace_port_ops(name, uuid.as_deref(), guard, spec),
                );
            }
            b.extend(None, ops::bump_and_read_cfg());
            match self.run_batch(&b, true).await {
                Ok(res) => {
                    let next = next_cfg_of(&res, ops::cfg_index(&b.ops));
                    for (i, _) in &todo {
                        self.port_uuids().remove(&items[*i].0);
                        out[*i] = Some(next.as_ref().map(|n| *n).map_err(dup));
                    }
                    break;
                }
                Err(e) => {
                    let failed: Vec<(usize, Option<String>)> = match b.failed_item(&e) {
                        Some(k) => vec![todo.remove(k)],
                        None => std::mem::take(&mut todo),
                    };
                    for (i, _) in failed {
                        let (name, guard, spec) = &items[i];
                        self.port_uuids().remove(name);
                        out[i] = Some(self.replace_port(name, guard.clone(), spec).await);
                    }
                }
            }
        }
        out.into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(OvsdbError::BadReply {
                        method: "transact".into(),
                        detail: "port not replaced".into(),
                    })
                })
            })
            .collect()
    }

    /// `(ofport, error)` of the `Interface` rows named `names`, in order, read in one
    /// transaction (one `select` each, RFC 7047 §5.2.2).
    ///
    /// Errors: those of [`Client::transact`].
    pub async fn interfaces_status(
        &self,
        names: &[String],
    ) -> Result<Vec<IfaceStatus>, OvsdbError> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let sel: Vec<VsOp> = names
            .iter()
            .flat_map(|n| ops::interface_status(n))
            .collect();
        let r = self.run(&sel).await?;
        Ok((0..names.len())
            .map(|k| {
                rows(&r, k)
                    .first()
                    .map(|i| (opt_i64(i.get("ofport")), opt_str(i.get("error"))))
            })
            .collect())
    }
}

/// A copy of `e` for each item of a batch that failed as a whole (the error types hold an
/// `io::Error` and are not `Clone`): the same variant where it carries only values, else
/// [`OvsdbError::BadReply`] with `e`'s message.
pub fn dup(e: &OvsdbError) -> OvsdbError {
    match e {
        // The errno is what tells "unavailable" (69) from other failures.
        OvsdbError::Connect { path, source } => OvsdbError::Connect {
            path: path.clone(),
            source: match source.raw_os_error() {
                Some(errno) => std::io::Error::from_raw_os_error(errno),
                None => std::io::Error::new(source.kind(), source.to_string()),
            },
        },
        OvsdbError::ConnectTimeout { path, ms } => OvsdbError::ConnectTimeout {
            path: path.clone(),
            ms: *ms,
        },
        OvsdbError::ConnectionClosed { path, reason } => OvsdbError::ConnectionClosed {
            path: path.clone(),
            reason: reason.clone(),
        },
        OvsdbError::Timeout { path, method, ms } => OvsdbError::Timeout {
            path: path.clone(),
            method: method.clone(),
            ms: *ms,
        },
        OvsdbError::WaitTimeout {
            next_cfg,
            cur_cfg,
            ms,
        } => OvsdbError::WaitTimeout {
            next_cfg: *next_cfg,
            cur_cfg: *cur_cfg,
            ms: *ms,
        },
        OvsdbError::OpFailed {
            index,
            op,
            error,
            details,
        } => OvsdbError::OpFailed {
            index: *index,
            op: op.clone(),
            error: error.clone(),
            details: details.clone(),
        },
        OvsdbError::CommitFailed { error, details } => OvsdbError::CommitFailed {
            error: error.clone(),
            details: details.clone(),
        },
        other => OvsdbError::BadReply {
            method: "transact".into(),
            detail: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copied_connect_error_keeps_its_variant_and_errno() {
        let e = OvsdbError::Connect {
            path: "/run/openvswitch/db.sock".into(),
            source: std::io::Error::from_raw_os_error(libc::ENOENT),
        };
        let d = dup(&e);
        assert_eq!(d.to_string(), e.to_string());
        assert!(
            matches!(&d, OvsdbError::Connect { source, .. } if source.raw_os_error() == Some(libc::ENOENT)),
            "{d:?}"
        );
    }

    #[test]
    fn named_uuids_get_the_item_suffix() {
        let spec = PortSpec {
            name: "vi100".into(),
            bridge: "ovsbr0".into(),
            ..Default::default()
        };
        let mut b = Batch::new("c".into());
        b.extend(Some(3), ops::add_port_ops(&spec));
        let text = serde_json::to_string(&b.json(true)).unwrap();
        assert!(text.contains(r#""uuid-name":"iface_3""#), "{text}");
        assert!(text.contains(r#"["named-uuid","port_3"]"#), "{text}");
        assert!(!text.contains(r#""iface""#), "{text}");
    }

    #[test]
    fn a_failed_op_names_its_item() {
        let mut b = Batch::new("c".into());
        b.extend(Some(0), ops::del_port_ops("a", "u1", &DelGuard::Any, true));
        b.extend(Some(1), ops::del_port_ops("b", "u2", &DelGuard::Any, true));
        b.extend(None, ops::bump_and_read_cfg());
        let e = |index| OvsdbError::OpFailed {
            index,
            op: "wait".into(),
            error: "timed out".into(),
            details: String::new(),
        };
        assert_eq!(b.failed_item(&e(3)), Some(1));
        assert_eq!(b.failed_item(&e(1)), Some(0));
        assert_eq!(b.failed_item(&e(5)), None, "the bump is no item's");
    }
}
