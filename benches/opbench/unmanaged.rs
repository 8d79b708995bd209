//! Section 3: the no-op path, a guest op-agent does not manage.

use crate::host::Host;
use crate::proc::time_one;
use crate::stats::{fmt3, stats};
use crate::Res;
use std::fs;
use std::path::Path;
use std::process::Command;

pub(crate) fn unmanaged(root: &Path, runs: usize) -> Res<()> {
    let h = Host::new(root)?;
    let vmid = "999";
    let _ = fs::remove_file(root.join(format!("etc/op-agent/containers/{vmid}.toml")));
    let mut via_hook = vec![];
    let mut direct = vec![];
    let mut rss = vec![];
    let mut fails = 0;
    for i in 0..runs + 3 {
        let mut c = Command::new(&h.hook);
        c.args([vmid, "post-start"])
            .env("OP_AGENT_BIN", &h.agent)
            .env("OP_AGENT_CONFIG", h.agent_toml());
        let a = time_one(&mut c)?;
        let b = time_one(h.agent_cmd().args(["hook", vmid, "post-start"]))?;
        fails += usize::from(!a.ok) + usize::from(!b.ok);
        if i >= 3 {
            via_hook.push(a.ms);
            direct.push(b.ms);
            rss.push(b.rss_kib as f64);
        }
    }
    println!(
        "### 3. Unmanaged guest (no-op path), {runs} runs after 3 warm-up, failures {fails}\n"
    );
    println!("| | median (min – max) ms | p95 ms |\n|---|---|---|");
    let s = stats(&via_hook);
    println!(
        "| `op-hook 999 post-start` (sh + exec op-agent) | {} | {:.2} |",
        fmt3(&s),
        s.p95
    );
    let s = stats(&direct);
    println!(
        "| `op-agent hook 999 post-start` | {} | {:.2} |",
        fmt3(&s),
        s.p95
    );
    println!(
        "\nPeak RSS of the no-op run: median {:.0} KiB.\n",
        stats(&rss).med
    );
    Ok(())
}
