//! The simulated PVE host the bench runs on: the root `R` that `bench/run.sh` made with
//! `pve-sim host-up`, op-agent's agent.toml in it, managed containers, PVE-plugged veths,
//! and the end-state check.

use crate::proc::{env_path, ip_batch, pid_cpu_ms, run};
use crate::{Res, BRIDGE, MTU, TAG};
use op_testkit::{pve_mac, AgentCommand, AgentToml, Nic, Ovs, PveConf, PveRoot};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

#[derive(Clone, Copy, PartialEq, Debug)]
pub(crate) enum Kind {
    Agent,
    Baseline,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Agent => "op-agent",
            Kind::Baseline => "bash baseline",
        }
    }
}

/// The host: its root `R`, its private OVS (`OVS_RUNDIR`), and the hookscripts compared.
pub(crate) struct Host {
    pub(crate) root: PveRoot,
    pub(crate) ovs: Ovs,
    /// op-agent (`OPB_AGENT`).
    pub(crate) agent: PathBuf,
    /// The bash baseline hookscript (`OPB_BASELINE`).
    pub(crate) baseline: PathBuf,
    /// op-hook (`OPB_HOOK`).
    pub(crate) hook: PathBuf,
}

impl Host {
    /// agent.toml keeps op-agent's defaults (`[ovsdb] timeout_ms` 5000, `[hook] deadline_ms`
    /// 10000), matching the baseline's `ovs-vsctl --timeout=5`.
    pub(crate) fn new(root: &Path) -> Res<Host> {
        let h = Host {
            root: PveRoot::at(root),
            ovs: Ovs::at(&env_path("OVS_RUNDIR")?, None),
            agent: env_path("OPB_AGENT")?,
            baseline: env_path("OPB_BASELINE")?,
            hook: env_path("OPB_HOOK")?,
        };
        for d in ["etc/pve/lxc", "etc/op-agent/containers", "var/lib/op-agent"] {
            std::fs::create_dir_all(root.join(d)).map_err(|e| format!("mkdir {d}: {e}"))?;
        }
        AgentToml {
            ovsdb_socket: Some(h.root.ovsdb_socket()),
            audit_db: Some(h.root.audit_db()),
            pve_root: Some(root.to_path_buf()),
            ..AgentToml::default()
        }
        .write(&h.agent_toml())
        .map_err(|e| format!("agent.toml: {e}"))?;
        Ok(h)
    }

    pub(crate) fn agent_toml(&self) -> PathBuf {
        self.root.agent_toml()
    }

    pub(crate) fn ovsdb_socket(&self) -> PathBuf {
        self.root.ovsdb_socket()
    }

    /// `op-agent` (`OPB_AGENT`) with this host's `OP_AGENT_CONFIG`; add the arguments.
    pub(crate) fn agent_cmd(&self) -> Command {
        AgentCommand::new::<&str>(&[])
            .bin(&self.agent)
            .config_env(self.agent_toml())
            .command()
    }

    /// PVE conf + container TOML of `vmid`, one NIC on ovsbr0, VLAN 10.
    pub(crate) fn manage(&self, vmid: u32) -> Res<()> {
        self.manage_named(vmid, false)
    }

    /// [`Host::manage`], with `naming = "keep"` in the container TOML when `keep`.
    pub(crate) fn manage_named(&self, vmid: u32, keep: bool) -> Res<()> {
        let ip = format!("10.10.{}.{}/16", vmid / 250, vmid % 250 + 1);
        let net0 = Nic::new(0, BRIDGE).hwaddr(&pve_mac(vmid)).ip(&ip).tag(TAG);
        self.root
            .write_pve_conf(vmid, PveConf::op_hook(vmid).minimal().nic(net0));
        let naming = if keep { "naming = \"keep\"\n" } else { "" };
        self.root
            .manage(vmid, &format!("network_type = \"bridge\"\n{naming}"));
        Ok(())
    }

    /// Removes ports and links of `vmids`, then makes fresh veth pairs `veth<vmid>i0` /
    /// `vp<vmid>` and plugs them like PVE's lxcnetaddbr → tap_plug (`ip link set up mtu`,
    /// `ovs-vsctl del-port`, `ovs-vsctl add-port BR veth tag=T -- set Interface veth
    /// mtu_request=M`). `per_port`: one ovs-vsctl pair per veth as PVE does; otherwise one
    /// batched ovs-vsctl call (storm setup, not timed).
    pub(crate) fn fresh(&self, vmids: &[u32], per_port: bool) -> Res<()> {
        let mut del = vec![];
        let mut ipl = String::new();
        for v in vmids {
            for p in [format!("vi{v}"), format!("veth{v}i0")] {
                del.extend(["--".into(), "--if-exists".into(), "del-port".into(), p]);
            }
            ipl += &format!("link del vp{v}\nlink del vi{v}\nlink del veth{v}i0\n");
        }
        self.vsctl(&del)?;
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
                let _ = self.vsctl(&["del-port".into(), p.clone()]);
                self.vsctl(&plug)?;
            } else {
                batch.extend(plug);
            }
        }
        if !per_port {
            self.vsctl(&batch)?; // waits for ovs-vswitchd, like PVE's calls
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
    pub(crate) fn check(&self, vmids: &[u32]) -> Res<Vec<u32>> {
        self.check_named(vmids, false)
    }

    /// [`Host::check`]; with `keep` (`naming = "keep"`), the end state is PVE's Port
    /// `veth<vmid>i0` taken over by op-agent (VLAN 10 and `external_ids:owner=op-agent`) and
    /// no `vi<vmid>` Port.
    pub(crate) fn check_named(&self, vmids: &[u32], keep: bool) -> Res<Vec<u32>> {
        if keep {
            let out = self.vsctl(&[
                "--format=csv".into(),
                "--no-headings".into(),
                "--columns=name,tag,external_ids".into(),
                "list".into(),
                "Port".into(),
            ])?;
            let ports: HashMap<String, String> = out
                .lines()
                .filter_map(|l| l.split_once(','))
                .map(|(n, rest)| (n.trim_matches('"').to_string(), rest.to_string()))
                .collect();
            let tag = format!("{TAG},");
            return Ok(vmids
                .iter()
                .copied()
                .filter(|v| {
                    !ports
                        .get(&format!("veth{v}i0"))
                        .is_some_and(|r| r.starts_with(&tag) && r.contains("owner=op-agent"))
                        || ports.contains_key(&format!("vi{v}"))
                        || !Path::new(&format!("/sys/class/net/veth{v}i0")).exists()
                })
                .collect());
        }
        let out = self.vsctl(&[
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

    pub(crate) fn hook_cmd(&self, kind: Kind, vmid: u32, timings: bool) -> Command {
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
                    .env("PVE_ROOT", self.root.path())
                    .env(
                        "BASELINE_DB",
                        self.root.join("var/lib/op-agent/baseline.db"),
                    );
                c
            }
        }
    }

    pub(crate) fn verify_agent_chain(&self) -> Res<(bool, String)> {
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

    /// `ovs-vsctl --timeout=20 ARGS` against the private OVS (waiting for ovs-vswitchd, as
    /// PVE's own calls do); stdout.
    pub(crate) fn vsctl(&self, args: &[String]) -> Res<String> {
        run(self.ovs.command("ovs-vsctl").arg("--timeout=20").args(args))
    }

    /// CPU time (user + system, ms) of the private ovs-vswitchd so far.
    pub(crate) fn vswitchd_cpu_ms(&self) -> Res<f64> {
        pid_cpu_ms(self.ovs.daemon_pid("ovs-vswitchd"))
    }

    /// Rows in the baseline's table and whether its `prev_hash` chain is linear.
    pub(crate) fn baseline_chain(&self) -> Res<(u64, bool)> {
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

    /// `(next_cfg, bridge_reconfigure count)` of the private ovs-vswitchd: how many
    /// reconfiguration requests were made and how many reconfigurations it actually ran.
    /// Waits 1.1 s first: ovs-vswitchd folds its per-thread coverage counters into the totals
    /// about once a second.
    pub(crate) fn ovs_counters(&self) -> Res<(i64, i64)> {
        std::thread::sleep(Duration::from_millis(1100));
        let next: i64 = self
            .vsctl(&[
                "get".into(),
                "Open_vSwitch".into(),
                ".".into(),
                "next_cfg".into(),
            ])?
            .trim()
            .parse()
            .map_err(|e| format!("next_cfg: {e}"))?;
        let cov = self.ovs.appctl("ovs-vswitchd", &["coverage/show"]);
        let rec = cov
            .lines()
            .find(|l| l.trim_start().starts_with("bridge_reconfigure "))
            .and_then(|l| l.rsplit("total:").next())
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        Ok((next, rec))
    }
}

pub(crate) fn parse_timings(stderr: &str) -> Vec<(String, f64)> {
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
