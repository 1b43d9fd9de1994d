//! Writes a robustness run to a directory: `report.md` (tables and plots; no timings, so a
//! re-run with the same seed reproduces it byte for byte), `trials.json`, `trials.csv`,
//! `null.csv`, and the plots as PNG and SVG.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use tracemark::stats;

use crate::plot::{LineChart, NullChart, Series, render};
use crate::robustness::{NullTrial, Results, null_model_mean};
use crate::scenario::Family;

/// Recovery count for a group of trials.
#[derive(Default, Clone, Copy)]
struct Tally {
    ok: usize,
    n: usize,
    false_claims: usize,
    /// Recovered blindly or named by the informed check.
    either: usize,
    /// The informed check named a wrong release.
    informed_false: usize,
    /// Named with content binding (mark and content).
    named: usize,
}

impl Tally {
    fn rate(&self) -> f64 {
        if self.n == 0 {
            f64::NAN
        } else {
            self.ok as f64 / self.n as f64
        }
    }
    fn cell(&self) -> String {
        if self.n == 0 {
            "–".into()
        } else {
            format!("{:.0} % ({}/{})", 100.0 * self.rate(), self.ok, self.n)
        }
    }
}

/// A p-value from its log10 for a table cell.
pub fn p_cell(log10_p: f64) -> String {
    let e = log10_p.floor();
    format!("{:.1}e{}", 10f64.powf(log10_p - e), e)
}

/// The median (upper middle for an even count; NaN when empty).
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Writes everything; returns the markdown of the main table (for the README).
///
/// # Errors
/// File-system or drawing errors.
pub fn write(
    dir: &Path,
    res: &Results,
    mode: &str,
    seed: u64,
    keys: usize,
) -> anyhow::Result<String> {
    std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    // Per scenario and size class.
    let mut order: Vec<&'static str> = Vec::new();
    let mut tally: BTreeMap<(&str, &str), Tally> = BTreeMap::new();
    let mut zs: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut bers: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for t in &res.trials {
        if !order.contains(&t.scenario) {
            order.push(t.scenario);
        }
        for class in [t.size_class, "all"] {
            let e = tally.entry((t.scenario, class)).or_default();
            e.n += 1;
            e.ok += usize::from(t.recovered);
            e.false_claims += usize::from(t.false_claim);
            e.either += usize::from(t.recovered || t.informed_named);
            e.informed_false += usize::from(t.informed_false);
            e.named += usize::from(t.named);
        }
        zs.entry(t.scenario).or_default().push(t.z);
        bers.entry(t.scenario)
            .or_default()
            .push(t.bit_errors as f64 / tracemark::coding::CODED_BITS as f64);
    }
    let mut table = String::new();
    table += "| scenario | small (< 1 Mpx) | large (>= 1 Mpx) | all | named by the mark (blind or informed) | named (mark + content) | median z | median coded-bit errors | false claims |\n";
    table += "|---|---|---|---|---|---|---|---|---|\n";
    for s in &order {
        let get = |c: &str| tally.get(&(*s, c)).copied().unwrap_or_default();
        let _ = writeln!(
            table,
            "| {s} | {} | {} | {} | {} | {} | {:.1} | {:.1} % | {} |",
            get("small").cell(),
            get("large").cell(),
            get("all").cell(),
            Tally {
                ok: get("all").either,
                ..get("all")
            }
            .cell(),
            Tally {
                ok: get("all").named,
                ..get("all")
            }
            .cell(),
            median(zs[s].clone()),
            100.0 * median(bers[s].clone()),
            get("all").false_claims + get("all").informed_false
        );
    }
    let total_false: usize = res
        .trials
        .iter()
        .filter(|t| t.false_claim || t.informed_false)
        .count();
    let mut worst: Vec<(&str, f64)> = order
        .iter()
        .map(|s| (*s, tally[&(*s, "all")].rate()))
        .collect();
    worst.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(b.0)));

    // Null study.
    let threshold = stats::z_threshold_two_sided(1e-6, least_family(&res.null));
    let null_z: Vec<f64> = res.null.iter().map(|t| t.z).collect();

    // Plots.
    let families = [
        (
            Family::Jpeg,
            "jpeg",
            "Recovery vs JPEG quality (4:2:0 for colour)",
            "JPEG quality",
        ),
        (
            Family::Scale,
            "scale",
            "Recovery vs rescale factor",
            "scale factor",
        ),
        (
            Family::Crop,
            "crop",
            "Recovery vs area kept by a crop",
            "fraction of the area kept",
        ),
    ];
    for (fam, stem, title, xl) in families {
        let mut series = Vec::new();
        for class in ["small", "large"] {
            let mut pts: BTreeMap<i64, Tally> = BTreeMap::new();
            for t in res
                .trials
                .iter()
                .filter(|t| t.family == fam && t.size_class == class)
            {
                let e = pts.entry((t.param * 1000.0).round() as i64).or_default();
                e.n += 1;
                e.ok += usize::from(t.recovered);
            }
            if !pts.is_empty() {
                series.push(Series {
                    label: format!("{class} images"),
                    points: pts
                        .iter()
                        .map(|(k, t)| (*k as f64 / 1000.0, 100.0 * t.rate()))
                        .collect(),
                });
            }
        }
        let xs: Vec<f64> = series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0))
            .collect();
        let (lo, hi) = xs
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
        let pad = (hi - lo).max(1e-3) * 0.05;
        render(
            &dir.join(stem),
            &LineChart {
                title,
                x_label: xl,
                y_label: "exact payload recovered (%)",
                x_range: (lo - pad, hi + pad),
                y_range: (-2.0, 102.0),
                series,
            },
        )?;
    }
    render(
        &dir.join("null"),
        &NullChart {
            values: &null_z,
            model_cdf: &|t| 1.0 - null_model_mean(&res.null, t),
            threshold,
        },
    )?;

    // report.md
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# tracemark robustness report ({mode} mode, seed {seed})\n"
    );
    let _ = writeln!(
        md,
        "Each image stamped with {keys} keys (each its own random 64-bit payload) at the default settings \
         (42 dB, mask gamma 0.5), then leaked by each scenario and traced blindly. A trial counts as \
         recovered only when the exact payload comes back (CRC-confirmed, p <= 1e-6). \"Blind or informed\" \
         also counts the informed ledger check naming the true release among {} others at N Q(z) <= 1e-6; \
         \"false claims\" counts wrong payloads and wrong releases named by either. \"Named (mark + content)\" \
         is what tracemark-detect reports in `named`: the mark names the release and the copy's content \
         matches the released image (content binding, issue 10).\n",
        crate::robustness::INFORMED_RELEASES
    );
    md += "| image | size | class | mean PSNR |\n|---|---|---|---|\n";
    for (name, psnr) in &res.psnr {
        let t = res
            .trials
            .iter()
            .find(|t| &t.image == name)
            .expect("trials per image");
        let _ = writeln!(
            md,
            "| {name} | {}x{} | {} | {psnr:.2} dB |",
            t.width, t.height, t.size_class
        );
    }
    let _ = writeln!(md, "\n## Recovery by scenario\n\n{table}");
    let _ = writeln!(
        md,
        "Wrong payloads or wrong releases named over all {} trials: **{total_false}**.\n",
        res.trials.len()
    );
    md += "Lowest recovery: ";
    md += &worst
        .iter()
        .take(3)
        .map(|(s, r)| format!("{s} ({:.0} %)", 100.0 * r))
        .collect::<Vec<_>>()
        .join(", ");
    md += ".\n\n![recovery vs JPEG quality](jpeg.png)\n![recovery vs scale](scale.png)\n![recovery vs crop](crop.png)\n\n";
    if !res.forgeries.is_empty() {
        md += &crate::forgery::section(&res.forgeries);
    }
    md += &null_section(&res.null);
    md += "\n![null histogram](null.png)\n\nFiles: `trials.json`, `trials.csv`, `null.csv` (every trial, with timings), \
           plots as PNG and SVG.\n";
    std::fs::write(dir.join("report.md"), &md)?;

    // Machine-readable trials.
    std::fs::write(
        dir.join("trials.json"),
        serde_json::to_string_pretty(&res.trials)?,
    )?;
    let mut csv = String::from(
        "image,size_class,width,height,key,payload,scenario,family,param,leaked_width,leaked_height,recovered,marked,false_claim,z,log10_p,bit_errors,informed_named,informed_false,content_r,named,detect_ms\n",
    );
    for t in &res.trials {
        let _ = writeln!(
            csv,
            "{},{},{},{},{},{},{},{:?},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            t.image,
            t.size_class,
            t.width,
            t.height,
            t.key,
            t.payload,
            t.scenario,
            t.family,
            t.param,
            t.leaked_width,
            t.leaked_height,
            t.recovered,
            t.marked,
            t.false_claim,
            t.z,
            t.log10_p,
            t.bit_errors,
            t.informed_named,
            t.informed_false,
            t.content_r.map(|r| r.to_string()).unwrap_or_default(),
            t.named,
            t.detect_ms
        );
    }
    std::fs::write(dir.join("trials.csv"), csv)?;
    let mut ncsv =
        String::from("image,kind,variant,z,log10_p,claimed,payload_reported,framed,whole,turned\n");
    for t in &res.null {
        let _ = writeln!(
            ncsv,
            "{},{},{},{},{},{},{},{},{},{}",
            t.image,
            t.kind,
            t.variant,
            t.z,
            t.log10_p,
            t.claimed,
            t.payload_reported,
            t.framed,
            t.whole,
            t.turned
        );
    }
    std::fs::write(dir.join("null.csv"), ncsv)?;
    Ok(table)
}

/// The smallest family (single tests) among null detections (a copy with no screen's
/// frame).
fn least_family(null: &[NullTrial]) -> f64 {
    null.iter().map(|t| t.tests).reduce(f64::min).unwrap_or(1.0)
}

/// The false-claim section of the report (markdown).
pub fn null_section(null: &[NullTrial]) -> String {
    let mut md = String::new();
    let least = least_family(null);
    let threshold = stats::z_threshold_two_sided(1e-6, least);
    let framed = null.iter().filter(|t| t.framed).count();
    let whole: Vec<f64> = null.iter().filter(|t| t.whole).map(|t| t.z).collect();
    let whole = match whole.iter().copied().reduce(f64::max) {
        Some(max) => format!(
            " Given the sizes, {} copies had the proportions of one at another size and \
             counted the whole-image search too (largest statistic among them {max:.2}).",
            whole.len()
        ),
        None => String::new(),
    };
    let turned: Vec<f64> = null.iter().filter(|t| t.turned).map(|t| t.z).collect();
    let turned = match turned.iter().copied().reduce(f64::max) {
        Some(max) => format!(
            " {} copies showed an image turned on a canvas and counted the turned-canvas \
             search (largest statistic among them {max:.2}).",
            turned.len()
        ),
        None => String::new(),
    };
    let most = null.iter().map(|t| t.tests).fold(least, f64::max);
    let threshold_most = stats::z_threshold_two_sided(1e-6, most);
    let null_z: Vec<f64> = null.iter().map(|t| t.z).collect();
    let null_claims = null.iter().filter(|t| t.claimed).count();
    let null_payloads = null.iter().filter(|t| t.payload_reported).count();
    let null_max = null_z.iter().cloned().fold(f64::MIN, f64::max);
    let res_null = null;
    let _ = writeln!(
        md,
        "## False-claim study\n\n{} blind detections with a fresh random key each, on the images (large ones cut to a \
         random 640 px window) as they are, after JPEG 75, random crops keeping 30-90 % of the area, \
         downscales 0.5-0.9 and, one in five, photographed on a screen at a tilt of 5-10 degrees; half \
         unmarked and half carrying another key's mark. {framed} copies showed a screen's frame and were \
         searched twice, the copy and the copy rectified, and when given the images' sizes (`--ledger-sizes`) \
         a third time, by the frame search.{whole}{turned} The p-values count every search; the model below \
         counts each detection's own family.\n",
        res_null.len()
    );
    let _ = writeln!(
        md,
        "- Marks claimed at p <= 1e-6: **{null_claims}**; payloads reported: **{null_payloads}**; largest statistic **{null_max:.2}** (claim threshold {threshold:.2}; {threshold_most:.2} for the largest family counted).\n"
    );
    md += "| t | measured P(stat > t) | model 1 - (1 - 2Q(t))^n | measured / model |\n|---|---|---|---|\n";
    for t in [4.5, 5.0, 5.5, 6.0, 6.5] {
        let m = null_z.iter().filter(|&&z| z > t).count() as f64 / null_z.len().max(1) as f64;
        let model = null_model_mean(null, t);
        let _ = writeln!(md, "| {t} | {m:.5} | {model:.5} | {:.2} |", m / model);
    }
    md += "\n| alpha | measured P(p <= alpha) |\n|---|---|\n";
    for a in [0.1f64, 0.01, 0.001] {
        let m = res_null.iter().filter(|t| t.log10_p <= a.log10()).count() as f64
            / res_null.len().max(1) as f64;
        let _ = writeln!(md, "| {a} | {m:.5} |");
    }
    md
}

/// The null copies examined against their originals ([`NullTrial::reference`]).
pub fn reference_null_section(null: &[NullTrial]) -> String {
    let refs: Vec<_> = null.iter().filter_map(|t| t.reference).collect();
    let registered: Vec<_> = refs.iter().filter(|r| r.registered).collect();
    let claims = refs.iter().filter(|r| r.claimed).count();
    let payloads = refs.iter().filter(|r| r.payload_reported).count();
    let named = refs.iter().filter(|r| r.named).count();
    let max_z = registered.iter().map(|r| r.z).fold(f64::NAN, f64::max);
    let max_fp = registered
        .iter()
        .map(|r| r.max_fingerprint_z)
        .fold(f64::NAN, f64::max);
    let mut md = format!(
        "\n## Against the original\n\nThe same copies examined against the image each was made from (`tracemark-detect --original`): {} of {} registered and searched. Marks claimed at p <= 1e-6 (counting the maps compared): **{claims}**; payloads reported: **{payloads}**; releases named by the informed check among 1,001 (none in the copy): **{named}**; largest statistic **{max_z:.2}**; largest of the 1,001 x {} fingerprint scores **{max_fp:.2}**.\n\n",
        registered.len(),
        null.len(),
        registered.len()
    );
    md += "| t | measured P(stat > t) | model 1 - (1 - 2Q(t))^n | measured / model |\n|---|---|---|---|\n";
    for t in [4.5, 5.0, 5.5, 6.0] {
        let n = registered.len().max(1) as f64;
        let m = registered.iter().filter(|r| r.z > t).count() as f64 / n;
        let model = registered
            .iter()
            .map(|r| crate::robustness::null_model_exceed(t, r.tests))
            .sum::<f64>()
            / n;
        let _ = writeln!(md, "| {t} | {m:.5} | {model:.5} | {:.2} |", m / model);
    }
    md
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::robustness::{Config, run};
    use crate::scenario::catalogue;
    use tracemark::io::Limits;
    use tracemark::io::image::read;

    fn config(seed: u64) -> Config {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/camera.png");
        let camera = read(&path, &Limits::default()).unwrap().0;
        let small = crate::crop(&camera, 100, 80, 300, 260);
        let wanted = ["none", "jpeg50", "scale0.5_box", "crop25", "rotate3"];
        Config {
            seed,
            images: vec![("camera-crop".into(), small)],
            keys: 1,
            scenarios: catalogue()
                .into_iter()
                .filter(|s| wanted.contains(&s.name))
                .collect(),
            null_trials: 6,
            forgeries: false,
            true_geometry: None,
            keystone_search: None,
            ledger_sizes: false,
            reference: false,
        }
    }

    #[test]
    fn report_is_reproduced_exactly_by_the_same_seed() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        for dir in [&a, &b] {
            let res = run(&config(5)).unwrap();
            super::write(dir.path(), &res, "test", 5, 1).unwrap();
        }
        let ra = std::fs::read_to_string(a.path().join("report.md")).unwrap();
        let rb = std::fs::read_to_string(b.path().join("report.md")).unwrap();
        assert_eq!(ra, rb);
        assert!(ra.contains("| rotate3 |") && ra.contains("False-claim study"));
        for f in [
            "trials.json",
            "trials.csv",
            "null.csv",
            "jpeg.png",
            "jpeg.svg",
            "scale.png",
            "crop.svg",
            "null.png",
            "null.svg",
        ] {
            let len = std::fs::metadata(a.path().join(f))
                .map(|m| m.len())
                .unwrap_or(0);
            assert!(len > 100, "{f} missing or empty");
        }
        let csv = std::fs::read_to_string(a.path().join("trials.csv")).unwrap();
        assert_eq!(csv.lines().count(), 1 + 5, "{csv}");
        // A different seed draws other keys and payloads.
        let c = tempfile::tempdir().unwrap();
        super::write(c.path(), &run(&config(6)).unwrap(), "test", 6, 1).unwrap();
        let other = std::fs::read_to_string(c.path().join("trials.csv")).unwrap();
        let payload = |t: &str| {
            t.lines()
                .nth(1)
                .unwrap()
                .split(',')
                .nth(5)
                .unwrap()
                .to_string()
        };
        assert_ne!(payload(&other), payload(&csv));
    }
}
