//! Section 2b: the floor, what any hook pays on this host, op-agent or not.

use crate::host::Host;
use crate::proc::time_one;
use crate::stats::{fmt3, stats};
use crate::Res;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `close(2)` of an `AF_PACKET` socket bound to `ifindex`, in ms: what ovs-vswitchd's netdev
/// datapath does when it releases a port (the kernel's `packet_release` waits for an RCU grace
/// period in `synchronize_net`).
pub(crate) fn packet_close_ms(ifindex: i32) -> Res<f64> {
    // SAFETY: plain socket calls on a descriptor this function owns.
    unsafe {
        let proto = (libc::ETH_P_ALL as u16).to_be();
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto));
        if fd < 0 {
            return Err(format!(
                "socket(AF_PACKET): {}",
                std::io::Error::last_os_error()
            ));
        }
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = ifindex;
        let r = libc::bind(
            fd,
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        );
        if r != 0 {
            let e = std::io::Error::last_os_error();
            libc::close(fd);
            return Err(format!("bind(AF_PACKET): {e}"));
        }
        let t = Instant::now();
        libc::close(fd);
        Ok(t.elapsed().as_secs_f64() * 1e3)
    }
}

pub(crate) fn floor(root: &Path, runs: usize) -> Res<()> {
    let h = Host::new(root)?;
    let mut spawn = vec![];
    let mut pclose = vec![];
    let mut rt = vec![];
    let mut commit = vec![];
    let mut rename = vec![];
    // Scratch veth pair, removed at the end.
    let _ = Command::new("ip")
        .args(["link", "del", "opbfl0"])
        .stderr(Stdio::null())
        .status();
    let ok = Command::new("ip")
        .args([
            "link", "add", "opbfl0", "type", "veth", "peer", "name", "opbfl1",
        ])
        .status()
        .map_err(|e| format!("ip link add: {e}"))?;
    if !ok.success() {
        return Err("floor: cannot create the scratch veth".into());
    }
    let _ = Command::new("ip")
        .args(["link", "set", "opbfl0", "up"])
        .status();
    let ifindex: i32 = fs::read_to_string("/sys/class/net/opbfl0/ifindex")
        .map_err(|e| format!("ifindex: {e}"))?
        .trim()
        .parse()
        .map_err(|e| format!("ifindex: {e}"))?;
    let res = (|| -> Res<()> {
        let rtm = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rtm.block_on(async {
            let c = op_agent::ovsdb::Client::connect(&h.ovsdb_socket(), Duration::from_secs(5))
                .await
                .map_err(|e| e.to_string())?;
            let nl = op_agent::netlink::Netlink::connect().map_err(|e| e.to_string())?;
            for i in 0..runs + 3 {
                let t = Instant::now();
                c.transact("Open_vSwitch", vec![])
                    .await
                    .map_err(|e| e.to_string())?;
                let ms = t.elapsed().as_secs_f64() * 1e3;
                let op = serde_json::json!({"op": "mutate", "table": "Open_vSwitch", "where": [],
                    "mutations": [["external_ids", "insert",
                        ["map", [[format!("opbench-{i}"), "1"]]]]]});
                let t = Instant::now();
                c.transact("Open_vSwitch", vec![op])
                    .await
                    .map_err(|e| e.to_string())?;
                let cm = t.elapsed().as_secs_f64() * 1e3;
                let name = if i % 2 == 0 { "opbfl2" } else { "opbfl0" };
                let l = nl
                    .link_by_index(ifindex as u32)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or("scratch veth gone")?;
                let t = Instant::now();
                nl.rename(&l, name, "", true)
                    .await
                    .map_err(|e| e.to_string())?;
                let rn = t.elapsed().as_secs_f64() * 1e3;
                if i >= 3 {
                    rt.push(ms);
                    commit.push(cm);
                    rename.push(rn);
                }
            }
            Ok::<(), String>(())
        })?;
        for i in 0..runs + 3 {
            let d = time_one(&mut Command::new("/bin/true"))?;
            let p = packet_close_ms(ifindex)?;
            if i >= 3 {
                spawn.push(d.ms);
                pclose.push(p);
            }
        }
        Ok(())
    })();
    for n in ["opbfl0", "opbfl2"] {
        let _ = Command::new("ip")
            .args(["link", "del", n])
            .stderr(Stdio::null())
            .status();
    }
    res?;
    println!(
        "### 2b. The floor: what any hook pays on this host ({runs} runs each after 3 warm-up)\n"
    );
    println!("| | median (min – max) ms |\n|---|---|");
    for (what, v) in [
        ("spawn→reap of `/bin/true` (any process start)", &spawn),
        ("`close(2)` of a packet socket bound to a veth (inside ovs-vswitchd's release of a netdev-datapath port: an RCU grace period)", &pclose),
        ("OVSDB round trip, empty `transact` on a warm connection (ovsdb-server turnaround)", &rt),
        ("OVSDB round trip, committing `transact` (one `mutate` of `Open_vSwitch` external_ids; ovsdb-server writes its log)", &commit),
        ("netlink rename + up of a veth (RTM_SETLINK, kernel work included)", &rename),
    ] {
        println!("| {what} | {} |", fmt3(&stats(v)));
    }
    println!();
    Ok(())
}
