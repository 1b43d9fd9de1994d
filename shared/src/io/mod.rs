//! I/O adapters: files to and from [`crate::raster::Raster`] and DICOM objects. The only
//! place that touches the file system, apart from key files and the ledger.

pub mod atomic;
pub mod dicom;
pub mod image;
pub mod limits;
pub mod walk;

pub use limits::Limits;

use std::path::Path;

use crate::error::{Error, Result};

/// Reads a whole input file after checking that it is a file within the size limit.
///
/// # Errors
/// A missing or unreadable path, a directory, or a file above `limits.max_alloc`.
pub fn read_input(path: &Path, limits: &Limits) -> Result<Vec<u8>> {
    if std::fs::metadata(path).is_ok_and(|m| m.is_dir()) {
        return Err(Error::UnknownFormat {
            path: path.into(),
            why: "a directory, not an image".into(),
        });
    }
    read_regular(path, limits.max_alloc)
}

/// Reads a regular file of at most `max` bytes. It is opened without blocking and checked on
/// the open handle, so a FIFO (which would wait for a writer for ever), a device such as
/// `/dev/zero` (endless) or a socket is refused at once, and a file that grows after the
/// check is still read no further than `max + 1` bytes (issue 11, finding 4).
///
/// # Errors
/// [`Error::Io`] when the file cannot be opened or read, or is not a regular file;
/// [`Error::Limits`] when it is larger than `max`.
pub fn read_regular(path: &Path, max: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|source| Error::io(path, source))?;
    let meta = file.metadata().map_err(|source| Error::io(path, source))?;
    if !meta.is_file() {
        let what = if meta.is_dir() {
            "a directory, not a file"
        } else {
            "not a regular file (a FIFO, device or socket)"
        };
        return Err(Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, what),
        ));
    }
    let too_large = |len: u64| Error::Limits {
        path: path.into(),
        why: format!("file is {len} bytes"),
        limit: format!("{max} bytes"),
    };
    if meta.len() > max {
        return Err(too_large(meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| Error::io(path, source))?;
    if bytes.len() as u64 > max {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
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
