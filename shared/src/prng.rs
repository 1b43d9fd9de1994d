//! Keyed pseudo-random objects.
//!
//! Every random object of the scheme comes from `ChaCha20(HMAC-SHA256(master, context))`,
//! with a distinct context string per object (design.md section 2), so that knowing one
//! object says nothing about another and nothing at all without the key.

use hmac::{Hmac, KeyInit, Mac};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use sha2::Sha256;

use crate::key::SecretKey;

/// Context strings, one per keyed object. Changing one changes every mark.
pub mod context {
    /// Synchronisation chips.
    pub const SYNC: &[u8] = b"tracemark/v1/sync";
    /// Payload carrier chips.
    pub const CARRIER: &[u8] = b"tracemark/v1/carrier";
    /// Chip to coded-bit assignment.
    pub const BIT_PERMUTATION: &[u8] = b"tracemark/v1/bit-permutation";
    /// Per-release fingerprint chips (followed by the 8-byte release id).
    pub const FINGERPRINT: &[u8] = b"tracemark/v1/fingerprint";
    /// Tile variant scrambles (followed by the 4-byte variant), and a release's first
    /// variant (followed by "start" and the release id).
    pub const VARIANT: &[u8] = b"tracemark/v1/variant";
}

/// HMAC-SHA256 of `parts` under the master key.
pub fn derive(key: &SecretKey, parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key.bytes())
        .expect("HMAC takes keys of any length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// A ChaCha20 stream keyed by the master key and a context.
pub fn stream(key: &SecretKey, parts: &[&[u8]]) -> ChaCha20Rng {
    ChaCha20Rng::from_seed(derive(key, parts))
}

/// `n` chips of +-1, 64 per draw.
pub fn chips(rng: &mut ChaCha20Rng, n: usize) -> Vec<i8> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let mut w = rng.next_u64();
        for _ in 0..64.min(n - out.len()) {
            out.push(if w & 1 == 1 { 1 } else { -1 });
            w >>= 1;
        }
    }
    out
}

/// A uniform integer in `0..bound` (Lemire's multiply-shift, bias below 2^-32 for our sizes).
pub fn below(rng: &mut ChaCha20Rng, bound: u32) -> u32 {
    ((u64::from(rng.next_u32()) * u64::from(bound)) >> 32) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_deterministic_and_context_separated() {
        let k = SecretKey::from_bytes([7; 32]);
        let a = chips(&mut stream(&k, &[context::SYNC]), 256);
        let b = chips(&mut stream(&k, &[context::SYNC]), 256);
        let c = chips(&mut stream(&k, &[context::CARRIER]), 256);
        let other = chips(
            &mut stream(&SecretKey::from_bytes([8; 32]), &[context::SYNC]),
            256,
        );
        assert_eq!(a, b);
        let agree = |x: &[i8], y: &[i8]| x.iter().zip(y).filter(|(p, q)| p == q).count();
        // Independent +-1 sequences agree on about half of 256 places; 200 would be 7 sd.
        assert!(agree(&a, &c) < 200 && agree(&a, &c) > 56);
        assert!(agree(&a, &other) < 200 && agree(&a, &other) > 56);
        assert!(a.iter().all(|&v| v == 1 || v == -1));
    }
}
