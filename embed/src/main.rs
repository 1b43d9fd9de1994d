//! tracemark-embed: stamp an image with a per-recipient watermark.

mod cli;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Parser;
use tracemark::SecretKey;
use tracemark::io::image::{WriteOptions, decode, encode_for, read, write_encoded};
use tracemark::io::{Format, Limits, atomic::same_file};
use tracemark::mark::embed::{EmbedOptions, embed};
use tracemark::mark::pattern::KeyPatterns;
use tracemark::raster::ssim;
use tracemark::report::{EmbeddingRecord, parse_payload, payload_hex, sanitize};

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
    let config = configure(cli.embed)?;
    stamp(&config)?;
    Ok(ExitCode::SUCCESS)
}

fn configure(a: cli::EmbedArgs) -> anyhow::Result<Config> {
    let key_path = a
        .key
        .context("missing --key KEYFILE (create one with `tracemark-embed keygen KEYFILE`)")?;
    let payload = a.payload.context("missing --payload HEX (16 hex digits)")?;
    let payload = parse_payload(&payload)?;
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
    Ok(Config {
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

fn stamp(c: &Config) -> anyhow::Result<()> {
    let start = Instant::now();
    let (original, _) = read(&c.input, &Limits::default())?;
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
    write_encoded(&encoded, &c.output, c.write.force)?;
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

fn display(p: &Path) -> String {
    p.display().to_string()
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}
