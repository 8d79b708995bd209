//! `pve-sim`: a stand-in for Proxmox VE's container start/stop machinery on real LXC and a
//! private Open vSwitch, under a relocatable root `R` (default `/`).
//!
//! It mirrors pve-container: `update_lxc_config` (the `lxc.net.N.*` block), `vm_start` /
//! `vm_stop` (hookscript phases around `lxc-start` / `lxc-stop`), `lxcnetaddbr` +
//! `net_tap_plug` + pve-common `tap_plug` (the plug step, run by LXC as `script.up`) and
//! `lxc-pve-poststop-hook` (`veth_delete` + `del-port`, then the post-stop hookscript).
//! Unlike op-agent it may call `ip`, `bridge`, `ovs-vsctl` and `lxc-*`: it stands for Proxmox.
//!
//! Every subprocess and wait is bounded in time; every error is one line on stderr with exit 1.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use pve_integration::{
    ovs_vlan_mode, paths, read_conf, running, FwNames, HostVeth, IfName, NetConf, NetIndex,
    PveConf, VlanTag, Vmid,
};

/// Bound for one `ovs-vsctl` call (also passed as `--timeout`), seconds.
const VSCTL_TIMEOUT_S: u64 = 10;
/// Bound for short commands (`ip`, `bridge`, `lxc-info`).
const SHORT: Duration = Duration::from_secs(10);
/// Bound for one hookscript run (PVE has none; op-agent's own deadline is 10 s).
const HOOK_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound for reaching RUNNING after `lxc-start` (PVE `monitor_start`: 10 s).
const RUNNING_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound for the lxc monitor to exit after `lxc-stop` (includes the post-stop hook).
const STOP_TIMEOUT: Duration = Duration::from_secs(45);
/// PATH that PVE daemons and the CLI set (pve-common `PVE/Daemon.pm`, `PVE/CLIHandler.pm`).
const PVE_PATH: &str = "/sbin:/bin:/usr/sbin:/usr/bin";
/// Marker written by the poststop step so `stop` knows it ran.
const POSTSTOP_MARKER: &str = "pve-sim-poststop.done";

type Res<T> = Result<T, String>;

/// Proxmox VE stand-in on real LXC and a private Open vSwitch.
#[derive(Parser)]
#[command(name = "pve-sim", version)]
struct Cli {
    /// Root under which etc/pve, var/lib/vz, var/lib/lxc and run/openvswitch live.
    #[arg(long, default_value = "/", global = true)]
    root: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start a private ovsdb-server + ovs-vswitchd under R/run/openvswitch and create bridges
    /// (must run inside a network namespace of its own).
    HostUp {
        /// OVS bridge to create (datapath_type=netdev); repeatable.
        #[arg(long = "bridge")]
        bridges: Vec<String>,
        /// Linux bridge to create (`ip link add type bridge`); repeatable.
        #[arg(long = "linux-bridge")]
        linux_bridges: Vec<String>,
    },
    /// Stop every running container of R, then the private OVS daemons.
    HostDown,
    /// `pct start`: write the LXC config, pre-start hook, lxc-start, wait RUNNING, post-start hook.
    Start {
        /// Container id.
        vmid: Vmid,
    },
    /// `pct stop`: pre-stop hook, lxc-stop -k, wait for the post-stop step.
    Stop {
        /// Container id.
        vmid: Vmid,
    },
    /// In-guest reboot (`reboot -f` inside the container): no hookscript phase runs.
    Reboot {
        /// Container id.
        vmid: Vmid,
    },
    /// Stop if running, then lxc-destroy.
    Destroy {
        /// Container id.
        vmid: Vmid,
    },
    /// Print `status: running` or `status: stopped`.
    Status {
        /// Container id.
        vmid: Vmid,
    },
    /// List the containers of R (from R/etc/pve/lxc/*.conf) with their status.
    List,
    /// LXC `script.up` step (PVE lxcnetaddbr): argv `<vmid> net up veth <iface>`.
    #[command(hide = true)]
    Lxcnetaddbr {
        /// Arguments as LXC passes them.
        #[arg(allow_hyphen_values = true, num_args = 0..)]
        args: Vec<String>,
    },
    /// LXC `hook.post-stop` step (PVE lxc-pve-poststop-hook): argv `<name> lxc post-stop`.
    #[command(hide = true)]
    Poststop {
        /// Arguments as LXC passes them.
        #[arg(allow_hyphen_values = true, num_args = 0..)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    // Our own tools (ip, ovs-vsctl, lxc-*) must be found even from a minimal PATH.
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::set_var(
        "PATH",
        format!("{path}:/usr/local/sbin:/usr/local/bin:{PVE_PATH}"),
    );
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pve-sim: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Res<()> {
    let root = std::fs::canonicalize(&cli.root)
        .map_err(|e| format!("root '{}': {e}", cli.root.display()))?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own executable: {e}"))?;
    let sim = Sim {
        rundir: root.join("run/openvswitch"),
        lxcpath: paths::lxcpath(&root),
        root,
        exe,
    };
    match cli.cmd {
        Cmd::HostUp {
            bridges,
            linux_bridges,
        } => sim.host_up(&bridges, &linux_bridges),
        Cmd::HostDown => sim.host_down(),
        Cmd::Start { vmid } => sim.start(vmid),
        Cmd::Stop { vmid } => sim.stop(vmid),
        Cmd::Reboot { vmid } => sim.reboot(vmid),
        Cmd::Destroy { vmid } => sim.destroy(vmid),
        Cmd::Status { vmid } => {
            let s = if running::is_running(&sim.root, vmid) {
                "running"
            } else {
                "stopped"
            };
            println!("status: {s}");
            Ok(())
        }
        Cmd::List => sim.list(),
        Cmd::Lxcnetaddbr { args } => sim.lxcnetaddbr(&args),
        Cmd::Poststop { args } => sim.poststop(&args),
    }
}

fn one_line(s: &str) -> String {
    s.trim().replace(['\n', '\r'], " | ")
}

/// Result of a bounded subprocess run.
struct Ran {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// How a subprocess's output is handled.
#[derive(Clone, Copy, PartialEq)]
enum Out {
    /// Collect stdout and stderr; after exit wait briefly (300 ms) for EOF (daemons may keep
    /// the pipes open).
    Capture,
    /// Copy stdout/stderr through to ours as they come, and wait for EOF on both pipes within
    /// the deadline (PVE `run_command` semantics).
    PassThrough,
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` with stdin a pipe already at EOF, bounded by `timeout` (the child is killed then).
fn run_bounded(cmd: &mut Command, timeout: Duration, out: Out) -> Res<Ran> {
    let what = describe(cmd);
    let deadline = Instant::now() + timeout;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("command '{what}' failed to start: {e}"))?;
    drop(child.stdin.take());
    let mut readers = Vec::new();
    for (i, pipe) in [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .enumerate()
    {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel::<()>();
        if let Some(mut pipe) = pipe {
            let b = Arc::clone(&buf);
            std::thread::spawn(move || {
                let mut chunk = [0u8; 4096];
                loop {
                    match pipe.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if out == Out::PassThrough {
                                if i == 0 {
                                    let mut o = std::io::stdout();
                                    let _ = o.write_all(&chunk[..n]);
                                    let _ = o.flush();
                                } else {
                                    let _ = std::io::stderr().write_all(&chunk[..n]);
                                }
                            }
                            if let Ok(mut v) = b.lock() {
                                v.extend_from_slice(&chunk[..n]);
                            }
                        }
                    }
                }
                let _ = tx.send(());
            });
        }
        readers.push((buf, rx));
    }
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "command '{what}' got timeout after {} s",
                    timeout.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(format!("command '{what}': wait failed: {e}")),
        }
    };
    let mut texts = Vec::new();
    for (buf, rx) in readers {
        let grace = match out {
            Out::Capture => Duration::from_millis(300),
            Out::PassThrough => deadline.saturating_duration_since(Instant::now()),
        };
        if rx.recv_timeout(grace).is_err() && out == Out::PassThrough {
            return Err(format!(
                "command '{what}' got timeout: output pipe still open after exit"
            ));
        }
        let text = buf
            .lock()
            .map(|v| String::from_utf8_lossy(&v).into_owned())
            .unwrap_or_default();
        texts.push(text);
    }
    let stderr = texts.pop().unwrap_or_default();
    let stdout = texts.pop().unwrap_or_default();
    Ok(Ran {
        status,
        stdout,
        stderr,
    })
}

/// `exit code N` / `got signal N`, as pve-common `run_command` words it.
fn status_text(st: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (st.code(), st.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("got signal {s}"),
        _ => "unknown status".to_string(),
    }
}

/// Runs a command and fails (one line, with its first stderr line) unless it exits 0.
fn check(cmd: &mut Command, timeout: Duration) -> Res<String> {
    let what = describe(cmd);
    let r = run_bounded(cmd, timeout, Out::Capture)?;
    if r.status.success() {
        Ok(r.stdout)
    } else {
        let first = r
            .stderr
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        Err(format!(
            "command '{what}' failed: {}{}{}",
            status_text(r.status),
            if first.is_empty() { "" } else { ": " },
            first.trim()
        ))
    }
}

fn ip(args: &[&str]) -> Res<String> {
    check(Command::new("ip").args(args), SHORT)
}

fn sys_exists(dev: &str, sub: &str) -> bool {
    !dev.is_empty()
        && !dev.contains('/')
        && Path::new("/sys/class/net").join(dev).join(sub).exists()
}

fn read_bridge_mtu(bridge: &str) -> Res<u32> {
    if bridge.is_empty() || bridge.contains('/') {
        return Err(format!("bridge '{bridge}' does not exist"));
    }
    std::fs::read_to_string(Path::new("/sys/class/net").join(bridge).join("mtu"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| format!("bridge '{bridge}' does not exist"))
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The firewall bridge devices of a PVE veth name (pve-common `src/PVE/Network.pm`
/// `$parse_tap_device_name` + `$compute_fwbr_names`); `None` for any other name.
fn fw_names(iface: &str) -> Option<FwNames> {
    let (vmid, net) = HostVeth::parse(iface)?;
    HostVeth::new(vmid, net).ok().map(|v| FwNames::of(&v))
}

/// The `lxc.net.N.veth.pair` PVE writes for `netN` ([`HostVeth::new`]), even when it is too
/// long for LXC: the simulator does what PVE does.
fn pve_veth_pair(vmid: Vmid, net: NetIndex) -> String {
    HostVeth::new(vmid, net).map_or_else(|e| e.full(), |v| v.to_string())
}

struct Sim {
    root: PathBuf,
    rundir: PathBuf,
    lxcpath: PathBuf,
    exe: PathBuf,
}

impl Sim {
    fn ovs_env<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        cmd.env("OVS_RUNDIR", &self.rundir)
            .env("OVS_LOGDIR", &self.rundir)
            .env("OVS_DBDIR", &self.rundir)
    }

    fn vsctl_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ovs-vsctl");
        self.ovs_env(&mut c)
            .arg(format!("--timeout={VSCTL_TIMEOUT_S}"))
            .args(args);
        c
    }

    fn vsctl(&self, args: &[&str]) -> Res<String> {
        check(
            &mut self.vsctl_cmd(args),
            Duration::from_secs(VSCTL_TIMEOUT_S + 2),
        )
    }

    /// `ovs-vsctl ...` with output discarded and errors ignored (PVE's `del-port` calls).
    fn vsctl_quiet(&self, args: &[&str]) {
        let _ = run_bounded(
            &mut self.vsctl_cmd(args),
            Duration::from_secs(VSCTL_TIMEOUT_S + 2),
            Out::Capture,
        );
    }

    fn lxc(&self, tool: &str, vmid: Vmid) -> Command {
        let mut c = Command::new(tool);
        c.arg("-P")
            .arg(&self.lxcpath)
            .arg("-n")
            .arg(vmid.to_string());
        c
    }

    fn ctdir(&self, vmid: Vmid) -> PathBuf {
        self.lxcpath.join(vmid.to_string())
    }

    fn conf(&self, vmid: Vmid) -> Res<PveConf> {
        read_conf(&self.root, vmid)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| {
                format!(
                    "Configuration file '{}' does not exist",
                    paths::lxc_conf_path(&self.root, vmid).display()
                )
            })
    }

    // ---------------------------------------------------------------- host-up / host-down

    fn host_up(&self, bridges: &[String], linux_bridges: &[String]) -> Res<()> {
        if !in_own_netns()? {
            return Err("host-up refuses to run in the initial network namespace (only one userspace ovs-vswitchd per netns): use 'ip netns exec NS pve-sim ...'".into());
        }
        for d in [
            "etc/pve/lxc",
            "var/lib/vz/snippets",
            "var/lib/lxc",
            "run/openvswitch",
            "run/pve-sim",
        ] {
            std::fs::create_dir_all(self.root.join(d)).map_err(|e| format!("mkdir {d}: {e}"))?;
        }
        let pidfile = self.rundir.join("ovsdb-server.pid");
        if pid_alive(&pidfile).is_some() {
            return Err(format!("OVS already up under {}", self.rundir.display()));
        }
        let _ = ip(&["link", "set", "lo", "up"]);
        let db = self.rundir.join("conf.db");
        if !db.exists() {
            check(
                Command::new("ovsdb-tool")
                    .arg("create")
                    .arg(&db)
                    .arg("/usr/share/openvswitch/vswitch.ovsschema"),
                SHORT,
            )?;
        }
        let r = |f: &str| self.rundir.join(f).display().to_string();
        check(
            self.ovs_env(&mut Command::new("ovsdb-server"))
                .arg(&db)
                .arg(format!("--remote=punix:{}", r("db.sock")))
                .arg(format!("--unixctl={}", r("ovsdb-server.ctl")))
                .arg(format!("--pidfile={}", r("ovsdb-server.pid")))
                .arg(format!("--log-file={}", r("ovsdb-server.log")))
                .arg("--detach"),
            SHORT,
        )?;
        self.vsctl(&["--no-wait", "init"])?;
        check(
            self.ovs_env(&mut Command::new("ovs-vswitchd"))
                .arg(format!("unix:{}", r("db.sock")))
                .arg(format!("--unixctl={}", r("ovs-vswitchd.ctl")))
                .arg(format!("--pidfile={}", r("ovs-vswitchd.pid")))
                .arg(format!("--log-file={}", r("ovs-vswitchd.log")))
                .arg("--detach"),
            SHORT,
        )?;
        for b in bridges {
            self.vsctl(&[
                "--",
                "add-br",
                b,
                "--",
                "set",
                "Bridge",
                b,
                "datapath_type=netdev",
            ])?;
            ip(&["link", "set", b, "up"])?;
        }
        let mut record = String::new();
        for b in linux_bridges {
            ip(&["link", "add", "name", b, "type", "bridge"])?;
            ip(&["link", "set", b, "up"])?;
            record.push_str(b);
            record.push('\n');
        }
        std::fs::write(self.root.join("run/pve-sim/linux-bridges"), record)
            .map_err(|e| format!("write run/pve-sim/linux-bridges: {e}"))?;
        println!(
            "pve-sim: OVS up, db unix:{} (bridges: {}; linux bridges: {})",
            r("db.sock"),
            bridges.join(" "),
            linux_bridges.join(" ")
        );
        Ok(())
    }

    /// Teardown keeps going: every step is tried, the first error is reported at the end.
    fn host_down(&self) -> Res<()> {
        let mut errors = Vec::new();
        for vmid in self.container_ids() {
            if running::is_running(&self.root, vmid) {
                if let Err(e) = self.stop(vmid) {
                    errors.push(e);
                }
            }
        }
        let ctl = self.rundir.join("ovs-vswitchd.ctl");
        if ctl.exists() {
            let mut c = Command::new("ovs-appctl");
            self.ovs_env(&mut c)
                .arg("-t")
                .arg(&ctl)
                .args(["exit", "--cleanup"]);
            if let Err(e) = check(&mut c, Duration::from_secs(15)) {
                errors.push(e);
            }
        }
        for daemon in ["ovs-vswitchd", "ovsdb-server"] {
            let pidfile = self.rundir.join(format!("{daemon}.pid"));
            if let Err(e) = stop_pid(&pidfile) {
                errors.push(format!("{daemon}: {e}"));
            }
        }
        // The userspace datapath's own device outlives `exit --cleanup`.
        if sys_exists("ovs-netdev", "") {
            let _ = ip(&["link", "delete", "dev", "ovs-netdev"]);
        }
        if let Ok(list) = std::fs::read_to_string(self.root.join("run/pve-sim/linux-bridges")) {
            for b in list.lines().filter(|l| !l.is_empty()) {
                if sys_exists(b, "") {
                    if let Err(e) = ip(&["link", "delete", "dev", b]) {
                        errors.push(e);
                    }
                }
            }
        }
        match errors.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn container_ids(&self) -> Vec<Vmid> {
        let mut ids: Vec<Vmid> = std::fs::read_dir(&self.lxcpath)
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        ids
    }

    // ---------------------------------------------------------------- container config

    /// Creates the busybox container once and keeps its template config as `config.base`
    /// (without lxc.net/apparmor/hook keys), so every start rewrites `config` from it.
    fn ensure_container(&self, vmid: Vmid) -> Res<()> {
        let dir = self.ctdir(vmid);
        let base = dir.join("config.base");
        if base.exists() {
            return Ok(());
        }
        if !dir.join("config").exists() {
            std::fs::create_dir_all(&self.lxcpath).map_err(|e| format!("mkdir lxcpath: {e}"))?;
            check(
                self.lxc("lxc-create", vmid).args(["-t", "busybox"]),
                Duration::from_secs(120),
            )?;
            // No DHCP client in the guest: the address comes from lxc.net.N.ipv4.address.
            let rcs = dir.join("rootfs/etc/init.d/rcS");
            if let Ok(t) = std::fs::read_to_string(&rcs) {
                let kept: String = t
                    .lines()
                    .filter(|l| !l.contains("udhcpc"))
                    .map(|l| format!("{l}\n"))
                    .collect();
                std::fs::write(&rcs, kept).map_err(|e| format!("write {}: {e}", rcs.display()))?;
            }
        }
        let cfg = std::fs::read_to_string(dir.join("config"))
            .map_err(|e| format!("read {}/config: {e}", dir.display()))?;
        let kept: String = cfg
            .lines()
            .filter(|l| {
                let k = l.trim_start();
                !(k.starts_with("lxc.net.")
                    || k.starts_with("lxc.apparmor.")
                    || k.starts_with("lxc.hook."))
            })
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&base, kept).map_err(|e| format!("write {}: {e}", base.display()))
    }

    /// Writes a wrapper script under R/usr/share/lxc that execs this binary's step.
    fn wrapper(&self, name: &str, step: &str) -> Res<PathBuf> {
        let path = self.root.join("usr/share/lxc").join(name);
        if let Some(p) = path.parent() {
            std::fs::create_dir_all(p).map_err(|e| format!("mkdir {}: {e}", p.display()))?;
        }
        let text = format!(
            "#!/bin/sh\n# written by pve-sim: PVE's {name}\nexec {} --root {} {step} \"$@\"\n",
            sh_quote(&self.exe.display().to_string()),
            sh_quote(&self.root.display().to_string())
        );
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).map_err(|e| format!("write {}: {e}", tmp.display()))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("chmod {}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &path).map_err(|e| format!("rename {}: {e}", path.display()))?;
        Ok(path)
    }

    /// pve-container `update_lxc_config`: the generated part of `/var/lib/lxc/<vmid>/config`.
    fn write_lxc_config(&self, vmid: Vmid, conf: &PveConf) -> Res<()> {
        let dir = self.ctdir(vmid);
        let mut raw = std::fs::read_to_string(dir.join("config.base"))
            .map_err(|e| format!("read {}/config.base: {e}", dir.display()))?;
        let netup = self.wrapper("lxcnetaddbr", "lxcnetaddbr")?;
        let poststop = self.wrapper("hooks/lxc-pve-poststop-hook", "poststop")?;
        raw.push_str("\n# generated by pve-sim (PVE update_lxc_config)\n");
        raw.push_str("lxc.apparmor.profile = unconfined\n");
        raw.push_str(&format!("lxc.hook.post-stop = {}\n", poststop.display()));
        for (n, net) in &conf.nets {
            let Some(index) = NetIndex::new(*n) else {
                continue;
            };
            let key = format!("net{n}");
            let bridge = net
                .bridge
                .as_ref()
                .map(|b| b.as_str())
                .ok_or_else(|| format!("{key}: bridge '' does not exist"))?;
            let bridge_mtu = read_bridge_mtu(bridge).map_err(|e| format!("{key}: {e}"))?;
            let mtu = net.mtu.unwrap_or(bridge_mtu);
            if mtu > bridge_mtu {
                return Err(format!(
                    "{key}: MTU size '{mtu}' is bigger than bridge MTU '{bridge_mtu}'"
                ));
            }
            raw.push_str(&format!("lxc.net.{n}.type = veth\n"));
            raw.push_str(&format!(
                "lxc.net.{n}.veth.pair = {}\n",
                pve_veth_pair(vmid, index)
            ));
            if let Some(h) = &net.hwaddr {
                raw.push_str(&format!("lxc.net.{n}.hwaddr = {h}\n"));
            }
            raw.push_str(&format!("lxc.net.{n}.name = {}\n", net.name));
            raw.push_str(&format!("lxc.net.{n}.mtu = {mtu}\n"));
            raw.push_str(&format!("lxc.net.{n}.script.up = {}\n", netup.display()));
            let mut flags_up = false;
            if let Some(addr) = net.ip.as_deref().filter(|a| a.contains('/')) {
                raw.push_str(&format!("lxc.net.{n}.ipv4.address = {addr}\n"));
                if let Some(gw) = &net.gw {
                    raw.push_str(&format!("lxc.net.{n}.ipv4.gateway = {gw}\n"));
                }
                flags_up = true;
            }
            if let Some(addr) = net.ip6.as_deref().filter(|a| a.contains('/')) {
                raw.push_str(&format!("lxc.net.{n}.ipv6.address = {addr}\n"));
                if let Some(gw) = &net.gw6 {
                    raw.push_str(&format!("lxc.net.{n}.ipv6.gateway = {gw}\n"));
                }
                flags_up = true;
            }
            if flags_up {
                raw.push_str(&format!("lxc.net.{n}.flags = up\n"));
            }
        }
        // Raw lxc.* keys of the PVE conf come after the generated block, so they win.
        for (k, v) in &conf.lxc {
            raw.push_str(&format!("{k} = {v}\n"));
        }
        let path = dir.join("config");
        std::fs::write(&path, raw).map_err(|e| format!("write {}: {e}", path.display()))
    }

    // ---------------------------------------------------------------- hookscript

    /// pve-guest-common `exec_hookscript`: argv `<script> <vmid> <phase>`, stdin at EOF,
    /// env inherited + `LC_ALL=C`, `LVM_SUPPRESS_FD_WARNINGS=1`, PVE's PATH; output passed
    /// through. With `stop_on_error` a failure is the error, otherwise only a warning.
    fn exec_hookscript(
        &self,
        conf: &PveConf,
        vmid: Vmid,
        phase: &str,
        stop_on_error: bool,
    ) -> Res<()> {
        let Some(volid) = conf.hookscript.as_deref() else {
            return Ok(());
        };
        let result = (|| -> Res<()> {
            let path = paths::resolve_volume(&self.root, volid).map_err(|e| e.to_string())?;
            let meta = std::fs::metadata(&path);
            if !meta.as_ref().is_ok_and(|m| m.is_file()) {
                return Err(format!("script '{volid}' does not exist"));
            }
            use std::os::unix::fs::PermissionsExt;
            if meta
                .as_ref()
                .is_ok_and(|m| m.permissions().mode() & 0o111 == 0)
            {
                return Err(format!("script '{volid}' is not executable"));
            }
            let what = format!("{} {vmid} {phase}", path.display());
            let r = run_bounded(
                Command::new(&path)
                    .arg(vmid.to_string())
                    .arg(phase)
                    .env("LC_ALL", "C")
                    .env("LVM_SUPPRESS_FD_WARNINGS", "1")
                    .env("PATH", PVE_PATH),
                HOOK_TIMEOUT,
                Out::PassThrough,
            )
            .map_err(|e| format!("command '{what}' failed: {e}"))?;
            if r.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "command '{what}' failed: {}",
                    status_text(r.status)
                ))
            }
        })();
        match result {
            Ok(()) => Ok(()),
            Err(e) => {
                let msg = format!("hookscript error for {vmid} on {phase}: {e}");
                if stop_on_error {
                    Err(msg)
                } else {
                    eprintln!("{msg}");
                    Ok(())
                }
            }
        }
    }

    // ---------------------------------------------------------------- start / stop / reboot

    fn state(&self, vmid: Vmid) -> (String, Option<u32>) {
        let out =
            check(self.lxc("lxc-info", vmid).args(["-s", "-p", "-H"]), SHORT).unwrap_or_default();
        // Lines look like `State:          RUNNING` and `PID:            14926`.
        let field = |name: &str| {
            out.lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim() == name)
                .map(|(_, v)| v.trim().to_string())
        };
        let state = field("State").unwrap_or_default();
        let pid = field("PID").and_then(|p| p.parse().ok());
        (state, pid)
    }

    fn start(&self, vmid: Vmid) -> Res<()> {
        let conf = self.conf(vmid)?;
        if running::is_running(&self.root, vmid) {
            return Err(format!("CT {vmid} already running"));
        }
        self.ensure_container(vmid)?;
        self.write_lxc_config(vmid, &conf)?;
        self.exec_hookscript(&conf, vmid, "pre-start", true)?;
        let log = self.ctdir(vmid).join("lxc.log");
        if let Err(e) = check(
            self.lxc("lxc-start", vmid)
                .arg("-o")
                .arg(&log)
                .args(["-l", "INFO"]),
            Duration::from_secs(60),
        ) {
            return Err(format!("startup for container '{vmid}' failed: {e}"));
        }
        let deadline = Instant::now() + RUNNING_TIMEOUT;
        loop {
            if self.state(vmid).0 == "RUNNING" {
                break;
            }
            if Instant::now() >= deadline {
                return Err(format!("CT {vmid}: timeout waiting for RUNNING"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.exec_hookscript(&conf, vmid, "post-start", false)
    }

    fn stop(&self, vmid: Vmid) -> Res<()> {
        if !running::is_running(&self.root, vmid) {
            return Err(format!("CT {vmid} not running"));
        }
        // A missing or broken conf must not keep a container running.
        let conf = self.conf(vmid);
        if let Ok(c) = &conf {
            self.exec_hookscript(c, vmid, "pre-stop", false)?;
        }
        let marker = self.ctdir(vmid).join(POSTSTOP_MARKER);
        let _ = std::fs::remove_file(&marker);
        let stop_err = check(
            self.lxc("lxc-stop", vmid).arg("-k"),
            Duration::from_secs(30),
        )
        .err();
        // PVE vm_stop waits for EOF on the command socket: lxc-start (and so the post-stop
        // hook with the hookscript) has finished then.
        let deadline = Instant::now() + STOP_TIMEOUT;
        while running::is_running(&self.root, vmid) {
            if Instant::now() >= deadline {
                return Err(format!(
                    "CT {vmid}: lxc monitor still running {} s after lxc-stop{}",
                    STOP_TIMEOUT.as_secs(),
                    stop_err.map(|e| format!(" ({e})")).unwrap_or_default()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if !marker.exists() {
            eprintln!("pve-sim: warning: post-stop hook of CT {vmid} did not run, running its cleanup now");
            self.poststop_cleanup(vmid, "stop")?;
        }
        Ok(())
    }

    fn reboot(&self, vmid: Vmid) -> Res<()> {
        if !running::is_running(&self.root, vmid) {
            return Err(format!("CT {vmid} not running"));
        }
        let (_, old_pid) = self.state(vmid);
        // The guest reboots itself; lxc-attach may die with it, so its status is not checked.
        let _ = run_bounded(
            self.lxc("lxc-attach", vmid)
                .args(["--", "/bin/reboot", "-f"]),
            SHORT,
            Out::Capture,
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut restarted_by_us = false;
        loop {
            let (state, pid) = self.state(vmid);
            if state == "RUNNING" && pid.is_some() && pid != old_pid {
                return Ok(());
            }
            if !restarted_by_us && !running::is_running(&self.root, vmid) {
                // lxc did not restart it itself: do what pve-container-stop-wrapper does.
                restarted_by_us = true;
                let log = self.ctdir(vmid).join("lxc.log");
                check(
                    self.lxc("lxc-start", vmid)
                        .arg("-o")
                        .arg(&log)
                        .args(["-l", "INFO"]),
                    Duration::from_secs(60),
                )
                .map_err(|e| format!("restart of CT {vmid} failed: {e}"))?;
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "CT {vmid}: not RUNNING again within 20 s of the reboot"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn destroy(&self, vmid: Vmid) -> Res<()> {
        if running::is_running(&self.root, vmid) {
            self.stop(vmid)?;
        }
        if self.ctdir(vmid).join("config").exists() {
            check(&mut self.lxc("lxc-destroy", vmid), Duration::from_secs(60))?;
        }
        let _ = std::fs::remove_dir_all(self.ctdir(vmid));
        Ok(())
    }

    fn list(&self) -> Res<()> {
        let mut ids: Vec<Vmid> = std::fs::read_dir(self.root.join("etc/pve/lxc"))
            .map(|d| {
                d.filter_map(|e| {
                    let name = e.ok()?.file_name();
                    name.to_str()?.strip_suffix(".conf")?.parse().ok()
                })
                .collect()
            })
            .unwrap_or_default();
        ids.sort();
        println!("{:<10} {:<10} Name", "VMID", "Status");
        for v in ids {
            let status = if running::is_running(&self.root, v) {
                "running"
            } else {
                "stopped"
            };
            let name = read_conf(&self.root, v)
                .ok()
                .flatten()
                .and_then(|c| c.options.get("hostname").cloned())
                .unwrap_or_default();
            println!("{:<10} {:<10} {name}", v.to_string(), status);
        }
        Ok(())
    }

    // ---------------------------------------------------------------- lxcnetaddbr

    /// pve-container `src/lxcnetaddbr`.
    fn lxcnetaddbr(&self, args: &[String]) -> Res<()> {
        if args.len() != 5 {
            return Err(format!(
                "lxcnetaddbr: got wrong number of arguments ({})",
                args.len()
            ));
        }
        let vmid: Vmid = args[0].parse().map_err(|e| format!("lxcnetaddbr: {e}"))?;
        if std::env::var("LXC_NAME").ok().as_deref() != Some(args[0].as_str()) {
            return Err(format!("lxcnetaddbr: LXC_NAME does not match vmid {vmid}"));
        }
        let (typ, iface) = (&args[3], &args[4]);
        if typ != "veth" {
            return Err(format!("lxcnetaddbr: got unexpected network type '{typ}'"));
        }
        let nodef = || format!("unable to find network definition for interface '{iface}'");
        let netid = HostVeth::parse(iface)
            .map(|(_, n)| n.get())
            .ok_or_else(nodef)?;
        let conf = self.conf(vmid)?;
        let net = conf.nets.get(&netid).ok_or_else(nodef)?;
        let bridge = net
            .bridge
            .as_ref()
            .map(IfName::as_str)
            .ok_or_else(|| "missing bridge configuration".to_string())?;
        let bridge_mtu = read_bridge_mtu(bridge)?;
        ip(&[
            "link",
            "set",
            "dev",
            iface,
            "up",
            "mtu",
            &bridge_mtu.to_string(),
        ])?;
        self.net_tap_plug(iface, net, bridge, bridge_mtu)
    }

    /// pve-container `net_tap_plug` → pve-common `tap_plug`.
    fn net_tap_plug(&self, iface: &str, net: &NetConf, bridge: &str, mtu: u32) -> Res<()> {
        if net.link_down {
            // "Don't add disconnected interfaces to the bridge".
            ip(&["link", "set", "dev", iface, "down"])?;
            return Ok(());
        }
        // "cleanup old port config from any openvswitch bridge"
        self.vsctl_quiet(&["del-port", iface]);
        let trunks = net
            .trunks
            .iter()
            .map(VlanTag::to_string)
            .collect::<Vec<_>>()
            .join(",");
        if sys_exists(bridge, "bridge") {
            self.cleanup_firewall_bridge(iface);
            let vlan_aware =
                std::fs::read_to_string(format!("/sys/class/net/{bridge}/bridge/vlan_filtering"))
                    .map(|s| s.trim() == "1")
                    .unwrap_or(false);
            if !vlan_aware && !net.trunks.is_empty() {
                return Err("vlan aware feature need to be enabled to use trunks".into());
            }
            if !vlan_aware && net.tag.is_some() {
                return Err(format!(
                    "pve-sim does not simulate activate_bridge_vlan (tag on non-vlan-aware Linux bridge '{bridge}')"
                ));
            }
            // nftables firewall (PVE's default) needs no fwbr on a Linux bridge.
            let iptables = self
                .root
                .join("run/proxmox-nftables-firewall-force-disable")
                .exists();
            if net.firewall && iptables {
                let FwNames {
                    fwbr, fwln, fwpr, ..
                } = fw_names(iface).ok_or_else(|| {
                    format!("can't create firewall bridge for random interface name '{iface}'")
                })?;
                self.create_fwbr(&fwbr, mtu)?;
                ip(&[
                    "link",
                    "add",
                    &fwln,
                    "mtu",
                    &mtu.to_string(),
                    "type",
                    "veth",
                    "peer",
                    "name",
                    &fwpr,
                    "mtu",
                    &mtu.to_string(),
                ])?;
                ip(&["link", "set", &fwln, "up"])?;
                ip(&["link", "set", &fwpr, "up"])?;
                bridge_add_interface(bridge, &fwpr, mtu, net.tag, &net.trunks, vlan_aware)?;
                bridge_add_interface(&fwbr, &fwln, mtu, None, &[], false)?;
                bridge_add_interface(&fwbr, iface, mtu, None, &[], false)?;
            } else {
                bridge_add_interface(bridge, iface, mtu, net.tag, &net.trunks, vlan_aware)?;
            }
        } else if self.vsctl(&["br-exists", bridge]).is_ok() {
            self.cleanup_firewall_bridge(iface);
            let port = |name: &str, internal: bool| -> Res<()> {
                let mut args: Vec<String> =
                    vec!["--".into(), "add-port".into(), bridge.into(), name.into()];
                if let Some(t) = net.tag {
                    args.push(format!("tag={t}"));
                }
                if !trunks.is_empty() {
                    args.push(format!("trunks={trunks}"));
                }
                if let Some(mode) = ovs_vlan_mode(net.tag, &net.trunks) {
                    args.push(format!("vlan_mode={mode}"));
                }
                args.extend(["--", "set", "Interface", name].map(String::from));
                args.push(format!("mtu_request={mtu}"));
                if internal {
                    args.extend(
                        ["--", "set", "Interface", name, "type=internal"].map(String::from),
                    );
                }
                let a: Vec<&str> = args.iter().map(String::as_str).collect();
                self.vsctl(&a).map(|_| ())
            };
            if net.firewall {
                let FwNames {
                    fwbr,
                    ovs_int: ovsint,
                    ..
                } = fw_names(iface).ok_or_else(|| {
                    format!("can't create firewall bridge for random interface name '{iface}'")
                })?;
                self.create_fwbr(&fwbr, mtu)?;
                bridge_add_interface(&fwbr, iface, mtu, None, &[], false)?;
                self.vsctl_quiet(&["del-port", &ovsint]);
                port(&ovsint, true)?;
                ip(&["link", "set", &ovsint, "up"])?;
                ip(&["link", "set", &ovsint, "master", &fwbr])?;
            } else {
                port(iface, false)?;
            }
            disable_ipv6(iface);
        } else {
            return Err(format!(
                "bridge '{bridge}' is neither a linux nor an OVS bridge!"
            ));
        }
        ip(&["link", "set", "dev", iface, "up"])?;
        Ok(())
    }

    fn create_fwbr(&self, fwbr: &str, mtu: u32) -> Res<()> {
        if !sys_exists(fwbr, "") {
            ip(&[
                "link",
                "add",
                "name",
                fwbr,
                "mtu",
                &mtu.to_string(),
                "type",
                "bridge",
            ])?;
        }
        disable_ipv6(fwbr);
        ip(&["link", "set", "dev", fwbr, "up"])?;
        Ok(())
    }

    /// pve-common `$cleanup_firewall_bridge`; errors ignored like PVE's `eval` around it.
    fn cleanup_firewall_bridge(&self, iface: &str) {
        let Some(FwNames {
            fwbr,
            fwpr,
            ovs_int: ovsint,
            ..
        }) = fw_names(iface)
        else {
            return;
        };
        if sys_exists(&ovsint, "") {
            self.vsctl_quiet(&["del-port", &ovsint]);
        }
        if sys_exists(&fwpr, "") {
            let _ = ip(&["link", "delete", "dev", &fwpr]);
        }
        if sys_exists(&fwbr, "") {
            let _ = ip(&["link", "set", "dev", &fwbr, "down"]);
            let _ = ip(&["link", "delete", "dev", &fwbr]);
        }
    }

    // ---------------------------------------------------------------- poststop

    /// pve-container `lxc-pve-poststop-hook` (run by lxc as `lxc.hook.post-stop`).
    fn poststop(&self, args: &[String]) -> Res<()> {
        let name = std::env::var("LXC_NAME")
            .ok()
            .or_else(|| args.first().cloned())
            .unwrap_or_default();
        let vmid: Vmid = name.parse().map_err(|e| format!("poststop: {e}"))?;
        let target = std::env::var("LXC_TARGET").unwrap_or_else(|_| "stop".into());
        self.poststop_cleanup(vmid, &target)
    }

    fn poststop_cleanup(&self, vmid: Vmid, target: &str) -> Res<()> {
        let conf = self.conf(vmid)?;
        // "Because netlink is not reliable and lxc can fail to delete the veth" (PVE #929).
        for n in conf.nets.keys() {
            if let Some(idx) = NetIndex::new(*n) {
                self.veth_delete(&pve_veth_pair(vmid, idx));
            }
        }
        let marker = self.ctdir(vmid).join(POSTSTOP_MARKER);
        let _ = std::fs::write(&marker, format!("{target}\n"));
        if target == "reboot" {
            // PVE exits here (no post-stop hookscript) and restarts the unit; lxc restarts
            // the container itself in the simulator.
            return Ok(());
        }
        self.exec_hookscript(&conf, vmid, "post-stop", false)
    }

    /// pve-common `veth_delete` + `tap_unplug`; errors ignored as in PVE.
    fn veth_delete(&self, veth: &str) {
        if sys_exists(veth, "") {
            let _ = ip(&["link", "delete", "dev", veth]);
        }
        if sys_exists(veth, "brport/bridge") {
            let _ = ip(&["link", "set", veth, "nomaster"]);
        }
        self.cleanup_firewall_bridge(veth);
        self.vsctl_quiet(&["del-port", veth]);
    }
}

/// pve-common `$bridge_add_interface` (Linux bridge).
fn bridge_add_interface(
    bridge: &str,
    iface: &str,
    mtu: u32,
    tag: Option<VlanTag>,
    trunks: &[VlanTag],
    vlan_aware: bool,
) -> Res<()> {
    ip(&["link", "set", iface, "mtu", &mtu.to_string()])?;
    disable_ipv6(iface);
    ip(&["link", "set", iface, "master", bridge])
        .map_err(|e| format!("can't enslave '{iface}' to '{bridge}': {e}"))?;
    if vlan_aware {
        let bv = |args: &[&str]| check(Command::new("bridge").arg("vlan").args(args), SHORT);
        bv(&["del", "dev", iface, "vid", "1-4094"])?;
        if !trunks.is_empty() {
            for t in trunks {
                bv(&["add", "dev", iface, "vid", &t.to_string()])?;
            }
        } else if tag.is_none() {
            bv(&["add", "dev", iface, "vid", "2-4094"])?;
        }
        let pvid = tag.map_or(1, VlanTag::get).to_string();
        bv(&["add", "dev", iface, "vid", &pvid, "pvid", "untagged"])?;
    }
    Ok(())
}

fn disable_ipv6(iface: &str) {
    if !iface.contains('/') {
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{iface}/disable_ipv6"), "1");
    }
}

/// Whether this process runs outside the initial network namespace: `/proc/self/ns/net`
/// differs from `/proc/1/ns/net`. Where `/proc/1/ns/net` is unreadable (a sandboxed pid 1),
/// being in one of the named namespaces of `/run/netns` (same nsfs inode) counts instead.
fn in_own_netns() -> Res<bool> {
    use std::os::unix::fs::MetadataExt;
    let own =
        std::fs::metadata("/proc/self/ns/net").map_err(|e| format!("/proc/self/ns/net: {e}"))?;
    if let Ok(init) = std::fs::metadata("/proc/1/ns/net") {
        return Ok((own.dev(), own.ino()) != (init.dev(), init.ino()));
    }
    let named = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.filter_map(|e| std::fs::metadata(e.ok()?.path()).ok())
                .any(|m| m.ino() == own.ino() && m.dev() == own.dev())
        })
        .unwrap_or(false);
    Ok(named)
}

/// The pid in `pidfile` if that process is alive.
fn pid_alive(pidfile: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()?;
    Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
}

/// SIGTERM the process of `pidfile`, wait up to 5 s, then SIGKILL.
fn stop_pid(pidfile: &Path) -> Res<()> {
    let Some(pid) = pid_alive(pidfile) else {
        return Ok(());
    };
    let _ = run_bounded(
        Command::new("kill").arg(pid.to_string()),
        SHORT,
        Out::Capture,
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while Path::new(&format!("/proc/{pid}")).exists() {
        if Instant::now() >= deadline {
            check(Command::new("kill").args(["-9", &pid.to_string()]), SHORT)?;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}
