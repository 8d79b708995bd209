//! Logging: RFC 3164 messages to the local syslog unix socket (`/dev/log`, which journald
//! provides on Proxmox hosts) through the `syslog` crate, never its silent TCP/UDP fallback.
//! When there is no socket, or a send fails twice, messages at or above a threshold go to
//! stderr instead. A failed send reconnects once, so a restarted syslog daemon is picked up.

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
pub const SOCKET_ENV: &str = "OP_AGENT_SYSLOG_SOCKET";

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

/// Installs the logger. `ident` is the syslog tag (`op-agent`); `stderr_level` is the least
/// severe level written to stderr when syslog is unreachable (`Warn` for hooks, whose stderr is
/// the PVE task log; `Info` for `watch`, whose stderr goes to the journal). `verbose` lowers the
/// global level to `Debug`. Calling it twice is harmless.
pub fn init(ident: &str, stderr_level: log::LevelFilter, verbose: bool) {
    let logger = SyslogLogger {
        ident: ident.to_string(),
        stderr_level,
        conn: Mutex::new(connect(ident)),
        last_try: Mutex::new(std::time::Instant::now()),
    };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(if verbose {
            log::LevelFilter::Debug
        } else {
            log::LevelFilter::Info
        });
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
