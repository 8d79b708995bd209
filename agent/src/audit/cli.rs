//! `op-agent audit …`: verify, log, head, export, init-key. Results go to `out` (JSON where
//! asked); diagnostics go to stderr. The binary wires [`AuditCommand`] under `audit` and calls
//! [`run`], whose return value is the process exit code.

use std::fs::File;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};

use rusqlite::Connection;

use super::verify::{self, StoredRow, VerifyOptions, VerifyReport, COLUMNS};
use super::{encoding, Head};

/// Exit code: the chain is intact / the command succeeded.
pub const EXIT_OK: i32 = 0;
/// Exit code of `verify`: tampering found.
pub const EXIT_TAMPERED: i32 = 1;
/// Exit code: the input cannot be read (missing, not a database, bad export, bad arguments).
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
    },
    /// Print rows in seq order, one per line (or JSON lines).
    Log {
        /// Only rows of this guest.
        #[arg(long, value_name = "N")]
        vmid: Option<u32>,
        /// Only rows at or after TIME (UTC): `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM[:SS][Z]`, or
        /// `@UNIX_SECONDS`.
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// One JSON object per row.
        #[arg(long)]
        json: bool,
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
/// normally `/etc/op-agent/audit.key`), writing results to `out`. Returns the exit code:
/// [`EXIT_OK`], [`EXIT_TAMPERED`] (verify only) or [`EXIT_UNREADABLE`].
pub fn run(cmd: &AuditCommand, db: &Path, key_file: &Path, out: &mut dyn Write) -> i32 {
    let r = match cmd {
        AuditCommand::Verify {
            anchors,
            key_file,
            json,
            file,
        } => {
            return cmd_verify(
                anchors,
                key_file.as_deref(),
                *json,
                file.as_deref(),
                db,
                out,
            )
        }
        AuditCommand::Log { vmid, since, json } => cmd_log(db, *vmid, since.as_deref(), *json, out),
        AuditCommand::Head => cmd_head(db, out),
        AuditCommand::Export { since_seq } => cmd_export(db, *since_seq, out),
        AuditCommand::InitKey => cmd_init_key(key_file, out),
    };
    match r {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("op-agent audit: {e}");
            EXIT_UNREADABLE
        }
    }
}

fn open_ro(db: &Path) -> Result<verify::ReadOnlyDb, String> {
    verify::open_read_only(db)
        .map_err(|e| format!("cannot open audit database {}: {e}", db.display()))
}

fn cmd_verify(
    anchors: &[Head],
    key: Option<&Path>,
    json: bool,
    file: Option<&Path>,
    db: &Path,
    out: &mut dyn Write,
) -> i32 {
    let unreadable = |msg: String, out: &mut dyn Write| {
        if json {
            let _ = writeln!(
                out,
                "{}",
                serde_json::json!({"status": "unreadable", "error": msg})
            );
        }
        eprintln!("op-agent audit verify: cannot read: {msg}");
        EXIT_UNREADABLE
    };
    let mut opts = VerifyOptions {
        anchors: anchors.to_vec(),
        initial_key: None,
    };
    if let Some(k) = key {
        match super::read_key_file(k) {
            Ok((0, key)) => opts.initial_key = Some(key),
            Ok((e, _)) => {
                return unreadable(
                    format!("{} holds the key of epoch {e}; verify needs the INITIAL key (epoch 0) printed by init-key", k.display()),
                    out,
                )
            }
            Err(e) => return unreadable(e.to_string(), out),
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
        EXIT_TAMPERED
    } else {
        EXIT_OK
    };
    let _ = if json {
        writeln!(out, "{}", report_json(&rep))
    } else {
        writeln!(out, "{}", report_text(&rep))
    };
    code
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
    })
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
        ),
    }
}

fn cmd_log(
    db: &Path,
    vmid: Option<u32>,
    since: Option<&str>,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), String> {
    let since_ms = match since {
        Some(s) => Some(parse_time_ms(s).ok_or_else(|| {
            format!("--since {s:?}: expected YYYY-MM-DD[THH:MM[:SS]][Z] (UTC) or @UNIX_SECONDS")
        })?),
        None => None,
    };
    let r = open_ro(db)?;
    let c = &r.conn;
    let mut st = c
        .prepare(&format!(
            "SELECT {COLUMNS} FROM audit WHERE (?1 IS NULL OR vmid = ?1) AND (?2 IS NULL OR ts >= ?2) ORDER BY seq"
        ))
        .map_err(|e| format!("{}: {e}", db.display()))?;
    let mut rows = st
        .query(rusqlite::params![vmid, since_ms])
        .map_err(|e| format!("{}: {e}", db.display()))?;
    while let Some(r) = rows.next().map_err(|e| format!("{}: {e}", db.display()))? {
        let row = verify::decode_row(r)
            .map_err(|c| format!("{}: column {c} unreadable", db.display()))?;
        let line = if json {
            serde_json::to_string(&row).map_err(|e| e.to_string())?
        } else {
            format!(
                "{} {} {} {} {} {} {} {} {}",
                row.seq,
                format_time_ms(row.ts),
                row.host,
                row.vmid,
                row.phase,
                row.run_id,
                row.step,
                row.outcome,
                row.detail
            )
        };
        writeln!(out, "{line}").map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn read_head(c: &Connection, db: &Path) -> Result<Option<Head>, String> {
    use rusqlite::OptionalExtension;
    let r: Option<(i64, Vec<u8>)> = c
        .query_row(
            "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(|e| format!("{}: {e}", db.display()))?;
    match r {
        None => Ok(None),
        Some((seq, h)) => match <[u8; 32]>::try_from(h.as_slice()) {
            Ok(hash) => Ok(Some(Head { seq, hash })),
            Err(_) => Err(format!(
                "{}: head row seq {seq} has a hash of {} bytes",
                db.display(),
                h.len()
            )),
        },
    }
}

fn cmd_head(db: &Path, out: &mut dyn Write) -> Result<(), String> {
    let r = open_ro(db)?;
    let h = read_head(&r.conn, db)?;
    writeln!(
        out,
        "{}",
        h.map(|h| h.to_string()).unwrap_or_else(|| "empty".into())
    )
    .map_err(|e| e.to_string())
}

fn cmd_export(db: &Path, since_seq: i64, out: &mut dyn Write) -> Result<(), String> {
    let r = open_ro(db)?;
    let c = &r.conn;
    let e = |e: rusqlite::Error| format!("{}: {e}", db.display());
    c.execute_batch("BEGIN").map_err(e)?;
    let head = read_head(c, db)?;
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    let hdr = verify::ExportHeader {
        format: verify::EXPORT_FORMAT.to_string(),
        since_seq,
        head: head.map(|h| h.to_string()),
        host,
    };
    writeln!(
        out,
        "{}",
        serde_json::to_string(&hdr).map_err(|e| e.to_string())?
    )
    .map_err(|e| e.to_string())?;
    let mut st = c
        .prepare(&format!(
            "SELECT {COLUMNS} FROM audit WHERE seq > ?1 ORDER BY seq"
        ))
        .map_err(e)?;
    let mut rows = st.query([since_seq]).map_err(e)?;
    while let Some(r) = rows.next().map_err(e)? {
        let row: StoredRow = verify::decode_row(r)
            .map_err(|c| format!("{}: column {c} unreadable", db.display()))?;
        writeln!(
            out,
            "{}",
            serde_json::to_string(&row).map_err(|e| e.to_string())?
        )
        .map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn cmd_init_key(key_file: &Path, out: &mut dyn Write) -> Result<(), String> {
    let k = super::init_key(key_file).map_err(|e| e.to_string())?;
    writeln!(
        out,
        "created {} (epoch 0, mode 0600)\n\
         initial audit key; store it OFF this host, `op-agent audit verify --key-file FILE` needs it:\n{}",
        key_file.display(),
        encoding::hex(&k)
    )
    .map_err(|e| e.to_string())
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// Parses `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM[:SS][Z]` (also with a space for `T`), all UTC, or
/// `@UNIX_SECONDS`, into ms since the Unix epoch.
pub fn parse_time_ms(s: &str) -> Option<i64> {
    if let Some(n) = s.strip_prefix('@') {
        return n.parse::<i64>().ok()?.checked_mul(1000);
    }
    let s = s.strip_suffix('Z').unwrap_or(s);
    let (date, time) = match s.split_once(['T', ' ']) {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let mut dp = date.split('-');
    let (y, m, d): (i64, i64, i64) = (
        dp.next()?.parse().ok()?,
        dp.next()?.parse().ok()?,
        dp.next()?.parse().ok()?,
    );
    if dp.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let mut secs = 0;
    if let Some(t) = time {
        let mut tp = t.split(':');
        let h: i64 = tp.next()?.parse().ok()?;
        let mi: i64 = tp.next()?.parse().ok()?;
        let se: i64 = match tp.next() {
            Some(x) => x.parse().ok()?,
            None => 0,
        };
        if tp.next().is_some() || h > 23 || mi > 59 || se > 60 || h < 0 || mi < 0 || se < 0 {
            return None;
        }
        secs = h * 3600 + mi * 60 + se;
    }
    Some((days_from_civil(y, m, d) * 86400 + secs) * 1000)
}

/// Formats ms since the Unix epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC).
pub fn format_time_ms(ms: i64) -> String {
    let (days, rem) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // civil_from_days (H. Hinnant)
    let z = days + 719468;
    let era = if z >= 0 { z } else { z - 146096 } / 146097;
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_roundtrip() {
        let ms = parse_time_ms("2026-11-30T21:00:55Z").unwrap();
        assert_eq!(format_time_ms(ms), "2026-11-30T21:00:55.000Z");
        assert_eq!(parse_time_ms("1970-01-01"), Some(0));
        assert_eq!(parse_time_ms("@86400"), Some(86_400_000));
        assert_eq!(parse_time_ms("2024-02-29 12:00"), Some(1_709_208_000_000));
        assert_eq!(parse_time_ms("2024-13-01"), None);
        assert_eq!(parse_time_ms("yesterday"), None);
    }

    #[test]
    fn head_parses_as_anchor() {
        let h = Head {
            seq: 42,
            hash: [0xab; 32],
        };
        assert_eq!(h.to_string().parse::<Head>().unwrap(), h);
        assert!("0:ab".parse::<Head>().is_err());
    }
}
