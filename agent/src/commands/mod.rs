//! One module per subcommand besides `hook`: each defines its clap `Args` and a `run` that
//! returns `Ok` with the exit code of a run that went to its end (`check` finding drift or
//! `audit verify` finding tampering still ends with a non-zero code, its finding printed on
//! stdout), or the [`CliError`] that stopped it. [`crate::run`] loads the config for the
//! commands that need one, prints the error once (`op-agent <command>: <message>`) and exits
//! once. `hook` and `watch` print their own lines (their stderr is the PVE task log or the
//! journal).

pub mod apply;
pub mod audit;
pub mod audit_filter;
pub mod audit_witness;
pub mod bash_completion;
pub mod check;
pub mod check_all;
pub mod config_check;
pub mod enroll;
pub mod enroll_multi;
pub mod gc;
pub mod generate;
pub mod import_enroll;
pub mod import_state;
pub mod man_extra;
pub mod mesh;
pub mod metrics;
pub mod query;
pub mod release;
pub mod set;
pub mod status;
pub mod unenroll;
pub mod watch;

use crate::config::ConfigError;
use crate::exit::ExitCode;
use std::fmt;

/// Why a command stopped: the process exit status, the one-line message `op-agent` prints on
/// stderr, and the typed error behind it where there is one ([`std::error::Error::source`]).
#[derive(Debug)]
pub struct CliError {
    status: i32,
    message: String,
    unscoped: bool,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl CliError {
    /// An error with exit code `code` and the message `message` (no source).
    pub fn new(code: ExitCode, message: impl Into<String>) -> CliError {
        CliError::with_status(code.code(), message)
    }

    /// An error with a raw exit status outside [`ExitCode`]: `audit` exits 2 when its input
    /// cannot be read ([`audit::EXIT_UNREADABLE`]).
    pub fn with_status(status: i32, message: impl Into<String>) -> CliError {
        CliError {
            status,
            message: message.into(),
            unscoped: false,
            source: None,
        }
    }

    /// An error with exit code `code` whose message is `source`'s `Display`, kept as the
    /// source.
    pub fn wrap<E>(code: ExitCode, source: E) -> CliError
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        CliError::new(code, source.to_string()).caused_by(source)
    }

    /// Keeps `source` as the typed cause of this error (the message stays as it is).
    pub fn caused_by<E>(mut self, source: E) -> CliError
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        self.source = Some(Box::new(source));
        self
    }

    /// The same error with exit code `code`.
    pub fn with_code(mut self, code: ExitCode) -> CliError {
        self.status = code.code();
        self
    }

    /// The same error, printed as `op-agent: <message>` without the command's name (how
    /// `mesh` and `audit` report an agent.toml they cannot load).
    pub fn unscoped(mut self) -> CliError {
        self.unscoped = true;
        self
    }

    /// The process exit status.
    pub fn status(&self) -> i32 {
        self.status
    }

    /// The message, without the `op-agent <command>: ` prefix.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The line printed on stderr for this error from `command` (its words on the command
    /// line, e.g. `mesh join`): `op-agent <command>: <message>`, or `op-agent: <message>` when
    /// [`CliError::unscoped`].
    pub fn line(&self, command: &str) -> String {
        if self.unscoped || command.is_empty() {
            format!("op-agent: {}", self.message)
        } else {
            format!("op-agent {command}: {}", self.message)
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<ConfigError> for CliError {
    /// agent.toml could not be loaded: [`ConfigError::exit_code`] (77 refused, 78 invalid).
    fn from(e: ConfigError) -> CliError {
        let code = e.exit_code();
        CliError::wrap(code, e)
    }
}

/// What a command returns: `Ok(code)` when it ran to its end, `Err` when it stopped.
pub type CommandResult = Result<ExitCode, CliError>;

/// The process exit status of a command's result: the code of `Ok`, the status of `Err`.
/// Prints nothing.
pub fn exit_status(r: &CommandResult) -> i32 {
    match r {
        Ok(code) => code.code(),
        Err(e) => e.status(),
    }
}

/// Parses a vmid argument (100..999999999); a bad one is [`ExitCode::Usage`] (64).
pub fn vmid_arg(s: &str) -> Result<pve_integration::Vmid, CliError> {
    crate::inspect::parse_vmid(s).map_err(|e| CliError::new(ExitCode::Usage, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_names_the_command_unless_unscoped() {
        let e = CliError::new(ExitCode::Usage, "bad vmid");
        assert_eq!(e.line("check"), "op-agent check: bad vmid");
        assert_eq!(e.status(), 64);
        let e = e.unscoped().with_code(ExitCode::Config);
        assert_eq!(e.line("mesh join"), "op-agent: bad vmid");
        assert_eq!(exit_status(&Err(e)), 78);
        assert_eq!(exit_status(&Ok(ExitCode::Failed)), 1);
        assert_eq!(CliError::with_status(2, "x").status(), 2);
    }

    #[test]
    fn wrap_keeps_the_source() {
        use std::error::Error;
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        let e = CliError::wrap(ExitCode::Failed, io);
        assert_eq!(e.message(), "gone");
        assert_eq!(e.source().map(|s| s.to_string()).as_deref(), Some("gone"));
    }
}
