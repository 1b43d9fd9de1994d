//! Stamping the planned files: in parallel, one line per file (or a progress bar on a
//! terminal), a summary for a batch; a failing file is reported and the others go on.
//! Ctrl-C stops the run between files.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use tracemark::exit::{ExitStatus, interrupted, isolate};
use tracemark::io::atomic::same_file;
use tracemark::io::{Format, Limits, read_input};
use tracemark::pipeline::{Document, Release, Work, create_parent, footprint};
use tracemark::report::{
    EmbeddingRecord, ErrorRecord, ResumedRecord, SummaryRecord, payload_hex, sanitize,
};

use crate::plan::Job;
use crate::{Config, resume};

/// What a stamp refuses before reading anything: an unknown output format, the input as
/// its own output, an existing output without --force.
pub fn check_job(job: &Job, force: bool) -> tracemark::Result<()> {
    if job.output.extension().is_some() && Format::from_extension(&job.output).is_none() {
        return Err(tracemark::Error::UnknownFormat {
            path: job.output.clone(),
            why: "unknown output format; use a .png, .jpg, .tif, .webp or .dcm name".into(),
        });
    }
    if same_file(&job.input, &job.output) || job.input == job.output {
        return Err(tracemark::Error::Refused {
            path: job.output.clone(),
            why: "the output is the input; refusing to overwrite it".into(),
        });
    }
    if job.output.exists() && !force {
        return Err(tracemark::Error::Exists {
            path: job.output.clone(),
        });
    }
    Ok(())
}

/// One line for an error, with the hint a user of this tool needs (and, for a stamped
/// copy given as input, whom the ledger says it was released to).
pub fn message(err: &anyhow::Error, release: Option<&Release>) -> String {
    let text = match err.downcast_ref::<tracemark::Error>() {
        Some(tracemark::Error::Exists { path }) => {
            format!(
                "{} already exists; use --force to replace it",
                path.display()
            )
        }
        Some(tracemark::Error::AlreadyStamped { path, payload }) => {
            let issued = payload
                .zip(release)
                .and_then(|(p, r)| r.issued_to(p))
                .map(|(who, when)| format!(", issued to {who} at {when}"))
                .unwrap_or_default();
            let carried = payload.map_or_else(
                || "payload unreadable".to_string(),
                |p| format!("release {}", payload_hex(p)),
            );
            format!(
                "{}: already carries this key's mark ({carried}{issued}): it is a stamped copy; stamp the original, or use --restamp to stamp it again",
                path.display()
            )
        }
        _ => tracemark::chain_text(err.as_ref()),
    };
    sanitize(&text)
}

/// Stamps every planned file (in parallel), prints one line per file, and for a batch a
/// summary. Success when every file was written, Error when any failed, Interrupted after
/// Ctrl-C (files not started are not stamped).
pub fn stamp_all(c: &Config) -> ExitStatus {
    let start = Instant::now();
    let n = c.plan.jobs.len();
    let done = AtomicUsize::new(0);
    let failed = AtomicUsize::new(0);
    let resumed = AtomicUsize::new(0);
    let bytes_in = AtomicU64::new(0);
    let bytes_out = AtomicU64::new(0);
    let bar = (c.plan.batch && std::io::stderr().is_terminal()).then(|| {
        let bar = ProgressBar::new(n as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:40} {pos}/{len} files, {elapsed} elapsed, ETA {eta}",
            )
            .expect("static template"),
        );
        bar
    });
    // Prints above the progress bar when there is one. A closed pipe (`| head`) must not
    // abort the batch: the files still get written.
    let say = |line: &str, to_stderr: bool| {
        let print = || {
            let _ = if to_stderr {
                writeln!(std::io::stderr().lock(), "{line}")
            } else {
                writeln!(std::io::stdout().lock(), "{line}")
            };
        };
        match &bar {
            Some(b) => b.suspend(print),
            None => print(),
        }
    };
    // Links inside the input folders are not followed: say so, once each (finding 8).
    for link in &c.plan.skipped_links {
        say(
            &format!(
                "tracemark-embed: skipped {}: a symbolic link inside a folder is not followed; name its target on the command line to stamp it",
                sanitize(&link.display().to_string())
            ),
            true,
        );
    }
    c.plan.jobs.par_iter().enumerate().for_each(|(index, job)| {
        if interrupted() {
            return;
        }
        // A panic on one file (a decoder's, met by a hostile file) is that file's error.
        let result = isolate(&job.input, "stamping", || stamp(c, job, index));
        let k = done.fetch_add(1, Ordering::Relaxed) + 1;
        let prefix = if c.plan.batch && bar.is_none() {
            format!("[{k}/{n}] ")
        } else {
            String::new()
        };
        match result {
            Ok(Done::Resumed) => {
                // Not counted in the bytes and images per second: this run did not stamp it.
                resumed.fetch_add(1, Ordering::Relaxed);
                let rec = ResumedRecord {
                    kind: "resumed".into(),
                    input: job.input.display().to_string(),
                    output: job.output.display().to_string(),
                    release_id: payload_hex(c.stamper.payload()),
                };
                let line = if c.json {
                    serde_json::to_string(&rec).expect("serialisable record")
                } else {
                    format!("{prefix}{}", rec.to_text())
                };
                say(&line, false);
            }
            Ok(Done::Stamped(record, read, written)) => {
                bytes_in.fetch_add(read, Ordering::Relaxed);
                bytes_out.fetch_add(written, Ordering::Relaxed);
                let line = if c.json {
                    serde_json::to_string(&record).expect("serialisable record")
                } else {
                    format!("{prefix}{}", record.to_text())
                };
                say(&line, false);
            }
            Err(err) => {
                failed.fetch_add(1, Ordering::Relaxed);
                // The input is named once: library errors about the input already name it.
                let err = match err.path() {
                    Some(p) if p == job.input => anyhow::Error::new(err),
                    _ => anyhow::Error::new(err).context(job.input.display().to_string()),
                };
                let msg = message(&err, Some(&c.release));
                if c.json && c.plan.batch {
                    let rec = ErrorRecord {
                        kind: "error".into(),
                        path: job.input.display().to_string(),
                        error: msg.clone(),
                    };
                    say(&serde_json::to_string(&rec).expect("serialisable"), false);
                }
                say(&format!("tracemark-embed: error: {prefix}{msg}"), true);
            }
        }
        if let Some(b) = &bar {
            b.inc(1);
        }
    });
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let (failed, finished) = (failed.into_inner(), done.into_inner());
    let resumed = resumed.into_inner();
    let head = match c.release.ledger_head() {
        Ok(head) => head.map(|h| h.to_string()),
        Err(e) => {
            say(
                &format!("tracemark-embed: error: {}", sanitize(&e.to_string())),
                true,
            );
            return ExitStatus::Negative;
        }
    };
    if c.plan.batch {
        let seconds = start.elapsed().as_secs_f64();
        let files = finished - failed - resumed;
        let input_bytes = bytes_in.into_inner();
        let summary = SummaryRecord {
            kind: "summary".into(),
            release_id: payload_hex(c.stamper.payload()),
            recipient: c.release.meta().map(|m| m.recipient.clone()),
            files,
            resumed,
            failed,
            skipped_links: c.plan.skipped_links.len(),
            input_bytes,
            output_bytes: bytes_out.into_inner(),
            seconds: round2(seconds),
            images_per_second: round2(files as f64 / seconds.max(1e-9)),
            mb_per_second: round2(input_bytes as f64 / 1e6 / seconds.max(1e-9)),
            ledger_head: head,
        };
        let line = if c.json {
            serde_json::to_string(&summary).expect("serialisable")
        } else {
            summary.to_text()
        };
        say(&line, false);
    } else if let (Some(h), false) = (head, c.json) {
        say(
            &format!("ledger head (keep it outside the ledger): {h}"),
            false,
        );
    }
    if finished < n {
        say(
            &format!(
                "tracemark-embed: interrupted: {} of {n} file(s) not stamped",
                n - finished
            ),
            true,
        );
        ExitStatus::Interrupted
    } else if failed == 0 {
        ExitStatus::Success
    } else {
        ExitStatus::Error
    }
}

/// What became of one planned file.
enum Done {
    /// Stamped and written: its record, the bytes read and written.
    Stamped(Box<EmbeddingRecord>, u64, u64),
    /// Written by the release this run resumes, and verified against its ledger row.
    Resumed,
}

/// Stamps one file: read, decode, mark, encode, write the output beside its final name,
/// then (with a ledger) record it and move it into place inside one ledger transaction.
/// `index` is the file's place in the release (it picks the file's tile variant). A file
/// the resumed release already wrote is verified instead.
fn stamp(c: &Config, job: &Job, index: usize) -> tracemark::Result<Done> {
    let start = Instant::now();
    let options = c.stamper.options();
    let limits = Limits::default();
    if let Some(row) = c.resume.as_ref().and_then(|r| r.done.get(&job.output)) {
        resume::verify(job, row, &limits)?;
        return Ok(Done::Resumed);
    }
    if c.plan.batch {
        check_job(job, options.write.force)?;
    }
    if c.release.meta().is_some() {
        // The ledger records names as text: a name that is not UTF-8 would be stored
        // lossily, and two files could appear under one name (finding 10).
        for p in [&job.input, &job.output] {
            if p.to_str().is_none() {
                return Err(tracemark::Error::Refused {
                    path: p.clone(),
                    why: "the name is not valid UTF-8, and the ledger records names as text (two such files could not be told apart); rename it".into(),
                });
            }
        }
    }
    let input_bytes = read_input(&job.input, &limits)?;
    // Held until the file is written: the estimate covers decoding, marking and encoding.
    let need = footprint(&job.input, &input_bytes, &limits, Work::Stamp)?;
    let _admitted = c.budget.admit(&job.input, need)?;
    let doc = Document::decode(&job.input, &input_bytes, &limits)?;
    let stamped = c
        .stamper
        .stamp_file(doc, &input_bytes, &job.output, index)?;
    if c.plan.batch {
        create_parent(&job.output)?;
    }
    c.release
        .write(&stamped, &job.input, &input_bytes, &job.output, options)?;
    let mut record = stamped.record;
    record.time_ms = round2(start.elapsed().as_secs_f64() * 1e3);
    Ok(Done::Stamped(
        Box::new(record),
        input_bytes.len() as u64,
        stamped.encoded.bytes.len() as u64,
    ))
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}
