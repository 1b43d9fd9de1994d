//! The neutral in-memory image that crosses from I/O into the maths.
//!
//! A [`Raster`] stores interleaved 8- or 16-bit samples (grey, grey+alpha, RGB, RGBA).
//! The mark lives in display luminance: [`Raster::luminance`] gives it as a [`Plane`] in
//! 8-bit display units (0..=255, fractional for 16-bit), and [`Raster::apply_delta`] adds an
//! integer luminance change to every colour channel alike, which changes Y by the same
//! amount and leaves the chroma differences (B-Y, R-Y) untouched. Alpha is never changed.

use crate::simd::avx2_kernel;

/// Sample storage.
#[derive(Clone, Debug, PartialEq)]
pub enum Samples {
    /// 8 bits per sample.
    U8(Vec<u8>),
    /// 16 bits per sample.
    U16(Vec<u16>),
}

/// An interleaved image.
#[derive(Clone, Debug, PartialEq)]
pub struct Raster {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Samples per pixel: 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA.
    pub channels: usize,
    /// The samples, row-major, interleaved.
    pub samples: Samples,
}

/// A single-channel f32 image (luminance in display units, or any derived map).
#[derive(Clone, Debug, PartialEq)]
pub struct Plane {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Row-major values.
    pub data: Vec<f32>,
}

impl Plane {
    /// A plane of zeros.
    pub fn zeros(width: usize, height: usize) -> Self {
        Plane {
            width,
            height,
            data: vec![0.0; width * height],
        }
    }

    /// Wraps row-major data.
    ///
    /// # Panics
    /// When `data.len() != width * height`.
    pub fn from_vec(width: usize, height: usize, data: Vec<f32>) -> Self {
        assert_eq!(data.len(), width * height, "plane size");
        Plane {
            width,
            height,
            data,
        }
    }
}

const LUMA: [f32; 3] = [0.299, 0.587, 0.114];

impl Raster {
    /// Number of colour (non-alpha) channels: 1 or 3.
    pub fn colour_channels(&self) -> usize {
        if self.channels >= 3 { 3 } else { 1 }
    }

    /// Whether the samples are 16-bit.
    pub fn is_16bit(&self) -> bool {
        matches!(self.samples, Samples::U16(_))
    }

    fn scale(&self) -> f32 {
        if self.is_16bit() { 1.0 / 257.0 } else { 1.0 }
    }

    /// Luminance in 8-bit display units (BT.601 weights for colour).
    pub fn luminance(&self) -> Plane {
        self.luminance_window(0, 0, self.width, self.height)
    }

    /// [`Raster::luminance`] of the `w x h` window at (`x0`, `y0`) only: a very large image
    /// is examined in a window without its whole plane in float.
    ///
    /// # Panics
    /// When the window is not inside the raster.
    pub fn luminance_window(&self, x0: usize, y0: usize, w: usize, h: usize) -> Plane {
        assert!(
            x0 + w <= self.width && y0 + h <= self.height,
            "window inside the raster"
        );
        let mut data = Vec::with_capacity(w * h);
        self.append_luminance((x0, y0, w, h), &mut data);
        Plane::from_vec(w, h, data)
    }

    /// Appends the luminance of rows `y0..y0 + h` ([`Raster::luminance`]) to `out`: a plane
    /// built band by band, each band used while it is still in cache.
    ///
    /// # Panics
    /// When the rows are not inside the raster.
    pub(crate) fn append_luminance_rows(&self, y0: usize, h: usize, out: &mut Vec<f32>) {
        assert!(y0 + h <= self.height, "rows inside the raster");
        self.append_luminance((0, y0, self.width, h), out);
    }

    /// Appends the luminance of the window `(x0, y0, w, h)`, row by row, to `out`.
    fn append_luminance(&self, window: (usize, usize, usize, usize), out: &mut Vec<f32>) {
        let s = self.scale();
        match &self.samples {
            Samples::U8(v) => luminance_u8(v, self.channels, self.width, window, s, out),
            Samples::U16(v) => luminance_u16(v, self.channels, self.width, window, s, out),
        }
    }

    /// Adds `delta` (8-bit display levels, one per pixel) to every colour channel,
    /// clipping to the sample range; 16-bit samples get `delta * 257`.
    ///
    /// # Panics
    /// When `delta.len()` is not the pixel count.
    pub fn apply_delta(&mut self, delta: &[i16]) {
        *self = self.with_delta(delta);
    }

    /// A copy of the raster with `delta` added as [`Raster::apply_delta`] adds it, written
    /// in one pass (no copy to overwrite).
    ///
    /// # Panics
    /// When `delta.len() != width * height`.
    pub fn with_delta(&self, delta: &[i16]) -> Raster {
        assert_eq!(delta.len(), self.width * self.height, "delta size");
        let samples = match &self.samples {
            Samples::U8(v) => Samples::U8(add_delta_u8(v, self.channels, delta)),
            Samples::U16(v) => Samples::U16(add_delta_u16(v, self.channels, delta)),
        };
        Raster { samples, ..*self }
    }

    /// PSNR in dB of `self` against `reference` over the colour channels, with the sample
    /// type's peak (255 or 65535). `f64::INFINITY` when identical.
    ///
    /// # Panics
    /// When the two rasters differ in shape or sample type.
    pub fn psnr_db(&self, reference: &Raster) -> f64 {
        assert_eq!(
            (self.width, self.height, self.channels),
            (reference.width, reference.height, reference.channels)
        );
        let (c, cc) = (self.channels, self.colour_channels());
        let (sum, peak) = match (&self.samples, &reference.samples) {
            (Samples::U8(a), Samples::U8(b)) => (sq_err(a, b, c, cc), 255.0),
            (Samples::U16(a), Samples::U16(b)) => (sq_err(a, b, c, cc), 65535.0),
            _ => panic!("psnr of rasters with different sample types"),
        };
        let mse = sum / (self.width * self.height * cc) as f64;
        if mse == 0.0 {
            f64::INFINITY
        } else {
            10.0 * (peak * peak / mse).log10()
        }
    }
}

fn sq_err<T: Copy + Into<f64>>(a: &[T], b: &[T], c: usize, cc: usize) -> f64 {
    a.chunks_exact(c)
        .zip(b.chunks_exact(c))
        .map(|(p, q)| {
            (0..cc)
                .map(|i| {
                    let d = p[i].into() - q[i].into();
                    d * d
                })
                .sum::<f64>()
        })
        .sum()
}

/// Mean SSIM of two planes (display units, peak 255), with 8x8 windows on a 4-px grid
/// (Wang et al. 2004 constants K1 = 0.01, K2 = 0.03).
///
/// # Panics
/// When the planes differ in size.
pub fn ssim(a: &Plane, b: &Plane) -> f64 {
    assert_eq!((a.width, a.height), (b.width, b.height));
    let (c1, c2) = ((0.01f64 * 255.0).powi(2), (0.03f64 * 255.0).powi(2));
    let (w, h) = (a.width, a.height);
    let mut total = 0.0;
    let mut count = 0usize;
    let mut y = 0;
    while y + 8 <= h {
        let mut x = 0;
        while x + 8 <= w {
            let (mut sa, mut sb, mut saa, mut sbb, mut sab) = (0.0f64, 0.0, 0.0, 0.0, 0.0);
            for yy in y..y + 8 {
                for xx in x..x + 8 {
                    let (p, q) = (
                        f64::from(a.data[yy * w + xx]),
                        f64::from(b.data[yy * w + xx]),
                    );
                    sa += p;
                    sb += q;
                    saa += p * p;
                    sbb += q * q;
                    sab += p * q;
                }
            }
            let n = 64.0;
            let (ma, mb) = (sa / n, sb / n);
            let va = (saa / n - ma * ma).max(0.0);
            let vb = (sbb / n - mb * mb).max(0.0);
            let cov = sab / n - ma * mb;
            total += ((2.0 * ma * mb + c1) * (2.0 * cov + c2))
                / ((ma * ma + mb * mb + c1) * (va + vb + c2));
            count += 1;
            x += 4;
        }
        y += 4;
    }
    if count == 0 {
        1.0
    } else {
        total / count as f64
    }
}

avx2_kernel! {
    /// [`luminance_rows`] of 8-bit samples.
    fn luminance_u8(v: &[u8], channels: usize, width: usize, window: (usize, usize, usize, usize), s: f32, out: &mut Vec<f32>) -> () = luminance_rows
}

avx2_kernel! {
    /// [`luminance_rows`] of 16-bit samples.
    fn luminance_u16(v: &[u16], channels: usize, width: usize, window: (usize, usize, usize, usize), s: f32, out: &mut Vec<f32>) -> () = luminance_rows
}

/// Luminance of the window `(x0, y0, w, h)` of interleaved samples with `channels` per
/// pixel and rows `width` pixels long, appended to `out`: one loop per channel count, so
/// each pixel's samples are fixed-size.
#[inline(always)]
fn luminance_rows<T: Copy + Into<f32>>(
    v: &[T],
    channels: usize,
    width: usize,
    window: (usize, usize, usize, usize),
    s: f32,
    out: &mut Vec<f32>,
) {
    #[inline(always)]
    fn rows<T: Copy + Into<f32>, const C: usize>(
        v: &[T],
        width: usize,
        (x0, y0, w, h): (usize, usize, usize, usize),
        s: f32,
        out: &mut Vec<f32>,
    ) {
        #[inline(always)]
        fn luma<T: Copy + Into<f32>, const C: usize>(p: &[T], s: f32) -> f32 {
            if C >= 3 {
                (LUMA[0] * p[0].into() + LUMA[1] * p[1].into() + LUMA[2] * p[2].into()) * s
            } else {
                p[0].into() * s
            }
        }
        for y in y0..y0 + h {
            let row = &v[(y * width + x0) * C..(y * width + x0 + w) * C];
            let start = out.len();
            out.resize(start + w, 0.0);
            for (o, p) in out[start..].iter_mut().zip(row.chunks_exact(C)) {
                *o = luma::<T, C>(p, s);
            }
        }
    }
    match channels {
        1 => rows::<T, 1>(v, width, window, s, out),
        2 => rows::<T, 2>(v, width, window, s, out),
        3 => rows::<T, 3>(v, width, window, s, out),
        _ => rows::<T, 4>(v, width, window, s, out),
    }
}

avx2_kernel! {
    /// 8-bit samples plus a luminance delta ([`Raster::with_delta`]).
    fn add_delta_u8(v: &[u8], channels: usize, delta: &[i16]) -> Vec<u8> = add_delta_u8_portable
}

#[inline(always)]
fn add_delta_u8_portable(v: &[u8], channels: usize, delta: &[i16]) -> Vec<u8> {
    // In i16 (twice the lanes of i32): a sample is at least 0, so the saturating sum
    // clamps to the same value as the exact one.
    add_delta(v, channels, delta, |s, d| {
        i16::from(s).saturating_add(d).clamp(0, 255) as u8
    })
}

avx2_kernel! {
    /// 16-bit samples plus a luminance delta in 8-bit units ([`Raster::with_delta`]).
    fn add_delta_u16(v: &[u16], channels: usize, delta: &[i16]) -> Vec<u16> = add_delta_u16_portable
}

#[inline(always)]
fn add_delta_u16_portable(v: &[u16], channels: usize, delta: &[i16]) -> Vec<u16> {
    add_delta(v, channels, delta, |s, d| {
        (i32::from(s) + 257 * i32::from(d)).clamp(0, 65535) as u16
    })
}

/// Interleaved samples with `add(sample, d)` applied to the colour channels of each pixel
/// (alpha copied): one loop per channel count.
#[inline(always)]
fn add_delta<T: Copy>(
    v: &[T],
    channels: usize,
    delta: &[i16],
    add: impl Fn(T, i16) -> T,
) -> Vec<T> {
    #[inline(always)]
    fn pixels<T: Copy, const C: usize>(
        v: &[T],
        delta: &[i16],
        add: impl Fn(T, i16) -> T,
    ) -> Vec<T> {
        let cc = if C >= 3 { 3 } else { 1 };
        // Blocks of pixels, appended as they are added (not a zeroed output written over:
        // that would write every sample twice). Each block's deltas are first spread to its
        // samples (0 on alpha, where `add` is the identity), so that the additions run over
        // contiguous samples, which vector units do 16 at a time, instead of through the
        // pixels' interleave.
        const BLOCK: usize = 64;
        let mut out = Vec::with_capacity(v.len());
        let mut spread = [[0i16; C]; BLOCK];
        for (p, d) in v.chunks(BLOCK * C).zip(delta.chunks(BLOCK)) {
            for (s, &d) in spread.iter_mut().zip(d) {
                s[..cc].fill(d);
            }
            out.extend(
                p.iter()
                    .zip(spread.as_flattened())
                    .map(|(&p, &d)| add(p, d)),
            );
        }
        out
    }
    match channels {
        1 => pixels::<T, 1>(v, delta, add),
        2 => pixels::<T, 2>(v, delta, add),
        3 => pixels::<T, 3>(v, delta, add),
        _ => pixels::<T, 4>(v, delta, add),
    }
}

/// Random `w x h` rasters with `channels` samples per pixel: one 8-bit, one 16-bit.
#[cfg(test)]
pub(crate) fn random_rasters(
    rng: &mut rand_chacha::ChaCha8Rng,
    w: usize,
    h: usize,
    channels: usize,
) -> [Raster; 2] {
    use rand::RngExt;
    let n = w * h * channels;
    let u8s: Vec<u8> = (0..n).map(|_| rng.random()).collect();
    let u16s: Vec<u16> = (0..n).map(|_| rng.random()).collect();
    [Samples::U8(u8s), Samples::U16(u16s)].map(|samples| Raster {
        width: w,
        height: h,
        channels,
        samples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The per-sample definitions the fast loops must match.
    #[test]
    fn luminance_and_delta_match_their_definitions() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for channels in 1..=4 {
            for (w, h) in [(1, 1), (67, 5), (130, 3)] {
                // Mostly small changes; every seventh at or near the ends of i16, where the
                // 8-bit sum saturates.
                let delta: Vec<i16> = (0..w * h)
                    .map(|i| match i % 7 {
                        3 => [i16::MIN, i16::MAX, -32_000, 32_000][i % 4],
                        _ => rng.random_range(-300..300),
                    })
                    .collect();
                for r in random_rasters(&mut rng, w, h, channels) {
                    let (cc, wide) = (r.colour_channels(), r.is_16bit());
                    let get = |r: &Raster, i: usize| match &r.samples {
                        Samples::U8(v) => i32::from(v[i]),
                        Samples::U16(v) => i32::from(v[i]),
                    };
                    let marked = r.with_delta(&delta);
                    let luma = r.luminance();
                    for (p, &d) in delta.iter().enumerate() {
                        for k in 0..channels {
                            let i = p * channels + k;
                            let want = if k >= cc {
                                get(&r, i)
                            } else if wide {
                                (get(&r, i) + 257 * i32::from(d)).clamp(0, 65535)
                            } else {
                                (get(&r, i) + i32::from(d)).clamp(0, 255)
                            };
                            assert_eq!(get(&marked, i), want, "{channels} channels, {w}x{h}");
                        }
                        let s = if wide { 1.0 / 257.0 } else { 1.0 };
                        let x = |k| get(&r, p * channels + k) as f32;
                        let want = if cc == 3 {
                            (LUMA[0] * x(0) + LUMA[1] * x(1) + LUMA[2] * x(2)) * s
                        } else {
                            x(0) * s
                        };
                        assert_eq!(luma.data[p].to_bits(), want.to_bits());
                    }
                }
            }
        }
    }

    #[test]
    fn delta_keeps_chroma_and_alpha() {
        let mut r = Raster {
            width: 2,
            height: 1,
            channels: 4,
            samples: Samples::U8(vec![100, 50, 20, 7, 250, 10, 10, 9]),
        };
        r.apply_delta(&[3, 10]);
        // Equal change on R, G, B; alpha unchanged; clipping at 255.
        assert_eq!(r.samples, Samples::U8(vec![103, 53, 23, 7, 255, 20, 20, 9]));
    }

    #[test]
    fn sixteen_bit_luminance_is_in_display_units() {
        let r = Raster {
            width: 1,
            height: 1,
            channels: 1,
            samples: Samples::U16(vec![65535]),
        };
        assert!((r.luminance().data[0] - 255.0).abs() < 1e-3);
    }

    #[test]
    fn ssim_of_identical_is_one_and_drops_with_noise() {
        let a = Plane::from_vec(16, 16, (0..256).map(|i| (i % 37) as f32 * 5.0).collect());
        assert!((ssim(&a, &a) - 1.0).abs() < 1e-9);
        let mut b = a.clone();
        for (i, v) in b.data.iter_mut().enumerate() {
            *v += if i % 2 == 0 { 20.0 } else { -20.0 };
        }
        assert!(ssim(&a, &b) < 0.95);
    }
}
