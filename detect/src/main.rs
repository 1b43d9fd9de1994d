//! tracemark-detect: blind detection of a tracemark watermark.
//!
//! Glue only: parse, build the library's [`Examiner`] (with the ledger's releases), examine
//! the inputs in parallel, print in input order. The attribution policy is the library's.

mod cli;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use tracemark::SecretKey;
use tracemark::exit::{ExitStatus, install_interrupt_handler, install_panic_hook, interrupted};
use tracemark::ledger::{Audit, Ledger, shown_location};
use tracemark::mark::detect::DetectOptions;
use tracemark::pipeline::{Examiner, MemoryBudget, View};
use tracemark::report::{
    DetectionRecord, ErrorRecord, ExaminationSummaryRecord, Verdict, sanitize,
};

/// The largest false-alarm probability at which a mark may be claimed.
const MAX_P_LIMIT: f64 = 1e-3;
/// Side of the view of each examined image shown in a report, px.
const REPORT_VIEW_SIDE: usize = 320;

/// An examination, its view for a report, and when it ended (UTC ms).
type Examined = (tracemark::Result<(DetectionRecord, Option<View>)>, i64);

/// The files to examine: inputs as given, folders walked (recursively, in name order, as the
/// stamping side walks them); whether this is a batch (several files or a folder); and the
/// symbolic links met inside folders, not followed.
/// A folder without images is an error only when there is nothing at all to examine;
/// otherwise one warning line, and the other inputs are examined.
fn expand(inputs: &[PathBuf], purpose: &str) -> anyhow::Result<(Vec<PathBuf>, bool, Vec<PathBuf>)> {
    let (mut files, mut links, mut empty) = (Vec::new(), Vec::new(), Vec::new());
    let mut folders = false;
    for input in inputs {
        if input.is_dir() {
            folders = true;
            let before = files.len();
            tracemark::io::walk::images(input, None, &mut files, &mut links)?;
            if files.len() == before {
                empty.push(input.display().to_string());
            }
        } else {
            files.push(input.clone());
        }
    }
    let looked =
        "looked for .png, .jpg, .jpeg, .tif, .tiff, .webp, .dcm and DICOM files without extension";
    if files.is_empty() {
        anyhow::bail!("no images {purpose} in {} ({looked})", empty.join(", "));
    }
    for folder in &empty {
        eprintln!(
            "tracemark-detect: warning: no images in {} ({looked})",
            sanitize(folder)
        );
    }
    let batch = folders || files.len() > 1;
    Ok((files, batch, links))
}

fn main() -> ExitCode {
    tracemark::pipeline::reuse_freed_memory();
    install_interrupt_handler();
    install_panic_hook();
    match run(cli::Cli::parse()) {
        Ok(status) => status.into(),
        Err(err) => {
            eprintln!(
                "tracemark-detect: error: {}",
                sanitize(&tracemark::chain_text(err.as_ref()))
            );
            // A ledger that fails verification is a finding (exit 1), not a failure to run.
            err.downcast_ref()
                .map_or(ExitStatus::Error, ExitStatus::for_error)
                .into()
        }
    }
}

fn run(cli: cli::Cli) -> anyhow::Result<ExitStatus> {
    // A claim must mean something: above 1e-3, one unmarked image in a thousand would be
    // "marked", and with a ledger an innocent could be named (issue 10, finding 5).
    if !(cli.max_p > 0.0 && cli.max_p <= MAX_P_LIMIT) {
        anyhow::bail!(
            "--max-p {} is out of range: use a false-alarm probability in (0, {MAX_P_LIMIT}]",
            cli.max_p
        );
    }
    let key = SecretKey::load_file(&cli.key)?;
    let mut examiner = Examiner::new(
        &key,
        DetectOptions {
            max_p: cli.max_p,
            keystones: cli.keystones,
            ..DetectOptions::default()
        },
    );
    if let Some(bytes) = cli.max_memory {
        examiner = examiner.with_memory_budget(MemoryBudget::new(bytes));
    }
    if let Some(path) = &cli.ledger {
        examiner = examiner.with_ledger(&Ledger::open_verified(path, &key)?)?;
    }
    if !cli.original.is_empty() {
        let (originals, _, links) = expand(&cli.original, "to use as originals")?;
        for link in &links {
            eprintln!(
                "tracemark-detect: skipped original {}: a symbolic link inside a folder is not followed; name its target to use it",
                sanitize(&link.display().to_string())
            );
        }
        for path in &originals {
            examiner = examiner.with_original(path)?;
        }
    }
    let start = Instant::now();
    let (inputs, batch, links) = expand(&cli.inputs, "to examine")?;
    for link in &links {
        eprintln!(
            "tracemark-detect: skipped {}: a symbolic link inside a folder is not followed; name its target on the command line to examine it",
            sanitize(&link.display().to_string())
        );
    }
    let bar = (batch && std::io::stderr().is_terminal()).then(|| {
        let bar = ProgressBar::new(inputs.len() as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:40} {pos}/{len} files, {elapsed} elapsed, ETA {eta}",
            )
            .expect("static template"),
        );
        bar
    });
    // Inputs are examined in parallel (one image per thread) and reported in input order;
    // after Ctrl-C the inputs not started are skipped.
    let view_side = cli.report.as_ref().map(|_| REPORT_VIEW_SIDE);
    let examined: Vec<Option<Examined>> = inputs
        .par_iter()
        .map(|input| {
            (!interrupted()).then(|| {
                let r = examiner.examine_with_view(input, view_side);
                if let Some(b) = &bar {
                    b.inc(1);
                }
                (r, tracemark::report::now_ms())
            })
        })
        .collect();
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let mut views = Vec::with_capacity(examined.len());
    let results: Vec<Option<tracemark::Result<DetectionRecord>>> = examined
        .into_iter()
        .map(|e| {
            e.map(|(r, at)| {
                r.map(|(rec, view)| {
                    views.push((at, view));
                    rec
                })
                .inspect_err(|_| views.push((at, None)))
            })
        })
        .collect();
    let audit_recorded = cli
        .ledger
        .as_ref()
        .is_some_and(|path| record_examinations(path, &key, &cli, &inputs, &results));
    let mut status = ExitStatus::Success;
    let mut stdout = std::io::stdout().lock();
    // Once the reader of stdout has gone (`| head`), nothing more is printed, but the exit
    // status still covers every input (issue 11, finding 6: it used to be 0).
    let mut closed = false;
    for (input, result) in inputs.iter().zip(&results) {
        let written = match result {
            None => {
                status = status.merge(ExitStatus::Interrupted);
                continue;
            }
            Some(Ok(rec)) => {
                if rec.verdict == Verdict::NoMark {
                    status = status.merge(ExitStatus::Negative);
                }
                if closed {
                    Ok(())
                } else if cli.json {
                    writeln!(stdout, "{}", serde_json::to_string(&rec)?)
                } else {
                    writeln!(stdout, "{}", rec.to_text())
                }
            }
            Some(Err(err)) => {
                status = status.merge(ExitStatus::Error);
                let msg = err.to_string();
                eprintln!("tracemark-detect: error: {}", sanitize(&msg));
                if cli.json && !closed {
                    let rec = ErrorRecord {
                        kind: "error".into(),
                        path: input.display().to_string(),
                        error: msg,
                    };
                    writeln!(stdout, "{}", serde_json::to_string(&rec)?)
                } else {
                    Ok(())
                }
            }
        };
        if let Err(e) = written {
            // A closed pipe is not an error of ours: stop printing, keep the status.
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                return Err(e.into());
            }
            closed = true;
        }
    }
    if batch && !closed {
        let summary = summarise(&results, links.len(), start.elapsed().as_secs_f64());
        let line = if cli.json {
            serde_json::to_string(&summary)?
        } else {
            summary.to_text()
        };
        if let Err(e) = writeln!(stdout, "{line}")
            && e.kind() != std::io::ErrorKind::BrokenPipe
        {
            return Err(e.into());
        }
    }
    // The report comes after the results: a report that cannot be written loses nothing
    // printed above.
    if let Some(dir) = &cli.report
        && let Err(e) = write_report(dir, &key, &cli, &inputs, &results, views, audit_recorded)
    {
        eprintln!(
            "tracemark-detect: error: report not written: {}",
            sanitize(&tracemark::chain_text(e.as_ref()))
        );
        status = status.merge(ExitStatus::Error);
    }
    if status == ExitStatus::Interrupted {
        eprintln!("tracemark-detect: interrupted: inputs not examined were skipped");
    }
    Ok(status)
}

/// The counts of a run over several files.
fn summarise(
    results: &[Option<tracemark::Result<DetectionRecord>>],
    skipped_links: usize,
    seconds: f64,
) -> ExaminationSummaryRecord {
    let done: Vec<&DetectionRecord> = results.iter().flatten().flatten().collect();
    let round2 = |v: f64| (v * 100.0).round() / 100.0;
    ExaminationSummaryRecord {
        kind: "summary".into(),
        files: done.len(),
        marked: done.iter().filter(|r| r.verdict == Verdict::Marked).count(),
        named: done.iter().filter(|r| !r.named.is_empty()).count(),
        failed: results.iter().flatten().filter(|r| r.is_err()).count(),
        skipped: results.iter().filter(|r| r.is_none()).count(),
        skipped_links,
        seconds: round2(seconds),
        images_per_second: round2(done.len() as f64 / seconds.max(1e-9)),
    }
}

/// Appends one audit row per examination to the ledger (issue 13's chain of custody). A
/// ledger that cannot be written (a read-only copy, write-once media) is still read; the
/// examinations are then not recorded, and one line says so. Whether they were recorded.
fn record_examinations(
    path: &std::path::Path,
    key: &SecretKey,
    cli: &cli::Cli,
    inputs: &[PathBuf],
    results: &[Option<tracemark::Result<DetectionRecord>>],
) -> bool {
    let audits: Vec<Audit> = inputs
        .iter()
        .zip(results)
        .filter_map(|(input, r)| {
            let r = r.as_ref()?;
            Some(match r {
                Ok(rec) => Audit {
                    action: "examine".into(),
                    operator: cli.operator.clone(),
                    subject: input.display().to_string(),
                    sha256: rec.sha256.clone().unwrap_or_default(),
                    bytes: rec.bytes.unwrap_or(0),
                    verdict: if rec.named.is_empty() {
                        serde_json::to_value(rec.verdict)
                            .ok()
                            .and_then(|v| v.as_str().map(String::from))
                            .unwrap_or_default()
                    } else {
                        "named".into()
                    },
                    named: rec
                        .named
                        .iter()
                        .filter_map(|n| {
                            let id = u64::from_str_radix(&n.release_id, 16).ok()?;
                            Some((id, n.recipient.clone()))
                        })
                        .collect(),
                    detail: serde_json::json!({
                        "p_value": rec.p_value,
                        "payload": rec.payload,
                        "named_p": rec.named.iter().map(|n| n.p_value).collect::<Vec<_>>(),
                        "key_id": rec.key_id,
                    }),
                },
                Err(e) => Audit {
                    action: "examine".into(),
                    operator: cli.operator.clone(),
                    subject: input.display().to_string(),
                    sha256: String::new(),
                    bytes: 0,
                    verdict: "error".into(),
                    named: Vec::new(),
                    detail: serde_json::json!({ "error": e.to_string() }),
                },
            })
        })
        .collect();
    let recorded = Ledger::record_audits(path, key, &audits);
    if let Err(e) = &recorded {
        eprintln!(
            "tracemark-detect: warning: {}: the examinations are not recorded in its audit trail ({})",
            sanitize(&shown_location(path).display().to_string()),
            sanitize(&tracemark::chain_text(e))
        );
    }
    recorded.is_ok()
}

/// Writes the evidence report of this run into `dir` (see `tracemark::evidence`).
fn write_report(
    dir: &std::path::Path,
    key: &SecretKey,
    cli: &cli::Cli,
    inputs: &[PathBuf],
    results: &[Option<tracemark::Result<DetectionRecord>>],
    views: Vec<(i64, Option<View>)>,
    audit_recorded: bool,
) -> anyhow::Result<()> {
    use tracemark::evidence::{Context, Examination, LedgerEvidence};
    let mut items = Vec::new();
    let mut views = views.into_iter();
    for (input, r) in inputs.iter().zip(results) {
        let Some(r) = r else { continue };
        let (at, view) = views.next().unwrap_or((0, None));
        items.push(Examination {
            path: input.display().to_string(),
            examined_ms: at,
            outcome: r.as_ref().map_err(ToString::to_string).cloned(),
            view,
        });
    }
    let ledger = match &cli.ledger {
        Some(path) => {
            // The head verifies the whole chain (a broken ledger is an error naming its
            // row) and gives the rows it verified, in one snapshot.
            let l = Ledger::open_read_only(path, key)?;
            let head = l.anchor(tracemark::report::now_ms())?;
            Some(LedgerEvidence {
                path: shown_location(path).display().to_string(),
                rows_verified: head.rows,
                audit_recorded,
                head: head.to_string(),
                // Only the releases the report mentions: the others are nobody's business here.
                releases: l
                    .entries()?
                    .into_iter()
                    .filter(|e| {
                        let id = tracemark::report::payload_hex(e.release.release_id);
                        results.iter().flatten().flatten().any(|r| {
                            r.named.iter().any(|n| n.release_id == id)
                                || r.accused.iter().any(|a| a.release_id == id)
                                || r.release.as_ref().is_some_and(|rr| rr.release_id == id)
                        })
                    })
                    .collect(),
            })
        }
        None => None,
    };
    let ctx = Context {
        operator: cli.operator.clone(),
        generated_ms: tracemark::report::now_ms(),
        key_id: key.key_id(),
        ledger,
    };
    tracemark::evidence::write(dir, &ctx, &items)?;
    eprintln!(
        "tracemark-detect: report of {} file(s): {}",
        items.len(),
        sanitize(&dir.join("index.html").display().to_string())
    );
    Ok(())
}
