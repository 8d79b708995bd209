//! The command line itself: `--version` names the git commit and build date, and `--help`
//! wraps to the terminal's width (clap `wrap_help`; `COLUMNS` as a terminal would set it).
//! No root needed.

use op_testkit::AgentCommand;

#[test]
fn version_names_commit_and_build_date() {
    let o = AgentCommand::new(&["--version"]).run();
    assert_eq!(o.code(), Some(0), "{}", o.text());
    let v = o.stdout_text();
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let head = String::from_utf8(head.stdout).unwrap().trim().to_string();
    assert_eq!(head.len(), 12, "git rev-parse: {head:?}");
    let want = format!(
        "op-agent {} (commit {head}, built ",
        env!("CARGO_PKG_VERSION")
    );
    assert!(v.starts_with(&want), "{v:?} does not start with {want:?}");
    let date = v
        .trim_end()
        .strip_prefix(&want)
        .and_then(|d| d.strip_suffix(')'));
    let date = date.unwrap_or_else(|| panic!("{v:?}"));
    let b = date.as_bytes();
    assert!(
        b.len() == 10
            && b[4] == b'-'
            && b[7] == b'-'
            && date.replace('-', "").bytes().all(|c| c.is_ascii_digit()),
        "{date:?}"
    );
}

#[test]
fn help_wraps_to_the_terminal_width() {
    for cmd in [
        &["enroll", "--help"][..],
        &["audit", "log", "--help"],
        &["--help"],
    ] {
        let o = AgentCommand::new(cmd).env("COLUMNS", "60").run();
        assert_eq!(o.code(), Some(0), "{}", o.text());
        for l in o.stdout_text().lines() {
            assert!(
                l.chars().count() <= 60,
                "{cmd:?}: {} columns: {l:?}",
                l.chars().count()
            );
        }
    }
}

/// A mistyped `--config` is an error (78) naming the file, not a run with every default
/// (another audit database, another PVE root); without `--config` a missing default file
/// still means all defaults.
#[test]
fn a_missing_config_given_on_the_command_line_is_an_error() {
    let d = tempfile::tempdir().unwrap();
    let typo = d.path().join("agnet.toml");
    for args in [
        &["status"][..],
        &["audit", "head"][..],
        &["config", "check"][..],
    ] {
        let o = AgentCommand::new(args)
            .config(&typo)
            .env_remove("OP_AGENT_CONFIG")
            .run();
        assert_eq!(o.code(), Some(78), "{args:?}: {}", o.text());
        // (`config check` reports on stdout, as for every file it checks.)
        let err = o.text();
        assert!(
            err.contains(&format!(
                "{}: no such file (given with --config",
                typo.display()
            )),
            "{args:?}: {err}"
        );
    }
}

/// `watch --conf-poll-ms` below its floor (100) is a usage error, not silently raised.
#[test]
fn watch_conf_poll_below_100_ms_is_a_usage_error() {
    let o = AgentCommand::new(&["watch", "--conf-poll-ms", "50"]).run();
    assert_eq!(o.code(), Some(64), "{}", o.text());
    assert!(
        o.stderr_text()
            .contains("invalid value '50' for '--conf-poll-ms <MS>'"),
        "{}",
        o.text()
    );
}
