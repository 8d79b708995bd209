//! The one way to run op-agent: [`AgentCommand`] builds the command line and environment of
//! any subcommand, runs it bounded ([`AgentCommand::run`]) or keeps it running as a service
//! ([`AgentCommand::spawn`], e.g. `op-agent watch`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::process::{run_bounded, target_bin, CmdOutput, CMD_TIMEOUT};

/// `<target>/<profile>/op-agent`, the binary Cargo built beside the test.
pub fn op_agent_bin() -> PathBuf {
    target_bin("op-agent")
}

/// One op-agent invocation: `[ip netns exec NS] op-agent [--config CFG] ARGS` with extra
/// environment and a timeout ([`CMD_TIMEOUT`] unless set).
#[derive(Clone, Debug)]
pub struct AgentCommand {
    bin: Option<PathBuf>,
    args: Vec<OsString>,
    config_flag: Option<PathBuf>,
    env: Vec<(OsString, OsString)>,
    env_remove: Vec<OsString>,
    netns: Option<String>,
    timeout: Duration,
    umask: Option<u32>,
}

impl AgentCommand {
    /// `op-agent ARGS` with the inherited environment.
    pub fn new<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> AgentCommand {
        AgentCommand {
            bin: None,
            args: args.iter().map(|a| a.as_ref().to_os_string()).collect(),
            config_flag: None,
            env: Vec::new(),
            env_remove: Vec::new(),
            netns: None,
            timeout: CMD_TIMEOUT,
            umask: None,
        }
    }

    /// Another op-agent binary than [`op_agent_bin`] (e.g. a release build to time).
    pub fn bin(mut self, bin: impl Into<PathBuf>) -> Self {
        self.bin = Some(bin.into());
        self
    }

    /// `--config PATH` before the subcommand.
    pub fn config(mut self, path: impl Into<PathBuf>) -> Self {
        self.config_flag = Some(path.into());
        self
    }

    /// `OP_AGENT_CONFIG=PATH` (how PVE's hookscript finds the config).
    pub fn config_env(self, path: impl AsRef<Path>) -> Self {
        self.env("OP_AGENT_CONFIG", path.as_ref())
    }

    /// One more environment variable (the last setting of a key wins).
    pub fn env(
        mut self,
        key: impl AsRef<std::ffi::OsStr>,
        value: impl AsRef<std::ffi::OsStr>,
    ) -> Self {
        self.env
            .push((key.as_ref().to_os_string(), value.as_ref().to_os_string()));
        self
    }

    /// Several `(key, value)` pairs.
    pub fn envs(mut self, pairs: &[(&str, &str)]) -> Self {
        for (k, v) in pairs {
            self = self.env(k, v);
        }
        self
    }

    /// Removes `key` from the inherited environment.
    pub fn env_remove(mut self, key: impl AsRef<std::ffi::OsStr>) -> Self {
        self.env_remove.push(key.as_ref().to_os_string());
        self
    }

    /// Runs inside network namespace `netns` (`ip netns exec`, which execs the command: the
    /// child's pid is op-agent's).
    pub fn netns(mut self, netns: &str) -> Self {
        self.netns = Some(netns.to_string());
        self
    }

    /// Runs with file mode creation mask `mask` (`0o077`, the `UMask=` of op-agent.service).
    pub fn umask(mut self, mask: u32) -> Self {
        self.umask = Some(mask);
        self
    }

    /// Kills the run after `timeout` (the run then panics).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The assembled [`Command`] (stdin, stdout and stderr not yet set).
    pub fn command(&self) -> Command {
        let bin = self.bin.clone().unwrap_or_else(op_agent_bin);
        let mut c = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        if let Some(cfg) = &self.config_flag {
            c.arg("--config").arg(cfg);
        }
        c.args(&self.args);
        for k in &self.env_remove {
            c.env_remove(k);
        }
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        if let Some(mask) = self.umask {
            use std::os::unix::process::CommandExt;
            // SAFETY: umask(2) is async-signal-safe and touches no memory of the parent.
            unsafe {
                c.pre_exec(move || {
                    libc::umask(mask as libc::mode_t);
                    Ok(())
                });
            }
        }
        c
    }

    /// Runs to the end (bounded) and prints an `observed:` line (shown when a test fails).
    pub fn run(&self) -> CmdOutput {
        let out = run_bounded(&mut self.command(), self.timeout);
        eprintln!(
            "observed: op-agent {:?} -> exit {:?} in {:?}: {}",
            self.args,
            out.code(),
            out.took,
            out.stderr_text().trim()
        );
        out
    }

    /// Runs to the end with stdout on `/dev/full` (every write fails with ENOSPC, as on a full
    /// disk under a redirect): the exit code and stderr.
    pub fn run_to_dev_full(&self) -> (Option<i32>, String) {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap_or_else(|e| panic!("/dev/full: {e}"));
        let o = self
            .command()
            .stdin(Stdio::null())
            .stdout(full)
            .stderr(Stdio::piped())
            .output()
            .unwrap_or_else(|e| panic!("{:?}: {e}", self.command()));
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }

    /// Starts it as a long-running service, stdout discarded and stderr appended to `log`.
    pub fn spawn(&self, log: &Path) -> Service {
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let child = self
            .command()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("{:?}: {e}", self.command()));
        Service {
            child: Some(child),
            log: log.to_path_buf(),
        }
    }
}

/// A running op-agent service (`op-agent watch`); stopped by [`Service::stop`] or on drop
/// (SIGTERM, then SIGKILL after 15 s).
pub struct Service {
    child: Option<Child>,
    log: PathBuf,
}

impl Service {
    /// Sends SIGTERM and waits (at most 15 s) for the exit status; `None` if it had to be
    /// killed or was stopped before.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut c = self.child.take()?;
        let pid = nix::unistd::Pid::from_raw(c.id() as i32);
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

    /// The exit status if the service has ended by itself (without waiting); `None` while it
    /// runs.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// The pid of the service (op-agent itself, also under `ip netns exec`).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The file its stderr goes to.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The service's stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
