//! tracemark-detect: blind detection of a tracemark watermark.
//!
//! Glue only: parse, build the library's [`Examiner`] (with the ledger's releases), examine
//! the inputs in parallel, print in input order. The attribution policy is the library's.

mod cli;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use rayon::prelude::*;
use tracemark::SecretKey;
use tracemark::exit::{ExitStatus, install_interrupt_handler, install_panic_hook, interrupted};
use tracemark::ledger::Ledger;
use tracemark::mark::detect::DetectOptions;
use tracemark::pipeline::{Examiner, MemoryBudget};
use tracemark::report::{DetectionRecord, ErrorRecord, Verdict, sanitize};

/// The largest false-alarm probability at which a mark may be claimed.
const MAX_P_LIMIT: f64 = 1e-3;

fn main() -> ExitCode {
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
    let mut examiner = Examiner::new(&key, DetectOptions { max_p: cli.max_p });
    if let Some(bytes) = cli.max_memory {
        examiner = examiner.with_memory_budget(MemoryBudget::new(bytes));
    }
    if let Some(path) = &cli.ledger {
        examiner = examiner.with_ledger(&Ledger::open_verified(path, &key)?)?;
    }
    // Inputs are examined in parallel (one image per thread) and reported in input order;
    // after Ctrl-C the inputs not started are skipped.
    let results: Vec<Option<tracemark::Result<DetectionRecord>>> = cli
        .inputs
        .par_iter()
        .map(|input| (!interrupted()).then(|| examiner.examine(input)))
        .collect();
    let mut status = ExitStatus::Success;
    let mut stdout = std::io::stdout().lock();
    // Once the reader of stdout has gone (`| head`), nothing more is printed, but the exit
    // status still covers every input (issue 11, finding 6: it used to be 0).
    let mut closed = false;
    for (input, result) in cli.inputs.iter().zip(results) {
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
    if status == ExitStatus::Interrupted {
        eprintln!("tracemark-detect: interrupted: inputs not examined were skipped");
    }
    Ok(status)
}
