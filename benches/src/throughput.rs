//! Batch stamping throughput of the release build of tracemark-embed.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use tracemark::SecretKey;
use tracemark::ledger::ScratchDatabase;

use crate::{PHOTOS, report, testdata};

/// Runs `tracemark-embed` (the binary beside this one) over a folder of copies of testdata,
/// alternately with a `reference` build when given, or with this build recording into a
/// PostgreSQL ledger when `postgres` (the URL of a database where the benchmark may create
/// and drop databases) is given; `extra` arguments go to this build only (e.g.
/// `--restore-data pixels`).
///
/// # Errors
/// When tracemark-embed is not built or a run fails.
pub fn run(
    images: usize,
    runs: usize,
    reference: Option<&Path>,
    postgres: Option<&str>,
    extra: &[String],
) -> anyhow::Result<()> {
    if reference.is_some() && postgres.is_some() {
        bail!("--reference and --postgres compare against different things: give one");
    }
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
    // With a reference binary, the two runs alternate so that both see the same machine.
    let mut binaries = vec![("this build", embed.clone(), None)];
    if let Some(r) = reference {
        binaries.push(("reference", r.to_path_buf(), None));
    }
    if let Some(url) = postgres {
        binaries[0].0 = "SQLite ledger";
        binaries.push(("PostgreSQL ledger", embed.clone(), Some(url)));
    }
    let mut rates: Vec<Vec<(f64, f64)>> = vec![Vec::new(); binaries.len()];
    for run in 0..runs {
        for (b, (name, bin, pg)) in binaries.iter().enumerate() {
            let args = if b == 0 || pg.is_some() { extra } else { &[] };
            let tag = format!("{b}-{run}");
            let s = match pg {
                None => {
                    let ledger = dir.path().join(format!("ledger{tag}.db"));
                    stamp_folder(bin, args, &key, &ledger, dir.path(), &study, &tag)?
                }
                Some(admin) => {
                    let db = ScratchDatabase::create(admin, "tracemark_bench")
                        .map_err(anyhow::Error::msg)?;
                    stamp_folder(bin, args, &key, &db.url, dir.path(), &study, &tag)?
                }
            };
            println!(
                "run {} ({name}): {} images, {:.1} MB in {:.2} s: {:.1} images/s, {:.1} MB/s",
                run + 1,
                s.files,
                s.input_bytes as f64 / 1e6,
                s.seconds,
                s.images_per_second,
                s.mb_per_second
            );
            rates[b].push((s.images_per_second, s.mb_per_second));
        }
    }
    let medians: Vec<(f64, f64)> = rates
        .iter()
        .map(|r| {
            (
                report::median(r.iter().map(|x| x.0).collect()),
                report::median(r.iter().map(|x| x.1).collect()),
            )
        })
        .collect();
    println!(
        "median of {runs}: {:.1} images/s, {:.1} MB/s ({images} files, {:.1} MB, sources: {}; {} cores)",
        medians[0].0,
        medians[0].1,
        total as f64 / 1e6,
        sources
            .iter()
            .filter_map(|p| p.file_name().and_then(|n| n.to_str()))
            .collect::<Vec<_>>()
            .join(", "),
        std::thread::available_parallelism().map_or(1, usize::from)
    );
    if let Some(&(ips, _)) = medians.get(1) {
        // Each run's pair ran back to back: the median of the pairs' ratios is the robust
        // comparison on a shared machine.
        let ratios: Vec<f64> = rates[0]
            .iter()
            .zip(&rates[1])
            .map(|(a, b)| a.0 / b.0)
            .collect();
        println!(
            "{} ({}): {ips:.1} images/s; {} is {:+.1} % against it (medians), {:+.1} % (median of the {runs} pairs' ratios)",
            binaries[1].0,
            binaries[1].1.display(),
            binaries[0].0,
            100.0 * (medians[0].0 / ips - 1.0),
            100.0 * (report::median(ratios) - 1.0)
        );
    }
    Ok(())
}

/// Stamps `study` with `embed` into `ledger` (fresh) and an output folder named by `tag`.
fn stamp_folder(
    embed: &Path,
    extra: &[String],
    key: &Path,
    ledger: &Path,
    dir: &Path,
    study: &Path,
    tag: &str,
) -> anyhow::Result<tracemark::report::SummaryRecord> {
    let out = std::process::Command::new(embed)
        .arg("--key")
        .arg(key)
        .arg("--ledger")
        .arg(ledger)
        .args(["--recipient", "throughput benchmark", "--json"])
        .args(extra)
        .arg(study)
        .arg("-o")
        .arg(dir.join(format!("out{tag}")))
        .output()?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            embed.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8(out.stdout)?;
    Ok(serde_json::from_str(
        text.lines().last().context("no summary line")?,
    )?)
}
