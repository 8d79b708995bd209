//! Section 4: a start storm, N post-start hooks at once.

use crate::host::{Host, Kind};
use crate::proc::cpu_ms;
use crate::stats::{fmt3, stats};
use crate::Res;
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

pub(crate) struct StormRound {
    cpu: Vec<f64>,
    vswitchd_ms: f64,
    bumps: i64,
    reconfs: i64,
    wall: f64,
    per: Vec<f64>,
    failed: usize,
    wrong: usize,
    maxrss: i64,
}

pub(crate) fn storm_round(h: &Host, kind: Kind, vmids: &[u32], logdir: &Path) -> Res<StormRound> {
    h.fresh(vmids, false)?;
    let (n0, r0) = h.ovs_counters()?;
    let v0 = h.vswitchd_cpu_ms()?;
    let t0 = Instant::now();
    let mut started: HashMap<libc::pid_t, (u32, Instant)> = HashMap::new();
    let mut children = vec![];
    for v in vmids {
        let f = fs::File::create(logdir.join(format!("{}-{v}.err", kind == Kind::Agent)))
            .map_err(|e| e.to_string())?;
        let c = h
            .hook_cmd(kind, *v, false)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(f)
            .spawn()
            .map_err(|e| format!("spawn hook {v}: {e}"))?;
        started.insert(c.id() as libc::pid_t, (*v, Instant::now()));
        children.push(c);
    }
    let mut per = vec![];
    let mut failed = 0;
    let mut maxrss = 0;
    let mut cpu = vec![];
    // Reap in exit order (wait4(-1)), so each hook's time ends when it exits.
    for _ in 0..children.len() {
        let mut status = 0;
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: plain syscall with valid out-pointers; all our children are hooks here.
        let pid = unsafe { libc::wait4(-1, &mut status, 0, &mut ru) };
        let Some((_, t)) = started.get(&pid) else {
            return Err(format!("wait4(-1): {}", std::io::Error::last_os_error()));
        };
        per.push(t.elapsed().as_secs_f64() * 1e3);
        maxrss = maxrss.max(ru.ru_maxrss);
        cpu.push(cpu_ms(&ru));
        if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
            failed += 1;
        }
    }
    let wall = t0.elapsed().as_secs_f64() * 1e3;
    let v1 = h.vswitchd_cpu_ms()?;
    let (n1, r1) = h.ovs_counters()?;
    for c in children {
        std::mem::forget(c);
    }
    let wrong = h.check(vmids)?.len();
    if failed > 0 {
        // Name the first failures' reasons (stderr of the failed hooks) on our stderr.
        let mut shown = 0;
        for v in vmids {
            let f = logdir.join(format!("{}-{v}.err", kind == Kind::Agent));
            let text = fs::read_to_string(&f).unwrap_or_default();
            if !text.trim().is_empty() && shown < 3 {
                eprintln!(
                    "  {} {v}: {}",
                    kind.name(),
                    text.trim().replace('\n', " | ")
                );
                shown += 1;
            }
        }
    }
    Ok(StormRound {
        cpu,
        vswitchd_ms: v1 - v0,
        bumps: n1 - n0,
        reconfs: r1 - r0,
        wall,
        per,
        failed,
        wrong,
        maxrss,
    })
}

pub(crate) fn storm(root: &Path, n: usize, rounds: usize) -> Res<()> {
    let h = Host::new(root)?;
    let vmids: Vec<u32> = (0..n as u32).map(|i| 1000 + i).collect();
    for v in &vmids {
        h.manage(*v)?;
    }
    let logdir = root.join("storm-logs");
    fs::create_dir_all(&logdir).map_err(|e| e.to_string())?;
    let mut res: BTreeMap<&str, Vec<StormRound>> = BTreeMap::new();
    let mut ratios = vec![];
    for i in 0..rounds {
        let mut pair = [0.0; 2];
        for (k, kind) in [Kind::Agent, Kind::Baseline].into_iter().enumerate() {
            let r = storm_round(&h, kind, &vmids, &logdir)?;
            eprintln!(
                "storm N={n} round {i} {}: wall {:.0} ms, failed {}, wrong {}",
                kind.name(),
                r.wall,
                r.failed,
                r.wrong
            );
            pair[k] = r.wall;
            res.entry(kind.name()).or_default().push(r);
        }
        ratios.push(pair[1] / pair[0]);
    }
    let (chain_ok, chain_msg) = h.verify_agent_chain()?;
    let (brows, blinear) = h.baseline_chain()?;
    for k in [Kind::Agent, Kind::Baseline] {
        let rs = &res[k.name()];
        let walls: Vec<f64> = rs.iter().map(|r| r.wall).collect();
        let per: Vec<f64> = rs.iter().flat_map(|r| r.per.iter().copied()).collect();
        let failed: usize = rs.iter().map(|r| r.failed).sum();
        let wrong: usize = rs.iter().map(|r| r.wrong).sum();
        let rss = rs.iter().map(|r| r.maxrss).max().unwrap_or(0);
        let bumps = stats(&rs.iter().map(|r| r.bumps as f64).collect::<Vec<_>>()).med;
        let reconfs = stats(&rs.iter().map(|r| r.reconfs as f64).collect::<Vec<_>>()).med;
        let vsw = stats(&rs.iter().map(|r| r.vswitchd_ms).collect::<Vec<_>>()).med;
        let cpu = stats(
            &rs.iter()
                .flat_map(|r| r.cpu.iter().copied())
                .collect::<Vec<_>>(),
        )
        .med;
        let w = stats(&walls);
        let p = stats(&per);
        let chain = match k {
            Kind::Agent => format!(
                "`audit verify`: {} ({chain_msg})",
                if chain_ok { "linear, intact" } else { "FAILED" }
            ),
            Kind::Baseline => format!(
                "{brows} rows, {}",
                if blinear { "linear" } else { "FORKED" }
            ),
        };
        println!(
            "| {n} | {} | {} | {:.1} | {:.1} | {:.1} | {cpu:.1} | {failed}/{} | {wrong} | {bumps:.0} / {reconfs:.0} | {vsw:.0} | {rss} | {chain} |",
            k.name(),
            fmt3(&w),
            w.med / n as f64,
            p.med,
            p.p95,
            n * rs.len(),
        );
    }
    let r = stats(&ratios);
    println!(
        "| {n} | ratio of walls, per pair | {} | | | | | | | | | |",
        fmt3(&r)
    );
    Ok(())
}
