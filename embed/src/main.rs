//! tracemark-embed: stamp images with a per-recipient watermark.

mod cli;
mod ledger_cmd;
mod plan;

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use tracemark::SecretKey;
use tracemark::io::dicom::{self, DicomImage};
use tracemark::io::image::{Encoded, WriteOptions, decode, encode_for, read_bytes, stage_encoded};
use tracemark::io::{Format, Limits, atomic::same_file};
use tracemark::ledger::{FileRecord, Ledger, ReleaseMeta, sha256_hex};
use tracemark::mark::detect::{DetectOptions, Detector};
use tracemark::mark::embed::{EmbedOptions, embed};
use tracemark::mark::pattern::KeyPatterns;
use tracemark::raster::ssim;
use tracemark::report::{
    DicomRecord, EmbeddingRecord, ErrorRecord, SummaryRecord, iso_utc, parse_payload, payload_hex,
    sanitize,
};

use plan::{Job, Plan};

fn main() -> ExitCode {
    match run(cli::Cli::parse()) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("tracemark-embed: error: {}", sanitize(&format!("{err:#}")));
            ExitCode::from(2)
        }
    }
}

/// Validated settings: everything checked before any file is written.
struct Config {
    /// The ledger (one writer at a time) and the release being recorded, with --ledger.
    ledger: Option<(Mutex<Ledger>, ReleaseMeta)>,
    key_id: String,
    /// The key's patterns (embedding) and detector (DICOM montage self-check).
    detector: Detector,
    /// Keyed secret for deterministic DICOM UIDs (never the key itself).
    uid_secret: SecretKey,
    keep_uids: bool,
    max_stored_change: Option<u32>,
    payload: u64,
    plan: Plan,
    embed: EmbedOptions,
    write: WriteOptions,
    json: bool,
}

fn run(cli: cli::Cli) -> anyhow::Result<ExitCode> {
    if let Some(cli::Command::Keygen { keyfile }) = cli.command {
        let key = SecretKey::generate()?;
        key.create_file(&keyfile)?;
        println!(
            "wrote key {} (id {}, mode 0600)",
            sanitize(&keyfile.display().to_string()),
            key.key_id()
        );
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(cli::Command::Ledger {
        key,
        ledger,
        action,
    }) = cli.command
    {
        return ledger_cmd::run(&key, &ledger, action);
    }
    let config = configure(cli.embed)?;
    Ok(stamp_all(&config))
}

fn configure(a: cli::EmbedArgs) -> anyhow::Result<Config> {
    let key_path = a
        .key
        .context("missing --key KEYFILE (create one with `tracemark-embed keygen KEYFILE`)")?;
    let payload = match (&a.payload, &a.ledger) {
        (Some(p), _) => parse_payload(p)?,
        (None, Some(_)) => random_release_id()?,
        (None, None) => bail!("missing --payload HEX (16 hex digits), or --ledger to draw one"),
    };
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
    let embed = EmbedOptions::new()
        .with_psnr_db(a.psnr)
        .with_mask_gamma(a.mask_gamma);
    embed.validate()?;
    let plan = plan::plan(&a.inputs, &output)?;
    if !plan.batch {
        // One file: refuse up front what the write would refuse, before any work.
        let job = &plan.jobs[0];
        check_job(job, a.force)?;
    }
    let key = SecretKey::load_file(&key_path)?;
    let ledger = match a.ledger {
        Some(path) => {
            let ledger = Ledger::open(&path, &key)?;
            ledger.check_writable()?;
            let recipient = a.recipient.unwrap_or_default();
            if let Some(prior) = ledger.release(payload)?.first()
                && prior.release.recipient != recipient
            {
                bail!(
                    "release id {} was already issued to another recipient in {}; use a new id",
                    payload_hex(payload),
                    path.display()
                );
            }
            Some((
                Mutex::new(ledger),
                ReleaseMeta {
                    release_id: payload,
                    recipient,
                    purpose: a.purpose,
                    operator: a.operator,
                },
            ))
        }
        None => None,
    };
    Ok(Config {
        ledger,
        key_id: key.key_id(),
        detector: Detector::from_patterns(KeyPatterns::new(&key)),
        uid_secret: SecretKey::from_bytes(tracemark::prng::derive(
            &key,
            &[b"tracemark/v1/dicom-uid"],
        )),
        keep_uids: a.keep_uids,
        max_stored_change: a.max_stored_change,
        payload,
        plan,
        embed,
        write: WriteOptions {
            jpeg_quality: a.jpeg_quality,
            force: a.force,
        },
        json: a.json,
    })
}

/// What a stamp refuses before reading anything: an unknown output format, the input as
/// its own output, an existing output without --force.
fn check_job(job: &Job, force: bool) -> anyhow::Result<()> {
    if job.output.extension().is_some() && Format::from_extension(&job.output).is_none() {
        bail!(
            "{}: unknown output format; use a .png, .jpg, .tif, .webp or .dcm name",
            job.output.display()
        );
    }
    if same_file(&job.input, &job.output) || job.input == job.output {
        bail!(
            "output {} is the input; refusing to overwrite it",
            job.output.display()
        );
    }
    if job.output.exists() && !force {
        bail!(
            "{} already exists; use --force to replace it",
            job.output.display()
        );
    }
    Ok(())
}

/// Stamps every planned file (in parallel), prints one line per file, and for a batch a
/// summary. Exit 0 when every file was written, 2 when any failed.
fn stamp_all(c: &Config) -> ExitCode {
    let start = Instant::now();
    let n = c.plan.jobs.len();
    let done = AtomicUsize::new(0);
    let failed = AtomicUsize::new(0);
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
    // Prints above the progress bar when there is one.
    let say = |line: &str, to_stderr: bool| {
        // A closed pipe (`| head`) must not abort the batch: the files still get written.
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
    c.plan.jobs.par_iter().for_each(|job| {
        let result = stamp(c, job);
        let k = done.fetch_add(1, Ordering::Relaxed) + 1;
        let prefix = if c.plan.batch && bar.is_none() {
            format!("[{k}/{n}] ")
        } else {
            String::new()
        };
        match result {
            Ok((record, read, written)) => {
                bytes_in.fetch_add(read, Ordering::Relaxed);
                bytes_out.fetch_add(written, Ordering::Relaxed);
                let line = if c.json {
                    serde_json::to_string(&record).expect("serialisable record")
                } else {
                    format!("{prefix}{}", describe(&record))
                };
                say(&line, false);
            }
            Err(err) => {
                failed.fetch_add(1, Ordering::Relaxed);
                let path = job.input.display().to_string();
                let mut msg = format!("{err:#}");
                if !msg.contains(&path) {
                    msg = format!("{path}: {msg}");
                }
                let msg = sanitize(&msg);
                if c.json && c.plan.batch {
                    let rec = ErrorRecord {
                        kind: "error".into(),
                        path,
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
    let failed = failed.into_inner();
    if c.plan.batch {
        let seconds = start.elapsed().as_secs_f64();
        let files = n - failed;
        let input_bytes = bytes_in.into_inner();
        let summary = SummaryRecord {
            kind: "summary".into(),
            release_id: payload_hex(c.payload),
            recipient: c.ledger.as_ref().map(|(_, m)| m.recipient.clone()),
            files,
            failed,
            input_bytes,
            output_bytes: bytes_out.into_inner(),
            seconds: round2(seconds),
            images_per_second: round2(files as f64 / seconds.max(1e-9)),
            mb_per_second: round2(input_bytes as f64 / 1e6 / seconds.max(1e-9)),
        };
        let line = if c.json {
            serde_json::to_string(&summary).expect("serialisable")
        } else {
            format!(
                "release {}{}: {} file(s) stamped, {} failed; {:.1} MB in, {:.1} MB out, {:.2} s ({:.1} images/s, {:.1} MB/s)",
                summary.release_id,
                summary
                    .recipient
                    .as_deref()
                    .map(|r| format!(" for {}", sanitize(r)))
                    .unwrap_or_default(),
                summary.files,
                summary.failed,
                summary.input_bytes as f64 / 1e6,
                summary.output_bytes as f64 / 1e6,
                summary.seconds,
                summary.images_per_second,
                summary.mb_per_second
            )
        };
        say(&line, false);
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}

/// Stamps one file: decode, mark, encode, write the output beside its final name, then
/// (with a ledger) record it and move it into place inside one ledger transaction.
/// Returns the record and the bytes read and written.
fn stamp(c: &Config, job: &Job) -> anyhow::Result<(EmbeddingRecord, u64, u64)> {
    let start = Instant::now();
    if c.plan.batch {
        check_job(job, c.write.force)?;
    }
    let input_bytes = read_bytes(&job.input, &Limits::default())?;
    let is_dicom = Format::sniff(&input_bytes) == Some(Format::Dicom);
    let out_format = Format::from_extension(&job.output)
        .or_else(|| (is_dicom && job.output.extension().is_none()).then_some(Format::Dicom));
    let (encoded, mut record) = match (is_dicom, out_format) {
        (true, Some(Format::Dicom)) => mark_dicom(c, job, &input_bytes)?,
        (true, _) => bail!(
            "{}: a DICOM input is written as DICOM: name the output .dcm",
            job.input.display()
        ),
        (false, Some(Format::Dicom)) => bail!(
            "{}: only DICOM inputs can be written as DICOM",
            job.input.display()
        ),
        (false, _) => mark_image(c, job, &input_bytes)?,
    };
    if let Some(dir) = job.output.parent()
        && !dir.as_os_str().is_empty()
        && c.plan.batch
    {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create folder", dir.display()))?;
    }
    // The slow part of the write happens outside the ledger lock.
    let staged = stage_encoded(&encoded, &job.output, c.write.force)?;
    match &c.ledger {
        None => staged.persist()?,
        Some((ledger, meta)) => {
            let mut params = serde_json::json!({
                "psnr_db": c.embed.psnr_db,
                "mask_gamma": c.embed.mask_gamma,
                "gain": record.gain,
                "jpeg_quality": c.write.jpeg_quality,
            });
            if let Some(d) = &record.dicom {
                params["max_stored_change"] = c.max_stored_change.into();
                params["keep_uids"] = c.keep_uids.into();
                params["sop_instance_uid"] = d.sop_instance_uid.clone().into();
            }
            let file = FileRecord {
                input_path: display(&job.input),
                input_sha256: sha256_hex(&input_bytes),
                output_path: display(&job.output),
                output_sha256: sha256_hex(&encoded.bytes),
                format: encoded.format.name().into(),
                bytes: encoded.bytes.len() as u64,
                params: params.to_string(),
            };
            let written = std::cell::Cell::new(false);
            let mut ledger = ledger
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let appended = ledger.append(meta, &file, now_ms(), || {
                staged.persist()?;
                written.set(true);
                Ok(())
            });
            if let Err(err) = appended {
                // The row was not committed: the file must not stay either.
                if written.get() {
                    let _ = std::fs::remove_file(&job.output);
                }
                return Err(err.into());
            }
        }
    }
    record.time_ms = round2(start.elapsed().as_secs_f64() * 1e3);
    Ok((record, input_bytes.len() as u64, encoded.bytes.len() as u64))
}

/// Marks a PNG, JPEG, TIFF or WebP image.
fn mark_image(c: &Config, job: &Job, input: &[u8]) -> anyhow::Result<(Encoded, EmbeddingRecord)> {
    let (original, _) = decode(&job.input, input, &Limits::default())?;
    let luma = original.luminance();
    let e = embed(&luma, c.detector.patterns(), c.payload, &c.embed)
        .with_context(|| format!("{}", job.input.display()))?;
    let mut marked = original.clone();
    marked.apply_delta(&e.delta);
    let encoded = encode_for(&marked, &job.output, &c.write)?;
    if encoded.is_lossy() {
        // Report the quality of what is delivered, not of the samples before JPEG.
        let (delivered, _) = decode(&job.output, &encoded.bytes, &Limits::default())?;
        if delivered.channels == original.channels && delivered.is_16bit() == original.is_16bit() {
            marked = delivered;
        }
    }
    let record = EmbeddingRecord {
        kind: "embedding".into(),
        input: display(&job.input),
        output: display(&job.output),
        payload: payload_hex(c.payload),
        psnr_db: round2(marked.psnr_db(&original)),
        ssim: (ssim(&luma, &marked.luminance()) * 1e4).round() / 1e4,
        max_abs_delta: e.max_abs_delta,
        gain: e.gain,
        mask_gamma: c.embed.mask_gamma,
        format: encoded.format.name().into(),
        width: original.width,
        height: original.height,
        time_ms: 0.0,
        key_id: c.key_id.clone(),
        dicom: None,
    };
    Ok((encoded, record))
}

/// Marks a DICOM file in display units of its own window and writes DICOM.
fn mark_dicom(c: &Config, job: &Job, input: &[u8]) -> anyhow::Result<(Encoded, EmbeddingRecord)> {
    let mut img = DicomImage::decode(&job.input, input, &Limits::default())?;
    let (layout, planes) = img
        .mark_planes()
        .with_context(|| format!("{}", job.input.display()))?;
    let mut deltas = Vec::with_capacity(planes.len());
    let mut gain = 0f64;
    for p in &planes {
        let e = embed(p, c.detector.patterns(), c.payload, &c.embed)
            .with_context(|| format!("{}", job.input.display()))?;
        gain = gain.max(e.gain);
        deltas.push(e.delta);
    }
    let change = img.apply(layout, &deltas, c.max_stored_change);
    let after = img.mark_planes()?.1;
    if let dicom::Layout::Montage { cols, rows } = layout {
        // Small frames share one mark; check that it reads back before releasing a file
        // that could not be traced. The marked montage is the detection plane.
        let d = c.detector.detect(&after[0], &DetectOptions::default())?;
        if d.payload != Some(c.payload) {
            bail!(
                "{}: {} frames of {}x{} px are too small to carry a mark each, and their {cols}x{rows} montage does not carry a readable one (self-check z {:.1}); not stamped",
                job.input.display(),
                img.frames,
                img.cols,
                img.rows,
                d.z
            );
        }
    }
    let ssim_mean = planes
        .iter()
        .zip(&after)
        .map(|(a, b)| ssim(a, b))
        .sum::<f64>()
        / planes.len() as f64;
    let source_uid = img.sop_instance_uid();
    let uid = (!c.keep_uids).then(|| {
        dicom::uid_from(tracemark::prng::derive(
            &c.uid_secret,
            &[source_uid.as_bytes(), &c.payload.to_be_bytes()],
        ))
    });
    let stamp = iso_utc(now_ms()); // 2026-11-28T21:27:28.881Z
    let (da, tm) = (
        stamp[..10].replace('-', ""),
        format!("{}.{}", stamp[11..19].replace(':', ""), &stamp[20..23]),
    );
    let dt = format!("{da}{}+0000", &tm);
    let description = format!(
        "Forensic watermark embedded by tracemark {}; stored values changed by at most {} (RMS {:.2}); not intended to alter interpretation",
        env!("CARGO_PKG_VERSION"),
        change.max_abs_stored,
        change.rms_stored
    );
    let decoded_from = img.transcoded.then(|| img.transfer_syntax.clone());
    let (frames, cols, rows, window, window_from_file) = (
        img.frames,
        img.cols,
        img.rows,
        img.window,
        img.window_from_file,
    );
    let photometric = format!("{:?}", img.photometric).to_uppercase();
    let bytes = img.encode(uid.as_deref(), &description, (&da, &tm, &dt))?;
    let record = EmbeddingRecord {
        kind: "embedding".into(),
        input: display(&job.input),
        output: display(&job.output),
        payload: payload_hex(c.payload),
        psnr_db: round2(change.psnr_display_db),
        ssim: (ssim_mean * 1e4).round() / 1e4,
        max_abs_delta: (change.max_abs_display * 100.0).round() / 100.0,
        gain,
        mask_gamma: c.embed.mask_gamma,
        format: Format::Dicom.name().into(),
        width: cols,
        height: rows,
        time_ms: 0.0,
        key_id: c.key_id.clone(),
        dicom: Some(DicomRecord {
            frames,
            layout: match layout {
                dicom::Layout::PerFrame => "per_frame".into(),
                dicom::Layout::Montage { cols, rows } => format!("montage {cols}x{rows}"),
            },
            photometric,
            window: [window.center, window.width],
            window_from_file,
            max_abs_stored: change.max_abs_stored,
            rms_stored: (change.rms_stored * 1000.0).round() / 1000.0,
            max_abs_hu: change.max_abs_hu.map(round2),
            rms_hu: change.rms_hu.map(|v| (v * 1000.0).round() / 1000.0),
            sop_instance_uid: uid.unwrap_or(source_uid),
            decoded_from,
        }),
    };
    Ok((
        Encoded {
            format: Format::Dicom,
            bytes,
        },
        record,
    ))
}

fn describe(r: &EmbeddingRecord) -> String {
    let mut line = format!(
        "stamped {} -> {} ({}, {}x{}): payload {}, PSNR {:.2} dB, SSIM {:.4}, max change {:.0} levels, key id {}, {:.0} ms",
        sanitize(&r.input),
        sanitize(&r.output),
        r.format,
        r.width,
        r.height,
        r.payload,
        r.psnr_db,
        r.ssim,
        r.max_abs_delta,
        r.key_id,
        r.time_ms
    );
    if let Some(d) = &r.dicom {
        line += &format!(
            "\n  DICOM: {} frame(s), {}, {} window {:.0}/{:.0}{}; stored values changed by at most {} (RMS {:.2}){}; SOP Instance UID {}",
            d.frames,
            d.layout.replace('_', " "),
            d.photometric,
            d.window[0],
            d.window[1],
            if d.window_from_file {
                ""
            } else {
                " (from the value range)"
            },
            d.max_abs_stored,
            d.rms_stored,
            d.max_abs_hu
                .zip(d.rms_hu)
                .map(|(m, r)| format!(", {m:.0} HU (RMS {r:.2} HU)"))
                .unwrap_or_default(),
            d.sop_instance_uid
        );
        if let Some(ts) = &d.decoded_from {
            line += &format!(
                "; decoded from transfer syntax {ts}, written as Explicit VR Little Endian"
            );
        }
    }
    line
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A random 64-bit release id from the OS (random, not sequential: a wrong decode almost
/// never matches an issued id).
fn random_release_id() -> anyhow::Result<u64> {
    let bytes = SecretKey::generate()?;
    let id = tracemark::prng::derive(&bytes, &[b"tracemark/v1/release-id"]);
    Ok(u64::from_be_bytes(id[..8].try_into().expect("8 bytes")))
}

fn display(p: &Path) -> String {
    p.display().to_string()
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}
