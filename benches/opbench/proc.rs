//! Child processes: bounded runs, `ovs-vsctl`, `ip -batch`, and `wait4(2)` timing with the
//! child's own peak RSS and CPU time.

use crate::Res;
use std::fs;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

pub(crate) fn env_path(k: &str) -> Res<PathBuf> {
    std::env::var_os(k)
        .map(PathBuf::from)
        .ok_or_else(|| format!("{k} is not set"))
}

pub(crate) fn run(cmd: &mut Command) -> Res<String> {
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

pub(crate) fn ip_batch(lines: &str) -> Res<()> {
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
pub(crate) struct Done {
    pub(crate) ms: f64,
    pub(crate) cpu_ms: f64,
    pub(crate) ok: bool,
    pub(crate) rss_kib: i64,
    pub(crate) stderr: String,
}

/// Reaps `pid` with `wait4(2)` to get its own `ru_maxrss`.
pub(crate) fn wait_pid(pid: libc::pid_t) -> Res<(i32, i64, f64)> {
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
pub(crate) fn cpu_ms(ru: &libc::rusage) -> f64 {
    let t = |v: libc::timeval| v.tv_sec as f64 * 1e3 + v.tv_usec as f64 / 1e3;
    t(ru.ru_utime) + t(ru.ru_stime)
}

/// CPU time (user + system, ms; 10 ms ticks) of process `pid` so far.
pub(crate) fn pid_cpu_ms(pid: i32) -> Res<f64> {
    let stat =
        fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| format!("{pid} stat: {e}"))?;
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

pub(crate) fn time_one(cmd: &mut Command) -> Res<Done> {
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
