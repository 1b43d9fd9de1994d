//! Speed against invisible-watermark's dwtDct (issue 14): the fastest open-source anchor,
//! timed on the same images in the same run, one thread each. The ratios are what the
//! issue's targets are written in; absolute times on a shared machine are not.
//!
//! Images: testdata/retina.jpg resized (cubic) to 2048 x 2048 and 512 x 512, RGB 8-bit.
//! tracemark: `Stamper::stamp_raster` (luminance, mask, gain solve, delta applied to the
//! RGB samples) for embed; luminance conversion plus blind `Detector::detect` for detect,
//! of the stamped copy (marked) and of the image itself (unmarked). dwtDct:
//! `WatermarkEncoder.encode(img, "dwtDct")` with 64 bits and `WatermarkDecoder.decode` of
//! its output, run by scripts/dwtdct_time.py between tracemark's rounds (the two alternate,
//! so drifts of a shared machine hit both).

use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use tracemark::SecretKey;
use tracemark::io::image::{WriteOptions, write};
use tracemark::mark::detect::{DetectOptions, Detector};
use tracemark::mark::pattern::KeyPatterns;
use tracemark::pipeline::{StampOptions, Stamper};
use tracemark::raster::Raster;
use tracemark_leaks::{Filter, resize};

use crate::report::median;
use crate::testdata;

/// Sides measured, px.
const SIDES: [usize; 2] = [2048, 512];

#[derive(Default)]
struct Times {
    embed: Vec<f64>,
    marked: Vec<f64>,
    unmarked: Vec<f64>,
    dwt_embed: Vec<f64>,
    dwt_decode: Vec<f64>,
}

fn ms(f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64() * 1e3
}

/// Runs `rounds` alternating rounds of `per_round` timings each and prints the table.
///
/// # Errors
/// No Python or no invisible-watermark (the message says how to install it), unreadable
/// test data.
pub fn run(rounds: usize, per_round: usize) -> anyhow::Result<()> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build_global()
        .ok();
    let script = testdata().join("../scripts/dwtdct_time.py");
    // The script with no image only imports dwtDct: whether it is installed.
    let probe = Command::new("python3").arg(&script).arg("0").output();
    if !probe.as_ref().is_ok_and(|o| o.status.success()) {
        // Python's own last line says what is missing (a module, or python3 itself).
        let why = match &probe {
            Ok(o) => String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or("")
                .to_string(),
            Err(e) => format!("python3: {e}"),
        };
        bail!(
            "dwtDct is not installed ({why}): pip install --no-deps invisible-watermark opencv-python-headless PyWavelets numpy"
        );
    }
    let src = tracemark::io::image::read(&testdata().join("retina.jpg"), &Default::default())
        .context("testdata/retina.jpg")?
        .0;
    let dir = tempfile::tempdir()?;
    let key = SecretKey::from_bytes(*b"tracemark-bench versus dwtDct 01");
    let patterns = KeyPatterns::new(&key);
    let detector = Detector::from_patterns(patterns.clone());
    let payload = 0x0123_4567_89ab_cdef;
    let stamper = Stamper::from_patterns(patterns, payload, StampOptions::default())?;
    let opts = DetectOptions::default();
    let mut images: Vec<(usize, Raster, Raster, std::path::PathBuf)> = Vec::new();
    for side in SIDES {
        let img = resize(&src, side, side, Filter::Cubic);
        let marked = stamper.stamp_raster(&img)?.0;
        let found = detector.detect(&marked.luminance(), &opts)?;
        if found.payload != Some(payload) {
            bail!("the {side}-px copy must decode before it is timed");
        }
        let path = dir.path().join(format!("retina-{side}.png"));
        write(&img, &path, &WriteOptions::default())?;
        images.push((side, img, marked, path));
    }
    let mut times: Vec<Times> = SIDES.iter().map(|_| Times::default()).collect();
    for round in 0..rounds {
        for ((_, img, marked, _), t) in images.iter().zip(times.iter_mut()) {
            for _ in 0..per_round {
                t.embed.push(ms(|| {
                    std::hint::black_box(stamper.stamp_raster(img).expect("stamps"));
                }));
                t.marked.push(ms(|| {
                    std::hint::black_box(
                        detector
                            .detect(&marked.luminance(), &opts)
                            .expect("detects"),
                    );
                }));
                t.unmarked.push(ms(|| {
                    std::hint::black_box(
                        detector.detect(&img.luminance(), &opts).expect("detects"),
                    );
                }));
            }
        }
        let out = Command::new("python3")
            .arg(&script)
            .arg(per_round.to_string())
            .args(images.iter().map(|i| &i.3))
            .env("OMP_NUM_THREADS", "1")
            .output()
            .context("running scripts/dwtdct_time.py")?;
        if !out.status.success() {
            bail!("dwtdct_time.py: {}", String::from_utf8_lossy(&out.stderr));
        }
        for (line, t) in String::from_utf8(out.stdout)?.lines().zip(times.iter_mut()) {
            let v: serde_json::Value = serde_json::from_str(line)?;
            let get = |k: &str| -> Vec<f64> {
                v[k].as_array()
                    .map(|a| a.iter().filter_map(serde_json::Value::as_f64).collect())
                    .unwrap_or_default()
            };
            t.dwt_embed.extend(get("embed_ms"));
            t.dwt_decode.extend(get("decode_ms"));
        }
        eprintln!("round {}/{rounds} done", round + 1);
    }
    println!(
        "## Speed against dwtDct (invisible-watermark {}), one thread, same images, same run\n",
        dwtdct_version()
    );
    println!(
        "{rounds} alternating rounds of {per_round} timings each; medians. Ratios are tracemark / dwtDct.\n"
    );
    println!(
        "| image | tracemark embed | dwtDct embed | ratio | detect marked | detect unmarked | dwtDct decode | marked ratio | unmarked ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for ((side, ..), t) in images.iter().zip(times) {
        let (e, de, m, u, dd) = (
            median(t.embed),
            median(t.dwt_embed),
            median(t.marked),
            median(t.unmarked),
            median(t.dwt_decode),
        );
        println!(
            "| retina RGB {side}x{side} | {e:.1} ms | {de:.1} ms | {:.1} % | {m:.1} ms | {u:.1} ms | {dd:.1} ms | {:.0} % | {:.0} % |",
            100.0 * e / de,
            100.0 * m / dd,
            100.0 * u / dd
        );
    }
    Ok(())
}

fn dwtdct_version() -> String {
    Command::new("python3")
        .args([
            "-c",
            "import importlib.metadata as m; print(m.version('invisible-watermark'))",
        ])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "unknown version".into())
}
