//! `op-testkit`: the one harness behind op-agent's integration tests (`tests/*.rs`) and the
//! benchmark driver (`benches/opbench`).
//!
//! - [`TestHost`]: a private "Proxmox host": a network namespace of its own
//!   (`opa-<hint>-<pid>-<n>`), a temp root `R` laid out like a PVE node ([`PveRoot`]), a
//!   private ovsdb-server + ovs-vswitchd started by `pve-sim host-up`, and real LXC containers
//!   started by `pve-sim start`. Its `Drop` removes all of it, also after a failed assertion.
//! - [`AgentCommand`]: the one way to run op-agent (any subcommand; `--config` or
//!   `OP_AGENT_CONFIG`, extra environment, a namespace, a timeout), giving a [`CmdOutput`]
//!   (exit status, stdout, stderr, wall time), or a [`Service`] for `op-agent watch`.
//! - [`AgentToml`]: agent.toml as text; [`PveConf`] / [`Nic`]: `/etc/pve/lxc/<vmid>.conf`.
//! - [`pves_net0`]: a container's net0 is PVE's own again (name, Port, tag, no marks).
//! - [`read_audit_rows`]: the audit rows of a database, read with SQLite (read-only).
//! - [`PrivateOvs`]: ovsdb-server (and ovs-vswitchd in a namespace of its own) in a temp dir,
//!   for tests of the OVSDB client; [`Ovs`]: a handle on the daemons of any private run
//!   directory (`ovs-vsctl`, pid files, signals, a fresh restart).
//!
//! Root is required for everything that makes a namespace, a link or an OVS daemon:
//! [`assert_root`] panics otherwise (a root test never passes silently). The op-agent and
//! pve-sim binaries are found next to the test binary (`<target>/<profile>/`); run
//! `cargo build --workspace` first (`make test` does).

mod agent;
mod audit;
mod config;
mod host;
mod ovs;
mod process;
mod pve_conf;
mod pve_state;
mod root;
mod tmpfs;

pub use agent::{op_agent_bin, AgentCommand, Service};
pub use audit::{read_audit_rows, AuditRow};
pub use config::AgentToml;
pub use host::TestHost;
pub use ovs::{Ovs, PrivateOvs};
pub use process::{assert_root, run_bounded, target_bin, try_run_bounded, CmdOutput, CMD_TIMEOUT};
pub use pve_conf::{bridged_ip, pve_mac, Nic, PveConf};
pub use pve_state::{pves_net0, stays_pves_net0, wait_pves_net0};
pub use root::{write_file_mode, PveRoot};
pub use tmpfs::Tmpfs;
