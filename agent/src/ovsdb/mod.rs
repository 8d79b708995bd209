//! RFC 7047 OVSDB client over a unix socket, and the Open_vSwitch operations op-agent needs.
//!
//! - [`rpc`]: the JSON-RPC 1.0 transport ([`rpc::Connection`], RFC 7047 §4), schema-free:
//!   stream parsing of concatenated JSON values, pipelined `u64` ids, answers to server `echo`
//!   requests, `call`, `transact`, and `update` notifications dispatched by monitor id.
//! - [`proto`]: the RFC 7047 notation (§5.1) and operations (§5.2) as typed values, and the
//!   error kinds of operation results.
//! - [`vswitch`]: the `Open_vSwitch` database session ([`Client`]): typed operations on bridges,
//!   ports and interfaces, each one transaction where possible, and a `monitor` of
//!   `Open_vSwitch.cur_cfg` to wait until ovs-vswitchd applied a change. Nothing here knows
//!   about Proxmox.
//!
//! All errors are [`OvsdbError`]; messages quote the socket, method, op index and names involved.

pub mod proto;
pub mod rpc;
pub mod vswitch;

use std::path::PathBuf;

pub use vswitch::{Client, DelGuard, InterfaceRow, PortRate, PortRow, PortSpec, Snapshot};

/// Name of the database ovs-vswitchd uses (`vswitch.ovsschema`).
pub const VSWITCH_DB: &str = "Open_vSwitch";

/// Errors from the OVSDB client and the Open_vSwitch operations.
///
/// Sources: RFC 7047 §4.1 (JSON-RPC methods, `error` member), §5.2 (per-operation results and
/// the extra commit-error element), and the `wait` operation (§5.2.6) used as a guard, whose
/// failure is mapped to [`OvsdbError::NoSuchBridge`], [`OvsdbError::PortExists`] and
/// [`OvsdbError::NotOwned`].
#[derive(Debug, thiserror::Error)]
pub enum OvsdbError {
    /// The unix socket could not be connected (`connect(2)` error).
    #[error("connect to OVSDB socket {path}: {source}")]
    Connect {
        /// Socket path.
        path: PathBuf,
        /// The I/O error from `connect(2)`.
        #[source]
        source: std::io::Error,
    },
    /// Connecting did not finish within the timeout.
    #[error("connect to OVSDB socket {path}: no connection within {ms} ms")]
    ConnectTimeout {
        /// Socket path.
        path: PathBuf,
        /// The timeout, in ms.
        ms: u64,
    },
    /// The connection is gone (EOF, read/write error or a protocol error); every pending and
    /// later call fails with this.
    #[error("OVSDB connection to {path} lost: {reason}")]
    ConnectionClosed {
        /// Socket path.
        path: PathBuf,
        /// Why the connection was closed.
        reason: String,
    },
    /// No reply to a request within the client's call timeout.
    #[error("OVSDB {method} on {path}: no reply within {ms} ms")]
    Timeout {
        /// Socket path.
        path: PathBuf,
        /// JSON-RPC method (`transact`, `monitor`, ...).
        method: String,
        /// The timeout, in ms.
        ms: u64,
    },
    /// The server answered with a non-null top-level `error` (RFC 7047 §4.1).
    #[error("OVSDB {method} failed: {error}")]
    Rpc {
        /// JSON-RPC method.
        method: String,
        /// The `error` member as sent by the server.
        error: serde_json::Value,
    },
    /// The reply does not have the shape RFC 7047 specifies for the method.
    #[error("OVSDB {method}: malformed reply: {detail}")]
    BadReply {
        /// JSON-RPC method.
        method: String,
        /// What was wrong.
        detail: String,
    },
    /// Operation `index` of a transaction failed (RFC 7047 §5.2: an `error` object in the
    /// result array); the transaction was aborted and nothing was committed.
    #[error("OVSDB transaction op {index} ({op}) failed: {error}: {details}")]
    OpFailed {
        /// 0-based index into the ops array.
        index: usize,
        /// The op name (`wait`, `insert`, ...).
        op: String,
        /// The `error` string (e.g. `timed out`, `constraint violation`).
        error: String,
        /// The `details` string, empty when absent.
        details: String,
    },
    /// All operations succeeded but the commit failed (the extra result element, RFC 7047
    /// §5.2, e.g. `constraint violation` or `referential integrity violation`).
    #[error("OVSDB transaction commit failed: {error}: {details}")]
    CommitFailed {
        /// The `error` string.
        error: String,
        /// The `details` string, empty when absent.
        details: String,
    },
    /// ovs-vswitchd did not raise `cur_cfg` to `next_cfg` in time (it may not be running).
    #[error(
        "ovs-vswitchd did not apply next_cfg {next_cfg} within {ms} ms (cur_cfg is {}; is ovs-vswitchd running?)",
        cur_cfg.map_or_else(|| "unset".to_string(), |c| c.to_string())
    )]
    WaitTimeout {
        /// The `next_cfg` waited for.
        next_cfg: i64,
        /// The last `cur_cfg` seen, if any.
        cur_cfg: Option<i64>,
        /// The timeout, in ms.
        ms: u64,
    },
    /// The bridge named for a new port has no row in the `Bridge` table (the guard `wait`
    /// aborted the transaction; nothing changed).
    #[error("bridge {bridge:?} does not exist in OVSDB (while adding port {port:?})")]
    NoSuchBridge {
        /// Bridge name.
        bridge: String,
        /// Port that was to be added.
        port: String,
    },
    /// A `Port` or `Interface` row of that name already exists (the guard `wait` aborted the
    /// transaction; nothing changed).
    #[error("a port or interface named {port:?} already exists in OVSDB")]
    PortExists {
        /// Port name.
        port: String,
    },
    /// The port's `external_ids` do not carry the owner mark, so it was not deleted.
    #[error("port {port:?} is not ours: its external_ids:{key} is not {value:?}; left in place")]
    NotOwned {
        /// Port name.
        port: String,
        /// `external_ids` key checked.
        key: String,
        /// Value required.
        value: String,
    },
}

impl OvsdbError {
    /// The kind of the `error` string of an [`OvsdbError::OpFailed`] or
    /// [`OvsdbError::CommitFailed`] (RFC 7047 §4.1.3, §5.2), `None` for other errors.
    pub fn op_error_kind(&self) -> Option<proto::OpErrorKind> {
        match self {
            OvsdbError::OpFailed { error, .. } | OvsdbError::CommitFailed { error, .. } => {
                Some(proto::OpErrorKind::parse(error))
            }
            _ => None,
        }
    }
}
