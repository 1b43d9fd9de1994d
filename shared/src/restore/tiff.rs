//! An uncompressed TIFF rebuilt byte for byte: its strips are the samples in row order, so
//! the file is kept without them and they are written back from the restored samples.

use std::io::Cursor;

use tiff::decoder::Decoder;
use tiff::tags::Tag;

use super::{Regions, cut_regions, raster_bytes};
use crate::raster::Raster;

/// The regions of `bytes`, an uncompressed single-image TIFF in strips whose decoded samples
/// are `original`; `None` for anything else (compressed, tiled, planar, strips out of
/// order): such a TIFF is restored pixel-exact.
pub fn regions(bytes: &[u8], original: &Raster) -> Option<Regions> {
    let mut d = Decoder::new(Cursor::new(bytes)).ok()?;
    let uncompressed = d.get_tag_u32(Tag::Compression).ok()? == 1;
    let chunky = d
        .find_tag(Tag::PlanarConfiguration)
        .ok()?
        .is_none_or(|v| v.into_u32().ok() == Some(1));
    let tiled = d.find_tag(Tag::TileOffsets).ok()?.is_some();
    let photometric = d.get_tag_u32(Tag::PhotometricInterpretation).ok()?;
    if !uncompressed || !chunky || tiled || !matches!(photometric, 1 | 2) || d.more_images() {
        return None;
    }
    let offsets = d.get_tag_u64_vec(Tag::StripOffsets).ok()?;
    let counts = d.get_tag_u64_vec(Tag::StripByteCounts).ok()?;
    if offsets.len() != counts.len() || offsets.windows(2).any(|w| w[1] < w[0]) {
        return None;
    }
    let big_endian = bytes.starts_with(b"MM");
    let regions = offsets.into_iter().zip(counts).collect();
    cut_regions(
        bytes,
        regions,
        &raster_bytes(original, big_endian),
        big_endian,
    )
}
