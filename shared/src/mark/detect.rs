//! Blind detection (design.md section 5): whiten, find the tile lattice in the
//! autocorrelation (scale and rotation), fold every candidate geometry modulo the tile,
//! correlate the fold with the sync pattern by FFT (translation, orientation, inversion),
//! normalise per chip phase, and decode the payload by soft Viterbi behind a CRC.

use std::sync::Mutex;

use rustfft::FftPlanner;
use rustfft::num_complex::Complex32;

use crate::coding::{self, CODED_BITS};
use crate::error::{Error, Result};
use crate::key::SecretKey;
use crate::mark::dsp::{Fft2, box_mean, shaping_kernel};
use crate::mark::pattern::{CHIP, CHIPS_PER_SIDE, KeyPatterns, N_CHIPS, TILE};
use crate::raster::Plane;
use crate::stats;

/// Smallest image side the detector examines.
pub const MIN_DETECT_SIDE: usize = 64;
/// Largest crop side used for the autocorrelation (the lattice is periodic: a central
/// crop holds all the geometry information, at a quarter of the FFT cost of 2048 px).
const ACF_CROP: usize = 1024;
/// Lattice radius search range: 0.2T..2.1T, i.e. copies from 1/5 of the original size up
/// to 2x upscales (design.md had 1.3T, which missed every upscale above 1.3).
const R_MIN: f32 = 0.2 * TILE as f32;
const R_MAX: f32 = 2.1 * TILE as f32;
const TANGENTIAL_PX: f32 = 3.0;
/// Geometry candidates verified besides the identity.
const GEOMETRY_CANDIDATES: usize = 8;
/// Orientations tried per candidate: quarter turns.
const ORIENTATIONS: usize = 4;
const SHIFTS: usize = TILE * TILE;

/// Detection settings.
#[derive(Clone, Debug, PartialEq)]
pub struct DetectOptions {
    /// Largest false-alarm probability at which a mark is claimed (default 1e-6).
    pub max_p: f64,
}

impl Default for DetectOptions {
    fn default() -> Self {
        DetectOptions { max_p: 1e-6 }
    }
}

/// The geometry under which the mark was found, relative to the stamped original.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Transform {
    /// Scale of the copy relative to the original (0.5 = downscaled by half; the geometric
    /// mean of the two axes' scales).
    pub scale: f64,
    /// Horizontal over vertical scale (1 = proportions kept; 1.1 = stretched 10 % wide).
    pub aspect: f64,
    /// Rotation of the copy in degrees, counter-clockwise on screen (the sense of image
    /// editors' "rotate left"), including quarter turns; in (-180, 180].
    pub rotation_deg: f64,
    /// Position of the tile origin in the copy's unrotated, unscaled frame, modulo 128 px.
    pub shift: [u32; 2],
    /// Whether the grey levels were inverted.
    pub inverted: bool,
}

/// What the detector found in one image.
#[derive(Clone, Debug)]
pub struct Detection {
    /// Best sync statistic (robust z, per chip phase; sign removed).
    pub z: f64,
    /// log10 of the false-alarm probability of "a mark of this key is present".
    pub log10_p: f64,
    /// Whether the mark is claimed (p <= max_p).
    pub marked: bool,
    /// The payload, when the mark is claimed and the decode passes the CRC.
    pub payload: Option<u64>,
    /// The geometry of the best candidate (meaningful when marked).
    pub transform: Transform,
    /// Geometry candidates counted in the p-value.
    pub candidates: usize,
    /// Geometry candidates actually folded (the search stops at the first confirmed one).
    pub candidates_tested: usize,
    /// Soft values of the coded bits read at the best candidate (positive = bit 0), for
    /// diagnostics such as bit-error rates before decoding.
    pub soft_bits: Vec<f32>,
    /// Matched-filter chip values (64 x 64) of the fold at the best candidate, aligned to
    /// the key's frame by the sync peak: the input of the informed per-release check
    /// ([`crate::mark::informed`]).
    pub chips: Vec<f32>,
}

impl Detection {
    /// The false-alarm probability (0 when below f64's range).
    pub fn p_value(&self) -> f64 {
        10f64.powf(self.log10_p)
    }
}

/// A detector for one key: the key's patterns and FFT plans, reused for every image.
pub struct Detector {
    patterns: KeyPatterns,
    /// Spectra (transposed layout, conjugated) of the sync template in each orientation.
    sync_spectra: Vec<Vec<Complex32>>,
    fft_tile: Fft2,
    planner: Mutex<FftPlanner<f32>>,
}

/// A geometry hypothesis: copy coordinates = M * original coordinates, with M a general
/// 2 x 2 linear map (scale, rotation, aspect change, shear); its columns times T are the
/// tile lattice vectors seen in the copy.
#[derive(Clone, Copy, Debug)]
struct Candidate {
    /// Row-major [m00, m01, m10, m11].
    m: [f64; 4],
    score: f64,
}

impl Candidate {
    fn identity() -> Self {
        Candidate {
            m: [1.0, 0.0, 0.0, 1.0],
            score: f64::INFINITY,
        }
    }

    /// From the two lattice vectors in the copy (pixels).
    fn from_vectors(a: (f64, f64), b: (f64, f64), score: f64) -> Self {
        let t = TILE as f64;
        Candidate {
            m: [a.0 / t, b.0 / t, a.1 / t, b.1 / t],
            score,
        }
    }

    fn is_identity(&self) -> bool {
        self.m == [1.0, 0.0, 0.0, 1.0]
    }

    fn scale(&self) -> f64 {
        (self.m[0] * self.m[3] - self.m[1] * self.m[2]).abs().sqrt()
    }

    /// Angle of the first lattice vector, radians, y pointing down.
    fn angle(&self) -> f64 {
        self.m[2].atan2(self.m[0])
    }

    /// Length ratio of the horizontal to the vertical lattice vector.
    fn aspect(&self) -> f64 {
        self.m[0].hypot(self.m[2]) / self.m[1].hypot(self.m[3]).max(1e-12)
    }

    fn same_as(&self, o: &Candidate) -> bool {
        let s = self.scale().max(1e-9);
        self.m
            .iter()
            .zip(&o.m)
            .all(|(x, y)| (x - y).abs() / s < 0.004)
    }
}

struct Verified {
    z: f64,
    orientation: usize,
    shift: (usize, usize),
    sign: f32,
    fold: Vec<f32>,
}

impl Detector {
    /// Derives the key's patterns and plans the tile FFTs.
    pub fn new(key: &SecretKey) -> Self {
        Self::from_patterns(KeyPatterns::new(key))
    }

    /// A detector from already derived patterns.
    pub fn from_patterns(patterns: KeyPatterns) -> Self {
        let mut planner = FftPlanner::new();
        let fft_tile = Fft2::new(&mut planner, TILE, TILE);
        let mut tmp = Vec::new();
        let mut tpl = patterns.sync_tile.clone();
        let mut sync_spectra = Vec::with_capacity(ORIENTATIONS);
        for _ in 0..ORIENTATIONS {
            let mut spec: Vec<Complex32> = tpl.iter().map(|&v| Complex32::new(v, 0.0)).collect();
            fft_tile.forward_to_transposed(&mut spec, &mut tmp);
            spec.iter_mut().for_each(|c| *c = c.conj());
            sync_spectra.push(spec);
            tpl = rotate_quarter(&tpl);
        }
        Detector {
            patterns,
            sync_spectra,
            fft_tile,
            planner: Mutex::new(planner),
        }
    }

    /// The key's patterns.
    pub fn patterns(&self) -> &KeyPatterns {
        &self.patterns
    }

    /// Blind detection on a luminance plane (8-bit display units).
    ///
    /// # Errors
    /// [`Error::TooSmall`] when a side is below [`MIN_DETECT_SIDE`].
    pub fn detect(&self, plane: &Plane, opts: &DetectOptions) -> Result<Detection> {
        let (w, h) = (plane.width, plane.height);
        if w < MIN_DETECT_SIDE || h < MIN_DETECT_SIDE {
            return Err(Error::TooSmall {
                width: w,
                height: h,
                min: MIN_DETECT_SIDE,
                what: "examine",
            });
        }
        let white = whiten(plane);
        let mut candidates = vec![Candidate::identity()];
        for c in self.lattice_candidates(&white) {
            let dup = candidates.iter().any(|d| d.same_as(&c));
            if !dup && candidates.len() <= GEOMETRY_CANDIDATES {
                candidates.push(c);
            }
        }
        // Bonferroni over every candidate the search may fold, whether or not it stops early:
        // sequential testing in a fixed order cannot raise the family-wise error.
        let n_candidates = 1 + GEOMETRY_CANDIDATES;
        let n_tests = (n_candidates * ORIENTATIONS * SHIFTS) as f64;
        let z_claim = stats::z_threshold_two_sided(opts.max_p, n_tests);

        let mut best: Option<(Candidate, Verified)> = None;
        let mut tested = 0;
        let mut payload = None;
        for c in &candidates {
            tested += 1;
            let fold = fold(&white, c);
            let v = self.verify(fold);
            let better = best.as_ref().is_none_or(|(_, b)| v.z > b.z);
            if v.z >= z_claim
                && let Some(p) = self.decode(&v)
            {
                payload = Some(p);
                best = Some((*c, v));
                break;
            }
            if better {
                best = Some((*c, v));
            }
        }
        let (c, v) = best.expect("the identity candidate is always verified");
        let log10_p = stats::log10_p_two_sided(v.z, n_tests);
        let marked = v.z >= z_claim;
        // The lattice angle is measured with y pointing down (clockwise on screen).
        let rotation = -(c.angle().to_degrees() + 90.0 * v.orientation as f64);
        Ok(Detection {
            z: v.z,
            log10_p,
            marked,
            payload: if marked { payload } else { None },
            transform: Transform {
                scale: c.scale(),
                aspect: c.aspect(),
                rotation_deg: normalise_degrees(rotation),
                shift: [v.shift.0 as u32, v.shift.1 as u32],
                inverted: v.sign < 0.0,
            },
            candidates: n_candidates,
            candidates_tested: tested,
            soft_bits: self.soft_for(&v),
            chips: self.aligned_chips(&v),
        })
    }

    /// Correlates a fold with the sync template in every orientation; returns the best peak
    /// by per-chip-phase robust z.
    fn verify(&self, fold: Vec<f32>) -> Verified {
        let mut spec: Vec<Complex32> = fold.iter().map(|&v| Complex32::new(v, 0.0)).collect();
        let mut tmp = Vec::new();
        self.fft_tile.forward_to_transposed(&mut spec, &mut tmp);
        let mut best = Verified {
            z: f64::NEG_INFINITY,
            orientation: 0,
            shift: (0, 0),
            sign: 1.0,
            fold: Vec::new(),
        };
        let mut corr = vec![Complex32::default(); SHIFTS];
        let mut class = vec![0f32; SHIFTS / 4];
        for (o, s) in self.sync_spectra.iter().enumerate() {
            for ((c, a), b) in corr.iter_mut().zip(&spec).zip(s) {
                *c = a * b;
            }
            self.fft_tile.inverse_from_transposed(&mut corr, &mut tmp);
            // Robust z per chip phase of the shift (design.md section 5 step 5).
            for phase in 0..4 {
                let (px, py) = (phase % 2, phase / 2);
                class.clear();
                for y in (py..TILE).step_by(2) {
                    for x in (px..TILE).step_by(2) {
                        class.push(corr[y * TILE + x].re);
                    }
                }
                let med = stats::median_in_place(&mut class);
                for v in class.iter_mut() {
                    *v = (*v - med).abs();
                }
                let mad = stats::median_in_place(&mut class) * 1.4826;
                if mad <= 0.0 {
                    continue;
                }
                for y in (py..TILE).step_by(2) {
                    for x in (px..TILE).step_by(2) {
                        let v = corr[y * TILE + x].re;
                        let z = f64::from((v - med) / mad);
                        if z.abs() > best.z {
                            best.z = z.abs();
                            best.orientation = o;
                            best.shift = (x, y);
                            best.sign = if z < 0.0 { -1.0 } else { 1.0 };
                        }
                    }
                }
            }
        }
        best.fold = fold;
        best
    }

    /// Soft-decodes at a verified peak: aligns the fold to the sync peak, undoes orientation
    /// and sign, applies the matched filter, then Viterbi and the CRC.
    fn decode(&self, v: &Verified) -> Option<u64> {
        coding::decode(&self.soft_for(v))
    }

    /// Soft coded bits at a verified peak.
    fn soft_for(&self, v: &Verified) -> Vec<f32> {
        self.soft_bits(&self.aligned_chips(v))
    }

    /// Matched-filter chip values of the fold aligned to the key's frame at a verified peak.
    fn aligned_chips(&self, v: &Verified) -> Vec<f32> {
        let (dx, dy) = v.shift;
        let mut aligned = vec![0f32; SHIFTS];
        for y in 0..TILE {
            for x in 0..TILE {
                aligned[y * TILE + x] = v.sign * v.fold[((y + dy) % TILE) * TILE + (x + dx) % TILE];
            }
        }
        // `aligned` matches the template rotated `orientation` quarter turns; rotating it the
        // remaining turns brings it back to the key's own frame.
        for _ in 0..(ORIENTATIONS - v.orientation) % ORIENTATIONS {
            aligned = rotate_quarter(&aligned);
        }
        matched_chips(&aligned)
    }

    /// Soft values of the coded bits from chip correlations, after removing the sync
    /// component (it is known, and would otherwise bias every bit).
    fn soft_bits(&self, chips: &[f32]) -> Vec<f32> {
        let p = &self.patterns;
        let proj: f32 = chips
            .iter()
            .zip(&p.sync)
            .map(|(c, &s)| c * f32::from(s))
            .sum::<f32>()
            / N_CHIPS as f32;
        let mut soft = vec![0f32; CODED_BITS];
        for k in 0..N_CHIPS {
            let c = chips[k] - proj * f32::from(p.sync[k]);
            soft[p.bit_of_chip[k] as usize] += c * f32::from(p.carrier[k]);
        }
        soft
    }

    /// Lattice candidates from the autocorrelation of the whitened image, best first.
    fn lattice_candidates(&self, white: &Plane) -> Vec<Candidate> {
        let acf = self.autocorrelation(white);
        polar_search(&acf)
    }

    fn autocorrelation(&self, white: &Plane) -> Acf {
        let (w, h) = (white.width, white.height);
        let (cw, ch) = (w.min(ACF_CROP), h.min(ACF_CROP));
        let (x0, y0) = ((w - cw) / 2, (h - ch) / 2);
        // Zero-pad by the largest searched lag so that the lags of the polar search are
        // linear, not wrapped.
        let pad = R_MAX.ceil() as usize + 8;
        let (nx, ny) = (fast_size(cw + pad), fast_size(ch + pad));
        let mut buf = vec![Complex32::default(); nx * ny];
        for y in 0..ch {
            let src = &white.data[(y0 + y) * w + x0..(y0 + y) * w + x0 + cw];
            for (d, &s) in buf[y * nx..y * nx + cw].iter_mut().zip(src) {
                d.re = s;
            }
        }
        let fft = {
            let mut planner = self.planner.lock().unwrap_or_else(|e| e.into_inner());
            Fft2::new(&mut planner, nx, ny)
        };
        let mut tmp = Vec::new();
        fft.forward_to_transposed(&mut buf, &mut tmp);
        for c in buf.iter_mut() {
            *c = Complex32::new(c.norm_sqr(), 0.0);
        }
        fft.inverse_from_transposed(&mut buf, &mut tmp);
        let zero = buf[0].re.max(1e-20);
        Acf {
            nx,
            ny,
            data: buf.iter().map(|c| c.re / zero).collect(),
        }
    }
}

/// Rotates a TILE x TILE array a quarter turn: out(x, y) = in(y, N-1-x).
fn rotate_quarter(t: &[f32]) -> Vec<f32> {
    let mut out = vec![0f32; SHIFTS];
    for y in 0..TILE {
        for x in 0..TILE {
            out[y * TILE + x] = t[(TILE - 1 - x) * TILE + y];
        }
    }
    out
}

/// Matched filter: blur with the shaping kernel, then sum each chip's 2 x 2 pixels.
fn matched_chips(aligned: &[f32]) -> Vec<f32> {
    let mut t = aligned.to_vec();
    crate::mark::dsp::cyclic_blur(&mut t, TILE, &shaping_kernel());
    let mut chips = vec![0f32; N_CHIPS];
    for y in 0..TILE {
        for x in 0..TILE {
            chips[(y / CHIP) * CHIPS_PER_SIDE + x / CHIP] += t[y * TILE + x];
        }
    }
    chips
}

/// Whitening (design.md section 5 step 2): residual of a 3 x 3 box, divided by its local
/// RMS over 9 x 9, clipped to +-3; flat regions (padding, black corners, borders) and 2 px
/// around them are zeroed.
pub fn whiten(plane: &Plane) -> Plane {
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
    box_mean(&smooth, w, h, 4, &mut energy, &mut col);
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
    remove_block_grid(&mut r, w, &flat);
    Plane::from_vec(w, h, r)
}

/// Removes the 8 x 8-periodic component (the mean of each of the 64 pixel phases modulo
/// 8) from live pixels. JPEG's block grid survives whitening as exactly such a component,
/// and it forms perfect square lattices at 8, 16, 24... px that outrank the mark's lattice
/// on small recompressed copies. The mark's own 8-periodic part is the mean of ~64
/// independent chips per phase: negligible.
fn remove_block_grid(r: &mut [f32], w: usize, dead: &[f32]) {
    let mut sum = [0f64; 64];
    let mut count = [0u32; 64];
    for (y, (row, drow)) in r.chunks_exact(w).zip(dead.chunks_exact(w)).enumerate() {
        let base = (y & 7) * 8;
        for (x, (&v, &d)) in row.iter().zip(drow).enumerate() {
            if d == 0.0 {
                sum[base + (x & 7)] += f64::from(v);
                count[base + (x & 7)] += 1;
            }
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
        let base = (y & 7) * 8;
        for (x, (v, &d)) in row.iter_mut().zip(drow).enumerate() {
            if d == 0.0 {
                *v -= mean[base + (x & 7)];
            }
        }
    }
}

/// Folds the whitened copy modulo the tile under a geometry hypothesis: each pixel is
/// mapped back to original coordinates and splatted bilinearly; bins are averaged.
fn fold(white: &Plane, c: &Candidate) -> Vec<f32> {
    let (w, h) = (white.width, white.height);
    let mut sum = vec![0f32; SHIFTS];
    let mut weight = vec![0f32; SHIFTS];
    let mask = TILE - 1;
    if c.is_identity() {
        for y in 0..h {
            let row = &white.data[y * w..(y + 1) * w];
            let base = (y & mask) * TILE;
            for (x, &v) in row.iter().enumerate() {
                sum[base + (x & mask)] += v;
                weight[base + (x & mask)] += 1.0;
            }
        }
    } else {
        // (u, v) = M^-1 (x, y)
        let [m00, m01, m10, m11] = c.m;
        let det = m00 * m11 - m01 * m10;
        let (a11, a12, a21, a22) = (m11 / det, -m01 / det, -m10 / det, m00 / det);
        // Offset keeps coordinates positive so that flooring is a truncation.
        let off = (TILE * 1024) as f64;
        for y in 0..h {
            let row = &white.data[y * w..(y + 1) * w];
            let yf = y as f64;
            let (mut u, mut v) = (a12 * yf + off, a22 * yf + off);
            for &val in row {
                if val != 0.0 {
                    let (ui, vi) = (u as i64, v as i64);
                    let (fu, fv) = ((u - ui as f64) as f32, (v - vi as f64) as f32);
                    let (x0, y0) = (ui as usize & mask, vi as usize & mask);
                    let (x1, y1) = ((x0 + 1) & mask, (y0 + 1) & mask);
                    let w00 = (1.0 - fu) * (1.0 - fv);
                    let w10 = fu * (1.0 - fv);
                    let w01 = (1.0 - fu) * fv;
                    let w11 = fu * fv;
                    sum[y0 * TILE + x0] += w00 * val;
                    sum[y0 * TILE + x1] += w10 * val;
                    sum[y1 * TILE + x0] += w01 * val;
                    sum[y1 * TILE + x1] += w11 * val;
                    weight[y0 * TILE + x0] += w00;
                    weight[y0 * TILE + x1] += w10;
                    weight[y1 * TILE + x0] += w01;
                    weight[y1 * TILE + x1] += w11;
                }
                u += a11;
                v += a21;
            }
        }
    }
    sum.iter()
        .zip(&weight)
        .map(|(&s, &wt)| if wt > 0.0 { s / wt } else { 0.0 })
        .collect()
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
        let (fx, fy) = (dx.floor(), dy.floor());
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
            score[i * a_steps + j] = acf.peak(r * c, r * s) + acf.peak(-r * s, r * c);
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
    peaks.truncate(12);
    let mut out: Vec<Candidate> = peaks
        .iter()
        .map(|&(_, r, deg)| {
            refine_affine(acf, refine(acf, f64::from(r), f64::from(deg).to_radians()))
        })
        .collect();
    out.sort_by(|a, b| b.score.total_cmp(&a.score));
    out
}

/// Refines (r, theta) on the higher-order lattice points in two grid passes.
fn refine(acf: &Acf, r: f64, theta: f64) -> Candidate {
    let (mut br, mut bt) = (r, theta);
    let mut best = acf.lattice_score(br, bt);
    for (scale_step, angle_step_deg, n) in [(0.001, 0.05, 10i32), (0.0001, 0.005, 10)] {
        let (r0, t0) = (br, bt);
        for i in -n..=n {
            for j in -n..=n {
                let rr = r0 * (1.0 + scale_step * f64::from(i));
                let tt = t0 + (angle_step_deg * f64::from(j)).to_radians();
                let s = acf.lattice_score(rr, tt);
                if s > best {
                    best = s;
                    br = rr;
                    bt = tt;
                }
            }
        }
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

/// Refines the two lattice vectors independently (coordinate descent, two rounds), so that
/// aspect changes and shear are followed; each vector moves by up to 12 % in length and
/// 1.5 degrees in angle.
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
                for i in -nl..=nl {
                    for j in -na..=na {
                        let len = len0 * (1.0 + len_step * f64::from(i));
                        let ang = ang0 + (ang_step_deg * f64::from(j)).to_radians();
                        let mut trial = v;
                        trial[which] = (len * ang.cos(), len * ang.sin());
                        let s = acf.lattice_score_vectors(trial[0], trial[1]);
                        if s > best {
                            best = s;
                            v = trial;
                        }
                    }
                }
            }
        }
    }
    Candidate::from_vectors(v[0], v[1], best)
}

/// Maps degrees into (-180, 180]; never returns -0.
fn normalise_degrees(d: f64) -> f64 {
    let mut d = d.rem_euclid(360.0);
    if d > 180.0 {
        d -= 360.0;
    }
    d + 0.0
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
    use crate::mark::embed::{EmbedOptions, embed};

    fn photo_like(w: usize, h: usize, seed: u64) -> Plane {
        // Smooth gradients plus mild noise: a stand-in for a natural image.
        let mut x = seed;
        Plane::from_vec(
            w,
            h,
            (0..w * h)
                .map(|i| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let (px, py) = ((i % w) as f32, (i / w) as f32);
                    let v = 128.0 + 60.0 * (px / 37.0).sin() * (py / 53.0).cos();
                    v + ((x >> 60) as f32 - 8.0)
                })
                .collect(),
        )
    }

    fn marked(plane: &Plane, key: &SecretKey, payload: u64) -> Plane {
        let p = KeyPatterns::new(key);
        let e = embed(plane, &p, payload, &EmbedOptions::default()).unwrap();
        Plane::from_vec(
            plane.width,
            plane.height,
            plane
                .data
                .iter()
                .zip(&e.delta)
                .map(|(&x, &d)| (x + f32::from(d)).clamp(0.0, 255.0).round())
                .collect(),
        )
    }

    #[test]
    fn finds_payload_in_unattacked_copy_and_abstains_without_mark() {
        let key = SecretKey::from_bytes([9; 32]);
        let det = Detector::new(&key);
        let plane = photo_like(400, 300, 1);
        let m = marked(&plane, &key, 0x1234_5678_9abc_def0);
        let d = det.detect(&m, &DetectOptions::default()).unwrap();
        assert!(d.marked, "z {}", d.z);
        assert_eq!(d.payload, Some(0x1234_5678_9abc_def0));
        let d0 = det.detect(&plane, &DetectOptions::default()).unwrap();
        assert!(!d0.marked && d0.payload.is_none(), "z {}", d0.z);
        let other = Detector::new(&SecretKey::from_bytes([10; 32]));
        let d1 = other.detect(&m, &DetectOptions::default()).unwrap();
        assert!(!d1.marked, "wrong key z {}", d1.z);
    }

    #[test]
    fn inverted_copy_is_found_with_its_sign() {
        let key = SecretKey::from_bytes([11; 32]);
        let det = Detector::new(&key);
        let m = marked(&photo_like(300, 300, 2), &key, 77);
        let inv = Plane::from_vec(300, 300, m.data.iter().map(|v| 255.0 - v).collect());
        let d = det.detect(&inv, &DetectOptions::default()).unwrap();
        assert_eq!(d.payload, Some(77));
        assert!(d.transform.inverted);
    }

    #[test]
    fn quarter_rotation_is_an_involution_after_four() {
        let t: Vec<f32> = (0..SHIFTS).map(|i| i as f32).collect();
        let mut r = t.clone();
        for _ in 0..4 {
            r = rotate_quarter(&r);
        }
        assert_eq!(r, t);
    }

    #[test]
    fn degrees_are_normalised_without_negative_zero() {
        assert_eq!(normalise_degrees(-0.0).to_bits(), 0.0f64.to_bits());
        assert_eq!(normalise_degrees(270.0), -90.0);
        assert_eq!(normalise_degrees(-180.0), 180.0);
    }

    #[test]
    fn fast_sizes() {
        assert_eq!(fast_size(1031), 1080);
        assert_eq!(fast_size(7), 8);
    }
}
