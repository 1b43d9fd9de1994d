//! Collusion: copies of one image stamped for different releases, averaged (optionally
//! re-encoded as JPEG), then the informed fingerprint check (design.md section 5, steps 8
//! and 9) against a ledger of releases. Records who is named, the colluders' scores, and
//! every innocent release's score, whose distribution the unit-variance model predicts.

use std::time::Instant;

use anyhow::bail;
use tracemark::SecretKey;
use tracemark::mark::detect::{DetectOptions, Detector};
use tracemark::mark::informed::{Accusation, PRESELECT, Residual, preselect};
use tracemark::raster::{Raster, Samples};
use tracemark::stats;

use tracemark::pipeline::{StampOptions, Stamper};

use crate::{PHOTOS, jpeg, load_photos, report};

/// A ledger of `n` distinct pseudo-random release ids (the same for a given `seed`).
pub fn release_ids(n: usize, seed: u64) -> Vec<u64> {
    (0..n as u64)
        .map(|i| {
            let x = (i + 1 + (seed << 40)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            (x ^ (x >> 29)).wrapping_mul(0xBF58_476D_1CE4_E5B9) ^ 0x5555_0000_AAAA_1111
        })
        .collect()
}

/// The pixel mean of equally sized copies, rounded to the nearest level.
///
/// # Panics
/// When the copies differ in size, channels or depth, or none is given.
pub fn average(copies: &[Raster]) -> Raster {
    /// The rounded mean of equally long sample slices.
    fn mean<T: Copy + Into<u32> + TryFrom<u32>>(slices: &[&[T]]) -> Vec<T> {
        let n = slices.len() as u32;
        (0..slices[0].len())
            .map(|i| {
                let sum: u32 = slices.iter().map(|s| s[i].into()).sum();
                T::try_from((sum + n / 2) / n)
                    .unwrap_or_else(|_| unreachable!("a mean stays in range"))
            })
            .collect()
    }
    let samples = match &copies[0].samples {
        Samples::U8(_) => Samples::U8(mean(
            &copies
                .iter()
                .map(|c| match &c.samples {
                    Samples::U8(s) => s.as_slice(),
                    Samples::U16(_) => panic!("mixed depths"),
                })
                .collect::<Vec<_>>(),
        )),
        Samples::U16(_) => Samples::U16(mean(
            &copies
                .iter()
                .map(|c| match &c.samples {
                    Samples::U16(s) => s.as_slice(),
                    Samples::U8(_) => panic!("mixed depths"),
                })
                .collect::<Vec<_>>(),
        )),
    };
    let first = &copies[0];
    Raster {
        width: first.width,
        height: first.height,
        channels: first.channels,
        samples,
    }
}

/// One collusion and what the informed check made of it.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Colluders named (at `N * Q(z) <= max_p`).
    pub colluders_named: usize,
    /// Innocent releases named.
    pub innocents_named: usize,
    /// The blind decode: a colluder's id, another (unlisted) id, or nothing.
    pub decoded: Decoded,
    /// The sync statistic of the copy.
    pub sync_z: f64,
    /// The colluders' fingerprint scores.
    pub colluder_z: Vec<f64>,
    /// Every innocent release's score.
    pub innocent_z: Vec<f64>,
    /// The scores in the sync's variant of the innocents the codeword preselected
    /// (`informed::preselect`): the ones judged among `PRESELECT` tests.
    pub chosen_innocent_z: Vec<f64>,
}

/// What blind decoding returned for a collusion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// One of the colluders' ids (a true, guilty name).
    Colluder,
    /// An id issued to someone else (never seen; would be a false name).
    Innocent,
    /// An id that was never issued (the collusion flag).
    Unlisted,
    /// No payload.
    Nothing,
}

/// Stamps `original` for `ledger[i]` for every `i` in `colluders`, averages the copies,
/// optionally re-encodes as JPEG at `quality`, and runs the informed check against the whole
/// ledger at `max_p`.
pub fn collude(
    detector: &Detector,
    original: &Raster,
    ledger: &[u64],
    colluders: &[usize],
    quality: Option<u8>,
    max_p: f64,
) -> Outcome {
    let copies: Vec<Raster> = colluders
        .iter()
        .map(|&i| {
            Stamper::from_patterns(
                detector.patterns().clone(),
                ledger[i],
                StampOptions::default(),
            )
            .and_then(|s| s.stamp_raster(original))
            .expect("benchmark images are large enough to carry a mark")
            .0
        })
        .collect();
    let mut leak = average(&copies);
    if let Some(q) = quality {
        leak = jpeg(&leak, q);
    }
    let d = detector
        .detect(&leak.luminance(), &DetectOptions::default())
        .expect("a stamped image is large enough");
    let guilty: Vec<u64> = colluders.iter().map(|&i| ledger[i]).collect();
    let decoded = match d.payload {
        None => Decoded::Nothing,
        Some(p) if guilty.contains(&p) => Decoded::Colluder,
        Some(p) if ledger.contains(&p) => Decoded::Innocent,
        Some(_) => Decoded::Unlisted,
    };
    let patterns = detector.patterns();
    let (mut colluder_z, mut innocent_z) = (Vec::new(), Vec::new());
    let mut chosen_innocent_z = Vec::new();
    let (mut colluders_named, mut innocents_named) = (0, 0);
    if let Some(residual) = Residual::new(patterns, &d.chips) {
        // Each release scored once in every variant; named by the same rule as
        // `informed::accuse` (the codeword's preselected releases by their score in the
        // sync's variant among PRESELECT tests; every release by that score among N, or
        // its best variant among N * VARIANTS). Innocent scores are kept per variant: each
        // is the unit-variance statistic the p-value assumes.
        let chosen = preselect(&residual, ledger, d.variant);
        for (&id, pre) in ledger.iter().zip(chosen) {
            let scores = residual.scores(patterns, id);
            let a = Accusation::judge_variants(id, &scores, ledger.len(), Some(d.variant), pre);
            let named = usize::from(a.named(max_p));
            if guilty.contains(&id) {
                colluder_z.push(a.z);
                colluders_named += named;
            } else {
                if pre {
                    chosen_innocent_z.push(scores[d.variant]);
                }
                innocent_z.extend(scores);
                innocents_named += named;
            }
        }
    }
    Outcome {
        colluders_named,
        innocents_named,
        decoded,
        sync_z: d.z,
        colluder_z,
        innocent_z,
        chosen_innocent_z,
    }
}

/// Summary of innocent scores against the N(0, 1) model.
#[derive(Clone, Debug)]
pub struct InnocentStats {
    /// Scores.
    pub n: usize,
    /// Mean.
    pub mean: f64,
    /// Standard deviation.
    pub sd: f64,
    /// Largest.
    pub max: f64,
    /// Counts at or above 3, 4, 5 and the model's expected counts.
    pub tail: Vec<(f64, usize, f64)>,
}

/// Mean, sd, max and tail counts of innocent scores with the model's expectations.
pub fn innocent_stats(z: &[f64]) -> InnocentStats {
    let n = z.len();
    let mean = z.iter().sum::<f64>() / n as f64;
    let sd = (z.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n as f64 - 1.0)).sqrt();
    let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let tail = [3.0, 4.0, 5.0]
        .iter()
        .map(|&t| {
            (
                t,
                z.iter().filter(|&&x| x >= t).count(),
                n as f64 * stats::q(t),
            )
        })
        .collect();
    InnocentStats {
        n,
        mean,
        sd,
        max,
        tail,
    }
}

/// The collusion benchmark's markdown report.
///
/// # Errors
/// Bad arguments, unreadable photos.
pub fn report(releases: usize, max_c: usize, keys: u8) -> anyhow::Result<String> {
    use rayon::prelude::*;
    use std::fmt::Write;
    if releases < max_c + 1 || max_c < 2 {
        bail!("need --max-colluders >= 2 and more releases than colluders");
    }
    let start = Instant::now();
    let photos = load_photos()?;
    let mut cells = Vec::new();
    for (p, _) in PHOTOS.iter().enumerate() {
        for c in 2..=max_c {
            for q in [None, Some(75u8)] {
                for k in 0..keys {
                    cells.push((p, c, q, k));
                }
            }
        }
    }
    let results: Vec<_> = cells
        .par_iter()
        .map(|&(p, c, q, k)| {
            let key = SecretKey::from_bytes([0x70 + k; 32]);
            let det = Detector::new(&key);
            let ledger = release_ids(releases, u64::from(k) + 1);
            // Colluders spread through the ledger.
            let who: Vec<usize> = (0..c)
                .map(|i| (i * 7919 + 13 * p + k as usize) % releases)
                .collect();
            ((p, c, q), collude(&det, &photos[p], &ledger, &who, q, 1e-6))
        })
        .collect();
    let mut md = String::new();
    writeln!(
        md,
        "## Collusion: averaged copies against {releases} releases ({keys} keys per cell, accuse at 1e-6: 2 x {PRESELECT} Q(z) in the sync's variant for the {PRESELECT} releases the codeword preselects, 4 N Q(z) there for any, or 4 x 16 N Q(z) in the best variant)\n"
    )?;
    writeln!(
        md,
        "| image | colluders | JPEG | all colluders named | colluders named | innocents named | blind decode (colluder / unlisted / none) | median colluder z | median sync z |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|---|---|")?;
    let mut innocents = Vec::new();
    let mut chosen = Vec::new();
    for (p, name) in PHOTOS.iter().enumerate() {
        for c in 2..=max_c {
            for q in [None, Some(75u8)] {
                let rs: Vec<_> = results
                    .iter()
                    .filter(|(cell, _)| *cell == (p, c, q))
                    .map(|(_, o)| o)
                    .collect();
                let all = rs.iter().filter(|o| o.colluders_named == c).count();
                let named: usize = rs.iter().map(|o| o.colluders_named).sum();
                let innocent: usize = rs.iter().map(|o| o.innocents_named).sum();
                let count = |d: Decoded| rs.iter().filter(|o| o.decoded == d).count();
                let cz: Vec<f64> = rs.iter().flat_map(|o| o.colluder_z.clone()).collect();
                let sz: Vec<f64> = rs.iter().map(|o| o.sync_z).collect();
                writeln!(
                    md,
                    "| {name} ({}x{}) | {c} | {} | {all}/{} | {named}/{} | {innocent} | {} / {} / {} | {:.1} | {:.1} |",
                    photos[p].width,
                    photos[p].height,
                    q.map_or("-".into(), |q| q.to_string()),
                    rs.len(),
                    rs.len() * c,
                    count(Decoded::Colluder),
                    count(Decoded::Unlisted),
                    count(Decoded::Nothing),
                    report::median(cz),
                    report::median(sz),
                )?;
                assert_eq!(
                    count(Decoded::Innocent),
                    0,
                    "blind decode named an innocent"
                );
                innocents.extend(rs.iter().flat_map(|o| o.innocent_z.iter().copied()));
                chosen.extend(rs.iter().flat_map(|o| o.chosen_innocent_z.iter().copied()));
            }
        }
    }
    let s = innocent_stats(&innocents);
    writeln!(
        md,
        "\nInnocent scores: {} (every innocent release of every cell); mean {:.4}, sd {:.4} (model 1), max {:.2}.",
        s.n, s.mean, s.sd, s.max
    )?;
    for (t, seen, expected) in &s.tail {
        writeln!(
            md,
            "- z >= {t}: {seen} seen, {expected:.1} expected under N(0,1)"
        )?;
    }
    let c = innocent_stats(&chosen);
    writeln!(
        md,
        "\nInnocents the codeword preselected (judged among {PRESELECT} tests), in the sync's variant: {}; mean {:.3}, sd {:.3} (model 1), max {:.2}.",
        c.n, c.mean, c.sd, c.max
    )?;
    writeln!(
        md,
        "\n{} collusions in {:.0} s on {} threads.",
        results.len(),
        start.elapsed().as_secs_f64(),
        rayon::current_num_threads()
    )?;
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn average_rounds_to_nearest_and_keeps_shape() {
        let a = Raster {
            width: 2,
            height: 1,
            channels: 1,
            samples: Samples::U8(vec![10, 200]),
        };
        let b = Raster {
            samples: Samples::U8(vec![11, 203]),
            ..a.clone()
        };
        let m = average(&[a.clone(), b]);
        assert_eq!(m.samples, Samples::U8(vec![11, 202]));
        assert_eq!((m.width, m.height, m.channels), (2, 1, 1));
        let ids = release_ids(1000, 1);
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 1000);
        assert_ne!(release_ids(5, 2), release_ids(5, 1));
    }
}
