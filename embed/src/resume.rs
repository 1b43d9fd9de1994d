//! Resuming an interrupted release (issue 11, finding 9): running the same command again
//! continues the release that wrote some of the planned outputs. Those files are verified
//! against their ledger rows (input and output SHA-256) and skipped; the rest are stamped
//! under the same release id.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::bail;
use tracemark::io::{Limits, read_regular};
use tracemark::ledger::{FileRecord, Ledger, sha256_hex};
use tracemark::report::payload_hex;

use crate::plan::Job;

/// A release found in the ledger that already wrote some of this run's outputs.
pub struct Resume {
    /// Its id.
    pub release_id: u64,
    /// The planned outputs it wrote (by the job's output path) and their rows.
    pub done: HashMap<PathBuf, FileRecord>,
}

/// The release to resume, if the ledger records existing planned outputs for `recipient`
/// (and, when an id is `given`, under that id). Each existing output is matched by file
/// identity with the latest row that wrote it.
///
/// # Errors
/// Existing outputs recorded under several of this recipient's releases (ambiguous: the
/// user must give `--payload`); ledger errors.
pub fn find(
    ledger: &Ledger,
    jobs: &[Job],
    recipient: &str,
    given: Option<u64>,
) -> anyhow::Result<Option<Resume>> {
    let existing: Vec<&Job> = jobs.iter().filter(|j| j.output.exists()).collect();
    if existing.is_empty() {
        return Ok(None);
    }
    // The latest row for each output file that still exists, by canonical path.
    let entries = ledger.entries()?;
    let mut latest = HashMap::new();
    for e in &entries {
        if let Ok(p) = Path::new(&e.file.output_path).canonicalize() {
            latest.insert(p, e);
        }
    }
    let mut found: HashMap<u64, HashMap<PathBuf, FileRecord>> = HashMap::new();
    for job in existing {
        let row = job.output.canonicalize().ok().and_then(|p| latest.get(&p));
        if let Some(e) = row
            && e.release.recipient == recipient
            && given.is_none_or(|g| g == e.release.release_id)
        {
            found
                .entry(e.release.release_id)
                .or_default()
                .insert(job.output.clone(), e.file.clone());
        }
    }
    if found.len() > 1 {
        let mut ids: Vec<String> = found.keys().map(|&id| payload_hex(id)).collect();
        ids.sort();
        bail!(
            "the outputs of this run were written by {} releases to this recipient ({}); give --payload to resume one",
            ids.len(),
            ids.join(", ")
        );
    }
    Ok(found
        .into_iter()
        .next()
        .map(|(release_id, done)| Resume { release_id, done }))
}

/// Checks that a file recorded by the resumed release is still what the ledger says: the
/// input has the hash it was stamped from and the output the hash it was written with.
///
/// # Errors
/// [`tracemark::Error::Refused`] naming the file that changed; read errors.
pub fn verify(job: &Job, row: &FileRecord, limits: &Limits) -> tracemark::Result<()> {
    let input = read_regular(&job.input, limits.max_alloc)?;
    if sha256_hex(&input) != row.input_sha256 {
        return Err(tracemark::Error::Refused {
            path: job.output.clone(),
            why: format!(
                "recorded in this release from another version of {} (its SHA-256 differs from the ledger's); remove the output to stamp the input again",
                job.input.display()
            ),
        });
    }
    let output = read_regular(&job.output, limits.max_alloc)?;
    if sha256_hex(&output) != row.output_sha256 {
        return Err(tracemark::Error::Refused {
            path: job.output.clone(),
            why: "changed since this release recorded it (its SHA-256 differs from the ledger's); not replaced".into(),
        });
    }
    Ok(())
}
