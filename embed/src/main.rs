//! tracemark-embed: stamp an image with a per-recipient watermark.

mod cli;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Parser;
use tracemark::SecretKey;
use tracemark::io::image::{WriteOptions, decode, encode_for, read_bytes, write_encoded};
use tracemark::io::{Format, Limits, atomic::same_file};
use tracemark::ledger::{FileRecord, Ledger, ReleaseMeta, Verification, sha256_hex};
use tracemark::mark::embed::{EmbedOptions, embed};
use tracemark::mark::pattern::KeyPatterns;
use tracemark::raster::ssim;
use tracemark::report::{EmbeddingRecord, iso_utc, parse_payload, payload_hex, sanitize};

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
    /// The ledger and the release being recorded, with --ledger.
    ledger: Option<(Ledger, ReleaseMeta)>,
    key: SecretKey,
    payload: u64,
    input: PathBuf,
    output: PathBuf,
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
        return ledger_command(&key, &ledger, action);
    }
    let mut config = configure(cli.embed)?;
    stamp(&mut config)?;
    Ok(ExitCode::SUCCESS)
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
    let input = a.input.context("missing INPUT image")?;
    let output = a.output.context("missing -o OUTPUT")?;
    if Format::from_extension(&output).is_none() {
        bail!(
            "{}: unknown output format; use a .png, .jpg, .tif or .webp name",
            output.display()
        );
    }
    if same_file(&input, &output) || input == output {
        bail!(
            "output {} is the input; refusing to overwrite it",
            output.display()
        );
    }
    if output.exists() && !a.force {
        bail!(
            "{} already exists; use --force to replace it",
            output.display()
        );
    }
    let key = SecretKey::load_file(&key_path)?;
    let ledger = match a.ledger {
        Some(path) => {
            let ledger = Ledger::open(&path, &key)?;
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
                ledger,
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
        key,
        payload,
        input,
        output,
        embed: EmbedOptions::new()
            .with_psnr_db(a.psnr)
            .with_mask_gamma(a.mask_gamma),
        write: WriteOptions {
            jpeg_quality: a.jpeg_quality,
            force: a.force,
        },
        json: a.json,
    })
}

fn stamp(c: &mut Config) -> anyhow::Result<()> {
    let start = Instant::now();
    let input_bytes = read_bytes(&c.input, &Limits::default())?;
    let (original, _) = decode(&c.input, &input_bytes, &Limits::default())?;
    let luma = original.luminance();
    let e = embed(&luma, &KeyPatterns::new(&c.key), c.payload, &c.embed)
        .with_context(|| format!("{}", c.input.display()))?;
    let mut marked = original.clone();
    marked.apply_delta(&e.delta);
    let encoded = encode_for(&marked, &c.output, &c.write)?;
    if encoded.is_lossy() {
        // Report the quality of what is delivered, not of the samples before JPEG.
        let (delivered, _) = decode(&c.output, &encoded.bytes, &Limits::default())?;
        if delivered.channels == original.channels && delivered.is_16bit() == original.is_16bit() {
            marked = delivered;
        }
    }
    match &mut c.ledger {
        None => write_encoded(&encoded, &c.output, c.write.force)?,
        Some((ledger, meta)) => {
            let file = FileRecord {
                input_path: display(&c.input),
                input_sha256: sha256_hex(&input_bytes),
                output_path: display(&c.output),
                output_sha256: sha256_hex(&encoded.bytes),
                format: encoded.format.name().into(),
                bytes: encoded.bytes.len() as u64,
                params: serde_json::json!({
                    "psnr_db": c.embed.psnr_db,
                    "mask_gamma": c.embed.mask_gamma,
                    "gain": e.gain,
                    "jpeg_quality": c.write.jpeg_quality,
                })
                .to_string(),
            };
            let written = std::cell::Cell::new(false);
            let appended = ledger.append(meta, &file, now_ms(), || {
                write_encoded(&encoded, &c.output, c.write.force)?;
                written.set(true);
                Ok(())
            });
            if let Err(err) = appended {
                // The row was not committed: the file must not stay either.
                if written.get() {
                    let _ = std::fs::remove_file(&c.output);
                }
                return Err(err.into());
            }
        }
    }
    let format = encoded.format;
    let record = EmbeddingRecord {
        kind: "embedding".into(),
        input: display(&c.input),
        output: display(&c.output),
        payload: payload_hex(c.payload),
        psnr_db: round2(marked.psnr_db(&original)),
        ssim: (ssim(&luma, &marked.luminance()) * 1e4).round() / 1e4,
        max_abs_delta: e.max_abs_delta,
        gain: e.gain,
        mask_gamma: c.embed.mask_gamma,
        format: format.name().into(),
        width: original.width,
        height: original.height,
        time_ms: round2(start.elapsed().as_secs_f64() * 1e3),
        key_id: c.key.key_id(),
    };
    if c.json {
        println!("{}", serde_json::to_string(&record)?);
    } else {
        println!(
            "stamped {} -> {} ({}, {}x{}): payload {}, PSNR {:.2} dB, SSIM {:.4}, max change {:.0} levels, key id {}, {:.0} ms",
            sanitize(&record.input),
            sanitize(&record.output),
            record.format,
            record.width,
            record.height,
            record.payload,
            record.psnr_db,
            record.ssim,
            record.max_abs_delta,
            record.key_id,
            record.time_ms
        );
    }
    Ok(())
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

fn ledger_command(key: &Path, path: &Path, action: cli::LedgerAction) -> anyhow::Result<ExitCode> {
    let key = SecretKey::load_file(key)?;
    if !path.exists() {
        bail!("ledger {} does not exist", path.display());
    }
    let ledger = Ledger::open(path, &key)?;
    match action {
        cli::LedgerAction::List => {
            let entries = ledger.entries()?;
            for id in ledger.release_ids()? {
                let rows: Vec<_> = entries
                    .iter()
                    .filter(|e| e.release.release_id == id)
                    .collect();
                let first = rows[0];
                println!(
                    "{}  {}  {}  {} file(s){}",
                    payload_hex(id),
                    iso_utc(first.created_ms),
                    sanitize(&first.release.recipient),
                    rows.len(),
                    first
                        .release
                        .purpose
                        .as_deref()
                        .map(|p| format!("  ({})", sanitize(p)))
                        .unwrap_or_default()
                );
            }
        }
        cli::LedgerAction::Show { id } => {
            let id = parse_payload(&id)?;
            let rows = ledger.release(id)?;
            if rows.is_empty() {
                bail!("release {} is not in {}", payload_hex(id), path.display());
            }
            let r = &rows[0].release;
            println!(
                "release {}: recipient {}, purpose {}, operator {}",
                payload_hex(id),
                sanitize(&r.recipient),
                sanitize(r.purpose.as_deref().unwrap_or("-")),
                sanitize(r.operator.as_deref().unwrap_or("-"))
            );
            for e in rows {
                println!(
                    "  row {} {} {} -> {} ({}, {} bytes, sha256 {})",
                    e.seq,
                    iso_utc(e.created_ms),
                    sanitize(&e.file.input_path),
                    sanitize(&e.file.output_path),
                    e.file.format,
                    e.file.bytes,
                    e.file.output_sha256
                );
            }
        }
        cli::LedgerAction::Export => {
            for e in ledger.entries()? {
                let row = serde_json::json!({
                    "seq": e.seq,
                    "release_id": payload_hex(e.release.release_id),
                    "recipient": e.release.recipient,
                    "purpose": e.release.purpose,
                    "operator": e.release.operator,
                    "created_utc": iso_utc(e.created_ms),
                    "created_ms": e.created_ms,
                    "key_id": e.key_id,
                    "input_path": e.file.input_path,
                    "input_sha256": e.file.input_sha256,
                    "output_path": e.file.output_path,
                    "output_sha256": e.file.output_sha256,
                    "format": e.file.format,
                    "bytes": e.file.bytes,
                    "params": serde_json::from_str::<serde_json::Value>(&e.file.params)
                        .unwrap_or(serde_json::Value::Null),
                });
                println!("{row}");
            }
        }
        cli::LedgerAction::Verify => match ledger.verify()? {
            Verification::Intact { rows } => println!("ledger intact: {rows} rows verified"),
            Verification::Broken { seq, why } => {
                println!("ledger BROKEN at row {seq}: {why}");
                return Ok(ExitCode::from(1));
            }
        },
    }
    Ok(ExitCode::SUCCESS)
}

fn display(p: &Path) -> String {
    p.display().to_string()
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}
