//! `--output-format text|json|json-pretty`, global to every command (the option and the
//! values of Proxmox's `pvesh`): text for people, JSON on one line for scripts, or indented.

use serde::Serialize;

/// The format a command prints its result in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OutputFormat {
    /// Lines and tables for a terminal (default).
    #[default]
    Text,
    /// One JSON document on one line.
    Json,
    /// One JSON document, indented.
    JsonPretty,
}

impl OutputFormat {
    /// True for `json` and `json-pretty`.
    pub fn is_json(self) -> bool {
        self != OutputFormat::Text
    }

    /// `v` as JSON text in this format (`json-pretty` indented, else one line).
    pub fn render<T: Serialize>(self, v: &T) -> String {
        let r = match self {
            OutputFormat::JsonPretty => serde_json::to_string_pretty(v),
            _ => serde_json::to_string(v),
        };
        r.unwrap_or_else(|e| format!("{{\"error\":{:?}}}", e.to_string()))
    }

    /// Prints `v` as JSON on stdout ([`OutputFormat::render`]).
    pub fn print<T: Serialize>(self, v: &T) {
        println!("{}", self.render(v));
    }
}

/// A line report (`ok <path>`, `ERROR <file>:<line>: <why>`, `WARNING …`, `ignored …`, other
/// lines) as JSON: `{"exit":N,"errors":N,"warnings":N,"lines":[{"level":"ok"|"error"|
/// "warning"|"ignored"|"info","text":"…"}]}`, the level's word removed from `text`.
pub fn report_json(text: &str, exit: crate::exit::ExitCode) -> serde_json::Value {
    let mut errors = 0;
    let mut warnings = 0;
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| {
            let (level, rest) = [
                ("ok", "ok "),
                ("error", "ERROR "),
                ("warning", "WARNING "),
                ("ignored", "ignored "),
            ]
            .iter()
            .find_map(|(lv, p)| l.strip_prefix(p).map(|r| (*lv, r)))
            .unwrap_or(("info", l));
            match level {
                "error" => errors += 1,
                "warning" => warnings += 1,
                _ => {}
            }
            serde_json::json!({"level": level, "text": rest})
        })
        .collect();
    serde_json::json!({"exit": exit.code(), "errors": errors, "warnings": warnings, "lines": lines})
}

/// The first error writing a command's standard output (`status > /dev/full`), kept so the
/// command ends with one line and `EX_IOERR` (74) instead of a success over a truncated file.
static STDOUT_ERROR: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// Keeps the first stdout write error ([`stdout_error`]); a closed pipe (`EPIPE`) is not one.
pub fn note_stdout_error(e: &std::io::Error) {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        return;
    }
    if let Ok(mut slot) = STDOUT_ERROR.lock() {
        slot.get_or_insert_with(|| e.to_string());
    }
}

/// The first stdout write error of this process (`No space left on device (os error 28)`).
pub fn stdout_error() -> Option<String> {
    STDOUT_ERROR.lock().ok().and_then(|s| s.clone())
}

/// A command's standard output: writes like [`std::io::Stdout`] and keeps the first failure
/// for [`stdout_error`], so commands that write with `let _ = writeln!(out, …)` still end
/// with exit 74 when their output was lost.
pub struct CheckedStdout(std::io::Stdout);

/// [`CheckedStdout`] over this process's stdout.
pub fn stdout() -> CheckedStdout {
    CheckedStdout(std::io::stdout())
}

impl std::io::Write for CheckedStdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf).inspect_err(note_stdout_error)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush().inspect_err(note_stdout_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_lines_by_level() {
        let v = report_json(
            "ok /a.toml\nERROR /b.toml:2: bad\nWARNING x\n100: y\n",
            crate::exit::ExitCode::Config,
        );
        assert_eq!(v["exit"], 78);
        assert_eq!(
            (v["errors"].as_u64(), v["warnings"].as_u64()),
            (Some(1), Some(1))
        );
        assert_eq!(
            v["lines"][1],
            serde_json::json!({"level": "error", "text": "/b.toml:2: bad"})
        );
        assert_eq!(v["lines"][3]["level"], "info");
    }

    #[test]
    fn json_and_pretty() {
        let v = serde_json::json!({"a": [1, 2]});
        assert_eq!(OutputFormat::Json.render(&v), r#"{"a":[1,2]}"#);
        assert!(OutputFormat::JsonPretty.render(&v).contains("\n  \"a\": ["));
        assert!(!OutputFormat::Text.is_json() && OutputFormat::Json.is_json());
    }
}
