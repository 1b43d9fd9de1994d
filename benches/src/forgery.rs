//! The forgery group of the robustness report (issue 10, finding 1): a release's mark,
//! estimated from its stamped copies, pasted onto images its recipient never received.
//! Each forgery is examined as tracemark-detect does with a ledger: "named by the mark" is
//! the rule before content binding (the payload decodes to the release, or the informed
//! check names it); "named" needs the content to match one of the release's files too.

use std::fmt::Write as _;

use rayon::prelude::*;
use serde::Serialize;
use tracemark::io::Limits;
use tracemark::mark::content::{self, Descriptor};
use tracemark::mark::detect::{DetectOptions, Detector};
use tracemark::pipeline::Document;
use tracemark::raster::Raster;

use crate::forge::{Estimate, synthetic_innocents};
use crate::robustness::{informed, key_for, stamp};
use crate::*;

/// One forgery, examined.
#[derive(Clone, Debug, Serialize)]
pub struct ForgeryTrial {
    /// The released image the estimate came from.
    pub released: String,
    /// What the mark was pasted onto.
    pub innocent: String,
    /// "raw residual", "one-copy tile" or "three-copy tile".
    pub estimate: &'static str,
    /// PSNR of the pasted estimate, dB.
    pub psnr_db: f64,
    /// Recompressed as JPEG 80 after pasting.
    pub jpeg80: bool,
    /// A mark of the key was claimed.
    pub marked: bool,
    /// Named by the mark alone (payload decoded to the release, or the informed check).
    pub named_by_mark: bool,
    /// Rank correlation with the best-matching released file (when comparable).
    pub content_r: Option<f64>,
    /// log10 of that match's chance probability (files counted).
    pub content_log10_p: Option<f64>,
    /// Named with content binding.
    pub named: bool,
}

/// A DICOM test file's display plane as a viewer's 8-bit export, at most 768 px a side.
fn dicom_export(name: &str) -> anyhow::Result<Raster> {
    let doc = Document::open(&testdata().join(name), &Limits::default())?;
    let r = tracemark::testsignal::to_grey8(&doc.detection_plane()?);
    let long = r.width.max(r.height);
    Ok(if long > 768 {
        scale(&r, 768.0 / long as f64, Filter::Box)
    } else {
        r
    })
}

/// Runs the forgeries: each photo in turn is released (with the next two photos, one key
/// and payload) and its mark pasted onto eight kinds of image outside the release.
///
/// # Errors
/// Unreadable test files.
pub fn run(photos: &[(String, Raster)], seed: u64) -> anyhow::Result<Vec<ForgeryTrial>> {
    let mut outside: Vec<(String, Raster)> = vec![
        ("MR export".into(), dicom_export("MR2_UNCR.dcm")?),
        ("radiograph export".into(), dicom_export("RG1_UNCR.dcm")?),
    ];
    outside.extend(
        synthetic_innocents(512, seed)
            .into_iter()
            .map(|(n, r)| (n.to_string(), r)),
    );
    let mut jobs = Vec::new();
    for i in 0..photos.len() {
        let (key, payload) = key_for(seed ^ 0xF0F0, i as u64);
        let members: Vec<usize> = (0..3.min(photos.len()))
            .map(|j| (i + j) % photos.len())
            .collect();
        let copies: Vec<Raster> = members
            .iter()
            .map(|&j| stamp(&photos[j].1, &key, payload))
            .collect();
        // As the product does: each file described before marking.
        let descriptors: Vec<Descriptor> = members
            .iter()
            .map(|&j| content::describe(&photos[j].1.luminance()))
            .collect();
        let estimates = [
            ("raw residual", Estimate::raw(&copies[0])),
            ("one-copy tile", Estimate::tile(&[&copies[0]])),
            (
                "three-copy tile",
                Estimate::tile(&copies.iter().collect::<Vec<_>>()),
            ),
        ];
        let mut innocents: Vec<(String, Raster)> = photos
            .iter()
            .enumerate()
            .filter(|(j, _)| !members.contains(j))
            .map(|(_, (n, r))| (n.clone(), r.clone()))
            .collect();
        innocents.extend(outside.iter().cloned());
        for (iname, target) in &innocents {
            for (ename, est) in &estimates {
                for psnr in [44.0, 48.0] {
                    for jpeg80 in [false, true] {
                        jobs.push((
                            i,
                            key.clone(),
                            payload,
                            descriptors.clone(),
                            iname.clone(),
                            *ename,
                            est.clone(),
                            target.clone(),
                            psnr,
                            jpeg80,
                        ));
                    }
                }
            }
        }
    }
    Ok(jobs
        .into_par_iter()
        .map(
            |(i, key, payload, descriptors, innocent, estimate, est, target, psnr_db, jpeg80)| {
                let forged = est.paste(&target, psnr_db, 1.0);
                let forged = if jpeg80 {
                    jpeg_420(&forged, 80)
                } else {
                    forged
                };
                let plane = forged.luminance();
                let det = Detector::new(&key);
                let d = det
                    .detect(&plane, &DetectOptions::default())
                    .expect("forgeries are large enough");
                // The informed check against the release and 1,000 others.
                let (informed, _) = informed(det.patterns(), &d, payload, seed);
                let named_by_mark = d.payload == Some(payload) || informed;
                let refs: Vec<&Descriptor> = descriptors.iter().collect();
                let best = content::best_match(&plane, &d.registration, &refs);
                let matched = best
                    .as_ref()
                    .is_some_and(|(_, m)| m.matches(1e-6, refs.len()));
                ForgeryTrial {
                    released: photos[i].0.clone(),
                    innocent,
                    estimate,
                    psnr_db,
                    jpeg80,
                    marked: d.marked,
                    named_by_mark,
                    content_r: best.as_ref().map(|(_, m)| (m.r * 1000.0).round() / 1000.0),
                    content_log10_p: best
                        .as_ref()
                        .map(|(_, m)| (m.log10_p_among(refs.len()) * 100.0).round() / 100.0),
                    named: named_by_mark && matched,
                }
            },
        )
        .collect())
}

/// The forgery section of the report (markdown).
pub fn section(trials: &[ForgeryTrial]) -> String {
    let mut md = String::from(
        "## Forgery: a release's mark pasted onto images it never contained\n\n\
         Each photo is released with the next two (one key, one payload); its mark is estimated \
         from the stamped copy (the copy minus its 5x5 median: the raw residual; that residual \
         folded into one 128-px tile; the tile averaged over the release's three copies) and \
         pasted at 44 or 48 dB, with or without JPEG 80, onto 8 kinds of image outside the \
         release (the other photo, an MR and a radiograph export, text, noise, flat grey, a UI \
         screenshot, a gradient). \"Named by the mark\" is the rule before content binding; \
         \"named\" also needs the content to match a released file.\n\n\
         The last two columns show how close the forgeries came to a content match, which needs \
         both r >= 0.5 and p <= 1e-6: the largest correlation, and the smallest p among forgeries \
         with r >= 0.3.\n\n\
         | estimate | PSNR | JPEG 80 | forgeries | marked | named by the mark | named | largest content r | smallest p (r >= 0.3) |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    let mut keys: Vec<(&str, u64, bool)> = Vec::new();
    for t in trials {
        let k = (t.estimate, t.psnr_db.to_bits(), t.jpeg80);
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    for (estimate, psnr, jpeg80) in keys {
        let g: Vec<&ForgeryTrial> = trials
            .iter()
            .filter(|t| t.estimate == estimate && t.psnr_db.to_bits() == psnr && t.jpeg80 == jpeg80)
            .collect();
        let count = |f: fn(&ForgeryTrial) -> bool| g.iter().filter(|t| f(t)).count();
        let r = g
            .iter()
            .filter_map(|t| t.content_r)
            .fold(f64::NEG_INFINITY, f64::max);
        let p = g
            .iter()
            .filter(|t| t.content_r.is_some_and(|r| r >= 0.3))
            .filter_map(|t| t.content_log10_p)
            .fold(f64::INFINITY, f64::min);
        let p = if p.is_finite() {
            crate::report::p_cell(p)
        } else {
            "–".into()
        };
        let _ = writeln!(
            md,
            "| {estimate} | {} dB | {} | {} | {} | {} | **{}** | {r:.2} | {p} |",
            f64::from_bits(psnr),
            if jpeg80 { "yes" } else { "no" },
            g.len(),
            count(|t| t.marked),
            count(|t| t.named_by_mark),
            count(|t| t.named),
        );
    }
    let total = trials.iter().filter(|t| t.named).count();
    let before = trials.iter().filter(|t| t.named_by_mark).count();
    let _ = writeln!(
        md,
        "\nOver all {} forgeries: {before} would have named the recipient by the mark alone; **{total}** name anybody with content binding.\n",
        trials.len()
    );
    md
}
