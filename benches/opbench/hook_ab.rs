//! Sections 1 and 2: one post-start hook, op-agent against the bash baseline, A B A B; where
//! op-agent's time goes (`--timings`).

use crate::host::{parse_timings, Host, Kind};
use crate::proc::time_one;
use crate::stats::{fmt3, stats};
use crate::{Res, BRIDGE, TAG};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

pub(crate) fn hook_ab(root: &Path, runs: usize, warmup: usize) -> Res<()> {
    let h = Host::new(root)?;
    let vmid = 100;
    h.manage(vmid)?;
    let mut ms: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut rss: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut cpu: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut ratios = vec![];
    let mut steps: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut order: Vec<String> = vec![];
    let mut overhead = vec![];
    let mut overhead_wall = vec![];
    let mut own_part = vec![];
    let mut failures = 0;
    for i in 0..warmup + runs {
        let mut pair = [0.0; 2];
        for (k, kind) in [Kind::Agent, Kind::Baseline].into_iter().enumerate() {
            h.fresh(&[vmid], true)?;
            let d = time_one(&mut h.hook_cmd(kind, vmid, true))?;
            let bad = h.check(&[vmid])?;
            if !d.ok || !bad.is_empty() {
                failures += 1;
                eprintln!("{} run {i} failed: {}", kind.name(), d.stderr.trim());
            }
            pair[k] = d.ms;
            if i < warmup {
                continue;
            }
            ms.entry(kind.name()).or_default().push(d.ms);
            rss.entry(kind.name()).or_default().push(d.rss_kib as f64);
            cpu.entry(kind.name()).or_default().push(d.cpu_ms);
            if kind == Kind::Agent {
                let t = parse_timings(&d.stderr);
                let mut total = f64::NAN;
                let mut wait = 0.0;
                let mut first_wait = f64::NAN;
                let mut per: BTreeMap<String, f64> = BTreeMap::new();
                let mut seen: HashMap<String, usize> = HashMap::new();
                for (s, v) in t {
                    // Repeated steps (one ovs.wait per OVSDB change) get #2, #3, ...
                    let k = seen.entry(s.clone()).or_default();
                    *k += 1;
                    let s = if *k > 1 { format!("{s}#{k}") } else { s };
                    if s == "total" {
                        total = v;
                        continue;
                    }
                    if s.starts_with("ovs.wait") {
                        wait += v;
                    }
                    if s == "ovs.wait" {
                        first_wait = v;
                    }
                    if !order.contains(&s) {
                        order.push(s.clone());
                    }
                    *per.entry(s).or_default() += v;
                }
                for (s, v) in per {
                    steps.entry(s).or_default().push(v);
                }
                steps
                    .entry("total (in-process)".into())
                    .or_default()
                    .push(total);
                steps
                    .entry("process wall (spawn→exit)".into())
                    .or_default()
                    .push(d.ms);
                overhead.push(total - wait);
                overhead_wall.push(d.ms - wait);
                own_part.push(d.ms - first_wait);
            }
        }
        if i >= warmup {
            ratios.push(pair[1] / pair[0]);
        }
        eprintln!(
            "hook-ab {i}: agent {:.2} ms, baseline {:.2} ms",
            pair[0], pair[1]
        );
    }
    println!(
        "### 1. post-start, one NIC, fresh PVE-plugged veth, private OVS{}\n",
        std::env::var("OPB_TITLE_NOTE").unwrap_or_default()
    );
    println!("{runs} runs per side after {warmup} warm-up pairs, alternating A B A B; every run's end state checked (vi100 on {BRIDGE} tag {TAG}, no veth100i0 port). Failures: {failures}.\n");
    println!("| | median (min – max) ms | p95 ms | CPU ms (user+sys, incl. children) | peak RSS median KiB |\n|---|---|---|---|---|");
    for k in [Kind::Agent, Kind::Baseline] {
        let s = stats(&ms[k.name()]);
        let r = stats(&rss[k.name()]);
        let c = stats(&cpu[k.name()]);
        println!(
            "| {} | {} | {:.2} | {:.1} | {:.0} (max {:.0}) |",
            k.name(),
            fmt3(&s),
            s.p95,
            c.med,
            r.med,
            r.max
        );
    }
    let r = stats(&ratios);
    println!(
        "| **ratio baseline / op-agent, per pair** | **{}** | {:.2} | | |\n",
        fmt3(&r),
        r.p95
    );
    println!(
        "### 2. Where op-agent's time goes (`--timings`, medians over the same {runs} runs)\n"
    );
    println!("| step | median (min – max) ms |\n|---|---|");
    order.push("total (in-process)".into());
    order.push("process wall (spawn→exit)".into());
    for s in &order {
        if let Some(v) = steps.get(s) {
            let note = match s.as_str() {
                "ovs.del-port" | "ovs.add-port" => " (includes the ovs.wait listed before it)",
                _ => "",
            };
            println!("| {s}{note} | {} |", fmt3(&stats(v)));
        }
    }
    println!(
        "| **agent overhead = total (in-process) − ovs.wait** | **{}** |",
        fmt3(&stats(&overhead))
    );
    println!(
        "| **agent overhead incl. process start and exit = process wall − ovs.wait** | **{}** |",
        fmt3(&stats(&overhead_wall))
    );
    println!(
        "| **op-agent's own part = process wall − the first ovs.wait (the device release, an RCU grace period: `floor`)** | **{}** |\n",
        fmt3(&stats(&own_part))
    );
    Ok(())
}
