//! How a plan step prints: one line per step, as `--dry-run` shows it and the `run.intent`
//! audit row records it ([`super::plan_lines`]).

use super::Step;
use crate::engine::ownership::DelGuard;
use std::fmt;

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::DelPort { port, guard } => write!(
                f,
                "ovs.del-port {port}{}",
                if *guard == DelGuard::Owned {
                    " (owned only)"
                } else {
                    ""
                }
            ),
            Step::DelLink { link, why } => write!(f, "{} {link}", why.describe().0),
            Step::LinkDown { link } => write!(f, "link.down {link}"),
            Step::ClearQdiscs { link } => write!(f, "link.clear-qdiscs {link}"),
            Step::LinkRename { from, to, up } => {
                write!(
                    f,
                    "link.rename {from} -> {to}{}",
                    if *up { " (up)" } else { "" }
                )
            }
            Step::LinkUp { link } => write!(f, "link.up {link}"),
            Step::AltName { link, altname } => write!(f, "link.altname {link} {altname}"),
            Step::DelAltName { link, altname } => {
                write!(f, "link.del-altname {link} {altname}")
            }
            Step::AddPort(p) | Step::ReplacePort(p) | Step::AdoptPort(p) => {
                let verb = match self {
                    Step::AddPort(_) => "add-port",
                    Step::ReplacePort(_) => "replace-port",
                    _ => "adopt-port",
                };
                write!(f, "ovs.{verb} {} {}", p.bridge, p.name)?;
                if let Some(t) = p.tag {
                    write!(f, " tag={t}")?;
                }
                if !p.trunks.is_empty() {
                    let t: Vec<String> = p.trunks.iter().map(u16::to_string).collect();
                    write!(f, " trunks={}", t.join(","))?;
                }
                if let Some(m) = &p.vlan_mode {
                    write!(f, " vlan_mode={m}")?;
                }
                if let Some(m) = p.mtu_request {
                    write!(f, " mtu_request={m}")?;
                }
                if let Some(r) = &p.rate {
                    write!(
                        f,
                        " qos=linux-htb:max-rate={} ingress_policing_rate={}",
                        r.max_rate_bits, r.policing_kbits
                    )?;
                }
                for (k, v) in &p.external_ids {
                    write!(f, " external_ids:{k}={v}")?;
                }
                Ok(())
            }
            Step::CheckMaster { link, bridge } => write!(f, "link.check-master {link} in {bridge}"),
            Step::DelStaleQos => write!(f, "ovs.del-stale-qos"),
            Step::ConfirmMesh => write!(f, "mesh.confirm"),
            Step::RecordMesh { link } => write!(f, "mesh.via {link}"),
            Step::Skip { reason } => write!(f, "nic.skip ({reason})"),
        }
    }
}
