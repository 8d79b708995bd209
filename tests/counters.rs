//! Traffic counters end to end, through `pve-sim` with real LXC containers on a private OVS
//! (`datapath_type=netdev`): after container 100 downloads 1 MiB from container 101,
//! `op-agent status --json` and `op-agent metrics` count at least that many bytes on both
//! NICs (and no more than the kernel's own counters say); the watch service writes the same
//! text to `[metrics] textfile`, which appears at once and which a reader reading it in a
//! tight loop while it is rewritten every 0.1 s always finds whole.
//! Root only (fails, never skips). Run:
//! `cargo build -p pve-integration && cargo test --test counters`.

use op_agent::metrics::{text, LAST_FAMILY};
use op_testkit::{bridged_ip, PveConf, TestHost};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

/// Bytes of the transfer: 1 MiB.
const SENT: u64 = 1024 * 1024;

fn attach(host: &TestHost, vmid: u32, script: &str) -> String {
    let lxcpath = host.lxcpath().display().to_string();
    let v = vmid.to_string();
    host.run_ok(&[
        "lxc-attach",
        "-P",
        &lxcpath,
        "-n",
        &v,
        "--",
        "sh",
        "-c",
        script,
    ])
}

/// Turns off TX checksum offload on the guest's `eth0`: ovs-vswitchd's userspace datapath
/// reads frames with AF_PACKET and would forward CHECKSUM_PARTIAL TCP segments unfinished.
fn csum_off(host: &TestHost, vmid: u32) {
    let lxcpath = host.lxcpath().display().to_string();
    let v = vmid.to_string();
    let pid = host.run_ok(&["lxc-info", "-P", &lxcpath, "-n", &v, "-p", "-H"]);
    host.run_ok(&[
        "nsenter",
        "-t",
        pid.trim(),
        "-n",
        "ethtool",
        "-K",
        "eth0",
        "tx",
        "off",
    ]);
}

/// Containers 100 and 101 managed in bridge mode on VLAN 10 and started.
fn two_containers(host: &TestHost) {
    for v in [100, 101] {
        host.manage_bridged(v, PveConf::bridged(v, 10));
        host.sim_ok_text(&["start", &v.to_string()]);
        host.wait_converged(v, &format!("vi{v}"), 10, Duration::from_secs(5));
        csum_off(host, v);
    }
    assert!(host.ping(100, &bridged_ip(101)), "100 cannot reach 101");
}

/// Container 100 downloads [`SENT`] bytes from container 101 (busybox `httpd` and `wget`).
fn transfer(host: &TestHost) {
    attach(
        host,
        101,
        &format!(
            "mkdir -p /tmp/www && dd if=/dev/zero of=/tmp/www/f bs=65536 count={} 2>/dev/null \
             && (httpd -p 80 -h /tmp/www || true)",
            SENT / 65536
        ),
    );
    let got = attach(
        host,
        100,
        &format!(
            "timeout 60 wget -q -O - http://{}/f | wc -c",
            bridged_ip(101)
        ),
    );
    assert_eq!(got.trim(), SENT.to_string(), "the download was cut short");
}

/// `(rx_bytes, tx_bytes)` of `dev` as the kernel counts them (`ip -s -j link show`).
fn kernel_bytes(host: &TestHost, dev: &str) -> (u64, u64) {
    let out = host.run_ok(&["ip", "-s", "-j", "link", "show", "dev", dev]);
    let v: Value = serde_json::from_str(&out).unwrap();
    let s = &v[0]["stats64"];
    (
        s["rx"]["bytes"].as_u64().unwrap(),
        s["tx"]["bytes"].as_u64().unwrap(),
    )
}

/// `(rx_bytes, tx_bytes)` of container `vmid`'s net0 in `op-agent status --json`, and the
/// same of the container's sum.
fn status_bytes(host: &TestHost, vmid: u32) -> ((u64, u64), (u64, u64)) {
    let out = host.agent(&["status", "--json"]);
    assert_eq!(out.code(), Some(0), "{}", out.text());
    let v: Value = serde_json::from_str(&out.stdout_text()).unwrap();
    let c = v["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["vmid"] == vmid)
        .unwrap_or_else(|| panic!("no {vmid} in {v}"))
        .clone();
    let pair = |x: &Value| {
        (
            x["rx_bytes"].as_u64().unwrap_or_else(|| panic!("{c}")),
            x["tx_bytes"].as_u64().unwrap_or_else(|| panic!("{c}")),
        )
    };
    assert_eq!(c["nics"][0]["link"], format!("vi{vmid}"));
    (pair(&c["nics"][0]["counters"]), pair(&c["counters"]))
}

/// The value of `name{vmid,net="net0",port="vi<vmid>"}` in `text`.
fn nic_sample(samples: &[text::Sample], name: &str, vmid: u32) -> u64 {
    let v = vmid.to_string();
    let port = format!("vi{vmid}");
    samples
        .iter()
        .find(|s| {
            s.name == name
                && s.label("vmid") == Some(v.as_str())
                && s.label("net") == Some("net0")
                && s.label("port") == Some(port.as_str())
        })
        .unwrap_or_else(|| panic!("no {name} of {vmid}"))
        .value as u64
}

#[test]
fn status_json_and_metrics_count_a_1_mib_transfer() {
    let host = TestHost::new("ctr");
    two_containers(&host);
    let (before100, _) = status_bytes(&host, 100);
    let (before101, _) = status_bytes(&host, 101);
    transfer(&host);

    // Into 100: its host link vi100 sent the bytes; out of 101: vi101 received them.
    let (nic100, sum100) = status_bytes(&host, 100);
    let (nic101, _) = status_bytes(&host, 101);
    let k100 = kernel_bytes(&host, "vi100");
    let k101 = kernel_bytes(&host, "vi101");
    eprintln!(
        "status: vi100 tx {} -> {} (kernel {}), vi101 rx {} -> {} (kernel {})",
        before100.1, nic100.1, k100.1, before101.0, nic101.0, k101.0
    );
    assert!(nic100.1 - before100.1 >= SENT, "vi100 tx {nic100:?}");
    assert!(nic101.0 - before101.0 >= SENT, "vi101 rx {nic101:?}");
    assert!(nic100.1 <= k100.1 && nic101.0 <= k101.0);
    assert_eq!(sum100, nic100, "one NIC: the container's sum is its NIC");
    // The table of `status --counters`: VMID NIC LINK RX-BYTES RX-PKTS TX-BYTES TX-PKTS.
    let out = host.agent(&["status", "--counters"]);
    assert_eq!(out.code(), Some(0), "{}", out.text());
    let table = out.stdout_text();
    let row: Vec<&str> = table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|w| w.len() == 7 && w[0] == "100" && w[2] == "vi100")
        .unwrap_or_else(|| panic!("no vi100 counters row:\n{table}"));
    assert!(
        row[5].parse::<u64>().unwrap() >= before100.1 + SENT,
        "{table}"
    );

    let out = host.agent(&["metrics"]);
    assert_eq!(out.code(), Some(0), "{}", out.text());
    let samples = text::parse(&out.stdout_text()).unwrap_or_else(|e| panic!("{e}"));
    let tx100 = nic_sample(&samples, "op_agent_nic_transmit_bytes_total", 100);
    let rx101 = nic_sample(&samples, "op_agent_nic_receive_bytes_total", 101);
    let k100 = kernel_bytes(&host, "vi100");
    let k101 = kernel_bytes(&host, "vi101");
    eprintln!("metrics: vi100 tx {tx100}, vi101 rx {rx101}");
    assert!(tx100 >= before100.1 + SENT && tx100 <= k100.1, "{tx100}");
    assert!(rx101 >= before101.0 + SENT && rx101 <= k101.0, "{rx101}");
    assert!(nic_sample(&samples, "op_agent_nic_transmit_packets_total", 100) > 0);
    assert!(nic_sample(&samples, "op_agent_nic_receive_packets_total", 101) > 0);
    // The audit facts: the head and each container's last hook run (post-start, ok).
    let head = host.audit_rows().last().map(|r| r.seq).unwrap();
    let find = |name: &str, labels: &[(&str, &str)]| {
        samples
            .iter()
            .find(|s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == Some(*v)))
            .map(|s| s.value)
    };
    assert_eq!(find("op_agent_audit_head_seq", &[]), Some(head as f64));
    for vmid in ["100", "101"] {
        let l = [("vmid", vmid), ("phase", "post-start")];
        assert_eq!(
            find(
                "op_agent_last_hook_outcome",
                &[l[0], l[1], ("outcome", "ok")]
            ),
            Some(1.0),
            "{}",
            out.stdout_text()
        );
    }
}

/// Reads `path` in a loop for `d`: every read must be a whole exposition (strict parse, the
/// last family present, container 100's NIC counters present). Returns how many reads found
/// the file and how many distinct texts they saw.
fn read_while_rewritten(path: &Path, d: Duration) -> (usize, usize) {
    let t = Instant::now();
    let mut reads = 0;
    let mut texts = std::collections::BTreeSet::new();
    while t.elapsed() < d {
        let Ok(s) = std::fs::read_to_string(path) else {
            continue;
        };
        reads += 1;
        let samples = text::parse(&s).unwrap_or_else(|e| panic!("read {reads}: {e}\n{s}"));
        assert!(
            samples.last().is_some_and(|x| x.name == LAST_FAMILY),
            "read {reads}: a partial file:\n{s}"
        );
        nic_sample(&samples, "op_agent_nic_receive_bytes_total", 100);
        texts.insert(s);
    }
    (reads, texts.len())
}

#[test]
fn watch_writes_the_textfile_at_once_and_replaces_it_atomically() {
    let host = TestHost::new("ctrw");
    let dir = host.root().join("var/lib/prometheus/node-exporter");
    std::fs::create_dir_all(&dir).unwrap();
    let prom = dir.join("op_agent.prom");
    let textfile = |interval_s: f64| {
        host.write_agent_toml(&format!(
            "[metrics]\ntextfile = \"{}\"\ninterval_s = {interval_s}\n",
            prom.display()
        ))
    };
    host.manage_bridged(100, PveConf::bridged(100, 10));
    host.sim_ok_text(&["start", "100"]);
    host.wait_converged(100, "vi100", 10, Duration::from_secs(5));

    // With interval_s = 2 the file is there before 2 s: written at start, not after a period.
    // Under op-agent.service's `UMask=0077`: the file is still readable by node_exporter's
    // user (0644).
    textfile(2.0);
    let t = Instant::now();
    let mut w = host
        .agent_cmd(&["watch"])
        .config(host.agent_toml())
        .umask(0o077)
        .spawn(&host.watch_log());
    while !prom.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "no {} within interval_s (2 s) of the watch's start:\n{}",
            prom.display(),
            w.log_text()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    eprintln!("textfile there {} ms after spawn", t.elapsed().as_millis());
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&prom).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o644, "{} mode {mode:o}", prom.display());
    let first = std::fs::read_to_string(&prom).unwrap();
    text::parse(&first).unwrap();
    assert!(w.stop().is_some_and(|s| s.success()), "{}", w.log_text());

    // Rewritten every 0.1 s while read in a tight loop.
    textfile(0.1);
    let mut w = host.spawn_watch(&[]);
    let (reads, texts) = read_while_rewritten(&prom, Duration::from_secs(3));
    eprintln!("{reads} whole reads of {texts} distinct texts in 3 s");
    assert!(reads > 100, "{reads} reads");
    assert!(texts >= 10, "rewritten only {texts} times in 3 s");

    assert!(w.stop().is_some_and(|s| s.success()), "{}", w.log_text());
    let left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["op_agent.prom"], "a temporary file was left");
}
