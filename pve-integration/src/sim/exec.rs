//! Bounded subprocesses: every command the simulator runs has a deadline and is killed at it,
//! and its failure is one line worded like pve-common `src/PVE/Tools.pm` `run_command`.

use std::io::{Read, Write};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Res, SHORT};

/// Result of a bounded subprocess run.
pub(crate) struct Ran {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// How a subprocess's output is handled.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Out {
    /// Collect stdout and stderr; after exit wait briefly (300 ms) for EOF (daemons may keep
    /// the pipes open).
    Capture,
    /// Copy stdout/stderr through to ours as they come, and wait for EOF on both pipes within
    /// the deadline (PVE `run_command` semantics).
    PassThrough,
}

pub(crate) fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` with stdin a pipe already at EOF, bounded by `timeout` (the child is killed then).
pub(crate) fn run_bounded(cmd: &mut Command, timeout: Duration, out: Out) -> Res<Ran> {
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
pub(crate) fn status_text(st: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (st.code(), st.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("got signal {s}"),
        _ => "unknown status".to_string(),
    }
}

/// Runs a command and fails (one line, with its first stderr line) unless it exits 0.
pub(crate) fn check(cmd: &mut Command, timeout: Duration) -> Res<String> {
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

pub(crate) fn ip(args: &[&str]) -> Res<String> {
    check(Command::new("ip").args(args), SHORT)
}
