//! tracemark's benchmarks: the robustness report, the collusion study and their plots. The
//! leak simulations they apply live in the `tracemark-leaks` crate (re-exported here), so
//! that the tools' tests use them without building the plotting stack.

pub mod answer;
pub mod collusion;
pub mod exports;
pub mod forgery;
pub mod fuzz;
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
