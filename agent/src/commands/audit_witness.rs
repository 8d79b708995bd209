//! `op-agent audit verify --witnesses` and `op-agent audit witnesses` ([`crate::witness`]).
//! Exit codes as `audit verify`: 0 intact, 1 contradicted or tampered, 2 cannot read.

use std::io::Write;
use std::path::PathBuf;

use crate::audit::verify::VerifyOptions;
use crate::audit::{encoding, Head};
use crate::commands::audit::{
    initial_key, report_json, report_text, AuditCommand, EXIT_UNREADABLE,
};
use crate::commands::{CliError, CommandResult};
use crate::config::AgentConfig;
use crate::exit::ExitCode;
use crate::time::format_time_ms;
use crate::witness::check::{self, Claims, Sourced, Subject};
use crate::witness::observe::WitnessRow;
use crate::witness::{head_path, heads_dir, node_name, parse, read_seen_files, read_small};

fn unreadable(json: bool, msg: String, out: &mut dyn Write) -> CommandResult {
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
}

/// `audit verify --witnesses [--peer-export FILE…] [--node NAME --file EXPORT]`.
///
/// # Errors
/// Status [`EXIT_UNREADABLE`] when the subject chain, a peer export or the key cannot be
/// read, a peer export is not intact, or `--node` names another node without `--file`.
pub fn verify(cmd: &AuditCommand, cfg: &AgentConfig, out: &mut dyn Write) -> CommandResult {
    let AuditCommand::Verify {
        anchors,
        key_file,
        json,
        file,
        peer_exports,
        node,
        ..
    } = cmd
    else {
        return Err(CliError::new(ExitCode::Internal, "not a verify command"));
    };
    let json = *json;
    let me = node_name(cfg);
    let subject = node.clone().unwrap_or_else(|| me.clone());
    let db = &cfg.toml.audit.database;
    let mut opts = VerifyOptions {
        anchors: anchors.clone(),
        initial_key: None,
    };
    if let Some(k) = key_file {
        match initial_key(k) {
            Ok(k) => opts.initial_key = Some(k),
            Err(e) => return unreadable(json, e, out),
        }
    }
    let chain = match (file, subject == me) {
        (Some(f), _) => Subject::Export(f),
        (None, true) => Subject::Db(db),
        (None, false) => {
            return unreadable(
                json,
                format!("--node {subject} is another node: give its export (`audit export` there) as --file"),
                out,
            )
        }
    };
    let mut claims = Claims::default();
    for p in peer_exports {
        if let Err(e) = claims.add_export(&subject, p) {
            return unreadable(json, e, out);
        }
    }
    if subject != me {
        if let Err(e) = claims.add_db(&subject, db) {
            return unreadable(json, e, out);
        }
    }
    if peer_exports.is_empty() {
        // No peer's rows at hand: each peer's last witness of the subject and the subject's
        // own head, as pmxcfs holds them.
        let dir = heads_dir(cfg);
        for (by, path, f) in read_seen_files(&dir, &subject) {
            let Some(h) = f.seen.get(&subject) else {
                continue;
            };
            let Ok(head) = format!("{}:{}", h.seq, h.hash).parse::<Head>() else {
                continue;
            };
            claims.heads.push(Sourced {
                row: WitnessRow {
                    node: subject.clone(),
                    by,
                    contradiction: None,
                    head: Some(head),
                    row_seq: 0,
                    row_ts: f.ts,
                    detail: String::new(),
                },
                source: path,
            });
        }
        if subject == me {
            if let Some(s) = own_head_file(cfg, &me) {
                claims.heads.push(s);
            }
        }
    }
    let wr = match check::verify(chain, &claims, &opts) {
        Ok(r) => r,
        Err(e) => return unreadable(json, e, out),
    };
    let code = if wr.report.tamper.is_some() {
        ExitCode::Failed
    } else {
        ExitCode::Ok
    };
    let by = |s: &Sourced| {
        format!(
            "{} (row {} of {})",
            s.row.by,
            s.row.row_seq,
            s.source.display()
        )
    };
    if json {
        let mut v = report_json(&wr.report);
        v["witnesses"] = serde_json::json!({
            "node": subject,
            "witnessed_heads": claims.heads.len(),
            "by": claims.witnesses(),
            "contradicted_seq": wr.contradicted_seq,
            "contradicted_by": wr.contradicted_by.iter().map(|s| serde_json::json!({
                "node": s.row.by, "row_seq": s.row.row_seq,
                "head": s.row.head.map(|h| h.to_string()),
                "source": s.source.display().to_string(),
            })).collect::<Vec<_>>(),
            "contradictions": claims.contradictions.iter().map(|s| contradiction_json(&s.row, &s.source)).collect::<Vec<_>>(),
        });
        let _ = writeln!(out, "{v}");
    } else {
        let mut line = report_text(&wr.report);
        if let Some(seq) = wr.contradicted_seq {
            let names: Vec<String> = wr.contradicted_by.iter().map(by).collect();
            line.push_str(&format!(
                "; node {subject}: first contradicted witnessed seq {seq}, witnessed by {}",
                names.join(", ")
            ));
        } else if claims.heads.is_empty() {
            line.push_str(&format!(
                "; WARNING no witnessed heads of node {subject} found"
            ));
        } else {
            line.push_str(&format!(
                "; node {subject}: {} witnessed heads by {} agree",
                claims.heads.len(),
                claims.witnesses().join(", ")
            ));
        }
        let _ = writeln!(out, "{line}");
        for s in &claims.contradictions {
            let _ = writeln!(
                out,
                "WARNING head-file contradiction about {subject} recorded by {}: {}",
                by(s),
                contradiction_text(&s.row)
            );
        }
    }
    Ok(code)
}

/// This node's own head file as a claim (`by` the file's path), when it parses.
fn own_head_file(cfg: &AgentConfig, me: &str) -> Option<Sourced> {
    let p = head_path(&heads_dir(cfg), me);
    let (f, h) = parse(me, &read_small(&p).ok()?).ok()?;
    Some(Sourced {
        row: WitnessRow {
            node: me.to_string(),
            by: "pmxcfs".to_string(),
            contradiction: None,
            head: Some(h),
            row_seq: 0,
            row_ts: f.ts,
            detail: String::new(),
        },
        source: p,
    })
}

fn contradiction_text(w: &WitnessRow) -> String {
    let d: serde_json::Value = serde_json::from_str(&w.detail).unwrap_or_default();
    format!(
        "{} at {}: {}",
        w.contradiction.as_deref().unwrap_or("?"),
        format_time_ms(w.row_ts),
        d["reason"].as_str().unwrap_or_default()
    )
}

fn contradiction_json(w: &WitnessRow, source: &std::path::Path) -> serde_json::Value {
    let d: serde_json::Value = serde_json::from_str(&w.detail).unwrap_or_default();
    serde_json::json!({
        "node": w.node, "by": w.by, "kind": w.contradiction, "row_seq": w.row_seq,
        "ts": format_time_ms(w.row_ts), "head": w.head.map(|h| h.to_string()),
        "reason": d["reason"], "source": source.display().to_string(),
    })
}

fn short(h: Head) -> String {
    let hex = encoding::hex(&h.hash);
    format!("{}:{}", h.seq, &hex[..16])
}

/// `audit witnesses [--json]`: per node named in this node's witness rows, the last head
/// witnessed and when, and the contradictions recorded.
///
/// # Errors
/// Status [`EXIT_UNREADABLE`] when the database cannot be read.
pub fn list(json: bool, cfg: &AgentConfig, out: &mut dyn Write) -> CommandResult {
    let db: PathBuf = cfg.toml.audit.database.clone();
    if !db.exists() {
        return Ok(ExitCode::Ok);
    }
    let peers = check::last_seen(&db).map_err(|e| CliError::with_status(EXIT_UNREADABLE, e))?;
    for p in peers {
        let line = if json {
            serde_json::json!({
                "node": p.node,
                "head": p.last.as_ref().and_then(|w| w.head).map(|h| h.to_string()),
                "seen": p.last.as_ref().map(|w| format_time_ms(w.row_ts)),
                "row_seq": p.last.as_ref().map(|w| w.row_seq),
                "contradictions": p.contradictions,
                "last_contradiction": p.last_contradiction.as_ref().map(|w| contradiction_json(w, &db)),
            })
            .to_string()
        } else {
            let head = match &p.last {
                Some(w) => format!(
                    "head {} seen {} (row {})",
                    w.head.map(short).unwrap_or_default(),
                    format_time_ms(w.row_ts),
                    w.row_seq
                ),
                None => "no head witnessed".to_string(),
            };
            let c = match &p.last_contradiction {
                Some(w) => format!(
                    "; {} contradictions, last: {}",
                    p.contradictions,
                    contradiction_text(w)
                ),
                None => String::new(),
            };
            format!("{} {head}{c}", p.node)
        };
        writeln!(out, "{line}")
            .map_err(|e| CliError::with_status(EXIT_UNREADABLE, e.to_string()))?;
    }
    Ok(ExitCode::Ok)
}
