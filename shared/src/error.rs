//! The library's error type, by failure class. Messages are one lower-case line that says
//! what went wrong and where; they never contain key material.

use std::path::PathBuf;

/// Result alias for the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the library can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system error on a path.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file at fault.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file's bytes could not be decoded as an image.
    #[error("{}: cannot decode {format} image: {why}", path.display())]
    Decode {
        /// The file at fault.
        path: PathBuf,
        /// The format tried.
        format: String,
        /// The decoder's complaint.
        why: String,
    },
    /// The file is not in a format tracemark reads.
    #[error("{}: unknown or unsupported image format ({why})", path.display())]
    UnknownFormat {
        /// The file at fault.
        path: PathBuf,
        /// What was seen.
        why: String,
    },
    /// Declared dimensions or memory beyond the configured limits (decompression bomb guard).
    #[error("{}: {why} (limit: {limit})", path.display())]
    Limits {
        /// The file at fault.
        path: PathBuf,
        /// What exceeded the limit.
        why: String,
        /// The limit in force.
        limit: String,
    },
    /// The image is smaller than the mark needs.
    #[error(
        "image is {width}x{height} px, too small to {what}: at least {min}x{min} px are needed"
    )]
    TooSmall {
        /// Image width in pixels.
        width: usize,
        /// Image height in pixels.
        height: usize,
        /// Smallest side accepted.
        min: usize,
        /// "carry a mark" or "examine".
        what: &'static str,
    },
    /// A key file that is not a tracemark key.
    #[error("{}: not a tracemark key file: {why}", path.display())]
    BadKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong (never its contents).
        why: String,
    },
    /// A payload string that is not 16 hex digits.
    #[error("bad payload '{0}': expected exactly 16 hex digits (a 64-bit id)")]
    Payload(String),
    /// An argument outside its valid range.
    #[error("{0}")]
    Invalid(String),
    /// A key that does not match what it is used with (a ledger made with another key).
    #[error("{0}")]
    WrongKey(String),
    /// An action refused to protect data (existing output, output equal to input).
    #[error("{0}")]
    Refused(String),
    /// A DICOM file that is malformed or inconsistent, naming the attribute at fault.
    #[error("{}: DICOM {attribute}: {why}", path.display())]
    Dicom {
        /// The file at fault.
        path: PathBuf,
        /// The attribute (name and tag) at fault.
        attribute: String,
        /// What is wrong.
        why: String,
    },
    /// A feature the image uses that tracemark does not support.
    #[error("{}: unsupported: {what}", path.display())]
    Unsupported {
        /// The file at fault.
        path: PathBuf,
        /// What is not supported.
        what: String,
    },
}
