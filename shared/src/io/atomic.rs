//! Atomic output files: written to a temporary file in the destination directory, synced,
//! then renamed over the final name. A crash leaves either no file or the whole file.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Writes `path` atomically through `write`. Refuses an existing `path` unless `force`.
///
/// # Errors
/// When the destination exists (without `force`), the directory is not writable, or
/// `write` fails; in every case no file is left under either name.
pub fn write_atomic<F>(path: &Path, force: bool, write: F) -> Result<()>
where
    F: FnOnce(&mut BufWriter<File>) -> Result<()>,
{
    stage(path, force, write)?.persist()
}

/// A finished, synced output under a temporary name beside its destination. `persist`
/// renames it into place; dropping it removes the temporary file.
pub struct Staged {
    tmp: tempfile::NamedTempFile,
    path: PathBuf,
    force: bool,
}

/// Writes the whole output to a temporary file in the destination directory and syncs it,
/// without touching the destination: the slow part of an atomic write, done before any lock.
///
/// # Errors
/// When the destination exists (without `force`), the directory is not writable, or
/// `write` fails; no file is left behind.
pub fn stage<F>(path: &Path, force: bool, write: F) -> Result<Staged>
where
    F: FnOnce(&mut BufWriter<File>) -> Result<()>,
{
    if !force && path.exists() {
        return Err(exists(path));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let io_err = |source| Error::Io {
        path: path.into(),
        source,
    };
    // Created 0666 less the umask, as any file a user's tool writes (a temporary file's
    // default, 0600, would make every output owner-only whatever the umask).
    let tmp = tempfile::Builder::new()
        .prefix(".tracemark-")
        .suffix(".tmp")
        .permissions(output_mode())
        .tempfile_in(dir)
        .map_err(io_err)?;
    let (file, tmp_path) = tmp.into_parts();
    let mut w = BufWriter::new(file);
    write(&mut w)?;
    w.flush().map_err(io_err)?;
    let file = w.into_inner().map_err(|e| io_err(e.into_error()))?;
    file.sync_all().map_err(io_err)?;
    Ok(Staged {
        tmp: tempfile::NamedTempFile::from_parts(file, tmp_path),
        path: path.into(),
        force,
    })
}

impl Staged {
    /// The final name.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Renames the staged file to its final name (never over an existing file unless
    /// `force` was given).
    ///
    /// # Errors
    /// The destination appeared meanwhile (without `force`), or the rename failed; the
    /// temporary file is removed either way.
    pub fn persist(self) -> Result<()> {
        let path = self.path;
        let io_err = |source| Error::Io {
            path: path.clone(),
            source,
        };
        if self.force {
            self.tmp.persist(&path).map_err(|e| io_err(e.error))?;
        } else {
            self.tmp.persist_noclobber(&path).map_err(|e| {
                if e.error.kind() == std::io::ErrorKind::AlreadyExists {
                    exists(&path)
                } else {
                    io_err(e.error)
                }
            })?;
        }
        Ok(())
    }
}

fn exists(path: &Path) -> Error {
    Error::Exists { path: path.into() }
}

/// The mode outputs are created with, before the umask applies.
fn output_mode() -> std::fs::Permissions {
    use std::os::unix::fs::PermissionsExt;
    std::fs::Permissions::from_mode(0o666)
}

/// Checks that files can be created in `dir` (a temporary file is created and removed), so
/// that a read-only output folder is found before any work.
///
/// # Errors
/// [`Error::Io`] naming the folder.
pub fn check_writable_dir(dir: &Path) -> Result<()> {
    tempfile::Builder::new()
        .prefix(".tracemark-probe-")
        .tempfile_in(dir)
        .map(drop)
        .map_err(|source| Error::Io {
            path: dir.into(),
            source: std::io::Error::new(
                source.kind(),
                format!("cannot write in the output folder: {}", os_text(&source)),
            ),
        })
}

fn os_text(e: &std::io::Error) -> String {
    let t = e.to_string();
    t.split(" (os error").next().unwrap_or_default().to_string()
}

/// Whether two paths name the same existing file (after resolving links).
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_write_leaves_nothing_and_existing_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.bin");
        let r = write_atomic(&p, false, |_| Err(Error::Payload("boom".into())));
        assert!(r.is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        write_atomic(&p, false, |w| {
            w.write_all(b"one").unwrap();
            Ok(())
        })
        .unwrap();
        assert!(matches!(
            write_atomic(&p, false, |_| Ok(())),
            Err(Error::Exists { .. })
        ));
        write_atomic(&p, true, |w| {
            w.write_all(b"two").unwrap();
            Ok(())
        })
        .unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
