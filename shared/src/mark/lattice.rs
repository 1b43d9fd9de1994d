//! The tile lattice (design.md section 5 step 3): the autocorrelation of the whitened copy,
//! computed from its flattened power spectrum, peaks on the lattice of the repeated tile; a
//! polar search over radius and angle, refined to a general two-vector (affine) lattice,
//! gives the geometry candidates, best first.

use std::f32::consts::SQRT_2;
use std::sync::Mutex;

use rustfft::FftPlanner;
use rustfft::num_complex::Complex32;

use crate::mark::dsp::{Fft2, box_mean};
use crate::mark::pattern::TILE;
use crate::raster::Plane;

/// Largest crop side used for the autocorrelation (the lattice is periodic: a central
/// crop holds all the geometry information, at a quarter of the FFT cost of 2048 px).
const ACF_CROP: usize = 1024;
/// Lattice radius search range: 0.2T..2.1T, i.e. copies from 1/5 of the original size up
/// to 2x upscales (design.md had 1.3T, which missed every upscale above 1.3).
const R_MIN: f32 = 0.2 * TILE as f32;
const R_MAX: f32 = 2.1 * TILE as f32;
const TANGENTIAL_PX: f32 = 3.0;
/// Half-width of the window over which the power spectrum is flattened
/// ([`flatten_power`]): 11 x 11 bins. Measured with `tracemark-bench hard` at half-widths 2,
/// 3, 5, 8 and 12: below 5 the thirds of the 2-Mpx photo lost their lattice (2/2 to 0/2),
/// above it some screenshots of the textures did.
const FLATTEN_BINS: usize = 5;
/// Lags up to this are linear (not wrapped) in the zero-padded autocorrelation.
const LINEAR_LAG: f32 = R_MAX + 8.0;
/// Polar peaks ranked again by their whole lattice's score, and of those, the ones refined.
/// Measured with `tracemark-bench hard`: on the fine textures the true lattice was missing
/// from the first 12 polar peaks, and present among the first 64, after a 1-degree turn.
const SCREENED_PEAKS: usize = 64;
const REFINED_PEAKS: usize = 12;

/// A geometry hypothesis: copy coordinates = M * original coordinates, with M a general
/// 2 x 2 linear map (scale, rotation, aspect change, shear); its columns times T are the
/// tile lattice vectors seen in the copy.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Candidate {
    /// Row-major [m00, m01, m10, m11].
    pub(crate) m: [f64; 4],
    pub(crate) score: f64,
}

impl Candidate {
    pub(crate) fn identity() -> Self {
        Candidate {
            m: [1.0, 0.0, 0.0, 1.0],
            score: f64::INFINITY,
        }
    }

    /// From the two lattice vectors in the copy (pixels).
    pub(crate) fn from_vectors(a: (f64, f64), b: (f64, f64), score: f64) -> Self {
        let t = TILE as f64;
        Candidate {
            m: [a.0 / t, b.0 / t, a.1 / t, b.1 / t],
            score,
        }
    }

    pub(crate) fn is_identity(&self) -> bool {
        self.m == [1.0, 0.0, 0.0, 1.0]
    }

    /// The inverse map, row-major: copy pixels to the fold's (original-scale) frame.
    pub(crate) fn inverse(&self) -> [f64; 4] {
        let [m00, m01, m10, m11] = self.m;
        let det = m00 * m11 - m01 * m10;
        [m11 / det, -m01 / det, -m10 / det, m00 / det]
    }

    pub(crate) fn scale(&self) -> f64 {
        (self.m[0] * self.m[3] - self.m[1] * self.m[2]).abs().sqrt()
    }

    /// Angle of the first lattice vector, radians, y pointing down.
    pub(crate) fn angle(&self) -> f64 {
        self.m[2].atan2(self.m[0])
    }

    /// Length ratio of the horizontal to the vertical lattice vector.
    pub(crate) fn aspect(&self) -> f64 {
        self.m[0].hypot(self.m[2]) / self.m[1].hypot(self.m[3]).max(1e-12)
    }

    pub(crate) fn same_as(&self, o: &Candidate) -> bool {
        let s = self.scale().max(1e-9);
        self.m
            .iter()
            .zip(&o.m)
            .all(|(x, y)| (x - y).abs() / s < 0.004)
    }
}

/// Lattice candidates from the autocorrelation of the whitened image, best first.
pub(crate) fn candidates(white: &Plane, planner: &Mutex<FftPlanner<f32>>) -> Vec<Candidate> {
    polar_search(&autocorrelation(white, planner))
}

fn autocorrelation(white: &Plane, planner: &Mutex<FftPlanner<f32>>) -> Acf {
    let (w, h) = (white.width, white.height);
    let (cw, ch) = (w.min(ACF_CROP), h.min(ACF_CROP));
    let (x0, y0) = ((w - cw) / 2, (h - ch) / 2);
    // Zero-pad by the largest searched lag so that the lags of the polar search are
    // linear, not wrapped.
    let pad = LINEAR_LAG.ceil() as usize;
    let (nx, ny) = (fast_size(cw + pad), fast_size(ch + pad));
    let mut buf = vec![Complex32::default(); nx * ny];
    for y in 0..ch {
        let src = &white.data[(y0 + y) * w + x0..(y0 + y) * w + x0 + cw];
        for (d, &s) in buf[y * nx..y * nx + cw].iter_mut().zip(src) {
            d.re = s;
        }
    }
    let fft = {
        let mut planner = planner.lock().unwrap_or_else(|e| e.into_inner());
        Fft2::new(&mut planner, nx, ny)
    };
    let mut tmp = Vec::new();
    fft.forward_to_transposed(&mut buf, &mut tmp);
    flatten_power(&mut buf, ny, nx);
    fft.inverse_from_transposed(&mut buf, &mut tmp);
    let zero = buf[0].re.max(1e-20);
    Acf {
        nx,
        ny,
        data: buf.iter().map(|c| c.re / zero).collect(),
    }
}

/// Replaces each spectrum bin by its power divided by the mean power of the
/// `(2 FLATTEN_BINS + 1)^2` bins around it (`w` x `h`, in whatever layout the spectrum is:
/// the window is symmetric). The image's own spectrum is smooth on that scale and becomes
/// flat, so its autocorrelation becomes a narrow peak at lag 0; the tile's spectrum is a
/// comb of lines, which stay lines. Measured with `tracemark-bench hard`: without it, the
/// image's own autocorrelation outranked the tile lattice on 256-px medical slices turned by
/// 1 degree (3 of 8 read, 8 of 8 with it) and in screenshots of them (0 of 8; 6 of 8).
fn flatten_power(spectrum: &mut [Complex32], w: usize, h: usize) {
    let power: Vec<f32> = spectrum.iter().map(|c| c.norm_sqr()).collect();
    let mut local = vec![0f32; power.len()];
    box_mean(&power, w, h, FLATTEN_BINS, &mut local, &mut Vec::new());
    // A floor for bins in an empty neighbourhood (a flat, zeroed image).
    let mean = power.iter().map(|&p| f64::from(p)).sum::<f64>() / power.len() as f64;
    let floor = (mean * 1e-3) as f32 + f32::MIN_POSITIVE;
    for ((c, &p), &m) in spectrum.iter_mut().zip(&power).zip(&local) {
        *c = Complex32::new(p / (m + floor), 0.0);
    }
}

/// Normalised autocorrelation, lag (dx, dy) at index (dx mod nx, dy mod ny).
struct Acf {
    nx: usize,
    ny: usize,
    data: Vec<f32>,
}

impl Acf {
    /// Bilinear sample at a real lag.
    fn at(&self, dx: f32, dy: f32) -> f32 {
        // Lags are small (within +-n): a truncation corrected for negatives is the floor,
        // without libm's call.
        let floor = |v: f32| {
            let t = v as i32 as f32;
            if t > v { t - 1.0 } else { t }
        };
        let (fx, fy) = (floor(dx), floor(dy));
        let (tx, ty) = (dx - fx, dy - fy);
        // Lags stay within +-n: wrap with a compare instead of an integer division.
        let wrap = |i: i64, n: usize| -> usize {
            let n = n as i64;
            let i = if i < 0 { i + n } else { i };
            (if i >= n { i - n } else { i }) as usize
        };
        let ix = wrap(fx as i64, self.nx);
        let iy = wrap(fy as i64, self.ny);
        let ix1 = if ix + 1 == self.nx { 0 } else { ix + 1 };
        let iy1 = if iy + 1 == self.ny { 0 } else { iy + 1 };
        let d = &self.data;
        let a = d[iy * self.nx + ix] * (1.0 - tx) + d[iy * self.nx + ix1] * tx;
        let b = d[iy1 * self.nx + ix] * (1.0 - tx) + d[iy1 * self.nx + ix1] * tx;
        a * (1.0 - ty) + b * ty
    }

    /// Peak score at a lag: the sample minus the mean of the samples 3 px away along the
    /// circle through it, which cancels the radial ridges of borders and the JPEG grid.
    fn peak(&self, dx: f32, dy: f32) -> f32 {
        let r = (dx * dx + dy * dy).sqrt().max(1.0);
        let (tx, ty) = (-dy / r * TANGENTIAL_PX, dx / r * TANGENTIAL_PX);
        self.at(dx, dy) - 0.5 * (self.at(dx + tx, dy + ty) + self.at(dx - tx, dy - ty))
    }

    /// Sum of peak scores over the lattice points of (r, theta) within the usable lags,
    /// divided by sqrt(points) (design.md section 5 step 3).
    fn lattice_score(&self, r: f64, theta: f64) -> f64 {
        let (s, c) = theta.sin_cos();
        self.lattice_score_vectors((r * c, r * s), (-r * s, r * c))
    }

    /// [`Acf::lattice_score`] for a general lattice with basis vectors `a` and `b`.
    fn lattice_score_vectors(&self, (ax, ay): (f64, f64), (bx, by): (f64, f64)) -> f64 {
        let r = ax.hypot(ay).min(bx.hypot(by));
        let lim = ((self.nx.min(self.ny) / 2) as f64 - 4.0)
            .min(6.0 * r)
            .max(r * 1.5);
        let kmax = (lim / r).ceil() as i64;
        let (mut sum, mut n) = (0f64, 0usize);
        for l in 0..=kmax {
            for k in -kmax..=kmax {
                if l == 0 && k <= 0 {
                    continue; // half plane: the ACF is symmetric
                }
                let (px, py) = (k as f64 * ax + l as f64 * bx, k as f64 * ay + l as f64 * by);
                if px * px + py * py > lim * lim {
                    continue;
                }
                sum += f64::from(self.peak(px as f32, py as f32));
                n += 1;
            }
        }
        if n == 0 { 0.0 } else { sum / (n as f64).sqrt() }
    }
}

/// Search radii: 0.5 px steps up to one tile, 1 px beyond (ACF peaks widen with upscaling).
fn radius(i: usize) -> f32 {
    let fine = ((TILE as f32 - R_MIN) / 0.5) as usize;
    if i <= fine {
        R_MIN + 0.5 * i as f32
    } else {
        R_MIN + 0.5 * fine as f32 + (i - fine) as f32
    }
}

fn polar_search(acf: &Acf) -> Vec<Candidate> {
    let r_steps = (0..).take_while(|&i| radius(i) <= R_MAX).count();
    let a_steps = 360; // 0.25 degree steps over the 90 degrees of a square lattice
    let mut score = vec![0f32; r_steps * a_steps];
    for i in 0..r_steps {
        let r = radius(i);
        for j in 0..a_steps {
            let t = (j as f32 * 0.25).to_radians();
            let (s, c) = t.sin_cos();
            let first = acf.peak(r * c, r * s) + acf.peak(-r * s, r * c);
            score[i * a_steps + j] = if r * SQRT_2 <= LINEAR_LAG {
                // With the diagonals a + b and b - a of the same lattice: on a fine
                // texture downscaled to 0.75, the two basis points alone left the true
                // lattice out of the first hundred peaks.
                let (dx, dy) = (r * (c - s), r * (s + c));
                (first + acf.peak(dx, dy) + acf.peak(-dy, dx)) / 2.0
            } else {
                first / SQRT_2
            };
        }
    }
    // Local maxima over +-2 radius steps and +-2 angle steps (angles wrap at 90 degrees).
    let mut peaks = Vec::new();
    for i in 0..r_steps {
        for j in 0..a_steps {
            let v = score[i * a_steps + j];
            if v <= 0.0 {
                continue;
            }
            let mut is_max = true;
            'n: for di in -2i64..=2 {
                let ii = i as i64 + di;
                if ii < 0 || ii >= r_steps as i64 {
                    continue;
                }
                for dj in -2i64..=2 {
                    if di == 0 && dj == 0 {
                        continue;
                    }
                    let jj = (j as i64 + dj).rem_euclid(a_steps as i64) as usize;
                    let u = score[ii as usize * a_steps + jj];
                    if u > v || (u == v && (ii as usize, jj) < (i, j)) {
                        is_max = false;
                        break 'n;
                    }
                }
            }
            if is_max {
                peaks.push((v, radius(i), j as f32 * 0.25));
            }
        }
    }
    peaks.sort_by(|a, b| b.0.total_cmp(&a.0));
    // The best polar peaks are ranked again by the whole lattice's score (at the best of
    // the 3 x 3 half-steps around each), and only the best of those are refined.
    peaks.truncate(SCREENED_PEAKS);
    let mut peaks: Vec<(f32, f32, f32)> = peaks
        .iter()
        .map(|&(_, r, deg)| {
            let mut best = (f32::MIN, r, deg);
            for i in -1..=1 {
                for j in -1..=1 {
                    let (rr, dd) = (r + 0.25 * i as f32, deg + 0.125 * j as f32);
                    let s = acf.lattice_score(f64::from(rr), f64::from(dd).to_radians()) as f32;
                    if s > best.0 {
                        best = (s, rr, dd);
                    }
                }
            }
            best
        })
        .collect();
    peaks.sort_by(|a, b| b.0.total_cmp(&a.0));
    peaks.truncate(REFINED_PEAKS);
    let mut out: Vec<Candidate> = peaks
        .iter()
        .map(|&(_, r, deg)| {
            refine_affine(acf, refine(acf, f64::from(r), f64::from(deg).to_radians()))
        })
        .collect();
    out.sort_by(|a, b| b.score.total_cmp(&a.score));
    out
}

/// Refines (r, theta) on the higher-order lattice points in two passes, each over
/// +-10 steps of scale and angle.
fn refine(acf: &Acf, r: f64, theta: f64) -> Candidate {
    let (mut br, mut bt) = (r, theta);
    let mut best = acf.lattice_score(br, bt);
    for (scale_step, angle_step_deg, n) in [(0.001, 0.05, 10i32), (0.0001, 0.005, 10)] {
        let (r0, t0) = (br, bt);
        let at = |i: i32, j: i32| {
            (
                r0 * (1.0 + scale_step * f64::from(i)),
                t0 + (angle_step_deg * f64::from(j)).to_radians(),
            )
        };
        let ((i, j), s) = maximise_alternating(best, n, n, |i, j| {
            let (rr, tt) = at(i, j);
            acf.lattice_score(rr, tt)
        });
        best = s;
        (br, bt) = at(i, j);
    }
    // Map the lattice angle into (-45, 45] degrees; quarter turns are resolved by the
    // orientation search.
    let mut deg = bt.to_degrees().rem_euclid(90.0);
    if deg > 45.0 {
        deg -= 90.0;
    }
    let t = deg.to_radians();
    let (sn, cs) = t.sin_cos();
    Candidate::from_vectors((br * cs, br * sn), (-br * sn, br * cs), best)
}

/// Refines the two lattice vectors independently (two rounds over both), so that aspect
/// changes and shear are followed; each vector moves by up to 12 % in length and 1.5
/// degrees in angle.
fn refine_affine(acf: &Acf, c: Candidate) -> Candidate {
    let t = TILE as f64;
    let mut v = [(c.m[0] * t, c.m[2] * t), (c.m[1] * t, c.m[3] * t)];
    let mut best = acf.lattice_score_vectors(v[0], v[1]);
    for _ in 0..2 {
        for which in 0..2 {
            for (len_step, ang_step_deg, nl, na) in [(0.015, 0.5, 8i32, 3i32), (0.0025, 0.1, 6, 5)]
            {
                let (x0, y0) = v[which];
                let (len0, ang0) = (x0.hypot(y0), y0.atan2(x0));
                let trial = |i: i32, j: i32| {
                    let len = len0 * (1.0 + len_step * f64::from(i));
                    let ang = ang0 + (ang_step_deg * f64::from(j)).to_radians();
                    let mut trial = v;
                    trial[which] = (len * ang.cos(), len * ang.sin());
                    trial
                };
                let ((i, j), s) = maximise_alternating(best, nl, na, |i, j| {
                    let tv = trial(i, j);
                    acf.lattice_score_vectors(tv[0], tv[1])
                });
                best = s;
                v = trial(i, j);
            }
        }
    }
    Candidate::from_vectors(v[0], v[1], best)
}

/// Maximises `score(i, j)` over the box `|i| <= ni`, `|j| <= nj` from `(0, 0)`, whose
/// score is `best`, by alternating line searches (all of `i` at the best `j`, then all of
/// `j` at the best `i`) until a round moves nothing, at most four rounds. The lattice score
/// is a sum of peaks whose errors in the two parameters are nearly orthogonal (radial and
/// tangential), so this finds the grid's maximum with a fifth to a quarter of the full
/// grid's evaluations. Only strict improvements move, as in a grid scan.
pub(crate) fn maximise_alternating(
    mut best: f64,
    ni: i32,
    nj: i32,
    mut score: impl FnMut(i32, i32) -> f64,
) -> ((i32, i32), f64) {
    let (mut bi, mut bj) = (0, 0);
    for _ in 0..4 {
        let before = (bi, bj);
        // The current point's score is `best`: each line skips it.
        for i in (-ni..=ni).filter(|&i| i != before.0) {
            let s = score(i, bj);
            if s > best {
                best = s;
                bi = i;
            }
        }
        let j0 = bj;
        for j in (-nj..=nj).filter(|&j| j != j0) {
            let s = score(bi, j);
            if s > best {
                best = s;
                bj = j;
            }
        }
        if (bi, bj) == before {
            break;
        }
    }
    ((bi, bj), best)
}

/// The smallest n >= m whose only prime factors are 2, 3 and 5 (fast FFT sizes).
fn fast_size(m: usize) -> usize {
    let mut n = m.max(1);
    loop {
        let mut k = n;
        for p in [2, 3, 5] {
            while k.is_multiple_of(p) {
                k /= p;
            }
        }
        if k == 1 {
            return n;
        }
        n += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alternating_search_finds_the_grid_maximum_and_never_moves_to_a_worse_point() {
        // A product of two bumps with a slight tilt, like a lattice point's radial and
        // tangential errors: the maximum at (3, -4) inside the box is found.
        let f = |i: i32, j: i32| {
            let (di, dj) = (f64::from(i - 3), f64::from(j + 4));
            (-0.1 * di * di).exp() * (-0.05 * dj * dj).exp() + 0.001 * f64::from(i * j)
        };
        let mut grid_best = ((0, 0), f64::MIN);
        for i in -10..=10 {
            for j in -10..=10 {
                if f(i, j) > grid_best.1 {
                    grid_best = ((i, j), f(i, j));
                }
            }
        }
        assert_eq!(maximise_alternating(f(0, 0), 10, 10, f), grid_best);
        // Nothing better than the start: it stays, with its score.
        let peak_at_start = |i: i32, j: i32| -f64::from(i * i + j * j);
        assert_eq!(
            maximise_alternating(0.0, 5, 5, peak_at_start),
            ((0, 0), 0.0)
        );
        // The box bounds the search.
        let outside = |i: i32, j: i32| f64::from(i + j);
        assert_eq!(maximise_alternating(0.0, 2, 3, outside), ((2, 3), 5.0));
    }

    #[test]
    fn flattening_levels_a_smooth_spectrum_and_keeps_its_lines() {
        // A steep smooth spectrum (an image's: power falling with frequency) with two
        // lines (a periodic mark's) weaker than the spectrum near DC.
        let (w, h) = (64, 48);
        let mut spec: Vec<Complex32> = (0..w * h)
            .map(|k| {
                let (x, y) = ((k % w) as f32, (k / w) as f32);
                Complex32::new((1000.0 / (1.0 + 0.05 * (x * x + y * y))).sqrt(), 0.0)
            })
            .collect();
        let line = |x: usize, y: usize| y * w + x;
        for (x, y) in [(30, 20), (40, 10)] {
            let p = spec[line(x, y)].norm_sqr() + 300.0;
            spec[line(x, y)] = Complex32::new(p.sqrt(), 0.0);
        }
        let before_ratio = spec[line(30, 20)].norm_sqr() / spec[line(2, 2)].norm_sqr();
        flatten_power(&mut spec, w, h);
        for (x, y) in [(30, 20), (40, 10)] {
            assert!(
                spec[line(x, y)].re > 10.0,
                "line at ({x}, {y}): {}",
                spec[line(x, y)].re
            );
        }
        // Away from the lines and the edges (where the window is cut), the flattened
        // spectrum is about 1.
        for (x, y) in [(2, 2), (20, 30), (50, 40), (12, 8)] {
            let v = spec[line(x, y)].re;
            assert!((0.5..2.0).contains(&v), "({x}, {y}): {v}");
        }
        assert!(
            before_ratio < 0.5,
            "the test's line must be weaker than the low frequencies: {before_ratio}"
        );
        assert!(spec.iter().all(|c| c.im == 0.0 && c.re.is_finite()));
    }

    #[test]
    fn fast_sizes() {
        assert_eq!(fast_size(1031), 1080);
        assert_eq!(fast_size(7), 8);
    }
}
