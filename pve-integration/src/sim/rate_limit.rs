//! pve-common `src/PVE/Network.pm` `tap_rate_limit` and `setup_tc_rate_limit`, as `tap_plug`
//! runs them after the attach: the old limit removed (errors ignored, as PVE's `eval`s), then,
//! for a `rate` of more than 0 bytes/s, an htb root qdisc with class `1:1` at the rate and a
//! 1 MiB burst (what the host sends into the container) and an ingress qdisc with a `basic`
//! police filter (what the container sends).

use std::process::Command;

use super::exec::check;
use super::{Res, SHORT};
use crate::rate::{Rate, RATE_BURST_BYTES};

/// `/sbin/tc <args>`.
fn tc(args: &[&str]) -> Res<String> {
    check(Command::new("tc").args(args), SHORT)
}

/// `tap_rate_limit($iface, $rate)`: `rate` is the `rate=` value as written (MB/s), `None`
/// when the NIC has none.
///
/// One departure, for kernels without the `cls_basic` classifier (this one's test machines):
/// when only the police filter cannot be added, a line on stderr says so and the plug goes
/// on, where PVE would die. The htb shaping is applied as PVE applies it.
pub(crate) fn tap_rate_limit(iface: &str, rate: Option<&str>) -> Res<()> {
    // "these are allowed / expected to fail, e.g. when there is no previous rate limit"
    let _ = tc(&[
        "class", "del", "dev", iface, "parent", "1:", "classid", "1:1",
    ]);
    let _ = tc(&[
        "filter", "del", "dev", iface, "parent", "ffff:", "protocol", "all", "pref", "50", "u32",
    ]);
    let _ = tc(&["qdisc", "del", "dev", iface, "ingress"]);
    let _ = tc(&["qdisc", "del", "dev", iface, "root"]);
    // `$rate = int($rate * 1024 * 1024) if $rate;` ... `return if !$rate;`
    let Some(r) = rate.and_then(Rate::from_pve) else {
        return Ok(());
    };
    let rate = format!("{}bps", r.bytes_per_sec());
    let burst = format!("{RATE_BURST_BYTES}b");
    tc(&[
        "qdisc", "add", "dev", iface, "root", "handle", "1:", "htb", "default", "1",
    ])?;
    tc(&[
        "class", "add", "dev", iface, "parent", "1:", "classid", "1:1", "htb", "rate", &rate,
        "burst", &burst,
    ])?;
    tc(&["qdisc", "add", "dev", iface, "handle", "ffff:", "ingress"])?;
    if let Err(e) = tc(&[
        "filter", "add", "dev", iface, "parent", "ffff:", "prio", "50", "basic", "police", "rate",
        &rate, "burst", &burst, "mtu", "64kb", "drop",
    ]) {
        eprintln!("pve-sim: {iface}: PVE's ingress police filter not added ({e})");
    }
    Ok(())
}
