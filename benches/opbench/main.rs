//! `opbench`: the driver behind `make bench`. Run by `bench/run.sh` as root inside a
//! network namespace where `pve-sim host-up` started a private OVS; never run against a
//! system-wide OVS. Every subcommand prints Markdown for `bench/report.md` on stdout and
//! progress on stderr.
//!
//! One module per section of the report: [`hook_ab`] (1, 2), [`floor`] (2b), [`unmanaged`]
//! (3), [`storm`] (4), [`watch`] (5b), [`audit`] (6, 6b), [`mass`] (7); [`host`] is the simulated PVE host
//! (through `op-testkit`), [`proc`] the timed child processes, [`stats`] the statistics.
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
//! - `watch-mem ROOT N ROUNDS`: `op-agent watch` RSS with N running containers.
//! - `audit-steps DIR RUNS`: the audit work of one hook run, in-process.
//! - `mass ROOT N ROUNDS`: mass repair (section 7): `watch` batched vs per-container, N
//!   containers, every owned Port deleted at once and every veth re-created at once.
//!
//! Environment: `OPB_AGENT` (op-agent binary), `OPB_HOOK` (op-hook), `OPB_BASELINE`
//! (baseline-hook.sh; replaced by another op-agent build when `OPB_AGENT_B` is set, to compare
//! two agent builds A B A B),
//! `OVS_RUNDIR`.

mod audit;
mod floor;
mod hook_ab;
mod host;
mod mass;
mod proc;
mod stats;
mod storm;
mod unmanaged;
mod watch;

use host::Host;
use std::path::Path;

type Res<T> = Result<T, String>;

const BRIDGE: &str = "ovsbr0";
const TAG: u16 = 10;
const MTU: u32 = 1500;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a = |i: usize| args.get(i).cloned().unwrap_or_default();
    let n = |i: usize, d: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let r = match a(0).as_str() {
        "hook-ab" => hook_ab::hook_ab(Path::new(&a(1)), n(2, 30), n(3, 3)),
        "unmanaged" => unmanaged::unmanaged(Path::new(&a(1)), n(2, 30)),
        "storm" => storm::storm(Path::new(&a(1)), n(2, 10), n(3, 3)),
        "fresh" => Host::new(Path::new(&a(1))).and_then(|h| {
            let v = n(2, 1000) as u32;
            h.manage(v)?;
            h.fresh(&[v], true)
        }),
        "floor" => floor::floor(Path::new(&a(1)), n(2, 30)),
        "mass" => mass::mass(Path::new(&a(1)), n(2, 10), n(3, 3)),
        "watch-mem" => watch::watch_mem(Path::new(&a(1)), n(2, 200), n(3, 5)),
        "audit-steps" => audit::audit_steps(Path::new(&a(1)), n(2, 200)),
        "audit-rate" => audit::audit_rate(Path::new(&a(1)), n(2, 3000), n(3, 1_000_000)),
        "contention" => audit::contention(Path::new(&a(1)), n(2, 16), n(3, 200)),
        "contention-child" => audit::contention_child(Path::new(&a(1)), &a(2), n(3, 200), n(4, 0)),
        other => Err(format!("opbench: unknown subcommand {other:?}")),
    };
    if let Err(e) = r {
        eprintln!("opbench: {e}");
        std::process::exit(1);
    }
}
