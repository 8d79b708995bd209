//! The export format: a header line ([`ExportHeader`], `format` [`EXPORT_FORMAT`]), then one
//! [`StoredRow`] JSON object per line in `seq` order. [`write_export`] writes one from the
//! database; [`verify_export`] checks one offline.

use std::io::{BufRead, Write};
use std::path::Path;

use super::error::{ReadError, VerifyError};
use super::verify::{StoredRow, Verifier, VerifyOptions, VerifyReport};
use super::{reader, Head};

/// First line of an export.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportHeader {
    /// Always [`EXPORT_FORMAT`].
    pub format: String,
    /// Rows with `seq > since_seq` follow.
    pub since_seq: i64,
    /// Head of the log when exported (`SEQ:HASH`), `None` for an empty log.
    pub head: Option<String>,
    /// Host name of the exporting machine.
    pub host: String,
}

/// `format` value of an export header.
pub const EXPORT_FORMAT: &str = "op-agent-audit-export/v1";

/// Verifies an export (header line, then one [`StoredRow`] JSON object per line). The header's
/// head acts as an anchor, so a cut file shows as missing rows; rows of a partial export
/// (`since_seq > 0`) start from the first row's `prev_hash` as given.
pub fn verify_export(
    r: &mut dyn BufRead,
    path: &Path,
    opts: &VerifyOptions,
) -> Result<VerifyReport, VerifyError> {
    let xerr = |line: u64, reason: String| VerifyError::Export {
        path: path.to_path_buf(),
        line,
        reason,
    };
    let mut lines = r.lines();
    let first = match lines.next() {
        Some(Ok(l)) => l,
        Some(Err(e)) => return Err(xerr(1, e.to_string())),
        None => return Err(xerr(1, "empty file".into())),
    };
    let hdr: ExportHeader =
        serde_json::from_str(&first).map_err(|e| xerr(1, format!("not an export header: {e}")))?;
    if hdr.format != EXPORT_FORMAT {
        return Err(xerr(
            1,
            format!("format {:?}, expected {EXPORT_FORMAT:?}", hdr.format),
        ));
    }
    let mut o = opts.clone();
    if let Some(h) = &hdr.head {
        let h: Head = h.parse().map_err(|e| xerr(1, format!("{e}")))?;
        o.anchors.push(h);
    }
    let mut ver = Verifier::new(&o, hdr.since_seq);
    for (n, l) in (2u64..).zip(lines) {
        let l = l.map_err(|e| xerr(n, e.to_string()))?;
        if l.is_empty() {
            continue;
        }
        let row: StoredRow =
            serde_json::from_str(&l).map_err(|e| xerr(n, format!("not a row: {e}")))?;
        if !ver.feed(&row, &mut |_| None) {
            break;
        }
    }
    Ok(ver.finish(None))
}

/// Writes the export of a log that has no rows yet (a fresh install, no database): the
/// header alone, with no head. `audit verify --file` reads it as an intact empty log.
///
/// # Errors
/// [`ReadError`]: `out` fails.
pub fn write_empty_export(since_seq: i64, out: &mut dyn Write) -> Result<(), ReadError> {
    write_header(since_seq, None, out)
}

/// The header line: format, `since_seq`, the head (`None` for an empty log) and this host's
/// name.
fn write_header(
    since_seq: i64,
    head: Option<String>,
    out: &mut dyn Write,
) -> Result<(), ReadError> {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    let hdr = ExportHeader {
        format: EXPORT_FORMAT.to_string(),
        since_seq,
        head,
        host,
    };
    writeln!(out, "{}", serde_json::to_string(&hdr)?)?;
    Ok(())
}

/// Writes an export of the database at `db` to `out`: the header (this host's name, the head
/// when exported), then every row with `seq > since_seq`, all read in one read transaction
/// (a consistent snapshot while writers go on).
///
/// # Errors
/// [`ReadError`]: the database cannot be opened or read, a row cannot be decoded, or `out`
/// fails.
pub fn write_export(db: &Path, since_seq: i64, out: &mut dyn Write) -> Result<(), ReadError> {
    let r = reader::open(db)?;
    let c = &r.conn;
    c.execute_batch("BEGIN")
        .map_err(|source| ReadError::Sqlite {
            path: db.to_path_buf(),
            source,
        })?;
    let head = reader::read_head(c, db)?;
    write_header(since_seq, head.map(|h| h.to_string()), out)?;
    reader::for_each_row(c, db, reader::Rows::After(since_seq), &mut |row| {
        writeln!(out, "{}", serde_json::to_string(row)?)?;
        Ok(())
    })
}
