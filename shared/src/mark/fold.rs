//! Whitening and folding (design.md section 5 steps 2 and 4): the copy's local residual,
//! normalised to unit local RMS, with JPEG's block grid removed; then folded modulo the tile
//! under a geometry hypothesis.

use crate::mark::dsp::{BoxScratch, box_sums, window_columns};
use crate::mark::lattice::Candidate;
use crate::mark::pattern::TILE;
use crate::raster::Plane;

const SHIFTS: usize = TILE * TILE;

/// Radius of the window over which the whitened residual's local RMS is estimated: 5 x 5.
/// A 9 x 9 window (radius 4, the first choice) averages a fine texture's energy with its
/// neighbours', so the residual of grass or of a slice's edges keeps most of its contrast;
/// `tracemark-bench hard` seeds 1-5 read or named 1,123 copies at 5 x 5 against 1,098 at
/// 9 x 9 (3 x 3 gained more but lost blind JPEG 20 reads on the slices).
const RMS_RADIUS: usize = 2;

/// Whitening (design.md section 5 step 2): residual of a 3 x 3 box, divided by its local
/// RMS over 5 x 5 (`RMS_RADIUS`), clipped to +-3; flat regions (padding, black corners, borders) and 2 px
/// around them are zeroed.
pub fn whiten(plane: &Plane) -> Plane {
    let (w, h) = (plane.width, plane.height);
    let columns = |r| window_columns(w, r).map(|c| c as f32).collect::<Vec<f32>>();
    let mut sums = BoxScratch::<f32>::default();
    let mut counts = BoxScratch::<u8>::default();
    // Residual of the 3 x 3 mean.
    let mut r = Vec::with_capacity(w * h);
    let cols = columns(1);
    box_sums(&plane.data, w, h, 1, &mut sums, |y, s, rows| {
        let rows = rows as f32;
        let row = &plane.data[y * w..(y + 1) * w];
        r.extend(
            row.iter()
                .zip(s)
                .zip(&cols)
                .map(|((&x, &s), &c)| x - s / (rows * c)),
        );
    });
    // Flat pixels: residual essentially zero. A pixel is dead when more than 90 % of its
    // 5 x 5 neighbourhood is flat; dead regions are then grown by 2 px. Counted in u8.
    let flat: Vec<u8> = r.iter().map(|v| u8::from(v.abs() < 0.2)).collect();
    let cols2: Vec<u32> = window_columns(w, 2).map(|c| c as u32).collect();
    let mut mostly_flat = Vec::with_capacity(w * h);
    box_sums(&flat, w, h, 2, &mut counts, |_, s, rows| {
        let rows = rows as u32;
        mostly_flat.extend(
            s.iter()
                .zip(&cols2)
                .map(|(&n, &c)| u8::from(10 * u32::from(n) > 9 * rows * c)),
        );
    });
    let mut dead = flat;
    dead.clear();
    box_sums(&mostly_flat, w, h, 2, &mut counts, |_, s, _| {
        dead.extend(s.iter().map(|&n| u8::from(n > 0)));
    });
    drop(mostly_flat);
    // Divide by the local RMS over 5 x 5.
    let square: Vec<f32> = r.iter().map(|v| v * v).collect();
    let cols = columns(RMS_RADIUS);
    box_sums(&square, w, h, RMS_RADIUS, &mut sums, |y, s, rows| {
        let rows = rows as f32;
        let line = y * w..(y + 1) * w;
        for (((v, &s), &c), &d) in r[line.clone()]
            .iter_mut()
            .zip(s)
            .zip(&cols)
            .zip(&dead[line])
        {
            let energy = s / (rows * c);
            // Computed for every pixel and then selected: no branch, so it vectorises.
            let white = (*v / (energy + 1e-2).sqrt()).clamp(-3.0, 3.0);
            *v = if d != 0 { 0.0 } else { white };
        }
    });
    drop(square);
    remove_block_grid(&mut r, w, &dead);
    Plane::from_vec(w, h, r)
}

/// Removes the 8 x 8-periodic component (the mean of each of the 64 pixel phases modulo
/// 8) from live pixels. JPEG's block grid survives whitening as exactly such a component,
/// and it forms perfect square lattices at 8, 16, 24... px that outrank the mark's lattice
/// on small recompressed copies. The mark's own 8-periodic part is the mean of ~64
/// independent chips per phase: negligible.
fn remove_block_grid(r: &mut [f32], w: usize, dead: &[u8]) {
    // Dead pixels are already zero, so they add nothing to the sums; only the counts need
    // the mask. Each row is summed per phase in f32 (at most w / 8 terms of |v| <= 3), then
    // added to the f64 totals.
    let mut sum = [0f64; 64];
    let mut count = [0u32; 64];
    for (y, (row, drow)) in r.chunks_exact(w).zip(dead.chunks_exact(w)).enumerate() {
        let base = (y & 7) * 8;
        let (mut s, mut n) = ([0f32; 8], [0u32; 8]);
        for (v8, d8) in row.chunks(8).zip(drow.chunks(8)) {
            for (k, (&v, &d)) in v8.iter().zip(d8).enumerate() {
                s[k] += v;
                n[k] += u32::from(d == 0);
            }
        }
        for k in 0..8 {
            sum[base + k] += f64::from(s[k]);
            count[base + k] += n[k];
        }
    }
    let mean: Vec<f32> = sum
        .iter()
        .zip(&count)
        .map(|(&s, &n)| {
            if n > 0 {
                (s / f64::from(n)) as f32
            } else {
                0.0
            }
        })
        .collect();
    for (y, (row, drow)) in r.chunks_exact_mut(w).zip(dead.chunks_exact(w)).enumerate() {
        let m = &mean[(y & 7) * 8..(y & 7) * 8 + 8];
        for (v8, d8) in row.chunks_mut(8).zip(drow.chunks(8)) {
            for ((v, &d), &m) in v8.iter_mut().zip(d8).zip(m) {
                *v = if d == 0 { *v - m } else { 0.0 };
            }
        }
    }
}

/// A copy pixel is spread over its footprint in the original (see [`fold`]) when the
/// footprint is at least this many pixels across: copies downscaled to under 0.4.
const FOOTPRINT_FROM: usize = 3;

/// Folds the whitened copy modulo the tile under a geometry hypothesis: each pixel is
/// mapped back to original coordinates and splatted bilinearly; each bin's sum is divided
/// by the square root of its weight ([`bins`]).
///
/// Under a candidate that shrank the original to under 0.4 (a copy downscaled to a third,
/// say), a copy pixel is the mean of the `k x k` original pixels it covers (`k = 1 /
/// scale`, rounded), so it is spread over all their centres, `1 / k^2` each ([`spread`]):
/// the fold is then the adjoint of an area downscale, and the bins between the pixels'
/// centres get their share instead of nothing. `tracemark-bench hard`, read or named: seeds
/// 1-3 685 against 680 with the weighting alone (the slices' thirds 14 -> 16 of 24 with an
/// area downscale, 13 -> 14 with a cubic one), seeds 4-5 458 against 457; no cell lower by
/// more than one copy. From a 0.5 scale on (`k = 2`) it gained nothing.
pub(crate) fn fold(white: &Plane, c: &Candidate) -> Vec<f32> {
    let (w, h) = (white.width, white.height);
    // Sum and weight of a bin side by side: one cache line per corner of a splat.
    let mut acc = vec![[0f32; 2]; SHIFTS];
    let mask = TILE - 1;
    if c.is_identity() {
        for y in 0..h {
            let row = &white.data[y * w..(y + 1) * w];
            let base = (y & mask) * TILE;
            for (x, &v) in row.iter().enumerate() {
                let bin = &mut acc[base + (x & mask)];
                bin[0] += v;
                bin[1] += 1.0;
            }
        }
        return bins(&acc);
    }
    walk(white, c, |u, v, val| splat(&mut acc, u, v, val));
    let k = footprint(c);
    if k >= FOOTPRINT_FROM {
        acc = spread(&acc, c, k);
    }
    bins(&acc)
}

/// The bins' (sum, weight) pairs as if each copy pixel had been splatted at the centres of
/// the `k x k` original pixels it covers under `c`, `1 / k^2` each: the pairs shifted by
/// each centre's offset from the pixel's own (rounded to whole bins) and added. The cost is
/// `k^2` passes over the 128 x 128 bins, whatever the copy's size (splatting each pixel `k^2`
/// times cost a large copy as much as folding the original).
fn spread(acc: &[[f32; 2]], c: &Candidate, k: usize) -> Vec<[f32; 2]> {
    let [a11, a12, a21, a22] = c.inverse();
    let step = |j: usize| (j as f64 + 0.5) / k as f64 - 0.5;
    let share = 1.0 / (k * k) as f32;
    let wrap = |d: f64| (d.round() as i64).rem_euclid(TILE as i64) as usize;
    let mut out = vec![[0f32; 2]; SHIFTS];
    for i in 0..k * k {
        let (fx, fy) = (step(i % k), step(i / k));
        let (dx, dy) = (wrap(a11 * fx + a12 * fy), wrap(a21 * fx + a22 * fy));
        // out[y][x] += acc[y - dy][x - dx], the tile wrapping.
        for y in 0..TILE {
            let from = &acc[((y + TILE - dy) % TILE) * TILE..][..TILE];
            let to = &mut out[y * TILE..(y + 1) * TILE];
            let (head, tail) = to.split_at_mut(dx);
            for (o, a) in tail.iter_mut().zip(from) {
                o[0] += share * a[0];
                o[1] += share * a[1];
            }
            for (o, a) in head.iter_mut().zip(&from[TILE - dx..]) {
                o[0] += share * a[0];
                o[1] += share * a[1];
            }
        }
    }
    out
}

/// How many original pixels across a copy pixel covers under `c`, rounded.
fn footprint(c: &Candidate) -> usize {
    (1.0 / c.scale()).round().max(1.0) as usize
}

/// Calls `f(u, v, value)` for every live pixel of `white`, `(u, v)` its place in the
/// original under `c` in 32.32 fixed point, offset to stay positive (so that a shift is a
/// floor): a float-to-int conversion per pixel costs more than the splat. (2048 steps of a
/// rounded increment drift by under 1e-6 px.)
#[inline(always)]
fn walk(white: &Plane, c: &Candidate, mut f: impl FnMut(i64, i64, f32)) {
    let w = white.width;
    if w == 0 {
        return;
    }
    let [a11, a12, a21, a22] = c.inverse();
    let off = (TILE * 1024) as f64;
    let (du, dv) = (fix(a11), fix(a21));
    for (y, row) in white.data.chunks_exact(w).enumerate() {
        let yf = y as f64;
        let (mut u, mut v) = (fix(a12 * yf + off), fix(a22 * yf + off));
        for &val in row {
            if val != 0.0 {
                f(u, v, val);
            }
            u += du;
            v += dv;
        }
    }
}

/// A keystone on top of an affine candidate (a photo of a screen taken at an angle): a copy
/// pixel `x` maps to the original's frame at `M^-1 (centre + S q / (1 + p . q))`, where
/// `q = x - centre`, `M` is the candidate's map and `S = diag(1 + s)` corrects its scale
/// along the copy's axes; `p = s = 0` is the candidate itself.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Keystone {
    /// The copy's centre (pixels): the point the keystone leaves in place.
    pub(crate) centre: (f64, f64),
    /// The candidate's inverse map, row-major.
    pub(crate) inverse: [f64; 4],
    /// The projective coefficients (per pixel).
    pub(crate) p: (f64, f64),
    /// The scale corrections along the copy's x and y.
    pub(crate) s: (f64, f64),
}

/// [`fold`] under a [`Keystone`], over the whole copy or `half` of it: each pixel's place
/// is computed in floating point (a division per pixel; this fold runs only to read a
/// payload whose mark was already found).
pub(crate) fn fold_keystone(white: &Plane, k: &Keystone, half: bool) -> Vec<f32> {
    let (w, h) = (white.width, white.height);
    let mut acc = vec![[0f32; 2]; SHIFTS];
    let [a11, a12, a21, a22] = k.inverse;
    let (p1, p2) = k.p;
    let (cx, cy) = k.centre;
    let off = (TILE * 1024) as f64;
    let (u0, v0) = (a11 * cx + a12 * cy + off, a21 * cx + a22 * cy + off);
    // S folded into the map's columns.
    let (a11, a21) = (a11 * (1.0 + k.s.0), a21 * (1.0 + k.s.0));
    let (a12, a22) = (a12 * (1.0 + k.s.1), a22 * (1.0 + k.s.1));
    // Half the copy is taken as alternate pairs of rows, not every other row: the mark's
    // chips are 2 px, and every other row aliases them (on a sharp copy the peak fell
    // from z 8.8 on the whole copy to 4.0, and the search followed noise).
    for y in (0..h).filter(|y| !half || (y / 2) % 2 == 0) {
        let qy = y as f64 - cy;
        for (x, &val) in white.data[y * w..(y + 1) * w].iter().enumerate() {
            if val == 0.0 {
                continue;
            }
            let qx = x as f64 - cx;
            let d = 1.0 + p1 * qx + p2 * qy;
            if d <= 0.1 {
                continue;
            }
            let inv = 1.0 / d;
            let (sx, sy) = (qx * inv, qy * inv);
            // Positive (the offset), so truncation is the floor: no rounding call.
            let (u, v) = (u0 + a11 * sx + a12 * sy, v0 + a21 * sx + a22 * sy);
            splat(&mut acc, (u * ONE) as i64, (v * ONE) as i64, val);
        }
    }
    bins(&acc)
}

const ONE: f64 = (1u64 << 32) as f64;

/// A coordinate in 32.32 fixed point.
fn fix(v: f64) -> i64 {
    (v * ONE).round() as i64
}

/// Splats `val` bilinearly at the fixed-point place `(u, v)` (taken modulo the tile) into
/// the bins' (sum, weight) pairs.
#[inline(always)]
fn splat(acc: &mut [[f32; 2]], u: i64, v: i64, val: f32) {
    let mask = TILE - 1;
    let frac = |v: i64| (v & 0xFFFF_FFFF) as f32 * (1.0 / ONE as f32);
    let (fu, fv) = (frac(u), frac(v));
    let (x0, y0) = ((u >> 32) as usize & mask, (v >> 32) as usize & mask);
    let (x1, y1) = ((x0 + 1) & mask, (y0 + 1) & mask);
    let w01 = (1.0 - fu) * fv;
    let w11 = fu * fv;
    let w00 = (1.0 - fu) - w01;
    let w10 = fu - w11;
    for (bin, wt) in [
        (y0 * TILE + x0, w00),
        (y0 * TILE + x1, w10),
        (y1 * TILE + x0, w01),
        (y1 * TILE + x1, w11),
    ] {
        acc[bin][0] += wt * val;
        acc[bin][1] += wt;
    }
}

/// Each bin's sum over the square root of its weight (0 where nothing fell).
///
/// A bin's mark grows with its weight `W` (the pixels that fell into it) and its noise with
/// about `sqrt(W)`, so the bin's evidence is `sqrt(W)` times its mean. The fold was first
/// each bin's mean: where the copy is smaller than the original (downscaled to a third,
/// say) a pixel lands in few bins and the bilinear weights vary from 1 to slivers of a
/// pixel, and a bin a sliver fell into counted as much as a bin a whole pixel fell into.
/// Weighted by `sqrt(W)` (every bin's noise about the same), `tracemark-bench hard` seeds
/// 1-3 read or named 680 copies instead of 673 (the slices' thirds 9 -> 14 and 10 -> 13 of
/// 24) and seeds 4-5 457 instead of 450; the plain sums (the matched filter for white
/// noise) gave 679 and 453, with more cells down. A copy that covers every bin equally
/// (the original's size, whole tiles) folds to its means times one constant: the same z.
fn bins(acc: &[[f32; 2]]) -> Vec<f32> {
    acc.iter()
        .map(|&[s, wt]| if wt > 0.0 { s / wt.sqrt() } else { 0.0 })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mark::dsp::box_mean;
    use crate::testsignal::photo_like;

    /// The fold in plain floating point, as it was written first: the reference for the
    /// fixed-point one.
    fn fold_reference(white: &Plane, c: &Candidate) -> Vec<f32> {
        let k = footprint(c);
        let k = if k < FOOTPRINT_FROM { 1 } else { k };
        let (sum, weight) = sums_and_weights(white, c, k);
        bins_reference(&sum, &weight)
    }

    /// [`bins`] in plain floating point: each sum over the square root of its weight.
    fn bins_reference(sum: &[f64], weight: &[f64]) -> Vec<f32> {
        sum.iter()
            .zip(weight)
            .map(|(&s, &w)| if w > 0.0 { (s / w.sqrt()) as f32 } else { 0.0 })
            .collect()
    }

    /// Each bin's weighted sum and weight, in plain floating point, every pixel splatted at
    /// the centres of the `k x k` original pixels it covers (their offsets rounded to whole
    /// bins).
    fn sums_and_weights(white: &Plane, c: &Candidate, k: usize) -> (Vec<f64>, Vec<f64>) {
        let mut sum = vec![0f64; SHIFTS];
        let mut weight = vec![0f64; SHIFTS];
        let [a11, a12, a21, a22] = c.inverse();
        let share = 1.0 / (k * k) as f64;
        for y in 0..white.height {
            for x in 0..white.width {
                let val = f64::from(white.data[y * white.width + x]);
                if val == 0.0 {
                    continue;
                }
                for i in 0..k * k {
                    let step = |j: usize| (j as f64 + 0.5) / k as f64 - 0.5;
                    let (fx, fy) = (step(i % k), step(i / k));
                    let (xf, yf) = (x as f64, y as f64);
                    // The centre's offset, rounded to whole bins.
                    let (u, v) = (
                        a11 * xf + a12 * yf + (a11 * fx + a12 * fy).round(),
                        a21 * xf + a22 * yf + (a21 * fx + a22 * fy).round(),
                    );
                    let (fu, fv) = (u - u.floor(), v - v.floor());
                    let (x0, y0) = (
                        u.floor().rem_euclid(TILE as f64) as usize,
                        v.floor().rem_euclid(TILE as f64) as usize,
                    );
                    let (x1, y1) = ((x0 + 1) % TILE, (y0 + 1) % TILE);
                    for (bin, wt) in [
                        (y0 * TILE + x0, (1.0 - fu) * (1.0 - fv)),
                        (y0 * TILE + x1, fu * (1.0 - fv)),
                        (y1 * TILE + x0, (1.0 - fu) * fv),
                        (y1 * TILE + x1, fu * fv),
                    ] {
                        sum[bin] += share * wt * val;
                        weight[bin] += share * wt;
                    }
                }
            }
        }
        (sum, weight)
    }

    /// Whitening as it was first written (f64 running box means): the reference for
    /// [`whiten`]. Whitening (design.md section 5 step 2): residual of a 3 x 3 box, divided by its local
    /// RMS over 5 x 5, clipped to +-3; flat regions (padding, black corners, borders) and 2 px
    /// around them are zeroed.
    fn whiten_reference(plane: &Plane) -> Plane {
        let (w, h) = (plane.width, plane.height);
        let mut col = Vec::new();
        let mut smooth = vec![0f32; w * h];
        box_mean(&plane.data, w, h, 1, &mut smooth, &mut col);
        let mut r: Vec<f32> = plane.data.iter().zip(&smooth).map(|(x, s)| x - s).collect();
        // Energy, reusing `smooth` as the square buffer and its output.
        for (s, &v) in smooth.iter_mut().zip(&r) {
            *s = v * v;
        }
        let mut energy = vec![0f32; w * h];
        box_mean(&smooth, w, h, RMS_RADIUS, &mut energy, &mut col);
        // Flat pixels: residual essentially zero. A pixel is dead when most of its 5 x 5
        // neighbourhood is flat; dead regions are then grown by 2 px.
        for (s, &v) in smooth.iter_mut().zip(&r) {
            *s = if v.abs() < 0.2 { 1.0 } else { 0.0 };
        }
        let mut flat = vec![0f32; w * h];
        box_mean(&smooth, w, h, 2, &mut flat, &mut col);
        for (s, &f) in smooth.iter_mut().zip(&flat) {
            *s = if f > 0.9 { 1.0 } else { 0.0 };
        }
        box_mean(&smooth, w, h, 2, &mut flat, &mut col);
        for ((v, &e), &dead) in r.iter_mut().zip(&energy).zip(&flat) {
            *v = if dead > 0.0 {
                0.0
            } else {
                (*v / (e + 1e-2).sqrt()).clamp(-3.0, 3.0)
            };
        }
        remove_block_grid_reference(&mut r, w, &flat);
        Plane::from_vec(w, h, r)
    }

    /// The block grid's removal as first written, with the mask in f32.
    fn remove_block_grid_reference(r: &mut [f32], w: usize, dead: &[f32]) {
        let mut sum = [0f64; 64];
        let mut count = [0u32; 64];
        for (y, (row, drow)) in r.chunks_exact(w).zip(dead.chunks_exact(w)).enumerate() {
            for (x, (&v, &d)) in row.iter().zip(drow).enumerate() {
                if d == 0.0 {
                    sum[(y & 7) * 8 + (x & 7)] += f64::from(v);
                    count[(y & 7) * 8 + (x & 7)] += 1;
                }
            }
        }
        for (y, (row, drow)) in r.chunks_exact_mut(w).zip(dead.chunks_exact(w)).enumerate() {
            for (x, (v, &d)) in row.iter_mut().zip(drow).enumerate() {
                let phase = (y & 7) * 8 + (x & 7);
                if d == 0.0 && count[phase] > 0 {
                    *v -= (sum[phase] / f64::from(count[phase])) as f32;
                }
            }
        }
    }

    #[test]
    fn whitening_matches_the_running_sum_reference() {
        let mut plane = photo_like(333, 201, 9);
        // A flat band and a flat block, as padding and burnt-in black areas leave.
        for v in &mut plane.data[..333 * 17] {
            *v = 0.0;
        }
        for y in 100..140 {
            for v in &mut plane.data[y * 333 + 50..y * 333 + 90] {
                *v = 255.0;
            }
        }
        let (a, b) = (whiten(&plane), whiten_reference(&plane));
        assert!(a.data.contains(&0.0) && a.data.iter().any(|&v| v != 0.0));
        for (i, (x, y)) in a.data.iter().zip(&b.data).enumerate() {
            assert_eq!(*x == 0.0, *y == 0.0, "dead mask differs at {i}");
            assert!((x - y).abs() < 1e-4, "{i}: {x} vs {y}");
        }
    }

    /// A copy downscaled to 0.45: each pixel lands among four bins with bilinear weights
    /// from whole to slivers. A bin only a sliver of one pixel fell into must not count as
    /// much as a bin whole pixels fell into (as a bin's mean did).
    #[test]
    fn a_bin_a_sliver_fell_into_counts_for_less() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(16);
        let (w, h) = (86, 86);
        let mut noise = Plane::zeros(w, h);
        for v in &mut noise.data {
            // Two uniform draws, centred; never exactly 0 (0 is "no pixel").
            *v = rng.random::<f32>() + rng.random::<f32>() - 1.0 + 1e-6;
        }
        let t = TILE as f64 * 0.45;
        let cand = Candidate::from_vectors((t, 0.0), (0.0, t), 1.0);
        assert!(footprint(&cand) < FOOTPRINT_FROM);
        let (_, weight) = sums_and_weights(&noise, &cand, 1);
        let folded = fold(&noise, &cand);
        let spread = |keep: &dyn Fn(f64) -> bool| {
            let picked: Vec<f32> = (0..SHIFTS)
                .filter(|&i| keep(weight[i]))
                .map(|i| folded[i])
                .collect();
            assert!(picked.len() > 200, "{} bins", picked.len());
            picked.iter().map(|v| v * v).sum::<f32>() / picked.len() as f32
        };
        let slivers = spread(&|wt| wt > 0.0 && wt < 0.2);
        let whole = spread(&|wt| wt >= 0.8);
        assert!(
            slivers < 0.5 * whole,
            "mean square of sliver bins {slivers}, of well-covered bins {whole}"
        );
    }

    /// A tile of 2-px chips, repeated over 3 x 3 tiles and area-downscaled to a third (each
    /// copy pixel the mean of 3 x 3), plus noise: folded over each pixel's footprint it
    /// lines up with the tile better than splatted at the pixels' centres alone.
    #[test]
    fn a_copy_downscaled_to_a_third_is_folded_over_its_footprint() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(17);
        let chips: Vec<f32> = (0..SHIFTS / 4)
            .map(|_| if rng.random::<bool>() { -1.0 } else { 1.0 })
            .collect();
        let tile: Vec<f32> = (0..SHIFTS)
            .map(|i| chips[(i / TILE / 2) * (TILE / 2) + (i % TILE) / 2])
            .collect();
        let side = TILE; // 3 tiles of the original, downscaled to a third
        let mut copy = Plane::zeros(side, side);
        for y in 0..side {
            for x in 0..side {
                let mut sum = 0.0;
                for (dy, dx) in (0..9).map(|i| (i / 3, i % 3)) {
                    let (oy, ox) = (
                        (3 * y + dy + TILE - 1) % TILE,
                        (3 * x + dx + TILE - 1) % TILE,
                    );
                    sum += tile[oy * TILE + ox];
                }
                let noise = rng.random::<f32>() + rng.random::<f32>() - 1.0;
                copy.data[y * side + x] = sum / 9.0 + 2.0 * noise + 1e-6;
            }
        }
        let t = TILE as f64 / 3.0;
        // Copy pixel x covers original pixels 3x - 1..3x + 1: its centre maps to 3x.
        let cand = Candidate::from_vectors((t, 0.0), (0.0, t), 1.0);
        assert_eq!(footprint(&cand), 3);
        let r = |f: &[f32]| {
            let dot: f32 = f.iter().zip(&tile).map(|(a, b)| a * b).sum();
            let norm: f32 = f.iter().map(|a| a * a).sum::<f32>().sqrt();
            dot / (norm * (SHIFTS as f32).sqrt())
        };
        let (sum, weight) = sums_and_weights(&copy, &cand, 1);
        let centres = bins_reference(&sum, &weight);
        let (spread, centred) = (r(&fold(&copy, &cand)), r(&centres));
        assert!(
            spread > 1.2 * centred,
            "correlation with the tile: {spread} over the footprint, {centred} at the centres"
        );
    }

    #[test]
    fn fixed_point_fold_matches_the_floating_point_one() {
        let mut white = whiten(&photo_like(700, 530, 4));
        // A dead band, as a border or padding leaves.
        for v in &mut white.data[..700 * 40] {
            *v = 0.0;
        }
        let t = TILE as f64;
        for (scale, deg) in [(0.73, 3.7f64), (1.31, -12.0), (0.5, 45.0), (0.31, 8.0)] {
            let (s, c) = deg.to_radians().sin_cos();
            let cand = Candidate::from_vectors(
                (scale * t * c, scale * t * s),
                (-scale * t * s * 1.02, scale * t * c * 1.02),
                1.0,
            );
            let (a, b) = (fold(&white, &cand), fold_reference(&white, &cand));
            let worst = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(
                worst < 1e-3,
                "scale {scale}, {deg} deg: largest difference {worst}"
            );
        }
    }
}
