//! The library's error type, by failure class (after image-rs's `ImageError`): each variant
//! keeps what failed, where, and the source error when there is one. Messages are one
//! lower-case line; a file's path appears in them exactly once; they never contain key
//! material and never name a command-line flag (the binaries add that context).

use std::path::{Path, PathBuf};

use crate::io::Format;

/// Result alias for the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A boxed source error from a codec.
pub type SourceError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything the library can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system error on a path.
    #[error("{}: {}", path.display(), io_text(source))]
    Io {
        /// The file at fault.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file's bytes could not be decoded as an image of its format.
    #[error("{}: cannot decode {} image: {source}", path.display(), format.name())]
    Decode {
        /// The file at fault.
        path: PathBuf,
        /// The format tried.
        format: Format,
        /// The decoder's error.
        source: SourceError,
    },
    /// An image could not be encoded.
    #[error("{}: cannot encode {}: {source}", path.display(), format.name())]
    Encode {
        /// The output the bytes were for.
        path: PathBuf,
        /// The format asked for.
        format: Format,
        /// The encoder's error.
        source: SourceError,
    },
    /// The file is not in a format tracemark reads, or an output name is not one it writes.
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
        "{}image is {width}x{height} px, too small to {what}: at least {min}x{min} px are needed",
        path_prefix(path)
    )]
    TooSmall {
        /// The file at fault, when the error comes from a file.
        path: Option<PathBuf>,
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
    /// An anchor line (from `ledger head`) that cannot be read.
    #[error("bad anchor line: {0}")]
    BadAnchor(String),
    /// A setting outside its valid range.
    #[error("{what} {value} is out of range: use {expected}")]
    OutOfRange {
        /// The setting, in words ("PSNR target", "mask exponent").
        what: &'static str,
        /// The value given.
        value: String,
        /// The valid range, with units.
        expected: &'static str,
    },
    /// A ledger made with another key, or a key that does not fit what it is used with.
    #[error("{}: {why}", path.display())]
    WrongKey {
        /// The file made with the other key.
        path: PathBuf,
        /// What does not match (key ids only, never key bytes).
        why: String,
    },
    /// An output that already exists and was not to be replaced.
    #[error("{}: already exists; not replaced", path.display())]
    Exists {
        /// The existing file.
        path: PathBuf,
    },
    /// An action refused to protect data (e.g. the input as its own output).
    #[error("{}: {why}", path.display())]
    Refused {
        /// The file that would have been harmed.
        path: PathBuf,
        /// Why it was refused and how to proceed.
        why: String,
    },
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
    /// An input that already carries this key's mark (a stamped copy, not an original).
    #[error("{}: already carries this key's mark ({}); stamp the original instead", path.display(), match payload { Some(p) => format!("release {p:016x}"), None => "payload unreadable".into() })]
    AlreadyStamped {
        /// The input.
        path: PathBuf,
        /// The release id it carries, when it decodes.
        payload: Option<u64>,
    },
    /// The mark could not be placed as required (e.g. small frames whose montage does not
    /// read back).
    #[error("{}: {why}", path.display())]
    NotStamped {
        /// The input.
        path: PathBuf,
        /// Why, with the figures measured.
        why: String,
    },
    /// A stamped copy could not be restored to its original.
    #[error("{}: cannot restore: {why}", path.display())]
    NotRestored {
        /// The stamped copy (or the output).
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// The ledger database failed (SQLite's error kept).
    #[error("{}: ledger: {source}", path.display())]
    Ledger {
        /// The ledger file.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// The PostgreSQL ledger's server or connection failed (the client's error kept).
    #[error("{}: ledger: {source}", path.display())]
    LedgerServer {
        /// The ledger's URL, password hidden.
        path: PathBuf,
        /// The client's error.
        source: Box<postgres::Error>,
    },
    /// A ledger that fails verification: a row or the head was edited, removed, inserted or
    /// forged, or the database's objects were changed. Nothing read from it is trusted.
    #[error("{}: ledger broken at row {seq}: {why}", path.display())]
    LedgerBroken {
        /// The ledger file.
        path: PathBuf,
        /// The first bad row (0: the head record or the database's objects).
        seq: i64,
        /// What failed.
        why: String,
    },
    /// A panic while working on one file (in tracemark or a library it uses): the file's
    /// error, so that the other files of a batch go on. A bug to report, with the file.
    #[error("{}: internal error while {stage} (please report it with this file): {what}", path.display())]
    Internal {
        /// The file being worked on.
        path: PathBuf,
        /// What was being done ("stamping", "examining").
        stage: &'static str,
        /// The panic's message and place.
        what: String,
    },
    /// A file that is not a usable ledger, or a ledger request that cannot be met.
    #[error("{}: {why}", path.display())]
    LedgerContent {
        /// The ledger file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

/// std's I/O errors print "No such file or directory (os error 2)"; the OS code is noise to
/// a user, and some sources (an error wrapping another) would otherwise print twice.
fn io_text(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(_) => {
            let text = e.to_string();
            match text.find(" (os error") {
                Some(i) => text[..i].to_string(),
                None => text,
            }
        }
        None => e.to_string(),
    }
}

fn path_prefix(path: &Option<PathBuf>) -> String {
    path.as_ref()
        .map(|p| format!("{}: ", p.display()))
        .unwrap_or_default()
}

/// One line for an error and the errors it wraps (an `anyhow` chain of context), as the
/// tools print it: each link's message, joined by ": ", ending at the first of this
/// library's errors, whose message already holds its source's (a chain printed in full
/// repeated it: "d: not a regular file: not a regular file").
pub fn chain_text(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        parts.push(e.to_string());
        if e.is::<Error>() {
            break;
        }
        next = e.source();
    }
    parts.join(": ")
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// The same error attributed to `path` where it names no file yet (errors from the pure
    /// maths, which never sees paths). Errors that already name a file are kept as they are,
    /// so a message names its file once.
    pub fn in_file(self, path: &Path) -> Self {
        match self {
            Error::TooSmall {
                path: None,
                width,
                height,
                min,
                what,
            } => Error::TooSmall {
                path: Some(path.into()),
                width,
                height,
                min,
                what,
            },
            other => other,
        }
    }

    /// The file this error is about, when it names one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Error::Io { path, .. }
            | Error::Decode { path, .. }
            | Error::Encode { path, .. }
            | Error::UnknownFormat { path, .. }
            | Error::Limits { path, .. }
            | Error::BadKey { path, .. }
            | Error::WrongKey { path, .. }
            | Error::Refused { path, .. }
            | Error::Exists { path }
            | Error::Dicom { path, .. }
            | Error::Unsupported { path, .. }
            | Error::NotStamped { path, .. }
            | Error::NotRestored { path, .. }
            | Error::AlreadyStamped { path, .. }
            | Error::Ledger { path, .. }
            | Error::LedgerServer { path, .. }
            | Error::LedgerContent { path, .. }
            | Error::LedgerBroken { path, .. }
            | Error::Internal { path, .. } => Some(path),
            Error::TooSmall { path, .. } => path.as_deref(),
            Error::Payload(_) | Error::BadAnchor(_) | Error::OutOfRange { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_prints_each_message_once() {
        #[derive(Debug)]
        struct Context(Error);
        impl std::fmt::Display for Context {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("while reading the key")
            }
        }
        impl std::error::Error for Context {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let err = Context(Error::io(
            Path::new("d"),
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"),
        ));
        // The io error inside is the library error's source, and is not printed twice.
        assert_eq!(
            chain_text(&err),
            "while reading the key: d: not a regular file"
        );
    }

    #[test]
    fn os_errors_print_once_without_their_code() {
        let e = Error::io(
            Path::new("x.png"),
            std::io::Error::from_raw_os_error(libc::EISDIR),
        );
        assert_eq!(e.to_string(), "x.png: Is a directory");
    }

    #[test]
    fn in_file_names_the_file_once() {
        let e = Error::TooSmall {
            path: None,
            width: 10,
            height: 20,
            min: 128,
            what: "carry a mark",
        };
        let msg = e.in_file(Path::new("a.png")).in_file(Path::new("a.png"));
        assert_eq!(
            msg.to_string(),
            "a.png: image is 10x20 px, too small to carry a mark: at least 128x128 px are needed"
        );
        let d = Error::Exists {
            path: "b.png".into(),
        };
        assert_eq!(
            d.in_file(Path::new("b.png"))
                .to_string()
                .matches("b.png")
                .count(),
            1
        );
    }
}
