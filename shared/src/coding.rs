//! The payload's channel code: 64-bit release id + CRC-24, convolutional K=7 rate 1/3
//! (generators 133/171/165 octal, design.md section 3), terminated, soft Viterbi.
//!
//! The CRC is what lets a blind decode be reported as a payload: a wrong Viterbi path
//! passes it with probability 2^-24 (design.md section 5 step 7: between z 6.8 and 10 the
//! sync can be right and the payload wrong).
//!
//! Soft values use the convention "positive means coded bit 0" (BPSK symbol 1 - 2b).

/// Information bits: the 64-bit payload followed by its CRC-24.
pub const INFO_BITS: usize = 64 + 24;
const CONSTRAINT: usize = 7;
const MEMORY: usize = CONSTRAINT - 1;
const STATES: usize = 1 << MEMORY;
const GENERATORS: [u32; 3] = [0o133, 0o171, 0o165];
/// Coded bits carried by the mark: (88 + 6 tail) * 3.
pub const CODED_BITS: usize = (INFO_BITS + MEMORY) * GENERATORS.len();

/// CRC-24/OpenPGP (RFC 4880) of `data`.
pub fn crc24(data: &[u8]) -> u32 {
    let mut crc: u32 = 0x00B7_04CE;
    for &b in data {
        crc ^= u32::from(b) << 16;
        for _ in 0..8 {
            crc <<= 1;
            if crc & 0x0100_0000 != 0 {
                crc ^= 0x0186_4CFB;
            }
        }
    }
    crc & 0x00FF_FFFF
}

fn info_bits(payload: u64) -> [u8; INFO_BITS] {
    let crc = crc24(&payload.to_be_bytes());
    let mut bits = [0u8; INFO_BITS];
    for (i, b) in bits.iter_mut().enumerate().take(64) {
        *b = ((payload >> (63 - i)) & 1) as u8;
    }
    for i in 0..24 {
        bits[64 + i] = ((crc >> (23 - i)) & 1) as u8;
    }
    bits
}

fn outputs(register: u32) -> [u8; 3] {
    GENERATORS.map(|g| ((register & g).count_ones() & 1) as u8)
}

/// Encodes a payload into [`CODED_BITS`] bits (0/1).
pub fn encode(payload: u64) -> Vec<u8> {
    let bits = info_bits(payload);
    let mut out = Vec::with_capacity(CODED_BITS);
    let mut state: u32 = 0;
    for &u in bits.iter().chain([0u8; MEMORY].iter()) {
        let reg = (u32::from(u) << MEMORY) | state;
        out.extend_from_slice(&outputs(reg));
        state = reg >> 1;
    }
    out
}

/// Soft-decision Viterbi decoding of [`CODED_BITS`] soft values, then the CRC check.
///
/// Returns the payload when the most likely path passes the CRC, `None` otherwise.
///
/// # Panics
/// When `soft.len() != CODED_BITS`.
pub fn decode(soft: &[f32]) -> Option<u64> {
    assert_eq!(soft.len(), CODED_BITS, "soft input length");
    let steps = INFO_BITS + MEMORY;
    // Branch symbols for every (state, input) pair, computed once.
    let mut metric = [f32::NEG_INFINITY; STATES];
    metric[0] = 0.0;
    let mut back = vec![[0u8; STATES]; steps];
    for (t, back_t) in back.iter_mut().enumerate() {
        let s = &soft[3 * t..3 * t + 3];
        let mut next = [f32::NEG_INFINITY; STATES];
        let max_input = if t < INFO_BITS { 1 } else { 0 };
        for (state, &m) in metric.iter().enumerate() {
            if m == f32::NEG_INFINITY {
                continue;
            }
            for u in 0..=max_input {
                let reg = (u << MEMORY) | state as u32;
                let o = outputs(reg);
                let branch: f32 = (0..3).map(|j| if o[j] == 0 { s[j] } else { -s[j] }).sum();
                let ns = (reg >> 1) as usize;
                let cand = m + branch;
                if cand > next[ns] {
                    next[ns] = cand;
                    // Remember the bit that left the register: it identifies the predecessor.
                    back_t[ns] = (state & 1) as u8;
                }
            }
        }
        metric = next;
    }
    // Terminated code: trace back from state 0.
    let mut state: usize = 0;
    let mut bits = [0u8; INFO_BITS + MEMORY];
    for t in (0..steps).rev() {
        // state = reg >> 1 where reg = (u << MEMORY) | prev; so u is the top bit of state.
        bits[t] = ((state >> (MEMORY - 1)) & 1) as u8;
        let dropped = back[t][state] as usize;
        state = ((state << 1) & (STATES - 1)) | dropped;
    }
    let mut payload: u64 = 0;
    for &b in &bits[..64] {
        payload = (payload << 1) | u64::from(b);
    }
    let mut crc: u32 = 0;
    for &b in &bits[64..INFO_BITS] {
        crc = (crc << 1) | u32::from(b);
    }
    (crc == crc24(&payload.to_be_bytes())).then_some(payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bpsk(bits: &[u8]) -> Vec<f32> {
        bits.iter().map(|&b| 1.0 - 2.0 * f32::from(b)).collect()
    }

    #[test]
    fn crc24_check_value() {
        // CRC-24/OPENPGP check value for "123456789".
        assert_eq!(crc24(b"123456789"), 0x21CF02);
    }

    #[test]
    fn coded_length() {
        assert_eq!(encode(0x0123_4567_89ab_cdef).len(), CODED_BITS);
        assert_eq!(CODED_BITS, 282);
    }

    #[test]
    fn viterbi_corrects_scattered_and_burst_errors() {
        let p = 0xdead_beef_0bad_f00d;
        let mut s = bpsk(&encode(p));
        // Flip a 3-symbol burst and several isolated symbols far apart.
        for i in [40, 41, 42, 120, 200, 260] {
            s[i] = -s[i];
        }
        assert_eq!(decode(&s), Some(p));
    }

    #[test]
    fn crc_rejects_garbage() {
        // A deterministic pseudo-random soft vector decodes to some path; the CRC must
        // almost never accept it. 200 tries, expected false accepts 200 * 2^-24.
        let mut x: u64 = 12345;
        let mut accepted = 0;
        for _ in 0..200 {
            let s: Vec<f32> = (0..CODED_BITS)
                .map(|_| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((x >> 33) as f32 / (1u64 << 31) as f32) - 1.0
                })
                .collect();
            accepted += usize::from(decode(&s).is_some());
        }
        assert_eq!(accepted, 0);
    }

    proptest! {
        #[test]
        fn encode_decode_identity(p in any::<u64>(), scale in 0.1f32..10.0) {
            let s: Vec<f32> = bpsk(&encode(p)).iter().map(|v| v * scale).collect();
            prop_assert_eq!(decode(&s), Some(p));
        }

        #[test]
        fn corrects_up_to_five_isolated_errors(p in any::<u64>(), pos in proptest::collection::btree_set(0usize..47, 0..=5)) {
            let mut s = bpsk(&encode(p));
            // Errors at least 6 symbols apart (one per 6-symbol slot): within the code's
            // free distance per constraint span.
            for k in pos { s[k * 6] = -s[k * 6] * 0.5; }
            prop_assert_eq!(decode(&s), Some(p));
        }
    }
}
