//! `tracemark-embed restore`: the original of each unmodified stamped copy, rebuilt from the
//! key and its ledger row (see `tracemark::restore`). A copy is found in the ledger by its
//! SHA-256, so a copy changed in any byte is refused; the rebuilt file is checked against
//! the input's hash in the row (byte-identical restores) or the original's pixel hash
//! (pixel-identical ones) before it is written, atomically and never over an existing file
//! without --force.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::bail;
use tracemark::exit::ExitStatus;
use tracemark::io::image::{Encoded, write_encoded};
use tracemark::io::{Limits, read_input};
use tracemark::ledger::{Audit, Entry, Ledger, sha256_hex};
use tracemark::mark::pattern::KeyPatterns;
use tracemark::report::{payload_hex, sanitize};
use tracemark::restore::{self, Exactness, Restore};
use tracemark::{Error, SecretKey};

use crate::cli::RestoreArgs;

pub fn run(a: &RestoreArgs) -> anyhow::Result<ExitStatus> {
    let key = SecretKey::load_file(&a.key)?;
    let ledger = Ledger::open_verified(&a.ledger, &key)?;
    let into_folder = a.output.is_dir();
    if a.inputs.len() > 1 && !into_folder {
        bail!(
            "{}: several copies are restored into an existing folder",
            a.output.display()
        );
    }
    let outputs: Vec<PathBuf> = a
        .inputs
        .iter()
        .map(|i| {
            if into_folder {
                a.output.join(i.file_name().unwrap_or(i.as_os_str()))
            } else {
                a.output.clone()
            }
        })
        .collect();
    for (k, o) in outputs.iter().enumerate() {
        if outputs[..k].contains(o) {
            bail!(
                "{}: two copies would be restored to the same file; restore them one at a time",
                o.display()
            );
        }
    }
    let entries = ledger.entries()?;
    let by_output: HashMap<&str, &Entry> = entries
        .iter()
        .map(|e| (e.file.output_sha256.as_str(), e))
        .collect();
    let patterns = KeyPatterns::new(&key);
    let mut status = ExitStatus::Success;
    let mut audits = Vec::with_capacity(a.inputs.len());
    for (input, output) in a.inputs.iter().zip(&outputs) {
        let audit = |verdict: &str, sha256: String, bytes: u64, detail| Audit {
            action: "restore".into(),
            operator: a.operator.clone(),
            subject: input.display().to_string(),
            sha256,
            bytes,
            verdict: verdict.into(),
            named: Vec::new(),
            detail,
        };
        match restore_one(&patterns, &by_output, input, output, a.force) {
            Ok(done) => {
                if a.json {
                    println!("{}", done.json());
                } else {
                    println!("{}", sanitize(&done.line()));
                }
                audits.push(audit(
                    "restored",
                    done.entry.file.output_sha256.clone(),
                    done.entry.file.bytes,
                    done.json(),
                ));
            }
            Err(e) => {
                let msg = tracemark::chain_text(&e);
                eprintln!("tracemark-embed: error: {}", sanitize(&msg));
                status = status.merge(ExitStatus::Error);
                audits.push(audit(
                    "refused",
                    String::new(),
                    0,
                    serde_json::json!({ "error": msg }),
                ));
            }
        }
    }
    // Every restore, done or refused, is kept in the ledger's audit trail.
    crate::ledger_cmd::record(&a.ledger, &key, &audits);
    Ok(status)
}

struct Done<'a> {
    input: &'a Path,
    output: &'a Path,
    entry: &'a Entry,
    exactness: Exactness,
    side_bytes: usize,
    sha256: String,
}

impl Done<'_> {
    fn line(&self) -> String {
        let what = match self.exactness {
            Exactness::Bytes => format!(
                "byte-identical to the input released as {} (sha256 {})",
                self.entry.file.input_path, self.sha256
            ),
            Exactness::Pixels => format!(
                "pixel-identical to the input released as {} (its decoded samples and, for DICOM, its attributes; the file itself was not kept byte for byte)",
                self.entry.file.input_path
            ),
        };
        format!(
            "restored {} -> {}: {what}; release {} row {}, {} bytes of restore data",
            self.input.display(),
            self.output.display(),
            payload_hex(self.entry.release.release_id),
            self.entry.seq,
            self.side_bytes
        )
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "type": "restore",
            "input": self.input.display().to_string(),
            "output": self.output.display().to_string(),
            "exact": self.exactness.name(),
            "original": self.entry.file.input_path,
            "sha256": self.sha256,
            "original_sha256": self.entry.file.input_sha256,
            "release_id": payload_hex(self.entry.release.release_id),
            "row": self.entry.seq,
            "restore_bytes": self.side_bytes,
        })
    }
}

fn refuse(path: &Path, why: impl Into<String>) -> Error {
    Error::NotRestored {
        path: path.into(),
        why: why.into(),
    }
}

fn restore_one<'a>(
    patterns: &KeyPatterns,
    by_output: &HashMap<&str, &'a Entry>,
    input: &'a Path,
    output: &'a Path,
    force: bool,
) -> tracemark::Result<Done<'a>> {
    if same_file(input, output) {
        return Err(refuse(
            output,
            "is the stamped copy itself; restore writes a new file",
        ));
    }
    let limits = Limits::default();
    let bytes = read_input(input, &limits)?;
    let hash = sha256_hex(&bytes);
    let entry = by_output.get(hash.as_str()).copied().ok_or_else(|| {
        refuse(
            input,
            "its SHA-256 matches no file this ledger released: it was modified after stamping (re-saved, re-compressed, edited) or released under another ledger; restore needs the stamped copy exactly as released",
        )
    })?;
    let row = format!(
        "release {} row {}",
        payload_hex(entry.release.release_id),
        entry.seq
    );
    if entry.file.restore.is_empty() {
        return Err(refuse(
            input,
            format!(
                "its ledger row ({row}) holds no restore data (it was stamped with --restore-data none, or by a version that did not record it)"
            ),
        ));
    }
    let side = match Restore::decode(&entry.file.restore) {
        Some(Restore::Data(d)) => d,
        Some(Restore::Refused(why)) => return Err(refuse(input, why)),
        None => {
            return Err(refuse(
                input,
                format!("the restore data of its ledger row ({row}) does not parse"),
            ));
        }
    };
    let restored = restore::restore(
        patterns,
        entry.release.release_id,
        &side,
        input,
        &bytes,
        output,
        &limits,
    )?;
    let sha256 = sha256_hex(&restored.bytes);
    if restored.exactness == Exactness::Bytes && sha256 != entry.file.input_sha256 {
        return Err(refuse(
            input,
            format!(
                "the rebuilt file's SHA-256 {sha256} is not the input's {} recorded in {row}; nothing written",
                entry.file.input_sha256
            ),
        ));
    }
    write_encoded(
        &Encoded {
            format: restored.format,
            bytes: restored.bytes,
        },
        output,
        force,
    )
    .map_err(|e| match e {
        Error::Exists { path } => refuse(&path, "already exists; use --force to replace it"),
        other => other,
    })?;
    Ok(Done {
        input,
        output,
        entry,
        exactness: restored.exactness,
        side_bytes: entry.file.restore.len(),
        sha256,
    })
}

/// Whether two paths name one existing file.
fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}
