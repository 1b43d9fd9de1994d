//! The payload's channel code: 64-bit release id + CRC-24, convolutional K=7 rate 1/3
//! (generators 133/171/165 octal, design.md section 3), terminated, soft Viterbi.
//!
//! The CRC is what lets a blind decode be reported as a payload: a wrong Viterbi path
//! passes it with probability 2^-24 (design.md section 5 step 7: between z 6.8 and 10 the
//! sync can be right and the payload wrong). Since issue 14 the decoder checks the
//! [`LIST`] best paths, so a wrong one passes with probability at most `LIST * 2^-24`.
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

/// The three output bits of every register value (the generators' parities), as a pattern
/// `o0 o1 o2` with `o0` the highest bit: [`encode`] sends them in that order, and they
/// index [`decode`]'s branch metrics.
const OUTPUTS: [u8; 1 << CONSTRAINT] = {
    let mut t = [0u8; 1 << CONSTRAINT];
    let mut reg = 0;
    while reg < t.len() {
        let mut o = 0;
        let mut g = 0;
        while g < GENERATORS.len() {
            o = (o << 1) | ((reg as u32 & GENERATORS[g]).count_ones() & 1) as u8;
            g += 1;
        }
        t[reg] = o;
        reg += 1;
    }
    t
};

/// Encodes a payload into [`CODED_BITS`] bits (0/1).
pub fn encode(payload: u64) -> Vec<u8> {
    let bits = info_bits(payload);
    let mut out = Vec::with_capacity(CODED_BITS);
    let mut state: u32 = 0;
    for &u in bits.iter().chain([0u8; MEMORY].iter()) {
        let reg = (u32::from(u) << MEMORY) | state;
        let o = OUTPUTS[reg as usize];
        out.extend([o >> 2, (o >> 1) & 1, o & 1]);
        state = reg >> 1;
    }
    out
}

/// Paths the payload's decoder checks against the CRC ([`decode`]). Measured with
/// `tracemark-bench hard` (seeds 1-3, 280 trials each), blind reads: 167 / 163 / 164 with
/// the best path alone, 173 / 170 with 8 paths (seeds 1-2), 174 / 171 / 172 with 16, the
/// same with 32; no read was lost. Each path checked is one more chance for a wrong path to
/// pass the CRC-24: at most `LIST * 2^-24` (1e-6) per reading.
pub const LIST: usize = 16;

/// Soft-decision list Viterbi decoding of [`CODED_BITS`] soft values, then the CRC check
/// on the [`LIST`] most likely paths, best first: the payload of the first that passes,
/// `None` when none does. The first path is the plain Viterbi decoder's, so the list only
/// adds readings: where the best path has a few errors, one of the next has often none.
/// The best path is decoded alone first (a tenth of the list's cost, and it passes for
/// every copy read well); the list runs only when it fails.
///
/// # Panics
/// When `soft.len() != CODED_BITS`.
pub fn decode(soft: &[f32]) -> Option<u64> {
    decode_list(soft, 1).or_else(|| decode_list(soft, LIST))
}

/// [`decode`] with `list` paths: the parallel list Viterbi algorithm keeps the `list`
/// best paths into every state (with `list = 1`, the plain Viterbi decoder), and the paths
/// into the terminal state are checked against the CRC, best first.
///
/// # Panics
/// When `soft.len() != CODED_BITS` or `list == 0`.
fn decode_list(soft: &[f32], list: usize) -> Option<u64> {
    assert_eq!(soft.len(), CODED_BITS, "soft input length");
    assert!(list > 0 && list < 1 << 15, "list size");
    let steps = INFO_BITS + MEMORY;
    // metric[state * list + rank], best first within a state.
    let mut metric = vec![f32::NEG_INFINITY; STATES * list];
    metric[0] = 0.0;
    let mut next = vec![f32::NEG_INFINITY; STATES * list];
    // back[(t * STATES + state) * list + rank]: the predecessor's rank times 2 plus the
    // bit that left the register (which names the predecessor state).
    let mut back = vec![0u16; steps * STATES * list];
    for t in 0..steps {
        let s = &soft[3 * t..3 * t + 3];
        // The branch metric of each of the 8 output patterns.
        let branch: [f32; 8] = std::array::from_fn(|o| {
            (0..3)
                .map(|j| if (o >> (2 - j)) & 1 == 0 { s[j] } else { -s[j] })
                .sum()
        });
        // Inputs are 0 in the terminating tail: only states with a 0 top bit are reached.
        let reachable = if t < INFO_BITS { STATES } else { STATES / 2 };
        next.fill(f32::NEG_INFINITY);
        for ns in 0..reachable {
            // The two predecessors `(ns << 1) | dropped`: the start of each one's list and
            // the branch metric into `ns`. Each list is sorted, and a branch adds the same
            // metric to a whole list, so merging the two keeps the best `list` in order.
            let reg = ((ns as u32) << 1) & ((1 << CONSTRAINT) - 1);
            let from = [0, 1].map(|d| {
                let state = ((ns << 1) & (STATES - 1)) | d;
                (
                    state * list,
                    branch[usize::from(OUTPUTS[(reg | d as u32) as usize])],
                )
            });
            let (mut i, mut j) = (0, 0);
            let out = ns * list;
            let back_t = (t * STATES + ns) * list;
            for r in 0..list {
                let m0 = if i < list {
                    metric[from[0].0 + i] + from[0].1
                } else {
                    f32::NEG_INFINITY
                };
                let m1 = if j < list {
                    metric[from[1].0 + j] + from[1].1
                } else {
                    f32::NEG_INFINITY
                };
                // Ties go to the lower predecessor, as in the plain Viterbi decoder.
                if m1 > m0 {
                    next[out + r] = m1;
                    back[back_t + r] = (j as u16) << 1 | 1;
                    j += 1;
                } else if m0 > f32::NEG_INFINITY {
                    next[out + r] = m0;
                    back[back_t + r] = (i as u16) << 1;
                    i += 1;
                } else {
                    break;
                }
            }
        }
        std::mem::swap(&mut metric, &mut next);
    }
    // Terminated code: the paths into state 0, best first.
    for rank in (0..list).take_while(|&r| metric[r] > f32::NEG_INFINITY) {
        let (mut state, mut r) = (0usize, rank);
        let mut bits = [0u8; INFO_BITS + MEMORY];
        for t in (0..steps).rev() {
            // state = reg >> 1 where reg = (u << MEMORY) | prev: u is the state's top bit.
            bits[t] = ((state >> (MEMORY - 1)) & 1) as u8;
            let b = back[(t * STATES + state) * list + r];
            state = ((state << 1) & (STATES - 1)) | usize::from(b & 1);
            r = usize::from(b >> 1);
        }
        let mut payload: u64 = 0;
        for &b in &bits[..64] {
            payload = (payload << 1) | u64::from(b);
        }
        let mut crc: u32 = 0;
        for &b in &bits[64..INFO_BITS] {
            crc = (crc << 1) | u32::from(b);
        }
        if crc == crc24(&payload.to_be_bytes()) {
            return Some(payload);
        }
    }
    None
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
    fn the_code_is_the_one_marks_were_stamped_with() {
        // The coded bits of a known payload, 4 to a hex digit (the last holds 2), as the
        // encoder before issue 14's list decoder made them: marks stamped since stay
        // readable.
        let hex: String = encode(0x0123_4567_89ab_cdef)
            .chunks(4)
            .map(|c| {
                let v = c.iter().enumerate().fold(0, |v, (i, &b)| v | b << (3 - i));
                char::from_digit(u32::from(v), 16).unwrap()
            })
            .collect();
        assert_eq!(
            hex,
            "0000077ca6707a2a7fa72bc84e4a01a0cbb6a647b97b460e63ffc4f52f7f39f6cc26700"
        );
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
        // A deterministic pseudo-random soft vector decodes to some paths; the CRC must
        // almost never accept one. 200 tries of LIST paths each, expected false accepts
        // 200 * LIST * 2^-24.
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

    /// Soft values of `p`'s codeword at amplitude `snr` plus unit-variance noise (a sum of
    /// 12 uniforms), from a deterministic generator.
    fn noisy(p: u64, snr: f32, x: &mut u64) -> Vec<f32> {
        let mut uniform = || {
            *x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (*x >> 40) as f32 / (1u64 << 24) as f32
        };
        bpsk(&encode(p))
            .iter()
            .map(|&s| snr * s + (0..12).map(|_| uniform()).sum::<f32>() - 6.0)
            .collect()
    }

    #[test]
    fn the_list_decoder_reads_what_the_best_path_misses_and_nothing_else() {
        // Raw bit error rate about 21 %, where the best path alone fails about half the time.
        let mut x: u64 = 99;
        let (mut best, mut listed) = (0, 0);
        for i in 0..300u64 {
            let p = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let s = noisy(p, 0.8, &mut x);
            let plain = decode_list(&s, 1);
            let list = decode(&s);
            // Whatever passes the CRC is the payload sent (a wrong path would pass with
            // probability 2^-24 per path checked).
            assert!(plain.is_none_or(|q| q == p) && list.is_none_or(|q| q == p));
            // The best path is the list's first: the list never loses a reading.
            assert!(plain.is_none() || list.is_some());
            best += usize::from(plain.is_some());
            listed += usize::from(list.is_some());
        }
        assert!(
            listed >= best + 30,
            "best path {best} / 300, list of {LIST} {listed} / 300"
        );
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
