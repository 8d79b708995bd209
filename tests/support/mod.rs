//! Shared harness for end-to-end tests: a private "Proxmox host" made of a network namespace of
//! its own, a temp root `R`, a private ovsdb-server + ovs-vswitchd started by `pve-sim host-up`,
//! and real LXC containers started by `pve-sim start`.
//!
//! Use it as `mod support;` from a test in `tests/`. Needs root (it panics otherwise: a root
//! test never passes silently) and the `pve-sim` binary next to the test binaries, so run
//! `cargo build -p pve-integration` first (the Makefile does).
//!
//! Everything a [`TestHost`] makes is removed by its `Drop`, also after a failed assertion:
//! containers (stopped and destroyed), the OVS daemons (`pve-sim host-down`), any process left
//! in the namespace, the namespace itself, and the temp root.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Bound for any one command the harness runs, seconds.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(90);

/// Panics with a clear message unless the effective uid is 0.
pub fn assert_root() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1).map(str::to_string));
    assert_eq!(
        euid.as_deref(),
        Some("0"),
        "this end-to-end test needs root (network namespaces, OVS, LXC); it does not skip: run it as root"
    );
}

/// `<target>/debug/pve-sim`, found from this test binary's path (`<target>/debug/deps/...`).
pub fn pve_sim_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in <target>/debug/deps");
    let bin = dir.join("pve-sim");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p pve-integration` before the end-to-end tests",
        bin.display()
    );
    bin
}

/// Runs `cmd` with stdin at EOF, killing it after `timeout`; panics if it cannot start or
/// times out (a hung test must fail, not hang).
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> Output {
    let what = format!("{cmd:?}");
    try_run_bounded(cmd, timeout).unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// Like [`run_bounded`] but returns the problem instead of panicking (for `Drop`).
pub fn try_run_bounded(cmd: &mut Command, timeout: Duration) -> Result<Output, String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start: {e}"))?;
    let out = child.stdout.take().ok_or("no stdout pipe")?;
    let err = child.stderr.take().ok_or("no stderr pipe")?;
    let read = |mut p: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = p.read_to_end(&mut v);
            v
        })
    };
    let (to, te) = (read(Box::new(out)), read(Box::new(err)));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait().map_err(|e| format!("wait: {e}"))? {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("timed out after {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Ok(Output {
        status,
        stdout: to.join().unwrap_or_default(),
        stderr: te.join().unwrap_or_default(),
    })
}

/// `<target>/debug/op-agent`, found like [`pve_sim_bin`].
pub fn op_agent_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in <target>/debug/deps");
    let bin = dir.join("op-agent");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --workspace` first",
        bin.display()
    );
    bin
}

/// A private PVE host: netns `opa-<hint>-<pid>-<n>`, temp root, private OVS, containers.
pub struct TestHost {
    netns: String,
    root: tempfile::TempDir,
    sim_bin: PathBuf,
    up: bool,
}

impl TestHost {
    /// A host with one OVS bridge `ovsbr0`.
    pub fn new(name_hint: &str) -> TestHost {
        Self::with_bridges(name_hint, &["ovsbr0"], &[])
    }

    /// A host with the given OVS bridges (`datapath_type=netdev`) and Linux bridges.
    /// Panics (after cleaning up) if the namespace or `pve-sim host-up` fails.
    pub fn with_bridges(name_hint: &str, ovs: &[&str], linux: &[&str]) -> TestHost {
        assert_root();
        let sim_bin = pve_sim_bin();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let netns = format!("opa-{name_hint}-{}-{n}", std::process::id());
        let root = tempfile::Builder::new()
            .prefix("opa-root-")
            .tempdir()
            .expect("temp root");
        let out = run_bounded(
            Command::new("ip").args(["netns", "add", &netns]),
            CMD_TIMEOUT,
        );
        assert!(
            out.status.success(),
            "ip netns add {netns}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut host = TestHost {
            netns,
            root,
            sim_bin,
            up: false,
        };
        let mut args = vec!["host-up".to_string()];
        for b in ovs {
            args.extend(["--bridge".to_string(), b.to_string()]);
        }
        for b in linux {
            args.extend(["--linux-bridge".to_string(), b.to_string()]);
        }
        host.up = true;
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = host.sim(&a);
        assert!(
            out.status.success(),
            "pve-sim host-up failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        host.write_agent_toml("");
        let hook = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("hookscript/op-hook"),
        )
        .expect("hookscript/op-hook");
        host.install_snippet("op-hook", &hook);
        host
    }

    /// `R/etc/op-agent/agent.toml`: exported as OP_AGENT_CONFIG to everything run in the host.
    pub fn agent_toml(&self) -> PathBuf {
        self.root().join("etc/op-agent/agent.toml")
    }

    /// Writes agent.toml pointing at this host's OVS socket, audit database
    /// (`R/var/lib/op-agent/audit.db`) and PVE root, followed by `extra` TOML lines (which may
    /// add keys to a `[hook]` or `[mesh]` table, not to the tables written here).
    pub fn write_agent_toml(&self, extra: &str) {
        let dir = self.root().join("etc/op-agent/containers");
        std::fs::create_dir_all(&dir).unwrap();
        let text = format!(
            "[ovsdb]\nsocket = \"{}\"\ntimeout_ms = 5000\n[audit]\ndatabase = \"{}\"\n[pve]\nroot = \"{}\"\n{extra}",
            self.ovsdb_socket().display(),
            self.audit_db().display(),
            self.root().display()
        );
        std::fs::write(self.agent_toml(), text).unwrap();
    }

    /// `R/var/lib/op-agent/audit.db`.
    pub fn audit_db(&self) -> PathBuf {
        self.root().join("var/lib/op-agent/audit.db")
    }

    /// Writes `R/etc/op-agent/containers/<vmid>.toml` (the container is then managed).
    pub fn manage(&self, vmid: u32, toml: &str) {
        let dir = self.root().join("etc/op-agent/containers");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{vmid}.toml")), toml).unwrap();
    }

    /// `op-agent ARGS` inside the namespace (with this host's OP_AGENT_CONFIG).
    pub fn agent(&self, args: &[&str]) -> Output {
        let bin = op_agent_bin().display().to_string();
        let mut cmd = vec![bin.as_str()];
        cmd.extend_from_slice(args);
        self.run(&cmd)
    }

    /// `op-agent audit verify` on this host's log must exit 0 (intact); `context` names the
    /// situation in the failure message and in the `observed:` line the test prints.
    pub fn assert_audit_intact(&self, context: &str) {
        let v = self.agent(&["audit", "verify"]);
        eprintln!("observed: audit verify ({context}): {v:?}");
        assert_eq!(
            v.status.code(),
            Some(0),
            "audit verify ({context}): {}{}",
            String::from_utf8_lossy(&v.stdout),
            String::from_utf8_lossy(&v.stderr)
        );
    }

    /// Audit rows as JSON values (`op-agent audit log --json`, one object per line or an array).
    pub fn audit_rows(&self) -> Vec<serde_json::Value> {
        let out = self.agent(&["audit", "log", "--json"]);
        assert!(
            out.status.success(),
            "audit log: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        if let Ok(serde_json::Value::Array(a)) = serde_json::from_str(&text) {
            return a;
        }
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("audit log --json line"))
            .collect()
    }

    /// The temp root `R` (holds etc/pve, var/lib/vz, var/lib/lxc, run/openvswitch).
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// The network namespace name.
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// `R/run/openvswitch`: OVS_RUNDIR of the private OVS.
    pub fn ovs_rundir(&self) -> PathBuf {
        self.root().join("run/openvswitch")
    }

    /// `R/run/openvswitch/db.sock`: the private ovsdb-server's socket.
    pub fn ovsdb_socket(&self) -> PathBuf {
        self.ovs_rundir().join("db.sock")
    }

    /// `R/var/lib/lxc`.
    pub fn lxcpath(&self) -> PathBuf {
        self.root().join("var/lib/lxc")
    }

    /// Runs `cmd` inside the namespace with OVS_RUNDIR/OVS_LOGDIR/OVS_DBDIR set (bounded).
    pub fn run(&self, cmd: &[&str]) -> Output {
        self.run_env(cmd, &[])
    }

    /// Like [`TestHost::run`] with extra environment variables (e.g. `OP_AGENT_BIN`,
    /// `OP_AGENT_CONFIG` for `pve-sim start`: the hookscript inherits them, and so does the
    /// post-stop hookscript later, which runs in the lxc monitor started by that `start`).
    pub fn run_env(&self, cmd: &[&str], env: &[(&str, &str)]) -> Output {
        let rundir = self.ovs_rundir();
        run_bounded(
            Command::new("ip")
                .args(["netns", "exec", &self.netns])
                .args(cmd)
                .env("OVS_RUNDIR", &rundir)
                .env("OVS_LOGDIR", &rundir)
                .env("OVS_DBDIR", &rundir)
                .env("OP_AGENT_BIN", op_agent_bin())
                .env("OP_AGENT_CONFIG", self.agent_toml())
                .envs(env.iter().copied()),
            CMD_TIMEOUT,
        )
    }

    /// Like [`TestHost::run`] but panics unless it exits 0; returns stdout.
    pub fn run_ok(&self, cmd: &[&str]) -> String {
        let out = self.run(cmd);
        assert!(
            out.status.success(),
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ovs-vsctl --timeout=10 ARGS` against the private OVS.
    pub fn vsctl(&self, args: &[&str]) -> Output {
        let mut cmd = vec!["ovs-vsctl", "--timeout=10"];
        cmd.extend_from_slice(args);
        self.run(&cmd)
    }

    /// `ovs-vsctl` that must succeed; returns trimmed stdout.
    pub fn vsctl_ok(&self, args: &[&str]) -> String {
        let mut cmd = vec!["ovs-vsctl", "--timeout=10"];
        cmd.extend_from_slice(args);
        self.run_ok(&cmd).trim().to_string()
    }

    /// `ovs-vsctl get TABLE RECORD COLUMN`, trimmed (e.g. `"10"`, `"[]"`, `"[20, 30]"`).
    pub fn ovs_get(&self, table: &str, record: &str, column: &str) -> String {
        self.vsctl_ok(&["get", table, record, column])
    }

    /// Ports of an OVS bridge.
    pub fn ports(&self, bridge: &str) -> Vec<String> {
        self.vsctl_ok(&["list-ports", bridge])
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// `pve-sim --root R ARGS` inside the namespace.
    pub fn sim(&self, args: &[&str]) -> Output {
        self.sim_env(args, &[])
    }

    /// `pve-sim --root R ARGS` inside the namespace with extra environment variables.
    pub fn sim_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let bin = self.sim_bin.display().to_string();
        let root = self.root().display().to_string();
        let mut cmd = vec![bin.as_str(), "--root", root.as_str()];
        cmd.extend_from_slice(args);
        self.run_env(&cmd, env)
    }

    /// `pve-sim` that must succeed; returns stdout.
    pub fn sim_ok(&self, args: &[&str]) -> String {
        let out = self.sim(args);
        assert!(
            out.status.success(),
            "pve-sim {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Writes `R/etc/pve/lxc/<vmid>.conf`.
    pub fn write_pve_conf(&self, vmid: u32, text: &str) {
        let dir = self.root().join("etc/pve/lxc");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{vmid}.conf")), text).unwrap();
    }

    /// Writes an executable `R/var/lib/vz/snippets/<name>` (for `hookscript: local:snippets/<name>`).
    pub fn install_snippet(&self, name: &str, text: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let dir = self.root().join("var/lib/vz/snippets");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// Names of all links in the namespace (`ip -j link`).
    pub fn links(&self) -> Vec<String> {
        let out = self.run_ok(&["ip", "-j", "link"]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("ip -j link output is JSON");
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|l| l["ifname"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `ip -j link show DEV` as JSON (`None` when the link does not exist).
    pub fn link(&self, dev: &str) -> Option<serde_json::Value> {
        let out = self.run(&["ip", "-j", "-d", "link", "show", "dev", dev]);
        if !out.status.success() {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        v.as_array()?.first().cloned()
    }

    /// True when one `ping -c1 -W1 IP` from inside container `from_vmid` is answered.
    pub fn ping(&self, from_vmid: u32, ip: &str) -> bool {
        let lxcpath = self.lxcpath().display().to_string();
        let v = from_vmid.to_string();
        self.run(&[
            "lxc-attach",
            "-P",
            &lxcpath,
            "-n",
            &v,
            "--",
            "ping",
            "-c1",
            "-W1",
            ip,
        ])
        .status
        .success()
    }

    /// Container ids that have an LXC directory under `R/var/lib/lxc`.
    fn containers(&self) -> Vec<String> {
        std::fs::read_dir(self.lxcpath())
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().to_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        // Keep going whatever fails (never panic here); report on stderr only.
        let rundir = self.ovs_rundir();
        let in_ns = |args: &[&str]| {
            try_run_bounded(
                Command::new("ip")
                    .args(["netns", "exec", &self.netns])
                    .args(args)
                    .env("OVS_RUNDIR", &rundir),
                CMD_TIMEOUT,
            )
        };
        let report = |what: &str, r: Result<Output, String>| match r {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "cleanup: {what}: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => eprintln!("cleanup: {what}: {e}"),
        };
        if self.up {
            let bin = self.sim_bin.display().to_string();
            let root = self.root().display().to_string();
            for v in self.containers() {
                report(
                    &format!("destroy {v}"),
                    in_ns(&[&bin, "--root", &root, "destroy", &v]),
                );
            }
            report("host-down", in_ns(&[&bin, "--root", &root, "host-down"]));
        }
        // Anything still running in our namespace was started by this host.
        if let Ok(pids) = try_run_bounded(
            Command::new("ip").args(["netns", "pids", &self.netns]),
            CMD_TIMEOUT,
        ) {
            for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
                let _ = try_run_bounded(Command::new("kill").args(["-9", pid]), CMD_TIMEOUT);
            }
        }
        report(
            &format!("ip netns del {}", self.netns),
            try_run_bounded(
                Command::new("ip").args(["netns", "del", &self.netns]),
                CMD_TIMEOUT,
            ),
        );
    }
}
