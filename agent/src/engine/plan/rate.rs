//! PVE's `rate=` on op-agent's Port: the OVS columns of the limit and whether a Port has it.

use super::PortPlan;
use crate::engine::observed::ObservedPort;

/// PVE's `rate=` limit in the columns of an OVS port: pve-common
/// `PVE::Network::setup_tc_rate_limit` shapes what the host sends into the container (htb
/// root, `rate`/`burst`) and polices what it sends out (ingress `police rate`/`burst`); OVS
/// does the same with a `linux-htb` QoS + Queue and `Interface.ingress_policing_*`.
pub fn port_rate(r: pve_integration::Rate) -> crate::ovsdb::PortRate {
    crate::ovsdb::PortRate {
        max_rate_bits: r.bits_per_sec(),
        burst_bits: r.burst_bits(),
        policing_kbits: r.kbits_per_sec(),
        policing_burst_kbits: r.burst_kbits(),
    }
}

/// Whether the port's QoS and ingress policing are those of `want.rate` (a `QoS` row exactly
/// when there is a rate; the policing rate, 0 without one).
pub fn rate_matches(have: &ObservedPort, want: &PortPlan) -> bool {
    let want_kbits = want
        .rate
        .map_or(0, |r| i64::try_from(r.policing_kbits).unwrap_or(i64::MAX));
    have.qos == want.rate.is_some() && have.policing_kbits.unwrap_or(0) == want_kbits
}
