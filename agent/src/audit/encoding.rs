//! The byte encoding that is hashed and MAC'd (version 1). Specified in `README-encoding.md`
//! beside this file; every constant and function here is named there.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// Domain tag of a row hash, followed by one NUL byte in the hashed string.
pub const ROW_TAG: &[u8] = b"op-agent-audit/v1/row";
/// Domain tag of a checkpoint MAC, followed by one NUL byte in the MAC'd string.
pub const CHECKPOINT_TAG: &[u8] = b"op-agent-audit/v1/checkpoint";
/// Domain tag of the key ratchet, followed by one NUL byte in the hashed string.
pub const RATCHET_TAG: &[u8] = b"op-agent-audit/v1/key-ratchet";
/// `prev_hash` of the row with `seq` 1: 32 zero bytes.
pub const GENESIS: [u8; 32] = [0u8; 32];
/// `step` of a keyed checkpoint row.
pub const CHECKPOINT_STEP: &str = "audit.checkpoint";
/// `phase` of a keyed checkpoint row.
pub const CHECKPOINT_PHASE: &str = "checkpoint";

/// The hashed columns of one row, borrowed. `ts_ms` is UTC milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy)]
pub struct RowFields<'a> {
    /// Position in the chain, 1-based, without gaps.
    pub seq: i64,
    /// UTC time of the append, milliseconds since 1970-01-01T00:00:00Z.
    pub ts_ms: i64,
    /// Host name recorded by the writer.
    pub host: &'a str,
    /// Guest id (0 for rows that belong to no guest, e.g. checkpoints).
    pub vmid: u32,
    /// Hook phase (free text for the audit module).
    pub phase: &'a str,
    /// Id of the hook run.
    pub run_id: &'a str,
    /// Step name, e.g. `ovs.add-port`.
    pub step: &'a str,
    /// `intent`, `ok`, `failed` or `skipped`.
    pub outcome: &'a str,
    /// JSON text, hashed as its stored UTF-8 bytes.
    pub detail: &'a str,
    /// Hash of the row before (or [`GENESIS`]).
    pub prev_hash: &'a [u8; 32],
}

fn put_str(h: &mut Sha256, s: &str) {
    // Lengths are u32 big-endian; a field over 4 GiB cannot be stored by SQLite anyway
    // (SQLITE_MAX_LENGTH defaults to 1e9 bytes), so the cast never truncates.
    h.update((s.len() as u32).to_be_bytes());
    h.update(s.as_bytes());
}

/// Row hash, encoding v1: `SHA-256(ROW_TAG ‖ 0x00 ‖ seq:u64be ‖ ts_ms:i64be ‖ lp(host) ‖
/// vmid:u32be ‖ lp(phase) ‖ lp(run_id) ‖ lp(step) ‖ lp(outcome) ‖ lp(detail) ‖ prev_hash[32])`
/// with `lp(x) = len(x):u32be ‖ x` (UTF-8 bytes). Returns 32 bytes.
pub fn row_hash(r: &RowFields<'_>) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(ROW_TAG);
    h.update([0u8]);
    h.update((r.seq as u64).to_be_bytes());
    h.update(r.ts_ms.to_be_bytes());
    put_str(&mut h, r.host);
    h.update(r.vmid.to_be_bytes());
    put_str(&mut h, r.phase);
    put_str(&mut h, r.run_id);
    put_str(&mut h, r.step);
    put_str(&mut h, r.outcome);
    put_str(&mut h, r.detail);
    h.update(r.prev_hash);
    h.finalize().into()
}

/// Key ratchet: `K(e+1) = SHA-256(RATCHET_TAG ‖ 0x00 ‖ K(e))` (32 bytes in, 32 bytes out).
pub fn ratchet(key: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(RATCHET_TAG);
    h.update([0u8]);
    h.update(key);
    h.finalize().into()
}

/// Key of `epoch`, derived from the initial key (epoch 0) by `epoch` ratchet steps.
pub fn key_for_epoch(initial: &[u8; 32], epoch: u64) -> [u8; 32] {
    let mut k = *initial;
    for _ in 0..epoch {
        k = ratchet(&k);
    }
    k
}

/// Checkpoint MAC: `HMAC-SHA256(K(epoch), CHECKPOINT_TAG ‖ 0x00 ‖ epoch:u64be ‖
/// head_seq:u64be ‖ head_hash[32])`, where the head is the row just before the checkpoint row
/// (`head_seq = 0`, `head_hash = GENESIS` on an empty log).
pub fn checkpoint_mac(key: &[u8; 32], epoch: u64, head_seq: i64, head_hash: &[u8; 32]) -> [u8; 32] {
    // HMAC accepts keys of any length, so new_from_slice cannot fail for 32 bytes.
    let mut m = match <Hmac<Sha256> as KeyInit>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    m.update(CHECKPOINT_TAG);
    m.update(&[0u8]);
    m.update(&epoch.to_be_bytes());
    m.update(&(head_seq as u64).to_be_bytes());
    m.update(head_hash);
    m.finalize().into_bytes().into()
}

/// The `detail` JSON text of a checkpoint row, in its one canonical form:
/// `{"epoch":E,"head_seq":S,"mac":"<64 lowercase hex>"}` (no spaces).
pub fn checkpoint_detail(epoch: u64, head_seq: i64, mac: &[u8; 32]) -> String {
    format!(
        r#"{{"epoch":{epoch},"head_seq":{head_seq},"mac":"{}"}}"#,
        hex(mac)
    )
}

/// Parsed `detail` of a checkpoint row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointDetail {
    /// Key epoch the MAC was made with.
    pub epoch: u64,
    /// `seq` of the row the checkpoint seals (the row before it).
    pub head_seq: i64,
    /// HMAC-SHA256, 32 bytes.
    pub mac: [u8; 32],
}

/// Parses a checkpoint `detail`; `None` unless it is exactly the canonical form of
/// [`checkpoint_detail`] (so a checkpoint has one byte representation only).
pub fn parse_checkpoint_detail(s: &str) -> Option<CheckpointDetail> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct D {
        epoch: u64,
        head_seq: i64,
        mac: String,
    }
    let d: D = serde_json::from_str(s).ok()?;
    let mac = unhex32(&d.mac)?;
    if checkpoint_detail(d.epoch, d.head_seq, &mac) != s {
        return None;
    }
    Some(CheckpointDetail {
        epoch: d.epoch,
        head_seq: d.head_seq,
        mac,
    })
}

/// Lowercase hex of any bytes.
pub fn hex(b: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push(D[(x >> 4) as usize] as char);
        s.push(D[(x & 15) as usize] as char);
    }
    s
}

/// Parses exactly 64 hex digits (either case) into 32 bytes; `None` otherwise.
pub fn unhex32(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        let hi = (b[2 * i] as char).to_digit(16)?;
        let lo = (b[2 * i + 1] as char).to_digit(16)?;
        *o = (hi * 16 + lo) as u8;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_hash_is_length_prefixed() {
        let p = GENESIS;
        let a = RowFields {
            seq: 1,
            ts_ms: 0,
            host: "h",
            vmid: 100,
            phase: "ab",
            run_id: "r",
            step: "s",
            outcome: "ok",
            detail: "{}",
            prev_hash: &p,
        };
        let b = RowFields {
            phase: "a",
            run_id: "br",
            ..a
        };
        assert_ne!(row_hash(&a), row_hash(&b));
        assert_eq!(row_hash(&a), row_hash(&a.clone()));
    }

    #[test]
    fn checkpoint_detail_roundtrip_and_canonical() {
        let mac = [7u8; 32];
        let s = checkpoint_detail(3, 41, &mac);
        let d = parse_checkpoint_detail(&s).unwrap();
        assert_eq!(
            d,
            CheckpointDetail {
                epoch: 3,
                head_seq: 41,
                mac
            }
        );
        assert!(parse_checkpoint_detail(&s.replace(':', ": ")).is_none());
    }

    #[test]
    fn hex_roundtrip() {
        let k = [0xa5u8; 32];
        assert_eq!(unhex32(&hex(&k)), Some(k));
        assert_eq!(unhex32("zz"), None);
    }

    #[test]
    fn ratchet_is_one_way_step() {
        let k0 = [1u8; 32];
        assert_eq!(key_for_epoch(&k0, 2), ratchet(&ratchet(&k0)));
        assert_ne!(ratchet(&k0), k0);
    }
}
