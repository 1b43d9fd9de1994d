//! One seeded synthetic test image for unit tests, doc examples and benchmarks (after
//! RustFFT's shared test signals): smooth gradients like a natural image's, plus mild
//! seeded noise. Pure and deterministic: the same seed gives the same image.

use crate::mark::embed::{EmbedOptions, embed};
use crate::mark::keystone;
use crate::mark::pattern::KeyPatterns;
use crate::raster::{Plane, Raster, Samples};

/// A `w x h` luminance plane in 8-bit display units: a smooth sinusoidal scene of amplitude
/// 60 around mid-grey, plus uniform integer noise in -8..=7 from a seeded LCG.
pub fn photo_like(w: usize, h: usize, seed: u64) -> Plane {
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

/// `plane` turned by `degrees` about its centre (counter-clockwise on screen) onto a canvas
/// `grow` times its size filled with `fill`, bilinear: on the same canvas (`grow` 1), as
/// `tracemark_leaks::rotate` turns an image.
pub fn turned(plane: &Plane, degrees: f64, grow: f64, fill: f32) -> Plane {
    let (w, h) = (plane.width, plane.height);
    let (cw, ch) = (
        (w as f64 * grow).round() as usize,
        (h as f64 * grow).round() as usize,
    );
    let (s, c) = degrees.to_radians().sin_cos();
    let (cx, cy) = ((w as f64 - 1.0) / 2.0, (h as f64 - 1.0) / 2.0);
    let (ox, oy) = ((cw as f64 - 1.0) / 2.0, (ch as f64 - 1.0) / 2.0);
    let mut data = vec![fill; cw * ch];
    for y in 0..ch {
        for x in 0..cw {
            let (dx, dy) = (x as f64 - ox, y as f64 - oy);
            // The inverse map: source = R(-theta) * dest (y points down).
            let sx = c * dx - s * dy + cx;
            let sy = s * dx + c * dy + cy;
            if sx < 0.0 || sy < 0.0 || sx > (w - 1) as f64 || sy > (h - 1) as f64 {
                continue;
            }
            let (x0, y0) = (sx.floor() as usize, sy.floor() as usize);
            let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
            let (tx, ty) = ((sx - x0 as f64) as f32, (sy - y0 as f64) as f32);
            let p = |xx: usize, yy: usize| plane.data[yy * w + xx];
            let a = p(x0, y0) * (1.0 - tx) + p(x1, y0) * tx;
            let b = p(x0, y1) * (1.0 - tx) + p(x1, y1) * tx;
            data[y * cw + x] = a * (1.0 - ty) + b * ty;
        }
    }
    Plane::from_vec(cw, ch, data)
}

/// A `side x side` photo of `plane` shown on a screen, for tests of the frame search: the
/// screen fills the photo but for 4 % margins of a black room, its right edge 4 % shorter
/// at each end (a keystone), turned by 1 degree; sampled bilinearly and rounded.
pub fn screen_photo(plane: &Plane, side: usize) -> Plane {
    let f = side as f64;
    let (s, c) = 1f64.to_radians().sin_cos();
    let quad = [(0.04, 0.04), (0.96, 0.04), (0.96, 0.96), (0.04, 0.96)]
        .map(|(x, y): (f64, f64)| {
            if x > 0.5 {
                (x, 0.5 + (y - 0.5) * 0.92)
            } else {
                (x, y)
            }
        })
        .map(|(x, y)| {
            let (x, y) = (x - 0.5, y - 0.5);
            ((c * x - s * y + 0.5) * f, (s * x + c * y + 0.5) * f)
        });
    let (w, h) = (plane.width as f64, plane.height as f64);
    let rect = [(0.0, 0.0), (w, 0.0), (w, h), (0.0, h)];
    let mut photo = keystone::warp(plane, &keystone::homography(&quad, &rect), side, side);
    photo.data.iter_mut().for_each(|v| *v = v.round());
    photo
}

/// `plane` stamped with `payload` under `patterns` at the default options, each value
/// clipped to 0..=255 and rounded, as an 8-bit file of the stamp would hold it.
///
/// # Panics
/// When the plane is too small to carry a mark.
pub fn marked(plane: &Plane, patterns: &KeyPatterns, payload: u64) -> Plane {
    let e = embed(plane, patterns, payload, &EmbedOptions::default()).unwrap();
    let data = plane
        .data
        .iter()
        .zip(&e.delta)
        .map(|(&x, &d)| (x + f32::from(d)).clamp(0.0, 255.0).round())
        .collect();
    Plane::from_vec(plane.width, plane.height, data)
}

/// The plane as an 8-bit grey raster (rounded and clipped).
pub fn to_grey8(plane: &Plane) -> Raster {
    Raster {
        width: plane.width,
        height: plane.height,
        channels: 1,
        samples: Samples::U8(
            plane
                .data
                .iter()
                .map(|v| v.round().clamp(0.0, 255.0) as u8)
                .collect(),
        ),
    }
}

/// A colour version: R, G and B differ (so that chroma is exercised) with the luminance
/// close to `photo_like`'s.
pub fn photo_like_rgb(w: usize, h: usize, seed: u64) -> Raster {
    let p = photo_like(w, h, seed);
    let mut v = Vec::with_capacity(w * h * 3);
    for &y in &p.data {
        v.extend([y * 1.1 - 10.0, y, y * 0.8 + 20.0].map(|s| s.round().clamp(0.0, 255.0) as u8));
    }
    Raster {
        width: w,
        height: h,
        channels: 3,
        samples: Samples::U8(v),
    }
}
