//! tracemark-bench: leak simulation, the null (false-alarm) study and quick experiments.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rayon::prelude::*;
use tracemark::SecretKey;
use tracemark::io::Limits;
use tracemark::io::image::{WriteOptions, read, write};
use tracemark::mark::detect::{DetectOptions, Detector};
use tracemark::mark::embed::{EmbedOptions, embed};
use tracemark::mark::pattern::KeyPatterns;
use tracemark::raster::Raster;
use tracemark::stats;
use tracemark_bench::*;

/// Benchmarks and tools around tracemark.
#[derive(Parser)]
#[command(name = "tracemark-bench")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Simulate a leak: crop, rescale, rotate, invert and/or recompress an image.
    Leak {
        /// Keep this fraction of the area (same aspect ratio), window at 37 % / 61 %.
        #[arg(long)]
        crop: Option<f64>,
        /// Rescale by this factor (area/cubic filter).
        #[arg(long)]
        scale: Option<f64>,
        /// Rotate by this many degrees (black corners).
        #[arg(long)]
        rotate: Option<f64>,
        /// Invert grey levels.
        #[arg(long)]
        invert: bool,
        /// Re-encode as JPEG at this quality (applied last).
        #[arg(long)]
        jpeg: Option<u8>,
        /// Input image.
        input: PathBuf,
        /// Output image (the extension picks the format).
        output: PathBuf,
    },
    /// False-alarm study: blind detections on unmarked images, their variants, and other
    /// keys' marks; compares the statistic's tail with the Gaussian model.
    Null {
        /// Number of detections.
        #[arg(long, default_value_t = 2000)]
        trials: usize,
        /// Seed of the trial plan.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Write the markdown summary here as well as to stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Quick robustness grid on the photos in testdata (3 keys each).
    Experiment {
        /// Mask exponent.
        #[arg(long, default_value_t = tracemark::mark::embed::DEFAULT_MASK_GAMMA)]
        gamma: f32,
        /// Target PSNR.
        #[arg(long, default_value_t = 42.0)]
        psnr: f64,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Leak {
            crop,
            scale: factor,
            rotate: degrees,
            invert: inv,
            jpeg: q,
            input,
            output,
        } => {
            let (mut r, _) = read(&input, &Limits::default())?;
            let mut steps = Vec::new();
            if let Some(f) = crop {
                if !(0.01..=1.0).contains(&f) {
                    bail!("--crop must be in 0.01..=1");
                }
                r = crop_fraction(&r, f, 0.37, 0.61);
                steps.push(format!("crop {:.0} %", f * 100.0));
            }
            if let Some(s) = factor {
                if !(0.05..=4.0).contains(&s) {
                    bail!("--scale must be in 0.05..=4");
                }
                r = scale(&r, s, if s < 1.0 { Filter::Box } else { Filter::Cubic });
                steps.push(format!("scale {s}"));
            }
            if let Some(d) = degrees {
                r = rotate(&r, d);
                steps.push(format!("rotate {d} deg"));
            }
            if inv {
                r = invert(&r);
                steps.push("invert".into());
            }
            if let Some(q) = q {
                r = jpeg(&r, q);
                steps.push(format!("JPEG {q}"));
            }
            write(
                &r,
                &output,
                &WriteOptions {
                    jpeg_quality: q.unwrap_or(95),
                    force: true,
                },
            )?;
            println!(
                "leaked {} -> {} ({}x{}): {}",
                input.display(),
                output.display(),
                r.width,
                r.height,
                if steps.is_empty() {
                    "unchanged".into()
                } else {
                    steps.join(", ")
                }
            );
        }
        Cmd::Null { trials, seed, out } => null_study(trials, seed, out.as_deref())?,
        Cmd::Experiment { gamma, psnr } => experiment(gamma, psnr)?,
    }
    Ok(())
}

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata")
}

const PHOTOS: [&str; 4] = ["camera.png", "astronaut.png", "coffee.png", "retina.jpg"];

fn load_photos() -> anyhow::Result<Vec<Raster>> {
    PHOTOS
        .iter()
        .map(|f| {
            read(&testdata().join(f), &Limits::default())
                .map(|r| r.0)
                .with_context(|| f.to_string())
        })
        .collect()
}

fn random_key(rng: &mut ChaCha20Rng) -> SecretKey {
    let mut b = [0u8; 32];
    for c in b.chunks_mut(8) {
        c.copy_from_slice(&rng.next_u64().to_le_bytes());
    }
    SecretKey::from_bytes(b)
}

/// One trial of the null study.
struct NullTrial {
    kind: &'static str,
    variant: &'static str,
    z: f64,
    log10_p: f64,
    claimed: bool,
    candidates: usize,
}

fn null_study(trials: usize, seed: u64, out: Option<&Path>) -> anyhow::Result<()> {
    let photos = load_photos()?;
    let start = Instant::now();
    let results: Vec<NullTrial> = (0..trials)
        .into_par_iter()
        .map(|i| {
            let mut rng = ChaCha20Rng::seed_from_u64(seed.wrapping_mul(1_000_003) + i as u64);
            let img = &photos[i % photos.len()];
            let detect_key = random_key(&mut rng);
            // Half the trials carry another key's mark (the hard null: strong structured
            // signal that is not ours), half are unmarked.
            let other_mark = i % 2 == 1;
            let base = if other_mark {
                let k = random_key(&mut rng);
                let e = embed(
                    &img.luminance(),
                    &KeyPatterns::new(&k),
                    rng.next_u64(),
                    &EmbedOptions::default(),
                )
                .expect("testdata photos are large enough");
                let mut m = img.clone();
                m.apply_delta(&e.delta);
                m
            } else {
                img.clone()
            };
            let fx = (rng.next_u32() % 1000) as f64 / 1000.0;
            let fy = (rng.next_u32() % 1000) as f64 / 1000.0;
            let (variant_name, variant) = match (i / 2) % 4 {
                0 => ("as is", base),
                1 => ("JPEG 75", jpeg(&base, 75)),
                2 => ("crop", crop_fraction(&base, 0.3 + 0.6 * fx, fx, fy)),
                _ => ("downscale", scale(&base, 0.5 + 0.4 * fy, Filter::Triangle)),
            };
            let d = Detector::new(&detect_key)
                .detect(&variant.luminance(), &DetectOptions::default())
                .expect("photos are large enough to examine");
            NullTrial {
                kind: if other_mark {
                    "other key's mark"
                } else {
                    "unmarked"
                },
                variant: variant_name,
                z: d.z,
                log10_p: d.log10_p,
                claimed: d.marked,
                candidates: d.candidates,
            }
        })
        .collect();
    let secs = start.elapsed().as_secs_f64();
    let n = results.len() as f64;
    let candidates = results.first().map_or(1, |t| t.candidates);
    let n_tests = (candidates * 4 * 128 * 128) as f64;
    let mut md = String::new();
    md += &format!(
        "# Null study: {} blind detections without this key's mark (seed {seed})\n\n",
        results.len()
    );
    md += "Images: camera, astronaut, coffee, retina; variants: as is, JPEG 75, random crops keeping 30-90 % \
           of the area, downscale 0.5-0.9. Half unmarked, half carrying another random key's mark. \
           A fresh random detection key per trial.\n\n";
    for kind in ["unmarked", "other key's mark"] {
        let zs: Vec<f64> = results
            .iter()
            .filter(|t| t.kind == kind)
            .map(|t| t.z)
            .collect();
        let max = zs.iter().cloned().fold(f64::MIN, f64::max);
        let mean = zs.iter().sum::<f64>() / zs.len() as f64;
        md += &format!(
            "- {kind}: {} detections, mean max-|z| {mean:.2}, largest {max:.2}\n",
            zs.len()
        );
    }
    for variant in ["as is", "JPEG 75", "crop", "downscale"] {
        let zs: Vec<f64> = results
            .iter()
            .filter(|t| t.variant == variant)
            .map(|t| t.z)
            .collect();
        let max = zs.iter().cloned().fold(f64::MIN, f64::max);
        let over5 = zs.iter().filter(|&&z| z > 5.0).count();
        md += &format!(
            "- variant {variant}: {} detections, largest {max:.2}, {over5} above 5.0\n",
            zs.len()
        );
    }
    let claims = results.iter().filter(|t| t.claimed).count();
    let zmax = results.iter().map(|t| t.z).fold(f64::MIN, f64::max);
    md += &format!(
        "- false claims at p <= 1e-6: **{claims}** of {}; largest z overall **{zmax:.2}** (claim threshold z {:.2})\n\n",
        results.len(),
        stats::z_threshold_two_sided(1e-6, n_tests)
    );
    md += &format!(
        "Tail of the per-image statistic (max |z| over {candidates} geometry candidates x 4 orientations x 16384 shifts) \
           against the model that treats every shift as an independent N(0,1): P(max > t) = 1 - (1 - 2Q(t))^{n_tests}.\n\n"
    );
    md += "| t | measured P(max > t) | model | measured / model |\n|---|---|---|---|\n";
    for t in [4.5, 4.75, 5.0, 5.25, 5.5, 6.0] {
        let measured = results.iter().filter(|r| r.z > t).count() as f64 / n;
        let model = 1.0 - (1.0 - 2.0 * stats::q(t)).powf(n_tests);
        md += &format!(
            "| {t} | {measured:.4} | {model:.4} | {:.2} |\n",
            measured / model
        );
    }
    md += "\nCalibration of the reported p-value: the fraction of null detections with p <= alpha must not exceed alpha.\n\n";
    md += "| alpha | measured P(p <= alpha) |\n|---|---|\n";
    for a in [0.5f64, 0.2, 0.1, 0.05, 0.01] {
        let measured = results.iter().filter(|r| r.log10_p <= a.log10()).count() as f64 / n;
        md += &format!("| {a} | {measured:.4} |\n");
    }
    md += &format!(
        "\n{} detections in {secs:.1} s on {} threads.\n",
        results.len(),
        rayon::current_num_threads()
    );
    print!("{md}");
    if let Some(p) = out {
        std::fs::write(p, &md).with_context(|| p.display().to_string())?;
    }
    Ok(())
}

fn experiment(gamma: f32, psnr: f64) -> anyhow::Result<()> {
    type Attack = (&'static str, Box<dyn Fn(&Raster) -> Raster + Sync>);
    let attacks: Vec<Attack> = vec![
        ("none", Box::new(|r: &Raster| r.clone())),
        ("jpeg50", Box::new(|r: &Raster| jpeg(r, 50))),
        (
            "scale0.5",
            Box::new(|r: &Raster| scale(r, 0.5, Filter::Triangle)),
        ),
        (
            "crop25",
            Box::new(|r: &Raster| crop_fraction(r, 0.25, 0.37, 0.61)),
        ),
        ("rot3", Box::new(|r: &Raster| rotate(r, 3.0))),
        ("invert", Box::new(invert)),
        (
            "s0.5+j75",
            Box::new(|r: &Raster| jpeg(&scale(r, 0.5, Filter::Cubic), 75)),
        ),
        ("s0.33", Box::new(|r: &Raster| scale(r, 0.33, Filter::Box))),
    ];
    let opts = EmbedOptions::new()
        .with_mask_gamma(gamma)
        .with_psnr_db(psnr);
    for (f, orig) in PHOTOS.iter().zip(load_photos()?) {
        for k in 0..3u8 {
            let key = SecretKey::from_bytes([k + 40; 32]);
            let payload = 0x9e37_79b9_7f4a_7c15u64.wrapping_mul(u64::from(k) + 1);
            let e = embed(&orig.luminance(), &KeyPatterns::new(&key), payload, &opts)?;
            let mut m = orig.clone();
            m.apply_delta(&e.delta);
            let det = Detector::new(&key);
            let mut line = format!("{f:14} k{k} psnr {:.2} |", m.psnr_db(&orig));
            for (name, a) in &attacks {
                let d = det.detect(&a(&m).luminance(), &DetectOptions::default())?;
                let mark = if d.payload == Some(payload) {
                    "+"
                } else if d.marked {
                    "?"
                } else {
                    "-"
                };
                line += &format!(" {name} {mark}{:.1} |", d.z);
            }
            println!("{line}");
        }
    }
    Ok(())
}
