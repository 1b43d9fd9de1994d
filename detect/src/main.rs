//! tracemark-detect: blind detection of a tracemark watermark.

mod cli;

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use rayon::prelude::*;
use tracemark::SecretKey;
use tracemark::io::dicom::DicomImage;
use tracemark::io::image::{decode, read_bytes};
use tracemark::io::{Format, Limits};
use tracemark::ledger::Ledger;
use tracemark::mark::detect::{DetectOptions, Detector};
use tracemark::mark::informed::{Residual, accuse};
use tracemark::report::{
    AccusedRecord, DetectionRecord, ErrorRecord, PayloadStatus, ReleaseRecord, Verdict, iso_utc,
    payload_hex, sanitize,
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
    let releases = match &cli.ledger {
        Some(path) => Some(Releases::load(&Ledger::open_existing(path, &key)?)?),
        None => None,
    };
    let opts = DetectOptions { max_p: cli.max_p };
    let (mut any_error, mut any_unmarked) = (false, false);
    let stdout = std::io::stdout();
    // Inputs are examined in parallel (one image per thread) and reported in input order.
    let results: Vec<anyhow::Result<DetectionRecord>> = cli
        .inputs
        .par_iter()
        .map(|input| examine(&detector, &key, input, &opts, releases.as_ref()))
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

/// What the detector needs from the ledger, read once.
struct Releases {
    ids: Vec<u64>,
    by_id: std::collections::HashMap<u64, ReleaseRecord>,
}

impl Releases {
    fn load(ledger: &Ledger) -> anyhow::Result<Self> {
        let mut by_id: std::collections::HashMap<u64, ReleaseRecord> = Default::default();
        let mut ids = Vec::new();
        for e in ledger.entries()? {
            let id = e.release.release_id;
            let rec = by_id.entry(id).or_insert_with(|| {
                ids.push(id);
                ReleaseRecord {
                    release_id: payload_hex(id),
                    recipient: e.release.recipient.clone(),
                    created_utc: iso_utc(e.created_ms),
                    files: Vec::new(),
                }
            });
            rec.files.push(e.file.output_path.clone());
        }
        Ok(Releases { ids, by_id })
    }
}

fn examine(
    detector: &Detector,
    key: &SecretKey,
    input: &Path,
    opts: &DetectOptions,
    releases: Option<&Releases>,
) -> anyhow::Result<DetectionRecord> {
    let bytes = read_bytes(input, &Limits::default())?;
    // DICOM: the display plane of the file's own window (the mean of its frames, or the
    // montage of small frames), the units the mark was embedded in.
    let plane = if Format::sniff(&bytes) == Some(Format::Dicom) {
        DicomImage::decode(input, &bytes, &Limits::default())?
            .detection_plane()
            .map_err(|e| anyhow::anyhow!("{}: {e}", input.display()))?
    } else {
        decode(input, &bytes, &Limits::default())?.0.luminance()
    };
    let start = Instant::now();
    let d = detector
        .detect(&plane, opts)
        .map_err(|e| anyhow::anyhow!("{}: {e}", input.display()))?;
    // The ledger: a confirmed, issued id names its release. The informed check then scores
    // every release's fingerprint, whether or not the payload decoded: averaged copies can
    // decode to one colluder's id, and only the fingerprints name the others. It never uses
    // the payload codeword, whose overlaps between ids would name innocents.
    let (mut release, mut accused, mut possible_collusion) = (None, Vec::new(), false);
    if let Some(rs) = releases {
        release = d.payload.and_then(|p| rs.by_id.get(&p).cloned());
        if let Some(residual) = Residual::new(detector.patterns(), &d.chips) {
            accused = accuse(detector.patterns(), &residual, &rs.ids, opts.max_p)
                .into_iter()
                .map(|a| AccusedRecord {
                    release_id: payload_hex(a.release),
                    recipient: rs.by_id[&a.release].recipient.clone(),
                    z: (a.z * 100.0).round() / 100.0,
                    p_value: 10f64.powf(a.log10_p),
                })
                .collect();
        }
        let decoded = d.payload.map(payload_hex);
        possible_collusion = (d.payload.is_some() && release.is_none())
            || accused
                .iter()
                .any(|a| Some(&a.release_id) != decoded.as_ref());
    }
    let time_ms = start.elapsed().as_secs_f64() * 1e3;
    // A fingerprint named at p <= max_p also proves that a mark of this key is present.
    let verdict = if d.marked || !accused.is_empty() {
        Verdict::Marked
    } else {
        Verdict::NoMark
    };
    Ok(DetectionRecord {
        kind: "detection".into(),
        path: input.display().to_string(),
        verdict,
        payload: d.payload.map(payload_hex),
        payload_status: match (verdict == Verdict::Marked, d.payload) {
            (true, Some(_)) => PayloadStatus::Confirmed,
            (true, None) => PayloadStatus::Unreadable,
            _ => PayloadStatus::None,
        },
        p_value: d.p_value(),
        log10_p: (d.log10_p * 100.0).round() / 100.0,
        z: (d.z * 100.0).round() / 100.0,
        threshold_p: opts.max_p,
        transform: (verdict == Verdict::Marked).then_some(d.transform),
        candidates: d.candidates,
        time_ms: (time_ms * 10.0).round() / 10.0,
        key_id: key.key_id(),
        release,
        accused,
        possible_collusion,
    })
}

fn human(r: &DetectionRecord) -> String {
    let mut line = human_core(r);
    if let Some(rel) = &r.release {
        line += &format!(
            "\n  release {} to {} at {} ({} file(s))",
            rel.release_id,
            sanitize(&rel.recipient),
            rel.created_utc,
            rel.files.len()
        );
    }
    if r.possible_collusion {
        line += "\n  possible collusion: a mark is present but its payload was never issued";
    }
    for a in &r.accused {
        line += &format!(
            "\n  informed check names release {} to {} (fingerprint z {:.1}, p = {:.1e})",
            a.release_id,
            sanitize(&a.recipient),
            a.z,
            a.p_value
        );
    }
    line
}

fn human_core(r: &DetectionRecord) -> String {
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
