//! Private Open vSwitch daemons: [`Ovs`] drives the ovsdb-server / ovs-vswitchd of one run
//! directory (the one `pve-sim host-up` makes under a [`crate::TestHost`], or a
//! [`PrivateOvs`]); [`Ovs::start`] is the one bring-up, with the file names `pve-sim host-up`
//! uses (`conf.db`, `db.sock`, `<daemon>.pid`, `<daemon>.ctl`, `<daemon>.log`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::process::{assert_root, run_bounded, wait_gone, CmdOutput, CMD_TIMEOUT};

/// The schema Debian's openvswitch-common installs.
const VSWITCH_SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// The OVS daemons of run directory `rundir`, run inside `netns` when given (ovs-vswitchd's
/// userspace datapath then lives in that namespace).
#[derive(Clone, Debug)]
pub struct Ovs {
    rundir: PathBuf,
    netns: Option<String>,
    no_wait: bool,
}

impl Ovs {
    /// The daemons of `rundir` (in `netns`); [`Ovs::vsctl`] waits for ovs-vswitchd to apply
    /// each change, as PVE's own `ovs-vsctl` calls do.
    pub fn at(rundir: &Path, netns: Option<&str>) -> Ovs {
        Ovs {
            rundir: rundir.to_path_buf(),
            netns: netns.map(str::to_string),
            no_wait: false,
        }
    }

    /// The run directory (`OVS_RUNDIR`).
    pub fn rundir(&self) -> &Path {
        &self.rundir
    }

    /// `<rundir>/<name>`.
    pub fn file(&self, name: &str) -> PathBuf {
        self.rundir.join(name)
    }

    /// `<rundir>/db.sock`, ovsdb-server's socket.
    pub fn socket(&self) -> PathBuf {
        self.file("db.sock")
    }

    /// The namespace the daemons run in, if any.
    pub fn netns(&self) -> Option<&str> {
        self.netns.as_deref()
    }

    /// `program` inside the namespace (when there is one), with `OVS_RUNDIR`, `OVS_LOGDIR` and
    /// `OVS_DBDIR` set to the run directory.
    pub fn command(&self, program: &str) -> Command {
        let mut c = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, program]);
                c
            }
            None => Command::new(program),
        };
        for v in ["OVS_RUNDIR", "OVS_LOGDIR", "OVS_DBDIR"] {
            c.env(v, &self.rundir);
        }
        c
    }

    fn run_ok(&self, c: &mut Command) -> String {
        let out = run_bounded(c, CMD_TIMEOUT);
        assert!(
            out.status.success(),
            "{c:?} failed: {}{}",
            out.stderr_text(),
            out.stdout_text()
        );
        out.stdout_text()
    }

    /// `ovs-vsctl --timeout=10 ARGS` against this database (with `--no-wait` for a
    /// [`PrivateOvs`]).
    pub fn vsctl(&self, args: &[&str]) -> CmdOutput {
        let mut c = self.command("ovs-vsctl");
        c.arg(format!("--db=unix:{}", self.socket().display()));
        if self.no_wait {
            c.arg("--no-wait");
        }
        c.arg("--timeout=10").args(args);
        run_bounded(&mut c, CMD_TIMEOUT)
    }

    /// [`Ovs::vsctl`] that must succeed; returns trimmed stdout.
    pub fn vsctl_ok(&self, args: &[&str]) -> String {
        let out = self.vsctl(args);
        assert!(
            out.status.success(),
            "ovs-vsctl {args:?} failed: {}{}",
            out.stderr_text(),
            out.stdout_text()
        );
        out.stdout_text().trim().to_string()
    }

    /// `ovs-vsctl get TABLE RECORD COLUMN`, trimmed (e.g. `10`, `[]`, `[20, 30]`, `"x"`).
    pub fn get(&self, table: &str, record: &str, column: &str) -> String {
        self.vsctl_ok(&["get", table, record, column])
    }

    /// [`Ovs::get`] with surrounding double quotes removed.
    pub fn get_unquoted(&self, table: &str, record: &str, column: &str) -> String {
        self.get(table, record, column)
            .trim_matches('"')
            .to_string()
    }

    /// Port names of `bridge`.
    pub fn ports(&self, bridge: &str) -> Vec<String> {
        self.vsctl_ok(&["list-ports", bridge])
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// `ovs-appctl -t <rundir>/<daemon>.ctl ARGS` that must succeed; returns stdout.
    pub fn appctl(&self, daemon: &str, args: &[&str]) -> String {
        let mut c = self.command("ovs-appctl");
        c.arg("-t")
            .arg(self.file(&format!("{daemon}.ctl")))
            .args(args);
        self.run_ok(&mut c)
    }

    /// Pid of `daemon` (`ovsdb-server` or `ovs-vswitchd`) from its pid file; panics without one.
    pub fn daemon_pid(&self, daemon: &str) -> i32 {
        let p = self.file(&format!("{daemon}.pid"));
        std::fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    /// Sends `sig` (e.g. SIGSTOP, SIGCONT) to `daemon`.
    pub fn signal(&self, daemon: &str, sig: Signal) {
        let pid = self.daemon_pid(daemon);
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig)
            .unwrap_or_else(|e| panic!("kill -{sig:?} {daemon} {pid}: {e}"));
    }

    /// SIGKILLs `daemon` and waits until it is gone.
    pub fn kill_daemon(&self, daemon: &str) {
        let pid = self.daemon_pid(daemon);
        self.signal(daemon, Signal::SIGKILL);
        assert!(
            wait_gone(pid, Duration::from_secs(5)),
            "{daemon} did not die"
        );
    }

    /// The bring-up: creates `conf.db` from the vswitch schema (unless it exists), starts
    /// ovsdb-server (listening on `db.sock` and on the `Manager` rows of the database), runs
    /// `ovs-vsctl init`, and starts ovs-vswitchd when `vswitchd` is set.
    pub fn start(&self, vswitchd: bool) {
        std::fs::create_dir_all(&self.rundir)
            .unwrap_or_else(|e| panic!("{}: {e}", self.rundir.display()));
        let r = |f: &str| self.file(f).display().to_string();
        let db = r("conf.db");
        if !self.file("conf.db").exists() {
            self.run_ok(
                self.command("ovsdb-tool")
                    .args(["create", &db, VSWITCH_SCHEMA]),
            );
        }
        self.start_ovsdb_server();
        self.run_ok(self.command("ovs-vsctl").args([
            &format!("--db=unix:{}", r("db.sock")),
            "--no-wait",
            "--timeout=10",
            "init",
        ]));
        if vswitchd {
            self.run_ok(self.command("ovs-vswitchd").args([
                &format!("unix:{}", r("db.sock")),
                &format!("--unixctl={}", r("ovs-vswitchd.ctl")),
                &format!("--pidfile={}", r("ovs-vswitchd.pid")),
                &format!("--log-file={}", r("ovs-vswitchd.log")),
                "--detach",
            ]));
        }
    }

    /// Starts ovsdb-server on the existing `conf.db` (listening on `db.sock` and on the
    /// `Manager` rows of the database).
    fn start_ovsdb_server(&self) {
        let r = |f: &str| self.file(f).display().to_string();
        self.run_ok(self.command("ovsdb-server").args([
            r("conf.db").as_str(),
            &format!("--remote=punix:{}", r("db.sock")),
            "--remote=db:Open_vSwitch,Open_vSwitch,manager_options",
            &format!("--unixctl={}", r("ovsdb-server.ctl")),
            &format!("--pidfile={}", r("ovsdb-server.pid")),
            &format!("--log-file={}", r("ovsdb-server.log")),
            "--detach",
        ]));
    }

    /// Stops ovsdb-server (SIGTERM) and starts it again on the same database: every client
    /// loses its connection, no row changes (ovs-vswitchd reconnects by itself).
    pub fn restart_ovsdb_server(&self) {
        let pid = self.daemon_pid("ovsdb-server");
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGTERM);
        assert!(
            wait_gone(pid, Duration::from_secs(10)),
            "ovsdb-server did not exit"
        );
        self.start_ovsdb_server();
    }

    /// Adds bridge `name` with `datapath_type=netdev` (waiting for ovs-vswitchd) and sets its
    /// link up.
    pub fn add_bridge(&self, name: &str) {
        let mut c = self.command("ovs-vsctl");
        c.arg(format!("--db=unix:{}", self.socket().display()))
            .args(["--timeout=20", "--may-exist", "add-br", name])
            .args(["--", "set", "Bridge", name, "datapath_type=netdev"]);
        self.run_ok(&mut c);
        self.run_ok(self.command("ip").args(["link", "set", name, "up"]));
    }

    /// Stops both daemons: ovs-vswitchd by `exit --cleanup` (SIGKILL after 1 s), ovsdb-server
    /// by SIGTERM (SIGKILL after 2 s). Never panics (for `Drop`).
    pub fn stop(&self) {
        for daemon in ["ovs-vswitchd", "ovsdb-server"] {
            let Some(pid) = std::fs::read_to_string(self.file(&format!("{daemon}.pid")))
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
            else {
                continue;
            };
            let p = nix::unistd::Pid::from_raw(pid);
            if daemon == "ovs-vswitchd" {
                let mut c = self.command("ovs-appctl");
                c.arg("-t").arg(self.file("ovs-vswitchd.ctl")).args([
                    "--timeout=5",
                    "exit",
                    "--cleanup",
                ]);
                let _ = crate::process::try_run_bounded(&mut c, Duration::from_secs(10));
            } else {
                let _ = nix::sys::signal::kill(p, Signal::SIGTERM);
            }
            let limit = Duration::from_secs(if daemon == "ovs-vswitchd" { 1 } else { 2 });
            if !wait_gone(pid, limit) {
                let _ = nix::sys::signal::kill(p, Signal::SIGKILL);
            }
        }
    }

    /// Stops both daemons (SIGTERM) and starts them again on a FRESH database holding only
    /// `bridges`, as after a reinstall or a lost conf.db: every row anyone added is gone.
    pub fn restart_fresh(&self, bridges: &[&str]) {
        for daemon in ["ovs-vswitchd", "ovsdb-server"] {
            let pid = self.daemon_pid(daemon);
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGTERM);
            assert!(
                wait_gone(pid, Duration::from_secs(10)),
                "{daemon} did not exit"
            );
        }
        let _ = std::fs::remove_file(self.file("conf.db"));
        self.start(true);
        for b in bridges {
            self.add_bridge(b);
        }
    }

    /// A veth pair `name` / `<name>p`, both up, in the daemons' namespace.
    pub fn veth(&self, name: &str) {
        let peer = format!("{name}p");
        for args in [
            vec!["link", "add", name, "type", "veth", "peer", "name", &peer],
            vec!["link", "set", name, "up"],
            vec!["link", "set", &peer, "up"],
        ] {
            self.run_ok(self.command("ip").args(&args));
        }
    }
}

/// An ovsdb-server of its own in a temp dir (`opa-ovsdb-<pid>-<n>-*`), plus ovs-vswitchd and
/// bridge `ovsbr0` in a network namespace of its own (`opa-ovsdb-<pid>-<n>`) when asked.
/// Its `ovs-vsctl` never waits for ovs-vswitchd (`--no-wait`). Dropping it stops the daemons
/// and removes the namespace and the directory.
pub struct PrivateOvs {
    ovs: Ovs,
    _dir: tempfile::TempDir,
}

impl PrivateOvs {
    /// ovsdb-server only: `cur_cfg` never moves.
    pub fn db_only() -> PrivateOvs {
        Self::bring_up(false)
    }

    /// ovsdb-server and ovs-vswitchd in a namespace of their own, with bridge `ovsbr0`
    /// (`datapath_type=netdev`).
    pub fn with_vswitchd() -> PrivateOvs {
        Self::bring_up(true)
    }

    fn bring_up(vswitchd: bool) -> PrivateOvs {
        assert_root();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = tempfile::Builder::new()
            .prefix(&format!("opa-ovsdb-{}-{n}-", std::process::id()))
            .tempdir()
            .expect("temp dir");
        let netns = vswitchd.then(|| format!("opa-ovsdb-{}-{n}", std::process::id()));
        let me = PrivateOvs {
            ovs: Ovs {
                rundir: dir.path().to_path_buf(),
                netns: netns.clone(),
                no_wait: true,
            },
            _dir: dir,
        };
        if let Some(ns) = &netns {
            let out = run_bounded(Command::new("ip").args(["netns", "add", ns]), CMD_TIMEOUT);
            assert!(
                out.status.success(),
                "ip netns add {ns}: {}",
                out.stderr_text()
            );
        }
        me.ovs.start(vswitchd);
        if vswitchd {
            me.ovs.add_bridge("ovsbr0");
        }
        me
    }
}

impl std::ops::Deref for PrivateOvs {
    type Target = Ovs;
    fn deref(&self) -> &Ovs {
        &self.ovs
    }
}

impl Drop for PrivateOvs {
    fn drop(&mut self) {
        self.ovs.stop();
        if let Some(ns) = &self.ovs.netns {
            let _ = crate::process::try_run_bounded(
                Command::new("ip").args(["netns", "del", ns]),
                CMD_TIMEOUT,
            );
        }
    }
}
