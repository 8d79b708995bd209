//! Bounded child processes: every command the kit runs has a timeout, so a hung daemon fails
//! the test instead of hanging it.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Bound for any one command the kit runs.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(90);

/// What a finished command left: its exit status, its output and how long it ran (spawn to
/// reap). The field names are those of [`std::process::Output`].
pub struct CmdOutput {
    /// Exit status (`code()` is `None` when a signal ended it).
    pub status: ExitStatus,
    /// Everything written to stdout.
    pub stdout: Vec<u8>,
    /// Everything written to stderr.
    pub stderr: Vec<u8>,
    /// Wall time from spawn to reap.
    pub took: Duration,
}

impl CmdOutput {
    /// The exit code; `None` when the process was killed by a signal.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// stdout, lossily decoded.
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// stderr, lossily decoded.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// stdout followed by stderr.
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout_text(), self.stderr_text())
    }

    /// `(exit code, stderr, wall time)`: what the fault tests assert on.
    pub fn exit_stderr_took(&self) -> (Option<i32>, String, Duration) {
        (self.code(), self.stderr_text(), self.took)
    }
}

impl std::fmt::Debug for CmdOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CmdOutput")
            .field("status", &self.status)
            .field("stdout", &self.stdout_text())
            .field("stderr", &self.stderr_text())
            .field("took", &self.took)
            .finish()
    }
}

/// Panics with a clear message unless the effective uid is 0.
pub fn assert_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (network namespaces, OVS, LXC); it does not skip: run it as root"
    );
}

/// `<target>/<profile>/<name>`, found from the running binary's path
/// (`<target>/<profile>/deps/<test>-<hash>`); panics with the build command when missing.
pub fn target_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in <target>/<profile>/deps");
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --workspace` before the tests",
        bin.display()
    );
    bin
}

/// Runs `cmd` with stdin at EOF, killing it after `timeout`; panics if it cannot start or
/// times out (a hung test must fail, not hang).
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> CmdOutput {
    let what = format!("{cmd:?}");
    try_run_bounded(cmd, timeout).unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// Like [`run_bounded`] but returns the problem instead of panicking (for `Drop`).
pub fn try_run_bounded(cmd: &mut Command, timeout: Duration) -> Result<CmdOutput, String> {
    let t = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start: {e}"))?;
    let out = child.stdout.take().ok_or("no stdout pipe")?;
    let err = child.stderr.take().ok_or("no stderr pipe")?;
    let read = |mut p: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = p.read_to_end(&mut v);
            v
        })
    };
    let (to, te) = (read(Box::new(out)), read(Box::new(err)));
    let deadline = t + timeout;
    let status = loop {
        if let Some(st) = child.try_wait().map_err(|e| format!("wait: {e}"))? {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("timed out after {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let took = t.elapsed();
    Ok(CmdOutput {
        status,
        stdout: to.join().unwrap_or_default(),
        stderr: te.join().unwrap_or_default(),
        took,
    })
}

/// Polls `pid` (via `kill(pid, 0)`) until it is gone or `limit` passes; true if gone. A zombie
/// nobody reaps (a daemonised process) counts as gone.
pub(crate) fn wait_gone(pid: i32, limit: Duration) -> bool {
    let t = Instant::now();
    loop {
        let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| s.contains(") Z "))
                .unwrap_or(true);
        if !alive {
            return true;
        }
        if t.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
