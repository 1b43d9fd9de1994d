//! tracemark-bench: leak simulation, the null (false-alarm) study and quick experiments.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use tracemark::SecretKey;
use tracemark::io::Limits;
use tracemark::io::dicom::Window;
use tracemark::io::image::{WriteOptions, write};
use tracemark::mark::detect::{DetectOptions, Detector};
use tracemark::mark::embed::EmbedOptions;
use tracemark::pipeline::{Content, Document, StampOptions, Stamper};
use tracemark::raster::Raster;
use tracemark_bench::*;
use tracemark_bench::{report, robustness, scenario};

/// Benchmarks and tools around tracemark.
#[derive(Parser)]
#[command(name = "tracemark-bench")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Ledger append rate: threads on their own connections appending to one fresh ledger,
    /// an SQLite file and (with --postgres) a PostgreSQL database; rows per second.
    Appends {
        /// Rows per ledger.
        #[arg(long, default_value_t = 2000)]
        rows: usize,
        /// Writer counts to measure (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
        writers: Vec<usize>,
        /// Runs per setting (median reported).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// A PostgreSQL database URL whose user may create databases (one per run, dropped).
        #[arg(long, value_name = "URL")]
        postgres: Option<String>,
    },
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
        /// DICOM input: export with the window width scaled by this factor (as a viewer's
        /// 8-bit export or screenshot; applied first).
        #[arg(long, default_value_t = 1.0)]
        window_scale: f64,
        /// DICOM input: move the window centre by this fraction of the width.
        #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
        centre_shift: f64,
        /// DICOM input: export MONOCHROME1 without inverting it (grey levels inverted).
        #[arg(long)]
        ignore_mono1: bool,
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
        /// Detect with the keystone search (`Detector::detect_keystones`, as
        /// `tracemark-detect --keystones`).
        #[arg(long)]
        keystones: bool,
        /// Give every detection the images' sizes as a ledger would
        /// (`DetectOptions::frame_sizes`, as `tracemark-detect --ledger`): the frame search
        /// of a photo of a screen, the whole-image search of a copy with one's
        /// proportions at another size, and the turned-canvas search of a copy that
        /// shows an image turned on a canvas.
        #[arg(long)]
        ledger_sizes: bool,
        /// Turn every copy on its canvas first (0.5-9.5 degrees either way, black
        /// corners): with `--ledger-sizes`, the turned-canvas search's null.
        #[arg(long)]
        turned: bool,
        /// Examine every copy against the image it was made from too (`tracemark-detect
        /// --original`), with the informed check among 1,001 releases on what is left; the
        /// hard images (textures, 256-px slices) join the photos.
        #[arg(long)]
        original: bool,
    },
    /// The robustness benchmark: every leak scenario on the test photos, several keys each,
    /// plus the false-claim study; writes report.md, JSON, CSV and plots into DIR.
    Robustness {
        /// Release mode: 10 keys per image and 20,000 null detections (short: 2 and 10,000).
        #[arg(long)]
        full: bool,
        /// Seed of every random choice.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
    /// The forgery group of the robustness report alone: marks estimated from a release's
    /// copies and pasted onto images outside it; who would be named, and how close the
    /// forgeries came to a content match.
    Forgery {
        /// Seed (the robustness report's forgery group uses the same).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Write the markdown here as well as to stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Collusion: 2, 3 and 4 (up to --max-colluders) copies of each test photo averaged, with
    /// and without JPEG 75, against a ledger of --releases; reports who the informed check
    /// names and the innocent score distribution against the unit-variance model.
    Collusion {
        /// Releases in the ledger (the colluders are among them).
        #[arg(long, default_value_t = 10_000)]
        releases: usize,
        /// Largest collusion.
        #[arg(long, default_value_t = 4)]
        max_colluders: usize,
        /// Keys (independent repetitions) per cell.
        #[arg(long, default_value_t = 2)]
        keys: u8,
        /// Write the markdown report here as well as to stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Time to answer: found images (half leaks of several releases, half unmarked, 0.3-4
    /// Mpx) examined by the release build of tracemark-detect with a ledger of many releases,
    /// with and without an evidence report.
    Answer {
        /// Found images.
        #[arg(long, default_value_t = 1000)]
        images: usize,
        /// Releases in the ledger.
        #[arg(long, default_value_t = 10_000)]
        releases: usize,
    },
    /// Issue 14's hard leaks (a photo of a screen, halving + JPEG 50, downscales to a
    /// third, screenshots, blur, JPEG 20, small turns) on stochastic textures, 256-px
    /// medical slices and the photos: rates per image group and where failures stop.
    Hard {
        /// Keys per image.
        #[arg(long, default_value_t = 2)]
        keys: usize,
        /// Seed of every random choice.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Write the markdown report here as well as to stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Speed against invisible-watermark's dwtDct (the fastest open-source anchor): embed
    /// and blind detection (marked and unmarked) against dwtDct's embed and decode, on the
    /// same 2048- and 512-px images, one thread each, alternating in one run; ratios.
    /// Needs `pip install --no-deps invisible-watermark opencv-python-headless PyWavelets numpy`.
    Versus {
        /// Alternating rounds.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Timings per round and image.
        #[arg(long, default_value_t = 5)]
        per_round: usize,
    },
    /// Batch stamping throughput: a folder of N copies of the test images (the four photos and
    /// five DICOM files, in turn) stamped by the release build of tracemark-embed for one recipient, with a
    /// ledger; reports images and megabytes per second (median of the runs).
    Throughput {
        /// Images in the folder.
        #[arg(long, default_value_t = 200)]
        images: usize,
        /// Timed runs (each into a fresh output folder and ledger).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Another tracemark-embed (e.g. a build of an earlier commit) run alternately with
        /// this one on the same folder; the report gives the ratio of the two.
        #[arg(long)]
        reference: Option<PathBuf>,
        /// Also stamp into a PostgreSQL ledger, alternately with the SQLite file: the URL of
        /// a database where the benchmark may create (and drops) one database per run.
        #[arg(long, value_name = "URL")]
        postgres: Option<String>,
        /// An argument for this build's tracemark-embed (repeat it for several), e.g.
        /// `--embed-arg=--restore-data --embed-arg=pixels`.
        #[arg(long = "embed-arg", allow_hyphen_values = true, value_name = "ARG")]
        embed_args: Vec<String>,
    },
    /// DICOM leaks: each DICOM test file stamped with N keys, exported to 8 bits as viewers
    /// do (own window, width +-30 %, centre +-15 % of the width, MONOCHROME1 ignored), then
    /// saved as PNG, JPEG 90/75/50, or downscaled 0.5 and saved as JPEG 75; blind recovery
    /// rates per file and export.
    DicomExports {
        /// Keys (each with its own random payload) per file.
        #[arg(long, default_value_t = 5)]
        keys: u8,
        /// Write the markdown table here as well as to stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Mutation fuzzing of the built tools (tracemark-embed and tracemark-detect beside this
    /// binary): truncated, bit-flipped, padded, length-inflated, spliced and (DICOM) nested
    /// mutants of every testdata format, stamped and examined under an address-space and a
    /// time limit; failures and contained panics are saved to --save for the corpus.
    Fuzz {
        /// Minutes to run.
        #[arg(long, default_value_t = 30.0)]
        minutes: f64,
        /// Stop earlier after this many mutants.
        #[arg(long, default_value_t = usize::MAX)]
        mutants: usize,
        /// Mutants per process run.
        #[arg(long, default_value_t = 40)]
        batch: usize,
        /// RNG seed (default: from the clock; printed).
        #[arg(long)]
        seed: Option<u64>,
        /// Small seeds only (crops of the photos, DICOM files up to 1 MB), as CI runs.
        #[arg(long)]
        small: bool,
        /// Where failing mutants go.
        #[arg(long, default_value = "target/fuzz-findings")]
        save: PathBuf,
    },
    /// Peak resident memory of the built tools on large inputs (a 16384 x 16384 single-colour
    /// PNG examined and stamped, a 4096 x 4096 photo), against the estimates the memory budget
    /// admits inputs by.
    Memory {
        /// (Internal) only write the inputs into this folder.
        #[arg(long, hide = true)]
        inputs_only: Option<PathBuf>,
    },
    /// Quick robustness grid on the photos in testdata (3 keys each).
    Experiment {
        /// Mask exponent.
        #[arg(long, default_value_t = tracemark::mark::embed::DEFAULT_MASK_GAMMA)]
        gamma: f32,
        /// Target PSNR.
        #[arg(long, default_value_t = 42.0)]
        psnr: f64,
        /// Comma-separated scenario names (see `scenario::catalogue`).
        #[arg(
            long,
            default_value = "none,jpeg50,scale0.5_box,crop25,rotate3,invert,scale0.33_cubic,scale0.5+jpeg50"
        )]
        scenarios: String,
    },
}

fn main() -> anyhow::Result<()> {
    // As the tools do: the speed comparisons measure what they run.
    tracemark::pipeline::reuse_freed_memory();
    match Cli::parse().command {
        Cmd::Fuzz {
            minutes,
            mutants,
            batch,
            seed,
            small,
            save,
        } => {
            let seed = seed.unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_secs())
            });
            let cfg = tracemark_bench::fuzz::Config {
                bin_dir: std::env::current_exe()?
                    .parent()
                    .context("binary folder")?
                    .to_path_buf(),
                mutants,
                budget: std::time::Duration::from_secs_f64(minutes * 60.0),
                batch,
                seed,
                full_seeds: !small,
                save,
            };
            eprintln!("fuzzing with seed {seed} for up to {minutes} min");
            let report = tracemark_bench::fuzz::run(&cfg)?;
            print!("{}", report.to_markdown(&cfg));
            if !report.failures.is_empty() {
                bail!("{} failure(s)", report.failures.len());
            }
        }
        Cmd::Memory { inputs_only } => match inputs_only {
            Some(dir) => tracemark_bench::memory::write_inputs(&dir)?,
            None => tracemark_bench::memory::run()?,
        },
        Cmd::Leak {
            crop,
            scale: factor,
            rotate: degrees,
            invert: inv,
            jpeg: q,
            window_scale,
            centre_shift,
            ignore_mono1,
            input,
            output,
        } => {
            let doc = Document::open(&input, &Limits::default())?;
            let mut steps = Vec::new();
            let mut r = match doc.into_content() {
                Content::Dicom(img) => {
                    let w = img.window;
                    let window = Window {
                        center: w.center + centre_shift * w.width,
                        width: (w.width * window_scale).max(1.0),
                    };
                    steps.push(format!(
                        "8-bit export of frame 1, window {:.0}/{:.0}{}",
                        window.center,
                        window.width,
                        if ignore_mono1 {
                            ", MONOCHROME1 ignored"
                        } else {
                            ""
                        }
                    ));
                    img.export_8bit(0, Some(window), !ignore_mono1)
                }
                Content::Raster { raster, .. } => raster,
            };
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
        Cmd::Null {
            trials,
            seed,
            out,
            keystones,
            ledger_sizes,
            turned,
            original,
        } => {
            let mut images: Vec<(String, Raster)> = PHOTOS
                .iter()
                .map(|s| s.to_string())
                .zip(load_photos()?)
                .collect();
            if original {
                images.extend(load_hard_images()?);
            }
            let start = Instant::now();
            let null = robustness::null_study(
                &images,
                trials,
                seed,
                keystones,
                ledger_sizes,
                turned,
                original,
            );
            let md = format!(
                "{}{}{}{}\nSeed {seed}; {} detections in {:.1} s on {} threads.\n",
                report::null_section(&null),
                if original {
                    report::reference_null_section(&null)
                } else {
                    String::new()
                },
                if turned {
                    "\nEvery copy was first turned on its canvas by 0.5-9.5 degrees (black corners).\n"
                } else {
                    ""
                },
                if keystones {
                    "\nWith the keystone search (`Detector::detect_keystones`: 37 searches counted in every p-value); every detection searches the copy and 36 keystones undone.\n"
                } else {
                    ""
                },
                null.len(),
                start.elapsed().as_secs_f64(),
                rayon::current_num_threads()
            );
            print!("{md}");
            if let Some(p) = out {
                std::fs::write(&p, &md).with_context(|| p.display().to_string())?;
            }
        }
        Cmd::Robustness { full, seed, out } => {
            let images: Vec<(String, Raster)> = PHOTOS
                .iter()
                .map(|s| s.to_string())
                .zip(load_photos()?)
                .collect();
            let (keys, null_trials) = if full { (10, 20_000) } else { (2, 10_000) };
            let cfg = robustness::Config {
                seed,
                images,
                keys,
                scenarios: scenario::catalogue(),
                null_trials,
                forgeries: true,
                true_geometry: None,
                keystone_search: None,
                ledger_sizes: true,
                reference: false,
            };
            let start = Instant::now();
            let res = robustness::run(&cfg)?;
            let mode = if full { "full" } else { "short" };
            let table = report::write(&out, &res, mode, seed, keys)?;
            println!("{table}");
            println!(
                "{} trials and {} null detections in {:.0} s; report in {}",
                res.trials.len(),
                res.null.len(),
                start.elapsed().as_secs_f64(),
                out.join("report.md").display()
            );
        }
        Cmd::Forgery { seed, out } => {
            let images: Vec<(String, Raster)> = PHOTOS
                .iter()
                .map(|s| s.to_string())
                .zip(load_photos()?)
                .collect();
            let md =
                tracemark_bench::forgery::section(&tracemark_bench::forgery::run(&images, seed)?);
            print!("{md}");
            if let Some(p) = out {
                std::fs::write(&p, &md).with_context(|| p.display().to_string())?;
            }
        }
        Cmd::Collusion {
            releases,
            max_colluders,
            keys,
            out,
        } => {
            let md = tracemark_bench::collusion::report(releases, max_colluders, keys)?;
            print!("{md}");
            if let Some(p) = out {
                std::fs::write(&p, &md).with_context(|| p.display().to_string())?;
            }
        }
        Cmd::Answer { images, releases } => tracemark_bench::answer::run(images, releases)?,
        Cmd::Hard { keys, seed, out } => {
            let start = Instant::now();
            let md = tracemark_bench::hard::run(seed, keys)?;
            println!("{md}");
            println!("in {:.0} s", start.elapsed().as_secs_f64());
            if let Some(out) = out {
                std::fs::write(&out, &md).with_context(|| out.display().to_string())?;
            }
        }
        Cmd::Appends {
            rows,
            writers,
            runs,
            postgres,
        } => tracemark_bench::appends::run(rows, &writers, runs, postgres.as_deref())?,
        Cmd::Versus { rounds, per_round } => tracemark_bench::versus::run(rounds, per_round)?,
        Cmd::Throughput {
            images,
            runs,
            reference,
            postgres,
            embed_args,
        } => tracemark_bench::throughput::run(
            images,
            runs,
            reference.as_deref(),
            postgres.as_deref(),
            &embed_args,
        )?,
        Cmd::DicomExports { keys, out } => {
            let md = tracemark_bench::exports::table(keys)?;
            print!("{md}");
            if let Some(p) = out {
                std::fs::write(&p, &md).with_context(|| p.display().to_string())?;
            }
        }
        Cmd::Experiment {
            gamma,
            psnr,
            scenarios,
        } => experiment(gamma, psnr, &scenarios)?,
    }
    Ok(())
}

fn experiment(gamma: f32, psnr: f64, names: &str) -> anyhow::Result<()> {
    let all = scenario::catalogue();
    let chosen: Vec<scenario::Scenario> = names
        .split(',')
        .map(|n| {
            all.iter()
                .find(|s| s.name == n)
                .copied()
                .with_context(|| format!("unknown scenario {n}"))
        })
        .collect::<anyhow::Result<_>>()?;
    let opts = StampOptions {
        embed: EmbedOptions::new()
            .with_mask_gamma(gamma)
            .with_psnr_db(psnr),
        ..StampOptions::default()
    };
    for (f, orig) in PHOTOS.iter().zip(load_photos()?) {
        for k in 0..3u8 {
            let key = SecretKey::from_bytes([k + 40; 32]);
            let payload = 0x9e37_79b9_7f4a_7c15u64.wrapping_mul(u64::from(k) + 1);
            let (m, _) = Stamper::new(&key, payload, opts.clone())?.stamp_raster(&orig)?;
            let det = Detector::new(&key);
            let mut line = format!("{f:14} k{k} psnr {:.2} |", m.psnr_db(&orig));
            for sc in &chosen {
                let d = det.detect(
                    &(sc.apply)(&m, u64::from(k)).luminance(),
                    &DetectOptions::default(),
                )?;
                let mark = if d.payload == Some(payload) {
                    "+"
                } else if d.marked {
                    "?"
                } else {
                    "-"
                };
                line += &format!(" {} {mark}{:.1} |", sc.name, d.z);
            }
            println!("{line}");
        }
    }
    Ok(())
}
