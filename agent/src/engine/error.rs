//! [`RunError`]: why a run failed, with its typed source, its exit code and its one-line
//! message (what the PVE task log shows after `hookscript error for <vmid> on <phase>:`).

use crate::audit::AuditError;
use crate::config::ConfigError;
use crate::engine::plan::PlanError;
use crate::exit::ExitCode;
use crate::lock::LockError;
use crate::netlink::NetlinkError;
use crate::ovsdb::OvsdbError;
use std::path::PathBuf;

/// A failed run. `Display` is the one-line message; [`RunError::code`] the exit code
/// ([`ExitCode`], BSD `sysexits.h` values).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// agent.toml, the container TOML or the PVE conf is invalid, unsafe or unreadable.
    #[error("{0}")]
    Config(#[source] ConfigError),
    /// A container TOML exists but `[pve] root` has no `etc/pve`: silently doing nothing would
    /// switch op-agent off for every container.
    #[error("{}: [pve] root = {source}", agent_toml.display())]
    PveRoot {
        /// The agent.toml in use.
        agent_toml: PathBuf,
        /// Its `[pve] root` and what is wrong with it.
        #[source]
        source: pve_integration::paths::NotPveRoot,
    },
    /// The per-vmid lock was not taken in time (or could not be taken).
    #[error("{0}")]
    Lock(#[source] LockError),
    /// The audit log could not be opened, or the intent row written: nothing was changed.
    #[error("{0}; nothing was changed")]
    AuditBefore(#[source] AuditError),
    /// The outcome rows could not be written after the run.
    #[error("{0}")]
    Audit(#[source] AuditError),
    /// The run succeeded, but its outcome rows could not be written after its intent row
    /// was: the change is in place, the log does not say so yet (the next run of the
    /// container records an `audit.unrecorded` row first).
    #[error("{0}")]
    Unrecorded(Box<Unrecorded>),
    /// The planner refused, or found a bridge or the veth missing; nothing was changed.
    #[error("{0}")]
    Plan(#[source] PlanError),
    /// ovsdb-server failed or refused a request, or ovs-vswitchd did not apply it in time.
    #[error("{0}")]
    Ovsdb(#[source] OvsdbError),
    /// The kernel refused a netlink request.
    #[error("{0}")]
    Netlink(#[source] NetlinkError),
    /// No netlink socket could be opened.
    #[error("netlink socket: {0}")]
    NetlinkSocket(#[source] std::io::Error),
    /// No tokio runtime could be built.
    #[error("tokio runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// A link a step needs is gone.
    #[error("link {name} does not exist")]
    LinkMissing {
        /// The link's name.
        name: String,
    },
    /// ovs-vswitchd applied the Port but did not open its device (`ofport` -1 or absent, or
    /// Interface `error` set).
    #[error("ovs-vswitchd could not attach {port} to {bridge}: {reason}")]
    NotAttached {
        /// Port name.
        port: String,
        /// Bridge name.
        bridge: String,
        /// Interface `error`, else `no ofport`.
        reason: String,
    },
    /// After the rename, the link is no longer in its Linux bridge.
    #[error("{link} is no longer enslaved to {bridge} after the rename")]
    NotEnslaved {
        /// The renamed link.
        link: String,
        /// Its Linux bridge.
        bridge: String,
    },
    /// Netmaker mode with `require_mesh`: the host's mesh interface is not usable.
    #[error("{0}")]
    Mesh(String),
    /// `[hook] deadline_ms` passed: the run was stopped.
    #[error("deadline of {ms} ms exceeded; the run was stopped")]
    Deadline {
        /// The deadline's length, in ms.
        ms: u128,
    },
    /// A post-start step failed and PVE's plumbing of the NICs op-agent had taken apart was
    /// put back: the step's error, then what is back ([`super::rollback::HandedBack::clause`]),
    /// for the PVE task log. Its exit code is the step's.
    #[error("{error}; {back}")]
    RolledBack {
        /// The failure of the step.
        error: Box<RunError>,
        /// What the rollback restored, or which of its actions failed.
        back: String,
    },
    /// Test builds (`failpoints`): `OP_AGENT_FAILPOINT=fail:<step>` failed that step.
    #[error("failpoint: {step} failed")]
    Failpoint {
        /// The step's audit name.
        step: String,
    },
}

impl RunError {
    /// This failure, with what the rollback of `handed` restored ([`RunError::RolledBack`]);
    /// unchanged when nothing was handed back.
    pub fn rolled_back(self, handed: &[super::rollback::HandedBack]) -> RunError {
        if handed.is_empty() {
            return self;
        }
        RunError::RolledBack {
            error: Box::new(self),
            back: super::rollback::clauses(handed),
        }
    }

    /// The failure itself, without the rollback's account ([`RunError::RolledBack`]).
    pub fn root(&self) -> &RunError {
        match self {
            RunError::RolledBack { error, .. } => error.root(),
            e => e,
        }
    }

    /// The exit code of this failure.
    pub fn code(&self) -> ExitCode {
        match self {
            RunError::RolledBack { error, .. } => error.code(),
            RunError::Config(e) => e.exit_code(),
            RunError::PveRoot { .. } => ExitCode::Config,
            RunError::Lock(_) | RunError::Deadline { .. } => ExitCode::Timeout,
            RunError::AuditBefore(_) | RunError::Audit(_) | RunError::Unrecorded(_) => {
                ExitCode::AuditIo
            }
            RunError::Plan(PlanError::Refused(_)) => ExitCode::Refused,
            RunError::Plan(PlanError::Unavailable(_)) | RunError::Mesh(_) => ExitCode::Unavailable,
            RunError::Plan(PlanError::Missing(_)) => ExitCode::Failed,
            RunError::Ovsdb(e) => ovsdb_code(e),
            RunError::NetlinkSocket(_) | RunError::Runtime(_) => ExitCode::Internal,
            RunError::Netlink(_)
            | RunError::LinkMissing { .. }
            | RunError::NotAttached { .. }
            | RunError::NotEnslaved { .. }
            | RunError::Failpoint { .. } => ExitCode::Failed,
        }
    }
}

/// The exit code of an OVSDB failure: unreachable server or missing bridge 69, timeouts 75,
/// a name held by a row op-agent does not own 77, anything else 1.
fn ovsdb_code(e: &OvsdbError) -> ExitCode {
    match e {
        OvsdbError::Connect { .. }
        | OvsdbError::ConnectTimeout { .. }
        | OvsdbError::ConnectionClosed { .. }
        | OvsdbError::NoSuchBridge { .. } => ExitCode::Unavailable,
        OvsdbError::Timeout { .. } | OvsdbError::WaitTimeout { .. } => ExitCode::Timeout,
        OvsdbError::PortExists { .. } | OvsdbError::NotOwned { .. } => ExitCode::Refused,
        _ => ExitCode::Failed,
    }
}

impl From<ConfigError> for RunError {
    fn from(e: ConfigError) -> RunError {
        RunError::Config(e)
    }
}

impl From<PlanError> for RunError {
    fn from(e: PlanError) -> RunError {
        RunError::Plan(e)
    }
}

impl From<OvsdbError> for RunError {
    fn from(e: OvsdbError) -> RunError {
        RunError::Ovsdb(e)
    }
}

impl From<NetlinkError> for RunError {
    fn from(e: NetlinkError) -> RunError {
        RunError::Netlink(e)
    }
}

/// What [`RunError::Unrecorded`] carries.
#[derive(Debug, thiserror::Error)]
#[error(
    "applied ({}), but the outcome is not recorded in the audit log: {source}; the next run records what it finds",
    if applied.is_empty() { "nothing to change" } else { applied.as_str() }
)]
pub struct Unrecorded {
    /// The run's one-line summary.
    pub applied: String,
    /// Why the rows could not be written.
    #[source]
    pub source: AuditError,
}
