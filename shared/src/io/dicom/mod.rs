//! DICOM in, DICOM out (design.md section 4), through dicom-rs. This module reads and writes;
//! the marking decisions (which planes carry the mark, see [`crate::mark::layout`]) are made
//! by the pipeline.
//!
//! - [`header`](DicomImage::decode): parse, check every attribute the pixels depend on
//!   against the Pixel Data, decode to stored values.
//! - `voi`: the display transform (modality rescale, VOI window, MONOCHROME1) from stored
//!   values to 8-bit display levels, and viewers' 8-bit exports.
//! - `stored`: a display-level change mapped back to stored values: `q * (W - 1) / (255 *
//!   slope)` (negated for MONOCHROME1), rounded with a fixed dither (so that narrow windows,
//!   where one stored step is several display levels, keep the mark's mean), clipped to the
//!   range Bits Stored and Pixel Representation allow, optionally capped.
//! - `derived`: the stamped file as a derived instance. It keeps every attribute but: Pixel
//!   Data; SOP Instance UID (new, `2.25.` from a keyed hash of the source UID and the payload;
//!   with the file meta's Media Storage SOP Instance UID) unless UIDs are kept; the
//!   derived-image bookkeeping (Image Type value 1 DERIVED, Derivation Description, Source
//!   Image Sequence, Contributing Equipment Sequence, Instance Creation Date/Time); digital
//!   signatures, which no longer hold, are removed. Compressed inputs are decoded and written
//!   as Explicit VR Little Endian (Photometric Interpretation RGB for decoded YBR JPEG,
//!   Planar Configuration 0).

use std::path::{Path, PathBuf};

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;

use crate::error::Error;

mod derived;
mod header;
pub mod scan;
mod stored;
mod voi;

pub use derived::uid_from;
pub use stored::{DicomChange, WindowPsnr};
pub use voi::{FrameDisplay, VoiLut, Window, WindowSource};

/// Explicit VR Little Endian, what compressed inputs are written as.
pub const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";

/// Attributes a stamped file may differ in from its source; everything else is kept
/// byte for byte, except the retired group length elements (gggg,0000) of these tags'
/// groups, which are removed because they would no longer hold.
pub const CHANGED_TAGS: [Tag; 16] = [
    tags::PIXEL_DATA,
    tags::SOP_INSTANCE_UID,
    tags::IMAGE_TYPE,
    tags::DERIVATION_DESCRIPTION,
    tags::SOURCE_IMAGE_SEQUENCE,
    tags::CONTRIBUTING_EQUIPMENT_SEQUENCE,
    tags::INSTANCE_CREATION_DATE,
    tags::INSTANCE_CREATION_TIME,
    tags::DIGITAL_SIGNATURES_SEQUENCE,
    tags::MAC_PARAMETERS_SEQUENCE,
    // Only for compressed inputs, decoded to native RGB / interleaved samples.
    tags::PHOTOMETRIC_INTERPRETATION,
    tags::PLANAR_CONFIGURATION,
    // Enhanced multi-frame objects: the derivation and Frame Type live in these.
    tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE,
    tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE,
    tags::SOURCE_IMAGE_EVIDENCE_SEQUENCE,
    tags::CODING_SCHEME_IDENTIFICATION_SEQUENCE,
];

/// Attributes a stamped PALETTE COLOR image also changes: it is written as the RGB image it
/// displays as, and its tables go.
pub const CHANGED_IF_PALETTE: [Tag; 21] = [
    tags::SAMPLES_PER_PIXEL,
    tags::BITS_ALLOCATED,
    tags::BITS_STORED,
    tags::HIGH_BIT,
    tags::PIXEL_REPRESENTATION,
    tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
    tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
    tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
    tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DATA,
    tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DATA,
    tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DATA,
    tags::PALETTE_COLOR_LOOKUP_TABLE_UID,
    // The retired "large" tables (0028,1111-1113, 1211-1214) some older files carry.
    Tag(0x0028, 0x1111),
    Tag(0x0028, 0x1112),
    Tag(0x0028, 0x1113),
    Tag(0x0028, 0x1211),
    Tag(0x0028, 0x1212),
    Tag(0x0028, 0x1213),
    Tag(0x0028, 0x1214),
    tags::PHOTOMETRIC_INTERPRETATION,
    tags::PLANAR_CONFIGURATION,
];

/// Photometric interpretations tracemark marks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Photometric {
    /// Grey, minimum displayed white.
    Monochrome1,
    /// Grey, minimum displayed black.
    Monochrome2,
    /// Colour, three samples (decoded YBR JPEG and expanded PALETTE COLOR included).
    Rgb,
}

/// A decoded DICOM image with its dataset.
#[derive(Clone)]
pub struct DicomImage {
    obj: DefaultDicomObject,
    path: PathBuf,
    /// Frames.
    pub frames: usize,
    /// Rows (height).
    pub rows: usize,
    /// Columns (width).
    pub cols: usize,
    /// Samples per pixel (1 or 3).
    pub spp: usize,
    /// Bits Allocated (8 or 16).
    pub bits_allocated: u16,
    /// Bits Stored.
    pub bits_stored: u16,
    /// Pixel Representation 1 (two's complement).
    pub signed: bool,
    /// Photometric interpretation (after decoding).
    pub photometric: Photometric,
    /// Rescale Slope, Rescale Intercept of the first frame (see [`DicomImage::frame_display`]
    /// for every frame's).
    pub rescale: (f64, f64),
    /// The first frame's marking window (its narrowest declared window, else the value
    /// range; see [`FrameDisplay::marking_window`]).
    pub window: Window,
    /// Whether the first frame's window came from the file.
    pub window_from_file: bool,
    /// Each frame's rescale and windows.
    display: Vec<FrameDisplay>,
    /// Presentation LUT Shape (2050,0020) INVERSE.
    inverse_presentation: bool,
    /// Modality (0008,0060), empty when absent.
    pub modality: String,
    /// The input's transfer syntax UID.
    pub transfer_syntax: String,
    /// Whether the pixel data had to be decoded from a compressed or deflated syntax (the
    /// output is then Explicit VR Little Endian).
    pub transcoded: bool,
    /// Whether a PALETTE COLOR image was expanded to RGB (the output is then an RGB
    /// instance; see [`CHANGED_IF_PALETTE`]).
    pub palette_expanded: bool,
    /// Stored values, frame after frame, samples interleaved.
    pub stored: Vec<i32>,
    /// Original raw sample words, interleaved like `stored` (kept where a value does not
    /// change).
    raw: Vec<u16>,
    planar: bool,
    /// Where the Pixel Data's value lies in the file read, (offset, length), when it is
    /// stored uncompressed with a defined length ([`scan::Header::pixel_value`]).
    pub pixel_value: Option<(u64, u64)>,
}

fn dicom_err(path: &Path, attribute: &str, why: impl Into<String>) -> Error {
    Error::Dicom {
        path: path.into(),
        attribute: attribute.into(),
        why: why.into(),
    }
}

/// Whether `bytes` look like a DICOM file (Part 10: 128-byte preamble, then "DICM").
pub fn is_dicom(bytes: &[u8]) -> bool {
    bytes.len() >= 132 && &bytes[128..132] == b"DICM"
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_string()
}
