//! One seeded synthetic test image for unit tests, doc examples and benchmarks (after
//! RustFFT's shared test signals): smooth gradients like a natural image's, plus mild
//! seeded noise. Pure and deterministic: the same seed gives the same image.

use crate::mark::keystone;
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
