//! Checks of agent.toml values that parse but cannot work: relative paths (they would resolve
//! against each caller's working directory, so the hook, `watch` and an admin's shell would use
//! different audit databases and sockets) and limits that leave no time for the waits.

use super::{AgentToml, ConfigError};
use std::path::Path;

/// The shortest `[hook] deadline_ms`: the plan's steps get three quarters of it (the rest is
/// kept for a rollback and the audit rows, [`crate::engine::Deadline::wait_budget`]), and one
/// OVSDB transaction plus the wait for ovs-vswitchd's `cur_cfg` must fit in that.
pub const MIN_DEADLINE_MS: u64 = 1000;
/// The longest `[hook] deadline_ms`: one hour (PVE waits for the hook as long as it runs).
pub const MAX_DEADLINE_MS: u64 = 3_600_000;
/// The shortest `[ovsdb] timeout_ms`: one OVSDB round trip and ovs-vswitchd reconfiguring.
pub const MIN_TIMEOUT_MS: u64 = 100;

/// Refuses relative paths and limits that cannot work. `text` is agent.toml's text, used only
/// to name the line of the field.
///
/// # Errors
/// The first problem, as `<path>:<line>: [<section>] <key> = …: <why>` (exit 78).
pub fn validate(path: &Path, text: &str, t: &AgentToml) -> Result<(), ConfigError> {
    let err = |section: &str, key: &str, msg: String| {
        let e = ConfigError::file(path, format!("[{section}] {key}: {msg}"));
        match field_line(text, section, key) {
            Some(l) => e.at_line(l),
            None => e,
        }
    };
    for (section, key, p) in [
        ("ovsdb", "socket", &t.ovsdb.socket),
        ("audit", "database", &t.audit.database),
        ("pve", "root", &t.pve.root),
    ] {
        if !p.is_absolute() {
            return Err(err(
                section,
                key,
                format!(
                    "{:?} is a relative path: it would depend on each caller's working \
                     directory; write an absolute path",
                    p.display().to_string()
                ),
            ));
        }
    }
    let optional = [
        ("metrics", "textfile", t.metrics.textfile.as_ref()),
        ("witness", "dir", t.witness.dir.as_ref()),
    ];
    for (section, key, p) in optional {
        let Some(p) = p.filter(|p| !p.is_absolute()) else {
            continue;
        };
        return Err(err(
            section,
            key,
            format!(
                "{:?} is a relative path: it would depend on each caller's working \
                 directory; write an absolute path",
                p.display().to_string()
            ),
        ));
    }
    let deadline = t.hook.deadline_ms;
    if !(MIN_DEADLINE_MS..=MAX_DEADLINE_MS).contains(&deadline) {
        return Err(err(
            "hook",
            "deadline_ms",
            format!(
                "{deadline} is out of range {MIN_DEADLINE_MS}..={MAX_DEADLINE_MS}: the steps \
                 get 3/4 of it, the rest is kept for a rollback and the audit rows"
            ),
        ));
    }
    let timeout = t.ovsdb.timeout_ms;
    if timeout < MIN_TIMEOUT_MS {
        return Err(err(
            "ovsdb",
            "timeout_ms",
            format!(
                "{timeout} is below {MIN_TIMEOUT_MS}: no OVSDB call or wait for ovs-vswitchd \
                 can finish in it"
            ),
        ));
    }
    Ok(())
}

/// The 1-based line of `key = …` inside `[section]` of `text` (also `section.key = …` at the
/// top level), when it is written there.
fn field_line(text: &str, section: &str, key: &str) -> Option<usize> {
    let mut current = String::new();
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if let Some(h) = l.strip_prefix('[') {
            current = h.trim_end_matches(']').trim().to_string();
            continue;
        }
        let Some((k, _)) = l.split_once('=') else {
            continue;
        };
        let k = k.trim().trim_matches('"');
        let dotted = format!("{section}.{key}");
        if (current == section && k == key) || (current.is_empty() && k == dotted) {
            return Some(i + 1);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<(), String> {
        let p = Path::new("/etc/op-agent/agent.toml");
        let t: AgentToml = toml::from_str(text).unwrap();
        validate(p, text, &t).map_err(|e| e.to_string())
    }

    #[test]
    fn relative_paths_are_refused_with_file_line_and_field() {
        assert_eq!(check(""), Ok(()));
        let e =
            check("[hook]\ndeadline_ms = 5000\n[audit]\ndatabase = \"audit.db\"\n").unwrap_err();
        assert_eq!(
            e,
            "/etc/op-agent/agent.toml:4: [audit] database: \"audit.db\" is a relative path: it \
             would depend on each caller's working directory; write an absolute path"
        );
        let e = check("[ovsdb]\nsocket = \"run/db.sock\"\n").unwrap_err();
        assert!(
            e.starts_with("/etc/op-agent/agent.toml:2: [ovsdb] socket: "),
            "{e}"
        );
        let e = check("[metrics]\ntextfile = \"op.prom\"\n").unwrap_err();
        assert!(
            e.starts_with("/etc/op-agent/agent.toml:2: [metrics] textfile: "),
            "{e}"
        );
        let e = check("pve.root = \"\"\n").unwrap_err();
        assert!(
            e.starts_with("/etc/op-agent/agent.toml:1: [pve] root: "),
            "{e}"
        );
    }

    #[test]
    fn limits_that_leave_no_time_are_refused() {
        let e = check("[hook]\ndeadline_ms = 0\n").unwrap_err();
        assert!(
            e.starts_with("/etc/op-agent/agent.toml:2: [hook] deadline_ms: 0 is out of range"),
            "{e}"
        );
        assert!(check("[hook]\ndeadline_ms = 999\n").is_err());
        assert!(check("[hook]\ndeadline_ms = 18446744073709551615\n").is_err());
        assert!(check("[hook]\ndeadline_ms = 1000\n").is_ok());
        let e = check("[ovsdb]\n# wait\ntimeout_ms = 0\n").unwrap_err();
        assert!(
            e.starts_with("/etc/op-agent/agent.toml:3: [ovsdb] timeout_ms: 0 is below 100"),
            "{e}"
        );
        assert!(check("[ovsdb]\ntimeout_ms = 100\n").is_ok());
    }
}
