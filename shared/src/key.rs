//! The organisation's secret key: creation, loading, and the key id.
//!
//! A key file holds one line, `tracemark-key-v1 <64 hex digits>`. It is created with
//! owner-only permissions and never overwritten. The key itself never leaves this
//! module in printable form: `Debug` is redacted and there is no `Display`; what may be
//! shown or stored is the [`SecretKey::key_id`], a short hash of the key.

use std::io::Write;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

const HEADER: &str = "tracemark-key-v1";

/// A 32-byte master secret.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey([u8; 32]);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey(id {}, bytes redacted)", self.key_id())
    }
}

impl SecretKey {
    /// A key from raw bytes (tests and key derivation).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        SecretKey(bytes)
    }

    /// A fresh key from the operating system's random source.
    ///
    /// # Errors
    /// When the OS random source cannot be read.
    pub fn generate() -> Result<Self> {
        let mut bytes = [0u8; 32];
        random_bytes(&mut bytes)?;
        Ok(SecretKey(bytes))
    }

    /// The raw secret, for keyed derivations inside this crate only.
    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A public identifier: the first 8 bytes of SHA-256("tracemark key id" || key), in hex.
    /// Safe to print and store; it does not reveal the key.
    pub fn key_id(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"tracemark key id");
        h.update(self.0);
        hex(&h.finalize()[..8])
    }

    /// Writes a new key file with mode 0600. Refuses to overwrite an existing file.
    ///
    /// # Errors
    /// When the file exists or cannot be created or written.
    pub fn create_file(&self, path: &Path) -> Result<()> {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                Error::Exists { path: path.into() }
            } else {
                Error::Io {
                    path: path.into(),
                    source,
                }
            }
        })?;
        let line = format!("{HEADER} {}\n", hex(&self.0));
        let written = f.write_all(line.as_bytes()).and_then(|()| f.sync_all());
        if let Err(source) = written {
            drop(f);
            let _ = std::fs::remove_file(path);
            return Err(Error::Io {
                path: path.into(),
                source,
            });
        }
        Ok(())
    }

    /// Loads a key file written by [`SecretKey::create_file`].
    ///
    /// # Errors
    /// When the file cannot be read or is not a tracemark key file. The message never
    /// quotes the file's contents.
    pub fn load_file(path: &Path) -> Result<Self> {
        // A regular file of at most 4 KB: a FIFO, /dev/zero or a huge file is refused
        // before anything waits or allocates (issue 11, finding 4).
        let text = crate::io::read_regular(path, 4096).map_err(|e| match e {
            Error::Limits { .. } => Error::BadKey {
                path: path.into(),
                why: "file is too large to be a key file".into(),
            },
            other => other,
        })?;
        let meta = std::fs::metadata(path).map_err(|source| Error::Io {
            path: path.into(),
            source,
        })?;
        let bad = |why: &str| Error::BadKey {
            path: path.into(),
            why: why.into(),
        };
        let text = std::str::from_utf8(&text).map_err(|_| bad("not a text key file"))?;
        let mut parts = text.split_whitespace();
        if parts.next() != Some(HEADER) {
            return Err(bad("missing the 'tracemark-key-v1' header"));
        }
        let digits = parts.next().ok_or_else(|| bad("no key after the header"))?;
        if parts.next().is_some() {
            return Err(bad("unexpected text after the key"));
        }
        let bytes = parse_hex(digits).ok_or_else(|| bad("key is not 64 hex digits"))?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| bad("key is not 64 hex digits"))?;
        // Like ssh with a private key: a secret others can read is not a secret.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(Error::BadKey {
                    path: path.into(),
                    why: format!(
                        "the key file is readable or writable by group or others (mode {mode:04o}); restrict it with `chmod 600 {}`",
                        path.display()
                    ),
                });
            }
        }
        if is_degenerate(&key) {
            return Err(bad(
                "the key is degenerate (too few distinct bytes, e.g. all zero); make a new one with `tracemark-embed keygen`",
            ));
        }
        Ok(SecretKey(key))
    }
}

/// Whether key bytes are too regular to be a random key: fewer than 12 distinct byte values
/// (all zero, one repeated byte, short repeated patterns). 32 random bytes have 30 distinct
/// values on average; fewer than 12 happens with probability below 1e-15.
fn is_degenerate(key: &[u8; 32]) -> bool {
    let mut seen = [false; 256];
    key.iter().for_each(|&b| seen[usize::from(b)] = true);
    seen.iter().filter(|&&s| s).count() < 12
}

/// Fills `buf` from the operating system's random source (getrandom).
///
/// # Errors
/// When the OS random source fails.
pub fn random_bytes(buf: &mut [u8]) -> Result<()> {
    getrandom::fill(buf).map_err(|e| {
        Error::io(
            Path::new("<OS random source>"),
            std::io::Error::other(e.to_string()),
        )
    })
}

/// A random 64-bit release id from the OS (random, not sequential: a wrong decode almost
/// never matches an issued id).
///
/// # Errors
/// When the OS random source fails.
pub fn random_release_id() -> Result<u64> {
    let mut b = [0u8; 8];
    random_bytes(&mut b)?;
    Ok(u64::from_be_bytes(b))
}

/// Lower-case hex of a byte string.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses an even-length hex string; `None` on any non-hex character.
pub fn parse_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_round_trip_and_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        let k = SecretKey::generate().unwrap();
        k.create_file(&p).unwrap();
        assert_eq!(SecretKey::load_file(&p).unwrap(), k);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(matches!(k.create_file(&p), Err(Error::Exists { .. })));
    }

    #[test]
    fn debug_does_not_leak_key_bytes() {
        let k = SecretKey::from_bytes([0xab; 32]);
        let s = format!("{k:?}");
        assert!(!s.contains("abab"), "{s}");
    }

    /// Issue 10, finding 11: a world-readable key file and an all-zero key were accepted.
    #[cfg(unix)]
    #[test]
    fn refuses_readable_key_files_and_degenerate_keys() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        SecretKey::generate().unwrap().create_file(&p).unwrap();
        for mode in [0o644, 0o640, 0o604, 0o660] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = SecretKey::load_file(&p).unwrap_err().to_string();
            assert!(e.contains("chmod 600") && e.lines().count() == 1, "{e}");
        }
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert!(SecretKey::load_file(&p).is_ok());
        for (i, bytes) in [
            [0u8; 32],
            [0x11; 32],
            std::array::from_fn(|i| (i % 4) as u8),
        ]
        .into_iter()
        .enumerate()
        {
            let q = dir.path().join(format!("weak{i}"));
            SecretKey::from_bytes(bytes).create_file(&q).unwrap();
            let e = SecretKey::load_file(&q).unwrap_err().to_string();
            assert!(e.contains("degenerate"), "{e}");
        }
    }

    #[test]
    fn rejects_malformed_key_files() {
        let dir = tempfile::tempdir().unwrap();
        for (i, body) in ["", "tracemark-key-v1", "tracemark-key-v1 zz", "hello 00"]
            .iter()
            .enumerate()
        {
            let p = dir.path().join(format!("k{i}"));
            std::fs::write(&p, body).unwrap();
            assert!(matches!(
                SecretKey::load_file(&p),
                Err(Error::BadKey { .. })
            ));
        }
    }
}
