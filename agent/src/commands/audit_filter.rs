//! The row filters and display options of `op-agent audit log` besides `--vmid` and
//! `--since`: `-n/--limit`, `--until`, `--run`, `--phase`, `--outcome`, `--utc`. Applied to
//! the rows the reader selects, in `seq` order; `--limit` keeps the last N (as `journalctl
//! -n`).

use crate::audit::StoredRow;
use crate::time::{format_local_ms, format_time_ms, parse_time_ms};
use std::collections::VecDeque;

/// `--since`/`--until` values: what [`parse_time_ms`] accepts.
pub const TIME_FORMS: &str =
    "YYYY-MM-DD, YYYY-MM-DDTHH:MM[:SS] (local time; Z or +HH:MM for another zone) or @UNIX_SECONDS";

/// clap value parser of a time argument: ms since the Unix epoch.
///
/// # Errors
/// The accepted forms (a usage error, exit 64).
pub fn time_arg(s: &str) -> Result<i64, String> {
    parse_time_ms(s).ok_or_else(|| format!("expected {TIME_FORMS}"))
}

/// The filters of `audit log` (clap flattens them into its arguments).
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct LogFilter {
    /// Only the last N matching rows.
    #[arg(short = 'n', long, value_name = "N")]
    pub limit: Option<usize>,
    /// Only rows before TIME (same forms as --since).
    #[arg(long, value_name = "TIME", value_parser = time_arg)]
    pub until: Option<i64>,
    /// Only rows of this run (its run_id, or a prefix of it).
    #[arg(long, value_name = "RUN_ID")]
    pub run: Option<String>,
    /// Only rows of this phase (`pre-start`, `post-start`, `apply`, `watch`, ...).
    #[arg(long, value_name = "PHASE")]
    pub phase: Option<String>,
    /// Only rows with this outcome.
    #[arg(long, value_name = "OUTCOME", value_parser = ["intent", "ok", "failed", "skipped"])]
    pub outcome: Option<String>,
    /// Print times in UTC (default: the host's local time, with its offset).
    #[arg(long)]
    pub utc: bool,
}

impl LogFilter {
    /// True when `row` passes every filter but `--limit`.
    pub fn keeps(&self, row: &StoredRow) -> bool {
        self.until.is_none_or(|u| row.ts < u)
            && self
                .run
                .as_deref()
                .is_none_or(|r| row.run_id.starts_with(r))
            && self.phase.as_deref().is_none_or(|p| row.phase == p)
            && self.outcome.as_deref().is_none_or(|o| row.outcome == o)
    }

    /// The time of `row` as `audit log` prints it.
    pub fn shown_time(&self, ts_ms: i64) -> String {
        if self.utc {
            format_time_ms(ts_ms)
        } else {
            format_local_ms(ts_ms)
        }
    }
}

/// The lines to print, honouring `--limit` (the last N lines pushed).
#[derive(Debug, Default)]
pub struct Tail {
    limit: Option<usize>,
    kept: VecDeque<String>,
}

impl Tail {
    /// An empty tail for `limit` (`None`: every line is returned at once by [`Tail::push`]).
    pub fn new(limit: Option<usize>) -> Tail {
        Tail {
            limit,
            kept: VecDeque::new(),
        }
    }

    /// Adds `line`; returns it when it can be printed now (no limit).
    pub fn push(&mut self, line: String) -> Option<String> {
        let Some(n) = self.limit else {
            return Some(line);
        };
        if n == 0 {
            return None;
        }
        if self.kept.len() == n {
            self.kept.pop_front();
        }
        self.kept.push_back(line);
        None
    }

    /// The lines kept for the end, in order.
    pub fn finish(self) -> impl Iterator<Item = String> {
        self.kept.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_n() {
        let mut t = Tail::new(Some(2));
        for l in ["a", "b", "c"] {
            assert_eq!(t.push(l.into()), None);
        }
        assert_eq!(t.finish().collect::<Vec<_>>(), ["b", "c"]);
        let mut t = Tail::new(None);
        assert_eq!(t.push("a".into()).as_deref(), Some("a"));
    }

    #[test]
    fn filters() {
        let row = StoredRow {
            ts: 1000,
            phase: "post-start".into(),
            run_id: "r-abc".into(),
            outcome: "failed".into(),
            ..StoredRow::default()
        };
        let f = |f: LogFilter| f.keeps(&row);
        assert!(f(LogFilter::default()));
        assert!(f(LogFilter {
            until: Some(1001),
            ..Default::default()
        }));
        assert!(!f(LogFilter {
            until: Some(1000),
            ..Default::default()
        }));
        assert!(f(LogFilter {
            run: Some("r-a".into()),
            ..Default::default()
        }));
        assert!(!f(LogFilter {
            phase: Some("pre-start".into()),
            ..Default::default()
        }));
        assert!(!f(LogFilter {
            outcome: Some("ok".into()),
            ..Default::default()
        }));
        assert_eq!(
            time_arg("2026-02-30").unwrap_err(),
            format!("expected {TIME_FORMS}")
        );
    }
}
