//! The keyed tile (design.md section 3): 64 x 64 chips of 2 x 2 px, T = 128 px,
//! `0.5 SYNC + sqrt(0.5) CARRIER * codeword[bit_of_chip] + 0.5 FP[id]` (powers 25/50/25),
//! shaped by a cyclic Gaussian (sigma 0.6 px) and normalised to unit RMS.

use crate::coding::{self, CODED_BITS};
use crate::key::SecretKey;
use crate::mark::dsp::{cyclic_blur, shaping_kernel};
use crate::prng::{self, context};

/// Tile side in pixels.
pub const TILE: usize = 128;
/// Chip side in pixels.
pub const CHIP: usize = 2;
/// Chips per tile side.
pub const CHIPS_PER_SIDE: usize = TILE / CHIP;
/// Chips per tile.
pub const N_CHIPS: usize = CHIPS_PER_SIDE * CHIPS_PER_SIDE;

/// Tile variants: the files of one release are stamped with different variants (the whole
/// chip pattern multiplied by a keyed +-1 scramble), so that averaging the files of a
/// release estimates no common pattern (issue 10, finding 2). Variant 0 is the unscrambled
/// tile. The detector tries every variant.
pub const VARIANTS: usize = 16;

/// Amplitudes of the three components (their squares are the power split 25/50/25).
pub const SYNC_AMPLITUDE: f32 = 0.5;
/// See [`SYNC_AMPLITUDE`].
pub const CARRIER_AMPLITUDE: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// See [`SYNC_AMPLITUDE`].
pub const FINGERPRINT_AMPLITUDE: f32 = 0.5;

/// Everything derived from the key alone: sync and carrier chips and the chip-to-bit map.
#[derive(Clone)]
pub struct KeyPatterns {
    key: SecretKey,
    /// Sync chips (+-1), row-major 64 x 64.
    pub sync: Vec<i8>,
    /// Carrier chips (+-1).
    pub carrier: Vec<i8>,
    /// The coded bit each chip carries.
    pub bit_of_chip: Vec<u16>,
    /// The keyed +-1 scramble of each variant (variant 0: all +1).
    pub scramble: Vec<Vec<i8>>,
    /// The shaped sync component of each variant alone at pixel resolution (128 x 128,
    /// unit RMS): the detector's correlation templates.
    pub sync_tiles: Vec<Vec<f32>>,
}

impl std::fmt::Debug for KeyPatterns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyPatterns(key id {})", self.key.key_id())
    }
}

impl KeyPatterns {
    /// Derives the key's patterns (about 1 ms).
    pub fn new(key: &SecretKey) -> Self {
        let sync = prng::chips(&mut prng::stream(key, &[context::SYNC]), N_CHIPS);
        let carrier = prng::chips(&mut prng::stream(key, &[context::CARRIER]), N_CHIPS);
        // A keyed Fisher-Yates permutation of the chips, dealt round-robin to the coded bits:
        // every bit gets 14 or 15 chips scattered over the tile.
        let mut rng = prng::stream(key, &[context::BIT_PERMUTATION]);
        let mut perm: Vec<u16> = (0..N_CHIPS as u16).collect();
        for i in (1..N_CHIPS).rev() {
            let j = prng::below(&mut rng, i as u32 + 1) as usize;
            perm.swap(i, j);
        }
        let bit_of_chip = perm.iter().map(|&p| p % CODED_BITS as u16).collect();
        let scramble: Vec<Vec<i8>> = (0..VARIANTS)
            .map(|v| {
                if v == 0 {
                    vec![1; N_CHIPS]
                } else {
                    prng::chips(
                        &mut prng::stream(key, &[context::VARIANT, &(v as u32).to_be_bytes()]),
                        N_CHIPS,
                    )
                }
            })
            .collect();
        let sync_tiles = scramble
            .iter()
            .map(|s| {
                let chips: Vec<f32> = sync
                    .iter()
                    .zip(s)
                    .map(|(&c, &k)| f32::from(c * k))
                    .collect();
                shape(&chips)
            })
            .collect();
        KeyPatterns {
            key: key.clone(),
            sync,
            carrier,
            bit_of_chip,
            scramble,
            sync_tiles,
        }
    }

    /// The key these patterns derive from (for further keyed derivations in this crate).
    pub(crate) fn key(&self) -> &SecretKey {
        &self.key
    }

    /// The per-release fingerprint chips `FP[id]` (+-1), keyed by the key and the release id.
    pub fn fingerprint(&self, id: u64) -> Vec<i8> {
        prng::chips(
            &mut prng::stream(&self.key, &[context::FINGERPRINT, &id.to_be_bytes()]),
            N_CHIPS,
        )
    }

    /// Soft values of the coded bits from unscrambled chip correlations (positive = bit 0):
    /// each bit's chips times the carrier, summed, after removing the sync component (it
    /// is known, and would otherwise bias every bit). What the payload's decoder reads, and
    /// what the informed check's codeword preselection ranks releases by.
    ///
    /// # Panics
    /// When `chips.len()` is not the chip count.
    pub fn soft_bits(&self, chips: &[f32]) -> Vec<f32> {
        assert_eq!(chips.len(), N_CHIPS, "chip count");
        let proj: f32 = chips
            .iter()
            .zip(&self.sync)
            .map(|(c, &s)| c * f32::from(s))
            .sum::<f32>()
            / N_CHIPS as f32;
        let mut soft = vec![0f32; CODED_BITS];
        for k in 0..N_CHIPS {
            let c = chips[k] - proj * f32::from(self.sync[k]);
            soft[self.bit_of_chip[k] as usize] += c * f32::from(self.carrier[k]);
        }
        soft
    }

    /// Chip amplitudes of the full mark for `payload` (before shaping), unscrambled
    /// (variant 0).
    pub fn chip_values(&self, payload: u64) -> Vec<f32> {
        let code = coding::encode(payload);
        let fp = self.fingerprint(payload);
        (0..N_CHIPS)
            .map(|c| {
                let symbol = 1.0 - 2.0 * f32::from(code[self.bit_of_chip[c] as usize]);
                SYNC_AMPLITUDE * f32::from(self.sync[c])
                    + CARRIER_AMPLITUDE * f32::from(self.carrier[c]) * symbol
                    + FINGERPRINT_AMPLITUDE * f32::from(fp[c])
            })
            .collect()
    }

    /// The shaped tile for `payload` in `variant`: 128 x 128 px, unit RMS.
    ///
    /// # Panics
    /// When `variant >= VARIANTS`.
    pub fn tile(&self, payload: u64, variant: usize) -> Vec<f32> {
        let s = &self.scramble[variant];
        let chips: Vec<f32> = self
            .chip_values(payload)
            .iter()
            .zip(s)
            .map(|(&c, &k)| c * f32::from(k))
            .collect();
        shape(&chips)
    }

    /// The variant of a release's `index`-th file: consecutive files get consecutive
    /// variants from a keyed start, so up to [`VARIANTS`] files of one release all differ.
    pub fn variant_of(&self, release: u64, index: usize) -> usize {
        let start = prng::derive(
            &self.key,
            &[context::VARIANT, b"start", &release.to_be_bytes()],
        );
        (usize::from(start[0]) + index) % VARIANTS
    }
}

/// Expands 64 x 64 chip values to 128 x 128 px, applies the cyclic shaping blur and scales
/// to unit RMS.
pub fn shape(chips: &[f32]) -> Vec<f32> {
    assert_eq!(chips.len(), N_CHIPS);
    let mut t = vec![0f32; TILE * TILE];
    for y in 0..TILE {
        for x in 0..TILE {
            t[y * TILE + x] = chips[(y / CHIP) * CHIPS_PER_SIDE + x / CHIP];
        }
    }
    cyclic_blur(&mut t, TILE, &shaping_kernel());
    let rms = (t.iter().map(|v| v * v).sum::<f32>() / t.len() as f32).sqrt();
    t.iter_mut().for_each(|v| *v /= rms);
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_coded_bit_gets_14_or_15_chips() {
        let p = KeyPatterns::new(&SecretKey::from_bytes([1; 32]));
        let mut count = vec![0; CODED_BITS];
        for &b in &p.bit_of_chip {
            count[b as usize] += 1;
        }
        assert!(count.iter().all(|&c| c == 14 || c == 15), "{count:?}");
    }

    #[test]
    fn tile_is_unit_rms_and_depends_on_payload() {
        let p = KeyPatterns::new(&SecretKey::from_bytes([2; 32]));
        let a = p.tile(0x0123_4567_89ab_cdef, 0);
        let b = p.tile(0xf0e1_d2c3_b4a5_9687, 0);
        let rms = (a.iter().map(|v| v * v).sum::<f32>() / a.len() as f32).sqrt();
        assert!((rms - 1.0).abs() < 1e-4);
        let dot: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum::<f32>() / a.len() as f32;
        // Same sync (25 %), unrelated payload codeword and fingerprint: near 0.25.
        assert!(dot > 0.1 && dot < 0.45, "{dot}");
        // Two variants of one payload share nothing: near 0.
        let c = p.tile(0x0123_4567_89ab_cdef, 5);
        let dot: f32 = a.iter().zip(&c).map(|(x, y)| x * y).sum::<f32>() / a.len() as f32;
        assert!(dot.abs() < 0.05, "{dot}");
    }

    #[test]
    fn the_files_of_a_release_get_distinct_variants() {
        let p = KeyPatterns::new(&SecretKey::from_bytes([3; 32]));
        let v: Vec<usize> = (0..VARIANTS).map(|i| p.variant_of(77, i)).collect();
        let mut sorted = v.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), VARIANTS, "{v:?}");
    }
}
