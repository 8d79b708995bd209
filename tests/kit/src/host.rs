//! [`TestHost`]: a private Proxmox host for end-to-end tests.

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::agent::{op_agent_bin, AgentCommand, Service};
use crate::audit::{read_audit_rows, AuditRow};
use crate::config::AgentToml;
use crate::ovs::Ovs;
use crate::process::{
    assert_root, run_bounded, target_bin, try_run_bounded, CmdOutput, CMD_TIMEOUT,
};
use crate::pve_conf::{Nic, PveConf};
use crate::root::PveRoot;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A private PVE host: network namespace `opa-<hint>-<pid>-<n>`, a temp root `R`
/// ([`PveRoot`]), a private ovsdb-server + ovs-vswitchd under `R/run/openvswitch` started by
/// `pve-sim host-up` inside the namespace, op-agent's hookscript installed as snippet
/// `op-hook`, and `R/etc/op-agent/agent.toml` pointing at all of it ([`TestHost::config`]).
///
/// Everything runs inside the namespace with `OVS_RUNDIR`/`OVS_LOGDIR`/`OVS_DBDIR`,
/// `OP_AGENT_BIN` and `OP_AGENT_CONFIG` set, so a `pve-sim start` runs the real hookscript,
/// which runs the op-agent under test.
///
/// Dropping it removes what it made, also after a failed assertion: containers (stopped and
/// destroyed), the OVS daemons (`pve-sim host-down`), any process left in the namespace, the
/// namespace and the temp root.
pub struct TestHost {
    netns: String,
    sim_bin: PathBuf,
    up: bool,
    ovs: Ovs,
    root: PveRoot,
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
        let sim_bin = target_bin("pve-sim");
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let netns = format!("opa-{name_hint}-{}-{n}", std::process::id());
        let root = PveRoot::temp("opa-root-");
        let out = run_bounded(
            Command::new("ip").args(["netns", "add", &netns]),
            CMD_TIMEOUT,
        );
        assert!(
            out.status.success(),
            "ip netns add {netns}: {}",
            out.stderr_text()
        );
        let mut host = TestHost {
            ovs: Ovs::at(&root.ovs_rundir(), Some(&netns)),
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
            out.stderr_text()
        );
        host.write_agent_toml("");
        host.root.install_op_hook();
        host
    }

    /// A host ([`TestHost::new`]) with container 100 managed in bridge mode
    /// ([`PveConf::bridged`]`(100, 10)`) and plugged as PVE leaves it before post-start
    /// ([`TestHost::plug_like_pve`]), without starting a container: for faults in op-agent's
    /// path, not in LXC's. `built_with_failpoints` is the calling test's
    /// `cfg!(feature = "failpoints")`: tests that set `OP_AGENT_FAILPOINT` fail loudly
    /// unless op-agent was built with that feature (`make test` builds with it).
    pub fn plugged_for_failpoints(name_hint: &str, built_with_failpoints: bool) -> TestHost {
        assert!(
            built_with_failpoints,
            "build the tests with --features failpoints (make test does)"
        );
        let host = TestHost::new(name_hint);
        host.manage_bridged(100, PveConf::bridged(100, 10));
        host.plug_like_pve(100);
        host
    }

    /// The temp root `R` (holds etc/pve, var/lib/vz, var/lib/lxc, run/openvswitch).
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// The layout of `R`.
    pub fn pve_root(&self) -> &PveRoot {
        &self.root
    }

    /// The network namespace name.
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// The host's private OVS.
    pub fn ovs(&self) -> &Ovs {
        &self.ovs
    }

    /// `R/etc/op-agent/agent.toml`.
    pub fn agent_toml(&self) -> PathBuf {
        self.root.agent_toml()
    }

    /// The host's agent.toml: this host's OVS socket (`timeout_ms` 5000), audit database
    /// and PVE root. Change fields and [`TestHost::set_config`] it.
    pub fn config(&self) -> AgentToml {
        AgentToml {
            ovsdb_socket: Some(self.ovsdb_socket()),
            ovsdb_timeout_ms: Some(5000),
            audit_db: Some(self.audit_db()),
            pve_root: Some(self.root().to_path_buf()),
            ..AgentToml::default()
        }
    }

    /// Writes `cfg` as the host's agent.toml.
    pub fn set_config(&self, cfg: &AgentToml) {
        self.root.write_agent_toml(cfg);
    }

    /// Writes [`TestHost::config`] followed by `extra` TOML lines (which may add a `[mesh]`
    /// table, not keys to the tables written).
    pub fn write_agent_toml(&self, extra: &str) {
        self.set_config(&AgentToml {
            extra: extra.to_string(),
            ..self.config()
        });
    }

    /// `R/var/lib/op-agent/audit.db`.
    pub fn audit_db(&self) -> PathBuf {
        self.root.audit_db()
    }

    /// `R/run/openvswitch`: OVS_RUNDIR of the private OVS.
    pub fn ovs_rundir(&self) -> PathBuf {
        self.root.ovs_rundir()
    }

    /// `R/run/openvswitch/db.sock`: the private ovsdb-server's socket.
    pub fn ovsdb_socket(&self) -> PathBuf {
        self.root.ovsdb_socket()
    }

    /// `R/var/lib/lxc`.
    pub fn lxcpath(&self) -> PathBuf {
        self.root.lxcpath()
    }

    /// Writes `R/etc/op-agent/containers/<vmid>.toml` (the container is then managed).
    pub fn manage(&self, vmid: u32, toml: &str) {
        self.root.manage(vmid, toml);
    }

    /// Writes `R/etc/pve/lxc/<vmid>.conf` (e.g. a [`crate::PveConf`]).
    pub fn write_pve_conf(&self, vmid: u32, conf: impl Display) {
        self.root.write_pve_conf(vmid, conf);
    }

    /// Writes the PVE conf of `vmid` and its container TOML `network_type = "bridge"`: the
    /// container is then managed in bridge mode.
    pub fn manage_bridged(&self, vmid: u32, conf: impl Display) {
        self.write_pve_conf(vmid, conf);
        self.manage(vmid, "network_type = \"bridge\"\n");
    }

    /// Manages `vmid` in bridge mode with two NICs through op-agent's hookscript: net0 on
    /// `ovsbr0` VLAN 10 (`10.0.0.<x>/24`) and net1 on VLAN 20 (`10.0.1.<x>/24`), `x` as in
    /// [`crate::bridged_ip`] (101 for container 100).
    pub fn manage_two_vlans(&self, vmid: u32) {
        let x = vmid % 200 + 1;
        let mac_id = (vmid % 65536) as u16;
        self.manage_bridged(
            vmid,
            PveConf::op_hook(vmid).nics([
                Nic::with_id(0, "ovsbr0", mac_id)
                    .ip(&format!("10.0.0.{x}/24"))
                    .tag(10),
                Nic::with_id(1, "ovsbr0", mac_id)
                    .ip(&format!("10.0.1.{x}/24"))
                    .tag(20),
            ]),
        );
    }

    /// Writes an executable `R/var/lib/vz/snippets/<name>`.
    pub fn install_snippet(&self, name: &str, text: &str) -> PathBuf {
        self.root.install_snippet(name, text)
    }

    // ------------------------------------------------------------------ op-agent

    /// `op-agent ARGS` inside the namespace with the host's environment (not run yet).
    pub fn agent_cmd(&self, args: &[&str]) -> AgentCommand {
        let rundir = self.ovs_rundir();
        AgentCommand::new(args)
            .netns(&self.netns)
            .env("OVS_RUNDIR", &rundir)
            .env("OVS_LOGDIR", &rundir)
            .env("OVS_DBDIR", &rundir)
            .env("OP_AGENT_BIN", op_agent_bin())
            .config_env(self.agent_toml())
    }

    /// Runs `op-agent ARGS` inside the namespace.
    pub fn agent(&self, args: &[&str]) -> CmdOutput {
        self.agent_cmd(args).run()
    }

    /// `op-agent hook <vmid> <phase>` inside the namespace (not run yet: add `env`, then
    /// `run`).
    pub fn hook(&self, vmid: u32, phase: &str) -> AgentCommand {
        self.agent_cmd(&["hook", &vmid.to_string(), phase])
    }

    /// `R/watch.log`, where [`TestHost::spawn_watch`] sends the service's stderr.
    pub fn watch_log(&self) -> PathBuf {
        self.root().join("watch.log")
    }

    /// Starts `op-agent --config R/etc/op-agent/agent.toml watch ARGS` in the namespace.
    pub fn spawn_watch(&self, args: &[&str]) -> Service {
        let mut a = vec!["watch"];
        a.extend_from_slice(args);
        self.agent_cmd(&a)
            .config(self.agent_toml())
            .spawn(&self.watch_log())
    }

    /// `op-agent audit verify` on this host's log must exit 0 (intact); `context` names the
    /// situation in the failure message.
    pub fn assert_audit_intact(&self, context: &str) {
        let v = self.agent(&["audit", "verify"]);
        assert_eq!(v.code(), Some(0), "audit verify ({context}): {}", v.text());
    }

    /// Every audit row of this host, in `seq` order.
    pub fn audit_rows(&self) -> Vec<AuditRow> {
        read_audit_rows(&self.audit_db())
    }

    /// The audit rows of container `vmid`.
    pub fn audit_rows_for(&self, vmid: u32) -> Vec<AuditRow> {
        self.audit_rows()
            .into_iter()
            .filter(|r| r.vmid == i64::from(vmid))
            .collect()
    }

    /// The audit rows of container `vmid` for `step` (any phase).
    pub fn audit_step_rows(&self, vmid: u32, step: &str) -> Vec<AuditRow> {
        self.audit_rows_for(vmid)
            .into_iter()
            .filter(|r| r.step == step)
            .collect()
    }

    // ------------------------------------------------------------------ commands in the namespace

    /// Runs `cmd` inside the namespace with the host's environment (bounded).
    pub fn run(&self, cmd: &[&str]) -> CmdOutput {
        self.run_env(cmd, &[])
    }

    /// Like [`TestHost::run`] with extra environment variables.
    pub fn run_env(&self, cmd: &[&str], env: &[(&str, &str)]) -> CmdOutput {
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
        assert!(out.status.success(), "{cmd:?} failed: {}", out.text());
        out.stdout_text()
    }

    /// `ip ARGS` in the namespace, which must succeed.
    pub fn ip(&self, args: &[&str]) {
        let mut c = vec!["ip"];
        c.extend_from_slice(args);
        self.run_ok(&c);
    }

    /// `ovs-vsctl --timeout=10 ARGS` against the private OVS.
    pub fn vsctl(&self, args: &[&str]) -> CmdOutput {
        self.ovs.vsctl(args)
    }

    /// `ovs-vsctl` that must succeed; returns trimmed stdout.
    pub fn vsctl_ok(&self, args: &[&str]) -> String {
        self.ovs.vsctl_ok(args)
    }

    /// `ovs-vsctl get TABLE RECORD COLUMN`, trimmed (e.g. `"10"`, `"[]"`, `"[20, 30]"`).
    pub fn ovs_get(&self, table: &str, record: &str, column: &str) -> String {
        self.ovs.get(table, record, column)
    }

    /// Ports of an OVS bridge.
    pub fn ports(&self, bridge: &str) -> Vec<String> {
        self.ovs.ports(bridge)
    }

    // ------------------------------------------------------------------ pve-sim

    /// `pve-sim --root R ARGS` inside the namespace.
    pub fn sim(&self, args: &[&str]) -> CmdOutput {
        self.sim_env(args, &[])
    }

    /// `pve-sim --root R ARGS` inside the namespace with extra environment variables (the
    /// hookscript inherits them, and so does the post-stop hookscript later, which runs in
    /// the lxc monitor started by that `start`).
    pub fn sim_env(&self, args: &[&str], env: &[(&str, &str)]) -> CmdOutput {
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
            out.stderr_text()
        );
        out.stdout_text()
    }

    /// `pve-sim` that must succeed; returns stdout followed by stderr (the hookscript's
    /// lines included).
    pub fn sim_ok_text(&self, args: &[&str]) -> String {
        let out = self.sim(args);
        let text = out.text();
        assert!(out.status.success(), "pve-sim {args:?} failed: {text}");
        text
    }

    /// The container's state as `pve-sim status` prints it (`running` / `stopped`).
    pub fn ct_status(&self, vmid: u32) -> String {
        self.sim_ok(&["status", &vmid.to_string()])
            .trim()
            .trim_start_matches("status: ")
            .to_string()
    }

    // ------------------------------------------------------------------ links and containers

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

    /// `ip -j -d link show DEV` as JSON (`None` when the link does not exist).
    pub fn link(&self, dev: &str) -> Option<serde_json::Value> {
        let out = self.run(&["ip", "-j", "-d", "link", "show", "dev", dev]);
        if !out.status.success() {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        v.as_array()?.first().cloned()
    }

    /// True if link `dev` exists in the namespace.
    pub fn has_link(&self, dev: &str) -> bool {
        self.link(dev).is_some()
    }

    /// True when IFF_UP is set on `dev`; panics when it does not exist.
    pub fn is_up(&self, dev: &str) -> bool {
        let l = self.link(dev).unwrap_or_else(|| panic!("{dev} missing"));
        l["flags"]
            .as_array()
            .map(|f| f.iter().any(|x| x == "UP"))
            .unwrap_or(false)
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

    /// What LXC and PVE's `lxcnetaddbr` leave before post-start, without a container:
    /// `veth<vmid>i0` (peer `pc<vmid>`) up, and a Port of that name on `ovsbr0` with tag 10
    /// and no external_ids.
    pub fn plug_like_pve(&self, vmid: u32) {
        let veth = format!("veth{vmid}i0");
        let peer = format!("pc{vmid}");
        self.ip(&["link", "add", &veth, "type", "veth", "peer", "name", &peer]);
        self.ip(&["link", "set", &veth, "up"]);
        self.ip(&["link", "set", &peer, "up"]);
        self.vsctl_ok(&["add-port", "ovsbr0", &veth, "tag=10"]);
    }

    /// `Ok` when container `vmid`'s net0 is converged as link `name`: port `name` on `ovsbr0`
    /// with `tag`, owned by op-agent, applied by ovs-vswitchd (ofport > 0, no error), and
    /// neither `veth<vmid>i0` nor a port of that name is left. Otherwise what is wrong.
    pub fn converged(&self, vmid: u32, name: &str, tag: u16) -> Result<(), String> {
        let get = |t: &str, c: &str| {
            self.vsctl(&["get", t, name, c])
                .stdout_text()
                .trim()
                .to_string()
        };
        if self.link(name).is_none() {
            return Err(format!("no link {name}"));
        }
        let veth = format!("veth{vmid}i0");
        if self.link(&veth).is_some() {
            return Err(format!("{veth} still exists"));
        }
        let ports = self.ports("ovsbr0");
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

    /// Polls [`TestHost::converged`] every 20 ms until `limit`; returns the time it took.
    /// Panics with what is wrong and the watch log ([`TestHost::watch_log`]).
    pub fn wait_converged(&self, vmid: u32, name: &str, tag: u16, limit: Duration) -> Duration {
        let t = Instant::now();
        loop {
            match self.converged(vmid, name, tag) {
                Ok(()) => return t.elapsed(),
                Err(e) if t.elapsed() > limit => panic!(
                    "{name} not converged within {limit:?}: {e}\nwatch log:\n{}",
                    std::fs::read_to_string(self.watch_log()).unwrap_or_default()
                ),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// Binds the lxc monitor command socket of every vmid in this host's network namespace
    /// (from a thread that enters it), so that a service there sees those containers as
    /// running (PVE's `check_running`) without LXC. The sockets close when dropped.
    pub fn bind_running(&self, vmids: &[u32]) -> Vec<std::os::unix::net::UnixListener> {
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::net::{SocketAddr, UnixListener};
        let ns = PathBuf::from(format!("/run/netns/{}", self.netns()));
        let (root, vmids) = (self.root().to_path_buf(), vmids.to_vec());
        std::thread::spawn(move || {
            let f = std::fs::File::open(&ns).expect("netns file");
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            vmids
                .iter()
                .map(|v| {
                    let name = pve_integration::running::command_socket_name(
                        &root,
                        v.to_string().parse().unwrap(),
                    );
                    let addr =
                        SocketAddr::from_abstract_name(name.trim_start_matches('@').as_bytes())
                            .unwrap();
                    UnixListener::bind_addr(&addr).unwrap()
                })
                .collect()
        })
        .join()
        .unwrap()
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
        let report = |what: &str, r: Result<CmdOutput, String>| match r {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!("cleanup: {what}: {}", o.stderr_text().trim()),
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
            for pid in pids.stdout_text().split_whitespace() {
                if let Ok(p) = pid.parse::<i32>() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(p),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
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
