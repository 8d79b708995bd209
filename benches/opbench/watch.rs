//! Section 5b: the memory of `op-agent watch` with many managed running containers.

use crate::host::Host;
use crate::proc::ip_batch;
use crate::Res;
use op_testkit::AgentCommand;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

/// `VmRSS`/`VmHWM` of `pid` in KiB, from `/proc/<pid>/status`.
pub(crate) fn rss_of(pid: u32) -> Res<(i64, i64)> {
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
pub(crate) fn watch_mem(root: &Path, n: usize, rounds: usize) -> Res<()> {
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
    let mut service = AgentCommand::new(&["watch"])
        .bin(&h.agent)
        .config_env(h.agent_toml())
        .spawn(&root.join("watch-mem.log"));
    let pid = service.pid().ok_or("watch: not started")?;
    let settle = |what: &str, service: &mut op_testkit::Service| -> Res<(f64, Vec<u32>)> {
        let t = Instant::now();
        loop {
            let bad = h.check(&vmids)?;
            if bad.is_empty() || t.elapsed() > Duration::from_secs(120) {
                return Ok((t.elapsed().as_secs_f64(), bad));
            }
            if let Some(st) = service.try_wait() {
                return Err(format!("watch exited {st} during {what}"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let mut lines = vec![];
    let (s, bad) = settle("start-up", &mut service)?;
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
        let (s, bad) = settle(&format!("round {r}"), &mut service)?;
        let (rss, hwm) = rss_of(pid)?;
        lines.push(format!(
            "| round {r}: {n} veths re-created ({events} new `veth<vmid>i0` links so far) | {s:.1} | {} | {rss} | {hwm} |",
            bad.len()
        ));
    }
    let st = service
        .stop()
        .ok_or("watch did not exit within 15 s of SIGTERM")?;
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
