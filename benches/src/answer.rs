//! Time to answer (issue 13): found images (leaks of several releases and unmarked images,
//! 0.3-4 Mpx) examined by the release build of tracemark-detect with a ledger of many
//! releases, into an evidence report; wall time on this machine, images per second, and
//! what the report adds (the same run without `--report`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use tracemark::SecretKey;
use tracemark::io::Format;
use tracemark::io::image::{WriteOptions, decode, encode_for};
use tracemark::ledger::{FileRecord, Ledger, ReleaseMeta, sha256_hex};
use tracemark::pipeline::{Document, StampOptions, Stamper};
use tracemark::raster::Raster;
use tracemark_leaks::{Filter, crop_fraction, jpeg, resize, scale};

use crate::load_photos;

/// Frame sizes of the found images: 0.31, 0.79, 1.92 and 3.98 Mpx.
const SIZES: [(usize, usize); 4] = [(640, 480), (1024, 768), (1600, 1200), (2304, 1728)];
/// Releases with real stamped files (two photos each); the rest of the ledger is releases
/// whose files are not among the found images.
const REAL_RELEASES: usize = 8;

fn save_jpeg(r: &Raster, path: &Path, quality: u8) -> anyhow::Result<()> {
    let e = encode_for(
        r,
        path,
        &WriteOptions {
            jpeg_quality: quality,
            ..WriteOptions::default()
        },
    )?;
    std::fs::write(path, e.bytes).with_context(|| path.display().to_string())
}

/// Runs the benchmark and prints a markdown table.
///
/// # Errors
/// When tracemark-detect is not built, or a file cannot be written.
pub fn run(images: usize, releases: usize) -> anyhow::Result<()> {
    let detect = std::env::current_exe()?.with_file_name("tracemark-detect");
    if !detect.exists() {
        bail!(
            "{} not found: build it first (cargo build --release -p tracemark-detect)",
            detect.display()
        );
    }
    let dir = tempfile::tempdir()?;
    let key = SecretKey::generate()?;
    let key_path = dir.path().join("bench.key");
    key.create_file(&key_path)?;
    let ledger_path = dir.path().join("releases.db");
    let mut ledger = Ledger::open(&ledger_path, &key)?;
    let photos = load_photos()?;
    let started = Instant::now();
    // Real releases: two photos each, at the found images' sizes, stamped and recorded.
    let mut stamped: Vec<(Raster, String)> = Vec::new();
    for r in 0..REAL_RELEASES.min(releases) {
        let id = 0x7a00_0000_0000_0000u64 | ((r as u64 + 1) * 0x0101_0101);
        let stamper = Stamper::new(&key, id, StampOptions::default())?;
        for k in 0..2 {
            let (w, h) = SIZES[(r + k) % SIZES.len()];
            let src = resize(&photos[(r + k) % photos.len()], w, h, Filter::Cubic);
            let name = format!("release-{r}-{k}.png");
            let path = Path::new(&name);
            let doc = Document::from_raster(path, src, Format::Png);
            let s = stamper.stamp_nth(doc, path, k)?;
            let (marked, _) = decode(path, &s.encoded.bytes, &Default::default())?;
            let meta = ReleaseMeta {
                release_id: id,
                recipient: format!("recipient {r}"),
                purpose: None,
                operator: None,
            };
            let file = FileRecord {
                input_path: name.clone(),
                input_sha256: String::new(),
                output_path: name.clone(),
                output_sha256: sha256_hex(&s.encoded.bytes),
                format: "PNG".into(),
                bytes: s.encoded.bytes.len() as u64,
                params: "{}".into(),
                content: s.content.clone(),
                restore: Vec::new(),
            };
            ledger.append(&meta, &file, 1_795_000_000_000, || Ok(()))?;
            stamped.push((marked, format!("recipient {r}")));
        }
    }
    // The other releases: ids and recipients only (their files are not among the found).
    for i in REAL_RELEASES..releases {
        let meta = ReleaseMeta {
            release_id: (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            recipient: format!("recipient {i}"),
            purpose: None,
            operator: None,
        };
        let file = FileRecord {
            input_path: "in.png".into(),
            input_sha256: String::new(),
            output_path: format!("out/{i}.png"),
            output_sha256: String::new(),
            format: "PNG".into(),
            bytes: 1,
            params: "{}".into(),
            content: Vec::new(),
            restore: Vec::new(),
        };
        ledger.append(&meta, &file, 1_795_000_000_000, || Ok(()))?;
    }
    drop(ledger);
    // Found images: half leaks (recompressed, rescaled, cropped), half unmarked photos.
    let found = dir.path().join("found");
    std::fs::create_dir(&found)?;
    let mut paths: Vec<PathBuf> = Vec::with_capacity(images);
    let mut leaks = 0;
    let mut pixels = 0usize;
    for i in 0..images {
        let path = found.join(format!("{i:04}.jpg"));
        let img = if i % 2 == 0 {
            leaks += 1;
            let (marked, _) = &stamped[(i / 2) % stamped.len()];
            match (i / 2) % 4 {
                0 => marked.clone(),
                1 => scale(marked, 0.7, Filter::Cubic),
                2 => crop_fraction(marked, 0.6, 0.3, 0.4),
                _ => jpeg(marked, 70),
            }
        } else {
            let (w, h) = SIZES[(i / 2) % SIZES.len()];
            resize(&photos[(i / 2 + 1) % photos.len()], w, h, Filter::Cubic)
        };
        pixels += img.width * img.height;
        save_jpeg(&img, &path, 85)?;
        paths.push(path);
    }
    let prepared = started.elapsed().as_secs_f64();
    let run = |report: Option<&Path>| -> anyhow::Result<(f64, Vec<serde_json::Value>)> {
        let mut c = std::process::Command::new(&detect);
        c.arg("--key")
            .arg(&key_path)
            .arg("--ledger")
            .arg(&ledger_path)
            .arg("--json");
        if let Some(r) = report {
            c.arg("--report").arg(r);
        }
        c.args(&paths);
        let t = Instant::now();
        let out = c.output()?;
        let secs = t.elapsed().as_secs_f64();
        // One record per image, in input order; then the run's summary.
        let recs = String::from_utf8(out.stdout)?
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|r| r["type"] != "summary")
            .collect();
        Ok((secs, recs))
    };
    let (plain, _) = run(None)?;
    let report_dir = dir.path().join("report");
    let (with_report, recs) = run(Some(&report_dir))?;
    let named_leaks = recs
        .iter()
        .enumerate()
        .filter(|(i, r)| i % 2 == 0 && !r["named"].as_array().is_none_or(Vec::is_empty))
        .count();
    let wrong = recs
        .iter()
        .enumerate()
        .filter(|(i, r)| {
            let named = r["named"].as_array().cloned().unwrap_or_default();
            if i % 2 == 1 {
                !named.is_empty()
            } else {
                let want = &stamped[(i / 2) % stamped.len()].1;
                named
                    .iter()
                    .any(|n| n["recipient"].as_str() != Some(want.as_str()))
            }
        })
        .count();
    let html = std::fs::metadata(report_dir.join("index.html")).map_or(0, |m| m.len());
    println!(
        "## Time to answer: {images} found images ({leaks} leaks of {} stamped files in {} releases, {} unmarked; {:.2} Mpx on average) with a ledger of {releases} releases, {} cores\n",
        stamped.len(),
        REAL_RELEASES.min(releases),
        images - leaks,
        pixels as f64 / images as f64 / 1e6,
        std::thread::available_parallelism().map_or(1, usize::from)
    );
    println!("| run | wall time | images/s |\n|---|---|---|");
    println!(
        "| examine (with the audit trail) | {plain:.1} s | {:.2} |",
        images as f64 / plain
    );
    println!(
        "| examine + evidence report | {with_report:.1} s | {:.2} |",
        images as f64 / with_report
    );
    println!(
        "\nReport: {:.1} MB of HTML; it added {:+.1} % to the wall time. Leaks named: {named_leaks} of {leaks}; wrong or false names: {wrong}. Preparation (stamping, ledger, images) {prepared:.0} s, not counted.",
        html as f64 / 1e6,
        100.0 * (with_report / plain - 1.0)
    );
    Ok(())
}
