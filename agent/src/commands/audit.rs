//! `op-agent audit …`: verify, log, head, export, init-key. Results go to `out` (JSON where
//! asked); an error stops the command with exit code 2 ([`EXIT_UNREADABLE`]) and is printed
//! once by the caller. `verify` ends with 0 when the chain is intact and 1
//! ([`ExitCode::Failed`]) when it found tampering.

use std::fs::File;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};

use crate::audit::reader::{self, Rows};
use crate::audit::verify::{self, VerifyOptions, VerifyReport};
use crate::audit::{encoding, Head, ReadError};
use crate::commands::{CliError, CommandResult};
use crate::exit::ExitCode;

/// Exit status when the input cannot be read (missing, not a database, bad export, bad
/// arguments). `audit` keeps 0/1/2 (intact/tampered/unreadable), not the sysexits codes of
/// [`ExitCode`].
pub const EXIT_UNREADABLE: i32 = 2;

/// The `op-agent audit` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum AuditCommand {
    /// Stream the whole chain and check every row, link, anchor and checkpoint.
    /// Exit 0 intact, 1 tampered (names the first bad seq, the class and the last good
    /// seq/hash), 2 cannot read.
    Verify {
        /// A head held outside this host (e.g. from the syslog collector), `SEQ:HASH`;
        /// repeatable.
        #[arg(long = "anchor", value_name = "SEQ:HASH")]
        anchors: Vec<Head>,
        /// The INITIAL key printed by `init-key` (64 hex digits, or a key file at epoch 0):
        /// checks the HMAC of every checkpoint.
        #[arg(long, value_name = "F")]
        key_file: Option<PathBuf>,
        /// Print the result as one JSON object.
        #[arg(long)]
        json: bool,
        /// Verify an export file (from `audit export`) instead of the database, offline.
        #[arg(long, value_name = "EXPORT")]
        file: Option<PathBuf>,
        /// Also check the chain against every witness row about it in the other cluster
        /// nodes' chains (`--peer-export`; without it, each peer's last witnessed head of
        /// it and its own head file in the `[witness]` folder): names the first contradicted
        /// seq and the node that witnessed it.
        #[arg(long)]
        witnesses: bool,
        /// An export (`audit export`) of another node's database holding witness rows;
        /// repeatable. Implies `--witnesses`.
        #[arg(long = "peer-export", value_name = "FILE", num_args = 1..)]
        peer_exports: Vec<PathBuf>,
        /// The node whose chain is checked (default: this node, `[witness] node`); for
        /// another node give its export with `--file` (this node's database then witnesses
        /// too).
        #[arg(long, value_name = "NAME")]
        node: Option<String>,
    },
    /// List, per other cluster node, the last head this node witnessed and when, and the
    /// contradictions recorded about it.
    Witnesses {
        /// One JSON object per node.
        #[arg(long)]
        json: bool,
    },
    /// Print rows in seq order, one per line (or JSON lines).
    Log {
        /// Only rows of this guest.
        #[arg(long, value_name = "N")]
        vmid: Option<u32>,
        /// Only rows at or after TIME: `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM[:SS]` (local time; `Z`
        /// or `+HH:MM` for another zone), or `@UNIX_SECONDS`.
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Only rows with seq at or after N (rows keep their seq whatever the clock said).
        #[arg(long, value_name = "N")]
        from_seq: Option<i64>,
        /// Only rows with seq at or before N.
        #[arg(long, value_name = "N")]
        to_seq: Option<i64>,
        /// One JSON object per row.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        filter: super::audit_filter::LogFilter,
    },
    /// Print the head as `SEQ:HASH` (`empty` for an empty log).
    Head,
    /// Print a header line with the head, then the rows with seq > N as JSON lines.
    Export {
        /// Export rows after this seq only.
        #[arg(long, value_name = "N", default_value_t = 0)]
        since_seq: i64,
    },
    /// Create the checkpoint key file (mode 0600) and print the initial key to keep off-host.
    InitKey,
}

/// Runs `cmd` against the database `db` (and, for `init-key`, the key file `key_file`,
/// normally `/var/lib/op-agent/audit.key`), writing results to `out`.
///
/// Returns `Ok(ExitCode::Ok)`, or `Ok(ExitCode::Failed)` (1) when `verify` found tampering.
///
/// # Errors
/// A [`CliError`] with status [`EXIT_UNREADABLE`] when the input cannot be read or `out`
/// fails; `verify` says `cannot read: …` (and, with `--json`, also writes
/// `{"status":"unreadable",…}` to `out`).
pub fn run(cmd: &AuditCommand, db: &Path, key_file: &Path, out: &mut dyn Write) -> CommandResult {
    if let Some(epoch) = sealed_but_missing(db, key_file) {
        return Err(CliError::with_status(
            EXIT_UNREADABLE,
            format!(
                "cannot read: audit database {} is missing, but the checkpoint key {} is at epoch \
                 {epoch}: {epoch} checkpoints were sealed in it, so the log was removed or moved",
                db.display(),
                key_file.display()
            ),
        ));
    }
    match cmd {
        AuditCommand::Verify {
            anchors,
            key_file,
            json,
            file,
            ..
        } if fresh_install(db) && anchors.is_empty() && file.is_none() => {
            let rep = VerifyReport {
                rows: 0,
                head: None,
                checkpoints: 0,
                checkpoints_keyed: key_file.is_some(),
                unsealed_rows: 0,
                anchors_matched: 0,
                tamper: None,
                clock_backwards: Default::default(),
            };
            let _ = if *json {
                writeln!(out, "{}", report_json(&rep))
            } else {
                writeln!(out, "{}", report_text(&rep))
            };
            Ok(ExitCode::Ok)
        }
        AuditCommand::Verify {
            anchors,
            key_file,
            json,
            file,
            ..
        } => cmd_verify(
            anchors,
            key_file.as_deref(),
            *json,
            file.as_deref(),
            db,
            out,
        ),
        AuditCommand::Log {
            vmid,
            since,
            from_seq,
            to_seq,
            json,
            filter,
        } => {
            if fresh_install(db) {
                return Ok(ExitCode::Ok);
            }
            let seqs = (*from_seq, *to_seq);
            cmd_log(db, *vmid, since.as_deref(), seqs, *json, filter, out)?;
            Ok(ExitCode::Ok)
        }
        AuditCommand::Head => {
            if fresh_install(db) {
                writeln!(out, "empty").map_err(unreadable)?;
                return Ok(ExitCode::Ok);
            }
            cmd_head(db, out).map_err(unreadable)?;
            Ok(ExitCode::Ok)
        }
        AuditCommand::Export { since_seq } if fresh_install(db) => {
            crate::audit::export::write_empty_export(*since_seq, out).map_err(unreadable)?;
            Ok(ExitCode::Ok)
        }
        AuditCommand::Export { since_seq } => {
            crate::audit::export::write_export(db, *since_seq, out).map_err(unreadable)?;
            Ok(ExitCode::Ok)
        }
        AuditCommand::InitKey => {
            cmd_init_key(key_file, out)?;
            Ok(ExitCode::Ok)
        }
        AuditCommand::Witnesses { .. } => Err(CliError::with_status(
            EXIT_UNREADABLE,
            "`audit witnesses` needs agent.toml ([witness]): run it through `op-agent`",
        )),
    }
}

impl AuditCommand {
    /// `--json` for the subcommands that have it (`verify`, `log`, `witnesses`): what the
    /// global `--output-format json|json-pretty` asks for. The others print their one format
    /// (`head`: `SEQ:HASH`, `export`: JSON lines already).
    pub fn with_json(mut self, on: bool) -> AuditCommand {
        match &mut self {
            AuditCommand::Verify { json, .. }
            | AuditCommand::Log { json, .. }
            | AuditCommand::Witnesses { json } => *json |= on,
            _ => {}
        }
        self
    }
}

/// Runs `cmd` with the configuration `cfg`: `verify --witnesses` (or `--peer-export`) and
/// `witnesses` through [`super::audit_witness`], every other subcommand through [`run`]
/// with `[audit] database` and the checkpoint key file of `cfg`.
///
/// # Errors
/// As [`run`].
pub fn run_config(
    cmd: &AuditCommand,
    cfg: &crate::config::AgentConfig,
    out: &mut dyn Write,
) -> CommandResult {
    match cmd {
        AuditCommand::Verify {
            witnesses,
            peer_exports,
            ..
        } if *witnesses || !peer_exports.is_empty() => super::audit_witness::verify(cmd, cfg, out),
        AuditCommand::Witnesses { json } => super::audit_witness::list(*json, cfg, out),
        _ => run(cmd, &cfg.toml.audit.database, &cfg.audit_key_file(), out),
    }
}

/// True when the database `db` does not exist: a host where op-agent never ran a hook (a
/// fresh install). `log` and `head` then print an empty log, `export` a header without rows, and `verify` without anchors
/// an intact empty one; a database that exists but cannot be read is still an error.
fn fresh_install(db: &Path) -> bool {
    matches!(db.symlink_metadata(), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
}

/// The key's epoch when the database `db` does not exist although the checkpoint key at
/// `key` has advanced past epoch 0 (each checkpoint advances it): not a fresh install, a log
/// that was there and is gone.
fn sealed_but_missing(db: &Path, key: &Path) -> Option<u64> {
    if !fresh_install(db) {
        return None;
    }
    match crate::audit::read_key_file(key) {
        Ok((epoch, _)) if epoch > 0 => Some(epoch),
        _ => None,
    }
}

/// `e` as the error of an `audit` command: status [`EXIT_UNREADABLE`], `e` as the message
/// and the source.
fn unreadable<E: std::error::Error + Send + Sync + 'static>(e: E) -> CliError {
    CliError::with_status(EXIT_UNREADABLE, e.to_string()).caused_by(e)
}

/// The initial (epoch 0) checkpoint key from the file `key` (`verify --key-file`).
///
/// # Errors
/// The file cannot be read, or holds a later epoch's key.
pub(super) fn initial_key(key: &Path) -> Result<[u8; 32], String> {
    match crate::audit::read_key_file(key) {
        Ok((0, k)) => Ok(k),
        Ok((e, _)) => Err(format!("{} holds the key of epoch {e}; verify needs the INITIAL key (epoch 0) printed by init-key", key.display())),
        Err(e) => Err(e.to_string()),
    }
}

fn cmd_verify(
    anchors: &[Head],
    key: Option<&Path>,
    json: bool,
    file: Option<&Path>,
    db: &Path,
    out: &mut dyn Write,
) -> CommandResult {
    let unreadable = |msg: String, out: &mut dyn Write| {
        if json {
            let _ = writeln!(
                out,
                "{}",
                serde_json::json!({"status": "unreadable", "error": msg})
            );
        }
        Err(CliError::with_status(
            EXIT_UNREADABLE,
            format!("cannot read: {msg}"),
        ))
    };
    let mut opts = VerifyOptions {
        anchors: anchors.to_vec(),
        initial_key: None,
    };
    if let Some(k) = key {
        match initial_key(k) {
            Ok(key) => opts.initial_key = Some(key),
            Err(e) => return unreadable(e, out),
        }
    }
    let res = match file {
        Some(f) => match File::open(f) {
            Ok(h) => {
                verify::verify_export(&mut BufReader::new(h), f, &opts).map_err(|e| e.to_string())
            }
            Err(e) => Err(format!("cannot open export {}: {e}", f.display())),
        },
        None => verify::verify_db(db, &opts).map_err(|e| e.to_string()),
    };
    let rep = match res {
        Ok(r) => r,
        Err(m) => return unreadable(m, out),
    };
    let code = if rep.tamper.is_some() {
        ExitCode::Failed
    } else {
        ExitCode::Ok
    };
    let _ = if json {
        writeln!(out, "{}", report_json(&rep))
    } else {
        writeln!(out, "{}", report_text(&rep))
    };
    Ok(code)
}

/// The JSON form of a verification report (`status` `intact` or `tampered`).
pub fn report_json(rep: &VerifyReport) -> serde_json::Value {
    let tamper = rep.tamper.as_ref().map(|t| {
        serde_json::json!({
            "class": t.class.as_str(),
            "seq": t.seq,
            "message": t.message,
            "last_good": t.last_good.map(|h| h.to_string()),
        })
    });
    serde_json::json!({
        "status": if rep.tamper.is_some() { "tampered" } else { "intact" },
        "rows": rep.rows,
        "head": rep.head.map(|h| h.to_string()),
        "checkpoints": rep.checkpoints,
        "checkpoints_keyed": rep.checkpoints_keyed,
        "unsealed_rows": rep.unsealed_rows,
        "anchors_matched": rep.anchors_matched,
        "tamper": tamper,
        "clock_backwards": {
            "rows": rep.clock_backwards.rows,
            "first_seq": rep.clock_backwards.first.map(|f| f.0),
            "max_behind_ms": rep.clock_backwards.max_behind_ms,
        },
    })
}

/// The warning about rows written under a clock set back, when there are any: `; WARNING
/// clock: …` ([`VerifyReport::clock_backwards`]).
fn clock_text(rep: &VerifyReport) -> String {
    let c = &rep.clock_backwards;
    match c.first {
        Some((seq, behind)) => format!(
            "; WARNING clock: {} rows have a time more than {} s before an earlier row's (first at seq {seq}, {} s back; at most {} s back): the clock was set back, not tampering; select by seq with `audit log --from-seq`",
            c.rows,
            verify::CLOCK_TOLERANCE_MS / 1000,
            behind / 1000,
            c.max_behind_ms / 1000
        ),
        None => String::new(),
    }
}

/// The one-line text form of a verification report.
pub fn report_text(rep: &VerifyReport) -> String {
    match &rep.tamper {
        Some(t) => format!(
            "TAMPERED: {} at seq {}: {}; last good: {}",
            t.class.as_str(),
            t.seq,
            t.message,
            t.last_good.map(|h| h.to_string()).unwrap_or_else(|| "none".into())
        ),
        None => format!(
            "intact: {} rows, head {}, {} checkpoints ({}), {} rows after the last checkpoint, {} anchors matched",
            rep.rows,
            rep.head.map(|h| h.to_string()).unwrap_or_else(|| "empty".into()),
            rep.checkpoints,
            if rep.checkpoints_keyed { "HMAC verified" } else { "HMAC not checked: no --key-file" },
            rep.unsealed_rows,
            rep.anchors_matched
        ) + &clock_text(rep),
    }
}

fn cmd_log(
    db: &Path,
    vmid: Option<u32>,
    since: Option<&str>,
    (from_seq, to_seq): (Option<i64>, Option<i64>),
    json: bool,
    filter: &super::audit_filter::LogFilter,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let since_ms = match since {
        Some(s) => Some(
            super::audit_filter::time_arg(s)
                .map_err(|e| CliError::new(ExitCode::Usage, format!("--since {s:?}: {e}")))?,
        ),
        None => None,
    };
    let r = reader::open(db).map_err(unreadable)?;
    let rows = Rows::Matching {
        vmid,
        since_ms,
        from_seq,
        to_seq,
    };
    let mut tail = super::audit_filter::Tail::new(filter.limit);
    reader::for_each_row(&r.conn, db, rows, &mut |row| {
        if !filter.keeps(row) {
            return Ok(());
        }
        let line = if json {
            serde_json::to_string(row)?
        } else {
            format!(
                "{} {} {} {} {} {} {} {} {}",
                row.seq,
                filter.shown_time(row.ts),
                row.host,
                row.vmid,
                row.phase,
                row.run_id,
                row.step,
                row.outcome,
                row.detail
            )
        };
        match tail.push(line) {
            Some(l) => writeln!(out, "{l}").map_err(ReadError::from),
            None => Ok(()),
        }
    })
    .map_err(unreadable)?;
    for l in tail.finish() {
        writeln!(out, "{l}").map_err(unreadable)?;
    }
    Ok(())
}

fn cmd_head(db: &Path, out: &mut dyn Write) -> Result<(), ReadError> {
    let r = reader::open(db)?;
    let h = reader::read_head(&r.conn, db)?;
    writeln!(
        out,
        "{}",
        h.map(|h| h.to_string()).unwrap_or_else(|| "empty".into())
    )?;
    Ok(())
}

fn cmd_init_key(key_file: &Path, out: &mut dyn Write) -> Result<(), CliError> {
    let k = crate::audit::init_key(key_file).map_err(unreadable)?;
    writeln!(
        out,
        "created {} (epoch 0, mode 0600)\n\
         initial audit key; store it OFF this host, `op-agent audit verify --key-file FILE` needs it:\n{}",
        key_file.display(),
        encoding::hex(&k)
    )
    .map_err(unreadable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_warning_reads_as_one_sentence() {
        let rep = VerifyReport {
            rows: 3,
            head: None,
            checkpoints: 0,
            checkpoints_keyed: false,
            unsealed_rows: 0,
            anchors_matched: 0,
            tamper: None,
            clock_backwards: verify::ClockWarnings {
                rows: 2,
                first: Some((7, 3_600_000)),
                max_behind_ms: 7_200_000,
            },
        };
        let t = clock_text(&rep);
        assert!(
            t.starts_with("; WARNING clock: 2 rows have a time more than 60 s before an earlier row's (first at seq 7, 3600 s back; at most 7200 s back): the clock was set back, not tampering"),
            "{t}"
        );
        assert!(!t.contains("  "), "{t}");
    }
}
