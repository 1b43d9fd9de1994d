//! Issue 14's hard leaks on the images that carry most failures (stochastic textures, 256-px
//! medical slices) beside the test photos: per scenario and image group, how often the
//! payload is read blindly, read blindly or named by the informed check, and where the
//! failures stop (sync lost: no mark claimed; payload unread: the mark is found but the
//! 64-bit payload does not decode), with the median sync z and coded-bit error rate.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use tracemark::coding;
use tracemark::raster::Raster;

use crate::report::median;
use crate::robustness::{self, Config, Trial};
use crate::scenario;

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
    let _ = writeln!(md, "| scenario | {} |", GROUPS.join(" | "));
    let _ = writeln!(md, "|---|{}", "---|".repeat(GROUPS.len()));
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
    Ok(md)
}
