//! One seeded synthetic test image for unit tests, doc examples and benchmarks (after
//! RustFFT's shared test signals): smooth gradients like a natural image's, plus mild
//! seeded noise. Pure and deterministic: the same seed gives the same image.

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
