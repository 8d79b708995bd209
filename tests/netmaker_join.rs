//! `op-agent mesh join` with a stand-in `netclient` on PATH that records its arguments: the
//! token from `netmaker.env` reaches `netclient join -t` and nothing else (op-agent's output,
//! its audit rows); no join when `netclient list` shows a network; the env file is refused
//! unless root-owned and 0600; without netclient the error says how to install it.
//! Root only (the env file must be root's); run: `cargo test --test netmaker_join`.

use op_testkit::{write_file_mode, AgentCommand, AgentToml, CmdOutput, PveRoot};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

static N: AtomicUsize = AtomicUsize::new(0);
const TOKEN: &str = "eyJzZWNyZXQtdG9rZW4tNDI0Mi1kby1ub3QtbGVhayJ9";

struct Env {
    root: PveRoot,
}

impl Env {
    fn new() -> Env {
        op_testkit::assert_root();
        let n = N.fetch_add(1, Ordering::SeqCst);
        let e = Env {
            root: PveRoot::temp(&format!("opa-join-{}-{n}-", std::process::id())),
        };
        std::fs::create_dir_all(e.path("bin")).unwrap();
        AgentToml {
            audit_db: Some(e.path("audit.db")),
            pve_root: Some(e.root.path().to_path_buf()),
            ..AgentToml::default()
        }
        .write(&e.path("etc/agent.toml"))
        .unwrap();
        e.env_file(
            &format!("# host enrollment\nNETMAKER_TOKEN={TOKEN}\n"),
            0o600,
        );
        e
    }

    fn path(&self, p: &str) -> PathBuf {
        self.root.join(p)
    }

    fn env_file(&self, text: &str, mode: u32) {
        write_file_mode(&self.path("etc/netmaker.env"), text, mode);
    }

    /// Stand-in netclient: appends its argv to `calls`; `list` prints `list_output`.
    fn netclient(&self, list_output: &str, join_exit: i32) {
        let calls = self.path("calls");
        let script = format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\n\
             if [ \"$1\" = list ]; then printf '%s' '{list_output}'; exit 0; fi\n\
             if [ \"$1\" = join ]; then echo \"joining with token $3\"; echo \"joined network mesh1\"; exit {join_exit}; fi\n\
             exit 2\n",
            calls.display()
        );
        write_file_mode(&self.path("bin/netclient"), &script, 0o755);
    }

    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.path("calls"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn op_agent(&self, args: &[&str]) -> CmdOutput {
        AgentCommand::new(args)
            .config_env(self.path("etc/agent.toml"))
            .env(
                "PATH",
                format!("{}:/usr/bin:/bin", self.path("bin").display()),
            )
            .run()
    }

    fn join(&self) -> CmdOutput {
        self.op_agent(&["mesh", "join"])
    }

    /// Everything op-agent wrote that could hold the token: the audit database bytes and
    /// `audit log --json`.
    fn audit_text(&self) -> String {
        let out = self.op_agent(&["audit", "log", "--json"]);
        assert!(out.status.success(), "{}", out.text());
        let mut s = out.text();
        for f in ["audit.db", "audit.db-wal"] {
            if let Ok(b) = std::fs::read(self.path(f)) {
                s.push_str(&String::from_utf8_lossy(&b));
            }
        }
        s
    }
}

#[test]
fn join_passes_the_token_to_netclient_only() {
    let e = Env::new();
    e.netclient("", 0);
    let out = e.join();
    let t = out.text();
    assert!(out.status.success(), "{t}");
    assert_eq!(
        e.calls(),
        vec!["list".to_string(), format!("join -t {TOKEN}")]
    );
    assert!(!t.contains(TOKEN), "token leaked into op-agent output: {t}");
    assert!(
        t.contains("joining with token <token>"),
        "netclient output passed through redacted: {t}"
    );
    assert!(t.contains("host joined the netmaker mesh"), "{t}");
    let audit = e.audit_text();
    assert!(audit.contains("mesh.join"), "{audit}");
    assert!(!audit.contains(TOKEN), "token leaked into the audit log");
}

#[test]
fn already_joined_runs_no_join() {
    let e = Env::new();
    e.netclient(
        "+---------+-----------+\n| NETWORK | CONNECTED |\n+---------+-----------+\n| mesh1   | true      |\n",
        0,
    );
    let out = e.join();
    assert!(out.status.success(), "{}", out.text());
    assert_eq!(e.calls(), vec!["list".to_string()]);
    assert!(out.text().contains("already joined"), "{}", out.text());
}

#[test]
fn failed_join_is_reported_without_the_token() {
    let e = Env::new();
    e.netclient("", 1);
    let out = e.join();
    let t = out.text();
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("netclient join failed"), "{t}");
    assert!(!t.contains(TOKEN), "{t}");
    assert!(!e.audit_text().contains(TOKEN));
}

#[test]
fn env_file_must_be_root_0600() {
    let e = Env::new();
    e.netclient("", 0);
    for mode in [0o644, 0o640, 0o660] {
        e.env_file(&format!("NETMAKER_TOKEN={TOKEN}\n"), mode);
        let out = e.join();
        let t = out.text();
        assert_eq!(out.status.code(), Some(77), "mode {mode:o}: {t}");
        assert!(t.contains("must be 0600"), "{t}");
        assert!(!t.contains(TOKEN), "{t}");
    }
    e.env_file(&format!("NETMAKER_TOKEN={TOKEN}\n"), 0o600);
    std::os::unix::fs::chown(e.path("etc/netmaker.env"), Some(65534), None).unwrap();
    let out = e.join();
    assert_eq!(out.status.code(), Some(77), "{}", out.text());
    assert!(out.text().contains("not root"), "{}", out.text());
    assert!(e.calls().is_empty(), "netclient never ran: {:?}", e.calls());

    std::fs::remove_file(e.path("etc/netmaker.env")).unwrap();
    let out = e.join();
    assert_eq!(out.status.code(), Some(78), "{}", out.text());
    assert!(out.text().contains("netmaker.env"), "{}", out.text());
    e.env_file("OTHER=1\n", 0o600);
    let out = e.join();
    assert!(out.text().contains("no NETMAKER_TOKEN"), "{}", out.text());
}

#[test]
fn without_netclient_says_how_to_install_it() {
    let e = Env::new();
    let out = e.join();
    let t = out.text();
    assert_eq!(out.status.code(), Some(69), "{t}");
    assert!(t.contains("netclient is not installed"), "{t}");
    assert!(t.contains("apt install netclient"), "{t}");
    assert!(!t.contains(TOKEN), "{t}");
    assert!(Path::new(&e.path("etc/netmaker.env")).exists());
}
