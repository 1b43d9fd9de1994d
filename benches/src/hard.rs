//! Issue 14's hard leaks on the images that carry most failures (stochastic textures, 256-px
//! medical slices) beside the test photos: per scenario and image group, how often the
//! payload is read blindly, read blindly or named by the informed check, and where the
//! failures stop (sync lost: no mark claimed; payload unread: the mark is found but the
//! 64-bit payload does not decode), with the median sync z and coded-bit error rate.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use tracemark::coding;
use tracemark::mark::detect::{DetectOptions, Detector, KEYSTONE_HYPOTHESES};
use tracemark::raster::Raster;

use crate::report::median;
use crate::robustness::{self, Config, Geometry, Trial};
use crate::scenario;
use tracemark_leaks::ScreenMap;

/// The image group of a trial's image name.
fn group(name: &str) -> &'static str {
    if name.starts_with("texture/") {
        "textures (512 px)"
    } else if name.starts_with("medical256/") {
        "medical (256 px)"
    } else if name == "retina.jpg" {
        "photo (2 Mpx)"
    } else {
        "photos (512 px)"
    }
}

/// The map from original to copy pixels of the hard leaks whose map is known: the photo of
/// a screen's own homography (from its seed); the scales measured from the sizes, the turn
/// as `tracemark_leaks::rotate` makes it (counter-clockwise on screen, y down). The
/// screenshot's scale depends on the viewer's layout: none.
fn true_geometry(
    name: &str,
    seed: u64,
    original: (usize, usize),
    copy: (usize, usize),
) -> Option<Geometry> {
    let (sx, sy) = (
        copy.0 as f64 / original.0 as f64,
        copy.1 as f64 / original.1 as f64,
    );
    let turned = |deg: f64| {
        let (s, c) = f64::to_radians(deg).sin_cos();
        [sx * c, sx * s, -sy * s, sy * c]
    };
    let screen = |tilt: f64| Geometry::Screen(ScreenMap::new(original.0, original.1, tilt, seed));
    Some(match name {
        "screen_photo_tilt5" => screen(5.0),
        "screen_photo_tilt10" => screen(10.0),
        "scale0.5+jpeg50" | "scale0.33_area" | "scale0.33_cubic" | "scale0.75_triangle" => {
            Geometry::Affine([sx, 0.0, 0.0, sy])
        }
        "rotate1" | "rotate1+scale0.75" => Geometry::Affine(turned(1.0)),
        "blur_sigma2" | "jpeg20" | "jpeg75" | "jpeg50" | "crop25" => {
            Geometry::Affine([1.0, 0.0, 0.0, 1.0])
        }
        _ => return None,
    })
}

/// The header of a table with a column per image group.
fn table_header(md: &mut String) {
    let _ = writeln!(md, "| scenario | {} |", GROUPS.join(" | "));
    let _ = writeln!(md, "|---|{}", "---|".repeat(GROUPS.len()));
}

const GROUPS: [&str; 4] = [
    "textures (512 px)",
    "medical (256 px)",
    "photos (512 px)",
    "photo (2 Mpx)",
];

/// Runs the hard leaks with `keys` keys per image and returns the markdown report.
///
/// # Errors
/// Unreadable test data.
pub fn run(seed: u64, keys: usize) -> anyhow::Result<String> {
    let mut images: Vec<(String, Raster)> = crate::PHOTOS
        .iter()
        .map(|s| s.to_string())
        .zip(crate::load_photos()?)
        .collect();
    images.extend(crate::load_hard_images()?);
    let cfg = Config {
        seed,
        images,
        keys,
        scenarios: scenario::hard_catalogue(),
        null_trials: 0,
        forgeries: false,
        true_geometry: Some(true_geometry),
        keystone_search: Some(|name| name.starts_with("screen_photo")),
        ledger_sizes: true,
        reference: true,
    };
    let res = robustness::run(&cfg)?;
    let mut cells: BTreeMap<(&str, &str), Vec<&Trial>> = BTreeMap::new();
    for t in &res.trials {
        cells
            .entry((t.scenario, group(&t.image)))
            .or_default()
            .push(t);
    }
    let mut md = String::new();
    let _ = writeln!(
        md,
        "## Hard leaks (seed {seed}, {keys} keys per image)\n\nEach cell: payload read blindly / read blindly or named by the informed check (the true release among 1,000 others) out of the trials; then the failures by stage: sync lost (no mark claimed) and payload unread (mark found, payload not decoded); median sync z; median coded-bit errors.\n"
    );
    table_header(&mut md);
    for sc in scenario::hard_catalogue() {
        let mut row = format!("| {} |", sc.name);
        for g in GROUPS {
            let ts = cells.get(&(sc.name, g)).cloned().unwrap_or_default();
            let n = ts.len();
            let blind = ts.iter().filter(|t| t.recovered).count();
            let either = ts
                .iter()
                .filter(|t| t.recovered || t.informed_named)
                .count();
            let lost = ts.iter().filter(|t| !t.marked && !t.informed_named).count();
            let unread = ts.iter().filter(|t| t.marked && !t.recovered).count();
            let z = median(ts.iter().map(|t| t.z).collect());
            let ber = median(
                ts.iter()
                    .map(|t| 100.0 * t.bit_errors as f64 / coding::CODED_BITS as f64)
                    .collect(),
            );
            let _ = write!(
                row,
                " {blind}/{n} / {either}/{n}; lost {lost}, unread {unread}; z {z:.1}; {ber:.0} % |"
            );
        }
        let _ = writeln!(md, "{row}");
    }
    let innocents = res.trials.iter().filter(|t| t.informed_false).count();
    let _ = writeln!(
        md,
        "\nCopies where the informed check named a release other than the true one (any of the 1,000): {innocents} of {}.",
        res.trials.len()
    );
    // The same copies detected at the geometry the leak applied, where it is known: a cell
    // that claims here and not above has lost the search, not the signal.
    let z_claim = Detector::blind_claim_z(DetectOptions::default().max_p);
    let _ = writeln!(
        md,
        "\nAt the true geometry (the leak's own map from original to copy pixels, where it is known: an affine map folded as the only candidate; the photo of a screen resampled back into the original's frame through its own homography, then folded at the identity): marks claimed at the blind search's threshold (z >= {z_claim:.2}) out of the trials; payload read or the true release named by the informed check (among 1,000 others), out of the trials: what a search that always found the leak's geometry would give; median sync z.\n"
    );
    sparse_table(
        &mut md,
        &cells,
        |t| t.true_geometry_z.zip(t.true_geometry_named),
        |at| {
            let n = at.len();
            let claimed = at.iter().filter(|a| a.0 >= z_claim).count();
            let named = at.iter().filter(|a| a.1).count();
            let z = median(at.iter().map(|a| a.0).collect());
            format!("{claimed}/{n}; named {named}/{n}; z {z:.1}")
        },
    );
    let _ = writeln!(
        md,
        "\nWith the original (`tracemark-detect --original`, `mark::reference`: the copy registered in the released image by its content, the fitted original taken out, the rest folded at that geometry; the payload read, or the informed check among 1,000 others): read or named out of the trials; registered (the fitted original explains at least half the copy's variance); another release named; median sync z of what is left; median share of the copy explained.\n"
    );
    sparse_table(
        &mut md,
        &cells,
        |t| t.reference,
        |at| {
            let n = at.len();
            let reads: Vec<_> = at.iter().flatten().collect();
            let named = reads.iter().filter(|a| a.named).count();
            let wrong = reads.iter().filter(|a| a.wrong).count();
            let mut cell = format!("{named}/{n}; registered {}/{n}; wrong {wrong}", reads.len());
            // The medians of what registered (none: no median to give).
            if !reads.is_empty() {
                let z = median(reads.iter().map(|a| a.z).collect());
                let explained = median(reads.iter().map(|a| a.explained).collect());
                let _ = write!(cell, "; z {z:.1}; explained {explained:.2}");
            }
            cell
        },
    );
    // The photos of a screen: where the default search's frame finder stops.
    let _ = writeln!(
        md,
        "\nThe screen's frame (`mark::screen::find`, which looks at the copy alone): frames found out of the trials; the median of each frame's largest corner error against the leak's own corners (px); frames more than 6 px off; payload read blindly where a frame was found; read besides by the frame search, given the images' sizes as a ledger would (`DetectOptions::frame_sizes`).\n"
    );
    sparse_table(
        &mut md,
        &cells,
        |t| {
            t.screen_frame
                .map(|f| (f, t.recovered, t.ledger_read == Some(true)))
        },
        |frames| {
            let found: Vec<(f64, bool, bool)> = frames
                .iter()
                .filter_map(|&(f, read, sizes)| f.map(|e| (e, read, sizes)))
                .collect();
            let off = found.iter().filter(|f| f.0 > 6.0).count();
            let read = found.iter().filter(|f| f.1).count();
            let sizes = found.iter().filter(|f| f.2).count();
            let error = if found.is_empty() {
                "-".to_string()
            } else {
                format!("{:.1} px", median(found.iter().map(|f| f.0).collect()))
            };
            format!(
                "{}/{}; error {error}; off {off}; read {read}; frame search {sizes}",
                found.len(),
                frames.len()
            )
        },
    );
    // The photos of a screen again, with the keystone search.
    let z_keystones = Detector::keystone_claim_z(DetectOptions::default().max_p);
    let _ = writeln!(
        md,
        "\nWith the keystone search (`Detector::detect_keystones`: the blind search again on the copy with each of {KEYSTONE_HYPOTHESES} keystones undone; its p-value counts all {} searches, so it claims at z >= {z_keystones:.2}): payload read blindly out of the trials; marks claimed; median sync z.\n",
        1 + KEYSTONE_HYPOTHESES
    );
    sparse_table(
        &mut md,
        &cells,
        |t| t.keystone_search,
        |reads| {
            let read = reads.iter().filter(|k| k.recovered).count();
            let claimed = reads.iter().filter(|k| k.marked).count();
            let z = median(reads.iter().map(|k| k.z).collect());
            let n = reads.len();
            format!("{read}/{n}; claimed {claimed}/{n}; z {z:.1}")
        },
    );
    Ok(md)
}

/// A table of the figure `of` that only some trials have: a row per scenario where any
/// group has it, each cell `cell` of that group's figures ("-" where it has none).
fn sparse_table<T>(
    md: &mut String,
    cells: &BTreeMap<(&str, &str), Vec<&Trial>>,
    of: impl Fn(&Trial) -> Option<T>,
    cell: impl Fn(&[T]) -> String,
) {
    table_header(md);
    for sc in scenario::hard_catalogue() {
        let mut row = format!("| {} |", sc.name);
        let mut known = false;
        for g in GROUPS {
            let figures: Vec<T> = cells
                .get(&(sc.name, g))
                .map(|ts| ts.iter().filter_map(|&t| of(t)).collect())
                .unwrap_or_default();
            if figures.is_empty() {
                row += " - |";
                continue;
            }
            known = true;
            let _ = write!(row, " {} |", cell(&figures));
        }
        if known {
            let _ = writeln!(md, "{row}");
        }
    }
}
