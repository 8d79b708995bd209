//! `opbench`: the driver behind `make bench` (issue 7). Run by `bench/run.sh` as root inside a
//! network namespace where `pve-sim host-up` started a private OVS; never run against a
//! system-wide OVS. Every subcommand prints Markdown for `bench/report.md` on stdout and
//! progress on stderr.
//!
//! Subcommands (all times in ms, memory in KiB as `wait4(2)` reports `ru_maxrss`):
//! - `hook-ab ROOT RUNS WARMUP`: op-agent vs `bench/baseline-hook.sh`, one NIC, alternating
//!   A B A B, each run from a fresh veth pair plugged like PVE's `tap_plug`.
//! - `unmanaged ROOT RUNS`: `op-hook 999 post-start` for a guest op-agent does not manage.
//! - `storm ROOT N ROUNDS`: N post-start hooks at once, op-agent and baseline alternating.
//! - `fresh ROOT VMID`: manage VMID and give it a fresh PVE-plugged veth (for `time -v`).
//! - `floor ROOT RUNS`: what any hook pays on this host, op-agent or not: spawn→reap of
//!   `/bin/true`, `close(2)` of a packet socket bound to a veth (what ovs-vswitchd's release of
//!   a userspace-datapath port waits for), an OVSDB round trip, a warm rename over netlink.
//! - `audit-rate DIR APPENDS VERIFY_ROWS`: append rate (`synchronous=FULL`) and verify rate.
//! - `contention DIR PROCS APPENDS`: DEFERRED vs IMMEDIATE appenders, N processes.
//!
//! Environment: `OPB_AGENT` (op-agent binary), `OPB_HOOK` (op-hook), `OPB_BASELINE`
//! (baseline-hook.sh; replaced by another op-agent build when `OPB_AGENT_B` is set, to compare
//! two agent builds A B A B),
//! `OVS_RUNDIR`.

use op_agent::audit::encoding::{row_hash, RowFields, GENESIS};
use op_agent::audit::{AuditLog, AuditOptions, NewRow, Outcome};
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

type Res<T> = Result<T, String>;

const BRIDGE: &str = "ovsbr0";
const TAG: u16 = 10;
const MTU: u32 = 1500;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a = |i: usize| args.get(i).cloned().unwrap_or_default();
    let n = |i: usize, d: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let r = match a(0).as_str() {
        "hook-ab" => hook_ab(Path::new(&a(1)), n(2, 30), n(3, 3)),
        "unmanaged" => unmanaged(Path::new(&a(1)), n(2, 30)),
        "storm" => storm(Path::new(&a(1)), n(2, 10), n(3, 3)),
        "fresh" => Host::new(Path::new(&a(1))).and_then(|h| {
            let v = n(2, 1000) as u32;
            h.manage(v)?;
            h.fresh(&[v], true)
        }),
        "floor" => floor(Path::new(&a(1)), n(2, 30)),
        "watch-mem" => watch_mem(Path::new(&a(1)), n(2, 200), n(3, 5)),
        "audit-steps" => audit_steps(Path::new(&a(1)), n(2, 200)),
        "audit-rate" => audit_rate(Path::new(&a(1)), n(2, 3000), n(3, 1_000_000)),
        "contention" => contention(Path::new(&a(1)), n(2, 16), n(3, 200)),
        "contention-child" => contention_child(Path::new(&a(1)), &a(2), n(3, 200), n(4, 0)),
        other => Err(format!("opbench: unknown subcommand {other:?}")),
    };
    if let Err(e) = r {
        eprintln!("opbench: {e}");
        std::process::exit(1);
    }
}

// ------------------------------------------------------------------ statistics

struct Stats {
    med: f64,
    min: f64,
    max: f64,
    p95: f64,
}

fn stats(v: &[f64]) -> Stats {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() {
        return Stats {
            med: f64::NAN,
            min: f64::NAN,
            max: f64::NAN,
            p95: f64::NAN,
        };
    }
    let q = |p: f64| s[((s.len() as f64 - 1.0) * p).round() as usize];
    Stats {
        med: if s.len() % 2 == 1 {
            s[s.len() / 2]
        } else {
            (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0
        },
        min: s[0],
        max: s[s.len() - 1],
        p95: q(0.95),
    }
}

fn fmt3(s: &Stats) -> String {
    format!("{:.2} ({:.2} – {:.2})", s.med, s.min, s.max)
}

// ------------------------------------------------------------------ processes

fn env_path(k: &str) -> Res<PathBuf> {
    std::env::var_os(k)
        .map(PathBuf::from)
        .ok_or_else(|| format!("{k} is not set"))
}

fn run(cmd: &mut Command) -> Res<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn vsctl(args: &[String]) -> Res<String> {
    run(Command::new("ovs-vsctl").arg("--timeout=20").args(args))
}

fn ip_batch(lines: &str) -> Res<()> {
    use std::io::Write;
    let mut c = Command::new("ip")
        .args(["-force", "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("ip -batch: {e}"))?;
    c.stdin
        .take()
        .ok_or("ip -batch: no stdin")?
        .write_all(lines.as_bytes())
        .map_err(|e| format!("ip -batch: {e}"))?;
    c.wait().map_err(|e| format!("ip -batch: {e}"))?;
    Ok(())
}

/// One finished child: wall time from spawn to reap, exit status, peak RSS, stderr.
struct Done {
    ms: f64,
    cpu_ms: f64,
    ok: bool,
    rss_kib: i64,
    stderr: String,
}

/// Reaps `pid` with `wait4(2)` to get its own `ru_maxrss`.
fn wait_pid(pid: libc::pid_t) -> Res<(i32, i64, f64)> {
    let mut status = 0;
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: plain syscall on our own child with valid out-pointers.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    if r != pid {
        return Err(format!("wait4({pid}): {}", std::io::Error::last_os_error()));
    }
    Ok((status, ru.ru_maxrss, cpu_ms(&ru)))
}

/// User + system CPU of a reaped child (and its reaped descendants), ms.
fn cpu_ms(ru: &libc::rusage) -> f64 {
    let t = |v: libc::timeval| v.tv_sec as f64 * 1e3 + v.tv_usec as f64 / 1e3;
    t(ru.ru_utime) + t(ru.ru_stime)
}

/// CPU time (user + system, ms; 10 ms ticks) of the daemon whose pid file is `name`.pid in
/// OVS_RUNDIR.
fn daemon_cpu_ms(name: &str) -> Res<f64> {
    let pidf = env_path("OVS_RUNDIR")?.join(format!("{name}.pid"));
    let pid = fs::read_to_string(&pidf).map_err(|e| format!("{}: {e}", pidf.display()))?;
    let stat = fs::read_to_string(format!("/proc/{}/stat", pid.trim()))
        .map_err(|e| format!("{name} stat: {e}"))?;
    let f: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    // After the comm field: state is field 3, utime 14, stime 15 (proc(5)).
    let tick = |i: usize| {
        f.get(i - 3)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((tick(14) + tick(15)) * 1e3 / hz)
}

fn time_one(cmd: &mut Command) -> Res<Done> {
    let t = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    let mut err = child.stderr.take().ok_or("no stderr pipe")?;
    let pid = child.id() as libc::pid_t;
    let mut stderr = String::new();
    // Output is small; read to EOF (the child exits), then reap with wait4.
    let _ = err.read_to_string(&mut stderr);
    let (status, rss, cpu) = wait_pid(pid)?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    std::mem::forget(child);
    Ok(Done {
        ms,
        cpu_ms: cpu,
        ok: libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        rss_kib: rss,
        stderr,
    })
}

// ------------------------------------------------------------------ the simulated host

#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Agent,
    Baseline,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Agent => "op-agent",
            Kind::Baseline => "bash baseline",
        }
    }
}

struct Host {
    root: PathBuf,
    agent: PathBuf,
    baseline: PathBuf,
    hook: PathBuf,
}

impl Host {
    /// agent.toml keeps op-agent's defaults (`[ovsdb] timeout_ms` 5000, `[hook] deadline_ms`
    /// 10000), matching the baseline's `ovs-vsctl --timeout=5`.
    fn new(root: &Path) -> Res<Host> {
        let h = Host {
            root: root.to_path_buf(),
            agent: env_path("OPB_AGENT")?,
            baseline: env_path("OPB_BASELINE")?,
            hook: env_path("OPB_HOOK")?,
        };
        env_path("OVS_RUNDIR")?;
        for d in ["etc/pve/lxc", "etc/op-agent/containers", "var/lib/op-agent"] {
            fs::create_dir_all(root.join(d)).map_err(|e| format!("mkdir {d}: {e}"))?;
        }
        let toml = format!(
            "[ovsdb]\nsocket = \"{r}/run/openvswitch/db.sock\"\n\
             [audit]\ndatabase = \"{r}/var/lib/op-agent/audit.db\"\n[pve]\nroot = \"{r}\"\n",
            r = root.display()
        );
        fs::write(h.agent_toml(), toml).map_err(|e| format!("agent.toml: {e}"))?;
        Ok(h)
    }

    fn agent_toml(&self) -> PathBuf {
        self.root.join("etc/op-agent/agent.toml")
    }

    fn ovsdb_socket(&self) -> PathBuf {
        self.root.join("run/openvswitch/db.sock")
    }

    fn agent_cmd(&self) -> Command {
        let mut c = Command::new(&self.agent);
        c.env("OP_AGENT_CONFIG", self.agent_toml());
        c
    }

    /// PVE conf + container TOML of `vmid`, one NIC on ovsbr0, VLAN 10.
    fn manage(&self, vmid: u32) -> Res<()> {
        let conf = format!(
            "hookscript: local:snippets/op-hook\nhostname: ct{vmid}\n\
             net0: name=eth0,bridge={BRIDGE},hwaddr=BC:24:11:{:02X}:{:02X}:{:02X},ip=10.10.{}.{}/16,tag={TAG},type=veth\n",
            (vmid >> 16) & 0xff,
            (vmid >> 8) & 0xff,
            vmid & 0xff,
            vmid / 250,
            vmid % 250 + 1
        );
        fs::write(self.root.join(format!("etc/pve/lxc/{vmid}.conf")), conf)
            .map_err(|e| format!("conf {vmid}: {e}"))?;
        fs::write(
            self.root
                .join(format!("etc/op-agent/containers/{vmid}.toml")),
            "network_type = \"bridge\"\n",
        )
        .map_err(|e| format!("toml {vmid}: {e}"))
    }

    /// Removes ports and links of `vmids`, then makes fresh veth pairs `veth<vmid>i0` /
    /// `vp<vmid>` and plugs them like PVE's lxcnetaddbr → tap_plug (`ip link set up mtu`,
    /// `ovs-vsctl del-port`, `ovs-vsctl add-port BR veth tag=T -- set Interface veth
    /// mtu_request=M`). `per_port`: one ovs-vsctl pair per veth as PVE does; otherwise one
    /// batched ovs-vsctl call (storm setup, not timed).
    fn fresh(&self, vmids: &[u32], per_port: bool) -> Res<()> {
        let mut del = vec![];
        let mut ipl = String::new();
        for v in vmids {
            for p in [format!("vi{v}"), format!("veth{v}i0")] {
                del.extend(["--".into(), "--if-exists".into(), "del-port".into(), p]);
            }
            ipl += &format!("link del vp{v}\nlink del vi{v}\nlink del veth{v}i0\n");
        }
        vsctl(&del)?;
        ip_batch(&ipl)?;
        let mut add = String::new();
        for v in vmids {
            add += &format!(
                "link add veth{v}i0 mtu {MTU} type veth peer name vp{v}\nlink set vp{v} up\n\
                 link set dev veth{v}i0 up mtu {MTU}\n"
            );
        }
        ip_batch(&add)?;
        let mut batch: Vec<String> = vec![];
        for v in vmids {
            let p = format!("veth{v}i0");
            let plug = vec![
                "--".into(),
                "add-port".into(),
                BRIDGE.into(),
                p.clone(),
                format!("tag={TAG}"),
                "--".into(),
                "set".into(),
                "Interface".into(),
                p.clone(),
                format!("mtu_request={MTU}"),
            ];
            if per_port {
                let _ = vsctl(&["del-port".into(), p.clone()]);
                vsctl(&plug)?;
            } else {
                batch.extend(plug);
            }
        }
        if !per_port {
            vsctl(&batch)?; // waits for ovs-vswitchd, like PVE's calls
        }
        for v in vmids {
            if !Path::new(&format!("/sys/class/net/veth{v}i0")).exists() {
                return Err(format!("setup: veth{v}i0 missing"));
            }
        }
        Ok(())
    }

    /// Checks the end state of every vmid: link vi<vmid> up, Port vi<vmid> on ovsbr0 with
    /// tag 10 and no Port veth<vmid>i0 left. Returns the vmids that are wrong.
    fn check(&self, vmids: &[u32]) -> Res<Vec<u32>> {
        let out = vsctl(&[
            "--format=csv".into(),
            "--no-headings".into(),
            "--columns=name,tag".into(),
            "list".into(),
            "Port".into(),
        ])?;
        let ports: HashMap<String, String> = out
            .lines()
            .filter_map(|l| l.split_once(','))
            .map(|(n, t)| (n.trim_matches('"').to_string(), t.to_string()))
            .collect();
        Ok(vmids
            .iter()
            .copied()
            .filter(|v| {
                ports.get(&format!("vi{v}")).map(String::as_str) != Some(&TAG.to_string())
                    || ports.contains_key(&format!("veth{v}i0"))
                    || !Path::new(&format!("/sys/class/net/vi{v}")).exists()
            })
            .collect())
    }

    fn hook_cmd(&self, kind: Kind, vmid: u32, timings: bool) -> Command {
        match kind {
            Kind::Agent => {
                let mut c = self.agent_cmd();
                c.args(["hook", &vmid.to_string(), "post-start"]);
                if timings {
                    c.arg("--timings");
                }
                c
            }
            Kind::Baseline if std::env::var_os("OPB_AGENT_B").is_some() => {
                // Experiment mode: side B is another op-agent build (OPB_AGENT_B).
                let mut c = Command::new(std::env::var_os("OPB_AGENT_B").unwrap_or_default());
                // OPB_AGENT_B_CONFIG: B's own agent.toml (e.g. its own audit database, so the
                // two builds do not share a WAL).
                let cfg = std::env::var_os("OPB_AGENT_B_CONFIG")
                    .map_or_else(|| self.agent_toml(), PathBuf::from);
                c.env("OP_AGENT_CONFIG", cfg)
                    .args(["hook", &vmid.to_string(), "post-start"]);
                if timings {
                    c.arg("--timings");
                }
                c
            }
            Kind::Baseline => {
                let mut c = Command::new("bash");
                c.arg(&self.baseline)
                    .args([&vmid.to_string(), "post-start"])
                    .env("PVE_ROOT", &self.root)
                    .env(
                        "BASELINE_DB",
                        self.root.join("var/lib/op-agent/baseline.db"),
                    );
                c
            }
        }
    }

    fn verify_agent_chain(&self) -> Res<(bool, String)> {
        let out = self
            .agent_cmd()
            .args(["audit", "verify"])
            .output()
            .map_err(|e| format!("audit verify: {e}"))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok((
            out.status.success(),
            text.lines()
                .next()
                .unwrap_or("")
                .split(", 0 checkpoints")
                .next()
                .unwrap_or("")
                .to_string(),
        ))
    }

    /// Rows in the baseline's table and whether its `prev_hash` chain is linear.
    fn baseline_chain(&self) -> Res<(u64, bool)> {
        let db = self.root.join("var/lib/op-agent/baseline.db");
        if !db.exists() {
            return Ok((0, true));
        }
        let c = rusqlite::Connection::open(&db).map_err(|e| e.to_string())?;
        let mut st = c
            .prepare("SELECT prev_hash, hash FROM audit ORDER BY seq")
            .map_err(|e| e.to_string())?;
        let rows: Vec<(Vec<u8>, Vec<u8>)> = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(|e| e.to_string())?
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        let mut prev = vec![0u8; 32];
        let mut linear = true;
        for (p, h) in &rows {
            linear &= *p == prev;
            prev = h.clone();
        }
        Ok((rows.len() as u64, linear))
    }
}

/// `(next_cfg, bridge_reconfigure count)` of the private ovs-vswitchd: how many
/// reconfiguration requests were made and how many reconfigurations it actually ran.
/// Waits 1.1 s first: ovs-vswitchd folds its per-thread coverage counters into the totals
/// about once a second.
fn ovs_counters() -> Res<(i64, i64)> {
    std::thread::sleep(Duration::from_millis(1100));
    let next: i64 = vsctl(&[
        "get".into(),
        "Open_vSwitch".into(),
        ".".into(),
        "next_cfg".into(),
    ])?
    .trim()
    .parse()
    .map_err(|e| format!("next_cfg: {e}"))?;
    let ctl = env_path("OVS_RUNDIR")?.join("ovs-vswitchd.ctl");
    let cov = run(Command::new("ovs-appctl")
        .arg("-t")
        .arg(&ctl)
        .arg("coverage/show"))?;
    let rec = cov
        .lines()
        .find(|l| l.trim_start().starts_with("bridge_reconfigure "))
        .and_then(|l| l.rsplit("total:").next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    Ok((next, rec))
}

fn parse_timings(stderr: &str) -> Vec<(String, f64)> {
    stderr
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next()? == "timing").then_some(())?;
            let step = w.next()?.to_string();
            let ms: f64 = w.next()?.parse().ok()?;
            Some((step, ms))
        })
        .collect()
}

// ------------------------------------------------------------------ 1+2: one hook, A/B

fn hook_ab(root: &Path, runs: usize, warmup: usize) -> Res<()> {
    let h = Host::new(root)?;
    let vmid = 100;
    h.manage(vmid)?;
    let mut ms: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut rss: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut cpu: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut ratios = vec![];
    let mut steps: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut order: Vec<String> = vec![];
    let mut overhead = vec![];
    let mut overhead_wall = vec![];
    let mut failures = 0;
    for i in 0..warmup + runs {
        let mut pair = [0.0; 2];
        for (k, kind) in [Kind::Agent, Kind::Baseline].into_iter().enumerate() {
            h.fresh(&[vmid], true)?;
            let d = time_one(&mut h.hook_cmd(kind, vmid, true))?;
            let bad = h.check(&[vmid])?;
            if !d.ok || !bad.is_empty() {
                failures += 1;
                eprintln!("{} run {i} failed: {}", kind.name(), d.stderr.trim());
            }
            pair[k] = d.ms;
            if i < warmup {
                continue;
            }
            ms.entry(kind.name()).or_default().push(d.ms);
            rss.entry(kind.name()).or_default().push(d.rss_kib as f64);
            cpu.entry(kind.name()).or_default().push(d.cpu_ms);
            if kind == Kind::Agent {
                let t = parse_timings(&d.stderr);
                let mut total = f64::NAN;
                let mut wait = 0.0;
                let mut per: BTreeMap<String, f64> = BTreeMap::new();
                let mut seen: HashMap<String, usize> = HashMap::new();
                for (s, v) in t {
                    // Repeated steps (one ovs.wait per OVSDB change) get #2, #3, ...
                    let k = seen.entry(s.clone()).or_default();
                    *k += 1;
                    let s = if *k > 1 { format!("{s}#{k}") } else { s };
                    if s == "total" {
                        total = v;
                        continue;
                    }
                    if s.starts_with("ovs.wait") {
                        wait += v;
                    }
                    if !order.contains(&s) {
                        order.push(s.clone());
                    }
                    *per.entry(s).or_default() += v;
                }
                for (s, v) in per {
                    steps.entry(s).or_default().push(v);
                }
                steps
                    .entry("total (in-process)".into())
                    .or_default()
                    .push(total);
                steps
                    .entry("process wall (spawn→exit)".into())
                    .or_default()
                    .push(d.ms);
                overhead.push(total - wait);
                overhead_wall.push(d.ms - wait);
            }
        }
        if i >= warmup {
            ratios.push(pair[1] / pair[0]);
        }
        eprintln!(
            "hook-ab {i}: agent {:.2} ms, baseline {:.2} ms",
            pair[0], pair[1]
        );
    }
    println!(
        "### 1. post-start, one NIC, fresh PVE-plugged veth, private OVS{}\n",
        std::env::var("OPB_TITLE_NOTE").unwrap_or_default()
    );
    println!("{runs} runs per side after {warmup} warm-up pairs, alternating A B A B; every run's end state checked (vi100 on {BRIDGE} tag {TAG}, no veth100i0 port). Failures: {failures}.\n");
    println!("| | median (min – max) ms | p95 ms | CPU ms (user+sys, incl. children) | peak RSS median KiB |\n|---|---|---|---|---|");
    for k in [Kind::Agent, Kind::Baseline] {
        let s = stats(&ms[k.name()]);
        let r = stats(&rss[k.name()]);
        let c = stats(&cpu[k.name()]);
        println!(
            "| {} | {} | {:.2} | {:.1} | {:.0} (max {:.0}) |",
            k.name(),
            fmt3(&s),
            s.p95,
            c.med,
            r.med,
            r.max
        );
    }
    let r = stats(&ratios);
    println!(
        "| **ratio baseline / op-agent, per pair** | **{}** | {:.2} | | |\n",
        fmt3(&r),
        r.p95
    );
    println!(
        "### 2. Where op-agent's time goes (`--timings`, medians over the same {runs} runs)\n"
    );
    println!("| step | median (min – max) ms |\n|---|---|");
    order.push("total (in-process)".into());
    order.push("process wall (spawn→exit)".into());
    for s in &order {
        if let Some(v) = steps.get(s) {
            let note = match s.as_str() {
                "ovs.del-port" | "ovs.add-port" => " (includes the ovs.wait listed before it)",
                _ => "",
            };
            println!("| {s}{note} | {} |", fmt3(&stats(v)));
        }
    }
    println!(
        "| **agent overhead = total (in-process) − ovs.wait** | **{}** |",
        fmt3(&stats(&overhead))
    );
    println!(
        "| **agent overhead incl. process start and exit = process wall − ovs.wait** | **{}** |\n",
        fmt3(&stats(&overhead_wall))
    );
    Ok(())
}

// ------------------------------------------------------------------ 2b: the floor

/// `close(2)` of an `AF_PACKET` socket bound to `ifindex`, in ms: what ovs-vswitchd's netdev
/// datapath does when it releases a port (the kernel's `packet_release` waits for an RCU grace
/// period in `synchronize_net`).
fn packet_close_ms(ifindex: i32) -> Res<f64> {
    // SAFETY: plain socket calls on a descriptor this function owns.
    unsafe {
        let proto = (libc::ETH_P_ALL as u16).to_be();
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto));
        if fd < 0 {
            return Err(format!(
                "socket(AF_PACKET): {}",
                std::io::Error::last_os_error()
            ));
        }
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = ifindex;
        let r = libc::bind(
            fd,
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        );
        if r != 0 {
            let e = std::io::Error::last_os_error();
            libc::close(fd);
            return Err(format!("bind(AF_PACKET): {e}"));
        }
        let t = Instant::now();
        libc::close(fd);
        Ok(t.elapsed().as_secs_f64() * 1e3)
    }
}

fn floor(root: &Path, runs: usize) -> Res<()> {
    let h = Host::new(root)?;
    let mut spawn = vec![];
    let mut pclose = vec![];
    let mut rt = vec![];
    let mut commit = vec![];
    let mut rename = vec![];
    // Scratch veth pair, removed at the end.
    let _ = Command::new("ip")
        .args(["link", "del", "opbfl0"])
        .stderr(Stdio::null())
        .status();
    let ok = Command::new("ip")
        .args([
            "link", "add", "opbfl0", "type", "veth", "peer", "name", "opbfl1",
        ])
        .status()
        .map_err(|e| format!("ip link add: {e}"))?;
    if !ok.success() {
        return Err("floor: cannot create the scratch veth".into());
    }
    let _ = Command::new("ip")
        .args(["link", "set", "opbfl0", "up"])
        .status();
    let ifindex: i32 = fs::read_to_string("/sys/class/net/opbfl0/ifindex")
        .map_err(|e| format!("ifindex: {e}"))?
        .trim()
        .parse()
        .map_err(|e| format!("ifindex: {e}"))?;
    let res = (|| -> Res<()> {
        let rtm = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rtm.block_on(async {
            let c = op_agent::ovsdb::Client::connect(&h.ovsdb_socket(), Duration::from_secs(5))
                .await
                .map_err(|e| e.to_string())?;
            let nl = op_agent::netlink::Netlink::connect().map_err(|e| e.to_string())?;
            for i in 0..runs + 3 {
                let t = Instant::now();
                c.transact("Open_vSwitch", vec![])
                    .await
                    .map_err(|e| e.to_string())?;
                let ms = t.elapsed().as_secs_f64() * 1e3;
                let op = serde_json::json!({"op": "mutate", "table": "Open_vSwitch", "where": [],
                    "mutations": [["external_ids", "insert",
                        ["map", [[format!("opbench-{i}"), "1"]]]]]});
                let t = Instant::now();
                c.transact("Open_vSwitch", vec![op])
                    .await
                    .map_err(|e| e.to_string())?;
                let cm = t.elapsed().as_secs_f64() * 1e3;
                let name = if i % 2 == 0 { "opbfl2" } else { "opbfl0" };
                let l = nl
                    .link_by_index(ifindex as u32)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or("scratch veth gone")?;
                let t = Instant::now();
                nl.rename(&l, name, "", true)
                    .await
                    .map_err(|e| e.to_string())?;
                let rn = t.elapsed().as_secs_f64() * 1e3;
                if i >= 3 {
                    rt.push(ms);
                    commit.push(cm);
                    rename.push(rn);
                }
            }
            Ok::<(), String>(())
        })?;
        for i in 0..runs + 3 {
            let d = time_one(&mut Command::new("/bin/true"))?;
            let p = packet_close_ms(ifindex)?;
            if i >= 3 {
                spawn.push(d.ms);
                pclose.push(p);
            }
        }
        Ok(())
    })();
    for n in ["opbfl0", "opbfl2"] {
        let _ = Command::new("ip")
            .args(["link", "del", n])
            .stderr(Stdio::null())
            .status();
    }
    res?;
    println!(
        "### 2b. The floor: what any hook pays on this host ({runs} runs each after 3 warm-up)\n"
    );
    println!("| | median (min – max) ms |\n|---|---|");
    for (what, v) in [
        ("spawn→reap of `/bin/true` (any process start)", &spawn),
        ("`close(2)` of a packet socket bound to a veth (inside ovs-vswitchd's release of a netdev-datapath port: an RCU grace period)", &pclose),
        ("OVSDB round trip, empty `transact` on a warm connection (ovsdb-server turnaround)", &rt),
        ("OVSDB round trip, committing `transact` (one `mutate` of `Open_vSwitch` external_ids; ovsdb-server writes its log)", &commit),
        ("netlink rename + up of a veth (RTM_SETLINK, kernel work included)", &rename),
    ] {
        println!("| {what} | {} |", fmt3(&stats(v)));
    }
    println!();
    Ok(())
}

/// An agent.toml at `path` for `op-agent audit …` on `db` alone (no OVS, PVE root `root`).
fn audit_only_toml(path: &Path, db: &Path, root: &Path) -> Res<()> {
    fs::write(
        path,
        format!(
            "[ovsdb]\nsocket = \"/nonexistent\"\n[audit]\ndatabase = \"{}\"\n[pve]\nroot = \"{}\"\n",
            db.display(),
            root.display()
        ),
    )
    .map_err(|e| e.to_string())
}

// ------------------------------------------------------------------ 3: unmanaged guest

fn unmanaged(root: &Path, runs: usize) -> Res<()> {
    let h = Host::new(root)?;
    let vmid = "999";
    let _ = fs::remove_file(root.join(format!("etc/op-agent/containers/{vmid}.toml")));
    let mut via_hook = vec![];
    let mut direct = vec![];
    let mut rss = vec![];
    let mut fails = 0;
    for i in 0..runs + 3 {
        let mut c = Command::new(&h.hook);
        c.args([vmid, "post-start"])
            .env("OP_AGENT_BIN", &h.agent)
            .env("OP_AGENT_CONFIG", h.agent_toml());
        let a = time_one(&mut c)?;
        let b = time_one(h.agent_cmd().args(["hook", vmid, "post-start"]))?;
        fails += usize::from(!a.ok) + usize::from(!b.ok);
        if i >= 3 {
            via_hook.push(a.ms);
            direct.push(b.ms);
            rss.push(b.rss_kib as f64);
        }
    }
    println!(
        "### 3. Unmanaged guest (no-op path), {runs} runs after 3 warm-up, failures {fails}\n"
    );
    println!("| | median (min – max) ms | p95 ms |\n|---|---|---|");
    let s = stats(&via_hook);
    println!(
        "| `op-hook 999 post-start` (sh + exec op-agent) | {} | {:.2} |",
        fmt3(&s),
        s.p95
    );
    let s = stats(&direct);
    println!(
        "| `op-agent hook 999 post-start` | {} | {:.2} |",
        fmt3(&s),
        s.p95
    );
    println!(
        "\nPeak RSS of the no-op run: median {:.0} KiB.\n",
        stats(&rss).med
    );
    Ok(())
}

// ------------------------------------------------------------------ 4: start storm

struct StormRound {
    cpu: Vec<f64>,
    vswitchd_ms: f64,
    bumps: i64,
    reconfs: i64,
    wall: f64,
    per: Vec<f64>,
    failed: usize,
    wrong: usize,
    maxrss: i64,
}

fn storm_round(h: &Host, kind: Kind, vmids: &[u32], logdir: &Path) -> Res<StormRound> {
    h.fresh(vmids, false)?;
    let (n0, r0) = ovs_counters()?;
    let v0 = daemon_cpu_ms("ovs-vswitchd")?;
    let t0 = Instant::now();
    let mut started: HashMap<libc::pid_t, (u32, Instant)> = HashMap::new();
    let mut children = vec![];
    for v in vmids {
        let f = fs::File::create(logdir.join(format!("{}-{v}.err", kind == Kind::Agent)))
            .map_err(|e| e.to_string())?;
        let c = h
            .hook_cmd(kind, *v, false)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(f)
            .spawn()
            .map_err(|e| format!("spawn hook {v}: {e}"))?;
        started.insert(c.id() as libc::pid_t, (*v, Instant::now()));
        children.push(c);
    }
    let mut per = vec![];
    let mut failed = 0;
    let mut maxrss = 0;
    let mut cpu = vec![];
    // Reap in exit order (wait4(-1)), so each hook's time ends when it exits.
    for _ in 0..children.len() {
        let mut status = 0;
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: plain syscall with valid out-pointers; all our children are hooks here.
        let pid = unsafe { libc::wait4(-1, &mut status, 0, &mut ru) };
        let Some((_, t)) = started.get(&pid) else {
            return Err(format!("wait4(-1): {}", std::io::Error::last_os_error()));
        };
        per.push(t.elapsed().as_secs_f64() * 1e3);
        maxrss = maxrss.max(ru.ru_maxrss);
        cpu.push(cpu_ms(&ru));
        if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
            failed += 1;
        }
    }
    let wall = t0.elapsed().as_secs_f64() * 1e3;
    let v1 = daemon_cpu_ms("ovs-vswitchd")?;
    let (n1, r1) = ovs_counters()?;
    for c in children {
        std::mem::forget(c);
    }
    let wrong = h.check(vmids)?.len();
    if failed > 0 {
        // Name the first failures' reasons (stderr of the failed hooks) on our stderr.
        let mut shown = 0;
        for v in vmids {
            let f = logdir.join(format!("{}-{v}.err", kind == Kind::Agent));
            let text = fs::read_to_string(&f).unwrap_or_default();
            if !text.trim().is_empty() && shown < 3 {
                eprintln!(
                    "  {} {v}: {}",
                    kind.name(),
                    text.trim().replace('\n', " | ")
                );
                shown += 1;
            }
        }
    }
    Ok(StormRound {
        cpu,
        vswitchd_ms: v1 - v0,
        bumps: n1 - n0,
        reconfs: r1 - r0,
        wall,
        per,
        failed,
        wrong,
        maxrss,
    })
}

fn storm(root: &Path, n: usize, rounds: usize) -> Res<()> {
    let h = Host::new(root)?;
    let vmids: Vec<u32> = (0..n as u32).map(|i| 1000 + i).collect();
    for v in &vmids {
        h.manage(*v)?;
    }
    let logdir = root.join("storm-logs");
    fs::create_dir_all(&logdir).map_err(|e| e.to_string())?;
    let mut res: BTreeMap<&str, Vec<StormRound>> = BTreeMap::new();
    let mut ratios = vec![];
    for i in 0..rounds {
        let mut pair = [0.0; 2];
        for (k, kind) in [Kind::Agent, Kind::Baseline].into_iter().enumerate() {
            let r = storm_round(&h, kind, &vmids, &logdir)?;
            eprintln!(
                "storm N={n} round {i} {}: wall {:.0} ms, failed {}, wrong {}",
                kind.name(),
                r.wall,
                r.failed,
                r.wrong
            );
            pair[k] = r.wall;
            res.entry(kind.name()).or_default().push(r);
        }
        ratios.push(pair[1] / pair[0]);
    }
    let (chain_ok, chain_msg) = h.verify_agent_chain()?;
    let (brows, blinear) = h.baseline_chain()?;
    for k in [Kind::Agent, Kind::Baseline] {
        let rs = &res[k.name()];
        let walls: Vec<f64> = rs.iter().map(|r| r.wall).collect();
        let per: Vec<f64> = rs.iter().flat_map(|r| r.per.iter().copied()).collect();
        let failed: usize = rs.iter().map(|r| r.failed).sum();
        let wrong: usize = rs.iter().map(|r| r.wrong).sum();
        let rss = rs.iter().map(|r| r.maxrss).max().unwrap_or(0);
        let bumps = stats(&rs.iter().map(|r| r.bumps as f64).collect::<Vec<_>>()).med;
        let reconfs = stats(&rs.iter().map(|r| r.reconfs as f64).collect::<Vec<_>>()).med;
        let vsw = stats(&rs.iter().map(|r| r.vswitchd_ms).collect::<Vec<_>>()).med;
        let cpu = stats(
            &rs.iter()
                .flat_map(|r| r.cpu.iter().copied())
                .collect::<Vec<_>>(),
        )
        .med;
        let w = stats(&walls);
        let p = stats(&per);
        let chain = match k {
            Kind::Agent => format!(
                "`audit verify`: {} ({chain_msg})",
                if chain_ok { "linear, intact" } else { "FAILED" }
            ),
            Kind::Baseline => format!(
                "{brows} rows, {}",
                if blinear { "linear" } else { "FORKED" }
            ),
        };
        println!(
            "| {n} | {} | {} | {:.1} | {:.1} | {:.1} | {cpu:.1} | {failed}/{} | {wrong} | {bumps:.0} / {reconfs:.0} | {vsw:.0} | {rss} | {chain} |",
            k.name(),
            fmt3(&w),
            w.med / n as f64,
            p.med,
            p.p95,
            n * rs.len(),
        );
    }
    let r = stats(&ratios);
    println!(
        "| {n} | ratio of walls, per pair | {} | | | | | | | | | |",
        fmt3(&r)
    );
    Ok(())
}

// ------------------------------------------------------------------ 6: audit rates

fn sample_row<'a>(run: &'a str, detail: &'a str) -> NewRow<'a> {
    NewRow {
        vmid: 100,
        phase: "post-start",
        run_id: run,
        step: "ovs.add-port",
        outcome: Outcome::Ok,
        detail,
    }
}

const DETAIL: &str = r#"{"net":0,"port":"vi100","bridge":"ovsbr0","tag":10,"mtu_request":1500,"uuid":"3f1c2a9e-0d1b-4c55-9a51-0b8a7c1d2e3f"}"#;

/// `VmRSS`/`VmHWM` of `pid` in KiB, from `/proc/<pid>/status`.
fn rss_of(pid: u32) -> Res<(i64, i64)> {
    let st = fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
    let kib = |k: &str| {
        st.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(-1)
    };
    Ok((kib("VmRSS:"), kib("VmHWM:")))
}

/// Section 5b: `op-agent watch` with `n` managed running containers (each "running" through
/// the abstract socket `@<root>/var/lib/lxc/<vmid>/command` that PVE's `check_running` looks
/// for, bound here), then `rounds` rounds in which every container's veth is re-created and
/// plugged like PVE does (an in-guest reboot: a new `veth<vmid>i0` the service converges).
/// Reports the service's RSS after start-up and after each round, its peak (`VmHWM`), the
/// link events caused, and the end state.
fn watch_mem(root: &Path, n: usize, rounds: usize) -> Res<()> {
    use std::os::linux::net::SocketAddrExt;
    let h = Host::new(root)?;
    let vmids: Vec<u32> = (0..n as u32).map(|i| 2000 + i).collect();
    let mut socks = vec![];
    for &v in &vmids {
        h.manage(v)?;
        let name = pve_integration::running::command_socket_name(
            root,
            v.to_string().parse().map_err(|_| "vmid")?,
        );
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(
            name.trim_start_matches('@').as_bytes(),
        )
        .map_err(|e| e.to_string())?;
        socks.push(std::os::unix::net::UnixListener::bind_addr(&addr).map_err(|e| e.to_string())?);
    }
    h.fresh(&vmids, false)?;
    let mut child = h
        .agent_cmd()
        .args(["watch"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("watch: {e}"))?;
    let pid = child.id();
    let settle = |what: &str, child: &mut std::process::Child| -> Res<(f64, Vec<u32>)> {
        let t = Instant::now();
        loop {
            let bad = h.check(&vmids)?;
            if bad.is_empty() || t.elapsed() > Duration::from_secs(120) {
                return Ok((t.elapsed().as_secs_f64(), bad));
            }
            if let Ok(Some(st)) = child.try_wait() {
                return Err(format!("watch exited {st} during {what}"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let mut lines = vec![];
    let (s, bad) = settle("start-up", &mut child)?;
    let (rss, hwm) = rss_of(pid)?;
    lines.push(format!(
        "| start-up reconcile of {n} | {s:.1} | {} | {rss} | {hwm} |",
        bad.len()
    ));
    let mut events = 0;
    for r in 1..=rounds {
        // An in-guest reboot of every container: the old veth goes, PVE plugs a new one.
        let mut del = String::new();
        for v in &vmids {
            del += &format!("link del vi{v}\n");
        }
        ip_batch(&del)?;
        h.fresh(&vmids, false)?;
        events += n;
        let (s, bad) = settle(&format!("round {r}"), &mut child)?;
        let (rss, hwm) = rss_of(pid)?;
        lines.push(format!(
            "| round {r}: {n} veths re-created ({events} new `veth<vmid>i0` links so far) | {s:.1} | {} | {rss} | {hwm} |",
            bad.len()
        ));
    }
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    let st = child.wait().map_err(|e| e.to_string())?;
    drop(socks);
    println!("#### `op-agent watch`, {n} managed running containers\n");
    println!("Each new `veth<vmid>i0` is one link event the service acts on (RTM_NEWLINK; the deletes, renames and up/down it also sees are not counted). Exit on SIGTERM: {st}.\n");
    println!("| phase | converged after s | wrong end states | VmRSS KiB | VmHWM (peak) KiB |\n|---|---|---|---|---|");
    for l in lines {
        println!("{l}");
    }
    println!();
    Ok(())
}

/// The audit work of one hook run, in-process, `runs` times on `dir`'s file system: open,
/// the intent transaction (2 rows), the WAL fold (a hook does it on a helper thread while
/// ovs-vswitchd works), the outcome transaction (9 rows), close (the WAL is kept).
/// Medians per step, as a Markdown table.
fn audit_steps(dir: &Path, runs: usize) -> Res<()> {
    fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let db = dir.join("steps.db");
    for s in ["", "-wal", "-shm"] {
        let _ = fs::remove_file(format!("{}{s}", db.display()));
    }
    let o = AuditOptions::default();
    let mut t: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    for i in 0..runs + 3 {
        let run = format!("run-{i}");
        let t0 = Instant::now();
        let mut log = AuditLog::open(&db, &o).map_err(|e| e.to_string())?;
        let t1 = Instant::now();
        log.append_all(&[sample_row(&run, DETAIL), sample_row(&run, DETAIL)])
            .map_err(|e| e.to_string())?;
        let tf = Instant::now();
        let folded = log.fold_wal().map_err(|e| e.to_string())?;
        let t2 = Instant::now();
        let rows: Vec<NewRow> = (0..9).map(|_| sample_row(&run, DETAIL)).collect();
        log.append_all_sealed(&rows).map_err(|e| e.to_string())?;
        let t3 = Instant::now();
        drop(log);
        let t4 = Instant::now();
        if i < 3 {
            continue;
        }
        t.entry("1 open").or_default().push(ms(t1 - t0));
        t.entry("2 intent txn (2 rows)")
            .or_default()
            .push(ms(tf - t1));
        if folded {
            t.entry("2b WAL fold (a hook does it while ovs-vswitchd works)")
                .or_default()
                .push(ms(t2 - tf));
        }
        t.entry("3 outcome txn (9 rows)")
            .or_default()
            .push(ms(t3 - t2));
        t.entry("4 close (WAL kept)").or_default().push(ms(t4 - t3));
        t.entry("5 all but the fold")
            .or_default()
            .push(ms(t4 - t0 - (t2 - tf)));
    }
    println!("| audit step ({runs} runs) | median (min – max) ms |\n|---|---|");
    for (k, v) in &t {
        println!("| {k} | {} |", fmt3(&stats(v)));
    }
    println!();
    Ok(())
}

fn audit_rate(dir: &Path, appends: usize, verify_rows: usize) -> Res<()> {
    let agent = env_path("OPB_AGENT")?;
    fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let db = dir.join("rate.db");
    for s in ["", "-wal", "-shm"] {
        let _ = fs::remove_file(format!("{}{s}", db.display()));
    }
    // The floor: one 4 KiB write + fdatasync on the same file system.
    let fsync_us = {
        use std::io::{Seek, Write};
        let fp = dir.join("fsync.probe");
        let mut f = fs::File::create(&fp).map_err(|e| e.to_string())?;
        let buf = [7u8; 4096];
        let n = 300;
        let t = Instant::now();
        for _ in 0..n {
            f.seek(std::io::SeekFrom::Start(0))
                .map_err(|e| e.to_string())?;
            f.write_all(&buf).map_err(|e| e.to_string())?;
            f.sync_data().map_err(|e| e.to_string())?;
        }
        let us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
        let _ = fs::remove_file(&fp);
        us
    };
    let mut log = AuditLog::open(&db, &AuditOptions::default()).map_err(|e| e.to_string())?;
    let run = op_agent::audit::run_id();
    let row = sample_row(&run, DETAIL);
    for _ in 0..50 {
        log.append(&row).map_err(|e| e.to_string())?;
    }
    let t = Instant::now();
    for _ in 0..appends {
        log.append(&row).map_err(|e| e.to_string())?;
    }
    let dt = t.elapsed().as_secs_f64();
    let single = appends as f64 / dt;
    let rows: Vec<NewRow> = vec![row; 10_000];
    let t = Instant::now();
    let mut have = log.head().map_err(|e| e.to_string())?.map_or(0, |h| h.seq) as usize;
    let bulk_from = have;
    while have < verify_rows {
        let k = (verify_rows - have).min(rows.len());
        have = log.append_all(&rows[..k]).map_err(|e| e.to_string())?.seq as usize;
    }
    let bulk = (have - bulk_from) as f64 / t.elapsed().as_secs_f64();
    drop(log);
    // Fold the WAL into the main file so the size is the database's.
    let c = rusqlite::Connection::open(&db).map_err(|e| e.to_string())?;
    c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .map_err(|e| e.to_string())?;
    drop(c);
    let size = fs::metadata(&db).map_err(|e| e.to_string())?.len() as f64;
    let toml = dir.join("agent.toml");
    audit_only_toml(&toml, &db, dir)?;
    let mut vt = vec![];
    let mut ok = true;
    for _ in 0..3 {
        let d = time_one(
            Command::new(&agent)
                .env("OP_AGENT_CONFIG", &toml)
                .args(["audit", "verify"]),
        )?;
        ok &= d.ok;
        vt.push(d.ms);
    }
    let v = stats(&vt);
    println!("### 6. Audit append and verify rates (ext4, WAL, synchronous=FULL)\n");
    println!("| measure | value |\n|---|---|");
    println!(
        "| append, one `BEGIN IMMEDIATE` txn + fsync per row ({appends} rows) | **{single:.0} rows/s** ({:.0} µs/row) |",
        dt * 1e6 / appends as f64
    );
    println!("| append, 10,000-row txns (bulk fill) | {bulk:.0} rows/s |");
    println!(
        "| floor: 4 KiB write + fdatasync on the same file system | {fsync_us:.0} µs = {:.0} /s |",
        1e6 / fsync_us
    );
    println!(
        "| `op-agent audit verify` over {have} rows (process, median of 3) | **{:.0} rows/s** ({:.0} ms; min {:.0} max {:.0}; exit ok: {ok}) |",
        have as f64 / (v.med / 1e3),
        v.med,
        v.min,
        v.max
    );
    println!(
        "| database size per 1,000,000 rows | {:.1} MiB ({:.0} bytes/row) |\n",
        size / 1048576.0 * 1e6 / have as f64,
        size / have as f64
    );
    let _ = fs::remove_file(&db);
    Ok(())
}

// ------------------------------------------------------------------ 6b: DEFERRED vs IMMEDIATE

#[derive(Default, Debug)]
struct Counts {
    ok: u64,
    busy: u64,
    constraint: u64,
    other: u64,
}

fn contention(dir: &Path, procs: usize, appends: usize) -> Res<()> {
    let agent = env_path("OPB_AGENT")?;
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    println!("### 6b. DEFERRED vs IMMEDIATE under contention ({procs} processes × {appends} appends, busy_timeout 5 s, no retries)\n");
    println!("| mode | wall ms | rows written | failed: busy / constraint (fork refused) / other | rows/s | chain (`audit verify`) |\n|---|---|---|---|---|---|");
    for mode in ["immediate", "deferred"] {
        let db = dir.join(format!("contention-{mode}.db"));
        for s in ["", "-wal", "-shm"] {
            let _ = fs::remove_file(format!("{}{s}", db.display()));
        }
        drop(AuditLog::open(&db, &AuditOptions::default()).map_err(|e| e.to_string())?);
        let start_at = op_agent::audit::now_ms() + 300;
        let t = Instant::now();
        let kids: Vec<_> = (0..procs)
            .map(|_| {
                Command::new(&me)
                    .args([
                        "contention-child",
                        &db.display().to_string(),
                        mode,
                        &appends.to_string(),
                        &start_at.to_string(),
                    ])
                    .stdout(Stdio::piped())
                    .spawn()
            })
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        let mut tot = Counts::default();
        for k in kids {
            let out = k.wait_with_output().map_err(|e| e.to_string())?;
            let s = String::from_utf8_lossy(&out.stdout);
            let n: Vec<u64> = s
                .split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect();
            if n.len() == 4 {
                tot.ok += n[0];
                tot.busy += n[1];
                tot.constraint += n[2];
                tot.other += n[3];
            } else {
                tot.other += appends as u64;
            }
        }
        let wall = t.elapsed().as_secs_f64() * 1e3 - 300.0;
        let toml = dir.join(format!("contention-{mode}.toml"));
        audit_only_toml(&toml, &db, dir)?;
        let v = Command::new(&agent)
            .env("OP_AGENT_CONFIG", &toml)
            .args(["audit", "verify"])
            .output()
            .map_err(|e| e.to_string())?;
        let c = rusqlite::Connection::open(&db).map_err(|e| e.to_string())?;
        let (rows, maxseq, distinct): (i64, i64, i64) = c
            .query_row(
                "SELECT count(*), coalesce(max(seq),0), count(DISTINCT prev_hash) FROM audit",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .map_err(|e| e.to_string())?;
        println!(
            "| {} | {wall:.0} | {rows} of {} (max seq {maxseq}, distinct prev_hash {distinct}) | {} / {} / {} | {:.0} | {} |",
            mode.to_uppercase(),
            procs * appends,
            tot.busy,
            tot.constraint,
            tot.other,
            rows as f64 / (wall / 1e3),
            if v.status.success() { "intact, linear" } else { "FAILED" }
        );
        for s in ["", "-wal", "-shm"] {
            let _ = fs::remove_file(format!("{}{s}", db.display()));
        }
    }
    println!();
    Ok(())
}

fn classify(e: &rusqlite::Error, c: &mut Counts) {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy) | Some(rusqlite::ErrorCode::DatabaseLocked) => {
            c.busy += 1
        }
        Some(rusqlite::ErrorCode::ConstraintViolation) => c.constraint += 1,
        _ => c.other += 1,
    }
}

fn contention_child(db: &Path, mode: &str, appends: usize, start_at: usize) -> Res<()> {
    let now = op_agent::audit::now_ms() as usize;
    if start_at > now {
        std::thread::sleep(Duration::from_millis((start_at - now) as u64));
    }
    let mut c = Counts::default();
    let run = op_agent::audit::run_id();
    if mode == "immediate" {
        let mut log = AuditLog::open(db, &AuditOptions::default()).map_err(|e| e.to_string())?;
        for _ in 0..appends {
            match log.append(&sample_row(&run, DETAIL)) {
                Ok(_) => c.ok += 1,
                Err(op_agent::audit::AuditError::Busy { .. }) => c.busy += 1,
                Err(_) => c.other += 1,
            }
        }
    } else {
        let mut conn = rusqlite::Connection::open(db).map_err(|e| e.to_string())?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(|e| e.to_string())?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(|e| e.to_string())?;
        let host = AuditOptions::default().host;
        for _ in 0..appends {
            let r = (|| -> rusqlite::Result<()> {
                let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Deferred)?;
                let head: Option<(i64, Vec<u8>)> = tx
                    .query_row(
                        "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
                        [],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .ok();
                let (seq, prev) = head.unwrap_or((0, GENESIS.to_vec()));
                let mut p = [0u8; 32];
                p.copy_from_slice(&prev);
                let ts = op_agent::audit::now_ms();
                let f = RowFields {
                    seq: seq + 1,
                    ts_ms: ts,
                    host: &host,
                    vmid: 100,
                    phase: "post-start",
                    run_id: &run,
                    step: "ovs.add-port",
                    outcome: "ok",
                    detail: DETAIL,
                    prev_hash: &p,
                };
                let hash = row_hash(&f);
                tx.execute(
                    "INSERT INTO audit (seq, ts, host, vmid, phase, run_id, step, outcome, detail, prev_hash, hash) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                    rusqlite::params![seq + 1, ts, host, 100, "post-start", run, "ovs.add-port", "ok", DETAIL, &p[..], &hash[..]],
                )?;
                tx.commit()
            })();
            match r {
                Ok(()) => c.ok += 1,
                Err(e) => classify(&e, &mut c),
            }
        }
    }
    println!("{} {} {} {}", c.ok, c.busy, c.constraint, c.other);
    Ok(())
}
