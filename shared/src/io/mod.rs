//! I/O adapters: files to and from [`crate::raster::Raster`] and DICOM objects. The only
//! place that touches the file system, apart from key files and the ledger.

pub mod atomic;
pub mod dicom;
pub mod image;
pub mod limits;

pub use limits::Limits;

use std::path::Path;

use crate::error::{Error, Result};

/// Reads a whole input file after checking that it is a file within the size limit.
///
/// # Errors
/// A missing or unreadable path, a directory, or a file above `limits.max_alloc`.
pub fn read_input(path: &Path, limits: &Limits) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(path).map_err(|source| Error::io(path, source))?;
    if meta.is_dir() {
        return Err(Error::UnknownFormat {
            path: path.into(),
            why: "a directory, not an image".into(),
        });
    }
    if meta.len() > limits.max_alloc {
        return Err(Error::Limits {
            path: path.into(),
            why: format!("file is {} bytes", meta.len()),
            limit: format!("{} bytes", limits.max_alloc),
        });
    }
    std::fs::read(path).map_err(|source| Error::io(path, source))
}

/// Image formats tracemark reads and writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// PNG, 8 or 16 bits.
    Png,
    /// JPEG (baseline/progressive), 8 bits.
    Jpeg,
    /// TIFF, 8 or 16 bits.
    Tiff,
    /// WebP (written lossless).
    WebP,
    /// DICOM Part 10 (read through dicom-rs, written as DICOM).
    Dicom,
}

impl Format {
    /// The format's name.
    pub fn name(self) -> &'static str {
        match self {
            Format::Png => "PNG",
            Format::Jpeg => "JPEG",
            Format::Tiff => "TIFF",
            Format::WebP => "WebP",
            Format::Dicom => "DICOM",
        }
    }

    /// Format by file content (magic bytes).
    pub fn sniff(head: &[u8]) -> Option<Format> {
        // DICOM first: a Part 10 preamble is free-form and may itself start like a TIFF
        // (the NEMA test files' does), but "DICM" at byte 128 decides.
        if dicom::is_dicom(head) {
            Some(Format::Dicom)
        } else if head.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(Format::Png)
        } else if head.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(Format::Jpeg)
        } else if head.starts_with(b"II*\0") || head.starts_with(b"MM\0*") {
            Some(Format::Tiff)
        } else if head.len() >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"WEBP" {
            Some(Format::WebP)
        } else {
            None
        }
    }

    /// Format by output file extension (case-insensitive).
    pub fn from_extension(path: &std::path::Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "png" => Some(Format::Png),
            "jpg" | "jpeg" => Some(Format::Jpeg),
            "tif" | "tiff" => Some(Format::Tiff),
            "webp" => Some(Format::WebP),
            "dcm" | "dicom" => Some(Format::Dicom),
            _ => None,
        }
    }
}
