//! `pve-sim`: a stand-in for Proxmox VE's container start/stop machinery on real LXC and a
//! private Open vSwitch, under a relocatable root `R` (default `/`). This file is the command
//! line; the simulator is `pve_integration::sim`, one module per PVE file it mirrors.
//!
//! Every error is one line on stderr with exit 1.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pve_integration::sim::{one_line, parse_set_args, Res, SetError, Sim, PVE_PATH};
use pve_integration::{running, Vmid};

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
    /// `pct set`: `-netN <property string>` (repeatable), `-hookscript <volid>` and
    /// `--delete netN[,netM][,hookscript]`, on a
    /// stopped or running container, under PVE's config lock. Errors print as PVE's CLI does
    /// (`400 Parameter verification failed.` …) with exit code 255.
    Set {
        /// Container id.
        vmid: Vmid,
        /// `-netN <value>` / `--delete <opts>` pairs.
        #[arg(allow_hyphen_values = true, num_args = 0.., trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// List the containers of R (from R/etc/pve/lxc/*.conf) with their status.
    List,
    /// ifupdown2 `ifreload -a` on R/etc/network/interfaces: removes the bridge ports that
    /// ovs_ports / bridge-ports do not list and the condone regex does not cover.
    Ifreload,
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
    if let Cmd::Set { vmid, args } = &cli.cmd {
        return set(&cli.root, *vmid, args);
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pve-sim: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

fn sim_at(root: &std::path::Path) -> Res<Sim> {
    let root =
        std::fs::canonicalize(root).map_err(|e| format!("root '{}': {e}", root.display()))?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own executable: {e}"))?;
    Ok(Sim::new(root, exe))
}

/// `pve-sim set`: the error as PVE's CLI prints it, exit code 255 (Perl's `die`).
fn set(root: &std::path::Path, vmid: Vmid, args: &[String]) -> ExitCode {
    let r = sim_at(root).map_err(SetError::Die).and_then(|sim| {
        let (params, delete) = parse_set_args(args)?;
        sim.set(vmid, &params, &delete)
    });
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprint!("{}", e.render());
            ExitCode::from(255)
        }
    }
}

fn run(cli: Cli) -> Res<()> {
    let sim = sim_at(&cli.root)?;
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
            let s = if running::is_running(sim.root(), vmid) {
                "running"
            } else {
                "stopped"
            };
            println!("status: {s}");
            Ok(())
        }
        Cmd::Set { .. } => Err("set is handled before".into()),
        Cmd::List => sim.list(),
        Cmd::Ifreload => sim.ifreload(),
        Cmd::Lxcnetaddbr { args } => sim.lxcnetaddbr(&args),
        Cmd::Poststop { args } => sim.poststop(&args),
    }
}
