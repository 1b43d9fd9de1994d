//! Batch stamping throughput of the release build of tracemark-embed.

use std::path::PathBuf;

use anyhow::{Context, bail};
use tracemark::SecretKey;

use crate::{PHOTOS, report, testdata};

/// Runs `tracemark-embed` (the binary beside this one) over a folder of copies of testdata.
///
/// # Errors
/// When tracemark-embed is not built or a run fails.
pub fn run(images: usize, runs: usize) -> anyhow::Result<()> {
    use tracemark::report::SummaryRecord;
    let embed = std::env::current_exe()?.with_file_name("tracemark-embed");
    if !embed.exists() {
        bail!(
            "{} not found: build it first (cargo build --release -p tracemark-embed)",
            embed.display()
        );
    }
    let dir = tempfile::tempdir()?;
    let study = dir.path().join("study");
    // The photos and the original DICOM files (not the derived fixtures, and not
    // emri_small.dcm, whose 64-px frames are refused).
    let sources: Vec<PathBuf> = PHOTOS
        .iter()
        .chain(&[
            "RG1_UNCR.dcm",
            "MR2_UNCR.dcm",
            "693_UNCR.dcm",
            "CT_small.dcm",
            "US1_UNCR.dcm",
        ])
        .map(|f| testdata().join(f))
        .collect();
    let mut total = 0u64;
    for i in 0..images {
        let src = &sources[i % sources.len()];
        let sub = study.join(format!("series{}", i % 8));
        std::fs::create_dir_all(&sub)?;
        let name = format!(
            "{i:04}-{}",
            src.file_name().and_then(|n| n.to_str()).unwrap_or("x")
        );
        total += std::fs::copy(src, sub.join(name))?;
    }
    let key = dir.path().join("bench.key");
    SecretKey::generate()?.create_file(&key)?;
    let mut rates = Vec::new();
    for run in 0..runs {
        let out = std::process::Command::new(&embed)
            .arg("--key")
            .arg(&key)
            .arg("--ledger")
            .arg(dir.path().join(format!("ledger{run}.db")))
            .args(["--recipient", "throughput benchmark", "--json"])
            .arg(&study)
            .arg("-o")
            .arg(dir.path().join(format!("out{run}")))
            .output()?;
        if !out.status.success() {
            bail!(
                "tracemark-embed failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let text = String::from_utf8(out.stdout)?;
        let s: SummaryRecord =
            serde_json::from_str(text.lines().last().context("no summary line")?)?;
        println!(
            "run {}: {} images, {:.1} MB in {:.2} s: {:.1} images/s, {:.1} MB/s",
            run + 1,
            s.files,
            s.input_bytes as f64 / 1e6,
            s.seconds,
            s.images_per_second,
            s.mb_per_second
        );
        rates.push((s.images_per_second, s.mb_per_second));
    }
    let ips: Vec<f64> = rates.iter().map(|r| r.0).collect();
    let mbs: Vec<f64> = rates.iter().map(|r| r.1).collect();
    println!(
        "median of {runs}: {:.1} images/s, {:.1} MB/s ({images} files, {:.1} MB, sources: {}; {} cores)",
        report::median(ips),
        report::median(mbs),
        total as f64 / 1e6,
        sources
            .iter()
            .filter_map(|p| p.file_name().and_then(|n| n.to_str()))
            .collect::<Vec<_>>()
            .join(", "),
        std::thread::available_parallelism().map_or(1, usize::from)
    );
    Ok(())
}
