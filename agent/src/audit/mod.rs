//! Tamper-evident audit chain in SQLite.
//!
//! Every hook step is one row of the table `audit`; each row's `hash` is SHA-256 over a
//! versioned, domain-separated, length-prefixed encoding of all its columns and `prev_hash`
//! (see `README-encoding.md` beside this file and [`encoding`]). Appends read the head and
//! insert inside one `BEGIN IMMEDIATE` transaction, so concurrent hook processes never fork
//! the chain (`UNIQUE(prev_hash)` and `seq = head + 1` enforce it a second time).
//! When a key file exists, [`AuditLog::checkpoint`] appends a row carrying an HMAC-SHA256 of
//! the head under the current epoch key and ratchets the key forward (Schneier–Kelsey /
//! journald FSS style forward security).
//!
//! One module per job: [`store`] (the writer, [`AuditLog`]), [`key`] (the checkpoint key
//! file), [`reader`] (read-only access and row decoding), [`verify`] (the pure [`Verifier`]
//! state machine, fed [`StoredRow`]s), [`export`] (the export file format) and [`error`].
//! The `op-agent audit …` commands are in `crate::commands::audit`.
//!
//! The module knows nothing of Proxmox: `vmid`, `phase` and `step` are plain fields.
//!
//! [`Verifier`]: verify::Verifier

pub mod encoding;
pub mod error;
pub mod export;
pub mod key;
pub mod reader;
pub mod store;
pub mod verify;

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use encoding::RowFields;

pub use error::{AuditError, ReadError, VerifyError};
pub use key::{format_key_line, init_key, parse_key_text, read_key_file};
pub use store::{AuditLog, AuditOptions, FOLD_MIN_FREE_BYTES};

/// Schema version stored in `PRAGMA user_version` by this code.
pub const SCHEMA_VERSION: i64 = 1;

/// Default database path (the `[audit] database` key of agent.toml overrides it).
pub const DEFAULT_DB: &str = "/var/lib/op-agent/audit.db";
/// Default key file path for keyed checkpoints.
pub const DEFAULT_KEY_FILE: &str = "/var/lib/op-agent/audit.key";

/// Outcome of a step, stored as text in the `outcome` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Written before a run changes anything (write-ahead).
    Intent,
    /// The step succeeded.
    Ok,
    /// The step failed.
    Failed,
    /// The step was not needed or not attempted.
    Skipped,
}

impl Outcome {
    /// `"intent"`, `"ok"`, `"failed"` or `"skipped"`: the stored and hashed text.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Intent => "intent",
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
            Outcome::Skipped => "skipped",
        }
    }
}

/// A row to append; `seq`, `ts`, `host`, `prev_hash` and `hash` are filled in by
/// [`AuditLog::append`].
#[derive(Debug, Clone, Copy)]
pub struct NewRow<'a> {
    /// Guest id (0 for host-wide rows).
    pub vmid: u32,
    /// Hook phase, e.g. `post-start`.
    pub phase: &'a str,
    /// Id of the hook run, from [`run_id`].
    pub run_id: &'a str,
    /// Step name, e.g. `ovs.add-port`.
    pub step: &'a str,
    /// Outcome of the step.
    pub outcome: Outcome,
    /// JSON text (must parse as JSON), stored and hashed as these exact bytes.
    pub detail: &'a str,
}

/// A chain position: `seq` and the 32-byte `hash` of that row.
/// Displays and parses as `seq:hex-hash` (64 lowercase hex digits), the syslog anchor form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Sequence number, 1-based.
    pub seq: i64,
    /// SHA-256 row hash.
    pub hash: [u8; 32],
}

impl fmt::Display for Head {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.seq, encoding::hex(&self.hash))
    }
}

/// One row as read, owned.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredRow {
    /// Position.
    pub seq: i64,
    /// UTC ms.
    pub ts: i64,
    /// Host.
    pub host: String,
    /// Guest id.
    pub vmid: u32,
    /// Phase.
    pub phase: String,
    /// Run id.
    pub run_id: String,
    /// Step.
    pub step: String,
    /// Outcome text.
    pub outcome: String,
    /// Detail JSON text, exact stored bytes.
    pub detail: String,
    /// Previous hash, 32 bytes (hex in JSON).
    #[serde(with = "hex32")]
    pub prev_hash: [u8; 32],
    /// Stored hash, 32 bytes (hex in JSON).
    #[serde(with = "hex32")]
    pub hash: [u8; 32],
}

impl StoredRow {
    /// The hashed fields of this row.
    pub fn fields(&self) -> RowFields<'_> {
        RowFields {
            seq: self.seq,
            ts_ms: self.ts,
            host: &self.host,
            vmid: self.vmid,
            phase: &self.phase,
            run_id: &self.run_id,
            step: &self.step,
            outcome: &self.outcome,
            detail: &self.detail,
            prev_hash: &self.prev_hash,
        }
    }
}

mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::encoding::hex(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        super::encoding::unhex32(&s)
            .ok_or_else(|| serde::de::Error::custom("expected 64 hex digits"))
    }
}

/// Error of [`Head::from_str`]: the text that is not `SEQ:HASH`.
#[derive(Debug, thiserror::Error)]
#[error("anchor {0:?} is not SEQ:HASH (seq >= 1, 64 hex digits)")]
pub struct HeadParseError(pub String);

impl FromStr for Head {
    type Err = HeadParseError;
    fn from_str(s: &str) -> Result<Head, HeadParseError> {
        let bad = || HeadParseError(s.to_string());
        let (a, b) = s.trim().split_once(':').ok_or_else(bad)?;
        let seq: i64 = a.parse().map_err(|_| bad())?;
        if seq < 1 {
            return Err(bad());
        }
        let hash = encoding::unhex32(b).ok_or_else(bad)?;
        Ok(Head { seq, hash })
    }
}

/// Current UTC time in ms since the Unix epoch, as the clock says ([`ms_since_epoch`]).
pub fn now_ms() -> i64 {
    ms_since_epoch(SystemTime::now())
}

/// `t` in ms since the Unix epoch, negative before 1970 (a clock set back is recorded as it
/// is, never as 0), saturating at the ends of `i64`.
pub fn ms_since_epoch(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_millis()).map_or(i64::MIN, |ms| -ms),
    }
}

/// A new id for one hook run: `<ms since epoch, hex>-<pid>-<8 random bytes, hex>`, e.g.
/// `19ad2f3c1a0-4242-9f1c0e7d2b3a4c5d`. Falls back to a process counter and the clock's
/// nanoseconds when `/dev/urandom` cannot be read.
pub fn run_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut r = [0u8; 8];
    if File::open("/dev/urandom")
        .and_then(|mut u| u.read_exact(&mut r))
        .is_err()
    {
        let n = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let c = COUNTER.fetch_add(1, Ordering::Relaxed);
        r = ((n as u64) << 32 | (c & 0xffff_ffff)).to_be_bytes();
    }
    format!(
        "{:x}-{}-{}",
        now_ms(),
        std::process::id(),
        encoding::hex(&r)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_parses_as_anchor() {
        let h = Head {
            seq: 42,
            hash: [0xab; 32],
        };
        assert_eq!(h.to_string().parse::<Head>().unwrap(), h);
        assert!("0:ab".parse::<Head>().is_err());
        assert!(format!("0:{}", encoding::hex(&[0xab; 32]))
            .parse::<Head>()
            .is_err());
    }

    #[test]
    fn run_ids_differ_and_name_the_process() {
        let (a, b) = (run_id(), run_id());
        assert_ne!(a, b);
        let pid = std::process::id().to_string();
        assert_eq!(a.split('-').nth(1), Some(pid.as_str()));
    }
}
