//! tracemark-detect: blind detection of a tracemark watermark.

mod cli;

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use rayon::prelude::*;
use tracemark::SecretKey;
use tracemark::io::Limits;
use tracemark::io::image::read;
use tracemark::mark::detect::{DetectOptions, Detector};
use tracemark::report::{
    DetectionRecord, ErrorRecord, PayloadStatus, Verdict, payload_hex, sanitize,
};

fn main() -> ExitCode {
    match run(cli::Cli::parse()) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("tracemark-detect: error: {}", sanitize(&format!("{err:#}")));
            ExitCode::from(2)
        }
    }
}

fn run(cli: cli::Cli) -> anyhow::Result<ExitCode> {
    if !(cli.max_p > 0.0 && cli.max_p < 1.0) {
        anyhow::bail!(
            "--max-p {} is out of range: use a probability in (0, 1)",
            cli.max_p
        );
    }
    let key = SecretKey::load_file(&cli.key)?;
    let detector = Detector::new(&key);
    let opts = DetectOptions { max_p: cli.max_p };
    let (mut any_error, mut any_unmarked) = (false, false);
    let stdout = std::io::stdout();
    // Inputs are examined in parallel (one image per thread) and reported in input order.
    let results: Vec<anyhow::Result<DetectionRecord>> = cli
        .inputs
        .par_iter()
        .map(|input| examine(&detector, &key, input, &opts))
        .collect();
    for (input, result) in cli.inputs.iter().zip(results) {
        let mut out = stdout.lock();
        let written = match result {
            Ok(rec) => {
                any_unmarked |= rec.verdict == Verdict::NoMark;
                if cli.json {
                    writeln!(out, "{}", serde_json::to_string(&rec)?)
                } else {
                    writeln!(out, "{}", human(&rec))
                }
            }
            Err(err) => {
                any_error = true;
                let msg = format!("{err:#}");
                eprintln!("tracemark-detect: error: {}", sanitize(&msg));
                if cli.json {
                    let rec = ErrorRecord {
                        kind: "error".into(),
                        path: input.display().to_string(),
                        error: msg,
                    };
                    writeln!(out, "{}", serde_json::to_string(&rec)?)
                } else {
                    Ok(())
                }
            }
        };
        if let Err(e) = written {
            // A closed pipe (`| head`) is not an error of ours.
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(ExitCode::SUCCESS);
            }
            return Err(e.into());
        }
    }
    Ok(if any_error {
        ExitCode::from(2)
    } else if any_unmarked {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn examine(
    detector: &Detector,
    key: &SecretKey,
    input: &Path,
    opts: &DetectOptions,
) -> anyhow::Result<DetectionRecord> {
    let (raster, _) = read(input, &Limits::default())?;
    let start = Instant::now();
    let d = detector
        .detect(&raster.luminance(), opts)
        .map_err(|e| anyhow::anyhow!("{}: {e}", input.display()))?;
    let time_ms = start.elapsed().as_secs_f64() * 1e3;
    let verdict = if d.marked {
        Verdict::Marked
    } else {
        Verdict::NoMark
    };
    Ok(DetectionRecord {
        kind: "detection".into(),
        path: input.display().to_string(),
        verdict,
        payload: d.payload.map(payload_hex),
        payload_status: match (d.marked, d.payload) {
            (true, Some(_)) => PayloadStatus::Confirmed,
            (true, None) => PayloadStatus::Unreadable,
            _ => PayloadStatus::None,
        },
        p_value: d.p_value(),
        log10_p: (d.log10_p * 100.0).round() / 100.0,
        z: (d.z * 100.0).round() / 100.0,
        threshold_p: opts.max_p,
        transform: d.marked.then_some(d.transform),
        candidates: d.candidates,
        time_ms: (time_ms * 10.0).round() / 10.0,
        key_id: key.key_id(),
    })
}

fn human(r: &DetectionRecord) -> String {
    let path = sanitize(&r.path);
    match (&r.verdict, &r.transform) {
        (Verdict::Marked, Some(t)) => format!(
            "{path}: marked, payload {}, p = {} (z {:.1}); scale {:.3}, rotation {:.2} deg, shift ({}, {}), inverted {}; {:.0} ms",
            r.payload
                .as_deref()
                .unwrap_or("unreadable (mark present, payload did not decode)"),
            p_text(r.log10_p),
            r.z,
            t.scale,
            t.rotation_deg,
            t.shift[0],
            t.shift[1],
            if t.inverted { "yes" } else { "no" },
            r.time_ms
        ),
        _ => format!(
            "{path}: no_mark (best z {:.1}, p = {} above the {:e} threshold); {:.0} ms",
            r.z,
            p_text(r.log10_p),
            r.threshold_p,
            r.time_ms
        ),
    }
}

fn p_text(log10_p: f64) -> String {
    if log10_p > -4.0 {
        format!("{:.3}", 10f64.powf(log10_p))
    } else {
        let e = log10_p.floor();
        format!("{:.1}e{}", 10f64.powf(log10_p - e), e)
    }
}
