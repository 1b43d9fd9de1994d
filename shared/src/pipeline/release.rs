//! Writing stamped files, and recording them in the ledger when there is one.
//!
//! Consistency: each output is written to a synced temporary file beside its final name
//! outside the ledger lock; it is renamed into place inside the ledger transaction that
//! records it, and that transaction commits only after the rename. A file is in the ledger
//! if and only if it was written.

use std::cell::Cell;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::error::{Error, Result};
use crate::io::image::stage_encoded;
use crate::ledger::{Anchor, FileRecord, Ledger, ReleaseMeta, sha256_hex};
use crate::pipeline::stamp::{StampOptions, Stamped};
use crate::report::now_ms;

/// Where stamped files go: written only, or written and recorded in a ledger.
pub struct Release {
    ledger: Option<(Mutex<Ledger>, ReleaseMeta)>,
}

impl Release {
    /// Files are written, not recorded.
    pub fn unrecorded() -> Self {
        Release { ledger: None }
    }

    /// Files are written and recorded in `ledger` as parts of `meta`'s release.
    pub fn recorded(ledger: Ledger, meta: ReleaseMeta) -> Self {
        Release {
            ledger: Some((Mutex::new(ledger), meta)),
        }
    }

    /// The ledger (locked; a panic elsewhere does not make it unusable) and the release.
    fn locked(&self) -> Option<(MutexGuard<'_, Ledger>, &ReleaseMeta)> {
        let (ledger, meta) = self.ledger.as_ref()?;
        Some((ledger.lock().unwrap_or_else(PoisonError::into_inner), meta))
    }

    /// With a ledger: its authenticated head now (after verifying the whole chain).
    ///
    /// # Errors
    /// A ledger that no longer verifies; database errors.
    pub fn ledger_head(&self) -> Result<Option<Anchor>> {
        self.locked()
            .map(|(ledger, _)| ledger.anchor(now_ms()))
            .transpose()
    }

    /// With a ledger: to whom and when release `id` was issued, if it was.
    pub fn issued_to(&self, id: u64) -> Option<(String, String)> {
        let (ledger, _) = self.locked()?;
        let rows = ledger.release(id).ok()?;
        let first = rows.first()?;
        Some((
            first.release.recipient.clone(),
            crate::report::iso_utc(first.created_ms),
        ))
    }

    /// The release being recorded, if any.
    pub fn meta(&self) -> Option<&ReleaseMeta> {
        self.ledger.as_ref().map(|(_, m)| m)
    }

    /// Writes `stamped` to `output` atomically and, with a ledger, records it (input path
    /// and hash, output path and hash, format, size, parameters) in the same step.
    ///
    /// # Errors
    /// An existing output without `options.write.force`, file-system errors, ledger errors;
    /// on any error nothing is left under `output` and no row is committed.
    pub fn write(
        &self,
        stamped: &Stamped,
        input: &Path,
        input_bytes: &[u8],
        output: &Path,
        options: &StampOptions,
    ) -> Result<()> {
        // The slow part of the write happens outside the ledger lock.
        let staged = stage_encoded(&stamped.encoded, output, options.write.force)?;
        if self.ledger.is_none() {
            return staged.persist();
        }
        // Hashes are computed before the lock is taken.
        let file = FileRecord {
            input_path: input.display().to_string(),
            input_sha256: sha256_hex(input_bytes),
            output_path: output.display().to_string(),
            output_sha256: sha256_hex(&stamped.encoded.bytes),
            format: stamped.encoded.format.name().into(),
            bytes: stamped.encoded.bytes.len() as u64,
            params: stamped.ledger_params(options),
            content: stamped.content.clone(),
            restore: stamped.restore.clone(),
        };
        let written = Cell::new(false);
        let (mut ledger, meta) = self.locked().expect("a ledger, checked above");
        let appended = ledger.append(meta, &file, now_ms(), || {
            staged.persist()?;
            written.set(true);
            Ok(())
        });
        if let Err(err) = appended {
            // The row was not committed: the file must not stay either.
            if written.get() {
                let _ = std::fs::remove_file(output);
            }
            return Err(err);
        }
        Ok(())
    }
}

/// Creates the folder an output goes into (a batch keeps its inputs' layout).
///
/// # Errors
/// When the folder cannot be created.
pub fn create_parent(output: &Path) -> Result<()> {
    match output.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => {
            std::fs::create_dir_all(dir).map_err(|source| Error::io(dir, source))
        }
        _ => Ok(()),
    }
}
