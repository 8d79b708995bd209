//! Helpers for the issue-5 end-to-end tests (`watch_e2e`, `commands_e2e`): op-agent configured
//! on a [`TestHost`], op-hook installed as the containers' hookscript, commands run inside the
//! host's namespace, and a `watch` service that is stopped (SIGTERM, then SIGKILL) on drop.
#![allow(dead_code)]

use crate::support::{run_bounded, TestHost, CMD_TIMEOUT};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// op-agent configured on a test host.
pub struct Agent<'a> {
    pub host: &'a TestHost,
    pub config: PathBuf,
    pub bin: PathBuf,
}

/// `net0` of container `vmid` on `ovsbr0` with `tag`, a unique MAC and 10.10.0.x/24.
pub fn pve_conf(vmid: u32, tag: u16) -> String {
    format!(
        "arch: amd64\nhookscript: local:snippets/op-hook\nhostname: ct{vmid}\nmemory: 128\n\
         net0: name=eth0,bridge=ovsbr0,hwaddr=BC:24:11:00:{:02X}:{:02X},ip={}/24,tag={tag},type=veth\n",
        (vmid >> 8) & 0xff,
        vmid & 0xff,
        ip_of(vmid)
    )
}

/// The container's address.
pub fn ip_of(vmid: u32) -> String {
    format!("10.10.0.{}", vmid % 200 + 1)
}

impl<'a> Agent<'a> {
    /// Writes `R/etc/op-agent/agent.toml` (private OVSDB socket, audit db under R, pve root R)
    /// and installs op-hook (exec'ing this build's op-agent with that config) as a snippet.
    pub fn new(host: &'a TestHost) -> Agent<'a> {
        let r = host.root();
        let etc = r.join("etc/op-agent");
        std::fs::create_dir_all(etc.join("containers")).unwrap();
        let config = etc.join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "[ovsdb]\nsocket = \"{}\"\n[audit]\ndatabase = \"{}\"\n[pve]\nroot = \"{}\"\n",
                host.ovsdb_socket().display(),
                r.join("var/lib/op-agent/audit.db").display(),
                r.display()
            ),
        )
        .unwrap();
        let bin = PathBuf::from(env!("CARGO_BIN_EXE_op-agent"));
        host.install_snippet(
            "op-hook",
            &format!(
                "#!/bin/sh\nexec '{}' --config '{}' hook \"$1\" \"$2\"\n",
                bin.display(),
                config.display()
            ),
        );
        Agent { host, config, bin }
    }

    /// PVE conf with op-hook plus `containers/<vmid>.toml` (`network_type = "bridge"`).
    pub fn enroll(&self, vmid: u32, tag: u16) {
        self.host.write_pve_conf(vmid, &pve_conf(vmid, tag));
        std::fs::write(
            self.config
                .parent()
                .unwrap()
                .join(format!("containers/{vmid}.toml")),
            "network_type = \"bridge\"\n",
        )
        .unwrap();
    }

    fn argv(&self, args: &[&str]) -> Vec<String> {
        let mut v = vec![
            self.bin.display().to_string(),
            "--config".into(),
            self.config.display().to_string(),
        ];
        v.extend(args.iter().map(|s| s.to_string()));
        v
    }

    /// `op-agent --config CFG ARGS` inside the namespace.
    pub fn op(&self, args: &[&str]) -> Output {
        let v = self.argv(args);
        let a: Vec<&str> = v.iter().map(String::as_str).collect();
        self.host.run(&a)
    }

    /// Like [`Agent::op`], returning (exit code, stdout, stderr).
    pub fn op_out(&self, args: &[&str]) -> (i32, String, String) {
        let o = self.op(args);
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }

    /// Starts `op-agent watch` in the namespace; its stderr goes to `R/watch.log`.
    pub fn spawn_watch(&self) -> Watch {
        let log = self.host.root().join("watch.log");
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut v = self.argv(&["watch"]);
        v.splice(
            0..0,
            ["netns".to_string(), "exec".into(), self.host.netns().into()],
        );
        let child = Command::new("ip")
            .args(&v)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap();
        Watch {
            child: Some(child),
            log,
        }
    }

    /// Audit rows `(vmid, phase, step, outcome)` in `seq` order, read with `sqlite3`.
    pub fn audit_rows(&self) -> Vec<(i64, String, String, String)> {
        let db = self.host.root().join("var/lib/op-agent/audit.db");
        let out = run_bounded(
            Command::new("sqlite3")
                .args(["-cmd", ".timeout 5000"])
                .arg(&db)
                .arg("SELECT vmid, phase, step, outcome FROM audit ORDER BY seq"),
            CMD_TIMEOUT,
        );
        assert!(
            out.status.success() || !db.exists(),
            "sqlite3 {}: {}",
            db.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split('|').collect();
                (f.len() == 4).then(|| {
                    (
                        f[0].parse().unwrap_or(-1),
                        f[1].to_string(),
                        f[2].to_string(),
                        f[3].to_string(),
                    )
                })
            })
            .collect()
    }

    /// True when port `name` is on `bridge` with `tag`, owned by op-agent for `vmid`, applied
    /// (ofport > 0, no error), the link `name` exists and `veth<vmid>i0` and its port do not.
    pub fn converged(&self, vmid: u32, name: &str, tag: u16) -> Result<(), String> {
        let h = self.host;
        let get = |t: &str, c: &str| -> String {
            let o = h.vsctl(&["get", t, name, c]);
            String::from_utf8_lossy(&o.stdout).trim().to_string()
        };
        if h.link(name).is_none() {
            return Err(format!("no link {name}"));
        }
        let veth = format!("veth{vmid}i0");
        if h.link(&veth).is_some() {
            return Err(format!("{veth} still exists"));
        }
        let ports = h.ports("ovsbr0");
        if ports.contains(&veth) {
            return Err(format!("stale port {veth}"));
        }
        if !ports.contains(&name.to_string()) {
            return Err(format!("no port {name} on ovsbr0: {ports:?}"));
        }
        let tg = get("Port", "tag");
        if tg != tag.to_string() {
            return Err(format!("tag {tg}"));
        }
        let owner = get("Port", "external_ids:owner");
        if owner != "op-agent" && owner != "\"op-agent\"" {
            return Err(format!("owner {owner}"));
        }
        let ofport: i64 = get("Interface", "ofport").parse().unwrap_or(-1);
        if ofport <= 0 {
            return Err(format!("ofport {ofport}"));
        }
        let e = get("Interface", "error");
        if e != "[]" {
            return Err(format!("error {e}"));
        }
        Ok(())
    }

    /// Polls [`Agent::converged`] every 20 ms until `limit`; returns the time it took.
    pub fn wait_converged(&self, vmid: u32, name: &str, tag: u16, limit: Duration) -> Duration {
        let t = Instant::now();
        loop {
            match self.converged(vmid, name, tag) {
                Ok(()) => return t.elapsed(),
                Err(e) if t.elapsed() > limit => panic!(
                    "{name} not converged within {limit:?}: {e}\nwatch log:\n{}",
                    std::fs::read_to_string(self.host.root().join("watch.log")).unwrap_or_default()
                ),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

/// A running `op-agent watch`; SIGTERM then (after 5 s) SIGKILL on drop.
pub struct Watch {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Watch {
    /// Sends SIGTERM and waits (at most 15 s) for the exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let pid = nix::unistd::Pid::from_raw(c.id() as i32);
        // `ip netns exec` execs the command, so the child pid is op-agent itself.
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let t = Instant::now();
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            if t.elapsed() > Duration::from_secs(15) {
                let _ = c.kill();
                let _ = c.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The service's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Kills ovs-vswitchd and ovsdb-server of the host (SIGTERM via their pidfiles), and starts
/// them again with a FRESH database holding only `ovsbr0` (datapath_type=netdev), as after a
/// reinstall or a lost conf.db: every op-agent row is gone until something re-adds it.
pub fn restart_ovs_fresh(host: &TestHost) {
    let rd = host.ovs_rundir();
    for d in ["ovs-vswitchd", "ovsdb-server"] {
        let pidf = rd.join(format!("{d}.pid"));
        let pid: i32 = std::fs::read_to_string(&pidf)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let p = nix::unistd::Pid::from_raw(pid);
        let _ = nix::sys::signal::kill(p, nix::sys::signal::Signal::SIGTERM);
        let t = Instant::now();
        while nix::sys::signal::kill(p, None).is_ok() && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(nix::sys::signal::kill(p, None).is_err(), "{d} did not exit");
    }
    let r = |f: &str| rd.join(f).display().to_string();
    let db = r("conf.db");
    let _ = std::fs::remove_file(&db);
    host.run_ok(&[
        "ovsdb-tool",
        "create",
        &db,
        "/usr/share/openvswitch/vswitch.ovsschema",
    ]);
    host.run_ok(&[
        "ovsdb-server",
        &db,
        &format!("--remote=punix:{}", r("db.sock")),
        &format!("--unixctl={}", r("ovsdb-server.ctl")),
        &format!("--pidfile={}", r("ovsdb-server.pid")),
        &format!("--log-file={}", r("ovsdb-server.log")),
        "--detach",
    ]);
    host.vsctl_ok(&["--no-wait", "init"]);
    host.run_ok(&[
        "ovs-vswitchd",
        &format!("unix:{}", r("db.sock")),
        &format!("--unixctl={}", r("ovs-vswitchd.ctl")),
        &format!("--pidfile={}", r("ovs-vswitchd.pid")),
        &format!("--log-file={}", r("ovs-vswitchd.log")),
        "--detach",
    ]);
    host.vsctl_ok(&[
        "--may-exist",
        "add-br",
        "ovsbr0",
        "--",
        "set",
        "Bridge",
        "ovsbr0",
        "datapath_type=netdev",
    ]);
    host.run_ok(&["ip", "link", "set", "ovsbr0", "up"]);
}
