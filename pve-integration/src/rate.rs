//! PVE's `rate=` network limit as numbers: pve-common `PVE::Network::tap_rate_limit` turns the
//! configured MB/s into bytes/s (`int($rate * 1024 * 1024)`) with a fixed burst of
//! `1024 * 1024` bytes, and `setup_tc_rate_limit` installs nothing when that rate is 0.

/// Burst of every limit, in bytes (`tap_rate_limit`: `my $burst = 1024 * 1024`).
pub const RATE_BURST_BYTES: u64 = 1024 * 1024;

/// A bandwidth limit as `PVE::Network::tap_rate_limit` applies it: both directions capped at
/// [`Rate::bytes_per_sec`] with a burst of [`RATE_BURST_BYTES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Rate {
    bytes_per_sec: u64,
}

impl Rate {
    /// The limit of a `rate=` value (MB/s, PVE's `MB` being 1024 × 1024 bytes):
    /// `int(rate * 1024 * 1024)` bytes/s. `None` when there is no limit — the value is not a
    /// finite non-negative number or the bytes/s are 0 (`setup_tc_rate_limit`'s
    /// `return if !$rate`).
    pub fn from_pve(mb_per_sec: &str) -> Option<Rate> {
        let r: f64 = mb_per_sec.trim().parse().ok()?;
        if !r.is_finite() || r < 0.0 {
            return None;
        }
        // Perl's int() truncates toward zero; `as` saturates at u64::MAX.
        let bytes_per_sec = (r * 1024.0 * 1024.0).trunc() as u64;
        (bytes_per_sec > 0).then_some(Rate { bytes_per_sec })
    }

    /// The limit in bytes per second (tc's `bps`).
    pub fn bytes_per_sec(self) -> u64 {
        self.bytes_per_sec
    }

    /// The limit in bits per second (OVS `QoS`/`Queue` `other_config:max-rate`).
    pub fn bits_per_sec(self) -> u64 {
        self.bytes_per_sec.saturating_mul(8)
    }

    /// The burst in bits (OVS `Queue` `other_config:burst`).
    pub fn burst_bits(self) -> u64 {
        RATE_BURST_BYTES * 8
    }

    /// The limit in kbit/s (1000 bit/s), at least 1 (OVS `Interface:ingress_policing_rate`).
    pub fn kbits_per_sec(self) -> u64 {
        (self.bits_per_sec() / 1000).max(1)
    }

    /// The burst in kbit (1000 bit) (OVS `Interface:ingress_policing_burst`).
    pub fn burst_kbits(self) -> u64 {
        self.burst_bits() / 1000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mb_per_sec_is_pve_mebibytes_truncated() {
        let r = Rate::from_pve("1").unwrap();
        assert_eq!(r.bytes_per_sec(), 1_048_576);
        assert_eq!(r.bits_per_sec(), 8_388_608);
        assert_eq!(r.kbits_per_sec(), 8_388);
        assert_eq!(r.burst_bits(), 8_388_608);
        assert_eq!(r.burst_kbits(), 8_388);
        // int(12.5 * 1048576) and int(0.3 * 1048576) = int(314572.8).
        assert_eq!(Rate::from_pve("12.5").unwrap().bytes_per_sec(), 13_107_200);
        assert_eq!(Rate::from_pve("0.3").unwrap().bytes_per_sec(), 314_572);
        assert_eq!(Rate::from_pve("0.000001").unwrap().kbits_per_sec(), 1);
    }

    #[test]
    fn zero_or_garbage_is_no_limit() {
        for v in ["0", "0.0", "0.0000001", "", "-1", "x", "inf", "NaN"] {
            assert_eq!(Rate::from_pve(v), None, "{v}");
        }
    }
}
