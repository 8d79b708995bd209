//! Logging: to the systemd journal in its native protocol when its socket
//! ([`JOURNAL_SOCKET`]) exists, through the `systemd-journal-logger` crate, with the
//! structured fields of each record (`VMID=`, `PHASE=`, `RUN_ID=`, `STEP=`, `OUTCOME=`,
//! `MESSAGE_ID=` of the [`MSG_STEP`]/[`MSG_STEP_FAILED`]/[`MSG_INTENT`]/[`MSG_AUDIT_HEAD`]
//! events, described in debian/op-agent.catalog) and `SYSLOG_IDENTIFIER=op-agent`, so
//! `journalctl -t op-agent VMID=100` selects one container's lines.
//!
//! Where journald is absent (or `OP_AGENT_SYSLOG_SOCKET` names a syslog socket): RFC 3164
//! messages to the local syslog unix socket (`/dev/log`) through the `syslog` crate, never
//! its silent TCP/UDP fallback. When there is no socket, or a send fails twice, messages at
//! or above a threshold go to stderr instead. A failed send reconnects once, so a restarted
//! syslog daemon is picked up.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use syslog::{Facility, Formatter3164, Logger, LoggerBackend};

/// Socket paths tried in order (the `syslog` crate's unix list, minus directories).
const SOCKETS: [&str; 3] = ["/dev/log", "/var/run/syslog", "/var/run/log"];

/// Log target of per-step records: they go to syslog only, never to the stderr fallback,
/// because a hook's stderr is the PVE task log and carries exactly one line per failure.
pub const STEP_TARGET: &str = "op_agent::step";

struct SyslogLogger {
    ident: String,
    stderr_level: log::LevelFilter,
    conn: Mutex<Option<Logger<LoggerBackend, Formatter3164>>>,
    /// When the last (re)connect was tried: at most one try per second, so a host without a
    /// syslog socket does not pay three failed connects per message.
    last_try: Mutex<std::time::Instant>,
}

/// Environment variable naming another syslog socket (tests capture the anchor lines with it).
/// When set, syslog is used even where journald runs.
pub const SOCKET_ENV: &str = "OP_AGENT_SYSLOG_SOCKET";

/// journald's native-protocol socket (systemd `sd_journal_sendv`).
pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// `MESSAGE_ID` of a step's outcome row (ok or skipped).
pub const MSG_STEP: &str = "5a59a903404540328df97b97e75c57e3";
/// `MESSAGE_ID` of a failed step.
pub const MSG_STEP_FAILED: &str = "a57220c29da94b6db6db0ad1261a5901";
/// `MESSAGE_ID` of a run's intent row (the plan, written before anything changes).
pub const MSG_INTENT: &str = "8556b59fa75b4e68b5a99cf94a38fba1";
/// `MESSAGE_ID` of the audit chain head logged after a run (the external anchor).
pub const MSG_AUDIT_HEAD: &str = "f333f962d9d548bc9cd947c7b62b724a";

/// Records to the journal; a record the journal did not take goes to stderr when at or
/// above `stderr_level` (never step records, as with syslog).
struct JournalLogger {
    journal: systemd_journal_logger::JournalLog,
    ident: String,
    stderr_level: log::LevelFilter,
}

impl log::Log for JournalLogger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        if self.journal.journal_send(record).is_err()
            && record.level() <= self.stderr_level
            && record.target() != STEP_TARGET
        {
            let _ = writeln!(std::io::stderr(), "{}: {}", self.ident, record.args());
        }
    }

    fn flush(&self) {}
}

/// The journal logger, when journald's socket exists and no syslog socket is asked for.
fn journal(ident: &str, stderr_level: log::LevelFilter) -> Option<JournalLogger> {
    if std::env::var_os(SOCKET_ENV).is_some() || !std::path::Path::new(JOURNAL_SOCKET).exists() {
        return None;
    }
    let journal = systemd_journal_logger::JournalLog::empty()
        .ok()?
        .with_syslog_identifier(ident.to_string());
    Some(JournalLogger {
        journal,
        ident: ident.to_string(),
        stderr_level,
    })
}

fn connect(ident: &str) -> Option<Logger<LoggerBackend, Formatter3164>> {
    let formatter = Formatter3164 {
        facility: Facility::LOG_DAEMON,
        hostname: None,
        process: ident.to_string(),
        pid: std::process::id(),
    };
    let custom = std::env::var_os(SOCKET_ENV).map(PathBuf::from);
    custom
        .into_iter()
        .chain(SOCKETS.iter().map(PathBuf::from))
        .filter(|p| !p.is_dir())
        .find_map(|p| syslog::unix_custom(formatter.clone(), p).ok())
        .inspect(|l| {
            // A slow or stuck syslog daemon must not stall a hook: each send may block at most
            // SEND_TIMEOUT, then the message falls back (and the next one reconnects).
            match &l.backend {
                LoggerBackend::Unix(s) => {
                    let _ = s.set_write_timeout(Some(SEND_TIMEOUT));
                }
                LoggerBackend::UnixStream(w) => {
                    let _ = w.get_ref().set_write_timeout(Some(SEND_TIMEOUT));
                }
                _ => {}
            }
        })
}

/// Longest a single syslog send may block.
const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(20);

fn send(l: &mut Logger<LoggerBackend, Formatter3164>, level: log::Level, msg: &str) -> bool {
    let r = match level {
        log::Level::Error => l.err(msg),
        log::Level::Warn => l.warning(msg),
        log::Level::Info => l.info(msg),
        log::Level::Debug | log::Level::Trace => l.debug(msg),
    };
    r.is_ok()
}

impl log::Log for SyslogLogger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let msg = record.args().to_string();
        let mut delivered = false;
        if let Ok(mut guard) = self.conn.lock() {
            if let Some(l) = guard.as_mut() {
                delivered = send(l, record.level(), &msg);
            }
            let retry = self
                .last_try
                .lock()
                .map(|mut t| {
                    let due = t.elapsed() >= std::time::Duration::from_secs(1);
                    if due {
                        *t = std::time::Instant::now();
                    }
                    due
                })
                .unwrap_or(false);
            if !delivered && (guard.is_some() || retry) {
                // The daemon may have re-created its socket: reconnect once.
                *guard = connect(&self.ident);
                if let Some(l) = guard.as_mut() {
                    delivered = send(l, record.level(), &msg);
                }
            }
        }
        if !delivered && record.level() <= self.stderr_level && record.target() != STEP_TARGET {
            let _ = writeln!(std::io::stderr(), "{}: {}", self.ident, msg);
        }
    }

    fn flush(&self) {}
}

/// Installs the logger: the journal where it runs, else syslog (module doc). `ident` is the
/// syslog tag and `SYSLOG_IDENTIFIER` (`op-agent`); `stderr_level` is the least
/// severe level written to stderr when syslog is unreachable (`Warn` for hooks, whose stderr is
/// the PVE task log; `Info` for `watch`, whose stderr goes to the journal). `verbose` lowers the
/// global level to `Debug`. Calling it twice is harmless.
pub fn init(ident: &str, stderr_level: log::LevelFilter, verbose: bool) {
    let logger: Box<dyn log::Log> = match journal(ident, stderr_level) {
        Some(j) => Box::new(j),
        None => Box::new(SyslogLogger {
            ident: ident.to_string(),
            stderr_level,
            conn: Mutex::new(connect(ident)),
            last_try: Mutex::new(std::time::Instant::now()),
        }),
    };
    if log::set_boxed_logger(logger).is_ok() {
        log::set_max_level(if verbose {
            log::LevelFilter::Debug
        } else {
            log::LevelFilter::Info
        });
    }
}

/// Records of a dry run: nothing reaches syslog or the journal (a dry run changes nothing,
/// and the log is the host's record of what happened); records at or above `stderr_level`,
/// except step records, go to stderr, as on a host without syslog.
struct QuietLogger {
    ident: String,
    stderr_level: log::LevelFilter,
}

impl log::Log for QuietLogger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if record.level() <= self.stderr_level && record.target() != STEP_TARGET {
            let _ = writeln!(std::io::stderr(), "{}: {}", self.ident, record.args());
        }
    }

    fn flush(&self) {}
}

/// Installs the logger of a dry run (`hook --dry-run`, `apply --dry-run`, `gc --dry-run`):
/// nothing to syslog or the journal; warnings and errors to stderr (`Debug` too with
/// `verbose`). Calling it after [`init`] is harmless (the first logger stays).
pub fn init_quiet(ident: &str, verbose: bool) {
    let stderr_level = if verbose {
        log::LevelFilter::Debug
    } else {
        log::LevelFilter::Warn
    };
    let logger = QuietLogger {
        ident: ident.to_string(),
        stderr_level,
    };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(stderr_level);
    }
}

/// Writes `line` and a newline to stdout, ignoring a failure: a hook whose reader closed the
/// pipe (`EPIPE`; SIGPIPE is ignored for hooks) still finishes its run with its own exit code,
/// and the audit row and syslog record the outcome. `println!` would panic instead.
pub fn out_line(line: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// [`out_line`] for stderr (`eprintln!` panics on a closed stderr).
pub fn err_line(line: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// `println!` that ignores a closed stdout ([`out_line`]).
#[macro_export]
macro_rules! outln {
    ($($t:tt)*) => { $crate::logging::out_line(format_args!($($t)*)) };
}

/// `eprintln!` that ignores a closed stderr ([`err_line`]).
#[macro_export]
macro_rules! errln {
    ($($t:tt)*) => { $crate::logging::err_line(format_args!($($t)*)) };
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_message_id_is_in_the_catalog() {
        let catalog = include_str!("../../debian/op-agent.catalog");
        for id in [
            super::MSG_STEP,
            super::MSG_STEP_FAILED,
            super::MSG_INTENT,
            super::MSG_AUDIT_HEAD,
        ] {
            assert_eq!(id.len(), 32);
            assert!(
                catalog.contains(&format!("-- {id}\n")),
                "{id} not in the catalog"
            );
        }
    }
}
