//! Section 7: mass repair. N managed running containers (PVE-plugged veth pairs, no LXC), `op-agent
//! watch` running; two events that hit every container at once, each timed until the last
//! container is back:
//! - `ifreload`: every owned Port deleted in one `ovs-vsctl` transaction (what `ifreload -a`
//!   does to ports its stanza does not list) → until every `vi<vmid>` Port is back with
//!   `ofport` > 0;
//! - `veth re-created`: every container's veth pair deleted (untimed, until ovs-vswitchd has
//!   settled; its reconfigurations in a row of their own), then a new `veth<vmid>i0` plugged as
//!   PVE does (a mass in-guest reboot) → until every container is converged again.
//!
//! Side A is `op-agent watch` (batched); side B the per-container path of the same binary
//! (`watch --no-batch`), or `OPB_AGENT_B` (another build's `watch`) when set. Reconfigurations
//! are ovs-vswitchd's `bridge_reconfigure` coverage counter over the event (the event's own
//! `ovs-vsctl` transaction included), CPU is ovs-vswitchd's user+system time over the event.
//! `OPB_MASS_SIDES=a` runs side A only. `OPB_MASS_NAMING=keep` manages the containers with
//! `naming = "keep"` (PVE's `veth<vmid>i0` keeps its name and its Port, which op-agent takes
//! over: no Port deleted, no device released, no rename); the events then act on
//! `veth<vmid>i0`, and the re-created veth is plugged with PVE's `del-port` first, which now
//! finds the dead row of the vanished device (in rename mode no row has that name, op-agent's
//! is `vi<vmid>`, so PVE's `del-port` is a no-op and left out).

use crate::host::Host;
use crate::proc::ip_batch;
use crate::stats::stats;
use crate::{Res, BRIDGE, MTU, TAG};
use op_testkit::AgentCommand;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The longest an event may take before the round counts as failed.
const LIMIT: Duration = Duration::from_secs(300);

/// One event's measurement.
struct Sample {
    ms: f64,
    reconf: i64,
    bumps: i64,
    cpu_ms: f64,
    wrong: usize,
}

/// `ofport` of every Interface, by name.
fn ofports(h: &Host) -> Res<HashMap<String, i64>> {
    let out = h.vsctl(&[
        "--format=csv".into(),
        "--no-headings".into(),
        "--columns=name,ofport".into(),
        "list".into(),
        "Interface".into(),
    ])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_once(','))
        .map(|(n, o)| (n.trim_matches('"').to_string(), o.parse().unwrap_or(-1)))
        .collect())
}

/// Whether the containers are managed with `naming = "keep"` (`OPB_MASS_NAMING=keep`).
fn keep() -> bool {
    std::env::var("OPB_MASS_NAMING").as_deref() == Ok("keep")
}

/// The name of `v`'s device and of op-agent's Port once converged: `vi<vmid>`, or PVE's
/// `veth<vmid>i0` in keep mode.
fn owned(v: u32) -> String {
    if keep() {
        format!("veth{v}i0")
    } else {
        format!("vi{v}")
    }
}

/// The vmids not yet converged: the end state of [`Host::check_named`] and `ofport` > 0.
fn not_back(h: &Host, vmids: &[u32]) -> Res<Vec<u32>> {
    let bad = h.check_named(vmids, keep())?;
    let of = ofports(h)?;
    Ok(vmids
        .iter()
        .copied()
        .filter(|v| bad.contains(v) || of.get(&owned(*v)).copied().unwrap_or(-1) <= 0)
        .collect())
}

/// Polls every 20 ms until every container is back (or [`LIMIT`]); the time from `t0` and the
/// vmids still wrong.
fn settle(
    h: &Host,
    vmids: &[u32],
    t0: Instant,
    svc: &mut op_testkit::Service,
) -> Res<(f64, usize)> {
    loop {
        let bad = not_back(h, vmids)?;
        if bad.is_empty() || t0.elapsed() > LIMIT {
            return Ok((t0.elapsed().as_secs_f64() * 1e3, bad.len()));
        }
        if let Some(st) = svc.try_wait() {
            return Err(format!("watch exited {st}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `event` (which returns its own start instant), then measures.
fn measure(
    h: &Host,
    vmids: &[u32],
    svc: &mut op_testkit::Service,
    event: impl FnOnce() -> Res<Instant>,
) -> Res<Sample> {
    let (next0, rec0) = h.ovs_counters()?;
    let cpu0 = h.vswitchd_cpu_ms()?;
    let t0 = event()?;
    let (ms, wrong) = settle(h, vmids, t0, svc)?;
    let cpu1 = h.vswitchd_cpu_ms()?;
    let (next1, rec1) = h.ovs_counters()?;
    Ok(Sample {
        ms,
        reconf: rec1 - rec0,
        bumps: next1 - next0,
        cpu_ms: cpu1 - cpu0,
        wrong,
    })
}

/// `ifreload`-like: every owned Port ([`owned`]) deleted in one transaction.
fn ifreload(h: &Host, vmids: &[u32]) -> Res<Instant> {
    let mut del = vec![];
    for v in vmids {
        del.extend([
            "--".into(),
            "--if-exists".into(),
            "del-port".into(),
            owned(*v),
        ]);
    }
    let t0 = Instant::now();
    h.vsctl(&del)?;
    Ok(t0)
}

/// Every veth pair deleted, untimed (the stop half of a mass in-guest reboot: LXC deletes the
/// pair when the container stops, the new one appears when it starts again): ovs-vswitchd
/// reacts to each of its Ports' devices vanishing (a reconfiguration per burst of link events
/// it sees), so this waits until it settled (`bridge_reconfigure` unchanged over one read of
/// [`Host::ovs_counters`], at most 30 s). The reconfigurations and ms that took.
fn unplug(h: &Host, vmids: &[u32]) -> Res<(i64, f64)> {
    let (_, r0) = h.ovs_counters()?;
    let mut del = String::new();
    for v in vmids {
        del += &format!("link del {}\n", owned(*v));
    }
    let t = Instant::now();
    ip_batch(&del)?;
    let mut last = r0;
    loop {
        let (_, r) = h.ovs_counters()?;
        if r == last || t.elapsed() > Duration::from_secs(30) {
            return Ok((r - r0, t.elapsed().as_secs_f64() * 1e3));
        }
        last = r;
    }
}

/// Every veth pair re-created and plugged like PVE's `tap_plug` (one batched `ovs-vsctl`),
/// after [`unplug`].
fn recreate(h: &Host, vmids: &[u32]) -> Res<Instant> {
    let t0 = Instant::now();
    let mut add = String::new();
    for v in vmids {
        add += &format!(
            "link add veth{v}i0 mtu {MTU} type veth peer name vp{v}\nlink set vp{v} up\n\
             link set dev veth{v}i0 up mtu {MTU}\n"
        );
    }
    ip_batch(&add)?;
    let mut plug: Vec<String> = vec![];
    for v in vmids {
        let p = format!("veth{v}i0");
        if keep() {
            plug.extend([
                "--".into(),
                "--if-exists".into(),
                "del-port".into(),
                p.clone(),
            ]);
        }
        plug.extend([
            "--".into(),
            "add-port".into(),
            BRIDGE.into(),
            p.clone(),
            format!("tag={TAG}"),
            "--".into(),
            "set".into(),
            "Interface".into(),
            p,
            format!("mtu_request={MTU}"),
        ]);
    }
    h.vsctl(&plug)?;
    Ok(t0)
}

/// The `watch` of side `b` (per-container path) or A (batched).
fn watch_cmd(h: &Host, b: bool) -> AgentCommand {
    match (b, std::env::var_os("OPB_AGENT_B")) {
        (false, _) => AgentCommand::new(&["watch"]).bin(&h.agent),
        (true, Some(bin)) => AgentCommand::new(&["watch"]).bin(PathBuf::from(bin)),
        (true, None) => AgentCommand::new(&["watch", "--no-batch"]).bin(&h.agent),
    }
    .config_env(h.agent_toml())
}

/// Section 7 for `n` containers, `rounds` rounds of each event per side: prints the table rows.
pub(crate) fn mass(root: &Path, n: usize, rounds: usize) -> Res<()> {
    use std::os::linux::net::SocketAddrExt;
    let h = Host::new(root)?;
    let vmids: Vec<u32> = (0..n as u32).map(|i| 3000 + i).collect();
    let mut socks = vec![];
    for &v in &vmids {
        h.manage_named(v, keep())?;
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
    let mut p50 = HashMap::new();
    // OPB_MASS_SIDES=a: the batched side only (e.g. to measure a change of it).
    let sides: &[bool] = match std::env::var("OPB_MASS_SIDES").as_deref() {
        Ok("a") => &[false],
        _ => &[false, true],
    };
    for &b in sides {
        let side = match (b, std::env::var_os("OPB_AGENT_B").is_some()) {
            (false, _) => "batched",
            (true, false) => "per-container (`--no-batch`)",
            (true, true) => "per-container (`OPB_AGENT_B`)",
        };
        let side = if keep() {
            format!("{side}, naming = keep")
        } else {
            side.to_string()
        };
        let mut svc = watch_cmd(&h, b).spawn(&root.join(format!("mass-{n}-{b}.log")));
        let (s, bad) = settle(&h, &vmids, Instant::now(), &mut svc)?;
        eprintln!("mass {n} {side}: start-up converged in {s:.0} ms ({bad} wrong)");
        for (event, f) in [
            (
                "ifreload: every owned Port deleted",
                ifreload as fn(&Host, &[u32]) -> Res<Instant>,
            ),
            ("every veth re-created", recreate),
        ] {
            let mut samples = vec![];
            let recreating = event == "every veth re-created";
            let mut unplugs = vec![];
            for r in 0..rounds {
                if recreating {
                    let (rc, ms) = unplug(&h, &vmids)?;
                    eprintln!(
                        "mass {n} {side} veth deletion round {r}: settled in {ms:.0} ms, {rc} \
                         reconfigurations"
                    );
                    unplugs.push((rc, ms));
                }
                let s = measure(&h, &vmids, &mut svc, || f(&h, &vmids))?;
                eprintln!(
                    "mass {n} {side} {event} round {r}: {:.0} ms, {} reconfigurations",
                    s.ms, s.reconf
                );
                samples.push(s);
            }
            let t = stats(&samples.iter().map(|s| s.ms).collect::<Vec<_>>());
            let rc = stats(&samples.iter().map(|s| s.reconf as f64).collect::<Vec<_>>());
            let bu = stats(&samples.iter().map(|s| s.bumps as f64).collect::<Vec<_>>());
            let cpu = stats(&samples.iter().map(|s| s.cpu_ms).collect::<Vec<_>>());
            let wrong: usize = samples.iter().map(|s| s.wrong).sum();
            p50.insert((event, b), t.med);
            if recreating {
                let rc = stats(&unplugs.iter().map(|u| u.0 as f64).collect::<Vec<_>>());
                let ms = stats(&unplugs.iter().map(|u| u.1).collect::<Vec<_>>());
                println!(
                    "| {n} | every veth deleted first (untimed; until ovs-vswitchd settled) | \
                     {side} | ({:.0}) | ({:.0}) | {:.0} | | | |",
                    ms.med, ms.max, rc.med
                );
            }
            println!(
                "| {n} | {event} | {side} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {wrong} |",
                t.med, t.max, rc.med, bu.med, cpu.med
            );
        }
        svc.stop()
            .ok_or("watch did not exit within 15 s of SIGTERM")?;
    }
    for event in [
        "ifreload: every owned Port deleted",
        "every veth re-created",
    ] {
        if let (Some(a), Some(b)) = (p50.get(&(event, false)), p50.get(&(event, true))) {
            println!(
                "| {n} | {event} | ratio per-container / batched | {:.1}× | | | | | |",
                b / a
            );
        }
    }
    drop(socks);
    Ok(())
}
