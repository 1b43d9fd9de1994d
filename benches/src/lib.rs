//! tracemark's benchmarks: the robustness report, the collusion study and their plots. The
//! leak simulations they apply live in the `tracemark-leaks` crate (re-exported here), so
//! that the tools' tests use them without building the plotting stack.

pub mod answer;
pub mod appends;
pub mod collusion;
pub mod exports;
pub mod forgery;
pub mod fuzz;
pub mod hard;
pub mod memory;
pub mod plot;
pub mod report;
pub mod robustness;
pub mod scenario;
pub mod throughput;
pub mod versus;

pub use tracemark_leaks::*;

use std::path::{Path, PathBuf};

use anyhow::Context;
use tracemark::io::Limits;
use tracemark::io::image::read;
use tracemark::raster::Raster;

/// The repository's testdata folder.
pub fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata")
}

/// The test photos.
pub const PHOTOS: [&str; 4] = ["camera.png", "astronaut.png", "coffee.png", "retina.jpg"];

/// Stochastic textures (issue 14's hardest images for geometry): 512 px, CC0.
pub const TEXTURES: [&str; 2] = ["grass.png", "gravel.png"];

/// Issue 14's hard images, named by group ("texture/...", "medical256/..."): the textures,
/// and 256 x 256 8-bit medical slices: the three frames of MR2_3frames.dcm and 693_UNCR.dcm
/// (CT, 512 px) area-downscaled, each in its own display window.
///
/// # Errors
/// When a file cannot be read.
pub fn load_hard_images() -> anyhow::Result<Vec<(String, Raster)>> {
    use tracemark::pipeline::Document;
    let mut out = Vec::new();
    for f in TEXTURES {
        let r = read(&testdata().join(f), &Limits::default())
            .with_context(|| f.to_string())?
            .0;
        out.push((format!("texture/{f}"), r));
    }
    let grey = |p: &tracemark::raster::Plane| Raster {
        width: p.width,
        height: p.height,
        channels: 1,
        samples: tracemark::raster::Samples::U8(
            p.data
                .iter()
                .map(|v| v.round().clamp(0.0, 255.0) as u8)
                .collect(),
        ),
    };
    for f in ["MR2_3frames.dcm", "693_UNCR.dcm"] {
        let doc = Document::open(&testdata().join(f), &Limits::default())
            .with_context(|| f.to_string())?;
        for (i, p) in doc.frame_planes().iter().enumerate() {
            let r = grey(p);
            let r = if r.width > 256 {
                resize(&r, 256, 256 * r.height / r.width, Filter::Box)
            } else {
                r
            };
            out.push((format!("medical256/{f}#{i}"), r));
        }
    }
    Ok(out)
}

/// The test photos, decoded.
///
/// # Errors
/// When a photo cannot be read.
pub fn load_photos() -> anyhow::Result<Vec<Raster>> {
    PHOTOS
        .iter()
        .map(|f| {
            read(&testdata().join(f), &Limits::default())
                .map(|r| r.0)
                .with_context(|| f.to_string())
        })
        .collect()
}
