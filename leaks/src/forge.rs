//! The copy attack (issue 10, finding 1): estimate the mark of stamped copies and paste it
//! onto images their recipient never received; and the innocent images to paste onto.
//!
//! The estimate is the copy's luminance minus its 5 x 5 median (the "raw residual"), or that
//! residual folded modulo the 128-px tile from the image origin and averaged over one or
//! more copies (a "tile"). Pasting adds the estimate to every colour channel, scaled to a
//! target PSNR.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use tracemark::mark::pattern::TILE;
use tracemark::raster::{Plane, Raster, Samples};

use crate::{from_f32, to_f32};

/// A mark estimate: a plane of residual values that is repeated over the target.
#[derive(Clone, Debug)]
pub struct Estimate {
    width: usize,
    height: usize,
    data: Vec<f32>,
}

/// 5 x 5 median of a plane (edges clamped).
fn median5(p: &Plane) -> Vec<f32> {
    let (w, h) = (p.width, p.height);
    let mut out = vec![0f32; w * h];
    let mut win = [0f32; 25];
    for y in 0..h {
        for x in 0..w {
            let mut k = 0;
            for dy in -2i64..=2 {
                for dx in -2i64..=2 {
                    let yy = (y as i64 + dy).clamp(0, h as i64 - 1) as usize;
                    let xx = (x as i64 + dx).clamp(0, w as i64 - 1) as usize;
                    win[k] = p.data[yy * w + xx];
                    k += 1;
                }
            }
            win.sort_by(f32::total_cmp);
            out[y * w + x] = win[12];
        }
    }
    out
}

fn residual(copy: &Raster) -> Plane {
    let l = copy.luminance();
    let med = median5(&l);
    Plane::from_vec(
        l.width,
        l.height,
        l.data.iter().zip(&med).map(|(a, b)| a - b).collect(),
    )
}

impl Estimate {
    /// The raw residual of one copy, repeated over the target with the copy's size rounded
    /// down to whole tiles (so the pasted pattern keeps the tile phase).
    pub fn raw(copy: &Raster) -> Self {
        let r = residual(copy);
        let (w, h) = (
            (r.width / TILE * TILE).max(TILE.min(r.width)),
            (r.height / TILE * TILE).max(TILE.min(r.height)),
        );
        let mut data = Vec::with_capacity(w * h);
        for y in 0..h {
            data.extend_from_slice(&r.data[y * r.width..y * r.width + w]);
        }
        Estimate {
            width: w,
            height: h,
            data,
        }
    }

    /// The residuals of `copies` folded modulo the tile and averaged: one 128 x 128 tile.
    pub fn tile(copies: &[&Raster]) -> Self {
        let mut sum = vec![0f64; TILE * TILE];
        let mut n = vec![0u32; TILE * TILE];
        for c in copies {
            let r = residual(c);
            for y in 0..r.height {
                for x in 0..r.width {
                    let k = (y % TILE) * TILE + x % TILE;
                    sum[k] += f64::from(r.data[y * r.width + x]);
                    n[k] += 1;
                }
            }
        }
        Estimate {
            width: TILE,
            height: TILE,
            data: sum
                .iter()
                .zip(&n)
                .map(|(&s, &k)| (s / f64::from(k.max(1))) as f32)
                .collect(),
        }
    }

    /// Adds the estimate (repeated from the origin) to `target`, scaled so that the change
    /// has the PSNR `psnr_db` before rounding. Negative `sign` subtracts it (the removal
    /// attack).
    pub fn paste(&self, target: &Raster, psnr_db: f64, sign: f32) -> Raster {
        let (w, h) = (target.width, target.height);
        let at = |x: usize, y: usize| self.data[(y % self.height) * self.width + x % self.width];
        let mut power = 0f64;
        for y in 0..h {
            for x in 0..w {
                power += f64::from(at(x, y)).powi(2);
            }
        }
        let rms = (power / (w * h) as f64).sqrt().max(1e-9);
        let want = 255.0 / 10f64.powf(psnr_db / 20.0);
        let gain = (want / rms) as f32 * sign;
        let c = target.channels;
        let cc = target.colour_channels();
        let mut v = to_f32(target);
        for y in 0..h {
            for x in 0..w {
                let d = gain * at(x, y);
                for k in 0..cc {
                    v[(y * w + x) * c + k] += d;
                }
            }
        }
        from_f32(w, h, c, &v)
    }
}

fn grey(w: usize, h: usize, f: impl Fn(usize, usize) -> f32) -> Raster {
    let mut v = Vec::with_capacity(w * h);
    for y in 0..h {
        for x in 0..w {
            v.push(f(x, y).round().clamp(0.0, 255.0) as u8);
        }
    }
    Raster {
        width: w,
        height: h,
        channels: 1,
        samples: Samples::U8(v),
    }
}

/// Synthetic innocent images of kinds a forger might use, `side x side` px: a page of text,
/// uniform noise, a flat grey image, an application screenshot, and a smooth gradient.
pub fn synthetic_innocents(side: usize, seed: u64) -> Vec<(&'static str, Raster)> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    // Text: dark glyph-like strokes in lines on white.
    let mut ink = vec![false; side * side];
    let mut y = 12;
    while y + 14 < side {
        let mut x = 10;
        while x + 10 < side {
            let gw = 4 + (rng.next_u32() % 5) as usize;
            let gh = 6 + (rng.next_u32() % 5) as usize;
            for yy in y + 10 - gh.min(10)..y + 10 {
                for xx in x..(x + gw).min(side) {
                    if rng.next_u32() % 3 != 0 {
                        ink[yy * side + xx] = true;
                    }
                }
            }
            x += gw + 1 + if rng.next_u32() % 5 == 0 { 6 } else { 0 };
        }
        y += 18;
    }
    let text = grey(
        side,
        side,
        |x, y| if ink[y * side + x] { 20.0 } else { 245.0 },
    );
    let noise_vals: Vec<f32> = (0..side * side)
        .map(|_| (rng.next_u32() % 256) as f32)
        .collect();
    let noise = grey(side, side, |x, y| noise_vals[y * side + x]);
    let flat = grey(side, side, |_, _| 128.0);
    // Screenshot: title bar, side panel, buttons, a content area with list rows.
    let ui = grey(side, side, |x, y| {
        if y < 28 {
            60.0
        } else if x < side / 4 {
            if (y / 24) % 2 == 0 { 225.0 } else { 235.0 }
        } else if y > side - 40 && (x / 90) % 2 == 0 {
            90.0
        } else if (y - 28) % 32 < 2 {
            200.0
        } else {
            250.0
        }
    });
    let gradient = grey(side, side, |x, y| {
        40.0 + 170.0 * (x + y) as f32 / (2 * side) as f32
    });
    vec![
        ("text", text),
        ("noise", noise),
        ("flat_grey", flat),
        ("ui_screenshot", ui),
        ("gradient", gradient),
    ]
}
