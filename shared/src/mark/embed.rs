//! Embedding: `q = round(g * M * tile)` added to display luminance (design.md section 3).
//!
//! The perceptual mask M is computed per 16 x 16 block (activity quantised to 8-bit log
//! levels, bilinearly upsampled in integer arithmetic) and the whole product is fixed-point,
//! so `q` can be recomputed exactly from the key, the payload, the gain and the small block
//! map: the basis of a later exact restore. The gain g is solved so that the PSNR after
//! rounding and clipping meets the target.

use crate::error::{Error, Result};
use crate::mark::pattern::{KeyPatterns, TILE};
use crate::raster::Plane;

/// Mask block side in pixels.
pub const BLOCK: usize = 16;
/// Smallest image side that carries a mark: one full tile.
pub const MIN_SIDE: usize = TILE;

const TILE_FRAC_BITS: u32 = 10;
const MASK_FRAC_BITS: u32 = 8;
const GAIN_FRAC_BITS: u32 = 16;
const PRODUCT_SHIFT: u32 = TILE_FRAC_BITS + MASK_FRAC_BITS + GAIN_FRAC_BITS;

/// Embedding settings.
#[derive(Clone, Debug, PartialEq)]
pub struct EmbedOptions {
    /// Target PSNR of the luminance in dB (8-bit display units, after rounding and
    /// clipping). 42 is the robust default, 45 the "invisible" setting.
    pub psnr_db: f64,
    /// Mask exponent: 0 = flat (most robust), 0.7 = hides the mark best in texture.
    pub mask_gamma: f32,
}

impl Default for EmbedOptions {
    fn default() -> Self {
        EmbedOptions {
            psnr_db: 42.0,
            mask_gamma: DEFAULT_MASK_GAMMA,
        }
    }
}

/// Default mask exponent (see the README's robustness/visibility measurements).
pub const DEFAULT_MASK_GAMMA: f32 = 0.5;

impl EmbedOptions {
    /// Default options.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets the target PSNR.
    pub fn with_psnr_db(mut self, psnr_db: f64) -> Self {
        self.psnr_db = psnr_db;
        self
    }
    /// Sets the mask exponent.
    pub fn with_mask_gamma(mut self, gamma: f32) -> Self {
        self.mask_gamma = gamma;
        self
    }
    /// Checks the options' ranges (also done by [`embed`]).
    ///
    /// # Errors
    /// [`Error::OutOfRange`] naming the setting out of range.
    pub fn validate(&self) -> Result<()> {
        if !(20.0..=70.0).contains(&self.psnr_db) {
            return Err(Error::OutOfRange {
                what: "PSNR target",
                value: format!("{} dB", self.psnr_db),
                expected: "20 to 70 dB",
            });
        }
        if !(0.0..=1.5).contains(&self.mask_gamma) {
            return Err(Error::OutOfRange {
                what: "mask exponent",
                value: self.mask_gamma.to_string(),
                expected: "0 to 1.5",
            });
        }
        Ok(())
    }
}

/// The result of embedding into one luminance plane.
#[derive(Clone, Debug)]
pub struct Embedding {
    /// Luminance change per pixel, in 8-bit display levels (before clipping to the range).
    pub delta: Vec<i16>,
    /// The solved gain.
    pub gain: f64,
    /// Mask block levels (the side data for an exact restore), `blocks_x * blocks_y`.
    pub block_levels: Vec<u8>,
    /// Mask blocks across.
    pub blocks_x: usize,
    /// Mask blocks down.
    pub blocks_y: usize,
    /// PSNR of the luminance after rounding and clipping, dB (8-bit display units).
    pub psnr_db: f64,
    /// Largest |change| after clipping, display levels.
    pub max_abs_delta: f64,
}

impl Embedding {
    /// The gain as the fixed-point number the delta was computed with (Q16): with the block
    /// levels, all [`EmbedPlan::regenerate`] needs.
    pub fn gain_fixed(&self) -> i64 {
        gain_fixed(self.gain)
    }
}

/// What embedding one payload needs from the key, computed once and applied to any number
/// of planes (files, frames): the tile in fixed point. RustFFT's plan-once idea.
#[derive(Clone, Debug)]
pub struct EmbedPlan {
    payload: u64,
    variant: usize,
    /// The shaped tile for the payload, `TILE x TILE`, in fixed point.
    tile: Vec<i32>,
}

impl EmbedPlan {
    /// Derives the tile of `payload` under the key behind `patterns` (about 1 ms), variant 0.
    pub fn new(patterns: &KeyPatterns, payload: u64) -> Self {
        Self::with_variant(patterns, payload, 0)
    }

    /// Derives the tile of `payload` in tile variant `variant` (see
    /// [`crate::mark::pattern::VARIANTS`]).
    ///
    /// # Panics
    /// When `variant` is not below `VARIANTS`.
    pub fn with_variant(patterns: &KeyPatterns, payload: u64, variant: usize) -> Self {
        let tile = patterns
            .tile(payload, variant)
            .iter()
            .map(|&v| (v * (1 << TILE_FRAC_BITS) as f32).round() as i32)
            .collect();
        EmbedPlan {
            payload,
            variant,
            tile,
        }
    }

    /// The tile variant this plan embeds.
    pub fn variant(&self) -> usize {
        self.variant
    }

    /// The payload this plan embeds.
    pub fn payload(&self) -> u64 {
        self.payload
    }

    /// Embeds the plan's payload into a luminance plane (8-bit display units).
    ///
    /// # Errors
    /// [`Error::TooSmall`] for an image smaller than one tile; [`Error::OutOfRange`] for
    /// options out of range.
    pub fn embed(&self, plane: &Plane, opts: &EmbedOptions) -> Result<Embedding> {
        embed_tile(plane, &self.tile, opts)
    }

    /// The delta [`EmbedPlan::embed`] wrote into a `width x height` plane whose mask blocks
    /// were `levels` and whose gain was `gain_fixed` ([`Embedding::gain_fixed`]), bit for
    /// bit: what an exact restore subtracts. The original plane is not needed.
    ///
    /// # Panics
    /// When `levels` is not one level per mask block of the plane.
    pub fn regenerate(
        &self,
        width: usize,
        height: usize,
        levels: &[u8],
        gain_fixed: i64,
    ) -> Vec<i16> {
        let (bx, by) = (width.div_ceil(BLOCK), height.div_ceil(BLOCK));
        assert_eq!(levels.len(), bx * by, "one level per mask block");
        let (mt, _) = mask_times_tile(width, height, &self.tile, levels, bx, by);
        mt.iter().map(|&m| quantise(gain_fixed, m) as i16).collect()
    }
}

/// Embeds `payload` into a luminance plane (8-bit display units): [`EmbedPlan::new`] then
/// [`EmbedPlan::embed`]. Stamping many planes with one payload should keep the plan.
///
/// # Errors
/// As [`EmbedPlan::embed`].
pub fn embed(
    plane: &Plane,
    patterns: &KeyPatterns,
    payload: u64,
    opts: &EmbedOptions,
) -> Result<Embedding> {
    EmbedPlan::new(patterns, payload).embed(plane, opts)
}

fn embed_tile(plane: &Plane, tile: &[i32], opts: &EmbedOptions) -> Result<Embedding> {
    opts.validate()?;
    let (w, h) = (plane.width, plane.height);
    if w < MIN_SIDE || h < MIN_SIDE {
        return Err(Error::TooSmall {
            path: None,
            width: w,
            height: h,
            min: MIN_SIDE,
            what: "carry a mark",
        });
    }
    let (blocks_x, blocks_y) = (w.div_ceil(BLOCK), h.div_ceil(BLOCK));
    let block_levels = block_levels(plane, blocks_x, blocks_y, opts.mask_gamma);
    let (mt, mean_sq) = mask_times_tile(w, h, tile, &block_levels, blocks_x, blocks_y);

    let target_mse = 255.0f64.powi(2) / 10f64.powf(opts.psnr_db / 10.0);
    let x = &plane.data;
    // Solve on every 8th row first (cheap), then write the delta while measuring the
    // exact error on every row, shrinking the gain in the rare case the target is missed.
    let sub_step = if h >= 1024 {
        8
    } else if h >= 512 {
        4
    } else {
        1
    };
    let mut gain = (target_mse / mean_sq.max(1e-12)).sqrt();
    for _ in 0..5 {
        let mse = mse_at(gain, x, &mt, w, sub_step);
        gain *= if mse < 1e-12 {
            2.0
        } else {
            (target_mse / mse).sqrt()
        };
    }
    gain *= 0.999;
    let mut delta = vec![0i16; w * h];
    let (mut mse, mut max_abs) = fill_delta(gain, x, &mt, w, &mut delta);
    for _ in 0..8 {
        if mse <= target_mse {
            break;
        }
        gain *= (target_mse / mse).sqrt() * 0.998;
        (mse, max_abs) = fill_delta(gain, x, &mt, w, &mut delta);
    }
    let psnr_db = if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0f64.powi(2) / mse).log10()
    };
    Ok(Embedding {
        delta,
        gain,
        block_levels,
        blocks_x,
        blocks_y,
        psnr_db,
        max_abs_delta: f64::from(max_abs),
    })
}

fn gain_fixed(gain: f64) -> i64 {
    (gain * f64::from(1u32 << GAIN_FRAC_BITS)).round() as i64
}

/// `round(g * m * t)` in fixed point, rounding half up; clamped to the i16 range.
#[inline]
fn quantise(g: i64, mt: i32) -> i32 {
    (((g * i64::from(mt)) + (1i64 << (PRODUCT_SHIFT - 1))) >> PRODUCT_SHIFT).clamp(-4096, 4096)
        as i32
}

/// Writes `delta` for `gain`; returns the MSE after clipping and the largest |change|.
fn fill_delta(gain: f64, x: &[f32], mt: &[i32], w: usize, delta: &mut [i16]) -> (f64, f32) {
    let g = gain_fixed(gain);
    let (mut sum, mut max) = (0f64, 0f32);
    for ((xr, mr), dr) in x
        .chunks_exact(w)
        .zip(mt.chunks_exact(w))
        .zip(delta.chunks_exact_mut(w))
    {
        let (mut s, mut m) = (0f32, 0f32);
        for ((&xv, &mv), d) in xr.iter().zip(mr).zip(dr.iter_mut()) {
            let q = quantise(g, mv);
            *d = q as i16;
            let c = (xv + q as f32).clamp(0.0, 255.0) - xv;
            s += c * c;
            m = m.max(c.abs());
        }
        sum += f64::from(s);
        max = max.max(m);
    }
    (sum / x.len() as f64, max)
}

fn mse_at(gain: f64, x: &[f32], mt: &[i32], w: usize, row_step: usize) -> f64 {
    let g = gain_fixed(gain);
    let mut sum = 0f64;
    let mut n = 0usize;
    for (xr, mr) in x.chunks_exact(w).zip(mt.chunks_exact(w)).step_by(row_step) {
        let mut s = 0f32;
        for (&xv, &m) in xr.iter().zip(mr) {
            let q = quantise(g, m) as f32;
            let d = (xv + q).clamp(0.0, 255.0) - xv;
            s += d * d;
        }
        sum += f64::from(s);
        n += w;
    }
    sum / n as f64
}

/// Per-block mask level: `L = round(32 log2 m) + 64` with
/// `m = max(activity, 1.5)^gamma * taper(mean)`, where activity is the RMS of the
/// neighbour differences in the block / sqrt 2 (about the local noise-and-texture level)
/// and the taper lowers the mark in blocks near black or white, where it would clip.
fn block_levels(plane: &Plane, bx: usize, by: usize, gamma: f32) -> Vec<u8> {
    let (w, h) = (plane.width, plane.height);
    let x = &plane.data;
    let mut levels = Vec::with_capacity(bx * by);
    for j in 0..by {
        for i in 0..bx {
            let (x0, y0) = (i * BLOCK, j * BLOCK);
            let (x1, y1) = ((x0 + BLOCK).min(w), (y0 + BLOCK).min(h));
            let (mut sum, mut sq, mut n, mut dn) = (0f32, 0f32, 0usize, 0usize);
            for y in y0..y1 {
                let row = &x[y * w..(y + 1) * w];
                for xx in x0..x1 {
                    sum += row[xx];
                    n += 1;
                    if xx + 1 < x1 {
                        let d = row[xx + 1] - row[xx];
                        sq += d * d;
                        dn += 1;
                    }
                    if y + 1 < y1 {
                        let d = x[(y + 1) * w + xx] - row[xx];
                        sq += d * d;
                        dn += 1;
                    }
                }
            }
            let activity = (sq / dn.max(1) as f32 / 2.0).sqrt();
            let mean = sum / n as f32;
            let taper = ((mean.min(255.0 - mean)) / 24.0).clamp(0.25, 1.0);
            let m = activity.max(1.5).powf(gamma) * taper;
            let level = (32.0 * m.log2()).round() + 64.0;
            levels.push(level.clamp(0.0, 255.0) as u8);
        }
    }
    levels
}

/// Mask value of a level in Q8 fixed point.
fn level_to_fixed(level: u8) -> i32 {
    (2f64.powf((f64::from(level) - 64.0) / 32.0) * f64::from(1u32 << MASK_FRAC_BITS)).round() as i32
}

/// Interpolation source and weight (of 32) for pixel `p` between block centres.
fn interp(p: usize, blocks: usize) -> (usize, i32) {
    // Block centre k sits at 16k + 7.5; in units of 1/32 block: 2p + 1 - 16 = 32 * (k + t).
    let num = 2 * p as i64 + 1 - BLOCK as i64;
    if num <= 0 {
        return (0, 0);
    }
    let k = (num / (2 * BLOCK as i64)) as usize;
    if k + 1 >= blocks {
        return (blocks - 1, 0);
    }
    (k, (num % (2 * BLOCK as i64)) as i32)
}

/// `M * tile` per pixel in Q(8 + 10), and the mean of its square in real units.
fn mask_times_tile(
    w: usize,
    h: usize,
    tile: &[i32],
    levels: &[u8],
    bx: usize,
    by: usize,
) -> (Vec<i32>, f64) {
    let fixed: Vec<i32> = levels.iter().map(|&l| level_to_fixed(l)).collect();
    let xs: Vec<(usize, i32)> = (0..w).map(|x| interp(x, bx)).collect();
    // Horizontally interpolated block rows, Q8 * 32.
    let mut rows = vec![0i32; by * w];
    for j in 0..by {
        let f = &fixed[j * bx..(j + 1) * bx];
        for (x, &(k, t)) in xs.iter().enumerate() {
            let right = if t == 0 { 0 } else { f[k + 1] * t };
            rows[j * w + x] = f[k] * (32 - t) + right;
        }
    }
    let mut mt = vec![0i32; w * h];
    let mut sum_sq = 0f64;
    let scale = f64::from(1u32 << (TILE_FRAC_BITS + MASK_FRAC_BITS));
    for y in 0..h {
        let (k, t) = interp(y, by);
        let r0 = &rows[k * w..(k + 1) * w];
        let r1 = if t == 0 {
            r0
        } else {
            &rows[(k + 1) * w..(k + 2) * w]
        };
        let trow = &tile[(y % TILE) * TILE..(y % TILE + 1) * TILE];
        let out = &mut mt[y * w..(y + 1) * w];
        let mut s = 0f32;
        for x in 0..w {
            let m = (r0[x] * (32 - t) + r1[x] * t + 512) >> 10;
            let v = m * trow[x & (TILE - 1)];
            out[x] = v;
            let vf = v as f32;
            s += vf * vf;
        }
        sum_sq += f64::from(s) / (scale * scale);
    }
    (mt, sum_sq / (w * h) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::SecretKey;

    fn textured(w: usize, h: usize) -> Plane {
        crate::testsignal::photo_like(w, h, 99)
    }

    #[test]
    fn meets_psnr_target_and_is_deterministic() {
        let p = KeyPatterns::new(&SecretKey::from_bytes([3; 32]));
        let plane = textured(300, 200);
        for target in [38.0, 42.0, 45.0] {
            let opts = EmbedOptions::new().with_psnr_db(target);
            let e = embed(&plane, &p, 42, &opts).unwrap();
            assert!(
                e.psnr_db >= target && e.psnr_db < target + 0.5,
                "{}",
                e.psnr_db
            );
            let again = embed(&plane, &p, 42, &opts).unwrap();
            assert_eq!(e.delta, again.delta);
        }
    }

    #[test]
    fn the_delta_is_regenerated_bit_for_bit_without_the_image() {
        let p = KeyPatterns::new(&SecretKey::from_bytes([3; 32]));
        for (w, h) in [(300, 200), (128, 131), (517, 260)] {
            let plan = EmbedPlan::with_variant(&p, 77, 5);
            let e = plan.embed(&textured(w, h), &EmbedOptions::new()).unwrap();
            let again = plan.regenerate(w, h, &e.block_levels, e.gain_fixed());
            assert_eq!(again, e.delta, "{w}x{h}");
            // Another variant's tile gives another delta.
            let other = EmbedPlan::with_variant(&p, 77, 6);
            assert_ne!(
                other.regenerate(w, h, &e.block_levels, e.gain_fixed()),
                e.delta
            );
        }
    }

    #[test]
    fn rejects_image_smaller_than_a_tile() {
        let p = KeyPatterns::new(&SecretKey::from_bytes([3; 32]));
        let err = embed(&textured(127, 500), &p, 1, &EmbedOptions::new()).unwrap_err();
        assert!(matches!(err, Error::TooSmall { .. }));
    }

    #[test]
    fn interpolation_weights_cover_the_image() {
        assert_eq!(interp(0, 4), (0, 0));
        assert_eq!(interp(8, 4), (0, 1));
        assert_eq!(interp(23, 4), (0, 31));
        assert_eq!(interp(24, 4), (1, 1));
        assert_eq!(interp(63, 4), (3, 0));
    }
}
