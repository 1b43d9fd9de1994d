//! tracemark-embed: stamp images with a per-recipient watermark.
//!
//! Glue only (after ripgrep's core/main.rs): parse the command line, build a validated
//! [`Config`] before touching any file, hand the work to the library's pipeline
//! (`tracemark::pipeline`), print. The batch driver is in `batch.rs`, the folder walk in
//! `plan.rs`, the ledger commands in `ledger_cmd.rs`.

mod batch;
mod cli;
mod ledger_cmd;
mod plan;
mod restore_cmd;
mod resume;

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Parser;
use tracemark::SecretKey;
use tracemark::exit::{ExitStatus, install_interrupt_handler, install_panic_hook};
use tracemark::io::image::WriteOptions;
use tracemark::key::random_release_id;
use tracemark::ledger::{Ledger, ReleaseMeta};
use tracemark::mark::embed::EmbedOptions;
use tracemark::pipeline::{MemoryBudget, Release, StampOptions, Stamper};
use tracemark::report::{parse_payload, payload_hex, sanitize};

fn main() -> ExitCode {
    tracemark::pipeline::reuse_freed_memory();
    install_interrupt_handler();
    install_panic_hook();
    match run(cli::Cli::parse()) {
        Ok(status) => status.into(),
        Err(err) => {
            eprintln!("tracemark-embed: error: {}", batch::message(&err, None));
            err.downcast_ref()
                .map_or(ExitStatus::Error, ExitStatus::for_error)
                .into()
        }
    }
}

/// Validated settings: everything checked before any file is written.
pub struct Config {
    /// The stamper for this run's key, payload and options.
    pub stamper: Stamper,
    /// Where outputs go (and the ledger that records them).
    pub release: Release,
    /// The files to stamp.
    pub plan: plan::Plan,
    /// The release this run continues, if any.
    pub resume: Option<resume::Resume>,
    /// Memory the files stamped at once may take together.
    pub budget: MemoryBudget,
    /// JSON Lines instead of human lines.
    pub json: bool,
}

fn run(cli: cli::Cli) -> anyhow::Result<ExitStatus> {
    match cli.command {
        Some(cli::Command::Keygen { keyfile }) => {
            let key = SecretKey::generate()?;
            key.create_file(&keyfile)?;
            println!(
                "wrote key {} (id {}, mode 0600)",
                sanitize(&keyfile.display().to_string()),
                key.key_id()
            );
            Ok(ExitStatus::Success)
        }
        Some(cli::Command::Ledger(args)) => ledger_cmd::run(args),
        Some(cli::Command::Restore(args)) => restore_cmd::run(&args),
        None => Ok(batch::stamp_all(&configure(cli.embed)?)),
    }
}

fn configure(a: cli::EmbedArgs) -> anyhow::Result<Config> {
    let key_path = a
        .key
        .context("missing --key KEYFILE (create one with `tracemark-embed keygen KEYFILE`)")?;
    let given = a.payload.as_deref().map(parse_payload).transpose()?;
    if given.is_none() && a.ledger.is_none() {
        bail!("missing --payload HEX (16 hex digits), or --ledger to draw one");
    }
    if a.ledger.is_some() && a.recipient.as_deref().is_none_or(|r| r.trim().is_empty()) {
        bail!("--ledger needs --recipient NAME: a release is recorded for someone");
    }
    if a.ledger.is_none() && (a.recipient.is_some() || a.purpose.is_some() || a.operator.is_some())
    {
        bail!("--recipient, --purpose and --operator are recorded in a ledger: add --ledger PATH");
    }
    if a.inputs.is_empty() {
        bail!("missing INPUT image(s) or folder(s)");
    }
    let output = a
        .output
        .context("missing -o OUTPUT (a file, or a folder for a batch)")?;
    let options = StampOptions {
        embed: EmbedOptions::new()
            .with_psnr_db(a.psnr)
            .with_mask_gamma(a.mask_gamma),
        write: WriteOptions {
            jpeg_quality: a.jpeg_quality,
            force: a.force,
        },
        max_stored_change: a.max_stored_change,
        keep_uids: a.keep_uids,
        restamp: a.restamp,
        restore_data: a.restore_data.into(),
    };
    if let Err(e) = options.embed.validate() {
        let flag = match &e {
            tracemark::Error::OutOfRange {
                what: "PSNR target",
                ..
            } => "--psnr",
            _ => "--mask-gamma",
        };
        bail!("{flag}: {e}");
    }
    let plan = plan::plan(&a.inputs, &output)?;
    // An output folder that cannot be written is found now, not after decoding and
    // marking every file (issue 11, finding 10).
    check_output_dir(&plan, &output)?;
    let key = SecretKey::load_file(&key_path)?;
    let mut payload = given.unwrap_or_default();
    let mut resume = None;
    let release = match a.ledger {
        Some(path) => {
            let ledger = Ledger::open(&path, &key)?;
            ledger.check_writable()?;
            ledger.ensure_intact()?;
            let recipient = a.recipient.unwrap_or_default();
            // The same command run again continues its release (unless --force asks for
            // the outputs to be replaced).
            if !a.force {
                resume = resume::find(&ledger, &plan.jobs, &recipient, given)?;
            }
            payload = match (given, &resume) {
                (Some(p), _) => p,
                (None, Some(r)) => r.release_id,
                (None, None) => random_release_id()?,
            };
            if let Some(prior) = ledger.release(payload)?.first()
                && prior.release.recipient != recipient
            {
                bail!(
                    "release id {} was already issued to another recipient in {}; use a new id",
                    payload_hex(payload),
                    path.display()
                );
            }
            let meta = ReleaseMeta {
                release_id: payload,
                recipient,
                purpose: a.purpose,
                operator: a.operator,
            };
            Release::recorded(ledger, meta)
        }
        None => Release::unrecorded(),
    };
    let resumed = |job: &plan::Job| {
        resume
            .as_ref()
            .is_some_and(|r| r.done.contains_key(&job.output))
    };
    if !plan.batch && !resumed(&plan.jobs[0]) {
        // One file: refuse up front what the write would refuse, before any work.
        batch::check_job(&plan.jobs[0], a.force)?;
    }
    Ok(Config {
        stamper: Stamper::new(&key, payload, options)?,
        release,
        plan,
        resume,
        budget: a
            .max_memory
            .map_or_else(MemoryBudget::from_machine, MemoryBudget::new),
        json: a.json,
    })
}

/// Checks that outputs can be created where they go: in a batch's output folder or, when it
/// does not exist yet, in its nearest existing parent (where it will be created); in a single
/// output's folder. A temporary probe file is created and removed; nothing else is made.
fn check_output_dir(plan: &plan::Plan, output: &Path) -> anyhow::Result<()> {
    let start = if plan.batch {
        output
    } else {
        match output.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        }
    };
    let Some(dir) = start
        .ancestors()
        .find(|d| d.is_dir() || d.as_os_str().is_empty())
    else {
        return Ok(());
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    tracemark::io::atomic::check_writable_dir(dir)?;
    Ok(())
}
