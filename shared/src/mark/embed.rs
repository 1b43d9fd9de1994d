//! Embedding: `q = round(g * M * tile)` added to display luminance (design.md section 3).
//!
//! The perceptual mask M is computed per 16 x 16 block (activity quantised to 8-bit log
//! levels, bilinearly upsampled in integer arithmetic) and the whole product is fixed-point,
//! so `q` can be recomputed exactly from the key, the payload, the gain and the small block
//! map: the basis of a later exact restore. The gain g is solved so that the PSNR after
//! rounding and clipping meets the target.

use crate::error::{Error, Result};
use crate::mark::pattern::{KeyPatterns, TILE};
use crate::raster::{Plane, Raster};
use crate::simd::avx2_kernel;

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
        embed_tile(plane, None, &self.tile, opts)
    }

    /// [`EmbedPlan::embed`] with the plane's block levels already computed for
    /// `opts.mask_gamma` ([`luminance_and_levels`]).
    ///
    /// # Panics
    /// When `levels` is not one level per mask block of the plane.
    pub(crate) fn embed_levelled(
        &self,
        plane: &Plane,
        levels: Vec<u8>,
        opts: &EmbedOptions,
    ) -> Result<Embedding> {
        embed_tile(plane, Some(levels), &self.tile, opts)
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
        let mt = mask_times_tile(width, height, &self.tile, levels, bx, by);
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

fn embed_tile(
    plane: &Plane,
    levels: Option<Vec<u8>>,
    tile: &[i32],
    opts: &EmbedOptions,
) -> Result<Embedding> {
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
    let block_levels = match levels {
        Some(levels) => {
            assert_eq!(
                levels.len(),
                blocks_x * blocks_y,
                "one level per mask block"
            );
            levels
        }
        None => block_levels(plane, opts.mask_gamma),
    };
    let field = MaskField::new(w, tile, &block_levels, blocks_x, blocks_y);

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
    let sub_rows = solve_rows(h, sub_step);
    let mut sub_mt = vec![0i32; sub_rows.len() * w];
    let mut sum_sq = 0f64;
    for (&y, out) in sub_rows.iter().zip(sub_mt.chunks_exact_mut(w)) {
        field.row(y, out);
        sum_sq += sum_of_squares(out);
    }
    let scale = f64::from(1u32 << (TILE_FRAC_BITS + MASK_FRAC_BITS));
    let mean_sq = sum_sq / (scale * scale) / sub_mt.len() as f64;
    let mut row_delta = vec![0i16; w];
    let mut mse_at = |gain: f64| {
        let g = gain_fixed(gain);
        let sum: f64 = sub_rows
            .iter()
            .zip(sub_mt.chunks_exact(w))
            .map(|(&y, mt)| clipped_error(g, &x[y * w..(y + 1) * w], mt, &mut row_delta).0)
            .sum();
        sum / sub_mt.len() as f64
    };
    // Secant steps on log MSE against log gain. The slope is 2 until rounding and clipping
    // bend it; the first step assumes 2, the next ones use the slope measured between the
    // last two gains. The retina's and camera's gains settle in two steps at 512 and
    // 2048 px, where fixed steps of slope 2 took three to five.
    let mut gain = (target_mse / mean_sq.max(1e-12)).sqrt();
    let mut last: Option<(f64, f64)> = None;
    for _ in 0..5 {
        let mse = mse_at(gain);
        if mse < 1e-12 {
            gain *= 2.0;
            last = None;
            continue;
        }
        let (lg, lm) = (gain.ln(), mse.ln());
        let slope = match last {
            Some((pg, pm)) if (lg - pg).abs() > 1e-7 => ((lm - pm) / (lg - pg)).clamp(1.0, 4.0),
            _ => 2.0,
        };
        last = Some((lg, lm));
        let step = ((target_mse.ln() - lm) / slope).exp();
        gain *= step;
        // A step within a thousandth: the rows sampled estimate the whole plane's MSE
        // only to about 1 % anyway (below).
        if (step - 1.0).abs() < 1e-3 {
            break;
        }
    }
    // The margin below the solution. On every row the solve is exact up to its last step.
    // On sampled rows the whole plane's MSE came out 0.987-1.011 times the rows' (48
    // planes: six photos and textures at 512-2048 px); 0.995 in gain (0.990 in MSE) kept
    // 47 of them below the target in one pass over the plane.
    gain *= if sub_step == 1 { 0.999 } else { 0.995 };
    // Filled row by row (not zeroed first: that would write the whole delta twice).
    let mut delta = Vec::with_capacity(w * h);
    let mut row = vec![0i32; w];
    let mut fill = |gain: f64| {
        let g = gain_fixed(gain);
        let (mut sum, mut max) = (0f64, 0f32);
        delta.clear();
        for (y, xr) in x.chunks_exact(w).enumerate() {
            field.row(y, &mut row);
            let (s, m) = clipped_error(g, xr, &row, &mut row_delta);
            delta.extend_from_slice(&row_delta);
            sum += s;
            max = max.max(m);
        }
        (sum / x.len() as f64, max)
    };
    let (mut mse, mut max_abs) = fill(gain);
    for _ in 0..8 {
        if mse <= target_mse {
            break;
        }
        gain *= (target_mse / mse).sqrt() * 0.998;
        (mse, max_abs) = fill(gain);
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

/// The rows the gain is solved on: one in `step`, starting one row further down in each
/// tile period, so that every row of the tile is sampled as often as every other. The mark's
/// power differs from tile row to tile row by several percent; rows at a fixed phase of
/// the tile (every 8th from row 0: 16 of its 128 rows) had made the whole plane's MSE
/// come out 4 % below the target at 2048 px and 0.9-1.7 % above it at 512 px (then a
/// second pass over the plane) for every image stamped with one payload.
fn solve_rows(h: usize, step: usize) -> Vec<usize> {
    (0..h.div_ceil(step))
        .map(|k| k * step + (k * step / TILE) % step)
        .filter(|&y| y < h)
        .collect()
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

/// Lanes of the reductions below: independent partial sums the compiler can keep in
/// vector registers, added in a fixed order, so the result does not depend on the CPU.
const LANES: usize = 8;

avx2_kernel! {
    /// The squared error and the largest |change| after clipping that the delta of gain `g`
    /// makes in one row of luminance `x` whose `M * tile` is `mt`; writes the delta to
    /// `delta`.
    fn clipped_error(g: i64, x: &[f32], mt: &[i32], delta: &mut [i16]) -> (f64, f32) = clipped_error_portable
}

/// [`quantise`] of `LANES` values at once, in f32 (which vector units do eight at a time,
/// where an exact i64 product goes four at a time through several instructions), with
/// the same result: `w = g * mt / 2^34 + 1/2` is computed in f32 to within
/// `(|w| + 1) * 2^-22` (three roundings of 2^-24 relative, one more for the half), so its
/// floor is known unless `w` lies within `(|w| + 1) * 2^-20` of an integer; then, and
/// when the clamp at +-4096 applies (an integer too), the eight are computed exactly.
#[inline(always)]
fn quantise_lanes(g: i64, gf: f32, mt: &[i32; LANES]) -> [i32; LANES] {
    // Adding 1.5 * 2^23 rounds an f32 below 2^22 in magnitude to an integer, which the
    // low bits of the sum then hold.
    const MAGIC: f32 = 12_582_912.0;
    const SCALE: f32 = 1.0 / (1u64 << PRODUCT_SHIFT) as f32;
    const EPS: f32 = 1.0 / (1u32 << 20) as f32;
    let (mut q, mut unsure) = ([0i32; LANES], [0u32; LANES]);
    for i in 0..LANES {
        let w = gf * mt[i] as f32 * SCALE + 0.5;
        let w = if w > -4096.0 { w } else { -4096.0 };
        let w = if w < 4096.0 { w } else { 4096.0 };
        let big = w + MAGIC;
        let nearest = big.to_bits() as i32 - MAGIC.to_bits() as i32;
        let d = w - (big - MAGIC);
        unsure[i] = u32::from(d.abs() < (w.abs() + 1.0) * EPS);
        q[i] = nearest - i32::from(d < 0.0);
    }
    if unsure.iter().fold(0, |a, &u| a | u) != 0 {
        for i in 0..LANES {
            q[i] = quantise(g, mt[i]);
        }
    }
    q
}

#[inline(always)]
fn clipped_error_portable(g: i64, x: &[f32], mt: &[i32], delta: &mut [i16]) -> (f64, f32) {
    let gf = g as f32;
    let (mut s, mut m) = ([0f32; LANES], [0f32; LANES]);
    let mut lane = |i: usize, xv: f32, q: i32| {
        // Comparisons rather than `clamp` and `max`, whose NaN rules (no NaN reaches
        // here) cost a vector compare and blend each.
        let y = xv + q as f32;
        let y = if y > 0.0 { y } else { 0.0 };
        let y = if y < 255.0 { y } else { 255.0 };
        let c = y - xv;
        s[i] += c * c;
        let a = c.abs();
        m[i] = if a > m[i] { a } else { m[i] };
    };
    let n = x.len() / LANES * LANES;
    for ((xc, mc), dc) in x[..n]
        .chunks_exact(LANES)
        .zip(mt[..n].chunks_exact(LANES))
        .zip(delta[..n].chunks_exact_mut(LANES))
    {
        let q = quantise_lanes(g, gf, mc.try_into().expect("LANES values"));
        for i in 0..LANES {
            dc[i] = q[i] as i16;
            lane(i, xc[i], q[i]);
        }
    }
    for k in n..x.len() {
        let q = quantise(g, mt[k]);
        delta[k] = q as i16;
        lane(0, x[k], q);
    }
    (
        s.iter().map(|&v| f64::from(v)).sum(),
        m.iter().fold(0f32, |a, &b| a.max(b)),
    )
}

avx2_kernel! {
    /// The sum of squares of a row of `M * tile` values.
    fn sum_of_squares(mt: &[i32]) -> f64 = sum_of_squares_portable
}

#[inline(always)]
fn sum_of_squares_portable(mt: &[i32]) -> f64 {
    let mut s = [0f32; LANES];
    let n = mt.len() / LANES * LANES;
    for c in mt[..n].chunks_exact(LANES) {
        for i in 0..LANES {
            let v = c[i] as f32;
            s[i] += v * v;
        }
    }
    for &v in &mt[n..] {
        s[0] += (v as f32) * (v as f32);
    }
    s.iter().map(|&v| f64::from(v)).sum()
}

/// Per-block mask level: `L = round(32 log2 m) + 64` with
/// `m = max(activity, 1.5)^gamma * taper(mean)`, where activity is the RMS of the
/// neighbour differences in the block / sqrt 2 (about the local noise-and-texture level)
/// and the taper lowers the mark in blocks near black or white, where it would clip.
/// One band of [`BLOCK`] rows at a time ([`band_levels`]).
fn block_levels(plane: &Plane, gamma: f32) -> Vec<u8> {
    let (w, h) = (plane.width, plane.height);
    let mut levels = LevelScratch::new(w, w.div_ceil(BLOCK) * h.div_ceil(BLOCK));
    for band in plane.data.chunks(BLOCK * w.max(1)) {
        levels.band(band, gamma);
    }
    levels.levels
}

/// The luminance of `raster` ([`Raster::luminance`]) and its mask's block levels for
/// `gamma` (as [`EmbedPlan::embed`] computes them from the luminance), in one pass over
/// the samples: each band of [`BLOCK`] rows is levelled while it is still in cache,
/// instead of read back from memory (at 2048 x 2048 the plane is 16 MB).
pub(crate) fn luminance_and_levels(raster: &Raster, gamma: f32) -> (Plane, Vec<u8>) {
    let (w, h) = (raster.width, raster.height);
    let mut data = Vec::with_capacity(w * h);
    let mut levels = LevelScratch::new(w, w.div_ceil(BLOCK) * h.div_ceil(BLOCK));
    for y in (0..h).step_by(BLOCK) {
        let start = data.len();
        raster.append_luminance_rows(y, BLOCK.min(h - y), &mut data);
        levels.band(&data[start..], gamma);
    }
    (Plane::from_vec(w, h, data), levels.levels)
}

/// The per-column sums [`band_levels`] accumulates, kept across bands, and the levels
/// found so far.
struct LevelScratch {
    sums: Vec<f32>,
    squares: Vec<f32>,
    /// 1 where the right neighbour is in the same block, else 0 (a multiplier, so that
    /// the loops have no branch).
    right: Vec<f32>,
    levels: Vec<u8>,
}

impl LevelScratch {
    fn new(w: usize, blocks: usize) -> Self {
        LevelScratch {
            sums: vec![0.0; w],
            squares: vec![0.0; w],
            right: (0..w)
                .map(|x| f32::from(u8::from(x + 1 < w && (x + 1) % BLOCK != 0)))
                .collect(),
            levels: Vec::with_capacity(blocks),
        }
    }

    /// Appends the levels of one band of rows (`BLOCK` rows, fewer at the bottom).
    fn band(&mut self, rows: &[f32], gamma: f32) {
        if self.sums.is_empty() {
            return; // no columns, no blocks
        }
        let LevelScratch {
            sums,
            squares,
            right,
            levels,
        } = self;
        band_levels(rows, gamma, sums, squares, right, levels);
    }
}

avx2_kernel! {
    /// The levels ([`block_levels`]) of the blocks in one band of rows, `rows` (whole rows
    /// of `sums.len()` pixels), appended to `levels`; `sums` and `squares` are scratch.
    fn band_levels(rows: &[f32], gamma: f32, sums: &mut [f32], squares: &mut [f32], right: &[f32], levels: &mut Vec<u8>) -> () = band_levels_portable
}

#[inline(always)]
fn band_levels_portable(
    rows: &[f32],
    gamma: f32,
    sums: &mut [f32],
    squares: &mut [f32],
    right: &[f32],
    levels: &mut Vec<u8>,
) {
    let w = sums.len();
    let bh = rows.len() / w;
    // Per column: the sum of the pixels and of the squared differences to the right and
    // below neighbours that lie in the same block.
    sums.fill(0.0);
    squares.fill(0.0);
    for y in 0..bh {
        let row = &rows[y * w..(y + 1) * w];
        for (s, &v) in sums.iter_mut().zip(row) {
            *s += v;
        }
        for ((q, pair), &m) in squares.iter_mut().zip(row.windows(2)).zip(right) {
            let d = pair[1] - pair[0];
            *q += d * d * m;
        }
        if y + 1 < bh {
            let below = &rows[(y + 1) * w..(y + 2) * w];
            for ((q, &v), &b) in squares.iter_mut().zip(row).zip(below) {
                let d = b - v;
                *q += d * d;
            }
        }
    }
    for (i, (s, q)) in sums.chunks(BLOCK).zip(squares.chunks(BLOCK)).enumerate() {
        let bw = ((i + 1) * BLOCK).min(w) - i * BLOCK;
        let n = bw * bh;
        let dn = (bw - 1) * bh + bw * (bh - 1);
        let sum: f32 = s.iter().sum();
        let sq: f32 = q.iter().sum();
        let activity = (sq / dn.max(1) as f32 / 2.0).sqrt();
        let mean = sum / n as f32;
        let taper = ((mean.min(255.0 - mean)) / 24.0).clamp(0.25, 1.0);
        let m = activity.max(1.5).powf(gamma) * taper;
        let level = (32.0 * m.log2()).round() + 64.0;
        levels.push(level.clamp(0.0, 255.0) as u8);
    }
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

/// `M * tile` in Q(8 + 10), one row at a time: the mask's block levels interpolated
/// across (kept, one row per block row) and down (per row), times the tile.
struct MaskField<'a> {
    width: usize,
    blocks_y: usize,
    tile: &'a [i32],
    /// Horizontally interpolated block rows, Q8 * 32, `blocks_y x width`.
    rows: Vec<i32>,
}

impl<'a> MaskField<'a> {
    fn new(w: usize, tile: &'a [i32], levels: &[u8], bx: usize, by: usize) -> Self {
        debug_assert_eq!(levels.len(), bx * by);
        let fixed: Vec<i32> = levels.iter().map(|&l| level_to_fixed(l)).collect();
        let xs: Vec<(usize, i32)> = (0..w).map(|x| interp(x, bx)).collect();
        let mut rows = vec![0i32; by * w];
        for (f, out) in fixed.chunks_exact(bx).zip(rows.chunks_exact_mut(w)) {
            for (o, &(k, t)) in out.iter_mut().zip(&xs) {
                let right = if t == 0 { 0 } else { f[k + 1] * t };
                *o = f[k] * (32 - t) + right;
            }
        }
        MaskField {
            width: w,
            blocks_y: by,
            tile,
            rows,
        }
    }

    /// Row `y` of `M * tile` into `out` (`width` values).
    fn row(&self, y: usize, out: &mut [i32]) {
        let w = self.width;
        let (k, t) = interp(y, self.blocks_y);
        let r0 = &self.rows[k * w..(k + 1) * w];
        let r1 = if t == 0 {
            r0
        } else {
            &self.rows[(k + 1) * w..(k + 2) * w]
        };
        let trow = &self.tile[(y % TILE) * TILE..(y % TILE + 1) * TILE];
        field_row(r0, r1, t, trow, out);
    }
}

avx2_kernel! {
    /// One row of `M * tile`: block rows `r0` and `r1` mixed with weight `t` of 32, times
    /// the tile's row.
    fn field_row(r0: &[i32], r1: &[i32], t: i32, trow: &[i32], out: &mut [i32]) -> () = field_row_portable
}

#[inline(always)]
fn field_row_portable(r0: &[i32], r1: &[i32], t: i32, trow: &[i32], out: &mut [i32]) {
    for ((o, a), b) in out
        .chunks_mut(TILE)
        .zip(r0.chunks(TILE))
        .zip(r1.chunks(TILE))
    {
        for (((o, &a), &b), &tv) in o.iter_mut().zip(a).zip(b).zip(trow) {
            *o = ((a * (32 - t) + b * t + 512) >> 10) * tv;
        }
    }
}

/// `M * tile` per pixel in Q(8 + 10), the whole plane.
fn mask_times_tile(
    w: usize,
    h: usize,
    tile: &[i32],
    levels: &[u8],
    bx: usize,
    by: usize,
) -> Vec<i32> {
    let field = MaskField::new(w, tile, levels, bx, by);
    let mut mt = vec![0i32; w * h];
    for (y, out) in mt.chunks_exact_mut(w).enumerate() {
        field.row(y, out);
    }
    mt
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::SecretKey;

    fn textured(w: usize, h: usize) -> Plane {
        crate::testsignal::photo_like(w, h, 99)
    }

    /// The gain is solved on sampled rows for planes of 512 px and more: the whole plane
    /// must still meet the target, and come within 0.1 dB of it (the budget is the mark's
    /// strength). The sampling itself is checked below.
    #[test]
    fn sampled_rows_use_the_psnr_budget() {
        let p = KeyPatterns::new(&SecretKey::from_bytes([5; 32]));
        for (w, h) in [(512, 512), (700, 1100)] {
            let plane = textured(w, h);
            for payload in [1, 0x0123_4567_89ab_cdef, u64::MAX / 3] {
                let e = embed(&plane, &p, payload, &EmbedOptions::new()).unwrap();
                assert!(
                    e.psnr_db >= 42.0 && e.psnr_db < 42.1,
                    "{w} x {h}, payload {payload:x}: {} dB",
                    e.psnr_db
                );
            }
        }
    }

    #[test]
    fn the_solve_samples_every_tile_row_equally() {
        for (h, step, times) in [(2048, 8, 2), (512, 4, 1), (1024, 8, 1)] {
            let rows = solve_rows(h, step);
            assert_eq!(rows.len(), h / step);
            let mut count = [0usize; TILE];
            for &y in &rows {
                assert!(y < h);
                count[y % TILE] += 1;
            }
            assert!(count.iter().all(|&c| c == times), "{h} / {step}: {count:?}");
        }
        // Every row when nothing is sampled; never past the last row.
        assert_eq!(solve_rows(300, 1), (0..300).collect::<Vec<_>>());
        assert!(solve_rows(1000, 8).iter().all(|&y| y < 1000));
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
    fn quantising_in_f32_gives_the_exact_values() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(14);
        let half = 1i64 << (PRODUCT_SHIFT - 1);
        let mut unsure = 0usize;
        for round in 0..20_000 {
            // Gains from tiny to far beyond any real one (past the clamp at +-4096).
            let bits = rng.random_range(4..34);
            let g: i64 = rng.random_range(1..1i64 << bits);
            let g = if round % 3 == 0 { -g } else { g };
            let mut mt = [0i32; LANES];
            for (i, m) in mt.iter_mut().enumerate() {
                *m = if i % 2 == 0 {
                    rng.random_range(-(1 << 27)..1 << 27)
                } else {
                    // Next to a rounding boundary: g * mt + 2^33 near a multiple of 2^34.
                    let k: i64 = rng.random_range(-64..64);
                    let at = ((k << PRODUCT_SHIFT) - half) / g;
                    (at + rng.random_range(-2..=2)).clamp(i32::MIN as i64, i32::MAX as i64) as i32
                };
            }
            let fast = quantise_lanes(g, g as f32, &mt);
            let exact = mt.map(|m| quantise(g, m));
            assert_eq!(fast, exact, "g {g}, mt {mt:?}");
            unsure += usize::from(fast.iter().zip(&mt).any(|(&q, &m)| {
                let w = g as f32 * m as f32 / (1u64 << PRODUCT_SHIFT) as f32 + 0.5;
                q.abs() < 4096 && (w - w.round()).abs() < 1e-3
            }));
        }
        // Values exactly at a boundary were among them.
        assert!(unsure > 1000, "{unsure}");
    }

    #[test]
    fn the_vector_build_of_each_loop_gives_the_same_bits() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(15);
        let plane = textured(517, 260);
        let levels = block_levels(&plane, 0.5);
        assert_eq!(
            levels.len(),
            517usize.div_ceil(BLOCK) * 260usize.div_ceil(BLOCK)
        );
        let mut portable = LevelScratch::new(517, levels.len());
        for band in plane.data.chunks(BLOCK * 517) {
            let s = &mut portable;
            band_levels_portable(
                band,
                0.5,
                &mut s.sums,
                &mut s.squares,
                &s.right,
                &mut s.levels,
            );
        }
        assert_eq!(levels, portable.levels);
        let x: Vec<f32> = (0..1003).map(|_| rng.random_range(-3.0..260.0)).collect();
        let mt: Vec<i32> = (0..1003)
            .map(|_| rng.random_range(-(1 << 24)..1 << 24))
            .collect();
        for g in [1i64, 70_000, 3_000_000, 1 << 34] {
            let (mut a, mut b) = (vec![0i16; 1003], vec![0i16; 1003]);
            let ea = clipped_error(g, &x, &mt, &mut a);
            let eb = clipped_error_portable(g, &x, &mt, &mut b);
            assert_eq!(
                (ea.0.to_bits(), ea.1.to_bits(), &a),
                (eb.0.to_bits(), eb.1.to_bits(), &b)
            );
            assert_eq!(
                a,
                mt.iter()
                    .map(|&m| quantise(g, m) as i16)
                    .collect::<Vec<_>>()
            );
        }
        assert_eq!(
            sum_of_squares(&mt).to_bits(),
            sum_of_squares_portable(&mt).to_bits()
        );
    }

    /// The one-pass luminance and levels the stamper uses are the plane's luminance and the
    /// levels [`EmbedPlan::embed`] computes from it, for every sample layout, a last band
    /// of fewer rows and a last block column of fewer pixels.
    #[test]
    fn levels_taken_band_by_band_are_the_planes_levels() {
        use crate::raster::{Samples, random_rasters};
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(16);
        let (w, h) = (133, 70);
        for channels in 1..=4 {
            for raster in random_rasters(&mut rng, w, h, channels) {
                for gamma in [0.0, 0.5] {
                    // Too small to mark, but not a panic (the embedder refuses it).
                    let empty = Raster {
                        width: 0,
                        samples: Samples::U8(Vec::new()),
                        ..raster.clone()
                    };
                    assert_eq!(luminance_and_levels(&empty, gamma).1, Vec::<u8>::new());
                    let (plane, levels) = luminance_and_levels(&raster, gamma);
                    let luma = raster.luminance();
                    assert_eq!(plane, luma);
                    let want = block_levels(&luma, gamma);
                    assert_eq!(levels, want);
                    // Not all one level: the comparison could fail.
                    assert!(want.iter().any(|&l| l != want[0]) || gamma == 0.0);
                }
            }
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
