//! What `op-agent metrics` prints and the watch service writes to `[metrics] textfile`: the
//! traffic counters of every running managed container's NICs ([`crate::counters`]) and facts
//! of the audit log ([`audit::AuditTally`]), in the Prometheus text format ([`text`]).
//!
//! Families (all labels are strings):
//! - `op_agent_nic_{receive,transmit}_{bytes,packets,drop}_total{vmid,net,port}` (counter):
//!   the host link's `IFLA_STATS64` counters (receive = what the container sent); they restart
//!   from 0 with a new veth (container start, NIC hotplug), which Prometheus' `rate()` treats
//!   as a counter reset;
//! - `op_agent_audit_readable` (gauge): 1 when the audit database could be read, else 0 and no
//!   audit family follows;
//! - `op_agent_audit_head_seq` (gauge): `seq` of the audit chain head;
//! - `op_agent_last_hook_outcome{vmid,phase,outcome}` (gauge): 1 for the outcome (`ok`,
//!   `failed`, `incomplete`) of the container's last hookscript run, 0 for the other two;
//! - `op_agent_last_hook_timestamp_seconds{vmid,phase}` (gauge): when that run started;
//! - `op_agent_watch_repairs_total{vmid}` and `op_agent_watch_repair_failures_total{vmid}`
//!   (counter): the watch service's runs that changed something, and those that failed,
//!   counted from the audit rows (so they survive a restart of the service), 0 for a running
//!   managed container that had none;
//! - `op_agent_metrics_timestamp_seconds` (gauge, last): when this text was made.

pub mod audit;
pub mod text;

use crate::config::AgentConfig;
use crate::counters::{self, ContainerCounters, CountersError};
use audit::{AuditTally, RunOutcome};
use text::{Family, Kind, Value};

/// The name of the last family of every exposition: a reader that finds it has the whole text.
pub const LAST_FAMILY: &str = "op_agent_metrics_timestamp_seconds";

/// The NIC counter families: `(name, help, field of LinkStats)`.
type StatField = fn(&crate::netlink::LinkStats) -> u64;
const NIC_FAMILIES: [(&str, &str, StatField); 6] = [
    (
        "op_agent_nic_receive_bytes_total",
        "Bytes received by the container NIC's host link (sent by the container), IFLA_STATS64 rx_bytes.",
        |s| s.rx_bytes,
    ),
    (
        "op_agent_nic_transmit_bytes_total",
        "Bytes sent by the container NIC's host link (received by the container), IFLA_STATS64 tx_bytes.",
        |s| s.tx_bytes,
    ),
    (
        "op_agent_nic_receive_packets_total",
        "Packets received by the container NIC's host link (sent by the container), IFLA_STATS64 rx_packets.",
        |s| s.rx_packets,
    ),
    (
        "op_agent_nic_transmit_packets_total",
        "Packets sent by the container NIC's host link (received by the container), IFLA_STATS64 tx_packets.",
        |s| s.tx_packets,
    ),
    (
        "op_agent_nic_receive_drop_total",
        "Packets the container NIC's host link dropped on receiving, IFLA_STATS64 rx_dropped.",
        |s| s.rx_dropped,
    ),
    (
        "op_agent_nic_transmit_drop_total",
        "Packets the container NIC's host link dropped on sending, IFLA_STATS64 tx_dropped.",
        |s| s.tx_dropped,
    ),
];

/// Collects the counters and folds the audit rows appended since `tally` was last updated,
/// then renders both. An unreadable audit database only sets `op_agent_audit_readable 0`
/// (the reason is returned beside the text, for the caller to log). Must run inside a tokio
/// runtime.
///
/// # Errors
/// [`CountersError`]: the link counters could not be read (nothing is rendered then).
pub async fn gather(
    cfg: &AgentConfig,
    tally: &mut AuditTally,
) -> Result<(String, Option<String>), CountersError> {
    let cts = counters::collect(cfg).await?;
    let audit_err = tally.update(&cfg.toml.audit.database).err();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let readable = audit_err.is_none();
    Ok((render(&cts, readable.then_some(&*tally), now), audit_err))
}

/// The exposition of `cts` and, when the audit log was read, `tally`, stamped `now` (seconds
/// since the Unix epoch). Pure.
pub fn render(cts: &[ContainerCounters], tally: Option<&AuditTally>, now: f64) -> String {
    let mut fams = Vec::new();
    for (name, help, field) in NIC_FAMILIES {
        let mut f = Family::new(name, Kind::Counter, help);
        for c in cts {
            let vmid = c.vmid.to_string();
            for n in &c.nics {
                let net = format!("net{}", n.net);
                f.push(
                    &[("vmid", &vmid), ("net", &net), ("port", &n.port)],
                    Value::Uint(field(&n.stats)),
                );
            }
        }
        fams.push(f);
    }
    let mut readable = Family::new(
        "op_agent_audit_readable",
        Kind::Gauge,
        "1 when op-agent's audit database could be read for these metrics, else 0.",
    );
    readable.push(&[], Value::Uint(u64::from(tally.is_some())));
    fams.push(readable);
    if let Some(t) = tally {
        let mut head = Family::new(
            "op_agent_audit_head_seq",
            Kind::Gauge,
            "seq of the audit chain head (0: empty log).",
        );
        head.push(&[], Value::Int(t.head_seq.unwrap_or(0)));
        fams.push(head);
        let mut outcome = Family::new(
            "op_agent_last_hook_outcome",
            Kind::Gauge,
            "1 for the outcome (ok, failed, incomplete) of the container's last hookscript run, 0 for the others.",
        );
        let mut when = Family::new(
            "op_agent_last_hook_timestamp_seconds",
            Kind::Gauge,
            "Start of the container's last hookscript run, seconds since the Unix epoch.",
        );
        for (vmid, h) in &t.last_hook {
            let vmid = vmid.to_string();
            for o in RunOutcome::ALL {
                outcome.push(
                    &[
                        ("vmid", &vmid),
                        ("phase", &h.phase),
                        ("outcome", o.as_str()),
                    ],
                    Value::Uint(u64::from(h.outcome() == o)),
                );
            }
            when.push(
                &[("vmid", &vmid), ("phase", &h.phase)],
                Value::Float(h.started_ms as f64 / 1000.0),
            );
        }
        fams.push(outcome);
        fams.push(when);
        let mut rep = Family::new(
            "op_agent_watch_repairs_total",
            Kind::Counter,
            "Runs of the watch service that changed the container's links or OVS rows (audit run.intent rows of phase watch).",
        );
        let mut fail = Family::new(
            "op_agent_watch_repair_failures_total",
            Kind::Counter,
            "Runs of the watch service for the container that failed (audit phase watch runs with a failed row).",
        );
        // Every running managed container has the two series (0 until its first repair), so
        // that `increase()` over them starts from a known value.
        let none = audit::Repairs::default();
        let vmids: std::collections::BTreeSet<u32> = t
            .repairs
            .keys()
            .copied()
            .chain(cts.iter().map(|c| c.vmid))
            .collect();
        for v in vmids {
            let r = t.repairs.get(&v).unwrap_or(&none);
            let vmid = v.to_string();
            rep.push(&[("vmid", &vmid)], Value::Uint(r.started));
            fail.push(&[("vmid", &vmid)], Value::Uint(r.failed));
        }
        fams.push(rep);
        fams.push(fail);
    }
    let mut ts = Family::new(
        LAST_FAMILY,
        Kind::Gauge,
        "When op-agent made this text, seconds since the Unix epoch.",
    );
    ts.push(&[], Value::Float(now));
    fams.push(ts);
    text::render(&fams)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::NicCounters;
    use crate::netlink::LinkStats;

    #[test]
    fn every_family_follows_the_format_and_the_last_is_the_timestamp() {
        let cts = vec![ContainerCounters {
            vmid: 100,
            nics: vec![NicCounters {
                net: 0,
                port: "vi100".into(),
                stats: LinkStats {
                    rx_bytes: 1_048_576,
                    tx_bytes: 2,
                    rx_packets: 3,
                    tx_packets: 4,
                    rx_dropped: 5,
                    tx_dropped: 6,
                },
            }],
        }];
        let mut t = AuditTally::default();
        for (seq, phase, step, outcome) in [
            (1, "post-start", "run.intent", "intent"),
            (2, "post-start", "port.plug", "ok"),
            (3, "watch", "run.intent", "intent"),
        ] {
            t.fold(&audit::TallyRow {
                seq,
                ts: 1_700_000_000_000,
                vmid: 100,
                phase,
                run_id: phase,
                step,
                outcome,
            });
        }
        let out = render(&cts, Some(&t), 1_700_000_001.5);
        let s = text::parse(&out).unwrap();
        let get = |name: &str, labels: &[(&str, &str)]| {
            s.iter()
                .find(|x| x.name == name && labels.iter().all(|(k, v)| x.label(k) == Some(*v)))
                .map(|x| x.value)
        };
        let nic = [("vmid", "100"), ("net", "net0"), ("port", "vi100")];
        assert_eq!(
            get("op_agent_nic_receive_bytes_total", &nic),
            Some(1_048_576.0)
        );
        assert_eq!(get("op_agent_nic_transmit_bytes_total", &nic), Some(2.0));
        assert_eq!(get("op_agent_nic_receive_packets_total", &nic), Some(3.0));
        assert_eq!(get("op_agent_nic_transmit_packets_total", &nic), Some(4.0));
        assert_eq!(get("op_agent_nic_transmit_drop_total", &nic), Some(6.0));
        assert_eq!(get("op_agent_audit_head_seq", &[]), Some(3.0));
        let hook = [("vmid", "100"), ("phase", "post-start")];
        assert_eq!(
            get(
                "op_agent_last_hook_outcome",
                &[hook[0], hook[1], ("outcome", "ok")]
            ),
            Some(1.0)
        );
        assert_eq!(
            get(
                "op_agent_last_hook_outcome",
                &[hook[0], hook[1], ("outcome", "failed")]
            ),
            Some(0.0)
        );
        assert_eq!(
            get("op_agent_last_hook_timestamp_seconds", &hook),
            Some(1_700_000_000.0)
        );
        assert_eq!(
            get("op_agent_watch_repairs_total", &[("vmid", "100")]),
            Some(1.0)
        );
        assert_eq!(
            get("op_agent_watch_repair_failures_total", &[("vmid", "100")]),
            Some(0.0)
        );
        assert_eq!(s.last().map(|x| x.name.as_str()), Some(LAST_FAMILY));
        // Counters are named *_total; every family has HELP and TYPE (parse checks it).
        for l in out.lines().filter(|l| l.starts_with("# TYPE ")) {
            let w: Vec<&str> = l.split(' ').collect();
            assert_eq!(w[3] == "counter", w[2].ends_with("_total"), "{l}");
        }
        // A running container without watch rows has zeros.
        let out0 = render(
            &[ContainerCounters {
                vmid: 101,
                nics: Vec::new(),
            }],
            Some(&t),
            0.0,
        );
        let s0 = text::parse(&out0).unwrap();
        assert!(s0.iter().any(|x| x.name == "op_agent_watch_repairs_total"
            && x.label("vmid") == Some("101")
            && x.value == 0.0));
        // Without the audit log: readable 0 and no audit family.
        let out = render(&cts, None, 0.0);
        let s = text::parse(&out).unwrap();
        assert!(s
            .iter()
            .any(|x| x.name == "op_agent_audit_readable" && x.value == 0.0));
        assert!(!s.iter().any(|x| x.name.starts_with("op_agent_watch")));
    }
}
